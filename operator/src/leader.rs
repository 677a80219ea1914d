//! Leader election with a `coordination.k8s.io/v1` Lease
//! (kube-lease-manager): only the replica holding the lease runs the
//! controllers, so two operator replicas never fight over the same objects.
//! A replica that loses the lease stops its controllers at once and waits to
//! win it again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use crate::http::Metrics;

/// Aborts the task when dropped, so that dropping [`run`] (shutdown) stops
/// the controllers too.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// Validity of the lease after each renewal, in seconds.
    pub duration_secs: u64,
    /// Renew this many seconds before expiry.
    pub grace_secs: u64,
}

/// Runs `work()` whenever this replica holds the lease, and stops it when
/// the lease is lost. Returns when `shutdown` completes, after stopping the
/// controllers and releasing the lease (so a successor need not wait for it
/// to expire), or with an error when the lease manager cannot be built at all.
pub async fn run<F, Fut>(
    client: Client,
    election: LeaderElection,
    metrics: Arc<Metrics>,
    work: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), kube_lease_manager::LeaseManagerError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.duration_secs)
            .with_grace(election.grace_secs)
            .build()
            .await;
        let manager = match manager {
            Ok(m) => m,
            Err(err) => {
                tracing::error!(error = %err, "cannot set up leader election; retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = &mut shutdown => return Ok(()),
                }
            }
        };
        let (mut leading, task) = manager.watch().await;
        tracing::info!(
            lease = %election.lease_name,
            namespace = %election.namespace,
            identity = %election.identity,
            "waiting for the leader lease"
        );
        let stopping = tokio::select! {
            _ = lead(&mut leading, &election, &metrics, &work) => false,
            _ = &mut shutdown => true,
        };
        metrics.leader.set(0);
        if stopping {
            // Closing the channel makes the lease manager release the lease.
            drop(leading);
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
                Ok(Ok(Err(err))) => {
                    tracing::warn!(error = %err, "could not release the leader lease")
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "lease manager task failed"),
                Err(_) => tracing::warn!("timed out releasing the leader lease"),
            }
            return Ok(());
        }
        match task.await {
            Ok(Ok(_)) => tracing::warn!("lease manager stopped; restarting it"),
            Ok(Err(err)) => tracing::error!(error = %err, "lease manager failed; restarting it"),
            Err(err) => tracing::error!(error = %err, "lease manager task failed; restarting it"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

/// Runs the controllers while `leading` says this replica holds the lease;
/// returns when the lease manager stops. Dropping the future stops them.
async fn lead<F, Fut>(
    leading: &mut tokio::sync::watch::Receiver<bool>,
    election: &LeaderElection,
    metrics: &Metrics,
    work: &F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        while !*leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return;
            }
        }
        tracing::info!(identity = %election.identity, "acquired the leader lease: starting controllers");
        metrics.leader.set(1);
        let handle = AbortOnDrop(tokio::spawn(work()));
        let lost = loop {
            if leading.changed().await.is_err() {
                break false;
            }
            if !*leading.borrow_and_update() {
                break true;
            }
        };
        drop(handle);
        metrics.leader.set(0);
        if !lost {
            return;
        }
        tracing::warn!(identity = %election.identity, "lost the leader lease: controllers stopped");
    }
}

//! Leader election with a `coordination.k8s.io/v1` Lease
//! (kube-lease-manager): only the replica holding the lease runs the
//! controllers, so two operator replicas never fight over the same objects.
//! A replica that loses the lease stops its controllers at once and waits to
//! win it again.
//!
//! The lease manager keeps reporting "leading" while its renewals fail (for
//! example when the replica's Lease RBAC was revoked), so a watchdog reads
//! the Lease itself: the controllers run only while a renewal by this
//! replica has been seen recently enough that the lease cannot have expired
//! (with a third of the renewal grace to spare); otherwise they stop before
//! another replica can take over.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
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
            _ = lead(&client, &mut leading, &election, &metrics, &work) => false,
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

/// Runs the controllers while `leading` says this replica holds the lease
/// and the watchdog confirms it; returns when the lease manager stops.
/// Dropping the future stops them.
async fn lead<F, Fut>(
    client: &Client,
    leading: &mut tokio::sync::watch::Receiver<bool>,
    election: &LeaderElection,
    metrics: &Metrics,
    work: &F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let watchdog = Watchdog::new(client, election);
    loop {
        while !*leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return;
            }
        }
        // Start only while the Lease itself says it is ours (after the
        // watchdog stopped the controllers: once a new renewal is seen).
        let Some(until) = watchdog.confirm_start().await else {
            tokio::select! {
                _ = tokio::time::sleep(watchdog.poll) => continue,
                changed = leading.changed() => if changed.is_err() { return } else { continue },
            }
        };
        tracing::info!(identity = %election.identity, "acquired the leader lease: starting controllers");
        metrics.leader.set(1);
        let handle = AbortOnDrop(tokio::spawn(work()));
        let lost = tokio::select! {
            lost = until_lost(leading) => lost,
            () = watchdog.until_unconfirmed(until) => {
                tracing::warn!(
                    identity = %election.identity,
                    "no renewal of the leader lease seen in time (renewals failing?): controllers stopped before the lease can expire"
                );
                true
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

/// Waits until `leading` turns false (`true`) or the manager stops (`false`).
async fn until_lost(leading: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    loop {
        if leading.changed().await.is_err() {
            return false;
        }
        if !*leading.borrow_and_update() {
            return true;
        }
    }
}

/// Reads the Lease to confirm this replica still holds it.
///
/// The lease manager of this process writes `renewTime` from this process's
/// clock, so the Lease itself says until when it is valid: `renewTime` plus
/// the lease duration. The controllers stop `grace / 3` before that unless a
/// newer renewal has been read by then; reads come every `grace / 4`, so a
/// renewal (made `grace` before expiry) is seen with `grace / 3` or more to
/// spare for a slow API server.
struct Watchdog {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    margin: Duration,
    poll: Duration,
}

/// What a read of the Lease says about this replica.
enum Holding {
    /// Held, valid (less the margin) until then.
    Until(SystemTime),
    /// Another replica holds it, or nobody.
    NotHeld,
    /// The read failed.
    Unknown,
}

impl Watchdog {
    fn new(client: &Client, election: &LeaderElection) -> Watchdog {
        let grace = Duration::from_secs(election.grace_secs);
        Watchdog {
            api: Api::namespaced(client.clone(), &election.namespace),
            name: election.lease_name.clone(),
            identity: election.identity.clone(),
            duration: Duration::from_secs(election.duration_secs),
            margin: grace / 3,
            poll: (grace / 4).max(Duration::from_millis(100)),
        }
    }

    async fn read(&self) -> Holding {
        let lease = match self.api.get(&self.name).await {
            Ok(lease) => lease,
            Err(err) => {
                tracing::debug!(error = %err, "reading the leader lease failed");
                return Holding::Unknown;
            }
        };
        let spec = lease.spec.unwrap_or_default();
        match spec.renew_time {
            Some(renewed) if spec.holder_identity.as_deref() == Some(self.identity.as_str()) => {
                let renewed: SystemTime = renewed.0.into();
                Holding::Until(renewed + self.duration.saturating_sub(self.margin))
            }
            _ => Holding::NotHeld,
        }
    }

    /// Until when the controllers may run, when they may start: the Lease
    /// names this replica and is valid for at least one more read.
    async fn confirm_start(&self) -> Option<SystemTime> {
        let read = tokio::time::timeout(self.duration, self.read()).await;
        match read.unwrap_or(Holding::Unknown) {
            Holding::Until(until) if until > SystemTime::now() + self.poll => Some(until),
            _ => None,
        }
    }

    /// Returns when the lease might expire within the margin with no newer
    /// renewal read than `until` says, or when the Lease names another holder.
    async fn until_unconfirmed(&self, mut until: SystemTime) {
        loop {
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(self.poll)).await;
            // A read that hangs (packets dropped on the way to the API
            // server) must not outlast the deadline.
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            match tokio::time::timeout(left, self.read()).await {
                Ok(Holding::Until(later)) => until = until.max(later),
                Ok(Holding::NotHeld) | Err(_) => return,
                Ok(Holding::Unknown) => {}
            }
        }
    }
}

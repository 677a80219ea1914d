//! `rsigma-operator`: the Kubernetes operator of rsigma.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use rsigma_operator::{
    OperatorConfig,
    http::{self, Metrics},
    leader::{self, LeaderElection},
    reload::{HttpPodClient, PodClient, TlsOptions},
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Reconciles DetectionEngines and SigmaRuleSets (group rsigma.io).
#[derive(Debug, Parser)]
#[command(name = "rsigma-operator", version)]
struct Args {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// error, warn, info, debug, trace, or a tracing filter
    /// (`rsigma_operator=debug,kube=info`). RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Namespaces to manage, comma-separated. Empty: every namespace.
    #[arg(long, value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Run the controllers only while holding a Lease.
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "rsigma-operator")]
    leader_election_lease_name: String,
    /// Identity in the Lease. Default: $POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
    /// Lease validity after each renewal, seconds.
    #[arg(long, default_value_t = 15)]
    leader_election_duration: u64,
    /// Renew this many seconds before the lease expires.
    #[arg(long, default_value_t = 5)]
    leader_election_grace: u64,
    /// PEM CA bundle to verify engines' TLS certificates (engines with
    /// `tls`). Without it the operator does not verify them.
    #[arg(long)]
    engine_tls_ca: Option<PathBuf>,
    /// PEM client certificate (and key, in the same file or with
    /// --engine-tls-client-key) for engines with mutual TLS.
    #[arg(long)]
    engine_tls_client_cert: Option<PathBuf>,
    /// PEM key of --engine-tls-client-cert.
    #[arg(long, requires = "engine_tls_client_cert")]
    engine_tls_client_key: Option<PathBuf>,
    /// Timeout of each call to a daemon pod, seconds.
    #[arg(long, default_value_t = 3)]
    engine_timeout: u64,
    /// Periodic reconcile of settled objects, seconds.
    #[arg(long, default_value_t = 300)]
    resync_interval: u64,
    /// Daemon image of DetectionEngines whose spec names none (the chart
    /// sets it from engineDefaults.image). Unset: such engines report
    /// InvalidSpec.
    #[arg(long, env = "RSIGMA_DEFAULT_DAEMON_IMAGE")]
    default_daemon_image: Option<String>,
}

fn init_logging(args: &Args) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Json => fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => fmt().with_env_filter(filter).init(),
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args);

    let mut tls = TlsOptions::default();
    if let Some(ca) = &args.engine_tls_ca {
        tls.ca_pem = Some(read(ca)?);
    }
    if let Some(cert) = &args.engine_tls_client_cert {
        let mut pem = read(cert)?;
        if let Some(key) = &args.engine_tls_client_key {
            pem.push(b'\n');
            pem.extend(read(key)?);
        }
        tls.identity_pem = Some(pem);
    }
    let pods: Arc<dyn PodClient> = Arc::new(
        HttpPodClient::new(Duration::from_secs(args.engine_timeout), &tls)
            .map_err(anyhow::Error::msg)?,
    );

    let metrics = Arc::new(Metrics::new());
    let http_metrics = metrics.clone();
    let http_addr = args.http_addr;
    let http_task = tokio::spawn(async move { http::serve(http_addr, http_metrics).await });

    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    tracing::info!(
        server = %version.git_version,
        namespaces = ?args.watch_namespaces,
        leader_election = args.leader_election,
        "connected"
    );
    metrics.set_ready(true);

    let instance = args
        .leader_election_identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok());
    let config = OperatorConfig {
        namespaces: args
            .watch_namespaces
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        resync: Duration::from_secs(args.resync_interval),
        instance: instance.clone(),
        default_daemon_image: args.default_daemon_image.clone().filter(|s| !s.is_empty()),
        ..OperatorConfig::default()
    };

    let work = {
        let client = client.clone();
        let metrics = metrics.clone();
        move || {
            rsigma_operator::run(
                client.clone(),
                config.clone(),
                metrics.clone(),
                pods.clone(),
            )
        }
    };
    let controllers = async {
        if args.leader_election {
            let election = LeaderElection {
                namespace: args.leader_election_namespace.clone(),
                lease_name: args.leader_election_lease_name.clone(),
                identity: instance
                    .unwrap_or_else(|| format!("rsigma-operator-{}", std::process::id())),
                duration_secs: args.leader_election_duration,
                grace_secs: args.leader_election_grace,
            };
            leader::run(
                client.clone(),
                election,
                metrics.clone(),
                work,
                shutdown_signal(),
            )
            .await?;
        } else {
            metrics.leader.set(1);
            tokio::select! {
                _ = work() => {}
                _ = shutdown_signal() => {}
            }
        }
        anyhow::Ok(())
    };

    tokio::select! {
        result = controllers => result?,
        result = http_task => {
            result.context("HTTP task")?.context("HTTP listener")?;
        }
    }
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

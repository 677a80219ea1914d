//! The rsigma detection daemon: a long-running engine with hot reload,
//! health, readiness, Prometheus metrics and an HTTP API.
//!
//! ```text
//!  source (stdin | POST /api/v1/events)
//!     │  bounded input queue (--buffer-size), back-pressure counted
//!     ▼
//!  workers (one thread per core): decode → evaluate → correlate
//!     │  bounded output queue            └─ undecodable lines → DLQ
//!     ▼
//!  sinks (stdout, file://…) fan-out      └─ failed deliveries → DLQ
//! ```
//!
//! The active rule set sits behind an [`arc_swap::ArcSwap`]: workers load it
//! once per batch and never wait for a reload, which builds the next set off
//! the hot path and swaps it in whole (see [`reload`]).

pub mod api;
pub mod config;
pub mod context;
pub mod input;
pub mod metrics;
pub mod persist;
pub mod processor;
pub mod reload;
pub mod ruleset;
pub mod sink;
pub mod source;
pub mod tap;
pub mod tls;

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{DaemonConfig, InputSpec, SinkSpec, StateConfig};
use context::DaemonContext;
use metrics::Metrics;
use persist::Persistence;
use ruleset::Ruleset;

/// Why the daemon stopped with an error; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The rules could not be read or loaded at startup (exit code 2).
    #[error("{0}")]
    Rules(String),
    /// The configuration is invalid (exit code 3).
    #[error("{0}")]
    Config(String),
}

impl DaemonError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Rules(_) => 2,
            DaemonError::Config(_) => 3,
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT (or the end of standard input
/// with `--input stdin`), then drains in-flight events within the drain
/// timeout, writes the final state snapshot and returns.
pub async fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    // Handlers are installed before anything else, so a signal that arrives
    // while the daemon starts is not fatal.
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate())
        .map_err(|err| DaemonError::Config(format!("cannot handle SIGTERM: {err}")))?;
    let interrupt = signal(SignalKind::interrupt())
        .map_err(|err| DaemonError::Config(format!("cannot handle SIGINT: {err}")))?;
    run_until(config, termination_signal(terminate, interrupt)).await
}

/// [`run`], stopping when `shutdown` completes instead of on a signal
/// (for embedding and tests).
pub async fn run_until(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|err| DaemonError::Config(format!("cannot handle SIGHUP: {err}")))?;
    let mut shutdown = std::pin::pin!(shutdown);
    config.validate().map_err(DaemonError::Config)?;
    let decoder = input::Decoder::new(&config.decoder)
        .map(Arc::new)
        .map_err(|err| DaemonError::Config(err.to_string()))?;
    let sinks = sink::open_all(&config.outputs).map_err(DaemonError::Config)?;
    let dlq = match &config.dlq {
        Some(spec) => sink::open_all(std::slice::from_ref(spec))
            .map_err(DaemonError::Config)?
            .pop(),
        None => None,
    };
    let tls = config
        .tls
        .clone()
        .map(tls::TlsState::new)
        .transpose()
        .map_err(DaemonError::Config)?;
    let listener = std::net::TcpListener::bind(config.api_addr).map_err(|err| {
        DaemonError::Config(format!("cannot listen on {}: {err}", config.api_addr))
    })?;
    let workers = config.workers;
    let (reload_requests, reload_queue) = mpsc::unbounded_channel();
    let (input_sender, input_queue) = mpsc::channel(config.buffer_size);
    let (output_sender, output_queue) = mpsc::channel(config.buffer_size);
    let (dead_letter_sender, dead_letter_queue) = mpsc::channel(config.buffer_size);
    let context = DaemonContext::new(
        config,
        Ruleset::empty(),
        Metrics::new(),
        reload_requests,
        input_sender,
        tls,
    );

    // The listener comes up first: liveness holds while the rules load,
    // readiness does not.
    let server = serve(&context, listener).map_err(DaemonError::Config)?;
    tracing::info!(
        addr = %context.config.api_addr,
        tls = context.tls.is_some(),
        "API listening"
    );

    let loading = Arc::clone(&context);
    let first = tokio::task::spawn_blocking(move || ruleset::load(&loading.config))
        .await
        .expect("the rule loader does not panic");
    match first {
        Ok(ruleset) => {
            reload::swap(&context, ruleset);
            let active = context.ruleset.load();
            tracing::info!(
                rules = active.counts.detection,
                correlations = active.counts.correlation,
                hash = %active.digest,
                "rules loaded"
            );
        }
        Err(failure) => {
            context.server.shutdown();
            let _ = server.await;
            return Err(if failure.pipeline {
                DaemonError::Config(failure.to_string())
            } else {
                DaemonError::Rules(failure.to_string())
            });
        }
    }
    let persistence = match &context.config.state {
        Some(state) => Some(Persistence::open(state, &context).map_err(DaemonError::Config)?),
        None => None,
    };
    let _watcher = if context.config.watch {
        Some(reload::watch(&context).map_err(DaemonError::Config)?)
    } else {
        None
    };
    let hangups = tokio::spawn(reload::on_sighup(Arc::clone(&context), hangups));

    let outputs = {
        let (context, dead_letters) = (Arc::clone(&context), dead_letter_sender.clone());
        std::thread::Builder::new()
            .name("rsigma-sinks".into())
            .spawn(move || sink::run_outputs(context, sinks, output_queue, dead_letters))
            .expect("spawning the sink thread")
    };
    let dead_letters = {
        let context = Arc::clone(&context);
        std::thread::Builder::new()
            .name("rsigma-dlq".into())
            .spawn(move || sink::run_dead_letters(context, dlq, dead_letter_queue))
            .expect("spawning the dead-letter thread")
    };
    let worker_threads = processor::spawn_workers(
        workers,
        Arc::clone(&context),
        decoder,
        Arc::new(Mutex::new(input_queue)),
        output_sender,
        dead_letter_sender.clone(),
    );
    let reloads = tokio::spawn(reload::run(Arc::clone(&context), reload_queue));
    let stop_saving = CancellationToken::new();
    if let Some(persistence) = &persistence {
        tokio::spawn(
            persistence
                .clone()
                .run(Arc::clone(&context), stop_saving.clone()),
        );
    }
    let stdin_ended = match context.config.input {
        InputSpec::Stdin => {
            let (ended, stdin_ended) = tokio::sync::oneshot::channel();
            source::stdin(Arc::clone(&context), dead_letter_sender.clone(), ended);
            Some(stdin_ended)
        }
        InputSpec::Http => None,
    };
    drop(dead_letter_sender);

    // Ready only now: state restored, watcher and signal handlers in place.
    context.mark_loaded();
    wait_for_shutdown(shutdown.as_mut(), stdin_ended).await;
    tracing::info!("shutting down: draining in-flight events");
    context.close_ingest();
    let drained = tokio::time::timeout(context.config.drain_timeout, async {
        let _ = tokio::task::spawn_blocking(move || {
            for worker in worker_threads {
                let _ = worker.join();
            }
            let _ = outputs.join();
            let _ = dead_letters.join();
        })
        .await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout = ?context.config.drain_timeout,
            "drain timed out; events still queued were not processed"
        );
    }
    stop_saving.cancel();
    if let Some(persistence) = &persistence {
        persistence.save(&context).await;
    }
    reloads.abort();
    hangups.abort();
    context
        .server
        .graceful_shutdown(Some(std::time::Duration::from_secs(1)));
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves the API on the listener, over TLS when configured.
fn serve(
    context: &Arc<DaemonContext>,
    listener: std::net::TcpListener,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, String> {
    let app = api::router(Arc::clone(context)).into_make_service();
    let handle = context.server.clone();
    let bound = |err: std::io::Error| format!("cannot serve on {}: {err}", context.config.api_addr);
    Ok(match &context.tls {
        Some(tls) => {
            let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls.rustls.clone())
                .map_err(bound)?
                .handle(handle);
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .map_err(bound)?
                .handle(handle);
            tokio::spawn(async move { server.serve(app).await })
        }
    })
}

/// Completes on SIGTERM or SIGINT.
async fn termination_signal(
    mut terminate: tokio::signal::unix::Signal,
    mut interrupt: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

/// Waits for the shutdown future or the end of the stdin source.
async fn wait_for_shutdown(
    shutdown: impl std::future::Future<Output = ()>,
    stdin_ended: Option<tokio::sync::oneshot::Receiver<()>>,
) {
    let stdin_done = async {
        match stdin_ended {
            Some(ended) => {
                let _ = ended.await;
                tracing::info!("standard input ended");
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = stdin_done => {}
    }
}

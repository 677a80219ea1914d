//! The rsigma detection daemon: a long-running engine with hot reload,
//! health, readiness, Prometheus metrics and an HTTP API.
//!
//! ```text
//!  source (stdin | POST /api/v1/events | JetStream consumer)
//!     │  bounded input queue (--buffer-size), back-pressure counted
//!     ▼
//!  workers (one thread per core): decode → evaluate → correlate
//!     │  bounded output queue            └─ undecodable lines → DLQ
//!     ▼
//!  enrichment (with --enrichers; async, see [`enrich`])
//!     │  bounded queue
//!     ▼
//!  sinks (stdout, file://…, nats://…) fan-out  └─ failed deliveries → DLQ
//!     │
//!     └─ receipts settle: a JetStream message is acknowledged once all its
//!        outputs were delivered (see [`source::Receipt`])
//! ```
//!
//! The active rule set sits behind an [`arc_swap::ArcSwap`]: workers load it
//! once per batch and never wait for a reload, which builds the next set off
//! the hot path and swaps it in whole (see [`reload`]).

pub mod api;
pub mod config;
pub mod context;
mod egress;
pub mod enrich;
pub mod input;
pub mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod persist;
pub mod processor;
pub mod reload;
pub mod ruleset;
pub mod sink;
pub mod source;
pub mod sources;
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

/// Runs the daemon until SIGTERM or SIGINT (or, with `--exit-on-eof`, the
/// end of standard input), then drains in-flight events within the drain
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

/// The queues between the stages, created before the context that hands
/// their sending ends to the sources.
struct Queues {
    reloads: mpsc::UnboundedReceiver<context::ReloadTrigger>,
    input: mpsc::Receiver<source::InputLine>,
    output_sender: mpsc::Sender<sink::OutputChunk>,
    output: mpsc::Receiver<sink::OutputChunk>,
    dead_letter_sender: mpsc::Sender<sink::DeadLetter>,
    dead_letters: mpsc::Receiver<sink::DeadLetter>,
}

/// The evaluation and delivery threads.
struct Pipeline {
    workers: Vec<std::thread::JoinHandle<()>>,
    outputs: std::thread::JoinHandle<()>,
    dead_letters: std::thread::JoinHandle<()>,
}

/// [`run`], stopping when `shutdown` completes instead of on a signal
/// (for embedding and tests).
pub async fn run_until(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|err| DaemonError::Config(format!("cannot handle SIGHUP: {err}")))?;
    config.validate().map_err(DaemonError::Config)?;
    let decoder = input::Decoder::new(&config.decoder)
        .map(Arc::new)
        .map_err(|err| DaemonError::Config(err.to_string()))?;
    let tls = config
        .tls
        .clone()
        .map(tls::TlsState::new)
        .transpose()
        .map_err(DaemonError::Config)?;
    let listener = std::net::TcpListener::bind(config.api_addr).map_err(|err| {
        DaemonError::Config(format!("cannot listen on {}: {err}", config.api_addr))
    })?;
    let (context, queues) = new_context(config, tls)?;

    // The listener comes up first: liveness holds while the rules load,
    // readiness does not.
    let server = serve(&context, listener).map_err(DaemonError::Config)?;
    tracing::info!(
        addr = %context.config.api_addr,
        tls = context.tls.is_some(),
        "API listening"
    );
    let started = start(&context, decoder, queues, hangups).await;
    let (running, pipeline, source) = match started {
        Ok(started) => started,
        Err(err) => {
            context.server.shutdown();
            let _ = server.await;
            return Err(err);
        }
    };
    // Ready only now: state restored, watcher and signal handlers in place.
    context.mark_loaded();
    let source = wait_for_shutdown(shutdown, source, &context).await;
    drain(&context, running, pipeline, source).await;
    context
        .server
        .graceful_shutdown(Some(std::time::Duration::from_secs(1)));
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

fn new_context(
    config: DaemonConfig,
    tls: Option<tls::TlsState>,
) -> Result<(Arc<DaemonContext>, Queues), DaemonError> {
    let (reload_requests, reloads) = mpsc::unbounded_channel();
    let (input_sender, input) = mpsc::channel(config.buffer_size);
    let (output_sender, output) = mpsc::channel(config.buffer_size);
    let (dead_letter_sender, dead_letters) = mpsc::channel(config.buffer_size);
    let ingest = context::Ingest {
        lines: input_sender,
        rejected: dead_letter_sender.clone(),
    };
    let metrics = Metrics::new();
    if tls.is_some() {
        metrics.register_tls();
    }
    let sources = (!config.sources.is_empty())
        .then(|| sources::Sources::declare(&config.sources, &config.nats, metrics.registry()))
        .transpose()
        .map_err(DaemonError::Config)?;
    let enrichment = config
        .enrichers
        .as_deref()
        .map(|path| enrich::Enrichment::start(path, sources.as_ref(), metrics.registry()))
        .transpose()
        .map_err(DaemonError::Config)?;
    let context = DaemonContext::new(
        config,
        Ruleset::empty(),
        metrics,
        reload_requests,
        ingest,
        tls,
        context::Extensions {
            enrichment,
            sources,
        },
    );
    let queues = Queues {
        reloads,
        input,
        output_sender,
        output,
        dead_letter_sender,
        dead_letters,
    };
    Ok((context, queues))
}

/// What runs beside the pipeline until shutdown.
struct Running {
    transports: Transports,
    persistence: Option<Persistence>,
    stop_saving: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Loads the rules, connects the transports, opens the sinks and the state,
/// and starts the pipeline, the reload tasks and the source.
async fn start(
    context: &Arc<DaemonContext>,
    decoder: Arc<input::Decoder>,
    queues: Queues,
    hangups: tokio::signal::unix::Signal,
) -> Result<(Running, Pipeline, Source), DaemonError> {
    if let Some(sources) = &context.sources {
        sources.fetch_all().await.map_err(DaemonError::Config)?;
    }
    load_first_rules(context).await?;
    let transports = Transports::connect(context).await?;
    let sinks = open_sinks(context, &transports, &context.config.outputs).await?;
    let dlq = match &context.config.dlq {
        Some(spec) => open_sinks(context, &transports, std::slice::from_ref(spec))
            .await?
            .pop(),
        None => None,
    };
    let persistence = match &context.config.state {
        Some(state) => Some(Persistence::open(state, context).map_err(DaemonError::Config)?),
        None => None,
    };
    let watcher = if context.config.watch {
        Some(reload::watch(context).map_err(DaemonError::Config)?)
    } else {
        None
    };
    let mut tasks = vec![
        tokio::spawn(reload::on_sighup(Arc::clone(context), hangups)),
        tokio::spawn(reload::run(Arc::clone(context), queues.reloads)),
        tokio::spawn(sources::run_intervals(Arc::clone(context))),
    ];
    let stop_saving = CancellationToken::new();
    if let Some(persistence) = &persistence {
        tasks.push(tokio::spawn(
            persistence
                .clone()
                .run(Arc::clone(context), stop_saving.clone()),
        ));
    }
    let records = enrichment_stage(context, queues.output);
    let pipeline = Pipeline {
        workers: processor::spawn_workers(
            context.config.workers,
            Arc::clone(context),
            decoder,
            Arc::new(Mutex::new(queues.input)),
            queues.output_sender,
            queues.dead_letter_sender.clone(),
        ),
        outputs: spawn_thread("rsigma-sinks", {
            let (context, dead_letters) = (Arc::clone(context), queues.dead_letter_sender);
            move || sink::run_outputs(context, sinks, records, dead_letters)
        }),
        dead_letters: spawn_thread("rsigma-dlq", {
            let context = Arc::clone(context);
            move || sink::run_dead_letters(context, dlq, queues.dead_letters)
        }),
    };
    let source = Source::start(context, &transports).await?;
    let running = Running {
        transports,
        persistence,
        stop_saving,
        tasks,
        _watcher: watcher,
    };
    Ok((running, pipeline, source))
}

/// With enrichers, starts the enrichment stage on the workers' records and
/// returns its output queue; without, the workers' records go to the sinks.
fn enrichment_stage(
    context: &Arc<DaemonContext>,
    records: mpsc::Receiver<sink::OutputChunk>,
) -> mpsc::Receiver<sink::OutputChunk> {
    if context.enrichment.is_none() {
        return records;
    }
    let (enriched_sender, enriched) = mpsc::channel(context.config.buffer_size);
    tokio::spawn(enrich::run(Arc::clone(context), records, enriched_sender));
    enriched
}

fn spawn_thread(name: &str, run: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .expect("spawning a daemon thread")
}

async fn load_first_rules(context: &Arc<DaemonContext>) -> Result<(), DaemonError> {
    let loading = Arc::clone(context);
    let first = tokio::task::spawn_blocking(move || {
        ruleset::load(&loading.config, loading.sources.as_ref())
    })
    .await
    .expect("the rule loader does not panic");
    match first {
        Ok(ruleset) => {
            reload::swap(context, ruleset);
            let active = context.ruleset.load();
            tracing::info!(
                rules = active.counts.detection,
                correlations = active.counts.correlation,
                hash = %active.digest,
                "rules loaded"
            );
            Ok(())
        }
        Err(failure) if failure.pipeline => Err(DaemonError::Config(failure.to_string())),
        Err(failure) => Err(DaemonError::Rules(failure.to_string())),
    }
}

async fn open_sinks(
    context: &Arc<DaemonContext>,
    transports: &Transports,
    specs: &[SinkSpec],
) -> Result<Vec<sink::Sink>, DaemonError> {
    let mut sinks = Vec::with_capacity(specs.len());
    for spec in specs {
        let opened = match spec {
            SinkSpec::Stdout => Ok(sink::Sink::stdout(context)),
            SinkSpec::File(path) => sink::Sink::file(path, context)
                .map_err(|err| format!("cannot open sink {spec}: {err}")),
            SinkSpec::Nats(target) => transports.open_nats_sink(context, target).await,
        };
        sinks.push(opened.map_err(DaemonError::Config)?);
    }
    Ok(sinks)
}

/// Connections of the broker transports: none unless a `nats://` URL is
/// configured.
struct Transports {
    #[cfg(feature = "nats")]
    nats: Option<nats::Clients>,
}

impl Transports {
    #[cfg(feature = "nats")]
    async fn connect(context: &Arc<DaemonContext>) -> Result<Transports, DaemonError> {
        let nats = if context.config.uses_nats() {
            Some(
                nats::Clients::connect(context)
                    .await
                    .map_err(DaemonError::Config)?,
            )
        } else {
            None
        };
        Ok(Transports { nats })
    }

    #[cfg(not(feature = "nats"))]
    async fn connect(_: &Arc<DaemonContext>) -> Result<Transports, DaemonError> {
        Ok(Transports {})
    }

    #[cfg(feature = "nats")]
    async fn open_nats_sink(
        &self,
        context: &Arc<DaemonContext>,
        target: &config::NatsTarget,
    ) -> Result<sink::Sink, String> {
        let clients = self.nats.as_ref().expect("connected for every nats:// URL");
        nats::sink::open(context, clients, target).await
    }

    #[cfg(not(feature = "nats"))]
    async fn open_nats_sink(
        &self,
        _: &Arc<DaemonContext>,
        target: &config::NatsTarget,
    ) -> Result<sink::Sink, String> {
        Err(format!("{target}: NATS is not available in this build"))
    }

    async fn flush(&self) {
        #[cfg(feature = "nats")]
        if let Some(clients) = &self.nats {
            clients.flush().await;
        }
    }
}

/// The running event source.
enum Source {
    /// Standard input; the receiver fires at its end.
    Stdin(tokio::sync::oneshot::Receiver<()>),
    /// `POST /api/v1/events`, served by the API.
    Http,
    /// A JetStream consumer.
    #[cfg(feature = "nats")]
    Nats(nats::source::NatsSource),
}

impl Source {
    async fn start(
        context: &Arc<DaemonContext>,
        transports: &Transports,
    ) -> Result<Source, DaemonError> {
        match &context.config.input {
            InputSpec::Stdin => {
                let (ended, stdin_ended) = tokio::sync::oneshot::channel();
                source::stdin(Arc::clone(context), ended);
                Ok(Source::Stdin(stdin_ended))
            }
            InputSpec::Http => Ok(Source::Http),
            #[cfg(feature = "nats")]
            InputSpec::Nats(target) => {
                let clients = transports.nats.as_ref().expect("connected for the input");
                nats::source::NatsSource::start(context, clients, target)
                    .await
                    .map(Source::Nats)
                    .map_err(DaemonError::Config)
            }
            #[cfg(not(feature = "nats"))]
            InputSpec::Nats(target) => {
                let _ = transports;
                Err(DaemonError::Config(format!(
                    "{target}: NATS is not available in this build"
                )))
            }
        }
    }

    /// Stops taking new input from the source.
    async fn stop(&mut self) {
        #[cfg(feature = "nats")]
        if let Source::Nats(nats) = self {
            nats.stop_pulling().await;
        }
    }

    /// Waits until the source has settled what it handed over.
    async fn finish(self) {
        #[cfg(feature = "nats")]
        if let Source::Nats(nats) = self {
            nats.finish().await;
        }
    }
}

/// Stops the source, drains the queues within the drain timeout, settles
/// the source, flushes the transports and writes the final state.
async fn drain(
    context: &Arc<DaemonContext>,
    running: Running,
    pipeline: Pipeline,
    mut source: Source,
) {
    tracing::info!("shutting down: draining in-flight events");
    let deadline = tokio::time::Instant::now() + context.config.drain_timeout;
    if tokio::time::timeout_at(deadline, source.stop())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out while the source stopped");
    }
    context.close_ingest();
    let joined = tokio::task::spawn_blocking(move || {
        for worker in pipeline.workers {
            let _ = worker.join();
        }
        let _ = pipeline.outputs.join();
        let _ = pipeline.dead_letters.join();
    });
    if tokio::time::timeout_at(deadline, joined).await.is_err() {
        tracing::warn!(
            timeout = ?context.config.drain_timeout,
            "drain timed out; events still queued were not processed"
        );
    }
    if tokio::time::timeout_at(deadline, source.finish())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out before every input was acknowledged");
    }
    // Flushing waits for a connection that may be down: the final state
    // snapshot must not wait for it beyond the drain timeout.
    if tokio::time::timeout_at(deadline, running.transports.flush())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out flushing the NATS connections");
    }
    running.stop_saving.cancel();
    if let Some(persistence) = &running.persistence {
        persistence.save(context).await;
    }
    for task in running.tasks {
        task.abort();
    }
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

/// Waits for the shutdown future; the end of standard input stops the
/// daemon only with `--exit-on-eof` (the API keeps serving otherwise, as
/// the specification says). Hands the source back for the drain.
async fn wait_for_shutdown(
    shutdown: impl std::future::Future<Output = ()>,
    mut source: Source,
    context: &DaemonContext,
) -> Source {
    let mut shutdown = std::pin::pin!(shutdown);
    if let Source::Stdin(ended) = &mut source {
        tokio::select! {
            _ = &mut shutdown => return source,
            _ = ended => {}
        }
        if context.config.exit_on_eof {
            tracing::info!("standard input ended: stopping (--exit-on-eof)");
            return source;
        }
        tracing::info!("standard input ended; serving until SIGTERM or SIGINT");
    }
    shutdown.await;
    source
}

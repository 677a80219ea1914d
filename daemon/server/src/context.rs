//! What the daemon's tasks share: the active rule set (swapped atomically),
//! readiness and reload status, metrics, and the handles to the queues.

use std::sync::atomic::{AtomicBool, Ordering};

use rsigma_engine::state::SourcePosition;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::DaemonConfig;
use crate::enrich::Enrichment;
use crate::metrics::Metrics;
use crate::ruleset::Ruleset;
use crate::sink::DeadLetter;
use crate::source::InputLine;
use crate::sources::Sources;
use crate::tap::TapHub;
use crate::tls::TlsState;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadTrigger {
    /// `POST /api/v1/reload`.
    Api,
    /// SIGHUP.
    Signal,
    /// A change under the watched paths.
    Watch,
    /// A dynamic source's value changed on its refresh interval.
    Source,
}

/// The outcome of the last reload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadRecord {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Whether the new rules are active.
    pub ok: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// What asked for it.
    pub trigger: ReloadTrigger,
}

/// Where sources put what they receive: lines for the workers, and lines
/// rejected before decoding (not UTF-8, too long) for the dead-letter queue.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The input queue.
    pub lines: mpsc::Sender<InputLine>,
    /// The dead-letter queue.
    pub rejected: mpsc::Sender<DeadLetter>,
}

/// The optional stages a daemon is built with.
#[derive(Default)]
pub struct Extensions {
    /// `--enrichers`.
    pub enrichment: Option<Enrichment>,
    /// `--source`.
    pub sources: Option<Sources>,
}

/// State shared by every task of a running daemon.
pub struct DaemonContext {
    /// The configuration it runs with.
    pub config: DaemonConfig,
    /// The active rule set. Evaluation loads it once per batch and never waits.
    pub ruleset: ArcSwap<Ruleset>,
    /// Metrics.
    pub metrics: Metrics,
    /// Ready: the last load succeeded.
    ready: AtomicBool,
    /// The last reload, if any.
    last_reload: Mutex<Option<ReloadRecord>>,
    /// Reload requests, for the debounced reload task.
    pub reload_requests: mpsc::UnboundedSender<ReloadTrigger>,
    /// The queues while sources may still submit; taken at shutdown.
    ingest: Mutex<Option<Ingest>>,
    /// Whether the source is connected (a broker input can lose its
    /// connection; the others are always up).
    source_connected: AtomicBool,
    /// How far a replayable source has been acknowledged, saved with the
    /// correlation state.
    source_position: Mutex<Option<SourcePosition>>,
    /// TLS of the API listener, rotated on reload.
    pub tls: Option<TlsState>,
    /// The live tap's sessions.
    pub tap: Arc<TapHub>,
    /// The API server's connection handle (for counts and shutdown).
    pub server: axum_server::Handle<std::net::SocketAddr>,
    /// Post-evaluation enrichment, with `--enrichers`.
    pub enrichment: Option<Enrichment>,
    /// Dynamic pipeline sources, with `--source`.
    pub sources: Option<Sources>,
}

impl DaemonContext {
    /// A context around an initial (empty) rule set; not ready until
    /// [`DaemonContext::mark_loaded`].
    pub fn new(
        config: DaemonConfig,
        ruleset: Ruleset,
        metrics: Metrics,
        reload_requests: mpsc::UnboundedSender<ReloadTrigger>,
        ingest: Ingest,
        tls: Option<TlsState>,
        extensions: Extensions,
    ) -> Arc<DaemonContext> {
        let tap = Arc::new(TapHub::new(config.tap.clone()));
        let context = DaemonContext {
            config,
            ruleset: ArcSwap::from_pointee(ruleset),
            metrics,
            ready: AtomicBool::new(false),
            last_reload: Mutex::new(None),
            reload_requests,
            ingest: Mutex::new(Some(ingest)),
            source_connected: AtomicBool::new(true),
            source_position: Mutex::new(None),
            tls,
            tap,
            server: axum_server::Handle::new(),
            enrichment: extensions.enrichment,
            sources: extensions.sources,
        };
        context.publish_rule_counts();
        Arc::new(context)
    }

    /// True when the last load succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// True unless the source lost its connection.
    pub fn is_source_connected(&self) -> bool {
        self.source_connected.load(Ordering::Acquire)
    }

    /// Records whether the source is connected (readiness follows).
    pub fn set_source_connected(&self, connected: bool) {
        self.source_connected.store(connected, Ordering::Release);
    }

    /// How far the source has been acknowledged.
    pub fn source_position(&self) -> Option<SourcePosition> {
        *self.source_position.lock().expect("not poisoned")
    }

    /// Moves the acknowledged position forward (never back: acknowledgements
    /// of parallel workers arrive out of order).
    pub fn advance_source_position(&self, position: SourcePosition) {
        let mut stored = self.source_position.lock().expect("not poisoned");
        if stored.is_none_or(|s| s.sequence < position.sequence) {
            *stored = Some(position);
        }
    }

    /// The last reload, if any.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.last_reload.lock().expect("not poisoned").clone()
    }

    /// Marks the first load done: the daemon is ready.
    pub fn mark_loaded(&self) {
        self.ready.store(true, Ordering::Release);
        self.publish_rule_counts();
    }

    /// Records a reload outcome and sets readiness from it.
    pub fn record_reload(&self, record: ReloadRecord) {
        self.ready.store(record.ok, Ordering::Release);
        *self.last_reload.lock().expect("not poisoned") = Some(record);
        self.publish_rule_counts();
    }

    fn publish_rule_counts(&self) {
        let counts = self.ruleset.load().counts;
        let gauge = &self.metrics.rules_loaded;
        gauge
            .with_label_values(&["detection"])
            .set(counts.detection as i64);
        gauge
            .with_label_values(&["correlation"])
            .set(counts.correlation as i64);
        gauge
            .with_label_values(&["filter"])
            .set(counts.filters as i64);
    }

    /// The queues sources submit to, unless the daemon is shutting down.
    pub fn ingest(&self) -> Option<Ingest> {
        self.ingest.lock().expect("not poisoned").clone()
    }

    /// Stops accepting input: once the last in-flight submitter finishes,
    /// the queue closes and the workers drain it.
    pub fn close_ingest(&self) {
        self.ingest.lock().expect("not poisoned").take();
    }
}

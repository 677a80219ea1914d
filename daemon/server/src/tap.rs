//! The live tap: bounded, optionally redacted windows of the events flowing
//! through the daemon, streamed to `GET /api/v1/tap`.
//!
//! Lossy by design: workers hand each event to each session with a
//! non-blocking send into the session's bounded buffer; what does not fit is
//! dropped and counted, so a slow tap client never slows detection. With no
//! session open, the cost on the hot path is one atomic load per line.
//! Redaction happens here, in the daemon: redacted values never leave it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Tap limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Off by default: the tap exfiltrates raw events.
    pub enabled: bool,
    /// Longest session; longer requests are capped.
    pub max_duration: Duration,
    /// Most concurrent sessions (409 beyond).
    pub max_sessions: usize,
    /// Events buffered per session before drops.
    pub buffer_size: usize,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            enabled: false,
            max_duration: Duration::from_secs(300),
            max_sessions: 4,
            buffer_size: 1024,
        }
    }
}

/// Where on the decode path a session captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// What the engine evaluated.
    Decoded,
    /// The line as received, before parsing.
    Raw,
}

impl Stage {
    /// The name used in requests and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decoded => "decoded",
            Stage::Raw => "raw",
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    /// The tap is disabled (503).
    #[error("tap disabled: start the daemon with --enable-tap (or daemon.tap.enabled: true)")]
    Disabled,
    /// At the session cap (409).
    #[error("too many tap sessions: at most {0} at once")]
    TooMany(usize),
}

/// Replaces values at dotted paths with salted, deterministic tokens.
pub struct Redactor {
    key: [u8; 32],
    paths: Vec<Vec<String>>,
}

impl Redactor {
    /// A redactor with a fresh random salt for `paths` (`a.b,c` already split).
    pub fn new(paths: Vec<Vec<String>>) -> Redactor {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system provides random bytes");
        Redactor { key, paths }
    }

    /// The token of a value: equal values give equal tokens under one salt.
    pub fn token(&self, value: &Value) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key length");
        mac.update(value.to_string().as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("rsigma:redacted:{hex}")
    }

    /// Redacts every path in place.
    pub fn redact(&self, event: &mut Value) {
        for path in &self.paths {
            self.redact_path(event, path);
        }
    }

    fn redact_path(&self, node: &mut Value, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            let token = self.token(node);
            *node = Value::String(token);
            return;
        };
        match node {
            Value::Object(map) => {
                // A flat key holding dots (`"user.email"`) is redacted as well
                // as the nested path: a fixture must not leak either form.
                for split in 1..path.len() {
                    let joined = path[..=split].join(".");
                    if let Some(child) = map.get_mut(&joined) {
                        self.redact_path(child, &path[split + 1..]);
                    }
                }
                if let Some(child) = map.get_mut(first) {
                    self.redact_path(child, rest);
                }
            }
            Value::Array(items) => match first.parse::<usize>() {
                Ok(index) => {
                    if let Some(item) = items.get_mut(index) {
                        self.redact_path(item, rest);
                    }
                }
                // A field name meeting an array fans out to every element.
                Err(_) => {
                    for item in items {
                        self.redact_path(item, path);
                    }
                }
            },
            _ => {}
        }
    }
}

/// Lines for a session's buffer: each line ends with a newline.
#[derive(Debug)]
pub struct TapChunk {
    /// The lines.
    pub text: String,
    /// How many.
    pub lines: u64,
}

/// One open session.
struct Session {
    id: u64,
    stage: Stage,
    redactor: Option<Redactor>,
    /// Unbounded channel, bounded by `buffered` against `capacity`: a chunk
    /// of a batch's events is one send, not one per event.
    sender: mpsc::UnboundedSender<TapChunk>,
    /// Events in the channel now.
    buffered: Arc<AtomicU64>,
    capacity: u64,
    /// Events handed to the buffer.
    accepted: AtomicU64,
    /// Events that did not fit, or raw lines a redacting session could not parse.
    dropped: AtomicU64,
    limit: Option<u64>,
    /// No more events wanted (limit reached).
    full: AtomicBool,
}

impl Session {
    /// Events the session can still take now.
    fn room(&self) -> u64 {
        let room = self
            .capacity
            .saturating_sub(self.buffered.load(Ordering::Relaxed));
        match self.limit {
            Some(limit) => room.min(limit.saturating_sub(self.accepted.load(Ordering::Relaxed))),
            None => room,
        }
    }

    /// Hands a chunk of `lines` lines to the buffer.
    fn offer(&self, mut chunk: TapChunk, metrics: &Metrics) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let keep = chunk.lines.min(self.room());
        if keep < chunk.lines {
            // Lines past the limit are not wanted; those past the room are lost.
            let wanted = match self.limit {
                Some(limit) => chunk
                    .lines
                    .min(limit.saturating_sub(self.accepted.load(Ordering::Relaxed))),
                None => chunk.lines,
            };
            self.count_dropped(wanted - keep, metrics);
            chunk.text.truncate(nth_line_end(&chunk.text, keep));
            chunk.lines = keep;
        }
        if chunk.lines == 0 {
            return;
        }
        self.buffered.fetch_add(chunk.lines, Ordering::Relaxed);
        let accepted = self.accepted.fetch_add(chunk.lines, Ordering::Relaxed) + chunk.lines;
        if self.limit.is_some_and(|limit| accepted >= limit) {
            self.full.store(true, Ordering::Relaxed);
        }
        // A send error means the stream is gone and the session closing.
        let _ = self.sender.send(chunk);
    }

    fn count_dropped(&self, events: u64, metrics: &Metrics) {
        self.dropped.fetch_add(events, Ordering::Relaxed);
        metrics.tap_events_dropped.inc_by(events);
    }
}

/// The byte length of the first `lines` lines of `text`.
fn nth_line_end(text: &str, lines: u64) -> usize {
    if lines == 0 {
        return 0;
    }
    text.match_indices('\n')
        .nth(lines as usize - 1)
        .map_or(text.len(), |(at, _)| at + 1)
}

/// The open sessions; workers read the list without locking.
pub struct TapHub {
    config: TapConfig,
    sessions: ArcSwap<Vec<Arc<Session>>>,
    open: AtomicUsize,
    /// Serializes opening and closing.
    changes: Mutex<u64>,
}

/// The parameters of a tap request.
#[derive(Debug, Clone)]
pub struct TapRequest {
    /// Requested capture window (capped by the server).
    pub duration: Duration,
    /// Stop after this many events.
    pub limit: Option<u64>,
    /// Where to capture.
    pub stage: Stage,
    /// Dotted paths to redact.
    pub redact_fields: Vec<Vec<String>>,
}

/// An open session as seen by the streaming side; closing it (dropping it)
/// unregisters the session at once.
pub struct TapStream {
    hub: Arc<TapHub>,
    session: Arc<Session>,
    active: prometheus::IntGauge,
    /// Chunks of event lines, in order.
    chunks: mpsc::UnboundedReceiver<TapChunk>,
    /// When the capture window ends.
    pub deadline: Instant,
    /// When it started.
    pub started: Instant,
    /// When the window was closed.
    ended: Option<Instant>,
}

impl TapStream {
    /// The session's stage.
    pub fn stage(&self) -> Stage {
        self.session.stage
    }

    /// The event limit.
    pub fn limit(&self) -> Option<u64> {
        self.session.limit
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.session.dropped.load(Ordering::Relaxed)
    }

    /// The next chunk, waiting for it.
    pub async fn next_chunk(&mut self) -> Option<TapChunk> {
        let chunk = self.chunks.recv().await;
        self.taken(chunk)
    }

    /// The next chunk if one is buffered.
    pub fn try_next_chunk(&mut self) -> Option<TapChunk> {
        let chunk = self.chunks.try_recv().ok();
        self.taken(chunk)
    }

    fn taken(&self, chunk: Option<TapChunk>) -> Option<TapChunk> {
        if let Some(chunk) = &chunk {
            self.session
                .buffered
                .fetch_sub(chunk.lines, Ordering::Relaxed);
        }
        chunk
    }

    /// Ends the capture window: the session stops receiving events (those
    /// already buffered stay readable) and its duration is fixed.
    pub fn close(&mut self) {
        if self.ended.is_none() {
            self.ended = Some(Instant::now());
            self.hub.close(self.session.id);
        }
    }

    /// True once [`TapStream::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.ended.is_some()
    }

    /// How long the window was open (until now while it still is).
    pub fn elapsed(&self) -> Duration {
        self.ended.unwrap_or_else(Instant::now) - self.started
    }
}

impl Drop for TapStream {
    fn drop(&mut self) {
        self.hub.close(self.session.id);
        self.active.dec();
    }
}

/// The tap lines of one worker batch, one chunk per session, handed to the
/// sessions together at the end of the batch.
pub struct TapBatch {
    sessions: Arc<Vec<Arc<Session>>>,
    chunks: Vec<TapChunk>,
    /// Bytes a chunk reserves with its first line (see [`TapBatch::expect_bytes`]).
    expected_bytes: usize,
    /// Per session, events dropped in this batch: counted once at the end,
    /// so workers do not contend on the shared counters per event.
    dropped: Vec<u64>,
}

impl TapBatch {
    /// Sizes each chunk, on its first line, for `bytes` of text: about what a
    /// session taking every event of the batch receives, so that a chunk is
    /// allocated once instead of growing by doubling.
    pub fn expect_bytes(&mut self, bytes: usize) {
        self.expected_bytes = bytes;
    }

    /// Adds an evaluated event for the decoded-stage sessions; `text`, when
    /// given, is JSON text that parses to exactly `event` (the input line),
    /// used as is by sessions that do not redact.
    pub fn decoded(&mut self, event: &Value, text: Option<&str>) {
        for ((session, chunk), dropped) in self
            .sessions
            .iter()
            .zip(&mut self.chunks)
            .zip(&mut self.dropped)
        {
            if session.stage != Stage::Decoded || !Self::has_room(session, chunk, dropped) {
                continue;
            }
            if chunk.lines == 0 {
                chunk.text.reserve(self.expected_bytes);
            }
            match (&session.redactor, text) {
                (Some(redactor), _) => {
                    let mut copy = event.clone();
                    redactor.redact(&mut copy);
                    chunk.text.push_str(&copy.to_string());
                }
                (None, Some(text)) => chunk.text.push_str(text),
                (None, None) => chunk.text.push_str(&event.to_string()),
            }
            chunk.text.push('\n');
            chunk.lines += 1;
        }
    }

    /// Adds an input line for the raw-stage sessions.
    pub fn raw(&mut self, line: &str) {
        for ((session, chunk), dropped) in self
            .sessions
            .iter()
            .zip(&mut self.chunks)
            .zip(&mut self.dropped)
        {
            if session.stage != Stage::Raw || !Self::has_room(session, chunk, dropped) {
                continue;
            }
            if chunk.lines == 0 {
                chunk.text.reserve(self.expected_bytes);
            }
            let text = match &session.redactor {
                // Redaction needs structure: a line that is not JSON is
                // dropped from a redacting capture rather than leaked.
                Some(redactor) => match serde_json::from_str::<Value>(line) {
                    Ok(mut value) => {
                        redactor.redact(&mut value);
                        value.to_string()
                    }
                    Err(_) => {
                        *dropped += 1;
                        continue;
                    }
                },
                None => line.to_owned(),
            };
            // A JSON string carries any raw line intact.
            chunk.text.push_str(&Value::String(text).to_string());
            chunk.text.push('\n');
            chunk.lines += 1;
        }
    }

    /// True when the session can take one more event after those already in
    /// this batch's chunk; otherwise the event is dropped (and counted)
    /// before it is serialized.
    fn has_room(session: &Session, chunk: &TapChunk, dropped: &mut u64) -> bool {
        if session.full.load(Ordering::Relaxed) {
            return false;
        }
        if session.room() > chunk.lines {
            return true;
        }
        let limited = session
            .limit
            .is_some_and(|limit| session.accepted.load(Ordering::Relaxed) + chunk.lines >= limit);
        if !limited {
            *dropped += 1;
        }
        false
    }

    /// Hands each session its chunk.
    pub fn flush(self, metrics: &Metrics) {
        for ((session, chunk), dropped) in self.sessions.iter().zip(self.chunks).zip(self.dropped) {
            if dropped > 0 {
                session.count_dropped(dropped, metrics);
            }
            if chunk.lines > 0 {
                session.offer(chunk, metrics);
            }
        }
    }
}

impl TapHub {
    /// A hub with these limits.
    pub fn new(config: TapConfig) -> TapHub {
        TapHub {
            config,
            sessions: ArcSwap::from_pointee(Vec::new()),
            open: AtomicUsize::new(0),
            changes: Mutex::new(0),
        }
    }

    /// The limits.
    pub fn config(&self) -> &TapConfig {
        &self.config
    }

    /// A batch for the sessions open now, or `None` without any (one atomic
    /// load: the cost of the tap when nobody taps).
    pub fn batch(&self) -> Option<TapBatch> {
        if self.open.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let sessions = self.sessions.load_full();
        let chunks = sessions
            .iter()
            .map(|_| TapChunk {
                text: String::new(),
                lines: 0,
            })
            .collect();
        let dropped = vec![0; sessions.len()];
        Some(TapBatch {
            sessions,
            chunks,
            expected_bytes: 0,
            dropped,
        })
    }

    /// Opens a session.
    pub fn open(
        self: &Arc<Self>,
        request: TapRequest,
        metrics: &Metrics,
    ) -> Result<TapStream, TapError> {
        if !self.config.enabled {
            return Err(TapError::Disabled);
        }
        let mut next_id = self.changes.lock().expect("not poisoned");
        let current = self.sessions.load_full();
        if current.len() >= self.config.max_sessions {
            return Err(TapError::TooMany(self.config.max_sessions));
        }
        *next_id += 1;
        let (sender, chunks) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            id: *next_id,
            stage: request.stage,
            redactor: (!request.redact_fields.is_empty())
                .then(|| Redactor::new(request.redact_fields)),
            sender,
            buffered: Arc::new(AtomicU64::new(0)),
            capacity: self.config.buffer_size.max(1) as u64,
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            limit: request.limit,
            full: AtomicBool::new(request.limit == Some(0)),
        });
        let mut sessions = current.as_ref().clone();
        sessions.push(Arc::clone(&session));
        self.sessions.store(Arc::new(sessions));
        self.open.fetch_add(1, Ordering::Relaxed);
        metrics.tap_sessions_total.inc();
        metrics.tap_sessions_active.inc();
        let started = Instant::now();
        Ok(TapStream {
            hub: Arc::clone(self),
            session,
            active: metrics.tap_sessions_active.clone(),
            chunks,
            deadline: started + request.duration.min(self.config.max_duration),
            started,
            ended: None,
        })
    }

    fn close(&self, id: u64) {
        let _guard = self.changes.lock().expect("not poisoned");
        let current = self.sessions.load_full();
        let sessions: Vec<Arc<Session>> = current.iter().filter(|s| s.id != id).cloned().collect();
        if sessions.len() != current.len() {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        self.sessions.store(Arc::new(sessions));
    }
}

/// The summary record that ends every stream.
pub fn summary(stream: &TapStream, captured: u64, limit_reached: bool, input: Value) -> String {
    json!({
        "rsigma_tap_summary": {
            "captured": captured,
            "dropped": stream.dropped(),
            "duration_ms": stream.elapsed().as_millis() as u64,
            "stage": stream.stage().name(),
            "limit_reached": limit_reached,
            "input": input,
        }
    })
    .to_string()
}

/// Splits `a.b,c` into paths; empty segments are an error.
pub fn parse_redact_fields(text: &str) -> Result<Vec<Vec<String>>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|path| {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                Err(format!("invalid redact path '{path}'"))
            } else {
                Ok(segments)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(paths: &str) -> Redactor {
        Redactor::new(parse_redact_fields(paths).unwrap())
    }

    #[test]
    fn nested_paths_arrays_and_indexes() {
        let r = redactor("user.email,hosts.ip,list.1,flat.key");
        let mut event = json!({
            "user": {"email": "a@x.com", "name": "alice"},
            "hosts": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2", "os": "linux"}],
            "list": ["keep", "secret"],
            "flat.key": "hidden",
            "other": "a@x.com"
        });
        r.redact(&mut event);
        let token = |v: &str| r.token(&json!(v));
        assert_eq!(event["user"]["email"], json!(token("a@x.com")));
        assert_eq!(event["user"]["name"], "alice");
        assert_eq!(event["hosts"][0]["ip"], json!(token("10.0.0.1")));
        assert_eq!(event["hosts"][1]["ip"], json!(token("10.0.0.2")));
        assert_eq!(event["hosts"][1]["os"], "linux");
        assert_eq!(event["list"], json!(["keep", token("secret")]));
        assert_eq!(event["flat.key"], json!(token("hidden")));
        assert_eq!(event["other"], "a@x.com");
        assert!(token("x").starts_with("rsigma:redacted:"));
    }

    #[test]
    fn tokens_are_stable_within_and_differ_across_sessions() {
        let (a, b) = (redactor("x"), redactor("x"));
        assert_eq!(a.token(&json!("v")), a.token(&json!("v")));
        assert_ne!(a.token(&json!("v")), a.token(&json!("w")));
        assert_ne!(a.token(&json!("v")), b.token(&json!("v")));
    }

    #[test]
    fn redact_paths_are_validated() {
        assert!(parse_redact_fields("a..b").is_err());
        assert_eq!(parse_redact_fields("a.b, c").unwrap().len(), 2);
    }
}

//! The daemon's typed configuration. The CLI builds it from flags and the
//! config file; the daemon only checks what a flag parser cannot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rsigma_engine::CompileOptions;
use rsigma_engine::correlation::CorrelationOptions;

use crate::input::{DecoderConfig, Extract, InputFormat};
use crate::tap::TapConfig;
use crate::tls::TlsConfig;

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// NDJSON (or the `--input-format`) on standard input; end of input
    /// drains and stops the daemon.
    Stdin,
    /// `POST /api/v1/events` on the API listener.
    Http,
}

impl std::str::FromStr for InputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdin" => Ok(InputSpec::Stdin),
            "http" => Ok(InputSpec::Http),
            other if other.starts_with("nats://") => Err(format!(
                "invalid --input '{other}': NATS input is not available in this build"
            )),
            other => Err(format!(
                "invalid --input '{other}': expected stdin, http or nats://host:port/subject"
            )),
        }
    }
}

impl std::fmt::Display for InputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputSpec::Stdin => "stdin",
            InputSpec::Http => "http",
        })
    }
}

/// Where detections (or dead letters) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Standard output.
    Stdout,
    /// Appended to a file (`file://PATH`).
    File(PathBuf),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "stdout" {
            return Ok(SinkSpec::Stdout);
        }
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!("invalid sink '{s}': file:// needs a path"));
            }
            return Ok(SinkSpec::File(PathBuf::from(path)));
        }
        if s.starts_with("nats://") {
            return Err(format!(
                "invalid sink '{s}': NATS sinks are not available in this build"
            ));
        }
        Err(format!(
            "invalid sink '{s}': expected stdout, file://PATH or nats://host:port/subject"
        ))
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::File(path) => write!(f, "file://{}", path.display()),
        }
    }
}

/// Correlation state persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The SQLite file.
    pub db: PathBuf,
    /// Snapshot period.
    pub save_interval: Duration,
    /// Discard stored state at startup.
    pub clear: bool,
    /// Restore stored state even where a fresh start would be the default
    /// (replays); without replay sources it changes nothing.
    pub keep: bool,
}

/// Everything the daemon needs to run.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Rule file or directory.
    pub rules: PathBuf,
    /// Pipelines: builtin names or YAML files, in the order given.
    pub pipelines: Vec<String>,
    /// Event source.
    pub input: InputSpec,
    /// How input lines are decoded.
    pub decoder: DecoderConfig,
    /// Detection sinks (fan-out).
    pub outputs: Vec<SinkSpec>,
    /// Dead-letter queue for undecodable lines and failed deliveries.
    pub dlq: Option<SinkSpec>,
    /// Embed the event in every detection.
    pub include_event: bool,
    /// Pretty-print output records.
    pub pretty: bool,
    /// API listener.
    pub api_addr: SocketAddr,
    /// TLS for the API listener.
    pub tls: Option<TlsConfig>,
    /// Permit plaintext on a non-loopback API address.
    pub allow_plaintext: bool,
    /// Correlation behaviour.
    pub correlation: CorrelationOptions,
    /// Engine options: logsource routing, prefilter strategy, undefined
    /// placeholders (the pipelines' placeholders are filled in at each load).
    pub compile: CompileOptions,
    /// Leave out detections of rules that only feed correlations.
    pub no_detections: bool,
    /// Correlation state persistence.
    pub state: Option<StateConfig>,
    /// Capacity of the source→engine and engine→sink queues.
    pub buffer_size: usize,
    /// Events per engine lock acquisition.
    pub batch_size: usize,
    /// How long in-flight events may take to drain at shutdown.
    pub drain_timeout: Duration,
    /// Longest accepted input line in bytes (HTTP ingest answers 413 beyond).
    pub max_line_bytes: usize,
    /// Quiet period after a change before a reload runs.
    pub reload_debounce: Duration,
    /// Watch the rules and pipeline files for changes.
    pub watch: bool,
    /// Evaluation threads.
    pub workers: usize,
    /// The live tap.
    pub tap: TapConfig,
}

impl DaemonConfig {
    /// A configuration with the documented defaults.
    pub fn new(rules: PathBuf) -> DaemonConfig {
        DaemonConfig {
            rules,
            pipelines: Vec::new(),
            input: InputSpec::Stdin,
            decoder: DecoderConfig {
                format: InputFormat::Auto,
                syslog_tz: "+00:00".into(),
                extract: Extract::Whole,
            },
            outputs: vec![SinkSpec::Stdout],
            dlq: None,
            include_event: false,
            pretty: false,
            api_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            tls: None,
            allow_plaintext: false,
            correlation: CorrelationOptions::default(),
            compile: CompileOptions::default(),
            no_detections: false,
            state: None,
            buffer_size: 10_000,
            batch_size: 1,
            drain_timeout: Duration::from_secs(5),
            max_line_bytes: 1024 * 1024,
            reload_debounce: Duration::from_millis(500),
            watch: true,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tap: TapConfig::default(),
        }
    }

    /// Checks what flags cannot: consistency and the plaintext rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.buffer_size == 0 {
            return Err("--buffer-size must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        if self.outputs.is_empty() {
            return Err("at least one --output is needed".into());
        }
        if self.tap.max_sessions == 0 || self.tap.buffer_size == 0 {
            return Err("tap max_sessions and buffer_size must be at least 1".into());
        }
        if let Some(state) = &self.state {
            if state.clear && state.keep {
                return Err("--clear-state and --keep-state are mutually exclusive".into());
            }
            if state.save_interval.is_zero() {
                return Err("--state-save-interval must be at least 1 second".into());
            }
        }
        if self.tls.is_none() && !self.api_addr.ip().is_loopback() && !self.allow_plaintext {
            return Err(format!(
                "refusing plaintext HTTP on non-loopback address {}: configure TLS \
                 (--tls-cert/--tls-key) or pass --allow-plaintext",
                self.api_addr
            ));
        }
        Ok(())
    }
}

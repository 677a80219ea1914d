//! The daemon's typed configuration. The CLI builds it from flags and the
//! config file; the daemon only checks what a flag parser cannot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rsigma_engine::CompileOptions;
use rsigma_engine::correlation::CorrelationOptions;

use crate::input::{DecoderConfig, Extract, InputFormat};
use crate::tap::TapConfig;
use crate::tls::TlsConfig;

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// NDJSON (or the `--input-format`) on standard input.
    Stdin,
    /// `POST /api/v1/events` on the API listener.
    Http,
    /// A JetStream durable pull consumer on `nats://HOST:PORT/SUBJECT`.
    Nats(NatsTarget),
}

impl std::str::FromStr for InputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdin" => Ok(InputSpec::Stdin),
            "http" => Ok(InputSpec::Http),
            other if other.starts_with("nats://") => NatsTarget::parse(other)
                .map(InputSpec::Nats)
                .map_err(|err| format!("invalid --input: {err}")),
            other => Err(format!(
                "invalid --input '{other}': expected stdin, http or nats://host:port/subject"
            )),
        }
    }
}

impl std::fmt::Display for InputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputSpec::Stdin => f.write_str("stdin"),
            InputSpec::Http => f.write_str("http"),
            InputSpec::Nats(target) => target.fmt(f),
        }
    }
}

/// Where detections (or dead letters) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// Standard output.
    Stdout,
    /// Appended to a file (`file://PATH`).
    File(PathBuf),
    /// Published to a JetStream subject (`nats://HOST:PORT/SUBJECT`), one
    /// message per record, each waiting for its publish acknowledgement.
    Nats(NatsTarget),
}

impl SinkSpec {
    /// The sink's type, for metric labels: `stdout`, `file` or `nats`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkSpec::Stdout => "stdout",
            SinkSpec::File(_) => "file",
            SinkSpec::Nats(_) => "nats",
        }
    }
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
            return NatsTarget::parse(s)
                .map(SinkSpec::Nats)
                .map_err(|err| format!("invalid sink: {err}"));
        }
        Err(format!(
            "invalid sink '{s}': expected stdout, file://PATH or nats://host:port/subject"
        ))
    }
}

/// Names the sink without any secret: this is what logs, metric labels and
/// dead letters show.
impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("stdout"),
            SinkSpec::File(path) => write!(f, "file://{}", path.display()),
            SinkSpec::Nats(target) => target.fmt(f),
        }
    }
}

/// A subject on a NATS server, from `nats://HOST[:PORT]/SUBJECT`.
///
/// Credentials never travel in the URL (they would end up in logs, metric
/// labels and `ps`): a URL with a `user@` part is refused, and the error
/// does not repeat it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NatsTarget {
    /// `HOST:PORT` (port 4222 when the URL has none).
    pub server: String,
    /// The subject; `*` and `>` wildcards are allowed on an input.
    pub subject: String,
}

impl NatsTarget {
    /// Parses `nats://HOST[:PORT]/SUBJECT`.
    pub fn parse(url: &str) -> Result<NatsTarget, String> {
        let rest = url
            .strip_prefix("nats://")
            .ok_or("a NATS URL starts with nats://")?;
        let (authority, subject) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            let host = authority.rsplit('@').next().unwrap_or_default();
            return Err(format!(
                "nats://…@{host}/{subject}: credentials in the URL are refused; use \
                 --nats-user/--nats-password, --nats-token, --nats-nkey or --nats-creds \
                 (or their NATS_* environment variables)"
            ));
        }
        let display = format!("nats://{authority}/{subject}");
        if authority.is_empty() {
            return Err(format!("{display}: the URL needs a host"));
        }
        // `[v6 address]` or `[v6 address]:port`; else `host` or `host:port`.
        let port = match authority.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((host, "")) if !host.is_empty() => None,
                Some((host, rest)) if !host.is_empty() && rest.starts_with(':') => Some(&rest[1..]),
                _ => return Err(format!("{display}: invalid IPv6 host")),
            },
            None => match authority.split_once(':') {
                Some(("", _)) => return Err(format!("{display}: the URL needs a host")),
                Some((_, port)) => Some(port),
                None => None,
            },
        };
        let server = match port {
            Some(port) => {
                port.parse::<u16>()
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| format!("{display}: invalid port '{port}'"))?;
                authority.to_owned()
            }
            None => format!("{authority}:4222"),
        };
        validate_subject(subject).map_err(|reason| format!("{display}: {reason}"))?;
        Ok(NatsTarget {
            server,
            subject: subject.to_owned(),
        })
    }

    /// True when the subject has a `*` or `>` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.subject
            .split('.')
            .any(|token| token == "*" || token == ">")
    }
}

impl std::fmt::Display for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nats://{}/{}", self.server, self.subject)
    }
}

/// Whether every subject `subject` matches is matched by `pattern` (both
/// may hold wildcards: `*` one token, `>` one or more trailing tokens).
pub fn subject_covers(pattern: &str, subject: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let subject: Vec<&str> = subject.split('.').collect();
    for (index, token) in pattern.iter().enumerate() {
        if *token == ">" {
            return subject.len() > index;
        }
        let Some(theirs) = subject.get(index) else {
            return false;
        };
        match (*token, *theirs) {
            (_, ">") => return false,
            ("*", _) => {}
            (ours, theirs) if ours == theirs => {}
            _ => return false,
        }
    }
    subject.len() == pattern.len()
}

/// A NATS subject: dot-separated non-empty tokens without whitespace; `>`
/// only as the last token.
fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the URL needs a subject after the host (nats://host:port/subject)".into());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (index, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("subject '{subject}' has an empty token"));
        }
        if token.chars().any(char::is_whitespace) {
            return Err(format!("subject '{subject}' contains whitespace"));
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "subject '{subject}': wildcards '*' and '>' must be whole tokens"
            ));
        }
        if *token == ">" && index + 1 != tokens.len() {
            return Err(format!("subject '{subject}': '>' must be the last token"));
        }
    }
    Ok(())
}

/// How the daemon authenticates to NATS. The variants holding secrets
/// print as their method only.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A `.creds` file (user JWT and NKey seed).
    Creds(PathBuf),
    /// A token.
    Token(String),
    /// User name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// An NKey seed.
    NKey(String),
}

impl NatsAuth {
    /// The method's name, as errors and logs say it.
    pub fn method(&self) -> &'static str {
        match self {
            NatsAuth::None => "no credentials",
            NatsAuth::Creds(_) => "credentials file",
            NatsAuth::Token(_) => "token",
            NatsAuth::UserPassword { .. } => "user and password",
            NatsAuth::NKey(_) => "NKey",
        }
    }
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::Creds(path) => write!(f, "Creds({})", path.display()),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            other => f.write_str(other.method()),
        }
    }
}

/// Where a NATS input starts reading its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayStart {
    /// Where the durable consumer left off (the whole stream for a new one).
    #[default]
    Resume,
    /// From this stream sequence on.
    Sequence(u64),
    /// From the first message stored at or after this time.
    Time(DateTime<Utc>),
    /// From the last message in the stream on.
    Latest,
}

/// NATS connection and consumer settings, shared by every `nats://` input,
/// output and dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Authentication (one method).
    pub auth: NatsAuth,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// CA bundle verifying the server (else the system's roots).
    pub ca: Option<PathBuf>,
    /// Refuse servers that do not negotiate TLS.
    pub require_tls: bool,
    /// Where the input starts.
    pub replay: ReplayStart,
    /// Durable consumer shared by the daemons of one group.
    pub consumer_group: Option<String>,
    /// How long JetStream waits for an acknowledgement before delivering a
    /// message again.
    pub ack_wait: Duration,
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            auth: NatsAuth::None,
            client_cert: None,
            ca: None,
            require_tls: false,
            replay: ReplayStart::Resume,
            consumer_group: None,
            ack_wait: Duration::from_secs(30),
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
    /// NATS settings (used by `nats://` inputs and sinks).
    pub nats: NatsConfig,
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
    /// The enrichers file (`--enrichers`).
    pub enrichers: Option<PathBuf>,
    /// Dynamic source declaration files or directories (`--source`).
    pub sources: Vec<PathBuf>,
    /// Let pipelines `include` sources fetched over the network.
    pub allow_remote_include: bool,
    /// Drain and stop at the end of standard input (else the daemon keeps
    /// serving until SIGTERM or SIGINT).
    pub exit_on_eof: bool,
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
            nats: NatsConfig::default(),
            buffer_size: 10_000,
            batch_size: 1,
            drain_timeout: Duration::from_secs(5),
            max_line_bytes: 1024 * 1024,
            reload_debounce: Duration::from_millis(500),
            watch: true,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tap: TapConfig::default(),
            enrichers: None,
            sources: Vec::new(),
            allow_remote_include: false,
            exit_on_eof: false,
        }
    }

    /// Checks what flags cannot: consistency and the plaintext rule.
    pub fn validate(&self) -> Result<(), String> {
        bounded("--buffer-size", self.buffer_size, 1, MAX_BUFFER_SIZE)?;
        bounded("--batch-size", self.batch_size, 1, MAX_BATCH_SIZE)?;
        bounded("--workers", self.workers, 1, MAX_WORKERS)?;
        bounded("--max-line-bytes", self.max_line_bytes, 1, MAX_LINE_BYTES)?;
        bounded(
            "--drain-timeout (seconds)",
            self.drain_timeout.as_secs() as usize,
            0,
            MAX_DRAIN_SECONDS,
        )?;
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
            bounded(
                "--state-save-interval (seconds)",
                state.save_interval.as_secs() as usize,
                1,
                MAX_SAVE_INTERVAL_SECONDS,
            )?;
        }
        self.validate_nats()?;
        if self.tls.is_none() && !self.api_addr.ip().is_loopback() && !self.allow_plaintext {
            return Err(format!(
                "refusing plaintext HTTP on non-loopback address {}: configure TLS \
                 (--tls-cert/--tls-key) or pass --allow-plaintext",
                self.api_addr
            ));
        }
        Ok(())
    }

    /// True when an input, output or the DLQ is a `nats://` URL.
    pub fn uses_nats(&self) -> bool {
        matches!(self.input, InputSpec::Nats(_))
            || self
                .outputs
                .iter()
                .chain(&self.dlq)
                .any(|sink| matches!(sink, SinkSpec::Nats(_)))
    }

    fn validate_nats(&self) -> Result<(), String> {
        if !self.uses_nats() {
            return Ok(());
        }
        if !cfg!(feature = "nats") {
            return Err("NATS inputs and sinks are not available in this build \
                        (rebuild with the daemon-nats feature)"
                .into());
        }
        for sink in self.outputs.iter().chain(&self.dlq) {
            if let SinkSpec::Nats(target) = sink
                && target.is_wildcard()
            {
                return Err(format!(
                    "{target}: a NATS output or DLQ publishes to one subject; wildcards \
                     are for --input"
                ));
            }
        }
        if let InputSpec::Nats(input) = &self.input {
            for sink in self.outputs.iter().chain(&self.dlq) {
                if let SinkSpec::Nats(target) = sink
                    && target.server == input.server
                    && subject_covers(&input.subject, &target.subject)
                {
                    return Err(format!(
                        "{target} is inside the input subject '{}': the daemon would read its \
                         own records back as events; publish outside it",
                        input.subject
                    ));
                }
            }
        }
        let nats = &self.nats;
        if nats.replay != ReplayStart::Resume && !matches!(self.input, InputSpec::Nats(_)) {
            return Err("--replay-from-* needs a nats:// --input".into());
        }
        if let Some(group) = &nats.consumer_group
            && (group.is_empty()
                || group.len() > 64
                || !group
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!(
                "invalid --consumer-group '{group}': use 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        bounded(
            "--nats-ack-wait / daemon.nats.ack_wait (seconds)",
            nats.ack_wait.as_secs() as usize,
            1,
            MAX_ACK_WAIT_SECONDS,
        )?;
        Ok(())
    }
}

/// Upper bounds of the numeric settings (docs/daemon.md): large enough for
/// any real deployment, small enough that no allocation or timer overflows.
const MAX_BUFFER_SIZE: usize = 1_000_000;
const MAX_BATCH_SIZE: usize = 65_536;
const MAX_WORKERS: usize = 1_024;
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
const MAX_DRAIN_SECONDS: usize = 3_600;
const MAX_SAVE_INTERVAL_SECONDS: usize = 86_400;
const MAX_ACK_WAIT_SECONDS: usize = 3_600;

fn bounded(flag: &str, value: usize, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{flag} must be between {min} and {max}, got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls() {
        let parse = |url: &str| NatsTarget::parse(url).map(|t| (t.server, t.subject));
        let ok = |server: &str, subject: &str| Ok((server.to_owned(), subject.to_owned()));
        assert_eq!(parse("nats://h/events.>"), ok("h:4222", "events.>"));
        assert_eq!(parse("nats://h:4223/a.*.c"), ok("h:4223", "a.*.c"));
        assert_eq!(parse("nats://[fd00::1]/s"), ok("[fd00::1]:4222", "s"));
        assert_eq!(parse("nats://[fd00::1]:4223/s"), ok("[fd00::1]:4223", "s"));
        for bad in [
            "nats://:4222/s",
            "nats://h:0/s",
            "nats://h:x/s",
            "nats://[fd00::1/s",
            "nats://h",
            "nats://h/a..b",
            "nats://h/a.>.b",
            "nats://h/a b",
            "nats://h/ab*",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let refused = parse("nats://alice:hunter2@h/s").unwrap_err();
        assert!(
            refused.contains("credentials in the URL are refused"),
            "{refused}"
        );
        assert!(
            !refused.contains("hunter2") && !refused.contains("alice"),
            "{refused}"
        );
    }

    #[test]
    fn an_output_inside_the_input_subject_is_refused() {
        let mut config = DaemonConfig::new("rules".into());
        config.allow_plaintext = true;
        config.input = "nats://h/events.>".parse().unwrap();
        config.outputs = vec!["nats://h/events.detections".parse().unwrap()];
        if cfg!(feature = "nats") {
            let err = config.validate().unwrap_err();
            assert!(err.contains("read its own records back"), "{err}");
            config.outputs = vec!["nats://h/detections".parse().unwrap()];
            config.dlq = Some("nats://h/events.dlq".parse().unwrap());
            assert!(config.validate().is_err());
            config.dlq = Some("nats://other/events.dlq".parse().unwrap());
            assert_eq!(config.validate(), Ok(()));
        }
    }
}

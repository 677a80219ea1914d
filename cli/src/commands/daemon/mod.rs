//! `rsigma engine daemon`: run the long-running detection daemon.
//!
//! Flags win over the config file (`daemon.*`), which wins over the
//! defaults. The daemon itself lives in the `rsigma-daemon` crate; this
//! module only turns flags and file into its typed configuration, starts a
//! runtime and maps the outcome to an exit code (0 normal shutdown, 2 rules
//! unreadable at startup, 3 configuration error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use rsigma_daemon::input::{DecoderConfig, Extract, InputFormat};
use rsigma_daemon::tap::TapConfig;
use rsigma_daemon::tls::{MinVersion, TlsConfig};
use rsigma_daemon::{DaemonConfig, StateConfig};

mod nats;

use crate::config::{ConfigArgs, DaemonSection, TlsVersion};
use crate::exit::{CliError, Code};
use crate::options::{CorrelationArgs, EngineArgs};

/// Arguments of `rsigma engine daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Sigma rule file or directory (recursive). Required here or as `daemon.rules` in the config file.
    #[arg(short = 'r', long = "rules", value_name = "RULES")]
    pub rules: Option<PathBuf>,

    /// Event source: stdin, http (POST /api/v1/events) or nats://HOST:PORT/SUBJECT. [default: stdin]
    #[arg(long, value_name = "URL")]
    pub input: Option<String>,

    /// With --input stdin: drain and exit at the end of input (else serve until SIGTERM).
    #[arg(long)]
    pub exit_on_eof: bool,

    /// Input log format: auto, json, syslog, plain, logfmt, cef. [default: auto]
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,

    /// Timezone offset for RFC 3164 syslog (+HH:MM or -HH:MM). [default: +00:00]
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub syslog_tz: Option<String>,

    /// jq filter extracting the event payload from each JSON object.
    #[arg(long, value_name = "JQ", conflicts_with = "jsonpath")]
    pub jq: Option<String>,

    /// JSONPath (RFC 9535) query extracting the event payload.
    #[arg(long, value_name = "JSONPATH")]
    pub jsonpath: Option<String>,

    /// Detection sink: stdout, file://PATH or nats://HOST:PORT/SUBJECT. Repeatable for fan-out. [default: stdout]
    #[arg(long = "output", value_name = "URL")]
    pub outputs: Vec<String>,

    /// Dead-letter queue for lines that fail parsing or sink delivery (same schemes as --output).
    #[arg(long, value_name = "URL")]
    pub dlq: Option<String>,

    /// Embed the full event in every detection.
    #[arg(long)]
    pub include_event: bool,

    /// Pretty-print JSON output.
    #[arg(long)]
    pub pretty: bool,

    /// Processing pipeline: builtin name (ecs_windows, sysmon) or YAML file. Repeatable.
    #[arg(short = 'p', long = "pipeline", value_name = "PIPELINE")]
    pub pipelines: Vec<String>,

    /// Bind address of the API (health, readiness, metrics, /api/v1/*). [default: 0.0.0.0:9090]
    #[arg(long, value_name = "ADDR")]
    pub api_addr: Option<String>,

    /// Permit plaintext HTTP on a non-loopback --api-addr.
    #[arg(long)]
    pub allow_plaintext: bool,

    /// PEM certificate (with intermediates) for the API listener. Requires --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Requires --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Password of an encrypted --tls-key (rejected: decrypt the key first).
    #[arg(
        long,
        value_name = "PASS",
        env = "RSIGMA_TLS_KEY_PASSWORD",
        hide_env_values = true
    )]
    pub tls_key_password: Option<String>,

    /// PEM CA bundle verifying client certificates: enables mutual TLS.
    #[arg(long, value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,

    /// Minimum TLS version: 1.2 or 1.3. [default: 1.3]
    #[arg(long, value_name = "VERSION")]
    pub tls_min_version: Option<String>,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub correlation: CorrelationArgs,

    #[command(flatten)]
    pub nats: nats::NatsArgs,

    /// SQLite database persisting correlation state across restarts.
    #[arg(long, value_name = "PATH")]
    pub state_db: Option<PathBuf>,

    /// Periodic state snapshot interval in seconds. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub state_save_interval: Option<u64>,

    /// Clear stored state on startup.
    #[arg(long, conflicts_with = "keep_state")]
    pub clear_state: bool,

    /// Force restoring stored state (for replays).
    #[arg(long)]
    pub keep_state: bool,

    /// Capacity of the source→engine and engine→sink queues. [default: 10000]
    #[arg(long, value_name = "N")]
    pub buffer_size: Option<usize>,

    /// Maximum events per engine lock acquisition. [default: 1]
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Seconds to wait for in-flight events to drain on shutdown. [default: 5]
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout: Option<u64>,

    /// Evaluation threads. [default: the number of CPUs]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Longest accepted input line in bytes (HTTP answers 413 beyond). [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_line_bytes: Option<usize>,

    /// Do not watch the rule and pipeline files (reload on SIGHUP or POST /api/v1/reload only).
    #[arg(long)]
    pub no_watch: bool,

    /// Enable GET /api/v1/tap (live event capture; exposes raw events: use behind mTLS).
    #[arg(long)]
    pub enable_tap: bool,

    /// YAML file of post-evaluation enrichers (docs/enrichers.md); reloaded with the rules.
    #[arg(long, value_name = "PATH")]
    pub enrichers: Option<PathBuf>,

    /// Dynamic source declarations: a YAML file, or a directory of them (docs/sources.md). Repeatable.
    #[arg(long = "source", value_name = "FILE_OR_DIR")]
    pub sources: Vec<PathBuf>,

    /// Let pipeline include: items name sources fetched over the network (http, nats).
    #[arg(long)]
    pub allow_remote_include: bool,
}

/// Runs `rsigma engine daemon` until it stops.
pub fn run(args: &DaemonArgs) -> Result<Code, CliError> {
    let file = args.config.load()?;
    let config = build_config(args, &file.daemon).map_err(|err| CliError::config(anyhow!(err)))?;
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rsigma-io")
        .build()
        .map_err(|err| CliError::config(anyhow!("cannot start the async runtime: {err}")))?;
    let outcome = runtime.block_on(rsigma_daemon::run(config));
    // Work still blocked (a drain that timed out) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => Ok(Code::Success),
        Err(err) if err.exit_code() == 2 => Err(CliError::rules(anyhow!(err))),
        Err(err) => Err(CliError::config(anyhow!(err))),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Flags over file over defaults.
fn build_config(args: &DaemonArgs, file: &DaemonSection) -> Result<DaemonConfig, String> {
    let rules = args
        .rules
        .clone()
        .or_else(|| file.rules.clone())
        .ok_or("the rules path is required: -r/--rules or daemon.rules in the config file")?;
    let mut config = DaemonConfig::new(rules);
    config.pipelines = if args.pipelines.is_empty() {
        file.pipelines.clone()
    } else {
        args.pipelines.clone()
    };
    if let Some(input) = args.input.as_ref().or(file.input.as_ref()) {
        config.input = input.parse()?;
    }
    let format = args.input_format.as_ref().or(file.input_format.as_ref());
    let jq = args.jq.clone().or_else(|| file.jq.clone());
    let jsonpath = args.jsonpath.clone().or_else(|| file.jsonpath.clone());
    config.decoder = DecoderConfig {
        format: match format {
            Some(format) => format
                .parse::<InputFormat>()
                .map_err(|err| format!("--input-format: {err}"))?,
            None => InputFormat::Auto,
        },
        syslog_tz: args
            .syslog_tz
            .clone()
            .or_else(|| file.syslog_tz.clone())
            .unwrap_or_else(|| "+00:00".into()),
        extract: match (jq, jsonpath) {
            (Some(_), Some(_)) => return Err("--jq and --jsonpath are mutually exclusive".into()),
            (Some(jq), None) => Extract::Jq(jq),
            (None, Some(path)) => Extract::JsonPath(path),
            (None, None) => Extract::Whole,
        },
    };
    let outputs = if args.outputs.is_empty() {
        file.outputs.clone()
    } else {
        args.outputs.clone()
    };
    if !outputs.is_empty() {
        config.outputs = outputs
            .iter()
            .map(|o| o.parse())
            .collect::<Result<_, _>>()?;
    }
    if let Some(dlq) = args.dlq.as_ref().or(file.dlq.as_ref()) {
        config.dlq = Some(dlq.parse().map_err(|err| format!("--dlq: {err}"))?);
    }
    config.include_event = args.include_event || file.include_event.unwrap_or(false);
    config.pretty = args.pretty || file.pretty.unwrap_or(false);
    if let Some(addr) = args.api_addr.as_ref().or(file.api.addr.as_ref()) {
        config.api_addr = addr
            .parse::<SocketAddr>()
            .map_err(|err| format!("invalid --api-addr '{addr}': {err}"))?;
    }
    config.allow_plaintext = args.allow_plaintext || file.tls.allow_plaintext.unwrap_or(false);
    if args.tls_key_password.is_some() {
        return Err(
            "--tls-key-password: encrypted keys are not supported; decrypt the key \
                    first (openssl pkey -in key.pem -out key-decrypted.pem)"
                .into(),
        );
    }
    // Checked with TLS off too: a typo must not wait for the day TLS is on.
    let min_version = match &args.tls_min_version {
        Some(version) => version.parse()?,
        None => match file.tls.min_version {
            Some(TlsVersion::V1_2) => MinVersion::V1_2,
            _ => MinVersion::V1_3,
        },
    };
    let cert = args.tls_cert.clone().or_else(|| file.tls.cert.clone());
    let key = args.tls_key.clone().or_else(|| file.tls.key.clone());
    config.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert,
            key,
            client_ca: args
                .tls_client_ca
                .clone()
                .or_else(|| file.tls.client_ca.clone()),
            min_version,
        }),
        (None, None) => {
            if args.tls_client_ca.is_some() || file.tls.client_ca.is_some() {
                return Err("--tls-client-ca needs --tls-cert and --tls-key".into());
            }
            None
        }
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    config.correlation = args.correlation.options(&file.correlation);
    config.compile = args.engine.options(&file.engine)?;
    config.no_detections = args.correlation.no_detections(&file.correlation);
    if let Some(db) = args.state_db.clone().or_else(|| file.state.db.clone()) {
        config.state = Some(StateConfig {
            db,
            save_interval: args
                .state_save_interval
                .map(Duration::from_secs)
                .or(file.state.save_interval)
                .unwrap_or(Duration::from_secs(30)),
            clear: args.clear_state || file.state.clear.unwrap_or(false),
            keep: args.keep_state || file.state.keep.unwrap_or(false),
        });
    }
    if let Some(n) = args.buffer_size.or(file.buffer_size) {
        config.buffer_size = n;
    }
    if let Some(n) = args.batch_size.or(file.batch_size) {
        config.batch_size = n;
    }
    if let Some(timeout) = args
        .drain_timeout
        .map(Duration::from_secs)
        .or(file.drain_timeout)
    {
        config.drain_timeout = timeout;
    }
    if let Some(n) = args.workers {
        config.workers = n;
    }
    if let Some(n) = args.max_line_bytes {
        config.max_line_bytes = n;
    }
    config.watch = !args.no_watch;
    config.exit_on_eof = args.exit_on_eof;
    config.enrichers = args.enrichers.clone().or_else(|| file.enrichers.clone());
    config.allow_remote_include =
        args.allow_remote_include || file.allow_remote_include.unwrap_or(false);
    config.sources = if args.sources.is_empty() {
        file.sources.clone()
    } else {
        args.sources.clone()
    };
    config.nats = args.nats.config(&file.nats)?;
    let defaults = TapConfig::default();
    config.tap = TapConfig {
        enabled: args.enable_tap || file.tap.enabled.unwrap_or(false),
        max_duration: file.tap.max_duration.unwrap_or(defaults.max_duration),
        max_sessions: file.tap.max_sessions.unwrap_or(defaults.max_sessions),
        buffer_size: file.tap.buffer_size.unwrap_or(defaults.buffer_size),
    };
    config.validate()?;
    Ok(config)
}

//! The `rsigma` configuration file: discovery, parsing and the typed model.
//!
//! The file is YAML with a single top-level section, `daemon`, holding the
//! settings of `rsigma engine daemon` (and the API address that `rsigma engine
//! status` and `rsigma config reload` talk to). Every setting is optional; a
//! command-line flag always wins over the file, and that merging is done by each
//! command. Unknown keys anywhere are errors, so typos do not go unnoticed.
//!
//! Which file is read (see [`ConfigFile::load`]):
//! 1. the file given with `-c/--config` (it must exist and be valid);
//! 2. otherwise the first of these that exists:
//!    `./rsigma.yaml`,
//!    `$XDG_CONFIG_HOME/rsigma/config.yaml` (`$HOME/.config/rsigma/config.yaml`
//!    when `XDG_CONFIG_HOME` is unset, empty or relative),
//!    `/etc/rsigma/config.yaml`;
//! 3. otherwise no file: every setting takes its default.
//!
//! A file that is found but cannot be read or parsed is an error (exit code 3)
//! naming the file and, for YAML errors, the line and column.
//!
//! Relative filesystem paths in the file (`rules`, `enrichers`, `tls.cert`,
//! `tls.key`, `tls.client_ca`, `state.db`, the `nats` files) are resolved
//! against the directory holding the file. Durations are either a number of seconds (`30`) or a
//! [humantime](https://docs.rs/humantime) string (`30s`, `5m`, `1h 30m`).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use rsigma_engine::correlation::{EventMode, FireAction, TimestampFallback};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::exit::CliError;

/// The config file looked for in the current directory.
pub const LOCAL_FILE: &str = "./rsigma.yaml";

/// The system-wide config file, the last one tried.
pub const SYSTEM_FILE: &str = "/etc/rsigma/config.yaml";

/// `-c/--config`, for every command that reads the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// Configuration file (YAML). Without it, the first existing of ./rsigma.yaml,
    /// $XDG_CONFIG_HOME/rsigma/config.yaml (default ~/.config/rsigma/config.yaml)
    /// and /etc/rsigma/config.yaml is used.
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads the config file these flags select (see [`ConfigFile::load`]).
    pub fn load(&self) -> Result<ConfigFile, CliError> {
        ConfigFile::load(self.config.as_deref())
    }
}

/// A loaded configuration: where it came from and what it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    /// The file that was read; `None` when no file was given or found.
    pub path: Option<PathBuf>,
    /// The `daemon` section (all defaults when absent).
    pub daemon: DaemonSection,
}

impl ConfigFile {
    /// Loads the config file `explicit` (from `-c/--config`) or, without it, the
    /// first file of the discovery chain that exists (see the module docs).
    ///
    /// Returns all defaults when no file is given or found. Fails with exit code 3
    /// when the explicit file is missing, or when the selected file cannot be read,
    /// is not valid YAML, or does not match the model (unknown key, wrong type).
    pub fn load(explicit: Option<&Path>) -> Result<ConfigFile, CliError> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let candidates = discovery_candidates(
                    std::env::var_os("XDG_CONFIG_HOME"),
                    std::env::var_os("HOME"),
                );
                match candidates.into_iter().find(|path| path.exists()) {
                    Some(path) => path,
                    None => return Ok(ConfigFile::default()),
                }
            }
        };
        Self::read(&path)
    }

    /// Reads and parses the config file at `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, CliError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            CliError::config(anyhow!(
                "the config file '{}' could not be read: {err}",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as the content of the config file at `path` (used in
    /// messages and to resolve relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, CliError> {
        let raw: Option<RawFile> = yaml_serde::from_str(text).map_err(|err| {
            CliError::config(anyhow!(
                "invalid config file '{}': {}",
                path.display(),
                describe_yaml_error(&err)
            ))
        })?;
        let mut daemon = raw.unwrap_or_default().daemon;
        if let Some(dir) = path.parent() {
            daemon.resolve_paths(dir);
        }
        Ok(ConfigFile {
            path: Some(path.to_path_buf()),
            daemon,
        })
    }
}

/// Formats a YAML error as `line L, column C: <message>` when it has a location.
fn describe_yaml_error(err: &yaml_serde::Error) -> String {
    let message = err.to_string();
    match err.location() {
        Some(location) => {
            // The message usually ends with " at line L column C"; say it once, up front.
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            format!(
                "line {}, column {}: {message}",
                location.line(),
                location.column()
            )
        }
        None => message,
    }
}

/// The discovery chain after `./rsigma.yaml`, given `$XDG_CONFIG_HOME` and `$HOME`.
///
/// Following the XDG base directory specification, an empty or relative
/// `XDG_CONFIG_HOME` is ignored, as is an empty `HOME`.
pub fn discovery_candidates(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(LOCAL_FILE)];
    let xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    let user_dir = match xdg {
        Some(dir) => Some(dir),
        None => home
            .filter(|home| !home.is_empty())
            .map(|home| PathBuf::from(home).join(".config")),
    };
    if let Some(dir) = user_dir {
        candidates.push(dir.join("rsigma").join("config.yaml"));
    }
    candidates.push(PathBuf::from(SYSTEM_FILE));
    candidates
}

/// The whole file: only the `daemon` section is allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, deserialize_with = "null_as_default")]
    daemon: DaemonSection,
}

/// The `daemon` section: settings of `rsigma engine daemon`.
///
/// Every field is optional; `None` (or an empty list) means "not set in the
/// file", and the command uses its flag or built-in default. The defaults
/// named below are those of the daemon.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSection {
    /// Sigma rule file or directory (`-r`). Resolved against the file's directory.
    pub rules: Option<PathBuf>,
    /// The enrichers file (`--enrichers`). Resolved against the file's directory.
    pub enrichers: Option<PathBuf>,
    /// Let pipelines include remote sources (`--allow-remote-include`). Default false.
    pub allow_remote_include: Option<bool>,
    /// Dynamic source declarations (`--source`). Resolved against the file's directory.
    #[serde(deserialize_with = "null_as_default")]
    pub sources: Vec<PathBuf>,
    /// Processing pipelines to apply, in order (`-p`). Default: none.
    #[serde(deserialize_with = "null_as_default")]
    pub pipelines: Vec<String>,
    /// Where events come from (`--input`). Default `stdin`.
    pub input: Option<String>,
    /// How input lines are parsed (`--input-format`). Default `auto`.
    pub input_format: Option<String>,
    /// Time zone assumed for syslog timestamps without one. Default `+00:00`.
    pub syslog_tz: Option<String>,
    /// A jq filter selecting the event inside each input record. Default none.
    pub jq: Option<String>,
    /// A JSONPath selecting the event inside each input record. Default none.
    pub jsonpath: Option<String>,
    /// Where detections are written (`--output`, repeatable). Default `[stdout]`.
    #[serde(deserialize_with = "null_as_default")]
    pub outputs: Vec<String>,
    /// Dead-letter destination for events that cannot be processed. Default none.
    pub dlq: Option<String>,
    /// Add the full event to each detection record. Default `false`.
    pub include_event: Option<bool>,
    /// Pretty-print output records. Default `false`.
    pub pretty: Option<bool>,
    /// Capacity of the internal event queue. Default `10000`.
    pub buffer_size: Option<usize>,
    /// Events evaluated per batch. Default `1`.
    pub batch_size: Option<usize>,
    /// How long shutdown waits for queued events to drain. Default 5 s.
    #[serde(deserialize_with = "opt_duration")]
    pub drain_timeout: Option<Duration>,
    /// The HTTP API.
    #[serde(deserialize_with = "null_as_default")]
    pub api: ApiSection,
    /// TLS of the HTTP API.
    #[serde(deserialize_with = "null_as_default")]
    pub tls: TlsSection,
    /// Live event tap sessions.
    #[serde(deserialize_with = "null_as_default")]
    pub tap: TapSection,
    /// Persistence of correlation state.
    #[serde(deserialize_with = "null_as_default")]
    pub state: StateSection,
    /// Correlation behaviour (the `engine eval` correlation flags).
    #[serde(deserialize_with = "null_as_default")]
    pub correlation: CorrelationSection,
    /// Logsource routing, prefilter strategy and placeholders.
    #[serde(deserialize_with = "null_as_default")]
    pub engine: EngineSection,
    /// NATS connection settings other than inline secrets.
    #[serde(deserialize_with = "null_as_default")]
    pub nats: NatsSection,
}

/// `daemon.nats`: the NATS settings a file may hold. Tokens, passwords
/// and NKey seeds are not among them: config files are often readable by
/// more than the daemon (a ConfigMap); those come from the environment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// Credentials file (.creds) for JWT + NKey authentication (`--nats-creds`),
    /// used when no other method is given by flag or environment.
    pub creds: Option<PathBuf>,
    /// TLS client certificate for mutual TLS (`--nats-tls-cert`); needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS client private key (`--nats-tls-key`); needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// CA bundle verifying the server (`--nats-tls-ca`). Default: the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// Refuse servers that do not negotiate TLS (`--nats-require-tls`). Default `false`.
    pub require_tls: Option<bool>,
    /// Durable consumer shared by daemons (`--consumer-group`). Default: derived from the subject.
    pub consumer_group: Option<String>,
    /// How long JetStream waits for an acknowledgement (`--nats-ack-wait`). Default 30 s.
    #[serde(deserialize_with = "opt_duration")]
    pub ack_wait: Option<Duration>,
}

/// `daemon.engine`: the counterparts of the engine flags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Logsource routing.
    #[serde(deserialize_with = "null_as_default")]
    pub logsource: LogsourceSection,
    /// Bloom filters in front of the literal scans (`--bloom-prefilter`). Default `false`.
    pub bloom_prefilter: Option<bool>,
    /// Their memory budget per index in bytes (`--bloom-max-bytes`). Default `1048576`.
    pub bloom_max_bytes: Option<u64>,
    /// One automaton across all fields (`--cross-rule-ac`). Default `false`.
    pub cross_rule_ac: Option<bool>,
    /// Load rules with undefined placeholders, inert (`--allow-undefined-placeholders`). Default `false`.
    pub allow_undefined_placeholders: Option<bool>,
}

/// `daemon.engine.logsource`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsourceSection {
    /// Routing on or off (`--no-logsource-routing`). Default `true`.
    pub routing: Option<bool>,
    /// Dimension to event field (`--logsource-field-map`). Default none.
    #[serde(deserialize_with = "null_as_default")]
    pub field_map: std::collections::BTreeMap<String, String>,
    /// Dimension to a fixed value (`--event-logsource`). Default none.
    #[serde(deserialize_with = "null_as_default")]
    pub event: std::collections::BTreeMap<String, String>,
    /// Derivation from well-known event shapes. Default `true`.
    pub derive: Option<bool>,
}

/// `daemon.api`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Listen address of the HTTP API, `host:port`. Default `0.0.0.0:9090`.
    /// Clients use it too, with wildcard hosts mapped to loopback.
    pub addr: Option<String>,
}

/// `daemon.tls`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Server certificate chain (PEM). Setting it serves the API over HTTPS.
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Lowest accepted TLS version. Default 1.3.
    pub min_version: Option<TlsVersion>,
    /// Allow serving the API without TLS on a non-loopback address. Default `false`.
    pub allow_plaintext: Option<bool>,
}

/// `daemon.tap`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapSection {
    /// Whether live tap sessions are allowed. Default `false`.
    pub enabled: Option<bool>,
    /// Longest a tap session may run. Default 5 minutes.
    #[serde(deserialize_with = "opt_duration")]
    pub max_duration: Option<Duration>,
    /// Most concurrent tap sessions. Default `4`.
    pub max_sessions: Option<usize>,
    /// Events buffered per tap session. Default `1024`.
    pub buffer_size: Option<usize>,
}

/// `daemon.state`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSection {
    /// SQLite file holding correlation state. Default none (state is in memory only).
    pub db: Option<PathBuf>,
    /// How often state is saved. Default 30 s.
    #[serde(deserialize_with = "opt_duration")]
    pub save_interval: Option<Duration>,
    /// Discard saved state at startup. Default `false`.
    pub clear: Option<bool>,
    /// Restore saved state even where a fresh start would be the default (replays). Default `false`.
    pub keep: Option<bool>,
}

/// `daemon.correlation`: the counterparts of the `engine eval` correlation flags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationSection {
    /// Suppression window for repeated alerts (`--suppress`). Default none.
    #[serde(deserialize_with = "opt_duration")]
    pub suppress: Option<Duration>,
    /// What a correlation does after it fires (`--action`). Default `alert`.
    pub action: Option<ActionSetting>,
    /// Do not output detections of rules that only feed correlations (`--no-detections`). Default `false`.
    pub no_detections: Option<bool>,
    /// Which events a correlation match carries (`--correlation-event-mode`). Default `none`.
    pub event_mode: Option<EventModeSetting>,
    /// Events kept per correlation window (`--max-correlation-events`). Default `10`.
    pub max_events: Option<usize>,
    /// Fields holding the event time, tried before the defaults (`--timestamp-field`).
    #[serde(deserialize_with = "null_as_default")]
    pub timestamp_fields: Vec<String>,
    /// What to do with events without a readable timestamp (`--timestamp-fallback`). Default `wallclock`.
    pub timestamp_fallback: Option<FallbackSetting>,
}

/// `correlation.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionSetting {
    /// Keep the window: the next matching event alerts again.
    Alert,
    /// Clear the window after an alert.
    Reset,
}

impl From<ActionSetting> for FireAction {
    fn from(value: ActionSetting) -> Self {
        match value {
            ActionSetting::Alert => FireAction::Alert,
            ActionSetting::Reset => FireAction::Reset,
        }
    }
}

/// `correlation.event_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventModeSetting {
    /// Matches carry no events.
    None,
    /// Matches carry the full events.
    Full,
    /// Matches carry each event's time and id.
    Refs,
}

impl From<EventModeSetting> for EventMode {
    fn from(value: EventModeSetting) -> Self {
        match value {
            EventModeSetting::None => EventMode::None,
            EventModeSetting::Full => EventMode::Full,
            EventModeSetting::Refs => EventMode::Refs,
        }
    }
}

/// `correlation.timestamp_fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FallbackSetting {
    /// Use the wall clock.
    Wallclock,
    /// Leave the event out of correlation state.
    Skip,
}

impl From<FallbackSetting> for TimestampFallback {
    fn from(value: FallbackSetting) -> Self {
        match value {
            FallbackSetting::Wallclock => TimestampFallback::Wallclock,
            FallbackSetting::Skip => TimestampFallback::Skip,
        }
    }
}

/// `tls.min_version`: `"1.2"` or `"1.3"` (an unquoted YAML `1.2`/`1.3` is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TlsVersionVisitor;

        impl Visitor<'_> for TlsVersionVisitor {
            type Value = TlsVersion;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TLS version, \"1.2\" or \"1.3\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<TlsVersion, E> {
                match text {
                    "1.2" => Ok(TlsVersion::V1_2),
                    "1.3" => Ok(TlsVersion::V1_3),
                    _ => Err(E::invalid_value(de::Unexpected::Str(text), &self)),
                }
            }

            fn visit_f64<E: de::Error>(self, number: f64) -> Result<TlsVersion, E> {
                if number == 1.2 {
                    Ok(TlsVersion::V1_2)
                } else if number == 1.3 {
                    Ok(TlsVersion::V1_3)
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(number), &self))
                }
            }
        }

        deserializer.deserialize_any(TlsVersionVisitor)
    }
}

impl DaemonSection {
    /// Resolves the relative filesystem paths of the section against `dir`.
    fn resolve_paths(&mut self, dir: &Path) {
        if dir.as_os_str().is_empty() {
            return;
        }
        let paths = [
            &mut self.rules,
            &mut self.enrichers,
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.tls.client_ca,
            &mut self.state.db,
            &mut self.nats.creds,
            &mut self.nats.tls_cert,
            &mut self.nats.tls_key,
            &mut self.nats.tls_ca,
        ];
        let listed = self.sources.iter_mut();
        for path in paths.into_iter().flatten().chain(listed) {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// Deserializes `null` (or an empty value) as `T::default()`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Deserializes an optional duration: a number of seconds or a humantime string.
fn opt_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    Ok(Option::<HumanDuration>::deserialize(deserializer)?.map(|d| d.0))
}

/// A duration written as a number of seconds or a humantime string.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: a number of seconds or a string such as \"30s\", \"5m\", \"1h\"",
                )
            }

            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(secs)))
            }

            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<HumanDuration, E> {
                u64::try_from(secs)
                    .map(|secs| HumanDuration(Duration::from_secs(secs)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(secs), &self))
            }

            fn visit_f64<E: de::Error>(self, secs: f64) -> Result<HumanDuration, E> {
                Duration::try_from_secs_f64(secs)
                    .map(HumanDuration)
                    .map_err(|_| E::invalid_value(de::Unexpected::Float(secs), &self))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                if let Ok(secs) = text.trim().parse::<u64>() {
                    return Ok(HumanDuration(Duration::from_secs(secs)));
                }
                humantime::parse_duration(text)
                    .map(HumanDuration)
                    .map_err(|err| E::custom(format!("invalid duration '{text}': {err}")))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(text, Path::new("conf/rsigma.yaml")).map_err(|err| err.to_string())
    }

    #[test]
    fn empty_and_comment_only_files_are_all_defaults() {
        for text in [
            "",
            "# nothing here\n",
            "daemon:\n",
            "daemon: null\n",
            "daemon: {}\n",
        ] {
            let config = parse(text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
            assert_eq!(config.daemon, DaemonSection::default(), "{text:?}");
            assert_eq!(config.path.as_deref(), Some(Path::new("conf/rsigma.yaml")));
        }
    }

    #[test]
    fn full_schema_parses() {
        let text = r#"
daemon:
  rules: /etc/rsigma/rules
  pipelines: [ecs_windows]
  input: stdin
  input_format: auto
  syslog_tz: "+00:00"
  jq: null
  jsonpath: null
  outputs: [stdout]
  dlq: null
  include_event: false
  pretty: false
  buffer_size: 10000
  batch_size: 1
  drain_timeout: 5
  api:
    addr: 0.0.0.0:9090
  tls: {cert: null, key: null, client_ca: null, min_version: "1.3", allow_plaintext: false}
  tap: {enabled: false, max_duration: 5m, max_sessions: 4, buffer_size: 1024}
  state: {db: null, save_interval: 30, clear: false, keep: false}
  correlation: {suppress: null, action: alert, no_detections: false, event_mode: none, max_events: 10, timestamp_fields: [], timestamp_fallback: wallclock}
"#;
        let d = parse(text).unwrap().daemon;
        assert_eq!(d.rules.as_deref(), Some(Path::new("/etc/rsigma/rules")));
        assert_eq!(d.pipelines, ["ecs_windows"]);
        assert_eq!(d.input.as_deref(), Some("stdin"));
        assert_eq!(d.input_format.as_deref(), Some("auto"));
        assert_eq!(d.syslog_tz.as_deref(), Some("+00:00"));
        assert_eq!(d.jq, None);
        assert_eq!(d.jsonpath, None);
        assert_eq!(d.outputs, ["stdout"]);
        assert_eq!(d.dlq, None);
        assert_eq!(d.include_event, Some(false));
        assert_eq!(d.pretty, Some(false));
        assert_eq!(d.buffer_size, Some(10_000));
        assert_eq!(d.batch_size, Some(1));
        assert_eq!(d.drain_timeout, Some(Duration::from_secs(5)));
        assert_eq!(d.api.addr.as_deref(), Some("0.0.0.0:9090"));
        assert_eq!(d.tls.cert, None);
        assert_eq!(d.tls.min_version, Some(TlsVersion::V1_3));
        assert_eq!(d.tls.allow_plaintext, Some(false));
        assert_eq!(d.tap.enabled, Some(false));
        assert_eq!(d.tap.max_duration, Some(Duration::from_secs(300)));
        assert_eq!(d.tap.max_sessions, Some(4));
        assert_eq!(d.tap.buffer_size, Some(1024));
        assert_eq!(d.state.db, None);
        assert_eq!(d.state.save_interval, Some(Duration::from_secs(30)));
        assert_eq!(d.state.clear, Some(false));
        assert_eq!(d.state.keep, Some(false));
        assert_eq!(d.correlation.suppress, None);
        assert_eq!(d.correlation.action, Some(ActionSetting::Alert));
        assert_eq!(d.correlation.no_detections, Some(false));
        assert_eq!(d.correlation.event_mode, Some(EventModeSetting::None));
        assert_eq!(d.correlation.max_events, Some(10));
        assert!(d.correlation.timestamp_fields.is_empty());
        assert_eq!(
            d.correlation.timestamp_fallback,
            Some(FallbackSetting::Wallclock)
        );
    }

    #[test]
    fn durations_accept_seconds_and_humantime() {
        let cases = [
            ("5", Duration::from_secs(5)),
            ("\"5\"", Duration::from_secs(5)),
            ("1.5", Duration::from_millis(1500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h 30m", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
        ];
        for (text, expected) in cases {
            let config = parse(&format!("daemon:\n  drain_timeout: {text}\n"))
                .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(config.daemon.drain_timeout, Some(expected), "{text}");
        }
        for text in ["-1", "soon", "5 parsecs", "[1]"] {
            let err = parse(&format!("daemon:\n  drain_timeout: {text}\n")).unwrap_err();
            assert!(err.contains("line 2"), "{text}: {err}");
        }
    }

    #[test]
    fn tls_version_accepts_strings_and_numbers() {
        for (text, expected) in [
            ("\"1.2\"", TlsVersion::V1_2),
            ("1.2", TlsVersion::V1_2),
            ("'1.3'", TlsVersion::V1_3),
            ("1.3", TlsVersion::V1_3),
        ] {
            let config = parse(&format!("daemon:\n  tls:\n    min_version: {text}\n")).unwrap();
            assert_eq!(config.daemon.tls.min_version, Some(expected), "{text}");
        }
        let err = parse("daemon:\n  tls:\n    min_version: \"1.1\"\n").unwrap_err();
        assert!(err.contains("1.1"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_with_file_and_line() {
        let err = parse("daemon:\n  api:\n    adr: 127.0.0.1:1\n").unwrap_err();
        assert!(err.contains("'conf/rsigma.yaml'"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("adr"), "{err}");

        let err = parse("deamon:\n  rules: x\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(err.contains("deamon"), "{err}");

        let err = parse("daemon:\n  rules: x\n  tap:\n    enabeld: true\n").unwrap_err();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_yaml_are_errors() {
        for text in [
            "daemon:\n  buffer_size: lots\n",
            "daemon:\n  pipelines: 3\n",
            "daemon:\n  correlation:\n    action: explode\n",
            "daemon: [1, 2]\n",
            "daemon:\n  rules: [unterminated\n",
            "- a list\n",
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains("invalid config file 'conf/rsigma.yaml'"),
                "{err}"
            );
            assert!(err.contains("line "), "{text:?}: {err}");
        }
    }

    #[test]
    fn relative_paths_are_resolved_against_the_file() {
        let text = "daemon:\n  rules: rules\n  tls: {cert: /abs/cert.pem, key: key.pem}\n  state: {db: state/db.sqlite}\n  pipelines: [p.yml]\n";
        let d = parse(text).unwrap().daemon;
        assert_eq!(d.rules.as_deref(), Some(Path::new("conf/rules")));
        assert_eq!(d.tls.cert.as_deref(), Some(Path::new("/abs/cert.pem")));
        assert_eq!(d.tls.key.as_deref(), Some(Path::new("conf/key.pem")));
        assert_eq!(
            d.state.db.as_deref(),
            Some(Path::new("conf/state/db.sqlite"))
        );
        let nats_text = "daemon:\n  nats: {creds: nats.creds, tls_cert: c.pem, tls_key: /k.pem, tls_ca: ca.pem, consumer_group: g, ack_wait: 5s}\n";
        let nats = parse(nats_text).unwrap().daemon.nats;
        assert_eq!(nats.creds.as_deref(), Some(Path::new("conf/nats.creds")));
        assert_eq!(nats.tls_cert.as_deref(), Some(Path::new("conf/c.pem")));
        assert_eq!(nats.tls_key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(nats.tls_ca.as_deref(), Some(Path::new("conf/ca.pem")));
        assert_eq!(nats.ack_wait, Some(Duration::from_secs(5)));
        // Inline secrets are not config-file settings.
        let err = parse("daemon:\n  nats: {token: s3cret}\n").unwrap_err();
        assert!(err.contains("unknown field `token`"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        // Pipelines may be names, so they are left alone.
        assert_eq!(d.pipelines, ["p.yml"]);

        let local = ConfigFile::parse(text, Path::new(LOCAL_FILE)).unwrap();
        assert_eq!(local.daemon.rules.as_deref(), Some(Path::new("./rules")));
    }

    #[test]
    fn discovery_chain_order() {
        let home = Some(OsString::from("/home/u"));
        assert_eq!(
            discovery_candidates(Some("/xdg".into()), home.clone()),
            [
                PathBuf::from("./rsigma.yaml"),
                PathBuf::from("/xdg/rsigma/config.yaml"),
                PathBuf::from("/etc/rsigma/config.yaml"),
            ]
        );
        for xdg in [
            None,
            Some(OsString::new()),
            Some(OsString::from("relative/dir")),
        ] {
            assert_eq!(
                discovery_candidates(xdg.clone(), home.clone())[1],
                PathBuf::from("/home/u/.config/rsigma/config.yaml"),
                "{xdg:?}"
            );
        }
        assert_eq!(
            discovery_candidates(None, None),
            [
                PathBuf::from("./rsigma.yaml"),
                PathBuf::from("/etc/rsigma/config.yaml"),
            ]
        );
    }

    #[test]
    fn missing_explicit_file_is_a_config_error() {
        let err = ConfigFile::load(Some(Path::new("/nonexistent/rsigma.yaml"))).unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config);
        assert!(
            err.to_string().contains("'/nonexistent/rsigma.yaml'"),
            "{err}"
        );
    }

    #[test]
    fn correlation_settings_convert_to_engine_options() {
        assert_eq!(FireAction::from(ActionSetting::Reset), FireAction::Reset);
        assert_eq!(EventMode::from(EventModeSetting::Refs), EventMode::Refs);
        assert_eq!(
            TimestampFallback::from(FallbackSetting::Skip),
            TimestampFallback::Skip
        );
    }
}

//! Source declaration files (`--source FILE_OR_DIR`): the schema.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::enrich::config::ExtractType;

/// Default of `timeout`.
pub(crate) const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest `timeout`.
pub(crate) const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// Default of `max_bytes`.
pub(crate) const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Largest `max_bytes`.
pub(crate) const MAX_BYTES: usize = 256 * 1024 * 1024;
/// Shortest refresh interval.
pub(crate) const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// One declaration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
}

/// Where a source's data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SourceType {
    File,
    Http,
    Command,
    /// A key of a JetStream key-value bucket.
    Nats,
}

/// How the fetched bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    #[default]
    Json,
    Yaml,
    /// One string per non-empty line; `#` starts a comment line.
    Lines,
    /// A header row, then one object per row.
    Csv,
}

/// What a failed fetch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnError {
    /// At startup: exit 3. On refresh: the reload fails (readiness off) and
    /// the previous value stays.
    #[default]
    Fail,
    /// Keep the previous value (a warning and a metric); at startup there is
    /// none, so it fails.
    KeepLast,
    /// Use an empty list.
    Empty,
}

/// One source as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub source_type: SourceType,
    #[serde(default)]
    pub format: Format,
    pub extract: Option<String>,
    pub extract_type: Option<ExtractType>,
    /// `never`, `on_reload`, `watch` or an interval (`5m`).
    pub refresh: Option<String>,
    #[serde(default)]
    pub on_error: OnError,
    pub timeout: Option<String>,
    pub max_bytes: Option<usize>,
    // file
    pub path: Option<std::path::PathBuf>,
    // http
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub allow_link_local: Option<bool>,
    // command
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    // nats (and `url`)
    pub bucket: Option<String>,
    pub key: Option<String>,
}

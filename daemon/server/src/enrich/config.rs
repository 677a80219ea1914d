//! The enrichers file (`--enrichers PATH`): its schema, and the checks that
//! turn it into [`super::Enricher`]s or an error naming the enricher and the
//! key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// Default of `max_concurrent_enrichments`.
pub(crate) const DEFAULT_CONCURRENCY: usize = 16;
/// Bounds of `max_concurrent_enrichments`.
pub(crate) const MAX_CONCURRENCY: usize = 4096;
/// Default of `timeout`.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `timeout`.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `cache_ttl`.
pub(crate) const MAX_CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default of `max_response_bytes` (http) and `max_output_bytes` (command).
pub(crate) const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Largest `max_response_bytes` / `max_output_bytes`.
pub(crate) const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    #[serde(default = "default_concurrency")]
    pub max_concurrent_enrichments: usize,
    #[serde(default)]
    pub enrichers: Vec<EnricherSpec>,
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

/// Which records an enricher sees, and the namespace of its templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// Detection records.
    Detection,
    /// Correlation records.
    Correlation,
}

impl Kind {
    /// `detection` or `correlation`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Detection => "detection",
            Kind::Correlation => "correlation",
        }
    }
}

/// The enricher's primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Primitive {
    Template,
    Lookup,
    Http,
    Command,
}

impl Primitive {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Primitive::Template => "template",
            Primitive::Lookup => "lookup",
            Primitive::Http => "http",
            Primitive::Command => "command",
        }
    }
}

/// What a failed enrichment does to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnError {
    /// The record goes out without this enrichment.
    #[default]
    Skip,
    /// The record goes out with `enrichments.<field>: null`.
    Null,
    /// The record is not delivered (for enrichers that filter on purpose).
    Drop,
}

/// `extract_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ExtractType {
    #[default]
    Jq,
    JsonPath,
}

/// `output` of a command enricher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OutputKind {
    /// Standard output parsed as JSON.
    #[default]
    Json,
    /// Standard output as a string (one trailing newline removed).
    Raw,
}

/// `scope`: axes are AND-ed, values in an axis OR-ed; an empty axis does
/// not filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScopeSpec {
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub levels: Vec<String>,
}

/// One enricher as written. Keys of every primitive are accepted by the
/// parser; [`EnricherSpec::check_keys`] refuses those of another primitive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnricherSpec {
    pub id: String,
    pub kind: Kind,
    #[serde(rename = "type")]
    pub primitive: Primitive,
    pub inject_field: String,
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub scope: ScopeSpec,
    // template
    pub template: Option<String>,
    // lookup
    pub source: Option<String>,
    pub default: Option<Value>,
    // lookup and http
    pub extract: Option<String>,
    pub extract_type: Option<ExtractType>,
    // http
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub cache_ttl: Option<String>,
    pub max_response_bytes: Option<usize>,
    pub allow_link_local: Option<bool>,
    // command
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub output: Option<OutputKind>,
    pub max_output_bytes: Option<usize>,
}

impl EnricherSpec {
    /// Refuses keys that belong to another primitive than the enricher's.
    pub(crate) fn check_keys(&self) -> Result<(), String> {
        let keys: [(&str, bool, &[Primitive]); 16] = [
            ("template", self.template.is_some(), &[Primitive::Template]),
            ("source", self.source.is_some(), &[Primitive::Lookup]),
            ("default", self.default.is_some(), &[Primitive::Lookup]),
            (
                "extract",
                self.extract.is_some(),
                &[Primitive::Lookup, Primitive::Http],
            ),
            (
                "extract_type",
                self.extract_type.is_some(),
                &[Primitive::Lookup, Primitive::Http],
            ),
            ("url", self.url.is_some(), &[Primitive::Http]),
            ("method", self.method.is_some(), &[Primitive::Http]),
            ("headers", self.headers.is_some(), &[Primitive::Http]),
            ("body", self.body.is_some(), &[Primitive::Http]),
            ("cache_ttl", self.cache_ttl.is_some(), &[Primitive::Http]),
            (
                "max_response_bytes",
                self.max_response_bytes.is_some(),
                &[Primitive::Http],
            ),
            (
                "allow_link_local",
                self.allow_link_local.is_some(),
                &[Primitive::Http],
            ),
            ("command", self.command.is_some(), &[Primitive::Command]),
            ("env", self.env.is_some(), &[Primitive::Command]),
            ("output", self.output.is_some(), &[Primitive::Command]),
            (
                "max_output_bytes",
                self.max_output_bytes.is_some(),
                &[Primitive::Command],
            ),
        ];
        check_key_owners(&keys, self.primitive, Primitive::as_str)
    }
}

/// Refuses a key that is present but belongs to other types than `this`:
/// `keys` lists each key, whether it is present and the types that own it.
pub(crate) fn check_key_owners<T: Copy + PartialEq>(
    keys: &[(&str, bool, &[T])],
    this: T,
    name: fn(T) -> &'static str,
) -> Result<(), String> {
    for (key, present, owners) in keys {
        if *present && !owners.contains(&this) {
            let owners: Vec<&str> = owners.iter().map(|t| name(*t)).collect();
            return Err(format!(
                "`{key}` is a key of type {}, not of type {}",
                owners.join(" and "),
                name(this)
            ));
        }
    }
    Ok(())
}

/// Parses a humantime duration key within `max`.
pub(crate) fn duration(
    key: &str,
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|err| format!("`{key}: {text}`: {err}"))?;
    if value < min || value > max {
        return Err(format!(
            "`{key}: {text}` is out of range ({} to {})",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(value)
}

/// A `timeout` key: at least 1 ms and at most `max`; `default` when absent.
pub(crate) fn timeout(
    text: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration, String> {
    text.map_or(Ok(default), |text| {
        duration("timeout", text, Duration::from_millis(1), max)
    })
}

/// A byte limit key within 1..=[`MAX_BYTES`].
pub(crate) fn byte_limit(key: &str, value: Option<usize>) -> Result<usize, String> {
    match value {
        None => Ok(DEFAULT_MAX_BYTES),
        Some(n) if (1..=MAX_BYTES).contains(&n) => Ok(n),
        Some(n) => Err(format!("`{key}: {n}` is out of range (1 to {MAX_BYTES})")),
    }
}

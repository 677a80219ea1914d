//! Flag groups shared by several subcommands (`engine eval`, `engine daemon`,
//! `rule validate`), each converted into the engine's option types.

use std::time::Duration;

use clap::{Args, ValueEnum};
use rsigma_engine::correlation::{CorrelationOptions, EventMode, FireAction, TimestampFallback};
use rsigma_engine::{CompileOptions, PrefilterOptions, Routing, UndefinedPlaceholders};

use crate::config::{CorrelationSection, EngineSection};

/// `--action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// Keep the window: the next matching event alerts again.
    Alert,
    /// Clear the window after an alert.
    Reset,
}

/// `--correlation-event-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventModeArg {
    /// Matches carry no events.
    None,
    /// Matches carry the full events (kept compressed in memory).
    Full,
    /// Matches carry each event's time and id.
    Refs,
}

/// `--timestamp-fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FallbackArg {
    /// Use the wall clock.
    Wallclock,
    /// Leave the event out of correlation state.
    Skip,
}

/// Correlation behaviour flags. Unset flags fall back to the config file
/// (for the daemon), then to the defaults named in the help.
#[derive(Debug, Clone, Args)]
pub struct CorrelationArgs {
    /// Suppress repeated alerts of a correlation for the same group within this window (e.g. 30s, 5m, 1h). [default: none]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub suppress: Option<Duration>,

    /// What a correlation does after it fires. [default: alert]
    #[arg(long, value_enum)]
    pub action: Option<ActionArg>,

    /// Do not output detections of rules that only feed correlations (unless the correlation sets `generate: true`).
    #[arg(long)]
    pub no_detections: bool,

    /// Which events a correlation match carries. [default: none]
    #[arg(long, value_enum)]
    pub correlation_event_mode: Option<EventModeArg>,

    /// At most this many events kept per correlation window (the newest). [default: 10]
    #[arg(long, value_name = "N")]
    pub max_correlation_events: Option<usize>,

    /// At most this many correlation groups in memory; the stalest are evicted. [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_correlation_state: Option<usize>,

    /// A field holding the event time, tried before the defaults (@timestamp, timestamp, EventTime, TimeCreated, UtcTime, event.created, time). Repeatable.
    #[arg(long, value_name = "FIELD")]
    pub timestamp_field: Vec<String>,

    /// What to do with events that have no readable timestamp. [default: wallclock]
    #[arg(long, value_enum)]
    pub timestamp_fallback: Option<FallbackArg>,
}

/// Parses a humantime duration (`30s`, `5m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("invalid duration '{text}': {err}"))
}

impl CorrelationArgs {
    /// The engine options: flags first, then the config file's
    /// `daemon.correlation` section, then the defaults.
    pub fn options(&self, file: &CorrelationSection) -> CorrelationOptions {
        let defaults = CorrelationOptions::default();
        let mut timestamp_fields = self.timestamp_field.clone();
        timestamp_fields.extend(file.timestamp_fields.iter().cloned());
        CorrelationOptions {
            suppress: self.suppress.or(file.suppress),
            action: match self.action {
                Some(ActionArg::Alert) => FireAction::Alert,
                Some(ActionArg::Reset) => FireAction::Reset,
                None => file.action.map_or(defaults.action, Into::into),
            },
            event_mode: match self.correlation_event_mode {
                Some(EventModeArg::None) => EventMode::None,
                Some(EventModeArg::Full) => EventMode::Full,
                Some(EventModeArg::Refs) => EventMode::Refs,
                None => file.event_mode.map_or(defaults.event_mode, Into::into),
            },
            max_events: self
                .max_correlation_events
                .or(file.max_events)
                .unwrap_or(defaults.max_events),
            timestamp_fields,
            timestamp_fallback: match self.timestamp_fallback {
                Some(FallbackArg::Wallclock) => TimestampFallback::Wallclock,
                Some(FallbackArg::Skip) => TimestampFallback::Skip,
                None => file
                    .timestamp_fallback
                    .map_or(defaults.timestamp_fallback, Into::into),
            },
            max_state_entries: self
                .max_correlation_state
                .unwrap_or(defaults.max_state_entries),
        }
    }

    /// `--no-detections`, from the flag or the config file.
    pub fn no_detections(&self, file: &CorrelationSection) -> bool {
        self.no_detections || file.no_detections.unwrap_or(false)
    }
}

/// Smallest `--bloom-max-bytes`.
const BLOOM_MIN_BYTES: u64 = 64;

/// Largest `--bloom-max-bytes`: 1 GiB.
const BLOOM_MAX_BYTES_LIMIT: u64 = 1 << 30;

/// Logsource routing, prefilter strategy and placeholder handling: how the
/// rules are compiled and which rules see which event. Unset flags fall back
/// to the config file (for the daemon), then to the defaults named in the help.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Evaluate every rule on every event, whatever its logsource (routing is on by default).
    #[arg(long)]
    pub no_logsource_routing: bool,

    /// Read logsource dimensions from event fields, e.g. `product=os,service=svc,category=cat`. [default: none]
    #[arg(long, value_name = "DIM=FIELD,...", value_parser = parse_pairs)]
    pub logsource_field_map: Option<Pairs>,

    /// The logsource of every event of a single-source stream, e.g. `product=windows,service=sysmon`. [default: none]
    #[arg(long, value_name = "DIM=VALUE,...", value_parser = parse_pairs)]
    pub event_logsource: Option<Pairs>,

    /// Gate each field's literal scan with a Bloom filter over its literals.
    #[arg(long)]
    pub bloom_prefilter: bool,

    /// Memory budget of the Bloom filters of each prefilter index, in bytes (64 to 1073741824). [default: 1048576]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(BLOOM_MIN_BYTES..=BLOOM_MAX_BYTES_LIMIT))]
    pub bloom_max_bytes: Option<u64>,

    /// One Aho-Corasick automaton across every field's literals instead of one per field.
    #[arg(long)]
    pub cross_rule_ac: bool,

    /// Load rules whose `expand` placeholders no pipeline defines; such placeholders match nothing.
    #[arg(long)]
    pub allow_undefined_placeholders: bool,
}

/// The default of `--bloom-max-bytes`: 1 MiB.
pub const BLOOM_MAX_BYTES_DEFAULT: u64 = 1 << 20;

impl EngineArgs {
    /// The engine options: flags first, then the config file's `daemon`
    /// engine keys, then the defaults.
    pub fn options(&self, file: &EngineSection) -> Result<CompileOptions, String> {
        let routing = &file.logsource;
        let map = |pairs: &std::collections::BTreeMap<String, String>| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(d, v)| (d.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        let bloom = self.bloom_prefilter || file.bloom_prefilter.unwrap_or(false);
        let bloom_bytes = self
            .bloom_max_bytes
            .or(file.bloom_max_bytes)
            .unwrap_or(BLOOM_MAX_BYTES_DEFAULT);
        let allow =
            self.allow_undefined_placeholders || file.allow_undefined_placeholders.unwrap_or(false);
        if let Some(bytes) = file.bloom_max_bytes
            && !(BLOOM_MIN_BYTES..=BLOOM_MAX_BYTES_LIMIT).contains(&bytes)
        {
            return Err(format!(
                "daemon.engine.bloom_max_bytes must be between {BLOOM_MIN_BYTES} and {BLOOM_MAX_BYTES_LIMIT}, not {bytes}"
            ));
        }
        Ok(CompileOptions {
            placeholders: Default::default(),
            undefined_placeholders: undefined_placeholders(allow),
            routing: Routing {
                enabled: !self.no_logsource_routing && routing.routing.unwrap_or(true),
                field_map: self
                    .logsource_field_map
                    .clone()
                    .map_or_else(|| map(&routing.field_map), |p| p.0),
                event_logsource: self
                    .event_logsource
                    .clone()
                    .map_or_else(|| map(&routing.event), |p| p.0),
                derive: routing.derive.unwrap_or(true),
            },
            prefilter: PrefilterOptions {
                cross_rule_automaton: self.cross_rule_ac || file.cross_rule_ac.unwrap_or(false),
                bloom_max_bytes: bloom.then_some(bloom_bytes as usize),
            },
            reference: false,
        })
    }
}

/// What `--allow-undefined-placeholders` (or its absence) means.
pub fn undefined_placeholders(allow: bool) -> UndefinedPlaceholders {
    if allow {
        UndefinedPlaceholders::MatchNothing
    } else {
        UndefinedPlaceholders::Reject
    }
}

/// `DIM=VALUE,...` pairs of a logsource flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairs(pub Vec<(String, String)>);

/// Parses `dim=value,dim=value`.
fn parse_pairs(text: &str) -> Result<Pairs, String> {
    Routing::parse_pairs(text)
        .map(Pairs)
        .map_err(|err| err.to_string())
}

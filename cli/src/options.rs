//! Flag groups shared by several subcommands (`engine eval` and, later,
//! `engine daemon`), each converted into the engine's option types.

use std::time::Duration;

use clap::{Args, ValueEnum};
use rsigma_engine::correlation::{CorrelationOptions, EventMode, FireAction, TimestampFallback};

use crate::config::CorrelationSection;

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

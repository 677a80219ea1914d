//! Flag groups shared by several subcommands (`engine eval` and, later,
//! `engine daemon`), each converted into the engine's option types.

use std::time::Duration;

use clap::{Args, ValueEnum};
use rsigma_engine::correlation::{CorrelationOptions, EventMode, FireAction, TimestampFallback};

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

/// Correlation behaviour flags.
#[derive(Debug, Clone, Args)]
pub struct CorrelationArgs {
    /// Suppress repeated alerts of a correlation for the same group within this window (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub suppress: Option<Duration>,

    /// What a correlation does after it fires.
    #[arg(long, value_enum, default_value = "alert")]
    pub action: ActionArg,

    /// Do not output detections of rules that only feed correlations (unless the correlation sets `generate: true`).
    #[arg(long)]
    pub no_detections: bool,

    /// Which events a correlation match carries.
    #[arg(long, value_enum, default_value = "none")]
    pub correlation_event_mode: EventModeArg,

    /// At most this many events kept per correlation window (the newest).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_correlation_events: usize,

    /// At most this many correlation groups in memory; the stalest are evicted.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_correlation_state: usize,

    /// A field holding the event time, tried before the defaults (@timestamp, timestamp, EventTime, TimeCreated, UtcTime, event.created, time). Repeatable.
    #[arg(long, value_name = "FIELD")]
    pub timestamp_field: Vec<String>,

    /// What to do with events that have no readable timestamp.
    #[arg(long, value_enum, default_value = "wallclock")]
    pub timestamp_fallback: FallbackArg,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("invalid duration '{text}': {err}"))
}

impl CorrelationArgs {
    /// The engine options these flags describe.
    pub fn options(&self) -> CorrelationOptions {
        CorrelationOptions {
            suppress: self.suppress,
            action: match self.action {
                ActionArg::Alert => FireAction::Alert,
                ActionArg::Reset => FireAction::Reset,
            },
            event_mode: match self.correlation_event_mode {
                EventModeArg::None => EventMode::None,
                EventModeArg::Full => EventMode::Full,
                EventModeArg::Refs => EventMode::Refs,
            },
            max_events: self.max_correlation_events,
            timestamp_fields: self.timestamp_field.clone(),
            timestamp_fallback: match self.timestamp_fallback {
                FallbackArg::Wallclock => TimestampFallback::Wallclock,
                FallbackArg::Skip => TimestampFallback::Skip,
            },
            max_state_entries: self.max_correlation_state,
        }
    }
}

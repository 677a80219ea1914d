//! Correlation rules: aggregations of detections over time windows, per group.
//!
//! A [`CorrelationEngine`] is fed, for every event, the detections the
//! [`Engine`](crate::Engine) produced for it. Each detection of a rule that a
//! correlation references updates that correlation's window for the event's
//! group (the values of the `group-by` fields); when the condition holds, a
//! [`CorrelationMatch`] is emitted. A correlation may reference correlations:
//! their matches feed it like detections do (cycles are rejected).
//!
//! Event time comes from the event's timestamp field (see
//! [`DEFAULT_TIMESTAMP_FIELDS`]), so replays of old logs correlate as they
//! happened. State is bounded: at most `max_state_entries` groups across all
//! correlations, the stalest evicted first and counted.

pub mod window;

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::RuleError;
use crate::eval::{Detection, Engine};
use crate::event::FieldPath;
use crate::rule::{CompareOp, CorrelationCondition, CorrelationRule, CorrelationType};
use crate::state::{CorrelationSnapshot, GroupSnapshot, StateSnapshot, restore_filter};
use crate::timestamp::parse_timestamp;
use window::Window;

/// Fields searched for the event time, in order, after any `--timestamp-field`.
pub const DEFAULT_TIMESTAMP_FIELDS: &[&str] = &[
    "@timestamp",
    "timestamp",
    "EventTime",
    "TimeCreated",
    "UtcTime",
    "event.created",
    "time",
];

/// What happens to a group's window after its correlation fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FireAction {
    /// Keep the window: the next matching event alerts again.
    #[default]
    Alert,
    /// Clear the window: the condition must be met anew.
    Reset,
}

/// Which events a correlation match carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventMode {
    /// None.
    #[default]
    None,
    /// The full events (kept deflate-compressed in memory).
    Full,
    /// A reference per event: its time and its id field, if any.
    Refs,
}

/// What to do with an event that has no readable timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampFallback {
    /// Use the wall clock.
    #[default]
    Wallclock,
    /// Leave the event out of correlation state.
    Skip,
}

/// Options shared by `engine eval` and the daemon.
#[derive(Debug, Clone)]
pub struct CorrelationOptions {
    /// Suppress further matches of the same correlation and group for this long (event time).
    pub suppress: Option<Duration>,
    /// What firing does to the window.
    pub action: FireAction,
    /// Which events matches carry.
    pub event_mode: EventMode,
    /// At most this many events are kept per group (the newest).
    pub max_events: usize,
    /// Timestamp fields tried first, before [`DEFAULT_TIMESTAMP_FIELDS`].
    pub timestamp_fields: Vec<String>,
    /// What to do without a timestamp.
    pub timestamp_fallback: TimestampFallback,
    /// At most this many groups across all correlations.
    pub max_state_entries: usize,
}

impl Default for CorrelationOptions {
    fn default() -> Self {
        CorrelationOptions {
            suppress: None,
            action: FireAction::Alert,
            event_mode: EventMode::None,
            max_events: 10,
            timestamp_fields: Vec::new(),
            timestamp_fallback: TimestampFallback::Wallclock,
            max_state_entries: 100_000,
        }
    }
}

/// A reference to an event kept by a correlation in `refs` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRef {
    /// The event time (RFC 3339).
    pub timestamp: String,
    /// The event's id (`id`, `_id`, `event.id`, `EventRecordID`), if it has one.
    pub id: Option<Value>,
}

/// A correlation that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorrelationMatch {
    /// The correlation rule's title.
    pub rule_title: String,
    /// Its id.
    pub rule_id: Option<String>,
    /// Its level.
    pub level: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// `event_count`, `value_count`, ...
    pub correlation_type: &'static str,
    /// The group: `[field, value]` pairs in `group-by` order.
    pub group_key: Vec<(String, Value)>,
    /// The count, distinct count, sum, ... that met the condition.
    pub aggregated_value: f64,
    /// The window length.
    pub timespan_secs: u64,
    /// The events (with `--correlation-event-mode full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Value>>,
    /// Event references (with `--correlation-event-mode refs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_refs: Option<Vec<EventRef>>,
}

/// Counters of the correlation engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CorrelationStats {
    /// Groups currently held.
    pub state_entries: usize,
    /// Groups evicted to respect `max_state_entries`.
    pub evicted: u64,
    /// Events older than their group's window, ignored.
    pub late_events: u64,
    /// Events without a timestamp left out (`--timestamp-fallback skip`).
    pub skipped_no_timestamp: u64,
    /// Matches suppressed by `--suppress`.
    pub suppressed: u64,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreStats {
    /// Groups restored.
    pub groups: usize,
    /// Stored correlations skipped: gone from the rules, or changed.
    pub skipped_correlations: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A detection rule, by its index in the engine.
    Rule(usize),
    /// Another correlation, by index.
    Correlation(usize),
}

#[derive(Debug)]
struct Compiled {
    title: String,
    id: Option<String>,
    level: Option<String>,
    tags: Vec<String>,
    /// Stable key for persisted state: id, else name, else title.
    key: String,
    fingerprint: String,
    kind: CorrelationType,
    span_ms: i64,
    timespan_secs: u64,
    sources: Vec<Source>,
    /// Per group-by field: its output name and, per source, where to read it.
    group_by: Vec<(String, Vec<FieldPath>)>,
    /// Per source, where the aggregated field is read (value_* types).
    value_field: Option<Vec<FieldPath>>,
    condition: CorrelationCondition,
    generate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEvent {
    time: i64,
    /// Deflate-compressed JSON, Base64 in snapshots (full mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    /// The event's id (refs mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupState {
    key: Vec<(String, Value)>,
    window: Window,
    /// The newest event time seen: the window's anchor.
    newest: i64,
    suppressed_until: Option<i64>,
    events: VecDeque<StoredEvent>,
    #[serde(skip)]
    last_touch: u64,
}

/// Evaluates correlation rules over a stream of detections.
#[derive(Debug)]
pub struct CorrelationEngine {
    rules: Vec<Compiled>,
    /// Per engine rule index: the (correlation, source position) pairs it feeds.
    by_rule: Vec<Vec<(usize, usize)>>,
    /// Per correlation: the (correlation, source position) pairs its matches feed.
    by_correlation: Vec<Vec<(usize, usize)>>,
    states: Vec<HashMap<String, GroupState>>,
    timestamp_fields: Vec<FieldPath>,
    options: CorrelationOptions,
    stats: CorrelationStats,
    touch: u64,
}

const ID_FIELDS: &[&str] = &["id", "_id", "event.id", "EventRecordID"];

fn type_name(kind: CorrelationType) -> &'static str {
    match kind {
        CorrelationType::EventCount => "event_count",
        CorrelationType::ValueCount => "value_count",
        CorrelationType::Temporal => "temporal",
        CorrelationType::TemporalOrdered => "temporal_ordered",
        CorrelationType::ValueSum => "value_sum",
        CorrelationType::ValueAvg => "value_avg",
        CorrelationType::ValuePercentile => "value_percentile",
        CorrelationType::ValueMedian => "value_median",
    }
}

fn fingerprint(rule: &CorrelationRule) -> String {
    let description = format!(
        "{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        rule.correlation_type,
        rule.timespan_secs,
        rule.rules,
        rule.group_by,
        rule.condition,
        rule.aliases
    );
    let digest = Sha256::digest(description.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl CorrelationEngine {
    /// Resolves the correlations' references against the engine's rules and
    /// each other. Unknown references, alias gaps and cycles are errors.
    pub fn new(
        correlations: &[CorrelationRule],
        engine: &Engine,
        options: CorrelationOptions,
    ) -> Result<CorrelationEngine, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(correlations.len());
        let rule_infos: Vec<_> = engine.rules().collect();
        for rule in correlations {
            let fail =
                |reason: String| RuleError::new(&rule.meta.origin.file, rule.meta.label(), reason);
            let mut sources = Vec::with_capacity(rule.rules.len());
            for reference in &rule.rules {
                if let Some(info) = rule_infos.iter().find(|i| i.is_referenced_by(reference)) {
                    sources.push(Source::Rule(info.index));
                } else if let Some(i) = correlations
                    .iter()
                    .position(|c| c.meta.is_referenced_by(reference))
                {
                    sources.push(Source::Correlation(i));
                } else {
                    errors.push(fail(format!("references unknown rule '{reference}'")));
                }
            }
            let field_per_source = |name: &str| -> Result<Vec<FieldPath>, String> {
                match rule.aliases.iter().find(|(alias, _)| alias == name) {
                    None => Ok(vec![FieldPath::new(name); rule.rules.len()]),
                    Some((_, mapping)) => rule
                        .rules
                        .iter()
                        .map(|reference| {
                            mapping
                                .iter()
                                .find(|(r, _)| r == reference)
                                .map(|(_, field)| FieldPath::new(field))
                                .ok_or_else(|| {
                                    format!("alias '{name}' has no field for rule '{reference}'")
                                })
                        })
                        .collect(),
                }
            };
            let group_by = rule
                .group_by
                .iter()
                .map(|name| field_per_source(name).map(|paths| (name.clone(), paths)))
                .collect::<Result<Vec<_>, _>>();
            let value_field = rule
                .condition
                .field
                .as_deref()
                .map(field_per_source)
                .transpose();
            let (group_by, value_field) = match (group_by, value_field) {
                (Ok(g), Ok(v)) => (g, v),
                (Err(e), _) | (_, Err(e)) => {
                    errors.push(fail(e));
                    continue;
                }
            };
            let meta = &rule.meta;
            rules.push(Compiled {
                title: meta.title.clone(),
                id: meta.id.clone(),
                level: meta.level.clone(),
                tags: meta.tags.clone(),
                key: meta
                    .id
                    .clone()
                    .or_else(|| meta.name.clone())
                    .unwrap_or_else(|| meta.title.clone()),
                fingerprint: fingerprint(rule),
                kind: rule.correlation_type,
                span_ms: (rule.timespan_secs as i64).saturating_mul(1000),
                timespan_secs: rule.timespan_secs,
                sources,
                group_by,
                value_field,
                condition: rule.condition.clone(),
                generate: rule.generate,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Persisted state is keyed by these: make them unique.
        for i in 1..rules.len() {
            if rules[..i].iter().any(|r| r.key == rules[i].key) {
                rules[i].key = format!("{}#{i}", rules[i].key);
            }
        }
        if let Some(cycle) = find_cycle(&rules) {
            let rule = &correlations[cycle];
            return Err(vec![RuleError::new(
                &rule.meta.origin.file,
                rule.meta.label(),
                "correlation references form a cycle",
            )]);
        }
        let mut by_rule = vec![Vec::new(); engine.rule_count()];
        let mut by_correlation = vec![Vec::new(); rules.len()];
        for (c, rule) in rules.iter().enumerate() {
            for (position, source) in rule.sources.iter().enumerate() {
                match source {
                    Source::Rule(r) => by_rule[*r].push((c, position)),
                    Source::Correlation(inner) => by_correlation[*inner].push((c, position)),
                }
            }
        }
        let timestamp_fields = options
            .timestamp_fields
            .iter()
            .map(String::as_str)
            .chain(DEFAULT_TIMESTAMP_FIELDS.iter().copied())
            .map(FieldPath::new)
            .collect();
        Ok(CorrelationEngine {
            states: rules.iter().map(|_| HashMap::new()).collect(),
            rules,
            by_rule,
            by_correlation,
            timestamp_fields,
            options,
            stats: CorrelationStats::default(),
            touch: 0,
        })
    }

    /// Number of correlation rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Counters.
    pub fn stats(&self) -> CorrelationStats {
        CorrelationStats {
            state_entries: self.states.iter().map(HashMap::len).sum(),
            ..self.stats
        }
    }

    /// True when a detection rule only feeds correlations (referenced by at
    /// least one, none of which sets `generate: true`): `--no-detections`
    /// leaves its detections out.
    pub fn is_correlation_only(&self, rule_index: usize) -> bool {
        self.by_rule.get(rule_index).is_some_and(|feeds| {
            !feeds.is_empty() && feeds.iter().all(|(c, _)| !self.rules[*c].generate)
        })
    }

    /// Feeds an event's detections; appends the correlations that fire.
    pub fn process(
        &mut self,
        event: &Value,
        detections: &[Detection],
        out: &mut Vec<CorrelationMatch>,
    ) {
        let mut time = None;
        for detection in detections {
            let Some(feeds) = self.by_rule.get(detection.rule.index) else {
                continue;
            };
            if feeds.is_empty() {
                continue;
            }
            let t = *time.get_or_insert_with(|| self.event_time(event));
            let Some(t) = t else {
                self.stats.skipped_no_timestamp += 1;
                continue;
            };
            for (c, position) in feeds.clone() {
                self.update(c, position, event, t, out);
            }
        }
    }

    fn event_time(&self, event: &Value) -> Option<i64> {
        for path in &self.timestamp_fields {
            let mut found = None;
            let _ = path.for_each_value(event, &mut |v| {
                found = parse_timestamp(v);
                if found.is_some() {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            });
            if let Some(t) = found {
                return Some(t.timestamp_millis());
            }
        }
        match self.options.timestamp_fallback {
            TimestampFallback::Wallclock => Some(Utc::now().timestamp_millis()),
            TimestampFallback::Skip => None,
        }
    }

    fn update(
        &mut self,
        c: usize,
        position: usize,
        event: &Value,
        t: i64,
        out: &mut Vec<CorrelationMatch>,
    ) {
        let rule = &self.rules[c];
        let key: Vec<(String, Value)> = rule
            .group_by
            .iter()
            .map(|(name, paths)| (name.clone(), first_value(&paths[position], event)))
            .collect();
        let key_text = serde_json::to_string(&key).expect("JSON values serialize");
        self.touch += 1;
        let touch = self.touch;
        if !self.states[c].contains_key(&key_text) {
            self.make_room();
        }
        let rule = &self.rules[c];
        let state = self.states[c]
            .entry(key_text)
            .or_insert_with(|| GroupState {
                key: key.clone(),
                window: new_window(rule),
                newest: t,
                suppressed_until: None,
                events: VecDeque::new(),
                last_touch: touch,
            });
        state.last_touch = touch;
        if t < state.newest.saturating_sub(rule.span_ms) {
            self.stats.late_events += 1;
            return;
        }
        state.newest = state.newest.max(t);
        state.window.evict(state.newest, rule.span_ms);
        let oldest = state.newest.saturating_sub(rule.span_ms);
        while state.events.front().is_some_and(|e| e.time < oldest) {
            state.events.pop_front();
        }
        match rule.kind {
            CorrelationType::EventCount => state.window.add_event(t),
            CorrelationType::ValueCount => {
                let field = &rule.value_field.as_ref().expect("checked at parse")[position];
                match text_of(&first_value(field, event)) {
                    Some(value) => state.window.add_distinct(t, value),
                    None => return,
                }
            }
            CorrelationType::Temporal | CorrelationType::TemporalOrdered => {
                state.window.add_source(t, position)
            }
            _ => {
                let field = &rule.value_field.as_ref().expect("checked at parse")[position];
                match numeric(&first_value(field, event)) {
                    Some(value) => state.window.add_number(t, value),
                    None => return,
                }
            }
        }
        match self.options.event_mode {
            EventMode::None => {}
            mode => {
                state.events.push_back(store_event(event, t, mode));
                while state.events.len() > self.options.max_events {
                    state.events.pop_front();
                }
            }
        }
        let Some(value) = fires(rule, &state.window) else {
            return;
        };
        if state.suppressed_until.is_some_and(|until| t < until) {
            self.stats.suppressed += 1;
            return;
        }
        if let Some(suppress) = self.options.suppress {
            state.suppressed_until = Some(t.saturating_add(suppress.as_millis() as i64));
        }
        let (events, event_refs) = match self.options.event_mode {
            EventMode::None => (None, None),
            EventMode::Full => (
                Some(state.events.iter().filter_map(load_event).collect()),
                None,
            ),
            EventMode::Refs => (
                None,
                Some(
                    state
                        .events
                        .iter()
                        .map(|e| EventRef {
                            timestamp: DateTime::from_timestamp_millis(e.time)
                                .unwrap_or_default()
                                .to_rfc3339(),
                            id: e.id.clone(),
                        })
                        .collect(),
                ),
            ),
        };
        if self.options.action == FireAction::Reset {
            state.window.clear();
            state.events.clear();
        }
        out.push(CorrelationMatch {
            rule_title: rule.title.clone(),
            rule_id: rule.id.clone(),
            level: rule.level.clone(),
            tags: rule.tags.clone(),
            correlation_type: type_name(rule.kind),
            group_key: key.clone(),
            aggregated_value: value,
            timespan_secs: rule.timespan_secs,
            events,
            event_refs,
        });
        // A match feeds the correlations that reference this one: the group
        // key's fields stand in for the event.
        let chained = self.by_correlation[c].clone();
        if !chained.is_empty() {
            let synthetic = Value::Object(key.into_iter().collect::<Map<String, Value>>());
            for (outer, outer_position) in chained {
                self.update(outer, outer_position, &synthetic, t, out);
            }
        }
    }

    /// Evicts the stalest groups when the state is full: about 1% at a time,
    /// so the cost of finding them is spread over many insertions.
    fn make_room(&mut self) {
        let total: usize = self.states.iter().map(HashMap::len).sum();
        if total < self.options.max_state_entries {
            return;
        }
        let mut ages: Vec<(u64, usize, String)> = self
            .states
            .iter()
            .enumerate()
            .flat_map(|(c, groups)| {
                groups
                    .iter()
                    .map(move |(k, g)| (g.last_touch, c, k.clone()))
            })
            .collect();
        let excess = total + 1 - self.options.max_state_entries;
        let evict = excess.max(total / 100).max(1).min(ages.len());
        ages.select_nth_unstable_by_key(evict - 1, |(touch, _, _)| *touch);
        for (_, c, key) in ages.into_iter().take(evict) {
            self.states[c].remove(&key);
            self.stats.evicted += 1;
        }
    }

    /// The (key, fingerprint) of every loaded correlation, for restores.
    pub fn live_keys(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .map(|r| (r.key.clone(), r.fingerprint.clone()))
            .collect()
    }

    /// The whole correlation state, for the state store.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            saved_at_ms: Utc::now().timestamp_millis(),
            correlations: self
                .rules
                .iter()
                .zip(&self.states)
                .map(|(rule, groups)| CorrelationSnapshot {
                    correlation: rule.key.clone(),
                    fingerprint: rule.fingerprint.clone(),
                    groups: groups
                        .values()
                        .map(|g| GroupSnapshot {
                            group_key: serde_json::to_value(&g.key).expect("serializable"),
                            state: serde_json::to_value(g).expect("serializable"),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Restores groups of correlations that still exist unchanged (same key
    /// and fingerprint); everything else in the snapshot is skipped.
    pub fn restore(&mut self, snapshot: StateSnapshot) -> RestoreStats {
        let stored = snapshot.correlations.len();
        let kept = restore_filter(snapshot, &self.live_keys());
        let mut stats = RestoreStats {
            groups: 0,
            skipped_correlations: stored - kept.correlations.len(),
        };
        for stored in kept.correlations {
            let Some(c) = self.rules.iter().position(|r| r.key == stored.correlation) else {
                continue;
            };
            for group in stored.groups {
                let Ok(mut state) = serde_json::from_value::<GroupState>(group.state) else {
                    continue;
                };
                self.touch += 1;
                state.last_touch = self.touch;
                let key = serde_json::to_string(&state.key).expect("serializable");
                self.states[c].insert(key, state);
                stats.groups += 1;
            }
        }
        stats
    }

    /// Drops all state.
    pub fn clear(&mut self) {
        self.states.iter_mut().for_each(HashMap::clear);
    }
}

fn new_window(rule: &Compiled) -> Window {
    match rule.kind {
        CorrelationType::EventCount => Window::Count {
            times: VecDeque::new(),
        },
        CorrelationType::ValueCount => Window::Distinct {
            entries: VecDeque::new(),
            counts: HashMap::new(),
        },
        CorrelationType::Temporal | CorrelationType::TemporalOrdered => Window::Temporal {
            per_source: vec![VecDeque::new(); rule.sources.len()],
        },
        _ => Window::Numeric {
            entries: VecDeque::new(),
            sum: 0.0,
        },
    }
}

/// The aggregated value when the condition holds.
fn fires(rule: &Compiled, window: &Window) -> Option<f64> {
    let value = match rule.kind {
        CorrelationType::EventCount => window.count() as f64,
        CorrelationType::ValueCount => window.distinct() as f64,
        CorrelationType::Temporal => {
            let seen = window.sources_seen();
            if rule.condition.bounds.is_empty() {
                return (seen == rule.sources.len()).then_some(seen as f64);
            }
            seen as f64
        }
        CorrelationType::TemporalOrdered => {
            return window.in_order().then_some(rule.sources.len() as f64);
        }
        CorrelationType::ValueSum => window.sum(),
        CorrelationType::ValueAvg => window.mean()?,
        CorrelationType::ValueMedian => window.percentile(50.0)?,
        CorrelationType::ValuePercentile => {
            window.percentile(rule.condition.percentile.unwrap_or(50.0))?
        }
    };
    rule.condition
        .bounds
        .iter()
        .all(|(op, bound)| compare(*op, value, *bound))
        .then_some(value)
}

fn compare(op: CompareOp, value: f64, bound: f64) -> bool {
    match op {
        CompareOp::Gt => value > bound,
        CompareOp::Gte => value >= bound,
        CompareOp::Lt => value < bound,
        CompareOp::Lte => value <= bound,
        CompareOp::Eq => value == bound,
        CompareOp::Neq => value != bound,
    }
}

fn first_value(path: &FieldPath, event: &Value) -> Value {
    let mut found = Value::Null;
    let _ = path.for_each_value(event, &mut |v| {
        found = v.clone();
        std::ops::ControlFlow::Break(())
    });
    found
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn store_event(event: &Value, time: i64, mode: EventMode) -> StoredEvent {
    match mode {
        EventMode::Full => {
            let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
            let body = serde_json::to_writer(&mut encoder, event)
                .ok()
                .and_then(|()| encoder.finish().ok())
                .map(|bytes| BASE64.encode(bytes));
            StoredEvent {
                time,
                body,
                id: None,
            }
        }
        _ => StoredEvent {
            time,
            body: None,
            id: ID_FIELDS
                .iter()
                .map(|f| first_value(&FieldPath::new(f), event))
                .find(|v| !v.is_null()),
        },
    }
}

fn load_event(stored: &StoredEvent) -> Option<Value> {
    let bytes = BASE64.decode(stored.body.as_ref()?).ok()?;
    let mut json = Vec::new();
    DeflateDecoder::new(bytes.as_slice())
        .read_to_end(&mut json)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// Index of a correlation on a reference cycle, if any.
fn find_cycle(rules: &[Compiled]) -> Option<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(c: usize, rules: &[Compiled], marks: &mut [Mark]) -> bool {
        match marks[c] {
            Mark::Active => return true,
            Mark::Done => return false,
            Mark::New => {}
        }
        marks[c] = Mark::Active;
        for source in &rules[c].sources {
            if let Source::Correlation(inner) = source
                && visit(*inner, rules, marks)
            {
                return true;
            }
        }
        marks[c] = Mark::Done;
        false
    }
    let mut marks = vec![Mark::New; rules.len()];
    (0..rules.len()).find(|&c| visit(c, rules, &mut marks))
}

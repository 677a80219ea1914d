//! Logsource routing: which rules can apply to an event at all.
//!
//! A rule's `logsource` names up to three standard dimensions (`product`,
//! `service`, `category`) and any custom ones. An event's logsource is what
//! [`Routing`] can tell about it, per dimension: taken from an event field
//! (`field_map`), else a static value (`event_logsource`), else derived from a
//! well-known event shape ([`derive`]). A rule is skipped for an event only
//! when a dimension is known on both sides and the values differ
//! (case-insensitively); a dimension unknown on either side matches, so
//! routing only removes rules that cannot apply.
//!
//! An event dimension may hold several values: a Sysmon event 13 is both a
//! `registry_set` and a `registry_event`. A known dimension whose values no
//! rule uses still counts as known: it excludes every rule that names
//! another value.
//!
//! The engine turns an event's logsource into a [`RouteKey`] (the dimension
//! values mapped to the rule set's own vocabulary) and keeps one prefilter
//! index per distinct key, built on first use; see [`crate::Engine`].

pub mod derive;

use std::collections::HashMap;

use std::ops::ControlFlow;

use serde_json::Value;

use crate::event::FieldPath;
use crate::matcher::lowercase_into;
use crate::rule::LogSource;

/// The three standard dimensions, in the order of [`Vocabulary`] ids 0..3.
pub const STANDARD_DIMENSIONS: [&str; 3] = ["product", "service", "category"];

/// How the engine learns an event's logsource. The default derives it from
/// well-known event shapes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Routing on (the default) or off (every rule sees every event).
    pub enabled: bool,
    /// Dimension to event field, read first (`product=os,category=cat`).
    pub field_map: Vec<(String, String)>,
    /// Dimension to a fixed value, for single-source streams.
    pub event_logsource: Vec<(String, String)>,
    /// Derivation from well-known event shapes ([`derive`]).
    pub derive: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            enabled: true,
            field_map: Vec::new(),
            event_logsource: Vec::new(),
            derive: true,
        }
    }
}

/// Why a routing setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid logsource setting '{text}': {reason}")]
pub struct RoutingError {
    text: String,
    reason: &'static str,
}

impl Routing {
    /// Routing switched off.
    pub fn disabled() -> Routing {
        Routing {
            enabled: false,
            ..Routing::default()
        }
    }

    /// Parses `dim=value,dim=value` as used by `--logsource-field-map` and
    /// `--event-logsource`. Dimension names are lowercased; values are kept.
    pub fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, RoutingError> {
        let error = |reason| RoutingError {
            text: text.to_owned(),
            reason,
        };
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (dimension, value) = part
                .split_once('=')
                .ok_or_else(|| error("expected DIMENSION=VALUE pairs separated by commas"))?;
            let (dimension, value) = (dimension.trim().to_ascii_lowercase(), value.trim());
            if dimension.is_empty() || value.is_empty() {
                return Err(error("a dimension and its value must not be empty"));
            }
            if pairs.iter().any(|(d, _)| *d == dimension) {
                return Err(error("a dimension is named twice"));
            }
            pairs.push((dimension, value.to_owned()));
        }
        if pairs.is_empty() {
            return Err(error("no DIMENSION=VALUE pair given"));
        }
        Ok(pairs)
    }
}

/// The dimension values the rules of one engine use, as small ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vocabulary {
    /// Dimension names; the three standard ones first.
    dimensions: Vec<String>,
    /// Per dimension: lowercased value to id.
    values: Vec<HashMap<String, u16>>,
}

/// A rule's logsource in vocabulary ids: per dimension, the value it names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RuleRoute {
    values: Vec<Option<u16>>,
}

/// The key of an event's route: per dimension, `UNKNOWN` or a count
/// followed by that many sorted value ids.
pub(crate) type RouteKey = Vec<u16>;

const UNKNOWN: u16 = u16::MAX;

impl Vocabulary {
    /// Collects the dimensions and values of `logsources` and of the
    /// configured routing.
    pub(crate) fn new<'a>(
        logsources: impl IntoIterator<Item = &'a LogSource>,
        routing: &'a Routing,
    ) -> Vocabulary {
        let mut vocabulary = Vocabulary::default();
        for dimension in STANDARD_DIMENSIONS {
            vocabulary.dimension(dimension);
        }
        for (dimension, _) in &routing.field_map {
            vocabulary.dimension(dimension);
        }
        // Values events can name are known too, so that metrics say
        // `service=sysmon` even when no rule names that service.
        let event_values = routing
            .event_logsource
            .iter()
            .map(|(d, v)| (d.clone(), v.as_str()));
        let derived = derive::vocabulary().map(|(d, v)| (d.to_owned(), v));
        let rules = logsources.into_iter().flat_map(rule_dimensions);
        for (dimension, value) in rules.chain(event_values).chain(derived) {
            vocabulary.value(&dimension, value);
        }
        vocabulary
    }

    fn value(&mut self, dimension: &str, value: &str) {
        let id = self.dimension(dimension);
        let values = &mut self.values[id];
        let next = values.len() as u16;
        if next < UNKNOWN - 1 {
            values.entry(value.to_lowercase()).or_insert(next);
        }
    }

    fn dimension(&mut self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        if let Some(id) = self.dimensions.iter().position(|d| *d == name) {
            return id;
        }
        self.dimensions.push(name);
        self.values.push(HashMap::new());
        self.dimensions.len() - 1
    }

    /// The ids of a rule's logsource.
    pub(crate) fn rule_route(&self, logsource: &LogSource) -> RuleRoute {
        let mut values = vec![None; self.dimensions.len()];
        for (dimension, value) in rule_dimensions(logsource) {
            let Some(d) = self.dimensions.iter().position(|n| *n == dimension) else {
                continue;
            };
            values[d] = self.values[d].get(&value.to_lowercase()).copied();
        }
        RuleRoute { values }
    }

    /// The id of `value` (lowercase) in dimension `d`.
    fn id(&self, d: usize, value: &str) -> Option<u16> {
        self.values[d].get(value).copied()
    }

    fn dimension_id(&self, name: &str) -> Option<usize> {
        self.dimensions.iter().position(|d| d == name)
    }

    /// True when a route key knows no dimension.
    pub(crate) fn knows_nothing(key: &[u16]) -> bool {
        key.iter().all(|&k| k == UNKNOWN)
    }

    /// A readable form of a route key (`product=windows,service=sysmon`),
    /// for metrics and logs; `unknown` when nothing is known.
    pub(crate) fn label(&self, key: &[u16]) -> String {
        let mut parts = Vec::new();
        let mut rest = key;
        for (d, dimension) in self.dimensions.iter().enumerate() {
            let Some((&head, tail)) = rest.split_first() else {
                break;
            };
            if head == UNKNOWN {
                rest = tail;
                continue;
            }
            let (ids, tail) = tail.split_at(head as usize);
            rest = tail;
            let mut names: Vec<&str> = ids
                .iter()
                .filter_map(|id| {
                    self.values[d]
                        .iter()
                        .find(|(_, v)| *v == id)
                        .map(|(k, _)| k.as_str())
                })
                .collect();
            if names.is_empty() {
                names.push("other");
            }
            parts.push(format!("{dimension}={}", names.join("|")));
        }
        if parts.is_empty() {
            "unknown".to_owned()
        } else {
            parts.join(",")
        }
    }
}

impl RuleRoute {
    /// True unless a dimension is known on both sides and differs.
    pub(crate) fn admits(&self, key: &[u16]) -> bool {
        let mut rest = key;
        for value in &self.values {
            let Some((&head, tail)) = rest.split_first() else {
                return true;
            };
            if head == UNKNOWN {
                rest = tail;
                continue;
            }
            let (ids, tail) = tail.split_at(head as usize);
            rest = tail;
            if let Some(value) = value
                && !ids.contains(value)
            {
                return false;
            }
        }
        true
    }
}

/// The dimensions a rule's logsource names, as `(dimension, value)`.
fn rule_dimensions(logsource: &LogSource) -> impl Iterator<Item = (String, &str)> {
    let standard = [
        ("product", &logsource.product),
        ("service", &logsource.service),
        ("category", &logsource.category),
    ];
    standard
        .into_iter()
        .filter_map(|(d, v)| Some((d.to_owned(), v.as_deref()?)))
        .chain(
            logsource
                .custom
                .iter()
                .map(|(d, v)| (d.to_ascii_lowercase(), v.as_str())),
        )
}

/// Reads an event's logsource as the routing settings say (mapped fields
/// first, then static values, then derivation) straight into its route key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Router {
    field_map: Vec<(usize, FieldPath)>,
    /// Per dimension with a static value: its id.
    statics: Vec<(usize, Option<u16>)>,
    derive: bool,
}

impl Router {
    pub(crate) fn new(routing: &Routing, vocabulary: &Vocabulary) -> Router {
        let dimension = |name: &str| {
            vocabulary
                .dimension_id(&name.to_ascii_lowercase())
                .expect("the vocabulary holds every configured dimension")
        };
        Router {
            field_map: routing
                .field_map
                .iter()
                .map(|(d, f)| (dimension(d), FieldPath::new(f)))
                .collect(),
            statics: routing
                .event_logsource
                .iter()
                .map(|(d, v)| {
                    let d = dimension(d);
                    (d, vocabulary.id(d, &v.to_lowercase()))
                })
                .collect(),
            derive: routing.derive,
        }
    }

    /// Writes the route key of `event` into `key`: per dimension, `UNKNOWN`
    /// or a count followed by that many sorted value ids. `buffer` lowercases
    /// mapped field values without allocating.
    pub(crate) fn route_key(
        &self,
        event: &Value,
        vocabulary: &Vocabulary,
        key: &mut RouteKey,
        buffer: &mut String,
    ) {
        key.clear();
        let derived = if self.derive {
            derive::derive(event)
        } else {
            Derived::default()
        };
        for d in 0..vocabulary.dimensions.len() {
            let start = key.len();
            key.push(0);
            let known = self.mapped(d, event, vocabulary, key, buffer)
                || self.fixed(d, key)
                || derived.ids(d, vocabulary, key);
            if !known {
                key.truncate(start);
                key.push(UNKNOWN);
                continue;
            }
            let ids = &mut key[start + 1..];
            ids.sort_unstable();
            let mut unique = 0;
            for i in 0..ids.len() {
                if unique == 0 || ids[i] != ids[unique - 1] {
                    ids[unique] = ids[i];
                    unique += 1;
                }
            }
            key.truncate(start + 1 + unique);
            key[start] = unique as u16;
        }
    }

    /// The values of the event field mapped to dimension `d`, if any.
    fn mapped(
        &self,
        d: usize,
        event: &Value,
        vocabulary: &Vocabulary,
        key: &mut RouteKey,
        buffer: &mut String,
    ) -> bool {
        let Some((_, field)) = self.field_map.iter().find(|(m, _)| *m == d) else {
            return false;
        };
        let mut known = false;
        let _ = field.for_each_value(event, &mut |value| {
            match value {
                Value::String(s) if !s.is_empty() => lowercase_into(s, buffer),
                Value::Number(n) => {
                    use std::fmt::Write;
                    buffer.clear();
                    let _ = write!(buffer, "{n}");
                }
                Value::Bool(b) => {
                    buffer.clear();
                    buffer.push_str(if *b { "true" } else { "false" });
                }
                _ => return ControlFlow::Continue(()),
            }
            known = true;
            key.extend(vocabulary.id(d, buffer));
            ControlFlow::Continue(())
        });
        known
    }

    fn fixed(&self, d: usize, key: &mut RouteKey) -> bool {
        let Some((_, id)) = self.statics.iter().find(|(s, _)| *s == d) else {
            return false;
        };
        key.extend(*id);
        true
    }
}

/// What derivation found, per standard dimension (empty: unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Derived {
    /// `product`.
    pub product: &'static [&'static str],
    /// `service`.
    pub service: &'static [&'static str],
    /// `category`.
    pub category: &'static [&'static str],
}

impl Derived {
    /// Pushes the ids of dimension `d`'s values; false when it is unknown.
    fn ids(&self, d: usize, vocabulary: &Vocabulary, key: &mut RouteKey) -> bool {
        let values = match d {
            0 => self.product,
            1 => self.service,
            2 => self.category,
            _ => &[],
        };
        key.extend(values.iter().filter_map(|v| vocabulary.id(d, v)));
        !values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn logsource(
        product: Option<&str>,
        service: Option<&str>,
        category: Option<&str>,
    ) -> LogSource {
        LogSource {
            product: product.map(Into::into),
            service: service.map(Into::into),
            category: category.map(Into::into),
            custom: Vec::new(),
        }
    }

    /// Which of `rules` `event` admits under `routing`, and the route label.
    fn admitted(rules: &[LogSource], routing: &Routing, event: Value) -> (Vec<bool>, String) {
        let vocabulary = Vocabulary::new(rules, routing);
        let router = Router::new(routing, &vocabulary);
        let mut key = RouteKey::new();
        router.route_key(&event, &vocabulary, &mut key, &mut String::new());
        let admits = rules
            .iter()
            .map(|r| vocabulary.rule_route(r).admits(&key))
            .collect();
        (admits, vocabulary.label(&key))
    }

    #[test]
    fn unknown_on_either_side_admits_and_known_differences_exclude() {
        let rules = [
            logsource(Some("windows"), None, Some("process_creation")),
            logsource(Some("zeek"), Some("rdp"), None),
            logsource(None, None, Some("proxy")),
            logsource(None, None, None),
            logsource(Some("Windows"), Some("Security"), None),
        ];
        let routing = Routing::default();
        // Nothing known: everything applies.
        assert_eq!(
            admitted(&rules, &routing, json!({"msg": "x"})),
            (vec![true; 5], "unknown".to_owned())
        );
        let sysmon = json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1});
        assert_eq!(
            admitted(&rules, &routing, sysmon),
            (
                vec![true, false, false, true, false],
                "product=windows,service=sysmon,category=process_creation".to_owned()
            )
        );
        let security = json!({"Channel": "SECURITY", "EventID": 4624});
        assert_eq!(
            admitted(&rules, &routing, security).0,
            [true, false, true, true, true]
        );
        // A product no rule or derivation names is still known: it excludes
        // the rules that name another product.
        let aix = Routing {
            event_logsource: Routing::parse_pairs("product=aix").unwrap(),
            ..Routing::default()
        };
        assert_eq!(
            admitted(&rules, &aix, json!({})),
            (
                vec![false, false, true, true, false],
                "product=aix".to_owned()
            )
        );
        let mapped = Routing {
            field_map: Routing::parse_pairs("product=os").unwrap(),
            ..Routing::default()
        };
        assert_eq!(
            admitted(&rules, &mapped, json!({"os": "HP-UX"})),
            (
                vec![false, false, true, true, false],
                "product=other".to_owned()
            )
        );
        // Off: nothing is derived.
        let off = Routing {
            derive: false,
            ..Routing::default()
        };
        let sysmon = json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1});
        assert_eq!(admitted(&rules, &off, sysmon).0, [true; 5]);
    }

    #[test]
    fn first_found_wins_per_dimension() {
        let rules = [
            logsource(Some("windows"), Some("auditd"), Some("process_creation")),
            logsource(Some("linux"), None, None),
            logsource(None, Some("security"), None),
        ];
        let routing = Routing {
            field_map: Routing::parse_pairs("product=os, category=cat").unwrap(),
            event_logsource: Routing::parse_pairs("product=linux,service=auditd").unwrap(),
            ..Routing::default()
        };
        let event = json!({"os": "Windows", "Channel": "Security", "EventID": 4688});
        // The mapped product wins over the static one, the static service
        // over the derived one; the mapped category is absent, so derivation
        // gives it.
        assert_eq!(
            admitted(&rules, &routing, event),
            (
                vec![true, false, false],
                "product=windows,service=auditd,category=process_creation".to_owned()
            )
        );
    }

    #[test]
    fn pairs_are_validated() {
        assert!(Routing::parse_pairs("product").is_err());
        assert!(Routing::parse_pairs("product=").is_err());
        assert!(Routing::parse_pairs("product=a,product=b").is_err());
        assert!(Routing::parse_pairs("").is_err());
        assert_eq!(
            Routing::parse_pairs("Product=Windows").unwrap(),
            vec![("product".to_owned(), "Windows".to_owned())]
        );
    }

    #[test]
    fn custom_dimensions_route() {
        let mut rule = logsource(Some("linux"), None, None);
        rule.custom.push(("Tenant".into(), "emea".into()));
        let rules = [rule, logsource(Some("linux"), None, None)];
        let apac = Routing {
            event_logsource: Routing::parse_pairs("tenant=apac").unwrap(),
            ..Routing::default()
        };
        assert_eq!(admitted(&rules, &apac, json!({})).0, [false, true]);
        let emea = Routing {
            event_logsource: Routing::parse_pairs("tenant=EMEA").unwrap(),
            ..Routing::default()
        };
        assert_eq!(admitted(&rules, &emea, json!({})).0, [true, true]);
        let mapped = Routing {
            field_map: Routing::parse_pairs("tenant=meta.tenant").unwrap(),
            ..Routing::default()
        };
        let event = json!({"meta": {"tenant": ["apac", "EMEA"]}});
        assert_eq!(admitted(&rules, &mapped, event).0, [true, true]);
    }
}

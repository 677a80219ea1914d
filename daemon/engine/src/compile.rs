//! Compiling rules: from the [`rule`](crate::rule) model to matchers and a
//! condition tree, once, so that evaluation does no parsing and no allocation.

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use ipnet::IpNet;
use regex::RegexBuilder;
use serde_json::Value;

use crate::condition::{self, Condition, OfTarget, Quantifier};
use crate::event::{FieldPath, for_each_leaf};
use crate::matcher::{
    Comparison, NumberMatcher, StringMatcher, TimePart, ValueMatcher, lowercase_into,
    needs_lowercasing,
};
use crate::pattern::SigmaString;
use crate::placeholder;
use crate::rule::{DetectionItem, DetectionSection, FilterRule, Modifier, SigmaRule, SigmaValue};

/// Items with at least this many case-insensitive `contains` values are
/// matched with one Aho-Corasick automaton instead of one search per value.
const AUTOMATON_THRESHOLD: usize = 4;

/// Reusable buffers for evaluation, so that matching does not allocate.
#[derive(Debug, Default)]
pub struct MatchBuffers {
    text: String,
    lower: String,
}

/// The output-facing facts of a rule, shared by every detection it emits.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    /// Position of the rule in its engine's evaluation order.
    pub index: usize,
    /// `title`.
    pub title: String,
    /// `id`.
    pub id: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `level`.
    pub level: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
}

impl RuleInfo {
    /// True when `reference` names this rule by id or name.
    pub fn is_referenced_by(&self, reference: &str) -> bool {
        self.id.as_deref() == Some(reference) || self.name.as_deref() == Some(reference)
    }
}

/// What an item tests.
#[derive(Debug, Clone)]
pub(crate) enum ItemTest {
    /// `|exists: true/false`.
    Exists(bool),
    /// Values: any of them (or every one, with `all`) matches some value of the field.
    Values {
        all: bool,
        matchers: Vec<ValueMatcher>,
        /// Case-insensitive `contains` needles grouped out of `matchers` (OR items only).
        grouped: Option<ContainsSet>,
        /// A `null` value is listed: an absent field matches.
        matches_absent: bool,
        wants_lowercase: bool,
    },
    /// `fieldref`: compared with another field of the same event.
    FieldRef {
        all: bool,
        fields: Vec<FieldPath>,
        position: crate::matcher::Position,
        case_sensitive: bool,
        /// `neq`: the field's value must differ from the other field's.
        negate: bool,
    },
}

/// Case-insensitive `contains` needles matched with one automaton, built
/// when the item is first evaluated: most rules are never candidates, and
/// building every item's automaton took a sixth of loading SigmaHQ.
#[derive(Debug, Clone)]
pub(crate) struct ContainsSet {
    /// The lowercased needles, in automaton pattern order.
    pub(crate) needles: Vec<String>,
    automaton: OnceLock<Option<AhoCorasick>>,
}

impl ContainsSet {
    fn new(needles: Vec<String>) -> ContainsSet {
        ContainsSet {
            needles,
            automaton: OnceLock::new(),
        }
    }

    /// True when a needle occurs in `lower` (lowercased text).
    pub(crate) fn is_match(&self, lower: &str) -> bool {
        let automaton = self.automaton.get_or_init(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(&self.needles)
                .ok()
        });
        match automaton {
            Some(automaton) => automaton.is_match(lower),
            // Past the automaton's size limits: one search per needle.
            None => self.needles.iter().any(|n| lower.contains(n.as_str())),
        }
    }
}

/// One compiled `field|modifiers: values` entry.
#[derive(Debug, Clone)]
pub(crate) struct CompiledItem {
    /// `None` for keyword searches over every value of the event.
    pub(crate) field: Option<FieldPath>,
    pub(crate) test: ItemTest,
}

/// A compiled search identifier: an OR of selections, each an AND of items.
#[derive(Debug, Clone)]
pub(crate) struct CompiledIdentifier {
    pub(crate) name: String,
    pub(crate) selections: Vec<Vec<CompiledItem>>,
}

/// A condition over identifier indices.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CondNode {
    Identifier(usize),
    And(Vec<CondNode>),
    Or(Vec<CondNode>),
    Not(Box<CondNode>),
    AtLeast(usize, Vec<usize>),
}

/// A detection rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub(crate) info: Arc<RuleInfo>,
    pub(crate) identifiers: Vec<CompiledIdentifier>,
    /// Identifiers at or past this index came from filter rules.
    pub(crate) own_identifiers: usize,
    pub(crate) condition: CondNode,
}

impl CompiledRule {
    /// The rule's output-facing facts.
    pub fn info(&self) -> &Arc<RuleInfo> {
        &self.info
    }

    /// Evaluates the whole condition against an event.
    pub(crate) fn matches(&self, event: &Value, buffers: &mut MatchBuffers) -> bool {
        self.eval(&self.condition, event, buffers)
    }

    fn eval(&self, node: &CondNode, event: &Value, buffers: &mut MatchBuffers) -> bool {
        match node {
            CondNode::Identifier(i) => self.identifiers[*i].matches(event, buffers),
            CondNode::And(nodes) => nodes.iter().all(|n| self.eval(n, event, buffers)),
            CondNode::Or(nodes) => nodes.iter().any(|n| self.eval(n, event, buffers)),
            CondNode::Not(node) => !self.eval(node, event, buffers),
            CondNode::AtLeast(n, ids) => {
                let mut hits = 0;
                for (seen, i) in ids.iter().enumerate() {
                    if self.identifiers[*i].matches(event, buffers) {
                        hits += 1;
                        if hits >= *n {
                            return true;
                        }
                    }
                    if hits + (ids.len() - seen - 1) < *n {
                        return false;
                    }
                }
                false
            }
        }
    }
}

impl CompiledIdentifier {
    pub(crate) fn matches(&self, event: &Value, buffers: &mut MatchBuffers) -> bool {
        self.selections
            .iter()
            .any(|items| items.iter().all(|item| item.matches(event, buffers)))
    }
}

impl CompiledItem {
    pub(crate) fn matches(&self, event: &Value, buffers: &mut MatchBuffers) -> bool {
        self.first_match(event, buffers).is_some()
    }

    /// The first event value that makes the item hold (`Null` for a test that
    /// holds on an absent field), or `None` when it does not hold.
    pub(crate) fn first_match<'e>(
        &self,
        event: &'e Value,
        buffers: &mut MatchBuffers,
    ) -> Option<&'e Value> {
        static NULL: Value = Value::Null;
        let Some(field) = &self.field else {
            return self.keyword_match(event, buffers);
        };
        match &self.test {
            ItemTest::Exists(expected) => {
                let present = field.is_present(event);
                (present == *expected).then_some(&NULL)
            }
            ItemTest::Values {
                all,
                matchers,
                grouped,
                matches_absent,
                wants_lowercase,
            } => {
                if *all {
                    let mut first = None;
                    for matcher in matchers {
                        let hit = find_value(
                            field,
                            event,
                            buffers,
                            |value, text, lower| matcher.matches(value, text, lower),
                            matcher.wants_lowercase(),
                        );
                        first.get_or_insert(hit?);
                    }
                    return first;
                }
                let mut present = false;
                let hit = find_value(
                    field,
                    event,
                    buffers,
                    |value, text, lower| {
                        present = true;
                        grouped
                            .as_ref()
                            .is_some_and(|set| text.is_some() && set.is_match(lower))
                            || matchers.iter().any(|m| m.matches(value, text, lower))
                    },
                    *wants_lowercase,
                );
                hit.or_else(|| (*matches_absent && !present).then_some(&NULL))
            }
            ItemTest::FieldRef {
                all,
                fields,
                position,
                case_sensitive,
                negate,
            } => {
                let mut first = None;
                for other in fields {
                    let hit = fieldref_match(field, other, event, *position, *case_sensitive);
                    let hit = if *negate {
                        match hit {
                            Some(_) => None,
                            None => first_scalar(field, event),
                        }
                    } else {
                        hit
                    };
                    match (hit, all) {
                        (Some(v), false) => return Some(v),
                        (Some(v), true) => {
                            first.get_or_insert(v);
                        }
                        (None, true) => return None,
                        (None, false) => {}
                    }
                }
                first
            }
        }
    }

    /// Keyword search: any scalar anywhere in the event.
    fn keyword_match<'e>(&self, event: &'e Value, buffers: &mut MatchBuffers) -> Option<&'e Value> {
        let ItemTest::Values {
            all,
            matchers,
            grouped,
            ..
        } = &self.test
        else {
            return None;
        };
        let test = |matcher: &ValueMatcher, buffers: &mut MatchBuffers| {
            let mut found = None;
            let _ = for_each_leaf(event, &mut |value| {
                let (text, lower) = render(value, buffers, true);
                if matcher.matches(value, text, lower) {
                    found = Some(value);
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            found
        };
        if *all {
            let mut first = None;
            for matcher in matchers {
                first.get_or_insert(test(matcher, buffers)?);
            }
            return first;
        }
        // One pass over the leaves: the first leaf any keyword matches (the
        // grouped `contains` literals of four or more keywords in one
        // automaton pass), whatever the keyword's position in the list.
        let mut found = None;
        let _ = for_each_leaf(event, &mut |value| {
            let (text, lower) = render(value, buffers, true);
            let grouped_hit =
                text.is_some() && grouped.as_ref().is_some_and(|set| set.is_match(lower));
            if grouped_hit || matchers.iter().any(|m| m.matches(value, text, lower)) {
                found = Some(value);
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        found
    }
}

/// The first scalar value of a field (what a negated `fieldref` reports).
fn first_scalar<'e>(field: &FieldPath, event: &'e Value) -> Option<&'e Value> {
    let mut found = None;
    let _ = field.for_each_value(event, &mut |value| {
        if matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            found = Some(value);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// Renders a value as text (numbers and booleans included) and, when wanted,
/// lowercases it, in the reused buffers.
fn render<'a>(
    value: &'a Value,
    buffers: &'a mut MatchBuffers,
    lowercase: bool,
) -> (Option<&'a str>, &'a str) {
    let MatchBuffers { text: buf, lower } = buffers;
    let text: Option<&str> = match value {
        Value::String(s) => Some(s.as_str()),
        Value::Number(n) => {
            use std::fmt::Write;
            buf.clear();
            let _ = write!(buf, "{n}");
            Some(buf.as_str())
        }
        Value::Bool(true) => Some("true"),
        Value::Bool(false) => Some("false"),
        _ => None,
    };
    match text {
        Some(t) if lowercase && needs_lowercasing(t) => {
            lowercase_into(t, lower);
            (text, lower.as_str())
        }
        Some(t) => (text, t),
        None => (None, ""),
    }
}

fn find_value<'e>(
    field: &FieldPath,
    event: &'e Value,
    buffers: &mut MatchBuffers,
    mut test: impl FnMut(&Value, Option<&str>, &str) -> bool,
    wants_lowercase: bool,
) -> Option<&'e Value> {
    let mut found = None;
    let _ = field.for_each_value(event, &mut |value| {
        let (text, lower) = render(value, buffers, wants_lowercase);
        if test(value, text, lower) {
            found = Some(value);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

fn fieldref_match<'e>(
    field: &FieldPath,
    other: &FieldPath,
    event: &'e Value,
    position: crate::matcher::Position,
    case_sensitive: bool,
) -> Option<&'e Value> {
    use crate::matcher::{Position, lowercase};
    let text_of = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let fold = |s: String| if case_sensitive { s } else { lowercase(&s) };
    let mut references = Vec::new();
    let _ = other.for_each_value(event, &mut |v| {
        if let Some(t) = text_of(v) {
            references.push(fold(t));
        }
        ControlFlow::Continue(())
    });
    let mut found = None;
    let _ = field.for_each_value(event, &mut |v| {
        let Some(text) = text_of(v).map(fold) else {
            return ControlFlow::Continue(());
        };
        let hit = references.iter().any(|r| match position {
            Position::Exact => text == *r,
            Position::Prefix => text.starts_with(r.as_str()),
            Position::Suffix => text.ends_with(r.as_str()),
            Position::Contains => text.contains(r.as_str()),
        });
        if hit {
            found = Some(v);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// Placeholder values for the `expand` modifier (`%name%` to its values).
pub type Placeholders = std::collections::HashMap<String, Vec<String>>;

/// What a rule refers to that nothing defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UndefinedPlaceholders {
    /// Reject the rule, naming the placeholder (the specification's rule).
    #[default]
    Reject,
    /// Load the rule; each undefined placeholder matches nothing.
    MatchNothing,
}

/// How items are compiled: `expand` values, and whether many `contains`
/// literals of an item share one automaton.
#[derive(Debug, Clone, Copy)]
pub struct ItemOptions<'a> {
    /// The placeholders' values.
    pub values: &'a Placeholders,
    /// What an undefined placeholder does.
    pub undefined: UndefinedPlaceholders,
    /// Group an item's `contains` literals into one automaton (off only for
    /// the reference semantics the differential tests compare against).
    pub group_literals: bool,
}

/// Compiles one detection rule, with the filters that apply to it.
pub fn compile_rule(
    index: usize,
    rule: &SigmaRule,
    filters: &[&FilterRule],
    options: &ItemOptions<'_>,
) -> Result<CompiledRule, String> {
    let mut identifiers = compile_identifiers(&rule.detection, options)?;
    let own_identifiers = identifiers.len();
    let mut condition = compile_conditions(&rule.detection, &identifiers, 0)?;
    for filter in filters {
        let offset = identifiers.len();
        let mut filter_identifiers = compile_identifiers(&filter.detection, options)
            .map_err(|err| format!("filter '{}': {err}", filter.meta.title))?;
        let filter_condition = compile_conditions(&filter.detection, &filter_identifiers, offset)
            .map_err(|err| format!("filter '{}': {err}", filter.meta.title))?;
        for identifier in &mut filter_identifiers {
            identifier.name = format!("{}:{}", filter.meta.title, identifier.name);
        }
        identifiers.extend(filter_identifiers);
        condition = CondNode::And(vec![condition, CondNode::Not(Box::new(filter_condition))]);
    }
    Ok(CompiledRule {
        info: Arc::new(RuleInfo {
            index,
            title: rule.meta.title.clone(),
            id: rule.meta.id.clone(),
            name: rule.meta.name.clone(),
            level: rule.meta.level.clone(),
            tags: rule.meta.tags.clone(),
        }),
        identifiers,
        own_identifiers,
        condition,
    })
}

fn compile_identifiers(
    section: &DetectionSection,
    options: &ItemOptions<'_>,
) -> Result<Vec<CompiledIdentifier>, String> {
    section
        .identifiers
        .iter()
        .map(|identifier| {
            let selections = identifier
                .selections
                .iter()
                .map(|items| {
                    items
                        .iter()
                        .map(|item| compile_item(item, options))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| format!("detection '{}': {err}", identifier.name))?;
            Ok(CompiledIdentifier {
                name: identifier.name.clone(),
                selections,
            })
        })
        .collect()
}

fn compile_conditions(
    section: &DetectionSection,
    identifiers: &[CompiledIdentifier],
    offset: usize,
) -> Result<CondNode, String> {
    let mut nodes = section
        .conditions
        .iter()
        .map(|text| {
            let parsed =
                condition::parse(text).map_err(|err| format!("condition '{text}': {err}"))?;
            resolve(&parsed, identifiers, offset)
                .map_err(|err| format!("condition '{text}': {err}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if nodes.len() == 1 {
        nodes.pop().expect("one condition")
    } else {
        CondNode::Or(nodes)
    })
}

fn resolve(
    condition: &Condition,
    identifiers: &[CompiledIdentifier],
    offset: usize,
) -> Result<CondNode, String> {
    Ok(match condition {
        Condition::Identifier(name) => CondNode::Identifier(
            identifiers
                .iter()
                .position(|i| &i.name == name)
                .ok_or_else(|| format!("undefined search identifier '{name}'"))?
                + offset,
        ),
        Condition::And(items) => CondNode::And(
            items
                .iter()
                .map(|c| resolve(c, identifiers, offset))
                .collect::<Result<_, _>>()?,
        ),
        Condition::Or(items) => CondNode::Or(
            items
                .iter()
                .map(|c| resolve(c, identifiers, offset))
                .collect::<Result<_, _>>()?,
        ),
        Condition::Not(inner) => CondNode::Not(Box::new(resolve(inner, identifiers, offset)?)),
        Condition::Of { quantifier, target } => {
            let ids: Vec<usize> = identifiers
                .iter()
                .enumerate()
                .filter(|(_, i)| match target {
                    OfTarget::Them => !i.name.starts_with('_'),
                    OfTarget::Pattern(p) => condition::pattern_matches(p, &i.name),
                })
                .map(|(index, _)| index + offset)
                .collect();
            if ids.is_empty() {
                return Err(match target {
                    OfTarget::Them => "'of them' but the rule has no search identifiers".into(),
                    OfTarget::Pattern(p) => format!("pattern '{p}' matches no search identifier"),
                });
            }
            match quantifier {
                Quantifier::All => {
                    CondNode::And(ids.into_iter().map(CondNode::Identifier).collect())
                }
                Quantifier::AtLeast(1) => {
                    CondNode::Or(ids.into_iter().map(CondNode::Identifier).collect())
                }
                Quantifier::AtLeast(n) if *n > ids.len() => {
                    return Err(format!(
                        "'{n} of' over {} search identifiers can never hold",
                        ids.len()
                    ));
                }
                Quantifier::AtLeast(n) => CondNode::AtLeast(*n, ids),
            }
        }
    })
}

/// The modifiers of an item, sorted by role.
#[derive(Default)]
struct ModifierSet {
    /// Value transformations in the order written.
    transforms: Vec<Modifier>,
    position: Option<Modifier>,
    all: bool,
    cased: bool,
    regex: bool,
    regex_flags: (bool, bool, bool),
    cidr: bool,
    exists: bool,
    expand: bool,
    fieldref: bool,
    neq: bool,
    comparison: Option<Comparison>,
    time_part: Option<TimePart>,
}

fn classify(modifiers: &[Modifier]) -> Result<ModifierSet, String> {
    use Modifier::*;
    let mut set = ModifierSet::default();
    for &modifier in modifiers {
        match modifier {
            Contains | StartsWith | EndsWith => {
                if set.position.replace(modifier).is_some() {
                    return Err("only one of contains/startswith/endswith may be used".into());
                }
            }
            All => set.all = true,
            Base64 | Base64Offset | Wide | Utf16Be | Utf16 | WinDash => {
                set.transforms.push(modifier)
            }
            Re => set.regex = true,
            ReInsensitive => set.regex_flags.0 = true,
            ReMultiline => set.regex_flags.1 = true,
            ReDotAll => set.regex_flags.2 = true,
            Cidr => set.cidr = true,
            Exists => set.exists = true,
            Expand => set.expand = true,
            FieldRef => set.fieldref = true,
            Neq => set.neq = true,
            Cased => set.cased = true,
            Gt | Gte | Lt | Lte => {
                let op = match modifier {
                    Gt => Comparison::Gt,
                    Gte => Comparison::Gte,
                    Lt => Comparison::Lt,
                    _ => Comparison::Lte,
                };
                if set.comparison.replace(op).is_some() {
                    return Err("only one of gt/gte/lt/lte may be used".into());
                }
            }
            Minute | Hour | Day | Week | Month | Year => {
                let part = match modifier {
                    Minute => TimePart::Minute,
                    Hour => TimePart::Hour,
                    Day => TimePart::Day,
                    Week => TimePart::Week,
                    Month => TimePart::Month,
                    _ => TimePart::Year,
                };
                if set.time_part.replace(part).is_some() {
                    return Err("only one time modifier may be used".into());
                }
            }
        }
    }
    let (i, m, s) = set.regex_flags;
    if (i || m || s) && !set.regex {
        return Err("regular expression flags (i, m, s) need the 're' modifier".into());
    }
    let kinds = [
        set.regex,
        set.cidr,
        set.exists,
        set.fieldref,
        set.comparison.is_some() && set.time_part.is_none(),
        set.time_part.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(format!("incompatible modifiers: {modifiers:?}"));
    }
    let exclusive =
        set.regex || set.cidr || set.exists || set.comparison.is_some() || set.time_part.is_some();
    if exclusive && (!set.transforms.is_empty() || set.position.is_some()) {
        return Err(format!("incompatible modifiers: {modifiers:?}"));
    }
    Ok(set)
}

fn compile_item(item: &DetectionItem, options: &ItemOptions<'_>) -> Result<CompiledItem, String> {
    let field = item.field.as_deref().map(FieldPath::new);
    let field_label = item.field.as_deref().unwrap_or("<keywords>");
    let context = |err: String| format!("field '{field_label}': {err}");
    let set = classify(&item.modifiers).map_err(context)?;
    if item.values.is_empty() {
        return Err(context("an empty value list can never match".into()));
    }
    if field.is_none() && (set.exists || set.fieldref) {
        return Err(context(
            "keyword searches cannot use exists or fieldref".into(),
        ));
    }
    if set.exists {
        return match item.values.as_slice() {
            [SigmaValue::Bool(expected)] => Ok(CompiledItem {
                field,
                test: ItemTest::Exists(*expected),
            }),
            _ => Err(context("'exists' takes one boolean value".into())),
        };
    }
    if set.fieldref {
        let fields = item
            .values
            .iter()
            .map(|value| match value {
                SigmaValue::String(name) => Ok(FieldPath::new(name)),
                _ => Err(context("'fieldref' values must be field names".into())),
            })
            .collect::<Result<_, _>>()?;
        return Ok(CompiledItem {
            field,
            test: ItemTest::FieldRef {
                all: set.all,
                fields,
                position: position_of(set.position),
                case_sensitive: set.cased,
                negate: set.neq,
            },
        });
    }
    let mut matchers = Vec::new();
    let mut matches_absent = false;
    for value in &item.values {
        if *value == SigmaValue::Null {
            if set.transforms.is_empty() && set.position.is_none() && !set.neq {
                matches_absent = true;
                matchers.push(ValueMatcher::Null);
                continue;
            }
            return Err(context("null cannot be combined with modifiers".into()));
        }
        let mut compiled = compile_value(value, &set, field.is_none(), options).map_err(context)?;
        if set.all && compiled.len() > 1 {
            // Under `all`, the alternatives one value expands to (windash,
            // base64offset) stay an OR of their own.
            compiled = vec![ValueMatcher::AnyOf(compiled)];
        }
        if set.neq {
            matchers.extend(compiled.into_iter().map(|m| ValueMatcher::Not(Box::new(m))));
        } else {
            matchers.extend(compiled);
        }
    }
    let all = set.all && matchers.len() > 1;
    let grouped = if all || !options.group_literals {
        None
    } else {
        group_contains(&mut matchers)
    };
    let wants_lowercase = grouped.is_some() || matchers.iter().any(ValueMatcher::wants_lowercase);
    Ok(CompiledItem {
        field,
        test: ItemTest::Values {
            all,
            matchers,
            grouped,
            matches_absent,
            wants_lowercase,
        },
    })
}

/// Moves many case-insensitive `contains` matchers into one automaton.
fn group_contains(matchers: &mut Vec<ValueMatcher>) -> Option<ContainsSet> {
    let needles: Vec<String> = matchers
        .iter()
        .filter_map(|m| match m {
            ValueMatcher::String(s) => s.insensitive_contains().map(str::to_owned),
            _ => None,
        })
        .collect();
    if needles.len() < AUTOMATON_THRESHOLD {
        return None;
    }
    matchers
        .retain(|m| !matches!(m, ValueMatcher::String(s) if s.insensitive_contains().is_some()));
    Some(ContainsSet::new(needles))
}

fn position_of(modifier: Option<Modifier>) -> crate::matcher::Position {
    use crate::matcher::Position;
    match modifier {
        Some(Modifier::Contains) => Position::Contains,
        Some(Modifier::StartsWith) => Position::Prefix,
        Some(Modifier::EndsWith) => Position::Suffix,
        _ => Position::Exact,
    }
}

fn number_of(value: &SigmaValue) -> Option<f64> {
    match value {
        SigmaValue::Integer(i) => Some(*i as f64),
        SigmaValue::Float(f) => Some(*f),
        SigmaValue::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn value_text(value: &SigmaValue) -> Option<String> {
    match value {
        SigmaValue::String(s) => Some(s.clone()),
        SigmaValue::Integer(i) => Some(i.to_string()),
        SigmaValue::Float(f) => Some(f.to_string()),
        SigmaValue::Bool(b) => Some(b.to_string()),
        SigmaValue::Null => None,
    }
}

/// Compiles one value; transformations may expand it into several alternatives.
fn compile_value(
    value: &SigmaValue,
    set: &ModifierSet,
    keyword: bool,
    options: &ItemOptions<'_>,
) -> Result<Vec<ValueMatcher>, String> {
    if let Some(part) = set.time_part {
        let n = number_of(value).ok_or("time modifiers take a number")?;
        let op = set.comparison.unwrap_or(Comparison::Eq);
        return Ok(vec![ValueMatcher::TimePart(part, op, n)]);
    }
    if let Some(op) = set.comparison {
        let n = number_of(value).ok_or("gt/gte/lt/lte take a number")?;
        return Ok(vec![ValueMatcher::Compare(op, n)]);
    }
    if set.regex {
        let SigmaValue::String(source) = value else {
            return Err("'re' takes a string".into());
        };
        let (i, m, s) = set.regex_flags;
        let regex = RegexBuilder::new(source)
            .case_insensitive(i)
            .multi_line(m)
            .dot_matches_new_line(s)
            .build()
            .map_err(|err| format!("invalid regular expression '{source}': {err}"))?;
        return Ok(vec![ValueMatcher::Regex(regex)]);
    }
    if set.cidr {
        let text = value_text(value).ok_or("'cidr' takes a network")?;
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| format!("invalid network '{text}' for 'cidr'"))?;
        return Ok(vec![ValueMatcher::Cidr(net)]);
    }
    let plain = set.transforms.is_empty() && set.position.is_none() && !set.expand;
    match value {
        SigmaValue::Integer(_) | SigmaValue::Float(_) if plain && !keyword => {
            let number = number_of(value).expect("numeric");
            return Ok(vec![ValueMatcher::Number(NumberMatcher::new(number))]);
        }
        SigmaValue::Bool(b) if plain && !keyword => return Ok(vec![ValueMatcher::Bool(*b)]),
        _ => {}
    }
    let text = value_text(value).ok_or("value cannot be matched as text")?;
    let texts = if set.expand {
        expand_placeholders(&text, options)?
    } else {
        vec![text]
    };
    let mut strings: Vec<SigmaString> = texts.iter().map(|t| SigmaString::parse(t)).collect();
    let mut case_sensitive = set.cased;
    for transform in &set.transforms {
        let mut next = Vec::with_capacity(strings.len());
        for s in &strings {
            match transform {
                Modifier::Wide => next.push(s.utf16le()?),
                Modifier::Utf16Be => next.push(s.utf16be()?),
                Modifier::Utf16 => next.push(s.utf16()?),
                Modifier::Base64 => next.push(s.base64()?),
                Modifier::Base64Offset => next.extend(s.base64offset()?),
                Modifier::WinDash => next.extend(s.windash()?),
                _ => unreachable!("only transforms are listed"),
            }
        }
        if matches!(transform, Modifier::Base64 | Modifier::Base64Offset) {
            // Encoded text is case-significant.
            case_sensitive = true;
        }
        strings = next;
    }
    let (left, right) = match set.position {
        Some(Modifier::Contains) => (true, true),
        Some(Modifier::StartsWith) => (false, true),
        Some(Modifier::EndsWith) => (true, false),
        // A keyword matches anywhere within a value.
        _ if keyword => (true, true),
        _ => (false, false),
    };
    strings
        .into_iter()
        .map(|s| {
            let tokens = s.wrap(left, right).into_text()?;
            Ok(ValueMatcher::String(StringMatcher::new(
                tokens,
                case_sensitive,
            )?))
        })
        .collect()
}

/// Replaces every `%name%` placeholder with each of its values.
fn expand_placeholders(text: &str, options: &ItemOptions<'_>) -> Result<Vec<String>, String> {
    let pieces = placeholder::pieces(text);
    let filled = placeholder::substitute(&pieces, |name| match options.values.get(name) {
        Some(values) => Ok(Some(values.clone())),
        // An environment-specific list nobody filled in (SigmaHQ uses them
        // for allow-lists): the opt-out keeps the rule, matching nothing.
        None if options.undefined == UndefinedPlaceholders::MatchNothing => Ok(Some(Vec::new())),
        None => Err(format!(
            "placeholder '%{name}%' is not defined: give it values in a pipeline's `vars` \
             (or replace it with a `value_placeholders`/`wildcard_placeholders` transformation), \
             or load with --allow-undefined-placeholders to keep such rules inert"
        )),
    })?;
    Ok(filled.iter().map(|t| placeholder::unescape(t)).collect())
}

//! Conditions of processing items: on the rule, on detection items and on
//! field names, with their linking (`and`/`or`, an expression, negation).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use regex::Regex;

use crate::condition::{self, Condition};
use crate::rule::{LogSource, SigmaValue};

use super::transform::{RuleKind, WorkItem, WorkRule, is_plain_item, same_value};

/// A value of the pipeline state (`set_state`, `processing_state`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StateValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl StateValue {
    fn as_f64(&self) -> Option<f64> {
        match self {
            StateValue::Int(i) => Some(*i as f64),
            StateValue::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// Per-rule state of pipeline processing, shared by every pipeline of a set.
pub(crate) type State = HashMap<String, StateValue>;

/// A comparison of `processing_state` and `rule_attribute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gte,
    Gt,
    Lte,
    Lt,
    In,
    NotIn,
}

impl Op {
    /// Parses `eq`, `ne`, `gte`, `gt`, `lte`, `lt` and, when `lists` is
    /// set, `in` and `not_in`.
    pub(crate) fn parse(text: &str, lists: bool) -> Result<Op, String> {
        Ok(match text {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gte" => Op::Gte,
            "gt" => Op::Gt,
            "lte" => Op::Lte,
            "lt" => Op::Lt,
            "in" if lists => Op::In,
            "not_in" if lists => Op::NotIn,
            other => {
                let expected = if lists {
                    "eq, ne, gte, gt, lte, lt, in or not_in"
                } else {
                    "eq, ne, gte, gt, lte or lt"
                };
                return Err(format!("invalid operation '{other}' (expected {expected})"));
            }
        })
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
            Op::Gte => ordering != Ordering::Less,
            Op::Gt => ordering == Ordering::Greater,
            Op::Lte => ordering != Ordering::Greater,
            Op::Lt => ordering == Ordering::Less,
            Op::In | Op::NotIn => false,
        }
    }
}

/// Compares a state value with the expected one. Numbers compare
/// numerically, strings and booleans with their own kind; values of
/// different kinds are only ever "not equal".
fn compare_state(have: &StateValue, op: Op, want: &StateValue) -> bool {
    use StateValue::*;
    let ordering = match (have, want) {
        (Str(a), Str(b)) => Some(a.cmp(b)),
        (Bool(a), Bool(b)) => Some(a.cmp(b)),
        (Int(a), Int(b)) => Some(a.cmp(b)),
        (a, b) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    };
    match ordering {
        Some(ordering) => op.holds(ordering),
        None => op == Op::Ne,
    }
}

/// `processing_state`: the state key compared with a value.
#[derive(Debug, Clone)]
pub(crate) struct StateTest {
    pub(crate) key: String,
    pub(crate) val: StateValue,
    pub(crate) op: Op,
}

impl StateTest {
    fn holds(&self, state: &State) -> bool {
        state
            .get(&self.key)
            .is_some_and(|have| compare_state(have, self.op, &self.val))
    }
}

/// A boolean expression over named conditions (`*_cond_expr`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Cond(usize),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    /// Parses `text` (`and`, `or`, `not`, parentheses) over the condition
    /// names; returns the expression and which names it uses.
    pub(crate) fn parse(text: &str, names: &[String]) -> Result<(Expr, HashSet<usize>), String> {
        let parsed = condition::parse(text)
            .map_err(|err| format!("condition expression '{text}': {err}"))?;
        let mut used = HashSet::new();
        let expr = Expr::convert(&parsed, names, &mut used)
            .map_err(|err| format!("condition expression '{text}': {err}"))?;
        Ok((expr, used))
    }

    fn convert(
        condition: &Condition,
        names: &[String],
        used: &mut HashSet<usize>,
    ) -> Result<Expr, String> {
        Ok(match condition {
            Condition::Identifier(name) => {
                let index = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| format!("condition identifier '{name}' not found"))?;
                used.insert(index);
                Expr::Cond(index)
            }
            Condition::Not(inner) => Expr::Not(Box::new(Expr::convert(inner, names, used)?)),
            Condition::And(operands) => Expr::And(
                operands
                    .iter()
                    .map(|c| Expr::convert(c, names, used))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Or(operands) => Expr::Or(
                operands
                    .iter()
                    .map(|c| Expr::convert(c, names, used))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Of { .. } => {
                return Err("'of' quantifiers are not allowed here".into());
            }
        })
    }

    fn eval(&self, test: &mut dyn FnMut(usize) -> bool) -> bool {
        match self {
            Expr::Cond(i) => test(*i),
            Expr::Not(inner) => !inner.eval(test),
            Expr::And(operands) => operands.iter().all(|e| e.eval(test)),
            Expr::Or(operands) => operands.iter().any(|e| e.eval(test)),
        }
    }
}

/// How the conditions of one kind are combined.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Linking {
    /// `*_cond_op: and` (the default).
    All,
    /// `*_cond_op: or`.
    Any,
    /// `*_cond_expr`.
    Expr(Expr),
}

/// The conditions of one kind of a processing item.
#[derive(Debug, Clone)]
pub(crate) struct CondSet<C> {
    pub(crate) conds: Vec<C>,
    pub(crate) linking: Linking,
    /// `*_cond_not`.
    pub(crate) negated: bool,
}

impl<C> Default for CondSet<C> {
    fn default() -> Self {
        CondSet {
            conds: Vec::new(),
            linking: Linking::All,
            negated: false,
        }
    }
}

impl<C> CondSet<C> {
    /// Whether the conditions hold. No conditions at all always hold (also
    /// when negated).
    pub(crate) fn matches(&self, mut test: impl FnMut(&C) -> bool) -> bool {
        if self.conds.is_empty() {
            return true;
        }
        let result = match &self.linking {
            Linking::All => self.conds.iter().all(&mut test),
            Linking::Any => self.conds.iter().any(&mut test),
            Linking::Expr(expr) => expr.eval(&mut |i| test(&self.conds[i])),
        };
        result != self.negated
    }
}

/// A condition on the whole rule (`rule_conditions`).
#[derive(Debug, Clone)]
pub(crate) enum RuleCondition {
    /// `logsource`: every given field equals the rule's.
    Logsource(LogSource),
    /// `contains_detection_item`: some item has this field and value.
    ContainsDetectionItem {
        field: Option<String>,
        value: SigmaValue,
    },
    /// `contains_field`: some item has this field.
    ContainsField(Option<String>),
    /// `processing_item_applied`: the item with this id was applied to the rule.
    ProcessingItemApplied(String),
    /// `processing_state`.
    ProcessingState(StateTest),
    /// `is_sigma_rule`: a detection rule (or a filter).
    IsSigmaRule,
    /// `is_sigma_correlation_rule`.
    IsSigmaCorrelationRule,
    /// `rule_attribute`.
    RuleAttribute(AttributeTest),
    /// `tag`: the rule has this tag.
    Tag(String),
}

impl RuleCondition {
    pub(crate) fn matches(&self, rule: &WorkRule) -> bool {
        match self {
            RuleCondition::Logsource(want) => {
                if rule.kind == RuleKind::Correlation {
                    rule.referenced_logsources
                        .iter()
                        .any(|have| logsource_contains(want, have))
                } else {
                    logsource_contains(want, &rule.meta.logsource)
                }
            }
            RuleCondition::ContainsDetectionItem { field, value } => {
                let Some(field) = field else { return false };
                rule.items().any(|item| {
                    item.item.field.as_deref() == Some(field.as_str())
                        && item.item.values.iter().any(|v| same_value(v, value))
                })
            }
            RuleCondition::ContainsField(field) => {
                let Some(field) = field else { return false };
                rule.items()
                    .any(|item| item.item.field.as_deref() == Some(field.as_str()))
            }
            RuleCondition::ProcessingItemApplied(id) => rule.applied.contains(id),
            RuleCondition::ProcessingState(test) => test.holds(&rule.state),
            RuleCondition::IsSigmaRule => rule.kind != RuleKind::Correlation,
            RuleCondition::IsSigmaCorrelationRule => rule.kind == RuleKind::Correlation,
            RuleCondition::RuleAttribute(test) => test.holds(rule),
            RuleCondition::Tag(tag) => rule.meta.tags.iter().any(|t| t == tag),
        }
    }
}

/// pySigma's log source containment: every field the condition gives must
/// equal the rule's; fields it leaves out match anything.
pub(crate) fn logsource_contains(want: &LogSource, have: &LogSource) -> bool {
    let field_ok = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    field_ok(&want.category, &have.category)
        && field_ok(&want.product, &have.product)
        && field_ok(&want.service, &have.service)
}

/// What a `rule_attribute` condition compares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttributeValue {
    /// `title`, `id`, `name`, `description`, `author`: exact text.
    Text(String),
    /// `tags`, `references`, `falsepositives`: list membership.
    List(String),
    /// `level` or `status`: a rank in their order.
    Rank(u8),
    /// `date` or `modified`.
    Date(NaiveDate),
    /// An attribute the rule model does not keep (pySigma's custom
    /// attributes): never holds.
    Unknown,
}

/// `rule_attribute`: a rule attribute compared with a value.
#[derive(Debug, Clone)]
pub(crate) struct AttributeTest {
    pub(crate) attribute: String,
    pub(crate) op: Op,
    pub(crate) value: AttributeValue,
}

const LEVELS: &[&str] = &["informational", "low", "medium", "high", "critical"];
const STATUSES: &[&str] = &[
    "unsupported",
    "deprecated",
    "experimental",
    "test",
    "stable",
];

fn rank(names: &[&str], text: &str) -> Option<u8> {
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text.trim()))
        .map(|p| p as u8)
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y/%m/%d"))
        .ok()
}

impl AttributeTest {
    /// Validates the operation and value for the attribute, as pySigma does
    /// when it compares (we do it when the pipeline is read).
    pub(crate) fn new(attribute: String, op: Op, value: &str) -> Result<AttributeTest, String> {
        let ordered = || -> Result<(), String> {
            if matches!(op, Op::In | Op::NotIn) {
                Err(format!(
                    "rule_attribute: operation '{}' needs a list attribute, '{attribute}' is not one",
                    op_name(op)
                ))
            } else {
                Ok(())
            }
        };
        let value = match attribute.as_str() {
            "title" | "id" | "name" | "description" | "author" => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(format!(
                        "rule_attribute: '{attribute}' is text and only supports eq and ne"
                    ));
                }
                AttributeValue::Text(value.to_owned())
            }
            "tags" | "references" | "falsepositives" => AttributeValue::List(value.to_owned()),
            "level" => {
                ordered()?;
                AttributeValue::Rank(rank(LEVELS, value).ok_or_else(|| {
                    format!("rule_attribute: invalid Sigma severity level '{value}'")
                })?)
            }
            "status" => {
                ordered()?;
                AttributeValue::Rank(
                    rank(STATUSES, value)
                        .ok_or_else(|| format!("rule_attribute: invalid Sigma status '{value}'"))?,
                )
            }
            "date" | "modified" => {
                ordered()?;
                AttributeValue::Date(parse_date(value).ok_or_else(|| {
                    format!("rule_attribute: invalid date format '{value}' (expected YYYY-MM-DD)")
                })?)
            }
            "logsource" | "detection" | "correlation" | "fields" => {
                return Err(format!(
                    "rule_attribute: attribute '{attribute}' is a structure and cannot be compared"
                ));
            }
            _ => AttributeValue::Unknown,
        };
        Ok(AttributeTest {
            attribute,
            op,
            value,
        })
    }

    fn holds(&self, rule: &WorkRule) -> bool {
        let meta = &rule.meta;
        match &self.value {
            AttributeValue::Unknown => false,
            AttributeValue::Text(want) => {
                let have = match self.attribute.as_str() {
                    "title" => Some(&meta.title),
                    "id" => meta.id.as_ref(),
                    "name" => meta.name.as_ref(),
                    "description" => meta.description.as_ref(),
                    _ => meta.author.as_ref(),
                };
                have.is_some_and(|have| self.op.holds(have.as_str().cmp(want.as_str())))
            }
            AttributeValue::List(want) => {
                let list = match self.attribute.as_str() {
                    "tags" => &meta.tags,
                    "references" => &meta.references,
                    _ => &meta.falsepositives,
                };
                let contains = list.iter().any(|item| item == want);
                match self.op {
                    Op::In => contains,
                    Op::NotIn => !contains,
                    // A list never equals a single value (as pySigma).
                    Op::Ne => true,
                    _ => false,
                }
            }
            AttributeValue::Rank(want) => {
                let have = if self.attribute == "level" {
                    meta.level.as_deref().and_then(|l| rank(LEVELS, l))
                } else {
                    meta.status.as_deref().and_then(|s| rank(STATUSES, s))
                };
                have.is_some_and(|have| self.op.holds(have.cmp(want)))
            }
            AttributeValue::Date(want) => {
                let have = if self.attribute == "date" {
                    meta.date.as_deref()
                } else {
                    meta.modified.as_deref()
                };
                have.and_then(parse_date)
                    .is_some_and(|have| self.op.holds(have.cmp(want)))
            }
        }
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "eq",
        Op::Ne => "ne",
        Op::Gte => "gte",
        Op::Gt => "gt",
        Op::Lte => "lte",
        Op::Lt => "lt",
        Op::In => "in",
        Op::NotIn => "not_in",
    }
}

/// A condition on one detection item (`detection_item_conditions`).
#[derive(Debug, Clone)]
pub(crate) enum DetectionItemCondition {
    /// `match_string`: string values match a regular expression (anchored
    /// at the start, as Python's `re.match`).
    MatchString {
        regex: Regex,
        all: bool,
        negate: bool,
    },
    /// `match_value`: a value equals this one (same type).
    MatchValue { value: SigmaValue, all: bool },
    /// `contains_wildcard`: a string value has an unescaped `*` or `?`.
    ContainsWildcard { all: bool },
    /// `is_null`: a value is `null`.
    IsNull { all: bool },
    /// `processing_item_applied`: the item with this id changed the detection item.
    ProcessingItemApplied(String),
    /// `processing_state`.
    ProcessingState(StateTest),
}

impl DetectionItemCondition {
    pub(crate) fn matches(&self, item: &WorkItem, state: &State) -> bool {
        let values = &item.item.values;
        let plain = is_plain_item(&item.item);
        let combine = |all: bool, test: &dyn Fn(&SigmaValue) -> bool| {
            if all {
                values.iter().all(test)
            } else {
                values.iter().any(test)
            }
        };
        match self {
            DetectionItemCondition::MatchString { regex, all, negate } => combine(*all, &|v| {
                let hit = matches!(v, SigmaValue::String(s) if plain && regex.is_match(s));
                hit != *negate
            }),
            DetectionItemCondition::MatchValue { value, all } => {
                combine(*all, &|v| same_value(v, value))
            }
            DetectionItemCondition::ContainsWildcard { all } => combine(
                *all,
                &|v| matches!(v, SigmaValue::String(s) if plain && has_wildcard(s)),
            ),
            DetectionItemCondition::IsNull { all } => {
                combine(*all, &|v| matches!(v, SigmaValue::Null))
            }
            DetectionItemCondition::ProcessingItemApplied(id) => item.applied.contains(id),
            DetectionItemCondition::ProcessingState(test) => test.holds(state),
        }
    }
}

/// True when a Sigma string has an unescaped `*` or `?`.
fn has_wildcard(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // `\*`, `\?` and `\\` are escapes; anything else is a literal backslash.
                if let Some(next) = chars.clone().next()
                    && matches!(next, '*' | '?' | '\\')
                {
                    chars.next();
                }
            }
            '*' | '?' => return true,
            _ => {}
        }
    }
    false
}

/// How field names are matched by `include_fields` / `exclude_fields`.
#[derive(Debug, Clone)]
pub(crate) enum FieldMatch {
    /// `mode: plain`: exact names.
    Plain(Vec<String>),
    /// `mode: re`: regular expressions anchored at the start.
    Re(Vec<Regex>),
}

impl FieldMatch {
    fn matches(&self, name: Option<&str>) -> bool {
        let Some(name) = name else { return false };
        match self {
            FieldMatch::Plain(names) => names.iter().any(|n| n == name),
            FieldMatch::Re(patterns) => patterns.iter().any(|p| p.is_match(name)),
        }
    }
}

/// A condition on field names (`field_name_conditions`).
#[derive(Debug, Clone)]
pub(crate) enum FieldNameCondition {
    /// `include_fields` (`exclude: false`) or `exclude_fields` (`exclude: true`).
    Fields { fields: FieldMatch, exclude: bool },
    /// `processing_item_applied`: the field was produced by the item with this id.
    ProcessingItemApplied(String),
    /// `processing_state`.
    ProcessingState(StateTest),
}

/// What a field name condition is evaluated on.
pub(crate) enum FieldTarget<'a> {
    /// A detection item: its field and, with `with_refs`, the field names
    /// its `fieldref` values refer to.
    Item { item: &'a WorkItem, with_refs: bool },
    /// A bare field name (correlation fields, `fieldref` values), with the
    /// rule's record of which items produced which field names.
    Name {
        name: Option<&'a str>,
        tracking: &'a HashMap<String, HashSet<String>>,
    },
}

impl FieldNameCondition {
    pub(crate) fn matches(&self, target: &FieldTarget<'_>, state: &State) -> bool {
        match (self, target) {
            (FieldNameCondition::ProcessingState(test), _) => test.holds(state),
            (FieldNameCondition::Fields { fields, exclude }, FieldTarget::Name { name, .. }) => {
                fields.matches(*name) != *exclude
            }
            (
                FieldNameCondition::Fields { fields, exclude },
                FieldTarget::Item { item, with_refs },
            ) => {
                let field = item.item.field.as_deref();
                let field_hit = fields.matches(field) != *exclude;
                field_hit
                    || (*with_refs
                        && item
                            .fieldref_names()
                            .any(|name| fields.matches(Some(name)) != *exclude))
            }
            (FieldNameCondition::ProcessingItemApplied(id), FieldTarget::Item { item, .. }) => {
                item.applied.contains(id)
            }
            (
                FieldNameCondition::ProcessingItemApplied(id),
                FieldTarget::Name { name, tracking },
            ) => name
                .and_then(|n| tracking.get(n))
                .is_some_and(|ids| ids.contains(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_comparisons() {
        let five = StateValue::Int(5);
        assert!(compare_state(&five, Op::Eq, &StateValue::Int(5)));
        assert!(compare_state(&five, Op::Eq, &StateValue::Float(5.0)));
        assert!(compare_state(&five, Op::Gt, &StateValue::Int(4)));
        assert!(!compare_state(&five, Op::Lt, &StateValue::Int(4)));
        assert!(compare_state(&five, Op::Lte, &StateValue::Int(5)));
        let text = StateValue::Str("b".into());
        assert!(compare_state(&text, Op::Gt, &StateValue::Str("a".into())));
        // Different kinds: only "not equal" holds.
        assert!(compare_state(&text, Op::Ne, &five));
        assert!(!compare_state(&text, Op::Eq, &five));
        assert!(!compare_state(&text, Op::Gt, &five));
    }

    #[test]
    fn expressions_parse_and_evaluate() {
        let names = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let (expr, used) = Expr::parse("a and not (b or c)", &names).unwrap();
        assert_eq!(used.len(), 3);
        let truth = |a, b, c| expr.eval(&mut |i| [a, b, c][i]);
        assert!(truth(true, false, false));
        assert!(!truth(true, true, false));
        assert!(!truth(false, false, false));
        assert!(
            Expr::parse("a and d", &names)
                .unwrap_err()
                .contains("'d' not found")
        );
        assert!(Expr::parse("1 of a", &names).is_err());
    }

    #[test]
    fn empty_condition_sets_always_hold() {
        let set: CondSet<bool> = CondSet {
            negated: true,
            linking: Linking::Any,
            ..CondSet::default()
        };
        assert!(set.matches(|c| *c));
        let set = CondSet {
            conds: vec![true, false],
            linking: Linking::Any,
            negated: false,
        };
        assert!(set.matches(|c| *c));
        let set = CondSet {
            conds: vec![true, false],
            linking: Linking::All,
            negated: true,
        };
        assert!(set.matches(|c| *c));
    }

    #[test]
    fn wildcards_respect_escapes() {
        assert!(has_wildcard("a*b"));
        assert!(has_wildcard("a?"));
        assert!(!has_wildcard(r"a\*b"));
        assert!(!has_wildcard(r"C:\Windows\"));
        assert!(has_wildcard(r"C:\\*"));
    }

    #[test]
    fn logsource_containment() {
        let have = LogSource {
            category: Some("process_creation".into()),
            product: Some("windows".into()),
            service: None,
            custom: Vec::new(),
        };
        let want = |c: Option<&str>, p: Option<&str>, s: Option<&str>| LogSource {
            category: c.map(Into::into),
            product: p.map(Into::into),
            service: s.map(Into::into),
            custom: Vec::new(),
        };
        assert!(logsource_contains(
            &want(None, Some("windows"), None),
            &have
        ));
        assert!(logsource_contains(
            &want(Some("process_creation"), Some("windows"), None),
            &have
        ));
        assert!(!logsource_contains(
            &want(None, Some("windows"), Some("security")),
            &have
        ));
        assert!(!logsource_contains(&want(None, Some("linux"), None), &have));
        assert!(logsource_contains(&want(None, None, None), &have));
    }

    #[test]
    fn attribute_tests_validate_operations() {
        assert!(AttributeTest::new("title".into(), Op::Gt, "x").is_err());
        assert!(AttributeTest::new("level".into(), Op::In, "high").is_err());
        assert!(AttributeTest::new("level".into(), Op::Gte, "severe").is_err());
        assert!(AttributeTest::new("date".into(), Op::Gte, "yesterday").is_err());
        assert!(AttributeTest::new("logsource".into(), Op::Eq, "x").is_err());
        assert_eq!(
            AttributeTest::new("custom".into(), Op::Eq, "x")
                .unwrap()
                .value,
            AttributeValue::Unknown
        );
        assert_eq!(
            AttributeTest::new("status".into(), Op::Eq, "Stable")
                .unwrap()
                .value,
            AttributeValue::Rank(4)
        );
    }
}

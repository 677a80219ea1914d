//! The prefilter: an index from fields and literals to the rules that need them.
//!
//! For every rule we derive a *necessary* condition: a set of triggers, at
//! least one of which must hold for the rule to match. A trigger is a field
//! that must be present, or a literal (lowercased) that must occur in one of
//! the field's values. Per field, all literals of all rules go into one
//! case-insensitive Aho-Corasick automaton, so one pass over an event marks
//! the candidate rules; only those are evaluated in full. Rules for which no
//! necessary condition can be derived (a negation at the top, a keyword
//! search, a test that holds on an absent field) are always evaluated.
//!
//! The index may only over-approximate: a rule it leaves out must not be able
//! to match. The differential test against the unindexed path checks that.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

use crate::compile::{CompiledIdentifier, CompiledItem, CompiledRule, CondNode, ItemTest};
use crate::matcher::{lowercase_into, needs_lowercasing};

/// Literal triggers longer than this are not more selective in practice.
const NEEDLE_SCORE_CAP: usize = 24;

/// One way a rule can become a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trigger {
    field: String,
    /// `None`: the field's presence is enough.
    needle: Option<String>,
}

/// A necessary condition for a rule to match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    /// No usable condition: always evaluate.
    Always,
    /// At least one of the triggers holds.
    AnyOf(Vec<Trigger>),
}

impl Requirement {
    /// Higher is more selective.
    fn score(&self) -> usize {
        match self {
            Requirement::Always => 0,
            Requirement::AnyOf(triggers) => triggers
                .iter()
                .map(|t| {
                    1 + t
                        .needle
                        .as_ref()
                        .map_or(0, |n| n.len().min(NEEDLE_SCORE_CAP))
                })
                .min()
                .unwrap_or(0),
        }
    }

    fn union(requirements: impl IntoIterator<Item = Requirement>) -> Requirement {
        let mut triggers = Vec::new();
        for requirement in requirements {
            match requirement {
                Requirement::Always => return Requirement::Always,
                Requirement::AnyOf(more) => triggers.extend(more),
            }
        }
        if triggers.is_empty() {
            Requirement::Always
        } else {
            Requirement::AnyOf(triggers)
        }
    }

    fn best(requirements: impl IntoIterator<Item = Requirement>) -> Requirement {
        requirements
            .into_iter()
            .max_by_key(|r| {
                let count = match r {
                    Requirement::Always => usize::MAX,
                    Requirement::AnyOf(t) => t.len(),
                };
                (r.score(), std::cmp::Reverse(count))
            })
            .unwrap_or(Requirement::Always)
    }
}

fn item_requirement(item: &CompiledItem) -> Requirement {
    let Some(field) = &item.field else {
        return Requirement::Always;
    };
    let presence = || {
        Requirement::AnyOf(vec![Trigger {
            field: field.name().to_owned(),
            needle: None,
        }])
    };
    let needle = |n: &str| Trigger {
        field: field.name().to_owned(),
        needle: Some(n.to_owned()),
    };
    match &item.test {
        ItemTest::Exists(true) | ItemTest::FieldRef { .. } => presence(),
        ItemTest::Exists(false) => Requirement::Always,
        ItemTest::Values {
            matches_absent: true,
            ..
        } => Requirement::Always,
        ItemTest::Values {
            all: true,
            matchers,
            ..
        } => match matchers
            .iter()
            .filter_map(|m| m.needle())
            .max_by_key(|n| n.len())
        {
            Some(n) => Requirement::AnyOf(vec![needle(n)]),
            None => presence(),
        },
        ItemTest::Values {
            all: false,
            matchers,
            grouped,
            ..
        } => {
            let own: Option<Vec<&str>> = matchers.iter().map(|m| m.needle()).collect();
            match own {
                Some(own) => {
                    let grouped = grouped.iter().flat_map(|set| set.needles.iter());
                    let triggers: Vec<Trigger> = own
                        .into_iter()
                        .chain(grouped.map(String::as_str))
                        .map(needle)
                        .collect();
                    if triggers.is_empty() {
                        presence()
                    } else {
                        Requirement::AnyOf(triggers)
                    }
                }
                None => presence(),
            }
        }
    }
}

fn identifier_requirement(identifier: &CompiledIdentifier) -> Requirement {
    Requirement::union(
        identifier
            .selections
            .iter()
            .map(|items| Requirement::best(items.iter().map(item_requirement))),
    )
}

fn condition_requirement(node: &CondNode, identifiers: &[Requirement]) -> Requirement {
    match node {
        CondNode::Identifier(i) => identifiers[*i].clone(),
        CondNode::Not(_) => Requirement::Always,
        CondNode::And(nodes) => {
            Requirement::best(nodes.iter().map(|n| condition_requirement(n, identifiers)))
        }
        CondNode::Or(nodes) => {
            Requirement::union(nodes.iter().map(|n| condition_requirement(n, identifiers)))
        }
        CondNode::AtLeast(_, ids) => {
            Requirement::union(ids.iter().map(|i| identifiers[*i].clone()))
        }
    }
}

fn rule_requirement(rule: &CompiledRule) -> Requirement {
    let identifiers: Vec<Requirement> = rule
        .identifiers
        .iter()
        .map(identifier_requirement)
        .collect();
    condition_requirement(&rule.condition, &identifiers)
}

#[derive(Debug, Default)]
struct FieldEntry {
    /// Rules that become candidates when the field is present at all.
    on_presence: Vec<u32>,
    /// Distinct needles of this field and, per needle, the rules it triggers.
    needles: Vec<String>,
    needle_rules: Vec<Vec<u32>>,
    automaton: Option<AhoCorasick>,
}

/// The field/literal index over a compiled rule list.
#[derive(Debug, Default)]
pub(crate) struct RuleIndex {
    fields: HashMap<String, FieldEntry>,
    always: Vec<u32>,
}

/// Per-evaluation buffers of the index.
#[derive(Debug, Default)]
pub(crate) struct IndexScratch {
    path: String,
    text: String,
    lower: String,
}

/// A set of rule indices, reused across events.
#[derive(Debug, Default, Clone)]
pub struct CandidateSet {
    words: Vec<u64>,
}

impl CandidateSet {
    fn reset(&mut self, rules: usize) {
        self.words.clear();
        self.words.resize(rules.div_ceil(64), 0);
    }

    fn insert(&mut self, rule: u32) {
        self.words[rule as usize / 64] |= 1 << (rule % 64);
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + bit
                })
            })
        })
    }
}

impl RuleIndex {
    /// Builds the index for `rules` (indices are positions in the slice).
    pub(crate) fn build(rules: &[CompiledRule]) -> RuleIndex {
        let mut index = RuleIndex::default();
        let mut needle_ids: HashMap<(String, String), usize> = HashMap::new();
        for (rule_id, rule) in rules.iter().enumerate() {
            let rule_id = rule_id as u32;
            match rule_requirement(rule) {
                Requirement::Always => index.always.push(rule_id),
                Requirement::AnyOf(triggers) => {
                    for trigger in triggers {
                        let entry = index.fields.entry(trigger.field.clone()).or_default();
                        match trigger.needle {
                            None => push_unique(&mut entry.on_presence, rule_id),
                            Some(needle) => {
                                let id = *needle_ids
                                    .entry((trigger.field, needle.clone()))
                                    .or_insert_with(|| {
                                        entry.needles.push(needle);
                                        entry.needle_rules.push(Vec::new());
                                        entry.needles.len() - 1
                                    });
                                push_unique(&mut entry.needle_rules[id], rule_id);
                            }
                        }
                    }
                }
            }
        }
        for entry in index.fields.values_mut() {
            if !entry.needles.is_empty() {
                entry.automaton = Some(
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::Standard)
                        .build(&entry.needles)
                        .expect("literal needles always build an automaton"),
                );
            }
        }
        index
    }

    /// Number of rules evaluated for every event.
    pub(crate) fn always_count(&self) -> usize {
        self.always.len()
    }

    /// Marks in `candidates` every rule the event may match.
    pub(crate) fn candidates(
        &self,
        event: &Value,
        rule_count: usize,
        candidates: &mut CandidateSet,
        scratch: &mut IndexScratch,
    ) {
        candidates.reset(rule_count);
        for &rule in &self.always {
            candidates.insert(rule);
        }
        if let Value::Object(map) = event {
            scratch.path.clear();
            for (key, value) in map {
                self.visit(key, value, candidates, scratch);
            }
        }
    }

    fn visit(
        &self,
        key: &str,
        value: &Value,
        candidates: &mut CandidateSet,
        scratch: &mut IndexScratch,
    ) {
        let parent_len = scratch.path.len();
        if parent_len > 0 {
            scratch.path.push('.');
        }
        scratch.path.push_str(key);
        if let Some(entry) = self.fields.get(scratch.path.as_str()) {
            for &rule in &entry.on_presence {
                candidates.insert(rule);
            }
            if let Some(automaton) = &entry.automaton {
                scan(automaton, entry, value, candidates, scratch);
            }
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    self.visit(key, child, candidates, scratch);
                }
            }
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(map) = item {
                        for (key, child) in map {
                            self.visit(key, child, candidates, scratch);
                        }
                    }
                }
            }
            _ => {}
        }
        scratch.path.truncate(parent_len);
    }
}

fn push_unique(rules: &mut Vec<u32>, rule: u32) {
    if rules.last() != Some(&rule) {
        rules.push(rule);
    }
}

/// Runs a field's automaton over a value (array elements included).
fn scan(
    automaton: &AhoCorasick,
    entry: &FieldEntry,
    value: &Value,
    candidates: &mut CandidateSet,
    scratch: &mut IndexScratch,
) {
    let IndexScratch { text, lower, .. } = scratch;
    let haystack: &str = match value {
        Value::String(s) => s,
        Value::Number(n) => {
            use std::fmt::Write;
            text.clear();
            let _ = write!(text, "{n}");
            text
        }
        Value::Bool(b) => {
            if *b {
                "true"
            } else {
                "false"
            }
        }
        Value::Array(items) => {
            for item in items {
                scan(automaton, entry, item, candidates, scratch);
            }
            return;
        }
        _ => return,
    };
    // The automaton folds ASCII case only; fold the rest by lowercasing.
    let haystack = if !haystack.is_ascii() && needs_lowercasing(haystack) {
        lowercase_into(haystack, lower);
        lower.as_str()
    } else {
        haystack
    };
    for hit in automaton.find_overlapping_iter(haystack) {
        for &rule in &entry.needle_rules[hit.pattern().as_usize()] {
            candidates.insert(rule);
        }
    }
}

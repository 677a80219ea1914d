//! The prefilter: an index from fields and literals to the rules that need them.
//!
//! For every rule we derive a *necessary* condition in conjunctive form: a
//! few clauses that must all hold, each a set of triggers of which at least
//! one must hold. A trigger is a field that must be present, or a literal
//! (lowercased) that must occur in one of the field's values (or, for keyword
//! searches, in any value of the event). Per field, all literals of all rules
//! go into one case-insensitive Aho-Corasick automaton, so one pass over an
//! event marks the clauses that hold; a rule whose clauses all hold is a
//! candidate, and only candidates are evaluated in full. Rules for which no
//! clause can be derived (a negation at the top, a test that holds on an
//! absent field) are always evaluated.
//!
//! The index may only over-approximate: a rule it leaves out must not be able
//! to match. The differential test against the unindexed path checks that.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use serde_json::Value;

use crate::compile::{CompiledIdentifier, CompiledItem, CompiledRule, CondNode, ItemTest};
use crate::matcher::{lowercase_into, needs_lowercasing};

/// Literal triggers longer than this are not more selective in practice.
const NEEDLE_SCORE_CAP: usize = 24;

/// At most this many clauses are indexed per rule: the most selective ones.
const MAX_CLAUSES: usize = 3;

/// Where a trigger looks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    /// One field.
    Field(String),
    /// Any value of the event (keyword searches).
    AnyValue,
}

/// One way a clause can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trigger {
    scope: Scope,
    /// `None`: the field's presence is enough.
    needle: Option<String>,
}

/// A disjunction of triggers.
type Clause = Vec<Trigger>;

/// Higher is more selective: the weakest trigger decides.
fn score(clause: &Clause) -> usize {
    clause
        .iter()
        .map(|t| {
            1 + t
                .needle
                .as_ref()
                .map_or(0, |n| n.len().min(NEEDLE_SCORE_CAP))
        })
        .min()
        .unwrap_or(0)
}

/// Orders clauses from most to least selective.
fn selectivity(clause: &Clause) -> (usize, std::cmp::Reverse<usize>) {
    (score(clause), std::cmp::Reverse(clause.len()))
}

/// A necessary condition: all clauses hold. No clause means none could be
/// derived: the rule is always evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Requirement {
    clauses: Vec<Clause>,
}

impl Requirement {
    fn always() -> Requirement {
        Requirement::default()
    }

    fn clause(clause: Clause) -> Requirement {
        Requirement {
            clauses: vec![clause],
        }
    }

    fn is_always(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The single most selective clause.
    fn best_clause(&self) -> Option<&Clause> {
        self.clauses.iter().max_by_key(|c| selectivity(c))
    }

    /// Conjunction: the most selective clauses of all operands.
    fn and(requirements: impl IntoIterator<Item = Requirement>) -> Requirement {
        let mut clauses: Vec<Clause> = requirements.into_iter().flat_map(|r| r.clauses).collect();
        clauses.sort_by_key(|c| std::cmp::Reverse(selectivity(c)));
        clauses.truncate(MAX_CLAUSES);
        Requirement { clauses }
    }

    /// Disjunction: one clause, the union of each operand's best clause.
    fn or(requirements: impl IntoIterator<Item = Requirement>) -> Requirement {
        let mut union = Vec::new();
        for requirement in requirements {
            match requirement.best_clause() {
                Some(clause) => union.extend(clause.iter().cloned()),
                None => return Requirement::always(),
            }
        }
        if union.is_empty() {
            Requirement::always()
        } else {
            Requirement::clause(union)
        }
    }
}

fn item_requirement(item: &CompiledItem) -> Requirement {
    let scope = match &item.field {
        Some(field) => Scope::Field(field.name().to_owned()),
        None => Scope::AnyValue,
    };
    let presence = || match &scope {
        Scope::Field(_) => Requirement::clause(vec![Trigger {
            scope: scope.clone(),
            needle: None,
        }]),
        // Every event has some value.
        Scope::AnyValue => Requirement::always(),
    };
    let needle = |n: &str| Trigger {
        scope: scope.clone(),
        needle: Some(n.to_owned()),
    };
    match &item.test {
        ItemTest::Exists(true) | ItemTest::FieldRef { .. } => presence(),
        ItemTest::Exists(false) => Requirement::always(),
        ItemTest::Values {
            matches_absent: true,
            ..
        } => Requirement::always(),
        ItemTest::Values {
            all: true,
            matchers,
            ..
        } => {
            // Every value must match: each literal is a clause of its own.
            let clauses: Vec<Requirement> = matchers
                .iter()
                .filter_map(|m| m.needle())
                .map(|n| Requirement::clause(vec![needle(n)]))
                .collect();
            if clauses.is_empty() {
                presence()
            } else {
                Requirement::and(clauses)
            }
        }
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
                    let triggers: Clause = own
                        .into_iter()
                        .chain(grouped.map(String::as_str))
                        .map(needle)
                        .collect();
                    if triggers.is_empty() {
                        presence()
                    } else {
                        Requirement::clause(triggers)
                    }
                }
                None => presence(),
            }
        }
    }
}

fn identifier_requirement(identifier: &CompiledIdentifier) -> Requirement {
    let mut selections = identifier
        .selections
        .iter()
        .map(|items| Requirement::and(items.iter().map(item_requirement)));
    if identifier.selections.len() == 1 {
        selections.next().unwrap_or_default()
    } else {
        Requirement::or(selections)
    }
}

fn condition_requirement(node: &CondNode, identifiers: &[Requirement]) -> Requirement {
    match node {
        CondNode::Identifier(i) => identifiers[*i].clone(),
        CondNode::Not(_) => Requirement::always(),
        CondNode::And(nodes) => {
            Requirement::and(nodes.iter().map(|n| condition_requirement(n, identifiers)))
        }
        CondNode::Or(nodes) => {
            Requirement::or(nodes.iter().map(|n| condition_requirement(n, identifiers)))
        }
        CondNode::AtLeast(_, ids) => Requirement::or(ids.iter().map(|i| identifiers[*i].clone())),
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

/// The triggers of one scope.
#[derive(Debug, Default)]
struct ScopeEntry {
    /// Clauses that hold when the field is present at all.
    on_presence: Vec<u32>,
    /// Distinct needles and, per needle, the clauses it makes hold.
    needles: Vec<String>,
    needle_clauses: Vec<Vec<u32>>,
    /// The needles followed by the keyword needles: pattern ids past
    /// `needles.len()` are keyword needles.
    automaton: Option<AhoCorasick>,
}

/// The field/literal index over a compiled rule list.
#[derive(Debug, Default)]
pub(crate) struct RuleIndex {
    /// Per field: its own needles plus the keyword needles, so that one
    /// automaton scans each value once. Fast hashing: looked up per field.
    fields: FxHashMap<String, ScopeEntry>,
    any_value: ScopeEntry,
    /// Rules evaluated for every event.
    always: Vec<u32>,
    /// Per clause: its rule.
    clause_rule: Vec<u32>,
    /// Per rule: how many clauses must hold (0 for always-evaluated rules).
    clauses_needed: Vec<u8>,
}

/// Per-evaluation buffers of the index.
#[derive(Debug, Default)]
pub(crate) struct IndexScratch {
    path: String,
    text: String,
    lower: String,
    clauses_hit: Vec<u64>,
    rule_hits: Vec<u8>,
    /// Clauses marked for the last event: only these are reset.
    touched: Vec<u32>,
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

/// Marks clauses as they hold and rules as their last clause holds.
struct Marker<'a> {
    index: &'a RuleIndex,
    clauses_hit: &'a mut [u64],
    rule_hits: &'a mut [u8],
    touched: &'a mut Vec<u32>,
    candidates: &'a mut CandidateSet,
}

impl Marker<'_> {
    fn hit(&mut self, clauses: &[u32]) {
        for &clause in clauses {
            let (word, bit) = (clause as usize / 64, 1u64 << (clause % 64));
            if self.clauses_hit[word] & bit != 0 {
                continue;
            }
            self.clauses_hit[word] |= bit;
            self.touched.push(clause);
            let rule = self.index.clause_rule[clause as usize];
            let hits = &mut self.rule_hits[rule as usize];
            *hits += 1;
            if *hits == self.index.clauses_needed[rule as usize] {
                self.candidates.insert(rule);
            }
        }
    }
}

impl RuleIndex {
    /// Builds the index for `rules` (indices are positions in the slice).
    pub(crate) fn build(rules: &[CompiledRule]) -> RuleIndex {
        let mut index = RuleIndex {
            clauses_needed: vec![0; rules.len()],
            ..RuleIndex::default()
        };
        let mut needle_ids: HashMap<(Scope, String), usize> = HashMap::new();
        for (rule_id, rule) in rules.iter().enumerate() {
            let requirement = rule_requirement(rule);
            if requirement.is_always() {
                index.always.push(rule_id as u32);
                continue;
            }
            index.clauses_needed[rule_id] = requirement.clauses.len() as u8;
            for clause in requirement.clauses {
                let clause_id = index.clause_rule.len() as u32;
                index.clause_rule.push(rule_id as u32);
                for trigger in clause {
                    let entry = match &trigger.scope {
                        Scope::Field(name) => index.fields.entry(name.clone()).or_default(),
                        Scope::AnyValue => &mut index.any_value,
                    };
                    match trigger.needle {
                        None => push_unique(&mut entry.on_presence, clause_id),
                        Some(needle) => {
                            let id = *needle_ids
                                .entry((trigger.scope, needle.clone()))
                                .or_insert_with(|| {
                                    entry.needles.push(needle);
                                    entry.needle_clauses.push(Vec::new());
                                    entry.needles.len() - 1
                                });
                            push_unique(&mut entry.needle_clauses[id], clause_id);
                        }
                    }
                }
            }
        }
        let keywords = &index.any_value.needles;
        for entry in index.fields.values_mut() {
            if !entry.needles.is_empty() || !keywords.is_empty() {
                let all: Vec<&String> = entry.needles.iter().chain(keywords).collect();
                entry.automaton = Some(build_automaton(&all));
            }
        }
        if !keywords.is_empty() {
            index.any_value.automaton = Some(build_automaton(keywords));
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
        let IndexScratch {
            path,
            text,
            lower,
            clauses_hit,
            rule_hits,
            touched,
        } = scratch;
        if clauses_hit.len() != self.clause_rule.len().div_ceil(64) || rule_hits.len() != rule_count
        {
            // First use, or another engine: size and clear everything.
            clauses_hit.clear();
            clauses_hit.resize(self.clause_rule.len().div_ceil(64), 0);
            rule_hits.clear();
            rule_hits.resize(rule_count, 0);
        } else {
            for clause in touched.drain(..) {
                clauses_hit[clause as usize / 64] = 0;
                rule_hits[self.clause_rule[clause as usize] as usize] = 0;
            }
        }
        touched.clear();
        let mut walk = Walk {
            index: self,
            marker: Marker {
                index: self,
                clauses_hit,
                rule_hits,
                touched,
                candidates,
            },
            path,
            text,
            lower,
        };
        if let Value::Object(map) = event {
            walk.path.clear();
            for (key, value) in map {
                walk.visit(key, value);
            }
        }
    }
}

fn build_automaton<S: AsRef<[u8]>>(needles: &[S]) -> AhoCorasick {
    let builder = || {
        let mut builder = AhoCorasick::builder();
        builder
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard);
        builder
    };
    // A DFA scans fastest; very large needle sets fall back to the default.
    builder()
        .kind(Some(AhoCorasickKind::DFA))
        .build(needles)
        .or_else(|_| builder().build(needles))
        .expect("literal needles always build an automaton")
}

/// One walk over an event's fields.
struct Walk<'a> {
    index: &'a RuleIndex,
    marker: Marker<'a>,
    path: &'a mut String,
    text: &'a mut String,
    lower: &'a mut String,
}

impl Walk<'_> {
    fn visit(&mut self, key: &str, value: &Value) {
        let index = self.index;
        let parent_len = self.path.len();
        // Top-level fields are looked up by their key, without copying it.
        let entry = if parent_len == 0 {
            index.fields.get(key)
        } else {
            self.path.push('.');
            self.path.push_str(key);
            index.fields.get(self.path.as_str())
        };
        if let Some(entry) = entry {
            self.marker.hit(&entry.on_presence);
        }
        self.scan_value(entry, value);
        let nested = match value {
            Value::Object(map) => !map.is_empty(),
            Value::Array(items) => items.iter().any(Value::is_object),
            _ => false,
        };
        if nested {
            if parent_len == 0 {
                self.path.push_str(key);
            }
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        self.visit(key, child);
                    }
                }
                Value::Array(items) => {
                    for map in items.iter().filter_map(Value::as_object) {
                        for (key, child) in map {
                            self.visit(key, child);
                        }
                    }
                }
                _ => {}
            }
        }
        self.path.truncate(parent_len);
    }

    /// Runs the field's automaton and the keyword automaton over a value's
    /// scalars (array elements included).
    fn scan_value(&mut self, entry: Option<&ScopeEntry>, value: &Value) {
        let haystack: &str = match value {
            Value::String(s) => s,
            Value::Number(n) => {
                use std::fmt::Write;
                self.text.clear();
                let _ = write!(self.text, "{n}");
                self.text.as_str()
            }
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::Array(items) => {
                for item in items {
                    if !item.is_object() {
                        self.scan_value(entry, item);
                    }
                }
                return;
            }
            _ => return,
        };
        // The automata fold ASCII case only; fold the rest by lowercasing.
        let haystack = if !haystack.is_ascii() && needs_lowercasing(haystack) {
            lowercase_into(haystack, self.lower);
            self.lower.as_str()
        } else {
            haystack
        };
        // A field's automaton holds the keyword needles too; a field
        // without one is scanned for keywords alone.
        let (entry, keyword_offset) = match entry {
            Some(entry) => (entry, entry.needles.len()),
            None => (&self.index.any_value, 0),
        };
        // Most values hold no needle: a plain search (with the automaton's
        // prefilter) rules that out. Otherwise every match ends at or after
        // the first one found, so the overlapping search that reports every
        // needle starts one needle length before its end.
        let Some(automaton) = &entry.automaton else {
            return;
        };
        let Some(first) = automaton.find(haystack) else {
            return;
        };
        let resume = first.end().saturating_sub(automaton.max_pattern_len());
        let rest = Input::new(haystack).span(resume..haystack.len());
        let keywords = &self.index.any_value;
        for hit in automaton.find_overlapping_iter(rest) {
            let pattern = hit.pattern().as_usize();
            let clauses = if pattern < keyword_offset {
                &entry.needle_clauses[pattern]
            } else {
                &keywords.needle_clauses[pattern - keyword_offset]
            };
            self.marker.hit(clauses);
        }
    }
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}

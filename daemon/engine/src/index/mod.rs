//! The prefilter: an index from fields and literals to the rules that need them.
//!
//! For every rule we derive a *necessary* condition in conjunctive form
//! ([`requirement`]): a few clauses that must all hold, each a set of
//! triggers of which at least one must hold. A trigger is a field that must be
//! present, or a literal (lowercased) that must occur in one of the field's
//! values (or, for keyword searches, in any value of the event). One walk over
//! the event marks the clauses that hold; a rule whose clauses all hold is a
//! candidate, and only candidates are evaluated in full. Rules for which no
//! clause can be derived (a negation at the top, a test that holds on an
//! absent field) are always evaluated.
//!
//! Where the literals live is the index's strategy ([`PrefilterOptions`]):
//! by default one case-insensitive Aho-Corasick automaton per field plus one
//! for keyword literals, each a contiguous NFA, which keeps memory and build
//! time linear in the literals (a DFA per field took 1.5 GB for the SigmaHQ
//! corpus); or one automaton
//! across every field (`cross_rule_automaton`); either optionally gated by a
//! per-field Bloom filter ([`bloom`]).
//!
//! The index may only over-approximate: a rule it leaves out must not be able
//! to match. The differential tests against the unindexed path
//! (`tests/differential.rs`, `tests/proptest.rs`) check that for every
//! strategy.

mod bloom;
mod requirement;

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::compile::CompiledRule;
use crate::matcher::{lowercase_into, needs_lowercasing};
use bloom::{Bloom, BloomPlan};
use requirement::{Scope, rule_requirement};

/// How the prefilter finds literals in event values. Every strategy selects
/// the same candidates up to over-approximation; they differ in speed,
/// build time and memory (see `docs/performance.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefilterOptions {
    /// One automaton over the literals of every field (`--cross-rule-ac`)
    /// instead of one per field.
    pub cross_rule_automaton: bool,
    /// Gate each field's scan with a Bloom filter over its literals' first
    /// bytes, within this many bytes per index (`--bloom-prefilter`,
    /// `--bloom-max-bytes`).
    pub bloom_max_bytes: Option<usize>,
}

/// The literals of one scope (a field, or keywords) and the clauses each
/// one makes hold, in automaton pattern order.
#[derive(Debug)]
struct NeedleSet {
    automaton: AhoCorasick,
    clauses: Vec<Vec<u32>>,
}

/// What the index knows of one field.
#[derive(Debug, Default)]
struct FieldEntry {
    /// Clauses that hold when the field is present at all.
    on_presence: Vec<u32>,
    /// The field's own literals (per-field strategy).
    needles: Option<NeedleSet>,
    /// The field's scope id in the shared automaton (cross-rule strategy).
    scope: u32,
    /// True when the field has literals of its own.
    has_needles: bool,
    bloom: Option<Bloom>,
}

/// Cross-rule strategy: one automaton over every distinct literal; a
/// literal's hits say which scope (field id or [`KEYWORD_SCOPE`]) makes
/// which clauses hold.
#[derive(Debug)]
struct SharedNeedles {
    automaton: AhoCorasick,
    hits: Vec<Vec<(u32, Vec<u32>)>>,
}

const KEYWORD_SCOPE: u32 = u32::MAX;

/// The field/literal index over a list of rules.
#[derive(Debug, Default)]
pub(crate) struct RuleIndex {
    /// Fast hashing: looked up per field of every event.
    fields: FxHashMap<String, FieldEntry>,
    /// Keyword literals (per-field strategy).
    keywords: Option<NeedleSet>,
    keyword_bloom: Option<Bloom>,
    has_keywords: bool,
    shared: Option<SharedNeedles>,
    /// Rules evaluated for every event.
    always: Vec<u32>,
    /// Per clause: its rule.
    clause_rule: Vec<u32>,
    /// Per rule: how many clauses must hold (0 for always-evaluated rules).
    clauses_needed: Vec<u8>,
}

/// Per-evaluation buffers of the index; usable with any index.
#[derive(Debug, Default)]
pub(crate) struct IndexScratch {
    path: String,
    text: String,
    lower: String,
    clauses_hit: Vec<u64>,
    rule_hits: Vec<u8>,
    /// Clauses (and their rules) marked for the last event: only these are
    /// reset, whichever index marked them.
    touched: Vec<(u32, u32)>,
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
    touched: &'a mut Vec<(u32, u32)>,
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
            let rule = self.index.clause_rule[clause as usize];
            self.touched.push((clause, rule));
            let hits = &mut self.rule_hits[rule as usize];
            *hits += 1;
            if *hits == self.index.clauses_needed[rule as usize] {
                self.candidates.insert(rule);
            }
        }
    }
}

/// A scope's literals and, per literal, the clauses it makes hold.
type ScopeLiterals = (Vec<String>, Vec<Vec<u32>>);

/// Collects the literals of every scope while an index is built.
#[derive(Default)]
struct Collected {
    scopes: HashMap<Scope, ScopeLiterals>,
    ids: HashMap<(Scope, String), usize>,
}

impl Collected {
    fn add(&mut self, scope: Scope, needle: String, clause: u32) {
        let (needles, clauses) = self.scopes.entry(scope.clone()).or_default();
        let id = *self.ids.entry((scope, needle.clone())).or_insert_with(|| {
            needles.push(needle);
            clauses.push(Vec::new());
            needles.len() - 1
        });
        push_unique(&mut clauses[id], clause);
    }
}

impl RuleIndex {
    /// Builds the index for `rules`; index `i` of the slice is rule `i` of
    /// the candidates the index yields.
    pub(crate) fn build(rules: &[&CompiledRule], options: &PrefilterOptions) -> RuleIndex {
        let mut index = RuleIndex {
            clauses_needed: vec![0; rules.len()],
            ..RuleIndex::default()
        };
        let mut collected = Collected::default();
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
                    match trigger.needle {
                        None => {
                            if let Scope::Field(name) = &trigger.scope {
                                let entry = index.fields.entry(name.clone()).or_default();
                                push_unique(&mut entry.on_presence, clause_id);
                            }
                        }
                        Some(needle) => collected.add(trigger.scope, needle, clause_id),
                    }
                }
            }
        }
        index.place_needles(collected, options);
        index
    }

    /// Builds the automata (and Bloom filters) of the collected literals.
    fn place_needles(&mut self, collected: Collected, options: &PrefilterOptions) {
        let mut scopes: Vec<(Scope, ScopeLiterals)> = collected.scopes.into_iter().collect();
        // Deterministic layout, whatever the hash order.
        scopes.sort_by(|a, b| scope_order(&a.0).cmp(&scope_order(&b.0)));
        let mut blooms = options.bloom_max_bytes.map(BloomPlan::new);
        for (scope, (needles, _)) in &scopes {
            if let Some(plan) = &mut blooms {
                plan.request(scope.clone(), needles);
            }
        }
        let mut blooms = blooms.map(BloomPlan::build).unwrap_or_default();
        for (scope, (needles, _)) in &scopes {
            match scope {
                Scope::Field(name) => {
                    let entry = self.fields.entry(name.clone()).or_default();
                    entry.has_needles = !needles.is_empty();
                    entry.bloom = blooms.remove(scope);
                }
                Scope::AnyValue => {
                    self.has_keywords = !needles.is_empty();
                    self.keyword_bloom = blooms.remove(scope);
                }
            }
        }
        if options.cross_rule_automaton {
            self.share_needles(scopes);
            return;
        }
        for (scope, (needles, clauses)) in scopes {
            let set = NeedleSet {
                automaton: build_automaton(&needles),
                clauses,
            };
            match scope {
                Scope::Field(name) => {
                    self.fields.entry(name).or_default().needles = Some(set);
                }
                Scope::AnyValue => self.keywords = Some(set),
            }
        }
    }

    /// Cross-rule strategy: one automaton over the distinct literals of all
    /// scopes.
    fn share_needles(&mut self, scopes: Vec<(Scope, ScopeLiterals)>) {
        for (scope, entry) in self.fields.values_mut().enumerate() {
            entry.scope = scope as u32;
        }
        let mut patterns: Vec<String> = Vec::new();
        let mut hits: Vec<Vec<(u32, Vec<u32>)>> = Vec::new();
        let mut pattern_ids: HashMap<String, usize> = HashMap::new();
        for (scope, (needles, clauses)) in scopes {
            let scope_id = match &scope {
                Scope::Field(name) => self.fields[name].scope,
                Scope::AnyValue => KEYWORD_SCOPE,
            };
            for (needle, clauses) in needles.into_iter().zip(clauses) {
                let id = *pattern_ids.entry(needle.clone()).or_insert_with(|| {
                    patterns.push(needle);
                    hits.push(Vec::new());
                    patterns.len() - 1
                });
                hits[id].push((scope_id, clauses));
            }
        }
        if !patterns.is_empty() {
            self.shared = Some(SharedNeedles {
                automaton: build_automaton(&patterns),
                hits,
            });
        }
    }

    /// Number of rules evaluated for every event.
    pub(crate) fn always_count(&self) -> usize {
        self.always.len()
    }

    /// Bytes held by the automata and Bloom filters (for `docs/performance.md`).
    pub(crate) fn memory_usage(&self) -> usize {
        let set = |s: &Option<NeedleSet>| s.as_ref().map_or(0, |s| s.automaton.memory_usage());
        let bloom = |b: &Option<Bloom>| b.as_ref().map_or(0, Bloom::memory_usage);
        self.fields
            .values()
            .map(|e| set(&e.needles) + bloom(&e.bloom))
            .sum::<usize>()
            + set(&self.keywords)
            + bloom(&self.keyword_bloom)
            + self
                .shared
                .as_ref()
                .map_or(0, |s| s.automaton.memory_usage())
    }

    /// Marks in `candidates` every rule of the index the event may match.
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
        for (clause, rule) in touched.drain(..) {
            clauses_hit[clause as usize / 64] = 0;
            rule_hits[rule as usize] = 0;
        }
        let words = self.clause_rule.len().div_ceil(64);
        if clauses_hit.len() < words {
            clauses_hit.resize(words, 0);
        }
        if rule_hits.len() < rule_count {
            rule_hits.resize(rule_count, 0);
        }
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

fn scope_order(scope: &Scope) -> (u8, &str) {
    match scope {
        Scope::Field(name) => (0, name),
        Scope::AnyValue => (1, ""),
    }
}

/// A case-insensitive automaton reporting every literal (overlapping).
fn build_automaton<S: AsRef<[u8]>>(needles: &[S]) -> AhoCorasick {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        // Measured on the whole SigmaHQ corpus (docs/performance.md): a
        // DFA per field took 1.5 GB and 6 s to build; the contiguous NFA
        // scans as fast as the crate's automatic choice (DFAs for small
        // sets) within the noise and holds 10 MB less over a Windows stream.
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(needles)
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

    /// Looks for the field's literals and the keyword literals in a value's
    /// scalars (array elements included).
    fn scan_value(&mut self, entry: Option<&FieldEntry>, value: &Value) {
        let field_needles = entry.is_some_and(|e| e.has_needles);
        if !field_needles && !self.index.has_keywords {
            return;
        }
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
        let passes = |bloom: &Option<Bloom>| bloom.as_ref().is_none_or(|b| b.may_match(haystack));
        let scan_field = field_needles && entry.is_some_and(|e| passes(&e.bloom));
        let scan_keywords = self.index.has_keywords && passes(&self.index.keyword_bloom);
        let index = self.index;
        if let Some(shared) = &index.shared {
            if scan_field || scan_keywords {
                let scope = entry.map(|e| e.scope);
                for pattern in overlapping(&shared.automaton, haystack) {
                    for (hit_scope, clauses) in &shared.hits[pattern] {
                        if Some(*hit_scope) == scope || *hit_scope == KEYWORD_SCOPE {
                            self.marker.hit(clauses);
                        }
                    }
                }
            }
            return;
        }
        let field_set = entry
            .and_then(|e| e.needles.as_ref())
            .filter(|_| scan_field);
        let keyword_set = index.keywords.as_ref().filter(|_| scan_keywords);
        for set in field_set.into_iter().chain(keyword_set) {
            for pattern in overlapping(&set.automaton, haystack) {
                self.marker.hit(&set.clauses[pattern]);
            }
        }
    }
}

/// Every pattern that occurs in `haystack`, with repeats.
///
/// Most values hold no literal: a plain search (with the automaton's own
/// prefilter) rules that out. Otherwise every match ends at or after the
/// first one found, so the overlapping search that reports every literal
/// starts one literal length before its end.
fn overlapping<'h>(
    automaton: &'h AhoCorasick,
    haystack: &'h str,
) -> impl Iterator<Item = usize> + 'h {
    let first = automaton.find(haystack);
    first.into_iter().flat_map(move |first| {
        let resume = first.end().saturating_sub(automaton.max_pattern_len());
        let rest = Input::new(haystack).span(resume..haystack.len());
        automaton
            .find_overlapping_iter(rest)
            .map(|hit| hit.pattern().as_usize())
    })
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}

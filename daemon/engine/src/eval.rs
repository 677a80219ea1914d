//! The engine: a compiled rule set evaluated against events.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::compile::{
    CompiledItem, CompiledRule, MatchBuffers, Placeholders, RuleInfo, compile_rule,
};
use crate::error::RuleError;
use crate::index::{CandidateSet, IndexScratch, RuleIndex};
use crate::parser::RuleSet;
use crate::rule::{FilterRule, SigmaRule};

/// A rule that matched an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// The rule that matched (its id and name, for correlations to refer to).
    #[serde(skip)]
    pub rule: Arc<RuleInfo>,
    /// The rule's title.
    pub rule_title: String,
    /// The rule's id.
    pub rule_id: Option<String>,
    /// The rule's level.
    pub level: Option<String>,
    /// The rule's tags.
    pub tags: Vec<String>,
    /// The search identifiers that held.
    pub matched_selections: Vec<String>,
    /// The fields (and their values) that made those identifiers hold.
    pub matched_fields: Vec<MatchedField>,
}

impl Detection {
    /// The output record: the detection, with the event when given.
    pub fn record<'a>(&'a self, event: Option<&'a Value>) -> DetectionRecord<'a> {
        DetectionRecord {
            detection: self,
            event,
        }
    }
}

/// A detection as written to sinks: its fields, then `event` when included.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionRecord<'a> {
    #[serde(flatten)]
    detection: &'a Detection,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a Value>,
}

/// A field value that contributed to a detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchedField {
    /// The field name as written in the rule (for keywords: the event's path).
    pub field: String,
    /// The event's value.
    pub value: Value,
}

/// Reusable per-thread buffers: evaluation with a warm scratch does not
/// allocate unless a rule matches.
#[derive(Debug, Default)]
pub struct Scratch {
    candidates: CandidateSet,
    index: IndexScratch,
    buffers: MatchBuffers,
}

/// A compiled rule set, built once and evaluated many times. It is immutable
/// and `Sync`: share it between threads and give each thread a [`Scratch`].
#[derive(Debug, Default)]
pub struct Engine {
    rules: Vec<CompiledRule>,
    index: RuleIndex,
}

/// Options for compiling a rule set.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Values for `%name%` placeholders of the `expand` modifier.
    pub placeholders: Placeholders,
}

impl Engine {
    /// Compiles every detection rule of `rule_set` (with the filters that
    /// name them). Rules that fail to compile are left out and reported.
    pub fn compile(rule_set: &RuleSet) -> (Engine, Vec<RuleError>) {
        Engine::compile_with(rule_set, &CompileOptions::default())
    }

    /// [`Engine::compile`] with options.
    pub fn compile_with(rule_set: &RuleSet, options: &CompileOptions) -> (Engine, Vec<RuleError>) {
        let mut rules = Vec::with_capacity(rule_set.rules.len());
        let mut errors = Vec::new();
        for rule in &rule_set.rules {
            let filters = filters_for(rule, &rule_set.filters);
            match compile_rule(rules.len(), rule, &filters, &options.placeholders) {
                Ok(compiled) => rules.push(compiled),
                Err(reason) => errors.push(RuleError::new(
                    &rule.meta.origin.file,
                    rule.meta.label(),
                    reason,
                )),
            }
        }
        let index = RuleIndex::build(&rules);
        (Engine { rules, index }, errors)
    }

    /// Number of compiled detection rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of rules the prefilter cannot narrow, evaluated for every event.
    pub fn unindexed_rule_count(&self) -> usize {
        self.index.always_count()
    }

    /// The compiled rules' output-facing facts, in evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<RuleInfo>> {
        self.rules.iter().map(CompiledRule::info)
    }

    /// A scratch sized for this engine.
    pub fn new_scratch(&self) -> Scratch {
        Scratch::default()
    }

    /// Evaluates an event; convenience over [`Engine::evaluate_into`].
    pub fn evaluate(&self, event: &Value) -> Vec<Detection> {
        let mut out = Vec::new();
        self.evaluate_into(event, &mut self.new_scratch(), &mut out);
        out
    }

    /// Evaluates an event, appending a [`Detection`] per matching rule (in
    /// rule order) to `out`. Only the rules the prefilter selects are
    /// evaluated in full.
    pub fn evaluate_into(&self, event: &Value, scratch: &mut Scratch, out: &mut Vec<Detection>) {
        let Scratch {
            candidates,
            index,
            buffers,
        } = scratch;
        self.index
            .candidates(event, self.rules.len(), candidates, index);
        for rule_index in candidates.iter() {
            let rule = &self.rules[rule_index];
            if rule.matches(event, buffers) {
                out.push(explain(rule, event, buffers));
            }
        }
    }

    /// The rules (by index) the prefilter selects for an event, for tuning
    /// and benchmarks; evaluation does this itself.
    pub fn candidate_rules(&self, event: &Value, scratch: &mut Scratch) -> Vec<usize> {
        self.index.candidates(
            event,
            self.rules.len(),
            &mut scratch.candidates,
            &mut scratch.index,
        );
        scratch.candidates.iter().collect()
    }

    /// The reference path: evaluates every rule in full, without the
    /// prefilter. Slow; it exists to check the indexed path against.
    pub fn evaluate_unindexed(&self, event: &Value) -> Vec<Detection> {
        let mut buffers = MatchBuffers::default();
        let mut out = Vec::new();
        for rule in &self.rules {
            if rule.matches(event, &mut buffers) {
                out.push(explain(rule, event, &mut buffers));
            }
        }
        out
    }
}

fn filters_for<'f>(rule: &SigmaRule, filters: &'f [FilterRule]) -> Vec<&'f FilterRule> {
    filters
        .iter()
        .filter(|filter| {
            if filter.rules.is_empty() {
                logsource_covers(filter, rule)
            } else {
                filter.rules.iter().any(|r| rule.meta.is_referenced_by(r))
            }
        })
        .collect()
}

/// A filter without a rule list applies to rules of the log source it names.
fn logsource_covers(filter: &FilterRule, rule: &SigmaRule) -> bool {
    let want = &filter.meta.logsource;
    let have = &rule.meta.logsource;
    let field_ok = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    field_ok(&want.category, &have.category)
        && field_ok(&want.product, &have.product)
        && field_ok(&want.service, &have.service)
}

/// Builds the detection record of a matched rule: which of its own
/// identifiers held, and the field values that made them hold.
fn explain(rule: &CompiledRule, event: &Value, buffers: &mut MatchBuffers) -> Detection {
    let mut matched_selections = Vec::new();
    let mut matched_fields = Vec::new();
    for identifier in &rule.identifiers[..rule.own_identifiers] {
        let Some(items) = identifier
            .selections
            .iter()
            .find(|items| items.iter().all(|item| item.matches(event, buffers)))
        else {
            continue;
        };
        matched_selections.push(identifier.name.clone());
        for item in items {
            if let Some(field) = matched_field(item, event, buffers)
                && !matched_fields.contains(&field)
            {
                matched_fields.push(field);
            }
        }
    }
    let info = &rule.info;
    Detection {
        rule: Arc::clone(info),
        rule_title: info.title.clone(),
        rule_id: info.id.clone(),
        level: info.level.clone(),
        tags: info.tags.clone(),
        matched_selections,
        matched_fields,
    }
}

fn matched_field(
    item: &CompiledItem,
    event: &Value,
    buffers: &mut MatchBuffers,
) -> Option<MatchedField> {
    let value = item.first_match(event, buffers)?.clone();
    let field = match &item.field {
        Some(path) => path.name().to_owned(),
        None => keyword_path(event, &value).unwrap_or_default(),
    };
    Some(MatchedField { field, value })
}

/// The dotted path of the first leaf equal to `value`, for keyword matches.
fn keyword_path(event: &Value, value: &Value) -> Option<String> {
    fn walk(node: &Value, path: &mut String, target: &Value) -> Option<String> {
        match node {
            Value::Object(map) => {
                for (key, child) in map {
                    let len = path.len();
                    if len > 0 {
                        path.push('.');
                    }
                    path.push_str(key);
                    if let Some(found) = walk(child, path, target) {
                        return Some(found);
                    }
                    path.truncate(len);
                }
                None
            }
            Value::Array(items) => items.iter().find_map(|item| walk(item, path, target)),
            leaf => (leaf == target).then(|| path.clone()),
        }
    }
    walk(event, &mut String::new(), value)
}

//! The engine: a compiled rule set evaluated against events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;

use crate::compile::{
    CompiledItem, CompiledRule, ItemOptions, MatchBuffers, Placeholders, RuleInfo,
    UndefinedPlaceholders, compile_rule,
};
use crate::error::RuleError;
use crate::index::{CandidateSet, IndexScratch, PrefilterOptions};
use crate::parser::RuleSet;
use crate::routes::{MAX_ROUTES, Route, RouteSource, Routes};
use crate::routing::{RouteKey, Router, Routing, RuleRoute, Vocabulary};
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
/// allocate unless a rule matches or a route is met for the first time.
#[derive(Debug, Default)]
pub struct Scratch {
    candidates: CandidateSet,
    index: IndexScratch,
    buffers: MatchBuffers,
    /// The routes this thread used, so that the hot path takes no lock.
    routes: FxHashMap<RouteKey, Arc<Route>>,
    /// The engine `routes` belong to.
    engine: u64,
    key: RouteKey,
    lowercase: String,
}

/// What routing did with one event (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteStats<'a> {
    /// The event's logsource as routing saw it, e.g.
    /// `product=windows,service=sysmon,category=process_creation`;
    /// `unknown` when nothing was known, `unrouted` with routing off,
    /// `overflow` past the route limit.
    pub logsource: &'a str,
    /// Rules skipped because their logsource cannot apply.
    pub skipped_rules: usize,
}

/// A compiled rule set, built once and evaluated many times. It is `Sync`:
/// share it between threads and give each thread a [`Scratch`].
///
/// Prefilter indexes are built per logsource route on first use (see
/// `routes.rs`), so compiling builds no index at all.
#[derive(Debug, Default)]
pub struct Engine {
    rules: Vec<CompiledRule>,
    rule_routes: Vec<RuleRoute>,
    vocabulary: Vocabulary,
    router: Option<Router>,
    prefilter: PrefilterOptions,
    routes: Routes,
    /// Tells scratches of different engines apart.
    id: u64,
}

/// Options for compiling a rule set.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Values for `%name%` placeholders of the `expand` modifier.
    pub placeholders: Placeholders,
    /// What to do with a placeholder no pipeline defines.
    pub undefined_placeholders: UndefinedPlaceholders,
    /// Logsource routing (on by default).
    pub routing: Routing,
    /// The prefilter's strategy.
    pub prefilter: PrefilterOptions,
    /// Compile the reference semantics: every value its own matcher, no
    /// shared automata. Slow; differential tests compare the optimized
    /// engine with a reference engine evaluated by
    /// [`Engine::evaluate_unindexed`].
    pub reference: bool,
}

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

impl Engine {
    /// Compiles every detection rule of `rule_set` (with the filters that
    /// name them). Rules that fail to compile are left out and reported.
    pub fn compile(rule_set: &RuleSet) -> (Engine, Vec<RuleError>) {
        Engine::compile_with(rule_set, &CompileOptions::default())
    }

    /// [`Engine::compile`] with options.
    pub fn compile_with(rule_set: &RuleSet, options: &CompileOptions) -> (Engine, Vec<RuleError>) {
        let mut rules = Vec::with_capacity(rule_set.rules.len());
        let mut logsources = Vec::with_capacity(rule_set.rules.len());
        let mut errors = Vec::new();
        let item_options = ItemOptions {
            values: &options.placeholders,
            undefined: options.undefined_placeholders,
            group_literals: !options.reference,
        };
        for rule in &rule_set.rules {
            let filters = filters_for(rule, &rule_set.filters);
            match compile_rule(rules.len(), rule, &filters, &item_options) {
                Ok(compiled) => {
                    rules.push(compiled);
                    logsources.push(&rule.meta.logsource);
                }
                Err(reason) => errors.push(RuleError::new(
                    &rule.meta.origin.file,
                    rule.meta.label(),
                    reason,
                )),
            }
        }
        let vocabulary = Vocabulary::new(logsources.iter().copied(), &options.routing);
        let rule_routes = logsources
            .iter()
            .map(|logsource| vocabulary.rule_route(logsource))
            .collect();
        let router = options
            .routing
            .enabled
            .then(|| Router::new(&options.routing, &vocabulary));
        let engine = Engine {
            rules,
            rule_routes,
            vocabulary,
            router,
            prefilter: options.prefilter,
            routes: Routes::default(),
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
        };
        (engine, errors)
    }

    /// Number of compiled detection rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of rules the prefilter cannot narrow, evaluated for every
    /// event (of the index over every rule, which this builds).
    pub fn unindexed_rule_count(&self) -> usize {
        self.route(None).index.always_count()
    }

    /// Number of route indexes built so far.
    pub fn routes_built(&self) -> usize {
        self.routes.built()
    }

    /// Bytes held by the automata and filters of the indexes built so far.
    pub fn index_memory_usage(&self) -> usize {
        self.routes.memory_usage()
    }

    /// The compiled rules' output-facing facts, in evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<RuleInfo>> {
        self.rules.iter().map(CompiledRule::info)
    }

    /// A scratch for this engine.
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
    /// rule order) to `out`. Only the rules the event's logsource admits and
    /// the prefilter selects are evaluated in full.
    pub fn evaluate_into<'s>(
        &self,
        event: &Value,
        scratch: &'s mut Scratch,
        out: &mut Vec<Detection>,
    ) -> RouteStats<'s> {
        let Scratch {
            candidates,
            index,
            buffers,
            routes,
            engine,
            key,
            lowercase,
        } = scratch;
        let route = self.route_in(event, routes, engine, key, lowercase);
        route
            .index
            .candidates(event, route.rule_count(self.rules.len()), candidates, index);
        let mut skipped_rules = route.skipped_rules;
        for local in candidates.iter() {
            let rule_index = route.rule(local);
            if !route.admits(rule_index, &self.rule_routes, key) {
                skipped_rules += 1;
                continue;
            }
            let rule = &self.rules[rule_index];
            if rule.matches(event, buffers) {
                out.push(explain(rule, event, buffers));
            }
        }
        RouteStats {
            logsource: &route.label,
            skipped_rules,
        }
    }

    /// The route of `event`, from this thread's routes (`routes`, kept for
    /// the engine `engine` names) or else the engine's (built on first use);
    /// leaves the event's route key in `key`.
    fn route_in<'c>(
        &self,
        event: &Value,
        routes: &'c mut FxHashMap<RouteKey, Arc<Route>>,
        engine: &mut u64,
        key: &mut RouteKey,
        lowercase: &mut String,
    ) -> &'c Route {
        if *engine != self.id || routes.len() > 2 * MAX_ROUTES {
            routes.clear();
            *engine = self.id;
        }
        match &self.router {
            Some(router) => router.route_key(event, &self.vocabulary, key, lowercase),
            None => key.clear(),
        }
        if !routes.contains_key(key.as_slice()) {
            let shared = self.route(Some(key.as_slice()));
            routes.insert(key.clone(), shared);
        }
        &routes[key.as_slice()]
    }

    /// The engine's route for a key; `None`, an empty key (routing off) or a
    /// key that knows nothing mean every rule.
    fn route(&self, key: Option<&[u16]>) -> Arc<Route> {
        let key = key.filter(|k| !k.is_empty() && !Vocabulary::knows_nothing(k));
        let source = RouteSource {
            rules: &self.rules,
            rule_routes: &self.rule_routes,
            vocabulary: &self.vocabulary,
            prefilter: &self.prefilter,
            routing: self.router.is_some(),
        };
        self.routes.get(key, &source)
    }

    /// The rules (by index) the prefilter selects for an event, after
    /// routing, for tuning and benchmarks; evaluation does this itself.
    pub fn candidate_rules(&self, event: &Value, scratch: &mut Scratch) -> Vec<usize> {
        let Scratch {
            candidates,
            index,
            routes,
            engine,
            key,
            lowercase,
            ..
        } = scratch;
        let route = self.route_in(event, routes, engine, key, lowercase);
        route
            .index
            .candidates(event, route.rule_count(self.rules.len()), candidates, index);
        candidates
            .iter()
            .map(|local| route.rule(local))
            .filter(|&rule| route.admits(rule, &self.rule_routes, key))
            .collect()
    }

    /// The reference path: evaluates every rule the event's logsource admits
    /// in full, without the prefilter. Slow; it exists to check the indexed
    /// path against.
    pub fn evaluate_unindexed(&self, event: &Value) -> Vec<Detection> {
        let mut key = RouteKey::new();
        if let Some(router) = &self.router {
            router.route_key(event, &self.vocabulary, &mut key, &mut String::new());
        }
        let mut buffers = MatchBuffers::default();
        let mut out = Vec::new();
        for (rule, route) in self.rules.iter().zip(&self.rule_routes) {
            if route.admits(&key) && rule.matches(event, &mut buffers) {
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

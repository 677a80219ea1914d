//! Per-route prefilter indexes, built on first use.
//!
//! A route is the set of rules an event's logsource admits
//! ([`crate::routing`]). Each distinct route key gets its own
//! [`RuleIndex`] over just those rules, so a Sysmon process-creation event
//! scans only the literals of rules that can apply to it. Indexes are built
//! when the first event of a route arrives, not at load: loading the whole
//! SigmaHQ corpus builds none, and a stream pays only for the routes it
//! has. An engine holds at most [`MAX_ROUTES`] indexes; events of further
//! routes use the index over every rule and skip inadmissible candidates
//! one by one.
//!
//! The shared table sits behind a mutex held only to find or insert an
//! entry; each evaluation thread keeps its own copy of the routes it used
//! in its [`Scratch`](crate::Scratch), so the hot path takes no lock.

use std::sync::{Arc, Mutex, OnceLock};

use rustc_hash::FxHashMap;

use crate::compile::CompiledRule;
use crate::index::{PrefilterOptions, RuleIndex};
use crate::routing::{RouteKey, RuleRoute, Vocabulary};

/// Routes beyond this many share the index over every rule.
pub(crate) const MAX_ROUTES: usize = 256;

/// One route: its rules and their index.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The engine's rule indices, ascending; `None` for every rule.
    pub(crate) members: Option<Vec<u32>>,
    /// Shared by every route with the same members.
    pub(crate) index: Arc<RuleIndex>,
    /// For metrics: the route key in words, and how many rules it skips.
    pub(crate) label: String,
    pub(crate) skipped_rules: usize,
    /// True for the overflow route: candidates are checked one by one.
    pub(crate) check_each: bool,
}

impl Route {
    /// Number of rules the route's index knows.
    pub(crate) fn rule_count(&self, total: usize) -> usize {
        self.members.as_ref().map_or(total, Vec::len)
    }

    /// The engine rule index of the route's `local` rule.
    pub(crate) fn rule(&self, local: usize) -> usize {
        self.members.as_ref().map_or(local, |m| m[local] as usize)
    }

    /// True when the route admits engine rule `rule`: always for a route's
    /// own members; checked against the event's route `key` on the
    /// overflow route.
    pub(crate) fn admits(&self, rule: usize, rule_routes: &[RuleRoute], key: &[u16]) -> bool {
        !self.check_each || rule_routes[rule].admits(key)
    }
}

type Slot<T> = Arc<OnceLock<Arc<T>>>;

/// The lazily built routes of one engine.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    table: Mutex<FxHashMap<RouteKey, Slot<Route>>>,
    /// Indexes by member set: keys that admit the same rules (two Sysmon
    /// event IDs of one category, or values no rule names) share one.
    indexes: Mutex<FxHashMap<Vec<u32>, Slot<RuleIndex>>>,
    /// The index over every rule: routing off, nothing known, or overflow.
    everything: OnceLock<Arc<Route>>,
    overflow: OnceLock<Arc<Route>>,
}

/// What building a route needs from its engine.
pub(crate) struct RouteSource<'a> {
    pub(crate) rules: &'a [CompiledRule],
    pub(crate) rule_routes: &'a [RuleRoute],
    pub(crate) vocabulary: &'a Vocabulary,
    pub(crate) prefilter: &'a PrefilterOptions,
    /// Routing on: the index over every rule serves events of unknown
    /// logsource; off, it serves every event.
    pub(crate) routing: bool,
}

impl Routes {
    /// The route of `key`, built if needed. `None` means every rule.
    pub(crate) fn get(&self, key: Option<&[u16]>, source: &RouteSource<'_>) -> Arc<Route> {
        let Some(key) = key else {
            return Arc::clone(self.everything.get_or_init(|| Arc::new(everything(source))));
        };
        let slot = {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            match table.get(key) {
                Some(slot) => Some(Arc::clone(slot)),
                None if table.len() >= MAX_ROUTES => None,
                None => Some(Arc::clone(table.entry(key.to_vec()).or_default())),
            }
        };
        match slot {
            Some(slot) => Arc::clone(slot.get_or_init(|| Arc::new(self.build(key, source)))),
            None => Arc::clone(self.overflow.get_or_init(|| {
                Arc::new(Route {
                    label: "overflow".to_owned(),
                    check_each: true,
                    ..Route::clone(&self.get(None, source))
                })
            })),
        }
    }

    /// Number of distinct indexes built so far.
    pub(crate) fn built(&self) -> usize {
        let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        indexes.values().filter(|slot| slot.get().is_some()).count()
            + usize::from(self.everything.get().is_some())
    }

    /// Bytes held by the automata and filters of the indexes built so far.
    pub(crate) fn memory_usage(&self) -> usize {
        let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        indexes
            .values()
            .filter_map(|slot| slot.get())
            .map(|index| index.memory_usage())
            .chain(self.everything.get().map(|r| r.index.memory_usage()))
            .sum()
    }

    fn build(&self, key: &[u16], source: &RouteSource<'_>) -> Route {
        let members: Vec<u32> = (0..source.rules.len() as u32)
            .filter(|&i| source.rule_routes[i as usize].admits(key))
            .collect();
        if members.len() == source.rules.len() {
            // Nothing to skip: the index over every rule serves this key.
            return Route {
                label: source.vocabulary.label(key),
                ..Route::clone(&self.get(None, source))
            };
        }
        let slot = {
            let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(indexes.entry(members.clone()).or_default())
        };
        let index = slot.get_or_init(|| {
            let rules: Vec<&CompiledRule> =
                members.iter().map(|&i| &source.rules[i as usize]).collect();
            Arc::new(RuleIndex::build(&rules, source.prefilter))
        });
        Route {
            index: Arc::clone(index),
            label: source.vocabulary.label(key),
            skipped_rules: source.rules.len() - members.len(),
            members: Some(members),
            check_each: false,
        }
    }
}

fn everything(source: &RouteSource<'_>) -> Route {
    let rules: Vec<&CompiledRule> = source.rules.iter().collect();
    Route {
        members: None,
        index: Arc::new(RuleIndex::build(&rules, source.prefilter)),
        label: if source.routing {
            "unknown"
        } else {
            "unrouted"
        }
        .to_owned(),
        skipped_rules: 0,
        check_each: false,
    }
}

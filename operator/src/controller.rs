//! Running the two controllers, `DetectionEngine` ([`crate::engine`]:
//! objects, rules rollout, reloads, status) and `SigmaRuleSet`
//! ([`crate::rule_set`]: validation, bindings, status), and what their
//! reconcilers share ([`Context`], applying objects, backoff).
//!
//! Both are kube-runtime [`Controller`]s. Failures back off per object UID
//! exponentially and reset on success (kube-runtime has no per-object
//! backoff of its own). Objects are written by server-side apply with the
//! field manager [`FIELD_MANAGER`], and only when they differ from what the
//! cluster holds, so a reconcile of an unchanged object writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Pod, Service, ServiceAccount},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Event as KubeEvent, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher::{self, watcher},
    },
};
use rsigma_crds::{DetectionEngine, RuleErrorStatus, SigmaRuleSet};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    engine,
    http::Metrics,
    reload::{PodClient, SyncOptions},
    resources::{ENGINE_LABEL, FIELD_MANAGER, MaterializedRuleSet},
    rule_set, validate,
};

/// Engine condition (in addition to those of `rsigma_crds::conditions`):
/// whether the engine selects rule sets, and which are loaded or left out.
pub const RULE_SETS_SELECTED: &str = "RuleSetsSelected";

/// List fields of the engine status (see [`apply_status`]).
pub(crate) const ENGINE_LISTS: &[&str] = &["pods"];
/// List fields of the rule set status.
pub(crate) const RULE_SET_LISTS: &[&str] = &["bindings", "ruleErrors"];

/// Most rule errors listed in a rule set's status.
pub(crate) const MAX_RULE_ERRORS: usize = 100;

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 404)
    }
}

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Namespaces to manage; empty: every namespace.
    pub namespaces: Vec<String>,
    /// How long to wait for a pod to confirm a reload.
    pub sync: SyncOptions,
    /// Periodic reconcile of settled objects.
    pub resync: Duration,
    /// First delay before asking pods again that are not in sync yet.
    pub sync_backoff_base: Duration,
    /// Longest such delay.
    pub sync_backoff_max: Duration,
    /// First delay after a failed reconcile.
    pub error_backoff_base: Duration,
    /// Longest such delay.
    pub error_backoff_max: Duration,
    /// Events' reporting controller.
    pub reporter: String,
    /// Events' reporting instance (pod name).
    pub instance: Option<String>,
    /// Debounce of reconcile triggers.
    pub debounce: Duration,
    /// Longest wait before watching again after a watch error (the API
    /// server restarting).
    pub watch_backoff_max: Duration,
    /// Daemon image of engines whose spec names none.
    pub default_daemon_image: Option<String>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            sync: SyncOptions::default(),
            resync: Duration::from_secs(300),
            sync_backoff_base: Duration::from_millis(500),
            sync_backoff_max: Duration::from_secs(30),
            error_backoff_base: Duration::from_secs(1),
            error_backoff_max: Duration::from_secs(300),
            reporter: FIELD_MANAGER.to_owned(),
            instance: None,
            debounce: Duration::from_millis(200),
            watch_backoff_max: Duration::from_secs(10),
            default_daemon_image: None,
        }
    }
}

/// What the reconcilers share.
pub struct Context {
    pub(crate) client: Client,
    pub(crate) config: OperatorConfig,
    recorder: Recorder,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) pods: Arc<dyn PodClient>,
    pub(crate) cache: validate::Cache,
    pub(crate) engines: Store<DetectionEngine>,
    pub(crate) rule_sets: Store<SigmaRuleSet>,
    /// Consecutive reconcile failures per object UID.
    failures: Mutex<HashMap<String, u32>>,
    /// Per engine UID: (desired hash, attempts so far, time waited so far)
    /// of the pods' sync.
    sync_attempts: Mutex<HashMap<String, (String, u32, Duration)>>,
    /// Per rule set UID: valid or not (the gauge).
    validity: Mutex<HashMap<String, bool>>,
    /// Per object (`Kind/namespace/name`): fingerprint of the last applied
    /// desired state and the resourceVersion it produced.
    applied: Mutex<HashMap<String, (u64, String)>>,
    /// Per rule set UID: its last valid content, which engines keep serving
    /// while the current content is invalid.
    last_valid: Mutex<HashMap<String, Arc<LastValid>>>,
}

/// The last valid content of a rule set.
#[derive(Debug)]
pub(crate) struct LastValid {
    /// The rule set's generation then.
    pub(crate) generation: Option<i64>,
    /// The content.
    pub(crate) set: MaterializedRuleSet,
}

/// While pods have not confirmed a rules hash, they are asked again at most
/// this far apart, for [`SYNC_POLL_WINDOW`] (the kubelet refreshes a mounted
/// ConfigMap within its sync period plus its cache TTL, a minute each by
/// default); after that the delay grows to `sync_backoff_max`.
const SYNC_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// See [`SYNC_POLL_INTERVAL`].
const SYNC_POLL_WINDOW: Duration = Duration::from_secs(180);

impl Context {
    fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        base.saturating_mul(factor).min(max)
    }

    fn record_failure(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().expect("lock");
        let n = failures.entry(uid.to_owned()).or_default();
        let delay = Self::backoff(
            self.config.error_backoff_base,
            self.config.error_backoff_max,
            *n,
        );
        *n += 1;
        delay
    }

    fn reset_failures(&self, uid: &str) {
        self.failures.lock().expect("lock").remove(uid);
    }

    /// The delay before asking pods again for `hash`: growing from
    /// `sync_backoff_base` but at most [`SYNC_POLL_INTERVAL`] during the first
    /// [`SYNC_POLL_WINDOW`] of a rollout (nothing else says when the kubelet
    /// has refreshed the files), then up to `sync_backoff_max`.
    ///
    /// `steady: false` (a pod failed to load the rules: asking again soon
    /// only repeats a full load that fails) skips the steady window.
    pub(crate) fn next_sync_delay(&self, uid: &str, hash: &str, steady: bool) -> Duration {
        let mut attempts = self.sync_attempts.lock().expect("lock");
        let entry = attempts
            .entry(uid.to_owned())
            .or_insert_with(|| (hash.to_owned(), 0, Duration::ZERO));
        if entry.0 != hash {
            *entry = (hash.to_owned(), 0, Duration::ZERO);
        }
        let grown = Self::backoff(
            self.config.sync_backoff_base,
            self.config.sync_backoff_max,
            entry.1,
        );
        let delay = if steady && entry.2 < SYNC_POLL_WINDOW {
            grown.min(SYNC_POLL_INTERVAL)
        } else {
            grown
        };
        entry.1 += 1;
        entry.2 += delay;
        delay
    }

    /// Remembers `set` as the last valid content of the rule set `uid`.
    pub(crate) fn remember_valid(
        &self,
        uid: &str,
        generation: Option<i64>,
        set: &MaterializedRuleSet,
    ) {
        let mut last = self.last_valid.lock().expect("lock");
        if last
            .get(uid)
            .is_some_and(|l| l.set.content_hash == set.content_hash && l.generation == generation)
        {
            return;
        }
        last.insert(
            uid.to_owned(),
            Arc::new(LastValid {
                generation,
                set: set.clone(),
            }),
        );
        self.forget_deleted_rule_sets(&mut last, uid);
    }

    /// Drops from a per-rule-set map the UIDs of sets that no longer exist
    /// (`keep` stays: it may be a set the cache has not seen yet). Nothing is
    /// dropped while the cache is empty (not listed yet).
    fn forget_deleted_rule_sets<V>(&self, map: &mut HashMap<String, V>, keep: &str) {
        let live: std::collections::HashSet<String> = self
            .rule_sets
            .state()
            .iter()
            .filter_map(|r| r.uid())
            .collect();
        if !live.is_empty() {
            map.retain(|k, _| live.contains(k) || k == keep);
        }
    }

    /// The last valid content of the rule set `uid`, if this instance saw one.
    pub(crate) fn last_valid(&self, uid: &str) -> Option<Arc<LastValid>> {
        self.last_valid.lock().expect("lock").get(uid).cloned()
    }

    /// The resourceVersion the last apply of `K` `namespace/name` produced.
    pub(crate) fn applied_version<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<String> {
        let key = format!("{}/{namespace}/{name}", K::kind(&()));
        self.applied
            .lock()
            .expect("lock")
            .get(&key)
            .map(|(_, version)| version.clone())
    }

    pub(crate) fn reset_sync(&self, uid: &str) {
        self.sync_attempts.lock().expect("lock").remove(uid);
    }

    pub(crate) async fn publish(&self, object: &impl Resource<DynamicType = ()>, event: KubeEvent) {
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %err, reason = %event.reason, "cannot publish event");
        }
    }

    pub(crate) fn update_validity(&self, uid: &str, valid: bool) {
        let mut validity = self.validity.lock().expect("lock");
        validity.insert(uid.to_owned(), valid);
        self.forget_deleted_rule_sets(&mut validity, uid);
        let valid_n = validity.values().filter(|v| **v).count();
        self.metrics
            .rule_sets
            .with_label_values(&["valid"])
            .set(valid_n as i64);
        self.metrics
            .rule_sets
            .with_label_values(&["invalid"])
            .set((validity.len() - valid_n) as i64);
    }
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers for every configured namespace (or for all
/// namespaces) until the future is dropped.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    pods: Arc<dyn PodClient>,
) {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let runs = scopes.into_iter().map(|ns| {
        run_scope(
            client.clone(),
            ns,
            config.clone(),
            metrics.clone(),
            pods.clone(),
        )
    });
    futures::future::join_all(runs).await;
}

/// Drops (and logs) watch errors: each watch has its own backoff
/// ([`WatchBackoff`]), so one failing watch neither stalls the others nor
/// reaches the controller's shared trigger backoff.
fn quiet<T, S>(
    stream: S,
    what: &'static str,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
    T: Send,
{
    stream.filter_map(move |item| async move {
        match item {
            Ok(object) => Some(Ok(object)),
            Err(err) => {
                tracing::warn!(watch = what, error = %error_chain(&err), "watch failed; retrying with backoff");
                None
            }
        }
    })
}

/// A watch of `api` with its own backoff, yielding touched objects.
fn touched<K>(
    api: Api<K>,
    config: watcher::Config,
    max_backoff: Duration,
    what: &'static str,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    quiet(
        watcher(api, config)
            .backoff(WatchBackoff::new(max_backoff))
            .touched_objects(),
        what,
    )
}

async fn run_scope(
    client: Client,
    namespace: Option<String>,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    pods: Arc<dyn PodClient>,
) {
    let ns = namespace.as_deref();
    tracing::info!(namespace = ns.unwrap_or("<all>"), "starting controllers");
    let max = config.watch_backoff_max;
    let (engines, engine_writer) = reflector::store::<DetectionEngine>();
    let (rule_sets, rule_set_writer) = reflector::store::<SigmaRuleSet>();
    let engine_main = quiet(
        watcher(
            scoped::<DetectionEngine>(&client, ns),
            watcher::Config::default(),
        )
        .backoff(WatchBackoff::new(max))
        .reflect(engine_writer)
        .applied_objects(),
        "detectionengines",
    );
    let rule_set_main = quiet(
        watcher(
            scoped::<SigmaRuleSet>(&client, ns),
            watcher::Config::default(),
        )
        .backoff(WatchBackoff::new(max))
        .reflect(rule_set_writer)
        .applied_objects(),
        "sigmarulesets",
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: config.reporter.clone(),
            instance: config.instance.clone(),
        },
    );
    let debounce = config.debounce;
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        recorder,
        metrics,
        pods,
        cache: validate::Cache::default(),
        engines: engines.clone(),
        rule_sets: rule_sets.clone(),
        failures: Mutex::default(),
        sync_attempts: Mutex::default(),
        validity: Mutex::default(),
        applied: Mutex::default(),
        last_valid: Mutex::default(),
    });
    let managed =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));

    // Engines: triggered by themselves, their objects, their pods, the rule
    // sets of their namespace and the ConfigMaps those reference.
    let cm_engines = {
        let engines = engines.clone();
        let rule_sets = rule_sets.clone();
        move |cm: ConfigMap| engines_for_config_map(&cm, &engines, &rule_sets)
    };
    let rs_engines = {
        let engines = engines.clone();
        move |rs: SigmaRuleSet| engines_in_namespace(&engines, rs.namespace().as_deref())
    };
    let pod_engine = |pod: Pod| {
        let name = pod.labels().get(ENGINE_LABEL).cloned()?;
        Some(ObjectRef::<DetectionEngine>::new(&name).within(&pod.namespace()?))
    };
    let engine_run = Controller::for_stream(engine_main, engines.clone())
        .owns_stream(touched(
            scoped::<Deployment>(&client, ns),
            managed.clone(),
            max,
            "deployments",
        ))
        .owns_stream(touched(
            scoped::<Service>(&client, ns),
            managed.clone(),
            max,
            "services",
        ))
        .owns_stream(touched(
            scoped::<ServiceAccount>(&client, ns),
            managed.clone(),
            max,
            "serviceaccounts",
        ))
        .watches_stream(
            touched(
                scoped::<ConfigMap>(&client, ns),
                watcher::Config::default(),
                max,
                "configmaps",
            ),
            cm_engines,
        )
        .watches_stream(
            touched(
                scoped::<SigmaRuleSet>(&client, ns),
                watcher::Config::default(),
                max,
                "sigmarulesets",
            ),
            rs_engines,
        )
        .watches_stream(
            touched(
                scoped::<Pod>(&client, ns),
                watcher::Config::default().labels(ENGINE_LABEL),
                max,
                "pods",
            ),
            pod_engine,
        )
        .with_config(controller::Config::default().debounce(debounce))
        .run(engine::reconcile_engine, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %error_chain(&err), "engine controller");
            }
        });

    // Rule sets: triggered by themselves, the ConfigMaps they reference or
    // that engines write, and the engines of their namespace (bindings).
    let cm_rule_sets = {
        let rule_sets = rule_sets.clone();
        move |cm: ConfigMap| rule_sets_for_config_map(&cm, &rule_sets)
    };
    let engine_rule_sets = {
        let rule_sets = rule_sets.clone();
        move |e: DetectionEngine| rule_sets_in_namespace(&rule_sets, e.namespace().as_deref())
    };
    let rule_set_run = Controller::for_stream(rule_set_main, rule_sets.clone())
        .watches_stream(
            touched(
                scoped::<ConfigMap>(&client, ns),
                watcher::Config::default(),
                max,
                "configmaps",
            ),
            cm_rule_sets,
        )
        .watches_stream(
            touched(
                scoped::<DetectionEngine>(&client, ns),
                watcher::Config::default(),
                max,
                "detectionengines",
            ),
            engine_rule_sets,
        )
        .with_config(controller::Config::default().debounce(debounce))
        .run(rule_set::reconcile_rule_set, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %error_chain(&err), "rule set controller");
            }
        });
    futures::join!(engine_run, rule_set_run);
}

fn engines_in_namespace(
    engines: &Store<DetectionEngine>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<DetectionEngine>> {
    engines
        .state()
        .iter()
        .filter(|e| e.namespace().as_deref() == namespace)
        .map(|e| ObjectRef::from_obj(e.as_ref()))
        .collect()
}

fn rule_sets_in_namespace(
    rule_sets: &Store<SigmaRuleSet>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<SigmaRuleSet>> {
    rule_sets
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == namespace)
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

fn references(rs: &SigmaRuleSet, config_map: &str) -> bool {
    rs.spec.config_map_refs.iter().any(|r| r.name == config_map)
}

fn owning_engine(cm: &ConfigMap) -> Option<String> {
    cm.owner_references()
        .iter()
        .find(|o| o.kind == "DetectionEngine" && o.controller == Some(true))
        .map(|o| o.name.clone())
}

fn engines_for_config_map(
    cm: &ConfigMap,
    engines: &Store<DetectionEngine>,
    rule_sets: &Store<SigmaRuleSet>,
) -> Vec<ObjectRef<DetectionEngine>> {
    let ns = cm.namespace();
    if let Some(owner) = owning_engine(cm) {
        return vec![ObjectRef::new(&owner).within(ns.as_deref().unwrap_or_default())];
    }
    let name = cm.name_any();
    let referenced = rule_sets
        .state()
        .iter()
        .any(|r| r.namespace() == ns && references(r, &name));
    if referenced {
        engines_in_namespace(engines, ns.as_deref())
    } else {
        Vec::new()
    }
}

fn rule_sets_for_config_map(
    cm: &ConfigMap,
    rule_sets: &Store<SigmaRuleSet>,
) -> Vec<ObjectRef<SigmaRuleSet>> {
    let ns = cm.namespace();
    if owning_engine(cm).is_some() {
        // An engine's rules ConfigMap: its annotations feed the bindings.
        return rule_sets_in_namespace(rule_sets, ns.as_deref());
    }
    let name = cm.name_any();
    rule_sets
        .state()
        .iter()
        .filter(|r| r.namespace() == ns && references(r, &name))
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// An error with its sources: `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Backoff of the controllers' watches after an error (API server gone):
/// exponential from 500 ms up to a cap, reset by the next event.
struct WatchBackoff {
    max: Duration,
    next: Duration,
}

impl WatchBackoff {
    fn new(max: Duration) -> Self {
        Self {
            max,
            next: Duration::from_millis(500),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let current = self.next.min(self.max);
        self.next = current.saturating_mul(2);
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }
}

fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let kind = if K::kind(&()) == "DetectionEngine" {
        "engine"
    } else {
        "ruleset"
    };
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[kind])
        .inc();
    let uid = object.meta().uid.clone().unwrap_or_default();
    let delay = ctx.record_failure(&uid);
    tracing::warn!(
        kind,
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        name = object.meta().name.as_deref().unwrap_or_default(),
        error = %error_chain(error),
        instance = ctx.config.instance.as_deref().unwrap_or_default(),
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Whether `store` has listed once, without waiting.
///
/// Never `.await` `Store::wait_until_ready` from reconcilers: kube-runtime
/// 5's ready signal is a oneshot receiver shared by every waiter, which wakes
/// only the last one to poll it, so concurrent waiters (the controller's own
/// and several reconciles) can wait forever. Seen as a rule set never
/// reconciled after the controllers restarted. The caller requeues instead.
pub(crate) fn store_ready<K>(store: &Store<K>) -> bool
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Ends a reconcile: a success clears the object's failure count, and a
/// not-found error is no failure when the object itself was deleted while
/// it was being reconciled (`forget` then drops what is kept per uid).
pub(crate) async fn conclude<K>(
    ctx: &Context,
    object: &K,
    result: Result<Action, Error>,
    forget: impl FnOnce(&str),
) -> Result<Action, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let uid = object.uid().unwrap_or_default();
    match result {
        Ok(action) => {
            ctx.reset_failures(&uid);
            Ok(action)
        }
        Err(err) if err.is_not_found() => {
            let api: Api<K> =
                Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
            if api.get_opt(&object.name_any()).await?.is_some() {
                return Err(err);
            }
            tracing::info!(
                kind = %K::kind(&()),
                name = %object.name_any(),
                "deleted during reconcile"
            );
            ctx.reset_failures(&uid);
            forget(&uid);
            Ok(Action::await_change())
        }
        Err(err) => Err(err),
    }
}

/// Whether every field of `desired` is present with the same value in
/// `live` (arrays: same length, element-wise). Fields the server adds
/// (defaults, status, metadata) do not matter.
pub fn is_subset(desired: &serde_json::Value, live: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            // The API server drops nulls and empty maps and lists.
            None => match dv {
                Value::Null => true,
                Value::Object(m) => m.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            },
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (d, l) => d == l,
    }
}

fn fingerprint(value: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Applies `object` by server-side apply unless the live object already
/// holds it. Returns whether it wrote.
///
/// Besides comparing with the live object, it remembers what it applied and
/// the resourceVersion that resulted: the same desired object over an
/// unchanged live object is never applied twice, even when the server
/// normalises a value so that the comparison cannot see they are equal
/// (a no-op apply still bumps the resourceVersion on some servers, and the
/// watch on owned objects would turn that into a write loop).
pub(crate) async fn apply_if_changed<K>(ctx: &Context, object: &K) -> Result<bool, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = object.name_any();
    let key = format!("{}/{namespace}/{name}", K::kind(&()));
    let desired = serde_json::to_value(object).expect("objects serialize");
    let print = fingerprint(&desired);
    if let Some(live) = api.get_opt(&name).await? {
        let live_rv = live.resource_version().unwrap_or_default();
        if ctx.applied.lock().expect("lock").get(&key) == Some(&(print, live_rv.clone())) {
            return Ok(false);
        }
        let live = serde_json::to_value(&live).expect("objects serialize");
        let same = is_subset(&desired, &live)
            && match (desired.get("data"), live.get("data")) {
                // ConfigMap data is the whole content: no extra keys either.
                (Some(d), Some(l)) => d == l,
                (Some(d), None) => d.as_object().is_none_or(|m| m.is_empty()),
                _ => true,
            };
        if same {
            return Ok(false);
        }
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    let after = serde_json::to_value(&applied).expect("objects serialize");
    if !is_subset(&desired, &after) {
        tracing::debug!(%key, "the applied object reads back differently (server normalisation)");
    }
    ctx.applied
        .lock()
        .expect("lock")
        .insert(key, (print, applied.resource_version().unwrap_or_default()));
    tracing::info!(kind = %K::kind(&()), %namespace, %name, "applied");
    Ok(true)
}

/// The ConfigMaps a rule set references, by name (missing ones left out).
pub(crate) async fn fetch_config_maps(
    client: &Client,
    rule_set: &SigmaRuleSet,
) -> Result<BTreeMap<String, ConfigMap>, Error> {
    let ns = rule_set.namespace().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut out = BTreeMap::new();
    for reference in &rule_set.spec.config_map_refs {
        if out.contains_key(&reference.name) {
            continue;
        }
        if let Some(cm) = api.get_opt(&reference.name).await? {
            out.insert(reference.name.clone(), cm);
        }
    }
    Ok(out)
}

pub(crate) fn first_error(errors: &[RuleErrorStatus]) -> String {
    errors
        .first()
        .map(|e| {
            let mut s = String::new();
            if let Some(d) = &e.document {
                s.push_str(d);
                s.push_str(": ");
            }
            if let Some(r) = &e.rule {
                s.push_str(&format!("rule '{r}': "));
            }
            s.push_str(&e.reason);
            s
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_fields_but_not_list_changes() {
        let desired = json!({"spec": {"args": ["a", "b"], "ports": [{"name": "api"}]}});
        let live = json!({"spec": {"args": ["a", "b"], "ports": [{"name": "api", "protocol": "TCP"}], "x": 1}, "status": {}});
        assert!(is_subset(&desired, &live));
        let shorter = json!({"spec": {"args": ["a"], "ports": [{"name": "api"}]}});
        assert!(!is_subset(&shorter, &live));
        let other = json!({"spec": {"args": ["a", "c"]}});
        assert!(!is_subset(&other, &live));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        assert_eq!(Context::backoff(base, max, 0), Duration::from_secs(1));
        assert_eq!(Context::backoff(base, max, 3), Duration::from_secs(8));
        assert_eq!(Context::backoff(base, max, 30), max);
    }
}

//! The two controllers: `DetectionEngine` (objects, rules rollout, reloads,
//! status) and `SigmaRuleSet` (validation, bindings, status).
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

use futures::{Stream, StreamExt, future::BoxFuture};
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher::{self, watcher},
    },
};
use rsigma_crds::{
    Binding, DetectionEngine, DetectionEngineStatus, PodRulesStatus, RuleErrorStatus, SigmaRuleSet,
    SigmaRuleSetStatus,
    conditions::{APPLIED, FALSE, PROGRESSING, READY, RULES_IN_SYNC, TRUE, UNKNOWN, VALID},
    selection::selector_matches,
    short_hash,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    http::Metrics,
    reload::{DaemonStatus, Endpoint, PodClient, PodSync, ReloadAnswer, SyncOptions, sync_pod},
    resources::{
        self, API_PORT, API_PORT_NAME, Aggregate, ENGINE_LABEL, FIELD_MANAGER,
        MAX_CONFIG_MAP_BYTES, MaterializedRuleSet, RULES_HASH_ANNOTATION,
    },
    status::{apply_status, condition, find},
    validate,
};

/// Engine condition (in addition to those of `rsigma_crds::conditions`):
/// whether the engine selects rule sets, and which are loaded or left out.
pub const RULE_SETS_SELECTED: &str = "RuleSetsSelected";

/// List fields of the engine status (see [`apply_status`]).
const ENGINE_LISTS: &[&str] = &["pods"];
/// List fields of the rule set status.
const RULE_SET_LISTS: &[&str] = &["bindings", "ruleErrors"];

/// Most rule errors listed in a rule set's status.
const MAX_RULE_ERRORS: usize = 100;

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
        }
    }
}

/// What the reconcilers share.
pub struct Context {
    client: Client,
    config: OperatorConfig,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    pods: Arc<dyn PodClient>,
    cache: validate::Cache,
    engines: Store<DetectionEngine>,
    rule_sets: Store<SigmaRuleSet>,
    /// Consecutive reconcile failures per object UID.
    failures: Mutex<HashMap<String, u32>>,
    /// Per engine UID: (desired hash, attempts so far) of the pods' sync.
    sync_attempts: Mutex<HashMap<String, (String, u32)>>,
    /// Per rule set UID: valid or not (the gauge).
    validity: Mutex<HashMap<String, bool>>,
    /// Per object (`Kind/namespace/name`): fingerprint of the last applied
    /// desired state and the resourceVersion it produced.
    applied: Mutex<HashMap<String, (u64, String)>>,
}

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

    /// The delay before asking pods again for `hash` (grows per attempt).
    fn next_sync_delay(&self, uid: &str, hash: &str) -> Duration {
        let mut attempts = self.sync_attempts.lock().expect("lock");
        let entry = attempts
            .entry(uid.to_owned())
            .or_insert_with(|| (hash.to_owned(), 0));
        if entry.0 != hash {
            *entry = (hash.to_owned(), 0);
        }
        let delay = Self::backoff(
            self.config.sync_backoff_base,
            self.config.sync_backoff_max,
            entry.1,
        );
        entry.1 += 1;
        delay
    }

    fn reset_sync(&self, uid: &str) {
        self.sync_attempts.lock().expect("lock").remove(uid);
    }

    async fn publish(&self, object: &impl Resource<DynamicType = ()>, event: KubeEvent) {
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %err, reason = %event.reason, "cannot publish event");
        }
    }

    fn update_validity(&self, uid: &str, valid: bool) {
        let mut validity = self.validity.lock().expect("lock");
        validity.insert(uid.to_owned(), valid);
        let live: std::collections::HashSet<String> = self
            .rule_sets
            .state()
            .iter()
            .filter_map(|r| r.uid())
            .collect();
        if !live.is_empty() {
            validity.retain(|k, _| live.contains(k) || k == uid);
        }
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
        .run(reconcile_engine, error_policy, ctx.clone())
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
        .run(reconcile_rule_set, error_policy, ctx.clone())
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

/// Ends a reconcile: a success clears the object's failure count, and a
/// not-found error is no failure when the object itself was deleted while
/// it was being reconciled (`forget` then drops what is kept per uid).
async fn conclude<K>(
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
async fn apply_if_changed<K>(ctx: &Context, object: &K) -> Result<bool, Error>
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
async fn fetch_config_maps(
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

fn first_error(errors: &[RuleErrorStatus]) -> String {
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

// ---------------------------------------------------------------------------
// DetectionEngine
// ---------------------------------------------------------------------------

async fn reconcile_engine(
    engine: Arc<DetectionEngine>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.with_label_values(&["engine"]).inc();
    if engine.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Never aggregate from a rule set cache that has not listed yet: that
    // would roll out an empty rule set.
    if ctx.rule_sets.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let result = reconcile_engine_inner(&engine, &ctx).await;
    // An engine's objects go with it through their owner references; its
    // rollout state goes here.
    conclude(&ctx, engine.as_ref(), result, |uid| ctx.reset_sync(uid)).await
}

/// A rule set selected by an engine, resolved and validated.
struct Candidate {
    set: MaterializedRuleSet,
    validation: Arc<validate::Validation>,
}

/// Which of the valid rule sets load together, and what they make.
struct Plan {
    aggregate: Aggregate,
    rejected: BTreeMap<String, String>,
    /// Why nothing can be rolled out (the pods keep what they have).
    blocking: Option<String>,
}

async fn plan(ctx: &Context, valid: &[&MaterializedRuleSet]) -> Plan {
    let mut candidates: Vec<&MaterializedRuleSet> = valid.to_vec();
    let mut rejected = BTreeMap::new();
    loop {
        let aggregate = resources::aggregate(&candidates);
        let errors = ctx.cache.aggregate(&aggregate).await;
        if errors.is_empty() {
            let blocking = (aggregate.data_bytes() > MAX_CONFIG_MAP_BYTES).then(|| {
                format!(
                    "the rules take {} bytes, more than the {} a ConfigMap can hold",
                    aggregate.data_bytes(),
                    MAX_CONFIG_MAP_BYTES
                )
            });
            return Plan {
                aggregate,
                rejected,
                blocking,
            };
        }
        if errors.by_rule_set.is_empty() {
            return Plan {
                aggregate,
                rejected,
                blocking: Some(errors.unattributed.join("; ")),
            };
        }
        for (set, reasons) in &errors.by_rule_set {
            rejected.insert(set.clone(), reasons.join("; "));
            candidates.retain(|c| &c.name != set);
        }
    }
}

/// A pod of an engine and where its API answers.
struct Target {
    name: String,
    ready: bool,
    endpoint: Option<Endpoint>,
}

fn targets(engine: &DetectionEngine, pods: Vec<Pod>) -> Vec<Target> {
    let scheme = if engine.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut out: Vec<Target> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .map(|p| {
            let name = p.name_any();
            let status = p.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let port = p
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|port| port.name.as_deref() == Some(API_PORT_NAME))
                .map(|port| port.container_port)
                .unwrap_or(API_PORT);
            let endpoint = status.pod_ip.filter(|ip| !ip.is_empty()).map(|ip| {
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip
                };
                Endpoint {
                    pod: name.clone(),
                    base_url: format!("{scheme}://{host}:{port}"),
                }
            });
            Target {
                name,
                ready,
                endpoint,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Counts reload calls in the metrics.
struct Counting<'a> {
    inner: &'a dyn PodClient,
    metrics: &'a Metrics,
}

impl PodClient for Counting<'_> {
    fn status<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<DaemonStatus, String>> {
        self.inner.status(endpoint)
    }
    fn reload<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        expected_hash: &'a str,
    ) -> BoxFuture<'a, Result<ReloadAnswer, String>> {
        self.metrics.reload_attempts.inc();
        self.inner.reload(endpoint, expected_hash)
    }
}

async fn reconcile_engine_inner(engine: &DetectionEngine, ctx: &Context) -> Result<Action, Error> {
    let ns = engine.namespace().unwrap_or_default();
    let name = engine.name_any();
    let uid = engine.uid().unwrap_or_default();
    let generation = engine.metadata.generation;
    let api: Api<DetectionEngine> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = engine.status.clone().unwrap_or_default();
    let prev_conditions = previous.conditions.clone();
    let cond = |type_: &str, status: &str, reason: &str, message: String| {
        condition(&prev_conditions, type_, status, reason, message, generation)
    };

    // 1. The spec.
    let mut spec_error = resources::check_spec(engine).err();
    if spec_error.is_none()
        && let Some(selector) = &engine.spec.rule_set_selector
        && let Err(err) = selector_matches(selector, &BTreeMap::new())
    {
        spec_error = Some(format!("ruleSetSelector: {err}"));
    }
    if let Some(message) = spec_error {
        tracing::warn!(namespace = %ns, %name, %message, "invalid engine spec");
        let mut status = previous.clone();
        status.observed_generation = generation;
        let mut conditions = vec![
            cond(READY, FALSE, "InvalidSpec", message.clone()),
            cond(PROGRESSING, FALSE, "InvalidSpec", message),
        ];
        conditions.extend(
            previous
                .conditions
                .iter()
                .filter(|c| c.type_ != READY && c.type_ != PROGRESSING)
                .cloned(),
        );
        status.conditions = conditions;
        apply_status(&api, engine, engine.status.as_ref(), &status, ENGINE_LISTS).await?;
        return Ok(Action::await_change());
    }

    // 2. The rule sets it selects, resolved and validated.
    let mut selected: Vec<Arc<SigmaRuleSet>> = ctx
        .rule_sets
        .state()
        .into_iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| engine.selects(rs).unwrap_or(false))
        .collect();
    selected.sort_by_key(|rs| rs.name_any());
    let mut candidates = Vec::with_capacity(selected.len());
    for rs in &selected {
        let config_maps = fetch_config_maps(&ctx.client, rs).await?;
        let set = resources::materialize(rs, &config_maps);
        let validation = ctx.cache.rule_set(&set).await;
        candidates.push(Candidate { set, validation });
    }
    let valid: Vec<&MaterializedRuleSet> = candidates
        .iter()
        .filter(|c| c.validation.is_valid())
        .map(|c| &c.set)
        .collect();
    let plan = plan(ctx, &valid).await;

    // 3. The objects.
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let cm_name = resources::rules_config_map_name(&name);
    let live_cm = cm_api.get_opt(&cm_name).await?;
    let live_hash = live_cm
        .as_ref()
        .and_then(|cm| cm.annotations().get(RULES_HASH_ANNOTATION).cloned());
    let previously_rejected = live_cm
        .as_ref()
        .map(|cm| resources::read_config_map_annotations(cm).1)
        .unwrap_or_default();
    let desired_hash: Option<String> = if plan.blocking.is_some() {
        live_hash.clone()
    } else {
        let annotations =
            resources::config_map_annotations(&plan.aggregate.rule_sets, &plan.rejected);
        let desired = resources::desired(engine, &plan.aggregate, annotations);
        apply_if_changed(ctx, &desired.config_map).await?;
        apply_if_changed(ctx, &desired.deployment).await?;
        apply_if_changed(ctx, &desired.service).await?;
        if let Some(sa) = &desired.service_account {
            apply_if_changed(ctx, sa).await?;
        }
        if let Some(pvc) = &desired.pvc {
            apply_if_changed::<PersistentVolumeClaim>(ctx, pvc).await?;
        }
        if live_hash.as_deref() != Some(plan.aggregate.rules_hash.as_str()) {
            tracing::info!(
                namespace = %ns, %name,
                rules_hash = %plan.aggregate.rules_hash,
                rule_sets = plan.aggregate.rule_sets.len(),
                "rules updated"
            );
            ctx.publish(
                engine,
                KubeEvent {
                    type_: EventType::Normal,
                    reason: "RulesUpdated".into(),
                    note: Some(format!(
                        "rules hash {} from {} rule set(s)",
                        short_hash(&plan.aggregate.rules_hash),
                        plan.aggregate.rule_sets.len()
                    )),
                    action: "UpdateRules".into(),
                    secondary: None,
                },
            )
            .await;
        }
        Some(plan.aggregate.rules_hash.clone())
    };
    for (set, reason) in &plan.rejected {
        if previously_rejected.get(set) != Some(reason) {
            ctx.publish(
                engine,
                KubeEvent {
                    type_: EventType::Warning,
                    reason: "RuleSetRejected".into(),
                    note: Some(format!("rule set {set} left out: {reason}")),
                    action: "AggregateRules".into(),
                    secondary: None,
                },
            )
            .await;
        }
    }
    if let Some(blocking) = &plan.blocking {
        tracing::warn!(namespace = %ns, %name, reason = %blocking, "rules not rolled out");
    }

    // 4. The pods: reload and confirm.
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = pod_api
        .list(&ListParams::default().labels(&resources::selector_string(&name)))
        .await?
        .items;
    let targets = targets(engine, pods);
    let counting = Counting {
        inner: ctx.pods.as_ref(),
        metrics: &ctx.metrics,
    };
    let outcomes: Vec<Option<PodSync>> = match &desired_hash {
        Some(hash) => {
            futures::future::join_all(targets.iter().map(|t| {
                let counting = &counting;
                async move {
                    match &t.endpoint {
                        Some(ep) => Some(sync_pod(counting, ep, hash, ctx.config.sync).await),
                        None => None,
                    }
                }
            }))
            .await
        }
        None => targets.iter().map(|_| None).collect(),
    };
    let mut pods_status = Vec::new();
    let mut failed = Vec::new();
    let mut waiting = Vec::new();
    let mut in_sync = 0usize;
    for (t, outcome) in targets.iter().zip(&outcomes) {
        let (rules_hash, message) = match (outcome, &desired_hash) {
            (Some(o), Some(h)) => (o.loaded_hash(h).map(str::to_owned), o.message()),
            (None, _) if t.endpoint.is_none() => (None, Some("no pod IP yet".to_owned())),
            _ => (None, None),
        };
        match outcome {
            Some(PodSync::InSync { reloaded }) => {
                in_sync += 1;
                if *reloaded {
                    tracing::info!(namespace = %ns, engine = %name, pod = %t.name, "pod reloaded the rules");
                }
            }
            Some(PodSync::Failed { error, .. }) => {
                ctx.metrics.reload_failures.inc();
                failed.push(format!("pod {}: {error}", t.name));
            }
            Some(other) => waiting.push(format!(
                "pod {}: {}",
                t.name,
                other.message().unwrap_or_default()
            )),
            None => waiting.push(format!(
                "pod {}: {}",
                t.name,
                message
                    .clone()
                    .unwrap_or_else(|| "not reachable yet".to_owned())
            )),
        }
        pods_status.push(PodRulesStatus {
            name: t.name.clone(),
            rules_hash,
            ready: t.ready,
            message,
        });
    }

    // 5. Status.
    let n_pods = targets.len();
    let n_ready = targets.iter().filter(|t| t.ready).count();
    let replicas = engine.spec.replicas.max(0) as usize;
    let hash_short = desired_hash.as_deref().map(short_hash).unwrap_or_default();
    let rules_in_sync = if let Some(blocking) = &plan.blocking {
        cond(
            RULES_IN_SYNC,
            FALSE,
            "InvalidRules",
            format!(
                "the selected rule sets cannot be rolled out; the pods keep their current rules: {blocking}"
            ),
        )
    } else if n_pods == 0 {
        cond(
            RULES_IN_SYNC,
            UNKNOWN,
            "NoPods",
            "no running pod of the engine yet".to_owned(),
        )
    } else if !failed.is_empty() {
        cond(
            RULES_IN_SYNC,
            FALSE,
            "ReloadFailed",
            format!(
                "{} of {n_pods} pods cannot load rules hash {hash_short} and keep their previous rules: {}",
                failed.len(),
                failed.join("; ")
            ),
        )
    } else if in_sync < n_pods {
        cond(
            RULES_IN_SYNC,
            FALSE,
            "Reloading",
            format!(
                "{in_sync} of {n_pods} pods report rules hash {hash_short}; {}",
                waiting.join("; ")
            ),
        )
    } else {
        cond(
            RULES_IN_SYNC,
            TRUE,
            "InSync",
            format!("all {n_pods} pods report rules hash {hash_short}"),
        )
    };
    let ready = if replicas == 0 {
        cond(
            READY,
            TRUE,
            "ScaledToZero",
            "no replicas requested".to_owned(),
        )
    } else if n_ready >= replicas {
        cond(
            READY,
            TRUE,
            "ReplicasReady",
            format!("{n_ready}/{replicas} pods ready"),
        )
    } else {
        cond(
            READY,
            FALSE,
            "ReplicasNotReady",
            format!("{n_ready}/{replicas} pods ready"),
        )
    };
    let progressing = match (ready.status.as_str(), rules_in_sync.reason.as_str()) {
        (_, "Reloading") => cond(
            PROGRESSING,
            TRUE,
            "RulesChanging",
            rules_in_sync.message.clone(),
        ),
        (FALSE, _) => cond(PROGRESSING, TRUE, "RollingOut", ready.message.clone()),
        _ => cond(PROGRESSING, FALSE, "Stable", "nothing under way".to_owned()),
    };
    let selected_condition = rule_sets_condition(&cond, &ns, &candidates, &plan);
    let status = DetectionEngineStatus {
        observed_generation: generation,
        conditions: vec![
            ready,
            progressing,
            rules_in_sync.clone(),
            selected_condition,
        ],
        replicas: Some(n_pods as i32),
        ready_replicas: Some(n_ready as i32),
        selector: Some(resources::selector_string(&name)),
        desired_rules_hash: desired_hash.clone(),
        pods: pods_status,
    };
    let previous_sync = find(&previous.conditions, RULES_IN_SYNC);
    if rules_in_sync.reason == "ReloadFailed"
        && previous_sync.map(|c| (&c.reason, &c.message))
            != Some((&rules_in_sync.reason, &rules_in_sync.message))
    {
        ctx.publish(
            engine,
            KubeEvent {
                type_: EventType::Warning,
                reason: "ReloadFailed".into(),
                note: Some(rules_in_sync.message.chars().take(1000).collect()),
                action: "ReloadRules".into(),
                secondary: None,
            },
        )
        .await;
    }
    if apply_status(&api, engine, engine.status.as_ref(), &status, ENGINE_LISTS).await? {
        tracing::info!(
            namespace = %ns, %name,
            rules_in_sync = %rules_in_sync.status,
            reason = %rules_in_sync.reason,
            "engine status updated"
        );
    }

    // 6. When to look again.
    let resync = ctx.config.resync;
    Ok(
        // Settled (or nothing a retry could change): the periodic resync.
        if plan.blocking.is_some() || n_pods == 0 || desired_hash.is_none() || in_sync == n_pods {
            ctx.reset_sync(&uid);
            Action::requeue(resync)
        } else {
            let delay = ctx.next_sync_delay(&uid, desired_hash.as_deref().unwrap_or_default());
            Action::requeue(delay)
        },
    )
}

fn rule_sets_condition(
    cond: &impl Fn(&str, &str, &str, String) -> Condition,
    ns: &str,
    candidates: &[Candidate],
    plan: &Plan,
) -> Condition {
    if candidates.is_empty() {
        return cond(
            RULE_SETS_SELECTED,
            FALSE,
            "NoRuleSets",
            format!(
                "no SigmaRuleSet in namespace {ns} is selected by this engine: it runs with no rules"
            ),
        );
    }
    let loaded: Vec<&String> = plan.aggregate.rule_sets.keys().collect();
    let mut left_out: Vec<String> = candidates
        .iter()
        .filter(|c| !c.validation.is_valid())
        .map(|c| {
            format!(
                "{} (invalid: {})",
                c.set.name,
                first_error(&c.validation.errors)
            )
        })
        .collect();
    left_out.extend(
        plan.rejected
            .iter()
            .map(|(set, reason)| format!("{set} (does not load with the others: {reason})")),
    );
    let mut message = format!(
        "{} of {} selected rule sets loaded",
        loaded.len(),
        candidates.len()
    );
    if !loaded.is_empty() {
        message.push_str(": ");
        message.push_str(
            &loaded
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if !left_out.is_empty() {
        message.push_str("; left out: ");
        message.push_str(&left_out.join("; "));
    }
    if loaded.is_empty() {
        cond(RULE_SETS_SELECTED, FALSE, "NoValidRuleSets", message)
    } else {
        cond(RULE_SETS_SELECTED, TRUE, "RuleSetsLoaded", message)
    }
}

// ---------------------------------------------------------------------------
// SigmaRuleSet
// ---------------------------------------------------------------------------

async fn reconcile_rule_set(
    rule_set: Arc<SigmaRuleSet>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.with_label_values(&["ruleset"]).inc();
    if rule_set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if ctx.engines.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let result = reconcile_rule_set_inner(&rule_set, &ctx).await;
    conclude(&ctx, rule_set.as_ref(), result, |_| {}).await
}

async fn reconcile_rule_set_inner(rule_set: &SigmaRuleSet, ctx: &Context) -> Result<Action, Error> {
    let ns = rule_set.namespace().unwrap_or_default();
    let name = rule_set.name_any();
    let generation = rule_set.metadata.generation;
    let api: Api<SigmaRuleSet> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = rule_set.status.clone().unwrap_or_default();
    let prev_conditions = previous.conditions.clone();
    let cond = |type_: &str, status: &str, reason: &str, message: String| {
        condition(&prev_conditions, type_, status, reason, message, generation)
    };

    let config_maps = fetch_config_maps(&ctx.client, rule_set).await?;
    let set = resources::materialize(rule_set, &config_maps);
    let validation = ctx.cache.rule_set(&set).await;
    let mut errors = validation.errors.clone();
    if let Some(selector) = &rule_set.spec.engine_selector
        && let Err(err) = selector_matches(selector, &BTreeMap::new())
    {
        errors.insert(
            0,
            RuleErrorStatus {
                document: Some("engineSelector".to_owned()),
                rule: None,
                reason: err.to_string(),
            },
        );
    }
    if rule_set.spec.rules.is_empty() && rule_set.spec.config_map_refs.is_empty() {
        errors.insert(
            0,
            RuleErrorStatus {
                document: None,
                rule: None,
                reason: "a SigmaRuleSet needs at least one inline rule or ConfigMap reference"
                    .to_owned(),
            },
        );
    }
    let valid = errors.is_empty();
    ctx.update_validity(&rule_set.uid().unwrap_or_default(), valid);

    let valid_condition = if valid {
        cond(
            VALID,
            TRUE,
            "RulesValid",
            format!(
                "{} detection, {} correlation and {} filter rules parsed and compiled",
                validation.detection_count, validation.correlation_count, validation.filter_count
            ),
        )
    } else {
        cond(
            VALID,
            FALSE,
            "InvalidRules",
            format!(
                "{} problem(s); the rule set is not loaded by any engine until fixed. First: {}",
                errors.len(),
                first_error(&errors)
            ),
        )
    };

    // Bindings: one per engine that selects the set.
    let mut engines: Vec<Arc<DetectionEngine>> = ctx
        .engines
        .state()
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(ns.as_str()))
        .filter(|e| e.selects(rule_set).unwrap_or(false))
        .collect();
    engines.sort_by_key(|e| e.name_any());
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let mut bindings = Vec::new();
    for engine in &engines {
        let engine_name = engine.name_any();
        let prev_binding: Vec<Condition> = previous
            .bindings
            .iter()
            .find(|b| b.engine == engine_name)
            .map(|b| b.conditions.clone())
            .unwrap_or_default();
        let bcond = |status: &str, reason: &str, message: String| {
            condition(&prev_binding, APPLIED, status, reason, message, generation)
        };
        let cm = cm_api
            .get_opt(&resources::rules_config_map_name(&engine_name))
            .await?;
        let (included, rejected) = cm
            .as_ref()
            .map(resources::read_config_map_annotations)
            .unwrap_or_default();
        let cm_hash = cm
            .as_ref()
            .and_then(|cm| cm.annotations().get(RULES_HASH_ANNOTATION).cloned());
        let engine_status = engine.status.clone().unwrap_or_default();
        let sync = find(&engine_status.conditions, RULES_IN_SYNC);
        let condition = if !valid {
            bcond(
                FALSE,
                "Invalid",
                "not loaded: the rule set is invalid".to_owned(),
            )
        } else if let Some(reason) = rejected.get(&name) {
            bcond(
                FALSE,
                "Rejected",
                format!("left out by engine {engine_name}: {reason}"),
            )
        } else if included.get(&name) == Some(&set.content_hash) {
            let synced = sync.is_some_and(|c| c.status == TRUE)
                && cm_hash.is_some()
                && engine_status.desired_rules_hash == cm_hash;
            if synced {
                bcond(
                    TRUE,
                    "Loaded",
                    format!(
                        "every pod of engine {engine_name} reports rules hash {}",
                        short_hash(cm_hash.as_deref().unwrap_or_default())
                    ),
                )
            } else {
                bcond(
                    FALSE,
                    "Pending",
                    format!(
                        "waiting for the pods of engine {engine_name}: {}",
                        sync.map(|c| c.message.clone())
                            .unwrap_or_else(|| "no status yet".to_owned())
                    ),
                )
            }
        } else {
            bcond(
                FALSE,
                "Pending",
                format!("engine {engine_name} has not picked up this content yet"),
            )
        };
        bindings.push(Binding {
            engine: engine_name,
            conditions: vec![condition],
        });
    }
    let applied = if !valid {
        cond(
            APPLIED,
            FALSE,
            "Invalid",
            "the rule set is invalid: no engine loads it".to_owned(),
        )
    } else if bindings.is_empty() {
        cond(
            APPLIED,
            FALSE,
            "NoEngine",
            format!("no DetectionEngine in namespace {ns} selects this rule set"),
        )
    } else if bindings
        .iter()
        .all(|b| b.conditions.first().is_some_and(|c| c.status == TRUE))
    {
        cond(
            APPLIED,
            TRUE,
            "Loaded",
            format!(
                "loaded by {}",
                bindings
                    .iter()
                    .map(|b| b.engine.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        let first = bindings
            .iter()
            .filter_map(|b| b.conditions.first())
            .find(|c| c.status != TRUE)
            .expect("some binding is not applied");
        cond(APPLIED, FALSE, &first.reason, first.message.clone())
    };

    let mut status = SigmaRuleSetStatus {
        observed_generation: generation,
        conditions: vec![valid_condition, applied],
        rule_errors: errors.iter().take(MAX_RULE_ERRORS).cloned().collect(),
        rule_count: Some((validation.detection_count + validation.correlation_count) as i32),
        correlation_count: Some(validation.correlation_count as i32),
        content_hash: None,
        short_hash: None,
        bindings,
    };
    status.set_content_hash(set.content_hash.clone());

    let newly_invalid = !valid
        && (previous.content_hash.as_deref() != Some(set.content_hash.as_str())
            || find(&previous.conditions, VALID).is_none_or(|c| c.status != FALSE));
    if apply_status(
        &api,
        rule_set,
        rule_set.status.as_ref(),
        &status,
        RULE_SET_LISTS,
    )
    .await?
    {
        tracing::info!(namespace = %ns, %name, valid, hash = %short_hash(&set.content_hash), "rule set status updated");
    }
    if newly_invalid {
        tracing::warn!(namespace = %ns, %name, error = %first_error(&errors), "invalid rule set");
        let note: String = errors
            .iter()
            .take(5)
            .map(|e| first_error(std::slice::from_ref(e)))
            .collect::<Vec<_>>()
            .join("; ");
        ctx.publish(
            rule_set,
            KubeEvent {
                type_: EventType::Warning,
                reason: "InvalidRules".into(),
                note: Some(note.chars().take(1000).collect()),
                action: "ValidateRules".into(),
                secondary: None,
            },
        )
        .await;
    }
    Ok(Action::requeue(ctx.config.resync))
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

//! The DetectionEngine reconciler: from an engine and the rule sets it
//! selects to its objects, the pods' reloads and its status.
//!
//! One reconcile is a sequence of named steps:
//! [`spec_problem`] (a spec the operator cannot deploy) → [`select`] (the
//! rule sets, resolved and validated; an invalid one is served at its last
//! valid content) → [`plan`] (which of them load together) → [`roll_out`]
//! (apply the objects in dependency order, delete those no longer wanted) →
//! [`sync_pods`] (reload every pod and confirm its rules hash) →
//! [`engine_status`] (the conditions; pure) → [`next_look`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource, ResourceExt};
use rsigma_crds::conditions::{DEGRADED, FALSE, PROGRESSING, READY, RULES_IN_SYNC, TRUE, UNKNOWN};
use rsigma_crds::selection::selector_matches;
use rsigma_crds::{
    DetectionEngine, DetectionEngineStatus, PodRulesStatus, SigmaRuleSet, short_hash,
};

use crate::controller::{
    Context, ENGINE_LISTS, Error, LastValid, RULE_SETS_SELECTED, apply_if_changed, conclude,
    fetch_config_maps, first_error, store_ready,
};
use crate::reload::{DaemonStatus, Endpoint, PodClient, PodSync, ReloadAnswer, sync_pod};
use crate::resources::{
    self, API_PORT, API_PORT_NAME, Aggregate, MAX_CONFIG_MAP_BYTES, MaterializedRuleSet,
    RULES_HASH_ANNOTATION,
};
use crate::status::{apply_status, condition, find};
use crate::validate::Validation;

/// Reconciles one engine (the controller's entry point).
pub(crate) async fn reconcile_engine(
    engine: Arc<DetectionEngine>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.with_label_values(&["engine"]).inc();
    if engine.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Never aggregate from a rule set cache that has not listed yet: that
    // would roll out an empty rule set.
    if !store_ready(&ctx.rule_sets) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let result = reconcile(&engine, &ctx).await;
    // An engine's objects go with it through their owner references; its
    // rollout state goes here.
    conclude(&ctx, engine.as_ref(), result, |uid| {
        ctx.reset_sync(uid);
        let labels = [engine.namespace().unwrap_or_default(), engine.name_any()];
        let labels = [labels[0].as_str(), labels[1].as_str()];
        let _ = ctx
            .metrics
            .engine_rules_in_sync
            .remove_label_values(&labels);
        let _ = ctx.metrics.engine_degraded.remove_label_values(&labels);
    })
    .await
}

async fn reconcile(engine: &DetectionEngine, ctx: &Context) -> Result<Action, Error> {
    let view = EngineView::new(engine);
    if let Some(problem) = spec_problem(engine, ctx.config.default_daemon_image.as_deref()) {
        return report_spec_problem(ctx, engine, &view, problem).await;
    }
    let live = LiveRules::fetch(ctx, &view).await?;
    let candidates = select(ctx, engine, &view, &live).await?;
    let plan = plan(ctx, &candidates).await;
    let desired_hash = roll_out(ctx, engine, &view, &plan, &live).await?;
    let pods = sync_pods(ctx, engine, &view, desired_hash.as_deref()).await?;
    let status = engine_status(
        &view,
        engine,
        &candidates,
        &plan,
        &live,
        &pods,
        desired_hash.clone(),
    );
    publish_reload_failure(ctx, engine, &view, &status).await;
    record_conditions(ctx, &view, &status);
    let api: Api<DetectionEngine> = Api::namespaced(ctx.client.clone(), &view.namespace);
    if apply_status(&api, engine, engine.status.as_ref(), &status, ENGINE_LISTS).await? {
        let sync = find(&status.conditions, RULES_IN_SYNC);
        tracing::info!(
            namespace = %view.namespace, name = %view.name,
            rules_in_sync = %sync.map(|c| c.status.as_str()).unwrap_or_default(),
            reason = %sync.map(|c| c.reason.as_str()).unwrap_or_default(),
            "engine status updated"
        );
    }
    Ok(next_look(ctx, &view, &plan, &pods, desired_hash.as_deref()))
}

/// What every step needs to know of the engine.
struct EngineView {
    namespace: String,
    name: String,
    uid: String,
    generation: Option<i64>,
    previous: DetectionEngineStatus,
}

impl EngineView {
    fn new(engine: &DetectionEngine) -> EngineView {
        EngineView {
            namespace: engine.namespace().unwrap_or_default(),
            name: engine.name_any(),
            uid: engine.uid().unwrap_or_default(),
            generation: engine.metadata.generation,
            previous: engine.status.clone().unwrap_or_default(),
        }
    }

    /// A condition carrying over its transition time from the previous status.
    fn cond(&self, type_: &str, status: &str, reason: &str, message: String) -> Condition {
        condition(
            &self.previous.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
        )
    }
}

// ---------------------------------------------------------------------------
// 1. The spec
// ---------------------------------------------------------------------------

/// Why the spec cannot be deployed (the API server of Kubernetes before 1.25
/// does not enforce the CRD's CEL rules), if it cannot.
fn spec_problem(engine: &DetectionEngine, default_image: Option<&str>) -> Option<String> {
    if let Err(problem) = resources::check_spec(engine) {
        return Some(problem);
    }
    if resources::daemon_image(engine, default_image).is_none() {
        return Some(
            "no daemon image: set spec.image, or run the operator with --default-daemon-image (chart value engineDefaults.image)"
                .to_owned(),
        );
    }
    let selector = engine.spec.rule_set_selector.as_ref()?;
    selector_matches(selector, &BTreeMap::new())
        .err()
        .map(|err| format!("ruleSetSelector: {err}"))
}

/// Reports an undeployable spec: Ready and Progressing false, nothing applied.
async fn report_spec_problem(
    ctx: &Context,
    engine: &DetectionEngine,
    view: &EngineView,
    message: String,
) -> Result<Action, Error> {
    tracing::warn!(namespace = %view.namespace, name = %view.name, %message, "invalid engine spec");
    let mut status = view.previous.clone();
    status.observed_generation = view.generation;
    let mut conditions = vec![
        view.cond(READY, FALSE, "InvalidSpec", message.clone()),
        view.cond(PROGRESSING, FALSE, "InvalidSpec", message),
    ];
    conditions.extend(
        view.previous
            .conditions
            .iter()
            .filter(|c| c.type_ != READY && c.type_ != PROGRESSING)
            .cloned(),
    );
    status.conditions = conditions;
    let api: Api<DetectionEngine> = Api::namespaced(ctx.client.clone(), &view.namespace);
    apply_status(&api, engine, engine.status.as_ref(), &status, ENGINE_LISTS).await?;
    Ok(Action::await_change())
}

// ---------------------------------------------------------------------------
// 2. The rule sets
// ---------------------------------------------------------------------------

/// What the engine's rules ConfigMap holds now.
struct LiveRules {
    hash: Option<String>,
    /// Rule set name → content hash, of the sets it holds.
    included: BTreeMap<String, String>,
    /// Rule set name → why it was left out.
    rejected: BTreeMap<String, String>,
}

impl LiveRules {
    async fn fetch(ctx: &Context, view: &EngineView) -> Result<LiveRules, Error> {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &view.namespace);
        let live = api
            .get_opt(&resources::rules_config_map_name(&view.name))
            .await?;
        let (included, rejected) = live
            .as_ref()
            .map(resources::read_config_map_annotations)
            .unwrap_or_default();
        Ok(LiveRules {
            hash: live
                .as_ref()
                .and_then(|cm| cm.annotations().get(RULES_HASH_ANNOTATION).cloned()),
            included,
            rejected,
        })
    }
}

/// Which content of a selected rule set the engine loads.
enum Serving {
    /// Its current content (valid).
    Current,
    /// Its current content is invalid: its last valid content.
    LastValid(Arc<LastValid>),
    /// Invalid, served by the pods, and its last valid content is unknown
    /// (the operator restarted since): nothing can be rolled out.
    Unknown,
    /// Invalid and never served: left out.
    LeftOut,
}

/// A rule set selected by an engine, resolved and validated.
pub(crate) struct Candidate {
    pub(crate) set: MaterializedRuleSet,
    pub(crate) validation: Arc<Validation>,
    serving: Serving,
}

impl Candidate {
    /// The content the engine loads of this set, if any.
    fn loaded(&self) -> Option<&MaterializedRuleSet> {
        match &self.serving {
            Serving::Current => Some(&self.set),
            Serving::LastValid(last) => Some(&last.set),
            Serving::Unknown | Serving::LeftOut => None,
        }
    }
}

/// The rule sets of the engine's namespace that it selects, by name, each
/// resolved to files, validated and assigned the content to serve.
async fn select(
    ctx: &Context,
    engine: &DetectionEngine,
    view: &EngineView,
    live: &LiveRules,
) -> Result<Vec<Candidate>, Error> {
    let mut selected: Vec<Arc<SigmaRuleSet>> = ctx
        .rule_sets
        .state()
        .into_iter()
        .filter(|rs| rs.namespace().as_deref() == Some(view.namespace.as_str()))
        .filter(|rs| engine.selects(rs).unwrap_or(false))
        .collect();
    selected.sort_by_key(|rs| rs.name_any());
    let mut candidates = Vec::with_capacity(selected.len());
    for rs in &selected {
        let config_maps = fetch_config_maps(&ctx.client, rs).await?;
        let set = resources::materialize(rs, &config_maps);
        let validation = ctx.cache.rule_set(&set).await;
        let uid = rs.uid().unwrap_or_default();
        let serving = if validation.is_valid() {
            ctx.remember_valid(&uid, rs.metadata.generation, &set);
            Serving::Current
        } else if let Some(last) = ctx.last_valid(&uid) {
            Serving::LastValid(last)
        } else if live.included.contains_key(&set.name) {
            Serving::Unknown
        } else {
            Serving::LeftOut
        };
        candidates.push(Candidate {
            set,
            validation,
            serving,
        });
    }
    Ok(candidates)
}

// ---------------------------------------------------------------------------
// 3. The plan
// ---------------------------------------------------------------------------

/// Which of the loadable rule sets load together, and what they make.
pub(crate) struct Plan {
    pub(crate) aggregate: Aggregate,
    pub(crate) rejected: BTreeMap<String, String>,
    /// Why nothing can be rolled out (the pods keep what they have).
    blocking: Option<String>,
}

async fn plan(ctx: &Context, candidates: &[Candidate]) -> Plan {
    let unknown: Vec<&str> = candidates
        .iter()
        .filter(|c| matches!(c.serving, Serving::Unknown))
        .map(|c| c.set.name.as_str())
        .collect();
    let mut loadable: Vec<&MaterializedRuleSet> =
        candidates.iter().filter_map(Candidate::loaded).collect();
    let mut rejected = BTreeMap::new();
    loop {
        let aggregate = resources::aggregate(&loadable);
        if !unknown.is_empty() {
            let blocking = format!(
                "rule set(s) {} are invalid and their last valid content is not known to this operator instance; the pods keep their current rules until they are fixed",
                unknown.join(", ")
            );
            return Plan {
                aggregate,
                rejected,
                blocking: Some(blocking),
            };
        }
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
            loadable.retain(|c| &c.name != set);
        }
    }
}

// ---------------------------------------------------------------------------
// 4. The objects
// ---------------------------------------------------------------------------

/// Applies the engine's objects for `plan` and returns the rules hash the
/// pods must load: the planned one, or with a blocking plan the live one.
async fn roll_out(
    ctx: &Context,
    engine: &DetectionEngine,
    view: &EngineView,
    plan: &Plan,
    live: &LiveRules,
) -> Result<Option<String>, Error> {
    if let Some(blocking) = &plan.blocking {
        tracing::warn!(namespace = %view.namespace, name = %view.name, reason = %blocking, "rules not rolled out");
        return Ok(live.hash.clone());
    }
    let annotations = resources::config_map_annotations(&plan.aggregate.rule_sets, &plan.rejected);
    let image = resources::daemon_image(engine, ctx.config.default_daemon_image.as_deref())
        .expect("spec_problem checked the image");
    let desired = resources::desired(engine, &plan.aggregate, annotations, image);
    // Dependency order: what the Deployment's pods need exists before them
    // (with the ServiceAccount admission plugin, a pod whose account is
    // missing is refused).
    if let Some(sa) = &desired.service_account {
        apply_if_changed(ctx, sa).await?;
    }
    apply_if_changed(ctx, &desired.config_map).await?;
    if let Some(pvc) = &desired.pvc {
        apply_if_changed::<PersistentVolumeClaim>(ctx, pvc).await?;
    }
    apply_if_changed(ctx, &desired.service).await?;
    apply_if_changed(ctx, &desired.deployment).await?;
    if let Some(pdb) = &desired.pdb {
        apply_if_changed(ctx, pdb).await?;
    } else {
        delete_owned::<PodDisruptionBudget>(ctx, engine, &view.name).await?;
    }
    // Not when the spec names the engine's own account: the pods use it.
    if desired.service_account.is_none()
        && engine.spec.service_account_name.as_deref() != Some(view.name.as_str())
    {
        delete_owned::<ServiceAccount>(ctx, engine, &view.name).await?;
    }
    if desired.pvc.is_none() {
        delete_owned::<PersistentVolumeClaim>(
            ctx,
            engine,
            &resources::state_claim_name(&view.name),
        )
        .await?;
    }
    for (set, reason) in &plan.rejected {
        if live.rejected.get(set) != Some(reason) {
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
    let hash = plan.aggregate.rules_hash.clone();
    if live.hash.as_deref() != Some(hash.as_str()) {
        publish_rules_updated(ctx, engine, view, &plan.aggregate, &desired.config_map).await;
    }
    Ok(Some(hash))
}

/// Deletes the engine's object `name` of kind `K` when it exists and this
/// engine controls it (an object no longer desired, e.g. the claim after
/// persistence was switched off, or the account after the spec named one).
async fn delete_owned<K>(ctx: &Context, engine: &DetectionEngine, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = engine.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(object) = api.get_opt(name).await? else {
        return Ok(());
    };
    let uid = engine.uid();
    let controlled = object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
    if controlled {
        api.delete(name, &DeleteParams::default()).await?;
        tracing::info!(kind = %K::kind(&()), %namespace, %name, "deleted (no longer desired)");
    }
    Ok(())
}

/// The `RulesUpdated` event. It names the rules ConfigMap at its new
/// resourceVersion as the related object, so that each rollout is an event
/// of its own (events with the same reason and related object are counted
/// as one series, which would keep the first note).
async fn publish_rules_updated(
    ctx: &Context,
    engine: &DetectionEngine,
    view: &EngineView,
    aggregate: &Aggregate,
    config_map: &ConfigMap,
) {
    tracing::info!(
        namespace = %view.namespace, name = %view.name,
        rules_hash = %aggregate.rules_hash,
        rule_sets = aggregate.rule_sets.len(),
        "rules updated"
    );
    let related = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("ConfigMap".to_owned()),
        namespace: Some(view.namespace.clone()),
        name: config_map.metadata.name.clone(),
        resource_version: ctx.applied_version::<ConfigMap>(
            &view.namespace,
            config_map.metadata.name.as_deref().unwrap_or_default(),
        ),
        ..ObjectReference::default()
    };
    ctx.publish(
        engine,
        KubeEvent {
            type_: EventType::Normal,
            reason: "RulesUpdated".into(),
            note: Some(format!(
                "rules hash {} from {} rule set(s)",
                short_hash(&aggregate.rules_hash),
                aggregate.rule_sets.len()
            )),
            action: "UpdateRules".into(),
            secondary: Some(related),
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// 5. The pods
// ---------------------------------------------------------------------------

/// A pod of an engine and where its API answers.
struct PodTarget {
    name: String,
    ready: bool,
    endpoint: Option<Endpoint>,
}

fn pod_targets(engine: &DetectionEngine, pods: Vec<Pod>) -> Vec<PodTarget> {
    let scheme = if engine.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut out: Vec<PodTarget> = pods
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
            PodTarget {
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
    metrics: &'a crate::http::Metrics,
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

/// Where the pods stand with the desired rules.
struct PodsSync {
    total: usize,
    ready: usize,
    in_sync: usize,
    failed: Vec<String>,
    waiting: Vec<String>,
    status: Vec<PodRulesStatus>,
}

/// Asks every pod to load `desired_hash` (when there is one) and collects
/// what each reports.
async fn sync_pods(
    ctx: &Context,
    engine: &DetectionEngine,
    view: &EngineView,
    desired_hash: Option<&str>,
) -> Result<PodsSync, Error> {
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &view.namespace);
    let pods = pod_api
        .list(&ListParams::default().labels(&resources::selector_string(&view.name)))
        .await?
        .items;
    let targets = pod_targets(engine, pods);
    let counting = Counting {
        inner: ctx.pods.as_ref(),
        metrics: &ctx.metrics,
    };
    let outcomes: Vec<Option<PodSync>> = futures::future::join_all(targets.iter().map(|t| {
        let counting = &counting;
        async move {
            match (&t.endpoint, desired_hash) {
                (Some(ep), Some(hash)) => Some(sync_pod(counting, ep, hash, ctx.config.sync).await),
                _ => None,
            }
        }
    }))
    .await;
    let mut sync = PodsSync {
        total: targets.len(),
        ready: targets.iter().filter(|t| t.ready).count(),
        in_sync: 0,
        failed: Vec::new(),
        waiting: Vec::new(),
        status: Vec::new(),
    };
    for (t, outcome) in targets.iter().zip(&outcomes) {
        let (rules_hash, message) = match (outcome, desired_hash) {
            (Some(o), Some(h)) => (o.loaded_hash(h).map(str::to_owned), o.message()),
            (None, _) if t.endpoint.is_none() => (None, Some("no pod IP yet".to_owned())),
            _ => (None, None),
        };
        match outcome {
            Some(PodSync::InSync { reloaded }) => {
                sync.in_sync += 1;
                if *reloaded {
                    tracing::info!(namespace = %view.namespace, engine = %view.name, pod = %t.name, "pod reloaded the rules");
                }
            }
            Some(PodSync::Failed { error, .. }) => {
                ctx.metrics.reload_failures.inc();
                sync.failed.push(format!("pod {}: {error}", t.name));
            }
            Some(other) => sync.waiting.push(format!(
                "pod {}: {}",
                t.name,
                other.message().unwrap_or_default()
            )),
            None => sync.waiting.push(format!(
                "pod {}: {}",
                t.name,
                message
                    .clone()
                    .unwrap_or_else(|| "not reachable yet".to_owned())
            )),
        }
        sync.status.push(PodRulesStatus {
            name: t.name.clone(),
            rules_hash,
            ready: t.ready,
            message,
        });
    }
    Ok(sync)
}

// ---------------------------------------------------------------------------
// 6. The status
// ---------------------------------------------------------------------------

/// The engine's status for what the steps found (no I/O).
fn engine_status(
    view: &EngineView,
    engine: &DetectionEngine,
    candidates: &[Candidate],
    plan: &Plan,
    live: &LiveRules,
    pods: &PodsSync,
    desired_hash: Option<String>,
) -> DetectionEngineStatus {
    let rules_in_sync = rules_in_sync_condition(view, plan, pods, desired_hash.as_deref());
    let ready = ready_condition(view, engine.spec.replicas.max(0) as usize, pods.ready);
    let progressing = match (ready.status.as_str(), rules_in_sync.reason.as_str()) {
        (_, "Reloading") => view.cond(
            PROGRESSING,
            TRUE,
            "RulesChanging",
            rules_in_sync.message.clone(),
        ),
        (FALSE, _) => view.cond(PROGRESSING, TRUE, "RollingOut", ready.message.clone()),
        _ => view.cond(PROGRESSING, FALSE, "Stable", "nothing under way".to_owned()),
    };
    DetectionEngineStatus {
        observed_generation: view.generation,
        conditions: vec![
            ready,
            progressing,
            rules_in_sync,
            rule_sets_condition(view, candidates, plan, live),
            degraded_condition(view, candidates, plan),
        ],
        replicas: Some(pods.total as i32),
        ready_replicas: Some(pods.ready as i32),
        selector: Some(resources::selector_string(&view.name)),
        desired_rules_hash: desired_hash,
        pods: pods.status.clone(),
    }
}

fn rules_in_sync_condition(
    view: &EngineView,
    plan: &Plan,
    pods: &PodsSync,
    desired_hash: Option<&str>,
) -> Condition {
    let n_pods = pods.total;
    let hash_short = desired_hash.map(short_hash).unwrap_or_default();
    if let Some(blocking) = &plan.blocking {
        view.cond(
            RULES_IN_SYNC,
            FALSE,
            "InvalidRules",
            format!(
                "the selected rule sets cannot be rolled out; the pods keep their current rules: {blocking}"
            ),
        )
    } else if n_pods == 0 {
        view.cond(
            RULES_IN_SYNC,
            UNKNOWN,
            "NoPods",
            "no running pod of the engine yet".to_owned(),
        )
    } else if !pods.failed.is_empty() {
        view.cond(
            RULES_IN_SYNC,
            FALSE,
            "ReloadFailed",
            format!(
                "{} of {n_pods} pods cannot load rules hash {hash_short} and keep their previous rules: {}",
                pods.failed.len(),
                pods.failed.join("; ")
            ),
        )
    } else if pods.in_sync < n_pods {
        view.cond(
            RULES_IN_SYNC,
            FALSE,
            "Reloading",
            format!(
                "{} of {n_pods} pods report rules hash {hash_short}; {}",
                pods.in_sync,
                pods.waiting.join("; ")
            ),
        )
    } else {
        view.cond(
            RULES_IN_SYNC,
            TRUE,
            "InSync",
            format!("all {n_pods} pods report rules hash {hash_short}"),
        )
    }
}

fn ready_condition(view: &EngineView, replicas: usize, ready: usize) -> Condition {
    if replicas == 0 {
        view.cond(
            READY,
            TRUE,
            "ScaledToZero",
            "no replicas requested".to_owned(),
        )
    } else if ready >= replicas {
        view.cond(
            READY,
            TRUE,
            "ReplicasReady",
            format!("{ready}/{replicas} pods ready"),
        )
    } else {
        view.cond(
            READY,
            FALSE,
            "ReplicasNotReady",
            format!("{ready}/{replicas} pods ready"),
        )
    }
}

/// `RuleSetsSelected`: which selected rule sets are loaded, and which left
/// out. With a blocked rollout, what the pods keep is the live ConfigMap's.
fn rule_sets_condition(
    view: &EngineView,
    candidates: &[Candidate],
    plan: &Plan,
    live: &LiveRules,
) -> Condition {
    if candidates.is_empty() {
        return view.cond(
            RULE_SETS_SELECTED,
            FALSE,
            "NoRuleSets",
            format!(
                "no SigmaRuleSet in namespace {} is selected by this engine: it runs with no rules",
                view.namespace
            ),
        );
    }
    let loaded: Vec<&str> = if plan.blocking.is_some() {
        live.included.keys().map(String::as_str).collect()
    } else {
        plan.aggregate
            .rule_sets
            .keys()
            .map(String::as_str)
            .collect()
    };
    let mut left_out: Vec<String> = candidates
        .iter()
        .filter(|c| matches!(c.serving, Serving::LeftOut))
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
        message.push_str(&loaded.join(", "));
    }
    if !left_out.is_empty() {
        message.push_str("; left out: ");
        message.push_str(&left_out.join("; "));
    }
    if loaded.is_empty() {
        view.cond(RULE_SETS_SELECTED, FALSE, "NoValidRuleSets", message)
    } else {
        view.cond(RULE_SETS_SELECTED, TRUE, "RuleSetsLoaded", message)
    }
}

/// `Degraded`: true while some selected rule set is not served at its
/// current content (invalid, or left out of the aggregate).
fn degraded_condition(view: &EngineView, candidates: &[Candidate], plan: &Plan) -> Condition {
    let mut problems = Vec::new();
    for c in candidates {
        let first = first_error(&c.validation.errors);
        match &c.serving {
            Serving::Current => {}
            Serving::LastValid(last) => problems.push(format!(
                "rule set {} is invalid ({first}); the pods serve its last valid content (generation {}, hash {})",
                c.set.name,
                last.generation.map(|g| g.to_string()).unwrap_or_else(|| "?".to_owned()),
                short_hash(&last.set.content_hash)
            )),
            Serving::Unknown => problems.push(format!(
                "rule set {} is invalid ({first}); its last valid content is unknown, so no rules change reaches the pods",
                c.set.name
            )),
            Serving::LeftOut => problems.push(format!(
                "rule set {} is invalid and was never loaded ({first})",
                c.set.name
            )),
        }
    }
    problems.extend(
        plan.rejected
            .keys()
            .map(|set| format!("rule set {set} is left out (it does not load with the others)")),
    );
    if problems.is_empty() {
        view.cond(
            DEGRADED,
            FALSE,
            "AsExpected",
            "every selected rule set is served at its current content".to_owned(),
        )
    } else {
        view.cond(DEGRADED, TRUE, "InvalidRuleSets", problems.join("; "))
    }
}

/// The per-engine gauges of RulesInSync and Degraded.
fn record_conditions(ctx: &Context, view: &EngineView, status: &DetectionEngineStatus) {
    let labels = [view.namespace.as_str(), view.name.as_str()];
    let is_true =
        |type_: &str| i64::from(find(&status.conditions, type_).is_some_and(|c| c.status == TRUE));
    ctx.metrics
        .engine_rules_in_sync
        .with_label_values(&labels)
        .set(is_true(RULES_IN_SYNC));
    ctx.metrics
        .engine_degraded
        .with_label_values(&labels)
        .set(is_true(DEGRADED));
}

/// A `ReloadFailed` warning event when the failure is new.
async fn publish_reload_failure(
    ctx: &Context,
    engine: &DetectionEngine,
    view: &EngineView,
    status: &DetectionEngineStatus,
) {
    let Some(sync) = find(&status.conditions, RULES_IN_SYNC) else {
        return;
    };
    let previous = find(&view.previous.conditions, RULES_IN_SYNC);
    if sync.reason == "ReloadFailed"
        && previous.map(|c| (&c.reason, &c.message)) != Some((&sync.reason, &sync.message))
    {
        ctx.publish(
            engine,
            KubeEvent {
                type_: EventType::Warning,
                reason: "ReloadFailed".into(),
                note: Some(sync.message.chars().take(1000).collect()),
                action: "ReloadRules".into(),
                secondary: None,
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// 7. When to look again
// ---------------------------------------------------------------------------

/// Settled (or nothing a retry could change): the periodic resync; a
/// rollout under way: soon (see [`Context::next_sync_delay`]).
fn next_look(
    ctx: &Context,
    view: &EngineView,
    plan: &Plan,
    pods: &PodsSync,
    desired_hash: Option<&str>,
) -> Action {
    match desired_hash {
        Some(hash) if plan.blocking.is_none() && pods.total > 0 && pods.in_sync < pods.total => {
            Action::requeue(ctx.next_sync_delay(&view.uid, hash, pods.failed.is_empty()))
        }
        _ => {
            ctx.reset_sync(&view.uid);
            Action::requeue(ctx.config.resync)
        }
    }
}

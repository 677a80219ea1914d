//! The SigmaRuleSet reconciler: validation with the real engine, the content
//! engines serve (the current one while valid, else the last valid one),
//! one binding per selecting engine, and the status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, ResourceExt};
use rsigma_crds::conditions::{APPLIED, FALSE, RULES_IN_SYNC, TRUE, VALID};
use rsigma_crds::selection::selector_matches;
use rsigma_crds::{
    Binding, DetectionEngine, RuleErrorStatus, SigmaRuleSet, SigmaRuleSetStatus, short_hash,
};

use crate::controller::{
    Context, Error, MAX_RULE_ERRORS, RULE_SET_LISTS, conclude, fetch_config_maps, first_error,
    store_ready,
};
use crate::resources::{self, RULES_HASH_ANNOTATION};
use crate::status::{apply_status, condition, find};

/// Reconciles one rule set (the controller's entry point).
pub(crate) async fn reconcile_rule_set(
    rule_set: Arc<SigmaRuleSet>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.with_label_values(&["ruleset"]).inc();
    if rule_set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !store_ready(&ctx.engines) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let result = reconcile_rule_set_inner(&rule_set, &ctx).await;
    conclude(&ctx, rule_set.as_ref(), result, |_| {}).await
}

async fn reconcile_rule_set_inner(rule_set: &SigmaRuleSet, ctx: &Context) -> Result<Action, Error> {
    let view = SetView::new(rule_set);
    let config_maps = fetch_config_maps(&ctx.client, rule_set).await?;
    let set = resources::materialize(rule_set, &config_maps);
    let validation = ctx.cache.rule_set(&set).await;
    let uid = rule_set.uid().unwrap_or_default();
    if validation.is_valid() {
        ctx.remember_valid(&uid, view.generation, &set);
    }
    let errors = spec_errors(rule_set, &validation.errors);
    let valid = errors.is_empty();
    ctx.update_validity(&uid, valid);
    let serving = serving(
        ctx,
        &view,
        &uid,
        valid,
        validation.is_valid(),
        &set.content_hash,
    );

    let bindings = bindings(ctx, rule_set, &view, valid, &set.content_hash, &serving).await?;
    let mut status = SigmaRuleSetStatus {
        observed_generation: view.generation,
        conditions: vec![
            valid_condition(&view, &errors, &validation, &serving),
            applied_condition(&view, valid, &bindings),
        ],
        rule_errors: errors.iter().take(MAX_RULE_ERRORS).cloned().collect(),
        rule_count: Some((validation.detection_count + validation.correlation_count) as i32),
        correlation_count: Some(validation.correlation_count as i32),
        content_hash: None,
        short_hash: None,
        serving_generation: serving.as_ref().and_then(|s| s.0),
        serving_content_hash: serving.as_ref().map(|s| s.1.clone()),
        bindings,
    };
    status.set_content_hash(set.content_hash.clone());

    let newly_invalid = !valid
        && (view.previous.content_hash.as_deref() != Some(set.content_hash.as_str())
            || find(&view.previous.conditions, VALID).is_none_or(|c| c.status != FALSE));
    let api: Api<SigmaRuleSet> = Api::namespaced(ctx.client.clone(), &view.namespace);
    if apply_status(
        &api,
        rule_set,
        rule_set.status.as_ref(),
        &status,
        RULE_SET_LISTS,
    )
    .await?
    {
        tracing::info!(namespace = %view.namespace, name = %view.name, valid, hash = %short_hash(&set.content_hash), "rule set status updated");
    }
    if newly_invalid {
        publish_invalid(ctx, rule_set, &view, &errors).await;
    }
    Ok(Action::requeue(ctx.config.resync))
}

/// What every step needs to know of the rule set.
struct SetView {
    namespace: String,
    name: String,
    generation: Option<i64>,
    previous: SigmaRuleSetStatus,
}

impl SetView {
    fn new(rule_set: &SigmaRuleSet) -> SetView {
        SetView {
            namespace: rule_set.namespace().unwrap_or_default(),
            name: rule_set.name_any(),
            generation: rule_set.metadata.generation,
            previous: rule_set.status.clone().unwrap_or_default(),
        }
    }

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

/// The rules' errors plus those of the spec itself (an invalid
/// engineSelector, a set with nothing in it).
fn spec_errors(rule_set: &SigmaRuleSet, rule_errors: &[RuleErrorStatus]) -> Vec<RuleErrorStatus> {
    let mut errors = rule_errors.to_vec();
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
    errors
}

/// (generation, content hash) of what engines serve of this set: the
/// current content while valid; while its rules are invalid, the last valid
/// content this operator remembers, else the one the previous status
/// recorded; `None` when the set was never valid, or when only the spec is
/// wrong (an empty set, a bad engineSelector: engines then load nothing of
/// it). The engine reconciler decides the same way from the rules alone.
fn serving(
    ctx: &Context,
    view: &SetView,
    uid: &str,
    valid: bool,
    rules_valid: bool,
    content_hash: &str,
) -> Option<(Option<i64>, String)> {
    if valid {
        return Some((view.generation, content_hash.to_owned()));
    }
    if rules_valid {
        return None;
    }
    if let Some(last) = ctx.last_valid(uid) {
        return Some((last.generation, last.set.content_hash.clone()));
    }
    view.previous
        .serving_content_hash
        .clone()
        .map(|hash| (view.previous.serving_generation, hash))
}

fn describe_serving(serving: &(Option<i64>, String)) -> String {
    match serving.0 {
        Some(generation) => format!("generation {generation} ({})", short_hash(&serving.1)),
        None => format!("content {}", short_hash(&serving.1)),
    }
}

fn valid_condition(
    view: &SetView,
    errors: &[RuleErrorStatus],
    validation: &crate::validate::Validation,
    serving: &Option<(Option<i64>, String)>,
) -> Condition {
    if errors.is_empty() {
        return view.cond(
            VALID,
            TRUE,
            "RulesValid",
            format!(
                "{} detection, {} correlation and {} filter rules parsed and compiled",
                validation.detection_count, validation.correlation_count, validation.filter_count
            ),
        );
    }
    let consequence = match serving {
        Some(serving) => format!(
            "engines keep serving the last valid {} until it is fixed",
            describe_serving(serving)
        ),
        None => "the rule set is not loaded by any engine until fixed".to_owned(),
    };
    view.cond(
        VALID,
        FALSE,
        "InvalidRules",
        format!(
            "{} problem(s); {consequence}. First: {}",
            errors.len(),
            first_error(errors)
        ),
    )
}

/// One binding per engine of the namespace that selects the set.
async fn bindings(
    ctx: &Context,
    rule_set: &SigmaRuleSet,
    view: &SetView,
    valid: bool,
    content_hash: &str,
    serving: &Option<(Option<i64>, String)>,
) -> Result<Vec<Binding>, Error> {
    let mut engines: Vec<Arc<DetectionEngine>> = ctx
        .engines
        .state()
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(view.namespace.as_str()))
        .filter(|e| e.selects(rule_set).unwrap_or(false))
        .collect();
    engines.sort_by_key(|e| e.name_any());
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &view.namespace);
    let mut bindings = Vec::new();
    for engine in &engines {
        let engine_name = engine.name_any();
        let cm = cm_api
            .get_opt(&resources::rules_config_map_name(&engine_name))
            .await?;
        let condition = binding_condition(view, engine, cm.as_ref(), valid, content_hash, serving);
        bindings.push(Binding {
            engine: engine_name,
            conditions: vec![condition],
        });
    }
    Ok(bindings)
}

/// The `Applied` condition of one binding, from the engine's rules
/// ConfigMap (which sets it holds, at which content) and its status.
fn binding_condition(
    view: &SetView,
    engine: &DetectionEngine,
    cm: Option<&ConfigMap>,
    valid: bool,
    content_hash: &str,
    serving: &Option<(Option<i64>, String)>,
) -> Condition {
    let engine_name = engine.name_any();
    let previous: Vec<Condition> = view
        .previous
        .bindings
        .iter()
        .find(|b| b.engine == engine_name)
        .map(|b| b.conditions.clone())
        .unwrap_or_default();
    let bcond = |status: &str, reason: &str, message: String| {
        condition(&previous, APPLIED, status, reason, message, view.generation)
    };
    let (included, rejected) = cm
        .map(resources::read_config_map_annotations)
        .unwrap_or_default();
    let cm_hash = cm.and_then(|cm| cm.annotations().get(RULES_HASH_ANNOTATION).cloned());
    let engine_status = engine.status.clone().unwrap_or_default();
    let sync = find(&engine_status.conditions, RULES_IN_SYNC);
    if !valid {
        return match serving {
            Some(serving) if included.get(&view.name) == Some(&serving.1) => bcond(
                FALSE,
                "ServingLastValid",
                format!(
                    "engine {engine_name} serves the last valid {}: the current content is invalid",
                    describe_serving(serving)
                ),
            ),
            _ => bcond(
                FALSE,
                "Invalid",
                "not loaded: the rule set is invalid".to_owned(),
            ),
        };
    }
    if let Some(reason) = rejected.get(&view.name) {
        return bcond(
            FALSE,
            "Rejected",
            format!("left out by engine {engine_name}: {reason}"),
        );
    }
    if included.get(&view.name).map(String::as_str) != Some(content_hash) {
        return bcond(
            FALSE,
            "Pending",
            format!("engine {engine_name} has not picked up this content yet"),
        );
    }
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
}

/// `Applied`: every selecting engine loads the current content.
fn applied_condition(view: &SetView, valid: bool, bindings: &[Binding]) -> Condition {
    if !valid {
        return view.cond(
            APPLIED,
            FALSE,
            "Invalid",
            "the current content is invalid: no engine loads it".to_owned(),
        );
    }
    if bindings.is_empty() {
        return view.cond(
            APPLIED,
            FALSE,
            "NoEngine",
            format!(
                "no DetectionEngine in namespace {} selects this rule set",
                view.namespace
            ),
        );
    }
    match bindings
        .iter()
        .filter_map(|b| b.conditions.first())
        .find(|c| c.status != TRUE)
    {
        None => view.cond(
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
        ),
        Some(first) => view.cond(APPLIED, FALSE, &first.reason, first.message.clone()),
    }
}

/// The `InvalidRules` warning event (once per invalid content).
async fn publish_invalid(
    ctx: &Context,
    rule_set: &SigmaRuleSet,
    view: &SetView,
    errors: &[RuleErrorStatus],
) {
    tracing::warn!(namespace = %view.namespace, name = %view.name, error = %first_error(errors), "invalid rule set");
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

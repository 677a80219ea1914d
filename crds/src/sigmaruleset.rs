//! `SigmaRuleSet`: a namespaced set of Sigma rules (and the pipelines they
//! need) that one or more `DetectionEngine`s load.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a `SigmaRuleSet`.
///
/// Rules come from `rules` (inline YAML texts) and/or `configMapRefs`; at least
/// one source is required. Which engines load the set is decided by the
/// engines' `ruleSetSelector` and, on this side, by `engineSelector` or
/// `engineRef` (at most one of the two).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "rsigma.io",
    version = "v1alpha1",
    kind = "SigmaRuleSet",
    plural = "sigmarulesets",
    singular = "sigmaruleset",
    shortname = "srs",
    category = "rsigma",
    namespaced,
    status = "SigmaRuleSetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A set of Sigma rules (inline and/or from ConfigMaps) and the processing pipelines they need, loaded by the DetectionEngines that select it.",
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status",
        description = "Whether every rule parsed and compiled"
    ),
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.ruleCount",
        description = "Rules that compiled (detections and correlations)"
    ),
    printcolumn(
        name = "Hash",
        type_ = "string",
        json_path = ".status.shortHash",
        description = "First 12 hex digits of the content hash"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.engineSelector) && has(self.engineRef))",
        "message": "engineSelector and engineRef are mutually exclusive"
    },
    {
        "rule": "(has(self.rules) && size(self.rules) > 0) || (has(self.configMapRefs) && size(self.configMapRefs) > 0)",
        "message": "a SigmaRuleSet needs at least one inline rule or ConfigMap reference"
    }
]))]
pub struct SigmaRuleSetSpec {
    /// Inline Sigma rules. Each entry is one YAML text, which may hold several
    /// documents separated by `---` (detection rules, correlation rules,
    /// filters, and action-list shorthand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,

    /// ConfigMaps in the same namespace holding rule files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub config_map_refs: Vec<ConfigMapRuleRef>,

    /// Processing pipelines applied to these rules, in order: a builtin name
    /// (`ecs_windows`, `sysmon`) or an inline pipeline YAML text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub pipelines: Vec<String>,

    /// Only DetectionEngines whose labels match this selector load the set.
    /// Mutually exclusive with `engineRef`. Absent: every engine whose
    /// `ruleSetSelector` selects this set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_selector: Option<LabelSelector>,

    /// Only the DetectionEngine of this name (same namespace) loads the set.
    /// Mutually exclusive with `engineSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub engine_ref: Option<String>,
}

impl SigmaRuleSetSpec {
    /// The CEL rules of the CRD, checked in Rust (same messages), for API
    /// servers before 1.25 that do not enforce them. Empty: valid.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.engine_selector.is_some() && self.engine_ref.is_some() {
            out.push("engineSelector and engineRef are mutually exclusive".to_owned());
        }
        if self.rules.is_empty() && self.config_map_refs.is_empty() {
            out.push(
                "a SigmaRuleSet needs at least one inline rule or ConfigMap reference".to_owned(),
            );
        }
        out
    }
}

/// A ConfigMap (same namespace) holding Sigma rule files.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRuleRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key to read. Absent: every key ending in `.yml` or `.yaml`, in key order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// Observed state of a `SigmaRuleSet`, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigmaRuleSetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Valid`: every rule parsed and compiled. `Applied`: every engine that
    /// selects the set has loaded its current content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// One entry per rule (or document) that failed to parse or compile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_errors: Vec<RuleErrorStatus>,

    /// Rules that compiled: detection rules plus correlation rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_count: Option<i32>,

    /// Correlation rules among `ruleCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_count: Option<i32>,

    /// SHA-256 (hex) of this set's content (rules, ConfigMap data, pipelines)
    /// as the operator materialises it, computed like the daemon's rules hash
    /// (`rsigma_engine::RulesDigest`). It changes whenever the content does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,

    /// The first 12 hex digits of `contentHash` (printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_hash: Option<String>,

    /// The generation of the content engines serve: the current one while
    /// it is valid, else the last valid one (engines keep serving that
    /// content while the current generation is invalid). Unset until the set
    /// was valid once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_generation: Option<i64>,

    /// `contentHash` of the content engines serve (see `servingGeneration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_content_hash: Option<String>,

    /// One entry per DetectionEngine that selects this set, removed when it
    /// stops selecting it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["engine"]))]
    pub bindings: Vec<Binding>,
}

impl SigmaRuleSetStatus {
    /// Sets `contentHash` and the derived `shortHash` together.
    pub fn set_content_hash(&mut self, hash: impl Into<String>) {
        let hash = hash.into();
        self.short_hash = Some(crate::short_hash(&hash));
        self.content_hash = Some(hash);
    }
}

/// A rule or document that could not be parsed or compiled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleErrorStatus {
    /// Where the rule came from: `rules[N]` for an inline entry, or
    /// `configmap/NAME/KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,

    /// The rule's title (or id) when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,

    /// Why it was rejected.
    pub reason: String,
}

/// The state of this rule set in one DetectionEngine that selects it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// Name of the DetectionEngine (same namespace).
    pub engine: String,

    /// `Applied`: the engine's ready pods report this set's content as loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

//! Custom resources of the rsigma operator, group `rsigma.io`, version
//! `v1alpha1`:
//!
//! - [`SigmaRuleSet`] (`srs`): Sigma rules, inline and/or from ConfigMaps,
//!   with the pipelines they need;
//! - [`DetectionEngine`] (`de`): a deployment of the rsigma daemon loading the
//!   rule sets it selects.
//!
//! Also: the CRD manifests ([`generate`]), the least-privilege RBAC of the
//! operator and of debug users ([`rbac`]), and which engine loads which rule
//! set ([`selection`]). `cargo run -p rsigma-crds --bin crdgen` writes the
//! checked-in YAML; `tests/drift.rs` fails when it is stale.

// `#[kube(printcolumn(...))]` repeats keys (`type_`, `priority`) on purpose.
#[allow(clippy::duplicated_attributes)]
pub mod detectionengine;
pub mod generate;
pub mod rbac;
pub mod selection;
#[allow(clippy::duplicated_attributes)]
pub mod sigmaruleset;

pub use detectionengine::{
    DetectionEngine, DetectionEngineSpec, DetectionEngineStatus, DisruptionBudgetSpec,
    EnginePodSpec, EngineServiceSpec, ImagePullPolicy, InputSpec, InputType, LogsourceSpec,
    MANAGED_FLAGS, NatsConnectionSpec, NatsInputSpec, Persistence, PodRulesStatus, ServiceType,
    StateSpec, TapSpec, TlsSpec, is_managed_flag,
};
pub use sigmaruleset::{
    Binding, ConfigMapRuleRef, RuleErrorStatus, SigmaRuleSet, SigmaRuleSetSpec, SigmaRuleSetStatus,
};

/// API group of the custom resources.
pub const GROUP: &str = "rsigma.io";
/// API version of the custom resources.
pub const VERSION: &str = "v1alpha1";

/// Condition types and the values they take.
pub mod conditions {
    /// SigmaRuleSet: every rule parsed and compiled.
    pub const VALID: &str = "Valid";
    /// SigmaRuleSet (and each of its `bindings`): the selecting engines'
    /// ready pods have loaded the current content.
    pub const APPLIED: &str = "Applied";
    /// DetectionEngine: every desired replica is ready.
    pub const READY: &str = "Ready";
    /// DetectionEngine: a rollout or a rules change is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// DetectionEngine: every ready pod reports the desired rules hash.
    pub const RULES_IN_SYNC: &str = "RulesInSync";
    /// DetectionEngine: some selected rule set is invalid, so the pods serve
    /// its last valid content (or keep their rules when that is unknown).
    pub const DEGRADED: &str = "Degraded";
    /// Condition status `True`.
    pub const TRUE: &str = "True";
    /// Condition status `False`.
    pub const FALSE: &str = "False";
    /// Condition status `Unknown`.
    pub const UNKNOWN: &str = "Unknown";
}

/// The first 12 characters of a content hash (the `Hash` printer column).
pub fn short_hash(hash: &str) -> String {
    hash.chars().take(12).collect()
}

//! Which DetectionEngine loads which SigmaRuleSet.
//!
//! An engine loads a rule set of its namespace when all of these hold:
//! 1. the engine's `ruleSetSelector` matches the rule set's labels (absent or
//!    empty selector: every rule set);
//! 2. the rule set's `engineRef`, when set, names the engine;
//! 3. the rule set's `engineSelector`, when set, matches the engine's labels
//!    (an empty selector matches every engine).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::{DetectionEngine, SigmaRuleSet};

/// Why a label selector could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl std::fmt::Display for SelectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid label selector: {}", self.0)
    }
}

impl std::error::Error for SelectorError {}

/// Whether `selector` matches `labels`, with the Kubernetes semantics: every
/// `matchLabels` entry and every `matchExpressions` requirement must hold; an
/// empty selector matches everything.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    if let Some(match_labels) = &selector.match_labels {
        for (k, v) in match_labels {
            if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError(format!(
                    "operator {} on key {:?} needs values",
                    expr.operator, expr.key
                )));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError(format!(
                    "operator {} on key {:?} takes no values",
                    expr.operator, expr.key
                )));
            }
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => {
                return Err(SelectorError(format!(
                    "unknown operator {other:?} on key {:?}",
                    expr.key
                )));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

impl DetectionEngine {
    /// Whether this engine loads `rule_set` (see the module documentation).
    /// Objects of different namespaces never match.
    pub fn selects(&self, rule_set: &SigmaRuleSet) -> Result<bool, SelectorError> {
        if self.namespace() != rule_set.namespace() {
            return Ok(false);
        }
        if let Some(sel) = &self.spec.rule_set_selector
            && !selector_matches(sel, rule_set.labels())?
        {
            return Ok(false);
        }
        if let Some(name) = &rule_set.spec.engine_ref
            && *name != self.name_any()
        {
            return Ok(false);
        }
        if let Some(sel) = &rule_set.spec.engine_selector
            && !selector_matches(sel, self.labels())?
        {
            return Ok(false);
        }
        Ok(true)
    }
}

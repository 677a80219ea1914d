//! The example manifests under crds/examples/ (used by docs/operator.md and
//! e2e/chart/validate.sh) deserialize into the typed resources without
//! losing a field, and pass the CRDs' CEL rules.

use std::path::PathBuf;

use kube::core::cel::Validator;
use rsigma_crds::{DetectionEngine, SigmaRuleSet, generate};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Whether every field of `a` is in `b` with the same value (`b` may hold
/// more: defaults).
fn is_subset(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| is_subset(v, w))),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| is_subset(v, w))
        }
        _ => a == b,
    }
}

fn check<T: DeserializeOwned + serde::Serialize>(
    doc: &Value,
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    file: &str,
) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert!(
        is_subset(doc, &back),
        "{file}: a field was lost (unknown to the types?)\n{doc:#}\nvs\n{back:#}"
    );
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    if let Err(errors) = Validator::new().validate(&schema, doc, None) {
        panic!("{file}: CEL: {errors:?}");
    }
}

#[test]
fn examples_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let file = path.display().to_string();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
            match doc["kind"].as_str() {
                Some("SigmaRuleSet") => {
                    check::<SigmaRuleSet>(&doc, &generate::sigma_rule_set_crd(), &file)
                }
                Some("DetectionEngine") => {
                    check::<DetectionEngine>(&doc, &generate::detection_engine_crd(), &file)
                }
                _ => continue,
            }
            seen += 1;
        }
    }
    assert!(seen >= 3, "examples found: {seen}");
}

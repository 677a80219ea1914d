//! The CEL validation rules (`x-kubernetes-validations`) of the generated
//! CRDs, evaluated client-side with kube's `cel` feature (kube-cel), on the
//! exact schema `crdgen` writes.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{
    CompiledSchema, ScopeContext, Validator, WarningKind, analyze_rule, compile_schema,
};
use rsigma_crds::{
    DetectionEngine, SigmaRuleSet,
    generate::{detection_engine_crd, sigma_rule_set_crd, without_cel},
};
use serde_json::{Value, json};

fn schema(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("openAPIV3Schema"),
    )
    .unwrap()
}

/// Error messages of the rules `object` breaks (empty: valid). Also checks
/// that the Rust mirror of the rules (`violations()`, for servers without
/// CEL) reports the same messages.
fn violations(crd: &CustomResourceDefinition, object: Value) -> Vec<String> {
    let cel: Vec<String> = match Validator::new().validate(&schema(crd), &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    };
    let mut rust = match object["kind"].as_str() {
        Some("SigmaRuleSet") => serde_json::from_value::<SigmaRuleSet>(object.clone())
            .unwrap()
            .spec
            .violations(),
        _ => serde_json::from_value::<DetectionEngine>(object.clone())
            .unwrap()
            .spec
            .violations(),
    };
    let mut sorted = cel.clone();
    sorted.sort();
    rust.sort();
    assert_eq!(sorted, rust, "CEL and Rust disagree on {object}");
    cel
}

fn srs(spec: Value) -> Value {
    json!({"apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
           "metadata": {"name": "r", "namespace": "ns"}, "spec": spec})
}

fn de(spec: Value) -> Value {
    let mut full = json!({"image": "rsigma:1"});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({"apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine",
           "metadata": {"name": "e", "namespace": "ns"}, "spec": full})
}

fn assert_rejected(errors: &[String], fragment: &str) {
    assert!(
        errors.iter().any(|e| e.contains(fragment)),
        "expected a violation containing {fragment:?}, got {errors:?}"
    );
}

fn rules_of(value: &Value, out: &mut Vec<(String, Value)>, path: &str) {
    if let Value::Object(map) = value {
        if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations")
            && !rules.is_empty()
        {
            out.push((path.to_owned(), value.clone()));
        }
        for (k, v) in map {
            rules_of(v, out, &format!("{path}/{k}"));
        }
    } else if let Value::Array(items) = value {
        for (i, v) in items.iter().enumerate() {
            rules_of(v, out, &format!("{path}/{i}"));
        }
    }
}

/// Variables bound by the comprehension macros of a rule (`x` in `.all(x, ...)`).
fn macro_variables(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in [".all(", ".exists(", ".exists_one(", ".map(", ".filter("] {
        for (i, _) in rule.match_indices(m) {
            let rest = &rule[i + m.len()..];
            if let Some((var, _)) = rest.split_once(',') {
                out.push(var.trim().to_owned());
            }
        }
    }
    out
}

fn compilation_errors(c: &CompiledSchema, path: &str, out: &mut Vec<String>) {
    for e in c.compilation_errors() {
        out.push(format!("{path}: {e}"));
    }
    for (k, child) in &c.properties {
        compilation_errors(child, &format!("{path}.{k}"), out);
    }
    if let Some(items) = &c.items {
        compilation_errors(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = &c.additional_properties {
        compilation_errors(ap, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_rule_compiles_and_is_within_the_cost_budget() {
    for crd in [sigma_rule_set_crd(), detection_engine_crd()] {
        let schema = schema(&crd);
        let mut errors = Vec::new();
        compilation_errors(&compile_schema(&schema), "", &mut errors);
        assert!(errors.is_empty(), "CEL compilation errors: {errors:?}");

        let mut nodes = Vec::new();
        rules_of(&schema, &mut nodes, "");
        assert!(!nodes.is_empty());
        for (path, node) in nodes {
            let compiled = compile_schema(&node);
            for rule in node["x-kubernetes-validations"].as_array().unwrap() {
                let rule = rule["rule"].as_str().unwrap();
                let warnings: Vec<_> = analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
                    .into_iter()
                    .filter(|w| match w.kind {
                        WarningKind::CostExceeded => true,
                        // kube-cel's scope check does not know the variables
                        // that macros (`all`, `exists`, `map`, ...) bind.
                        WarningKind::WrongScope => !macro_variables(rule)
                            .iter()
                            .any(|v| w.message.starts_with(&format!("variable '{v}' "))),
                        _ => false,
                    })
                    .collect();
                assert!(warnings.is_empty(), "{path}: {rule}: {warnings:?}");
            }
        }
    }
}

#[test]
fn sigma_rule_set_rules() {
    let crd = sigma_rule_set_crd();
    assert_eq!(
        violations(&crd, srs(json!({"rules": ["title: x"]}))),
        Vec::<String>::new()
    );
    assert_eq!(
        violations(
            &crd,
            srs(json!({"configMapRefs": [{"name": "cm"}], "engineRef": "e"}))
        ),
        Vec::<String>::new()
    );
    assert_rejected(
        &violations(
            &crd,
            srs(
                json!({"rules": ["title: x"], "engineRef": "e", "engineSelector": {"matchLabels": {"a": "b"}}}),
            ),
        ),
        "mutually exclusive",
    );
    assert_rejected(
        &violations(&crd, srs(json!({}))),
        "at least one inline rule",
    );
    assert_rejected(
        &violations(&crd, srs(json!({"rules": [], "configMapRefs": []}))),
        "at least one inline rule",
    );
}

#[test]
fn detection_engine_input_rules() {
    let crd = detection_engine_crd();
    assert_eq!(violations(&crd, de(json!({}))), Vec::<String>::new());
    assert_eq!(
        violations(&crd, de(json!({"input": {"type": "http"}}))),
        Vec::<String>::new()
    );
    let nats = json!({"type": "nats", "nats": {"url": "nats://nats:4222", "subject": "events.>"}});
    assert_eq!(
        violations(&crd, de(json!({"input": nats}))),
        Vec::<String>::new()
    );
    assert_rejected(
        &violations(&crd, de(json!({"input": {"type": "nats"}}))),
        "input.nats is required",
    );
    assert_rejected(
        &violations(
            &crd,
            de(json!({"input": {"type": "http", "nats": {"url": "nats://n", "subject": "s"}}})),
        ),
        "input.nats is required",
    );
    assert_rejected(
        &violations(
            &crd,
            de(json!({"input": {"type": "nats", "nats": {"url": "http://n", "subject": "s"}}})),
        ),
        "url must be nats://HOST[:PORT] or tls://HOST[:PORT]",
    );
    for url in ["nats://user:pw@n:4222", "nats://n:4222/events", "ws://n"] {
        assert_rejected(
            &violations(
                &crd,
                de(json!({"input": {"type": "nats", "nats": {"url": url, "subject": "s"}}})),
            ),
            "without credentials or a path",
        );
    }
    let tls =
        json!({"type": "nats", "nats": {"url": "tls://n", "subject": "s", "consumerGroup": "soc"}});
    assert_eq!(
        violations(&crd, de(json!({"input": tls}))),
        Vec::<String>::new()
    );
}

#[test]
fn detection_engine_nats_connection_rules() {
    let crd = detection_engine_crd();
    let secret = |key: &str| json!({"name": "nats", "key": key});
    for nats in [
        json!({}),
        json!({"credentialsSecretRef": secret("c"), "caSecretRef": secret("ca"), "requireTls": true}),
        json!({"tokenSecretRef": secret("t"), "tlsSecretName": "client"}),
        json!({"userSecretRef": secret("u"), "passwordSecretRef": secret("p")}),
        json!({"nkeySecretRef": secret("n")}),
    ] {
        assert_eq!(
            violations(&crd, de(json!({"nats": nats}))),
            Vec::<String>::new(),
            "{nats}"
        );
    }
    assert_rejected(
        &violations(
            &crd,
            de(json!({"nats": {"tokenSecretRef": secret("t"), "nkeySecretRef": secret("n")}})),
        ),
        "at most one NATS authentication method",
    );
    assert_rejected(
        &violations(&crd, de(json!({"nats": {"userSecretRef": secret("u")}}))),
        "userSecretRef and passwordSecretRef go together",
    );
}

#[test]
fn detection_engine_output_and_args_rules() {
    let crd = detection_engine_crd();
    assert_eq!(
        violations(
            &crd,
            de(json!({"outputs": ["stdout", "file:///var/log/d.ndjson"]}))
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        violations(
            &crd,
            de(json!({"outputs": ["nats://nats:4222/detections"]}))
        ),
        Vec::<String>::new()
    );
    for output in [
        "kafka://x",
        "file://",
        "nats://nats:4222",
        "nats://u:p@nats/d",
    ] {
        assert_rejected(
            &violations(&crd, de(json!({"outputs": [output]}))),
            "stdout, file://PATH or nats://",
        );
    }
    assert_eq!(
        violations(
            &crd,
            de(json!({"extraArgs": ["--workers=4", "--tls-min-version", "1.2", "--rulesx"]}))
        ),
        Vec::<String>::new()
    );
    for managed in [
        "--rules=/x",
        "-r",
        "--api-addr",
        "--enable-tap",
        "--state-db=/s",
        "--nats-token=secret",
        "--nats-password",
        "--consumer-group=g",
        "--output",
    ] {
        assert_rejected(
            &violations(&crd, de(json!({"extraArgs": ["--workers=2", managed]}))),
            "must not set a flag the operator manages",
        );
    }
}

#[test]
fn detection_engine_state_rules() {
    let crd = detection_engine_crd();
    assert_eq!(
        violations(
            &crd,
            de(json!({"state": {"persistence": "pvc", "size": "2Gi", "storageClass": "fast"}}))
        ),
        Vec::<String>::new()
    );
    assert_rejected(
        &violations(
            &crd,
            de(json!({"state": {"persistence": "none", "size": "2Gi"}})),
        ),
        "apply only to persistence: pvc",
    );
    assert_rejected(
        &violations(
            &crd,
            de(json!({"replicas": 2, "state": {"persistence": "pvc"}})),
        ),
        "at most one replica",
    );
    assert_eq!(
        violations(
            &crd,
            de(json!({"replicas": 3, "state": {"persistence": "none"}}))
        ),
        Vec::<String>::new()
    );
}

#[test]
fn without_cel_removes_every_rule_and_nothing_else() {
    for crd in [sigma_rule_set_crd(), detection_engine_crd()] {
        let with = serde_json::to_string(&crd).unwrap();
        let stripped = without_cel(&crd);
        let without = serde_json::to_string(&stripped).unwrap();
        assert!(with.contains("x-kubernetes-validations"));
        assert!(!without.contains("x-kubernetes-validations"));
        // Everything but the rules survives.
        assert!(without.contains("x-kubernetes-list-type"));
        assert!(without.contains("maxItems"));
        assert_eq!(stripped.spec.names, crd.spec.names);
        assert_eq!(
            stripped.spec.versions[0].additional_printer_columns,
            crd.spec.versions[0].additional_printer_columns
        );
    }
}

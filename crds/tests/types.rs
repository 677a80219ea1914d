//! Serialization, defaults and selection semantics of the custom resources.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::{CustomResourceExt, Resource};
use rsigma_crds::{
    ConfigMapRuleRef, DetectionEngine, DetectionEngineSpec, InputSpec, InputType, NatsInputSpec,
    Persistence, SigmaRuleSet, SigmaRuleSetSpec, SigmaRuleSetStatus, generate, rbac,
    selection::selector_matches, short_hash,
};
use serde_json::json;

#[test]
fn names_group_and_short_names() {
    let srs = SigmaRuleSet::crd();
    assert_eq!(
        srs.metadata.name.as_deref(),
        Some("sigmarulesets.rsigma.io")
    );
    assert_eq!(srs.spec.names.short_names, Some(vec!["srs".to_owned()]));
    assert_eq!(srs.spec.scope, "Namespaced");
    let de = DetectionEngine::crd();
    assert_eq!(
        de.metadata.name.as_deref(),
        Some("detectionengines.rsigma.io")
    );
    assert_eq!(de.spec.names.short_names, Some(vec!["de".to_owned()]));
    assert_eq!(DetectionEngine::api_version(&()), "rsigma.io/v1alpha1");
    let columns = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(columns(&srs), ["Valid", "Rules", "Hash", "Age"]);
    assert_eq!(
        columns(&de),
        ["Ready", "RulesInSync", "Replicas", "ReadyReplicas", "Age"]
    );
    let sub = de.spec.versions[0].subresources.as_ref().unwrap();
    assert!(sub.status.is_some());
    assert_eq!(
        sub.scale.as_ref().unwrap().spec_replicas_path,
        ".spec.replicas"
    );
}

#[test]
fn detection_engine_defaults() {
    let e: DetectionEngine = serde_json::from_value(json!({
        "apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine",
        "metadata": {"name": "e"}, "spec": {"image": "rsigma:1"}
    }))
    .unwrap();
    assert_eq!(e.spec, DetectionEngineSpec::with_image("rsigma:1"));
    assert_eq!(e.spec.replicas, 1);
    assert_eq!(e.spec.outputs, ["stdout"]);
    assert_eq!(e.spec.input.type_, InputType::Http);
    assert!(e.spec.input.nats.is_none());
    assert!(!e.spec.tap.enabled);
    assert_eq!(e.spec.state.persistence, Persistence::None);
    assert!(e.status.is_none());

    // The same defaults are in the schema, for the API server.
    let schema = serde_json::to_value(DetectionEngine::crd()).unwrap();
    let spec = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["replicas"]["default"], json!(1));
    assert_eq!(spec["outputs"]["default"], json!(["stdout"]));
    assert_eq!(spec["input"]["default"], json!({"type": "http"}));
    assert_eq!(spec["state"]["default"], json!({"persistence": "none"}));
    assert_eq!(spec["tap"]["default"], json!({"enabled": false}));
}

#[test]
fn detection_engine_round_trip_in_camel_case() {
    let mut spec = DetectionEngineSpec::with_image("rsigma:1");
    spec.input = InputSpec::nats(NatsInputSpec {
        url: "nats://nats:4222".into(),
        subject: "events".into(),
        consumer_group: Some("soc".into()),
        credentials_secret_ref: None,
    });
    spec.nats = Some(rsigma_crds::NatsConnectionSpec {
        credentials_secret_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
            name: "nats-creds".into(),
            key: "user.creds".into(),
            optional: None,
        }),
        require_tls: true,
        ..Default::default()
    });
    spec.tls = Some(rsigma_crds::TlsSpec {
        secret_name: "tls".into(),
        client_ca_secret_name: Some("ca".into()),
    });
    spec.state.persistence = Persistence::Pvc;
    spec.state.size = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        "2Gi".into(),
    ));
    spec.extra_args = vec!["--workers=2".into()];
    spec.service_account_name = Some("sa".into());
    let e = DetectionEngine::new("e", spec);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v["spec"]["input"],
        json!({"type": "nats", "nats": {
        "url": "nats://nats:4222", "subject": "events", "consumerGroup": "soc"}})
    );
    assert_eq!(
        v["spec"]["nats"],
        json!({"credentialsSecretRef": {"name": "nats-creds", "key": "user.creds"},
               "requireTls": true})
    );
    assert_eq!(
        v["spec"]["tls"],
        json!({"secretName": "tls", "clientCaSecretName": "ca"})
    );
    assert_eq!(
        v["spec"]["state"],
        json!({"persistence": "pvc", "size": "2Gi"})
    );
    assert_eq!(v["spec"]["extraArgs"], json!(["--workers=2"]));
    assert_eq!(v["spec"]["serviceAccountName"], json!("sa"));
    let back: DetectionEngine = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);

    // And through YAML, as users write it.
    let yaml = yaml_serde::to_string(&e).unwrap();
    let back: DetectionEngine = yaml_serde::from_str(&yaml).unwrap();
    assert_eq!(back, e);
}

#[test]
fn sigma_rule_set_round_trip_and_status() {
    let spec = SigmaRuleSetSpec {
        rules: vec![
            "title: a\nlogsource: {product: windows}\ndetection: {sel: {x: 1}, condition: sel}\n"
                .into(),
        ],
        config_map_refs: vec![ConfigMapRuleRef {
            name: "cm".into(),
            key: Some("r.yml".into()),
        }],
        pipelines: vec!["sysmon".into()],
        engine_selector: None,
        engine_ref: Some("e".into()),
    };
    let mut r = SigmaRuleSet::new("r", spec);
    let mut status = SigmaRuleSetStatus {
        rule_count: Some(1),
        ..Default::default()
    };
    status.set_content_hash("0123456789abcdef0123");
    r.status = Some(status);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v["spec"]["configMapRefs"],
        json!([{"name": "cm", "key": "r.yml"}])
    );
    assert_eq!(v["spec"]["engineRef"], json!("e"));
    assert!(
        v["spec"].get("engineSelector").is_none(),
        "None fields are omitted"
    );
    assert_eq!(v["status"]["shortHash"], json!("0123456789ab"));
    assert_eq!(v["status"]["contentHash"], json!("0123456789abcdef0123"));
    assert!(
        v["status"].get("conditions").is_none(),
        "empty lists are omitted"
    );
    let back: SigmaRuleSet = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
    assert_eq!(short_hash("abc"), "abc");
}

#[test]
fn selector_semantics() {
    let labels = BTreeMap::from([
        ("team".to_owned(), "soc".to_owned()),
        ("tier".to_owned(), "prod".to_owned()),
    ]);
    let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|s| (*s).to_owned()).collect()),
    };
    let sel = |ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: (!ml.is_empty()).then(|| {
            ml.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        }),
        match_expressions: (!me.is_empty()).then_some(me),
    };
    assert!(selector_matches(&LabelSelector::default(), &labels).unwrap());
    assert!(selector_matches(&sel(&[("team", "soc")], vec![]), &labels).unwrap());
    assert!(!selector_matches(&sel(&[("team", "ir")], vec![]), &labels).unwrap());
    assert!(
        selector_matches(
            &sel(&[], vec![req("tier", "In", &["prod", "dev"])]),
            &labels
        )
        .unwrap()
    );
    assert!(!selector_matches(&sel(&[], vec![req("tier", "NotIn", &["prod"])]), &labels).unwrap());
    assert!(selector_matches(&sel(&[], vec![req("zone", "NotIn", &["a"])]), &labels).unwrap());
    assert!(selector_matches(&sel(&[], vec![req("team", "Exists", &[])]), &labels).unwrap());
    assert!(!selector_matches(&sel(&[], vec![req("team", "DoesNotExist", &[])]), &labels).unwrap());
    assert!(selector_matches(&sel(&[], vec![req("team", "In", &[])]), &labels).is_err());
    assert!(selector_matches(&sel(&[], vec![req("team", "Exists", &["x"])]), &labels).is_err());
    assert!(selector_matches(&sel(&[], vec![req("team", "Like", &["x"])]), &labels).is_err());
}

fn engine(name: &str, labels: &[(&str, &str)], selector: Option<LabelSelector>) -> DetectionEngine {
    let mut e = DetectionEngine::new(name, DetectionEngineSpec::with_image("i"));
    e.meta_mut().namespace = Some("ns".into());
    e.meta_mut().labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    );
    e.spec.rule_set_selector = selector;
    e
}

fn rule_set(
    labels: &[(&str, &str)],
    engine_ref: Option<&str>,
    engine_selector: Option<LabelSelector>,
) -> SigmaRuleSet {
    let mut r = SigmaRuleSet::new(
        "r",
        SigmaRuleSetSpec {
            rules: vec!["title: x".into()],
            engine_ref: engine_ref.map(Into::into),
            engine_selector,
            ..Default::default()
        },
    );
    r.meta_mut().namespace = Some("ns".into());
    r.meta_mut().labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    );
    r
}

#[test]
fn which_engine_loads_which_rule_set() {
    let by_label = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_owned(), v.to_owned())])),
        ..Default::default()
    };
    let all = engine("all", &[("env", "prod")], None);
    let soc = engine("soc", &[("env", "dev")], Some(by_label("team", "soc")));
    let plain = rule_set(&[], None, None);
    let soc_rules = rule_set(&[("team", "soc")], None, None);
    assert!(all.selects(&plain).unwrap());
    assert!(all.selects(&soc_rules).unwrap());
    assert!(!soc.selects(&plain).unwrap());
    assert!(soc.selects(&soc_rules).unwrap());
    // engineRef narrows to one engine.
    let pinned = rule_set(&[("team", "soc")], Some("soc"), None);
    assert!(soc.selects(&pinned).unwrap());
    assert!(!all.selects(&pinned).unwrap());
    // engineSelector narrows by the engine's labels.
    let prod_only = rule_set(&[("team", "soc")], None, Some(by_label("env", "prod")));
    assert!(all.selects(&prod_only).unwrap());
    assert!(!soc.selects(&prod_only).unwrap());
    // Never across namespaces.
    let mut elsewhere = rule_set(&[], None, None);
    elsewhere.meta_mut().namespace = Some("other".into());
    assert!(!all.selects(&elsewhere).unwrap());
}

#[test]
fn rbac_is_least_privilege() {
    let all = [
        rbac::operator_rules(),
        rbac::leader_election_rules(),
        rbac::debug_rules(),
        rbac::view_rules(),
        rbac::edit_rules(),
    ]
    .concat();
    for r in &all {
        let resources = r.resources.clone().unwrap_or_default();
        assert!(
            !resources
                .iter()
                .any(|x| x == "*" || x.starts_with("secrets")),
            "{r:?}"
        );
        assert!(
            !r.verbs
                .iter()
                .any(|v| v == "*" || v == "escalate" || v == "bind" || v == "impersonate"),
            "{r:?}"
        );
        assert!(
            !r.api_groups
                .clone()
                .unwrap_or_default()
                .iter()
                .any(|g| g == "*"),
            "{r:?}"
        );
    }
    let op = rbac::operator_rules();
    let allows =
        |rules: &[k8s_openapi::api::rbac::v1::PolicyRule], group: &str, res: &str, verb: &str| {
            rules.iter().any(|r| {
                r.api_groups.iter().flatten().any(|g| g == group)
                    && r.resources.iter().flatten().any(|x| x == res)
                    && r.verbs.iter().any(|v| v == verb)
            })
        };
    assert!(allows(&op, "rsigma.io", "sigmarulesets/status", "patch"));
    assert!(allows(&op, "rsigma.io", "detectionengines", "watch"));
    assert!(allows(&op, "apps", "deployments", "create"));
    // Only what the operator calls: no update (server-side apply patches),
    // no get of pods; delete wherever it sets ownerReferences
    // (OwnerReferencesPermissionEnforcement).
    assert!(allows(&op, "", "configmaps", "delete"));
    assert!(allows(&op, "apps", "deployments", "delete"));
    assert!(!allows(&op, "", "configmaps", "update"));
    assert!(allows(&op, "", "serviceaccounts", "delete"));
    assert!(allows(&op, "policy", "poddisruptionbudgets", "create"));
    assert!(!allows(&op, "rsigma.io", "detectionengines", "patch"));
    assert!(!allows(&op, "", "events", "create"));
    assert!(allows(&op, "", "pods", "list"));
    assert!(!allows(&op, "", "pods", "delete"));
    assert!(!allows(&op, "", "pods/portforward", "create"));
    assert!(!allows(&op, "rsigma.io", "sigmarulesets", "delete"));
    assert!(allows(
        &rbac::leader_election_rules(),
        "coordination.k8s.io",
        "leases",
        "update"
    ));
    let debug = rbac::debug_rules();
    assert!(allows(&debug, "", "pods/portforward", "create"));
    assert!(allows(&debug, "", "pods/portforward", "get"));
    assert!(allows(&debug, "rsigma.io", "detectionengines", "get"));
    assert!(!allows(&debug, "rsigma.io", "detectionengines", "list"));
    assert!(!allows(&debug, "rsigma.io", "sigmarulesets", "get"));
    assert!(!allows(&debug, "rsigma.io", "detectionengines", "patch"));
}

#[test]
fn crd_for_old_servers_has_no_cel() {
    let crd = generate::detection_engine_crd();
    let old = generate::crd_for_server(&crd, 1, 20);
    assert!(
        !serde_json::to_string(&old)
            .unwrap()
            .contains("x-kubernetes-validations")
    );
    let new = generate::crd_for_server(&crd, 1, 25);
    assert_eq!(new, crd);
    assert!(!generate::supports_cel(1, 24));
    assert!(generate::supports_cel(2, 0));
}

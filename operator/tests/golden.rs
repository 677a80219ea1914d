//! Golden tests of the pure part: the objects an engine spec and its rule
//! sets turn into, compared with `tests/golden/*.yaml`.
//!
//! After an intended change, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p rsigma-operator --test golden` and review
//! the diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use rsigma_crds::{DetectionEngine, SigmaRuleSet};
use rsigma_operator::resources::{self, Desired};

fn engine(yaml: &str) -> DetectionEngine {
    let mut e: DetectionEngine = yaml_serde::from_str(yaml).expect("engine YAML");
    e.metadata.uid = Some("0b5c4f2e-1111-4222-8333-944455556666".to_owned());
    e
}

fn rule_set(yaml: &str) -> SigmaRuleSet {
    yaml_serde::from_str(yaml).expect("rule set YAML")
}

const RULES_A: &str = r#"
apiVersion: rsigma.io/v1alpha1
kind: SigmaRuleSet
metadata: {name: windows, namespace: soc, labels: {team: soc}}
spec:
  rules:
    - |
      title: Whoami Execution
      logsource: {product: windows, category: process_creation}
      detection:
        selection:
          Image|endswith: '\whoami.exe'
        condition: selection
  configMapRefs:
    - name: community
  pipelines: [sysmon]
"#;

const RULES_B: &str = r#"
apiVersion: rsigma.io/v1alpha1
kind: SigmaRuleSet
metadata: {name: linux, namespace: soc}
spec:
  rules:
    - |
      title: Shadow Read
      logsource: {product: linux}
      detection:
        sel:
          file: /etc/shadow
        condition: sel
  pipelines:
    - |
      name: site
      transformations:
        - type: field_name_mapping
          mapping: {file: file.path}
"#;

fn community() -> BTreeMap<String, ConfigMap> {
    BTreeMap::from([(
        "community".to_owned(),
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("community".to_owned()),
                namespace: Some("soc".to_owned()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (
                    "net_user_add.yml".to_owned(),
                    "title: Net User Add\nlogsource: {product: windows}\ndetection:\n  sel:\n    CommandLine|contains: ' /add'\n  condition: sel\n".to_owned(),
                ),
                ("notes.txt".to_owned(), "ignored".to_owned()),
            ])),
            ..Default::default()
        },
    )])
}

fn render(d: &Desired) -> String {
    let mut docs = vec![
        yaml_serde::to_string(&d.config_map).unwrap(),
        yaml_serde::to_string(&d.deployment).unwrap(),
        yaml_serde::to_string(&d.service).unwrap(),
    ];
    if let Some(sa) = &d.service_account {
        docs.push(yaml_serde::to_string(sa).unwrap());
    }
    if let Some(pvc) = &d.pvc {
        docs.push(yaml_serde::to_string(pvc).unwrap());
    }
    docs.join("---\n")
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run UPDATE_GOLDEN=1 cargo test -p rsigma-operator --test golden",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "{} differs from the generated objects ({} vs {} lines):\n{}\nIf intended: UPDATE_GOLDEN=1 cargo test -p rsigma-operator --test golden",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

fn desired_for(engine: &DetectionEngine, sets: &[SigmaRuleSet]) -> Desired {
    let cms = community();
    let materialized: Vec<_> = sets
        .iter()
        .map(|s| resources::materialize(s, &cms))
        .collect();
    let refs: Vec<_> = materialized.iter().collect();
    let agg = resources::aggregate(&refs);
    let annotations = resources::config_map_annotations(&agg.rule_sets, &BTreeMap::new());
    let image = resources::daemon_image(engine, Some("rsigma:default")).expect("an image");
    resources::desired(engine, &agg, annotations, image)
}

#[test]
fn minimal_engine_with_two_rule_sets() {
    let e = engine(
        r#"
apiVersion: rsigma.io/v1alpha1
kind: DetectionEngine
metadata: {name: soc, namespace: soc}
spec:
  image: rsigma:0.1.0
"#,
    );
    let d = desired_for(&e, &[rule_set(RULES_B), rule_set(RULES_A)]);
    check("minimal", &render(&d));
}

#[test]
fn tls_tap_resources_and_extra_args() {
    let e = engine(
        r#"
apiVersion: rsigma.io/v1alpha1
kind: DetectionEngine
metadata: {name: soc-prod, namespace: soc, labels: {tier: prod}}
spec:
  image: rsigma:0.1.0
  imagePullPolicy: IfNotPresent
  replicas: 2
  resources:
    requests: {cpu: 250m, memory: 256Mi}
    limits: {memory: 1Gi}
  ruleSetSelector:
    matchLabels: {team: soc}
  outputs: [stdout, "file:///var/log/rsigma/detections.ndjson"]
  tap: {enabled: true}
  tls:
    secretName: soc-prod-tls
    clientCaSecretName: soc-clients-ca
  extraArgs: [--workers=2, --tls-min-version=1.2]
  serviceAccountName: custom-sa
"#,
    );
    let d = desired_for(&e, &[rule_set(RULES_A)]);
    assert!(d.service_account.is_none(), "spec names a ServiceAccount");
    check("tls", &render(&d));
}

#[test]
fn nats_with_state_on_a_claim_and_no_rule_sets() {
    let e = engine(
        r#"
apiVersion: rsigma.io/v1alpha1
kind: DetectionEngine
metadata: {name: edge, namespace: soc}
spec:
  image: rsigma:0.1.0
  input:
    type: nats
    nats:
      url: nats://nats.messaging:4222
      subject: events.windows.>
      credentialsSecretRef: {name: nats-creds, key: rsigma.creds}
  state:
    persistence: pvc
    storageClass: fast
    size: 2Gi
"#,
    );
    let d = desired_for(&e, &[]);
    assert_eq!(d.config_map.data.as_ref().map(|d| d.len()), Some(0));
    check("nats-pvc", &render(&d));
}

#[test]
fn rule_changes_never_touch_the_pod_template() {
    let e = engine(
        "apiVersion: rsigma.io/v1alpha1\nkind: DetectionEngine\nmetadata: {name: soc, namespace: soc}\nspec: {image: x}\n",
    );
    let a = rule_set(RULES_A);
    let mut a2 = a.clone();
    a2.spec.rules[0] = a2.spec.rules[0].replace("whoami", "hostname");
    let d1 = desired_for(&e, std::slice::from_ref(&a));
    let d2 = desired_for(&e, &[a2]);
    assert_ne!(d1.config_map, d2.config_map);
    assert_ne!(
        d1.config_map.metadata.annotations.as_ref().unwrap()[resources::RULES_HASH_ANNOTATION],
        d2.config_map.metadata.annotations.as_ref().unwrap()[resources::RULES_HASH_ANNOTATION],
    );
    assert_eq!(
        d1.deployment, d2.deployment,
        "a rule change must not roll the pods"
    );
}

#[test]
fn owner_references_on_every_object() {
    let e = engine(
        "apiVersion: rsigma.io/v1alpha1\nkind: DetectionEngine\nmetadata: {name: soc, namespace: soc}\nspec: {image: x, state: {persistence: pvc}}\n",
    );
    let d = desired_for(&e, &[]);
    let metas = [
        &d.config_map.metadata,
        &d.deployment.metadata,
        &d.service.metadata,
        &d.service_account.as_ref().unwrap().metadata,
        &d.pvc.as_ref().unwrap().metadata,
    ];
    for m in metas {
        let owners = m.owner_references.as_ref().expect("owner references");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "DetectionEngine");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].uid, "0b5c4f2e-1111-4222-8333-944455556666");
    }
}

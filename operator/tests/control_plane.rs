//! Integration tests against a real Kubernetes API server (kube-apiserver
//! 1.20 + etcd, no kubelet): the controllers run in-process, pods are Pod
//! objects whose status points at real `rsigma engine daemon` processes on
//! 127.0.0.x, and the test plays the kubelet by copying the rules ConfigMap
//! into the daemons' rules directories. See tests/support/mod.rs and
//! docs/operator-controller.md ("Tests").

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, Pod, Service, ServiceAccount},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use rsigma_crds::{DetectionEngine, DetectionEngineStatus, SigmaRuleSet, SigmaRuleSetStatus};
use rsigma_operator::{
    OperatorConfig,
    http::Metrics,
    leader::{self, LeaderElection},
    reload::{HttpPodClient, PodClient, SyncOptions, TlsOptions},
    resources::RULES_HASH_ANNOTATION,
};
use serde_json::json;
use support::{
    ControlPlane, Daemon, Kubelet, create_namespace, create_pod, eventually, install_crds,
    rules_hash_of,
};

const WHOAMI: &str = "title: Whoami Execution\nid: 4c7f1b9a-5e0d-4f3a-9a53-4b2a8d1e7c10\nlevel: low\nlogsource: {product: windows, category: process_creation}\ndetection:\n  selection:\n    Image|endswith: '\\whoami.exe'\n  condition: selection\n";
const HOSTNAME: &str = "title: Hostname Execution\nlogsource: {product: windows, category: process_creation}\ndetection:\n  selection:\n    Image|endswith: '\\hostname.exe'\n  condition: selection\n";
const NET_USER: &str = "title: Net User Add\nlogsource: {product: windows, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains|all: [' user ', ' /add']\n  condition: sel\n";
const SHADOW: &str = "title: Shadow Read\nlogsource: {product: linux}\ndetection:\n  sel:\n    file: /etc/shadow\n  condition: sel\n";
const BROKEN: &str = "title: Broken Condition\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image: x\n  condition: sel and nothere\n";
/// A pipeline the second daemon runs with: it rejects Linux rules, so that
/// pod fails to load rules the operator accepts (a daemon configured
/// differently from what the operator validates against).
const REJECT_LINUX: &str = "name: no linux here\ntransformations:\n  - type: rule_failure\n    message: this daemon has no Linux data\n    rule_conditions:\n      - type: logsource\n        product: linux\n";

const LONG: Duration = Duration::from_secs(60);

fn test_config(ns: &str) -> OperatorConfig {
    OperatorConfig {
        namespaces: vec![ns.to_owned()],
        sync: SyncOptions {
            confirm_timeout: Duration::from_secs(3),
            poll_interval: Duration::from_millis(100),
        },
        resync: Duration::from_secs(60),
        sync_backoff_base: Duration::from_millis(300),
        sync_backoff_max: Duration::from_secs(2),
        error_backoff_base: Duration::from_millis(300),
        error_backoff_max: Duration::from_secs(5),
        debounce: Duration::from_millis(100),
        watch_backoff_max: Duration::from_secs(2),
        instance: Some("test".to_owned()),
        ..OperatorConfig::default()
    }
}

fn start_operator(client: Client, ns: &str) -> (tokio::task::JoinHandle<()>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let pods: Arc<dyn PodClient> =
        Arc::new(HttpPodClient::new(Duration::from_secs(2), &TlsOptions::default()).unwrap());
    let task = tokio::spawn(rsigma_operator::run(
        client,
        test_config(ns),
        metrics.clone(),
        pods,
    ));
    (task, metrics)
}

fn cond<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

async fn engine_status(api: &Api<DetectionEngine>, name: &str) -> Option<DetectionEngineStatus> {
    api.get(name).await.ok()?.status
}

async fn rule_set_status(api: &Api<SigmaRuleSet>, name: &str) -> Option<SigmaRuleSetStatus> {
    api.get(name).await.ok()?.status
}

fn metric(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("object JSON");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create")
}

async fn set_rules(api: &Api<SigmaRuleSet>, name: &str, rules: &[&str]) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rules": rules}})),
    )
    .await
    .expect("patch rule set");
}

/// Waits until the engine reports every pod in sync with a hash other than
/// `not`, and returns that hash.
async fn wait_in_sync(api: &Api<DetectionEngine>, name: &str, pods: usize, not: &str) -> String {
    eventually(LONG, &format!("engine {name} RulesInSync=True"), || async {
        let status = engine_status(api, name).await?;
        let sync = cond(&status.conditions, "RulesInSync")?;
        let hash = status.desired_rules_hash.clone()?;
        (sync.status == "True"
            && hash != not
            && status.pods.len() == pods
            && status
                .pods
                .iter()
                .all(|p| p.rules_hash.as_deref() == Some(hash.as_str())))
        .then_some(hash)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_rule_sets_reload_and_status() {
    support::init_logs();
    let Some(cp) = ControlPlane::start() else {
        return;
    };
    let client = cp.client().await;
    install_crds(&client).await;
    let ns = "soc";
    create_namespace(&client, ns).await;
    // The operator runs with the generated least-privilege RBAC, the test
    // (playing users and the kubelet) as admin.
    let (operator, metrics) = start_operator(cp.operator_client(ns).await, ns);

    let engines: Api<DetectionEngine> = Api::namespaced(client.clone(), ns);
    let rule_sets: Api<SigmaRuleSet> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);

    let pipeline_dir = tempfile::tempdir().unwrap();
    let reject = pipeline_dir.path().join("reject-linux.yml");
    std::fs::write(&reject, REJECT_LINUX).unwrap();
    let d1 = Daemon::start("127.0.0.2", &[]).await;
    let d2 = Daemon::start("127.0.0.3", &["-p", reject.to_str().unwrap()]).await;
    say!("daemons on {} and {}", d1.url(), d2.url());

    // --- An engine and a rule set -------------------------------------------
    create::<ConfigMap>(
        &cms,
        json!({"metadata": {"name": "community"}, "data": {"net_user_add.yml": NET_USER, "README.md": "not a rule"}}),
    )
    .await;
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "windows", "labels": {"team": "soc"}},
            "spec": {"rules": [WHOAMI], "configMapRefs": [{"name": "community"}]},
        }),
    )
    .await;
    let engine = create::<DetectionEngine>(
        &engines,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine",
            "metadata": {"name": "soc"},
            "spec": {"image": "rsigma:test", "replicas": 2, "ruleSetSelector": {"matchLabels": {"team": "soc"}}},
        }),
    )
    .await;
    let engine_uid = engine.uid().unwrap();

    let cm = eventually(LONG, "ConfigMap soc-rules with the rules", || async {
        let cm = cms.get_opt("soc-rules").await.ok()??;
        (cm.data.as_ref()?.len() == 2).then_some(cm)
    })
    .await;
    let data = cm.data.clone().unwrap_or_default();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["soc.windows.0.yml", "soc.windows.1.yml"]
    );
    assert_eq!(data["soc.windows.0.yml"], WHOAMI);
    assert_eq!(data["soc.windows.1.yml"], NET_USER);
    let h1 = rules_hash_of(&data);
    assert_eq!(cm.annotations()[RULES_HASH_ANNOTATION], h1);
    let owned_by_engine =
        |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.len() == 1
                && refs[0].kind == "DetectionEngine"
                && refs[0].uid == engine_uid
                && refs[0].controller == Some(true)
        };
    assert!(owned_by_engine(cm.owner_references()));

    let deploy = eventually(LONG, "Deployment soc", || async {
        deployments.get_opt("soc").await.ok()?
    })
    .await;
    assert!(owned_by_engine(deploy.owner_references()));
    let spec = &deploy.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod_spec = spec.template.spec.as_ref().unwrap();
    let c = &pod_spec.containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(
        &args[..9],
        [
            "engine",
            "daemon",
            "-r",
            "/etc/rsigma/rules",
            "--input",
            "http",
            "--api-addr",
            "0.0.0.0:9090",
            "--allow-plaintext"
        ]
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    let template_annotations = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap_or_default();
    assert!(
        !template_annotations.values().any(|v| v == &h1),
        "the pod template must not carry the rules hash"
    );
    let svc = eventually(LONG, "Service soc", || async {
        services.get_opt("soc").await.ok()?
    })
    .await;
    assert!(owned_by_engine(svc.owner_references()));
    assert_eq!(
        svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        9090
    );
    let sa = eventually(LONG, "ServiceAccount soc", || async {
        sas.get_opt("soc").await.ok()?
    })
    .await;
    assert!(owned_by_engine(sa.owner_references()));
    assert_eq!(sa.automount_service_account_token, Some(false));
    say!("objects created; rules hash {}", &h1[..12]);

    let status = eventually(LONG, "engine status without pods", || async {
        let s = engine_status(&engines, "soc").await?;
        (cond(&s.conditions, "RulesInSync")?.reason == "NoPods").then_some(s)
    })
    .await;
    assert_eq!(status.desired_rules_hash.as_deref(), Some(h1.as_str()));
    assert_eq!(cond(&status.conditions, "Ready").unwrap().status, "False");

    // --- Pods: the rules reach the daemons through reload ---------------------
    let kubelet = Kubelet::start(
        client.clone(),
        ns,
        "soc-rules",
        vec![d1.rules_dir.clone(), d2.rules_dir.clone()],
    );
    // The second pod's volume lags: the operator gets 409 (stale) and retries.
    kubelet.set_delay(1, Duration::from_secs(3));
    create_pod(&client, ns, "soc", "soc-a", &d1).await;
    create_pod(&client, ns, "soc", "soc-b", &d2).await;
    let saw_stale = std::sync::atomic::AtomicBool::new(false);
    let hash = eventually(LONG, "both pods in sync", || {
        let engines = engines.clone();
        let saw_stale = &saw_stale;
        async move {
            let s = engine_status(&engines, "soc").await?;
            let sync = cond(&s.conditions, "RulesInSync")?;
            if sync.message.contains("kubelet") {
                saw_stale.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            (sync.status == "True")
                .then(|| s.desired_rules_hash.clone())
                .flatten()
        }
    })
    .await;
    assert_eq!(hash, h1);
    say!(
        "RulesInSync=True (stale answer seen: {})",
        saw_stale.load(std::sync::atomic::Ordering::Relaxed)
    );
    for d in [&d1, &d2] {
        let st = d.status().await;
        assert_eq!(st["rules_hash"], h1.as_str(), "{}", d.url());
        assert_eq!(st["rules"]["detection"], 2);
        assert_eq!(st["last_reload"]["trigger"], "api");
    }
    let status = engine_status(&engines, "soc").await.unwrap();
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(cond(&status.conditions, "Ready").unwrap().status, "True");
    assert_eq!(
        status
            .pods
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["soc-a", "soc-b"]
    );
    assert!(metric(&metrics, "rsigma_operator_reload_attempts_total") >= 3.0);

    let rs = eventually(LONG, "rule set windows Applied", || async {
        let s = rule_set_status(&rule_sets, "windows").await?;
        (cond(&s.conditions, "Applied")?.status == "True").then_some(s)
    })
    .await;
    assert_eq!(cond(&rs.conditions, "Valid").unwrap().status, "True");
    assert_eq!(rs.rule_count, Some(2));
    assert_eq!(rs.bindings.len(), 1);
    assert_eq!(rs.bindings[0].engine, "soc");
    assert!(rs.content_hash.is_some());
    assert_eq!(rs.observed_generation, Some(1));

    // --- A rule change propagates by hot reload ----------------------------------
    kubelet.set_delay(1, Duration::from_secs(1));
    let deploy_rv = deployments.get("soc").await.unwrap().resource_version();
    set_rules(&rule_sets, "windows", &[WHOAMI, HOSTNAME]).await;
    let h2 = wait_in_sync(&engines, "soc", 2, &h1).await;
    for d in [&d1, &d2] {
        let st = d.status().await;
        assert_eq!(st["rules_hash"], h2.as_str());
        assert_eq!(st["rules"]["detection"], 3);
    }
    assert_eq!(
        deployments.get("soc").await.unwrap().resource_version(),
        deploy_rv,
        "a rule change must not touch the Deployment"
    );
    eventually(
        LONG,
        "rule set windows observed generation 2, applied",
        || async {
            let s = rule_set_status(&rule_sets, "windows").await?;
            (s.observed_generation == Some(2)
                && s.rule_count == Some(3)
                && cond(&s.conditions, "Applied")?.status == "True")
                .then_some(())
        },
    )
    .await;
    say!("rule change reached both daemons: {}", &h2[..12]);
    // Each rollout is an event of its own, naming its hash (not a series of
    // the first one).
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(LONG, "a RulesUpdated event names the new hash", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("RulesUpdated")
                    && e.note.as_deref().is_some_and(|n| n.contains(&h2[..12]))
            })
            .then_some(())
    })
    .await;
    let owner = cms
        .get("soc-rules")
        .await
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owner[0].block_owner_deletion, Some(true), "{owner:?}");
    assert_eq!(owner[0].controller, Some(true), "{owner:?}");

    // --- An invalid rule set is reported and left out ---------------------------
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "broken", "labels": {"team": "soc"}},
            "spec": {"rules": [WHOAMI, BROKEN]},
        }),
    )
    .await;
    let broken = eventually(LONG, "rule set broken Valid=False", || async {
        let s = rule_set_status(&rule_sets, "broken").await?;
        (cond(&s.conditions, "Valid")?.status == "False").then_some(s)
    })
    .await;
    assert_eq!(broken.rule_errors.len(), 1, "{:?}", broken.rule_errors);
    assert_eq!(
        broken.rule_errors[0].rule.as_deref(),
        Some("Broken Condition")
    );
    assert_eq!(broken.rule_errors[0].document.as_deref(), Some("rules[1]"));
    assert!(broken.rule_errors[0].reason.contains("nothere"));
    assert_eq!(
        broken.rule_count,
        Some(1),
        "ruleCount counts the rule that compiled"
    );
    assert_eq!(
        broken.serving_generation, None,
        "never valid: nothing served"
    );
    assert_eq!(
        cond(&broken.conditions, "Applied").unwrap().reason,
        "Invalid"
    );
    eventually(LONG, "Warning event InvalidRules", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidRules")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
            })
            .then_some(())
    })
    .await;
    eventually(LONG, "engine reports the left-out rule set", || async {
        let s = engine_status(&engines, "soc").await?;
        cond(&s.conditions, "RuleSetsSelected")?
            .message
            .contains("broken (invalid")
            .then_some(())
    })
    .await;
    let data = cms.get("soc-rules").await.unwrap().data.unwrap_or_default();
    assert!(!data.keys().any(|k| k.starts_with("soc.broken.")));
    assert_eq!(
        rules_hash_of(&data),
        h2,
        "an invalid rule set changes nothing"
    );
    say!("invalid rule set reported and left out");

    // --- A rule set no engine selects; an engine that selects nothing ------------
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "orphan"},
            "spec": {"rules": [SHADOW], "engineRef": "nobody"},
        }),
    )
    .await;
    eventually(LONG, "rule set orphan Applied=False NoEngine", || async {
        let s = rule_set_status(&rule_sets, "orphan").await?;
        (cond(&s.conditions, "Valid")?.status == "True"
            && cond(&s.conditions, "Applied")?.reason == "NoEngine")
            .then_some(())
    })
    .await;
    create::<DetectionEngine>(
        &engines,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine",
            "metadata": {"name": "idle"},
            "spec": {"image": "rsigma:test", "replicas": 0, "ruleSetSelector": {"matchLabels": {"team": "nobody"}}},
        }),
    )
    .await;
    let idle_cm = eventually(LONG, "ConfigMap idle-rules", || async {
        cms.get_opt("idle-rules").await.ok()?
    })
    .await;
    assert!(idle_cm.data.unwrap_or_default().is_empty());
    assert_eq!(
        idle_cm.metadata.annotations.unwrap()[RULES_HASH_ANNOTATION],
        rules_hash_of(&BTreeMap::new())
    );
    eventually(
        LONG,
        "engine idle RuleSetsSelected=False NoRuleSets",
        || async {
            let s = engine_status(&engines, "idle").await?;
            let c = cond(&s.conditions, "RuleSetsSelected")?;
            (c.status == "False" && c.reason == "NoRuleSets").then_some(())
        },
    )
    .await;
    say!("orphan rule set and idle engine reported");

    // --- Valid rule sets that do not load together: one is left out -------------
    // The daemon applies an engine's pipelines to every rule it loads: the
    // pipeline of "linuxonly" rejects Windows rules, so "winrules" (valid on
    // its own) is left out of engine "mixed" rather than breaking it.
    let no_windows = "name: no windows\ntransformations:\n  - type: rule_failure\n    message: no Windows data here\n    rule_conditions:\n      - type: logsource\n        product: windows\n";
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "linuxonly", "labels": {"group": "mixed"}},
            "spec": {"rules": [SHADOW], "pipelines": [no_windows]},
        }),
    )
    .await;
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "winrules", "labels": {"group": "mixed"}},
            "spec": {"rules": [HOSTNAME]},
        }),
    )
    .await;
    create::<DetectionEngine>(
        &engines,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine",
            "metadata": {"name": "mixed"},
            "spec": {"image": "rsigma:test", "replicas": 0, "ruleSetSelector": {"matchLabels": {"group": "mixed"}}},
        }),
    )
    .await;
    let winrules = eventually(LONG, "rule set winrules Applied=False Rejected", || async {
        let s = rule_set_status(&rule_sets, "winrules").await?;
        (cond(&s.conditions, "Applied")?.reason == "Rejected").then_some(s)
    })
    .await;
    assert_eq!(cond(&winrules.conditions, "Valid").unwrap().status, "True");
    let applied = cond(&winrules.conditions, "Applied").unwrap();
    assert!(
        applied.message.contains("no Windows data here"),
        "{}",
        applied.message
    );
    let mixed = cms.get("mixed-rules").await.unwrap();
    let keys: Vec<String> = mixed.data.unwrap_or_default().into_keys().collect();
    assert_eq!(keys, ["soc.linuxonly.0.pipeline", "soc.linuxonly.0.yml"]);
    let args = deployments
        .get("mixed")
        .await
        .unwrap()
        .spec
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.windows(2)
            .any(|w| w == ["-p", "/etc/rsigma/rules/soc.linuxonly.0.pipeline"]),
        "{args:?}"
    );
    eventually(LONG, "rule set linuxonly applied by mixed", || async {
        let s = rule_set_status(&rule_sets, "linuxonly").await?;
        (s.bindings.first()?.engine == "mixed").then_some(())
    })
    .await;
    say!("a valid rule set that does not load with the others is left out");

    // --- A pod that cannot load the rules keeps the previous ones -----------------
    kubelet.set_delay(1, Duration::ZERO);
    set_rules(&rule_sets, "windows", &[WHOAMI, HOSTNAME, SHADOW]).await;
    let failed = eventually(LONG, "RulesInSync=False ReloadFailed", || async {
        let s = engine_status(&engines, "soc").await?;
        (cond(&s.conditions, "RulesInSync")?.reason == "ReloadFailed").then_some(s)
    })
    .await;
    let h3 = failed.desired_rules_hash.clone().unwrap();
    assert_ne!(h3, h2);
    let message = &cond(&failed.conditions, "RulesInSync").unwrap().message;
    assert!(message.contains("soc-b"), "{message}");
    assert!(message.contains("no Linux data"), "{message}");
    let pod_b = failed.pods.iter().find(|p| p.name == "soc-b").unwrap();
    assert_eq!(
        pod_b.rules_hash.as_deref(),
        Some(h2.as_str()),
        "keeps the previous rules"
    );
    assert!(
        pod_b
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("no Linux data")
    );
    let pod_a = failed.pods.iter().find(|p| p.name == "soc-a").unwrap();
    assert_eq!(pod_a.rules_hash.as_deref(), Some(h3.as_str()));
    assert_eq!(d2.status().await["rules_hash"], h2.as_str());
    assert!(metric(&metrics, "rsigma_operator_reload_failures_total") >= 1.0);
    eventually(LONG, "Warning event ReloadFailed", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("ReloadFailed"))
            .then_some(())
    })
    .await;
    say!("pod soc-b refused the rules and kept {}", &h2[..12]);
    set_rules(&rule_sets, "windows", &[WHOAMI, HOSTNAME]).await;
    let back = wait_in_sync(&engines, "soc", 2, &h3).await;
    assert_eq!(back, h2);

    // --- A reconcile of unchanged objects writes nothing --------------------------
    tokio::time::sleep(Duration::from_secs(2)).await;
    let versions = || async {
        vec![
            cms.get("soc-rules").await.unwrap().resource_version(),
            deployments.get("soc").await.unwrap().resource_version(),
            services.get("soc").await.unwrap().resource_version(),
            sas.get("soc").await.unwrap().resource_version(),
            engines.get("soc").await.unwrap().resource_version(),
            rule_sets.get("windows").await.unwrap().resource_version(),
            rule_sets.get("broken").await.unwrap().resource_version(),
            cms.get("idle-rules").await.unwrap().resource_version(),
            engines.get("idle").await.unwrap().resource_version(),
            cms.get("mixed-rules").await.unwrap().resource_version(),
            deployments.get("mixed").await.unwrap().resource_version(),
            rule_sets.get("winrules").await.unwrap().resource_version(),
        ]
    };
    let before = versions().await;
    let reconciles_before = metric(
        &metrics,
        "rsigma_operator_reconciles_total{controller=\"engine\"}",
    );
    // Touch watched objects without changing anything the operator owns:
    // a pod label (engine trigger) and the referenced ConfigMap (both).
    pods.patch(
        "soc-a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "1"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "community",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "1"}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        metric(
            &metrics,
            "rsigma_operator_reconciles_total{controller=\"engine\"}"
        ) > reconciles_before,
        "the touches must trigger reconciles"
    );
    assert_eq!(
        versions().await,
        before,
        "a second reconcile must write nothing"
    );
    say!("second reconcile wrote nothing");

    // --- Objects no longer desired are deleted ------------------------------------
    eventually(LONG, "ServiceAccount idle", || async {
        sas.get_opt("idle").await.ok()?
    })
    .await;
    engines
        .patch(
            "idle",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"serviceAccountName": "provided"}})),
        )
        .await
        .unwrap();
    eventually(
        LONG,
        "the operator's ServiceAccount idle is deleted",
        || async {
            match sas.get_opt("idle").await {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let idle = deployments.get("idle").await.unwrap();
    assert_eq!(
        idle.spec
            .template
            .spec
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("provided")
    );
    say!("the ServiceAccount no longer desired was deleted");

    // --- Deletion during a reload ---------------------------------------------------
    kubelet.set_delay(1, Duration::from_secs(120));
    set_rules(&rule_sets, "windows", &[WHOAMI]).await;
    eventually(LONG, "reload under way (one pod stale)", || async {
        let s = engine_status(&engines, "soc").await?;
        let c = cond(&s.conditions, "RulesInSync")?;
        (c.reason == "Reloading" && c.message.contains("kubelet")).then_some(())
    })
    .await;
    let errors = || {
        metric(
            &metrics,
            "rsigma_operator_reconcile_errors_total{controller=\"engine\"}",
        ) + metric(
            &metrics,
            "rsigma_operator_reconcile_errors_total{controller=\"ruleset\"}",
        )
    };
    let errors_before = errors();
    engines
        .delete("soc", &DeleteParams::default())
        .await
        .expect("delete engine");
    eventually(LONG, "engine soc gone", || async {
        engines.get_opt("soc").await.ok()?.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let errors_after = errors();
    assert!(
        errors_after == errors_before,
        "deleting an engine mid-reload must not loop on errors ({errors_before} → {errors_after})"
    );
    // The controllers carry on.
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "after", "labels": {"team": "soc"}},
            "spec": {"rules": [WHOAMI]},
        }),
    )
    .await;
    eventually(LONG, "rule set after reconciled", || async {
        let s = rule_set_status(&rule_sets, "after").await?;
        (cond(&s.conditions, "Applied")?.reason == "NoEngine").then_some(())
    })
    .await;
    say!("engine deleted mid-reload; controllers carry on");

    operator.abort();
    drop(kubelet);
    drop(cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_and_api_server_restart() {
    support::init_logs();
    let Some(cp) = ControlPlane::start() else {
        return;
    };
    let client = cp.client().await;
    install_crds(&client).await;
    let ns = "restart";
    create_namespace(&client, ns).await;

    // --- Two replicas: only one runs the controllers at a time ---------------------
    // Each replica has its own client, as separate pods would.
    let replica = |identity: &str, client: Client| {
        let metrics = Arc::new(Metrics::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let election = LeaderElection {
            namespace: ns.to_owned(),
            lease_name: "rsigma-operator".to_owned(),
            identity: identity.to_owned(),
            duration_secs: 6,
            grace_secs: 2,
        };
        let m = metrics.clone();
        let task = tokio::spawn(async move {
            let work_client = client.clone();
            let work_metrics = m.clone();
            let pods: Arc<dyn PodClient> = Arc::new(
                HttpPodClient::new(Duration::from_secs(2), &TlsOptions::default()).unwrap(),
            );
            let config = OperatorConfig {
                instance: Some(election.identity.clone()),
                ..test_config("restart")
            };
            let _ = leader::run(
                client,
                election,
                m,
                move || {
                    rsigma_operator::run(
                        work_client.clone(),
                        config.clone(),
                        work_metrics.clone(),
                        pods.clone(),
                    )
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
        });
        (task, metrics, stop)
    };
    let (task_a, metrics_a, stop_a) = replica("replica-a", cp.operator_client(ns).await);
    let (task_b, metrics_b, stop_b) = replica("replica-b", cp.operator_client(ns).await);
    let leaders = || metrics_a.leader.get() + metrics_b.leader.get();
    eventually(LONG, "one leader", || async {
        (leaders() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(leaders(), 1, "exactly one replica leads");
    let (leader, leader_task, stop_leader, follower_task, stop_follower, follower_metrics) =
        if metrics_a.leader.get() == 1 {
            (
                "replica-a",
                task_a,
                stop_a,
                task_b,
                stop_b,
                metrics_b.clone(),
            )
        } else {
            (
                "replica-b",
                task_b,
                stop_b,
                task_a,
                stop_a,
                metrics_a.clone(),
            )
        };
    let follower_reconciles = metric(&follower_metrics, "rsigma_operator_reconciles_total");

    let engines: Api<DetectionEngine> = Api::namespaced(client.clone(), ns);
    let rule_sets: Api<SigmaRuleSet> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "r1"}, "spec": {"rules": [WHOAMI]},
        }),
    )
    .await;
    create::<DetectionEngine>(
        &engines,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine",
            "metadata": {"name": "e"}, "spec": {"image": "rsigma:test", "replicas": 0},
        }),
    )
    .await;
    let hash_of = |cm: &ConfigMap| cm.annotations().get(RULES_HASH_ANNOTATION).cloned();
    let h1 = eventually(LONG, "ConfigMap e-rules", || async {
        hash_of(&cms.get_opt("e-rules").await.ok()??)
    })
    .await;
    assert_eq!(
        metric(&follower_metrics, "rsigma_operator_reconciles_total"),
        follower_reconciles,
        "the follower does not reconcile"
    );

    // The leader shuts down: it releases the lease on its way out, and the
    // follower takes over.
    stop_leader.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), leader_task)
        .await
        .expect("the leader shuts down within 10 s")
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let holder = leases
        .get("rsigma-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_ne!(
        holder.as_deref(),
        Some(leader),
        "the leader released the lease"
    );
    eventually(LONG, "the follower takes over", || async {
        (follower_metrics.leader.get() == 1).then_some(())
    })
    .await;
    say!("follower took over the lease");

    // --- The API server restarts: the controllers recover ----------------------------
    let argv = tokio::task::block_in_place(|| cp.stop_apiserver());
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| cp.start_apiserver(&argv));
    let t0 = std::time::Instant::now();
    set_rules(&rule_sets, "r1", &[WHOAMI, HOSTNAME]).await;
    let h2 = eventually(
        Duration::from_secs(120),
        "rules change after the restart",
        || async {
            let h = hash_of(&cms.get_opt("e-rules").await.ok()??)?;
            (h != h1).then_some(h)
        },
    )
    .await;
    say!(
        "after the restart, a rule change reached the ConfigMap in {:.1}s ({})",
        t0.elapsed().as_secs_f64(),
        &h2[..12]
    );
    create::<DetectionEngine>(
        &engines,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "DetectionEngine",
            "metadata": {"name": "e2"}, "spec": {"image": "rsigma:test", "replicas": 0},
        }),
    )
    .await;
    eventually(LONG, "ConfigMap e2-rules after the restart", || async {
        let cm = cms.get_opt("e2-rules").await.ok()??;
        (hash_of(&cm)? == h2).then_some(())
    })
    .await;
    eventually(LONG, "rule set r1 status after the restart", || async {
        let s = rule_set_status(&rule_sets, "r1").await?;
        (s.observed_generation == Some(2) && s.rule_count == Some(2)).then_some(())
    })
    .await;
    stop_follower.send(()).unwrap();
    let _ = follower_task.await;
    drop(cp);
}

/// A leader whose Lease renewals start failing (its Lease RBAC revoked) stops
/// its controllers before the lease can expire; the other replica takes over
/// once it has expired, and at no moment do both run the controllers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_that_cannot_renew_stops_before_its_lease_expires() {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
    support::init_logs();
    let Some(cp) = ControlPlane::start() else {
        return;
    };
    let admin = cp.client().await;
    install_crds(&admin).await;
    let ns = "revoke";
    create_namespace(&admin, ns).await;
    // Replica B is the chart's ServiceAccount; replica A its own account
    // bound to the same roles, so that its Lease access alone can be revoked.
    let client_b = cp.operator_client(ns).await;
    let subject = vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: "replica-a".to_owned(),
        namespace: Some(ns.to_owned()),
        ..Default::default()
    }];
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
        kind: kind.to_owned(),
        name: name.to_owned(),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: kube::api::ObjectMeta {
                    name: Some("replica-a".to_owned()),
                    ..Default::default()
                },
                role_ref: role_ref("ClusterRole", rsigma_crds::rbac::OPERATOR_ROLE),
                subjects: Some(subject.clone()),
            },
        )
        .await
        .unwrap();
    let lease_bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), ns);
    lease_bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: kube::api::ObjectMeta {
                    name: Some("replica-a-lease".to_owned()),
                    ..Default::default()
                },
                role_ref: role_ref("Role", rsigma_crds::rbac::LEADER_ELECTION_ROLE),
                subjects: Some(subject),
            },
        )
        .await
        .unwrap();
    let client_a = cp.client_as(ns, "replica-a").await;

    let replica = |identity: &str, client: Client| {
        let metrics = Arc::new(Metrics::new());
        let election = LeaderElection {
            namespace: ns.to_owned(),
            lease_name: "rsigma-operator".to_owned(),
            identity: identity.to_owned(),
            duration_secs: 8,
            grace_secs: 3,
        };
        let m = metrics.clone();
        let task = tokio::spawn(async move {
            let work_client = client.clone();
            let work_metrics = m.clone();
            let pods: Arc<dyn PodClient> = Arc::new(
                HttpPodClient::new(Duration::from_secs(2), &TlsOptions::default()).unwrap(),
            );
            let config = OperatorConfig {
                instance: Some(election.identity.clone()),
                ..test_config("revoke")
            };
            let _ = leader::run(
                client,
                election,
                m,
                move || {
                    rsigma_operator::run(
                        work_client.clone(),
                        config.clone(),
                        work_metrics.clone(),
                        pods.clone(),
                    )
                },
                std::future::pending(),
            )
            .await;
        });
        (task, metrics)
    };
    let (task_a, metrics_a) = replica("replica-a", client_a);
    eventually(LONG, "replica A leads", || async {
        (metrics_a.leader.get() == 1).then_some(())
    })
    .await;
    let (task_b, metrics_b) = replica("replica-b", client_b);
    // A keeps the lease through several renewals while B waits.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        (metrics_a.leader.get(), metrics_b.leader.get()),
        (1, 0),
        "A leads through its renewals and B waits"
    );

    lease_bindings
        .delete("replica-a-lease", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    let mut a_stopped = None;
    let mut b_started = None;
    while b_started.is_none() && revoked.elapsed() < Duration::from_secs(60) {
        let (a, b) = (metrics_a.leader.get(), metrics_b.leader.get());
        assert!(a + b <= 1, "both replicas ran the controllers at once");
        if a == 0 && a_stopped.is_none() {
            a_stopped = Some(revoked.elapsed());
        }
        if b == 1 {
            b_started = Some(revoked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_stopped = a_stopped.expect("replica A stopped");
    let b_started = b_started.expect("replica B took over within 60 s");
    say!("after the revocation A stopped at {a_stopped:?} and B started at {b_started:?}");
    assert!(a_stopped < b_started, "A stops before B starts");
    // The lease lasts 8 s after A's last renewal, which came at most 5 s
    // (duration less grace) before the revocation.
    assert!(
        a_stopped < Duration::from_secs(8),
        "A stopped {a_stopped:?} after the revocation, later than its lease can last"
    );

    // Only B reconciles from now on.
    let reconciles_a = metric(&metrics_a, "rsigma_operator_reconciles_total");
    let rule_sets: Api<SigmaRuleSet> = Api::namespaced(admin.clone(), ns);
    create::<SigmaRuleSet>(
        &rule_sets,
        json!({
            "apiVersion": "rsigma.io/v1alpha1", "kind": "SigmaRuleSet",
            "metadata": {"name": "after"}, "spec": {"rules": [WHOAMI]},
        }),
    )
    .await;
    eventually(LONG, "B validates the new rule set", || async {
        rule_set_status(&rule_sets, "after")
            .await
            .filter(|s| s.rule_count == Some(1))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(&metrics_a, "rsigma_operator_reconciles_total"),
        reconciles_a,
        "A does not reconcile after it stopped"
    );
    assert_eq!(
        metrics_a.leader.get(),
        0,
        "A does not start again without its lease"
    );
    task_a.abort();
    task_b.abort();
}

//! The daemon accepts what the operator renders: the NATS example engine's
//! Deployment (arguments, environment from Secrets, mounted files) run
//! through the real `rsigma` binary gets past flag parsing and
//! configuration checks to the NATS connection, where it fails only
//! because the example's server does not exist here.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Container;
use rsigma_crds::{DetectionEngine, NatsConnectionSpec};
use rsigma_operator::resources::{aggregate, desired};

fn example() -> DetectionEngine {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/examples/detectionengine-nats.yaml");
    yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).expect("the example parses")
}

fn container(engine: &DetectionEngine) -> Container {
    let desired = desired(engine, &aggregate(&[]), BTreeMap::new(), "rsigma:test");
    let pod = desired.deployment.spec.template.spec.unwrap();
    pod.containers
        .into_iter()
        .next()
        .expect("the daemon container")
}

/// Runs the container's command line with the pod's paths under `root`,
/// the API on a free loopback port, and `secrets` for the environment
/// variables the pod takes from Secrets.
fn run(container: &Container, root: &Path, secrets: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut args = container.args.clone().unwrap();
    for arg in &mut args {
        if let Some(rest) = arg.strip_prefix("/etc/rsigma") {
            *arg = format!("{}{rest}", root.display());
        }
    }
    let api = args
        .iter()
        .position(|a| a == "--api-addr")
        .expect("--api-addr");
    args[api + 1] = "127.0.0.1:0".into();
    let mut command = Command::new(env!("CARGO_BIN_EXE_rsigma"));
    common::isolate(&mut command, root);
    for var in container.env.iter().flatten() {
        assert!(
            var.value.is_none(),
            "{} is given as a value, not from a Secret",
            var.name
        );
        let (_, value) = secrets
            .iter()
            .find(|(name, _)| *name == var.name)
            .unwrap_or_else(|| panic!("no test value for {}", var.name));
        command.env(&var.name, value);
    }
    let output = command.args(&args).output().expect("running rsigma");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The files the pod would have mounted: rules, a credentials file, a CA.
fn mounted_files(root: &Path) {
    let rules = root.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for entry in std::fs::read_dir(common::sample_rules()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), rules.join(entry.file_name())).unwrap();
    }
    let seed = nkeys::KeyPair::new_user().seed().unwrap();
    let creds = format!(
        "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    std::fs::create_dir_all(root.join("nats")).unwrap();
    std::fs::write(root.join("nats/credentials.creds"), creds).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["nats.messaging".into()]).unwrap();
    std::fs::create_dir_all(root.join("nats-ca")).unwrap();
    std::fs::write(root.join("nats-ca/ca.crt"), ca.cert.pem()).unwrap();
}

#[test]
fn the_nats_example_renders_a_pod_the_daemon_accepts() {
    let engine = example();
    let container = container(&engine);
    let args = container.args.clone().unwrap();
    for expected in [
        "nats://nats.messaging:4222/events.windows.>",
        "--consumer-group",
        "rsigma-soc-edge",
        "--nats-creds",
        "--nats-tls-ca",
        "--nats-require-tls",
        "nats://nats.messaging:4222/detections",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    let root = tempfile::tempdir().unwrap();
    mounted_files(root.path());
    let (code, stderr) = run(&container, root.path(), &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot connect to NATS at nats.messaging:4222 (credentials file)"),
        "the daemon accepted the arguments and tried the server: {stderr}"
    );
}

#[test]
fn secrets_reach_the_daemon_as_environment_never_as_arguments() {
    let mut engine = example();
    let secret = |key: &str| k8s_openapi::api::core::v1::SecretKeySelector {
        name: "nats-auth".into(),
        key: key.into(),
        optional: None,
    };
    for (connection, secrets, method) in [
        (
            NatsConnectionSpec {
                token_secret_ref: Some(secret("token")),
                ..Default::default()
            },
            vec![("NATS_TOKEN", "t0ken-value")],
            "token",
        ),
        (
            NatsConnectionSpec {
                user_secret_ref: Some(secret("user")),
                password_secret_ref: Some(secret("password")),
                ..Default::default()
            },
            vec![("NATS_USER", "alice"), ("NATS_PASSWORD", "pw-value")],
            "user and password",
        ),
        (
            NatsConnectionSpec {
                nkey_secret_ref: Some(secret("seed")),
                ..Default::default()
            },
            vec![("NATS_NKEY", "")],
            "NKey",
        ),
    ] {
        engine.spec.nats = Some(connection);
        let container = container(&engine);
        let args = container.args.clone().unwrap();
        assert!(
            !args.iter().any(|a| a.starts_with("--nats-token")
                || a.starts_with("--nats-password")
                || a.starts_with("--nats-nkey")),
            "{args:?}"
        );
        let root = tempfile::tempdir().unwrap();
        mounted_files(root.path());
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let secrets: Vec<(&str, &str)> = secrets
            .into_iter()
            .map(|(k, v)| (k, if k == "NATS_NKEY" { seed.as_str() } else { v }))
            .collect();
        let (code, stderr) = run(&container, root.path(), &secrets);
        assert_eq!(code, Some(3), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot connect to NATS at nats.messaging:4222 ({method})"
            )),
            "{method}: {stderr}"
        );
        for (_, value) in &secrets {
            assert!(!stderr.contains(value), "a secret in the output: {stderr}");
        }
    }
}

#[test]
fn the_enrichment_example_renders_a_pod_the_daemon_accepts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/examples/detectionengine-enrichment.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut engine = None;
    let mut files: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let doc: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        match doc["kind"].as_str() {
            Some("DetectionEngine") => {
                engine = Some(serde_json::from_value::<DetectionEngine>(doc).unwrap())
            }
            Some("ConfigMap") => files.push((
                doc["metadata"]["name"].as_str().unwrap().to_owned(),
                serde_json::from_value(doc["data"].clone()).unwrap(),
            )),
            _ => {}
        }
    }
    let engine = engine.expect("the example's engine");
    let container = container(&engine);
    let args = container.args.clone().unwrap();
    for expected in [
        "--enrichers",
        "/etc/rsigma/enrichers/enrichers.yaml",
        "--source",
        "/etc/rsigma/sources/0/sources.yaml",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    // The pod's mounts, with every key of the ConfigMaps as a file.
    let root = tempfile::tempdir().unwrap();
    mounted_files(root.path());
    for (dir, config_map) in [("enrichers", "soc-enrichers"), ("sources/0", "soc-sources")] {
        let dir = root.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (_, data) = files.iter().find(|(name, _)| name == config_map).unwrap();
        for (key, content) in data {
            std::fs::write(dir.join(key), content).unwrap();
        }
    }
    // Everything loads (the lookup finds its source, the token is set);
    // the daemon stops only at fetching the example's in-cluster feed.
    let (code, stderr) = run(&container, root.path(), &[("INTEL_TOKEN", "t0ken")]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("source \"blocked_hosts\": cannot connect"),
        "the daemon loaded enrichers and sources and fetched them: {stderr}"
    );
    assert!(!stderr.contains("t0ken"), "{stderr}");
}

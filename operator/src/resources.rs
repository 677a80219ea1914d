//! The pure part of the operator: what a `DetectionEngine` and the rule sets
//! it loads should look like in the cluster.
//!
//! Nothing here talks to the API server. The controller reads the objects
//! (rule sets, the ConfigMaps they reference), calls [`materialize`] per rule
//! set, [`aggregate`] over the valid ones, and [`desired`] for the objects to
//! apply; the golden tests (`tests/golden.rs`) pin the output.
//!
//! Rule files become keys `<namespace>.<ruleset>.<n>.yml` of one ConfigMap,
//! mounted at [`RULES_DIR`]; the daemon hashes the mounted files by name
//! exactly as [`RulesDigest`] hashes the keys here, so the ConfigMap's
//! [`RULES_HASH_ANNOTATION`] is the `rules_hash` a pod reports once it has
//! loaded them. The pod template never carries the rules hash: a rules
//! change is a ConfigMap update plus a hot reload, never a rollout.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
            EmptyDirVolumeSource, EnvVar, HTTPGetAction, KeyToPath, PersistentVolumeClaim,
            PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext,
            PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext,
            Service, ServiceAccount, ServicePort, ServiceSpec, TCPSocketAction, Volume,
            VolumeMount, VolumeResourceRequirements,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use rsigma_crds::{
    DetectionEngine, InputType, LogsourceSpec, MANAGED_FLAGS, Persistence, RuleErrorStatus,
    SigmaRuleSet,
};
use rsigma_engine::{Pipeline, RulesDigest};

/// Field manager of every server-side apply by the operator.
pub const FIELD_MANAGER: &str = "rsigma-operator";
/// Annotation of the rules ConfigMap: the rules hash of its rule files.
pub const RULES_HASH_ANNOTATION: &str = "rsigma.io/rules-hash";
/// Annotation of the rules ConfigMap: JSON object, rule set name → content
/// hash, of the rule sets whose files it holds.
pub const RULE_SETS_ANNOTATION: &str = "rsigma.io/rule-sets";
/// Annotation of the rules ConfigMap: JSON object, rule set name → reason, of
/// rule sets that are valid on their own but were left out because they do
/// not load together with the others (a pipeline of another set rejects
/// them, a duplicate correlation, ...).
pub const REJECTED_ANNOTATION: &str = "rsigma.io/rejected-rule-sets";
/// Annotation of the pod template: hash of the pipelines. Pipelines are
/// daemon flags, so changing them rolls the pods (rules never do).
pub const PIPELINES_HASH_ANNOTATION: &str = "rsigma.io/pipelines-hash";
/// Label carried by every object of an engine, and by its pods: the engine's name.
pub const ENGINE_LABEL: &str = "rsigma.io/engine";
/// `app.kubernetes.io/name` of engine objects.
pub const APP_NAME: &str = "rsigma-engine";
/// Where the rules ConfigMap is mounted in the daemon container.
pub const RULES_DIR: &str = "/etc/rsigma/rules";
/// The Service's ports: the API, and for an OTLP input the standard OTLP
/// ports too, all to the API listener (which serves both OTLP transports),
/// each with the `appProtocol` collectors and service meshes read.
fn service_ports(input: InputType) -> Vec<ServicePort> {
    let port = |name: &str, number: i32, app_protocol: Option<&str>| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(API_PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: app_protocol.map(str::to_owned),
        ..Default::default()
    };
    let mut ports = vec![port(API_PORT_NAME, API_PORT, None)];
    if input == InputType::Otlp {
        ports.push(port("otlp-grpc", OTLP_GRPC_PORT, Some("grpc")));
        ports.push(port("otlp-http", OTLP_HTTP_PORT, Some("http")));
    }
    ports
}

/// The Service port of OTLP/gRPC for `input.type: otlp` (the OTLP default).
pub const OTLP_GRPC_PORT: i32 = 4317;
/// The Service port of OTLP/HTTP for `input.type: otlp` (the OTLP default).
pub const OTLP_HTTP_PORT: i32 = 4318;

/// The daemon's API port (named [`API_PORT_NAME`]).
pub const API_PORT: i32 = 9090;
/// Name of the daemon's API port.
pub const API_PORT_NAME: &str = "api";
/// Name of the daemon container.
pub const CONTAINER_NAME: &str = "engine";
/// The user the daemon runs as.
pub const RUN_AS_USER: i64 = 65532;
/// Largest total size of the rules ConfigMap data the operator writes (the
/// API server refuses objects above 1 MiB; this leaves room for metadata).
pub const MAX_CONFIG_MAP_BYTES: usize = 900 * 1024;

const TLS_DIR: &str = "/etc/rsigma/tls";
const CLIENT_CA_DIR: &str = "/etc/rsigma/client-ca";
const STATE_DIR: &str = "/var/lib/rsigma";
const MAX_KEY_LEN: usize = 253;

/// Name of the rules ConfigMap of an engine.
pub fn rules_config_map_name(engine: &str) -> String {
    format!("{engine}-rules")
}

/// Name of the correlation-state claim of an engine.
pub fn state_claim_name(engine: &str) -> String {
    format!("{engine}-state")
}

/// Labels that select the pods of an engine (the Deployment's selector).
pub fn selector_labels(engine: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (ENGINE_LABEL.to_owned(), engine.to_owned()),
    ])
}

/// The selector of an engine's pods as a string (`status.selector`).
pub fn selector_string(engine: &str) -> String {
    selector_labels(engine)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels of every object of an engine.
pub fn labels(engine: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(engine);
    labels.extend([
        ("app.kubernetes.io/instance".to_owned(), engine.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "detection-engine".to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "rsigma".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
    ]);
    labels
}

// ---------------------------------------------------------------------------
// Rule sets → files
// ---------------------------------------------------------------------------

/// One rule file of a rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFile {
    /// ConfigMap key (and file name in the daemon): `<ns>.<set>.<n>.yml`.
    pub key: String,
    /// Where it came from: `rules[N]` or `configmap/NAME/KEY`.
    pub origin: String,
    /// The YAML text.
    pub content: String,
}

/// A pipeline of a rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineSource {
    /// A builtin pipeline, by name.
    Builtin(String),
    /// An inline pipeline: stored under `key` (which does not end in `.yml`
    /// or `.yaml`, so the daemon does not read it as rules).
    Inline {
        /// ConfigMap key: `<ns>.<set>.<n>.pipeline`.
        key: String,
        /// The YAML text.
        text: String,
    },
}

/// A pipeline with where it came from (`pipelines[N]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineEntry {
    /// `pipelines[N]`.
    pub origin: String,
    /// The pipeline.
    pub source: PipelineSource,
}

/// A rule set resolved to files: what the operator would ship of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializedRuleSet {
    /// Name of the rule set.
    pub name: String,
    /// Namespace of the rule set.
    pub namespace: String,
    /// Rule files, in order: inline rules, then each ConfigMap reference.
    pub files: Vec<RuleFile>,
    /// Pipelines, in order.
    pub pipelines: Vec<PipelineEntry>,
    /// References that could not be resolved (missing ConfigMap or key).
    pub missing: Vec<RuleErrorStatus>,
    /// Content hash over files, pipelines and missing references.
    pub content_hash: String,
}

/// A key `<ns>.<set>.<n>.<ext>`, shortened with a hash when it would exceed
/// the 253 characters of a ConfigMap key.
fn file_key(namespace: &str, set: &str, n: usize, ext: &str) -> String {
    let key = format!("{namespace}.{set}.{n}.{ext}");
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let mut digest = RulesDigest::default();
    digest.add(format!("{namespace}/{set}"), "");
    let hash: String = digest.finish().chars().take(10).collect();
    let suffix = format!("-{hash}.{n}.{ext}");
    let room = MAX_KEY_LEN - suffix.len();
    let prefix: String = format!("{namespace}.{set}").chars().take(room).collect();
    format!("{prefix}{suffix}")
}

fn is_rule_key(key: &str) -> bool {
    key.ends_with(".yml") || key.ends_with(".yaml")
}

/// Resolves a rule set to its files. `config_maps` holds the ConfigMaps of
/// the rule set's namespace that it references, by name (a missing one is
/// reported in [`MaterializedRuleSet::missing`]).
pub fn materialize(
    rule_set: &SigmaRuleSet,
    config_maps: &BTreeMap<String, ConfigMap>,
) -> MaterializedRuleSet {
    let namespace = rule_set.namespace().unwrap_or_default();
    let name = rule_set.name_any();
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let mut n = 0;
    let mut push = |files: &mut Vec<RuleFile>, origin: String, content: String| {
        files.push(RuleFile {
            key: file_key(&namespace, &name, n, "yml"),
            origin,
            content,
        });
        n += 1;
    };
    for (i, text) in rule_set.spec.rules.iter().enumerate() {
        push(&mut files, format!("rules[{i}]"), text.clone());
    }
    for reference in &rule_set.spec.config_map_refs {
        let Some(cm) = config_maps.get(&reference.name) else {
            missing.push(RuleErrorStatus {
                document: Some(format!("configmap/{}", reference.name)),
                rule: None,
                reason: format!("ConfigMap {:?} not found", reference.name),
            });
            continue;
        };
        let data = cm.data.clone().unwrap_or_default();
        match &reference.key {
            Some(key) => match data.get(key) {
                Some(text) => push(
                    &mut files,
                    format!("configmap/{}/{key}", reference.name),
                    text.clone(),
                ),
                None => missing.push(RuleErrorStatus {
                    document: Some(format!("configmap/{}/{key}", reference.name)),
                    rule: None,
                    reason: format!("ConfigMap {:?} has no key {key:?}", reference.name),
                }),
            },
            None => {
                for (key, text) in data.iter().filter(|(k, _)| is_rule_key(k)) {
                    push(
                        &mut files,
                        format!("configmap/{}/{key}", reference.name),
                        text.clone(),
                    );
                }
            }
        }
    }
    let pipelines: Vec<PipelineEntry> = rule_set
        .spec
        .pipelines
        .iter()
        .enumerate()
        .map(|(i, spec)| PipelineEntry {
            origin: format!("pipelines[{i}]"),
            source: if Pipeline::builtin(spec.trim()).is_some() {
                PipelineSource::Builtin(spec.trim().to_owned())
            } else {
                PipelineSource::Inline {
                    key: file_key(&namespace, &name, i, "pipeline"),
                    text: spec.clone(),
                }
            },
        })
        .collect();

    let mut digest = RulesDigest::default();
    for file in &files {
        digest.add(file.key.clone(), &file.content);
    }
    for (i, pipeline) in pipelines.iter().enumerate() {
        match &pipeline.source {
            PipelineSource::Builtin(b) => {
                digest.add(format!("pipeline/{i}"), &format!("builtin:{b}"))
            }
            PipelineSource::Inline { key, text } => digest.add(format!("pipeline/{key}"), text),
        }
    }
    for m in &missing {
        digest.add(
            format!("missing/{}", m.document.clone().unwrap_or_default()),
            "",
        );
    }
    MaterializedRuleSet {
        name,
        namespace,
        files,
        pipelines,
        missing,
        content_hash: digest.finish(),
    }
}

/// What an engine loads: the union of the rule sets given to [`aggregate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// Rule files: key → content.
    pub files: BTreeMap<String, String>,
    /// Inline pipeline files: key → content.
    pub pipeline_files: BTreeMap<String, String>,
    /// `-p` values in order: builtin names, or paths under [`RULES_DIR`].
    pub pipeline_args: Vec<String>,
    /// The daemon's rules hash of [`Aggregate::files`].
    pub rules_hash: String,
    /// Hash of the pipelines (empty without pipelines).
    pub pipelines_hash: String,
    /// Rule set name → content hash, of every rule set in here.
    pub rule_sets: BTreeMap<String, String>,
    /// Which rule set each key (rule or pipeline file) belongs to.
    pub owners: BTreeMap<String, String>,
    /// Whether the rule sets do not all declare the same pipelines (the
    /// daemon applies its pipelines to every rule it loads).
    pub mixed_pipelines: bool,
}

impl Aggregate {
    /// Total bytes of the ConfigMap data.
    pub fn data_bytes(&self) -> usize {
        self.files
            .iter()
            .chain(self.pipeline_files.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum()
    }
}

/// Merges rule sets (valid ones, in the order given: the controller sorts
/// them by name). Pipelines are the ordered union of the sets' pipelines:
/// builtins by name, inline pipelines by text.
pub fn aggregate(rule_sets: &[&MaterializedRuleSet]) -> Aggregate {
    let mut agg = Aggregate::default();
    let mut seen_builtin = BTreeSet::new();
    let mut seen_inline: BTreeMap<String, String> = BTreeMap::new();
    let mut pipeline_lists = BTreeSet::new();
    let mut pipeline_digest = RulesDigest::default();
    let mut pipeline_contents: Vec<(String, String)> = Vec::new();
    for set in rule_sets {
        agg.rule_sets
            .insert(set.name.clone(), set.content_hash.clone());
        for file in &set.files {
            agg.files.insert(file.key.clone(), file.content.clone());
            agg.owners.insert(file.key.clone(), set.name.clone());
        }
        let mut list = Vec::new();
        for entry in &set.pipelines {
            match &entry.source {
                PipelineSource::Builtin(name) => {
                    list.push(format!("builtin:{name}"));
                    if seen_builtin.insert(name.clone()) {
                        agg.pipeline_args.push(name.clone());
                        pipeline_contents.push((name.clone(), String::new()));
                    }
                }
                PipelineSource::Inline { key, text } => {
                    list.push(format!("inline:{text}"));
                    if !seen_inline.contains_key(text) {
                        seen_inline.insert(text.clone(), key.clone());
                        agg.pipeline_files.insert(key.clone(), text.clone());
                        agg.owners.insert(key.clone(), set.name.clone());
                        agg.pipeline_args.push(format!("{RULES_DIR}/{key}"));
                        pipeline_contents.push((format!("{RULES_DIR}/{key}"), text.clone()));
                    }
                }
            }
        }
        pipeline_lists.insert(list);
    }
    agg.mixed_pipelines = pipeline_lists.len() > 1;
    let mut digest = RulesDigest::default();
    for (key, content) in &agg.files {
        digest.add(key.clone(), content);
    }
    agg.rules_hash = digest.finish();
    for (i, (arg, content)) in pipeline_contents.iter().enumerate() {
        pipeline_digest.add(format!("{i:04}"), &format!("{arg}\0{content}"));
    }
    if !pipeline_contents.is_empty() {
        agg.pipelines_hash = pipeline_digest.finish();
    }
    agg
}

// ---------------------------------------------------------------------------
// Engine → objects
// ---------------------------------------------------------------------------

/// Why an engine's spec cannot be deployed (the API server of Kubernetes
/// before 1.25 does not enforce the CRD's CEL rules, so the operator checks
/// them again).
pub fn check_spec(engine: &DetectionEngine) -> Result<(), String> {
    let spec = &engine.spec;
    for arg in &spec.extra_args {
        let flag = arg.split('=').next().unwrap_or(arg);
        if MANAGED_FLAGS.contains(&flag) {
            return Err(format!(
                "extraArgs must not set {flag}: the operator manages it"
            ));
        }
    }
    if spec.state.persistence == Persistence::Pvc && spec.replicas > 1 {
        return Err(
            "state.persistence: pvc supports at most one replica (the correlation state is a ReadWriteOnce volume)"
                .to_owned(),
        );
    }
    match (spec.input.type_, &spec.input.nats) {
        (InputType::Nats, None) => {
            return Err("input.nats is required when input.type is nats".to_owned());
        }
        (InputType::Http | InputType::Otlp, Some(_)) => {
            return Err("input.nats is set but input.type is not nats".to_owned());
        }
        _ => {}
    }
    for output in &spec.outputs {
        if !rsigma_crds::detectionengine::is_output_url(output) {
            return Err(format!(
                "output {output:?} must be stdout, file://PATH or nats://HOST[:PORT]/SUBJECT"
            ));
        }
    }
    crate::nats::check(engine)?;
    if spec.replicas < 0 {
        return Err("replicas must not be negative".to_owned());
    }
    for volume in &spec.pod.volumes {
        if RESERVED_VOLUMES.contains(&volume.name.as_str())
            || crate::enrichment::is_enrichment_volume(&volume.name)
        {
            return Err(format!(
                "pod.volumes: the volume name {:?} is the operator's ({}, enrichers, source-N)",
                volume.name,
                RESERVED_VOLUMES.join(", ")
            ));
        }
    }
    if let Some(enrichment) = &spec.enrichment
        && enrichment
            .enrichers
            .iter()
            .chain(&enrichment.sources)
            .any(|f| f.config_map.is_some() == f.secret.is_some())
    {
        return Err("enrichment: set exactly one of configMap and secret for each file".to_owned());
    }
    if let Some(budget) = &spec.pod_disruption_budget
        && budget.min_available.is_some() == budget.max_unavailable.is_some()
    {
        return Err(
            "podDisruptionBudget: set exactly one of minAvailable and maxUnavailable".to_owned(),
        );
    }
    Ok(())
}

/// Volume names the operator gives the daemon pods (the last three hold the
/// NATS Secrets: [`crate::nats`]).
const RESERVED_VOLUMES: &[&str] = &[
    "rules",
    "tmp",
    "tls",
    "client-ca",
    "state",
    "nats-credentials",
    "nats-tls",
    "nats-ca",
];

/// What one feature of an engine (NATS, enrichment) adds to its daemon
/// pods.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PodParts {
    /// Daemon arguments.
    pub args: Vec<String>,
    /// Environment variables of the daemon container.
    pub env: Vec<EnvVar>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// Their mounts in the daemon container.
    pub mounts: Vec<VolumeMount>,
}

/// A volume `volume` of the keys of Secret `secret`, each `(key, file)`.
pub(crate) fn secret_volume(volume: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: volume.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).to_owned(),
                        path: (*path).to_owned(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A read-only mount of `volume` at `dir`.
pub(crate) fn read_only_mount(volume: &str, dir: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: dir.to_owned(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The objects of an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The rules (and inline pipelines) ConfigMap.
    pub config_map: ConfigMap,
    /// The daemon Deployment.
    pub deployment: Deployment,
    /// The daemon Service (API port).
    pub service: Service,
    /// The daemon ServiceAccount, unless the spec names one.
    pub service_account: Option<ServiceAccount>,
    /// The correlation-state claim (`state.persistence: pvc`).
    pub pvc: Option<PersistentVolumeClaim>,
    /// The PodDisruptionBudget (`podDisruptionBudget`).
    pub pdb: Option<PodDisruptionBudget>,
}

fn meta(engine: &DetectionEngine, name: String) -> ObjectMeta {
    let engine_name = engine.name_any();
    ObjectMeta {
        name: Some(name),
        namespace: engine.namespace(),
        labels: Some(labels(&engine_name)),
        // blockOwnerDeletion: a foreground deletion of the engine waits for
        // its objects (the operator's RBAC grants the finalizers it needs).
        owner_references: engine.controller_owner_ref(&()).map(|mut owner| {
            owner.block_owner_deletion = Some(true);
            vec![owner]
        }),
        ..Default::default()
    }
}

/// The daemon's command-line arguments for `engine` with pipelines `pipeline_args`.
pub fn daemon_args(engine: &DetectionEngine, pipeline_args: &[String]) -> Vec<String> {
    let spec = &engine.spec;
    let mut args: Vec<String> = ["engine", "daemon", "-r", RULES_DIR]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if spec.input.type_ != InputType::Nats {
        args.push("--input".to_owned());
        args.push("http".to_owned());
    }
    args.extend(crate::nats::pod_parts(engine).args);
    args.push("--api-addr".to_owned());
    args.push(format!("0.0.0.0:{API_PORT}"));
    match &spec.tls {
        None => args.push("--allow-plaintext".to_owned()),
        Some(tls) => {
            args.extend([
                "--tls-cert".to_owned(),
                format!("{TLS_DIR}/tls.crt"),
                "--tls-key".to_owned(),
                format!("{TLS_DIR}/tls.key"),
            ]);
            if tls.client_ca_secret_name.is_some() {
                args.push("--tls-client-ca".to_owned());
                args.push(format!("{CLIENT_CA_DIR}/ca.crt"));
            }
        }
    }
    for output in &spec.outputs {
        args.push("--output".to_owned());
        args.push(output.clone());
    }
    for pipeline in pipeline_args {
        args.push("-p".to_owned());
        args.push(pipeline.clone());
    }
    if spec.tap.enabled {
        args.push("--enable-tap".to_owned());
    }
    if spec.state.persistence == Persistence::Pvc {
        args.push("--state-db".to_owned());
        args.push(format!("{STATE_DIR}/state.db"));
    }
    if let Some(logsource) = &spec.logsource {
        args.extend(logsource_args(logsource));
    }
    args.extend(crate::enrichment::pod_parts(engine).args);
    args.extend(spec.extra_args.iter().cloned());
    args
}

/// The routing flags of a `logsource` section.
fn logsource_args(logsource: &LogsourceSpec) -> Vec<String> {
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        map.iter()
            .map(|(d, v)| format!("{d}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = Vec::new();
    if !logsource.routing {
        args.push("--no-logsource-routing".to_owned());
    }
    if !logsource.event.is_empty() {
        args.push(format!("--event-logsource={}", pairs(&logsource.event)));
    }
    if !logsource.field_map.is_empty() {
        args.push(format!(
            "--logsource-field-map={}",
            pairs(&logsource.field_map)
        ));
    }
    args
}

fn probe(path: &str, https: bool, tcp_only: bool, period: i32) -> Probe {
    let port = IntOrString::String(API_PORT_NAME.to_owned());
    let mut probe = Probe {
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    };
    if tcp_only {
        probe.tcp_socket = Some(TCPSocketAction {
            port,
            ..Default::default()
        });
    } else {
        probe.http_get = Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port,
            scheme: Some(if https { "HTTPS" } else { "HTTP" }.to_owned()),
            ..Default::default()
        });
    }
    probe
}

/// The objects of `engine` loading `aggregate`. `extra_cm_annotations` go on
/// the rules ConfigMap (the rule sets it holds, those left out).
/// The daemon image of `engine`: its own, else the operator's default.
pub fn daemon_image<'a>(engine: &'a DetectionEngine, default: Option<&'a str>) -> Option<&'a str> {
    engine.spec.image.as_deref().or(default)
}

/// The objects of `engine` loading `aggregate`, with daemon image `image`
/// (see [`daemon_image`]).
pub fn desired(
    engine: &DetectionEngine,
    aggregate: &Aggregate,
    extra_cm_annotations: BTreeMap<String, String>,
    image: &str,
) -> Desired {
    let name = engine.name_any();
    let spec = &engine.spec;

    // ConfigMap.
    let mut cm_meta = meta(engine, rules_config_map_name(&name));
    let mut annotations = extra_cm_annotations;
    annotations.insert(
        RULES_HASH_ANNOTATION.to_owned(),
        aggregate.rules_hash.clone(),
    );
    cm_meta.annotations = Some(annotations);
    let mut data = aggregate.files.clone();
    data.extend(aggregate.pipeline_files.clone());
    let config_map = ConfigMap {
        metadata: cm_meta,
        data: Some(data),
        ..Default::default()
    };

    // Pod template.
    let https = spec.tls.is_some();
    let mutual_tls = spec
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca_secret_name.is_some());
    let mut volumes = vec![
        Volume {
            name: "rules".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: rules_config_map_name(&name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".to_owned())),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        read_only_mount("rules", RULES_DIR),
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..Default::default()
        },
    ];
    if let Some(tls) = &spec.tls {
        volumes.push(secret_volume(
            "tls",
            &tls.secret_name,
            &[("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
        ));
        mounts.push(read_only_mount("tls", TLS_DIR));
        if let Some(ca) = &tls.client_ca_secret_name {
            volumes.push(secret_volume("client-ca", ca, &[("ca.crt", "ca.crt")]));
            mounts.push(read_only_mount("client-ca", CLIENT_CA_DIR));
        }
    }
    let nats = crate::nats::pod_parts(engine);
    volumes.extend(nats.volumes);
    mounts.extend(nats.mounts);
    let enrichment = crate::enrichment::pod_parts(engine);
    volumes.extend(enrichment.volumes);
    mounts.extend(enrichment.mounts);
    let pvc = (spec.state.persistence == Persistence::Pvc).then(|| {
        volumes.push(Volume {
            name: "state".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: state_claim_name(&name),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "state".to_owned(),
            mount_path: STATE_DIR.to_owned(),
            ..Default::default()
        });
        PersistentVolumeClaim {
            metadata: meta(engine, state_claim_name(&name)),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: spec.state.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        spec.state
                            .size
                            .clone()
                            .unwrap_or_else(|| Quantity("1Gi".to_owned())),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    });

    volumes.extend(spec.pod.volumes.iter().cloned());
    mounts.extend(spec.pod.volume_mounts.iter().cloned());
    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.image_pull_policy.map(|p| format!("{p:?}")),
        args: Some(daemon_args(engine, &aggregate.pipeline_args)),
        ports: Some(vec![ContainerPort {
            name: Some(API_PORT_NAME.to_owned()),
            container_port: API_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        // With mutual TLS the kubelet (no client certificate) cannot speak
        // HTTP to the daemon: fall back to TCP probes.
        liveness_probe: Some(probe("/healthz", https, mutual_tls, 10)),
        readiness_probe: Some(probe("/readyz", https, mutual_tls, 5)),
        resources: spec.resources.clone(),
        env: Some(
            spec.pod
                .env
                .iter()
                .cloned()
                .chain(nats.env)
                .collect::<Vec<_>>(),
        )
        .filter(|env| !env.is_empty()),
        env_from: (!spec.pod.env_from.is_empty()).then(|| spec.pod.env_from.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let mut template_annotations = spec.pod.annotations.clone();
    template_annotations.extend([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), API_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    if https {
        template_annotations.insert("prometheus.io/scheme".to_owned(), "https".to_owned());
    }
    if !aggregate.pipelines_hash.is_empty() {
        template_annotations.insert(
            PIPELINES_HASH_ANNOTATION.to_owned(),
            aggregate.pipelines_hash.clone(),
        );
    }
    let service_account_name = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| name.clone());
    let mut template_labels = spec.pod.labels.clone();
    template_labels.extend(labels(&name));
    let pod = &spec.pod;
    let deployment = Deployment {
        metadata: meta(engine, name.clone()),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            },
            strategy: (spec.state.persistence == Persistence::Pvc).then(|| DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(template_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account_name),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: (!pod.node_selector.is_empty())
                        .then(|| pod.node_selector.clone()),
                    tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
                    affinity: pod.affinity.clone(),
                    topology_spread_constraints: (!pod.topology_spread_constraints.is_empty())
                        .then(|| pod.topology_spread_constraints.clone()),
                    priority_class_name: pod.priority_class_name.clone(),
                    image_pull_secrets: (!pod.image_pull_secrets.is_empty())
                        .then(|| pod.image_pull_secrets.clone()),
                    termination_grace_period_seconds: pod.termination_grace_period_seconds,
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    };

    let mut service_meta = meta(engine, name.clone());
    if !spec.service.annotations.is_empty() {
        service_meta.annotations = Some(spec.service.annotations.clone());
    }
    let service = Service {
        metadata: service_meta,
        spec: Some(ServiceSpec {
            type_: Some(
                spec.service
                    .type_
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|| "ClusterIP".to_owned()),
            ),
            selector: Some(selector_labels(&name)),
            ports: Some(service_ports(spec.input.type_)),
            ..Default::default()
        }),
        ..Default::default()
    };

    let service_account = spec.service_account_name.is_none().then(|| ServiceAccount {
        metadata: meta(engine, name.clone()),
        automount_service_account_token: Some(false),
        ..Default::default()
    });

    let pdb = spec
        .pod_disruption_budget
        .as_ref()
        .map(|budget| PodDisruptionBudget {
            metadata: meta(engine, name.clone()),
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(&name)),
                    ..Default::default()
                }),
                min_available: budget.min_available.clone(),
                max_unavailable: budget.max_unavailable.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });

    Desired {
        config_map,
        deployment,
        service,
        service_account,
        pvc,
        pdb,
    }
}

/// Annotations the rules ConfigMap carries besides the hash: the rule sets
/// it holds and those left out, as JSON objects.
pub fn config_map_annotations(
    included: &BTreeMap<String, String>,
    rejected: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(
        RULE_SETS_ANNOTATION.to_owned(),
        serde_json::to_string(included).expect("a map of strings serializes"),
    )]);
    if !rejected.is_empty() {
        annotations.insert(
            REJECTED_ANNOTATION.to_owned(),
            serde_json::to_string(rejected).expect("a map of strings serializes"),
        );
    }
    annotations
}

/// Reads [`RULE_SETS_ANNOTATION`] and [`REJECTED_ANNOTATION`] of a rules
/// ConfigMap: (included name → content hash, rejected name → reason).
pub fn read_config_map_annotations(
    cm: &ConfigMap,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let annotations = cm.annotations();
    let read = |key: &str| {
        annotations
            .get(key)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    };
    (read(RULE_SETS_ANNOTATION), read(REJECTED_ANNOTATION))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsigma_crds::{ConfigMapRuleRef, SigmaRuleSetSpec};

    fn rule_set(name: &str, spec: SigmaRuleSetSpec) -> SigmaRuleSet {
        let mut rs = SigmaRuleSet::new(name, spec);
        rs.metadata.namespace = Some("soc".to_owned());
        rs
    }

    #[test]
    fn keys_are_namespaced_numbered_and_deterministic() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("community".to_owned()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("b.yml".to_owned(), "title: B".to_owned()),
                ("a.yaml".to_owned(), "title: A".to_owned()),
                ("README.md".to_owned(), "not a rule".to_owned()),
            ])),
            ..Default::default()
        };
        let rs = rule_set(
            "win",
            SigmaRuleSetSpec {
                rules: vec!["title: inline".to_owned()],
                config_map_refs: vec![
                    ConfigMapRuleRef {
                        name: "community".to_owned(),
                        key: None,
                    },
                    ConfigMapRuleRef {
                        name: "gone".to_owned(),
                        key: None,
                    },
                ],
                ..Default::default()
            },
        );
        let cms = BTreeMap::from([("community".to_owned(), cm)]);
        let m = materialize(&rs, &cms);
        let keys: Vec<_> = m
            .files
            .iter()
            .map(|f| (f.key.as_str(), f.origin.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("soc.win.0.yml", "rules[0]"),
                ("soc.win.1.yml", "configmap/community/a.yaml"),
                ("soc.win.2.yml", "configmap/community/b.yml"),
            ]
        );
        assert_eq!(m.missing.len(), 1);
        assert_eq!(m, materialize(&rs, &cms));
    }

    #[test]
    fn long_keys_are_shortened_and_stay_unique() {
        let long = "x".repeat(250);
        let a = file_key("ns", &long, 1, "yml");
        let b = file_key("ns", &format!("{long}y"), 1, "yml");
        assert!(a.len() <= MAX_KEY_LEN && b.len() <= MAX_KEY_LEN);
        assert_ne!(a, b);
        assert!(a.ends_with(".1.yml"));
    }

    #[test]
    fn aggregate_hash_is_the_daemon_digest_of_the_keys() {
        let a = rule_set(
            "a",
            SigmaRuleSetSpec {
                rules: vec!["title: A\n".to_owned()],
                pipelines: vec![
                    "sysmon".to_owned(),
                    "name: x\ntransformations: []\n".to_owned(),
                ],
                ..Default::default()
            },
        );
        let b = rule_set(
            "b",
            SigmaRuleSetSpec {
                rules: vec!["title: B\n".to_owned()],
                pipelines: vec!["sysmon".to_owned()],
                ..Default::default()
            },
        );
        let (ma, mb) = (
            materialize(&a, &BTreeMap::new()),
            materialize(&b, &BTreeMap::new()),
        );
        let agg = aggregate(&[&ma, &mb]);
        let mut d = RulesDigest::default();
        d.add("soc.a.0.yml", "title: A\n");
        d.add("soc.b.0.yml", "title: B\n");
        assert_eq!(agg.rules_hash, d.finish());
        assert_eq!(
            agg.pipeline_args,
            ["sysmon".to_owned(), format!("{RULES_DIR}/soc.a.1.pipeline")]
        );
        assert!(agg.mixed_pipelines);
        assert!(!agg.pipelines_hash.is_empty());
        // The same content under the same names: the same hashes.
        assert_eq!(agg, aggregate(&[&ma, &mb]));
    }

    #[test]
    fn spec_checks() {
        let mut e = DetectionEngine::new("e", rsigma_crds::DetectionEngineSpec::with_image("img"));
        assert!(check_spec(&e).is_ok());
        e.spec.extra_args = vec!["--rules=/x".to_owned()];
        assert!(check_spec(&e).unwrap_err().contains("--rules"));
        e.spec.extra_args = vec!["--workers=2".to_owned()];
        e.spec.state.persistence = Persistence::Pvc;
        e.spec.replicas = 2;
        assert!(check_spec(&e).unwrap_err().contains("pvc"));
    }

    #[test]
    fn pod_and_service_settings_reach_the_objects() {
        use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, Toleration};
        let mut e = DetectionEngine::new("e", rsigma_crds::DetectionEngineSpec::with_image("img"));
        e.metadata.namespace = Some("ns".to_owned());
        e.spec.pod.labels = BTreeMap::from([
            ("team".to_owned(), "soc".to_owned()),
            // The operator's own label wins.
            (ENGINE_LABEL.to_owned(), "other".to_owned()),
        ]);
        e.spec.pod.node_selector = BTreeMap::from([("pool".to_owned(), "detect".to_owned())]);
        e.spec.pod.tolerations = vec![Toleration {
            key: Some("dedicated".to_owned()),
            operator: Some("Exists".to_owned()),
            ..Default::default()
        }];
        e.spec.pod.priority_class_name = Some("high".to_owned());
        e.spec.pod.image_pull_secrets = vec![LocalObjectReference {
            name: "registry".to_owned(),
        }];
        e.spec.pod.env = vec![EnvVar {
            name: "TZ".to_owned(),
            value: Some("UTC".to_owned()),
            ..Default::default()
        }];
        e.spec.pod.volumes = vec![Volume {
            name: "extra".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }];
        e.spec.pod.volume_mounts = vec![VolumeMount {
            name: "extra".to_owned(),
            mount_path: "/extra".to_owned(),
            ..Default::default()
        }];
        e.spec.pod.termination_grace_period_seconds = Some(90);
        e.spec.service.type_ = Some(rsigma_crds::ServiceType::LoadBalancer);
        e.spec.service.annotations = BTreeMap::from([("lb".to_owned(), "internal".to_owned())]);
        e.spec.pod_disruption_budget = Some(rsigma_crds::DisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            max_unavailable: None,
        });
        assert_eq!(check_spec(&e), Ok(()));
        let d = desired(&e, &Aggregate::default(), BTreeMap::new(), "img:1");
        let template = d.deployment.spec.template;
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["team"], "soc");
        assert_eq!(labels[ENGINE_LABEL], "e");
        let pod = template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["pool"], "detect");
        assert_eq!(pod.tolerations.unwrap().len(), 1);
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(pod.termination_grace_period_seconds, Some(90));
        assert!(pod.volumes.unwrap().iter().any(|v| v.name == "extra"));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("img:1"));
        assert_eq!(container.env.as_ref().unwrap()[0].name, "TZ");
        assert!(
            container
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/extra")
        );
        let service = d.service;
        assert_eq!(service.metadata.annotations.unwrap()["lb"], "internal");
        assert_eq!(service.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
        let pdb = d.pdb.expect("a budget");
        assert_eq!(pdb.spec.unwrap().min_available, Some(IntOrString::Int(1)));

        e.spec.pod.volumes[0].name = "rules".to_owned();
        assert!(check_spec(&e).unwrap_err().contains("\"rules\""));
        e.spec.pod.volumes.clear();
        e.spec.pod_disruption_budget = Some(rsigma_crds::DisruptionBudgetSpec::default());
        assert!(check_spec(&e).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn an_otlp_input_exposes_the_otlp_ports_on_the_api_listener() {
        let ports_of = |e: &DetectionEngine| -> Vec<(String, i32, Option<String>)> {
            let d = desired(e, &Aggregate::default(), BTreeMap::new(), "img:1");
            d.service
                .spec
                .unwrap()
                .ports
                .unwrap()
                .into_iter()
                .map(|p| {
                    assert_eq!(
                        p.target_port,
                        Some(IntOrString::String(API_PORT_NAME.to_owned()))
                    );
                    (p.name.unwrap(), p.port, p.app_protocol)
                })
                .collect()
        };
        let mut e = DetectionEngine::new("e", rsigma_crds::DetectionEngineSpec::with_image("img"));
        e.metadata.namespace = Some("ns".to_owned());
        assert_eq!(ports_of(&e), [("api".to_owned(), API_PORT, None)]);
        e.spec.input.type_ = InputType::Otlp;
        assert_eq!(check_spec(&e), Ok(()));
        assert_eq!(
            ports_of(&e),
            [
                ("api".to_owned(), API_PORT, None),
                ("otlp-grpc".to_owned(), 4317, Some("grpc".to_owned())),
                ("otlp-http".to_owned(), 4318, Some("http".to_owned())),
            ]
        );
        let args = daemon_args(&e, &[]);
        let input = args.iter().position(|a| a == "--input").expect("--input");
        assert_eq!(args[input + 1], "http");
    }

    #[test]
    fn the_image_is_the_engines_or_the_default() {
        let mut e = DetectionEngine::new("e", rsigma_crds::DetectionEngineSpec::with_image("own"));
        assert_eq!(daemon_image(&e, Some("default")), Some("own"));
        e.spec.image = None;
        assert_eq!(daemon_image(&e, Some("default")), Some("default"));
        assert_eq!(daemon_image(&e, None), None);
    }

    #[test]
    fn logsource_becomes_routing_flags_and_is_managed() {
        let mut e = DetectionEngine::new("e", rsigma_crds::DetectionEngineSpec::with_image("img"));
        let plain = daemon_args(&e, &[]);
        assert!(!plain.iter().any(|a| a.contains("logsource")));
        e.spec.logsource = Some(LogsourceSpec {
            routing: false,
            event: BTreeMap::from([
                ("service".to_owned(), "sysmon".to_owned()),
                ("product".to_owned(), "windows".to_owned()),
            ]),
            field_map: BTreeMap::from([("category".to_owned(), "source.category".to_owned())]),
        });
        let args = daemon_args(&e, &[]);
        let tail: Vec<&str> = args[plain.len()..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--no-logsource-routing",
                "--event-logsource=product=windows,service=sysmon",
                "--logsource-field-map=category=source.category",
            ]
        );
        e.spec.extra_args = vec!["--event-logsource=product=linux".to_owned()];
        assert!(check_spec(&e).unwrap_err().contains("--event-logsource"));
        e.spec.extra_args.clear();
        e.spec
            .logsource
            .as_mut()
            .unwrap()
            .event
            .insert("bad key".to_owned(), "x".to_owned());
        assert!(!e.spec.violations().is_empty());
    }
}

//! `DetectionEngine`: a namespaced deployment of the rsigma daemon that loads
//! the `SigmaRuleSet`s it selects.

use k8s_openapi::{
    api::core::v1::{
        Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements,
        SecretKeySelector, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, LabelSelector},
    },
};
use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Daemon flags the operator sets itself; `extraArgs` must not repeat them.
pub const MANAGED_FLAGS: &[&str] = &[
    "-r",
    "--rules",
    "-c",
    "--config",
    "-p",
    "--pipeline",
    "--input",
    "--output",
    "--api-addr",
    "--allow-plaintext",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--state-db",
    "--enable-tap",
    "--no-logsource-routing",
    "--event-logsource",
    "--logsource-field-map",
    "--nats-creds",
    "--nats-token",
    "--nats-user",
    "--nats-password",
    "--nats-nkey",
    "--nats-tls-cert",
    "--nats-tls-key",
    "--nats-tls-ca",
    "--nats-require-tls",
    "--consumer-group",
    "--enrichers",
    "--source",
    "--allow-remote-include",
];

/// Desired state of a `DetectionEngine`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "rsigma.io",
    version = "v1alpha1",
    kind = "DetectionEngine",
    plural = "detectionengines",
    singular = "detectionengine",
    shortname = "de",
    category = "rsigma",
    namespaced,
    status = "DetectionEngineStatus",
    derive = "PartialEq",
    doc = "A deployment of the rsigma detection daemon that loads the SigmaRuleSets it selects.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Every desired replica is ready"
    ),
    printcolumn(
        name = "RulesInSync",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"RulesInSync\")].status",
        description = "Every ready pod reports the desired rules hash as loaded"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired replicas"
    ),
    printcolumn(
        name = "ReadyReplicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready replicas"
    ),
    printcolumn(
        name = "Input",
        type_ = "string",
        json_path = ".spec.input.type",
        priority = 1
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        priority = 1
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
        "rule": "!has(self.state) || self.state.persistence != 'pvc' || !has(self.replicas) || self.replicas <= 1",
        "message": "state.persistence: pvc supports at most one replica (the correlation state is a ReadWriteOnce volume)"
    }
]))]
pub struct DetectionEngineSpec {
    /// Container image of the rsigma daemon. Absent: the operator's default
    /// daemon image (`--default-daemon-image`, the chart's
    /// `engineDefaults.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Image pull policy. Absent: the Kubernetes default for the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Number of daemon pods. Every pod loads the same rules.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Compute resources of the daemon container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Which SigmaRuleSets (same namespace) this engine loads, by their
    /// labels. Absent or empty: every rule set in the namespace (each rule
    /// set can further restrict itself with `engineSelector`/`engineRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_set_selector: Option<LabelSelector>,

    /// Where events come from.
    #[serde(default)]
    pub input: InputSpec,

    /// The NATS connection (credentials, TLS) of a NATS input or output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "[has(self.credentialsSecretRef), has(self.tokenSecretRef), has(self.userSecretRef) || has(self.passwordSecretRef), has(self.nkeySecretRef)].filter(x, x).size() <= 1",
            "message": "set at most one NATS authentication method"
        },
        {
            "rule": "has(self.userSecretRef) == has(self.passwordSecretRef)",
            "message": "userSecretRef and passwordSecretRef go together"
        }
    ]))]
    pub nats: Option<NatsConnectionSpec>,

    /// Where detections go: `stdout`, `file://PATH` or
    /// `nats://HOST[:PORT]/SUBJECT` (with `spec.nats`' connection); every
    /// record goes to every output.
    #[serde(default = "default_outputs")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 4096)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(o, o == 'stdout' || (o.startsWith('file://') && size(o) > 7) || o.matches('^nats://[^/@]+/[^ ]+$'))",
            "message": "each output must be stdout, file://PATH or nats://HOST[:PORT]/SUBJECT"
        }
    ]))]
    pub outputs: Vec<String>,

    /// The live tap (`GET /api/v1/tap`, used by `rsigma engine tap`).
    #[serde(default)]
    pub tap: TapSpec,

    /// TLS for the daemon's API listener. Absent: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Persistence of the correlation state.
    #[serde(default)]
    pub state: StateSpec,

    /// Logsource routing of the engine's stream: which rules see which event.
    /// Absent: routing on, derived from well-known event shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logsource: Option<LogsourceSpec>,

    /// Post-evaluation enrichers and dynamic pipeline sources, from
    /// ConfigMaps or Secrets of the engine's namespace (docs/enrichers.md,
    /// docs/sources.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<EnrichmentSpec>,

    /// Further daemon flags, appended after those the operator sets (for
    /// example `--workers=4`, `--tls-min-version=1.2`). Flags the operator
    /// manages (rules, pipelines, input, outputs, API address, TLS files,
    /// state database, tap) are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(a, !a.matches('^(-r|-c|-p|--rules|--config|--pipeline|--input|--output|--api-addr|--allow-plaintext|--tls-cert|--tls-key|--tls-client-ca|--state-db|--enable-tap|--no-logsource-routing|--event-logsource|--logsource-field-map|--nats-creds|--nats-token|--nats-user|--nats-password|--nats-nkey|--nats-tls-cert|--nats-tls-key|--nats-tls-ca|--nats-require-tls|--consumer-group|--enrichers|--source|--allow-remote-include)(=.*)?$'))",
            "message": "extraArgs must not set a flag the operator manages (rules, config, pipeline, input, output, api-addr, allow-plaintext, tls-cert, tls-key, tls-client-ca, state-db, enable-tap, logsource routing: use spec.logsource; NATS connection and consumer group: use spec.nats and input.nats; enrichers and sources: use spec.enrichment)"
        }
    ]))]
    pub extra_args: Vec<String>,

    /// ServiceAccount of the daemon pods. Absent: one created by the operator
    /// (no API token mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Scheduling and pod-level settings of the daemon pods.
    #[serde(default)]
    pub pod: EnginePodSpec,

    /// The engine's Service.
    #[serde(default)]
    pub service: EngineServiceSpec,

    /// A PodDisruptionBudget for the daemon pods. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<DisruptionBudgetSpec>,
}

/// Pod-level settings of the daemon pods (the operator owns the container,
/// its arguments, probes and security context).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnginePodSpec {
    /// Extra labels of the pods (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations of the pods (the operator's rules-hash and
    /// Prometheus annotations win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node and pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods spread over topology domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Secrets for pulling the daemon image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Extra environment variables of the daemon container (secrets for
    /// sinks, for example, from `valueFrom.secretKeyRef`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Extra environment sources of the daemon container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// Extra volumes of the pods (names `rules`, `tmp`, `tls`, `client-ca`
    /// and `state` are the operator's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,

    /// Extra mounts of the daemon container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,

    /// Seconds a pod has to drain after SIGTERM. Absent: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub termination_grace_period_seconds: Option<i64>,
}

/// Settings of the engine's Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineServiceSpec {
    /// Service type. Absent: ClusterIP.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,

    /// Annotations of the Service (for load balancers, meshes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    ClusterIP,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus an external load balancer.
    LoadBalancer,
}

/// A PodDisruptionBudget of the daemon pods: exactly one of the two fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.minAvailable) != has(self.maxUnavailable)",
        "message": "set exactly one of minAvailable and maxUnavailable"
    }
]))]
pub struct DisruptionBudgetSpec {
    /// Pods that must stay available (a number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,

    /// Pods that may be unavailable (a number or a percentage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
}

impl DetectionEngineSpec {
    /// A spec with the given image and every other field at its default.
    pub fn with_image(image: impl Into<String>) -> Self {
        Self {
            image: Some(image.into()),
            image_pull_policy: None,
            replicas: default_replicas(),
            resources: None,
            rule_set_selector: None,
            input: InputSpec::default(),
            nats: None,
            outputs: default_outputs(),
            tap: TapSpec::default(),
            tls: None,
            state: StateSpec::default(),
            logsource: None,
            enrichment: None,
            extra_args: Vec::new(),
            service_account_name: None,
            pod: EnginePodSpec::default(),
            service: EngineServiceSpec::default(),
            pod_disruption_budget: None,
        }
    }
}

impl DetectionEngineSpec {
    /// The CEL rules of the CRD, checked in Rust (same messages), for API
    /// servers before 1.25 that do not enforce them. Empty: valid.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.state.persistence == Persistence::Pvc && self.replicas > 1 {
            out.push(
                "state.persistence: pvc supports at most one replica (the correlation state is a ReadWriteOnce volume)"
                    .to_owned(),
            );
        }
        if (self.input.type_ == InputType::Nats) != self.input.nats.is_some() {
            out.push("input.nats is required when input.type is nats, and only then".to_owned());
        }
        if let Some(nats) = &self.input.nats
            && !is_nats_server_url(&nats.url)
        {
            out.push(
                "url must be nats://HOST[:PORT] or tls://HOST[:PORT], without credentials or a path"
                    .to_owned(),
            );
        }
        if !self.outputs.iter().all(|o| is_output_url(o)) {
            out.push(
                "each output must be stdout, file://PATH or nats://HOST[:PORT]/SUBJECT".to_owned(),
            );
        }
        if let Some(nats) = &self.nats {
            if nats.methods().len() > 1 {
                out.push("set at most one NATS authentication method".to_owned());
            }
            if nats.user_secret_ref.is_some() != nats.password_secret_ref.is_some() {
                out.push("userSecretRef and passwordSecretRef go together".to_owned());
            }
        }
        if self.extra_args.iter().any(|a| is_managed_flag(a)) {
            out.push(
                "extraArgs must not set a flag the operator manages (rules, config, pipeline, input, output, api-addr, allow-plaintext, tls-cert, tls-key, tls-client-ca, state-db, enable-tap, logsource routing: use spec.logsource; NATS connection and consumer group: use spec.nats and input.nats; enrichers and sources: use spec.enrichment)"
                    .to_owned(),
            );
        }
        if let Some(enrichment) = &self.enrichment {
            let files = enrichment.enrichers.iter().chain(&enrichment.sources);
            if files
                .clone()
                .any(|f| f.config_map.is_some() == f.secret.is_some())
            {
                out.push("set exactly one of configMap and secret".to_owned());
            }
            if files.clone().any(|f| {
                f.key.is_empty()
                    || !f
                        .key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            }) {
                out.push("key must be a ConfigMap or Secret key".to_owned());
            }
        }
        if let Some(logsource) = &self.logsource {
            let valid = |map: &BTreeMap<String, String>| {
                map.iter().all(|(k, v)| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                        && !v.is_empty()
                        && !v.contains(',')
                })
            };
            if !valid(&logsource.event) {
                out.push("dimensions are names of letters, digits, '_', '.' or '-'; values are non-empty without ','".to_owned());
            }
            if !valid(&logsource.field_map) {
                out.push("dimensions are names of letters, digits, '_', '.' or '-'; fields are non-empty without ','".to_owned());
            }
        }
        if self.state.persistence != Persistence::Pvc
            && (self.state.storage_class.is_some() || self.state.size.is_some())
        {
            out.push("storageClass and size apply only to persistence: pvc".to_owned());
        }
        out
    }
}

/// `nats://HOST[:PORT]` or `tls://HOST[:PORT]`, without credentials or a path.
pub fn is_nats_server_url(url: &str) -> bool {
    ["nats://", "tls://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|host| !host.is_empty() && !host.contains(['/', '@']))
    })
}

/// `stdout`, `file://PATH` or `nats://HOST[:PORT]/SUBJECT`.
pub fn is_output_url(output: &str) -> bool {
    output == "stdout"
        || output
            .strip_prefix("file://")
            .is_some_and(|p| !p.is_empty())
        || output.strip_prefix("nats://").is_some_and(|rest| {
            rest.split_once('/').is_some_and(|(host, subject)| {
                !host.is_empty()
                    && !host.contains('@')
                    && !subject.is_empty()
                    && !subject.contains(' ')
            })
        })
}

/// Whether a daemon argument sets one of [`MANAGED_FLAGS`] (`--flag` or
/// `--flag=value`).
pub fn is_managed_flag(arg: &str) -> bool {
    let flag = arg.split_once('=').map_or(arg, |(f, _)| f);
    MANAGED_FLAGS.contains(&flag)
}

fn default_replicas() -> i32 {
    1
}

fn default_outputs() -> Vec<String> {
    vec!["stdout".to_owned()]
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Pull when the image is not on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Where the daemon reads events from: a discriminated union on `type`, with
/// one member field per type that needs settings (Kubernetes API style, like
/// a Deployment's `strategy`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type == 'nats' ? has(self.nats) : !has(self.nats)",
        "message": "input.nats is required when input.type is nats, and only then"
    }
]))]
pub struct InputSpec {
    /// `http`: events are POSTed to `/api/v1/events` (NDJSON). `otlp`: the
    /// same listener, with the Service also exposing the standard OTLP
    /// ports (4317 gRPC, 4318 HTTP) for collectors. `nats`: events are
    /// consumed from a NATS subject. OTLP logs are accepted with every type.
    #[serde(rename = "type", default)]
    pub type_: InputType,

    /// NATS settings (`type: nats` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsInputSpec>,
}

impl InputSpec {
    /// An HTTP input.
    pub fn http() -> Self {
        Self::default()
    }

    /// A NATS input.
    pub fn nats(nats: NatsInputSpec) -> Self {
        Self {
            type_: InputType::Nats,
            nats: Some(nats),
        }
    }
}

/// The kind of event source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// `POST /api/v1/events` on the daemon's API listener.
    #[default]
    Http,
    /// A NATS subject.
    Nats,
    /// OpenTelemetry logs (`/v1/logs`, gRPC `LogsService/Export`) on the
    /// API listener, with the OTLP ports on the Service (docs/otlp.md).
    Otlp,
}

/// A NATS JetStream event source: a durable pull consumer on `subject`
/// (docs/nats.md). The connection's credentials and TLS are in `spec.nats`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsInputSpec {
    /// Server URL: `nats://HOST[:PORT]`, or `tls://HOST[:PORT]` to refuse a
    /// server that does not negotiate TLS.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches('^(nats|tls)://[^/@]+$')",
            "message": "url must be nats://HOST[:PORT] or tls://HOST[:PORT], without credentials or a path"
        }
    ]))]
    pub url: String,

    /// Subject to consume (wildcards `*` and `>` allowed).
    #[schemars(length(min = 1, max = 1024))]
    pub subject: String,

    /// The durable consumer the engine's pods share (they split the
    /// stream). Absent: `rsigma-NAMESPACE-NAME` of the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub consumer_group: Option<String>,

    /// Deprecated: use `spec.nats.credentialsSecretRef` (still honoured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeySelector>,
}

/// How the daemon connects to NATS, for its input and any `nats://`
/// output. Credentials come from Secrets, as a mounted file or environment
/// variables, never as arguments; at most one method.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsConnectionSpec {
    /// A NATS credentials file (`.creds`: JWT and NKey seed), mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeySelector>,
    /// A token (`NATS_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    /// A user name (`NATS_USER`; with `passwordSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_secret_ref: Option<SecretKeySelector>,
    /// A password (`NATS_PASSWORD`; with `userSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// An NKey seed (`NATS_NKEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_secret_ref: Option<SecretKeySelector>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the client
    /// certificate for mutual TLS with NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
    /// A CA bundle verifying the NATS server. Absent: the image's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeySelector>,
    /// Refuse a server that does not negotiate TLS.
    #[serde(default)]
    pub require_tls: bool,
}

impl NatsConnectionSpec {
    /// The authentication methods set, by name.
    pub fn methods(&self) -> Vec<&'static str> {
        [
            (
                self.credentials_secret_ref.is_some(),
                "credentialsSecretRef",
            ),
            (self.token_secret_ref.is_some(), "tokenSecretRef"),
            (
                self.user_secret_ref.is_some() || self.password_secret_ref.is_some(),
                "userSecretRef/passwordSecretRef",
            ),
            (self.nkey_secret_ref.is_some(), "nkeySecretRef"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }
}

/// Enrichers and dynamic sources of an engine. Each file is a key of a
/// ConfigMap or Secret, mounted whole into the pods (so a sources file can
/// name sibling keys by relative path); the kubelet keeps the mounts
/// current, and the daemon reloads the enrichers when their file changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrichmentSpec {
    /// The enrichers file (`--enrichers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichers: Option<FileRef>,
    /// Source declaration files (`--source`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub sources: Vec<FileRef>,
    /// Let pipelines `include:` sources fetched over the network
    /// (`--allow-remote-include`).
    #[serde(default)]
    pub allow_remote_include: bool,
}

/// A file held by a key of a ConfigMap or a Secret: exactly one of
/// `configMap` and `secret`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.configMap) != has(self.secret)",
        "message": "set exactly one of configMap and secret"
    }
]))]
pub struct FileRef {
    /// The ConfigMap's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: Option<String>,
    /// The Secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret: Option<String>,
    /// The key holding the file.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Logsource routing (`--event-logsource`, `--logsource-field-map`,
/// `--no-logsource-routing`; see docs/engine.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsourceSpec {
    /// Skip rules whose logsource cannot apply to an event (default true).
    #[serde(default = "default_true")]
    pub routing: bool,
    /// The logsource of every event of a single-source stream, e.g.
    /// `{product: windows, service: sysmon}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(k, k.matches('^[A-Za-z0-9_.-]+$') && self[k].size() > 0 && !self[k].contains(','))",
            "message": "dimensions are names of letters, digits, '_', '.' or '-'; values are non-empty without ','"
        }
    ]))]
    pub event: BTreeMap<String, String>,
    /// Dimensions read from event fields, e.g. `{product: os}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(k, k.matches('^[A-Za-z0-9_.-]+$') && self[k].size() > 0 && !self[k].contains(','))",
            "message": "dimensions are names of letters, digits, '_', '.' or '-'; fields are non-empty without ','"
        }
    ]))]
    pub field_map: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

/// The live tap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TapSpec {
    /// Enable `GET /api/v1/tap` (`--enable-tap`). The tap streams live
    /// events: enable it behind mutual TLS (`tls.clientCaSecretName`).
    #[serde(default)]
    pub enabled: bool,
}

/// TLS of the daemon's API listener.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) with the
    /// serving certificate.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,

    /// A Secret whose `ca.crt` holds the CA bundle for client certificates:
    /// mutual TLS. Absent: no client certificates are requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub client_ca_secret_name: Option<String>,
}

/// Persistence of the correlation state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.persistence == 'pvc' || (!has(self.storageClass) && !has(self.size))",
        "message": "storageClass and size apply only to persistence: pvc"
    }
]))]
pub struct StateSpec {
    /// `none`: state lives in memory and is lost on restart. `pvc`: state is
    /// snapshotted to a SQLite database on a PersistentVolumeClaim.
    #[serde(default)]
    pub persistence: Persistence,

    /// StorageClass of the claim. Absent: the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class: Option<String>,

    /// Size of the claim. Absent: 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
}

/// Where the correlation state is kept.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// In memory only.
    #[default]
    None,
    /// A PersistentVolumeClaim per engine.
    Pvc,
}

/// Observed state of a `DetectionEngine`, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetectionEngineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: every desired replica is ready. `Progressing`: a rollout or a
    /// rules change is under way. `RulesInSync`: every ready pod reports
    /// `desiredRulesHash` as loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Pods of the engine (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Ready pods of the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Label selector of the engine's pods, as a string (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Rules hash of the rule files the operator materialised for this engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_rules_hash: Option<String>,

    /// Rules hash each pod reports as loaded (`/api/v1/status`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub pods: Vec<PodRulesStatus>,
}

/// What one daemon pod reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRulesStatus {
    /// Pod name.
    pub name: String,

    /// `rules_hash` from the pod's `/api/v1/status`. Absent: not reachable yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_hash: Option<String>,

    /// Whether the pod is ready.
    #[serde(default)]
    pub ready: bool,

    /// Last reload error, or why the pod could not be queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

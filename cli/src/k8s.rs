//! `k8s://` targets: reaching a daemon in a cluster through a kubeconfig
//! port-forward, the way `kubectl port-forward` does.
//!
//! `--addr k8s://[CONTEXT@]NAMESPACE/NAME` names a DetectionEngine;
//! `k8s://NAMESPACE/pod/NAME` a pod and `k8s://NAMESPACE/svc/NAME` a Service.
//! [`Forward::open`] reads the kubeconfig (`--kubeconfig`, else `KUBECONFIG`,
//! else `~/.kube/config`), picks a ready pod of the target, checks that the
//! user may port-forward to it, and listens on an ephemeral loopback port:
//! every connection accepted there becomes one port-forward stream to the
//! pod's API port through the API server (WebSocket, as kube-rs speaks it).
//! The HTTP client then talks to that local port; with TLS it keeps the
//! Service's DNS name (`NAME.NAMESPACE.svc`) for certificate checks.
//!
//! Every failure is an exit-code-3 [`CliError`] that says what to do: the
//! object is missing, no pod is ready, the tap is disabled on the engine, or
//! the kubeconfig's user lacks a permission (the verb and resource named, as
//! the `rsigma-debug` ClusterRole grants them).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use reqwest::Url;
use rsigma_crds::DetectionEngine;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::exit::CliError;

/// The scheme prefix of a cluster target.
pub const SCHEME: &str = "k8s://";

/// The daemon API port when a pod declares none named [`API_PORT_NAME`].
const DEFAULT_API_PORT: u16 = 9090;

/// Name of the daemon container's API port (as the operator sets it).
const API_PORT_NAME: &str = "api";

/// Label the operator puts on every object of an engine, naming it.
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Flags choosing the kubeconfig for `k8s://` addresses.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// Kubeconfig file for k8s:// addresses. Default: $KUBECONFIG, else
    /// ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context for k8s:// addresses (default: the current one; a
    /// CONTEXT@ in the address wins).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// What a `k8s://` address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A DetectionEngine (the default kind).
    Engine(String),
    /// A pod.
    Pod(String),
    /// A Service.
    Service(String),
}

impl Object {
    fn describe(&self, namespace: &str) -> String {
        match self {
            Object::Engine(name) => format!("DetectionEngine {namespace}/{name}"),
            Object::Pod(name) => format!("pod {namespace}/{name}"),
            Object::Service(name) => format!("Service {namespace}/{name}"),
        }
    }
}

/// A parsed `k8s://[CONTEXT@]NAMESPACE/[KIND/]NAME` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The kubeconfig context named in the address.
    pub context: Option<String>,
    /// The namespace.
    pub namespace: String,
    /// The object.
    pub object: Object,
}

impl Target {
    /// Parses `addr`; `None` when it is not a `k8s://` address at all.
    pub fn parse(addr: &str) -> Option<anyhow::Result<Target>> {
        let rest = addr.trim().strip_prefix(SCHEME)?;
        Some(Self::parse_rest(rest).with_context(|| {
            format!("invalid address '{addr}': expected k8s://[CONTEXT@]NAMESPACE/NAME, k8s://NAMESPACE/pod/NAME or k8s://NAMESPACE/svc/NAME")
        }))
    }

    fn parse_rest(rest: &str) -> anyhow::Result<Target> {
        // Context names may hold '@' (kubeadm's `kubernetes-admin@kubernetes`);
        // namespaces and names never do.
        let (context, path) = match rest.rsplit_once('@') {
            Some((context, path)) if !context.is_empty() => (Some(context.to_owned()), path),
            Some(_) => bail!("the context before '@' is empty"),
            None => (None, rest),
        };
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let (namespace, object) = match parts.as_slice() {
            [namespace, name] => (*namespace, Object::Engine(valid_name(name)?)),
            [namespace, "pod" | "pods" | "po", name] => {
                (*namespace, Object::Pod(valid_name(name)?))
            }
            [namespace, "svc" | "service" | "services", name] => {
                (*namespace, Object::Service(valid_name(name)?))
            }
            [_, kind, _] => bail!("unknown kind '{kind}' (use pod or svc)"),
            _ => bail!("expected NAMESPACE/NAME"),
        };
        Ok(Target {
            context,
            namespace: valid_name(namespace)?,
            object,
        })
    }
}

/// Checks a namespace or object name (a DNS label or subdomain).
fn valid_name(name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        bail!("'{name}' is not a Kubernetes name (lowercase letters, digits, '-' and '.')");
    }
    Ok(name.to_owned())
}

/// Why the daemon is being reached: the tap needs the engine's tap enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Status, reload and other API calls.
    Api,
    /// `rsigma engine tap`.
    Tap,
}

/// A pod chosen to serve a target, and how to speak to it.
#[derive(Debug, Clone)]
struct Endpoint {
    pod: String,
    port: u16,
    tls: bool,
    /// Host name for TLS certificate checks (the Service's DNS name).
    tls_host: String,
}

/// An open local end of a port-forward to a daemon pod.
///
/// Connections to [`Forward::local_addr`] are forwarded to the pod as long as
/// the value lives; dropping it stops the listener and every stream.
pub struct Forward {
    /// `None` only while dropping.
    runtime: Option<Runtime>,
    local: SocketAddr,
    endpoint: Endpoint,
    target: String,
    failure: std::sync::Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("local", &self.local)
            .field("pod", &self.endpoint.pod)
            .field("port", &self.endpoint.port)
            .finish()
    }
}

impl Forward {
    /// Resolves `target` to a ready pod and starts forwarding to its API port.
    pub fn open(target: &Target, args: &KubeArgs, purpose: Purpose) -> Result<Forward, CliError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|err| {
                CliError::config(anyhow!("starting the port-forward runtime failed: {err}"))
            })?;
        let described = format!(
            "{}{}",
            target
                .context
                .as_ref()
                .map(|c| format!("{c}@"))
                .unwrap_or_default(),
            target.object.describe(&target.namespace)
        );
        let failure = std::sync::Arc::new(Mutex::new(None));
        let (endpoint, local) = runtime
            .block_on(async {
                let client = client(target, args).await?;
                let endpoint = resolve(&client, target, purpose).await?;
                check_access(&client, &target.namespace, &endpoint.pod).await?;
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .await
                    .context("binding a local port for the port-forward failed")?;
                let local = listener.local_addr()?;
                let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
                tokio::spawn(serve(listener, pods, endpoint.clone(), failure.clone()));
                anyhow::Ok((endpoint, local))
            })
            .map_err(|err| CliError::config(err.context(format!("reaching {described} failed"))))?;
        Ok(Forward {
            runtime: Some(runtime),
            local,
            endpoint,
            target: described,
            failure,
        })
    }

    /// The base URL to use with [`Forward::resolve`]: `http://127.0.0.1:PORT/`,
    /// or with TLS `https://NAME.NAMESPACE.svc:PORT/` (resolved to the local end).
    pub fn base(&self) -> Url {
        let text = if self.endpoint.tls {
            format!("https://{}:{}/", self.endpoint.tls_host, self.local.port())
        } else {
            format!("http://{}/", self.local)
        };
        Url::parse(&text).expect("a host name and a port make a URL")
    }

    /// The host name to resolve to [`Forward::local_addr`] (TLS only).
    pub fn resolve(&self) -> Option<(&str, SocketAddr)> {
        self.endpoint
            .tls
            .then_some((self.endpoint.tls_host.as_str(), self.local))
    }

    /// "pod NAME of TARGET": for messages.
    pub fn describe(&self) -> String {
        format!("pod {} of {}", self.endpoint.pod, self.target)
    }

    /// The first port-forward failure seen, if any (why a request failed).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // The listener and its streams end with the runtime; nothing waits.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The kube client for the kubeconfig and context chosen.
async fn client(target: &Target, args: &KubeArgs) -> anyhow::Result<Client> {
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig '{}' failed", path.display()))?,
        None => Kubeconfig::read().context(
            "reading the kubeconfig failed (set --kubeconfig or KUBECONFIG, or create ~/.kube/config)",
        )?,
    };
    let context = match (&target.context, &args.context) {
        (Some(from_addr), Some(flag)) if from_addr != flag => {
            bail!("the address names the context '{from_addr}' but --context says '{flag}'")
        }
        (Some(context), _) | (None, Some(context)) => Some(context.clone()),
        (None, None) => None,
    };
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("the kubeconfig cannot be used")?;
    Client::try_from(config).context("the Kubernetes client could not be built")
}

/// Resolves the target to a ready pod, its API port and its TLS setting.
async fn resolve(client: &Client, target: &Target, purpose: Purpose) -> anyhow::Result<Endpoint> {
    let namespace = &target.namespace;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match &target.object {
        Object::Engine(name) => {
            let engines: Api<DetectionEngine> = Api::namespaced(client.clone(), namespace);
            let engine = engines.get(name).await.map_err(|err| {
                api_error(
                    err,
                    "get",
                    "detectionengines.rsigma.io",
                    namespace,
                    Some(name),
                )
            })?;
            if purpose == Purpose::Tap && !engine.spec.tap.enabled {
                bail!(
                    "the tap is disabled on DetectionEngine {namespace}/{name}: set spec.tap.enabled: true (kubectl -n {namespace} patch detectionengine {name} --type merge -p '{{\"spec\":{{\"tap\":{{\"enabled\":true}}}}}}')"
                );
            }
            let selector = engine
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_else(|| format!("{INSTANCE_LABEL}={name}"));
            let pod = ready_pod(&pods, &selector, &target.object, namespace).await?;
            let mut endpoint = endpoint_of(&pod, None, namespace)?;
            endpoint.tls = engine.spec.tls.is_some();
            endpoint.tls_host = format!("{name}.{namespace}.svc");
            Ok(endpoint)
        }
        Object::Pod(name) => {
            let pod = pods
                .get(name)
                .await
                .map_err(|err| api_error(err, "get", "pods", namespace, Some(name)))?;
            if !is_ready(&pod) {
                bail!("pod {namespace}/{name} is not ready ({})", pod_state(&pod));
            }
            endpoint_of(&pod, None, namespace)
        }
        Object::Service(name) => {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            let service = services
                .get(name)
                .await
                .map_err(|err| api_error(err, "get", "services", namespace, Some(name)))?;
            let spec = service.spec.unwrap_or_default();
            let selector = spec
                .selector
                .filter(|s| !s.is_empty())
                .ok_or_else(|| anyhow!("Service {namespace}/{name} has no pod selector"))?
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let ports = spec.ports.unwrap_or_default();
            let port = ports
                .iter()
                .find(|p| p.name.as_deref() == Some(API_PORT_NAME))
                .or_else(|| ports.first())
                .ok_or_else(|| anyhow!("Service {namespace}/{name} has no port"))?;
            let target_port = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            let pod = ready_pod(&pods, &selector, &target.object, namespace).await?;
            let mut endpoint = endpoint_of(&pod, Some(&target_port), namespace)?;
            endpoint.tls_host = format!("{name}.{namespace}.svc");
            Ok(endpoint)
        }
    }
}

/// The first ready pod (by name) matching `selector`, or an error listing
/// the pods that are not ready.
async fn ready_pod(
    pods: &Api<Pod>,
    selector: &str,
    object: &Object,
    namespace: &str,
) -> anyhow::Result<Pod> {
    let mut list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|err| api_error(err, "list", "pods", namespace, None))?
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let states: Vec<String> = list
        .iter()
        .map(|pod| {
            format!(
                "{} {}",
                pod.metadata.name.as_deref().unwrap_or("?"),
                pod_state(pod)
            )
        })
        .collect();
    list.into_iter().find(is_ready).ok_or_else(|| {
        if states.is_empty() {
            anyhow!(
                "{} has no pod (selector {selector})",
                object.describe(namespace)
            )
        } else {
            anyhow!(
                "{} has no ready pod ({})",
                object.describe(namespace),
                states.join(", ")
            )
        }
    })
}

/// A pod's API endpoint: the container port named by `target_port` (a
/// Service's), else the port named `api`, else 9090; TLS when the daemon runs
/// with `--tls-cert`.
fn endpoint_of(
    pod: &Pod,
    target_port: Option<&IntOrString>,
    namespace: &str,
) -> anyhow::Result<Endpoint> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    let named_port = |wanted: &str| {
        containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(wanted))
            .map(|p| p.container_port)
    };
    let port = match target_port {
        Some(IntOrString::Int(port)) => Some(*port),
        Some(IntOrString::String(wanted)) => Some(named_port(wanted).ok_or_else(|| {
            anyhow!("pod {namespace}/{name} has no container port named '{wanted}'")
        })?),
        None => named_port(API_PORT_NAME),
    }
    .unwrap_or(i32::from(DEFAULT_API_PORT));
    let port = u16::try_from(port)
        .map_err(|_| anyhow!("pod {namespace}/{name}: port {port} is out of range"))?;
    let tls = containers.iter().any(|c| {
        c.args
            .iter()
            .chain(c.command.iter())
            .flatten()
            .any(|arg| arg == "--tls-cert" || arg.starts_with("--tls-cert="))
    });
    let host = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INSTANCE_LABEL))
        .cloned()
        .unwrap_or_else(|| name.clone());
    Ok(Endpoint {
        pod: name,
        port,
        tls,
        tls_host: format!("{host}.{namespace}.svc"),
    })
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_state(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".to_owned();
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".to_owned());
    if phase == "Running" {
        "Running, not ready".to_owned()
    } else {
        phase
    }
}

/// Fails with the verb and resource when the user may not port-forward: a
/// WebSocket port-forward is authorized as `get` before Kubernetes 1.31 and
/// as `create` after, so either verb passes here (the server decides, and a
/// refusal then is reported the same way).
async fn check_access(client: &Client, namespace: &str, pod: &str) -> anyhow::Result<()> {
    for verb in ["create", "get"] {
        if may(client, namespace, pod, verb).await? {
            return Ok(());
        }
    }
    Err(forbidden("create", "pods/portforward", namespace))
}

/// Whether the user may `verb` the pod's `portforward` subresource.
async fn may(client: &Client, namespace: &str, pod: &str, verb: &str) -> anyhow::Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some(verb.to_owned()),
                resource: Some("pods".to_owned()),
                subresource: Some("portforward".to_owned()),
                name: Some(pod.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("asking the API server whether port-forwarding is allowed failed")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// An API error as a message: not found, forbidden (naming the verb), other.
fn api_error(
    err: kube::Error,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> anyhow::Error {
    match &err {
        kube::Error::Api(status) if status.is_not_found() => match name {
            Some(name) => anyhow!(
                "{} {namespace}/{name} not found",
                match resource {
                    "detectionengines.rsigma.io" => "DetectionEngine",
                    "services" => "Service",
                    _ => "pod",
                }
            ),
            None => anyhow!("{resource} in {namespace}: {}", status.message),
        },
        kube::Error::Api(status) if status.is_forbidden() => forbidden(verb, resource, namespace),
        _ => anyhow::Error::new(err)
            .context(format!("{verb} {resource} in namespace {namespace} failed")),
    }
}

fn forbidden(verb: &str, resource: &str, namespace: &str) -> anyhow::Error {
    anyhow!(
        "forbidden: the kubeconfig's user may not {verb} {resource} in namespace {namespace}; bind the rsigma-debug ClusterRole there (kubectl -n {namespace} create rolebinding rsigma-debug --clusterrole=rsigma-debug --user=USER)"
    )
}

/// Accepts local connections and forwards each over its own port-forward;
/// the first failure is kept for the messages of the HTTP client.
async fn serve(
    listener: TcpListener,
    pods: Api<Pod>,
    endpoint: Endpoint,
    failure: std::sync::Arc<Mutex<Option<String>>>,
) {
    while let Ok((local, _)) = listener.accept().await {
        let pods = pods.clone();
        let endpoint = endpoint.clone();
        let failure = failure.clone();
        tokio::spawn(async move {
            if let Err(err) = forward_connection(local, &pods, &endpoint).await
                && let Ok(mut slot) = failure.lock()
            {
                slot.get_or_insert_with(|| format!("{err:#}"));
            }
        });
    }
}

/// Copies one local connection to and from a new port-forward stream.
async fn forward_connection(
    mut local: tokio::net::TcpStream,
    pods: &Api<Pod>,
    endpoint: &Endpoint,
) -> anyhow::Result<()> {
    let mut forwarder = pods
        .portforward(&endpoint.pod, &[endpoint.port])
        .await
        .map_err(|err| match &err {
            kube::Error::Api(status) if status.is_forbidden() => forbidden(
                "create",
                "pods/portforward",
                pods.namespace().unwrap_or_default(),
            ),
            _ => anyhow::Error::new(err).context("opening the port-forward failed"),
        })?;
    let mut remote = forwarder
        .take_stream(endpoint.port)
        .ok_or_else(|| anyhow!("the port-forward has no stream"))?;
    // The pod side reports its errors (nothing listening on the port, say)
    // on a channel of their own.
    let pod_error = forwarder.take_error(endpoint.port);
    tokio::io::copy_bidirectional(&mut local, &mut remote)
        .await
        .context("the port-forward stream failed")?;
    drop(remote);
    if let Some(pod_error) = pod_error
        && let Ok(Some(message)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), pod_error).await
    {
        bail!("the pod {} answered: {message}", endpoint.pod);
    }
    forwarder
        .join()
        .await
        .context("the port-forward ended with an error")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(addr: &str) -> Target {
        Target::parse(addr)
            .expect("a k8s:// address")
            .unwrap_or_else(|err| panic!("{addr}: {err:#}"))
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse("k8s://detection/windows"),
            Target {
                context: None,
                namespace: "detection".into(),
                object: Object::Engine("windows".into()),
            }
        );
        assert_eq!(
            parse("k8s://prod@detection/pod/windows-7d9f-abc"),
            Target {
                context: Some("prod".into()),
                namespace: "detection".into(),
                object: Object::Pod("windows-7d9f-abc".into()),
            }
        );
        assert_eq!(
            parse("k8s://ns/svc/engine/").object,
            Object::Service("engine".into())
        );
        assert_eq!(
            parse("k8s://kubernetes-admin@kubernetes@ns/e")
                .context
                .as_deref(),
            Some("kubernetes-admin@kubernetes")
        );
        assert!(Target::parse("127.0.0.1:9090").is_none());
        assert!(Target::parse("http://x").is_none());
    }

    #[test]
    fn invalid_addresses() {
        for addr in [
            "k8s://",
            "k8s://ns",
            "k8s://ns/",
            "k8s://@ns/e",
            "k8s://ns/deploy/x",
            "k8s://ns/a/b/c",
            "k8s://NS/e",
            "k8s://ns/e_1",
        ] {
            let result = Target::parse(addr).expect("k8s:// prefix");
            assert!(result.is_err(), "{addr} should be rejected");
        }
    }
}

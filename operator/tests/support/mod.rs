//! Test harness of the integration tests: a real control plane (etcd +
//! kube-apiserver 1.20, started by `e2e/control-plane/start.sh`), real
//! `rsigma engine daemon` processes on 127.0.0.x, Pod objects that point at
//! them, and a stand-in for the kubelet that copies the rules ConfigMap into
//! each daemon's rules directory.
//!
//! - Scripts: `$RSIGMA_CONTROL_PLANE_DIR`, default `<repo>/e2e/control-plane`.
//! - A missing kube-apiserver or etcd FAILS the tests with how to get them
//!   (`e2e/control-plane/build.sh`), unless `RSIGMA_SKIP_CONTROL_PLANE=1`,
//!   which skips them with a loud message instead.
//! - The daemon binary is `rsigma` next to the test executable's directory
//!   (`target/debug/rsigma`); when it is missing it is built with
//!   `cargo build -p rsigma-cli --bin rsigma`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

/// Prints a line to stderr with a prefix (visible with --nocapture, and in
/// the output of failing tests).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        eprintln!("[{:>7.1}s] {}", $crate::support::elapsed(), format!($($arg)*));
    }};
}

/// Operator logs on the test output: `RUST_LOG` (default
/// `rsigma_operator=info`); shown for failing tests or with --nocapture.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("rsigma_operator=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Seconds since the harness was first used.
pub fn elapsed() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

fn scripts_dir() -> PathBuf {
    std::env::var_os("RSIGMA_CONTROL_PLANE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("e2e/control-plane"))
}

/// A running control plane. Stopped (stop.sh) on drop, and by start.sh's
/// watcher if the test process dies.
pub struct ControlPlane {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl ControlPlane {
    /// Starts a control plane, or returns `None` (after saying so loudly)
    /// when `RSIGMA_SKIP_CONTROL_PLANE=1` and it cannot be started. Panics
    /// with instructions otherwise.
    pub fn start() -> Option<ControlPlane> {
        let skip = std::env::var("RSIGMA_SKIP_CONTROL_PLANE").is_ok_and(|v| v == "1");
        let scripts = scripts_dir();
        let start = scripts.join("start.sh");
        if !start.is_file() {
            return unavailable(
                skip,
                &format!(
                    "{} not found (set RSIGMA_CONTROL_PLANE_DIR)",
                    start.display()
                ),
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("rsigma-operator-cp-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().join("cp");
        let t0 = Instant::now();
        let out = Command::new("bash")
            .arg(&start)
            .arg(&dir)
            .env("RSIGMA_CP_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run start.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                return unavailable(
                    skip,
                    &format!(
                        "the control plane binaries are missing: run `bash e2e/control-plane/build.sh` \
                         (builds kube-apiserver v1.20.2 once, about 5 minutes, and installs etcd). start.sh said:\n{stderr}"
                    ),
                );
            }
            code => {
                return unavailable(skip, &format!("start.sh failed (exit {code:?}):\n{stderr}"));
            }
        }
        let env_text = std::fs::read_to_string(dir.join("env")).expect("DIR/env");
        let env = env_text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        say!(
            "control plane up in {:.1}s at {}",
            t0.elapsed().as_secs_f64(),
            dir.display()
        );
        Some(ControlPlane {
            dir,
            _tmp: tmp,
            env,
        })
    }

    /// A new client (clients are bound to the runtime that made them).
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.dir.join("kubeconfig")).expect("kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("client config");
        Client::try_from(config).expect("client")
    }

    /// A client acting as the operator's ServiceAccount in `namespace`
    /// (impersonated by the admin), after applying the generated RBAC
    /// (`rsigma_crds::rbac::manifests`, the objects of crds/rbac.yaml) for
    /// that namespace: the controllers then run with exactly the permissions
    /// the chart grants, and a missing one fails the test.
    pub async fn operator_client(&self, namespace: &str) -> Client {
        let admin = self.client().await;
        apply_operator_rbac(&admin, namespace).await;
        let kubeconfig = Kubeconfig::read_from(self.dir.join("kubeconfig")).expect("kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("client config");
        config.auth_info.impersonate = Some(format!(
            "system:serviceaccount:{namespace}:{}",
            rsigma_crds::rbac::OPERATOR_ROLE
        ));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ]);
        Client::try_from(config).expect("client")
    }

    /// A client acting as the ServiceAccount `account` of `namespace`
    /// (impersonated by the admin), with no permission of its own.
    pub async fn client_as(&self, namespace: &str, account: &str) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.dir.join("kubeconfig")).expect("kubeconfig");
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("client config");
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ]);
        Client::try_from(config).expect("client")
    }

    fn readyz(&self) -> bool {
        let url = format!("{}/readyz", self.env["APISERVER_URL"]);
        Command::new("curl")
            .args(["-ksS", "--max-time", "2", "-H"])
            .arg(format!("Authorization: Bearer {}", self.env["TOKEN"]))
            .arg(&url)
            .output()
            .map(|o| o.status.success() && o.stdout == b"ok")
            .unwrap_or(false)
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after 3 s: its graceful
    /// shutdown stops listening at once but waits up to a minute for open
    /// watches; etcd keeps running) and returns what is needed to start it
    /// again with [`ControlPlane::start_apiserver`]. Blocking.
    pub fn stop_apiserver(&self) -> Vec<String> {
        let pid_file = self.dir.join("kube-apiserver.pid");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("kube-apiserver.pid")
            .trim()
            .parse()
            .expect("pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("apiserver cmdline");
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(pid) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            while alive(pid) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        say!("kube-apiserver (pid {pid}) stopped");
        argv
    }

    /// Starts kube-apiserver again with the same arguments (same port, same
    /// etcd, same certificates) and waits for /readyz.
    pub fn start_apiserver(&self, argv: &[String]) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("kube-apiserver.log"))
            .expect("log");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart kube-apiserver");
        std::fs::write(self.dir.join("kube-apiserver.pid"), child.id().to_string())
            .expect("pid file");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.readyz() {
            assert!(
                Instant::now() < deadline,
                "kube-apiserver did not come back within 60 s (see {})",
                self.dir.join("kube-apiserver.log").display()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        say!("kube-apiserver (pid {}) ready again", child.id());
        // The child is reaped when the test process exits; stop.sh stops it.
        std::mem::forget(child);
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

fn unavailable<T>(skip: bool, why: &str) -> Option<T> {
    if skip {
        // Straight to the process's stderr: libtest captures eprintln! of
        // passing tests, and a skip must not go unnoticed.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n\
             ********************************************************************\n\
             * SKIPPED: operator integration test (RSIGMA_SKIP_CONTROL_PLANE=1) *\n\
             ********************************************************************\n\
             control plane unavailable: {why}\n"
        );
        None
    } else {
        panic!(
            "the Kubernetes control plane for the operator's integration tests is unavailable: {why}\n\
             Set RSIGMA_SKIP_CONTROL_PLANE=1 to skip these tests explicitly."
        );
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let keep = std::thread::panicking()
            || std::env::var("RSIGMA_KEEP_CP_LOGS").is_ok_and(|v| v == "1");
        let mut cmd = Command::new("bash");
        cmd.arg(scripts_dir().join("stop.sh")).arg(&self.dir);
        if keep {
            cmd.env("RSIGMA_CP_KEEP_LOGS", "1");
        }
        let _ = cmd.status();
        if keep {
            // Keep the logs for the post-mortem.
            let kept = std::env::temp_dir()
                .join(format!("rsigma-operator-cp-logs-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&kept);
            for f in ["kube-apiserver.log", "etcd.log"] {
                let _ = std::fs::copy(self.dir.join(f), kept.join(f));
            }
            eprintln!("control plane logs kept in {}", kept.display());
        }
    }
}

/// Applies the CRDs (without CEL rules when the server predates 1.25) and
/// waits until they are established.
pub async fn install_crds(client: &Client) {
    let version = client.apiserver_version().await.expect("version");
    let major: u32 = version.major.trim_end_matches('+').parse().unwrap_or(1);
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in rsigma_crds::generate::crds() {
        let crd = rsigma_crds::generate::crd_for_server(&crd, major, minor);
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("rsigma-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        eventually(
            Duration::from_secs(30),
            &format!("CRD {name} established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
}

/// Applies the operator's ServiceAccount, roles and bindings for `namespace`.
async fn apply_operator_rbac(client: &Client, namespace: &str) {
    async fn apply<K>(api: Api<K>, object: K)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let name = object.name_any();
        api.patch(
            &name,
            &PatchParams::apply("rsigma-operator-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", K::kind(&())));
    }
    let rbac = rsigma_crds::rbac::manifests(namespace);
    let c = || client.clone();
    apply(Api::namespaced(c(), namespace), rbac.service_account).await;
    apply(Api::all(c()), rbac.operator_role).await;
    apply(Api::all(c()), rbac.operator_binding).await;
    apply(Api::namespaced(c(), namespace), rbac.leader_election_role).await;
    apply(
        Api::namespaced(c(), namespace),
        rbac.leader_election_binding,
    )
    .await;
}

/// Creates a namespace.
pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Polls `check` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `rsigma` binary (built when missing).
pub fn rsigma_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>/rsigma
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("rsigma");
    if !bin.is_file() {
        say!(
            "{} missing: building it (cargo build -p rsigma-cli --bin rsigma)",
            bin.display()
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "rsigma-cli", "--bin", "rsigma"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(
            status.success() && bin.is_file(),
            "cannot build the rsigma binary; run `cargo build -p rsigma-cli` first"
        );
    }
    bin
}

/// A running `rsigma engine daemon` on `ip:port` with a rules directory the
/// test controls (the "mounted ConfigMap"). Killed on drop.
pub struct Daemon {
    child: Child,
    /// Listen IP (a pod IP).
    pub ip: String,
    /// API port.
    pub port: u16,
    /// The rules directory.
    pub rules_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon listening on `ip` (a free port), with `--no-watch` so
    /// that only the operator's reload calls make it load, and the given
    /// extra flags.
    pub async fn start(ip: &str, extra: &[&str]) -> Daemon {
        Self::start_with(ip, extra, "http", reqwest::Client::new()).await
    }

    /// [`Daemon::start`] for a daemon serving `scheme` (`https` with TLS
    /// flags in `extra`), probed for readiness with `probe`.
    pub async fn start_with(
        ip: &str,
        extra: &[&str],
        scheme: &str,
        probe: reqwest::Client,
    ) -> Daemon {
        let tmp = tempfile::tempdir().expect("temp dir");
        let rules_dir = tmp.path().join("rules");
        std::fs::create_dir_all(&rules_dir).unwrap();
        let port = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("cannot bind {ip}: {e} (is 127.0.0.0/8 routed to lo?)"))
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(tmp.path().join("daemon.log")).unwrap();
        let child = Command::new(rsigma_binary())
            .args(["engine", "daemon", "-r"])
            .arg(&rules_dir)
            .args(["--input", "http", "--api-addr"])
            .arg(format!("{ip}:{port}"))
            .args(["--no-watch", "--workers", "1"])
            .arg("--output")
            .arg(format!(
                "file://{}",
                tmp.path().join("out.ndjson").display()
            ))
            .args(extra)
            .args(if scheme == "http" {
                &["--allow-plaintext"][..]
            } else {
                &[][..]
            })
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rsigma engine daemon");
        let daemon = Daemon {
            child,
            ip: ip.to_owned(),
            port,
            rules_dir,
            _tmp: tmp,
        };
        let http = probe;
        let url = format!("{scheme}://{}:{}/readyz", daemon.ip, daemon.port);
        eventually(
            Duration::from_secs(30),
            &format!("daemon on {ip}:{port} ready"),
            || {
                let http = http.clone();
                let url = url.clone();
                async move {
                    let r = http.get(&url).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        daemon
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// `/api/v1/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("{}/api/v1/status", self.url()))
            .await
            .expect("daemon status")
            .json()
            .await
            .expect("status JSON")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._tmp.path().join("daemon.log")).unwrap_or_default()
    }

    /// Replaces the rules directory's files with `data` (what the kubelet
    /// does to a ConfigMap volume).
    pub fn write_rules(&self, data: &BTreeMap<String, String>) {
        write_dir(&self.rules_dir, data);
    }
}

fn write_dir(dir: &Path, data: &BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !data.contains_key(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (key, content) in data {
        let tmp = dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, dir.join(key)).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a Pod object of engine `engine` whose status points at `daemon`
/// (phase Running, podIP, Ready), as a kubelet would report it.
pub async fn create_pod(client: &Client, ns: &str, engine: &str, name: &str, daemon: &Daemon) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": rsigma_operator::resources::labels(engine),
        },
        "spec": {
            "containers": [{
                "name": "engine",
                "image": "rsigma:test",
                "ports": [{"name": "api", "containerPort": daemon.port}],
            }],
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    set_pod_ready(client, ns, name, &daemon.ip, true).await;
}

/// Patches a pod's status: Running at `ip`, Ready or not.
pub async fn set_pod_ready(client: &Client, ns: &str, name: &str, ip: &str, ready: bool) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let status = if ready { "True" } else { "False" };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [
                    {"type": "Ready", "status": status},
                    {"type": "ContainersReady", "status": status},
                ],
            }
        })),
    )
    .await
    .expect("patch pod status");
}

/// A stand-in for the kubelet: copies the engine's rules ConfigMap into each
/// daemon's rules directory whenever it changes, after a per-daemon delay
/// (the kubelet refreshes ConfigMap volumes with a delay).
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    /// Per daemon (by index): the delay before a change reaches it.
    pub delays: Arc<Mutex<Vec<Duration>>>,
}

impl Kubelet {
    /// Starts syncing ConfigMap `ns/config_map` into `dirs`.
    pub fn start(client: Client, ns: &str, config_map: &str, dirs: Vec<PathBuf>) -> Kubelet {
        let delays = Arc::new(Mutex::new(vec![Duration::ZERO; dirs.len()]));
        let api: Api<ConfigMap> = Api::namespaced(client, ns);
        let name = config_map.to_owned();
        let task_delays = delays.clone();
        let task = tokio::spawn(async move {
            let mut seen = String::new();
            loop {
                if let Ok(Some(cm)) = api.get_opt(&name).await {
                    let rv = cm.resource_version().unwrap_or_default();
                    if rv != seen {
                        seen = rv;
                        let data = cm.data.clone().unwrap_or_default();
                        for (i, dir) in dirs.iter().enumerate() {
                            let delay = task_delays.lock().unwrap()[i];
                            let dir = dir.clone();
                            let data = data.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                write_dir(&dir, &data);
                            });
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        Kubelet { task, delays }
    }

    /// Sets the delay of daemon `i`.
    pub fn set_delay(&self, i: usize, delay: Duration) {
        self.delays.lock().unwrap()[i] = delay;
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The daemon's rules hash of a ConfigMap's data (rule files only).
pub fn rules_hash_of(data: &BTreeMap<String, String>) -> String {
    let mut digest = rsigma_engine::RulesDigest::default();
    for (k, v) in data {
        if k.ends_with(".yml") || k.ends_with(".yaml") {
            digest.add(k.clone(), v);
        }
    }
    digest.finish()
}

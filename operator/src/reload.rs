//! Getting a new rules hash into every daemon pod: `POST /api/v1/reload`
//! with the expected hash, then `GET /api/v1/status` until the pod reports
//! it, or reports that the load failed (it then keeps its previous rules).
//!
//! The kubelet refreshes a mounted ConfigMap with a delay, so a pod may
//! answer 409 (`stale`: the files on disk are not the expected ones yet):
//! that is not an error, the controller simply asks again later with
//! backoff. [`PodClient`] is the HTTP side, a trait so that tests can fake it
//! or point it at daemons on 127.0.0.x.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

/// Where a pod's daemon API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Pod name.
    pub pod: String,
    /// `http(s)://IP:PORT`.
    pub base_url: String,
}

/// `last_reload` of `/api/v1/status`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LastReload {
    /// When it finished (RFC 3339).
    pub at: String,
    /// Whether the new rules are active.
    pub ok: bool,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// The parts of `/api/v1/status` the operator uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DaemonStatus {
    /// Whether the last load succeeded.
    #[serde(default)]
    pub ready: bool,
    /// Content hash of the active rule files.
    #[serde(default)]
    pub rules_hash: String,
    /// The last reload.
    #[serde(default)]
    pub last_reload: Option<LastReload>,
}

/// The answer to `POST /api/v1/reload?expected_hash=H`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAnswer {
    /// 202: the reload was queued.
    Accepted,
    /// 409: the files on disk do not hash to H yet.
    Stale {
        /// What they hash to.
        disk_hash: String,
    },
}

/// HTTP access to a daemon pod.
pub trait PodClient: Send + Sync {
    /// `GET /api/v1/status`.
    fn status<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<DaemonStatus, String>>;
    /// `POST /api/v1/reload?expected_hash=H`.
    fn reload<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        expected_hash: &'a str,
    ) -> BoxFuture<'a, Result<ReloadAnswer, String>>;
}

/// TLS settings for talking to daemons that serve HTTPS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA bundle to verify the daemons' certificates with. Without it,
    /// certificates are not verified (pods are addressed by IP, which their
    /// certificates rarely name; the operator sends no secret and only
    /// triggers reloads).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for engines with mutual TLS.
    pub identity_pem: Option<Vec<u8>>,
}

/// [`PodClient`] over HTTP(S) with reqwest.
pub struct HttpPodClient {
    client: reqwest::Client,
}

impl HttpPodClient {
    /// A client whose every request times out after `timeout`.
    pub fn new(timeout: Duration, tls: &TlsOptions) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy();
        match &tls.ca_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("invalid engine CA bundle: {e}"))?;
                builder = builder
                    .tls_certs_only(certs)
                    .tls_danger_accept_invalid_hostnames(true);
            }
            None => builder = builder.tls_danger_accept_invalid_certs(true),
        }
        if let Some(pem) = &tls.identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| format!("invalid engine client certificate: {e}"))?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { client })
    }
}

fn short_error(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

impl PodClient for HttpPodClient {
    fn status<'a>(&'a self, endpoint: &'a Endpoint) -> BoxFuture<'a, Result<DaemonStatus, String>> {
        Box::pin(async move {
            let url = format!("{}/api/v1/status", endpoint.base_url);
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(|e| short_error(&e))?;
            if !response.status().is_success() {
                return Err(format!("GET /api/v1/status answered {}", response.status()));
            }
            response
                .json::<DaemonStatus>()
                .await
                .map_err(|e| format!("invalid /api/v1/status body: {}", short_error(&e)))
        })
    }

    fn reload<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        expected_hash: &'a str,
    ) -> BoxFuture<'a, Result<ReloadAnswer, String>> {
        Box::pin(async move {
            // The hash is lowercase hex: nothing to escape.
            let hash: String = expected_hash
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let url = format!("{}/api/v1/reload?expected_hash={hash}", endpoint.base_url);
            let response = self
                .client
                .post(&url)
                .send()
                .await
                .map_err(|e| short_error(&e))?;
            let status = response.status();
            if status == reqwest::StatusCode::CONFLICT {
                #[derive(Deserialize)]
                struct Stale {
                    #[serde(default)]
                    disk_hash: String,
                }
                let body: Stale = response
                    .json()
                    .await
                    .map_err(|e| format!("invalid 409 body: {}", short_error(&e)))?;
                return Ok(ReloadAnswer::Stale {
                    disk_hash: body.disk_hash,
                });
            }
            if status.is_success() {
                return Ok(ReloadAnswer::Accepted);
            }
            let body = response.text().await.unwrap_or_default();
            Err(format!(
                "POST /api/v1/reload answered {status}: {}",
                body.chars().take(300).collect::<String>()
            ))
        })
    }
}

/// Where one pod stands with respect to the desired rules hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSync {
    /// The pod reports the desired hash.
    InSync {
        /// Whether it just reloaded to get there.
        reloaded: bool,
    },
    /// The mounted files are not updated yet (409).
    Stale {
        /// What the pod runs.
        loaded_hash: String,
        /// What its files hash to.
        disk_hash: String,
    },
    /// A reload was accepted but not confirmed within the confirm timeout.
    Pending {
        /// What the pod runs.
        loaded_hash: String,
    },
    /// The pod tried and failed to load the rules; it keeps `loaded_hash`.
    Failed {
        /// What the pod runs.
        loaded_hash: String,
        /// The daemon's reason.
        error: String,
    },
    /// The pod's API could not be reached.
    Unreachable {
        /// Why.
        error: String,
    },
}

impl PodSync {
    /// The hash the pod runs, when known.
    pub fn loaded_hash<'a>(&'a self, desired: &'a str) -> Option<&'a str> {
        match self {
            PodSync::InSync { .. } => Some(desired),
            PodSync::Stale { loaded_hash, .. }
            | PodSync::Pending { loaded_hash }
            | PodSync::Failed { loaded_hash, .. } => Some(loaded_hash),
            PodSync::Unreachable { .. } => None,
        }
    }

    /// A message for the pod's status entry (`None` when in sync).
    pub fn message(&self) -> Option<String> {
        match self {
            PodSync::InSync { .. } => None,
            PodSync::Stale { disk_hash, .. } => Some(format!(
                "waiting for the kubelet to refresh the mounted rules (files on disk hash to {})",
                rsigma_crds::short_hash(disk_hash)
            )),
            PodSync::Pending { .. } => Some("reload requested, not confirmed yet".to_owned()),
            PodSync::Failed { error, .. } => Some(format!(
                "cannot load the rules (keeps the previous ones): {error}"
            )),
            PodSync::Unreachable { error } => Some(format!("daemon API unreachable: {error}")),
        }
    }
}

/// How long to wait for a pod to confirm a reload.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Longest wait after a 202 for the status to show the outcome.
    pub confirm_timeout: Duration,
    /// Interval between status polls.
    pub poll_interval: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            confirm_timeout: Duration::from_secs(4),
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// Brings one pod to `desired`: status; reload when it differs; confirm.
pub async fn sync_pod(
    client: &dyn PodClient,
    endpoint: &Endpoint,
    desired: &str,
    options: SyncOptions,
) -> PodSync {
    let before = match client.status(endpoint).await {
        Ok(status) => status,
        Err(error) => return PodSync::Unreachable { error },
    };
    if before.rules_hash == desired {
        return PodSync::InSync { reloaded: false };
    }
    match client.reload(endpoint, desired).await {
        Err(error) => return PodSync::Unreachable { error },
        Ok(ReloadAnswer::Stale { disk_hash }) => {
            return PodSync::Stale {
                loaded_hash: before.rules_hash,
                disk_hash,
            };
        }
        Ok(ReloadAnswer::Accepted) => {}
    }
    let deadline = tokio::time::Instant::now() + options.confirm_timeout;
    let mut last = before.clone();
    loop {
        tokio::time::sleep(options.poll_interval).await;
        match client.status(endpoint).await {
            Ok(status) => {
                if status.rules_hash == desired {
                    return PodSync::InSync { reloaded: true };
                }
                if let Some(reload) = &status.last_reload
                    && !reload.ok
                    && status.last_reload != before.last_reload
                {
                    return PodSync::Failed {
                        loaded_hash: status.rules_hash.clone(),
                        error: reload
                            .error
                            .clone()
                            .unwrap_or_else(|| "reload failed".to_owned()),
                    };
                }
                last = status;
            }
            Err(error) => {
                if tokio::time::Instant::now() >= deadline {
                    return PodSync::Unreachable { error };
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            // A previous failure of the same content still tells why.
            if let Some(reload) = &last.last_reload
                && !reload.ok
            {
                return PodSync::Failed {
                    loaded_hash: last.rules_hash,
                    error: reload
                        .error
                        .clone()
                        .unwrap_or_else(|| "reload failed".to_owned()),
                };
            }
            return PodSync::Pending {
                loaded_hash: last.rules_hash,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A fake daemon: a disk hash, a loaded hash, and whether loads fail.
    struct Fake {
        state: Mutex<FakeState>,
    }
    struct FakeState {
        disk: String,
        loaded: String,
        fail: Option<String>,
        last_reload: Option<LastReload>,
        reloads: u32,
    }

    impl PodClient for Fake {
        fn status<'a>(&'a self, _: &'a Endpoint) -> BoxFuture<'a, Result<DaemonStatus, String>> {
            let s = self.state.lock().unwrap();
            let status = DaemonStatus {
                ready: true,
                rules_hash: s.loaded.clone(),
                last_reload: s.last_reload.clone(),
            };
            Box::pin(async move { Ok(status) })
        }
        fn reload<'a>(
            &'a self,
            _: &'a Endpoint,
            expected: &'a str,
        ) -> BoxFuture<'a, Result<ReloadAnswer, String>> {
            let mut s = self.state.lock().unwrap();
            let answer = if s.disk != expected {
                ReloadAnswer::Stale {
                    disk_hash: s.disk.clone(),
                }
            } else {
                s.reloads += 1;
                let at = format!("t{}", s.reloads);
                match s.fail.clone() {
                    Some(error) => {
                        s.last_reload = Some(LastReload {
                            at,
                            ok: false,
                            error: Some(error),
                        })
                    }
                    None => {
                        s.loaded = s.disk.clone();
                        s.last_reload = Some(LastReload {
                            at,
                            ok: true,
                            error: None,
                        })
                    }
                }
                ReloadAnswer::Accepted
            };
            Box::pin(async move { Ok(answer) })
        }
    }

    fn fake(disk: &str, loaded: &str, fail: Option<&str>) -> Fake {
        Fake {
            state: Mutex::new(FakeState {
                disk: disk.to_owned(),
                loaded: loaded.to_owned(),
                fail: fail.map(str::to_owned),
                last_reload: None,
                reloads: 0,
            }),
        }
    }

    fn ep() -> Endpoint {
        Endpoint {
            pod: "p".to_owned(),
            base_url: "http://127.0.0.1:1".to_owned(),
        }
    }

    const FAST: SyncOptions = SyncOptions {
        confirm_timeout: Duration::from_millis(100),
        poll_interval: Duration::from_millis(10),
    };

    #[tokio::test]
    async fn in_sync_needs_no_reload() {
        let f = fake("h1", "h1", None);
        assert_eq!(
            sync_pod(&f, &ep(), "h1", FAST).await,
            PodSync::InSync { reloaded: false }
        );
        assert_eq!(f.state.lock().unwrap().reloads, 0);
    }

    #[tokio::test]
    async fn stale_then_reloaded() {
        let f = fake("h0", "h0", None);
        assert!(matches!(
            sync_pod(&f, &ep(), "h1", FAST).await,
            PodSync::Stale { .. }
        ));
        f.state.lock().unwrap().disk = "h1".to_owned();
        assert_eq!(
            sync_pod(&f, &ep(), "h1", FAST).await,
            PodSync::InSync { reloaded: true }
        );
    }

    #[tokio::test]
    async fn failed_load_keeps_previous_and_says_why() {
        let f = fake("h1", "h0", Some("rule 'X': bad"));
        match sync_pod(&f, &ep(), "h1", FAST).await {
            PodSync::Failed { loaded_hash, error } => {
                assert_eq!(loaded_hash, "h0");
                assert!(error.contains("rule 'X'"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_daemon() {
        let client =
            HttpPodClient::new(Duration::from_millis(300), &TlsOptions::default()).unwrap();
        let r = sync_pod(&client, &ep(), "h", FAST).await;
        assert!(matches!(r, PodSync::Unreachable { .. }), "{r:?}");
    }
}

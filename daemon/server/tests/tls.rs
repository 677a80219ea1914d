//! TLS and mutual TLS on the API listener, with certificates made by rcgen,
//! and certificate rotation through a reload.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rsigma_daemon::tls::{MinVersion, TlsConfig};
use rsigma_daemon::{DaemonConfig, InputSpec};

#[path = "../../../tests/support/pki.rs"]
mod pki;
use pki::Pki;

/// Certificates in `dir` for a server on 127.0.0.1 and a client.
fn make_pki(dir: &Path) -> Pki {
    pki::make_pki(dir, "127.0.0.1", "client")
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn sample_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sample/rules")
}

fn client(pki: &Pki, with_identity: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(5));
    if with_identity {
        builder =
            builder.identity(reqwest::Identity::from_pem(pki.client_identity.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the daemon did not become ready over TLS");
}

async fn peer_certificate(client: &reqwest::Client, base: &str) -> Vec<u8> {
    let response = client.get(format!("{base}/healthz")).send().await.unwrap();
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_verified_clients_and_rotates_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let addr = free_addr();
    let mut config = DaemonConfig::new(sample_rules());
    config.api_addr = addr;
    config.input = InputSpec::Http;
    config.watch = false;
    config.outputs = vec![
        format!("file://{}", dir.path().join("out.ndjson").display())
            .parse()
            .unwrap(),
    ];
    config.tls = Some(TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        client_ca: Some(dir.path().join("ca.pem")),
        min_version: MinVersion::V1_3,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(rsigma_daemon::run_until(config, async {
        let _ = stopped.await;
    }));
    let base = format!("https://{addr}");
    let trusted = client(&pki, true);
    wait_ready(&trusted, &base).await;

    // Without a client certificate the handshake is refused.
    let anonymous = client(&pki, false);
    assert!(
        anonymous
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
    // Plaintext is not spoken on the TLS port.
    let plain = reqwest::Client::new();
    assert!(
        plain
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );

    let events = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sample/events.ndjson"),
    )
    .unwrap();
    let accepted: serde_json::Value = trusted
        .post(format!("{base}/api/v1/events"))
        .body(events)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["accepted"], 20);
    let metrics = trusted
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rsigma_tls_certificate_expiry_seconds "))
        .expect("expiry metric")
        .parse()
        .unwrap();
    assert!(expiry > 86_400, "{expiry}");

    // Rotate: a new server certificate, then a reload.
    let before = peer_certificate(&trusted, &base).await;
    // The new server certificate comes from a new CA, which a second client trusts.
    let rotated_ca_pem = {
        let ca = pki::new_ca();
        pki::write_server_cert(dir.path(), &ca, "127.0.0.1");
        ca.pem()
    };
    let rotated_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(rotated_ca_pem.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(pki.client_identity.as_bytes()).unwrap())
        .tls_info(true)
        .build()
        .unwrap();
    let response = trusted
        .post(format!("{base}/api/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mut after = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(response) = rotated_client.get(format!("{base}/healthz")).send().await {
            after = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate())
                .unwrap()
                .to_vec();
            break;
        }
    }
    assert!(
        !after.is_empty(),
        "the rotated certificate was never served"
    );
    assert_ne!(before, after);

    // A broken certificate file fails the reload and keeps the current one.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    rotated_client
        .post(format!("{base}/api/v1/reload"))
        .send()
        .await
        .unwrap();
    let mut failed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status: serde_json::Value = rotated_client
            .get(format!("{base}/api/v1/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["last_reload"]["ok"] == false {
            assert!(
                status["last_reload"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("--tls-cert")
            );
            failed = true;
            break;
        }
    }
    assert!(failed, "the failed reload was not reported");
    assert_eq!(peer_certificate(&rotated_client, &base).await, after);

    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
}

#[test]
fn plaintext_on_public_addresses_needs_tls_or_an_explicit_flag() {
    let mut config = DaemonConfig::new(sample_rules());
    config.api_addr = "0.0.0.0:9090".parse().unwrap();
    assert!(config.validate().unwrap_err().contains("--allow-plaintext"));
    config.allow_plaintext = true;
    assert!(config.validate().is_ok());
    config.allow_plaintext = false;
    config.tls = Some(TlsConfig {
        cert: "c.pem".into(),
        key: "k.pem".into(),
        client_ca: None,
        min_version: MinVersion::V1_3,
    });
    assert!(config.validate().is_ok());
    config.tls = None;
    config.api_addr = "127.0.0.1:9090".parse().unwrap();
    assert!(config.validate().is_ok());
}

#[test]
fn encrypted_and_missing_keys_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    std::fs::write(
        dir.path().join("enc.pem"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = |key: &str| TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join(key),
        client_ca: None,
        min_version: MinVersion::V1_2,
    };
    let err = rsigma_daemon::tls::load(&config("enc.pem")).err().unwrap();
    assert!(err.contains("encrypted keys are not supported"), "{err}");
    let err = rsigma_daemon::tls::load(&config("missing.pem"))
        .err()
        .unwrap();
    assert!(
        err.contains("--tls-key") && err.contains("missing.pem"),
        "{err}"
    );
    assert!(rsigma_daemon::tls::load(&config("key.pem")).is_ok());
}

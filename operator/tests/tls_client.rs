//! The operator's daemon client against real daemons serving TLS and mutual
//! TLS (no control plane needed): pods are addressed by IP, which their
//! certificates do not name.

mod support;

use std::path::Path;
use std::time::Duration;

use rsigma_operator::reload::{
    Endpoint, HttpPodClient, PodClient, PodSync, SyncOptions, TlsOptions, sync_pod,
};
use support::Daemon;

#[path = "../../tests/support/pki.rs"]
mod pki;
use pki::Pki;

/// Certificates in `dir` for a server named `rsigma.example` (pods are
/// reached by IP, which it does not name) and an operator client identity.
fn make_pki(dir: &Path) -> Pki {
    pki::make_pki(dir, "rsigma.example", "rsigma-operator")
}

fn endpoint(d: &Daemon) -> Endpoint {
    Endpoint {
        pod: "p".to_owned(),
        base_url: format!("https://{}:{}", d.ip, d.port),
    }
}

fn probe(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(pki.client_identity.as_bytes()).unwrap())
        .build()
        .unwrap()
}

const FAST: SyncOptions = SyncOptions {
    confirm_timeout: Duration::from_secs(3),
    poll_interval: Duration::from_millis(100),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ca = dir.path().join("ca.pem");
    let tls_args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let tls = Daemon::start_with("127.0.0.4", &tls_args, "https", probe(&pki)).await;
    let mut mtls_args = tls_args.to_vec();
    mtls_args.extend(["--tls-client-ca", ca.to_str().unwrap()]);
    let mtls = Daemon::start_with("127.0.0.5", &mtls_args, "https", probe(&pki)).await;
    let rules = std::collections::BTreeMap::from([(
        "ns.set.0.yml".to_owned(),
        "title: T\nlogsource: {product: x}\ndetection:\n  s:\n    a: b\n  condition: s\n"
            .to_owned(),
    )]);
    let hash = support::rules_hash_of(&rules);
    tls.write_rules(&rules);
    mtls.write_rules(&rules);

    let timeout = Duration::from_secs(2);
    // Without a CA: the certificate is not verified.
    let unverified = HttpPodClient::new(timeout, &TlsOptions::default()).unwrap();
    // With the CA: verified, although the certificate names no pod IP.
    let verified = HttpPodClient::new(
        timeout,
        &TlsOptions {
            ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            identity_pem: None,
        },
    )
    .unwrap();
    for client in [&unverified, &verified] {
        let status = client
            .status(&endpoint(&tls))
            .await
            .expect("status over TLS");
        assert_ne!(status.rules_hash, hash);
    }
    assert_eq!(
        sync_pod(&verified, &endpoint(&tls), &hash, FAST).await,
        PodSync::InSync { reloaded: true }
    );

    // A CA that did not sign the certificate: refused.
    let other = make_pki(tempfile::tempdir().unwrap().path());
    let wrong = HttpPodClient::new(
        timeout,
        &TlsOptions {
            ca_pem: Some(other.ca_pem.into_bytes()),
            identity_pem: None,
        },
    )
    .unwrap();
    assert!(wrong.status(&endpoint(&tls)).await.is_err());

    // Mutual TLS: no client certificate, no access; with one, a reload.
    assert!(matches!(
        sync_pod(&verified, &endpoint(&mtls), &hash, FAST).await,
        PodSync::Unreachable { .. }
    ));
    let with_identity = HttpPodClient::new(
        timeout,
        &TlsOptions {
            ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            identity_pem: Some(pki.client_identity.clone().into_bytes()),
        },
    )
    .unwrap();
    assert_eq!(
        sync_pod(&with_identity, &endpoint(&mtls), &hash, FAST).await,
        PodSync::InSync { reloaded: true }
    );
}

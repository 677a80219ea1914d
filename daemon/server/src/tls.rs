//! TLS for the API listener: server certificates, mutual TLS, minimum
//! version, and certificate rotation on reload without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

/// Lowest TLS version the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2, for legacy agents.
    V1_2,
    /// TLS 1.3.
    #[default]
    V1_3,
}

impl std::str::FromStr for MinVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1.2" => Ok(MinVersion::V1_2),
            "1.3" => Ok(MinVersion::V1_3),
            other => Err(format!(
                "invalid TLS version '{other}': expected 1.2 or 1.3"
            )),
        }
    }
}

/// Where the TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Lowest accepted version.
    pub min_version: MinVersion,
}

/// The loaded material: the rustls configuration and the leaf's expiry.
pub struct LoadedTls {
    /// The server configuration.
    pub server: Arc<ServerConfig>,
    /// When the leaf certificate expires (seconds since the Unix epoch).
    pub not_after: i64,
}

/// Reads the files and builds the server configuration (ALPN h2 and http/1.1).
pub fn load(config: &TlsConfig) -> Result<LoadedTls, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|err| format!("--tls-cert {}: {err}", config.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|err| format!("--tls-cert {}: {err}", config.cert.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| format!("--tls-cert {}: no certificate found", config.cert.display()))?;
    let not_after =
        expiry(leaf).map_err(|err| format!("--tls-cert {}: {err}", config.cert.display()))?;
    let key = load_key(&config.key)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        MinVersion::V1_3 => &[&rustls::version::TLS13],
        MinVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_protocol_versions(versions);
    let builder = match &config.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .map_err(|err| format!("--tls-client-ca {}: {err}", ca.display()))?;
            for cert in cas {
                let cert =
                    cert.map_err(|err| format!("--tls-client-ca {}: {err}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|err| format!("--tls-client-ca {}: {err}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--tls-client-ca {}: no certificate found",
                    ca.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|err| format!("--tls-client-ca {}: {err}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|err| format!("--tls-cert/--tls-key: {err}"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(LoadedTls {
        server: Arc::new(server),
        not_after,
    })
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--tls-key {}: {err}", path.display()))?;
    if text.contains("ENCRYPTED") {
        return Err(format!(
            "--tls-key {}: encrypted keys are not supported; decrypt it first \
             (openssl pkey -in key.pem -out key-decrypted.pem)",
            path.display()
        ));
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|err| format!("--tls-key {}: {err}", path.display()))
}

fn expiry(cert: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|err| format!("cannot parse the certificate: {err}"))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// The live TLS state of a listener: rotated in place on reload.
pub struct TlsState {
    config: TlsConfig,
    /// What the listener serves with; swapping it affects new handshakes only.
    pub rustls: RustlsConfig,
    not_after: std::sync::atomic::AtomicI64,
}

/// Warn when the certificate expires within this many seconds.
const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

impl TlsState {
    /// Loads the material for the first time.
    pub fn new(config: TlsConfig) -> Result<TlsState, String> {
        let loaded = load(&config)?;
        warn_if_expiring(loaded.not_after);
        Ok(TlsState {
            config,
            rustls: RustlsConfig::from_config(loaded.server),
            not_after: std::sync::atomic::AtomicI64::new(loaded.not_after),
        })
    }

    /// Re-reads the files; on failure the previous material stays active.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load(&self.config)?;
        warn_if_expiring(loaded.not_after);
        self.rustls.reload_from_config(loaded.server);
        self.not_after
            .store(loaded.not_after, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Seconds until the active certificate expires (negative once expired).
    pub fn seconds_to_expiry(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Acquire) - chrono::Utc::now().timestamp()
    }
}

fn warn_if_expiring(not_after: i64) {
    let left = not_after - chrono::Utc::now().timestamp();
    if left < EXPIRY_WARNING_SECS {
        tracing::warn!(
            days_left = left / 86_400,
            "the TLS certificate expires within 30 days"
        );
    }
}

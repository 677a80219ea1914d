//! Talking to a running daemon's HTTP API: address resolution and a blocking
//! HTTP(S) client, shared by `rsigma engine status` and `rsigma config reload`.
//!
//! The address comes from `--addr`, else from `daemon.api.addr` of the config
//! file, else [`DEFAULT_ADDR`]. It is `host:port` (or `host`, `[v6]`,
//! `[v6]:port`) or a full `http://` / `https://` URL; see [`resolve_base`].
//! A `k8s://` address reaches a daemon pod in a cluster through a
//! port-forward ([`crate::k8s`]). Every failure (unreachable daemon, non-2xx
//! answer, a body that is not JSON, bad TLS material) is an exit-code-3
//! [`CliError`].

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use reqwest::Url;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::tls::{Certificate, Identity};
use serde_json::Value;

use crate::config::{ConfigArgs, ConfigFile};
use crate::exit::CliError;
use crate::k8s::{Forward, KubeArgs, Purpose, Target};

/// The address used when neither `--addr` nor `daemon.api.addr` is set.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9090";

/// The port used for a `host` without one (full URLs use their scheme's port).
pub const DEFAULT_PORT: u16 = 9090;

/// Longest wait for the TCP (and TLS) connection to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a whole request, from connecting to the end of the body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many characters of a response body are quoted in errors.
const EXCERPT_CHARS: usize = 500;

/// Flags selecting and authenticating to the daemon's HTTP API.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Daemon API address: host:port, a http:// or https:// URL, or
    /// k8s://[CONTEXT@]NAMESPACE/ENGINE (also NAMESPACE/pod/NAME,
    /// NAMESPACE/svc/NAME) through a kubeconfig port-forward. Default:
    /// daemon.api.addr from the config file, else 127.0.0.1:9090. Wildcard
    /// hosts (0.0.0.0, ::) mean the local machine.
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,

    #[command(flatten)]
    pub kube: KubeArgs,

    /// PEM file of the CA certificate(s) to trust for https, instead of the
    /// system's roots (for a daemon with a private CA).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// PEM client certificate (chain) for mutual TLS; needs --client-key.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// How to reach one daemon: the HTTP client, the API's base URL and, for a
/// `k8s://` address, the port-forward the requests go through.
#[derive(Debug)]
pub struct Connection {
    /// The HTTP client.
    pub http: Client,
    /// The base URL of the daemon's API (always ending with `/`).
    pub base: Url,
    forward: Option<Forward>,
}

impl Connection {
    /// Resolves the address (`--addr`, else the config file's, else the
    /// default) and builds the client; `timeout` bounds each whole request
    /// (`None`: a streaming request sets its own).
    ///
    /// A bare `host:port` uses `https` when the config file sets
    /// `daemon.tls.cert` (the daemon then serves TLS), `http` otherwise. A
    /// `k8s://` address opens a port-forward first.
    pub fn open(
        args: &ClientArgs,
        config: &ConfigFile,
        timeout: Option<Duration>,
        purpose: Purpose,
    ) -> Result<Connection, CliError> {
        let target = args.addr.as_deref().and_then(Target::parse);
        let Some(target) = target else {
            let base = base_url(args.addr.as_deref(), config).map_err(CliError::config)?;
            let http = build_http(args, timeout, None).map_err(CliError::config)?;
            return Ok(Connection {
                http,
                base,
                forward: None,
            });
        };
        let target = target.map_err(CliError::config)?;
        let forward = Forward::open(&target, &args.kube, purpose)?;
        let http = build_http(args, timeout, Some(&forward)).map_err(CliError::config)?;
        Ok(Connection {
            http,
            base: forward.base(),
            forward: Some(forward),
        })
    }

    /// The daemon as messages name it: its base URL, or the pod and target
    /// behind a port-forward.
    pub fn describe(&self) -> String {
        match &self.forward {
            Some(forward) => format!("{} (port-forward {})", forward.describe(), self.base),
            None => self.base.to_string(),
        }
    }

    /// Why a request failed: the transport's reason, and the port-forward's
    /// own failure when there is one.
    pub fn failure(&self, reason: String) -> String {
        match self.forward.as_ref().and_then(Forward::failure) {
            Some(forward) => format!("{reason} ({forward})"),
            None => reason,
        }
    }
}

/// A blocking client of one daemon's HTTP API.
#[derive(Debug)]
pub struct DaemonClient {
    connection: Connection,
}

impl DaemonClient {
    /// Loads the config file, resolves the address and builds the HTTP client
    /// (see [`Connection::open`]).
    pub fn new(args: &ClientArgs) -> Result<DaemonClient, CliError> {
        let config = args.config.load()?;
        let connection = Connection::open(args, &config, Some(REQUEST_TIMEOUT), Purpose::Api)?;
        Ok(DaemonClient { connection })
    }

    /// The daemon as messages name it (see [`Connection::describe`]).
    pub fn describe(&self) -> String {
        self.connection.describe()
    }

    /// `GET {base}/api/v1/status`: the daemon's status object.
    pub fn status(&self) -> Result<Value, CliError> {
        let url = self.endpoint("api/v1/status", &[])?;
        self.send("GET", &url, self.connection.http.get(url.clone()))
    }

    /// `POST {base}/api/v1/reload` (with `?expected_hash=HASH` when given).
    pub fn reload(&self, expected_hash: Option<&str>) -> Result<Value, CliError> {
        let query: Vec<(&str, &str)> = expected_hash
            .map(|hash| ("expected_hash", hash))
            .into_iter()
            .collect();
        let url = self.endpoint("api/v1/reload", &query)?;
        self.send("POST", &url, self.connection.http.post(url.clone()))
    }

    /// `{base}{path}` with `query` appended.
    fn endpoint(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, CliError> {
        let base = &self.connection.base;
        let mut url = base
            .join(path)
            .with_context(|| format!("invalid API URL {base}{path}"))
            .map_err(CliError::config)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends `request` and returns its JSON body, or an error describing why
    /// the daemon could not be reached, answered non-2xx, or sent non-JSON.
    fn send(&self, method: &str, url: &Url, request: RequestBuilder) -> Result<Value, CliError> {
        let base = self.describe();
        let target = request_target(url);
        let response = request.send().map_err(|err| {
            CliError::config(anyhow!(
                "could not reach the rsigma daemon at {base}: {}",
                self.connection.failure(reason(&err))
            ))
        })?;
        let status = response.status();
        let body = response.bytes().map_err(|err| {
            CliError::config(anyhow!(
                "reading the answer of the rsigma daemon at {base} to {method} {target} failed: {}",
                reason(&err)
            ))
        })?;
        if !status.is_success() {
            return Err(CliError::config(anyhow!(
                "the rsigma daemon at {base} answered {status} to {method} {target}: {}",
                excerpt(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|err| {
            CliError::config(anyhow!(
                "the rsigma daemon at {base} answered {method} {target} with a body that is not JSON ({err}): {}",
                excerpt(&body)
            ))
        })
    }
}

/// The base URL for `--addr` (when given) or the config file's API address.
pub(crate) fn base_url(addr: Option<&str>, config: &ConfigFile) -> anyhow::Result<Url> {
    let tls = config.daemon.tls.cert.is_some();
    match addr {
        Some(addr) => resolve_base(addr, tls).with_context(|| format!("invalid --addr '{addr}'")),
        None => match (&config.daemon.api.addr, &config.path) {
            (Some(addr), Some(path)) => resolve_base(addr, tls).with_context(|| {
                format!(
                    "invalid daemon.api.addr '{addr}' in the config file '{}'",
                    path.display()
                )
            }),
            (Some(addr), None) => resolve_base(addr, tls),
            (None, _) => resolve_base(DEFAULT_ADDR, tls),
        },
    }
}

/// Resolves an API address to a base URL ending with `/`.
///
/// - `http://…` and `https://…` URLs are used as given (their path is kept as a
///   prefix, e.g. behind a reverse proxy); without a port, the scheme's default.
/// - Anything else is `host:port`, `host`, `[v6]:port`, `[v6]` or a bare IP
///   address; the scheme is `https` when `tls`, else `http`, and the port
///   defaults to [`DEFAULT_PORT`]. IPv6 addresses with a port need brackets.
/// - The wildcard hosts `0.0.0.0` and `::` (as `[::]` or `::`), which are listen
///   addresses, are replaced by the loopback addresses `127.0.0.1` and `[::1]`.
pub fn resolve_base(addr: &str, tls: bool) -> anyhow::Result<Url> {
    let addr = addr.trim();
    if addr.is_empty() {
        bail!("the address is empty");
    }
    let mut url = if addr.contains("://") {
        let url = Url::parse(addr).context("not a valid URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!(
                "unsupported scheme '{}': use http:// or https://",
                url.scheme()
            );
        }
        if url.host().is_none() {
            bail!("the URL has no host");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("the URL must not have a query or fragment");
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("the URL must not contain credentials");
        }
        url
    } else {
        let (host, port) = split_host_port(addr)?;
        let scheme = if tls { "https" } else { "http" };
        Url::parse(&format!("{scheme}://{host}:{port}/")).context("not a valid address")?
    };

    let loopback = match url.host_str() {
        Some(host) => match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(IpAddr::V4(ip)) if ip.is_unspecified() => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Ok(IpAddr::V6(ip)) if ip.is_unspecified() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            _ => None,
        },
        None => None,
    };
    if let Some(ip) = loopback {
        url.set_ip_host(ip)
            .map_err(|()| anyhow!("cannot replace the wildcard host"))?;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Splits a non-URL address into a URL host (IPv6 in brackets) and a port.
fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Ok((url_host(socket.ip()), socket.port()));
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok((url_host(ip), DEFAULT_PORT));
    }
    if let Some(inner) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        let ip: Ipv6Addr = inner
            .parse()
            .with_context(|| format!("'{inner}' is not an IPv6 address"))?;
        return Ok((url_host(IpAddr::V6(ip)), DEFAULT_PORT));
    }
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
    if host.contains(':') || host.contains('[') || host.contains(']') {
        bail!("expected host:port (IPv6 addresses with a port need brackets, e.g. [::1]:9090)");
    }
    if host.is_empty() {
        bail!("the host is empty");
    }
    let port = if addr.contains(':') {
        port.parse::<u16>()
            .with_context(|| format!("invalid port '{port}'"))?
    } else {
        DEFAULT_PORT
    };
    if host.contains('/') || host.contains('@') {
        bail!("expected host:port or a http:// or https:// URL");
    }
    Ok((host.to_owned(), port))
}

/// `ip` as a URL host: IPv6 in brackets.
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// Builds the HTTP client: the connect timeout, the overall request timeout
/// (`None` for none: a streaming request sets its own), plus the optional CA
/// and client identity.
/// With a port-forward, requests go to its local end directly: never
/// through a proxy from `HTTP(S)_PROXY`, and the TLS host name resolves to
/// the local end.
pub(crate) fn build_http(
    args: &ClientArgs,
    timeout: Option<Duration>,
    forward: Option<&Forward>,
) -> anyhow::Result<Client> {
    let mut builder = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .user_agent(concat!("rsigma/", env!("CARGO_PKG_VERSION")));
    if let Some(forward) = forward {
        builder = builder.no_proxy();
        if let Some((host, addr)) = forward.resolve() {
            builder = builder.resolve(host, addr);
        }
    }
    if let Some(path) = &args.ca_cert {
        let pem = read_pem(path, "--ca-cert")?;
        let certs = Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-cert '{}' is not a valid PEM file", path.display()))?;
        if certs.is_empty() {
            bail!("--ca-cert '{}' holds no PEM certificate", path.display());
        }
        builder = builder.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        let mut pem = read_pem(cert, "--client-cert")?;
        pem.push(b'\n');
        pem.extend(read_pem(key, "--client-key")?);
        let identity = Identity::from_pem(&pem).with_context(|| {
            format!(
                "--client-cert '{}' and --client-key '{}' are not a PEM certificate and private key",
                cert.display(),
                key.display()
            )
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .context("the HTTP client could not be initialised")
}

/// Reads a PEM file named by `flag`.
fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} '{}' could not be read", path.display()))
}

/// The path and query of `url`, as in an HTTP request line.
pub(crate) fn request_target(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Why a request failed, without reqwest's "error sending request for url (…)"
/// preamble (the caller names the address): the chain of underlying causes.
fn reason(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return format!(
            "timed out (connect timeout {}s, request timeout {}s)",
            CONNECT_TIMEOUT.as_secs(),
            REQUEST_TIMEOUT.as_secs()
        );
    }
    match std::error::Error::source(err) {
        Some(source) => causes(source),
        None => err.to_string(),
    }
}

/// `err` and its sources, each message once, joined by `: `.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(cause) = current {
        let text = cause.to_string();
        // Layers often repeat their inner error; keep each message once.
        if !seen.iter().any(|known| known.contains(&text)) {
            seen.push(text);
        }
        current = cause.source();
    }
    seen.join(": ")
}

/// A printable excerpt of a response body: trimmed and at most
/// [`EXCERPT_CHARS`] characters.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Writes `value` to stdout as pretty JSON followed by a newline.
///
/// A closed stdout (the reader went away) is not an error; any other write
/// failure is exit code 3.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).map_err(CliError::config)?;
    text.push('\n');
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(CliError::config(
            anyhow::Error::new(err).context("writing to stdout failed"),
        )),
        _ => Ok(()),
    }
}

/// Parses a humantime duration flag value (e.g. `500ms`, `30s`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("invalid duration '{text}': {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(addr: &str) -> String {
        resolve_base(addr, false)
            .unwrap_or_else(|err| panic!("{addr}: {err:#}"))
            .to_string()
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(base("127.0.0.1:9090"), "http://127.0.0.1:9090/");
        assert_eq!(base("localhost:8080"), "http://localhost:8080/");
        assert_eq!(
            base("daemon.example.com"),
            "http://daemon.example.com:9090/"
        );
        assert_eq!(base("10.1.2.3"), "http://10.1.2.3:9090/");
        assert_eq!(base("[::1]:9091"), "http://[::1]:9091/");
        assert_eq!(base("[fe80::1]"), "http://[fe80::1]:9090/");
        assert_eq!(base("::1"), "http://[::1]:9090/");
        assert_eq!(base(" 127.0.0.1:1 "), "http://127.0.0.1:1/");
    }

    #[test]
    fn wildcards_map_to_loopback() {
        assert_eq!(base("0.0.0.0:9090"), "http://127.0.0.1:9090/");
        assert_eq!(base("0.0.0.0"), "http://127.0.0.1:9090/");
        assert_eq!(base("[::]:9090"), "http://[::1]:9090/");
        assert_eq!(base("[::]"), "http://[::1]:9090/");
        assert_eq!(base("::"), "http://[::1]:9090/");
        assert_eq!(base("http://0.0.0.0:7000"), "http://127.0.0.1:7000/");
        assert_eq!(base("https://[::]:7000/"), "https://[::1]:7000/");
    }

    #[test]
    fn urls_keep_scheme_port_and_path() {
        assert_eq!(base("http://127.0.0.1:9090"), "http://127.0.0.1:9090/");
        assert_eq!(
            base("https://rsigma.example.com"),
            "https://rsigma.example.com/"
        );
        assert_eq!(base("http://example.com:80/"), "http://example.com/");
        assert_eq!(
            base("https://proxy.example/rsigma"),
            "https://proxy.example/rsigma/"
        );
        assert_eq!(base("HTTP://LOCALHOST:1"), "http://localhost:1/");
    }

    #[test]
    fn tls_config_selects_https_for_host_port() {
        assert_eq!(
            resolve_base("0.0.0.0:9443", true).unwrap().as_str(),
            "https://127.0.0.1:9443/"
        );
        // An explicit URL wins.
        assert_eq!(
            resolve_base("http://127.0.0.1:9090", true)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9090/"
        );
    }

    #[test]
    fn invalid_addresses() {
        for addr in [
            "",
            "   ",
            "host:notaport",
            "host:70000",
            ":9090",
            "fe80::1:9090x",
            "[::1",
            "[nothex]:1",
            "ftp://example.com",
            "http://",
            "http://h:1/?q=1",
            "http://user:pw@h:1",
            "a/b:1",
        ] {
            assert!(
                resolve_base(addr, false).is_err(),
                "{addr:?} should be rejected"
            );
        }
    }

    #[test]
    fn endpoints_join_under_the_base() {
        let client = DaemonClient {
            connection: Connection {
                http: Client::new(),
                base: resolve_base("https://proxy.example/rsigma", false).unwrap(),
                forward: None,
            },
        };
        assert_eq!(
            client.endpoint("api/v1/status", &[]).unwrap().as_str(),
            "https://proxy.example/rsigma/api/v1/status"
        );
        let url = client
            .endpoint("api/v1/reload", &[("expected_hash", "ab c&d")])
            .unwrap();
        assert_eq!(
            request_target(&url),
            "/rsigma/api/v1/reload?expected_hash=ab+c%26d"
        );
    }

    #[test]
    fn default_address_and_config_address() {
        let mut config = ConfigFile::default();
        assert_eq!(
            base_url(None, &config).unwrap().as_str(),
            "http://127.0.0.1:9090/"
        );
        config.daemon.api.addr = Some("0.0.0.0:7777".into());
        config.path = Some(PathBuf::from("x.yaml"));
        assert_eq!(
            base_url(None, &config).unwrap().as_str(),
            "http://127.0.0.1:7777/"
        );
        assert_eq!(
            base_url(Some("10.0.0.1:1"), &config).unwrap().as_str(),
            "http://10.0.0.1:1/"
        );
        config.daemon.api.addr = Some("bad:port".into());
        let err = format!("{:#}", base_url(None, &config).unwrap_err());
        assert!(err.contains("'x.yaml'"), "{err}");
    }

    #[test]
    fn excerpts_are_trimmed_and_bounded() {
        assert_eq!(excerpt(b"  \n"), "(empty body)");
        assert_eq!(excerpt(b" {\"error\":\"x\"}\n"), "{\"error\":\"x\"}");
        let long = "é".repeat(EXCERPT_CHARS + 10);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}

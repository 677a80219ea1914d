//! Fetching a source: the bytes (file, HTTP, program), read by `format`,
//! sliced by `extract`.

use std::path::{Path, PathBuf};

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::config::{self, Format, SourceSpec, SourceType};
use crate::egress;
use crate::enrich::Extractor;
use crate::enrich::command::CommandEnricher;
use crate::enrich::config::OutputKind;
use crate::enrich::template::Template;

/// How one source is fetched.
pub(crate) struct Fetcher {
    origin: Origin,
    format: Format,
    extract: Option<Extractor>,
    max_bytes: usize,
}

enum Origin {
    File(PathBuf),
    Http {
        client: reqwest::Client,
        method: Method,
        url: String,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Option<String>,
        allow_link_local: bool,
    },
    Command(CommandEnricher),
    #[cfg(feature = "nats")]
    Nats(Box<NatsKey>),
}

/// A key of a JetStream key-value bucket, read over one lazily made
/// connection with the daemon's NATS settings (`--nats-*`).
#[cfg(feature = "nats")]
struct NatsKey {
    server: String,
    bucket: String,
    key: String,
    settings: crate::config::NatsConfig,
    client: tokio::sync::OnceCell<async_nats::Client>,
}

#[cfg(feature = "nats")]
impl NatsKey {
    async fn get(&self) -> Result<Vec<u8>, String> {
        let client = self
            .client
            .get_or_try_init(|| async {
                crate::nats::connect_options(&self.settings)
                    .await?
                    .connect(self.server.as_str())
                    .await
                    .map_err(|err| {
                        format!(
                            "cannot connect to NATS at {} ({}): {err}",
                            self.server,
                            self.settings.auth.method()
                        )
                    })
            })
            .await?;
        let store = async_nats::jetstream::new(client.clone())
            .get_key_value(self.bucket.as_str())
            .await
            .map_err(|err| format!("key-value bucket {:?}: {err}", self.bucket))?;
        match store.get(self.key.as_str()).await {
            Ok(Some(bytes)) => Ok(bytes.to_vec()),
            Ok(None) => Err(format!(
                "bucket {:?} has no key {:?}",
                self.bucket, self.key
            )),
            Err(err) => Err(format!(
                "bucket {:?}, key {:?}: {err}",
                self.bucket, self.key
            )),
        }
    }
}

/// Refuses a key of another source type.
fn check_keys(spec: &SourceSpec) -> Result<(), String> {
    use SourceType::{Command, File, Http, Nats};
    let keys: [(&str, bool, &[SourceType]); 10] = [
        ("path", spec.path.is_some(), &[File]),
        ("url", spec.url.is_some(), &[Http, Nats]),
        ("method", spec.method.is_some(), &[Http]),
        ("headers", spec.headers.is_some(), &[Http]),
        ("body", spec.body.is_some(), &[Http]),
        ("allow_link_local", spec.allow_link_local.is_some(), &[Http]),
        ("command", spec.command.is_some(), &[Command]),
        ("env", spec.env.is_some(), &[Command]),
        ("bucket", spec.bucket.is_some(), &[Nats]),
        ("key", spec.key.is_some(), &[Nats]),
    ];
    crate::enrich::config::check_key_owners(&keys, spec.source_type, type_name)
}

fn type_name(source_type: SourceType) -> &'static str {
    match source_type {
        SourceType::File => "file",
        SourceType::Http => "http",
        SourceType::Command => "command",
        SourceType::Nats => "nats",
    }
}

impl Fetcher {
    /// Checks the declaration; `dir` is its file's directory (relative
    /// paths are resolved against it). `${NAME}` in URLs, headers, bodies,
    /// arguments and environments is read from the environment now.
    pub(crate) fn new(
        spec: &SourceSpec,
        dir: &Path,
        extract: Option<Extractor>,
        nats: &crate::config::NatsConfig,
    ) -> Result<Fetcher, String> {
        check_keys(spec)?;
        let max_bytes = match spec.max_bytes {
            None => config::DEFAULT_MAX_BYTES,
            Some(n) if (1..=config::MAX_BYTES).contains(&n) => n,
            Some(n) => {
                return Err(format!(
                    "`max_bytes: {n}` is out of range (1 to {})",
                    config::MAX_BYTES
                ));
            }
        };
        let expand = |key: &str, text: &str| {
            Template::expand_env(text).map_err(|err| format!("`{key}`: {err}"))
        };
        let needs = |key: &str| format!("type {} needs `{key}`", type_name(spec.source_type));
        let origin = match spec.source_type {
            SourceType::File => {
                let path = spec.path.as_ref().ok_or_else(|| needs("path"))?;
                Origin::File(dir.join(path))
            }
            SourceType::Http => {
                let url = expand("url", spec.url.as_deref().ok_or_else(|| needs("url"))?)?;
                let allow_link_local = spec.allow_link_local.unwrap_or(false);
                egress::check_url(&url, allow_link_local).map_err(|err| format!("`url`: {err}"))?;
                let method = egress::method(spec.method.as_deref())?;
                let mut headers = Vec::new();
                for (name, value) in spec.headers.iter().flatten() {
                    let header = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("`headers`: {name:?} is not a header name"))?;
                    let value = HeaderValue::from_str(&expand(&format!("headers.{name}"), value)?)
                        .map_err(|_| format!("`headers.{name}`: not a valid header value"))?;
                    headers.push((header, value));
                }
                Origin::Http {
                    client: egress::client(allow_link_local)?,
                    method,
                    url,
                    headers,
                    body: spec
                        .body
                        .as_deref()
                        .map(|b| expand("body", b))
                        .transpose()?,
                    allow_link_local,
                }
            }
            SourceType::Command => {
                let argv = spec.command.as_deref().unwrap_or_default();
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(needs("command"));
                }
                let argv = argv
                    .iter()
                    .enumerate()
                    .map(|(n, arg)| {
                        expand(&format!("command[{n}]"), arg).map(|a| Template::literal(&a))
                    })
                    .collect::<Result<_, _>>()?;
                let mut env = Vec::new();
                for (name, value) in spec.env.iter().flatten() {
                    env.push((
                        name.clone(),
                        Template::literal(&expand(&format!("env.{name}"), value)?),
                    ));
                }
                Origin::Command(CommandEnricher {
                    argv,
                    env,
                    output: OutputKind::Raw,
                    max_output_bytes: max_bytes,
                })
            }
            SourceType::Nats => nats_origin(spec, nats)?,
        };
        Ok(Fetcher {
            origin,
            format: spec.format,
            extract,
            max_bytes,
        })
    }

    /// Whether the data comes over the network.
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self.origin, Origin::File(_) | Origin::Command(_))
    }

    /// The file of a file source.
    pub(crate) fn file(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File(path) => Some(path),
            _ => None,
        }
    }

    /// Fetches, reads and extracts the value. The caller bounds the time.
    pub(crate) async fn fetch(&self) -> Result<Value, String> {
        let bytes = match &self.origin {
            Origin::File(path) => read_file(path, self.max_bytes).await?,
            Origin::Http {
                client,
                method,
                url,
                headers,
                body,
                allow_link_local,
            } => {
                let url = egress::check_url(url, *allow_link_local)?;
                let mut request = client.request(method.clone(), url);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                if let Some(body) = body {
                    request = request.body(body.clone());
                }
                egress::fetch_capped(request, self.max_bytes, "max_bytes").await?
            }
            Origin::Command(command) => match command.call(&Value::Null).await? {
                Value::String(text) => text.into_bytes(),
                other => other.to_string().into_bytes(),
            },
            #[cfg(feature = "nats")]
            Origin::Nats(key) => {
                let bytes = key.get().await?;
                if bytes.len() > self.max_bytes {
                    return Err(format!(
                        "the value is larger than max_bytes ({})",
                        self.max_bytes
                    ));
                }
                bytes
            }
        };
        let value = parse(self.format, &bytes)?;
        match &self.extract {
            Some(extract) => Ok(extract.apply(&value)?.unwrap_or(Value::Null)),
            None => Ok(value),
        }
    }
}

/// A `nats` source: `url: nats://HOST[:PORT]` (or `tls://`), `bucket`, `key`.
#[cfg(feature = "nats")]
fn nats_origin(spec: &SourceSpec, nats: &crate::config::NatsConfig) -> Result<Origin, String> {
    let needs = |key: &str| format!("type nats needs `{key}`");
    let server = spec.url.clone().ok_or_else(|| needs("url"))?;
    let host = server
        .strip_prefix("nats://")
        .or_else(|| server.strip_prefix("tls://"));
    if !host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '@'])) {
        return Err(format!(
            "`url: {server}` must be nats://HOST[:PORT] or tls://HOST[:PORT], without credentials"
        ));
    }
    Ok(Origin::Nats(Box::new(NatsKey {
        server,
        bucket: spec.bucket.clone().ok_or_else(|| needs("bucket"))?,
        key: spec.key.clone().ok_or_else(|| needs("key"))?,
        settings: nats.clone(),
        client: tokio::sync::OnceCell::new(),
    })))
}

#[cfg(not(feature = "nats"))]
fn nats_origin(_: &SourceSpec, _: &crate::config::NatsConfig) -> Result<Origin, String> {
    Err("type nats is not available in this build".to_owned())
}

async fn read_file(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|err| format!("{shown}: {err}"))?;
    if metadata.len() > limit as u64 {
        return Err(format!("{shown} is larger than max_bytes ({limit})"));
    }
    tokio::fs::read(path)
        .await
        .map_err(|err| format!("{shown}: {err}"))
}

/// Reads fetched bytes by format.
pub(crate) fn parse(format: Format, bytes: &[u8]) -> Result<Value, String> {
    match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|err| format!("not JSON: {err}")),
        Format::Yaml => yaml_serde::from_slice(bytes).map_err(|err| format!("not YAML: {err}")),
        Format::Lines => {
            let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
            Ok(Value::Array(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(|line| Value::String(line.to_owned()))
                    .collect(),
            ))
        }
        Format::Csv => {
            let mut reader = csv::Reader::from_reader(bytes);
            let headers = reader
                .headers()
                .map_err(|err| format!("not CSV: {err}"))?
                .clone();
            let mut rows = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|err| format!("not CSV: {err}"))?;
                let row: Map<String, Value> = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
                    .collect();
                rows.push(Value::Object(row));
            }
            Ok(Value::Array(rows))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats() {
        assert_eq!(
            parse(Format::Json, br#"{"a": [1]}"#).unwrap(),
            json!({"a": [1]})
        );
        assert_eq!(
            parse(Format::Yaml, b"a: [x, 2]\n").unwrap(),
            json!({"a": ["x", 2]})
        );
        assert_eq!(
            parse(Format::Lines, b"# admins\nalice\n\n  bob  \r\n").unwrap(),
            json!(["alice", "bob"])
        );
        assert_eq!(
            parse(Format::Csv, b"user,team\nalice,red\n\"bob, jr\",blue\n").unwrap(),
            json!([{"user": "alice", "team": "red"}, {"user": "bob, jr", "team": "blue"}])
        );
        assert!(
            parse(Format::Json, b"{")
                .unwrap_err()
                .starts_with("not JSON")
        );
        assert!(
            parse(Format::Csv, b"a,b\n1,2,3\n")
                .unwrap_err()
                .starts_with("not CSV")
        );
    }
}

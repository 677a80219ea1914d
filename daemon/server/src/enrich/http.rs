//! The `http` primitive: one request per record (or a cached answer), the
//! JSON response, optionally sliced by `extract`.
//!
//! Guards: the response body is read up to `max_response_bytes`; redirects
//! are not followed; proxies from the environment are not used; and an
//! address that is link-local or a cloud metadata service (see
//! [`is_blocked`]) is refused, whether the URL names it or DNS resolves to
//! it, unless the enricher sets `allow_link_local: true`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

use reqwest::Method;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::Extractor;
use super::template::Template;

/// Most cached answers per enricher; the oldest go first.
const CACHE_ENTRIES: usize = 10_000;

/// A compiled `http` enricher.
pub(crate) struct HttpEnricher {
    client: reqwest::Client,
    method: Method,
    url: Template,
    headers: Vec<(HeaderName, Template)>,
    body: Option<Template>,
    extract: Option<Extractor>,
    max_response_bytes: usize,
    allow_link_local: bool,
    cache: Option<Cache>,
}

/// What [`HttpEnricher::call`] settings need from the file.
pub(crate) struct HttpSettings {
    pub method: Option<String>,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<Template>,
    pub extract: Option<Extractor>,
    pub cache_ttl: Option<Duration>,
    pub max_response_bytes: usize,
    pub allow_link_local: bool,
}

impl HttpEnricher {
    /// Builds the client. Errors name the key at fault.
    pub(crate) fn new(settings: HttpSettings) -> Result<HttpEnricher, String> {
        let method = match settings.method.as_deref() {
            None => Method::GET,
            Some(name) => Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("`method: {name}` is not an HTTP method"))?,
        };
        let headers = settings
            .headers
            .into_iter()
            .map(|(name, value)| {
                HeaderName::from_bytes(name.as_bytes())
                    .map(|name| (name, value))
                    .map_err(|_| format!("`headers`: {name:?} is not a header name"))
            })
            .collect::<Result<_, _>>()?;
        // No timeout of the client's own: the enricher's `timeout` bounds
        // the whole call (and tells a timeout from an error).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                allow_link_local: settings.allow_link_local,
            })
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        Ok(HttpEnricher {
            client,
            method,
            url: settings.url,
            headers,
            body: settings.body,
            extract: settings.extract,
            max_response_bytes: settings.max_response_bytes,
            allow_link_local: settings.allow_link_local,
            cache: settings.cache_ttl.map(Cache::new),
        })
    }

    /// The enrichment for `record` and whether it came from the cache.
    /// Errors never hold header values (they may carry secrets).
    pub(crate) async fn call(&self, record: &Value) -> Result<(Option<Value>, bool), String> {
        let url = self.url.render(record, percent_encode)?;
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, template) in &self.headers {
            let value = template.render_plain(record)?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("header {name}: the value is not a valid header value"))?;
            headers.push((name.clone(), value));
        }
        let body = self
            .body
            .as_ref()
            .map(|body| body.render_plain(record))
            .transpose()?;
        let request = Request { url, headers, body };
        match &self.cache {
            None => self.fetch(&request).await.map(|value| (value, false)),
            Some(cache) => cache.get_or_fetch(&request, || self.fetch(&request)).await,
        }
    }

    /// Sends the request and reads the answer.
    async fn fetch(&self, request: &Request) -> Result<Option<Value>, String> {
        let parsed =
            reqwest::Url::parse(&request.url).map_err(|err| format!("invalid URL: {err}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "the URL's scheme {} is not http or https",
                parsed.scheme()
            ));
        }
        if let Some(ip) = literal_ip(&parsed)
            && !self.allow_link_local
            && is_blocked(ip)
        {
            return Err(format!(
                "{ip} is a link-local or metadata address (set allow_link_local: true to allow it)"
            ));
        }
        let mut builder = self.client.request(self.method.clone(), parsed);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let mut response = builder.send().await.map_err(describe)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > self.max_response_bytes {
                return Err(format!(
                    "the response exceeds max_response_bytes ({})",
                    self.max_response_bytes
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|err| format!("the response is not JSON: {err}"))?;
        match &self.extract {
            Some(extract) => extract.apply(json),
            None => Ok(Some(json)),
        }
    }
}

/// A request error without the URL (which may hold a secret from the
/// environment): its kind and innermost cause.
fn describe(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else if err.is_body() || err.is_decode() {
        "reading the response failed"
    } else {
        "the request failed"
    };
    let mut source: &dyn std::error::Error = &err;
    while let Some(next) = source.source() {
        source = next;
    }
    format!("{kind}: {source}")
}

/// Percent-encodes a value put into a URL, so that a record's value stays
/// one path segment or query value (`/`, `?`, `&`, `#` and spaces encoded).
pub(crate) fn percent_encode(value: &str, out: &mut String) {
    const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    out.extend(percent_encoding::utf8_percent_encode(value, COMPONENT));
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Link-local addresses (which hold the AWS, GCP, Azure and OpenStack
/// metadata services at 169.254.169.254) and the other metadata addresses:
/// AWS's IPv6 `fd00:ec2::254`, Alibaba's `100.100.100.200`, Azure's
/// `168.63.129.16`. IPv4-mapped IPv6 forms are checked as IPv4.
pub(crate) fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
                || v4 == Ipv4Addr::new(168, 63, 129, 16)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_blocked(IpAddr::V4(v4)),
            None => {
                (v6.segments()[0] & 0xffc0) == 0xfe80
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        },
    }
}

/// System DNS, without the blocked addresses.
struct GuardedResolver {
    allow_link_local: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_link_local;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| allow || !is_blocked(addr.ip()))
                .collect();
            if allowed.is_empty() && !resolved.is_empty() {
                return Err(format!(
                    "{host} resolves only to link-local or metadata addresses (set allow_link_local: true to allow them)"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// One rendered request; also the cache key (an answer depends on every
/// part of it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Request {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<String>,
}

/// Answers by request, each for `ttl`. Concurrent calls for the same request
/// share one fetch; failures are not cached.
struct Cache {
    ttl: Duration,
    entries: Mutex<HashMap<Request, Arc<Entry>>>,
}

type Entry = OnceCell<(Instant, Option<Value>)>;

impl Cache {
    fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer (and `true`), or the one `fetch` gets (and `false`).
    async fn get_or_fetch<F, Fut>(
        &self,
        request: &Request,
        fetch: F,
    ) -> Result<(Option<Value>, bool), String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Value>, String>>,
    {
        let entry = self.entry(request);
        let mut fetched = false;
        let (_, value) = entry
            .get_or_try_init(|| async {
                fetched = true;
                fetch().await.map(|value| (Instant::now(), value))
            })
            .await?;
        Ok((value.clone(), !fetched))
    }

    /// The entry for `request`: the live one, or a new one in place of an
    /// expired one.
    fn entry(&self, request: &Request) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("not poisoned");
        let live = |entry: &Entry| entry.get().is_none_or(|(at, _)| at.elapsed() < self.ttl);
        if let Some(entry) = entries.get(request).filter(|e| live(e)) {
            return Arc::clone(entry);
        }
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, entry| live(entry));
            if entries.len() >= CACHE_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .filter_map(|(key, entry)| Some((key, entry.get()?.0)))
                    .min_by_key(|(_, at)| *at)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&oldest);
            }
        }
        let entry = Arc::new(Entry::new());
        entries.insert(request.clone(), Arc::clone(&entry));
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_addresses() {
        for blocked in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "168.63.129.16",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_blocked(blocked.parse().unwrap()), "{blocked}");
        }
        for allowed in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "::1",
            "8.8.8.8",
            "fd00::1",
        ] {
            assert!(!is_blocked(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn values_in_urls_are_one_component() {
        let mut out = String::new();
        percent_encode("a b/../c?d=e&f#g~h.i_j-k", &mut out);
        assert_eq!(out, "a%20b%2F..%2Fc%3Fd%3De%26f%23g~h.i_j-k");
    }
}

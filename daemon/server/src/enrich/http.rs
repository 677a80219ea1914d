//! The `http` primitive: one request per record (or a cached answer), the
//! JSON response, optionally sliced by `extract`.
//!
//! Guards ([`crate::egress`]): the response body is read up to
//! `max_response_bytes`; redirects are not followed; proxies from the
//! environment are not used; and a link-local or cloud metadata address is
//! refused, whether the URL names it or DNS resolves to it, unless the
//! enricher sets `allow_link_local: true`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::Extractor;
use super::template::Template;
use crate::egress;

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
        let method = egress::method(settings.method.as_deref())?;
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
        let client = egress::client(settings.allow_link_local)?;
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
        let url = egress::check_url(&request.url, self.allow_link_local)?;
        let mut builder = self.client.request(self.method.clone(), url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let bytes =
            egress::fetch_capped(builder, self.max_response_bytes, "max_response_bytes").await?;
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|err| format!("the response is not JSON: {err}"))?;
        match &self.extract {
            Some(extract) => extract.apply(&json),
            None => Ok(Some(json)),
        }
    }
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
        let result = entry
            .get_or_try_init(|| async {
                fetched = true;
                fetch().await.map(|value| (Instant::now(), value))
            })
            .await;
        match result {
            Ok((_, value)) => Ok((value.clone(), !fetched)),
            Err(err) => {
                // Failures are not cached: the entry goes, unless another
                // call has filled it meanwhile.
                let mut entries = self.entries.lock().expect("not poisoned");
                if entries
                    .get(request)
                    .is_some_and(|e| Arc::ptr_eq(e, &entry) && e.get().is_none())
                {
                    entries.remove(request);
                }
                Err(err)
            }
        }
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
            // Entries still being fetched (or whose fetch was cancelled by a
            // timeout) leave the map too: their callers hold them.
            entries.retain(|_, entry| entry.get().is_some() && live(entry));
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
    fn values_in_urls_are_one_component() {
        let mut out = String::new();
        percent_encode("a b/../c?d=e&f#g~h.i_j-k", &mut out);
        assert_eq!(out, "a%20b%2F..%2Fc%3Fd%3De%26f%23g~h.i_j-k");
    }
}

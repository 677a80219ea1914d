//! Outgoing HTTP of enrichers and dynamic sources: a client that refuses
//! link-local and cloud metadata addresses (unless allowed), follows no
//! redirects and uses no proxy from the environment, and reads bodies up to
//! a limit. Errors never hold the URL or header values, which may carry
//! secrets from the environment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A client for one enricher or source.
pub(crate) fn client(allow_link_local: bool) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver { allow_link_local })
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))
}

/// The `method` key (any case; GET when absent).
pub(crate) fn method(name: Option<&str>) -> Result<reqwest::Method, String> {
    match name {
        None => Ok(reqwest::Method::GET),
        Some(name) => reqwest::Method::from_bytes(name.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("`method: {name}` is not an HTTP method")),
    }
}

/// Parses `url` and refuses other schemes than http(s) and a blocked
/// address written in it.
pub(crate) fn check_url(url: &str, allow_link_local: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("invalid URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the URL's scheme {} is not http or https",
            parsed.scheme()
        ));
    }
    if let Some(ip) = literal_ip(&parsed)
        && !allow_link_local
        && is_blocked(ip)
    {
        return Err(format!(
            "{ip} is a link-local or metadata address (set allow_link_local: true to allow it)"
        ));
    }
    Ok(parsed)
}

/// Sends `request` and returns the body of a 2xx answer, at most `limit`
/// bytes (`what` names the limit in the error).
pub(crate) async fn fetch_capped(
    request: reqwest::RequestBuilder,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if bytes.len() + chunk.len() > limit {
            return Err(format!("the response exceeds {what} ({limit})"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A request error without the URL (which may hold a secret from the
/// environment): its kind and innermost cause.
pub(crate) fn describe(err: reqwest::Error) -> String {
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

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Link-local addresses (which hold the AWS, GCP, Azure and OpenStack
/// metadata services at 169.254.169.254) and the other metadata addresses:
/// AWS's IPv6 `fd00:ec2::254`, GCP's IPv6 `fd20:ce::254`, Alibaba's
/// `100.100.100.200`, Azure's `168.63.129.16`. IPv4-mapped and NAT64
/// (`64:ff9b::/96`) forms are checked as the IPv4 address they carry.
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
                let segments = v6.segments();
                // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
                let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
                let embedded = Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32);
                (segments[0] & 0xffc0) == 0xfe80
                    || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                    || v6 == Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)
                    || (nat64 && is_blocked(IpAddr::V4(embedded)))
            }
        },
    }
}

/// System DNS, without the blocked addresses.
pub(crate) struct GuardedResolver {
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
            "fd20:ce::254",
            "64:ff9b::a9fe:a9fe",
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
}

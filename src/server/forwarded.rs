//! Who is asking, and under which origin the bridge was reached: the base of `Location` and
//! `meta.location`, and the client address that failed sign-ins are counted against.
//!
//! `Forwarded` (RFC 7239), `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-For` are
//! honoured only when the TCP peer is within `trusted_proxies` (empty by default): anyone else
//! could set them, and a forged host would end up in the `Location` of every 201 the IdP
//! follows. Every host, forwarded or the request's own `Host`, must be a plain `host[:port]`;
//! one that is not (`javascript://evil`, `a@b`, a path) is ignored and the next source is used,
//! down to the listener's own address.

use actix_web::http::header::{self, HeaderMap};
use actix_web::HttpRequest;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// The TCP peer's address (IPv4-mapped IPv6 as IPv4).
pub fn peer_ip(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip().to_canonical())
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// True when the request came through a proxy in `proxies`, so its forwarding headers count.
pub fn from_trusted_proxy(req: &HttpRequest, proxies: &[IpNet]) -> bool {
    !proxies.is_empty() && peer_ip(req).is_some_and(|ip| trusted(ip, proxies))
}

/// `scheme://host[:port]` of the bridge as the client reached it.
pub fn origin(req: &HttpRequest, proxies: &[IpNet]) -> String {
    let headers = req.headers();
    let via_proxy = from_trusted_proxy(req, proxies);
    let own_scheme = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    let scheme = via_proxy
        .then(|| {
            forwarded_param(headers, "proto")
                .and_then(|p| valid_scheme(&p))
                .or_else(|| first_item(headers, "x-forwarded-proto").and_then(|p| valid_scheme(&p)))
        })
        .flatten()
        .unwrap_or(own_scheme);
    let host = via_proxy
        .then(|| {
            forwarded_param(headers, "host")
                .filter(|h| valid_host(h))
                .or_else(|| first_item(headers, "x-forwarded-host").filter(|h| valid_host(h)))
        })
        .flatten()
        .or_else(|| own_host(req))
        .unwrap_or_else(|| listener_host(req));
    format!("{scheme}://{host}")
}

/// The request's own host: `Host` (HTTP/1.1) or the URI's authority (HTTP/2), if valid.
fn own_host(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
        .filter(|h| valid_host(h))
}

/// The address the connection was accepted on: always a valid `host:port`.
fn listener_host(req: &HttpRequest) -> String {
    let addr = req.app_config().local_addr();
    match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

/// The address failed sign-ins are counted against: the peer, or, when the peer is a trusted
/// proxy, the nearest address in `Forwarded: for=` / `X-Forwarded-For` that is not itself a
/// trusted proxy (read from the right: entries further left were written by the client and
/// could be forged). IPv6 clients are grouped by their /64, which one client controls whole.
pub fn client_key(req: &HttpRequest, proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = peer_ip(req)?;
    let ip = if from_trusted_proxy(req, proxies) {
        forwarded_client(req.headers(), proxies).unwrap_or(peer)
    } else {
        peer
    };
    Some(key_of(ip))
}

/// IPv4 as is; IPv6 as its /64.
pub fn key_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn forwarded_client(headers: &HeaderMap, proxies: &[IpNet]) -> Option<IpAddr> {
    let chain: Vec<String> = if headers.contains_key(header::FORWARDED) {
        forwarded_elements(headers)
            .into_iter()
            .filter_map(|pairs| {
                pairs
                    .into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("for"))
                    .map(|(_, v)| v)
            })
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .collect()
    };
    let mut leftmost = None;
    for item in chain.iter().rev() {
        // An obfuscated or `unknown` node (RFC 7239 §6) ends what can be attributed.
        let ip = parse_node(item)?;
        if !trusted(ip, proxies) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, _) = rest.split_once(']')?;
        return inner
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The first value of a comma-separated header (the one the client-facing proxy wrote).
fn first_item(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// `key` of the first `Forwarded` element that has it.
fn forwarded_param(headers: &HeaderMap, key: &str) -> Option<String> {
    forwarded_elements(headers).into_iter().find_map(|pairs| {
        pairs
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Every `Forwarded` element (RFC 7239 §4), in order, as its `key=value` pairs (quotes removed).
fn forwarded_elements(headers: &HeaderMap) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let Ok(text) = value.to_str() else { continue };
        for element in split_unquoted(text, ',') {
            let pairs = split_unquoted(&element, ';')
                .into_iter()
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                        .unwrap_or_else(|| v.to_string());
                    Some((k.trim().to_string(), v))
                })
                .collect();
            out.push(pairs);
        }
    }
    out
}

fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
}

fn valid_scheme(s: &str) -> Option<&'static str> {
    if s.eq_ignore_ascii_case("https") {
        Some("https")
    } else if s.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// A plain `host[:port]`: a DNS name or IPv4 address (letters, digits, `-`, `_`, dots between
/// non-empty labels) or a bracketed IPv6 address, and an optional numeric port. Nothing else:
/// no scheme, userinfo, path, query, whitespace or percent-encoding.
pub fn valid_host(s: &str) -> bool {
    if s.is_empty() || s.len() > 300 {
        return false;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if port.parse::<u16>().is_err() {
            return false;
        }
    }
    match host {
        None => true,
        Some(h) => {
            let h = h.strip_suffix('.').unwrap_or(h);
            !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn hosts() {
        for ok in [
            "example.com",
            "example.com:8443",
            "scim.example.com.",
            "127.0.0.1:9000",
            "[::1]",
            "[2001:db8::1]:443",
            "my_host-1",
            "localhost",
        ] {
            assert!(valid_host(ok), "{ok} should be valid");
        }
        for bad in [
            "",
            "javascript://evil",
            "javascript://evil.example/x",
            "evil.example/x",
            "user@evil",
            "evil:",
            "evil:99999",
            "evil:12a",
            "a b",
            "a..b",
            "::1",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "evil%2eexample",
            "evil\"x",
            "evil?x",
            "evil#x",
            ".",
        ] {
            assert!(!valid_host(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let req = TestRequest::default()
            .peer_addr("127.0.0.1:5000".parse().unwrap())
            .insert_header(("host", "bridge.local:8080"))
            .insert_header(("x-forwarded-host", "evil.example"))
            .insert_header(("x-forwarded-proto", "https"))
            .to_http_request();
        assert_eq!(origin(&req, &[]), "http://bridge.local:8080");
        assert_eq!(
            origin(&req, &nets(&["10.0.0.0/8"])),
            "http://bridge.local:8080"
        );
        assert_eq!(origin(&req, &nets(&["127.0.0.1"])), "https://evil.example");
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_and_bad_values_fall_through() {
        let req = TestRequest::default()
            .peer_addr("10.1.2.3:5000".parse().unwrap())
            .insert_header(("host", "internal:8080"))
            .insert_header((
                "forwarded",
                "for=192.0.2.60;proto=https;host=\"scim.example.com\", for=10.1.2.2",
            ))
            .insert_header(("x-forwarded-host", "other.example"))
            .to_http_request();
        assert_eq!(
            origin(&req, &nets(&["10.0.0.0/8"])),
            "https://scim.example.com"
        );
        let req = TestRequest::default()
            .peer_addr("10.1.2.3:5000".parse().unwrap())
            .insert_header(("host", "internal:8080"))
            .insert_header(("x-forwarded-host", "javascript://evil"))
            .insert_header(("x-forwarded-proto", "javascript"))
            .to_http_request();
        assert_eq!(origin(&req, &nets(&["10.0.0.0/8"])), "http://internal:8080");
    }

    #[test]
    fn an_invalid_own_host_falls_back_to_the_listener() {
        let req = TestRequest::default()
            .peer_addr("127.0.0.1:5000".parse().unwrap())
            .insert_header(("host", "javascript://evil"))
            .to_http_request();
        let o = origin(&req, &[]);
        assert!(!o.contains("evil"), "{o}");
        assert!(o.starts_with("http://"), "{o}");
    }

    #[test]
    fn client_address() {
        let proxies = nets(&["10.0.0.0/8"]);
        let req = TestRequest::default()
            .peer_addr("10.0.0.5:1".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.9"))
            .to_http_request();
        assert_eq!(
            client_key(&req, &proxies),
            Some("198.51.100.7".parse().unwrap())
        );
        // Not from a trusted proxy: the header is the client's own word.
        assert_eq!(client_key(&req, &[]), Some("10.0.0.5".parse().unwrap()));
        let req = TestRequest::default()
            .peer_addr("10.0.0.5:1".parse().unwrap())
            .insert_header(("forwarded", "for=\"[2001:db8:1:2:3::9]:4711\""))
            .to_http_request();
        assert_eq!(
            client_key(&req, &proxies),
            Some("2001:db8:1:2::".parse().unwrap())
        );
    }
}

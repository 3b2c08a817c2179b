//! Issue 15, the server's part, over real sockets: the body-read deadline (408, connection
//! closed, others served meanwhile), the request deadline (503 with Retry-After), the per-tenant
//! concurrency cap, failed-authentication throttling per client address (429), no tenant
//! enumeration (unknown and known tenants answer alike without a valid token, discovery too),
//! and forwarding headers honoured only from `trusted_proxies`, with the Host validated.
//!
//! Deadlines are configured short (1–2 s) so the suite stays fast; every wait is bounded.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;

use async_trait::async_trait;
use scim_bridge::config::RequestLimits;
use scim_bridge::connector::local::LocalConnector;
use scim_bridge::connector::{Connector, ListPage, Precondition, RequestContext};
use scim_bridge::scim::list::ListQuery;
use scim_bridge::scim::patch::PatchRequest;
use scim_bridge::scim::schema::{ResourceKind, SchemaRegistry};
use scim_bridge::scim::ScimResult;
use scim_bridge::server::{self, RunningServer};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOK_A: &str = "tenant-a-token-0123456789abcdefghijklmnop";
const TOK_B: &str = "tenant-b-token-0123456789abcdefghijklmnop";
const JWT_A: &str = "tenant-a-jwt-signing-key-0123456789abcdef";
const JWT_B: &str = "tenant-b-jwt-signing-key-0123456789abcdef";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Two local tenants `a` and `b`, with `extra` top-level keys and `limits` as the `[limits]`
/// table's body.
fn two_tenants(dir: &std::path::Path, extra: &str, limits: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data}"
{extra}

[limits]
{limits}

[[tenants]]
id = "a"
tokens = ["{TOK_A}"]
jwt_secret = "{JWT_A}"

[tenants.vendor]
kind = "local"

[[tenants]]
id = "b"
tokens = ["{TOK_B}"]
jwt_secret = "{JWT_B}"

[tenants.vendor]
kind = "local"
"#,
        data = dir.display()
    )
}

struct Bridge {
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

impl Bridge {
    async fn start(label: &str, extra: &str, limits: &str) -> Bridge {
        let dir = tempfile::tempdir().unwrap();
        let text = two_tenants(dir.path(), extra, limits);
        let server = bridge::serve_toml(label, &text).await;
        Bridge {
            server: Some(server),
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    /// The admin listener's root (`/metrics`).
    fn admin_root(&self) -> String {
        bridge::admin_root(self.server.as_ref().unwrap())
    }

    fn base(&self, tenant: &str) -> String {
        format!("http://{}/tenants/{tenant}/scim/v2", self.addr())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            drop(s.handle.stop(false));
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A client whose connections come from `local` (any 127/8 address reaches the loopback).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .local_address(local.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// An RFC 7644 Error body with `status`.
    fn assert_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let ct = self.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/scim+json"), "{ct}");
        let v = self.json();
        assert_eq!(v["schemas"], json!([ERROR]), "{v}");
        assert_eq!(v["status"], json!(status.to_string()), "{v}");
        v
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.expect("the bridge answers");
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> Answer {
    let mut rb = c.get(url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "active": true,
    })
}

/// The head of a POST to `path` announcing `len` body bytes, with `token`.
fn post_head(addr: SocketAddr, path: &str, token: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Everything the server sends until it closes the connection (a reset after the answer counts
/// as closed: bytes the server never read make its close a reset); `Err` with what came if it
/// is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => {
                break
            }
            Ok(Err(e)) => panic!("reading the answer: {e}"),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Status, lower-cased head and body of a raw HTTP/1.1 answer.
fn parse_raw(raw: &str) -> (u16, String, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// 1. A body that does not arrive within `body_read_timeout` gets 408, a SCIM Error and
///    `Connection: close`, and the connection is closed; other tenants and other clients of the
///    same tenant are served meanwhile.
#[tokio::test]
async fn a_slow_body_gets_408_and_its_connection_closes() {
    let b = Bridge::start(
        "slow body",
        "",
        r#"body_read_timeout = "2s"
request_timeout = "10s""#,
    )
    .await;
    let addr = b.addr();
    let path = "/tenants/a/scim/v2/Users";
    let started = Instant::now();

    // One sends `{` and stops; the other sends one byte a second.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(post_head(addr, path, TOK_A, 100_000).as_bytes())
        .await
        .unwrap();
    stalled.write_all(b"{").await.unwrap();
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(post_head(addr, path, TOK_A, 100_000).as_bytes())
        .await
        .unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    let trickler = tokio::spawn(async move {
        for _ in 0..30 {
            if trickle_write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    // Meanwhile, both tenants are served, promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = client();
    for (t, tok) in [("a", TOK_A), ("b", TOK_B)] {
        let asked = Instant::now();
        let r = get(&c, &format!("{}/Users", b.base(t)), Some(tok)).await;
        assert_eq!(r.status, 200, "{t}: {}", r.body);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{t} waited {:?} behind the slow bodies",
            asked.elapsed()
        );
        let created = send(
            c.post(format!("{}/Users", b.base(t)))
                .bearer_auth(tok)
                .header("content-type", "application/scim+json")
                .body(user(&format!("meanwhile-{t}@example.com")).to_string()),
        )
        .await;
        assert_eq!(created.status, 201, "{t}: {}", created.body);
    }

    let raw = read_until_closed(&mut stalled, Duration::from_secs(6))
        .await
        .unwrap_or_else(|got| panic!("the stalled connection was not closed within 6 s: {got}"));
    let took = started.elapsed();
    let (status, head, body) = parse_raw(&raw);
    assert_eq!(status, 408, "{raw}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        head.contains("content-type: application/scim+json"),
        "{head}"
    );
    let v: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(v["schemas"], json!([ERROR]), "{v}");
    assert_eq!(v["status"], "408", "{v}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "408 after {took:?}, the deadline is 2 s"
    );

    // A reader of its own: the trickler's writes must not hold up its answer.
    let mut trickle_raw = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(6),
        read_all_or_reset(&mut trickle_read, &mut trickle_raw),
    )
    .await;
    assert!(closed.is_ok(), "the trickling connection was not closed");
    let raw = String::from_utf8_lossy(&trickle_raw).into_owned();
    let (status, head, _) = parse_raw(&raw);
    assert_eq!(status, 408, "{raw}");
    assert!(head.contains("connection: close"), "{head}");
    trickler.abort();

    // Still serving, no 5xx counted anywhere.
    let r = get(&c, &format!("{}/Users", b.base("a")), Some(TOK_A)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = get(&c, &format!("{}/metrics", b.admin_root()), None).await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let metrics = metrics.body;
    assert!(
        metrics.contains("scim_requests_total"),
        "the requests are counted:\n{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("scim_requests_total") && l.contains("status=\"5")),
        "5xx answers:\n{metrics}"
    );
}

async fn read_all_or_reset(r: &mut tokio::net::tcp::OwnedReadHalf, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => return,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
}

/// A connector that answers every list `delay` late (the rest as the local connector).
struct Slow {
    inner: LocalConnector,
    delay: Duration,
}

#[async_trait]
impl Connector for Slow {
    fn schemas(&self) -> &SchemaRegistry {
        self.inner.schemas()
    }
    async fn create(
        &self,
        kind: ResourceKind,
        resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.inner.create(kind, resource, ctx).await
    }
    async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.inner.get(kind, id, with_members, ctx).await
    }
    async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        resource: Value,
        pre: &Precondition,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.inner.replace(kind, id, resource, pre, ctx).await
    }
    async fn patch(
        &self,
        kind: ResourceKind,
        id: &str,
        request: &PatchRequest,
        pre: &Precondition,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        self.inner
            .patch(kind, id, request, pre, with_members, ctx)
            .await
    }
    async fn delete(&self, kind: ResourceKind, id: &str, pre: &Precondition) -> ScimResult<()> {
        self.inner.delete(kind, id, pre).await
    }
    async fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage> {
        tokio::time::sleep(self.delay).await;
        self.inner.list(kind, query, with_members, ctx).await
    }
    async fn ready(&self) -> Result<(), String> {
        self.inner.ready().await
    }
}

/// 2. A handler that overruns `request_timeout` is answered 503 with `Retry-After` and a SCIM
///    Error at the deadline, and other tenants are served meanwhile.
#[tokio::test]
async fn a_handler_that_overruns_the_request_deadline_gets_503() {
    use scim_bridge::auth::TenantAuth;
    use scim_bridge::config::{Secret, TenantId};
    use scim_bridge::server::{metrics::Metrics, AppState, ServerState, Tenant};
    let dir = tempfile::tempdir().unwrap();
    let store = bridge::open_store(dir.path()).await;
    let mut tenants = std::collections::BTreeMap::new();
    for (id, tok, delay) in [("slow", TOK_A, 5), ("fast", TOK_B, 0)] {
        let connector = Slow {
            inner: LocalConnector::open(&store, id).unwrap(),
            delay: Duration::from_secs(delay),
        };
        tenants.insert(
            id.to_string(),
            Arc::new(Tenant {
                id: id.to_string(),
                auth: TenantAuth::new(&TenantId::parse(id).unwrap(), &[Secret::new(tok)], None),
                connector: Arc::new(connector),
            }),
        );
    }
    let app = AppState::new(tenants, Metrics::new(), 1 << 20, store);
    let limits = RequestLimits {
        body_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        tenant_concurrency: 4,
        auth_failure_limit: 20,
        ..RequestLimits::default()
    };
    let running = server::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerState::new(app, &limits, &[]),
        Some(2),
    )
    .unwrap();
    let root = format!("http://{}", running.addr);
    let c = client();

    let slow = {
        let c = c.clone();
        let url = format!("{root}/tenants/slow/scim/v2/Users");
        tokio::spawn(async move {
            let asked = Instant::now();
            (get(&c, &url, Some(TOK_A)).await, asked.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    let r = get(
        &c,
        &format!("{root}/tenants/fast/scim/v2/Users"),
        Some(TOK_B),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(asked.elapsed() < Duration::from_millis(700));

    let (r, took) = slow.await.unwrap();
    r.assert_error(503);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After on the 503")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "503 after {took:?}; the deadline is 1 s and the handler takes 5 s"
    );
    drop(running.handle.stop(false));
}

/// 3. With `tenant_concurrency = 1`, a tenant whose one slot is held (by a body in flight)
///    makes its own next request wait for the slot, but another tenant is served at once.
#[tokio::test]
async fn a_tenant_at_its_concurrency_cap_does_not_hold_up_another() {
    let b = Bridge::start(
        "cap",
        "",
        r#"body_read_timeout = "2s"
request_timeout = "10s"
tenant_concurrency = 1"#,
    )
    .await;
    let addr = b.addr();
    let started = Instant::now();
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(post_head(addr, "/tenants/a/scim/v2/Users", TOK_A, 1000).as_bytes())
        .await
        .unwrap();
    held.write_all(b"{").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let c = client();
    let a_waits = {
        let c = c.clone();
        let url = format!("{}/Users", b.base("a"));
        tokio::spawn(async move { get(&c, &url, Some(TOK_A)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    let r = get(&c, &format!("{}/Users", b.base("b")), Some(TOK_B)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        asked.elapsed() < Duration::from_millis(700),
        "b waited {:?}",
        asked.elapsed()
    );
    // Anonymous discovery takes no slot either.
    let r = get(&c, &format!("{}/ServiceProviderConfig", b.base("a")), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !a_waits.is_finished(),
        "a's second request did not wait for the slot"
    );

    // The held body times out at 2 s; a's second request then gets the slot.
    let r = a_waits.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "a's second request was served after {took:?}: it should have waited for the slot"
    );
    let raw = read_until_closed(&mut held, Duration::from_secs(3))
        .await
        .unwrap_or_else(|got| panic!("the held connection stays open: {got}"));
    assert_eq!(parse_raw(&raw).0, 408, "{raw}");
}

/// 4. After `auth_failure_limit` failed authentications on a tenant's path, an address is
///    answered 429 with `Retry-After` there (a valid token included: checking it would keep the
///    guessing open); other addresses, and other tenants from the same address, are not
///    affected. Behind a trusted proxy, the forwarded client address counts.
#[tokio::test]
async fn repeated_failed_sign_ins_from_one_address_get_429() {
    let b = Bridge::start("throttle", "", "auth_failure_limit = 3").await;
    let users_a = format!("{}/Users", b.base("a"));
    let users_nope = format!("{}/Users", b.base("nope"));
    let guesser = client_from("127.0.0.2");
    let other = client_from("127.0.0.1");

    for i in 0..3 {
        let r = get(&guesser, &users_a, Some(&format!("guess-{i}"))).await;
        r.assert_error(401);
    }
    for token in [Some("guess-4"), Some(TOK_A), None] {
        let r = get(&guesser, &users_a, token).await;
        r.assert_error(429);
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After on the 429")
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    let r = get(
        &guesser,
        &format!("{}/ServiceProviderConfig", b.base("a")),
        None,
    )
    .await;
    r.assert_error(429);
    // The same address on another tenant's path is not held: IdPs provision many customers
    // from shared addresses, and one customer's wrong token must not lock out the others.
    let r = get(&guesser, &format!("{}/Users", b.base("b")), Some(TOK_B)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    get(&guesser, &users_nope, Some("guess"))
        .await
        .assert_error(401);

    // Another address: served, and its own failures are its own.
    let r = get(&other, &users_a, Some(TOK_A)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    get(&other, &users_a, Some("wrong")).await.assert_error(401);
    let r = get(&other, &users_a, Some(TOK_A)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Health stays open to everyone.
    let r = get(&guesser, &format!("http://{}/healthz", b.addr()), None).await;
    assert_eq!(r.status, 200);

    // Behind a trusted proxy (the peer 127.0.0.1), each forwarded client counts for itself.
    let p = Bridge::start(
        "throttle behind a proxy",
        r#"trusted_proxies = ["127.0.0.1"]"#,
        "auth_failure_limit = 2",
    )
    .await;
    let url = format!("{}/Users", p.base("a"));
    let proxy = client_from("127.0.0.1");
    let via = |client_ip: &'static str, token: &'static str| {
        proxy
            .get(&url)
            .bearer_auth(token)
            .header("x-forwarded-for", client_ip)
    };
    for _ in 0..2 {
        send(via("198.51.100.7", "wrong")).await.assert_error(401);
    }
    send(via("198.51.100.7", "wrong")).await.assert_error(429);
    let r = send(via("198.51.100.8", TOK_A)).await;
    assert_eq!(r.status, 200, "another client behind the proxy: {}", r.body);
}

/// 5. Without a valid token, an unknown tenant and a known one answer alike: same status, body
///    and `WWW-Authenticate`; anonymous discovery is the same document for both.
#[tokio::test]
async fn unknown_and_known_tenants_answer_alike_without_a_valid_token() {
    let b = Bridge::start("enumeration", "", "auth_failure_limit = 0").await;
    let c = client();
    let root = format!("http://{}", b.addr());
    // `/scim/v2` is the `default` tenant's base, and none is configured here.
    let bases = [
        (b.base("a"), "/tenants/a/scim/v2"),
        (b.base("nope"), "/tenants/nope/scim/v2"),
        (format!("{root}/scim/v2"), "/scim/v2"),
    ];
    let foreign_jwt = scim_bridge::auth::issue_token(
        &scim_bridge::config::TenantId::parse("a").unwrap(),
        &scim_bridge::config::Secret::new("some-other-key-0123456789abcdefghij"),
        Duration::from_secs(600),
    )
    .unwrap();
    let jwt_of_b = scim_bridge::auth::issue_token(
        &scim_bridge::config::TenantId::parse("b").unwrap(),
        &scim_bridge::config::Secret::new(JWT_B),
        Duration::from_secs(600),
    )
    .unwrap();
    let authorizations: Vec<Option<String>> = vec![
        None,
        Some("Basic YTpi".into()),
        Some("Bearer".into()),
        Some("Bearer wrong-token".into()),
        Some(format!("Bearer {TOK_B}")),
        Some(format!("Bearer {foreign_jwt}")),
        Some(format!("Bearer {jwt_of_b}")),
    ];
    let requests: Vec<(reqwest::Method, &str, Option<Value>)> = vec![
        (reqwest::Method::GET, "/Users", None),
        (reqwest::Method::GET, "/Users/some-id", None),
        (reqwest::Method::POST, "/Users", Some(user("x@example.com"))),
        (reqwest::Method::POST, "/Groups/.search", Some(json!({}))),
        (reqwest::Method::DELETE, "/Groups/g", None),
        (reqwest::Method::GET, "/Nope", None),
        (reqwest::Method::POST, "/ServiceProviderConfig", None),
    ];
    for auth in &authorizations {
        for (method, path, body) in &requests {
            let mut answers = Vec::new();
            for (base, base_path) in &bases {
                let mut rb = c.request(method.clone(), format!("{base}{path}"));
                if let Some(a) = auth {
                    rb = rb.header("authorization", a);
                }
                if let Some(v) = body {
                    rb = rb
                        .header("content-type", "application/scim+json")
                        .body(v.to_string());
                }
                let r = send(rb).await;
                assert!(
                    r.status == 401 || r.status == 404 || r.status == 405,
                    "{method} {base}{path} with {auth:?}: {} {}",
                    r.status,
                    r.body
                );
                answers.push((
                    r.status,
                    r.body.replace(base_path, "<base>"),
                    r.header("www-authenticate"),
                    r.header("content-type"),
                    r.header("allow"),
                ));
            }
            assert!(
                answers.windows(2).all(|w| w[0] == w[1]),
                "{method} {path} with {auth:?} tells the tenants apart: {answers:#?}"
            );
            if auth.is_none() && *path == "/Users" {
                assert_eq!(answers[0].0, 401);
                assert_eq!(answers[0].2.as_deref(), Some("Bearer realm=\"SCIM\""));
            }
        }
    }

    // Discovery: without a token, one document for every tenant path; with a wrong token, the
    // same 401 as above.
    for endpoint in [
        "/ServiceProviderConfig",
        "/ResourceTypes",
        "/ResourceTypes/User",
        "/Schemas",
        "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
        "/Schemas/urn:nope",
    ] {
        let mut docs = Vec::new();
        for (base, base_path) in &bases {
            let r = get(&c, &format!("{base}{endpoint}"), None).await;
            assert!(
                r.status == 200 || r.status == 404,
                "{endpoint}: {}",
                r.status
            );
            docs.push((r.status, r.body.replace(base_path, "<base>")));
            let r = get(&c, &format!("{base}{endpoint}"), Some("wrong")).await;
            r.assert_error(401);
        }
        assert!(
            docs.windows(2).all(|w| w[0] == w[1]),
            "{endpoint} without a token tells the tenants apart: {docs:#?}"
        );
    }
    // With its token, a tenant's discovery answers (its own).
    let r = get(&c, &format!("{}/Schemas", b.base("a")), Some(TOK_A)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// 6. `X-Forwarded-*` and `Forwarded` are ignored unless the peer is a trusted proxy; the
///    request's own Host is validated and a bad one never reaches `Location`.
#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let c = client();
    let forged = |b: &Bridge, name: &str| {
        c.post(format!("{}/Users", b.base("a")))
            .bearer_auth(TOK_A)
            .header("content-type", "application/scim+json")
            .header("x-forwarded-host", "scim.example.com")
            .header("x-forwarded-proto", "https")
            .body(user(name).to_string())
    };

    // Not trusted (127.0.0.1 is not listed): the request's own host.
    let open = Bridge::start(
        "no trusted proxy",
        r#"trusted_proxies = ["10.0.0.0/8"]"#,
        "",
    )
    .await;
    let r = send(forged(&open, "plain@example.com")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let own = format!("http://{}/tenants/a/scim/v2/Users/", open.addr());
    let location = r.header("location").expect("Location");
    assert!(location.starts_with(&own), "{location}");
    assert_eq!(r.json()["meta"]["location"], json!(location));
    let r = send(
        c.get(format!("{}/ServiceProviderConfig", open.base("a")))
            .header("forwarded", "host=evil.example;proto=https"),
    )
    .await;
    assert!(!r.body.contains("evil"), "{}", r.body);

    // A Host that is not a plain host[:port] never reaches Location.
    for (i, host) in [
        "javascript://evil.example",
        "evil.example/x",
        "a@evil.example",
    ]
    .into_iter()
    .enumerate()
    {
        let body = user(&format!("host-{i}@example.com")).to_string();
        let mut s = TcpStream::connect(open.addr()).await.unwrap();
        let head = format!(
            "POST /tenants/a/scim/v2/Users HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {TOK_A}\r\nContent-Type: application/scim+json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let raw = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|got| panic!("no complete answer: {got}"));
        let (status, head, body) = parse_raw(&raw);
        assert!(status == 201 || status == 400, "{raw}");
        assert!(!head.contains("evil") && !body.contains("evil"), "{raw}");
        assert!(
            !head.contains("javascript") && !body.contains("javascript"),
            "{raw}"
        );
    }

    // Trusted: honoured; a forged value that is not a host or a scheme is still refused.
    let proxied = Bridge::start("trusted proxy", r#"trusted_proxies = ["127.0.0.1"]"#, "").await;
    let r = send(forged(&proxied, "proxied@example.com")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let want = format!("https://scim.example.com/tenants/a/scim/v2/Users/{id}");
    assert_eq!(r.header("location"), Some(want.clone()));
    assert_eq!(r.json()["meta"]["location"], json!(want));
    let r = send(
        c.post(format!("{}/Users", proxied.base("a")))
            .bearer_auth(TOK_A)
            .header("content-type", "application/scim+json")
            .header("x-forwarded-host", "javascript://evil.example")
            .header("x-forwarded-proto", "javascript")
            .body(user("js@example.com").to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r.header("location").unwrap();
    let own = format!("http://{}/tenants/a/scim/v2/Users/", proxied.addr());
    assert!(location.starts_with(&own), "{location}");
    assert!(!r.body.contains("evil"), "{}", r.body);
    let r = send(
        c.get(format!("{}/ServiceProviderConfig", proxied.base("a")))
            .header(
                "forwarded",
                "for=192.0.2.1;host=\"scim.example.org\";proto=https",
            ),
    )
    .await;
    assert_eq!(
        r.json()["meta"]["location"],
        json!("https://scim.example.org/tenants/a/scim/v2/ServiceProviderConfig")
    );
}

/// 7. A chunked body that stalls (a chunk of `{`, then nothing) gets 408 at the body-read
///    deadline and its connection is closed (the read sees EOF), as a stalled Content-Length
///    body's is: actix would otherwise keep the connection, waiting for the rest of the body.
#[tokio::test]
async fn a_stalled_chunked_body_gets_408_and_its_connection_closes() {
    let b = Bridge::start(
        "stalled chunked body",
        "",
        r#"body_read_timeout = "1s"
request_timeout = "10s""#,
    )
    .await;
    let addr = b.addr();
    for (label, first) in [("a chunk", "1\r\n{\r\n"), ("a chunk's size only", "40\r\n")] {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /tenants/a/scim/v2/Users HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOK_A}\r\n\
             Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n{first}"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let raw = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|got| panic!("{label}: the connection stays open after: {got:?}"));
        let took = started.elapsed();
        let (status, head, body) = parse_raw(&raw);
        assert_eq!(status, 408, "{label}: {raw}");
        assert!(head.contains("connection: close"), "{label}: {head}");
        let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| {
            // A chunked answer: the JSON sits between the chunk sizes.
            panic!("{label}: not a JSON body ({e}): {body:?}")
        });
        assert_eq!(v["status"], "408", "{v}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{label}: 408 after {took:?}, the deadline is 1 s"
        );
    }
    // The bridge still serves.
    let r = get(&client(), &format!("{}/Users", b.base("a")), Some(TOK_A)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The routes that never read a body (health, readiness, a path outside the SCIM tree) answer
/// at once and close: a stalled chunked body, which needs no token, must not hold the
/// connection while actix waits to drain it.
#[tokio::test]
async fn a_stalled_chunked_body_on_a_route_that_reads_none_is_not_waited_for() {
    let b = Bridge::start(
        "stalled chunked body, no body read",
        "",
        r#"body_read_timeout = "30s"
request_timeout = "60s""#,
    )
    .await;
    let addr = b.addr();
    for (method, path, want) in [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        // Another method on a probe route: its 405 must not wait for the body either.
        ("POST", "/healthz", 405),
        ("PUT", "/readyz", 405),
        ("POST", "/nothing", 404),
        ("GET", "/scim", 404),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // Far inside the 30 s body deadline: the answer does not wait for the body at all.
        let raw = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|got| {
                panic!("{method} {path}: the connection stays open after: {got:?}")
            });
        let (status, head, _) = parse_raw(&raw);
        assert_eq!(status, want, "{method} {path}: {raw}");
        assert!(
            head.contains("connection: close"),
            "{method} {path}: {head}"
        );
    }
    let r = get(&client(), &format!("{}/Users", b.base("a")), Some(TOK_A)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

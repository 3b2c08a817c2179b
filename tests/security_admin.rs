//! Issue 15, the admin listener's part, over real sockets against the bridge in this process:
//! revoking a JWT through the admin API (in effect from the very next SCIM request, audited in
//! the hash chain, refused to tenant tokens and bad input), and the admin listener's deadlines
//! (a slow or stalled body gets 408 and its connection closes, an oversized one 413, while
//! other admin requests are served).
//!
//! Deadlines are configured short (1 s) so the suite stays fast; every wait is bounded.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;

use scim_bridge::config::{Secret, TenantId};
use scim_bridge::server::RunningServer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin-token-for-the-security-suite-0123456789";
const TOK_A: &str = "tenant-a-token-0123456789abcdefghijklmnop";
const TOK_B: &str = "tenant-b-token-0123456789abcdefghijklmnop";
const JWT_A: &str = "tenant-a-jwt-signing-key-0123456789abcdef";

/// Tenant `a` (static token and JWT key) and `b` (static token only), both local; an admin
/// token; `limits` as the `[limits]` table's body.
fn config(dir: &std::path::Path, limits: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data}"

[admin]
listen = "127.0.0.1:0"
tokens = ["{ADMIN}"]

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
    async fn start(label: &str, limits: &str) -> Bridge {
        let dir = tempfile::tempdir().unwrap();
        let server = bridge::serve_toml(label, &config(dir.path(), limits)).await;
        Bridge {
            server: Some(server),
            _dir: dir,
        }
    }
    fn scim(&self, tenant: &str) -> String {
        format!(
            "http://{}/tenants/{tenant}/scim/v2",
            self.server.as_ref().unwrap().addr
        )
    }
    fn admin(&self) -> String {
        bridge::admin_root(self.server.as_ref().unwrap())
    }
    fn admin_addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().admin_addr().unwrap()
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

/// A JWT of tenant `a` (as `token issue` mints it) and its `jti`.
fn jwt_a() -> (String, String) {
    scim_bridge::auth::issue_token_with_jti(
        &TenantId::parse("a").unwrap(),
        &Secret::new(JWT_A),
        Duration::from_secs(3600),
        scim_bridge::config::DEFAULT_JWT_MAX_LIFETIME,
    )
    .unwrap()
}

async fn status_of(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    c.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// POST `body` (raw text) to the revoke endpoint of `tenant` as `token`: status and JSON.
async fn revoke(
    c: &reqwest::Client,
    b: &Bridge,
    tenant: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let r = c
        .post(format!(
            "{}/admin/api/tenants/{tenant}/tokens/revoke",
            b.admin()
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

#[tokio::test]
async fn a_jwt_revoked_through_the_admin_api_is_refused_at_once_and_audited() {
    let b = Bridge::start("revoke through the admin API", "").await;
    let c = client();
    let users = format!("{}/Users", b.scim("a"));
    let (jwt, jti) = jwt_a();
    let (other, _) = jwt_a();
    assert_eq!(status_of(&c, &users, &jwt).await, 200);

    // Refused before anything is written: no admin token, a tenant's token, a JWT.
    for token in ["", "wrong", TOK_A, jwt.as_str()] {
        let body = json!({"jti": jti}).to_string();
        let (s, v) = revoke(&c, &b, "a", token, &body).await;
        assert_eq!(s, 401, "{token:?}: {v}");
    }
    // Bad input: a 4xx naming the problem, never a 5xx.
    for (body, want, says) in [
        (json!({"jti": "has space"}).to_string(), 400, "jti"),
        (json!({"jti": ""}).to_string(), 400, "jti"),
        (json!({"jti": "x".repeat(257)}).to_string(), 400, "jti"),
        (
            json!({"jti": jti, "resaon": "typo"}).to_string(),
            400,
            "resaon",
        ),
        (json!({"reason": "no jti"}).to_string(), 400, "jti"),
        ("not json".to_string(), 400, "JSON"),
        (String::new(), 400, "JSON"),
        (
            json!({"jti": jti, "reason": "two\nlines"}).to_string(),
            400,
            "reason",
        ),
    ] {
        let (s, v) = revoke(&c, &b, "a", ADMIN, &body).await;
        assert_eq!(s, want, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let (s, v) = revoke(&c, &b, "nope", ADMIN, &json!({"jti": jti}).to_string()).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = revoke(&c, &b, "b", ADMIN, &json!({"jti": jti}).to_string()).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no jwt_secret"),
        "{v}"
    );
    assert_eq!(
        status_of(&c, &users, &jwt).await,
        200,
        "nothing was revoked yet"
    );

    // The revocation: the very next request with the token is refused; others still work.
    let body = json!({"jti": jti, "reason": "leaked in ticket SEC-1"}).to_string();
    let (s, v) = revoke(&c, &b, "a", ADMIN, &body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["already"], json!(false));
    assert_eq!(v["revocation"]["jti"], json!(jti));
    assert_eq!(v["revocation"]["reason"], json!("leaked in ticket SEC-1"));
    assert_eq!(status_of(&c, &users, &jwt).await, 401);
    assert_eq!(status_of(&c, &users, &other).await, 200);
    assert_eq!(status_of(&c, &users, TOK_A).await, 200);
    // Again: the first record stands, and no second audit entry is written.
    let (s, v) = revoke(&c, &b, "a", ADMIN, &json!({"jti": jti}).to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["already"], json!(true));
    assert_eq!(v["revocation"]["reason"], json!("leaked in ticket SEC-1"));

    // The list.
    let r = c
        .get(format!("{}/admin/api/tenants/a/tokens/revoked", b.admin()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["jwt"], json!(true));
    let list = v["revoked"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["jti"], json!(jti));
    for (tenant, token, want) in [("a", TOK_A, 401), ("nope", ADMIN, 404)] {
        let r = c
            .get(format!(
                "{}/admin/api/tenants/{tenant}/tokens/revoked",
                b.admin()
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{tenant}");
    }

    // The audit log: one entry, actor operator, with the jti and the reason and no token.
    let export = c
        .get(format!("{}/admin/api/audit/export?tenant=a", b.admin()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let entries: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["event"] == "token_revoked")
        .collect();
    assert_eq!(entries.len(), 1, "{export}");
    let e = &entries[0];
    assert_eq!(e["actor"], json!("operator"), "{e}");
    assert_eq!(e["after"]["jti"], json!(jti), "{e}");
    assert_eq!(e["detail"], json!("leaked in ticket SEC-1"), "{e}");
    assert!(!export.contains(&jwt) && !export.contains(JWT_A) && !export.contains(TOK_A));
    // The page filter knows the event; the chain verifies.
    let r = c
        .get(format!(
            "{}/admin/api/audit?tenant=a&event=token_revoked&actor=operator",
            b.admin()
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["total"], json!(1), "{page}");
    let r = c
        .get(format!("{}/admin/api/audit/verify", b.admin()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let verify: Value = r.json().await.unwrap();
    assert_eq!(verify["ok"], json!(true), "{verify}");
}

/// Everything the server sends until it closes the connection (a reset after the answer counts
/// as closed); `Err` with what came if it is still open after `limit`.
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

/// Status and lower-cased head of a raw HTTP/1.1 answer.
fn status_and_head(raw: &str) -> (u16, String) {
    let (head, _) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not a complete answer: {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head.to_ascii_lowercase())
}

/// A revoke POST's head with `framing` (a Content-Length or Transfer-Encoding line).
fn revoke_head(addr: SocketAddr, framing: &str) -> String {
    format!(
        "POST /admin/api/tenants/a/tokens/revoke HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_slow_admin_body_gets_408_and_its_connection_closes_while_others_are_served() {
    let b = Bridge::start(
        "admin deadlines",
        r#"body_read_timeout = "1s"
request_timeout = "10s""#,
    )
    .await;
    let addr = b.admin_addr();
    let started = Instant::now();

    // One announces 100 bytes and sends `{`; one sends a chunk and stalls; one trickles a
    // byte a second.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all((revoke_head(addr, "Content-Length: 100") + "{").as_bytes())
        .await
        .unwrap();
    let mut chunked = TcpStream::connect(addr).await.unwrap();
    chunked
        .write_all((revoke_head(addr, "Transfer-Encoding: chunked") + "1\r\n{\r\n").as_bytes())
        .await
        .unwrap();
    let trickle = TcpStream::connect(addr).await.unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    trickle_write
        .write_all(revoke_head(addr, "Content-Length: 100").as_bytes())
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        for _ in 0..20 {
            if trickle_write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    // Meanwhile the admin listener answers, promptly: the API, /metrics, a revocation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = client();
    let asked = Instant::now();
    let r = c
        .get(format!("{}/admin/api/tenants", b.admin()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .get(format!("{}/metrics", b.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, v) = revoke(&c, &b, "a", ADMIN, &json!({"jti": "meanwhile"}).to_string()).await;
    assert_eq!(s, 201, "{v}");
    assert!(
        asked.elapsed() < Duration::from_millis(800),
        "the admin listener waited {:?} behind the slow bodies",
        asked.elapsed()
    );

    for (label, stream) in [("stalled", &mut stalled), ("chunked", &mut chunked)] {
        let raw = read_until_closed(stream, Duration::from_secs(5))
            .await
            .unwrap_or_else(|got| panic!("{label}: the connection stays open after {got:?}"));
        let took = started.elapsed();
        let (status, head) = status_and_head(&raw);
        assert_eq!(status, 408, "{label}: {raw}");
        assert!(head.contains("connection: close"), "{label}: {head}");
        assert!(raw.contains("did not arrive in time"), "{label}: {raw}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{label}: 408 after {took:?}, the deadline is 1 s"
        );
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match trickle_read.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => {
                    break
                }
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the trickling connection was not closed");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    assert_eq!(status_and_head(&raw).0, 408, "{raw}");
    trickler.abort();

    // An oversized body is refused at once, unread, and its connection closed.
    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(revoke_head(addr, "Content-Length: 1000000").as_bytes())
        .await
        .unwrap();
    let raw = read_until_closed(&mut big, Duration::from_secs(3))
        .await
        .unwrap_or_else(|got| panic!("the oversized body's connection stays open: {got:?}"));
    let (status, head) = status_and_head(&raw);
    assert_eq!(status, 413, "{raw}");
    assert!(head.contains("connection: close"), "{head}");

    // None of those wrote anything; the listener still serves.
    let r = c
        .get(format!("{}/admin/api/tenants/a/tokens/revoked", b.admin()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["revoked"].as_array().unwrap().len(), 1, "{v}");
}

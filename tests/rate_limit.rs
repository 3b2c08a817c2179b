//! Issue 14, inbound protection: `[limits] tenant_rate` / `tenant_burst`, over real sockets.
//! A tenant over its rate is answered 429 with `Retry-After` and a SCIM Error body, another
//! tenant at the same time is not affected, the tenant is served again after the wait, and
//! requests without a valid token neither spend a tenant's budget nor answer differently for a
//! known tenant than for an unknown one (issue 15's no-enumeration rule).

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;

use scim_bridge::server::RunningServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TOK_ACME: &str = "acme-token-0123456789abcdefghijklmnopqrs";
const TOK_GLOBEX: &str = "globex-token-0123456789abcdefghijklmnopq";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Two local tenants, `acme` and `globex`, with `limits` as the `[limits]` table's body.
fn two_tenants(dir: &std::path::Path, limits: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data}"

[limits]
{limits}

[[tenants]]
id = "acme"
tokens = ["{TOK_ACME}"]

[tenants.vendor]
kind = "local"

[[tenants]]
id = "globex"
tokens = ["{TOK_GLOBEX}"]

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
        let server = bridge::serve_toml(label, &two_tenants(dir.path(), limits)).await;
        Bridge {
            server: Some(server),
            _dir: dir,
        }
    }

    fn users(&self, tenant: &str) -> String {
        format!(
            "http://{}/tenants/{tenant}/scim/v2/Users",
            self.server.as_ref().unwrap().addr
        )
    }

    fn admin_root(&self) -> String {
        bridge::admin_root(self.server.as_ref().unwrap())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            drop(s.handle.stop(false));
        }
    }
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: String,
}

impl Answer {
    /// An RFC 7644 §3.12 Error body with `status`.
    fn assert_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let v: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body));
        assert_eq!(v["schemas"], json!([ERROR]), "{v}");
        assert_eq!(v["status"], json!(status.to_string()), "{v}");
        v
    }

    /// A 429 over the tenant's rate: its wait in whole seconds, at least 1.
    fn assert_rate_limited(&self) -> u64 {
        let v = self.assert_error(429);
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("too many requests"), "{v}");
        // Generic: it names no tenant.
        assert!(
            !detail.contains("acme") && !detail.contains("globex"),
            "{v}"
        );
        let retry: u64 = self
            .retry_after
            .as_deref()
            .expect("Retry-After on the 429")
            .parse()
            .expect("Retry-After in whole seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        retry
    }
}

async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> Answer {
    let mut rb = c.get(url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.expect("the bridge answers");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: r.status().as_u16(),
        retry_after: header("retry-after"),
        www_authenticate: header("www-authenticate"),
        body: r.text().await.unwrap(),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `n` GETs of `url` with `token`, all sent at once.
async fn flood(c: &reqwest::Client, url: &str, token: &str, n: usize) -> Vec<Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, url, token) = (c.clone(), url.to_string(), token.to_string());
            tokio::spawn(async move { get(&c, &url, Some(&token)).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// 1. A burst of one tenant's requests beyond its bucket gets 429s with `Retry-After` and a
///    SCIM Error body; the other tenant, sending at the same time, gets only 200s; after the
///    wait, the first is served again. Meanwhile a request without a valid token still gets the
///    same 401 for the throttled tenant as for an unknown one.
#[tokio::test]
async fn over_its_rate_a_tenant_gets_429_with_retry_after_and_others_are_unaffected() {
    let b = Bridge::start(
        "rate",
        "tenant_rate = 5\ntenant_burst = 5\nauth_failure_limit = 0",
    )
    .await;
    let c = client();
    let (acme, globex) = (b.users("acme"), b.users("globex"));

    // globex sends at 4/s, under its own rate, while acme floods.
    let globex_task = {
        let (c, url) = (c.clone(), globex.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..8 {
                out.push(get(&c, &url, Some(TOK_GLOBEX)).await);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            out
        })
    };
    let started = Instant::now();
    let answers = flood(&c, &acme, TOK_ACME, 30).await;
    let took = started.elapsed();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let mut refused = 0;
    let mut wait = 0;
    for a in &answers {
        if a.status != 200 {
            wait = wait.max(a.assert_rate_limited());
            refused += 1;
        }
    }
    // The bucket holds 5 and refills at 5/s: at least the burst is served, and no more than
    // the bucket could have given over the time the flood took.
    let most = 5 + (5.0 * took.as_secs_f64()).ceil() as usize;
    assert!(
        (5..=most).contains(&ok),
        "acme served {ok} of 30 in {took:?} (bucket 5, 5/s: at most {most})"
    );
    assert!(refused > 0, "acme was never refused");
    assert_eq!(ok + refused, 30);

    // Without a valid token, the throttled tenant and an unknown one answer alike (401, not
    // 429): the rate limit tells nothing about which tenants exist.
    let known = get(&c, &acme, Some("wrong-token")).await;
    let unknown = get(&c, &b.users("initech"), Some("wrong-token")).await;
    known.assert_error(401);
    assert_eq!(
        (known.status, &known.body, &known.www_authenticate),
        (unknown.status, &unknown.body, &unknown.www_authenticate)
    );

    for (i, a) in globex_task.await.unwrap().iter().enumerate() {
        assert_eq!(a.status, 200, "globex request {i}: {}", a.body);
    }

    // After Retry-After, acme is served again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = get(&c, &acme, Some(TOK_ACME)).await;
    assert_eq!(r.status, 200, "after Retry-After {wait} s: {}", r.body);

    // The admin listener counts the refusals, by tenant.
    let admin = b.admin_root();
    let counted = bridge::metric(&admin, "scim_rate_limited_total{tenant=\"acme\"}").await;
    assert!(
        counted >= refused as f64,
        "counted {counted}, refused {refused}"
    );
    let counted = bridge::metric(&admin, "scim_rate_limited_total{tenant=\"globex\"}").await;
    assert_eq!(counted, 0.0);
}

/// 2. Requests without a valid token (a wrong one, none, an unknown tenant's path) do not
///    spend the tenant's budget: after 50 of them, its own requests still get their burst,
///    and only then is it held to its rate.
#[tokio::test]
async fn requests_without_a_valid_token_do_not_spend_the_tenants_budget() {
    let b = Bridge::start(
        "rate unauthenticated",
        "tenant_rate = 5\ntenant_burst = 5\nauth_failure_limit = 0",
    )
    .await;
    let c = client();
    let acme = b.users("acme");
    for i in 0..50 {
        let token = match i % 3 {
            0 => None,
            1 => Some("not-the-token"),
            _ => Some(TOK_GLOBEX),
        };
        get(&c, &acme, token).await.assert_error(401);
    }
    for i in 0..5 {
        let r = get(&c, &acme, Some(TOK_ACME)).await;
        assert_eq!(r.status, 200, "acme request {i} of its burst: {}", r.body);
    }
    let answers = flood(&c, &acme, TOK_ACME, 10).await;
    let refused = answers.iter().filter(|a| a.status == 429).count();
    assert!(refused > 0, "the bucket was not spent by the burst");
    for a in answers.iter().filter(|a| a.status != 200) {
        a.assert_rate_limited();
    }
}

/// 3. Without `tenant_rate` (the default), nothing is refused for its rate.
#[tokio::test]
async fn without_a_tenant_rate_nothing_is_refused() {
    let b = Bridge::start("rate off", "").await;
    let c = client();
    for a in flood(&c, &b.users("acme"), TOK_ACME, 40).await {
        assert_eq!(a.status, 200, "{}", a.body);
    }
}

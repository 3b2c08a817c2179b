//! ThoughtSpot connector benchmark, against the ThoughtSpot simulator (REST API v2.0) with 20 ms
//! latency. Built like `benches/tableau.rs` (same phases, figures and knobs; the code is kept
//! parallel to it rather than shared, since benches are separate crates):
//!
//! 1. `provision`: N users (default 10,000) created through the bridge (SCIM `POST /Users` at
//!    IdP concurrency 16; a ThoughtSpot tenant in the Primary Org signed in with the trusted-auth
//!    secret key, **no role rules and no attribute mappings**, so one create is one vendor call)
//!    against what a hand-written integration sends for the same users, at the same concurrency,
//!    to an identical simulator: one `users/create` with name, display name, email and
//!    `account_status` (the same body as the bridge's). Side by side in rounds that start
//!    together, as for Tableau (`THOUGHTSPOT_BENCH_ALTERNATE=1`: one after the other,
//!    alternating); the bridge's time of a round lasts until its outbox is empty. Target: the
//!    bridge takes at most 1.10× the direct time.
//!
//!    **Fairness.** ThoughtSpot allows 100 requests/s per client with a burst of 10, then 429
//!    [B.7]; the bridge's client holds itself to 90 req/s, burst 10
//!    (`connector::thoughtspot::client_settings`). At 20 ms and concurrency 16 either side could
//!    send about 800 req/s, so the rate limit, not the work, sets both times. The comparison
//!    gives the hand-written integration the same budget as the bridge: its calls go through a
//!    token bucket of 90 req/s, burst 10 (the bridge's), and both simulators enforce
//!    ThoughtSpot's real limit (100 req/s, burst 10), so a side that overran it would pay for
//!    its 429s (the direct side backs off 1/2/4 s as ThoughtSpot's SDK does; 429s are counted
//!    in its calls per user). The ratio then measures the bridge's own cost (SCIM handling,
//!    store, outbox, pacing) at an equal vendor budget. Variants: `THOUGHTSPOT_BENCH_DIRECT_RPS`
//!    (default 90; 0 = unpaced, which at the simulator's limit means 429s and back-offs) and
//!    `THOUGHTSPOT_BENCH_SIM_RPS` (the simulators' `thoughtspot.rate_limit_rps`, default 100;
//!    0 = no limit). 10,000 creates at 90/s take about 2 minutes per side (run side by side).
//!    Figures: both wall times, the ratio (and per round), vendor calls per created user
//!    (`/__sim/stats`, 429s included), and the end state read back from both simulators (every
//!    user there once, ACTIVE, with its display name and email);
//! 2. `sync`: a simulator holding M users (default 100,000), then one full observe by the
//!    bridge's engine — the first observe at start, which adopts every user — reading the whole
//!    Org (users in pages of 1,000, groups, the mapped formula variable's values) through a proxy
//!    that adds the 20 ms latency. The tenant here is the example config's: RBAC roles through
//!    role groups (default Viewer, BI Admins → Analyst) and one formula variable (`region` ←
//!    enterprise `division`). Seeding, before timing, on the simulator with no latency and its
//!    rate limit off: the role groups are made by the engine's role resolution (as at start),
//!    then each user by one `users/create` already in the Viewer role group (what the rules say,
//!    so the observe corrects nothing), then the `region` values in batches of 1,000 per
//!    `update-values`. Figures: the seeding time, the observe's time (and how much was the
//!    fetch), vendor calls by route; then lookups by userName through the bridge (answered from
//!    its index: 0 vendor calls) and a second observe with nothing changed. The bridge's own
//!    client stays under 90 req/s whatever the simulator allows; the observe reads its pages one
//!    after the other, well under that.
//!
//! `cargo bench --bench thoughtspot [-- provision|sync ...]` (no argument: both, at the default
//! sizes). Sizes via the environment: `THOUGHTSPOT_BENCH_USERS` (provision, default 10,000),
//! `THOUGHTSPOT_BENCH_ROUNDS` (provision rounds, default 4), `THOUGHTSPOT_BENCH_SYNC_USERS`
//! (sync, default 100,000). The bridge's own settings apply as usual.
//!
//! [B.n] is vendors-tableau-thoughtspot.md part B.

use scim_bridge::config::{
    Config, RoleRule, RoleRules, Secret, TenantConfig, TenantId, ThoughtspotAuth, Url, VendorConfig,
};
use scim_bridge::server::{self, RunningServer};
use scim_bridge::sim::{self, RunningSim, SimOptions, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 16;
const LATENCY_MS: u64 = 20;
/// Bridge time over direct time, at most (the issue).
const PROVISION_TARGET: f64 = 1.10;
const TENANT: &str = "acme-thoughtspot";
const TOKEN: &str = "bench-token-thoughtspot-0123456789";
/// The simulator's administrator and its defaults (`scim-bridge simulate thoughtspot`).
const ADMIN: &str = "tsadmin";
const ADMIN_PASSWORD: &str = "admin";
const SECRET_KEY: &str = "simulator-secret-key";
/// The bridge's budget (`connector::thoughtspot::client_settings`), given to the direct side.
const BRIDGE_RPS: f64 = 90.0;
const BRIDGE_BURST: f64 = 10.0;
/// ThoughtSpot's own limit [B.7], the simulator's default.
const VENDOR_RPS: f64 = 100.0;
/// The formula variable of the sync tenant (seeded by the simulator).
const VARIABLE: &str = "region";
const REGIONS: [&str; 3] = ["EMEA", "AMER", "APJ"];

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A simulator with `latency_ms` and ThoughtSpot's rate limit at `rate_rps` (0: off).
async fn spawn_sim(latency_ms: u64, rate_rps: f64) -> RunningSim {
    sim::start(
        Vendor::Thoughtspot,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            latency_ms,
            switches: vec![("thoughtspot.rate_limit_rps".into(), format!("{rate_rps}"))],
            ..SimOptions::default()
        },
    )
    .await
    .expect("the ThoughtSpot simulator starts")
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        // ThoughtSpot requires a User-Agent [B.1].
        .user_agent("thoughtspot-bench/1")
        .build()
        .unwrap()
}

/// Runs `job(i)` for i in `range` on `CONCURRENCY` workers; returns the wall time.
async fn run_parallel<F, Fut>(range: std::ops::Range<usize>, job: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end {
                        return;
                    }
                    job(i).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    started.elapsed()
}

async fn sim_stats(base: &str) -> Value {
    reqwest::get(format!("{base}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn reset_stats(base: &str) {
    reqwest::Client::new()
        .delete(format!("{base}/__sim/stats"))
        .send()
        .await
        .unwrap();
}

/// `by_route` of `/__sim/stats`, as `route: n` pairs.
fn routes(stats: &Value) -> String {
    stats["by_route"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// ThoughtSpot's REST API v2.0, as a hand-written integration calls it

/// A token bucket like the bridge's (`RateBudget` without its adaptation): `rate` a second,
/// at most `burst` stored; a caller reserves its token and sleeps until it has accrued.
struct Pace {
    rate: f64,
    burst: f64,
    state: parking_lot::Mutex<(f64, Instant)>,
}

impl Pace {
    /// `rate` ≤ 0: unpaced.
    fn new(rate: f64, burst: f64) -> Arc<Pace> {
        Arc::new(Pace {
            rate,
            burst,
            state: parking_lot::Mutex::new((burst, Instant::now())),
        })
    }

    async fn take(&self) {
        if self.rate <= 0.0 {
            return;
        }
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
            s.1 = now;
            s.0 -= 1.0;
            if s.0 >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-s.0 / self.rate)
        };
        tokio::time::sleep(wait).await;
    }
}

#[derive(Clone)]
struct TsApi {
    http: reqwest::Client,
    /// `{base}/api/rest/2.0`
    api: String,
    bearer: String,
    pace: Arc<Pace>,
    /// 429s answered to this client.
    throttled: Arc<AtomicUsize>,
}

impl TsApi {
    /// `auth/token/full` in the Primary Org with `credentials` (secret key or password).
    async fn sign_in(base: &str, credentials: Value, pace: Arc<Pace>) -> TsApi {
        let http = http_client();
        let api = format!("{base}/api/rest/2.0");
        let mut body = json!({"username": ADMIN, "org_id": 0, "validity_time_in_sec": 3600});
        for (k, v) in credentials.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = http
            .post(format!("{api}/auth/token/full"))
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "sign-in");
        let v: Value = r.json().await.unwrap();
        TsApi {
            http,
            api,
            bearer: v["token"].as_str().unwrap().to_string(),
            pace,
            throttled: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// With the trusted-auth secret key, as the bridge's tenant.
    async fn secret_key(base: &str, pace: Arc<Pace>) -> TsApi {
        TsApi::sign_in(base, json!({ "secret_key": SECRET_KEY }), pace).await
    }

    /// With the administrator's password, unpaced (reading the end state, seeding).
    async fn admin(base: &str) -> TsApi {
        TsApi::sign_in(
            base,
            json!({ "password": ADMIN_PASSWORD }),
            Pace::new(0.0, 1.0),
        )
        .await
    }

    /// POST `{api}/{path}` with `body`; a 429 is retried after 1, 2, 4, 8 s (as ThoughtSpot's
    /// SDK backs off [B.7]).
    async fn call(&self, path: &str, body: Value) -> (u16, Value) {
        let mut backoff = Duration::from_secs(1);
        loop {
            self.pace.take().await;
            let r = self
                .http
                .post(format!("{}/{path}", self.api))
                .bearer_auth(&self.bearer)
                .header("accept", "application/json")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            if status == 429 {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
                continue;
            }
            return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
        }
    }

    /// One `users/create`: the body the bridge sends (no welcome or activation email), in
    /// `groups` when given.
    async fn create_user(&self, name: &str, display_name: &str, email: &str, groups: &[String]) {
        let mut body = json!({
            "name": name,
            "display_name": display_name,
            "email": email,
            "account_status": "ACTIVE",
            "trigger_welcome_email": false,
            "trigger_activation_email": false,
        });
        if !groups.is_empty() {
            body["group_identifiers"] = json!(groups);
        }
        let (s, v) = self.call("users/create", body).await;
        assert_eq!(s, 200, "users/create {name}: {v}");
    }

    /// Every user of the Org (pages of 1,000 until a short one).
    async fn users(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let (s, v) = self
                .call(
                    "users/search",
                    json!({"record_offset": out.len(), "record_size": 1000}),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            let page = v.as_array().cloned().unwrap_or_default();
            let n = page.len();
            out.extend(page);
            if n < 1000 {
                return out;
            }
        }
    }

    /// The id of the group named `name`.
    async fn group_id(&self, name: &str) -> String {
        let (s, v) = self
            .call(
                "groups/search",
                json!({"group_identifier": name, "include_users": false}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no group {name}: {v}"))
            .to_string()
    }
}

/// Checks the end state at one simulator: `n` users named `{prefix}{i:06}@bench.test`, each
/// once, ACTIVE, with the display name and email the IdP sent. Returns a one-line summary.
async fn check_end_state(base: &str, prefix: &str, n: usize) -> String {
    let api = TsApi::admin(base).await;
    let users = api.users().await;
    let mut seen = BTreeMap::new();
    let mut bad = Vec::new();
    for u in &users {
        let Some(name) = u["name"].as_str() else {
            continue;
        };
        if !(name.starts_with(prefix) && name.ends_with("@bench.test")) {
            continue;
        }
        *seen.entry(name.to_string()).or_insert(0) += 1;
        if u["account_status"] != "ACTIVE" || u["display_name"] != "B Ench" || u["email"] != name {
            bad.push(u.clone());
        }
    }
    let dup = seen.values().filter(|c| **c > 1).count();
    assert_eq!(seen.len(), n, "every user at ThoughtSpot ({prefix})");
    assert_eq!(dup, 0, "no user twice ({prefix})");
    assert!(
        bad.is_empty(),
        "{} users without the full profile ({prefix}), e.g. {}",
        bad.len(),
        bad[0]
    );
    format!("{n} users, each once, ACTIVE, with display_name and email")
}

// ---------------------------------------------------------------------------------------------
// The bridge

/// The example config's rules: RBAC roles through the bridge's role groups.
fn example_rules() -> RoleRules {
    RoleRules {
        default: Some("Viewer".into()),
        rules: vec![RoleRule {
            group: Some("BI Admins".into()),
            role: "Analyst".into(),
        }],
    }
}

/// A ThoughtSpot tenant in the Primary Org of the simulator at `base`, signed in with the
/// trusted-auth secret key; `roles` and the `region` variable mapping when `mapped`.
fn tenant(base: &str, roles: RoleRules, mapped: bool) -> TenantConfig {
    let mut attributes = BTreeMap::new();
    if mapped {
        attributes.insert(
            VARIABLE.to_string(),
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division".to_string(),
        );
    }
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor: VendorConfig::Thoughtspot {
            base_url: Url::parse(&format!("{base}/")).unwrap(),
            username: ADMIN.into(),
            auth: ThoughtspotAuth::SecretKey(Secret::new(SECRET_KEY)),
            org_id: 0,
            token_validity_s: scim_bridge::config::DEFAULT_THOUGHTSPOT_TOKEN_VALIDITY_S,
            orgs: None,
        },
        roles,
        on_vendor_unavailable: Default::default(),
        attributes,
    }
}

/// The tenant's SCIM client (the IdP).
#[derive(Clone)]
struct Scim {
    http: reqwest::Client,
    /// `http://{bridge}`
    root: String,
}

impl Scim {
    fn new(addr: std::net::SocketAddr) -> Scim {
        Scim {
            http: http_client(),
            root: format!("http://{addr}"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self
            .http
            .request(
                method,
                format!("{}/tenants/{TENANT}/scim/v2{path}", self.root),
            )
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The IdP's create of `mail` (Okta's shape: name, primary email, active).
    async fn create(&self, mail: &str) {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/Users",
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": mail,
                    "name": {"givenName": "B", "familyName": "Ench"},
                    "emails": [{"value": mail, "type": "work", "primary": true}],
                    "active": true
                })),
            )
            .await;
        assert_eq!(s, 201, "POST /Users {mail}: {v}");
    }

    async fn find(&self, user_name: &str) -> bool {
        let filter = format!("userName eq \"{user_name}\"");
        let path = format!(
            "/Users?filter={}",
            percent_encoding::utf8_percent_encode(&filter, percent_encoding::NON_ALPHANUMERIC)
        );
        let (s, v) = self.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(s, 200, "{v}");
        v["totalResults"] == 1
    }

    /// Until `/readyz?verbose` says every vendor was reached and read once.
    async fn wait_ready(&self) {
        for _ in 0..600 {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz?verbose", self.root))
                .send()
                .await
            {
                if r.status().is_success() {
                    let body: Value = r.json().await.unwrap_or_default();
                    if body["vendors_unavailable"]
                        .as_object()
                        .is_some_and(|o| o.is_empty())
                    {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the bridge is not ready");
    }

    /// The sum of the `/metrics` samples of `name` whose labels contain `labels`.
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.root))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Until the outbox has nothing pending or failed.
    async fn wait_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let pending = self.metric("scim_outbox_depth", "state=\"pending\"").await;
            let failed = self.metric("scim_outbox_depth", "state=\"failed\"").await;
            assert_eq!(failed, 0.0, "a delivery failed");
            if pending == 0.0 {
                return;
            }
            assert!(Instant::now() < deadline, "the outbox did not drain");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The bridge as `serve` starts it (start-up check, first observe, background delivery), with
/// one ThoughtSpot tenant (no role rules, no mapped attributes) over the simulator at `base`.
async fn start_bridge(base: &str, data: &std::path::Path) -> (RunningServer, Scim) {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_path_buf(),
        tenants: vec![tenant(base, RoleRules::default(), false)],
        body_limit_bytes: 1 << 20,
    };
    let store = Store::open(&config.data_dir).unwrap();
    let cfg = config.clone();
    // build_state signs in to ThoughtSpot synchronously; keep it off the async workers.
    let state = tokio::task::spawn_blocking(move || server::build_state(&cfg, store))
        .await
        .unwrap()
        .expect("the bridge starts");
    let server = server::start(config.listen, state, Some(2)).expect("the bridge listens");
    let scim = Scim::new(server.addr);
    scim.wait_ready().await;
    (server, scim)
}

// ---------------------------------------------------------------------------------------------
// provision

async fn provision(n: usize, rounds: usize, alternate: bool, direct_rps: f64, sim_rps: f64) {
    let rounds = rounds.clamp(1, n.max(1));
    // Two identical simulators: one for the hand-written integration, one behind the bridge.
    let direct_sim = spawn_sim(LATENCY_MS, sim_rps).await;
    let bridge_sim = spawn_sim(LATENCY_MS, sim_rps).await;
    let (db, bb) = (direct_sim.base_url(), bridge_sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let (server, scim) = start_bridge(&bb, dir.path()).await;
    let api = TsApi::secret_key(&db, Pace::new(direct_rps, BRIDGE_BURST)).await;
    // Both buckets full again after the start-up calls.
    tokio::time::sleep(Duration::from_secs(1)).await;
    reset_stats(&db).await;
    reset_stats(&bb).await;

    let mut direct = Duration::ZERO;
    let mut bridge = Duration::ZERO;
    let mut per_round = Vec::new();
    for r in 0..rounds {
        let range = r * n / rounds..(r + 1) * n / rounds;
        let run_direct = || {
            let api = api.clone();
            run_parallel(range.clone(), move |i| {
                let api = api.clone();
                async move {
                    let mail = format!("d{i:06}@bench.test");
                    api.create_user(&mail, "B Ench", &mail, &[]).await;
                }
            })
        };
        let run_bridge = || {
            let scim = scim.clone();
            let range = range.clone();
            async move {
                let started = Instant::now();
                let s = scim.clone();
                run_parallel(range, move |i| {
                    let s = s.clone();
                    async move { s.create(&format!("b{i:06}@bench.test")).await }
                })
                .await;
                // Every call of every create made, not only answered.
                scim.wait_drained().await;
                started.elapsed()
            }
        };
        let (d, b) = if !alternate {
            tokio::join!(run_direct(), run_bridge())
        } else if r % 2 == 0 {
            let d = run_direct().await;
            (d, run_bridge().await)
        } else {
            let b = run_bridge().await;
            (run_direct().await, b)
        };
        direct += d;
        bridge += b;
        per_round.push((range.len(), d, b));
    }
    let dstats = sim_stats(&db).await;
    let bstats = sim_stats(&bb).await;
    let bridge_calls = bstats["requests"].as_u64().unwrap();
    let direct_calls = dstats["requests"].as_u64().unwrap();
    let direct_429 = api.throttled.load(Ordering::Relaxed);
    let delivered = scim
        .metric("scim_vendor_deliveries_total", "outcome=\"delivered\"")
        .await;
    let refused = scim
        .metric("scim_vendor_deliveries_total", "outcome=\"refused\"")
        .await;
    let direct_state = check_end_state(&db, "d", n).await;
    let bridge_state = check_end_state(&bb, "b", n).await;

    let ratio = secs(bridge) / secs(direct);
    let rounds_text = per_round
        .iter()
        .enumerate()
        .map(|(k, (len, d, b))| {
            format!(
                "{}{len}: {:.2} s / {:.2} s = {:.3}",
                match (alternate, k % 2) {
                    (false, _) => "",
                    (true, 0) => "direct first, ",
                    (true, _) => "bridge first, ",
                },
                secs(*b),
                secs(*d),
                secs(*b) / secs(*d)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let rate = |r: f64| {
        if r > 0.0 {
            format!("{r:.0} req/s")
        } else {
            "unlimited".into()
        }
    };
    println!(
        "provision {n} users, concurrency {CONCURRENCY} each, vendor latency {LATENCY_MS} ms, \
         {rounds} rounds, {}; no role rules or attributes (1 call per create expected); \
         simulators' limit {} (burst 10), direct client paced at {} (burst {BRIDGE_BURST}), \
         bridge's client {BRIDGE_RPS:.0} req/s (burst {BRIDGE_BURST}):\n  \
         direct vendor calls (users/create)      {:>7.2} s ({:.0} users/s), \
         {:.2} vendor calls/user ({direct_429} answered 429)\n  \
         through the bridge (SCIM POST /Users)   {:>7.2} s ({:.0} users/s), \
         {:.2} vendor calls/user\n  \
         ratio {ratio:.3} (target ≤ {PROVISION_TARGET:.2}: {})\n  \
         rounds (bridge / direct): {rounds_text}\n  \
         bridge's vendor calls by route: {}\n  \
         bridge deliveries: {delivered} delivered, {refused} refused\n  \
         end state: direct {direct_state}; bridge {bridge_state}",
        if alternate {
            "direct and bridge one after the other, alternating"
        } else {
            "direct and bridge side by side"
        },
        rate(sim_rps),
        rate(direct_rps),
        secs(direct),
        n as f64 / secs(direct),
        direct_calls as f64 / n as f64,
        secs(bridge),
        n as f64 / secs(bridge),
        bridge_calls as f64 / n as f64,
        verdict(ratio <= PROVISION_TARGET),
        routes(&bstats),
    );
    server.stop().await;
    direct_sim.stop().await;
    bridge_sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// sync

/// Adds `m` users named `s{i}@bench.test` (display name, email, in `role_group`) with one
/// `users/create` each, then their `region` values, 1,000 per `update-values`; on a simulator
/// with no latency and no rate limit.
async fn seed(base: &str, m: usize, role_group: String) -> (Duration, Duration) {
    let api = TsApi::admin(base).await;
    let started = Instant::now();
    let a = api.clone();
    run_parallel(0..m, move |i| {
        let (api, group) = (a.clone(), role_group.clone());
        async move {
            let mail = format!("s{i}@bench.test");
            api.create_user(&mail, "S Ync", &mail, &[group]).await;
        }
    })
    .await;
    let users = started.elapsed();
    let started = Instant::now();
    let batches = m.div_ceil(1000);
    let a = api.clone();
    run_parallel(0..batches, move |b| {
        let api = a.clone();
        async move {
            let assignments: Vec<Value> = (b * 1000..((b + 1) * 1000).min(m))
                .map(|i| {
                    json!({
                        "assigned_values": [REGIONS[i % REGIONS.len()]],
                        "principal_type": "USER",
                        "principal_identifier": format!("s{i}@bench.test"),
                    })
                })
                .collect();
            let (s, v) = api
                .call(
                    &format!("template/variables/{VARIABLE}/update-values"),
                    json!({"operation": "REPLACE", "variable_assignment": assignments}),
                )
                .await;
            assert!((200..300).contains(&s), "update-values: {s} {v}");
        }
    })
    .await;
    (users, started.elapsed())
}

struct Delay {
    upstream: String,
    http: reqwest::Client,
    latency: Duration,
}

async fn delay_forward(
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    proxy: actix_web::web::Data<Delay>,
) -> actix_web::HttpResponse {
    tokio::time::sleep(proxy.latency).await;
    let url = format!(
        "{}{}",
        proxy.upstream,
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut rb = proxy.http.request(method, url).body(body.to_vec());
    for (k, v) in req.headers() {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            rb = rb.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(_) => return actix_web::HttpResponse::BadGateway().finish(),
    };
    let mut out = actix_web::HttpResponse::build(
        actix_web::http::StatusCode::from_u16(resp.status().as_u16()).unwrap(),
    );
    for (k, v) in resp.headers() {
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            out.append_header((k.as_str(), v.as_bytes()));
        }
    }
    out.body(resp.bytes().await.unwrap_or_default())
}

/// A proxy in front of `upstream` that adds `latency` to every request, as the simulator's
/// own `--latency-ms` does (which is fixed at start, and seeding wants none): its base URL
/// and handle.
fn start_delay_proxy(upstream: &str, latency: Duration) -> (String, actix_web::dev::ServerHandle) {
    let data = actix_web::web::Data::new(Delay {
        upstream: upstream.to_string(),
        http: http_client(),
        latency,
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .default_service(actix_web::web::to(delay_forward))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}"), handle)
}

async fn sync(m: usize) {
    // Seeding wants neither latency nor the rate limit; the bridge's client stays under 90
    // req/s on its own.
    let sim = spawn_sim(0, 0.0).await;
    let base = sim.base_url();
    let (proxy, proxy_handle) = start_delay_proxy(&base, Duration::from_millis(LATENCY_MS));

    // The engine of a ThoughtSpot tenant over the proxy, with no background work: the observe
    // runs when this asks.
    use scim_bridge::auth::TenantAuth;
    use scim_bridge::connector::thoughtspot::{adapter::role_group_name, open, preflight};
    use scim_bridge::engine::EngineConnector;
    use scim_bridge::server::{metrics::Metrics, AppState, Tenant};
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(&proxy, example_rules(), true);
    let store = Store::open(dir.path()).unwrap();
    let engine = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    tokio::task::spawn_blocking(move || preflight(&t2, 0))
        .await
        .unwrap()
        .unwrap_or_else(|p| panic!("start-up check: {p:?}"));
    // As at start: the rules resolve, and the role groups are made.
    let roles = engine
        .load_roles()
        .await
        .unwrap_or_else(|e| panic!("roles: {e:?}"));
    engine.set_roles(roles);
    let viewer_group = TsApi::admin(&base)
        .await
        .group_id(&role_group_name("Viewer"))
        .await;
    let (seed_users, seed_values) = seed(&base, m, viewer_group).await;
    println!(
        "  (seeded {m} ThoughtSpot users, one users/create each, in {:.1} s ({:.0}/s); \
         their `{VARIABLE}` values, 1,000 per update-values, in {:.1} s)",
        secs(seed_users),
        m as f64 / secs(seed_users),
        secs(seed_values)
    );
    reset_stats(&base).await;

    let started = Instant::now();
    let report = engine.observe_now().await.unwrap();
    let took = started.elapsed();
    let stats = sim_stats(&base).await;

    let mut tenants = BTreeMap::new();
    tenants.insert(
        TENANT.to_string(),
        Arc::new(Tenant {
            id: TENANT.into(),
            auth: TenantAuth::new(&t.id, &t.tokens, None),
            connector: Arc::new(EngineConnector(engine.clone())),
        }),
    );
    let state = AppState {
        tenants,
        metrics: Metrics::new(),
        body_limit: 1 << 20,
        store,
    };
    let server = server::start("127.0.0.1:0".parse().unwrap(), state, Some(2)).unwrap();
    let scim = Scim::new(server.addr);
    let (s, v) = scim
        .call(reqwest::Method::GET, "/Users?count=0", None)
        .await;
    assert_eq!(s, 200, "{v}");
    let listed = v["totalResults"].as_u64().unwrap_or(0) as usize;
    assert!(listed >= m, "every seeded user adopted: {listed} of {m}");

    reset_stats(&base).await;
    let lookups = Instant::now();
    let step = (m / 100).max(1);
    let mut looked = 0;
    for i in (0..m).step_by(step) {
        assert!(scim.find(&format!("s{i}@bench.test")).await, "s{i} found");
        looked += 1;
    }
    let lookup_took = lookups.elapsed();
    let lookup_calls = sim_stats(&base).await["requests"].as_u64().unwrap();

    reset_stats(&base).await;
    let again = Instant::now();
    let report2 = engine.observe_now().await.unwrap();
    let again_took = again.elapsed();
    let stats2 = sim_stats(&base).await;

    println!(
        "sync {m} ThoughtSpot users (role groups: default Viewer, BI Admins → Analyst; formula \
         variable `{VARIABLE}` mapped), vendor latency {LATENCY_MS} ms: one full observe {:.2} s \
         (fetch {:.2} s; {} users seen, {} adopted, {} groups seen, {} roles corrected); \
         {} vendor calls ({})\n  \
         the bridge then lists {listed} users; {looked} lookups by userName {:.1} ms with \
         {lookup_calls} vendor calls\n  \
         a second observe, nothing changed: {:.2} s (fetch {:.2} s; {} adopted, {} pulled, \
         {} roles corrected); {} vendor calls",
        secs(took),
        report.fetch_ms as f64 / 1000.0,
        report.users_seen,
        report.users_adopted,
        report.groups_seen,
        report.roles_corrected,
        stats["requests"],
        routes(&stats),
        lookup_took.as_secs_f64() * 1000.0,
        secs(again_took),
        report2.fetch_ms as f64 / 1000.0,
        report2.users_adopted,
        report2.users_pulled,
        report2.roles_corrected,
        stats2["requests"],
    );
    server.stop().await;
    proxy_handle.stop(true).await;
    sim.stop().await;
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |what: &str| args.is_empty() || args.iter().any(|a| a == what);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if want("provision") {
            provision(
                env_usize("THOUGHTSPOT_BENCH_USERS", 10_000),
                env_usize("THOUGHTSPOT_BENCH_ROUNDS", 4),
                std::env::var("THOUGHTSPOT_BENCH_ALTERNATE").is_ok_and(|v| v == "1"),
                env_f64("THOUGHTSPOT_BENCH_DIRECT_RPS", BRIDGE_RPS),
                env_f64("THOUGHTSPOT_BENCH_SIM_RPS", VENDOR_RPS),
            )
            .await;
        }
        if want("sync") {
            sync(env_usize("THOUGHTSPOT_BENCH_SYNC_USERS", 100_000)).await;
        }
    });
}

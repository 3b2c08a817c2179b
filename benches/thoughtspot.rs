//! ThoughtSpot connector benchmark, against the ThoughtSpot simulator (REST API v2.0) with 20 ms
//! latency. Built like `benches/tableau.rs` (same phases, figures and knobs; the scaffolding — IdP
//! client, bridge start-up, side-by-side rounds, lookups, latency proxy — is shared with it in
//! `benches/support`):
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

mod support;

use scim_bridge::config::{
    RoleRule, RoleRules, Secret, TenantConfig, TenantId, ThoughtspotAuth, Url, VendorConfig,
};
use scim_bridge::sim::{self, RunningSim, SimOptions, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    after_observe_text, check_users, env_usize, init_tracing, lookups, provision_rounds,
    reset_stats, routes, run_parallel, runtime, secs, serve_engine, sim_stats, start_bridge,
    start_delay_proxy, timed_observe, verdict, wanted_phases, CONCURRENCY, LATENCY_MS,
    PROVISION_TARGET,
};

const TENANT: &str = "acme-thoughtspot";
const TOKEN: &str = "bench-token-thoughtspot-0123456789";
/// The simulator's administrator and its defaults (`scim-bridge simulate thoughtspot`).
const ADMIN: &str = "tsadmin";
const ADMIN_PASSWORD: &str = "admin";
const SECRET_KEY: &str = "simulator-secret-key";
/// The bridge's outbox drains within this, or the bench fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);
/// The bridge's budget (`connector::thoughtspot::client_settings`), given to the direct side.
const BRIDGE_RPS: f64 = 90.0;
const BRIDGE_BURST: f64 = 10.0;
/// ThoughtSpot's own limit [B.7], the simulator's default.
const VENDOR_RPS: f64 = 100.0;
/// The formula variable of the sync tenant (seeded by the simulator).
const VARIABLE: &str = "region";
const REGIONS: [&str; 3] = ["EMEA", "AMER", "APJ"];

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// The hand-written integration's client: ThoughtSpot requires a User-Agent [B.1] (the bridge's
/// own client sends one).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .user_agent("thoughtspot-bench/1")
        .build()
        .unwrap()
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
    check_users(&users, "ThoughtSpot", prefix, n, |u, name| {
        u["account_status"] == "ACTIVE" && u["display_name"] == "B Ench" && u["email"] == name
    });
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
            account_type: None,
        },
        roles,
        on_vendor_unavailable: Default::default(),
        attributes,
        dry_run: false,
        sweep: None,
    }
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
    // No role rules, no mapped attributes: one create is one vendor call.
    let (server, scim) = start_bridge(tenant(&bb, RoleRules::default(), false), dir.path()).await;
    let api = TsApi::secret_key(&db, Pace::new(direct_rps, BRIDGE_BURST)).await;
    // Both buckets full again after the start-up calls.
    tokio::time::sleep(Duration::from_secs(1)).await;
    reset_stats(&db).await;
    reset_stats(&bb).await;

    let a = api.clone();
    let timed = provision_rounds(n, rounds, alternate, &scim, DRAIN_LIMIT, move |i| {
        let api = a.clone();
        async move {
            let mail = format!("d{i:06}@bench.test");
            api.create_user(&mail, "B Ench", &mail, &[]).await;
        }
    })
    .await;
    let (direct, bridge) = (timed.direct, timed.bridge);
    let dstats = sim_stats(&db).await;
    let bstats = sim_stats(&bb).await;
    let bridge_calls = bstats["requests"].as_u64().unwrap();
    let direct_calls = dstats["requests"].as_u64().unwrap();
    let direct_429 = api.throttled.load(Ordering::Relaxed);
    let (delivered, refused) = scim.deliveries().await;
    let direct_state = check_end_state(&db, "d", n).await;
    let bridge_state = check_end_state(&bb, "b", n).await;

    let ratio = secs(bridge) / secs(direct);
    let rounds_text = timed.text();
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
        timed.mode(),
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

async fn sync(m: usize) {
    // Seeding wants neither latency nor the rate limit; the bridge's client stays under 90
    // req/s on its own.
    let sim = spawn_sim(0, 0.0).await;
    let base = sim.base_url();
    let (proxy, proxy_handle) = start_delay_proxy(&base, Duration::from_millis(LATENCY_MS));

    // The engine of a ThoughtSpot tenant over the proxy, with no background work: the observe
    // runs when this asks.
    use scim_bridge::connector::thoughtspot::{adapter::role_group_name, open, preflight};
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(&proxy, example_rules(), true);
    let store = Store::open(dir.path()).unwrap();
    let engine = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    preflight(&t2, 0)
        .await
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

    let (took, report, stats) = timed_observe(&engine, &base).await;

    let (server, scim) = serve_engine(&t, &engine, store);
    let looked_up = lookups(&scim, &base, m).await;

    let (again_took, report2, stats2) = timed_observe(&engine, &base).await;

    println!(
        "sync {m} ThoughtSpot users (role groups: default Viewer, BI Admins → Analyst; formula \
         variable `{VARIABLE}` mapped), vendor latency {LATENCY_MS} ms: one full observe {:.2} s \
         (fetch {:.2} s; {} users seen, {} adopted, {} groups seen, {} roles corrected); \
         {} vendor calls ({})\n{}",
        secs(took),
        report.fetch_ms as f64 / 1000.0,
        report.users_seen,
        report.users_adopted,
        report.groups_seen,
        report.roles_corrected,
        stats["requests"],
        routes(&stats),
        after_observe_text(&looked_up, again_took, &report2, &stats2),
    );
    server.stop().await;
    proxy_handle.stop(true).await;
    sim.stop().await;
}

fn main() {
    init_tracing("warn");
    let want = wanted_phases();
    let rt = runtime();
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

//! Metabase connector benchmark, against the Metabase simulator (`/api/user`,
//! `/api/permissions/*`, signed in with its API key) with 20 ms latency. Built like
//! `benches/thoughtspot.rs` and `benches/tableau.rs` (same phases, figures and knobs; the
//! scaffolding — IdP client, bridge start-up, side-by-side rounds, lookups, latency proxy — is
//! shared with them in `benches/support`):
//!
//! 1. `provision`: N users (default 10,000) created through the bridge (SCIM `POST /Users` at
//!    IdP concurrency 16; a Metabase tenant signed in with the simulator's API key, `x-api-key`,
//!    **no role rules**, so a user is in All Users only and one create is one vendor call)
//!    against what a hand-written integration sends for the same users, at the same
//!    concurrency, to an identical simulator: one `POST /api/user` with email, first and last
//!    name [A.3] (Metabase puts every new user in All Users itself). Side by side in rounds
//!    that start together, as for Tableau and ThoughtSpot (`METABASE_BENCH_ALTERNATE=1`: one
//!    after the other, alternating); the bridge's time of a round lasts until its outbox is
//!    empty. Target: the bridge takes at most 1.10× the direct time.
//!
//!    **Pacing.** Metabase documents no API rate limit [A.1–A.7] and the simulator enforces
//!    none, so a hand-written integration sends as fast as its concurrency allows: the direct
//!    side is unpaced by default. The bridge's client holds itself to its budget
//!    (`connector::metabase::client_settings`, printed with the figures: 1,000 req/s, burst 100,
//!    24 in flight when this was written), above what 16 IdP requests at 20 ms can use, so the
//!    ratio measures the bridge's own cost (SCIM handling, store, outbox) against an unpaced
//!    integration. `METABASE_BENCH_DIRECT_RPS=N` paces the direct side instead (a token bucket
//!    of that rate, with the bridge's burst). Figures: both wall times, the ratio (and
//!    per round), vendor calls per created user (`/__sim/stats`), and the end state read back
//!    from both simulators (every user there once, active, with its first and last name, in
//!    All Users only);
//! 2. `sync`: a simulator holding M users (default 100,000), then one full observe by the
//!    bridge's engine — the first observe at start, which adopts every user — reading every
//!    user (`GET /api/user?status=all`, pages of 1,000) and the permission groups through a
//!    proxy that adds the 20 ms latency. The tenant's role rules: BI Admins → Administrators
//!    (Metabase's admin group), default `Viewers`, a permission group made in the simulator
//!    before the bridge starts (the bridge never creates a rule's group); and one sandboxing
//!    attribute, the `login_attributes` key `region` ← enterprise `division`. Seeding, before
//!    timing, on the simulator with no latency: the `Viewers` group, then each user by one
//!    `POST /api/user` already in All Users and `Viewers` (what the rules say, so the observe
//!    corrects nothing) with its `region`. Figures: the seeding time, the observe's time (and
//!    how much was the fetch), vendor calls by route; then lookups by userName through the
//!    bridge (answered from its index: 0 vendor calls) and a second observe with nothing
//!    changed.
//!
//! `cargo bench --bench metabase [-- provision|sync ...]` (no argument: both, at the default
//! sizes). Sizes via the environment: `METABASE_BENCH_USERS` (provision, default 10,000),
//! `METABASE_BENCH_ROUNDS` (provision rounds, default 4), `METABASE_BENCH_SYNC_USERS` (sync,
//! default 100,000); `METABASE_BENCH_DIRECT_RPS` (the direct side's pace, default 0:
//! unpaced). The bridge's own settings apply as usual.
//!
//! [A.n] is vendors-sisense-metabase.md part A.

mod support;

use scim_bridge::config::{
    MetabaseAuth, RoleRule, RoleRules, Secret, TenantConfig, TenantId, Url, VendorConfig,
};
use scim_bridge::sim::{self, metabase as msim, RunningSim, SimOptions, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    after_observe_text, check_users, env_usize, init_tracing, lookups, provision_rounds,
    reset_stats, routes, run_parallel, runtime, secs, serve_engine, sim_stats, start_bridge,
    start_delay_proxy, timed_observe, verdict, wanted_phases, CONCURRENCY, LATENCY_MS,
    PROVISION_TARGET,
};

const TENANT: &str = "acme-metabase";
const TOKEN: &str = "bench-token-metabase-0123456789abcdef";
/// The bridge's outbox drains within this, or the bench fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// The sync tenant's default role: a permission group the seeding makes (the bridge never
/// creates a rule's group).
const VIEWERS: &str = "Viewers";
/// The sync tenant's sandboxing attribute (a `login_attributes` key).
const ATTRIBUTE: &str = "region";
const REGIONS: [&str; 3] = ["EMEA", "AMER", "APJ"];
/// The bridge's client budget (`connector::metabase::client_settings`): requests per second
/// and burst. The direct side, when paced, gets the same burst.
fn bridge_budget() -> (f64, f64) {
    let s = scim_bridge::connector::metabase::client_settings();
    (s.rate_per_sec, f64::from(s.burst))
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn spawn_sim(latency_ms: u64) -> RunningSim {
    sim::start(
        Vendor::Metabase,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            latency_ms,
            ..SimOptions::default()
        },
    )
    .await
    .expect("the Metabase simulator starts")
}

// ---------------------------------------------------------------------------------------------
// Metabase's REST API, as a hand-written integration calls it

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
struct MbApi {
    http: reqwest::Client,
    /// `{base}/api`
    api: String,
    pace: Arc<Pace>,
}

impl MbApi {
    /// With the simulator's API key (in its Administrators group), as the bridge's tenant;
    /// unpaced.
    fn new(base: &str) -> MbApi {
        MbApi::paced(base, Pace::new(0.0, 1.0))
    }

    fn paced(base: &str, pace: Arc<Pace>) -> MbApi {
        MbApi {
            http: support::http_client(),
            api: format!("{base}/api"),
            pace,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.pace.take().await;
        let mut rb = self
            .http
            .request(method, format!("{}/{path}", self.api))
            .header("x-api-key", msim::DEFAULT_API_KEY)
            .header("accept", "application/json");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        // Some errors are plain text [A.2]: kept as a string.
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// One `POST /api/user` with email, first and last name; in `groups` (which must then hold
    /// All Users [A.3]) and with `login_attributes` when given.
    async fn create_user(
        &self,
        email: &str,
        first: &str,
        last: &str,
        groups: &[i64],
        attributes: Option<Value>,
    ) {
        let mut body = json!({"email": email, "first_name": first, "last_name": last});
        if let Some(a) = attributes {
            body["login_attributes"] = a;
        }
        if !groups.is_empty() {
            body["user_group_memberships"] =
                groups.iter().map(|g| json!({ "id": g })).collect::<Value>();
        }
        let (s, v) = self.call(reqwest::Method::POST, "user", Some(body)).await;
        assert_eq!(s, 200, "POST /api/user {email}: {v}");
    }

    /// Every user, active or not (pages of 1,000 until `total`).
    async fn users(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let (s, v) = self
                .call(
                    reqwest::Method::GET,
                    &format!("user?status=all&limit=1000&offset={}", out.len()),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{v}");
            let page = v["data"].as_array().cloned().unwrap_or_default();
            let total = v["total"].as_u64().unwrap_or(0) as usize;
            let n = page.len();
            out.extend(page);
            if n == 0 || out.len() >= total {
                return out;
            }
        }
    }

    /// Every permission group (a bare array [A.4]).
    async fn groups(&self) -> Vec<Value> {
        let (s, v) = self
            .call(reqwest::Method::GET, "permissions/group", None)
            .await;
        assert_eq!(s, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    /// The id of the All Users group (by `magic_group_type`, else by name [A.4]).
    async fn all_users_id(&self) -> i64 {
        let groups = self.groups().await;
        groups
            .iter()
            .find(|g| g["magic_group_type"] == "all-internal-users")
            .or_else(|| groups.iter().find(|g| g["name"] == "All Users"))
            .and_then(|g| g["id"].as_i64())
            .unwrap_or_else(|| panic!("no All Users group: {groups:?}"))
    }

    /// `POST /api/permissions/group`: the new group's id.
    async fn create_group(&self, name: &str) -> i64 {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "permissions/group",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(s, 200, "POST /api/permissions/group {name}: {v}");
        v["id"].as_i64().unwrap()
    }
}

/// Checks the end state at one simulator: `n` users with emails `{prefix}{i:06}@bench.test`,
/// each once, active, with the first and last name the IdP sent, in All Users only. Returns a
/// one-line summary.
async fn check_end_state(base: &str, prefix: &str, n: usize) -> String {
    let api = MbApi::new(base);
    let all_users = api.all_users_id().await;
    // `check_users` reads the login name as `name`: Metabase's is the email.
    let users: Vec<Value> = api
        .users()
        .await
        .into_iter()
        .map(|mut u| {
            u["name"] = u["email"].clone();
            u
        })
        .collect();
    check_users(&users, "Metabase", prefix, n, |u, _| {
        u["is_active"] == true
            && u["first_name"] == "B"
            && u["last_name"] == "Ench"
            && u["group_ids"] == json!([all_users])
    });
    format!("{n} users, each once, active, with first and last name, in All Users only")
}

// ---------------------------------------------------------------------------------------------
// The bridge

/// The sync tenant's rules: BI Admins → Administrators, default `Viewers`.
fn sync_rules() -> RoleRules {
    RoleRules {
        default: Some(VIEWERS.into()),
        rules: vec![RoleRule {
            group: Some("BI Admins".into()),
            role: "Administrators".into(),
        }],
    }
}

/// A Metabase tenant on the simulator at `base`, signed in with its API key; `roles`, and the
/// `region` attribute mapping when `mapped`.
fn tenant(base: &str, roles: RoleRules, mapped: bool) -> TenantConfig {
    let mut attributes = BTreeMap::new();
    if mapped {
        attributes.insert(
            ATTRIBUTE.to_string(),
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division".to_string(),
        );
    }
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor: VendorConfig::Metabase {
            base_url: Url::parse(&format!("{base}/")).unwrap(),
            auth: MetabaseAuth::ApiKey(Secret::new(msim::DEFAULT_API_KEY)),
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

async fn provision(n: usize, rounds: usize, alternate: bool, direct_rps: f64) {
    let rounds = rounds.clamp(1, n.max(1));
    // Two identical simulators: one for the hand-written integration, one behind the bridge.
    let direct_sim = spawn_sim(LATENCY_MS).await;
    let bridge_sim = spawn_sim(LATENCY_MS).await;
    let (db, bb) = (direct_sim.base_url(), bridge_sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    // No role rules, no attributes: a user is in All Users only, and one create is one vendor
    // call.
    let (server, scim) = start_bridge(tenant(&bb, RoleRules::default(), false), dir.path()).await;
    let (bridge_rps, bridge_burst) = bridge_budget();
    let api = MbApi::paced(&db, Pace::new(direct_rps, bridge_burst));
    // The bridge's bucket full again after its start-up calls.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reset_stats(&db).await;
    reset_stats(&bb).await;

    let timed = provision_rounds(n, rounds, alternate, &scim, DRAIN_LIMIT, move |i| {
        let api = api.clone();
        async move {
            let mail = format!("d{i:06}@bench.test");
            api.create_user(&mail, "B", "Ench", &[], None).await;
        }
    })
    .await;
    let (direct, bridge) = (timed.direct, timed.bridge);
    let dstats = sim_stats(&db).await;
    let bstats = sim_stats(&bb).await;
    let bridge_calls = bstats["requests"].as_u64().unwrap();
    let direct_calls = dstats["requests"].as_u64().unwrap();
    let (delivered, refused) = scim.deliveries().await;
    let direct_state = check_end_state(&db, "d", n).await;
    let bridge_state = check_end_state(&bb, "b", n).await;

    let ratio = secs(bridge) / secs(direct);
    let rounds_text = timed.text();
    println!(
        "provision {n} users, concurrency {CONCURRENCY} each, vendor latency {LATENCY_MS} ms, \
         {rounds} rounds, {}; no role rules or attributes (1 call per create expected); \
         simulators unlimited (Metabase has no API rate limit), direct client {}, bridge's \
         client {bridge_rps:.0} req/s (burst {bridge_burst}):\n  \
         direct vendor calls (POST /api/user)    {:>7.2} s ({:.0} users/s), \
         {:.2} vendor calls/user\n  \
         through the bridge (SCIM POST /Users)   {:>7.2} s ({:.0} users/s), \
         {:.2} vendor calls/user\n  \
         ratio {ratio:.3} (target ≤ {PROVISION_TARGET:.2}: {})\n  \
         rounds (bridge / direct): {rounds_text}\n  \
         bridge's vendor calls by route: {}\n  \
         bridge deliveries: {delivered} delivered, {refused} refused\n  \
         end state: direct {direct_state}; bridge {bridge_state}",
        timed.mode(),
        if direct_rps > 0.0 {
            format!("paced at {direct_rps:.0} req/s (burst {bridge_burst})")
        } else {
            "unpaced".to_string()
        },
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

/// Adds `m` users with emails `s{i}@bench.test` (first and last name, in `groups`, with their
/// `region`) with one `POST /api/user` each, on a simulator with no latency.
async fn seed(base: &str, m: usize, groups: Vec<i64>) -> Duration {
    let api = MbApi::new(base);
    run_parallel(0..m, move |i| {
        let (api, groups) = (api.clone(), groups.clone());
        async move {
            let mail = format!("s{i}@bench.test");
            let region = json!({ ATTRIBUTE: REGIONS[i % REGIONS.len()] });
            api.create_user(&mail, "S", "Ync", &groups, Some(region))
                .await;
        }
    })
    .await
}

async fn sync(m: usize) {
    // Seeding wants no latency: the proxy adds it for the bridge.
    let sim = spawn_sim(0).await;
    let base = sim.base_url();
    let admin = MbApi::new(&base);
    // The default role's group, before the bridge starts (it never creates one); then the users,
    // already where the rules put them.
    let viewers = admin.create_group(VIEWERS).await;
    let all_users = admin.all_users_id().await;
    let seeded = seed(&base, m, vec![all_users, viewers]).await;
    println!(
        "  (seeded {m} Metabase users, one POST /api/user each (in All Users and `{VIEWERS}`, \
         with `{ATTRIBUTE}`), in {:.1} s ({:.0}/s))",
        secs(seeded),
        m as f64 / secs(seeded)
    );
    let (proxy, proxy_handle) = start_delay_proxy(&base, Duration::from_millis(LATENCY_MS));

    // The engine of a Metabase tenant over the proxy, with no background work: the observe runs
    // when this asks.
    use scim_bridge::connector::metabase::{open, preflight};
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(&proxy, sync_rules(), true);
    let store = Store::open(dir.path()).unwrap();
    let engine = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let checked = preflight(&t2, 0)
        .await
        .unwrap_or_else(|p| panic!("start-up check: {p:?}"));
    // As at start: the rules resolve against Metabase's groups.
    let roles = match checked {
        Some(roles) => roles,
        None => engine
            .load_roles()
            .await
            .unwrap_or_else(|e| panic!("roles: {e:?}")),
    };
    engine.set_roles(roles);

    let (took, report, stats) = timed_observe(&engine, &base).await;

    let (server, scim) = serve_engine(&t, &engine, store);
    let looked_up = lookups(&scim, &base, m).await;

    let (again_took, report2, stats2) = timed_observe(&engine, &base).await;

    println!(
        "sync {m} Metabase users (role rules: default {VIEWERS}, BI Admins → Administrators; \
         login attribute `{ATTRIBUTE}` mapped), vendor latency {LATENCY_MS} ms: one full observe {:.2} s (fetch {:.2} s; {} users \
         seen, {} adopted, {} groups seen, {} roles corrected); {} vendor calls ({})\n{}",
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
                env_usize("METABASE_BENCH_USERS", 10_000),
                env_usize("METABASE_BENCH_ROUNDS", 4),
                std::env::var("METABASE_BENCH_ALTERNATE").is_ok_and(|v| v == "1"),
                env_f64("METABASE_BENCH_DIRECT_RPS", 0.0),
            )
            .await;
        }
        if want("sync") {
            sync(env_usize("METABASE_BENCH_SYNC_USERS", 100_000)).await;
        }
    });
}

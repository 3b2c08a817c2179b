//! Tableau connector benchmark, against the Tableau simulator (Tableau Server flavour, REST API
//! 3.24, JSON) with 20 ms latency:
//!
//! 1. `provision`: N users (default 10,000) created through the bridge (SCIM `POST /Users` at
//!    IdP concurrency 16; a Tableau tenant signed in with a personal access token) against
//!    what a hand-written integration sends for the same users, at the same concurrency, to an
//!    identical simulator: Add User (`POST /api/3.24/sites/{site}/users` with `name` and
//!    `siteRole`), then Update User (`PUT …/users/{id}` with `fullName` and `email`), since
//!    Tableau's Add User takes only the name and the site role. The two run side by side in
//!    one process, at the same time, in rounds that start together (so that a noisy machine
//!    slows both alike; `TABLEAU_BENCH_ALTERNATE=1` runs them one after the other instead,
//!    alternating which goes first); the bridge's time of a round lasts until its outbox is
//!    empty. Target: the bridge takes at most 1.10× the direct time. Figures: both wall times,
//!    the ratio (and per round), vendor calls per created user (`/__sim/stats`), and the end
//!    state read back from both simulators (every user there once, with its full name, email
//!    and site role);
//! 2. `sync`: a simulator holding M users (default 100,000; seeded through the REST API with no
//!    latency, before timing), then one full observe by the bridge's engine — reading the
//!    whole site (users, groups, members) through a proxy that adds the 20 ms latency, and
//!    adopting every user. Figures: its time (and how much was the fetch), vendor calls; then
//!    lookups by userName through the bridge (answered from its index: 0 vendor calls) and a
//!    second observe with nothing changed.
//!
//! `cargo bench --bench tableau [-- provision|sync ...]` (no argument: both, at the default
//! sizes). Sizes via the environment: `TABLEAU_BENCH_USERS` (provision, default 10,000),
//! `TABLEAU_BENCH_ROUNDS` (provision rounds, default 4), `TABLEAU_BENCH_SYNC_USERS` (sync,
//! default 100,000). The bridge's own settings apply as usual. Figures go to the README.
//!
//! The simulator checks a new user's name against every user of the site (a linear scan under
//! its lock), so each Add User costs it more as the site grows: the provision rounds slow down
//! for both sides alike, and seeding 100,000 users takes about half an hour (the timed observe
//! is not affected: reading a page is a scan, not a quadratic one).

mod support;

use scim_bridge::config::{
    RoleRule, RoleRules, Secret, TableauAuth, TableauDeprovision, TableauFlavor, TenantConfig,
    TenantId, Url, VendorConfig, DEFAULT_TABLEAU_API_VERSION,
};
use scim_bridge::sim::{self, tableau as tsim, RunningSim, SimOptions, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{
    after_observe_text, check_users, env_usize, http_client, init_tracing, lookups,
    provision_rounds, reset_stats, routes, run_parallel, runtime, secs, serve_engine, sim_stats,
    start_bridge, start_delay_proxy, timed_observe, verdict, wanted_phases, CONCURRENCY,
    LATENCY_MS, PROVISION_TARGET,
};

const TENANT: &str = "acme-tableau";
const TOKEN: &str = "bench-token-tableau-0123456789abcdef";
/// The simulator's site administrator (password sign-in), for reading the end state without
/// ending the bridge's PAT session (one live session per PAT).
const ADMIN_PASSWORD: &str = "admin";
/// The bridge's outbox drains within this, or the bench fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

async fn spawn_sim(latency_ms: u64) -> RunningSim {
    sim::start(
        Vendor::Tableau,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            latency_ms,
            ..SimOptions::default()
        },
    )
    .await
    .expect("the Tableau simulator starts")
}

// ---------------------------------------------------------------------------------------------
// Tableau's REST API, as a hand-written integration calls it (JSON)

#[derive(Clone)]
struct TableauApi {
    http: reqwest::Client,
    /// `{base}/api/{version}/sites/{site-luid}`
    site: String,
    token: String,
}

impl TableauApi {
    /// Signs in to the simulator's default site with `credentials` (PAT or name/password).
    async fn sign_in(base: &str, credentials: Value) -> TableauApi {
        let http = http_client();
        let mut creds = credentials;
        creds["site"] = json!({ "contentUrl": tsim::DEFAULT_SITE });
        let r = http
            .post(format!(
                "{base}/api/{DEFAULT_TABLEAU_API_VERSION}/auth/signin"
            ))
            .header("accept", "application/json")
            .json(&json!({ "credentials": creds }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "sign-in");
        let v: Value = r.json().await.unwrap();
        let c = &v["credentials"];
        TableauApi {
            http,
            site: format!(
                "{base}/api/{DEFAULT_TABLEAU_API_VERSION}/sites/{}",
                c["site"]["id"].as_str().unwrap()
            ),
            token: c["token"].as_str().unwrap().to_string(),
        }
    }

    /// With the simulator's personal access token, as an integration (and the bridge) would.
    async fn pat(base: &str) -> TableauApi {
        TableauApi::sign_in(
            base,
            json!({"personalAccessTokenName": tsim::DEFAULT_PAT_NAME,
                   "personalAccessTokenSecret": tsim::DEFAULT_PAT_SECRET}),
        )
        .await
    }

    /// As the site's administrator with a password (does not end a PAT's session).
    async fn admin(base: &str) -> TableauApi {
        TableauApi::sign_in(
            base,
            json!({"name": tsim::DEFAULT_ADMIN, "password": ADMIN_PASSWORD}),
        )
        .await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.site))
            .header("x-tableau-auth", &self.token)
            .header("accept", "application/json");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Add User (name and site role), then Update User (full name and email): Tableau's Add
    /// User takes nothing else [A.4].
    async fn create_user(&self, name: &str, role: &str, full_name: &str, email: &str) {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/users",
                Some(json!({"user": {"name": name, "siteRole": role}})),
            )
            .await;
        assert_eq!(s, 201, "Add User {name}: {v}");
        let id = v["user"]["id"].as_str().unwrap().to_string();
        let (s, v) = self
            .call(
                reqwest::Method::PUT,
                &format!("/users/{id}"),
                Some(json!({"user": {"fullName": full_name, "email": email}})),
            )
            .await;
        assert_eq!(s, 200, "Update User {name}: {v}");
    }

    /// Every user of the site (pages of 1,000).
    async fn users(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for page in 1.. {
            let (s, v) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/users?pageSize=1000&pageNumber={page}&fields=_all_"),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{v}");
            let total: usize = v["pagination"]["totalAvailable"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if let Some(us) = v["users"]["user"].as_array() {
                out.extend(us.iter().cloned());
            }
            if page * 1000 >= total {
                break;
            }
        }
        out
    }
}

/// Checks the end state at one simulator: `n` users named `{prefix}{i:06}@bench.test`, each
/// once, Viewer, with the full name and email the IdP sent. Returns a one-line summary.
async fn check_end_state(base: &str, prefix: &str, n: usize) -> String {
    let api = TableauApi::admin(base).await;
    let users = api.users().await;
    check_users(&users, "Tableau", prefix, n, |u, name| {
        u["siteRole"] == "Viewer" && u["fullName"] == "B Ench" && u["email"] == name
    });
    format!("{n} users, each once, Viewer, with fullName and email")
}

// ---------------------------------------------------------------------------------------------
// The bridge

fn rules() -> RoleRules {
    let rule = |g: &str, r: &str| RoleRule {
        group: Some(g.into()),
        role: r.into(),
    };
    RoleRules {
        default: Some("Viewer".into()),
        rules: vec![
            rule("BI Admins", "SiteAdministratorCreator"),
            rule("Tableau Creators", "Creator"),
        ],
    }
}

/// A Tableau Server tenant on the simulator at `base`, signed in with its PAT.
fn tenant(base: &str) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor: VendorConfig::Tableau {
            base_url: Url::parse(&format!("{base}/")).unwrap(),
            site: tsim::DEFAULT_SITE.into(),
            api_version: DEFAULT_TABLEAU_API_VERSION.into(),
            auth: TableauAuth::Pat {
                name: tsim::DEFAULT_PAT_NAME.into(),
                secret: Secret::new(tsim::DEFAULT_PAT_SECRET),
            },
            deprovision: TableauDeprovision::Unlicense,
            flavor: TableauFlavor::Server,
            auth_setting: None,
        },
        roles: rules(),
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    }
}

// ---------------------------------------------------------------------------------------------
// provision

async fn provision(n: usize, rounds: usize, alternate: bool) {
    let rounds = rounds.clamp(1, n.max(1));
    // Two identical simulators: one for the hand-written integration, one behind the bridge.
    let direct_sim = spawn_sim(LATENCY_MS).await;
    let bridge_sim = spawn_sim(LATENCY_MS).await;
    let (db, bb) = (direct_sim.base_url(), bridge_sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let (server, scim) = start_bridge(tenant(&bb), dir.path()).await;
    let api = TableauApi::pat(&db).await;
    reset_stats(&db).await;
    reset_stats(&bb).await;

    let timed = provision_rounds(n, rounds, alternate, &scim, DRAIN_LIMIT, move |i| {
        let api = api.clone();
        async move {
            let mail = format!("d{i:06}@bench.test");
            api.create_user(&mail, "Viewer", "B Ench", &mail).await;
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
         {rounds} rounds, {}:\n  \
         direct vendor calls (Add User + Update User) {:>7.2} s ({:.0} users/s), \
         {:.2} vendor calls/user\n  \
         through the bridge (SCIM POST /Users)       {:>7.2} s ({:.0} users/s), \
         {:.2} vendor calls/user\n  \
         ratio {ratio:.3} (target ≤ {PROVISION_TARGET:.2}: {})\n  \
         rounds (bridge / direct): {rounds_text}\n  \
         bridge's vendor calls by route: {}\n  \
         bridge deliveries: {delivered} delivered, {refused} refused\n  \
         end state: direct {direct_state}; bridge {bridge_state}",
        timed.mode(),
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

/// Adds `m` Viewers named `s{i}@bench.test` with their full name and email (Add User, then
/// Update User), on a simulator with no latency.
async fn seed(base: &str, m: usize) {
    let api = TableauApi::pat(base).await;
    run_parallel(0..m, move |i| {
        let api = api.clone();
        async move {
            let mail = format!("s{i}@bench.test");
            api.create_user(&mail, "Viewer", "S Ync", &mail).await;
        }
    })
    .await;
}

async fn sync(m: usize) {
    let sim = spawn_sim(0).await;
    let base = sim.base_url();
    let seeded = Instant::now();
    seed(&base, m).await;
    println!(
        "  (seeded {m} Tableau users, Add User + Update User each, in {:.1} s)",
        secs(seeded.elapsed())
    );
    let (proxy, proxy_handle) = start_delay_proxy(&base, Duration::from_millis(LATENCY_MS));

    // The engine of a Tableau tenant over the proxy, with no background work: the observe runs
    // when this asks.
    use scim_bridge::connector::tableau::{open, preflight};
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(&proxy);
    let store = Store::open(dir.path()).unwrap();
    let engine = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let roles = preflight(&t2, 0).await.unwrap().expect("Tableau reachable");
    engine.set_roles(roles);

    let (took, report, stats) = timed_observe(&engine, &base).await;

    let (server, scim) = serve_engine(&t, &engine, store);
    let looked_up = lookups(&scim, &base, m).await;

    let (again_took, report2, stats2) = timed_observe(&engine, &base).await;

    println!(
        "sync {m} Tableau users, vendor latency {LATENCY_MS} ms: one full observe {:.2} s \
         (fetch {:.2} s; {} users seen, {} adopted, {} groups seen); {} vendor calls ({})\n{}",
        secs(took),
        report.fetch_ms as f64 / 1000.0,
        report.users_seen,
        report.users_adopted,
        report.groups_seen,
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
                env_usize("TABLEAU_BENCH_USERS", 10_000),
                env_usize("TABLEAU_BENCH_ROUNDS", 4),
                std::env::var("TABLEAU_BENCH_ALTERNATE").is_ok_and(|v| v == "1"),
            )
            .await;
        }
        if want("sync") {
            sync(env_usize("TABLEAU_BENCH_SYNC_USERS", 100_000)).await;
        }
    });
}

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

use scim_bridge::config::{
    Config, RoleRule, RoleRules, Secret, TableauAuth, TableauDeprovision, TableauFlavor,
    TenantConfig, TenantId, Url, VendorConfig, DEFAULT_TABLEAU_API_VERSION,
};
use scim_bridge::server::{self, RunningServer};
use scim_bridge::sim::{self, tableau as tsim, RunningSim, SimOptions, Vendor};
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
const TENANT: &str = "acme-tableau";
const TOKEN: &str = "bench-token-tableau-0123456789";
/// The simulator's site administrator (password sign-in), for reading the end state without
/// ending the bridge's PAT session (one live session per PAT).
const ADMIN_PASSWORD: &str = "admin";

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

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

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

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
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
        if u["siteRole"] != "Viewer" || u["fullName"] != "B Ench" || u["email"] != name {
            bad.push(u.clone());
        }
    }
    let dup = seen.values().filter(|c| **c > 1).count();
    assert_eq!(seen.len(), n, "every user at Tableau ({prefix})");
    assert_eq!(dup, 0, "no user twice ({prefix})");
    assert!(
        bad.is_empty(),
        "{} users without the full profile ({prefix}), e.g. {}",
        bad.len(),
        bad[0]
    );
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
        let deadline = Instant::now() + Duration::from_secs(600);
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
/// one Tableau tenant over the simulator at `base`.
async fn start_bridge(base: &str, data: &std::path::Path) -> (RunningServer, Scim) {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_path_buf(),
        tenants: vec![tenant(base)],
        body_limit_bytes: 1 << 20,
    };
    let store = Store::open(&config.data_dir).unwrap();
    let cfg = config.clone();
    // build_state signs in to Tableau synchronously; keep it off the async workers.
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

async fn provision(n: usize, rounds: usize, alternate: bool) {
    let rounds = rounds.clamp(1, n.max(1));
    // Two identical simulators: one for the hand-written integration, one behind the bridge.
    let direct_sim = spawn_sim(LATENCY_MS).await;
    let bridge_sim = spawn_sim(LATENCY_MS).await;
    let (db, bb) = (direct_sim.base_url(), bridge_sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let (server, scim) = start_bridge(&bb, dir.path()).await;
    let api = TableauApi::pat(&db).await;
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
                    api.create_user(&mail, "Viewer", "B Ench", &mail).await;
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
        if alternate {
            "direct and bridge one after the other, alternating"
        } else {
            "direct and bridge side by side"
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
    use scim_bridge::auth::TenantAuth;
    use scim_bridge::connector::tableau::{open, preflight};
    use scim_bridge::engine::EngineConnector;
    use scim_bridge::server::{metrics::Metrics, AppState, Tenant};
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(&proxy);
    let store = Store::open(dir.path()).unwrap();
    let engine = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let roles = tokio::task::spawn_blocking(move || preflight(&t2, 0))
        .await
        .unwrap()
        .unwrap()
        .expect("Tableau reachable");
    engine.set_roles(roles);
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
        "sync {m} Tableau users, vendor latency {LATENCY_MS} ms: one full observe {:.2} s \
         (fetch {:.2} s; {} users seen, {} adopted, {} groups seen); {} vendor calls ({})\n  \
         the bridge then lists {listed} users; {looked} lookups by userName {:.1} ms with \
         {lookup_calls} vendor calls\n  \
         a second observe, nothing changed: {:.2} s (fetch {:.2} s; {} adopted, {} pulled, \
         {} roles corrected); {} vendor calls",
        secs(took),
        report.fetch_ms as f64 / 1000.0,
        report.users_seen,
        report.users_adopted,
        report.groups_seen,
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

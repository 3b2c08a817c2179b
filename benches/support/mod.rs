//! Scaffolding shared by the connector benchmarks (`tableau`, `thoughtspot`, `sisense`): the
//! set-up of `main`, the figures' helpers, the worker pool, the simulators' `/__sim/stats`, the tenant's SCIM client
//! (the IdP), the bridge as `serve` starts it or over one engine, the provision phase's
//! side-by-side rounds, the sync phase's lookups, and an HTTP proxy that adds latency or counts
//! the vendor's answers. Included by each bench as `mod support;` (Cargo makes bench targets
//! only of `benches/*.rs` and `benches/*/main.rs`, so this is not one).

// Each bench uses only part of this module: what one leaves unused would warn there.
#![allow(dead_code)]

use scim_bridge::config::{Config, TenantConfig};
use scim_bridge::engine::observe::ObserveReport;
use scim_bridge::engine::Engine;
use scim_bridge::server::{self, RunningServer};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The IdP's concurrency, and the direct side's.
pub const CONCURRENCY: usize = 16;
pub const LATENCY_MS: u64 = 20;
/// Bridge time over direct time, at most (the issues' target, for every connector).
pub const PROVISION_TARGET: f64 = 1.10;

/// Logs to stderr, filtered by `RUST_LOG` or else by `default_filter`.
pub fn init_tracing(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Whether a phase is to run: it is named on the command line (flags such as cargo's `--bench`
/// left out), or none is.
pub fn wanted_phases() -> impl Fn(&str) -> bool {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    move |what| args.is_empty() || args.iter().any(|a| a == what)
}

/// The runtime the benches run on: 4 workers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Runs `job(i)` for i in `range` on `CONCURRENCY` workers; returns the wall time.
pub async fn run_parallel<F, Fut>(range: std::ops::Range<usize>, job: F) -> Duration
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

pub async fn sim_stats(base: &str) -> Value {
    reqwest::get(format!("{base}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn reset_stats(base: &str) {
    reqwest::Client::new()
        .delete(format!("{base}/__sim/stats"))
        .send()
        .await
        .unwrap();
}

/// `by_route` of `/__sim/stats`, as `route: n` pairs.
pub fn routes(stats: &Value) -> String {
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
// The bridge

/// A tenant's SCIM client (the IdP).
#[derive(Clone)]
pub struct Scim {
    http: reqwest::Client,
    /// `http://{bridge}`
    root: String,
    /// `http://{admin listener}`: `/metrics` and the detailed `/readyz` (issue 15).
    admin_root: String,
    tenant: String,
    token: String,
}

impl Scim {
    /// The client of `tenant` at the bridge listening on `addr` (its admin listener on
    /// `admin`), with the bearer `token`.
    pub fn new(
        addr: std::net::SocketAddr,
        admin: std::net::SocketAddr,
        tenant: &str,
        token: &str,
    ) -> Scim {
        Scim {
            http: http_client(),
            root: format!("http://{addr}"),
            admin_root: format!("http://{admin}"),
            tenant: tenant.to_string(),
            token: token.to_string(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(
                method,
                format!("{}/tenants/{}/scim/v2{path}", self.root, self.tenant),
            )
            .bearer_auth(&self.token);
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
    pub async fn create(&self, mail: &str) {
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

    pub async fn find(&self, user_name: &str) -> bool {
        let filter = format!("userName eq \"{user_name}\"");
        let path = format!(
            "/Users?filter={}",
            percent_encoding::utf8_percent_encode(&filter, percent_encoding::NON_ALPHANUMERIC)
        );
        let (s, v) = self.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(s, 200, "{v}");
        v["totalResults"] == 1
    }

    /// Until the admin listener's detailed `/readyz` says every vendor was reached and read
    /// once.
    pub async fn wait_ready(&self) {
        for _ in 0..600 {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz", self.admin_root))
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

    /// The sum of the `/metrics` samples (admin listener) of `name` whose labels contain
    /// `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.admin_root))
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

    /// `scim_vendor_deliveries_total`: (delivered, refused).
    pub async fn deliveries(&self) -> (f64, f64) {
        let delivered = self
            .metric("scim_vendor_deliveries_total", "outcome=\"delivered\"")
            .await;
        let refused = self
            .metric("scim_vendor_deliveries_total", "outcome=\"refused\"")
            .await;
        (delivered, refused)
    }

    /// Until the outbox has nothing pending or failed (at most `limit`).
    pub async fn wait_drained(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
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

/// The client of `tenant` (its id and first token) at the bridge `server`.
fn scim_of(server: &RunningServer, tenant: &TenantConfig) -> Scim {
    Scim::new(
        server.addr,
        server
            .admin_addr()
            .expect("the bench's bridge runs its admin listener"),
        tenant.id.as_str(),
        tenant.tokens[0].expose(),
    )
}

/// The `[admin]` of a bench's bridge: its own free port (9090 may be taken).
fn admin_config() -> scim_bridge::config::AdminConfig {
    scim_bridge::config::AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    }
}

/// The bridge as `serve` starts it (start-up check, first observe, background delivery), with
/// the one `tenant`, its store in `data`; and the tenant's SCIM client, once the bridge is ready.
pub async fn start_bridge(tenant: TenantConfig, data: &std::path::Path) -> (RunningServer, Scim) {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_path_buf(),
        tenants: vec![tenant],
        body_limit_bytes: 1 << 20,
        limits: Default::default(),
        trusted_proxies: Vec::new(),
        jwt_max_lifetime: scim_bridge::config::DEFAULT_JWT_MAX_LIFETIME,
        admin: admin_config(),
        audit: Default::default(),
        report: Default::default(),
        tls: None,
    };
    let store = Store::open(&config.data_dir).unwrap();
    let cfg = config.clone();
    // build_state signs in to the vendor synchronously; keep it off the async workers.
    let state = tokio::task::spawn_blocking(move || server::build_state(&cfg, store))
        .await
        .unwrap()
        .expect("the bridge starts");
    let server = server::start(config.listen, state, Some(2)).expect("the bridge listens");
    let scim = scim_of(&server, &config.tenants[0]);
    scim.wait_ready().await;
    (server, scim)
}

/// The bridge's SCIM API for the one tenant `t` over its `engine` (opened on `store`), with no
/// background work: the engine observes when the bench asks.
pub fn serve_engine(t: &TenantConfig, engine: &Arc<Engine>, store: Store) -> (RunningServer, Scim) {
    use scim_bridge::auth::TenantAuth;
    use scim_bridge::engine::EngineConnector;
    use scim_bridge::server::{metrics::Metrics, AppState, Tenant};
    let mut tenants = BTreeMap::new();
    tenants.insert(
        t.id.as_str().to_string(),
        Arc::new(Tenant {
            id: t.id.as_str().into(),
            auth: TenantAuth::new(&t.id, &t.tokens, None),
            connector: Arc::new(EngineConnector(engine.clone())),
        }),
    );
    let app = AppState::new(tenants, Metrics::new(), 1 << 20, store);
    // An admin listener as `serve` has, for `/metrics` and the detailed readiness.
    let mut state = server::ServerState::from(app);
    let admin = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: std::path::PathBuf::new(),
        tenants: vec![t.clone()],
        body_limit_bytes: 1 << 20,
        limits: Default::default(),
        trusted_proxies: Vec::new(),
        jwt_max_lifetime: scim_bridge::config::DEFAULT_JWT_MAX_LIFETIME,
        admin: admin_config(),
        audit: Default::default(),
        report: Default::default(),
        tls: None,
    };
    state.admin = Some(scim_bridge::admin::AdminState::from_config(&admin));
    let server = server::start("127.0.0.1:0".parse().unwrap(), state, Some(2)).unwrap();
    let scim = scim_of(&server, t);
    (server, scim)
}

// ---------------------------------------------------------------------------------------------
// provision: the bridge and a hand-written integration side by side

/// The times of the provision rounds.
pub struct Rounds {
    pub direct: Duration,
    pub bridge: Duration,
    /// Each round's (users, direct time, bridge time).
    pub per_round: Vec<(usize, Duration, Duration)>,
    pub alternate: bool,
}

impl Rounds {
    pub fn mode(&self) -> &'static str {
        if self.alternate {
            "direct and bridge one after the other, alternating"
        } else {
            "direct and bridge side by side"
        }
    }

    /// Each round's `users: bridge s / direct s = ratio`.
    pub fn text(&self) -> String {
        self.per_round
            .iter()
            .enumerate()
            .map(|(k, (len, d, b))| {
                format!(
                    "{}{len}: {:.2} s / {:.2} s = {:.3}",
                    match (self.alternate, k % 2) {
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
            .join("; ")
    }
}

/// Users 0..n in `rounds` rounds: in each, the hand-written integration's `direct(i)` and the
/// IdP's creates of `b{i:06}@bench.test` through the bridge (`scim`; its time lasts until the
/// outbox is empty, at most `drain_limit`), each on `CONCURRENCY` workers, started together —
/// or, when `alternate`, one after the other, alternating which goes first.
pub async fn provision_rounds<D, Fut>(
    n: usize,
    rounds: usize,
    alternate: bool,
    scim: &Scim,
    drain_limit: Duration,
    direct: D,
) -> Rounds
where
    D: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut out = Rounds {
        direct: Duration::ZERO,
        bridge: Duration::ZERO,
        per_round: Vec::new(),
        alternate,
    };
    for r in 0..rounds {
        let range = r * n / rounds..(r + 1) * n / rounds;
        let run_direct = || run_parallel(range.clone(), direct.clone());
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
                scim.wait_drained(drain_limit).await;
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
        out.direct += d;
        out.bridge += b;
        out.per_round.push((range.len(), d, b));
    }
    out
}

/// Checks the users read back from a vendor (`name` their login name): `n` of them named
/// `{prefix}{i:06}@bench.test`, each once, each with the full profile (`full(user, name)`).
pub fn check_users(
    users: &[Value],
    vendor: &str,
    prefix: &str,
    n: usize,
    full: impl Fn(&Value, &str) -> bool,
) {
    let mut seen = BTreeMap::new();
    let mut bad = Vec::new();
    for u in users {
        let Some(name) = u["name"].as_str() else {
            continue;
        };
        if !(name.starts_with(prefix) && name.ends_with("@bench.test")) {
            continue;
        }
        *seen.entry(name.to_string()).or_insert(0) += 1;
        if !full(u, name) {
            bad.push(u.clone());
        }
    }
    let dup = seen.values().filter(|c| **c > 1).count();
    assert_eq!(seen.len(), n, "every user at {vendor} ({prefix})");
    assert_eq!(dup, 0, "no user twice ({prefix})");
    assert!(
        bad.is_empty(),
        "{} users without the full profile ({prefix}), e.g. {}",
        bad.len(),
        bad[0]
    );
}

// ---------------------------------------------------------------------------------------------
// sync: an observe, and the bridge's answers after it

/// One observe by `engine`, timed: its time, its report, and the vendor calls it made
/// (`/__sim/stats` of `base`, reset first).
pub async fn timed_observe(engine: &Arc<Engine>, base: &str) -> (Duration, ObserveReport, Value) {
    reset_stats(base).await;
    let started = Instant::now();
    let report = engine.observe_now().await.unwrap();
    let took = started.elapsed();
    (took, report, sim_stats(base).await)
}

pub struct Lookups {
    /// Users the bridge lists.
    pub listed: usize,
    pub looked: usize,
    pub took: Duration,
    /// Vendor calls during the lookups.
    pub vendor_calls: u64,
}

/// After an observe of `m` seeded users `s{i}@bench.test` at the simulator `base`: how many users
/// the bridge lists (at least `m`), then lookups by userName of every (m/100)-th, timed, with
/// the vendor calls they made (answered from the bridge's index, they should make none).
pub async fn lookups(scim: &Scim, base: &str, m: usize) -> Lookups {
    let (s, v) = scim
        .call(reqwest::Method::GET, "/Users?count=0", None)
        .await;
    assert_eq!(s, 200, "{v}");
    let listed = v["totalResults"].as_u64().unwrap_or(0) as usize;
    assert!(listed >= m, "every seeded user adopted: {listed} of {m}");

    reset_stats(base).await;
    let started = Instant::now();
    let step = (m / 100).max(1);
    let mut looked = 0;
    for i in (0..m).step_by(step) {
        assert!(scim.find(&format!("s{i}@bench.test")).await, "s{i} found");
        looked += 1;
    }
    let took = started.elapsed();
    let vendor_calls = sim_stats(base).await["requests"].as_u64().unwrap();
    Lookups {
        listed,
        looked,
        took,
        vendor_calls,
    }
}

/// The sync figures' last two lines: the bridge's `lookups`, then a second observe with nothing
/// changed (its time, report and vendor calls).
pub fn after_observe_text(
    lookups: &Lookups,
    again_took: Duration,
    again: &ObserveReport,
    again_stats: &Value,
) -> String {
    format!(
        "  the bridge then lists {} users; {} lookups by userName {:.1} ms with {} vendor calls\n  \
         a second observe, nothing changed: {:.2} s (fetch {:.2} s; {} adopted, {} pulled, \
         {} roles corrected); {} vendor calls",
        lookups.listed,
        lookups.looked,
        lookups.took.as_secs_f64() * 1000.0,
        lookups.vendor_calls,
        secs(again_took),
        again.fetch_ms as f64 / 1000.0,
        again.users_adopted,
        again.users_pulled,
        again.roles_corrected,
        again_stats["requests"],
    )
}

// ---------------------------------------------------------------------------------------------
// An HTTP proxy in front of a simulator

/// Vendor answers seen by a counting proxy, by `METHOD /path/pattern STATUS`.
#[derive(Default)]
pub struct ProxyCounts(parking_lot::Mutex<BTreeMap<String, u64>>);

impl ProxyCounts {
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock())
    }
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    /// Added before each request is forwarded.
    latency: Duration,
    counts: Option<Arc<ProxyCounts>>,
}

/// A path with its id-like segments (long, or with digits) as `{id}`.
fn path_pattern(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.len() >= 16 || (seg.len() > 8 && seg.chars().any(|c| c.is_ascii_digit())) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn proxy_forward(
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    proxy: actix_web::web::Data<Proxy>,
) -> actix_web::HttpResponse {
    if !proxy.latency.is_zero() {
        tokio::time::sleep(proxy.latency).await;
    }
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
    let status = resp.status().as_u16();
    if let Some(counts) = &proxy.counts {
        *counts
            .0
            .lock()
            .entry(format!(
                "{} {} {status}",
                req.method(),
                path_pattern(req.path())
            ))
            .or_default() += 1;
    }
    let mut out =
        actix_web::HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
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

fn start_proxy(
    upstream: &str,
    latency: Duration,
    counts: Option<Arc<ProxyCounts>>,
) -> (String, actix_web::dev::ServerHandle) {
    let data = actix_web::web::Data::new(Proxy {
        upstream: upstream.to_string(),
        http: http_client(),
        latency,
        counts,
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .default_service(actix_web::web::to(proxy_forward))
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

/// A proxy in front of `upstream` that adds `latency` to every request, as the simulator's
/// own `--latency-ms` does (which is fixed at start, and seeding wants none): its base URL
/// and handle.
pub fn start_delay_proxy(
    upstream: &str,
    latency: Duration,
) -> (String, actix_web::dev::ServerHandle) {
    start_proxy(upstream, latency, None)
}

/// A counting HTTP proxy in front of `upstream`: its base URL, counters and server handle.
pub fn start_counting_proxy(
    upstream: &str,
) -> (String, Arc<ProxyCounts>, actix_web::dev::ServerHandle) {
    let counts = Arc::new(ProxyCounts::default());
    let (url, handle) = start_proxy(upstream, Duration::ZERO, Some(counts.clone()));
    (url, counts, handle)
}

//! Sisense connector benchmark (issues 5 and 9), against the Sisense simulator with 20 ms latency:
//!
//! 1. `provision`: N users (default 10,000) created through the bridge at IdP concurrency 16,
//!    against the same vendor calls made directly (one `POST /api/v1/users` with a role each);
//!    target: the bridge takes at most 1.10× the direct time (the ratio is printed); vendor
//!    calls per user from `/__sim/stats`;
//! 2. `sync`: a full sync of M Sisense users (default 100,000) at start, under 30 s; then M/2 more
//!    users appear in Sisense and a re-sync adopts them while the IdP keeps creating users:
//!    the latency of those creates shows whether writes wait for the sync;
//! 3. `stopped`: the vendor is stopped after the bridge is ready; W IdP writes (default 10,000:
//!    80 % creates, then 20 % PATCHes of givenName on users already created) at concurrency 16
//!    while it is down. Figures: the accept rate (target ≥ 2,000 writes/s) and the latency
//!    (p50/p99/max; the first writes try inline until the breaker opens, so they are the slow
//!    ones). Then the vendor comes back on the same port with the same seed (same role ids):
//!    the time until the outbox is empty (`/metrics` `scim_outbox_depth{state="pending"}`),
//!    the vendor calls of the drain (`/__sim/stats` of the restarted simulator) and the calls per
//!    delivered user (coalescing: created then PATCHed while down = one create);
//! 4. `throttle`: the simulator throttles at 20 requests/s (429 without `Retry-After`, the
//!    Sisense default); T creates (default 600) through the bridge at concurrency 16, behind a
//!    counting proxy that records each vendor answer's status. Figures: wall time until every
//!    user is delivered, vendor requests and 429s, useful (non-429) calls per second and as a
//!    share of the vendor's capacity over the run (20/s × wall time + the bucket's initial burst
//!    of 20; target ≥ 90 %), and the fraction of calls answered 429 (target ≤ 5 %). The 2xx/429
//!    split comes from the proxy: the simulator's `/__sim/stats` counts routes, not statuses.
//!
//! `cargo bench --bench sisense [-- provision|sync|stopped|throttle ...]` (no argument: all
//! four, with the default sizes). Sizes via the environment:
//! - `SISENSE_BENCH_USERS` (provision, default 10,000),
//! - `SISENSE_BENCH_SYNC_USERS` (sync, default 100,000),
//! - `SISENSE_BENCH_STOPPED_WRITES` (stopped, default 10,000; a fifth of them PATCHes),
//! - `SISENSE_BENCH_THROTTLE_USERS` (throttle, default 600, about 30 s at 20/s).
//!
//! The bridge's own settings apply as usual (e.g. `SCIM_BRIDGE_INLINE_DEADLINE_MS`). Figures go
//! to the README.

#[path = "../tests/support/sisense_bridge.rs"]
mod sisense_bridge;
mod support;

use scim_bridge::config::SisenseDeprovision;
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::{json, Value};
use sisense_bridge::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    env_usize, http_client, init_tracing, run_parallel, runtime, start_counting_proxy, verdict,
    wanted_phases, CONCURRENCY, LATENCY_MS, PROVISION_TARGET,
};

/// IdP writes accepted per second while the vendor is stopped, at least.
const STOPPED_ACCEPT_TARGET: f64 = 2000.0;
/// The simulator's seed in `stopped`: the restarted one derives the same role ids from it.
const STOPPED_SEED: u64 = 9;
/// The throttled simulator's capacity (requests per second).
const THROTTLE_RPS: f64 = 20.0;
/// Useful calls per second over the capacity, at least; 429s over all calls, at most.
const THROTTLE_USEFUL_TARGET: f64 = 0.90;
const THROTTLE_429_TARGET: f64 = 0.05;

fn sim_opts() -> SimOptions {
    SimOptions {
        latency_ms: LATENCY_MS,
        ..SimOptions::default()
    }
}

async fn provision(n: usize) {
    // Direct: the vendor calls the bridge makes, one POST with the role per user.
    let sim = spawn_sim(sim_opts()).await;
    let base = sim.base_url();
    let http = http_client();
    let token: String = {
        let v: Value = http
            .post(format!("{base}/api/v1/authentication/login"))
            .form(&[("username", "admin@sisense.local"), ("password", "admin")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_string()
    };
    let roles: Value = http
        .get(format!("{base}/api/roles"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let viewer = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "consumer")
        .unwrap()["_id"]
        .clone();
    let direct = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        run_parallel(0..n, move |i| {
            let (http, base, token, viewer) =
                (http.clone(), base.clone(), token.clone(), viewer.clone());
            async move {
                let mail = format!("d{i:06}@bench.test");
                let r = http
                    .post(format!("{base}/api/v1/users"))
                    .bearer_auth(&token)
                    .json(&json!({"userName": mail, "email": mail, "firstName": "B",
                                  "lastName": "Ench", "roleId": viewer}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
        .await
    };
    sim.stop().await;

    // Through the bridge, each on a fresh simulator: the IdP's create, and the IdP's
    // lookup-then-create.
    let (via_bridge, calls) = through_bridge(n, false).await;
    let (idp_flow, _) = through_bridge(n, true).await;
    let ratio = via_bridge.as_secs_f64() / direct.as_secs_f64();
    let ratio_flow = idp_flow.as_secs_f64() / direct.as_secs_f64();
    println!(
        "provision {n} users, concurrency {CONCURRENCY}, vendor latency {LATENCY_MS} ms:\n  \
         direct vendor calls      {:>8.2} s ({:.0} users/s)\n  \
         through the bridge (POST) {:>7.2} s ({:.0} users/s)  ratio {ratio:.2} (target ≤ {PROVISION_TARGET:.2}: {})  \
         vendor calls/user {:.2}\n  \
         IdP flow (lookup + POST) {:>8.2} s ({:.0} users/s)  ratio {ratio_flow:.2}",
        direct.as_secs_f64(),
        n as f64 / direct.as_secs_f64(),
        via_bridge.as_secs_f64(),
        n as f64 / via_bridge.as_secs_f64(),
        verdict(ratio <= PROVISION_TARGET),
        calls as f64 / n as f64,
        idp_flow.as_secs_f64(),
        n as f64 / idp_flow.as_secs_f64(),
    );
}

/// Creates `n` users through the bridge (after a lookup each when `lookup`); the wall time and
/// the vendor calls made.
async fn through_bridge(n: usize, lookup: bool) -> (Duration, u64) {
    let sim = spawn_sim(sim_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        tenant(
            &sim.base_url(),
            SisenseDeprovision::Deactivate,
            demo_rules(),
        ),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    reset_stats(&sim.base_url()).await;
    let scim = bridge.scim.clone();
    let took = run_parallel(0..n, move |i| {
        let scim = scim.clone();
        async move {
            let mail = format!("b{i:06}@bench.test");
            if lookup {
                scim.okta_assign(&mail, "B", "Ench").await;
                return;
            }
            let (s, v) = scim
                .post(
                    "/Users",
                    json!({"userName": mail, "name": {"givenName": "B", "familyName": "Ench"},
                           "emails": [{"value": mail, "primary": true}], "active": true}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
    })
    .await;
    let calls = sim_stats(&sim.base_url()).await["requests"]
        .as_u64()
        .unwrap();
    bridge.server.stop().await;
    sim.stop().await;
    (took, calls)
}

/// Creates `range` Sisense users directly (bulk), named `{prefix}{i}{pad}@bench.test`.
async fn seed(api: &SisenseApi, prefix: &str, range: std::ops::Range<usize>) {
    let roles = api.role_names().await;
    let viewer = roles
        .iter()
        .find(|(_, n)| *n == "consumer")
        .unwrap()
        .0
        .clone();
    // Bulk seeding; varied name lengths keep the simulator's linear duplicate check cheap.
    for chunk in range.collect::<Vec<_>>().chunks(1000) {
        let users: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let pad = "x".repeat(i % 40);
                let mail = format!("{prefix}{i}{pad}@bench.test");
                json!({"userName": mail, "email": mail, "roleId": viewer, "firstName": "S", "lastName": "Ync"})
            })
            .collect();
        let (s, v) = api
            .call(
                reqwest::Method::POST,
                "/api/v1/users/bulk",
                Some(Value::Array(users)),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
}

async fn sync(m: usize) {
    let sim = spawn_sim(sim_opts()).await;
    let api = SisenseApi::login(&sim.base_url()).await;
    let seeded = Instant::now();
    seed(&api, "s", 0..m).await;
    println!(
        "  (seeded {m} Sisense users in {:.1} s)",
        seeded.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        demo_rules(),
    );
    reset_stats(&sim.base_url()).await;
    let started = Instant::now();
    let (conn, server, scim) = bridge_with_connector(t, dir.path()).await;
    let bridge = Bridge { server, scim };
    let took = started.elapsed();
    let stats = sim_stats(&sim.base_url()).await;
    let (s, v) = bridge.scim.get("/Users?count=0").await;
    assert_eq!(s, 200);
    assert_eq!(v["totalResults"], json!(m + 1));
    reset_stats(&sim.base_url()).await;
    let lookups = Instant::now();
    for i in (0..m).step_by(m / 100) {
        let pad = "x".repeat(i % 40);
        assert!(bridge
            .scim
            .find_user(&format!("s{i}{pad}@bench.test"))
            .await
            .is_some());
    }
    let lookup_calls = sim_stats(&sim.base_url()).await["requests"]
        .as_u64()
        .unwrap();
    println!(
        "sync {m} Sisense users, vendor latency {LATENCY_MS} ms: start to ready (sign-in, roles, full sync) {:.2} s; \
         {} vendor requests; 100 lookups afterwards {:.1} ms with {lookup_calls} vendor calls",
        took.as_secs_f64(),
        stats["requests"],
        lookups.elapsed().as_secs_f64() * 1000.0,
    );

    // A re-sync adopting m/2 new Sisense users while the IdP creates users at concurrency 4.
    seed(&api, "t", 0..m / 2).await;
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resync = {
        let (conn, finished) = (conn.clone(), finished.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let report = conn.observe_now().await.unwrap();
            finished.store(true, Ordering::SeqCst);
            (t.elapsed(), report)
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (scim, next, finished) = (bridge.scim.clone(), next.clone(), finished.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                if finished.load(Ordering::SeqCst) {
                    return latencies;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                scim.okta_assign(&format!("during{i}@bench.test"), "D", "Uring")
                    .await;
                latencies.push((t.elapsed(), t - t0));
            }
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let (resync_took, report) = resync.await.unwrap();
    latencies.sort();
    let worst_at = latencies.last().unwrap().1;
    let latencies: Vec<Duration> = latencies.into_iter().map(|l| l.0).collect();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "re-sync adopting {} new users: {:.2} s; {} IdP creates (lookup + create) meanwhile: \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (sent {:.1} s in; vendor pages read by {:.1} s)",
        report.users_adopted,
        resync_took.as_secs_f64(),
        latencies.len(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
        worst_at.as_secs_f64(),
        report.fetch_ms as f64 / 1000.0,
    );
    bridge.server.stop().await;
    sim.stop().await;
}

/// The value of the first `/metrics` sample of `name` whose labels contain `labels`
/// (e.g. `state="pending"`).
async fn metric(http: &reqwest::Client, admin_root: &str, name: &str, labels: &str) -> Option<f64> {
    let text = http
        .get(format!("{admin_root}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn outbox_pending(http: &reqwest::Client, admin_root: &str) -> u64 {
    metric(http, admin_root, "scim_outbox_depth", "state=\"pending\"")
        .await
        .unwrap_or(0.0) as u64
}

/// Polls the admin listener's `/metrics` until the outbox has nothing pending (after `settle`, so the writes just
/// answered are counted); the time from `since`, and when the first delivery (as counted by
/// `scim_vendor_deliveries_total{outcome="delivered"}` rising above `delivered_before`) was seen.
async fn wait_drained(
    admin_root: &str,
    since: Instant,
    delivered_before: f64,
    limit: Duration,
) -> (Duration, Option<Duration>) {
    let http = reqwest::Client::new();
    let mut first = None;
    loop {
        let delivered = metric(
            &http,
            admin_root,
            "scim_vendor_deliveries_total",
            "outcome=\"delivered\"",
        )
        .await
        .unwrap_or(0.0);
        if first.is_none() && delivered > delivered_before {
            first = Some(since.elapsed());
        }
        if outbox_pending(&http, admin_root).await == 0 {
            return (since.elapsed(), first);
        }
        assert!(
            since.elapsed() < limit,
            "outbox not empty after {} s",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The p-th quantile of sorted latencies.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs `job(i)` for i in 0..n on `CONCURRENCY` workers, timing each: the wall time and each
/// job's (index, latency).
async fn run_timed<F, Fut>(n: usize, job: F) -> (Duration, Vec<(usize, Duration)>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let lat = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(n)));
    let job = Arc::new(job);
    let took = {
        let lat = lat.clone();
        run_parallel(0..n, move |i| {
            let (job, lat) = (job.clone(), lat.clone());
            async move {
                let t = Instant::now();
                job(i).await;
                lat.lock().push((i, t.elapsed()));
            }
        })
        .await
    };
    let lat = std::mem::take(&mut *lat.lock());
    (took, lat)
}

fn create_body(mail: &str) -> Value {
    json!({"userName": mail, "name": {"givenName": "B", "familyName": "Ench"},
           "emails": [{"value": mail, "primary": true}], "active": true})
}

/// The vendor stops once the bridge is ready; `writes` IdP writes (80 % creates, then 20 %
/// PATCHes of users just created) are accepted into the outbox; the vendor comes back and the
/// outbox drains.
async fn stopped(writes: usize) {
    let patches = writes / 5;
    let creates = writes - patches;
    assert!(patches <= creates);
    let opts = || SimOptions {
        seed: Some(STOPPED_SEED),
        latency_ms: LATENCY_MS,
        ..SimOptions::default()
    };
    let sim = spawn_sim(opts()).await;
    let addr = sim.addr;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        tenant(
            &sim.base_url(),
            SisenseDeprovision::Deactivate,
            demo_rules(),
        ),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    sim.stop().await;

    // While the vendor is down: the creates, then PATCHes of the first `patches` users.
    let ids: Arc<Vec<std::sync::OnceLock<String>>> =
        Arc::new((0..creates).map(|_| std::sync::OnceLock::new()).collect());
    let (took_creates, mut lat) = {
        let (scim, ids) = (bridge.scim.clone(), ids.clone());
        run_timed(creates, move |i| {
            let (scim, ids) = (scim.clone(), ids.clone());
            async move {
                let mail = format!("s{i:06}@bench.test");
                let (s, v) = scim.post("/Users", create_body(&mail)).await;
                assert_eq!(s, 201, "{v}");
                ids[i].set(v["id"].as_str().unwrap().to_string()).unwrap();
            }
        })
        .await
    };
    let (took_patches, lat_p) = {
        let (scim, ids) = (bridge.scim.clone(), ids.clone());
        run_timed(patches, move |i| {
            let (scim, ids) = (scim.clone(), ids.clone());
            async move {
                let id = ids[i].get().unwrap();
                let (s, v) = scim
                    .patch(
                        &format!("/Users/{id}"),
                        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                               "Operations": [{"op": "replace", "path": "name.givenName",
                                               "value": "Patched"}]}),
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
            }
        })
        .await
    };
    lat.extend(lat_p.into_iter().map(|(i, d)| (creates + i, d)));
    let took = took_creates + took_patches;
    let slow: Vec<usize> = lat
        .iter()
        .filter(|(_, d)| *d > Duration::from_millis(100))
        .map(|(i, _)| *i)
        .collect();
    let mut sorted: Vec<Duration> = lat.iter().map(|l| l.1).collect();
    sorted.sort();
    let http = reqwest::Client::new();
    // `/metrics` is on the admin listener (issue 15).
    let admin_root = bridge.scim.admin_root().to_string();
    let pending_down = outbox_pending(&http, &admin_root).await;
    let accept = writes as f64 / took.as_secs_f64();
    println!(
        "vendor stopped: {writes} IdP writes ({creates} creates, then {patches} PATCHes of givenName \
         on users created meanwhile), concurrency {CONCURRENCY}:\n  \
         accepted in {:.2} s: {accept:.0} writes/s (target ≥ {STOPPED_ACCEPT_TARGET:.0}: {}); \
         creates {:.0}/s, PATCHes {:.0}/s\n  \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.0} ms; {} writes over 100 ms (the breaker \
         opening: the last of them was write #{})\n  \
         outbox pending while down: {pending_down}",
        took.as_secs_f64(),
        verdict(accept >= STOPPED_ACCEPT_TARGET),
        creates as f64 / took_creates.as_secs_f64(),
        patches as f64 / took_patches.as_secs_f64().max(1e-9),
        ms(pct(&sorted, 0.5)),
        ms(pct(&sorted, 0.99)),
        ms(*sorted.last().unwrap()),
        slow.len(),
        slow.iter().max().map_or("-".to_string(), |i| i.to_string()),
    );

    // The vendor comes back on the same port, with the same seed (so the same role ids).
    let delivered_before = metric(
        &http,
        &admin_root,
        "scim_vendor_deliveries_total",
        "outcome=\"delivered\"",
    )
    .await
    .unwrap_or(0.0);
    let mut restarted = None;
    for _ in 0..50 {
        match scim_bridge::sim::start(Vendor::Sisense, addr, opts()).await {
            Ok(s) => {
                restarted = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let sim = restarted.expect("the simulator restarts on its port");
    let back = Instant::now();
    reset_stats(&sim.base_url()).await;
    let (drain, first) = wait_drained(
        &admin_root,
        back,
        delivered_before,
        Duration::from_secs(900),
    )
    .await;
    let stats = sim_stats(&sim.base_url()).await;
    let calls = stats["requests"].as_u64().unwrap();
    let route = |k: &str| stats["by_route"][k].as_u64().unwrap_or(0);
    let failed = metric(&http, &admin_root, "scim_outbox_depth", "state=\"failed\"")
        .await
        .unwrap_or(0.0);

    // The end state, through Sisense's own API.
    let api = SisenseApi::login(&sim.base_url()).await;
    let users = api.users().await;
    let bench_users: Vec<&Value> = users
        .iter()
        .filter(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.ends_with("@bench.test"))
        })
        .collect();
    let patched = bench_users
        .iter()
        .filter(|u| u["firstName"] == "Patched")
        .count();
    println!(
        "  vendor back: outbox empty after {:.2} s (first delivery after {}); {} failed\n  \
         drain: {calls} vendor calls for {} users delivered = {:.3} calls/user \
         (POST /api/v1/users {}, PATCH /api/v1/users/{{id}} {}); {patched} of {patches} \
         PATCHed users have the new givenName\n  \
         drain calls by route: {}",
        drain.as_secs_f64(),
        first.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        failed,
        bench_users.len(),
        calls as f64 / bench_users.len().max(1) as f64,
        route("POST /api/v1/users"),
        route("PATCH /api/v1/users/{id}"),
        stats["by_route"],
    );
    assert_eq!(bench_users.len(), creates, "every user delivered once");
    bridge.server.stop().await;
    sim.stop().await;
}

/// `n` creates through the bridge against a simulator that throttles at `THROTTLE_RPS`
/// (429 without `Retry-After`), counting every vendor answer.
async fn throttle(n: usize) {
    let sim = spawn_sim(SimOptions {
        latency_ms: LATENCY_MS,
        throttle_rps: Some(THROTTLE_RPS),
        ..SimOptions::default()
    })
    .await;
    let (proxy_url, counts, proxy) = start_counting_proxy(&sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        tenant(&proxy_url, SisenseDeprovision::Deactivate, demo_rules()),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    // `/metrics` is on the admin listener (issue 15).
    let admin_root = bridge.scim.admin_root().to_string();
    let http = reqwest::Client::new();
    let delivered_before = metric(
        &http,
        &admin_root,
        "scim_vendor_deliveries_total",
        "outcome=\"delivered\"",
    )
    .await
    .unwrap_or(0.0);
    // Let the bucket refill after start-up, then count from zero.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let startup = counts.take();
    reset_stats(&sim.base_url()).await;

    let started = Instant::now();
    let (answered, lat) = {
        let scim = bridge.scim.clone();
        run_timed(n, move |i| {
            let scim = scim.clone();
            async move {
                let mail = format!("t{i:06}@bench.test");
                let (s, v) = scim.post("/Users", create_body(&mail)).await;
                assert_eq!(s, 201, "{v}");
            }
        })
        .await
    };
    let (wall, _) = wait_drained(
        &admin_root,
        started,
        delivered_before,
        Duration::from_secs(900),
    )
    .await;
    let seen = counts.take();
    let send_rate = metric(&http, &admin_root, "scim_vendor_send_rate", "")
        .await
        .unwrap_or(f64::NAN);
    let total: u64 = seen.values().sum();
    let throttled: u64 = seen
        .iter()
        .filter(|(k, _)| k.ends_with(" 429"))
        .map(|(_, v)| v)
        .sum();
    let created = seen.get("POST /api/v1/users 201").copied().unwrap_or(0);
    let useful = total - throttled;
    let useful_rate = useful as f64 / wall.as_secs_f64();
    // The vendor's capacity over the run: its rate, plus the burst its bucket held at the start
    // (the simulator's burst is max(1, rps)); short runs would otherwise show over 100 %.
    let capacity = THROTTLE_RPS * wall.as_secs_f64() + THROTTLE_RPS.max(1.0);
    let utilisation = useful as f64 / capacity;
    let share_429 = throttled as f64 / total.max(1) as f64;
    let sim_requests = sim_stats(&sim.base_url()).await["requests"]
        .as_u64()
        .unwrap();
    let mut sorted: Vec<Duration> = lat.iter().map(|l| l.1).collect();
    sorted.sort();
    println!(
        "throttled vendor ({THROTTLE_RPS:.0} requests/s, 429 without Retry-After): {n} creates \
         through the bridge, concurrency {CONCURRENCY}:\n  \
         IdP answered in {:.2} s (latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms); every user \
         delivered after {:.2} s ({:.1} users/s)\n  \
         vendor requests {total} (simulator counted {sim_requests}): {created} creates answered \
         201, {throttled} answered 429, {} other\n  \
         useful calls {:.1}/s; {useful} useful calls = {:.0} % of the vendor's capacity over the run \
         ({THROTTLE_RPS:.0}/s × {:.1} s + a burst of {:.0}; target ≥ {:.0} %: {}); \
         429s {:.1} % of the bridge's calls (target ≤ {:.0} %: {}); send rate at the end {send_rate:.1}/s\n  \
         vendor answers by route and status: {seen:?}\n  \
         (start-up, not counted: {startup:?})",
        answered.as_secs_f64(),
        ms(pct(&sorted, 0.5)),
        ms(pct(&sorted, 0.99)),
        ms(*sorted.last().unwrap()),
        wall.as_secs_f64(),
        created as f64 / wall.as_secs_f64(),
        useful - created,
        useful_rate,
        utilisation * 100.0,
        wall.as_secs_f64(),
        THROTTLE_RPS.max(1.0),
        THROTTLE_USEFUL_TARGET * 100.0,
        verdict(utilisation >= THROTTLE_USEFUL_TARGET),
        share_429 * 100.0,
        THROTTLE_429_TARGET * 100.0,
        verdict(share_429 <= THROTTLE_429_TARGET),
    );
    assert_eq!(created as usize, n, "every user created once");
    bridge.server.stop().await;
    proxy.stop(true).await;
    sim.stop().await;
}

fn main() {
    // The connector logs each sync's report (fetch and total time).
    init_tracing("warn,scim_bridge::connector::sisense=info");
    let want = wanted_phases();
    let rt = runtime();
    rt.block_on(async {
        if want("provision") {
            provision(env_usize("SISENSE_BENCH_USERS", 10_000)).await;
        }
        if want("sync") {
            sync(env_usize("SISENSE_BENCH_SYNC_USERS", 100_000)).await;
        }
        if want("stopped") {
            stopped(env_usize("SISENSE_BENCH_STOPPED_WRITES", 10_000)).await;
        }
        if want("throttle") {
            throttle(env_usize("SISENSE_BENCH_THROTTLE_USERS", 600)).await;
        }
    });
}

//! Sisense connector benchmark (issue 5), against the Sisense simulator with 20 ms latency:
//!
//! 1. provisioning: N users (default 10,000) created through the bridge at IdP concurrency 16,
//!    against the same vendor calls made directly (one `POST /api/v1/users` with a role each);
//!    the bridge must take at most 1.2× the direct time; vendor calls per user from `/__sim/stats`;
//! 2. sync: a full sync of M Sisense users (default 100,000) at start, under 30 s; then M/2 more
//!    users appear in Sisense and a re-sync adopts them while the IdP keeps creating users:
//!    the latency of those creates shows whether writes wait for the sync.
//!
//! `cargo bench --bench sisense [-- provision|sync]`; sizes via `SISENSE_BENCH_USERS` and
//! `SISENSE_BENCH_SYNC_USERS`. Figures go to the README.

#[path = "../tests/support/sisense_bridge.rs"]
mod support;

use scim_bridge::config::SisenseDeprovision;
use scim_bridge::sim::SimOptions;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const CONCURRENCY: usize = 16;
const LATENCY_MS: u64 = 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sim_opts() -> SimOptions {
    SimOptions {
        latency_ms: LATENCY_MS,
        ..SimOptions::default()
    }
}

/// Runs `job(i)` for i in 0..n on `CONCURRENCY` workers; returns the wall time.
async fn run_parallel<F, Fut>(n: usize, job: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
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

async fn provision(n: usize) {
    // Direct: the vendor calls the bridge makes, one POST with the role per user.
    let sim = spawn_sim(sim_opts()).await;
    let base = sim.base_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
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
        run_parallel(n, move |i| {
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
         through the bridge (POST) {:>7.2} s ({:.0} users/s)  ratio {ratio:.2}  vendor calls/user {:.2}\n  \
         IdP flow (lookup + POST) {:>8.2} s ({:.0} users/s)  ratio {ratio_flow:.2}",
        direct.as_secs_f64(),
        n as f64 / direct.as_secs_f64(),
        via_bridge.as_secs_f64(),
        n as f64 / via_bridge.as_secs_f64(),
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
    let took = run_parallel(n, move |i| {
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
            let report = conn.sync_now().await.unwrap();
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

fn main() {
    // The connector logs each sync's report (fetch and total time).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,scim_bridge::connector::sisense=info")
            }),
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
            provision(env_usize("SISENSE_BENCH_USERS", 10_000)).await;
        }
        if want("sync") {
            sync(env_usize("SISENSE_BENCH_SYNC_USERS", 100_000)).await;
        }
    });
}

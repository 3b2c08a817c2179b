//! The Metabase acceptance runs under faults: the Okta and the Entra sequences
//! (tests/support/idp.rs, with Metabase's extra steps: the `division` → `region` login
//! attribute, a mirrored group created, renamed and deleted, changes held while a user is
//! disabled; also run clean by tests/metabase.rs) are answered without a single 5xx and never
//! slower than 15 s per request, and Metabase's end state — per user `is_active`,
//! `is_superuser`, permission groups, `login_attributes`, names and email; the group list; the
//! deleted user deactivated and out of its groups; read through Metabase's own API — is
//! reached within 60 s of the last write, in three runs:
//!
//! 1. the simulator failing 10% of requests, throttling at 20 rps, and ending sessions after
//!    5 s;
//! 2. the simulator frozen with SIGSTOP for 40 s in the middle of the run;
//! 3. the bridge (the real binary) SIGKILLed right after the last write while its outbox still
//!    holds undelivered changes, and restarted on the same data dir and port.
//!
//! Each run is one test that drives `Variant::two` concurrently (Okta with a password session,
//! Entra with an API key: both sequences and both sign-ins in every run), each with its own
//! `scim-bridge simulate metabase` process and its own bridge, and reports every variant's
//! failure together. Under these faults a write may be answered from the outbox, so Metabase
//! is checked only at the end. `METABASE_CHAOS_ONLY=entra` runs only the variants whose label
//! contains it; `METABASE_TRACE=1` prints what still differs while a run settles.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/metabase_api.rs"]
mod metabase_api;

use chaos::{deliveries_retried, vendor_faults, Binary, Freeze};
use idp::*;
use metabase_api::*;
use std::time::{Duration, Instant};

/// How long after the last write Metabase must show the end state.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the simulator stays frozen in run 2.
const FREEZE: Duration = Duration::from_secs(40);

/// `scim-bridge simulate metabase` with `faults`, read once by the checker (which waits for
/// it to serve), with what the variant needs before the bridge (`Variant::prepare`).
async fn simulator(v: &Variant, faults: &[&str]) -> (ChildGuard, String, MetabaseApi) {
    let (guard, base) = simulator_process("metabase", faults);
    let api = MetabaseApi::connect(&base).await;
    v.prepare(&api).await;
    (guard, base, api)
}

async fn run_two<F, Fut>(run: &str, f: F)
where
    F: Fn(Variant, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    run_variants(run, "METABASE_CHAOS_ONLY", Variant::two(), f).await;
}

/// How many sign-ins the simulator was sent (`/__sim/stats`: never faulted). The checker uses
/// the API key and sends none.
async fn sign_ins(base: &str) -> u64 {
    sim_route_count(base, "POST /api/session").await
}

// ---------------------------------------------------------------------------------------------
// Run 1: vendor faults.
// ---------------------------------------------------------------------------------------------

/// The simulator's session lifetime in run 1.
const SESSION_TTL: Duration = Duration::from_secs(5);

/// The simulator fails 10% of requests with Metabase's own 500, throttles at 20 requests/s
/// with a plain-text 429 (no `Retry-After`), and ends sessions after 5 s; the run pauses once
/// for longer than that after the profile change, so the bridge's session has run out when
/// the IdP writes again. The bridge runs in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_under_vendor_faults() {
    run_two("faults", |v, label| async move {
        let faults = vendor_faults(SESSION_TTL);
        let faults: Vec<&str> = faults.iter().map(String::as_str).collect();
        let (sim, base, api) = simulator(&v, &faults).await;
        let dir = tempfile::tempdir().unwrap();
        let (server, idp) = serve_checked(&v, &base, dir.path(), &label).await;
        let started = Instant::now();
        let before = sign_ins(&base).await;
        let mut hooks = Extra::new(&idp, v.seq);
        hooks.pause = Some(SESSION_TTL + Duration::from_secs(1));
        v.seq.run(&idp, &mut hooks).await;
        settle(&idp, &v, &api, SETTLE_LIMIT).await;
        let retried = deliveries_retried(idp.admin_root(), BRIDGE_TENANT).await;
        let bridge_sign_ins = sign_ins(&base).await - before;
        let took = started.elapsed();
        eprintln!(
            "{label}: {retried} deliveries retried after a fault; the bridge sent \
             {bridge_sign_ins} sign-ins in {took:?} (sessions end after {SESSION_TTL:?}); \
             Metabase routes {}",
            routes(&base).await
        );
        match v.sign_in {
            // Sessions last 5 s: over a run this long, with an idle pause longer than a
            // session, the bridge must have signed in again (ahead of expiry or after a 401).
            SignIn::Password => {
                assert!(took > SESSION_TTL, "{label}: the run took only {took:?}");
                assert!(
                    bridge_sign_ins >= 1,
                    "{label}: the bridge never signed in again in {took:?} with sessions of \
                     {SESSION_TTL:?}"
                );
            }
            // An API key needs no session.
            SignIn::ApiKey => assert_eq!(
                sign_ins(&base).await,
                0,
                "{label}: the bridge asked for a session though it has an API key"
            ),
        }
        server.stop().await;
        drop(sim);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Run 2: the simulator frozen for 40 s mid-run.
// ---------------------------------------------------------------------------------------------

/// Half the sequence (users assigned, groups created), then the simulator process is stopped
/// (SIGSTOP) and the rest — with the extra group and the division changes — is sent while it
/// is frozen; it is continued 40 s after the stop. The bridge runs in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_with_the_simulator_frozen_for_40s() {
    run_two("frozen", |v, label| async move {
        let (mut sim, base, api) = simulator(&v, &["--seed", "21"]).await;
        let dir = tempfile::tempdir().unwrap();
        let (server, idp) = serve_checked(&v, &base, dir.path(), &label).await;
        let mut freeze = Freeze::new(&mut sim, FREEZE);
        {
            let mut hooks = Extra::new(&idp, v.seq);
            hooks.mid = Some(Box::new(|| freeze.stop()));
            v.seq.run(&idp, &mut hooks).await;
        }
        freeze.check(&idp).await;
        settle(&idp, &v, &api, SETTLE_LIMIT).await;
        server.stop().await;
        drop(sim);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Run 3: the bridge SIGKILLed while the outbox delivers.
// ---------------------------------------------------------------------------------------------

/// The real binary, with the variant's config file and a 200 ms inline deadline, in front of a
/// simulator answering in 500 ms: every write is answered from the outbox. Killed right after
/// the last write, restarted on the same data dir and port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_with_the_bridge_sigkilled_while_the_outbox_delivers() {
    run_two("sigkill", |v, label| async move {
        let (sim, base, api) = simulator(&v, &["--latency-ms", "500", "--seed", "31"]).await;
        let dir = tempfile::tempdir().unwrap();
        let mut bridge = Binary::start(dir.path(), BRIDGE_TENANT, BRIDGE_TOKEN, |listen, data| {
            v.bridge_toml(listen, data, &base)
        })
        .await;
        let idp = Idp::checked(&bridge.root, BRIDGE_TENANT, BRIDGE_TOKEN, &label)
            .with_admin(&bridge.admin_root);
        v.seq.run(&idp, &mut Extra::new(&idp, v.seq)).await;
        bridge.kill_and_restart(&label).await;
        // `state` panics on two Metabase users of one email (a create replayed after the
        // restart); `settle` checks no orphan mapping and no adopted deleted user.
        settle(&idp, &v, &api, SETTLE_LIMIT).await;
        drop(bridge);
        drop(sim);
    })
    .await;
}

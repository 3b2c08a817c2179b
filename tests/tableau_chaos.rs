//! The Tableau acceptance runs under faults: the Okta and the Entra sequences
//! (tests/support/idp.rs, also run clean by tests/tableau.rs) are answered without a single 5xx
//! and never slower than 15 s per request, and Tableau's end state — users, site roles, groups,
//! membership, and on Server full names and emails, read through Tableau's own API — is reached
//! within 60 s of the last write, in three runs:
//!
//! 1. the simulator failing 10% of requests, throttling at 20 rps, idling sessions out after 5 s;
//! 2. the simulator frozen with SIGSTOP for 40 s in the middle of the run;
//! 3. the bridge (the real binary) SIGKILLed right after the last write while its outbox still
//!    holds undelivered changes, and restarted on the same data dir and port.
//!
//! Each run is one test that drives the four variants of `Variant::all` concurrently (Okta with
//! a PAT on Server and a connected-app JWT on Cloud, Entra with a JWT on Server and a PAT on
//! Cloud: both sequences, both sign-in methods and both flavours in every run), each with its
//! own `scim-bridge simulate tableau` process and its own bridge, and reports every variant's
//! failure together. Under these faults a write may be answered from the outbox, so Tableau is
//! checked only at the end; the IdP client is `Policy::Checked`. `TABLEAU_CHAOS_ONLY=entra/pat`
//! runs only the variants whose label contains it.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use chaos::{deliveries_retried, vendor_faults, Binary, Freeze};
use idp::*;
use std::time::Duration;
use tableau_api::*;

/// How long after the last write Tableau must show the end state.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the simulator stays frozen in run 2.
const FREEZE: Duration = Duration::from_secs(40);

/// `scim-bridge simulate tableau` with `faults` and the variant's flavour, signed in to once as
/// the site admin (which waits for it to serve); for the Okta sequence, `pre@acme.test` is made
/// in Tableau first, as a Viewer.
async fn simulator(v: &Variant, faults: &[&str]) -> (ChildGuard, String, TableauApi) {
    let flavor = v.sim_args();
    let args: Vec<&str> = faults
        .iter()
        .copied()
        .chain(flavor.iter().map(String::as_str))
        .collect();
    let (guard, base) = simulator_process("tableau", &args);
    let api = TableauApi::login(&base).await;
    if v.seq == Seq::Okta {
        api.create_user("pre@acme.test", TABLEAU_ROLES.default)
            .await;
    }
    (guard, base, api)
}

async fn run_four<F, Fut>(run: &str, f: F)
where
    F: Fn(Variant, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    run_variants(run, "TABLEAU_CHAOS_ONLY", Variant::all(), f).await;
}

// ---------------------------------------------------------------------------------------------
// Run 1: vendor faults.
// ---------------------------------------------------------------------------------------------

/// The idle timeout of the simulator's sessions in run 1.
const TOKEN_TTL: Duration = Duration::from_secs(5);

/// Run 1's pause after the profile change: longer than `TOKEN_TTL` with nothing sent, so the
/// bridge's session (PAT or connected app) has idled out when the IdP writes again, and the
/// bridge must sign in again under faults. The sequence alone is over before a session idles.
struct IdlePause;

impl Hooks for IdlePause {
    async fn after(&mut self, step: Step) {
        if step == Step::ProfileChanged {
            tokio::time::sleep(TOKEN_TTL + Duration::from_secs(1)).await;
        }
    }
}

/// How many sign-ins the simulator was sent (`/__sim/stats`: never faulted).
async fn sign_ins(base: &str) -> u64 {
    sim_route_count(base, "POST /api/{v}/auth/signin").await
}

/// The simulator fails 10% of requests with Tableau's own 5xx, throttles at 20 requests/s with
/// its own 429, and ends sessions idle for 5 s (the run pauses once for longer: `IdlePause`);
/// the bridge runs in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_under_vendor_faults() {
    run_four("faults", |v, label| async move {
        let faults = vendor_faults(TOKEN_TTL);
        let faults: Vec<&str> = faults.iter().map(String::as_str).collect();
        let (sim, base, api) = simulator(&v, &faults).await;
        let dir = tempfile::tempdir().unwrap();
        let (server, idp) = serve_checked(&v, &base, dir.path(), &label).await;
        v.seq.run(&idp, &mut IdlePause).await;
        settle(&idp, &v, &api, SETTLE_LIMIT).await;
        let retried = deliveries_retried(idp.admin_root(), BRIDGE_TENANT).await;
        eprintln!(
            "{label}: {retried} deliveries retried after a fault; {} sign-ins (bridge and checker)",
            sign_ins(&base).await
        );
        server.stop().await;
        drop(sim);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Run 2: the simulator frozen for 40 s mid-run.
// ---------------------------------------------------------------------------------------------

/// Half the sequence (users assigned, groups created), then the simulator process is stopped
/// (SIGSTOP) and the rest is sent while it is frozen; it is continued 40 s after the stop. The
/// bridge runs in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_with_the_simulator_frozen_for_40s() {
    run_four("frozen", |v, label| async move {
        let (mut sim, base, api) = simulator(&v, &["--seed", "21"]).await;
        let dir = tempfile::tempdir().unwrap();
        let (server, idp) = serve_checked(&v, &base, dir.path(), &label).await;
        let mut freeze = Freeze::new(&mut sim, FREEZE);
        v.seq.run(&idp, &mut || freeze.stop()).await;
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
    run_four("sigkill", |v, label| async move {
        let (sim, base, api) = simulator(&v, &["--latency-ms", "500", "--seed", "31"]).await;
        let dir = tempfile::tempdir().unwrap();
        let mut bridge = Binary::start(dir.path(), BRIDGE_TENANT, BRIDGE_TOKEN, |listen, data| {
            v.bridge_toml(listen, data, &base)
        })
        .await;
        let idp = Idp::checked(&bridge.root, BRIDGE_TENANT, BRIDGE_TOKEN, &label)
            .with_admin(&bridge.admin_root);
        v.seq.run(&idp, &mut ()).await;
        bridge.kill_and_restart(&label).await;
        // `state` panics on two Tableau users of one name; `settle` checks no orphan mapping.
        settle(&idp, &v, &api, SETTLE_LIMIT).await;
        drop(bridge);
        drop(sim);
    })
    .await;
}

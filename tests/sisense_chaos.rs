//! Issue 9's acceptance runs: the Okta and the Entra sequences (tests/support/idp.rs, also run
//! by tests/sisense.rs), in both Sisense modes (`rest`, `scim`), are answered without a single
//! 5xx and never slower than 15 s per request, and Sisense's end state — read through its own
//! API — equals the expected one within 60 s of the last write, in three runs:
//!
//! 1. the simulator failing 10% of requests, throttling at 20 rps, expiring tokens every 5 s;
//! 2. the simulator (a separate process) frozen with SIGSTOP for 40 s in the middle of the run;
//! 3. the bridge (the real binary) SIGKILLed right after the last write while its outbox still
//!    holds undelivered changes, and restarted on the same data dir and port.
//!
//! Each run is one test that drives its four variants (Okta/Entra × rest/scim) concurrently,
//! each on its own simulator and bridge, and reports every variant's failure together. Under
//! these faults a write may be answered from the outbox, so Sisense is checked only at the end
//! (no per-step checks); the IdP client is `Policy::Checked`.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/chaos.rs"]
mod chaos;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sisense_api.rs"]
mod sisense_api;

use bridge::config;
use chaos::{Binary, Freeze};
use idp::*;
use scim_bridge::config::SisenseDeprovision;
use scim_bridge::sim::SimOptions;
use serde_json::Value;
use sisense_api::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long after the last write Sisense must show the end state.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the simulator stays frozen in run 2.
const FREEZE: Duration = Duration::from_secs(40);

/// Okta deprovisions by deactivation, Entra by deletion.
fn deprovision(seq: Seq) -> SisenseDeprovision {
    match seq {
        Seq::Okta => SisenseDeprovision::Deactivate,
        Seq::Entra => SisenseDeprovision::Delete,
    }
}

/// The simulator's request counts by route (`/__sim/stats`), for a failure message.
async fn routes_used(base: &str) -> String {
    let stats: Option<Value> = match reqwest::get(format!("{base}/__sim/stats")).await {
        Ok(r) => r.json().await.ok(),
        Err(_) => None,
    };
    stats
        .and_then(|v| v.get("by_route").cloned())
        .map_or("(no stats)".into(), |v| v.to_string())
}

/// A sequence's end state in Sisense, for `bridge::settle`.
struct EndState<'a> {
    want: Expected,
    base: &'a str,
}

impl bridge::Checker for EndState<'_> {
    type State = Snapshot;
    const VENDOR: &'static str = "Sisense";
    async fn read(&self) -> Option<Snapshot> {
        snapshot(self.base).await
    }
    fn diff(&self, snap: &Snapshot) -> Vec<String> {
        snap.diff(&self.want)
    }
    fn users(&self, snap: &Snapshot) -> BTreeSet<String> {
        snap.users.keys().cloned().collect()
    }
    async fn context(&self, _: &Idp) -> String {
        format!("vendor routes used: {}", routes_used(self.base).await)
    }
}

/// Polls Sisense until the sequence's end state holds; fails 60 s after the last write with
/// what differs. Then checks the bridge lists exactly Sisense's users (no orphan mapping).
async fn settle(idp: &Idp, seq: Seq, sisense_base: &str) -> Snapshot {
    let want = seq.expected(&SISENSE_ROLES);
    bridge::settle(
        idp,
        &EndState {
            want,
            base: sisense_base,
        },
        SETTLE_LIMIT,
    )
    .await
}

/// `scim-bridge simulate sisense` as a separate process, signed in to once.
async fn sim_process(seed: u64) -> (ChildGuard, String) {
    let (guard, base) = simulator_process("sisense", &["--seed", &seed.to_string()]);
    SisenseApi::login(&base).await;
    (guard, base)
}

/// Runs the four variants (Okta/Entra × rest/scim) concurrently and fails with every variant's
/// failure. `SISENSE_CHAOS_ONLY=entra/scim` runs only the variants whose label contains it.
async fn run_four<F, Fut>(run: &str, f: F)
where
    F: Fn((Seq, bool), String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let variants = [
        (Seq::Okta, false),
        (Seq::Okta, true),
        (Seq::Entra, false),
        (Seq::Entra, true),
    ]
    .into_iter()
    .map(|(seq, native)| {
        let mode = if native { "scim" } else { "rest" };
        (format!("{}/{mode}", seq.name()), (seq, native))
    })
    .collect();
    run_variants(run, "SISENSE_CHAOS_ONLY", variants, f).await;
}

fn tenant_for(base: &str, seq: Seq, native: bool) -> scim_bridge::config::TenantConfig {
    let t = tenant(base, deprovision(seq), demo_rules());
    if native {
        scim_mode(t)
    } else {
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Run 1: vendor faults.
// ---------------------------------------------------------------------------------------------

/// The simulator fails 10% of requests, throttles at 20 rps and expires tokens every 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_under_vendor_faults() {
    run_four("faults", |(seq, native), label| async move {
        let sim = spawn_sim(SimOptions {
            error_rate: 0.1,
            throttle_rps: Some(20.0),
            token_ttl_s: Some(5),
            seed: Some(7),
            ..SimOptions::default()
        })
        .await;
        let base = sim.base_url();
        if let Seq::Okta = seq {
            create_pre_user(&base).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let bridge = start_bridge(&config(tenant_for(&base, seq, native), dir.path()))
            .await
            .unwrap_or_else(|e| panic!("{label}: bridge start: {e}"));
        bridge.scim.wait_ready().await;
        let idp = Idp::checked(&bridge.scim.root, TENANT, TOKEN, &label)
            .with_admin(bridge.scim.admin_root());
        seq.run(&idp, &mut ()).await;
        settle(&idp, seq, &base).await;
        bridge.server.stop().await;
        sim.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Run 2: the simulator frozen for 40 s mid-run.
// ---------------------------------------------------------------------------------------------

/// Half the sequence, then the simulator process is stopped (SIGSTOP) and the rest is sent
/// while it is frozen; it is continued 40 s after the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_with_the_simulator_frozen_for_40s() {
    run_four("frozen", |(seq, native), label| async move {
        let (mut sim, base) = sim_process(21).await;
        if let Seq::Okta = seq {
            SisenseApi::login(&base)
                .await
                .create_user("pre@acme.test", "consumer")
                .await;
        }
        let dir = tempfile::tempdir().unwrap();
        let bridge = start_bridge(&config(tenant_for(&base, seq, native), dir.path()))
            .await
            .unwrap_or_else(|e| panic!("{label}: bridge start: {e}"));
        bridge.scim.wait_ready().await;
        let idp = Idp::checked(&bridge.scim.root, TENANT, TOKEN, &label)
            .with_admin(bridge.scim.admin_root());
        let mut freeze = Freeze::new(&mut sim, FREEZE);
        seq.run(&idp, &mut || freeze.stop()).await;
        freeze.check(&idp).await;
        settle(&idp, seq, &base).await;
        bridge.server.stop().await;
        drop(sim);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Run 3: the bridge SIGKILLed while the outbox delivers.
// ---------------------------------------------------------------------------------------------

/// The real binary with a 200 ms inline deadline in front of a simulator answering in 500 ms:
/// every write is answered from the outbox. Killed right after the last write, restarted on
/// the same data dir and port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_with_the_bridge_sigkilled_while_the_outbox_delivers() {
    run_four("sigkill", |(seq, native), label| async move {
        let sim = spawn_sim(SimOptions {
            latency_ms: 500,
            seed: Some(31),
            ..SimOptions::default()
        })
        .await;
        let base = sim.base_url();
        if let Seq::Okta = seq {
            SisenseApi::login(&base)
                .await
                .create_user("pre@acme.test", "consumer")
                .await;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut bridge = Binary::start(dir.path(), TENANT, TOKEN, |listen, data| {
        format!(
            r#"listen = "{listen}"
data_dir = "{data}"

[[tenants]]
id = "{TENANT}"
tokens = ["{TOKEN}"]

[tenants.vendor]
kind = "sisense"
base_url = "{base}/"
username = "admin@sisense.local"
password = "admin"
deprovision = "{deprovision}"
{mode}
[tenants.roles]
default = "Viewer"
rules = [ {{ group = "BI Admins", role = "Admin" }}, {{ group = "BI Designers", role = "Designer" }} ]
"#,
            data = data.display(),
            deprovision = match deprovision(seq) {
                SisenseDeprovision::Delete => "delete",
                _ => "deactivate",
            },
            mode = if native {
                format!("mode = \"scim\"\nscim_token = \"{SIM_SCIM_TOKEN}\"\n")
            } else {
                String::new()
            },
        )
        })
        .await;
        let idp = Idp::checked(&bridge.root, TENANT, TOKEN, &label).with_admin(&bridge.admin_root);
        seq.run(&idp, &mut ()).await;
        bridge.kill_and_restart(&label).await;
        // `snapshot` panics on a duplicate Sisense user; `settle` checks no orphan mapping.
        settle(&idp, seq, &base).await;
        drop(bridge);
        sim.stop().await;
    })
    .await;
}

//! Issue 14, many tenants: the start waits for the tenants' start-up checks only so long
//! (`src/server/start_checks.rs`). A config of up to 32 vendor tenants (local ones do not
//! count) is checked in full before the start, so a wrong credential still refuses it, however
//! slow the vendor; past the first 32, a check that has not answered within 3 s goes on in the
//! background, and a problem it finds stops its tenant alone: 503 with the problem's key path to the IdP,
//! the admin `/readyz` naming it, while every other tenant serves. Real sockets, a Metabase
//! simulator made slow with its own `--latency-ms`, the real store.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sim.rs"]
mod simsupport;

use scim_bridge::sim::{RunningSim, SimOptions, Vendor};
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "start-checks-token-0123456789abcdefghijklmnop";
const WRONG_KEY: &str = "mb_wrong_key_0123456789abcdef";
/// Longer than the start's 3 s wait for the checks past the first 32.
const VENDOR_LATENCY_MS: u64 = 4_000;

async fn slow_metabase() -> RunningSim {
    simsupport::spawn(
        Vendor::Metabase,
        SimOptions {
            latency_ms: VENDOR_LATENCY_MS,
            ..SimOptions::default()
        },
    )
    .await
}

/// `locals` local tenants `t00`…, then `fast` Metabase tenants `m00`… on the simulator at
/// `fast_base` with the right key, then the Metabase tenant `slow` with a key Metabase refuses.
fn config(
    dir: &std::path::Path,
    locals: usize,
    fast: usize,
    fast_base: &str,
    metabase: &str,
) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
        dir.display()
    );
    for i in 0..locals {
        text += &format!(
            "\n[[tenants]]\nid = \"t{i:02}\"\ntokens = [\"{TOKEN}-t{i:02}\"]\n[tenants.vendor]\nkind = \"local\"\n"
        );
    }
    for i in 0..fast {
        text += &format!(
            "\n[[tenants]]\nid = \"m{i:02}\"\ntokens = [\"{TOKEN}-m{i:02}\"]\n[tenants.vendor]\nkind = \"metabase\"\nbase_url = \"{fast_base}/\"\napi_key = \"{}\"\n",
            scim_bridge::sim::metabase::DEFAULT_API_KEY
        );
    }
    text += &format!(
        "\n[[tenants]]\nid = \"slow\"\ntokens = [\"{TOKEN}-slow\"]\n[tenants.vendor]\nkind = \"metabase\"\nbase_url = \"{metabase}/\"\napi_key = \"{WRONG_KEY}\"\n"
    );
    text
}

/// The only vendor tenant of a small config is checked before the start, however long its
/// vendor takes: a key Metabase refuses refuses the start, naming the key path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_config_is_checked_in_full_before_the_start() {
    let sim = slow_metabase().await;
    let dir = tempfile::tempdir().unwrap();
    // A local tenant first: only vendor tenants count towards the first wave.
    let text = config(dir.path(), 40, 0, "", &sim.base_url());
    let cfg = scim_bridge::config::Config::from_toml_str(&text, &|_| None).unwrap();
    let e = bridge::start_error(cfg)
        .await
        .expect("a refused key refuses the start of a small config");
    assert!(e.contains("tenants[40].vendor.api_key"), "{e}");
    assert!(!e.contains(WRONG_KEY), "no secret in errors: {e}");
    sim.stop().await;
}

/// Past the first 32 tenants, a check still running after 3 s does not hold the start: the
/// bridge serves, and when the check ends with a refused key, that tenant alone is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_check_that_fails_stops_its_tenant_not_the_process() {
    let sim = slow_metabase().await;
    let dir = tempfile::tempdir().unwrap();
    // 32 Metabase tenants on a quick simulator fill the first wave; `slow` is the 33rd
    // vendor tenant (`tenants[34]`, after two local ones).
    let fast = simsupport::spawn(Vendor::Metabase, SimOptions::default()).await;
    let text = config(dir.path(), 2, 32, &fast.base_url(), &sim.base_url());
    let server = bridge::serve_toml("35 tenants", &text).await;
    let root = bridge::root(&server);
    let admin = bridge::admin_root(&server);
    let http = reqwest::Client::new();

    // The stop reaches the detailed readiness, with the key path and not the key.
    let readiness = || async {
        http.get(format!("{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    bridge::converge(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "the late check stops its tenant",
        || async {
            let body = readiness().await;
            let reason = body["vendors_unavailable"]["slow"]
                .as_str()
                .unwrap_or_default();
            if reason.contains("start-up check failed") {
                vec![]
            } else {
                vec![format!("admin /readyz: {body}")]
            }
        },
    )
    .await;
    let readiness = readiness().await;
    let reason = readiness["vendors_unavailable"]["slow"].as_str().unwrap();
    assert!(reason.contains("tenants[34].vendor.api_key"), "{readiness}");
    assert!(!readiness.to_string().contains(WRONG_KEY), "{readiness}");
    // No other tenant is stopped (a quick tenant may still be named while its first read of
    // Metabase runs).
    let stopped: Vec<&String> = readiness["vendors_unavailable"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, why)| why.as_str().is_some_and(|w| w.contains("start-up check")))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(stopped, ["slow"], "{readiness}");
    // Metabase saw the check's calls and none from the engine: it left its roles to the check
    // rather than sign in beside it.
    // (Before the hand-off, the engine's own role loads read its groups twice meanwhile.)
    let calls = simsupport::stats(&sim.base_url()).await;
    assert!(
        calls["by_route"]["GET /api/permissions/group"].is_null(),
        "the engine read Metabase's groups beside its check: {calls}"
    );
    assert!(calls["requests"].as_u64().unwrap() > 0, "{calls}");

    // The stopped tenant answers the IdP 503 with the problem.
    let r = http
        .get(format!(
            "{root}/tenants/slow/scim/v2/Users?filter=userName%20eq%20%22a%22"
        ))
        .bearer_auth(format!("{TOKEN}-slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("tenants[34].vendor.api_key"), "{body}");
    assert!(!body.contains(WRONG_KEY), "{body}");

    // Every other tenant serves.
    for t in ["t00", "t01", "m00", "m31"] {
        let r = http
            .post(format!("{root}/tenants/{t}/scim/v2/Users"))
            .bearer_auth(format!("{TOKEN}-{t}"))
            .header("content-type", "application/scim+json")
            .json(&json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("ann@{t}.test"),
                "emails": [{"value": format!("ann@{t}.test"), "primary": true}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{t}: {}", r.text().await.unwrap());
    }
    server.stop().await;
    sim.stop().await;
    fast.stop().await;
}

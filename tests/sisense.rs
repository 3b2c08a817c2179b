//! The Sisense connector against the Sisense simulator over real sockets. End states are checked
//! through Sisense's own API (users, groups, roles, activation), never through bridge internals.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sisense_api.rs"]
mod sisense_api;

use bridge::config;
use idp::*;
use scim_bridge::config::{RoleRule, RoleRules, SisenseApiVersion, SisenseDeprovision};
use scim_bridge::sim::SimOptions;
use serde_json::{json, Value};
use sisense_api::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_sequence_ends_with_the_right_sisense_state() {
    okta_end_state(false).await;
}

/// `mode = "scim"`: the Okta sequence ends with the same Sisense state as over REST — users,
/// groups and membership written through Sisense's SCIM endpoint, roles through REST (which
/// Sisense's SCIM never sets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_sequence_in_scim_mode() {
    okta_end_state(true).await;
}

async fn okta_end_state(native: bool) {
    let sim = spawn_sim(SimOptions::default()).await;
    let base = sim.base_url();
    let api = SisenseApi::login(&base).await;
    api.create_user("pre@acme.test", "consumer").await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant(&base, SisenseDeprovision::Deactivate, demo_rules());
    if native {
        t = scim_mode(t);
    }
    let cfg = config(t, dir.path());
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    reset_stats(&base).await;
    okta_sequence(&bridge.scim, &mut ()).await;
    let used = routes_used(&base).await;
    // Five users and the admin, with their roles, activation and groups; bob is Robert.
    let snap = snapshot(&base).await.expect("Sisense answers");
    if let Err(d) = snap.check(&Seq::Okta.expected(&SISENSE_ROLES)) {
        panic!("Sisense's end state: {d}");
    }
    if native {
        for want in [
            "POST /api/scim/v2/Users",
            "POST /api/scim/v2/Groups",
            "PATCH /api/scim/v2/Groups/{id}",
            "PATCH /api/scim/v2/Users/{id}",
            "PATCH /api/v1/users/{id}",
        ] {
            assert!(used.iter().any(|u| u == want), "{want} not used: {used:?}");
        }
        for never in ["POST /api/v1/users", "POST /api/v1/groups"] {
            assert!(!used.iter().any(|u| u == never), "{never} used: {used:?}");
        }
    }
    // Every role change is in the audit log and counted by /metrics.
    let metrics = reqwest::get(format!("{}/metrics", bridge.scim.admin_root()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("scim_role_changes_total{tenant=\"acme\"}"))
        .expect("role change counter");
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // 4 creates + ada→admin, bob→contributor, cy→contributor→consumer, pre→contributor.
    assert!(n >= 8.0, "{line}");
    bridge.server.stop().await;
}

/// Entra: lookups by externalId and work email, create with `roles: []` and explicit nulls,
/// groups created without members and filled by multi-member `Add`, non-RFC `Remove` with a
/// value list, disable with the string "False", restore, and hard delete. With `deprovision =
/// "delete"`, a disabled user is deleted in Sisense but stays readable; re-enabling recreates it
/// with its groups and role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_sequence_with_delete_deprovisioning() {
    entra_end_state(false).await;
}

/// The same through Sisense's own SCIM endpoint (`mode = "scim"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_sequence_with_delete_deprovisioning_in_scim_mode() {
    entra_end_state(true).await;
}

async fn entra_end_state(native: bool) {
    let sim = spawn_sim(SimOptions::default()).await;
    let base = sim.base_url();
    let api = SisenseApi::login(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant(&base, SisenseDeprovision::Delete, demo_rules());
    if native {
        t = scim_mode(t);
    }
    let cfg = config(t, dir.path());
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    entra_sequence(&bridge.scim, &mut DeletedWhileDisabled(&api)).await;
    // eve and fay admins in both groups, gus deleted, fay is Fairfax; and the admin.
    let snap = snapshot(&base).await.expect("Sisense answers");
    if let Err(d) = snap.check(&Seq::Entra.expected(&SISENSE_ROLES)) {
        panic!("Sisense's end state: {d}");
    }
    bridge.server.stop().await;
}

/// `deprovision = "delete"`: a disabled user is deleted in Sisense at once (the bridge still
/// lists it, inactive).
struct DeletedWhileDisabled<'a>(&'a SisenseApi);

impl Hooks for DeletedWhileDisabled<'_> {
    async fn after(&mut self, step: Step) {
        if step == Step::Deactivated {
            let state = self.0.state().await;
            assert!(!state.contains_key("fay@contoso.test"), "{state:?}");
        }
    }
}

/// The Okta sequence with the vendor failing 10% of requests, throttling at 20 rps and expiring
/// tokens every 5 s: the same end state, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_sequence_survives_vendor_faults() {
    okta_sequence_with_faults(false).await;
}

/// The same with `mode = "scim"`: Sisense's SCIM endpoint fails and throttles too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_sequence_survives_vendor_faults_in_scim_mode() {
    okta_sequence_with_faults(true).await;
}

async fn okta_sequence_with_faults(native: bool) {
    let sim = spawn_sim(SimOptions {
        error_rate: 0.1,
        throttle_rps: Some(20.0),
        token_ttl_s: Some(5),
        seed: Some(7),
        ..SimOptions::default()
    })
    .await;
    let base = sim.base_url();
    // The checker goes through the same faulty simulator: its calls are retried.
    create_pre_user(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant(&base, SisenseDeprovision::Deactivate, demo_rules());
    if native {
        t = scim_mode(t);
    }
    let cfg = config(t, dir.path());
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    okta_sequence(&bridge.scim, &mut ()).await;
    // Long enough for tokens to expire several times: 60 more users, every third a designer.
    let designers = bridge.scim.find_group("BI Designers").await.unwrap();
    let designers = designers["id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let mut want = Seq::Okta.expected(&SISENSE_ROLES);
    for i in 0..60 {
        let name = format!("f{i:02}@acme.test");
        let id = bridge.scim.okta_assign(&name, "F", "Ault").await;
        let account = if i % 3 == 0 {
            let (s, v) = bridge
                .scim
                .patch(
                    &format!("/Groups/{designers}"),
                    patch_op(json!([{"op": "add", "path": "members", "value": [{"value": id}]}])),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            Account::new(SISENSE_ROLES.designer, true, &["BI Designers"])
        } else {
            Account::new(SISENSE_ROLES.default, true, &[])
        };
        want.users.insert(name, account);
    }
    assert!(
        started.elapsed() > std::time::Duration::from_secs(5),
        "the run outlives a token"
    );
    // Every write was answered without a 5xx (the sequence asserts each status); what the
    // vendor's faults held back is delivered by the outbox within 60 s of the last write: the
    // sequence's five users, the 60 more, and the admin.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let snap = loop {
        let snap = retry(|| snapshot(&base)).await;
        if want.check(&snap.users, 1).is_ok() || std::time::Instant::now() > deadline {
            break snap;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    if let Err(d) = want.check(&snap.users, 1) {
        panic!("Sisense's end state: {d}");
    }
    bridge.server.stop().await;
}

/// Vendor calls per SCIM operation, counted by the simulator: a lookup costs none after sync;
/// a create with its role costs one; adding it to a role-granting group costs one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_calls_per_operation() {
    let sim = spawn_sim(SimOptions::default()).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        tenant(&base, SisenseDeprovision::Deactivate, demo_rules()),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    let scim = &bridge.scim;
    scim.wait_ready().await;
    let (s, g) = scim
        .post("/Groups", json!({"displayName": "BI Admins"}))
        .await;
    assert_eq!(s, 201);
    let gid = g["id"].as_str().unwrap().to_string();
    let count = |v: Value| v["requests"].as_u64().unwrap();

    reset_stats(&base).await;
    assert!(scim.find_user("nobody@acme.test").await.is_none());
    assert!(scim.find_user("admin@sisense.local").await.is_some());
    let (s, _) = scim
        .get(&format!(
            "/Users?filter={}",
            urlencode("emails[type eq \"work\"].value eq \"x@y.z\"")
        ))
        .await;
    assert_eq!(s, 200);
    assert!(scim.find_group("BI Admins").await.is_some());
    assert_eq!(
        count(sim_stats(&base).await),
        0,
        "lookups are answered from the index"
    );

    reset_stats(&base).await;
    let uid = scim.okta_assign("new@acme.test", "New", "User").await;
    let create = count(sim_stats(&base).await);
    reset_stats(&base).await;
    let (s, _) = scim
        .patch(
            &format!("/Groups/{gid}"),
            patch_op(json!([{"op": "add", "path": "members", "value": [{"value": uid}]}])),
        )
        .await;
    assert_eq!(s, 200);
    let member = count(sim_stats(&base).await);
    eprintln!("vendor calls: lookup 0, create {create}, add to group (role + groups) {member}");
    assert_eq!(create, 1, "create with role: one POST");
    assert!(
        create + member <= 2,
        "create with role and groups costs at most 2"
    );
    // Re-sent rename and a no-op membership: nothing to send.
    reset_stats(&base).await;
    let (s, _) = scim
        .patch(
            &format!("/Groups/{gid}"),
            patch_op(json!([
                {"op": "replace", "value": {"id": gid, "displayName": "BI Admins"}},
                {"op": "add", "path": "members", "value": [{"value": uid}]}
            ])),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(count(sim_stats(&base).await), 0);
    bridge.server.stop().await;
}

/// Users created directly in Sisense while the bridge runs are found after the next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_created_in_sisense_are_found_after_sync() {
    let sim = spawn_sim(SimOptions::default()).await;
    let api = SisenseApi::login(&sim.base_url()).await;
    for i in 0..30 {
        api.create_user(&format!("direct{i}@acme.test"), "consumer")
            .await;
    }
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
    for i in 0..30 {
        assert!(bridge
            .scim
            .find_user(&format!("Direct{i}@ACME.test"))
            .await
            .is_some());
    }
    api.create_user("later@acme.test", "consumer").await;
    assert!(bridge.scim.find_user("later@acme.test").await.is_none());
    // The next sync (here: the one at restart) adopts it; the IdP's create would not duplicate.
    bridge.server.stop().await;
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    for _ in 0..100 {
        if bridge.scim.find_user("later@acme.test").await.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(bridge.scim.find_user("later@acme.test").await.is_some());
    // A POST for a Sisense user the index missed adopts it instead of a 409 or a duplicate.
    api.create_user("missed@acme.test", "consumer").await;
    let id = bridge
        .scim
        .okta_assign("missed@acme.test", "Mis", "Sed")
        .await;
    assert!(!id.is_empty());
    let state = api.state().await;
    assert_eq!(state.len(), 33, "{state:?}");
    bridge.server.stop().await;
}

/// A role rule naming a role Sisense lacks stops the tenant at start, with the key path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_naming_an_unknown_role_is_reported_at_start() {
    let sim = spawn_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = RoleRules {
        default: Some("Viewer".into()),
        rules: vec![RoleRule {
            group: Some("BI Admins".into()),
            role: "Superhero".into(),
        }],
    };
    let cfg = config(
        tenant(&sim.base_url(), SisenseDeprovision::Deactivate, rules),
        dir.path(),
    );
    let err = match start_bridge(&cfg).await {
        Ok(_) => panic!("started with a rule naming an unknown role"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("acme"), "{err}");
    assert!(err.contains("tenants[0].roles.rules[0].role"), "{err}");
    assert!(err.contains("Superhero"), "{err}");
    // Internal names and UI names both resolve.
    let rules = RoleRules {
        default: Some("consumer".into()),
        rules: vec![RoleRule {
            group: Some("BI Admins".into()),
            role: "Data Designer".into(),
        }],
    };
    let dir2 = tempfile::tempdir().unwrap();
    let cfg = config(
        tenant(&sim.base_url(), SisenseDeprovision::Deactivate, rules),
        dir2.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.server.stop().await;
}

/// Legacy v0.9 paths (users under `/api/users`, updates by PUT) against a 2021-like instance
/// whose PATCH has no `active`: provisioning with `deprovision = "delete"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_paths_with_delete_deprovisioning() {
    let sim = spawn_sim(SimOptions {
        legacy_2021: true,
        ..SimOptions::default()
    })
    .await;
    let api = SisenseApi::login(&sim.base_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        tenant_v(
            &sim.base_url(),
            SisenseDeprovision::Delete,
            demo_rules(),
            SisenseApiVersion::V0_9,
        ),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    let scim = &bridge.scim;
    scim.wait_ready().await;
    let ada = scim.okta_assign("ada@acme.test", "Ada", "L").await;
    let (s, g) = scim
        .post(
            "/Groups",
            json!({"displayName": "BI Designers", "members": [{"value": ada}]}),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let (s, _) = scim
        .patch(
            &format!("/Users/{ada}"),
            patch_op(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .await;
    assert_eq!(s, 200);
    assert!(!api.state().await.contains_key("ada@acme.test"));
    let (s, _) = scim
        .patch(
            &format!("/Users/{ada}"),
            patch_op(json!([{"op": "replace", "value": {"active": true}}])),
        )
        .await;
    assert_eq!(s, 200);
    let state = api.state().await;
    assert_eq!(
        state.get("ada@acme.test"),
        Some(&(
            "contributor".to_string(),
            true,
            vec!["BI Designers".to_string()]
        ))
    );
    let stats = sim_stats(&sim.base_url()).await;
    let routes = stats["by_route"].as_object().unwrap();
    assert!(
        routes.keys().any(|k| k.starts_with("PUT /api/users/")),
        "{stats}"
    );
    // Groups too are written on the v0.9 paths (the checker only reads v1).
    assert!(routes.contains_key("POST /api/groups"), "{stats}");
    assert!(
        !routes.keys().any(|k| k.contains(" /api/v1/")
            && !k.starts_with("GET ")
            && !k.contains("/authentication/")),
        "{stats}"
    );
    bridge.server.stop().await;
}

/// While Sisense is down the IdP's writes are accepted at once (queued, never a 5xx, never
/// slower than the inline deadline), `/readyz` stays 200 while the detailed readiness names the
/// tenant, lookups are answered from the index, and once Sisense is back the outbox delivers
/// every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_down_queues_writes_and_delivers_them_when_it_is_back() {
    // A seed: the restarted simulator has the same role ids, as a real Sisense would.
    let seeded = || SimOptions {
        seed: Some(11),
        ..SimOptions::default()
    };
    let sim = spawn_sim(seeded()).await;
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
    let http = reqwest::Client::new();
    let mut named = false;
    for i in 0..25 {
        let started = std::time::Instant::now();
        let r = http
            .post(format!("{}/Users", bridge.scim.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(
                json!({"userName": format!("down{i}@acme.test"),
                       "emails": [{"value": format!("down{i}@acme.test")}]})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        assert!(started.elapsed() < std::time::Duration::from_secs(15));
        // The public readiness stays 200 and names nobody; the admin listener says who.
        let public = http
            .get(format!("{}/readyz", bridge.scim.root))
            .send()
            .await
            .unwrap();
        assert_eq!(public.status().as_u16(), 200);
        let body: Value = public.json().await.unwrap();
        assert_eq!(body, json!({"status": "ready"}), "the public /readyz");
        let ready = http
            .get(format!("{}/readyz", bridge.scim.admin_root()))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status().as_u16(), 200);
        let body: Value = ready.json().await.unwrap();
        named |= body["vendors_unavailable"].get("acme").is_some();
    }
    assert!(
        named,
        "the detailed readiness names the tenant once the breaker opens"
    );
    // Lookups are still answered from the index, pending users included (the IdP's state).
    assert!(bridge.scim.find_user("admin@sisense.local").await.is_some());
    assert!(bridge.scim.find_user("down7@acme.test").await.is_some());
    // Sisense comes back (empty: the simulator keeps no state across a restart).
    let _sim = scim_bridge::sim::start(scim_bridge::sim::Vendor::Sisense, addr, seeded())
        .await
        .expect("simulator restarts on the same port");
    let api = SisenseApi::login(&format!("http://{addr}")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let state = api.state().await;
        if (0..25).all(|i| {
            state
                .get(&format!("down{i}@acme.test"))
                .is_some_and(|s| s.0 == "consumer")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {state:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    bridge.server.stop().await;
}

/// `on_vendor_unavailable = "fail"`: today's behaviour on request — while Sisense is down a
/// write is answered 503 with `Retry-After` and nothing is kept (the IdP's retry is a create
/// again, not a 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_policy_answers_503_and_keeps_nothing() {
    let sim = spawn_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        demo_rules(),
    );
    t.on_vendor_unavailable = scim_bridge::config::OnVendorUnavailable::Fail;
    let bridge = start_bridge(&config(t, dir.path())).await.unwrap();
    bridge.scim.wait_ready().await;
    sim.stop().await;
    // One request (the test client's helper would retry a 503).
    let r = reqwest::Client::new()
        .post(format!("{}/Users", bridge.scim.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(
            json!({"userName": "nope@acme.test", "emails": [{"value": "nope@acme.test"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert!(bridge.scim.find_user("nope@acme.test").await.is_none());
    bridge.server.stop().await;
}

/// The real binary, killed with SIGKILL in the middle of provisioning 1,000 users and
/// restarted: the same end state, no duplicate Sisense user, no orphan mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_provisioning_then_restart() {
    sigkill_run(false).await;
}

/// The same through Sisense's own SCIM endpoint, where a create is two vendor calls: a kill
/// between them is completed by the sync at restart (every user must end up a Designer, which
/// Sisense's SCIM does not give by itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_provisioning_then_restart_in_scim_mode() {
    sigkill_run(true).await;
}

async fn sigkill_run(native: bool) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const N: usize = 1000;
    let sim = spawn_sim(SimOptions {
        latency_ms: 2,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The admin listener on a port of its own: tests run side by side, 9090 is for one.
    let admin_port = free_port();
    let config_path = dir.path().join("scim-bridge.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:{port}"
data_dir = "{data}"

[admin]
listen = "127.0.0.1:{admin_port}"

[[tenants]]
id = "{TENANT}"
tokens = ["{TOKEN}"]

[tenants.vendor]
kind = "sisense"
base_url = "{base}/"
username = "admin@sisense.local"
password = "admin"
deprovision = "deactivate"
{mode}
[tenants.roles]
default = "Designer"
rules = [ {{ group = "BI Admins", role = "Admin" }} ]
"#,
            data = dir.path().join("data").display(),
            base = sim.base_url(),
            mode = if native {
                format!("mode = \"scim\"\nscim_token = \"{SIM_SCIM_TOKEN}\"\n")
            } else {
                String::new()
            },
        ),
    )
    .unwrap();
    let spawn = || {
        ChildGuard::spawn(
            bridge_command()
                .args(["serve", "--config"])
                .arg(&config_path),
        )
    };
    let mut child = spawn();
    let scim = Scim::new(
        &format!("http://127.0.0.1:{port}"),
        &format!("http://127.0.0.1:{admin_port}"),
    );
    scim.wait_ready().await;
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (scim, done, next) = (scim.clone(), done.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= N {
                    return;
                }
                idp_assign(&scim, &format!("k{i:04}@acme.test")).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while done.load(Ordering::SeqCst) < N * 2 / 5 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill9();
    let killed_at = done.load(Ordering::SeqCst);
    let child = spawn();
    for w in workers {
        w.await.unwrap();
    }
    // Group push after the restart: every tenth user is a BI Admin.
    let admins: Vec<String> = {
        let mut v = Vec::new();
        for i in (0..N).step_by(10) {
            let u = scim.find_user(&format!("k{i:04}@acme.test")).await.unwrap();
            v.push(u["id"].as_str().unwrap().to_string());
        }
        v
    };
    let (s, g) = scim
        .post("/Groups", json!({"displayName": "BI Admins"}))
        .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().unwrap();
    let members: Vec<Value> = admins.iter().map(|a| json!({"value": a})).collect();
    let (s, v) = scim
        .patch(
            &format!("/Groups/{gid}?excludedAttributes=members"),
            patch_op(json!([{"op": "add", "path": "members", "value": members}])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // A create cut between its two calls (SCIM POST, then the role) is finished from the outbox
    // after the restart, in the background of the IdP's answers: wait for it, bounded.
    let api = SisenseApi::login(&sim.base_url()).await;
    let admin_root = format!("http://127.0.0.1:{admin_port}");
    // Bounded generously: CI runs this beside the chaos suites on two cores, where a vendor
    // call may time out and back off (the outbox summary in a failure says what is left).
    bridge::converge(
        std::time::Duration::from_secs(150),
        std::time::Duration::from_millis(500),
        &format!("Sisense after a kill at {killed_at} users"),
        || async {
            let state = api.state().await; // panics on a duplicate userName
            let mut diff = Vec::new();
            if state.len() != N + 1 {
                diff.push(format!("{} users, not {}", state.len(), N + 1));
            }
            for i in 0..N {
                let name = format!("k{i:04}@acme.test");
                let Some((role, active, groups)) = state.get(&name) else {
                    diff.push(format!("{name} missing"));
                    continue;
                };
                let want: (&str, &[String]) = if i % 10 == 0 {
                    ("admin", &["BI Admins".to_string()][..])
                } else {
                    ("contributor", &[][..])
                };
                if !*active || (role.as_str(), groups.as_slice()) != want {
                    diff.push(format!("{name}: {role} active={active} {groups:?}"));
                }
            }
            if !diff.is_empty() {
                diff.push(bridge::outbox_summary(&admin_root, TENANT).await);
            }
            diff
        },
    )
    .await;
    let state = api.state().await;
    // No orphan mapping: the bridge's users are exactly Sisense's users.
    let mut seen = std::collections::HashSet::new();
    let mut start = 1;
    loop {
        let (s, v) = scim
            .get(&format!("/Users?startIndex={start}&count=200"))
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["totalResults"], json!(N + 1));
        let page = v["Resources"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            break;
        }
        for u in &page {
            let name = u["userName"].as_str().unwrap().to_lowercase();
            assert!(state.contains_key(&name), "{name} is not in Sisense");
            assert!(seen.insert(name));
        }
        start += page.len();
    }
    assert_eq!(seen.len(), N + 1);
    drop(child);
}

/// An IdP's assignment that survives the bridge going away: lookup, then create; a failed or
/// conflicting create is followed by a fresh lookup, never by a blind re-POST.
async fn idp_assign(scim: &Scim, user_name: &str) {
    for _ in 0..600 {
        let q = format!(
            "/Users?filter={}",
            urlencode(&format!("userName eq \"{user_name}\""))
        );
        let found = match scim
            .http
            .get(format!("{}{q}", scim.base))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
            _ => None,
        };
        let Some(found) = found else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        if found["totalResults"] != json!(0) {
            return;
        }
        let r = scim
            .http
            .post(format!("{}/Users", scim.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(
                json!({"userName": user_name, "name": {"givenName": "K", "familyName": user_name},
                       "emails": [{"value": user_name, "primary": true}], "active": true})
                .to_string(),
            )
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 201 => return,
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    panic!("could not assign {user_name}");
}

/// Roles follow every change that can move them: the user's SCIM `roles` (a rule without a
/// group), a group's rename (rules match names), and a group's deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_follows_scim_roles_group_rename_and_group_delete() {
    let sim = spawn_sim(SimOptions::default()).await;
    let api = SisenseApi::login(&sim.base_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = RoleRules {
        default: Some("Viewer".into()),
        rules: vec![
            RoleRule {
                group: Some("BI Admins".into()),
                role: "Admin".into(),
            },
            RoleRule {
                group: None,
                role: "Designer".into(),
            },
        ],
    };
    let cfg = config(
        tenant(&sim.base_url(), SisenseDeprovision::Deactivate, rules),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    let scim = &bridge.scim;
    scim.wait_ready().await;
    let role =
        |state: &std::collections::HashMap<String, UserState>| state["ren@acme.test"].0.clone();
    let uid = scim.okta_assign("ren@acme.test", "Ren", "Ames").await;
    assert_eq!(role(&api.state().await), "consumer");
    let (s, _) = scim
        .patch(
            &format!("/Users/{uid}"),
            patch_op(json!([{"op": "add", "path": "roles", "value": [{"value": "Designer"}]}])),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(role(&api.state().await), "contributor");
    let (s, g) = scim
        .post(
            "/Groups",
            json!({"displayName": "Team X", "members": [{"value": uid}]}),
        )
        .await;
    assert_eq!(s, 201);
    let gid = g["id"].as_str().unwrap().to_string();
    assert_eq!(role(&api.state().await), "contributor");
    let (s, _) = scim
        .patch(
            &format!("/Groups/{gid}"),
            patch_op(json!([{"op": "replace", "path": "displayName", "value": "BI Admins"}])),
        )
        .await;
    assert_eq!(s, 200);
    let state = api.state().await;
    assert_eq!(
        state["ren@acme.test"],
        ("admin".to_string(), true, vec!["BI Admins".to_string()])
    );
    let (s, _) = scim.delete(&format!("/Groups/{gid}")).await;
    assert_eq!(s, 204);
    let state = api.state().await;
    assert_eq!(
        state["ren@acme.test"],
        ("contributor".to_string(), true, vec![])
    );
    assert!(!api.groups().await.iter().any(|g| g["name"] == "BI Admins"));
    bridge.server.stop().await;
}

/// The interval sync (here triggered directly): users created in Sisense while the bridge runs
/// are found by the IdP's lookup afterwards, without a restart; a user deleted in Sisense leaves
/// the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_sync_adopts_new_sisense_users_and_drops_deleted_ones() {
    let sim = spawn_sim(SimOptions::default()).await;
    let api = SisenseApi::login(&sim.base_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        demo_rules(),
    );
    let (conn, server, scim) = bridge_with_connector(t, dir.path()).await;
    let gone = scim.okta_assign("gone@acme.test", "Gone", "Soon").await;
    let made = api.create_user("made.later@acme.test", "contributor").await;
    assert!(scim.find_user("made.later@acme.test").await.is_none());
    let vid = api
        .users()
        .await
        .into_iter()
        .find(|u| u["userName"] == "gone@acme.test")
        .unwrap()["_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/users/{vid}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let report = conn.observe_now().await.unwrap();
    assert_eq!(
        (report.users_adopted, report.users_removed),
        (1, 1),
        "{report:?}"
    );
    let found = scim
        .find_user("made.later@acme.test")
        .await
        .expect("adopted");
    assert_eq!(found["name"]["givenName"], json!("Direct"));
    let (s, _) = scim.get(&format!("/Users/{gone}")).await;
    assert_eq!(s, 404);
    let _ = made;
    server.stop().await;
}

/// Changes made in Sisense to users the bridge maps: the profile and the membership of mirrored
/// groups are pulled into the index; a role that the rules do not give is put back (audited as
/// `sync`), and one that matches is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pulls_sisense_side_changes_and_corrects_role_drift() {
    sync_drift(false).await;
}

/// The same in `mode = "scim"` (the IdP's writes went through Sisense's SCIM endpoint; a steady
/// second sync must still find nothing changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pulls_sisense_side_changes_and_corrects_role_drift_in_scim_mode() {
    sync_drift(true).await;
}

async fn sync_drift(native: bool) {
    let sim = spawn_sim(SimOptions::default()).await;
    let api = SisenseApi::login(&sim.base_url()).await;
    // Sisense's own user, adopted by sync but never written by the IdP: not the rules' business.
    api.create_user("native@acme.test", "contributor").await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        demo_rules(),
    );
    if native {
        t = scim_mode(t);
    }
    let (conn, server, scim) = bridge_with_connector(t, dir.path()).await;
    let alice = scim.okta_assign("alice@acme.test", "Alice", "Ames").await;
    let bob = scim.okta_assign("bob@acme.test", "Bob", "Birch").await;
    let carol = scim.okta_assign("carol@acme.test", "Carol", "Cole").await;
    let (s, g) = scim
        .post(
            "/Groups",
            json!({"displayName": "BI Admins", "members": [{"value": bob}]}),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let before = api.state().await;
    assert_eq!(before["alice@acme.test"].0, "consumer");
    assert_eq!(before["bob@acme.test"].0, "admin");
    let audited = conn.audit().len();

    // In Sisense, by hand: alice made a contributor and renamed; bob taken out of BI Admins;
    // carol put into BI Admins and made an admin (what the rules say for that group).
    let roles = api.role_names().await;
    let role_id = |n: &str| roles.iter().find(|(_, v)| *v == n).unwrap().0.clone();
    let vid = |name: &str| {
        let name = name.to_string();
        let api = &api;
        async move {
            api.users()
                .await
                .into_iter()
                .find(|u| u["userName"] == name.as_str())
                .unwrap()["_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let vgid = api
        .groups()
        .await
        .into_iter()
        .find(|g| g["name"] == "BI Admins")
        .unwrap()["_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (user, body) in [
        (
            "alice@acme.test",
            json!({"roleId": role_id("contributor"), "lastName": "Changed"}),
        ),
        ("bob@acme.test", json!({"groups": []})),
        (
            "carol@acme.test",
            json!({"groups": [vgid], "roleId": role_id("admin")}),
        ),
        (
            "native@acme.test",
            json!({"roleId": role_id("dataDesigner")}),
        ),
    ] {
        let id = vid(user).await;
        let (s, v) = api
            .call(
                reqwest::Method::PATCH,
                &format!("/api/v1/users/{id}"),
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    let report = conn.observe_now().await.unwrap();
    assert_eq!(
        (
            report.users_pulled,
            report.roles_corrected,
            report.roles_failed
        ),
        (3, 2, 0),
        "{report:?}"
    );
    let after = api.state().await;
    assert_eq!(after["alice@acme.test"].0, "consumer", "drift put back");
    assert_eq!(after["bob@acme.test"], ("consumer".into(), true, vec![]));
    assert_eq!(
        after["carol@acme.test"],
        ("admin".into(), true, vec!["BI Admins".into()])
    );
    assert_eq!(after["native@acme.test"].0, "dataDesigner", "left alone");
    let (_, a) = scim.get(&format!("/Users/{alice}")).await;
    assert_eq!(a["name"]["familyName"], json!("Changed"));
    let (_, g) = scim.get(&format!("/Groups/{gid}")).await;
    let members: Vec<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![carol.as_str()]);
    let entries = conn.audit().entries().unwrap();
    assert_eq!(conn.audit().len(), audited + 2);
    let by_sync: Vec<_> = entries.iter().filter(|e| e.actor == "sync").collect();
    assert_eq!(by_sync.len(), 2, "{by_sync:?}");
    assert!(
        by_sync.iter().any(|e| e.user_name == "alice@acme.test"
            && e.from.as_deref() == Some("Designer")
            && e.to == "Viewer"),
        "{by_sync:?}"
    );

    // Nothing changed since: a second sync pulls and corrects nothing.
    let report = conn.observe_now().await.unwrap();
    assert_eq!(
        (
            report.states_refreshed,
            report.users_pulled,
            report.roles_corrected
        ),
        (0, 0, 0),
        "{report:?}"
    );
    server.stop().await;
}

/// The vendor routes a run used, by `METHOD /pattern`, from `/__sim/stats`.
async fn routes_used(base: &str) -> Vec<String> {
    let v = sim_stats(base).await;
    v["by_route"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, _)| k.clone())
        .collect()
}

/// `mode = "scim"` with `deprovision = "delete"`, and what it costs: a create with its role is
/// one SCIM POST and one REST PATCH; adding a member is one SCIM group PATCH (plus the role PATCH
/// when the role moves); deleting the user is one SCIM DELETE; re-enabling recreates the user with
/// its groups and role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_mode_costs_and_delete_deprovisioning() {
    let sim = spawn_sim(SimOptions::default()).await;
    let base = sim.base_url();
    let api = SisenseApi::login(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        scim_mode(tenant(&base, SisenseDeprovision::Delete, demo_rules())),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    let scim = &bridge.scim;
    scim.wait_ready().await;
    let (s, g) = scim
        .post("/Groups", json!({"displayName": "BI Admins"}))
        .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    let count = |v: Value| v["requests"].as_u64().unwrap();

    reset_stats(&base).await;
    assert!(scim.find_user("nobody@acme.test").await.is_none());
    assert_eq!(count(sim_stats(&base).await), 0, "lookups from the index");
    let uid = scim.okta_assign("eve@acme.test", "Eve", "Ellis").await;
    assert_eq!(count(sim_stats(&base).await), 2, "SCIM POST + role PATCH");
    reset_stats(&base).await;
    let (s, _) = scim
        .patch(
            &format!("/Groups/{gid}"),
            patch_op(json!([{"op": "add", "path": "members", "value": [{"value": uid}]}])),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        count(sim_stats(&base).await),
        2,
        "group member PATCH + role PATCH: {}",
        sim_stats(&base).await
    );
    let state = api.state().await;
    assert_eq!(
        state["eve@acme.test"],
        ("admin".into(), true, vec!["BI Admins".into()])
    );

    // Disable: deleted in Sisense, still readable in SCIM.
    let (s, _) = scim
        .patch(
            &format!("/Users/{uid}"),
            patch_op(json!([{"op": "replace", "path": "active", "value": false}])),
        )
        .await;
    assert_eq!(s, 200);
    assert!(!api.state().await.contains_key("eve@acme.test"));
    let (s, u) = scim.get(&format!("/Users/{uid}")).await;
    assert_eq!((s, u["active"].clone()), (200, json!(false)));
    // Enable: recreated through SCIM, back in its group with its role.
    let (s, _) = scim
        .patch(
            &format!("/Users/{uid}"),
            patch_op(json!([{"op": "replace", "path": "active", "value": true}])),
        )
        .await;
    assert_eq!(s, 200);
    let state = api.state().await;
    assert_eq!(
        state["eve@acme.test"],
        ("admin".into(), true, vec!["BI Admins".into()])
    );
    // Rename and delete of the group go through SCIM too.
    let (s, _) = scim
        .patch(
            &format!("/Groups/{gid}"),
            patch_op(json!([{"op": "replace", "path": "displayName", "value": "Analysts"}])),
        )
        .await;
    assert_eq!(s, 200);
    let state = api.state().await;
    assert_eq!(
        state["eve@acme.test"],
        ("consumer".into(), true, vec!["Analysts".into()]),
        "renamed away from the rule's group: back to the default role"
    );
    let (s, _) = scim.delete(&format!("/Groups/{gid}")).await;
    assert_eq!(s, 204);
    assert!(api.groups().await.iter().all(|g| g["name"] != "Analysts"));
    let (s, _) = scim.delete(&format!("/Users/{uid}")).await;
    assert_eq!(s, 204);
    assert!(!api.state().await.contains_key("eve@acme.test"));
    bridge.server.stop().await;
}

/// A wrong SCIM token is reported at start with its key path, never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_mode_with_a_wrong_token_is_refused_at_start() {
    let sim = spawn_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = scim_mode(tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        demo_rules(),
    ));
    if let scim_bridge::config::VendorConfig::Sisense { scim_token, .. } = &mut t.vendor {
        *scim_token = Some(scim_bridge::config::Secret::new("wrong-token-s3cr3t"));
    }
    let err = match start_bridge(&config(t, dir.path())).await {
        Ok(_) => panic!("started with a wrong SCIM token"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("tenants[0].vendor.scim_token"), "{err}");
    assert!(err.contains("refused the token"), "{err}");
    assert!(!err.contains("wrong-token-s3cr3t"), "{err}");
}

/// `config check --online` tries the SCIM token of a `mode = "scim"` tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_reports_a_refused_scim_token() {
    use scim_bridge::connector::sisense::check_online;
    let sim = spawn_sim(SimOptions::default()).await;
    let good = scim_mode(tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        demo_rules(),
    ));
    let problems = check_online(&good, 0).await;
    assert!(
        !problems.iter().any(|p| p.key_path.ends_with("scim_token")),
        "{problems:?}"
    );
    let mut bad = good.clone();
    if let scim_bridge::config::VendorConfig::Sisense { scim_token, .. } = &mut bad.vendor {
        *scim_token = Some(scim_bridge::config::Secret::new("not-the-token-0xdead"));
    }
    let problems = check_online(&bad, 0).await;
    let p = problems
        .iter()
        .find(|p| p.key_path == "tenants[0].vendor.scim_token")
        .unwrap_or_else(|| panic!("{problems:?}"));
    assert!(p.message.contains("refused the token"), "{p:?}");
    assert!(!format!("{problems:?}").contains("not-the-token-0xdead"));
}

/// `mode = "scim"` creates a user with two vendor calls (SCIM `POST`, then the role over REST).
/// Killed between them, the bridge left the user dirty in its outbox; the next pass sends the
/// `POST` again, meets Sisense's duplicate answer, takes the user over and sets the role the
/// rules give — never a second user, never Sisense's default role. Here the first `POST` is
/// made by hand (what the killed bridge had sent), then the IdP's create goes through the
/// bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_mode_create_that_reached_sisense_before_a_crash_is_taken_over_with_its_role() {
    let sim = spawn_sim(SimOptions::default()).await;
    let base = sim.base_url();
    let api = SisenseApi::login(&base).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/scim/v2/Users"))
        .bearer_auth(SIM_SCIM_TOKEN)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "half@acme.test",
            "emails": [{"value": "half@acme.test", "primary": true}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(api.state().await["half@acme.test"].0, "consumer");

    let dir = tempfile::tempdir().unwrap();
    let rules = RoleRules {
        default: Some("Designer".into()),
        ..demo_rules()
    };
    let t = scim_mode(tenant(&base, SisenseDeprovision::Deactivate, rules));
    let (conn, server, scim) = bridge_with_connector(t, dir.path()).await;
    // The observe at start did not adopt it as a user of its own: it is Sisense's until the
    // IdP writes it, and the IdP's create takes it over.
    let (status, body) = scim
        .post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "half@acme.test",
                "emails": [{"value": "half@acme.test", "primary": true}]}),
        )
        .await;
    assert!(status == 201 || status == 409, "{status} {body}");
    if status == 409 {
        // Observe adopted it first: the IdP's lookup finds it and writes it (Okta's flow).
        let found = scim.find_user("half@acme.test").await.expect("adopted");
        let id = found["id"].as_str().unwrap();
        let (status, body) = scim
            .patch(
                &format!("/Users/{id}"),
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "value": {"name": {"givenName": "Half"}}}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let state = api.state().await;
    assert_eq!(state["half@acme.test"].0, "contributor", "{state:?}");
    assert_eq!(
        api.users()
            .await
            .iter()
            .filter(|u| u["userName"] == "half@acme.test")
            .count(),
        1
    );
    assert!(conn.outbox().is_empty(), "{:?}", conn.outbox());
    let entries = conn.audit().entries().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.user_name == "half@acme.test" && e.to == "Designer"),
        "{entries:?}"
    );
    server.stop().await;
}

/// `mode = "scim"`: when Sisense starts refusing the SCIM token (revoked in Admin > Security),
/// writes are still accepted — queued in the outbox, never a 5xx — `/readyz` stays 200 (one
/// vendor's trouble must not take the bridge out of a load balancer), and the detailed
/// readiness names the tenant and the token, never the token itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_mode_revoked_token_queues_writes_and_names_the_tenant() {
    let sim = spawn_sim(SimOptions::default()).await;
    let addr = sim.addr;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        scim_mode(tenant(
            &sim.base_url(),
            SisenseDeprovision::Deactivate,
            demo_rules(),
        )),
        dir.path(),
    );
    let bridge = start_bridge(&cfg).await.unwrap();
    bridge.scim.wait_ready().await;
    // The same Sisense, now with another SCIM token.
    sim.stop().await;
    let _sim = scim_bridge::sim::start(
        scim_bridge::sim::Vendor::Sisense,
        addr,
        SimOptions {
            switches: vec![("sisense.scim_token".into(), "rotated-token".into())],
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator restarts on the same port");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/Users", bridge.scim.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(
            json!({"userName": "late@acme.test", "emails": [{"value": "late@acme.test"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "accepted and queued");
    let ready = http
        .get(format!("{}/readyz", bridge.scim.root))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "ready"}),
        "the public /readyz names nobody"
    );
    let detail: Value = http
        .get(format!("{}/readyz", bridge.scim.admin_root()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let why = detail["vendors_unavailable"]["acme"].to_string();
    assert!(why.contains("SCIM endpoint refuses the token"), "{detail}");
    assert!(!why.contains(SIM_SCIM_TOKEN), "{detail}");
    let metrics = http
        .get(format!("{}/metrics", bridge.scim.admin_root()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("scim_outbox_depth{state=\"pending\",tenant=\"acme\"} 1"),
        "{metrics}"
    );
    bridge.server.stop().await;
}

/// Editing the role rules re-evaluates, at the next start's sync, every user the IdP has
/// written (audited as `sync`); Sisense's own users keep their role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_role_rules_apply_to_existing_users_at_the_next_sync() {
    let sim = spawn_sim(SimOptions::default()).await;
    let api = SisenseApi::login(&sim.base_url()).await;
    api.create_user("own@acme.test", "contributor").await;
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        demo_rules(),
    );
    let (conn, server, scim) = bridge_with_connector(t.clone(), dir.path()).await;
    let rita = scim.okta_assign("rita@acme.test", "Rita", "Ray").await;
    let (s, _) = scim
        .post(
            "/Groups",
            json!({"displayName": "BI Designers", "members": [{"value": rita}]}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(api.state().await["rita@acme.test"].0, "contributor");
    // A steady sync with the same rules changes nothing.
    let report = conn.observe_now().await.unwrap();
    assert_eq!(report.roles_corrected, 0, "{report:?}");
    server.stop().await;
    drop(conn);

    let mut edited = t;
    edited.roles = RoleRules {
        default: Some("Viewer".into()),
        rules: vec![RoleRule {
            group: Some("BI Designers".into()),
            role: "Admin".into(),
        }],
    };
    let (conn, server, _scim) = bridge_with_connector(edited, dir.path()).await;
    let state = api.state().await;
    assert_eq!(state["rita@acme.test"].0, "admin", "{state:?}");
    assert_eq!(state["own@acme.test"].0, "contributor", "{state:?}");
    let entries = conn.audit().entries().unwrap();
    assert!(
        entries.iter().any(|e| e.user_name == "rita@acme.test"
            && e.actor == "sync"
            && e.cause.contains("rules edited")
            && e.to == "Admin"),
        "{entries:?}"
    );
    let report = conn.observe_now().await.unwrap();
    assert_eq!(report.roles_corrected, 0, "once: {report:?}");
    server.stop().await;
}

/// `If-Match` with the ETag `GET` just returned passes on PATCH, PUT and DELETE of a Sisense
/// user that is in a group (the version covers the user's groups, and the precondition is
/// compared with that same version); a stale one is 412. `/metrics` shows the engine's series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_uses_the_version_get_returns_and_metrics_show_the_engine() {
    let sim = spawn_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let bridge = start_bridge(&config(
        tenant(
            &sim.base_url(),
            SisenseDeprovision::Deactivate,
            demo_rules(),
        ),
        dir.path(),
    ))
    .await
    .unwrap();
    bridge.scim.wait_ready().await;
    let scim = &bridge.scim;
    let uid = scim.okta_assign("ida@acme.test", "Ida", "Etag").await;
    let (s, g) = scim
        .post(
            "/Groups",
            json!({"displayName": "BI Designers", "members": [{"value": uid}]}),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let http = reqwest::Client::new();
    let url = format!("{}/Users/{uid}", scim.base);
    let etag = |r: &reqwest::Response| {
        r.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap()
            .to_string()
    };
    let send = |m: reqwest::Method, tag: String, body: Option<Value>| {
        let mut rb = http
            .request(m, &url)
            .bearer_auth(TOKEN)
            .header("if-match", tag)
            .header("content-type", "application/scim+json");
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        rb.send()
    };
    let get = || http.get(&url).bearer_auth(TOKEN).send();
    let r = get().await.unwrap();
    let tag = etag(&r);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["groups"].as_array().map(Vec::len), Some(1), "{doc}");
    let r = send(
        reqwest::Method::PATCH,
        tag.clone(),
        Some(patch_op(
            json!([{"op": "replace", "path": "name.givenName", "value": "Idaho"}]),
        )),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The old tag is stale now.
    let r = send(
        reqwest::Method::PATCH,
        tag,
        Some(patch_op(
            json!([{"op": "replace", "path": "name.givenName", "value": "Stale"}]),
        )),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 412);
    let r = get().await.unwrap();
    let tag = etag(&r);
    let mut doc: Value = r.json().await.unwrap();
    doc["name"]["familyName"] = json!("Tagged");
    let r = send(reqwest::Method::PUT, tag, Some(doc)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let tag = etag(&get().await.unwrap());
    let r = send(reqwest::Method::DELETE, tag, None).await.unwrap();
    assert_eq!(r.status().as_u16(), 204);

    let metrics = http
        .get(format!("{}/metrics", scim.admin_root()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line_start} missing:\n{metrics}"))
    };
    assert!(value("scim_vendor_deliveries_total{outcome=\"delivered\",tenant=\"acme\"}") >= 4.0);
    assert_eq!(
        value("scim_outbox_depth{state=\"pending\",tenant=\"acme\"}"),
        0.0
    );
    assert!(value("scim_vendor_send_rate{tenant=\"acme\"}") > 0.0);
    assert_eq!(
        value("scim_outbox_oldest_pending_seconds{tenant=\"acme\"}"),
        0.0
    );
    bridge.server.stop().await;
}

/// With `deprovision = "deactivate"`, an IdP `DELETE` and then a create of the same userName
/// give back the same Sisense user, active, with its role from the rules: not a 409, and not a
/// second user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_create_of_the_same_user_name_gives_back_the_same_sisense_user() {
    let sim = spawn_sim(SimOptions::default()).await;
    let api = SisenseApi::login(&sim.base_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = RoleRules {
        default: Some("Designer".into()),
        ..demo_rules()
    };
    let bridge = start_bridge(&config(
        tenant(&sim.base_url(), SisenseDeprovision::Deactivate, rules),
        dir.path(),
    ))
    .await
    .unwrap();
    bridge.scim.wait_ready().await;
    let scim = &bridge.scim;
    let first = scim.okta_assign("rey@acme.test", "Rey", "Again").await;
    let vendor_id = |users: Vec<Value>| {
        users
            .into_iter()
            .filter(|u| u["userName"] == "rey@acme.test")
            .map(|u| u["_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let before = vendor_id(api.users().await);
    assert_eq!(before.len(), 1);
    let (s, _) = scim.delete(&format!("/Users/{first}")).await;
    assert_eq!(s, 204);
    assert!(!api.state().await["rey@acme.test"].1, "deactivated, kept");
    let again = scim.okta_assign("rey@acme.test", "Rey", "Again").await;
    assert_ne!(again, first, "a new SCIM user");
    assert_eq!(
        vendor_id(api.users().await),
        before,
        "the same Sisense user"
    );
    let state = api.state().await;
    assert_eq!(state["rey@acme.test"], ("contributor".into(), true, vec![]));
    bridge.server.stop().await;
}

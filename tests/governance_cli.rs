//! The operations commands of CONTRACT §5 (`audit export`, `audit verify`, `report access`,
//! `sweep dormant`, `plan`) as an operator runs them: the real binary against a running bridge
//! (`serve`, the Tableau simulator behind it) through the admin API, then against the stopped
//! bridge's store with `--data-dir` — where an altered or removed audit entry makes
//! `audit verify` fail, naming it.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sim.rs"]
mod sim;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use idp::*;
use serde_json::{json, Value};
use std::process::Output;
use std::time::{Duration, Instant};
use tableau_api::*;

const ADMIN_TOKEN: &str = "cli-test-admin-token-0123456789abcdef";

fn cli(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
        .args(args)
        .env_remove("SCIM_BRIDGE_ADMIN_TOKEN")
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_commands_against_a_running_bridge_and_its_store() {
    let sim = sim::spawn_with(scim_bridge::sim::Vendor::Tableau, 11, &[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let data = dir.path().join("data");
    let config = dir.path().join("scim-bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
data_dir = "{data}"

[admin]
listen = "127.0.0.1:{admin_port}"
tokens = ["{ADMIN_TOKEN}"]

[[tenants]]
id = "{BRIDGE_TENANT}"
tokens = ["{BRIDGE_TOKEN}"]

[tenants.vendor]
kind = "tableau"
base_url = "{base}/"
site = "{SITE}"
api_version = "{API_VERSION}"
pat_name = "{PAT_NAME}"
pat_secret = "{PAT_SECRET}"
deprovision = "unlicense"

[tenants.roles]
default = "Viewer"
rules = [ {{ group = "BI Admins", role = "SiteAdministratorExplorer" }} ]
"#,
            data = data.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let mut bridge = ChildGuard::spawn(bridge_command().args(["serve", "--config", cfg]));
    let root = format!("http://127.0.0.1:{port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let idp = Idp::patient(&root, BRIDGE_TENANT, BRIDGE_TOKEN).with_admin(&admin);
    idp.wait_ready().await;

    let user = |login: &str| {
        json!({"userName": login, "name": {"givenName": "G", "familyName": login},
               "emails": [{"value": login, "primary": true}], "active": true})
    };
    let ann = create(&idp, "/Users", user("ann@acme.test")).await;
    create(&idp, "/Users", user("old@acme.test")).await;
    create(&idp, "/Groups", group("BI Admins", &[&ann])).await;
    // Old's last Tableau sign-in was 200 days ago; the next sync reads it.
    let r = reqwest::Client::new()
        .post(format!("{base}/__sim/last_login"))
        .json(&json!({"login": "old@acme.test",
                      "at": (chrono::Utc::now() - chrono::Duration::days(200)).to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{admin}/admin/api/tenants/{BRIDGE_TENANT}/sync"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    let with_token = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--config", cfg, "--admin-token", ADMIN_TOKEN]);
        cli(&v)
    };

    // The dormant plan, once the sync has read the sign-in.
    let started = Instant::now();
    let plan = loop {
        let out = with_token(&[
            "sweep",
            "dormant",
            "--tenant",
            BRIDGE_TENANT,
            "--days",
            "90",
        ]);
        let stdout = text(&out.stdout);
        if out.status.success() && stdout.contains("old@acme.test") {
            break stdout;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no dormant plan: {stdout}{}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !plan.contains("ann@acme.test ") || plan.contains("admin"),
        "{plan}"
    );
    let out = with_token(&[
        "sweep",
        "dormant",
        "--tenant",
        BRIDGE_TENANT,
        "--days",
        "90",
        "--apply",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("old@acme.test"),
        "{}",
        text(&out.stdout)
    );
    let api = TableauApi::login(&base).await;
    let started = Instant::now();
    while api.state().await["old@acme.test"].site_role != UNLICENSED {
        assert!(started.elapsed() < Duration::from_secs(30), "old not swept");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        api.state().await["ann@acme.test"].site_role,
        "SiteAdministratorExplorer"
    );

    // The audit log: CSV with its header, the sweep's entry by actor `sweep`.
    let out = with_token(&["audit", "export", "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("tenant,seq,at,actor,event"),
        "{csv}"
    );
    assert!(
        csv.contains("user_created") && csv.contains("role_change"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(",sweep,") && l.contains("old@acme.test")),
        "{csv}"
    );
    // The operator's "sync now" through the admin API is an entry of its own.
    assert!(
        csv.lines().any(|l| l.contains(",operator,sync_requested,")
            && l.contains("sync now, requested through the admin API")),
        "{csv}"
    );
    let out = with_token(&[
        "audit",
        "export",
        "--tenant",
        BRIDGE_TENANT,
        "--since",
        "2000-01-01T00:00:00Z",
    ]);
    let jsonl = text(&out.stdout);
    let entries: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        csv.lines().count() - 1,
        "same entries in both formats"
    );
    assert!(entries
        .iter()
        .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64)));
    let out = with_token(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("audit chain intact"));

    // The access review: one row per Tableau account, the site admin a vendor-only orphan.
    let out = with_token(&["report", "access", "--format", "jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |login: &str| {
        rows.iter()
            .find(|r| r["login"] == login)
            .unwrap_or_else(|| panic!("{login} not in {rows:?}"))
            .clone()
    };
    assert_eq!(row("ann@acme.test")["managed"], "idp");
    assert_eq!(row("ann@acme.test")["role"], "SiteAdministratorExplorer");
    assert_eq!(row("old@acme.test")["active"], false);
    assert!(
        rows.iter().any(|r| r["managed"] == "vendor-only"),
        "{rows:?}"
    );

    // The plan: nothing owed to the vendor once it settled.
    let out = with_token(&["plan", "--tenant", BRIDGE_TENANT, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["tenant"], BRIDGE_TENANT);

    // A tenant's token is not an admin token; a bad query is the caller's error.
    let out = cli(&[
        "audit",
        "verify",
        "--config",
        cfg,
        "--admin-token",
        BRIDGE_TOKEN,
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = with_token(&["audit", "export", "--since", "yesterday"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("RFC 3339"),
        "{}",
        text(&out.stderr)
    );
    // With the bridge holding the store, --data-dir says so.
    let out = cli(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );

    // Stopped: the store directly. Intact, then one entry altered, then one removed.
    bridge.signal("-TERM");
    let _ = bridge.child.wait();
    let d = data.to_str().unwrap();
    let out = cli(&["audit", "verify", "--data-dir", d]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = cli(&[
        "report",
        "access",
        "--data-dir",
        d,
        "--config",
        cfg,
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("old@acme.test"));
    let tamper = |f: &dyn Fn(&scim_bridge::store::Tree)| {
        let store = scim_bridge::store::Store::open(&data).unwrap();
        let tree = store.tree(BRIDGE_TENANT, "audit").unwrap();
        f(&tree);
        drop(tree);
        drop(store);
    };
    tamper(&|tree| {
        let key = scim_bridge::store::audit::entry_key(2);
        let mut e: Value = serde_json::from_slice(&tree.get(key).unwrap().unwrap()).unwrap();
        e["cause"] = json!("nothing to see here");
        tree.insert(key, serde_json::to_vec(&e).unwrap()).unwrap();
    });
    let out = cli(&["audit", "verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("entry 2") && err.contains("altered"), "{err}");
    tamper(&|tree| {
        tree.remove(scim_bridge::store::audit::entry_key(2))
            .unwrap();
    });
    let out = cli(&["audit", "verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing entry 2"),
        "{}",
        text(&out.stderr)
    );
    // The oldest entries removed and a checkpoint forged to start the chain after them (its
    // hash taken from the next entry's `prev`): no retention recorded it, so it is named.
    tamper(&|tree| {
        let key = scim_bridge::store::audit::entry_key;
        let first: Value = serde_json::from_slice(&tree.get(key(1)).unwrap().unwrap()).unwrap();
        let third: Value = serde_json::from_slice(&tree.get(key(3)).unwrap().unwrap()).unwrap();
        tree.remove(key(1)).unwrap();
        let cp = json!({"seq": 2, "hash": third["prev"], "at": first["at"], "pruned": 2});
        tree.insert("checkpoint", serde_json::to_vec(&cp).unwrap())
            .unwrap();
    });
    let out = cli(&["audit", "verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("entry 3") && err.contains("retention checkpoint does not match"),
        "{err}"
    );
    sim.stop().await;
}

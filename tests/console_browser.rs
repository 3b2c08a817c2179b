//! The admin console in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver by `fantoccini`), against a real bridge and the Tableau simulator:
//! sign in, see the tenants, open a tenant, retry one failed delivery (its row's Retry button)
//! and then every failed one, sync now and find that request in the audit log (filtered by
//! actor, and by `since`), apply a dormant sweep, and watch an audit export's progress on the
//! dashboard.
//! Every page is checked for console errors (a CSP violation is one), and a screenshot of each
//! main page is kept in `target/console-screenshots/` as the test's artefact.
//!
//! Chromium is required: `.ci/run` installs it. Set `CHROMEDRIVER` / `CHROMIUM` to use others.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sim.rs"]
mod sim;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use fantoccini::{Client, ClientBuilder, Locator};
use idp::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tableau_api::*;

const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789abcdef";

/// Chromium's console messages since the last call (chromedriver's `se/log` extension).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// A chromedriver on a free port, stopped with the test.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let port = free_port();
    let child = std::process::Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin}: {e}. Install Debian's chromium and chromium-driver (.ci/run does)")
        });
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Fails on any console error of the page so far; keeps a screenshot named `name`.
async fn check_page(c: &Client, name: &str) {
    let log = c.issue_cmd(BrowserLog).await.expect("browser log");
    let errors: Vec<&Value> = log
        .as_array()
        .map(|a| a.iter().filter(|e| e["level"] == "SEVERE").collect())
        .unwrap_or_default();
    assert!(errors.is_empty(), "{name}: console errors: {errors:?}");
    let png = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    // Clicks return before the next page has loaded: wait for the element.
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Polls the admin API until `f` accepts its answer.
async fn admin_until(admin: &str, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let v: Value = http
            .get(format!("{admin}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if f(&v) {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn set_last_login(sim_base: &str, login: &str, at: &str) {
    let r = reqwest::Client::new()
        .post(format!("{sim_base}/__sim/last_login"))
        .json(&json!({"login": login, "at": at}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "last_login of {login}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_in_chromium_signs_in_lists_tenants_retries_a_failure_and_applies_a_sweep() {
    // Two Creator seats: the site admin holds one, c1 or x the other (whichever the bridge
    // delivers first); the other's Creator is refused.
    let sim = sim::spawn_with(
        scim_bridge::sim::Vendor::Tableau,
        7,
        &[("tableau.seats", "creator=2")],
        None,
    )
    .await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{data}"

[admin]
listen = "127.0.0.1:0"
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
rules = [ {{ group = "Tableau Creators", role = "Creator" }} ]
"#,
        data = dir.path().join("data").display(),
    );
    let server = bridge::serve_toml("console", &toml).await;
    let root = bridge::root(&server);
    let admin = bridge::admin_root(&server);
    let idp = Idp::patient(&root, BRIDGE_TENANT, BRIDGE_TOKEN).with_admin(&admin);
    idp.wait_ready().await;

    let user = |login: &str| {
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": login,
               "name": {"givenName": "T", "familyName": login}, "emails": [{"value": login, "primary": true}],
               "active": true})
    };
    let c1 = create(&idp, "/Users", user("c1@acme.test")).await;
    let x = create(&idp, "/Users", user("x@acme.test")).await;
    let _d = create(&idp, "/Users", user("dormant@acme.test")).await;
    let creators = create(&idp, "/Groups", group("Tableau Creators", &[&c1, &x])).await;
    // One Creator is refused for lack of a seat: failed, with Tableau's reason.
    admin_until(
        &admin,
        &format!("/admin/api/tenants/{BRIDGE_TENANT}"),
        "one creator failed",
        |v| v["outbox_failed"].as_u64() == Some(1),
    )
    .await;
    let listed = admin_until(
        &admin,
        &format!("/admin/api/tenants/{BRIDGE_TENANT}/users"),
        "users",
        |v| v["users"].is_array(),
    )
    .await;
    let failed_name = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["delivery"]["state"] == "failed")
        .and_then(|u| u["user_name"].as_str())
        .expect("a failed user")
        .to_string();
    // `holder` holds the seat; `waiting` waits for one.
    let (holder, holder_name, waiting, waiting_name) = if failed_name == "x@acme.test" {
        (c1.clone(), "c1@acme.test", x.clone(), "x@acme.test")
    } else {
        (x.clone(), "x@acme.test", c1.clone(), "c1@acme.test")
    };
    // Sign-ins at Tableau: d last signed in 400 days ago, the others today.
    let now = chrono::Utc::now();
    set_last_login(
        &base,
        "dormant@acme.test",
        &(now - chrono::Duration::days(400)).to_rfc3339(),
    )
    .await;
    for u in ["c1@acme.test", "x@acme.test"] {
        set_last_login(&base, u, &now.to_rfc3339()).await;
    }

    let drv = driver().await;
    let c = browser(&drv).await;

    // Not signed in: the console sends us to its login page; a wrong token is refused.
    c.goto(&format!("{admin}/admin")).await.unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/admin/login"));
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(BRIDGE_TOKEN)
        .await
        .unwrap();
    c.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text_of(&c, "#login-error")
        .await
        .contains("not an admin token"));
    check_page(&c, "login").await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    c.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The tenants.
    let table = text_of(&c, "#tenants").await;
    assert!(
        table.contains(BRIDGE_TENANT) && table.contains("tableau"),
        "{table}"
    );
    let failed = text_of(
        &c,
        &format!("tr[data-tenant='{BRIDGE_TENANT}'] [data-field='failed']"),
    )
    .await;
    assert_eq!(failed, "1");
    check_page(&c, "tenants").await;

    // A tenant: x's delivery failed, with the vendor's reason.
    c.find(Locator::LinkText(BRIDGE_TENANT))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let users = text_of(&c, "#users").await;
    let waiting_row = users
        .lines()
        .find(|l| l.contains(waiting_name))
        .unwrap_or_default()
        .to_string();
    assert!(waiting_row.contains("failed: Tableau"), "{users}");
    check_page(&c, "tenant-users").await;

    // Its row has a Retry button (the holder's, applied, has none). Retried while the seat is
    // still taken: delivered again as the operator's change, refused again, failed again.
    assert!(c
        .find(Locator::Css(&format!("button[data-retry='{holder}']")))
        .await
        .is_err());
    let audit_api = format!("/admin/api/audit?tenant={BRIDGE_TENANT}");
    c.find(Locator::Css(&format!("button[data-retry='{waiting}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    assert!(text_of(&c, "#flash")
        .await
        .contains("1 failed change(s) retried"));
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("tab=users"));
    let asked = admin_until(
        &admin,
        &format!("{audit_api}&event=retry_requested"),
        "the retry request audited",
        |v| v["total"].as_u64() == Some(1),
    )
    .await;
    let asked = &asked["entries"][0];
    assert_eq!(
        (
            asked["actor"].as_str(),
            asked["name"].as_str(),
            asked["scim_id"].as_str()
        ),
        (Some("operator"), Some(waiting_name), Some(waiting.as_str())),
        "{asked}"
    );
    assert_eq!(asked["detail"], "1", "{asked}");
    admin_until(
        &admin,
        &format!("{audit_api}&event=delivery_refused&actor=operator"),
        "the retried delivery refused again, as the operator's",
        |v| {
            v["entries"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["name"] == waiting_name))
        },
    )
    .await;
    admin_until(
        &admin,
        &format!("/admin/api/tenants/{BRIDGE_TENANT}"),
        "failed again",
        |v| v["outbox_failed"].as_u64() == Some(1),
    )
    .await;

    // A seat frees up (the holder leaves the Creators), and the operator retries the failure.
    idp.patch_ok(
        &format!("/Groups/{creators}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{holder}\"]")}]),
    )
    .await;
    c.find(Locator::Id("retry-failed"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    assert!(text_of(&c, "#flash")
        .await
        .contains("1 failed change(s) retried"));
    let api = TableauApi::login(&base).await;
    let started = Instant::now();
    loop {
        let s = api.state().await;
        if s[waiting_name].site_role == "Creator" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{waiting_name} never became Creator"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    check_page(&c, "tenant-retried").await;

    // The vendor's sign-ins are read by a sync (the console's "Sync now").
    let before_sync = chrono::Utc::now();
    c.find(Locator::Id("sync-now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    admin_until(
        &admin,
        &format!("/admin/api/tenants/{BRIDGE_TENANT}/sweep?days=90"),
        "dormant plan",
        |v| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains("dormant@acme.test"))
        },
    )
    .await;

    // The audit tab, filtered to what happened since "Sync now": the operator's request is
    // there, as the operator's; the creates and retries before it are not.
    c.goto(&format!("{admin}/admin/tenants/{BRIDGE_TENANT}?tab=audit"))
        .await
        .unwrap();
    assert!(text_of(&c, "#audit").await.contains("user_created"));
    let since = before_sync.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    c.find(Locator::Id("audit-since"))
        .await
        .unwrap()
        .send_keys(&since)
        .await
        .unwrap();
    c.find(Locator::Id("audit-filter"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let started = Instant::now();
    while !c.current_url().await.unwrap().as_str().contains("since=") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the filter did not load"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audit = text_of(&c, "#audit").await;
    let requested = audit
        .lines()
        .find(|l| l.contains("sync_requested"))
        .unwrap_or_else(|| panic!("no sync request in {audit}"));
    assert!(
        requested.contains("operator") && requested.contains("sync now, requested in the console"),
        "{requested}"
    );
    assert!(
        !audit.contains("user_created") && !audit.contains("retry_requested"),
        "entries before {since} are filtered out: {audit}"
    );
    assert_eq!(
        c.find(Locator::Id("audit-since"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(since.as_str()),
        "the filter is kept in the form"
    );
    check_page(&c, "tenant-audit-since").await;
    // A `since` that is no RFC 3339 time: a 400 page saying so, never a 5xx.
    let r = reqwest::Client::new()
        .get(format!(
            "{admin}/admin/tenants/{BRIDGE_TENANT}?tab=audit&since=yesterday"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(
        html.contains("filter-error")
            && html.contains("since &quot;yesterday&quot; is not an RFC 3339 time"),
        "{html}"
    );

    // The dormant plan, then the sweep applied.
    c.goto(&format!(
        "{admin}/admin/tenants/{BRIDGE_TENANT}?tab=dormant&days=90"
    ))
    .await
    .unwrap();
    let plan = text_of(&c, "#dormant-plan").await;
    assert!(plan.contains("dormant@acme.test"), "{plan}");
    check_page(&c, "tenant-dormant").await;
    c.find(Locator::Id("apply-sweep"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    assert!(
        text_of(&c, "#flash")
            .await
            .contains("1 account(s) deactivated"),
        "{}",
        text_of(&c, "main").await
    );
    let s = api.state().await;
    assert_eq!(s["dormant@acme.test"].site_role, UNLICENSED);
    assert_eq!(
        s[holder_name].site_role, "Viewer",
        "{holder_name} signed in today: kept"
    );
    let (_, d) = idp
        .get(&format!(
            "/Users?filter={}",
            urlencode("userName eq \"dormant@acme.test\"")
        ))
        .await;
    assert_eq!(
        d["Resources"][0]["active"],
        json!(false),
        "the IdP sees the sweep"
    );

    // The audit log shows who did it.
    c.goto(&format!("{admin}/admin/tenants/{BRIDGE_TENANT}?tab=audit"))
        .await
        .unwrap();
    let audit = text_of(&c, "#audit").await;
    let swept = audit
        .lines()
        .find(|l| l.contains("user_deactivated") && l.contains("dormant@acme.test"))
        .unwrap_or_else(|| panic!("no deactivation of dormant@acme.test in {audit}"));
    assert!(swept.contains("operator"), "{swept}");
    check_page(&c, "tenant-audit").await;
    c.goto(&format!("{admin}/admin/tenants/{BRIDGE_TENANT}?tab=plan"))
        .await
        .unwrap();
    check_page(&c, "tenant-plan").await;
    c.goto(&format!("{admin}/admin/tenants/{BRIDGE_TENANT}?tab=access"))
        .await
        .unwrap();
    assert!(text_of(&c, "#access").await.contains("dormant@acme.test"));
    check_page(&c, "tenant-access").await;

    // An audit export of 100,000 entries more, held up by a client that does not read it:
    // the dashboard shows it running with its rows so far and its total, and drops it once
    // the client went away (the page's JS refreshes the list).
    let store = server.state.store.clone();
    tokio::task::spawn_blocking(move || {
        use scim_bridge::store::audit::{AuditEntry, AuditEvent, AuditLog};
        let log = AuditLog::open(&store, "archive").unwrap();
        for chunk in 0..100 {
            let batch: Vec<AuditEntry> = (0..1000)
                .map(|i| {
                    let name = format!("archived-{chunk}-{i}@acme.test");
                    AuditEntry::new(AuditEvent::UserUpdated, "idp", "patch")
                        .user(&format!("id-{chunk}-{i}"), &name, "v")
                        .before(json!({"email": format!("old-{name}")}))
                        .after(json!({"email": name}))
                })
                .collect();
            log.append(&batch).unwrap();
        }
    })
    .await
    .unwrap();
    let held = reqwest::Client::new()
        .get(format!("{admin}/admin/api/audit/export?format=jsonl"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status().as_u16(), 200);
    let running = admin_until(&admin, "/admin/api/exports", "a running export", |v| {
        v[0]["rows"].as_u64().is_some_and(|r| r > 0) && v[0]["total"].is_u64()
    })
    .await;
    let total = running[0]["total"].as_u64().unwrap();
    assert!(total > 100_000, "{running}");
    assert!(running[0]["rows"].as_u64().unwrap() < total, "{running}");
    assert_eq!(running[0]["export"], "audit");
    c.goto(&format!("{admin}/admin")).await.unwrap();
    let shown = text_of(&c, "#exports li[data-export]").await;
    assert!(
        shown.starts_with("audit export (all tenants, jsonl): ")
            && shown.ends_with(&format!(" / {total} rows")),
        "{shown}"
    );
    check_page(&c, "tenants-export").await;
    drop(held);
    let started = Instant::now();
    loop {
        let list = text_of(&c, "#exports").await;
        if list.contains("none running") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the export stays listed: {list}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    check_page(&c, "tenants-export-done").await;

    c.close().await.unwrap();
    server.stop().await;
    sim.stop().await;
}

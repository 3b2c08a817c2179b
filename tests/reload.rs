//! Config reload by SIGHUP (issue 14, CONTRACT §6), on the release binary over real sockets:
//! tenants added, removed and changed, tokens rotated, while IdP traffic runs; a bad file is
//! refused with its problems logged and the running config kept.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sisense_api.rs"]
mod sisense_api;

use idp::{bridge_command, free_port, ChildGuard};
use scim_bridge::sim::SimOptions;
use serde_json::{json, Value};
use sisense_api::{spawn_sim, SisenseApi};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALPHA: &str = "alpha-token-0123456789abcdef0123456789";
const BETA_KEPT: &str = "beta-token-kept-0123456789abcdef012345";
const BETA_OLD: &str = "beta-token-old-0123456789abcdef0123456";
const BETA_NEW: &str = "beta-token-new-0123456789abcdef0123456";
const GAMMA: &str = "gamma-token-0123456789abcdef0123456789";
const ACME: &str = "acme-token-0123456789abcdef01234567890";

/// The config file: `beta` with `beta_tokens`, `acme` (Sisense) with `acme_default` as the
/// default role, and the optional tenants `alpha` and `gamma`.
#[allow(clippy::too_many_arguments)]
fn config(
    port: u16,
    admin_port: u16,
    data: &Path,
    sim: &str,
    alpha: bool,
    gamma: bool,
    beta_tokens: &[&str],
    acme_default: &str,
) -> String {
    let mut s = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n",
        data.display()
    );
    if alpha {
        s += &format!("\n[[tenants]]\nid = \"alpha\"\ntokens = [\"{ALPHA}\"]\n[tenants.vendor]\nkind = \"local\"\n");
    }
    let tokens: Vec<String> = beta_tokens.iter().map(|t| format!("\"{t}\"")).collect();
    s += &format!(
        "\n[[tenants]]\nid = \"beta\"\ntokens = [{}]\n[tenants.vendor]\nkind = \"local\"\n",
        tokens.join(", ")
    );
    s += &format!(
        r#"
[[tenants]]
id = "acme"
tokens = ["{ACME}"]
[tenants.vendor]
kind = "sisense"
base_url = "{sim}/"
username = "admin@sisense.local"
password = "admin"
[tenants.roles]
default = "{acme_default}"
"#
    );
    if gamma {
        s += &format!("\n[[tenants]]\nid = \"gamma\"\ntokens = [\"{GAMMA}\"]\n[tenants.vendor]\nkind = \"local\"\n");
    }
    s
}

/// Replaces the file the way editors and config management do: a new file renamed over it.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn sighup(child: &ChildGuard) {
    child.signal("-HUP");
}

struct Bridge {
    http: reqwest::Client,
    root: String,
}

impl Bridge {
    async fn status(&self, tenant: &str, token: &str) -> u16 {
        match self
            .http
            .get(format!(
                "{}/tenants/{tenant}/scim/v2/Users?count=1",
                self.root
            ))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn create(&self, tenant: &str, token: &str, user: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/tenants/{tenant}/scim/v2/Users", self.root))
            .bearer_auth(token)
            .header("content-type", "application/scim+json")
            .body(json!({"userName": user, "emails": [{"value": user, "primary": true}], "name": {"givenName": "R", "familyName": "L"}, "active": true}).to_string())
            .send()
            .await;
        match r {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!(e.to_string())),
        }
    }

    /// The unfiltered list's `totalResults`.
    async fn total(&self, tenant: &str, token: &str) -> u64 {
        let list: Value = self
            .http
            .get(format!(
                "{}/tenants/{tenant}/scim/v2/Users?count=1",
                self.root
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["totalResults"].as_u64().expect("totalResults")
    }

    /// Polls until `tenant` answers `token` with `want`, at most `limit`.
    async fn until(&self, tenant: &str, token: &str, want: u16, limit: Duration) {
        let start = Instant::now();
        loop {
            let s = self.status(tenant, token).await;
            if s == want {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{tenant} still answers {s}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_under_load_applies_tenants_and_tokens_and_refuses_a_bad_file() {
    let sim = spawn_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, admin_port) = (free_port(), free_port());
    let path = dir.path().join("scim-bridge.toml");
    let base = sim.base_url();
    write(
        &path,
        &config(
            port,
            admin_port,
            &data,
            &base,
            true,
            false,
            &[BETA_KEPT, BETA_OLD],
            "Viewer",
        ),
    );
    let log_path = dir.path().join("bridge.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = ChildGuard::spawn(
        bridge_command()
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(log),
    );
    let b = Arc::new(Bridge {
        http: reqwest::Client::new(),
        root: format!("http://127.0.0.1:{port}"),
    });
    b.until("beta", BETA_KEPT, 200, Duration::from_secs(30))
        .await;
    b.until("acme", ACME, 200, Duration::from_secs(30)).await;
    let acme_before = b.total("acme", ACME).await;
    // alpha has series of its own before the reload removes it.
    b.until("alpha", ALPHA, 200, Duration::from_secs(30)).await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let alpha_series = |text: &str| {
        text.lines()
            .filter(|l| l.contains("tenant=\"alpha\""))
            .count()
    };
    assert!(
        alpha_series(&bridge::metrics_text(&admin).await) > 0,
        "alpha's series"
    );

    // IdP traffic on the kept tenant and on the changed one, across the reload: every request
    // must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let acme_made = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for w in 0..4 {
        let (b, stop, served, acme_made) =
            (b.clone(), stop.clone(), served.clone(), acme_made.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let (tenant, token) = if w % 2 == 0 {
                    ("beta", BETA_KEPT)
                } else {
                    ("acme", ACME)
                };
                let (s, v) = b
                    .create(tenant, token, &format!("load{w}-{i}@acme.test"))
                    .await;
                if s != 201 {
                    failures.push(format!("{tenant} create {i}: {s} {v}"));
                } else if tenant == "acme" {
                    acme_made.fetch_add(1, Ordering::SeqCst);
                }
                let s = b.status(tenant, token).await;
                if s != 200 {
                    failures.push(format!("{tenant} list {i}: {s}"));
                }
                served.fetch_add(2, Ordering::SeqCst);
                i += 1;
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // alpha removed, gamma added, beta's old token replaced by a new one, acme's default role
    // changed (a new engine for acme).
    write(
        &path,
        &config(
            port,
            admin_port,
            &data,
            &base,
            false,
            true,
            &[BETA_KEPT, BETA_NEW],
            "Designer",
        ),
    );
    let before = served.load(Ordering::SeqCst);
    sighup(&child);
    b.until("gamma", GAMMA, 200, Duration::from_secs(30)).await;
    // Traffic goes on after the swap too.
    let swapped = served.load(Ordering::SeqCst);
    let start = Instant::now();
    while served.load(Ordering::SeqCst) < swapped + 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the load stalled after the reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for l in load {
        failures.extend(l.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "requests failed across the reload: {failures:?}"
    );
    assert!(
        served.load(Ordering::SeqCst) > before,
        "no request ran across the reload"
    );

    // The removed tenant's token and beta's removed token stop working; the new ones work.
    assert_eq!(b.status("alpha", ALPHA).await, 401, "removed tenant");
    // Its series go with it (its id is often a customer's name).
    let text = bridge::metrics_text(&admin).await;
    assert_eq!(
        alpha_series(&text),
        0,
        "the removed tenant's series:\n{text}"
    );
    assert_eq!(b.status("beta", BETA_OLD).await, 401, "removed token");
    assert_eq!(b.status("beta", BETA_NEW).await, 200, "new token");
    assert_eq!(b.status("beta", BETA_KEPT).await, 200, "kept token");

    // acme's new engine applies the new rules: a user created now is a Designer in Sisense
    // ("contributor"); the users made before it kept their role (no rule moved them), and no
    // user was made twice (`state` panics on a duplicate userName).
    let (s, v) = b.create("acme", ACME, "after-reload@acme.test").await;
    assert_eq!(s, 201, "{v}");
    // The old and the new engine counted into one count: every create made across the swap
    // is in the unfiltered list's totalResults.
    assert_eq!(
        b.total("acme", ACME).await,
        acme_before + acme_made.load(Ordering::SeqCst) as u64 + 1,
        "acme's user count after the reload"
    );
    let api = SisenseApi::login(&base).await;
    let state = api.state().await;
    let (role, active, _) = state
        .get("after-reload@acme.test")
        .expect("the user is in Sisense");
    assert!(*active);
    assert_eq!(role, "contributor", "the reloaded default role");

    // A bad file is refused whole: the problem is logged with its key path, and the running
    // config serves on.
    write(
        &path,
        &config(
            port,
            admin_port,
            &data,
            &base,
            false,
            true,
            &[BETA_KEPT, "short"],
            "Designer",
        ),
    );
    sighup(&child);
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("config reload refused") {
            assert!(
                text.contains("tenants[0].tokens"),
                "the refusal names the key path"
            );
            assert!(!text.contains("short\""), "the refusal shows no token");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no refusal logged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        b.status("gamma", GAMMA).await,
        200,
        "the old config serves on"
    );
    assert_eq!(
        b.status("beta", BETA_NEW).await,
        200,
        "the old tokens serve on"
    );
    assert_eq!(
        bridge::metric(&admin, "scim_config_reloads_total{result=\"applied\"}").await,
        1.0
    );
    assert_eq!(
        bridge::metric(&admin, "scim_config_reloads_total{result=\"refused\"}").await,
        1.0
    );
    drop(child);
}

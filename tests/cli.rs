//! The `scim-bridge` binary as an operator runs it: the embedded default, `config check`,
//! `token issue`, `simulate` and `demo`, driven over real sockets.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary, returns it and its stdout lines up to (and including) the first that
/// contains `until`.
fn spawn_until(cmd: &mut Command, until: &str) -> (Running, Vec<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains(until);
        lines.push(line);
        if done {
            return (running, lines);
        }
    }
    panic!("the process ended before printing {until:?}: {lines:?}");
}

fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {port}");
}

/// `scim-bridge simulate VENDOR` on a free port, once it accepts connections: the process and
/// its port.
fn simulate(vendor: &str) -> (Running, u16) {
    let port = free_port();
    let mut sim = Command::new(BIN);
    sim.args(["simulate", vendor, "--listen", &format!("127.0.0.1:{port}")]);
    let (sim, _) = spawn_until(&mut sim, "listening on");
    wait_healthy(port);
    (sim, port)
}

/// `scim-bridge config check [--online] --config PATH` with `text` written to `path` and `env`
/// set: whether it succeeded, and its stdout and stderr together.
fn config_check(
    path: &std::path::Path,
    text: String,
    online: bool,
    env: &[(&str, &str)],
) -> (bool, String) {
    std::fs::write(path, text).unwrap();
    let mut args = vec!["config", "check"];
    if online {
        args.push("--online");
    }
    let out = Command::new(BIN)
        .args(args)
        .args(["--config", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn get(url: &str, token: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    })
}

#[test]
fn embedded_default_generates_a_token_once_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let serve = || {
        let mut c = Command::new(BIN);
        c.current_dir(dir.path())
            .env_remove("SCIM_BRIDGE_TOKEN")
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            // The admin listener on a free port: 9090 is one for the whole parallel run.
            .args(["--admin-listen", "127.0.0.1:0"]);
        c
    };
    let (first, lines) = spawn_until(&mut serve(), "listening on");
    let token_line = lines
        .iter()
        .position(|l| l.contains("Generated a bearer token"))
        .expect("the first start prints the generated token");
    let token = lines[token_line + 1].trim().to_string();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    let stored = std::fs::read_to_string(dir.path().join("data/default-token")).unwrap();
    assert_eq!(stored.trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/default-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    wait_healthy(port);
    let (status, body) = get(&format!("http://127.0.0.1:{port}/scim/v2/Users"), &token);
    assert_eq!(status, 200);
    assert_eq!(body["totalResults"], 0);
    let (status, _) = get(&format!("http://127.0.0.1:{port}/scim/v2/Users"), "wrong");
    assert_eq!(status, 401);
    drop(first);

    let (_second, lines) = spawn_until(&mut serve(), "listening on");
    assert!(
        !lines.iter().any(|l| l.contains(&token)),
        "the token is printed only on the first start"
    );
    wait_healthy(port);
    let (status, _) = get(
        &format!("http://127.0.0.1:{port}/tenants/default/scim/v2/Users"),
        &token,
    );
    assert_eq!(status, 200, "the stored token still works after a restart");
}

/// A GET without a token: the status and the body as text (`/metrics` is not JSON).
fn get_text(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    })
}

/// Issue 15: `serve --admin-listen` puts `/metrics` and the detailed readiness on a port of
/// their own, and says where; the public port serves neither.
#[test]
fn serve_puts_metrics_and_the_detailed_readiness_on_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let token = "cli-admin-split-token-0123456789abcdef";
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env("SCIM_BRIDGE_TOKEN", token)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _bridge = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let admin_line = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("admin (metrics") => break l,
            Some(Ok(l)) => seen.push(l),
            _ => panic!("serve ended before naming its admin listener: {seen:?}"),
        }
    };
    // Keep reading, so that the bridge's later lines never meet a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(
        admin_line.contains(&format!("http://127.0.0.1:{admin_port}/admin")),
        "{admin_line}"
    );
    wait_healthy(port);
    wait_healthy(admin_port);
    let (status, _) = get(&format!("http://127.0.0.1:{port}/scim/v2/Users"), token);
    assert_eq!(status, 200);

    let (status, text) = get_text(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(status, 404, "{text}");
    let (status, text) = get_text(&format!("http://127.0.0.1:{port}/readyz?verbose"));
    assert_eq!((status, text.as_str()), (200, r#"{"status":"ready"}"#));

    let (status, text) = get_text(&format!("http://127.0.0.1:{admin_port}/metrics"));
    assert_eq!(status, 200, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("scim_requests_total{") && l.contains("tenant=\"default\"")),
        "{text}"
    );
    assert!(!text.contains(token), "the token leaked into /metrics");
    let (status, text) = get_text(&format!("http://127.0.0.1:{admin_port}/readyz"));
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    assert!(body["vendors_unavailable"].is_object(), "{body}");
}

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
[[tenants]]
id = "acme"
tokens = ["${CLI_TEST_STATIC_TOKEN}"]
jwt_secret = "${CLI_TEST_JWT_SECRET}"
[tenants.vendor]
kind = "local"
"#;

#[test]
fn config_check_reports_problems_by_key_path_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let ok = Command::new(BIN)
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .env(
            "CLI_TEST_STATIC_TOKEN",
            "static-token-value-123-0123456789abcdef",
        )
        .env("CLI_TEST_JWT_SECRET", "jwt-secret-value-0123456789")
        .output()
        .unwrap();
    let out =
        String::from_utf8_lossy(&ok.stdout).to_string() + &String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("acme"));
    assert!(
        !out.contains("static-token-value-123-0123456789abcdef")
            && !out.contains("jwt-secret-value-0123456789")
    );

    let bad = Command::new(BIN)
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .env(
            "CLI_TEST_STATIC_TOKEN",
            "static-token-value-123-0123456789abcdef",
        )
        .env_remove("CLI_TEST_JWT_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(!bad.status.success());
    assert!(err.contains("CLI_TEST_JWT_SECRET"), "{err}");
    assert!(err.contains("tenants[0].jwt_secret"), "{err}");
    assert!(!err.contains("static-token-value-123-0123456789abcdef"));
}

#[test]
fn token_issue_mints_a_jwt_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let envs = [
        (
            "CLI_TEST_STATIC_TOKEN",
            "static-token-value-456-0123456789abcdef",
        ),
        ("CLI_TEST_JWT_SECRET", "jwt-secret-value-abcdefghij"),
    ];
    let out = Command::new(BIN)
        .args([
            "token",
            "issue",
            "--config",
            path.to_str().unwrap(),
            "--tenant",
            "acme",
            "--ttl",
            "1h",
        ])
        .envs(envs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(jwt.split('.').count(), 3, "a JWT");

    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir.path().join("data"))
    .envs(envs);
    let (_server, _) = spawn_until(&mut cmd, "listening on");
    wait_healthy(port);
    let (status, _) = get(
        &format!("http://127.0.0.1:{port}/tenants/acme/scim/v2/Users"),
        &jwt,
    );
    assert_eq!(status, 200);
    let (status, _) = get(
        &format!("http://127.0.0.1:{port}/tenants/acme/scim/v2/Users"),
        "static-token-value-456-0123456789abcdef",
    );
    assert_eq!(status, 200);
    let (status, body) = get(
        &format!("http://127.0.0.1:{port}/tenants/acme/scim/v2/Users"),
        &format!("{jwt}x"),
    );
    assert_eq!(status, 401);
    assert_eq!(body["status"], "401");

    let unknown = Command::new(BIN)
        .args([
            "token",
            "issue",
            "--config",
            path.to_str().unwrap(),
            "--tenant",
            "nope",
        ])
        .envs(envs)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
}

#[test]
fn simulate_serves_the_vendor_api_and_stats() {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "simulate",
        "sisense",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--latency-ms",
        "1",
    ]);
    let (_sim, lines) = spawn_until(&mut cmd, "listening on");
    assert!(lines.iter().any(|l| l.contains(&port.to_string())));
    wait_healthy(port);
    let (status, body) = get(&format!("http://127.0.0.1:{port}/__sim/stats"), "");
    assert_eq!(status, 200);
    assert!(body["requests"].is_number());
    let (status, _) = get(
        &format!("http://127.0.0.1:{port}/api/v1/users"),
        "not-a-sisense-token",
    );
    assert_eq!(status, 401, "Sisense refuses an unknown token");
}

#[test]
fn demo_prints_a_working_table() {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--listen", &format!("127.0.0.1:{port}")]);
    let (_demo, lines) = spawn_until(&mut cmd, "Ctrl-C");
    let row = lines
        .iter()
        .find(|l| l.starts_with("local "))
        .expect("a row for the local tenant");
    let cols: Vec<&str> = row.split_whitespace().collect();
    let (base, token) = (cols[1], cols[2]);
    assert!(base.ends_with("/tenants/local/scim/v2"));
    let (status, body) = get(&format!("{base}/Users"), token);
    assert_eq!(status, 200);
    assert_eq!(body["totalResults"], 0);
    // The vendor tenants answer through their connectors: Tableau's shows the simulator's
    // own admin, adopted by the first read of the site.
    for tenant in ["sisense", "tableau", "thoughtspot", "metabase"] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&format!("{tenant} ")))
            .unwrap_or_else(|| panic!("a row for the {tenant} tenant in {lines:?}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert!(
            cols[1].ends_with(&format!("/tenants/{tenant}/scim/v2")),
            "{row}"
        );
        assert!(cols[3].starts_with("http://127.0.0.1:"), "{row}");
        let (status, body) = get(&format!("{}/Users", cols[1]), cols[2]);
        assert_eq!(status, 200, "{tenant}: {body}");
    }
    let row = lines.iter().find(|l| l.starts_with("tableau ")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    let (_, body) = get(
        &format!(
            "{}/Users?filter=userName%20eq%20%22admin@tableau.local%22",
            cols[1]
        ),
        cols[2],
    );
    assert_eq!(body["totalResults"], 1, "{body}");
    for vendor in ["sisense", "tableau", "thoughtspot", "metabase"] {
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(vendor) && l.contains("simulator listening on"))
            .unwrap_or_else(|| panic!("no {vendor} simulator in {lines:?}"));
        let url = line.split_whitespace().last().unwrap();
        let (status, _) = get(&format!("{url}/__sim/stats"), "");
        assert_eq!(status, 200, "{vendor} simulator answers");
    }
    assert!(
        lines.iter().any(|l| l.contains("curl")),
        "a ready curl line"
    );
}

#[test]
fn config_check_online_resolves_roles_against_the_vendor() {
    let (_sim, port) = simulate("sisense");
    let dir = tempfile::tempdir().unwrap();
    let config = |role: &str| {
        format!(
            r#"
[[tenants]]
id = "acme"
tokens = ["static-token-value-789-0123456789abcdef"]
[tenants.vendor]
kind = "sisense"
base_url = "http://127.0.0.1:{port}"
username = "admin@sisense.local"
password = "${{CLI_TEST_SISENSE_PASSWORD}}"
[tenants.roles]
default = "Viewer"
rules = [{{ group = "Everyone", role = "{role}" }}]
"#
        )
    };
    let check = |text: String| {
        let path = dir.path().join("online.toml");
        std::fs::write(&path, text).unwrap();
        Command::new(BIN)
            .args([
                "config",
                "check",
                "--online",
                "--config",
                path.to_str().unwrap(),
            ])
            .env("CLI_TEST_SISENSE_PASSWORD", "admin")
            .output()
            .unwrap()
    };
    let good = check(config("Designer"));
    let out =
        String::from_utf8_lossy(&good.stdout).to_string() + &String::from_utf8_lossy(&good.stderr);
    assert!(good.status.success(), "{out}");
    assert!(out.contains("every role rule resolves"), "{out}");

    let bad = check(config("Desginer"));
    let err = String::from_utf8_lossy(&bad.stderr).to_string();
    assert!(!bad.status.success());
    assert!(err.contains("tenants[0].roles.rules[0].role"), "{err}");
    assert!(!err.contains("static-token-value-789-0123456789abcdef"));
}

#[test]
fn config_check_online_resolves_tableau_site_roles_and_groups() {
    let (_sim, port) = simulate("tableau");
    let dir = tempfile::tempdir().unwrap();
    let config = |secret: &str, rules: &str| {
        format!(
            r#"
[[tenants]]
id = "acme"
tokens = ["static-token-value-789-0123456789abcdef"]
[tenants.vendor]
kind = "tableau"
base_url = "http://127.0.0.1:{port}"
site = "default"
pat_name = "scim-bridge"
pat_secret = "{secret}"
[tenants.roles]
default = "Viewer"
rules = [{rules}]
"#
        )
    };
    let check = |text: String| config_check(&dir.path().join("online.toml"), text, true, &[]);
    let (ok, out) = check(config(
        "simulator-pat-secret",
        r#"{ role = "Creator" }, { role = "Explorer (can publish)" }"#,
    ));
    assert!(ok, "{out}");
    assert!(out.contains("every role rule resolves"), "{out}");

    let (ok, out) = check(config(
        "simulator-pat-secret",
        r#"{ role = "Publisher Pro" }"#,
    ));
    assert!(!ok, "{out}");
    assert!(out.contains("tenants[0].roles.rules[0].role"), "{out}");
    // Site roles are Tableau's API: even without --online a wrong one is found.
    let path = dir.path().join("offline.toml");
    std::fs::write(
        &path,
        config("simulator-pat-secret", r#"{ role = "Publisher Pro" }"#),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("tenants[0].roles.rules[0].role"), "{err}");

    let (ok, out) = check(config(
        "simulator-pat-secret",
        r#"{ group = "Tableau Creators", role = "Creator" }"#,
    ));
    assert!(!ok, "{out}");
    assert!(out.contains("tenants[0].roles.rules[0].group"), "{out}");

    let (ok, out) = check(config("not-the-secret-4711", r#"{ role = "Creator" }"#));
    assert!(!ok, "{out}");
    assert!(out.contains("tenants[0].vendor.pat_secret"), "{out}");
    assert!(!out.contains("not-the-secret-4711"), "{out}");
    assert!(
        !out.contains("static-token-value-789-0123456789abcdef"),
        "{out}"
    );
}

// ---- ThoughtSpot: `config check` (offline and --online against `simulate thoughtspot`) ----

#[test]
fn config_check_online_resolves_thoughtspot_variables_and_roles() {
    let (_sim, port) = simulate("thoughtspot");
    let dir = tempfile::tempdir().unwrap();
    let config = |variable: &str, rules: &str| {
        format!(
            r#"
[[tenants]]
id = "acme"
tokens = ["static-token-value-789-0123456789abcdef"]
[tenants.vendor]
kind = "thoughtspot"
base_url = "http://127.0.0.1:{port}"
username = "tsadmin"
password = "${{CLI_TEST_TS_PASSWORD}}"
org_id = 0
[tenants.attributes]
{variable} = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:division"
[tenants.roles]
default = "Viewer"
rules = [{rules}]
"#
        )
    };
    let check = |text: String, online: bool| {
        let env = [("CLI_TEST_TS_PASSWORD", "admin")];
        config_check(&dir.path().join("ts.toml"), text, online, &env)
    };
    let (ok, out) = check(config("region", r#"{ role = "Analyst" }"#), true);
    assert!(ok, "{out}");
    assert!(out.contains("every role rule resolves"), "{out}");

    let (ok, out) = check(config("regoin", r#"{ role = "Analyst" }"#), true);
    assert!(!ok, "{out}");
    assert!(out.contains("tenants[0].attributes.regoin"), "{out}");

    let (ok, out) = check(config("region", r#"{ role = "Analsyt" }"#), true);
    assert!(!ok, "{out}");
    assert!(out.contains("tenants[0].roles.rules[0].role"), "{out}");
    assert!(
        !out.contains("static-token-value-789-0123456789abcdef"),
        "{out}"
    );

    // The built-in groups are refused before anything is signed in to.
    let (ok, out) = check(config("region", r#"{ role = "Administrator" }"#), false);
    assert!(!ok, "{out}");
    assert!(out.contains("tenants[0].roles.rules[0].role"), "{out}");
    assert!(out.contains("built-in"), "{out}");
}

//! Issue 15, tokens: weak static tokens, the token file's mode, the JWT lifetime bound,
//! revocation by `jti`, `crit` headers and a shared `jwt_secret`, through the `scim-bridge`
//! binary over real sockets (and, for revocation while the bridge runs, the bridge in this
//! process on its store).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");
const KEY: &str = "security-tokens-signing-key-0123456789";
const STATIC: &str = "static-token-0123456789abcdef0123456789";
const ADMIN: &str = "admin-token-of-the-token-tests-0123456789";

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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A dir with `bridge.toml` (`extra` top-level lines, tenant `acme` with a static token and a
/// JWT key) and a data dir.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{extra}\n[[tenants]]\nid = \"acme\"\ntokens = [\"{STATIC}\"]\njwt_secret = \"{KEY}\"\n[tenants.vendor]\nkind = \"local\"\n"
        );
        std::fs::write(dir.path().join("bridge.toml"), text).unwrap();
        Setup { dir }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("bridge.toml")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn serve(&self) -> (Running, u16) {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .args(["serve", "--admin-listen", "127.0.0.1:0", "--config"])
            .arg(self.config())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(self.data());
        (spawn_listening(&mut cmd), port)
    }
    /// `serve` with the config's own `[admin] listen` (the CLI finds the admin API there).
    fn serve_with_its_admin_listener(&self) -> (Running, u16) {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .args(["serve", "--config"])
            .arg(self.config())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(self.data());
        (spawn_listening(&mut cmd), port)
    }
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .current_dir(self.dir.path())
            .env_remove("SCIM_BRIDGE_ADMIN_TOKEN")
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

/// Starts `cmd` and returns once it printed "listening on".
fn spawn_listening(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout).lines();
    for line in reader.by_ref() {
        let line = line.unwrap();
        if line.contains("listening on") {
            // Keep reading, so that the bridge's later lines never meet a closed pipe.
            std::thread::spawn(move || reader.for_each(drop));
            return running;
        }
        lines.push(line);
    }
    panic!("the bridge ended before listening: {lines:?}");
}

/// Runs `cmd`, which must exit (within 20 s) unsuccessfully: its stderr.
fn refused(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "it should have been refused: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 20 s: it was not refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET Users of `tenant` with `token`: the status.
fn status(port: u16, tenant: &str, token: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{port}/tenants/{tenant}/scim/v2/Users"
            ))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn sign(header: Header, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(KEY.as_bytes())).unwrap()
}

fn claims(lifetime: u64, jti: &str) -> serde_json::Value {
    let iat = now() - 10;
    json!({"aud": "acme", "sub": "scim-bridge", "iat": iat, "exp": iat + lifetime, "jti": jti})
}

fn jti_of(jwt: &str) -> String {
    jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(jwt)
        .unwrap()
        .claims["jti"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn short_static_token_is_refused_by_config_check_and_at_start() {
    let setup = Setup::new("");
    let text = std::fs::read_to_string(setup.config())
        .unwrap()
        .replace(STATIC, "short-static-token");
    std::fs::write(setup.config(), text).unwrap();

    let (ok, out, err) = setup.cli(&["config", "check"]);
    assert!(!ok, "{out}{err}");
    assert!(err.contains("tenants[0].tokens[0]"), "{err}");
    assert!(err.contains("at least 32 characters"), "{err}");
    assert!(!err.contains("short-static-token"), "{err}");

    let err = refused(
        Command::new(BIN)
            .current_dir(setup.dir.path())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(setup.config())
            .arg("--data-dir")
            .arg(setup.data()),
    );
    assert!(err.contains("tenants[0].tokens[0]"), "{err}");

    // The embedded default: SCIM_BRIDGE_TOKEN too.
    let err = refused(
        Command::new(BIN)
            .current_dir(setup.dir.path())
            .env("SCIM_BRIDGE_TOKEN", "a")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(setup.dir.path().join("embedded")),
    );
    assert!(err.contains("SCIM_BRIDGE_TOKEN"), "{err}");
    assert!(err.contains("at least 32 characters"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_token_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let path = data.join("default-token");
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(&path, token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();

    let serve = |cmd: &mut Command| {
        cmd.current_dir(dir.path())
            .env_remove("SCIM_BRIDGE_TOKEN")
            .args(["serve", "--admin-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data);
    };
    let mut cmd = Command::new(BIN);
    serve(&mut cmd);
    cmd.args(["--listen", "127.0.0.1:0"]);
    let err = refused(&mut cmd);
    assert!(
        err.contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
    assert!(!err.contains(token), "{err}");

    // Fixed as the message says: it starts, and the token works.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let mut cmd = Command::new(BIN);
    serve(&mut cmd);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    let _bridge = spawn_listening(&mut cmd);
    assert_eq!(status(port, "default", token), 200);
}

#[test]
fn token_issue_refuses_a_ttl_over_the_maximum_and_defaults_to_it() {
    let setup = Setup::new("jwt_max_lifetime = \"7d\"");
    let (ok, _, err) = setup.cli(&["token", "issue", "--tenant", "acme", "--ttl", "8d"]);
    assert!(!ok);
    assert!(err.contains("jwt_max_lifetime (7d)"), "{err}");
    let (ok, _, err) = setup.cli(&["token", "issue", "--tenant", "acme", "--ttl", "99999999w"]);
    assert!(!ok, "{err}");

    let (ok, out, err) = setup.cli(&["token", "issue", "--tenant", "acme"]);
    assert!(ok, "{err}");
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(out.trim())
        .unwrap()
        .claims;
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 7 * 86_400);
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    assert!(err.contains(claims["jti"].as_str().unwrap()), "{err}");

    // Without jwt_max_lifetime: 90 days at most, and by default.
    let setup = Setup::new("");
    let (ok, _, err) = setup.cli(&["token", "issue", "--tenant", "acme", "--ttl", "365d"]);
    assert!(!ok);
    assert!(err.contains("jwt_max_lifetime (90d)"), "{err}");
    let (ok, out, _) = setup.cli(&["token", "issue", "--tenant", "acme"]);
    assert!(ok);
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(out.trim())
        .unwrap()
        .claims;
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 90 * 86_400);
}

#[test]
fn an_over_long_jwt_and_a_crit_header_get_401() {
    let setup = Setup::new("");
    let (_bridge, port) = setup.serve();
    let day = 86_400;
    let ok = sign(Header::new(Algorithm::HS256), claims(90 * day, "ok-1"));
    assert_eq!(status(port, "acme", &ok), 200);
    let long = sign(Header::new(Algorithm::HS256), claims(91 * day, "long-1"));
    assert_eq!(status(port, "acme", &long), 401);
    // No iat: its lifetime cannot be bounded.
    let mut no_iat = claims(day, "no-iat");
    no_iat.as_object_mut().unwrap().remove("iat");
    assert_eq!(
        status(port, "acme", &sign(Header::new(Algorithm::HS256), no_iat)),
        401
    );

    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["http://example.invalid/must-understand".into()]);
    let mut c = claims(day, "crit-1");
    c["http://example.invalid/must-understand"] = json!(true);
    assert_eq!(status(port, "acme", &sign(crit, c)), 401);
    // The static token still works: the refusals are per token.
    assert_eq!(status(port, "acme", STATIC), 200);
}

#[test]
fn the_configured_jwt_max_lifetime_applies_to_validation() {
    let setup = Setup::new("jwt_max_lifetime = \"1d\"");
    let (_bridge, port) = setup.serve();
    let ok = sign(Header::new(Algorithm::HS256), claims(86_400, "day"));
    assert_eq!(status(port, "acme", &ok), 200);
    let long = sign(
        Header::new(Algorithm::HS256),
        claims(2 * 86_400, "two-days"),
    );
    assert_eq!(status(port, "acme", &long), 401);
}

#[test]
fn a_revoked_jti_gets_401_after_a_restart() {
    let setup = Setup::new("");
    let (ok, out, err) = setup.cli(&["token", "issue", "--tenant", "acme", "--ttl", "1h"]);
    assert!(ok, "{err}");
    let jwt = out.trim().to_string();
    let jti = jti_of(&jwt);
    let other = setup
        .cli(&["token", "issue", "--tenant", "acme", "--ttl", "1h"])
        .1;

    let (bridge, port) = setup.serve();
    assert_eq!(status(port, "acme", &jwt), 200);
    // The running bridge holds the store, and no admin token was given to revoke through its
    // admin API: revoke says so, and changes nothing.
    let (ok, _, err) = setup.cli(&["token", "revoke", "--tenant", "acme", "--jti", &jti]);
    assert!(!ok);
    assert!(err.contains("in use by a running bridge"), "{err}");
    assert!(err.contains("admin token"), "{err}");
    assert_eq!(status(port, "acme", &jwt), 200);
    drop(bridge);

    let (ok, out, err) = setup.cli(&[
        "token", "revoke", "--tenant", "acme", "--jti", &jti, "--reason", "leaked",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&jti) && out.contains("revoked"), "{out}");
    let (ok, out, _) = setup.cli(&["token", "revoke", "--tenant", "acme", "--jti", &jti]);
    assert!(ok && out.contains("already revoked"), "{out}");
    let (ok, _, err) = setup.cli(&["token", "revoke", "--tenant", "nope", "--jti", &jti]);
    assert!(!ok && err.contains("nope"), "{err}");

    let (_bridge, port) = setup.serve();
    assert_eq!(status(port, "acme", &jwt), 401);
    assert_eq!(status(port, "acme", other.trim()), 200);
    assert_eq!(status(port, "acme", STATIC), 200);
}

#[test]
fn a_revocation_written_to_the_store_counts_at_once_for_a_running_bridge() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "listen = \"127.0.0.1:0\"\n[[tenants]]\nid = \"acme\"\njwt_secret = \"{KEY}\"\n[tenants.vendor]\nkind = \"local\"\n"
        );
        let mut config = scim_bridge::config::Config::from_toml_str(&text, &|_| None).unwrap();
        config.data_dir = dir.path().to_path_buf();
        // Not the default admin port 9090: tests run side by side.
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        let store = scim_bridge::store::Store::open(dir.path()).unwrap();
        let state = scim_bridge::server::build_state(&config, store.clone()).unwrap();
        let running = scim_bridge::server::start(config.listen, state, Some(1)).unwrap();
        let port = running.addr.port();
        let jwt = sign(Header::new(Algorithm::HS256), claims(3600, "live-1"));
        let get = |token: String| async move {
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/tenants/acme/scim/v2/Users"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(get(jwt.clone()).await, 200);
        let list = scim_bridge::store::revoked::RevokedTokens::open(&store, "acme").unwrap();
        list.revoke("live-1", "test", None).unwrap();
        assert_eq!(get(jwt).await, 401);
        running.stop().await;
    });
}

#[test]
fn config_check_warns_when_two_tenants_share_a_jwt_secret() {
    let setup = Setup::new("");
    let mut text = std::fs::read_to_string(setup.config()).unwrap();
    text.push_str(&format!(
        "[[tenants]]\nid = \"beta\"\njwt_secret = \"{KEY}\"\n[tenants.vendor]\nkind = \"local\"\n"
    ));
    std::fs::write(setup.config(), text).unwrap();
    let (ok, out, err) = setup.cli(&["config", "check"]);
    assert!(ok, "a warning, not an error: {out}{err}");
    assert!(err.contains("warning: tenants[1].jwt_secret"), "{err}");
    assert!(err.contains("tenants[0].jwt_secret"), "{err}");
    assert!(!err.contains(KEY) && !out.contains(KEY));
}

/// The audit entries of `tenant` exported (JSONL) by `audit export` from the stopped bridge's
/// store, and whether `audit verify` passes there.
fn audit_of_stopped(setup: &Setup) -> (Vec<serde_json::Value>, bool) {
    let data = setup.data();
    let data = data.to_str().unwrap();
    let (ok, out, err) = setup.cli(&["audit", "export", "--tenant", "acme", "--data-dir", data]);
    assert!(ok, "{err}");
    let entries = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (verified, out, err) = setup.cli(&["audit", "verify", "--data-dir", data]);
    assert!(out.contains("intact") || !verified, "{out}{err}");
    (entries, verified)
}

#[test]
fn token_revoke_goes_through_a_running_bridge_at_once_and_through_the_store_without_one() {
    let admin_port = free_port();
    let setup = Setup::new(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntokens = [\"{ADMIN}\"]\n"
    ));
    let issue = || {
        let (ok, out, err) = setup.cli(&["token", "issue", "--tenant", "acme", "--ttl", "1h"]);
        assert!(ok, "{err}");
        let jwt = out.trim().to_string();
        let jti = jti_of(&jwt);
        (jwt, jti)
    };
    let (jwt1, jti1) = issue();
    let (jwt2, jti2) = issue();
    let (jwt3, _) = issue();
    let revoke = |jti: &str, extra: &[&str]| {
        let mut args = vec!["token", "revoke", "--tenant", "acme", "--jti", jti];
        args.extend(extra);
        setup.cli(&args)
    };

    let (bridge, port) = setup.serve_with_its_admin_listener();
    assert_eq!(status(port, "acme", &jwt1), 200);
    // Bad input is refused before anything is asked.
    let (ok, _, err) = revoke("not a jti", &["--admin-token", ADMIN]);
    assert!(!ok && err.contains("--jti"), "{err}");
    // A tenant's token is not an admin token.
    let (ok, _, err) = revoke(&jti1, &["--admin-token", STATIC]);
    assert!(!ok && err.contains("401"), "{err}");
    assert!(!err.contains(STATIC), "{err}");
    assert_eq!(status(port, "acme", &jwt1), 200);

    // Through the running bridge's admin API (found at the config's `[admin] listen`): the
    // very next request with the token is refused.
    let (ok, out, err) = revoke(&jti1, &["--admin-token", ADMIN, "--reason", "leaked"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&jti1) && out.contains("revoked"), "{out}");
    assert!(err.contains("admin API"), "{err}");
    assert_eq!(status(port, "acme", &jwt1), 401);
    assert_eq!(status(port, "acme", &jwt2), 200);
    assert_eq!(status(port, "acme", STATIC), 200);
    let (ok, out, err) = revoke(&jti1, &["--admin-token", ADMIN]);
    assert!(ok && out.contains("already revoked"), "{out}{err}");
    // `audit verify` through the same admin API.
    let (ok, out, err) = setup.cli(&["audit", "verify", "--admin-token", ADMIN]);
    assert!(ok && out.contains("intact"), "{out}{err}");
    drop(bridge);

    // No bridge runs: the store, directly, audited too.
    let (ok, out, err) = revoke(&jti2, &["--reason", "rotated"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&jti2) && out.contains("revoked"), "{out}");
    let (entries, verified) = audit_of_stopped(&setup);
    assert!(verified, "the chain verifies: {entries:?}");
    let revoked: Vec<_> = entries
        .iter()
        .filter(|e| e["event"] == "token_revoked")
        .collect();
    assert_eq!(revoked.len(), 2, "{entries:?}");
    for (e, (jti, reason)) in revoked.iter().zip([(&jti1, "leaked"), (&jti2, "rotated")]) {
        assert_eq!(e["actor"], "operator", "{e}");
        assert_eq!(e["after"]["jti"], json!(jti), "{e}");
        assert_eq!(e["detail"], json!(reason), "{e}");
    }
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [jwt1.as_str(), jwt2.as_str(), KEY, STATIC, ADMIN] {
        assert!(!text.contains(secret), "token material in the audit log");
    }

    let (_bridge, port) = setup.serve_with_its_admin_listener();
    assert_eq!(status(port, "acme", &jwt1), 401);
    assert_eq!(status(port, "acme", &jwt2), 401);
    assert_eq!(status(port, "acme", &jwt3), 200);
}

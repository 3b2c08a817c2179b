//! Issue 15, store permissions: the data dir and every store file are private to the bridge's
//! user (0700 / 0600), an existing store that group or others can read is warned about (naming
//! it) and made private, and the demo keeps its data in a private temporary directory.
//!
//! The store is driven through the release binary (`scim-bridge serve`), as an operator runs it,
//! with the test process's own umask (usually 022) inherited by the child: the modes come from
//! the bridge, not from the test.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_scim-bridge");
/// A static token of the embedded default: long enough for the token-strength rule.
const TOKEN: &str = "security-store-test-token-0123456789abcdef";

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every entry under `root` (not `root` itself), symlinks not followed.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Asserts `root` is 0700 and, under it, every directory 0700 and every file 0600.
fn assert_private(root: &Path) {
    assert_eq!(mode(root), 0o700, "{}", root.display());
    let entries = walk(root);
    assert!(
        entries.iter().any(|p| p.is_file()),
        "the store wrote files under {}",
        root.display()
    );
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            mode(&path),
            want,
            "{} is {:04o}, expected {want:04o}",
            path.display(),
            mode(&path)
        );
    }
}

/// Makes `root` and everything under it readable by group and others, as a store made under
/// umask 022 by an earlier version was.
fn loosen(root: &Path) {
    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    for path in walk(root) {
        if path.is_dir() {
            set(&path, 0o755);
        } else {
            set(&path, 0o644);
        }
    }
    set(root, 0o755);
}

/// A running `scim-bridge serve`: its address and its stderr (JSON log lines) in a file.
struct Serve {
    child: Child,
    addr: String,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
}

impl Serve {
    fn start(cwd: &Path, data_dir: Option<&Path>, token: Option<&str>) -> Serve {
        let logs = tempfile::tempdir().unwrap();
        let stderr = logs.path().join("stderr.jsonl");
        let mut cmd = Command::new(BIN);
        cmd.current_dir(cwd)
            .env_remove("SCIM_BRIDGE_TOKEN")
            .env("RUST_LOG", "info")
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            // Not the default admin port: tests run side by side.
            .args(["--admin-listen", "127.0.0.1:0"]);
        if let Some(d) = data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        if let Some(t) = token {
            cmd.env("SCIM_BRIDGE_TOKEN", t);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        break rest.trim().to_string();
                    }
                    seen.push(line);
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "serve ended before listening: stdout {seen:?}, stderr {}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    );
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            addr,
            stderr,
            _logs: logs,
        }
    }

    /// One HTTP/1.1 request; the status code and the body.
    fn request(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    fn create_user(&self, token: &str, user_name: &str) {
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": user_name, "primary": true}],
        })
        .to_string();
        let (status, body) = self.request("POST", "/scim/v2/Users", token, &body);
        assert_eq!(status, 201, "{body}");
    }

    /// The WARN lines logged so far, as JSON.
    fn warnings(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "WARN")
            .collect()
    }

    /// SIGTERM, then waits for a clean exit (the store is flushed and closed).
    fn stop(mut self) -> Vec<serde_json::Value> {
        // `serve` installs its signal handler just after printing its address: a SIGTERM sent
        // before that would kill it outright instead of a clean shutdown.
        let (status, _) = self.request("GET", "/healthz", "", "");
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "serve exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.warnings()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn permission_warnings(warnings: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    warnings
        .iter()
        .filter(|w| {
            let m = w["message"].as_str().unwrap_or("");
            m.contains("group or others")
        })
        .collect()
}

#[test]
fn serve_on_a_fresh_data_dir_creates_a_private_store() {
    let root = tempfile::tempdir().unwrap();
    // Missing parents too: every directory the bridge creates is 0700.
    let data = root.path().join("var/scim-bridge");
    let serve = Serve::start(root.path(), Some(&data), Some(TOKEN));
    serve.create_user(TOKEN, "ada@example.com");
    assert_private(&data);
    assert_eq!(mode(&root.path().join("var")), 0o700);
    let warnings = serve.stop();
    // After a clean shutdown too: the files sled writes on close are private.
    assert_private(&data);
    assert!(
        permission_warnings(&warnings).is_empty(),
        "a fresh store is not warned about: {warnings:?}"
    );
}

/// The embedded default without `SCIM_BRIDGE_TOKEN`: the data dir (here `./data`) also holds
/// the generated `default-token`.
#[test]
fn the_embedded_default_keeps_its_data_dir_and_token_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let serve = Serve::start(root.path(), None, None);
    assert_private(&data);
    assert_eq!(mode(&data.join("default-token")), 0o600);
    let warnings = serve.stop();
    assert_private(&data);
    assert!(
        permission_warnings(&warnings).is_empty(),
        "a fresh data dir is not warned about: {warnings:?}"
    );
}

#[test]
fn an_existing_readable_store_is_warned_about_and_made_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let store = data.join("store");
    let first = Serve::start(root.path(), Some(&data), Some(TOKEN));
    first.create_user(TOKEN, "grace@example.com");
    first.stop();

    // As an earlier version left it under umask 022.
    loosen(&data);
    assert_eq!(mode(&store), 0o755);
    assert!(walk(&store).iter().any(|p| p.is_file() && mode(p) == 0o644));

    let second = Serve::start(root.path(), Some(&data), Some(TOKEN));
    let warnings = second.warnings();
    let store_warning = warnings
        .iter()
        .find(|w| w["path"] == store.display().to_string())
        .unwrap_or_else(|| panic!("no warning names {}: {warnings:?}", store.display()));
    assert!(
        store_warning["message"]
            .as_str()
            .unwrap()
            .contains("made private"),
        "{store_warning}"
    );
    let dir_warning = warnings
        .iter()
        .find(|w| w["path"] == data.display().to_string())
        .unwrap_or_else(|| panic!("no warning names {}: {warnings:?}", data.display()));
    assert_eq!(dir_warning["mode"], "0755", "{dir_warning}");

    // The store is tightened; the data dir, the operator's choice, is only warned about.
    assert_private(&store);
    assert_eq!(mode(&data), 0o755);

    // Nothing was lost, and the store still serves.
    let (status, body) = second.request("GET", "/scim/v2/Users", TOKEN, "");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["totalResults"], 1, "{list}");
    second.create_user(TOKEN, "hopper@example.com");
    second.stop();
    assert_private(&store);

    // A third start finds nothing to tighten in the store.
    let third = Serve::start(root.path(), Some(&data), Some(TOKEN));
    let warnings = third.stop();
    assert!(
        !warnings
            .iter()
            .any(|w| w["path"] == store.display().to_string()),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_its_data_in_a_private_temporary_dir() {
    // The old predictable path, planted by "another user": the demo must not adopt it.
    let planted = std::env::temp_dir().join(format!("scim-bridge-demo-{}", std::process::id()));
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();

    let demo = scim_bridge::demo::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("the demo starts");
    let data = demo.data_dir.clone();
    assert_ne!(data, planted, "the demo must not use a predictable path");
    assert_eq!(data.parent(), Some(std::env::temp_dir().as_path()));
    let name = data.file_name().unwrap().to_string_lossy().into_owned();
    let suffix = name
        .strip_prefix("scim-bridge-demo-")
        .unwrap_or_else(|| panic!("{name}"));
    assert_ne!(suffix, std::process::id().to_string());
    assert!(suffix.len() >= 6, "a random suffix: {name}");
    assert_private(&data);
    assert!(
        walk(&planted).is_empty(),
        "nothing written to the planted dir"
    );

    // The store holds directory data, never a credential: provision one user per tenant (which
    // makes every connector sign in to its simulator), then read every store file.
    let client = reqwest::Client::new();
    for t in &demo.tenants {
        let user = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": format!("probe-{}@example.com", t.id),
            "emails": [{"value": format!("probe-{}@example.com", t.id), "primary": true}],
            "password": "probe-password-never-stored",
            "name": {"givenName": "Probe", "familyName": "User"},
        });
        let r = client
            .post(format!("{}/Users", t.scim_base))
            .bearer_auth(&t.token)
            .header("content-type", "application/scim+json")
            .body(user.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 201, "{}: {}", t.id, r.text().await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut bytes = Vec::new();
    for path in walk(&data) {
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    let holds = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        holds("probe-local@example.com"),
        "the scan reads what the store wrote"
    );
    let mut secrets: Vec<String> = [
        // The simulators' credentials the demo's connectors sign in with (CONTRACT §1).
        "simulator-pat-secret",
        "simulator-secret-key",
        "mb_simulator_api_key",
        "probe-password-never-stored",
    ]
    .map(String::from)
    .to_vec();
    secrets.extend(demo.tenants.iter().map(|t| t.token.clone()));
    for secret in &secrets {
        assert!(!holds(secret), "the store holds a secret: {secret}");
    }

    // A second demo at once gets its own directory.
    let other = scim_bridge::demo::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("a second demo starts");
    assert_ne!(other.data_dir, data);
    other.stop().await;

    demo.stop().await;
    assert!(!data.exists(), "Demo::stop removes {}", data.display());
    std::fs::remove_dir_all(&planted).unwrap();
}

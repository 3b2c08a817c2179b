//! `scim-bridge shard plan` as an operator runs it: the plan over a real config, the per-shard
//! configs accepted by `config check` and served by real bridges, each answering only for its
//! own tenants, and a re-plan that keeps every tenant where it was. (The Kubernetes manifests it
//! writes are validated with kubernetes-validate in `.ci/lint-deploy`.)

use std::io::{BufRead, BufReader};
use std::path::Path;
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

fn token(tenant: &str) -> String {
    format!("{tenant}-token-0123456789abcdefghijklmnopqrstuvwxyz")
}

/// A config of `n` local tenants `t00..`, with their tokens in the environment (`${T00_TOKEN}`).
fn write_config(path: &Path, n: usize) -> Vec<(String, String)> {
    let mut text = String::from("listen = \"127.0.0.1:8080\"\ndata_dir = \"./data\"\n");
    let mut env = Vec::new();
    for i in 0..n {
        let id = format!("t{i:02}");
        let var = format!("{}_TOKEN", id.to_uppercase());
        text.push_str(&format!(
            "\n[[tenants]]\nid = \"{id}\"\ntokens = [\"${{{var}}}\"]\n[tenants.vendor]\nkind = \"local\"\n"
        ));
        env.push((var, token(&id)));
    }
    std::fs::write(path, text).unwrap();
    env
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn plan_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap()
}

fn shard_of(plan: &serde_json::Value, tenant: &str) -> u64 {
    plan["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["tenant"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} not in {plan}"))["shard"]
        .as_u64()
        .unwrap()
}

/// `serve` on one shard's config, with its own ports and store.
fn serve(config: &Path, data: &Path, env: &[(String, String)]) -> (Running, u16) {
    let (running, port, _) = serve_with_admin(config, data, env);
    (running, port)
}

/// [`serve`], also giving the admin listener's port.
fn serve_with_admin(config: &Path, data: &Path, env: &[(String, String)]) -> (Running, u16, u16) {
    let port = free_port();
    let admin = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--data-dir", data.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    // Drain stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (running, port, admin);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("shard on {} did not listen", config.display());
}

#[tokio::test]
async fn plan_writes_shards_that_serve_only_their_own_tenants_and_replans_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scim-bridge.toml");
    let env = write_config(&config, 7);
    // t00 is big: it must get a shard of its own share.
    let sizes = dir.path().join("sizes.json");
    std::fs::write(
        &sizes,
        r#"[{"id":"t00","users":5000},{"id":"t01","users":10}]"#,
    )
    .unwrap();
    let out = dir.path().join("plan1");
    let (ok, text) = run(&[
        "shard",
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--shards",
        "3",
        "--sizes",
        sizes.to_str().unwrap(),
        "--host",
        "scim.acme.example",
        "--tls-secret",
        "scim-tls",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        !text.contains("warning"),
        "tokens come from ${{ENV}}: {text}"
    );
    let plan = plan_of(&out);
    let big = shard_of(&plan, "t00");
    // Balanced by size: the 5,001-weight tenant is alone on its shard; the six small ones
    // (weights 11, 1, 1, 1, 1, 1) share the other two, whose loads differ by at most the
    // heaviest of them.
    let mut per_shard = [0usize; 3];
    for i in 0..7 {
        per_shard[shard_of(&plan, &format!("t{i:02}")) as usize] += 1;
    }
    assert_eq!(per_shard[big as usize], 1, "{plan}");
    let loads: Vec<u64> = (0..3)
        .filter(|s| *s != big)
        .map(|s| plan["loads"][s as usize].as_u64().unwrap())
        .collect();
    assert_eq!(loads.iter().sum::<u64>(), 16, "{plan}");
    assert!(loads[0].abs_diff(loads[1]) <= 11, "{plan}");
    // Every tenant is routed exactly once, to its own shard's Service.
    let ingress = std::fs::read_to_string(out.join("kubernetes/ingress.yaml")).unwrap();
    for i in 0..7 {
        let t = format!("t{i:02}");
        let path = format!("path: /tenants/{t}/");
        assert_eq!(ingress.matches(&path).count(), 1, "{ingress}");
        let after = &ingress[ingress.find(&path).unwrap()..];
        let backend = after
            .lines()
            .find(|l| l.trim_start().starts_with("name: scim-bridge-"))
            .unwrap();
        assert_eq!(
            backend.trim(),
            format!("name: scim-bridge-{}", shard_of(&plan, &t)),
            "{ingress}"
        );
    }
    assert!(ingress.contains("secretName: scim-tls"), "{ingress}");
    let services = std::fs::read_to_string(out.join("kubernetes/services.yaml")).unwrap();
    assert_eq!(services.matches("kind: Service").count(), 3);
    assert!(services.contains("statefulset.kubernetes.io/pod-name: scim-bridge-2"));
    let configmap = std::fs::read_to_string(out.join("kubernetes/configmap.yaml")).unwrap();
    // The ConfigMap carries each shard's config exactly as written to its file.
    let cm: serde_yaml::Value = serde_yaml::from_str(&configmap).unwrap();
    for s in 0..3 {
        let key = format!("scim-bridge-{s}.toml");
        let file = std::fs::read_to_string(out.join(&key)).unwrap();
        assert_eq!(
            cm["data"][key.as_str()].as_str().unwrap().trim_end(),
            file.trim_end(),
            "{configmap}"
        );
    }
    for doc in serde_yaml::Deserializer::from_str(&services) {
        let svc = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(8080));
    }

    // Each shard's config is valid as it stands, and a bridge started on it serves its own
    // tenants and nobody else's (the same 401 as any unknown tenant).
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for s in 0..3 {
        let c = out.join(format!("scim-bridge-{s}.toml"));
        let check = Command::new(BIN)
            .args(["config", "check", "--config", c.to_str().unwrap()])
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(check.status.success(), "{:?}", check);
    }
    let c = out.join(format!("scim-bridge-{big}.toml"));
    let data = dir.path().join("data-big");
    let (_bridge, port) = serve(&c, &data, &env);
    let http = reqwest::Client::new();
    for i in 0..7 {
        let t = format!("t{i:02}");
        let status = http
            .get(format!("http://127.0.0.1:{port}/tenants/{t}/scim/v2/Users"))
            .bearer_auth(token(&t))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let expected = if t == "t00" { 200 } else { 401 };
        assert_eq!(status, expected, "{t} on shard {big}");
    }

    // Re-plan with two new tenants and the previous plan: nobody moves; a --move wins.
    let env2 = write_config(&config, 9);
    assert_eq!(env2.len(), 9);
    let out2 = dir.path().join("plan2");
    let previous = out.join("plan.json");
    let target = (shard_of(&plan, "t03") + 1) % 3;
    let mv = format!("t03={target}");
    let (ok, text) = run(&[
        "shard",
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--shards",
        "3",
        "--previous",
        previous.to_str().unwrap(),
        "--move",
        &mv,
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let plan2 = plan_of(&out2);
    for i in 0..7 {
        let t = format!("t{i:02}");
        if t != "t03" {
            assert_eq!(shard_of(&plan2, &t), shard_of(&plan, &t), "{t} moved");
        }
    }
    assert_eq!(shard_of(&plan2, "t03"), target);
    shard_of(&plan2, "t07");
    shard_of(&plan2, "t08");
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    write_config(&config, 2);
    let c = config.to_str().unwrap();
    let out = dir.path().join("o");
    let o = out.to_str().unwrap();
    for (args, expect) in [
        (vec!["--shards", "3"], "2 tenant(s)"),
        (vec!["--shards", "0"], "--shards must be"),
        (vec!["--shards", "2", "--move", "t00"], "TENANT=SHARD"),
        (vec!["--shards", "2", "--move", "zz=1"], "no tenant \"zz\""),
        (vec!["--shards", "2", "--name", "Bad_Name"], "DNS label"),
        (vec!["--shards", "2", "--tls-secret", "x"], "needs --host"),
    ] {
        let mut all = vec!["shard", "plan", "--config", c, "--out", o];
        all.extend(args.iter().copied());
        let (ok, text) = run(&all);
        assert!(!ok, "{args:?} succeeded: {text}");
        assert!(text.contains(expect), "{args:?}: {text}");
    }
    assert!(!out.exists(), "a refused plan writes nothing");
    // A literal token is a warning: it would be copied into a ConfigMap.
    std::fs::write(
        &config,
        "[[tenants]]\nid = \"a\"\ntokens = [\"0123456789abcdefghijklmnopqrstuvwxyz\"]\n[tenants.vendor]\nkind = \"local\"\n",
    )
    .unwrap();
    let (ok, text) = run(&["shard", "plan", "--config", c, "--shards", "1", "--out", o]);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: tenants[0].tokens is a literal secret"),
        "{text}"
    );
    assert!(
        !text.contains("0123456789abcdef"),
        "the secret itself is never printed"
    );
}

/// Stops a bridge the way an operator does (SIGTERM: finish in-flight requests, flush).
fn stop(mut bridge: Running) {
    let pid = bridge.0.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    let status = bridge.0.wait().unwrap();
    assert!(
        status.success(),
        "the bridge did not stop cleanly: {status:?}"
    );
}

fn plan_args<'a>(config: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "shard",
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--shards",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]
}

/// The README's runbook: moving a tenant is a re-plan with `--move`; a backup of the old
/// shard taken while it serves, and `store export --tenant` from that copy; `store import` into
/// the new shard's stopped store; then the new configs (the old shard reloads its own on
/// SIGHUP, never stopping) and routes. Ids and ETags survive the move; the old shard stops
/// answering for the tenant and serves the others throughout.
#[tokio::test]
async fn moving_a_tenant_between_shards_keeps_its_ids_and_etags() {
    const ADMIN: &str = "shard-admin-token-0123456789abcdefghijklmnop";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scim-bridge.toml");
    let mut env = write_config(&config, 4);
    env.push(("SCIM_BRIDGE_ADMIN_TOKEN".into(), ADMIN.into()));
    let out1 = dir.path().join("plan1");
    let mut args = plan_args(&config, &out1);
    args.extend(["--move", "t00=0"]);
    let (ok, text) = run(&args);
    assert!(ok, "{text}");
    let (data0, data1) = (dir.path().join("data0"), dir.path().join("data1"));
    // The old shard's config at a path of its own, as a ConfigMap mounts it: the move rewrites
    // it in place and the shard reloads it.
    let shard0 = dir.path().join("shard-0.toml");
    std::fs::copy(out1.join("scim-bridge-0.toml"), &shard0).unwrap();
    let (a, port_a, admin_a) = serve_with_admin(&shard0, &data0, &env);
    let (b, _) = serve(&out1.join("scim-bridge-1.toml"), &data1, &env);
    let other = plan_of(&out1)["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["shard"] == 0 && x["tenant"] != "t00")
        .map(|x| x["tenant"].as_str().unwrap().to_string())
        .expect("another tenant on shard 0");
    let http = reqwest::Client::new();
    let t00 = token("t00");
    let created: serde_json::Value = http
        .post(format!(
            "http://127.0.0.1:{port_a}/tenants/t00/scim/v2/Users"
        ))
        .bearer_auth(&t00)
        .json(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "moving.user@example.com",
            "externalId": "okta-123",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let etag = created["meta"]["version"].as_str().unwrap().to_string();

    // 1. Re-plan: only t00 moves.
    let out2 = dir.path().join("plan2");
    let previous = out1.join("plan.json");
    let mut args = plan_args(&config, &out2);
    args.extend(["--previous", previous.to_str().unwrap(), "--move", "t00=1"]);
    let (ok, text) = run(&args);
    assert!(ok, "{text}");
    let plan2 = plan_of(&out2);
    assert_eq!(shard_of(&plan2, "t00"), 1);
    // 2. Export the tenant from a backup the old shard takes while it serves.
    let snapshot = dir.path().join("shard-0-backup");
    let backup = Command::new(BIN)
        .args(["store", "backup", "--to"])
        .arg(&snapshot)
        .args(["--url", &format!("http://127.0.0.1:{admin_a}")])
        .env("SCIM_BRIDGE_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(backup.status.success(), "{backup:?}");
    let dump = Command::new(BIN)
        .args(["store", "export", "--tenant", "t00", "--data-dir"])
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{dump:?}");
    let serves = |port: u16, tenant: String| {
        let http = http.clone();
        async move {
            http.get(format!(
                "http://127.0.0.1:{port}/tenants/{tenant}/scim/v2/Users"
            ))
            .bearer_auth(token(&tenant))
            .send()
            .await
            .unwrap()
            .status()
        }
    };
    assert_eq!(
        serves(port_a, other.clone()).await,
        200,
        "the old shard serves on"
    );
    // 3. Import it into the new shard's store, stopped.
    stop(b);
    let mut import = Command::new(BIN)
        .args(["store", "import", "--data-dir"])
        .arg(&data1)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut import.stdin.take().unwrap(), &dump.stdout).unwrap();
    let imported = import.wait_with_output().unwrap();
    assert!(imported.status.success(), "{imported:?}");
    // 4. Both shards on their new configs; the routes point at the new shard. The old shard
    // reloads its config in place (SIGHUP) and drops t00 without a restart.
    let (_b, port_b) = serve(&out2.join("scim-bridge-1.toml"), &data1, &env);
    std::fs::copy(out2.join("scim-bridge-0.toml"), &shard0).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &a.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloaded = Instant::now() + Duration::from_secs(20);
    while serves(port_a, "t00".into()).await != 401 {
        assert!(
            Instant::now() < reloaded,
            "the old shard still serves t00 20 s after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        serves(port_a, other.clone()).await,
        200,
        "and serves the others"
    );
    let got = http
        .get(format!(
            "http://127.0.0.1:{port_b}/tenants/t00/scim/v2/Users/{id}"
        ))
        .bearer_auth(&t00)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let got: serde_json::Value = got.json().await.unwrap();
    assert_eq!(got["meta"]["version"], etag.as_str());
    assert_eq!(got["externalId"], "okta-123");
    let old = http
        .get(format!(
            "http://127.0.0.1:{port_a}/tenants/t00/scim/v2/Users/{id}"
        ))
        .bearer_auth(&t00)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401, "the old shard no longer serves t00");
    let ingress = std::fs::read_to_string(out2.join("kubernetes/ingress.yaml")).unwrap();
    let after = &ingress[ingress.find("path: /tenants/t00/").unwrap()..];
    let backend = after
        .lines()
        .find(|l| l.trim_start().starts_with("name: scim-bridge-"))
        .unwrap();
    assert_eq!(backend.trim(), "name: scim-bridge-1");
}

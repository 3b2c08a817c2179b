//! `store export`, `store import` and `store backup` (issue 14, CONTRACT §6) as an operator runs
//! them: the real binary serving a Tableau simulator tenant and a `local` tenant, provisioned
//! through SCIM, then stopped and dumped; the dump imported into a fresh data dir must give back
//! every tree byte for byte, an intact audit chain and the same ids and ETags through SCIM. A
//! truncated or altered dump, or one naming a tenant the store has, is refused with the store
//! left empty; a store from a newer version is refused at `serve`; a backup taken through the
//! admin API under write load is a store that opens and verifies.

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
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tableau_api::*;

const ADMIN_TOKEN: &str = "store-test-admin-token-0123456789abcdef";
const LOCAL_TENANT: &str = "acme-local";
const LOCAL_TOKEN: &str = "test-token-local-store-0123456789abcdef";
/// Members of the large group the round trip carries (issue 14: "a 10,000-member group").
const GROUP_SIZE: usize = 10_000;

fn cli(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
        .args(args)
        .env_remove("SCIM_BRIDGE_ADMIN_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_vec();
        // A refused dump may be answered before it is read whole.
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(dir: &Path, data: &Path, port: u16, admin_port: u16, sim_base: &str) -> PathBuf {
    let path = dir.join(format!("scim-bridge-{port}.toml"));
    std::fs::write(
        &path,
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
base_url = "{sim_base}/"
site = "{SITE}"
api_version = "{API_VERSION}"
pat_name = "{PAT_NAME}"
pat_secret = "{PAT_SECRET}"
deprovision = "unlicense"

[tenants.roles]
default = "Viewer"
rules = [ {{ group = "BI Admins", role = "SiteAdministratorExplorer" }} ]

[[tenants]]
id = "{LOCAL_TENANT}"
tokens = ["{LOCAL_TOKEN}"]

[tenants.vendor]
kind = "local"
"#,
            data = data.display()
        ),
    )
    .unwrap();
    path
}

struct Running {
    bridge: ChildGuard,
    root: String,
    idp: Idp,
    local: Idp,
    admin: String,
}

async fn serve(config: &Path, port: u16, admin_port: u16) -> Running {
    let bridge =
        ChildGuard::spawn(bridge_command().args(["serve", "--config", config.to_str().unwrap()]));
    let root = format!("http://127.0.0.1:{port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let idp = Idp::patient(&root, BRIDGE_TENANT, BRIDGE_TOKEN).with_admin(&admin);
    idp.wait_ready().await;
    let local = Idp::patient(&root, LOCAL_TENANT, LOCAL_TOKEN).with_admin(&admin);
    Running {
        bridge,
        root,
        idp,
        local,
        admin,
    }
}

fn stop(mut r: Running) {
    r.bridge.signal("-TERM");
    let _ = r.bridge.child.wait();
}

fn user(login: &str) -> Value {
    json!({"userName": login, "externalId": format!("ext-{login}"),
           "name": {"givenName": "G", "familyName": login},
           "emails": [{"value": login, "primary": true}], "active": true})
}

/// The `Host` every snapshot request names: `meta.location` and `$ref` are rendered from the
/// address the client used, and the two bridges listen on different ports.
const SNAPSHOT_HOST: &str = "scim.acme.test";

/// One GET as the raw bytes SCIM answers, with the `ETag` header.
async fn raw_get(idp: &Idp, path: &str) -> (Option<String>, bytes::Bytes) {
    let resp = idp
        .http
        .get(format!("{}{path}", idp.base))
        .bearer_auth(&idp.token)
        .header("host", SNAPSHOT_HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (etag, resp.bytes().await.unwrap())
}

/// Everything a tenant's SCIM API answers, byte for byte: every page of `/Users` and `/Groups`
/// (1,000 a page, so a 10,000-user tenant is eleven pages), and every group read on its own
/// with all its members and its `ETag` header. Keys name the request, values the answer.
async fn snapshot(idp: &Idp) -> BTreeMap<String, (Option<String>, bytes::Bytes)> {
    let mut out = BTreeMap::new();
    let mut groups = Vec::new();
    for kind in ["Users", "Groups"] {
        let mut start = 1;
        loop {
            let path = format!("/{kind}?startIndex={start}&count=1000");
            let (etag, body) = raw_get(idp, &path).await;
            let page: Value = serde_json::from_slice(&body).unwrap();
            let resources = page["Resources"].as_array().cloned().unwrap_or_default();
            if kind == "Groups" {
                groups.extend(
                    resources
                        .iter()
                        .map(|g| g["id"].as_str().unwrap().to_string()),
                );
            }
            out.insert(path, (etag, body));
            if resources.is_empty() {
                break;
            }
            start += resources.len();
        }
    }
    for id in groups {
        let path = format!("/Groups/{id}");
        let (etag, body) = raw_get(idp, &path).await;
        assert!(etag.is_some(), "GET {path} carries an ETag");
        out.insert(path, (etag, body));
    }
    out
}

/// The two snapshots answer the same requests with the same bytes; the first difference named.
fn assert_same_answers(
    what: &str,
    before: &BTreeMap<String, (Option<String>, bytes::Bytes)>,
    after: &BTreeMap<String, (Option<String>, bytes::Bytes)>,
) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{what}: the same pages and groups"
    );
    for (path, (etag, body)) in before {
        let (etag2, body2) = &after[path];
        assert_eq!(etag, etag2, "{what}: GET {path}: ETag");
        if body != body2 {
            let at = body
                .iter()
                .zip(body2.iter())
                .take_while(|(a, b)| a == b)
                .count();
            let around = |b: &bytes::Bytes| {
                String::from_utf8_lossy(&b[at.saturating_sub(80)..(at + 80).min(b.len())])
                    .into_owned()
            };
            panic!(
                "{what}: GET {path}: {} and {} bytes, first difference at byte {at}:\n{}\n{}",
                body.len(),
                body2.len(),
                around(body),
                around(body2)
            );
        }
    }
}

/// `n` users on `idp`, 16 at a time as an IdP's bulk push does: their ids, in creation order.
async fn create_users(idp: &Idp, prefix: &str, n: usize) -> Vec<String> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (idp, next, prefix) = (idp.clone(), next.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return made;
                }
                let (status, body) = idp
                    .post("/Users", user(&format!("{prefix}{i:05}@acme.test")))
                    .await;
                assert_eq!(status, 201, "{body}");
                made.push((i, body["id"].as_str().unwrap().to_string()));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.into_iter().map(|(_, id)| id).collect()
}

type Trees = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

/// Every non-empty tree of a stopped store, read with sled itself.
fn trees(data: &Path) -> Trees {
    let db = sled::open(data.join("store")).unwrap();
    let mut out = Trees::new();
    for name in db.tree_names() {
        let kvs: Vec<(Vec<u8>, Vec<u8>)> = db
            .open_tree(&name)
            .unwrap()
            .iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        if !kvs.is_empty() {
            out.insert(name.to_vec(), kvs);
        }
    }
    out
}

fn assert_same_trees(a: &Trees, b: &Trees) {
    let names = |t: &Trees| -> Vec<String> {
        t.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(names(a), names(b), "the same trees");
    for (name, kvs) in a {
        assert!(
            kvs == &b[name],
            "tree {} differs: {} records and {}",
            String::from_utf8_lossy(name),
            kvs.len(),
            b[name].len()
        );
    }
}

/// The tenants a store holds data for (nothing but the format stamp in an empty one).
fn only_meta(data: &Path) -> bool {
    let t = trees(data);
    t.keys().all(|k| k == b"meta")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_import_round_trips_every_tree_and_refuses_bad_dumps() {
    let sim = sim::spawn_with(scim_bridge::sim::Vendor::Tableau, 21, &[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, admin_port) = (free_port(), free_port());
    let cfg = config(dir.path(), &data, port, admin_port, &sim.base_url());
    let r = serve(&cfg, port, admin_port).await;

    // Real traffic: users, a group with members, a PATCH, a delete; on both tenants.
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(create(&r.idp, "/Users", user(&format!("u{i}@acme.test"))).await);
        create(&r.local, "/Users", user(&format!("l{i}@acme.test"))).await;
    }
    let admins = create(&r.idp, "/Groups", group("BI Admins", &[&ids[0], &ids[1]])).await;
    create(
        &r.idp,
        "/Groups",
        group("Sales", &[&ids[2], &ids[3], &ids[4]]),
    )
    .await;
    r.idp
        .patch_ok(
            &format!("/Users/{}", ids[5]),
            json!([{"op": "replace", "path": "active", "value": false}]),
        )
        .await;
    r.idp
        .patch_ok(
            &format!("/Groups/{admins}"),
            json!([{"op": "add", "path": "members", "value": [{"value": ids[6]}]}]),
        )
        .await;
    let (status, _) = r.idp.delete(&format!("/Users/{}", ids[7])).await;
    assert_eq!(status, 204);
    // Issue 14's large group: 10,000 users on the local tenant, all members of one group, added
    // by PATCHes of 1,000 as Okta's group push sends them (answers without the members).
    let everyone = create(&r.local, "/Groups", group("Everyone", &[])).await;
    let many = create_users(&r.local, "m", GROUP_SIZE).await;
    for chunk in many.chunks(1000) {
        let members: Vec<Value> = chunk.iter().map(|id| json!({"value": id})).collect();
        let (status, body) = r
            .local
            .patch(
                &format!("/Groups/{everyone}?excludedAttributes=members"),
                patch_op(json!([{"op": "add", "path": "members", "value": members}])),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Let the engine deliver, so the applied state and the audit chain hold something.
    let started = Instant::now();
    loop {
        let out = cli(
            &[
                "audit",
                "verify",
                "--config",
                cfg.to_str().unwrap(),
                "--admin-token",
                ADMIN_TOKEN,
            ],
            None,
        );
        let s = text(&out.stdout);
        if out.status.success()
            && s.contains(&format!("{BRIDGE_TENANT}: "))
            && !s.contains(": 0 entries")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no audit entries: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_vendor = snapshot(&r.idp).await;
    let before_local = snapshot(&r.local).await;
    // 11 users and 2 groups of the IdP (and what the sync found at the vendor).
    let (_, page) = &before_vendor["/Users?startIndex=1&count=1000"];
    let page: Value = serde_json::from_slice(page).unwrap();
    assert!(page["totalResults"].as_u64().unwrap() >= 11, "{page}");
    assert!(before_vendor.contains_key(&format!("/Groups/{admins}")));
    // 12 + 10,000 local users over 11 pages, and the group with every one of them.
    let (_, page) = &before_local["/Users?startIndex=1&count=1000"];
    let page: Value = serde_json::from_slice(page).unwrap();
    assert_eq!(page["totalResults"], 12 + GROUP_SIZE);
    let (_, g) = &before_local[&format!("/Groups/{everyone}")];
    let g: Value = serde_json::from_slice(g).unwrap();
    let members: std::collections::BTreeSet<&str> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), GROUP_SIZE);
    assert!(many.iter().all(|id| members.contains(id.as_str())));
    assert!(
        String::from_utf8_lossy(&before_local[&format!("/Groups/{everyone}")].1).contains(
            &format!("http://{SNAPSHOT_HOST}/tenants/{LOCAL_TENANT}/scim/v2/")
        ),
        "locations are rendered from the Host the snapshot names"
    );
    // A running bridge holds its store: export says how to get at it.
    let out = cli(
        &["store", "export", "--data-dir", data.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("store backup"),
        "{}",
        text(&out.stderr)
    );
    stop(r);

    let d = data.to_str().unwrap();
    let head = |data: &str| {
        let out = cli(&["audit", "verify", "--data-dir", data], None);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let original_head = head(d);
    let out = cli(&["store", "export", "--data-dir", d], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dump = out.stdout;
    let lines: Vec<&[u8]> = dump
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let header: Value = serde_json::from_slice(lines[0]).unwrap();
    assert_eq!(header["format"], "scim-bridge-dump");
    assert_eq!(header["version"], 1);
    assert_eq!(header["store_version"], 1);
    assert_eq!(
        header["tenants"],
        json!([LOCAL_TENANT, BRIDGE_TENANT]),
        "sorted"
    );
    let trailer: Value = serde_json::from_slice(lines[lines.len() - 1]).unwrap();
    assert_eq!(
        trailer["records"].as_u64().unwrap() as usize,
        lines.len() - 2
    );
    let purposes: std::collections::BTreeSet<String> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| {
            let r: Value = serde_json::from_slice(l).unwrap();
            format!(
                "{}/{}",
                r["tenant"].as_str().unwrap_or("-"),
                r["tree"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        format!("{BRIDGE_TENANT}/tableau"),
        format!("{BRIDGE_TENANT}/audit"),
        format!("{LOCAL_TENANT}/local"),
        "-/meta".to_string(),
    ] {
        assert!(purposes.contains(&want), "{want} not in {purposes:?}");
    }

    // Into a fresh data dir: every tree byte for byte, the chain intact with the same head.
    let fresh = dir.path().join("fresh");
    let f = fresh.to_str().unwrap();
    let out = cli(&["store", "import", "--data-dir", f], Some(&dump));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_same_trees(&trees(&data), &trees(&fresh));
    assert_eq!(head(f), original_head);
    // Importing it again: the tenants are there now.
    let out = cli(&["store", "import", "--data-dir", f], Some(&dump));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("already holds tenant") && err.contains(BRIDGE_TENANT),
        "{err}"
    );
    assert_same_trees(&trees(&data), &trees(&fresh));

    // Damaged dumps are refused and nothing is written.
    let empty = dir.path().join("empty");
    let e = empty.to_str().unwrap();
    let no_trailer = &dump[..dump.len() - lines[lines.len() - 1].len() - 1];
    let cut_mid_line = &dump[..dump.len() / 2];
    let mut altered = dump.clone();
    let at = altered
        .windows(b"u3@acme.test".len())
        .position(|w| w == b"u3@acme.test")
        .unwrap();
    altered[at + 1] = b'4';
    let mut bad_trailer = dump.clone();
    let n = bad_trailer.len();
    bad_trailer[n - 4] = if bad_trailer[n - 4] == b'0' {
        b'1'
    } else {
        b'0'
    };
    for (what, bytes, says) in [
        ("no trailer", no_trailer, "truncated"),
        ("cut mid-line", cut_mid_line, "truncated"),
        ("one byte altered", &altered[..], "SHA-256"),
        ("trailer altered", &bad_trailer[..], "SHA-256"),
        ("not a dump", &b"hello\n"[..], "header"),
    ] {
        let out = cli(&["store", "import", "--data-dir", e], Some(bytes));
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains(says) && err.contains("nothing was written"),
            "{what}: {err}"
        );
        assert!(only_meta(&empty), "{what}: the store stays empty");
        assert!(
            std::fs::read_dir(&empty)
                .unwrap()
                .all(|e| e.unwrap().file_name() == "store"),
            "{what}: no spool file left"
        );
    }

    // One tenant: exported alone, imported next to another tenant; the other then clashes.
    let one = dir.path().join("one");
    let o = one.to_str().unwrap();
    let out = cli(
        &["store", "export", "--data-dir", d, "--tenant", LOCAL_TENANT],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let local_dump = out.stdout;
    let out = cli(
        &[
            "store",
            "export",
            "--data-dir",
            d,
            "--tenant",
            BRIDGE_TENANT,
        ],
        None,
    );
    let vendor_dump = out.stdout;
    assert!(!text(&local_dump).contains(BRIDGE_TENANT));
    for part in [&vendor_dump, &local_dump] {
        let out = cli(&["store", "import", "--data-dir", o], Some(part));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_same_trees(&trees(&data), &trees(&one));
    let out = cli(&["store", "import", "--data-dir", o], Some(&local_dump));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(LOCAL_TENANT),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        &["store", "export", "--data-dir", d, "--tenant", "nobody"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nobody"),
        "{}",
        text(&out.stderr)
    );

    // A bridge on the copy answers every resource with the same bytes: ids, ETags, meta,
    // the 10,000 members.
    let (port2, admin2) = (free_port(), free_port());
    let cfg2 = config(dir.path(), &fresh, port2, admin2, &sim.base_url());
    let r2 = serve(&cfg2, port2, admin2).await;
    assert_same_answers(BRIDGE_TENANT, &before_vendor, &snapshot(&r2.idp).await);
    assert_same_answers(LOCAL_TENANT, &before_local, &snapshot(&r2.local).await);
    stop(r2);

    // A store stamped by a newer version is refused at `serve`, naming both versions.
    {
        let db = sled::open(fresh.join("store")).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format_version", "99")
            .unwrap();
        db.flush().unwrap();
    }
    let out = cli(&["serve", "--config", cfg2.to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("format version 99") && err.contains("up to 1"),
        "{err}"
    );
    sim.stop().await;
}

/// Every file under `dir` is 0600 and every directory 0700.
#[cfg(unix)]
fn assert_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o777;
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}

/// The directory tree's count of users equals its user documents and userName index entries:
/// a copy that caught half a write would not hold that.
fn directory_consistent(db: &sled::Db, tree: &str) -> usize {
    let t = db.open_tree(tree).unwrap();
    let docs = t.scan_prefix("u/").count();
    let names = t.scan_prefix("i/un/").count();
    let count = t
        .get("c/users")
        .unwrap()
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap()))
        .unwrap_or(0) as usize;
    assert_eq!((docs, names), (count, count), "{tree}");
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_through_the_admin_api_under_write_load_opens_and_verifies() {
    let sim = sim::spawn_with(scim_bridge::sim::Vendor::Tableau, 22, &[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, admin_port) = (free_port(), free_port());
    let cfg = config(dir.path(), &data, port, admin_port, &sim.base_url());
    let r = serve(&cfg, port, admin_port).await;
    for i in 0..20 {
        create(&r.idp, "/Users", user(&format!("seed{i}@acme.test"))).await;
    }

    // Writers on both tenants until told to stop.
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (w, tenant, token) in [
        (0, BRIDGE_TENANT, BRIDGE_TOKEN),
        (1, LOCAL_TENANT, LOCAL_TOKEN),
        (2, LOCAL_TENANT, LOCAL_TOKEN),
    ] {
        let idp = Idp::patient(&r.root, tenant, token);
        let stop_load = stop_load.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop_load.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) = idp
                    .post("/Users", user(&format!("w{w}-{n}@acme.test")))
                    .await;
                assert_eq!(status, 201);
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let http = reqwest::Client::new();
    let api = |to: &Path| {
        http.post(format!("{}/admin/api/store/backup", r.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"to": to}))
            .send()
    };
    let first = dir.path().join("backup-api");
    let resp = api(&first).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let report: Value = resp.json().await.unwrap();
    assert!(report["records"].as_u64().unwrap() > 0, "{report}");
    // The CLI, through the same API, while the writers go on.
    let second = dir.path().join("backup-cli");
    let out = cli(
        &[
            "store",
            "backup",
            "--to",
            second.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--admin-token",
            ADMIN_TOKEN,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("backup in"),
        "{}",
        text(&out.stdout)
    );
    // Refusals: a non-empty target, a relative path, no token.
    let resp = api(&first).await.unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not empty"),
        "{body}"
    );
    let resp = api(Path::new("relative/dir")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = http
        .post(format!("{}/admin/api/store/backup", r.admin))
        .json(&json!({"to": dir.path().join("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(!dir.path().join("x").exists());

    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    for l in load {
        written += l.await.unwrap();
    }
    assert!(
        written > 20,
        "the writers wrote during the backups ({written})"
    );
    stop(r);

    for b in [&first, &second] {
        #[cfg(unix)]
        assert_private(b);
        let out = cli(
            &["audit", "verify", "--data-dir", b.to_str().unwrap()],
            None,
        );
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("audit chain intact"));
        {
            // One open for both trees: a second open right after dropping the first found the
            // store's lock still held once on a loaded CI machine (sled: WouldBlock).
            let db = sled::open(b.join("store")).unwrap();
            let users = directory_consistent(&db, &format!("t/{BRIDGE_TENANT}/tableau"));
            assert!(users >= 20);
            directory_consistent(&db, &format!("t/{LOCAL_TENANT}/local"));
        }
        // The backup is a data dir: it exports, and the dump imports.
        let out = cli(
            &["store", "export", "--data-dir", b.to_str().unwrap()],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let restored = b.with_extension("restored");
        let out = cli(
            &["store", "import", "--data-dir", restored.to_str().unwrap()],
            Some(&out.stdout),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_same_trees(&trees(b), &trees(&restored));
    }
    // With no bridge running, --data-dir copies the stopped store.
    let third = dir.path().join("backup-offline");
    let out = cli(
        &[
            "store",
            "backup",
            "--to",
            third.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut want = trees(&data);
    let mut got = trees(&third);
    // The copy's own format stamp is the same; nothing else differs.
    want.remove(&b"meta"[..]);
    got.remove(&b"meta"[..]);
    assert_same_trees(&want, &got);
    sim.stop().await;
}

//! Load generator and seeder for `scripts/bench-server.sh`.
//!
//! `bench_seed http --url URL --token T --users N --concurrency C --out FILE`
//!     POSTs N users with C concurrent keep-alive connections, prints the rate, and writes
//!     `userName<TAB>id` lines to FILE for the read benchmarks.
//! `bench_seed direct --data-dir DIR --users N`
//!     writes N users straight into a data dir through the directory store (for the start-up
//!     benchmark, where going through HTTP would take minutes).
//! `bench_seed tenants --data-dir DIR --tenants N --users U --token T --config FILE --out FILE`
//!     N local tenants of U users each, straight into the store, and the config that serves
//!     them (`scripts/bench-tenants.sh`).

use scim_bridge::scim::resource::canonicalize;
use scim_bridge::scim::schema::{ResourceKind, ResourceSchema, SchemaRegistry};
use scim_bridge::store::directory::Directory;
use scim_bridge::store::Store;
use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn user_body(i: usize) -> serde_json::Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": format!("bench.user{i:07}@example.com"),
        "name": {"givenName": "Bench", "familyName": format!("User{i}")},
        "emails": [{"value": format!("bench.user{i:07}@example.com"), "type": "work", "primary": true}],
        "displayName": format!("Bench User {i}"),
        "externalId": format!("ext-{i}"),
        "active": true
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let users: usize = arg(&args, "--users")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    match args.get(1).map(String::as_str) {
        Some("http") => {
            let url = arg(&args, "--url").expect("--url");
            let token = arg(&args, "--token").expect("--token");
            let concurrency: usize = arg(&args, "--concurrency")
                .and_then(|v| v.parse().ok())
                .unwrap_or(16);
            let out = arg(&args, "--out").expect("--out");
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency)
                .build()
                .unwrap();
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, next, url, token) =
                    (client.clone(), next.clone(), url.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    let mut made = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= users {
                            break;
                        }
                        let body = user_body(i);
                        let resp = client
                            .post(format!("{url}/Users"))
                            .bearer_auth(&token)
                            .header("content-type", "application/scim+json")
                            .body(body.to_string())
                            .send()
                            .await
                            .expect("POST");
                        assert_eq!(resp.status().as_u16(), 201, "POST /Users");
                        let v: serde_json::Value = resp.json().await.expect("json");
                        made.push((
                            body["userName"].as_str().unwrap().to_string(),
                            v["id"].as_str().unwrap().to_string(),
                        ));
                    }
                    made
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "POST /Users: {} users in {:.1} s = {:.0} req/s (concurrency {concurrency})",
                all.len(),
                secs,
                all.len() as f64 / secs
            );
            let mut f = std::fs::File::create(&out).unwrap();
            for (n, id) in all {
                writeln!(f, "{n}\t{id}").unwrap();
            }
        }
        Some("group") => {
            // A group with every seeded user as a member, then the cost of one more member and
            // of a members-excluded read: neither may grow with the group.
            let url = arg(&args, "--url").expect("--url");
            let token = arg(&args, "--token").expect("--token");
            let file = arg(&args, "--users-file").expect("--users-file");
            let ids: Vec<String> = std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
                .collect();
            let client = reqwest::Client::new();
            let send = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
                let mut r = client
                    .request(method, format!("{url}{path}"))
                    .bearer_auth(&token);
                if let Some(b) = body {
                    r = r
                        .header("content-type", "application/scim+json")
                        .body(b.to_string());
                }
                r.send()
            };
            let g: serde_json::Value = send(
                reqwest::Method::POST,
                "/Groups".into(),
                Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Everyone (bench)"})),
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let gid = g["id"].as_str().unwrap().to_string();
            let (last, rest) = ids.split_last().unwrap();
            let started = Instant::now();
            for chunk in rest.chunks(1000) {
                let members: Vec<_> = chunk.iter().map(|id| json!({"value": id})).collect();
                let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "add", "path": "members", "value": members}]});
                let r = send(
                    reqwest::Method::PATCH,
                    format!("/Groups/{gid}?excludedAttributes=members"),
                    Some(body),
                )
                .await
                .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
            println!(
                "group of {} members built in {:.1} s (PATCHes of 1,000 members)",
                rest.len(),
                started.elapsed().as_secs_f64()
            );
            let t = Instant::now();
            let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": last}]}]});
            let r = send(
                reqwest::Method::PATCH,
                format!("/Groups/{gid}?excludedAttributes=members"),
                Some(body),
            )
            .await
            .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            println!(
                "PATCH adding 1 member to it: {:.2} ms",
                t.elapsed().as_secs_f64() * 1000.0
            );
            let t = Instant::now();
            let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": format!("members[value eq \"{last}\"]")}]});
            let r = send(
                reqwest::Method::PATCH,
                format!("/Groups/{gid}?excludedAttributes=members"),
                Some(body),
            )
            .await
            .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            println!(
                "PATCH removing 1 member by filter: {:.2} ms",
                t.elapsed().as_secs_f64() * 1000.0
            );
            let mut lat = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let r = send(
                    reqwest::Method::GET,
                    format!("/Groups/{gid}?excludedAttributes=members"),
                    None,
                )
                .await
                .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "GET group ?excludedAttributes=members: p50 {:.2} ms, p99 {:.2} ms",
                lat[100], lat[197]
            );
            let t = Instant::now();
            let r = send(reqwest::Method::GET, format!("/Groups/{gid}"), None)
                .await
                .unwrap();
            let n = r.json::<serde_json::Value>().await.unwrap()["members"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            println!(
                "GET group with all {n} members: {:.0} ms",
                t.elapsed().as_secs_f64() * 1000.0
            );
        }
        Some("direct") => {
            // Straight into the directory in batches of 1,000 (one flush at the end): the same
            // documents and indexes `POST /Users` writes, minutes faster than going through HTTP.
            let dir = arg(&args, "--data-dir").expect("--data-dir");
            let store = Store::open(std::path::Path::new(&dir)).unwrap();
            let directory =
                Directory::open(&store, "default", "local", SchemaRegistry::default()).unwrap();
            let schema = ResourceSchema::user();
            let started = Instant::now();
            let mut batch = scim_bridge::store::Batch::default();
            for i in 0..users {
                let r = canonicalize(&user_body(i), &schema).unwrap();
                let (id, mut doc) = directory.new_doc(ResourceKind::User, &r);
                directory.stamp(ResourceKind::User, &mut doc, None);
                directory.write_doc(&mut batch, ResourceKind::User, &id, &doc, None);
                directory.bump_count(&mut batch, ResourceKind::User, 1);
                if i % 1000 == 999 {
                    directory.commit(std::mem::take(&mut batch)).unwrap();
                }
                if i % 100_000 == 0 && i > 0 {
                    eprintln!(
                        "{i} users ({:.0}/s)",
                        i as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
            directory.commit(batch).unwrap();
            store.flush().await.unwrap();
            println!(
                "wrote {users} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Some("tenants") => {
            // Many tenants (issue 14): `--tenants N` local tenants `t0000…` with `--users` users
            // each, written straight into the store, plus the config that serves them
            // (`--config FILE`; tenant t's token is `{--token}-t`) and `tenant<TAB>userName`
            // lines for the lookup load (`--out`).
            let dir = arg(&args, "--data-dir").expect("--data-dir");
            let tenants: usize = arg(&args, "--tenants")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            let config = arg(&args, "--config").expect("--config");
            let out = arg(&args, "--out").expect("--out");
            let token = arg(&args, "--token").expect("--token");
            let store = Store::open(std::path::Path::new(&dir)).unwrap();
            let schema = ResourceSchema::user();
            let started = Instant::now();
            let mut toml = format!("data_dir = {dir:?}\n");
            let mut names = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
            for t in 0..tenants {
                let id = format!("t{t:04}");
                toml.push_str(&format!(
                    "\n[[tenants]]\nid = \"{id}\"\ntokens = [\"{token}-{id}\"]\n[tenants.vendor]\nkind = \"local\"\n"
                ));
                let directory =
                    Directory::open(&store, &id, "local", SchemaRegistry::default()).unwrap();
                let mut batch = scim_bridge::store::Batch::default();
                for i in 0..users {
                    let r = canonicalize(&user_body(i), &schema).unwrap();
                    let (uid, mut doc) = directory.new_doc(ResourceKind::User, &r);
                    directory.stamp(ResourceKind::User, &mut doc, None);
                    directory.write_doc(&mut batch, ResourceKind::User, &uid, &doc, None);
                    directory.bump_count(&mut batch, ResourceKind::User, 1);
                    writeln!(names, "{id}\tbench.user{i:07}@example.com").unwrap();
                }
                directory.commit(batch).unwrap();
            }
            store.flush().await.unwrap();
            std::fs::write(&config, toml).unwrap();
            println!(
                "wrote {tenants} tenants x {users} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        _ => {
            eprintln!("usage: bench_seed http --url URL --token T --users N --concurrency C --out FILE | direct --data-dir DIR --users N");
            std::process::exit(2);
        }
    }
}

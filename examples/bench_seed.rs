//! Load generator and seeder for `scripts/bench-server.sh`.
//!
//! `bench_seed http --url URL --token T --users N --concurrency C --out FILE`
//!     POSTs N users with C concurrent keep-alive connections, prints the rate, and writes
//!     `userName<TAB>id` lines to FILE for the read benchmarks.
//! `bench_seed direct --data-dir DIR --users N`
//!     writes N users straight into a data dir through the local connector (for the start-up
//!     benchmark, where going through HTTP would take minutes).

use scim_bridge::connector::local::LocalConnector;
use scim_bridge::connector::{Connector, RequestContext};
use scim_bridge::scim::resource::canonicalize;
use scim_bridge::scim::schema::{ResourceKind, ResourceSchema};
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
        Some("direct") => {
            let dir = arg(&args, "--data-dir").expect("--data-dir");
            let store = Store::open(std::path::Path::new(&dir)).unwrap();
            let conn = LocalConnector::open(&store, "default").unwrap();
            let schema = ResourceSchema::user();
            let ctx = RequestContext {
                base_url: "http://localhost/scim/v2".into(),
            };
            let started = Instant::now();
            for i in 0..users {
                let r = canonicalize(&user_body(i), &schema).unwrap();
                conn.create(ResourceKind::User, r, &ctx).await.unwrap();
                if i % 100_000 == 0 && i > 0 {
                    eprintln!(
                        "{i} users ({:.0}/s)",
                        i as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
            store.flush().await.unwrap();
            println!(
                "wrote {users} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        _ => {
            eprintln!("usage: bench_seed http --url URL --token T --users N --concurrency C --out FILE | direct --data-dir DIR --users N");
            std::process::exit(2);
        }
    }
}

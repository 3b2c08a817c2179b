//! Bursts: Okta and Entra send many requests at once (large assignments, group pushes).

use crate::helpers::*;
use futures_util::stream::{self, StreamExt};
use std::time::Duration;

/// 64 creates with 32 in flight must all complete. With sled 0.34, `Store::flush` runs
/// `flush_async` on sled's shared IO pool (7 threads); enough concurrent flushes occupy every
/// pool thread waiting for a log write that is queued behind them, and every write of the process
/// hangs for good.
#[tokio::test]
async fn a_burst_of_concurrent_creates_completes() {
    let app = spawn_app().await;
    for round in 0..5 {
        burst(&app, round).await;
    }
    assert_eq!(app.get("/Users").await.ok_json()["totalResults"], 320);
}

async fn burst(app: &TestApp, round: usize) {
    let names: Vec<String> = (0..64)
        .map(|i| format!("burst{round}-{i}@example.com"))
        .collect();
    let run = stream::iter(names.iter())
        .map(|n| async move { post_unlimited(app, &user_body(n)).await })
        .buffer_unordered(burst_size())
        .collect::<Vec<u16>>();
    let statuses = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("64 concurrent creates did not finish within 30 s: the server hangs");
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
}

/// The same userName POSTed 20 times at once (an IdP retrying a slow create): exactly one 201,
/// the rest 409, and one user stored. Ignored for the same reason as the burst above.
#[tokio::test]
async fn concurrent_duplicate_creates_make_one_user() {
    let app = spawn_app().await;
    let run = stream::iter(0..20)
        .map(|_| {
            let app = &app;
            async move { post_unlimited(app, &user_body("dup@example.com")).await }
        })
        .buffer_unordered(burst_size())
        .collect::<Vec<u16>>();
    let mut statuses = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the server hangs");
    statuses.sort();
    let mut want = vec![409; 19];
    want.insert(0, 201);
    assert_eq!(statuses, want);
    assert_eq!(app.get("/Users").await.ok_json()["totalResults"], 1);
}

/// Requests in flight at once; `BURST=n` overrides. Before group commit, 12 hung the process.
fn burst_size() -> usize {
    std::env::var("BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// POST /Users, returning only the status.
async fn post_unlimited(app: &TestApp, body: &serde_json::Value) -> u16 {
    Resp::send_unlimited(
        app.request(reqwest::Method::POST, "/Users")
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(body.to_string()),
    )
    .await
    .status
    .as_u16()
}

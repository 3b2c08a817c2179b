//! Operations surface: health, readiness, Prometheus metrics, request ids.

use crate::helpers::*;
use reqwest::Method;

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    let r = app.get_root("/healthz").await;
    r.assert_status(200);
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn readyz_answers_200_json_when_the_store_is_open() {
    let app = spawn_app().await;
    let r = app.get_root("/readyz").await;
    r.assert_status(200);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{ct}");
    let body = r.json();
    assert!(body.is_object(), "{body}");
    assert_eq!(body["status"], "ready", "{body}");
}

#[tokio::test]
async fn metrics_count_requests_by_tenant_resource_method_status_and_never_show_the_token() {
    let app = spawn_app().await;
    app.get("/Users").await.assert_status(200);
    app.get("/Users/does-not-exist").await.assert_status(404);
    let r = app.get_root("/metrics").await;
    r.assert_status(200);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = &r.text;
    assert!(text.contains("scim_requests_total"), "{text}");
    let line = |status: &str| {
        text.lines().find(|l| {
            l.starts_with("scim_requests_total{")
                && l.contains("tenant=\"default\"")
                && l.contains("resource=\"Users\"")
                && l.contains("method=\"GET\"")
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    let ok = line("200").unwrap_or_else(|| panic!("no GET Users 200 series in:\n{text}"));
    assert!(ok.trim_end().ends_with(" 1"), "{ok}");
    assert!(line("404").is_some(), "no GET Users 404 series in:\n{text}");
    assert!(
        !text.contains(DEFAULT_TOKEN),
        "the token leaked into /metrics"
    );
}

#[tokio::test]
async fn every_response_carries_an_x_request_id() {
    let app = spawn_app().await;
    let responses = vec![
        app.get("/Users").await,
        app.get("/Users/nope").await,
        Resp::send(app.anonymous(Method::GET, "/Users")).await,
        Resp::send(app.request(Method::POST, "/Schemas")).await,
        app.get_root("/healthz").await,
        app.get_root("/readyz").await,
        app.get_root("/metrics").await,
        app.get_root("/no/such/thing").await,
        app.get("/ServiceProviderConfig").await,
    ];
    let mut seen = std::collections::HashSet::new();
    for r in &responses {
        let rid = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id on a {} response: {}", r.status, r.text));
        assert!(!rid.is_empty());
        assert!(seen.insert(rid.clone()), "request id {rid} reused");
    }
    let statuses: Vec<u16> = responses.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [200, 404, 401, 405, 200, 200, 200, 404, 200]);
}

#[tokio::test]
async fn a_sane_client_request_id_is_echoed() {
    let app = spawn_app().await;
    let r = Resp::send(
        app.request(Method::GET, "/Users")
            .header("X-Request-Id", "okta-job-1234"),
    )
    .await;
    r.assert_status(200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("okta-job-1234"));
}

#[tokio::test]
async fn unknown_root_paths_get_a_scim_404_body() {
    let app = spawn_app().await;
    app.get_root("/no/such/thing").await.assert_error(404, None);
}

#[tokio::test]
async fn metrics_labels_stay_bounded_for_unknown_tenants_and_paths() {
    let app = spawn_app().await;
    for i in 0..3 {
        // The same 401 as a known tenant without a valid token (no tenant enumeration).
        app.get_root(&format!("/tenants/scanner-{i}/scim/v2/Users"))
            .await
            .assert_error(401, None);
        app.get(&format!("/Weird{i}")).await.assert_error(404, None);
    }
    let text = app.get_root("/metrics").await.text;
    assert!(
        !text.contains("scanner-"),
        "unknown tenants become labels:\n{text}"
    );
    assert!(
        !text.contains("Weird"),
        "unknown paths become labels:\n{text}"
    );
}

#[tokio::test]
async fn an_insane_client_request_id_is_replaced() {
    let app = spawn_app().await;
    let long = "x".repeat(500);
    for bad in ["has space", long.as_str()] {
        let r = Resp::send(
            app.request(Method::GET, "/Users")
                .header("X-Request-Id", bad),
        )
        .await;
        r.assert_status(200);
        let rid = r.header("x-request-id").expect("x-request-id");
        assert_ne!(rid, bad);
        assert!(!rid.is_empty() && rid.len() <= 128);
    }
}

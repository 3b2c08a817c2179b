//! Operations surface: health, readiness, Prometheus metrics, request ids; and the split of
//! issue 15 between the public listener (SCIM, `/healthz`, a bare `/readyz`) and the admin
//! listener (`/metrics`, the detailed `/readyz`, `/admin/api/`), with the admin credentials.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

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
    let r = app.get_admin("/metrics", None).await;
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
    // `/metrics` is not the public listener's any more: a 404 like any unknown path.
    assert_eq!(statuses, [200, 404, 401, 405, 200, 200, 404, 404, 200]);
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
    let r = app.get_admin("/metrics", None).await;
    r.assert_status(200);
    let text = r.text;
    assert!(text.contains("scim_requests_total"), "{text}");
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

// ---------------------------------------------------------------------------------------------
// Issue 15, "Listeners": what each listener serves, and who may use the admin one.
// ---------------------------------------------------------------------------------------------

const TOK_ACME: &str = "tok-acme-ops-0001-0123456789abcdef";
const TOK_GLOBEX: &str = "tok-globex-ops-0002-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-ops-token-0003-0123456789abcdef0123";
const METRICS_TOKEN: &str = "metrics-ops-token-0004-0123456789abcdef";

/// Two local tenants whose ids are customer names (what the public port must never show), and
/// `admin` as the `[admin]` table's body (its `listen` is set to a free port here).
fn customers(admin: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "./unused"

[admin]
listen = "127.0.0.1:0"
{admin}

[[tenants]]
id = "acme-corp"
tokens = ["{TOK_ACME}"]

[tenants.vendor]
kind = "local"

[[tenants]]
id = "globex"
tokens = ["{TOK_GLOBEX}"]

[tenants.vendor]
kind = "local"
"#
    )
}

/// Each tenant answers one SCIM request, so that both have series in `/metrics`.
async fn one_request_each(app: &TestApp) {
    for (tenant, token) in [("acme-corp", TOK_ACME), ("globex", TOK_GLOBEX)] {
        Resp::send(
            app.client
                .get(format!("{}/Users", app.tenant_base(tenant)))
                .bearer_auth(token),
        )
        .await
        .assert_status(200);
    }
}

#[tokio::test]
async fn the_public_listener_serves_no_metrics_and_a_readiness_that_names_nobody() {
    let app = spawn_with_config(&customers("")).await;
    one_request_each(&app).await;
    assert_ne!(app.root, app.admin_root, "two listeners");

    let r = app.get_root("/metrics").await;
    r.assert_status(404);
    assert!(
        !r.text.contains("scim_"),
        "metrics on the public port: {}",
        r.text
    );
    // The old `?verbose` is just the bare answer now, however it is asked.
    for path in ["/readyz", "/readyz?verbose", "/readyz?verbose=1"] {
        let r = app.get_root(path).await;
        r.assert_status(200);
        assert_eq!(r.json(), json!({"status": "ready"}), "{path}");
        for tenant in ["acme-corp", "globex"] {
            assert!(
                !r.text.contains(tenant),
                "{path} names {tenant}: {}",
                r.text
            );
        }
    }
    app.get_root("/healthz").await.assert_status(200);
    // Nor is the admin API there.
    let r = Resp::send(
        app.client
            .get(format!("{}/admin/api/tenants", app.root))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    r.assert_status(404);
    assert!(!r.text.contains("acme-corp"), "{}", r.text);
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_and_the_detailed_readiness() {
    let app = spawn_with_config(&customers("")).await;
    one_request_each(&app).await;

    let r = app.get_admin("/metrics", None).await;
    r.assert_status(200);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "{ct}");
    for tenant in ["acme-corp", "globex"] {
        assert!(
            r.text.lines().any(|l| l.starts_with("scim_requests_total{")
                && l.contains(&format!("tenant=\"{tenant}\""))),
            "no series of {tenant}:\n{}",
            r.text
        );
    }
    assert!(
        !r.text.contains(TOK_ACME) && !r.text.contains(TOK_GLOBEX),
        "a token leaked"
    );

    let r = app.get_admin("/readyz", None).await;
    r.assert_status(200);
    let body = r.json();
    assert_eq!(body["status"], "ready", "{body}");
    // Local tenants have no vendor to be unavailable: the map is there, and empty.
    assert_eq!(body["vendors_unavailable"], json!({}), "{body}");
    assert!(body.get("store").is_none(), "{body}");

    app.get_admin("/healthz", None).await.assert_status(200);
}

#[tokio::test]
async fn the_admin_api_refuses_tenant_tokens_and_accepts_an_admin_token() {
    let app = spawn_with_config(&customers(&format!("tokens = [\"{ADMIN_TOKEN}\"]"))).await;

    // No bearer, a tenant's bearer, a wrong one: 401, and the tenant's data is not shown.
    for bearer in [None, Some(TOK_ACME), Some(TOK_GLOBEX), Some("not-a-token")] {
        let r = app.get_admin("/admin/api/tenants", bearer).await;
        assert_eq!(r.status.as_u16(), 401, "{bearer:?}: {}", r.text);
        assert!(r.header("www-authenticate").is_some(), "{bearer:?}");
        assert!(!r.text.contains("acme-corp"), "{bearer:?}: {}", r.text);
        if let Some(b) = bearer {
            assert!(!r.text.contains(b), "the bearer echoed: {}", r.text);
        }
    }

    let r = app.get_admin("/admin/api/tenants", Some(ADMIN_TOKEN)).await;
    r.assert_status(200);
    let body = r.json();
    let ids: Vec<&str> = body
        .as_array()
        .unwrap_or_else(|| panic!("a list of tenants: {body}"))
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme-corp", "globex"], "{body}");
    assert!(!r.text.contains(ADMIN_TOKEN), "the admin token echoed");

    // The admin token is not a tenant's: SCIM refuses it.
    let r = Resp::send(
        app.client
            .get(format!("{}/Users", app.tenant_base("acme-corp")))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    r.assert_error(401, None);
}

#[tokio::test]
async fn without_admin_tokens_the_admin_api_answers_401_to_everyone() {
    let app = spawn_with_config(&customers("")).await;
    for bearer in [None, Some(TOK_ACME), Some(ADMIN_TOKEN)] {
        let r = app.get_admin("/admin/api/tenants", bearer).await;
        assert_eq!(r.status.as_u16(), 401, "{bearer:?}: {}", r.text);
    }
    // `/metrics` stays open without a metrics_token.
    app.get_admin("/metrics", None).await.assert_status(200);
}

#[tokio::test]
async fn a_metrics_token_guards_metrics_and_an_admin_token_opens_them_too() {
    let app = spawn_with_config(&customers(&format!(
        "tokens = [\"{ADMIN_TOKEN}\"]\nmetrics_token = \"{METRICS_TOKEN}\""
    )))
    .await;
    one_request_each(&app).await;
    for bearer in [None, Some(TOK_ACME), Some("metrics-ops-token-0004-wrong")] {
        let r = app.get_admin("/metrics", bearer).await;
        assert_eq!(r.status.as_u16(), 401, "{bearer:?}: {}", r.text);
        assert!(!r.text.contains("scim_requests_total"), "{bearer:?}");
    }
    for bearer in [METRICS_TOKEN, ADMIN_TOKEN] {
        let r = app.get_admin("/metrics", Some(bearer)).await;
        r.assert_status(200);
        assert!(r.text.contains("scim_requests_total"), "{}", r.text);
    }
    // The metrics token opens only `/metrics`, not the admin API.
    let r = app
        .get_admin("/admin/api/tenants", Some(METRICS_TOKEN))
        .await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text);
}

#[tokio::test]
async fn admin_tokens_shorter_than_32_characters_are_refused() {
    let text = customers("tokens = [\"short-admin-token\"]");
    let err = scim_bridge::config::Config::from_toml_str(&text, &|_| None)
        .expect_err("a short admin token is refused");
    let msg = err.to_string();
    assert!(msg.contains("admin.tokens[0]"), "{msg}");
    assert!(
        !msg.contains("short-admin-token"),
        "the token echoed: {msg}"
    );
}

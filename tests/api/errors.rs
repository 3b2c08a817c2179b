//! Bad input gets the right 4xx with an RFC 7644 §3.12 Error body, never a 5xx, and the server
//! keeps serving afterwards (CONTRACT §2).

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

async fn post_raw(app: &TestApp, path: &str, content_type: Option<&str>, body: String) -> Resp {
    let mut rb = app.request(Method::POST, path).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("Content-Type", ct);
    }
    Resp::send(rb).await
}

/// After the bad requests of a test: the server still answers a normal request.
async fn still_serving(app: &TestApp) {
    let id = app.create_user("still.serving@example.com").await;
    app.get(&format!("/Users/{id}")).await.ok_json();
    app.get("/Users").await.ok_json();
}

#[tokio::test]
async fn malformed_json_is_400_invalid_syntax() {
    let app = spawn_app().await;
    for body in [
        r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"#,
        "not json at all",
        "{\"userName\": \"a\",}",
        "\u{0}\u{1}\u{2}",
    ] {
        let r = post_raw(&app, "/Users", Some(SCIM_CONTENT_TYPE), body.to_string()).await;
        r.assert_error(400, Some("invalidSyntax"));
    }
    // Valid JSON, but not an object.
    post_raw(&app, "/Users", Some(SCIM_CONTENT_TYPE), "[1,2]".into())
        .await
        .assert_error(400, None);
    // An empty body.
    post_raw(&app, "/Users", Some(SCIM_CONTENT_TYPE), String::new())
        .await
        .assert_error(400, None);
    // Malformed JSON on PUT and PATCH too.
    let id = app.create_user("target@example.com").await;
    for m in [Method::PUT, Method::PATCH] {
        let r = Resp::send(
            app.request(m.clone(), &format!("/Users/{id}"))
                .header("Content-Type", SCIM_CONTENT_TYPE)
                .body("{\"Operations\": ["),
        )
        .await;
        r.assert_error(400, Some("invalidSyntax"));
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn wrong_attribute_types_are_400_invalid_value() {
    let app = spawn_app().await;
    let mut body = user_body("types@example.com");
    body["userName"] = json!(5);
    app.post("/Users", &body)
        .await
        .assert_error(400, Some("invalidValue"));
    let mut body = user_body("types@example.com");
    body["active"] = json!("maybe");
    app.post("/Users", &body)
        .await
        .assert_error(400, Some("invalidValue"));
    // A bare string for a multi-valued complex attribute: refused, or taken as its `value` (a
    // lenient reading, like Entra's bare-string manager); never stored as a string.
    let mut body = user_body("lenient@example.com");
    body["emails"] = json!("lenient@example.com");
    let r = app.post("/Users", &body).await;
    if r.status == 201 {
        let created = r.json();
        assert_eq!(
            created["emails"],
            json!([{"value": "lenient@example.com"}]),
            "{created}"
        );
        app.delete(&format!("/Users/{}", id_of(&created)))
            .await
            .assert_status(204);
    } else {
        r.assert_error(400, None);
    }
    let mut body = user_body("types@example.com");
    body["name"] = json!(["not", "an", "object"]);
    app.post("/Users", &body).await.assert_error(400, None);
    // Nothing was created by any of them.
    assert_eq!(app.get("/Users").await.ok_json()["totalResults"], 0);
    still_serving(&app).await;
}

#[tokio::test]
async fn resources_that_are_not_users_are_400() {
    let app = spawn_app().await;
    // schemas without the core URN
    app.post(
        "/Users",
        &json!({"schemas":["urn:example:not:a:user"],"userName":"x@example.com"}),
    )
    .await
    .assert_error(400, None);
    // scim-sanity's probes
    app.post("/Users", &json!({"not":"a scim resource"}))
        .await
        .assert_error(400, None);
    app.post(
        "/Users",
        &json!({"schemas":[CORE_USER],"name":{"givenName":"No"},"active":true}),
    )
    .await
    .assert_error(400, None);
    app.post("/Groups", &json!({"schemas":[CORE_GROUP]}))
        .await
        .assert_error(400, None);
    app.post("/Users", &json!({"schemas":[CORE_USER],"userName":""}))
        .await
        .assert_error(400, None);
    still_serving(&app).await;
}

#[tokio::test]
async fn a_body_over_1_mib_is_413() {
    let app = spawn_app().await;
    let mut body = user_body("big@example.com");
    body["nickName"] = json!("x".repeat(1024 * 1024 + 10));
    let r = app.post("/Users", &body).await;
    r.assert_error(413, None);
    // Just under the limit is fine.
    let mut body = user_body("almost-big@example.com");
    body["nickName"] = json!("y".repeat(1000 * 1000));
    app.post("/Users", &body).await.assert_status(201);
    still_serving(&app).await;
}

#[tokio::test]
async fn bad_paging_parameters_are_400() {
    let app = spawn_app().await;
    for q in [
        "count=abc",
        "startIndex=abc",
        "count=1.5e999",
        "sortOrder=sideways",
    ] {
        let r = app.get(&format!("/Users?{q}")).await;
        r.assert_error(400, None);
    }
    // Out-of-range values are clamped, not refused (RFC 7644 §3.4.2.4).
    let body = app.get("/Users?startIndex=0&count=-5").await.ok_json();
    assert_eq!(body["startIndex"], 1);
    assert!(list_resources(&body).is_empty());
    app.create_user("p@example.com").await;
    let body = app.get("/Users?count=0").await.ok_json();
    assert_eq!(body["totalResults"], 1);
    assert!(
        list_resources(&body).is_empty(),
        "count=0 returns no Resources"
    );
    still_serving(&app).await;
}

#[tokio::test]
async fn invalid_filters_are_400_invalid_filter() {
    let app = spawn_app().await;
    let deep = "(".repeat(10_000);
    let deep_balanced = format!(
        "{}userName eq \"a\"{}",
        "(".repeat(5_000),
        ")".repeat(5_000)
    );
    let nots = format!("{}userName eq \"a\"", "not (".repeat(3_000));
    for f in [
        "userName eq",
        "((((",
        deep.as_str(),
        "userName xx \"a\"",
        "userName eq \"unterminated",
        "eq \"a\"",
        "userName eq \"a\" and",
        "userName eq \"a\" or or userName eq \"b\"",
        "emails[type eq \"work\"",
        "userName",
        "userName eq \"a\")",
        nots.as_str(),
    ] {
        let r = app.filter("/Users", f).await;
        assert!(
            r.status.as_u16() == 400,
            "filter {:?}: expected 400, got {} {}",
            &f[..f.len().min(40)],
            r.status,
            r.text
        );
        r.assert_error(400, Some("invalidFilter"));
    }
    // 5,000 nested balanced parentheses: a valid filter or a 400, never a crash.
    let r = app.filter("/Users", &deep_balanced).await;
    assert!(
        r.status == 200 || r.status == 400,
        "deeply nested filter: {} {}",
        r.status,
        r.text
    );
    // The same through POST .search.
    let r = app
        .post(
            "/Users/.search",
            &json!({"schemas":[SEARCH_REQUEST],"filter":"userName eq"}),
        )
        .await;
    r.assert_error(400, Some("invalidFilter"));
    still_serving(&app).await;
}

#[tokio::test]
async fn missing_or_non_bearer_credentials_are_401() {
    let app = spawn_app().await;
    let cases = [
        None,
        Some("Basic dXNlcjpwYXNz".to_string()),
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some(format!("Token {DEFAULT_TOKEN}")),
        Some(DEFAULT_TOKEN.to_string()),
        Some(format!("Bearer {DEFAULT_TOKEN}x")),
    ];
    for auth in cases {
        let mut rb = app.anonymous(Method::GET, "/Users");
        if let Some(a) = &auth {
            rb = rb.header("Authorization", a);
        }
        let r = Resp::send(rb).await;
        let body = r.assert_error(401, None);
        assert_eq!(body["status"], "401", "{auth:?}");
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer"),
            "{auth:?}: WWW-Authenticate {www:?}"
        );
        assert!(!r.text.contains(DEFAULT_TOKEN), "token echoed");
    }
    // Writes are refused too, and change nothing.
    let r = Resp::send(
        app.anonymous(Method::POST, "/Users")
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(user_body("anon@example.com").to_string()),
    )
    .await;
    r.assert_error(401, None);
    // The scheme name is case-insensitive (RFC 7235 §2.1).
    let r = Resp::send(
        app.anonymous(Method::GET, "/Users")
            .header("Authorization", format!("bearer {DEFAULT_TOKEN}")),
    )
    .await;
    r.ok_json();
    assert_eq!(r.json()["totalResults"], 0);
}

#[tokio::test]
async fn unknown_endpoints_are_404_error_bodies() {
    let app = spawn_app().await;
    let uuid = uuid::Uuid::new_v4();
    for path in [
        format!("/{uuid}"),
        "/Users/a/b".to_string(),
        "/Me".to_string(),
        "/Userz".to_string(),
        "/Groups/x/members".to_string(),
    ] {
        app.get(&path).await.assert_error(404, None);
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn writes_to_discovery_endpoints_are_405() {
    let app = spawn_app().await;
    for path in [
        "/ServiceProviderConfig",
        "/Schemas",
        "/ResourceTypes",
        "/ResourceTypes/User",
        &format!("/Schemas/{CORE_USER}"),
    ] {
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let r = Resp::send(
                app.request(m.clone(), path)
                    .header("Content-Type", SCIM_CONTENT_TYPE)
                    .body("{}"),
            )
            .await;
            assert_eq!(r.status.as_u16(), 405, "{m} {path}: {}", r.text);
            r.assert_error(405, None);
        }
    }
    // And on resources, the methods that make no sense there.
    let id = app.create_user("m@example.com").await;
    for (m, path) in [
        (Method::POST, format!("/Users/{id}")),
        (Method::PUT, "/Users".to_string()),
        (Method::PATCH, "/Users".to_string()),
        (Method::DELETE, "/Users".to_string()),
        (Method::GET, "/Users/.search".to_string()),
    ] {
        let r = Resp::send(
            app.request(m.clone(), &path)
                .header("Content-Type", SCIM_CONTENT_TYPE)
                .body("{}"),
        )
        .await;
        r.assert_error(405, None);
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn media_types() {
    let app = spawn_app().await;
    let body = |n: &str| user_body(&format!("{n}@example.com")).to_string();
    post_raw(&app, "/Users", Some("text/plain"), body("plain"))
        .await
        .assert_error(415, None);
    post_raw(&app, "/Users", Some("application/xml"), body("xml"))
        .await
        .assert_error(415, None);
    post_raw(&app, "/Users", None, body("none"))
        .await
        .assert_status(201);
    post_raw(&app, "/Users", Some("application/json"), body("json"))
        .await
        .assert_status(201);
    post_raw(&app, "/Users", Some("application/scim+json"), body("scim"))
        .await
        .assert_status(201);
    post_raw(
        &app,
        "/Users",
        Some("Application/SCIM+JSON; Charset=UTF-8"),
        body("shouty"),
    )
    .await
    .assert_status(201);
    post_raw(
        &app,
        "/Users",
        Some("application/json; charset=utf-8"),
        body("json-charset"),
    )
    .await
    .assert_status(201);
    assert_eq!(app.get("/Users").await.ok_json()["totalResults"], 5);
}

#[tokio::test]
async fn bad_patch_requests_are_400() {
    let app = spawn_app().await;
    let id = app.create_user("patchme@example.com").await;
    let path = format!("/Users/{id}");
    // No Operations.
    app.patch(&path, &json!({"schemas":[PATCH_OP]}))
        .await
        .assert_error(400, None);
    // Operations not a list; an unknown op; an op without a value.
    app.patch(
        &path,
        &json!({"schemas":[PATCH_OP],"Operations":{"op":"add"}}),
    )
    .await
    .assert_error(400, None);
    app.patch_ops(
        &path,
        json!([{"op":"frobnicate","path":"nickName","value":"x"}]),
    )
    .await
    .assert_error(400, None);
    app.patch_ops(&path, json!([{"op":"add","path":"nickName"}]))
        .await
        .assert_error(400, None);
    // remove without a path: noTarget.
    app.patch_ops(&path, json!([{"op":"remove"}]))
        .await
        .assert_error(400, Some("noTarget"));
    // replace of the readOnly id: mutability.
    app.patch_ops(&path, json!([{"op":"replace","path":"id","value":"mine"}]))
        .await
        .assert_error(400, Some("mutability"));
    // An unparseable path.
    app.patch_ops(
        &path,
        json!([{"op":"replace","path":"emails[type eq","value":"x"}]),
    )
    .await
    .assert_error(400, None);
    // Atomic: a good op followed by a bad one changes nothing.
    app.patch_ops(
        &path,
        json!([{"op":"replace","path":"nickName","value":"Half"},{"op":"remove"}]),
    )
    .await
    .assert_error(400, Some("noTarget"));
    let got = app.get(&path).await.ok_json();
    assert!(got.get("nickName").is_none(), "PATCH is atomic: {got}");
    assert_eq!(id_of(&got), id);
    // PATCH / PUT / DELETE of an unknown id.
    app.patch_ops(
        "/Users/no-such-user",
        json!([{"op":"replace","path":"nickName","value":"x"}]),
    )
    .await
    .assert_error(404, None);
    app.put("/Users/no-such-user", &user_body("ghost@example.com"))
        .await
        .assert_error(404, None);
    app.delete("/Users/no-such-user")
        .await
        .assert_error(404, None);
    still_serving(&app).await;
}

#[tokio::test]
async fn bulk_is_not_supported() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/Bulk",
            &json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[]}),
        )
        .await;
    r.assert_error(501, None);
    let spc = app.get("/ServiceProviderConfig").await.ok_json();
    assert_eq!(spc["bulk"]["supported"], false);
}

#[tokio::test]
async fn put_may_not_change_the_id_and_ignores_client_ids() {
    let app = spawn_app().await;
    let id = app.create_user("put@example.com").await;
    let mut body = app.get(&format!("/Users/{id}")).await.ok_json();
    body["id"] = json!("client-chosen");
    body["displayName"] = json!("Put");
    let r = app.put(&format!("/Users/{id}"), &body).await;
    let got = r.ok_json();
    assert_eq!(id_of(&got), id, "readOnly id in a PUT body is ignored");
    app.get("/Users/client-chosen")
        .await
        .assert_error(404, None);
    // A client id on POST is ignored as well.
    let mut body = user_body("post-id@example.com");
    body["id"] = json!("client-chosen-2");
    let created = app.create_user_with(&body).await;
    assert_ne!(id_of(&created), "client-chosen-2");
}

#[tokio::test]
async fn the_configured_body_limit_applies() {
    let app = spawn_with_config(
        r#"
body_limit = "4 KiB"
[[tenants]]
id = "small"
tokens = ["tok-small-0000001-0123456789abcdef"]
[tenants.vendor]
kind = "local"
"#,
    )
    .await;
    let mut body = user_body("small@example.com");
    body["nickName"] = json!("n".repeat(5000));
    app.post("/Users", &body).await.assert_error(413, None);
    body["nickName"] = json!("n".repeat(3000));
    app.post("/Users", &body).await.assert_status(201);
}

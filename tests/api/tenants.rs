//! Tenants (CONTRACT §2–3): data isolation, a token opens only its own tenant, JWTs minted by
//! `token issue`, unknown tenants, and the `default` tenant's short `/scim/v2/` base.

use crate::helpers::*;
use reqwest::Method;
use scim_bridge::auth::issue_token;
use scim_bridge::config::{Secret, TenantId};
use serde_json::json;
use std::time::Duration;

const TOK_A: &str = "tok-a-5f0d1c2b3a4e-0123456789abcdef";
const TOK_B: &str = "tok-b-9e8d7c6b5a4f-0123456789abcdef";
const JWT_A: &str = "jwt-secret-of-tenant-a-0123456789";
const JWT_B: &str = "jwt-secret-of-tenant-b-0123456789";

fn two_tenants() -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "./unused"

[[tenants]]
id = "a"
tokens = ["{TOK_A}"]
jwt_secret = "{JWT_A}"

[tenants.vendor]
kind = "local"

[[tenants]]
id = "b"
tokens = ["{TOK_B}"]
jwt_secret = "{JWT_B}"

[tenants.vendor]
kind = "local"
"#
    )
}

async fn get_with(app: &TestApp, url: &str, token: &str) -> Resp {
    Resp::send(app.client.get(url).bearer_auth(token)).await
}

#[tokio::test]
async fn tenants_do_not_see_each_others_data() {
    let app = spawn_with_config(&two_tenants()).await;
    let a = app.tenant_base("a");
    let b = app.tenant_base("b");
    assert_eq!(app.base_url, a);

    let ua = app.create_user("shared@example.com").await;
    let r = get_with(&app, &format!("{a}/Users/{ua}"), TOK_A).await;
    r.ok_json();
    // Invisible in b: by id, by filter, in the list.
    get_with(&app, &format!("{b}/Users/{ua}"), TOK_B)
        .await
        .assert_error(404, None);
    let body = get_with(
        &app,
        &format!("{b}/Users?filter=userName+eq+%22shared%40example.com%22"),
        TOK_B,
    )
    .await
    .ok_json();
    assert_eq!(body["totalResults"], 0);
    assert_eq!(
        get_with(&app, &format!("{b}/Users"), TOK_B).await.ok_json()["totalResults"],
        0
    );

    // The same userName is free in b.
    let r = Resp::send(
        app.client
            .post(format!("{b}/Users"))
            .bearer_auth(TOK_B)
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(user_body("shared@example.com").to_string()),
    )
    .await;
    r.assert_status(201);
    let ub = id_of(&r.json());
    assert_ne!(ua, ub);
    assert!(r.json()["meta"]["location"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{b}/Users/")));
    // b cannot delete a's user, and a still has its one user.
    let r = Resp::send(
        app.client
            .delete(format!("{b}/Users/{ua}"))
            .bearer_auth(TOK_B),
    )
    .await;
    r.assert_error(404, None);
    assert_eq!(
        get_with(&app, &format!("{a}/Users"), TOK_A).await.ok_json()["totalResults"],
        1
    );
    // Groups too.
    let ga = app.create_group("Admins").await;
    get_with(&app, &format!("{b}/Groups/{ga}"), TOK_B)
        .await
        .assert_error(404, None);
}

#[tokio::test]
async fn a_token_of_tenant_a_is_401_on_tenant_b() {
    let app = spawn_with_config(&two_tenants()).await;
    let b = app.tenant_base("b");
    for path in ["/Users", "/Groups", "/Users/some-id"] {
        let r = get_with(&app, &format!("{b}{path}"), TOK_A).await;
        r.assert_error(401, None);
        assert!(r.header("www-authenticate").is_some(), "{path}");
        assert!(!r.text.contains(TOK_A));
    }
    let r = Resp::send(
        app.client
            .post(format!("{b}/Users"))
            .bearer_auth(TOK_A)
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(user_body("intruder@example.com").to_string()),
    )
    .await;
    r.assert_error(401, None);
    // Nothing was created in b.
    assert_eq!(
        get_with(&app, &format!("{b}/Users"), TOK_B).await.ok_json()["totalResults"],
        0
    );
}

/// Without a valid token an unknown tenant is indistinguishable from a known one (issue 15: no
/// tenant enumeration): the same 401, and anonymous discovery the same generic document.
#[tokio::test]
async fn an_unknown_tenant_is_the_same_401_as_a_known_one() {
    let app = spawn_with_config(&two_tenants()).await;
    let url = app.tenant_base("nope");
    let unknown = get_with(&app, &format!("{url}/Users"), TOK_A).await;
    unknown.assert_error(401, None);
    let known = get_with(&app, &format!("{}/Users", app.tenant_base("b")), TOK_A).await;
    known.assert_error(401, None);
    assert_eq!(unknown.text, known.text);
    assert_eq!(
        unknown.header("www-authenticate"),
        known.header("www-authenticate")
    );
    let anonymous = |base: String| {
        let app = &app;
        async move {
            let mut doc = Resp::send(app.client.get(format!("{base}/ServiceProviderConfig")))
                .await
                .ok_json();
            // Its own URL differs by path, as any URL would.
            doc["meta"]["location"] = serde_json::Value::Null;
            doc
        }
    };
    assert_eq!(
        anonymous(url.clone()).await,
        anonymous(app.tenant_base("a")).await
    );
    // No default tenant is configured: the short base is unknown too.
    get_with(&app, &app.tenant_base("default"), TOK_A)
        .await
        .assert_client_error();
    get_with(
        &app,
        &format!("{}/Users", app.tenant_base("default")),
        TOK_A,
    )
    .await
    .assert_error(401, None);
}

#[tokio::test]
async fn a_jwt_minted_for_a_opens_a_and_not_b() {
    let app = spawn_with_config(&two_tenants()).await;
    let jwt = issue_token(
        &TenantId::parse("a").unwrap(),
        &Secret::new(JWT_A),
        Duration::from_secs(3600),
    )
    .unwrap();
    get_with(&app, &format!("{}/Users", app.tenant_base("a")), &jwt)
        .await
        .ok_json();
    let r = get_with(&app, &format!("{}/Users", app.tenant_base("b")), &jwt).await;
    r.assert_error(401, None);
    assert!(r.header("www-authenticate").is_some());

    // Signed with b's key but claiming a: refused by a.
    let forged = issue_token(
        &TenantId::parse("a").unwrap(),
        &Secret::new(JWT_B),
        Duration::from_secs(3600),
    )
    .unwrap();
    get_with(&app, &format!("{}/Users", app.tenant_base("a")), &forged)
        .await
        .assert_error(401, None);
}

#[tokio::test]
async fn an_expired_jwt_is_401() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let app = spawn_with_config(&two_tenants()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"aud":"a","sub":"scim-bridge","iat":now - 7200,"exp":now - 3600,"jti":"x"});
    let jwt = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_A.as_bytes()),
    )
    .unwrap();
    let r = get_with(&app, &format!("{}/Users", app.tenant_base("a")), &jwt).await;
    r.assert_error(401, None);
    assert!(r.header("www-authenticate").is_some());
    // A fresh one with the same key works, so the refusal was the expiry.
    let claims = json!({"aud":"a","sub":"scim-bridge","iat":now,"exp":now + 3600,"jti":"y"});
    let jwt = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_A.as_bytes()),
    )
    .unwrap();
    get_with(&app, &format!("{}/Users", app.tenant_base("a")), &jwt)
        .await
        .ok_json();
}

#[tokio::test]
async fn the_default_tenant_is_also_served_at_the_short_base() {
    let toml = format!(
        r#"
[[tenants]]
id = "default"
tokens = ["tok-default-0a1b2c3d-0123456789abcdef"]

[tenants.vendor]
kind = "local"

[[tenants]]
id = "a"
tokens = ["{TOK_A}"]

[tenants.vendor]
kind = "local"
"#
    );
    let app = spawn_with_config(&toml).await;
    assert_eq!(app.base_url, format!("{}/scim/v2", app.root));
    let id = app.create_user("short@example.com").await;
    let long = format!("{}/tenants/default/scim/v2", app.root);
    let body = get_with(
        &app,
        &format!("{long}/Users/{id}"),
        "tok-default-0a1b2c3d-0123456789abcdef",
    )
    .await
    .ok_json();
    assert_eq!(body["userName"], "short@example.com");
    // a's token does not open the default tenant, whichever base is used.
    get_with(&app, &format!("{}/Users", app.base_url), TOK_A)
        .await
        .assert_error(401, None);
    get_with(&app, &format!("{long}/Users"), TOK_A)
        .await
        .assert_error(401, None);
    // And a's data is separate.
    assert_eq!(
        get_with(&app, &format!("{}/Users", app.tenant_base("a")), TOK_A)
            .await
            .ok_json()["totalResults"],
        0
    );
}

#[tokio::test]
async fn discovery_answers_per_tenant_without_a_token() {
    let app = spawn_with_config(&two_tenants()).await;
    for t in ["a", "b"] {
        let base = app.tenant_base(t);
        let r = Resp::send(app.client.get(format!("{base}/ServiceProviderConfig"))).await;
        let body = r.ok_json();
        let loc = body["meta"]["location"].as_str().unwrap_or_default();
        assert!(loc.starts_with(&base), "{loc} should be under {base}");
        Resp::send(app.client.get(format!("{base}/Schemas")))
            .await
            .ok_json();
        // but the resources need a token.
        Resp::send(app.client.request(Method::GET, format!("{base}/Users")))
            .await
            .assert_error(401, None);
    }
}

#[tokio::test]
async fn malformed_and_wrongly_signed_jwts_are_401() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let app = spawn_with_config(&two_tenants()).await;
    let url = format!("{}/Users", app.tenant_base("a"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"aud":"a","sub":"scim-bridge","iat":now,"exp":now + 3600,"jti":"z"});
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(JWT_A.as_bytes()),
    )
    .unwrap();
    let no_aud = encode(
        &Header::default(),
        &json!({"sub":"scim-bridge","iat":now,"exp":now + 3600}),
        &EncodingKey::from_secret(JWT_A.as_bytes()),
    )
    .unwrap();
    let no_exp = encode(
        &Header::default(),
        &json!({"aud":"a","sub":"scim-bridge","iat":now}),
        &EncodingKey::from_secret(JWT_A.as_bytes()),
    )
    .unwrap();
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhdWQiOiJhIiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
    for (what, tok) in [
        ("HS512", hs512.as_str()),
        ("no aud", no_aud.as_str()),
        ("no exp", no_exp.as_str()),
        ("alg none", alg_none),
        ("garbage", "a.b.c"),
    ] {
        let r = get_with(&app, &url, tok).await;
        assert_eq!(r.status.as_u16(), 401, "{what}: {}", r.text);
        r.assert_error(401, None);
    }
}

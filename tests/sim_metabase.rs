//! The Metabase simulator over real sockets: auth, users, groups, memberships, the three error
//! body shapes, and the framework faults.

#[path = "support/sim.rs"]
mod support;

use reqwest::{Method, StatusCode};
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::{json, Value};

const KEY: &str = "mb_simulator_api_key";

struct Mb {
    base: String,
    http: reqwest::Client,
    _sim: scim_bridge::sim::RunningSim,
}

/// A response: status, content type, raw text, and JSON when it parses.
struct Resp {
    status: StatusCode,
    ctype: String,
    text: String,
    json: Value,
}

async fn start(opts: SimOptions) -> Mb {
    let sim = support::spawn(Vendor::Metabase, opts).await;
    Mb {
        base: sim.base_url(),
        http: support::client(),
        _sim: sim,
    }
}

async fn read(r: reqwest::Response) -> Resp {
    let status = r.status();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        ctype,
        text,
        json,
    }
}

impl Mb {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.call_with(("x-api-key", KEY), method, path, body).await
    }

    async fn call_with(
        &self,
        header: (&str, &str),
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header(header.0, header.1);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        read(rb.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    async fn login(&self, user: &str, pass: &str) -> Resp {
        read(
            self.http
                .post(format!("{}/api/session", self.base))
                .json(&json!({"username": user, "password": pass}))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn create_user(&self, email: &str, first: &str) -> Value {
        let r = self
            .call(
                Method::POST,
                "/api/user",
                Some(json!({"email": email, "first_name": first, "last_name": "X"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json
    }

    async fn group_id(&self, name: &str) -> i64 {
        let r = self.get("/api/permissions/group").await;
        r.json
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    async fn create_group(&self, name: &str) -> i64 {
        let r = self
            .call(
                Method::POST,
                "/api/permissions/group",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["id"].as_i64().unwrap()
    }

    async fn membership_id(&self, user: i64, group: i64) -> Option<i64> {
        let r = self.get("/api/permissions/membership").await;
        r.json[user.to_string()]
            .as_array()?
            .iter()
            .find(|m| m["group_id"] == group)
            .map(|m| m["membership_id"].as_i64().unwrap())
    }
}

fn assert_text(r: &Resp, status: u16, body: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert!(r.ctype.starts_with("text/plain"), "plain text: {}", r.ctype);
    assert_eq!(r.text, body);
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn session_login_gives_an_id_and_cookie_usable_as_header_or_cookie() {
    let m = start(SimOptions::default()).await;
    let r = m
        .http
        .post(format!("{}/api/session", m.base))
        .json(&json!({"username": "admin@metabase.local", "password": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("metabase.SESSION=") && cookie.contains("HttpOnly"));
    let body: Value = r.json().await.unwrap();
    let sid = body["id"].as_str().unwrap().to_string();
    assert_eq!(sid.len(), 36, "a uuid");
    let me = m
        .call_with(
            ("X-Metabase-Session", &sid),
            Method::GET,
            "/api/user/current",
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["email"], "admin@metabase.local");
    assert_eq!(me.json["is_superuser"], true);
    let me = m
        .call_with(
            ("Cookie", &format!("metabase.SESSION={sid}")),
            Method::GET,
            "/api/user",
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    // Logout: 204, then the session is gone, and a second logout is 404.
    let out = m
        .call_with(
            ("X-Metabase-Session", &sid),
            Method::DELETE,
            "/api/session",
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let again = m
        .call_with(("X-Metabase-Session", &sid), Method::GET, "/api/user", None)
        .await;
    assert_text(&again, 401, "Unauthenticated");
    let out = m
        .call_with(
            ("X-Metabase-Session", &sid),
            Method::DELETE,
            "/api/session",
            None,
        )
        .await;
    assert_text(&out, 404, "Not found.");
}

#[tokio::test]
async fn bad_logins_are_401_with_errors_and_throttled_after_ten() {
    let m = start(SimOptions::default()).await;
    let r = m.login("admin@metabase.local", "nope").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json,
        json!({"errors": {"password": "did not match stored password"}})
    );
    let r = m.login("nobody@x.io", "nope").await;
    assert_eq!(
        r.json,
        json!({"errors": {"password": "did not match stored password"}})
    );
    let r = m.login("", "x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["errors"]["username"],
        "value must be a non-blank string."
    );
    assert!(r.json["specific-errors"]["username"].is_array());
    for _ in 0..9 {
        m.login("admin@metabase.local", "nope").await;
    }
    let r = m.login("admin@metabase.local", "admin").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let msg = r.json["errors"]["username"].as_str().unwrap();
    assert!(msg.starts_with("Too many attempts! You must wait"), "{msg}");

    let free = start(SimOptions {
        metabase_login_attempts: 0,
        ..SimOptions::default()
    })
    .await;
    for _ in 0..12 {
        free.login("admin@metabase.local", "nope").await;
    }
    assert_eq!(
        free.login("admin@metabase.local", "admin").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_or_missing_credentials_are_plain_text_unauthenticated() {
    let m = start(SimOptions::default()).await;
    let r = read(
        m.http
            .get(format!("{}/api/user", m.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_text(&r, 401, "Unauthenticated");
    let r = m
        .call_with(("x-api-key", "mb_wrong"), Method::GET, "/api/user", None)
        .await;
    assert_text(&r, 401, "Unauthenticated");
    let r = m
        .call_with(("X-API-KEY", KEY), Method::GET, "/api/user", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "header name is case-insensitive");
    let r = m
        .call_with(
            ("X-Metabase-Session", "00000000-0000-0000-0000-000000000000"),
            Method::GET,
            "/api/user",
            None,
        )
        .await;
    assert_text(&r, 401, "Unauthenticated");
}

#[tokio::test]
async fn sessions_expire_after_the_ttl() {
    let m = start(SimOptions {
        token_ttl_s: Some(1),
        ..SimOptions::default()
    })
    .await;
    let sid = m.login("admin@metabase.local", "admin").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = m
        .call_with(("X-Metabase-Session", &sid), Method::GET, "/api/user", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = m
        .call_with(("X-Metabase-Session", &sid), Method::GET, "/api/user", None)
        .await;
    assert_text(&r, 401, "Unauthenticated");
    // The API key is not a session and does not expire.
    assert_eq!(m.get("/api/user").await.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_list_is_wrapped_with_total_and_hides_the_api_key_user() {
    let m = start(SimOptions::default()).await;
    let r = m.get("/api/user").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["limit"], Value::Null);
    assert_eq!(r.json["offset"], Value::Null);
    let admin = &r.json["data"][0];
    assert_eq!(admin["email"], "admin@metabase.local");
    assert_eq!(admin["group_ids"], json!([1, 2]));
    for k in [
        "id",
        "email",
        "first_name",
        "last_name",
        "common_name",
        "date_joined",
        "last_login",
        "updated_at",
        "is_superuser",
        "is_qbnewb",
        "is_active",
        "sso_source",
        "login_attributes",
        "locale",
        "personal_collection_id",
    ] {
        assert!(admin.get(k).is_some(), "list user has {k}");
    }
}

#[tokio::test]
async fn user_create_lowercases_email_ignores_is_superuser_and_joins_all_users() {
    let m = start(SimOptions::default()).await;
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "Jane.Doe@Example.com", "first_name": "Jane", "is_superuser": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "creates answer 200");
    assert_eq!(r.json["email"], "jane.doe@example.com");
    assert_eq!(
        r.json["is_superuser"], false,
        "is_superuser is ignored on POST"
    );
    assert_eq!(r.json["user_group_memberships"], json!([{"id": 1}]));
    assert_eq!(r.json["common_name"], "Jane");
    assert_eq!(r.json["last_name"], Value::Null);
    // Admin is the Administrators membership.
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "boss@x.io", "user_group_memberships": [{"id": 1}, {"id": 2}]})),
        )
        .await;
    assert_eq!(r.json["is_superuser"], true);
    assert_eq!(r.json["common_name"], "boss@x.io");
}

#[tokio::test]
async fn user_create_errors_use_the_documented_shapes() {
    let m = start(SimOptions::default()).await;
    m.create_user("taken@x.io", "T").await;
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "TAKEN@x.io"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json,
        json!({"errors": {"email": "Email address already in use."}})
    );
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "not-an-email"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["errors"]["email"],
        "value must be a valid email address."
    );
    assert!(r.json.get("specific-errors").is_some());
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "a@x.io", "first_name": ""})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["errors"]["first_name"].is_string());
    // Memberships without All Users: the whole call fails, no user created.
    let g = m.create_group("Analysts").await;
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "b@x.io", "user_group_memberships": [{"id": g}]})),
        )
        .await;
    assert_text(
        &r,
        400,
        "You cannot add or remove users to/from the 'All Users' group.",
    );
    assert_eq!(m.get("/api/user?query=b@x.io").await.json["total"], 0);
}

#[tokio::test]
async fn user_list_filters_status_and_substring_query_with_paging() {
    let m = start(SimOptions::default()).await;
    let a = m.create_user("anna@corp.io", "Anna").await;
    m.create_user("bob@corp.io", "Bob").await;
    m.create_user("annabel@other.io", "Annabel").await;
    let r = m.get("/api/user?query=ANNA").await;
    assert_eq!(r.json["total"], 2, "case-insensitive substring, not exact");
    let r = m.get("/api/user?query=corp").await;
    assert_eq!(r.json["total"], 2);
    m.call(Method::DELETE, &format!("/api/user/{}", a["id"]), None)
        .await;
    assert_eq!(m.get("/api/user").await.json["total"], 3);
    let r = m.get("/api/user?status=deactivated").await;
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["data"][0]["is_active"], false);
    assert_eq!(m.get("/api/user?status=all").await.json["total"], 4);
    assert_eq!(
        m.get("/api/user?include_deactivated=true").await.json["total"],
        4
    );
    assert_eq!(
        m.get("/api/user?include_deactivated=true&status=active")
            .await
            .json["total"],
        3,
        "status wins"
    );
    let r = m.get("/api/user?status=bogus").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Sorted by first name; paging defaults.
    let r = m.get("/api/user?limit=2").await;
    assert_eq!(r.json["limit"], 2);
    assert_eq!(r.json["offset"], 0);
    assert_eq!(r.json["total"], 3, "total ignores paging");
    assert_eq!(r.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.json["data"][0]["first_name"], "Admin");
    assert_eq!(r.json["data"][1]["first_name"], "Annabel");
    let r = m.get("/api/user?offset=1").await;
    assert_eq!(r.json["limit"], 50);
    assert_eq!(r.json["offset"], 1);
    let r = m.get("/api/user?limit=abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["errors"]["limit"].is_string());
}

#[tokio::test]
async fn put_updates_applies_nulls_and_404s_on_inactive_users() {
    let m = start(SimOptions::default()).await;
    let u = m.create_user("p@x.io", "Pat").await;
    let path = format!("/api/user/{}", u["id"]);
    let r = m
        .call(
            Method::PUT,
            &path,
            Some(json!({"first_name": null, "last_name": "Lee"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["first_name"], Value::Null, "null clears");
    assert_eq!(r.json["last_name"], "Lee");
    assert_eq!(r.json["common_name"], "Lee");
    assert!(r.json["user_group_memberships"].is_array());
    let other = m.create_user("o@x.io", "O").await;
    let r = m
        .call(
            Method::PUT,
            &format!("/api/user/{}", other["id"]),
            Some(json!({"email": "P@x.io"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json,
        json!({"errors": {"email": "Email address already associated to another user."}})
    );
    m.call(Method::DELETE, &path, None).await;
    let r = m
        .call(Method::PUT, &path, Some(json!({"last_name": "Z"})))
        .await;
    assert_text(&r, 404, "Not found.");
    let r = m.call(Method::PUT, "/api/user/999", Some(json!({}))).await;
    assert_text(&r, 404, "Not found.");
    // GET works for a deactivated user.
    let r = m.get(&path).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["is_active"], false);
}

#[tokio::test]
async fn put_memberships_replace_the_set_and_must_keep_all_users() {
    let m = start(SimOptions::default()).await;
    let g1 = m.create_group("G1").await;
    let g2 = m.create_group("G2").await;
    let u = m.create_user("u@x.io", "U").await;
    let path = format!("/api/user/{}", u["id"]);
    let r = m
        .call(
            Method::PUT,
            &path,
            Some(json!({"user_group_memberships": [{"id": 1}, {"id": g1}, {"id": g2}]})),
        )
        .await;
    assert_eq!(
        r.json["user_group_memberships"],
        json!([{"id": 1}, {"id": g1}, {"id": g2}])
    );
    let r = m
        .call(
            Method::PUT,
            &path,
            Some(json!({"user_group_memberships": [{"id": 1}, {"id": g2}]})),
        )
        .await;
    assert_eq!(
        r.json["user_group_memberships"],
        json!([{"id": 1}, {"id": g2}])
    );
    let r = m
        .call(
            Method::PUT,
            &path,
            Some(json!({"user_group_memberships": [{"id": g2}]})),
        )
        .await;
    assert_text(
        &r,
        400,
        "You cannot add or remove users to/from the 'All Users' group.",
    );
    let r = m
        .call(Method::PUT, &path, Some(json!({"is_superuser": true})))
        .await;
    assert_eq!(r.json["is_superuser"], true);
    assert_eq!(
        r.json["user_group_memberships"],
        json!([{"id": 1}, {"id": 2}, {"id": g2}])
    );
    let r = m
        .call(
            Method::PUT,
            &path,
            Some(json!({"is_superuser": false, "user_group_memberships": [{"id": 1}, {"id": 2}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "must agree");
    assert_eq!(
        m.get(&path).await.json["is_superuser"],
        true,
        "nothing changed"
    );
}

#[tokio::test]
async fn delete_deactivates_and_reactivate_strips_admin() {
    let m = start(SimOptions::default()).await;
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "adm@x.io", "user_group_memberships": [{"id": 1}, {"id": 2}]})),
        )
        .await;
    let id = r.json["id"].as_i64().unwrap();
    let g = m.create_group("Keep").await;
    m.call(
        Method::POST,
        "/api/permissions/membership",
        Some(json!({"group_id": g, "user_id": id})),
    )
    .await;
    let r = m
        .call(Method::DELETE, &format!("/api/user/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, json!({"success": true}));
    let got = m.get(&format!("/api/user/{id}")).await.json;
    assert_eq!(got["is_active"], false);
    assert_eq!(
        got["user_group_memberships"],
        json!([{"id": 1}, {"id": 2}, {"id": g}]),
        "deactivation keeps memberships"
    );
    // Already inactive: UNVERIFIED, default 200.
    let r = m
        .call(Method::DELETE, &format!("/api/user/{id}"), None)
        .await;
    assert_eq!(r.json, json!({"success": true}));
    let r = m
        .call(Method::PUT, &format!("/api/user/{id}/reactivate"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["is_active"], true);
    assert_eq!(r.json["is_superuser"], false, "reactivation strips admin");
    assert!(r.json.get("user_group_memberships").is_none());
    let got = m.get(&format!("/api/user/{id}")).await.json;
    assert_eq!(got["user_group_memberships"], json!([{"id": 1}, {"id": g}]));
    let r = m
        .call(Method::PUT, &format!("/api/user/{id}/reactivate"), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json,
        json!({"message": "Not able to reactivate an active user"})
    );
    let r = m.call(Method::PUT, "/api/user/999/reactivate", None).await;
    assert_text(&r, 404, "Not found.");
    let r = m.call(Method::DELETE, "/api/user/999", None).await;
    assert_text(&r, 500, "Internal server error.");

    let strict = start(SimOptions {
        metabase_strict_redeactivate: true,
        ..SimOptions::default()
    })
    .await;
    let u = strict.create_user("s@x.io", "S").await;
    strict
        .call(Method::DELETE, &format!("/api/user/{}", u["id"]), None)
        .await;
    let r = strict
        .call(Method::DELETE, &format!("/api/user/{}", u["id"]), None)
        .await;
    assert_text(&r, 404, "Not found.");
}

#[tokio::test]
async fn deactivation_ends_sessions_and_blocks_login() {
    let m = start(SimOptions::default()).await;
    let r = m
        .call(
            Method::POST,
            "/api/user",
            Some(json!({"email": "adm2@x.io", "user_group_memberships": [{"id": 1}, {"id": 2}]})),
        )
        .await;
    assert!(r.json["is_superuser"].as_bool().unwrap());
    // A second admin exists, so the seeded admin may be deactivated (by itself, here).
    let sid = m.login("admin@metabase.local", "admin").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = m
        .call_with(
            ("X-Metabase-Session", &sid),
            Method::DELETE,
            "/api/user/1",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = m
        .call_with(("X-Metabase-Session", &sid), Method::GET, "/api/user", None)
        .await;
    assert_text(&r, 401, "Unauthenticated");
    let r = m.login("admin@metabase.local", "admin").await;
    assert_eq!(
        r.json,
        json!({"errors": {"_error": "Your account is disabled."}})
    );
}

#[tokio::test]
async fn admin_sets_a_password_and_the_user_can_log_in() {
    let m = start(SimOptions::default()).await;
    let u = m.create_user("pw@x.io", "P").await;
    let path = format!("/api/user/{}/password", u["id"]);
    let r = m
        .call(Method::PUT, &path, Some(json!({"password": "abc"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["errors"]["password"].is_string());
    let r = m
        .call(Method::PUT, &path, Some(json!({"password": "s3cret-pw"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = m.login("PW@x.io", "s3cret-pw").await;
    assert_eq!(r.status, StatusCode::OK, "emails are matched lower-cased");
    let sid = r.json["id"].as_str().unwrap().to_string();
    m.call(Method::PUT, &path, Some(json!({"password": "an0ther-pw"})))
        .await;
    let r = m
        .call_with(
            ("X-Metabase-Session", &sid),
            Method::GET,
            "/api/user/current",
            None,
        )
        .await;
    assert_text(&r, 401, "Unauthenticated");
}

#[tokio::test]
async fn the_last_admin_cannot_be_deactivated_or_removed() {
    let m = start(SimOptions::default()).await;
    let r = m.call(Method::DELETE, "/api/user/1", None).await;
    assert_text(
        &r,
        400,
        "You cannot remove the last member of the 'Admin' group!",
    );
    let mid = m.membership_id(1, 2).await.unwrap();
    let r = m
        .call(
            Method::DELETE,
            &format!("/api/permissions/membership/{mid}"),
            None,
        )
        .await;
    assert_text(
        &r,
        400,
        "You cannot remove the last member of the 'Admin' group!",
    );
    let r = m
        .call(
            Method::PUT,
            "/api/user/1",
            Some(json!({"is_superuser": false})),
        )
        .await;
    assert_text(
        &r,
        400,
        "You cannot remove the last member of the 'Admin' group!",
    );
    let r = m
        .call(Method::PUT, "/api/permissions/membership/2/clear", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn non_admin_sessions_get_403_plain_text() {
    let m = start(SimOptions::default()).await;
    // Make a second admin, demote the first, log in as the first (now a plain user).
    m.call(
        Method::POST,
        "/api/user",
        Some(json!({"email": "adm@x.io", "user_group_memberships": [{"id": 1}, {"id": 2}]})),
    )
    .await;
    m.call(
        Method::PUT,
        "/api/user/1",
        Some(json!({"is_superuser": false})),
    )
    .await;
    let sid = m.login("admin@metabase.local", "admin").await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = m
        .call_with(("X-Metabase-Session", &sid), Method::GET, "/api/user", None)
        .await;
    assert_text(&r, 403, "You don't have permissions to do that.");
    let r = m
        .call_with(
            ("X-Metabase-Session", &sid),
            Method::GET,
            "/api/user/1",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "self is allowed");
    let r = m
        .call_with(
            ("X-Metabase-Session", &sid),
            Method::GET,
            "/api/user/3",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

// ---------------------------------------------------------------------------------------------
// Groups and memberships
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn groups_are_a_bare_array_with_the_magic_groups() {
    let m = start(SimOptions::default()).await;
    m.create_group("zeta").await;
    m.create_group("Alpha").await;
    let r = m.get("/api/permissions/group").await;
    assert_eq!(r.status, StatusCode::OK);
    let names: Vec<&str> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["Administrators", "All Users", "Alpha", "zeta"],
        "lower(name)"
    );
    let all = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "All Users")
        .unwrap();
    assert_eq!(all["magic_group_type"], "all-internal-users");
    assert_eq!(all["member_count"], 1, "active personal users only");
    assert_eq!(all["entity_id"].as_str().unwrap().len(), 21);
    let r = m.get("/api/permissions/group?limit=1&offset=1").await;
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    assert_eq!(r.json[0]["name"], "All Users");
    let r = m.get("/api/permissions/group/2").await;
    assert_eq!(r.json["magic_group_type"], "admin");
    assert_eq!(r.json["members"][0]["email"], "admin@metabase.local");
    assert!(r.json["members"][0]["membership_id"].is_i64());
    assert_text(&m.get("/api/permissions/group/99").await, 404, "Not found.");
}

#[tokio::test]
async fn group_names_are_unique_case_insensitively_and_magic_groups_are_fixed() {
    let m = start(SimOptions::default()).await;
    let g = m.create_group("Sales").await;
    let r = m
        .call(
            Method::POST,
            "/api/permissions/group",
            Some(json!({"name": "SALES"})),
        )
        .await;
    assert_text(&r, 400, "A group with that name already exists.");
    let r = m
        .call(
            Method::POST,
            "/api/permissions/group",
            Some(json!({"name": " "})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["errors"]["name"],
        "value must be a non-blank string."
    );
    assert_eq!(
        r.json["specific-errors"]["name"].as_array().unwrap().len(),
        2
    );
    let r = m
        .call(
            Method::PUT,
            &format!("/api/permissions/group/{g}"),
            Some(json!({"name": "Sales EU"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"], "Sales EU");
    let r = m
        .call(
            Method::PUT,
            "/api/permissions/group/2",
            Some(json!({"name": "Admins"})),
        )
        .await;
    assert_text(
        &r,
        400,
        "You cannot edit or delete the 'Administrators' permissions group!",
    );
    let r = m
        .call(Method::DELETE, "/api/permissions/group/1", None)
        .await;
    assert_text(
        &r,
        400,
        "You cannot edit or delete the 'All Users' permissions group!",
    );
    let r = m
        .call(Method::DELETE, &format!("/api/permissions/group/{g}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    let r = m
        .call(Method::DELETE, "/api/permissions/group/999", None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "no 404 check on group delete"
    );
}

#[tokio::test]
async fn memberships_are_addressed_by_membership_id() {
    let m = start(SimOptions::default()).await;
    let g = m.create_group("Team").await;
    let u = m.create_user("t@x.io", "T").await;
    let uid = u["id"].as_i64().unwrap();
    let r = m
        .call(
            Method::POST,
            "/api/permissions/membership",
            Some(json!({"group_id": g, "user_id": uid})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let members = r.json.as_array().unwrap();
    assert_eq!(members.len(), 1, "the whole member list of the group");
    assert_eq!(members[0]["user_id"], uid);
    let mid = members[0]["membership_id"].as_i64().unwrap();
    assert_eq!(m.membership_id(uid, g).await, Some(mid));
    let all = m.get("/api/permissions/membership").await.json;
    assert_eq!(all[uid.to_string()].as_array().unwrap().len(), 2);
    // Duplicate → error, not idempotent.
    let r = m
        .call(
            Method::POST,
            "/api/permissions/membership",
            Some(json!({"group_id": g, "user_id": uid})),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .contains("duplicate key"));
    let r = m
        .call(
            Method::POST,
            "/api/permissions/membership",
            Some(json!({"group_id": 1, "user_id": uid})),
        )
        .await;
    assert_text(
        &r,
        400,
        "You cannot add or remove users to/from the 'All Users' group.",
    );
    let r = m
        .call(
            Method::POST,
            "/api/permissions/membership",
            Some(json!({"group_id": g, "user_id": uid, "is_group_manager": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    let r = m
        .call(
            Method::POST,
            "/api/permissions/membership",
            Some(json!({"group_id": "x", "user_id": uid})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["errors"]["group_id"],
        "value must be an integer greater than zero."
    );
    // Delete by membership id (a user id there would be wrong).
    let r = m
        .call(
            Method::DELETE,
            &format!("/api/permissions/membership/{mid}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(m.membership_id(uid, g).await, None);
    let r = m
        .call(
            Method::DELETE,
            &format!("/api/permissions/membership/{mid}"),
            None,
        )
        .await;
    assert_text(&r, 404, "Not found.");
    let all_users_mid = m.membership_id(uid, 1).await.unwrap();
    let r = m
        .call(
            Method::DELETE,
            &format!("/api/permissions/membership/{all_users_mid}"),
            None,
        )
        .await;
    assert_text(
        &r,
        400,
        "You cannot add or remove users to/from the 'All Users' group.",
    );
}

#[tokio::test]
async fn admin_membership_is_superuser_and_clear_empties_a_group() {
    let m = start(SimOptions::default()).await;
    let u = m.create_user("a@x.io", "A").await;
    let uid = u["id"].as_i64().unwrap();
    let admins = m.group_id("Administrators").await;
    m.call(
        Method::POST,
        "/api/permissions/membership",
        Some(json!({"group_id": admins, "user_id": uid})),
    )
    .await;
    assert_eq!(
        m.get(&format!("/api/user/{uid}")).await.json["is_superuser"],
        true
    );
    let mid = m.membership_id(uid, admins).await.unwrap();
    let r = m
        .call(
            Method::DELETE,
            &format!("/api/permissions/membership/{mid}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "not the last admin");
    assert_eq!(
        m.get(&format!("/api/user/{uid}")).await.json["is_superuser"],
        false
    );
    let g = m.create_group("Tmp").await;
    m.call(
        Method::POST,
        "/api/permissions/membership",
        Some(json!({"group_id": g, "user_id": uid})),
    )
    .await;
    let r = m
        .call(
            Method::PUT,
            &format!("/api/permissions/membership/{g}/clear"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        m.get(&format!("/api/permissions/group/{g}")).await.json["members"],
        json!([])
    );
    let r = m
        .call(Method::PUT, "/api/permissions/membership/99/clear", None)
        .await;
    assert_text(&r, 404, "Not found.");
}

// ---------------------------------------------------------------------------------------------
// Bad input, faults, stats
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_requests_get_metabase_errors_not_panics() {
    let m = start(SimOptions::default()).await;
    let r = read(
        m.http
            .post(format!("{}/api/user", m.base))
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body("{nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["message"].is_string());
    let r = m.get("/api/user/abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["errors"]["id"],
        "value must be an integer greater than zero."
    );
    let r = m.call(Method::POST, "/api/user", Some(json!([1]))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = m
        .call(
            Method::PUT,
            "/api/user/1",
            Some(json!({"user_group_memberships": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = m.get("/api/nothing").await;
    assert_text(&r, 404, "API endpoint does not exist.");
}

#[tokio::test]
async fn faults_use_metabase_plain_text_bodies() {
    let m = start(SimOptions {
        error_rate: 1.0,
        ..SimOptions::default()
    })
    .await;
    assert_text(&m.get("/api/user").await, 500, "Internal server error.");
    let t = start(SimOptions {
        throttle_rps: Some(2.0),
        ..SimOptions::default()
    })
    .await;
    let mut seen = None;
    for _ in 0..10 {
        let r = t
            .http
            .get(format!("{}/api/user", t.base))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().get("retry-after").is_none());
            seen = Some(read(r).await);
            break;
        }
    }
    assert_text(&seen.expect("throttled"), 429, "Too many requests.");
    let ra = start(SimOptions {
        throttle_rps: Some(1.0),
        switches: vec![("metabase.retry_after".into(), "true".into())],
        ..SimOptions::default()
    })
    .await;
    let mut header = None;
    for _ in 0..5 {
        let r = ra
            .http
            .get(format!("{}/api/user", ra.base))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            header = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            break;
        }
    }
    assert_eq!(header.as_deref(), Some("1"));
}

#[tokio::test]
async fn stats_count_metabase_routes_by_pattern() {
    let m = start(SimOptions::default()).await;
    m.get("/api/user/1").await;
    m.get("/api/user/2").await;
    m.get("/api/user").await;
    let s = support::stats(&m.base).await;
    assert_eq!(s["requests"], 3);
    assert_eq!(s["by_route"]["GET /api/user/{id}"], 2);
    assert_eq!(s["by_route"]["GET /api/user"], 1);
}

// ---------------------------------------------------------------------------------------------
// Throughput (on demand: `cargo test --release --test sim_metabase throughput -- --ignored
// --nocapture`; set SIM_MIN_RPS to make it an assertion)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run in release on demand"]
async fn throughput_user_gets_per_second() {
    let m = start(SimOptions::default()).await;
    let u = m.create_user("load@x.io", "Load").await;
    let url = format!("{}/api/user/{}", m.base, u["id"]);
    let secs = 3.0;
    let stop = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, url) = (m.http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while std::time::Instant::now() < stop {
                let r = http
                    .get(&url)
                    .header("x-api-key", KEY)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                r.bytes().await.unwrap();
                ok += 1;
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let rps = total as f64 / secs;
    println!("metabase GET /api/user/{{id}}: {total} requests in {secs}s = {rps:.0} req/s");
    if let Some(min) = std::env::var("SIM_MIN_RPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        assert!(rps >= min, "{rps:.0} req/s < {min}");
    }
}

#[tokio::test]
async fn garbage_on_every_route_never_panics() {
    let m = start(SimOptions::default()).await;
    let u = m.create_user("g@x.io", "G").await;
    let uid = u["id"].as_i64().unwrap();
    let paths = [
        "/api/session".to_string(),
        "/api/user".to_string(),
        "/api/user/current".to_string(),
        format!("/api/user/{uid}"),
        "/api/user/-1".to_string(),
        "/api/user/99999999999999999999".to_string(),
        format!("/api/user/{uid}/reactivate"),
        format!("/api/user/{uid}/password"),
        "/api/permissions/group".to_string(),
        "/api/permissions/group/1".to_string(),
        "/api/permissions/membership".to_string(),
        "/api/permissions/membership/3".to_string(),
        "/api/permissions/membership/x/clear".to_string(),
        "/api/user?limit=%ZZ&offset=-1&status=&query=%00".to_string(),
    ];
    let bodies: [&[u8]; 8] = [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"\"x\"",
        b"{\"email\":",
        b"\xff\xfe\x00",
        b"{\"email\":[],\"user_group_memberships\":[{\"id\":\"x\"}],\"group_id\":-1}",
    ];
    for p in &paths {
        for meth in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            for b in bodies {
                let r = m
                    .http
                    .request(meth.clone(), format!("{}{}", m.base, p))
                    .header("x-api-key", KEY)
                    .header("content-type", "application/json")
                    .body(b.to_vec())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{meth} {p}: connection failed: {e}"));
                // Metabase itself answers 500 for DELETE of an unknown user (check-500).
                let documented_500 = meth == Method::DELETE && p.starts_with("/api/user/");
                assert!(
                    r.status().as_u16() < 500 || documented_500,
                    "{meth} {p} {:?} → {}",
                    String::from_utf8_lossy(b),
                    r.status()
                );
            }
        }
    }
    assert_eq!(m.get("/api/user/1").await.status, StatusCode::OK);
}

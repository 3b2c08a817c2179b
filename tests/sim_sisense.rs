//! The Sisense simulator over real sockets: every rule and quirk of the reference, and every JSON
//! body checked against the published Swagger (vendor-specs/sisense).

#[path = "support/sim.rs"]
mod support;

use reqwest::{Method, StatusCode};
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::{json, Value};
use support::{assert_conforms, response_schema, sisense_v09, sisense_v1};

struct Sis {
    base: String,
    token: String,
    http: reqwest::Client,
    _sim: scim_bridge::sim::RunningSim,
}

async fn start(opts: SimOptions) -> Sis {
    let sim = support::spawn(Vendor::Sisense, opts).await;
    let base = sim.base_url();
    let http = support::client();
    let token = login(&http, &base, "admin@sisense.local", "admin").await.1["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    Sis {
        base,
        token,
        http,
        _sim: sim,
    }
}

async fn login(http: &reqwest::Client, base: &str, user: &str, pass: &str) -> (StatusCode, Value) {
    let r = http
        .post(format!("{base}/api/v1/authentication/login"))
        .form(&[("username", user), ("password", pass)])
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

impl Sis {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.token.clone(), method, path, body).await
    }

    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let st = r.status();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (st, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn role_id(&self, name: &str) -> String {
        let (_, roles) = self.get("/api/roles").await;
        roles
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn create_user(&self, email: &str, role: &str) -> Value {
        let rid = self.role_id(role).await;
        let (st, u) = self
            .call(
                Method::POST,
                "/api/v1/users",
                Some(json!({"email": email, "roleId": rid, "firstName": "F", "lastName": "L"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{u}");
        u
    }

    async fn create_group(&self, name: &str) -> Value {
        let (st, g) = self
            .call(Method::POST, "/api/v1/groups", Some(json!({"name": name})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{g}");
        g
    }
}

fn v1(path: &str, method: &str, status: u16) -> Value {
    response_schema(sisense_v1(), path, method, status)
}

fn v09(path: &str, method: &str, status: u16) -> Value {
    response_schema(sisense_v09(), path, method, status)
}

fn assert_error(body: &Value, status: u16, code: i64) {
    assert_eq!(body["error"]["status"], status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["httpMessage"].is_string(), "{body}");
}

fn is_object_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn login_is_form_encoded_and_returns_a_token_matching_the_spec() {
    let s = start(SimOptions::default()).await;
    let (st, body) = login(&s.http, &s.base, "admin@sisense.local", "admin").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["success"], true);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);
    assert!(is_object_id(&body["userId"]));
    // userId is in a captured real response (reference B.1), not in the 2021 schema.
    assert_conforms(
        &v1("/authentication/login", "post", 200),
        &body,
        &["userId"],
        "login 200",
    );
}

#[tokio::test]
async fn bad_credentials_are_a_401_in_the_error_envelope() {
    let s = start(SimOptions::default()).await;
    let (st, body) = login(&s.http, &s.base, "admin@sisense.local", "wrong").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["status"], 401);
    assert_conforms(
        &v1("/authentication/login", "post", 401),
        &body,
        &[],
        "login 401",
    );
    // A non-email unknown username: the captured real answer.
    let (st, body) = login(&s.http, &s.base, "invalid.username", "x").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_error(&body, 401, 5001);
    assert_eq!(body["error"]["message"], "Invalid domain.");
}

#[tokio::test]
async fn login_accepts_json_by_default_but_not_in_legacy_2021_mode() {
    let s = start(SimOptions::default()).await;
    let r = s
        .http
        .post(format!("{}/api/v1/authentication/login", s.base))
        .json(&json!({"username": "admin@sisense.local", "password": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let legacy = start(SimOptions {
        legacy_2021: true,
        ..SimOptions::default()
    })
    .await;
    let r = legacy
        .http
        .post(format!("{}/api/v1/authentication/login", legacy.base))
        .json(&json!({"username": "admin@sisense.local", "password": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_or_unknown_bearer_token_is_a_401_envelope() {
    let s = start(SimOptions::default()).await;
    let r = s
        .http
        .get(format!("{}/api/v1/users", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], 401);
    assert_conforms(
        &response_schema(sisense_v1(), "/authentication/logout", "get", 401),
        &body,
        &[],
        "401 envelope",
    );
    let (st, body) = s
        .call_as("not-a-token", Method::GET, "/api/v1/users", None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["httpMessage"], "Unauthorized");
}

#[tokio::test]
async fn an_expired_token_gets_401_and_a_new_login_works() {
    let s = start(SimOptions {
        token_ttl_s: Some(1),
        ..SimOptions::default()
    })
    .await;
    assert_eq!(s.get("/api/v1/users").await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (st, body) = s.get("/api/v1/users").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["status"], 401);
    assert_conforms(
        &support::definition_schema(sisense_v1(), "unauthorizedApiError"),
        &body,
        &[],
        "expired 401",
    );
    let (_, fresh) = login(&s.http, &s.base, "admin@sisense.local", "admin").await;
    let (st, _) = s
        .call_as(
            fresh["access_token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/users",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn without_ttl_tokens_do_not_expire_and_logout_revokes() {
    let s = start(SimOptions::default()).await;
    let (st, _) = s.get("/api/v1/authentication/logout").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.get("/api/v1/users").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_viewer_token_cannot_manage_users() {
    let s = start(SimOptions::default()).await;
    let rid = s.role_id("consumer").await;
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "v@x.io", "roleId": rid, "password": "pw"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, tok) = login(&s.http, &s.base, "v@x.io", "pw").await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s
        .call_as(
            tok["access_token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/users",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["status"], 403);
    assert_conforms(
        &support::definition_schema(sisense_v1(), "forbiddenApiError"),
        &body,
        &[],
        "403",
    );
    let (st, me) = s
        .call_as(
            tok["access_token"].as_str().unwrap(),
            Method::GET,
            "/api/users/loggedin",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(me["email"], "v@x.io");
    assert_conforms(&v09("/users/loggedin", "get", 200), &me, &[], "loggedin");
    let (st, _) = s
        .call_as(
            tok["access_token"].as_str().unwrap(),
            Method::GET,
            "/api/roles",
            None,
        )
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "roles are designers-and-admins-only"
    );
    let (st, _) = s
        .call_as(
            tok["access_token"].as_str().unwrap(),
            Method::GET,
            "/api/roles/consumer",
            None,
        )
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "a single role is x-permission-type none"
    );
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn roles_have_internal_names_ui_names_and_per_instance_ids() {
    let a = start(SimOptions::default()).await;
    let b = start(SimOptions::default()).await;
    let (st, roles) = a.get("/api/roles").await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(
        &v09("/roles", "get", 200),
        &roles,
        &["_id", "displayName"],
        "roles",
    );
    let names: Vec<(&str, &str)> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["displayName"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("super", "Sys. Admin"),
            ("admin", "Admin"),
            ("dataAdmin", "Data Admin"),
            ("dataDesigner", "Data Designer"),
            ("contributor", "Designer"),
            ("consumer", "Viewer"),
        ]
    );
    assert!(roles
        .as_array()
        .unwrap()
        .iter()
        .all(|r| is_object_id(&r["_id"])));
    assert_eq!(names.iter().filter(|(n, _)| *n == "super").count(), 1);
    assert_ne!(a.role_id("consumer").await, b.role_id("consumer").await);
    // By id or name, v0.9.
    let id = a.role_id("contributor").await;
    let (st, r) = a.get(&format!("/api/roles/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r["name"], "contributor");
    assert_conforms(
        &v09("/roles/{idOrName}", "get", 200),
        &r,
        &["_id", "displayName"],
        "role",
    );
    assert_eq!(
        a.get("/api/roles/consumer").await.1["_id"],
        a.role_id("consumer").await
    );
}

#[tokio::test]
async fn v1_roles_path_exists_except_in_legacy_2021_mode() {
    let s = start(SimOptions::default()).await;
    assert_eq!(s.get("/api/v1/roles").await.0, StatusCode::OK);
    let l = start(SimOptions {
        legacy_2021: true,
        ..SimOptions::default()
    })
    .await;
    let (st, body) = l.get("/api/v1/roles").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["status"], 404);
}

#[tokio::test]
async fn same_seed_gives_same_ids() {
    let seeded = || SimOptions {
        seed: Some(42),
        ..SimOptions::default()
    };
    let a = start(seeded()).await;
    let b = start(seeded()).await;
    assert_eq!(a.get("/api/roles").await.1, b.get("/api/roles").await.1);
    let ua = a.create_user("same@x.io", "consumer").await;
    let ub = b.create_user("same@x.io", "consumer").await;
    assert_eq!(ua["_id"], ub["_id"]);
}

#[tokio::test]
async fn basic_user_role_switch_seeds_an_extra_role() {
    let s = start(SimOptions {
        sisense_basic_role_name: Some("basicUser".into()),
        ..SimOptions::default()
    })
    .await;
    let (_, roles) = s.get("/api/roles").await;
    assert_eq!(roles.as_array().unwrap().len(), 7);
    assert_eq!(
        s.get("/api/roles/basicUser").await.1["displayName"],
        "Basic User"
    );
}

// ---------------------------------------------------------------------------------------------
// Users v1
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_get_list_users_match_the_published_schemas() {
    let s = start(SimOptions::default()).await;
    let g = s.create_group("Sales").await;
    let rid = s.role_id("contributor").await;
    let (st, u) = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({
                "email": "jdoe@example.com", "userName": "jdoe", "firstName": "John",
                "lastName": "Doe", "roleId": rid, "groups": [g["_id"]],
                "preferences": {"localeId": "en-US"}, "password": "Str0ng!"
            })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_conforms(&v1("/users", "post", 201), &u, &[], "POST /users");
    assert!(is_object_id(&u["_id"]));
    assert_eq!(u["active"], true);
    assert!(u.get("password").is_none());
    assert_eq!(u["groups"], json!([g["_id"]]));

    let (st, got) = s
        .get(&format!("/api/v1/users/{}", u["_id"].as_str().unwrap()))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(&v1("/users/{id}", "get", 200), &got, &[], "GET /users/{id}");
    assert_eq!(got, u);

    let (st, list) = s.get("/api/v1/users").await;
    assert_eq!(st, StatusCode::OK);
    assert!(list.is_array(), "lists are bare arrays");
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_conforms(&v1("/users", "get", 200), &list, &[], "GET /users");
}

#[tokio::test]
async fn user_name_defaults_to_email() {
    let s = start(SimOptions::default()).await;
    let u = s.create_user("noname@x.io", "consumer").await;
    assert_eq!(u["userName"], "noname@x.io");
}

#[tokio::test]
async fn user_filters_are_exact_and_case_sensitive_by_default() {
    let s = start(SimOptions::default()).await;
    s.create_user("Alice@Example.com", "consumer").await;
    s.create_user("alice2@example.com", "consumer").await;
    let (_, hit) = s.get("/api/v1/users?email=Alice@Example.com").await;
    assert_eq!(hit.as_array().unwrap().len(), 1);
    assert_conforms(&v1("/users", "get", 200), &hit, &[], "filtered list");
    let (_, sub) = s.get("/api/v1/users?email=lice@example.com").await;
    assert_eq!(sub.as_array().unwrap().len(), 0, "no substring match");
    let (_, case) = s.get("/api/v1/users?email=alice@example.com").await;
    assert_eq!(case.as_array().unwrap().len(), 0, "exact case by default");
    let (_, un) = s.get("/api/v1/users?userName=alice2@example.com").await;
    assert_eq!(un.as_array().unwrap().len(), 1);
    let (st, body) = s.get("/api/v1/users?email=not-an-email").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["status"], 400);

    let ci = start(SimOptions {
        sisense_filters_ignore_case: true,
        ..SimOptions::default()
    })
    .await;
    ci.create_user("Alice@Example.com", "consumer").await;
    let (_, case) = ci.get("/api/v1/users?email=alice@example.com").await;
    assert_eq!(case.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn user_filters_on_role_group_active_and_ids() {
    let s = start(SimOptions::default()).await;
    let g = s.create_group("G1").await;
    let gid = g["_id"].as_str().unwrap();
    let a = s.create_user("a@x.io", "consumer").await;
    let b = s.create_user("b@x.io", "contributor").await;
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{}", a["_id"].as_str().unwrap()),
        Some(json!({"groups": [gid]})),
    )
    .await;
    let consumer = s.role_id("consumer").await;
    let (_, r) = s.get(&format!("/api/v1/users?roleId={consumer}")).await;
    assert_eq!(r.as_array().unwrap().len(), 1);
    let (_, r) = s.get(&format!("/api/v1/users?groupId={gid}")).await;
    assert_eq!(r[0]["email"], "a@x.io");
    let (_, r) = s.get("/api/v1/users?groupId=null").await;
    assert_eq!(r.as_array().unwrap().len(), 1, "only b has no group: {r}");
    assert_eq!(r[0]["_id"], b["_id"]);
    let (_, r) = s.get("/api/v1/users?active=true").await;
    assert_eq!(r.as_array().unwrap().len(), 3);
    let (_, r) = s
        .get(&format!(
            "/api/v1/users?ids={},{}",
            a["_id"].as_str().unwrap(),
            b["_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.as_array().unwrap().len(), 2);
    let (st, _) = s.get("/api/v1/users?roleId=xyz").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn skip_and_limit_page_bare_arrays_without_total() {
    let s = start(SimOptions::default()).await;
    for i in 0..5 {
        s.create_user(&format!("u{i}@x.io"), "consumer").await;
    }
    let (_, p1) = s.get("/api/v1/users?skip=0&limit=4").await;
    let (_, p2) = s.get("/api/v1/users?skip=4&limit=4").await;
    assert_eq!(p1.as_array().unwrap().len(), 4);
    assert_eq!(p2.as_array().unwrap().len(), 2, "short page ends the walk");
    assert_conforms(&v1("/users", "get", 200), &p2, &[], "page");
    let (_, sorted) = s.get("/api/v1/users?sort=-email&fields=email").await;
    assert_eq!(sorted[0]["email"], "u4@x.io");
    assert!(sorted[0].get("roleId").is_none());
    assert!(sorted[0].get("_id").is_some());
    let (st, body) = s.get("/api/v1/users?limit=0").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["status"], 400);
    let (st, _) = s.get("/api/v1/users?skip=-1").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.get("/api/v1/users?limit=abc").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn default_limit_switch_caps_unpaged_lists() {
    let s = start(SimOptions {
        sisense_default_limit: Some(2),
        ..SimOptions::default()
    })
    .await;
    for i in 0..3 {
        s.create_user(&format!("l{i}@x.io"), "consumer").await;
    }
    assert_eq!(s.get("/api/v1/users").await.1.as_array().unwrap().len(), 2);
    assert_eq!(
        s.get("/api/v1/users?limit=10")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(s.get("/api/users").await.1.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn expand_replaces_ids_with_objects_and_bad_expand_is_404_202() {
    let s = start(SimOptions::default()).await;
    let (_, list) = s.get("/api/v1/users?expand=groups,role").await;
    let admin = &list[0];
    assert_eq!(admin["role"]["name"], "super");
    assert_eq!(admin["groups"][0]["name"], "Admins");
    let (st, body) = s.get("/api/v1/users?expand=nonsense").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&body, 404, 202);
    assert_conforms(&v1("/users", "get", 404), &body, &[], "expand 404");
}

#[tokio::test]
async fn patch_is_partial_and_groups_replace_the_list() {
    let s = start(SimOptions::default()).await;
    let g1 = s.create_group("G1").await;
    let g2 = s.create_group("G2").await;
    let u = s.create_user("p@x.io", "consumer").await;
    let path = format!("/api/v1/users/{}", u["_id"].as_str().unwrap());
    let (st, p) = s
        .call(
            Method::PATCH,
            &path,
            Some(json!({"groups": [g1["_id"], g2["_id"]]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(&v1("/users/{id}", "patch", 200), &p, &[], "PATCH");
    assert_eq!(p["groups"], json!([g1["_id"], g2["_id"]]));
    assert_eq!(p["firstName"], "F", "untouched fields stay");
    let (_, p) = s
        .call(
            Method::PATCH,
            &path,
            Some(json!({"groups": [g2["_id"]], "firstName": "New"})),
        )
        .await;
    assert_eq!(
        p["groups"],
        json!([g2["_id"]]),
        "groups replaced, not merged"
    );
    assert_eq!(p["firstName"], "New");
    assert_eq!(p["lastName"], "L");
    let (_, p) = s
        .call(Method::PATCH, &path, Some(json!({"groups": []})))
        .await;
    assert_eq!(p["groups"], json!([]));
    let designer = s.role_id("contributor").await;
    let (_, p) = s
        .call(Method::PATCH, &path, Some(json!({"roleId": designer})))
        .await;
    assert_eq!(p["roleId"], designer);
    let (st, body) = s
        .call(
            Method::PATCH,
            "/api/v1/users/0123456789abcdef01234567",
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&body, 404, 2001);
}

#[tokio::test]
async fn patch_active_is_accepted_by_default_and_rejected_in_legacy_2021() {
    let s = start(SimOptions::default()).await;
    let u = s.create_user("act@x.io", "consumer").await;
    let path = format!("/api/v1/users/{}", u["_id"].as_str().unwrap());
    let (st, p) = s
        .call(Method::PATCH, &path, Some(json!({"active": false})))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(p["active"], false);
    let (_, inactive) = s.get("/api/v1/users?active=false").await;
    assert_eq!(inactive.as_array().unwrap().len(), 1);
    let (st, body) = login(&s.http, &s.base, "act@x.io", "pw").await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "an inactive user cannot sign in"
    );
    assert_eq!(body["error"]["status"], 401);

    let l = start(SimOptions {
        legacy_2021: true,
        ..SimOptions::default()
    })
    .await;
    let u = l.create_user("act@x.io", "consumer").await;
    let path = format!("/api/v1/users/{}", u["_id"].as_str().unwrap());
    let (st, body) = l
        .call(Method::PATCH, &path, Some(json!({"active": false})))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["status"], 400);
    assert_eq!(l.get(&path).await.1["active"], true, "nothing changed");
}

#[tokio::test]
async fn duplicate_username_or_email_is_400_code_2004() {
    let s = start(SimOptions::default()).await;
    let u = s.create_user("dup@x.io", "consumer").await;
    let rid = s.role_id("consumer").await;
    for body in [
        json!({"email": "dup@x.io", "roleId": rid, "userName": "other"}),
        json!({"email": "DUP@x.io", "roleId": rid, "userName": "other2"}),
        json!({"email": "new@x.io", "roleId": rid, "userName": "dup@x.io"}),
    ] {
        let (st, e) = s.call(Method::POST, "/api/v1/users", Some(body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_error(&e, 400, 2004);
        assert_conforms(&v1("/users", "post", 400), &e, &[], "2004");
    }
    // PATCH onto another user's email (UNVERIFIED default: 2004 as on POST).
    let other = s.create_user("other@x.io", "consumer").await;
    let (st, e) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", other["_id"].as_str().unwrap()),
            Some(json!({"email": u["email"]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&e, 400, 2004);
}

#[tokio::test]
async fn single_super_user_2006_and_it_cannot_be_deleted_2011() {
    let s = start(SimOptions::default()).await;
    let sup = s.role_id("super").await;
    let (st, e) = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "s2@x.io", "roleId": sup})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&e, 400, 2006);
    let u = s.create_user("v@x.io", "consumer").await;
    let (st, e) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", u["_id"].as_str().unwrap()),
            Some(json!({"roleId": sup})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&e, 400, 2006);
    let (_, list) = s.get("/api/v1/users?email=admin@sisense.local").await;
    let admin_id = list[0]["_id"].as_str().unwrap().to_string();
    let (st, e) = s
        .call(Method::DELETE, &format!("/api/v1/users/{admin_id}"), None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&e, 400, 2011);
}

#[tokio::test]
async fn delete_is_204_then_404_2001_and_revokes_tokens() {
    let s = start(SimOptions::default()).await;
    let rid = s.role_id("admin").await;
    let (_, u) = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "gone@x.io", "roleId": rid, "password": "pw"})),
        )
        .await;
    let (_, tok) = login(&s.http, &s.base, "gone@x.io", "pw").await;
    let path = format!("/api/v1/users/{}", u["_id"].as_str().unwrap());
    let (st, body) = s.call(Method::DELETE, &path, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (st, e) = s.get(&path).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&e, 404, 2001);
    assert_conforms(&v1("/users/{id}", "get", 404), &e, &[], "2001");
    assert_eq!(
        s.call(Method::DELETE, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (st, _) = s
        .call_as(
            tok["access_token"].as_str().unwrap(),
            Method::GET,
            "/api/v1/users",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn create_validation_errors_follow_the_spec_codes() {
    let s = start(SimOptions::default()).await;
    let rid = s.role_id("consumer").await;
    let cases = [
        (json!({"roleId": rid}), 422, 2003),
        (json!({"email": "x@x.io"}), 422, 2003),
        (json!({"email": "", "roleId": rid}), 400, 2009),
        (json!({"email": "x@x.io", "roleId": "nothex"}), 422, 601),
        (
            json!({"email": "x@x.io", "roleId": rid, "groups": ["bad"]}),
            422,
            601,
        ),
    ];
    for (body, status, code) in cases {
        let (st, e) = s
            .call(Method::POST, "/api/v1/users", Some(body.clone()))
            .await;
        assert_eq!(st.as_u16(), status, "{body} → {e}");
        assert_error(&e, status, code);
        assert_conforms(&v1("/users", "post", status), &e, &[], "create error");
    }
    let (st, e) = s
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "x@x.io", "roleId": "0123456789abcdef01234567"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "unknown role");
    assert_eq!(e["error"]["message"], "Role not found.");
    assert_conforms(
        &response_schema(sisense_v1(), "/users/ad", "post", 404),
        &e,
        &[],
        "role 404",
    );
}

#[tokio::test]
async fn malformed_requests_get_vendor_errors_not_panics() {
    let s = start(SimOptions::default()).await;
    let r = s
        .http
        .post(format!("{}/api/v1/users", s.base))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], 400);
    for (m, p, b) in [
        (Method::POST, "/api/v1/users", json!([1, 2])),
        (
            Method::POST,
            "/api/v1/users",
            json!({"email": 5, "roleId": []}),
        ),
        (
            Method::PATCH,
            "/api/v1/users/0123456789abcdef01234567",
            json!("str"),
        ),
        (Method::POST, "/api/v1/groups", json!({"name": 7})),
        (Method::POST, "/api/groups/Admins/users", json!({"a": 1})),
        (Method::POST, "/api/v1/users/bulk", json!({"a": 1})),
    ] {
        let (st, body) = s.call(m.clone(), p, Some(b.clone())).await;
        assert!(st.is_client_error(), "{m} {p} {b} → {st}");
        assert!(body["error"]["code"].is_i64(), "{body}");
    }
    let (st, body) = s.get("/api/v1/users/not-an-id").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["status"], 400);
    let (st, body) = s.get("/api/v1/nothing-here").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["status"], 404);
}

#[tokio::test]
async fn bulk_create_is_all_or_nothing() {
    let s = start(SimOptions::default()).await;
    let rid = s.role_id("consumer").await;
    let (st, created) = s
        .call(
            Method::POST,
            "/api/v1/users/bulk",
            Some(json!([{"email": "b1@x.io", "roleId": rid}, {"email": "b2@x.io", "roleId": rid}])),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(created.as_array().unwrap().len(), 2);
    // The spec's bulk 201 schema repeats the request shape; the created users also carry the
    // server fields of the single POST answer.
    assert_conforms(
        &v1("/users/bulk", "post", 201),
        &created,
        &[
            "_id",
            "active",
            "adgroups",
            "activeDirectory",
            "created",
            "lastUpdated",
        ],
        "bulk 201",
    );
    for u in created.as_array().unwrap() {
        assert_conforms(&v1("/users", "post", 201), u, &[], "bulk item as POST 201");
    }
    let (st, e) = s
        .call(
            Method::POST,
            "/api/v1/users/bulk",
            Some(json!([{"email": "b3@x.io", "roleId": rid}, {"email": "b3@x.io", "roleId": rid}])),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&e, 400, 2005);
    assert_conforms(&v1("/users/bulk", "post", 400), &e, &[], "bulk 400");
    assert_eq!(s.get("/api/v1/users?email=b3@x.io").await.1, json!([]));
}

#[tokio::test]
async fn bulk_delete_is_204_and_all_or_nothing() {
    let s = start(SimOptions::default()).await;
    let a = s.create_user("d1@x.io", "consumer").await;
    let b = s.create_user("d2@x.io", "consumer").await;
    let (a, b) = (a["_id"].as_str().unwrap(), b["_id"].as_str().unwrap());
    let (st, e) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/users/bulk?ids={a},0123456789abcdef01234567"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&e, 404, 2001);
    assert_eq!(s.get(&format!("/api/v1/users/{a}")).await.0, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/users/bulk?ids={a},{b}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/api/v1/users").await.1.as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn groups_v1_create_get_list_delete_match_the_schemas() {
    let s = start(SimOptions::default()).await;
    let (_, list) = s.get("/api/v1/groups").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Everyone", "Admins"]);
    assert_conforms(&v1("/groups", "get", 200), &list, &[], "GET /groups");

    let g = s.create_group("Finance").await;
    assert_conforms(&v1("/groups", "post", 201), &g, &[], "POST /groups");
    assert!(is_object_id(&g["_id"]));
    let id = g["_id"].as_str().unwrap();
    let (st, got) = s.get(&format!("/api/v1/groups/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(
        &v1("/groups/{id}", "get", 200),
        &got,
        &[],
        "GET /groups/{id}",
    );

    let (_, by_name) = s.get("/api/v1/groups?name=Finance").await;
    assert_eq!(by_name.as_array().unwrap().len(), 1);
    let (_, none) = s.get("/api/v1/groups?name=finance").await;
    assert_eq!(none.as_array().unwrap().len(), 0, "exact, case-sensitive");
    let (_, page) = s.get("/api/v1/groups?skip=1&limit=1").await;
    assert_eq!(page[0]["name"], "Admins");

    let u = s.create_user("m@x.io", "consumer").await;
    let upath = format!("/api/v1/users/{}", u["_id"].as_str().unwrap());
    s.call(Method::PATCH, &upath, Some(json!({"groups": [id]})))
        .await;
    let (st, _) = s
        .call(Method::DELETE, &format!("/api/v1/groups/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get(&upath).await.1["groups"],
        json!([]),
        "membership gone"
    );
    let (st, e) = s.get(&format!("/api/v1/groups/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_conforms(&v1("/groups/{id}", "get", 404), &e, &[], "group 404");
    assert_eq!(e["error"]["resourceType"], "group");
    let (st, e) = s
        .call(Method::DELETE, &format!("/api/v1/groups/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_conforms(
        &v1("/groups/{id}", "delete", 404),
        &e,
        &[],
        "group delete 404",
    );
}

#[tokio::test]
async fn duplicate_group_name_is_an_error_with_switchable_status() {
    let s = start(SimOptions::default()).await;
    s.create_group("Ops").await;
    let (st, e) = s
        .call(Method::POST, "/api/v1/groups", Some(json!({"name": "Ops"})))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["status"], 400);
    let c = start(SimOptions {
        sisense_duplicate_group_status: 409,
        ..SimOptions::default()
    })
    .await;
    c.create_group("Ops").await;
    let (st, e) = c
        .call(Method::POST, "/api/v1/groups", Some(json!({"name": "Ops"})))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(e["error"]["status"], 409);
    let (st, e) = s
        .call(Method::POST, "/api/v1/groups", Some(json!({})))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&e, 422, 2003);
}

#[tokio::test]
async fn legacy_group_rename_by_id_or_name() {
    let s = start(SimOptions::default()).await;
    let g = s.create_group("Old").await;
    let (st, r) = s
        .call(Method::PUT, "/api/groups/Old", Some(json!({"name": "New"})))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r["name"], "New");
    let id = g["_id"].as_str().unwrap();
    let (st, r) = s
        .call(
            Method::PUT,
            &format!("/api/groups/{id}"),
            Some(json!({"name": "Newer"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r["_id"], g["_id"]);
    let (_, got) = s.get(&format!("/api/groups/{id}")).await;
    assert_eq!(got["name"], "Newer");
    assert_conforms(&v09("/groups/{group}", "get", 200), &got, &[], "v0.9 group");
    let (st, _) = s
        .call(
            Method::PUT,
            "/api/groups/Admins",
            Some(json!({"name": "Newer"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "rename onto an existing name");
    let (st, e) = s
        .call(
            Method::PUT,
            "/api/groups/Missing",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(e["error"]["status"], 404);
    let (st, _) = s
        .call(
            Method::PATCH,
            &format!("/api/v1/groups/{id}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::METHOD_NOT_ALLOWED,
        "no v1 PATCH for groups in 2021"
    );
}

#[tokio::test]
async fn v09_post_groups_takes_an_array_or_an_object_and_refuses_duplicates() {
    let s = start(SimOptions::default()).await;
    let schema = v09("/groups", "post", 200);
    // One group in the spec's array body → the spec's object.
    let (st, one) = s
        .call(
            Method::POST,
            "/api/groups",
            Some(json!([{"name": "Alpha"}])),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert!(one.is_object(), "{one}");
    assert_conforms(&schema, &one, &[], "v0.9 POST /groups (one)");
    assert!(is_object_id(&one["_id"]));
    assert_eq!(one["name"], "Alpha");
    let (st, got) = s
        .get(&format!("/api/v1/groups/{}", one["_id"].as_str().unwrap()))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["name"], "Alpha");
    // Several → an array of those objects (UNVERIFIED: the spec declares only the object).
    let (st, many) = s
        .call(
            Method::POST,
            "/api/groups",
            Some(json!([{"name": "Beta"}, {"name": "Gamma"}])),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{many}");
    let many = many.as_array().unwrap().clone();
    assert_eq!(many.len(), 2);
    for g in &many {
        assert_conforms(&schema, g, &[], "v0.9 POST /groups (each of several)");
    }
    assert_eq!(
        (many[0]["name"].clone(), many[1]["name"].clone()),
        (json!("Beta"), json!("Gamma"))
    );
    // A bare object (UNVERIFIED leniency).
    let (st, obj) = s
        .call(Method::POST, "/api/groups", Some(json!({"name": "Delta"})))
        .await;
    assert_eq!(st, StatusCode::OK, "{obj}");
    assert_conforms(&schema, &obj, &[], "v0.9 POST /groups (object body)");
    // A duplicate (ignoring case) is the v1 POST error, body and all.
    let (st, dup) = s
        .call(
            Method::POST,
            "/api/groups",
            Some(json!([{"name": "alpha"}])),
        )
        .await;
    let (st1, dup1) = s
        .call(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "alpha"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!((st, dup.clone()), (st1, dup1));
    assert_eq!(dup["error"]["status"], 400);
    // All or nothing: a duplicate inside the batch creates neither.
    let (st, _) = s
        .call(
            Method::POST,
            "/api/groups",
            Some(json!([{"name": "Eps"}, {"name": "EPS"}])),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, eps) = s.get("/api/v1/groups?name=Eps").await;
    assert_eq!(eps, json!([]));
    let (st, e) = s
        .call(
            Method::POST,
            "/api/groups",
            Some(json!([{"mail": "x@x.io"}])),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::UNPROCESSABLE_ENTITY,
        "name is required: {e}"
    );
    let (st, _) = s.call(Method::POST, "/api/groups", Some(json!([]))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, all) = s.get("/api/groups").await;
    assert_eq!(all.as_array().unwrap().len(), 6, "2 built-in + 4 created");
}

#[tokio::test]
async fn v09_list_groups_honours_limit_and_skip() {
    let s = start(SimOptions::default()).await;
    for i in 0..5 {
        s.create_group(&format!("G{i}")).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, p) = s.get("/api/groups?limit=2").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(names(&p), vec!["Everyone", "Admins"]);
    assert_conforms(&v09("/groups", "get", 200), &p, &[], "v0.9 GET /groups");
    let (_, p) = s.get("/api/groups?skip=3&limit=2").await;
    assert_eq!(names(&p), vec!["G1", "G2"]);
    let (_, p) = s.get("/api/groups?skip=5").await;
    assert_eq!(names(&p), vec!["G3", "G4"]);
    // The v0.9 spec: "Enter 0 (zero) or leave blank not to limit".
    let (st, p) = s.get("/api/groups?limit=0").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(p.as_array().unwrap().len(), 7);
    let (_, p) = s.get("/api/groups?limit=0&skip=6").await;
    assert_eq!(names(&p), vec!["G4"]);
    let (st, e) = s.get("/api/groups?skip=-1").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "invalid skip: {e}");
    assert_eq!(e["error"]["status"], 400);
    let (st, _) = s.get("/api/groups?limit=-2").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn legacy_group_membership_endpoints_take_ids_or_usernames() {
    let s = start(SimOptions::default()).await;
    let g = s.create_group("Team").await;
    let gid = g["_id"].as_str().unwrap();
    let a = s.create_user("a@x.io", "consumer").await;
    let b = s.create_user("b@x.io", "consumer").await;
    let path = format!("/api/groups/{gid}/users");
    let (st, added) = s
        .call(Method::POST, &path, Some(json!([a["_id"], "b@x.io"])))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(
        &v09("/groups/{group}/users", "post", 200),
        &added,
        &[],
        "add members",
    );
    let (_, members) = s.get(&path).await;
    assert_eq!(members.as_array().unwrap().len(), 2);
    assert_conforms(
        &v09("/groups/{group}/users", "get", 200),
        &members,
        &[],
        "members",
    );
    assert_eq!(members[0]["roleName"], "consumer");
    let (_, ua) = s
        .get(&format!("/api/v1/users/{}", a["_id"].as_str().unwrap()))
        .await;
    assert_eq!(ua["groups"], json!([gid]));
    let (st, removed) = s.call(Method::DELETE, &path, Some(json!([b["_id"]]))).await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(
        &v09("/groups/{group}/users", "delete", 200),
        &removed,
        &[],
        "remove",
    );
    let (_, members) = s.get("/api/groups/Team/users").await;
    assert_eq!(members.as_array().unwrap().len(), 1);
    let (st, _) = s.call(Method::POST, &path, Some(json!(["nobody"]))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .call(
            Method::POST,
            "/api/groups/NoSuch/users",
            Some(json!([a["_id"]])),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// v0.9 users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v09_user_paths_take_id_or_username() {
    let s = start(SimOptions::default()).await;
    let rid = s.role_id("consumer").await;
    let (st, u) = s
        .call(
            Method::POST,
            "/api/users",
            Some(json!([{"email": "old@x.io", "userName": "old", "roleId": rid}])),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(&v09("/users", "post", 200), &u, &[], "v0.9 POST /users");
    let (st, list) = s.get("/api/users?search=old").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_conforms(&v09("/users", "get", 200), &list, &[], "v0.9 GET /users");
    let (st, got) = s.get("/api/users/old").await;
    assert_eq!(st, StatusCode::OK);
    assert_conforms(
        &v09("/users/{user}", "get", 200),
        &got,
        &[],
        "v0.9 GET /users/{user}",
    );
    let (st, _) = s
        .call(
            Method::PUT,
            "/api/users/old",
            Some(json!({"firstName": "Od"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.get("/api/users/old").await.1["firstName"], "Od");
    let (st, _) = s.call(Method::DELETE, "/api/users/old", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.get("/api/users/old").await.0, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Faults and stats
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn error_rate_one_answers_every_request_with_the_vendor_500() {
    let s = support::spawn(
        Vendor::Sisense,
        SimOptions {
            error_rate: 1.0,
            ..SimOptions::default()
        },
    )
    .await;
    let r = support::client()
        .get(format!("{}/api/roles", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = r.json().await.unwrap();
    assert_error(&body, 500, 500);
    assert_conforms(
        &support::definition_schema(sisense_v1(), "internalServerApiError"),
        &body,
        &[],
        "500",
    );
}

#[tokio::test]
async fn error_rate_is_deterministic_with_a_seed() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let s = support::spawn(
            Vendor::Sisense,
            SimOptions {
                error_rate: 0.5,
                seed: Some(seed),
                ..SimOptions::default()
            },
        )
        .await;
        let c = support::client();
        let mut out = Vec::new();
        for _ in 0..40 {
            let r = c
                .get(format!("{}/api/roles", s.base_url()))
                .send()
                .await
                .unwrap();
            out.push(r.status().as_u16());
        }
        out
    }
    let a = pattern(7).await;
    assert_eq!(a, pattern(7).await);
    let fails = a.iter().filter(|s| **s == 500).count();
    assert!((8..=32).contains(&fails), "about half fail: {fails}");
}

#[tokio::test]
async fn throttle_gives_the_sisense_429_envelope_without_retry_after() {
    let s = start(SimOptions {
        throttle_rps: Some(5.0),
        ..SimOptions::default()
    })
    .await;
    let mut throttled = None;
    for _ in 0..20 {
        let r = s
            .http
            .get(format!("{}/api/roles", s.base))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                r.headers().get("retry-after").is_none(),
                "Sisense sends none"
            );
            throttled = Some(r.json::<Value>().await.unwrap());
            break;
        }
    }
    let body = throttled.expect("a 429 within 20 quick requests at 5 rps");
    assert_eq!(body["error"]["status"], 429);
    assert_conforms(
        &support::definition_schema(sisense_v1(), "tooManyRequestsApiError"),
        &body,
        &[],
        "429",
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        s.get("/api/roles").await.0,
        StatusCode::OK,
        "bucket refills"
    );
}

#[tokio::test]
async fn latency_is_added_to_every_response() {
    let s = start(SimOptions {
        latency_ms: 150,
        ..SimOptions::default()
    })
    .await;
    let t = std::time::Instant::now();
    s.get("/api/roles").await;
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test]
async fn stats_count_requests_by_route_pattern() {
    let s = start(SimOptions::default()).await;
    let u = s.create_user("st@x.io", "consumer").await;
    let id = u["_id"].as_str().unwrap();
    s.get(&format!("/api/v1/users/{id}")).await;
    s.get("/api/v1/users/0123456789abcdef01234567").await;
    let st = support::stats(&s.base).await;
    // login + roles lookup + POST + 2 GET by id.
    assert_eq!(st["requests"], 5, "{st}");
    assert_eq!(st["by_route"]["GET /api/v1/users/{id}"], 2, "{st}");
    assert_eq!(st["by_route"]["POST /api/v1/authentication/login"], 1);
    assert_eq!(st["by_route"]["POST /api/v1/users"], 1);
    let again = support::stats(&s.base).await;
    assert_eq!(again["requests"], 5, "stats itself is not counted");
    let r = s
        .http
        .delete(format!("{}/__sim/stats", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(support::stats(&s.base).await["requests"], 0);
}

// ---------------------------------------------------------------------------------------------
// Throughput (run on demand: `cargo test --release --test sim_sisense throughput -- --ignored
// --nocapture`; set SIM_MIN_RPS to make it an assertion)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run in release on demand"]
async fn throughput_user_gets_per_second() {
    let s = start(SimOptions::default()).await;
    let u = s.create_user("load@x.io", "consumer").await;
    let url = format!("{}/api/v1/users/{}", s.base, u["_id"].as_str().unwrap());
    let secs = 3.0;
    let stop = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, url, token) = (s.http.clone(), url.clone(), s.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while std::time::Instant::now() < stop {
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
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
    println!("sisense GET /api/v1/users/{{id}}: {total} requests in {secs}s = {rps:.0} req/s");
    if let Some(min) = std::env::var("SIM_MIN_RPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        assert!(rps >= min, "{rps:.0} req/s < {min}");
    }
}

#[tokio::test]
async fn garbage_on_every_route_never_panics_or_5xxs() {
    let s = start(SimOptions::default()).await;
    let u = s.create_user("g@x.io", "consumer").await;
    let g = s.create_group("G").await;
    let (uid, gid) = (u["_id"].as_str().unwrap(), g["_id"].as_str().unwrap());
    let paths = [
        "/api/v1/authentication/login".to_string(),
        "/api/v1/users".to_string(),
        "/api/v1/users/bulk".to_string(),
        format!("/api/v1/users/{uid}"),
        "/api/v1/users/zz".to_string(),
        "/api/v1/groups".to_string(),
        format!("/api/v1/groups/{gid}"),
        "/api/roles".to_string(),
        "/api/roles/%00".to_string(),
        "/api/users".to_string(),
        "/api/users/g@x.io".to_string(),
        "/api/groups/G".to_string(),
        "/api/groups/G/users".to_string(),
        "/api/v1/users?skip=%ZZ&limit=-5&expand=,&fields=,-&sort=-".to_string(),
    ];
    let bodies: [&[u8]; 8] = [
        b"",
        b"null",
        b"[]",
        b"{}",
        b"\"x\"",
        b"{\"email\":",
        b"\xff\xfe\x00",
        b"[{\"email\":[],\"roleId\":{},\"groups\":[null]}]",
    ];
    for p in &paths {
        for m in [
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ] {
            for b in bodies {
                let r = s
                    .http
                    .request(m.clone(), format!("{}{}", s.base, p))
                    .bearer_auth(&s.token)
                    .header("content-type", "application/json")
                    .body(b.to_vec())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{m} {p}: connection failed: {e}"));
                assert!(
                    r.status().as_u16() < 500,
                    "{m} {p} {:?} → {}",
                    String::from_utf8_lossy(b),
                    r.status()
                );
            }
        }
    }
    // Still serving, and the seeded admin is still there.
    let (st, list) = s.get("/api/v1/users?email=admin@sisense.local").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
}

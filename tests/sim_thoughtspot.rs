//! The ThoughtSpot simulator over real sockets. Every response of every call made here goes
//! through [`Ts::call`], which validates the body against the response schema that ThoughtSpot's
//! published OpenAPI spec (`shared/reference/vendor-specs/thoughtspot/`) gives for that path and
//! status, with `$ref`s resolved and `additionalProperties: false` added so that a field the spec
//! does not know fails too. The simulator cannot drift from the spec unnoticed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::{Client, StatusCode};
use scim_bridge::sim::{start, RunningSim, SimOptions, Vendor};
use serde_json::{json, Map, Value};

const API: &str = "/api/rest/2.0";

/// Where the vendor specs are: `SIM_SPEC_DIR`, else the shared reference beside the checkout.
fn spec_dir() -> String {
    let manifest = env!("CARGO_MANIFEST_DIR");
    [
        std::env::var("SIM_SPEC_DIR").unwrap_or_default(),
        format!("{manifest}/../shared/reference/vendor-specs"),
        format!("{manifest}/../../shared/reference/vendor-specs"),
        "/work/shared/reference/vendor-specs".to_string(),
    ]
    .into_iter()
    .find(|d| !d.is_empty() && std::path::Path::new(d).exists())
    .expect("vendor specs not found; set SIM_SPEC_DIR")
}

// ---------------------------------------------------------------------------------------------
// OpenAPI 3.0 → JSON Schema 2020-12

fn spec() -> &'static Value {
    static SPEC_JSON: OnceLock<Value> = OnceLock::new();
    SPEC_JSON.get_or_init(|| {
        serde_json::from_str(
            &std::fs::read_to_string(format!("{}/thoughtspot/rest-v2.0.openapi.json", spec_dir()))
                .unwrap(),
        )
        .unwrap()
    })
}

/// OpenAPI-only keywords out (`example(s)`, `x-*`), `nullable: true` into a `null` alternative,
/// and objects closed (`additionalProperties: false`) where the spec lists their properties.
fn adapt(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(adapt).collect()),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                if k == "example" || k == "examples" || k.starts_with("x-") || k == "nullable" {
                    continue;
                }
                // `properties` maps names to schemas: adapt each schema, keep the names.
                if k == "properties" {
                    if let Value::Object(props) = val {
                        let p: Map<String, Value> =
                            props.iter().map(|(n, s)| (n.clone(), adapt(s))).collect();
                        out.insert(k.clone(), Value::Object(p));
                        continue;
                    }
                }
                out.insert(k.clone(), adapt(val));
            }
            if out.contains_key("properties") && !out.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                    if let Some(Value::Array(e)) = out.get_mut("enum") {
                        e.push(Value::Null);
                    }
                } else {
                    return json!({"anyOf": [Value::Object(out), {"type": "null"}]});
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn components() -> &'static Value {
    static C: OnceLock<Value> = OnceLock::new();
    C.get_or_init(|| adapt(&spec()["components"]))
}

/// The published schema of the JSON answer of `POST {API}/{template}` with `status`, or `None`
/// when the spec says that status has no body. Statuses the spec does not list for the path
/// (415, 429, 404) are checked against `ErrorResponse`.
fn response_schema(template: &str, method: &str, status: u16) -> Option<Value> {
    let op = &spec()["paths"][format!("{API}/{template}")][method];
    assert!(op.is_object(), "the spec has no {method} {template}");
    let resp = &op["responses"][status.to_string()];
    let schema = if resp.is_object() {
        let s = &resp["content"]["application/json"]["schema"];
        if s.is_null() {
            return None;
        }
        s.clone()
    } else {
        assert!(status >= 400, "{template}: the spec lists no {status}");
        json!({"$ref": "#/components/schemas/ErrorResponse"})
    };
    let mut root = adapt(&schema);
    root["components"] = components().clone();
    Some(root)
}

fn check_against_spec(template: &str, method: &str, status: u16, body: &str) {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let key = format!("{method} {template} {status}");
    let validator = {
        let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
        match cache.get(&key) {
            Some(v) => Some(v.clone()),
            None => match response_schema(template, method, status) {
                None => None,
                Some(schema) => {
                    let v = Arc::new(
                        jsonschema::draft202012::new(&schema)
                            .unwrap_or_else(|e| panic!("{key}: schema does not compile: {e}")),
                    );
                    cache.insert(key.clone(), v.clone());
                    Some(v)
                }
            },
        }
    };
    match validator {
        None => assert!(body.is_empty(), "{key}: the spec has no body, got {body}"),
        Some(v) => {
            let instance: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{key}: not JSON ({e}): {body}"));
            let errors: Vec<String> = v
                .iter_errors(&instance)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{key}: {errors:#?}\n{body}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

async fn spawn_with(opts: SimOptions) -> RunningSim {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    start(Vendor::Thoughtspot, addr, opts)
        .await
        .expect("simulator starts")
}

async fn spawn() -> RunningSim {
    spawn_with(SimOptions::default()).await
}

fn with_switches(sw: &[(&str, &str)]) -> SimOptions {
    SimOptions {
        switches: sw
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..SimOptions::default()
    }
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    /// The code of the nested error body observed live [B.7].
    fn code(&self) -> i64 {
        let j = self.json();
        j["error"]["message"]["debug"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no nested error code in {}", self.body))
    }
}

#[derive(Clone)]
struct Ts {
    base: String,
    http: Client,
    token: Option<String>,
}

impl Ts {
    fn new(sim: &RunningSim) -> Ts {
        Ts {
            base: sim.base_url(),
            http: Client::builder()
                .user_agent("sim-tests/1.0")
                .build()
                .unwrap(),
            token: None,
        }
    }

    /// `POST {API}/{template}` with `{…}` in the template replaced by `id`; the answer is
    /// validated against the spec before it is returned.
    async fn call(&self, template: &str, id: Option<&str>, body: Value) -> Resp {
        let path = match id {
            Some(id) => {
                let start = template.find('{').unwrap();
                let end = template.find('}').unwrap();
                let enc: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
                format!(
                    "{}{}{}",
                    &template[..start],
                    enc.replace('+', "%20"),
                    &template[end + 1..]
                )
            }
            None => template.to_string(),
        };
        let mut rb = self
            .http
            .post(format!("{}{API}/{path}", self.base))
            .header("Accept", "application/json")
            .json(&body);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        check_against_spec(template, "post", status.as_u16(), &body);
        Resp { status, body }
    }

    async fn post(&self, template: &str, body: Value) -> Resp {
        self.call(template, None, body).await
    }

    async fn login_with(&self, body: Value) -> Ts {
        let r = self.post("auth/token/full", body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        Ts {
            token: Some(r.json()["token"].as_str().unwrap().to_string()),
            ..self.clone()
        }
    }

    async fn admin(&self) -> Ts {
        self.login_with(
            json!({"username": "tsadmin", "password": "admin", "validity_time_in_sec": 3600}),
        )
        .await
    }

    async fn create_user(&self, name: &str, extra: Value) -> Value {
        let mut body = json!({"name": name, "display_name": name.to_uppercase(), "email": format!("{name}@acme.com")});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let r = self.post("users/create", body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    async fn create_group(&self, name: &str, extra: Value) -> Value {
        let mut body = json!({"name": name, "display_name": name});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let r = self.post("groups/create", body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    async fn user(&self, ident: &str) -> Value {
        let r = self
            .post("users/search", json!({"user_identifier": ident}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()[0].clone()
    }

    async fn group_members(&self, ident: &str) -> Vec<String> {
        let r = self
            .post("groups/search", json!({"group_identifier": ident}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        names(&r.json()[0]["users"])
    }
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

// ---------------------------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn token_full_with_password_or_secret_key() {
    let sim = spawn().await;
    let ts = Ts::new(&sim);
    let r = ts
        .post(
            "auth/token/full",
            json!({"username": "tsadmin", "password": "admin"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["scope"], json!({"access_type": "FULL", "org_id": 0}));
    assert_eq!(j["valid_for_username"], "tsadmin");
    let created = j["creation_time_in_millis"].as_i64().unwrap();
    let expires = j["expiration_time_in_millis"].as_i64().unwrap();
    assert_eq!(expires - created, 300_000, "validity defaults to 300 s");
    let r = ts
        .post(
            "auth/token/full",
            json!({"username": "tsadmin", "secret_key": "simulator-secret-key", "validity_time_in_sec": 86400}),
        )
        .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(
        j["expiration_time_in_millis"].as_i64().unwrap()
            - j["creation_time_in_millis"].as_i64().unwrap(),
        86_400_000
    );
    // The bearer works; auth/session/user answers the caller.
    let admin = ts.admin().await;
    let r = admin
        .http
        .get(format!("{}{API}/auth/session/user", admin.base))
        .bearer_auth(admin.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    check_against_spec("auth/session/user", "get", 200, &body);
    sim.stop().await;
}

#[tokio::test]
async fn token_full_errors_use_the_nested_error_body() {
    let sim = spawn().await;
    let ts = Ts::new(&sim);
    let r = ts
        .post("auth/token/full", json!({"username": "tsadmin"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), 10002);
    let j = r.json();
    let inner = &j["error"]["message"]["debug"];
    assert!(inner["incident_id_guid"].is_string());
    assert_eq!(inner["trace_id_guid"], "tracing-disabled");
    // The innermost debug is a JSON array held in a string [B.7].
    let text: Vec<String> = serde_json::from_str(inner["debug"].as_str().unwrap()).unwrap();
    assert!(text[0].contains("Either secret_key or password must be provided."));
    for body in [
        json!({"username": "tsadmin", "password": "wrong"}),
        json!({"username": "tsadmin", "secret_key": "wrong"}),
        json!({"username": "nobody", "password": "admin"}),
    ] {
        let r = ts.post("auth/token/full", body).await;
        assert_eq!((r.status.as_u16(), r.code()), (401, 10097));
    }
    let r = ts
        .post("auth/token/full", json!({"password": "admin"}))
        .await;
    assert_eq!(r.status, 400);
    let r = ts
        .post(
            "auth/token/full",
            json!({"username": "tsadmin", "password": "admin", "org_id": 42}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    assert!(r
        .body
        .contains("does not refer to a valid or accessible org"));
    sim.stop().await;
}

#[tokio::test]
async fn the_flat_error_form_is_a_switch() {
    let sim = spawn_with(with_switches(&[("thoughtspot.error_form", "flat")])).await;
    let ts = Ts::new(&sim);
    let r = ts
        .post("auth/token/full", json!({"username": "tsadmin"}))
        .await;
    let j = r.json();
    assert_eq!(j["error"]["message"]["code"], 10002);
    assert_eq!(
        j["error"]["message"]["debug"],
        "Either secret_key or password must be provided."
    );
    sim.stop().await;
}

#[tokio::test]
async fn credential_precedence_follows_the_spec_by_default() {
    let both =
        json!({"username": "tsadmin", "password": "wrong", "secret_key": "simulator-secret-key"});
    let sim = spawn().await;
    let r = Ts::new(&sim).post("auth/token/full", both.clone()).await;
    assert_eq!(r.status, 200, "secret_key wins (OpenAPI spec)");
    sim.stop().await;
    let sim = spawn_with(with_switches(&[(
        "thoughtspot.credential_precedence",
        "password",
    )]))
    .await;
    let r = Ts::new(&sim).post("auth/token/full", both).await;
    assert_eq!(r.status, 401, "password wins (developer guide)");
    sim.stop().await;
}

#[tokio::test]
async fn bearer_is_required_and_expires() {
    let sim = spawn().await;
    let ts = Ts::new(&sim);
    let r = ts.post("users/search", json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, 10097));
    let forged = Ts {
        token: Some("forged".into()),
        ..ts.clone()
    };
    assert_eq!(forged.post("users/search", json!({})).await.status, 401);
    let short = ts
        .login_with(json!({"username": "tsadmin", "password": "admin", "validity_time_in_sec": 1}))
        .await;
    assert_eq!(short.post("users/search", json!({})).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r = short.post("users/search", json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, 10097));
    // Revoke ends a token at once.
    let admin = ts.admin().await;
    let r = admin
        .post(
            "auth/token/revoke",
            json!({"token": admin.token.clone().unwrap()}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(admin.post("users/search", json!({})).await.status, 401);
    sim.stop().await;
}

#[tokio::test]
async fn token_ttl_caps_the_validity() {
    let sim = spawn_with(SimOptions {
        token_ttl_s: Some(1),
        ..SimOptions::default()
    })
    .await;
    let ts = Ts::new(&sim);
    let r = ts
        .post(
            "auth/token/full",
            json!({"username": "tsadmin", "password": "admin", "validity_time_in_sec": 86400}),
        )
        .await;
    let j = r.json();
    assert_eq!(
        j["expiration_time_in_millis"].as_i64().unwrap()
            - j["creation_time_in_millis"].as_i64().unwrap(),
        1000
    );
    let admin = ts.admin().await;
    let r = admin
        .post(
            "auth/token/validate",
            json!({"token": admin.token.clone().unwrap()}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["token_type"], "Bearer");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(admin.post("users/search", json!({})).await.status, 401);
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Users

#[tokio::test]
async fn seeded_directory_has_primary_org_all_group_admin_and_roles() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    let users = admin.post("users/search", json!({})).await.json();
    assert_eq!(names(&users), ["tsadmin"]);
    assert!(names(&users[0]["user_groups"]).contains(&"Administrator".to_string()));
    assert!(users[0]["privileges"]
        .as_array()
        .unwrap()
        .contains(&json!("ADMINISTRATION")));
    let groups = admin.post("groups/search", json!({})).await.json();
    assert_eq!(names(&groups), ["Administrator", "All"]);
    let orgs = admin.post("orgs/search", json!({})).await.json();
    assert_eq!(
        orgs,
        json!([{"id": 0, "name": "Primary", "status": "ACTIVE", "description": "Primary Org", "visibility": "SHOW"}])
    );
    let roles = admin.post("roles/search", json!({})).await.json();
    assert!(names(&roles).contains(&"Super Admin".to_string()));
    let vars = admin
        .post("template/variables/search", json!({}))
        .await
        .json();
    assert_eq!(names(&vars), ["region"]);
    sim.stop().await;
}

#[tokio::test]
async fn user_lifecycle_create_update_delete() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    let u = admin
        .create_user(
            "jane",
            json!({"account_type": "SAML_USER", "visibility": "NON_SHARABLE", "preferred_locale": "en-GB"}),
        )
        .await;
    assert_eq!(u["account_status"], "ACTIVE");
    assert_eq!(u["account_type"], "SAML_USER");
    assert_eq!(u["orgs"], json!([{"id": 0, "name": "Primary"}]));
    // Every new user is in the All group [B.3].
    assert_eq!(names(&u["user_groups"]), ["All"]);
    let id = u["id"].as_str().unwrap().to_string();
    let r = admin
        .call(
            "users/{user_identifier}/update",
            Some(&id),
            json!({"display_name": "Jane Doe", "email": "jane.doe@acme.com"}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // The path identifier may be the name too.
    let u = admin.user("jane").await;
    assert_eq!(u["display_name"], "Jane Doe");
    assert_eq!(u["email"], "jane.doe@acme.com");
    let r = admin
        .call("users/{user_identifier}/delete", Some("jane"), json!({}))
        .await;
    assert_eq!(r.status, 204);
    let r = admin
        .post("users/search", json!({"user_identifier": "jane"}))
        .await;
    assert_eq!(r.json(), json!([]));
    let r = admin
        .call("users/{user_identifier}/delete", Some("jane"), json!({}))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    sim.stop().await;
}

#[tokio::test]
async fn user_create_validates_and_rejects_duplicates() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    for body in [
        json!({"display_name": "x", "email": "x@a.com"}),
        json!({"name": "x", "email": "x@a.com"}),
        json!({"name": "x", "display_name": "x"}),
        json!({"name": "x", "display_name": "x", "email": "x@a.com", "account_type": "BOGUS"}),
        json!({"name": "x", "display_name": "x", "email": "x@a.com", "group_identifiers": "Finance"}),
        json!({"name": "x", "display_name": "x", "email": "x@a.com", "group_identifiers": ["no such group"]}),
        json!({"name": 5, "display_name": "x", "email": "x@a.com"}),
    ] {
        let r = admin.post("users/create", body.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, 10002), "{body}");
    }
    admin.create_user("jane", json!({})).await;
    let r = admin
        .post(
            "users/create",
            json!({"name": "JANE", "display_name": "J", "email": "j@a.com"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    sim.stop().await;

    let sim = spawn_with(with_switches(&[
        ("thoughtspot.conflict_status", "409"),
        ("thoughtspot.not_found_status", "404"),
    ]))
    .await;
    let admin = Ts::new(&sim).admin().await;
    admin.create_user("jane", json!({})).await;
    let r = admin
        .post(
            "users/create",
            json!({"name": "jane", "display_name": "J", "email": "j@a.com"}),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = admin
        .call(
            "users/{user_identifier}/update",
            Some("ghost"),
            json!({"display_name": "G"}),
        )
        .await;
    assert_eq!(r.status, 404);
    sim.stop().await;
}

#[tokio::test]
async fn user_search_pages_with_record_offset_and_size_default_10() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    for i in 0..14 {
        admin.create_user(&format!("user{i:02}"), json!({})).await;
    }
    let all = admin.post("users/search", json!({})).await.json();
    assert_eq!(
        all.as_array().unwrap().len(),
        10,
        "record_size defaults to 10"
    );
    let r = admin
        .post(
            "users/search",
            json!({"record_offset": 10, "record_size": 10}),
        )
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    let r = admin.post("users/search", json!({"record_size": -1})).await;
    assert_eq!(r.json().as_array().unwrap().len(), 15);
    let r = admin
        .post(
            "users/search",
            json!({"name_pattern": "USER1%", "record_size": -1, "sort_options": {"field_name": "NAME", "order": "DESC"}}),
        )
        .await;
    let got: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["user13", "user12", "user11", "user10"]);
    let r = admin
        .post("users/search", json!({"record_offset": -1}))
        .await;
    assert_eq!(r.status, 400);
    let r = admin
        .post("users/search", json!({"record_size": "ten"}))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    sim.stop().await;
}

#[tokio::test]
async fn a_search_miss_is_empty_or_an_error_by_switch() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    let r = admin
        .post("users/search", json!({"user_identifier": "ghost"}))
        .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!([])));
    let r = admin
        .post("groups/search", json!({"group_identifier": "ghost"}))
        .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!([])));
    sim.stop().await;
    let sim = spawn_with(with_switches(&[("thoughtspot.search_miss", "error")])).await;
    let admin = Ts::new(&sim).admin().await;
    let r = admin
        .post("users/search", json!({"user_identifier": "ghost"}))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    let r = admin
        .post("groups/search", json!({"group_identifier": "ghost"}))
        .await;
    assert_eq!(r.status, 400);
    sim.stop().await;
}

#[tokio::test]
async fn user_update_group_lists_default_to_replace() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    for g in ["A", "B", "C"] {
        admin.create_group(g, json!({})).await;
    }
    admin
        .create_user("jane", json!({"group_identifiers": ["A", "B"]}))
        .await;
    let groups = |u: Value| names(&u["user_groups"]);
    assert_eq!(groups(admin.user("jane").await), ["A", "All", "B"]);
    let upd = |body: Value| {
        let admin = admin.clone();
        async move {
            let r = admin
                .call("users/{user_identifier}/update", Some("jane"), body)
                .await;
            assert_eq!(r.status, 204, "{}", r.body);
        }
    };
    upd(json!({"operation": "ADD", "group_identifiers": ["C"]})).await;
    assert_eq!(groups(admin.user("jane").await), ["A", "All", "B", "C"]);
    upd(json!({"operation": "REMOVE", "group_identifiers": ["A"]})).await;
    assert_eq!(groups(admin.user("jane").await), ["All", "B", "C"]);
    // No operation: the list replaces the whole set (All stays: it is the Org's) [B.4].
    upd(json!({"group_identifiers": ["A"]})).await;
    assert_eq!(groups(admin.user("jane").await), ["A", "All"]);
    let r = admin
        .call(
            "users/{user_identifier}/update",
            Some("jane"),
            json!({"operation": "MERGE", "group_identifiers": ["A"]}),
        )
        .await;
    assert_eq!(r.status, 400);
    sim.stop().await;
}

#[tokio::test]
async fn account_status_lifecycle_suspends_and_revokes() {
    let sim = spawn().await;
    let ts = Ts::new(&sim);
    let admin = ts.admin().await;
    admin
        .create_user("jane", json!({"password": "pw-jane-1"}))
        .await;
    let jane = ts
        .login_with(json!({"username": "jane", "password": "pw-jane-1"}))
        .await;
    assert_eq!(jane.post("users/search", json!({})).await.status, 200);
    // Okta-style deprovisioning: SUSPENDED ends sessions and revokes tokens [B.4].
    let r = admin
        .call(
            "users/{user_identifier}/update",
            Some("jane"),
            json!({"account_status": "SUSPENDED"}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(jane.post("users/search", json!({})).await.status, 401);
    let r = ts
        .post(
            "auth/token/full",
            json!({"username": "jane", "password": "pw-jane-1"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (403, 10023));
    let r = admin
        .post("users/search", json!({"account_status": "SUSPENDED"}))
        .await;
    assert_eq!(names(&r.json()), ["jane"]);
    admin
        .call(
            "users/{user_identifier}/update",
            Some("jane"),
            json!({"account_status": "ACTIVE"}),
        )
        .await;
    let jane = ts
        .login_with(json!({"username": "jane", "password": "pw-jane-1"}))
        .await;
    assert_eq!(jane.post("users/search", json!({})).await.status, 200);
    // Deactivate → INACTIVE plus an activation link; activate with its token → ACTIVE.
    let r = admin
        .post(
            "users/deactivate",
            json!({"user_identifier": "jane", "base_url": "https://acme.thoughtspot.cloud"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let link = r.json()["activation_link"].as_str().unwrap().to_string();
    assert!(link.starts_with("https://acme.thoughtspot.cloud/"));
    assert_eq!(admin.user("jane").await["account_status"], "INACTIVE");
    let auth_token = link.rsplit("auth_token=").next().unwrap().to_string();
    let r = admin
        .post(
            "users/activate",
            json!({"user_identifier": "jane", "auth_token": "bad", "password": "pw-2"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = admin
        .post(
            "users/activate",
            json!({"user_identifier": "jane", "auth_token": auth_token, "password": "pw-jane-2"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["account_status"], "ACTIVE");
    ts.login_with(json!({"username": "jane", "password": "pw-jane-2"}))
        .await;
    sim.stop().await;
}

#[tokio::test]
async fn writes_need_admin_privileges() {
    let sim = spawn().await;
    let ts = Ts::new(&sim);
    let admin = ts.admin().await;
    admin.create_user("jane", json!({"password": "pw"})).await;
    let jane = ts
        .login_with(json!({"username": "jane", "password": "pw"}))
        .await;
    let r = jane
        .post(
            "users/create",
            json!({"name": "x", "display_name": "x", "email": "x@a.com"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (403, 10023));
    let r = jane
        .post("groups/create", json!({"name": "G", "display_name": "G"}))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(jane.post("orgs/search", json!({})).await.status, 403);
    // A group granting USER_ADMINISTRATION lets her manage users.
    admin
        .create_group(
            "Admins-lite",
            json!({"privileges": ["USER_ADMINISTRATION"], "user_identifiers": ["jane"]}),
        )
        .await;
    let r = jane
        .post(
            "users/create",
            json!({"name": "x", "display_name": "x", "email": "x@a.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Groups

#[tokio::test]
async fn group_membership_operation_defaults_to_replace() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    for u in ["ann", "bob", "cy"] {
        admin.create_user(u, json!({})).await;
    }
    let g = admin
        .create_group(
            "Finance",
            json!({"user_identifiers": ["ann"], "description": "Money"}),
        )
        .await;
    assert_eq!(names(&g["users"]), ["ann"]);
    assert_eq!(g["type"], "LOCAL_GROUP");
    assert_eq!(g["visibility"], "SHARABLE");
    let upd = |body: Value| {
        let admin = admin.clone();
        async move {
            let r = admin
                .call("groups/{group_identifier}/update", Some("Finance"), body)
                .await;
            assert_eq!(r.status, 204, "{}", r.body);
        }
    };
    upd(json!({"operation": "ADD", "user_identifiers": ["bob"]})).await;
    assert_eq!(admin.group_members("Finance").await, ["ann", "bob"]);
    upd(json!({"operation": "REMOVE", "user_identifiers": ["ann"]})).await;
    assert_eq!(admin.group_members("Finance").await, ["bob"]);
    // The quirk: without `operation` the list *replaces* the membership [B.5].
    upd(json!({"user_identifiers": ["cy"]})).await;
    assert_eq!(admin.group_members("Finance").await, ["cy"]);
    // Membership is visible from the user side too.
    assert!(names(&admin.user("cy").await["user_groups"]).contains(&"Finance".to_string()));
    let r = admin
        .post("users/search", json!({"group_identifiers": ["Finance"]}))
        .await;
    assert_eq!(names(&r.json()), ["cy"]);
    let r = admin
        .call(
            "groups/{group_identifier}/update",
            Some("Finance"),
            json!({"user_identifiers": ["ghost"]}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    sim.stop().await;
}

#[tokio::test]
async fn groups_create_search_update_delete() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    let analyst = admin
        .post("roles/search", json!({"role_identifiers": ["Analyst"]}))
        .await
        .json();
    let role_id = analyst[0]["id"].as_str().unwrap().to_string();
    let g = admin
        .create_group(
            "Sales",
            json!({"display_name": "Sales Team", "privileges": ["DATADOWNLOADING"], "role_identifiers": [role_id], "sub_group_identifiers": ["Administrator"]}),
        )
        .await;
    assert_eq!(names(&g["roles"]), ["Analyst"]);
    assert_eq!(names(&g["sub_groups"]), ["Administrator"]);
    let id = g["id"].as_str().unwrap().to_string();
    // Duplicate names (case-insensitive) are refused; bad privileges too.
    let r = admin
        .post(
            "groups/create",
            json!({"name": "SALES", "display_name": "x"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    let r = admin
        .post(
            "groups/create",
            json!({"name": "X", "display_name": "x", "privileges": ["GODMODE"]}),
        )
        .await;
    assert_eq!(r.status, 400);
    // Search by name_pattern, display name, role, include_users=false.
    let r = admin
        .post(
            "groups/search",
            json!({"name_pattern": "%ale%", "include_users": false}),
        )
        .await;
    let j = r.json();
    assert_eq!(names(&j), ["Sales"]);
    assert!(j[0].get("users").is_none());
    let r = admin
        .post("groups/search", json!({"role_identifiers": ["Analyst"]}))
        .await;
    assert_eq!(names(&r.json()), ["Sales"]);
    let r = admin
        .post("groups/search", json!({"display_name": "Sales Team"}))
        .await;
    assert_eq!(names(&r.json()), ["Sales"]);
    // A group's members inherit its privileges through sub-groups: tsadmin (Administrator,
    // a sub-group of Sales) inherits Sales.
    let u = admin.user("tsadmin").await;
    assert!(names(&u["user_inherited_groups"]).contains(&"Sales".to_string()));
    let r = admin
        .call(
            "groups/{group_identifier}/update",
            Some(&id),
            json!({"name": "Sales EMEA"}),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = admin
        .post("groups/search", json!({"group_identifier": "sales emea"}))
        .await;
    assert_eq!(r.json()[0]["id"], id.as_str());
    // The All group is a system group.
    let r = admin
        .call("groups/{group_identifier}/delete", Some("All"), json!({}))
        .await;
    assert_eq!(r.status, 400);
    let r = admin
        .call("groups/{group_identifier}/delete", Some(&id), json!({}))
        .await;
    assert_eq!(r.status, 204);
    let r = admin
        .call("groups/{group_identifier}/delete", Some(&id), json!({}))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Orgs and roles

#[tokio::test]
async fn tokens_are_scoped_to_their_org() {
    let sim = spawn().await;
    let ts = Ts::new(&sim);
    let admin = ts.admin().await;
    let r = admin
        .post(
            "orgs/create",
            json!({"name": "sales-org", "description": "Sales"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let org_id = r.json()["id"].as_i64().unwrap();
    let sales = ts
        .login_with(
            json!({"username": "tsadmin", "secret_key": "simulator-secret-key", "org_id": org_id}),
        )
        .await;
    let r = sales
        .post(
            "auth/token/validate",
            json!({"token": sales.token.clone().unwrap()}),
        )
        .await;
    assert_eq!(r.json()["scope"]["org_id"], org_id);
    // A group made with the Sales token lives in Sales only [B.5].
    sales.create_group("Reps", json!({})).await;
    assert_eq!(
        names(&sales.post("groups/search", json!({})).await.json()),
        ["All", "Reps"]
    );
    assert_eq!(
        names(&admin.post("groups/search", json!({})).await.json()),
        ["Administrator", "All"]
    );
    // A user created with the Sales token belongs to Sales, not Primary.
    let u = sales
        .create_user("rep1", json!({"group_identifiers": ["Reps"]}))
        .await;
    assert_eq!(u["orgs"], json!([{"id": org_id, "name": "sales-org"}]));
    assert_eq!(u["current_org"], json!({"id": org_id, "name": "sales-org"}));
    assert_eq!(
        admin
            .post("users/search", json!({"user_identifier": "rep1"}))
            .await
            .json(),
        json!([])
    );
    let r = admin
        .post(
            "users/search",
            json!({"org_identifiers": [org_id.to_string()]}),
        )
        .await;
    assert_eq!(names(&r.json()), ["rep1"]);
    // A user can be added to another Org with org_identifiers (ADD).
    let r = admin
        .call(
            "users/{user_identifier}/update",
            Some("rep1"),
            json!({"operation": "ADD", "org_identifiers": ["0"]}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        names(
            &admin
                .post("users/search", json!({"user_identifier": "rep1"}))
                .await
                .json()
        ),
        ["rep1"]
    );
    // Orgs: search, filters; the Primary Org cannot be deleted.
    let r = admin
        .post("orgs/search", json!({"org_identifier": "sales-org"}))
        .await;
    assert_eq!(r.json()[0]["id"], org_id);
    assert_eq!(
        sales.post("orgs/search", json!({})).await.status,
        403,
        "not from a non-Primary Org"
    );
    let r = admin
        .call("orgs/{org_identifier}/delete", Some("0"), json!({}))
        .await;
    assert_eq!(r.status, 400);
    let r = admin
        .call(
            "orgs/{org_identifier}/delete",
            Some(&org_id.to_string()),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(sales.post("users/search", json!({})).await.status, 401);
    sim.stop().await;
}

#[tokio::test]
async fn roles_search_create_update_delete() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    let r = admin
        .post("roles/create", json!({"name": "Data Steward", "description": "Curates", "privileges": ["DATAMANAGEMENT"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = admin
        .post(
            "roles/create",
            json!({"name": "Bad", "privileges": ["ADMINISTRATION"]}),
        )
        .await;
    assert_eq!(r.status, 400, "ADMINISTRATION comes only through groups");
    let r = admin
        .post("roles/create", json!({"name": "data steward"}))
        .await;
    assert_eq!(r.status, 400);
    admin
        .create_group("Stewards", json!({"role_identifiers": ["Data Steward"]}))
        .await;
    let r = admin
        .post("roles/search", json!({"group_identifiers": ["Stewards"]}))
        .await;
    let j = r.json();
    assert_eq!(names(&j), ["Data Steward"]);
    assert_eq!(j[0]["groups_assigned_count"], 1);
    let r = admin
        .call(
            "roles/{role_identifier}/update",
            Some(&id),
            json!({"name": "Data Curator", "privileges": ["DATAMANAGEMENT", "DATADOWNLOADING"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "Data Curator");
    let r = admin
        .call(
            "roles/{role_identifier}/update",
            Some("Super Admin"),
            json!({"name": "Hacked"}),
        )
        .await;
    assert_eq!(r.status, 400, "system roles are read-only");
    let r = admin
        .call("roles/{role_identifier}/delete", Some(&id), json!({}))
        .await;
    assert_eq!(r.status, 204);
    let g = admin
        .post("groups/search", json!({"group_identifier": "Stewards"}))
        .await
        .json();
    assert_eq!(g[0]["roles"], json!([]));
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input, rate limit, faults

#[tokio::test]
async fn bad_media_type_and_malformed_json() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    let url = format!("{}{API}/users/search", admin.base);
    let r = admin
        .http
        .post(&url)
        .bearer_auth(admin.token.as_ref().unwrap())
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    check_against_spec("users/search", "post", 415, &r.text().await.unwrap());
    for body in ["{not json", "[1,2]", "\"str\""] {
        let r = admin
            .http
            .post(&url)
            .bearer_auth(admin.token.as_ref().unwrap())
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let text = r.text().await.unwrap();
        check_against_spec("users/search", "post", 400, &text);
    }
    // Wrong method and unknown path: still the vendor's error body, no panic.
    let r = admin.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = admin
        .http
        .post(format!("{}{API}/nothing", admin.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_100_per_second_plus_10_burst_then_429() {
    let sim = spawn().await;
    let admin = Ts::new(&sim).admin().await;
    // 300 requests at once from one client: far more than 100/s.
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            admin.post("orgs/search", json!({})).await
        }));
    }
    let (mut ok, mut limited, mut last) = (0, 0, None);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                last = Some(r);
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(limited > 0, "ok={ok}");
    assert!(ok >= 110, "100 + a burst of 10 pass: ok={ok}");
    assert!(last.unwrap().json()["error"]["message"]["debug"]["code"].is_number());
    sim.stop().await;
    // Switched off.
    let sim = spawn_with(with_switches(&[("thoughtspot.rate_limit_rps", "0")])).await;
    let admin = Ts::new(&sim).admin().await;
    for _ in 0..200 {
        assert_eq!(admin.post("orgs/search", json!({})).await.status, 200);
    }
    sim.stop().await;
}

#[tokio::test]
async fn injected_faults_use_the_vendor_bodies() {
    let sim = spawn_with(SimOptions {
        error_rate: 1.0,
        ..SimOptions::default()
    })
    .await;
    let r = Ts::new(&sim)
        .post(
            "auth/token/full",
            json!({"username": "tsadmin", "password": "admin"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (500, 10000));
    sim.stop().await;
    let sim = spawn_with(SimOptions {
        throttle_rps: Some(1.0),
        ..SimOptions::default()
    })
    .await;
    let ts = Ts::new(&sim);
    let mut saw = false;
    for _ in 0..5 {
        let r = ts
            .post(
                "auth/token/full",
                json!({"username": "tsadmin", "password": "admin"}),
            )
            .await;
        if r.status == 429 {
            saw = true;
        }
    }
    assert!(saw);
    sim.stop().await;
}

#[test]
fn the_spec_check_catches_drift() {
    let user = json!({"id": "1", "name": "a", "display_name": "A", "visibility": "SHARABLE"});
    check_against_spec("users/create", "post", 200, &user.to_string());
    let mut extra = user.clone();
    extra["nickname"] = json!("x");
    let mut wrong_type = user.clone();
    wrong_type["orgs"] = json!([{"id": "0", "name": "Primary"}]);
    let mut missing = user.clone();
    missing.as_object_mut().unwrap().remove("visibility");
    let mut bad_enum = user;
    bad_enum["account_status"] = json!("DISABLED");
    for bad in [extra, wrong_type, missing, bad_enum] {
        let body = bad.to_string();
        let r = std::panic::catch_unwind(|| check_against_spec("users/create", "post", 200, &body));
        assert!(r.is_err(), "accepted {body}");
    }
    // A 204 must have no body.
    let r = std::panic::catch_unwind(|| {
        check_against_spec("users/{user_identifier}/update", "post", 204, "{}")
    });
    assert!(r.is_err());
}

#[tokio::test]
async fn other_orgs_users_are_hidden_from_an_org_scoped_token() {
    let sim = spawn().await;
    let ts = Ts::new(&sim);
    let admin = ts.admin().await;
    let org = admin
        .post("orgs/create", json!({"name": "o1"}))
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    admin.create_user("primary-only", json!({})).await;
    let o1 = ts
        .login_with(json!({"username": "tsadmin", "password": "admin", "org_id": org}))
        .await;
    let r = o1
        .post(
            "users/search",
            json!({"org_identifiers": ["0"], "record_size": -1}),
        )
        .await;
    assert_eq!(r.json(), json!([]));
    let r = o1
        .call(
            "users/{user_identifier}/update",
            Some("primary-only"),
            json!({"display_name": "x"}),
        )
        .await;
    assert_eq!(r.status, 400, "not visible from o1");
    // name_pattern with many wildcards stays fast and correct.
    let r = admin
        .post(
            "users/search",
            json!({"name_pattern": "%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%z"}),
        )
        .await;
    assert_eq!(r.json(), json!([]));
    let r = admin
        .post("users/search", json!({"name_pattern": "pri%only"}))
        .await;
    assert_eq!(names(&r.json()), ["primary-only"]);
    sim.stop().await;
}

#[tokio::test]
async fn the_same_seed_gives_the_same_ids() {
    let ids = |seed| async move {
        let sim = spawn_with(SimOptions {
            seed: Some(seed),
            ..SimOptions::default()
        })
        .await;
        let admin = Ts::new(&sim).admin().await;
        let u = admin.create_user("jane", json!({})).await;
        let g = admin.create_group("G", json!({})).await;
        sim.stop().await;
        (u["id"].clone(), g["id"].clone(), admin.token)
    };
    let a = ids(7).await;
    assert_eq!(a, ids(7).await);
    assert_ne!(a.0, ids(8).await.0);
}

#[tokio::test]
async fn a_user_agent_is_required_unless_switched_off() {
    let body = json!({"username": "tsadmin", "password": "admin"});
    let sim = spawn().await;
    let url = format!("{}{API}/auth/token/full", sim.base_url());
    let r = Client::new().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    check_against_spec("auth/token/full", "post", 400, &text);
    assert!(text.contains("User-Agent"));
    sim.stop().await;
    let sim = spawn_with(with_switches(&[(
        "thoughtspot.require_user_agent",
        "false",
    )]))
    .await;
    let url = format!("{}{API}/auth/token/full", sim.base_url());
    let r = Client::new().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn garbage_in_is_a_4xx_never_a_5xx() {
    let sim = spawn_with(with_switches(&[("thoughtspot.rate_limit_rps", "0")])).await;
    let admin = Ts::new(&sim).admin().await;
    admin.create_user("jane", json!({})).await;
    admin.create_group("G", json!({})).await;
    let bodies = [
        json!({"record_size": -5}),
        json!({"record_offset": "x"}),
        json!({"record_size": 1e300}),
        json!({"record_size": 18446744073709551615u64}),
        json!({"operation": 1}),
        json!({"user_identifiers": [null]}),
        json!({"group_identifiers": {"a": 1}}),
        json!({"org_identifiers": ["99999999999999999999"]}),
        json!({"sort_options": "NAME"}),
        json!({"sort_options": {"field_name": "COLOR"}}),
        json!({"name": "", "display_name": "", "email": ""}),
        json!({"validity_time_in_sec": 9223372036854775807i64, "username": "tsadmin", "password": "admin"}),
        json!({"privileges": ["NOPE"]}),
        json!({"account_status": "ZOMBIE"}),
    ];
    let targets = [
        ("users/search", None),
        ("users/create", None),
        ("users/{user_identifier}/update", Some("jane")),
        ("groups/search", None),
        ("groups/create", None),
        ("groups/{group_identifier}/update", Some("G")),
        ("orgs/search", None),
        ("roles/search", None),
        ("roles/create", None),
        ("auth/token/full", None),
    ];
    for (path, id) in targets {
        for b in &bodies {
            let r = admin.call(path, id, b.clone()).await;
            assert!(
                r.status.as_u16() < 500,
                "{path} {b}: {} {}",
                r.status,
                r.body
            );
        }
    }
    sim.stop().await;
}

#[tokio::test]
async fn retry_after_is_off_by_default_and_a_switch() {
    for (switch, want) in [(None, false), (Some("true"), true)] {
        let mut opts = SimOptions {
            throttle_rps: Some(1.0),
            ..SimOptions::default()
        };
        if let Some(v) = switch {
            opts.switches
                .push(("thoughtspot.retry_after".into(), v.into()));
        }
        let sim = spawn_with(opts).await;
        let http = Client::builder().user_agent("t").build().unwrap();
        let mut seen = None;
        for _ in 0..5 {
            let r = http
                .post(format!("{}{API}/orgs/search", sim.base_url()))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            if r.status() == 429 {
                seen = Some(r.headers().contains_key("retry-after"));
            }
        }
        assert_eq!(seen, Some(want));
        sim.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Template variables

/// `template/variables/search` with METADATA_AND_VALUES for one variable: its `values`.
async fn var_values(ts: &Ts, name: &str, scope: Value) -> Vec<Value> {
    let mut body = json!({
        "variable_details": [{"identifier": name}],
        "response_content": "METADATA_AND_VALUES",
    });
    if !scope.is_null() {
        body["value_scope"] = scope;
    }
    let r = ts.post("template/variables/search", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j.as_array().unwrap().len(), 1, "{j}");
    j[0]["values"].as_array().unwrap().clone()
}

async fn put_values(ts: &Ts, var: &str, body: Value) -> Resp {
    ts.call(
        "template/variables/{identifier}/update-values",
        Some(var),
        body,
    )
    .await
}

fn no_limit() -> SimOptions {
    with_switches(&[("thoughtspot.rate_limit_rps", "0")])
}

#[tokio::test]
async fn variables_create_and_search_with_the_seeded_region() {
    let sim = spawn_with(no_limit()).await;
    let admin = Ts::new(&sim).admin().await;
    // The seeded formula variable, METADATA only: `values` is null.
    let r = admin.post("template/variables/search", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j.as_array().unwrap().len(), 1);
    assert_eq!(j[0]["name"], "region");
    assert_eq!(j[0]["variable_type"], "FORMULA_VARIABLE");
    assert_eq!(j[0]["sensitive"], false);
    assert_eq!(j[0]["values"], Value::Null);
    assert_eq!(j[0]["org"], json!({"id": 0, "name": "Primary"}));

    let r = admin
        .post(
            "template/variables/create",
            json!({"type": "FORMULA_VARIABLE", "name": "country_var", "is_sensitive": false, "data_type": "VARCHAR"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["name"], "country_var");
    assert_eq!(v["values"], json!([]));
    let id = v["id"].as_str().unwrap().to_string();
    // Names are unique across the cluster, whatever the case.
    let r = admin
        .post(
            "template/variables/create",
            json!({"type": "TABLE_MAPPING", "name": "COUNTRY_VAR"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    for bad in [
        json!({"type": "FORMULA_VARIABLE", "name": "1abc"}),
        json!({"type": "FORMULA_VARIABLE", "name": "a-b"}),
        json!({"type": "NOPE", "name": "abc"}),
        json!({"name": "abc"}),
        json!({"type": "FORMULA_VARIABLE"}),
        json!({"type": "FORMULA_VARIABLE", "name": "abc", "data_type": "BOOLEAN"}),
    ] {
        let r = admin.post("template/variables/create", bad.clone()).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, 10002), "{bad}");
    }
    admin
        .post(
            "template/variables/create",
            json!({"type": "TABLE_MAPPING", "name": "schema_var", "is_sensitive": true}),
        )
        .await;
    // Filters: identifier (GUID or name), type, name_pattern; items OR-ed.
    let found = |r: Resp| names(&r.json());
    let r = admin
        .post(
            "template/variables/search",
            json!({"variable_details": [{"identifier": id}]}),
        )
        .await;
    assert_eq!(found(r), ["country_var"]);
    let r = admin
        .post(
            "template/variables/search",
            json!({"variable_details": [{"type": "TABLE_MAPPING"}, {"name_pattern": "REG%"}]}),
        )
        .await;
    assert_eq!(found(r), ["region", "schema_var"]);
    let r = admin
        .post(
            "template/variables/search",
            json!({"variable_details": [{"type": "FORMULA_VARIABLE", "name_pattern": "%var"}]}),
        )
        .await;
    assert_eq!(found(r), ["country_var"]);
    let r = admin
        .post(
            "template/variables/search",
            json!({"variable_details": [{"identifier": "ghost"}]}),
        )
        .await;
    assert_eq!(r.json(), json!([]));
    // Rename, then delete (one by path, the rest in a batch).
    let r = admin
        .call(
            "template/variables/{identifier}/update",
            Some("country_var"),
            json!({"name": "nation_var"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = admin
        .call(
            "template/variables/{identifier}/update",
            Some("nation_var"),
            json!({"name": "Region"}),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    let r = admin
        .call(
            "template/variables/{identifier}/delete",
            Some(&id),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = admin
        .post(
            "template/variables/delete",
            json!({"identifiers": ["schema_var", "ghost"]}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, 10002),
        "all or nothing"
    );
    let r = admin
        .post(
            "template/variables/delete",
            json!({"identifiers": ["schema_var"]}),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = admin.post("template/variables/search", json!({})).await;
    assert_eq!(found(r), ["region"]);
    sim.stop().await;
}

#[tokio::test]
async fn variable_search_pages_with_record_offset_and_size_default_10() {
    let sim = spawn_with(no_limit()).await;
    let admin = Ts::new(&sim).admin().await;
    for i in 0..12 {
        let r = admin
            .post(
                "template/variables/create",
                json!({"type": "FORMULA_VARIABLE", "name": format!("v{i:02}"), "data_type": "INT32"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let page = |body: Value| {
        let admin = admin.clone();
        async move {
            let r = admin.post("template/variables/search", body).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let first = page(json!({})).await;
    assert_eq!(first.len(), 10, "record_size defaults to 10");
    assert_eq!(first[0], "region", "creation order");
    let rest = page(json!({"record_offset": 10, "record_size": 10})).await;
    assert_eq!(rest, ["v09", "v10", "v11"]);
    assert_eq!(page(json!({"record_size": -1})).await.len(), 13);
    assert_eq!(
        page(json!({"record_offset": 2, "record_size": 2})).await,
        ["v01", "v02"]
    );
    let r = admin
        .post("template/variables/search", json!({"record_size": -10}))
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    sim.stop().await;
}

#[tokio::test]
async fn variable_values_replace_add_remove_reset_per_user() {
    let sim = spawn_with(no_limit()).await;
    let admin = Ts::new(&sim).admin().await;
    let jane = admin.create_user("jane", json!({})).await;
    let jane_id = jane["id"].as_str().unwrap().to_string();
    admin.create_user("joe", json!({})).await;
    let ok = |r: Resp| assert_eq!(r.status, 204, "{}", r.body);

    // REPLACE for jane by name: stored per user, shown by name.
    ok(put_values(
        &admin,
        "region",
        json!({"operation": "REPLACE", "variable_assignment": [
            {"assigned_values": ["EMEA", "APAC"], "principal_type": "USER", "principal_identifier": "jane"}]}),
    )
    .await);
    let vals = var_values(&admin, "region", Value::Null).await;
    assert_eq!(
        vals,
        [
            json!({"value_list": ["EMEA", "APAC"], "org_identifier": "Primary", "principal_type": "USER", "principal_identifier": "jane"})
        ]
    );
    // The same scope by GUID (and the Org by id): REPLACE replaces that one value.
    ok(put_values(
        &admin,
        "region",
        json!({"operation": "REPLACE", "variable_assignment": [
            {"assigned_values": ["AMER"], "org_identifier": "0", "principal_type": "USER", "principal_identifier": jane_id}]}),
    )
    .await);
    let vals = var_values(&admin, "region", Value::Null).await;
    assert_eq!(vals.len(), 1, "{vals:?}");
    assert_eq!(vals[0]["value_list"], json!(["AMER"]));
    // Resending the same values is a no-op 204.
    for _ in 0..2 {
        ok(put_values(
            &admin,
            "region",
            json!({"operation": "REPLACE", "variable_assignment": [
                {"assigned_values": ["AMER"], "principal_type": "USER", "principal_identifier": "JANE"}]}),
        )
        .await);
    }
    assert_eq!(var_values(&admin, "region", Value::Null).await, vals);
    // ADD appends to a list variable (no duplicate); principal_type may be left out.
    ok(put_values(
        &admin,
        "region",
        json!({"operation": "ADD", "variable_assignment": [
            {"assigned_values": ["AMER", "EMEA"], "principal_identifier": "jane"},
            {"assigned_values": ["APAC"], "principal_type": "USER", "principal_identifier": "joe"}]}),
    )
    .await);
    // An Org-wide value, priority kept.
    ok(put_values(
        &admin,
        "region",
        json!({"operation": "ADD", "variable_assignment": [
            {"assigned_values": ["GLOBAL"], "org_identifier": "Primary", "priority": 1}]}),
    )
    .await);
    let vals = var_values(&admin, "region", Value::Null).await;
    assert_eq!(
        vals,
        [
            json!({"value_list": ["AMER", "EMEA"], "org_identifier": "Primary", "principal_type": "USER", "principal_identifier": "jane"}),
            json!({"value_list": ["APAC"], "org_identifier": "Primary", "principal_type": "USER", "principal_identifier": "joe"}),
            json!({"value_list": ["GLOBAL"], "org_identifier": "Primary", "priority": 1}),
        ]
    );
    // value_scope filters the values: principal by name or GUID, OR-ed across items.
    let by_guid = var_values(&admin, "region", json!([{"principal_identifier": jane_id}])).await;
    let by_name = var_values(
        &admin,
        "region",
        json!([{"principal_type": "USER", "principal_identifier": "Jane"}]),
    )
    .await;
    assert_eq!(by_guid, by_name);
    assert_eq!(by_guid.len(), 1);
    let two = var_values(
        &admin,
        "region",
        json!([{"principal_identifier": "joe"}, {"principal_identifier": "jane"}]),
    )
    .await;
    assert_eq!(two.len(), 2);
    assert_eq!(
        var_values(&admin, "region", json!([{"org_identifier": "Primary"}]))
            .await
            .len(),
        3
    );
    assert_eq!(
        var_values(&admin, "region", json!([{"principal_identifier": "ghost"}])).await,
        Vec::<Value>::new()
    );
    // REMOVE takes matching values out; with none given it clears the scope.
    ok(put_values(
        &admin,
        "region",
        json!({"operation": "REMOVE", "variable_assignment": [
            {"assigned_values": ["AMER", "NOPE"], "principal_type": "USER", "principal_identifier": "jane"}]}),
    )
    .await);
    let jane_vals = var_values(&admin, "region", json!([{"principal_identifier": "jane"}])).await;
    assert_eq!(jane_vals[0]["value_list"], json!(["EMEA"]));
    ok(put_values(
        &admin,
        "region",
        json!({"operation": "REMOVE", "variable_assignment": [
            {"assigned_values": [], "principal_type": "USER", "principal_identifier": jane_id}]}),
    )
    .await);
    assert!(
        var_values(&admin, "region", json!([{"principal_identifier": "jane"}]))
            .await
            .is_empty()
    );
    // Deleting a user drops their values.
    let r = admin
        .call("users/{user_identifier}/delete", Some("joe"), json!({}))
        .await;
    assert_eq!(r.status, 204);
    let vals = var_values(&admin, "region", Value::Null).await;
    assert_eq!(vals.len(), 1);
    assert_eq!(vals[0]["value_list"], json!(["GLOBAL"]));
    // RESET drops every value; the scope is ignored.
    ok(put_values(
        &admin,
        "region",
        json!({"operation": "RESET", "variable_assignment": [
            {"assigned_values": [], "principal_identifier": "nobody-at-all"}]}),
    )
    .await);
    assert!(var_values(&admin, "region", Value::Null).await.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn variable_value_errors_are_400_10002() {
    let sim = spawn_with(no_limit()).await;
    let ts = Ts::new(&sim);
    let admin = ts.admin().await;
    admin.create_user("jane", json!({"password": "pw"})).await;
    let bad = |who: Value| json!({"operation": "REPLACE", "variable_assignment": [who]});
    // An unknown variable: the not-found error.
    let r = put_values(&admin, "ghost", bad(json!({"assigned_values": ["x"]}))).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    for who in [
        json!({"assigned_values": ["x"], "principal_type": "USER", "principal_identifier": "ghost"}),
        json!({"assigned_values": ["x"], "principal_identifier": "ghost"}),
        json!({"assigned_values": ["x"], "principal_type": "USER_GROUP", "principal_identifier": "jane"}),
        json!({"assigned_values": ["x"], "principal_type": "USER"}),
        json!({"assigned_values": ["x"], "org_identifier": "no-such-org"}),
        json!({"assigned_values": ["x"], "org_identifier": "42"}),
        json!({"principal_identifier": "jane"}),
        json!({"assigned_values": "x"}),
    ] {
        let r = put_values(&admin, "region", bad(who.clone())).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, 10002), "{who}");
    }
    let r = put_values(
        &admin,
        "region",
        json!({"operation": "MERGE", "variable_assignment": []}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = put_values(&admin, "region", json!({})).await;
    assert_eq!(r.status, 400);
    // Nothing was written by the failures.
    assert!(var_values(&admin, "region", Value::Null).await.is_empty());
    // Values must fit the data type; a single-valued kind takes one value.
    admin
        .post(
            "template/variables/create",
            json!({"type": "FORMULA_VARIABLE", "name": "cap", "data_type": "INT32"}),
        )
        .await;
    let r = put_values(&admin, "cap", bad(json!({"assigned_values": ["12.5"]}))).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    let r = put_values(
        &admin,
        "cap",
        bad(json!({"assigned_values": ["12", "TS_WILDCARD_ALL"]})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    admin
        .post(
            "template/variables/create",
            json!({"type": "CONNECTION_PROPERTY", "name": "wh_var"}),
        )
        .await;
    let r = put_values(
        &admin,
        "wh_var",
        bad(json!({"assigned_values": ["a", "b"]})),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    let r = put_values(&admin, "wh_var", bad(json!({"assigned_values": ["WH_A"]}))).await;
    assert_eq!(r.status, 204);
    let r = put_values(
        &admin,
        "wh_var",
        json!({"operation": "ADD", "variable_assignment": [{"assigned_values": ["WH_B"]}]}),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        var_values(&admin, "wh_var", Value::Null).await,
        [json!({"value": "WH_B", "org_identifier": "Primary"})],
        "ADD on a single-valued variable replaces"
    );
    // Without ADMINISTRATION or CAN_MANAGE_VARIABLES: 403; with CAN_MANAGE_VARIABLES, formula
    // variables only.
    let jane = ts
        .login_with(json!({"username": "jane", "password": "pw"}))
        .await;
    let r = jane.post("template/variables/search", json!({})).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, 10023));
    let r = put_values(&jane, "region", bad(json!({"assigned_values": ["x"]}))).await;
    assert_eq!(r.status, 403);
    admin
        .create_group(
            "VarAdmins",
            json!({"privileges": ["CAN_MANAGE_VARIABLES"], "user_identifiers": ["jane"]}),
        )
        .await;
    let r = jane.post("template/variables/search", json!({})).await;
    assert_eq!(names(&r.json()), ["cap", "region"]);
    let r = put_values(&jane, "region", bad(json!({"assigned_values": ["x"]}))).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = put_values(&jane, "wh_var", bad(json!({"assigned_values": ["x"]}))).await;
    assert_eq!(r.status, 403);
    sim.stop().await;
}

#[tokio::test]
async fn deprecated_batch_update_values_and_org_scopes() {
    let sim = spawn_with(no_limit()).await;
    let ts = Ts::new(&sim);
    let admin = ts.admin().await;
    let org = admin
        .post("orgs/create", json!({"name": "OrgA"}))
        .await
        .json();
    let org_id = org["id"].as_i64().unwrap();
    admin
        .create_user("ann", json!({"org_identifiers": ["0", org_id.to_string()]}))
        .await;
    let r = admin
        .post(
            "template/variables/update-values",
            json!({
                "variable_assignment": [{"variable_identifier": "region", "variable_values": ["West"], "operation": "ADD"}],
                "variable_value_scope": [
                    {"org_identifier": "OrgA", "principal_type": "USER", "principal_identifier": "ann"},
                    {"org_identifier": "Primary", "model_identifier": "80c969e7-3a36-48b7-923e-e2fb5c3fe88f"}
                ]
            }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let vals = var_values(&admin, "region", Value::Null).await;
    assert_eq!(
        vals,
        [
            json!({"value_list": ["West"], "org_identifier": "OrgA", "principal_type": "USER", "principal_identifier": "ann"}),
            json!({"value_list": ["West"], "org_identifier": "Primary", "model_identifier": "80c969e7-3a36-48b7-923e-e2fb5c3fe88f"}),
        ]
    );
    // A token of OrgA sees the Primary Org's variable, and only OrgA's values; a value it
    // writes without org_identifier lands in OrgA; it cannot reach the Primary Org.
    let in_a = ts
        .login_with(json!({"username": "tsadmin", "password": "admin", "org_id": org_id}))
        .await;
    let vals = var_values(&in_a, "region", Value::Null).await;
    assert_eq!(vals.len(), 1);
    assert_eq!(vals[0]["org_identifier"], "OrgA");
    let r = put_values(
        &in_a,
        "region",
        json!({"operation": "REPLACE", "variable_assignment": [{"assigned_values": ["East"]}]}),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = put_values(
        &in_a,
        "region",
        json!({"operation": "REPLACE", "variable_assignment": [{"assigned_values": ["East"], "org_identifier": "Primary"}]}),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    assert_eq!(var_values(&in_a, "region", Value::Null).await.len(), 2);
    // A variable made in OrgA is OrgA's; the Primary Org's admin still sees it (cluster admin).
    let r = in_a
        .post(
            "template/variables/create",
            json!({"type": "FORMULA_VARIABLE", "name": "a_only", "data_type": "DATE"}),
        )
        .await;
    assert_eq!(r.json()["org"], json!({"id": org_id, "name": "OrgA"}));
    // The batch form rejects everything when one variable or scope is unknown.
    let r = admin
        .post(
            "template/variables/update-values",
            json!({
                "variable_assignment": [
                    {"variable_identifier": "a_only", "variable_values": ["2024-04-01"], "operation": "REPLACE"},
                    {"variable_identifier": "ghost", "variable_values": ["x"], "operation": "REPLACE"}
                ],
                "variable_value_scope": [{"org_identifier": "OrgA"}]
            }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, 10002));
    assert!(var_values(&admin, "a_only", Value::Null).await.is_empty());
    let r = admin
        .post(
            "template/variables/update-values",
            json!({"variable_assignment": [{"variable_identifier": "region", "variable_values": [], "operation": "RESET"}], "variable_value_scope": []}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(var_values(&admin, "region", Value::Null).await.is_empty());
    // Deleting the Org deletes its variables.
    let r = admin
        .call("orgs/{org_identifier}/delete", Some("OrgA"), json!({}))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = admin.post("template/variables/search", json!({})).await;
    assert_eq!(names(&r.json()), ["region"]);
    sim.stop().await;
}

#[tokio::test]
async fn group_principals_and_group_deletion() {
    let sim = spawn_with(no_limit()).await;
    let admin = Ts::new(&sim).admin().await;
    admin.create_group("Sales", json!({})).await;
    let r = put_values(
        &admin,
        "region",
        json!({"operation": "ADD", "variable_assignment": [
            {"assigned_values": ["EMEA"], "principal_type": "USER_GROUP", "principal_identifier": "sales", "priority": 5}]}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        var_values(&admin, "region", json!([{"principal_type": "USER_GROUP"}])).await,
        [
            json!({"value_list": ["EMEA"], "org_identifier": "Primary", "principal_type": "USER_GROUP", "principal_identifier": "Sales", "priority": 5})
        ]
    );
    let r = admin
        .call("groups/{group_identifier}/delete", Some("Sales"), json!({}))
        .await;
    assert_eq!(r.status, 204);
    assert!(var_values(&admin, "region", Value::Null).await.is_empty());
    sim.stop().await;
}

/// Name lookups are indexed: 20,000 users through the API take seconds, not minutes.
/// `[SIM_TS_USERS=N] cargo test --release --test sim_thoughtspot -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn twenty_thousand_users_through_the_api() {
    let sim = spawn_with(no_limit()).await;
    let admin = Ts::new(&sim).admin().await;
    let http = admin.http.clone();
    let url = format!("{}{API}/users/create", admin.base);
    let token = admin.token.clone().unwrap();
    let n: usize = std::env::var("SIM_TS_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let started = std::time::Instant::now();
    for i in 0..n {
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({"name": format!("u{i}"), "display_name": format!("U {i}"), "email": format!("u{i}@acme.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let took = started.elapsed();
    // Lookups by name, and a late page, stay fast.
    let t2 = std::time::Instant::now();
    for i in (0..n).step_by(100) {
        let r = admin
            .post("users/search", json!({"user_identifier": format!("U{i}")}))
            .await;
        assert_eq!(r.json().as_array().unwrap().len(), 1);
    }
    let r = admin
        .post(
            "users/search",
            json!({"record_offset": n - 5, "record_size": 10}),
        )
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 6);
    println!(
        "{n} users created in {:.1} s; 200 lookups and a page in {:.2} s",
        took.as_secs_f64(),
        t2.elapsed().as_secs_f64()
    );
    assert!(took.as_secs() < 60, "{took:?}");
    sim.stop().await;
}

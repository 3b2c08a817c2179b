//! Sisense's native SCIM endpoint in the simulator (`/api/scim/v2`), over real sockets: the SCIM
//! and REST views of the same state, tokens, errors, switches and faults. Every SCIM shape is an
//! UNVERIFIED design assumption (src/sim/sisense/scim.rs); these tests pin the simulator's choices.

#[path = "support/sim.rs"]
mod support;

use reqwest::{Method, StatusCode};
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::{json, Value};

const TOKEN: &str = "simulator-scim-token";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

struct Env {
    base: String,
    rest_token: String,
    http: reqwest::Client,
    _sim: scim_bridge::sim::RunningSim,
}

struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

fn switches(kv: &[(&str, &str)]) -> SimOptions {
    SimOptions {
        switches: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..SimOptions::default()
    }
}

async fn start(opts: SimOptions) -> Env {
    let sim = support::spawn(Vendor::Sisense, opts).await;
    let base = sim.base_url();
    let http = support::client();
    let r = http
        .post(format!("{base}/api/v1/authentication/login"))
        .form(&[("username", "admin@sisense.local"), ("password", "admin")])
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    Env {
        base,
        rest_token: v["access_token"].as_str().unwrap().to_string(),
        http,
        _sim: sim,
    }
}

impl Env {
    async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn scim(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.send(Some(TOKEN), method, &format!("/api/scim/v2{path}"), body)
            .await
    }

    async fn rest(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.send(Some(&self.rest_token.clone()), method, path, body)
            .await
    }

    async fn role_id(&self, name: &str) -> String {
        let r = self.rest(Method::GET, "/api/roles", None).await;
        r.body
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()["_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn create_user(&self, user_name: &str) -> String {
        let r = self
            .scim(
                Method::POST,
                "/Users",
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "name": {"givenName": "G", "familyName": "F"},
                    "emails": [{"value": user_name, "type": "work", "primary": true}],
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    async fn rest_user(&self, id: &str) -> Value {
        let r = self
            .rest(Method::GET, &format!("/api/v1/users/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    async fn patch_group(&self, gid: &str, ops: Value) -> Resp {
        self.scim(
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await
    }
}

fn assert_scim_error(r: &Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["schemas"], json!([ERROR_URN]), "{}", r.body);
    assert_eq!(r.body["status"], status.to_string(), "{}", r.body);
    assert!(r.body["detail"].is_string(), "{}", r.body);
    match scim_type {
        Some(t) => assert_eq!(r.body["scimType"], t, "{}", r.body),
        None => assert!(r.body.get("scimType").is_none(), "{}", r.body),
    }
    assert_scim_media_type(r);
}

fn assert_scim_media_type(r: &Resp) {
    let ct = r.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("application/scim+json"), "content-type {ct}");
}

fn group_ids(u: &Value) -> Vec<String> {
    u["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn scim_created_user_is_the_rest_user_with_the_default_role_and_no_groups() {
    let e = start(SimOptions::default()).await;
    let r = e
        .scim(
            Method::POST,
            "/Users",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice@x.io",
                "externalId": "ext-alice",
                "name": {"givenName": "Alice", "familyName": "Liddell"},
                "emails": [{"value": "other@x.io", "type": "home"},
                           {"value": "alice@x.io", "type": "work", "primary": true}],
                "roles": [{"value": "admin"}],
                "title": "ignored",
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_scim_media_type(&r);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    let loc = r.headers.get("location").unwrap().to_str().unwrap();
    assert!(loc.ends_with(&format!("/api/scim/v2/Users/{id}")), "{loc}");
    assert_eq!(r.body["meta"]["location"], loc);
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert_eq!(r.body["userName"], "alice@x.io");
    assert_eq!(r.body["externalId"], "ext-alice");
    assert_eq!(r.body["active"], true);
    assert_eq!(
        r.body["emails"],
        json!([{"value": "alice@x.io", "type": "work", "primary": true}])
    );
    assert_eq!(r.body["name"]["givenName"], "Alice");
    assert!(r.body.get("groups").is_none(), "no groups: {}", r.body);

    let u = e.rest_user(&id).await;
    assert_eq!(u["_id"], id.as_str());
    assert_eq!(u["email"], "alice@x.io", "primary email wins");
    assert_eq!(u["userName"], "alice@x.io");
    assert_eq!(u["firstName"], "Alice");
    assert_eq!(u["lastName"], "Liddell");
    assert_eq!(u["active"], true);
    assert_eq!(u["roleId"], e.role_id("consumer").await.as_str());
    assert_eq!(u["groups"], json!([]));
    assert!(u.get("externalId").is_none(), "REST has no externalId");

    // GET by id is the same document.
    let g = e.scim(Method::GET, &format!("/Users/{id}"), None).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body, r.body);

    // The email falls back to a userName that is an address; `active` is honoured.
    let r = e
        .scim(
            Method::POST,
            "/Users",
            Some(json!({"userName": "bob@x.io", "active": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let u = e.rest_user(r.body["id"].as_str().unwrap()).await;
    assert_eq!(
        (u["email"].clone(), u["active"].clone()),
        (json!("bob@x.io"), json!(false))
    );

    // No usable email, no userName: 400 invalidValue, nothing created.
    let r = e
        .scim(Method::POST, "/Users", Some(json!({"userName": "carol"})))
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    let r = e
        .scim(
            Method::POST,
            "/Users",
            Some(json!({"emails": [{"value": "d@x.io"}]})),
        )
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    let r = e.scim(Method::GET, "/Users", None).await;
    assert_eq!(r.body["totalResults"], 3, "admin + alice + bob");
    let r = e
        .scim(Method::GET, "/Users/0123456789abcdef01234567", None)
        .await;
    assert_scim_error(&r, 404, None);
}

#[tokio::test]
async fn scim_duplicate_username_or_email_is_409_uniqueness() {
    let e = start(SimOptions::default()).await;
    e.create_user("dup@x.io").await;
    let r = e
        .scim(
            Method::POST,
            "/Users",
            Some(json!({"userName": "DUP@x.io"})),
        )
        .await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    let r = e
        .scim(
            Method::POST,
            "/Users",
            Some(json!({"userName": "someone", "emails": [{"value": "dup@X.io"}]})),
        )
        .await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    // A REST-created user counts too.
    let r = e
        .scim(
            Method::POST,
            "/Users",
            Some(json!({"userName": "admin@sisense.local"})),
        )
        .await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    let r = e.scim(Method::GET, "/Users", None).await;
    assert_eq!(r.body["totalResults"], 2);
}

#[tokio::test]
async fn scim_user_filters_and_paging() {
    let e = start(SimOptions::default()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = e
            .scim(
                Method::POST,
                "/Users",
                Some(
                    json!({"userName": format!("u{i}@x.io"), "externalId": format!("ext{i}"),
                            "active": i != 3}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let q = |f: &str| format!("/Users?filter={}", urlencode(f));
    let one = |r: &Resp| {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["totalResults"], 1, "{}", r.body);
        r.body["Resources"][0]["id"].as_str().unwrap().to_string()
    };
    let r = e
        .scim(Method::GET, &q(r#"userName eq "U2@x.io""#), None)
        .await;
    assert_eq!(one(&r), ids[2], "userName is case-insensitive");
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    let r = e
        .scim(Method::GET, &q(r#"externalId eq "ext4""#), None)
        .await;
    assert_eq!(one(&r), ids[4]);
    let r = e
        .scim(Method::GET, &q(r#"emails.value eq "u1@x.io""#), None)
        .await;
    assert_eq!(one(&r), ids[1]);
    let r = e
        .scim(Method::GET, &q(r#"emails eq "u0@x.io""#), None)
        .await;
    assert_eq!(one(&r), ids[0]);
    let r = e
        .scim(Method::GET, &q(&format!(r#"id eq "{}""#, ids[3])), None)
        .await;
    assert_eq!(one(&r), ids[3]);
    let r = e.scim(Method::GET, &q("active eq false"), None).await;
    assert_eq!(one(&r), ids[3]);
    let r = e
        .scim(Method::GET, &q(r#"userName eq "nobody""#), None)
        .await;
    assert_eq!(r.body["totalResults"], 0);
    assert_eq!(r.body["Resources"], json!([]));

    // Paging: 6 users (admin first), creation order.
    let r = e
        .scim(Method::GET, "/Users?startIndex=3&count=2", None)
        .await;
    assert_eq!(r.body["totalResults"], 6);
    assert_eq!(r.body["startIndex"], 3);
    assert_eq!(r.body["itemsPerPage"], 2);
    let page: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, vec![ids[1].as_str(), ids[2].as_str()]);
    let r = e
        .scim(Method::GET, "/Users?startIndex=6&count=10", None)
        .await;
    assert_eq!(r.body["itemsPerPage"], 1);
    assert_eq!(r.body["Resources"][0]["id"], ids[4].as_str());
    let r = e.scim(Method::GET, "/Users?count=0", None).await;
    assert_eq!(
        (
            r.body["totalResults"].clone(),
            r.body["itemsPerPage"].clone()
        ),
        (json!(6), json!(0))
    );

    let r = e.scim(Method::GET, &q("userName eq"), None).await;
    assert_scim_error(&r, 400, Some("invalidFilter"));
    let r = e.scim(Method::GET, "/Users?count=abc", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn scim_patch_user_okta_and_entra_dialects_show_over_rest() {
    let e = start(SimOptions::default()).await;
    let id = e.create_user("pat@x.io").await;
    let path = format!("/Users/{id}");
    // Okta: pathless replace with an object.
    let r = e
        .scim(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP],
                        "Operations": [{"op": "replace", "value": {"active": false}}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_eq!(e.rest_user(&id).await["active"], false);
    // Entra: capitalised ops, "True" as a string, value-filtered email path.
    let r = e
        .scim(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Replace", "path": "active", "value": "True"},
                {"op": "Replace", "path": "name.givenName", "value": "Patricia"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "pat2@x.io"},
                {"op": "Add", "path": "externalId", "value": "entra-1"},
                {"op": "replace", "path": "userName", "value": "pat2@x.io"},
            ]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let u = e.rest_user(&id).await;
    assert_eq!(u["active"], true);
    assert_eq!(u["firstName"], "Patricia");
    assert_eq!(u["lastName"], "F");
    assert_eq!(u["email"], "pat2@x.io");
    assert_eq!(u["userName"], "pat2@x.io");
    assert_eq!(r.body["externalId"], "entra-1");
    // Remove familyName.
    let r = e
        .scim(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP],
                        "Operations": [{"op": "remove", "path": "name.familyName"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(e.rest_user(&id).await.get("lastName").is_none());

    // Atomic: a bad second operation changes nothing.
    let r = e
        .scim(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "name.givenName", "value": "Changed"},
                {"op": "replace", "path": "active", "value": "maybe"},
            ]})),
        )
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert_eq!(e.rest_user(&id).await["firstName"], "Patricia");
    // Removing userName is a mutability error.
    let r = e
        .scim(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP],
                        "Operations": [{"op": "remove", "path": "userName"}]})),
        )
        .await;
    assert_scim_error(&r, 400, Some("mutability"));
    // No PatchOp schema: invalidSyntax. Renaming onto another user: 409.
    let r = e
        .scim(Method::PATCH, &path, Some(json!({"Operations": []})))
        .await;
    assert_scim_error(&r, 400, Some("invalidSyntax"));
    let r = e
        .scim(
            Method::PATCH,
            &path,
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "userName", "value": "admin@sisense.local"}]})),
        )
        .await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    let r = e
        .scim(
            Method::PATCH,
            "/Users/0123456789abcdef01234567",
            Some(json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "path": "active", "value": false}]})),
        )
        .await;
    assert_scim_error(&r, 404, None);
}

#[tokio::test]
async fn scim_put_user_replaces_the_writable_attributes() {
    let e = start(SimOptions::default()).await;
    let id = e.create_user("put@x.io").await;
    e.create_user("other@x.io").await;
    let r = e
        .scim(
            Method::PUT,
            &format!("/Users/{id}"),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": "put2@x.io", "name": {"givenName": "New"},
                        "emails": [{"value": "put2@x.io", "primary": true}],
                        "active": false, "externalId": "x9"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["externalId"], "x9");
    let u = e.rest_user(&id).await;
    assert_eq!(u["userName"], "put2@x.io");
    assert_eq!(u["email"], "put2@x.io");
    assert_eq!(u["firstName"], "New");
    assert!(u.get("lastName").is_none(), "PUT replaces the whole name");
    assert_eq!(u["active"], false);
    let r = e
        .scim(
            Method::PUT,
            &format!("/Users/{id}"),
            Some(json!({"userName": "other@x.io"})),
        )
        .await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    let r = e
        .scim(
            Method::PUT,
            &format!("/Users/{id}"),
            Some(json!({"name": {"givenName": "x"}})),
        )
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    let r = e
        .scim(
            Method::PUT,
            "/Users/0123456789abcdef01234567",
            Some(json!({"userName": "z@x.io"})),
        )
        .await;
    assert_scim_error(&r, 404, None);
}

#[tokio::test]
async fn scim_delete_user_removes_the_sisense_user() {
    let e = start(SimOptions::default()).await;
    let id = e.create_user("del@x.io").await;
    let r = e.scim(Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = e
        .rest(Method::GET, &format!("/api/v1/users/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = e.scim(Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_scim_error(&r, 404, None);
    // The super user cannot be deleted (the REST rule, 2011), as a SCIM mutability error.
    let admin = e
        .scim(
            Method::GET,
            &format!(
                "/Users?filter={}",
                urlencode(r#"userName eq "admin@sisense.local""#)
            ),
            None,
        )
        .await;
    let aid = admin.body["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = e.scim(Method::DELETE, &format!("/Users/{aid}"), None).await;
    assert_scim_error(&r, 400, Some("mutability"));
    assert_eq!(e.rest_user(&aid).await["_id"], aid.as_str());
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn scim_group_create_and_patch_members_show_in_rest_user_groups() {
    let e = start(SimOptions::default()).await;
    let a = e.create_user("a@x.io").await;
    let b = e.create_user("b@x.io").await;
    let c = e.create_user("c@x.io").await;
    let r = e
        .scim(
            Method::POST,
            "/Groups",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": "Eng", "members": [{"value": a}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_scim_media_type(&r);
    let gid = r.body["id"].as_str().unwrap().to_string();
    assert!(r
        .headers
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with(&format!("/api/scim/v2/Groups/{gid}")));
    assert_eq!(
        r.body["members"],
        json!([{"value": a, "display": "a@x.io", "type": "User"}])
    );
    let rg = e
        .rest(Method::GET, &format!("/api/v1/groups/{gid}"), None)
        .await;
    assert_eq!(rg.body["name"], "Eng", "same _id over REST");
    assert_eq!(group_ids(&e.rest_user(&a).await), vec![gid.clone()]);
    // The user's SCIM groups are read back.
    let ua = e.scim(Method::GET, &format!("/Users/{a}"), None).await;
    assert_eq!(ua.body["groups"], json!([{"value": gid, "display": "Eng"}]));

    // add (a again is a no-op) → 204 by default.
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "add", "path": "members", "value": [{"value": b}, {"value": a}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(group_ids(&e.rest_user(&b).await), vec![gid.clone()]);
    assert_eq!(group_ids(&e.rest_user(&a).await), vec![gid.clone()]);
    // remove members[value eq "a"]
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "remove", "path": format!("members[value eq \"{a}\"]")}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(group_ids(&e.rest_user(&a).await).is_empty());
    // Entra: remove path members with a value list.
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "Remove", "path": "members", "value": [{"value": b}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(group_ids(&e.rest_user(&b).await).is_empty());
    // replace the whole set.
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "replace", "path": "members", "value": [{"value": a}, {"value": c}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let list = e
        .scim(
            Method::GET,
            &format!("/Groups?filter={}", urlencode(r#"displayName eq "Eng""#)),
            None,
        )
        .await;
    let members: Vec<&str> = list.body["Resources"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![a.as_str(), c.as_str()]);
    // Unknown user in an add: 400 invalidValue, and the valid part is not applied either.
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "add", "path": "members",
                    "value": [{"value": b}, {"value": "0123456789abcdef01234567"}]}]),
        )
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert!(group_ids(&e.rest_user(&b).await).is_empty(), "atomic");
    // remove path members without a value: all.
    let r = e
        .patch_group(&gid, json!([{"op": "remove", "path": "members"}]))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(group_ids(&e.rest_user(&a).await).is_empty());
    assert!(group_ids(&e.rest_user(&c).await).is_empty());

    // Renames: with a path, and pathless.
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "replace", "path": "displayName", "value": "Eng2"}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let rg = e
        .rest(Method::GET, &format!("/api/v1/groups/{gid}"), None)
        .await;
    assert_eq!(rg.body["name"], "Eng2");
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "replace", "value": {"displayName": "Eng3"}}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let rg = e
        .rest(Method::GET, &format!("/api/v1/groups/{gid}"), None)
        .await;
    assert_eq!(rg.body["name"], "Eng3");
    // Okta's pathless replace carries the id along with the new name.
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "replace", "value": {"id": gid, "displayName": "Eng4"}}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let rg = e
        .rest(Method::GET, &format!("/api/v1/groups/{gid}"), None)
        .await;
    assert_eq!(rg.body["name"], "Eng4");
    // Rename onto an existing name (ignoring case): 409, name kept.
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "replace", "path": "displayName", "value": "admins"}]),
        )
        .await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    let rg = e
        .rest(Method::GET, &format!("/api/v1/groups/{gid}"), None)
        .await;
    assert_eq!(rg.body["name"], "Eng4");
    let r = e
        .patch_group(
            "0123456789abcdef01234567",
            json!([{"op": "remove", "path": "members"}]),
        )
        .await;
    assert_scim_error(&r, 404, None);
}

#[tokio::test]
async fn scim_group_create_validation_and_delete() {
    let e = start(SimOptions::default()).await;
    let a = e.create_user("a@x.io").await;
    let r = e
        .scim(Method::POST, "/Groups", Some(json!({"members": []})))
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    let r = e
        .scim(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "Ghosts",
                        "members": [{"value": a}, {"value": "0123456789abcdef01234567"}]})),
        )
        .await;
    assert_scim_error(&r, 400, Some("invalidValue"));
    let f = format!("/Groups?filter={}", urlencode(r#"displayName eq "Ghosts""#));
    assert_eq!(e.scim(Method::GET, &f, None).await.body["totalResults"], 0);
    assert!(group_ids(&e.rest_user(&a).await).is_empty());
    let r = e
        .scim(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "everyone"})),
        )
        .await;
    assert_scim_error(&r, 409, Some("uniqueness"));

    let r = e
        .scim(
            Method::POST,
            "/Groups",
            Some(json!({"displayName": "Temp", "members": [{"value": a}]})),
        )
        .await;
    let gid = r.body["id"].as_str().unwrap().to_string();
    // GET /Groups: built-in groups listed, excludedAttributes=members drops members.
    let all = e.scim(Method::GET, "/Groups", None).await;
    assert_eq!(all.body["totalResults"], 3, "Everyone, Admins, Temp");
    assert!(all.body["Resources"][2]["members"].is_array());
    let all = e
        .scim(Method::GET, "/Groups?excludedAttributes=members", None)
        .await;
    assert!(all.body["Resources"][2].get("members").is_none());
    assert_eq!(all.body["Resources"][2]["displayName"], "Temp");
    let paged = e
        .scim(Method::GET, "/Groups?startIndex=2&count=1", None)
        .await;
    assert_eq!(paged.body["Resources"][0]["displayName"], "Admins");
    assert_eq!(paged.body["itemsPerPage"], 1);

    let r = e
        .scim(Method::DELETE, &format!("/Groups/{gid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(group_ids(&e.rest_user(&a).await).is_empty());
    let r = e
        .rest(Method::GET, &format!("/api/v1/groups/{gid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = e
        .scim(Method::DELETE, &format!("/Groups/{gid}"), None)
        .await;
    assert_scim_error(&r, 404, None);
}

#[tokio::test]
async fn scim_group_membership_never_changes_the_role() {
    let e = start(SimOptions::default()).await;
    let designer = e.role_id("contributor").await;
    let consumer = e.role_id("consumer").await;
    let r = e
        .rest(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "Designers", "roleId": designer})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let gid = r.body["_id"].as_str().unwrap().to_string();
    let uid = e.create_user("role@x.io").await;
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let u = e.rest_user(&uid).await;
    assert_eq!(group_ids(&u), vec![gid]);
    assert_eq!(u["roleId"], consumer.as_str());
    assert_ne!(u["roleId"], designer.as_str());
}

#[tokio::test]
async fn scim_group_patch_returns_the_resource_with_the_switch() {
    let e = start(switches(&[(
        "sisense.scim_group_patch_returns",
        "resource",
    )]))
    .await;
    let a = e.create_user("a@x.io").await;
    let r = e
        .scim(Method::POST, "/Groups", Some(json!({"displayName": "G"})))
        .await;
    let gid = r.body["id"].as_str().unwrap().to_string();
    let r = e
        .patch_group(
            &gid,
            json!([{"op": "add", "path": "members", "value": [{"value": a}]}]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_scim_media_type(&r);
    assert_eq!(r.body["id"], gid.as_str());
    assert_eq!(r.body["members"][0]["value"], a.as_str());
}

// ---------------------------------------------------------------------------------------------
// Auth, switches, unsupported operations, faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn scim_and_rest_tokens_are_not_interchangeable() {
    let e = start(SimOptions::default()).await;
    let r = e
        .send(
            Some(&e.rest_token.clone()),
            Method::GET,
            "/api/scim/v2/Users",
            None,
        )
        .await;
    assert_scim_error(&r, 401, None);
    let r = e.send(None, Method::GET, "/api/scim/v2/Users", None).await;
    assert_scim_error(&r, 401, None);
    let r = e
        .send(
            Some("wrong"),
            Method::POST,
            "/api/scim/v2/Users",
            Some(json!({"userName": "x@x.io"})),
        )
        .await;
    assert_scim_error(&r, 401, None);
    assert_eq!(
        e.scim(Method::GET, "/Users", None).await.body["totalResults"],
        1,
        "nothing created without the token"
    );
    // The SCIM token on REST: the Sisense 401 envelope.
    let r = e
        .send(Some(TOKEN), Method::GET, "/api/v1/users", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["status"], 401, "{}", r.body);
    assert_eq!(
        e.scim(Method::GET, "/Users", None).await.status,
        StatusCode::OK
    );

    let custom = start(switches(&[("sisense.scim_token", "my-token")])).await;
    let r = custom.scim(Method::GET, "/Users", None).await;
    assert_scim_error(&r, 401, None);
    let r = custom
        .send(Some("my-token"), Method::GET, "/api/scim/v2/Users", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn scim_switched_off_is_the_simulators_404() {
    let e = start(switches(&[("sisense.scim", "false")])).await;
    for path in ["/Users", "/Groups"] {
        let r = e.scim(Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.body["error"]["status"], 404, "Sisense 404: {}", r.body);
    }
    assert_eq!(
        e.rest(Method::GET, "/api/v1/users", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn scim_operations_outside_the_guide_are_405() {
    let e = start(SimOptions::default()).await;
    let r = e
        .scim(Method::POST, "/Groups", Some(json!({"displayName": "G"})))
        .await;
    let gid = r.body["id"].as_str().unwrap().to_string();
    let r = e.scim(Method::GET, &format!("/Groups/{gid}"), None).await;
    assert_scim_error(&r, 405, None);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("GET /Groups/{id}"),
        "{}",
        r.body
    );
    assert_eq!(r.headers.get("allow").unwrap(), "PATCH, DELETE");
    let r = e
        .scim(
            Method::PUT,
            &format!("/Groups/{gid}"),
            Some(json!({"displayName": "H"})),
        )
        .await;
    assert_scim_error(&r, 405, None);
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .contains("PUT /Groups/{id}"));
    let r = e.scim(Method::DELETE, "/Users", None).await;
    assert_scim_error(&r, 405, None);
    let r = e.scim(Method::GET, "/ServiceProviderConfig", None).await;
    assert_scim_error(&r, 405, None);
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .contains("/ServiceProviderConfig"));
    // The group was not renamed by the refused PUT.
    let rg = e
        .rest(Method::GET, &format!("/api/v1/groups/{gid}"), None)
        .await;
    assert_eq!(rg.body["name"], "G");
}

#[tokio::test]
async fn scim_bodies_must_be_json() {
    let e = start(SimOptions::default()).await;
    let r = e
        .http
        .post(format!("{}/api/scim/v2/Users", e.base))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(r#"{"userName":"t@x.io"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = e
        .http
        .post(format!("{}/api/scim/v2/Users", e.base))
        .bearer_auth(TOKEN)
        .json(&json!({"userName": "t@x.io"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "application/json accepted");
    let r = e
        .send(Some(TOKEN), Method::POST, "/api/scim/v2/Groups", None)
        .await;
    assert_scim_error(&r, 400, Some("invalidSyntax"));
}

#[tokio::test]
async fn scim_routes_get_faults_and_stats() {
    let failing = support::spawn(
        Vendor::Sisense,
        SimOptions {
            error_rate: 1.0,
            ..SimOptions::default()
        },
    )
    .await;
    let r = support::client()
        .get(format!("{}/api/scim/v2/Users", failing.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());

    let e = start(SimOptions::default()).await;
    e.create_user("s@x.io").await;
    e.scim(Method::GET, "/Users", None).await;
    e.scim(Method::GET, "/Users", None).await;
    let st = support::stats(&e.base).await;
    assert_eq!(st["by_route"]["POST /api/scim/v2/Users"], 1, "{st}");
    assert_eq!(st["by_route"]["GET /api/scim/v2/Users"], 2, "{st}");
}

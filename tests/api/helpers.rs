//! The real bridge on a real socket: `spawn_app()` builds the server from a config, binds
//! 127.0.0.1:0 with a fresh data dir, and hands back a client that talks to it the way Okta and
//! Entra do (`Authorization: Bearer`, `Content-Type: application/scim+json; charset=utf-8`).
//! Logs are printed only when `TEST_LOG` is set (`TEST_LOG=1 cargo test --test api -- name`).

#![allow(dead_code)]

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use scim_bridge::config::{Config, Secret};
use scim_bridge::server::{build_state, start, RunningServer};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;
use tempfile::TempDir;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json; charset=utf-8";
pub const DEFAULT_TOKEN: &str = "test-token-3f1c9a7e5b2d4c6a-0123456789";

pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const ADSCIM_GROUP: &str =
    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug,sled=info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
});

/// One running bridge with its own data dir.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub root: String,
    /// The admin listener (`/metrics`, detailed `/readyz`, `/admin/api/`): `http://127.0.0.1:PORT`.
    pub admin_root: String,
    /// The SCIM base of the first tenant: `/scim/v2` for `default`, else `/tenants/{id}/scim/v2`.
    pub base_url: String,
    /// The first static token of the first tenant.
    pub token: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pub running: Option<RunningServer>,
    pub config: Config,
}

/// The embedded default: tenant `default`, local connector, one static token.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The embedded default, with `adjust` applied to its config (e.g. `trusted_proxies`).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded_default(
        Some(loopback0()),
        dir.path().to_path_buf(),
        Secret::new(DEFAULT_TOKEN),
    );
    adjust(&mut config);
    launch(config, dir).await
}

/// A bridge built from TOML (`${NAME}` resolves to nothing: tests write literal values). The
/// `listen` and `data_dir` of the file are overridden with port 0 and a fresh temp dir.
pub async fn spawn_with_config(toml: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::from_toml_str(toml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    config.listen = loopback0();
    config.data_dir = dir.path().to_path_buf();
    launch(config, dir).await
}

fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn launch(mut config: Config, dir: TempDir) -> TestApp {
    LazyLock::force(&TRACING);
    // Every test app runs its own admin listener: none may take the fixed default port, which
    // the apps of a parallel run would fight over. A test that chose an address keeps it.
    if config.admin.listen == scim_bridge::config::default_admin_listen() {
        config.admin.listen = loopback0();
    }
    let running = start_server(&config, config.listen).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client");
    let first = &config.tenants[0];
    let token = first
        .tokens
        .first()
        .map(|t| t.expose().to_string())
        .unwrap_or_default();
    let mut app = TestApp {
        addr: running.addr,
        root: String::new(),
        admin_root: admin_root_of(&running),
        base_url: String::new(),
        token,
        client,
        dir,
        running: Some(running),
        config,
    };
    app.set_urls();
    app
}

/// The admin listener's root URL (`build_state` always starts one from `[admin]`).
fn admin_root_of(running: &RunningServer) -> String {
    format!(
        "http://{}",
        running
            .admin_addr()
            .expect("build_state configures the admin listener")
    )
}

/// Opens the store (retrying briefly: a store just closed by `stop()` may still be releasing
/// its lock) and starts the server on `listen`.
async fn start_server(config: &Config, listen: SocketAddr) -> RunningServer {
    let mut attempt = 0;
    let store = loop {
        match Store::open(&config.data_dir) {
            Ok(s) => break s,
            Err(e) if attempt < 50 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "store not openable yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot reopen the store in {:?}: {e}", config.data_dir),
        }
    };
    let state = build_state(config, store).unwrap_or_else(|e| panic!("build_state: {e}"));
    match start(listen, state, Some(2)) {
        Ok(r) => r,
        Err(e) if listen.port() != 0 => {
            tracing::warn!(error = %e, "could not rebind the old port; using a new one");
            let store = Store::open(&config.data_dir).expect("store");
            let state = build_state(config, store).expect("state");
            start(loopback0(), state, Some(2)).expect("start")
        }
        Err(e) => panic!("start: {e}"),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            // `stop` sends its command eagerly; the future only waits for completion.
            if let Some(a) = &r.admin {
                drop(a.handle.stop(false));
            }
            drop(r.handle.stop(false));
        }
    }
}

impl TestApp {
    fn set_urls(&mut self) {
        self.root = format!("http://{}", self.addr);
        let first = self.config.tenants[0].id.as_str().to_string();
        self.base_url = self.tenant_base(&first);
    }

    /// The SCIM base URL of a tenant (`default` uses the short `/scim/v2`).
    pub fn tenant_base(&self, tenant: &str) -> String {
        if tenant == "default" {
            format!("{}/scim/v2", self.root)
        } else {
            format!("{}/tenants/{tenant}/scim/v2", self.root)
        }
    }

    /// Stops the server (graceful, store flushed).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// Stops the server and starts a new one on the same data dir (and, if it can, the same port).
    pub async fn restart(&mut self) {
        let old = self.addr;
        self.stop().await;
        let running = start_server(&self.config, old).await;
        self.addr = running.addr;
        self.admin_root = admin_root_of(&running);
        self.running = Some(running);
        self.set_urls();
    }

    /// A path relative to the SCIM base, or an absolute URL.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base_url, path)
        }
    }

    /// A request with the IdP's usual headers and the app's token; customise before `send`.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Accept", "application/scim+json")
            .header("User-Agent", "Okta SCIM Client 1.0.0")
            .bearer_auth(&self.token)
    }

    /// The same without any Authorization header.
    pub fn anonymous(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Accept", "application/scim+json")
    }

    pub async fn send_json(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", SCIM_CONTENT_TYPE)
                .body(b.to_string());
        }
        Resp::send(rb).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send_json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.send_json(Method::PATCH, path, Some(body)).await
    }

    /// PATCH with a PatchOp body around `operations`.
    pub async fn patch_ops(&self, path: &str, operations: Value) -> Resp {
        self.patch(path, &patch_body(operations)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send_json(Method::DELETE, path, None).await
    }

    /// GET on a path below the public listener's root (`/healthz`, `/readyz`), no token.
    pub async fn get_root(&self, path: &str) -> Resp {
        Resp::send(self.client.get(format!("{}{}", self.root, path))).await
    }

    /// GET on a path of the admin listener (`/metrics`, the detailed `/readyz`, `/admin/api/…`),
    /// with `bearer` when given.
    pub async fn get_admin(&self, path: &str, bearer: Option<&str>) -> Resp {
        let mut rb = self.client.get(format!("{}{}", self.admin_root, path));
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        Resp::send(rb).await
    }

    /// GET with a `filter` query parameter, encoded properly.
    pub async fn filter(&self, collection: &str, filter: &str) -> Resp {
        Resp::send(
            self.request(Method::GET, collection)
                .query(&[("filter", filter)]),
        )
        .await
    }

    // ---- fixtures -------------------------------------------------------------------------

    /// POSTs a user; asserts 201; returns the created resource.
    pub async fn create_user_with(&self, body: &Value) -> Value {
        let r = self.post("/Users", body).await;
        r.assert_status(201);
        r.json()
    }

    /// A minimal user with a work email: returns its id.
    pub async fn create_user(&self, user_name: &str) -> String {
        let u = self.create_user_with(&user_body(user_name)).await;
        id_of(&u)
    }

    /// POSTs a group with these member ids; asserts 201; returns the created resource.
    pub async fn create_group_with_members(&self, name: &str, members: &[&str]) -> Value {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let r = self
            .post(
                "/Groups",
                &json!({"schemas": [CORE_GROUP], "displayName": name, "members": members}),
            )
            .await;
        r.assert_status(201);
        r.json()
    }

    pub async fn create_group(&self, name: &str) -> String {
        id_of(&self.create_group_with_members(name, &[]).await)
    }

    /// Creates `n` users `{prefix}{i}@example.com`, one request at a time: concurrent writes can
    /// wedge the whole process (see concurrency.rs), and one wedged test hangs them all.
    pub async fn create_users(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(
                self.create_user(&format!("{prefix}{i:05}@example.com"))
                    .await,
            );
        }
        ids
    }

    /// The member ids of a group, from `GET /Groups/{id}`.
    pub async fn member_ids(&self, group: &str) -> Vec<String> {
        let r = self.get(&format!("/Groups/{group}")).await;
        r.assert_status(200);
        member_values(&r.json())
    }

    /// The group ids in a user's `groups`, from `GET /Users/{id}`.
    pub async fn group_ids_of_user(&self, user: &str) -> Vec<String> {
        let r = self.get(&format!("/Users/{user}")).await;
        r.assert_status(200);
        let mut ids: Vec<String> = r.json()["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g["value"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub elapsed: Duration,
}

impl Resp {
    pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
        Self::send_unlimited(rb).await
    }

    pub async fn send_unlimited(rb: reqwest::RequestBuilder) -> Resp {
        let started = std::time::Instant::now();
        let r = rb.send().await.expect("the request reached the server");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("a readable body");
        Resp {
            status,
            headers,
            text,
            elapsed: started.elapsed(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "body of the {} response is not JSON ({e}): {:?}",
                self.status, self.text
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    }

    /// Panics with the body when the status differs.
    #[track_caller]
    pub fn assert_status(&self, want: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            want,
            "expected {want}, got {}; body: {}",
            self.status,
            self.text
        );
        self
    }

    /// The status is 200 and the body a SCIM JSON resource; returns it.
    #[track_caller]
    pub fn ok_json(&self) -> Value {
        self.assert_status(200);
        self.assert_scim_content_type();
        self.json()
    }

    #[track_caller]
    pub fn assert_scim_content_type(&self) {
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/scim+json"),
            "Content-Type should be application/scim+json, is {ct:?}"
        );
    }

    /// An RFC 7644 §3.12 Error body with this status (a string) and, when given, `scimType`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, scim_type: Option<&str>) -> Value {
        self.assert_status(status);
        self.assert_scim_content_type();
        let body = self.json();
        assert_eq!(
            body["schemas"],
            json!([ERROR]),
            "Error schema missing: {body}"
        );
        assert_eq!(
            body["status"],
            json!(status.to_string()),
            "status must be the string {status:?}: {body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "detail should be a non-empty string: {body}"
        );
        if let Some(t) = scim_type {
            assert_eq!(body["scimType"], json!(t), "scimType: {body}");
        }
        body
    }

    /// A 4xx (never 5xx) Error body; returns it.
    #[track_caller]
    pub fn assert_client_error(&self) -> Value {
        assert!(
            self.status.is_client_error(),
            "expected a 4xx, got {}: {}",
            self.status,
            self.text
        );
        self.assert_error(self.status.as_u16(), None)
    }
}

pub fn patch_body(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

/// A user as Okta would create it (no password; see okta.rs for the exact Okta body).
pub fn user_body(user_name: &str) -> Value {
    json!({
        "schemas": [CORE_USER],
        "userName": user_name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "displayName": format!("Display {user_name}"),
        "active": true
    })
}

#[track_caller]
pub fn id_of(resource: &Value) -> String {
    resource["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("resource without an id: {resource}"))
        .to_string()
}

/// Sorted `members[].value`.
pub fn member_values(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The `Resources` of a ListResponse, after checking its shape: ListResponse schema, integer
/// counters, `itemsPerPage` = number of resources.
#[track_caller]
pub fn list_resources(body: &Value) -> Vec<Value> {
    assert_eq!(body["schemas"], json!([LIST_RESPONSE]), "{body}");
    assert!(body["totalResults"].is_u64(), "totalResults: {body}");
    assert!(body["startIndex"].is_u64(), "startIndex: {body}");
    assert!(body["itemsPerPage"].is_u64(), "itemsPerPage: {body}");
    let resources = match &body["Resources"] {
        Value::Array(a) => a.clone(),
        Value::Null if body["totalResults"] == 0 => vec![],
        other => panic!("Resources should be an array, is {other}"),
    };
    assert_eq!(
        body["itemsPerPage"].as_u64().unwrap() as usize,
        resources.len(),
        "itemsPerPage must count the returned resources: {body}"
    );
    resources
}

pub fn ids(resources: &[Value]) -> Vec<String> {
    resources.iter().map(id_of).collect()
}

/// Absent, null, "" or [] (what Entra's null-update test accepts as "cleared").
pub fn is_cleared(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() || o.values().all(is_cleared),
        _ => false,
    }
}

/// Walks a JSON value and reports the path of the first `null`.
pub fn find_null(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::Null => Some(path.to_string()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_null(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .find_map(|(k, x)| find_null(x, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// Whether `s` parses as an xsd:dateTime (RFC 3339).
pub fn is_datetime(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

//! Helpers for the Sisense connector tests: a Sisense simulator, the bridge with one Sisense
//! tenant in front of it, an IdP-like SCIM client (which retries 429/503 as Okta and Entra do),
//! and a Sisense admin client to check the end state through Sisense's own API.
#![allow(dead_code)]

use scim_bridge::config::{
    Config, RoleRule, RoleRules, Secret, SisenseApiVersion, SisenseDeprovision, SisenseMode,
    TenantConfig, TenantId, Url, VendorConfig,
};
use scim_bridge::server::{self, RunningServer};
use scim_bridge::sim::{self, RunningSim, SimOptions, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// A Sisense user as the tests compare it: (role API name, active, sorted group names).
pub type UserState = (String, bool, Vec<String>);

pub const TOKEN: &str = "test-token-sisense-0123456789";
pub const TENANT: &str = "acme";

pub async fn spawn_sim(opts: SimOptions) -> RunningSim {
    sim::start(Vendor::Sisense, "127.0.0.1:0".parse().unwrap(), opts)
        .await
        .expect("simulator starts")
}

/// `BI Admins → Admin`, `BI Designers → Designer`, default `Viewer` (UI names, as an operator
/// would write them).
pub fn demo_rules() -> RoleRules {
    RoleRules {
        default: Some("Viewer".into()),
        rules: vec![
            RoleRule {
                group: Some("BI Admins".into()),
                role: "Admin".into(),
            },
            RoleRule {
                group: Some("BI Designers".into()),
                role: "Designer".into(),
            },
        ],
    }
}

pub fn tenant(sim_base: &str, deprovision: SisenseDeprovision, rules: RoleRules) -> TenantConfig {
    tenant_v(sim_base, deprovision, rules, SisenseApiVersion::V1)
}

pub fn tenant_v(
    sim_base: &str,
    deprovision: SisenseDeprovision,
    rules: RoleRules,
    api_version: SisenseApiVersion,
) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor: VendorConfig::Sisense {
            base_url: Url::parse(&format!("{sim_base}/")).unwrap(),
            username: "admin@sisense.local".into(),
            password: Secret::new("admin"),
            api_version,
            mode: SisenseMode::Rest,
            scim_token: None,
            deprovision,
        },
        roles: rules,
        on_vendor_unavailable: Default::default(),
    }
}

/// The simulator's default SCIM bearer token (README, simulator switches).
pub const SIM_SCIM_TOKEN: &str = "simulator-scim-token";

/// The same tenant with `mode = "scim"`: users, groups and membership through Sisense's own
/// SCIM endpoint, roles over REST.
pub fn scim_mode(mut t: TenantConfig) -> TenantConfig {
    if let VendorConfig::Sisense {
        mode, scim_token, ..
    } = &mut t.vendor
    {
        *mode = SisenseMode::Scim;
        *scim_token = Some(Secret::new(SIM_SCIM_TOKEN));
    }
    t
}

pub fn config(tenant: TenantConfig, data_dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        tenants: vec![tenant],
        body_limit_bytes: 1 << 20,
    }
}

pub struct Bridge {
    pub server: RunningServer,
    pub scim: Scim,
}

pub async fn start_bridge(config: &Config) -> Result<Bridge, server::StartError> {
    let store = Store::open(&config.data_dir).unwrap();
    let cfg = config.clone();
    // build_state signs in to Sisense synchronously; keep it off the async workers.
    let state = tokio::task::spawn_blocking(move || server::build_state(&cfg, store))
        .await
        .unwrap()?;
    let server = server::start(config.listen, state, Some(2))?;
    let scim = Scim::new(&format!("http://{}", server.addr));
    Ok(Bridge { server, scim })
}

/// The bridge with a handle on its Sisense engine, so a test can run an observe when it wants
/// (no background work is started: nothing observes or delivers unless the test asks).
pub async fn bridge_with_connector(
    t: scim_bridge::config::TenantConfig,
    data: &std::path::Path,
) -> (
    std::sync::Arc<scim_bridge::engine::Engine>,
    scim_bridge::server::RunningServer,
    Scim,
) {
    use scim_bridge::auth::TenantAuth;
    use scim_bridge::connector::sisense::{open, preflight};
    use scim_bridge::engine::EngineConnector;
    use scim_bridge::server::{metrics::Metrics, AppState, Tenant};
    use std::sync::Arc;
    let store = scim_bridge::store::Store::open(data).unwrap();
    let conn = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let roles = tokio::task::spawn_blocking(move || preflight(&t2, 0))
        .await
        .unwrap()
        .unwrap()
        .expect("Sisense reachable");
    conn.set_roles(roles);
    conn.observe_now().await.unwrap();
    let mut tenants = std::collections::BTreeMap::new();
    tenants.insert(
        TENANT.to_string(),
        Arc::new(Tenant {
            id: TENANT.into(),
            auth: TenantAuth::new(&t.id, &t.tokens, None),
            connector: Arc::new(EngineConnector(conn.clone())),
        }),
    );
    let state = AppState {
        tenants,
        metrics: Metrics::new(),
        body_limit: 1 << 20,
        store,
    };
    let server =
        scim_bridge::server::start("127.0.0.1:0".parse().unwrap(), state, Some(1)).unwrap();
    let scim = Scim::new(&format!("http://{}", server.addr));
    (conn, server, scim)
}

/// An IdP-like SCIM client of the tenant.
#[derive(Clone)]
pub struct Scim {
    pub root: String,
    pub base: String,
    pub http: reqwest::Client,
}

impl Scim {
    pub fn new(root: &str) -> Scim {
        Scim {
            root: root.to_string(),
            base: format!("{root}/tenants/{TENANT}/scim/v2"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(32)
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// One request; 429 and 503 are retried after `Retry-After` (capped), as IdPs do.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        for attempt in 0.. {
            let mut rb = self
                .http
                .request(method.clone(), format!("{}{}", self.base, path))
                .bearer_auth(TOKEN)
                .header("content-type", "application/scim+json");
            if let Some(b) = &body {
                rb = rb.body(b.to_string());
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) if attempt < 200 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = e;
                    continue;
                }
                Err(e) => panic!("{method} {path}: {e}"),
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let text = resp.text().await.unwrap_or_default();
            let v: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            if (status == 429 || status == 503) && attempt < 200 {
                let wait = retry_after.unwrap_or(1).min(2);
                tokio::time::sleep(Duration::from_millis(wait * 250 + 50)).await;
                continue;
            }
            return (status, v);
        }
        unreachable!()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    pub async fn find_user(&self, user_name: &str) -> Option<Value> {
        let q = format!(
            "/Users?filter={}&startIndex=1&count=100",
            urlencode(&format!("userName eq \"{user_name}\""))
        );
        let (s, v) = self.get(&q).await;
        assert_eq!(s, 200, "lookup {user_name}: {v}");
        v["Resources"].as_array().and_then(|a| a.first().cloned())
    }

    pub async fn find_group(&self, name: &str) -> Option<Value> {
        let q = format!(
            "/Groups?filter={}&excludedAttributes=members",
            urlencode(&format!("displayName eq \"{name}\""))
        );
        let (s, v) = self.get(&q).await;
        assert_eq!(s, 200, "lookup group {name}: {v}");
        v["Resources"].as_array().and_then(|a| a.first().cloned())
    }

    /// Okta's assignment: look up by userName, create only when absent.
    pub async fn okta_assign(&self, user_name: &str, given: &str, family: &str) -> String {
        if let Some(u) = self.find_user(user_name).await {
            return u["id"].as_str().unwrap().to_string();
        }
        let (s, v) = self
            .post(
                "/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "name": {"givenName": given, "familyName": family},
                    "emails": [{"primary": true, "value": user_name, "type": "work"}],
                    "displayName": format!("{given} {family}"),
                    "locale": "en-US",
                    "externalId": format!("00u{}", user_name.len()),
                    "groups": [],
                    "password": "1mz050nq",
                    "active": true
                }),
            )
            .await;
        assert_eq!(s, 201, "create {user_name}: {v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Waits until the bridge serves and its vendor is usable (`/readyz?verbose` names no
    /// tenant: roles read, directory observed once).
    pub async fn wait_ready(&self) {
        for _ in 0..300 {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz?verbose", self.root))
                .send()
                .await
            {
                if r.status().is_success() {
                    let body: Value = r.json().await.unwrap_or_default();
                    if body["vendors_unavailable"]
                        .as_object()
                        .is_some_and(|o| o.is_empty())
                    {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("bridge not ready");
    }
}

pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A Sisense admin client for checking the end state through Sisense's own API.
pub struct SisenseApi {
    pub base: String,
    http: reqwest::Client,
    token: String,
}

impl SisenseApi {
    pub async fn login(base: &str) -> SisenseApi {
        for _ in 0..100 {
            if let Some(api) = Self::try_login(base).await {
                return api;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot sign in to the simulator");
    }

    pub async fn try_login(base: &str) -> Option<SisenseApi> {
        let http = reqwest::Client::new();
        let v: Value = http
            .post(format!("{base}/api/v1/authentication/login"))
            .form(&[("username", "admin@sisense.local"), ("password", "admin")])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(SisenseApi {
            base: base.to_string(),
            http,
            token: v["access_token"].as_str()?.to_string(),
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        let t = r.text().await.unwrap();
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }

    pub async fn users(&self) -> Vec<Value> {
        let (s, v) = self.call(reqwest::Method::GET, "/api/v1/users", None).await;
        assert_eq!(s, 200);
        v.as_array().unwrap().clone()
    }

    pub async fn groups(&self) -> Vec<Value> {
        let (s, v) = self
            .call(reqwest::Method::GET, "/api/v1/groups", None)
            .await;
        assert_eq!(s, 200);
        v.as_array().unwrap().clone()
    }

    /// Role id → API name.
    pub async fn role_names(&self) -> HashMap<String, String> {
        let (s, v) = self.call(reqwest::Method::GET, "/api/roles", None).await;
        assert_eq!(s, 200);
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["_id"].as_str().unwrap().to_string(),
                    r["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub async fn create_user(&self, email: &str, role: &str) -> Value {
        let roles = self.role_names().await;
        let role_id = roles.iter().find(|(_, n)| *n == role).unwrap().0.clone();
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/users",
                Some(json!({"email": email, "userName": email, "roleId": role_id, "firstName": "Direct"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// The Sisense end state, keyed by lower-cased userName: (role name, active, group names).
    /// Panics on a duplicate userName.
    pub async fn state(&self) -> HashMap<String, UserState> {
        let roles = self.role_names().await;
        let groups: HashMap<String, String> = self
            .groups()
            .await
            .iter()
            .map(|g| {
                (
                    g["_id"].as_str().unwrap().to_string(),
                    g["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut out = HashMap::new();
        for u in self.users().await {
            let name = u["userName"].as_str().unwrap().to_lowercase();
            let mut gs: Vec<String> = u["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| groups[g.as_str().unwrap()].clone())
                .collect();
            gs.sort();
            let prev = out.insert(
                name.clone(),
                (
                    roles[u["roleId"].as_str().unwrap()].clone(),
                    u["active"].as_bool().unwrap_or(true),
                    gs,
                ),
            );
            assert!(prev.is_none(), "duplicate Sisense user {name}");
        }
        out
    }
}

pub async fn sim_stats(base: &str) -> Value {
    reqwest::get(format!("{base}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn reset_stats(base: &str) {
    reqwest::Client::new()
        .delete(format!("{base}/__sim/stats"))
        .send()
        .await
        .unwrap();
}

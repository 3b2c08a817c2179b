//! Helpers for the Sisense connector tests: a Sisense simulator, the Sisense tenant in front of
//! it (its config, started in this process through `bridge.rs`, alone or around its engine),
//! the IdP's SCIM client of that tenant (`Scim`, from `idp.rs`, which retries 429/503 as Okta
//! and Entra do), and a Sisense admin client to check the end state through Sisense's own API,
//! also in the vendor-neutral shape of `idp.rs` (`snapshot`).
//!
//! Include it beside `idp.rs` and `bridge.rs` (it uses both through `super`):
//!
//! ```ignore
//! #[path = "support/idp.rs"]
//! mod idp;
//! #[path = "support/bridge.rs"]
//! mod bridge;
//! #[path = "support/sisense_api.rs"]
//! mod sisense_api;
//! ```
#![allow(dead_code)]

use super::bridge;
use super::idp::*;

use scim_bridge::config::{
    Config, RoleRule, RoleRules, Secret, SisenseApiVersion, SisenseDeprovision, SisenseMode,
    TenantConfig, TenantId, Url, VendorConfig,
};
use scim_bridge::server::{self, RunningServer};
use scim_bridge::sim::{self, RunningSim, SimOptions, Vendor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A Sisense user as the tests compare it: (role API name, active, sorted group names).
pub type UserState = (String, bool, Vec<String>);

pub const TOKEN: &str = "test-token-sisense-0123456789abcdef";
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
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
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

pub struct Bridge {
    pub server: RunningServer,
    pub scim: Scim,
}

/// The bridge of `config` as `serve` starts it, and the IdP's client of the Sisense tenant.
pub async fn start_bridge(config: &Config) -> Result<Bridge, server::StartError> {
    let server = bridge::start(config).await?;
    let scim = Scim::new(&bridge::root(&server), &bridge::admin_root(&server));
    Ok(Bridge { server, scim })
}

/// The bridge with a handle on its Sisense engine, so a test can run an observe when it wants
/// (no background work is started: nothing observes or delivers unless the test asks).
pub async fn bridge_with_connector(
    t: TenantConfig,
    data: &std::path::Path,
) -> (
    std::sync::Arc<scim_bridge::engine::Engine>,
    RunningServer,
    Scim,
) {
    use scim_bridge::connector::sisense::{open, preflight};
    let store = super::bridge::open_store(data).await;
    let conn = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let roles = preflight(&t2, 0).await.unwrap().expect("Sisense reachable");
    conn.set_roles(roles);
    conn.observe_now().await.unwrap();
    let server = bridge::serve_engine(&t, conn.clone(), store, 1);
    let scim = Scim::new(&bridge::root(&server), &bridge::admin_root(&server));
    (conn, server, scim)
}

/// The tenant's IdP client in the tests (`Policy::Patient`: retries 429 and 503 as IdPs do).
pub type Scim = Idp;

impl Scim {
    /// A patient client of the Sisense tenant `acme` at the bridge `root`, whose admin listener
    /// (`/metrics`, detailed readiness) is at `admin_root`.
    pub fn new(root: &str, admin_root: &str) -> Scim {
        Idp::patient(root, TENANT, TOKEN).with_admin(admin_root)
    }
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

/// What `demo_rules` give, by Sisense's API role names.
pub const SISENSE_ROLES: Roles = Roles {
    admin: "admin",
    designer: "contributor",
    default: "consumer",
};

/// Sisense's users, read through its own API.
pub struct Snapshot {
    /// By lower-cased userName, with the role's API name.
    pub users: BTreeMap<String, Account>,
    /// The Sisense user records, by lower-cased userName.
    pub raw: HashMap<String, Value>,
}

impl Snapshot {
    /// How Sisense differs from `want` (see `Expected::diff`; Sisense's own account is its
    /// admin), including the renamed users' `firstName`/`lastName`.
    pub fn diff(&self, want: &Expected) -> Vec<String> {
        let mut d = want.diff(&self.users, 1);
        for r in &want.renamed {
            let key = match r.part {
                NamePart::Given => "firstName",
                NamePart::Family => "lastName",
            };
            let have = self.raw.get(&r.login).and_then(|u| u[key].as_str());
            if have != Some(r.value.as_str()) {
                d.push(format!("{} {key}: want {}, got {have:?}", r.login, r.value));
            }
        }
        d
    }

    /// `diff` as a result: `Err` names every difference.
    pub fn check(&self, want: &Expected) -> Result<(), String> {
        let d = self.diff(want);
        if d.is_empty() {
            Ok(())
        } else {
            Err(d.join("; "))
        }
    }
}

/// Sisense's users, or `None` when a read met an injected fault. Panics on a duplicate userName
/// (a duplicate is never transient noise: it is a bug the tests look for).
pub async fn snapshot(base: &str) -> Option<Snapshot> {
    let api = SisenseApi::try_login(base).await?;
    let names = |v: Value, key: &str| -> Option<HashMap<String, String>> {
        v.as_array()?
            .iter()
            .map(|r| Some((r["_id"].as_str()?.to_string(), r[key].as_str()?.to_string())))
            .collect()
    };
    let (s, roles) = api.call(reqwest::Method::GET, "/api/roles", None).await;
    if s != 200 {
        return None;
    }
    let roles = names(roles, "name")?;
    let (s, groups) = api.call(reqwest::Method::GET, "/api/v1/groups", None).await;
    if s != 200 {
        return None;
    }
    let groups = names(groups, "name")?;
    let (s, users) = api.call(reqwest::Method::GET, "/api/v1/users", None).await;
    if s != 200 {
        return None;
    }
    let mut snap = Snapshot {
        users: BTreeMap::new(),
        raw: HashMap::new(),
    };
    for u in users.as_array()? {
        let name = u["userName"].as_str()?.to_lowercase();
        let group_names = u["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| {
                        let id = g.as_str().unwrap_or_default();
                        groups
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| format!("<unknown group {id}>"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let role = u["roleId"]
            .as_str()
            .and_then(|r| roles.get(r).cloned())
            .unwrap_or_else(|| format!("<role {}>", u["roleId"]));
        let account = Account {
            role,
            active: u["active"].as_bool().unwrap_or(true),
            groups: group_names,
        };
        let prev = snap.users.insert(name.clone(), account);
        assert!(prev.is_none(), "duplicate Sisense user {name}");
        snap.raw.insert(name, u.clone());
    }
    Some(snap)
}

/// Creates `pre@acme.test` (a consumer) directly in Sisense, before the Okta sequence, through
/// whatever faults the simulator injects.
pub async fn create_pre_user(base: &str) {
    retry(|| async {
        let api = SisenseApi::try_login(base).await?;
        let (s, roles) = api.call(reqwest::Method::GET, "/api/roles", None).await;
        if s != 200 {
            return None;
        }
        let role = roles.as_array()?.iter().find(|r| r["name"] == "consumer")?["_id"].clone();
        let (s, _) = api
            .call(
                reqwest::Method::POST,
                "/api/v1/users",
                Some(
                    json!({"email": "pre@acme.test", "userName": "pre@acme.test", "roleId": role}),
                ),
            )
            .await;
        // A 5xx may have created it anyway: a conflict on the retry means it is there.
        (s == 201 || s == 409 || snapshot(base).await?.users.contains_key("pre@acme.test"))
            .then_some(())
    })
    .await;
}

//! A ThoughtSpot admin client for the connector tests: it reads the end state through
//! ThoughtSpot's own REST API v2.0 (users with `account_status`, `user_groups` and `orgs`; groups
//! with their members and roles; Orgs; formula variable values), and makes what a test needs
//! made directly in ThoughtSpot (a user that exists before the bridge).
//!
//! It signs in as the cluster administrator `tsadmin` with its password (`auth/token/full`,
//! `org_id` 0), always with a `User-Agent` (the simulator refuses a request without one), signs
//! in again on a 401 (tokens run out: `--token-ttl-s`), and rides out the simulator's injected
//! faults: a 5xx, a 429 or no answer is retried (the simulator answers those instead of serving
//! the request, so a retried write is never made twice).
//!
//! The last sections serve the acceptance runs (tests/thoughtspot.rs,
//! tests/thoughtspot_chaos.rs): their variants (sequence, sign-in), the bridge's config for one,
//! the steps the runs add to the shared sequences through [`Hooks`] (an Org group `org-acme`,
//! and the enterprise `division` mapped to the formula variable `region`: set, changed,
//! cleared), and ThoughtSpot's end state (`Variant::diff`).
//!
//! Include it beside `idp.rs` and `bridge.rs` (it uses both through `super`):
//!
//! ```ignore
//! #[path = "support/idp.rs"]
//! mod idp;
//! #[path = "support/bridge.rs"]
//! mod bridge;
//! #[path = "support/thoughtspot_api.rs"]
//! mod thoughtspot_api;
//! ```
#![allow(dead_code)]

use super::bridge;
use super::idp::{patch_op, retry, Account, Expected, Hooks, Idp, Roles, Seq, Step};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The simulator's defaults (CONTRACT §1).
pub const ADMIN_USER: &str = "tsadmin";
pub const ADMIN_PASSWORD: &str = "admin";
pub const SECRET_KEY: &str = "simulator-secret-key";
/// The built-in groups the bridge never touches.
pub const ALL_GROUP: &str = "All";
pub const ADMIN_GROUP: &str = "Administrator";
/// The Primary Org's name in the simulator.
pub const PRIMARY_ORG: &str = "Primary";
/// The formula variable the runs map the enterprise `division` to.
pub const VARIABLE: &str = "region";
use super::idp::DIVISION_PATH;
/// The runs' Org group and the Org it stands for (`org_group_pattern = "org-*"`).
pub const ORG_GROUP: &str = "org-acme";
pub const ORG: &str = "acme";
/// The page size the client asks for (small, so that paging is exercised).
const PAGE_SIZE: usize = 50;

/// The group through which the bridge gives an RBAC role.
pub fn role_group(role: &str) -> String {
    format!("scim-bridge role {role}")
}

/// A ThoughtSpot user as the tests compare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsUser {
    pub id: String,
    pub display_name: String,
    pub email: String,
    /// `account_status`: ACTIVE, SUSPENDED, ...
    pub status: String,
    /// Names of the user's direct groups in the Primary Org ("All" left out).
    pub groups: BTreeSet<String>,
    /// Names of the user's Orgs.
    pub orgs: BTreeSet<String>,
}

/// A group of the Primary Org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsGroup {
    pub id: String,
    /// Lower-cased member names.
    pub members: BTreeSet<String>,
    /// Names of the RBAC roles the group carries.
    pub roles: Vec<String>,
}

/// What the checker reads of ThoughtSpot in one go.
#[derive(Clone, Debug)]
pub struct TsState {
    /// Users of the Primary Org or of the Org `acme`, by lower-cased name.
    pub users: BTreeMap<String, TsUser>,
    /// The Primary Org's groups by name.
    pub groups: BTreeMap<String, TsGroup>,
    /// The Orgs' names.
    pub orgs: BTreeSet<String>,
    /// `region`'s per-user values in the Primary Org: lower-cased user name → value list.
    pub region: BTreeMap<String, Vec<String>>,
    /// `region`'s values of any other scope (another Org, a group, a model, no principal).
    pub other_values: Vec<Value>,
}

/// The administrator's client of the cluster.
pub struct ThoughtspotApi {
    /// The cluster (`http://host:port`).
    pub base: String,
    http: reqwest::Client,
    token: Mutex<String>,
    /// Sign-ins sent, answered or not (the simulator's stats count the bridge's and these).
    sign_ins: Arc<AtomicU64>,
}

impl ThoughtspotApi {
    /// Signs in, waiting for the server (a simulator process may still be starting) and through
    /// faults.
    pub async fn login(base: &str) -> ThoughtspotApi {
        let http = reqwest::Client::builder()
            .user_agent("scim-bridge-tests/thoughtspot-checker")
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let sign_ins = Arc::new(AtomicU64::new(0));
        let token = retry(|| {
            sign_ins.fetch_add(1, Ordering::Relaxed);
            sign_in(&http, base)
        })
        .await;
        ThoughtspotApi {
            base: base.to_string(),
            http,
            token: Mutex::new(token),
            sign_ins,
        }
    }

    /// How many sign-ins this client has sent, answered or not.
    pub fn sign_ins(&self) -> u64 {
        self.sign_ins.load(Ordering::Relaxed)
    }

    /// One POST (or GET without a body) to `/api/rest/2.0/{path}`, signed in again once on a
    /// 401. `None` when it met a fault (no answer, 5xx, 429) or the new sign-in did; otherwise
    /// the status and the JSON body (`Null` when empty or not JSON).
    pub async fn try_call(&self, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        for attempt in 0..2 {
            let token = self.token.lock().unwrap().clone();
            let url = format!("{}/api/rest/2.0/{path}", self.base);
            let rb = match body {
                Some(b) => self
                    .http
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(b.to_string()),
                None => self.http.get(url),
            };
            let r = rb
                .bearer_auth(&token)
                .header("Accept", "application/json")
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            if status >= 500 || status == 429 {
                return None;
            }
            let text = r.text().await.ok()?;
            if status == 401 && attempt == 0 {
                self.sign_ins.fetch_add(1, Ordering::Relaxed);
                let fresh = sign_in(&self.http, &self.base).await?;
                *self.token.lock().unwrap() = fresh;
                continue;
            }
            return Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
        }
        None
    }

    /// `try_call` until it gets an answer.
    pub async fn call(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        retry(|| self.try_call(path, body)).await
    }

    /// Every item of a search: `filter` with `record_offset`/`record_size`, page by page until
    /// a short page (ThoughtSpot gives no total).
    pub async fn search_all(&self, path: &str, filter: Value) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let mut body = filter.clone();
            body["record_offset"] = json!(out.len());
            body["record_size"] = json!(PAGE_SIZE);
            let (s, v) = self.call(path, Some(&body)).await;
            assert_eq!(s, 200, "POST {path} {body}: {v}");
            let page = v
                .as_array()
                .cloned()
                .unwrap_or_else(|| panic!("POST {path}: not an array: {v}"));
            let n = page.len();
            out.extend(page);
            if n < PAGE_SIZE {
                return out;
            }
        }
    }

    /// Users of the Primary Org and of the Org `acme` (when it exists).
    pub async fn users(&self) -> Vec<Value> {
        self.search_all(
            "users/search",
            json!({"org_identifiers": [PRIMARY_ORG, ORG]}),
        )
        .await
    }

    /// The Primary Org's groups with their members.
    pub async fn groups(&self) -> Vec<Value> {
        self.search_all(
            "groups/search",
            json!({"include_users": true, "include_sub_groups": false}),
        )
        .await
    }

    /// Every Org.
    pub async fn orgs(&self) -> Vec<Value> {
        let (s, v) = self.call("orgs/search", Some(&json!({}))).await;
        assert_eq!(s, 200, "orgs/search: {v}");
        v.as_array().cloned().unwrap_or_default()
    }

    /// The formula variable `name` with its values (`METADATA_AND_VALUES`).
    pub async fn variable(&self, name: &str) -> Value {
        let vars = self
            .search_all(
                "template/variables/search",
                json!({"variable_details": [{"identifier": name}],
                       "response_content": "METADATA_AND_VALUES"}),
            )
            .await;
        vars.into_iter()
            .find(|v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .unwrap_or_else(|| panic!("ThoughtSpot has no variable {name}"))
    }

    /// Users, groups, Orgs and `region`'s values. Panics on two users of one name.
    pub async fn state(&self) -> TsState {
        let mut users = BTreeMap::new();
        for u in self.users().await {
            let s = |k: &str| u[k].as_str().unwrap_or_default().to_string();
            let names = |k: &str| -> BTreeSet<String> {
                u[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g["name"].as_str().map(str::to_string))
                    .collect()
            };
            let mut groups = names("user_groups");
            groups.remove(ALL_GROUP);
            let user = TsUser {
                id: s("id"),
                display_name: s("display_name"),
                email: s("email"),
                status: s("account_status"),
                groups,
                orgs: names("orgs"),
            };
            let name = s("name").to_lowercase();
            let prev = users.insert(name.clone(), user);
            assert!(prev.is_none(), "two ThoughtSpot users named {name}");
        }
        let mut groups = BTreeMap::new();
        for g in self.groups().await {
            let names = |k: &str| -> Vec<String> {
                g[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["name"].as_str().map(str::to_string))
                    .collect()
            };
            groups.insert(
                g["name"].as_str().unwrap_or_default().to_string(),
                TsGroup {
                    id: g["id"].as_str().unwrap_or_default().to_string(),
                    members: names("users")
                        .into_iter()
                        .map(|n| n.to_lowercase())
                        .collect(),
                    roles: names("roles"),
                },
            );
        }
        let orgs = self
            .orgs()
            .await
            .iter()
            .filter_map(|o| o["name"].as_str().map(str::to_string))
            .collect();
        let mut region = BTreeMap::new();
        let mut other_values = Vec::new();
        for v in self.variable(VARIABLE).await["values"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let user_scope = v["principal_type"] == "USER"
                && v["org_identifier"] == PRIMARY_ORG
                && v.get("model_identifier").is_none_or(Value::is_null);
            match v["principal_identifier"].as_str() {
                Some(who) if user_scope => {
                    let list: Vec<String> = match (&v["value_list"], &v["value"]) {
                        (Value::Array(l), _) => l
                            .iter()
                            .map(|x| x.as_str().unwrap_or_default().to_string())
                            .collect(),
                        (_, Value::String(one)) => vec![one.clone()],
                        _ => Vec::new(),
                    };
                    region.insert(who.to_lowercase(), list);
                }
                _ => other_values.push(v.clone()),
            }
        }
        TsState {
            users,
            groups,
            orgs,
            region,
            other_values,
        }
    }

    /// Adds a user directly in ThoughtSpot (as an administrator would, before the bridge): its
    /// id. A user of that name already there is taken.
    pub async fn create_user(&self, name: &str, display_name: &str) -> String {
        let body = json!({"name": name, "display_name": display_name, "email": name,
                          "account_status": "ACTIVE"});
        let (s, v) = self.call("users/create", Some(&body)).await;
        if s == 200 {
            return v["id"].as_str().unwrap().to_string();
        }
        let found = self
            .search_all("users/search", json!({"user_identifier": name}))
            .await;
        found
            .first()
            .and_then(|u| u["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("create {name}: {s} {v}, and no such user"))
    }
}

/// A password sign-in as `tsadmin` to the Primary Org; `None` on a fault or a refusal.
async fn sign_in(http: &reqwest::Client, base: &str) -> Option<String> {
    let body = json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD, "org_id": 0,
                      "validity_time_in_sec": 300});
    let r = http
        .post(format!("{base}/api/rest/2.0/auth/token/full"))
        .header("Accept", "application/json")
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    if r.status().as_u16() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    Some(v["token"].as_str()?.to_string())
}

// ---------------------------------------------------------------------------------------------
// The acceptance runs: the shared Okta and Entra sequences (idp.rs) against ThoughtSpot.
// ---------------------------------------------------------------------------------------------

/// What the runs' role rules give: `BI Admins → Analyst`, `BI Designers → Analyst`, default
/// `Viewer` (RBAC roles of the simulator, held through the bridge's role groups).
pub const TS_ROLES: Roles = Roles {
    admin: "Analyst",
    designer: "Analyst",
    default: "Viewer",
};
/// The role of a user in no role group, as `accounts` shows it.
pub const NO_ROLE: &str = "(no role group)";
/// The bridge's tenant in the runs, and the IdP's token for it.
pub const BRIDGE_TENANT: &str = "acme-thoughtspot";
pub const BRIDGE_TOKEN: &str = "test-token-thoughtspot-0123456789";

/// How the bridge signs in to ThoughtSpot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    Password,
    SecretKey,
}

/// One variant of an acceptance run: which sequence and sign-in.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub seq: Seq,
    pub sign_in: SignIn,
}

impl Variant {
    /// Both sequences, each with one sign-in method, the two methods between them
    /// (`okta/password`, `entra/secret_key`): what every run covers.
    pub fn two() -> Vec<(String, Variant)> {
        Self::of(&[
            (Seq::Okta, SignIn::Password),
            (Seq::Entra, SignIn::SecretKey),
        ])
    }

    /// Each sequence with each sign-in method (the clean run, which is cheap).
    pub fn four() -> Vec<(String, Variant)> {
        Self::of(&[
            (Seq::Okta, SignIn::Password),
            (Seq::Entra, SignIn::SecretKey),
            (Seq::Okta, SignIn::SecretKey),
            (Seq::Entra, SignIn::Password),
        ])
    }

    fn of(list: &[(Seq, SignIn)]) -> Vec<(String, Variant)> {
        list.iter()
            .map(|&(seq, sign_in)| {
                let v = Variant { seq, sign_in };
                (v.name(), v)
            })
            .collect()
    }

    pub fn name(&self) -> String {
        let sign_in = match self.sign_in {
            SignIn::Password => "password",
            SignIn::SecretKey => "secret_key",
        };
        format!("{}/{sign_in}", self.seq.name())
    }

    /// The bridge's config file: one thoughtspot tenant in front of the simulator at
    /// `sim_base`, with the variant's sign-in, `token_validity_s` (capped by the simulator's
    /// `--token-ttl-s`), Orgs from `org-*` groups, the runs' role rules and `region` mapped to
    /// the enterprise `division`.
    pub fn bridge_toml(
        &self,
        listen: &str,
        data_dir: &std::path::Path,
        sim_base: &str,
        token_validity_s: u64,
    ) -> String {
        let sign_in = match self.sign_in {
            SignIn::Password => format!("password = \"{ADMIN_PASSWORD}\""),
            SignIn::SecretKey => format!("secret_key = \"{SECRET_KEY}\""),
        };
        format!(
            r#"listen = "{listen}"
data_dir = "{data}"

[[tenants]]
id = "{BRIDGE_TENANT}"
tokens = ["{BRIDGE_TOKEN}"]

[tenants.vendor]
kind = "thoughtspot"
base_url = "{sim_base}/"
username = "{ADMIN_USER}"
{sign_in}
org_id = 0
token_validity_s = {token_validity_s}
org_group_pattern = "org-*"
create_orgs = true

[tenants.roles]
default = "{default}"
rules = [
  {{ group = "BI Admins", role = "{admin}" }},
  {{ group = "BI Designers", role = "{designer}" }},
]

[tenants.attributes]
{VARIABLE} = "{DIVISION_PATH}"
"#,
            data = data_dir.display(),
            default = TS_ROLES.default,
            admin = TS_ROLES.admin,
            designer = TS_ROLES.designer,
        )
    }

    /// ThoughtSpot's end state after the sequence and the runs' extra steps (`Extra`).
    pub fn expected(&self) -> TsExpected {
        let (acme, region): (&[&str], &[(&str, &str)]) = match self.seq {
            Seq::Okta => (
                &["ada@acme.test", "pre@acme.test"],
                &[("ada@acme.test", "APAC")],
            ),
            Seq::Entra => (
                &["eve@contoso.test", "fay@contoso.test"],
                &[("fay@contoso.test", "EMEA")],
            ),
        };
        TsExpected {
            accounts: self.seq.expected(&TS_ROLES),
            acme: acme.iter().map(|s| s.to_string()).collect(),
            region: region
                .iter()
                .map(|(u, v)| (u.to_string(), vec![v.to_string()]))
                .collect(),
        }
    }

    /// The display name and email ThoughtSpot must show for each user the sequence wrote: the
    /// IdP's `displayName`, else given and family name. Okta sent "Bob Builder" at create and
    /// its PUT sends it back unchanged (bob's new given name has no place in ThoughtSpot, which
    /// keeps one display name); Entra sends no `displayName`, so fay's new family name shows.
    /// `pre@acme.test` was made in ThoughtSpot and its profile never written.
    pub fn display_names(&self) -> &'static [(&'static str, &'static str)] {
        match self.seq {
            Seq::Okta => &[
                ("ada@acme.test", "Ada Lovelace"),
                ("bob@acme.test", "Bob Builder"),
                ("cy@acme.test", "Cy Young"),
                ("dee@acme.test", "Dee Dee"),
            ],
            Seq::Entra => &[
                ("eve@contoso.test", "E eve"),
                ("fay@contoso.test", "E Fairfax"),
            ],
        }
    }

    /// How ThoughtSpot differs from the end state.
    pub fn diff(&self, state: &TsState) -> Vec<String> {
        let mut out = self.expected().diff(state);
        out.extend(profile_diff(state, self.display_names()));
        out
    }
}

/// ThoughtSpot's end state: the accounts in idp.rs's terms, the Org `acme`'s members and
/// `region`'s values.
#[derive(Clone, Debug)]
pub struct TsExpected {
    pub accounts: Expected,
    /// Lower-cased logins in the Org `acme`.
    pub acme: BTreeSet<String>,
    /// Lower-cased login → `region`'s value list; nobody else has a value.
    pub region: BTreeMap<String, Vec<String>>,
}

impl TsExpected {
    pub fn diff(&self, state: &TsState) -> Vec<String> {
        // The admin is ThoughtSpot's own user besides the sequence's.
        let mut out = self.accounts.diff(&accounts(state), 1);
        out.extend(builtin_diff(state));
        // Mirrored groups are those of the sequence; the Org group is an Org, not a group.
        let want_groups: BTreeSet<String> = [
            ALL_GROUP.to_string(),
            ADMIN_GROUP.to_string(),
            "BI Admins".to_string(),
            "BI Designers".to_string(),
            role_group(TS_ROLES.admin),
            role_group(TS_ROLES.default),
        ]
        .into();
        let have_groups: BTreeSet<String> = state.groups.keys().cloned().collect();
        if have_groups != want_groups {
            out.push(format!("groups: want {want_groups:?}, got {have_groups:?}"));
        }
        out.extend(org_diff(state, Some(&self.acme)));
        out.extend(region_diff(state, &self.region));
        out
    }
}

/// ThoughtSpot's users as idp.rs compares accounts: the role held through the bridge's role
/// groups (`NO_ROLE` for none, `A+B` for several), active when ACTIVE, and the groups but the
/// built-in and the role groups.
pub fn accounts(state: &TsState) -> BTreeMap<String, Account> {
    state
        .users
        .iter()
        .map(|(name, u)| {
            let roles: Vec<&str> = u
                .groups
                .iter()
                .filter_map(|g| g.strip_prefix("scim-bridge role "))
                .collect();
            let role = if roles.is_empty() {
                NO_ROLE.to_string()
            } else {
                roles.join("+")
            };
            let groups = u
                .groups
                .iter()
                .filter(|g| !g.starts_with("scim-bridge role ") && *g != ADMIN_GROUP)
                .cloned()
                .collect();
            let account = Account {
                role,
                active: u.status == "ACTIVE",
                groups,
            };
            (name.clone(), account)
        })
        .collect()
}

/// The built-in groups untouched (All there; Administrator exactly the admin, the admin in it
/// and in no role group), the role groups carrying exactly their role, and every group's member
/// list agreeing with its members' `user_groups`.
pub fn builtin_diff(state: &TsState) -> Vec<String> {
    let mut out = Vec::new();
    // All: every user of the Org, and no role.
    let primary: BTreeSet<String> = state
        .users
        .iter()
        .filter(|(_, u)| u.orgs.contains(PRIMARY_ORG))
        .map(|(n, _)| n.clone())
        .collect();
    match state.groups.get(ALL_GROUP) {
        Some(g) if g.members == primary && g.roles.is_empty() => {}
        other => out.push(format!("All: want every user and no role, got {other:?}")),
    }
    let admins = state.groups.get(ADMIN_GROUP).map(|g| &g.members);
    if admins != Some(&BTreeSet::from([ADMIN_USER.to_string()])) {
        out.push(format!(
            "Administrator's members: want [{ADMIN_USER}], got {admins:?}"
        ));
    }
    match state.users.get(ADMIN_USER) {
        Some(a)
            if a.status == "ACTIVE" && a.groups == BTreeSet::from([ADMIN_GROUP.to_string()]) => {}
        other => out.push(format!(
            "{ADMIN_USER}: want ACTIVE in Administrator only, got {other:?}"
        )),
    }
    for role in [TS_ROLES.admin, TS_ROLES.default] {
        let name = role_group(role);
        if let Some(g) = state.groups.get(&name) {
            if g.roles != [role] {
                out.push(format!("{name} carries roles {:?}, want [{role}]", g.roles));
            }
        }
    }
    for (gname, g) in &state.groups {
        if gname == ALL_GROUP {
            continue;
        }
        let by_user: BTreeSet<String> = state
            .users
            .iter()
            .filter(|(_, u)| u.groups.contains(gname))
            .map(|(n, _)| n.clone())
            .collect();
        if by_user != g.members {
            out.push(format!(
                "{gname}: members {:?}, but users' user_groups say {by_user:?}",
                g.members
            ));
        }
    }
    out
}

/// Every user in the Primary Org, and (when `acme` is given) exactly those in the Org `acme`,
/// which must then exist.
pub fn org_diff(state: &TsState, acme: Option<&BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, u) in &state.users {
        if !u.orgs.contains(PRIMARY_ORG) {
            out.push(format!("{name} is not in the Primary Org: {:?}", u.orgs));
        }
    }
    if let Some(want) = acme {
        if !state.orgs.contains(ORG) {
            out.push(format!("no Org {ORG}: {:?}", state.orgs));
        }
        let have: BTreeSet<String> = state
            .users
            .iter()
            .filter(|(_, u)| u.orgs.contains(ORG))
            .map(|(n, _)| n.clone())
            .collect();
        if &have != want {
            out.push(format!("Org {ORG}'s members: want {want:?}, got {have:?}"));
        }
    }
    out
}

/// `region`'s values exactly `want`, and no value of another scope.
pub fn region_diff(state: &TsState, want: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    if &state.region != want {
        out.push(format!(
            "{VARIABLE} values: want {want:?}, got {:?}",
            state.region
        ));
    }
    if !state.other_values.is_empty() {
        out.push(format!(
            "{VARIABLE} values of other scopes: {:?}",
            state.other_values
        ));
    }
    out
}

/// Where the users of `want` (login → display name) differ in display name, or in an email
/// other than the login.
pub fn profile_diff(state: &TsState, want: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (login, display) in want {
        let Some(u) = state.users.get(*login) else {
            continue; // reported by the account comparison
        };
        if (u.display_name.as_str(), u.email.as_str()) != (*display, *login) {
            out.push(format!(
                "{login}: want display name {display:?} and email {login:?}, got {:?} and {:?}",
                u.display_name, u.email
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The runs' extra IdP steps: an Org group, and the enterprise division (→ `region`).
// ---------------------------------------------------------------------------------------------

/// The hooks of a run: after each step of the shared sequence, the run's extra IdP writes for
/// ThoughtSpot (`extra_step`), then `pause` after the profile change (the fault run's idle
/// pause, so the bridge's token runs out); `mid` is the sequence's halfway hook (the freeze).
pub struct Extra<'a> {
    pub idp: Idp,
    pub seq: Seq,
    pub mid: Option<Box<dyn FnMut() + Send + 'a>>,
    pub pause: Option<Duration>,
}

impl<'a> Extra<'a> {
    pub fn new(idp: &Idp, seq: Seq) -> Extra<'a> {
        Extra {
            idp: idp.clone(),
            seq,
            mid: None,
            pause: None,
        }
    }
}

impl Hooks for Extra<'_> {
    fn mid(&mut self) {
        if let Some(f) = self.mid.as_mut() {
            f()
        }
    }

    async fn after(&mut self, step: Step) {
        extra_step(&self.idp, self.seq, step).await;
        if step == Step::ProfileChanged {
            if let Some(p) = self.pause {
                tokio::time::sleep(p).await;
            }
        }
    }
}

/// The extra IdP writes after `step`:
///
/// - Okta: after the assignments ada's division is EMEA and bob's AMER (PUT of the whole user);
///   after the membership changes the group `org-acme` is pushed with ada and bob, pre is added
///   and bob removed; after the profile change ada's division is APAC and bob's is gone.
/// - Entra: after the creates eve's division is EMEA, fay's AMER, gus's APAC (attribute PATCH
///   `Add`); after the membership changes `org-acme` is created empty and eve, fay and gus
///   added; after the profile change fay's is EMEA (`Replace`) and eve's removed (`Remove`).
///   gus is deleted later by the sequence.
pub async fn extra_step(idp: &Idp, seq: Seq, step: Step) {
    let l = &idp.label;
    match (seq, step) {
        (Seq::Okta, Step::UsersAssigned) => {
            idp.okta_division("ada@acme.test", Some("EMEA")).await;
            idp.okta_division("bob@acme.test", Some("AMER")).await;
        }
        (Seq::Okta, Step::MembersChanged) => {
            let ada = idp.user_id("ada@acme.test").await;
            let bob = idp.user_id("bob@acme.test").await;
            let pre = idp.user_id("pre@acme.test").await;
            assert!(idp.find_group(ORG_GROUP).await.is_none(), "{l}");
            let (s, v) = idp
                .post(
                    "/Groups",
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": ORG_GROUP,
                           "members": [{"value": ada, "display": "ada@acme.test"}, {"value": bob, "display": "bob@acme.test"}]}),
                )
                .await;
            assert_eq!(s, 201, "{l}: push {ORG_GROUP}: {v}");
            let gid = v["id"].as_str().unwrap().to_string();
            idp.patch_ok(
                &format!("/Groups/{gid}"),
                json!([
                    {"op": "replace", "value": {"id": gid, "displayName": ORG_GROUP}},
                    {"op": "add", "path": "members", "value": [{"value": pre}]}
                ]),
            )
            .await;
            idp.patch_ok(
                &format!("/Groups/{gid}"),
                json!([{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]),
            )
            .await;
        }
        (Seq::Okta, Step::ProfileChanged) => {
            idp.okta_division("ada@acme.test", Some("APAC")).await;
            idp.okta_division("bob@acme.test", None).await;
        }
        (Seq::Entra, Step::UsersAssigned) => {
            for (name, d) in [("eve", "EMEA"), ("fay", "AMER"), ("gus", "APAC")] {
                idp.entra_division(&format!("{name}@contoso.test"), "Add", Some(d))
                    .await;
            }
        }
        (Seq::Entra, Step::MembersChanged) => {
            let mut ids = Vec::new();
            for name in ["eve", "fay", "gus"] {
                ids.push(idp.user_id(&format!("{name}@contoso.test")).await);
            }
            let (s, v) = idp
                .post(
                    "/Groups",
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                           "externalId": "8aa1-org-acme", "displayName": ORG_GROUP,
                           "meta": {"resourceType": "Group"}}),
                )
                .await;
            assert_eq!(s, 201, "{l}: create {ORG_GROUP}: {v}");
            let gid = v["id"].as_str().unwrap().to_string();
            let members: Vec<Value> = ids.iter().map(|i| json!({"value": i})).collect();
            let (s, v) = idp
                .patch(
                    &format!("/Groups/{gid}"),
                    patch_op(json!([{"op": "Add", "path": "members", "value": members}])),
                )
                .await;
            assert!(s == 200 || s == 204, "{l}: {s} {v}");
        }
        (Seq::Entra, Step::ProfileChanged) => {
            idp.entra_division("fay@contoso.test", "Replace", Some("EMEA"))
                .await;
            idp.entra_division("eve@contoso.test", "Remove", None).await;
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The bridge of a run, and the end state.
// ---------------------------------------------------------------------------------------------

/// The bridge of a run in this process: the variant's config file read as `serve` reads it,
/// built and started as `serve` does, on a free port.
pub async fn serve_in_process(
    v: &Variant,
    sim_base: &str,
    data_dir: &std::path::Path,
    token_validity_s: u64,
) -> scim_bridge::server::RunningServer {
    let text = v.bridge_toml("127.0.0.1:0", data_dir, sim_base, token_validity_s);
    bridge::serve_toml(&v.name(), &text).await
}

/// `serve_in_process`, and the IdP's client of its tenant (`Policy::Checked`, labelled `label`)
/// once the bridge is ready.
pub async fn serve_checked(
    v: &Variant,
    sim_base: &str,
    data_dir: &std::path::Path,
    token_validity_s: u64,
    label: &str,
) -> (scim_bridge::server::RunningServer, Idp) {
    let server = serve_in_process(v, sim_base, data_dir, token_validity_s).await;
    let idp = Idp::checked(&bridge::root(&server), BRIDGE_TENANT, BRIDGE_TOKEN, label)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    (server, idp)
}

/// The tenant's outbox depth in `state` (`pending` or `failed`), from the `/metrics` of the
/// bridge's admin listener at `admin_root`.
pub async fn outbox_depth(admin_root: &str, state: &str) -> f64 {
    bridge::outbox_depth(admin_root, BRIDGE_TENANT, state).await
}

/// A variant's end state in ThoughtSpot, for `bridge::settle`.
struct EndState<'a> {
    v: &'a Variant,
    api: &'a ThoughtspotApi,
}

impl bridge::Checker for EndState<'_> {
    type State = TsState;
    const VENDOR: &'static str = "ThoughtSpot";
    async fn read(&self) -> Option<TsState> {
        Some(self.api.state().await)
    }
    fn diff(&self, state: &TsState) -> Vec<String> {
        self.v.diff(state)
    }
    /// The bridge's tenant is the Primary Org: its users are those in it.
    fn users(&self, state: &TsState) -> BTreeSet<String> {
        state
            .users
            .iter()
            .filter(|(_, u)| u.orgs.contains(PRIMARY_ORG))
            .map(|(n, _)| n.clone())
            .collect()
    }
    async fn context(&self, idp: &Idp) -> String {
        bridge::outbox_summary(idp.admin_root(), BRIDGE_TENANT).await
    }
    fn trace(&self) -> bool {
        std::env::var_os("THOUGHTSPOT_TRACE").is_some()
    }
}

/// Reads ThoughtSpot until the variant's end state holds (`Variant::diff`), failing `limit`
/// after the IdP's last write with what still differs. Then the bridge must list exactly
/// ThoughtSpot's users and hold no refused change. ThoughtSpot's state. With
/// `THOUGHTSPOT_TRACE` set, every read that still differs is printed with the outbox's depth.
pub async fn settle(idp: &Idp, v: &Variant, api: &ThoughtspotApi, limit: Duration) -> TsState {
    let state = bridge::settle(idp, &EndState { v, api }, limit).await;
    bridge::assert_no_refused(idp, BRIDGE_TENANT).await;
    state
}

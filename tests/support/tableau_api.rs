//! A Tableau admin client for the connector tests: it reads the end state through Tableau's own
//! REST API (users with their site roles, groups and members), and makes what a test needs made
//! directly in Tableau (a user that exists before the bridge, content a user owns).
//!
//! It signs in with the site administrator's name and password, never with the PAT: Tableau
//! allows one session per PAT, and a second PAT sign-in would end the bridge's session. It speaks
//! JSON (API 3.24), signs in again on a 401 (an idle timeout, `--token-ttl-s`), and rides out the
//! simulator's injected faults: a 5xx, a 429 or no answer is retried (the simulator answers those
//! instead of serving the request, so a retried write is never made twice).
//!
//! The last section serves the acceptance runs (tests/tableau.rs, tests/tableau_chaos.rs): their
//! variants (sequence, sign-in, flavour), the bridge's config for one, and Tableau's end state in
//! idp.rs's vendor-neutral terms (`Variant::diff`).
//!
//! Include it beside `idp.rs` and `bridge.rs` (it uses both through `super`):
//!
//! ```ignore
//! #[path = "support/idp.rs"]
//! mod idp;
//! #[path = "support/bridge.rs"]
//! mod bridge;
//! #[path = "support/tableau_api.rs"]
//! mod tableau_api;
//! ```
#![allow(dead_code)]

use super::bridge;
use super::idp::{retry, Account, Expected, Idp, Roles, Seq};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// The REST API version the client speaks.
pub const API_VERSION: &str = "3.24";
/// The simulator's defaults (CONTRACT §1).
pub const SITE: &str = "default";
pub const ADMIN_USER: &str = "admin@tableau.local";
pub const ADMIN_PASSWORD: &str = "admin";
pub const PAT_NAME: &str = "scim-bridge";
pub const PAT_SECRET: &str = "simulator-pat-secret";
pub const CLIENT_ID: &str = "sim-client";
pub const SECRET_ID: &str = "sim-secret-id";
pub const SECRET_VALUE: &str = "simulator-connected-app-secret";
/// The group every user of a site is in; `state` leaves it out.
pub const ALL_USERS: &str = "All Users";
/// The page size the client asks for.
const PAGE_SIZE: usize = 100;

/// A Tableau user as the tests compare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableauUser {
    /// The user's LUID.
    pub id: String,
    pub site_role: String,
    pub email: String,
    pub full_name: String,
    /// Names of the groups the user is in, "All Users" left out.
    pub groups: BTreeSet<String>,
}

/// A signed-in session.
#[derive(Clone)]
struct Session {
    token: String,
    site_id: String,
    user_id: String,
}

/// The administrator's client of one site.
pub struct TableauApi {
    /// The server (`http://host:port`).
    pub base: String,
    /// The site's contentUrl.
    pub site: String,
    http: reqwest::Client,
    session: Mutex<Session>,
}

impl TableauApi {
    /// Signs in to the site `default`, waiting for the server (a simulator process may still be
    /// starting) and through faults.
    pub async fn login(base: &str) -> TableauApi {
        Self::login_to(base, SITE).await
    }

    /// Signs in to the site with `content_url`, waiting and retrying as `login` does.
    pub async fn login_to(base: &str, content_url: &str) -> TableauApi {
        retry(|| Self::try_login(base, content_url)).await
    }

    /// One sign-in; `None` when it met a fault or the server is not up yet.
    pub async fn try_login(base: &str, content_url: &str) -> Option<TableauApi> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let session = sign_in(&http, base, content_url).await?;
        Some(TableauApi {
            base: base.to_string(),
            site: content_url.to_string(),
            http,
            session: Mutex::new(session),
        })
    }

    /// The site's LUID.
    pub fn site_id(&self) -> String {
        self.session().site_id
    }

    /// The administrator's own LUID.
    pub fn admin_id(&self) -> String {
        self.session().user_id
    }

    fn session(&self) -> Session {
        self.session.lock().unwrap().clone()
    }

    /// One request to `/api/3.24/sites/{site}/{path}`, signed in again once on a 401. `None`
    /// when it met a fault (no answer, 5xx, 429) or the new sign-in did; otherwise the status
    /// and the JSON body (`Null` when empty or not JSON).
    pub async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        for attempt in 0..2 {
            let s = self.session();
            let url = format!("{}/api/{API_VERSION}/sites/{}/{path}", self.base, s.site_id);
            let mut rb = self
                .http
                .request(method.clone(), url)
                .header("X-Tableau-Auth", &s.token)
                .header("Accept", "application/json");
            if let Some(b) = body {
                rb = rb
                    .header("Content-Type", "application/json")
                    .body(b.to_string());
            }
            let r = rb.send().await.ok()?;
            let status = r.status().as_u16();
            if status >= 500 || status == 429 {
                return None;
            }
            let text = r.text().await.ok()?;
            if status == 401 && attempt == 0 {
                let fresh = sign_in(&self.http, &self.base, &self.site).await?;
                *self.session.lock().unwrap() = fresh;
                continue;
            }
            return Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
        }
        None
    }

    /// `try_call` until it gets an answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        retry(|| self.try_call(method.clone(), path, body)).await
    }

    /// Every item of a paged list: `path` (which may carry a query) page by page until
    /// `totalAvailable` items are read. `collection`/`item` name the JSON keys
    /// (`{"users": {"user": [...]}}`; an empty page is `{"users": {}}`).
    pub async fn all_pages(&self, path: &str, collection: &str, item: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        for page in 1.. {
            let (s, v) = self
                .call(
                    reqwest::Method::GET,
                    &format!("{path}{sep}pageSize={PAGE_SIZE}&pageNumber={page}"),
                    None,
                )
                .await;
            assert_eq!(s, 200, "GET {path} page {page}: {v}");
            let items = v[collection][item].as_array().cloned().unwrap_or_default();
            let total: usize = v["pagination"]["totalAvailable"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("GET {path}: no pagination: {v}"));
            let last = items.is_empty();
            out.extend(items);
            if out.len() >= total || last {
                break;
            }
        }
        out
    }

    /// Every user of the site (`GET users`, all pages).
    pub async fn users(&self) -> Vec<Value> {
        self.all_pages("users", "users", "user").await
    }

    /// Every group of the site, "All Users" included.
    pub async fn groups(&self) -> Vec<Value> {
        self.all_pages("groups", "groups", "group").await
    }

    /// The members of a group.
    pub async fn group_members(&self, group_id: &str) -> Vec<Value> {
        self.all_pages(&format!("groups/{group_id}/users"), "users", "user")
            .await
    }

    /// The user named `name` (case-insensitive, as Tableau compares names), if any.
    pub async fn user_by_name(&self, name: &str) -> Option<Value> {
        self.users().await.into_iter().find(|u| {
            u["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    /// The site's users by lower-cased name, with their site role, email, full name and groups
    /// ("All Users" left out). Panics on two users with the same name.
    pub async fn state(&self) -> BTreeMap<String, TableauUser> {
        let mut by_id: BTreeMap<String, (String, TableauUser)> = BTreeMap::new();
        for u in self.users().await {
            let attr = |k: &str| u[k].as_str().unwrap_or_default().to_string();
            let user = TableauUser {
                id: attr("id"),
                site_role: attr("siteRole"),
                email: attr("email"),
                full_name: attr("fullName"),
                groups: BTreeSet::new(),
            };
            by_id.insert(user.id.clone(), (attr("name").to_lowercase(), user));
        }
        for g in self.groups().await {
            let name = g["name"].as_str().unwrap_or_default().to_string();
            if name == ALL_USERS {
                continue;
            }
            let gid = g["id"].as_str().unwrap_or_default();
            for m in self.group_members(gid).await {
                let id = m["id"].as_str().unwrap_or_default();
                // A member the user list did not have was added between the two reads.
                if let Some((_, u)) = by_id.get_mut(id) {
                    u.groups.insert(name.clone());
                }
            }
        }
        let mut out = BTreeMap::new();
        for (_, (name, user)) in by_id {
            let prev = out.insert(name.clone(), user);
            assert!(prev.is_none(), "two Tableau users named {name}");
        }
        out
    }

    /// Adds a user directly in Tableau (as an administrator would, before the bridge): its LUID.
    /// A user of that name already there (a retried add the simulator had served) is taken.
    pub async fn create_user(&self, name: &str, site_role: &str) -> String {
        let body = json!({"user": {"name": name, "siteRole": site_role}});
        let (s, v) = self.call(reqwest::Method::POST, "users", Some(&body)).await;
        match s {
            201 => v["user"]["id"].as_str().unwrap().to_string(),
            409 => self
                .user_by_name(name)
                .await
                .and_then(|u| u["id"].as_str().map(str::to_string))
                .unwrap_or_else(|| panic!("add {name}: 409 but no such user: {v}")),
            _ => panic!("add {name} as {site_role}: {s} {v}"),
        }
    }

    /// Creates a group: its LUID. A group of that name already there is taken.
    pub async fn create_group(&self, name: &str) -> String {
        let body = json!({"group": {"name": name}});
        let (s, v) = self
            .call(reqwest::Method::POST, "groups", Some(&body))
            .await;
        match s {
            201 => v["group"]["id"].as_str().unwrap().to_string(),
            409 => self
                .groups()
                .await
                .into_iter()
                .find(|g| {
                    g["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .and_then(|g| g["id"].as_str().map(str::to_string))
                .unwrap_or_else(|| panic!("create group {name}: 409 but no such group: {v}")),
            _ => panic!("create group {name}: {s} {v}"),
        }
    }

    /// Adds a user to a group (already a member is fine).
    pub async fn add_member(&self, group_id: &str, user_id: &str) {
        let body = json!({"user": {"id": user_id}});
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                &format!("groups/{group_id}/users"),
                Some(&body),
            )
            .await;
        assert!(
            s == 200 || (s == 409 && v["error"]["code"] == "409011"),
            "add {user_id} to {group_id}: {s} {v}"
        );
    }

    /// Makes the user own `count` content items (simulator control; a user who owns content
    /// cannot be removed: 409003).
    pub async fn set_content(&self, user_id: &str, count: u32) {
        let url = format!(
            "{}/__sim/tableau/sites/{}/users/{user_id}/content?count={count}",
            self.base,
            self.site_id()
        );
        let status = retry(|| async {
            let s = self.http.put(&url).send().await.ok()?.status().as_u16();
            (s < 500 && s != 429).then_some(s)
        })
        .await;
        assert_eq!(status, 204, "PUT {url}");
    }
}

/// A password sign-in as the site administrator; `None` on a fault or a refusal.
async fn sign_in(http: &reqwest::Client, base: &str, content_url: &str) -> Option<Session> {
    let body = json!({"credentials": {"name": ADMIN_USER, "password": ADMIN_PASSWORD,
                                      "site": {"contentUrl": content_url}}});
    let r = http
        .post(format!("{base}/api/{API_VERSION}/auth/signin"))
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
    let c = &v["credentials"];
    Some(Session {
        token: c["token"].as_str()?.to_string(),
        site_id: c["site"]["id"].as_str()?.to_string(),
        user_id: c["user"]["id"].as_str()?.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// The acceptance runs: the shared Okta and Entra sequences (idp.rs) against Tableau.
// ---------------------------------------------------------------------------------------------

/// What the runs' role rules give: `BI Admins → SiteAdministratorCreator`, `BI Designers →
/// Creator`, default `Viewer`.
pub const TABLEAU_ROLES: Roles = Roles {
    admin: "SiteAdministratorCreator",
    designer: "Creator",
    default: "Viewer",
};
/// The site role of a user without access: Tableau's deactivation.
pub const UNLICENSED: &str = "Unlicensed";
/// The bridge's tenant in the runs, and the IdP's token for it.
pub const BRIDGE_TENANT: &str = "acme-tableau";
pub const BRIDGE_TOKEN: &str = "test-token-tableau-0123456789abcdef";

/// How the bridge signs in to Tableau.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// A personal access token (the simulator's `scim-bridge`).
    Pat,
    /// A connected app's JWT (the simulator's `sim-client`, as the site admin).
    Jwt,
}

/// Tableau Server or Tableau Cloud (the simulator's `tableau.flavor` and the tenant's `flavor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Server,
    Cloud,
}

/// One variant of an acceptance run: which sequence, sign-in and flavour.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub seq: Seq,
    pub sign_in: SignIn,
    pub flavor: Flavor,
}

impl Variant {
    /// The four variants of every run, labelled `okta/pat/server` and so on: both sequences,
    /// both sign-in methods and both flavours, each sequence with each sign-in and each flavour.
    pub fn all() -> Vec<(String, Variant)> {
        [
            (Seq::Okta, SignIn::Pat, Flavor::Server),
            (Seq::Okta, SignIn::Jwt, Flavor::Cloud),
            (Seq::Entra, SignIn::Jwt, Flavor::Server),
            (Seq::Entra, SignIn::Pat, Flavor::Cloud),
        ]
        .into_iter()
        .map(|(seq, sign_in, flavor)| {
            let v = Variant {
                seq,
                sign_in,
                flavor,
            };
            (v.name(), v)
        })
        .collect()
    }

    pub fn name(&self) -> String {
        let sign_in = match self.sign_in {
            SignIn::Pat => "pat",
            SignIn::Jwt => "jwt",
        };
        format!("{}/{sign_in}/{}", self.seq.name(), self.flavor_key())
    }

    /// The `flavor` key's value.
    pub fn flavor_key(&self) -> &'static str {
        match self.flavor {
            Flavor::Server => "server",
            Flavor::Cloud => "cloud",
        }
    }

    /// Okta never deletes (a user leaves the app unlicensed); Entra's sequence hard-deletes,
    /// and the user must leave the site.
    pub fn deprovision(&self) -> &'static str {
        match self.seq {
            Seq::Okta => "unlicense",
            Seq::Entra => "delete",
        }
    }

    /// The simulator's switches for the flavour (for an in-process simulator's `SimOptions`).
    pub fn sim_switches(&self) -> Vec<(String, String)> {
        match self.flavor {
            Flavor::Server => Vec::new(),
            Flavor::Cloud => vec![("tableau.flavor".into(), "cloud".into())],
        }
    }

    /// The same as `scim-bridge simulate tableau` arguments.
    pub fn sim_args(&self) -> Vec<String> {
        self.sim_switches()
            .into_iter()
            .flat_map(|(k, v)| ["--sim-switch".to_string(), format!("{k}={v}")])
            .collect()
    }

    /// The bridge's config file: one tableau tenant in front of the simulator at `sim_base`,
    /// with the variant's sign-in, flavour and deprovisioning and the runs' role rules.
    pub fn bridge_toml(&self, listen: &str, data_dir: &std::path::Path, sim_base: &str) -> String {
        let sign_in = match self.sign_in {
            SignIn::Pat => format!("pat_name = \"{PAT_NAME}\"\npat_secret = \"{PAT_SECRET}\"\n"),
            SignIn::Jwt => format!(
                "client_id = \"{CLIENT_ID}\"\nsecret_id = \"{SECRET_ID}\"\n\
                 secret_value = \"{SECRET_VALUE}\"\nusername = \"{ADMIN_USER}\"\n"
            ),
        };
        format!(
            r#"listen = "{listen}"
data_dir = "{data}"

[[tenants]]
id = "{BRIDGE_TENANT}"
tokens = ["{BRIDGE_TOKEN}"]

[tenants.vendor]
kind = "tableau"
base_url = "{sim_base}/"
site = "{SITE}"
api_version = "{API_VERSION}"
{sign_in}deprovision = "{deprovision}"
flavor = "{flavor}"

[tenants.roles]
default = "{default}"
rules = [
  {{ group = "BI Admins", role = "{admin}" }},
  {{ group = "BI Designers", role = "{designer}" }},
]
"#,
            data = data_dir.display(),
            deprovision = self.deprovision(),
            flavor = self.flavor_key(),
            default = TABLEAU_ROLES.default,
            admin = TABLEAU_ROLES.admin,
            designer = TABLEAU_ROLES.designer,
        )
    }

    /// Tableau's end state after the sequence, in idp.rs's terms: an inactive user is
    /// `Unlicensed` (Tableau has no other deactivation), whatever role the rules would give.
    pub fn expected(&self) -> Expected {
        let mut want = self.seq.expected(&TABLEAU_ROLES);
        for account in want.users.values_mut() {
            if !account.active {
                account.role = UNLICENSED.into();
            }
        }
        want
    }

    /// The full name and email Tableau Server must show for each user the sequence wrote
    /// (Cloud keeps neither: the bridge leaves them as Tableau has them). The full name is the
    /// IdP's `displayName`, else given and family name: Okta sent "Bob Builder" at create and
    /// its PUT sends it back unchanged, so bob's new given name (Robert) has no place in
    /// Tableau, whose users have one full name; Entra sends no `displayName`, so fay's new
    /// family name shows. `pre@acme.test` was made in Tableau and its profile never written.
    pub fn full_names(&self) -> &'static [(&'static str, &'static str)] {
        match (self.flavor, self.seq) {
            (Flavor::Cloud, _) => &[],
            (Flavor::Server, Seq::Okta) => &[
                ("ada@acme.test", "Ada Lovelace"),
                ("bob@acme.test", "Bob Builder"),
                ("cy@acme.test", "Cy Young"),
                ("dee@acme.test", "Dee Dee"),
            ],
            (Flavor::Server, Seq::Entra) => &[
                ("eve@contoso.test", "E eve"),
                ("fay@contoso.test", "E Fairfax"),
            ],
        }
    }

    /// How Tableau's users differ from the end state: roles, activation, groups, no other
    /// user than the expected ones and Tableau's admin, and on Server the full names and
    /// emails.
    pub fn diff(&self, state: &BTreeMap<String, TableauUser>) -> Vec<String> {
        let mut out = self.expected().diff(&accounts(state), 1);
        out.extend(profile_diff(state, self.full_names()));
        out
    }
}

/// Tableau's users as idp.rs compares accounts: the site role, active unless `Unlicensed`,
/// and the groups ("All Users" left out).
pub fn accounts(state: &BTreeMap<String, TableauUser>) -> BTreeMap<String, Account> {
    state
        .iter()
        .map(|(name, u)| {
            let account = Account {
                role: u.site_role.clone(),
                active: u.site_role != UNLICENSED,
                groups: u.groups.clone(),
            };
            (name.clone(), account)
        })
        .collect()
}

/// Where the users of `want` (login → full name) differ from Tableau in full name, or in an
/// email other than the login.
pub fn profile_diff(state: &BTreeMap<String, TableauUser>, want: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (login, full_name) in want {
        let Some(u) = state.get(*login) else {
            continue; // reported by the account comparison
        };
        if (u.full_name.as_str(), u.email.as_str()) != (*full_name, *login) {
            out.push(format!(
                "{login}: want full name {full_name:?} and email {login:?}, got {:?} and {:?}",
                u.full_name, u.email
            ));
        }
    }
    out
}

/// The bridge of a run in this process: the variant's config file read as `serve` reads it,
/// built and started as `serve` does (start-up check, background delivery and observe).
pub async fn serve_in_process(
    v: &Variant,
    sim_base: &str,
    data_dir: &std::path::Path,
) -> scim_bridge::server::RunningServer {
    bridge::serve_toml(&v.name(), &v.bridge_toml("127.0.0.1:0", data_dir, sim_base)).await
}

/// `serve_in_process`, and the IdP's client of its tenant (`Policy::Checked`, labelled `label`)
/// once the bridge is ready.
pub async fn serve_checked(
    v: &Variant,
    sim_base: &str,
    data_dir: &std::path::Path,
    label: &str,
) -> (scim_bridge::server::RunningServer, Idp) {
    let server = serve_in_process(v, sim_base, data_dir).await;
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

/// A variant's end state in Tableau, for `bridge::settle`.
struct EndState<'a> {
    v: &'a Variant,
    api: &'a TableauApi,
}

impl bridge::Checker for EndState<'_> {
    type State = BTreeMap<String, TableauUser>;
    const VENDOR: &'static str = "Tableau";
    async fn read(&self) -> Option<Self::State> {
        Some(self.api.state().await)
    }
    fn diff(&self, state: &Self::State) -> Vec<String> {
        self.v.diff(state)
    }
    fn users(&self, state: &Self::State) -> BTreeSet<String> {
        state.keys().cloned().collect()
    }
    async fn context(&self, idp: &Idp) -> String {
        bridge::outbox_summary(idp.admin_root(), BRIDGE_TENANT).await
    }
}

/// Reads Tableau until the variant's end state holds (`Variant::diff`), failing `limit` after
/// the IdP's last write with what still differs. Then the bridge must list exactly Tableau's
/// users (no orphan mapping, no user it lost) and hold no refused change. Tableau's state.
pub async fn settle(
    idp: &Idp,
    v: &Variant,
    api: &TableauApi,
    limit: Duration,
) -> BTreeMap<String, TableauUser> {
    let state = bridge::settle(idp, &EndState { v, api }, limit).await;
    bridge::assert_no_refused(idp, BRIDGE_TENANT).await;
    state
}

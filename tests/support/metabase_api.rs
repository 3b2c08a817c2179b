//! A Metabase admin client for the connector tests: it reads the end state through Metabase's
//! own REST API (`GET /api/user?status=all` with `is_active`, `is_superuser`, `group_ids` and
//! `login_attributes`; `GET /api/permissions/group`; `GET /api/permissions/membership`), and
//! makes what a test needs made directly in Metabase (the permission groups the role rules
//! name, a user that exists before the bridge).
//!
//! It authenticates with the simulator's API key (`x-api-key`, bound to Administrators: no
//! sign-in, so it never competes with the bridge's sessions or login throttle) and rides out
//! the simulator's injected faults: a 5xx, a 429 or no answer is retried (the simulator answers
//! those instead of serving the request, so a retried write is never made twice). A read that
//! the bridge's writes tore (a group id no group list names, a page that lost or repeated a
//! user) is read again.
//!
//! The last sections serve the acceptance runs (tests/metabase.rs, tests/metabase_chaos.rs):
//! their variants (sequence, sign-in), the bridge's config for one, what the runs set up in
//! Metabase before the bridge (the role groups, `pre@acme.test`), the steps the runs add to the
//! shared sequences through [`Hooks`] (the enterprise `division` mapped to the login attribute
//! `region`: set, changed, cleared, and changed while a user is inactive; a mirrored group
//! created, renamed and deleted), and Metabase's end state (`Variant::diff`).
//!
//! How Metabase holds the sequences' state: the rules give `BI Admins → Administrators`
//! (`is_superuser`), `BI Designers → Analysts`, else `Viewers` — permission groups the test
//! creates, exactly one per user the IdP wrote; SCIM groups are permission groups of the same
//! name; an inactive user is `is_active: false` and keeps its groups; a SCIM DELETE deactivates
//! (Metabase has no hard delete) and takes the user out of its mirrored groups. Metabase's own
//! admin `admin@metabase.local` is the one user besides the sequence's (the API key's hidden
//! user is never listed).
//!
//! Include it beside `idp.rs` and `bridge.rs` (it uses both through `super`):
//!
//! ```ignore
//! #[path = "support/idp.rs"]
//! mod idp;
//! #[path = "support/bridge.rs"]
//! mod bridge;
//! #[path = "support/metabase_api.rs"]
//! mod metabase_api;
//! ```
#![allow(dead_code)]

use super::bridge;
use super::idp::{patch_op, retry, Account, Expected, Hooks, Idp, Roles, Seq, Step};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The simulator's defaults (`scim-bridge simulate metabase`).
pub const API_KEY: &str = "mb_simulator_api_key";
pub const ADMIN_EMAIL: &str = "admin@metabase.local";
pub const ADMIN_PASSWORD: &str = "admin";
/// The magic groups: every user is in "All Users"; "Administrators" is `is_superuser`.
pub const ALL_USERS: &str = "All Users";
pub const ADMINISTRATORS: &str = "Administrators";
/// The role groups the runs create before the bridge (it never creates one).
pub const ANALYSTS: &str = "Analysts";
pub const VIEWERS: &str = "Viewers";
/// The login attribute the runs map the enterprise `division` to.
pub const ATTRIBUTE: &str = "region";
use super::idp::DIVISION_PATH;
/// A login attribute the bridge does not map, set on `pre@acme.test` before the bridge: it
/// must survive every write of `region`.
pub const UNMAPPED_KEY: &str = "team";
pub const UNMAPPED_VALUE: &str = "finance";
/// The page size the client asks for (small, so that paging is exercised).
const PAGE_SIZE: usize = 50;

/// A Metabase user as the tests compare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbUser {
    pub id: i64,
    /// As Metabase stores it (lower-cased).
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: bool,
    pub is_superuser: bool,
    /// `group_ids`.
    pub group_ids: BTreeSet<i64>,
    /// The names of `group_ids`, "All Users" and "Administrators" included.
    pub groups: BTreeSet<String>,
    /// `login_attributes` (null read as empty; a non-string value as its JSON text).
    pub attributes: BTreeMap<String, String>,
}

/// A permission group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbGroup {
    pub id: i64,
    /// `magic_group_type`: `all-internal-users`, `admin`, or none.
    pub magic: Option<String>,
    /// Active members only (Metabase's count).
    pub member_count: u64,
}

/// What the checker reads of Metabase in one go.
#[derive(Clone, Debug)]
pub struct MbState {
    /// Every user, active or not (`status=all`), by lower-cased email.
    pub users: BTreeMap<String, MbUser>,
    /// The permission groups by name.
    pub groups: BTreeMap<String, MbGroup>,
    /// `GET /api/permissions/membership`: user id → group ids (inactive users included).
    pub memberships: BTreeMap<i64, BTreeSet<i64>>,
}

impl MbState {
    /// The user's groups but "All Users" and the role groups (Administrators included): the
    /// groups the bridge mirrors from SCIM.
    pub fn mirrored_groups(u: &MbUser) -> BTreeSet<String> {
        u.groups
            .iter()
            .filter(|g| g.as_str() != ALL_USERS && !is_role_group(g))
            .cloned()
            .collect()
    }
}

/// Whether `name` is one of the role groups the rules name (Administrators among them).
pub fn is_role_group(name: &str) -> bool {
    [ADMINISTRATORS, ANALYSTS, VIEWERS].contains(&name)
}

/// The administrator's client of the instance, by API key.
pub struct MetabaseApi {
    /// The instance (`http://host:port`).
    pub base: String,
    http: reqwest::Client,
    key: String,
}

impl MetabaseApi {
    /// A client of the instance at `base`. Nothing is sent: the first request waits for the
    /// server (a simulator process may still be starting).
    pub fn new(base: &str) -> MetabaseApi {
        MetabaseApi {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .user_agent("scim-bridge-tests/metabase-checker")
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            key: API_KEY.to_string(),
        }
    }

    /// `new`, then one read of the current user, retried until the instance answers.
    pub async fn connect(base: &str) -> MetabaseApi {
        let api = MetabaseApi::new(base);
        let (s, v) = api.call(Method::GET, "/api/user/current", None).await;
        assert_eq!(
            s, 200,
            "{base}: GET /api/user/current with the API key: {v}"
        );
        api
    }

    /// One request to `path` (`/api/...`) with the API key. `None` when it met a fault (no
    /// answer, 5xx, 429); otherwise the status and the body (JSON; a plain-text body as a JSON
    /// string; `Null` when empty).
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
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
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Some((status, v))
    }

    /// `try_call` until it gets an answer.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        retry(|| self.try_call(method.clone(), path, body)).await
    }

    /// A GET that must answer 200 (faults retried).
    pub async fn get_ok(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Every user, active or not, page by page; `None` on a fault or when the pages do not
    /// add up to `total` (the list changed while it was read).
    pub async fn try_users(&self) -> Option<Vec<Value>> {
        let mut out: Vec<Value> = Vec::new();
        let mut ids = BTreeSet::new();
        loop {
            let path = format!(
                "/api/user?status=all&limit={PAGE_SIZE}&offset={}",
                out.len()
            );
            let (s, v) = self.try_call(Method::GET, &path, None).await?;
            assert_eq!(s, 200, "GET {path}: {v}");
            let page = v["data"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| panic!("GET {path}: no data: {v}"));
            let total = v["total"]
                .as_u64()
                .unwrap_or_else(|| panic!("GET {path}: no total: {v}"))
                as usize;
            let n = page.len();
            for u in page {
                ids.insert(u["id"].as_i64().unwrap_or_else(|| panic!("no id: {u}")));
                out.push(u);
            }
            if n < PAGE_SIZE || out.len() >= total {
                return (ids.len() == out.len() && out.len() == total).then_some(out);
            }
        }
    }

    /// Every permission group (a bare array); `None` on a fault.
    pub async fn try_groups(&self) -> Option<Vec<Value>> {
        let (s, v) = self
            .try_call(Method::GET, "/api/permissions/group", None)
            .await?;
        assert_eq!(s, 200, "GET /api/permissions/group: {v}");
        Some(
            v.as_array()
                .cloned()
                .unwrap_or_else(|| panic!("GET /api/permissions/group: not an array: {v}")),
        )
    }

    /// Users, groups and memberships; `None` on a fault or a torn read.
    pub async fn try_state(&self) -> Option<MbState> {
        let groups_json = self.try_groups().await?;
        let users_json = self.try_users().await?;
        let (s, m) = self
            .try_call(Method::GET, "/api/permissions/membership", None)
            .await?;
        assert_eq!(s, 200, "GET /api/permissions/membership: {m}");
        let mut groups = BTreeMap::new();
        let mut names_by_id = BTreeMap::new();
        for g in &groups_json {
            let id = g["id"].as_i64().unwrap_or_else(|| panic!("group id: {g}"));
            let name = g["name"].as_str().unwrap_or_default().to_string();
            names_by_id.insert(id, name.clone());
            let prev = groups.insert(
                name.clone(),
                MbGroup {
                    id,
                    magic: g["magic_group_type"].as_str().map(str::to_string),
                    member_count: g["member_count"].as_u64().unwrap_or(0),
                },
            );
            assert!(prev.is_none(), "two Metabase groups named {name}");
        }
        let mut users = BTreeMap::new();
        for u in &users_json {
            let s = |k: &str| u[k].as_str().map(str::to_string);
            let group_ids: BTreeSet<i64> = u["group_ids"]
                .as_array()
                .unwrap_or_else(|| panic!("no group_ids: {u}"))
                .iter()
                .filter_map(Value::as_i64)
                .collect();
            let mut group_names = BTreeSet::new();
            for gid in &group_ids {
                // A group made after the group list was read: read again.
                group_names.insert(names_by_id.get(gid)?.clone());
            }
            let attributes = match &u["login_attributes"] {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k.clone(), v)
                    })
                    .collect(),
                Value::Null => BTreeMap::new(),
                other => panic!("login_attributes neither a map nor null: {other}"),
            };
            let user = MbUser {
                id: u["id"].as_i64().unwrap(),
                email: s("email").unwrap_or_default(),
                first_name: s("first_name"),
                last_name: s("last_name"),
                is_active: u["is_active"].as_bool().unwrap_or_else(|| panic!("{u}")),
                is_superuser: u["is_superuser"].as_bool().unwrap_or_else(|| panic!("{u}")),
                group_ids,
                groups: group_names,
                attributes,
            };
            let key = user.email.to_lowercase();
            let prev = users.insert(key.clone(), user);
            assert!(prev.is_none(), "two Metabase users with the email {key}");
        }
        let mut memberships: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for (uid, list) in m.as_object().unwrap_or_else(|| panic!("memberships: {m}")) {
            let uid: i64 = uid
                .parse()
                .unwrap_or_else(|_| panic!("membership key {uid}"));
            let set = memberships.entry(uid).or_default();
            for x in list.as_array().into_iter().flatten() {
                set.insert(x["group_id"].as_i64().unwrap_or_else(|| panic!("{x}")));
            }
        }
        Some(MbState {
            users,
            groups,
            memberships,
        })
    }

    /// `try_state` until it gets one.
    pub async fn state(&self) -> MbState {
        retry(|| self.try_state()).await
    }

    /// The id of the group `name` (exact name), if any.
    pub async fn group_id(&self, name: &str) -> Option<i64> {
        let groups = retry(|| self.try_groups()).await;
        groups
            .iter()
            .find(|g| g["name"] == name)
            .and_then(|g| g["id"].as_i64())
    }

    /// Creates the permission group `name` (as an administrator would): its id. A group of
    /// that name already there is taken.
    pub async fn create_group(&self, name: &str) -> i64 {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/permissions/group",
                Some(&json!({"name": name})),
            )
            .await;
        if s == 200 {
            return v["id"].as_i64().unwrap();
        }
        self.group_id(name)
            .await
            .unwrap_or_else(|| panic!("create group {name}: {s} {v}, and no such group"))
    }

    /// The id of the user with exactly this email, active or not.
    pub async fn user_id(&self, email: &str) -> Option<i64> {
        let path = format!(
            "/api/user?status=all&query={}",
            super::idp::urlencode(email)
        );
        let v = self.get_ok(&path).await;
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| {
                u["email"]
                    .as_str()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .and_then(|u| u["id"].as_i64())
    }

    /// Adds a user directly in Metabase (as an administrator would, before the bridge), in All
    /// Users only, with these login attributes: its id. A user of that email already there is
    /// taken.
    pub async fn create_user(
        &self,
        email: &str,
        first: &str,
        last: &str,
        attributes: Value,
    ) -> i64 {
        let body = json!({"email": email, "first_name": first, "last_name": last,
                          "login_attributes": attributes});
        let (s, v) = self.call(Method::POST, "/api/user", Some(&body)).await;
        if s == 200 {
            return v["id"].as_i64().unwrap();
        }
        self.user_id(email)
            .await
            .unwrap_or_else(|| panic!("create {email}: {s} {v}, and no such user"))
    }

    /// Puts the user in the group (`POST /api/permissions/membership`); already in it is fine.
    pub async fn add_member(&self, group_id: i64, user_id: i64) {
        let body = json!({"group_id": group_id, "user_id": user_id});
        let (s, v) = self
            .call(Method::POST, "/api/permissions/membership", Some(&body))
            .await;
        assert_eq!(s, 200, "add {user_id} to {group_id}: {v}");
    }

    /// Deactivates the user (`DELETE /api/user/:id`).
    pub async fn deactivate(&self, user_id: i64) {
        let (s, v) = self
            .call(Method::DELETE, &format!("/api/user/{user_id}"), None)
            .await;
        assert_eq!(s, 200, "deactivate {user_id}: {v}");
    }

    /// Replaces the user's login attributes (`PUT /api/user/:id`).
    pub async fn set_attributes(&self, user_id: i64, attributes: Value) {
        let body = json!({"login_attributes": attributes});
        let (s, v) = self
            .call(Method::PUT, &format!("/api/user/{user_id}"), Some(&body))
            .await;
        assert_eq!(s, 200, "login_attributes of {user_id}: {v}");
    }
}

// ---------------------------------------------------------------------------------------------
// Metabase's state in idp.rs's terms, and the comparisons.
// ---------------------------------------------------------------------------------------------

/// What the runs' role rules give: `BI Admins → Administrators`, `BI Designers → Analysts`,
/// default `Viewers` (permission groups; Administrators is `is_superuser`).
pub const MB_ROLES: Roles = Roles {
    admin: ADMINISTRATORS,
    designer: ANALYSTS,
    default: VIEWERS,
};
/// The role of a user in no role group, as `accounts` shows it.
pub const NO_ROLE: &str = "(no role group)";

/// Login → attribute → value.
pub type Attrs = BTreeMap<String, BTreeMap<String, String>>;

/// `Attrs` from a table: `[(login, [(key, value)])]`.
pub fn attrs(table: &[(&str, &[(&str, &str)])]) -> Attrs {
    table
        .iter()
        .map(|(login, kv)| {
            let m = kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (login.to_string(), m)
        })
        .collect()
}

/// Metabase's users as idp.rs compares accounts: the role held through the role groups
/// (`NO_ROLE` for none, `A+B` for several), `is_active`, and the mirrored groups.
pub fn accounts(state: &MbState) -> BTreeMap<String, Account> {
    state
        .users
        .iter()
        .map(|(email, u)| {
            let roles: Vec<&str> = u
                .groups
                .iter()
                .map(String::as_str)
                .filter(|g| is_role_group(g))
                .collect();
            let role = if roles.is_empty() {
                NO_ROLE.to_string()
            } else {
                roles.join("+")
            };
            let account = Account {
                role,
                active: u.is_active,
                groups: MbState::mirrored_groups(u),
            };
            (email.clone(), account)
        })
        .collect()
}

/// What holds whatever the sequence: the magic groups and the role groups there, every user
/// in All Users, `is_superuser` exactly the Administrators membership, `group_ids` agreeing
/// with the membership list, no API-key user listed, and the admin untouched (active, in
/// Administrators and no other group, its name, no login attributes).
pub fn builtin_diff(state: &MbState) -> Vec<String> {
    let mut out = Vec::new();
    for (name, magic) in [
        (ALL_USERS, Some("all-internal-users")),
        (ADMINISTRATORS, Some("admin")),
        (ANALYSTS, None),
        (VIEWERS, None),
    ] {
        match state.groups.get(name) {
            Some(g) if g.magic.as_deref() == magic => {}
            other => out.push(format!(
                "group {name}: want it with magic type {magic:?}, got {other:?}"
            )),
        }
    }
    for (email, u) in &state.users {
        if !u.groups.contains(ALL_USERS) {
            out.push(format!("{email} is not in {ALL_USERS}: {:?}", u.groups));
        }
        let in_admins = u.groups.contains(ADMINISTRATORS);
        if u.is_superuser != in_admins {
            out.push(format!(
                "{email}: is_superuser {}, but in Administrators: {in_admins}",
                u.is_superuser
            ));
        }
        let listed = state.memberships.get(&u.id);
        if listed != Some(&u.group_ids) {
            out.push(format!(
                "{email}: group_ids {:?}, but the membership list says {listed:?}",
                u.group_ids
            ));
        }
        if email.ends_with("@api-key.invalid") {
            out.push(format!("the API key's user {email} is listed"));
        }
    }
    let ids: BTreeSet<i64> = state.users.values().map(|u| u.id).collect();
    for uid in state.memberships.keys() {
        if !ids.contains(uid) {
            out.push(format!(
                "memberships of user {uid}, whom the user list lacks"
            ));
        }
    }
    let admin_groups = BTreeSet::from([ALL_USERS.to_string(), ADMINISTRATORS.to_string()]);
    match state.users.get(ADMIN_EMAIL) {
        Some(a)
            if a.is_active
                && a.is_superuser
                && a.groups == admin_groups
                && a.first_name.as_deref() == Some("Admin")
                && a.last_name.as_deref() == Some("User")
                && a.attributes.is_empty() => {}
        other => out.push(format!(
            "{ADMIN_EMAIL}: want active Admin User in Administrators only, no attributes; got \
             {other:?}"
        )),
    }
    out
}

/// Each user the IdP deleted is still in Metabase (there is no hard delete), deactivated and
/// in no mirrored group (role groups are not checked).
pub fn deleted_diff(state: &MbState, deleted: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for login in deleted {
        match state.users.get(login) {
            None => out.push(format!(
                "{login}: deleted by the IdP, and not in Metabase at all (Metabase keeps users)"
            )),
            Some(u) => {
                if u.is_active {
                    out.push(format!("{login}: deleted by the IdP, but still active"));
                }
                let mirrored = MbState::mirrored_groups(u);
                if !mirrored.is_empty() {
                    out.push(format!(
                        "{login}: deleted by the IdP, but still in {mirrored:?}"
                    ));
                }
            }
        }
    }
    out
}

/// The permission groups are exactly the magic ones, the role groups and `mirrored`.
pub fn groups_diff(state: &MbState, mirrored: &[&str]) -> Vec<String> {
    let want: BTreeSet<String> = [ALL_USERS, ADMINISTRATORS, ANALYSTS, VIEWERS]
        .iter()
        .chain(mirrored)
        .map(|s| s.to_string())
        .collect();
    let have: BTreeSet<String> = state.groups.keys().cloned().collect();
    if have == want {
        Vec::new()
    } else {
        vec![format!("groups: want {want:?}, got {have:?}")]
    }
}

/// The login attributes of every user but those in `skip` are exactly `want` (a user left
/// out of `want` has none).
pub fn attrs_diff(state: &MbState, want: &Attrs, skip: &BTreeSet<String>) -> Vec<String> {
    let have: Attrs = state
        .users
        .iter()
        .filter(|(login, u)| !skip.contains(*login) && !u.attributes.is_empty())
        .map(|(login, u)| (login.clone(), u.attributes.clone()))
        .collect();
    let want: Attrs = want
        .iter()
        .filter(|(login, m)| !skip.contains(*login) && !m.is_empty())
        .map(|(l, m)| (l.clone(), m.clone()))
        .collect();
    if have == want {
        Vec::new()
    } else {
        vec![format!("login_attributes: want {want:?}, got {have:?}")]
    }
}

/// Where the users of `want` (login, first name, last name) differ in first or last name, or
/// in an email other than the login.
pub fn profile_diff(state: &MbState, want: &[(&str, &str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (login, first, last) in want {
        let Some(u) = state.users.get(*login) else {
            out.push(format!("{login}: not in Metabase"));
            continue;
        };
        let have = (
            u.first_name.as_deref(),
            u.last_name.as_deref(),
            u.email.as_str(),
        );
        if have != (Some(*first), Some(*last), *login) {
            out.push(format!(
                "{login}: want first/last name and email {:?}, got {have:?}",
                (first, last, login)
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The acceptance runs: the shared Okta and Entra sequences (idp.rs) against Metabase.
// ---------------------------------------------------------------------------------------------

/// The bridge's tenant in the runs, and the IdP's token for it.
pub const BRIDGE_TENANT: &str = "acme-metabase";
pub const BRIDGE_TOKEN: &str = "test-token-metabase-0123456789abcdef";

/// The runs' extra mirrored groups: Okta pushes `Finance`, renames it `Finance EMEA` and
/// deletes it; Entra creates `Contractors` with gus, renames it `Contractors EU` and keeps it.
pub const OKTA_GROUP: &str = "Finance";
pub const OKTA_GROUP_RENAMED: &str = "Finance EMEA";
pub const ENTRA_GROUP: &str = "Contractors";
pub const ENTRA_GROUP_RENAMED: &str = "Contractors EU";

/// How the bridge signs in to Metabase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// `api_key`: `x-api-key` on every request.
    ApiKey,
    /// `username` + `password`: `POST /api/session`, then `X-Metabase-Session`.
    Password,
}

/// One variant of an acceptance run: which sequence and sign-in.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub seq: Seq,
    pub sign_in: SignIn,
}

impl Variant {
    /// Both sequences, each with one sign-in method, the two methods between them
    /// (`okta/password`, `entra/api_key`): what every run covers.
    pub fn two() -> Vec<(String, Variant)> {
        Self::of(&[(Seq::Okta, SignIn::Password), (Seq::Entra, SignIn::ApiKey)])
    }

    /// Each sequence with each sign-in method (the clean run, which is cheap).
    pub fn four() -> Vec<(String, Variant)> {
        Self::of(&[
            (Seq::Okta, SignIn::Password),
            (Seq::Entra, SignIn::ApiKey),
            (Seq::Okta, SignIn::ApiKey),
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
            SignIn::ApiKey => "api_key",
            SignIn::Password => "password",
        };
        format!("{}/{sign_in}", self.seq.name())
    }

    /// The bridge's config file: one metabase tenant in front of the simulator at `sim_base`,
    /// with the variant's sign-in, the runs' role rules and `region` mapped to the enterprise
    /// `division`.
    pub fn bridge_toml(&self, listen: &str, data_dir: &std::path::Path, sim_base: &str) -> String {
        let sign_in = match self.sign_in {
            SignIn::ApiKey => format!("api_key = \"{API_KEY}\""),
            SignIn::Password => {
                format!("username = \"{ADMIN_EMAIL}\"\npassword = \"{ADMIN_PASSWORD}\"")
            }
        };
        format!(
            r#"listen = "{listen}"
data_dir = "{data}"

[[tenants]]
id = "{BRIDGE_TENANT}"
tokens = ["{BRIDGE_TOKEN}"]

[tenants.vendor]
kind = "metabase"
base_url = "{sim_base}/"
{sign_in}

[tenants.roles]
default = "{default}"
rules = [
  {{ group = "BI Admins", role = "{admin}" }},
  {{ group = "BI Designers", role = "{designer}" }},
]

[tenants.attributes]
{ATTRIBUTE} = "{DIVISION_PATH}"
"#,
            data = data_dir.display(),
            default = MB_ROLES.default,
            admin = MB_ROLES.admin,
            designer = MB_ROLES.designer,
        )
    }

    /// Metabase's end state after the sequence and the runs' extra steps (`Extra`).
    pub fn expected(&self) -> MbExpected {
        match self.seq {
            Seq::Okta => MbExpected {
                accounts: self.seq.expected(&MB_ROLES),
                mirrored: &["BI Admins", "BI Designers"],
                attrs: attrs(&[
                    ("ada@acme.test", &[(ATTRIBUTE, "APAC")]),
                    ("pre@acme.test", &[(UNMAPPED_KEY, UNMAPPED_VALUE)]),
                ]),
                names: self.names(),
            },
            Seq::Entra => MbExpected {
                accounts: self.seq.expected(&MB_ROLES),
                mirrored: &["BI Admins", "BI Designers", ENTRA_GROUP_RENAMED],
                attrs: attrs(&[("fay@contoso.test", &[(ATTRIBUTE, "APJ")])]),
                names: self.names(),
            },
        }
    }

    /// The first and last names Metabase must show at the end for each user the sequence left
    /// (`name.givenName` / `name.familyName`): Okta's PUT renamed bob Robert; Entra's PATCH
    /// renamed fay Fairfax, and her given name Faye — sent while she was disabled — was held
    /// and written once she was restored. `pre@acme.test` was made in Metabase.
    pub fn names(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self.seq {
            Seq::Okta => &[
                ("ada@acme.test", "Ada", "Lovelace"),
                ("bob@acme.test", "Robert", "Builder"),
                ("cy@acme.test", "Cy", "Young"),
                ("dee@acme.test", "Dee", "Dee"),
                ("pre@acme.test", "Pre", "Existing"),
            ],
            Seq::Entra => &[
                ("eve@contoso.test", "E", "eve"),
                ("fay@contoso.test", "Faye", "Fairfax"),
            ],
        }
    }

    /// How Metabase differs from the end state.
    pub fn diff(&self, state: &MbState) -> Vec<String> {
        self.expected().diff(state)
    }

    /// What the run makes in Metabase before the bridge starts: the role groups the rules
    /// name (the bridge never creates one), and for the Okta sequence `pre@acme.test` with an
    /// unmapped login attribute.
    pub async fn prepare(&self, api: &MetabaseApi) {
        for g in [ANALYSTS, VIEWERS] {
            api.create_group(g).await;
        }
        if self.seq == Seq::Okta {
            api.create_user(
                "pre@acme.test",
                "Pre",
                "Existing",
                json!({UNMAPPED_KEY: UNMAPPED_VALUE}),
            )
            .await;
        }
    }
}

/// Metabase's end state: the accounts in idp.rs's terms (a user the IdP deleted stays,
/// deactivated, out of its mirrored groups), the mirrored groups, the login attributes and the
/// names.
#[derive(Clone, Debug)]
pub struct MbExpected {
    pub accounts: Expected,
    /// The mirrored permission groups (besides the magic and the role groups).
    pub mirrored: &'static [&'static str],
    /// Every non-empty `login_attributes` but the deleted users'.
    pub attrs: Attrs,
    pub names: &'static [(&'static str, &'static str, &'static str)],
}

impl MbExpected {
    pub fn diff(&self, state: &MbState) -> Vec<String> {
        let mut got = accounts(state);
        for login in &self.accounts.absent {
            got.remove(login);
        }
        // The admin is Metabase's own user besides the sequence's.
        let mut out = self.accounts.diff(&got, 1);
        out.extend(builtin_diff(state));
        out.extend(deleted_diff(state, &self.accounts.absent));
        out.extend(groups_diff(state, self.mirrored));
        out.extend(attrs_diff(state, &self.attrs, &self.accounts.absent));
        out.extend(profile_diff(state, self.names));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The runs' extra IdP steps: the enterprise division (→ `region`), a mirrored group created,
// renamed and deleted, changes while a user is disabled.
// ---------------------------------------------------------------------------------------------

/// The hooks of a run: after each step of the shared sequence, the run's extra IdP writes for
/// Metabase (`extra_step`), then `pause` after the profile change (the fault run's idle pause,
/// so the bridge's session runs out); `mid` is the sequence's halfway hook (the freeze).
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
/// - Okta: after the assignments ada's division is EMEA, bob's and pre's AMER (PUT of the
///   whole user; pre carries the unmapped `team` Metabase gave it); after the membership
///   changes the group `Finance` is pushed with ada and bob, renamed `Finance EMEA` with a
///   membership update, and bob removed; after the profile change ada's division is APAC,
///   bob's and pre's are gone, and `Finance EMEA` is deleted.
/// - Entra: after the creates eve's division is EMEA, fay's AMER, gus's APAC (attribute PATCH
///   `Add`); after the membership changes `Contractors` is created empty, gus added, and the
///   group renamed `Contractors EU` (gus stays in it until the sequence deletes him); after
///   the profile change fay's is EMEA (`Replace`) and eve's removed (`Remove`); while fay is
///   disabled her division becomes APJ and her given name Faye (held until she is restored).
pub async fn extra_step(idp: &Idp, seq: Seq, step: Step) {
    let l = &idp.label;
    match (seq, step) {
        (Seq::Okta, Step::UsersAssigned) => {
            idp.okta_division("ada@acme.test", Some("EMEA")).await;
            idp.okta_division("bob@acme.test", Some("AMER")).await;
            idp.okta_division("pre@acme.test", Some("AMER")).await;
        }
        (Seq::Okta, Step::MembersChanged) => {
            let ada = idp.user_id("ada@acme.test").await;
            let bob = idp.user_id("bob@acme.test").await;
            assert!(idp.find_group(OKTA_GROUP).await.is_none(), "{l}");
            let (s, v) = idp
                .post(
                    "/Groups",
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": OKTA_GROUP,
                           "members": [{"value": ada, "display": "ada@acme.test"}, {"value": bob, "display": "bob@acme.test"}]}),
                )
                .await;
            assert_eq!(s, 201, "{l}: push {OKTA_GROUP}: {v}");
            let gid = v["id"].as_str().unwrap().to_string();
            // Okta re-sends the name with a membership update: here a new one.
            idp.patch_ok(
                &format!("/Groups/{gid}"),
                json!([
                    {"op": "replace", "value": {"id": gid, "displayName": OKTA_GROUP_RENAMED}},
                    {"op": "add", "path": "members", "value": [{"value": ada}]}
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
            idp.okta_division("pre@acme.test", None).await;
            let gid = idp.group_id(OKTA_GROUP_RENAMED).await;
            let (s, v) = idp.delete(&format!("/Groups/{gid}")).await;
            assert_eq!(s, 204, "{l}: delete {OKTA_GROUP_RENAMED}: {v}");
        }
        (Seq::Entra, Step::UsersAssigned) => {
            for (name, d) in [("eve", "EMEA"), ("fay", "AMER"), ("gus", "APAC")] {
                idp.entra_division(&format!("{name}@contoso.test"), "Add", Some(d))
                    .await;
            }
        }
        (Seq::Entra, Step::MembersChanged) => {
            let gus = idp.user_id("gus@contoso.test").await;
            let (s, v) = idp
                .post(
                    "/Groups",
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                           "externalId": "8aa1-contractors", "displayName": ENTRA_GROUP,
                           "meta": {"resourceType": "Group"}}),
                )
                .await;
            assert_eq!(s, 201, "{l}: create {ENTRA_GROUP}: {v}");
            let gid = v["id"].as_str().unwrap().to_string();
            let (s, v) = idp
                .patch(
                    &format!("/Groups/{gid}"),
                    patch_op(json!([{"op": "Add", "path": "members", "value": [{"value": gus}]}])),
                )
                .await;
            assert!(s == 200 || s == 204, "{l}: {s} {v}");
            let (s, v) = idp
                .patch(
                    &format!("/Groups/{gid}"),
                    patch_op(json!([{"op": "Replace", "path": "displayName",
                                     "value": ENTRA_GROUP_RENAMED}])),
                )
                .await;
            assert!(s == 200 || s == 204, "{l}: rename {ENTRA_GROUP}: {s} {v}");
        }
        (Seq::Entra, Step::ProfileChanged) => {
            idp.entra_division("fay@contoso.test", "Replace", Some("EMEA"))
                .await;
            idp.entra_division("eve@contoso.test", "Remove", None).await;
        }
        (Seq::Entra, Step::Deactivated) => {
            // Sent while fay is disabled: Metabase refuses a PUT on an inactive user, so the
            // bridge holds both until she is restored.
            idp.entra_division("fay@contoso.test", "Replace", Some("APJ"))
                .await;
            let fay = idp.user_id("fay@contoso.test").await;
            idp.patch_ok(
                &format!("/Users/{fay}"),
                json!([{"op": "Replace", "path": "name.givenName", "value": "Faye"}]),
            )
            .await;
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
) -> scim_bridge::server::RunningServer {
    let text = v.bridge_toml("127.0.0.1:0", data_dir, sim_base);
    bridge::serve_toml(&v.name(), &text).await
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

/// The Metabase routes the bridge and the checker used, from the simulator's stats (for a
/// failure message).
pub async fn routes(sim_base: &str) -> String {
    let stats: Value = match reqwest::get(format!("{sim_base}/__sim/stats")).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => return format!("no stats: {e}"),
    };
    stats["by_route"].to_string()
}

/// A variant's end state in Metabase, for `bridge::settle`.
struct EndState<'a> {
    v: &'a Variant,
    api: &'a MetabaseApi,
}

impl bridge::Checker for EndState<'_> {
    type State = MbState;
    const VENDOR: &'static str = "Metabase";
    async fn read(&self) -> Option<MbState> {
        self.api.try_state().await
    }
    fn diff(&self, state: &MbState) -> Vec<String> {
        self.v.diff(state)
    }
    /// The bridge lists every Metabase user but those the IdP deleted (Metabase keeps them
    /// deactivated; the bridge must not adopt them back).
    fn users(&self, state: &MbState) -> BTreeSet<String> {
        let deleted = self.v.expected().accounts.absent;
        state
            .users
            .keys()
            .filter(|n| !deleted.contains(*n))
            .cloned()
            .collect()
    }
    async fn context(&self, idp: &Idp) -> String {
        format!(
            "{}; Metabase routes {}",
            bridge::outbox_summary(idp.admin_root(), BRIDGE_TENANT).await,
            routes(&self.api.base).await
        )
    }
    fn trace(&self) -> bool {
        std::env::var_os("METABASE_TRACE").is_some()
    }
}

/// Reads Metabase until the variant's end state holds (`Variant::diff`), failing `limit` after
/// the IdP's last write with what still differs. Then the bridge must list exactly Metabase's
/// users but those the IdP deleted, and hold no refused change. Metabase's state. With
/// `METABASE_TRACE` set, every read that still differs is printed with the outbox's depth.
pub async fn settle(idp: &Idp, v: &Variant, api: &MetabaseApi, limit: Duration) -> MbState {
    let state = bridge::settle(idp, &EndState { v, api }, limit).await;
    bridge::assert_no_refused(idp, BRIDGE_TENANT).await;
    state
}

//! ThoughtSpot REST API v2.0 simulator: full-access bearer tokens scoped to an Org; users,
//! groups (membership lives there), Orgs and RBAC roles. Written from
//! `shared/reference/vendors-tableau-thoughtspot.md` part B (cited as [B.n]) and ThoughtSpot's
//! OpenAPI spec in `shared/reference/vendor-specs/thoughtspot/`, against which the tests validate
//! every JSON body this module produces.
//!
//! Vendor switches (`--sim-switch KEY=VALUE`), for points the reference leaves UNVERIFIED:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `thoughtspot.error_form` | `nested` | `nested`: `{"error":{"message":{"debug":{code,…,debug}}}}` as observed live; `flat`: the spec examples' `{"error":{"message":{code,…,debug}}}` [B.7] |
//! | `thoughtspot.not_found_status` | `400` | status for an unknown user/group/role on update/delete (code 10002; the spec lists no 404) |
//! | `thoughtspot.conflict_status` | `400` | status for a duplicate user/group/role/Org name (code 10002; the spec lists no 409) |
//! | `thoughtspot.search_miss` | `empty` | `users/search` / `groups/search` with a `*_identifier` that matches nothing: `empty` (`[]`) or `error` (not-found error) |
//! | `thoughtspot.credential_precedence` | `secret_key` | which credential `auth/token/full` checks when both are sent: `secret_key` (OpenAPI spec) or `password` (developer guide) |
//! | `thoughtspot.rate_limit_rps` | `100` | requests per second per client IP before 429 (26.2.0.cl+); `0` turns the limit off [B.7] |
//! | `thoughtspot.rate_limit_burst` | `10` | requests allowed above the rate in a burst |
//! | `thoughtspot.retry_after` | `false` | send `Retry-After` (seconds) with a 429; ThoughtSpot documents none (its C# SDK backs off 1/2/4 s on its own [B.7]) — UNVERIFIED |
//! | `thoughtspot.require_user_agent` | `true` | a request without `User-Agent` is refused (400/10002); the docs call the header required [B.1], the real answer is UNVERIFIED |
//!
//! Choices the reference leaves open, fixed here: a missing, unknown or expired bearer is
//! 401/10097; a missing privilege or a non-ACTIVE user 403/10023; our own 429 (rate limit and
//! `--throttle-rps`) uses the nested body with code 429; unknown paths 404 and wrong methods 405,
//! both with the nested body; the All group (one per Org, every Org member in it, AUTHORING)
//! cannot be deleted, renamed or given members (400/10002); seeded roles Super Admin (read-only),
//! Analyst, Viewer; a seeded formula variable `region` (FORMULA_VARIABLE, data_type VARCHAR, not
//! sensitive, owned by the Primary Org, no values); `creation_time_in_millis` is left out of
//! roles because the spec types it as an object. Routes (all POST under `/api/rest/2.0/` unless
//! noted): `auth/token/{full,validate,revoke}`, `GET auth/session/user`,
//! `users/{search,create,deactivate,activate}`, `users/{id}/{update,delete}`,
//! `groups/{search,create}`, `groups/{id}/{update,delete}`, `orgs/{search,create}`,
//! `orgs/{id}/delete`, `roles/{search,create}`, `roles/{id}/{update,delete}`,
//! `template/variables/{create,search,update-values,delete}` (`update-values` is the deprecated
//! batch form), `template/variables/{id}/{update-values,update,delete}` (`delete` deprecated).
//!
//! Template variables (`Variable` in the spec; the developer guide's "Custom variables" page):
//! names are unique across the cluster (case-insensitive; a letter or `_`, then letters, digits,
//! `_`), a duplicate is the conflict error. A variable belongs to the Org of the token that
//! created it (`org`); an Org sees its own and the Primary Org's, a cluster admin in the Primary
//! Org all. Formula variables need CAN_MANAGE_VARIABLES or ADMINISTRATION, the other kinds
//! ADMINISTRATION. A value is stored per scope (Org, optional principal, optional model):
//! the Org is the one named (its name, its id or `primaryOrg`), else the token's (another Org
//! only for a cluster admin); a principal is any user (GUID or name) or a group of that Org
//! (without `principal_type`: a user first), stored by GUID and **shown by name** in
//! `values[].principal_identifier` (search's `principal_identifier` filter takes either); an
//! unknown principal or Org is 400/10002. Formula variables are list variables (`value_list`);
//! the other kinds hold one `value` (more is 400). `operation` (default REPLACE, the spec gives
//! none): REPLACE sets the scope's values, ADD appends (list) or replaces (single), REMOVE takes
//! the given values out (list) or clears the scope, RESET clears every value the caller reaches;
//! a scope left empty is dropped, and resending what is stored changes nothing. Formula values
//! must fit the `data_type` (`TS_WILDCARD_ALL` always does). Search answers `values: null` for
//! METADATA (as the guide's example) and, for METADATA_AND_VALUES, the values of the caller's Org
//! (all Orgs for a cluster admin) that match any `value_scope`. Deleting a user, group or Org
//! deletes their values (and an Org its variables). Sensitive values are shown, not masked.
//!
//! `--token-ttl-s` caps the validity a client asks for (`validity_time_in_sec`, default 300 s).
//! A token without `org_id` is for the Primary Org (0), as the developer guide says [B.2].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Map, Value};

use super::ids::IdGen;
use super::{SimOptions, VendorSim};

const SEED_SALT: u64 = 0x7507_5907;
const DEFAULT_VALIDITY_S: i64 = 300;
const DEFAULT_RECORD_SIZE: i64 = 10;

/// `privileges` a group may carry (`CreateUserGroupRequest.privileges.items.enum`).
const GROUP_PRIVILEGES: &[&str] = &[
    "ADMINISTRATION",
    "AUTHORING",
    "USERDATAUPLOADING",
    "DATADOWNLOADING",
    "USERMANAGEMENT",
    "DATAMANAGEMENT",
    "SHAREWITHALL",
    "JOBSCHEDULING",
    "A3ANALYSIS",
    "EXPERIMENTALFEATUREPRIVILEGE",
    "BYPASSRLS",
    "RANALYSIS",
    "DEVELOPER",
    "USER_ADMINISTRATION",
    "GROUP_ADMINISTRATION",
    "SYNCMANAGEMENT",
    "CAN_CREATE_CATALOG",
    "DISABLE_PINBOARD_CREATION",
    "LIVEBOARD_VERIFIER",
    "PREVIEW_THOUGHTSPOT_SAGE",
    "CAN_MANAGE_VERSION_CONTROL",
    "THIRDPARTY_ANALYSIS",
    "ALLOW_NON_EMBED_FULL_APP_ACCESS",
    "CAN_ACCESS_ANALYST_STUDIO",
    "CAN_MANAGE_ANALYST_STUDIO",
    "CAN_MODIFY_FOLDERS",
    "CAN_MANAGE_VARIABLES",
    "CAN_VIEW_FOLDERS",
    "CAN_MANAGE_AGENTSPOT",
    "CAN_ACCESS_AGENTSPOT",
    "PREVIEW_DOCUMENT_SEARCH",
    "CAN_SETUP_VERSION_CONTROL",
    "CAN_DOWNLOAD_VISUALS",
    "CAN_DOWNLOAD_DETAILED_DATA",
    "CAN_USE_SPOTTER",
    "CAN_MANAGE_SPOTTER",
];

/// `privileges` a role may carry (`CreateRoleRequest.privileges.items.enum`): no ADMINISTRATION
/// or AUTHORING, which come only through groups.
const ROLE_PRIVILEGES: &[&str] = &[
    "USERDATAUPLOADING",
    "DATADOWNLOADING",
    "DATAMANAGEMENT",
    "SHAREWITHALL",
    "JOBSCHEDULING",
    "A3ANALYSIS",
    "BYPASSRLS",
    "DISABLE_PINBOARD_CREATION",
    "DEVELOPER",
    "APPLICATION_ADMINISTRATION",
    "USER_ADMINISTRATION",
    "GROUP_ADMINISTRATION",
    "SYSTEM_INFO_ADMINISTRATION",
    "SYNCMANAGEMENT",
    "ORG_ADMINISTRATION",
    "ROLE_ADMINISTRATION",
    "AUTHENTICATION_ADMINISTRATION",
    "BILLING_INFO_ADMINISTRATION",
    "CONTROL_TRUSTED_AUTH",
    "TAGMANAGEMENT",
    "LIVEBOARD_VERIFIER",
    "CAN_MANAGE_CUSTOM_CALENDAR",
    "CAN_CREATE_OR_EDIT_CONNECTIONS",
    "CAN_MANAGE_WORKSHEET_VIEWS_TABLES",
    "CAN_MANAGE_VERSION_CONTROL",
    "THIRDPARTY_ANALYSIS",
    "CAN_CREATE_CATALOG",
    "ALLOW_NON_EMBED_FULL_APP_ACCESS",
    "CAN_ACCESS_ANALYST_STUDIO",
    "CAN_MANAGE_ANALYST_STUDIO",
    "PREVIEW_DOCUMENT_SEARCH",
    "CAN_MANAGE_VARIABLES",
    "CAN_MODIFY_FOLDERS",
    "CAN_VIEW_FOLDERS",
    "CAN_MANAGE_AGENTSPOT",
    "CAN_ACCESS_AGENTSPOT",
    "CAN_SETUP_VERSION_CONTROL",
    "PREVIEW_THOUGHTSPOT_SAGE",
    "CAN_MANAGE_WEBHOOKS",
    "CAN_DOWNLOAD_VISUALS",
    "CAN_DOWNLOAD_DETAILED_DATA",
    "CAN_USE_SPOTTER",
    "CAN_MANAGE_SPOTTER",
];

const ACCOUNT_TYPES: &[&str] = &[
    "LOCAL_USER",
    "LDAP_USER",
    "SAML_USER",
    "OIDC_USER",
    "REMOTE_USER",
];
const ACCOUNT_STATUSES: &[&str] = &[
    "ACTIVE",
    "INACTIVE",
    "EXPIRED",
    "LOCKED",
    "PENDING",
    "SUSPENDED",
];
const VISIBILITIES: &[&str] = &["SHARABLE", "NON_SHARABLE"];
const GROUP_TYPES: &[&str] = &["LOCAL_GROUP", "LDAP_GROUP", "TEAM_GROUP", "TENANT_GROUP"];
const LOCALES: &[&str] = &[
    "en-CA", "en-GB", "en-US", "de-DE", "ja-JP", "zh-CN", "pt-BR", "fr-FR", "fr-CA", "es-US",
    "es-ES", "it-IT", "nl-NL", "da-DK", "fi-FI", "sv-SE", "nb-NO", "pt-PT", "ru-RU", "zh-HANT",
    "ko-KR", "de-CH", "en-AU", "en-DE", "en-IN", "en-NZ",
];

/// `CreateVariableRequest.type.enum`.
const VARIABLE_TYPES: &[&str] = &[
    "CONNECTION_PROPERTY",
    "TABLE_MAPPING",
    "CONNECTION_PROPERTY_PER_PRINCIPAL",
    "FORMULA_VARIABLE",
];
/// `VariableDetailInput.type.enum`: USER_PROPERTY can be searched for but not created.
const VARIABLE_SEARCH_TYPES: &[&str] = &[
    "CONNECTION_PROPERTY",
    "TABLE_MAPPING",
    "CONNECTION_PROPERTY_PER_PRINCIPAL",
    "FORMULA_VARIABLE",
    "USER_PROPERTY",
];
const VARIABLE_DATA_TYPES: &[&str] = &["VARCHAR", "INT32", "INT64", "DOUBLE", "DATE", "DATE_TIME"];
const PRINCIPAL_TYPES: &[&str] = &["USER", "USER_GROUP"];
const VARIABLE_OPS: &[&str] = &["ADD", "REMOVE", "REPLACE", "RESET"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum ErrorForm {
    Nested,
    Flat,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Replace,
}

/// `operation` of the variable value writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum VarOp {
    Add,
    Remove,
    Replace,
    Reset,
}

/// Ids in insertion order with O(1) membership and O(log n) removal: the order of users and
/// of a group's members, which reach 100,000s in benchmarks.
#[derive(Clone, Debug, Default)]
struct OrderedSet {
    next: u64,
    by_seq: BTreeMap<u64, String>,
    seq: HashMap<String, u64>,
}

impl OrderedSet {
    fn contains(&self, id: &str) -> bool {
        self.seq.contains_key(id)
    }
    /// Appends `id` unless it is already in; true when it was added.
    fn insert(&mut self, id: String) -> bool {
        if self.seq.contains_key(&id) {
            return false;
        }
        self.next += 1;
        self.by_seq.insert(self.next, id.clone());
        self.seq.insert(id, self.next);
        true
    }
    fn remove(&mut self, id: &str) -> bool {
        match self.seq.remove(id) {
            Some(n) => {
                self.by_seq.remove(&n);
                true
            }
            None => false,
        }
    }
    fn clear(&mut self) {
        self.by_seq.clear();
        self.seq.clear();
    }
    fn iter(&self) -> impl Iterator<Item = &String> + '_ {
        self.by_seq.values()
    }
}

impl<S: Into<String>> FromIterator<S> for OrderedSet {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> Self {
        let mut s = OrderedSet::default();
        for i in items {
            s.insert(i.into());
        }
        s
    }
}

struct Config {
    admin_user: String,
    admin_password: String,
    secret_key: String,
    max_validity_s: Option<i64>,
    error_form: ErrorForm,
    not_found_status: u16,
    conflict_status: u16,
    search_miss_error: bool,
    secret_key_first: bool,
    rate_rps: f64,
    rate_burst: f64,
    require_user_agent: bool,
    retry_after: bool,
}

impl Config {
    fn from_opts(opts: &SimOptions) -> Config {
        let num = |k: &str, d: f64| {
            opts.switch(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(d)
        };
        let status = |k: &str| {
            opts.switch(k)
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|s| (400..600).contains(s))
                .unwrap_or(400)
        };
        Config {
            admin_user: opts.admin_user.clone().unwrap_or_else(|| "tsadmin".into()),
            admin_password: opts
                .admin_password
                .clone()
                .unwrap_or_else(|| "admin".into()),
            secret_key: opts
                .secret_key
                .clone()
                .unwrap_or_else(|| "simulator-secret-key".into()),
            max_validity_s: opts.token_ttl_s.map(|s| s as i64),
            error_form: match opts.switch("thoughtspot.error_form") {
                Some("flat") => ErrorForm::Flat,
                _ => ErrorForm::Nested,
            },
            not_found_status: status("thoughtspot.not_found_status"),
            conflict_status: status("thoughtspot.conflict_status"),
            search_miss_error: opts.switch("thoughtspot.search_miss") == Some("error"),
            secret_key_first: opts.switch("thoughtspot.credential_precedence") != Some("password"),
            rate_rps: num("thoughtspot.rate_limit_rps", 100.0),
            rate_burst: num("thoughtspot.rate_limit_burst", 10.0),
            require_user_agent: opts.switch("thoughtspot.require_user_agent") != Some("false"),
            retry_after: opts.switch("thoughtspot.retry_after") == Some("true"),
        }
    }
}

#[derive(Clone, Debug)]
struct Org {
    id: i64,
    name: String,
    description: String,
    status: &'static str,
    visibility: &'static str,
}

#[derive(Clone, Debug)]
struct User {
    id: String,
    name: String,
    display_name: String,
    email: String,
    account_type: String,
    account_status: String,
    visibility: String,
    orgs: Vec<i64>,
    password: Option<String>,
    created_ms: i64,
    modified_ms: i64,
    author_id: String,
    notify_on_share: bool,
    show_onboarding_experience: bool,
    onboarding_experience_completed: bool,
    preferred_locale: Option<String>,
    super_user: bool,
    activation_token: Option<String>,
    first_login_ms: Option<i64>,
}

#[derive(Clone, Debug)]
struct Group {
    id: String,
    name: String,
    display_name: String,
    description: String,
    org_id: i64,
    group_type: String,
    visibility: String,
    privileges: Vec<String>,
    users: OrderedSet,
    sub_groups: Vec<String>,
    roles: Vec<String>,
    /// The Org's "All" group: every user of the Org is in it [B.3].
    all: bool,
    created_ms: i64,
    modified_ms: i64,
    author_id: String,
}

#[derive(Clone, Debug)]
struct Role {
    id: String,
    name: String,
    description: String,
    privileges: Vec<String>,
    org_id: i64,
    read_only: bool,
}

/// A template variable [TS-SPEC `Variable`]; names are unique across the cluster.
#[derive(Clone, Debug)]
struct Variable {
    id: String,
    name: String,
    vtype: String,
    /// FORMULA_VARIABLE only: the type its values must parse as.
    data_type: Option<String>,
    sensitive: bool,
    /// The Org it was created in (`org` in the JSON).
    org_id: i64,
    values: VarValues,
}

impl Variable {
    /// Formula variables hold lists (`value_list`, `ADD` appends); the others one `value`.
    fn is_list(&self) -> bool {
        self.vtype == "FORMULA_VARIABLE"
    }
}

/// Where a value applies: an Org, optionally a principal (stored by GUID), optionally a model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct VarScope {
    org_id: i64,
    /// (`USER` | `USER_GROUP`, GUID).
    principal: Option<(&'static str, String)>,
    model: Option<String>,
}

#[derive(Clone, Debug)]
struct VarValue {
    scope: VarScope,
    values: Vec<String>,
    priority: Option<i64>,
}

/// A variable's values in the order they were first set, found by scope and by principal in
/// O(1) (one value per user of 100,000 users must not make writes quadratic).
#[derive(Clone, Debug, Default)]
struct VarValues {
    next: u64,
    rows: BTreeMap<u64, VarValue>,
    by_scope: HashMap<VarScope, u64>,
    by_principal: HashMap<String, HashSet<u64>>,
}

impl VarValues {
    fn iter(&self) -> impl Iterator<Item = &VarValue> + '_ {
        self.rows.values()
    }
    fn get_mut(&mut self, scope: &VarScope) -> Option<&mut VarValue> {
        let n = self.by_scope.get(scope)?;
        self.rows.get_mut(n)
    }
    fn insert(&mut self, row: VarValue) {
        self.remove(&row.scope.clone());
        self.next += 1;
        if let Some((_, p)) = &row.scope.principal {
            self.by_principal
                .entry(p.clone())
                .or_default()
                .insert(self.next);
        }
        self.by_scope.insert(row.scope.clone(), self.next);
        self.rows.insert(self.next, row);
    }
    fn remove_seq(&mut self, n: u64) {
        let Some(row) = self.rows.remove(&n) else {
            return;
        };
        self.by_scope.remove(&row.scope);
        if let Some((_, p)) = &row.scope.principal {
            if let Some(set) = self.by_principal.get_mut(p) {
                set.remove(&n);
                if set.is_empty() {
                    self.by_principal.remove(p);
                }
            }
        }
    }
    fn remove(&mut self, scope: &VarScope) {
        if let Some(n) = self.by_scope.get(scope).copied() {
            self.remove_seq(n);
        }
    }
    /// Every value of one user or group (GUIDs do not collide between the two).
    fn remove_principal(&mut self, id: &str) {
        for n in self.by_principal.remove(id).unwrap_or_default() {
            self.remove_seq(n);
        }
    }
    fn retain(&mut self, keep: impl Fn(&VarValue) -> bool) {
        let gone: Vec<u64> = self
            .rows
            .iter()
            .filter(|(_, r)| !keep(r))
            .map(|(n, _)| *n)
            .collect();
        for n in gone {
            self.remove_seq(n);
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    user_id: String,
    org_id: i64,
    created_ms: i64,
    expires_ms: i64,
}

#[derive(Default)]
struct State {
    orgs: Vec<Org>,
    users: HashMap<String, User>,
    user_order: OrderedSet,
    /// ASCII-lowercased user name → id: names are unique that way (create and rename check).
    user_names: HashMap<String, String>,
    groups: HashMap<String, Group>,
    group_order: Vec<String>,
    /// (Org, ASCII-lowercased group name) → id: unique per Org.
    group_names: HashMap<(i64, String), String>,
    roles: HashMap<String, Role>,
    role_order: Vec<String>,
    tokens: HashMap<String, Token>,
    next_org_id: i64,
    variables: HashMap<String, Variable>,
    variable_order: Vec<String>,
}

/// A ThoughtSpot error: HTTP status, numeric code, message [B.7].
#[derive(Debug)]
struct TsErr {
    status: u16,
    code: u32,
    msg: String,
}

fn ts_err(status: u16, code: u32, msg: impl Into<String>) -> TsErr {
    TsErr {
        status,
        code,
        msg: msg.into(),
    }
}
fn invalid(msg: impl Into<String>) -> TsErr {
    ts_err(400, 10002, msg)
}
fn unauthorized(msg: impl Into<String>) -> TsErr {
    ts_err(401, 10097, msg)
}
fn forbidden(msg: impl Into<String>) -> TsErr {
    ts_err(403, 10023, msg)
}

fn code_name(code: u32) -> &'static str {
    match code {
        10000 => "INTERNAL_ERROR",
        10002 => "INVALID_PARAMETER",
        10023 => "ACCESS_DENIED",
        10097 => "UNAUTHENTICATED",
        _ => "TOO_MANY_REQUESTS",
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Token bucket per client IP: `rps` a second, `rps + burst` at most in the bucket.
struct RateLimiter {
    rps: f64,
    cap: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    fn allow(&self, ip: IpAddr) -> bool {
        if self.rps <= 0.0 {
            return true;
        }
        let mut b = self.buckets.lock();
        let now = Instant::now();
        let (tokens, last) = b.entry(ip).or_insert((self.cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rps).min(self.cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct ThoughtSpot {
    cfg: Config,
    state: RwLock<State>,
    ids: IdGen,
    limiter: RateLimiter,
}

struct Sim(Arc<ThoughtSpot>);

/// The framework's entry point.
pub fn new(opts: &SimOptions) -> Arc<dyn VendorSim> {
    Arc::new(Sim(Arc::new(ThoughtSpot::new(opts))))
}

/// The caller of an authenticated request.
struct Caller {
    user_id: String,
    org_id: i64,
    token: String,
}

impl ThoughtSpot {
    fn new(opts: &SimOptions) -> ThoughtSpot {
        let cfg = Config::from_opts(opts);
        let limiter = RateLimiter {
            rps: cfg.rate_rps,
            cap: cfg.rate_rps + cfg.rate_burst,
            buckets: Mutex::new(HashMap::new()),
        };
        let t = ThoughtSpot {
            cfg,
            state: RwLock::new(State::default()),
            ids: IdGen::new(opts.derived_seed(SEED_SALT)),
            limiter,
        };
        t.seed();
        t
    }

    /// The Primary Org (0), its "All" and "Administrator" groups, the admin `tsadmin`, and the
    /// RBAC roles a fresh cluster shows (Super Admin plus two custom ones) [B.3][B.6].
    fn seed(&self) {
        let now = now_ms();
        let mut st = self.state.write();
        st.next_org_id = 1;
        st.orgs.push(Org {
            id: 0,
            name: "Primary".into(),
            description: "Primary Org".into(),
            status: "ACTIVE",
            visibility: "SHOW",
        });
        let admin_id = self.ids.uuid();
        let admin = User {
            id: admin_id.clone(),
            name: self.cfg.admin_user.clone(),
            display_name: "Administrator".into(),
            email: format!("{}@thoughtspot.local", self.cfg.admin_user),
            account_type: "LOCAL_USER".into(),
            account_status: "ACTIVE".into(),
            visibility: "SHARABLE".into(),
            orgs: vec![0],
            password: Some(self.cfg.admin_password.clone()),
            created_ms: now,
            modified_ms: now,
            author_id: admin_id.clone(),
            notify_on_share: true,
            show_onboarding_experience: false,
            onboarding_experience_completed: true,
            preferred_locale: None,
            super_user: true,
            activation_token: None,
            first_login_ms: Some(now),
        };
        st.insert_user(admin);
        let mut roles = Vec::new();
        for (name, desc, privs, ro) in [
            (
                "Super Admin",
                "Full administrative privileges",
                &[
                    "APPLICATION_ADMINISTRATION",
                    "USER_ADMINISTRATION",
                    "GROUP_ADMINISTRATION",
                    "ROLE_ADMINISTRATION",
                    "ORG_ADMINISTRATION",
                    "AUTHENTICATION_ADMINISTRATION",
                    "SYSTEM_INFO_ADMINISTRATION",
                    "BILLING_INFO_ADMINISTRATION",
                    "DATAMANAGEMENT",
                    "DATADOWNLOADING",
                    "SHAREWITHALL",
                    "CONTROL_TRUSTED_AUTH",
                ][..],
                true,
            ),
            (
                "Analyst",
                "Can analyse and download data",
                &["DATADOWNLOADING", "A3ANALYSIS", "SHAREWITHALL"][..],
                false,
            ),
            (
                "Viewer",
                "Can view shared content",
                &["DATADOWNLOADING"][..],
                false,
            ),
        ] {
            let r = Role {
                id: self.ids.uuid(),
                name: name.into(),
                description: desc.into(),
                privileges: privs.iter().map(|p| p.to_string()).collect(),
                org_id: 0,
                read_only: ro,
            };
            roles.push(r.id.clone());
            st.role_order.push(r.id.clone());
            st.roles.insert(r.id.clone(), r);
        }
        let all = self.new_group(&admin_id, 0, "All", "All", true);
        st.insert_group(all);
        let mut admins = self.new_group(&admin_id, 0, "Administrator", "Administrator", false);
        admins.description = "Administrators of the cluster".into();
        admins.privileges = vec!["ADMINISTRATION".into(), "AUTHORING".into()];
        admins.users = [admin_id].into_iter().collect();
        admins.roles = vec![roles[0].clone()];
        st.insert_group(admins);
        // A formula variable for attribute mappings to write per-user values into.
        let region = Variable {
            id: self.ids.uuid(),
            name: "region".into(),
            vtype: "FORMULA_VARIABLE".into(),
            data_type: Some("VARCHAR".into()),
            sensitive: false,
            org_id: 0,
            values: VarValues::default(),
        };
        st.variable_order.push(region.id.clone());
        st.variables.insert(region.id.clone(), region);
    }

    fn new_group(&self, author: &str, org: i64, name: &str, display: &str, all: bool) -> Group {
        let now = now_ms();
        Group {
            id: self.ids.uuid(),
            name: name.into(),
            display_name: display.into(),
            description: if all {
                "All users of the Org".into()
            } else {
                String::new()
            },
            org_id: org,
            group_type: "LOCAL_GROUP".into(),
            visibility: "SHARABLE".into(),
            // AUTHORING always comes through the All group [B.3].
            privileges: if all {
                vec!["AUTHORING".into()]
            } else {
                Vec::new()
            },
            users: OrderedSet::default(),
            sub_groups: Vec::new(),
            roles: Vec::new(),
            all,
            created_ms: now,
            modified_ms: now,
            author_id: author.into(),
        }
    }

    fn token(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.ids.bytes(32))
    }

    fn not_found(&self, what: &str, id: &str) -> TsErr {
        ts_err(
            self.cfg.not_found_status,
            10002,
            format!("{what} with identifier {id} does not exist or is not accessible."),
        )
    }

    fn conflict(&self, what: &str, name: &str) -> TsErr {
        ts_err(
            self.cfg.conflict_status,
            10002,
            format!("{what} with name {name} already exists."),
        )
    }

    fn error_response(&self, e: &TsErr) -> HttpResponse {
        self.error_response_with(e, Some(1))
    }

    fn error_response_with(&self, e: &TsErr, retry_after_s: Option<u64>) -> HttpResponse {
        let incident = self.ids.uuid();
        let message = match self.cfg.error_form {
            // Observed live: the inner `debug` is a JSON array held in a string [B.7].
            ErrorForm::Nested => {
                let text = format!(
                    "Error Code: {} Incident Id: {incident}\nError Message: {}",
                    code_name(e.code),
                    e.msg
                );
                json!({"debug": {
                    "code": e.code,
                    "incident_id_guid": incident,
                    "trace_id_guid": "tracing-disabled",
                    "debug": Value::Array(vec![Value::String(text)]).to_string(),
                }})
            }
            ErrorForm::Flat => json!({
                "code": e.code,
                "incident_id_guid": incident,
                "trace_id_guid": "tracing-disabled",
                "debug": e.msg,
            }),
        };
        let mut resp =
            HttpResponse::build(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST));
        resp.content_type("application/json");
        if e.status == 429 && self.cfg.retry_after {
            resp.insert_header(("Retry-After", retry_after_s.unwrap_or(1).max(1).to_string()));
        }
        resp.body(json!({"error": {"message": message}}).to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Request body helpers: every field is optional and typed; a wrong type is 400/10002.

struct Body(Map<String, Value>);

impl Body {
    fn str(&self, k: &str) -> Result<Option<String>, TsErr> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{k} must be a string."))),
        }
    }
    fn req_str(&self, k: &str) -> Result<String, TsErr> {
        self.str(k)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid(format!("{k} is required.")))
    }
    fn enum_str(&self, k: &str, allowed: &[&str]) -> Result<Option<String>, TsErr> {
        match self.str(k)? {
            Some(v) if !allowed.contains(&v.as_str()) => {
                Err(invalid(format!("{v} is not a valid value for {k}.")))
            }
            other => Ok(other),
        }
    }
    fn bool(&self, k: &str) -> Result<Option<bool>, TsErr> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(format!("{k} must be a boolean."))),
        }
    }
    fn int(&self, k: &str) -> Result<Option<i64>, TsErr> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{k} must be an integer."))),
            Some(_) => Err(invalid(format!("{k} must be an integer."))),
        }
    }
    fn list(&self, k: &str) -> Result<Option<Vec<String>>, TsErr> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    // Org ids are integers in responses, strings in requests; take both [B.7].
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(invalid(format!("{k} must be an array of strings."))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid(format!("{k} must be an array."))),
        }
    }
    fn enum_list(&self, k: &str, allowed: &[&str]) -> Result<Option<Vec<String>>, TsErr> {
        let l = self.list(k)?;
        if let Some(items) = &l {
            if let Some(bad) = items.iter().find(|i| !allowed.contains(&i.as_str())) {
                return Err(invalid(format!("{bad} is not a valid value for {k}.")));
            }
        }
        Ok(l)
    }
    /// An array of objects (`variable_details`, `variable_assignment`, …).
    fn objects(&self, k: &str) -> Result<Option<Vec<Body>>, TsErr> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Object(m) => Ok(Body(m.clone())),
                    _ => Err(invalid(format!("{k} must be an array of objects."))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid(format!("{k} must be an array."))),
        }
    }
    fn var_op(&self, k: &str) -> Result<Option<VarOp>, TsErr> {
        Ok(self.enum_str(k, VARIABLE_OPS)?.map(|o| match o.as_str() {
            "ADD" => VarOp::Add,
            "REMOVE" => VarOp::Remove,
            "RESET" => VarOp::Reset,
            _ => VarOp::Replace,
        }))
    }
    fn op(&self) -> Result<Op, TsErr> {
        // `operation` defaults to REPLACE [B.4][B.5].
        Ok(
            match self
                .enum_str("operation", &["ADD", "REMOVE", "REPLACE"])?
                .as_deref()
            {
                Some("ADD") => Op::Add,
                Some("REMOVE") => Op::Remove,
                _ => Op::Replace,
            },
        )
    }
}

/// `operation` on a list field, in O(current + items).
fn apply_op(current: &mut Vec<String>, op: Op, items: Vec<String>) {
    match op {
        Op::Replace => {
            let mut seen = HashSet::new();
            current.clear();
            for i in items {
                if seen.insert(i.clone()) {
                    current.push(i);
                }
            }
        }
        Op::Add => {
            let mut seen: HashSet<String> = current.iter().cloned().collect();
            for i in items {
                if seen.insert(i.clone()) {
                    current.push(i);
                }
            }
        }
        Op::Remove => {
            let gone: HashSet<String> = items.into_iter().collect();
            current.retain(|c| !gone.contains(c));
        }
    }
}

/// `operation` on a group's members.
fn apply_op_set(current: &mut OrderedSet, op: Op, items: Vec<String>) {
    match op {
        Op::Replace => {
            current.clear();
            for i in items {
                current.insert(i);
            }
        }
        Op::Add => {
            for i in items {
                current.insert(i);
            }
        }
        Op::Remove => {
            for i in items {
                current.remove(&i);
            }
        }
    }
}

/// `name_pattern`: case-insensitive, `%` matches any run of characters [B.4]. Iterative, so
/// a pattern full of `%` stays linear in practice.
fn pattern_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let s: Vec<char> = s.to_lowercase().chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == '%' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

fn paginate<T>(items: Vec<T>, offset: i64, size: i64) -> Result<Vec<T>, TsErr> {
    if offset < 0 {
        return Err(invalid("record_offset must not be negative."));
    }
    if size < -1 {
        return Err(invalid(
            "record_size must be -1 (all) or a positive number.",
        ));
    }
    let it = items.into_iter().skip(offset as usize);
    Ok(if size == -1 {
        it.collect()
    } else {
        it.take(size as usize).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// State queries

impl State {
    fn org(&self, id: i64) -> Option<&Org> {
        self.orgs.iter().find(|o| o.id == id)
    }

    fn org_by_ident(&self, ident: &str) -> Option<&Org> {
        match ident.trim().parse::<i64>() {
            Ok(id) => self.org(id),
            Err(_) => self
                .orgs
                .iter()
                .find(|o| o.name.eq_ignore_ascii_case(ident)),
        }
    }

    /// By GUID first, then by name (ASCII case-insensitive) through the name index.
    fn user_by_ident(&self, ident: &str) -> Option<&User> {
        self.users.get(ident).or_else(|| {
            self.user_names
                .get(&ident.to_ascii_lowercase())
                .and_then(|id| self.users.get(id))
        })
    }

    /// Groups compare by GUID or `name` (not `display_name`) inside one Org [B.7].
    fn group_by_ident(&self, org: i64, ident: &str) -> Option<&Group> {
        match self.groups.get(ident) {
            Some(g) if g.org_id == org => Some(g),
            Some(_) => None,
            None => self
                .group_names
                .get(&(org, ident.to_ascii_lowercase()))
                .and_then(|id| self.groups.get(id)),
        }
    }

    // The only ways users and groups come and go or change name, so that the name indexes
    // stay right.

    fn insert_user(&mut self, u: User) {
        self.user_names
            .entry(u.name.to_ascii_lowercase())
            .or_insert_with(|| u.id.clone());
        self.user_order.insert(u.id.clone());
        self.users.insert(u.id.clone(), u);
    }

    fn remove_user(&mut self, id: &str) -> Option<User> {
        let u = self.users.remove(id)?;
        let key = u.name.to_ascii_lowercase();
        if self.user_names.get(&key).is_some_and(|i| i == id) {
            self.user_names.remove(&key);
        }
        self.user_order.remove(id);
        Some(u)
    }

    fn rename_user(&mut self, id: &str, name: String) {
        let Some(u) = self.users.get_mut(id) else {
            return;
        };
        let old = u.name.to_ascii_lowercase();
        u.name = name;
        let new = u.name.to_ascii_lowercase();
        if self.user_names.get(&old).is_some_and(|i| i == id) {
            self.user_names.remove(&old);
        }
        self.user_names.entry(new).or_insert_with(|| id.to_string());
    }

    fn insert_group(&mut self, g: Group) {
        self.group_names
            .entry((g.org_id, g.name.to_ascii_lowercase()))
            .or_insert_with(|| g.id.clone());
        self.group_order.push(g.id.clone());
        self.groups.insert(g.id.clone(), g);
    }

    /// Drops the group and every reference to it (sub-groups, variable values); the caller
    /// fixes `group_order` (one pass for many groups).
    fn remove_group(&mut self, id: &str) -> Option<Group> {
        let g = self.groups.remove(id)?;
        let key = (g.org_id, g.name.to_ascii_lowercase());
        if self.group_names.get(&key).is_some_and(|i| i == id) {
            self.group_names.remove(&key);
        }
        for other in self.groups.values_mut() {
            other.sub_groups.retain(|s| s != id);
        }
        self.drop_principal_values(id);
        Some(g)
    }

    fn rename_group(&mut self, id: &str, name: String) {
        let Some(g) = self.groups.get_mut(id) else {
            return;
        };
        let old = (g.org_id, g.name.to_ascii_lowercase());
        g.name = name;
        let new = (g.org_id, g.name.to_ascii_lowercase());
        if self.group_names.get(&old).is_some_and(|i| i == id) {
            self.group_names.remove(&old);
        }
        self.group_names
            .entry(new)
            .or_insert_with(|| id.to_string());
    }

    /// A deleted user or group takes their variable values along.
    fn drop_principal_values(&mut self, id: &str) {
        for v in self.variables.values_mut() {
            v.values.remove_principal(id);
        }
    }

    /// By GUID or name (case-insensitive), whatever the Org.
    fn variable_by_ident(&self, ident: &str) -> Option<&Variable> {
        self.variables.get(ident).or_else(|| {
            self.variable_order
                .iter()
                .filter_map(|id| self.variables.get(id))
                .find(|v| v.name.eq_ignore_ascii_case(ident))
        })
    }

    /// `org_identifier` of a variable value: "the unique name of the org" [TS-SPEC]; the numeric
    /// id and `primaryOrg` (the developer guide's name for Org 0) are taken too.
    fn var_org(&self, ident: &str) -> Option<&Org> {
        if ident.trim().eq_ignore_ascii_case("primaryOrg") {
            return self.org(0);
        }
        self.org_by_ident(ident)
    }

    fn principal_name(&self, kind: &str, id: &str) -> String {
        let name = if kind == "USER" {
            self.users.get(id).map(|u| u.name.clone())
        } else {
            self.groups.get(id).map(|g| g.name.clone())
        };
        name.unwrap_or_else(|| id.to_string())
    }

    fn var_value_json(&self, v: &Variable, x: &VarValue) -> Value {
        let mut m = Map::new();
        if v.is_list() {
            m.insert("value_list".into(), json!(x.values));
        } else if let Some(one) = x.values.first() {
            m.insert("value".into(), json!(one));
        }
        m.insert(
            "org_identifier".into(),
            json!(self
                .org(x.scope.org_id)
                .map(|o| o.name.clone())
                .unwrap_or_else(|| x.scope.org_id.to_string())),
        );
        if let Some((kind, id)) = &x.scope.principal {
            m.insert("principal_type".into(), json!(kind));
            m.insert(
                "principal_identifier".into(),
                json!(self.principal_name(kind, id)),
            );
        }
        if let Some(model) = &x.scope.model {
            m.insert("model_identifier".into(), json!(model));
        }
        if let Some(p) = x.priority {
            m.insert("priority".into(), json!(p));
        }
        Value::Object(m)
    }

    /// `values`: `None` for METADATA (shown as `null`, as in the developer guide's example).
    fn variable_json(&self, v: &Variable, values: Option<Vec<&VarValue>>) -> Value {
        json!({
            "id": v.id,
            "name": v.name,
            "variable_type": v.vtype,
            "sensitive": v.sensitive,
            "values": values.map(|xs| xs.iter().map(|x| self.var_value_json(v, x)).collect::<Vec<_>>()),
            "org": self.org_ref(v.org_id),
        })
    }

    fn role_by_ident(&self, org: i64, ident: &str) -> Option<&Role> {
        match self.roles.get(ident) {
            Some(r) if r.org_id == org => Some(r),
            Some(_) => None,
            None => self
                .role_order
                .iter()
                .filter_map(|id| self.roles.get(id))
                .find(|r| r.org_id == org && r.name.eq_ignore_ascii_case(ident)),
        }
    }

    fn in_group(&self, g: &Group, user: &User) -> bool {
        if g.all {
            user.orgs.contains(&g.org_id)
        } else {
            g.users.contains(&user.id)
        }
    }

    fn group_members<'a>(&'a self, g: &'a Group) -> Vec<&'a User> {
        if g.all {
            self.user_order
                .iter()
                .filter_map(|id| self.users.get(id))
                .filter(|u| u.orgs.contains(&g.org_id))
                .collect()
        } else {
            g.users.iter().filter_map(|id| self.users.get(id)).collect()
        }
    }

    /// A user's direct groups in an Org.
    fn direct_groups(&self, user: &User, org: i64) -> Vec<&Group> {
        self.group_order
            .iter()
            .filter_map(|id| self.groups.get(id))
            .filter(|g| g.org_id == org && self.in_group(g, user))
            .collect()
    }

    /// Groups whose `sub_groups` (transitively) contain one of `direct`: their privileges
    /// and roles pass down to the members of the sub-group [B.3].
    fn inherited_groups<'a>(&'a self, direct: &[&'a Group]) -> Vec<&'a Group> {
        let mut seen: HashSet<&str> = direct.iter().map(|g| g.id.as_str()).collect();
        let mut frontier: Vec<&str> = direct.iter().map(|g| g.id.as_str()).collect();
        let mut out = Vec::new();
        while let Some(child) = frontier.pop() {
            for id in &self.group_order {
                let Some(p) = self.groups.get(id) else {
                    continue;
                };
                if p.sub_groups.iter().any(|s| s == child) && seen.insert(p.id.as_str()) {
                    out.push(p);
                    frontier.push(p.id.as_str());
                }
            }
        }
        out
    }

    fn privileges(&self, user: &User, org: i64) -> Vec<String> {
        let direct = self.direct_groups(user, org);
        let inherited = self.inherited_groups(&direct);
        let mut out: Vec<String> = Vec::new();
        for g in direct.iter().chain(inherited.iter()) {
            for p in &g.privileges {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            for r in g.roles.iter().filter_map(|r| self.roles.get(r)) {
                for p in &r.privileges {
                    if !out.contains(p) {
                        out.push(p.clone());
                    }
                }
            }
        }
        out
    }

    /// Admins of the Primary Org administer every Org (cluster admins) [B.6].
    fn is_cluster_admin(&self, user: &User) -> bool {
        user.orgs.contains(&0)
            && self
                .privileges(user, 0)
                .iter()
                .any(|p| p == "ADMINISTRATION")
    }

    fn has_privilege(&self, user: &User, org: i64, privilege: &str) -> bool {
        if self.is_cluster_admin(user) {
            return true;
        }
        let p = self.privileges(user, org);
        p.iter().any(|x| x == "ADMINISTRATION" || x == privilege)
    }

    fn org_ref(&self, id: i64) -> Value {
        json!({"id": id, "name": self.org(id).map(|o| o.name.clone()).unwrap_or_default()})
    }

    fn user_json(&self, u: &User, org: i64) -> Value {
        let direct = self.direct_groups(u, org);
        let inherited = self.inherited_groups(&direct);
        let refs = |gs: &[&Group]| -> Value {
            Value::Array(
                gs.iter()
                    .map(|g| json!({"id": g.id, "name": g.name}))
                    .collect(),
            )
        };
        let current = if u.orgs.contains(&org) {
            org
        } else {
            u.orgs.first().copied().unwrap_or(0)
        };
        let mut v = json!({
            "id": u.id,
            "name": u.name,
            "display_name": u.display_name,
            "visibility": u.visibility,
            "author_id": u.author_id,
            "can_change_password": u.account_type == "LOCAL_USER",
            "complete_detail": true,
            "creation_time_in_millis": u.created_ms,
            "current_org": self.org_ref(current),
            "deleted": false,
            "deprecated": false,
            "account_type": u.account_type,
            "account_status": u.account_status,
            "email": u.email,
            "external": false,
            "hidden": false,
            "is_first_login": u.first_login_ms.is_none(),
            "modification_time_in_millis": u.modified_ms,
            "modifier_id": u.author_id,
            "notify_on_share": u.notify_on_share,
            "onboarding_experience_completed": u.onboarding_experience_completed,
            "orgs": u.orgs.iter().map(|o| self.org_ref(*o)).collect::<Vec<_>>(),
            "owner_id": u.id,
            "parent_type": "USER",
            "privileges": self.privileges(u, org),
            "show_onboarding_experience": u.show_onboarding_experience,
            "super_user": u.super_user,
            "system_user": false,
            "tenant_id": "982d6da9-9cd1-479e-b9a6-35aa05f9282a",
            "user_groups": refs(&direct),
            "user_inherited_groups": refs(&inherited),
            "welcome_email_sent": false,
        });
        if let Value::Object(m) = &mut v {
            if let Some(t) = u.first_login_ms {
                m.insert("first_login_time_in_millis".into(), json!(t));
            }
            if let Some(l) = &u.preferred_locale {
                m.insert("preferred_locale".into(), json!(l));
            }
        }
        v
    }

    fn group_json(&self, g: &Group, include_users: bool, include_sub_groups: bool) -> Value {
        let mut v = json!({
            "id": g.id,
            "name": g.name,
            "display_name": g.display_name,
            "visibility": g.visibility,
            "author_id": g.author_id,
            "complete_detail": true,
            "creation_time_in_millis": g.created_ms,
            "default_liveboards": [],
            "deleted": false,
            "deprecated": false,
            "description": g.description,
            "external": false,
            "hidden": false,
            "modification_time_in_millis": g.modified_ms,
            "modifier_id": g.author_id,
            // Quirk of the spec: group `orgs` items are {id, name} with a *string* id.
            "orgs": [{"id": g.org_id.to_string(), "name": self.org(g.org_id).map(|o| o.name.clone()).unwrap_or_default()}],
            "owner_id": g.id,
            "parent_type": "GROUP",
            "privileges": g.privileges,
            "system_group": g.all,
            "type": g.group_type,
            "roles": g.roles.iter().filter_map(|r| self.roles.get(r)).map(|r| json!({"id": r.id, "name": r.name})).collect::<Vec<_>>(),
        });
        if let Value::Object(m) = &mut v {
            if include_users {
                let users: Vec<Value> = self
                    .group_members(g)
                    .iter()
                    .map(|u| json!({"id": u.id, "name": u.name}))
                    .collect();
                m.insert("users".into(), Value::Array(users));
            }
            if include_sub_groups {
                let subs: Vec<Value> = g
                    .sub_groups
                    .iter()
                    .filter_map(|s| self.groups.get(s))
                    .map(|s| json!({"id": s.id, "name": s.name}))
                    .collect();
                m.insert("sub_groups".into(), Value::Array(subs));
            }
        }
        v
    }

    fn role_json(&self, r: &Role, search: bool) -> Value {
        let groups: Vec<&Group> = self
            .group_order
            .iter()
            .filter_map(|id| self.groups.get(id))
            .filter(|g| g.roles.contains(&r.id))
            .collect();
        // `creation_time_in_millis` is typed `object` in the spec's role schemas: left out.
        let mut v = json!({
            "id": r.id,
            "name": r.name,
            "description": r.description,
            "privileges": r.privileges,
            "groups_assigned_count": groups.len(),
            "orgs": [{"id": r.org_id.to_string(), "name": self.org(r.org_id).map(|o| o.name.clone()).unwrap_or_default()}],
            "permission": if r.read_only { "READ_ONLY" } else { "MODIFY" },
            "deleted": false,
            "deprecated": false,
            "external": false,
            "hidden": false,
        });
        if let Value::Object(m) = &mut v {
            m.insert(
                "groups".into(),
                Value::Array(
                    groups
                        .iter()
                        .map(|g| json!({"id": g.id, "name": g.name}))
                        .collect(),
                ),
            );
            if search {
                m.insert("shared_via_connection".into(), json!(false));
            }
        }
        v
    }
}

fn org_json(o: &Org) -> Value {
    json!({"id": o.id, "name": o.name, "status": o.status, "description": o.description, "visibility": o.visibility})
}

// ---------------------------------------------------------------------------------------------
// Template variables: helpers

/// A value write, checked and resolved, ready to apply.
struct VarWrite {
    var_id: String,
    op: VarOp,
    scope: VarScope,
    values: Vec<String>,
    priority: Option<i64>,
}

/// One scope as a request gives it (`VariablePutAssignmentInput`, `VariableUpdateScopeInput`,
/// `ValueScopeInput`).
#[derive(Default)]
struct ScopeIn {
    org: Option<String>,
    ptype: Option<String>,
    pident: Option<String>,
    model: Option<String>,
    priority: Option<i64>,
}

impl ScopeIn {
    fn parse(b: &Body) -> Result<ScopeIn, TsErr> {
        let some = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(ScopeIn {
            org: some(b.str("org_identifier")?),
            ptype: b.enum_str("principal_type", PRINCIPAL_TYPES)?,
            pident: some(b.str("principal_identifier")?),
            model: some(b.str("model_identifier")?),
            priority: b.int("priority")?,
        })
    }
}

/// "The variable name must start with either a letter or an underscore (_), and can only contain
/// alphanumeric characters and underscores" (ThoughtSpot's Create variables page).
fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A formula variable's values must match its `data_type`; dates are epoch numbers (or
/// YYYY-MM-DD for DATE), and `TS_WILDCARD_ALL` fits every type (developer guide).
fn value_fits(data_type: &str, v: &str) -> bool {
    let t = v.trim();
    if t == "TS_WILDCARD_ALL" {
        return true;
    }
    match data_type {
        "INT32" => t.parse::<i32>().is_ok(),
        "INT64" | "DATE_TIME" => t.parse::<i64>().is_ok(),
        "DOUBLE" => t.parse::<f64>().is_ok_and(f64::is_finite),
        "DATE" => {
            t.parse::<i64>().is_ok() || chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok()
        }
        _ => true,
    }
}

/// ADD appends to a list variable and replaces a single one; REPLACE sets the scope's values;
/// REMOVE takes the given values out of a list (or, given none or on a single-valued variable,
/// clears the scope). A scope left with no value is dropped. Writing what is there is a no-op.
fn apply_var(v: &mut Variable, w: VarWrite) {
    let list = v.is_list();
    let mut seen = HashSet::new();
    let values: Vec<String> = w
        .values
        .into_iter()
        .filter(|x| seen.insert(x.clone()))
        .collect();
    let current: Vec<String> = v
        .values
        .get_mut(&w.scope)
        .map(|r| r.values.clone())
        .unwrap_or_default();
    let next: Vec<String> = match w.op {
        VarOp::Add if list => {
            let mut c = current;
            let have: HashSet<String> = c.iter().cloned().collect();
            c.extend(values.into_iter().filter(|x| !have.contains(x)));
            c
        }
        VarOp::Add | VarOp::Replace => values,
        VarOp::Remove if list && !values.is_empty() => {
            let gone: HashSet<String> = values.into_iter().collect();
            current.into_iter().filter(|x| !gone.contains(x)).collect()
        }
        VarOp::Remove | VarOp::Reset => Vec::new(),
    };
    if next.is_empty() {
        v.values.remove(&w.scope);
    } else if let Some(row) = v.values.get_mut(&w.scope) {
        row.values = next;
        if w.priority.is_some() {
            row.priority = w.priority;
        }
    } else {
        v.values.insert(VarValue {
            scope: w.scope,
            values: next,
            priority: w.priority,
        });
    }
}

/// A `value_scope` filter of `template/variables/search`: every field given must match; the
/// principal by GUID or (case-insensitive) name, the Org by name or id.
fn scope_matches(st: &State, x: &VarValue, s: &ScopeIn) -> bool {
    let principal = x.scope.principal.as_ref();
    s.org
        .as_ref()
        .is_none_or(|o| st.var_org(o).is_some_and(|o| o.id == x.scope.org_id))
        && s.ptype
            .as_ref()
            .is_none_or(|t| principal.is_some_and(|(k, _)| k == t))
        && s.pident.as_ref().is_none_or(|p| {
            principal
                .is_some_and(|(k, id)| id == p || st.principal_name(k, id).eq_ignore_ascii_case(p))
        })
        && s.model
            .as_ref()
            .is_none_or(|m| x.scope.model.as_deref() == Some(m.as_str()))
}

// ---------------------------------------------------------------------------------------------
// Handlers

enum Reply {
    Json(Value),
    NoContent,
}

type Res = Result<Reply, TsErr>;

impl ThoughtSpot {
    /// Rate limit, JSON body (415 for another media type, 400 for malformed JSON).
    fn prelude(&self, req: &HttpRequest, body: &[u8]) -> Result<Body, TsErr> {
        if let Some(addr) = req.peer_addr() {
            if !self.limiter.allow(addr.ip()) {
                return Err(ts_err(
                    429,
                    429,
                    "Too many requests: 100 requests per second per client are allowed.",
                ));
            }
        }
        // "A User-Agent (required; some .NET clients have to add it themselves)" [B.1].
        if self.cfg.require_user_agent
            && req
                .headers()
                .get("user-agent")
                .is_none_or(|v| v.as_bytes().is_empty())
        {
            return Err(invalid("The User-Agent header is required."));
        }
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Body(Map::new()));
        }
        let ct = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.to_ascii_lowercase().contains("json") {
            return Err(ts_err(
                415,
                10002,
                format!("Unsupported media type '{ct}': send application/json."),
            ));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(Body(m)),
            Ok(_) => Err(invalid("The request body must be a JSON object.")),
            Err(e) => Err(invalid(format!("Malformed JSON in the request body: {e}"))),
        }
    }

    fn caller(&self, req: &HttpRequest) -> Result<Caller, TsErr> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("Not logged in: no bearer token was provided."))?;
        let st = self.state.read();
        let t = st
            .tokens
            .get(token)
            .ok_or_else(|| unauthorized("The bearer token is invalid or was revoked."))?;
        if now_ms() >= t.expires_ms {
            return Err(unauthorized("The bearer token has expired."));
        }
        let u = st
            .users
            .get(&t.user_id)
            .ok_or_else(|| unauthorized("The user of this token no longer exists."))?;
        if u.account_status != "ACTIVE" {
            return Err(forbidden(format!(
                "User {} is {}.",
                u.name, u.account_status
            )));
        }
        if st.org(t.org_id).is_none() {
            return Err(unauthorized("The Org of this token no longer exists."));
        }
        Ok(Caller {
            user_id: t.user_id.clone(),
            org_id: t.org_id,
            token: token.to_string(),
        })
    }

    fn require(&self, st: &State, c: &Caller, privilege: &str) -> Result<(), TsErr> {
        let u = st
            .users
            .get(&c.user_id)
            .ok_or_else(|| unauthorized("Not logged in."))?;
        if st.has_privilege(u, c.org_id, privilege) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "User {} lacks the privilege {privilege} required for this operation.",
                u.name
            )))
        }
    }

    // ---- auth ----

    fn token_full(&self, b: &Body) -> Res {
        let username = b.req_str("username")?;
        let password = b.str("password")?.filter(|s| !s.is_empty());
        let secret = b.str("secret_key")?.filter(|s| !s.is_empty());
        if password.is_none() && secret.is_none() {
            return Err(invalid("Either secret_key or password must be provided."));
        }
        let validity = b.int("validity_time_in_sec")?.unwrap_or(DEFAULT_VALIDITY_S);
        if validity <= 0 {
            return Err(invalid("validity_time_in_sec must be positive."));
        }
        let validity = match self.cfg.max_validity_s {
            Some(max) => validity.min(max),
            None => validity,
        };
        let org_id = b.int("org_id")?;
        let mut st = self.state.write();
        let u = st
            .user_by_ident(&username)
            .cloned()
            .ok_or_else(|| unauthorized("Invalid username or password."))?;
        let ok = match (&secret, &password) {
            (Some(s), Some(p)) => {
                if self.cfg.secret_key_first {
                    *s == self.cfg.secret_key
                } else {
                    u.password.as_deref() == Some(p.as_str())
                }
            }
            (Some(s), None) => *s == self.cfg.secret_key,
            (None, Some(p)) => u.password.as_deref() == Some(p.as_str()),
            (None, None) => false,
        };
        if !ok {
            return Err(unauthorized("Invalid username or password."));
        }
        if u.account_status != "ACTIVE" {
            return Err(forbidden(format!(
                "User {} is {} and cannot log in.",
                u.name, u.account_status
            )));
        }
        let org = org_id.unwrap_or(0);
        let accessible = st.org(org).is_some_and(|o| o.status == "ACTIVE")
            && (u.orgs.contains(&org) || st.is_cluster_admin(&u));
        if !accessible {
            return Err(invalid(
                "The specified org_identifier does not refer to a valid or accessible org",
            ));
        }
        let now = now_ms();
        let token = self.token();
        let t = Token {
            user_id: u.id.clone(),
            org_id: org,
            created_ms: now,
            expires_ms: now.saturating_add(validity.saturating_mul(1000)),
        };
        st.tokens.retain(|_, t| t.expires_ms > now);
        st.tokens.insert(token.clone(), t.clone());
        if let Some(user) = st.users.get_mut(&u.id) {
            user.first_login_ms.get_or_insert(now);
        }
        Ok(Reply::Json(json!({
            "token": token,
            "creation_time_in_millis": t.created_ms,
            "expiration_time_in_millis": t.expires_ms,
            "scope": {"access_type": "FULL", "org_id": org},
            "valid_for_user_id": u.id,
            "valid_for_username": u.name,
        })))
    }

    /// Any authenticated caller may validate a token.
    fn token_validate(&self, _caller: &Caller, b: &Body) -> Res {
        let token = b.req_str("token")?;
        let st = self.state.read();
        let t = st
            .tokens
            .get(&token)
            .filter(|t| t.expires_ms > now_ms())
            .ok_or_else(|| invalid("The token is invalid or has expired."))?;
        Ok(Reply::Json(json!({
            "creation_time_in_millis": t.created_ms,
            "expiration_time_in_millis": t.expires_ms,
            "scope": {"access_type": "FULL", "org_id": t.org_id},
            "valid_for_user_id": t.user_id,
            "token_type": "Bearer",
        })))
    }

    fn token_revoke(&self, c: &Caller, b: &Body) -> Res {
        let token = b.str("token")?;
        let user = b.str("user_identifier")?;
        let mut st = self.state.write();
        match (token, user) {
            (Some(t), _) => {
                st.tokens.remove(&t);
            }
            (None, Some(u)) => {
                let id = st
                    .user_by_ident(&u)
                    .map(|u| u.id.clone())
                    .ok_or_else(|| self.not_found("User", &u))?;
                st.tokens.retain(|_, t| t.user_id != id);
            }
            (None, None) => {
                st.tokens.remove(&c.token);
            }
        }
        Ok(Reply::NoContent)
    }

    fn session_user(&self, c: &Caller) -> Res {
        let st = self.state.read();
        let u = st
            .users
            .get(&c.user_id)
            .ok_or_else(|| unauthorized("Not logged in."))?;
        Ok(Reply::Json(st.user_json(u, c.org_id)))
    }

    // ---- users ----

    fn users_search(&self, c: &Caller, b: &Body) -> Res {
        let ident = b.str("user_identifier")?;
        let display_name = b.str("display_name")?;
        let name_pattern = b.str("name_pattern")?;
        let visibility = b.enum_str("visibility", VISIBILITIES)?;
        let email = b.str("email")?;
        let group_idents = b.list("group_identifiers")?;
        let privileges = b.list("privileges")?;
        let account_type = b.enum_str("account_type", ACCOUNT_TYPES)?;
        let account_status = b.enum_str("account_status", ACCOUNT_STATUSES)?;
        let org_idents = b.list("org_identifiers")?;
        let role_idents = b.list("role_identifiers")?;
        let notify = b.bool("notify_on_share")?;
        let offset = b.int("record_offset")?.unwrap_or(0);
        let size = b.int("record_size")?.unwrap_or(DEFAULT_RECORD_SIZE);
        let sort = self.sort_options(b)?;
        let st = self.state.read();
        // Another Org's users are visible only to a cluster admin acting from the Primary Org.
        let cluster = c.org_id == 0
            && st
                .users
                .get(&c.user_id)
                .is_some_and(|me| st.is_cluster_admin(me));
        let orgs: Vec<i64> = match &org_idents {
            Some(list) => list
                .iter()
                .filter_map(|o| st.org_by_ident(o).map(|o| o.id))
                .filter(|o| cluster || *o == c.org_id)
                .collect(),
            None => vec![c.org_id],
        };
        let groups: Option<Vec<&Group>> = group_idents.as_ref().map(|l| {
            l.iter()
                .filter_map(|g| st.group_by_ident(c.org_id, g))
                .collect()
        });
        let roles: Option<Vec<&Role>> = role_idents.as_ref().map(|l| {
            l.iter()
                .filter_map(|r| st.role_by_ident(c.org_id, r))
                .collect()
        });
        // A `user_identifier` names at most a GUID and a name: look both up, keep user order.
        let candidates: Vec<&String> = match &ident {
            Some(i) => {
                let mut ids: Vec<&String> = st
                    .users
                    .get_key_value(i)
                    .map(|(k, _)| k)
                    .into_iter()
                    .collect();
                if let Some(id) = st.user_names.get(&i.to_ascii_lowercase()) {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                ids.sort_by_key(|id| st.user_order.seq.get(*id).copied().unwrap_or(u64::MAX));
                ids
            }
            None => st.user_order.iter().collect(),
        };
        // Unsorted, a page needs only the first `offset + size` matches.
        let enough = match (&sort, offset, size) {
            (None, o, s) if o >= 0 && s > 0 => Some(o.saturating_add(s) as usize),
            _ => None,
        };
        let mut out: Vec<&User> = Vec::new();
        for id in candidates {
            if enough.is_some_and(|n| out.len() >= n) {
                break;
            }
            let Some(u) = st.users.get(id) else { continue };
            if !u.orgs.iter().any(|o| orgs.contains(o)) {
                continue;
            }
            if let Some(i) = &ident {
                if u.id != *i && !u.name.eq_ignore_ascii_case(i) {
                    continue;
                }
            }
            if display_name.as_ref().is_some_and(|d| *d != u.display_name) {
                continue;
            }
            if name_pattern
                .as_ref()
                .is_some_and(|p| !pattern_match(p, &u.name))
            {
                continue;
            }
            if visibility.as_ref().is_some_and(|v| *v != u.visibility) {
                continue;
            }
            if email
                .as_ref()
                .is_some_and(|e| !e.eq_ignore_ascii_case(&u.email))
            {
                continue;
            }
            if account_type.as_ref().is_some_and(|t| *t != u.account_type) {
                continue;
            }
            if account_status
                .as_ref()
                .is_some_and(|s| *s != u.account_status)
            {
                continue;
            }
            if notify.is_some_and(|n| n != u.notify_on_share) {
                continue;
            }
            // Each array filter is OR-ed within itself [B.4].
            if let Some(gs) = &groups {
                if !gs.iter().any(|g| st.in_group(g, u)) {
                    continue;
                }
            }
            if let Some(ps) = &privileges {
                let have = st.privileges(u, c.org_id);
                if !ps.iter().any(|p| have.contains(p)) {
                    continue;
                }
            }
            if let Some(rs) = &roles {
                let direct = st.direct_groups(u, c.org_id);
                if !rs
                    .iter()
                    .any(|r| direct.iter().any(|g| g.roles.contains(&r.id)))
                {
                    continue;
                }
            }
            out.push(u);
        }
        if out.is_empty() && self.cfg.search_miss_error {
            if let Some(i) = &ident {
                return Err(self.not_found("User", i));
            }
        }
        if let Some((field, asc)) = sort {
            match field.as_str() {
                "DISPLAY_NAME" => out.sort_by_cached_key(|u| u.display_name.to_lowercase()),
                "AUTHOR" => out.sort_by(|a, b| a.author_id.cmp(&b.author_id)),
                "CREATED" => out.sort_by_key(|u| u.created_ms),
                "MODIFIED" => out.sort_by_key(|u| u.modified_ms),
                _ => out.sort_by_cached_key(|u| u.name.to_lowercase()),
            }
            if !asc {
                out.reverse();
            }
        }
        let page = paginate(out, offset, size)?;
        Ok(Reply::Json(Value::Array(
            page.iter().map(|u| st.user_json(u, c.org_id)).collect(),
        )))
    }

    fn sort_options(&self, b: &Body) -> Result<Option<(String, bool)>, TsErr> {
        match b.0.get("sort_options") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                let sb = Body(m.clone());
                let field = sb
                    .enum_str(
                        "field_name",
                        &["NAME", "DISPLAY_NAME", "AUTHOR", "CREATED", "MODIFIED"],
                    )?
                    .unwrap_or_else(|| "NAME".into());
                let order = sb.enum_str("order", &["ASC", "DESC"])?;
                Ok(Some((field, order.as_deref() != Some("DESC"))))
            }
            Some(_) => Err(invalid("sort_options must be an object.")),
        }
    }

    fn resolve_orgs(&self, st: &State, idents: &[String]) -> Result<Vec<i64>, TsErr> {
        idents
            .iter()
            .map(|o| {
                st.org_by_ident(o)
                    .map(|o| o.id)
                    .ok_or_else(|| invalid(format!("Org {o} does not exist.")))
            })
            .collect()
    }

    fn resolve_groups(
        &self,
        st: &State,
        org: i64,
        idents: &[String],
    ) -> Result<Vec<String>, TsErr> {
        idents
            .iter()
            .map(|g| {
                st.group_by_ident(org, g)
                    .map(|g| g.id.clone())
                    .ok_or_else(|| self.not_found("Group", g))
            })
            .collect()
    }

    fn resolve_users(&self, st: &State, org: i64, idents: &[String]) -> Result<Vec<String>, TsErr> {
        idents
            .iter()
            .map(|u| {
                st.user_by_ident(u)
                    .filter(|u| u.orgs.contains(&org))
                    .map(|u| u.id.clone())
                    .ok_or_else(|| self.not_found("User", u))
            })
            .collect()
    }

    fn resolve_roles(&self, st: &State, org: i64, idents: &[String]) -> Result<Vec<String>, TsErr> {
        idents
            .iter()
            .map(|r| {
                st.role_by_ident(org, r)
                    .map(|r| r.id.clone())
                    .ok_or_else(|| self.not_found("Role", r))
            })
            .collect()
    }

    /// A user the caller's Org can see: a member of that Org, or anyone for a cluster admin
    /// acting from the Primary Org [B.6].
    fn user_in_scope(&self, st: &State, c: &Caller, ident: &str) -> Result<String, TsErr> {
        let u = st
            .user_by_ident(ident)
            .ok_or_else(|| self.not_found("User", ident))?;
        let cluster = c.org_id == 0
            && st
                .users
                .get(&c.user_id)
                .is_some_and(|me| st.is_cluster_admin(me));
        if u.orgs.contains(&c.org_id) || cluster {
            Ok(u.id.clone())
        } else {
            Err(self.not_found("User", ident))
        }
    }

    fn users_create(&self, c: &Caller, b: &Body) -> Res {
        let name = b.req_str("name")?;
        let display_name = b.req_str("display_name")?;
        let email = b.req_str("email")?;
        let password = b.str("password")?;
        let account_type = b
            .enum_str("account_type", ACCOUNT_TYPES)?
            .unwrap_or_else(|| "LOCAL_USER".into());
        let account_status = b
            .enum_str("account_status", ACCOUNT_STATUSES)?
            .unwrap_or_else(|| "ACTIVE".into());
        let visibility = b
            .enum_str("visibility", VISIBILITIES)?
            .unwrap_or_else(|| "SHARABLE".into());
        let org_idents = b.list("org_identifiers")?;
        let group_idents = b.list("group_identifiers")?;
        let notify = b.bool("notify_on_share")?.unwrap_or(true);
        let show_onb = b.bool("show_onboarding_experience")?.unwrap_or(true);
        let onb_done = b.bool("onboarding_experience_completed")?.unwrap_or(false);
        let locale = b.enum_str("preferred_locale", LOCALES)?;
        let mut st = self.state.write();
        self.require(&st, c, "USER_ADMINISTRATION")?;
        if st.user_by_ident(&name).is_some() {
            return Err(self.conflict("User", &name));
        }
        let orgs = match &org_idents {
            Some(l) if !l.is_empty() => self.resolve_orgs(&st, l)?,
            _ => vec![c.org_id],
        };
        // Groups given at create time count only in the token's Org [B.4, TS-JIT].
        let groups = self.resolve_groups(&st, c.org_id, group_idents.as_deref().unwrap_or(&[]))?;
        let now = now_ms();
        let u = User {
            id: self.ids.uuid(),
            name,
            display_name,
            email,
            account_type,
            account_status,
            visibility,
            orgs,
            password,
            created_ms: now,
            modified_ms: now,
            author_id: c.user_id.clone(),
            notify_on_share: notify,
            show_onboarding_experience: show_onb,
            onboarding_experience_completed: onb_done,
            preferred_locale: locale,
            super_user: false,
            activation_token: None,
            first_login_ms: None,
        };
        for g in &groups {
            if let Some(g) = st.groups.get_mut(g) {
                if !g.all {
                    g.users.insert(u.id.clone());
                }
            }
        }
        let id = u.id.clone();
        st.insert_user(u);
        let u = st.users.get(&id).ok_or_else(|| invalid("User vanished."))?;
        Ok(Reply::Json(st.user_json(u, c.org_id)))
    }

    fn users_update(&self, c: &Caller, ident: &str, b: &Body) -> Res {
        let name = b.str("name")?;
        let display_name = b.str("display_name")?;
        let visibility = b.enum_str("visibility", VISIBILITIES)?;
        let email = b.str("email")?;
        let status = b.enum_str("account_status", ACCOUNT_STATUSES)?;
        let account_type = b.enum_str("account_type", ACCOUNT_TYPES)?;
        let group_idents = b.list("group_identifiers")?;
        let org_idents = b.list("org_identifiers")?;
        let notify = b.bool("notify_on_share")?;
        let show_onb = b.bool("show_onboarding_experience")?;
        let onb_done = b.bool("onboarding_experience_completed")?;
        let locale = b.enum_str("preferred_locale", LOCALES)?;
        let op = b.op()?;
        let mut st = self.state.write();
        self.require(&st, c, "USER_ADMINISTRATION")?;
        let id = self.user_in_scope(&st, c, ident)?;
        if let Some(n) = &name {
            if n.trim().is_empty() {
                return Err(invalid("name must not be empty."));
            }
            if st.user_by_ident(n).is_some_and(|o| o.id != id) {
                return Err(self.conflict("User", n));
            }
        }
        let orgs = match &org_idents {
            Some(l) => Some(self.resolve_orgs(&st, l)?),
            None => None,
        };
        let groups = match &group_idents {
            Some(l) => Some(self.resolve_groups(&st, c.org_id, l)?),
            None => None,
        };
        let now = now_ms();
        let mut revoke = false;
        let mut dropped_orgs = Vec::new();
        {
            if let Some(v) = name {
                st.rename_user(&id, v);
            }
            let u = st
                .users
                .get_mut(&id)
                .ok_or_else(|| self.not_found("User", ident))?;
            if let Some(v) = display_name {
                u.display_name = v;
            }
            if let Some(v) = visibility {
                u.visibility = v;
            }
            if let Some(v) = email {
                u.email = v;
            }
            if let Some(v) = account_type {
                u.account_type = v;
            }
            if let Some(v) = notify {
                u.notify_on_share = v;
            }
            if let Some(v) = show_onb {
                u.show_onboarding_experience = v;
            }
            if let Some(v) = onb_done {
                u.onboarding_experience_completed = v;
            }
            if let Some(v) = locale {
                u.preferred_locale = Some(v);
            }
            if let Some(s) = status {
                // Leaving ACTIVE ends the user's sessions and revokes their tokens [B.4, OKTA-TS].
                revoke = s != "ACTIVE";
                u.account_status = s;
            }
            if let Some(o) = orgs {
                let before = u.orgs.clone();
                let mut list: Vec<String> = u.orgs.iter().map(|o| o.to_string()).collect();
                apply_op(&mut list, op, o.iter().map(|o| o.to_string()).collect());
                u.orgs = list.iter().filter_map(|o| o.parse().ok()).collect();
                dropped_orgs = before.into_iter().filter(|o| !u.orgs.contains(o)).collect();
            }
            u.modified_ms = now;
        }
        // Group changes apply only in the token's Org [B.4, TS-JIT].
        if let Some(gs) = groups {
            let org = c.org_id;
            let ids: Vec<String> = st
                .group_order
                .iter()
                .filter(|g| st.groups.get(*g).is_some_and(|g| g.org_id == org && !g.all))
                .cloned()
                .collect();
            for gid in ids {
                let Some(g) = st.groups.get_mut(&gid) else {
                    continue;
                };
                let listed = gs.contains(&gid);
                let member = g.users.contains(&id);
                let keep = match op {
                    Op::Replace => listed,
                    Op::Add => member || listed,
                    Op::Remove => member && !listed,
                };
                if keep && !member {
                    g.users.insert(id.clone());
                } else if !keep && member {
                    g.users.remove(&id);
                }
            }
        }
        if !dropped_orgs.is_empty() {
            for g in st.groups.values_mut() {
                if dropped_orgs.contains(&g.org_id) {
                    g.users.remove(&id);
                }
            }
        }
        if revoke {
            st.tokens.retain(|_, t| t.user_id != id);
        }
        Ok(Reply::NoContent)
    }

    fn users_delete(&self, c: &Caller, ident: &str) -> Res {
        let mut st = self.state.write();
        self.require(&st, c, "USER_ADMINISTRATION")?;
        let id = self.user_in_scope(&st, c, ident)?;
        if id == c.user_id {
            return Err(invalid("A user cannot delete their own account."));
        }
        st.remove_user(&id);
        for g in st.groups.values_mut() {
            g.users.remove(&id);
        }
        st.tokens.retain(|_, t| t.user_id != id);
        st.drop_principal_values(&id);
        Ok(Reply::NoContent)
    }

    fn users_deactivate(&self, c: &Caller, b: &Body) -> Res {
        let ident = b.req_str("user_identifier")?;
        let base_url = b.req_str("base_url")?;
        let token = self.token();
        let mut st = self.state.write();
        self.require(&st, c, "USER_ADMINISTRATION")?;
        let id = st
            .user_by_ident(&ident)
            .map(|u| u.id.clone())
            .ok_or_else(|| self.not_found("User", &ident))?;
        if let Some(u) = st.users.get_mut(&id) {
            u.account_status = "INACTIVE".into();
            u.activation_token = Some(token.clone());
            u.modified_ms = now_ms();
        }
        st.tokens.retain(|_, t| t.user_id != id);
        let base = base_url.trim_end_matches('/');
        Ok(Reply::Json(json!({
            "activation_link": format!("{base}/#/activate?user_id={id}&auth_token={token}")
        })))
    }

    fn users_activate(&self, c: &Caller, b: &Body) -> Res {
        let ident = b.req_str("user_identifier")?;
        let auth_token = b.req_str("auth_token")?;
        let password = b.req_str("password")?;
        let mut st = self.state.write();
        self.require(&st, c, "USER_ADMINISTRATION")?;
        let id = st
            .user_by_ident(&ident)
            .map(|u| u.id.clone())
            .ok_or_else(|| self.not_found("User", &ident))?;
        {
            let u = st
                .users
                .get_mut(&id)
                .ok_or_else(|| self.not_found("User", &ident))?;
            if u.activation_token.as_deref() != Some(auth_token.as_str()) {
                return Err(invalid("The activation token is invalid or has expired."));
            }
            u.activation_token = None;
            u.account_status = "ACTIVE".into();
            u.password = Some(password);
            u.modified_ms = now_ms();
        }
        let u = st
            .users
            .get(&id)
            .ok_or_else(|| self.not_found("User", &ident))?;
        Ok(Reply::Json(st.user_json(u, c.org_id)))
    }

    // ---- groups ----

    fn groups_search(&self, c: &Caller, b: &Body) -> Res {
        let ident = b.str("group_identifier")?;
        let display_name = b.str("display_name")?;
        let name_pattern = b.str("name_pattern")?;
        let description = b.str("description")?;
        let gtype = b.enum_str("type", GROUP_TYPES)?;
        let visibility = b.enum_str("visibility", VISIBILITIES)?;
        let user_idents = b.list("user_identifiers")?;
        let sub_idents = b.list("sub_group_identifiers")?;
        let org_idents = b.list("org_identifiers")?;
        let role_idents = b.list("role_identifiers")?;
        let privileges = b.list("privileges")?;
        let include_users = b.bool("include_users")?.unwrap_or(true);
        let include_subs = b.bool("include_sub_groups")?.unwrap_or(true);
        let offset = b.int("record_offset")?.unwrap_or(0);
        let size = b.int("record_size")?.unwrap_or(DEFAULT_RECORD_SIZE);
        let sort = self.sort_options(b)?;
        let st = self.state.read();
        let orgs: Vec<i64> = match &org_idents {
            Some(l) => l
                .iter()
                .filter_map(|o| st.org_by_ident(o).map(|o| o.id))
                .filter(|o| *o == c.org_id)
                .collect(),
            None => vec![c.org_id],
        };
        let users: Option<Vec<&User>> = user_idents
            .as_ref()
            .map(|l| l.iter().filter_map(|u| st.user_by_ident(u)).collect());
        let subs: Option<Vec<&Group>> = sub_idents.as_ref().map(|l| {
            l.iter()
                .filter_map(|g| st.group_by_ident(c.org_id, g))
                .collect()
        });
        let roles: Option<Vec<&Role>> = role_idents.as_ref().map(|l| {
            l.iter()
                .filter_map(|r| st.role_by_ident(c.org_id, r))
                .collect()
        });
        let mut out: Vec<&Group> = Vec::new();
        for id in &st.group_order {
            let Some(g) = st.groups.get(id) else { continue };
            if !orgs.contains(&g.org_id) {
                continue;
            }
            if let Some(i) = &ident {
                if g.id != *i && !g.name.eq_ignore_ascii_case(i) {
                    continue;
                }
            }
            if display_name.as_ref().is_some_and(|d| *d != g.display_name) {
                continue;
            }
            if name_pattern
                .as_ref()
                .is_some_and(|p| !pattern_match(p, &g.name))
            {
                continue;
            }
            if description.as_ref().is_some_and(|d| *d != g.description) {
                continue;
            }
            if gtype.as_ref().is_some_and(|t| *t != g.group_type) {
                continue;
            }
            if visibility.as_ref().is_some_and(|v| *v != g.visibility) {
                continue;
            }
            if let Some(us) = &users {
                if !us.iter().any(|u| st.in_group(g, u)) {
                    continue;
                }
            }
            if let Some(ss) = &subs {
                if !ss.iter().any(|s| g.sub_groups.contains(&s.id)) {
                    continue;
                }
            }
            if let Some(rs) = &roles {
                if !rs.iter().any(|r| g.roles.contains(&r.id)) {
                    continue;
                }
            }
            if let Some(ps) = &privileges {
                if !ps.iter().any(|p| g.privileges.contains(p)) {
                    continue;
                }
            }
            out.push(g);
        }
        if out.is_empty() && self.cfg.search_miss_error {
            if let Some(i) = &ident {
                return Err(self.not_found("Group", i));
            }
        }
        if let Some((field, asc)) = sort {
            match field.as_str() {
                "DISPLAY_NAME" => out.sort_by_cached_key(|g| g.display_name.to_lowercase()),
                "AUTHOR" => out.sort_by(|a, b| a.author_id.cmp(&b.author_id)),
                "CREATED" => out.sort_by_key(|g| g.created_ms),
                "MODIFIED" => out.sort_by_key(|g| g.modified_ms),
                _ => out.sort_by_cached_key(|g| g.name.to_lowercase()),
            }
            if !asc {
                out.reverse();
            }
        }
        let page = paginate(out, offset, size)?;
        Ok(Reply::Json(Value::Array(
            page.iter()
                .map(|g| st.group_json(g, include_users, include_subs))
                .collect(),
        )))
    }

    fn groups_create(&self, c: &Caller, b: &Body) -> Res {
        let name = b.req_str("name")?;
        let display_name = b.req_str("display_name")?;
        let description = b.str("description")?;
        let privileges = b.enum_list("privileges", GROUP_PRIVILEGES)?;
        let sub_idents = b.list("sub_group_identifiers")?;
        let gtype = b.enum_str("type", GROUP_TYPES)?;
        let user_idents = b.list("user_identifiers")?;
        let visibility = b.enum_str("visibility", VISIBILITIES)?;
        let role_idents = b.list("role_identifiers")?;
        let mut st = self.state.write();
        self.require(&st, c, "GROUP_ADMINISTRATION")?;
        // A group lives in the token's Org; names are unique there [B.5].
        if st.group_by_ident(c.org_id, &name).is_some() {
            return Err(self.conflict("Group", &name));
        }
        let users = self.resolve_users(&st, c.org_id, user_idents.as_deref().unwrap_or(&[]))?;
        let subs = self.resolve_groups(&st, c.org_id, sub_idents.as_deref().unwrap_or(&[]))?;
        let roles = self.resolve_roles(&st, c.org_id, role_idents.as_deref().unwrap_or(&[]))?;
        let mut g = self.new_group(&c.user_id, c.org_id, &name, &display_name, false);
        g.description = description.unwrap_or_default();
        g.privileges = privileges.unwrap_or_default();
        g.group_type = gtype.unwrap_or_else(|| "LOCAL_GROUP".into());
        g.visibility = visibility.unwrap_or_else(|| "SHARABLE".into());
        apply_op_set(&mut g.users, Op::Replace, users);
        apply_op(&mut g.sub_groups, Op::Replace, subs);
        apply_op(&mut g.roles, Op::Replace, roles);
        let id = g.id.clone();
        st.insert_group(g);
        let g = st
            .groups
            .get(&id)
            .ok_or_else(|| invalid("Group vanished."))?;
        Ok(Reply::Json(st.group_json(g, true, true)))
    }

    fn groups_update(&self, c: &Caller, ident: &str, b: &Body) -> Res {
        let name = b.str("name")?;
        let display_name = b.str("display_name")?;
        let description = b.str("description")?;
        let privileges = b.enum_list("privileges", GROUP_PRIVILEGES)?;
        let sub_idents = b.list("sub_group_identifiers")?;
        let gtype = b.enum_str("type", GROUP_TYPES)?;
        let user_idents = b.list("user_identifiers")?;
        let visibility = b.enum_str("visibility", VISIBILITIES)?;
        let role_idents = b.list("role_identifiers")?;
        let op = b.op()?;
        let mut st = self.state.write();
        self.require(&st, c, "GROUP_ADMINISTRATION")?;
        let (id, is_all) = st
            .group_by_ident(c.org_id, ident)
            .map(|g| (g.id.clone(), g.all))
            .ok_or_else(|| self.not_found("Group", ident))?;
        if let Some(n) = &name {
            if st.group_by_ident(c.org_id, n).is_some_and(|o| o.id != id) {
                return Err(self.conflict("Group", n));
            }
        }
        if is_all && (user_idents.is_some() || name.is_some()) {
            return Err(invalid(
                "The All group is a system group: its name and members cannot be changed.",
            ));
        }
        let users = match &user_idents {
            Some(l) => Some(self.resolve_users(&st, c.org_id, l)?),
            None => None,
        };
        let subs = match &sub_idents {
            Some(l) => Some(self.resolve_groups(&st, c.org_id, l)?),
            None => None,
        };
        if subs.as_ref().is_some_and(|s| s.contains(&id)) {
            return Err(invalid("A group cannot be its own sub-group."));
        }
        let roles = match &role_idents {
            Some(l) => Some(self.resolve_roles(&st, c.org_id, l)?),
            None => None,
        };
        if let Some(v) = name {
            st.rename_group(&id, v);
        }
        let g = st
            .groups
            .get_mut(&id)
            .ok_or_else(|| self.not_found("Group", ident))?;
        if let Some(v) = display_name {
            g.display_name = v;
        }
        if let Some(v) = description {
            g.description = v;
        }
        if let Some(v) = gtype {
            g.group_type = v;
        }
        if let Some(v) = visibility {
            g.visibility = v;
        }
        // Quirk: without `operation` every list given *replaces* the current one [B.5].
        if let Some(v) = privileges {
            apply_op(&mut g.privileges, op, v);
        }
        if let Some(v) = users {
            apply_op_set(&mut g.users, op, v);
        }
        if let Some(v) = subs {
            apply_op(&mut g.sub_groups, op, v);
        }
        if let Some(v) = roles {
            apply_op(&mut g.roles, op, v);
        }
        g.modified_ms = now_ms();
        Ok(Reply::NoContent)
    }

    fn groups_delete(&self, c: &Caller, ident: &str) -> Res {
        let mut st = self.state.write();
        self.require(&st, c, "GROUP_ADMINISTRATION")?;
        let (id, is_all) = st
            .group_by_ident(c.org_id, ident)
            .map(|g| (g.id.clone(), g.all))
            .ok_or_else(|| self.not_found("Group", ident))?;
        if is_all {
            return Err(invalid(
                "The All group is a system group and cannot be deleted.",
            ));
        }
        st.remove_group(&id);
        st.group_order.retain(|g| *g != id);
        Ok(Reply::NoContent)
    }

    // ---- orgs ----

    fn org_admin(&self, st: &State, c: &Caller) -> Result<(), TsErr> {
        // Cluster admin acting from the Primary Org, or ORG_ADMINISTRATION [B.6].
        let u = st
            .users
            .get(&c.user_id)
            .ok_or_else(|| unauthorized("Not logged in."))?;
        let cluster = c.org_id == 0 && st.is_cluster_admin(u);
        if cluster
            || st
                .privileges(u, c.org_id)
                .iter()
                .any(|p| p == "ORG_ADMINISTRATION")
        {
            Ok(())
        } else {
            Err(forbidden(
                "Managing Orgs needs a cluster administrator in the Primary Org or ORG_ADMINISTRATION.",
            ))
        }
    }

    fn orgs_search(&self, c: &Caller, b: &Body) -> Res {
        let ident = b.str("org_identifier")?;
        let description = b.str("description")?;
        let visibility = b.enum_str("visibility", &["SHOW", "HIDDEN"])?;
        let status = b.enum_str("status", &["ACTIVE", "IN_ACTIVE"])?;
        let user_idents = b.list("user_identifiers")?;
        let st = self.state.read();
        self.org_admin(&st, c)?;
        let users: Option<Vec<&User>> = user_idents
            .as_ref()
            .map(|l| l.iter().filter_map(|u| st.user_by_ident(u)).collect());
        let out: Vec<Value> = st
            .orgs
            .iter()
            .filter(|o| {
                ident
                    .as_ref()
                    .is_none_or(|i| o.id.to_string() == *i || o.name.eq_ignore_ascii_case(i))
            })
            .filter(|o| description.as_ref().is_none_or(|d| *d == o.description))
            .filter(|o| visibility.as_ref().is_none_or(|v| v == o.visibility))
            .filter(|o| status.as_ref().is_none_or(|s| s == o.status))
            .filter(|o| {
                users
                    .as_ref()
                    .is_none_or(|us| us.iter().any(|u| u.orgs.contains(&o.id)))
            })
            .map(org_json)
            .collect();
        Ok(Reply::Json(Value::Array(out)))
    }

    fn orgs_create(&self, c: &Caller, b: &Body) -> Res {
        let name = b.req_str("name")?;
        let description = b.str("description")?.unwrap_or_default();
        let mut st = self.state.write();
        self.org_admin(&st, c)?;
        if st.orgs.iter().any(|o| o.name.eq_ignore_ascii_case(&name)) {
            return Err(self.conflict("Org", &name));
        }
        let id = st.next_org_id;
        st.next_org_id += 1;
        let org = Org {
            id,
            name,
            description,
            status: "ACTIVE",
            visibility: "SHOW",
        };
        let all = self.new_group(&c.user_id, id, "All", "All", true);
        st.insert_group(all);
        let v = org_json(&org);
        st.orgs.push(org);
        Ok(Reply::Json(v))
    }

    fn orgs_delete(&self, c: &Caller, ident: &str) -> Res {
        let mut st = self.state.write();
        self.org_admin(&st, c)?;
        let id = st
            .org_by_ident(ident)
            .map(|o| o.id)
            .ok_or_else(|| self.not_found("Org", ident))?;
        if id == 0 {
            return Err(invalid("The Primary Org cannot be deleted."));
        }
        st.orgs.retain(|o| o.id != id);
        let gone: Vec<String> = st
            .groups
            .values()
            .filter(|g| g.org_id == id)
            .map(|g| g.id.clone())
            .collect();
        for g in &gone {
            st.remove_group(g);
        }
        let gone: HashSet<String> = gone.into_iter().collect();
        st.group_order.retain(|g| !gone.contains(g));
        st.roles.retain(|_, r| r.org_id != id);
        let roles: Vec<String> = st.roles.keys().cloned().collect();
        st.role_order.retain(|r| roles.contains(r));
        for u in st.users.values_mut() {
            u.orgs.retain(|o| *o != id);
        }
        st.tokens.retain(|_, t| t.org_id != id);
        // The Org's variables go, and every value scoped to it.
        st.variables.retain(|_, v| v.org_id != id);
        let vars: HashSet<String> = st.variables.keys().cloned().collect();
        st.variable_order.retain(|v| vars.contains(v));
        for v in st.variables.values_mut() {
            v.values.retain(|x| x.scope.org_id != id);
        }
        Ok(Reply::NoContent)
    }

    // ---- roles ----

    fn roles_search(&self, c: &Caller, b: &Body) -> Res {
        let role_idents = b.list("role_identifiers")?;
        let org_idents = b.list("org_identifiers")?;
        let group_idents = b.list("group_identifiers")?;
        let privileges = b.list("privileges")?;
        let deprecated = b.bool("deprecated")?;
        let external = b.bool("external")?;
        let st = self.state.read();
        self.require(&st, c, "ROLE_ADMINISTRATION")?;
        let orgs: Vec<i64> = match &org_idents {
            Some(l) => l
                .iter()
                .filter_map(|o| st.org_by_ident(o).map(|o| o.id))
                .collect(),
            None => vec![c.org_id],
        };
        let groups: Option<Vec<&Group>> = group_idents.as_ref().map(|l| {
            l.iter()
                .filter_map(|g| st.group_by_ident(c.org_id, g))
                .collect()
        });
        if deprecated == Some(true) || external == Some(true) {
            return Ok(Reply::Json(json!([])));
        }
        let out: Vec<Value> = st
            .role_order
            .iter()
            .filter_map(|id| st.roles.get(id))
            .filter(|r| orgs.contains(&r.org_id))
            .filter(|r| {
                role_idents.as_ref().is_none_or(|l| {
                    l.iter()
                        .any(|i| r.id == *i || r.name.eq_ignore_ascii_case(i))
                })
            })
            .filter(|r| {
                groups
                    .as_ref()
                    .is_none_or(|gs| gs.iter().any(|g| g.roles.contains(&r.id)))
            })
            .filter(|r| {
                privileges
                    .as_ref()
                    .is_none_or(|ps| ps.iter().any(|p| r.privileges.contains(p)))
            })
            .map(|r| st.role_json(r, true))
            .collect();
        Ok(Reply::Json(Value::Array(out)))
    }

    fn roles_create(&self, c: &Caller, b: &Body) -> Res {
        let name = b.req_str("name")?;
        let description = b.str("description")?.unwrap_or_default();
        let privileges = b
            .enum_list("privileges", ROLE_PRIVILEGES)?
            .unwrap_or_default();
        let read_only = b.bool("read_only")?.unwrap_or(false);
        let mut st = self.state.write();
        self.require(&st, c, "ROLE_ADMINISTRATION")?;
        if st.role_by_ident(c.org_id, &name).is_some() {
            return Err(self.conflict("Role", &name));
        }
        let r = Role {
            id: self.ids.uuid(),
            name,
            description,
            privileges,
            org_id: c.org_id,
            read_only,
        };
        let v = st.role_json(&r, false);
        st.role_order.push(r.id.clone());
        st.roles.insert(r.id.clone(), r);
        Ok(Reply::Json(v))
    }

    fn roles_update(&self, c: &Caller, ident: &str, b: &Body) -> Res {
        let name = b.req_str("name")?;
        let description = b.str("description")?;
        let privileges = b.enum_list("privileges", ROLE_PRIVILEGES)?;
        let mut st = self.state.write();
        self.require(&st, c, "ROLE_ADMINISTRATION")?;
        let (id, ro) = st
            .role_by_ident(c.org_id, ident)
            .map(|r| (r.id.clone(), r.read_only))
            .ok_or_else(|| self.not_found("Role", ident))?;
        if ro {
            return Err(invalid(format!("Role {ident} is read-only.")));
        }
        if st
            .role_by_ident(c.org_id, &name)
            .is_some_and(|o| o.id != id)
        {
            return Err(self.conflict("Role", &name));
        }
        let r = st
            .roles
            .get_mut(&id)
            .ok_or_else(|| self.not_found("Role", ident))?;
        r.name = name;
        if let Some(d) = description {
            r.description = d;
        }
        if let Some(p) = privileges {
            r.privileges = p;
        }
        let r = r.clone();
        Ok(Reply::Json(st.role_json(&r, false)))
    }

    fn roles_delete(&self, c: &Caller, ident: &str) -> Res {
        let mut st = self.state.write();
        self.require(&st, c, "ROLE_ADMINISTRATION")?;
        let (id, ro) = st
            .role_by_ident(c.org_id, ident)
            .map(|r| (r.id.clone(), r.read_only))
            .ok_or_else(|| self.not_found("Role", ident))?;
        if ro {
            return Err(invalid(format!("Role {ident} is read-only.")));
        }
        st.roles.remove(&id);
        st.role_order.retain(|r| *r != id);
        for g in st.groups.values_mut() {
            g.roles.retain(|r| *r != id);
        }
        Ok(Reply::NoContent)
    }

    // ---- template variables ----

    fn cluster_caller(&self, st: &State, c: &Caller) -> bool {
        c.org_id == 0
            && st
                .users
                .get(&c.user_id)
                .is_some_and(|me| st.is_cluster_admin(me))
    }

    /// Formula variables need CAN_MANAGE_VARIABLES (or ADMINISTRATION), the other kinds
    /// ADMINISTRATION [TS-SPEC].
    fn require_var(&self, st: &State, c: &Caller, vtype: &str) -> Result<(), TsErr> {
        let p = if vtype == "FORMULA_VARIABLE" {
            "CAN_MANAGE_VARIABLES"
        } else {
            "ADMINISTRATION"
        };
        self.require(st, c, p)
    }

    /// A variable an Org sees: its own, the Primary Org's (shared with every Org), or any for
    /// a cluster admin.
    fn var_visible(&self, st: &State, c: &Caller, v: &Variable) -> bool {
        v.org_id == c.org_id || v.org_id == 0 || self.cluster_caller(st, c)
    }

    fn variable_in_scope(&self, st: &State, c: &Caller, ident: &str) -> Result<String, TsErr> {
        st.variable_by_ident(ident)
            .filter(|v| self.var_visible(st, c, v))
            .map(|v| v.id.clone())
            .ok_or_else(|| self.not_found("Variable", ident))
    }

    /// Values the caller reaches: those of its Org, or all for a cluster admin.
    fn var_reach(&self, st: &State, c: &Caller, org: i64) -> bool {
        org == c.org_id || self.cluster_caller(st, c)
    }

    /// The scope's Org (the token's when left out), principal (a user by GUID or name, or a
    /// group of that Org; without `principal_type` a user first, then a group) and model.
    fn resolve_var_scope(&self, st: &State, c: &Caller, s: &ScopeIn) -> Result<VarScope, TsErr> {
        let org_id = match &s.org {
            Some(o) => st
                .var_org(o)
                .map(|o| o.id)
                .ok_or_else(|| invalid(format!("Org {o} does not exist.")))?,
            None => c.org_id,
        };
        if !self.var_reach(st, c, org_id) {
            return Err(invalid(
                "The specified org_identifier does not refer to a valid or accessible org",
            ));
        }
        let principal = match (&s.ptype, &s.pident) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "principal_identifier is required with principal_type.",
                ))
            }
            (kind, Some(p)) => {
                let user = || st.user_by_ident(p).map(|u| ("USER", u.id.clone()));
                let group = || {
                    st.group_by_ident(org_id, p)
                        .map(|g| ("USER_GROUP", g.id.clone()))
                };
                let found = match kind.as_deref() {
                    Some("USER") => user(),
                    Some(_) => group(),
                    None => user().or_else(group),
                };
                Some(found.ok_or_else(|| {
                    invalid(format!(
                        "Principal {p} does not exist or is not accessible."
                    ))
                })?)
            }
        };
        Ok(VarScope {
            org_id,
            principal,
            model: s.model.clone(),
        })
    }

    fn check_var_values(&self, v: &Variable, op: VarOp, values: &[String]) -> Result<(), TsErr> {
        if matches!(op, VarOp::Add | VarOp::Replace) && !v.is_list() && values.len() > 1 {
            return Err(invalid(format!(
                "Variable {} takes a single value.",
                v.name
            )));
        }
        if let Some(dt) = &v.data_type {
            if let Some(bad) = values.iter().find(|x| !value_fits(dt, x)) {
                return Err(invalid(format!(
                    "{bad} is not a valid {dt} value for variable {}.",
                    v.name
                )));
            }
        }
        Ok(())
    }

    /// Applies checked writes; RESET drops every value of the variable the caller reaches.
    fn apply_var_writes(&self, st: &mut State, c: &Caller, writes: Vec<VarWrite>) {
        let cluster = self.cluster_caller(st, c);
        for w in writes {
            let Some(v) = st.variables.get_mut(&w.var_id) else {
                continue;
            };
            if w.op == VarOp::Reset {
                v.values.retain(|x| !cluster && x.scope.org_id != c.org_id);
            } else {
                apply_var(v, w);
            }
        }
    }

    fn reset_write(var_id: String) -> VarWrite {
        VarWrite {
            var_id,
            op: VarOp::Reset,
            scope: VarScope {
                org_id: 0,
                principal: None,
                model: None,
            },
            values: Vec::new(),
            priority: None,
        }
    }

    fn variables_create(&self, c: &Caller, b: &Body) -> Res {
        let vtype = b
            .enum_str("type", VARIABLE_TYPES)?
            .ok_or_else(|| invalid("type is required."))?;
        let name = b.req_str("name")?;
        let sensitive = b.bool("is_sensitive")?.unwrap_or(false);
        let data_type = b.enum_str("data_type", VARIABLE_DATA_TYPES)?;
        if !valid_variable_name(&name) {
            return Err(invalid(format!(
                "Variable name {name} must start with a letter or an underscore and hold only letters, digits and underscores."
            )));
        }
        let mut st = self.state.write();
        self.require_var(&st, c, &vtype)?;
        if st.variable_by_ident(&name).is_some() {
            return Err(self.conflict("Variable", &name));
        }
        // `data_type` is for formula variables only ("leave empty for others"): ignored there;
        // a formula variable without one takes VARCHAR.
        let data_type =
            (vtype == "FORMULA_VARIABLE").then(|| data_type.unwrap_or_else(|| "VARCHAR".into()));
        let v = Variable {
            id: self.ids.uuid(),
            name,
            vtype,
            data_type,
            sensitive,
            org_id: c.org_id,
            values: VarValues::default(),
        };
        let out = st.variable_json(&v, Some(Vec::new()));
        st.variable_order.push(v.id.clone());
        st.variables.insert(v.id.clone(), v);
        Ok(Reply::Json(out))
    }

    fn variables_search(&self, c: &Caller, b: &Body) -> Res {
        struct Detail {
            ident: Option<String>,
            vtype: Option<String>,
            pattern: Option<String>,
        }
        let details = b
            .objects("variable_details")?
            .map(|ds| {
                ds.iter()
                    .map(|d| {
                        Ok(Detail {
                            ident: d.str("identifier")?.filter(|s| !s.is_empty()),
                            vtype: d.enum_str("type", VARIABLE_SEARCH_TYPES)?,
                            pattern: d.str("name_pattern")?.filter(|s| !s.is_empty()),
                        })
                    })
                    .collect::<Result<Vec<_>, TsErr>>()
            })
            .transpose()?
            .unwrap_or_default();
        let scopes = b
            .objects("value_scope")?
            .map(|ss| ss.iter().map(ScopeIn::parse).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        let offset = b.int("record_offset")?.unwrap_or(0);
        let size = b.int("record_size")?.unwrap_or(DEFAULT_RECORD_SIZE);
        let with_values = b
            .enum_str("response_content", &["METADATA", "METADATA_AND_VALUES"])?
            .as_deref()
            == Some("METADATA_AND_VALUES");
        let st = self.state.read();
        self.require(&st, c, "CAN_MANAGE_VARIABLES")?;
        // CAN_MANAGE_VARIABLES without ADMINISTRATION manages formula variables only.
        let admin = self.require(&st, c, "ADMINISTRATION").is_ok();
        let cluster = self.cluster_caller(&st, c);
        let mut out: Vec<&Variable> = Vec::new();
        for id in &st.variable_order {
            let Some(v) = st.variables.get(id) else {
                continue;
            };
            if !self.var_visible(&st, c, v) || (!admin && v.vtype != "FORMULA_VARIABLE") {
                continue;
            }
            // Items are OR-ed, the fields of one item AND-ed.
            let hit = details.is_empty()
                || details.iter().any(|d| {
                    d.ident
                        .as_ref()
                        .is_none_or(|i| v.id == *i || v.name.eq_ignore_ascii_case(i))
                        && d.vtype.as_ref().is_none_or(|t| *t == v.vtype)
                        && d.pattern.as_ref().is_none_or(|p| pattern_match(p, &v.name))
                });
            if hit {
                out.push(v);
            }
        }
        if out.is_empty() && self.cfg.search_miss_error {
            if let Some(i) = details.iter().find_map(|d| d.ident.as_ref()) {
                return Err(self.not_found("Variable", i));
            }
        }
        let page = paginate(out, offset, size)?;
        let items: Vec<Value> = page
            .iter()
            .map(|v| {
                let values = with_values.then(|| {
                    v.values
                        .iter()
                        .filter(|x| cluster || x.scope.org_id == c.org_id)
                        .filter(|x| {
                            scopes.is_empty() || scopes.iter().any(|s| scope_matches(&st, x, s))
                        })
                        .collect()
                });
                st.variable_json(v, values)
            })
            .collect();
        Ok(Reply::Json(Value::Array(items)))
    }

    /// `template/variables/{identifier}/update-values`.
    fn variables_put_values(&self, c: &Caller, ident: &str, b: &Body) -> Res {
        // The spec gives `operation` no default: REPLACE, as on the other updates [B.4].
        let op = b.var_op("operation")?.unwrap_or(VarOp::Replace);
        let assigns = b
            .objects("variable_assignment")?
            .ok_or_else(|| invalid("variable_assignment is required."))?;
        let parsed = assigns
            .iter()
            .map(|a| {
                let values = a
                    .list("assigned_values")?
                    .ok_or_else(|| invalid("assigned_values is required."))?;
                Ok((values, ScopeIn::parse(a)?))
            })
            .collect::<Result<Vec<_>, TsErr>>()?;
        let mut st = self.state.write();
        self.require(&st, c, "CAN_MANAGE_VARIABLES")?;
        let id = self.variable_in_scope(&st, c, ident)?;
        let mut writes = Vec::new();
        {
            let v = st
                .variables
                .get(&id)
                .ok_or_else(|| self.not_found("Variable", ident))?;
            self.require_var(&st, c, &v.vtype)?;
            if op == VarOp::Reset {
                writes.push(Self::reset_write(id.clone()));
            } else {
                for (values, s) in parsed {
                    let scope = self.resolve_var_scope(&st, c, &s)?;
                    self.check_var_values(v, op, &values)?;
                    writes.push(VarWrite {
                        var_id: id.clone(),
                        op,
                        scope,
                        values,
                        priority: s.priority,
                    });
                }
            }
        }
        self.apply_var_writes(&mut st, c, writes);
        Ok(Reply::NoContent)
    }

    /// The deprecated `template/variables/update-values`: every assignment in every scope.
    fn variables_update_values(&self, c: &Caller, b: &Body) -> Res {
        let assigns = b
            .objects("variable_assignment")?
            .ok_or_else(|| invalid("variable_assignment is required."))?;
        let parsed = assigns
            .iter()
            .map(|a| {
                let ident = a.req_str("variable_identifier")?;
                let values = a
                    .list("variable_values")?
                    .ok_or_else(|| invalid("variable_values is required."))?;
                let op = a
                    .var_op("operation")?
                    .ok_or_else(|| invalid("operation is required."))?;
                Ok((ident, values, op))
            })
            .collect::<Result<Vec<_>, TsErr>>()?;
        let mut scopes = b
            .objects("variable_value_scope")?
            .ok_or_else(|| invalid("variable_value_scope is required."))?
            .iter()
            .map(ScopeIn::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            scopes.push(ScopeIn::default());
        }
        let mut st = self.state.write();
        self.require(&st, c, "CAN_MANAGE_VARIABLES")?;
        let resolved = scopes
            .iter()
            .map(|s| self.resolve_var_scope(&st, c, s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut writes = Vec::new();
        for (ident, values, op) in parsed {
            let id = self.variable_in_scope(&st, c, &ident)?;
            let v = st
                .variables
                .get(&id)
                .ok_or_else(|| self.not_found("Variable", &ident))?;
            self.require_var(&st, c, &v.vtype)?;
            if op == VarOp::Reset {
                writes.push(Self::reset_write(id));
                continue;
            }
            self.check_var_values(v, op, &values)?;
            for (scope, s) in resolved.iter().zip(&scopes) {
                writes.push(VarWrite {
                    var_id: id.clone(),
                    op,
                    scope: scope.clone(),
                    values: values.clone(),
                    priority: s.priority,
                });
            }
        }
        self.apply_var_writes(&mut st, c, writes);
        Ok(Reply::NoContent)
    }

    /// `template/variables/{identifier}/update`: a new name.
    fn variables_update(&self, c: &Caller, ident: &str, b: &Body) -> Res {
        let name = b.req_str("name")?;
        if !valid_variable_name(&name) {
            return Err(invalid(format!(
                "Variable name {name} must start with a letter or an underscore and hold only letters, digits and underscores."
            )));
        }
        let mut st = self.state.write();
        self.require(&st, c, "CAN_MANAGE_VARIABLES")?;
        let id = self.variable_in_scope(&st, c, ident)?;
        let vtype = st
            .variables
            .get(&id)
            .map(|v| v.vtype.clone())
            .unwrap_or_default();
        self.require_var(&st, c, &vtype)?;
        if st.variable_by_ident(&name).is_some_and(|o| o.id != id) {
            return Err(self.conflict("Variable", &name));
        }
        if let Some(v) = st.variables.get_mut(&id) {
            v.name = name;
        }
        Ok(Reply::NoContent)
    }

    /// `template/variables/{identifier}/delete` (deprecated) and `template/variables/delete`:
    /// all or nothing.
    fn variables_delete(&self, c: &Caller, idents: &[String]) -> Res {
        let mut st = self.state.write();
        self.require(&st, c, "CAN_MANAGE_VARIABLES")?;
        let mut ids = HashSet::new();
        for i in idents {
            let id = self.variable_in_scope(&st, c, i)?;
            let vtype = st
                .variables
                .get(&id)
                .map(|v| v.vtype.clone())
                .unwrap_or_default();
            self.require_var(&st, c, &vtype)?;
            ids.insert(id);
        }
        for id in &ids {
            st.variables.remove(id);
        }
        st.variable_order.retain(|v| !ids.contains(v));
        Ok(Reply::NoContent)
    }

    fn variables_delete_many(&self, c: &Caller, b: &Body) -> Res {
        let idents = b
            .list("identifiers")?
            .ok_or_else(|| invalid("identifiers is required."))?;
        self.variables_delete(c, &idents)
    }

    fn finish(&self, r: Res) -> HttpResponse {
        match r {
            Ok(Reply::Json(v)) => HttpResponse::Ok()
                .content_type("application/json")
                .body(v.to_string()),
            Ok(Reply::NoContent) => HttpResponse::NoContent().finish(),
            Err(e) => self.error_response(&e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

type Data = web::Data<ThoughtSpot>;

/// An endpoint that needs no token.
async fn h_token_full(sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let r = sim.prelude(&req, &body).and_then(|b| sim.token_full(&b));
    sim.finish(r)
}

macro_rules! authed {
    ($name:ident, |$sim:ident, $c:ident, $b:ident| $call:expr) => {
        async fn $name($sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
            let r = $sim.prelude(&req, &body).and_then(|$b| {
                let $c = $sim.caller(&req)?;
                $call
            });
            $sim.finish(r)
        }
    };
    ($name:ident, |$sim:ident, $c:ident, $b:ident, $id:ident| $call:expr) => {
        async fn $name($sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
            let $id = req.match_info().get("id").unwrap_or("").to_string();
            let r = $sim.prelude(&req, &body).and_then(|$b| {
                let $c = $sim.caller(&req)?;
                $call
            });
            $sim.finish(r)
        }
    };
}

authed!(h_token_validate, |s, c, b| s.token_validate(&c, &b));
authed!(h_token_revoke, |s, c, b| s.token_revoke(&c, &b));
authed!(h_session_user, |s, c, _b| s.session_user(&c));
authed!(h_users_search, |s, c, b| s.users_search(&c, &b));
authed!(h_users_create, |s, c, b| s.users_create(&c, &b));
authed!(h_users_update, |s, c, b, id| s.users_update(&c, &id, &b));
authed!(h_users_delete, |s, c, _b, id| s.users_delete(&c, &id));
authed!(h_users_deactivate, |s, c, b| s.users_deactivate(&c, &b));
authed!(h_users_activate, |s, c, b| s.users_activate(&c, &b));
authed!(h_groups_search, |s, c, b| s.groups_search(&c, &b));
authed!(h_groups_create, |s, c, b| s.groups_create(&c, &b));
authed!(h_groups_update, |s, c, b, id| s.groups_update(&c, &id, &b));
authed!(h_groups_delete, |s, c, _b, id| s.groups_delete(&c, &id));
authed!(h_orgs_search, |s, c, b| s.orgs_search(&c, &b));
authed!(h_orgs_create, |s, c, b| s.orgs_create(&c, &b));
authed!(h_orgs_delete, |s, c, _b, id| s.orgs_delete(&c, &id));
authed!(h_roles_search, |s, c, b| s.roles_search(&c, &b));
authed!(h_roles_create, |s, c, b| s.roles_create(&c, &b));
authed!(h_roles_update, |s, c, b, id| s.roles_update(&c, &id, &b));
authed!(h_roles_delete, |s, c, _b, id| s.roles_delete(&c, &id));
authed!(h_vars_create, |s, c, b| s.variables_create(&c, &b));
authed!(h_vars_search, |s, c, b| s.variables_search(&c, &b));
authed!(h_vars_update_values, |s, c, b| s
    .variables_update_values(&c, &b));
authed!(h_vars_delete_many, |s, c, b| s
    .variables_delete_many(&c, &b));
authed!(h_vars_put_values, |s, c, b, id| s
    .variables_put_values(&c, &id, &b));
authed!(h_vars_update, |s, c, b, id| s.variables_update(&c, &id, &b));
authed!(h_vars_delete, |s, c, _b, id| s.variables_delete(&c, &[id]));

/// `POST /__sim/last_login`: records a sign-in of the user whose `name` or `email` is `login`
/// (any case) at `at` → 204, 404 when none is.
///
/// ThoughtSpot's v2 user object has no last sign-in at all (the spec's `User` carries only
/// `first_login_time_in_millis` and `is_first_login`), so the only trace a sign-in leaves is the
/// first one: the hook sets `first_login_time_in_millis` when it is unset, and `at: null` clears
/// it (the user has never signed in). A bridge therefore cannot tell when a ThoughtSpot user last
/// signed in; this hook exists so every simulator answers the same control call.
async fn h_sim_last_login(sim: Data, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let hook = match super::sisense::read_last_login_hook(&req, &body) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut st = sim.state.write();
    let found = st.users.values_mut().find(|u| {
        u.name.eq_ignore_ascii_case(&hook.login) || u.email.eq_ignore_ascii_case(&hook.login)
    });
    match found {
        Some(u) => {
            match hook.at {
                Some(t) => {
                    u.first_login_ms.get_or_insert(t.timestamp_millis());
                }
                None => u.first_login_ms = None,
            }
            HttpResponse::NoContent().finish()
        }
        None => HttpResponse::NotFound().finish(),
    }
}

async fn h_405(sim: Data, req: HttpRequest) -> HttpResponse {
    sim.error_response(&ts_err(
        405,
        10002,
        format!("Method {} is not allowed for this resource.", req.method()),
    ))
}

impl VendorSim for Sim {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        let data: Data = web::Data::from(self.0.clone());
        cfg.app_data(data);
        cfg.route("/__sim/last_login", web::post().to(h_sim_last_login));
        let post = |cfg: &mut web::ServiceConfig, path: &str, route: actix_web::Route| {
            cfg.service(
                web::resource(format!("/api/rest/2.0/{path}"))
                    .route(route)
                    .default_service(web::to(h_405)),
            );
        };
        post(cfg, "auth/token/full", web::post().to(h_token_full));
        post(cfg, "auth/token/validate", web::post().to(h_token_validate));
        post(cfg, "auth/token/revoke", web::post().to(h_token_revoke));
        post(cfg, "auth/session/user", web::get().to(h_session_user));
        post(cfg, "users/search", web::post().to(h_users_search));
        post(cfg, "users/create", web::post().to(h_users_create));
        post(cfg, "users/deactivate", web::post().to(h_users_deactivate));
        post(cfg, "users/activate", web::post().to(h_users_activate));
        post(cfg, "users/{id}/update", web::post().to(h_users_update));
        post(cfg, "users/{id}/delete", web::post().to(h_users_delete));
        post(cfg, "groups/search", web::post().to(h_groups_search));
        post(cfg, "groups/create", web::post().to(h_groups_create));
        post(cfg, "groups/{id}/update", web::post().to(h_groups_update));
        post(cfg, "groups/{id}/delete", web::post().to(h_groups_delete));
        post(cfg, "orgs/search", web::post().to(h_orgs_search));
        post(cfg, "orgs/create", web::post().to(h_orgs_create));
        post(cfg, "orgs/{id}/delete", web::post().to(h_orgs_delete));
        post(cfg, "roles/search", web::post().to(h_roles_search));
        post(cfg, "roles/create", web::post().to(h_roles_create));
        post(cfg, "roles/{id}/update", web::post().to(h_roles_update));
        post(cfg, "roles/{id}/delete", web::post().to(h_roles_delete));
        let var = |p: &str| format!("template/variables/{p}");
        post(cfg, &var("create"), web::post().to(h_vars_create));
        post(cfg, &var("search"), web::post().to(h_vars_search));
        post(
            cfg,
            &var("update-values"),
            web::post().to(h_vars_update_values),
        );
        post(cfg, &var("delete"), web::post().to(h_vars_delete_many));
        post(
            cfg,
            &var("{id}/update-values"),
            web::post().to(h_vars_put_values),
        );
        post(cfg, &var("{id}/update"), web::post().to(h_vars_update));
        post(cfg, &var("{id}/delete"), web::post().to(h_vars_delete));
    }

    fn throttled(&self, retry_after_s: Option<u64>) -> HttpResponse {
        self.0
            .error_response_with(&ts_err(429, 429, "Too many requests."), retry_after_s)
    }

    fn server_error(&self) -> HttpResponse {
        self.0.error_response(&ts_err(
            500,
            10000,
            "Internal error occurred while processing the request.",
        ))
    }

    fn not_found(&self) -> HttpResponse {
        self.0.error_response(&ts_err(
            404,
            10002,
            "The requested resource does not exist.",
        ))
    }
}

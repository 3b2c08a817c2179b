//! Sisense (Fusion / "Sisense for Linux") REST simulator: v1 (`/api/v1/...`) and the legacy v0.9
//! paths (`/api/...`) the bridge needs.
//!
//! Sources: shared/reference/vendors-sisense-metabase.md part B, the real Swagger 2.0 specs in
//! shared/reference/vendor-specs/sisense/ (2021), and the 2026 API guide in use-cases/. Where the
//! reference marks a point UNVERIFIED the choice here is a [`SimOptions`] switch or, for error
//! codes no source gives, a constant named `*_UNVERIFIED`.
//!
//! Wire facts reproduced:
//! - login is form-encoded (`username`, `password`) → `{success, message, access_token, profile,
//!   userId}`; then `Authorization: Bearer`; a bad/expired token → 401 in the error envelope;
//! - every error is `{"error":{code,message,status,httpMessage}}` (404s add resourceType/Name);
//! - ids are 24-hex ObjectIds, per instance; lists are bare arrays paged by skip/limit, no total;
//! - user filters are exact matches; PATCH is partial and `groups` replaces the whole list;
//! - duplicate userName or email → 400 2004; second super user → 400 2006; deleting the super
//!   user → 400 2011; unknown user → 404 2001; roles are read-only (`GET /api/roles`).

// Validation helpers return the vendor's finished error response as their `Err`; it is built only
// on the error path, so its size costs nothing on the hot path.
#![allow(clippy::result_large_err)]

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use parking_lot::RwLock;
use serde_json::{json, Map, Value};

mod scim;

pub use scim::DEFAULT_SCIM_TOKEN;

use super::ids::IdGen;
use super::session::{SessionError, Sessions};
use super::{SimOptions, VendorSim};

pub const DEFAULT_USER: &str = "admin@sisense.local";
pub const DEFAULT_PASSWORD: &str = "admin";

/// Built-in roles: API `name`, UI name (reference B.3). `super` is the single Sys. Admin.
const BUILTIN_ROLES: [(&str, &str); 6] = [
    ("super", "Sys. Admin"),
    ("admin", "Admin"),
    ("dataAdmin", "Data Admin"),
    ("dataDesigner", "Data Designer"),
    ("contributor", "Designer"),
    ("consumer", "Viewer"),
];

// Error codes from the 2021 v1 spec.
const INVALID_EXPAND: i64 = 202;
const INVALID_REQUEST_DATA: i64 = 300;
const INVALID_OBJECT_ID: i64 = 601;
const USER_NOT_FOUND: i64 = 2001;
const USERS_NOT_ARRAY: i64 = 2002;
const MANDATORY_MISSING: i64 = 2003;
const USER_EXISTS: i64 = 2004;
const USERS_DUPLICATED: i64 = 2005;
const MULTIPLE_SUPER: i64 = 2006;
const MANDATORY_EMPTY: i64 = 2009;
const SUPER_UNDELETABLE: i64 = 2011;
// Captured from a real instance (login with an unknown, non-email username).
const INVALID_DOMAIN: i64 = 5001;
// No source gives these codes; the envelope and status are documented, the numbers are ours.
const BAD_CREDENTIALS_UNVERIFIED: i64 = 5004;
const TOKEN_MISSING_UNVERIFIED: i64 = 5005;
const TOKEN_EXPIRED_UNVERIFIED: i64 = 5006;
const USER_INACTIVE_UNVERIFIED: i64 = 5007;
const ROLE_NOT_FOUND_UNVERIFIED: i64 = 2010;
const GROUP_NOT_FOUND_UNVERIFIED: i64 = 1003;
const GROUP_EXISTS_UNVERIFIED: i64 = 1002;
const FORBIDDEN_UNVERIFIED: i64 = 403;
const TOO_MANY_REQUESTS_UNVERIFIED: i64 = 429;
const INTERNAL_ERROR: i64 = 500;

#[derive(Clone)]
struct User {
    id: String,
    email: String,
    user_name: String,
    first_name: Option<String>,
    last_name: Option<String>,
    role_id: String,
    active: bool,
    groups: Vec<String>,
    preferences: Map<String, Value>,
    ui_settings: Value,
    password: Option<String>,
    created: String,
    last_updated: String,
    last_login: Option<String>,
    /// SCIM `externalId` (native SCIM endpoint only): the REST API has no such field, so it is
    /// kept here and never rendered over REST.
    external_id: Option<String>,
}

#[derive(Clone)]
struct Group {
    id: String,
    name: String,
    role_id: Option<String>,
    mail: Option<String>,
    created: String,
    last_updated: String,
}

struct Role {
    id: String,
    name: String,
    display_name: String,
}

#[derive(Default)]
struct State {
    users: HashMap<String, User>,
    user_order: Vec<String>,
    groups: HashMap<String, Group>,
    group_order: Vec<String>,
    roles: Vec<Role>,
}

impl State {
    fn role(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }
    fn role_by_id_or_name(&self, key: &str) -> Option<&Role> {
        self.roles
            .iter()
            .find(|r| r.id == key || r.name.eq_ignore_ascii_case(key))
    }
    fn super_role_id(&self) -> Option<&str> {
        self.roles
            .iter()
            .find(|r| r.name == "super")
            .map(|r| r.id.as_str())
    }
    fn users_in_order(&self) -> impl Iterator<Item = &User> {
        self.user_order.iter().filter_map(|id| self.users.get(id))
    }
    fn groups_in_order(&self) -> impl Iterator<Item = &Group> {
        self.group_order.iter().filter_map(|id| self.groups.get(id))
    }
    /// v0.9 paths take an id or a name.
    fn group_by_id_or_name(&self, key: &str) -> Option<&Group> {
        self.groups
            .get(key)
            .or_else(|| self.groups_in_order().find(|g| g.name == key))
    }
    /// v0.9 paths take an id or a username.
    fn user_by_id_or_name(&self, key: &str) -> Option<&User> {
        self.users
            .get(key)
            .or_else(|| self.users_in_order().find(|u| u.user_name == key))
    }
    fn remove_user(&mut self, id: &str) -> Option<User> {
        let u = self.users.remove(id)?;
        self.user_order.retain(|x| x != id);
        Some(u)
    }
}

pub struct Sisense {
    legacy_2021: bool,
    default_limit: Option<usize>,
    ignore_case: bool,
    duplicate_group_status: StatusCode,
    /// Native SCIM endpoint (`/api/scim/v2`, see [`scim`]): on unless `sisense.scim=false`.
    scim_enabled: bool,
    /// The SCIM bearer token (`sisense.scim_token`, default [`scim::DEFAULT_SCIM_TOKEN`]).
    scim_token: String,
    /// `sisense.scim_group_patch_returns=resource`: SCIM group PATCH answers 200 with the group
    /// instead of 204 (UNVERIFIED either way).
    scim_group_patch_resource: bool,
    ids: IdGen,
    sessions: Sessions<String>,
    state: RwLock<State>,
}

struct SisenseSim {
    sim: web::Data<Sisense>,
    /// `--sim-switch sisense.retry_after=true`: send `Retry-After` on the 429 (default off: the
    /// 2026 guide says Sisense sends none).
    retry_after: bool,
}

/// The Sisense simulator for the framework.
pub fn new(opts: &SimOptions) -> Arc<dyn VendorSim> {
    Arc::new(SisenseSim {
        sim: web::Data::new(Sisense::new(opts)),
        retry_after: opts.switch("sisense.retry_after") == Some("true"),
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn is_object_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Loose form of the spec's email pattern: `local@domain` with no spaces or brackets.
fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let bad = |c: char| c.is_whitespace() || "<>()[]\\,;:\"@".contains(c);
    !local.is_empty()
        && !domain.is_empty()
        && !local
            .chars()
            .any(|c| c.is_whitespace() || "<>()[]\\,;:".contains(c))
        && !domain.chars().any(bad)
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

impl Sisense {
    fn new(opts: &SimOptions) -> Self {
        let ids = IdGen::new(opts.derived_seed(0x5153));
        let mut st = State::default();
        let mut roles: Vec<(String, String)> = BUILTIN_ROLES
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect();
        if let Some(basic) = &opts.sisense_basic_role_name {
            roles.push((basic.clone(), "Basic User".to_string()));
        }
        for (name, display_name) in roles {
            st.roles.push(Role {
                id: ids.hex(24),
                name,
                display_name,
            });
        }
        let ts = now();
        let mut group_ids = Vec::new();
        for name in ["Everyone", "Admins"] {
            let g = Group {
                id: ids.hex(24),
                name: name.to_string(),
                role_id: None,
                mail: None,
                created: ts.clone(),
                last_updated: ts.clone(),
            };
            group_ids.push(g.id.clone());
            st.group_order.push(g.id.clone());
            st.groups.insert(g.id.clone(), g);
        }
        let admin_email = opts
            .admin_user
            .clone()
            .unwrap_or_else(|| DEFAULT_USER.to_string());
        let admin = User {
            id: ids.hex(24),
            email: admin_email.clone(),
            user_name: admin_email,
            first_name: Some("Sys".to_string()),
            last_name: Some("Admin".to_string()),
            role_id: st.super_role_id().unwrap_or_default().to_string(),
            active: true,
            groups: vec![group_ids[1].clone()],
            preferences: default_preferences(),
            ui_settings: json!({}),
            password: Some(
                opts.admin_password
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PASSWORD.to_string()),
            ),
            created: ts.clone(),
            last_updated: ts,
            last_login: None,
            external_id: None,
        };
        st.user_order.push(admin.id.clone());
        st.users.insert(admin.id.clone(), admin);
        Sisense {
            legacy_2021: opts.legacy_2021,
            default_limit: opts.sisense_default_limit.filter(|l| *l > 0),
            ignore_case: opts.sisense_filters_ignore_case,
            duplicate_group_status: StatusCode::from_u16(opts.sisense_duplicate_group_status)
                .unwrap_or(StatusCode::BAD_REQUEST),
            scim_enabled: opts.switch("sisense.scim") != Some("false"),
            scim_token: opts
                .switch("sisense.scim_token")
                .filter(|t| !t.is_empty())
                .unwrap_or(scim::DEFAULT_SCIM_TOKEN)
                .to_string(),
            scim_group_patch_resource: opts.switch("sisense.scim_group_patch_returns")
                == Some("resource"),
            ids,
            // Historically Sisense tokens never expired; `--token-ttl-s` models L2024.1+ expiry.
            sessions: Sessions::new(opts.token_ttl_s.map(Duration::from_secs)),
            state: RwLock::new(st),
        }
    }

    fn text_eq(&self, a: &str, b: &str) -> bool {
        if self.ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// The caller's user id, or the vendor's 401.
    fn authenticate(&self, req: &HttpRequest) -> Result<String, HttpResponse> {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                TOKEN_MISSING_UNVERIFIED,
                "Unauthorized: authentication token is missing or invalid.",
            ));
        };
        match self.sessions.check(token) {
            Ok(uid) if self.state.read().users.contains_key(&uid) => Ok(uid),
            Ok(_) | Err(SessionError::Unknown) => Err(error(
                StatusCode::UNAUTHORIZED,
                TOKEN_MISSING_UNVERIFIED,
                "Unauthorized: authentication token is missing or invalid.",
            )),
            Err(SessionError::Expired) => Err(error(
                StatusCode::UNAUTHORIZED,
                TOKEN_EXPIRED_UNVERIFIED,
                "Unauthorized: token expired.",
            )),
        }
    }

    /// User management is for Sys. Admins and Admins (x-permission-path manage/users/*).
    fn authenticate_admin(&self, req: &HttpRequest) -> Result<String, HttpResponse> {
        self.authenticate_role(req, &["super", "admin"])
    }

    /// The caller, if their role is one of `roles`; else the vendor's 403.
    fn authenticate_role(&self, req: &HttpRequest, roles: &[&str]) -> Result<String, HttpResponse> {
        let uid = self.authenticate(req)?;
        let st = self.state.read();
        let allowed = st
            .users
            .get(&uid)
            .and_then(|u| st.role(&u.role_id))
            .is_some_and(|r| roles.contains(&r.name.as_str()));
        if allowed {
            Ok(uid)
        } else {
            Err(error(
                StatusCode::FORBIDDEN,
                FORBIDDEN_UNVERIFIED,
                "Forbidden",
            ))
        }
    }
}

fn default_preferences() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("localeId".into(), json!("en-US"));
    m.insert("language".into(), json!("en-US"));
    m
}

// ---------------------------------------------------------------------------------------------
// Wire rendering
// ---------------------------------------------------------------------------------------------

/// The error envelope shared by every v1 error definition in the spec.
fn error(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {
        "code": code,
        "message": message,
        "status": status.as_u16(),
        "httpMessage": status.canonical_reason().unwrap_or(""),
    }}))
}

/// `notFoundApiError`: the envelope plus resourceType/resourceName.
fn not_found(code: i64, message: &str, resource_type: &str, name: &str) -> HttpResponse {
    let status = StatusCode::NOT_FOUND;
    HttpResponse::NotFound().json(json!({"error": {
        "code": code,
        "message": message,
        "status": 404,
        "httpMessage": status.canonical_reason().unwrap_or(""),
        "resourceType": resource_type,
        "resourceName": name,
    }}))
}

fn invalid(message: &str) -> HttpResponse {
    error(
        StatusCode::BAD_REQUEST,
        INVALID_REQUEST_DATA,
        &format!("Invalid request data: {message}"),
    )
}

fn user_not_found(id: &str) -> HttpResponse {
    not_found(USER_NOT_FOUND, "User not found.", "user", id)
}

fn group_not_found(id: &str) -> HttpResponse {
    not_found(GROUP_NOT_FOUND_UNVERIFIED, "Group not found.", "group", id)
}

fn role_not_found(id: &str) -> HttpResponse {
    not_found(ROLE_NOT_FOUND_UNVERIFIED, "Role not found.", "role", id)
}

fn user_json(u: &User) -> Value {
    let mut m = Map::new();
    m.insert("_id".into(), json!(u.id));
    m.insert("email".into(), json!(u.email));
    m.insert("userName".into(), json!(u.user_name));
    if let Some(f) = &u.first_name {
        m.insert("firstName".into(), json!(f));
    }
    if let Some(l) = &u.last_name {
        m.insert("lastName".into(), json!(l));
    }
    m.insert("roleId".into(), json!(u.role_id));
    m.insert("active".into(), json!(u.active));
    m.insert("groups".into(), json!(u.groups));
    m.insert("adgroups".into(), json!([]));
    m.insert("activeDirectory".into(), json!(false));
    m.insert("preferences".into(), Value::Object(u.preferences.clone()));
    m.insert("uiSettings".into(), u.ui_settings.clone());
    m.insert("created".into(), json!(u.created));
    m.insert("lastUpdated".into(), json!(u.last_updated));
    if let Some(l) = &u.last_login {
        m.insert("lastLogin".into(), json!(l));
    }
    Value::Object(m)
}

/// The v0.9 user adds the role's name, has no `uiSettings`, and its preferences carry no nulls
/// (type string there).
fn user_json_v09(u: &User, st: &State) -> Value {
    let mut v = user_json(u);
    if let Some(o) = v.as_object_mut() {
        o.remove("uiSettings");
        if let Some(r) = st.role(&u.role_id) {
            o.insert("roleName".into(), json!(r.name));
            o.insert("baseRoleName".into(), json!(r.name));
        }
        if let Some(Value::Object(p)) = o.get_mut("preferences") {
            p.retain(|_, v| !v.is_null());
        }
    }
    v
}

fn group_json(g: &Group) -> Value {
    let mut m = Map::new();
    m.insert("_id".into(), json!(g.id));
    m.insert("name".into(), json!(g.name));
    if let Some(r) = &g.role_id {
        m.insert("roleId".into(), json!(r));
    }
    if let Some(mail) = &g.mail {
        m.insert("mail".into(), json!(mail));
    }
    m.insert("ad".into(), json!(false));
    m.insert("created".into(), json!(g.created));
    m.insert("lastUpdated".into(), json!(g.last_updated));
    Value::Object(m)
}

fn role_json(r: &Role, base: bool, manifest: bool) -> Value {
    let mut m = Map::new();
    m.insert("_id".into(), json!(r.id));
    m.insert("name".into(), json!(r.name));
    // UNVERIFIED field name for the UI label; `desc` carries it too.
    m.insert("displayName".into(), json!(r.display_name));
    m.insert("desc".into(), json!(r.display_name));
    if base {
        m.insert("baseRoleName".into(), json!(r.name));
    }
    if manifest {
        m.insert("manifest".into(), json!({}));
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// Query handling shared by the list endpoints
// ---------------------------------------------------------------------------------------------

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(req: &HttpRequest) -> Result<Query, HttpResponse> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .map(Query)
            .map_err(|_| invalid("malformed query string"))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn bool(&self, k: &str) -> Result<Option<bool>, HttpResponse> {
        match self.get(k) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(invalid(&format!("{k} must be a boolean"))),
        }
    }
    /// `skip` (≥ 0) and `limit` (≥ 1), as the spec's parameter constraints say.
    fn paging(&self) -> Result<(usize, Option<usize>), HttpResponse> {
        let skip = match self.get("skip") {
            None => 0,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| invalid("skip must be an integer >= 0"))?
                as usize,
        };
        let limit = match self.get("limit") {
            None => None,
            Some(s) => Some(
                s.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("limit must be an integer >= 1"))?
                    as usize,
            ),
        };
        Ok((skip, limit))
    }
}

impl Query {
    /// v0.9 paging: as [`Query::paging`], but `limit=0` means "no limit" (the v0.9 spec: "Enter
    /// 0 (zero) or leave blank not to limit"), so `Some(usize::MAX)`.
    fn paging_v09(&self) -> Result<(usize, Option<usize>), HttpResponse> {
        if self.get("limit").map(str::trim) == Some("0") {
            let (skip, _) = Query(
                self.0
                    .iter()
                    .filter(|(k, _)| k != "limit")
                    .cloned()
                    .collect(),
            )
            .paging()?;
            return Ok((skip, Some(usize::MAX)));
        }
        self.paging()
    }
}

fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (None, None) => Ordering::Equal,
    }
}

/// `sort`, `skip`/`limit`, then `fields` — over rendered objects.
fn shape_list(
    mut items: Vec<Value>,
    q: &Query,
    default_limit: Option<usize>,
) -> Result<Vec<Value>, HttpResponse> {
    if let Some(sort) = q.get("sort").filter(|s| !s.is_empty()) {
        let (field, desc) = match sort.strip_prefix('-') {
            Some(f) => (f, true),
            None => (sort.strip_prefix('+').unwrap_or(sort), false),
        };
        items.sort_by(|a, b| {
            let o = compare_values(a.get(field), b.get(field));
            if desc {
                o.reverse()
            } else {
                o
            }
        });
    }
    let (skip, limit) = q.paging()?;
    let items = items
        .into_iter()
        .skip(skip)
        .take(limit.or(default_limit).unwrap_or(usize::MAX));
    Ok(items.map(|v| project(v, q.get("fields"))).collect())
}

/// `fields=a,b` keeps those (and `_id`, as a Mongo projection does); `fields=-a` drops `a`.
fn project(v: Value, fields: Option<&str>) -> Value {
    let Some(fields) = fields.filter(|f| !f.trim().is_empty()) else {
        return v;
    };
    let Value::Object(mut m) = v else { return v };
    let list: Vec<&str> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    if list.iter().all(|f| f.starts_with('-')) {
        for f in list {
            m.remove(&f[1..]);
        }
    } else {
        m.retain(|k, _| k == "_id" || list.contains(&k.as_str()));
    }
    Value::Object(m)
}

/// `expand` for users: `groups`, `adgroups`, `role`. Anything else → 404 code 202.
fn user_expands(q: &Query) -> Result<(bool, bool), HttpResponse> {
    parse_expand(q, &["groups", "adgroups", "role"]).map(|e| {
        (
            e.contains(&"groups".to_string()),
            e.contains(&"role".to_string()),
        )
    })
}

fn parse_expand(q: &Query, allowed: &[&str]) -> Result<Vec<String>, HttpResponse> {
    let Some(expand) = q.get("expand") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in expand.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let head = e.split('.').next().unwrap_or(e);
        if !allowed.contains(&head) {
            return Err(not_found(
                INVALID_EXPAND,
                "Invalid expand parameter.",
                "expand",
                e,
            ));
        }
        out.push(head.to_string());
    }
    Ok(out)
}

fn expand_user(mut v: Value, u: &User, st: &State, groups: bool, role: bool) -> Value {
    if let Some(o) = v.as_object_mut() {
        if groups {
            let gs: Vec<Value> = u
                .groups
                .iter()
                .filter_map(|g| st.groups.get(g))
                .map(group_json)
                .collect();
            o.insert("groups".into(), Value::Array(gs));
        }
        if role {
            if let Some(r) = st.role(&u.role_id) {
                o.insert("role".into(), role_json(r, true, false));
            }
        }
    }
    v
}

fn parse_json(body: &[u8]) -> Result<Value, HttpResponse> {
    serde_json::from_slice(body).map_err(|e| invalid(&format!("body is not valid JSON ({e})")))
}

// ---------------------------------------------------------------------------------------------
// Handlers: authentication
// ---------------------------------------------------------------------------------------------

/// `POST /api/v1/authentication/login` — form-encoded per the spec (JSON accepted too unless
/// `--legacy-2021`, because the 2026 guide shows a JSON body).
async fn login(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let fields: HashMap<String, String> = if ct.starts_with("application/json") {
        if s.legacy_2021 {
            return invalid("login expects application/x-www-form-urlencoded");
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            _ => return invalid("body is not a JSON object"),
        }
    } else {
        match serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
            Ok(v) => v.into_iter().collect(),
            Err(_) => return invalid("malformed form body"),
        }
    };
    let (Some(username), Some(password)) = (fields.get("username"), fields.get("password")) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            MANDATORY_MISSING,
            "Mandatory fields are missing.",
        );
    };
    let found = {
        let st = s.state.read();
        let found = st
            .users_in_order()
            .find(|u| u.user_name == *username || u.email.eq_ignore_ascii_case(username))
            .map(|u| (u.id.clone(), u.password.clone(), u.active));
        found
    };
    let uid = match found {
        None if !username.contains('@') => {
            return error(StatusCode::UNAUTHORIZED, INVALID_DOMAIN, "Invalid domain.")
        }
        // UNVERIFIED: how Sisense answers an inactive user's login (code and message are ours).
        Some((_, Some(pw), false)) if pw == *password => {
            return error(
                StatusCode::UNAUTHORIZED,
                USER_INACTIVE_UNVERIFIED,
                "User is not active.",
            )
        }
        Some((uid, Some(pw), true)) if pw == *password => uid,
        _ => {
            return error(
                StatusCode::UNAUTHORIZED,
                BAD_CREDENTIALS_UNVERIFIED,
                "Invalid username or password.",
            )
        }
    };
    let token = jwt_like(&s.ids, &uid);
    s.sessions.issue(token.clone(), uid.clone());
    if let Some(u) = s.state.write().users.get_mut(&uid) {
        u.last_login = Some(now());
    }
    HttpResponse::Ok().json(json!({
        "success": true,
        "message": "",
        "access_token": token,
        "profile": {},
        "userId": uid,
    }))
}

/// A parsed `POST /__sim/last_login` (the test hook that sets a user's last sign-in; CONTRACT §1
/// next to `/__sim/stats`): `{"login": "<login, name or email, any case>", "at": RFC 3339 | null}`.
///
/// Shared by the four simulators (each finds the user its own way and stores the time in its own
/// field). It lives here rather than in `stats.rs` only because that file has another owner this
/// round; it belongs beside `get_stats`.
pub(crate) struct LastLoginHook {
    pub(crate) login: String,
    /// `None`: the user has never signed in (the vendor then omits or nulls its field).
    pub(crate) at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Reads a `/__sim/last_login` request: loopback callers only (like `/__sim/stats`), a JSON
/// body with a non-empty `login` and an `at` that is RFC 3339 or null. The `Err` is the finished
/// answer (403 or 400, plain text: this is the simulator's own control surface, not the vendor's).
pub(crate) fn read_last_login_hook(
    req: &HttpRequest,
    body: &[u8],
) -> Result<LastLoginHook, HttpResponse> {
    if !req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
        return Err(
            HttpResponse::Forbidden().body("/__sim/last_login answers loopback clients only")
        );
    }
    let bad = |m: &str| {
        HttpResponse::BadRequest()
            .content_type("text/plain")
            .body(m.to_string())
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("body is not JSON"))?;
    let login = match v.get("login") {
        Some(Value::String(l)) if !l.trim().is_empty() => l.trim().to_string(),
        _ => return Err(bad("`login` must be a non-empty string")),
    };
    let at = match v.get("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| bad("`at` must be an RFC 3339 date-time or null"))?
                .with_timezone(&chrono::Utc),
        ),
        Some(_) => return Err(bad("`at` must be an RFC 3339 date-time or null")),
    };
    Ok(LastLoginHook { login, at })
}

/// `POST /__sim/last_login`: sets `lastLogin` of the user whose `userName` or `email` is `login`
/// (any case) → 204, 404 when none is. A real login through `/api/v1/authentication/login` sets
/// it too.
async fn sim_last_login(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let hook = match read_last_login_hook(&req, &body) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut st = s.state.write();
    let found = st.users.values_mut().find(|u| {
        u.user_name.eq_ignore_ascii_case(&hook.login) || u.email.eq_ignore_ascii_case(&hook.login)
    });
    match found {
        Some(u) => {
            u.last_login = hook
                .at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            HttpResponse::NoContent().finish()
        }
        None => HttpResponse::NotFound().body("no such user"),
    }
}

/// Sisense tokens are JWTs; ours has the shape (header.payload.signature) without a real key.
fn jwt_like(ids: &IdGen, uid: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64.encode(
        json!({"user": uid, "apiSecret": ids.hex(16), "iat": chrono::Utc::now().timestamp()})
            .to_string(),
    );
    let sig = b64.encode(ids.bytes(32));
    format!("{header}.{payload}.{sig}")
}

/// `GET /api/v1/authentication/logout` — revokes the token in use.
async fn logout(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(resp) = s.authenticate(&req) {
        return resp;
    }
    if let Some(t) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        s.sessions.revoke(t.trim());
    }
    HttpResponse::Ok().json(json!({}))
}

/// `GET /api/users/loggedin` (v0.9) — the caller.
async fn logged_in(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    let uid = match s.authenticate(&req) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let st = s.state.read();
    match st.users.get(&uid) {
        Some(u) => HttpResponse::Ok().json(user_json_v09(u, &st)),
        None => user_not_found(&uid),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers: roles (read-only; v0.9)
// ---------------------------------------------------------------------------------------------

/// `GET /api/roles` is `designers-and-admins-only` in the v0.9 spec: a Viewer gets 403.
async fn list_roles(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    const DESIGNERS_AND_ADMINS: [&str; 5] =
        ["super", "admin", "dataAdmin", "dataDesigner", "contributor"];
    if let Err(r) = s.authenticate_role(&req, &DESIGNERS_AND_ADMINS) {
        return r;
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (base, manifest) = match (q.bool("includeBaseRolesName"), q.bool("includeManifest")) {
        (Ok(b), Ok(m)) => (b.unwrap_or(false), m.unwrap_or(false)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let st = s.state.read();
    let roles: Vec<Value> = st
        .roles
        .iter()
        .map(|r| role_json(r, base, manifest))
        .collect();
    HttpResponse::Ok().json(roles)
}

async fn get_role(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate(&req) {
        return r;
    }
    let key = req.match_info().get("idOrName").unwrap_or_default();
    let st = s.state.read();
    match st.role_by_id_or_name(key) {
        Some(r) => HttpResponse::Ok().json(role_json(r, true, false)),
        None => role_not_found(key),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers: users v1
// ---------------------------------------------------------------------------------------------

async fn list_users(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    match list_users_inner(&s, &q) {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(r) => r,
    }
}

fn list_users_inner(s: &Sisense, q: &Query) -> Result<Vec<Value>, HttpResponse> {
    let (exp_groups, exp_role) = user_expands(q)?;
    if let Some(e) = q.get("email") {
        if !looks_like_email(e) {
            return Err(invalid("email must be an email address"));
        }
    }
    // Older clients send `role`/`group` for `roleId`/`groupId` (PySense).
    let role_id = q.get("roleId").or_else(|| q.get("role"));
    let group_id = q.get("groupId").or_else(|| q.get("group"));
    if role_id.is_some_and(|r| !is_object_id(r)) {
        return Err(invalid("roleId must be an object id"));
    }
    if group_id.is_some_and(|g| !is_object_id(g) && !g.eq_ignore_ascii_case("null")) {
        return Err(invalid("groupId must be an object id or null"));
    }
    let active = q.bool("active")?;
    let origin = q.get("origin");
    if origin.is_some_and(|o| o != "ad" && o != "sisense") {
        return Err(invalid("origin must be one of ad, sisense"));
    }
    let ids: Option<Vec<&str>> = q.get("ids").map(|s| s.split(',').collect());
    let st = s.state.read();
    let opt_eq = |field: &Option<String>, want: Option<&str>| match want {
        None => true,
        Some(w) => field.as_deref().is_some_and(|f| s.text_eq(f, w)),
    };
    let items: Vec<Value> = st
        .users_in_order()
        .filter(|u| q.get("userName").is_none_or(|w| s.text_eq(&u.user_name, w)))
        .filter(|u| q.get("email").is_none_or(|w| s.text_eq(&u.email, w)))
        .filter(|u| opt_eq(&u.first_name, q.get("firstName")))
        .filter(|u| opt_eq(&u.last_name, q.get("lastName")))
        .filter(|u| role_id.is_none_or(|r| u.role_id == r))
        .filter(|u| match group_id {
            None => true,
            Some(g) if g.eq_ignore_ascii_case("null") => u.groups.is_empty(),
            Some(g) => u.groups.iter().any(|x| x == g),
        })
        .filter(|u| active.is_none_or(|a| u.active == a))
        .filter(|_| origin != Some("ad"))
        .filter(|u| ids.as_ref().is_none_or(|ids| ids.contains(&u.id.as_str())))
        .map(|u| expand_user(user_json(u), u, &st, exp_groups, exp_role))
        .collect();
    shape_list(items, q, s.default_limit)
}

async fn get_user(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let id = req.match_info().get("id").unwrap_or_default();
    if !is_object_id(id) {
        return invalid("id must be an object id");
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (g, r) = match user_expands(&q) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let st = s.state.read();
    match st.users.get(id) {
        Some(u) => HttpResponse::Ok().json(project(
            expand_user(user_json(u), u, &st, g, r),
            q.get("fields"),
        )),
        None => user_not_found(id),
    }
}

/// Reads an optional string field: absent or null → None; another type → validation error.
fn opt_str(m: &Map<String, Value>, k: &str) -> Result<Option<String>, HttpResponse> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("{k} must be a string"))),
    }
}

fn group_ids(st: &State, v: &Value) -> Result<Vec<String>, HttpResponse> {
    let Some(arr) = v.as_array() else {
        return Err(invalid("groups must be an array"));
    };
    let mut out: Vec<String> = Vec::new();
    for g in arr {
        let Some(g) = g.as_str().filter(|g| is_object_id(g)) else {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                INVALID_OBJECT_ID,
                "Invalid object ID.",
            ));
        };
        if !st.groups.contains_key(g) {
            return Err(group_not_found(g));
        }
        if !out.iter().any(|x| x == g) {
            out.push(g.to_string());
        }
    }
    Ok(out)
}

fn check_role(st: &State, role_id: &str) -> Result<(), HttpResponse> {
    if !is_object_id(role_id) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            INVALID_OBJECT_ID,
            "Invalid object ID.",
        ));
    }
    if st.role(role_id).is_none() {
        return Err(role_not_found(role_id));
    }
    Ok(())
}

fn merge_preferences(into: &mut Map<String, Value>, v: &Value) -> Result<(), HttpResponse> {
    let Some(p) = v.as_object() else {
        return Err(invalid("preferences must be an object"));
    };
    for (k, v) in p {
        into.insert(k.clone(), v.clone());
    }
    Ok(())
}

/// Validates a new user and adds it (shared by v1 POST, bulk and v0.9 POST).
fn create_user(
    s: &Sisense,
    st: &mut State,
    body: &Value,
    pending: &[User],
) -> Result<User, HttpResponse> {
    let Some(m) = body.as_object() else {
        return Err(invalid("user must be an object"));
    };
    let (Some(_), Some(_)) = (m.get("email"), m.get("roleId")) else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            MANDATORY_MISSING,
            "Mandatory fields are missing.",
        ));
    };
    let email = opt_str(m, "email")?.unwrap_or_default();
    let role_id = opt_str(m, "roleId")?.unwrap_or_default();
    let user_name = opt_str(m, "userName")?.unwrap_or_else(|| email.clone());
    if email.is_empty() || role_id.is_empty() || user_name.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            MANDATORY_EMPTY,
            "Mandatory fields cannot be empty.",
        ));
    }
    if !looks_like_email(&email) {
        return Err(invalid("email must be an email address"));
    }
    check_role(st, &role_id)?;
    let groups = match m.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => group_ids(st, v)?,
    };
    let mut preferences = default_preferences();
    if let Some(p) = m.get("preferences").filter(|p| !p.is_null()) {
        merge_preferences(&mut preferences, p)?;
    }
    let clash = |u: &User| {
        u.user_name.eq_ignore_ascii_case(&user_name)
            || u.email.eq_ignore_ascii_case(&email)
            || u.user_name.eq_ignore_ascii_case(&email)
    };
    if st.users.values().any(clash) || pending.iter().any(clash) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            USER_EXISTS,
            "The user already exists.",
        ));
    }
    let super_id = st.super_role_id().unwrap_or_default().to_string();
    if role_id == super_id
        && (st.users.values().any(|u| u.role_id == super_id)
            || pending.iter().any(|u| u.role_id == super_id))
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            MULTIPLE_SUPER,
            "Multiple super-users are not allowed.",
        ));
    }
    let ts = now();
    Ok(User {
        id: s.ids.hex(24),
        email,
        user_name,
        first_name: opt_str(m, "firstName")?,
        last_name: opt_str(m, "lastName")?,
        role_id,
        // The guide says `active` is optional on create (default true).
        active: m.get("active").and_then(Value::as_bool).unwrap_or(true),
        groups,
        preferences,
        ui_settings: m
            .get("uiSettings")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
        password: opt_str(m, "password")?,
        created: ts.clone(),
        last_updated: ts,
        last_login: None,
        external_id: None,
    })
}

fn insert_user(st: &mut State, u: User) {
    st.user_order.push(u.id.clone());
    st.users.insert(u.id.clone(), u);
}

async fn post_user(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = s.state.write();
    match create_user(&s, &mut st, &v, &[]) {
        Ok(u) => {
            let out = user_json(&u);
            insert_user(&mut st, u);
            HttpResponse::Created().json(out)
        }
        Err(r) => r,
    }
}

/// `POST /api/v1/users/bulk`: all or nothing.
async fn post_users_bulk(
    s: web::Data<Sisense>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(arr) = v.as_array() else {
        return error(
            StatusCode::BAD_REQUEST,
            USERS_NOT_ARRAY,
            "Invalid Users format. Users must be passed as an array.",
        );
    };
    let mut st = s.state.write();
    let mut created: Vec<User> = Vec::new();
    for item in arr {
        match create_user(&s, &mut st, item, &created) {
            Ok(u) => created.push(u),
            Err(resp) => {
                if resp.status() == StatusCode::BAD_REQUEST {
                    let body_code = item
                        .get("email")
                        .and_then(Value::as_str)
                        .map(|e| created.iter().any(|c| c.email.eq_ignore_ascii_case(e)));
                    if body_code == Some(true) {
                        return error(
                            StatusCode::BAD_REQUEST,
                            USERS_DUPLICATED,
                            "The given users contain duplicates.",
                        );
                    }
                    if st.users.values().any(|u| {
                        Some(u.email.as_str()) == item.get("email").and_then(Value::as_str)
                    }) {
                        return error(
                            StatusCode::BAD_REQUEST,
                            USER_EXISTS,
                            "One or more of the given users already exists",
                        );
                    }
                }
                return resp;
            }
        }
    }
    let out: Vec<Value> = created.iter().map(user_json).collect();
    for u in created {
        insert_user(&mut st, u);
    }
    HttpResponse::Created().json(out)
}

/// `DELETE /api/v1/users/bulk?ids=a,b`: all or nothing.
async fn delete_users_bulk(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let ids: Vec<String> = q
        .get("ids")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() || ids.iter().any(|i| !is_object_id(i)) {
        return invalid("ids must be a comma-separated list of object ids");
    }
    let mut st = s.state.write();
    if let Some(missing) = ids.iter().find(|i| !st.users.contains_key(*i)) {
        return not_found(
            USER_NOT_FOUND,
            "One or more users not found.",
            "user",
            missing,
        );
    }
    let super_id = st.super_role_id().unwrap_or_default().to_string();
    if ids.iter().any(|i| st.users[i].role_id == super_id) {
        return error(
            StatusCode::BAD_REQUEST,
            SUPER_UNDELETABLE,
            "A super-user cannot be deleted.",
        );
    }
    for id in &ids {
        st.remove_user(id);
        s.sessions.revoke_where(|x| x == id);
    }
    HttpResponse::NoContent().finish()
}

/// Applies a partial update (v1 PATCH and v0.9 PUT).
fn apply_patch(s: &Sisense, st: &mut State, id: &str, body: &Value) -> Result<User, HttpResponse> {
    let Some(m) = body.as_object() else {
        return Err(invalid("user must be an object"));
    };
    let Some(current) = st.users.get(id).cloned() else {
        return Err(user_not_found(id));
    };
    let mut u = current.clone();
    if let Some(e) = opt_str(m, "email")? {
        if e.is_empty() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                MANDATORY_EMPTY,
                "Mandatory fields cannot be empty.",
            ));
        }
        if !looks_like_email(&e) {
            return Err(invalid("email must be an email address"));
        }
        u.email = e;
    }
    if let Some(n) = opt_str(m, "userName")? {
        if n.is_empty() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                MANDATORY_EMPTY,
                "Mandatory fields cannot be empty.",
            ));
        }
        u.user_name = n;
    }
    if m.contains_key("firstName") {
        u.first_name = opt_str(m, "firstName")?;
    }
    if m.contains_key("lastName") {
        u.last_name = opt_str(m, "lastName")?;
    }
    if let Some(r) = opt_str(m, "roleId")? {
        check_role(st, &r)?;
        u.role_id = r;
    }
    // `groups` replaces the whole membership list; `[]` clears it.
    if let Some(g) = m.get("groups").filter(|g| !g.is_null()) {
        u.groups = group_ids(st, g)?;
    }
    if let Some(p) = m.get("preferences").filter(|p| !p.is_null()) {
        merge_preferences(&mut u.preferences, p)?;
    }
    if let Some(ui) = m.get("uiSettings").filter(|p| !p.is_null()) {
        if !ui.is_object() {
            return Err(invalid("uiSettings must be an object"));
        }
        u.ui_settings = ui.clone();
    }
    if let Some(a) = m.get("active") {
        if s.legacy_2021 {
            // The 2021 spec's PATCH body has no `active`: the field is not writable there.
            return Err(invalid("active is not an updatable field"));
        }
        u.active = a
            .as_bool()
            .ok_or_else(|| invalid("active must be a boolean"))?;
    }
    if let Some(p) = opt_str(m, "password")? {
        u.password = Some(p);
    }
    // UNVERIFIED: a PATCH clash is answered as on POST (400 2004).
    let clash = st.users.values().any(|o| {
        o.id != u.id
            && (o.user_name.eq_ignore_ascii_case(&u.user_name)
                || o.email.eq_ignore_ascii_case(&u.email))
    });
    if clash {
        return Err(error(
            StatusCode::BAD_REQUEST,
            USER_EXISTS,
            "The user already exists.",
        ));
    }
    let super_id = st.super_role_id().unwrap_or_default().to_string();
    if u.role_id == super_id
        && current.role_id != super_id
        && st.users.values().any(|o| o.role_id == super_id)
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            MULTIPLE_SUPER,
            "Multiple super-users are not allowed.",
        ));
    }
    u.last_updated = now();
    st.users.insert(u.id.clone(), u.clone());
    Ok(u)
}

async fn patch_user(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let id = req.match_info().get("id").unwrap_or_default().to_string();
    if !is_object_id(&id) {
        return invalid("id must be an object id");
    }
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = s.state.write();
    match apply_patch(&s, &mut st, &id, &v) {
        Ok(u) => {
            if !u.active {
                s.sessions.revoke_where(|x| *x == u.id);
            }
            HttpResponse::Ok().json(user_json(&u))
        }
        Err(r) => r,
    }
}

/// The super user cannot be deleted (code 2011); shared by REST and SCIM deletes.
fn is_undeletable(st: &State, u: &User) -> bool {
    Some(u.role_id.as_str()) == st.super_role_id()
}

fn delete_user_inner(s: &Sisense, st: &mut State, id: &str) -> Result<(), HttpResponse> {
    let Some(u) = st.users.get(id) else {
        return Err(user_not_found(id));
    };
    if is_undeletable(st, u) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            SUPER_UNDELETABLE,
            "A super-user cannot be deleted.",
        ));
    }
    st.remove_user(id);
    s.sessions.revoke_where(|x| x == id);
    Ok(())
}

async fn delete_user(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let id = req.match_info().get("id").unwrap_or_default().to_string();
    if !is_object_id(&id) {
        return invalid("id must be an object id");
    }
    let mut st = s.state.write();
    match delete_user_inner(&s, &mut st, &id) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers: groups v1
// ---------------------------------------------------------------------------------------------

fn expand_group(mut v: Value, g: &Group, st: &State, users: bool, role: bool) -> Value {
    if let Some(o) = v.as_object_mut() {
        if users {
            let us: Vec<Value> = st
                .users_in_order()
                .filter(|u| u.groups.contains(&g.id))
                .map(user_json)
                .collect();
            o.insert("users".into(), Value::Array(us));
        }
        if role {
            if let Some(r) = g.role_id.as_deref().and_then(|r| st.role(r)) {
                o.insert("role".into(), role_json(r, true, false));
            }
        }
    }
    v
}

async fn list_groups(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let expand = match parse_expand(&q, &["users", "role"]) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (eu, er) = (
        expand.iter().any(|e| e == "users"),
        expand.iter().any(|e| e == "role"),
    );
    let role_id = q.get("roleId");
    if role_id.is_some_and(|r| !is_object_id(r) && !r.eq_ignore_ascii_case("null")) {
        return invalid("roleId must be an object id or null");
    }
    let origin = q.get("origin");
    if origin.is_some_and(|o| o != "ad" && o != "sisense") {
        return invalid("origin must be one of ad, sisense");
    }
    let ids: Option<Vec<&str>> = q.get("ids").map(|s| s.split(',').collect());
    let st = s.state.read();
    let items: Vec<Value> = st
        .groups_in_order()
        .filter(|g| q.get("name").is_none_or(|n| s.text_eq(&g.name, n)))
        .filter(|g| {
            q.get("mail")
                .is_none_or(|m| g.mail.as_deref().is_some_and(|x| s.text_eq(x, m)))
        })
        .filter(|g| match role_id {
            None => true,
            Some(r) if r.eq_ignore_ascii_case("null") => g.role_id.is_none(),
            Some(r) => g.role_id.as_deref() == Some(r),
        })
        .filter(|_| origin != Some("ad"))
        .filter(|g| ids.as_ref().is_none_or(|ids| ids.contains(&g.id.as_str())))
        .map(|g| expand_group(group_json(g), g, &st, eu, er))
        .collect();
    match shape_list(items, &q, s.default_limit) {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(r) => r,
    }
}

async fn get_group(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let id = req.match_info().get("id").unwrap_or_default();
    if !is_object_id(id) {
        return invalid("id must be an object id");
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let expand = match parse_expand(&q, &["users", "role"]) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let st = s.state.read();
    match st.groups.get(id) {
        Some(g) => HttpResponse::Ok().json(project(
            expand_group(
                group_json(g),
                g,
                &st,
                expand.iter().any(|e| e == "users"),
                expand.iter().any(|e| e == "role"),
            ),
            q.get("fields"),
        )),
        None => group_not_found(id),
    }
}

fn group_name_taken(st: &State, name: &str, except: Option<&str>) -> bool {
    st.groups
        .values()
        .any(|g| Some(g.id.as_str()) != except && g.name.eq_ignore_ascii_case(name))
}

async fn post_group(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = s.state.write();
    match new_group(&s, &st, &v, &[]) {
        Ok(g) => {
            let out = group_json(&g);
            insert_group(&mut st, g);
            HttpResponse::Created().json(out)
        }
        Err(r) => r,
    }
}

/// Validates a new group (v1 POST and v0.9 POST): `name` required and unique (ignoring case)
/// among the existing groups and the `pending` ones of the same request.
fn new_group(s: &Sisense, st: &State, v: &Value, pending: &[Group]) -> Result<Group, HttpResponse> {
    let Some(m) = v.as_object() else {
        return Err(invalid("group must be an object"));
    };
    let Some(name) = opt_str(m, "name")? else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            MANDATORY_MISSING,
            "Mandatory fields are missing.",
        ));
    };
    if name.trim().is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            MANDATORY_EMPTY,
            "Mandatory fields cannot be empty.",
        ));
    }
    let role_id = opt_str(m, "roleId")?;
    if let Some(r) = &role_id {
        check_role(st, r)?;
    }
    if group_name_taken(st, &name, None)
        || pending.iter().any(|g| g.name.eq_ignore_ascii_case(&name))
    {
        return Err(error(
            s.duplicate_group_status,
            GROUP_EXISTS_UNVERIFIED,
            "A group with the same name already exists.",
        ));
    }
    let ts = now();
    Ok(Group {
        id: s.ids.hex(24),
        name,
        role_id,
        mail: m.get("mail").and_then(Value::as_str).map(str::to_string),
        created: ts.clone(),
        last_updated: ts,
    })
}

fn insert_group(st: &mut State, g: Group) {
    st.group_order.push(g.id.clone());
    st.groups.insert(g.id.clone(), g);
}

fn remove_group(st: &mut State, id: &str) {
    st.groups.remove(id);
    st.group_order.retain(|g| g != id);
    for u in st.users.values_mut() {
        u.groups.retain(|g| g != id);
    }
}

async fn delete_group(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let id = req.match_info().get("id").unwrap_or_default().to_string();
    if !is_object_id(&id) {
        return invalid("id must be an object id");
    }
    let mut st = s.state.write();
    if !st.groups.contains_key(&id) {
        return group_not_found(&id);
    }
    remove_group(&mut st, &id);
    HttpResponse::NoContent().finish()
}

// ---------------------------------------------------------------------------------------------
// Handlers: legacy v0.9 groups (rename, per-group membership) and users
// ---------------------------------------------------------------------------------------------

fn group_json_v09(g: &Group, st: &State) -> Value {
    let mut v = group_json(g);
    if let Some(o) = v.as_object_mut() {
        o.remove("ad");
        if let Some(r) = g.role_id.as_deref().and_then(|r| st.role(r)) {
            o.insert("baseRoleName".into(), json!(r.name));
        }
    }
    v
}

async fn v09_list_groups(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let st = s.state.read();
    let search = q.get("search").map(str::to_lowercase);
    let items: Vec<Value> = st
        .groups_in_order()
        .filter(|g| {
            search
                .as_deref()
                .is_none_or(|s| g.name.to_lowercase().contains(s))
        })
        .map(|g| group_json_v09(g, &st))
        .collect();
    let (skip, limit) = match q.paging_v09() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(limit.or(s.default_limit).unwrap_or(usize::MAX))
        .collect();
    HttpResponse::Ok().json(items)
}

/// v0.9 `POST /api/groups` (operationId addGroup): the spec's body is an array of
/// `regularGroup` and its 200 schema one `{_id, name, created, lastUpdated}` object. One group
/// posted → that object; several → an array of them (UNVERIFIED: the spec declares only the
/// object). A single object as the body is accepted too (UNVERIFIED leniency, as v0.9 POST
/// /api/users). All or nothing; a duplicate name is the v1 POST error.
async fn v09_post_groups(
    s: web::Data<Sisense>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (items, single) = match v {
        Value::Array(a) if !a.is_empty() => {
            let single = a.len() == 1;
            (a, single)
        }
        Value::Object(_) => (vec![v], true),
        _ => return invalid("body must be a group or a non-empty array of groups"),
    };
    let mut st = s.state.write();
    let mut created: Vec<Group> = Vec::new();
    for item in &items {
        match new_group(&s, &st, item, &created) {
            Ok(g) => created.push(g),
            Err(r) => return r,
        }
    }
    let out: Vec<Value> = created
        .iter()
        .map(|g| json!({"_id": g.id, "name": g.name, "created": g.created, "lastUpdated": g.last_updated}))
        .collect();
    for g in created {
        insert_group(&mut st, g);
    }
    if single {
        HttpResponse::Ok().json(out.into_iter().next().unwrap_or(Value::Null))
    } else {
        HttpResponse::Ok().json(out)
    }
}

async fn v09_get_group(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let key = req.match_info().get("group").unwrap_or_default();
    let st = s.state.read();
    match st.group_by_id_or_name(key) {
        Some(g) => HttpResponse::Ok().json(group_json_v09(g, &st)),
        None => group_not_found(key),
    }
}

/// `PUT /api/groups/{group}` — the only way to rename a group (no v1 PATCH in 2021).
async fn v09_put_group(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let key = req
        .match_info()
        .get("group")
        .unwrap_or_default()
        .to_string();
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(m) = v.as_object() else {
        return invalid("group must be an object");
    };
    let mut st = s.state.write();
    let Some(id) = st.group_by_id_or_name(&key).map(|g| g.id.clone()) else {
        return group_not_found(&key);
    };
    let name = match opt_str(m, "name") {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Some(n) = &name {
        if n.trim().is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                MANDATORY_EMPTY,
                "Mandatory fields cannot be empty.",
            );
        }
        if group_name_taken(&st, n, Some(&id)) {
            return error(
                s.duplicate_group_status,
                GROUP_EXISTS_UNVERIFIED,
                "A group with the same name already exists.",
            );
        }
    }
    let role = match opt_str(m, "roleId") {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Some(r) = &role {
        if let Err(resp) = check_role(&st, r) {
            return resp;
        }
    }
    let g = st.groups.get_mut(&id).expect("looked up above");
    if let Some(n) = name {
        g.name = n;
    }
    if let Some(r) = role {
        g.role_id = Some(r);
    }
    if let Some(mail) = m.get("mail").and_then(Value::as_str) {
        g.mail = Some(mail.to_string());
    }
    g.last_updated = now();
    let g = g.clone();
    HttpResponse::Ok().json(group_json_v09(&g, &st))
}

async fn v09_delete_group(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let key = req
        .match_info()
        .get("group")
        .unwrap_or_default()
        .to_string();
    let mut st = s.state.write();
    let Some(id) = st.group_by_id_or_name(&key).map(|g| g.id.clone()) else {
        return group_not_found(&key);
    };
    remove_group(&mut st, &id);
    HttpResponse::Ok().json(json!({}))
}

async fn v09_group_users(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let key = req.match_info().get("group").unwrap_or_default();
    let st = s.state.read();
    let Some(g) = st.group_by_id_or_name(key) else {
        return group_not_found(key);
    };
    let users: Vec<Value> = st
        .users_in_order()
        .filter(|u| u.groups.contains(&g.id))
        .map(|u| user_json_v09(u, &st))
        .collect();
    HttpResponse::Ok().json(users)
}

/// `POST`/`DELETE /api/groups/{group}/users` with a JSON array of user ids or usernames.
/// All or nothing: one unknown user → 400 and no change (UNVERIFIED which; the spec lists 400).
async fn v09_change_group_users(
    s: web::Data<Sisense>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let add = req.method() == actix_web::http::Method::POST;
    let key = req
        .match_info()
        .get("group")
        .unwrap_or_default()
        .to_string();
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(keys) = v
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<&str>>>())
    else {
        return invalid("body must be an array of user ids or usernames");
    };
    let mut st = s.state.write();
    let Some(gid) = st.group_by_id_or_name(&key).map(|g| g.id.clone()) else {
        return group_not_found(&key);
    };
    let mut uids = Vec::new();
    for k in keys {
        match st.user_by_id_or_name(k) {
            Some(u) => uids.push(u.id.clone()),
            None => return invalid(&format!("user {k} does not exist")),
        }
    }
    let ts = now();
    for uid in &uids {
        if let Some(u) = st.users.get_mut(uid) {
            let has = u.groups.contains(&gid);
            if add && !has {
                u.groups.push(gid.clone());
                u.last_updated = ts.clone();
            } else if !add && has {
                u.groups.retain(|g| *g != gid);
                u.last_updated = ts.clone();
            }
        }
    }
    HttpResponse::Ok().json(uids)
}

async fn v09_list_users(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let q = match Query::parse(&req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let st = s.state.read();
    let search = q.get("search").map(str::to_lowercase);
    let groups: Option<Vec<&str>> = q.get("groups").map(|g| g.split(',').collect());
    let mut items: Vec<Value> = st
        .users_in_order()
        .filter(|u| {
            search.as_deref().is_none_or(|s| {
                [
                    Some(&u.user_name),
                    Some(&u.email),
                    u.first_name.as_ref(),
                    u.last_name.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|f| f.to_lowercase().contains(s))
            })
        })
        .filter(|u| {
            groups
                .as_ref()
                .is_none_or(|gs| u.groups.iter().any(|g| gs.contains(&g.as_str())))
        })
        .map(|u| user_json_v09(u, &st))
        .collect();
    if let Some(order) = q.get("orderby").filter(|o| !o.is_empty()) {
        let desc = q.get("desc") == Some("true");
        let field = order.split(',').next().unwrap_or(order).to_string();
        items.sort_by(|a, b| {
            let o = compare_values(a.get(&field), b.get(&field));
            if desc {
                o.reverse()
            } else {
                o
            }
        });
    }
    let (skip, limit) = match q.paging() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(limit.or(s.default_limit).unwrap_or(usize::MAX))
        .collect();
    HttpResponse::Ok().json(items)
}

/// v0.9 `POST /api/users` takes an array (the spec) or one object; one user → the object (the
/// spec's 200 schema), several → an array.
async fn v09_post_users(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (items, single) = match v {
        Value::Array(a) => {
            let single = a.len() == 1;
            (a, single)
        }
        Value::Object(_) => (vec![v], true),
        _ => return invalid("body must be a user or an array of users"),
    };
    let mut st = s.state.write();
    let mut created = Vec::new();
    for item in &items {
        match create_user(&s, &mut st, item, &created) {
            Ok(u) => created.push(u),
            Err(r) => return r,
        }
    }
    let out: Vec<Value> = created.iter().map(|u| user_json_v09(u, &st)).collect();
    for u in created {
        insert_user(&mut st, u);
    }
    if single {
        HttpResponse::Ok().json(out.into_iter().next().unwrap_or(Value::Null))
    } else {
        HttpResponse::Ok().json(out)
    }
}

async fn v09_get_user(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let key = req.match_info().get("user").unwrap_or_default();
    let st = s.state.read();
    match st.user_by_id_or_name(key) {
        Some(u) => HttpResponse::Ok().json(user_json_v09(u, &st)),
        None => user_not_found(key),
    }
}

async fn v09_put_user(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let key = req.match_info().get("user").unwrap_or_default().to_string();
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = s.state.write();
    let Some(id) = st.user_by_id_or_name(&key).map(|u| u.id.clone()) else {
        return user_not_found(&key);
    };
    match apply_patch(&s, &mut st, &id, &v) {
        Ok(u) => HttpResponse::Ok().json(user_json_v09(&u, &st)),
        Err(r) => r,
    }
}

async fn v09_delete_user(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = s.authenticate_admin(&req) {
        return r;
    }
    let key = req.match_info().get("user").unwrap_or_default().to_string();
    let mut st = s.state.write();
    let Some(id) = st.user_by_id_or_name(&key).map(|u| u.id.clone()) else {
        return user_not_found(&key);
    };
    match delete_user_inner(&s, &mut st, &id) {
        Ok(()) => HttpResponse::Ok().json(json!({})),
        Err(r) => r,
    }
}

impl VendorSim for SisenseSim {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.sim.clone())
            .route("/__sim/last_login", web::post().to(sim_last_login))
            .route("/api/v1/authentication/login", web::post().to(login))
            .route("/api/v1/authentication/logout", web::get().to(logout))
            // Users v1 (`/bulk` before `/{id}`, as the router takes the first match).
            .service(
                web::resource("/api/v1/users")
                    .route(web::get().to(list_users))
                    .route(web::post().to(post_user)),
            )
            .service(
                web::resource("/api/v1/users/bulk")
                    .route(web::post().to(post_users_bulk))
                    .route(web::delete().to(delete_users_bulk)),
            )
            .service(
                web::resource("/api/v1/users/{id}")
                    .route(web::get().to(get_user))
                    .route(web::patch().to(patch_user))
                    .route(web::delete().to(delete_user)),
            )
            // Groups v1 (no PATCH in the 2021 spec).
            .service(
                web::resource("/api/v1/groups")
                    .route(web::get().to(list_groups))
                    .route(web::post().to(post_group)),
            )
            .service(
                web::resource("/api/v1/groups/{id}")
                    .route(web::get().to(get_group))
                    .route(web::delete().to(delete_group)),
            )
            // Roles: legacy only in the 2021 spec; the 2026 guide also shows /api/v1/roles.
            .route("/api/roles", web::get().to(list_roles))
            .route("/api/roles/{idOrName}", web::get().to(get_role))
            // Legacy v0.9.
            .route("/api/users/loggedin", web::get().to(logged_in))
            .service(
                web::resource("/api/users")
                    .route(web::get().to(v09_list_users))
                    .route(web::post().to(v09_post_users)),
            )
            .service(
                web::resource("/api/users/{user}")
                    .route(web::get().to(v09_get_user))
                    .route(web::put().to(v09_put_user))
                    .route(web::delete().to(v09_delete_user)),
            )
            .service(
                web::resource("/api/groups")
                    .route(web::get().to(v09_list_groups))
                    .route(web::post().to(v09_post_groups)),
            )
            .service(
                web::resource("/api/groups/{group}")
                    .route(web::get().to(v09_get_group))
                    .route(web::put().to(v09_put_group))
                    .route(web::delete().to(v09_delete_group)),
            )
            .service(
                web::resource("/api/groups/{group}/users")
                    .route(web::get().to(v09_group_users))
                    .route(web::post().to(v09_change_group_users))
                    .route(web::delete().to(v09_change_group_users)),
            );
        if !self.sim.legacy_2021 {
            cfg.route("/api/v1/roles", web::get().to(list_roles));
        }
        if self.sim.scim_enabled {
            scim::configure(cfg);
        }
    }

    /// The spec defines `tooManyRequestsApiError` (the envelope); Sisense sends no
    /// `Retry-After` (2026 guide: "Retry-After header: No").
    fn throttled(&self, retry_after_s: Option<u64>) -> HttpResponse {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            TOO_MANY_REQUESTS_UNVERIFIED,
            "Too many requests.",
        );
        if let (true, Some(s)) = (self.retry_after, retry_after_s) {
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&s.to_string()) {
                r.headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, v);
            }
        }
        r
    }

    fn server_error(&self) -> HttpResponse {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            INTERNAL_ERROR,
            "Internal Server Error",
        )
    }

    fn not_found(&self) -> HttpResponse {
        error(StatusCode::NOT_FOUND, 404, "Not Found")
    }
}

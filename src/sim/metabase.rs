//! Metabase REST simulator: sessions and API keys, `/api/user`, `/api/permissions/group` and
//! `/api/permissions/membership`.
//!
//! Source: shared/reference/vendors-sisense-metabase.md part A (read from metabase/metabase's
//! `users/api.clj`, `permissions/api.clj`, the membership model and the error middleware).
//!
//! Wire facts reproduced:
//! - `POST /api/session` → `{"id": uuid}` + cookie; `X-Metabase-Session`, the `metabase.SESSION`
//!   cookie or `x-api-key`; a bad or expired credential → 401 plain-text `Unauthenticated`;
//! - three error body shapes: plain text (`Not found.`), `{"errors": {...}}` (with
//!   `specific-errors` when schema validation fails) and `{"message": ...}`;
//! - `GET /api/user` → `{data,total,limit,offset}` with `status` and a substring `query`;
//!   everything else lists as bare arrays; creates answer 200, group/membership deletes 204;
//! - DELETE deactivates; reactivation strips admin; PUT on an inactive user → 404;
//! - "All Users" can't be touched and must stay in every membership list; "Administrators"
//!   membership is `is_superuser`; the last admin can't be removed; duplicate memberships fail.

// Validation helpers return the vendor's finished error response as their `Err`; it is built only
// on the error path.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Map, Value};

use super::ids::IdGen;
use super::session::Sessions;
use super::{SimOptions, VendorSim};

pub const DEFAULT_API_KEY: &str = "mb_simulator_api_key";
pub const DEFAULT_USER: &str = "admin@metabase.local";
pub const DEFAULT_PASSWORD: &str = "admin";

/// MAX_SESSION_AGE default: 20160 minutes (14 days), counted from login.
const DEFAULT_SESSION_AGE: Duration = Duration::from_secs(20160 * 60);
/// How long a throttled username waits (Metabase's delay grows; the simulator keeps it fixed).
const LOGIN_THROTTLE_WAIT_S: u64 = 15;

const ALL_USERS: &str = "all-internal-users";
const ADMIN: &str = "admin";

const MSG_NOT_FOUND: &str = "Not found.";
const MSG_FORBIDDEN: &str = "You don't have permissions to do that.";
const MSG_ALL_USERS: &str = "You cannot add or remove users to/from the 'All Users' group.";
const MSG_LAST_ADMIN: &str = "You cannot remove the last member of the 'Admin' group!";
const MSG_GROUP_EXISTS: &str = "A group with that name already exists.";

struct User {
    id: i64,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    is_active: bool,
    is_qbnewb: bool,
    sso_source: Option<String>,
    login_attributes: Value,
    locale: Option<String>,
    date_joined: String,
    last_login: Option<String>,
    updated_at: String,
    password: Option<String>,
    /// `type = personal`; the API-key user is not, and never appears in `GET /api/user`.
    personal: bool,
    personal_collection_id: i64,
    /// group id → membership id.
    groups: BTreeMap<i64, i64>,
}

struct Group {
    id: i64,
    name: String,
    entity_id: String,
    magic: Option<&'static str>,
}

#[derive(Clone, Copy)]
struct Membership {
    group_id: i64,
    user_id: i64,
    is_group_manager: bool,
}

struct State {
    users: BTreeMap<i64, User>,
    /// Lower-cased email → user id: Metabase's unique email index.
    emails: HashMap<String, i64>,
    groups: BTreeMap<i64, Group>,
    memberships: BTreeMap<i64, Membership>,
    next_user: i64,
    next_group: i64,
    next_membership: i64,
    all_users_id: i64,
    admin_id: i64,
}

impl State {
    fn is_superuser(&self, u: &User) -> bool {
        u.groups.contains_key(&self.admin_id)
    }

    fn add_membership(&mut self, user_id: i64, group_id: i64, is_group_manager: bool) -> i64 {
        let mid = self.next_membership;
        self.next_membership += 1;
        self.memberships.insert(
            mid,
            Membership {
                group_id,
                user_id,
                is_group_manager,
            },
        );
        if let Some(u) = self.users.get_mut(&user_id) {
            u.groups.insert(group_id, mid);
        }
        mid
    }

    fn remove_membership(&mut self, mid: i64) {
        if let Some(m) = self.memberships.remove(&mid) {
            if let Some(u) = self.users.get_mut(&m.user_id) {
                u.groups.remove(&m.group_id);
            }
        }
    }

    /// Active personal superusers: the ones the last-admin rule protects.
    fn active_admins(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.personal && u.is_active && u.groups.contains_key(&self.admin_id))
            .count()
    }

    /// Metabase's unique index on the lower-cased email, inactive users included.
    fn email_taken(&self, email: &str, except: Option<i64>) -> bool {
        self.emails
            .get(&email.to_lowercase())
            .is_some_and(|id| Some(*id) != except)
    }

    /// Adds a user, indexing its email.
    fn insert_user(&mut self, u: User) {
        self.emails.insert(u.email.to_lowercase(), u.id);
        self.users.insert(u.id, u);
    }
}

pub struct Metabase {
    api_key: String,
    api_key_user: i64,
    strict_redeactivate: bool,
    login_attempts: u32,
    ids: IdGen,
    sessions: Sessions<i64>,
    failed_logins: Mutex<HashMap<String, (u32, Instant)>>,
    state: RwLock<State>,
}

struct MetabaseSim {
    sim: web::Data<Metabase>,
    /// `--sim-switch metabase.retry_after=true`: send `Retry-After` on the 429 (default off).
    retry_after: bool,
}

/// The Metabase simulator for the framework.
pub fn new(opts: &SimOptions) -> Arc<dyn VendorSim> {
    Arc::new(MetabaseSim {
        sim: web::Data::new(Metabase::new(opts)),
        retry_after: opts.switch("metabase.retry_after") == Some("true"),
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Metabase {
    fn new(opts: &SimOptions) -> Self {
        let ids = IdGen::new(opts.derived_seed(0x4D42));
        let nanoid = |ids: &IdGen| -> String {
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ids.bytes(16));
            b[..21].to_string()
        };
        let mut st = State {
            users: BTreeMap::new(),
            emails: HashMap::new(),
            groups: BTreeMap::new(),
            memberships: BTreeMap::new(),
            next_user: 1,
            next_group: 1,
            next_membership: 1,
            all_users_id: 1,
            admin_id: 2,
        };
        for (name, magic) in [("All Users", ALL_USERS), ("Administrators", ADMIN)] {
            let id = st.next_group;
            st.next_group += 1;
            st.groups.insert(
                id,
                Group {
                    id,
                    name: name.to_string(),
                    entity_id: nanoid(&ids),
                    magic: Some(magic),
                },
            );
        }
        let ts = now();
        let mk_user = |id: i64, email: String, first: Option<&str>, last: Option<&str>| User {
            id,
            email,
            first_name: first.map(str::to_string),
            last_name: last.map(str::to_string),
            is_active: true,
            is_qbnewb: true,
            sso_source: None,
            login_attributes: Value::Null,
            locale: None,
            date_joined: ts.clone(),
            last_login: None,
            updated_at: ts.clone(),
            password: None,
            personal: true,
            personal_collection_id: id,
            groups: BTreeMap::new(),
        };
        let mut admin = mk_user(
            1,
            opts.admin_user
                .clone()
                .unwrap_or_else(|| DEFAULT_USER.to_string())
                .to_lowercase(),
            Some("Admin"),
            Some("User"),
        );
        admin.password = Some(
            opts.admin_password
                .clone()
                .unwrap_or_else(|| DEFAULT_PASSWORD.to_string()),
        );
        admin.is_qbnewb = false;
        st.insert_user(admin);
        // The key's hidden user: `api-key-user-<uuid>@api-key.invalid`, in All Users + Admins.
        let mut key_user = mk_user(
            2,
            format!("api-key-user-{}@api-key.invalid", ids.uuid()),
            Some("Simulator"),
            Some("API key"),
        );
        key_user.personal = false;
        st.insert_user(key_user);
        st.next_user = 3;
        for uid in [1, 2] {
            st.add_membership(uid, 1, false);
            st.add_membership(uid, 2, false);
        }
        Metabase {
            api_key: opts
                .api_key
                .clone()
                .unwrap_or_else(|| DEFAULT_API_KEY.to_string()),
            api_key_user: 2,
            strict_redeactivate: opts.metabase_strict_redeactivate,
            login_attempts: opts.metabase_login_attempts,
            ids,
            sessions: Sessions::new(Some(
                opts.token_ttl_s
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_SESSION_AGE),
            )),
            failed_logins: Mutex::new(HashMap::new()),
            state: RwLock::new(st),
        }
    }

    /// API key (any header case), then the session header, then the session cookie.
    /// The calling user's id (the API key acts as its hidden user).
    fn caller(&self, req: &HttpRequest) -> Result<i64, HttpResponse> {
        if let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
            return if key == self.api_key {
                Ok(self.api_key_user)
            } else {
                Err(unauthenticated())
            };
        }
        let session = req
            .headers()
            .get("x-metabase-session")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| session_cookie(req));
        let Some(session) = session else {
            return Err(unauthenticated());
        };
        let uid = self
            .sessions
            .check(&session)
            .map_err(|_| unauthenticated())?;
        let st = self.state.read();
        match st.users.get(&uid) {
            Some(u) if u.is_active => Ok(uid),
            _ => Err(unauthenticated()),
        }
    }

    fn superuser(&self, req: &HttpRequest) -> Result<i64, HttpResponse> {
        let uid = self.caller(req)?;
        let st = self.state.read();
        match st.users.get(&uid) {
            Some(u) if st.is_superuser(u) => Ok(uid),
            _ => Err(text(StatusCode::FORBIDDEN, MSG_FORBIDDEN)),
        }
    }
}

/// The `metabase.SESSION` cookie (actix-web is built without its cookie feature here).
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "metabase.SESSION")
        .map(|(_, v)| v.to_string())
}

// ---------------------------------------------------------------------------------------------
// The three error body shapes
// ---------------------------------------------------------------------------------------------

fn text(status: StatusCode, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain")
        .body(body.to_string())
}

fn unauthenticated() -> HttpResponse {
    text(StatusCode::UNAUTHORIZED, "Unauthenticated")
}

fn not_found() -> HttpResponse {
    text(StatusCode::NOT_FOUND, MSG_NOT_FOUND)
}

/// `{"errors": {field: msg}}`, as endpoint checks answer.
fn field_error(status: StatusCode, field: &str, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"errors": {field: msg}}))
}

/// `{"errors": ..., "specific-errors": ...}`, as schema validation answers.
fn schema_error(field: &str, msg: &str, specific: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({
        "errors": {field: msg},
        "specific-errors": {field: [specific]},
    }))
}

fn message(status: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"message": msg}))
}

const NON_BLANK: &str = "value must be a non-blank string.";
const VALID_EMAIL: &str = "value must be a valid email address.";
const POSITIVE_INT: &str = "value must be an integer greater than zero.";

fn describe(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "nil".to_string(),
        Some(v) => v.to_string(),
    }
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, HttpResponse> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(message(
            StatusCode::BAD_REQUEST,
            "Invalid request body: expected a JSON object.",
        )),
        Err(_) => Err(message(
            StatusCode::BAD_REQUEST,
            "Malformed JSON in request body.",
        )),
    }
}

fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// `email`: required valid email.
fn required_email(m: &Map<String, Value>) -> Result<String, HttpResponse> {
    match m.get("email").and_then(Value::as_str) {
        Some(e) if looks_like_email(e) => Ok(e.to_lowercase()),
        other => Err(schema_error(
            "email",
            VALID_EMAIL,
            &format!(
                "should be a valid email address, received: {}",
                describe(other.map(|s| Value::String(s.to_string())).as_ref())
            ),
        )),
    }
}

/// Optional name: absent → None (unchanged); null → Some(None) (cleared); non-blank string.
fn opt_name(m: &Map<String, Value>, k: &str) -> Result<Option<Option<String>>, HttpResponse> {
    match m.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(Some(s.clone()))),
        Some(v) => Err(schema_error(
            k,
            &format!("nullable {NON_BLANK}"),
            &format!("non-blank string, received: {v}"),
        )),
    }
}

fn positive_int(m: &Map<String, Value>, k: &str) -> Result<i64, HttpResponse> {
    match m.get(k).and_then(Value::as_i64) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(schema_error(
            k,
            POSITIVE_INT,
            &format!("should be a positive int, received: {}", describe(m.get(k))),
        )),
    }
}

fn path_id(req: &HttpRequest, name: &str) -> Result<i64, HttpResponse> {
    let raw = req.match_info().get(name).unwrap_or_default();
    match raw.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(schema_error(
            name,
            POSITIVE_INT,
            &format!("should be a positive int, received: \"{raw}\""),
        )),
    }
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(req: &HttpRequest) -> Query {
        Query(serde_urlencoded::from_str(req.query_string()).unwrap_or_default())
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    /// limit/offset: offset alone → limit 50; limit alone → offset 0; neither → no paging.
    fn paging(&self) -> Result<(Option<usize>, Option<usize>), HttpResponse> {
        let parse = |k: &str, min: i64| -> Result<Option<usize>, HttpResponse> {
            match self.get(k) {
                None => Ok(None),
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if n >= min => Ok(Some(n as usize)),
                    _ => Err(schema_error(
                        k,
                        if min > 0 {
                            POSITIVE_INT
                        } else {
                            "value must be an integer greater than or equal to zero."
                        },
                        &format!("should be an integer, received: \"{v}\""),
                    )),
                },
            }
        };
        let limit = parse("limit", 1)?;
        let offset = parse("offset", 0)?;
        Ok(match (limit, offset) {
            (None, None) => (None, None),
            (Some(l), None) => (Some(l), Some(0)),
            (None, Some(o)) => (Some(50), Some(o)),
            (l, o) => (l, o),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn common_name(u: &User) -> String {
    match (&u.first_name, &u.last_name) {
        (None, None) => u.email.clone(),
        (f, l) => format!(
            "{} {}",
            f.as_deref().unwrap_or(""),
            l.as_deref().unwrap_or("")
        )
        .trim()
        .to_string(),
    }
}

fn user_json(u: &User, st: &State) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(u.id));
    m.insert("email".into(), json!(u.email));
    m.insert("first_name".into(), json!(u.first_name));
    m.insert("last_name".into(), json!(u.last_name));
    m.insert("common_name".into(), json!(common_name(u)));
    m.insert("date_joined".into(), json!(u.date_joined));
    m.insert("last_login".into(), json!(u.last_login));
    m.insert("updated_at".into(), json!(u.updated_at));
    m.insert("is_superuser".into(), json!(st.is_superuser(u)));
    m.insert("is_qbnewb".into(), json!(u.is_qbnewb));
    m.insert("is_active".into(), json!(u.is_active));
    m.insert("sso_source".into(), json!(u.sso_source));
    m.insert("login_attributes".into(), u.login_attributes.clone());
    m.insert("locale".into(), json!(u.locale));
    m.insert("tenant_id".into(), Value::Null);
    m
}

/// The list adds `group_ids` and `personal_collection_id`.
fn user_list_json(u: &User, st: &State) -> Value {
    let mut m = user_json(u, st);
    m.insert(
        "group_ids".into(),
        json!(u.groups.keys().copied().collect::<Vec<_>>()),
    );
    m.insert(
        "personal_collection_id".into(),
        json!(u.personal_collection_id),
    );
    Value::Object(m)
}

/// `GET /:id` and the writes add `user_group_memberships: [{"id": group_id}]`, sorted by id.
fn user_detail_json(u: &User, st: &State) -> Value {
    let mut m = user_json(u, st);
    let gm: Vec<Value> = u.groups.keys().map(|g| json!({"id": g})).collect();
    m.insert("user_group_memberships".into(), Value::Array(gm));
    Value::Object(m)
}

fn group_json(g: &Group, st: &State) -> Map<String, Value> {
    let members = st
        .users
        .values()
        .filter(|u| u.personal && u.is_active && u.groups.contains_key(&g.id))
        .count();
    let mut m = Map::new();
    m.insert("id".into(), json!(g.id));
    m.insert("name".into(), json!(g.name));
    m.insert("member_count".into(), json!(members));
    m.insert("entity_id".into(), json!(g.entity_id));
    m.insert("magic_group_type".into(), json!(g.magic));
    m.insert("is_tenant_group".into(), json!(false));
    m
}

/// Active members of a group, as `members` of `GET /group/:id` and the membership POST answer.
fn members_json(st: &State, gid: i64) -> Vec<Value> {
    st.users
        .values()
        .filter(|u| u.personal && u.is_active)
        .filter_map(|u| {
            u.groups.get(&gid).map(|mid| {
                json!({
                    "user_id": u.id,
                    "membership_id": mid,
                    "first_name": u.first_name,
                    "last_name": u.last_name,
                    "email": u.email,
                    "common_name": common_name(u),
                })
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

async fn post_session(m: web::Data<Metabase>, body: web::Bytes) -> HttpResponse {
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    for k in ["username", "password"] {
        if b.get(k)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            return schema_error(
                k,
                NON_BLANK,
                &format!("non-blank string, received: {}", describe(b.get(k))),
            );
        }
    }
    let username = b["username"].as_str().unwrap_or_default().to_lowercase();
    let password = b["password"].as_str().unwrap_or_default();
    if m.login_attempts > 0 {
        let mut failed = m.failed_logins.lock();
        if let Some((n, last)) = failed.get(&username).copied() {
            let wait = Duration::from_secs(LOGIN_THROTTLE_WAIT_S);
            if n >= m.login_attempts && last.elapsed() < wait {
                let left = (wait - last.elapsed()).as_secs().max(1);
                return field_error(
                    StatusCode::UNAUTHORIZED,
                    "username",
                    &format!(
                        "Too many attempts! You must wait {left} seconds before trying again."
                    ),
                );
            }
            if n >= m.login_attempts {
                failed.remove(&username);
            }
        }
    }
    let outcome = {
        let st = m.state.read();
        st.users
            .values()
            .find(|u| u.personal && u.email == username)
            .map(|u| (u.id, u.is_active, u.password.as_deref() == Some(password)))
    };
    match outcome {
        Some((uid, true, true)) => {
            m.failed_logins.lock().remove(&username);
            let sid = m.ids.uuid();
            m.sessions.issue(sid.clone(), uid);
            if let Some(u) = m.state.write().users.get_mut(&uid) {
                u.last_login = Some(now());
            }
            HttpResponse::Ok()
                .insert_header((
                    "Set-Cookie",
                    format!("metabase.SESSION={sid}; Path=/; HttpOnly; SameSite=Lax"),
                ))
                .json(json!({"id": sid}))
        }
        Some((_, false, true)) => field_error(
            StatusCode::UNAUTHORIZED,
            "_error",
            "Your account is disabled.",
        ),
        _ => {
            let mut failed = m.failed_logins.lock();
            let e = failed.entry(username).or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
            field_error(
                StatusCode::UNAUTHORIZED,
                "password",
                "did not match stored password",
            )
        }
    }
}

async fn delete_session(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    let sid = req
        .headers()
        .get("x-metabase-session")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| session_cookie(&req));
    match sid {
        Some(s) if m.sessions.revoke(&s) => HttpResponse::NoContent().finish(),
        _ => not_found(),
    }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

async fn list_users(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let q = Query::parse(&req);
    let status = match q.get("status") {
        Some(s @ ("active" | "deactivated" | "all")) => s,
        Some(other) => {
            return schema_error(
                "status",
                "nullable enum of active, deactivated, all",
                &format!("should be either active, deactivated or all, received: \"{other}\""),
            )
        }
        None if q.get("include_deactivated") == Some("true") => "all",
        None => "active",
    };
    let group_id = match q.get("group_id").map(str::parse::<i64>) {
        None => None,
        Some(Ok(g)) if g > 0 => Some(g),
        Some(_) => return schema_error("group_id", POSITIVE_INT, "should be a positive int"),
    };
    let (limit, offset) = match q.paging() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let needle = q.get("query").map(str::to_lowercase);
    let st = m.state.read();
    let mut hits: Vec<&User> = st
        .users
        .values()
        .filter(|u| u.personal)
        .filter(|u| match status {
            "active" => u.is_active,
            "deactivated" => !u.is_active,
            _ => true,
        })
        .filter(|u| group_id.is_none_or(|g| u.groups.contains_key(&g)))
        .filter(|u| {
            needle.as_deref().is_none_or(|n| {
                [
                    u.first_name.as_deref(),
                    u.last_name.as_deref(),
                    Some(&u.email),
                ]
                .into_iter()
                .flatten()
                .any(|f| f.to_lowercase().contains(n))
            })
        })
        .collect();
    hits.sort_by_key(|u| {
        (
            u.first_name.as_deref().map(str::to_lowercase),
            u.last_name.as_deref().map(str::to_lowercase),
            u.id,
        )
    });
    let total = hits.len();
    let data: Vec<Value> = hits
        .into_iter()
        .skip(offset.unwrap_or(0))
        .take(limit.unwrap_or(usize::MAX))
        .map(|u| user_list_json(u, &st))
        .collect();
    HttpResponse::Ok().json(json!({"data": data, "total": total, "limit": limit, "offset": offset}))
}

async fn current_user(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    let uid = match m.caller(&req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let st = m.state.read();
    match st.users.get(&uid) {
        Some(u) => HttpResponse::Ok().json(user_detail_json(u, &st)),
        None => not_found(),
    }
}

async fn get_user(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    let caller = match m.caller(&req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let st = m.state.read();
    let is_admin = st.users.get(&caller).is_some_and(|u| st.is_superuser(u));
    if !is_admin && caller != id {
        return text(StatusCode::FORBIDDEN, MSG_FORBIDDEN);
    }
    match st.users.get(&id).filter(|u| u.personal) {
        Some(u) => HttpResponse::Ok().json(user_detail_json(u, &st)),
        None => not_found(),
    }
}

/// `user_group_memberships`: `[{"id": gid, "is_group_manager"?: bool}]`, must hold All Users.
fn parse_memberships(st: &State, v: &Value) -> Result<Vec<(i64, bool)>, HttpResponse> {
    let Some(arr) = v.as_array() else {
        return Err(schema_error(
            "user_group_memberships",
            "nullable sequence of map",
            "invalid type",
        ));
    };
    let mut out: Vec<(i64, bool)> = Vec::new();
    for item in arr {
        let gid = item.get("id").and_then(Value::as_i64).filter(|g| *g > 0);
        let Some(gid) = gid else {
            return Err(schema_error(
                "user_group_memberships",
                "nullable sequence of map",
                "id should be a positive int",
            ));
        };
        if !st.groups.contains_key(&gid) {
            return Err(not_found());
        }
        let mgr = item
            .get("is_group_manager")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if mgr {
            return Err(premium_required());
        }
        if !out.iter().any(|(g, _)| *g == gid) {
            out.push((gid, mgr));
        }
    }
    if !out.iter().any(|(g, _)| *g == st.all_users_id) {
        return Err(text(StatusCode::BAD_REQUEST, MSG_ALL_USERS));
    }
    Ok(out)
}

fn premium_required() -> HttpResponse {
    text(
        StatusCode::PAYMENT_REQUIRED,
        "Group managers is a paid feature not currently available to your instance. Please upgrade to use it. Learn more at metabase.com/upgrade/",
    )
}

async fn post_user(m: web::Data<Metabase>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let email = match required_email(&b) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (first, last) = match (opt_name(&b, "first_name"), opt_name(&b, "last_name")) {
        (Ok(f), Ok(l)) => (f.flatten(), l.flatten()),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let mut st = m.state.write();
    let memberships = match b.get("user_group_memberships") {
        None | Some(Value::Null) => vec![(st.all_users_id, false)],
        Some(v) => match parse_memberships(&st, v) {
            Ok(ms) => ms,
            Err(r) => return r,
        },
    };
    if st.email_taken(&email, None) {
        return field_error(
            StatusCode::BAD_REQUEST,
            "email",
            "Email address already in use.",
        );
    }
    let id = st.next_user;
    st.next_user += 1;
    let ts = now();
    // `is_superuser` on POST is silently ignored: admin comes from the Administrators membership.
    st.insert_user(User {
        id,
        email,
        first_name: first,
        last_name: last,
        is_active: true,
        is_qbnewb: true,
        sso_source: None,
        login_attributes: b
            .get("login_attributes")
            .filter(|v| v.is_object())
            .cloned()
            .unwrap_or(Value::Null),
        locale: None,
        date_joined: ts.clone(),
        last_login: None,
        updated_at: ts,
        // Metabase sets a random password and mails an invite.
        password: Some(m.ids.uuid()),
        personal: true,
        personal_collection_id: id,
        groups: BTreeMap::new(),
    });
    for (gid, mgr) in memberships {
        st.add_membership(id, gid, mgr);
    }
    let out = user_detail_json(&st.users[&id], &st);
    HttpResponse::Ok().json(out)
}

async fn put_user(m: web::Data<Metabase>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    // Works only on active users: inactive or unknown → 404.
    if !st.users.get(&id).is_some_and(|u| u.is_active && u.personal) {
        return not_found();
    }
    let email = match b.get("email") {
        None | Some(Value::Null) => None,
        Some(_) => match required_email(&b) {
            Ok(e) => Some(e),
            Err(r) => return r,
        },
    };
    let (first, last) = match (opt_name(&b, "first_name"), opt_name(&b, "last_name")) {
        (Ok(f), Ok(l)) => (f, l),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let Some(e) = &email {
        if st.email_taken(e, Some(id)) {
            return field_error(
                StatusCode::BAD_REQUEST,
                "email",
                "Email address already associated to another user.",
            );
        }
    }
    {
        let u = &st.users[&id];
        if u.sso_source.is_some() {
            if first.as_ref().is_some_and(|f| *f != u.first_name) {
                return field_error(
                    StatusCode::BAD_REQUEST,
                    "first_name",
                    "Editing first name is not allowed for SSO users.",
                );
            }
            if last.as_ref().is_some_and(|l| *l != u.last_name) {
                return field_error(
                    StatusCode::BAD_REQUEST,
                    "last_name",
                    "Editing last name is not allowed for SSO users.",
                );
            }
        }
    }
    let memberships = match b.get("user_group_memberships") {
        None | Some(Value::Null) => None,
        Some(v) => match parse_memberships(&st, v) {
            Ok(ms) => Some(ms),
            Err(r) => return r,
        },
    };
    let superuser = match b.get("is_superuser") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(x)) => Some(*x),
        Some(v) => {
            return schema_error(
                "is_superuser",
                "nullable boolean",
                &format!("should be a boolean, received: {v}"),
            )
        }
    };
    let admin_id = st.admin_id;
    let want_admin = match (&memberships, superuser) {
        (Some(ms), Some(s)) => {
            if ms.iter().any(|(g, _)| *g == admin_id) != s {
                return field_error(
                    StatusCode::BAD_REQUEST,
                    "is_superuser",
                    "is_superuser and the Administrators membership must agree.",
                );
            }
            Some(s)
        }
        (Some(ms), None) => Some(ms.iter().any(|(g, _)| *g == admin_id)),
        (None, s) => s,
    };
    let was_admin = st.users[&id].groups.contains_key(&admin_id);
    if was_admin && want_admin == Some(false) && st.active_admins() <= 1 {
        return text(StatusCode::BAD_REQUEST, MSG_LAST_ADMIN);
    }
    // All checks passed: apply.
    let target: Option<Vec<(i64, bool)>> = match (memberships, want_admin) {
        (Some(ms), _) => Some(ms),
        (None, Some(a)) => {
            let mut cur: Vec<(i64, bool)> =
                st.users[&id].groups.keys().map(|g| (*g, false)).collect();
            cur.retain(|(g, _)| *g != admin_id);
            if a {
                cur.push((admin_id, false));
            }
            Some(cur)
        }
        (None, None) => None,
    };
    if let Some(target) = target {
        let current: Vec<(i64, i64)> = st.users[&id]
            .groups
            .iter()
            .map(|(g, mid)| (*g, *mid))
            .collect();
        for (g, mid) in current {
            if !target.iter().any(|(t, _)| *t == g) {
                st.remove_membership(mid);
            }
        }
        for (g, mgr) in target {
            if !st.users[&id].groups.contains_key(&g) {
                st.add_membership(id, g, mgr);
            }
        }
    }
    if let Some(e) = email {
        let old = std::mem::replace(
            &mut st.users.get_mut(&id).expect("checked above").email,
            e.clone(),
        );
        st.emails.remove(&old.to_lowercase());
        st.emails.insert(e.to_lowercase(), id);
    }
    let u = st.users.get_mut(&id).expect("checked above");
    if let Some(f) = first {
        u.first_name = f;
    }
    if let Some(l) = last {
        u.last_name = l;
    }
    if let Some(la) = b.get("login_attributes") {
        u.login_attributes = la.clone();
    }
    if let Some(loc) = b.get("locale") {
        u.locale = loc.as_str().map(str::to_string);
    }
    u.updated_at = now();
    let out = user_detail_json(&st.users[&id], &st);
    HttpResponse::Ok().json(out)
}

/// `DELETE /api/user/:id` deactivates (no hard delete over REST).
async fn delete_user(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    let Some(u) = st.users.get(&id).filter(|u| u.personal) else {
        // No row updated → check-500.
        return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.");
    };
    if !u.is_active {
        // UNVERIFIED: an already deactivated user.
        return if m.strict_redeactivate {
            not_found()
        } else {
            HttpResponse::Ok().json(json!({"success": true}))
        };
    }
    if st.is_superuser(u) && st.active_admins() <= 1 {
        return text(StatusCode::BAD_REQUEST, MSG_LAST_ADMIN);
    }
    let u = st.users.get_mut(&id).expect("checked above");
    u.is_active = false;
    u.updated_at = now();
    drop(st);
    // Deactivation ends all of the user's sessions.
    m.sessions.revoke_where(|uid| *uid == id);
    HttpResponse::Ok().json(json!({"success": true}))
}

/// `PUT /api/user/:id/reactivate`: forces `is_superuser=false` (drops the Admin membership).
async fn reactivate_user(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    let Some(u) = st.users.get(&id).filter(|u| u.personal) else {
        return not_found();
    };
    if u.is_active {
        return message(
            StatusCode::BAD_REQUEST,
            "Not able to reactivate an active user",
        );
    }
    let admin_id = st.admin_id;
    if let Some(mid) = u.groups.get(&admin_id).copied() {
        st.remove_membership(mid);
    }
    let u = st.users.get_mut(&id).expect("checked above");
    u.is_active = true;
    u.updated_at = now();
    let out = Value::Object(user_json(&st.users[&id], &st));
    HttpResponse::Ok().json(out)
}

/// `PUT /api/user/:id/password` `{password, old_password?}`: admins may skip `old_password`.
/// Changing a password ends all of that user's sessions. The strength rule is Metabase's
/// default "normal" complexity (6 characters, one digit); the message is UNVERIFIED.
async fn put_password(m: web::Data<Metabase>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let caller = match m.caller(&req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(password) = b
        .get("password")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty())
    else {
        return schema_error("password", NON_BLANK, "non-blank string, received: nil");
    };
    let mut st = m.state.write();
    let is_admin = st.users.get(&caller).is_some_and(|u| st.is_superuser(u));
    if !is_admin && caller != id {
        return text(StatusCode::FORBIDDEN, MSG_FORBIDDEN);
    }
    let Some(u) = st.users.get(&id).filter(|u| u.personal && u.is_active) else {
        return not_found();
    };
    if !is_admin && b.get("old_password").and_then(Value::as_str) != u.password.as_deref() {
        return field_error(StatusCode::BAD_REQUEST, "old_password", "Invalid password");
    }
    if password.chars().count() < 6 || !password.chars().any(|c| c.is_ascii_digit()) {
        return field_error(
            StatusCode::BAD_REQUEST,
            "password",
            "Insufficient password strength",
        );
    }
    let u = st.users.get_mut(&id).expect("checked above");
    u.password = Some(password.to_string());
    u.updated_at = now();
    let out = user_detail_json(&st.users[&id], &st);
    drop(st);
    m.sessions.revoke_where(|uid| *uid == id);
    HttpResponse::Ok().json(out)
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

async fn list_groups(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let (limit, offset) = match Query::parse(&req).paging() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let st = m.state.read();
    let mut groups: Vec<&Group> = st.groups.values().collect();
    groups.sort_by_key(|g| (g.name.to_lowercase(), g.id));
    let out: Vec<Value> = groups
        .into_iter()
        .skip(offset.unwrap_or(0))
        .take(limit.unwrap_or(usize::MAX))
        .map(|g| Value::Object(group_json(g, &st)))
        .collect();
    HttpResponse::Ok().json(out)
}

async fn get_group(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let st = m.state.read();
    let Some(g) = st.groups.get(&id) else {
        return not_found();
    };
    let mut out = group_json(g, &st);
    out.insert("members".into(), Value::Array(members_json(&st, id)));
    HttpResponse::Ok().json(out)
}

fn group_name(b: &Map<String, Value>) -> Result<String, HttpResponse> {
    match b.get("name").and_then(Value::as_str) {
        Some(n) if !n.trim().is_empty() => Ok(n.to_string()),
        _ => Err(HttpResponse::BadRequest().json(json!({
            "errors": {"name": NON_BLANK},
            "specific-errors": {"name": [
                format!("should be a string, received: {}", describe(b.get("name"))),
                format!("non-blank string, received: {}", describe(b.get("name"))),
            ]},
        }))),
    }
}

fn name_taken(st: &State, name: &str, except: Option<i64>) -> bool {
    st.groups
        .values()
        .any(|g| Some(g.id) != except && g.name.eq_ignore_ascii_case(name))
}

fn magic_group_error(g: &Group) -> HttpResponse {
    text(
        StatusCode::BAD_REQUEST,
        &format!(
            "You cannot edit or delete the '{}' permissions group!",
            g.name
        ),
    )
}

async fn post_group(m: web::Data<Metabase>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = match group_name(&b) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    if name_taken(&st, &name, None) {
        return text(StatusCode::BAD_REQUEST, MSG_GROUP_EXISTS);
    }
    let id = st.next_group;
    st.next_group += 1;
    let entity_id =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.ids.bytes(16))[..21].to_string();
    st.groups.insert(
        id,
        Group {
            id,
            name,
            entity_id,
            magic: None,
        },
    );
    let out = group_json(&st.groups[&id], &st);
    HttpResponse::Ok().json(out)
}

async fn put_group(m: web::Data<Metabase>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let name = match group_name(&b) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    let Some(g) = st.groups.get(&id) else {
        return not_found();
    };
    if g.magic.is_some() {
        return magic_group_error(g);
    }
    if name_taken(&st, &name, Some(id)) {
        return text(StatusCode::BAD_REQUEST, MSG_GROUP_EXISTS);
    }
    if let Some(g) = st.groups.get_mut(&id) {
        g.name = name;
    }
    let out = group_json(&st.groups[&id], &st);
    HttpResponse::Ok().json(out)
}

/// No 404 check in the current code: an unknown id still answers 204.
async fn delete_group(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let id = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    if let Some(g) = st.groups.get(&id) {
        if g.magic.is_some() {
            return magic_group_error(g);
        }
        let mids: Vec<i64> = st
            .memberships
            .iter()
            .filter(|(_, ms)| ms.group_id == id)
            .map(|(mid, _)| *mid)
            .collect();
        for mid in mids {
            st.remove_membership(mid);
        }
        st.groups.remove(&id);
    }
    HttpResponse::NoContent().finish()
}

// ---------------------------------------------------------------------------------------------
// Memberships (addressed by membership id)
// ---------------------------------------------------------------------------------------------

async fn list_memberships(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let st = m.state.read();
    let mut out = Map::new();
    for (mid, ms) in &st.memberships {
        if !st.users.get(&ms.user_id).is_some_and(|u| u.personal) {
            continue;
        }
        let entry = out
            .entry(ms.user_id.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(json!({
                "membership_id": mid,
                "group_id": ms.group_id,
                "user_id": ms.user_id,
                "is_group_manager": ms.is_group_manager,
            }));
        }
    }
    HttpResponse::Ok().json(out)
}

async fn post_membership(
    m: web::Data<Metabase>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (gid, uid) = match (positive_int(&b, "group_id"), positive_int(&b, "user_id")) {
        (Ok(g), Ok(u)) => (g, u),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if b.get("is_group_manager").and_then(Value::as_bool) == Some(true) {
        return premium_required();
    }
    let mut st = m.state.write();
    if !st.groups.contains_key(&gid) || !st.users.get(&uid).is_some_and(|u| u.personal) {
        return not_found();
    }
    if gid == st.all_users_id {
        return text(StatusCode::BAD_REQUEST, MSG_ALL_USERS);
    }
    if st.users[&uid].groups.contains_key(&gid) {
        // The unique (user_id, group_id) constraint fails: not idempotent.
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERROR: duplicate key value violates unique constraint \
             \"unique_permissions_group_membership_user_id_group_id\"",
        );
    }
    st.add_membership(uid, gid, false);
    HttpResponse::Ok().json(members_json(&st, gid))
}

async fn delete_membership(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let mid = match path_id(&req, "id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    let Some(ms) = st.memberships.get(&mid).copied() else {
        return not_found();
    };
    if ms.group_id == st.all_users_id {
        return text(StatusCode::BAD_REQUEST, MSG_ALL_USERS);
    }
    if ms.group_id == st.admin_id
        && st
            .users
            .get(&ms.user_id)
            .is_some_and(|u| u.is_active && u.personal)
        && st.active_admins() <= 1
    {
        return text(StatusCode::BAD_REQUEST, MSG_LAST_ADMIN);
    }
    st.remove_membership(mid);
    HttpResponse::NoContent().finish()
}

async fn clear_group(m: web::Data<Metabase>, req: HttpRequest) -> HttpResponse {
    if let Err(r) = m.superuser(&req) {
        return r;
    }
    let gid = match path_id(&req, "group_id") {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut st = m.state.write();
    let Some(g) = st.groups.get(&gid) else {
        return not_found();
    };
    if gid == st.admin_id {
        return text(StatusCode::BAD_REQUEST, MSG_LAST_ADMIN);
    }
    if g.magic == Some(ALL_USERS) {
        return text(StatusCode::BAD_REQUEST, MSG_ALL_USERS);
    }
    let mids: Vec<i64> = st
        .memberships
        .iter()
        .filter(|(_, ms)| ms.group_id == gid)
        .map(|(mid, _)| *mid)
        .collect();
    for mid in mids {
        st.remove_membership(mid);
    }
    HttpResponse::NoContent().finish()
}

/// `POST /__sim/last_login`: sets `last_login` of the user whose email is `login` (any case;
/// Metabase stores emails lower-cased) → 204, 404 when none is. `POST /api/session` sets it too.
async fn sim_last_login(
    s: web::Data<Metabase>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let hook = match super::sisense::read_last_login_hook(&req, &body) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let mut st = s.state.write();
    let Some(id) = st.emails.get(&hook.login.to_lowercase()).copied() else {
        return text(StatusCode::NOT_FOUND, "Not found.");
    };
    match st.users.get_mut(&id) {
        Some(u) => {
            u.last_login = hook
                .at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            HttpResponse::NoContent().finish()
        }
        None => text(StatusCode::NOT_FOUND, "Not found."),
    }
}

impl VendorSim for MetabaseSim {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.sim.clone())
            .route("/__sim/last_login", web::post().to(sim_last_login))
            .service(
                web::resource("/api/session")
                    .route(web::post().to(post_session))
                    .route(web::delete().to(delete_session)),
            )
            .service(
                web::resource("/api/user")
                    .route(web::get().to(list_users))
                    .route(web::post().to(post_user)),
            )
            .route("/api/user/current", web::get().to(current_user))
            .service(
                web::resource("/api/user/{id}")
                    .route(web::get().to(get_user))
                    .route(web::put().to(put_user))
                    .route(web::delete().to(delete_user)),
            )
            .route("/api/user/{id}/reactivate", web::put().to(reactivate_user))
            .route("/api/user/{id}/password", web::put().to(put_password))
            .service(
                web::resource("/api/permissions/group")
                    .route(web::get().to(list_groups))
                    .route(web::post().to(post_group)),
            )
            .service(
                web::resource("/api/permissions/group/{id}")
                    .route(web::get().to(get_group))
                    .route(web::put().to(put_group))
                    .route(web::delete().to(delete_group)),
            )
            .service(
                web::resource("/api/permissions/membership")
                    .route(web::get().to(list_memberships))
                    .route(web::post().to(post_membership)),
            )
            .route(
                "/api/permissions/membership/{group_id}/clear",
                web::put().to(clear_group),
            )
            .route(
                "/api/permissions/membership/{id}",
                web::delete().to(delete_membership),
            );
    }

    /// Metabase documents no API rate limit (UNVERIFIED what a fronting proxy answers): plain
    /// text, and `Retry-After` only with `--sim-switch metabase.retry_after=true`.
    fn throttled(&self, retry_after_s: Option<u64>) -> HttpResponse {
        let mut r = HttpResponse::TooManyRequests();
        if let (true, Some(s)) = (self.retry_after, retry_after_s) {
            r.insert_header(("Retry-After", s.to_string()));
        }
        r.content_type("text/plain").body("Too many requests.")
    }

    fn server_error(&self) -> HttpResponse {
        text(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.")
    }

    fn not_found(&self) -> HttpResponse {
        text(StatusCode::NOT_FOUND, "API endpoint does not exist.")
    }
}

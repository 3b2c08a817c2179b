//! Sisense's native SCIM 2.0 endpoint (`/api/scim/v2`), over the same state as the REST API:
//! a user or group created here is visible over REST with the same `_id`, and the other way round.
//!
//! **UNVERIFIED: there is no primary Sisense document for this endpoint** (reference
//! vendors-sisense-metabase.md §B.6). What is taken from the third-party API guide
//! (use-cases/sisense-user-management-api-guide.txt, "SCIM API status"): the base path
//! `https://{host}/api/scim/v2`, a bearer "SCIM token" generated in Admin > Security, the
//! supported operations (GET/POST `/Users`, GET/PUT/PATCH/DELETE `/Users/{id}`, GET/POST
//! `/Groups`, PATCH/DELETE `/Groups/{id}`), and "group push maps to Sisense groups, not roles".
//! Every wire detail below is a design assumption of this simulator, written from RFC 7643/7644:
//!
//! - **auth**: `Authorization: Bearer <scim token>`, default [`DEFAULT_SCIM_TOKEN`], switch
//!   `sisense.scim_token=...`. REST session tokens are refused here and the SCIM token is refused
//!   by the REST routes (it is never a session). Missing or wrong → 401 SCIM error. The token is
//!   checked before anything else, the 405 of an unsupported operation included.
//! - **ids**: the SCIM `id` of a user or group is its Sisense `_id` (24 hex). The bridge relies on
//!   this (UNVERIFIED).
//! - **media type**: responses are `application/scim+json`; request bodies may be
//!   `application/json` or `application/scim+json` (or carry no Content-Type); anything else → 415.
//! - **errors**: RFC 7644 §3.12 bodies (`schemas` Error URN, `status` as a string, `scimType`
//!   where the RFC defines one, `detail`).
//! - **users**: `userName`, `name.givenName/familyName` (= firstName/lastName), one work email
//!   (= `email`), `active`, `externalId` (kept in simulator state only: REST has no such field),
//!   read-only `groups` (the user's Sisense groups). New users get the Viewer (`consumer`) role
//!   ([`DEFAULT_ROLE_UNVERIFIED`]); SCIM never changes a role, and `roles`/`groups` in a body
//!   are ignored.
//! - **groups**: `displayName` (= Sisense group `name`), `members` (the users whose REST
//!   `groups` contain the group). Membership changes are written into the users' `groups`. The
//!   group's default `roleId` is never applied to members.
//! - **group PATCH** answers 204 No Content by default; switch
//!   `sisense.scim_group_patch_returns=resource` → 200 with the group.
//! - anything outside the guide's operation list (GET/PUT `/Groups/{id}`, `/Schemas`,
//!   `/ServiceProviderConfig`, `/Bulk`, ...) → 405 with a SCIM error naming the operation.
//! - the switch `sisense.scim=false` leaves the routes out: the simulator's normal 404.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use crate::scim::filter::parse_filter;
use crate::scim::patch::{apply_patch, MemberOp, PatchOptions, PatchRequest};
use crate::scim::schema::{urn, ResourceSchema};
use crate::scim::value::parse_bool;
use crate::scim::ScimError;

use super::{
    default_preferences, group_name_taken, insert_group, insert_user, is_undeletable,
    looks_like_email, now, remove_group, Group, Sisense, State, User,
};

/// The SCIM bearer token when `sisense.scim_token` is not given.
pub const DEFAULT_SCIM_TOKEN: &str = "simulator-scim-token";
/// API name of the role SCIM-created users get: the Viewer. UNVERIFIED (no source says which
/// role Sisense gives a SCIM-provisioned user; the REST POST has no default, `roleId` is
/// mandatory there).
pub const DEFAULT_ROLE_UNVERIFIED: &str = "consumer";

const BASE: &str = "/api/scim/v2";
const SCIM_JSON: &str = "application/scim+json";
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = 1000;

static USER_SCHEMA: LazyLock<ResourceSchema> = LazyLock::new(ResourceSchema::user);
static GROUP_SCHEMA: LazyLock<ResourceSchema> = LazyLock::new(ResourceSchema::group);

type R<T> = Result<T, ScimError>;

/// Registers the SCIM routes (called from the Sisense `configure` unless `sisense.scim=false`).
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/scim/v2/Users")
            .route(web::get().to(list_users))
            .route(web::post().to(post_user))
            .default_service(web::to(unsupported)),
    )
    .service(
        web::resource("/api/scim/v2/Users/{id}")
            .route(web::get().to(get_user))
            .route(web::put().to(put_user))
            .route(web::patch().to(patch_user))
            .route(web::delete().to(delete_user))
            .default_service(web::to(unsupported)),
    )
    .service(
        web::resource("/api/scim/v2/Groups")
            .route(web::get().to(list_groups))
            .route(web::post().to(post_group))
            .default_service(web::to(unsupported)),
    )
    .service(
        web::resource("/api/scim/v2/Groups/{id}")
            .route(web::patch().to(patch_group))
            .route(web::delete().to(delete_group))
            .default_service(web::to(unsupported)),
    )
    .service(web::resource("/api/scim/v2/{rest:.*}").to(unsupported));
}

// ---------------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------------

fn scim_json(status: StatusCode, v: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(SCIM_JSON)
        .body(v.to_string())
}

fn scim_error(e: ScimError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = scim_json(status, &e.to_json());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"SCIM\""),
        );
    }
    r
}

fn run(f: impl FnOnce() -> R<HttpResponse>) -> HttpResponse {
    f().unwrap_or_else(scim_error)
}

fn authenticate(s: &Sisense, req: &HttpRequest) -> R<()> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    match token {
        None => Err(ScimError::unauthorized(
            "Authorization: Bearer <SCIM token> is required",
        )),
        Some(t) if bool::from(t.as_bytes().ct_eq(s.scim_token.as_bytes())) => Ok(()),
        Some(_) => Err(ScimError::unauthorized("the SCIM token is not valid")),
    }
}

/// The request body as JSON; `application/json`, `application/scim+json` or no Content-Type.
fn parse_body(req: &HttpRequest, body: &[u8]) -> R<Value> {
    if let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && essence != SCIM_JSON {
            return Err(ScimError::new(
                415,
                None,
                format!(
                    "Content-Type {essence} is not supported: use {SCIM_JSON} or application/json"
                ),
            ));
        }
    }
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON ({e})")))
}

/// `http://host/api/scim/v2`, for `meta.location` and `Location`.
fn base_url(req: &HttpRequest) -> String {
    let c = req.connection_info();
    format!("{}://{}{BASE}", c.scheme(), c.host())
}

fn path_id(req: &HttpRequest) -> String {
    req.match_info().get("id").unwrap_or_default().to_string()
}

fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// An optional string attribute: absent/null/"" → None; another type → invalidValue.
fn opt_string(m: &Map<String, Value>, key: &str) -> R<Option<String>> {
    match get_ci(m, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ScimError::invalid_value(format!(
            "'{key}' must be a string"
        ))),
    }
}

fn user_not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("User {id} not found"))
}

fn group_not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("Group {id} not found"))
}

/// Query parameters of the list endpoints (RFC 7644 §3.4.2).
struct ListParams {
    filter: Option<String>,
    start_index: usize,
    count: usize,
    exclude_members: bool,
}

fn list_params(req: &HttpRequest) -> R<ListParams> {
    let q: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| ScimError::invalid_syntax("malformed query string"))?;
    let get = |k: &str| {
        q.iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let int = |k: &str| -> R<Option<i64>> {
        get(k)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ScimError::invalid_value(format!("'{k}' must be an integer")))
            })
            .transpose()
    };
    // RFC 7644 §3.4.2.4: startIndex < 1 is read as 1; a negative count as 0.
    let start_index = int("startIndex")?.map_or(1, |n| n.max(1) as usize);
    let count = int("count")?.map_or(DEFAULT_COUNT, |n| (n.max(0) as usize).min(MAX_COUNT));
    let exclude_members = get("excludedAttributes").is_some_and(|e| {
        e.split(',')
            .any(|a| a.trim().eq_ignore_ascii_case("members"))
    });
    Ok(ListParams {
        filter: get("filter").map(str::to_string),
        start_index,
        count,
        exclude_members,
    })
}

/// Filters (evaluated over the rendered SCIM documents) and pages into a ListResponse.
fn list_response(mut docs: Vec<Value>, p: &ListParams, schema: &ResourceSchema) -> R<Value> {
    if let Some(f) = p.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        let f = parse_filter(f)?;
        f.validate(schema)?;
        let bound = f.bind(schema);
        docs.retain(|d| bound.matches(d));
    }
    let total = docs.len();
    let page: Vec<Value> = docs
        .into_iter()
        .skip(p.start_index - 1)
        .take(p.count)
        .collect();
    Ok(json!({
        "schemas": [urn::LIST_RESPONSE],
        "totalResults": total,
        "startIndex": p.start_index,
        "itemsPerPage": page.len(),
        "Resources": page,
    }))
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

fn user_doc(u: &User, st: &State, base: &str) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([urn::CORE_USER]));
    m.insert("id".into(), json!(u.id));
    if let Some(x) = &u.external_id {
        m.insert("externalId".into(), json!(x));
    }
    m.insert("userName".into(), json!(u.user_name));
    let mut name = Map::new();
    if let Some(f) = &u.first_name {
        name.insert("givenName".into(), json!(f));
    }
    if let Some(l) = &u.last_name {
        name.insert("familyName".into(), json!(l));
    }
    if !name.is_empty() {
        m.insert("name".into(), Value::Object(name));
    }
    m.insert(
        "emails".into(),
        json!([{"value": u.email, "type": "work", "primary": true}]),
    );
    m.insert("active".into(), json!(u.active));
    // Only the groups the user is explicitly a member of in state (built-in ones included).
    let groups: Vec<Value> = u
        .groups
        .iter()
        .filter_map(|g| st.groups.get(g))
        .map(|g| json!({"value": g.id, "display": g.name}))
        .collect();
    if !groups.is_empty() {
        m.insert("groups".into(), Value::Array(groups));
    }
    m.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": u.created,
            "lastModified": u.last_updated,
            "location": format!("{base}/Users/{}", u.id),
        }),
    );
    Value::Object(m)
}

/// The writable user attributes Sisense can hold, read from a SCIM User document (a POST or PUT
/// body, or the result of a PATCH).
struct UserFields {
    user_name: String,
    given: Option<String>,
    family: Option<String>,
    email: String,
    /// None: not given (PUT keeps the current value, POST defaults to true).
    active: Option<bool>,
    external_id: Option<String>,
}

fn user_fields(doc: &Value) -> R<UserFields> {
    let m = doc
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a User must be a JSON object"))?;
    let user_name = opt_string(m, "userName")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("'userName' is required"))?;
    let (given, family) = match get_ci(m, "name") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(n)) => (opt_string(n, "givenName")?, opt_string(n, "familyName")?),
        Some(_) => return Err(ScimError::invalid_value("'name' must be an object")),
    };
    let emails: Vec<&Map<String, Value>> = match get_ci(m, "emails") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| {
                e.as_object()
                    .ok_or_else(|| ScimError::invalid_value("'emails' elements must be objects"))
            })
            .collect::<R<_>>()?,
        Some(Value::Object(o)) => vec![o],
        Some(_) => return Err(ScimError::invalid_value("'emails' must be an array")),
    };
    let value_of = |e: &Map<String, Value>| -> Option<String> {
        get_ci(e, "value")
            .and_then(Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
    };
    let primary = emails
        .iter()
        .find(|e| get_ci(e, "primary").and_then(parse_bool) == Some(true))
        .and_then(|e| value_of(e));
    let email = primary
        .or_else(|| emails.iter().find_map(|e| value_of(e)))
        .or_else(|| user_name.contains('@').then(|| user_name.clone()))
        .ok_or_else(|| {
            ScimError::invalid_value(
                "an email is required (emails[].value, or a userName that is an email address)",
            )
        })?;
    if !looks_like_email(&email) {
        return Err(ScimError::invalid_value(format!(
            "'{email}' is not an email address"
        )));
    }
    let active = match get_ci(m, "active") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            parse_bool(v).ok_or_else(|| ScimError::invalid_value("'active' must be a boolean"))?,
        ),
    };
    Ok(UserFields {
        user_name,
        given,
        family,
        email,
        active,
        external_id: opt_string(m, "externalId")?,
    })
}

/// Sisense's uniqueness rule (REST 2004), as a SCIM 409: userName and email, ignoring case,
/// across both fields.
fn check_unique(st: &State, f: &UserFields, except: Option<&str>) -> R<()> {
    let taken = |o: &User| {
        Some(o.id.as_str()) != except
            && [&o.user_name, &o.email]
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&f.user_name) || x.eq_ignore_ascii_case(&f.email))
    };
    if st.users.values().any(taken) {
        return Err(ScimError::uniqueness(format!(
            "a user with userName '{}' or email '{}' already exists",
            f.user_name, f.email
        )));
    }
    Ok(())
}

fn write_user(s: &Sisense, u: &mut User, f: UserFields) {
    u.user_name = f.user_name;
    u.first_name = f.given;
    u.last_name = f.family;
    u.email = f.email;
    if let Some(a) = f.active {
        u.active = a;
    }
    u.external_id = f.external_id;
    u.last_updated = now();
    if !u.active {
        // As the REST PATCH: a deactivated user's sessions end.
        let id = u.id.clone();
        s.sessions.revoke_where(|x| *x == id);
    }
}

async fn list_users(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let p = list_params(&req)?;
        let base = base_url(&req);
        let st = s.state.read();
        let docs: Vec<Value> = st
            .users_in_order()
            .map(|u| user_doc(u, &st, &base))
            .collect();
        drop(st);
        Ok(scim_json(
            StatusCode::OK,
            &list_response(docs, &p, &USER_SCHEMA)?,
        ))
    })
}

async fn get_user(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let id = path_id(&req);
        let st = s.state.read();
        let u = st.users.get(&id).ok_or_else(|| user_not_found(&id))?;
        Ok(scim_json(
            StatusCode::OK,
            &user_doc(u, &st, &base_url(&req)),
        ))
    })
}

async fn post_user(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let f = user_fields(&parse_body(&req, &body)?)?;
        let mut st = s.state.write();
        check_unique(&st, &f, None)?;
        let role_id = st
            .roles
            .iter()
            .find(|r| r.name == DEFAULT_ROLE_UNVERIFIED)
            .map(|r| r.id.clone())
            .ok_or_else(|| ScimError::internal("the default role is missing"))?;
        let ts = now();
        let mut u = User {
            id: s.ids.hex(24),
            email: String::new(),
            user_name: String::new(),
            first_name: None,
            last_name: None,
            role_id,
            active: true,
            groups: Vec::new(),
            preferences: default_preferences(),
            ui_settings: json!({}),
            password: None,
            created: ts.clone(),
            last_updated: ts,
            last_login: None,
            external_id: None,
        };
        write_user(&s, &mut u, f);
        u.last_updated = u.created.clone();
        let base = base_url(&req);
        let doc = user_doc(&u, &st, &base);
        let location = format!("{base}/Users/{}", u.id);
        insert_user(&mut st, u);
        let mut r = scim_json(StatusCode::CREATED, &doc);
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Ok(r)
    })
}

async fn put_user(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let id = path_id(&req);
        let v = parse_body(&req, &body)?;
        let mut st = s.state.write();
        if !st.users.contains_key(&id) {
            return Err(user_not_found(&id));
        }
        let f = user_fields(&v)?;
        check_unique(&st, &f, Some(&id))?;
        let mut u = st.users[&id].clone();
        write_user(&s, &mut u, f);
        let doc = user_doc(&u, &st, &base_url(&req));
        st.users.insert(id, u);
        Ok(scim_json(StatusCode::OK, &doc))
    })
}

/// RFC 7644 §3.5.2 on the rendered document (crate::scim::patch, IdP-compatible mode: Okta's
/// and Entra's dialects, op names in any case, `"False"`), then the result written back.
/// Atomic: every check runs before the state is touched.
async fn patch_user(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let id = path_id(&req);
        let patch = PatchRequest::from_json(&parse_body(&req, &body)?)?;
        let base = base_url(&req);
        let mut st = s.state.write();
        let u = st.users.get(&id).ok_or_else(|| user_not_found(&id))?;
        let doc = user_doc(u, &st, &base);
        let out = apply_patch(&doc, &patch, &USER_SCHEMA, PatchOptions::default())?;
        let f = user_fields(&out.resource)?;
        check_unique(&st, &f, Some(&id))?;
        let mut u = u.clone();
        write_user(&s, &mut u, f);
        let doc = user_doc(&u, &st, &base);
        st.users.insert(id, u);
        Ok(scim_json(StatusCode::OK, &doc))
    })
}

/// Deletes exactly as REST DELETE does: the super user cannot be deleted (400 `mutability`).
async fn delete_user(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let id = path_id(&req);
        let mut st = s.state.write();
        let u = st.users.get(&id).ok_or_else(|| user_not_found(&id))?;
        if is_undeletable(&st, u) {
            return Err(ScimError::mutability("the super user cannot be deleted"));
        }
        st.remove_user(&id);
        s.sessions.revoke_where(|x| *x == id);
        Ok(HttpResponse::NoContent().finish())
    })
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

fn member_ids(st: &State, gid: &str) -> Vec<String> {
    st.users_in_order()
        .filter(|u| u.groups.iter().any(|g| g == gid))
        .map(|u| u.id.clone())
        .collect()
}

fn member_json(u: &User) -> Value {
    json!({"value": u.id, "display": u.user_name, "type": "User"})
}

fn group_doc(g: &Group, st: &State, base: &str, members: bool) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([urn::CORE_GROUP]));
    m.insert("id".into(), json!(g.id));
    m.insert("displayName".into(), json!(g.name));
    if members {
        let ms: Vec<Value> = st
            .users_in_order()
            .filter(|u| u.groups.contains(&g.id))
            .map(member_json)
            .collect();
        if !ms.is_empty() {
            m.insert("members".into(), Value::Array(ms));
        }
    }
    m.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": g.created,
            "lastModified": g.last_updated,
            "location": format!("{base}/Groups/{}", g.id),
        }),
    );
    Value::Object(m)
}

/// User ids of member elements (`[{"value": id}, ...]`); an unknown id → 400 invalidValue.
fn resolve_members<'a>(
    st: &State,
    elements: impl IntoIterator<Item = &'a Value>,
) -> R<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for e in elements {
        let id = e
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::invalid_value("a member needs a 'value' (a user id)"))?;
        if !st.users.contains_key(id) {
            return Err(ScimError::invalid_value(format!(
                "member {id} is not a user"
            )));
        }
        if !out.iter().any(|x| x == id) {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// Makes `gid`'s members exactly `members`, through the users' `groups` arrays.
fn write_members(st: &mut State, gid: &str, members: &[String]) {
    let ts = now();
    for u in st.users.values_mut() {
        let want = members.contains(&u.id);
        let has = u.groups.iter().any(|g| g == gid);
        if want && !has {
            u.groups.push(gid.to_string());
            u.last_updated = ts.clone();
        } else if !want && has {
            u.groups.retain(|g| g != gid);
            u.last_updated = ts.clone();
        }
    }
}

async fn list_groups(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let p = list_params(&req)?;
        let base = base_url(&req);
        let st = s.state.read();
        let docs: Vec<Value> = st
            .groups_in_order()
            .map(|g| group_doc(g, &st, &base, true))
            .collect();
        drop(st);
        let mut out = list_response(docs, &p, &GROUP_SCHEMA)?;
        if p.exclude_members {
            if let Some(rs) = out["Resources"].as_array_mut() {
                for r in rs {
                    if let Some(o) = r.as_object_mut() {
                        o.remove("members");
                    }
                }
            }
        }
        Ok(scim_json(StatusCode::OK, &out))
    })
}

async fn post_group(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let v = parse_body(&req, &body)?;
        let m = v
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("a Group must be a JSON object"))?;
        let name = opt_string(m, "displayName")?
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| ScimError::invalid_value("'displayName' is required"))?;
        let mut st = s.state.write();
        if group_name_taken(&st, &name, None) {
            return Err(ScimError::uniqueness(format!(
                "a group named '{name}' already exists"
            )));
        }
        let members = match get_ci(m, "members") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => resolve_members(&st, a)?,
            Some(_) => return Err(ScimError::invalid_value("'members' must be an array")),
        };
        let ts = now();
        let g = Group {
            id: s.ids.hex(24),
            name,
            role_id: None,
            mail: None,
            created: ts.clone(),
            last_updated: ts,
        };
        let gid = g.id.clone();
        insert_group(&mut st, g);
        write_members(&mut st, &gid, &members);
        let base = base_url(&req);
        let doc = group_doc(&st.groups[&gid], &st, &base, true);
        let mut r = scim_json(StatusCode::CREATED, &doc);
        if let Ok(v) = HeaderValue::from_str(&format!("{base}/Groups/{gid}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Ok(r)
    })
}

/// Membership operations arrive from the PATCH engine as [`MemberOp`]s (members are kept
/// outside the document, in the users' `groups`), applied in order to the current member set;
/// the rename comes back in the patched document. Atomic: nothing is written before every
/// operation has been checked.
async fn patch_group(s: web::Data<Sisense>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let id = path_id(&req);
        let patch = PatchRequest::from_json(&parse_body(&req, &body)?)?;
        let base = base_url(&req);
        let mut st = s.state.write();
        let g = st.groups.get(&id).ok_or_else(|| group_not_found(&id))?;
        let doc = group_doc(g, &st, &base, false);
        let opts = PatchOptions {
            external_members: true,
            ..PatchOptions::default()
        };
        let out = apply_patch(&doc, &patch, &GROUP_SCHEMA, opts)?;
        let name = out.resource["displayName"]
            .as_str()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| ScimError::mutability("'displayName' is required"))?
            .to_string();
        let renamed = name != g.name;
        if renamed && group_name_taken(&st, &name, Some(&id)) {
            return Err(ScimError::uniqueness(format!(
                "a group named '{name}' already exists"
            )));
        }
        let before = member_ids(&st, &id);
        let mut members = before.clone();
        let members_def = GROUP_SCHEMA
            .resolve(None, "members")
            .map(|r| r.def)
            .ok_or_else(|| ScimError::internal("the Group schema has no members"))?;
        for op in &out.delta.member_ops {
            match op {
                MemberOp::Add(els) => {
                    for m in resolve_members(&st, els)? {
                        if !members.contains(&m) {
                            members.push(m);
                        }
                    }
                }
                MemberOp::Remove(ids) => members.retain(|m| !ids.contains(m)),
                MemberOp::RemoveWhere(f) => members.retain(|m| {
                    st.users
                        .get(m)
                        .is_none_or(|u| !f.matches_element(&member_json(u), members_def))
                }),
                MemberOp::RemoveAll => members.clear(),
                MemberOp::Replace(els) => members = resolve_members(&st, els)?,
            }
        }
        let members_changed = {
            let mut a = before.clone();
            let mut b = members.clone();
            a.sort();
            b.sort();
            a != b
        };
        if renamed || members_changed {
            let g = st.groups.get_mut(&id).expect("looked up above");
            g.name = name;
            g.last_updated = now();
        }
        if members_changed {
            write_members(&mut st, &id, &members);
        }
        if s.scim_group_patch_resource {
            let g = &st.groups[&id];
            Ok(scim_json(StatusCode::OK, &group_doc(g, &st, &base, true)))
        } else {
            Ok(HttpResponse::NoContent().finish())
        }
    })
}

/// As REST DELETE: the group goes, and leaves its users' `groups`.
async fn delete_group(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let id = path_id(&req);
        let mut st = s.state.write();
        if !st.groups.contains_key(&id) {
            return Err(group_not_found(&id));
        }
        remove_group(&mut st, &id);
        Ok(HttpResponse::NoContent().finish())
    })
}

/// Any operation outside the guide's list: 405 with a SCIM error naming it, and `Allow` with
/// the methods the path does support (none for paths outside /Users and /Groups).
async fn unsupported(s: web::Data<Sisense>, req: HttpRequest) -> HttpResponse {
    run(|| {
        authenticate(&s, &req)?;
        let pattern = req.match_pattern().unwrap_or_default();
        let rel = pattern.strip_prefix(BASE).unwrap_or(&pattern);
        let (shown, allow) = match rel {
            "/Users" | "/Groups" => (rel.to_string(), "GET, POST"),
            "/Users/{id}" => (rel.to_string(), "GET, PUT, PATCH, DELETE"),
            "/Groups/{id}" => (rel.to_string(), "PATCH, DELETE"),
            _ => (
                req.path()
                    .strip_prefix(BASE)
                    .unwrap_or(req.path())
                    .to_string(),
                "",
            ),
        };
        let e = ScimError::method_not_allowed(format!(
            "{} {shown} is not a supported operation of the Sisense SCIM API (supported: GET/POST \
             /Users, GET/PUT/PATCH/DELETE /Users/{{id}}, GET/POST /Groups, PATCH/DELETE \
             /Groups/{{id}})",
            req.method()
        ));
        let mut r = scim_error(e);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        Ok(r)
    })
}

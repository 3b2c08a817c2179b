//! The JSON admin API under `/admin/api/` (CONTRACT §5). Every endpoint needs an admin token
//! (or a console session); every state change is a POST, and a session's POST carries its CSRF
//! token. Query parameters are parsed strictly: an unknown or malformed one is a 400 naming it,
//! never a 5xx.
// A handler's `Err` is the HTTP answer itself (a 4xx to send), not an error to propagate:
// boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use super::{bad_request, not_found, server_error, AdminState};
use crate::engine::state::{AppliedUser, Records};
use crate::engine::Engine;
use crate::scim::schema::ResourceKind;
use crate::server::AppState;
use crate::store::directory::str_at;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// Rows one page may hold at most.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/api/tenants", web::get().to(tenants))
        .route("/admin/api/tenants/{tenant}", web::get().to(tenant))
        .route("/admin/api/tenants/{tenant}/users", web::get().to(users))
        .route("/admin/api/tenants/{tenant}/groups", web::get().to(groups));
}

/// Runs `work` (a store scan) off the async workers; a failure is a 500 naming it.
pub async fn off_thread<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, HttpResponse>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match web::block(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(server_error(e)),
        Err(e) => Err(server_error(e)),
    }
}

/// Parses a query string into `T`, refusing unknown keys and bad values with a 400.
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, HttpResponse> {
    serde_urlencoded::from_str::<T>(req.query_string())
        .map_err(|e| bad_request(format!("bad query: {e}")))
}

/// `offset`/`limit` of a paged listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    pub offset: usize,
    pub limit: Option<usize>,
    /// A case-insensitive substring of the name (userName / displayName).
    pub q: Option<String>,
}

/// The deepest offset a page may ask for (beyond any directory; keeps `offset + limit` sane).
pub const MAX_OFFSET: usize = 1_000_000_000;

impl PageQuery {
    pub fn limit(&self) -> Result<usize, HttpResponse> {
        if self.offset > MAX_OFFSET {
            return Err(bad_request(format!("offset must be at most {MAX_OFFSET}")));
        }
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(bad_request(format!("limit must be 1..{MAX_PAGE}"))),
        }
    }
}

/// The engine of a configured vendor tenant, or the 404 to answer.
pub fn engine_of(app: &AppState, tenant: &str) -> Result<Arc<Engine>, HttpResponse> {
    let t = app
        .tenant(tenant)
        .ok_or_else(|| not_found("no such tenant"))?;
    t.connector
        .engine()
        .ok_or_else(|| not_found("this tenant keeps its resources locally; it has no vendor"))
}

/// One tenant's summary: the dashboard's tenants table and `GET /admin/api/tenants`.
#[derive(Debug, Serialize)]
pub struct TenantSummary {
    pub id: String,
    pub vendor: String,
    pub dry_run: bool,
    /// The vendor is reachable and signed in.
    pub ready: bool,
    /// Why it is not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_error: Option<String>,
    pub users: u64,
    pub groups: u64,
    pub outbox_pending: u64,
    pub outbox_failed: u64,
    /// Seconds since the oldest pending change was made.
    pub oldest_pending_s: f64,
    /// The last sync and the one running, when the tenant has an engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Value>,
}

pub async fn summaries(
    app: &AppState,
    admin: &AdminState,
    only: Option<&str>,
) -> Vec<TenantSummary> {
    let tenants = app.tenants();
    let view = admin.view();
    let mut out = Vec::with_capacity(tenants.len());
    for (id, t) in tenants.iter() {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let settings = view.tenants.get(id);
        let vendor_error = t.connector.vendor_status().await.err();
        let engine = t.connector.engine();
        let stats = t.connector.engine_stats().unwrap_or_default();
        // A key scan per tenant: off the async workers, which also answer `/metrics`.
        let (users, groups) = match engine.clone() {
            Some(e) => off_thread(move || {
                Ok::<_, std::convert::Infallible>((
                    e.directory().ids(ResourceKind::User).count() as u64,
                    e.directory().ids(ResourceKind::Group).count() as u64,
                ))
            })
            .await
            .unwrap_or((0, 0)),
            None => (0, 0),
        };
        out.push(TenantSummary {
            id: id.clone(),
            vendor: settings.map(|s| s.vendor).unwrap_or("local").to_string(),
            dry_run: settings.is_some_and(|s| s.dry_run),
            ready: vendor_error.is_none(),
            vendor_error,
            users,
            groups,
            outbox_pending: stats.pending,
            outbox_failed: stats.failed,
            oldest_pending_s: stats.oldest_pending_s,
            sync: engine.as_ref().map(|e| sync_json(e)),
            sweep: settings
                .and_then(|s| s.sweep.as_ref())
                .map(|s| json!({"days": s.days, "apply": s.apply, "every_s": s.every.as_secs()})),
        });
    }
    out
}

/// The engine's sync (a full read of the vendor directory): the running one's progress, or
/// the last one's end.
pub fn sync_json(engine: &Engine) -> Value {
    serde_json::to_value(engine.sync_progress()).unwrap_or(Value::Null)
}

async fn tenants(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    or_answer!(query::<NoQuery>(&req));
    HttpResponse::Ok().json(summaries(&app, &admin, None).await)
}

/// An endpoint that takes no query parameters (any given is a 400).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

async fn tenant(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    or_answer!(query::<NoQuery>(&req));
    let id = path.into_inner();
    if app.tenant(&id).is_none() {
        return not_found("no such tenant");
    }
    let all = summaries(&app, &admin, Some(&id)).await;
    match all.into_iter().find(|s| s.id == id) {
        Some(s) => HttpResponse::Ok().json(s),
        None => not_found("no such tenant"),
    }
}

/// Where a user's or group's desired state stands at the vendor.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Delivery {
    /// The vendor holds what the IdP asked.
    Applied,
    /// Held by a dry-run tenant: not sent.
    DryRun,
    /// Waiting for (another) try.
    Pending {
        attempts: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    /// Refused by the vendor for good, with its reason.
    Failed { reason: String },
}

pub fn delivery_of(engine: &Engine, kind: ResourceKind, sid: &str) -> Result<Delivery, String> {
    let entry = Records(engine.directory())
        .outbox(kind, sid)
        .map_err(|e| e.to_string())?;
    Ok(match entry {
        None => Delivery::Applied,
        Some(e) if e.failed => Delivery::Failed {
            reason: e.last_error.unwrap_or_default(),
        },
        Some(_) if engine.settings.dry_run => Delivery::DryRun,
        Some(e) => Delivery::Pending {
            attempts: e.attempts,
            last_error: e.last_error,
        },
    })
}

/// A user as the console lists it: the IdP's side and the vendor's.
#[derive(Debug, Serialize)]
pub struct UserRow {
    pub id: String,
    pub user_name: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_login: Option<String>,
    pub managed: &'static str,
    pub delivery: Delivery,
}

fn user_row(engine: &Engine, sid: &str, doc: &Value) -> Result<UserRow, String> {
    let rec = Records(engine.directory());
    let applied: Option<AppliedUser> = rec.applied_user(sid).map_err(|e| e.to_string())?;
    let roles = engine.roles.read().clone();
    let vendor_role = applied.as_ref().and_then(|a| a.role.as_deref()).map(|r| {
        roles
            .as_ref()
            .map(|t| t.name(r))
            .unwrap_or_else(|| r.to_string())
    });
    Ok(UserRow {
        id: sid.to_string(),
        user_name: str_at(doc, "userName").unwrap_or_default().to_string(),
        active: doc.get("active").and_then(Value::as_bool) != Some(false),
        vendor_id: applied.as_ref().map(|a| a.vendor_id.clone()),
        vendor_role,
        last_login: applied.as_ref().and_then(|a| a.last_login.clone()),
        managed: crate::engine::state::Managed::of(engine.directory(), sid)
            .map_err(|e| e.to_string())?
            .as_str(),
        delivery: delivery_of(engine, ResourceKind::User, sid)?,
    })
}

/// A page of ids of `kind`, optionally those whose name contains `q`; and the total.
fn page_ids(
    engine: &Engine,
    kind: ResourceKind,
    name_attr: &str,
    page: &PageQuery,
    limit: usize,
) -> Result<(Vec<(String, Value)>, usize), String> {
    let dir = engine.directory();
    let q = page
        .q
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let mut total = 0usize;
    let mut rows = Vec::new();
    for id in dir.ids(kind) {
        let id = id.map_err(|e| e.to_string())?;
        if let Some(q) = &q {
            let Some(doc) = dir.load(kind, &id).map_err(|e| e.to_string())? else {
                continue;
            };
            if !str_at(&doc, name_attr).is_some_and(|n| n.to_lowercase().contains(q.as_str())) {
                continue;
            }
            if total >= page.offset && rows.len() < limit {
                rows.push((id, doc));
            }
        } else if total >= page.offset && rows.len() < limit {
            if let Some(doc) = dir.load(kind, &id).map_err(|e| e.to_string())? {
                rows.push((id, doc));
            }
        }
        total += 1;
    }
    Ok((rows, total))
}

pub fn users_page(engine: &Engine, page: &PageQuery) -> Result<(Vec<UserRow>, usize), String> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let (ids, total) = page_ids(engine, ResourceKind::User, "userName", page, limit)?;
    let rows = ids
        .iter()
        .map(|(id, doc)| user_row(engine, id, doc))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rows, total))
}

#[derive(Debug, Serialize)]
pub struct GroupRow {
    pub id: String,
    pub display_name: String,
    pub members: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    pub delivery: Delivery,
}

pub fn groups_page(engine: &Engine, page: &PageQuery) -> Result<(Vec<GroupRow>, usize), String> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let (ids, total) = page_ids(engine, ResourceKind::Group, "displayName", page, limit)?;
    let dir = engine.directory();
    let mut rows = Vec::with_capacity(ids.len());
    for (id, doc) in ids {
        rows.push(GroupRow {
            display_name: str_at(&doc, "displayName").unwrap_or_default().to_string(),
            members: dir.member_ids(&id).map_err(|e| e.to_string())?.len(),
            vendor_id: dir
                .vendor_id(ResourceKind::Group, &id)
                .map_err(|e| e.to_string())?,
            delivery: delivery_of(engine, ResourceKind::Group, &id)?,
            id,
        });
    }
    Ok((rows, total))
}

async fn users(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    let page: PageQuery = or_answer!(query(&req));
    or_answer!(page.limit());
    let engine = or_answer!(engine_of(&app, &path));
    let (rows, total) = or_answer!(off_thread(move || users_page(&engine, &page)).await);
    HttpResponse::Ok().json(json!({"total": total, "users": rows}))
}

async fn groups(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    let page: PageQuery = or_answer!(query(&req));
    or_answer!(page.limit());
    let engine = or_answer!(engine_of(&app, &path));
    let (rows, total) = or_answer!(off_thread(move || groups_page(&engine, &page)).await);
    HttpResponse::Ok().json(json!({"total": total, "groups": rows}))
}

//! The admin console at `/admin` (issue 13): server-rendered HTML, a stylesheet and a little
//! JS, all embedded in the binary (no build chain). It reads through the same functions as
//! the JSON API, so the console and the CLI never disagree.
//!
//! - Login with an admin token opens a session (`auth`): an `HttpOnly; SameSite=Strict` cookie
//!   scoped to `/admin`. Every action is a POST carrying the session's CSRF token.
//! - Pages are sent with a strict Content-Security-Policy (no inline script or style), no
//!   framing and no caching: they show personal data.
//! - Tenant pages are paged (100 rows), so one opens fast at 100,000 users.
// A handler's `Err` is the HTTP answer itself (a 4xx to send), not an error to propagate:
// boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use super::api::{self, Delivery, PageQuery};
use super::auth::{Principal, SESSION_COOKIE};
use super::AdminState;
use crate::engine::sweep::{dormant_days_problem, DORMANT_DAYS};
use crate::server::AppState;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::fmt::Write as _;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/icon.svg");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(dashboard))
        .route("/admin/", web::get().to(dashboard))
        .route("/admin/login", web::get().to(login_page))
        .route("/admin/login", web::post().to(login))
        .route("/admin/logout", web::post().to(logout))
        .route("/admin/assets/console.css", web::get().to(css))
        .route("/admin/assets/console.js", web::get().to(js))
        .route("/admin/assets/icon.svg", web::get().to(icon))
        // Browsers ask for it whatever the page says.
        .route("/favicon.ico", web::get().to(icon))
        .route("/admin/tenants/{tenant}", web::get().to(tenant_page))
        .route(
            "/admin/tenants/{tenant}/{action}",
            web::post().to(tenant_action),
        );
}

/// HTML-escapes text for an element or a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn page(title: &str, csrf: Option<&str>, body: &str) -> HttpResponse {
    page_with(HttpResponse::Ok(), title, csrf, body)
}

/// A console page with the status of `status` (a 400 page for a bad filter).
fn page_with(
    status: actix_web::HttpResponseBuilder,
    title: &str,
    csrf: Option<&str>,
    body: &str,
) -> HttpResponse {
    let nav = match csrf {
        Some(csrf) => format!(
            r#"<nav><a href="/admin">Tenants</a></nav>
<form method="post" action="/admin/logout"><input type="hidden" name="csrf" value="{}"><button type="submit">Log out</button></form>"#,
            esc(csrf)
        ),
        None => String::new(),
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · scim-bridge admin</title>
<link rel="icon" href="/admin/assets/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/admin/assets/console.css">
<script src="/admin/assets/console.js" defer></script>
</head><body>
<header><h1>scim-bridge admin</h1>{nav}</header>
<main>
{body}
</main></body></html>"#,
        title = esc(title),
    );
    html_response(status, html)
}

fn html_response(mut b: actix_web::HttpResponseBuilder, html: String) -> HttpResponse {
    b.content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

fn to_login() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/admin/login"))
        .finish()
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// The console's session, or the redirect to the login page. A bearer works too (scripts).
fn session(req: &HttpRequest, admin: &AdminState) -> Result<String, HttpResponse> {
    match admin.authorize(req) {
        Ok(Principal::Session { csrf }) => Ok(csrf),
        Ok(Principal::Bearer) => Ok(String::new()),
        Err(r) if r.status() == actix_web::http::StatusCode::TOO_MANY_REQUESTS => Err(r),
        Err(_) => Err(to_login()),
    }
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(CSS)
}

async fn icon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::CACHE_CONTROL, "max-age=86400"))
        .body(ICON)
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(JS)
}

async fn login_page(admin: web::Data<AdminState>) -> HttpResponse {
    login_form(&admin, None)
}

fn login_form(admin: &AdminState, error: Option<&str>) -> HttpResponse {
    let note = if admin.auth.has_tokens() {
        String::new()
    } else {
        r#"<p class="flash error">No admin token is configured: set <code>[admin] tokens</code> (or <code>SCIM_BRIDGE_ADMIN_TOKEN</code>) and restart.</p>"#.to_string()
    };
    let error = error
        .map(|e| format!(r#"<p class="flash error" id="login-error">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<div class="login"><h2>Sign in</h2>{note}{error}
<form method="post" action="/admin/login">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button>
</form></div>"#
    );
    page("Sign in", None, &body)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    req: HttpRequest,
    admin: web::Data<AdminState>,
    form: Result<web::Form<LoginForm>, actix_web::Error>,
) -> HttpResponse {
    let Ok(form) = form else {
        return login_form(&admin, Some("Enter the admin token."));
    };
    // The token goes through the same check (and failure count) as a bearer.
    let now = std::time::Instant::now();
    let who = crate::server::forwarded::client_key(&req, &admin.trusted_proxies);
    if let Some(ip) = who {
        if let Some(wait) = admin.failures.refused(ip, "admin", now) {
            return HttpResponse::TooManyRequests()
                .insert_header((header::RETRY_AFTER, wait.to_string()))
                .body("too many failed sign-ins; retry later");
        }
    }
    if !admin.auth.is_admin_token(form.token.trim()) {
        if let Some(ip) = who {
            admin.failures.record(ip, "admin", now);
        }
        tracing::warn!("admin console: a sign-in with a wrong token");
        return login_form(&admin, Some("That is not an admin token."));
    }
    let (id, _) = admin.auth.open_session();
    let cookie = Cookie::build(SESSION_COOKIE, id)
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        // `Secure` when the browser reached us over HTTPS: the request's own scheme, or a
        // trusted proxy's forwarded one (never a header from just anyone).
        .secure(
            crate::server::forwarded::origin(&req, &admin.trusted_proxies).starts_with("https:"),
        )
        .finish();
    tracing::info!("admin console: signed in");
    HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, "/admin"))
        .finish()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
    #[serde(flatten)]
    fields: std::collections::BTreeMap<String, String>,
}

async fn logout(
    req: HttpRequest,
    admin: web::Data<AdminState>,
    form: Option<web::Form<CsrfForm>>,
) -> HttpResponse {
    let csrf = form.as_ref().and_then(|f| f.csrf.clone());
    or_answer!(admin.authorize_action(&req, csrf.as_deref()));
    if let Some(c) = req.cookie(SESSION_COOKIE) {
        admin.auth.close_session(c.value());
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/admin").finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/admin/login"))
        .finish()
}

async fn dashboard(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    let csrf = or_answer!(session(&req, &admin));
    let rows = api::summaries(&app, &admin, None).await;
    let mut body = String::from(
        r#"<h2>Tenants</h2>
<table id="tenants"><thead><tr><th>Tenant</th><th>Vendor</th><th>Vendor status</th><th>Users</th><th>Groups</th><th>Pending</th><th>Failed</th><th>Oldest pending</th><th>Sync</th></tr></thead><tbody>
"#,
    );
    for t in &rows {
        let status = if t.ready {
            r#"<span class="ok">ready</span>"#.to_string()
        } else {
            format!(
                r#"<span class="bad" title="{}">unavailable</span>"#,
                esc(t.vendor_error.as_deref().unwrap_or_default())
            )
        };
        let dry = if t.dry_run {
            r#" <span class="warn">(dry run)</span>"#
        } else {
            ""
        };
        let _ = writeln!(
            body,
            r#"<tr data-tenant="{id}"><td><a href="/admin/tenants/{eid}">{id}</a>{dry}</td><td>{vendor}</td><td data-field="ready">{status}</td><td class="num" data-field="users">{users}</td><td class="num" data-field="groups">{groups}</td><td class="num" data-field="pending">{pending}</td><td class="num" data-field="failed">{failed}</td><td class="num" data-field="oldest">{oldest}</td><td data-field="sync">{sync}</td></tr>"#,
            id = esc(&t.id),
            eid = enc(&t.id),
            vendor = esc(&t.vendor),
            users = t.users,
            groups = t.groups,
            pending = t.outbox_pending,
            failed = t.outbox_failed,
            oldest = if t.outbox_pending > 0 {
                format!("{} s", t.oldest_pending_s.round())
            } else {
                "-".into()
            },
            sync = esc(&sync_text(t.sync.as_ref())),
        );
    }
    body.push_str("</tbody></table>\n");
    // Audit exports and access reports under way, with their progress (the JS refreshes it).
    body.push_str(r#"<h2>Exports</h2><ul id="exports">"#);
    let exports = app.metrics.exports.snapshot();
    if exports.is_empty() {
        body.push_str(r#"<li class="muted">none running</li>"#);
    }
    for e in &exports {
        let _ = write!(
            body,
            r#"<li data-export="{}">{}</li>"#,
            e.id,
            esc(&e.text())
        );
    }
    body.push_str("</ul>\n");
    page("Tenants", Some(&csrf), &body)
}

/// The last sync, or the running one's progress, in words.
fn sync_text(sync: Option<&serde_json::Value>) -> String {
    let Some(s) = sync else {
        return "-".into();
    };
    if s["running"].as_bool() == Some(true) {
        let total = s["users_total"]
            .as_u64()
            .map(|t| format!(" / {t}"))
            .unwrap_or_default();
        return format!(
            "running: {}{total} users",
            s["users_seen"].as_u64().unwrap_or(0)
        );
    }
    match s["last_completed_at"].as_str() {
        Some(at) => format!("last {at}"),
        None => "not yet".into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabParams {
    pub tab: Option<String>,
    #[serde(default)]
    pub offset: usize,
    pub q: Option<String>,
    /// Audit filters.
    pub actor: Option<String>,
    pub event: Option<String>,
    /// Audit entries at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Dormant plan: the days without a sign-in.
    pub days: Option<u32>,
    /// The action just done (`retry`, `sync`, `sweep`) and how many objects it touched.
    pub done: Option<String>,
    pub n: Option<u64>,
}

const TABS: &[(&str, &str)] = &[
    ("users", "Users"),
    ("groups", "Groups"),
    ("audit", "Audit log"),
    ("access", "Access review"),
    ("dormant", "Dormant accounts"),
    ("plan", "Plan"),
];
const PAGE_ROWS: usize = 100;

async fn tenant_page(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    let csrf = or_answer!(session(&req, &admin));
    let q: TabParams = or_answer!(api::query(&req));
    let tenant = path.into_inner();
    let engine = or_answer!(api::engine_of(&app, &tenant));
    let tab = q.tab.as_deref().unwrap_or("users");
    if !TABS.iter().any(|(t, _)| *t == tab) {
        return super::bad_request("unknown tab");
    }
    if q.offset > api::MAX_OFFSET {
        return super::bad_request("offset too large");
    }
    if q.days.is_some_and(|d| !DORMANT_DAYS.contains(&d)) {
        return super::bad_request(dormant_days_problem("days"));
    }
    if tab == "audit" {
        // A filter typed by hand (a `since` that is no RFC 3339 time) is the operator's to
        // fix: a 400 page that says what is wrong, with the way back.
        if let Err(why) = super::governance::check_audit_filter(
            q.actor.as_deref(),
            q.event.as_deref(),
            q.q.as_deref(),
            q.since.as_deref(),
        ) {
            let body = format!(
                r#"<h2>Tenant {}</h2><p class="flash error" id="filter-error">Bad audit filter: {}</p><p><a href="/admin/tenants/{}?tab=audit">Back to the audit log</a></p>"#,
                esc(&tenant),
                esc(&why),
                enc(&tenant)
            );
            return page_with(
                HttpResponse::BadRequest(),
                &format!("Tenant {tenant}"),
                Some(&csrf),
                &body,
            );
        }
    }
    let et = enc(&tenant);
    let mut body = format!(
        r#"<h2>Tenant <span id="tenant-id">{}</span></h2>"#,
        esc(&tenant)
    );
    // What an action did, from a fixed set of messages: a crafted link can say nothing else.
    let done = match (q.done.as_deref(), q.n.unwrap_or(0)) {
        (Some("retry"), n) => Some(format!("{n} failed change(s) retried")),
        (Some("sync"), _) => Some("sync started".to_string()),
        (Some("sweep"), n) => Some(format!("sweep applied: {n} account(s) deactivated")),
        _ => None,
    };
    if let Some(done) = done {
        let _ = write!(body, r#"<p class="flash" id="flash">{}</p>"#, esc(&done));
    }
    let _ = write!(
        body,
        r#"<div class="bar">
<form method="post" action="/admin/tenants/{et}/retry" data-confirm="Retry every failed delivery of this tenant now?"><input type="hidden" name="csrf" value="{c}"><button type="submit" id="retry-failed">Retry failed</button></form>
<form method="post" action="/admin/tenants/{et}/sync" data-confirm="Read the vendor's whole directory now?"><input type="hidden" name="csrf" value="{c}"><button type="submit" id="sync-now">Sync now</button></form>
</div><nav class="tabs">"#,
        c = esc(&csrf)
    );
    for (t, label) in TABS {
        let _ = write!(
            body,
            r#"<a href="/admin/tenants/{et}?tab={t}"{}>{label}</a>"#,
            if *t == tab { r#" class="active""# } else { "" }
        );
    }
    body.push_str("</nav>\n");
    let app2 = app.clone();
    let admin2 = admin.clone();
    let csrf2 = csrf.clone();
    let tenant2 = tenant.clone();
    let rendered = web::block(move || {
        render_tab(&app2, &admin2, &engine, &tenant2, tab_owned(&q), &q, &csrf2)
    })
    .await;
    match rendered {
        Ok(Ok(html)) => body.push_str(&html),
        Ok(Err(e)) => return super::server_error(e),
        Err(e) => return super::server_error(e),
    }
    page(&format!("Tenant {tenant}"), Some(&csrf), &body)
}

fn tab_owned(q: &TabParams) -> String {
    q.tab.clone().unwrap_or_else(|| "users".into())
}

/// The HTML of one tab of a tenant page.
fn render_tab(
    app: &AppState,
    admin: &AdminState,
    engine: &crate::engine::Engine,
    tenant: &str,
    tab: String,
    q: &TabParams,
    csrf: &str,
) -> Result<String, String> {
    let page = PageQuery {
        offset: q.offset,
        limit: Some(PAGE_ROWS),
        q: q.q.clone(),
    };
    let et = enc(tenant);
    let mut out = String::new();
    match tab.as_str() {
        "users" => {
            let (rows, total) = api::users_page(engine, &page)?;
            search_bar(
                &mut out,
                tenant,
                "users",
                q.q.as_deref(),
                "userName contains",
            );
            out.push_str(r#"<table id="users"><thead><tr><th>userName</th><th>Active</th><th>Vendor role</th><th>Last login</th><th>Managed</th><th>Delivery</th><th>SCIM id</th></tr></thead><tbody>"#);
            for r in &rows {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&r.user_name),
                    if r.active { "yes" } else { "no" },
                    esc(r.vendor_role.as_deref().unwrap_or("-")),
                    esc(r.last_login.as_deref().unwrap_or("-")),
                    r.managed,
                    delivery_cell(&r.delivery, &et, "users", &r.id, &r.user_name, csrf),
                    esc(&r.id)
                );
            }
            out.push_str("</tbody></table>");
            pager(&mut out, &et, "users", q, total);
        }
        "groups" => {
            let (rows, total) = api::groups_page(engine, &page)?;
            search_bar(
                &mut out,
                tenant,
                "groups",
                q.q.as_deref(),
                "displayName contains",
            );
            out.push_str(r#"<table id="groups"><thead><tr><th>displayName</th><th>Members</th><th>Vendor id</th><th>Delivery</th><th>SCIM id</th></tr></thead><tbody>"#);
            for r in &rows {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&r.display_name),
                    r.members,
                    esc(r.vendor_id.as_deref().unwrap_or("-")),
                    delivery_cell(&r.delivery, &et, "groups", &r.id, &r.display_name, csrf),
                    esc(&r.id)
                );
            }
            out.push_str("</tbody></table>");
            pager(&mut out, &et, "groups", q, total);
        }
        other => super::governance::governance_tab(
            app, admin, engine, tenant, other, q.offset, q, csrf, &mut out,
        )?,
    }
    Ok(out)
}

fn search_bar(out: &mut String, tenant: &str, tab: &str, q: Option<&str>, label: &str) {
    let _ = write!(
        out,
        r#"<form class="bar" method="get" action="/admin/tenants/{}"><input type="hidden" name="tab" value="{tab}"><label>{label}<input name="q" value="{}"></label><button type="submit">Search</button></form>"#,
        enc(tenant),
        esc(q.unwrap_or_default())
    );
}

fn pager(out: &mut String, et: &str, tab: &str, q: &TabParams, total: usize) {
    let qs =
        q.q.as_deref()
            .map(|s| format!("&q={}", enc(s)))
            .unwrap_or_default();
    pager_with(out, et, tab, q.offset, total, &qs);
}

/// Previous / next links of a 100-row page; `extra` is the rest of the query (`&q=…`).
pub fn pager_with(out: &mut String, et: &str, tab: &str, offset: usize, total: usize, extra: &str) {
    let end = (offset + PAGE_ROWS).min(total);
    let _ = write!(
        out,
        r#"<div class="pager"><span id="page-range">{}–{} of {}</span>"#,
        if total == 0 { 0 } else { offset + 1 },
        end,
        total
    );
    if offset > 0 {
        let _ = write!(
            out,
            r#"<a href="/admin/tenants/{et}?tab={tab}&offset={}{extra}">« previous</a>"#,
            offset.saturating_sub(PAGE_ROWS)
        );
    }
    if end < total {
        let _ = write!(
            out,
            r#"<a href="/admin/tenants/{et}?tab={tab}&offset={end}{extra}" id="next-page">next »</a>"#
        );
    }
    out.push_str("</div>");
}

/// The delivery column of a user or group row: its status and, when the vendor refused it, a
/// Retry button for that one object (a POST with the session's CSRF token, confirmed in JS,
/// run by the engine as the operator's retry and audited as such).
fn delivery_cell(d: &Delivery, et: &str, kind: &str, id: &str, name: &str, csrf: &str) -> String {
    let mut html = delivery_html(d);
    if matches!(d, Delivery::Failed { .. }) {
        let _ = write!(
            html,
            r#"<form class="inline" method="post" action="/admin/tenants/{et}/retry" data-confirm="{}"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="kind" value="{kind}"><input type="hidden" name="id" value="{}"><button type="submit" class="retry-one" data-retry="{}">Retry</button></form>"#,
            esc(&format!("Retry the delivery of {name} now?")),
            esc(csrf),
            esc(id),
            esc(id)
        );
    }
    html
}

fn delivery_html(d: &Delivery) -> String {
    match d {
        Delivery::Applied => r#"<span class="ok">applied</span>"#.into(),
        Delivery::DryRun => r#"<span class="warn">dry run</span>"#.into(),
        Delivery::Pending {
            attempts,
            last_error,
        } => format!(
            r#"<span class="warn" title="{}">pending ({attempts} tries)</span>"#,
            esc(last_error.as_deref().unwrap_or_default())
        ),
        Delivery::Failed { reason } => {
            format!(r#"<span class="bad">failed: {}</span>"#, esc(reason))
        }
    }
}

async fn tenant_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
    form: Option<web::Form<CsrfForm>>,
) -> HttpResponse {
    let csrf = form.as_ref().and_then(|f| f.csrf.clone());
    or_answer!(admin.authorize_action(&req, csrf.as_deref()));
    let (tenant, action) = path.into_inner();
    let engine = or_answer!(api::engine_of(&app, &tenant));
    let fields = form.map(|f| f.into_inner().fields).unwrap_or_default();
    match super::governance::run_action(
        &engine,
        &action,
        &fields,
        crate::engine::state::Actor::Operator,
    )
    .await
    {
        Ok((tab, n)) => see_other(&format!(
            "/admin/tenants/{}?tab={tab}&done={}&n={n}",
            enc(&tenant),
            enc(&action)
        )),
        Err(r) => r,
    }
}

//! The governance endpoints of the admin API and their console tabs: the dry-run plan, the
//! dormant-account sweep, operator actions (retry failed, sync now), the audit log and the
//! access review. The JSON API and the console call the same functions (`crate::governance`,
//! `Engine::plan_query`, `Engine::dormant_plan`), so they never disagree.
// A handler's `Err` is the HTTP answer itself (a 4xx to send), not an error to propagate:
// boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use super::api::{self, engine_of, off_thread, query};
use super::{bad_request, server_error, AdminState};
use crate::engine::plan::PlanQuery;
use crate::engine::state::Actor;
use crate::engine::sweep::{dormant_days_problem, SweepError, DORMANT_DAYS};
use crate::engine::Engine;
use crate::server::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/api/tenants/{tenant}/plan", web::get().to(plan))
        .route(
            "/admin/api/tenants/{tenant}/sweep",
            web::get().to(sweep_plan),
        )
        .route(
            "/admin/api/tenants/{tenant}/sweep",
            web::post().to(sweep_apply),
        )
        .route("/admin/api/tenants/{tenant}/retry", web::post().to(retry))
        .route("/admin/api/tenants/{tenant}/sync", web::post().to(sync))
        .route("/admin/api/exports", web::get().to(exports))
        .route("/admin/api/audit", web::get().to(audit_page))
        .route("/admin/api/audit/export", web::get().to(audit_export))
        .route("/admin/api/audit/verify", web::get().to(audit_verify))
        .route("/admin/api/report/access", web::get().to(access_report));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessParams {
    tenant: Option<String>,
    format: Option<String>,
}

/// `GET /admin/api/report/access?tenant&format=csv|jsonl|html`: the access review, streamed.
async fn access_report(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    use crate::governance::access::{rows, write, Format};
    or_answer!(admin.authorize(&req));
    let p: AccessParams = or_answer!(query(&req));
    or_answer!(known_tenant(&app, p.tenant.as_deref()));
    let format: Format = match p.format.as_deref().unwrap_or("csv").parse() {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    if let Some(t) = &p.tenant {
        if admin
            .view()
            .tenants
            .get(t)
            .is_some_and(|s| s.vendor == "local")
        {
            return bad_request(format!(
                "tenant {t:?} uses the local connector: it has no vendor accounts to review"
            ));
        }
    }
    let store = app.store.clone();
    let view = admin.view();
    let configs = view.tenant_configs.clone();
    let key = view.report.person_key;
    let rows_counter = app.metrics.export_rows.with_label_values(&["access"]);
    let progress = app.metrics.exports.start(
        "access",
        p.tenant.as_deref(),
        &p.format.as_deref().unwrap_or("csv").to_ascii_lowercase(),
    );
    streamed(format.content_type(), rows_counter, move |out| {
        let all = rows(&store, &configs, key, p.tenant.as_deref()).map_err(|e| e.to_string())?;
        progress.total(all.len() as u64);
        // Rows are lines after the CSV header; an HTML page's lines are not rows, so it
        // shows none until it is done.
        let header = match format {
            Format::Csv => Some(1),
            Format::Jsonl => Some(0),
            Format::Html => None,
        };
        let mut counted = LineRows {
            out,
            lines: 0,
            header,
            progress: &progress,
        };
        write(&all, format, &mut counted).map_err(|e| e.to_string())?;
        progress.rows(all.len() as u64);
        Ok(all.len() as u64)
    })
}

/// Passes writes on, telling `progress` how many rows (lines after `header` lines) are out.
struct LineRows<'a> {
    out: &'a mut dyn std::io::Write,
    lines: u64,
    header: Option<u64>,
    progress: &'a crate::server::metrics::ExportProgress,
}

impl std::io::Write for LineRows<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(data)?;
        if let Some(header) = self.header {
            self.lines += data[..n].iter().filter(|b| **b == b'\n').count() as u64;
            self.progress.rows(self.lines.saturating_sub(header));
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `GET /admin/api/exports`: the exports and reports running now, with their progress (rows
/// written, and the total once known), as the dashboard lists them.
async fn exports(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    let _: api::NoQuery = or_answer!(query(&req));
    HttpResponse::Ok().json(app.metrics.exports.snapshot())
}

/// A `Write` that sends what it is given to a streamed response in 64 KiB chunks, counting the
/// lines written in `rows` (`/metrics`: a long export's progress).
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
    rows: prometheus::IntCounter,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.rows
            .inc_by(data.iter().filter(|b| **b == b'\n').count() as u64);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A `200` whose body `write` produces on a blocking thread, streamed as it is written (an
/// export of 100,000 rows never sits in memory). A failure after the first bytes cuts the
/// response short, which the client sees as an error rather than a silently short export.
pub fn streamed<F>(content_type: &str, rows: prometheus::IntCounter, write: F) -> HttpResponse
where
    F: FnOnce(&mut dyn std::io::Write) -> Result<u64, String> + Send + 'static,
{
    use std::io::Write as _;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkSender {
            tx,
            buf: Vec::with_capacity(64 * 1024),
            rows,
        };
        let r = write(&mut out).and_then(|_| out.flush().map_err(|e| e.to_string()));
        if let Err(e) = r {
            tracing::error!(error = %e, "admin export failed");
            let _ = err_tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    HttpResponse::Ok()
        .content_type(content_type.to_string())
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .streaming(body)
}

fn since_param(since: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>, HttpResponse> {
    crate::governance::audit::parse_since(since).map_err(bad_request)
}

/// A tenant named in a query must be configured (else 404).
fn known_tenant(app: &AppState, tenant: Option<&str>) -> Result<(), HttpResponse> {
    match tenant {
        Some(t) if app.tenant(t).is_none() => Err(super::not_found("no such tenant")),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditPageParams {
    tenant: String,
    actor: Option<String>,
    event: Option<String>,
    q: Option<String>,
    since: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

/// The audit filters of a query (console and API alike), checked; a bad one is a 400.
pub fn audit_filter(
    actor: Option<&str>,
    event: Option<&str>,
    q: Option<&str>,
    since: Option<&str>,
) -> Result<crate::governance::audit::PageFilter, HttpResponse> {
    check_audit_filter(actor, event, q, since).map_err(bad_request)
}

/// [`audit_filter`], the refusal in words (the console puts them on a 400 page). An empty
/// value is no filter (a form's empty field).
pub fn check_audit_filter(
    actor: Option<&str>,
    event: Option<&str>,
    q: Option<&str>,
    since: Option<&str>,
) -> Result<crate::governance::audit::PageFilter, String> {
    let actor = actor.filter(|a| !a.is_empty());
    if let Some(a) = actor {
        if !matches!(a, "idp" | "sync" | "sweep" | "operator") {
            return Err("actor must be idp, sync, sweep or operator".into());
        }
    }
    let event = event.filter(|e| !e.is_empty());
    if let Some(e) = event {
        if crate::store::audit::AuditEvent::parse(e).is_none() {
            return Err(format!("unknown event {e:?}"));
        }
    }
    Ok(crate::governance::audit::PageFilter {
        actor: actor.map(str::to_string),
        event: event.map(str::to_string),
        text: q.filter(|t| !t.is_empty()).map(str::to_lowercase),
        since: crate::governance::audit::parse_since(
            since.map(str::trim).filter(|s| !s.is_empty()),
        )?,
    })
}

/// `GET /admin/api/audit?tenant=T&actor&event&q&since&offset&limit`: newest first.
async fn audit_page(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    let p: AuditPageParams = or_answer!(query(&req));
    or_answer!(known_tenant(&app, Some(&p.tenant)));
    let limit = p.limit.unwrap_or(100);
    if !(1..=api::MAX_PAGE).contains(&limit) {
        return bad_request(format!("limit must be 1..{}", api::MAX_PAGE));
    }
    let filter = or_answer!(audit_filter(
        p.actor.as_deref(),
        p.event.as_deref(),
        p.q.as_deref(),
        p.since.as_deref(),
    ));
    let store = app.store.clone();
    let (entries, total) = or_answer!(
        off_thread(move || {
            crate::governance::audit::page(&store, &p.tenant, &filter, p.offset, limit)
        })
        .await
    );
    HttpResponse::Ok().json(json!({"total": total, "entries": entries}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditExportParams {
    tenant: Option<String>,
    since: Option<String>,
    format: Option<String>,
}

/// `GET /admin/api/audit/export?tenant&since&format=jsonl|csv`: streamed.
async fn audit_export(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    use crate::governance::audit::{export_with_progress, ExportFilter, ExportFormat};
    or_answer!(admin.authorize(&req));
    let p: AuditExportParams = or_answer!(query(&req));
    or_answer!(known_tenant(&app, p.tenant.as_deref()));
    let format: ExportFormat = match p.format.as_deref().unwrap_or("jsonl").parse() {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let since = or_answer!(since_param(p.since.as_deref()));
    let store = app.store.clone();
    let filter = ExportFilter {
        tenant: p.tenant,
        since,
    };
    let content_type = match format {
        ExportFormat::Jsonl => "application/jsonl; charset=utf-8",
        ExportFormat::Csv => "text/csv; charset=utf-8",
    };
    let rows = app.metrics.export_rows.with_label_values(&["audit"]);
    let progress = app.metrics.exports.start(
        "audit",
        filter.tenant.as_deref(),
        p.format.as_deref().unwrap_or("jsonl"),
    );
    streamed(content_type, rows, move |out| {
        // The total is known when every entry goes out: the chains' lengths.
        if filter.since.is_none() {
            if let Ok(total) = audit_total(&store, filter.tenant.as_deref()) {
                progress.total(total);
            }
        }
        let mut tell = |n: u64| progress.rows(n);
        match export_with_progress(&store, &filter, format, out, Some(&mut tell)) {
            Ok(n) => Ok(n),
            // A configured tenant with no change yet has an empty log, not an error.
            Err(crate::governance::audit::ExportError::NoLog(_)) => Ok(0),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// The entries an export of `tenant` (every tenant: `None`) writes without a `since`.
fn audit_total(
    store: &crate::store::Store,
    tenant: Option<&str>,
) -> Result<u64, crate::store::StoreError> {
    use crate::store::audit::{audited_tenants, AuditReader};
    let tenants = match tenant {
        Some(t) => vec![t.to_string()],
        None => audited_tenants(store)?,
    };
    let mut total = 0;
    for t in tenants {
        if let Some(r) = AuditReader::open(store, &t)? {
            total += r.state()?.len();
        }
    }
    Ok(total)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyParams {
    tenant: Option<String>,
}

/// `GET /admin/api/audit/verify[?tenant=T]`: `{"ok": …}` (200 either way: the chain's state is
/// the answer).
async fn audit_verify(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    let p: VerifyParams = or_answer!(query(&req));
    or_answer!(known_tenant(&app, p.tenant.as_deref()));
    let store = app.store.clone();
    let v = or_answer!(
        off_thread(move || crate::governance::audit::verify_json(&store, p.tenant.as_deref()))
            .await
    );
    HttpResponse::Ok().json(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanParams {
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
    action: Option<String>,
    status: Option<String>,
}

fn plan_query(p: &PlanParams) -> Result<PlanQuery, HttpResponse> {
    let action = match &p.action {
        None => None,
        Some(a) => Some(
            crate::engine::plan::Action::parse(a)
                .ok_or_else(|| bad_request(format!("unknown action {a:?}")))?,
        ),
    };
    if let Some(s) = &p.status {
        if !matches!(s.as_str(), "dry_run" | "pending" | "failed") {
            return Err(bad_request("status must be dry_run, pending or failed"));
        }
    }
    if p.limit.is_some_and(|l| l == 0 || l > api::MAX_PAGE as u64) {
        return Err(bad_request(format!("limit must be 1..{}", api::MAX_PAGE)));
    }
    Ok(PlanQuery {
        offset: p.offset,
        limit: p.limit,
        action,
        status: p.status.clone(),
    })
}

/// `GET /admin/api/tenants/{t}/plan`: `{"plan": …, "text": …}`.
async fn plan(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    let params: PlanParams = or_answer!(query(&req));
    let q = or_answer!(plan_query(&params));
    let engine = or_answer!(engine_of(&app, &path));
    let plan = or_answer!(off_thread(move || engine.plan_query(&q)).await);
    HttpResponse::Ok().json(json!({"text": plan.render_text(), "plan": plan}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepParams {
    days: u32,
    #[serde(default)]
    include_unmanaged: bool,
}

fn sweep_answer(e: SweepError) -> HttpResponse {
    match e {
        SweepError::Store(e) => server_error(e),
        // Not synced yet, no days, rules that do not resolve: the caller's to fix or wait for.
        other => HttpResponse::Conflict().json(json!({"error": other.to_string()})),
    }
}

/// `GET /admin/api/tenants/{t}/sweep?days=N`: the dormant plan.
async fn sweep_plan(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize(&req));
    let p: SweepParams = or_answer!(query(&req));
    if !DORMANT_DAYS.contains(&p.days) {
        return bad_request(dormant_days_problem("days"));
    }
    let engine = or_answer!(engine_of(&app, &path));
    let r =
        web::block(move || engine.dormant_plan(p.days, p.include_unmanaged, chrono::Utc::now()))
            .await;
    match r {
        Ok(Ok(plan)) => HttpResponse::Ok().json(json!({
            "text": crate::governance::dormant::plan_table(&plan),
            "plan": crate::governance::dormant::plan_json(&plan),
        })),
        Ok(Err(e)) => sweep_answer(e),
        Err(e) => server_error(e),
    }
}

/// Plans and applies a dormant sweep (the bridge's own plan, never one a client sends back).
async fn apply_dormant(
    engine: &Arc<Engine>,
    days: u32,
    include_unmanaged: bool,
    actor: Actor,
) -> Result<crate::engine::sweep::SweepOutcome, SweepError> {
    let e = engine.clone();
    let plan = web::block(move || e.dormant_plan(days, include_unmanaged, chrono::Utc::now()))
        .await
        .map_err(|e| SweepError::Write {
            tenant: engine.tenant().to_string(),
            detail: e.to_string(),
        })??;
    engine.apply_sweep(&plan, actor).await
}

/// `POST /admin/api/tenants/{t}/sweep` `{"days": N, "include_unmanaged": false}`.
async fn sweep_apply(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
    body: Result<web::Json<SweepParams>, actix_web::Error>,
) -> HttpResponse {
    or_answer!(admin.authorize_action(&req, None));
    let Ok(p) = body else {
        return bad_request("expected a JSON body {\"days\": N, \"include_unmanaged\": false}");
    };
    if !DORMANT_DAYS.contains(&p.days) {
        return bad_request(dormant_days_problem("days"));
    }
    let engine = or_answer!(engine_of(&app, &path));
    // The CLI's `--apply` runs with an admin token: the sweep is the actor (CONTRACT §5).
    match apply_dormant(&engine, p.days, p.include_unmanaged, Actor::Sweep).await {
        Ok(outcome) => HttpResponse::Ok().json(json!({
            "text": crate::governance::dormant::outcome_table(&outcome),
            "outcome": crate::governance::dormant::outcome_json(&outcome),
        })),
        Err(e) => sweep_answer(e),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    /// `users` or `groups` and a SCIM id: one object; absent: every failed change.
    kind: Option<String>,
    id: Option<String>,
}

/// `POST /admin/api/tenants/{t}/retry`: failed changes made due now, as the operator's.
async fn retry(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
    body: web::Bytes,
) -> HttpResponse {
    or_answer!(admin.authorize_action(&req, None));
    let engine = or_answer!(engine_of(&app, &path));
    // Only an empty body means "every failed change"; a body that does not parse is a 400,
    // never read as "all".
    let body: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        or_answer!(
            serde_json::from_slice(&body).map_err(|e| bad_request(format!(
                "expected {{\"kind\": \"users\", \"id\": …}} or no body: {e}"
            )))
        )
    };
    let which = match (body.kind.as_deref(), body.id) {
        (None, None) => None,
        (Some("users"), Some(id)) => Some((crate::scim::schema::ResourceKind::User, id)),
        (Some("groups"), Some(id)) => Some((crate::scim::schema::ResourceKind::Group, id)),
        _ => return bad_request("give both kind (users or groups) and id, or neither"),
    };
    match engine.request_retry(which, API_RETRY) {
        Ok(n) => HttpResponse::Ok().json(json!({"retried": n})),
        Err(e) => server_error(e),
    }
}

/// The causes of an operator's request, as the audit log records them (entries of actor
/// `operator`: `retry_requested`, `sync_requested`).
const API_RETRY: &str = "retry failed, requested through the admin API";
const API_SYNC: &str = "sync now, requested through the admin API";
const CONSOLE_RETRY: &str = "retry failed, requested in the console";
const CONSOLE_RETRY_ONE: &str = "retry of one failed delivery, requested in the console";
const CONSOLE_SYNC: &str = "sync now, requested in the console";

/// `POST /admin/api/tenants/{t}/sync`: observe the vendor now.
async fn sync(
    req: HttpRequest,
    path: web::Path<String>,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    or_answer!(admin.authorize_action(&req, None));
    let engine = or_answer!(engine_of(&app, &path));
    match engine.request_sync(API_SYNC) {
        Ok(()) => HttpResponse::Accepted().json(json!({"sync": "started"})),
        Err(e) => server_error(e),
    }
}

/// A console action (`POST /admin/tenants/{t}/{action}`): the tab to show next and how many
/// objects it touched (the page says what that means: a link cannot put words on it).
/// `retry` with the fields `kind` (`users` or `groups`) and `id` retries that one object (the
/// Retry button of a failed row), without them every failed delivery.
pub async fn run_action(
    engine: &Arc<Engine>,
    action: &str,
    fields: &BTreeMap<String, String>,
    actor: Actor,
) -> Result<(&'static str, u64), HttpResponse> {
    use crate::scim::schema::ResourceKind;
    match action {
        "retry" => {
            let kind = fields.get("kind").map(String::as_str);
            let id = fields.get("id").filter(|i| !i.is_empty());
            let (which, tab, how) = match (kind, id) {
                (None, None) => (None, "users", CONSOLE_RETRY),
                (Some("users"), Some(id)) => (
                    Some((ResourceKind::User, id.clone())),
                    "users",
                    CONSOLE_RETRY_ONE,
                ),
                (Some("groups"), Some(id)) => (
                    Some((ResourceKind::Group, id.clone())),
                    "groups",
                    CONSOLE_RETRY_ONE,
                ),
                _ => {
                    return Err(bad_request(
                        "give both kind (users or groups) and id, or neither",
                    ))
                }
            };
            let e = engine.clone();
            match web::block(move || e.request_retry(which, how)).await {
                Ok(Ok(n)) => Ok((tab, n)),
                Ok(Err(e)) => Err(server_error(e)),
                Err(e) => Err(server_error(e)),
            }
        }
        "sync" => match engine.request_sync(CONSOLE_SYNC) {
            Ok(()) => Ok(("users", 0)),
            Err(e) => Err(server_error(e)),
        },
        "sweep" => {
            let days = fields
                .get("days")
                .and_then(|d| d.parse::<u32>().ok())
                .filter(|d| DORMANT_DAYS.contains(d))
                .ok_or_else(|| bad_request(dormant_days_problem("days")))?;
            let unmanaged = fields
                .get("include_unmanaged")
                .is_some_and(|v| v == "on" || v == "true");
            match apply_dormant(engine, days, unmanaged, actor).await {
                Ok(o) => Ok(("dormant", o.deactivated.len() as u64)),
                Err(e) => Err(sweep_answer(e)),
            }
        }
        _ => Err(super::not_found("no such action")),
    }
}

/// The console's governance tabs (audit, access, dormant, plan) of one tenant.
#[allow(clippy::too_many_arguments)]
pub fn governance_tab(
    app: &AppState,
    admin: &AdminState,
    engine: &Engine,
    tenant: &str,
    tab: &str,
    offset: usize,
    q: &super::console::TabParams,
    csrf: &str,
    out: &mut String,
) -> Result<(), String> {
    use super::console::{enc, esc};
    let et = enc(tenant);
    match tab {
        "plan" => {
            let plan = engine
                .plan_page(offset as u64, 100)
                .map_err(|e| e.to_string())?;
            let _ = write!(
                out,
                r#"<p>{}</p><div class="counts" id="plan-counts">"#,
                if plan.dry_run {
                    "This tenant is a <strong>dry run</strong>: nothing below has been sent to the vendor. Set <code>dry_run = false</code> and restart to apply it."
                } else {
                    "Changes not yet confirmed by the vendor: pending, and refused (failed)."
                }
            );
            for (action, n) in &plan.counts {
                if *n > 0 {
                    let _ = write!(out, "<span>{}: {n}</span>", esc(action.as_str()));
                }
            }
            out.push_str(r#"</div><pre id="plan-text">"#);
            out.push_str(&esc(&plan.render_text()));
            out.push_str("</pre>");
        }
        "dormant" => {
            let days = q.days.unwrap_or_else(|| {
                admin
                    .view()
                    .tenants
                    .get(tenant)
                    .and_then(|s| s.sweep.as_ref())
                    .map(|s| s.days)
                    .unwrap_or(90)
            });
            let _ = write!(
                out,
                r#"<form class="bar" method="get" action="/admin/tenants/{et}"><input type="hidden" name="tab" value="dormant"><label>No sign-in for more than (days)<input name="days" type="number" min="{}" max="{}" value="{days}"></label><button type="submit">Show plan</button></form>"#,
                DORMANT_DAYS.start(),
                DORMANT_DAYS.end()
            );
            match engine.dormant_plan(days, false, chrono::Utc::now()) {
                Ok(plan) => {
                    out.push_str(r#"<pre id="dormant-plan">"#);
                    out.push_str(&esc(&crate::governance::dormant::plan_table(&plan)));
                    out.push_str("</pre>");
                    let _ = write!(
                        out,
                        r#"<form method="post" action="/admin/tenants/{et}/sweep" data-confirm="Deactivate the dormant accounts listed, through the engine?"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="days" value="{days}"><button type="submit" class="danger" id="apply-sweep">Apply sweep</button></form>"#,
                        esc(csrf)
                    );
                }
                Err(e) => {
                    let _ = write!(out, r#"<p class="flash error">{}</p>"#, esc(&e.to_string()));
                }
            }
            if let Ok(Some(last)) = engine.last_sweep() {
                let _ = write!(
                    out,
                    r#"<p class="muted">Last sweep: {}</p>"#,
                    esc(&serde_json::to_string(&last).unwrap_or_default())
                );
            }
        }
        "audit" => {
            // Checked by the console before it renders (a bad filter is its 400 page).
            let filter = check_audit_filter(
                q.actor.as_deref(),
                q.event.as_deref(),
                q.q.as_deref(),
                q.since.as_deref(),
            )?;
            let (entries, total) =
                crate::governance::audit::page(&app.store, tenant, &filter, offset, 100)
                    .map_err(|e| e.to_string())?;
            let sel = |v: Option<&str>, opt: &str| {
                if v == Some(opt) {
                    " selected"
                } else {
                    ""
                }
            };
            let _ = write!(
                out,
                r#"<form class="bar" method="get" action="/admin/tenants/{et}"><input type="hidden" name="tab" value="audit"><label>Actor<select name="actor"><option value="">any</option>"#
            );
            for a in ["idp", "sync", "sweep", "operator"] {
                let _ = write!(out, r#"<option{}>{a}</option>"#, sel(q.actor.as_deref(), a));
            }
            let _ = write!(
                out,
                r#"</select></label><label>Event<input name="event" value="{}" placeholder="role_change"></label><label>Text<input name="q" value="{}"></label><label>Since (RFC 3339)<input name="since" id="audit-since" value="{}" placeholder="2026-01-31T00:00:00Z"></label><button type="submit" id="audit-filter">Filter</button></form>"#,
                esc(q.event.as_deref().unwrap_or_default()),
                esc(q.q.as_deref().unwrap_or_default()),
                esc(q.since.as_deref().unwrap_or_default())
            );
            out.push_str(r#"<table id="audit"><thead><tr><th>#</th><th>Time</th><th>Actor</th><th>Event</th><th>Object</th><th>Before</th><th>After</th><th>Cause</th><th>Detail</th></tr></thead><tbody>"#);
            for e in &entries {
                let compact = |v: &serde_json::Value| {
                    if v.is_null() {
                        String::new()
                    } else {
                        v.to_string()
                    }
                };
                let _ = write!(
                    out,
                    "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    e.seq,
                    esc(&e.at),
                    esc(&e.actor),
                    esc(e.event.as_str()),
                    esc(&e.user_name),
                    esc(&compact(&e.before)),
                    esc(&compact(&e.after)),
                    esc(&e.cause),
                    esc(e.detail.as_deref().unwrap_or_default())
                );
            }
            out.push_str("</tbody></table>");
            let mut extra = String::new();
            for (k, v) in [
                ("actor", &q.actor),
                ("event", &q.event),
                ("q", &q.q),
                ("since", &q.since),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    let _ = write!(extra, "&{k}={}", enc(v));
                }
            }
            super::console::pager_with(out, &et, "audit", offset, total as usize, &extra);
        }
        "access" => {
            let (rows, total) = crate::governance::access::page(
                &app.store,
                &admin.view().tenant_configs,
                admin.view().report.person_key,
                tenant,
                offset,
                100,
            )
            .map_err(|e| e.to_string())?;
            let _ = write!(
                out,
                r#"<p>Every account at the vendor, with who manages it. The whole review, across tenants and grouped by person: <a href="/admin/api/report/access?tenant={et}&format=csv">CSV</a> · <a href="/admin/api/report/access?tenant={et}&format=html">HTML</a></p>"#
            );
            out.push_str(r#"<table id="access"><thead><tr><th>Login</th><th>Email</th><th>Active</th><th>Role</th><th>Groups</th><th>Last login</th><th>Managed</th><th>Vendor id</th><th>SCIM id</th></tr></thead><tbody>"#);
            for r in &rows {
                let v = serde_json::to_value(r).unwrap_or_default();
                let cell = |k: &str| match &v[k] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&cell("login")),
                    esc(&cell("email")),
                    esc(&cell("active")),
                    esc(&cell("role")),
                    esc(&cell("groups")),
                    esc(&cell("last_login")),
                    esc(&cell("managed")),
                    esc(&cell("vendor_id")),
                    esc(&cell("scim_id"))
                );
            }
            out.push_str("</tbody></table>");
            super::console::pager_with(out, &et, "access", offset, total, "");
        }
        other => return Err(format!("no tab {other:?}")),
    }
    Ok(())
}

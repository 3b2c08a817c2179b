//! The admin listener (CONTRACT §2 and §5, `[admin] listen`, default `127.0.0.1:9090`): what
//! the operators use and the IdPs never reach. It serves
//! - `/metrics` (Prometheus text; a bearer when `[admin] metrics_token` is set),
//! - `/readyz` with the detailed readiness (which tenant's vendor is unavailable, and why),
//!   and `/healthz`,
//! - `/admin/api/…`, the JSON admin API the CLI talks to, and `/admin`, the console.
//!
//! It is a separate actix server on its own port, so that a firewall or a Kubernetes Service
//! can keep it private while the SCIM port faces the internet (issue 15: `/metrics` listed
//! every tenant and vendor error on the public port).
// A handler's `Err` is the HTTP answer itself (a 4xx to send), not an error to propagate:
// boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

/// The value of a handler step's `Ok`, or its `Err` — the HTTP answer to send (a 4xx) —
/// returned from the handler at once.
macro_rules! or_answer {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(answer) => return answer,
        }
    };
}

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod console;
pub mod deadlines;
pub mod governance;
pub mod store;
pub mod tokens;

use crate::config::{Config, ReportConfig, SweepConfig};
use crate::server::limits::{AuthFailures, AUTH_FAILURE_WINDOW};
use crate::server::{AppState, StartError};
use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use auth::{AdminAuth, Principal};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// Failed admin authentications one address may make per minute before it is answered 429.
const ADMIN_AUTH_FAILURE_LIMIT: u32 = 10;

/// What the admin listener knows beyond the shared [`AppState`]: its credentials and the parts
/// of the config its reports need.
pub struct AdminState {
    pub listen: SocketAddr,
    pub auth: AdminAuth,
    /// What a config reload replaces: the tenants' settings and the report's key.
    view: parking_lot::RwLock<Arc<AdminView>>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[limits]`: the body-read and request deadlines, which the admin listener keeps too
    /// ([`deadlines`]).
    pub limits: crate::config::RequestLimits,
    failures: AuthFailures,
}

/// The admin listener's view of the configured tenants, swapped whole by a reload.
pub struct AdminView {
    /// Per tenant: the vendor kind, `dry_run`, `[tenants.sweep]`.
    pub tenants: BTreeMap<String, TenantSettings>,
    pub report: ReportConfig,
    /// The tenants as configured, without their bearer tokens and JWT keys (the access review
    /// reads each tenant's vendor kind and store tree from them).
    pub tenant_configs: Vec<crate::config::TenantConfig>,
}

#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub vendor: &'static str,
    pub dry_run: bool,
    pub sweep: Option<SweepConfig>,
}

impl AdminView {
    fn of(config: &Config) -> AdminView {
        AdminView {
            tenants: config
                .tenants
                .iter()
                .map(|t| {
                    (
                        t.id.as_str().to_string(),
                        TenantSettings {
                            vendor: t.vendor.kind(),
                            dry_run: t.dry_run,
                            sweep: t.sweep.clone(),
                        },
                    )
                })
                .collect(),
            report: config.report.clone(),
            tenant_configs: config
                .tenants
                .iter()
                .map(|t| crate::config::TenantConfig {
                    tokens: Vec::new(),
                    jwt_secret: None,
                    ..t.clone()
                })
                .collect(),
        }
    }
}

/// The admin tokens of `config`: `[admin] tokens`, else `SCIM_BRIDGE_ADMIN_TOKEN`, which is an
/// admin token of the embedded default too (it has no `[admin]` table to name it in).
fn admin_tokens(config: &Config) -> Vec<crate::config::Secret> {
    let mut tokens = config.admin.tokens.clone();
    if tokens.is_empty() {
        if let Ok(t) = std::env::var("SCIM_BRIDGE_ADMIN_TOKEN") {
            let tenant_token = config
                .tenants
                .iter()
                .flat_map(|c| c.tokens.iter())
                .any(|k| k.expose() == t);
            if tenant_token {
                // A tenant token is never an admin token (CONTRACT §5).
                tracing::error!(
                    "SCIM_BRIDGE_ADMIN_TOKEN is a tenant's token and is not used as an admin token"
                );
            } else if t.chars().count() >= crate::config::MIN_STATIC_TOKEN_CHARS {
                tokens.push(crate::config::Secret::new(t));
            } else if !t.is_empty() {
                tracing::warn!(
                    "SCIM_BRIDGE_ADMIN_TOKEN is shorter than {} characters and is not used",
                    crate::config::MIN_STATIC_TOKEN_CHARS
                );
            }
        }
    }
    tokens
}

impl AdminState {
    pub fn from_config(config: &Config) -> AdminState {
        AdminState {
            listen: config.admin.listen,
            auth: AdminAuth::new(&admin_tokens(config), config.admin.metrics_token.as_ref()),
            view: parking_lot::RwLock::new(Arc::new(AdminView::of(config))),
            trusted_proxies: config.trusted_proxies.clone(),
            limits: config.limits.clone(),
            failures: AuthFailures::new(ADMIN_AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW),
        }
    }

    /// The tenants' settings and the report's key as configured now.
    pub fn view(&self) -> Arc<AdminView> {
        self.view.read().clone()
    }

    /// A config reload: the tenants' settings, the report's key, the admin tokens and
    /// `metrics_token`. The listener's address, its TLS and `[limits]` need a restart.
    pub fn reconfigure(&self, config: &Config) {
        *self.view.write() = Arc::new(AdminView::of(config));
        if self
            .auth
            .set_tokens(&admin_tokens(config), config.admin.metrics_token.as_ref())
        {
            tracing::info!("admin tokens changed: console sessions were ended");
        }
    }

    /// Who sent `req`: an admin bearer, or a live console session; otherwise the 401 (or 429
    /// after repeated failures from the address) to answer.
    pub fn authorize(&self, req: &HttpRequest) -> Result<Principal, HttpResponse> {
        let now = std::time::Instant::now();
        let who = crate::server::forwarded::client_key(req, &self.trusted_proxies);
        if let Some(ip) = who {
            if let Some(wait) = self.failures.refused(ip, "admin", now) {
                return Err(HttpResponse::TooManyRequests()
                    .insert_header((header::RETRY_AFTER, wait.to_string()))
                    .json(json!({"error": "too many failed admin authentications; retry later"})));
            }
        }
        if let Some(b) = bearer(req) {
            if self.auth.is_admin_token(b) {
                return Ok(Principal::Bearer);
            }
        } else if let Some(c) = req.cookie(auth::SESSION_COOKIE) {
            if let Some(p) = self.auth.session(c.value()) {
                return Ok(p);
            }
        }
        // Only a wrong token counts towards the lockout: a session that expired (or did not
        // survive a restart) is not a guess, and an open console tab polling with one must not
        // lock its operator out.
        if bearer(req).is_some() {
            if let Some(ip) = who {
                self.failures.record(ip, "admin", now);
            }
        }
        Err(unauthorized())
    }

    /// As [`authorize`](Self::authorize), for a state-changing request: a session must also
    /// show its CSRF token (`X-CSRF-Token`, or the form field the caller passes).
    pub fn authorize_action(
        &self,
        req: &HttpRequest,
        form_csrf: Option<&str>,
    ) -> Result<Principal, HttpResponse> {
        let p = self.authorize(req)?;
        if let Principal::Session { csrf } = &p {
            let given = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .or(form_csrf);
            if !auth::csrf_matches(csrf, given) {
                return Err(HttpResponse::Forbidden()
                    .json(json!({"error": "missing or wrong CSRF token; reload the page"})));
            }
        }
        Ok(p)
    }
}

/// The bearer token of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

pub fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"scim-bridge admin\"",
        ))
        .json(json!({"error": "an admin token is required (a tenant's token is not one)"}))
}

/// A JSON error of the admin API.
pub fn bad_request(msg: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": msg.to_string()}))
}

pub fn not_found(msg: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": msg.to_string()}))
}

pub fn server_error(msg: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %msg, "admin API");
    HttpResponse::InternalServerError().json(json!({"error": msg.to_string()}))
}

pub struct RunningAdmin {
    pub addr: SocketAddr,
    /// The served state, which a config reload updates.
    pub state: web::Data<AdminState>,
    pub handle: ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds the admin listener and starts serving on the current runtime; returns at once. With
/// `tls` (`[admin] tls = true`) it serves HTTPS with the public listener's reloaded pair.
pub fn start(
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
    tls: Option<std::sync::Arc<crate::server::tls::CertStore>>,
) -> Result<RunningAdmin, StartError> {
    let rustls_config = match &tls {
        Some(c) => Some(c.server_config().map_err(StartError::Tls)?),
        None => None,
    };
    let listen = admin.listen;
    let admin_state = admin.clone();
    let listener = TcpListener::bind(listen).map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app.clone())
            .app_data(admin.clone())
            .app_data(web::FormConfig::default().limit(deadlines::ADMIN_BODY_LIMIT))
            .wrap(actix_web::middleware::from_fn(deadlines::guard))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(crate::server::detailed_readiness))
            .route("/metrics", web::get().to(metrics))
            .configure(api::routes)
            .configure(governance::routes)
            .configure(store::routes)
            .configure(tokens::routes)
            .configure(console::routes)
            .default_service(web::to(|| async {
                HttpResponse::NotFound().json(json!({"error": "no such admin path"}))
            }))
    })
    // Two, so that a long report never holds up a Prometheus scrape or a readiness probe.
    .workers(2)
    .shutdown_timeout(10)
    // The request head within 5 s and idle keep-alive connections closed after 15 s (the
    // console polls); bodies and handlers have their deadlines in `deadlines::guard`.
    .client_request_timeout(std::time::Duration::from_secs(5))
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .keep_alive(std::time::Duration::from_secs(15))
    .disable_signals();
    let server = match rustls_config {
        Some(c) => server.listen_rustls_0_23(listener, c),
        None => server.listen(listener),
    };
    let server = server
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?
        .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(RunningAdmin {
        addr,
        state: admin_state,
        handle,
        task,
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn metrics(
    req: HttpRequest,
    app: web::Data<AppState>,
    admin: web::Data<AdminState>,
) -> HttpResponse {
    if !admin.auth.metrics_allowed(bearer(&req)) {
        return HttpResponse::Unauthorized()
            .insert_header((
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"scim-bridge metrics\"",
            ))
            .finish();
    }
    crate::server::metrics_text(app).await
}

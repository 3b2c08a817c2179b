//! The HTTP server: actix-web routes for the SCIM surface of CONTRACT §2, health, readiness
//! and metrics, one state shared by every worker.

pub mod forwarded;
pub mod limits;
pub mod metrics;
pub mod reconfigure;
pub mod reload;
pub mod response;
mod scim_routes;
pub(crate) mod start_checks;
pub mod tls;

use crate::auth::TenantAuth;
use crate::config::{Config, RequestLimits, VendorConfig};
use crate::connector::local::LocalConnector;
use crate::connector::Connector;
use crate::connector::{metabase, sisense, tableau, thoughtspot};
use crate::engine::EngineConnector;
use crate::store::{Store, StoreError};
use actix_web::dev::{ServerHandle, Service};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpResponse, HttpServer};
use limits::Guard;
use metrics::Metrics;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use tracing::Instrument;

/// One configured tenant: its credentials and its connector.
pub struct Tenant {
    pub id: String,
    pub auth: TenantAuth,
    pub connector: Arc<dyn Connector>,
}

/// The served tenants by id.
pub type TenantMap = BTreeMap<String, Arc<Tenant>>;

pub struct AppState {
    /// Swapped whole by a config reload ([`reconfigure`]): a request takes the set as it is
    /// when the request starts and keeps its tenant until it ends.
    tenants: parking_lot::RwLock<Served>,
    pub metrics: Metrics,
    pub body_limit: usize,
    pub store: Store,
}

impl AppState {
    pub fn new(tenants: TenantMap, metrics: Metrics, body_limit: usize, store: Store) -> AppState {
        AppState {
            tenants: parking_lot::RwLock::new(Served::new(tenants)),
            metrics,
            body_limit,
            store,
        }
    }

    /// The tenants served now.
    pub fn tenants(&self) -> Arc<TenantMap> {
        self.tenants.read().ordered.clone()
    }

    /// One tenant served now.
    pub fn tenant(&self, id: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().by_id.get(id).cloned()
    }

    /// Serves `tenants` from the next request on; returns the set it replaces.
    pub(crate) fn replace_tenants(&self, tenants: TenantMap) -> Arc<TenantMap> {
        // Built before the lock, and the old set dropped after it: requests' lookups wait
        // only for the swap.
        let next = Served::new(tenants);
        let old = std::mem::replace(&mut *self.tenants.write(), next);
        old.ordered
    }
}

/// The tenant set in both shapes it is read in: ordered for listings, and hashed for the
/// lookup every request makes. With 1,000 tenants a B-tree search compared the request's
/// tenant id against a dozen others in nodes no recent request had touched, a cost a single
/// tenant never shows (`scripts/bench-tenants.sh`, lookups spread over every tenant).
struct Served {
    ordered: Arc<TenantMap>,
    by_id: std::collections::HashMap<String, Arc<Tenant>>,
}

impl Served {
    fn new(tenants: TenantMap) -> Served {
        let by_id = tenants
            .iter()
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        Served {
            ordered: Arc::new(tenants),
            by_id,
        }
    }
}

/// What [`start`] serves: the shared state, and the request limits (`[limits]`,
/// `trusted_proxies`) with their per-tenant and per-client state.
pub struct ServerState {
    pub app: AppState,
    pub guard: Guard,
    /// The admin listener (`[admin]`): started with the public one; `None` serves no admin
    /// listener (an embedding test that only needs SCIM).
    pub admin: Option<crate::admin::AdminState>,
    /// `[audit] retention`: how long audit entries are kept (`None`: for ever).
    pub retention: Option<std::time::Duration>,
    /// `[tls]`: HTTPS on the public listener (and on the admin one with `admin_tls`).
    pub tls: Option<crate::config::TlsConfig>,
    /// `[admin] tls = true`.
    pub admin_tls: bool,
}

impl ServerState {
    /// `app` under `limits`, honouring forwarding headers only from `trusted_proxies`.
    pub fn new(app: AppState, limits: &RequestLimits, trusted_proxies: &[ipnet::IpNet]) -> Self {
        let guard = Guard::new(
            limits,
            trusted_proxies,
            app.tenants().keys().map(String::as_str),
        );
        ServerState {
            app,
            guard,
            admin: None,
            retention: None,
            tls: None,
            admin_tls: false,
        }
    }
}

/// A bare `AppState` is served with the default limits and no trusted proxy.
impl From<AppState> for ServerState {
    fn from(app: AppState) -> Self {
        ServerState::new(app, &RequestLimits::default(), &[])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A vendor connector that cannot start as configured; each line names its key path.
    #[error("tenant {tenant}: {message}")]
    Connector { tenant: String, message: String },
    /// `[tls]` files that do not load; each line names `tls.cert` or `tls.key` and the file.
    #[error("{0}")]
    Tls(String),
}

pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub state: web::Data<AppState>,
    /// The admin listener, when one was asked for.
    pub admin: Option<crate::admin::RunningAdmin>,
    /// The audit retention task (`[audit] retention`), stopped with the server.
    pub retention: Option<tokio::task::JoinHandle<()>>,
    /// The process's reload signal (SIGHUP is forwarded to it): subscribe to reload on it.
    pub reload: reload::Reload,
    /// The served TLS pair (`[tls]`), reloaded from its files.
    pub tls: Option<Arc<tls::CertStore>>,
    /// The request limits of the public listener, which a config reload updates.
    pub guard: web::Data<Guard>,
    /// The config reload, once [`RunningServer::reload_config_from`] set it up.
    pub reconfigurer: Option<Arc<reconfigure::Reconfigurer>>,
    /// The SIGHUP forwarder, the TLS file watcher and the config reload, stopped with the
    /// server.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Reloads the config from `source` on every reload signal (SIGHUP), for a server
    /// started from `config` (see [`reconfigure`]).
    pub fn reload_config_from(&mut self, source: reconfigure::ConfigSource, config: &Config) {
        let r = Arc::new(reconfigure::Reconfigurer::new(
            source,
            config,
            self.state.clone(),
            self.guard.clone(),
            self.admin.as_ref().map(|a| a.state.clone()),
        ));
        self.background
            .push(r.clone().spawn(self.reload.subscribe()));
        self.reconfigurer = Some(r);
    }

    /// The admin listener's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// Stops accepting, lets in-flight requests finish, then flushes the store.
    pub async fn stop(self) {
        if let Some(r) = &self.retention {
            r.abort();
        }
        for b in &self.background {
            b.abort();
        }
        if let Some(a) = &self.admin {
            a.handle.stop(true).await;
        }
        self.handle.stop(true).await;
        let _ = self.task.await;
        if let Some(a) = self.admin {
            let _ = a.task.await;
        }
        let _ = self.state.store.flush().await;
    }
}

/// Builds the shared state: opens each tenant's connector; the limits come from `config`.
pub fn build_state(config: &Config, store: Store) -> Result<ServerState, StartError> {
    let mut tenants = BTreeMap::new();
    let metrics = Metrics::new();
    let all: Vec<(usize, &crate::config::TenantConfig)> =
        config.tenants.iter().enumerate().collect();
    // The vendor tenants are checked (`start_checks`): the first wave decides the start, a
    // later check's problem stops its tenant alone, and a check that has not answered within
    // `START_WAIT` finishes in the background (its tenant starts as if its vendor could not be
    // reached yet).
    let vendors: Vec<(usize, &crate::config::TenantConfig)> = all
        .iter()
        .filter(|(_, t)| !matches!(t.vendor, VendorConfig::Local))
        .copied()
        .collect();
    let (decided, late) = start_checks::start(&vendors).within(start_checks::START_WAIT);
    let mut checks: std::collections::HashMap<usize, (usize, Option<Preflight>)> = vendors
        .iter()
        .zip(decided)
        .enumerate()
        .map(|(pos, ((index, _), check))| (*index, (pos, check)))
        .collect();
    let mut unchecked = std::collections::HashMap::new();
    for (index, t) in all {
        let (pos, check) = match checks.remove(&index) {
            Some((pos, check)) => (Some(pos), check),
            None => (None, Some(Ok(None))),
        };
        let (check, stop_for) = match (pos, check) {
            (Some(p), Some(Err(problems))) if !start_checks::decides_the_start(p) => {
                (Some(Ok(None)), Some(problems))
            }
            (_, check) => (check, None),
        };
        let late_check = check.is_none();
        let opened = open_connector(t, index, &store, &metrics, check.unwrap_or(Ok(None)))?;
        if let Some(engine) = opened.engine() {
            if let Some(problems) = stop_for {
                start_checks::stop(t.id.as_str(), engine, &problems);
            }
            if let (true, Some(pos)) = (late_check, pos) {
                // Before it starts: its roles come from the check, not a second sign-in.
                engine.await_start_check(start_checks::LATE_WAIT);
                unchecked.insert(pos, (t.id.as_str().to_string(), Arc::downgrade(engine)));
            }
        }
        let connector = opened.start();
        tenants.insert(
            t.id.as_str().to_string(),
            tenant_with(config, t, connector, &store)?,
        );
    }
    late.apply_to(unchecked);
    let app = AppState::new(tenants, metrics, config.body_limit_bytes, store);
    let mut state = ServerState::new(app, &config.limits, &config.trusted_proxies);
    state.admin = Some(crate::admin::AdminState::from_config(config));
    state.retention = config.audit.retention;
    state.tls = config.tls.clone();
    state.admin_tls = config.admin.tls;
    Ok(state)
}

/// A tenant's start-up check: for a vendor tenant, a sign-in and its role rules resolved
/// against the vendor's roles (`None`: nothing to resolve, the local connector).
pub(crate) type Preflight =
    Result<Option<crate::engine::role_table::RoleTable>, Vec<crate::config::Problem>>;

/// An opened connector whose engine has not started its background work yet.
pub(crate) struct Opened {
    connector: Arc<dyn Connector>,
    /// The engine and its `[tenants.sweep]`, for a vendor tenant.
    engine: Option<(
        Arc<crate::engine::Engine>,
        Option<crate::config::SweepConfig>,
    )>,
}

impl Opened {
    /// The engine, for a vendor tenant.
    pub(crate) fn engine(&self) -> Option<&Arc<crate::engine::Engine>> {
        self.engine.as_ref().map(|(e, _)| e)
    }

    /// Starts the engine's background loops and scheduled sweep; the connector to serve.
    pub(crate) fn start(self) -> Arc<dyn Connector> {
        if let Some((engine, sweep)) = self.engine {
            engine.spawn_background();
            // `[tenants.sweep]`: the scheduled dormant-account sweep (report-only unless
            // `apply`).
            if let Some(sweep) = sweep {
                engine.spawn_sweep(sweep);
            }
        }
        self.connector
    }
}

/// Opens tenant `t`'s connector (`index`: its place in the config, which the connectors use
/// for their key paths) with the outcome of its start-up check. Nothing runs in the background
/// until [`Opened::start`]: a config reload opens every new engine before it decides.
pub(crate) fn open_connector(
    t: &crate::config::TenantConfig,
    index: usize,
    store: &Store,
    metrics: &Metrics,
    check: Preflight,
) -> Result<Opened, StartError> {
    let counter = || metrics.role_changes.with_label_values(&[t.id.as_str()]);
    let opened = match &t.vendor {
        VendorConfig::Local => {
            check.map_err(|p| connector_failed(t, &p))?;
            return Ok(Opened {
                connector: Arc::new(LocalConnector::open(store, t.id.as_str())?),
                engine: None,
            });
        }
        VendorConfig::Sisense { .. } => sisense::open(store, t, index, Some(counter())),
        VendorConfig::Tableau { .. } => tableau::open(store, t, index, Some(counter())),
        VendorConfig::Thoughtspot { .. } => thoughtspot::open(store, t, index, Some(counter())),
        VendorConfig::Metabase { .. } => metabase::open(store, t, index, Some(counter())),
    };
    open_engine(t, opened, check)
}

fn connector_failed(
    t: &crate::config::TenantConfig,
    problems: &[crate::config::Problem],
) -> StartError {
    StartError::Connector {
        tenant: t.id.as_str().to_string(),
        message: start_checks::describe(problems),
    }
}

/// Tenant `t` served by `connector`: its tokens and key, `jwt_max_lifetime`, and its `jti`
/// deny list in the store.
pub(crate) fn tenant_with(
    config: &Config,
    t: &crate::config::TenantConfig,
    connector: Arc<dyn Connector>,
    store: &Store,
) -> Result<Arc<Tenant>, StartError> {
    Ok(Arc::new(Tenant {
        id: t.id.as_str().to_string(),
        auth: TenantAuth::for_config(config, t, store)?,
        connector,
    }))
}

/// An opened engine with its start-up check's outcome (a tenant whose rules would assign
/// wrong roles does not start).
fn open_engine(
    t: &crate::config::TenantConfig,
    opened: Result<Arc<crate::engine::Engine>, String>,
    check: Preflight,
) -> Result<Opened, StartError> {
    let engine = opened.map_err(|message| StartError::Connector {
        tenant: t.id.as_str().to_string(),
        message,
    })?;
    match check {
        Ok(Some(roles)) => engine.set_roles(roles),
        Ok(None) => {}
        Err(problems) => return Err(connector_failed(t, &problems)),
    }
    Ok(Opened {
        connector: Arc::new(EngineConnector(engine.clone())),
        engine: Some((engine, t.sweep.clone())),
    })
}

/// Binds and starts serving on the current runtime; returns at once.
pub fn start(
    listen: SocketAddr,
    state: impl Into<ServerState>,
    workers: Option<usize>,
) -> Result<RunningServer, StartError> {
    let ServerState {
        app: state,
        guard,
        admin,
        retention,
        tls: tls_config,
        admin_tls,
    } = state.into();
    // The pair is loaded before anything binds: a bad one refuses the start, naming the file.
    let cert_store = match &tls_config {
        Some(t) => Some(tls::CertStore::open(t).map_err(|problems| {
            StartError::Tls(
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?),
        None => None,
    };
    let rustls_config = match &cert_store {
        Some(c) => Some(c.server_config().map_err(StartError::Tls)?),
        None => None,
    };
    let listener = TcpListener::bind(listen).map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let state = web::Data::new(state);
    let admin = match admin {
        Some(a) => Some(crate::admin::start(
            state.clone(),
            web::Data::new(a),
            cert_store.clone().filter(|_| admin_tls),
        )?),
        None => None,
    };
    let app_state = state.clone();
    let guard = web::Data::new(guard);
    let guard_handle = guard.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(guard.clone())
            .wrap_fn(|req, srv| {
                // A request id per request: the client's X-Request-Id if sane, else a new one.
                let rid = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
                    .map(str::to_string)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let span = tracing::info_span!("request", request_id = %rid, method = %req.method(), path = %req.path());
                let fut = srv.call(req);
                async move {
                    let started = std::time::Instant::now();
                    let mut res = fut.await?;
                    tracing::info!(status = res.status().as_u16(), elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "served");
                    if let Ok(v) = HeaderValue::from_str(&rid) {
                        res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
                    }
                    Ok(res)
                }
                .instrument(span)
            })
            // Another method gets an explicit 405 with `Allow: GET`, closing on an unread
            // body like every answer here (see `healthz`), rather than the SCIM entry's 404.
            .service(
                web::resource("/healthz")
                    .route(web::get().to(healthz))
                    .default_service(web::to(probe_method_not_allowed)),
            )
            .service(
                web::resource("/readyz")
                    .route(web::get().to(readyz))
                    .default_service(web::to(probe_method_not_allowed)),
            )
            .default_service(web::to(scim_routes::entry))
    })
    .shutdown_timeout(30)
    .disable_signals();
    let server = match rustls_config {
        Some(c) => server.listen_rustls_0_23(listener, c),
        None => server.listen(listener),
    };
    let mut server = server.map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    if let Some(w) = workers {
        server = server.workers(w);
    }
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    // SIGHUP reloads (issue 14): the TLS pair now, the config later, through one broadcast.
    let reload = reload::Reload::new();
    let mut background = Vec::new();
    #[cfg(unix)]
    match reload.forward_sighup() {
        Ok(t) => background.push(t),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload by SIGHUP is off")
        }
    }
    if let Some(c) = &cert_store {
        let watch = c
            .clone()
            .spawn_watch(tls::POLL_INTERVAL, reload.subscribe());
        background.push(watch);
    }
    Ok(RunningServer {
        guard: guard_handle,
        reconfigurer: None,
        reload,
        tls: cert_store,
        background,
        addr,
        handle,
        task,
        retention: retention.map(|keep| spawn_retention(state.clone(), keep)),
        state,
        admin,
    })
}

/// Prunes every tenant's audit log of entries older than `keep`, at start and then hourly
/// (`[audit] retention`; the chain stays verifiable from its checkpoint).
fn spawn_retention(
    state: web::Data<AppState>,
    keep: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let Ok(keep) = chrono::Duration::from_std(keep) else {
                    return;
                };
                let cutoff = chrono::Utc::now() - keep;
                for id in st.tenants().keys() {
                    match crate::governance::audit::enforce_retention(&st.store, id, cutoff) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(tenant = %id, pruned = n, "audit retention"),
                        Err(e) => {
                            tracing::error!(tenant = %id, error = %e, "audit retention failed")
                        }
                    }
                }
            })
            .await;
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    })
}

/// `/healthz` and `/readyz` with a method other than GET: 405 with `Allow: GET`, closing the
/// connection when a body was announced (it is never read).
async fn probe_method_not_allowed(req: actix_web::HttpRequest, body: web::Payload) -> HttpResponse {
    let resp = HttpResponse::MethodNotAllowed()
        .insert_header((actix_web::http::header::ALLOW, "GET"))
        .json(json!({"status": "method not allowed"}));
    scim_routes::unread_body_closes(&req, body, resp)
}

/// A body sent with a health check is never read: the connection closes after the answer
/// rather than waiting for the body's end, which a client that stalls a chunked body never
/// sends (issue 15: a slow sender must not pin a connection, token or not).
async fn healthz(req: actix_web::HttpRequest, body: web::Payload) -> HttpResponse {
    scim_routes::unread_body_closes(&req, body, HttpResponse::Ok().json(json!({"status": "ok"})))
}

/// Ready while the store serves (CONTRACT §2): one vendor's outage must not take the bridge
/// out of a load balancer and fail every tenant, since the engine queues its writes. The public
/// answer is the status code and a body that names nothing (issue 15: tenant ids are customer
/// names); the detailed readiness is on the admin listener.
async fn readyz(
    req: actix_web::HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut ready = true;
    for t in state.tenants().values() {
        if t.connector.ready().await.is_err() {
            ready = false;
            break;
        }
    }
    let resp = if ready {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "not ready"}))
    };
    scim_routes::unread_body_closes(&req, body, resp)
}

/// The detailed readiness (admin listener only): as `/readyz`, plus the store's problem and
/// every tenant whose vendor is unavailable, and why.
pub async fn detailed_readiness(state: web::Data<AppState>) -> HttpResponse {
    let mut store_down = None;
    let mut vendors = serde_json::Map::new();
    for (id, t) in state.tenants().iter() {
        if let Err(reason) = t.connector.ready().await {
            store_down.get_or_insert(reason);
        }
        let vendor = t.connector.vendor_status().await;
        state
            .metrics
            .tenant_ready
            .with_label_values(&[id.as_str()])
            .set(i64::from(vendor.is_ok()));
        if let Err(reason) = vendor {
            vendors.insert(id.clone(), json!(reason));
        }
    }
    let mut body = match &store_down {
        None => json!({"status": "ready"}),
        Some(_) => json!({"status": "not ready"}),
    };
    if let Some(reason) = &store_down {
        body["store"] = json!(reason);
    }
    body["vendors_unavailable"] = serde_json::Value::Object(vendors);
    if store_down.is_none() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `/metrics` (admin listener only).
pub async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    for (id, t) in state.tenants().iter() {
        if let Some(stats) = t.connector.engine_stats() {
            state.metrics.record_engine(id, &stats);
        }
        if let Some(engine) = t.connector.engine() {
            let p = engine.sync_progress();
            let m = &state.metrics;
            m.sync_running
                .with_label_values(&[id.as_str()])
                .set(i64::from(p.running));
            m.sync_users
                .with_label_values(&[id.as_str()])
                .set(p.users_seen as i64);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

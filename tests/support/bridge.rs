//! The bridge in the test's own process, for any vendor: built from a `Config` (or a config
//! file's text, read as `serve` reads it) and started as `serve` starts it, or around a
//! connector's engine with no background work; what its admin listener's `/metrics` say (the
//! outbox's depth);
//! and the wait for a vendor's end state after the IdP's last write (`settle`), with the
//! vendor's checker passed in.
//!
//! Include it beside `idp.rs` (it uses `super::idp`):
//!
//! ```ignore
//! #[path = "support/idp.rs"]
//! mod idp;
//! #[path = "support/bridge.rs"]
//! mod bridge;
//! ```
#![allow(dead_code)]

use super::idp::Idp;
use scim_bridge::config::{Config, TenantConfig};
use scim_bridge::engine::Engine;
use scim_bridge::server::{self, RunningServer, StartError};
use scim_bridge::store::Store;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A config with `tenant` alone, on a free loopback port, its store in `data_dir`.
pub fn config(tenant: TenantConfig, data_dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        tenants: vec![tenant],
        body_limit_bytes: 1 << 20,
        limits: Default::default(),
        trusted_proxies: Vec::new(),
        jwt_max_lifetime: scim_bridge::config::DEFAULT_JWT_MAX_LIFETIME,
        admin: scim_bridge::config::AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
        audit: Default::default(),
        report: Default::default(),
        tls: None,
    }
}

/// The bridge as `serve` builds and starts it (start-up check, background delivery and
/// observe). `build_state` signs in to the vendor synchronously: it runs off the async workers.
pub async fn start(config: &Config) -> Result<RunningServer, StartError> {
    let store = open_store(&config.data_dir).await;
    let mut cfg = config.clone();
    // Tests run side by side: none binds the fixed default admin port.
    if cfg.admin.listen == scim_bridge::config::default_admin_listen() {
        cfg.admin.listen = "127.0.0.1:0".parse().unwrap();
    }
    let state = tokio::task::spawn_blocking(move || server::build_state(&cfg, store))
        .await
        .unwrap()?;
    server::start(config.listen, state, Some(2))
}

/// What `serve` says when the config cannot start (`None`: it starts; nothing is served).
pub async fn start_error(config: Config) -> Option<String> {
    let store = open_store(&config.data_dir).await;
    tokio::task::spawn_blocking(move || server::build_state(&config, store).err())
        .await
        .unwrap()
        .map(|e| e.to_string())
}

/// The bridge of a config file's `text`, read as `serve` reads it (`Config::from_toml_str`) and
/// started by [`start`]; a refusal panics, naming `label`.
pub async fn serve_toml(label: &str, text: &str) -> RunningServer {
    let cfg = Config::from_toml_str(text, &|_| None)
        .unwrap_or_else(|e| panic!("{label}: config refused: {e}\n{text}"));
    start(&cfg)
        .await
        .unwrap_or_else(|e| panic!("{label}: bridge start: {e}"))
}

/// The bridge serving `tenant` through `engine` (already opened on `store`, its start-up work
/// done by the caller), with `workers` HTTP workers: no background work is started, so nothing
/// observes or delivers unless the test asks (writes are still delivered inline). It runs an
/// admin listener on a free port too, as `serve` does, for `/metrics` and the detailed
/// readiness.
pub fn serve_engine(
    tenant: &TenantConfig,
    engine: Arc<Engine>,
    store: Store,
    workers: usize,
) -> RunningServer {
    use scim_bridge::auth::TenantAuth;
    use scim_bridge::engine::EngineConnector;
    use scim_bridge::server::{metrics::Metrics, AppState, Tenant};
    let id = tenant.id.to_string();
    let mut tenants = std::collections::BTreeMap::new();
    tenants.insert(
        id.clone(),
        Arc::new(Tenant {
            id: id.clone(),
            auth: TenantAuth::new(&tenant.id, &tenant.tokens, None),
            connector: Arc::new(EngineConnector(engine)),
        }),
    );
    let app = AppState::new(tenants, Metrics::new(), 1 << 20, store);
    let mut state = server::ServerState::from(app);
    // `config` puts the admin listener on a free port; its data dir is not read here.
    let admin_config = config(tenant.clone(), std::path::Path::new("."));
    state.admin = Some(scim_bridge::admin::AdminState::from_config(&admin_config));
    server::start("127.0.0.1:0".parse().unwrap(), state, Some(workers)).unwrap()
}

/// The bridge's root URL.
pub fn root(server: &RunningServer) -> String {
    format!("http://{}", server.addr)
}

/// The root URL of the bridge's admin listener (`/metrics`, detailed `/readyz`, `/admin`).
pub fn admin_root(server: &RunningServer) -> String {
    format!(
        "http://{}",
        server
            .admin_addr()
            .expect("the bridge runs its admin listener")
    )
}

/// A series of the bridge's `/metrics` (served by the admin listener at `admin_root`) that
/// starts with `series` (0 when absent).
pub async fn metric(admin_root: &str, series: &str) -> f64 {
    metrics_text(admin_root)
        .await
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

/// The bridge's whole `/metrics`, from its admin listener at `admin_root`.
pub async fn metrics_text(admin_root: &str) -> String {
    reqwest::get(format!("{admin_root}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `tenant`'s outbox depth in `state` (`pending` or `failed`), from the admin listener.
pub async fn outbox_depth(admin_root: &str, tenant: &str, state: &str) -> f64 {
    metric(
        admin_root,
        &format!("scim_outbox_depth{{state=\"{state}\",tenant=\"{tenant}\"}}"),
    )
    .await
}

/// `tenant`'s outbox in words, for a failure message: `outbox pending N, failed M`.
pub async fn outbox_summary(admin_root: &str, tenant: &str) -> String {
    format!(
        "outbox pending {}, failed {}",
        outbox_depth(admin_root, tenant, "pending").await,
        outbox_depth(admin_root, tenant, "failed").await
    )
}

/// Calls `diff` every `every` until it is empty; panics with `what` and the last differences
/// once `limit` has passed since the first call.
pub async fn converge<F, Fut>(limit: Duration, every: Duration, what: &str, mut diff: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let started = Instant::now();
    loop {
        let d = diff().await;
        if d.is_empty() {
            return;
        }
        assert!(started.elapsed() < limit, "{what}: {}", d.join("; "));
        tokio::time::sleep(every).await;
    }
}

/// The vendor side of [`settle`]: how to read the vendor, how its state differs from the run's
/// expected end state, and what to add to a failure.
pub trait Checker {
    type State;
    /// The vendor's name in messages ("Tableau").
    const VENDOR: &'static str;
    /// The vendor's state; `None` when a read met a fault.
    async fn read(&self) -> Option<Self::State>;
    /// How `state` differs from the end state (empty: reached).
    fn diff(&self, state: &Self::State) -> Vec<String>;
    /// The users the bridge must list exactly (by userName).
    fn users(&self, state: &Self::State) -> BTreeSet<String>;
    /// Context for a failure or a trace line (the outbox's depth, the vendor routes used).
    async fn context(&self, idp: &Idp) -> String;
    /// When set, every read that still differs is printed with `context`.
    fn trace(&self) -> bool {
        false
    }
}

/// Reads the vendor every 500 ms until `checker` finds the end state, failing `limit` after the
/// IdP's last write with what still differs; then the bridge must list exactly the vendor's
/// users (no orphan mapping, no user it lost). The vendor's state.
pub async fn settle<C: Checker>(idp: &Idp, checker: &C, limit: Duration) -> C::State {
    let label = &idp.label;
    let vendor = C::VENDOR;
    let last_write = idp.last_write();
    let deadline = last_write + limit;
    let mut last = format!("{vendor} never answered a full read");
    let state = loop {
        if let Some(state) = checker.read().await {
            let diff = checker.diff(&state);
            if diff.is_empty() {
                break state;
            }
            last = diff.join("; ");
            if checker.trace() {
                eprintln!(
                    "{label}: +{:?} after the last write, {}: {last}",
                    last_write.elapsed(),
                    checker.context(idp).await
                );
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "{label}: {vendor}'s end state not reached within {limit:?} of the last write: \
                 {last}; {}",
                checker.context(idp).await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{label}: end state in {vendor} {:?} after the last write; {}",
        last_write.elapsed(),
        idp.summary()
    );
    assert_eq!(
        idp.all_user_names().await,
        checker.users(&state),
        "{label}: the bridge's /Users differ from {vendor}'s users"
    );
    state
}

/// Asserts `tenant`'s outbox holds no refused change.
pub async fn assert_no_refused(idp: &Idp, tenant: &str) {
    assert_eq!(
        outbox_depth(idp.admin_root(), tenant, "failed").await,
        0.0,
        "{}: the outbox holds refused changes",
        idp.label
    );
}

/// Opens the store in `data`, waiting (up to 10 s) for a bridge stopped just before on the same
/// directory to let go of it: its background tasks drop their handle on the store a moment
/// after `stop` returns, and sled refuses a second holder (`WouldBlock` on its lock file).
pub async fn open_store(data: &std::path::Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(data) {
            Ok(store) => return store,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open the store in {}: {e}", data.display()),
        }
    }
}

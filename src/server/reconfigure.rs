//! Config reload (issue 14, CONTRACT §6): SIGHUP re-reads the config file and applies its
//! tenants, their tokens and keys, and the admin listener's tokens and tenant settings, while
//! the bridge serves.
//!
//! All or nothing. The new file is read and checked as `config check` does, and every new or
//! changed tenant's connector is opened (its start-up check included) before anything is
//! swapped. A bad file, or a tenant whose connector refuses to start, is refused with its
//! problems logged (each with its key path), and the running set serves on.
//!
//! The swap is one pointer: a request takes the tenant set as it is when it starts and keeps
//! its tenant until it ends, so nothing in flight is dropped. A tenant whose connector
//! settings did not change ([`TenantConfig::connector_fingerprint`]) keeps its running
//! connector, and only its tokens are replaced. A changed tenant gets a new engine, which
//! shares its object locks with the old one (see `engine::TenantShared`) while the old one
//! finishes its in-flight work: the two never reconcile one object at once. A removed
//! tenant's engine ends when its last request does; its data stays in the store, so adding
//! it back resumes it.
//!
//! The public listener's `[limits]` (deadlines, concurrency, rates) are applied too. What only
//! a restart changes (the listeners' addresses, `data_dir`, the `[tls]` paths — their files are
//! reloaded by [`super::tls`] —, `body_limit`, `trusted_proxies`, `[audit] retention`, the
//! admin listener's deadlines) is logged as such, and the rest of the file is applied.

use super::limits::Guard;
use super::{open_connector, start_checks, tenant_with, AppState, TenantMap};
use crate::admin::AdminState;
use crate::config::{Config, TenantConfig};
use actix_web::web;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the config comes from: the file, and the command line's overrides, which win over it
/// on every reload as they did at start.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
}

impl ConfigSource {
    /// Reads and checks the file, with the overrides applied.
    pub fn read(&self) -> Result<Config, Vec<String>> {
        let mut config = Config::load(&self.path).map_err(|e| {
            e.problems
                .iter()
                .map(|p| format!("{}: {p}", self.path.display()))
                .collect::<Vec<_>>()
        })?;
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = self.admin_listen {
            config.admin.listen = a;
        }
        if config.tenants.is_empty() {
            return Err(vec![format!(
                "{}: no tenants configured",
                self.path.display()
            )]);
        }
        Ok(config)
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied: the tenants added, removed, and with a new connector (the others kept theirs
    /// and got the new tokens).
    Applied {
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
        /// Settings that changed in the file but need a restart.
        restart_needed: Vec<&'static str>,
    },
    /// Refused: the problems, each naming its file and key; the old config serves on.
    Refused(Vec<String>),
}

/// Applies reloads to a running server.
pub struct Reconfigurer {
    source: ConfigSource,
    app: web::Data<AppState>,
    guard: web::Data<Guard>,
    admin: Option<web::Data<AdminState>>,
    /// What is served now: each tenant's connector fingerprint, and the restart-only
    /// settings as they were read at start. One reload at a time.
    current: tokio::sync::Mutex<Served>,
}

struct Served {
    fingerprints: BTreeMap<String, [u8; 32]>,
    restart_only: Vec<(&'static str, String)>,
}

/// The settings a reload cannot apply, rendered for comparison (none holds a secret).
fn restart_only(c: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("listen", c.listen.to_string()),
        ("data_dir", c.data_dir.display().to_string()),
        ("body_limit", c.body_limit_bytes.to_string()),
        // The public listener's `[limits]` are applied; the admin listener keeps its
        // deadlines until a restart.
        (
            "admin deadlines ([limits] body_read_timeout, request_timeout)",
            format!(
                "{:?}",
                (c.limits.body_read_timeout, c.limits.request_timeout)
            ),
        ),
        ("trusted_proxies", format!("{:?}", c.trusted_proxies)),
        ("audit.retention", format!("{:?}", c.audit.retention)),
        ("tls", format!("{:?}", c.tls)),
        ("admin.listen", c.admin.listen.to_string()),
        ("admin.tls", c.admin.tls.to_string()),
    ]
}

impl Reconfigurer {
    /// For a server started from `config`, read from `source`.
    pub fn new(
        source: ConfigSource,
        config: &Config,
        app: web::Data<AppState>,
        guard: web::Data<Guard>,
        admin: Option<web::Data<AdminState>>,
    ) -> Reconfigurer {
        Reconfigurer {
            source,
            app,
            guard,
            admin,
            current: tokio::sync::Mutex::new(Served {
                fingerprints: fingerprints(&config.tenants),
                restart_only: restart_only(config),
            }),
        }
    }

    /// Reads the file again and applies it, or refuses it whole (logged and counted in
    /// `scim_config_reloads_total` either way).
    pub async fn reload(&self) -> Outcome {
        let outcome = self.try_reload().await;
        let result = match outcome {
            Outcome::Applied { .. } => "applied",
            Outcome::Refused(_) => "refused",
        };
        self.app
            .metrics
            .config_reloads
            .with_label_values(&[result])
            .inc();
        outcome
    }

    async fn try_reload(&self) -> Outcome {
        let mut served = self.current.lock().await;
        let source = self.source.clone();
        let read = tokio::task::spawn_blocking(move || source.read())
            .await
            .unwrap_or_else(|e| Err(vec![format!("reading the config failed: {e}")]));
        let mut config = match read {
            Ok(c) => c,
            Err(problems) => return refused(problems),
        };
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let old = self.app.tenants();
        let new_prints = fingerprints(&config.tenants);
        let kept = |t: &TenantConfig| {
            let id = t.id.as_str();
            old.get(id)
                .filter(|_| served.fingerprints.get(id) == new_prints.get(id))
                // A stopped tenant is opened and checked again: what stopped it may have been
                // fixed on the vendor's side (an account made admin, a group created).
                .filter(|running| !running.connector.engine().is_some_and(|e| e.is_stopped()))
                .map(|running| running.connector.clone())
        };
        // The start-up checks of the new and changed tenants, concurrently (a sign-in each),
        // off the async workers.
        let to_open: Vec<(usize, TenantConfig)> = config
            .tenants
            .iter()
            .enumerate()
            .filter(|(_, t)| kept(t).is_none())
            .map(|(i, t)| (i, t.clone()))
            .collect();
        let checks = tokio::task::spawn_blocking(move || {
            let refs: Vec<(usize, &TenantConfig)> = to_open.iter().map(|(i, t)| (*i, t)).collect();
            start_checks::start(&refs).all()
        })
        .await
        .unwrap_or_default();
        let mut checks = checks.into_iter();
        let mut map = TenantMap::new();
        // Opened, not started: nothing of the new config runs until the reload is decided.
        let mut to_start = Vec::new();
        let (mut added, mut changed) = (Vec::new(), Vec::new());
        for (index, t) in config.tenants.iter().enumerate() {
            let id = t.id.as_str();
            let connector = match kept(t) {
                Some(c) => c,
                None => {
                    if old.contains_key(id) {
                        changed.push(id.to_string());
                    } else {
                        added.push(id.to_string());
                    }
                    let Some(check) = checks.next() else {
                        return refused(vec![format!(
                            "tenants[{index}]: the start-up check did not run"
                        )]);
                    };
                    // Opened before the swap, started after it: a tenant that cannot start
                    // refuses the whole reload, and the engines opened so far, which ran
                    // nothing, are dropped with `map`.
                    match open_connector(t, index, &self.app.store, &self.app.metrics, check) {
                        Ok(opened) => {
                            // Served once started; the map holds it until then.
                            let c = opened.connector.clone();
                            to_start.push(opened);
                            c
                        }
                        Err(e) => return refused(vec![e.to_string()]),
                    }
                }
            };
            match tenant_with(&config, t, connector, &self.app.store) {
                Ok(tenant) => {
                    map.insert(id.to_string(), tenant);
                }
                Err(e) => return refused(vec![e.to_string()]),
            }
        }
        let removed: Vec<String> = old
            .keys()
            .filter(|id| !map.contains_key(*id))
            .cloned()
            .collect();
        let now = restart_only(&config);
        let restart_needed: Vec<&'static str> = now
            .iter()
            .zip(&served.restart_only)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        let replaced = self.app.replace_tenants(map);
        // The engines of changed and removed tenants stop starting work, then the new engines
        // (sharing their locks) start; requests in flight finish on the old ones.
        for (id, old) in replaced.iter() {
            let kept = self
                .app
                .tenant(id)
                .is_some_and(|now| Arc::ptr_eq(&now.connector, &old.connector));
            if !kept {
                if let Some(engine) = old.connector.engine() {
                    engine.retire();
                }
            }
        }
        for opened in to_start {
            opened.start();
        }
        // Requests in flight keep their deadlines and slots; a removed tenant's slots and rate
        // budget go, and an added one's are made at its first request.
        self.guard.update_limits(&config.limits);
        let ids: std::collections::BTreeSet<String> = config
            .tenants
            .iter()
            .map(|t| t.id.as_str().to_string())
            .collect();
        self.guard.retain_tenants(|t| ids.contains(t));
        for id in &removed {
            self.app.metrics.forget_tenant(id);
        }
        if let Some(admin) = &self.admin {
            admin.reconfigure(&config);
        }
        // The verifiers hold hashes: the plaintext static tokens are not kept.
        config.forget_static_tokens();
        served.fingerprints = new_prints;
        for key in &restart_needed {
            tracing::warn!(key, "config reload: this setting changed in the file and takes effect at the next restart");
        }
        tracing::info!(
            added = ?added,
            removed = ?removed,
            changed = ?changed,
            tenants = config.tenants.len(),
            "config reloaded"
        );
        Outcome::Applied {
            added,
            removed,
            changed,
            restart_needed,
        }
    }

    /// Reloads on every trigger of `rx` (SIGHUP) until the senders are gone.
    pub fn spawn(
        self: Arc<Self>,
        mut rx: tokio::sync::broadcast::Receiver<super::reload::Trigger>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while super::reload::next(&mut rx).await.is_some() {
                self.reload().await;
            }
        })
    }
}

fn fingerprints(tenants: &[TenantConfig]) -> BTreeMap<String, [u8; 32]> {
    tenants
        .iter()
        .map(|t| (t.id.as_str().to_string(), t.connector_fingerprint()))
        .collect()
}

fn refused(problems: Vec<String>) -> Outcome {
    for p in &problems {
        tracing::error!(problem = %p, "config reload refused; the running config is kept");
    }
    Outcome::Refused(problems)
}

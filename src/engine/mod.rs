//! The provisioning engine: one vendor-neutral core that converges every vendor to what the
//! IdP asked (ARCHITECTURE.md, "The engine"). It is level-triggered, like a Kubernetes
//! controller:
//!
//! - **desired** state is the SCIM directory as the IdP wrote it, plus the role rules;
//! - **applied** state is what the vendor last confirmed, per object ([`state`]);
//! - the **outbox** holds the objects whose applied state differs from the desired one, with
//!   their attempts, next try and last error — durable, in the same tree, written in the same
//!   atomic batch as the desired state;
//! - [`reconcile`] compares the two for one object and makes the adapter calls that close the
//!   gap. It is idempotent and rolls forward only, so it is safe to run again after a crash at
//!   any point. One code path serves the IdP's writes (inline, within a short deadline),
//!   retries ([`delivery`]), crash repair (the outbox survives kill -9), drift and rule edits
//!   ([`observe`] marks objects dirty).
//!
//! A vendor adds only wire calls behind [`adapter::VendorAdapter`] and a few capability flags.
//!
//! ## The write path
//! Validate (SCIM rules, the vendor's required attributes), then commit the desired state and
//! the outbox mark in one batch, flush, and reconcile inline for at most the inline deadline:
//! - done → the IdP's answer;
//! - refused by the vendor for good → the desired change is rolled back and the IdP gets the
//!   matching SCIM 4xx with the vendor's reason;
//! - a transient failure or the deadline → with `on_vendor_unavailable = "queue"` (default) the
//!   write is answered as a success and the outbox delivers it; with `"fail"` it is rolled back
//!   and answered 503 with `Retry-After`. While the vendor's breaker is open, writes are queued
//!   at once, without trying.
//!
//! ## Dry run
//! A tenant with `dry_run = true` takes the same write path up to the commit: the desired state
//! and its outbox mark are stored and the IdP gets the answer it would get otherwise. Nothing is
//! reconciled, inline or in the background, so no vendor write is sent; reads still are (the
//! role catalog, observe), so drift and role-rule corrections land in the outbox as well. The
//! outbox is then the plan ([`Engine::plan`], computed from desired and applied state without a
//! vendor call). Started again with `dry_run = false` on the same store, delivery drains that
//! outbox like any other and the vendor converges.

pub mod adapter;
pub mod delivery;
pub mod observe;
pub mod plan;
mod plan_cache;
pub mod reconcile;
pub mod role_table;
mod schedule;
mod scim_seam;
pub mod state;
pub mod sweep;
mod write_path;

pub use scim_seam::EngineConnector;

use crate::config::{OnVendorUnavailable, RoleRules};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::{ScimError, ScimResult};
use crate::store::audit::AuditLog;
use crate::store::directory::Directory;
use crate::store::{Batch, Store, StoreError};
use adapter::{AdapterError, Capabilities, Profile, VendorAdapter};
use role_table::RoleTable;
use serde_json::Value;
use state::{put, Actor, OutboxEntry, Records};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long a write waits for its inline reconcile before it is answered from the outbox.
pub const DEFAULT_INLINE_DEADLINE: Duration = Duration::from_secs(5);
/// How often the vendor directory is observed (the first observe runs at start).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Vendor calls of one operation that run at once (membership fan-out, delivery).
pub const FAN_OUT: usize = 16;
/// Inline deliveries out of their deadline in a row after which writes are queued at once.
const STALLS_BEFORE_QUEUEING: u32 = 3;
/// How long writes are queued at once after that (then one is tried inline again).
const STALL_HOLD: Duration = Duration::from_secs(15);
/// How long a lookup waits for the first observe before it is answered from the directory as it
/// is (a vendor user it misses is taken over, never duplicated, when the IdP then creates it).
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// A fixed set of async mutexes addressed by key hash: per-object serialisation without a map
/// that grows with the directory. Owned guards, so a reconcile that outlives the IdP's request
/// keeps the object until it ends. A stripe's mutex is made the first time it is locked: made
/// up front, the 2,560 mutexes of an engine's four sets cost ~200 KB per tenant, which 1,000
/// tenants paid in memory and in start-up time (most of it zeroing fresh pages, by `perf`).
pub(crate) struct Stripes(Vec<std::sync::OnceLock<Arc<tokio::sync::Mutex<()>>>>);

pub(crate) type ObjectGuard = tokio::sync::OwnedMutexGuard<()>;

impl Stripes {
    fn new(n: usize) -> Stripes {
        Stripes((0..n).map(|_| std::sync::OnceLock::new()).collect())
    }
    fn index(&self, key: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % self.0.len()
    }
    fn stripe(&self, i: usize) -> Arc<tokio::sync::Mutex<()>> {
        self.0[i].get_or_init(Default::default).clone()
    }
    /// Whether two keys share a stripe (a holder of one already holds the other).
    pub(crate) fn same(&self, a: &str, b: &str) -> bool {
        self.index(a) == self.index(b)
    }
    /// Whether someone holds the key's stripe now (a reconcile may be running).
    pub(crate) fn is_held(&self, key: &str) -> bool {
        self.0[self.index(key)]
            .get()
            .is_some_and(|m| m.try_lock().is_err())
    }
    pub(crate) async fn lock(&self, key: &str) -> ObjectGuard {
        self.stripe(self.index(key)).lock_owned().await
    }
    /// Locks every key's stripe in ascending stripe order (two callers never wait in a cycle).
    pub(crate) async fn lock_all<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<ObjectGuard> {
        let idx: BTreeSet<usize> = keys.into_iter().map(|k| self.index(k)).collect();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripe(i).lock_owned().await);
        }
        guards
    }
}

/// Counters of deliveries (inline and background), by outcome, for `/metrics`.
#[derive(Default)]
pub struct DeliveryCounters {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    /// Refusals for lack of capacity (also counted in `failed`).
    pub no_capacity: AtomicU64,
    /// IdP deletes the vendor answered by keeping the user without access (Tableau 409003).
    pub kept: AtomicU64,
}

/// The engine's view for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Objects pending (not failed).
    pub pending: u64,
    /// Objects refused for good, kept as `failed`.
    pub failed: u64,
    /// Seconds since the oldest pending change was made (0 when none).
    pub oldest_pending_s: f64,
    pub delivered: u64,
    pub retried: u64,
    pub refused: u64,
    /// Of `refused`: refused for lack of capacity (no free licence seat).
    pub refused_capacity: u64,
    /// IdP deletes that left the vendor user in place without access (it owns content).
    pub removals_kept: u64,
    /// The vendor client's current send rate (requests per second).
    pub send_rate: f64,
}

/// The per-tenant settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub tenant: String,
    pub tenant_index: usize,
    pub rules: RoleRules,
    pub on_vendor_unavailable: OnVendorUnavailable,
    pub inline_deadline: Duration,
    pub sync_interval: Duration,
    /// Store purpose name of the directory tree (kept per vendor, e.g. `sisense`).
    pub purpose: &'static str,
    /// `[tenants.attributes]`: vendor attribute ← SCIM attribute path, parsed.
    pub attributes: Vec<(String, crate::scim::path::AttrPath)>,
    /// `dry_run = true`: the IdP is answered in full, nothing is written to the vendor; the
    /// outbox holds the plan (`scim-bridge plan`).
    pub dry_run: bool,
}

impl EngineSettings {
    /// Defaults, with the environment's overrides (`SCIM_BRIDGE_SYNC_INTERVAL_S`,
    /// `SCIM_BRIDGE_INLINE_DEADLINE_MS`).
    pub fn from_env(
        tenant: &str,
        tenant_index: usize,
        rules: RoleRules,
        on_vendor_unavailable: OnVendorUnavailable,
        purpose: &'static str,
    ) -> EngineSettings {
        let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
        EngineSettings {
            tenant: tenant.to_string(),
            tenant_index,
            rules,
            on_vendor_unavailable,
            inline_deadline: env("SCIM_BRIDGE_INLINE_DEADLINE_MS")
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_INLINE_DEADLINE),
            sync_interval: env("SCIM_BRIDGE_SYNC_INTERVAL_S")
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_SYNC_INTERVAL),
            purpose,
            attributes: Vec::new(),
            dry_run: false,
        }
    }

    /// With the tenant's `[tenants.attributes]` (paths the config reader validated; one that
    /// does not parse is left out, logged).
    pub fn with_attributes(mut self, map: &std::collections::BTreeMap<String, String>) -> Self {
        self.attributes = map
            .iter()
            .filter_map(|(name, path)| match crate::scim::path::attribute_path(path) {
                Ok(p) => Some((name.clone(), p)),
                Err(why) => {
                    tracing::error!(tenant = %self.tenant, attribute = %name, %why, "attribute path left out");
                    None
                }
            })
            .collect();
        self
    }
}

/// A source of the vendor client's current send rate (the engine does not know the client).
pub type SendRate = Box<dyn Fn() -> f64 + Send + Sync>;

pub struct Engine {
    pub(crate) settings: EngineSettings,
    pub(crate) dir: Directory,
    pub(crate) audit: AuditLog,
    pub(crate) adapter: Arc<dyn VendorAdapter>,
    pub(crate) caps: Capabilities,
    pub(crate) roles: parking_lot::RwLock<Option<Arc<RoleTable>>>,
    /// The last plan's counts and item index, brought up to date by later pages
    /// ([`plan_cache::PlanCache`]).
    pub(crate) plan_cache: plan_cache::PlanCache,
    /// A problem that needs the operator and stops the tenant ([`Engine::stop`]): role rules
    /// that do not resolve, or a start-up check that failed after the start.
    pub(crate) fatal: parking_lot::RwLock<Option<String>>,
    /// Until when the roles are to come from the tenant's start-up check, still running after
    /// the start (`server::start_checks`): the engine does not sign in for them itself
    /// meanwhile, so the vendor sees one sign-in, not two (a Tableau PAT allows one session).
    start_check: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Serialises uniqueness checks with the commits they guard, and count changes.
    pub(crate) commit_lock: Arc<parking_lot::Mutex<()>>,
    /// Delivery locks: one reconcile of an object at a time (held across vendor calls).
    pub(crate) user_locks: Arc<Stripes>,
    pub(crate) group_locks: Arc<Stripes>,
    /// Document locks: one read-modify-write of an object's desired state at a time (held
    /// only while it is read, checked and committed, never across a vendor call, so an IdP
    /// write never waits for the vendor).
    pub(crate) user_docs: Arc<Stripes>,
    pub(crate) group_docs: Arc<Stripes>,
    pub(crate) synced: tokio::sync::watch::Sender<bool>,
    /// Wakes the delivery loop when something was queued (shared with the loop, which must
    /// not keep the engine alive while it waits).
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// Wakes the observe loop before its interval is up (an operator's "sync now"); shared
    /// with the loop like `wake`.
    pub(crate) sync_wake: Arc<tokio::sync::Notify>,
    pub(crate) counters: Arc<DeliveryCounters>,
    pub(crate) role_changes: Option<prometheus::IntCounter>,
    pub(crate) send_rate: Option<SendRate>,
    /// While an observe runs (`Some`): the objects written or reconciled since it began, which
    /// it does not overwrite with its older pages. One observe at a time per tenant.
    pub(crate) recent: Recent,
    /// Inline deliveries that ran out of the deadline in a row, and until when writes are
    /// queued at once because of them (a vendor that hangs rather than fails never opens the
    /// client's breaker).
    pub(crate) stall: parking_lot::Mutex<(u32, Option<Instant>)>,
    /// The outbox mark each running reconcile started from (see `reconcile::commit_step`).
    pub(crate) fences: Fences,
    /// How far the running (or the last) observe got ([`Engine::sync_progress`]); shared with
    /// the adapter's page callbacks through a task-local while an observe runs.
    pub(crate) progress: Arc<observe::ProgressCell>,
    /// Set until the first delivery round of this process: a backoff computed by an earlier
    /// process (a vendor that was timing out before a restart) is not honoured, so what a
    /// kill left half-done is finished as soon as the bridge is back, not minutes later.
    pub(crate) first_round: Arc<std::sync::atomic::AtomicBool>,
    /// Set by a config reload that replaced or removed the tenant: the loops end, no new
    /// round, observe or sweep starts, and only the work of requests already in flight is
    /// finished (under the locks it shares with the new engine).
    retired: std::sync::atomic::AtomicBool,
    /// One observe of the tenant at a time, across engines (see [`TenantShared`]).
    pub(crate) observing: Arc<tokio::sync::Mutex<()>>,
    /// Keeps the tenant's shared state registered while this engine lives.
    _shared: Arc<TenantShared>,
}

type Recent = Arc<parking_lot::Mutex<Option<std::collections::HashSet<String>>>>;
type Fences = Arc<parking_lot::Mutex<std::collections::HashMap<(ResourceKind, String), u64>>>;

/// What every engine of one tenant of one store shares. A config reload (SIGHUP) replaces a
/// changed tenant's engine while the old one finishes its in-flight requests and inline
/// deliveries: both then reconcile under the same object locks, commit under the same commit
/// lock and fences, observe one at a time, and count into the same counters, so the overlap
/// can neither send an object's change twice nor reset `/metrics`.
struct TenantShared {
    commit_lock: Arc<parking_lot::Mutex<()>>,
    user_locks: Arc<Stripes>,
    group_locks: Arc<Stripes>,
    user_docs: Arc<Stripes>,
    group_docs: Arc<Stripes>,
    counters: Arc<DeliveryCounters>,
    recent: Recent,
    fences: Fences,
    progress: Arc<observe::ProgressCell>,
    observing: Arc<tokio::sync::Mutex<()>>,
    /// The delivery loops' wake-up: a change the old engine queues wakes the new one's loop.
    wake: Arc<tokio::sync::Notify>,
    /// "The first delivery round of this process" is per tenant, not per engine: a reload's
    /// new engine honours the backoffs the old one set.
    first_round: Arc<std::sync::atomic::AtomicBool>,
}

impl TenantShared {
    fn new() -> TenantShared {
        TenantShared {
            commit_lock: Arc::new(parking_lot::Mutex::new(())),
            user_locks: Arc::new(Stripes::new(1024)),
            group_locks: Arc::new(Stripes::new(256)),
            user_docs: Arc::new(Stripes::new(1024)),
            group_docs: Arc::new(Stripes::new(256)),
            counters: Arc::default(),
            recent: Arc::default(),
            fences: Arc::default(),
            progress: Arc::default(),
            observing: Arc::default(),
            wake: Arc::default(),
            first_round: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// The live shared state of `tenant` in the store at `data_dir`, or a new one. Keyed by
    /// the store too: tests run many stores in one process, with the same tenant ids.
    fn of(data_dir: &std::path::Path, tenant: &str) -> Arc<TenantShared> {
        type Registry =
            parking_lot::Mutex<std::collections::HashMap<(PathBuf, String), Weak<TenantShared>>>;
        static REGISTRY: std::sync::LazyLock<Registry> =
            std::sync::LazyLock::new(Registry::default);
        let mut reg = REGISTRY.lock();
        let key = (data_dir.to_path_buf(), tenant.to_string());
        if let Some(live) = reg.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        reg.retain(|_, w| w.strong_count() > 0);
        let fresh = Arc::new(TenantShared::new());
        reg.insert(key, Arc::downgrade(&fresh));
        fresh
    }
}

fn unavailable_answer(reason: &str, retry_after: Option<Duration>) -> ScimError {
    ScimError::unavailable(
        format!("the vendor is unavailable: {reason}"),
        retry_after.map(|d| d.as_secs().max(1)).unwrap_or(5),
    )
}

impl Engine {
    /// Opens the engine of one tenant over `adapter` (nothing is sent yet).
    pub fn open(
        store: &Store,
        settings: EngineSettings,
        adapter: Arc<dyn VendorAdapter>,
        role_changes: Option<prometheus::IntCounter>,
        send_rate: Option<SendRate>,
    ) -> Result<Arc<Engine>, StoreError> {
        let caps = adapter.capabilities().clone();
        let mut schemas = SchemaRegistry::default();
        for attr in caps.required_user_attributes {
            schemas.require(ResourceKind::User, attr);
        }
        for attr in caps.immutable_user_attributes {
            schemas.make_immutable(ResourceKind::User, attr);
        }
        let dir = Directory::open(store, &settings.tenant, settings.purpose, schemas)?;
        let audit = AuditLog::open(store, &settings.tenant)?;
        if let Some(c) = &role_changes {
            // Raised to the audit log's count, never lowered: a reload opens the tenant's
            // engine again on the same counter, and a scrape must never see it go down.
            let (logged, shown) = (audit.role_changes(), c.get());
            if logged > shown {
                c.inc_by(logged - shown);
            }
        }
        let synced_before = Records(&dir).flag("synced")?.is_some();
        let shared = TenantShared::of(store.data_dir(), &settings.tenant);
        let (synced, _) = tokio::sync::watch::channel(synced_before);
        Ok(Arc::new(Engine {
            settings,
            dir,
            audit,
            adapter,
            caps,
            roles: parking_lot::RwLock::new(None),
            plan_cache: plan_cache::PlanCache::default(),
            fatal: parking_lot::RwLock::new(None),
            start_check: parking_lot::Mutex::new(None),
            commit_lock: shared.commit_lock.clone(),
            user_locks: shared.user_locks.clone(),
            group_locks: shared.group_locks.clone(),
            user_docs: shared.user_docs.clone(),
            group_docs: shared.group_docs.clone(),
            synced,
            wake: shared.wake.clone(),
            sync_wake: Arc::new(tokio::sync::Notify::new()),
            counters: shared.counters.clone(),
            role_changes,
            send_rate,
            recent: shared.recent.clone(),
            fences: shared.fences.clone(),
            stall: parking_lot::Mutex::new((0, None)),
            progress: shared.progress.clone(),
            first_round: shared.first_round.clone(),
            retired: std::sync::atomic::AtomicBool::new(false),
            observing: shared.observing.clone(),
            _shared: shared,
        }))
    }

    pub fn tenant(&self) -> &str {
        &self.settings.tenant
    }

    /// Retires the engine (a config reload replaced or removed its tenant): its background
    /// loops end and start nothing new; requests in flight finish.
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Loops asleep on their own notifies end at once.
        self.sync_wake.notify_one();
        self.wake.notify_one();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the tenant is a dry run: the IdP is answered, nothing is written to the vendor,
    /// and the outbox is the plan ([`Engine::plan`]).
    pub fn dry_run(&self) -> bool {
        self.settings.dry_run
    }

    /// The vendor's name ("Metabase").
    pub fn vendor(&self) -> &'static str {
        self.caps.vendor
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// Installs roles resolved before start.
    pub fn set_roles(&self, table: RoleTable) {
        *self.roles.write() = Some(Arc::new(table));
    }

    /// Stops the tenant for a problem only the operator can fix (`reason`, a sentence naming
    /// its key paths): its background work ends, the IdP gets 503 with the reason, and the admin
    /// `/readyz` names it, until a config reload or restart replaces the engine. The first
    /// reason stays.
    pub fn stop(&self, reason: String) {
        self.fatal.write().get_or_insert(reason);
        self.wake.notify_one();
    }

    /// The tenant's roles come from its start-up check, still running, for at most `wait`:
    /// the engine's own role load waits for it (called before the engine starts).
    pub(crate) fn await_start_check(&self, wait: std::time::Duration) {
        *self.start_check.lock() = Some(std::time::Instant::now() + wait);
    }

    /// The start-up check has answered (its roles set, or the tenant stopped) or is gone: the
    /// engine loads roles itself if it still has none.
    pub(crate) fn start_check_done(&self) {
        if self.start_check.lock().take().is_some() {
            self.sync_wake.notify_one();
        }
    }

    /// Whether the roles are still to come from a running start-up check.
    pub(crate) fn awaits_start_check(&self) -> bool {
        let mut until = self.start_check.lock();
        match *until {
            Some(t) if t > std::time::Instant::now() => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Whether the tenant is stopped ([`Engine::stop`]).
    pub fn is_stopped(&self) -> bool {
        self.fatal.read().is_some()
    }

    /// A SCIM request to a stopped tenant: 503 with the reason, so the IdP retries later and
    /// the operator sees why; nothing is read or written meanwhile.
    pub(crate) fn refuse_if_stopped(&self) -> ScimResult<()> {
        match self.fatal.read().as_deref() {
            Some(f) => Err(ScimError::unavailable(
                format!("the tenant is stopped: {f}"),
                300,
            )),
            None => Ok(()),
        }
    }

    /// Reads the vendor's roles and resolves the rules. `Err(Ok(problems))` for rules that do
    /// not resolve, `Err(Err(e))` when the vendor cannot be asked.
    pub async fn load_roles(
        &self,
    ) -> Result<RoleTable, Result<Vec<crate::config::Problem>, AdapterError>> {
        let catalog = self.adapter.roles().await.map_err(Err)?;
        RoleTable::build(self.settings.tenant_index, &self.settings.rules, catalog).map_err(Ok)
    }

    /// `Some(reason)` while the vendor is known to hang: writes are queued without waiting.
    pub(crate) fn stalled(&self) -> Option<String> {
        let (n, until) = *self.stall.lock();
        until.filter(|u| *u > Instant::now()).map(|_| {
            format!(
                "{} did not answer {n} deliveries in a row within {} ms; writes are queued until it does",
                self.caps.vendor,
                self.settings.inline_deadline.as_millis()
            )
        })
    }

    /// Records whether an inline delivery ran out of its deadline (3 in a row: queue at once for
    /// 15 s, then try again) or got an answer (the vendor answers again).
    pub(crate) fn note_stall(&self, timed_out: bool) {
        let mut s = self.stall.lock();
        if timed_out {
            s.0 += 1;
            if s.0 >= STALLS_BEFORE_QUEUEING {
                s.1 = Some(Instant::now() + STALL_HOLD);
            }
        } else {
            *s = (0, None);
        }
    }

    pub(crate) fn role_table(&self) -> Result<Arc<RoleTable>, AdapterError> {
        if let Some(f) = self.fatal.read().clone() {
            return Err(AdapterError::transient(format!(
                "the tenant is stopped: {f}"
            )));
        }
        self.roles
            .read()
            .clone()
            .ok_or_else(|| AdapterError::transient("the vendor's roles are not read yet"))
    }

    /// Counts, ages and rates for `/metrics`.
    pub fn stats(&self) -> EngineStats {
        let now = state::now_ms();
        let mut s = EngineStats {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            retried: self.counters.retried.load(Ordering::Relaxed),
            refused: self.counters.failed.load(Ordering::Relaxed),
            refused_capacity: self.counters.no_capacity.load(Ordering::Relaxed),
            removals_kept: self.counters.kept.load(Ordering::Relaxed),
            send_rate: self.send_rate.as_ref().map(|f| f()).unwrap_or(0.0),
            ..EngineStats::default()
        };
        let mut oldest = now;
        for (_, _, e) in Records(&self.dir).pending().flatten() {
            if e.failed {
                s.failed += 1;
            } else {
                s.pending += 1;
                oldest = oldest.min(e.since_ms);
            }
        }
        s.oldest_pending_s = now.saturating_sub(oldest) as f64 / 1000.0;
        s
    }

    /// Outbox entries, for tests and `plan`: (kind, SCIM id, entry).
    pub fn outbox(&self) -> Vec<(ResourceKind, String, OutboxEntry)> {
        Records(&self.dir).pending().flatten().collect()
    }

    /// Waits until the outbox is empty of pending (not failed) work, or `timeout` passes.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.outbox().iter().all(|(_, _, e)| e.failed) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until the directory has been observed once, so lookups see every vendor
    /// user; past `STARTUP_WAIT` the lookup goes ahead (never a 503 for a slow vendor).
    pub(crate) async fn wait_synced(&self) -> ScimResult<()> {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            self.refuse_if_stopped()?;
            if *self.synced.borrow() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::info!(tenant = %self.tenant(), "a lookup before the first read of the vendor directory is answered from the bridge's own");
                return Ok(());
            }
            let mut rx = self.synced.subscribe();
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
    }

    /// Commits a batch under the commit lock, then makes it durable.
    pub(crate) async fn commit(&self, batch: Batch) -> ScimResult<()> {
        {
            let _g = self.commit_lock.lock();
            self.dir.commit(batch)?;
        }
        self.dir.flush().await?;
        Ok(())
    }

    /// Adds an outbox mark for an object to `batch`: a new entry, or the existing one made due
    /// now (a write of a `failed` object retries it). The entry as written.
    pub(crate) fn mark(
        &self,
        batch: &mut Batch,
        kind: ResourceKind,
        sid: &str,
        cause: &str,
        actor: Actor,
    ) -> Result<OutboxEntry, StoreError> {
        let entry = match Records(&self.dir).outbox(kind, sid)? {
            Some(mut e) => {
                e.next_ms = state::now_ms();
                e.failed = false;
                // A new write is a new change: its refusal is audited again.
                e.capacity = false;
                e.attempts = 0;
                e.cause = cause.to_string();
                e.actor = actor;
                e.seq = state::next_seq();
                e
            }
            None => OutboxEntry::new(cause, actor),
        };
        self.touch(sid);
        put::outbox(batch, kind, sid, &entry);
        Ok(entry)
    }

    /// The neutral profile of a SCIM user: login, the primary email (else the first, else the
    /// userName when it is an address), names.
    pub fn profile_of(doc: &Value) -> Option<Profile> {
        let login = doc.get("userName")?.as_str()?.to_string();
        let emails = doc.get("emails").and_then(Value::as_array);
        let email = emails
            .and_then(|e| {
                e.iter()
                    .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
                    .or_else(|| e.first())
            })
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| login.contains('@').then(|| login.clone()));
        let name = |k: &str| {
            doc.get("name")
                .and_then(|n| n.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let given_name = name("givenName");
        let family_name = name("familyName");
        let display_name = doc
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| {
                let joined = [given_name.as_deref(), family_name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                (!joined.is_empty()).then_some(joined)
            })
            .or_else(|| name("formatted"));
        Some(Profile {
            login,
            email,
            given_name,
            family_name,
            display_name,
            attributes: Default::default(),
        })
    }

    /// The neutral profile of a SCIM user with the tenant's mapped attributes
    /// (`[tenants.attributes]`): a SCIM attribute that is absent or empty maps to no value, which
    /// the vendor then clears.
    pub(crate) fn desired_profile(&self, doc: &Value) -> Option<Profile> {
        let mut p = Self::profile_of(doc)?;
        for (name, path) in &self.settings.attributes {
            if let Some(v) = crate::scim::path::value_at(doc, path) {
                p.attributes.insert(name.clone(), v);
            }
        }
        Some(p)
    }

    /// Refuses locally what the vendor would refuse for sure: a required attribute missing.
    fn check_required(&self, doc: &Value) -> ScimResult<()> {
        let Some(p) = Self::profile_of(doc) else {
            return Err(ScimError::invalid_value("userName is required"));
        };
        if self.caps.required_user_attributes.contains(&"emails") && p.email.is_none() {
            return Err(ScimError::invalid_value(format!(
                "{} requires an email: send `emails` with a value",
                self.caps.vendor
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Engine;
    use serde_json::json;

    #[test]
    fn the_profile_takes_the_primary_email_and_falls_back_to_an_address_user_name() {
        let p = Engine::profile_of(&json!({
            "userName": "ada",
            "emails": [{"value": "b@x"}, {"value": "a@x", "primary": true}],
            "name": {"givenName": "Ada", "familyName": ""}
        }))
        .unwrap();
        assert_eq!(p.email.as_deref(), Some("a@x"));
        assert_eq!(p.given_name.as_deref(), Some("Ada"));
        assert_eq!(p.family_name, None, "an empty name is no name");
        let p = Engine::profile_of(&json!({"userName": "ada@x"})).unwrap();
        assert_eq!(p.email.as_deref(), Some("ada@x"));
        assert_eq!(
            Engine::profile_of(&json!({"userName": "ada"}))
                .unwrap()
                .email,
            None
        );
        assert!(Engine::profile_of(&json!({"emails": []})).is_none());
    }
}

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

pub mod adapter;
pub mod delivery;
pub mod observe;
pub mod reconcile;
pub mod role_table;
pub mod state;

use crate::config::{OnVendorUnavailable, RoleRules};
use crate::connector::{Connector, ListPage, Precondition, RequestContext};
use crate::scim::list::ListQuery;
use crate::scim::patch::{apply_patch, MemberOp, PatchMode, PatchOptions, PatchRequest};
use crate::scim::resource::{replace, strip_unreturnable};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::{ScimError, ScimResult};
use crate::store::audit::AuditLog;
use crate::store::directory::{index_keys, str_at, Directory};
use crate::store::{Batch, Store, StoreError};
use adapter::{AdapterError, Capabilities, Profile, VendorAdapter};
use async_trait::async_trait;
use role_table::RoleTable;
use serde_json::{json, Value};
use state::{put, Actor, OutboxEntry, Records, Tombstone};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a write waits for its inline reconcile before it is answered from the outbox.
pub const DEFAULT_INLINE_DEADLINE: Duration = Duration::from_secs(5);
/// How often the vendor directory is observed (the first observe runs at start).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Vendor calls of one operation that run at once (membership fan-out, delivery).
pub const FAN_OUT: usize = 16;
/// How long a lookup waits for start-up (roles resolved, first observe) before a 503.
const STARTUP_WAIT: Duration = Duration::from_secs(20);

/// A fixed set of async mutexes addressed by key hash: per-object serialisation without a map
/// that grows with the directory. Owned guards, so a reconcile that outlives the IdP's request
/// keeps the object until it ends.
pub(crate) struct Stripes(Vec<Arc<tokio::sync::Mutex<()>>>);

pub(crate) type ObjectGuard = tokio::sync::OwnedMutexGuard<()>;

impl Stripes {
    fn new(n: usize) -> Stripes {
        Stripes(
            (0..n)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
        )
    }
    fn index(&self, key: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % self.0.len()
    }
    /// Whether two keys share a stripe (a holder of one already holds the other).
    pub(crate) fn same(&self, a: &str, b: &str) -> bool {
        self.index(a) == self.index(b)
    }
    pub(crate) async fn lock(&self, key: &str) -> ObjectGuard {
        self.0[self.index(key)].clone().lock_owned().await
    }
    /// Locks every key's stripe in ascending stripe order (two callers never wait in a cycle).
    pub(crate) async fn lock_all<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<ObjectGuard> {
        let idx: BTreeSet<usize> = keys.into_iter().map(|k| self.index(k)).collect();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.0[i].clone().lock_owned().await);
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
        }
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
    /// A start-up problem that needs the operator (role rules that do not resolve).
    pub(crate) fatal: parking_lot::RwLock<Option<String>>,
    /// Serialises uniqueness checks with the commits they guard, and count changes.
    pub(crate) commit_lock: parking_lot::Mutex<()>,
    /// Delivery locks: one reconcile of an object at a time (held across vendor calls).
    pub(crate) user_locks: Stripes,
    pub(crate) group_locks: Stripes,
    /// Document locks: one read-modify-write of an object's desired state at a time (held
    /// only while it is read, checked and committed, never across a vendor call, so an IdP
    /// write never waits for the vendor).
    pub(crate) user_docs: Stripes,
    pub(crate) group_docs: Stripes,
    pub(crate) synced: tokio::sync::watch::Sender<bool>,
    /// Wakes the delivery loop when something was queued (shared with the loop, which must
    /// not keep the engine alive while it waits).
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) counters: DeliveryCounters,
    pub(crate) role_changes: Option<prometheus::IntCounter>,
    pub(crate) send_rate: Option<SendRate>,
    /// Objects written or reconciled since when: an observe that began earlier does not
    /// overwrite them with its older pages.
    pub(crate) recent: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
    /// The outbox mark each running reconcile started from (see `reconcile::commit_step`).
    pub(crate) fences: parking_lot::Mutex<std::collections::HashMap<(ResourceKind, String), u64>>,
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
        let dir = Directory::open(store, &settings.tenant, settings.purpose, schemas)?;
        let audit = AuditLog::open(store, &settings.tenant)?;
        if let Some(c) = &role_changes {
            c.inc_by(audit.len());
        }
        let synced_before = Records(&dir).flag("synced")?.is_some();
        let (synced, _) = tokio::sync::watch::channel(synced_before);
        Ok(Arc::new(Engine {
            settings,
            dir,
            audit,
            adapter,
            caps,
            roles: parking_lot::RwLock::new(None),
            fatal: parking_lot::RwLock::new(None),
            commit_lock: parking_lot::Mutex::new(()),
            user_locks: Stripes::new(1024),
            group_locks: Stripes::new(256),
            user_docs: Stripes::new(1024),
            group_docs: Stripes::new(256),
            synced,
            wake: Arc::new(tokio::sync::Notify::new()),
            counters: DeliveryCounters::default(),
            role_changes,
            send_rate,
            recent: parking_lot::Mutex::new(std::collections::HashMap::new()),
            fences: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    pub fn tenant(&self) -> &str {
        &self.settings.tenant
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

    /// Reads the vendor's roles and resolves the rules. `Err(Ok(problems))` for rules that do
    /// not resolve, `Err(Err(e))` when the vendor cannot be asked.
    pub async fn load_roles(
        &self,
    ) -> Result<RoleTable, Result<Vec<crate::config::Problem>, AdapterError>> {
        let catalog = self.adapter.roles().await.map_err(Err)?;
        RoleTable::build(self.settings.tenant_index, &self.settings.rules, catalog).map_err(Ok)
    }

    pub(crate) fn role_table(&self) -> Result<Arc<RoleTable>, AdapterError> {
        if let Some(f) = self.fatal.read().clone() {
            return Err(AdapterError::transient(format!(
                "the tenant's role rules do not resolve: {f}"
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
    /// user.
    async fn wait_synced(&self) -> ScimResult<()> {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            if let Some(f) = self.fatal.read().clone() {
                return Err(ScimError::unavailable(
                    format!(
                        "the tenant's role rules do not resolve against {}: {f}",
                        self.caps.vendor
                    ),
                    300,
                ));
            }
            if *self.synced.borrow() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ScimError::unavailable(
                    format!(
                        "the bridge is still reading the {} directory; retry shortly",
                        self.caps.vendor
                    ),
                    5,
                ));
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
    /// now (a write of a `failed` object retries it).
    pub(crate) fn mark(
        &self,
        batch: &mut Batch,
        kind: ResourceKind,
        sid: &str,
        cause: &str,
        actor: Actor,
    ) -> Result<(), StoreError> {
        let entry = match Records(&self.dir).outbox(kind, sid)? {
            Some(mut e) => {
                e.next_ms = state::now_ms();
                e.failed = false;
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
        Ok(())
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
        Some(Profile {
            login,
            email,
            given_name: name("givenName"),
            family_name: name("familyName"),
            attributes: Default::default(),
        })
    }

    /// Refuses locally what the vendor would refuse for sure: a required attribute missing.
    fn check_required(&self, doc: &Value) -> ScimResult<()> {
        let Some(p) = Self::profile_of(doc) else {
            return Err(ScimError::invalid_value("userName is required"));
        };
        if self.caps.required_user_attributes.contains(&"emails") && p.email.is_none() {
            return Err(ScimError::invalid_value(format!(
                "{} requires an email: send `emails` or an email address as userName",
                self.caps.vendor
            )));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Inline delivery
    // -----------------------------------------------------------------------------------------

    /// Runs the reconcile of the written object (and then of the objects its write affects) in
    /// a task of its own, and waits at most the inline deadline for the written object's
    /// outcome. A reconcile that outlives the deadline goes on; the outbox has the rest.
    async fn deliver_inline(
        self: &Arc<Self>,
        kind: ResourceKind,
        sid: &str,
        guard: ObjectGuard,
        affected: Vec<String>,
    ) -> Inline {
        if let Some(reason) = self.adapter.unavailable() {
            drop(guard);
            self.wake.notify_one();
            return Inline::Queued {
                reason,
                retry_after: None,
            };
        }
        // The desired state is committed: other writes of the object may go ahead while this
        // one is delivered.
        drop(guard);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let sid_owned = sid.to_string();
        tokio::spawn(async move {
            let delivery = match kind {
                ResourceKind::User => me.user_locks.lock(&sid_owned).await,
                ResourceKind::Group => me.group_locks.lock(&sid_owned).await,
            };
            let result = me.reconcile_locked(kind, &sid_owned).await;
            drop(delivery);
            // The users whose groups or role the write moves are part of the answer when the
            // vendor is quick; past the deadline they go on here and in the outbox.
            if !affected.is_empty() && result.is_ok() {
                me.reconcile_users(&affected).await;
            }
            if kind == ResourceKind::User && result.is_ok() {
                // A user made (again) at the vendor joins its groups through them.
                me.reconcile_pending_groups_of(&sid_owned).await;
            }
            let _ = tx.send(result);
        });
        match tokio::time::timeout(self.settings.inline_deadline, rx).await {
            Ok(Ok(Ok(()))) => Inline::Done,
            Ok(Ok(Err(AdapterError::Refused {
                vendor,
                reason,
                conflict,
            }))) => Inline::Refused(if conflict {
                ScimError::uniqueness(format!("{vendor} refused the change: {reason}"))
            } else {
                ScimError::invalid_value(format!("{vendor} refused the change: {reason}"))
            }),
            Ok(Ok(Err(AdapterError::Transient {
                reason,
                retry_after,
            }))) => Inline::Queued {
                reason,
                retry_after,
            },
            Ok(Ok(Err(AdapterError::Gone))) => Inline::Queued {
                reason: "the vendor object is gone; it is created again".into(),
                retry_after: None,
            },
            Ok(Err(_)) => Inline::Queued {
                reason: "the reconcile ended early".into(),
                retry_after: None,
            },
            Err(_) => Inline::Queued {
                reason: format!(
                    "the vendor did not answer within {} ms",
                    self.settings.inline_deadline.as_millis()
                ),
                retry_after: None,
            },
        }
    }

    /// Reconciles users one by one under their locks, `FAN_OUT` at a time.
    pub(crate) async fn reconcile_users(self: &Arc<Self>, sids: &[String]) {
        use futures_util::StreamExt;
        futures_util::stream::iter(sids.iter().cloned())
            .map(|sid| {
                let me = self.clone();
                async move {
                    let _g = me.user_locks.lock(&sid).await;
                    let _ = me.reconcile_locked(ResourceKind::User, &sid).await;
                }
            })
            .buffer_unordered(FAN_OUT)
            .collect::<Vec<_>>()
            .await;
    }

    /// Reconciles the groups of a user that have work in the outbox (membership on the group).
    async fn reconcile_pending_groups_of(self: &Arc<Self>, sid: &str) {
        if self.caps.membership != adapter::MembershipModel::OnGroup {
            return;
        }
        let Ok(groups) = self.dir.groups_of(sid) else {
            return;
        };
        for g in groups {
            if matches!(
                Records(&self.dir).outbox(ResourceKind::Group, &g),
                Ok(Some(_))
            ) {
                let _lock = self.group_locks.lock(&g).await;
                let _ = self.reconcile_locked(ResourceKind::Group, &g).await;
            }
        }
    }

    /// What a write answers after its inline delivery. `rollback` undoes the desired change
    /// (for a refusal, and for a transient failure under `on_vendor_unavailable = "fail"`).
    async fn settle<F, Fut>(&self, inline: Inline, rollback: F) -> ScimResult<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ScimResult<()>>,
    {
        match inline {
            Inline::Done => Ok(()),
            Inline::Refused(e) => {
                rollback().await?;
                Err(e)
            }
            Inline::Queued {
                reason,
                retry_after,
            } => match self.settings.on_vendor_unavailable {
                OnVendorUnavailable::Queue => {
                    tracing::info!(tenant = %self.tenant(), %reason, "write accepted; the outbox delivers it");
                    self.wake.notify_one();
                    Ok(())
                }
                OnVendorUnavailable::Fail => {
                    rollback().await?;
                    Err(unavailable_answer(&reason, retry_after))
                }
            },
        }
    }

    // -----------------------------------------------------------------------------------------
    // Users
    // -----------------------------------------------------------------------------------------

    async fn create_user(
        self: &Arc<Self>,
        mut resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        strip_unreturnable(&mut resource, dir.schema(ResourceKind::User));
        let (id, mut doc) = dir.new_doc(ResourceKind::User, &resource);
        self.check_required(&doc)?;
        self.refuse_early_if_failing()?;
        let guard = self.user_docs.lock(&id).await;
        dir.stamp(ResourceKind::User, &mut doc, None);
        let mut batch = Batch::default();
        dir.write_doc(&mut batch, ResourceKind::User, &id, &doc, None);
        put::idp_written(&mut batch, &id);
        self.mark(&mut batch, ResourceKind::User, &id, "create", Actor::Idp)?;
        {
            let _g = self.commit_lock.lock();
            let (unique, _) = index_keys(ResourceKind::User, &id, &doc);
            dir.check_unique(ResourceKind::User, &unique, None)?;
            dir.bump_count(&mut batch, ResourceKind::User, 1);
            dir.commit(batch)?;
        }
        let inline = self
            .deliver_inline(ResourceKind::User, &id, guard, Vec::new())
            .await;
        self.settle(inline, || self.undo_create(ResourceKind::User, &id))
            .await?;
        // Durable before the answer: one flush covers the desired state and whatever the
        // inline reconcile confirmed (a crash before it is repaired from the vendor's side).
        dir.flush().await?;
        let doc = dir.load_or_404(ResourceKind::User, &id)?;
        dir.render(ResourceKind::User, &id, doc, true, ctx)
    }

    /// Under `on_vendor_unavailable = "fail"`, a write while the vendor is known to be down is
    /// answered 503 before anything is stored.
    fn refuse_early_if_failing(&self) -> ScimResult<()> {
        if self.settings.on_vendor_unavailable == OnVendorUnavailable::Fail {
            if let Some(reason) = self.adapter.unavailable() {
                return Err(unavailable_answer(&reason, None));
            }
        }
        Ok(())
    }

    /// Removes a resource whose create the vendor refused (or, under "fail", could not take),
    /// together with its outbox mark: the desired change is not kept.
    async fn undo_create(&self, kind: ResourceKind, id: &str) -> ScimResult<()> {
        let locks = match kind {
            ResourceKind::User => &self.user_docs,
            ResourceKind::Group => &self.group_docs,
        };
        let _g = locks.lock(id).await;
        let Some(doc) = self.dir.load(kind, id)? else {
            return Ok(());
        };
        let mut batch = Batch::default();
        let vid = self.dir.vendor_id(kind, id)?;
        {
            let _c = self.commit_lock.lock();
            self.dir.delete_entries(&mut batch, kind, id, &doc)?;
            put::no_outbox(&mut batch, kind, id);
            if kind == ResourceKind::User {
                put::not_idp_written(&mut batch, id);
                put::no_applied_user(&mut batch, id);
            } else {
                put::no_applied_group(&mut batch, id);
            }
            if let Some(vid) = vid {
                // Created at the vendor after all (an ambiguous answer): removed there too.
                put::tombstone(
                    &mut batch,
                    kind,
                    id,
                    &Tombstone {
                        vendor_id: Some(vid.clone()),
                        name: String::new(),
                        profile: None,
                    },
                );
                self.dir.link(&mut batch, kind, id, &vid);
                self.mark(&mut batch, kind, id, "rollback", Actor::Idp)?;
            }
            self.dir.commit(batch)?;
        }
        self.dir.flush().await?;
        Ok(())
    }

    /// Puts back the previous document of a user whose update the vendor refused.
    async fn undo_update(&self, id: &str, old: &Value, ours: &Value) -> ScimResult<()> {
        let _g = self.user_docs.lock(id).await;
        let Some(current) = self.dir.load(ResourceKind::User, id)? else {
            return Ok(());
        };
        if current["meta"]["version"] != ours["meta"]["version"] {
            // A newer write of the IdP replaced ours meanwhile: it stands.
            return Ok(());
        }
        let mut batch = Batch::default();
        self.dir
            .write_doc(&mut batch, ResourceKind::User, id, old, Some(&current));
        // The previous document may itself be waiting for delivery (accepted while the vendor
        // was down): it stays due. A reconcile that finds nothing to do costs no vendor call.
        self.mark(&mut batch, ResourceKind::User, id, "rollback", Actor::Idp)?;
        self.commit(batch).await
    }

    /// Stores a new version of a user (PUT or PATCH result) and delivers it.
    async fn update_user(
        self: &Arc<Self>,
        id: &str,
        guard: ObjectGuard,
        old: &Value,
        mut doc: Value,
        cause: &str,
        ctx: &RequestContext,
        with_members: bool,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        strip_unreturnable(&mut doc, dir.schema(ResourceKind::User));
        doc["id"] = Value::String(id.to_string());
        self.check_required(&doc)?;
        self.refuse_early_if_failing()?;
        dir.stamp(ResourceKind::User, &mut doc, Some(old));
        let mut batch = Batch::default();
        dir.write_doc(&mut batch, ResourceKind::User, id, &doc, Some(old));
        put::idp_written(&mut batch, id);
        self.mark(&mut batch, ResourceKind::User, id, cause, Actor::Idp)?;
        {
            let _g = self.commit_lock.lock();
            let (unique, _) = index_keys(ResourceKind::User, id, &doc);
            dir.check_unique(ResourceKind::User, &unique, Some(id))?;
            dir.commit(batch)?;
        }
        let inline = self
            .deliver_inline(ResourceKind::User, id, guard, Vec::new())
            .await;
        self.settle(inline, || self.undo_update(id, old, &doc))
            .await?;
        // Durable before the answer: one flush covers the desired state and whatever the
        // inline reconcile confirmed (a crash before it is repaired from the vendor's side).
        dir.flush().await?;
        let doc = dir.load_or_404(ResourceKind::User, id)?;
        dir.render(ResourceKind::User, id, doc, with_members, ctx)
    }

    async fn delete_user(self: &Arc<Self>, id: &str, pre: &Precondition) -> ScimResult<()> {
        let guard = self.user_docs.lock(id).await;
        let dir = &self.dir;
        let old = dir.load_or_404(ResourceKind::User, id)?;
        self.check_precondition(ResourceKind::User, id, &old, pre)?;
        self.refuse_early_if_failing()?;
        let vid = dir.vendor_id(ResourceKind::User, id)?;
        let mut batch = Batch::default();
        {
            let _g = self.commit_lock.lock();
            dir.delete_entries(&mut batch, ResourceKind::User, id, &old)?;
            put::not_idp_written(&mut batch, id);
            match &vid {
                Some(vid) => {
                    // The link stays until the vendor has removed or deactivated the user, so
                    // that observe does not adopt it back meanwhile.
                    dir.link(&mut batch, ResourceKind::User, id, vid);
                    put::tombstone(
                        &mut batch,
                        ResourceKind::User,
                        id,
                        &Tombstone {
                            vendor_id: Some(vid.clone()),
                            name: str_at(&old, "userName").unwrap_or_default().to_string(),
                            profile: Self::profile_of(&old),
                        },
                    );
                    self.mark(&mut batch, ResourceKind::User, id, "delete", Actor::Idp)?;
                }
                None if Records(dir).outbox(ResourceKind::User, id)?.is_some() => {
                    // Its create was never confirmed: it may have reached the vendor all the
                    // same (an ambiguous answer). The tombstone finds it by login and removes
                    // or deactivates it, so no active vendor user is left behind.
                    put::tombstone(
                        &mut batch,
                        ResourceKind::User,
                        id,
                        &Tombstone {
                            vendor_id: None,
                            name: str_at(&old, "userName").unwrap_or_default().to_string(),
                            profile: Self::profile_of(&old),
                        },
                    );
                    self.mark(&mut batch, ResourceKind::User, id, "delete", Actor::Idp)?;
                }
                None => {
                    put::no_outbox(&mut batch, ResourceKind::User, id);
                    put::no_applied_user(&mut batch, id);
                }
            }
            dir.commit(batch)?;
        }
        if Records(dir).tombstone(ResourceKind::User, id)?.is_none() {
            drop(guard);
            dir.flush().await?;
            return Ok(());
        }
        let inline = self
            .deliver_inline(ResourceKind::User, id, guard, Vec::new())
            .await;
        dir.flush().await?;
        // A delete is not rolled back: the IdP's retry of a DELETE would meet a 404.
        match inline {
            Inline::Queued {
                reason,
                retry_after,
            } if self.settings.on_vendor_unavailable == OnVendorUnavailable::Fail => {
                Err(unavailable_answer(&reason, retry_after))
            }
            _ => {
                self.wake.notify_one();
                Ok(())
            }
        }
    }

    /// RFC 7644 §3.14: the precondition is compared with the version GET returns (a user's
    /// version covers its groups).
    fn check_precondition(
        &self,
        kind: ResourceKind,
        id: &str,
        doc: &Value,
        pre: &Precondition,
    ) -> ScimResult<()> {
        if pre.if_match.is_none() {
            return Ok(());
        }
        let ctx = RequestContext {
            base_url: String::new(),
        };
        let rendered = self.dir.render(kind, id, doc.clone(), false, &ctx)?;
        Directory::check_precondition(&rendered, pre)
    }

    // -----------------------------------------------------------------------------------------
    // Groups
    // -----------------------------------------------------------------------------------------

    async fn create_group(
        self: &Arc<Self>,
        mut resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        strip_unreturnable(&mut resource, dir.schema(ResourceKind::Group));
        let members = resource
            .get("members")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (id, mut doc) = dir.new_doc(ResourceKind::Group, &resource);
        if str_at(&doc, "displayName").is_none() {
            return Err(ScimError::invalid_value("a group needs a displayName"));
        }
        self.refuse_early_if_failing()?;
        let guard = self.group_docs.lock(&id).await;
        dir.stamp(ResourceKind::Group, &mut doc, None);
        let mut batch = Batch::default();
        dir.write_doc(&mut batch, ResourceKind::Group, &id, &doc, None);
        let change = if members.is_empty() {
            Default::default()
        } else {
            dir.apply_member_ops(&mut batch, &id, &[MemberOp::Add(members)])?
        };
        self.mark(&mut batch, ResourceKind::Group, &id, "create", Actor::Idp)?;
        let name = str_at(&doc, "displayName").unwrap_or_default().to_string();
        let affected = self.users_among(&change.added)?;
        for u in &affected {
            // A membership the IdP gives makes the user the IdP's: the rules apply to it.
            put::idp_written(&mut batch, u);
            self.mark(
                &mut batch,
                ResourceKind::User,
                u,
                &format!("membership of group \"{name}\""),
                Actor::Idp,
            )?;
        }
        {
            let _g = self.commit_lock.lock();
            let (unique, _) = index_keys(ResourceKind::Group, &id, &doc);
            dir.check_unique(ResourceKind::Group, &unique, None)?;
            dir.bump_count(&mut batch, ResourceKind::Group, 1);
            dir.commit(batch)?;
        }
        let inline = self
            .deliver_inline(ResourceKind::Group, &id, guard, affected)
            .await;
        self.settle(inline, || self.undo_create(ResourceKind::Group, &id))
            .await?;
        // Durable before the answer: one flush covers the desired state and whatever the
        // inline reconcile confirmed (a crash before it is repaired from the vendor's side).
        dir.flush().await?;
        let doc = dir.load_or_404(ResourceKind::Group, &id)?;
        dir.render(ResourceKind::Group, &id, doc, true, ctx)
    }

    /// The ids among `ids` that name users (members may be groups or unknown ids).
    fn users_among(&self, ids: &[String]) -> ScimResult<Vec<String>> {
        let mut out = Vec::new();
        for i in ids {
            if self.dir.load(ResourceKind::User, i)?.is_some() {
                out.push(i.clone());
            }
        }
        Ok(out)
    }

    /// Stores a group change (rename and/or member operations) and delivers it: the group
    /// first, then every user whose groups or role may move.
    async fn change_group(
        self: &Arc<Self>,
        id: &str,
        guard: ObjectGuard,
        old: &Value,
        new_doc: Option<Value>,
        ops: &[MemberOp],
        cause: &str,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        self.refuse_early_if_failing()?;
        let old_name = str_at(old, "displayName").unwrap_or_default().to_string();
        let mut doc = new_doc.unwrap_or_else(|| old.clone());
        doc["id"] = Value::String(id.to_string());
        let new_name = str_at(&doc, "displayName").unwrap_or(&old_name).to_string();
        let renamed = new_name != old_name;
        let mut batch = Batch::default();
        let change = if ops.is_empty() {
            Default::default()
        } else {
            dir.apply_member_ops(&mut batch, id, ops)?
        };
        if change.is_empty() && doc == *old {
            drop(guard);
            return Ok(old.clone());
        }
        // Users whose groups or role may move: the changed members, and all members on a
        // rename (rules match group names).
        let mut affected: BTreeSet<String> = self
            .users_among(&change.added)?
            .into_iter()
            .chain(self.users_among(&change.removed)?)
            .collect();
        if renamed {
            affected.extend(self.users_among(&dir.member_ids(id)?)?);
        }
        let affected: Vec<String> = affected.into_iter().collect();
        let user_cause = format!("{cause} of group \"{new_name}\"");
        for u in &affected {
            put::idp_written(&mut batch, u);
            self.mark(&mut batch, ResourceKind::User, u, &user_cause, Actor::Idp)?;
        }
        self.mark(&mut batch, ResourceKind::Group, id, cause, Actor::Idp)?;
        dir.stamp(ResourceKind::Group, &mut doc, Some(old));
        dir.write_doc(&mut batch, ResourceKind::Group, id, &doc, Some(old));
        {
            let _g = self.commit_lock.lock();
            if renamed {
                let (unique, _) = index_keys(ResourceKind::Group, id, &doc);
                dir.check_unique(ResourceKind::Group, &unique, Some(id))?;
            }
            dir.commit(batch)?;
        }
        let inline = self
            .deliver_inline(ResourceKind::Group, id, guard, affected)
            .await;
        self.settle(inline, || self.undo_group_change(id, old, &doc, &change))
            .await?;
        // Durable before the answer: one flush covers the desired state and whatever the
        // inline reconcile confirmed (a crash before it is repaired from the vendor's side).
        dir.flush().await?;
        dir.load_or_404(ResourceKind::Group, id)
    }

    /// Puts back a group's previous document and membership after the vendor refused the change.
    async fn undo_group_change(
        &self,
        id: &str,
        old: &Value,
        ours: &Value,
        change: &crate::store::directory::MembershipChange,
    ) -> ScimResult<()> {
        let _g = self.group_docs.lock(id).await;
        let Some(current) = self.dir.load(ResourceKind::Group, id)? else {
            return Ok(());
        };
        if current["meta"]["version"] != ours["meta"]["version"] {
            return Ok(());
        }
        let mut batch = Batch::default();
        let mut ops = Vec::new();
        if !change.added.is_empty() {
            ops.push(MemberOp::Remove(change.added.clone()));
        }
        if !change.removed.is_empty() {
            ops.push(MemberOp::Add(
                change
                    .removed
                    .iter()
                    .map(|m| json!({ "value": m }))
                    .collect(),
            ));
        }
        self.dir.apply_member_ops(&mut batch, id, &ops)?;
        self.dir
            .write_doc(&mut batch, ResourceKind::Group, id, old, Some(&current));
        self.mark(&mut batch, ResourceKind::Group, id, "rollback", Actor::Idp)?;
        self.commit(batch).await
    }

    async fn delete_group(self: &Arc<Self>, id: &str, pre: &Precondition) -> ScimResult<()> {
        let guard = self.group_docs.lock(id).await;
        let dir = &self.dir;
        let old = dir.load_or_404(ResourceKind::Group, id)?;
        self.check_precondition(ResourceKind::Group, id, &old, pre)?;
        self.refuse_early_if_failing()?;
        let members = self.users_among(&dir.member_ids(id)?)?;
        let vid = dir.vendor_id(ResourceKind::Group, id)?;
        let name = str_at(&old, "displayName").unwrap_or_default().to_string();
        let mut batch = Batch::default();
        {
            let _g = self.commit_lock.lock();
            dir.delete_entries(&mut batch, ResourceKind::Group, id, &old)?;
            let cause = format!("delete of group \"{name}\"");
            for u in &members {
                put::idp_written(&mut batch, u);
                self.mark(&mut batch, ResourceKind::User, u, &cause, Actor::Idp)?;
            }
            match &vid {
                Some(vid) => {
                    // Linked until the vendor has deleted it: members' group lists still
                    // recognise it as mirrored (and so drop it).
                    dir.link(&mut batch, ResourceKind::Group, id, vid);
                    put::tombstone(
                        &mut batch,
                        ResourceKind::Group,
                        id,
                        &Tombstone {
                            vendor_id: Some(vid.clone()),
                            name: name.clone(),
                            profile: None,
                        },
                    );
                    self.mark(&mut batch, ResourceKind::Group, id, "delete", Actor::Idp)?;
                }
                None => put::no_outbox(&mut batch, ResourceKind::Group, id),
            }
            dir.commit(batch)?;
        }
        let inline = self
            .deliver_inline(ResourceKind::Group, id, guard, members)
            .await;
        dir.flush().await?;
        match inline {
            Inline::Queued {
                reason,
                retry_after,
            } if self.settings.on_vendor_unavailable == OnVendorUnavailable::Fail => {
                Err(unavailable_answer(&reason, retry_after))
            }
            _ => {
                self.wake.notify_one();
                Ok(())
            }
        }
    }
}

/// What the inline part of a write came to.
enum Inline {
    Done,
    Refused(ScimError),
    Queued {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// The SCIM seam: the server holds an `Arc<EngineConnector>` per vendor tenant.
pub struct EngineConnector(pub Arc<Engine>);

impl std::ops::Deref for EngineConnector {
    type Target = Arc<Engine>;
    fn deref(&self) -> &Arc<Engine> {
        &self.0
    }
}

#[async_trait]
impl Connector for EngineConnector {
    fn schemas(&self) -> &SchemaRegistry {
        self.0.dir.schemas()
    }

    async fn create(
        &self,
        kind: ResourceKind,
        resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        match kind {
            ResourceKind::User => self.0.create_user(resource, ctx).await,
            ResourceKind::Group => self.0.create_group(resource, ctx).await,
        }
    }

    async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let doc = self.0.dir.load_or_404(kind, id)?;
        self.0.dir.render(kind, id, doc, with_members, ctx)
    }

    async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        mut resource: Value,
        pre: &Precondition,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let e = &self.0;
        let schema = e.dir.schema(kind);
        strip_unreturnable(&mut resource, schema);
        match kind {
            ResourceKind::User => {
                let guard = e.user_docs.lock(id).await;
                let old = e.dir.load_or_404(kind, id)?;
                e.check_precondition(kind, id, &old, pre)?;
                let doc = replace(&old, resource, schema)?;
                e.update_user(id, guard, &old, doc, "replace", ctx, true)
                    .await
            }
            ResourceKind::Group => {
                let members = resource.as_object_mut().and_then(|o| o.remove("members"));
                let guard = e.group_docs.lock(id).await;
                let old = e.dir.load_or_404(kind, id)?;
                e.check_precondition(kind, id, &old, pre)?;
                let doc = replace(&old, resource, schema)?;
                // PUT replaces the whole resource (RFC 7644 §3.5.1): no `members` means none.
                let list = members
                    .and_then(|m| m.as_array().cloned())
                    .unwrap_or_default();
                let doc = e
                    .change_group(
                        id,
                        guard,
                        &old,
                        Some(doc),
                        &[MemberOp::Replace(list)],
                        "replace",
                    )
                    .await?;
                e.dir.render(kind, id, doc, true, ctx)
            }
        }
    }

    async fn patch(
        &self,
        kind: ResourceKind,
        id: &str,
        request: &PatchRequest,
        pre: &Precondition,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let e = &self.0;
        let dir = &e.dir;
        let schema = dir.schema(kind);
        match kind {
            ResourceKind::User => {
                let guard = e.user_docs.lock(id).await;
                let old = dir.load_or_404(kind, id)?;
                // Patched with its derived `groups` visible, which is also the version an
                // If-Match is compared with.
                let subject = dir.render(kind, id, old.clone(), false, ctx)?;
                Directory::check_precondition(&subject, pre)?;
                let outcome = apply_patch(
                    &subject,
                    request,
                    schema,
                    PatchOptions {
                        mode: PatchMode::IdpCompatible,
                        external_members: false,
                    },
                )?;
                if outcome.delta.changed.is_empty() {
                    return dir.render(kind, id, old, with_members, ctx);
                }
                let mut doc = outcome.resource;
                if let Some(o) = doc.as_object_mut() {
                    o.remove("groups");
                    o.remove("meta");
                }
                e.update_user(id, guard, &old, doc, "patch", ctx, with_members)
                    .await
            }
            ResourceKind::Group => {
                let guard = e.group_docs.lock(id).await;
                let old = dir.load_or_404(kind, id)?;
                Directory::check_precondition(&old, pre)?;
                let outcome = apply_patch(
                    &old,
                    request,
                    schema,
                    PatchOptions {
                        mode: PatchMode::IdpCompatible,
                        external_members: true,
                    },
                )?;
                if outcome.delta.is_empty() {
                    return dir.render(kind, id, old, with_members, ctx);
                }
                let mut doc = outcome.resource;
                strip_unreturnable(&mut doc, schema);
                let new_doc = (!outcome.delta.changed.is_empty()).then_some(doc);
                let doc = e
                    .change_group(id, guard, &old, new_doc, &outcome.delta.member_ops, "patch")
                    .await?;
                dir.render(kind, id, doc, with_members, ctx)
            }
        }
    }

    async fn delete(&self, kind: ResourceKind, id: &str, pre: &Precondition) -> ScimResult<()> {
        match kind {
            ResourceKind::User => self.0.delete_user(id, pre).await,
            ResourceKind::Group => self.0.delete_group(id, pre).await,
        }
    }

    async fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage> {
        // Lookups must see every vendor user: before the first observe, wait for it.
        if !*self.0.synced.borrow() {
            self.0.wait_synced().await?;
        }
        self.0.dir.list(kind, query, with_members, ctx)
    }

    /// The store serves: ready. Vendor trouble is reported by [`Connector::vendor_status`], not
    /// here, so one vendor's outage never takes the bridge out of a load balancer.
    async fn ready(&self) -> Result<(), String> {
        self.0.dir.ready()
    }

    async fn vendor_status(&self) -> Result<(), String> {
        let e = &self.0;
        if let Some(f) = e.fatal.read().clone() {
            return Err(format!(
                "role rules do not resolve against {}: {f}",
                e.caps.vendor
            ));
        }
        if let Some(reason) = e.adapter.unavailable() {
            return Err(reason);
        }
        if e.roles.read().is_none() {
            return Err(format!("{} roles not read yet", e.caps.vendor));
        }
        if !*e.synced.borrow() {
            return Err(format!(
                "first read of the {} directory not finished",
                e.caps.vendor
            ));
        }
        Ok(())
    }

    fn engine_stats(&self) -> Option<EngineStats> {
        Some(self.0.stats())
    }
}

//! The Sisense connector: SCIM users and groups provisioned into Sisense over its REST API, plus
//! what Sisense's own SCIM cannot do — the user's **role**, derived from group membership by the
//! tenant's role rules (CONTRACT §4).
//!
//! ## Write path
//! Every write goes to Sisense first, then to the directory (SCIM doc, indexes, memberships, ID
//! map — one atomic sled batch), then the store is flushed, and only then does the IdP get its
//! answer. A crash between the vendor call and the batch leaves a Sisense object the map does not
//! know; the next sync adopts it by userName (never a second Sisense user), and a create the IdP
//! retries meets Sisense's duplicate check (400 code 2004), which is answered by adopting the
//! existing user rather than by a 409.
//!
//! Writes are serialised per object, not per tenant, so the IdP's concurrency reaches Sisense:
//! a user's writes hold that user's stripe lock (by userName for a create), a group's writes hold
//! the group's stripe, then the stripes of the users whose membership or role they change (in
//! one sorted acquisition: no cycles). Only the short read-check-commit of the directory is
//! tenant-wide (`commit_lock`), never a vendor call.
//!
//! ## Roles
//! Role names in the rules are resolved by name from `GET /api/roles` (internal and UI names
//! both accepted; never an id from the config). A user's role is re-evaluated on every change of
//! the user (its `roles`, its activation) and of the membership or name of a group it belongs
//! to; Sisense is updated only when the role differs from the last known vendor state, in the
//! same `PATCH` as the membership change when there is one, and each change is written to the
//! audit log in the same commit as the write that caused it.
//!
//! ## Membership
//! Sisense keeps membership on the user (`groups`, replaced whole by `PATCH`). The full list is
//! computed from the directory (the user's groups after the change, as Sisense ids) plus any
//! Sisense group the bridge does not mirror, taken from the last known vendor state.

mod native;
mod sync;
pub mod wire;

use super::http::{
    Authenticator, ClientSettings, CreateOutcome, VendorClient, VendorError, VendorRequest,
};
use super::roles::{resolve_roles, unknown_rule_groups, ResolvedRoles, VendorRole};
use super::{Connector, ListPage, Precondition, RequestContext};
use crate::config::{
    Problem, RoleRules, SisenseDeprovision, SisenseMode, TenantConfig, VendorConfig,
};
use crate::scim::list::ListQuery;
use crate::scim::patch::{apply_patch, MemberOp, PatchMode, PatchOptions, PatchRequest};
use crate::scim::resource::{replace, strip_unreturnable};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::{ScimError, ScimResult};
use crate::store::audit::{AuditLog, RoleChange};
use crate::store::directory::{index_keys, str_at, Directory, MembershipChange};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;
use wire::{Paths, UserFields};

/// How often the vendor directory is re-read (the first sync runs at start).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Vendor calls of one SCIM operation that run at once (membership fan-out).
const FAN_OUT: usize = 16;
/// How long a request waits for start-up (roles resolved, first sync) before a 503.
const STARTUP_WAIT: Duration = Duration::from_secs(20);

/// Signs in with the form-encoded login (B.1) and sends `Authorization: Bearer`.
struct SisenseAuth {
    username: String,
    password: crate::config::Secret,
}

#[derive(Deserialize)]
struct LoginAnswer {
    access_token: String,
}

#[async_trait]
impl Authenticator for SisenseAuth {
    async fn sign_in(
        &self,
        http: &reqwest::Client,
        base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        let url = base.join(Paths::LOGIN).map_err(|e| VendorError::Auth {
            reason: format!("bad login URL: {e}"),
        })?;
        let resp = http
            .post(url)
            .form(&[
                ("username", self.username.as_str()),
                ("password", self.password.expose()),
            ])
            .send()
            .await
            .map_err(|e| VendorError::from_transport(&e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(VendorError::sign_in_refused(status, resp.headers()));
        }
        let answer: LoginAnswer = resp.json().await.map_err(|e| VendorError::Decode {
            reason: format!("login answer: {e}"),
        })?;
        let value =
            HeaderValue::from_str(&format!("Bearer {}", answer.access_token)).map_err(|_| {
                VendorError::Decode {
                    reason: "login answer carries an unusable token".into(),
                }
            })?;
        Ok(vec![(AUTHORIZATION, value)])
    }
}

/// The client settings for Sisense, which publishes no rate limit: bounded by concurrency, with
/// a generous token bucket, and the shared client's retries for 429/5xx.
pub fn client_settings() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(30),
        max_attempts: 6,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        rate_per_sec: 2000.0,
        burst: 200,
        max_concurrency: 24,
        breaker_threshold: 20,
        breaker_cooldown: Duration::from_secs(10),
        ..ClientSettings::default()
    }
}

/// The resolved roles of the tenant, and the vendor's names for every role id.
pub struct RoleTable {
    resolved: ResolvedRoles,
    names: HashMap<String, String>,
    /// The Sys. Admin role: never assigned, never taken away (one per system; the bridge may
    /// be signed in as that user).
    super_id: Option<String>,
    /// The role of a new user when no rule matches and no `default` is configured: Sisense's
    /// own default for new users, Viewer (`consumer`), resolved by name.
    fallback_id: Option<String>,
}

impl RoleTable {
    pub fn build(
        tenant_index: usize,
        rules: &RoleRules,
        roles: &[wire::Role],
    ) -> Result<RoleTable, Vec<Problem>> {
        let available: Vec<VendorRole> = roles
            .iter()
            .map(|r| VendorRole {
                id: r.id.clone(),
                names: r.names(),
            })
            .collect();
        let resolved = resolve_roles(tenant_index, rules, &available)?;
        Ok(RoleTable {
            resolved,
            names: roles
                .iter()
                .map(|r| {
                    (
                        r.id.clone(),
                        r.display_name.clone().unwrap_or(r.name.clone()),
                    )
                })
                .collect(),
            super_id: roles
                .iter()
                .find(|r| r.name == "super")
                .map(|r| r.id.clone()),
            fallback_id: roles
                .iter()
                .find(|r| r.name == "consumer")
                .map(|r| r.id.clone()),
        })
    }

    fn name(&self, id: &str) -> String {
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

/// What the bridge last knew of a Sisense user (kept per SCIM id, refreshed by sync).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorState {
    #[serde(rename = "roleId", default)]
    pub role_id: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "yes")]
    pub active: bool,
    /// The profile as Sisense last showed it (sync compares it to spot changes made in Sisense).
    #[serde(rename = "userName", default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(rename = "firstName", default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(rename = "lastName", default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

fn yes() -> bool {
    true
}

impl VendorState {
    fn of(u: &wire::User) -> VendorState {
        VendorState {
            role_id: u.role_id.clone(),
            groups: u.groups.clone(),
            active: u.is_active(),
            user_name: u.user_name.clone(),
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
        }
    }
}

/// A fixed set of async mutexes addressed by key hash: per-object serialisation without a map
/// that grows with the directory.
struct Stripes(Vec<tokio::sync::Mutex<()>>);

impl Stripes {
    fn new(n: usize) -> Stripes {
        Stripes((0..n).map(|_| tokio::sync::Mutex::new(())).collect())
    }
    fn index(&self, key: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % self.0.len()
    }
    async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.0[self.index(key)].lock().await
    }
    /// Locks every key's stripe in ascending stripe order (so two callers never wait on each
    /// other in a cycle).
    async fn lock_all<'a>(
        &'a self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Vec<tokio::sync::MutexGuard<'a, ()>> {
        let idx: BTreeSet<usize> = keys.into_iter().map(|k| self.index(k)).collect();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.0[i].lock().await);
        }
        guards
    }
}

/// Removes a key from an in-flight set when the create ends, however it ends.
struct Pending<'a> {
    set: &'a parking_lot::Mutex<HashSet<String>>,
    key: String,
}

impl<'a> Pending<'a> {
    fn new(set: &'a parking_lot::Mutex<HashSet<String>>, key: String) -> Pending<'a> {
        set.lock().insert(key.clone());
        Pending { set, key }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.key);
    }
}

/// Wall-clock milliseconds (the time stamp of a create's note, compared across restarts).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn fold(s: &str) -> String {
    s.to_lowercase()
}

pub struct SisenseConnector {
    tenant: String,
    tenant_index: usize,
    dir: Directory,
    /// `u/{scim id}` → [`VendorState`]; `tomb/{vendor id}` for users the IdP deleted while
    /// Sisense keeps them deactivated (sync must not adopt them again); `synced` once a full
    /// sync has completed.
    state: sled::Tree,
    audit: AuditLog,
    client: VendorClient,
    /// `mode = "scim"`: Sisense's own SCIM endpoint for users, groups and membership (roles
    /// still over REST through `client`).
    native: Option<native::NativeScim>,
    paths: Paths,
    deprovision: SisenseDeprovision,
    rules: RoleRules,
    roles: parking_lot::RwLock<Option<Arc<RoleTable>>>,
    /// A start-up problem that needs the operator (role rules that do not resolve).
    fatal: parking_lot::RwLock<Option<String>>,
    commit_lock: parking_lot::Mutex<()>,
    user_locks: Stripes,
    group_locks: Stripes,
    /// Folded userNames / displayNames whose vendor create is in flight (sync skips them).
    pending_users: parking_lot::Mutex<HashSet<String>>,
    pending_groups: parking_lot::Mutex<HashSet<String>>,
    /// SCIM ids written since when (sync does not overwrite what changed during its read).
    recent: parking_lot::Mutex<HashMap<String, Instant>>,
    synced: tokio::sync::watch::Sender<bool>,
    role_changes: Option<prometheus::IntCounter>,
    sync_interval: Duration,
    /// Single-flight durability: commits are numbered; one flush at a time covers every commit
    /// numbered before it started. Many concurrent `flush_async` calls exhaust sled 0.34's I/O
    /// thread pool while `apply_batch` waits for its global write lock: a deadlock (seen with 16
    /// concurrent creates).
    commits: std::sync::atomic::AtomicU64,
    flushed: std::sync::atomic::AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    /// Batches and flushes take turns. sled 0.34's flush holds its global concurrency-control
    /// lock shared while it waits for the disk; `apply_batch` wants it exclusive, and every
    /// `get` queued behind that waiting writer stalls too — lookups would wait for fsyncs. So a
    /// commit waits (asynchronously) while a flush runs, and reads never queue behind a writer.
    io_gate: tokio::sync::RwLock<()>,
}

/// What a commit does under the tenant's commit lock besides applying its batch.
enum Finish<'a> {
    Nothing,
    /// Bump the user or group count.
    Count(ResourceKind, i64),
    /// Remove a resource (its entries, memberships, map; the count goes down).
    Delete(ResourceKind, &'a str, &'a Value),
}

/// How a user's vendor role moves in one write.
struct RolePlan {
    to: String,
    from: Option<String>,
}

impl SisenseConnector {
    /// Opens the connector of one tenant (nothing is sent yet). `role_changes` is the tenant's
    /// `/metrics` counter of role changes.
    pub fn open(
        store: &Store,
        tenant: &TenantConfig,
        tenant_index: usize,
        role_changes: Option<prometheus::IntCounter>,
    ) -> Result<Arc<SisenseConnector>, String> {
        let VendorConfig::Sisense {
            base_url,
            username,
            password,
            api_version,
            mode,
            scim_token,
            deprovision,
        } = &tenant.vendor
        else {
            return Err("not a Sisense tenant".into());
        };
        let native = match (mode, scim_token) {
            (SisenseMode::Scim, Some(token)) => Some(native::NativeScim {
                client: VendorClient::new(
                    base_url.clone(),
                    client_settings(),
                    Arc::new(native::StaticBearer(token.clone())),
                )
                .map_err(|e| e.to_string())?,
            }),
            (SisenseMode::Scim, None) => {
                return Err(format!(
                    "tenants[{tenant_index}].vendor.scim_token: required with mode = \"scim\""
                ))
            }
            (SisenseMode::Rest, _) => None,
        };
        let id = tenant.id.as_str();
        let err = |e: StoreError| e.to_string();
        let dir = Directory::open(store, id, "sisense", SchemaRegistry::default()).map_err(err)?;
        let state = store.tree(id, "sisense-state").map_err(err)?;
        let audit = AuditLog::open(store, id).map_err(err)?;
        if let Some(c) = &role_changes {
            c.inc_by(audit.len());
        }
        let client = VendorClient::new(
            base_url.clone(),
            client_settings(),
            Arc::new(SisenseAuth {
                username: username.clone(),
                password: password.clone(),
            }),
        )
        .map_err(|e| e.to_string())?;
        let synced_before = state.get("synced").map_err(|e| e.to_string())?.is_some();
        let (synced, _) = tokio::sync::watch::channel(synced_before);
        let sync_interval = std::env::var("SCIM_BRIDGE_SYNC_INTERVAL_S")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_SYNC_INTERVAL);
        Ok(Arc::new(SisenseConnector {
            tenant: id.to_string(),
            tenant_index,
            dir,
            state,
            audit,
            client,
            native,
            paths: Paths {
                version: *api_version,
            },
            deprovision: *deprovision,
            rules: tenant.roles.clone(),
            roles: parking_lot::RwLock::new(None),
            fatal: parking_lot::RwLock::new(None),
            commit_lock: parking_lot::Mutex::new(()),
            user_locks: Stripes::new(1024),
            group_locks: Stripes::new(256),
            pending_users: parking_lot::Mutex::new(HashSet::new()),
            pending_groups: parking_lot::Mutex::new(HashSet::new()),
            recent: parking_lot::Mutex::new(HashMap::new()),
            synced,
            role_changes,
            sync_interval,
            commits: std::sync::atomic::AtomicU64::new(0),
            flushed: std::sync::atomic::AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            io_gate: tokio::sync::RwLock::new(()),
        }))
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// `mode = "scim"` creates whose role is not known to be set yet (durable notes that sync
    /// completes or drops).
    pub fn pending_intents(&self) -> usize {
        self.state.scan_prefix("intent/").count()
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Installs roles resolved before start (see [`preflight`]).
    pub fn set_roles(&self, table: RoleTable) {
        *self.roles.write() = Some(Arc::new(table));
    }

    /// Reads `/api/roles` and resolves the rules. `Err(Ok(problems))` for rules that do not
    /// resolve, `Err(Err(e))` when the vendor cannot be asked.
    pub async fn load_roles(&self) -> Result<RoleTable, Result<Vec<Problem>, VendorError>> {
        let roles = fetch_roles(&self.client).await.map_err(Err)?;
        RoleTable::build(self.tenant_index, &self.rules, &roles).map_err(Ok)
    }

    /// Start-up and interval work: resolve roles (if not yet), full sync, then every interval.
    pub fn spawn_background(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let me = Arc::downgrade(self);
        Some(handle.spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                let Some(conn) = me.upgrade() else { return };
                let wait = conn.background_round(&mut delay).await;
                drop(conn);
                tokio::time::sleep(wait).await;
            }
        }))
    }

    /// One round of background work; returns how long to wait before the next.
    async fn background_round(&self, delay: &mut Duration) -> Duration {
        if self.fatal.read().is_some() {
            return Duration::from_secs(3600);
        }
        if self.roles.read().is_none() {
            match self.load_roles().await {
                Ok(t) => self.set_roles(t),
                Err(Ok(problems)) => {
                    let text = problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    tracing::error!(tenant = %self.tenant, problems = %text, "role rules do not resolve against Sisense");
                    *self.fatal.write() = Some(text);
                    return Duration::from_secs(3600);
                }
                Err(Err(e)) => {
                    tracing::warn!(tenant = %self.tenant, error = %e, "cannot read Sisense roles yet");
                    *delay = (*delay * 2).min(Duration::from_secs(30));
                    return *delay;
                }
            }
        }
        match self.sync_now().await {
            Ok(report) => {
                tracing::info!(tenant = %self.tenant, ?report, "Sisense directory synced");
                *delay = Duration::from_millis(500);
                self.warn_unknown_rule_groups();
                self.sync_interval
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant, error = %e, "Sisense sync failed; retrying");
                *delay = (*delay * 2).min(Duration::from_secs(30));
                *delay
            }
        }
    }

    fn warn_unknown_rule_groups(&self) {
        let names: Vec<String> = self
            .dir
            .ids(ResourceKind::Group)
            .filter_map(Result::ok)
            .filter_map(|id| self.dir.load(ResourceKind::Group, &id).ok().flatten())
            .filter_map(|g| str_at(&g, "displayName").map(str::to_string))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for p in unknown_rule_groups(self.tenant_index, &self.rules, &refs) {
            tracing::warn!(tenant = %self.tenant, problem = %p, "role rule names a group Sisense does not have (yet)");
        }
    }

    /// Reads the whole Sisense directory and reconciles the index with it (see `sync`).
    pub async fn sync_now(&self) -> Result<sync::SyncReport, ScimError> {
        let report = sync::run(self).await?;
        let _ = self.state.insert("synced", &[][..]);
        self.synced.send_replace(true);
        Ok(report)
    }

    /// Waits (bounded) until roles are resolved and the directory has been synced once.
    async fn gate(&self, need_sync: bool) -> ScimResult<Arc<RoleTable>> {
        let deadline = Instant::now() + STARTUP_WAIT;
        loop {
            if let Some(f) = self.fatal.read().clone() {
                return Err(ScimError::unavailable(
                    format!("the tenant's role rules do not resolve against Sisense: {f}"),
                    300,
                ));
            }
            let roles = self.roles.read().clone();
            let synced = !need_sync || *self.synced.borrow();
            if let (Some(r), true) = (roles, synced) {
                return Ok(r);
            }
            if Instant::now() >= deadline {
                return Err(ScimError::unavailable(
                    "the bridge is still reading the Sisense directory; retry shortly",
                    5,
                ));
            }
            let mut rx = self.synced.subscribe();
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
    }

    fn touch(&self, scim_id: &str) {
        self.recent
            .lock()
            .insert(scim_id.to_string(), Instant::now());
    }

    fn load_state(&self, scim_id: &str) -> Result<Option<VendorState>, StoreError> {
        match self.state.get(format!("u/{scim_id}"))? {
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
            None => Ok(None),
        }
    }

    fn put_state(batch: &mut sled::Batch, scim_id: &str, st: &VendorState) {
        batch.insert(
            format!("u/{scim_id}").into_bytes(),
            serde_json::to_vec(st).unwrap_or_default(),
        );
    }

    /// Commits a directory batch, the vendor-state batch and audit entries, in that order, under
    /// the tenant's commit lock; then flushes before the IdP gets its answer.
    async fn commit(
        &self,
        mut dir_batch: sled::Batch,
        mut state_batch: sled::Batch,
        audit: Vec<RoleChange>,
        touched: &[&str],
        finish: Finish<'_>,
    ) -> ScimResult<()> {
        // Whatever the IdP's write touched is the IdP's: the role rules apply to it, and sync
        // puts back a role changed in Sisense. Users sync adopted from Sisense and the IdP never
        // wrote (and users of a version before this mark) keep their role.
        let deleted = match finish {
            Finish::Delete(_, id, _) => Some(id),
            _ => None,
        };
        for t in touched.iter().filter(|t| Some(**t) != deleted) {
            state_batch.insert(format!("idp/{t}").into_bytes(), &[][..]);
        }
        {
            let _io = self.io_gate.read().await;
            let _g = self.commit_lock.lock();
            // Counts are read-modify-write: bumped under the lock, in commit order, so the
            // stored count is the count (a restart reads it back).
            match finish {
                Finish::Nothing => {}
                Finish::Count(kind, delta) => self.dir.bump_count(&mut dir_batch, kind, delta),
                Finish::Delete(kind, id, old) => {
                    self.dir.delete_entries(&mut dir_batch, kind, id, old)?
                }
            }
            self.dir.commit(dir_batch)?;
            self.state
                .apply_batch(state_batch)
                .map_err(StoreError::from)?;
            let mut ab = sled::Batch::default();
            for a in &audit {
                self.audit.record(&mut ab, a);
            }
            self.audit.commit(ab, audit.len() as u64)?;
        }
        for t in touched {
            self.touch(t);
        }
        if let Some(c) = &self.role_changes {
            c.inc_by(audit.len() as u64);
        }
        self.durable().await
    }

    /// Makes every commit so far durable, sharing one flush with concurrent callers.
    async fn durable(&self) -> ScimResult<()> {
        use std::sync::atomic::Ordering;
        let mine = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        let _g = self.flush_lock.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        let covered = self.commits.load(Ordering::SeqCst);
        let _io = self.io_gate.write().await;
        self.dir.flush().await?;
        self.flushed.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Vendor calls
    // -----------------------------------------------------------------------------------------

    async fn send(&self, req: VendorRequest) -> ScimResult<wire_resp::Resp> {
        Ok(wire_resp::Resp(self.client.send(req).await?))
    }

    /// `GET users?userName=` then `?email=`: the natural-key lookup after an ambiguous create
    /// or a duplicate answer.
    async fn find_vendor_user(&self, f: &UserFields) -> Result<Option<wire::User>, VendorError> {
        for (k, v) in [("userName", &f.user_name), ("email", &f.email)] {
            let resp = self
                .client
                .send(VendorRequest::get(self.paths.users()).query(k, v.as_str()))
                .await?;
            if !resp.is_success() {
                continue;
            }
            let users: Vec<wire::User> = resp.json()?;
            if let Some(u) = users.into_iter().next() {
                return Ok(Some(u));
            }
        }
        Ok(None)
    }

    async fn find_vendor_group(&self, name: &str) -> Result<Option<wire::Group>, VendorError> {
        let resp = self
            .client
            .send(
                VendorRequest::get(self.paths.groups()).query(self.paths.group_name_query(), name),
            )
            .await?;
        if !resp.is_success() {
            return Ok(None);
        }
        let groups: Vec<wire::Group> = resp.json()?;
        Ok(groups
            .into_iter()
            .find(|g| g.name.eq_ignore_ascii_case(name)))
    }

    /// Creates a Sisense user; on a duplicate (2004) adopts the existing one if no SCIM user
    /// holds it yet, aligning it with `body`. Returns the vendor user.
    async fn create_vendor_user(
        &self,
        fields: &UserFields,
        body: Map<String, Value>,
    ) -> ScimResult<wire::User> {
        if let Some(n) = &self.native {
            return self.create_native_user(n, fields, body).await;
        }
        let req = VendorRequest::post(self.paths.users()).json(Value::Object(body.clone()));
        let outcome = self
            .client
            .create_or_find(req, || self.find_vendor_user(fields))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(u) => return self.align_adopted(u, body).await,
            CreateOutcome::Sent(r) => wire_resp::Resp(r),
        };
        if resp.0.is_success() {
            // v0.9 may answer an array for an array body; we send one object.
            return resp.user();
        }
        if resp.code() == Some(wire::USER_EXISTS) {
            let found = self.find_vendor_user(fields).await?;
            if let Some(u) = found {
                if self.dir.scim_id(ResourceKind::User, &u.id)?.is_none() {
                    return self.align_adopted(u, body).await;
                }
            }
            return Err(ScimError::uniqueness(
                "a Sisense user with this userName or email already exists",
            ));
        }
        Err(resp.refused("user"))
    }

    /// An existing Sisense user taken over by a create: its fields, role and activation are
    /// set to what the IdP sent; its groups are kept.
    async fn align_adopted(
        &self,
        u: wire::User,
        mut body: Map<String, Value>,
    ) -> ScimResult<wire::User> {
        body.remove("groups");
        if self.paths.is_legacy() || self.deprovision == SisenseDeprovision::Delete {
            body.remove("active");
        } else if !u.is_active() && !body.contains_key("active") {
            body.insert("active".into(), Value::Bool(true));
        }
        let _ = self.state.remove(format!("tomb/{}", u.id));
        tracing::info!(tenant = %self.tenant, vendor_id = %u.id, "adopting an existing Sisense user");
        self.patch_vendor_user(&u.id, body).await
    }

    /// `mode = "scim"`: the user is created (or adopted) over SCIM, then joins its groups (a
    /// reactivation restores them) over SCIM, then gets its role over REST.
    async fn create_native_user(
        &self,
        n: &native::NativeScim,
        fields: &UserFields,
        body: Map<String, Value>,
    ) -> ScimResult<wire::User> {
        let active = body.get("active").and_then(Value::as_bool).unwrap_or(true);
        // Two vendor calls make this create: until the role is set, a durable note says what
        // the user must get, so that a crash in between is completed by the next sync.
        let intent_key = format!("intent/{}", fold(&fields.user_name));
        let intent = json!({
            "roleId": body.get("roleId"),
            "at": now_ms(),
        });
        self.state
            .insert(
                intent_key.as_bytes(),
                serde_json::to_vec(&intent).unwrap_or_default(),
            )
            .map_err(StoreError::from)?;
        self.durable().await?;
        let mut u = match n.create_user(fields, active).await? {
            Ok(u) => u,
            Err(Some(existing))
                if self
                    .dir
                    .scim_id(ResourceKind::User, &existing.id)?
                    .is_none() =>
            {
                let _ = self.state.remove(format!("tomb/{}", existing.id));
                tracing::info!(tenant = %self.tenant, vendor_id = %existing.id, "adopting an existing Sisense user");
                let mut fix = fields.to_json();
                fix.insert("active".into(), Value::Bool(active));
                n.patch_user(&existing.id, native::user_ops(&fix)).await?;
                existing
            }
            Err(_) => {
                return Err(ScimError::uniqueness(
                    "a Sisense user with this userName or email already exists",
                ))
            }
        };
        let groups: Vec<String> = body
            .get("groups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for g in &groups {
            n.change_members(g, std::slice::from_ref(&u.id), &[])
                .await?;
        }
        u.groups = groups;
        let Some(role) = body.get("roleId") else {
            let _ = self.state.remove(intent_key.as_bytes());
            return Ok(u);
        };
        let mut b = Map::new();
        b.insert("roleId".into(), role.clone());
        let done = self.rest_patch_user(&u.id, b).await;
        if done.is_ok() {
            let _ = self.state.remove(intent_key.as_bytes());
        }
        done.map_err(|e| {
            if e.status == 503 && e.detail.contains("gone") {
                tracing::error!(tenant = %self.tenant, vendor_id = %u.id, "Sisense REST has no user under the id its SCIM endpoint returned");
                ScimError::unavailable(
                    "Sisense's REST API has no user under the id its SCIM endpoint returned; mode = \"scim\" needs both to share ids (the role could not be set)",
                    300,
                )
            } else {
                e
            }
        })
    }

    /// A partial update of a Sisense user (REST field names; `groups` is the full list). In
    /// `mode = "scim"` the profile and activation go over SCIM and the role over REST; membership
    /// never comes this way there (`change_group` sends the group's member PATCH, and
    /// `create_native_user` puts a recreated user back in its groups).
    async fn patch_vendor_user(
        &self,
        vid: &str,
        mut body: Map<String, Value>,
    ) -> ScimResult<wire::User> {
        let Some(n) = &self.native else {
            return self.rest_patch_user(vid, body).await;
        };
        let role = body.remove("roleId");
        debug_assert!(
            !body.contains_key("groups"),
            "scim mode: membership by group"
        );
        body.remove("groups");
        let state = match self.dir.scim_id(ResourceKind::User, vid)? {
            Some(sid) => self.load_state(&sid)?,
            None => None,
        }
        .unwrap_or_default();
        n.patch_user(vid, native::user_ops(&body)).await?;
        if let Some(role) = role {
            let mut b = Map::new();
            b.insert("roleId".into(), role);
            return self.rest_patch_user(vid, b).await;
        }
        // What Sisense now holds: the last known profile with this PATCH's fields applied.
        let field = |k: &str, old: Option<String>| match body.get(k) {
            Some(Value::String(v)) => Some(v.clone()),
            Some(Value::Null) => None,
            _ => old,
        };
        Ok(wire::User {
            id: vid.to_string(),
            email: field("email", state.email),
            user_name: field("userName", state.user_name),
            first_name: field("firstName", state.first_name),
            last_name: field("lastName", state.last_name),
            role_id: state.role_id,
            active: Some(
                body.get("active")
                    .and_then(Value::as_bool)
                    .unwrap_or(state.active),
            ),
            groups: state.groups,
        })
    }

    async fn rest_patch_user(&self, vid: &str, body: Map<String, Value>) -> ScimResult<wire::User> {
        let req = if self.paths.is_legacy() {
            VendorRequest::put(self.paths.user(vid))
        } else {
            // A PATCH of fields to fixed values is safe to repeat.
            VendorRequest::patch(self.paths.user(vid)).idempotent()
        };
        let resp = self.send(req.json(Value::Object(body))).await?;
        if resp.0.is_success() {
            return resp.user();
        }
        if resp.0.status == 404 {
            return Err(ScimError::unavailable(
                "the Sisense user is gone; the next sync repairs the mapping",
                30,
            ));
        }
        if resp.code() == Some(wire::USER_EXISTS) {
            return Err(ScimError::uniqueness(
                "a Sisense user with this userName or email already exists",
            ));
        }
        Err(resp.refused("user"))
    }

    async fn delete_vendor_user(&self, vid: &str) -> ScimResult<()> {
        if let Some(n) = &self.native {
            return n.delete_user(vid).await;
        }
        let resp = self
            .send(VendorRequest::delete(self.paths.user(vid)))
            .await?;
        if resp.0.is_success() || resp.0.status == 404 {
            return Ok(());
        }
        Err(resp.refused("user"))
    }

    // -----------------------------------------------------------------------------------------
    // Role evaluation
    // -----------------------------------------------------------------------------------------

    /// The display names of `groups` (SCIM ids); `renamed` overrides one group's name.
    fn group_names(
        &self,
        groups: &[String],
        renamed: Option<(&str, &str)>,
    ) -> ScimResult<Vec<String>> {
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            if let Some((id, name)) = renamed {
                if id == g {
                    out.push(name.to_string());
                    continue;
                }
            }
            if let Some(doc) = self.dir.load(ResourceKind::Group, g)? {
                if let Some(n) = str_at(&doc, "displayName") {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The role id a user should have: rules over its groups and SCIM `roles`; for a new user
    /// with no match and no default, Sisense's Viewer.
    fn desired_role(
        &self,
        table: &RoleTable,
        doc: &Value,
        group_names: &[String],
        new_user: bool,
    ) -> Option<String> {
        let roles: Vec<&str> = doc
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("value").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let groups: Vec<&str> = group_names.iter().map(String::as_str).collect();
        let id = table
            .resolved
            .desired_role_id(&self.rules, &groups, &roles)
            .map(str::to_string);
        match id {
            Some(id) => Some(id),
            None if new_user => table.fallback_id.clone(),
            None => None,
        }
        .filter(|id| Some(id) != table.super_id.as_ref())
    }

    /// `Some` when the vendor role must change (never away from Sys. Admin).
    fn role_plan(
        &self,
        table: &RoleTable,
        current: Option<&str>,
        desired: Option<String>,
    ) -> Option<RolePlan> {
        let desired = desired?;
        if current == Some(desired.as_str()) {
            return None;
        }
        if current.is_some() && current == table.super_id.as_deref() {
            return None;
        }
        Some(RolePlan {
            from: current.map(str::to_string),
            to: desired,
        })
    }

    fn audit_entry(
        &self,
        table: &RoleTable,
        scim_id: &str,
        doc: &Value,
        vid: &str,
        plan: &RolePlan,
        cause: &str,
    ) -> RoleChange {
        RoleChange {
            at: crate::scim::resource::now_timestamp(),
            user_id: scim_id.to_string(),
            user_name: str_at(doc, "userName").unwrap_or_default().to_string(),
            vendor_user_id: vid.to_string(),
            cause: cause.to_string(),
            actor: "idp".into(),
            from: plan.from.as_deref().map(|f| table.name(f)),
            to: table.name(&plan.to),
        }
    }

    /// The full Sisense `groups` list of a user whose SCIM groups are `groups`: their Sisense
    /// ids, plus the Sisense groups the bridge does not mirror (from the last known state).
    fn vendor_groups(
        &self,
        groups: &[String],
        state: Option<&VendorState>,
    ) -> ScimResult<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        if let Some(st) = state {
            for vg in &st.groups {
                if self.dir.scim_id(ResourceKind::Group, vg)?.is_none() {
                    out.push(vg.clone());
                }
            }
        }
        for g in groups {
            if let Some(vg) = self.dir.vendor_id(ResourceKind::Group, g)? {
                if !out.contains(&vg) {
                    out.push(vg);
                }
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Users
    // -----------------------------------------------------------------------------------------

    async fn create_user(&self, mut resource: Value, ctx: &RequestContext) -> ScimResult<Value> {
        let table = self.gate(true).await?;
        let dir = &self.dir;
        strip_unreturnable(&mut resource, dir.schema(ResourceKind::User));
        let (id, mut doc) = dir.new_doc(ResourceKind::User, &resource);
        let fields = UserFields::from_scim(&doc).ok_or_else(|| {
            ScimError::invalid_value(
                "Sisense requires an email: send `emails` or an email address as userName",
            )
        })?;
        let key = fold(&fields.user_name);
        let _lock = self.user_locks.lock(&format!("n/{key}")).await;
        let (unique, _) = index_keys(ResourceKind::User, &id, &doc);
        dir.check_unique(ResourceKind::User, &unique, None)?;
        let active = doc.get("active").and_then(Value::as_bool) != Some(false);
        let mut audit = Vec::new();
        let mut state_batch = sled::Batch::default();
        if active || self.deprovision == SisenseDeprovision::Deactivate {
            let _pending = Pending::new(&self.pending_users, key.clone());
            let desired = self.desired_role(&table, &doc, &[], true);
            let mut body = fields.to_json();
            if let Some(r) = &desired {
                body.insert("roleId".into(), Value::String(r.clone()));
            }
            // v0.9 REST has no `active`; Sisense's SCIM does.
            if !active && (self.native.is_some() || !self.paths.is_legacy()) {
                body.insert("active".into(), Value::Bool(false));
            }
            let u = self.create_vendor_user(&fields, body).await?;
            if let Some(plan) = desired.map(|to| RolePlan { from: None, to }) {
                audit.push(self.audit_entry(&table, &id, &doc, &u.id, &plan, "create"));
            }
            Self::put_state(&mut state_batch, &id, &VendorState::of(&u));
            // The pending mark lasts until the mapping is committed.
            dir.stamp(ResourceKind::User, &mut doc, None);
            let mut batch = sled::Batch::default();
            dir.write_doc(&mut batch, ResourceKind::User, &id, &doc, None);
            dir.link(&mut batch, ResourceKind::User, &id, &u.id);
            self.commit(
                batch,
                state_batch,
                audit,
                &[&id],
                Finish::Count(ResourceKind::User, 1),
            )
            .await?;
            return dir.render(ResourceKind::User, &id, doc, true, ctx);
        }
        // Created inactive with `deprovision = "delete"`: kept by the bridge only.
        dir.stamp(ResourceKind::User, &mut doc, None);
        let mut batch = sled::Batch::default();
        dir.write_doc(&mut batch, ResourceKind::User, &id, &doc, None);
        self.commit(
            batch,
            state_batch,
            audit,
            &[&id],
            Finish::Count(ResourceKind::User, 1),
        )
        .await?;
        dir.render(ResourceKind::User, &id, doc, true, ctx)
    }

    /// Applies a new version of a user (PUT or PATCH result) to Sisense, then to the directory.
    async fn update_user(
        &self,
        id: &str,
        old: &Value,
        mut doc: Value,
        cause: &str,
        ctx: &RequestContext,
        with_members: bool,
    ) -> ScimResult<Value> {
        let table = self.gate(false).await?;
        let dir = &self.dir;
        strip_unreturnable(&mut doc, dir.schema(ResourceKind::User));
        doc["id"] = Value::String(id.to_string());
        let (unique, _) = index_keys(ResourceKind::User, id, &doc);
        dir.check_unique(ResourceKind::User, &unique, Some(id))?;
        let fields = UserFields::from_scim(&doc).ok_or_else(|| {
            ScimError::invalid_value(
                "Sisense requires an email: send `emails` or an email address as userName",
            )
        })?;
        let old_fields = UserFields::from_scim(old);
        let was_active = old.get("active").and_then(Value::as_bool) != Some(false);
        let active = doc.get("active").and_then(Value::as_bool) != Some(false);
        let groups = dir.groups_of(id)?;
        let names = self.group_names(&groups, None)?;
        let vid = dir.vendor_id(ResourceKind::User, id)?;
        let state = self.load_state(id)?;
        let mut batch = sled::Batch::default();
        let mut state_batch = sled::Batch::default();
        let mut audit = Vec::new();
        match (vid, self.deprovision) {
            (Some(vid), SisenseDeprovision::Delete) if !active => {
                self.delete_vendor_user(&vid).await?;
                dir.unlink(&mut batch, ResourceKind::User, id, &vid);
                state_batch.remove(format!("u/{id}").into_bytes());
            }
            (Some(vid), _) => {
                let mut body = match &old_fields {
                    Some(of) => fields.diff(of),
                    None => fields.to_json(),
                };
                if active != was_active || state.as_ref().is_some_and(|s| s.active != active) {
                    body.insert("active".into(), Value::Bool(active));
                }
                let desired = self.desired_role(&table, &doc, &names, false);
                let plan = self.role_plan(
                    &table,
                    state.as_ref().and_then(|s| s.role_id.as_deref()),
                    desired,
                );
                if let Some(p) = &plan {
                    body.insert("roleId".into(), Value::String(p.to.clone()));
                }
                if !body.is_empty() {
                    let u = self.patch_vendor_user(&vid, body).await?;
                    if let Some(p) = &plan {
                        audit.push(self.audit_entry(&table, id, &doc, &vid, p, cause));
                    }
                    Self::put_state(&mut state_batch, id, &VendorState::of(&u));
                }
            }
            (None, _) if active => {
                // Reactivation of a user deprovisioned by deletion: recreated with its groups
                // and its role.
                let key = fold(&fields.user_name);
                let _pending = Pending::new(&self.pending_users, key);
                let desired = self.desired_role(&table, &doc, &names, true);
                let mut body = fields.to_json();
                if let Some(r) = &desired {
                    body.insert("roleId".into(), Value::String(r.clone()));
                }
                body.insert("groups".into(), json!(self.vendor_groups(&groups, None)?));
                let mut u = self.create_vendor_user(&fields, body.clone()).await?;
                if u.groups.is_empty() && !groups.is_empty() {
                    // Adopted rather than created: its groups were kept; set ours.
                    let mut b = Map::new();
                    b.insert("groups".into(), body["groups"].clone());
                    u = self.patch_vendor_user(&u.id, b).await?;
                }
                if let Some(plan) = desired.map(|to| RolePlan { from: None, to }) {
                    audit.push(self.audit_entry(&table, id, &doc, &u.id, &plan, "reactivate"));
                }
                dir.link(&mut batch, ResourceKind::User, id, &u.id);
                Self::put_state(&mut state_batch, id, &VendorState::of(&u));
            }
            (None, _) => {}
        }
        dir.stamp(ResourceKind::User, &mut doc, Some(old));
        dir.write_doc(&mut batch, ResourceKind::User, id, &doc, Some(old));
        self.commit(batch, state_batch, audit, &[id], Finish::Nothing)
            .await?;
        dir.render(ResourceKind::User, id, doc, with_members, ctx)
    }

    async fn delete_user(&self, id: &str, pre: &Precondition) -> ScimResult<()> {
        let _lock = self.user_locks.lock(id).await;
        let dir = &self.dir;
        let old = dir.load_or_404(ResourceKind::User, id)?;
        Directory::check_precondition(&old, pre)?;
        let mut state_batch = sled::Batch::default();
        if let Some(vid) = dir.vendor_id(ResourceKind::User, id)? {
            match self.deprovision {
                SisenseDeprovision::Delete => self.delete_vendor_user(&vid).await?,
                SisenseDeprovision::Deactivate => {
                    let mut body = Map::new();
                    body.insert("active".into(), Value::Bool(false));
                    match self.patch_vendor_user(&vid, body).await {
                        Ok(_) => {}
                        Err(e) if e.status == 503 && e.detail.contains("gone") => {}
                        Err(e) => return Err(e),
                    }
                    // Sisense keeps the user, deactivated; sync must not bring it back.
                    state_batch.insert(format!("tomb/{vid}").into_bytes(), &[][..]);
                }
            }
        }
        state_batch.remove(format!("u/{id}").into_bytes());
        self.commit(
            sled::Batch::default(),
            state_batch,
            Vec::new(),
            &[id],
            Finish::Delete(ResourceKind::User, id, &old),
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Groups
    // -----------------------------------------------------------------------------------------

    async fn create_group(&self, mut resource: Value, ctx: &RequestContext) -> ScimResult<Value> {
        let table = self.gate(true).await?;
        let dir = &self.dir;
        strip_unreturnable(&mut resource, dir.schema(ResourceKind::Group));
        let members = resource
            .get("members")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (id, mut doc) = dir.new_doc(ResourceKind::Group, &resource);
        let name = str_at(&doc, "displayName")
            .ok_or_else(|| ScimError::invalid_value("a group needs a displayName"))?
            .to_string();
        let key = fold(&name);
        let _lock = self.group_locks.lock(&format!("n/{key}")).await;
        let (unique, _) = index_keys(ResourceKind::Group, &id, &doc);
        dir.check_unique(ResourceKind::Group, &unique, None)?;
        {
            let _pending = Pending::new(&self.pending_groups, key);
            let vg = match &self.native {
                Some(n) => match n.create_group(&name).await? {
                    Ok(g) => g,
                    Err(Some(g)) if dir.scim_id(ResourceKind::Group, &g.id)?.is_none() => g,
                    Err(_) => {
                        return Err(ScimError::uniqueness(
                            "a Sisense group with this name already exists",
                        ))
                    }
                },
                None => self.create_rest_group(&name).await?,
            };
            dir.stamp(ResourceKind::Group, &mut doc, None);
            let mut batch = sled::Batch::default();
            dir.write_doc(&mut batch, ResourceKind::Group, &id, &doc, None);
            dir.link(&mut batch, ResourceKind::Group, &id, &vg.id);
            self.commit(
                batch,
                sled::Batch::default(),
                Vec::new(),
                &[&id],
                Finish::Count(ResourceKind::Group, 1),
            )
            .await?;
        }
        if !members.is_empty() {
            let ops = [MemberOp::Add(members)];
            match self
                .change_group(&table, &id, &doc, None, &ops, "create")
                .await
            {
                Ok((stored, _)) => doc = stored,
                // The group exists now: answer 201 with the members that made it (a 503 would
                // make the IdP re-POST into a 409); its next membership push completes it.
                Err(e) if e.status >= 500 => {
                    tracing::warn!(tenant = %self.tenant, group = %id, error = %e.detail, "group created; some members not yet in Sisense");
                    doc = dir.load_or_404(ResourceKind::Group, &id)?;
                }
                Err(e) => return Err(e),
            }
        }
        dir.render(ResourceKind::Group, &id, doc, true, ctx)
    }

    /// `POST` a group over REST; a duplicate name is adopted when no SCIM group holds it.
    async fn create_rest_group(&self, name: &str) -> ScimResult<wire::Group> {
        let req = VendorRequest::post(self.paths.groups()).json(self.paths.new_group(name));
        let outcome = self
            .client
            .create_or_find(req, || self.find_vendor_group(name))
            .await?;
        match outcome {
            CreateOutcome::Found(g) => Ok(g),
            CreateOutcome::Sent(r) if r.is_success() => wire::created_group(&r.body)
                .ok_or_else(|| ScimError::unavailable("unreadable Sisense group", 30)),
            CreateOutcome::Sent(r) if matches!(r.status, 400 | 409) => {
                // Sisense refuses a duplicate name; the group may predate the last sync.
                match self.find_vendor_group(name).await? {
                    Some(g) if self.dir.scim_id(ResourceKind::Group, &g.id)?.is_none() => Ok(g),
                    _ => Err(ScimError::uniqueness(
                        "a Sisense group with this name already exists",
                    )),
                }
            }
            CreateOutcome::Sent(r) => Err(wire_resp::Resp(r).refused("group")),
        }
    }

    /// Applies a rename and/or member operations to a group: Sisense first (rename, then each
    /// affected user's full `groups` list and role), then one directory commit of what
    /// succeeded. Returns the stored group and whether anything changed.
    async fn change_group(
        &self,
        table: &RoleTable,
        gid: &str,
        old: &Value,
        new_doc: Option<Value>,
        ops: &[MemberOp],
        cause: &str,
    ) -> ScimResult<(Value, bool)> {
        let dir = &self.dir;
        let old_name = str_at(old, "displayName").unwrap_or_default().to_string();
        let new_name = new_doc
            .as_ref()
            .and_then(|d| str_at(d, "displayName"))
            .unwrap_or(&old_name)
            .to_string();
        let renamed = new_name != old_name;
        let vgid = dir.vendor_id(ResourceKind::Group, gid)?;
        if renamed {
            let mut probe = new_doc.clone().unwrap_or_else(|| old.clone());
            probe["id"] = Value::String(gid.to_string());
            let (unique, _) = index_keys(ResourceKind::Group, gid, &probe);
            dir.check_unique(ResourceKind::Group, &unique, Some(gid))?;
            if let (Some(n), Some(vgid)) = (&self.native, &vgid) {
                n.rename_group(vgid, &new_name).await?;
            } else if let Some(vgid) = &vgid {
                let resp = self
                    .send(
                        VendorRequest::put(self.paths.group_legacy(vgid))
                            .json(json!({ "name": new_name })),
                    )
                    .await?;
                if !resp.0.is_success() {
                    if matches!(resp.0.status, 400 | 409) {
                        return Err(ScimError::uniqueness(
                            "a Sisense group with this name already exists",
                        ));
                    }
                    return Err(resp.refused("group"));
                }
            }
        }
        // The net membership change, computed on a scratch batch.
        let change = if ops.is_empty() {
            MembershipChange::default()
        } else {
            let mut scratch = sled::Batch::default();
            dir.apply_member_ops(&mut scratch, gid, ops)?
        };
        let added: HashSet<&str> = change.added.iter().map(String::as_str).collect();
        let removed: HashSet<&str> = change.removed.iter().map(String::as_str).collect();
        // Users whose groups or role may move: the changed members, and all members on rename
        // (rules match group names).
        let mut affected: Vec<String> = change
            .added
            .iter()
            .chain(change.removed.iter())
            .cloned()
            .collect();
        if renamed {
            for m in dir.member_ids(gid)? {
                if !affected.contains(&m) {
                    affected.push(m);
                }
            }
        }
        affected.retain(|u| matches!(dir.load(ResourceKind::User, u), Ok(Some(_))));
        let _locks = self
            .user_locks
            .lock_all(affected.iter().map(String::as_str))
            .await;
        if let (Some(n), Some(vgid)) = (&self.native, &vgid) {
            // Sisense's SCIM keeps membership on the group: one PATCH for the whole change
            // (idempotent, so the IdP's retry after a later failure repeats it harmlessly).
            let linked = |ids: &[String]| -> ScimResult<Vec<String>> {
                let mut out = Vec::new();
                for u in ids {
                    if let Some(v) = dir.vendor_id(ResourceKind::User, u)? {
                        out.push(v);
                    }
                }
                Ok(out)
            };
            n.change_members(vgid, &linked(&change.added)?, &linked(&change.removed)?)
                .await?;
        }
        let results = futures_util::stream::iter(affected.iter().cloned())
            .map(|uid| {
                let in_change = if added.contains(uid.as_str()) {
                    Some(true)
                } else if removed.contains(uid.as_str()) {
                    Some(false)
                } else {
                    None
                };
                let new_name = new_name.clone();
                async move {
                    let r = self
                        .apply_user_groups(table, &uid, gid, in_change, &new_name, cause)
                        .await;
                    (uid, r)
                }
            })
            .buffer_unordered(FAN_OUT)
            .collect::<Vec<_>>()
            .await;
        let mut ok_added = Vec::new();
        let mut ok_removed = Vec::new();
        let mut state_batch = sled::Batch::default();
        let mut audit = Vec::new();
        let mut first_err = None;
        let mut touched: Vec<String> = Vec::new();
        for (uid, r) in results {
            match r {
                Ok((state, entry)) => {
                    if added.contains(uid.as_str()) {
                        ok_added.push(json!({ "value": uid }));
                    } else if removed.contains(uid.as_str()) {
                        ok_removed.push(uid.clone());
                    }
                    if let Some(st) = state {
                        Self::put_state(&mut state_batch, &uid, &st);
                    }
                    audit.extend(entry);
                    touched.push(uid);
                }
                Err(e) => {
                    tracing::warn!(tenant = %self.tenant, user = %uid, error = %e.detail, "membership change not applied in Sisense");
                    first_err.get_or_insert(e);
                }
            }
        }
        // Nested groups and unknown ids are kept in the directory only.
        for a in &change.added {
            if dir.load(ResourceKind::User, a)?.is_none() {
                ok_added.push(json!({ "value": a }));
            }
        }
        for r in &change.removed {
            if dir.load(ResourceKind::User, r)?.is_none() {
                ok_removed.push(r.clone());
            }
        }
        let members_changed = !ok_added.is_empty() || !ok_removed.is_empty();
        let mut doc = new_doc.unwrap_or_else(|| old.clone());
        let doc_changed = renamed || doc != *old;
        if !members_changed && !doc_changed {
            if let Some(e) = first_err {
                return Err(e);
            }
            return Ok((old.clone(), false));
        }
        let mut batch = sled::Batch::default();
        if members_changed {
            let mut final_ops = Vec::new();
            if !ok_removed.is_empty() {
                final_ops.push(MemberOp::Remove(ok_removed));
            }
            if !ok_added.is_empty() {
                final_ops.push(MemberOp::Add(ok_added));
            }
            dir.apply_member_ops(&mut batch, gid, &final_ops)?;
        }
        doc["id"] = Value::String(gid.to_string());
        dir.stamp(ResourceKind::Group, &mut doc, Some(old));
        dir.write_doc(&mut batch, ResourceKind::Group, gid, &doc, Some(old));
        let mut touched_refs: Vec<&str> = touched.iter().map(String::as_str).collect();
        touched_refs.push(gid);
        self.commit(batch, state_batch, audit, &touched_refs, Finish::Nothing)
            .await?;
        if let Some(e) = first_err {
            // Part of the change reached Sisense and is committed; the IdP's retry completes it.
            return Err(e);
        }
        Ok((doc, true))
    }

    /// One user's side of a group change: its full Sisense `groups` list (when its membership
    /// of `gid` changes) and its role, in one PATCH. Returns the new vendor state (if a call was
    /// made) and the audit entry.
    async fn apply_user_groups(
        &self,
        table: &RoleTable,
        uid: &str,
        gid: &str,
        member: Option<bool>,
        group_name: &str,
        cause: &str,
    ) -> ScimResult<(Option<VendorState>, Option<RoleChange>)> {
        let dir = &self.dir;
        let Some(doc) = dir.load(ResourceKind::User, uid)? else {
            return Ok((None, None));
        };
        let Some(vid) = dir.vendor_id(ResourceKind::User, uid)? else {
            // Deprovisioned by deletion: membership kept by the bridge, restored on reactivation.
            return Ok((None, None));
        };
        let mut groups = dir.groups_of(uid)?;
        match member {
            Some(true) if !groups.iter().any(|g| g == gid) => groups.push(gid.to_string()),
            Some(false) => groups.retain(|g| g != gid),
            _ => {}
        }
        let names = self.group_names(&groups, Some((gid, group_name)))?;
        let state = self.load_state(uid)?;
        let mut body = Map::new();
        let mut moved = None;
        if member.is_some() {
            let list = self.vendor_groups(&groups, state.as_ref())?;
            if self.native.is_some() {
                // Already in Sisense: `change_group` sent the group's member PATCH.
                let mut st = state.clone().unwrap_or_default();
                st.groups = list;
                moved = Some(st);
            } else {
                body.insert("groups".into(), json!(list));
            }
        }
        let desired = self.desired_role(table, &doc, &names, false);
        let plan = self.role_plan(
            table,
            state.as_ref().and_then(|s| s.role_id.as_deref()),
            desired,
        );
        if let Some(p) = &plan {
            body.insert("roleId".into(), Value::String(p.to.clone()));
        }
        if body.is_empty() {
            return Ok((moved, None));
        }
        let u = self.patch_vendor_user(&vid, body).await?;
        let cause = format!("{cause} of group \"{group_name}\"");
        let entry = plan.map(|p| self.audit_entry(table, uid, &doc, &vid, &p, &cause));
        Ok((Some(VendorState::of(&u)), entry))
    }

    async fn delete_group(&self, id: &str, pre: &Precondition) -> ScimResult<()> {
        let table = self.gate(false).await?;
        let _lock = self.group_locks.lock(id).await;
        let dir = &self.dir;
        let old = dir.load_or_404(ResourceKind::Group, id)?;
        Directory::check_precondition(&old, pre)?;
        let members: Vec<String> = dir
            .member_ids(id)?
            .into_iter()
            .filter(|m| matches!(dir.load(ResourceKind::User, m), Ok(Some(_))))
            .collect();
        let vgid = dir.vendor_id(ResourceKind::Group, id)?;
        if let (Some(n), Some(vgid)) = (&self.native, &vgid) {
            n.delete_group(vgid).await?;
        } else if let Some(vgid) = &vgid {
            let resp = self
                .send(VendorRequest::delete(self.paths.group(vgid)))
                .await?;
            if !resp.0.is_success() && resp.0.status != 404 {
                return Err(resp.refused("group"));
            }
        }
        // Sisense drops the group from its users itself; their roles may move.
        let _locks = self
            .user_locks
            .lock_all(members.iter().map(String::as_str))
            .await;
        let name = str_at(&old, "displayName").unwrap_or_default().to_string();
        let results = futures_util::stream::iter(members.iter().cloned())
            .map(|uid| {
                let table = &table;
                let name = &name;
                let vgid = vgid.clone();
                async move {
                    let r = self
                        .role_after_group_delete(table, &uid, id, vgid.as_deref(), name)
                        .await;
                    (uid, r)
                }
            })
            .buffer_unordered(FAN_OUT)
            .collect::<Vec<_>>()
            .await;
        let mut state_batch = sled::Batch::default();
        let mut audit = Vec::new();
        for (uid, r) in results {
            match r {
                Ok((st, entry)) => {
                    if let Some(st) = st {
                        Self::put_state(&mut state_batch, &uid, &st);
                    }
                    audit.extend(entry);
                }
                Err(e) => {
                    tracing::warn!(tenant = %self.tenant, user = %uid, error = %e.detail, "role not re-evaluated after group delete; next change repairs it");
                }
            }
        }

        let mut touched: Vec<&str> = members.iter().map(String::as_str).collect();
        touched.push(id);
        self.commit(
            sled::Batch::default(),
            state_batch,
            audit,
            &touched,
            Finish::Delete(ResourceKind::Group, id, &old),
        )
        .await
    }

    async fn role_after_group_delete(
        &self,
        table: &RoleTable,
        uid: &str,
        gid: &str,
        vgid: Option<&str>,
        name: &str,
    ) -> ScimResult<(Option<VendorState>, Option<RoleChange>)> {
        let dir = &self.dir;
        let Some(doc) = dir.load(ResourceKind::User, uid)? else {
            return Ok((None, None));
        };
        let Some(vid) = dir.vendor_id(ResourceKind::User, uid)? else {
            return Ok((None, None));
        };
        let mut groups = dir.groups_of(uid)?;
        groups.retain(|g| g != gid);
        let names = self.group_names(&groups, None)?;
        let mut state = self.load_state(uid)?.unwrap_or_default();
        state.groups.retain(|g| Some(g.as_str()) != vgid);
        let desired = self.desired_role(table, &doc, &names, false);
        let Some(plan) = self.role_plan(table, state.role_id.as_deref(), desired) else {
            return Ok((Some(state), None));
        };
        let mut body = Map::new();
        body.insert("roleId".into(), Value::String(plan.to.clone()));
        let u = self.patch_vendor_user(&vid, body).await?;
        let cause = format!("delete of group \"{name}\"");
        let entry = self.audit_entry(table, uid, &doc, &vid, &plan, &cause);
        Ok((Some(VendorState::of(&u)), Some(entry)))
    }
}

/// Reading vendor answers.
mod wire_resp {
    use super::wire;
    use crate::connector::http::VendorResponse;
    use crate::scim::ScimError;

    pub struct Resp(pub VendorResponse);

    impl Resp {
        pub fn code(&self) -> Option<i64> {
            wire::error_code(&self.0.body)
        }
        pub fn user(&self) -> Result<wire::User, ScimError> {
            match self.0.json::<serde_json::Value>()? {
                serde_json::Value::Array(mut a) if !a.is_empty() => {
                    serde_json::from_value(a.remove(0)).map_err(|e| {
                        ScimError::unavailable(format!("unreadable Sisense user: {e}"), 30)
                    })
                }
                v => serde_json::from_value(v).map_err(|e| {
                    ScimError::unavailable(format!("unreadable Sisense user: {e}"), 30)
                }),
            }
        }
        /// A vendor refusal: the IdP's data (400/422) → 400 with Sisense's message; anything
        /// else → 503 (the bridge's or the vendor's problem, not the IdP's).
        pub fn refused(&self, what: &str) -> ScimError {
            let message = serde_json::from_slice::<serde_json::Value>(&self.0.body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_default();
            match self.0.status {
                400 | 422 => {
                    ScimError::invalid_value(format!("Sisense refused the {what}: {message}"))
                }
                _ => ScimError::from(self.0.rejected()),
            }
        }
    }
}

/// `GET /api/roles`.
async fn fetch_roles(client: &VendorClient) -> Result<Vec<wire::Role>, VendorError> {
    let resp = client.send(VendorRequest::get(Paths::ROLES)).await?;
    if !resp.is_success() {
        return Err(resp.rejected());
    }
    resp.json()
}

/// Start-up check of a Sisense tenant, on a private runtime (the server is built synchronously):
/// signs in and resolves the role rules. `Ok(Some)` resolved; `Ok(None)` the vendor cannot be
/// reached now (the connector resolves later and answers 503 meanwhile); `Err` the problems,
/// each with its key path — the tenant must not start with rules that would assign a wrong role.
pub fn preflight(
    tenant: &TenantConfig,
    tenant_index: usize,
) -> Result<Option<RoleTable>, Vec<Problem>> {
    let VendorConfig::Sisense {
        base_url,
        username,
        password,
        scim_token,
        ..
    } = &tenant.vendor
    else {
        return Ok(None);
    };
    let scim_token = scim_token.clone();
    let settings = ClientSettings {
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        ..client_settings()
    };
    let auth = Arc::new(SisenseAuth {
        username: username.clone(),
        password: password.clone(),
    });
    let rules = tenant.roles.clone();
    let base = base_url.clone();
    let outcome = std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let client = VendorClient::new(base, settings, auth).map_err(|e| e.to_string())?;
                client.ensure_signed_in().await.map_err(|e| match e {
                    VendorError::Auth { reason } => format!("auth:{reason}"),
                    other => other.to_string(),
                })?;
                let roles = fetch_roles(&client).await.map_err(|e| e.to_string())?;
                if let Some(token) = scim_token {
                    match probe_native(client.base_url().clone(), settings_for_probe(), token).await
                    {
                        Ok(()) => {}
                        Err((true, problem)) => return Err(format!("scim:{problem}")),
                        // Busy or failing now: requests get 503s until it answers.
                        Err((false, reason)) => {
                            tracing::warn!(%reason, "Sisense SCIM endpoint not checked at start")
                        }
                    }
                }
                Ok::<_, String>(roles)
            })
        })
        .join()
        .unwrap_or_else(|_| Err("preflight panicked".into()))
    });
    match outcome {
        Ok(roles) => RoleTable::build(tenant_index, &rules, &roles).map(Some),
        Err(reason) if reason.starts_with("auth:") => Err(vec![Problem {
            key_path: format!("tenants[{tenant_index}].vendor.username"),
            message: format!(
                "Sisense refused the sign-in ({}); check username and password",
                reason.trim_start_matches("auth:")
            ),
        }]),
        Err(reason) if reason.starts_with("scim:") => Err(vec![Problem {
            key_path: format!("tenants[{tenant_index}].vendor.scim_token"),
            message: reason.trim_start_matches("scim:").to_string(),
        }]),
        Err(reason) => {
            tracing::warn!(tenant = %tenant.id, %reason, "Sisense not reachable at start; roles resolved when it is");
            Ok(None)
        }
    }
}

fn settings_for_probe() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_secs(10),
        max_attempts: 2,
        ..client_settings()
    }
}

/// `mode = "scim"`: whether Sisense's SCIM endpoint takes the token. `Err((true, _))` needs
/// the operator (a refused token, no endpoint); `Err((false, _))` may pass (down, throttled).
/// The message says what to fix, never the token.
async fn probe_native(
    base: Url,
    settings: ClientSettings,
    token: crate::config::Secret,
) -> Result<(), (bool, String)> {
    let client = VendorClient::new(base, settings, Arc::new(native::StaticBearer(token)))
        .map_err(|e| (true, e.to_string()))?;
    match (native::NativeScim { client }).probe().await {
        Ok(()) => Ok(()),
        Err(VendorError::Auth { .. }) => Err((
            true,
            "Sisense's SCIM endpoint refused the token (generate one in Sisense Admin > Security)"
                .into(),
        )),
        Err(VendorError::Rejected {
            status: 404 | 405, ..
        }) => Err((
            true,
            "Sisense has no SCIM endpoint at api/scim/v2 (Enterprise plan, with SSO and SCIM enabled)"
                .into(),
        )),
        Err(e) => Err((false, format!("cannot reach Sisense's SCIM endpoint: {e}"))),
    }
}

/// `config check --online` for a Sisense tenant: sign-in, and every role and group named in the
/// rules (a missing group is an error here, a warning at start).
pub async fn check_online(tenant: &TenantConfig, tenant_index: usize) -> Vec<Problem> {
    let VendorConfig::Sisense {
        base_url,
        username,
        password,
        api_version,
        scim_token,
        ..
    } = &tenant.vendor
    else {
        return Vec::new();
    };
    let client = match VendorClient::new(
        base_url.clone(),
        ClientSettings {
            max_attempts: 2,
            ..client_settings()
        },
        Arc::new(SisenseAuth {
            username: username.clone(),
            password: password.clone(),
        }),
    ) {
        Ok(c) => c,
        Err(e) => {
            return vec![Problem {
                key_path: format!("tenants[{tenant_index}].vendor.base_url"),
                message: e.to_string(),
            }]
        }
    };
    let mut problems = Vec::new();
    if let Err(e) = client.ensure_signed_in().await {
        return vec![Problem {
            key_path: format!("tenants[{tenant_index}].vendor"),
            message: format!("cannot sign in to Sisense: {e}"),
        }];
    }
    match fetch_roles(&client).await {
        Ok(roles) => {
            if let Err(p) = RoleTable::build(tenant_index, &tenant.roles, &roles) {
                problems.extend(p);
            }
        }
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].roles"),
            message: format!("cannot read Sisense roles: {e}"),
        }),
    }
    let paths = Paths {
        version: *api_version,
    };
    let mut names = Vec::new();
    match sync::fetch_all::<wire::Group>(&client, paths.groups()).await {
        Ok(groups) => names.extend(groups.into_iter().map(|g| g.name)),
        Err(e) => problems.push(Problem {
            key_path: format!("tenants[{tenant_index}].roles"),
            message: format!("cannot read Sisense groups: {e}"),
        }),
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    problems.extend(unknown_rule_groups(tenant_index, &tenant.roles, &refs));
    if let Some(token) = scim_token {
        if let Err((_, message)) =
            probe_native(base_url.clone(), settings_for_probe(), token.clone()).await
        {
            problems.push(Problem {
                key_path: format!("tenants[{tenant_index}].vendor.scim_token"),
                message,
            });
        }
    }
    problems
}

#[async_trait]
impl Connector for SisenseConnector {
    fn schemas(&self) -> &SchemaRegistry {
        self.dir.schemas()
    }

    async fn create(
        &self,
        kind: ResourceKind,
        resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        match kind {
            ResourceKind::User => self.create_user(resource, ctx).await,
            ResourceKind::Group => self.create_group(resource, ctx).await,
        }
    }

    async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let doc = self.dir.load_or_404(kind, id)?;
        self.dir.render(kind, id, doc, with_members, ctx)
    }

    async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        mut resource: Value,
        pre: &Precondition,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        let schema = dir.schema(kind);
        strip_unreturnable(&mut resource, schema);
        match kind {
            ResourceKind::User => {
                let _lock = self.user_locks.lock(id).await;
                let old = dir.load_or_404(kind, id)?;
                Directory::check_precondition(&old, pre)?;
                let doc = replace(&old, resource, schema)?;
                self.update_user(id, &old, doc, "replace", ctx, true).await
            }
            ResourceKind::Group => {
                let table = self.gate(false).await?;
                let members = resource.as_object_mut().and_then(|o| o.remove("members"));
                let _lock = self.group_locks.lock(id).await;
                let old = dir.load_or_404(kind, id)?;
                Directory::check_precondition(&old, pre)?;
                let mut doc = replace(&old, resource, schema)?;
                doc["id"] = Value::String(id.to_string());
                // PUT replaces the whole resource (RFC 7644 §3.5.1): no `members` means none.
                let list = members
                    .and_then(|m| m.as_array().cloned())
                    .unwrap_or_default();
                let (doc, _) = self
                    .change_group(
                        &table,
                        id,
                        &old,
                        Some(doc),
                        &[MemberOp::Replace(list)],
                        "replace",
                    )
                    .await?;
                dir.render(kind, id, doc, true, ctx)
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
        let dir = &self.dir;
        let schema = dir.schema(kind);
        match kind {
            ResourceKind::User => {
                let _lock = self.user_locks.lock(id).await;
                let old = dir.load_or_404(kind, id)?;
                Directory::check_precondition(&old, pre)?;
                let subject = dir.render(kind, id, old.clone(), false, ctx)?;
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
                self.update_user(id, &old, doc, "patch", ctx, with_members)
                    .await
            }
            ResourceKind::Group => {
                let table = self.gate(false).await?;
                let _lock = self.group_locks.lock(id).await;
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
                let (doc, _) = self
                    .change_group(
                        &table,
                        id,
                        &old,
                        new_doc,
                        &outcome.delta.member_ops,
                        "patch",
                    )
                    .await?;
                dir.render(kind, id, doc, with_members, ctx)
            }
        }
    }

    async fn delete(&self, kind: ResourceKind, id: &str, pre: &Precondition) -> ScimResult<()> {
        match kind {
            ResourceKind::User => self.delete_user(id, pre).await,
            ResourceKind::Group => self.delete_group(id, pre).await,
        }
    }

    async fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage> {
        // Lookups must see every Sisense user: before the first full sync, wait for it.
        if !*self.synced.borrow() {
            self.gate(true).await?;
        }
        self.dir.list(kind, query, with_members, ctx)
    }

    async fn ready(&self) -> Result<(), String> {
        self.dir.ready()?;
        if let Some(f) = self.fatal.read().clone() {
            return Err(format!("role rules do not resolve against Sisense: {f}"));
        }
        let open = |what: &str, health: &super::http::ClientHealth| match health.breaker {
            super::http::BreakerState::Open { .. } => Err(format!(
                "{what} unavailable: {}",
                health
                    .not_ready_reason()
                    .unwrap_or_else(|| "circuit open".into())
            )),
            _ => Ok(()),
        };
        let health = self.client.health();
        open("Sisense", &health)?;
        if let Some(n) = &self.native {
            let health = n.client.health();
            open("Sisense SCIM endpoint", &health)?;
            // A static token never "signs in": a revoked one shows as the last error, until a
            // request succeeds again.
            if let Some(e) = health
                .last_error
                .filter(|e| e.starts_with("vendor sign-in failed"))
            {
                return Err(format!("Sisense SCIM endpoint refuses the token: {e}"));
            }
        }
        if !health.signed_in {
            self.client
                .ensure_signed_in()
                .await
                .map_err(|e| format!("Sisense: {e}"))?;
        }
        if self.roles.read().is_none() {
            return Err("Sisense roles not resolved yet".into());
        }
        if !*self.synced.borrow() {
            return Err("first sync of the Sisense directory not finished".into());
        }
        Ok(())
    }
}

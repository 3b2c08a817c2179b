//! The tamper-evident audit log (issues 5 and 13): one entry per change the bridge made at a
//! vendor — role moves, creates, profile updates, deactivations, deletes, group and membership
//! changes, refusals — with who asked (`actor`), why (`cause`), and the values before and after.
//! One sled tree per tenant (`t/{tenant}/audit`).
//!
//! ## The hash chain
//! Every entry has a `seq` (1, 2, 3… per tenant, without gaps), `prev` (the `hash` of the entry
//! before it, or of the retention checkpoint, or 64 zeros for the first entry) and `hash`:
//!
//! ```text
//! hash = hex(SHA-256(canonical(entry as stored, without "hash", with "tenant": <tenant id>)))
//! ```
//!
//! where `canonical` is compact JSON with the keys of every object sorted (by their UTF-8
//! bytes), as Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False)` writes it. An exported JSON line is exactly that object plus its `hash`,
//! so an auditor re-verifies an export without the bridge. Altering an entry breaks its hash;
//! removing one breaks the `seq` run and the next `prev`; removing the last ones is caught by the
//! head record (last `seq` and `hash`). Retention removes the oldest entries and keeps a
//! checkpoint (the last removed entry's `seq` and `hash`) where the chain then starts; the same
//! transaction appends a `retention_pruned` entry that carries that checkpoint, so removing
//! more old entries and forging the checkpoint to match is caught as well (the newest such
//! entry must name the checkpoint). There is no secret key: someone who can rewrite the
//! store can rewrite the whole chain, so keep the head hash that `verify` prints somewhere else
//! (a ticket, the SIEM) to anchor it.
//!
//! ## Layout
//! | key                  | value                                                   |
//! |----------------------|---------------------------------------------------------|
//! | `e{seq u64 BE}`      | an entry (JSON), in chain order                          |
//! | `head`               | [`Head`]: last `seq` and `hash`, role changes counted    |
//! | `checkpoint`         | [`Checkpoint`]: `seq` and `hash` of the last pruned entry (also chained: [`RetentionRecord`]) |
//! | `{nanos BE}{n BE}`   | an entry of the first format (no chain), chained at open |
//!
//! Chain assignment is serialised per tenant: `seq`, `prev` and `hash` are computed at commit,
//! under the tenant's chain mutex, inside the sled transaction that also applies the directory
//! batch the entries record and reads the head (sled runs a transaction under its global write
//! lock, so two handles on one tenant — the engine's and a retention run's — can never fork
//! the chain).

use crate::store::{Batch, Store, StoreError, Tree};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The `prev` of the first entry of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const ENTRY_PREFIX: u8 = b'e';
const HEAD_KEY: &[u8] = b"head";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// Keys of the first format are `{unix nanos BE}{n BE}`: they sort before `checkpoint` until
/// the 23rd century (a first byte below `c`, 0x63).
const LEGACY_END: &[u8] = b"c";
/// Entries moved per transaction when old entries are chained or pruned, so one step never
/// holds sled's global transaction lock for long.
const CHUNK: usize = 5_000;

/// One change at a vendor. The Rust names of the object fields (`user_id`, `user_name`,
/// `vendor_user_id`) come from the first format, which knew only users; a group entry uses them
/// for the group. Stored as `scim_id`, `name` and `vendor_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the tenant's chain (1, 2, 3…); 0 until committed.
    #[serde(default)]
    pub seq: u64,
    /// `hash` of the previous entry (or of the checkpoint; [`GENESIS`] for the first).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev: String,
    /// See the module doc.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// RFC 3339 time of the change.
    pub at: String,
    /// Who asked: `idp`, `sync`, `sweep` or `operator`.
    pub actor: String,
    /// What caused it, e.g. `create`, `patch`, `membership of group "BI Admins"`.
    pub cause: String,
    #[serde(default)]
    pub event: AuditEvent,
    #[serde(default)]
    pub object: AuditObject,
    /// The object's SCIM id.
    #[serde(rename = "scim_id", alias = "user_id", default)]
    pub user_id: String,
    /// The object's userName or displayName.
    #[serde(rename = "name", alias = "user_name", default)]
    pub user_name: String,
    /// The vendor's id of the object.
    #[serde(rename = "vendor_id", alias = "vendor_user_id", default)]
    pub vendor_user_id: String,
    /// Vendor role names of a role move (`None`: unknown or none). Not stored: read from
    /// `before.role` / `after.role` (the first format stored them, and is read).
    #[serde(default, skip_serializing)]
    pub from: Option<String>,
    #[serde(default, skip_serializing)]
    pub to: String,
    /// The changed values before and after, small JSON objects (`{"role": …}`,
    /// `{"active": false}`, `{"email": …}`, `{"group": …}`); absent when unknown or none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub before: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub after: Value,
    /// The vendor's reason, for a refusal; a note otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The former name, while other code still says it.
pub type RoleChange = AuditEntry;

/// What an entry records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A role move (a create's first role included: every role grant is one of these).
    #[default]
    RoleChange,
    /// The vendor refused a change for good; it stays `failed` in the outbox until the IdP
    /// writes the object again or an operator retries it.
    DeliveryRefused,
    /// The IdP deleted a user and the vendor kept it without access instead of removing it
    /// (Tableau 409003: the user owns content and stays, `Unlicensed`).
    RemovalKept,
    UserCreated,
    /// Profile fields changed (`before`/`after` hold the changed fields only).
    UserUpdated,
    UserDeactivated,
    UserReactivated,
    UserDeleted,
    GroupCreated,
    GroupRenamed,
    GroupDeleted,
    /// A user put into a mirrored group (`after.group`).
    MemberAdded,
    /// A user taken out of a mirrored group (`before.group`).
    MemberRemoved,
    /// Entries older than the retention were removed (`detail`: how many). `after` carries the
    /// checkpoint the chain then starts from, so that the checkpoint is itself chained.
    RetentionPruned,
    /// An operator asked for a sync now (the console's or the API's "Sync now"); the
    /// corrections it causes follow as entries of actor `sync`.
    SyncRequested,
    /// An operator asked to retry failed deliveries (`detail`: how many were re-queued); the
    /// deliveries follow as entries of actor `operator`.
    RetryRequested,
    /// An operator revoked a tenant's JWT (`name` and `after.jti`: its `jti`; `detail`: why).
    TokenRevoked,
    /// An event this version does not know (written by a newer one).
    #[serde(other)]
    Other,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 17] = [
        AuditEvent::RoleChange,
        AuditEvent::DeliveryRefused,
        AuditEvent::RemovalKept,
        AuditEvent::UserCreated,
        AuditEvent::UserUpdated,
        AuditEvent::UserDeactivated,
        AuditEvent::UserReactivated,
        AuditEvent::UserDeleted,
        AuditEvent::GroupCreated,
        AuditEvent::GroupRenamed,
        AuditEvent::GroupDeleted,
        AuditEvent::MemberAdded,
        AuditEvent::MemberRemoved,
        AuditEvent::RetentionPruned,
        AuditEvent::SyncRequested,
        AuditEvent::RetryRequested,
        AuditEvent::TokenRevoked,
    ];

    /// The snake_case name, as stored and exported.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::RoleChange => "role_change",
            AuditEvent::DeliveryRefused => "delivery_refused",
            AuditEvent::RemovalKept => "removal_kept",
            AuditEvent::UserCreated => "user_created",
            AuditEvent::UserUpdated => "user_updated",
            AuditEvent::UserDeactivated => "user_deactivated",
            AuditEvent::UserReactivated => "user_reactivated",
            AuditEvent::UserDeleted => "user_deleted",
            AuditEvent::GroupCreated => "group_created",
            AuditEvent::GroupRenamed => "group_renamed",
            AuditEvent::GroupDeleted => "group_deleted",
            AuditEvent::MemberAdded => "member_added",
            AuditEvent::MemberRemoved => "member_removed",
            AuditEvent::RetentionPruned => "retention_pruned",
            AuditEvent::SyncRequested => "sync_requested",
            AuditEvent::RetryRequested => "retry_requested",
            AuditEvent::TokenRevoked => "token_revoked",
            AuditEvent::Other => "other",
        }
    }

    /// The event named `s` (snake_case), for filters.
    pub fn parse(s: &str) -> Option<AuditEvent> {
        AuditEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// What kind of object an entry is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditObject {
    #[default]
    User,
    Group,
    /// The log itself (retention).
    AuditLog,
    /// The tenant as a whole (an operator's sync or retry of everything); `name` is its id.
    Tenant,
}

impl AuditObject {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditObject::User => "user",
            AuditObject::Group => "group",
            AuditObject::AuditLog => "audit_log",
            AuditObject::Tenant => "tenant",
        }
    }
}

impl AuditEntry {
    /// An entry about nothing yet, made now.
    pub fn new(event: AuditEvent, actor: &str, cause: impl Into<String>) -> AuditEntry {
        AuditEntry {
            seq: 0,
            prev: String::new(),
            hash: String::new(),
            at: crate::scim::resource::now_timestamp(),
            actor: actor.to_string(),
            cause: cause.into(),
            event,
            object: AuditObject::User,
            user_id: String::new(),
            user_name: String::new(),
            vendor_user_id: String::new(),
            from: None,
            to: String::new(),
            before: Value::Null,
            after: Value::Null,
            detail: None,
        }
    }

    /// About a user: its SCIM id, userName and vendor id.
    pub fn user(mut self, scim_id: &str, name: &str, vendor_id: &str) -> AuditEntry {
        self.object = AuditObject::User;
        self.user_id = scim_id.into();
        self.user_name = name.into();
        self.vendor_user_id = vendor_id.into();
        self
    }

    /// About a group: its SCIM id, displayName and vendor id.
    pub fn group(mut self, scim_id: &str, name: &str, vendor_id: &str) -> AuditEntry {
        self.object = AuditObject::Group;
        self.user_id = scim_id.into();
        self.user_name = name.into();
        self.vendor_user_id = vendor_id.into();
        self
    }

    /// About the tenant as a whole (an operator's sync or retry of everything).
    pub fn tenant(mut self, tenant: &str) -> AuditEntry {
        self.object = AuditObject::Tenant;
        self.user_name = tenant.into();
        self
    }

    pub fn before(mut self, v: Value) -> AuditEntry {
        self.before = v;
        self
    }

    pub fn after(mut self, v: Value) -> AuditEntry {
        self.after = v;
        self
    }

    /// A role move by vendor role name (`from`: `None` when unknown or none).
    pub fn role_move(mut self, from: Option<String>, to: String) -> AuditEntry {
        self.before = merge(self.before, "role", from.clone().map(Value::String));
        self.after = merge(self.after, "role", Some(Value::String(to.clone())));
        self.from = from;
        self.to = to;
        self
    }

    /// The vendor's reason (an empty one is none).
    pub fn detail(mut self, d: impl Into<String>) -> AuditEntry {
        let d = d.into();
        self.detail = (!d.is_empty()).then_some(d);
        self
    }

    /// Whether the entry counts as a role change for `/metrics` (a move, or a deactivation or
    /// reactivation made by a role).
    pub fn is_role_change(&self) -> bool {
        match self.event {
            AuditEvent::RoleChange => true,
            AuditEvent::UserDeactivated | AuditEvent::UserReactivated => !self.to.is_empty(),
            _ => false,
        }
    }

    /// Fills the role names from `before`/`after` (they are not stored twice).
    fn with_role_names(mut self) -> AuditEntry {
        let role = |v: &Value| v.get("role").and_then(Value::as_str).map(str::to_string);
        if self.from.is_none() {
            self.from = role(&self.before);
        }
        if self.to.is_empty() {
            self.to = role(&self.after).unwrap_or_default();
        }
        self
    }

    /// An entry of the first format in this one: its role names into `before`/`after`.
    fn upgraded(mut self) -> AuditEntry {
        if self.before.is_null() {
            if let Some(f) = &self.from {
                self.before = serde_json::json!({ "role": f });
            }
        }
        if self.after.is_null() && !self.to.is_empty() {
            self.after = serde_json::json!({ "role": self.to });
        }
        self.seq = 0;
        self.prev.clear();
        self.hash.clear();
        self
    }
}

/// `obj` with `key` set (an object; `None` leaves it as it is).
fn merge(obj: Value, key: &str, v: Option<Value>) -> Value {
    let Some(v) = v else {
        return obj;
    };
    let mut m = match obj {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert(key.into(), v);
    Value::Object(m)
}

/// The chain's end: the last `seq` given and its hash. Also counts role changes ever recorded
/// (the `/metrics` counter's start value; not part of the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    #[serde(default)]
    pub role_changes: u64,
}

impl Default for Head {
    fn default() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.into(),
            role_changes: 0,
        }
    }
}

/// Where the chain starts after retention: the last pruned entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// The time of the last pruned entry.
    pub at: String,
    /// Entries pruned so far, in every run.
    #[serde(default)]
    pub pruned: u64,
}

/// The chain's end points, read together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainState {
    /// `None`: nothing was ever chained.
    pub head: Option<Head>,
    pub checkpoint: Option<Checkpoint>,
}

impl ChainState {
    /// Entries the chain holds now.
    pub fn len(&self) -> u64 {
        let last = self.head.as_ref().map_or(0, |h| h.seq);
        let pruned = self.checkpoint.as_ref().map_or(0, |c| c.seq);
        last.saturating_sub(pruned)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn corrupt(what: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: format!("audit {what}"),
        reason: reason.to_string(),
    }
}

/// The key of entry `seq`.
pub fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The `seq` an entry key names (`None`: not an entry key).
pub fn seq_of_key(key: &[u8]) -> Option<u64> {
    (key.len() == 9 && key[0] == ENTRY_PREFIX)
        .then(|| u64::from_be_bytes(key[1..].try_into().unwrap_or_default()))
}

/// Compact JSON with every object's keys sorted (see the module doc).
pub fn canonical_json(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).unwrap_or_default());
                    out.push(b':');
                    write(&m[k], out);
                }
                out.push(b'}');
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// The hash of a stored entry of `tenant` (its `hash` field, if any, is left out).
pub fn entry_hash(tenant: &str, stored: &Map<String, Value>) -> String {
    let mut m = stored.clone();
    m.remove("hash");
    m.insert("tenant".into(), Value::String(tenant.into()));
    hex::encode(Sha256::digest(canonical_json(&Value::Object(m))))
}

/// Reads an entry as stored.
pub fn decode_entry(bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    serde_json::from_slice::<AuditEntry>(bytes)
        .map(AuditEntry::with_role_names)
        .map_err(|e| corrupt("entry", e))
}

/// Puts `entry` at the end of the chain `head`: its key and stored bytes.
fn chain_one(tenant: &str, head: &mut Head, entry: &AuditEntry) -> (Vec<u8>, Vec<u8>) {
    let mut e = entry.clone();
    e.seq = head.seq + 1;
    e.prev = head.hash.clone();
    e.hash.clear();
    let mut m = match serde_json::to_value(&e) {
        Ok(Value::Object(m)) => m,
        // A struct of strings and JSON values always serialises to an object.
        _ => Map::new(),
    };
    let hash = entry_hash(tenant, &m);
    m.insert("hash".into(), Value::String(hash.clone()));
    head.seq = e.seq;
    head.hash = hash;
    if e.is_role_change() {
        head.role_changes += 1;
    }
    (
        entry_key(e.seq).to_vec(),
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default(),
    )
}

type TxResult<T> = sled::transaction::ConflictableTransactionResult<T, StoreError>;

fn read_head(t: &sled::transaction::TransactionalTree) -> TxResult<Option<Head>> {
    match t.get(HEAD_KEY)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
            sled::transaction::ConflictableTransactionError::Abort(corrupt("head", e))
        }),
    }
}

/// Appends `entries` inside a transaction on the audit tree; the new head.
fn append_in(
    t: &sled::transaction::TransactionalTree,
    tenant: &str,
    entries: &[AuditEntry],
) -> TxResult<Head> {
    let mut head = read_head(t)?.unwrap_or_default();
    for e in entries {
        let (k, v) = chain_one(tenant, &mut head, e);
        t.insert(k, v)?;
    }
    if !entries.is_empty() {
        let bytes = serde_json::to_vec(&head).unwrap_or_default();
        t.insert(HEAD_KEY, bytes)?;
    }
    Ok(head)
}

fn tx_error(e: sled::transaction::TransactionError<StoreError>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        sled::transaction::TransactionError::Abort(e) => e,
    }
}

/// The chain mutex of a tenant, shared by every handle on it in this process (the engine's
/// log, a retention run).
fn chain_lock(tenant: &str) -> Arc<parking_lot::Mutex<()>> {
    static LOCKS: OnceLock<parking_lot::Mutex<HashMap<String, Arc<parking_lot::Mutex<()>>>>> =
        OnceLock::new();
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .entry(tenant.to_string())
        .or_default()
        .clone()
}

/// The name of the audit tree of `tenant` (see [`Store::tree`]).
fn tree_name(tenant: &str) -> String {
    format!("t/{tenant}/audit")
}

/// The tenants that have an audit log (a non-empty audit tree), sorted. Opens nothing new.
pub fn audited_tenants(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for name in store.db.tree_names() {
        let Ok(name) = std::str::from_utf8(&name) else {
            continue;
        };
        let Some(tenant) = name
            .strip_prefix("t/")
            .and_then(|n| n.strip_suffix("/audit"))
        else {
            continue;
        };
        if !store.db.open_tree(name)?.is_empty() {
            out.push(tenant.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// A read-only handle on one tenant's audit log: never creates the tree, never chains.
#[derive(Clone)]
pub struct AuditReader {
    tenant: String,
    tree: sled::Tree,
}

impl AuditReader {
    /// `None` when the tenant has no audit log.
    pub fn open(store: &Store, tenant: &str) -> Result<Option<AuditReader>, StoreError> {
        let name = tree_name(tenant);
        if !store.db.tree_names().iter().any(|n| n == name.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(AuditReader {
            tenant: tenant.to_string(),
            tree: store.db.open_tree(name)?,
        }))
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Head and checkpoint, read in one transaction (a commit or a retention run in between
    /// cannot mix them).
    pub fn state(&self) -> Result<ChainState, StoreError> {
        self.tree
            .transaction(|t| {
                let head = read_head(t)?;
                let checkpoint = match t.get(CHECKPOINT_KEY)? {
                    None => None,
                    Some(v) => Some(serde_json::from_slice(&v).map_err(|e| {
                        sled::transaction::ConflictableTransactionError::Abort(corrupt(
                            "checkpoint",
                            e,
                        ))
                    })?),
                };
                Ok(ChainState { head, checkpoint })
            })
            .map_err(tx_error)
    }

    /// Stored entries from `seq` on, in chain order: `(key, bytes)`.
    pub fn raw_from(
        &self,
        seq: u64,
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        self.tree
            .range(entry_key(seq).to_vec()..=entry_key(u64::MAX).to_vec())
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StoreError::from)
            })
    }

    /// Every stored entry key and bytes in chain order (`e` keys, whatever their length).
    pub fn raw(&self) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        self.tree.scan_prefix([ENTRY_PREFIX]).map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }

    /// Entries, decoded, in chain order (`rev()` for newest first).
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = Result<AuditEntry, StoreError>> {
        self.raw().map(|kv| kv.and_then(|(_, v)| decode_entry(&v)))
    }

    /// Entries of the first format not chained yet (a store no bridge of this version opened).
    pub fn unchained(&self) -> u64 {
        self.tree.range(..LEGACY_END.to_vec()).count() as u64
    }
}

/// The audit log of one tenant, as the engine writes it.
pub struct AuditLog {
    tenant: String,
    tree: Tree,
    /// Serialises chain assignment for the tenant in this process (see the module doc).
    chain: Arc<parking_lot::Mutex<()>>,
}

impl AuditLog {
    /// Opens the tenant's log, chaining entries of the first format (a migration).
    pub fn open(store: &Store, tenant: &str) -> Result<AuditLog, StoreError> {
        let tree = store.tree(tenant, "audit")?;
        let log = AuditLog {
            tenant: tenant.to_string(),
            tree,
            chain: chain_lock(tenant),
        };
        log.chain_first_format()?;
        Ok(log)
    }

    /// Migration: entries written before the chain existed (keyed by time, no `seq`/`hash`)
    /// are chained once, in their time order, appended after whatever chain exists, and their
    /// old keys removed in the same transaction. Runs at every open; finds nothing after the
    /// first.
    fn chain_first_format(&self) -> Result<(), StoreError> {
        let _g = self.chain.lock();
        let raw = self.tree.raw();
        loop {
            let mut chunk: Vec<(sled::IVec, AuditEntry)> = Vec::new();
            for kv in raw.range(..LEGACY_END.to_vec()).take(CHUNK) {
                let (k, v) = kv?;
                let e = serde_json::from_slice::<AuditEntry>(&v)
                    .map_err(|e| corrupt("entry of the first format", e))?;
                chunk.push((k, e.upgraded()));
            }
            if chunk.is_empty() {
                return Ok(());
            }
            let entries: Vec<AuditEntry> = chunk.iter().map(|(_, e)| e.clone()).collect();
            raw.transaction(|t| {
                for (k, _) in &chunk {
                    t.remove(k.clone())?;
                }
                append_in(t, &self.tenant, &entries)
            })
            .map_err(tx_error)?;
            tracing::info!(tenant = %self.tenant, entries = chunk.len(), "audit entries of the first format chained");
        }
    }

    /// Appends entries on their own (no directory write to go with them).
    pub fn append(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _g = self.chain.lock();
        self.tree
            .raw()
            .transaction(|t| append_in(t, &self.tenant, entries))
            .map_err(tx_error)?;
        Ok(())
    }

    /// Applies a directory batch and appends `entries` in one sled transaction.
    pub(super) fn apply_with(
        &self,
        dir_tree: &sled::Tree,
        dir_batch: Batch,
        entries: &[AuditEntry],
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        let _g = self.chain.lock();
        (dir_tree, self.tree.raw())
            .transaction(|(d, a)| {
                d.apply_batch(&dir_batch.ops)?;
                append_in(a, &self.tenant, entries)
            })
            .map_err(tx_error)?;
        Ok(())
    }

    fn reader(&self) -> AuditReader {
        AuditReader {
            tenant: self.tenant.clone(),
            tree: self.tree.raw().clone(),
        }
    }

    /// Head and checkpoint.
    pub fn state(&self) -> Result<ChainState, StoreError> {
        self.reader().state()
    }

    /// Role changes recorded so far (pruned ones included; refusals not counted).
    pub fn role_changes(&self) -> u64 {
        match self.state() {
            Ok(s) => s.head.map_or(0, |h| h.role_changes),
            Err(e) => {
                tracing::error!(tenant = %self.tenant, error = %e, "cannot read the audit head");
                0
            }
        }
    }

    /// Entries the log holds now.
    pub fn len(&self) -> u64 {
        match self.state() {
            Ok(s) => s.len(),
            Err(e) => {
                tracing::error!(tenant = %self.tenant, error = %e, "cannot read the audit head");
                0
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.reader().entries().collect()
    }
}

/// Removes the entries of `tenant` made before `older_than` (the oldest run of them: the chain
/// is cut at its first younger entry), moves the checkpoint to the last one removed, and
/// records the pruning as an entry of its own (`retention_pruned`, actor `operator`) that
/// carries the new checkpoint ([`RetentionRecord`]). Removal, checkpoint and entry are one
/// sled transaction, so the checkpoint is never taken on trust: `verify` checks it against the
/// newest such entry, which the hash chain protects. A run over more than [`CHUNK`] entries
/// takes one step (and writes one entry) per chunk, so no step holds sled's global
/// transaction lock for long. Returns how many were removed; nothing is recorded when nothing
/// was old enough.
pub fn prune(
    store: &Store,
    tenant: &str,
    older_than: chrono::DateTime<chrono::Utc>,
) -> Result<u64, StoreError> {
    let Some(reader) = AuditReader::open(store, tenant)? else {
        return Ok(0);
    };
    let lock = chain_lock(tenant);
    let _g = lock.lock();
    let old =
        |e: &AuditEntry| chrono::DateTime::parse_from_rfc3339(&e.at).is_ok_and(|t| t < older_than);
    let cause = format!(
        "retention: entries older than {}",
        older_than.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    // The chain's end as the run starts: the entries this run appends are never its to prune
    // (with a cutoff in the future they would be "old" too, and the run would not end).
    let end = reader.state()?.head.map_or(0, |h| h.seq);
    let mut pruned = 0u64;
    loop {
        let mut chunk: Vec<(u64, AuditEntry)> = Vec::new();
        let mut done = false;
        for kv in reader.raw().take(CHUNK) {
            let (k, v) = kv?;
            let Some(seq) = seq_of_key(&k) else {
                return Err(corrupt("key", format!("not an entry key: {k:?}")));
            };
            if seq > end {
                done = true;
                break;
            }
            let e = decode_entry(&v)?;
            if !old(&e) {
                done = true;
                break;
            }
            chunk.push((seq, e));
        }
        let Some((last_seq, last)) = chunk.last().cloned() else {
            break;
        };
        let first_seq = chunk[0].0;
        let n = chunk.len() as u64;
        reader
            .tree
            .transaction(|t| {
                let before: Option<Checkpoint> = match t.get(CHECKPOINT_KEY)? {
                    Some(v) => serde_json::from_slice(&v).ok(),
                    None => None,
                };
                for (seq, _) in &chunk {
                    t.remove(entry_key(*seq).to_vec())?;
                }
                let cp = Checkpoint {
                    seq: last_seq,
                    hash: last.hash.clone(),
                    at: last.at.clone(),
                    pruned: before.map_or(0, |c| c.pruned) + n,
                };
                t.insert(CHECKPOINT_KEY, serde_json::to_vec(&cp).unwrap_or_default())?;
                let mut entry = AuditEntry::new(AuditEvent::RetentionPruned, "operator", &cause)
                    .before(serde_json::json!({ "from_seq": first_seq, "to_seq": last_seq }))
                    .after(RetentionRecord::of(&cp).to_json())
                    .detail(n.to_string());
                entry.object = AuditObject::AuditLog;
                entry.user_name = tenant.to_string();
                append_in(t, tenant, std::slice::from_ref(&entry))?;
                Ok(())
            })
            .map_err(tx_error)?;
        pruned += n;
        if done {
            break;
        }
    }
    if pruned > 0 {
        tracing::info!(tenant, pruned, "audit retention pruned entries");
    }
    Ok(pruned)
}

/// The checkpoint as a `retention_pruned` entry carries it in `after`: the first `seq` kept
/// and the hash (and time) of the last pruned entry, and the entries pruned in all runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRecord {
    pub first_kept_seq: u64,
    /// `None` in an entry of the first retention format (it recorded only `before.to_seq`).
    pub last_pruned_hash: Option<String>,
    pub last_pruned_at: Option<String>,
    pub pruned_total: Option<u64>,
}

impl RetentionRecord {
    pub fn of(cp: &Checkpoint) -> RetentionRecord {
        RetentionRecord {
            first_kept_seq: cp.seq + 1,
            last_pruned_hash: Some(cp.hash.clone()),
            last_pruned_at: Some(cp.at.clone()),
            pruned_total: Some(cp.pruned),
        }
    }

    fn to_json(&self) -> Value {
        serde_json::json!({
            "first_kept_seq": self.first_kept_seq,
            "last_pruned_hash": self.last_pruned_hash,
            "last_pruned_at": self.last_pruned_at,
            "pruned_total": self.pruned_total,
        })
    }

    /// Reads it from a stored `retention_pruned` entry (`None`: the entry names no checkpoint).
    pub fn from_stored(stored: &Map<String, Value>) -> Option<RetentionRecord> {
        let after = stored.get("after");
        let field = |k: &str| after.and_then(|a| a.get(k));
        match field("first_kept_seq").and_then(Value::as_u64) {
            Some(first_kept_seq) => Some(RetentionRecord {
                first_kept_seq,
                last_pruned_hash: field("last_pruned_hash")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                last_pruned_at: field("last_pruned_at")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                pruned_total: field("pruned_total").and_then(Value::as_u64),
            }),
            // The first format, written after a whole run: `before.to_seq` was the checkpoint.
            None => stored
                .get("before")
                .and_then(|b| b.get("to_seq"))
                .and_then(Value::as_u64)
                .map(|to| RetentionRecord {
                    first_kept_seq: to + 1,
                    last_pruned_hash: None,
                    last_pruned_at: None,
                    pruned_total: None,
                }),
        }
    }

    /// How `cp` differs from this record, in words (`None`: it matches). A field the record
    /// does not carry (the first format) is not compared.
    pub fn mismatch(&self, cp: &Checkpoint) -> Option<String> {
        if cp.seq + 1 != self.first_kept_seq {
            return Some(format!(
                "the checkpoint says entries up to {} were pruned, the chain records up to {}",
                cp.seq,
                self.first_kept_seq.saturating_sub(1)
            ));
        }
        if self
            .last_pruned_hash
            .as_ref()
            .is_some_and(|h| *h != cp.hash)
        {
            return Some("its hash is not the one the chain records".into());
        }
        if self.last_pruned_at.as_ref().is_some_and(|a| *a != cp.at) {
            return Some("its time is not the one the chain records".into());
        }
        if self.pruned_total.is_some_and(|p| p != cp.pruned) {
            return Some("its count of pruned entries is not the one the chain records".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(to: &str) -> AuditEntry {
        AuditEntry::new(AuditEvent::RoleChange, "idp", "create")
            .user("u", "ada", "v")
            .role_move(None, to.into())
    }

    #[test]
    fn entries_are_chained_in_order_and_counted_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(&store, "t").unwrap();
        log.append(&[role("Viewer"), role("Admin")]).unwrap();
        assert_eq!(log.len(), 2);
        let entries = log.entries().unwrap();
        let tos: Vec<&str> = entries.iter().map(|e| e.to.as_str()).collect();
        assert_eq!(tos, ["Viewer", "Admin"]);
        assert_eq!((entries[0].seq, entries[1].seq), (1, 2));
        assert_eq!(entries[0].prev, GENESIS);
        assert_eq!(entries[1].prev, entries[0].hash);
        assert_eq!(log.role_changes(), 2);
        drop(log);
        let log = AuditLog::open(&store, "t").unwrap();
        assert_eq!(log.len(), 2);
        log.append(&[role("Viewer")]).unwrap();
        assert_eq!(log.entries().unwrap()[2].seq, 3);
    }

    #[test]
    fn the_hash_is_sha256_of_the_sorted_compact_entry_with_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(&store, "acme").unwrap();
        log.append(&[role("Viewer")]).unwrap();
        let bytes = store
            .tree("acme", "audit")
            .unwrap()
            .get(entry_key(1))
            .unwrap();
        let mut v: Map<String, Value> = serde_json::from_slice(&bytes.unwrap()).unwrap();
        let hash = v.remove("hash").unwrap();
        v.insert("tenant".into(), "acme".into());
        // Written out by hand, as an auditor's script would (keys sorted, compact).
        let mut keys: Vec<_> = v.keys().cloned().collect();
        keys.sort();
        let text = format!(
            "{{{}}}",
            keys.iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), v[k]))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(hash, hex::encode(Sha256::digest(text.as_bytes())));
        // The same entry under another tenant hashes differently: it cannot be moved.
        v.remove("tenant");
        assert_ne!(entry_hash("other", &v), hash.as_str().unwrap());
    }

    #[test]
    fn canonical_json_sorts_nested_keys_and_keeps_arrays_in_order() {
        let v = serde_json::json!({"b": {"z": 1, "a": [3, {"y": "é\n", "x": null}]}, "a": true});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":true,"b":{"a":[3,{"x":null,"y":"é\n"}],"z":1}}"#
        );
    }

    #[test]
    fn entries_of_the_first_format_are_chained_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("t", "audit").unwrap();
        // As the first format wrote them: time keys, user_* names, from/to, no event for roles.
        for (i, to) in ["Viewer", "Admin"].iter().enumerate() {
            let mut key = (1_700_000_000_000_000_000u64 + i as u64)
                .to_be_bytes()
                .to_vec();
            key.extend_from_slice(&(i as u64).to_be_bytes());
            let old = serde_json::json!({
                "at": "2026-01-01T00:00:00Z", "user_id": "u", "user_name": "ada",
                "vendor_user_id": "v", "cause": "create", "actor": "idp",
                "from": if i == 0 { Value::Null } else { "Viewer".into() }, "to": to,
            });
            tree.insert(key, serde_json::to_vec(&old).unwrap()).unwrap();
        }
        let refused = serde_json::json!({
            "at": "2026-01-02T00:00:00Z", "user_id": "w", "user_name": "bo",
            "vendor_user_id": "", "cause": "create of a User", "actor": "idp",
            "from": null, "to": "", "event": "delivery_refused", "detail": "no seat",
        });
        let mut key = 1_700_000_000_000_000_009u64.to_be_bytes().to_vec();
        key.extend_from_slice(&9u64.to_be_bytes());
        tree.insert(key, serde_json::to_vec(&refused).unwrap())
            .unwrap();
        assert_eq!(
            AuditReader::open(&store, "t").unwrap().unwrap().unchained(),
            3
        );

        let log = AuditLog::open(&store, "t").unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log.role_changes(), 2);
        let e = log.entries().unwrap();
        assert_eq!(e[1].from.as_deref(), Some("Viewer"));
        assert_eq!(e[1].to, "Admin");
        assert_eq!(e[1].after, serde_json::json!({"role": "Admin"}));
        assert_eq!(e[2].event, AuditEvent::DeliveryRefused);
        assert_eq!(e[2].detail.as_deref(), Some("no seat"));
        assert_eq!(e[2].prev, e[1].hash);
        assert_eq!(
            AuditReader::open(&store, "t").unwrap().unwrap().unchained(),
            0
        );
        assert_eq!(tree.len(), 4, "three entries and the head");
    }

    #[test]
    fn concurrent_appends_give_one_chain_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let logs: Vec<_> = (0..4)
            .map(|_| Arc::new(AuditLog::open(&store, "t").unwrap()))
            .collect();
        let threads: Vec<_> = logs
            .iter()
            .map(|log| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        log.append(&[role("Viewer"), role("Admin")]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let entries = logs[0].entries().unwrap();
        assert_eq!(entries.len(), 400);
        let mut prev = GENESIS.to_string();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.prev, prev);
            prev = e.hash.clone();
        }
        assert_eq!(logs[1].state().unwrap().head.unwrap().hash, prev);
    }
}

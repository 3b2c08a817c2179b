//! The directory: SCIM resources of one tenant kept in sled with their indexes, memberships and
//! `meta`. The `local` connector stores its data here; vendor connectors keep their mirror of
//! the vendor directory here, plus the ID map (SCIM id ↔ vendor id), so IdP lookups are
//! answered without calling the vendor.
//!
//! Layout, one sled tree per tenant (keys are prefix-encoded so one atomic `Batch` covers a
//! whole write, indexes included):
//!
//! | key                         | value                                   |
//! |-----------------------------|-----------------------------------------|
//! | `u/{id}` / `g/{id}`         | the user / the group (without members)  |
//! | `i/un/{userName folded}`    | user id (unique)                        |
//! | `i/gn/{displayName folded}` | group id (unique)                       |
//! | `i/ux/{externalId}\0{id}`   | — (users by externalId)                 |
//! | `i/ue/{email folded}\0{id}` | — (users by any email value)            |
//! | `i/gx/{externalId}\0{id}`   | — (groups by externalId)                |
//! | `m/{group}\0{member}`       | the member entry `{value, display, type}` |
//! | `o/{member}\0{group}`       | — (reverse index: User.groups)          |
//! | `c/users`, `c/groups`       | counts (u64 BE), so start-up never scans |
//! | `v/u/{vendor id}` / `v/g/…` | SCIM id (ID map, vendor connectors)     |
//! | `x/u/{scim id}` / `x/g/…`   | vendor id                               |
//!
//! Members live outside the group document, so a 100,000-member group is patched by touching
//! only the changed entries, and `excludedAttributes=members` reads never load them.

use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::list::{sort_resources, ListQuery};
use crate::scim::patch::MemberOp;
use crate::scim::request::{ListPage, Precondition, RequestContext};
use crate::scim::resource::{compute_version, etag_matches, now_timestamp};
use crate::scim::schema::{ResourceKind, ResourceSchema, SchemaRegistry};
use crate::scim::{ScimError, ScimResult};
use crate::store::{Batch, Store, StoreError};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// The net effect of membership operations on one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl MembershipChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Callers serialise writes (read, check, then write one atomic batch); reads need no lock.
pub struct Directory {
    pub(super) tree: sled::Tree,
    store: Store,
    /// Shared by every tenant whose connector describes the same resources
    /// ([`SchemaRegistry::interned`]).
    schemas: std::sync::Arc<SchemaRegistry>,
    /// The counts and the commit generation, shared by every `Directory` over this tree.
    shared: std::sync::Arc<TreeShared>,
    /// Source of version salts for groups, whose member changes don't touch the document.
    salt: AtomicU64,
    /// Count changes of the batch being built, applied to the counts on commit.
    pending_counts: parking_lot::Mutex<(i64, i64)>,
}

/// What every `Directory` over one tree shares, one per tree in the process: a reload opens a
/// tenant's engine (and its `Directory`) again while the old one still drains, and both must
/// keep one count of users and groups (the stored `c/users` is written from it) and bump one
/// commit generation.
struct TreeShared {
    /// Commits to this tree so far ([`Directory::generation`]).
    generation: AtomicU64,
    /// The keys of its commits, once a reader watches them; bumping `generation` and recording
    /// a commit's keys happen under this lock, so a reader that sees generation `g` finds the
    /// keys of every commit up to `g`.
    touches: parking_lot::Mutex<super::touches::TouchLog>,
    user_count: AtomicU64,
    group_count: AtomicU64,
}

/// The shared state of `tree`, made with the stored counts when no `Directory` holds it.
fn tree_shared(
    store: &Store,
    tree: &sled::Tree,
    counts: impl FnOnce() -> Result<(u64, u64), StoreError>,
) -> Result<std::sync::Arc<TreeShared>, StoreError> {
    use std::sync::{Arc, OnceLock, Weak};
    type Key = (std::path::PathBuf, Vec<u8>);
    static ALL: OnceLock<parking_lot::Mutex<HashMap<Key, Weak<TreeShared>>>> = OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock();
    all.retain(|_, g| g.strong_count() > 0);
    let key = (store.data_dir().to_path_buf(), tree.name().to_vec());
    if let Some(g) = all.get(&key).and_then(Weak::upgrade) {
        return Ok(g);
    }
    let (users, groups) = counts()?;
    let g = Arc::new(TreeShared {
        generation: AtomicU64::new(0),
        touches: Default::default(),
        user_count: AtomicU64::new(users),
        group_count: AtomicU64::new(groups),
    });
    all.insert(key, Arc::downgrade(&g));
    Ok(g)
}

fn fold(s: &str) -> String {
    s.to_lowercase()
}

fn doc_key(kind: ResourceKind, id: &str) -> Vec<u8> {
    match kind {
        ResourceKind::User => format!("u/{id}").into_bytes(),
        ResourceKind::Group => format!("g/{id}").into_bytes(),
    }
}

fn scim_key(kind: ResourceKind, scim_id: &str) -> Vec<u8> {
    match kind {
        ResourceKind::User => format!("x/u/{scim_id}").into_bytes(),
        ResourceKind::Group => format!("x/g/{scim_id}").into_bytes(),
    }
}

fn vendor_key(kind: ResourceKind, vendor_id: &str) -> Vec<u8> {
    match kind {
        ResourceKind::User => format!("v/u/{vendor_id}").into_bytes(),
        ResourceKind::Group => format!("v/g/{vendor_id}").into_bytes(),
    }
}

fn pair_key(prefix: &str, a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + a.len() + b.len() + 1);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn pair_prefix(prefix: &str, a: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + a.len() + 1);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k
}

/// The second half of a `prefix{a}\0{b}` key.
fn second(key: &[u8]) -> Option<String> {
    // The last NUL: the first half may be a client value holding one (an externalId "a\0b");
    // the second half is always a bridge-minted id, which never does.
    let pos = key.iter().rposition(|b| *b == 0)?;
    String::from_utf8(key[pos + 1..].to_vec()).ok()
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The index keys a stored document owns; diffing old and new keys gives the index update.
pub fn index_keys(
    kind: ResourceKind,
    id: &str,
    doc: &Value,
) -> (Option<Vec<u8>>, BTreeSet<Vec<u8>>) {
    let mut multi = BTreeSet::new();
    match kind {
        ResourceKind::User => {
            let unique = str_at(doc, "userName").map(|n| format!("i/un/{}", fold(n)).into_bytes());
            if let Some(x) = str_at(doc, "externalId") {
                multi.insert(pair_key("i/ux/", x, id));
            }
            if let Some(Value::Array(emails)) = doc.get("emails") {
                for e in emails {
                    if let Some(v) = str_at(e, "value") {
                        multi.insert(pair_key("i/ue/", &fold(v), id));
                    }
                }
            }
            (unique, multi)
        }
        ResourceKind::Group => {
            let unique =
                str_at(doc, "displayName").map(|n| format!("i/gn/{}", fold(n)).into_bytes());
            if let Some(x) = str_at(doc, "externalId") {
                multi.insert(pair_key("i/gx/", x, id));
            }
            (unique, multi)
        }
    }
}

impl Directory {
    pub fn open(
        store: &Store,
        tenant: &str,
        purpose: &str,
        schemas: SchemaRegistry,
    ) -> Result<Directory, StoreError> {
        let tree = store.tree(tenant, purpose)?.raw().clone();
        let count = |k: &str| -> Result<u64, StoreError> {
            Ok(tree
                .get(k)?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0))
        };
        let shared = tree_shared(store, &tree, || Ok((count("c/users")?, count("c/groups")?)))?;
        Ok(Directory {
            shared,
            tree,
            store: store.clone(),
            schemas: schemas.interned(),
            pending_counts: parking_lot::Mutex::new((0, 0)),
            salt: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0),
            ),
        })
    }

    pub fn schemas(&self) -> &SchemaRegistry {
        &self.schemas
    }

    /// Readiness: the tree answers a read.
    pub fn ready(&self) -> Result<(), String> {
        self.tree
            .get("c/users")
            .map(|_| ())
            .map_err(|e| format!("store: {e}"))
    }

    pub fn schema(&self, kind: ResourceKind) -> &ResourceSchema {
        self.schemas.get(kind)
    }

    fn counter(&self, kind: ResourceKind) -> (&AtomicU64, &'static str) {
        match kind {
            ResourceKind::User => (&self.shared.user_count, "c/users"),
            ResourceKind::Group => (&self.shared.group_count, "c/groups"),
        }
    }

    pub fn load(&self, kind: ResourceKind, id: &str) -> Result<Option<Value>, StoreError> {
        let key = doc_key(kind, id);
        match self.tree.get(&key)? {
            Some(bytes) => Ok(Some(decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn load_or_404(&self, kind: ResourceKind, id: &str) -> ScimResult<Value> {
        self.load(kind, id)?
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.name())))
    }

    pub fn check_precondition(doc: &Value, pre: &Precondition) -> ScimResult<()> {
        if let Some(want) = &pre.if_match {
            let have = doc["meta"]["version"].as_str().unwrap_or("");
            if !etag_matches(want, have) {
                return Err(ScimError::precondition_failed(
                    "If-Match does not match the resource's current version",
                ));
            }
        }
        Ok(())
    }

    /// Stamps `meta` for a write. `created` survives from the previous version.
    pub fn stamp(&self, kind: ResourceKind, doc: &mut Value, previous: Option<&Value>) {
        let now = now_timestamp();
        let created = previous
            .and_then(|p| p["meta"]["created"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| now.clone());
        if let Some(o) = doc.as_object_mut() {
            o.remove("meta");
            o.remove("groups");
            o.remove("members");
        }
        let salt = match kind {
            ResourceKind::User => 0,
            ResourceKind::Group => self.salt.fetch_add(1, Ordering::Relaxed),
        };
        let version = compute_version(doc, salt);
        doc["meta"] = json!({
            "resourceType": kind.name(),
            "created": created,
            "lastModified": now,
            "version": version,
        });
    }

    /// Checks the unique index key is free (or already ours).
    pub fn check_unique(
        &self,
        kind: ResourceKind,
        key: &Option<Vec<u8>>,
        own_id: Option<&str>,
    ) -> ScimResult<()> {
        if let Some(k) = key {
            if let Some(holder) = self.tree.get(k).map_err(StoreError::from)? {
                if Some(holder.as_ref()) != own_id.map(str::as_bytes) {
                    let what = match kind {
                        ResourceKind::User => "userName",
                        ResourceKind::Group => "displayName",
                    };
                    return Err(ScimError::uniqueness(format!(
                        "a {} with this {what} already exists",
                        kind.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Adds the document write and its index changes to `batch`.
    pub fn write_doc(
        &self,
        batch: &mut Batch,
        kind: ResourceKind,
        id: &str,
        doc: &Value,
        old: Option<&Value>,
    ) {
        let (new_unique, new_multi) = index_keys(kind, id, doc);
        if let Some(old) = old {
            let (old_unique, old_multi) = index_keys(kind, id, old);
            if old_unique != new_unique {
                if let Some(k) = old_unique {
                    batch.remove(k);
                }
            }
            for k in old_multi.difference(&new_multi) {
                batch.remove(k.clone());
            }
        }
        if let Some(k) = new_unique {
            batch.insert(k, id.as_bytes());
        }
        for k in new_multi {
            batch.insert(k, &[][..]);
        }
        batch.insert(doc_key(kind, id), encode(doc));
    }

    /// Adds a count change to `batch`. The in-memory count moves only when [`Directory::commit`]
    /// succeeds, so a failed write leaves it true. Callers serialise writes (one batch at a time).
    pub fn bump_count(&self, batch: &mut Batch, kind: ResourceKind, delta: i64) {
        let (counter, key) = self.counter(kind);
        let mut pending = self.pending_counts.lock();
        let slot = match kind {
            ResourceKind::User => &mut pending.0,
            ResourceKind::Group => &mut pending.1,
        };
        *slot += delta;
        let new = (counter.load(Ordering::SeqCst) as i64 + *slot).max(0) as u64;
        batch.insert(key, new.to_be_bytes());
    }

    /// Resolves a member reference to (type, display) when it names an existing user or group.
    fn member_target(
        &self,
        id: &str,
    ) -> Result<Option<(&'static str, Option<String>)>, StoreError> {
        if let Some(u) = self.load(ResourceKind::User, id)? {
            let display = str_at(&u, "displayName")
                .or_else(|| str_at(&u, "userName"))
                .map(str::to_string);
            return Ok(Some(("User", display)));
        }
        if let Some(g) = self.load(ResourceKind::Group, id)? {
            return Ok(Some((
                "Group",
                str_at(&g, "displayName").map(str::to_string),
            )));
        }
        Ok(None)
    }

    pub fn member_ids(&self, group: &str) -> Result<Vec<String>, StoreError> {
        self.tree
            .scan_prefix(pair_prefix("m/", group))
            .keys()
            .map(|k| {
                k.map(|k| second(&k).unwrap_or_default())
                    .map_err(StoreError::from)
            })
            .collect()
    }

    pub fn members(&self, group: &str) -> Result<Vec<Value>, StoreError> {
        self.tree
            .scan_prefix(pair_prefix("m/", group))
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    fn remove_member(batch: &mut Batch, group: &str, id: &str) {
        batch.remove(pair_key("m/", group, id));
        batch.remove(pair_key("o/", id, group));
    }

    /// Applies membership operations to `batch`; returns the net change (ids added and removed).
    /// Adding or removing named members costs point lookups only, so a 100,000-member group is
    /// patched without reading its member list; only `remove all`, `replace` and filtered
    /// removes read it. Ids that name no user or group are skipped: scim-sanity adds
    /// `fake-member-id` and expects a 200.
    pub fn apply_member_ops(
        &self,
        batch: &mut Batch,
        group: &str,
        ops: &[MemberOp],
    ) -> ScimResult<MembershipChange> {
        let mut view = MemberView {
            dir: self,
            group,
            now: HashMap::new(),
            before: HashMap::new(),
        };
        for op in ops {
            match op {
                MemberOp::Add(values) => {
                    for v in values {
                        view.add(batch, v)?;
                    }
                }
                MemberOp::Remove(ids) => {
                    for id in ids {
                        view.remove(batch, id)?;
                    }
                }
                MemberOp::RemoveAll => {
                    for id in view.present_ids()? {
                        view.remove(batch, &id)?;
                    }
                }
                MemberOp::RemoveWhere(filter) => {
                    let def = self
                        .schema(ResourceKind::Group)
                        .core
                        .attr("members")
                        .cloned()
                        .ok_or_else(|| ScimError::internal("group schema lacks members"))?;
                    let mut doomed = Vec::new();
                    for entry in view.present_entries()? {
                        if filter.matches_element(&entry, &def) {
                            if let Some(id) = str_at(&entry, "value") {
                                doomed.push(id.to_string());
                            }
                        }
                    }
                    for id in doomed {
                        view.remove(batch, &id)?;
                    }
                }
                MemberOp::Replace(values) => {
                    let keep: HashSet<&str> =
                        values.iter().filter_map(|v| str_at(v, "value")).collect();
                    for id in view.present_ids()? {
                        if !keep.contains(id.as_str()) {
                            view.remove(batch, &id)?;
                        }
                    }
                    for v in values {
                        view.add(batch, v)?;
                    }
                }
            }
        }
        Ok(view.change())
    }

    /// Renders a stored document: `meta.location`, and the derived `groups` of a user or the
    /// `members` of a group.
    pub fn render(
        &self,
        kind: ResourceKind,
        id: &str,
        mut doc: Value,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        doc["meta"]["location"] = Value::String(ctx.location(kind, id));
        match kind {
            ResourceKind::User => {
                let mut groups = Vec::new();
                for k in self.tree.scan_prefix(pair_prefix("o/", id)).keys() {
                    let k = k.map_err(StoreError::from)?;
                    let Some(gid) = second(&k) else { continue };
                    let mut entry = json!({
                        "value": gid,
                        "$ref": ctx.location(ResourceKind::Group, &gid),
                        "type": "direct",
                    });
                    if let Some(g) = self.load(ResourceKind::Group, &gid)? {
                        if let Some(d) = str_at(&g, "displayName") {
                            entry["display"] = Value::String(d.to_string());
                        }
                    } else {
                        continue; // a nested-group membership of a group, not of a user
                    }
                    groups.push(entry);
                }
                if !groups.is_empty() {
                    // User.groups is derived, not stored: fold it into the version so an ETag
                    // moves when the user's memberships do (RFC 7644 §3.14).
                    let stored = doc["meta"]["version"].as_str().unwrap_or("").to_string();
                    let basis: Vec<(&Value, &Value)> = groups
                        .iter()
                        .map(|g| (&g["value"], &g["display"]))
                        .collect();
                    doc["meta"]["version"] =
                        Value::String(compute_version(&json!({"v": stored, "groups": basis}), 0));
                    doc["groups"] = Value::Array(groups);
                }
            }
            ResourceKind::Group if with_members => {
                let mut members = self.members(id)?;
                for m in &mut members {
                    let mid = str_at(m, "value").unwrap_or_default().to_string();
                    let target = if str_at(m, "type") == Some("Group") {
                        ResourceKind::Group
                    } else {
                        ResourceKind::User
                    };
                    m["$ref"] = Value::String(ctx.location(target, &mid));
                }
                if !members.is_empty() {
                    doc["members"] = Value::Array(members);
                }
            }
            ResourceKind::Group => {}
        }
        reorder_meta_last(&mut doc);
        Ok(doc)
    }

    /// A new document for a create: a fresh time-ordered id (so listings keep creation order
    /// and a new resource appears on the last page), the canonical attributes, no `meta` yet.
    pub fn new_doc(&self, kind: ResourceKind, resource: &Value) -> (String, Value) {
        let id = uuid::Uuid::now_v7().to_string();
        let mut doc = Map::new();
        doc.insert(
            "schemas".into(),
            resource
                .get("schemas")
                .cloned()
                .unwrap_or(json!([self.schema(kind).core.id])),
        );
        doc.insert("id".into(), Value::String(id.clone()));
        if let Some(o) = resource.as_object() {
            for (k, v) in o {
                if k != "schemas" && k != "id" && k != "members" && k != "groups" && k != "meta" {
                    doc.insert(k.clone(), v.clone());
                }
            }
        }
        (id, Value::Object(doc))
    }

    /// Adds to `batch` the removal of a resource: its document, index keys, ID-map entries and
    /// memberships (both directions); the groups it left are re-stamped.
    pub fn delete_entries(
        &self,
        batch: &mut Batch,
        kind: ResourceKind,
        id: &str,
        old: &Value,
    ) -> ScimResult<()> {
        let (unique, multi) = index_keys(kind, id, old);
        if let Some(k) = unique {
            batch.remove(k);
        }
        for k in multi {
            batch.remove(k);
        }
        batch.remove(doc_key(kind, id));
        if let Some(vendor) = self.vendor_id(kind, id)? {
            batch.remove(vendor_key(kind, &vendor));
            batch.remove(scim_key(kind, id));
        }
        let mut touched = Vec::new();
        for gid in self.groups_of(id)? {
            Self::remove_member(batch, &gid, id);
            touched.push(gid);
        }
        if kind == ResourceKind::Group {
            for mid in self.member_ids(id)? {
                Self::remove_member(batch, id, &mid);
            }
        }
        for gid in touched {
            if let Some(mut g) = self.load(ResourceKind::Group, &gid)? {
                let prev = g.clone();
                self.stamp(ResourceKind::Group, &mut g, Some(&prev));
                batch.insert(doc_key(ResourceKind::Group, &gid), encode(&g));
            }
        }
        self.bump_count(batch, kind, -1);
        Ok(())
    }

    /// Ids of the groups `member` belongs to (the reverse membership index).
    pub fn groups_of(&self, member: &str) -> Result<Vec<String>, StoreError> {
        self.tree
            .scan_prefix(pair_prefix("o/", member))
            .keys()
            .map(|k| {
                k.map(|k| second(&k).unwrap_or_default())
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// Applies a batch atomically (document, indexes, memberships and ID map together).
    pub fn commit(&self, mut batch: Batch) -> Result<(), StoreError> {
        let (users, groups) = std::mem::take(&mut *self.pending_counts.lock());
        let touched = std::mem::take(&mut batch.touched);
        self.tree.apply_batch(batch.ops)?;
        self.committed(touched, users, groups);
        Ok(())
    }

    /// After a batch is applied: the generation, the touch log and the counts.
    fn committed(&self, touched: super::touches::Touched, users: i64, groups: i64) {
        {
            let mut log = self.shared.touches.lock();
            let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
            log.record(generation, touched);
        }
        for (counter, delta) in [
            (&self.shared.user_count, users),
            (&self.shared.group_count, groups),
        ] {
            let now = counter.load(Ordering::SeqCst) as i64;
            counter.store((now + delta).max(0) as u64, Ordering::SeqCst);
        }
    }

    /// Applies `batch` and, in the same atomic step, appends `entries` to the audit log (a
    /// vendor change and its record are written together or not at all; the entries get their
    /// place in the tenant's hash chain inside that step).
    pub fn commit_audited(
        &self,
        mut batch: Batch,
        audit: &crate::store::audit::AuditLog,
        entries: &[crate::store::audit::AuditEntry],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return self.commit(batch);
        }
        let (users, groups) = std::mem::take(&mut *self.pending_counts.lock());
        let touched = std::mem::take(&mut batch.touched);
        audit.apply_with(&self.tree, batch, entries)?;
        self.committed(touched, users, groups);
        Ok(())
    }

    /// A record of the provisioning engine, kept in this tree under `E/` so that a desired
    /// state and its outbox mark are one batch.
    pub fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(format!("E/{key}"))?.map(|v| v.to_vec()))
    }

    pub fn put_record(batch: &mut Batch, key: &str, value: &[u8]) {
        batch.insert(format!("E/{key}"), value);
    }

    pub fn remove_record(batch: &mut Batch, key: &str) {
        batch.remove(format!("E/{key}"));
    }

    /// Engine records under `prefix`: (key without `E/`, value), in key order.
    pub fn records(
        &self,
        prefix: &str,
    ) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> {
        self.tree.scan_prefix(format!("E/{prefix}")).map(|kv| {
            let (k, v) = kv?;
            Ok((String::from_utf8_lossy(&k[2..]).into_owned(), v.to_vec()))
        })
    }

    /// How many commits this tree has had in this process (by any `Directory` over it), bumped
    /// after each is applied: a reader that saw one value before it read and sees it again
    /// after read a state no commit changed (the plan's cache of its counts).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// From now on, keeps the keys this tree's commits write, for [`Directory::touched_between`].
    /// Call it before reading the [`Directory::generation`] a derived state is built at.
    pub fn watch_touches(&self) {
        self.shared.touches.lock().watch(self.generation());
    }

    /// The ids named by the keys of the commits after generation `after` up to `upto` (a
    /// superset of the objects they changed: [`super::touches`]); `None` when they are not all
    /// known (not watched then, or too many since), and the reader rebuilds from the tree.
    pub fn touched_between(&self, after: u64, upto: u64) -> Option<HashSet<String>> {
        // The keys are copied out under the lock every commit takes, and split outside it.
        let keys = self.shared.touches.lock().keys_between(after, upto)?;
        Some(super::touches::ids_in(&keys))
    }

    /// Makes every committed write durable; concurrent callers share a flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    /// The vendor id mapped to a SCIM id (ID map).
    pub fn vendor_id(
        &self,
        kind: ResourceKind,
        scim_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree
            .get(scim_key(kind, scim_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The SCIM id mapped to a vendor id (ID map).
    pub fn scim_id(
        &self,
        kind: ResourceKind,
        vendor_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree
            .get(vendor_key(kind, vendor_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Adds the ID-map entries SCIM id ↔ vendor id to `batch`.
    pub fn link(&self, batch: &mut Batch, kind: ResourceKind, scim_id: &str, vendor_id: &str) {
        batch.insert(scim_key(kind, scim_id), vendor_id.as_bytes());
        batch.insert(vendor_key(kind, vendor_id), scim_id.as_bytes());
    }

    /// Adds the removal of the ID-map entries SCIM id ↔ vendor id to `batch` (a vendor object
    /// deleted while its SCIM resource stays, e.g. Sisense `deprovision = "delete"`).
    pub fn unlink(&self, batch: &mut Batch, kind: ResourceKind, scim_id: &str, vendor_id: &str) {
        batch.remove(scim_key(kind, scim_id));
        batch.remove(vendor_key(kind, vendor_id));
    }

    /// Removes only the SCIM side of a link (the vendor object now belongs to another SCIM id).
    pub fn unlink_scim_side(&self, batch: &mut Batch, kind: ResourceKind, scim_id: &str) {
        batch.remove(scim_key(kind, scim_id));
    }

    /// Unfiltered, unsorted listing of every stored id of a kind, in creation order.
    pub fn ids(&self, kind: ResourceKind) -> impl Iterator<Item = Result<String, StoreError>> + '_ {
        let prefix: &'static [u8] = match kind {
            ResourceKind::User => b"u/",
            ResourceKind::Group => b"g/",
        };
        self.tree.scan_prefix(prefix).keys().map(move |k| {
            let k = k?;
            Ok(String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        })
    }

    /// Filtered, sorted, paged listing. Simple predicates are answered from the indexes (never
    /// a scan); others are evaluated over the stored resources.
    pub fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage> {
        let schema = self.schema(kind);
        let prefix: &[u8] = match kind {
            ResourceKind::User => b"u/",
            ResourceKind::Group => b"g/",
        };
        if let Some(f) = &query.filter {
            f.validate(schema)?;
        }
        // Fast path: no filter, no sort — the count is kept, the page is a bounded scan.
        if query.filter.is_none() && query.sort_by.is_none() {
            let (counter, _) = self.counter(kind);
            let total = counter.load(Ordering::SeqCst) as usize;
            let range = query.page_range(total);
            let mut resources = Vec::with_capacity(range.len());
            for kv in self
                .tree
                .scan_prefix(prefix)
                .skip(range.start)
                .take(range.len())
            {
                let (k, v) = kv.map_err(StoreError::from)?;
                let doc = decode(&k, &v)?;
                let id = id_of(&doc);
                resources.push(self.render(kind, &id, doc, with_members, ctx)?);
            }
            return Ok(ListPage { total, resources });
        }
        let mut matched: Vec<Value> = Vec::new();
        // Resolve the filter against the schema once, not per resource.
        let bound = query.filter.as_ref().map(|f| (f, f.bind(schema)));
        let consider = |doc: Value, matched: &mut Vec<Value>| -> ScimResult<()> {
            let id = id_of(&doc);
            let full = match &bound {
                Some((f, b)) => {
                    let full = self.for_filter(kind, &id, doc, f, ctx)?;
                    if !b.matches(&full) {
                        return Ok(());
                    }
                    full
                }
                None => doc,
            };
            matched.push(full);
            Ok(())
        };
        let candidates = match &query.filter {
            Some(f) => self.index_candidates(kind, f)?,
            None => None,
        };
        match candidates {
            Some(ids) => {
                let mut seen = HashSet::new();
                for id in ids {
                    if !seen.insert(id.clone()) {
                        continue;
                    }
                    if let Some(doc) = self.load(kind, &id)? {
                        consider(doc, &mut matched)?;
                    }
                }
            }
            None => {
                for kv in self.tree.scan_prefix(prefix) {
                    let (k, v) = kv.map_err(StoreError::from)?;
                    consider(decode(&k, &v)?, &mut matched)?;
                }
            }
        }
        if let Some(by) = &query.sort_by {
            sort_resources(&mut matched, by, query.sort_order, schema)?;
        }
        let total = matched.len();
        let range = query.page_range(total);
        let mut resources = Vec::with_capacity(range.len());
        // A filter on derived data (User.groups, Group.members) was evaluated on rendered
        // resources; render the page from the stored documents, so derived data and the version
        // that folds it in are added exactly once.
        let rendered = query
            .filter
            .as_ref()
            .is_some_and(|f| mentions(f, derived_attribute(kind)));
        for doc in matched.drain(range) {
            let id = id_of(&doc);
            let doc = if rendered {
                match self.load(kind, &id)? {
                    Some(stored) => stored,
                    None => continue,
                }
            } else {
                doc
            };
            resources.push(self.render(kind, &id, doc, with_members, ctx)?);
        }
        Ok(ListPage { total, resources })
    }

    /// Candidate ids for a filter from the indexes, or `None` when a scan is needed.
    fn index_candidates(
        &self,
        kind: ResourceKind,
        filter: &Filter,
    ) -> Result<Option<Vec<String>>, StoreError> {
        for term in filter.conjuncts() {
            if let Some(ids) = self.index_lookup(kind, term)? {
                return Ok(Some(ids));
            }
        }
        Ok(None)
    }

    fn index_lookup(
        &self,
        kind: ResourceKind,
        term: &Filter,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let schema = self.schema(kind);
        let eq_string =
            |path: &AttrPath, value: &CompValue| -> Option<(String, Option<String>, String)> {
                let CompValue::String(s) = value else {
                    return None;
                };
                let r = schema.resolve(path.urn.as_deref(), &path.name)?;
                if r.location != crate::scim::schema::AttrLocation::Core {
                    return None;
                }
                Some((r.def.name.clone(), path.sub.clone(), s.clone()))
            };
        let single = |key: Vec<u8>| -> Result<Option<Vec<String>>, StoreError> {
            Ok(Some(
                self.tree
                    .get(key)?
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .into_iter()
                    .collect(),
            ))
        };
        let multi = |prefix: &str, value: &str| -> Result<Option<Vec<String>>, StoreError> {
            let ids = self
                .tree
                .scan_prefix(pair_prefix(prefix, value))
                .keys()
                .map(|k| k.map(|k| second(&k).unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(ids))
        };
        match term {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } => {
                let Some((name, sub, v)) = eq_string(path, value) else {
                    return Ok(None);
                };
                match (kind, name.as_str(), sub.as_deref()) {
                    (_, "id", None) => Ok(Some(vec![v])),
                    (ResourceKind::User, "userName", None) => {
                        single(format!("i/un/{}", fold(&v)).into_bytes())
                    }
                    (ResourceKind::User, "externalId", None) => multi("i/ux/", &v),
                    (ResourceKind::User, "emails", Some(s)) if s.eq_ignore_ascii_case("value") => {
                        multi("i/ue/", &fold(&v))
                    }
                    (ResourceKind::User, "emails", None) => multi("i/ue/", &fold(&v)),
                    (ResourceKind::Group, "displayName", None) => {
                        single(format!("i/gn/{}", fold(&v)).into_bytes())
                    }
                    (ResourceKind::Group, "externalId", None) => multi("i/gx/", &v),
                    _ => Ok(None),
                }
            }
            // Entra's `emails[type eq "work"].value eq "x"` arrives as a value path.
            Filter::ValuePath { attr, filter }
                if kind == ResourceKind::User && attr.name.eq_ignore_ascii_case("emails") =>
            {
                for t in filter.conjuncts() {
                    if let Filter::Compare {
                        path,
                        op: CompareOp::Eq,
                        value: CompValue::String(s),
                    } = t
                    {
                        if path.name.eq_ignore_ascii_case("value") && path.sub.is_none() {
                            return multi("i/ue/", &fold(s));
                        }
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The full resource a filter evaluates against: derived attributes included when the
    /// filter mentions them.
    fn for_filter(
        &self,
        kind: ResourceKind,
        id: &str,
        doc: Value,
        filter: &Filter,
        ctx: &RequestContext,
    ) -> ScimResult<Value> {
        let derived = derived_attribute(kind);
        if mentions(filter, derived) {
            self.render(kind, id, doc, true, ctx)
        } else {
            Ok(doc)
        }
    }
}

/// One group's members as a request in progress sees them: the store plus the request's own
/// changes (`now`: id → member entry, or `None` once removed).
struct MemberView<'a> {
    dir: &'a Directory,
    group: &'a str,
    now: HashMap<String, Option<Value>>,
    /// Whether each touched id was a member before the request.
    before: HashMap<String, bool>,
}

impl MemberView<'_> {
    fn stored(&mut self, id: &str) -> Result<bool, StoreError> {
        if let Some(b) = self.before.get(id) {
            return Ok(*b);
        }
        let b = self.dir.tree.contains_key(pair_key("m/", self.group, id))?;
        self.before.insert(id.to_string(), b);
        Ok(b)
    }

    fn contains(&mut self, id: &str) -> Result<bool, StoreError> {
        match self.now.get(id) {
            Some(entry) => Ok(entry.is_some()),
            None => self.stored(id),
        }
    }

    fn add(&mut self, batch: &mut Batch, v: &Value) -> ScimResult<()> {
        let Some(id) = str_at(v, "value") else {
            return Ok(());
        };
        if id == self.group || self.contains(id)? {
            return Ok(());
        }
        let Some((ty, display)) = self.dir.member_target(id)? else {
            tracing::debug!(member = id, "skipping unknown member id");
            return Ok(());
        };
        let mut entry = json!({"value": id, "type": ty});
        if let Some(d) = str_at(v, "display").map(str::to_string).or(display) {
            entry["display"] = Value::String(d);
        }
        self.stored(id)?;
        batch.insert(pair_key("m/", self.group, id), encode(&entry));
        batch.insert(pair_key("o/", id, self.group), &[][..]);
        self.now.insert(id.to_string(), Some(entry));
        Ok(())
    }

    fn remove(&mut self, batch: &mut Batch, id: &str) -> ScimResult<()> {
        if self.contains(id)? {
            Directory::remove_member(batch, self.group, id);
            self.now.insert(id.to_string(), None);
        }
        Ok(())
    }

    /// Every current member entry (stored ones not removed by this request, plus those it added).
    fn present_entries(&mut self) -> ScimResult<Vec<Value>> {
        let mut out = Vec::new();
        for entry in self.dir.members(self.group)? {
            let Some(id) = str_at(&entry, "value").map(str::to_string) else {
                continue;
            };
            self.before.entry(id.clone()).or_insert(true);
            if !self.now.contains_key(&id) {
                out.push(entry);
            }
        }
        out.extend(self.now.values().flatten().cloned());
        Ok(out)
    }

    fn present_ids(&mut self) -> ScimResult<Vec<String>> {
        Ok(self
            .present_entries()?
            .iter()
            .filter_map(|e| str_at(e, "value").map(str::to_string))
            .collect())
    }

    fn change(&self) -> MembershipChange {
        let mut change = MembershipChange::default();
        for (id, entry) in &self.now {
            let was = self.before.get(id).copied().unwrap_or(false);
            match (was, entry.is_some()) {
                (false, true) => change.added.push(id.clone()),
                (true, false) => change.removed.push(id.clone()),
                _ => {}
            }
        }
        change.added.sort();
        change.removed.sort();
        change
    }
}

/// The attribute of `kind` that is derived at render time rather than stored in its document.
fn derived_attribute(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "groups",
        ResourceKind::Group => "members",
    }
}

/// Whether a filter refers to the top-level attribute `name`.
fn mentions(f: &Filter, name: &str) -> bool {
    match f {
        Filter::Present(p) | Filter::Compare { path: p, .. } => p.name.eq_ignore_ascii_case(name),
        Filter::ValuePath { attr, .. } => attr.name.eq_ignore_ascii_case(name),
        Filter::And(a, b) | Filter::Or(a, b) => mentions(a, name) || mentions(b, name),
        Filter::Not(a) => mentions(a, name),
    }
}

/// `meta` reads best at the end of a resource.
fn reorder_meta_last(doc: &mut Value) {
    if let Some(o) = doc.as_object_mut() {
        if let Some(m) = o.remove("meta") {
            o.insert("meta".into(), m);
        }
    }
}

pub fn id_of(doc: &Value) -> String {
    str_at(doc, "id").unwrap_or_default().to_string()
}

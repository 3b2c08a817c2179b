//! Sync: read the whole Sisense directory (users and groups, pages fetched in parallel) and
//! reconcile the index with it, so that IdP lookups see every Sisense user — including those
//! created in Sisense directly, and those a crash left unmapped (adopted by userName: never a
//! second Sisense user).
//!
//! What sync changes, and what it leaves alone:
//! - an unmapped Sisense group or user is adopted: a SCIM id is minted and linked; an adopted
//!   user's Sisense groups become its memberships;
//! - a mapped user's last known vendor state (role, groups, activation, profile) is refreshed;
//!   when it changed in Sisense since the bridge last saw it, the change is pulled into the
//!   index (userName, email, names, activation, membership of mirrored groups), and, for users
//!   the IdP has written (`idp/{id}` in the state tree), a role that no longer matches the rules
//!   is put back — the rules are authoritative, and each correction is audited with actor
//!   `sync`; users adopted from Sisense keep their role until the IdP writes them; after an
//!   edit of the role rules (the rules last applied are kept as `rules`), every mapped user is
//!   re-evaluated once;
//! - a `mode = "scim"` create killed between its SCIM `POST` and its role left a note
//!   (`intent/{login}`): the user is adopted and given the role; the note goes once done;
//! - a mapped group renamed in Sisense is renamed in the index;
//! - a mapped object gone from Sisense (checked by id for users, since skip/limit paging over a
//!   changing list can miss one) leaves the index;
//! - nothing written since the sync began is touched (its vendor state in the pages may be
//!   older than the write), and nothing whose create is in flight is adopted (the create will
//!   link it).
//!
//! Sisense lists are bare arrays with `skip`/`limit` and no total (B.2): pages are fetched in
//! waves of parallel requests until one comes back short.

use super::wire::{self, scim_user_from_vendor};
use super::{fold, now_ms, SisenseConnector, VendorState, FAN_OUT};
use crate::connector::http::{VendorClient, VendorError, VendorRequest};
use crate::scim::patch::MemberOp;
use crate::scim::schema::ResourceKind;
use crate::scim::ScimResult;
use crate::store::directory::{index_keys, str_at};
use crate::store::StoreError;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Map;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

const PAGE: usize = 10_000;
const WAVE: usize = 6;
/// Users reconciled per hold of the commit lock.
const CHUNK: usize = 512;

#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub users_seen: usize,
    pub groups_seen: usize,
    pub users_adopted: usize,
    pub groups_adopted: usize,
    pub users_removed: usize,
    pub groups_removed: usize,
    pub states_refreshed: usize,
    /// Mapped users whose profile or membership changed in Sisense, pulled into the index.
    pub users_pulled: usize,
    /// Roles set back to what the rules say after a change in Sisense.
    pub roles_corrected: usize,
    /// Role corrections that failed (retried by the next sync).
    pub roles_failed: usize,
    /// Reading the vendor's pages, then the whole sync.
    pub fetch_ms: u128,
    pub elapsed_ms: u128,
}

async fn page<T: DeserializeOwned>(
    client: &VendorClient,
    path: &str,
    skip: usize,
    limit: usize,
) -> Result<Vec<T>, VendorError> {
    let resp = client
        .send(
            VendorRequest::get(path)
                .query("skip", skip.to_string())
                .query("limit", limit.to_string()),
        )
        .await?;
    if !resp.is_success() {
        return Err(resp.rejected());
    }
    resp.json()
}

/// Every item of a Sisense list endpoint. The first page tells whether the vendor caps the page
/// size below ours (a short first page followed by a non-empty one); then waves of parallel
/// pages until a short one.
pub async fn fetch_all<T: DeserializeOwned>(
    client: &VendorClient,
    path: &str,
) -> Result<Vec<T>, VendorError> {
    let mut limit = PAGE;
    let mut out: Vec<T> = page(client, path, 0, limit).await?;
    if out.is_empty() {
        return Ok(out);
    }
    if out.len() < limit {
        let next: Vec<T> = page(client, path, out.len(), limit).await?;
        if next.is_empty() {
            return Ok(out);
        }
        limit = out.len();
        let short = next.len() < limit;
        out.extend(next);
        if short {
            return Ok(out);
        }
    }
    let mut skip = out.len();
    loop {
        let pages = futures_util::future::try_join_all(
            (0..WAVE).map(|i| page::<T>(client, path, skip + i * limit, limit)),
        )
        .await?;
        for p in pages {
            let short = p.len() < limit;
            out.extend(p);
            if short {
                return Ok(out);
            }
        }
        skip += WAVE * limit;
    }
}

pub(super) async fn run(c: &SisenseConnector) -> ScimResult<SyncReport> {
    let started = Instant::now();
    let started_ms = now_ms();
    // Notes of `mode = "scim"` creates whose role may not be set (read before the pages, so a
    // note written later belongs to a create this sync may not see).
    let mut notes: HashMap<String, Value> = HashMap::new();
    for kv in c.state.scan_prefix("intent/") {
        let (k, v) = kv.map_err(StoreError::from)?;
        let login = String::from_utf8_lossy(&k["intent/".len()..]).into_owned();
        notes.insert(login, serde_json::from_slice(&v).unwrap_or(Value::Null));
    }
    let (groups, users) = tokio::try_join!(
        fetch_all::<wire::Group>(&c.client, c.paths.groups()),
        fetch_all::<wire::User>(&c.client, c.paths.users()),
    )?;
    let mut report = SyncReport {
        fetch_ms: started.elapsed().as_millis(),
        users_seen: users.len(),
        groups_seen: groups.len(),
        ..SyncReport::default()
    };
    let recent = |id: &str| c.recent.lock().get(id).is_some_and(|t| *t >= started);
    let dir = &c.dir;

    // Groups first: adopted users' memberships refer to them.
    let vendor_groups: HashSet<&str> = groups.iter().map(|g| g.id.as_str()).collect();
    {
        let _io = c.io_gate.read().await;
        let _g = c.commit_lock.lock();
        let mut batch = sled::Batch::default();
        let mut names_taken = HashSet::new();
        for g in &groups {
            match dir.scim_id(ResourceKind::Group, &g.id)? {
                Some(sid) => {
                    if recent(&sid) {
                        continue;
                    }
                    let Some(old) = dir.load(ResourceKind::Group, &sid)? else {
                        continue;
                    };
                    if str_at(&old, "displayName") == Some(g.name.as_str()) || g.name.is_empty() {
                        continue;
                    }
                    let mut doc = old.clone();
                    doc["displayName"] = Value::String(g.name.clone());
                    let (unique, _) = index_keys(ResourceKind::Group, &sid, &doc);
                    if dir
                        .check_unique(ResourceKind::Group, &unique, Some(&sid))
                        .is_err()
                        || !names_taken.insert(fold(&g.name))
                    {
                        continue;
                    }
                    dir.stamp(ResourceKind::Group, &mut doc, Some(&old));
                    dir.write_doc(&mut batch, ResourceKind::Group, &sid, &doc, Some(&old));
                }
                None => {
                    let key = fold(&g.name);
                    if g.name.is_empty() || c.pending_groups.lock().contains(&key) {
                        continue;
                    }
                    let (sid, mut doc) =
                        dir.new_doc(ResourceKind::Group, &json!({ "displayName": g.name }));
                    let (unique, _) = index_keys(ResourceKind::Group, &sid, &doc);
                    if dir
                        .check_unique(ResourceKind::Group, &unique, None)
                        .is_err()
                        || !names_taken.insert(key)
                    {
                        tracing::warn!(tenant = %c.tenant, group = %g.name, "Sisense group not adopted: the name is taken");
                        continue;
                    }
                    dir.stamp(ResourceKind::Group, &mut doc, None);
                    dir.write_doc(&mut batch, ResourceKind::Group, &sid, &doc, None);
                    dir.bump_count(&mut batch, ResourceKind::Group, 1);
                    dir.link(&mut batch, ResourceKind::Group, &sid, &g.id);
                    report.groups_adopted += 1;
                }
            }
        }
        dir.commit(batch)?;
    }
    {
        let _io = c.io_gate.read().await;
        let _g = c.commit_lock.lock();
        let mut batch = sled::Batch::default();
        for sid in dir
            .ids(ResourceKind::Group)
            .collect::<Result<Vec<_>, StoreError>>()?
        {
            let Some(vid) = dir.vendor_id(ResourceKind::Group, &sid)? else {
                continue;
            };
            if vendor_groups.contains(vid.as_str()) || recent(&sid) {
                continue;
            }
            if let Some(old) = dir.load(ResourceKind::Group, &sid)? {
                dir.delete_entries(&mut batch, ResourceKind::Group, &sid, &old)?;
                report.groups_removed += 1;
            }
        }
        dir.commit(batch)?;
    }

    // Users. After an edit of the role rules every mapped user is re-evaluated once.
    let rules_now = format!("{:?}", c.rules);
    let rules_changed = c
        .state
        .get("rules")
        .map_err(StoreError::from)?
        .is_none_or(|r| r.as_ref() != rules_now.as_bytes());
    let mut changed: Vec<Changed> = Vec::new();
    let mut intents: Vec<(String, &wire::User, Value)> = Vec::new();
    let mut names_taken = HashSet::new();
    let mut seen_logins: HashSet<String> = HashSet::new();
    // In chunks, each under the commit lock: the IdP's writes interleave instead of waiting
    // for the whole directory (every check below is made again under the lock, per user). An
    // adopted user's memberships are committed with its chunk.
    for chunk in users.chunks(CHUNK) {
        {
            let _io = c.io_gate.read().await;
            let _g = c.commit_lock.lock();
            let mut batch = sled::Batch::default();
            let mut state_batch = sled::Batch::default();
            let mut memberships: HashMap<String, Vec<Value>> = HashMap::new();
            for u in chunk {
                let key = u.login().map(fold);
                let note = key.as_ref().and_then(|k| notes.get(k));
                if let (Some(k), Some(_)) = (&key, note) {
                    seen_logins.insert(k.clone());
                }
                match dir.scim_id(ResourceKind::User, &u.id)? {
                    Some(sid) => {
                        if recent(&sid) {
                            continue;
                        }
                        if let Some(n) = note {
                            intents.push((sid.clone(), u, n.clone()));
                        }
                        let st = VendorState::of(u);
                        let old = c.load_state(&sid)?;
                        if old.as_ref() != Some(&st) {
                            SisenseConnector::put_state(&mut state_batch, &sid, &st);
                            report.states_refreshed += 1;
                            let why = if old.is_none_or(|o| o.role_id != st.role_id) {
                                Why::RoleChangedInSisense
                            } else {
                                Why::ChangedInSisense
                            };
                            changed.push(Changed { sid, user: u, why });
                        } else if rules_changed {
                            changed.push(Changed {
                                sid,
                                user: u,
                                why: Why::RulesChanged,
                            });
                        }
                    }
                    None => {
                        let Some(key) = key else { continue };
                        if c.pending_users.lock().contains(&key)
                            || c.state
                                .contains_key(format!("tomb/{}", u.id))
                                .map_err(StoreError::from)?
                        {
                            continue;
                        }
                        let Some(resource) = scim_user_from_vendor(u) else {
                            continue;
                        };
                        let (sid, mut doc) = dir.new_doc(ResourceKind::User, &resource);
                        let (unique, _) = index_keys(ResourceKind::User, &sid, &doc);
                        if dir.check_unique(ResourceKind::User, &unique, None).is_err()
                            || !names_taken.insert(key.clone())
                        {
                            tracing::warn!(tenant = %c.tenant, vendor_id = %u.id, "Sisense user not adopted: its userName is taken by another SCIM user");
                            continue;
                        }
                        dir.stamp(ResourceKind::User, &mut doc, None);
                        dir.write_doc(&mut batch, ResourceKind::User, &sid, &doc, None);
                        dir.bump_count(&mut batch, ResourceKind::User, 1);
                        dir.link(&mut batch, ResourceKind::User, &sid, &u.id);
                        SisenseConnector::put_state(&mut state_batch, &sid, &VendorState::of(u));
                        // A bridge create cut short between its vendor calls is completed
                        // below; any other adopted user stays Sisense's own (no `idp/` mark).
                        if let Some(n) = note {
                            intents.push((sid.clone(), u, n.clone()));
                        }
                        for vg in &u.groups {
                            if let Some(gid) = dir.scim_id(ResourceKind::Group, vg)? {
                                memberships
                                    .entry(gid)
                                    .or_default()
                                    .push(json!({ "value": sid }));
                            }
                        }
                        report.users_adopted += 1;
                    }
                }
            }
            dir.commit(batch)?;
            let mut batch = sled::Batch::default();
            for (gid, members) in memberships {
                dir.apply_member_ops(&mut batch, &gid, &[MemberOp::Add(members)])?;
            }
            dir.commit(batch)?;
            c.state.apply_batch(state_batch).map_err(StoreError::from)?;
        }
        tokio::task::yield_now().await;
    }

    pull_changes(c, &changed, &recent, &mut report).await?;
    let failed_before = report.roles_failed;
    correct_roles(c, &changed, &recent, &mut report).await?;
    let rules_applied = report.roles_failed == failed_before && c.roles.read().is_some();
    complete_intents(c, &intents, &recent, &mut report).await?;
    drop_finished_notes(c, &notes, &seen_logins, started_ms)?;
    // Recorded once every user got its role under these rules (else the next sync retries).
    if rules_changed && rules_applied {
        c.state
            .insert("rules", rules_now.as_bytes())
            .map_err(StoreError::from)?;
    }

    // Mapped users missing from the pages: confirm by id before letting them go.
    let vendor_users: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let mut missing = Vec::new();
    for sid in dir
        .ids(ResourceKind::User)
        .collect::<Result<Vec<_>, StoreError>>()?
    {
        if let Some(vid) = dir.vendor_id(ResourceKind::User, &sid)? {
            if !vendor_users.contains(vid.as_str()) && !recent(&sid) {
                missing.push((sid, vid));
            }
        }
    }
    for (sid, vid) in missing {
        let resp = c
            .client
            .send(VendorRequest::get(c.paths.user(&vid)))
            .await?;
        if resp.status != 404 {
            continue;
        }
        let _lock = c.user_locks.lock(&sid).await;
        let removed = {
            let _io = c.io_gate.read().await;
            let _g = c.commit_lock.lock();
            remove_user(c, &sid, &vid, recent(&sid))?
        };
        if removed {
            report.users_removed += 1;
        }
    }
    c.recent.lock().retain(|_, t| *t >= started);
    c.durable().await?;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

/// The SCIM user `doc` with what Sisense shows for `u` (only what Sisense answered: an absent
/// field is not a removal); `None` when nothing differs.
fn pulled_profile(doc: &Value, u: &wire::User) -> Option<Value> {
    let mut out = doc.clone();
    let mut differs = false;
    if let Some(login) = u.login() {
        if str_at(doc, "userName") != Some(login) {
            out["userName"] = Value::String(login.to_string());
            differs = true;
        }
    }
    let old = wire::UserFields::from_scim(doc);
    if let Some(email) = u.email.as_deref().filter(|e| !e.is_empty()) {
        if old.as_ref().map(|f| f.email.as_str()) != Some(email) {
            let mut emails = doc
                .get("emails")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let at = emails
                .iter()
                .position(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
                .or(if emails.is_empty() { None } else { Some(0) });
            match at {
                Some(i) => emails[i]["value"] = Value::String(email.to_string()),
                None => emails.push(json!({ "value": email, "type": "work", "primary": true })),
            }
            out["emails"] = Value::Array(emails);
            differs = true;
        }
    }
    for (vendor, key) in [(&u.first_name, "givenName"), (&u.last_name, "familyName")] {
        let Some(v) = vendor else { continue };
        let current = doc
            .get("name")
            .and_then(|n| n.get(key))
            .and_then(Value::as_str);
        let wanted = Some(v.as_str()).filter(|s| !s.is_empty());
        if current == wanted {
            continue;
        }
        if !out.get("name").is_some_and(Value::is_object) {
            out["name"] = Value::Object(Map::new());
        }
        match wanted {
            Some(w) => out["name"][key] = Value::String(w.to_string()),
            None => {
                if let Some(n) = out["name"].as_object_mut() {
                    n.remove(key);
                }
            }
        }
        differs = true;
    }
    if let Some(active) = u.active {
        if doc.get("active").and_then(Value::as_bool).unwrap_or(true) != active {
            out["active"] = Value::Bool(active);
            differs = true;
        }
    }
    differs.then_some(out)
}

/// A mapped user whose vendor state differs from the last one the bridge saw, or whose role
/// the edited rules may move.
struct Changed<'a> {
    sid: String,
    user: &'a wire::User,
    why: Why,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Its role differs from the last known one (changed in Sisense, not by the rules).
    RoleChangedInSisense,
    /// Its profile or membership changed in Sisense.
    ChangedInSisense,
    /// Unchanged, but the role rules were edited since the last sync.
    RulesChanged,
}

impl Why {
    fn cause(self) -> &'static str {
        match self {
            Why::RoleChangedInSisense => "role changed in Sisense, against the role rules",
            Why::ChangedInSisense => "membership or profile changed in Sisense; role re-evaluated",
            Why::RulesChanged => "role rules edited; role re-evaluated",
        }
    }
}

/// Profile and membership changes made in Sisense to mapped users, written into the index —
/// per chunk, under the users' locks (an IdP write in flight is not overwritten) and the commit
/// lock.
async fn pull_changes(
    c: &SisenseConnector,
    changed: &[Changed<'_>],
    recent: &(dyn Fn(&str) -> bool + Sync),
    report: &mut SyncReport,
) -> ScimResult<()> {
    let dir = &c.dir;
    let in_sisense: Vec<&Changed> = changed
        .iter()
        .filter(|ch| ch.why != Why::RulesChanged)
        .collect();
    for chunk in in_sisense.chunks(CHUNK) {
        let _locks = c
            .user_locks
            .lock_all(chunk.iter().map(|ch| ch.sid.as_str()))
            .await;
        let _io = c.io_gate.read().await;
        let mut pulled_here = 0;
        {
            let _g = c.commit_lock.lock();
            let mut batch = sled::Batch::default();
            let mut adds: HashMap<String, Vec<Value>> = HashMap::new();
            let mut removes: HashMap<String, Vec<String>> = HashMap::new();
            for Changed { sid, user: u, .. } in chunk.iter().copied() {
                if recent(sid)
                    || dir.vendor_id(ResourceKind::User, sid)?.as_deref() != Some(u.id.as_str())
                {
                    continue;
                }
                let Some(old) = dir.load(ResourceKind::User, sid)? else {
                    continue;
                };
                let mut pulled = false;
                if let Some(mut doc) = pulled_profile(&old, u) {
                    let (unique, _) = index_keys(ResourceKind::User, sid, &doc);
                    if dir
                        .check_unique(ResourceKind::User, &unique, Some(sid))
                        .is_ok()
                    {
                        dir.stamp(ResourceKind::User, &mut doc, Some(&old));
                        dir.write_doc(&mut batch, ResourceKind::User, sid, &doc, Some(&old));
                        pulled = true;
                    } else {
                        tracing::warn!(tenant = %c.tenant, user = %sid, "Sisense profile change not pulled: its userName or email is another SCIM user's");
                    }
                }
                let in_vendor: HashSet<String> = u
                    .groups
                    .iter()
                    .filter_map(|vg| dir.scim_id(ResourceKind::Group, vg).ok().flatten())
                    .collect();
                let in_dir = dir.groups_of(sid)?;
                for g in &in_dir {
                    if !in_vendor.contains(g) && dir.vendor_id(ResourceKind::Group, g)?.is_some() {
                        removes.entry(g.clone()).or_default().push(sid.clone());
                        pulled = true;
                    }
                }
                for g in in_vendor {
                    if !in_dir.contains(&g) {
                        adds.entry(g).or_default().push(json!({ "value": sid }));
                        pulled = true;
                    }
                }
                pulled_here += usize::from(pulled);
            }
            dir.commit(batch)?;
            let mut batch = sled::Batch::default();
            let groups: HashSet<String> = adds.keys().chain(removes.keys()).cloned().collect();
            for gid in groups {
                let mut ops = Vec::new();
                if let Some(r) = removes.remove(&gid) {
                    ops.push(MemberOp::Remove(r));
                }
                if let Some(a) = adds.remove(&gid) {
                    ops.push(MemberOp::Add(a));
                }
                dir.apply_member_ops(&mut batch, &gid, &ops)?;
            }
            dir.commit(batch)?;
        }
        report.users_pulled += pulled_here;
    }
    Ok(())
}

/// Users changed in Sisense whose role no longer matches the rules get it back (audited with
/// actor `sync`). A failure is logged and left for the next sync.
async fn correct_roles(
    c: &SisenseConnector,
    changed: &[Changed<'_>],
    recent: &(dyn Fn(&str) -> bool + Sync),
    report: &mut SyncReport,
) -> ScimResult<()> {
    let Some(table) = c.roles.read().clone() else {
        return Ok(());
    };
    let table = &table;
    // Owned items: a stream of borrowed ones trips the spawned future's `Send` check.
    let todo: Vec<(String, String, Option<String>, Why)> = changed
        .iter()
        .map(|ch| {
            (
                ch.sid.clone(),
                ch.user.id.clone(),
                ch.user.role_id.clone(),
                ch.why,
            )
        })
        .collect();
    let results = futures_util::stream::iter(todo)
        .map(|(sid, vid, role, why)| async move {
            let sid = sid.as_str();
            let _lock = c.user_locks.lock(sid).await;
            if recent(sid) {
                return Ok(None);
            }
            let dir = &c.dir;
            // Only users the IdP has written are the rules' business.
            if !c
                .state
                .contains_key(format!("idp/{sid}"))
                .map_err(StoreError::from)?
            {
                return Ok(None);
            }
            let Some(doc) = dir.load(ResourceKind::User, sid)? else {
                return Ok(None);
            };
            if dir.vendor_id(ResourceKind::User, sid)?.as_deref() != Some(vid.as_str()) {
                return Ok(None);
            }
            let names = c.group_names(&dir.groups_of(sid)?, None)?;
            let desired = c.desired_role(table, &doc, &names, false);
            let Some(plan) = c.role_plan(table, role.as_deref(), desired) else {
                return Ok(None);
            };
            let mut body = Map::new();
            body.insert("roleId".into(), Value::String(plan.to.clone()));
            let nu = c.patch_vendor_user(&vid, body).await?;
            let mut entry = c.audit_entry(table, sid, &doc, &vid, &plan, why.cause());
            entry.actor = "sync".into();
            Ok::<_, crate::scim::ScimError>(Some((sid.to_string(), VendorState::of(&nu), entry)))
        })
        .buffer_unordered(FAN_OUT)
        .collect::<Vec<_>>()
        .await;
    let mut state_batch = sled::Batch::default();
    let mut audit = Vec::new();
    for r in results {
        match r {
            Ok(Some((sid, st, entry))) => {
                SisenseConnector::put_state(&mut state_batch, &sid, &st);
                audit.push(entry);
                report.roles_corrected += 1;
            }
            Ok(None) => {}
            Err(e) => {
                report.roles_failed += 1;
                tracing::warn!(tenant = %c.tenant, error = %e.detail, "role not corrected; the next sync retries");
            }
        }
    }
    if audit.is_empty() {
        return Ok(());
    }
    c.commit(
        sled::Batch::default(),
        state_batch,
        audit,
        &[],
        super::Finish::Nothing,
    )
    .await
}

/// Completes creates cut short between the SCIM `POST` and the role (`mode = "scim"`): the
/// user gets the role the create meant to give, and becomes the IdP's. A note is dropped once
/// done, or when the IdP has written the user since (its write evaluated the rules); a failed
/// completion keeps it for the next sync.
async fn complete_intents(
    c: &SisenseConnector,
    intents: &[(String, &wire::User, Value)],
    recent: &(dyn Fn(&str) -> bool + Sync),
    report: &mut SyncReport,
) -> ScimResult<()> {
    if intents.is_empty() {
        return Ok(());
    }
    let table = c.roles.read().clone();
    let mut state_batch = sled::Batch::default();
    let mut audit = Vec::new();
    for (sid, u, note) in intents {
        let _lock = c.user_locks.lock(sid).await;
        let dir = &c.dir;
        if recent(sid) || dir.vendor_id(ResourceKind::User, sid)?.as_deref() != Some(u.id.as_str())
        {
            continue;
        }
        let note_key = format!("intent/{}", u.login().map(fold).unwrap_or_default());
        if c.state
            .contains_key(format!("idp/{sid}"))
            .map_err(StoreError::from)?
        {
            state_batch.remove(note_key.into_bytes());
            continue;
        }
        let role = note["roleId"]
            .as_str()
            .filter(|r| u.role_id.as_deref() != Some(*r));
        let done = match role {
            Some(role) => {
                let mut body = Map::new();
                body.insert("roleId".into(), Value::String(role.to_string()));
                c.patch_vendor_user(&u.id, body).await.map(Some)
            }
            None => Ok(None),
        };
        match done {
            Ok(nu) => {
                if let Some(nu) = &nu {
                    SisenseConnector::put_state(&mut state_batch, sid, &VendorState::of(nu));
                    if let (Some(table), Some(doc)) = (&table, dir.load(ResourceKind::User, sid)?) {
                        let plan = super::RolePlan {
                            from: u.role_id.clone(),
                            to: nu.role_id.clone().unwrap_or_default(),
                        };
                        let mut entry = c.audit_entry(
                            table,
                            sid,
                            &doc,
                            &u.id,
                            &plan,
                            "create, completed by sync after an interruption",
                        );
                        entry.actor = "sync".into();
                        audit.push(entry);
                    }
                    report.roles_corrected += 1;
                }
                state_batch.remove(note_key.into_bytes());
                // The create was the IdP's: the rules apply to the user from now on.
                state_batch.insert(format!("idp/{sid}").into_bytes(), &[][..]);
            }
            Err(e) => {
                report.roles_failed += 1;
                tracing::warn!(tenant = %c.tenant, user = %sid, error = %e.detail, "interrupted create not completed; the next sync retries");
            }
        }
    }
    c.commit(
        sled::Batch::default(),
        state_batch,
        audit,
        &[],
        super::Finish::Nothing,
    )
    .await
}

/// Drops notes of creates that never reached Sisense: no user in the pages has the login, the
/// note predates this sync, and no create of that login is in flight.
fn drop_finished_notes(
    c: &SisenseConnector,
    notes: &HashMap<String, Value>,
    seen: &HashSet<String>,
    started_ms: u64,
) -> ScimResult<()> {
    let mut batch = sled::Batch::default();
    for (login, note) in notes {
        let at = note["at"].as_u64().unwrap_or(0);
        if seen.contains(login) || at >= started_ms || c.pending_users.lock().contains(login) {
            continue;
        }
        batch.remove(format!("intent/{login}").into_bytes());
    }
    c.state.apply_batch(batch).map_err(StoreError::from)?;
    Ok(())
}

/// Drops a user Sisense no longer has, unless it changed meanwhile.
fn remove_user(c: &SisenseConnector, sid: &str, vid: &str, recent: bool) -> ScimResult<bool> {
    let dir = &c.dir;
    if recent || dir.vendor_id(ResourceKind::User, sid)?.as_deref() != Some(vid) {
        return Ok(false);
    }
    let Some(old) = dir.load(ResourceKind::User, sid)? else {
        return Ok(false);
    };
    let mut batch = sled::Batch::default();
    dir.delete_entries(&mut batch, ResourceKind::User, sid, &old)?;
    dir.commit(batch)?;
    c.state
        .remove(format!("u/{sid}"))
        .map_err(StoreError::from)?;
    Ok(true)
}

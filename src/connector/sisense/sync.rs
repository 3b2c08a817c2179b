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
//!   index (userName, email, names, activation, membership of mirrored groups), and a role that
//!   no longer matches the role rules is put back — the rules are authoritative, and each
//!   correction is audited with actor `sync`;
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
use super::{fold, SisenseConnector, VendorState, FAN_OUT};
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

    // Users.
    let mut memberships: HashMap<String, Vec<Value>> = HashMap::new();
    let mut changed: Vec<(String, &wire::User)> = Vec::new();
    let mut intents: Vec<(String, &wire::User, Value)> = Vec::new();
    let mut names_taken = HashSet::new();
    // In chunks, each under the commit lock: the IdP's writes interleave instead of waiting
    // for the whole directory (every check below is made again under the lock, per user).
    for chunk in users.chunks(CHUNK) {
        {
            let _io = c.io_gate.read().await;
            let _g = c.commit_lock.lock();
            let mut batch = sled::Batch::default();
            let mut state_batch = sled::Batch::default();
            for u in chunk {
                match dir.scim_id(ResourceKind::User, &u.id)? {
                    Some(sid) => {
                        if recent(&sid) {
                            continue;
                        }
                        let st = VendorState::of(u);
                        if c.load_state(&sid)?.as_ref() != Some(&st) {
                            SisenseConnector::put_state(&mut state_batch, &sid, &st);
                            report.states_refreshed += 1;
                            changed.push((sid, u));
                        }
                    }
                    None => {
                        let Some(login) = u.login() else { continue };
                        let key = fold(login);
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
                        // A bridge create cut short between its vendor calls (`mode = "scim"`)
                        // is the IdP's user and is completed below; anything else stays
                        // Sisense's own (the role rules apply once the IdP writes it).
                        match c
                            .state
                            .get(format!("intent/{key}"))
                            .map_err(StoreError::from)?
                            .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
                        {
                            Some(intent) => intents.push((sid.clone(), u, intent)),
                            None => {
                                state_batch.insert(format!("adopted/{sid}").into_bytes(), &[][..])
                            }
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
            c.state.apply_batch(state_batch).map_err(StoreError::from)?;
        }
        tokio::task::yield_now().await;
    }
    {
        let _io = c.io_gate.read().await;
        let _g = c.commit_lock.lock();
        let mut batch = sled::Batch::default();
        for (gid, members) in memberships.drain() {
            dir.apply_member_ops(&mut batch, &gid, &[MemberOp::Add(members)])?;
        }
        dir.commit(batch)?;
    }

    {
        let _io = c.io_gate.read().await;
        pull_changes(c, &changed, &recent, &mut report)?;
    }
    correct_roles(c, &changed, &recent, &mut report).await?;
    complete_intents(c, &intents, &mut report).await?;

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

/// Profile and membership changes made in Sisense to mapped users, written into the index.
fn pull_changes(
    c: &SisenseConnector,
    changed: &[(String, &wire::User)],
    recent: &dyn Fn(&str) -> bool,
    report: &mut SyncReport,
) -> ScimResult<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let dir = &c.dir;
    let _g = c.commit_lock.lock();
    let mut batch = sled::Batch::default();
    let mut adds: HashMap<String, Vec<Value>> = HashMap::new();
    let mut removes: HashMap<String, Vec<String>> = HashMap::new();
    for (sid, u) in changed {
        if recent(sid) {
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
        report.users_pulled += usize::from(pulled);
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
    Ok(())
}

/// Users changed in Sisense whose role no longer matches the rules get it back (audited with
/// actor `sync`). A failure is logged and left for the next sync.
async fn correct_roles(
    c: &SisenseConnector,
    changed: &[(String, &wire::User)],
    recent: &(dyn Fn(&str) -> bool + Sync),
    report: &mut SyncReport,
) -> ScimResult<()> {
    let Some(table) = c.roles.read().clone() else {
        return Ok(());
    };
    let table = &table;
    // Owned items: a stream of borrowed ones trips the spawned future's `Send` check.
    let todo: Vec<(String, String, Option<String>)> = changed
        .iter()
        .map(|(sid, u)| (sid.clone(), u.id.clone(), u.role_id.clone()))
        .collect();
    let results = futures_util::stream::iter(todo)
        .map(|(sid, vid, role)| async move {
            let sid = sid.as_str();
            let _lock = c.user_locks.lock(sid).await;
            if recent(sid) {
                return Ok(None);
            }
            let dir = &c.dir;
            if c.state
                .contains_key(format!("adopted/{sid}"))
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
            let mut entry = c.audit_entry(
                table,
                sid,
                &doc,
                &vid,
                &plan,
                "role changed in Sisense, against the role rules",
            );
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
/// user joins the groups and gets the role the create meant to give. Then every note of a create
/// not in flight is dropped (done, or it never reached Sisense).
async fn complete_intents(
    c: &SisenseConnector,
    intents: &[(String, &wire::User, Value)],
    report: &mut SyncReport,
) -> ScimResult<()> {
    let table = c.roles.read().clone();
    let mut state_batch = sled::Batch::default();
    let mut audit = Vec::new();
    for (sid, u, intent) in intents {
        let _lock = c.user_locks.lock(sid).await;
        let groups: Vec<String> = intent["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|g| !u.groups.iter().any(|h| h == g))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut done = Ok(None);
        if let Some(n) = &c.native {
            for g in &groups {
                if let Err(e) = n.change_members(g, std::slice::from_ref(&u.id), &[]).await {
                    done = Err(e);
                }
            }
        }
        let role = intent["roleId"]
            .as_str()
            .filter(|r| u.role_id.as_deref() != Some(*r));
        if let (Ok(_), Some(role)) = (&done, role) {
            let mut body = Map::new();
            body.insert("roleId".into(), Value::String(role.to_string()));
            done = c.patch_vendor_user(&u.id, body).await.map(Some);
        }
        match done {
            Ok(Some(nu)) => {
                SisenseConnector::put_state(&mut state_batch, sid, &VendorState::of(&nu));
                if let (Some(table), Some(doc)) = (&table, c.dir.load(ResourceKind::User, sid)?) {
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
            Ok(None) => {}
            Err(e) => {
                report.roles_failed += 1;
                // Left to the rules: the IdP's next write of the user evaluates them.
                tracing::warn!(tenant = %c.tenant, user = %sid, error = %e.detail, "interrupted create not completed");
            }
        }
    }
    let pending = c.pending_users.lock().clone();
    for k in c.state.scan_prefix("intent/").keys() {
        let k = k.map_err(StoreError::from)?;
        let login = String::from_utf8_lossy(&k["intent/".len()..]).into_owned();
        if !pending.contains(&login) {
            state_batch.remove(k);
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

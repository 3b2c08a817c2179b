//! Sync: read the whole Sisense directory (users and groups, pages fetched in parallel) and
//! reconcile the index with it, so that IdP lookups see every Sisense user — including those
//! created in Sisense directly, and those a crash left unmapped (adopted by userName: never a
//! second Sisense user).
//!
//! What sync changes, and what it leaves alone:
//! - an unmapped Sisense group or user is adopted: a SCIM id is minted and linked; an adopted
//!   user's Sisense groups become its memberships;
//! - a mapped user's last known vendor state (role, groups, activation) is refreshed;
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
use super::{fold, SisenseConnector, VendorState};
use crate::connector::http::{VendorClient, VendorError, VendorRequest};
use crate::scim::patch::MemberOp;
use crate::scim::schema::ResourceKind;
use crate::scim::ScimResult;
use crate::store::directory::{index_keys, str_at};
use crate::store::StoreError;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

const PAGE: usize = 10_000;
const WAVE: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub users_seen: usize,
    pub groups_seen: usize,
    pub users_adopted: usize,
    pub groups_adopted: usize,
    pub users_removed: usize,
    pub groups_removed: usize,
    pub states_refreshed: usize,
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
    {
        let _io = c.io_gate.read().await;
        let _g = c.commit_lock.lock();
        let mut batch = sled::Batch::default();
        let mut state_batch = sled::Batch::default();
        let mut names_taken = HashSet::new();
        for u in &users {
            match dir.scim_id(ResourceKind::User, &u.id)? {
                Some(sid) => {
                    if recent(&sid) {
                        continue;
                    }
                    let st = VendorState::of(u);
                    if c.load_state(&sid)?.as_ref() != Some(&st) {
                        SisenseConnector::put_state(&mut state_batch, &sid, &st);
                        report.states_refreshed += 1;
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
                        || !names_taken.insert(key)
                    {
                        tracing::warn!(tenant = %c.tenant, vendor_id = %u.id, "Sisense user not adopted: its userName is taken by another SCIM user");
                        continue;
                    }
                    dir.stamp(ResourceKind::User, &mut doc, None);
                    dir.write_doc(&mut batch, ResourceKind::User, &sid, &doc, None);
                    dir.bump_count(&mut batch, ResourceKind::User, 1);
                    dir.link(&mut batch, ResourceKind::User, &sid, &u.id);
                    SisenseConnector::put_state(&mut state_batch, &sid, &VendorState::of(u));
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
        let mut batch = sled::Batch::default();
        for (gid, members) in memberships.drain() {
            dir.apply_member_ops(&mut batch, &gid, &[MemberOp::Add(members)])?;
        }
        dir.commit(batch)?;
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

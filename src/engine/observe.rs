//! Observe: read the whole vendor directory, adopt what the bridge does not know, note drift,
//! and feed the reconciler. It has no vendor write paths of its own: a role that drifted is
//! marked dirty and reconciled like any other change (audited with actor `sync`).
//!
//! What observe changes, and what it leaves alone:
//! - an unmapped vendor group or user is adopted (a SCIM id is minted and linked; an adopted
//!   user's vendor groups become its memberships), unless its login is already a SCIM user's
//!   (a create in the outbox will take it over) or the IdP deleted it and the vendor keeps it
//!   deactivated (`gone/`);
//! - a mapped user's applied state is refreshed from the vendor; a change made at the vendor
//!   to its profile, activation or membership of mirrored groups is pulled into the SCIM
//!   document (the vendor's edit is kept), and for users the IdP has written a role the rules do
//!   not give is put back (the rules are authoritative);
//! - after an edit of the role rules every user the IdP has written is re-evaluated once;
//! - a mapped group renamed at the vendor is renamed in the directory;
//! - a mapped object gone from the vendor (checked by id for users: paging over a changing list
//!   can miss one) leaves the directory;
//! - nothing with work in the outbox, and nothing written since the observe began, is touched:
//!   the pages may predate that write;
//! - a user's last sign-in at the vendor is read-only: a change of it alone refreshes the
//!   applied state and nothing else (no pull, no mark, no vendor write).
//!
//! Progress: [`Engine::sync_progress`] tells how far the running (or last) observe got. The
//! adapters report each page of users they read through [`users_page_read`], which reaches the
//! observe that asked without a parameter on every adapter's `list_users`.

use super::adapter::{AdapterError, MembershipModel, Profile, VendorGroup, VendorUser};
use super::reconcile::applied_of;
use super::state::{put, Actor, AppliedGroup, AppliedUser, Records};
use super::Engine;
use crate::scim::patch::MemberOp;
use crate::scim::schema::ResourceKind;
use crate::store::directory::{index_keys, str_at};
use crate::store::{Batch, StoreError};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Users handled per hold of the commit lock, so the IdP's writes interleave with a large
/// observe instead of waiting for all of it.
const CHUNK: usize = 512;

#[derive(Debug, Clone, Default)]
pub struct ObserveReport {
    pub users_seen: usize,
    pub groups_seen: usize,
    pub users_adopted: usize,
    pub groups_adopted: usize,
    pub users_removed: usize,
    pub groups_removed: usize,
    pub states_refreshed: usize,
    /// Mapped users whose profile or membership changed at the vendor, pulled into the index.
    pub users_pulled: usize,
    /// Users whose role was put back to what the rules say.
    pub roles_corrected: usize,
    /// Corrections that failed (left in the outbox, retried by delivery).
    pub roles_failed: usize,
    /// Mapped users of whom only the last sign-in changed: their applied state was refreshed
    /// without any other step.
    pub logins_refreshed: usize,
    pub fetch_ms: u128,
    pub elapsed_ms: u128,
}

/// How far the running (or the last) observe of a tenant got: for the dashboard, the CLI's
/// progress bar and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncProgress {
    pub running: bool,
    /// Users read from the vendor so far by the running observe (by the last one when none
    /// runs), counted page by page.
    pub users_seen: u64,
    /// The vendor's user count, once known: from the first page where the vendor tells
    /// (Tableau, Metabase), else when the last page is read.
    pub users_total: Option<u64>,
    /// When the running (or last) observe began (RFC 3339).
    pub started_at: Option<String>,
    /// When the last observe that finished without error finished (RFC 3339).
    pub last_completed_at: Option<String>,
    /// How long that observe took.
    pub last_duration_ms: Option<u64>,
}

/// The live progress of one engine's observes.
#[derive(Default)]
pub(crate) struct ProgressCell(parking_lot::Mutex<SyncProgress>);

impl ProgressCell {
    fn begin(&self) {
        let mut p = self.0.lock();
        p.running = true;
        p.users_seen = 0;
        p.users_total = None;
        p.started_at = Some(rfc3339_now());
    }

    fn page(&self, n: usize, total: Option<usize>) {
        let mut p = self.0.lock();
        p.users_seen = p.users_seen.saturating_add(n as u64);
        if let Some(t) = total {
            p.users_total = Some(t as u64);
        }
    }

    fn fetched(&self, n: usize) {
        let mut p = self.0.lock();
        p.users_seen = n as u64;
        p.users_total = Some(n as u64);
    }

    fn end(&self, ok: bool, started: Instant) {
        let mut p = self.0.lock();
        p.running = false;
        if ok {
            p.last_completed_at = Some(rfc3339_now());
            p.last_duration_ms = Some(started.elapsed().as_millis() as u64);
        }
    }
}

tokio::task_local! {
    /// The progress of the observe whose `list_users` is being polled (see [`users_page_read`]).
    static USERS_PAGES: Arc<ProgressCell>;
}

/// Called by an adapter's `list_users` for each page of users it has read: `n` users, and the
/// vendor's total where its page says. Outside an observe (a lookup that reads every user) it
/// does nothing.
pub fn users_page_read(n: usize, total: Option<usize>) {
    let _ = USERS_PAGES.try_with(|cell| cell.page(n, total));
}

fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A vendor's last sign-in in one form: RFC 3339 in UTC, whole seconds (`2024-01-15T09:30:00Z`),
/// so that it sorts and compares as text. Takes RFC 3339 with any offset or fraction, a
/// date-time without a zone (read as UTC: Sisense types `lastLogin` only as "string", B.4)
/// and unix time (seconds below 10^11, milliseconds above). An empty value is `None` (the
/// vendor did not say). Anything else is kept as it came (clipped): the vendor *did* report a
/// sign-in, so the dormant sweep must read it as "unknown", never as "never signed in".
pub fn normalise_last_login(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let utc = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        t.with_timezone(&chrono::Utc)
    } else if let Some(t) = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(raw, f).ok())
    {
        t.and_utc()
    } else if let Some(t) = raw.parse::<i64>().ok().and_then(|n| {
        if n.abs() < 100_000_000_000 {
            chrono::DateTime::from_timestamp(n, 0)
        } else {
            chrono::DateTime::from_timestamp_millis(n)
        }
    }) {
        t
    } else {
        return Some(raw.chars().take(64).collect());
    };
    Some(utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Engine record: the vendor's role names by role id (a JSON object), as the last observe knew
/// them.
pub const ROLE_NAMES: &str = "rolenames";

/// Engine record prefix: `found/{scim id}` marks a user whose vendor user existed before the
/// bridge wrote it (adopted by observe, or taken over by an IdP create that found it), as
/// opposed to one the bridge created. The access review's `managed` reads it; it is never
/// cleared while the user lives, since where an account came from does not change.
pub const FOUND: &str = "found/";

/// Marks in `batch` that `sid`'s vendor user was found at the vendor, not created by the bridge.
pub(crate) fn note_found(batch: &mut Batch, sid: &str) {
    put::flag(batch, &format!("{FOUND}{sid}"), b"");
}

/// Drops the mark of a user that leaves the directory.
pub(crate) fn forget_found(batch: &mut Batch, sid: &str) {
    crate::store::directory::Directory::remove_record(batch, &format!("{FOUND}{sid}"));
}

/// Whether two applied states differ in the user's last sign-in alone.
fn only_last_login_differs(old: &AppliedUser, seen: &AppliedUser) -> bool {
    old.last_login != seen.last_login
        && AppliedUser {
            last_login: seen.last_login.clone(),
            ..old.clone()
        } == *seen
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Its role differs from the last known one (changed at the vendor, not by the rules).
    RoleChanged,
    /// Its profile or membership changed at the vendor.
    Changed,
    /// Unchanged, but the role rules were edited since the last observe.
    RulesChanged,
}

impl Why {
    fn cause(self, vendor: &str) -> String {
        match self {
            Why::RoleChanged => format!("role changed in {vendor}, against the role rules"),
            Why::Changed => {
                format!("membership or profile changed in {vendor}; role re-evaluated")
            }
            Why::RulesChanged => "role rules edited; role re-evaluated".into(),
        }
    }
}

impl Engine {
    /// How far the running (or the last) observe got; all defaults before the first one.
    pub fn sync_progress(&self) -> SyncProgress {
        self.progress.0.lock().clone()
    }

    /// Notes that an object was written or reconciled. Only an observe under way needs to know
    /// (its pages may predate the write), so outside one this records nothing: the set never
    /// grows with the write rate between observes.
    pub(crate) fn touch(&self, sid: &str) {
        if let Some(set) = self.recent.lock().as_mut() {
            set.insert(sid.to_string());
        }
    }

    /// Reads the whole vendor directory and reconciles the index with it.
    pub async fn observe_now(self: &Arc<Self>) -> Result<ObserveReport, AdapterError> {
        // One observe per tenant at a time, also across a reload's old and new engine.
        let _one = self.observing.clone().lock_owned().await;
        if self.is_retired() {
            // Replaced by a reload while it waited: the new engine observes with the new
            // config (an old observe would judge every user by the old rules).
            return Err(AdapterError::transient("the tenant's config was reloaded"));
        }
        let progress = self.progress.clone();
        let started = Instant::now();
        progress.begin();
        let result = self.observe_inner(&progress).await;
        progress.end(result.is_ok(), started);
        result
    }

    async fn observe_inner(
        self: &Arc<Self>,
        progress: &Arc<ProgressCell>,
    ) -> Result<ObserveReport, AdapterError> {
        // Written from now on: left alone by this observe. Cleared however it ends.
        *self.recent.lock() = Some(HashSet::new());
        struct Ended<'a>(&'a Engine);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                *self.0.recent.lock() = None;
            }
        }
        let _ended = Ended(self);
        let started = Instant::now();
        let (groups, users) = tokio::try_join!(
            self.adapter.list_groups(),
            USERS_PAGES.scope(progress.clone(), self.adapter.list_users())
        )?;
        progress.fetched(users.len());
        let mut report = ObserveReport {
            fetch_ms: started.elapsed().as_millis(),
            users_seen: users.len(),
            groups_seen: groups.len(),
            ..ObserveReport::default()
        };
        let recent = |sid: &str| {
            self.recent
                .lock()
                .as_ref()
                .is_some_and(|set| set.contains(sid))
        };
        let busy = |kind: ResourceKind, sid: &str| -> Result<bool, StoreError> {
            let rec = Records(&self.dir);
            Ok(recent(sid)
                || rec.outbox(kind, sid)?.is_some()
                || rec.tombstone(kind, sid)?.is_some())
        };
        self.observe_groups(&groups, &busy, &mut report)?;

        let rules_now = format!("{:?}", self.settings.rules);
        let rules_changed = Records(&self.dir)
            .flag("rules")?
            .is_none_or(|r| r != rules_now.as_bytes());
        let mut changed: Vec<(String, &VendorUser, Why)> = Vec::new();
        // Logins of users the IdP deleted before their create was confirmed: a vendor user
        // with such a login is the leftover the tombstone removes, not a user to adopt.
        let mut names_taken: HashSet<String> = HashSet::new();
        for kv in self.dir.records("del/u/") {
            let (_, v) = kv?;
            if let Ok(t) = serde_json::from_slice::<super::state::Tombstone>(&v) {
                if t.vendor_id.is_none() {
                    if let Some(p) = t.profile {
                        names_taken.insert(p.login.to_lowercase());
                    }
                }
            }
        }
        let on_user = self.caps.membership == MembershipModel::OnUser;
        for chunk in users.chunks(CHUNK) {
            {
                let _g = self.commit_lock.lock();
                let dir = &self.dir;
                let rec = Records(dir);
                let mut batch = Batch::default();
                let mut memberships: HashMap<String, Vec<Value>> = HashMap::new();
                for u in chunk {
                    match dir.scim_id(ResourceKind::User, &u.id)? {
                        Some(sid) => {
                            if busy(ResourceKind::User, &sid)? {
                                continue;
                            }
                            let seen = applied_of(u, on_user);
                            let old = rec.applied_user(&sid)?;
                            if old
                                .as_ref()
                                .is_some_and(|o| only_last_login_differs(o, &seen))
                            {
                                // A sign-in is no change to converge: stored for the access
                                // review and the dormant sweep, never pulled, marked or sent.
                                put::applied_user(&mut batch, &sid, &seen);
                                report.logins_refreshed += 1;
                                if self.membership_moved(&sid, u, &recent)? {
                                    changed.push((sid, u, Why::Changed));
                                } else if rules_changed {
                                    changed.push((sid, u, Why::RulesChanged));
                                }
                            } else if old.as_ref() != Some(&seen) {
                                let why = if old.is_none_or(|o| o.role != seen.role) {
                                    Why::RoleChanged
                                } else {
                                    Why::Changed
                                };
                                put::applied_user(&mut batch, &sid, &seen);
                                report.states_refreshed += 1;
                                changed.push((sid, u, why));
                            } else if self.membership_moved(&sid, u, &recent)? {
                                // Membership on the group: the user's own state is the same,
                                // its groups at the vendor are not.
                                changed.push((sid, u, Why::Changed));
                            } else if rules_changed {
                                changed.push((sid, u, Why::RulesChanged));
                            }
                        }
                        None => {
                            let Some(p) = &u.profile else { continue };
                            let key = p.login.to_lowercase();
                            if rec.is_gone(&u.id)? {
                                continue;
                            }
                            let resource = scim_user_of(p, u.active.unwrap_or(true));
                            let (sid, mut doc) = dir.new_doc(ResourceKind::User, &resource);
                            let (unique, _) = index_keys(ResourceKind::User, &sid, &doc);
                            if dir.check_unique(ResourceKind::User, &unique, None).is_err()
                                || !names_taken.insert(key)
                            {
                                // A SCIM user with this login exists: its create (in the
                                // outbox, or in flight) takes this vendor user over.
                                continue;
                            }
                            dir.stamp(ResourceKind::User, &mut doc, None);
                            dir.write_doc(&mut batch, ResourceKind::User, &sid, &doc, None);
                            dir.bump_count(&mut batch, ResourceKind::User, 1);
                            dir.link(&mut batch, ResourceKind::User, &sid, &u.id);
                            put::applied_user(&mut batch, &sid, &applied_of(u, on_user));
                            for vg in u.groups.iter().flatten() {
                                if let Some(gid) = dir.scim_id(ResourceKind::Group, vg)? {
                                    memberships
                                        .entry(gid.clone())
                                        .or_default()
                                        .push(json!({ "value": sid }));
                                    if !on_user {
                                        put::member(&mut batch, &gid, &sid, &u.id);
                                    }
                                }
                            }
                            note_found(&mut batch, &sid);
                            report.users_adopted += 1;
                        }
                    }
                }
                // Members must exist before they are added (unknown ids are skipped): the
                // adopted users first, then their memberships.
                dir.commit(batch)?;
                let mut batch = Batch::default();
                for (gid, members) in memberships {
                    dir.apply_member_ops(&mut batch, &gid, &[MemberOp::Add(members)])?;
                }
                dir.commit(batch)?;
            }
            tokio::task::yield_now().await;
        }

        self.pull_changes(&changed, &recent, &mut report).await?;
        // Roles: users the IdP wrote whose vendor role may no longer match the rules are
        // marked dirty and reconciled (audited as `sync`); adopted users keep their role.
        let mut to_fix = Vec::new();
        {
            let mut batch = Batch::default();
            let rec = Records(&self.dir);
            for (sid, _, why) in &changed {
                if !rec.is_idp_written(sid)? || busy(ResourceKind::User, sid)? {
                    continue;
                }
                self.mark(
                    &mut batch,
                    ResourceKind::User,
                    sid,
                    &why.cause(self.caps.vendor),
                    Actor::Sync,
                )?;
                to_fix.push(sid.clone());
            }
            if rules_changed {
                put::flag(&mut batch, "rules", rules_now.as_bytes());
            }
            let _g = self.commit_lock.lock();
            self.dir.commit(batch)?;
        }
        // Role changes, not every entry: a correction may record other events too, and
        // retention may prune meanwhile.
        let audited = self.audit.role_changes();
        self.reconcile_users(&to_fix).await;
        report.roles_corrected = self.audit.role_changes().saturating_sub(audited) as usize;
        report.roles_failed = to_fix
            .iter()
            .filter(|sid| {
                Records(&self.dir)
                    .outbox(ResourceKind::User, sid)
                    .ok()
                    .flatten()
                    .is_some()
            })
            .count();

        // Mapped users missing from the pages: confirm by id before letting them go.
        let vendor_users: HashSet<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let mut missing = Vec::new();
        for sid in self.dir.ids(ResourceKind::User) {
            let sid = sid?;
            if let Some(vid) = self.dir.vendor_id(ResourceKind::User, &sid)? {
                if !vendor_users.contains(vid.as_str()) && !busy(ResourceKind::User, &sid)? {
                    missing.push((sid, vid));
                }
            }
        }
        for (sid, vid) in missing {
            if self.adapter.get_user(&vid).await?.is_some() {
                continue;
            }
            let _lock = self.user_docs.lock(&sid).await;
            let _g = self.commit_lock.lock();
            if busy(ResourceKind::User, &sid)?
                || self.dir.vendor_id(ResourceKind::User, &sid)?.as_deref() != Some(vid.as_str())
            {
                continue;
            }
            let Some(old) = self.dir.load(ResourceKind::User, &sid)? else {
                continue;
            };
            let mut batch = Batch::default();
            self.dir
                .delete_entries(&mut batch, ResourceKind::User, &sid, &old)?;
            put::no_applied_user(&mut batch, &sid);
            put::not_idp_written(&mut batch, &sid);
            forget_found(&mut batch, &sid);
            self.dir.commit(batch)?;
            report.users_removed += 1;
        }

        // Refused for lack of a licence seat: seats free up without the IdP writing anything,
        // so each observe gives those changes another try.
        let mut no_seat = Vec::new();
        for p in Records(&self.dir).pending() {
            let (kind, sid, e) = p?;
            if e.failed && e.capacity {
                no_seat.push((kind, sid));
            }
        }
        for (kind, sid) in no_seat {
            self.retry_failed(kind, &sid)?;
        }
        {
            let mut batch = Batch::default();
            put::flag(&mut batch, "synced", b"");
            self.note_role_names(&mut batch)?;
            let _g = self.commit_lock.lock();
            self.dir.commit(batch)?;
        }
        self.dir.flush().await?;
        self.synced.send_replace(true);
        self.wake.notify_one();
        report.elapsed_ms = started.elapsed().as_millis();
        Ok(report)
    }

    /// Keeps the vendor's role names by id in the store ([`ROLE_NAMES`]), when they changed, so
    /// that reports made without the vendor (the CLI on a stopped bridge) name roles as the
    /// vendor does rather than by opaque id.
    fn note_role_names(&self, batch: &mut Batch) -> Result<(), StoreError> {
        let Some(table) = self.roles.read().clone() else {
            return Ok(());
        };
        let names: std::collections::BTreeMap<&str, String> =
            table.role_ids().map(|id| (id, table.name(id))).collect();
        let bytes = serde_json::to_vec(&names).unwrap_or_default();
        if Records(&self.dir).flag(ROLE_NAMES)?.as_deref() != Some(bytes.as_slice()) {
            put::flag(batch, ROLE_NAMES, &bytes);
        }
        Ok(())
    }

    /// Whether the vendor's mirrored groups of a user differ from the directory's.
    fn membership_moved(
        &self,
        sid: &str,
        u: &VendorUser,
        recent: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<bool, StoreError> {
        let Some(vgroups) = &u.groups else {
            return Ok(false);
        };
        let mut at_vendor = HashSet::new();
        for vg in vgroups {
            if let Some(g) = self.dir.scim_id(ResourceKind::Group, vg)? {
                if !self.group_settling(&g, recent)? {
                    at_vendor.insert(g);
                }
            }
        }
        let mut here = HashSet::new();
        for g in self.dir.groups_of(sid)? {
            if self.dir.vendor_id(ResourceKind::Group, &g)?.is_some()
                && !self.group_settling(&g, recent)?
            {
                here.insert(g);
            }
        }
        Ok(at_vendor != here)
    }

    /// Membership kept on the group: a group with work in the outbox (or written since the
    /// observe began) has members the vendor does not show yet, and must not be read as a
    /// change made at the vendor.
    fn group_settling(
        &self,
        gsid: &str,
        recent: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<bool, StoreError> {
        if self.caps.membership != MembershipModel::OnGroup {
            return Ok(false);
        }
        let rec = Records(&self.dir);
        // A failed entry is not being delivered: the vendor's membership is what it is.
        Ok(recent(gsid)
            || rec
                .outbox(ResourceKind::Group, gsid)?
                .is_some_and(|e| !e.failed)
            || rec.tombstone(ResourceKind::Group, gsid)?.is_some())
    }

    fn observe_groups(
        &self,
        groups: &[VendorGroup],
        busy: &dyn Fn(ResourceKind, &str) -> Result<bool, StoreError>,
        report: &mut ObserveReport,
    ) -> Result<(), AdapterError> {
        let dir = &self.dir;
        let _g = self.commit_lock.lock();
        let mut batch = Batch::default();
        let mut names_taken = HashSet::new();
        for g in groups {
            match dir.scim_id(ResourceKind::Group, &g.id)? {
                Some(sid) => {
                    if busy(ResourceKind::Group, &sid)? {
                        continue;
                    }
                    let Some(old) = dir.load(ResourceKind::Group, &sid)? else {
                        continue;
                    };
                    let applied = AppliedGroup {
                        vendor_id: g.id.clone(),
                        name: g.name.clone(),
                    };
                    if Records(dir).applied_group(&sid)?.as_ref() != Some(&applied) {
                        put::applied_group(&mut batch, &sid, &applied);
                    }
                    if str_at(&old, "displayName") == Some(g.name.as_str()) || g.name.is_empty() {
                        continue;
                    }
                    let mut doc = old.clone();
                    doc["displayName"] = Value::String(g.name.clone());
                    let (unique, _) = index_keys(ResourceKind::Group, &sid, &doc);
                    if dir
                        .check_unique(ResourceKind::Group, &unique, Some(&sid))
                        .is_err()
                        || !names_taken.insert(g.name.to_lowercase())
                    {
                        continue;
                    }
                    dir.stamp(ResourceKind::Group, &mut doc, Some(&old));
                    dir.write_doc(&mut batch, ResourceKind::Group, &sid, &doc, Some(&old));
                }
                None => {
                    if g.name.is_empty() {
                        continue;
                    }
                    let (sid, mut doc) =
                        dir.new_doc(ResourceKind::Group, &json!({ "displayName": g.name }));
                    let (unique, _) = index_keys(ResourceKind::Group, &sid, &doc);
                    if dir
                        .check_unique(ResourceKind::Group, &unique, None)
                        .is_err()
                        || !names_taken.insert(g.name.to_lowercase())
                    {
                        // A SCIM group of that name exists: its create takes this one over.
                        continue;
                    }
                    dir.stamp(ResourceKind::Group, &mut doc, None);
                    dir.write_doc(&mut batch, ResourceKind::Group, &sid, &doc, None);
                    dir.bump_count(&mut batch, ResourceKind::Group, 1);
                    dir.link(&mut batch, ResourceKind::Group, &sid, &g.id);
                    put::applied_group(
                        &mut batch,
                        &sid,
                        &AppliedGroup {
                            vendor_id: g.id.clone(),
                            name: g.name.clone(),
                        },
                    );
                    report.groups_adopted += 1;
                }
            }
        }
        dir.commit(batch)?;
        let vendor_groups: HashSet<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        let mut batch = Batch::default();
        for sid in dir.ids(ResourceKind::Group) {
            let sid = sid?;
            let Some(vid) = dir.vendor_id(ResourceKind::Group, &sid)? else {
                continue;
            };
            if vendor_groups.contains(vid.as_str()) || busy(ResourceKind::Group, &sid)? {
                continue;
            }
            if let Some(old) = dir.load(ResourceKind::Group, &sid)? {
                dir.delete_entries(&mut batch, ResourceKind::Group, &sid, &old)?;
                put::no_applied_group(&mut batch, &sid);
                report.groups_removed += 1;
            }
        }
        Ok(dir.commit(batch)?)
    }

    /// Profile and membership changes made at the vendor to mapped users, written into the
    /// directory per chunk, under the users' locks and the commit lock.
    async fn pull_changes(
        &self,
        changed: &[(String, &VendorUser, Why)],
        recent: &(dyn Fn(&str) -> bool + Sync),
        report: &mut ObserveReport,
    ) -> Result<(), StoreError> {
        let dir = &self.dir;
        let at_vendor: Vec<&(String, &VendorUser, Why)> = changed
            .iter()
            .filter(|(_, _, why)| *why != Why::RulesChanged)
            .collect();
        for chunk in at_vendor.chunks(CHUNK) {
            let _locks = self
                .user_docs
                .lock_all(chunk.iter().map(|(sid, _, _)| sid.as_str()))
                .await;
            let _g = self.commit_lock.lock();
            let rec = Records(dir);
            let mut batch = Batch::default();
            let mut adds: HashMap<String, Vec<Value>> = HashMap::new();
            let mut removes: HashMap<String, Vec<String>> = HashMap::new();
            for (sid, u, _) in chunk.iter().copied() {
                if recent(sid)
                    || rec.outbox(ResourceKind::User, sid)?.is_some()
                    || dir.vendor_id(ResourceKind::User, sid)?.as_deref() != Some(u.id.as_str())
                {
                    continue;
                }
                let Some(old) = dir.load(ResourceKind::User, sid)? else {
                    continue;
                };
                let mut pulled = false;
                if let Some(mut doc) = pulled_profile(&old, u, self.caps.keeps_login) {
                    let (unique, _) = index_keys(ResourceKind::User, sid, &doc);
                    if dir
                        .check_unique(ResourceKind::User, &unique, Some(sid))
                        .is_ok()
                    {
                        dir.stamp(ResourceKind::User, &mut doc, Some(&old));
                        dir.write_doc(&mut batch, ResourceKind::User, sid, &doc, Some(&old));
                        pulled = true;
                    } else {
                        tracing::warn!(tenant = %self.tenant(), user = %sid, "vendor profile change not pulled: its userName is another SCIM user's");
                    }
                }
                if let Some(vgroups) = &u.groups {
                    let mut in_vendor: HashSet<String> = HashSet::new();
                    for vg in vgroups {
                        if let Some(g) = dir.scim_id(ResourceKind::Group, vg)? {
                            if !self.group_settling(&g, recent)? {
                                in_vendor.insert(g);
                            }
                        }
                    }
                    let in_dir = dir.groups_of(sid)?;
                    for g in &in_dir {
                        if !in_vendor.contains(g)
                            && dir.vendor_id(ResourceKind::Group, g)?.is_some()
                            && !self.group_settling(g, recent)?
                        {
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
                }
                report.users_pulled += usize::from(pulled);
            }
            let on_group = self.caps.membership == MembershipModel::OnGroup;
            let groups: HashSet<String> = adds.keys().chain(removes.keys()).cloned().collect();
            for gid in groups {
                let mut ops = Vec::new();
                if let Some(r) = removes.remove(&gid) {
                    if on_group {
                        for u in &r {
                            put::no_member(&mut batch, &gid, u);
                        }
                    }
                    ops.push(MemberOp::Remove(r));
                }
                if let Some(a) = adds.remove(&gid) {
                    if on_group {
                        for m in &a {
                            let u = str_at(m, "value").unwrap_or_default();
                            if let Some(v) = dir.vendor_id(ResourceKind::User, u)? {
                                put::member(&mut batch, &gid, u, &v);
                            }
                        }
                    }
                    ops.push(MemberOp::Add(a));
                }
                dir.apply_member_ops(&mut batch, &gid, &ops)
                    .map_err(|e| StoreError::Corrupt {
                        key: gid.clone(),
                        reason: e.detail,
                    })?;
            }
            dir.commit(batch)?;
        }
        Ok(())
    }
}

/// A SCIM user for a vendor user the bridge did not create.
pub fn scim_user_of(p: &Profile, active: bool) -> Value {
    let mut doc = Map::new();
    doc.insert(
        "schemas".into(),
        json!(["urn:ietf:params:scim:schemas:core:2.0:User"]),
    );
    doc.insert("userName".into(), Value::String(p.login.clone()));
    if let Some(d) = p.display_name.as_deref().filter(|s| !s.is_empty()) {
        doc.insert("displayName".into(), Value::String(d.to_string()));
    }
    let mut name = Map::new();
    if let Some(f) = p.given_name.as_deref().filter(|s| !s.is_empty()) {
        name.insert("givenName".into(), Value::String(f.to_string()));
    }
    if let Some(l) = p.family_name.as_deref().filter(|s| !s.is_empty()) {
        name.insert("familyName".into(), Value::String(l.to_string()));
    }
    if !name.is_empty() {
        doc.insert("name".into(), Value::Object(name));
    }
    if let Some(e) = p.email.as_deref().filter(|s| !s.is_empty()) {
        doc.insert(
            "emails".into(),
            json!([{"value": e, "type": "work", "primary": true}]),
        );
    }
    doc.insert("active".into(), Value::Bool(active));
    Value::Object(doc)
}

/// The SCIM user `doc` with what the vendor shows for `u` (only what the vendor answered: an
/// absent field is not a removal); `None` when nothing differs. `keeps_login`: whether the
/// vendor's login is the SCIM userName (not so for Metabase, whose login is the email).
fn pulled_profile(doc: &Value, u: &VendorUser, keeps_login: bool) -> Option<Value> {
    let mut out = doc.clone();
    let mut differs = false;
    if let Some(p) = &u.profile {
        // userName is not case-exact (RFC 7643 §4.1.1): a vendor keeping another case has not
        // renamed anyone.
        if keeps_login
            && !p.login.is_empty()
            && !str_at(doc, "userName").is_some_and(|n| n.eq_ignore_ascii_case(&p.login))
        {
            out["userName"] = Value::String(p.login.clone());
            differs = true;
        }
        let old = Engine::profile_of(doc);
        if let Some(email) = p.email.as_deref().filter(|e| !e.is_empty()) {
            // Emails are compared without case: a vendor that lower-cases them (Metabase) has
            // not changed anyone's.
            if !old
                .as_ref()
                .and_then(|f| f.email.as_deref())
                .is_some_and(|o| o.eq_ignore_ascii_case(email))
            {
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
        if let Some(d) = p.display_name.as_deref().filter(|d| !d.is_empty()) {
            if old.as_ref().and_then(|f| f.display_name.as_deref()) != Some(d) {
                out["displayName"] = Value::String(d.to_string());
                differs = true;
            }
        }
        for (vendor, key) in [(&p.given_name, "givenName"), (&p.family_name, "familyName")] {
            let current = doc
                .get("name")
                .and_then(|n| n.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let Some(v) = vendor else { continue };
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
    }
    if let Some(active) = u.active {
        if doc.get("active").and_then(Value::as_bool).unwrap_or(true) != active {
            out["active"] = Value::Bool(active);
            differs = true;
        }
    }
    differs.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_logins_are_normalised_to_utc_seconds() {
        let n = |s: &str| normalise_last_login(s);
        assert_eq!(
            n("2016-08-16T23:17:06Z").as_deref(),
            Some("2016-08-16T23:17:06Z")
        );
        assert_eq!(
            n("2024-01-15T10:30:00.123+01:00").as_deref(),
            Some("2024-01-15T09:30:00Z")
        );
        assert_eq!(
            n("2024-01-15T09:30:00.123456").as_deref(),
            Some("2024-01-15T09:30:00Z")
        );
        assert_eq!(
            n("2024-01-15 09:30:00").as_deref(),
            Some("2024-01-15T09:30:00Z")
        );
        assert_eq!(n("1705311000000").as_deref(), Some("2024-01-15T09:30:00Z"));
        assert_eq!(n("1705311000").as_deref(), Some("2024-01-15T09:30:00Z"));
        assert_eq!(n(""), None);
        // Reported but unreadable: kept, so that the sweep calls it unknown.
        assert_eq!(n("yesterday").as_deref(), Some("yesterday"));
    }

    #[test]
    fn only_a_new_sign_in_is_told_apart_from_a_change() {
        let old = AppliedUser {
            vendor_id: "v".into(),
            role: Some("r".into()),
            last_login: Some("2024-01-01T00:00:00Z".into()),
            ..AppliedUser::default()
        };
        let signed_in = AppliedUser {
            last_login: Some("2024-02-01T00:00:00Z".into()),
            ..old.clone()
        };
        assert!(only_last_login_differs(&old, &signed_in));
        assert!(!only_last_login_differs(&old, &old));
        let moved = AppliedUser {
            role: Some("other".into()),
            ..signed_in
        };
        assert!(!only_last_login_differs(&old, &moved));
    }

    #[test]
    fn pages_count_only_inside_an_observe() {
        let cell = Arc::new(ProgressCell::default());
        users_page_read(5, Some(10));
        assert_eq!(cell.0.lock().users_seen, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(USERS_PAGES.scope(cell.clone(), async {
            users_page_read(5, Some(10));
            users_page_read(3, None);
        }));
        let p = cell.0.lock().clone();
        assert_eq!((p.users_seen, p.users_total), (8, Some(10)));
    }
}

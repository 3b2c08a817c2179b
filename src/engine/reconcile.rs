//! Reconcile one object: compare what the IdP asked (the directory, the role rules) with what
//! the vendor last confirmed, and make the adapter calls that close the gap.
//!
//! Every step is safe to run again: calls send fixed values, a create that may have happened
//! meets the vendor's duplicate check and takes the object over, and the applied state is
//! written only after the vendor confirmed. A crash anywhere leaves the outbox mark in place,
//! so the next pass picks the object up where the vendor actually is.

use super::adapter::{
    AdapterError, Created, Deactivation, MembershipModel, NewUser, Profile, Refusal, Removed,
    RoleModel, UserChange, VendorUser, NO_ROLE,
};
use super::role_table::RoleTable;
use super::state::{
    now_ms, put, Actor, AppliedGroup, AppliedUser, OutboxEntry, Records, Tombstone,
};
use super::Engine;
use crate::scim::schema::ResourceKind;
use crate::store::audit::{AuditEntry, AuditEvent};
use crate::store::directory::str_at;
use crate::store::{Batch, StoreError};
use rand::Rng;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

/// Retry schedule of a transient failure: exponential from 1 s, capped at 5 minutes, with full
/// jitter (rauthy's and Kubernetes' controllers do the same).
const BACKOFF_BASE_MS: u64 = 1_000;
const BACKOFF_MAX_MS: u64 = 300_000;

/// Membership changes whose answers were lost are read back from the vendor, and read once
/// more this long after: a call that timed out may run at the vendor later, in any order with
/// newer ones (seen across a vendor frozen for 40 s), and the second read catches it.
const VERIFY_AFTER_MS: u64 = 5_000;
const VERIFY_CAUSE: &str = "membership read back after lost answers";

impl From<StoreError> for AdapterError {
    fn from(e: StoreError) -> AdapterError {
        tracing::error!(error = %e, "store failure during a reconcile");
        AdapterError::transient("the bridge's store failed")
    }
}

impl From<crate::scim::ScimError> for AdapterError {
    fn from(e: crate::scim::ScimError) -> AdapterError {
        AdapterError::transient(format!(
            "the bridge could not update its directory: {}",
            e.detail
        ))
    }
}

/// A membership record: the member's SCIM id and its vendor id.
type Membership = (String, String);

/// What a create of a vendor user came to.
enum Made {
    /// Made as desired.
    Complete,
    /// Made, with fields, role or memberships still to send.
    Partly,
    /// An existing vendor user was taken over.
    TakenOver,
}

/// What the IdP asked for one user, in vendor terms. The plan ([`super::plan`]) reads the same,
/// so that it shows what this module would send.
pub(crate) struct DesiredUser {
    pub(crate) profile: Profile,
    pub(crate) active: bool,
    /// The role to hold (vendor id); `None`: leave the vendor's role alone.
    pub(crate) role: Option<String>,
    /// Vendor ids of the mirrored groups the user is in (created at the vendor already).
    pub(crate) groups: Vec<String>,
    /// SCIM ids of those groups, and of the ones not at the vendor yet.
    pub(crate) group_sids: Vec<String>,
}

/// A group as [`Engine::desired_user_with`] needs it: (its name, its vendor id); `None` for a
/// group no longer in the directory.
pub(crate) type GroupFacts = Option<(Option<String>, Option<String>)>;

impl Engine {
    /// Reconciles one object, the caller holding its lock, and records the outcome in the
    /// outbox: gone when done, else its attempt, next try and error (`failed` when refused).
    pub(crate) async fn reconcile_locked(
        &self,
        kind: ResourceKind,
        sid: &str,
    ) -> Result<(), AdapterError> {
        let key = (kind, sid.to_string());
        let fence = Records(&self.dir).outbox(kind, sid)?.map(|e| e.seq);
        match fence {
            Some(seq) => self.fences.lock().insert(key.clone(), seq),
            None => self.fences.lock().remove(&key),
        };
        let result = match kind {
            ResourceKind::User => self.converge_user(sid).await,
            ResourceKind::Group => self.converge_group(sid).await,
        };
        self.fences.lock().remove(&key);
        self.touch(sid);
        match &result {
            Ok(()) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if e.is_transient() {
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                } else if let AdapterError::Refused { kind, .. } = e {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    if *kind == Refusal::Capacity {
                        self.counters.no_capacity.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Err(se) = self.note_failure(kind, sid, e, fence) {
                    tracing::error!(tenant = %self.tenant(), error = %se, "cannot record a delivery failure");
                }
            }
        }
        result
    }

    fn note_failure(
        &self,
        kind: ResourceKind,
        sid: &str,
        e: &AdapterError,
        fence: Option<u64>,
    ) -> Result<(), StoreError> {
        let _g = self.commit_lock.lock();
        let Some(mut entry) = Records(&self.dir).outbox(kind, sid)? else {
            return Ok(());
        };
        if Some(entry.seq) != fence {
            // Marked again by a newer write while this attempt ran: due as it is.
            return Ok(());
        }
        entry.attempts = entry.attempts.saturating_add(1);
        // A capacity refusal retried by an observe and refused again for the same reason is
        // audited once, not at every observe.
        let repeated =
            entry.capacity && entry.last_error.as_deref() == Some(e.to_string().as_str());
        entry.last_error = Some(e.to_string());
        let mut audit = Vec::new();
        match e {
            AdapterError::Refused { kind: why, .. } => {
                entry.failed = true;
                entry.capacity = *why == Refusal::Capacity;
                if !repeated {
                    tracing::warn!(tenant = %self.tenant(), kind = kind.name(), id = sid, error = %e, "the vendor refused a change for good; kept as failed");
                    audit.push(self.refusal_entry(kind, sid, &entry, e)?);
                }
            }
            AdapterError::Transient { retry_after, .. } => {
                let cap = BACKOFF_BASE_MS
                    .saturating_mul(1u64 << entry.attempts.min(16))
                    .min(BACKOFF_MAX_MS);
                let mut wait = rand::rng().random_range(cap / 2..=cap);
                if let Some(ra) = retry_after {
                    wait = wait.max(ra.as_millis() as u64);
                }
                entry.next_ms = now_ms() + wait;
                tracing::debug!(tenant = %self.tenant(), kind = kind.name(), id = sid, error = %e, wait_ms = wait, "delivery deferred");
            }
            // The mapping was dropped; the next pass creates the object again (soon, but not
            // in a tight loop if the vendor keeps answering so).
            AdapterError::Gone => entry.next_ms = now_ms() + 1_000,
        }
        let mut batch = Batch::default();
        put::outbox(&mut batch, kind, sid, &entry);
        self.dir.commit_audited(batch, &self.audit, &audit)?;
        // A retry due in a second or so, set by an inline delivery: the delivery loop may be
        // asleep for up to its idle bound and must see the new due time.
        self.wake.notify_one();
        Ok(())
    }

    /// The audit record of a change the vendor refused for good.
    fn refusal_entry(
        &self,
        kind: ResourceKind,
        sid: &str,
        entry: &OutboxEntry,
        e: &AdapterError,
    ) -> Result<AuditEntry, StoreError> {
        let name = match kind {
            ResourceKind::User => self
                .dir
                .load(kind, sid)?
                .and_then(|d| str_at(&d, "userName").map(str::to_string)),
            ResourceKind::Group => self
                .dir
                .load(kind, sid)?
                .and_then(|d| str_at(&d, "displayName").map(str::to_string)),
        };
        let name = name.unwrap_or_default();
        let vid = self.dir.vendor_id(kind, sid)?.unwrap_or_default();
        let refused = AuditEntry::new(
            AuditEvent::DeliveryRefused,
            entry.actor.as_str(),
            format!("{} of a {}", entry.cause, kind.name()),
        );
        let refused = match kind {
            ResourceKind::User => refused.user(sid, &name, &vid),
            ResourceKind::Group => refused.group(sid, &name, &vid),
        };
        Ok(refused.detail(e.to_string()))
    }

    fn cause_of(&self, kind: ResourceKind, sid: &str) -> Result<(String, Actor), StoreError> {
        Ok(Records(&self.dir)
            .outbox(kind, sid)?
            .map(|e: OutboxEntry| (e.cause, e.actor))
            .unwrap_or_else(|| ("reconcile".into(), Actor::Sync)))
    }

    /// Commits a reconcile step of one object and its audit entries atomically. If an IdP
    /// write marked the object again since this reconcile began (its fence), the new mark
    /// stays, whatever the step says: the newer desired state still has to be delivered.
    async fn commit_step(
        &self,
        kind: ResourceKind,
        sid: &str,
        mut batch: Batch,
        audit: Vec<AuditEntry>,
    ) -> Result<(), StoreError> {
        {
            let _g = self.commit_lock.lock();
            let fence = self.fences.lock().get(&(kind, sid.to_string())).copied();
            if let Some(current) = Records(&self.dir).outbox(kind, sid)? {
                if Some(current.seq) != fence {
                    put::outbox(&mut batch, kind, sid, &current);
                }
            }
            self.dir.commit_audited(batch, &self.audit, &audit)?;
        }
        if let Some(c) = &self.role_changes {
            c.inc_by(audit.iter().filter(|e| e.is_role_change()).count() as u64);
        }
        // Not flushed here: a write path flushes before it answers, and a step lost to a crash
        // before the store's own flush is redone from the outbox (every step is repeatable).
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Users
    // -----------------------------------------------------------------------------------------

    pub(crate) fn desired_user(
        &self,
        table: &RoleTable,
        sid: &str,
        doc: &Value,
        new_user: bool,
    ) -> Result<DesiredUser, AdapterError> {
        let group = |g: &str| -> Result<GroupFacts, StoreError> {
            let Some(gdoc) = self.dir.load(ResourceKind::Group, g)? else {
                return Ok(None);
            };
            let name = str_at(&gdoc, "displayName").map(str::to_string);
            Ok(Some((name, self.dir.vendor_id(ResourceKind::Group, g)?)))
        };
        self.desired_user_with(Some(table), sid, doc, new_user, group)?
            .ok_or_else(|| AdapterError::Refused {
                vendor: self.caps.vendor,
                reason: "the user has no userName".into(),
                kind: Refusal::Invalid,
            })
    }

    /// [`Self::desired_user`] with the user's groups read through `group` (the plan reads each
    /// group once for all its members) and without the vendor's roles when they are not read
    /// yet (`table` `None`: no role from the rules). `None`: the user has no userName.
    pub(crate) fn desired_user_with(
        &self,
        table: Option<&RoleTable>,
        sid: &str,
        doc: &Value,
        new_user: bool,
        mut group: impl FnMut(&str) -> Result<GroupFacts, StoreError>,
    ) -> Result<Option<DesiredUser>, StoreError> {
        let Some(profile) = self.desired_profile(doc) else {
            return Ok(None);
        };
        let active = doc.get("active").and_then(Value::as_bool) != Some(false);
        let mut names = Vec::new();
        let mut groups = Vec::new();
        let mut group_sids = Vec::new();
        for g in self.dir.groups_of(sid)? {
            let Some((name, vid)) = group(&g)? else {
                continue;
            };
            names.extend(name);
            groups.extend(vid);
            group_sids.push(g);
        }
        let idp_written = Records(&self.dir).is_idp_written(sid)?;
        let role = self.desired_role(table, doc, active, idp_written, &names, new_user);
        Ok(Some(DesiredUser {
            profile,
            active,
            role,
            groups,
            group_sids,
        }))
    }

    /// The role a user should hold (vendor id), from the rules over its groups' `names` and its
    /// SCIM `roles`; `None`: leave the vendor's role alone.
    pub(crate) fn desired_role(
        &self,
        table: Option<&RoleTable>,
        doc: &Value,
        active: bool,
        idp_written: bool,
        names: &[String],
        new_user: bool,
    ) -> Option<String> {
        let role = match (&self.caps.deactivation, active) {
            (Deactivation::Role(r), false) => Some(r.clone()),
            _ if idp_written => {
                table.and_then(|t| t.desired(&self.settings.rules, doc, names, new_user))
            }
            // Adopted from the vendor and never written by the IdP: its role stays the vendor's.
            _ => None,
        };
        // Role groups are exclusive and membership is the role: a user the IdP wrote whom no
        // rule covers belongs in none of them (not "left as it is", which would keep a role the
        // IdP took away).
        match self.caps.role {
            RoleModel::Groups if idp_written => role.or_else(|| Some(NO_ROLE.to_string())),
            _ => role,
        }
    }

    /// The audit record of a role move of user `(sid, login, vendor id)`. Where a role means
    /// "no access" (Tableau `Unlicensed`), a move into it is the deactivation and a move out of
    /// it the reactivation.
    fn audit_entry(
        &self,
        table: &RoleTable,
        (sid, login, vid): (&str, &str, &str),
        from: Option<&str>,
        to: &str,
        (cause, actor): (&str, Actor),
    ) -> AuditEntry {
        let event = match &self.caps.deactivation {
            Deactivation::Role(off) if off == to => AuditEvent::UserDeactivated,
            Deactivation::Role(off) if from == Some(off.as_str()) => AuditEvent::UserReactivated,
            _ => AuditEvent::RoleChange,
        };
        AuditEntry::new(event, actor.as_str(), cause)
            .user(sid, login, vid)
            .role_move(from.map(|f| table.name(f)), table.name(to))
    }

    /// An audit record of user `(sid, login, vendor id)`.
    fn user_entry(
        &self,
        event: AuditEvent,
        (sid, login, vid): (&str, &str, &str),
        (cause, actor): (&str, Actor),
    ) -> AuditEntry {
        AuditEntry::new(event, actor.as_str(), cause).user(sid, login, vid)
    }

    /// The audit record of a new vendor user: the profile it was made with.
    fn created_entry(
        &self,
        sid: &str,
        desired: &DesiredUser,
        vid: &str,
        (cause, actor): (&str, Actor),
    ) -> AuditEntry {
        let mut after = profile_fields(&desired.profile, None);
        after.insert("active".into(), Value::Bool(desired.active));
        self.user_entry(
            AuditEvent::UserCreated,
            (sid, &desired.profile.login, vid),
            (cause, actor),
        )
        .after(Value::Object(after))
    }

    /// The audit records of a user's mirrored groups at the vendor going from `before`
    /// (`None`: unknown) to `after` (vendor group ids; groups the bridge does not mirror are
    /// left out, it never changes them).
    fn membership_entries(
        &self,
        (sid, login, vid): (&str, &str, &str),
        before: Option<&[String]>,
        after: &[String],
        (cause, actor): (&str, Actor),
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        let had: HashSet<&str> = before
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect();
        let has: HashSet<&str> = after.iter().map(String::as_str).collect();
        let added = after.iter().filter(|g| !had.contains(g.as_str()));
        let removed = before
            .unwrap_or_default()
            .iter()
            .filter(|g| !has.contains(g.as_str()));
        for (event, vg) in added
            .map(|g| (AuditEvent::MemberAdded, g))
            .chain(removed.map(|g| (AuditEvent::MemberRemoved, g)))
        {
            let Some(gsid) = self.dir.scim_id(ResourceKind::Group, vg)? else {
                continue;
            };
            let mut e = self.user_entry(event, (sid, login, vid), (cause, actor));
            let group = self.group_ref(&gsid, vg)?;
            e = match event {
                AuditEvent::MemberAdded => e.after(group),
                _ => e.before(group),
            };
            if before.is_none() {
                e = e.detail("the user's previous groups at the vendor were unknown");
            }
            out.push(e);
        }
        Ok(out)
    }

    /// `{"group", "group_id", "group_vendor_id"}` of a mirrored group, for membership records.
    fn group_ref(&self, gsid: &str, gvid: &str) -> Result<Value, StoreError> {
        let name = self
            .dir
            .load(ResourceKind::Group, gsid)?
            .and_then(|d| str_at(&d, "displayName").map(str::to_string))
            .unwrap_or_default();
        Ok(json!({ "group": name, "group_id": gsid, "group_vendor_id": gvid }))
    }

    /// The userName of a SCIM user (that of its tombstone once the IdP deleted it; empty when
    /// even that is gone).
    fn login_of(&self, sid: &str) -> Result<String, StoreError> {
        if let Some(d) = self.dir.load(ResourceKind::User, sid)? {
            return Ok(str_at(&d, "userName").unwrap_or_default().to_string());
        }
        Ok(Records(&self.dir)
            .tombstone(ResourceKind::User, sid)?
            .map(|t| t.name)
            .unwrap_or_default())
    }

    async fn converge_user(&self, sid: &str) -> Result<(), AdapterError> {
        let table = self.role_table()?;
        let rec = Records(&self.dir);
        if let Some(t) = rec.tombstone(ResourceKind::User, sid)? {
            return self.converge_deleted_user(sid, t).await;
        }
        let (cause, actor) = self.cause_of(ResourceKind::User, sid)?;
        let Some(doc) = self.dir.load(ResourceKind::User, sid)? else {
            let mut b = Batch::default();
            put::no_outbox(&mut b, ResourceKind::User, sid);
            return Ok(self
                .commit_step(ResourceKind::User, sid, b, Vec::new())
                .await?);
        };
        let vid = self.dir.vendor_id(ResourceKind::User, sid)?;
        let applied = match &vid {
            Some(v) => Some(rec.applied_user(sid)?.unwrap_or(AppliedUser {
                vendor_id: v.clone(),
                ..AppliedUser::default()
            })),
            None => None,
        };
        let desired = self.desired_user(&table, sid, &doc, applied.is_none())?;
        let mut audit = Vec::new();
        let applied = match applied {
            Some(a) => a,
            None => {
                if !desired.active && self.caps.deactivation == Deactivation::Delete {
                    // Inactive and deprovisioned by deletion: the bridge keeps it alone. A
                    // create tried before (its answer lost) may have left a vendor user: found
                    // by login and removed.
                    let tried = rec
                        .outbox(ResourceKind::User, sid)?
                        .is_some_and(|e| e.last_error.is_some());
                    if tried {
                        if let Some(u) = self.adapter.find_user(&desired.profile).await? {
                            if self.dir.scim_id(ResourceKind::User, &u.id)?.is_none() {
                                self.adapter.delete_user(&u.id).await?;
                                audit.push(
                                    self.user_entry(
                                        AuditEvent::UserDeleted,
                                        (sid, &desired.profile.login, &u.id),
                                        (&cause, actor),
                                    )
                                    .detail(
                                        "left by a create whose answer was lost; the user is \
                                         inactive and this vendor deactivates by deletion",
                                    ),
                                );
                            }
                        }
                    }
                    let mut b = Batch::default();
                    put::no_outbox(&mut b, ResourceKind::User, sid);
                    return Ok(self.commit_step(ResourceKind::User, sid, b, audit).await?);
                }
                match self.create_vendor_user(sid, &desired).await? {
                    (a, Made::Partly) => {
                        // Made, with what the create could not carry still to send: linked
                        // now (a crash here finds it linked), aligned below. Until that is
                        // done, a rollback of the create removes what was made.
                        let mut b = Batch::default();
                        self.link_user(&mut b, sid, &a)?;
                        put::being_made(&mut b, sid);
                        audit.push(self.created_entry(
                            sid,
                            &desired,
                            &a.vendor_id,
                            (&cause, actor),
                        ));
                        if let Some(r) = desired
                            .role
                            .as_ref()
                            .filter(|r| a.role.as_ref() == Some(r) && r.as_str() != NO_ROLE)
                        {
                            audit.push(self.audit_entry(
                                &table,
                                (sid, &desired.profile.login, &a.vendor_id),
                                None,
                                r,
                                (&cause, actor),
                            ));
                        }
                        self.after_user_created(&mut b, &desired, actor)?;
                        self.commit_step(ResourceKind::User, sid, b, std::mem::take(&mut audit))
                            .await?;
                        a
                    }
                    (a, Made::Complete) => {
                        // Created as desired: done, unless membership lives on the groups.
                        let mut b = Batch::default();
                        self.link_user(&mut b, sid, &a)?;
                        audit.push(self.created_entry(
                            sid,
                            &desired,
                            &a.vendor_id,
                            (&cause, actor),
                        ));
                        if let Some(r) = &desired.role {
                            audit.push(self.audit_entry(
                                &table,
                                (sid, &desired.profile.login, &a.vendor_id),
                                None,
                                r,
                                (&cause, actor),
                            ));
                        }
                        self.after_user_created(&mut b, &desired, actor)?;
                        put::no_outbox(&mut b, ResourceKind::User, sid);
                        self.commit_step(ResourceKind::User, sid, b, audit).await?;
                        return Ok(());
                    }
                    (mut a, Made::TakenOver) => {
                        // An existing vendor user taken over: linked now, aligned below. If a
                        // user the IdP deleted still holds it, its removal may be under way:
                        // wait for it (its lock), and trust nothing the vendor said before.
                        let holder = self.dir.scim_id(ResourceKind::User, &a.vendor_id)?;
                        let _held = match holder.as_deref() {
                            Some(h) if h != sid && !self.user_locks.same(h, sid) => {
                                Some(self.user_locks.lock(h).await)
                            }
                            _ => None,
                        };
                        if holder.is_some_and(|h| h != sid) {
                            a.active = None;
                            a.role = None;
                        }
                        let mut b = Batch::default();
                        self.link_user(&mut b, sid, &a)?;
                        // The access review's `adopted`: it existed before the IdP wrote it.
                        super::observe::note_found(&mut b, sid);
                        self.after_user_created(&mut b, &desired, actor)?;
                        self.commit_step(ResourceKind::User, sid, b, Vec::new())
                            .await?;
                        a
                    }
                }
            }
        };
        self.align_user(&table, sid, &desired, applied, &cause, actor)
            .await
    }

    /// Creates the vendor user, or takes over an existing one (its state as the vendor showed
    /// it).
    async fn create_vendor_user(
        &self,
        sid: &str,
        desired: &DesiredUser,
    ) -> Result<(AppliedUser, Made), AdapterError> {
        let on_user = self.caps.membership == MembershipModel::OnUser;
        let new = NewUser {
            profile: desired.profile.clone(),
            active: desired.active || !matches!(self.caps.deactivation, Deactivation::Flag),
            role: match self.caps.role {
                RoleModel::Attribute => desired.role.clone(),
                RoleModel::Groups => None,
            },
            groups: if on_user {
                desired.groups.clone()
            } else {
                Vec::new()
            },
        };
        match self.adapter.create_user(&new).await? {
            Created::New(u) => {
                let view = self.adapter.vendor_view(&desired.profile);
                let applied = AppliedUser {
                    vendor_id: u.id.clone(),
                    // What the vendor says it made, when it says: a vendor whose create takes
                    // only some fields (Tableau: name and site role) gets the rest next.
                    profile: Some(u.profile.clone().unwrap_or_else(|| view.clone())),
                    // Where a role means "inactive", the vendor shows no activation at all.
                    active: (!matches!(self.caps.deactivation, Deactivation::Role(_)))
                        .then_some(new.active),
                    // The role the vendor gave, when it says: one other than asked (Tableau
                    // without a free seat) is aligned — and refused — by the next step, never
                    // recorded as the one asked for.
                    role: u.role.clone().or(new.role.clone()),
                    groups: on_user.then(|| u.groups.clone().unwrap_or(new.groups.clone())),
                    last_login: u.last_login.clone(),
                };
                // Role groups, membership on groups, fields left for a second call: aligned
                // by the next step.
                let complete = self.caps.role == RoleModel::Attribute
                    && applied.role == new.role
                    && applied.profile.as_ref() == Some(&view);
                Ok((
                    applied,
                    if complete {
                        Made::Complete
                    } else {
                        Made::Partly
                    },
                ))
            }
            Created::Exists(u) => {
                if let Some(holder) = self.dir.scim_id(ResourceKind::User, &u.id)? {
                    let live = holder != sid
                        && self.dir.load(ResourceKind::User, &holder)?.is_some()
                        && Records(&self.dir)
                            .tombstone(ResourceKind::User, &holder)?
                            .is_none();
                    if live {
                        return Err(AdapterError::Refused {
                            vendor: self.caps.vendor,
                            reason: "another SCIM user already holds this vendor user (same userName or email)".into(),
                            kind: Refusal::Conflict,
                        });
                    }
                }
                tracing::info!(tenant = %self.tenant(), vendor_id = %u.id, "taking over an existing vendor user");
                Ok((applied_of(&u, on_user), Made::TakenOver))
            }
        }
    }

    /// Links a user to its vendor user, taking it from a deleted SCIM user whose tombstone was
    /// still pending (an IdP re-create after a delete gets the same vendor user back).
    fn link_user(&self, b: &mut Batch, sid: &str, a: &AppliedUser) -> Result<(), AdapterError> {
        if let Some(holder) = self.dir.scim_id(ResourceKind::User, &a.vendor_id)? {
            if holder != sid {
                put::no_tombstone(b, ResourceKind::User, &holder);
                put::no_outbox(b, ResourceKind::User, &holder);
                put::no_applied_user(b, &holder);
                if let Some(v) = self.dir.vendor_id(ResourceKind::User, &holder)? {
                    self.dir.unlink(b, ResourceKind::User, &holder, &v);
                }
            }
        }
        put::not_gone(b, &a.vendor_id);
        self.dir.link(b, ResourceKind::User, sid, &a.vendor_id);
        put::applied_user(b, sid, a);
        Ok(())
    }

    /// Where membership lives on the groups, a new vendor user joins its groups through them
    /// (audited with the actor that made the user).
    fn after_user_created(
        &self,
        b: &mut Batch,
        desired: &DesiredUser,
        actor: Actor,
    ) -> Result<(), AdapterError> {
        if self.caps.membership == MembershipModel::OnGroup {
            for g in &desired.group_sids {
                self.mark(b, ResourceKind::Group, g, "membership", actor)?;
            }
            if !desired.group_sids.is_empty() {
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Closes the gap between an existing vendor user and the desired one.
    async fn align_user(
        &self,
        table: &RoleTable,
        sid: &str,
        desired: &DesiredUser,
        mut applied: AppliedUser,
        cause: &str,
        actor: Actor,
    ) -> Result<(), AdapterError> {
        let vid = applied.vendor_id.clone();
        if !desired.active && self.caps.deactivation == Deactivation::Delete {
            // Write-ahead: killed after the vendor's delete and before the unlink, the next
            // pass must not trust "active" (an update then meets 404 and creates it again).
            self.forget(sid, &applied, |a| a.active = None).await?;
            let removed = self.adapter.delete_user(&vid).await?;
            let audit = match self.removal_kept(
                sid,
                &desired.profile.login,
                &vid,
                &removed,
                (cause, actor),
            ) {
                kept if !kept.is_empty() => kept,
                _ => vec![self
                    .user_entry(
                        AuditEvent::UserDeactivated,
                        (sid, &desired.profile.login, &vid),
                        (cause, actor),
                    )
                    .before(match applied.active {
                        Some(a) => json!({ "active": a }),
                        None => Value::Null,
                    })
                    .after(json!({ "active": false }))
                    .detail(format!(
                        "{} deactivates by deleting the vendor user",
                        self.caps.vendor
                    ))],
            };
            let mut b = Batch::default();
            self.dir.unlink(&mut b, ResourceKind::User, sid, &vid);
            put::gone(&mut b, &vid);
            put::no_applied_user(&mut b, sid);
            put::no_outbox(&mut b, ResourceKind::User, sid);
            return Ok(self.commit_step(ResourceKind::User, sid, b, audit).await?);
        }
        if desired.active && applied.active == Some(false) && self.caps.reactivation_strips_role {
            applied.role = None;
        }
        let mut change = UserChange::default();
        let view = self.adapter.vendor_view(&desired.profile);
        let fields = profile_diff(&view, applied.profile.as_ref());
        if !fields.is_empty() {
            change.profile = Some(desired.profile.clone());
            change.changed_fields = fields;
        }
        if matches!(
            self.caps.deactivation,
            Deactivation::Flag | Deactivation::Delete
        ) && applied.active != Some(desired.active)
        {
            change.active = Some(desired.active);
        }
        let role_to = table.change(applied.role.as_deref(), desired.role.clone());
        let role_before = applied.role.clone();
        if self.caps.role == RoleModel::Attribute {
            change.role = role_to.clone();
        }
        if self.caps.membership == MembershipModel::OnUser {
            let list = self.vendor_group_list(desired, applied.groups.as_deref())?;
            let differs = applied.groups.as_ref().is_none_or(|g| {
                g.iter().collect::<HashSet<_>>() != list.iter().collect::<HashSet<_>>()
            });
            if differs {
                change.groups = Some(list);
            }
        }
        if !desired.active && !self.caps.writable_while_inactive {
            change.profile = None;
            change.changed_fields.clear();
            change.groups = None;
        }
        let mut audit = Vec::new();
        if !change.is_empty() {
            // Write-ahead: what is about to be sent is unknown until the vendor confirms it, so
            // a crash or a lost answer makes the next pass send it again, whatever the desired
            // state is by then (a value changed and changed back is still sent).
            self.forget(sid, &applied, |a| {
                if change.profile.is_some() {
                    a.profile = None;
                }
                if change.active.is_some() {
                    a.active = None;
                }
                if change.role.is_some() {
                    a.role = None;
                }
                if change.groups.is_some() {
                    a.groups = None;
                }
            })
            .await?;
            match self.adapter.update_user(&vid, &change).await {
                Ok(answer) => {
                    let was = applied.clone();
                    let who = (sid, desired.profile.login.as_str(), vid.as_str());
                    if change.profile.is_some() {
                        let old = was.profile.as_ref();
                        audit.push(
                            self.user_entry(AuditEvent::UserUpdated, who, (cause, actor))
                                .before(match old {
                                    Some(p) => Value::Object(profile_fields(
                                        p,
                                        Some(&change.changed_fields),
                                    )),
                                    None => Value::Null,
                                })
                                .after(Value::Object(profile_fields(
                                    &view,
                                    Some(&change.changed_fields),
                                ))),
                        );
                    }
                    if let Some(a) = change.active {
                        let event = if a {
                            AuditEvent::UserReactivated
                        } else {
                            AuditEvent::UserDeactivated
                        };
                        audit.push(
                            self.user_entry(event, who, (cause, actor))
                                .before(match was.active {
                                    Some(b) => json!({ "active": b }),
                                    None => Value::Null,
                                })
                                .after(json!({ "active": a })),
                        );
                    }
                    if change.profile.is_some() {
                        applied.profile = Some(view.clone());
                    }
                    if let Some(a) = change.active {
                        applied.active = Some(a);
                    }
                    if let Some(r) = &change.role {
                        applied.role = Some(r.clone());
                    }
                    if let Some(g) = &change.groups {
                        applied.groups = Some(g.clone());
                    }
                    if let Some(u) = answer {
                        if let Some(r) = u.role {
                            applied.role = Some(r);
                        }
                        if let Some(g) = u.groups.filter(|_| change.groups.is_some()) {
                            applied.groups = Some(g);
                        }
                    }
                    if let (Some(_), Some(now)) = (&change.groups, &applied.groups) {
                        audit.extend(self.membership_entries(
                            who,
                            was.groups.as_deref(),
                            now,
                            (cause, actor),
                        )?);
                    }
                }
                Err(AdapterError::Gone) => {
                    // Deleted at the vendor behind our back: drop the link; the next pass
                    // creates it again (the IdP still wants it).
                    let mut b = Batch::default();
                    self.dir.unlink(&mut b, ResourceKind::User, sid, &vid);
                    put::no_applied_user(&mut b, sid);
                    self.commit_step(ResourceKind::User, sid, b, Vec::new())
                        .await?;
                    return Err(AdapterError::Gone);
                }
                Err(e @ AdapterError::Refused { .. }) => {
                    // Refused: not applied, so what was known before still holds.
                    let mut b = Batch::default();
                    put::applied_user(&mut b, sid, &applied);
                    self.commit_step(ResourceKind::User, sid, b, Vec::new())
                        .await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            // The answer showed a role changed at the vendor since the last observe (by hand):
            // closed now, in one more pass, rather than recorded as applied, where the next
            // observe would see nothing new to correct.
            if role_to.is_none()
                && table
                    .change(applied.role.as_deref(), desired.role.clone())
                    .is_some()
            {
                if !audit.is_empty() {
                    // What this call changed is recorded before the next pass begins.
                    let mut b = Batch::default();
                    put::applied_user(&mut b, sid, &applied);
                    self.commit_step(ResourceKind::User, sid, b, std::mem::take(&mut audit))
                        .await?;
                }
                return Box::pin(self.align_user(table, sid, desired, applied, cause, actor)).await;
            }
        }
        if self.caps.role == RoleModel::Groups {
            if let Some(to) = &role_to {
                self.forget(sid, &applied, |a| a.role = None).await?;
                // Out of the old role group first: a vendor that refuses that (Metabase keeps
                // its last admin) leaves the user in its one role group, not in two. A crash
                // in between leaves the role unknown, so the next pass sends both again.
                for other in table.role_ids().filter(|r| *r != to) {
                    if applied.role.as_deref() == Some(other) || applied.role.is_none() {
                        self.adapter
                            .change_members(other, &[], std::slice::from_ref(&vid))
                            .await?;
                    }
                }
                if to != NO_ROLE {
                    self.adapter
                        .change_members(to, std::slice::from_ref(&vid), &[])
                        .await?;
                }
                applied.role = Some(to.clone());
            }
        }
        if let Some(to) = &role_to {
            audit.push(self.audit_entry(
                table,
                (sid, &desired.profile.login, &vid),
                role_before.as_deref(),
                to,
                (cause, actor),
            ));
        }
        let mut b = Batch::default();
        put::applied_user(&mut b, sid, &applied);
        put::made(&mut b, sid);
        put::no_outbox(&mut b, ResourceKind::User, sid);
        Ok(self.commit_step(ResourceKind::User, sid, b, audit).await?)
    }

    /// The full vendor group list of a user (membership on the user): the mirrored groups it is
    /// in, plus the vendor's groups the bridge does not mirror (kept as they are).
    fn vendor_group_list(
        &self,
        desired: &DesiredUser,
        applied: Option<&[String]>,
    ) -> Result<Vec<String>, AdapterError> {
        let mut out: Vec<String> = Vec::new();
        for vg in applied.unwrap_or_default() {
            if self.dir.scim_id(ResourceKind::Group, vg)?.is_none() && !out.contains(vg) {
                out.push(vg.clone());
            }
        }
        for vg in &desired.groups {
            if !out.contains(vg) {
                out.push(vg.clone());
            }
        }
        Ok(out)
    }

    /// A user the IdP deleted: removed or deactivated at the vendor, as the tenant says.
    async fn converge_deleted_user(&self, sid: &str, mut t: Tombstone) -> Result<(), AdapterError> {
        let mut b = Batch::default();
        let mut audit = Vec::new();
        if t.vendor_id.is_none() {
            // A create still in flight when the IdP deleted the user may have linked it since.
            t.vendor_id = self.dir.vendor_id(ResourceKind::User, sid)?;
        }
        // A create rolled back before it was finished: what it made goes, whatever the
        // tenant's deprovisioning (the IdP never had this user).
        let removal = if t.purge {
            Deactivation::Delete
        } else {
            self.caps.removal.clone()
        };
        put::made(&mut b, sid);
        let (cause, actor) = self.cause_of(ResourceKind::User, sid)?;
        let login = t
            .profile
            .as_ref()
            .map_or(t.name.as_str(), |p| p.login.as_str())
            .to_string();
        let was = Records(&self.dir).applied_user(sid)?;
        if let Some(vid) = &t.vendor_id {
            let who = (sid, login.as_str(), vid.as_str());
            match &removal {
                Deactivation::Delete => {
                    let removed = self.adapter.delete_user(vid).await?;
                    audit = self.removal_kept(sid, &login, vid, &removed, (&cause, actor));
                    if audit.is_empty() {
                        audit.push(self.user_entry(AuditEvent::UserDeleted, who, (&cause, actor)));
                    }
                    // An observe that read the vendor before this delete must not adopt it
                    // back once it is unlinked.
                    put::gone(&mut b, vid);
                }
                Deactivation::Flag => {
                    let change = UserChange {
                        active: Some(false),
                        ..UserChange::default()
                    };
                    match self.adapter.update_user(vid, &change).await {
                        Ok(_) => audit.push(
                            self.user_entry(AuditEvent::UserDeactivated, who, (&cause, actor))
                                .before(match was.as_ref().and_then(|a| a.active) {
                                    Some(a) => json!({ "active": a }),
                                    None => Value::Null,
                                })
                                .after(json!({ "active": false })),
                        ),
                        Err(AdapterError::Gone) => {}
                        Err(e) => return Err(e),
                    }
                    // The vendor keeps it, deactivated: observe must not adopt it back.
                    if self.vendor_user_is_ours(sid, vid)? {
                        put::gone(&mut b, vid);
                    }
                }
                Deactivation::Role(r) => {
                    let change = UserChange {
                        role: Some(r.clone()),
                        ..UserChange::default()
                    };
                    match self.adapter.update_user(vid, &change).await {
                        Ok(_) => {
                            let name = |id: &str| {
                                self.role_table()
                                    .map_or_else(|_| id.to_string(), |t| t.name(id))
                            };
                            let from = was.as_ref().and_then(|a| a.role.as_deref()).map(name);
                            audit.push(
                                self.user_entry(AuditEvent::UserDeactivated, who, (&cause, actor))
                                    .role_move(from, name(r)),
                            );
                        }
                        Err(AdapterError::Gone) => {}
                        Err(e) => return Err(e),
                    }
                    if self.vendor_user_is_ours(sid, vid)? {
                        put::gone(&mut b, vid);
                    }
                }
            }
            self.release_vendor_user(&mut b, sid, vid)?;
        } else if let Some(p) = &t.profile {
            // Never confirmed: find it by login; an active leftover of an ambiguous create is
            // removed or deactivated like a mapped one.
            if let Some(u) = self.adapter.find_user(p).await? {
                if self
                    .dir
                    .scim_id(ResourceKind::User, &u.id)?
                    .is_none_or(|h| h == sid)
                {
                    let kept = Tombstone {
                        vendor_id: Some(u.id.clone()),
                        ..t.clone()
                    };
                    return Box::pin(self.converge_deleted_user(sid, kept)).await;
                }
            }
        }
        put::no_tombstone(&mut b, ResourceKind::User, sid);
        put::no_applied_user(&mut b, sid);
        put::no_outbox(&mut b, ResourceKind::User, sid);
        Ok(self.commit_step(ResourceKind::User, sid, b, audit).await?)
    }

    /// The audit record of a delete the vendor answered by keeping the user without access
    /// (none when it was removed). The IdP's delete stands either way.
    fn removal_kept(
        &self,
        sid: &str,
        login: &str,
        vid: &str,
        removed: &Removed,
        (cause, actor): (&str, Actor),
    ) -> Vec<AuditEntry> {
        let Removed::Kept { reason } = removed else {
            return Vec::new();
        };
        self.counters.kept.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(tenant = %self.tenant(), user = %sid, %reason, "the vendor kept a user the IdP deleted");
        vec![self
            .user_entry(AuditEvent::RemovalKept, (sid, login, vid), (cause, actor))
            .detail(reason.clone())]
    }

    /// Commits the applied state of a user with what is about to be sent made unknown.
    async fn forget(
        &self,
        sid: &str,
        applied: &AppliedUser,
        unknown: impl FnOnce(&mut AppliedUser),
    ) -> Result<(), StoreError> {
        let mut a = applied.clone();
        unknown(&mut a);
        let mut b = Batch::default();
        put::applied_user(&mut b, sid, &a);
        self.commit_step(ResourceKind::User, sid, b, Vec::new())
            .await
    }

    /// A group deleted at the vendor behind our back: the link and what was confirmed go, so
    /// the next pass creates it again (the IdP still has it). Other errors pass through.
    async fn group_gone(
        &self,
        sid: &str,
        vid: &str,
        e: AdapterError,
    ) -> Result<AdapterError, StoreError> {
        if e != AdapterError::Gone {
            return Ok(e);
        }
        let mut b = Batch::default();
        self.dir.unlink(&mut b, ResourceKind::Group, sid, vid);
        put::no_applied_group(&mut b, sid);
        for (usid, _) in Records(&self.dir).applied_members(sid)? {
            put::no_member(&mut b, sid, &usid);
        }
        self.commit_step(ResourceKind::Group, sid, b, Vec::new())
            .await?;
        Ok(AdapterError::Gone)
    }

    /// Whether a vendor user is still linked to `sid` (or to nobody).
    fn vendor_user_is_ours(&self, sid: &str, vid: &str) -> Result<bool, StoreError> {
        Ok(self
            .dir
            .scim_id(ResourceKind::User, vid)?
            .is_none_or(|h| h == sid))
    }

    /// Drops `sid`'s link to a vendor user, leaving the vendor side alone when another SCIM
    /// user has taken it over since.
    fn release_vendor_user(&self, b: &mut Batch, sid: &str, vid: &str) -> Result<(), StoreError> {
        if self.vendor_user_is_ours(sid, vid)? {
            self.dir.unlink(b, ResourceKind::User, sid, vid);
        } else {
            self.dir.unlink_scim_side(b, ResourceKind::User, sid);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Groups
    // -----------------------------------------------------------------------------------------

    async fn converge_group(&self, sid: &str) -> Result<(), AdapterError> {
        let rec = Records(&self.dir);
        let (cause, actor) = self.cause_of(ResourceKind::Group, sid)?;
        let mut audit = Vec::new();
        if let Some(t) = rec.tombstone(ResourceKind::Group, sid)? {
            let mut b = Batch::default();
            // A create in flight when the IdP deleted the group may have linked it since; one
            // never confirmed is found by name (an ambiguous create may have made it).
            let mut vid = t
                .vendor_id
                .clone()
                .or(self.dir.vendor_id(ResourceKind::Group, sid)?);
            if vid.is_none() && !t.name.is_empty() {
                if let Some(g) = self.adapter.find_group(&t.name).await? {
                    if self
                        .dir
                        .scim_id(ResourceKind::Group, &g.id)?
                        .is_none_or(|h| h == sid)
                    {
                        vid = Some(g.id);
                    }
                }
            }
            if let Some(vid) = &vid {
                // Unknown (`?`) memberships included: removing a non-member is a no-op.
                let members: Vec<String> = rec
                    .applied_members(sid)?
                    .into_iter()
                    .map(|(_, v)| v.trim_start_matches('?').to_string())
                    .collect();
                self.adapter.delete_group(vid, &members).await?;
                audit.push(
                    AuditEntry::new(AuditEvent::GroupDeleted, actor.as_str(), &cause)
                        .group(sid, &t.name, vid)
                        .before(json!({ "name": t.name })),
                );
                if self
                    .dir
                    .scim_id(ResourceKind::Group, vid)?
                    .is_none_or(|h| h == sid)
                {
                    self.dir.unlink(&mut b, ResourceKind::Group, sid, vid);
                } else {
                    self.dir.unlink_scim_side(&mut b, ResourceKind::Group, sid);
                }
            }
            for (usid, _) in rec.applied_members(sid)? {
                put::no_member(&mut b, sid, &usid);
            }
            put::no_tombstone(&mut b, ResourceKind::Group, sid);
            put::no_applied_group(&mut b, sid);
            put::no_outbox(&mut b, ResourceKind::Group, sid);
            return Ok(self.commit_step(ResourceKind::Group, sid, b, audit).await?);
        }
        let Some(doc) = self.dir.load(ResourceKind::Group, sid)? else {
            let mut b = Batch::default();
            put::no_outbox(&mut b, ResourceKind::Group, sid);
            return Ok(self
                .commit_step(ResourceKind::Group, sid, b, Vec::new())
                .await?);
        };
        let name = str_at(&doc, "displayName").unwrap_or_default().to_string();
        let mut applied = match self.dir.vendor_id(ResourceKind::Group, sid)? {
            Some(vid) => rec.applied_group(sid)?.unwrap_or(AppliedGroup {
                vendor_id: vid,
                name: String::new(),
            }),
            None => {
                let g = match self.adapter.create_group(&name).await? {
                    Created::New(g) => {
                        audit.push(
                            AuditEntry::new(AuditEvent::GroupCreated, actor.as_str(), &cause)
                                .group(sid, &name, &g.id)
                                .after(json!({ "name": g.name })),
                        );
                        g
                    }
                    Created::Exists(g) => {
                        if let Some(holder) = self.dir.scim_id(ResourceKind::Group, &g.id)? {
                            if holder != sid
                                && self.dir.load(ResourceKind::Group, &holder)?.is_some()
                            {
                                return Err(AdapterError::Refused {
                                    vendor: self.caps.vendor,
                                    reason: "a group with this name already exists".into(),
                                    kind: Refusal::Conflict,
                                });
                            }
                        }
                        tracing::info!(tenant = %self.tenant(), vendor_id = %g.id, "taking over an existing vendor group");
                        g
                    }
                };
                let applied = AppliedGroup {
                    vendor_id: g.id.clone(),
                    name: g.name.clone(),
                };
                let mut b = Batch::default();
                self.dir.link(&mut b, ResourceKind::Group, sid, &g.id);
                put::applied_group(&mut b, sid, &applied);
                if self.caps.membership == MembershipModel::OnUser {
                    // Members' group lists now have this group to name.
                    for m in self.dir.member_ids(sid)? {
                        if self.dir.load(ResourceKind::User, &m)?.is_some() {
                            self.mark(
                                &mut b,
                                ResourceKind::User,
                                &m,
                                &format!("membership of group \"{name}\""),
                                Actor::Idp,
                            )?;
                        }
                    }
                    self.wake.notify_one();
                }
                self.commit_step(ResourceKind::Group, sid, b, std::mem::take(&mut audit))
                    .await?;
                applied
            }
        };
        if applied.name != name {
            // Write-ahead: the name is unknown until the rename is confirmed.
            let mut b = Batch::default();
            put::applied_group(
                &mut b,
                sid,
                &AppliedGroup {
                    name: String::new(),
                    ..applied.clone()
                },
            );
            self.commit_step(ResourceKind::Group, sid, b, Vec::new())
                .await?;
            if let Err(e) = self.adapter.rename_group(&applied.vendor_id, &name).await {
                return Err(self.group_gone(sid, &applied.vendor_id, e).await?);
            }
            let renamed = AuditEntry::new(AuditEvent::GroupRenamed, actor.as_str(), &cause)
                .group(sid, &name, &applied.vendor_id)
                .before(if applied.name.is_empty() {
                    Value::Null
                } else {
                    json!({ "name": applied.name })
                })
                .after(json!({ "name": name }));
            applied.name = name.clone();
            // Recorded at once: a later step of this pass may fail and return.
            let mut b = Batch::default();
            put::applied_group(&mut b, sid, &applied);
            self.commit_step(ResourceKind::Group, sid, b, vec![renamed])
                .await?;
        }
        let mut b = Batch::default();
        if self.caps.membership == MembershipModel::OnGroup {
            let mut confirmed = rec.applied_members(sid)?;
            let verifying = self.cause_of(ResourceKind::Group, sid)?.0 == VERIFY_CAUSE;
            // Memberships unknown before this pass and settled by reading the vendor.
            let mut unsettled: Vec<(String, String)> = Vec::new();
            if confirmed.iter().any(|(_, v)| v.starts_with('?')) {
                // Answers were lost (a timeout, a kill): a vendor that took its time may still
                // have run those calls, in any order with later ones. What it has now settles
                // them, where it can say; otherwise they are sent again below.
                let at_vendor = match self.adapter.group_members(&applied.vendor_id).await {
                    Err(e) => return Err(self.group_gone(sid, &applied.vendor_id, e).await?),
                    Ok(m) => m,
                };
                if let Some(at_vendor) = at_vendor {
                    unsettled = confirmed
                        .iter()
                        .filter_map(|(u, v)| {
                            v.strip_prefix('?').map(|v| (u.clone(), v.to_string()))
                        })
                        .collect();
                    let at_vendor: HashSet<&str> = at_vendor.iter().map(String::as_str).collect();
                    confirmed = confirmed
                        .into_iter()
                        .filter_map(|(u, v)| match v.strip_prefix('?') {
                            Some(vid) if at_vendor.contains(vid) => Some((u, vid.to_string())),
                            Some(_) => None,
                            None => Some((u, v)),
                        })
                        .collect();
                }
            }
            let mut want: Vec<(String, String)> = Vec::new();
            for m in self.dir.member_ids(sid)? {
                if self.dir.load(ResourceKind::User, &m)?.is_none() {
                    continue;
                }
                if let Some(v) = self.dir.vendor_id(ResourceKind::User, &m)? {
                    want.push((m, v));
                }
            }
            // Confirmed for the vendor user the member has now (a user deleted and created
            // again at the vendor has a new id, and is not a member yet). A record marked
            // `?` is a change whose answer was lost: added again if wanted, removed if not.
            let have: HashSet<(&str, &str)> = confirmed
                .iter()
                .map(|(u, v)| (u.as_str(), v.as_str()))
                .collect();
            let want_ids: HashSet<&str> = want.iter().map(|(u, _)| u.as_str()).collect();
            let add: Vec<(String, String)> = want
                .iter()
                .filter(|(u, v)| !have.contains(&(u.as_str(), v.as_str())))
                .cloned()
                .collect();
            // A vendor user another member holds now (a user deleted and created again, which
            // took it over) stays: only the old record goes, without a call — sending its
            // removal with the new member's add would undo the add.
            let wanted_vids: HashSet<&str> = want.iter().map(|(_, v)| v.as_str()).collect();
            let (remove, handed_over): (Vec<Membership>, Vec<Membership>) = confirmed
                .iter()
                .filter(|(u, _)| !want_ids.contains(u.as_str()))
                .map(|(u, v)| (u.clone(), v.trim_start_matches('?').to_string()))
                .partition(|(_, v)| !wanted_vids.contains(v.as_str()));
            for (u, _) in &handed_over {
                put::no_member(&mut b, sid, u);
            }
            if !add.is_empty() || !remove.is_empty() {
                let add_v: Vec<String> = add.iter().map(|(_, v)| v.clone()).collect();
                let remove_v: Vec<String> = remove.iter().map(|(_, v)| v.clone()).collect();
                // Write-ahead: these memberships are unknown until the vendor confirms them.
                let mut u = Batch::default();
                for (m, v) in add.iter().chain(remove.iter()) {
                    put::member(&mut u, sid, m, &format!("?{v}"));
                }
                self.commit_step(ResourceKind::Group, sid, u, Vec::new())
                    .await?;
                if let Err(e) = self
                    .adapter
                    .change_members(&applied.vendor_id, &add_v, &remove_v)
                    .await
                {
                    return Err(self.group_gone(sid, &applied.vendor_id, e).await?);
                }
                for (u, v) in &add {
                    put::member(&mut b, sid, u, v);
                }
                for (u, _) in &remove {
                    put::no_member(&mut b, sid, u);
                }
                let group = json!({
                    "group": name, "group_id": sid, "group_vendor_id": applied.vendor_id,
                });
                for (u, v) in &add {
                    let login = self.login_of(u)?;
                    audit.push(
                        self.user_entry(AuditEvent::MemberAdded, (u, &login, v), (&cause, actor))
                            .after(group.clone()),
                    );
                }
                for (u, v) in &remove {
                    let login = self.login_of(u)?;
                    audit.push(
                        self.user_entry(AuditEvent::MemberRemoved, (u, &login, v), (&cause, actor))
                            .before(group.clone()),
                    );
                }
            }
            // Changes whose answers were lost, settled by reading the vendor without a call
            // now: the vendor made them (or was already so), recorded as found — at the second
            // read only, which is the one that settles them for good (the first one schedules it).
            let settled_in: HashSet<&str> = confirmed.iter().map(|(u, _)| u.as_str()).collect();
            for (u, v) in unsettled.iter().filter(|_| verifying) {
                let event = match (
                    settled_in.contains(u.as_str()),
                    want_ids.contains(u.as_str()),
                ) {
                    (true, true) => AuditEvent::MemberAdded,
                    (false, false) => AuditEvent::MemberRemoved,
                    _ => continue,
                };
                let group = json!({
                    "group": name, "group_id": sid, "group_vendor_id": applied.vendor_id,
                });
                let login = self.login_of(u)?;
                let e = self.user_entry(event, (u, &login, v), (&cause, actor));
                let e = match event {
                    AuditEvent::MemberAdded => e.after(group),
                    _ => e.before(group),
                };
                audit.push(
                    e.detail("an earlier call's answer was lost; settled by reading the vendor"),
                );
            }
            if !unsettled.is_empty() && !verifying {
                // Read once more a little later (VERIFY_AFTER_MS): unknown until then.
                for (u, v) in &unsettled {
                    put::member(&mut b, sid, u, &format!("?{v}"));
                }
                let mut again = OutboxEntry::new(VERIFY_CAUSE, Actor::Sync);
                again.next_ms = now_ms() + VERIFY_AFTER_MS;
                put::applied_group(&mut b, sid, &applied);
                put::outbox(&mut b, ResourceKind::Group, sid, &again);
                self.commit_step(ResourceKind::Group, sid, b, audit).await?;
                // An inline reconcile queues this re-read: the delivery loop, idle for up to
                // 30 s (delivery::IDLE), must see its due time.
                self.wake.notify_one();
                return Ok(());
            }
        }
        put::applied_group(&mut b, sid, &applied);
        put::no_outbox(&mut b, ResourceKind::Group, sid);
        Ok(self.commit_step(ResourceKind::Group, sid, b, audit).await?)
    }
}

/// The applied state of a vendor user as the vendor showed it.
pub(crate) fn applied_of(u: &VendorUser, on_user: bool) -> AppliedUser {
    AppliedUser {
        vendor_id: u.id.clone(),
        profile: u.profile.clone(),
        active: u.active,
        role: u.role.clone(),
        groups: if on_user { u.groups.clone() } else { None },
        last_login: u.last_login.clone(),
    }
}

/// The profile fields that differ (all when nothing is known).
pub(crate) fn profile_diff(want: &Profile, have: Option<&Profile>) -> Vec<&'static str> {
    let Some(have) = have else {
        return vec![
            "login",
            "email",
            "given_name",
            "family_name",
            "display_name",
            "attributes",
        ];
    };
    let mut out = Vec::new();
    // userName is not case-exact (RFC 7643 §4.1.1), and vendors may keep another case.
    if !want.login.eq_ignore_ascii_case(&have.login) {
        out.push("login");
    }
    if want.email != have.email {
        out.push("email");
    }
    if want.given_name != have.given_name {
        out.push("given_name");
    }
    if want.family_name != have.family_name {
        out.push("family_name");
    }
    if want.display_name != have.display_name {
        out.push("display_name");
    }
    if want.attributes != have.attributes {
        out.push("attributes");
    }
    out
}

/// The fields of a profile as a JSON object (`only`: just these), for audit records.
fn profile_fields(p: &Profile, only: Option<&[&'static str]>) -> Map<String, Value> {
    let Ok(Value::Object(all)) = serde_json::to_value(p) else {
        return Map::new();
    };
    all.into_iter()
        .filter(|(k, v)| match only {
            Some(only) => only.contains(&k.as_str()),
            None => !v.is_null(),
        })
        .collect()
}

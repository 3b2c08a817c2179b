//! The write path: what an IdP write does before it is answered (see the module docs of
//! [`super`]): validate, commit the desired state with its outbox mark, deliver inline within the
//! deadline, make it durable, and answer — or roll back a change the vendor refused for good.

use super::adapter::{self, AdapterError};
use super::state::{put, Actor, Records, Tombstone};
use super::{unavailable_answer, Engine, ObjectGuard, FAN_OUT};
use crate::config::OnVendorUnavailable;
use crate::connector::{Precondition, RequestContext};
use crate::scim::patch::MemberOp;
use crate::scim::resource::strip_unreturnable;
use crate::scim::schema::ResourceKind;
use crate::scim::{ScimError, ScimResult};
use crate::store::directory::{index_keys, str_at, Directory};
use crate::store::Batch;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

impl Engine {
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
        if self.settings.dry_run {
            // Nothing goes to the vendor: the committed desired state and its outbox mark are
            // the plan, and the IdP is answered as if the vendor had taken it.
            drop(guard);
            return Inline::Done;
        }
        // While the tenant's start-up check still runs, it is the one session with the vendor
        // (`Engine::await_start_check`): the write waits in the outbox for its answer.
        let checking = self
            .awaits_start_check()
            .then(|| "the tenant's start-up check is still running".to_string());
        if let Some(reason) = checking
            .or_else(|| self.adapter.unavailable())
            .or_else(|| self.stalled())
        {
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
        let answered = tokio::time::timeout(self.settings.inline_deadline, rx).await;
        if answered.is_ok() {
            self.note_stall(false);
        }
        match answered {
            Ok(Ok(Ok(()))) => Inline::Done,
            Ok(Ok(Err(AdapterError::Refused {
                vendor,
                reason,
                kind,
            }))) => Inline::Refused(kind.scim_error(vendor, &reason)),
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
            Err(_) => {
                self.note_stall(true);
                Inline::Queued {
                    reason: format!(
                        "the vendor did not answer within {} ms",
                        self.settings.inline_deadline.as_millis()
                    ),
                    retry_after: None,
                }
            }
        }
    }

    /// Reconciles users one by one under their locks, `FAN_OUT` at a time.
    /// Nothing is reconciled in a dry run (observe's corrections stay in the outbox, the plan).
    pub(crate) async fn reconcile_users(self: &Arc<Self>, sids: &[String]) {
        use futures_util::StreamExt;
        if self.settings.dry_run {
            return;
        }
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
        if self.settings.dry_run || self.caps.membership != adapter::MembershipModel::OnGroup {
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

    pub(crate) async fn create_user(
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
    /// A dry run writes nothing to the vendor, so its availability never decides the answer.
    fn refuse_early_if_failing(&self) -> ScimResult<()> {
        if self.settings.on_vendor_unavailable == OnVendorUnavailable::Fail
            && !self.settings.dry_run
        {
            if let Some(reason) = self.adapter.unavailable().or_else(|| self.stalled()) {
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
        // A reconcile past the deadline may still be creating it at the vendor: then the
        // tombstone below finds and removes what it makes.
        let delivering = match kind {
            ResourceKind::User => self.user_locks.is_held(id),
            ResourceKind::Group => self.group_locks.is_held(id),
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
            if vid.is_some() || delivering {
                // Created at the vendor after all (an ambiguous answer, or a create still
                // running): removed there too.
                put::tombstone(
                    &mut batch,
                    kind,
                    id,
                    &Tombstone {
                        vendor_id: vid.clone(),
                        name: match kind {
                            ResourceKind::User => str_at(&doc, "userName"),
                            ResourceKind::Group => str_at(&doc, "displayName"),
                        }
                        .unwrap_or_default()
                        .to_string(),
                        profile: match kind {
                            ResourceKind::User => Self::profile_of(&doc),
                            ResourceKind::Group => None,
                        },
                        // Made by this create and not finished: the IdP never had it.
                        purge: kind == ResourceKind::User
                            && Records(&self.dir).is_being_made(id)?,
                    },
                );
                if let Some(vid) = &vid {
                    self.dir.link(&mut batch, kind, id, vid);
                }
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

    /// Stores a new version of a user (PUT or PATCH result) and delivers it; returns the stored
    /// document.
    pub(crate) async fn update_user(
        self: &Arc<Self>,
        id: &str,
        guard: ObjectGuard,
        old: &Value,
        mut doc: Value,
        cause: &str,
    ) -> ScimResult<Value> {
        let dir = &self.dir;
        strip_unreturnable(&mut doc, dir.schema(ResourceKind::User));
        doc["id"] = Value::String(id.to_string());
        self.check_required(&doc)?;
        self.refuse_early_if_failing()?;
        dir.stamp(ResourceKind::User, &mut doc, Some(old));
        let mut batch = Batch::default();
        dir.write_doc(&mut batch, ResourceKind::User, id, &doc, Some(old));
        self.mark_idp_user(&mut batch, id, cause)?;
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
        dir.load_or_404(ResourceKind::User, id)
    }

    pub(crate) async fn delete_user(
        self: &Arc<Self>,
        id: &str,
        pre: &Precondition,
    ) -> ScimResult<()> {
        let guard = self.user_docs.lock(id).await;
        let dir = &self.dir;
        let old = dir.load_or_404(ResourceKind::User, id)?;
        self.check_precondition(ResourceKind::User, id, &old, pre)?;
        self.refuse_early_if_failing()?;
        let vid = dir.vendor_id(ResourceKind::User, id)?;
        // Where membership lives on the group, the groups drop the member themselves: a vendor
        // that keeps the user (deactivated, unlicensed) would keep it in them, and a re-created
        // user taking it over would inherit them.
        let groups = if self.caps.membership == adapter::MembershipModel::OnGroup {
            dir.groups_of(id)?
        } else {
            Vec::new()
        };
        let mut batch = Batch::default();
        {
            let _g = self.commit_lock.lock();
            dir.delete_entries(&mut batch, ResourceKind::User, id, &old)?;
            put::not_idp_written(&mut batch, id);
            super::plan::forget_takeover(&mut batch, id);
            super::observe::forget_found(&mut batch, id);
            for g in &groups {
                self.mark(
                    &mut batch,
                    ResourceKind::Group,
                    g,
                    "membership of a deleted user",
                    Actor::Idp,
                )?;
            }
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
                            purge: false,
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
                            purge: false,
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
        if !groups.is_empty() {
            self.wake.notify_one();
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
        // A delete is not rolled back, whatever the policy: the IdP's retry of a DELETE would
        // meet a 404. It is kept and delivered ("fail" refuses it only up front, while the
        // vendor is known to be down, before anything is stored).
        if !matches!(inline, Inline::Done) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// RFC 7644 §3.14: the precondition is compared with the version GET returns (a user's
    /// version covers its groups).
    pub(crate) fn check_precondition(
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

    pub(crate) async fn create_group(
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
            self.mark_idp_user(&mut batch, u, &format!("membership of group \"{name}\""))?;
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

    /// Marks a user the IdP writes (the role rules apply to it from now on) with an outbox
    /// entry. A user adopted from the vendor that the IdP writes for the first time is taken
    /// over by this write: noted for the plan, against the entry's start, so that the note
    /// speaks only while this change is pending ([`super::plan`]).
    fn mark_idp_user(
        &self,
        batch: &mut Batch,
        sid: &str,
        cause: &str,
    ) -> Result<(), crate::store::StoreError> {
        let takeover = !Records(&self.dir).is_idp_written(sid)?
            && self.dir.vendor_id(ResourceKind::User, sid)?.is_some();
        put::idp_written(batch, sid);
        let entry = self.mark(batch, ResourceKind::User, sid, cause, Actor::Idp)?;
        if takeover {
            super::plan::note_takeover(batch, sid, entry.since_ms);
        }
        Ok(())
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
    pub(crate) async fn change_group(
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
            self.mark_idp_user(&mut batch, u, &user_cause)?;
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

    pub(crate) async fn delete_group(
        self: &Arc<Self>,
        id: &str,
        pre: &Precondition,
    ) -> ScimResult<()> {
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
                self.mark_idp_user(&mut batch, u, &cause)?;
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
                            purge: false,
                        },
                    );
                    self.mark(&mut batch, ResourceKind::Group, id, "delete", Actor::Idp)?;
                }
                None if Records(dir).outbox(ResourceKind::Group, id)?.is_some() => {
                    // Its create was never confirmed: found by name and removed if it reached
                    // the vendor after all.
                    put::tombstone(
                        &mut batch,
                        ResourceKind::Group,
                        id,
                        &Tombstone {
                            vendor_id: None,
                            name: name.clone(),
                            profile: None,
                            purge: false,
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
        // Kept and delivered, like a user's delete.
        if !matches!(inline, Inline::Done) {
            self.wake.notify_one();
        }
        Ok(())
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

//! What the engine would change at the vendor: the plan (issue 13, CONTRACT §5 `scim-bridge
//! plan`). Terraform's plan/apply is the model: an operator pointing the bridge at an instance
//! with thousands of users sees the creates, takeovers, role moves and deactivations before any
//! is sent (a dry-run tenant), and on any tenant what is still pending or refused.
//!
//! The plan is the outbox read against the desired and the applied state, object by object, the
//! way [`super::reconcile`] would close each gap — without a vendor call: only what the bridge
//! already knows (the directory, what the vendor last confirmed, the role table read at start).
//! A gap the bridge cannot see from there (a vendor user made behind its back with the login of
//! a user it is about to create) shows as the create it would try.
//!
//! The outbox is streamed, never held whole: the counts cover every object, the items only the
//! page asked for ([`Engine::plan_page`]; the build's counts and index are kept and brought up
//! to date by later pages, [`super::plan_cache`]), in the outbox's own key order — users, then groups,
//! each by SCIM id — which is stable between pages. Users come first so that a group's members,
//! most of them users of the same plan when a tenant is onboarded, are known by the time the
//! group is planned (a group of 100,000 members costs no second read of each).

use super::adapter::{Deactivation, MembershipModel, Profile, NO_ROLE};
use super::plan_cache::Built;
use super::reconcile::profile_diff;
use super::role_table::RoleTable;
use super::state::{Actor, AppliedUser, OutboxEntry, Records, Tombstone};
use super::Engine;
use crate::scim::schema::ResourceKind;
use crate::store::directory::{str_at, Directory};
use crate::store::{Batch, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

/// Record of a user adopted from the vendor whose first IdP write is pending: its vendor user
/// is taken over (the role rules govern it from then on). The value is the `since_ms` of the
/// outbox entry that carries the takeover, so the note speaks only while that change is
/// pending; a later change of the same user has a later start.
const TAKEOVER: &str = "adopt/";

/// Changes listed per object at most (a group of 50,000 members pushed at once); the rest are
/// counted in `more_changes` and in the plan's counts.
const MAX_CHANGES_PER_ITEM: usize = 200;

/// The outbox's users and groups (engine records).
const OUTBOX_USERS: &str = "ob/u/";
const OUTBOX_GROUPS: &str = "ob/g/";

/// Notes in `batch` that the write of `sid` takes over an adopted vendor user.
pub(crate) fn note_takeover(batch: &mut Batch, sid: &str, since_ms: u64) {
    Directory::put_record(
        batch,
        &format!("{TAKEOVER}{sid}"),
        since_ms.to_string().as_bytes(),
    );
}

/// Drops the takeover note of a user the IdP deleted.
pub(crate) fn forget_takeover(batch: &mut Batch, sid: &str) {
    Directory::remove_record(batch, &format!("{TAKEOVER}{sid}"));
}

/// One kind of vendor change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new vendor user.
    CreateUser,
    /// An existing vendor user (adopted by observe) taken over by the IdP: the role rules
    /// govern it from now on.
    AdoptUser,
    /// Profile fields sent (`fields`).
    UpdateProfile,
    /// A role moved `from` → `to` (vendor role names).
    MoveRole,
    Deactivate,
    Reactivate,
    /// A user the IdP deleted: removed, or kept without access, as the tenant deprovisions
    /// (`detail`).
    RemoveUser,
    CreateGroup,
    RenameGroup,
    DeleteGroup,
    /// A user put into a mirrored group.
    AddMember,
    /// A user taken out of a mirrored group.
    RemoveMember,
}

impl Action {
    pub const ALL: [Action; 12] = [
        Action::CreateUser,
        Action::AdoptUser,
        Action::UpdateProfile,
        Action::MoveRole,
        Action::Deactivate,
        Action::Reactivate,
        Action::RemoveUser,
        Action::CreateGroup,
        Action::RenameGroup,
        Action::DeleteGroup,
        Action::AddMember,
        Action::RemoveMember,
    ];

    /// The wire name (`create_user`), as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CreateUser => "create_user",
            Action::AdoptUser => "adopt_user",
            Action::UpdateProfile => "update_profile",
            Action::MoveRole => "move_role",
            Action::Deactivate => "deactivate",
            Action::Reactivate => "reactivate",
            Action::RemoveUser => "remove_user",
            Action::CreateGroup => "create_group",
            Action::RenameGroup => "rename_group",
            Action::DeleteGroup => "delete_group",
            Action::AddMember => "add_member",
            Action::RemoveMember => "remove_member",
        }
    }

    /// The action of a wire name (`None` for anything else: a query parameter to refuse).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Words for the text rendering.
    fn words(self) -> &'static str {
        match self {
            Action::CreateUser => "create user",
            Action::AdoptUser => "adopt user",
            Action::UpdateProfile => "update profile",
            Action::MoveRole => "move role",
            Action::Deactivate => "deactivate",
            Action::Reactivate => "reactivate",
            Action::RemoveUser => "remove user",
            Action::CreateGroup => "create group",
            Action::RenameGroup => "rename group",
            Action::DeleteGroup => "delete group",
            Action::AddMember => "add member",
            Action::RemoveMember => "remove member",
        }
    }
}

/// One vendor change of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    /// The value before: a role name (`move_role`, `adopt_user`: the role it holds), a group's
    /// old name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value after: a role name, a group's new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `update_profile`: the fields sent (`email`, `given_name`, `attributes.region`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// `add_member`/`remove_member` on a user: the group's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `add_member`/`remove_member` on a group: the member's login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// How, or under which condition ("after the user's create", "kept deactivated").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Change {
    fn new(action: Action) -> Change {
        Change {
            action,
            from: None,
            to: None,
            fields: Vec::new(),
            group: None,
            member: None,
            detail: None,
        }
    }
    fn from(mut self, v: Option<String>) -> Change {
        self.from = v;
        self
    }
    fn to(mut self, v: Option<String>) -> Change {
        self.to = v;
        self
    }
    fn detail(mut self, d: impl Into<String>) -> Change {
        self.detail = Some(d.into());
        self
    }
}

/// Whether an object's change is held by a dry run, waiting for delivery, or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PlanStatus {
    /// The tenant is a dry run: not sent, and not until `dry_run` is switched off.
    DryRun,
    /// To be delivered: `attempts` so far, the next try (unix ms), the last transient error.
    Pending {
        attempts: u32,
        next_ms: u64,
        last_error: Option<String>,
    },
    /// Refused by the vendor for good, with its reason (an operator may retry it).
    Failed { reason: String },
}

impl PlanStatus {
    /// `dry_run`, `pending` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PlanStatus::DryRun => "dry_run",
            PlanStatus::Pending { .. } => "pending",
            PlanStatus::Failed { .. } => "failed",
        }
    }
}

/// A SCIM object's kind in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    User,
    Group,
}

impl From<ResourceKind> for ObjectKind {
    fn from(k: ResourceKind) -> ObjectKind {
        match k {
            ResourceKind::User => ObjectKind::User,
            ResourceKind::Group => ObjectKind::Group,
        }
    }
}

/// What the engine would do at the vendor for one object of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    pub kind: ObjectKind,
    /// The SCIM id.
    pub id: String,
    /// The user's login or the group's name.
    pub name: String,
    /// The vendor's id, when the object is at the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    pub status: PlanStatus,
    /// What caused it ("patch", "membership of group \"X\"", a drift observe found).
    pub cause: String,
    /// Who asked: `idp`, `sync`, `sweep` or `operator`.
    pub actor: Actor,
    /// When it became pending (unix ms).
    pub since_ms: u64,
    pub changes: Vec<Change>,
    /// Changes left out of `changes` (more than are listed per object); counted in the plan.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_changes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many objects are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub dry_run: u64,
    pub pending: u64,
    pub failed: u64,
}

/// The plan of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub tenant: String,
    pub vendor: String,
    /// The tenant is a dry run: nothing below is sent until `dry_run` is switched off.
    pub dry_run: bool,
    /// When the plan was computed (RFC 3339).
    pub generated_at: String,
    /// Changes by action, every action present (0 when none), over the whole plan.
    pub counts: BTreeMap<Action, u64>,
    /// Objects with a vendor change, by state, over the whole plan.
    pub objects: StatusCounts,
    /// Objects with a vendor change in the whole plan (the pager's total; with a filter, those
    /// that match it).
    pub total_items: u64,
    /// The page: its first item's position, and the items.
    pub offset: u64,
    pub items: Vec<PlanItem>,
    /// What the plan cannot show, when something (the vendor's roles not read yet: no role
    /// moves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Which page of the plan, and which items ([`Engine::plan_query`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanQuery {
    pub offset: u64,
    /// Items on the page (`None`: all).
    pub limit: Option<u64>,
    /// Only objects with a change of this action.
    pub action: Option<Action>,
    /// Only objects in this state (`dry_run`, `pending`, `failed`).
    pub status: Option<String>,
}

/// What the plan reads once per computation: group names and vendor ids (far fewer groups than
/// users, and every user item names its groups).
pub(super) struct Lookups<'a> {
    dir: &'a Directory,
    groups: HashMap<String, GroupFacts>,
    /// The users planned so far, as a group's member list needs them.
    users: HashMap<String, MemberFacts>,
    /// Those of the cached build, when objects are planned against it.
    pub(super) base: Option<&'a HashMap<String, MemberFacts>>,
    /// Ids the items planned so far named besides their own objects and memberships, and which
    /// item named each ([`super::plan_cache::Built::refs`]).
    refs: Vec<(String, ResourceKind, String)>,
}

/// What a planning pass read and named, kept with a build ([`super::plan_cache::Built`]).
pub(super) struct Found {
    pub(super) users: HashMap<String, MemberFacts>,
    /// Group → (name, vendor id), as user items read them.
    pub(super) groups: HashMap<String, GroupFacts>,
    pub(super) refs: Vec<(String, ResourceKind, String)>,
}

/// A group's name (`None`: not in the directory) and vendor id, as a user item reads them.
pub(super) type GroupFacts = (Option<String>, Option<String>);

/// One object's plan: its name (login or group name), its vendor id, and its changes.
type Planned = (String, Option<String>, Vec<Change>);

/// What a group's plan needs to know of a member.
pub(crate) struct MemberFacts {
    login: String,
    vendor_id: Option<String>,
    /// Not at the vendor, and its create is planned.
    to_create: bool,
}

impl<'a> Lookups<'a> {
    pub(super) fn new(dir: &'a Directory) -> Lookups<'a> {
        Lookups {
            dir,
            groups: HashMap::new(),
            users: HashMap::new(),
            base: None,
            refs: Vec::new(),
        }
    }

    /// What planning found: the members' facts, the groups read, the named ids.
    pub(super) fn into_found(self) -> Found {
        Found {
            users: self.users,
            groups: self.groups,
            refs: self.refs,
        }
    }

    /// What is known of user `sid` as a group member.
    fn member(&self, sid: &str) -> Option<&MemberFacts> {
        self.users
            .get(sid)
            .or_else(|| self.base.and_then(|b| b.get(sid)))
    }

    /// A group's (name, vendor id); the name is `None` for a group not in the directory.
    fn group(&mut self, gsid: &str) -> Result<GroupFacts, StoreError> {
        if let Some(g) = self.groups.get(gsid) {
            return Ok(g.clone());
        }
        let facts = group_facts(self.dir, gsid)?;
        // Bounded: a tenant has thousands of groups at most.
        self.groups.insert(gsid.to_string(), facts.clone());
        Ok(facts)
    }
}

/// Group `gsid`'s name and vendor id, read from the directory.
pub(super) fn group_facts(dir: &Directory, gsid: &str) -> Result<GroupFacts, StoreError> {
    let name = dir
        .load(ResourceKind::Group, gsid)?
        .and_then(|d| str_at(&d, "displayName").map(str::to_string));
    Ok((name, dir.vendor_id(ResourceKind::Group, gsid)?))
}

/// Fewer users than this are planned on the caller's thread (threads cost more than they save).
const PLAN_PART_MIN: usize = 4096;

/// A part of the users planned on one thread: their plans (those with changes) and what the
/// groups' plans need to know of them.
struct UsersPlanned {
    items: Vec<(String, PlanItem, Vec<Action>)>,
    found: Found,
}

/// Pages up to this size are planned from the cache; a larger one (the whole plan) is built.
const CACHED_PAGE_MAX: u64 = 1000;

impl Engine {
    /// The whole plan: every object of the outbox with what the engine would do at the vendor.
    pub fn plan(&self) -> Result<Plan, StoreError> {
        self.plan_query(&PlanQuery::default())
    }

    /// One page of the plan (the counts cover the whole plan).
    pub fn plan_page(&self, offset: u64, limit: u64) -> Result<Plan, StoreError> {
        self.plan_query(&PlanQuery {
            offset,
            limit: Some(limit),
            ..PlanQuery::default()
        })
    }

    /// The plan as `query` asks: a page, only one action or state. The outbox is read in its
    /// own order and only the page's items are kept. A page is planned from the last build when
    /// nothing was committed since, or from that build brought up to date with what the commits
    /// since touched ([`super::plan_cache`]); otherwise the plan is built whole.
    pub fn plan_query(&self, query: &PlanQuery) -> Result<Plan, StoreError> {
        let table = self.roles.read().clone();
        let mut plan = Plan {
            tenant: self.settings.tenant.clone(),
            vendor: self.caps.vendor.to_string(),
            dry_run: self.settings.dry_run,
            generated_at: crate::scim::resource::now_timestamp(),
            counts: Action::ALL.into_iter().map(|a| (a, 0)).collect(),
            objects: StatusCounts::default(),
            total_items: 0,
            offset: query.offset,
            items: Vec::new(),
            note: table.is_none().then(|| {
                format!(
                    "{}'s roles are not read yet: role moves are not shown",
                    self.caps.vendor
                )
            }),
        };
        if query.limit.is_none_or(|l| l > CACHED_PAGE_MAX) {
            // The whole plan (the CLI's, an export): built for itself, the cache left alone.
            self.plan_build(table, query, &mut plan)?;
            return Ok(plan);
        }
        let mut cache = self.plan_cache.last.lock();
        if self.plan_bring_up_to_date(&mut cache, &table)? {
            if let Some(built) = cache.as_ref() {
                self.plan_from(built, table.as_deref(), query, &mut plan)?;
                return Ok(plan);
            }
        }
        // The stale build goes first: two builds of a large tenant need not be held at once.
        *cache = None;
        if self.settings.dry_run {
            // Watched before the build reads its generation: every commit the build may miss
            // is in the log for the next page. Only a dry run's plan is kept current: a live
            // tenant's outbox is small, and its log would only grow.
            self.dir.watch_touches();
        }
        *cache = Some(self.plan_build(table, query, &mut plan)?);
        Ok(plan)
    }

    /// Plans every object of the outbox: `query`'s page into `plan`, and the whole into the
    /// returned build.
    fn plan_build(
        &self,
        table: Option<Arc<RoleTable>>,
        query: &PlanQuery,
        plan: &mut Plan,
    ) -> Result<Built, StoreError> {
        let mut built = Built::new(self.dir.generation(), table.clone());
        let table = table.as_deref();
        let end = query
            .limit
            .map_or(u64::MAX, |l| query.offset.saturating_add(l));
        let mut add =
            |built: &mut Built, kind: ResourceKind, sid: &str, item: PlanItem, actions| {
                if !built.add(kind, sid, &item, actions).matches(query) {
                    return;
                }
                let at = plan.total_items;
                plan.total_items += 1;
                if at >= query.offset && at < end {
                    plan.items.push(item);
                }
            };
        let users: Vec<(String, Vec<u8>)> =
            self.dir.records(OUTBOX_USERS).collect::<Result<_, _>>()?;
        let mut look = Lookups::new(&self.dir);
        for part in self.plan_users(table, &users)? {
            built.keep(part.found);
            for (sid, item, actions) in part.items {
                add(&mut built, ResourceKind::User, &sid, item, actions);
            }
        }
        drop(users);
        // Groups after every user: their members' facts are known by then.
        let mut groups = Vec::new();
        look.base = Some(&built.users);
        for kv in self.dir.records(OUTBOX_GROUPS) {
            let (k, v) = kv?;
            let entry = outbox_entry(&k, &v)?;
            let sid = &k[OUTBOX_GROUPS.len()..];
            if let Some((item, actions)) =
                self.plan_item(table, &mut look, ResourceKind::Group, sid, entry)?
            {
                groups.push((sid.to_string(), item, actions));
            }
        }
        let found = look.into_found();
        built.keep(found);
        for (sid, item, actions) in groups {
            add(&mut built, ResourceKind::Group, &sid, item, actions);
        }
        plan.counts = built.counts.clone();
        plan.objects = built.objects.clone();
        self.plan_cache
            .builds
            .whole
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(built)
    }

    /// The plans of the outbox's `users` (key, entry), in their order, in parts planned side by
    /// side on every core: a build plans every object (100,000 users took 2.1–2.3 s on one
    /// core, `tests/dry_run.rs`), and no user's plan depends on another's.
    fn plan_users(
        &self,
        table: Option<&RoleTable>,
        users: &[(String, Vec<u8>)],
    ) -> Result<Vec<UsersPlanned>, StoreError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let part = users.len().div_ceil(threads).max(PLAN_PART_MIN);
        if users.len() <= part {
            return Ok(vec![self.plan_user_part(table, users)?]);
        }
        std::thread::scope(|s| {
            let running: Vec<_> = users
                .chunks(part)
                .map(|p| s.spawn(move || self.plan_user_part(table, p)))
                .collect();
            running
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    fn plan_user_part(
        &self,
        table: Option<&RoleTable>,
        users: &[(String, Vec<u8>)],
    ) -> Result<UsersPlanned, StoreError> {
        let mut look = Lookups::new(&self.dir);
        let mut items = Vec::new();
        for (k, v) in users {
            let entry = outbox_entry(k, v)?;
            let sid = &k[OUTBOX_USERS.len()..];
            if let Some((item, actions)) =
                self.plan_item(table, &mut look, ResourceKind::User, sid, entry)?
            {
                items.push((sid.to_string(), item, actions));
            }
        }
        Ok(UsersPlanned {
            items,
            found: look.into_found(),
        })
    }

    /// `query`'s page from an up-to-date build: its counts, its index filtered, and only the
    /// page's objects planned again.
    fn plan_from(
        &self,
        built: &Built,
        table: Option<&RoleTable>,
        query: &PlanQuery,
        plan: &mut Plan,
    ) -> Result<(), StoreError> {
        plan.counts = built.counts.clone();
        plan.objects = built.objects.clone();
        let end = query
            .limit
            .map_or(u64::MAX, |l| query.offset.saturating_add(l));
        let mut look = Lookups::new(&self.dir);
        look.base = Some(&built.users);
        let rec = Records(&self.dir);
        for (kind, sid) in built.listed(query) {
            let at = plan.total_items;
            plan.total_items += 1;
            if at < query.offset || at >= end {
                continue;
            }
            let Some(entry) = rec.outbox(kind, sid)? else {
                continue;
            };
            if let Some((item, _)) = self.plan_item(table, &mut look, kind, sid, entry)? {
                plan.items.push(item);
            }
        }
        Ok(())
    }

    /// The plan of one object and the actions of all its changes, those past the listed ones
    /// included (`None`: nothing would be sent for it).
    pub(super) fn plan_item(
        &self,
        table: Option<&RoleTable>,
        look: &mut Lookups,
        kind: ResourceKind,
        sid: &str,
        entry: OutboxEntry,
    ) -> Result<Option<(PlanItem, Vec<Action>)>, StoreError> {
        let status = if entry.failed {
            PlanStatus::Failed {
                reason: entry
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "refused by the vendor".into()),
            }
        } else if self.settings.dry_run {
            PlanStatus::DryRun
        } else {
            PlanStatus::Pending {
                attempts: entry.attempts,
                next_ms: entry.next_ms,
                last_error: entry.last_error.clone(),
            }
        };
        let planned = match kind {
            ResourceKind::User => self.plan_user(table, look, sid, &entry)?,
            ResourceKind::Group => self.plan_group(look, sid, &entry)?,
        };
        let Some((name, vendor_id, mut changes)) = planned else {
            return Ok(None);
        };
        if changes.is_empty() {
            return Ok(None);
        }
        let actions: Vec<Action> = changes.iter().map(|c| c.action).collect();
        let more = changes.len().saturating_sub(MAX_CHANGES_PER_ITEM);
        changes.truncate(MAX_CHANGES_PER_ITEM);
        let item = PlanItem {
            kind: kind.into(),
            id: sid.to_string(),
            name,
            vendor_id,
            status,
            cause: entry.cause,
            actor: entry.actor,
            since_ms: entry.since_ms,
            changes,
            more_changes: more as u64,
        };
        Ok(Some((item, actions)))
    }

    /// A user's changes: (login, vendor id, changes); `None` when the user is gone and nothing
    /// is owed to the vendor.
    ///
    /// What this and [`Engine::plan_group`] read of the store must stay keyed by the object's
    /// own id, or reached from it as `super::plan_cache` expands a change (a group's members, a
    /// user's groups, the ids recorded in `Lookups::refs`): a kept plan is brought up to date
    /// from the ids the commits' keys name (`store/touches.rs`).
    fn plan_user(
        &self,
        table: Option<&RoleTable>,
        look: &mut Lookups,
        sid: &str,
        entry: &OutboxEntry,
    ) -> Result<Option<Planned>, StoreError> {
        let rec = Records(&self.dir);
        if let Some(t) = rec.tombstone(ResourceKind::User, sid)? {
            return Ok(Some(self.plan_deleted_user(table, sid, t, entry)?));
        }
        let Some(doc) = self.dir.load(ResourceKind::User, sid)? else {
            return Ok(None);
        };
        let vid = self.dir.vendor_id(ResourceKind::User, sid)?;
        // What reconcile would aim at, read the way it reads it (groups through the plan's
        // cache: one read of each group for all its members).
        let desired = self.desired_user_with(table, sid, &doc, vid.is_none(), |g| {
            let (name, gvid) = look.group(g)?;
            Ok(name.map(|n| (Some(n), gvid)))
        })?;
        let Some(desired) = desired else {
            return Ok(None);
        };
        let login = desired.profile.login.clone();
        let active = desired.active;
        // The desired groups: (name, vendor id).
        let mut groups: Vec<(String, Option<String>)> = Vec::new();
        for g in &desired.group_sids {
            if let (Some(name), gvid) = look.group(g)? {
                groups.push((name, gvid));
            }
        }
        let role_name = |id: &str| -> String {
            match table {
                Some(t) => t.name(id),
                None if id == NO_ROLE => "(no role group)".into(),
                None => id.to_string(),
            }
        };
        let on_user = self.caps.membership == MembershipModel::OnUser;
        let mut changes = Vec::new();
        let to_create = vid.is_none() && (active || self.caps.deactivation != Deactivation::Delete);
        if !on_user {
            look.users.insert(
                sid.to_string(),
                MemberFacts {
                    login: login.clone(),
                    vendor_id: vid.clone(),
                    to_create,
                },
            );
        }

        let Some(vid) = vid else {
            if !to_create {
                // Deprovisioned by deletion and inactive: never made at the vendor.
                return Ok(Some((login, None, changes)));
            }
            let role = desired.role.filter(|r| r != NO_ROLE);
            let mut create = Change::new(Action::CreateUser).to(role.as_deref().map(role_name));
            if !active {
                create = create.detail("inactive");
            }
            changes.push(create);
            if on_user {
                for (name, gvid) in &groups {
                    let mut c = Change::new(Action::AddMember);
                    c.group = Some(name.clone());
                    if gvid.is_none() {
                        c = c.detail("after the group's create");
                    }
                    changes.push(c);
                }
            }
            return Ok(Some((login, None, changes)));
        };

        let mut applied = rec.applied_user(sid)?.unwrap_or(AppliedUser {
            vendor_id: vid.clone(),
            ..AppliedUser::default()
        });
        let takeover = self
            .dir
            .record(&format!("{TAKEOVER}{sid}"))?
            .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok())
            == Some(entry.since_ms);
        if takeover {
            changes
                .push(Change::new(Action::AdoptUser).from(applied.role.as_deref().map(role_name)));
        }
        if !active && self.caps.deactivation == Deactivation::Delete {
            changes.push(Change::new(Action::Deactivate).detail("the vendor user is deleted"));
            return Ok(Some((login, Some(vid), changes)));
        }
        let reactivating = active && applied.active == Some(false);
        if reactivating && self.caps.reactivation_strips_role {
            applied.role = None;
        }
        let writable = active || self.caps.writable_while_inactive;
        let view = self.adapter.vendor_view(&desired.profile);
        let fields = changed_fields(&view, applied.profile.as_ref());
        if !fields.is_empty() && writable {
            let mut c = Change::new(Action::UpdateProfile);
            c.fields = fields;
            changes.push(c);
        }
        let role_to = table.and_then(|t| t.change(applied.role.as_deref(), desired.role.clone()));
        match &self.caps.deactivation {
            Deactivation::Flag | Deactivation::Delete => {
                if !active && applied.active != Some(false) {
                    changes.push(Change::new(Action::Deactivate));
                } else if reactivating {
                    changes.push(Change::new(Action::Reactivate));
                }
            }
            Deactivation::Role(r) => {
                if !active && applied.role.as_deref() != Some(r.as_str()) {
                    changes.push(
                        Change::new(Action::Deactivate)
                            .from(applied.role.as_deref().map(role_name))
                            .to(Some(role_name(r))),
                    );
                } else if active && applied.role.as_deref() == Some(r.as_str()) {
                    changes.push(Change::new(Action::Reactivate));
                }
            }
        }
        let deactivation_role = match &self.caps.deactivation {
            Deactivation::Role(r) => Some(r.as_str()),
            _ => None,
        };
        if let Some(to) = role_to.filter(|to| Some(to.as_str()) != deactivation_role) {
            changes.push(
                Change::new(Action::MoveRole)
                    .from(applied.role.as_deref().map(role_name))
                    .to(Some(role_name(&to))),
            );
        }
        if on_user && writable {
            let have: HashSet<String> = applied
                .groups
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let mut want: HashSet<String> = HashSet::new();
            for (name, gvid) in &groups {
                match gvid {
                    Some(g) => {
                        want.insert(g.clone());
                        if !have.contains(g) {
                            let mut c = Change::new(Action::AddMember);
                            c.group = Some(name.clone());
                            changes.push(c);
                        }
                    }
                    None => {
                        let mut c =
                            Change::new(Action::AddMember).detail("after the group's create");
                        c.group = Some(name.clone());
                        changes.push(c);
                    }
                }
            }
            let mut gone: Vec<&String> = have.iter().filter(|g| !want.contains(*g)).collect();
            gone.sort();
            for g in gone {
                // Named by this item whether mirrored or not: a group mirrored later leaves.
                look.refs
                    .push((g.clone(), ResourceKind::User, sid.to_string()));
                // Only mirrored groups leave: the vendor's own groups are kept as they are.
                let Some(gsid) = self.dir.scim_id(ResourceKind::Group, g)? else {
                    continue;
                };
                look.refs
                    .push((gsid.clone(), ResourceKind::User, sid.to_string()));
                let mut c = Change::new(Action::RemoveMember);
                c.group = Some(look.group(&gsid)?.0.unwrap_or_else(|| g.clone()));
                changes.push(c);
            }
        }
        Ok(Some((login, Some(vid), changes)))
    }

    /// A user the IdP deleted: removed, or kept without access, as the tenant deprovisions.
    fn plan_deleted_user(
        &self,
        table: Option<&RoleTable>,
        sid: &str,
        t: Tombstone,
        entry: &OutboxEntry,
    ) -> Result<Planned, StoreError> {
        let login = t
            .profile
            .as_ref()
            .map_or_else(|| t.name.clone(), |p| p.login.clone());
        let vid = match t.vendor_id {
            Some(v) => Some(v),
            None => self.dir.vendor_id(ResourceKind::User, sid)?,
        };
        let removal = if t.purge {
            Deactivation::Delete
        } else {
            self.caps.removal.clone()
        };
        let how = match &removal {
            Deactivation::Delete => "deleted at the vendor".to_string(),
            Deactivation::Flag => "kept by the vendor, deactivated".to_string(),
            Deactivation::Role(r) => format!(
                "kept by the vendor with the role {}",
                table.map_or_else(|| r.clone(), |t| t.name(r))
            ),
        };
        let mut changes = Vec::new();
        match vid {
            Some(_) => changes.push(Change::new(Action::RemoveUser).detail(how)),
            // Never confirmed at the vendor: something to remove only if a create was tried
            // (its answer lost); created and deleted before any try, nothing is owed.
            None if never_tried(entry) => {}
            None => changes.push(Change::new(Action::RemoveUser).detail(format!(
                "if its unconfirmed create reached the vendor: {how}"
            ))),
        }
        Ok((login, vid, changes))
    }

    /// A group's changes: (name, vendor id, changes); `None` when nothing is owed.
    fn plan_group(
        &self,
        look: &mut Lookups,
        sid: &str,
        entry: &OutboxEntry,
    ) -> Result<Option<Planned>, StoreError> {
        let rec = Records(&self.dir);
        if let Some(t) = rec.tombstone(ResourceKind::Group, sid)? {
            let vid = match t.vendor_id {
                Some(v) => Some(v),
                None => self.dir.vendor_id(ResourceKind::Group, sid)?,
            };
            let mut changes = Vec::new();
            match &vid {
                Some(_) => changes.push(Change::new(Action::DeleteGroup)),
                None if never_tried(entry) => {}
                None => changes.push(
                    Change::new(Action::DeleteGroup)
                        .detail("if its unconfirmed create reached the vendor"),
                ),
            }
            return Ok(Some((t.name, vid, changes)));
        }
        let Some(doc) = self.dir.load(ResourceKind::Group, sid)? else {
            return Ok(None);
        };
        let name = str_at(&doc, "displayName").unwrap_or_default().to_string();
        let vid = self.dir.vendor_id(ResourceKind::Group, sid)?;
        let mut changes = Vec::new();
        match &vid {
            None => changes.push(Change::new(Action::CreateGroup).to(Some(name.clone()))),
            Some(_) => {
                let applied = rec.applied_group(sid)?.map(|a| a.name).unwrap_or_default();
                if applied != name {
                    changes.push(
                        Change::new(Action::RenameGroup)
                            .from(Some(applied).filter(|n| !n.is_empty()))
                            .to(Some(name.clone())),
                    );
                }
            }
        }
        if self.caps.membership == MembershipModel::OnGroup {
            // Confirmed members, `?` (an answer lost) read as there: the vendor is read back
            // before anything is sent for them.
            let confirmed: HashMap<String, String> = rec
                .applied_members(sid)?
                .into_iter()
                .map(|(u, v)| (u, v.trim_start_matches('?').to_string()))
                .collect();
            let mut wanted = HashSet::new();
            for m in self.dir.member_ids(sid)? {
                let facts = match look.member(&m) {
                    Some(f) => f,
                    None => {
                        // Not in the plan: present as it is (a user with nothing pending).
                        let Some(udoc) = self.dir.load(ResourceKind::User, &m)? else {
                            continue;
                        };
                        let facts = MemberFacts {
                            login: str_at(&udoc, "userName").unwrap_or_default().to_string(),
                            vendor_id: self.dir.vendor_id(ResourceKind::User, &m)?,
                            to_create: false,
                        };
                        look.users.entry(m.clone()).or_insert(facts)
                    }
                };
                if facts.vendor_id.is_none() && !facts.to_create {
                    continue;
                }
                wanted.insert(m.clone());
                let there = facts
                    .vendor_id
                    .as_ref()
                    .is_some_and(|v| confirmed.get(&m) == Some(v));
                if !there {
                    let mut c = Change::new(Action::AddMember);
                    c.member = Some(facts.login.clone());
                    if facts.vendor_id.is_none() {
                        c = c.detail("after the user's create");
                    }
                    changes.push(c);
                }
            }
            let mut leaving: Vec<&String> =
                confirmed.keys().filter(|u| !wanted.contains(*u)).collect();
            leaving.sort();
            for u in leaving {
                look.refs
                    .push((u.clone(), ResourceKind::Group, sid.to_string()));
                let login = self
                    .dir
                    .load(ResourceKind::User, u)?
                    .and_then(|d| str_at(&d, "userName").map(str::to_string))
                    .or_else(|| {
                        rec.tombstone(ResourceKind::User, u)
                            .ok()
                            .flatten()
                            .map(|t| t.name)
                    })
                    .unwrap_or_else(|| confirmed[u].clone());
                let mut c = Change::new(Action::RemoveMember);
                c.member = Some(login);
                changes.push(c);
            }
        }
        Ok(Some((name, vid, changes)))
    }
}

/// An outbox entry as stored.
fn outbox_entry(key: &str, value: &[u8]) -> Result<OutboxEntry, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Whether an outbox entry was never tried (created in a dry run, or while nothing was sent).
fn never_tried(entry: &OutboxEntry) -> bool {
    entry.attempts == 0 && entry.last_error.is_none()
}

/// The profile fields reconcile would send ([`profile_diff`]: what the vendor would show for
/// the desired profile against what it last confirmed, every field when nothing is known), for
/// people: mapped attributes named one by one (`attributes.region`), and on a first write only
/// the fields that hold something.
fn changed_fields(want: &Profile, have: Option<&Profile>) -> Vec<String> {
    let mut out = Vec::new();
    for field in profile_diff(want, have) {
        match field {
            "attributes" => {
                let keys: std::collections::BTreeSet<&String> = want
                    .attributes
                    .keys()
                    .chain(have.iter().flat_map(|h| h.attributes.keys()))
                    .collect();
                for k in keys {
                    if want.attributes.get(k) != have.and_then(|h| h.attributes.get(k)) {
                        out.push(format!("attributes.{k}"));
                    }
                }
            }
            "display_name" if have.is_none() && want.display_name.is_none() => {}
            f => out.push(f.to_string()),
        }
    }
    out
}

impl Plan {
    /// The plan as text for `scim-bridge plan` and logs: a header with the counts, then one
    /// line per object.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let mode = if self.dry_run {
            "dry run: nothing is sent to the vendor until dry_run is switched off"
        } else {
            "live: pending changes are being delivered"
        };
        let _ = writeln!(
            out,
            "Plan for tenant {} ({}), {mode}",
            self.tenant, self.vendor
        );
        let counts: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(a, n)| format!("{n} {}", a.words()))
            .collect();
        if counts.is_empty() {
            let _ = writeln!(out, "No changes: the vendor has what the IdP asked.");
        } else {
            let _ = writeln!(out, "Changes: {}", counts.join(", "));
            let _ = writeln!(
                out,
                "Objects: {} held by the dry run, {} pending, {} failed",
                self.objects.dry_run, self.objects.pending, self.objects.failed
            );
        }
        if let Some(note) = &self.note {
            let _ = writeln!(out, "Note: {note}");
        }
        if !self.items.is_empty() {
            let last = self.offset + self.items.len() as u64;
            if self.offset > 0 || last < self.total_items {
                let _ = writeln!(
                    out,
                    "Items {}-{last} of {}:",
                    self.offset + 1,
                    self.total_items
                );
            }
            let _ = writeln!(out);
        }
        for item in &self.items {
            let kind = match item.kind {
                ObjectKind::User => "user",
                ObjectKind::Group => "group",
            };
            let changes: Vec<String> = item.changes.iter().map(render_change).collect();
            let mut line = format!("{kind} {}: {}", item.name, changes.join("; "));
            if item.more_changes > 0 {
                let _ = write!(line, "; and {} more", item.more_changes);
            }
            let status = match &item.status {
                PlanStatus::DryRun => "[dry run]".to_string(),
                PlanStatus::Pending {
                    attempts,
                    last_error,
                    ..
                } => match (attempts, last_error) {
                    (0, _) => "[pending]".to_string(),
                    (n, Some(e)) => format!("[pending, {n} attempts, last error: {e}]"),
                    (n, None) => format!("[pending, {n} attempts]"),
                },
                PlanStatus::Failed { reason } => format!("[failed: {reason}]"),
            };
            let _ = writeln!(
                out,
                "  {line}  {status} ({}, {})",
                item.actor.as_str(),
                item.cause
            );
        }
        out
    }
}

fn render_change(c: &Change) -> String {
    let q = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
    let mut s = match c.action {
        Action::CreateUser => match &c.to {
            Some(role) => format!("create user with role {role}"),
            None => "create user".into(),
        },
        Action::AdoptUser => match &c.from {
            Some(role) => format!("adopt existing vendor user holding {role}"),
            None => "adopt existing vendor user".into(),
        },
        Action::UpdateProfile => format!("update {}", c.fields.join(", ")),
        Action::MoveRole => format!("move role {} → {}", q(&c.from), q(&c.to)),
        Action::Deactivate => match &c.to {
            Some(role) => format!("deactivate (role {role})"),
            None => "deactivate".into(),
        },
        Action::Reactivate => "reactivate".into(),
        Action::RemoveUser => "remove user".into(),
        Action::CreateGroup => "create group".into(),
        Action::RenameGroup => format!("rename group {} → {}", q(&c.from), q(&c.to)),
        Action::DeleteGroup => "delete group".into(),
        Action::AddMember => match (&c.group, &c.member) {
            (Some(g), _) => format!("add to group \"{g}\""),
            (_, Some(m)) => format!("add member {m}"),
            _ => "add member".into(),
        },
        Action::RemoveMember => match (&c.group, &c.member) {
            (Some(g), _) => format!("remove from group \"{g}\""),
            (_, Some(m)) => format!("remove member {m}"),
            _ => "remove member".into(),
        },
    };
    if let Some(d) = &c.detail {
        let _ = write!(s, " ({d})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_name_each_attribute_and_ignore_login_case() {
        let want = Profile {
            login: "Ada@X".into(),
            email: Some("ada@x".into()),
            given_name: Some("Ada".into()),
            family_name: None,
            display_name: None,
            attributes: [("region".to_string(), "EMEA".to_string())].into(),
        };
        let mut have = want.clone();
        have.login = "ada@x".into();
        assert!(changed_fields(&want, Some(&have)).is_empty());
        have.given_name = Some("Adah".into());
        have.attributes.insert("region".into(), "AMER".into());
        have.attributes.insert("team".into(), "x".into());
        assert_eq!(
            changed_fields(&want, Some(&have)),
            ["given_name", "attributes.region", "attributes.team"]
        );
        assert_eq!(
            changed_fields(&want, None),
            [
                "login",
                "email",
                "given_name",
                "family_name",
                "attributes.region"
            ]
        );
    }

    #[test]
    fn actions_round_trip_their_wire_names() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
        }
        assert_eq!(Action::parse("drop_table"), None);
    }

    #[test]
    fn a_plan_serialises_and_reads_back_and_renders_its_counts() {
        let plan = Plan {
            tenant: "acme".into(),
            vendor: "Metabase".into(),
            dry_run: true,
            generated_at: "2026-01-01T00:00:00.000Z".into(),
            counts: Action::ALL
                .into_iter()
                .map(|a| (a, u64::from(a == Action::MoveRole)))
                .collect(),
            objects: StatusCounts {
                dry_run: 1,
                ..StatusCounts::default()
            },
            total_items: 1,
            offset: 0,
            items: vec![PlanItem {
                kind: ObjectKind::User,
                id: "u1".into(),
                name: "pre@acme.test".into(),
                vendor_id: Some("7".into()),
                status: PlanStatus::DryRun,
                cause: "patch".into(),
                actor: Actor::Idp,
                since_ms: 1,
                changes: vec![Change::new(Action::MoveRole)
                    .from(Some("Administrators".into()))
                    .to(Some("Analysts".into()))],
                more_changes: 0,
            }],
            note: None,
        };
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["counts"]["move_role"], 1);
        assert_eq!(json["items"][0]["status"]["state"], "dry_run");
        assert_eq!(json["items"][0]["changes"][0]["action"], "move_role");
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
        let text = plan.render_text();
        assert!(text.contains("1 move role"), "{text}");
        assert!(
            text.contains("user pre@acme.test: move role Administrators → Analysts  [dry run]"),
            "{text}"
        );
    }
}

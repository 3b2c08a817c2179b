//! The plan's last build, kept and brought up to date (issue 13: "the dashboard's tenant page
//! opens in under 1 s at 100,000 users", the dry-run plan's tab included).
//!
//! A build plans every object of the outbox: 1.0–1.8 s at 100,000 users on two cores. The
//! console asks for a page of 100 after each change an operator watches arrive, so a build per
//! change would miss that second every time. Instead the build is kept (its counts, one
//! [`Indexed`] entry per object with a change, and the facts group items read of members), and
//! the next page after commits plans again only the objects those commits named
//! ([`Directory::touched_between`]) and the objects whose items read them:
//! - a touched user: its item, and when memberships are the group's, the items of the groups
//!   it is in (a group item names its members' logins and vendor ids);
//! - a touched group: its item, and when its name or vendor id changed, its members' items (a
//!   user item names its groups, and the rules give it its role from their names; members who
//!   joined or left are named by their membership keys);
//! - an id an item named otherwise: a vendor group a user is still in at the vendor, a user
//!   leaving a group at the vendor ([`Built::refs`]).
//!
//! A page's own items are always planned afresh from the store (`Engine::plan_from`); what
//! the expansion keeps right is the index behind the pager and the filters (which objects have
//! a change, of which actions, in which state) and the counts. A role table read again, too many
//! objects to plan, or commits the log no longer holds mean a full build, as before. Only a dry
//! run's plan is kept across commits (its log is watched, and trimmed by the background's
//! refreshes): a live tenant's outbox is small, and a page of it is built whole.

use super::adapter::MembershipModel;
use super::plan::{
    group_facts, Action, Found, GroupFacts, MemberFacts, PlanItem, PlanQuery, StatusCounts,
};
use super::role_table::RoleTable;
use super::state::Records;
use super::Engine;
use crate::scim::schema::ResourceKind;
use crate::store::StoreError;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// More objects to plan again than this, and a full build is as quick.
const REFRESH_MAX: usize = 20_000;

/// The last build of a tenant's plan ([`Built`]), behind one lock: one build or refresh at a
/// time, and pages wait for it rather than each building the plan again.
#[derive(Default)]
pub(crate) struct PlanCache {
    pub(super) last: parking_lot::Mutex<Option<Built>>,
    pub(super) builds: PlanBuilds,
}

/// How a tenant's plans were made so far ([`Engine::plan_builds`]).
#[derive(Debug, Default)]
pub(crate) struct PlanBuilds {
    /// Built whole: every object of the outbox planned.
    pub(super) whole: AtomicU64,
    /// Brought up to date: only what the commits since the last build named.
    pub(super) refreshed: AtomicU64,
}

/// What a build of the plan knew, at the directory's commit `generation`.
pub(crate) struct Built {
    pub(super) generation: u64,
    pub(super) roles: Option<Arc<RoleTable>>,
    pub(super) counts: BTreeMap<Action, u64>,
    pub(super) objects: StatusCounts,
    /// Every object with a vendor change, in the plan's order: users, then groups, each by SCIM
    /// id (the outbox's key order).
    pub(super) index: BTreeMap<(ResourceKind, Box<str>), Indexed>,
    /// The members' facts that group items read.
    pub(super) users: HashMap<String, MemberFacts>,
    /// The groups' names and vendor ids that user items read: a touched group whose facts
    /// did not change leaves its members' items as they are.
    groups: HashMap<String, GroupFacts>,
    /// Ids that items name besides their own object and its memberships, and those items: a
    /// vendor group id (or its SCIM id) a user is still in at the vendor, a user leaving a
    /// group. A change of the named id plans those items again.
    refs: HashMap<String, HashSet<(ResourceKind, String)>>,
}

/// One object of a built plan, as a filter and the counts read it.
pub(crate) struct Indexed {
    /// The actions of its listed changes (bit `Action as u16`), as `PlanQuery::action` filters.
    listed: u16,
    status: &'static str,
    /// Every change's action, those past the listed ones included (the plan's counts).
    actions: Box<[Action]>,
}

impl Indexed {
    pub(super) fn new(item: &PlanItem, actions: Vec<Action>) -> Indexed {
        Indexed {
            listed: item
                .changes
                .iter()
                .fold(0, |m, c| m | 1 << (c.action as u16)),
            status: item.status.as_str(),
            actions: actions.into(),
        }
    }

    pub(super) fn matches(&self, query: &PlanQuery) -> bool {
        query
            .action
            .is_none_or(|a| self.listed & (1 << (a as u16)) != 0)
            && query.status.as_deref().is_none_or(|s| s == self.status)
    }
}

impl Built {
    pub(super) fn new(generation: u64, roles: Option<Arc<RoleTable>>) -> Built {
        Built {
            generation,
            roles,
            counts: Action::ALL.into_iter().map(|a| (a, 0)).collect(),
            objects: StatusCounts::default(),
            index: BTreeMap::new(),
            users: HashMap::new(),
            groups: HashMap::new(),
            refs: HashMap::new(),
        }
    }

    /// Built against this role table (the same read of the vendor's roles).
    pub(super) fn same_roles(&self, roles: &Option<Arc<RoleTable>>) -> bool {
        match (&self.roles, roles) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Adds an object's item (replacing what the build had for it); returns its entry.
    pub(super) fn add(
        &mut self,
        kind: ResourceKind,
        sid: &str,
        item: &PlanItem,
        actions: Vec<Action>,
    ) -> &Indexed {
        self.remove(kind, sid);
        let entry = Indexed::new(item, actions);
        self.count(&entry, 1);
        self.index.entry((kind, sid.into())).or_insert(entry)
    }

    /// Takes an object out of the plan.
    fn remove(&mut self, kind: ResourceKind, sid: &str) {
        if let Some(old) = self.index.remove(&(kind, sid.into())) {
            self.count(&old, -1);
        }
    }

    fn count(&mut self, entry: &Indexed, sign: i64) {
        let add = |n: &mut u64| {
            debug_assert!(sign > 0 || *n > 0, "a count below zero");
            *n = n.saturating_add_signed(sign)
        };
        for a in entry.actions.iter() {
            add(self.counts.entry(*a).or_default());
        }
        add(match entry.status {
            "failed" => &mut self.objects.failed,
            "pending" => &mut self.objects.pending,
            _ => &mut self.objects.dry_run,
        });
    }

    /// Keeps what a planning pass found: member facts (those already known stay: a refresh
    /// removes the facts of the users it plans again first), group facts, named ids.
    pub(super) fn keep(&mut self, found: Found) {
        for (sid, f) in found.users {
            self.users.entry(sid).or_insert(f);
        }
        self.groups.extend(found.groups);
        for (named, kind, sid) in found.refs {
            self.refs.entry(named).or_default().insert((kind, sid));
        }
    }

    /// The objects in `query`'s filter, in the plan's order.
    pub(super) fn listed<'a>(
        &'a self,
        query: &'a PlanQuery,
    ) -> impl Iterator<Item = (ResourceKind, &'a str)> + 'a {
        self.index
            .iter()
            .filter(|(_, i)| i.matches(query))
            .map(|((kind, sid), _)| (*kind, &**sid))
    }
}

/// How often a dry-run tenant's plan is looked at in the background, and how long its
/// directory must have had no commit before a plan that cannot be brought up to date is built
/// whole: not while an IdP is still importing, which would build it again every second.
const KEEP_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between looks after the plan could not be read (a store failure).
const KEEP_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Keeps a dry-run tenant's plan current in the background, so that the console's plan tab,
/// the reason a tenant is a dry run, opens from it: brought up to date after changes, built
/// whole once an import has settled (a second or two at 100,000 users; one tenant of the
/// process at a time, [`super::schedule::PLAN_BUILDS`]). Ends with the engine.
pub(crate) async fn keep_current(engine: Weak<Engine>) {
    let mut seen = None;
    let mut wait = KEEP_EVERY;
    loop {
        tokio::time::sleep(wait).await;
        let Some(e) = engine.upgrade().filter(|e| !e.is_retired()) else {
            return;
        };
        let now = e.dir.generation();
        let settled = seen.replace(now) == Some(now);
        if e.roles.read().is_none() || e.is_stopped() || e.plan_is_current(now) {
            continue;
        }
        let tenant = e.settings.tenant.clone();
        // Brought up to date when it can be; no gate, it is cheap.
        let me = e.clone();
        drop(e);
        let mut kept = tokio::task::spawn_blocking(move || me.plan_keep(false)).await;
        if matches!(kept, Ok(Ok(false))) && settled {
            // Built whole: one tenant at a time, and not at all when the gate is busy past its
            // patience (the next look tries again).
            let Some(_permit) = super::schedule::PLAN_BUILDS.enter().await else {
                continue;
            };
            let Some(e) = engine
                .upgrade()
                .filter(|e| !e.is_retired() && !e.is_stopped())
            else {
                return;
            };
            kept = tokio::task::spawn_blocking(move || e.plan_keep(true)).await;
        }
        wait = match kept {
            Ok(Ok(_)) => KEEP_EVERY,
            Ok(Err(err)) => {
                tracing::warn!(%tenant, error = %err, "the dry-run plan could not be kept current");
                (wait * 2).min(KEEP_BACKOFF_MAX)
            }
            Err(err) => {
                tracing::error!(%tenant, error = %err, "the dry-run plan's build failed");
                (wait * 2).min(KEEP_BACKOFF_MAX)
            }
        };
    }
}

impl Engine {
    /// Whether the last build is at commit `generation` with the current role table. A build
    /// or page under way counts as current (and the async worker asking does not wait for it).
    fn plan_is_current(&self, generation: u64) -> bool {
        let table = self.roles.read().clone();
        let Some(last) = self.plan_cache.last.try_lock() else {
            return true;
        };
        last.as_ref()
            .is_some_and(|b| b.generation == generation && b.same_roles(&table))
    }

    /// The background's step: the plan brought up to date, or built whole if `whole`; `false`
    /// when it could not be brought up to date and `whole` was not asked.
    fn plan_keep(&self, whole: bool) -> Result<bool, StoreError> {
        let table = self.roles.read().clone();
        let mut cache = self.plan_cache.last.lock();
        if self.plan_bring_up_to_date(&mut cache, &table)? {
            return Ok(true);
        }
        if !whole {
            return Ok(false);
        }
        drop(cache);
        // A first page builds the whole and keeps it ([`Engine::plan_query`]).
        self.plan_page(0, 1).map(|_| true)
    }

    /// How this engine's plans were made: how many were built whole and how many brought up to
    /// date from the last.
    pub fn plan_builds(&self) -> (u64, u64) {
        let b = &self.plan_cache.builds;
        (
            b.whole.load(Ordering::Relaxed),
            b.refreshed.load(Ordering::Relaxed),
        )
    }

    /// Brings the kept build (`cache`, locked by the caller) to the directory's current
    /// commit, if it is for `table`; `false` when there is none or the commits since cannot be
    /// known, and the plan must be built whole. A failed refresh drops the build.
    pub(super) fn plan_bring_up_to_date(
        &self,
        cache: &mut Option<Built>,
        table: &Option<Arc<RoleTable>>,
    ) -> Result<bool, StoreError> {
        let Some(built) = cache.as_mut().filter(|b| b.same_roles(table)) else {
            return Ok(false);
        };
        // Read before planning: a commit from here on is planned by the next page.
        let generation = self.dir.generation();
        if built.generation == generation {
            return Ok(true);
        }
        match self.plan_refresh(built, table.as_deref(), generation) {
            Ok(done) => Ok(done),
            Err(e) => {
                *cache = None;
                Err(e)
            }
        }
    }

    /// Brings `built` up to the directory's commit `upto` by planning again what the commits
    /// since named; `false` when that is not possible and the plan must be built whole.
    fn plan_refresh(
        &self,
        built: &mut Built,
        table: Option<&RoleTable>,
        upto: u64,
    ) -> Result<bool, StoreError> {
        let Some(named) = self.dir.touched_between(built.generation, upto) else {
            return Ok(false);
        };
        let on_group = self.caps.membership == MembershipModel::OnGroup;
        let mut users = BTreeSet::new();
        let mut groups = BTreeSet::new();
        for id in &named {
            users.insert(id.clone());
            groups.insert(id.clone());
            // A group whose name or vendor id changed: its members' items name it, and the
            // rules read its name. Members who joined or left are named by their membership
            // keys; the others are unchanged if the group's facts are.
            if let Some(was) = built.groups.get(id) {
                let now = group_facts(&self.dir, id)?;
                if *was != now {
                    users.extend(self.dir.member_ids(id)?);
                    built.groups.insert(id.clone(), now);
                }
            }
            // A user's groups list its login and vendor id when memberships are the group's.
            if on_group {
                groups.extend(self.dir.groups_of(id)?);
            }
            for (kind, sid) in built.refs.get(id).into_iter().flatten() {
                match kind {
                    ResourceKind::User => users.insert(sid.clone()),
                    ResourceKind::Group => groups.insert(sid.clone()),
                };
            }
            if users.len() + groups.len() > REFRESH_MAX {
                return Ok(false);
            }
        }
        let rec = Records(&self.dir);
        // Users first: the groups' items read their facts.
        for sid in &users {
            built.users.remove(sid);
        }
        let mut look = super::plan::Lookups::new(&self.dir);
        let mut planned = Vec::new();
        for sid in &users {
            let item = match rec.outbox(ResourceKind::User, sid)? {
                Some(entry) => self.plan_item(table, &mut look, ResourceKind::User, sid, entry)?,
                None => None,
            };
            planned.push((ResourceKind::User, sid, item));
        }
        built.keep(look.into_found());
        let mut look = super::plan::Lookups::new(&self.dir);
        look.base = Some(&built.users);
        for sid in &groups {
            let item = match rec.outbox(ResourceKind::Group, sid)? {
                Some(entry) => self.plan_item(table, &mut look, ResourceKind::Group, sid, entry)?,
                None => None,
            };
            planned.push((ResourceKind::Group, sid, item));
        }
        let found = look.into_found();
        built.keep(found);
        for (kind, sid, item) in planned {
            match item {
                Some((item, actions)) => {
                    built.add(kind, sid, &item, actions);
                }
                None => built.remove(kind, sid),
            }
        }
        built.generation = upto;
        self.plan_cache
            .builds
            .refreshed
            .fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

//! The plan's last build, kept and brought up to date (issue 13: "the dashboard's tenant page
//! opens in under 1 s at 100,000 users", the dry-run plan's tab included).
//!
//! A build plans every object of the outbox: 1.0–1.8 s at 100,000 users on two cores. The
//! console asks for a page of 100 after each change an operator watches arrive, so a build per
//! change would miss that second every time. Instead the build is kept (its counts, one
//! [`Indexed`] entry per object with a change, and the facts group items read of members), and
//! the next page after commits plans again only the objects those commits named
//! ([`Directory::touched_between`]) and the objects whose items read them:
//! - a touched user: its item, and the items of the groups it is in (a group item names its
//!   members' logins);
//! - a touched group: its item, and its members' items (a user item names its groups, and the
//!   rules give it its role from their names);
//! - an id an item named otherwise: a vendor group a user is still in at the vendor, a user
//!   leaving a group at the vendor ([`Built::refs`]).
//!
//! A role table read again, too many objects to plan, or commits the log no longer holds mean
//! a full build, as before.

use super::plan::{Action, MemberFacts, PlanItem, PlanQuery, StatusCounts};
use super::role_table::RoleTable;
use super::state::Records;
use super::Engine;
use crate::scim::schema::ResourceKind;
use crate::store::StoreError;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    pub(super) index: BTreeMap<(Order, Box<str>), Indexed>,
    /// The members' facts that group items read.
    pub(super) users: HashMap<String, MemberFacts>,
    /// Ids that items name besides their own object and its memberships, and those items: a
    /// vendor group id (or its SCIM id) a user is still in at the vendor, a user leaving a
    /// group. A change of the named id plans those items again.
    pub(super) refs: HashMap<String, Vec<(ResourceKind, String)>>,
}

/// Users before groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Order {
    User,
    Group,
}

impl Order {
    pub(super) fn of(kind: ResourceKind) -> Order {
        match kind {
            ResourceKind::User => Order::User,
            ResourceKind::Group => Order::Group,
        }
    }

    pub(super) fn kind(self) -> ResourceKind {
        match self {
            Order::User => ResourceKind::User,
            Order::Group => ResourceKind::Group,
        }
    }
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
        self.index
            .entry((Order::of(kind), sid.into()))
            .or_insert(entry)
    }

    /// Takes an object out of the plan.
    fn remove(&mut self, kind: ResourceKind, sid: &str) {
        if let Some(old) = self.index.remove(&(Order::of(kind), sid.into())) {
            self.count(&old, -1);
        }
    }

    fn count(&mut self, entry: &Indexed, sign: i64) {
        let add = |n: &mut u64| *n = n.saturating_add_signed(sign);
        for a in entry.actions.iter() {
            add(self.counts.entry(*a).or_default());
        }
        add(match entry.status {
            "failed" => &mut self.objects.failed,
            "pending" => &mut self.objects.pending,
            _ => &mut self.objects.dry_run,
        });
    }

    pub(super) fn note_refs(&mut self, refs: Vec<(String, ResourceKind, String)>) {
        for (named, kind, sid) in refs {
            let by = self.refs.entry(named).or_default();
            if !by.iter().any(|(k, s)| *k == kind && *s == sid) {
                by.push((kind, sid));
            }
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
            .map(|((o, sid), _)| (o.kind(), &**sid))
    }
}

/// How often a dry-run tenant's plan is looked at in the background, and how long its
/// directory must have had no commit before a plan that cannot be brought up to date is built
/// whole: not while an IdP is still importing, which would build it again every second.
const KEEP_EVERY: Duration = Duration::from_secs(1);

/// Keeps a dry-run tenant's plan current in the background, so that the console's plan tab,
/// the reason a tenant is a dry run, opens from it: brought up to date after a few changes,
/// built whole once an import has settled (a second or two at 100,000 users). Ends with the
/// engine.
pub(crate) async fn keep_current(engine: Weak<Engine>) {
    let mut seen = None;
    loop {
        tokio::time::sleep(KEEP_EVERY).await;
        let Some(e) = engine.upgrade().filter(|e| !e.is_retired()) else {
            return;
        };
        let now = e.dir.generation();
        let settled = seen.replace(now) == Some(now);
        if settled && e.roles.read().is_some() && !e.is_stopped() && !e.plan_is_current(now) {
            let _permit = super::schedule::PLAN_BUILDS.enter().await;
            let me = e.clone();
            // A first page: refreshed when the last build can be, built whole otherwise.
            match tokio::task::spawn_blocking(move || me.plan_page(0, 1)).await {
                Ok(Err(err)) => {
                    tracing::warn!(tenant = %e.settings.tenant, error = %err, "the plan could not be kept current")
                }
                Err(err) => {
                    tracing::error!(tenant = %e.settings.tenant, error = %err, "the plan's build failed")
                }
                Ok(Ok(_)) => {}
            }
        }
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

    /// How this engine's plans were made: how many were built whole and how many brought up to
    /// date from the last.
    pub fn plan_builds(&self) -> (u64, u64) {
        let b = &self.plan_cache.builds;
        (
            b.whole.load(Ordering::Relaxed),
            b.refreshed.load(Ordering::Relaxed),
        )
    }

    /// Brings `built` up to the directory's commit `upto` by planning again what the commits
    /// since named; `false` when that is not possible and the plan must be built whole.
    pub(super) fn plan_refresh(
        &self,
        built: &mut Built,
        table: Option<&RoleTable>,
        upto: u64,
    ) -> Result<bool, StoreError> {
        let Some(named) = self.dir.touched_between(built.generation, upto) else {
            return Ok(false);
        };
        let mut users = BTreeSet::new();
        let mut groups = BTreeSet::new();
        for id in &named {
            users.insert(id.clone());
            groups.insert(id.clone());
            users.extend(self.dir.member_ids(id)?);
            groups.extend(self.dir.groups_of(id)?);
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
        let (facts, refs) = look.into_found();
        built.users.extend(facts);
        built.note_refs(refs);
        let mut look = super::plan::Lookups::new(&self.dir);
        look.base = Some(&built.users);
        for sid in &groups {
            let item = match rec.outbox(ResourceKind::Group, sid)? {
                Some(entry) => self.plan_item(table, &mut look, ResourceKind::Group, sid, entry)?,
                None => None,
            };
            planned.push((ResourceKind::Group, sid, item));
        }
        let (facts, refs) = look.into_found();
        for (sid, f) in facts {
            built.users.entry(sid).or_insert(f);
        }
        built.note_refs(refs);
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

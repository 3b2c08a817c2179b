//! The provisioning engine (`src/engine`) against an in-memory vendor that models a real one:
//! users (unique login), groups, a role catalog, membership on the user or on the group,
//! deactivation by flag or by deletion — and a programmable fault plan (transient failures,
//! refusals, "timed out after the vendor applied it", hangs, slow calls).
//!
//! Every test drives the engine through its public API, as the server does (the SCIM
//! `Connector`, `deliver_due`, `observe_now`, a restart that reopens the store), and asserts on
//! the fake vendor's final state.

use async_trait::async_trait;
use parking_lot::Mutex;
use proptest::prelude::*;
use scim_bridge::config::{OnVendorUnavailable, RoleRule, RoleRules};
use scim_bridge::connector::{Connector, Precondition, RequestContext};
use scim_bridge::engine::adapter::{
    AdapterError, AdapterResult, Capabilities, Created, Deactivation, MembershipModel, NewUser,
    Profile, Refusal, Removed, RoleCatalog, RoleInfo, RoleModel, UserChange, VendorAdapter,
    VendorGroup, VendorUser, NO_ROLE,
};
use scim_bridge::engine::{Engine, EngineConnector, EngineSettings};
use scim_bridge::scim::list::ListQuery;
use scim_bridge::scim::patch::PatchRequest;
use scim_bridge::scim::schema::ResourceKind;
use scim_bridge::scim::ScimError;
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

// =============================================================================================
// The fake vendor
// =============================================================================================

const VIEWER: &str = "r-viewer";
const DESIGNER: &str = "r-designer";
const ADMIN: &str = "r-admin";

/// What a programmed fault does to the call it hits.
#[derive(Debug, Clone, PartialEq)]
enum FaultKind {
    /// 5xx / 429 / connection refused: nothing applied, `Transient`.
    Transient,
    /// A 4xx: nothing applied, `Refused`.
    Refused { conflict: bool },
    /// The vendor applied the change, then the answer was lost (a timeout): `Transient`.
    /// On a read call this is a plain transient failure.
    Ambiguous,
    /// The call never answers (nothing applied).
    Hang,
    /// The vendor applies the change, then the call never answers.
    ApplyThenHang,
    /// The call is slow: sleeps, then is served normally (applied after the sleep).
    Delay(Duration),
}

/// Which calls a fault applies to.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Any,
    Writes,
    /// Every write but this operation.
    WritesBut(&'static str),
    Op(&'static str),
    /// This operation, when its logged argument starts with this prefix (e.g. one group's
    /// `change_members`: `"r-viewer +[] -"` is a removal from the Viewer role group).
    OpArg(&'static str, &'static str),
}

#[derive(Debug, Clone)]
struct Fault {
    target: Target,
    kind: FaultKind,
    /// Calls left to hit; `None`: until cleared.
    remaining: Option<usize>,
}

const WRITES: &[&str] = &[
    "create_user",
    "update_user",
    "delete_user",
    "create_group",
    "rename_group",
    "delete_group",
    "change_members",
];

fn is_write(op: &str) -> bool {
    WRITES.contains(&op)
}

#[derive(Debug, Clone, PartialEq)]
struct VUser {
    id: String,
    profile: Profile,
    active: bool,
    /// The role attribute ([`RoleModel::Attribute`]); always `None` with role groups, where
    /// the role is membership of `VState::role_groups`.
    role: Option<String>,
    /// Membership on the user (OnUser only).
    groups: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct VGroup {
    id: String,
    name: String,
    /// Membership on the group (OnGroup only).
    members: BTreeSet<String>,
}

#[derive(Default)]
struct VState {
    users: BTreeMap<String, VUser>,
    groups: BTreeMap<String, VGroup>,
    next_id: u64,
    calls: HashMap<&'static str, usize>,
    /// (operation, argument) of every call, in order.
    log: Vec<(&'static str, String)>,
    faults: Vec<Fault>,
    /// Calls a correct engine never makes (e.g. groups sent on a vendor that keeps membership
    /// on the group).
    violations: Vec<String>,
    /// The vendor's breaker is open: `unavailable()` says so (the engine queues at once).
    down: Option<String>,
    /// [`RoleModel::Groups`]: the role groups (pre-existing at the vendor, with the catalog's
    /// role ids as their ids) → their members' vendor ids. Not listed by `list_groups`, not
    /// found by `find_group` (as ThoughtSpot's role groups).
    role_groups: BTreeMap<String, BTreeSet<String>>,
    /// Every `delete_group` call: (group id, the members it was given).
    deleted_members: Vec<(String, Vec<String>)>,
}

struct Inner {
    caps: Capabilities,
    state: Mutex<VState>,
}

/// A profile as the fake vendor keeps it (no single display name, like Sisense).
fn kept(p: &Profile) -> Profile {
    Profile {
        display_name: None,
        ..p.clone()
    }
}

#[derive(Clone)]
struct FakeVendor(Arc<Inner>);

/// The name of a role group at the fake vendor ([`RoleModel::Groups`]).
fn role_group_name(role: &str) -> String {
    format!("Role {role}")
}

impl FakeVendor {
    fn new(membership: MembershipModel, deactivation: Deactivation) -> FakeVendor {
        FakeVendor::with_roles(membership, deactivation, RoleModel::Attribute)
    }

    /// A fake vendor with either role model. [`RoleModel::Groups`] models ThoughtSpot and
    /// Metabase: the three roles are role groups that exist at the vendor (ids `r-viewer`,
    /// …), a new user is in none of them, and `list_users` reports the role as the ThoughtSpot
    /// adapter does (the one role group, `NO_ROLE` for none, `None` for two or more).
    fn with_roles(
        membership: MembershipModel,
        deactivation: Deactivation,
        role: RoleModel,
    ) -> FakeVendor {
        let mut state = VState::default();
        if role == RoleModel::Groups {
            for r in [VIEWER, DESIGNER, ADMIN] {
                state.role_groups.insert(r.to_string(), BTreeSet::new());
            }
        }
        FakeVendor(Arc::new(Inner {
            caps: Capabilities {
                vendor: "Fake",
                role,
                membership,
                deactivation: deactivation.clone(),
                removal: deactivation,
                writable_while_inactive: true,
                reactivation_strips_role: false,
                required_user_attributes: &[],
                keeps_login: true,
                reports_last_login: false,
                immutable_user_attributes: &[],
            },
            state: Mutex::new(state),
        }))
    }

    fn on_user(&self) -> bool {
        self.0.caps.membership == MembershipModel::OnUser
    }
    fn role_groups_model(&self) -> bool {
        self.0.caps.role == RoleModel::Groups
    }

    // ---- role groups (RoleModel::Groups) -----------------------------------------------------

    /// The role groups a vendor user is in.
    fn role_groups_of(&self, uid: &str) -> BTreeSet<String> {
        role_groups_of(&self.0.state.lock(), uid)
    }
    /// Sets a vendor user's role groups by hand (an operator in the vendor's UI).
    fn set_role_groups_by_hand(&self, uid: &str, roles: &[&str]) {
        let mut s = self.0.state.lock();
        for (r, members) in s.role_groups.iter_mut() {
            if roles.contains(&r.as_str()) {
                members.insert(uid.to_string());
            } else {
                members.remove(uid);
            }
        }
    }
    /// A user made at the vendor by hand (before the bridge), in these role groups.
    fn add_vendor_user_by_hand(&self, login: &str, roles: &[&str]) -> String {
        let id = {
            let mut s = self.0.state.lock();
            s.next_id += 1;
            let u = VUser {
                id: format!("vu{}", s.next_id),
                profile: Profile {
                    login: login.into(),
                    email: Some(login.into()),
                    given_name: Some("Hand".into()),
                    family_name: Some("Made".into()),
                    ..Profile::default()
                },
                active: true,
                role: (!self.role_groups_model()).then(|| VIEWER.to_string()),
                groups: BTreeSet::new(),
            };
            s.users.insert(u.id.clone(), u.clone());
            u.id
        };
        self.set_role_groups_by_hand(&id, roles);
        id
    }
    fn deleted_members(&self) -> Vec<(String, Vec<String>)> {
        self.0.state.lock().deleted_members.clone()
    }

    // ---- fault plan ------------------------------------------------------------------------

    fn fault(&self, target: Target, kind: FaultKind, times: Option<usize>) {
        self.0.state.lock().faults.push(Fault {
            target,
            kind,
            remaining: times,
        });
    }
    fn heal(&self) {
        let mut s = self.0.state.lock();
        s.faults.clear();
        s.down = None;
    }
    fn set_down(&self, reason: Option<&str>) {
        self.0.state.lock().down = reason.map(str::to_string);
    }

    // ---- observation -----------------------------------------------------------------------

    fn calls(&self, op: &str) -> usize {
        self.0.state.lock().calls.get(op).copied().unwrap_or(0)
    }
    fn total_calls(&self) -> usize {
        self.0.state.lock().calls.values().sum()
    }
    fn reset_calls(&self) {
        let mut s = self.0.state.lock();
        s.calls.clear();
        s.log.clear();
    }
    fn log(&self) -> Vec<(&'static str, String)> {
        self.0.state.lock().log.clone()
    }
    fn violations(&self) -> Vec<String> {
        self.0.state.lock().violations.clone()
    }
    fn users_with_login(&self, login: &str) -> Vec<VUser> {
        self.0
            .state
            .lock()
            .users
            .values()
            .filter(|u| u.profile.login.eq_ignore_ascii_case(login))
            .cloned()
            .collect()
    }
    fn user(&self, login: &str) -> VUser {
        let mut all = self.users_with_login(login);
        assert_eq!(all.len(), 1, "vendor users with login {login}: {all:?}");
        all.pop().unwrap()
    }
    fn all_users(&self) -> Vec<VUser> {
        self.0.state.lock().users.values().cloned().collect()
    }
    fn groups_named(&self, name: &str) -> Vec<VGroup> {
        self.0
            .state
            .lock()
            .groups
            .values()
            .filter(|g| g.name.eq_ignore_ascii_case(name))
            .cloned()
            .collect()
    }
    fn all_groups(&self) -> Vec<VGroup> {
        self.0.state.lock().groups.values().cloned().collect()
    }
    /// Names of the vendor groups a vendor user is in, whatever the membership model.
    fn group_names_of(&self, uid: &str) -> BTreeSet<String> {
        let s = self.0.state.lock();
        let on_user = self.on_user();
        s.groups
            .values()
            .filter(|g| {
                if on_user {
                    s.users.get(uid).is_some_and(|u| u.groups.contains(&g.id))
                } else {
                    g.members.contains(uid)
                }
            })
            .map(|g| g.name.clone())
            .collect()
    }

    // ---- call plumbing ---------------------------------------------------------------------

    /// Counts the call, picks the fault that hits it. `Ok(true)`: apply, then answer with an
    /// ambiguous transient failure; `Ok(false)`: serve normally.
    async fn gate(&self, op: &'static str, arg: &str) -> Result<Mode, AdapterError> {
        let kind = {
            let mut s = self.0.state.lock();
            *s.calls.entry(op).or_default() += 1;
            s.log.push((op, arg.to_string()));
            let mut hit = None;
            for (i, f) in s.faults.iter_mut().enumerate() {
                let applies = match &f.target {
                    Target::Any => true,
                    Target::Writes => is_write(op),
                    Target::WritesBut(o) => is_write(op) && *o != op,
                    Target::Op(o) => *o == op,
                    Target::OpArg(o, prefix) => *o == op && arg.starts_with(prefix),
                };
                // A refusal of a read makes no sense: reads only meet transient faults.
                let sensible = is_write(op)
                    || matches!(
                        f.kind,
                        FaultKind::Transient | FaultKind::Hang | FaultKind::Delay(_)
                    )
                    || f.kind == FaultKind::Ambiguous;
                if applies && sensible {
                    if let Some(r) = f.remaining.as_mut() {
                        *r -= 1;
                    }
                    hit = Some((i, f.kind.clone()));
                    break;
                }
            }
            if let Some((i, _)) = &hit {
                if s.faults[*i].remaining == Some(0) {
                    s.faults.remove(*i);
                }
            }
            hit.map(|(_, k)| k)
        };
        match kind {
            None => Ok(Mode::Normal),
            Some(FaultKind::Transient) => Err(AdapterError::Transient {
                reason: format!("fake: {op} answered 503"),
                retry_after: None,
            }),
            Some(FaultKind::Refused { conflict }) => Err(AdapterError::Refused {
                vendor: "Fake",
                reason: format!("fake: {op} answered 400"),
                kind: if conflict {
                    Refusal::Conflict
                } else {
                    Refusal::Invalid
                },
            }),
            Some(FaultKind::Ambiguous) if is_write(op) => Ok(Mode::ApplyThenFail),
            Some(FaultKind::Ambiguous) => {
                Err(AdapterError::transient(format!("fake: {op} timed out")))
            }
            Some(FaultKind::Hang) => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Some(FaultKind::ApplyThenHang) => Ok(Mode::ApplyThenHang),
            Some(FaultKind::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(Mode::Normal)
            }
        }
    }

    /// The answer of a call that was applied, as its mode says.
    async fn answer<T>(&self, op: &str, mode: Mode, result: AdapterResult<T>) -> AdapterResult<T> {
        match mode {
            Mode::Normal => result,
            Mode::ApplyThenFail => Err(AdapterError::transient(format!(
                "fake: {op} timed out (after the vendor applied it)"
            ))),
            Mode::ApplyThenHang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        }
    }

    fn view(&self, s: &VState, u: &VUser) -> VendorUser {
        let role = if self.role_groups_model() {
            // As the ThoughtSpot adapter reports it.
            let held = role_groups_of(s, &u.id);
            match held.len() {
                0 => Some(NO_ROLE.to_string()),
                1 => held.into_iter().next(),
                _ => None,
            }
        } else {
            u.role.clone()
        };
        VendorUser {
            id: u.id.clone(),
            profile: Some(u.profile.clone()),
            active: Some(u.active),
            role,
            groups: self.on_user().then(|| u.groups.iter().cloned().collect()),
            last_login: None,
        }
    }
    fn gview(&self, g: &VGroup) -> VendorGroup {
        VendorGroup {
            id: g.id.clone(),
            name: g.name.clone(),
            members: (!self.on_user()).then(|| g.members.iter().cloned().collect()),
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Normal,
    ApplyThenFail,
    ApplyThenHang,
}

fn refused(reason: impl Into<String>) -> AdapterError {
    AdapterError::Refused {
        vendor: "Fake",
        reason: reason.into(),
        kind: Refusal::Invalid,
    }
}

fn known_role(r: &str) -> bool {
    [VIEWER, DESIGNER, ADMIN].contains(&r)
}

fn role_groups_of(s: &VState, uid: &str) -> BTreeSet<String> {
    s.role_groups
        .iter()
        .filter(|(_, members)| members.contains(uid))
        .map(|(r, _)| r.clone())
        .collect()
}

#[async_trait]
impl VendorAdapter for FakeVendor {
    fn capabilities(&self) -> &Capabilities {
        &self.0.caps
    }

    async fn roles(&self) -> AdapterResult<RoleCatalog> {
        self.gate("roles", "").await?;
        let groups = self.role_groups_model();
        let role = |id: &str, name: &str| RoleInfo {
            id: id.into(),
            names: if groups {
                vec![name.into(), role_group_name(name)]
            } else {
                vec![name.into()]
            },
            display: name.into(),
            admin: id == ADMIN,
        };
        Ok(RoleCatalog {
            roles: vec![
                role(VIEWER, "Viewer"),
                role(DESIGNER, "Designer"),
                role(ADMIN, "Admin"),
            ],
            protected: None,
            // Role groups: a new user is in none of them (ThoughtSpot has no fallback).
            fallback: (!groups).then(|| VIEWER.into()),
        })
    }

    async fn create_user(&self, user: &NewUser) -> AdapterResult<Created<VendorUser>> {
        let mode = self.gate("create_user", &user.profile.login).await?;
        let result = {
            let mut s = self.0.state.lock();
            let existing = s
                .users
                .values()
                .find(|u| u.profile.login.eq_ignore_ascii_case(&user.profile.login))
                .cloned();
            if let Some(u) = existing {
                Ok(Created::Exists(self.view(&s, &u)))
            } else if self.role_groups_model() && user.role.is_some() {
                s.violations.push(format!(
                    "create_user with a role attribute on a role-groups vendor: {user:?}"
                ));
                Err(refused("roles are role groups here"))
            } else if user.role.as_deref().is_some_and(|r| !known_role(r)) {
                Err(refused(format!("unknown role {:?}", user.role)))
            } else if !self.on_user() && !user.groups.is_empty() {
                s.violations.push(format!(
                    "create_user with groups on an OnGroup vendor: {user:?}"
                ));
                Err(refused("groups are not accepted on users"))
            } else if let Some(g) = user.groups.iter().find(|g| !s.groups.contains_key(*g)) {
                Err(refused(format!("unknown group {g}")))
            } else {
                s.next_id += 1;
                let u = VUser {
                    id: format!("vu{}", s.next_id),
                    profile: kept(&user.profile),
                    active: user.active,
                    role: (!self.role_groups_model())
                        .then(|| user.role.clone().unwrap_or_else(|| VIEWER.into())),
                    groups: user.groups.iter().cloned().collect(),
                };
                s.users.insert(u.id.clone(), u.clone());
                Ok(Created::New(self.view(&s, &u)))
            }
        };
        self.answer("create_user", mode, result).await
    }

    async fn update_user(
        &self,
        id: &str,
        change: &UserChange,
    ) -> AdapterResult<Option<VendorUser>> {
        let mode = self.gate("update_user", id).await?;
        let result = {
            let mut s = self.0.state.lock();
            let on_user = self.on_user();
            let bad_group = change
                .groups
                .iter()
                .flatten()
                .find(|g| !s.groups.contains_key(*g))
                .cloned();
            let login_taken = change.profile.as_ref().is_some_and(|p| {
                s.users
                    .values()
                    .any(|o| o.id != id && o.profile.login.eq_ignore_ascii_case(&p.login))
            });
            if !s.users.contains_key(id) {
                Err(AdapterError::Gone)
            } else if self.role_groups_model() && change.role.is_some() {
                s.violations.push(format!(
                    "update_user with a role attribute on a role-groups vendor: {change:?}"
                ));
                Err(refused("roles are role groups here"))
            } else if change.role.as_deref().is_some_and(|r| !known_role(r)) {
                Err(refused(format!("unknown role {:?}", change.role)))
            } else if change.groups.is_some() && !on_user {
                s.violations.push(format!(
                    "update_user with groups on an OnGroup vendor: {change:?}"
                ));
                Err(refused("groups are not accepted on users"))
            } else if let Some(g) = bad_group {
                Err(refused(format!("unknown group {g}")))
            } else if login_taken {
                Err(AdapterError::Refused {
                    vendor: "Fake",
                    reason: "login taken".into(),
                    kind: Refusal::Conflict,
                })
            } else {
                let u = s.users.get_mut(id).unwrap();
                if let Some(p) = &change.profile {
                    u.profile = kept(p);
                }
                if let Some(a) = change.active {
                    u.active = a;
                }
                if let Some(r) = &change.role {
                    u.role = Some(r.clone());
                }
                if let Some(g) = &change.groups {
                    u.groups = g.iter().cloned().collect();
                }
                let u = u.clone();
                Ok(Some(self.view(&s, &u)))
            }
        };
        self.answer("update_user", mode, result).await
    }

    async fn delete_user(&self, id: &str) -> AdapterResult<Removed> {
        let mode = self.gate("delete_user", id).await?;
        {
            let mut s = self.0.state.lock();
            s.users.remove(id);
            for g in s.groups.values_mut() {
                g.members.remove(id);
            }
            for members in s.role_groups.values_mut() {
                members.remove(id);
            }
        }
        self.answer("delete_user", mode, Ok(Removed::Deleted)).await
    }

    async fn find_user(&self, profile: &Profile) -> AdapterResult<Option<VendorUser>> {
        self.gate("find_user", &profile.login).await?;
        let s = self.0.state.lock();
        let by_login = s
            .users
            .values()
            .find(|u| u.profile.login.eq_ignore_ascii_case(&profile.login));
        let by_email = || {
            profile.email.as_ref().and_then(|e| {
                s.users.values().find(|u| {
                    u.profile
                        .email
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(e))
                })
            })
        };
        Ok(by_login.or_else(by_email).map(|u| self.view(&s, u)))
    }

    async fn get_user(&self, id: &str) -> AdapterResult<Option<VendorUser>> {
        self.gate("get_user", id).await?;
        let s = self.0.state.lock();
        Ok(s.users.get(id).map(|u| self.view(&s, u)))
    }

    async fn list_users(&self) -> AdapterResult<Vec<VendorUser>> {
        self.gate("list_users", "").await?;
        let s = self.0.state.lock();
        Ok(s.users.values().map(|u| self.view(&s, u)).collect())
    }

    async fn create_group(&self, name: &str) -> AdapterResult<Created<VendorGroup>> {
        let mode = self.gate("create_group", name).await?;
        let result = {
            let mut s = self.0.state.lock();
            let existing = s
                .groups
                .values()
                .find(|g| g.name.eq_ignore_ascii_case(name))
                .cloned();
            match existing {
                Some(g) => Ok(Created::Exists(self.gview(&g))),
                None => {
                    s.next_id += 1;
                    let g = VGroup {
                        id: format!("vg{}", s.next_id),
                        name: name.to_string(),
                        members: BTreeSet::new(),
                    };
                    s.groups.insert(g.id.clone(), g.clone());
                    Ok(Created::New(self.gview(&g)))
                }
            }
        };
        self.answer("create_group", mode, result).await
    }

    async fn rename_group(&self, id: &str, name: &str) -> AdapterResult<()> {
        let mode = self.gate("rename_group", id).await?;
        let result = {
            let mut s = self.0.state.lock();
            let taken = s
                .groups
                .values()
                .any(|g| g.id != id && g.name.eq_ignore_ascii_case(name));
            match s.groups.get_mut(id) {
                None => Err(AdapterError::Gone),
                Some(_) if taken => Err(AdapterError::Refused {
                    vendor: "Fake",
                    reason: "name taken".into(),
                    kind: Refusal::Conflict,
                }),
                Some(g) => {
                    g.name = name.to_string();
                    Ok(())
                }
            }
        };
        self.answer("rename_group", mode, result).await
    }

    async fn delete_group(&self, id: &str, members: &[String]) -> AdapterResult<()> {
        let mode = self.gate("delete_group", id).await?;
        {
            let mut s = self.0.state.lock();
            s.deleted_members.push((id.to_string(), members.to_vec()));
            if s.role_groups.contains_key(id) {
                s.violations
                    .push(format!("delete_group of the role group {id}"));
            }
            s.groups.remove(id);
            for u in s.users.values_mut() {
                u.groups.remove(id);
            }
        }
        self.answer("delete_group", mode, Ok(())).await
    }

    async fn find_group(&self, name: &str) -> AdapterResult<Option<VendorGroup>> {
        self.gate("find_group", name).await?;
        let s = self.0.state.lock();
        Ok(s.groups
            .values()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .map(|g| self.gview(g)))
    }

    async fn list_groups(&self) -> AdapterResult<Vec<VendorGroup>> {
        self.gate("list_groups", "").await?;
        let s = self.0.state.lock();
        Ok(s.groups.values().map(|g| self.gview(g)).collect())
    }

    async fn change_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        let mode = self
            .gate("change_members", &format!("{group} +{add:?} -{remove:?}"))
            .await?;
        let result = {
            let mut s = self.0.state.lock();
            let on_user = self.on_user();
            let role_group = s.role_groups.contains_key(group);
            if on_user && !role_group {
                s.violations.push(format!(
                    "change_members on an OnUser vendor with attribute roles: {group} +{add:?} -{remove:?}"
                ));
            }
            let unknown = add.iter().find(|u| !s.users.contains_key(*u)).cloned();
            if role_group {
                if let Some(u) = unknown {
                    Err(refused(format!("unknown user {u}")))
                } else {
                    let g = s.role_groups.get_mut(group).unwrap();
                    for u in add {
                        g.insert(u.clone());
                    }
                    for u in remove {
                        g.remove(u);
                    }
                    Ok(())
                }
            } else if !s.groups.contains_key(group) {
                Err(AdapterError::Gone)
            } else if let Some(u) = unknown {
                Err(refused(format!("unknown user {u}")))
            } else if on_user {
                for u in add {
                    s.users.get_mut(u).unwrap().groups.insert(group.to_string());
                }
                for u in remove {
                    if let Some(u) = s.users.get_mut(u) {
                        u.groups.remove(group);
                    }
                }
                Ok(())
            } else {
                let g = s.groups.get_mut(group).unwrap();
                for u in add {
                    g.members.insert(u.clone());
                }
                for u in remove {
                    g.members.remove(u);
                }
                Ok(())
            }
        };
        self.answer("change_members", mode, result).await
    }

    fn unavailable(&self) -> Option<String> {
        self.0.state.lock().down.clone()
    }
}

// =============================================================================================
// Harness: one engine "life" per runtime, so that a crash drops every in-flight task
// =============================================================================================

fn rules() -> RoleRules {
    RoleRules {
        default: Some("Viewer".into()),
        rules: vec![RoleRule {
            group: Some("BI Admins".into()),
            role: "Admin".into(),
        }],
    }
}

fn settings(deadline: Duration) -> EngineSettings {
    EngineSettings {
        tenant: "t".into(),
        tenant_index: 0,
        rules: rules(),
        on_vendor_unavailable: OnVendorUnavailable::Queue,
        inline_deadline: deadline,
        sync_interval: Duration::from_secs(3600),
        purpose: "fake",
        attributes: Vec::new(),
        dry_run: false,
    }
}

fn ctx() -> RequestContext {
    RequestContext {
        base_url: "http://x/scim/v2".into(),
    }
}

fn no_pre() -> Precondition {
    Precondition::default()
}

struct Harness {
    dir: tempfile::TempDir,
    fake: FakeVendor,
    settings: EngineSettings,
    // Dropped in this order by `crash`.
    conn: Option<Arc<EngineConnector>>,
    engine: Option<Arc<Engine>>,
    rt: Option<tokio::runtime::Runtime>,
    store: Option<Store>,
}

impl Harness {
    fn new(fake: FakeVendor, deadline: Duration) -> Harness {
        Harness::with_rules(fake, deadline, rules())
    }

    fn with_rules(fake: FakeVendor, deadline: Duration, rules: RoleRules) -> Harness {
        let mut h = Harness {
            dir: tempfile::tempdir().unwrap(),
            fake,
            settings: EngineSettings {
                rules,
                ..settings(deadline)
            },
            conn: None,
            engine: None,
            rt: None,
            store: None,
        };
        h.start();
        h
    }

    /// Opens the store and the engine, reads the roles and observes, as the server does at
    /// start (retrying while the fake's faults make those calls fail).
    fn start(&mut self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // The previous life's database lock may take a moment to be released (sled's own
        // threads): retry briefly, as a restarted process would.
        let opened = Instant::now();
        let store = loop {
            match Store::open(self.dir.path()) {
                Ok(s) => break s,
                Err(e) if opened.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
        };
        let engine = Engine::open(
            &store,
            self.settings.clone(),
            Arc::new(self.fake.clone()),
            None,
            None,
        )
        .unwrap();
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match engine.load_roles().await {
                    Ok(t) => {
                        engine.set_roles(t);
                        break;
                    }
                    Err(Ok(p)) => panic!("rules do not resolve: {p:?}"),
                    Err(Err(_)) => {}
                }
                assert!(Instant::now() < deadline, "roles never loaded");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            loop {
                if engine.observe_now().await.is_ok() {
                    break;
                }
                assert!(Instant::now() < deadline, "observe never succeeded");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        self.conn = Some(Arc::new(EngineConnector(engine.clone())));
        self.engine = Some(engine);
        self.rt = Some(rt);
        self.store = Some(store);
    }

    /// kill -9: every in-flight call and task is dropped where it is; the store keeps what was
    /// committed. The fake vendor's state survives, as a real vendor's would.
    fn crash(&mut self) {
        self.conn = None;
        self.engine = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        self.store = None;
    }

    fn restart(&mut self) {
        self.crash();
        self.start();
    }

    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }
    fn conn(&self) -> &EngineConnector {
        self.conn.as_ref().unwrap()
    }
    fn engine(&self) -> &Arc<Engine> {
        self.engine.as_ref().unwrap()
    }

    // ---- IdP writes ------------------------------------------------------------------------

    fn create_user(&self, login: &str, given: &str) -> Result<String, ScimError> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": login,
            "name": {"givenName": given, "familyName": "Test"},
            "emails": [{"value": login, "type": "work", "primary": true}],
            "active": true,
        });
        let doc = self.run(self.conn().create(ResourceKind::User, body, &ctx()))?;
        Ok(doc["id"].as_str().unwrap().to_string())
    }

    fn create_group(&self, name: &str, members: &[&str]) -> Result<String, ScimError> {
        let members: Vec<Value> = members.iter().map(|m| json!({ "value": m })).collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            "members": members,
        });
        let doc = self.run(self.conn().create(ResourceKind::Group, body, &ctx()))?;
        Ok(doc["id"].as_str().unwrap().to_string())
    }

    fn patch(&self, kind: ResourceKind, id: &str, ops: Value) -> Result<Value, ScimError> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": ops,
        });
        let req = PatchRequest::from_json(&body).unwrap();
        self.run(self.conn().patch(kind, id, &req, &no_pre(), false, &ctx()))
    }

    fn set_given(&self, id: &str, given: &str) -> Result<Value, ScimError> {
        self.patch(
            ResourceKind::User,
            id,
            json!([{"op": "replace", "path": "name.givenName", "value": given}]),
        )
    }

    fn set_active(&self, id: &str, active: bool) -> Result<Value, ScimError> {
        self.patch(
            ResourceKind::User,
            id,
            json!([{"op": "replace", "path": "active", "value": active}]),
        )
    }

    fn add_member(&self, gid: &str, uid: &str) -> Result<Value, ScimError> {
        self.patch(
            ResourceKind::Group,
            gid,
            json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]),
        )
    }

    fn remove_member(&self, gid: &str, uid: &str) -> Result<Value, ScimError> {
        self.patch(
            ResourceKind::Group,
            gid,
            json!([{"op": "remove", "path": format!("members[value eq \"{uid}\"]")}]),
        )
    }

    fn delete_user(&self, id: &str) -> Result<(), ScimError> {
        self.run(self.conn().delete(ResourceKind::User, id, &no_pre()))
    }

    fn delete_group(&self, id: &str) -> Result<(), ScimError> {
        self.run(self.conn().delete(ResourceKind::Group, id, &no_pre()))
    }

    fn find_by_login(&self, login: &str) -> Vec<Value> {
        let filter = format!("userName eq \"{login}\"");
        let q = ListQuery::from_params([("filter", filter.as_str())]).unwrap();
        self.run(self.conn().list(ResourceKind::User, &q, false, &ctx()))
            .unwrap()
            .resources
    }

    fn all_scim(&self, kind: ResourceKind) -> Vec<Value> {
        let q = ListQuery::from_params([("count", "1000")]).unwrap();
        self.run(self.conn().list(kind, &q, true, &ctx()))
            .unwrap()
            .resources
    }

    // ---- delivery --------------------------------------------------------------------------

    /// Background delivery as the delivery loop does it, waiting out the backoff, until the
    /// outbox is empty (`false` on timeout).
    fn drain(&self, timeout: Duration) -> bool {
        let e = self.engine().clone();
        self.run(async move {
            let deadline = Instant::now() + timeout;
            loop {
                if e.outbox().is_empty() {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                e.deliver_due().await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    }

    /// Like `drain`, but an operator retries every entry now (failed or backing off), so a
    /// test does not wait out the exponential backoff.
    fn drain_now(&self, timeout: Duration) -> bool {
        let e = self.engine().clone();
        self.run(async move {
            let deadline = Instant::now() + timeout;
            loop {
                let ob = e.outbox();
                if ob.is_empty() {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                for (k, sid, _) in &ob {
                    let _ = e.retry_failed(*k, sid);
                }
                e.deliver_due().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn outbox_dump(&self) -> String {
        format!("{:#?}", self.engine().outbox())
    }
}

fn admin_rules_role(groups: &BTreeSet<String>) -> &'static str {
    if groups.contains("BI Admins") {
        ADMIN
    } else {
        VIEWER
    }
}

const LONG: Duration = Duration::from_secs(30);

fn user_on() -> FakeVendor {
    FakeVendor::new(MembershipModel::OnUser, Deactivation::Flag)
}
fn group_on() -> FakeVendor {
    FakeVendor::new(MembershipModel::OnGroup, Deactivation::Flag)
}

// =============================================================================================
// 1. Happy path
// =============================================================================================

fn happy_path(fake: FakeVendor) {
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("ann@x.io", "Ann").unwrap();
    // Created inline: the vendor has it by the time the IdP gets its 201.
    let u = fake.user("ann@x.io");
    assert!(u.active);
    assert_eq!(u.role.as_deref(), Some(VIEWER));
    assert_eq!(u.profile.given_name.as_deref(), Some("Ann"));

    let gid = h.create_group("BI Admins", &[]).unwrap();
    assert_eq!(fake.groups_named("BI Admins").len(), 1);
    h.add_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "outbox: {}", h.outbox_dump());

    let u = fake.user("ann@x.io");
    assert_eq!(u.role.as_deref(), Some(ADMIN), "rule BI Admins → Admin");
    assert_eq!(
        fake.group_names_of(&u.id),
        BTreeSet::from(["BI Admins".to_string()])
    );
    assert_eq!(fake.calls("create_user"), 1);
    assert_eq!(fake.calls("create_group"), 1);

    // Lookups are answered from the directory: not one vendor call.
    let before = fake.total_calls();
    let got = h
        .run(h.conn().get(ResourceKind::User, &uid, true, &ctx()))
        .unwrap();
    assert_eq!(got["userName"], "ann@x.io");
    assert_eq!(h.find_by_login("ann@x.io").len(), 1);
    let g = h
        .run(h.conn().get(ResourceKind::Group, &gid, true, &ctx()))
        .unwrap();
    assert_eq!(g["members"].as_array().map(Vec::len), Some(1));
    h.all_scim(ResourceKind::Group);
    assert_eq!(
        fake.total_calls(),
        before,
        "lookups called the vendor: {:?}",
        fake.log()
    );

    // Leaving the group takes the Admin role away again.
    h.remove_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "outbox: {}", h.outbox_dump());
    let u = fake.user("ann@x.io");
    assert_eq!(u.role.as_deref(), Some(VIEWER));
    assert!(fake.group_names_of(&u.id).is_empty());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn happy_path_membership_on_user() {
    happy_path(user_on());
}

#[test]
fn happy_path_membership_on_group() {
    happy_path(group_on());
}

// =============================================================================================
// 2. Transient faults inline: writes are accepted and queued, then delivered
// =============================================================================================

fn transient_outage(fake: FakeVendor) {
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    fake.fault(Target::Any, FaultKind::Transient, None);

    let uid = h
        .create_user("bob@x.io", "Bob")
        .expect("accepted while down");
    let gid = h
        .create_group("BI Admins", &[&uid])
        .expect("accepted while down");
    h.set_given(&uid, "Robert").expect("accepted while down");
    let other = h
        .create_user("cat@x.io", "Cat")
        .expect("accepted while down");
    h.create_group("Sales", &[&other, &uid])
        .expect("accepted while down");

    assert!(fake.all_users().is_empty() && fake.all_groups().is_empty());
    let queued = h.engine().outbox();
    assert!(
        queued
            .iter()
            .any(|(k, s, _)| *k == ResourceKind::User && *s == uid)
            && queued
                .iter()
                .any(|(k, s, _)| *k == ResourceKind::Group && *s == gid),
        "queued: {queued:#?}"
    );
    // A lookup sees the accepted writes.
    assert_eq!(h.find_by_login("bob@x.io").len(), 1);

    // A few failing background rounds, then the vendor comes back.
    for _ in 0..3 {
        h.run(h.engine().deliver_due());
    }
    fake.heal();
    assert!(h.drain(LONG), "not drained: {}", h.outbox_dump());

    let b = fake.user("bob@x.io");
    assert_eq!(b.profile.given_name.as_deref(), Some("Robert"));
    assert_eq!(b.role.as_deref(), Some(ADMIN));
    assert_eq!(
        fake.group_names_of(&b.id),
        BTreeSet::from(["BI Admins".to_string(), "Sales".to_string()])
    );
    let c = fake.user("cat@x.io");
    assert_eq!(c.role.as_deref(), Some(VIEWER));
    assert_eq!(
        fake.group_names_of(&c.id),
        BTreeSet::from(["Sales".to_string()])
    );
    assert_eq!(fake.all_users().len(), 2);
    assert_eq!(fake.all_groups().len(), 2);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn transient_outage_membership_on_user() {
    transient_outage(user_on());
}

#[test]
fn transient_outage_membership_on_group() {
    transient_outage(group_on());
}

// =============================================================================================
// 3. Coalescing
// =============================================================================================

#[test]
fn five_patches_while_down_cost_one_vendor_update() {
    let fake = user_on();
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let uid = h.create_user("dan@x.io", "Dan").unwrap();
    let vid = fake.user("dan@x.io").id;

    // The breaker is open: writes queue without trying.
    fake.set_down(Some("breaker open"));
    fake.reset_calls();
    for i in 1..=5 {
        h.set_given(&uid, &format!("Dan{i}")).unwrap();
    }
    assert_eq!(fake.total_calls(), 0, "tried while down: {:?}", fake.log());
    assert_eq!(h.engine().outbox().len(), 1);

    fake.heal();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let updates: Vec<_> = fake
        .log()
        .into_iter()
        .filter(|(op, arg)| *op == "update_user" && *arg == vid)
        .collect();
    assert_eq!(updates.len(), 1, "log: {:?}", fake.log());
    assert_eq!(
        fake.user("dan@x.io").profile.given_name.as_deref(),
        Some("Dan5")
    );
}

#[test]
fn five_patches_while_failing_cost_one_update_after_recovery() {
    let fake = user_on();
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let uid = h.create_user("eve@x.io", "Eve").unwrap();
    let vid = fake.user("eve@x.io").id;

    // The vendor answers 503 to everything (each write still tries once inline).
    fake.fault(Target::Any, FaultKind::Transient, None);
    for i in 1..=5 {
        h.set_given(&uid, &format!("Eve{i}")).unwrap();
    }
    assert_eq!(
        fake.user("eve@x.io").profile.given_name.as_deref(),
        Some("Eve")
    );
    fake.heal();
    fake.reset_calls();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let updates = fake
        .log()
        .into_iter()
        .filter(|(op, arg)| *op == "update_user" && *arg == vid)
        .count();
    assert_eq!(updates, 1, "log: {:?}", fake.log());
    assert_eq!(
        fake.user("eve@x.io").profile.given_name.as_deref(),
        Some("Eve5")
    );
}

// =============================================================================================
// 4. Permanent refusal inline
// =============================================================================================

#[test]
fn refused_create_is_a_4xx_and_not_kept() {
    let fake = group_on();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    fake.fault(
        Target::Op("create_user"),
        FaultKind::Refused { conflict: false },
        Some(1),
    );
    let err = h.create_user("fay@x.io", "Fay").unwrap_err();
    assert!(
        err.status == 400 || err.status == 409,
        "status {} ({})",
        err.status,
        err.detail
    );
    assert!(
        h.find_by_login("fay@x.io").is_empty(),
        "the refused user was kept"
    );
    assert!(h.all_scim(ResourceKind::User).is_empty());
    assert!(h.engine().outbox().is_empty(), "{}", h.outbox_dump());
    assert!(fake.all_users().is_empty());

    // A conflict is a 409.
    fake.fault(
        Target::Op("create_user"),
        FaultKind::Refused { conflict: true },
        Some(1),
    );
    let err = h.create_user("fay@x.io", "Fay").unwrap_err();
    assert_eq!(err.status, 409, "{}", err.detail);
    assert!(h.find_by_login("fay@x.io").is_empty());

    // The IdP's retry, once the vendor takes it, works: nothing of the refusal is left over.
    h.create_user("fay@x.io", "Fay").unwrap();
    assert_eq!(h.find_by_login("fay@x.io").len(), 1);
    fake.user("fay@x.io");
}

#[test]
fn refused_patch_is_a_4xx_and_rolled_back() {
    let fake = user_on();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("gil@x.io", "Gil").unwrap();
    fake.fault(
        Target::Op("update_user"),
        FaultKind::Refused { conflict: false },
        Some(1),
    );
    let err = h.set_given(&uid, "Gilbert").unwrap_err();
    assert_eq!(err.status, 400, "{}", err.detail);
    let doc = h
        .run(h.conn().get(ResourceKind::User, &uid, false, &ctx()))
        .unwrap();
    assert_eq!(doc["name"]["givenName"], "Gil");
    // The restored document is due again (it may itself have been queued); with nothing to
    // send, one delivery round clears it without a vendor call.
    let updates = fake.calls("update_user");
    h.run(h.engine().deliver_due());
    assert!(h.engine().outbox().is_empty(), "{}", h.outbox_dump());
    assert_eq!(fake.calls("update_user"), updates);
    assert_eq!(
        fake.user("gil@x.io").profile.given_name.as_deref(),
        Some("Gil")
    );
}

/// A refusal found by background delivery (the write was accepted while the vendor was down,
/// then the vendor refuses it for good): kept in the outbox as `failed` with the vendor's
/// reason, written to the audit log, counted, and not retried until the IdP writes again.
#[test]
fn a_refusal_found_in_the_background_is_failed_audited_and_not_retried() {
    use scim_bridge::store::audit::AuditEvent;
    let fake = user_on();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("ivy@x.io", "Ivy").unwrap();
    fake.fault(Target::Op("update_user"), FaultKind::Transient, Some(1));
    h.set_given(&uid, "Ivory").unwrap();
    assert_eq!(h.engine().outbox().len(), 1, "queued");
    fake.fault(
        Target::Op("update_user"),
        FaultKind::Refused { conflict: false },
        Some(1),
    );
    // Due now (an operator's retry skips the backoff), then one delivery round.
    let e = h.engine().clone();
    for (k, sid, _) in e.outbox() {
        e.retry_failed(k, &sid).unwrap();
    }
    h.run(e.deliver_due());
    let ob = h.engine().outbox();
    assert_eq!(ob.len(), 1, "{}", h.outbox_dump());
    assert!(ob[0].2.failed, "{}", h.outbox_dump());
    assert!(
        ob[0]
            .2
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("refused"),
        "{}",
        h.outbox_dump()
    );
    let refusals: Vec<_> = h
        .engine()
        .audit()
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::DeliveryRefused)
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].user_name, "ivy@x.io");
    assert!(refusals[0].detail.is_some());
    assert_eq!(h.engine().stats().failed, 1);
    assert_eq!(h.engine().stats().refused, 1);
    // Not retried by delivery…
    let calls = fake.calls("update_user");
    h.run(h.engine().deliver_due());
    assert_eq!(fake.calls("update_user"), calls);
    // …until the IdP writes the user again.
    h.set_given(&uid, "Ivy-Rose").unwrap();
    assert!(h.engine().outbox().is_empty(), "{}", h.outbox_dump());
    assert_eq!(
        fake.user("ivy@x.io").profile.given_name.as_deref(),
        Some("Ivy-Rose")
    );
}

/// Regression (found by this suite): A write queued by a transient failure (not yet at the vendor), then a
/// second write of the same object that the vendor refuses inline: the refusal rolls the second
/// write back and also drops the outbox mark, so the first write — still accepted, still in the
/// directory — is never delivered, not even by an operator's retry.
#[test]
fn a_refused_patch_keeps_an_earlier_queued_create() {
    let fake = user_on();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    fake.fault(Target::Op("create_user"), FaultKind::Transient, Some(1));
    let uid = h.create_user("ron@x.io", "Ron").expect("accepted, queued");
    assert_eq!(h.engine().outbox().len(), 1);
    fake.fault(
        Target::Op("create_user"),
        FaultKind::Refused { conflict: false },
        Some(1),
    );
    let err = h.set_active(&uid, false).unwrap_err();
    assert_eq!(err.status, 400);
    // The IdP's user is still there, as it was before the refused PATCH...
    assert_eq!(h.find_by_login("ron@x.io").len(), 1);
    // ...so the vendor must end up with it.
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.users_with_login("ron@x.io").len(),
        1,
        "SCIM user {uid} exists (accepted 201) but is never created at the vendor: \
         the refused PATCH's rollback removed its outbox entry; vendor log {:?}",
        fake.log()
    );
}

/// Regression (found by this suite) (same as above, for groups: `undo_group_change`).
#[test]
fn a_refused_group_patch_keeps_an_earlier_queued_group_create() {
    let fake = group_on();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("sam@x.io", "Sam").unwrap();
    fake.fault(Target::Op("create_group"), FaultKind::Transient, Some(1));
    let gid = h.create_group("Sales", &[]).expect("accepted, queued");
    fake.fault(
        Target::Op("create_group"),
        FaultKind::Refused { conflict: false },
        Some(1),
    );
    let err = h.add_member(&gid, &uid).unwrap_err();
    assert_eq!(err.status, 400);
    assert_eq!(h.all_scim(ResourceKind::Group).len(), 1);
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.groups_named("Sales").len(),
        1,
        "SCIM group {gid} exists but is never created at the vendor; log {:?}",
        fake.log()
    );
}

// =============================================================================================
// 5. Ambiguous create: applied by the vendor, answered with a timeout
// =============================================================================================

fn ambiguous_create(fake: FakeVendor) {
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    fake.fault(Target::Op("create_user"), FaultKind::Ambiguous, Some(1));
    let uid = h.create_user("hal@x.io", "Hal").expect("accepted, queued");
    assert_eq!(
        fake.users_with_login("hal@x.io").len(),
        1,
        "the vendor applied it"
    );
    assert!(!h.engine().outbox().is_empty());

    // An observe meanwhile must not adopt the vendor user as a second SCIM user.
    h.run(h.engine().observe_now()).unwrap();
    assert_eq!(h.all_scim(ResourceKind::User).len(), 1);

    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let u = fake.user("hal@x.io");
    assert_eq!(u.role.as_deref(), Some(VIEWER));

    // Linked: the SCIM user's next write reaches that very vendor user.
    h.set_given(&uid, "Harold").unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let after = fake.user("hal@x.io");
    assert_eq!(after.id, u.id);
    assert_eq!(after.profile.given_name.as_deref(), Some("Harold"));
    assert_eq!(fake.all_users().len(), 1);
    assert_eq!(h.all_scim(ResourceKind::User).len(), 1);
}

#[test]
fn ambiguous_create_membership_on_user() {
    ambiguous_create(user_on());
}

#[test]
fn ambiguous_create_membership_on_group() {
    ambiguous_create(group_on());
}

#[test]
fn ambiguous_group_create_and_membership() {
    let fake = group_on();
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let uid = h.create_user("ian@x.io", "Ian").unwrap();
    fake.fault(Target::Op("create_group"), FaultKind::Ambiguous, Some(1));
    fake.fault(Target::Op("change_members"), FaultKind::Ambiguous, Some(1));
    h.create_group("BI Admins", &[&uid])
        .expect("accepted, queued");
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(fake.groups_named("BI Admins").len(), 1);
    let u = fake.user("ian@x.io");
    assert_eq!(u.role.as_deref(), Some(ADMIN));
    assert_eq!(
        fake.group_names_of(&u.id),
        BTreeSet::from(["BI Admins".to_string()])
    );
}

/// Regression (found by this suite): A create the vendor applied but answered with a timeout, then the
/// IdP deletes the user before the outbox took the vendor user over: the engine deletes the
/// SCIM user locally (it has no vendor id) and never looks at the vendor, so the vendor keeps an
/// active user the IdP deleted; the next observe adopts it, and the IdP's re-create of that
/// userName is then refused 409.
fn delete_after_ambiguous_create(fake: FakeVendor) {
    let mut h = Harness::new(fake.clone(), Duration::from_millis(300));
    fake.fault(Target::Op("create_user"), FaultKind::Ambiguous, Some(1));
    let uid = h
        .create_user("quin@x.io", "Quin")
        .expect("accepted, queued");
    h.delete_user(&uid).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    h.restart();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let adopted = h.find_by_login("quin@x.io");
    let at_vendor = fake.users_with_login("quin@x.io");
    let recreate = h.create_user("quin@x.io", "Quin");
    assert!(
        at_vendor
            .iter()
            .all(|u| fake.0.caps.deactivation == Deactivation::Flag && !u.active),
        "the deleted user stays active at the vendor: {at_vendor:?}; \
         adopted back into the directory as {adopted:?}; the IdP's re-create answers {:?}",
        recreate.as_ref().map_err(|e| (e.status, e.detail.clone()))
    );
    assert!(adopted.is_empty(), "adopted: {adopted:?}");
    recreate.expect("re-create after delete");
}

#[test]
fn delete_after_an_ambiguous_create_removes_the_vendor_user_flag() {
    delete_after_ambiguous_create(user_on());
}

#[test]
fn delete_after_an_ambiguous_create_removes_the_vendor_user_delete() {
    delete_after_ambiguous_create(FakeVendor::new(
        MembershipModel::OnGroup,
        Deactivation::Delete,
    ));
}

/// Regression (found by this suite): An update the vendor applied but answered with a timeout (ambiguous),
/// then the IdP writes the old value back: the engine's applied state still holds the value from
/// before the ambiguous call, so it sees nothing to send and clears the outbox. The vendor keeps
/// the ambiguous value; the next observe even pulls it into the SCIM document, overriding the
/// IdP's last write.
fn ambiguous_update_then_revert(fake: FakeVendor) {
    let mut h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("tom@x.io", "Tom").unwrap();
    fake.fault(Target::Op("update_user"), FaultKind::Ambiguous, Some(1));
    h.set_active(&uid, false).expect("accepted, queued");
    assert!(!fake.user("tom@x.io").active, "the vendor applied it");
    h.set_active(&uid, true).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let vendor_active = fake.user("tom@x.io").active;
    h.restart();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let doc = h
        .run(h.conn().get(ResourceKind::User, &uid, false, &ctx()))
        .unwrap();
    assert!(
        vendor_active && fake.user("tom@x.io").active && doc["active"] != json!(false),
        "the IdP's last write is active=true; vendor active after delivery: \
         {vendor_active}, after a restart+observe: {}; SCIM document active: {}; log {:?}",
        fake.user("tom@x.io").active,
        doc["active"],
        fake.log()
    );
}

#[test]
fn an_ambiguous_update_then_a_revert_converges_on_user() {
    ambiguous_update_then_revert(user_on());
}

#[test]
fn an_ambiguous_update_then_a_revert_converges_on_group() {
    ambiguous_update_then_revert(group_on());
}

/// Regression (found by this suite) (the same for membership on the group: an ambiguous `change_members`
/// add, then the IdP removes the member again → the vendor keeps the member).
#[test]
fn an_ambiguous_member_add_then_remove_converges() {
    let fake = group_on();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("uma@x.io", "Uma").unwrap();
    let gid = h.create_group("BI Admins", &[]).unwrap();
    fake.fault(Target::Op("change_members"), FaultKind::Ambiguous, Some(1));
    h.add_member(&gid, &uid).expect("accepted, queued");
    h.remove_member(&gid, &uid).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let u = fake.user("uma@x.io");
    assert!(
        fake.group_names_of(&u.id).is_empty() && u.role.as_deref() == Some(VIEWER),
        "removed from BI Admins by the IdP, still in it at the vendor: groups {:?}, \
         role {:?}; log {:?}",
        fake.group_names_of(&u.id),
        u.role,
        fake.log()
    );
}

// =============================================================================================
// 6. Crash between two vendor calls
// =============================================================================================

#[test]
fn crash_between_group_create_and_membership_call() {
    let fake = group_on();
    let mut h = Harness::new(fake.clone(), Duration::from_millis(200));
    let uid = h.create_user("jo@x.io", "Jo").unwrap();
    // First call (create the group) goes through; the second (add the member) never answers.
    fake.fault(Target::Op("change_members"), FaultKind::Hang, Some(1));
    h.create_group("BI Admins", &[&uid])
        .expect("answered from the outbox after the inline deadline");
    assert_eq!(fake.groups_named("BI Admins").len(), 1);
    assert_eq!(fake.user("jo@x.io").role.as_deref(), Some(VIEWER));

    h.restart();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let groups = fake.groups_named("BI Admins");
    assert_eq!(groups.len(), 1, "{groups:?}");
    let u = fake.user("jo@x.io");
    assert_eq!(u.role.as_deref(), Some(ADMIN));
    assert_eq!(
        fake.group_names_of(&u.id),
        BTreeSet::from(["BI Admins".to_string()])
    );
    assert_eq!(fake.calls("create_group"), 1);
    assert_eq!(h.all_scim(ResourceKind::Group).len(), 1);
    assert_eq!(h.all_scim(ResourceKind::User).len(), 1);
}

fn crash_after_vendor_applied_create(fake: FakeVendor) {
    let mut h = Harness::new(fake.clone(), Duration::from_millis(200));
    fake.fault(Target::Op("create_user"), FaultKind::ApplyThenHang, Some(1));
    let uid = h.create_user("kim@x.io", "Kim").expect("queued");
    assert_eq!(fake.users_with_login("kim@x.io").len(), 1);
    h.restart();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let u = fake.user("kim@x.io");
    assert!(u.active);
    assert_eq!(u.role.as_deref(), Some(VIEWER));
    assert_eq!(
        h.all_scim(ResourceKind::User).len(),
        1,
        "adopted as a second user"
    );
    h.set_given(&uid, "Kimberly").unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let after = fake.user("kim@x.io");
    assert_eq!(after.id, u.id);
    assert_eq!(after.profile.given_name.as_deref(), Some("Kimberly"));
}

#[test]
fn crash_after_vendor_applied_create_on_user() {
    crash_after_vendor_applied_create(user_on());
}

#[test]
fn crash_after_vendor_applied_create_on_group() {
    crash_after_vendor_applied_create(group_on());
}

#[test]
fn crash_mid_membership_fan_out_on_user() {
    // Membership on the user: the group is created, then each member's group list is written.
    let fake = user_on();
    let mut h = Harness::new(fake.clone(), Duration::from_millis(200));
    let a = h.create_user("lea@x.io", "Lea").unwrap();
    let b = h.create_user("max@x.io", "Max").unwrap();
    fake.fault(Target::Op("update_user"), FaultKind::ApplyThenHang, Some(1));
    fake.fault(Target::Op("update_user"), FaultKind::Hang, Some(1));
    h.create_group("BI Admins", &[&a, &b]).unwrap();
    h.restart();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    for login in ["lea@x.io", "max@x.io"] {
        let u = fake.user(login);
        assert_eq!(u.role.as_deref(), Some(ADMIN), "{login}");
        assert_eq!(
            fake.group_names_of(&u.id),
            BTreeSet::from(["BI Admins".to_string()])
        );
    }
    assert_eq!(fake.groups_named("BI Admins").len(), 1);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

// =============================================================================================
// 7. Re-create after delete (deactivation by flag)
// =============================================================================================

#[test]
fn recreate_after_delete_reuses_the_deactivated_vendor_user() {
    let fake = user_on();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let gid = h.create_group("BI Admins", &[]).unwrap();
    let uid = h.create_user("ned@x.io", "Ned").unwrap();
    h.add_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG));
    let first = fake.user("ned@x.io");
    assert_eq!(first.role.as_deref(), Some(ADMIN));

    h.delete_user(&uid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let gone = fake.user("ned@x.io");
    assert_eq!(gone.id, first.id);
    assert!(!gone.active, "deleted → deactivated");

    // An observe while deactivated does not adopt it back.
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.find_by_login("ned@x.io").is_empty());

    let again = h.create_user("ned@x.io", "Ned").unwrap();
    assert_ne!(again, uid);
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let back = fake.user("ned@x.io");
    assert_eq!(back.id, first.id, "a second vendor user");
    assert!(back.active);
    // Not in BI Admins any more: the rules give the default role, and no stale membership.
    assert_eq!(back.role.as_deref(), Some(VIEWER));
    assert!(
        fake.group_names_of(&back.id).is_empty(),
        "{:?}",
        fake.group_names_of(&back.id)
    );
    assert_eq!(fake.all_users().len(), 1);
    // And the new SCIM user is linked to it.
    h.set_given(&again, "Edward").unwrap();
    assert!(h.drain(LONG));
    assert_eq!(
        fake.user("ned@x.io").profile.given_name.as_deref(),
        Some("Edward")
    );
}

/// Regression (found by this suite) (see the report / the assertion message). Delete and re-create both
/// queued while the vendor fails, then delivered in one round where the deactivation of the old
/// SCIM user is slow: the re-created user must end active at the vendor.
#[test]
fn recreate_after_delete_both_queued_with_a_slow_deactivation_ends_active() {
    let fake = user_on();
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let uid = h.create_user("oli@x.io", "Oli").unwrap();
    let vid = fake.user("oli@x.io").id;
    fake.fault(Target::Writes, FaultKind::Transient, Some(2));
    h.delete_user(&uid).unwrap();
    let again = h.create_user("oli@x.io", "Oli").unwrap();
    assert_eq!(fake.calls("update_user") + fake.calls("create_user"), 3);
    assert!(fake.user("oli@x.io").active);
    // The next update (the old user's deactivation, first in the round) is slow.
    fake.fault(
        Target::Op("update_user"),
        FaultKind::Delay(Duration::from_millis(400)),
        Some(1),
    );
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let u = fake.user("oli@x.io");
    assert_eq!(u.id, vid);
    assert!(
        u.active,
        "the re-created SCIM user {again} is active but its vendor user {vid} ended \
         deactivated; vendor log: {:?}",
        fake.log()
    );
    // And it stays linked: a later write reaches it.
    h.set_given(&again, "Olivia").unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let u = fake.user("oli@x.io");
    assert!(u.active);
    assert_eq!(u.profile.given_name.as_deref(), Some("Olivia"));
}

#[test]
fn delete_deactivation_removes_and_recreates() {
    let fake = FakeVendor::new(MembershipModel::OnGroup, Deactivation::Delete);
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("pat@x.io", "Pat").unwrap();
    h.set_active(&uid, false).unwrap();
    assert!(h.drain(LONG));
    assert!(
        fake.users_with_login("pat@x.io").is_empty(),
        "inactive → deleted"
    );
    h.set_active(&uid, true).unwrap();
    assert!(h.drain(LONG));
    assert!(fake.user("pat@x.io").active);
    h.delete_user(&uid).unwrap();
    assert!(h.drain(LONG));
    assert!(fake.users_with_login("pat@x.io").is_empty());
}

// =============================================================================================
// 7b. Roles as role groups (RoleModel::Groups: ThoughtSpot, Metabase)
// =============================================================================================

fn groups_fake() -> FakeVendor {
    FakeVendor::with_roles(
        MembershipModel::OnGroup,
        Deactivation::Flag,
        RoleModel::Groups,
    )
}

/// `BI Admins` → Admin, and no `default`.
fn rules_without_default() -> RoleRules {
    RoleRules {
        default: None,
        ..rules()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The `change_members` calls on role groups in the vendor log.
fn role_group_calls(fake: &FakeVendor) -> Vec<String> {
    fake.log()
        .into_iter()
        .filter(|(op, arg)| *op == "change_members" && arg.starts_with("r-"))
        .map(|(_, arg)| arg)
        .collect()
}

/// A user in the rule's group moves into its role group and out of the default's; leaving
/// every rule group with a `default` moves it back.
#[test]
fn groups_role_joining_the_rule_group_moves_into_its_role_group() {
    let fake = groups_fake();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("ada@x.io", "Ada").unwrap();
    let vid = fake.user("ada@x.io").id;
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "{:?}",
        fake.log()
    );
    assert_eq!(
        fake.user("ada@x.io").role,
        None,
        "no role attribute is written"
    );

    let gid = h.create_group("BI Admins", &[]).unwrap();
    fake.reset_calls();
    h.add_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(fake.role_groups_of(&vid), set(&[ADMIN]), "{:?}", fake.log());
    assert_eq!(fake.group_names_of(&vid), set(&["BI Admins"]));
    assert_eq!(
        role_group_calls(&fake),
        vec![
            format!("{VIEWER} +[] -[\"{vid}\"]"),
            format!("{ADMIN} +[\"{vid}\"] -[]")
        ],
        "added to the new role group first, then removed from the old one only"
    );
    // Role groups are not mirrored groups: never adopted into the directory.
    h.run(h.engine().observe_now()).unwrap();
    assert_eq!(h.all_scim(ResourceKind::Group).len(), 1);
    assert_eq!(fake.role_groups_of(&vid), set(&[ADMIN]));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn groups_role_leaving_every_rule_group_with_a_default_moves_back() {
    let fake = groups_fake();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("bea@x.io", "Bea").unwrap();
    let gid = h.create_group("BI Admins", &[&uid]).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let vid = fake.user("bea@x.io").id;
    assert_eq!(fake.role_groups_of(&vid), set(&[ADMIN]), "{:?}", fake.log());
    h.remove_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "{:?}",
        fake.log()
    );
    assert!(fake.group_names_of(&vid).is_empty());
    h.run(h.engine().observe_now()).unwrap();
    assert_eq!(fake.role_groups_of(&vid), set(&[VIEWER]));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// No `default`: a user the IdP wrote whom no rule covers is in no role group (NO_ROLE), not
/// "left as it is" (which would keep the Admin role the IdP took away).
#[test]
fn groups_role_leaving_every_rule_group_without_a_default_ends_in_no_role_group() {
    let fake = groups_fake();
    let h = Harness::with_rules(
        fake.clone(),
        Duration::from_secs(5),
        rules_without_default(),
    );
    let uid = h.create_user("cy@x.io", "Cy").unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let vid = fake.user("cy@x.io").id;
    assert!(fake.role_groups_of(&vid).is_empty(), "{:?}", fake.log());
    assert!(
        role_group_calls(&fake).is_empty(),
        "nothing to move: {:?}",
        fake.log()
    );
    let gid = h.create_group("BI Admins", &[&uid]).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(fake.role_groups_of(&vid), set(&[ADMIN]), "{:?}", fake.log());
    h.remove_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert!(
        fake.role_groups_of(&vid).is_empty(),
        "left BI Admins, no default: in no role group; has {:?}; log {:?}",
        fake.role_groups_of(&vid),
        fake.log()
    );
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert!(fake.role_groups_of(&vid).is_empty());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// Users the vendor had before the bridge (adopted, never written by the IdP) keep their role
/// groups — one, none or two — through observes, restarts and an edit of the rules, while the
/// IdP provisions others. A membership the IdP gives makes a user the IdP's (write_path): from
/// then on the rules apply to it.
#[test]
fn groups_role_an_adopted_user_keeps_its_role_group() {
    let fake = groups_fake();
    let designer = fake.add_vendor_user_by_hand("old@x.io", &[DESIGNER]);
    let nobody = fake.add_vendor_user_by_hand("none@x.io", &[]);
    let two = fake.add_vendor_user_by_hand("two@x.io", &[VIEWER, ADMIN]);
    let mut h = Harness::new(fake.clone(), Duration::from_secs(5));
    for login in ["old@x.io", "none@x.io", "two@x.io"] {
        assert_eq!(h.find_by_login(login).len(), 1, "{login} adopted at start");
    }
    let uid = h.create_user("new@x.io", "New").unwrap();
    h.create_group("BI Admins", &[&uid]).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    // The rules are edited (no default any more) and the bridge restarts.
    h.settings.rules = rules_without_default();
    h.restart();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&designer),
        set(&[DESIGNER]),
        "{:?}",
        fake.log()
    );
    assert!(fake.role_groups_of(&nobody).is_empty(), "{:?}", fake.log());
    assert_eq!(
        fake.role_groups_of(&two),
        set(&[VIEWER, ADMIN]),
        "{:?}",
        fake.log()
    );
    for vid in [&designer, &nobody, &two] {
        assert!(
            !role_group_calls(&fake)
                .iter()
                .any(|c| c.contains(vid.as_str())),
            "an adopted user's role groups were written: {:?}",
            fake.log()
        );
    }
    assert_eq!(
        fake.role_groups_of(&fake.user("new@x.io").id),
        set(&[ADMIN])
    );

    // The IdP puts the adopted Designer in BI Admins: the IdP's now, so the rules apply.
    let sid = h.find_by_login("old@x.io")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let gid = h.all_scim(ResourceKind::Group)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.add_member(&gid, &sid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&designer),
        set(&[ADMIN]),
        "{:?}",
        fake.log()
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// Two role groups at the vendor (someone added the user by hand): the next observe leaves it
/// in exactly the one the rules say — and in none when no rule covers it and there is no
/// default.
#[test]
fn groups_role_two_role_groups_by_hand_end_in_the_rules_one_after_an_observe() {
    let fake = groups_fake();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    h.create_user("dee@x.io", "Dee").unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let vid = fake.user("dee@x.io").id;
    assert_eq!(fake.role_groups_of(&vid), set(&[VIEWER]));

    fake.set_role_groups_by_hand(&vid, &[VIEWER, ADMIN]);
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "{:?}",
        fake.log()
    );

    // Two role groups, neither the rules' one.
    fake.set_role_groups_by_hand(&vid, &[DESIGNER, ADMIN]);
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "{:?}",
        fake.log()
    );

    // One other role group (moved by hand).
    fake.set_role_groups_by_hand(&vid, &[DESIGNER]);
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "{:?}",
        fake.log()
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());

    // No default: two role groups by hand → none.
    let fake = groups_fake();
    let h = Harness::with_rules(
        fake.clone(),
        Duration::from_secs(5),
        rules_without_default(),
    );
    h.create_user("eli@x.io", "Eli").unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let vid = fake.user("eli@x.io").id;
    fake.set_role_groups_by_hand(&vid, &[DESIGNER, ADMIN]);
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert!(fake.role_groups_of(&vid).is_empty(), "{:?}", fake.log());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// Regression (found by the role-group suite): a role moved by hand at the vendor, then an IdP
/// write of the user's profile before the next observe. The update's answer carries the
/// vendor's role; `align_user` recorded it as applied without moving the user (its role move was
/// decided before the answer), so the next observe saw no drift and the hand-made role stayed.
/// Now the answer's role is put back in the same reconcile.
fn role_by_hand_then_profile_write(fake: FakeVendor) {
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("fox@x.io", "Fox").unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let vid = fake.user("fox@x.io").id;
    let role_of = |fake: &FakeVendor| -> BTreeSet<String> {
        if fake.role_groups_model() {
            fake.role_groups_of(&vid)
        } else {
            fake.user("fox@x.io").role.into_iter().collect()
        }
    };
    assert_eq!(role_of(&fake), set(&[VIEWER]));
    // By hand: Designer.
    if fake.role_groups_model() {
        fake.set_role_groups_by_hand(&vid, &[DESIGNER]);
    } else {
        fake.0.state.lock().users.get_mut(&vid).unwrap().role = Some(DESIGNER.into());
    }
    h.set_given(&uid, "Foxy").unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    assert_eq!(
        role_of(&fake),
        set(&[VIEWER]),
        "a role changed by hand is not put back by the observe after an IdP profile write \
         (the update's answer made it the applied role); log {:?}",
        fake.log()
    );
}

#[test]
fn groups_role_moved_by_hand_then_a_profile_write_is_corrected_by_the_next_observe() {
    role_by_hand_then_profile_write(groups_fake());
}

#[test]
fn attribute_role_changed_by_hand_then_a_profile_write_is_corrected_by_the_next_observe() {
    role_by_hand_then_profile_write(group_on());
}

/// A few delivery rounds, each cut off after 200 ms (a hung call is dropped where it is).
fn deliver_briefly(h: &Harness) {
    // No clone of the engine outlives this: a restart must be able to reopen the store.
    let e = h.engine().clone();
    h.run(async move {
        for _ in 0..10 {
            let _ = tokio::time::timeout(Duration::from_millis(200), e.deliver_due()).await;
        }
    });
}

/// kill -9 between removing the user from the old role group and adding it to the new one
/// (out of the old one first, so a vendor that refuses the removal leaves it in one): after the
/// restart it ends in exactly one role group (the rules' one, also when the rules' answer
/// changed meanwhile).
#[test]
fn groups_role_a_kill_between_adding_and_removing_converges_to_exactly_one() {
    let fake = groups_fake();
    let mut h = Harness::new(fake.clone(), Duration::from_millis(200));
    let uid = h.create_user("gus@x.io", "Gus").unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let vid = fake.user("gus@x.io").id;
    // The add to Admin never answers.
    fake.fault(
        Target::OpArg("change_members", "r-admin +[\""),
        FaultKind::Hang,
        Some(1),
    );
    let gid = h.create_group("BI Admins", &[&uid]).unwrap();
    deliver_briefly(&h);
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[]),
        "killed between the two calls; log {:?}",
        fake.log()
    );
    h.restart();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    assert_eq!(fake.role_groups_of(&vid), set(&[ADMIN]), "{:?}", fake.log());

    // Again, killed after the add to Viewer was applied (the IdP took the user out of BI
    // Admins); after the restart the IdP puts it back.
    fake.fault(
        Target::OpArg("change_members", "r-viewer +[\""),
        FaultKind::ApplyThenHang,
        Some(1),
    );
    h.remove_member(&gid, &uid).unwrap();
    deliver_briefly(&h);
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "killed after the add was applied; log {:?}",
        fake.log()
    );
    h.crash();
    h.start();
    h.add_member(&gid, &uid).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    assert_eq!(fake.role_groups_of(&vid), set(&[ADMIN]), "{:?}", fake.log());
    h.remove_member(&gid, &uid).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "{:?}",
        fake.log()
    );
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    assert_eq!(
        fake.role_groups_of(&vid),
        set(&[VIEWER]),
        "{:?}",
        fake.log()
    );
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

/// The audit log names the roles of a move, and "(no role group)" for none.
#[test]
fn groups_role_moves_are_audited_by_role_name() {
    let fake = groups_fake();
    let h = Harness::with_rules(
        fake.clone(),
        Duration::from_secs(5),
        rules_without_default(),
    );
    let uid = h.create_user("hui@x.io", "Hui").unwrap();
    let gid = h.create_group("BI Admins", &[]).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    h.add_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    h.remove_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let moves = role_moves(&h, "hui@x.io");
    assert_eq!(
        moves,
        vec![
            (Some("(no role group)".to_string()), "Admin".to_string()),
            (Some("Admin".to_string()), "(no role group)".to_string()),
        ]
    );

    // With a default: the new user's first role group is audited too.
    let fake = groups_fake();
    let h = Harness::new(fake.clone(), Duration::from_secs(5));
    let uid = h.create_user("ina@x.io", "Ina").unwrap();
    let gid = h.create_group("BI Admins", &[]).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    h.add_member(&gid, &uid).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let moves = role_moves(&h, "ina@x.io");
    assert_eq!(
        moves,
        vec![
            (Some("(no role group)".to_string()), "Viewer".to_string()),
            (Some("Viewer".to_string()), "Admin".to_string()),
        ]
    );
}

/// Regression (found by the role-group suite, shrunk from
/// `every_fault_and_restart_converges_role_groups` and `converges_transient_faults_and_
/// restarts_on_group`, which hit it about once in 300-600 cases); no fault needed: a member of
/// a group is deleted by the IdP (deactivation by flag: the vendor keeps it), then created again
/// with the same login; the re-created user is in no group, and the vendor user it takes over
/// must not stay in the group (a deleted user's groups are now marked to drop it).
fn recreate_after_delete_leaves_no_stale_membership(fake: FakeVendor) {
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let uid = h.create_user("u0@x.io", "Init").unwrap();
    let gid = h.create_group("Ops", &[]).unwrap();
    h.add_member(&gid, &uid).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let vid = fake.user("u0@x.io").id;
    assert_eq!(fake.group_names_of(&vid), set(&["Ops"]));
    h.delete_user(&uid).unwrap();
    h.create_user("u0@x.io", "Init").unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let u = fake.user("u0@x.io");
    assert!(u.active);
    assert!(
        fake.group_names_of(&u.id).is_empty(),
        "the re-created user is in no SCIM group, its vendor user {} is still in {:?}; log {:?}",
        u.id,
        fake.group_names_of(&u.id),
        fake.log()
    );
}

#[test]
fn recreate_after_delete_leaves_no_stale_membership_on_group() {
    recreate_after_delete_leaves_no_stale_membership(group_on());
}

#[test]
fn recreate_after_delete_leaves_no_stale_membership_role_groups() {
    recreate_after_delete_leaves_no_stale_membership(groups_fake());
}

/// Regression (found by the role-group suite): the same, and the re-created user then joins the
/// group again. The group's reconcile both added the vendor user (for the new SCIM user) and
/// removed it (the deleted SCIM user's confirmed membership) in one `change_members` — applied
/// in that order (as ThoughtSpot's ADD then REMOVE calls), the user ended outside the group the
/// IdP put it in. A vendor user another member now holds is no longer removed.
fn recreate_after_delete_then_rejoin(fake: FakeVendor) {
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let uid = h.create_user("u1@x.io", "Init").unwrap();
    let gid = h.create_group("Ops", &[&uid]).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    h.delete_user(&uid).unwrap();
    let again = h.create_user("u1@x.io", "Init").unwrap();
    h.add_member(&gid, &again).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    h.run(h.engine().observe_now()).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let u = fake.user("u1@x.io");
    assert_eq!(
        fake.group_names_of(&u.id),
        set(&["Ops"]),
        "the re-created user is in Ops at the IdP; log {:?}",
        fake.log()
    );
}

#[test]
fn recreate_after_delete_then_rejoin_keeps_the_membership_on_group() {
    recreate_after_delete_then_rejoin(group_on());
}

#[test]
fn recreate_after_delete_then_rejoin_keeps_the_membership_role_groups() {
    recreate_after_delete_then_rejoin(groups_fake());
}

// =============================================================================================
// 7c. A deleted group's confirmed members are given to `delete_group`
// =============================================================================================

fn deleted_group_members(fake: FakeVendor) {
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let a = h.create_user("jan@x.io", "Jan").unwrap();
    let b = h.create_user("kai@x.io", "Kai").unwrap();
    let c = h.create_user("lou@x.io", "Lou").unwrap();
    let gid = h.create_group("Sales", &[&a, &b]).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    let vg = fake.groups_named("Sales")[0].id.clone();
    // Lou's add is applied, its answer lost (settled by the next delivery).
    fake.fault(Target::Op("change_members"), FaultKind::Ambiguous, Some(1));
    h.add_member(&gid, &c).expect("accepted, queued");
    // Kai leaves before the delete: not a member any more.
    fake.fault(Target::Writes, FaultKind::Transient, None);
    h.remove_member(&gid, &b).expect("accepted, queued");
    fake.heal();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    h.delete_group(&gid).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    assert!(fake.groups_named("Sales").is_empty());
    let deleted = fake.deleted_members();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].0, vg);
    let got: BTreeSet<String> = deleted[0].1.iter().cloned().collect();
    let want = set(&[&fake.user("jan@x.io").id, &fake.user("lou@x.io").id]);
    assert_eq!(got, want, "log {:?}", fake.log());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[test]
fn deleting_a_group_passes_its_confirmed_members_to_delete_group() {
    deleted_group_members(group_on());
}

#[test]
fn deleting_a_group_passes_its_confirmed_members_to_delete_group_role_groups() {
    deleted_group_members(groups_fake());
}

/// A group deleted while the members' adds are still unknown (lost answers): those members are
/// passed too (removing a non-member is a no-op).
#[test]
fn deleting_a_group_passes_members_whose_add_was_unknown() {
    let fake = group_on();
    let h = Harness::new(fake.clone(), Duration::from_millis(300));
    let a = h.create_user("max@x.io", "Max").unwrap();
    let gid = h.create_group("Ops", &[]).unwrap();
    assert!(h.drain(LONG), "{}", h.outbox_dump());
    fake.fault(Target::Op("change_members"), FaultKind::Ambiguous, Some(1));
    fake.fault(Target::Writes, FaultKind::Transient, Some(1));
    h.add_member(&gid, &a).expect("accepted, queued");
    h.delete_group(&gid).unwrap();
    assert!(h.drain_now(LONG), "{}", h.outbox_dump());
    let deleted = fake.deleted_members();
    assert_eq!(deleted.len(), 1, "{deleted:?}; log {:?}", fake.log());
    assert_eq!(
        deleted[0].1,
        vec![fake.user("max@x.io").id],
        "log {:?}",
        fake.log()
    );
}

// =============================================================================================
// 8. Property: any sequence of IdP writes, faults and restarts converges
// =============================================================================================

const LOGINS: [&str; 4] = ["u0@x.io", "u1@x.io", "u2@x.io", "u3@x.io"];
const GROUPS: [&str; 3] = ["BI Admins", "Sales", "Ops"];
const GIVEN: [&str; 3] = ["Alpha", "Beta", "Gamma"];

#[derive(Debug, Clone)]
enum Op {
    CreateUser(usize),
    SetGiven(usize, usize),
    SetActive(usize, bool),
    DeleteUser(usize),
    CreateGroup(usize),
    AddMember(usize, usize),
    RemoveMember(usize, usize),
    FailNext(usize),
    AmbiguousNext,
    RefuseNext,
    DeliverDue,
    Restart,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..LOGINS.len()).prop_map(Op::CreateUser),
        2 => (0..LOGINS.len(), 0..GIVEN.len()).prop_map(|(u, g)| Op::SetGiven(u, g)),
        2 => (0..LOGINS.len(), any::<bool>()).prop_map(|(u, a)| Op::SetActive(u, a)),
        1 => (0..LOGINS.len()).prop_map(Op::DeleteUser),
        2 => (0..GROUPS.len()).prop_map(Op::CreateGroup),
        4 => (0..GROUPS.len(), 0..LOGINS.len()).prop_map(|(g, u)| Op::AddMember(g, u)),
        2 => (0..GROUPS.len(), 0..LOGINS.len()).prop_map(|(g, u)| Op::RemoveMember(g, u)),
        2 => (1usize..4).prop_map(Op::FailNext),
        2 => Just(Op::AmbiguousNext),
        1 => Just(Op::RefuseNext),
        1 => Just(Op::DeliverDue),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone)]
struct MUser {
    sid: String,
    given: String,
    active: bool,
}

#[derive(Default, Debug)]
struct Model {
    users: BTreeMap<usize, MUser>,
    /// group index → (SCIM id, member user indexes)
    groups: BTreeMap<usize, (String, BTreeSet<usize>)>,
    /// Logins the IdP created at some point.
    ever: BTreeSet<usize>,
}

/// `ambiguous_creates`: whether an "ambiguous next write" may hit a user create (which meets a
/// known engine bug when the user is deleted before the take-over; see
/// `delete_after_an_ambiguous_create_removes_the_vendor_user`).
fn run_sequence(
    membership: MembershipModel,
    deactivation: Deactivation,
    ambiguous_creates: bool,
    refusals: bool,
    ops: &[Op],
) {
    run_sequence_with(
        membership,
        deactivation,
        RoleModel::Attribute,
        rules(),
        ambiguous_creates,
        refusals,
        ops,
    )
}

/// Role rules for the role-groups property: two rule groups, no `default` (a user in neither
/// is in no role group).
fn rules_two_rules_no_default() -> RoleRules {
    RoleRules {
        default: None,
        rules: vec![
            RoleRule {
                group: Some("BI Admins".into()),
                role: "Admin".into(),
            },
            RoleRule {
                group: Some("Sales".into()),
                role: "Designer".into(),
            },
        ],
    }
}

/// The role id the rules give a user in these groups (`None`: no rule and no default).
fn rules_role(rules: &RoleRules, groups: &BTreeSet<String>) -> Option<&'static str> {
    let id = |name: &str| match name {
        "Viewer" => VIEWER,
        "Designer" => DESIGNER,
        "Admin" => ADMIN,
        other => panic!("unknown role {other}"),
    };
    rules
        .rules
        .iter()
        .find(|r| r.group.as_ref().is_some_and(|g| groups.contains(g)))
        .map(|r| id(&r.role))
        .or(rules.default.as_deref().map(id))
}

fn run_sequence_with(
    membership: MembershipModel,
    deactivation: Deactivation,
    role_model: RoleModel,
    role_rules: RoleRules,
    ambiguous_creates: bool,
    refusals: bool,
    ops: &[Op],
) {
    let fake = FakeVendor::with_roles(membership, deactivation.clone(), role_model);
    let mut h = Harness::with_rules(fake.clone(), Duration::from_millis(300), role_rules.clone());
    let mut m = Model::default();
    let mut trace = Vec::new();
    for op in ops {
        let outcome: String = match op.clone() {
            Op::CreateUser(i) => {
                let r = h.create_user(LOGINS[i], "Init");
                match (&r, m.users.contains_key(&i)) {
                    (Ok(sid), false) => {
                        m.users.insert(
                            i,
                            MUser {
                                sid: sid.clone(),
                                given: "Init".into(),
                                active: true,
                            },
                        );
                        m.ever.insert(i);
                    }
                    (Ok(sid), true) => panic!("a second SCIM user {sid} for {}", LOGINS[i]),
                    (Err(e), _) => assert!(e.status == 400 || e.status == 409, "{e:?}"),
                }
                format!("{:?}", r.map(|_| ()))
            }
            Op::SetGiven(i, g) => match m.users.get(&i).cloned() {
                None => "skip".into(),
                Some(u) => {
                    let r = h.set_given(&u.sid, GIVEN[g]);
                    match &r {
                        Ok(_) => m.users.get_mut(&i).unwrap().given = GIVEN[g].into(),
                        Err(e) => assert!(e.status == 400 || e.status == 409, "{e:?}"),
                    }
                    format!("{:?}", r.map(|_| ()))
                }
            },
            Op::SetActive(i, a) => match m.users.get(&i).cloned() {
                None => "skip".into(),
                Some(u) => {
                    let r = h.set_active(&u.sid, a);
                    match &r {
                        Ok(_) => m.users.get_mut(&i).unwrap().active = a,
                        Err(e) => assert!(e.status == 400 || e.status == 409, "{e:?}"),
                    }
                    format!("{:?}", r.map(|_| ()))
                }
            },
            Op::DeleteUser(i) => match m.users.get(&i).cloned() {
                None => "skip".into(),
                Some(u) => {
                    let r = h.delete_user(&u.sid);
                    r.clone().expect("a delete is not refused");
                    m.users.remove(&i);
                    for (_, members) in m.groups.values_mut() {
                        members.remove(&i);
                    }
                    format!("{r:?}")
                }
            },
            Op::CreateGroup(g) => {
                let r = h.create_group(GROUPS[g], &[]);
                match (&r, m.groups.contains_key(&g)) {
                    (Ok(sid), false) => {
                        m.groups.insert(g, (sid.clone(), BTreeSet::new()));
                    }
                    (Ok(sid), true) => panic!("a second SCIM group {sid} named {}", GROUPS[g]),
                    (Err(e), _) => assert!(e.status == 400 || e.status == 409, "{e:?}"),
                }
                format!("{:?}", r.map(|_| ()))
            }
            Op::AddMember(g, i) | Op::RemoveMember(g, i) => {
                let add = matches!(op, Op::AddMember(..));
                match (m.groups.get(&g).cloned(), m.users.get(&i).cloned()) {
                    (Some((gsid, _)), Some(u)) => {
                        let r = if add {
                            h.add_member(&gsid, &u.sid)
                        } else {
                            h.remove_member(&gsid, &u.sid)
                        };
                        match &r {
                            Ok(_) => {
                                let members = &mut m.groups.get_mut(&g).unwrap().1;
                                if add {
                                    members.insert(i);
                                } else {
                                    members.remove(&i);
                                }
                            }
                            Err(e) => assert!(e.status == 400 || e.status == 409, "{e:?}"),
                        }
                        format!("{:?}", r.map(|_| ()))
                    }
                    _ => "skip".into(),
                }
            }
            Op::FailNext(k) => {
                fake.fault(Target::Any, FaultKind::Transient, Some(k));
                String::new()
            }
            Op::AmbiguousNext if !ambiguous_creates && !refusals => "disabled".into(),
            Op::AmbiguousNext => {
                let target = if ambiguous_creates {
                    Target::Writes
                } else {
                    Target::WritesBut("create_user")
                };
                fake.fault(target, FaultKind::Ambiguous, Some(1));
                String::new()
            }
            Op::RefuseNext if !refusals => "disabled".into(),
            Op::RefuseNext => {
                fake.fault(
                    Target::Writes,
                    FaultKind::Refused { conflict: false },
                    Some(1),
                );
                String::new()
            }
            Op::DeliverDue => {
                h.run(h.engine().deliver_due());
                String::new()
            }
            Op::Restart => {
                h.restart();
                String::new()
            }
        };
        trace.push(format!("{op:?} → {outcome}"));
    }

    // Heal, let the in-flight work settle, restart once more (a restart at the end must not
    // lose anything), and drain with an operator's retry of everything left.
    fake.heal();
    assert!(
        h.drain_now(Duration::from_secs(20)),
        "not drained; trace {trace:#?}\noutbox {}",
        h.outbox_dump()
    );
    h.restart();
    assert!(h.drain_now(Duration::from_secs(20)), "{}", h.outbox_dump());

    let ctx = format!(
        "trace: {trace:#?}\nmodel: {m:#?}\nvendor users: {:#?}\nvendor groups: {:#?}\nlog: {:?}",
        fake.all_users(),
        fake.all_groups(),
        fake.log()
    );
    assert!(
        fake.violations().is_empty(),
        "{:?}\n{ctx}",
        fake.violations()
    );

    // No login has two vendor users, no group name two vendor groups.
    let mut logins = BTreeMap::new();
    for u in fake.all_users() {
        *logins.entry(u.profile.login.to_lowercase()).or_insert(0) += 1;
    }
    assert!(
        logins.values().all(|n| *n == 1),
        "duplicate vendor users {logins:?}\n{ctx}"
    );
    let mut names = BTreeMap::new();
    for g in fake.all_groups() {
        *names.entry(g.name.to_lowercase()).or_insert(0) += 1;
    }
    assert!(
        names.values().all(|n| *n == 1),
        "duplicate vendor groups {names:?}\n{ctx}"
    );

    // The directory is what the IdP wrote (nothing adopted behind its back, nothing lost).
    let scim_users = h.all_scim(ResourceKind::User);
    assert_eq!(
        scim_users.len(),
        m.users.len(),
        "SCIM users {scim_users:#?}\n{ctx}"
    );
    for (i, u) in &m.users {
        let doc = h
            .run(
                h.conn()
                    .get(ResourceKind::User, &u.sid, false, &self::ctx_req()),
            )
            .unwrap_or_else(|e| panic!("user {} lost: {e:?}\n{ctx}", LOGINS[*i]));
        assert_eq!(doc["name"]["givenName"], u.given.as_str(), "{ctx}");
        assert_eq!(doc["active"].as_bool().unwrap_or(true), u.active, "{ctx}");
    }
    assert_eq!(
        h.all_scim(ResourceKind::Group).len(),
        m.groups.len(),
        "{ctx}"
    );

    // Every vendor group mirrors a SCIM group.
    for g in m.groups.keys() {
        assert_eq!(
            fake.groups_named(GROUPS[*g]).len(),
            1,
            "group {}\n{ctx}",
            GROUPS[*g]
        );
    }

    // Every SCIM user as desired at the vendor.
    for (i, u) in &m.users {
        let want_groups: BTreeSet<String> = m
            .groups
            .iter()
            .filter(|(_, (_, members))| members.contains(i))
            .map(|(g, _)| GROUPS[*g].to_string())
            .collect();
        let found = fake.users_with_login(LOGINS[*i]);
        if !u.active && deactivation == Deactivation::Delete {
            assert!(
                found.is_empty(),
                "inactive {} kept at the vendor\n{ctx}",
                LOGINS[*i]
            );
            continue;
        }
        assert_eq!(found.len(), 1, "vendor users for {}\n{ctx}", LOGINS[*i]);
        let v = &found[0];
        assert_eq!(v.active, u.active, "active of {}\n{ctx}", LOGINS[*i]);
        assert_eq!(
            v.profile.given_name.as_deref(),
            Some(u.given.as_str()),
            "givenName of {}\n{ctx}",
            LOGINS[*i]
        );
        if role_model == RoleModel::Groups {
            // Exactly the rules' role group, or none; never a role attribute.
            let want: BTreeSet<String> = rules_role(&role_rules, &want_groups)
                .into_iter()
                .map(str::to_string)
                .collect();
            assert_eq!(
                fake.role_groups_of(&v.id),
                want,
                "role groups of {}\n{ctx}\nrole groups: {:?}",
                LOGINS[*i],
                fake.0.state.lock().role_groups
            );
            assert_eq!(v.role, None, "{ctx}");
        } else {
            assert_eq!(
                v.role.as_deref(),
                Some(admin_rules_role(&want_groups)),
                "role of {}\n{ctx}",
                LOGINS[*i]
            );
        }
        assert_eq!(
            fake.group_names_of(&v.id),
            want_groups,
            "groups of {}\n{ctx}",
            LOGINS[*i]
        );
    }

    // Users the IdP deleted: deactivated (flag) or absent (delete).
    for i in m.ever.iter().filter(|i| !m.users.contains_key(i)) {
        for v in fake.users_with_login(LOGINS[*i]) {
            assert!(
                deactivation == Deactivation::Flag && !v.active,
                "deleted {} still at the vendor: {v:?}\n{ctx}",
                LOGINS[*i]
            );
        }
    }
    // And nothing else at the vendor.
    for v in fake.all_users() {
        assert!(
            LOGINS
                .iter()
                .enumerate()
                .any(|(i, l)| m.ever.contains(&i) && l.eq_ignore_ascii_case(&v.profile.login)),
            "unexpected vendor user {v:?}\n{ctx}"
        );
    }
    h.crash();
}

fn ctx_req() -> RequestContext {
    ctx()
}

fn prop_config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("ENGINE_PROP_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(24),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(prop_config())]

    // Every fault: transient, ambiguous (applied, then a lost answer), refused, and restarts.
    // The shrunk cases they found are kept as the named regression tests above
    // (`delete_after_an_ambiguous_create_*`, `a_refused_*`, `an_ambiguous_update_*`).
    #[test]
    fn every_fault_and_restart_converges_membership_on_user(ops in prop::collection::vec(op_strategy(), 1..24)) {
        run_sequence(MembershipModel::OnUser, Deactivation::Flag, true, true, &ops);
    }

    #[test]
    fn every_fault_and_restart_converges_membership_on_group(ops in prop::collection::vec(op_strategy(), 1..24)) {
        run_sequence(MembershipModel::OnGroup, Deactivation::Flag, true, true, &ops);
    }

    #[test]
    fn every_fault_and_restart_converges_membership_on_group_deactivation_delete(ops in prop::collection::vec(op_strategy(), 1..24)) {
        run_sequence(MembershipModel::OnGroup, Deactivation::Delete, true, true, &ops);
    }

    // The same with transient faults and restarts only: more of each run reaches the deeper
    // interleavings instead of stopping at a refusal.
    #[test]
    fn converges_transient_faults_and_restarts_on_user(ops in prop::collection::vec(op_strategy(), 1..24)) {
        run_sequence(MembershipModel::OnUser, Deactivation::Flag, false, false, &ops);
    }

    #[test]
    fn converges_transient_faults_and_restarts_on_group(ops in prop::collection::vec(op_strategy(), 1..24)) {
        run_sequence(MembershipModel::OnGroup, Deactivation::Flag, false, false, &ops);
    }

    #[test]
    fn converges_transient_faults_and_restarts_deactivation_delete(ops in prop::collection::vec(op_strategy(), 1..24)) {
        run_sequence(MembershipModel::OnUser, Deactivation::Delete, false, false, &ops);
    }

    // Roles as role groups (ThoughtSpot, Metabase): membership on the group, deactivation by
    // flag or by deletion, rules with a default (`BI Admins` → Admin, else Viewer) or without
    // (`BI Admins` → Admin, `Sales` → Designer, else no role group); every fault and restarts.
    // Like the other OnGroup properties it meets, about once in 300-600 cases, the engine bug
    // of `recreate_after_delete_leaves_no_stale_membership_*` (delete, then re-create a member).
    #[test]
    fn every_fault_and_restart_converges_role_groups(
        ops in prop::collection::vec(op_strategy(), 1..24),
        delete in any::<bool>(),
        with_default in any::<bool>(),
    ) {
        run_sequence_with(
            MembershipModel::OnGroup,
            if delete { Deactivation::Delete } else { Deactivation::Flag },
            RoleModel::Groups,
            if with_default { rules() } else { rules_two_rules_no_default() },
            true,
            true,
            &ops,
        );
    }
}

/// The role moves the audit log records for `user`: (from, to), by name.
fn role_moves(h: &Harness, user: &str) -> Vec<(Option<String>, String)> {
    h.engine()
        .audit()
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.event == scim_bridge::store::audit::AuditEvent::RoleChange && e.user_name == user
        })
        .map(|e| (e.from, e.to))
        .collect()
}

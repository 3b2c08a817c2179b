//! The Metabase adapter: users, permission groups, role groups (Administrators among them) and
//! `login_attributes` over Metabase's REST API. Wire code only; the engine decides what to
//! send. [A.n] is vendors-sisense-metabase.md part A.
//!
//! Vendor calls per engine step (each one logical operation, safe to repeat):
//! - create a user: one `POST /api/user` with `All Users`, the names and the mapped
//!   `login_attributes`; the role group and the mirrored groups follow, one
//!   `POST /api/permissions/membership` each;
//! - change a user: one `PUT /api/user/:id` (names, email, `login_attributes`), preceded by one
//!   `GET /api/user/:id` when an attribute changed (Metabase replaces the whole map, and the
//!   keys the bridge does not map are kept);
//! - deactivate: `DELETE /api/user/:id`; reactivate: `PUT /api/user/:id/reactivate`, then the
//!   role group again (reactivation drops Administrators [A.3]);
//! - membership: one `POST /api/permissions/membership` per member added and one
//!   `DELETE /api/permissions/membership/:id` per member removed, by the membership id the
//!   adapter keeps (read with one `GET /api/permissions/membership` when it has none);
//! - lookups: `GET /api/user?status=all&query=<email>` and `GET /api/permissions/group`, only
//!   when the engine's index has no answer.
//!
//! A PUT on an inactive user is 404 [A.3]. The bridge does not reactivate a user to change it:
//! the engine holds profile and attribute changes of an inactive user (`writable_while_inactive`
//! is false) and sends them when the IdP reactivates it, so a leaver never regains access for
//! an edit. Membership changes are sent at once (Metabase accepts them for inactive users).

use super::wire::{self, MbError};
use crate::connector::http::{
    CreateOutcome, VendorClient, VendorError, VendorRequest, VendorResponse,
};
use crate::engine::adapter::{
    AdapterError, AdapterResult, Capabilities, Created, Deactivation, MembershipModel, NewUser,
    Profile, Refusal, Removed, RoleCatalog, RoleInfo, RoleModel, UserChange, VendorAdapter,
    VendorGroup, VendorUser, NO_ROLE,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Membership calls in flight at once for one group change (Metabase has no bulk add).
const MEMBERSHIP_FAN_OUT: usize = 8;

const VENDOR: &str = "Metabase";

/// What the adapter learnt when it resolved the rules' roles.
#[derive(Default)]
struct Known {
    all_users: Option<u64>,
    admin: Option<u64>,
    /// The user the bridge signs in as: never demoted or deactivated by it, or the tenant
    /// would lock itself out (every call needs an admin).
    me: Option<u64>,
    /// Vendor ids of the role groups the rules name.
    role_groups: HashSet<u64>,
    /// Their names, lower-cased: a SCIM group may not take one over.
    role_group_names: HashSet<String>,
    /// Whether the roles were resolved (until then a user's role group is not told).
    resolved: bool,
}

/// Membership ids by (user, group) [A.5]: removals go by membership id.
///
/// Once read in full (at start of need, and at every sync) the map is complete: a pair it lacks
/// is not a membership, and costs no call. A membership made by hand since the last read is
/// then unknown until the next sync, whose observe sees it and reconciles it.
#[derive(Default)]
struct MembershipIds {
    ids: HashMap<(u64, u64), u64>,
    /// Bumped by every full read, so that concurrent misses read once.
    generation: u64,
    /// Whether every membership is in `ids` (false until a full read, and after an answer that
    /// left one out).
    complete: bool,
    /// Bumped by every add and removal, so that a full read that overlapped one is not trusted
    /// as complete (its snapshot may predate the change).
    writes: u64,
}

pub struct MetabaseAdapter {
    client: VendorClient,
    /// The role names the rules and the default use.
    rule_roles: Vec<String>,
    /// The `login_attributes` keys `[tenants.attributes]` maps.
    attributes: Vec<String>,
    known: RwLock<Known>,
    memberships: Mutex<MembershipIds>,
    membership_read: tokio::sync::Mutex<()>,
    caps: Capabilities,
}

/// A vendor id as Metabase's integer (the engine keeps ids as text).
fn num(id: &str) -> AdapterResult<u64> {
    id.parse().map_err(|_| AdapterError::Refused {
        vendor: VENDOR,
        reason: format!("\"{id}\" is not a Metabase id"),
        kind: Refusal::Invalid,
    })
}

fn non_blank(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl MetabaseAdapter {
    pub fn new(client: VendorClient, rule_roles: Vec<String>, attributes: Vec<String>) -> Self {
        MetabaseAdapter {
            client,
            rule_roles,
            attributes,
            known: RwLock::new(Known::default()),
            memberships: Mutex::new(MembershipIds::default()),
            membership_read: tokio::sync::Mutex::new(()),
            caps: Capabilities {
                vendor: VENDOR,
                // Admin is membership of Administrators; other "roles" are permission groups.
                role: RoleModel::Groups,
                membership: MembershipModel::OnGroup,
                // DELETE /api/user/:id deactivates; PUT …/reactivate undoes it [A.3].
                deactivation: Deactivation::Flag,
                // There is no hard delete [A.3]: an IdP DELETE deactivates too.
                removal: Deactivation::Flag,
                // A PUT on an inactive user is 404 [A.3].
                writable_while_inactive: false,
                // Reactivation forces is_superuser = false [A.3].
                reactivation_strips_role: true,
                // Metabase keys users by email [A.3].
                required_user_attributes: &["emails"],
                keeps_login: false,
                reports_last_login: true,
                immutable_user_attributes: &[],
            },
        }
    }

    async fn send(&self, req: VendorRequest) -> Result<VendorResponse, VendorError> {
        self.client.send(req).await
    }

    async fn all_groups(&self) -> Result<Vec<wire::Group>, VendorError> {
        let resp = self
            .send(VendorRequest::get(wire::path("permissions/group")))
            .await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        resp.json()
    }

    /// The names of Metabase's groups (for `config check --online`).
    pub async fn group_names(&self) -> Result<Vec<String>, VendorError> {
        Ok(self
            .all_groups()
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect())
    }

    /// Signs in and confirms that the bridge's user is an admin (every call it makes needs
    /// one [A.3–A.5]): `Rejected` 403 when it is not.
    pub async fn check_admin(&self) -> Result<(), VendorError> {
        let me = self.current_user().await?;
        if me.is_superuser == Some(false) {
            return Err(VendorError::Rejected {
                status: 403,
                body: "the bridge's Metabase user is not in Administrators".into(),
            });
        }
        Ok(())
    }

    /// The user the bridge is signed in as (an API key's hidden user, or the password's).
    async fn current_user(&self) -> Result<wire::User, VendorError> {
        let resp = self
            .send(VendorRequest::get(wire::path("user/current")))
            .await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        resp.json()
    }

    /// Refuses to take admin or access from the user the bridge signs in as.
    fn spare_myself(&self, user: u64, what: &str) -> AdapterResult<()> {
        if self.known.read().me == Some(user) {
            return Err(AdapterError::Refused {
                vendor: VENDOR,
                reason: format!(
                    "the bridge signs in to Metabase as this user, and would lock itself out: {what} is not sent (sign the bridge in with an API key to manage this person from the IdP)"
                ),
                kind: Refusal::Invalid,
            });
        }
        Ok(())
    }

    /// Resolves the rules' role names to permission groups: `Administrators` (or "Admin") is
    /// the admin group, found by its `magic_group_type`; any other name is a group by that
    /// name. A name Metabase has no group for stays out of the catalog, and the role table
    /// reports it: the bridge never creates one.
    pub async fn resolve_roles(&self) -> AdapterResult<RoleCatalog> {
        let groups = self.all_groups().await?;
        let me = self.current_user().await?;
        let mut known = Known {
            resolved: true,
            me: Some(me.id),
            admin: groups.iter().find(|g| g.is_admin()).map(|g| g.id),
            all_users: groups.iter().find(|g| g.is_all_users()).map(|g| g.id),
            ..Known::default()
        };
        let mut catalog = RoleCatalog::default();
        for name in &self.rule_roles {
            if wire::names_all_users(name) {
                // Refused by the offline check; never resolved.
                continue;
            }
            // The admin group by its type, so a renamed or translated one is found too.
            let found = groups
                .iter()
                .find(|g| g.name.eq_ignore_ascii_case(name))
                .or_else(|| {
                    wire::names_admin(name)
                        .then(|| groups.iter().find(|g| g.is_admin()))
                        .flatten()
                });
            let Some(g) = found else { continue };
            if g.is_all_users() {
                continue;
            }
            known.role_groups.insert(g.id);
            known.role_group_names.insert(g.name.to_lowercase());
            catalog.roles.push(RoleInfo {
                id: g.id.to_string(),
                names: vec![name.clone(), g.name.clone()],
                display: g.name.clone(),
                // The Administrators group is `is_superuser` [A.3], by its type, renamed or not.
                admin: g.is_admin(),
            });
        }
        *self.known.write() = known;
        Ok(catalog)
    }

    /// The id of "All Users", which every membership list must hold [A.3].
    async fn all_users_id(&self) -> AdapterResult<u64> {
        if let Some(id) = self.known.read().all_users {
            return Ok(id);
        }
        let groups = self.all_groups().await?;
        let id = groups
            .iter()
            .find(|g| g.is_all_users())
            .map(|g| g.id)
            .ok_or_else(|| AdapterError::transient("Metabase lists no \"All Users\" group"))?;
        self.known.write().all_users = Some(id);
        Ok(id)
    }

    fn is_role_group(&self, id: u64) -> bool {
        self.known.read().role_groups.contains(&id)
    }

    /// A name the IdP may not give a mirrored group: the magic groups and the role groups.
    fn reserved(&self, name: &str) -> Option<AdapterError> {
        let why = if wire::names_all_users(name) || wire::names_admin(name) {
            format!("\"{name}\" is a Metabase built-in group the bridge never mirrors (Administrators membership comes from the role rules)")
        } else if self
            .known
            .read()
            .role_group_names
            .contains(&name.to_lowercase())
        {
            format!("\"{name}\" is a role group, whose members the role rules decide")
        } else {
            return None;
        };
        Some(AdapterError::Refused {
            vendor: VENDOR,
            reason: why,
            kind: Refusal::Conflict,
        })
    }

    async fn group_named(&self, name: &str) -> Result<Option<wire::Group>, VendorError> {
        Ok(self
            .all_groups()
            .await?
            .into_iter()
            .find(|g| g.name.eq_ignore_ascii_case(name)))
    }

    /// Whether a group exists (`GET /api/permissions/group/:id`).
    async fn group_exists(&self, id: u64) -> Result<bool, VendorError> {
        let resp = self
            .send(VendorRequest::get(wire::path(&format!(
                "permissions/group/{id}"
            ))))
            .await?;
        match resp.status {
            404 => Ok(false),
            _ if resp.is_success() => Ok(true),
            _ => Err(resp.rejected()),
        }
    }

    /// The user holding an email, active or not. `query` is a substring match over names and
    /// email [A.3], so the answer is filtered for the exact email.
    async fn user_by_email(&self, email: &str) -> Result<Option<wire::User>, VendorError> {
        let req = VendorRequest::get(wire::path("user"))
            .query("status", "all")
            .query("query", email);
        let resp = self.send(req).await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        let page: wire::UserPage = resp.json()?;
        Ok(page
            .data
            .into_iter()
            .find(|u| u.email.eq_ignore_ascii_case(email)))
    }

    /// One user by id, active or not (`None`: Metabase has no such user).
    async fn user_by_id(&self, id: u64) -> Result<Option<wire::User>, VendorError> {
        let resp = self
            .send(VendorRequest::get(wire::path(&format!("user/{id}"))))
            .await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.is_success() => Ok(Some(resp.json()?)),
            _ => Err(resp.rejected()),
        }
    }

    /// The role group a user holds, from its group ids: none (`NO_ROLE`), one, or unknown
    /// (two exclusive role groups, or roles not resolved yet: the engine then sets the one the
    /// rules say and takes the user out of the others).
    fn role_of(&self, groups: Option<&[u64]>) -> Option<String> {
        let known = self.known.read();
        if !known.resolved {
            return None;
        }
        let held: Vec<u64> = groups?
            .iter()
            .copied()
            .filter(|g| known.role_groups.contains(g))
            .collect();
        match held.as_slice() {
            [] => Some(NO_ROLE.to_string()),
            [one] => Some(one.to_string()),
            _ => None,
        }
    }

    /// The user as the engine sees it: `email` is the login, `login_attributes` limited to the
    /// mapped keys, and its groups (observe maps the mirrored ones).
    fn neutral(&self, u: &wire::User) -> VendorUser {
        let groups = u.groups();
        let all = u.attributes();
        let attributes: BTreeMap<String, String> = self
            .attributes
            .iter()
            .filter_map(|k| all.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        let email = u.email.to_lowercase();
        VendorUser {
            id: u.id.to_string(),
            profile: Some(Profile {
                login: email.clone(),
                email: Some(email),
                given_name: non_blank(&u.first_name),
                family_name: non_blank(&u.last_name),
                display_name: None,
                attributes,
            }),
            active: u.is_active,
            role: self.role_of(groups.as_deref()),
            groups: groups.map(|g| g.iter().map(u64::to_string).collect()),
            last_login: u
                .last_login
                .as_deref()
                .and_then(crate::engine::observe::normalise_last_login),
        }
    }

    /// Every user, active or not, page by page [A.2, A.3].
    async fn all_users(&self) -> AdapterResult<Vec<VendorUser>> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let req = VendorRequest::get(wire::path("user"))
                .query("status", "all")
                .query("limit", wire::PAGE_SIZE.to_string())
                .query("offset", offset.to_string());
            let resp = self.send(req).await?;
            if !resp.is_success() {
                return Err(resp.rejected().into());
            }
            let page: wire::UserPage = resp.json()?;
            let n = page.data.len();
            crate::engine::observe::users_page_read(n, page.total);
            out.extend(page.data.iter().map(|u| self.neutral(u)));
            offset += n;
            if n < wire::PAGE_SIZE || page.total.is_some_and(|t| offset >= t) {
                return Ok(out);
            }
        }
    }

    /// Maps a Metabase error answer to the engine's classes, carrying Metabase's message.
    fn refusal(&self, resp: &VendorResponse, what: &str) -> AdapterError {
        let e = MbError::parse(&resp.body);
        let detail = e
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_else(|| format!("HTTP {}", resp.status));
        let refused = |kind| AdapterError::Refused {
            vendor: VENDOR,
            reason: format!("the {what}: {detail}"),
            kind,
        };
        match resp.status {
            // The last admin cannot lose admin [A.3, A.5]: refused while Metabase has no other
            // active admin, and tried again at each sync (one may be added meanwhile).
            400 if detail == wire::message::LAST_ADMIN => refused(Refusal::Capacity),
            400 if detail == wire::message::GROUP_EXISTS => refused(Refusal::Conflict),
            400 if e.as_ref().and_then(|e| e.field.as_deref()) == Some("email")
                && detail.contains("already") =>
            {
                refused(Refusal::Conflict)
            }
            // 402: a paid feature (group managers); 400/409/422: the change itself.
            400 | 402 | 409 | 422 => refused(Refusal::Invalid),
            // 401/403 (the bridge's user is no admin) and the rest: an operator can fix them,
            // so they are retried.
            status => AdapterError::transient(format!(
                "Metabase answered the {what} with HTTP {status}: {detail}"
            )),
        }
    }

    /// `PUT /api/user/:id` with `body`; the user as Metabase answers. A 404 is an inactive
    /// user [A.3] or a gone one: gone is `Gone`; an inactive one is not written.
    async fn put_user(&self, id: u64, body: &Value, what: &str) -> AdapterResult<wire::User> {
        let req = VendorRequest::put(wire::path(&format!("user/{id}"))).json(body.clone());
        let resp = self.send(req).await?;
        if resp.is_success() {
            return Ok(resp.json()?);
        }
        if resp.status != 404 {
            return Err(self.refusal(&resp, what));
        }
        match self.user_by_id(id).await? {
            None => Err(AdapterError::Gone),
            // Deactivated by hand while the IdP has it active: never reactivated to be written
            // (that would give access back). Retried; the next sync pulls the deactivation in,
            // and the change then waits for the IdP's reactivation.
            Some(u) if u.is_active == Some(false) => Err(AdapterError::transient(format!(
                "the user was deactivated in Metabase; the {what} waits for the next sync"
            ))),
            Some(_) => Err(self.refusal(&resp, what)),
        }
    }

    /// `PUT /api/user/:id/reactivate` [A.3]; an active user is left as it is.
    async fn reactivate(&self, id: u64) -> AdapterResult<()> {
        let req = VendorRequest::put(wire::path(&format!("user/{id}/reactivate")));
        let resp = self.send(req).await?;
        if resp.is_success() {
            return Ok(());
        }
        let e = MbError::parse(&resp.body);
        match resp.status {
            404 => Err(AdapterError::Gone),
            400 if e.is_some_and(|e| e.message == wire::message::ALREADY_ACTIVE) => Ok(()),
            _ => Err(self.refusal(&resp, "user reactivation")),
        }
    }

    /// `DELETE /api/user/:id`: deactivation [A.3]. Metabase answers an unknown id with a 500
    /// (no row updated), so a failure is followed by a lookup that tells "gone".
    async fn deactivate(&self, id: u64) -> AdapterResult<()> {
        self.spare_myself(id, "its deactivation")?;
        let req = VendorRequest::delete(wire::path(&format!("user/{id}")));
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(e) => {
                return match self.user_by_id(id).await {
                    Ok(None) => Err(AdapterError::Gone),
                    _ => Err(e.into()),
                }
            }
        };
        if resp.is_success() {
            return Ok(());
        }
        if resp.status == 404 {
            // Some builds answer an already inactive user so (UNVERIFIED [A.3]).
            return match self.user_by_id(id).await? {
                None => Err(AdapterError::Gone),
                Some(u) if u.is_active == Some(false) => Ok(()),
                Some(_) => Err(self.refusal(&resp, "user deactivation")),
            };
        }
        Err(self.refusal(&resp, "user deactivation"))
    }

    /// The `PUT /api/user/:id` body for the changed fields; `login_attributes` is the user's
    /// whole map with the mapped keys set or removed (Metabase replaces the map [A.3], and
    /// keys set by SSO or by hand stay).
    async fn profile_body(
        &self,
        id: u64,
        p: &Profile,
        changed: &[&'static str],
    ) -> AdapterResult<Map<String, Value>> {
        let view = self.vendor_view(p);
        let mut body = Map::new();
        let has = |f: &str| changed.contains(&f);
        if has("login") || has("email") {
            if let Some(e) = &view.email {
                body.insert("email".into(), json!(e));
            }
        }
        if has("given_name") {
            body.insert("first_name".into(), json!(view.given_name));
        }
        if has("family_name") {
            body.insert("last_name".into(), json!(view.family_name));
        }
        if has("attributes") && !self.attributes.is_empty() {
            let current = self
                .user_by_id(id)
                .await?
                .ok_or(AdapterError::Gone)?
                .login_attributes
                .unwrap_or_default();
            let mut merged: Map<String, Value> = current
                .into_iter()
                .filter(|(k, _)| !self.attributes.contains(k))
                .collect();
            for (k, v) in &view.attributes {
                merged.insert(k.clone(), json!(v));
            }
            body.insert("login_attributes".into(), Value::Object(merged));
        }
        Ok(body)
    }

    /// Reads every membership id once (`GET /api/permissions/membership`, inactive users
    /// included [A.5]) unless another caller did since `seen`.
    async fn read_memberships(&self, seen: u64) -> Result<(), VendorError> {
        let _flight = self.membership_read.lock().await;
        let writes_before = {
            let m = self.memberships.lock();
            if m.generation != seen {
                return Ok(());
            }
            m.writes
        };
        let resp = self
            .send(VendorRequest::get(wire::path("permissions/membership")))
            .await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        let all: HashMap<String, Vec<wire::Membership>> = resp.json()?;
        let ids = all
            .into_values()
            .flatten()
            .map(|m| ((m.user_id, m.group_id), m.membership_id))
            .collect();
        let mut m = self.memberships.lock();
        m.ids = ids;
        m.generation += 1;
        m.complete = m.writes == writes_before;
        Ok(())
    }

    /// The membership id of a user in a group; `None`: not a member.
    async fn membership_id(&self, user: u64, group: u64) -> Result<Option<u64>, VendorError> {
        let seen = {
            let m = self.memberships.lock();
            if let Some(id) = m.ids.get(&(user, group)) {
                return Ok(Some(*id));
            }
            if m.complete {
                return Ok(None);
            }
            m.generation
        };
        self.read_memberships(seen).await?;
        Ok(self.memberships.lock().ids.get(&(user, group)).copied())
    }

    /// Adds a user to a group. A membership that exists already counts as done [A.5].
    async fn add_member(&self, group: u64, user: &str) -> AdapterResult<()> {
        let uid = num(user)?;
        let req = VendorRequest::post(wire::path("permissions/membership"))
            .json(json!({"group_id": group, "user_id": uid}))
            // Repeating it is safe: the second add meets the duplicate, which counts as done.
            .idempotent();
        let resp = match self.send(req).await {
            Ok(r) => r,
            Err(e) => {
                // The add may have been made, its id unknown.
                self.memberships.lock().complete = false;
                return Err(e.into());
            }
        };
        let made = if resp.is_success() {
            // The answer is the group's active members with their membership ids (an inactive
            // user's is not among them).
            resp.json::<Vec<wire::Member>>()
                .ok()
                .and_then(|members| members.into_iter().find(|m| m.user_id == uid))
        } else if wire::is_duplicate_membership(resp.status, &resp.body) {
            None
        } else if resp.status == 404 {
            if !self.group_exists(group).await? {
                return Err(AdapterError::Gone);
            }
            return Err(AdapterError::transient(
                "a member is not in Metabase (yet); retried after it is",
            ));
        } else {
            return Err(self.refusal(&resp, "membership add"));
        };
        let mut m = self.memberships.lock();
        m.writes += 1;
        match made {
            Some(member) => {
                m.ids.insert((uid, group), member.membership_id);
            }
            // A membership whose id the answer did not give: read at the next need.
            None => m.complete = false,
        }
        Ok(())
    }

    /// Removes a user from a group by its membership id; a non-member is nothing to do.
    async fn remove_member(&self, group: u64, user: &str) -> AdapterResult<()> {
        let uid = num(user)?;
        if self.known.read().admin == Some(group) {
            self.spare_myself(uid, "its removal from Administrators")?;
        }
        for _ in 0..2 {
            let Some(mid) = self.membership_id(uid, group).await? else {
                return Ok(());
            };
            let req = VendorRequest::delete(wire::path(&format!("permissions/membership/{mid}")));
            let resp = self.send(req).await?;
            if resp.is_success() {
                let mut m = self.memberships.lock();
                m.ids.remove(&(uid, group));
                m.writes += 1;
                return Ok(());
            }
            if resp.status != 404 {
                return Err(self.refusal(&resp, "membership removal"));
            }
            // A membership id gone stale (removed by hand, or re-added under a new id): read
            // the ids again.
            let mut m = self.memberships.lock();
            m.ids.remove(&(uid, group));
            m.complete = false;
        }
        Ok(())
    }
}

#[async_trait]
impl VendorAdapter for MetabaseAdapter {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Metabase keeps one email (lower-cased [A.3]), which is also its login; first and last
    /// name (non-blank or null); the mapped `login_attributes`. No display name.
    fn vendor_view(&self, p: &Profile) -> Profile {
        let email = p
            .email
            .clone()
            .or_else(|| p.login.contains('@').then(|| p.login.clone()))
            .map(|e| e.trim().to_lowercase());
        Profile {
            login: email.clone().unwrap_or_else(|| p.login.to_lowercase()),
            email,
            given_name: non_blank(&p.given_name),
            family_name: non_blank(&p.family_name),
            display_name: None,
            attributes: p.attributes.clone(),
        }
    }

    /// Signs in and resolves the rules' role groups.
    async fn roles(&self) -> AdapterResult<RoleCatalog> {
        self.resolve_roles().await
    }

    async fn create_user(&self, user: &NewUser) -> AdapterResult<Created<VendorUser>> {
        let view = self.vendor_view(&user.profile);
        let Some(email) = view.email.clone() else {
            return Err(AdapterError::Refused {
                vendor: VENDOR,
                reason: "Metabase keys users by email: the user has none".into(),
                kind: Refusal::Invalid,
            });
        };
        let all_users = self.all_users_id().await?;
        let mut body = json!({
            "email": email,
            "first_name": view.given_name,
            "last_name": view.family_name,
            // It must hold All Users, or the whole create fails [A.3].
            "user_group_memberships": [{"id": all_users}],
        });
        if !view.attributes.is_empty() {
            body["login_attributes"] = json!(view.attributes);
        }
        let req = VendorRequest::post(wire::path("user")).json(body);
        let outcome = self
            .client
            .create_or_find(req, || self.user_by_email(&email))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(u) => return Ok(Created::Exists(self.neutral(&u))),
            CreateOutcome::Sent(r) => r,
        };
        if !resp.is_success() {
            // Any user, inactive ones included, holds its email for good [A.3]: the one an IdP
            // DELETE deactivated is taken back.
            if let Some(u) = self.user_by_email(&email).await? {
                return Ok(Created::Exists(self.neutral(&u)));
            }
            return Err(self.refusal(&resp, "user create"));
        }
        let made: wire::User = resp.json()?;
        if !user.active {
            // Metabase makes users active; an inactive one is deactivated at once. If that
            // fails the create fails with it: its retry finds the user by email, takes it
            // over and deactivates it, rather than leaving it active unseen.
            self.deactivate(made.id).await?;
        }
        Ok(Created::New(VendorUser {
            id: made.id.to_string(),
            profile: Some(view),
            active: Some(user.active),
            // In All Users only; the engine adds the rules' role group next.
            role: Some(NO_ROLE.to_string()),
            groups: None,
            last_login: None,
        }))
    }

    async fn update_user(
        &self,
        id: &str,
        change: &UserChange,
    ) -> AdapterResult<Option<VendorUser>> {
        let uid = num(id)?;
        let reactivating = change.active == Some(true);
        if reactivating {
            self.reactivate(uid).await?;
        }
        let mut answer = None;
        if let Some(p) = &change.profile {
            let written = match self.profile_body(uid, p, &change.changed_fields).await {
                Ok(body) if body.is_empty() => Ok(None),
                Ok(body) => self
                    .put_user(uid, &Value::Object(body), "user update")
                    .await
                    .map(Some),
                Err(e) => Err(e),
            };
            match written {
                Ok(u) => answer = u,
                // The change is refused for good, so the reactivation it came with must not
                // stand alone: the engine records the user as not reactivated.
                Err(e @ AdapterError::Refused { .. }) if reactivating => {
                    if let Err(undo) = self.deactivate(uid).await {
                        return Err(AdapterError::transient(format!(
                            "{e}; and deactivating the user again failed ({undo}), so it is retried"
                        )));
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        if change.active == Some(false) {
            self.deactivate(uid).await?;
        }
        // The PUT's answer shows the user's groups: a role group changed by hand shows here.
        Ok(answer.map(|u| VendorUser {
            id: id.to_string(),
            role: self.role_of(u.groups().as_deref()),
            ..VendorUser::default()
        }))
    }

    /// Metabase has no hard delete [A.3]: the user is deactivated and kept.
    async fn delete_user(&self, id: &str) -> AdapterResult<Removed> {
        match self.deactivate(num(id)?).await {
            Ok(()) => Ok(Removed::Kept {
                reason: "Metabase has no hard delete; the user is deactivated".into(),
            }),
            Err(AdapterError::Gone) => Ok(Removed::Deleted),
            Err(e) => Err(e),
        }
    }

    async fn find_user(&self, profile: &Profile) -> AdapterResult<Option<VendorUser>> {
        let Some(email) = self.vendor_view(profile).email else {
            return Ok(None);
        };
        Ok(self.user_by_email(&email).await?.map(|u| self.neutral(&u)))
    }

    async fn get_user(&self, id: &str) -> AdapterResult<Option<VendorUser>> {
        let Ok(uid) = id.parse::<u64>() else {
            return Ok(None);
        };
        Ok(self.user_by_id(uid).await?.map(|u| self.neutral(&u)))
    }

    /// Every user, active or not (`GET /api/user?status=all`, page by page) [A.3]; and every
    /// membership id, read afresh beside them (one call), so that removals until the next sync
    /// need no lookup.
    async fn list_users(&self) -> AdapterResult<Vec<VendorUser>> {
        let seen = self.memberships.lock().generation;
        let (users, ()) = tokio::try_join!(self.all_users(), async {
            self.read_memberships(seen)
                .await
                .map_err(AdapterError::from)
        })?;
        Ok(users)
    }

    async fn create_group(&self, name: &str) -> AdapterResult<Created<VendorGroup>> {
        if let Some(e) = self.reserved(name) {
            return Err(e);
        }
        let req = VendorRequest::post(wire::path("permissions/group")).json(json!({"name": name}));
        let outcome = self
            .client
            .create_or_find(req, || self.group_named(name))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(g) => return taken_over(g),
            CreateOutcome::Sent(r) => r,
        };
        if resp.is_success() {
            return Ok(Created::New(vendor_group(resp.json::<wire::Group>()?)));
        }
        if MbError::parse(&resp.body).is_some_and(|e| e.message == wire::message::GROUP_EXISTS) {
            if let Some(g) = self.group_named(name).await? {
                return taken_over(g);
            }
        }
        Err(self.refusal(&resp, "group create"))
    }

    async fn rename_group(&self, id: &str, name: &str) -> AdapterResult<()> {
        if let Some(e) = self.reserved(name) {
            return Err(e);
        }
        let gid = num(id)?;
        let req = VendorRequest::put(wire::path(&format!("permissions/group/{gid}")))
            .json(json!({"name": name}));
        let resp = self.send(req).await?;
        match resp.status {
            _ if resp.is_success() => Ok(()),
            404 => Err(AdapterError::Gone),
            _ => Err(self.refusal(&resp, "group rename")),
        }
    }

    /// Deleting a group deletes its memberships [A.4]; an unknown id is answered 204.
    async fn delete_group(&self, id: &str, _members: &[String]) -> AdapterResult<()> {
        let gid = num(id)?;
        let resp = self
            .send(VendorRequest::delete(wire::path(&format!(
                "permissions/group/{gid}"
            ))))
            .await?;
        if resp.is_success() || resp.status == 404 {
            self.memberships.lock().ids.retain(|(_, g), _| *g != gid);
            return Ok(());
        }
        Err(self.refusal(&resp, "group delete"))
    }

    async fn find_group(&self, name: &str) -> AdapterResult<Option<VendorGroup>> {
        if self.reserved(name).is_some() {
            return Ok(None);
        }
        Ok(self
            .group_named(name)
            .await?
            .filter(|g| !g.is_magic())
            .map(vendor_group))
    }

    /// Metabase's groups but the magic ones and the role groups.
    async fn list_groups(&self) -> AdapterResult<Vec<VendorGroup>> {
        Ok(self
            .all_groups()
            .await?
            .into_iter()
            .filter(|g| !g.is_magic() && !self.is_role_group(g.id))
            .map(vendor_group)
            .collect())
    }

    /// The group's members, inactive ones included (the group's own page lists active members
    /// only [A.4]), from one read of every membership.
    async fn group_members(&self, group: &str) -> AdapterResult<Option<Vec<String>>> {
        let gid = num(group)?;
        if !self.group_exists(gid).await? {
            return Err(AdapterError::Gone);
        }
        let seen = self.memberships.lock().generation;
        self.read_memberships(seen).await?;
        Ok(Some(
            self.memberships
                .lock()
                .ids
                .keys()
                .filter(|(_, g)| *g == gid)
                .map(|(u, _)| u.to_string())
                .collect(),
        ))
    }

    /// Adds first, then removes: one change that both adds and removes members of a group
    /// (Administrators handed from one admin to another) never passes through the group
    /// without the member Metabase insists on keeping. (A move *between* role groups is the
    /// engine's: it leaves the old group first, see `reconcile::align_user`.)
    async fn change_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        let gid = num(group)?;
        if self.known.read().all_users == Some(gid) {
            return Err(AdapterError::Refused {
                vendor: VENDOR,
                reason: "\"All Users\" membership cannot be changed".into(),
                kind: Refusal::Invalid,
            });
        }
        let calls: Vec<_> = add.iter().map(|u| self.add_member(gid, u)).collect();
        let adds: Vec<AdapterResult<()>> = futures_util::stream::iter(calls)
            .buffer_unordered(MEMBERSHIP_FAN_OUT)
            .collect()
            .await;
        let done = adds.into_iter().collect::<AdapterResult<Vec<()>>>();
        let done = match done {
            Ok(_) => {
                let calls: Vec<_> = remove.iter().map(|u| self.remove_member(gid, u)).collect();
                let removes: Vec<AdapterResult<()>> = futures_util::stream::iter(calls)
                    .buffer_unordered(MEMBERSHIP_FAN_OUT)
                    .collect()
                    .await;
                removes.into_iter().collect::<AdapterResult<Vec<()>>>()
            }
            Err(e) => Err(e),
        };
        match done {
            Ok(_) => Ok(()),
            // A role group deleted by hand is not a mirrored group the engine makes again, and
            // the bridge never creates permission groups.
            Err(AdapterError::Gone) if self.is_role_group(gid) => Err(AdapterError::transient(
                "a role group the rules name was deleted in Metabase; create it again (the bridge never creates permission groups)",
            )),
            Err(e) => Err(e),
        }
    }

    fn unavailable(&self) -> Option<String> {
        self.client.unavailable_reason(VENDOR)
    }
}

/// A group Metabase already has, for a SCIM group of its name: taken over, unless Metabase made
/// it (newer builds' "Data Analysts"), which is never mirrored.
fn taken_over(g: wire::Group) -> AdapterResult<Created<VendorGroup>> {
    if g.is_magic() {
        return Err(AdapterError::Refused {
            vendor: VENDOR,
            reason: format!(
                "\"{}\" is a Metabase built-in group the bridge never mirrors",
                g.name
            ),
            kind: Refusal::Conflict,
        });
    }
    Ok(Created::Exists(vendor_group(g)))
}

fn vendor_group(g: wire::Group) -> VendorGroup {
    VendorGroup {
        id: g.id.to_string(),
        name: g.name,
        members: None,
    }
}

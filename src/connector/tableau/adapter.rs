//! The Tableau adapter: users with site roles, groups and membership over the REST API, JSON
//! form. Wire code only; the engine decides what to send. [A.n] is
//! vendors-tableau-thoughtspot.md part A.
//!
//! Vendor calls per engine step (each one logical operation, safe to repeat):
//! - create a user: Add User (`name`, `siteRole`) [A.4]; on Server, Update User then sends
//!   `fullName` and `email`, which Add User does not take (a second call the engine's outbox
//!   makes safe). On Cloud a user is its email and nothing else can be set.
//! - change a user: one Update User; deactivate: Update User to `Unlicensed`.
//! - delete: Remove User; 409003 (owns content) keeps the user `Unlicensed`, reported.
//! - membership: one Add User to Group or Remove User from Group per member (409011, already a
//!   member, is success).
//! - lookups: by `filter=name:eq:` only when the engine's index has no answer.

use super::wire::{self, code, SitePaths, TableauError, ALL_USERS, UNLICENSED};
use super::{SharedSession, SiteSession};
use crate::config::{TableauAuthSetting, TableauDeprovision, TableauFlavor};
use crate::connector::http::{
    CreateOutcome, VendorClient, VendorError, VendorRequest, VendorResponse,
};
use crate::engine::adapter::{
    AdapterError, AdapterResult, Capabilities, Created, Deactivation, MembershipModel, NewUser,
    Profile, Refusal, Removed, RoleCatalog, RoleInfo, RoleModel, UserChange, VendorAdapter,
    VendorGroup, VendorUser,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

/// The largest page Tableau serves [A.6].
const PAGE_SIZE: usize = 1000;
/// Pages fetched at once after the first one (which tells how many there are).
const PAGE_WAVE: usize = 8;
/// Membership calls of one group change in flight at once.
const MEMBER_FAN_OUT: usize = 8;

pub struct TableauAdapter {
    client: VendorClient,
    session: SharedSession,
    version: String,
    flavor: TableauFlavor,
    /// Add User's `authSetting`, when the tenant sets one.
    auth_setting: Option<TableauAuthSetting>,
    caps: Capabilities,
}

/// The site roles as the engine's catalog: the API's own names plus the UI's, `Unlicensed`
/// for a new user no rule covers (it takes no seat), and `ServerAdministrator` protected.
pub fn catalog() -> RoleCatalog {
    RoleCatalog {
        roles: wire::SITE_ROLES
            .iter()
            .map(|(id, aliases)| RoleInfo {
                id: id.to_string(),
                names: std::iter::once(*id)
                    .chain(aliases.iter().copied())
                    .map(str::to_string)
                    .collect(),
                display: id.to_string(),
                admin: wire::is_admin_role(id),
            })
            .collect(),
        protected: Some(wire::SERVER_ADMINISTRATOR.into()),
        fallback: Some(UNLICENSED.into()),
    }
}

impl TableauAdapter {
    pub fn new(
        client: VendorClient,
        session: SharedSession,
        version: &str,
        deprovision: TableauDeprovision,
        flavor: TableauFlavor,
    ) -> TableauAdapter {
        let unlicense = Deactivation::Role(UNLICENSED.into());
        TableauAdapter {
            client,
            session,
            version: version.to_string(),
            flavor,
            auth_setting: None,
            caps: Capabilities {
                vendor: "Tableau",
                role: RoleModel::Attribute,
                membership: MembershipModel::OnGroup,
                // Tableau users have no "disabled" flag: `Unlicensed` is the soft deprovision,
                // as Tableau's own SCIM maps `active: false` [A.4].
                deactivation: unlicense.clone(),
                removal: match deprovision {
                    TableauDeprovision::Unlicense => unlicense,
                    TableauDeprovision::Delete => Deactivation::Delete,
                },
                writable_while_inactive: true,
                reactivation_strips_role: false,
                required_user_attributes: &[],
                // Update User takes no name [A.4].
                keeps_login: true,
                reports_last_login: true,
                immutable_user_attributes: &["userName"],
            },
        }
    }

    /// New users get this `authSetting` (a Cloud site with MFA refuses the default, 400003).
    pub fn with_auth_setting(mut self, auth_setting: Option<TableauAuthSetting>) -> Self {
        self.auth_setting = auth_setting;
        self
    }

    fn is_cloud(&self) -> bool {
        self.flavor == TableauFlavor::Cloud
    }

    /// Whether the bridge sets users' emails: always on Server; on Cloud from REST API 3.26,
    /// where Add User and Update User take `email` (for notifications) [A.4].
    fn keeps_email(&self) -> bool {
        !self.is_cloud() || api_at_least(&self.version, (3, 26))
    }

    /// The paths of the signed-in site (signing in first when there is no session yet).
    async fn paths(&self) -> Result<SitePaths, VendorError> {
        if let Some(s) = self.session.lock().as_ref() {
            return Ok(self.paths_of(s));
        }
        self.client.ensure_signed_in().await?;
        let s = self
            .session
            .lock()
            .clone()
            .ok_or_else(|| VendorError::Auth {
                reason: "the sign-in named no site".into(),
            })?;
        Ok(self.paths_of(&s))
    }

    fn paths_of(&self, s: &SiteSession) -> SitePaths {
        SitePaths {
            version: self.version.clone(),
            site: s.site_id.clone(),
        }
    }

    async fn send(&self, req: VendorRequest) -> Result<VendorResponse, VendorError> {
        self.client.send(req).await
    }

    /// Every item of a paged list: the first page tells `totalAvailable`, the rest are fetched
    /// in waves [A.6]. Sorted by `sort` where the list takes one, so that items do not move
    /// between pages while they are read; a page past the end (400006: the list shrank
    /// meanwhile) ends the list.
    async fn fetch_all<P, T>(
        &self,
        path: &str,
        sort: Option<&str>,
        items: impl Fn(P) -> (usize, Vec<T>) + Copy,
    ) -> Result<Vec<T>, VendorError>
    where
        P: serde::de::DeserializeOwned,
    {
        let page = |n: usize| async move {
            let mut req = VendorRequest::get(path)
                .query("pageSize", PAGE_SIZE.to_string())
                .query("pageNumber", n.to_string());
            if let Some(sort) = sort {
                req = req.query("sort", sort);
            }
            let resp = self.send(req).await?;
            if n > 1 && error_code(&resp).as_deref() == Some(code::PAGE_PAST_END) {
                return Ok(None);
            }
            if !resp.is_success() {
                return Err(resp.rejected());
            }
            Ok::<_, VendorError>(Some(items(resp.json::<P>()?)))
        };
        let (total, mut out) = page(1).await?.unwrap_or_default();
        let pages = total.div_ceil(PAGE_SIZE);
        let mut rest = futures_util::stream::iter(2..=pages)
            .map(page)
            .buffered(PAGE_WAVE);
        while let Some(p) = rest.next().await {
            match p? {
                Some((_, items)) => out.extend(items),
                None => break,
            }
        }
        Ok(out)
    }

    async fn all_users(&self) -> Result<Vec<wire::User>, VendorError> {
        let paths = self.paths().await?;
        self.fetch_all(&paths.users(), Some("name:asc"), |p: wire::UserPage| {
            let total = p.pagination.total_available;
            crate::engine::observe::users_page_read(p.users.user.len(), Some(total));
            (total, p.users.user)
        })
        .await
    }

    /// Every group but "All Users", which the bridge never touches [A.5].
    async fn all_groups(&self) -> Result<Vec<wire::Group>, VendorError> {
        let paths = self.paths().await?;
        let groups = self
            .fetch_all(&paths.groups(), Some("name:asc"), |p: wire::GroupPage| {
                (p.pagination.total_available, p.groups.group)
            })
            .await?;
        Ok(groups
            .into_iter()
            .filter(|g| !is_all_users(&g.name))
            .collect())
    }

    /// The names of the site's groups (for `config check --online`).
    pub async fn group_names(&self) -> Result<Vec<String>, VendorError> {
        Ok(self
            .all_groups()
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect())
    }

    async fn members_of(&self, group: &str) -> Result<Vec<wire::User>, VendorError> {
        let paths = self.paths().await?;
        self.fetch_all(&paths.group_users(group), None, |p: wire::UserPage| {
            (p.pagination.total_available, p.users.user)
        })
        .await
    }

    /// The user named `name` (Tableau compares names case-insensitively).
    async fn user_named(&self, name: &str) -> Result<Option<wire::User>, VendorError> {
        let paths = self.paths().await?;
        if !wire::filterable(name) {
            // Filters cannot carry `,` or `&` [A.6]: the whole list, then.
            return Ok(self
                .all_users()
                .await?
                .into_iter()
                .find(|u| same_name(u.name.as_deref(), name)));
        }
        let resp = self
            // Names are unique regardless of case (409000 for `Jane` when `jane` exists):
            // `cieq` finds the one that clashes [A.6].
            .send(VendorRequest::get(paths.users()).query("filter", format!("name:cieq:{name}")))
            .await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        let page: wire::UserPage = resp.json()?;
        Ok(page
            .users
            .user
            .into_iter()
            .find(|u| same_name(u.name.as_deref(), name)))
    }

    async fn group_named(&self, name: &str) -> Result<Option<wire::Group>, VendorError> {
        if is_all_users(name) {
            return Ok(None);
        }
        let paths = self.paths().await?;
        if !wire::filterable(name) {
            return Ok(self
                .all_groups()
                .await?
                .into_iter()
                .find(|g| g.name.eq_ignore_ascii_case(name)));
        }
        // Group names are unique regardless of case [A.5]: `cieq` finds the one that clashes.
        let resp = self
            .send(VendorRequest::get(paths.groups()).query("filter", format!("name:cieq:{name}")))
            .await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        let page: wire::GroupPage = resp.json()?;
        Ok(page
            .groups
            .group
            .into_iter()
            .find(|g| g.name.eq_ignore_ascii_case(name)))
    }

    fn neutral(&self, u: &wire::User) -> Option<VendorUser> {
        Some(VendorUser {
            id: u.id.clone()?,
            profile: u.name.as_ref().map(|login| {
                self.vendor_view(&Profile {
                    login: login.clone(),
                    email: u.email.clone().filter(|e| !e.is_empty()),
                    display_name: u.full_name.clone().filter(|n| !n.is_empty()),
                    ..Profile::default()
                })
            }),
            // No activation flag: `Unlicensed` is a role like any other here.
            active: None,
            role: u.site_role.clone(),
            groups: None,
            // Absent for a user who never signed in [A.4].
            last_login: u
                .last_login
                .as_deref()
                .and_then(crate::engine::observe::normalise_last_login),
        })
    }

    /// Maps a Tableau error answer to the engine's classes. `what` says what was refused.
    fn refusal(&self, resp: &VendorResponse, what: &str) -> AdapterError {
        let Some(e) = TableauError::parse(&resp.body) else {
            return AdapterError::from(resp.rejected());
        };
        let kind = match (resp.status, e.code.as_str()) {
            (_, code::NO_SEAT) => Refusal::Capacity,
            (_, code::USER_EXISTS | code::GROUP_NAME_TAKEN) => Refusal::Conflict,
            (_, code::OWN_ROLE) => Refusal::Invalid,
            (400 | 409 | 422, _) => Refusal::Invalid,
            // 401/403 and the rest: the bridge's credentials or scopes, which an operator can
            // fix: retried.
            _ => {
                return AdapterError::transient(format!(
                    "Tableau answered the {what} with HTTP {}: {}",
                    resp.status,
                    e.describe()
                ))
            }
        };
        let reason = match e.code.as_str() {
            code::NO_SEAT => format!(
                "the site has no free seat for this site role (seat limit reached; {})",
                e.describe()
            ),
            code::OWN_ROLE => format!(
                "the bridge's own Tableau user cannot change its site role ({})",
                e.describe()
            ),
            _ => format!("the {what}: {}", e.describe()),
        };
        AdapterError::Refused {
            vendor: "Tableau",
            reason,
            kind,
        }
    }

    /// Update User with `fields` [A.4]; `Ok(None)` when the user is gone.
    async fn put_user(
        &self,
        id: &str,
        fields: Map<String, Value>,
    ) -> AdapterResult<Option<wire::User>> {
        let paths = self.paths().await?;
        let resp = self
            .send(VendorRequest::put(paths.user(id)).json(json!({ "user": fields })))
            .await?;
        if resp.is_success() {
            return Ok(Some(
                resp.json::<wire::OneUser>()
                    .map(|o| o.user)
                    .map_err(AdapterError::from)?,
            ));
        }
        if error_code(&resp).as_deref() == Some(code::USER_NOT_FOUND) {
            return Ok(None);
        }
        Err(self.refusal(&resp, "user update"))
    }

    /// One membership call; `Err(Gone)` when the group is gone.
    async fn member_call(&self, req: VendorRequest, adding: bool) -> AdapterResult<()> {
        let resp = self.send(req).await?;
        if resp.is_success() {
            return Ok(());
        }
        match error_code(&resp).as_deref() {
            Some(code::ALREADY_MEMBER) if adding => Ok(()),
            Some(code::GROUP_NOT_FOUND) => Err(AdapterError::Gone),
            // Not a member (or not on the site any more): nothing to remove.
            Some(code::USER_NOT_FOUND) if !adding => Ok(()),
            // A member that is not on the site: its own reconcile makes it again first.
            Some(code::USER_NOT_FOUND) => Err(AdapterError::transient(
                "a member is not on the Tableau site (yet); retried after it is",
            )),
            _ => Err(self.refusal(&resp, "membership change")),
        }
    }
}

/// `major.minor` at least `want`.
fn api_at_least(version: &str, want: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= want
}

fn is_all_users(name: &str) -> bool {
    name.eq_ignore_ascii_case(ALL_USERS)
}

fn same_name(have: Option<&str>, want: &str) -> bool {
    have.is_some_and(|h| h.eq_ignore_ascii_case(want))
}

fn error_code(resp: &VendorResponse) -> Option<String> {
    TableauError::parse(&resp.body).map(|e| e.code)
}

#[async_trait]
impl VendorAdapter for TableauAdapter {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Server keeps the name, the email and the full name; Cloud's user *is* its email and
    /// nothing else can be set through the REST API [A.4].
    fn vendor_view(&self, p: &Profile) -> Profile {
        Profile {
            login: p.login.clone(),
            email: if self.keeps_email() {
                p.email.clone()
            } else {
                None
            },
            display_name: if self.is_cloud() {
                None
            } else {
                p.display_name.clone()
            },
            ..Profile::default()
        }
    }

    /// Signs in (so start-up proves the credentials) and gives the site roles, which are part
    /// of Tableau's API rather than read from it.
    async fn roles(&self) -> AdapterResult<RoleCatalog> {
        self.paths().await?;
        Ok(catalog())
    }

    async fn create_user(&self, user: &NewUser) -> AdapterResult<Created<VendorUser>> {
        let login = &user.profile.login;
        if self.is_cloud() && !login.contains('@') {
            return Err(AdapterError::Refused {
                vendor: "Tableau",
                reason: format!(
                    "on Tableau Cloud a user name is the sign-in email, and userName \"{login}\" is not one"
                ),
                kind: Refusal::Invalid,
            });
        }
        let role = user.role.clone().unwrap_or_else(|| UNLICENSED.into());
        let paths = self.paths().await?;
        // Add User takes the name and the site role [A.4] (and on Cloud from 3.26 the email);
        // the rest follows as an update.
        let mut fields = json!({"name": login, "siteRole": role});
        let cloud_email = self
            .is_cloud()
            .then(|| user.profile.email.clone())
            .flatten()
            .filter(|_| self.keeps_email());
        if let Some(email) = &cloud_email {
            fields["email"] = json!(email);
        }
        if let Some(a) = self.auth_setting {
            fields["authSetting"] = json!(a.as_str());
        }
        let req = VendorRequest::post(paths.users()).json(json!({ "user": fields }));
        let outcome = self
            .client
            .create_or_find(req, || self.user_named(login))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(u) => {
                return self
                    .neutral(&u)
                    .map(Created::Exists)
                    .ok_or_else(|| AdapterError::transient("Tableau answered a user without id"))
            }
            CreateOutcome::Sent(r) => r,
        };
        if !resp.is_success() {
            if error_code(&resp).as_deref() == Some(code::USER_EXISTS) {
                if let Some(u) = self.user_named(login).await? {
                    if let Some(v) = self.neutral(&u) {
                        return Ok(Created::Exists(v));
                    }
                }
            }
            return Err(self.refusal(&resp, "user create"));
        }
        let made = resp.json::<wire::OneUser>()?.user;
        let id = made
            .id
            .clone()
            .ok_or_else(|| AdapterError::transient("Tableau's Add User answer has no id"))?;
        // Without a free seat Tableau adds the user with another role than asked (Okta's docs
        // for its Tableau connector, [A.3]). That role is what the engine records: its next
        // step asks for the rules' role again, meets 409014, and refuses (an IdP write rolled
        // back removes the user it made; one from the outbox waits, Unlicensed, for a seat).
        let given = made.site_role.clone().unwrap_or_else(|| role.clone());
        Ok(Created::New(VendorUser {
            id,
            // Only the name went with Add User: the engine sends the rest next.
            profile: Some(self.vendor_view(&Profile {
                login: made.name.clone().unwrap_or_else(|| login.clone()),
                email: cloud_email,
                ..Profile::default()
            })),
            active: None,
            role: Some(given),
            groups: None,
            last_login: None,
        }))
    }

    async fn update_user(
        &self,
        id: &str,
        change: &UserChange,
    ) -> AdapterResult<Option<VendorUser>> {
        let mut fields = Map::new();
        if let Some(p) = &change.profile {
            let changed = |f: &str| change.changed_fields.contains(&f);
            // No `name`: Update User takes none [A.4], and the tenant publishes userName
            // immutable, so "login" here only means the applied state is unknown (after a
            // crash), never a rename.
            if self.keeps_email() && changed("email") {
                fields.insert("email".into(), json!(p.email.clone().unwrap_or_default()));
            }
            if !self.is_cloud() && changed("display_name") {
                fields.insert(
                    "fullName".into(),
                    json!(p.display_name.clone().unwrap_or_default()),
                );
            }
        }
        if let Some(r) = &change.role {
            fields.insert("siteRole".into(), Value::String(r.clone()));
        }
        if fields.is_empty() {
            return Ok(None);
        }
        match self.put_user(id, fields).await? {
            Some(u) => Ok(Some(VendorUser {
                id: id.to_string(),
                profile: None,
                active: None,
                role: u.site_role,
                groups: None,
                last_login: None,
            })),
            None => Err(AdapterError::Gone),
        }
    }

    async fn delete_user(&self, id: &str) -> AdapterResult<Removed> {
        let paths = self.paths().await?;
        let resp = self.send(VendorRequest::delete(paths.user(id))).await?;
        if resp.is_success() {
            return Ok(Removed::Deleted);
        }
        let Some(e) = TableauError::parse(&resp.body) else {
            return Err(AdapterError::from(resp.rejected()));
        };
        match e.code.as_str() {
            code::USER_NOT_FOUND => Ok(Removed::Deleted),
            code::OWNS_CONTENT => {
                // Tableau unlicenses a user it cannot remove [A.4, DOC-usersview]; said again
                // here so that no licensed user stays behind whatever the version does.
                let role = Map::from_iter([("siteRole".to_string(), json!(UNLICENSED))]);
                self.put_user(id, role).await?;
                Ok(Removed::Kept {
                    reason: format!(
                        "the user owns content, so Tableau keeps it, Unlicensed ({})",
                        e.describe()
                    ),
                })
            }
            _ => Err(self.refusal(&resp, "user removal")),
        }
    }

    async fn find_user(&self, profile: &Profile) -> AdapterResult<Option<VendorUser>> {
        Ok(self
            .user_named(&profile.login)
            .await?
            .and_then(|u| self.neutral(&u)))
    }

    async fn get_user(&self, id: &str) -> AdapterResult<Option<VendorUser>> {
        let paths = self.paths().await?;
        let resp = self.send(VendorRequest::get(paths.user(id))).await?;
        if resp.is_success() {
            let u = resp.json::<wire::OneUser>()?.user;
            return Ok(self.neutral(&u));
        }
        if error_code(&resp).as_deref() == Some(code::USER_NOT_FOUND) {
            return Ok(None);
        }
        Err(self.refusal(&resp, "user read"))
    }

    /// Every user. Membership is not read here: kept on the group, it is the IdP's to say, and
    /// a member Tableau shows that the directory lacks (a lost answer the vendor ran late) must
    /// not be pulled into the IdP's groups, where the rules would turn it into a role.
    async fn list_users(&self) -> AdapterResult<Vec<VendorUser>> {
        Ok(self
            .all_users()
            .await?
            .iter()
            .filter_map(|u| self.neutral(u))
            .collect())
    }

    async fn create_group(&self, name: &str) -> AdapterResult<Created<VendorGroup>> {
        if is_all_users(name) {
            return Err(all_users_refusal());
        }
        let paths = self.paths().await?;
        let req = VendorRequest::post(paths.groups()).json(json!({"group": {"name": name}}));
        let outcome = self
            .client
            .create_or_find(req, || self.group_named(name))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(g) => return Ok(Created::Exists(vendor_group(g))),
            CreateOutcome::Sent(r) => r,
        };
        if resp.is_success() {
            return Ok(Created::New(vendor_group(
                resp.json::<wire::OneGroup>()?.group,
            )));
        }
        if error_code(&resp).as_deref() == Some(code::GROUP_NAME_TAKEN) {
            if let Some(g) = self.group_named(name).await? {
                return Ok(Created::Exists(vendor_group(g)));
            }
        }
        Err(self.refusal(&resp, "group create"))
    }

    async fn rename_group(&self, id: &str, name: &str) -> AdapterResult<()> {
        if is_all_users(name) {
            return Err(all_users_refusal());
        }
        let paths = self.paths().await?;
        let resp = self
            .send(VendorRequest::put(paths.group(id)).json(json!({"group": {"name": name}})))
            .await?;
        if resp.is_success() {
            return Ok(());
        }
        match error_code(&resp).as_deref() {
            Some(code::GROUP_NOT_FOUND) => Err(AdapterError::Gone),
            _ => Err(self.refusal(&resp, "group rename")),
        }
    }

    async fn delete_group(&self, id: &str, _members: &[String]) -> AdapterResult<()> {
        let paths = self.paths().await?;
        let resp = self.send(VendorRequest::delete(paths.group(id))).await?;
        if resp.is_success() || error_code(&resp).as_deref() == Some(code::GROUP_NOT_FOUND) {
            return Ok(());
        }
        Err(self.refusal(&resp, "group delete"))
    }

    async fn find_group(&self, name: &str) -> AdapterResult<Option<VendorGroup>> {
        Ok(self.group_named(name).await?.map(vendor_group))
    }

    async fn list_groups(&self) -> AdapterResult<Vec<VendorGroup>> {
        Ok(self
            .all_groups()
            .await?
            .into_iter()
            .map(vendor_group)
            .collect())
    }

    async fn group_members(&self, group: &str) -> AdapterResult<Option<Vec<String>>> {
        match self.members_of(group).await {
            Ok(members) => Ok(Some(members.into_iter().filter_map(|u| u.id).collect())),
            Err(VendorError::Rejected { status: 404, .. }) => Err(AdapterError::Gone),
            Err(e) => Err(e.into()),
        }
    }

    async fn change_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        let paths = self.paths().await?;
        let mut calls = Vec::with_capacity(add.len() + remove.len());
        for u in add {
            let req =
                VendorRequest::post(paths.group_users(group)).json(json!({"user": {"id": u}}));
            calls.push(self.member_call(req, true));
        }
        for u in remove {
            calls.push(self.member_call(VendorRequest::delete(paths.group_user(group, u)), false));
        }
        let results: Vec<AdapterResult<()>> = futures_util::stream::iter(calls)
            .buffer_unordered(MEMBER_FAN_OUT)
            .collect()
            .await;
        // A gone group outranks the rest (the engine makes it again); then any other failure.
        if results.iter().any(|r| r == &Err(AdapterError::Gone)) {
            return Err(AdapterError::Gone);
        }
        results.into_iter().collect::<AdapterResult<Vec<()>>>()?;
        Ok(())
    }

    fn unavailable(&self) -> Option<String> {
        self.client.unavailable_reason("Tableau")
    }
}

fn vendor_group(g: wire::Group) -> VendorGroup {
    VendorGroup {
        id: g.id,
        name: g.name,
        members: None,
    }
}

fn all_users_refusal() -> AdapterError {
    AdapterError::Refused {
        vendor: "Tableau",
        reason: "\"All Users\" is Tableau's built-in group of every user; the bridge never creates, renames or changes it"
            .into(),
        kind: Refusal::Conflict,
    }
}

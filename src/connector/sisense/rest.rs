//! The Sisense REST adapter (`mode = "rest"`): users, groups, membership (on the user, as its
//! full `groups` list) and the role (`roleId`) over Sisense's REST API, v1 or the legacy v0.9
//! paths. Wire code only; the engine decides what to send.

use super::wire::{self, Paths};
use crate::config::SisenseDeprovision;
use crate::connector::http::{
    CreateOutcome, VendorClient, VendorError, VendorRequest, VendorResponse,
};
use crate::engine::adapter::{
    AdapterError, AdapterResult, Capabilities, Created, Deactivation, MembershipModel, NewUser,
    Profile, Refusal, Removed, RoleCatalog, RoleInfo, RoleModel, UserChange, VendorAdapter,
    VendorGroup, VendorUser,
};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

const PAGE: usize = 10_000;
const WAVE: usize = 6;

/// Sisense requires an email on every user (B.4).
pub const REQUIRED: &[&str] = &["emails"];

pub struct SisenseRest {
    pub client: VendorClient,
    pub paths: Paths,
    caps: Capabilities,
}

pub fn deactivation(d: SisenseDeprovision) -> Deactivation {
    match d {
        SisenseDeprovision::Deactivate => Deactivation::Flag,
        SisenseDeprovision::Delete => Deactivation::Delete,
    }
}

impl SisenseRest {
    pub fn new(client: VendorClient, paths: Paths, deprovision: SisenseDeprovision) -> SisenseRest {
        SisenseRest {
            client,
            paths,
            caps: Capabilities {
                vendor: "Sisense",
                role: RoleModel::Attribute,
                membership: MembershipModel::OnUser,
                deactivation: deactivation(deprovision),
                removal: deactivation(deprovision),
                writable_while_inactive: true,
                reactivation_strips_role: false,
                required_user_attributes: REQUIRED,
                keeps_login: true,
                reports_last_login: true,
                immutable_user_attributes: &[],
            },
        }
    }

    /// Sets only the role, over REST (scim mode uses this too: Sisense's SCIM never sets it).
    pub async fn set_role(&self, vid: &str, role: &str) -> AdapterResult<Option<VendorUser>> {
        let mut body = Map::new();
        body.insert("roleId".into(), Value::String(role.to_string()));
        self.patch_user(vid, body).await
    }

    async fn patch_user(
        &self,
        vid: &str,
        body: Map<String, Value>,
    ) -> AdapterResult<Option<VendorUser>> {
        let req = if self.paths.is_legacy() {
            VendorRequest::put(self.paths.user(vid))
        } else {
            // A PATCH of fields to fixed values is safe to repeat.
            VendorRequest::patch(self.paths.user(vid)).idempotent()
        };
        let resp = self.client.send(req.json(Value::Object(body))).await?;
        if resp.is_success() {
            // No body: applied, nothing more said. A body that is not a user (a 200 carrying an
            // error) is not a confirmation: retried, never recorded as applied.
            if resp.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            return user_answer(&resp).map(|u| Some(vendor_user(&u)));
        }
        if resp.status == 404 {
            return Err(AdapterError::Gone);
        }
        Err(refusal(&resp, "user"))
    }
}

/// A Sisense user in neutral form.
pub fn vendor_user(u: &wire::User) -> VendorUser {
    VendorUser {
        id: u.id.clone(),
        profile: u.login().map(|login| Profile {
            login: login.to_string(),
            email: u.email.clone().filter(|e| !e.is_empty()),
            given_name: u.first_name.clone(),
            family_name: u.last_name.clone(),
            display_name: None,
            attributes: Default::default(),
        }),
        active: Some(u.is_active()),
        role: u.role_id.clone(),
        groups: Some(u.groups.clone()),
        last_login: u
            .last_login
            .as_deref()
            .and_then(crate::engine::observe::normalise_last_login),
    }
}

fn vendor_group(g: wire::Group) -> VendorGroup {
    VendorGroup {
        id: g.id,
        name: g.name,
        members: None,
    }
}

/// The REST fields of a profile (`null` for a name that is gone).
fn profile_fields(p: &Profile, only: Option<&[&'static str]>) -> Map<String, Value> {
    let want = |f: &str| only.is_none_or(|o| o.contains(&f));
    let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    let mut m = Map::new();
    if want("login") {
        m.insert("userName".into(), Value::String(p.login.clone()));
    }
    if want("email") {
        if let Some(e) = &p.email {
            m.insert("email".into(), Value::String(e.clone()));
        }
    }
    if want("given_name") && (only.is_some() || p.given_name.is_some()) {
        m.insert("firstName".into(), opt(&p.given_name));
    }
    if want("family_name") && (only.is_some() || p.family_name.is_some()) {
        m.insert("lastName".into(), opt(&p.family_name));
    }
    m
}

pub fn user_answer(resp: &VendorResponse) -> AdapterResult<wire::User> {
    let unreadable =
        |e: serde_json::Error| AdapterError::transient(format!("unreadable Sisense user: {e}"));
    match resp.json::<Value>()? {
        // v0.9 may answer an array for an array body; we send one object.
        Value::Array(mut a) if !a.is_empty() => {
            serde_json::from_value(a.remove(0)).map_err(unreadable)
        }
        v => serde_json::from_value(v).map_err(unreadable),
    }
}

/// A vendor answer the adapter did not take: the change's data (400/422) is refused for good
/// with Sisense's message (a duplicate, code 2004, as a conflict); anything else is retried.
pub fn refusal(resp: &VendorResponse, what: &str) -> AdapterError {
    let message = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    match resp.status {
        400 | 409 | 422 => AdapterError::Refused {
            vendor: "Sisense",
            reason: format!("the {what}: {message}"),
            kind: if resp.status == 409 || wire::error_code(&resp.body) == Some(wire::USER_EXISTS) {
                Refusal::Conflict
            } else {
                Refusal::Invalid
            },
        },
        _ => AdapterError::from(resp.rejected()),
    }
}

/// Whether the vendor can be called at all, from the client's health.
pub fn unavailable(client: &VendorClient, what: &str) -> Option<String> {
    client.unavailable_reason(what)
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

/// Every item of a Sisense list endpoint. Lists are bare arrays with `skip`/`limit` and no
/// total (B.2). The first page tells whether the vendor caps the page size below ours (a short
/// first page followed by a non-empty one); then waves of parallel pages until a short one.
pub async fn fetch_all<T: DeserializeOwned>(
    client: &VendorClient,
    path: &str,
) -> Result<Vec<T>, VendorError> {
    fetch_pages(client, path, |_| {}).await
}

/// [`fetch_all`], telling `on_page` how many items each page brought (sync progress).
pub async fn fetch_pages<T: DeserializeOwned>(
    client: &VendorClient,
    path: &str,
    on_page: impl Fn(usize),
) -> Result<Vec<T>, VendorError> {
    let mut limit = PAGE;
    let mut out: Vec<T> = page(client, path, 0, limit).await?;
    on_page(out.len());
    if out.is_empty() {
        return Ok(out);
    }
    if out.len() < limit {
        let next: Vec<T> = page(client, path, out.len(), limit).await?;
        on_page(next.len());
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
            on_page(p.len());
            out.extend(p);
            if short {
                return Ok(out);
            }
        }
        skip += WAVE * limit;
    }
}

/// `GET /api/roles` as a catalog: Sys. Admin is protected, Viewer (`consumer`) is Sisense's own
/// default for new users.
pub async fn fetch_roles(client: &VendorClient) -> Result<RoleCatalog, VendorError> {
    let resp = client.send(VendorRequest::get(Paths::ROLES)).await?;
    if !resp.is_success() {
        return Err(resp.rejected());
    }
    let roles: Vec<wire::Role> = resp.json()?;
    Ok(catalog(&roles))
}

pub fn catalog(roles: &[wire::Role]) -> RoleCatalog {
    RoleCatalog {
        roles: roles
            .iter()
            .map(|r| RoleInfo {
                id: r.id.clone(),
                names: r.names(),
                display: r.display_name.clone().unwrap_or(r.name.clone()),
                admin: r.is_admin(),
            })
            .collect(),
        protected: roles
            .iter()
            .find(|r| r.name == "super")
            .map(|r| r.id.clone()),
        fallback: roles
            .iter()
            .find(|r| r.name == "consumer")
            .map(|r| r.id.clone()),
    }
}

#[async_trait]
impl VendorAdapter for SisenseRest {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    async fn roles(&self) -> AdapterResult<RoleCatalog> {
        Ok(fetch_roles(&self.client).await?)
    }

    async fn create_user(&self, user: &NewUser) -> AdapterResult<Created<VendorUser>> {
        let mut body = profile_fields(&user.profile, None);
        if let Some(r) = &user.role {
            body.insert("roleId".into(), Value::String(r.clone()));
        }
        if !user.groups.is_empty() {
            body.insert("groups".into(), json!(user.groups));
        }
        // v0.9 REST has no `active` on create.
        if !user.active && !self.paths.is_legacy() {
            body.insert("active".into(), Value::Bool(false));
        }
        let req = VendorRequest::post(self.paths.users()).json(Value::Object(body));
        let outcome = self
            .client
            .create_or_find(req, || self.find_user_raw(&user.profile))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(u) => return Ok(Created::Exists(vendor_user(&u))),
            CreateOutcome::Sent(r) => r,
        };
        if resp.is_success() {
            // Sisense's create takes every field: the engine records what it sent.
            let mut u = vendor_user(&user_answer(&resp)?);
            u.profile = None;
            return Ok(Created::New(u));
        }
        if wire::error_code(&resp.body) == Some(wire::USER_EXISTS) {
            if let Some(u) = self.find_user_raw(&user.profile).await? {
                return Ok(Created::Exists(vendor_user(&u)));
            }
        }
        Err(refusal(&resp, "user"))
    }

    async fn update_user(
        &self,
        id: &str,
        change: &UserChange,
    ) -> AdapterResult<Option<VendorUser>> {
        let mut body = match &change.profile {
            Some(p) => profile_fields(p, Some(&change.changed_fields)),
            None => Map::new(),
        };
        if let Some(a) = change.active {
            body.insert("active".into(), Value::Bool(a));
        }
        if let Some(r) = &change.role {
            body.insert("roleId".into(), Value::String(r.clone()));
        }
        if let Some(g) = &change.groups {
            body.insert("groups".into(), json!(g));
        }
        if body.is_empty() {
            return Ok(None);
        }
        self.patch_user(id, body).await
    }

    async fn delete_user(&self, id: &str) -> AdapterResult<Removed> {
        let resp = self
            .client
            .send(VendorRequest::delete(self.paths.user(id)))
            .await?;
        if resp.is_success() || resp.status == 404 {
            return Ok(Removed::Deleted);
        }
        Err(refusal(&resp, "user delete"))
    }

    async fn find_user(&self, profile: &Profile) -> AdapterResult<Option<VendorUser>> {
        Ok(self.find_user_raw(profile).await?.map(|u| vendor_user(&u)))
    }

    async fn get_user(&self, id: &str) -> AdapterResult<Option<VendorUser>> {
        let resp = self
            .client
            .send(VendorRequest::get(self.paths.user(id)))
            .await?;
        if resp.status == 404 {
            return Ok(None);
        }
        if !resp.is_success() {
            return Err(resp.rejected().into());
        }
        Ok(Some(vendor_user(&user_answer(&resp)?)))
    }

    async fn list_users(&self) -> AdapterResult<Vec<VendorUser>> {
        let users: Vec<wire::User> = fetch_pages(&self.client, self.paths.users(), |n| {
            crate::engine::observe::users_page_read(n, None)
        })
        .await?;
        Ok(users.iter().map(vendor_user).collect())
    }

    async fn create_group(&self, name: &str) -> AdapterResult<Created<VendorGroup>> {
        let req = VendorRequest::post(self.paths.groups()).json(self.paths.new_group(name));
        let outcome = self
            .client
            .create_or_find(req, || self.find_group_raw(name))
            .await?;
        match outcome {
            CreateOutcome::Found(g) => Ok(Created::Exists(vendor_group(g))),
            CreateOutcome::Sent(r) if r.is_success() => wire::created_group(&r.body)
                .map(|g| Created::New(vendor_group(g)))
                .ok_or_else(|| AdapterError::transient("unreadable Sisense group")),
            CreateOutcome::Sent(r) if matches!(r.status, 400 | 409) => {
                // Sisense refuses a duplicate name; the group may predate the last observe.
                match self.find_group_raw(name).await? {
                    Some(g) => Ok(Created::Exists(vendor_group(g))),
                    None => Err(refusal(&r, "group")),
                }
            }
            CreateOutcome::Sent(r) => Err(refusal(&r, "group")),
        }
    }

    async fn rename_group(&self, id: &str, name: &str) -> AdapterResult<()> {
        // v1 has no group PATCH: a rename always uses the legacy path (B.5).
        let resp = self
            .client
            .send(VendorRequest::put(self.paths.group_legacy(id)).json(json!({ "name": name })))
            .await?;
        if resp.is_success() {
            return Ok(());
        }
        if resp.status == 404 {
            return Err(AdapterError::Gone);
        }
        Err(match refusal(&resp, "group name") {
            AdapterError::Refused { vendor, reason, .. } => AdapterError::Refused {
                vendor,
                reason,
                kind: Refusal::Conflict,
            },
            other => other,
        })
    }

    async fn delete_group(&self, id: &str, _members: &[String]) -> AdapterResult<()> {
        let resp = self
            .client
            .send(VendorRequest::delete(self.paths.group(id)))
            .await?;
        if resp.is_success() || resp.status == 404 {
            return Ok(());
        }
        Err(refusal(&resp, "group delete"))
    }

    async fn find_group(&self, name: &str) -> AdapterResult<Option<VendorGroup>> {
        Ok(self.find_group_raw(name).await?.map(vendor_group))
    }

    async fn list_groups(&self) -> AdapterResult<Vec<VendorGroup>> {
        let groups: Vec<wire::Group> = fetch_all(&self.client, self.paths.groups()).await?;
        Ok(groups.into_iter().map(vendor_group).collect())
    }

    /// Membership lives on the user here: each member's list is read and written back whole.
    async fn change_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        for (uid, join) in add
            .iter()
            .map(|u| (u, true))
            .chain(remove.iter().map(|u| (u, false)))
        {
            let Some(u) = self.get_user(uid).await? else {
                continue;
            };
            let mut groups = u.groups.unwrap_or_default();
            let has = groups.iter().any(|g| g == group);
            if join == has {
                continue;
            }
            if join {
                groups.push(group.to_string());
            } else {
                groups.retain(|g| g != group);
            }
            let mut body = Map::new();
            body.insert("groups".into(), json!(groups));
            self.patch_user(uid, body).await?;
        }
        Ok(())
    }

    fn unavailable(&self) -> Option<String> {
        unavailable(&self.client, "Sisense")
    }
}

impl SisenseRest {
    /// `GET users?userName=` then `?email=`: the natural-key lookup after an ambiguous create
    /// or a duplicate answer.
    pub async fn find_user_raw(&self, p: &Profile) -> Result<Option<wire::User>, VendorError> {
        let keys = [
            Some(("userName", p.login.as_str())),
            p.email.as_deref().map(|e| ("email", e)),
        ];
        for (k, v) in keys.into_iter().flatten() {
            let resp = self
                .client
                .send(VendorRequest::get(self.paths.users()).query(k, v))
                .await?;
            if !resp.is_success() {
                continue;
            }
            let users: Vec<wire::User> = resp.json()?;
            if let Some(u) = users.into_iter().next() {
                return Ok(Some(u));
            }
        }
        Ok(None)
    }

    pub async fn find_group_raw(&self, name: &str) -> Result<Option<wire::Group>, VendorError> {
        let resp = self
            .client
            .send(
                VendorRequest::get(self.paths.groups()).query(self.paths.group_name_query(), name),
            )
            .await?;
        if !resp.is_success() {
            return Ok(None);
        }
        let groups: Vec<wire::Group> = resp.json()?;
        Ok(groups
            .into_iter()
            .find(|g| g.name.eq_ignore_ascii_case(name)))
    }
}

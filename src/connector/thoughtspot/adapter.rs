//! The ThoughtSpot adapter: users, groups, role groups, Orgs and formula variables over REST
//! v2.0. Wire code only; the engine decides what to send. [B.n] is vendors-tableau-thoughtspot.md
//! part B.
//!
//! Vendor calls per engine step (each one logical operation, safe to repeat):
//! - create a user: `users/create` [B.4]; its role group (one `groups/{id}/update` ADD) and its
//!   formula variables (one `template/variables/{v}/update-values` each) follow as the engine's
//!   next step;
//! - change a user: one `users/{id}/update` (names, email, `account_status`), plus one call per
//!   mapped variable when an attribute changed;
//! - delete: `users/{id}/delete`;
//! - membership: one `groups/{id}/update` with `operation` ADD for all the members added and one
//!   with REMOVE for those removed (never the REPLACE default [B.5]); an Org's membership is
//!   one `users/{id}/update` with `org_identifiers` and ADD / REMOVE per member;
//! - lookups: `users/search` / `groups/search` by identifier, only when the engine's index has
//!   no answer.
//!
//! ThoughtSpot answers an unknown or duplicate object with 400 and code 10002 like any bad
//! parameter (the spec lists no 404 or 409 [B.7]), so a refused write is followed by a lookup
//! that tells "gone" or "exists" from a real refusal.

use super::wire::{self, TsError};
use crate::config::{ThoughtspotAccountType, ThoughtspotOrgGroups};
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
use parking_lot::RwLock;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Members per membership call (a request body stays small; ThoughtSpot documents no limit).
const MEMBERS_PER_CALL: usize = 200;
/// Org membership calls in flight at once (one per member).
const ORG_FAN_OUT: usize = 8;
/// The vendor id of a SCIM group that is an Org: `org:{id}` (group ids are GUIDs, never this).
const ORG_PREFIX: &str = "org:";

/// The name of the group through which the bridge gives an RBAC role (documented in the README).
pub fn role_group_name(role: &str) -> String {
    format!("scim-bridge role {role}")
}

/// What the adapter learnt when it resolved the rules' roles, and the Org's name.
#[derive(Default)]
struct Known {
    /// Vendor ids of the role groups (a rule's group, or a role's group).
    role_groups: HashSet<String>,
    /// Their names, lower-cased: a SCIM group may not take one over.
    role_group_names: HashSet<String>,
    /// Whether the roles were resolved (until then a user's role group is not told).
    resolved: bool,
    /// The name of the token's Org (variable values are scoped by it).
    org_name: Option<String>,
}

pub struct ThoughtspotAdapter {
    client: VendorClient,
    org_id: i64,
    orgs: Option<ThoughtspotOrgGroups>,
    /// The role names the rules and the default use.
    rule_roles: Vec<String>,
    /// The formula variables `[tenants.attributes]` maps.
    variables: Vec<String>,
    /// New users' `account_type`, when the tenant sets one.
    account_type: Option<ThoughtspotAccountType>,
    known: RwLock<Known>,
    caps: Capabilities,
}

impl ThoughtspotAdapter {
    pub fn new(
        client: VendorClient,
        org_id: i64,
        orgs: Option<ThoughtspotOrgGroups>,
        rule_roles: Vec<String>,
        variables: Vec<String>,
    ) -> ThoughtspotAdapter {
        ThoughtspotAdapter {
            client,
            org_id,
            orgs,
            rule_roles,
            variables,
            account_type: None,
            known: RwLock::new(Known::default()),
            caps: Capabilities {
                vendor: "ThoughtSpot",
                // Privileges and roles reach users only through groups [B.3].
                role: RoleModel::Groups,
                membership: MembershipModel::OnGroup,
                // SUSPENDED ends sessions and needs no password reset to undo, as Okta's own
                // ThoughtSpot integration deprovisions [B.4].
                deactivation: Deactivation::Flag,
                removal: Deactivation::Delete,
                writable_while_inactive: true,
                reactivation_strips_role: false,
                // `users/create` requires `email` [B.4].
                required_user_attributes: &["emails"],
                keeps_login: true,
                reports_last_login: false,
                immutable_user_attributes: &[],
            },
        }
    }

    /// New users get this `account_type` (SSO users must be `SAML_USER` / `OIDC_USER`).
    pub fn with_account_type(mut self, account_type: Option<ThoughtspotAccountType>) -> Self {
        self.account_type = account_type;
        self
    }

    async fn send(&self, req: VendorRequest) -> Result<VendorResponse, VendorError> {
        self.client.send(req).await
    }

    /// A write that sends fixed values (safe to repeat after a lost answer).
    fn write(rest: &str, body: Value) -> VendorRequest {
        VendorRequest::post(wire::path(rest))
            .json(body)
            .idempotent()
    }

    /// A search (POST, read-only) [B.1].
    fn search(rest: &str, body: Value) -> VendorRequest {
        VendorRequest::post(wire::path(rest))
            .json(body)
            .idempotent()
    }

    /// Every item of a search, page by page until a short page (no total is given) [B.4].
    async fn fetch_all<T: serde::de::DeserializeOwned>(
        &self,
        rest: &str,
        filter: Value,
    ) -> Result<Vec<T>, VendorError> {
        self.fetch_pages(rest, filter, |_| {}).await
    }

    /// [`Self::fetch_all`], telling `on_page` how many items each page brought (sync progress).
    async fn fetch_pages<T: serde::de::DeserializeOwned>(
        &self,
        rest: &str,
        filter: Value,
        on_page: impl Fn(usize),
    ) -> Result<Vec<T>, VendorError> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let mut body = filter.clone();
            body["record_offset"] = json!(offset);
            body["record_size"] = json!(wire::PAGE_SIZE);
            let resp = self.send(Self::search(rest, body)).await?;
            if !resp.is_success() {
                return Err(resp.rejected());
            }
            let page: Vec<T> = resp.json()?;
            let n = page.len();
            on_page(n);
            out.extend(page);
            if n < wire::PAGE_SIZE {
                return Ok(out);
            }
            offset += n;
        }
    }

    /// One search that may miss: an empty array, or (UNVERIFIED which one ThoughtSpot does) a
    /// ThoughtSpot error naming no such object [B.4]: its code 10002 (bad parameter) with a 400,
    /// or a 404 (a version that says so). Anything else — a 404 page of a proxy, a body that is
    /// not ThoughtSpot's — is an error, never "absent": an absence decides that a user is gone
    /// (made again) or deleted (done).
    async fn find_one<T: serde::de::DeserializeOwned>(
        &self,
        rest: &str,
        body: Value,
    ) -> Result<Vec<T>, VendorError> {
        let resp = self.send(Self::search(rest, body)).await?;
        if resp.is_success() {
            return resp.json();
        }
        let code = TsError::parse(&resp.body).and_then(|e| e.code);
        if matches!(resp.status, 400 | 404) && code == Some(wire::code::BAD_PARAMETERS) {
            return Ok(Vec::new());
        }
        Err(resp.rejected())
    }

    async fn user_named(&self, ident: &str) -> Result<Option<wire::User>, VendorError> {
        let users: Vec<wire::User> = self
            .find_one(
                "users/search",
                json!({"user_identifier": ident, "record_size": 10}),
            )
            .await?;
        Ok(users
            .into_iter()
            .find(|u| u.id == ident || u.name.eq_ignore_ascii_case(ident)))
    }

    async fn group_named(&self, ident: &str) -> Result<Option<wire::Group>, VendorError> {
        let groups: Vec<wire::Group> = self
            .find_one(
                "groups/search",
                json!({"group_identifier": ident, "include_users": false, "include_sub_groups": false, "record_size": 10}),
            )
            .await?;
        Ok(groups
            .into_iter()
            .find(|g| g.id == ident || g.name.eq_ignore_ascii_case(ident)))
    }

    async fn all_groups(&self) -> Result<Vec<wire::Group>, VendorError> {
        self.fetch_all(
            "groups/search",
            json!({"include_users": false, "include_sub_groups": false,
                   "sort_options": {"field_name": "NAME", "order": "ASC"}}),
        )
        .await
    }

    /// The names of the Org's groups (for `config check --online`).
    pub async fn group_names(&self) -> Result<Vec<String>, VendorError> {
        Ok(self
            .all_groups()
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect())
    }

    /// Every Org (needs a cluster administrator) [B.6].
    async fn all_orgs(&self) -> Result<Vec<wire::Org>, VendorError> {
        let resp = self.send(Self::search("orgs/search", json!({}))).await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        resp.json()
    }

    pub async fn org_names(&self) -> Result<Vec<String>, VendorError> {
        Ok(self.all_orgs().await?.into_iter().map(|o| o.name).collect())
    }

    async fn org_named(&self, name: &str) -> Result<Option<wire::Org>, VendorError> {
        Ok(self
            .all_orgs()
            .await?
            .into_iter()
            .find(|o| o.name.eq_ignore_ascii_case(name)))
    }

    /// The token's Org name, read once from the session's user [B.2].
    pub async fn org_name(&self) -> Result<String, VendorError> {
        if let Some(n) = self.known.read().org_name.clone() {
            return Ok(n);
        }
        let resp = self
            .send(VendorRequest::get(wire::path("auth/session/user")))
            .await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        let me: wire::User = resp.json()?;
        let org = me
            .current_org
            .filter(|o| o.id == self.org_id)
            .ok_or_else(|| VendorError::Auth {
                reason: format!(
                    "the session is not in the configured Org {}; nothing is sent",
                    self.org_id
                ),
            })?;
        self.known.write().org_name = Some(org.name.clone());
        Ok(org.name)
    }

    /// The mapped formula variables that ThoughtSpot does not have, with why.
    pub async fn missing_variables(&self) -> Result<Vec<(String, String)>, VendorError> {
        let mut out = Vec::new();
        for name in &self.variables {
            let found: Vec<wire::Variable> = self
                .find_one(
                    "template/variables/search",
                    json!({"variable_details": [{"identifier": name}], "record_size": 10}),
                )
                .await?;
            match found.iter().find(|v| v.name.eq_ignore_ascii_case(name)) {
                None => out.push((
                    name.clone(),
                    format!("ThoughtSpot has no formula variable named \"{name}\" (create it under Develop → Variables, or fix the name)"),
                )),
                Some(v) if v.variable_type.as_deref().is_some_and(|t| t != "FORMULA_VARIABLE") => {
                    out.push((
                        name.clone(),
                        format!(
                            "ThoughtSpot's variable \"{name}\" is a {}, not a formula variable",
                            v.variable_type.as_deref().unwrap_or_default()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(out)
    }

    /// Every user's value of each mapped variable in the Org: (variable, user id or name) →
    /// value.
    async fn variable_values(&self) -> Result<HashMap<(String, String), String>, VendorError> {
        let mut out = HashMap::new();
        if self.variables.is_empty() {
            return Ok(out);
        }
        let org = self.org_name().await?;
        let details: Vec<Value> = self
            .variables
            .iter()
            .map(|v| json!({"identifier": v}))
            .collect();
        let vars: Vec<wire::Variable> = self
            .fetch_all(
                "template/variables/search",
                json!({
                    "variable_details": details,
                    "value_scope": [{"org_identifier": org, "principal_type": "USER"}],
                    "response_content": "METADATA_AND_VALUES",
                }),
            )
            .await?;
        for var in vars {
            let Some(name) = self
                .variables
                .iter()
                .find(|n| n.eq_ignore_ascii_case(&var.name))
            else {
                continue;
            };
            for v in var.values.unwrap_or_default() {
                if v.principal_type.as_deref() != Some("USER") || v.model_identifier.is_some() {
                    continue;
                }
                let (Some(who), Some(text)) = (v.principal_identifier.clone(), v.text()) else {
                    continue;
                };
                out.insert((name.clone(), who.to_lowercase()), text);
            }
        }
        Ok(out)
    }

    /// Sets (or clears, with no value) one user's value of one variable, in the token's Org.
    /// REPLACE with the whole set for that scope: no value clears it [spec, update-values].
    async fn set_variable(&self, user: &str, name: &str, value: Option<&str>) -> AdapterResult<()> {
        let org = self.org_name().await?;
        let values: Vec<&str> = value.into_iter().collect();
        let body = json!({
            "operation": "REPLACE",
            "variable_assignment": [{
                "assigned_values": values,
                "org_identifier": org,
                "principal_type": "USER",
                "principal_identifier": user,
            }],
        });
        let rest = format!("template/variables/{}/update-values", wire::segment(name));
        let resp = self.send(Self::write(&rest, body)).await?;
        if resp.is_success() {
            return Ok(());
        }
        if self.user_by_id(user).await?.is_none() {
            return Err(AdapterError::Gone);
        }
        Err(self.refusal(&resp, &format!("value of formula variable \"{name}\"")))
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<wire::User>, VendorError> {
        self.user_named(id).await
    }

    /// Resolves the rules' role names: a ThoughtSpot group by that name, else an RBAC role
    /// held through the bridge's group for it (created when `create`, else left out of the
    /// catalog, so that a check reports what start-up would create... only when the role
    /// itself is missing).
    pub async fn resolve_roles(&self, create: bool) -> AdapterResult<RoleCatalog> {
        let groups = self.all_groups().await?;
        let mut roles: Option<Vec<wire::Role>> = None;
        let mut catalog = RoleCatalog::default();
        let mut known = Known {
            org_name: self.known.read().org_name.clone(),
            resolved: true,
            ..Known::default()
        };
        for name in &self.rule_roles {
            if wire::is_builtin_group(name) {
                // Refused by the offline check; never resolved.
                continue;
            }
            if let Some(g) = groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)) {
                known.role_groups.insert(g.id.clone());
                known.role_group_names.insert(g.name.to_lowercase());
                catalog.roles.push(RoleInfo {
                    id: g.id.clone(),
                    names: vec![name.clone()],
                    display: g.name.clone(),
                    admin: wire::grants_admin(g.privileges.as_deref()),
                });
                continue;
            }
            if roles.is_none() {
                roles = Some(self.all_roles().await?);
            }
            let Some(role) = roles
                .iter()
                .flatten()
                .find(|r| r.name.eq_ignore_ascii_case(name) || r.id == *name)
            else {
                continue;
            };
            let gname = role_group_name(&role.name);
            let id = match groups.iter().find(|g| g.name.eq_ignore_ascii_case(&gname)) {
                Some(g) => {
                    let carried: Vec<&str> =
                        g.roles.iter().flatten().map(|r| r.id.as_str()).collect();
                    if create && carried != [role.id.as_str()] {
                        // Someone changed the bridge's group: it carries exactly the role again.
                        self.put_group(
                            &g.id,
                            json!({"role_identifiers": [role.id], "operation": "REPLACE"}),
                            "role group update",
                        )
                        .await?;
                    }
                    Some(g.id.clone())
                }
                None if create => Some(self.make_role_group(&gname, &role.id).await?),
                // `--online`: the group is made at start.
                None => Some(format!("(to be created) {gname}")),
            };
            if let Some(id) = id {
                known.role_groups.insert(id.clone());
                known.role_group_names.insert(gname.to_lowercase());
                catalog.roles.push(RoleInfo {
                    id,
                    names: vec![name.clone(), gname.clone()],
                    display: role.name.clone(),
                    admin: wire::grants_admin(role.privileges.as_deref()),
                });
            }
        }
        if create {
            *self.known.write() = known;
        }
        Ok(catalog)
    }

    async fn all_roles(&self) -> Result<Vec<wire::Role>, VendorError> {
        let resp = self.send(Self::search("roles/search", json!({}))).await?;
        if resp.is_success() {
            return resp.json();
        }
        // Without RBAC there are no roles to search [B.3]: rules then name groups only.
        if resp.status == 400 {
            return Ok(Vec::new());
        }
        if resp.status == 403 {
            return Err(VendorError::Auth {
                reason: "roles/search answered 403: the bridge's user lacks ROLE_ADMINISTRATION (needed to resolve rules that name RBAC roles)".into(),
            });
        }
        Err(resp.rejected())
    }

    async fn make_role_group(&self, name: &str, role_id: &str) -> AdapterResult<String> {
        let req = VendorRequest::post(wire::path("groups/create")).json(json!({
            "name": name,
            "display_name": name,
            "description": "Managed by scim-bridge: its members hold this role; membership follows the role rules",
            "role_identifiers": [role_id],
        }));
        let outcome = self
            .client
            .create_or_find(req, || self.group_named(name))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(g) => return Ok(g.id),
            CreateOutcome::Sent(r) => r,
        };
        if resp.is_success() {
            return Ok(resp.json::<wire::Group>()?.id);
        }
        if let Some(g) = self.group_named(name).await? {
            return Ok(g.id);
        }
        Err(self.refusal(&resp, "role group create"))
    }

    fn is_role_group(&self, id: &str) -> bool {
        self.known.read().role_groups.contains(id)
    }

    fn is_role_group_name(&self, name: &str) -> bool {
        self.known
            .read()
            .role_group_names
            .contains(&name.to_lowercase())
    }

    /// A group the bridge neither lists nor lets the IdP take over.
    fn reserved(&self, name: &str) -> Option<AdapterError> {
        if wire::is_builtin_group(name) {
            return Some(AdapterError::Refused {
                vendor: "ThoughtSpot",
                reason: format!(
                    "\"{name}\" is a ThoughtSpot built-in group the bridge never changes"
                ),
                kind: Refusal::Conflict,
            });
        }
        if self.is_role_group_name(name) {
            return Some(AdapterError::Refused {
                vendor: "ThoughtSpot",
                reason: format!("\"{name}\" is a role group, whose members the role rules decide"),
                kind: Refusal::Conflict,
            });
        }
        None
    }

    /// The user as the engine sees it, with its variable values when they were read.
    fn neutral(
        &self,
        u: &wire::User,
        values: Option<&HashMap<(String, String), String>>,
    ) -> VendorUser {
        let mut attributes = BTreeMap::new();
        if let Some(values) = values {
            for var in &self.variables {
                let v = values
                    .get(&(var.clone(), u.id.to_lowercase()))
                    .or_else(|| values.get(&(var.clone(), u.name.to_lowercase())));
                if let Some(v) = v {
                    attributes.insert(var.clone(), v.clone());
                }
            }
        }
        let known = self.known.read();
        let role = if known.resolved {
            let held: Vec<&str> = u
                .user_groups
                .iter()
                .flatten()
                .filter(|g| known.role_groups.contains(&g.id))
                .map(|g| g.id.as_str())
                .collect();
            match held.as_slice() {
                [] => Some(NO_ROLE.to_string()),
                [one] => Some(one.to_string()),
                // Two exclusive role groups: unknown, so the engine sets the one the rules say
                // and takes the user out of the others.
                _ => None,
            }
        } else {
            None
        };
        VendorUser {
            id: u.id.clone(),
            profile: Some(Profile {
                login: u.name.clone(),
                email: u.email.clone().filter(|e| !e.is_empty()),
                display_name: u.display_name.clone().filter(|d| !d.is_empty()),
                attributes,
                ..Profile::default()
            }),
            active: u.account_status.as_deref().map(is_active),
            role,
            groups: None,
            // ThoughtSpot's v2 user has no last sign-in: only `first_login_time_in_millis`
            // [TS-SPEC User], which says nothing of recent use. Never reported, so the dormant
            // sweep leaves ThoughtSpot users alone rather than guess.
            last_login: None,
        }
    }

    /// A user read without its variable values (a lookup): with variables mapped its profile
    /// is unknown, so that the engine sends every field and value rather than take "no value"
    /// for what ThoughtSpot holds.
    fn unread(&self, u: &wire::User) -> VendorUser {
        let mut v = self.neutral(u, None);
        if !self.variables.is_empty() {
            v.profile = None;
        }
        v
    }

    /// Maps a ThoughtSpot error answer to the engine's classes. `what` says what was refused.
    fn refusal(&self, resp: &VendorResponse, what: &str) -> AdapterError {
        let e = TsError::parse(&resp.body);
        let detail = e
            .as_ref()
            .map(TsError::describe)
            .unwrap_or_else(|| format!("HTTP {}", resp.status));
        match resp.status {
            400 | 409 | 422 => AdapterError::Refused {
                vendor: "ThoughtSpot",
                reason: format!("the {what}: {detail}"),
                kind: Refusal::Invalid,
            },
            500 if e.as_ref().and_then(|e| e.code) == Some(wire::code::DUPLICATE_OBJECT_ID) => {
                AdapterError::Refused {
                    vendor: "ThoughtSpot",
                    reason: format!("the {what}: {detail}"),
                    kind: Refusal::Conflict,
                }
            }
            // 401/403 (a privilege the bridge's user lacks) and the rest: an operator can fix
            // them, so they are retried.
            status => AdapterError::transient(format!(
                "ThoughtSpot answered the {what} with HTTP {status}: {detail}"
            )),
        }
    }

    /// `groups/{id}/update` with `body`; `Err(Gone)` when the group is gone.
    async fn put_group(&self, id: &str, body: Value, what: &str) -> AdapterResult<()> {
        let rest = format!("groups/{}/update", wire::segment(id));
        let resp = self.send(Self::write(&rest, body)).await?;
        if resp.is_success() {
            return Ok(());
        }
        if self.group_named(id).await?.is_none() {
            return Err(AdapterError::Gone);
        }
        Err(self.refusal(&resp, what))
    }

    /// `users/{id}/update` with `body`; `Err(Gone)` when the user is gone.
    async fn put_user(&self, id: &str, body: Value, what: &str) -> AdapterResult<()> {
        let rest = format!("users/{}/update", wire::segment(id));
        let resp = self.send(Self::write(&rest, body)).await?;
        if resp.is_success() {
            return Ok(());
        }
        if self.user_by_id(id).await?.is_none() {
            return Err(AdapterError::Gone);
        }
        Err(self.refusal(&resp, what))
    }

    /// The Org a SCIM group stands for, made when missing and allowed.
    async fn org_group(&self, group: &str, org: &str) -> AdapterResult<Created<VendorGroup>> {
        let orgs = self
            .orgs
            .as_ref()
            .expect("an Org group implies Orgs from groups");
        if let Some(o) = self.org_named(org).await? {
            return Ok(Created::Exists(org_vendor_group(&o, group)));
        }
        if !orgs.create {
            return Err(AdapterError::Refused {
                vendor: "ThoughtSpot",
                reason: format!(
                    "ThoughtSpot has no Org named \"{org}\" and the tenant does not create Orgs (create_orgs = false)"
                ),
                kind: Refusal::Invalid,
            });
        }
        let req = VendorRequest::post(wire::path("orgs/create")).json(json!({
            "name": org,
            "description": format!("Created by scim-bridge for the group \"{group}\""),
        }));
        let outcome = self
            .client
            .create_or_find(req, || self.org_named(org))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(o) => return Ok(Created::Exists(org_vendor_group(&o, group))),
            CreateOutcome::Sent(r) => r,
        };
        if resp.is_success() {
            let o: wire::Org = resp.json()?;
            tracing::info!(org = %o.name, id = o.id, "created a ThoughtSpot Org for a SCIM group");
            return Ok(Created::New(org_vendor_group(&o, group)));
        }
        if let Some(o) = self.org_named(org).await? {
            return Ok(Created::Exists(org_vendor_group(&o, group)));
        }
        Err(self.refusal(&resp, "Org create"))
    }

    /// Adds or removes users of an Org: `org_identifiers` with an explicit operation.
    async fn change_org_members(
        &self,
        org: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        let mut calls = Vec::with_capacity(add.len() + remove.len());
        for u in add {
            calls.push(self.org_member_call(org, u, true));
        }
        for u in remove {
            calls.push(self.org_member_call(org, u, false));
        }
        let results: Vec<AdapterResult<()>> = futures_util::stream::iter(calls)
            .buffer_unordered(ORG_FAN_OUT)
            .collect()
            .await;
        results.into_iter().collect::<AdapterResult<Vec<()>>>()?;
        Ok(())
    }

    async fn org_member_call(&self, org: &str, user: &str, adding: bool) -> AdapterResult<()> {
        let op = if adding { "ADD" } else { "REMOVE" };
        match self
            .put_user(
                user,
                json!({"org_identifiers": [org], "operation": op}),
                "Org membership change",
            )
            .await
        {
            // A user gone from ThoughtSpot is in no Org: nothing to remove; one to add is made
            // again by its own reconcile first.
            Err(AdapterError::Gone) if !adding => Ok(()),
            Err(AdapterError::Gone) => Err(AdapterError::transient(
                "a member is not in ThoughtSpot (yet); retried after it is",
            )),
            other => other,
        }
    }

    /// Users of a group, or of an Org.
    async fn members(&self, group: &str) -> Result<Vec<String>, VendorError> {
        let filter = match group.strip_prefix(ORG_PREFIX) {
            Some(org) => json!({"org_identifiers": [org]}),
            None => json!({"group_identifiers": [group]}),
        };
        let users: Vec<wire::User> = self.fetch_all("users/search", filter).await?;
        Ok(users.into_iter().map(|u| u.id).collect())
    }
}

/// ACTIVE, and the states a user is still provisioned in (LOCKED clears itself after an hour;
/// PENDING waits for activation) [B.3]; SUSPENDED, INACTIVE and EXPIRED are deactivated.
fn is_active(status: &str) -> bool {
    !matches!(status, "SUSPENDED" | "INACTIVE" | "EXPIRED")
}

fn org_vendor_group(o: &wire::Org, group: &str) -> VendorGroup {
    VendorGroup {
        id: format!("{ORG_PREFIX}{}", o.id),
        name: group.to_string(),
        members: None,
    }
}

fn vendor_group(g: wire::Group) -> VendorGroup {
    VendorGroup {
        id: g.id,
        name: g.name,
        members: None,
    }
}

#[async_trait]
impl VendorAdapter for ThoughtspotAdapter {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// ThoughtSpot keeps the name, the email, a display name (required: the login when the
    /// IdP sends none) and the mapped variables; no given or family name.
    fn vendor_view(&self, p: &Profile) -> Profile {
        Profile {
            login: p.login.clone(),
            email: p.email.clone(),
            display_name: Some(p.display_name.clone().unwrap_or_else(|| p.login.clone())),
            attributes: p.attributes.clone(),
            ..Profile::default()
        }
    }

    /// Signs in, reads the Org's name, and resolves the rules' roles, creating the role groups
    /// that are missing.
    async fn roles(&self) -> AdapterResult<RoleCatalog> {
        self.org_name().await?;
        self.resolve_roles(true).await
    }

    async fn create_user(&self, user: &NewUser) -> AdapterResult<Created<VendorUser>> {
        let view = self.vendor_view(&user.profile);
        let login = &view.login;
        let mut body = json!({
            "name": login,
            "display_name": view.display_name,
            "email": view.email.clone().unwrap_or_default(),
            "account_status": if user.active { "ACTIVE" } else { "SUSPENDED" },
            // The IdP signs users in; ThoughtSpot mails nobody.
            "trigger_welcome_email": false,
            "trigger_activation_email": false,
        });
        if let Some(kind) = self.account_type {
            body["account_type"] = json!(kind.as_str());
        }
        let req = VendorRequest::post(wire::path("users/create")).json(body);
        let outcome = self
            .client
            .create_or_find(req, || self.user_named(login))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(u) => return Ok(Created::Exists(self.unread(&u))),
            CreateOutcome::Sent(r) => r,
        };
        if !resp.is_success() {
            // A duplicate name is a 400 like any other [B.7]: the lookup tells.
            if let Some(u) = self.user_named(login).await? {
                return Ok(Created::Exists(self.unread(&u)));
            }
            return Err(self.refusal(&resp, "user create"));
        }
        let made: wire::User = resp.json()?;
        Ok(Created::New(VendorUser {
            id: made.id,
            // The variables follow as the engine's next step.
            profile: Some(Profile {
                attributes: BTreeMap::new(),
                ..view
            }),
            active: Some(user.active),
            // A new user is in no role group; the engine adds the rules' one next.
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
        let mut fields = Map::new();
        let mut attributes = false;
        if let Some(p) = &change.profile {
            let view = self.vendor_view(p);
            let changed = |f: &str| change.changed_fields.contains(&f);
            if changed("login") {
                fields.insert("name".into(), json!(view.login));
            }
            if changed("email") {
                fields.insert(
                    "email".into(),
                    json!(view.email.clone().unwrap_or_default()),
                );
            }
            if changed("display_name") || changed("login") {
                fields.insert("display_name".into(), json!(view.display_name));
            }
            attributes = changed("attributes");
        }
        if let Some(active) = change.active {
            fields.insert(
                "account_status".into(),
                json!(if active { "ACTIVE" } else { "SUSPENDED" }),
            );
        }
        let renamed = fields
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        if !fields.is_empty() {
            match self
                .put_user(id, Value::Object(fields), "user update")
                .await
            {
                Err(AdapterError::Refused { reason, .. }) if renamed.is_some() => {
                    // A name another user holds is a uniqueness conflict (ThoughtSpot says 10002
                    // for both it and a bad value [B.7]; the lookup tells).
                    let login = renamed.unwrap_or_default();
                    let kind = match self.user_named(&login).await? {
                        Some(other) if other.id != id => Refusal::Conflict,
                        _ => Refusal::Invalid,
                    };
                    return Err(AdapterError::Refused {
                        vendor: "ThoughtSpot",
                        reason,
                        kind,
                    });
                }
                other => other?,
            }
        }
        if attributes {
            if let Some(p) = &change.profile {
                for var in &self.variables {
                    self.set_variable(id, var, p.attributes.get(var).map(String::as_str))
                        .await?;
                }
            }
        }
        Ok(None)
    }

    async fn delete_user(&self, id: &str) -> AdapterResult<Removed> {
        let rest = format!("users/{}/delete", wire::segment(id));
        let resp = self.send(Self::write(&rest, json!({}))).await?;
        if resp.is_success() || self.user_by_id(id).await?.is_none() {
            return Ok(Removed::Deleted);
        }
        Err(self.refusal(&resp, "user delete"))
    }

    async fn find_user(&self, profile: &Profile) -> AdapterResult<Option<VendorUser>> {
        Ok(self
            .user_named(&profile.login)
            .await?
            .map(|u| self.unread(&u)))
    }

    async fn get_user(&self, id: &str) -> AdapterResult<Option<VendorUser>> {
        Ok(self.user_by_id(id).await?.map(|u| self.unread(&u)))
    }

    /// Every user of the Org with its role group and variable values. Membership of other
    /// groups is not read: kept on the group, it is the IdP's to say.
    async fn list_users(&self) -> AdapterResult<Vec<VendorUser>> {
        let (users, values) = tokio::try_join!(
            self.fetch_pages::<wire::User>(
                "users/search",
                json!({"sort_options": {"field_name": "NAME", "order": "ASC"}}),
                |n| crate::engine::observe::users_page_read(n, None),
            ),
            self.variable_values(),
        )?;
        let values = (!self.variables.is_empty()).then_some(&values);
        Ok(users
            .iter()
            .filter(|u| !u.name.is_empty())
            .map(|u| self.neutral(u, values))
            .collect())
    }

    async fn create_group(&self, name: &str) -> AdapterResult<Created<VendorGroup>> {
        if let Some(org) = self.orgs.as_ref().and_then(|o| o.org_of(name)) {
            return self.org_group(name, &org).await;
        }
        if let Some(e) = self.reserved(name) {
            return Err(e);
        }
        let req = VendorRequest::post(wire::path("groups/create"))
            .json(json!({"name": name, "display_name": name}));
        let outcome = self
            .client
            .create_or_find(req, || self.group_named(name))
            .await?;
        let resp = match outcome {
            CreateOutcome::Found(g) => return Ok(Created::Exists(vendor_group(g))),
            CreateOutcome::Sent(r) => r,
        };
        if resp.is_success() {
            return Ok(Created::New(vendor_group(resp.json::<wire::Group>()?)));
        }
        if let Some(g) = self.group_named(name).await? {
            return Ok(Created::Exists(vendor_group(g)));
        }
        Err(self.refusal(&resp, "group create"))
    }

    async fn rename_group(&self, id: &str, name: &str) -> AdapterResult<()> {
        let into_org = self.orgs.as_ref().and_then(|o| o.org_of(name)).is_some();
        if id.starts_with(ORG_PREFIX) || into_org {
            return Err(AdapterError::Refused {
                vendor: "ThoughtSpot",
                reason: "a group that stands for an Org (org_group_pattern) cannot be renamed into or out of one; create a new group".into(),
                kind: Refusal::Invalid,
            });
        }
        if let Some(e) = self.reserved(name) {
            return Err(e);
        }
        self.put_group(
            id,
            json!({"name": name, "display_name": name}),
            "group rename",
        )
        .await
    }

    /// A group goes; an Org stays (deleting it would delete its content), without the bridge's
    /// members.
    async fn delete_group(&self, id: &str, members: &[String]) -> AdapterResult<()> {
        if let Some(org) = id.strip_prefix(ORG_PREFIX) {
            return self.change_org_members(org, &[], members).await;
        }
        let rest = format!("groups/{}/delete", wire::segment(id));
        let resp = self.send(Self::write(&rest, json!({}))).await?;
        if resp.is_success() || self.group_named(id).await?.is_none() {
            return Ok(());
        }
        Err(self.refusal(&resp, "group delete"))
    }

    async fn find_group(&self, name: &str) -> AdapterResult<Option<VendorGroup>> {
        if let Some(org) = self.orgs.as_ref().and_then(|o| o.org_of(name)) {
            return Ok(self
                .org_named(&org)
                .await?
                .map(|o| org_vendor_group(&o, name)));
        }
        if self.reserved(name).is_some() {
            return Ok(None);
        }
        Ok(self.group_named(name).await?.map(vendor_group))
    }

    /// The Org's groups but the built-in and the role groups (and no Orgs: their membership is
    /// the IdP's to say).
    async fn list_groups(&self) -> AdapterResult<Vec<VendorGroup>> {
        Ok(self
            .all_groups()
            .await?
            .into_iter()
            .filter(|g| !wire::is_builtin_group(&g.name) && !self.is_role_group(&g.id))
            .map(vendor_group)
            .collect())
    }

    async fn group_members(&self, group: &str) -> AdapterResult<Option<Vec<String>>> {
        if !group.starts_with(ORG_PREFIX) && self.group_named(group).await?.is_none() {
            return Err(AdapterError::Gone);
        }
        Ok(Some(self.members(group).await?))
    }

    async fn change_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        if let Some(org) = group.strip_prefix(ORG_PREFIX) {
            return self.change_org_members(org, add, remove).await;
        }
        if self.is_role_group(group) {
            return match self.change_group_members(group, add, remove).await {
                // A role group deleted by hand: not a mirrored group the engine makes again.
                Err(AdapterError::Gone) => Err(AdapterError::transient(
                    "a role group was deleted in ThoughtSpot; it is made again when the bridge restarts (or recreate it by hand)",
                )),
                other => other,
            };
        }
        self.change_group_members(group, add, remove).await
    }

    fn unavailable(&self) -> Option<String> {
        self.client.unavailable_reason("ThoughtSpot")
    }
}

impl ThoughtspotAdapter {
    /// Adds and removes members of a group, in calls of at most `MEMBERS_PER_CALL`.
    async fn change_group_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        // Always an explicit operation: without one the list replaces the whole membership
        // [B.5].
        for (users, op) in [(add, "ADD"), (remove, "REMOVE")] {
            for chunk in users.chunks(MEMBERS_PER_CALL) {
                let body = json!({"user_identifiers": chunk, "operation": op});
                let refused = match self.put_group(group, body, "membership change").await {
                    Err(e @ AdapterError::Refused { .. }) => e,
                    other => {
                        other?;
                        continue;
                    }
                };
                // One unknown user fails the whole call (10002, like any bad parameter): a
                // member removed from ThoughtSpot meanwhile is nothing to remove, one to add is
                // made again by its own reconcile first.
                let mut present = Vec::with_capacity(chunk.len());
                for u in chunk {
                    if self.user_by_id(u).await?.is_some() {
                        present.push(u.clone());
                    }
                }
                if present.len() == chunk.len() {
                    return Err(refused);
                }
                if op == "ADD" {
                    return Err(AdapterError::transient(
                        "a member is not in ThoughtSpot (yet); retried after it is",
                    ));
                }
                if !present.is_empty() {
                    self.put_group(
                        group,
                        json!({"user_identifiers": present, "operation": op}),
                        "membership change",
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

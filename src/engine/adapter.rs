//! The narrow seam between the engine and one vendor: wire calls and a few capability flags.
//! An adapter knows the vendor's paths, bodies and error codes; it knows nothing of SCIM
//! documents, locks, retries across calls, the outbox or role rules (ARCHITECTURE.md, "The
//! engine"). The shared [`VendorClient`](crate::connector::http::VendorClient) under it does
//! sign-in, retries within one call, the rate budget and the breaker.

use crate::connector::http::VendorError;
use async_trait::async_trait;
use std::time::Duration;

/// How the vendor holds a user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleModel {
    /// An attribute of the user (Sisense `roleId`, Tableau `siteRole`): set by
    /// [`UserChange::role`].
    Attribute,
    /// Membership in one of mutually exclusive role groups (Metabase Administrators,
    /// ThoughtSpot groups that carry privileges): the role's id is the role group's vendor id,
    /// and the engine moves the user between role groups with [`VendorAdapter::change_members`].
    Groups,
}

/// The role of a user in none of the role groups ([`RoleModel::Groups`]): what a user the IdP
/// wrote holds when no rule covers it, and what a new vendor user holds.
pub const NO_ROLE: &str = "";

/// Where the vendor keeps group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipModel {
    /// On the user, as its full list of groups (Sisense REST `groups`): written by
    /// [`UserChange::groups`].
    OnUser,
    /// On the group (Sisense's SCIM, Tableau, ThoughtSpot, Metabase): written by
    /// [`VendorAdapter::change_members`].
    OnGroup,
}

/// How the vendor deactivates a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deactivation {
    /// A flag or a status (Sisense `active`, ThoughtSpot `SUSPENDED`): [`UserChange::active`].
    Flag,
    /// A role that means "no access" (Tableau `Unlicensed`), by its vendor id.
    Role(String),
    /// The vendor user is deleted; reactivation creates it again, with its groups and role.
    Delete,
}

/// What the engine reads about a vendor.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// The vendor's name in messages ("Sisense").
    pub vendor: &'static str,
    pub role: RoleModel,
    pub membership: MembershipModel,
    pub deactivation: Deactivation,
    /// What an IdP DELETE does at the vendor (Tableau's `deprovision` may differ from how it
    /// deactivates: `active: false` is always `Unlicensed`, a DELETE may remove the user).
    pub removal: Deactivation,
    /// Whether profile and role changes may be sent while the user is inactive.
    pub writable_while_inactive: bool,
    /// Whether reactivating a user resets its role at the vendor (the role is then sent again).
    pub reactivation_strips_role: bool,
    /// SCIM user attributes the vendor cannot do without, published as `required` in the
    /// tenant's `/Schemas` and refused locally when missing.
    pub required_user_attributes: &'static [&'static str],
    /// Whether the vendor's login is the SCIM userName. Metabase has no login but the email:
    /// its users' email stands in for the login, and observe never writes it into userName.
    pub keeps_login: bool,
    /// Whether the vendor reports users' last sign-in (`VendorUser.last_login`). Where it does
    /// not (ThoughtSpot's v2 API has no such field), a missing value means "unknown", never
    /// "never signed in": the dormant sweep must not read silence as idleness.
    pub reports_last_login: bool,
    /// SCIM user attributes the vendor cannot change once set (Tableau's user name), published
    /// as `immutable` and refused locally (`400 mutability`) when changed.
    pub immutable_user_attributes: &'static [&'static str],
}

/// The user attributes a vendor keeps, in neutral form.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub login: String,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The whole name as one string (SCIM `displayName`, else `name.givenName` and
    /// `name.familyName` joined, else `name.formatted`): Tableau `fullName`, ThoughtSpot
    /// `display_name`. Only vendors that keep such a field keep it (see
    /// [`VendorAdapter::vendor_view`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Vendor attributes from `[tenants.attributes]` (e.g. ThoughtSpot formula variables).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A vendor user as the vendor shows it. `None` means "the vendor did not say".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorUser {
    pub id: String,
    pub profile: Option<Profile>,
    pub active: Option<bool>,
    pub role: Option<String>,
    /// The user's groups, where the vendor keeps membership on the user.
    pub groups: Option<Vec<String>>,
    /// The last sign-in the vendor reports (RFC 3339), for the access review and the dormant
    /// sweep; `None` when it reports none.
    pub last_login: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorGroup {
    pub id: String,
    pub name: String,
    /// The members' vendor ids, where the vendor lists them with the group.
    pub members: Option<Vec<String>>,
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub profile: Profile,
    pub active: bool,
    pub role: Option<String>,
    /// Vendor group ids ([`MembershipModel::OnUser`] only; empty otherwise).
    pub groups: Vec<String>,
}

/// The difference to close on an existing user. `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    /// The whole desired profile, with the fields that differ named in `changed_fields`.
    pub profile: Option<Profile>,
    pub changed_fields: Vec<&'static str>,
    pub active: Option<bool>,
    pub role: Option<String>,
    /// The full list of vendor group ids ([`MembershipModel::OnUser`]).
    pub groups: Option<Vec<String>>,
}

impl UserChange {
    pub fn is_empty(&self) -> bool {
        self.profile.is_none()
            && self.active.is_none()
            && self.role.is_none()
            && self.groups.is_none()
    }
}

/// What a create came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    /// The vendor made it.
    New(T),
    /// The vendor already has one with this natural key (a duplicate answer, or found after an
    /// ambiguous create): the engine decides whether it may take it over.
    Exists(T),
}

/// A role the vendor offers: its id and every name an operator may write for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleInfo {
    pub id: String,
    pub names: Vec<String>,
    /// The name shown in the audit log.
    pub display: String,
    /// The vendor says this role administers the instance (Sisense's Sys. Admin, Admin and
    /// Data Admin; Tableau's site and server administrators; ThoughtSpot's ADMINISTRATION
    /// privilege; Metabase's Administrators, i.e. `is_superuser`). The dormant sweep never
    /// takes such a user (issue 13: "never an admin the rules keep"), whatever the role is
    /// called.
    pub admin: bool,
}

/// The vendor's roles, read at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleCatalog {
    pub roles: Vec<RoleInfo>,
    /// A role never assigned and never taken away (Sisense's Sys. Admin: the bridge may be
    /// signed in as that user).
    pub protected: Option<String>,
    /// The role of a new user when no rule matches and no `default` is configured (the
    /// vendor's own default for new users).
    pub fallback: Option<String>,
}

/// What a delete came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The vendor user is gone (or was already).
    Deleted,
    /// The vendor refused to remove it and keeps it without access (Tableau 409003: a user who
    /// owns content stays, `Unlicensed`). The IdP's delete stands; the engine reports this.
    Kept { reason: String },
}

/// Why the vendor refused a change for good, which decides the SCIM answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Bad data for this vendor → 400 `invalidValue`.
    Invalid,
    /// A uniqueness conflict → 409 `uniqueness`.
    Conflict,
    /// The vendor's current state does not allow it yet: no free licence seat (Tableau
    /// 409014), or the last admin, whom Metabase will not demote or deactivate → 409 with no
    /// `scimType` (the request conflicts with the vendor's current state, RFC 9110 §15.5.10;
    /// it succeeds once a seat is free or another admin exists). Retried at every observe,
    /// since that state changes without the IdP writing anything.
    Capacity,
}

impl Refusal {
    /// The SCIM error the IdP gets for this refusal.
    pub fn scim_error(self, vendor: &str, reason: &str) -> crate::scim::ScimError {
        use crate::scim::ScimError;
        let detail = format!("{vendor} refused the change: {reason}");
        match self {
            Refusal::Invalid => ScimError::invalid_value(detail),
            Refusal::Conflict => ScimError::uniqueness(detail),
            Refusal::Capacity => ScimError::new(409, None, detail),
        }
    }
}

/// Why a vendor call failed, classified once (ARCHITECTURE.md: transient → requeue with
/// backoff; permanent → `failed` with the vendor's reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// Down, failing, throttling, timing out, an open breaker, a sign-in that failed, an
    /// answer that could not be read, or an outcome that is unknown: try again later.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The vendor refuses this change for good (its 4xx); no retry can fix it.
    #[error("{vendor} refused the change: {reason}")]
    Refused {
        vendor: &'static str,
        reason: String,
        kind: Refusal,
    },
    /// The object is gone from the vendor (404 on an update): the engine drops the mapping.
    #[error("the vendor object is gone")]
    Gone,
}

impl AdapterError {
    pub fn transient(reason: impl Into<String>) -> AdapterError {
        AdapterError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, AdapterError::Transient { .. })
    }
}

impl From<VendorError> for AdapterError {
    /// A vendor 4xx that the adapter did not map is a permanent refusal only for 400, 409 and
    /// 422 (the change itself is wrong); 401/403 and the rest are the bridge's credentials or
    /// the vendor's state, which an operator can fix, so they are retried.
    fn from(e: VendorError) -> AdapterError {
        let retry_after = match &e {
            VendorError::Unavailable { retry_after, .. }
            | VendorError::Throttled { retry_after } => Some(*retry_after),
            _ => None,
        };
        AdapterError::Transient {
            reason: e.to_string(),
            retry_after,
        }
    }
}

/// Results of adapter calls.
pub type AdapterResult<T> = Result<T, AdapterError>;

/// One vendor, as the engine drives it. Every call is one logical vendor operation and is safe
/// to repeat with the same arguments (fixed values, never increments), since the engine may run
/// it again after a crash or a lost answer.
#[async_trait]
pub trait VendorAdapter: Send + Sync + 'static {
    fn capabilities(&self) -> &Capabilities;

    /// A profile as this vendor keeps it once written: what [`VendorAdapter::list_users`]
    /// would show for it. The engine compares the vendor's answers with this, so a field the
    /// vendor does not keep (or keeps differently) never reads as drift. Default: every field
    /// but `display_name`.
    fn vendor_view(&self, p: &Profile) -> Profile {
        Profile {
            display_name: None,
            ..p.clone()
        }
    }

    /// Signs in (if needed) and reads the vendor's roles.
    async fn roles(&self) -> AdapterResult<RoleCatalog>;

    // Users.
    async fn create_user(&self, user: &NewUser) -> AdapterResult<Created<VendorUser>>;
    /// Applies a change; returns the user as the vendor now shows it, when the answer says.
    async fn update_user(&self, id: &str, change: &UserChange)
        -> AdapterResult<Option<VendorUser>>;
    /// Deletes a user; an absent one is not an error.
    async fn delete_user(&self, id: &str) -> AdapterResult<Removed>;
    /// The user holding a natural key (login, then email).
    async fn find_user(&self, profile: &Profile) -> AdapterResult<Option<VendorUser>>;
    /// One user by id (`None`: gone).
    async fn get_user(&self, id: &str) -> AdapterResult<Option<VendorUser>>;
    async fn list_users(&self) -> AdapterResult<Vec<VendorUser>>;

    // Groups.
    async fn create_group(&self, name: &str) -> AdapterResult<Created<VendorGroup>>;
    async fn rename_group(&self, id: &str, name: &str) -> AdapterResult<()>;
    /// Deletes a group; an absent one is not an error. `members` are the vendor ids of the
    /// members the bridge confirmed, for a vendor "group" that outlives its deletion (a
    /// ThoughtSpot Org, kept with its content, loses the bridge's members instead).
    async fn delete_group(&self, id: &str, members: &[String]) -> AdapterResult<()>;
    async fn find_group(&self, name: &str) -> AdapterResult<Option<VendorGroup>>;
    async fn list_groups(&self) -> AdapterResult<Vec<VendorGroup>>;
    /// The vendor ids of a group's members, where the vendor lists them
    /// ([`MembershipModel::OnGroup`]); `None` where it does not. Read when membership changes
    /// whose answers were lost must be settled from what the vendor has.
    async fn group_members(&self, _group: &str) -> AdapterResult<Option<Vec<String>>> {
        Ok(None)
    }

    /// Adds and removes members of one group (vendor user ids). Adding a member twice and
    /// removing a non-member are no-ops.
    async fn change_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()>;

    /// `Some(reason)` while the vendor cannot be called at all (an open breaker, a refused
    /// credential): the engine queues writes at once instead of trying inline.
    fn unavailable(&self) -> Option<String>;
}

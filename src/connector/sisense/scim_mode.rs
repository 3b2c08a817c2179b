//! The Sisense SCIM adapter (`mode = "scim"`): users, groups and membership (on the group, one
//! SCIM `PATCH` per change) go to Sisense's own SCIM endpoint; the role, which Sisense's SCIM
//! never sets, goes over REST, and so do the roles list and the directory listing (REST lists
//! carry the role and the groups; SCIM's do not). UNVERIFIED and relied on: a SCIM id is the
//! REST `_id` (see `native`).
//!
//! A create is two vendor calls (SCIM `POST`, then the role). The engine's outbox keeps the
//! user dirty until both are confirmed, so a crash in between is completed by the next pass: the
//! `POST` meets Sisense's duplicate answer, the user is taken over, and the role is set.

use super::native::{self, NativeScim};
use super::rest::{self, SisenseRest};
use super::wire::UserFields;
use crate::engine::adapter::{
    AdapterError, AdapterResult, Capabilities, Created, MembershipModel, NewUser, Profile, Refusal,
    Removed, RoleCatalog, UserChange, VendorAdapter, VendorGroup, VendorUser,
};
use async_trait::async_trait;
use serde_json::{Map, Value};

pub struct SisenseScim {
    pub rest: SisenseRest,
    pub native: NativeScim,
    caps: Capabilities,
}

impl SisenseScim {
    pub fn new(rest: SisenseRest, native: NativeScim) -> SisenseScim {
        let caps = Capabilities {
            membership: MembershipModel::OnGroup,
            ..rest.capabilities().clone()
        };
        SisenseScim { rest, native, caps }
    }

    /// A role PATCH that finds no REST user under a SCIM id means the UNVERIFIED assumption
    /// (shared ids) does not hold for this Sisense: said plainly, and retried, never dropped.
    async fn set_role(&self, vid: &str, role: &str) -> AdapterResult<Option<VendorUser>> {
        match self.rest.set_role(vid, role).await {
            // Gone from SCIM too: deleted (e.g. deprovisioned by a bridge killed before it
            // recorded that); the engine creates it again.
            Err(AdapterError::Gone) if !self.native.has_user(vid).await? => Err(AdapterError::Gone),
            Err(AdapterError::Gone) => {
                tracing::error!(vendor_id = %vid, "Sisense REST has no user under the id its SCIM endpoint returned");
                Err(AdapterError::transient(
                    "Sisense's REST API has no user under the id its SCIM endpoint returned; mode = \"scim\" needs both to share ids (the role could not be set)",
                ))
            }
            other => other,
        }
    }
}

fn fields(p: &Profile) -> UserFields {
    UserFields {
        user_name: p.login.clone(),
        email: p.email.clone().unwrap_or_default(),
        first_name: p.given_name.clone(),
        last_name: p.family_name.clone(),
    }
}

fn neutral(u: &super::wire::User) -> VendorUser {
    VendorUser {
        groups: None,
        ..rest::vendor_user(u)
    }
}

#[async_trait]
impl VendorAdapter for SisenseScim {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    async fn roles(&self) -> AdapterResult<RoleCatalog> {
        self.rest.roles().await
    }

    async fn create_user(&self, user: &NewUser) -> AdapterResult<Created<VendorUser>> {
        let created = match self
            .native
            .create_user(&fields(&user.profile), user.active)
            .await?
        {
            Ok(u) => u,
            Err(Some(existing)) => return Ok(Created::Exists(neutral(&existing))),
            Err(None) => {
                return Err(AdapterError::Refused {
                    vendor: "Sisense",
                    reason: "a user with this userName or email already exists".into(),
                    kind: Refusal::Conflict,
                })
            }
        };
        let mut u = neutral(&created);
        // Every field went with the create: the engine records what it sent.
        u.profile = None;
        u.role = None;
        if let Some(role) = &user.role {
            self.set_role(&created.id, role).await?;
            u.role = Some(role.clone());
        }
        Ok(Created::New(u))
    }

    async fn update_user(
        &self,
        id: &str,
        change: &UserChange,
    ) -> AdapterResult<Option<VendorUser>> {
        let mut body = Map::new();
        if let Some(p) = &change.profile {
            let f = fields(p);
            let all = f.to_json();
            for (field, key) in [
                ("login", "userName"),
                ("email", "email"),
                ("given_name", "firstName"),
                ("family_name", "lastName"),
            ] {
                if change.changed_fields.contains(&field) {
                    body.insert(key.into(), all.get(key).cloned().unwrap_or(Value::Null));
                }
            }
        }
        if let Some(a) = change.active {
            body.insert("active".into(), Value::Bool(a));
        }
        self.native.patch_user(id, native::user_ops(&body)).await?;
        match &change.role {
            Some(role) => self.set_role(id, role).await.map(|u| u.map(neutral_of)),
            None => Ok(None),
        }
    }

    async fn delete_user(&self, id: &str) -> AdapterResult<Removed> {
        self.native.delete_user(id).await?;
        Ok(Removed::Deleted)
    }

    async fn find_user(&self, profile: &Profile) -> AdapterResult<Option<VendorUser>> {
        Ok(self
            .native
            .find_user(&fields(profile))
            .await?
            .map(|u| neutral(&u)))
    }

    async fn get_user(&self, id: &str) -> AdapterResult<Option<VendorUser>> {
        self.rest.get_user(id).await
    }

    async fn list_users(&self) -> AdapterResult<Vec<VendorUser>> {
        self.rest.list_users().await
    }

    async fn create_group(&self, name: &str) -> AdapterResult<Created<VendorGroup>> {
        let g = match self.native.create_group(name).await? {
            Ok(g) => Created::New(g),
            Err(Some(g)) => Created::Exists(g),
            Err(None) => {
                return Err(AdapterError::Refused {
                    vendor: "Sisense",
                    reason: "a group with this name already exists".into(),
                    kind: Refusal::Conflict,
                })
            }
        };
        let to = |g: super::wire::Group| VendorGroup {
            id: g.id,
            name: g.name,
            members: None,
        };
        Ok(match g {
            Created::New(g) => Created::New(to(g)),
            Created::Exists(g) => Created::Exists(to(g)),
        })
    }

    async fn rename_group(&self, id: &str, name: &str) -> AdapterResult<()> {
        self.native.rename_group(id, name).await
    }

    async fn delete_group(&self, id: &str, _members: &[String]) -> AdapterResult<()> {
        self.native.delete_group(id).await
    }

    async fn find_group(&self, name: &str) -> AdapterResult<Option<VendorGroup>> {
        Ok(self.native.find_group(name).await?.map(|g| VendorGroup {
            id: g.id,
            name: g.name,
            members: None,
        }))
    }

    async fn list_groups(&self) -> AdapterResult<Vec<VendorGroup>> {
        self.rest.list_groups().await
    }

    async fn change_members(
        &self,
        group: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        self.native.change_members(group, add, remove).await
    }

    fn unavailable(&self) -> Option<String> {
        self.rest
            .unavailable()
            .or_else(|| rest::unavailable(&self.native.client, "Sisense SCIM endpoint"))
            .map(|r| {
                if r.contains("sign-in failed") && r.starts_with("Sisense SCIM endpoint") {
                    format!("Sisense SCIM endpoint refuses the token ({r})")
                } else {
                    r
                }
            })
    }
}

fn neutral_of(u: VendorUser) -> VendorUser {
    VendorUser { groups: None, ..u }
}

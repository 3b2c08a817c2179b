//! The tenant's role rules resolved against the vendor's roles: the desired role of a user, as
//! a vendor id, and the names the audit log shows.

use super::adapter::RoleCatalog;
use crate::config::{Problem, RoleRules};
use crate::connector::roles::{resolve_roles, ResolvedRoles, VendorRole};
use serde_json::Value;
use std::collections::HashMap;

pub struct RoleTable {
    resolved: ResolvedRoles,
    names: HashMap<String, String>,
    catalog: RoleCatalog,
}

impl RoleTable {
    pub fn build(
        tenant_index: usize,
        rules: &RoleRules,
        catalog: RoleCatalog,
    ) -> Result<RoleTable, Vec<Problem>> {
        let available: Vec<VendorRole> = catalog
            .roles
            .iter()
            .map(|r| VendorRole {
                id: r.id.clone(),
                names: r.names.clone(),
            })
            .collect();
        let resolved = resolve_roles(tenant_index, rules, &available)?;
        Ok(RoleTable {
            resolved,
            names: catalog
                .roles
                .iter()
                .map(|r| (r.id.clone(), r.display.clone()))
                .collect(),
            catalog,
        })
    }

    /// The vendor's name for a role id (the id itself when unknown).
    pub fn name(&self, id: &str) -> String {
        if id == super::adapter::NO_ROLE {
            return "(no role group)".into();
        }
        self.names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    pub fn is_protected(&self, id: &str) -> bool {
        self.catalog.protected.as_deref() == Some(id)
    }

    /// What the vendor says of a role: `Some(true)` for an administrator's ([`RoleInfo::admin`]
    /// (super::adapter::RoleInfo::admin)), `None` for an id its catalog does not hold.
    pub fn is_admin(&self, id: &str) -> Option<bool> {
        self.catalog
            .roles
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.admin)
    }

    pub fn role_ids(&self) -> impl Iterator<Item = &str> {
        self.catalog.roles.iter().map(|r| r.id.as_str())
    }

    /// The role id a user should have: the rules over its group names and SCIM `roles`; for a
    /// new user with no match and no default, the vendor's own default. `None`: leave it.
    pub fn desired(
        &self,
        rules: &RoleRules,
        doc: &Value,
        group_names: &[String],
        new_user: bool,
    ) -> Option<String> {
        let roles: Vec<&str> = doc
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("value").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let groups: Vec<&str> = group_names.iter().map(String::as_str).collect();
        let id = self
            .resolved
            .desired_role_id(rules, &groups, &roles)
            .map(str::to_string);
        match id {
            Some(id) => Some(id),
            None if new_user => self.catalog.fallback.clone(),
            None => None,
        }
        .filter(|id| !self.is_protected(id))
    }

    /// The role to set, if any: never onto or away from the protected role.
    pub fn change(&self, current: Option<&str>, desired: Option<String>) -> Option<String> {
        let desired = desired?;
        if current == Some(desired.as_str()) {
            return None;
        }
        if current.is_some_and(|c| self.is_protected(c)) {
            return None;
        }
        Some(desired)
    }
}

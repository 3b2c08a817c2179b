//! Role rules (CONTRACT §4): which vendor role a user gets, and the resolution of the role names
//! an operator wrote in the config to the vendor's own role ids.
//!
//! Names are the vendor's (Sisense role names, Tableau site roles, ThoughtSpot roles or groups,
//! Metabase `Administrators`), resolved at run time and never hard-coded. A name that does not
//! resolve to exactly one vendor role is a problem reported with its key path; it is never
//! replaced by a near match, because a wrong role is worse than no change.

use crate::config::{Problem, RoleRules};
use std::collections::HashMap;

/// The role of the first rule that matches, else `default`.
///
/// A rule with a `group` matches when the user is a member of that SCIM group (`displayName`,
/// case-insensitive). A rule without `group` matches when the user's SCIM `roles` values contain
/// its `role` (case-insensitive, as role names are resolved).
pub fn desired_role<'a>(
    rules: &'a RoleRules,
    user_groups: &[&str],
    user_roles: &[&str],
) -> Option<&'a str> {
    rules
        .rules
        .iter()
        .find(|rule| match &rule.group {
            Some(group) => user_groups.iter().any(|g| eq_ci(g, group)),
            None => user_roles.iter().any(|r| eq_ci(r, &rule.role)),
        })
        .map(|rule| rule.role.as_str())
        .or(rules.default.as_deref())
}

/// The role id to set, if the vendor must be updated: `Some(desired)` only when a role is desired
/// and it differs from the current one. No desired role (no rule matched and no default) leaves
/// the vendor's role alone.
pub fn role_change<'a>(current_id: Option<&str>, desired_id: Option<&'a str>) -> Option<&'a str> {
    match desired_id {
        Some(desired) if current_id != Some(desired) => Some(desired),
        _ => None,
    }
}

/// A vendor role (or group, where the vendor models roles as groups) as the vendor names it,
/// e.g. Sisense: internal name `contributor` and display name `Designer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRole {
    pub id: String,
    pub names: Vec<String>,
}

/// The role names of one tenant's rules, resolved to vendor role ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedRoles {
    /// Lower-cased role name as written in the config → vendor id.
    ids: HashMap<String, String>,
    default_id: Option<String>,
}

impl ResolvedRoles {
    /// The vendor id for a role name used in the rules (case-insensitive).
    pub fn role_id_for(&self, role_name: &str) -> Option<&str> {
        self.ids.get(&role_name.to_lowercase()).map(String::as_str)
    }

    /// The vendor id of `default`, if one is configured.
    pub fn default_id(&self) -> Option<&str> {
        self.default_id.as_deref()
    }

    /// [`desired_role`] as a vendor id.
    pub fn desired_role_id(
        &self,
        rules: &RoleRules,
        user_groups: &[&str],
        user_roles: &[&str],
    ) -> Option<&str> {
        desired_role(rules, user_groups, user_roles).and_then(|name| self.role_id_for(name))
    }
}

/// Resolves every role named in `rules` (and `default`) to a vendor role id, case-insensitively
/// by any of the vendor's names for it. Every problem is collected, each with its key path, e.g.
/// `tenants[2].roles.rules[1].role: the vendor has no role named "Desginer" (available: …)`.
pub fn resolve_roles(
    tenant_index: usize,
    rules: &RoleRules,
    available: &[VendorRole],
) -> Result<ResolvedRoles, Vec<Problem>> {
    let base = format!("tenants[{tenant_index}].roles");
    let mut resolved = ResolvedRoles::default();
    let mut problems = Vec::new();
    let named = rules
        .default
        .iter()
        .map(|d| (format!("{base}.default"), d, true))
        .chain(
            rules
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("{base}.rules[{i}].role"), &r.role, false)),
        );
    for (key_path, name, is_default) in named {
        match lookup(name, available) {
            Ok(id) => {
                resolved.ids.insert(name.to_lowercase(), id.to_owned());
                if is_default {
                    resolved.default_id = Some(id.to_owned());
                }
            }
            Err(message) => problems.push(Problem { key_path, message }),
        }
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// Groups named in rules that the bridge does not know (yet). The IdP may push such a group
/// later, so the caller decides whether this is a warning (at start) or an error (`config check
/// --online`); either way the rule simply never matches until the group exists.
/// Every role name the rules and the default use, once each (names compared without case).
pub fn rule_role_names(rules: &crate::config::RoleRules) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in rules
        .rules
        .iter()
        .map(|r| r.role.clone())
        .chain(rules.default.clone())
    {
        if !names.iter().any(|m| m.eq_ignore_ascii_case(&n)) {
            names.push(n);
        }
    }
    names
}

pub fn unknown_rule_groups(
    tenant_index: usize,
    rules: &RoleRules,
    known_groups: &[&str],
) -> Vec<Problem> {
    rules
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let group = rule.group.as_deref()?;
            if known_groups.iter().any(|g| eq_ci(g, group)) {
                return None;
            }
            Some(Problem {
                key_path: format!("tenants[{tenant_index}].roles.rules[{i}].group"),
                message: format!("no group named {group:?} is known to the bridge or the vendor"),
            })
        })
        .collect()
}

fn lookup<'a>(name: &str, available: &'a [VendorRole]) -> Result<&'a str, String> {
    let matches: Vec<&VendorRole> = available
        .iter()
        .filter(|r| r.names.iter().any(|n| eq_ci(n, name)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(&one.id),
        [] => Err(format!(
            "the vendor has no role named {name:?} (available: {})",
            listing(available)
        )),
        several => {
            let first = several[0];
            if several.iter().all(|r| r.id == first.id) {
                return Ok(&first.id);
            }
            Err(format!(
                "role name {name:?} matches {} vendor roles ({}); name one of them exactly",
                several.len(),
                several
                    .iter()
                    .map(|r| format!("{} [{}]", r.names.join(" / "), r.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

/// The vendor's roles for a problem message: every name of each role, at most 30 roles.
fn listing(available: &[VendorRole]) -> String {
    const MAX: usize = 30;
    if available.is_empty() {
        return "none".into();
    }
    let mut text = available
        .iter()
        .take(MAX)
        .map(|r| r.names.join(" / "))
        .collect::<Vec<_>>()
        .join(", ");
    if available.len() > MAX {
        text.push_str(&format!(", … {} more", available.len() - MAX));
    }
    text
}

fn eq_ci(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoleRule;

    fn rule(group: Option<&str>, role: &str) -> RoleRule {
        RoleRule {
            group: group.map(str::to_owned),
            role: role.to_owned(),
        }
    }

    fn sample() -> RoleRules {
        RoleRules {
            default: Some("Viewer".into()),
            rules: vec![
                rule(Some("BI Admins"), "Admin"),
                rule(Some("BI Designers"), "Designer"),
                rule(None, "Dataadmin"),
            ],
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = sample();
        assert_eq!(
            desired_role(&rules, &["BI Designers", "BI Admins"], &[]),
            Some("Admin")
        );
        assert_eq!(
            desired_role(&rules, &["BI Designers"], &["Dataadmin"]),
            Some("Designer")
        );
    }

    #[test]
    fn group_names_compare_case_insensitively() {
        let rules = sample();
        assert_eq!(desired_role(&rules, &["bi admins"], &[]), Some("Admin"));
        assert_eq!(
            desired_role(&rules, &["BI DESIGNERS"], &[]),
            Some("Designer")
        );
        let unicode = RoleRules {
            default: None,
            rules: vec![rule(Some("Ärzte"), "Viewer")],
        };
        assert_eq!(desired_role(&unicode, &["ärzte"], &[]), Some("Viewer"));
        assert_eq!(desired_role(&rules, &["BI Admins2"], &[]), Some("Viewer"));
    }

    #[test]
    fn rules_without_group_match_on_scim_roles() {
        let rules = sample();
        assert_eq!(
            desired_role(&rules, &["Sales"], &["dataadmin"]),
            Some("Dataadmin")
        );
        // A rule with a group does not match on roles.
        assert_eq!(desired_role(&rules, &[], &["Admin"]), Some("Viewer"));
    }

    #[test]
    fn default_then_none() {
        let rules = sample();
        assert_eq!(desired_role(&rules, &["Sales"], &[]), Some("Viewer"));
        let no_default = RoleRules {
            default: None,
            ..sample()
        };
        assert_eq!(desired_role(&no_default, &["Sales"], &["x"]), None);
        assert_eq!(
            desired_role(&RoleRules::default(), &["BI Admins"], &[]),
            None
        );
    }

    #[test]
    fn update_only_when_different() {
        assert_eq!(role_change(Some("r1"), Some("r1")), None);
        assert_eq!(role_change(Some("r1"), Some("r2")), Some("r2"));
        assert_eq!(role_change(None, Some("r2")), Some("r2"));
        assert_eq!(role_change(Some("r1"), None), None);
    }

    fn sisense_roles() -> Vec<VendorRole> {
        let role = |id: &str, names: &[&str]| VendorRole {
            id: id.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        vec![
            role("r-view", &["consumer", "Viewer"]),
            role("r-design", &["contributor", "Designer"]),
            role("r-admin", &["super", "Admin"]),
            role("r-dataadmin", &["dataAdmin", "Data Admin"]),
        ]
    }

    #[test]
    fn resolves_by_internal_and_display_names() {
        let rules = RoleRules {
            default: Some("consumer".into()),
            rules: vec![
                rule(Some("BI Admins"), "ADMIN"),
                rule(Some("BI Designers"), "contributor"),
                rule(None, "data admin"),
            ],
        };
        let resolved = resolve_roles(0, &rules, &sisense_roles()).unwrap();
        assert_eq!(resolved.default_id(), Some("r-view"));
        assert_eq!(resolved.role_id_for("admin"), Some("r-admin"));
        assert_eq!(resolved.role_id_for("Contributor"), Some("r-design"));
        assert_eq!(resolved.role_id_for("Data Admin"), Some("r-dataadmin"));
        assert_eq!(
            resolved.role_id_for("Designer"),
            None,
            "only names used in rules"
        );
        assert_eq!(
            resolved.desired_role_id(&rules, &["bi designers"], &[]),
            Some("r-design")
        );
        assert_eq!(
            resolved.desired_role_id(&rules, &["nobody"], &[]),
            Some("r-view")
        );
    }

    #[test]
    fn unknown_roles_are_problems_with_key_paths_never_guesses() {
        let rules = RoleRules {
            default: Some("Veiwer".into()),
            rules: vec![
                rule(Some("BI Admins"), "Admin"),
                rule(Some("BI Designers"), "Desginer"),
            ],
        };
        let problems = resolve_roles(2, &rules, &sisense_roles()).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].key_path, "tenants[2].roles.default");
        assert!(problems[0].message.contains("\"Veiwer\""));
        assert_eq!(problems[1].key_path, "tenants[2].roles.rules[1].role");
        assert!(problems[1].message.contains("no role named \"Desginer\""));
        assert!(
            problems[1].message.contains("Designer"),
            "lists what exists"
        );
        assert_eq!(
            problems[1].to_string(),
            format!("tenants[2].roles.rules[1].role: {}", problems[1].message)
        );
    }

    #[test]
    fn a_name_of_two_different_roles_is_ambiguous() {
        let mut roles = sisense_roles();
        roles.push(VendorRole {
            id: "r-other".into(),
            names: vec!["custom".into(), "viewer".into()],
        });
        let rules = RoleRules {
            default: Some("Viewer".into()),
            rules: vec![],
        };
        let problems = resolve_roles(0, &rules, &roles).unwrap_err();
        assert_eq!(problems[0].key_path, "tenants[0].roles.default");
        assert!(problems[0].message.contains("matches 2 vendor roles"));
    }

    #[test]
    fn unknown_rule_groups_are_named_by_key_path() {
        let problems = unknown_rule_groups(1, &sample(), &["bi admins"]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key_path, "tenants[1].roles.rules[1].group");
    }
}

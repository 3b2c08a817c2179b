//! Sisense wire types and paths, written from shared/reference (vendors-sisense-metabase.md part
//! B and vendor-specs/sisense), never from the simulator (ARCHITECTURE.md).

use crate::config::SisenseApiVersion;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A Sisense user as `GET/POST/PATCH /api/v1/users` return it (B.4). Only what the bridge reads;
/// every other field is ignored. `groups` is an array of 24-hex ids (objects with `expand`).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(rename = "userName", default)]
    pub user_name: Option<String>,
    #[serde(rename = "firstName", default)]
    pub first_name: Option<String>,
    #[serde(rename = "lastName", default)]
    pub last_name: Option<String>,
    #[serde(rename = "roleId", default)]
    pub role_id: Option<String>,
    /// Not in every version's answer; absent means active.
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "ids")]
    pub groups: Vec<String>,
    /// The last successful sign-in (B.4: `lastLogin`, a read-only string; absent for a user
    /// who never signed in). Kept raw: observe normalises it.
    #[serde(rename = "lastLogin", default, deserialize_with = "text_or_number")]
    pub last_login: Option<String>,
}

impl User {
    /// The login name: `userName`, which defaults to the email in Sisense.
    pub fn login(&self) -> Option<&str> {
        self.user_name.as_deref().or(self.email.as_deref())
    }
    pub fn is_active(&self) -> bool {
        self.active.unwrap_or(true)
    }
}

/// `groups` as ids whether the vendor sent ids or expanded objects.
fn ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default();
    Ok(v.into_iter()
        .filter_map(|g| match g {
            Value::String(s) => Some(s),
            Value::Object(o) => o.get("_id").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect())
}

/// A string, a number (kept as its digits) or null/absent: `lastLogin` is typed only "string",
/// and a field the bridge merely reports must never fail a user's page.
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// A Sisense group (B.5).
#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// A role from `GET /api/roles` (B.3): internal `name`; some versions add a UI label.
#[derive(Debug, Clone, Deserialize)]
pub struct Role {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
}

/// The UI names of the built-in roles (B.3 table). Names, not ids: ids differ per instance and
/// are always read from `/api/roles`.
pub const BUILTIN_UI_NAMES: [(&str, &str); 6] = [
    ("super", "Sys. Admin"),
    ("admin", "Admin"),
    ("dataAdmin", "Data Admin"),
    ("dataDesigner", "Data Designer"),
    ("contributor", "Designer"),
    ("consumer", "Viewer"),
];

impl Role {
    /// Whether the role administers the instance (B.3): Sys. Admin, Admin and Data Admin, by
    /// their internal names, which an instance never renames (the UI names may differ).
    pub fn is_admin(&self) -> bool {
        matches!(self.name.as_str(), "super" | "admin" | "dataAdmin")
    }

    /// Every name the operator may write for this role: the internal name, the vendor's label
    /// if it sends one, and the UI name of a built-in role.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        if let Some(d) = &self.display_name {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(d)) {
                names.push(d.clone());
            }
        }
        for (api, ui) in BUILTIN_UI_NAMES {
            if api == self.name && !names.iter().any(|n| n.eq_ignore_ascii_case(ui)) {
                names.push(ui.to_string());
            }
        }
        names
    }
}

/// The Sisense error envelope: `{"error":{"code","message","status","httpMessage"}}`.
pub fn error_code(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.get("code")?.as_i64()
}

/// 400 code 2004: "The user already exists." (same userName or email).
pub const USER_EXISTS: i64 = 2004;

/// The paths of one API generation. v1 (`/api/v1/...`) is the default; the legacy v0.9 paths
/// (`/api/...`) serve older instances. Group rename, roles and sign-in exist only once.
#[derive(Debug, Clone, Copy)]
pub struct Paths {
    pub version: SisenseApiVersion,
}

impl Paths {
    pub const LOGIN: &'static str = "api/v1/authentication/login";
    pub const ROLES: &'static str = "api/roles";

    pub fn users(&self) -> &'static str {
        match self.version {
            SisenseApiVersion::V1 => "api/v1/users",
            SisenseApiVersion::V0_9 => "api/users",
        }
    }
    pub fn user(&self, id: &str) -> String {
        format!("{}/{id}", self.users())
    }
    /// Groups are created, listed and deleted on the selected generation's paths; v1 has no
    /// group PATCH, so a rename always uses the legacy `PUT /api/groups/{id}` (B.5).
    pub fn groups(&self) -> &'static str {
        match self.version {
            SisenseApiVersion::V1 => "api/v1/groups",
            SisenseApiVersion::V0_9 => "api/groups",
        }
    }
    pub fn group(&self, id: &str) -> String {
        format!("{}/{id}", self.groups())
    }
    pub fn group_legacy(&self, id: &str) -> String {
        format!("api/groups/{id}")
    }
    /// The list filter that finds a group by name: v1 `name`, v0.9 `search` (a substring
    /// match; callers compare the names themselves).
    pub fn group_name_query(&self) -> &'static str {
        match self.version {
            SisenseApiVersion::V1 => "name",
            SisenseApiVersion::V0_9 => "search",
        }
    }
    /// The body of a group create: v1 one object, v0.9 an array of `regularGroup`.
    pub fn new_group(&self, name: &str) -> Value {
        match self.version {
            SisenseApiVersion::V1 => serde_json::json!({ "name": name }),
            SisenseApiVersion::V0_9 => serde_json::json!([{ "name": name }]),
        }
    }
    pub fn is_legacy(&self) -> bool {
        self.version == SisenseApiVersion::V0_9
    }
}

/// The group a create answered: v1 and v0.9's declared answer are one object; an array (v0.9
/// given several groups) is read by its first element.
pub fn created_group(body: &[u8]) -> Option<Group> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(mut a) if !a.is_empty() => serde_json::from_value(a.swap_remove(0)).ok(),
        v => serde_json::from_value(v).ok(),
    }
}

/// The fields of a Sisense user the bridge writes, by their REST names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFields {
    pub user_name: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl UserFields {
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("userName".into(), Value::String(self.user_name.clone()));
        m.insert("email".into(), Value::String(self.email.clone()));
        if let Some(f) = &self.first_name {
            m.insert("firstName".into(), Value::String(f.clone()));
        }
        if let Some(l) = &self.last_name {
            m.insert("lastName".into(), Value::String(l.clone()));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_reads_ids_or_expanded_groups_and_ignores_the_rest() {
        let u: User = serde_json::from_value(json!({
            "_id": "a", "userName": "x", "email": "x@y", "roleId": "r",
            "groups": ["g1", {"_id": "g2", "name": "G"}], "preferences": {}
        }))
        .unwrap();
        assert_eq!(u.groups, ["g1", "g2"]);
        assert!(u.is_active());
    }

    #[test]
    fn role_names_include_the_ui_label_of_built_ins() {
        let r = Role {
            id: "1".into(),
            name: "contributor".into(),
            display_name: None,
        };
        assert_eq!(r.names(), ["contributor", "Designer"]);
    }
}

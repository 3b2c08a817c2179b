//! Metabase's REST API on the wire: paths, the JSON forms the bridge reads, and the three error
//! body shapes. [A.n] is vendors-sisense-metabase.md part A.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Every path is under `/api/`, relative to the tenant's `base_url` [A.2].
pub fn path(rest: &str) -> String {
    format!("api/{rest}")
}

/// The users asked for per `GET /api/user` page [A.2]: Metabase lists every user at once
/// when no `limit` is sent, which on a large instance is one answer of hundreds of MB.
pub const PAGE_SIZE: usize = 1000;

/// `magic_group_type` of the group every user is in [A.4]: never written, never mirrored.
pub const ALL_USERS_TYPE: &str = "all-internal-users";
/// `magic_group_type` of the Administrators group: membership is `is_superuser` [A.4].
pub const ADMIN_TYPE: &str = "admin";
/// The magic groups' names, for builds that do not send `magic_group_type` [A.4].
pub const ALL_USERS_NAME: &str = "All Users";
pub const ADMIN_NAME: &str = "Administrators";

/// Whether a rule's role (or a SCIM group's name) names the Administrators group [A.4].
pub fn names_admin(name: &str) -> bool {
    name.eq_ignore_ascii_case(ADMIN_NAME)
}

/// Whether a name is "All Users", which holds everyone and can never be a role or a mirror.
pub fn names_all_users(name: &str) -> bool {
    name.eq_ignore_ascii_case(ALL_USERS_NAME)
}

/// The user fields the bridge reads [A.3]. `GET /api/user` adds `group_ids`; `GET /:id` and
/// the writes add `user_group_memberships` instead.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub is_superuser: Option<bool>,
    /// A map of string to string, or `null` [A.3].
    #[serde(default)]
    pub login_attributes: Option<Map<String, Value>>,
    #[serde(default)]
    pub group_ids: Option<Vec<u64>>,
    #[serde(default)]
    pub user_group_memberships: Option<Vec<GroupRef>>,
    /// ISO-8601, or null for a user who never signed in [A.3].
    #[serde(default)]
    pub last_login: Option<String>,
}

impl User {
    /// The user's group ids, from whichever field the endpoint sent.
    pub fn groups(&self) -> Option<Vec<u64>> {
        self.group_ids.clone().or_else(|| {
            self.user_group_memberships
                .as_ref()
                .map(|m| m.iter().map(|g| g.id).collect())
        })
    }

    /// `login_attributes` as strings: Metabase keeps strings; anything else is shown as its
    /// JSON text so that it reads as different from what the bridge would write.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        self.login_attributes
            .iter()
            .flatten()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect()
    }
}

/// `{"id": group_id}` in `user_group_memberships` [A.3].
#[derive(Debug, Clone, Deserialize)]
pub struct GroupRef {
    pub id: u64,
}

/// `GET /api/user`: `{data, total, limit, offset}` [A.2].
#[derive(Debug, Deserialize)]
pub struct UserPage {
    pub data: Vec<User>,
    #[serde(default)]
    pub total: Option<usize>,
}

/// A permission group [A.4].
#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub magic_group_type: Option<String>,
    /// `GET /api/permissions/group/:id` only: its active members.
    #[serde(default)]
    pub members: Option<Vec<Member>>,
}

impl Group {
    pub fn is_all_users(&self) -> bool {
        match &self.magic_group_type {
            Some(t) => t == ALL_USERS_TYPE,
            None => names_all_users(&self.name),
        }
    }
    pub fn is_admin(&self) -> bool {
        match &self.magic_group_type {
            Some(t) => t == ADMIN_TYPE,
            None => self.name.eq_ignore_ascii_case(ADMIN_NAME),
        }
    }
    /// A group Metabase made and keeps ("All Users", "Administrators", and newer builds'
    /// "Data Analysts" or tenant groups): never renamed, deleted or mirrored by the bridge.
    pub fn is_magic(&self) -> bool {
        self.magic_group_type.is_some() || self.is_all_users() || self.is_admin()
    }
}

/// A member as `GET /api/permissions/group/:id` and the membership POST list them [A.4, A.5].
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub user_id: u64,
    pub membership_id: u64,
}

/// One entry of `GET /api/permissions/membership` (keyed by user id) [A.5].
#[derive(Debug, Clone, Deserialize)]
pub struct Membership {
    pub membership_id: u64,
    pub group_id: u64,
    pub user_id: u64,
}

/// `POST /api/session` → `{"id": "<uuid>"}` [A.1].
#[derive(Debug, Deserialize)]
pub struct SessionAnswer {
    pub id: String,
}

/// A Metabase error answer in one of its three shapes [A.2]: plain text (`Not found.`),
/// `{"errors": {field: message}}` (with `specific-errors` after a schema check), or
/// `{"message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbError {
    /// The field a `{"errors": ...}` body names, when it names one.
    pub field: Option<String>,
    /// Metabase's message, as it wrote it.
    pub message: String,
}

/// The longest message carried into SCIM errors and logs.
const MESSAGE_MAX: usize = 300;

impl MbError {
    /// Reads any of the three shapes; `None` for an empty body. An HTML page (a proxy's) is not
    /// Metabase's message and is left out.
    pub fn parse(body: &[u8]) -> Option<MbError> {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() || text.starts_with('<') {
            return None;
        }
        let clip = |s: &str| crate::connector::text::clip(s, MESSAGE_MAX);
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Some(MbError {
                field: None,
                message: clip(text),
            });
        };
        if let Some(errors) = v.get("errors").and_then(Value::as_object) {
            let mut parts = errors.iter().map(|(field, msg)| {
                let msg = match msg {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (field.clone(), msg)
            });
            if let Some((field, first)) = parts.next() {
                let mut message = if field == "_error" {
                    first
                } else {
                    format!("{field}: {first}")
                };
                for (f, m) in parts {
                    message.push_str(&format!("; {f}: {m}"));
                }
                return Some(MbError {
                    field: (field != "_error").then_some(field),
                    message: clip(&message),
                });
            }
        }
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            return Some(MbError {
                field: None,
                message: clip(m),
            });
        }
        match v {
            Value::String(s) => Some(MbError {
                field: None,
                message: clip(&s),
            }),
            _ => None,
        }
    }
}

/// Metabase's fixed messages the bridge tells apart [A.2–A.5].
pub mod message {
    /// A duplicate group name (plain text, 400).
    pub const GROUP_EXISTS: &str = "A group with that name already exists.";
    /// The last active admin would lose admin (plain text, 400).
    pub const LAST_ADMIN: &str = "You cannot remove the last member of the 'Admin' group!";
    /// Reactivating a user who is active (`{"message"}`, 400).
    pub const ALREADY_ACTIVE: &str = "Not able to reactivate an active user";
}

/// Whether a 5xx body is the unique `(user_id, group_id)` constraint of a membership added
/// twice: the database's answer, not a failing Metabase [A.5, M15].
pub fn is_duplicate_membership(status: u16, body: &[u8]) -> bool {
    if status < 500 {
        return false;
    }
    let text = String::from_utf8_lossy(body).to_lowercase();
    (text.contains("duplicate") || text.contains("unique"))
        && (text.contains("permissions_group_membership") || text.contains("user_id_group_id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_error_shapes() {
        assert_eq!(MbError::parse(b"Not found.").unwrap().message, "Not found.");
        let e = MbError::parse(br#"{"errors":{"email":"Email address already in use."}}"#).unwrap();
        assert_eq!(e.field.as_deref(), Some("email"));
        assert_eq!(e.message, "email: Email address already in use.");
        let e = MbError::parse(
            br#"{"errors":{"name":"value must be a non-blank string."},"specific-errors":{"name":["x"]}}"#,
        )
        .unwrap();
        assert_eq!(e.message, "name: value must be a non-blank string.");
        let e = MbError::parse(br#"{"errors":{"_error":"Your account is disabled."}}"#).unwrap();
        assert_eq!(
            (e.field, e.message.as_str()),
            (None, "Your account is disabled.")
        );
        assert_eq!(
            MbError::parse(br#"{"message":"Not able to reactivate an active user"}"#)
                .unwrap()
                .message,
            message::ALREADY_ACTIVE
        );
        assert_eq!(MbError::parse(b"  "), None);
        assert_eq!(MbError::parse(b"<html>502</html>"), None);
        assert!(MbError::parse(&[b'x'; 2000]).unwrap().message.len() < 400);
    }

    #[test]
    fn tells_a_duplicate_membership_from_a_failure() {
        let dup = br#"{"message":"ERROR: duplicate key value violates unique constraint \"unique_permissions_group_membership_user_id_group_id\""}"#;
        assert!(is_duplicate_membership(500, dup));
        assert!(!is_duplicate_membership(500, b"Internal server error."));
        assert!(!is_duplicate_membership(400, dup));
    }

    #[test]
    fn users_read_groups_and_attributes_from_either_form() {
        let listed: User = serde_json::from_str(
            r#"{"id":3,"email":"a@x","group_ids":[1,2],"login_attributes":{"region":"EMEA","n":7}}"#,
        )
        .unwrap();
        assert_eq!(listed.groups(), Some(vec![1, 2]));
        assert_eq!(listed.attributes()["region"], "EMEA");
        assert_eq!(listed.attributes()["n"], "7");
        let one: User = serde_json::from_str(
            r#"{"id":3,"email":"a@x","user_group_memberships":[{"id":1}],"login_attributes":null}"#,
        )
        .unwrap();
        assert_eq!(one.groups(), Some(vec![1]));
        assert!(one.attributes().is_empty());
    }
}

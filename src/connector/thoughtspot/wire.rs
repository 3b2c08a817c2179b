//! ThoughtSpot REST API v2.0 on the wire: paths, the JSON forms the bridge reads, and the two
//! error bodies. [B.n] is vendors-tableau-thoughtspot.md part B.

use serde::Deserialize;
use serde_json::Value;

/// Every v2.0 path is under this one, relative to the tenant's `base_url` [B.1].
pub fn path(rest: &str) -> String {
    format!("api/rest/2.0/{rest}")
}

/// A path segment holding an identifier (a GUID or a name, which may hold `@` or spaces) [B.1].
pub use crate::connector::text::path_segment as segment;

/// Every Org's built-in group of all its users [B.3]; the bridge never touches it.
pub const ALL_GROUP: &str = "All";
/// The built-in administrators' group; the bridge never touches it either (it may be signed in
/// as one of its members).
pub const ADMIN_GROUP: &str = "Administrator";

/// The largest page the bridge asks for. ThoughtSpot warns against `record_size: -1` (slow
/// answers, out-of-memory on big clusters) [B.4]; a page this size is one call per 1,000 users.
pub const PAGE_SIZE: usize = 1000;

/// ThoughtSpot's error codes the bridge tells apart [B.7].
pub mod code {
    /// Bad parameters: also what an unknown or duplicate object gets (the spec lists no 404 or
    /// 409 for users, groups, Orgs or roles).
    pub const BAD_PARAMETERS: i64 = 10002;
    /// Not logged in, or bad credentials.
    pub const NOT_LOGGED_IN: i64 = 10097;
    /// A missing privilege, trusted authentication off, an inactive user.
    pub const FORBIDDEN: i64 = 10023;
    /// A duplicate custom object id, answered with HTTP 500 (seen live).
    pub const DUPLICATE_OBJECT_ID: i64 = 14009;
}

/// Whether `name` is one of the groups the bridge never touches.
pub fn is_builtin_group(name: &str) -> bool {
    name.eq_ignore_ascii_case(ALL_GROUP) || name.eq_ignore_ascii_case(ADMIN_GROUP)
}

/// `{id, name}` as users, groups and roles refer to each other.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Ref {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// An Org as users name it: its id is an integer in answers [B.7].
#[derive(Debug, Clone, Deserialize)]
pub struct OrgRef {
    pub id: i64,
    #[serde(default)]
    pub name: String,
}

/// The fields of a User object the bridge reads [B.4].
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    /// Required by the spec; a user without one is skipped rather than failing its page.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub account_status: Option<String>,
    /// `null` for some users [B.4].
    #[serde(default)]
    pub user_groups: Option<Vec<Ref>>,
    #[serde(default)]
    pub orgs: Option<Vec<OrgRef>>,
    #[serde(default)]
    pub current_org: Option<OrgRef>,
}

/// The fields of a group the bridge reads [B.5].
#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub roles: Option<Vec<Ref>>,
    #[serde(default)]
    pub users: Option<Vec<Ref>>,
    /// Privileges the group grants its members [B.5].
    #[serde(default)]
    pub privileges: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Org {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Role {
    pub id: String,
    pub name: String,
    /// Privileges the role grants [B.5].
    #[serde(default)]
    pub privileges: Option<Vec<String>>,
}

/// Whether privileges make their holder an administrator [B.5]: ADMINISTRATION (a group's
/// "can administer ThoughtSpot"), or with RBAC APPLICATION_ADMINISTRATION or
/// ORG_ADMINISTRATION, which roles carry instead (a role cannot carry ADMINISTRATION).
pub fn grants_admin(privileges: Option<&[String]>) -> bool {
    privileges.unwrap_or_default().iter().any(|p| {
        matches!(
            p.as_str(),
            "ADMINISTRATION" | "APPLICATION_ADMINISTRATION" | "ORG_ADMINISTRATION"
        )
    })
}

/// A formula variable and, when asked with `METADATA_AND_VALUES`, its values.
#[derive(Debug, Clone, Deserialize)]
pub struct Variable {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub variable_type: Option<String>,
    #[serde(default)]
    pub values: Option<Vec<VariableValue>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VariableValue {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_list: Option<Vec<String>>,
    #[serde(default)]
    pub org_identifier: Option<String>,
    #[serde(default)]
    pub principal_type: Option<String>,
    #[serde(default)]
    pub principal_identifier: Option<String>,
    #[serde(default)]
    pub model_identifier: Option<String>,
}

impl VariableValue {
    /// The single value (a list holds one for the variables the bridge writes).
    pub fn text(&self) -> Option<String> {
        self.value
            .clone()
            .or_else(|| self.value_list.as_ref().and_then(|l| l.first().cloned()))
            .filter(|v| !v.is_empty())
    }
}

/// `auth/token/full`'s answer [B.2].
#[derive(Debug, Clone, Deserialize)]
pub struct TokenAnswer {
    pub token: String,
    #[serde(default)]
    pub creation_time_in_millis: Option<i64>,
    #[serde(default)]
    pub expiration_time_in_millis: Option<i64>,
    #[serde(default)]
    pub scope: Option<Scope>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub org_id: Option<i64>,
}

/// A ThoughtSpot error body, in either form [B.7]: the nested one seen live,
/// `{"error":{"message":{"debug":{"code":…,"debug":"[\"…\"]"}}}}` (the inner `debug` often a
/// JSON array in a string), or the spec examples' flat
/// `{"error":{"message":{"code":…,"debug":"…"}}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsError {
    pub code: Option<i64>,
    pub message: String,
}

impl TsError {
    pub fn parse(body: &[u8]) -> Option<TsError> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let message = v.get("error")?.get("message")?;
        if let Some(s) = message.as_str() {
            return Some(TsError {
                code: None,
                message: clip(s),
            });
        }
        // Nested: the details sit one level down, under `debug`.
        let details = match message.get("debug") {
            Some(d) if d.is_object() => d,
            _ => message,
        };
        let code = details.get("code").and_then(|c| {
            c.as_i64()
                .or_else(|| c.as_str().and_then(|s| s.trim().parse().ok()))
        });
        let text = match details.get("debug") {
            Some(Value::String(s)) => readable(s),
            Some(other) if !other.is_null() => other.to_string(),
            _ => String::new(),
        };
        Some(TsError {
            code,
            message: clip(&text),
        })
    }

    /// "code 10002: …" for messages (never the incident ids).
    pub fn describe(&self) -> String {
        match (self.code, self.message.is_empty()) {
            (Some(c), false) => format!("ThoughtSpot code {c}: {}", self.message),
            (Some(c), true) => format!("ThoughtSpot code {c}"),
            (None, false) => self.message.clone(),
            (None, true) => "no detail".into(),
        }
    }
}

/// The inner `debug` text: a JSON array of strings held in a string is unwrapped and joined;
/// of "Error Code: X Incident Id: Y\nError Message: Z" only Z is kept.
fn readable(s: &str) -> String {
    let joined = match serde_json::from_str::<Vec<String>>(s) {
        Ok(items) => items.join("; "),
        Err(_) => s.to_string(),
    };
    match joined.split_once("Error Message:") {
        Some((_, m)) => m.trim().to_string(),
        None => joined.trim().to_string(),
    }
}

/// Error texts go into SCIM answers and logs: kept short.
fn clip(s: &str) -> String {
    crate::connector::text::clip(s.trim(), 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_forms_parse() {
        let nested = br#"{"error":{"message":{"debug":{"code":10002,"incident_id_guid":"x","trace_id_guid":"tracing-disabled","debug":"[\"Error Code: INVALID_PARAMETER Incident Id: x\\nError Message: User with name ada already exists.\"]"}}}}"#;
        let e = TsError::parse(nested).unwrap();
        assert_eq!(e.code, Some(10002));
        assert_eq!(e.message, "User with name ada already exists.");
        assert!(!e.describe().contains("Incident"));
        let flat = br#"{"error":{"message":{"code":10097,"incident_id_guid":"x","trace_id_guid":"y","debug":"Either secret_key or password must be provided."}}}"#;
        let e = TsError::parse(flat).unwrap();
        assert_eq!(e.code, Some(10097));
        assert_eq!(e.message, "Either secret_key or password must be provided.");
        let plain = br#"{"error":{"message":"Too many requests"}}"#;
        assert_eq!(TsError::parse(plain).unwrap().message, "Too many requests");
        assert_eq!(TsError::parse(b"<html>"), None);
        assert_eq!(TsError::parse(br#"{"id":"x"}"#), None);
        let long = format!(
            r#"{{"error":{{"message":{{"code":1,"debug":"{}"}}}}}}"#,
            "é".repeat(400)
        );
        assert!(TsError::parse(long.as_bytes())
            .unwrap()
            .message
            .ends_with('…'));
    }

    #[test]
    fn identifiers_are_encoded_as_path_segments() {
        assert_eq!(segment("ada@x.com"), "ada%40x.com");
        assert_eq!(segment("BI Admins/x"), "BI%20Admins%2Fx");
        assert_eq!(
            path(&format!("users/{}/update", segment("a b"))),
            "api/rest/2.0/users/a%20b/update"
        );
    }
}

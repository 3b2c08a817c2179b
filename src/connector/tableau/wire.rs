//! Tableau REST API wire types and paths, written from shared/reference
//! (vendors-tableau-thoughtspot.md part A, cited [A.n]) and vendor-specs/tableau, never from
//! the simulator (ARCHITECTURE.md).
//!
//! The bridge speaks Tableau's JSON form: elements become keys, attributes become keys inside
//! them **with string values** (pagination included), a collection holds its repeated children
//! as an array — or as one object, or `{}` when empty [A.1].

use crate::connector::text::{clip, path_segment};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Error codes the adapter acts on [A.4, A.5, TAB-ERR].
pub mod code {
    /// Add User: the user is already on the site.
    pub const USER_EXISTS: &str = "409000";
    /// Remove User: the user owns content; Tableau leaves it `Unlicensed`.
    pub const OWNS_CONTENT: &str = "409003";
    /// Create or rename group: the name is taken (compared case-insensitively).
    pub const GROUP_NAME_TAKEN: &str = "409009";
    /// Add User to Group: already a member.
    pub const ALREADY_MEMBER: &str = "409011";
    /// Update (or Add) User: no free seat for the site role.
    pub const NO_SEAT: &str = "409014";
    /// A page number past the last page.
    pub const PAGE_PAST_END: &str = "400006";
    /// A user id that is not on the site.
    pub const USER_NOT_FOUND: &str = "404002";
    /// A group id that is not on the site.
    pub const GROUP_NOT_FOUND: &str = "404012";
    /// A user cannot change their own licensing role.
    pub const OWN_ROLE: &str = "403009";
}

/// The site role of a user without a licence: Tableau's deactivation [A.4].
pub const UNLICENSED: &str = "Unlicensed";
/// Held only by server administrators; never assigned or taken away by the bridge (Add User
/// refuses it, and the bridge signs in as such a user on Server) [A.3].
pub const SERVER_ADMINISTRATOR: &str = "ServerAdministrator";
/// Every site's built-in group: it cannot be deleted and the bridge never touches it [A.5].
pub const ALL_USERS: &str = "All Users";

/// The site roles the bridge may assign: those Add User and Update User accept [A.3], with the
/// names the Tableau UI shows. Tableau has no endpoint that lists site roles: the set is part
/// of its API (the `siteRoleType` enumeration), like a path.
pub const SITE_ROLES: &[(&str, &[&str])] = &[
    ("Creator", &[]),
    ("Explorer", &[]),
    ("ExplorerCanPublish", &["Explorer (can publish)"]),
    ("SiteAdministratorCreator", &["Site Administrator Creator"]),
    (
        "SiteAdministratorExplorer",
        &["Site Administrator Explorer"],
    ),
    ("Viewer", &[]),
    (UNLICENSED, &[]),
    (SERVER_ADMINISTRATOR, &["Server Administrator"]),
];

/// Whether a site role administers the site or the server [A.3]: the two site administrator
/// roles and the server administrator.
pub fn is_admin_role(id: &str) -> bool {
    matches!(
        id,
        "SiteAdministratorCreator" | "SiteAdministratorExplorer" | SERVER_ADMINISTRATOR
    )
}

/// `{"credentials": {"site": {"id"}, "user": {"id"}, "token"}}` [A.2]. No `Debug`: it holds
/// the session token.
#[derive(Deserialize)]
pub struct SignInAnswer {
    pub credentials: Credentials,
}

#[derive(Deserialize)]
pub struct Credentials {
    pub token: String,
    pub site: IdOnly,
    pub user: IdOnly,
}

#[derive(Debug, Deserialize)]
pub struct IdOnly {
    pub id: String,
}

/// A user as Get Users, Query User, Add User and Update User show it (Update User's answer has
/// no `id` [A.4]).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "siteRole", default)]
    pub site_role: Option<String>,
    #[serde(rename = "fullName", default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(rename = "lastLogin", default)]
    pub last_login: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
}

/// `{"user": {...}}`.
#[derive(Debug, Deserialize)]
pub struct OneUser {
    pub user: User,
}

/// `{"group": {...}}`.
#[derive(Debug, Deserialize)]
pub struct OneGroup {
    pub group: Group,
}

/// One page of a list: `{"pagination": {...}, "users": {"user": [...]}}` [A.6].
#[derive(Debug, Deserialize)]
pub struct UserPage {
    pub pagination: Pagination,
    #[serde(default)]
    pub users: UserCollection,
}

#[derive(Debug, Deserialize)]
pub struct GroupPage {
    pub pagination: Pagination,
    #[serde(default)]
    pub groups: GroupCollection,
}

/// `{"user": [...]}`, `{"user": {...}}` or `{}`.
#[derive(Debug, Default, Deserialize)]
pub struct UserCollection {
    #[serde(default, deserialize_with = "one_or_many")]
    pub user: Vec<User>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupCollection {
    #[serde(default, deserialize_with = "one_or_many")]
    pub group: Vec<Group>,
}

/// Pagination attributes are strings in JSON; some clients send numbers: both are read.
#[derive(Debug, Deserialize)]
pub struct Pagination {
    #[serde(rename = "totalAvailable", deserialize_with = "number")]
    pub total_available: usize,
}

fn number<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.trim().parse().map_err(serde::de::Error::custom),
        Value::Number(n) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| serde::de::Error::custom("not a count")),
        _ => Err(serde::de::Error::custom("not a count")),
    }
}

fn one_or_many<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(d)? {
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(t)) => vec![t],
        None => Vec::new(),
    })
}

/// A Tableau error: `{"error": {"code", "summary", "detail"}}` in JSON, or
/// `<error code="…"><summary>…</summary><detail>…</detail></error>` in XML, which a proxy or
/// an old server may answer all the same [A.7]. `code` is a string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableauError {
    pub code: String,
    pub summary: String,
    pub detail: String,
}

impl TableauError {
    /// Reads either form; `None` when the body is neither (a 5xx from a proxy, say).
    pub fn parse(body: &[u8]) -> Option<TableauError> {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let e = v.get("error")?;
            let s = |k: &str| match e.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            return Some(TableauError {
                code: s("code"),
                summary: s("summary"),
                detail: s("detail"),
            });
        }
        let text = std::str::from_utf8(body).ok()?;
        let start = text.find("<error")?;
        let el = &text[start..];
        let code = el
            .split_once("code=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(c, _)| c.to_string())?;
        let inner = |tag: &str| {
            el.split_once(&format!("<{tag}>"))
                .and_then(|(_, r)| r.split_once(&format!("</{tag}>")))
                .map(|(v, _)| unescape(v.trim()))
                .unwrap_or_default()
        };
        Some(TableauError {
            code,
            summary: inner("summary"),
            detail: inner("detail"),
        })
    }

    /// `409014 Licensing conflict: …` — Tableau's code and summary, for the IdP and the audit.
    pub fn describe(&self) -> String {
        let mut out = format!("Tableau {}", self.code);
        if !self.summary.is_empty() {
            out.push(' ');
            out.push_str(&self.summary);
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&clip(&self.detail, 300));
        }
        out
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The paths of one site, relative to the base URL [A.1]: `api/{version}/sites/{site-luid}/…`.
#[derive(Debug, Clone)]
pub struct SitePaths {
    pub version: String,
    pub site: String,
}

impl SitePaths {
    pub fn sign_in(version: &str) -> String {
        format!("api/{version}/auth/signin")
    }
    pub fn users(&self) -> String {
        format!("api/{}/sites/{}/users", self.version, self.site)
    }
    pub fn user(&self, id: &str) -> String {
        format!("{}/{}", self.users(), path_segment(id))
    }
    pub fn groups(&self) -> String {
        format!("api/{}/sites/{}/groups", self.version, self.site)
    }
    pub fn group(&self, id: &str) -> String {
        format!("{}/{}", self.groups(), path_segment(id))
    }
    pub fn group_users(&self, id: &str) -> String {
        format!("{}/users", self.group(id))
    }
    pub fn group_user(&self, group: &str, user: &str) -> String {
        format!("{}/{}", self.group_users(group), path_segment(user))
    }
}

/// Whether a value can go into a `filter=field:op:value` expression: Tableau splits filters on
/// `,` and the query on `&` [A.6].
pub fn filterable(value: &str) -> bool {
    !value.is_empty() && !value.contains([',', '&'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_both_forms() {
        let json =
            br#"{"error":{"summary":"Licensing conflict","detail":"No seat","code":"409014"}}"#;
        let e = TableauError::parse(json).unwrap();
        assert_eq!(e.code, "409014");
        assert_eq!(e.describe(), "Tableau 409014 Licensing conflict: No seat");
        let xml = br#"<?xml version="1.0"?><tsResponse xmlns="http://tableau.com/api"><error code="401001"><summary>Signin Error</summary><detail>Error signing in &amp; out</detail></error></tsResponse>"#;
        let e = TableauError::parse(xml).unwrap();
        assert_eq!(
            (e.code.as_str(), e.summary.as_str(), e.detail.as_str()),
            ("401001", "Signin Error", "Error signing in & out")
        );
        assert!(TableauError::parse(b"<html>Bad gateway</html>").is_none());
    }

    #[test]
    fn collections_and_string_counts() {
        let p: UserPage = serde_json::from_str(
            r#"{"pagination":{"pageNumber":"1","pageSize":"100","totalAvailable":"2"},"users":{"user":{"id":"a","name":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(p.pagination.total_available, 2);
        assert_eq!(p.users.user.len(), 1);
        let p: GroupPage =
            serde_json::from_str(r#"{"pagination":{"totalAvailable":0},"groups":{}}"#).unwrap();
        assert!(p.groups.group.is_empty());
        assert!(serde_json::from_str::<UserPage>(
            r#"{"pagination":{"totalAvailable":"many"},"users":{}}"#
        )
        .is_err());
    }
}

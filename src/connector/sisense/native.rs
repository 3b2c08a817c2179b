//! `mode = "scim"`: users, groups and membership go to Sisense's own SCIM 2.0 endpoint
//! (`/api/scim/v2`, Enterprise plans, a bearer token generated in Admin > Security); the role —
//! which Sisense's SCIM never sets, group push there maps to groups — still goes over REST.
//!
//! Sources: the 2026 vendor guide in shared/reference/use-cases (endpoint, token, the supported
//! operations: Users GET/POST/PUT/PATCH/DELETE, Groups GET/POST/PATCH/DELETE — no group GET by
//! id, no group PUT). No Sisense SCIM document gives the resource shapes, so this client sends
//! only RFC 7643 core attributes and reads only `id`, `userName`, `emails`, `name`, `active`,
//! `displayName`. UNVERIFIED and relied on: a SCIM id is the Sisense `_id` REST uses (Sisense
//! keeps one user collection; the role PATCH and the REST sync address users by that id). If a
//! role PATCH finds no REST user under a SCIM id the operation fails with a 503 that says so.

use super::wire::{self, UserFields};
use crate::connector::http::{
    Authenticator, CreateOutcome, VendorClient, VendorError, VendorRequest, VendorResponse,
};
use crate::engine::adapter::{AdapterError, AdapterResult, Refusal};
use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::{json, Map, Value};
use url::Url;

const USERS: &str = "api/scim/v2/Users";
const GROUPS: &str = "api/scim/v2/Groups";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The static SCIM bearer token (no sign-in exchange; a 401 means the token was revoked).
pub struct StaticBearer(pub crate::config::Secret);

#[async_trait]
impl Authenticator for StaticBearer {
    async fn sign_in(
        &self,
        _http: &reqwest::Client,
        _base: &Url,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, VendorError> {
        let v = HeaderValue::from_str(&format!("Bearer {}", self.0.expose())).map_err(|_| {
            VendorError::Auth {
                reason: "the SCIM token contains characters a header cannot carry".into(),
            }
        })?;
        Ok(vec![(AUTHORIZATION, v)])
    }
}

/// The Sisense SCIM endpoint of one tenant.
pub struct NativeScim {
    pub client: VendorClient,
}

fn filter_eq(attr: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{attr} eq \"{escaped}\"")
}

/// A Sisense SCIM user read back as the REST user shape the connector keeps state from. Role
/// and groups are not known from SCIM (`role_id: None`).
fn user_of(v: &Value) -> Option<wire::User> {
    let id = v.get("id")?.as_str()?.to_string();
    let emails = v.get("emails").and_then(Value::as_array);
    let email = emails
        .and_then(|e| {
            e.iter()
                .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
                .or_else(|| e.first())
        })
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = |k: &str| {
        v.get("name")
            .and_then(|n| n.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Some(wire::User {
        id,
        email,
        user_name: v
            .get("userName")
            .and_then(Value::as_str)
            .map(str::to_string),
        first_name: name("givenName"),
        last_name: name("familyName"),
        role_id: None,
        active: v.get("active").and_then(Value::as_bool),
        groups: Vec::new(),
        // The SCIM user carries no sign-in time; observe reads users over REST.
        last_login: None,
    })
}

fn group_of(v: &Value) -> Option<wire::Group> {
    Some(wire::Group {
        id: v.get("id")?.as_str()?.to_string(),
        name: v
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

fn unreadable(what: &str) -> AdapterError {
    AdapterError::transient(format!("unreadable Sisense SCIM {what}"))
}

/// A SCIM answer the connector does not accept: bad data (400) and a duplicate (409) are
/// refusals for good, with Sisense's detail; a missing object is gone; anything else is the
/// vendor's trouble, retried.
pub fn refused(r: &VendorResponse, what: &str) -> AdapterError {
    let detail = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    match r.status {
        400 | 422 => AdapterError::Refused {
            vendor: "Sisense",
            reason: format!("its SCIM endpoint refused the {what}: {detail}"),
            kind: Refusal::Invalid,
        },
        409 => AdapterError::Refused {
            vendor: "Sisense",
            reason: format!("it already has this {what}: {detail}"),
            kind: Refusal::Conflict,
        },
        404 => AdapterError::Gone,
        _ => AdapterError::from(r.rejected()),
    }
}

/// The SCIM body of a user: the fields the REST mode writes, plus activation.
pub fn user_body(fields: &UserFields, active: bool) -> Value {
    let mut doc = Map::new();
    doc.insert("schemas".into(), json!([USER_SCHEMA]));
    doc.insert("userName".into(), Value::String(fields.user_name.clone()));
    let mut name = Map::new();
    if let Some(f) = &fields.first_name {
        name.insert("givenName".into(), Value::String(f.clone()));
    }
    if let Some(l) = &fields.last_name {
        name.insert("familyName".into(), Value::String(l.clone()));
    }
    if !name.is_empty() {
        doc.insert("name".into(), Value::Object(name));
    }
    doc.insert(
        "emails".into(),
        json!([{ "value": fields.email, "type": "work", "primary": true }]),
    );
    doc.insert("active".into(), Value::Bool(active));
    Value::Object(doc)
}

/// PATCH operations for a REST-shaped partial user (`userName`, `email`, `firstName`,
/// `lastName` — `null` when removed — and `active`); other keys are not SCIM's business.
pub fn user_ops(body: &Map<String, Value>) -> Vec<Value> {
    let mut ops = Vec::new();
    for (k, v) in body {
        let path = match k.as_str() {
            "userName" => "userName",
            "firstName" => "name.givenName",
            "lastName" => "name.familyName",
            "active" => "active",
            "email" => {
                ops.push(json!({
                    "op": "replace",
                    "path": "emails",
                    "value": [{ "value": v, "type": "work", "primary": true }],
                }));
                continue;
            }
            _ => continue,
        };
        if v.is_null() {
            ops.push(json!({ "op": "remove", "path": path }));
        } else {
            ops.push(json!({ "op": "replace", "path": path, "value": v }));
        }
    }
    ops
}

impl NativeScim {
    async fn find(
        &self,
        path: &str,
        attr: &str,
        value: &str,
    ) -> Result<Option<Value>, VendorError> {
        let resp = self
            .client
            .send(
                VendorRequest::get(path)
                    .query("filter", filter_eq(attr, value))
                    .query("count", "2"),
            )
            .await?;
        if !resp.is_success() {
            return Err(resp.rejected());
        }
        let list: Value = resp.json()?;
        Ok(list
            .get("Resources")
            .and_then(Value::as_array)
            .and_then(|a| a.first().cloned()))
    }

    /// The Sisense user holding `userName`, then `email` (Sisense refuses either as duplicate).
    pub async fn find_user(&self, f: &UserFields) -> Result<Option<wire::User>, VendorError> {
        if let Some(u) = self.find(USERS, "userName", &f.user_name).await? {
            return Ok(user_of(&u));
        }
        Ok(self
            .find(USERS, "emails.value", &f.email)
            .await?
            .as_ref()
            .and_then(user_of))
    }

    pub async fn find_group(&self, name: &str) -> Result<Option<wire::Group>, VendorError> {
        Ok(self
            .find(GROUPS, "displayName", name)
            .await?
            .as_ref()
            .and_then(group_of))
    }

    /// `POST /Users`, never blindly retried: after an ambiguous failure the user is looked up.
    /// `Ok(Err(existing))` when Sisense already has the user (409, or found after the
    /// ambiguity): the caller decides whether it may adopt it.
    pub async fn create_user(
        &self,
        fields: &UserFields,
        active: bool,
    ) -> AdapterResult<Result<wire::User, Option<wire::User>>> {
        let req = VendorRequest::post(USERS).json(user_body(fields, active));
        match self
            .client
            .create_or_find(req, || self.find_user(fields))
            .await?
        {
            CreateOutcome::Found(u) => Ok(Err(Some(u))),
            CreateOutcome::Sent(r) if r.is_success() => {
                let v: Value = r.json()?;
                Ok(Ok(user_of(&v).ok_or_else(|| unreadable("user"))?))
            }
            CreateOutcome::Sent(r) if r.status == 409 => Ok(Err(self.find_user(fields).await?)),
            CreateOutcome::Sent(r) => Err(refused(&r, "user")),
        }
    }

    /// Whether Sisense's SCIM endpoint has a user under `vid` (`GET /Users/{id}`).
    pub async fn has_user(&self, vid: &str) -> AdapterResult<bool> {
        let r = self
            .client
            .send(VendorRequest::get(format!("{USERS}/{vid}")))
            .await?;
        match r.status {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => Err(refused(&r, "user")),
        }
    }

    /// `PATCH /Users/{id}` with replace/remove operations (safe to repeat: fixed values).
    pub async fn patch_user(&self, vid: &str, ops: Vec<Value>) -> AdapterResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let body = json!({ "schemas": [PATCH_OP], "Operations": ops });
        let r = self
            .client
            .send(
                VendorRequest::patch(format!("{USERS}/{vid}"))
                    .json(body)
                    .idempotent(),
            )
            .await?;
        if r.is_success() {
            return Ok(());
        }
        Err(refused(&r, "user"))
    }

    pub async fn delete_user(&self, vid: &str) -> AdapterResult<()> {
        let r = self
            .client
            .send(VendorRequest::delete(format!("{USERS}/{vid}")))
            .await?;
        if r.is_success() || r.status == 404 {
            return Ok(());
        }
        Err(refused(&r, "user"))
    }

    /// `POST /Groups`; `Ok(Err(existing))` when the name is taken (the caller may adopt).
    pub async fn create_group(
        &self,
        name: &str,
    ) -> AdapterResult<Result<wire::Group, Option<wire::Group>>> {
        let req = VendorRequest::post(GROUPS)
            .json(json!({ "schemas": [GROUP_SCHEMA], "displayName": name }));
        match self
            .client
            .create_or_find(req, || self.find_group(name))
            .await?
        {
            CreateOutcome::Found(g) => Ok(Err(Some(g))),
            CreateOutcome::Sent(r) if r.is_success() => {
                let v: Value = r.json()?;
                Ok(Ok(group_of(&v).ok_or_else(|| unreadable("group"))?))
            }
            CreateOutcome::Sent(r) if r.status == 409 => Ok(Err(self.find_group(name).await?)),
            CreateOutcome::Sent(r) => Err(refused(&r, "group")),
        }
    }

    async fn patch_group(&self, vgid: &str, ops: Vec<Value>) -> AdapterResult<()> {
        let body = json!({ "schemas": [PATCH_OP], "Operations": ops });
        let r = self
            .client
            .send(
                VendorRequest::patch(format!("{GROUPS}/{vgid}"))
                    .json(body)
                    .idempotent(),
            )
            .await?;
        if r.is_success() {
            return Ok(());
        }
        Err(refused(&r, "group"))
    }

    pub async fn rename_group(&self, vgid: &str, name: &str) -> AdapterResult<()> {
        self.patch_group(
            vgid,
            vec![json!({ "op": "replace", "path": "displayName", "value": name })],
        )
        .await
    }

    /// One PATCH adding and removing members (Sisense user ids). Adding a member twice and
    /// removing a non-member are no-ops, so the request is safe to repeat.
    pub async fn change_members(
        &self,
        vgid: &str,
        add: &[String],
        remove: &[String],
    ) -> AdapterResult<()> {
        let mut ops = Vec::new();
        for r in remove {
            let path = format!("members[{}]", filter_eq("value", r));
            ops.push(json!({ "op": "remove", "path": path }));
        }
        if !add.is_empty() {
            let values: Vec<Value> = add.iter().map(|a| json!({ "value": a })).collect();
            ops.push(json!({ "op": "add", "path": "members", "value": values }));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.patch_group(vgid, ops).await
    }

    pub async fn delete_group(&self, vgid: &str) -> AdapterResult<()> {
        let r = self
            .client
            .send(VendorRequest::delete(format!("{GROUPS}/{vgid}")))
            .await?;
        if r.is_success() || r.status == 404 {
            return Ok(());
        }
        Err(refused(&r, "group"))
    }

    /// A token check for start-up and `config check --online`: one-item user list.
    pub async fn probe(&self) -> Result<(), VendorError> {
        let r = self
            .client
            .send(VendorRequest::get(USERS).query("count", "1"))
            .await?;
        if r.is_success() {
            Ok(())
        } else {
            Err(r.rejected())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_shaped_changes_become_scim_operations() {
        let mut body = Map::new();
        body.insert("email".into(), json!("a@b.c"));
        body.insert("firstName".into(), Value::Null);
        body.insert("active".into(), json!(false));
        body.insert("roleId".into(), json!("r1"));
        let ops = user_ops(&body);
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(ops.contains(&json!({"op": "remove", "path": "name.givenName"})));
        assert!(ops.contains(&json!({"op": "replace", "path": "active", "value": false})));
        assert!(ops.contains(&json!({"op": "replace", "path": "emails",
            "value": [{"value": "a@b.c", "type": "work", "primary": true}]})));
    }

    #[test]
    fn filters_escape_quotes_and_backslashes() {
        assert_eq!(
            filter_eq("userName", r#"a"b\c"#),
            r#"userName eq "a\"b\\c""#
        );
    }

    #[test]
    fn scim_users_read_back_with_primary_email() {
        let u = user_of(&json!({"id": "x", "userName": "u", "active": false,
            "emails": [{"value": "o@x"}, {"value": "p@x", "primary": true}],
            "name": {"givenName": "G"}}))
        .unwrap();
        assert_eq!(u.email.as_deref(), Some("p@x"));
        assert_eq!(u.first_name.as_deref(), Some("G"));
        assert!(!u.is_active());
        assert!(user_of(&json!({"userName": "no id"})).is_none());
    }
}

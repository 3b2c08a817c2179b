//! Resources as canonical JSON: what a client sends is rewritten to the schema's attribute
//! spelling (RFC 7643 §2.1: names are case-insensitive), unknown attributes and client-sent
//! read-only data are dropped, and values are coerced to their types. Everything past this
//! point (filters, PATCH, projection, stores) can rely on canonical keys.

use crate::scim::error::{ScimError, ScimResult};
use crate::scim::schema::{split_urn, AttrLocation, Mutability, ResourceSchema, Returned};
use crate::scim::value;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Canonicalizes a POST or PUT body. `schemas` must name the resource's core schema when present
/// (other URNs, such as Entra's ADSCIM group schema, are tolerated); the output's `schemas` is
/// recomputed from what the resource holds. `id`, `meta` and readOnly attributes are ignored
/// (RFC 7644 §3.5.1; Okta PUTs back what it read, `meta` and all). `null` means absent.
pub fn canonicalize(input: &Value, schema: &ResourceSchema) -> ScimResult<Value> {
    let obj = input
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    if let Some(schemas) = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("schemas"))
        .map(|(_, v)| v)
    {
        let listed: Vec<&str> = match schemas {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => {
                return Err(ScimError::invalid_syntax(
                    "`schemas` must be an array of URIs",
                ))
            }
        };
        if !listed
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&schema.core.id))
        {
            return Err(ScimError::invalid_value(format!(
                "`schemas` must contain \"{}\" for a {}",
                schema.core.id,
                schema.kind.name()
            )));
        }
    }
    let mut out = Map::new();
    for (key, raw) in obj {
        if raw.is_null() || key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = schema.extension(key) {
            // The extension as an object keyed by its URN.
            let Some(inner) = raw.as_object() else {
                return Err(ScimError::invalid_value(format!(
                    "\"{}\" must be an object",
                    ext.id
                )));
            };
            for (k, v) in inner {
                if let Some(def) = ext.attr(k) {
                    put(&mut out, Some(&ext.id), def, v)?;
                }
            }
            continue;
        }
        // A flattened URN-qualified key (`urn:…:enterprise:2.0:User:employeeNumber`), or a plain name.
        let (urn, name) = split_urn(key);
        let Some(resolved) = schema.resolve(urn, name) else {
            continue; // attributes this connector does not store are ignored (Okta's `groups`, Entra's extras)
        };
        if name.contains('.') {
            continue;
        }
        let ext = match resolved.location {
            AttrLocation::Core => None,
            AttrLocation::Extension(u) => Some(u),
        };
        put(&mut out, ext, resolved.def, raw)?;
    }
    for def in schema.core.attributes.iter().filter(|d| d.required) {
        let present = out.get(&def.name).is_some_and(|v| !value::is_no_value(v));
        if !present {
            return Err(ScimError::invalid_value(format!(
                "required attribute \"{}\" is missing",
                def.name
            )));
        }
    }
    set_schemas(&mut out, schema);
    Ok(Value::Object(out))
}

fn put(
    out: &mut Map<String, Value>,
    ext: Option<&str>,
    def: &crate::scim::schema::AttributeDef,
    raw: &Value,
) -> ScimResult<()> {
    if def.mutability == Mutability::ReadOnly {
        return Ok(());
    }
    let Some(v) = value::coerce_writable(def, raw)? else {
        return Ok(());
    };
    match ext {
        None => {
            out.insert(def.name.clone(), v);
        }
        Some(u) => {
            let entry = out
                .entry(u.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(m) = entry.as_object_mut() {
                m.insert(def.name.clone(), v);
            }
        }
    }
    Ok(())
}

/// Recomputes `schemas`: the core URN plus each extension the resource holds data for.
pub fn set_schemas(obj: &mut Map<String, Value>, schema: &ResourceSchema) {
    let mut list = vec![Value::String(schema.core.id.clone())];
    for (ext, _) in &schema.extensions {
        match obj.get(&ext.id) {
            Some(Value::Object(m)) if !m.is_empty() => list.push(Value::String(ext.id.clone())),
            Some(_) => {
                obj.remove(&ext.id);
            }
            None => {}
        }
    }
    obj.insert("schemas".into(), Value::Array(list));
}

/// PUT (RFC 7644 §3.5.1): the incoming canonical resource replaces the stored one. Server-owned
/// data (`id`, `meta`, readOnly attributes such as User.groups) is kept from `existing`;
/// an immutable attribute that already has a value may not change (400 `mutability`).
pub fn replace(existing: &Value, incoming: Value, schema: &ResourceSchema) -> ScimResult<Value> {
    let mut out = match incoming {
        Value::Object(m) => m,
        _ => {
            return Err(ScimError::invalid_syntax(
                "the request body must be a JSON object",
            ))
        }
    };
    let old = existing.as_object().cloned().unwrap_or_default();
    for def in schema.common.iter().chain(schema.core.attributes.iter()) {
        match def.mutability {
            Mutability::ReadOnly => {
                out.remove(&def.name);
                if let Some(v) = old.get(&def.name) {
                    out.insert(def.name.clone(), v.clone());
                }
            }
            Mutability::Immutable => {
                if let (Some(a), Some(b)) = (old.get(&def.name), out.get(&def.name)) {
                    if a != b {
                        return Err(ScimError::mutability(format!(
                            "attribute \"{}\" is immutable",
                            def.name
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    set_schemas(&mut out, schema);
    Ok(Value::Object(out))
}

/// Removes attributes that are `returned: never` (password) before a resource is stored: the
/// bridge never needs them back, so it never keeps them.
pub fn strip_unreturnable(resource: &mut Value, schema: &ResourceSchema) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    for def in schema
        .core
        .attributes
        .iter()
        .filter(|d| d.returned == Returned::Never)
    {
        obj.remove(&def.name);
    }
    for (ext, _) in &schema.extensions {
        if let Some(Value::Object(m)) = obj.get_mut(&ext.id) {
            for def in ext
                .attributes
                .iter()
                .filter(|d| d.returned == Returned::Never)
            {
                m.remove(&def.name);
            }
        }
    }
}

/// Server-side metadata (RFC 7643 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub created: String,
    pub last_modified: String,
    pub location: String,
    pub version: String,
}

impl Meta {
    pub fn to_json(&self, schema: &ResourceSchema) -> Value {
        json!({
            "resourceType": schema.kind.name(),
            "created": self.created,
            "lastModified": self.last_modified,
            "location": self.location,
            "version": self.version,
        })
    }
}

/// Now as an xsd:dateTime with millisecond precision, UTC.
pub fn now_timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A weak ETag over the resource's content (everything but `meta`), so the same content always
/// has the same version (RFC 7644 §3.14). `salt` lets a store fold in state kept outside the
/// document, such as the revision of a large group's member index.
pub fn compute_version(resource: &Value, salt: u64) -> String {
    let mut h = Sha256::new();
    if let Some(obj) = resource.as_object() {
        for (k, v) in obj {
            if k == "meta" {
                continue;
            }
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.to_string().as_bytes());
            h.update([0]);
        }
    }
    h.update(salt.to_le_bytes());
    let digest = h.finalize();
    format!("W/\"{}\"", hex::encode(&digest[..10]))
}

/// Whether an `If-Match` / `If-None-Match` header value matches `version` (weak comparison,
/// RFC 7232 §2.3.2; `*` matches anything).
pub fn etag_matches(header: &str, version: &str) -> bool {
    let strip = |s: &str| -> String {
        let s = s.trim();
        let s = s.strip_prefix("W/").unwrap_or(s);
        s.trim_matches('"').to_string()
    };
    let ours = strip(version);
    header.split(',').any(|tag| {
        let tag = tag.trim();
        tag == "*" || strip(tag) == ours
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::urn;

    #[test]
    fn okta_create_body_is_canonicalized() {
        let s = ResourceSchema::user();
        let body = json!({"schemas":[urn::CORE_USER],"UserName":"test.user@okta.local",
            "name":{"GivenName":"Test","familyName":"User"},
            "emails":[{"primary":true,"value":"test.user@okta.local","type":"work"}],
            "displayName":"Test User","locale":"en-US","externalId":"00ujl29u0le5T6Aj10h7",
            "groups":[],"password":"1mz050nq","active":true, "id": "client-id", "meta": {"created": "04-12-2018 00:00:00"}});
        let r = canonicalize(&body, &s).unwrap();
        assert_eq!(r["userName"], "test.user@okta.local");
        assert_eq!(r["name"]["givenName"], "Test");
        assert!(r.get("groups").is_none());
        assert!(r.get("id").is_none());
        assert!(r.get("meta").is_none());
        assert_eq!(r["password"], "1mz050nq", "kept until the store strips it");
        assert_eq!(r["schemas"], json!([urn::CORE_USER]));
    }

    #[test]
    fn entra_body_with_nulls_and_extension() {
        let s = ResourceSchema::user();
        let body = json!({"schemas":[urn::CORE_USER, urn::ENTERPRISE_USER],
            "externalId":"0a21f0f2","userName":"Test_User","active":true,"addresses":null,"title":null,"manager":null,
            "meta":{"resourceType":"User"}, "roles": [],
            urn::ENTERPRISE_USER: {"employeeNumber": "42", "Department": "R&D"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter": "cc1"});
        let r = canonicalize(&body, &s).unwrap();
        assert!(r.get("title").is_none());
        assert!(r.get("roles").is_none());
        assert_eq!(r[urn::ENTERPRISE_USER]["department"], "R&D");
        assert_eq!(r[urn::ENTERPRISE_USER]["costCenter"], "cc1");
        assert_eq!(r["schemas"], json!([urn::CORE_USER, urn::ENTERPRISE_USER]));
    }

    #[test]
    fn rejects_bad_bodies() {
        let s = ResourceSchema::user();
        assert_eq!(
            canonicalize(&json!({"not":"a scim resource"}), &s)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(canonicalize(&json!([1]), &s).unwrap_err().status, 400);
        assert_eq!(
            canonicalize(&json!({"schemas":["urn:x:y"],"userName":"a"}), &s)
                .unwrap_err()
                .scim_type,
            Some(crate::scim::ScimType::InvalidValue)
        );
        assert!(canonicalize(&json!({"userName": 5}), &s).is_err());
        let g = ResourceSchema::group();
        let entra = json!({"schemas":[urn::CORE_GROUP,"http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId":"8aa1","displayName":"displayName","meta":{"resourceType":"Group"}});
        assert_eq!(
            canonicalize(&entra, &g).unwrap()["displayName"],
            "displayName"
        );
    }

    #[test]
    fn put_keeps_server_data_and_checks_immutable() {
        let s = ResourceSchema::user();
        let existing =
            json!({"id":"u1","userName":"a","meta":{"created":"x"},"groups":[{"value":"g1"}]});
        let incoming = canonicalize(&json!({"userName":"b","id":"zzz"}), &s).unwrap();
        let r = replace(&existing, incoming, &s).unwrap();
        assert_eq!(r["id"], "u1");
        assert_eq!(r["userName"], "b");
        assert_eq!(r["groups"][0]["value"], "g1");
    }

    #[test]
    fn versions_and_etags() {
        let a = json!({"id":"1","userName":"a","meta":{"x":1}});
        let b = json!({"id":"1","userName":"a","meta":{"x":2}});
        let c = json!({"id":"1","userName":"b"});
        assert_eq!(compute_version(&a, 0), compute_version(&b, 0));
        assert_ne!(compute_version(&a, 0), compute_version(&c, 0));
        assert_ne!(compute_version(&a, 0), compute_version(&a, 1));
        let v = compute_version(&a, 0);
        assert!(v.starts_with("W/\""));
        assert!(etag_matches(&v, &v));
        assert!(etag_matches(v.trim_start_matches("W/"), &v));
        assert!(etag_matches("*", &v));
        assert!(!etag_matches("\"nope\", W/\"other\"", &v));
    }
}

//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) combined with the schema's `returned`
//! rules (RFC 7643 §7): `always` is always sent, `never` never, `default` unless excluded or an
//! explicit `attributes` list omits it, `request` only when asked for.

use crate::scim::schema::{split_urn, AttributeDef, ResourceSchema, Returned};
use serde_json::{Map, Value};

/// One requested attribute, resolved to canonical names. `sub` narrows to one sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    /// `None` for core/common attributes, `Some(urn)` for an extension.
    ext: Option<String>,
    /// `None` selects the whole extension object (`attributes=urn:…:User`).
    name: Option<String>,
    sub: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    include: Option<Vec<Selector>>,
    exclude: Vec<Selector>,
}

impl Projection {
    /// Everything with `returned` default or always.
    pub fn all() -> Self {
        Projection::default()
    }

    /// Builds from the comma-separated query values. Unknown attribute names are ignored (a client
    /// may ask for attributes this connector does not publish).
    pub fn new(attributes: Option<&str>, excluded: Option<&str>, schema: &ResourceSchema) -> Self {
        let parse = |list: &str| -> Vec<Selector> {
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .filter_map(|p| resolve_selector(p, schema))
                .collect()
        };
        let include = attributes.map(parse).filter(|v| !v.is_empty());
        // RFC 7644 §3.4.2.5: when both are given, `attributes` wins.
        let exclude = if include.is_some() {
            Vec::new()
        } else {
            excluded.map(parse).unwrap_or_default()
        };
        Projection { include, exclude }
    }

    pub fn from_lists(attributes: &[String], excluded: &[String], schema: &ResourceSchema) -> Self {
        let a = (!attributes.is_empty()).then(|| attributes.join(","));
        let e = (!excluded.is_empty()).then(|| excluded.join(","));
        Self::new(a.as_deref(), e.as_deref(), schema)
    }

    /// Whether the top-level core attribute `name` (canonical) will appear at all — lets a store skip
    /// loading expensive attributes such as a 100,000-entry `members`.
    pub fn wants(&self, name: &str, schema: &ResourceSchema) -> bool {
        let Some(def) = schema.resolve(None, name).map(|r| r.def) else {
            return false;
        };
        match def.returned {
            Returned::Always => true,
            Returned::Never => false,
            Returned::Default | Returned::Request => match &self.include {
                Some(inc) => inc
                    .iter()
                    .any(|s| s.ext.is_none() && s.name.as_deref() == Some(def.name.as_str())),
                None => {
                    def.returned == Returned::Default
                        && !self.exclude.iter().any(|s| {
                            s.ext.is_none()
                                && s.name.as_deref() == Some(def.name.as_str())
                                && s.sub.is_none()
                        })
                }
            },
        }
    }

    /// Applies the projection to a canonical resource.
    pub fn apply(&self, resource: &Value, schema: &ResourceSchema) -> Value {
        let Some(obj) = resource.as_object() else {
            return resource.clone();
        };
        let mut out = Map::new();
        for (key, value) in obj {
            if key == "schemas" {
                out.insert(key.clone(), value.clone());
                continue;
            }
            if let Some(ext) = schema.extension(key) {
                let Some(inner) = value.as_object() else {
                    continue;
                };
                let mut ext_out = Map::new();
                for (k, v) in inner {
                    let Some(def) = ext.attr(k) else { continue };
                    if let Some(v) = self.project_attr(Some(&ext.id), def, v) {
                        ext_out.insert(k.clone(), v);
                    }
                }
                if !ext_out.is_empty() {
                    out.insert(key.clone(), Value::Object(ext_out));
                }
                continue;
            }
            let Some(def) = schema.resolve(None, key).map(|r| r.def) else {
                continue;
            };
            if let Some(v) = self.project_attr(None, def, value) {
                out.insert(key.clone(), v);
            }
        }
        Value::Object(out)
    }

    fn project_attr(&self, ext: Option<&str>, def: &AttributeDef, value: &Value) -> Option<Value> {
        let same =
            |s: &Selector| s.ext.as_deref() == ext && s.name.as_deref() == Some(def.name.as_str());
        match def.returned {
            Returned::Never => return None,
            Returned::Always => return Some(value.clone()),
            _ => {}
        }
        if let Some(inc) = &self.include {
            let whole_ext = inc
                .iter()
                .any(|s| ext.is_some() && s.ext.as_deref() == ext && s.name.is_none());
            if whole_ext && def.returned == Returned::Default {
                return Some(value.clone());
            }
            let subs: Vec<&str> = inc
                .iter()
                .filter(|s| same(s))
                .filter_map(|s| s.sub.as_deref())
                .collect();
            let whole = inc.iter().any(|s| same(s) && s.sub.is_none());
            if whole {
                return Some(strip_never(def, value));
            }
            if subs.is_empty() {
                return None;
            }
            return keep_subs(def, value, &subs);
        }
        if def.returned == Returned::Request {
            return None;
        }
        if self.exclude.iter().any(|s| same(s) && s.sub.is_none())
            || self
                .exclude
                .iter()
                .any(|s| ext.is_some() && s.ext.as_deref() == ext && s.name.is_none())
        {
            return None;
        }
        let drop: Vec<&str> = self
            .exclude
            .iter()
            .filter(|s| same(s))
            .filter_map(|s| s.sub.as_deref())
            .collect();
        if drop.is_empty() {
            Some(strip_never(def, value))
        } else {
            drop_subs(def, value, &drop)
        }
    }
}

fn resolve_selector(path: &str, schema: &ResourceSchema) -> Option<Selector> {
    let (urn, rest) = split_urn(path);
    // `attributes=urn:…:enterprise:2.0:User` names the whole extension: split_urn sees `User` as the attribute.
    if let Some(ext) = schema.extension(path) {
        return Some(Selector {
            ext: Some(ext.id.clone()),
            name: None,
            sub: None,
        });
    }
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    let resolved = schema.resolve(urn, name)?;
    let ext = match resolved.location {
        crate::scim::schema::AttrLocation::Core => None,
        crate::scim::schema::AttrLocation::Extension(u) => Some(u.to_string()),
    };
    let sub = match sub {
        Some(s) => Some(resolved.def.sub(s)?.name.clone()),
        None => None,
    };
    Some(Selector {
        ext,
        name: Some(resolved.def.name.clone()),
        sub,
    })
}

fn map_elements(
    value: &Value,
    f: impl Fn(&Map<String, Value>) -> Map<String, Value>,
) -> Option<Value> {
    match value {
        Value::Object(o) => {
            let m = f(o);
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(items) => {
            let out: Vec<Value> = items
                .iter()
                .filter_map(|i| i.as_object().map(&f))
                .filter(|m| !m.is_empty())
                .map(Value::Object)
                .collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => Some(other.clone()),
    }
}

fn keep_subs(def: &AttributeDef, value: &Value, subs: &[&str]) -> Option<Value> {
    map_elements(value, |o| {
        o.iter()
            .filter(|(k, _)| {
                subs.iter().any(|s| s == k)
                    || def
                        .sub(k)
                        .map(|d| d.returned == Returned::Always)
                        .unwrap_or(false)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn drop_subs(def: &AttributeDef, value: &Value, subs: &[&str]) -> Option<Value> {
    map_elements(value, |o| {
        o.iter()
            .filter(|(k, _)| !subs.iter().any(|s| s == k))
            .filter(|(k, _)| {
                def.sub(k)
                    .map(|d| d.returned != Returned::Never)
                    .unwrap_or(true)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn strip_never(def: &AttributeDef, value: &Value) -> Value {
    if def
        .sub_attributes
        .iter()
        .any(|s| s.returned == Returned::Never)
    {
        drop_subs(def, value, &[]).unwrap_or(Value::Null)
    } else {
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::urn;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": [urn::CORE_USER, urn::ENTERPRISE_USER],
            "id": "u1", "userName": "bjensen", "password": "secret",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@x.com", "type": "work"}],
            "meta": {"resourceType": "User"},
            urn::ENTERPRISE_USER: {"employeeNumber": "7", "department": "R&D"}
        })
    }

    #[test]
    fn default_drops_never() {
        let s = ResourceSchema::user();
        let out = Projection::all().apply(&user(), &s);
        assert!(out.get("password").is_none());
        assert_eq!(out["userName"], "bjensen");
        assert_eq!(out[urn::ENTERPRISE_USER]["employeeNumber"], "7");
    }

    #[test]
    fn attributes_keep_always_and_listed_subs() {
        let s = ResourceSchema::user();
        let p = Projection::new(Some("userName,name.familyName"), None, &s);
        let out = p.apply(&user(), &s);
        assert_eq!(out["id"], "u1");
        assert_eq!(out["name"], json!({"familyName": "Jensen"}));
        assert!(out.get("emails").is_none());
        assert!(out.get("meta").is_none());
        assert!(out.get(urn::ENTERPRISE_USER).is_none());
        assert!(out.get("schemas").is_some());
    }

    #[test]
    fn attributes_by_urn() {
        let s = ResourceSchema::user();
        let p = Projection::new(
            Some(&format!("{}:employeeNumber", urn::ENTERPRISE_USER)),
            None,
            &s,
        );
        let out = p.apply(&user(), &s);
        assert_eq!(out[urn::ENTERPRISE_USER], json!({"employeeNumber": "7"}));
        let p = Projection::new(Some(urn::ENTERPRISE_USER), None, &s);
        let out = p.apply(&user(), &s);
        assert_eq!(out[urn::ENTERPRISE_USER]["department"], "R&D");
        let p = Projection::new(
            Some("urn:ietf:params:scim:schemas:core:2.0:User:USERNAME"),
            None,
            &s,
        );
        assert_eq!(p.apply(&user(), &s)["userName"], "bjensen");
    }

    #[test]
    fn excluded_attributes() {
        let s = ResourceSchema::user();
        let p = Projection::new(None, Some("emails, name.givenName,id"), &s);
        let out = p.apply(&user(), &s);
        assert!(out.get("emails").is_none());
        assert_eq!(out["name"], json!({"familyName": "Jensen"}));
        assert_eq!(out["id"], "u1", "returned:always cannot be excluded");
        let g = ResourceSchema::group();
        let p = Projection::new(None, Some("members"), &g);
        assert!(!p.wants("members", &g));
        assert!(Projection::all().wants("members", &g));
        assert!(!Projection::new(Some("displayName"), None, &g).wants("members", &g));
    }

    #[test]
    fn unknown_names_are_ignored() {
        let s = ResourceSchema::user();
        let p = Projection::new(Some("nosuch,userName"), Some("bogus"), &s);
        let out = p.apply(&user(), &s);
        assert_eq!(out["userName"], "bjensen");
        assert!(out.get("name").is_none());
    }
}

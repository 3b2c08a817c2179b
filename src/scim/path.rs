//! PATCH paths (RFC 7644 §3.5.2): `PATH = attrPath / valuePath [subAttr]`, URN-qualified allowed,
//! e.g. `members[value eq "2819c223-…"]`, `emails[type eq "work"].value`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
//!
//! The grammar is the filter grammar's (one tokenizer), so a `]` or `:` inside a quoted string in
//! the value filter cannot confuse it.

use crate::scim::error::ScimError;
pub use crate::scim::filter::AttrPath;
use crate::scim::filter::{parse_path_syntax, Filter};
use std::fmt;

/// A parsed PATCH path. `attr.sub` is set only for the plain `attr.sub` form; with a value filter,
/// `attr.sub` is `None` and the trailing `.sub` is `sub_attr`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    /// Paths inside are relative to one element of `attr`: evaluate with
    /// [`Filter::matches_element`].
    pub filter: Option<Filter>,
    pub sub_attr: Option<String>,
}

/// Parses a PATCH path; every malformed input is a 400 `invalidPath` naming the byte position.
pub fn parse_path(input: &str) -> Result<PatchPath, ScimError> {
    let parts = parse_path_syntax(input).map_err(|e| ScimError::invalid_path(e.detail("path")))?;
    Ok(PatchPath {
        attr: parts.attr,
        filter: parts.filter,
        sub_attr: parts.sub_attr,
    })
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// A plain attribute path for reading one value out of a resource (`attr`, `attr.sub`, or
/// URN-qualified, e.g. the enterprise extension's `department`): what `[tenants.attributes]`
/// maps. Value filters are refused, with the reason.
pub fn attribute_path(input: &str) -> Result<AttrPath, String> {
    let p = parse_path(input).map_err(|e| e.detail)?;
    if p.filter.is_some() || p.sub_attr.is_some() {
        return Err(format!(
            "`{input}` has a value filter; map a plain attribute path (`attr`, `attr.sub` or `urn:…:attr`)"
        ));
    }
    Ok(p.attr)
}

/// The value at a plain attribute path of a resource, as text: a string as is, a number or a
/// boolean written out; of a multi-valued attribute the primary value, else the first (its
/// `value`, or the sub-attribute named). `None` when absent, null or empty. Attribute names and
/// schema URNs match case-insensitively (RFC 7643 §2.1).
pub fn value_at(doc: &serde_json::Value, path: &AttrPath) -> Option<String> {
    use serde_json::Value;
    fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
        v.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    let container = match &path.urn {
        Some(urn) if !urn.eq_ignore_ascii_case(crate::scim::schema::urn::CORE_USER) => {
            field(doc, urn)?
        }
        _ => doc,
    };
    let mut v = field(container, &path.name)?;
    if let Value::Array(items) = v {
        v = items
            .iter()
            .find(|i| field(i, "primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| items.first())?;
        if path.sub.is_none() {
            if let Some(inner) = field(v, "value") {
                v = inner;
            }
        }
    }
    if let Some(sub) = &path.sub {
        v = field(v, sub)?;
    } else if v.is_object() {
        // A complex value with a `value` (e.g. the enterprise `manager`).
        v = field(v, "value")?;
    }
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::error::ScimType;
    use crate::scim::filter::{parse_filter, CompValue, CompareOp};
    use crate::scim::schema::urn::ENTERPRISE_USER;

    fn ok(input: &str) -> PatchPath {
        match parse_path(input) {
            Ok(p) => {
                assert_eq!(
                    parse_path(&p.to_string()).as_ref(),
                    Ok(&p),
                    "round trip of {input}"
                );
                p
            }
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }
    fn err(input: &str) -> String {
        match parse_path(input) {
            Ok(p) => panic!("{input:?} should not parse, got {p:?}"),
            Err(e) => {
                assert_eq!(e.status, 400);
                assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{input:?}");
                e.detail
            }
        }
    }
    fn filter(text: &str) -> Option<Filter> {
        Some(parse_filter(text).expect("valid filter"))
    }

    #[test]
    fn plain_and_sub_attribute_paths() {
        assert_eq!(
            ok("members"),
            PatchPath {
                attr: AttrPath::new("members", None),
                filter: None,
                sub_attr: None
            }
        );
        assert_eq!(
            ok("name.familyName"),
            PatchPath {
                attr: AttrPath::new("name", Some("familyName")),
                filter: None,
                sub_attr: None
            }
        );
        assert_eq!(ok(" userName ").attr, AttrPath::new("userName", None));
        assert_eq!(
            ok("members.$ref").attr,
            AttrPath::new("members", Some("$ref"))
        );
    }

    #[test]
    fn urn_qualified_paths_split_at_the_last_colon() {
        let p = ok("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager");
        assert_eq!(p.attr.urn.as_deref(), Some(ENTERPRISE_USER));
        assert_eq!(
            (p.attr.name.as_str(), p.attr.sub.as_deref()),
            ("manager", None)
        );
        let p = ok("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(p.attr.urn.as_deref(), Some(ENTERPRISE_USER));
        assert_eq!(
            (p.attr.name.as_str(), p.attr.sub.as_deref()),
            ("manager", Some("value"))
        );
        let p = ok("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber");
        assert_eq!(p.attr.name, "employeeNumber");
        let p = ok("urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User:tag");
        assert_eq!(
            p.attr.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User")
        );
        let p = ok("urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq \"work\"].value");
        assert_eq!(
            p.attr.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
        assert_eq!(p.attr.name, "emails");
        assert_eq!(p.sub_attr.as_deref(), Some("value"));
    }

    #[test]
    fn value_paths() {
        let p = ok("members[value eq \"2819c223-7f76-453a-919d-413861904646\"]");
        assert_eq!(p.attr, AttrPath::new("members", None));
        assert_eq!(
            p.filter,
            filter("value eq \"2819c223-7f76-453a-919d-413861904646\"")
        );
        assert_eq!(p.sub_attr, None);
        let p = ok("emails[type eq \"work\"].value");
        assert_eq!(p.filter, filter("type eq \"work\""));
        assert_eq!(p.sub_attr.as_deref(), Some("value"));
        let p = ok("addresses[type eq \"work\"].streetAddress");
        assert_eq!(p.sub_attr.as_deref(), Some("streetAddress"));
        let p = ok("members[value eq \"a\" or value eq \"b\"]");
        assert_eq!(p.filter, filter("value eq \"a\" or value eq \"b\""));
        let p = ok("roles[primary eq \"True\"].value");
        assert_eq!(p.filter, filter("primary eq \"True\""));
        let p = ok("manager[value eq \"id\"]");
        assert_eq!(p.attr.name, "manager");
        assert_eq!(
            ok("emails[type eq \"work\"].value").to_string(),
            "emails[type eq \"work\"].value"
        );
    }

    #[test]
    fn quoted_brackets_and_colons_do_not_confuse_the_path() {
        let p = ok("members[value eq \"a]b:c\"].display");
        assert_eq!(
            p.filter,
            Some(Filter::compare(
                AttrPath::new("value", None),
                CompareOp::Eq,
                CompValue::String("a]b:c".into())
            ))
        );
        assert_eq!(p.sub_attr.as_deref(), Some("display"));
        let p = ok("urn:ietf:params:scim:schemas:core:2.0:User:emails[value eq \"urn:x:y]\"]");
        assert_eq!(p.attr.name, "emails");
        assert_eq!(
            p.attr.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
    }

    #[test]
    fn malformed_paths_are_invalid_path_with_position() {
        assert!(err("").contains("byte 0"));
        let d = err("members[value eq \"a\"");
        assert!(d.contains("byte 20") && d.contains("']'"), "{d}");
        let d = err("members[value eq \"a\"]x");
        assert!(d.contains("byte 21"), "{d}");
        let d = err("emails[type eq \"work\"].");
        assert!(d.contains("byte 23"), "{d}");
        let d = err("name.familyName.x");
        assert!(d.contains("byte 15"), "{d}");
        let d = err("name.familyName[value pr]");
        assert!(d.contains("byte 15"), "{d}");
        let d = err("members[]");
        assert!(d.contains("byte 8"), "{d}");
        let d = err("emails[type eq \"work\"].value.x");
        assert!(d.contains("byte 28"), "{d}");
        for bad in [
            "members value",
            "members[value eq \"a\"] ",
            "[value eq \"a\"]",
            "members[[value pr]]",
            "urn:x",
            "urn:ietf:params:scim:schemas:core:2.0:User:",
            "emails[type eq \"wörk\"].😀",
            "😀",
            "members[value eq \"\\x\"]",
        ] {
            if bad == "members[value eq \"a\"] " {
                // Trailing whitespace is tolerated (IdPs pad paths), not an error.
                assert!(parse_path(bad).is_ok());
                continue;
            }
            err(bad);
        }
        let long = format!("members[value eq \"{}\"]", "a".repeat(20_000));
        assert!(err(&long).contains("limit"));
        let deep = format!(
            "members[{}value pr{}]",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(err(&deep).contains("limit"));
        let deep = format!("members[{}value pr{}]", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).contains("nesting"));
    }

    #[test]
    fn attribute_paths_read_values_from_resources() {
        let doc = serde_json::json!({
            "userName": "ada",
            "title": "",
            "active": true,
            "name": {"givenName": "Ada"},
            "emails": [{"value": "b@x"}, {"value": "a@x", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Research", "manager": {"value": "42"}, "employeeNumber": 7
            }
        });
        let at = |p: &str| value_at(&doc, &attribute_path(p).unwrap());
        assert_eq!(at("userName").as_deref(), Some("ada"));
        assert_eq!(at("USERNAME").as_deref(), Some("ada"));
        assert_eq!(at("title"), None, "an empty string is no value");
        assert_eq!(at("active").as_deref(), Some("true"));
        assert_eq!(at("name.givenName").as_deref(), Some("Ada"));
        assert_eq!(at("emails").as_deref(), Some("a@x"));
        assert_eq!(at("emails.value").as_deref(), Some("a@x"));
        let ent = format!("{ENTERPRISE_USER}:department");
        assert_eq!(at(&ent).as_deref(), Some("Research"));
        assert_eq!(
            at(&format!("{ENTERPRISE_USER}:manager")).as_deref(),
            Some("42")
        );
        assert_eq!(
            at(&format!("{ENTERPRISE_USER}:employeeNumber")).as_deref(),
            Some("7")
        );
        assert_eq!(at(&format!("{ENTERPRISE_USER}:division")), None);
        assert_eq!(
            at("urn:ietf:params:scim:schemas:core:2.0:User:userName").as_deref(),
            Some("ada")
        );
        assert!(attribute_path("emails[type eq \"work\"].value").is_err());
        assert!(attribute_path("").is_err());
    }
}

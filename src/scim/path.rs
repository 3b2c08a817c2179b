//! PATCH paths (RFC 7644 §3.5.2): `PATH = attrPath / valuePath [subAttr]`, URN-qualified allowed,
//! e.g. `members[value eq "2819c223-…"]`, `emails[type eq "work"].value`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
//!
//! The grammar is the filter grammar's (one tokenizer), so a `]` or `:` inside a quoted string in
//! the value filter cannot confuse it.

use crate::scim::error::ScimError;
use crate::scim::filter::{parse_path_syntax, AttrPath, Filter};
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
}

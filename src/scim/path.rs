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

//! The SCIM filter language (RFC 7644 §3.4.2.2): parser, canonical rendering, evaluation against
//! canonical resources, schema validation, and push-down helpers for connectors.
//!
//! Beyond the ABNF it accepts what Okta and Entra ID really send (shared/reference/idp-behavior.md
//! §2.3): `emails[type eq "work"].value eq "x"` (parsed as `emails[type eq "work" and value eq
//! "x"]`) and unquoted legacy values (`externalId eq jyoung`).
//!
//! Evaluation: [`Filter::matches`] for one resource, [`Filter::bind`] once and
//! [`BoundFilter::matches`] for many. The PATCH engine evaluates the filter of a value path
//! (`members[value eq "…"]`, see [`crate::scim::path`]) against each element with
//! [`Filter::matches_element`], giving it the definition of the filtered attribute
//! (`schema.resolve(attr.urn.as_deref(), &attr.name)?.def`).

mod ast;
mod eval;
mod parser;

#[cfg(test)]
mod tests;

pub use ast::{AttrPath, CompValue, CompareOp, Filter};
pub use eval::BoundFilter;
pub(crate) use parser::parse_path_syntax;
pub use parser::{MAX_DEPTH, MAX_INPUT_LEN};

use crate::scim::error::ScimError;

/// Parses a filter. Every malformed input is a 400 `invalidFilter` whose detail names the byte
/// position and what was expected there.
pub fn parse_filter(input: &str) -> Result<Filter, ScimError> {
    parser::parse_filter_syntax(input).map_err(|e| ScimError::invalid_filter(e.detail("filter")))
}

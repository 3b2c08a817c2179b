//! TEMPORARY STUB so the server compiles while the real parser is written on h/filter.
use crate::scim::filter::{AttrPath, Filter};
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub_attr: Option<String>,
}

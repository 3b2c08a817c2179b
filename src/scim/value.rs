//! TEMPORARY STUB so the server compiles while the real coercion is written on h/patch.
use crate::scim::error::ScimError;
use crate::scim::schema::AttributeDef;
use serde_json::Value;
pub fn coerce(_def: &AttributeDef, value: &Value) -> Result<Option<Value>, ScimError> {
    Ok((!value.is_null()).then(|| value.clone()))
}

//! TEMPORARY STUB so the server compiles while the real engine is written on h/patch.
use crate::scim::error::ScimError;
use crate::scim::filter::Filter;
use crate::scim::path::PatchPath;
use crate::scim::schema::ResourceSchema;
use serde_json::Value;
use std::collections::BTreeSet;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}
#[derive(Debug, Clone)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}
#[derive(Debug, Clone)]
pub struct PatchRequest {
    pub operations: Vec<PatchOperation>,
}
impl PatchRequest {
    pub fn from_json(_body: &Value) -> Result<Self, ScimError> {
        Err(ScimError::not_implemented("stub"))
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMode {
    Strict,
    IdpCompatible,
}
#[derive(Debug, Clone, Copy)]
pub struct PatchOptions {
    pub mode: PatchMode,
    pub external_members: bool,
}
#[derive(Debug, Clone)]
pub enum MemberOp {
    Add(Vec<Value>),
    Remove(Vec<String>),
    RemoveWhere(Filter),
    RemoveAll,
    Replace(Vec<Value>),
}
#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub changed: BTreeSet<String>,
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
    pub member_ops: Vec<MemberOp>,
}
pub struct PatchOutcome {
    pub resource: Value,
    pub delta: Delta,
}
pub fn apply_patch(
    _r: &Value,
    _q: &PatchRequest,
    _s: &ResourceSchema,
    _o: PatchOptions,
) -> Result<PatchOutcome, ScimError> {
    Err(ScimError::not_implemented("stub"))
}

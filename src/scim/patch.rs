//! The PATCH engine: RFC 7644 §3.5.2 plus the dialects Okta and Entra ID really send
//! (shared/reference/idp-behavior.md §1.4, §1.6, §2.3–2.5). Pure: JSON in, JSON and a delta out.
//!
//! Atomicity (RFC 7644 §3.5.2: "each operation … SHALL be applied … if any fails, no change"):
//! operations run on a clone of the resource, and an error returns before the clone is handed
//! back, so the caller's resource is never touched.
//!
//! Where the RFC and the IdPs disagree, [`PatchMode::IdpCompatible`] (the default) follows the IdPs:
//! a `replace` on a filter that matches nothing creates the element, as Entra expects
//! (scim2-models `UnmatchedPathFilter.create`), where [`PatchMode::Strict`] answers `noTarget`
//! (RFC 7644 §3.5.2.3); and an unqualified name of an extension attribute (Entra's
//! `manager[value eq "id"]`) resolves, where Strict answers `invalidPath`. Every other dialect is
//! accepted in both modes, since none of them conflicts with a valid RFC request.
//!
//! Readings of the RFC worth knowing (each is explained where it is implemented):
//! - `null`/`""` with `add` or `replace`, and `[]`/`{}` with `replace`, clear the target;
//!   `add` of `[]`/`{}` adds nothing;
//! - `add`/`replace` of a single-valued complex attribute merges sub-attributes, unless the
//!   new `value` differs from the old one (a re-pointed `manager` drops the old `$ref`);
//! - an element of a list that loses its `value` (or every sub-attribute) is dropped;
//! - `remove` with a value list on a multi-valued complex attribute removes the listed elements
//!   (by `value`), on `members` as Entra sends it and on `emails`/`roles` alike; on any other
//!   path the value is ignored and the path removed;
//! - a required attribute (`userName`, a group's `displayName`) that a PATCH leaves without a
//!   value is `mutability` (RFC 7644 §3.5.2.2), judged on the result, not per operation.

use crate::scim::error::ScimError;
use crate::scim::filter::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::path::{parse_path, PatchPath};
use crate::scim::schema::{
    split_urn, urn, AttrLocation, AttrType, AttributeDef, Mutability, ResolvedAttr, ResourceKind,
    ResourceSchema,
};
use crate::scim::value::{
    coerce_single_writable, coerce_writable, element_equal, is_no_value, settle_primary,
    values_equal,
};
use crate::scim::ScimType;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

impl PatchOpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Remove => "remove",
            PatchOpKind::Replace => "replace",
        }
    }

    /// Entra capitalises op names (`Add`/`Replace`/`Remove`) [ENTRA-DEV]; match any case.
    pub fn parse(name: &str) -> Option<Self> {
        [PatchOpKind::Add, PatchOpKind::Remove, PatchOpKind::Replace]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }
}

/// One entry of `Operations`. `value` is `Some(Value::Null)` when the client sent `"value": null`
/// (a clear, for Entra) and `None` when it sent no `value` at all.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    pub operations: Vec<PatchOperation>,
}

impl PatchRequest {
    /// Parses an RFC 7644 §3.5.2 PatchOp body. Structural problems (not an object, no PatchOp URN
    /// in `schemas`, `Operations` missing, empty or not a list, an operation that is not an object
    /// or has no `op`) are 400 `invalidSyntax`; an unknown op name is `invalidValue`; a path that
    /// does not parse is `invalidPath`. Member names are matched case-insensitively, like
    /// attribute names (Okta tolerates lowercase `resources`; IdPs are loose about casing).
    pub fn from_json(body: &Value) -> Result<Self, ScimError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("the PATCH body must be a JSON object"))?;
        let has_urn = match get_ci(obj, "schemas") {
            Some(Value::Array(a)) => a.iter().any(is_patch_urn),
            Some(v) => is_patch_urn(v),
            None => false,
        };
        if !has_urn {
            return Err(ScimError::invalid_syntax(format!(
                "'schemas' must contain \"{}\" (RFC 7644 §3.5.2)",
                urn::PATCH_OP
            )));
        }
        let ops = match get_ci(obj, "Operations") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            _ => {
                return Err(ScimError::invalid_syntax(
                    "'Operations' must be a non-empty array (RFC 7644 §3.5.2)",
                ))
            }
        };
        let operations = ops
            .iter()
            .enumerate()
            .map(|(i, op)| parse_operation(op).map_err(|e| at_operation(e, i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PatchRequest { operations })
    }
}

fn is_patch_urn(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(urn::PATCH_OP))
}

fn parse_operation(op: &Value) -> Result<PatchOperation, ScimError> {
    let obj = op
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("an operation must be a JSON object"))?;
    let kind = match get_ci(obj, "op") {
        Some(Value::String(s)) => PatchOpKind::parse(s).ok_or_else(|| {
            ScimError::invalid_value(format!("unknown op '{s}': expected add, remove or replace"))
        })?,
        Some(_) => return Err(ScimError::invalid_syntax("'op' must be a string")),
        None => return Err(ScimError::invalid_syntax("an operation needs an 'op'")),
    };
    let path = match get_ci(obj, "path") {
        None | Some(Value::Null) => None,
        // An empty path is what some clients send for "no path".
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(parse_path(s).map_err(as_invalid_path)?),
        Some(_) => return Err(ScimError::invalid_path("'path' must be a string")),
    };
    Ok(PatchOperation {
        op: kind,
        path,
        value: get_ci(obj, "value").cloned(),
    })
}

fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// RFC 7644 §3.5.2: a path that does not parse is `invalidPath`, whatever part of it failed
/// (a bad value filter inside `[...]` included).
fn as_invalid_path(e: ScimError) -> ScimError {
    if e.scim_type == Some(ScimType::InvalidPath) {
        e
    } else {
        ScimError::invalid_path(e.detail)
    }
}

fn at_operation(e: ScimError, i: usize) -> ScimError {
    ScimError {
        detail: format!("Operations[{i}]: {}", e.detail),
        ..e
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchMode {
    /// RFC 7644 as written: `replace` on an unmatched filter is `noTarget`.
    Strict,
    /// What the server uses: Entra's create-on-unmatched-filter on top of the RFC.
    #[default]
    IdpCompatible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PatchOptions {
    pub mode: PatchMode,
    /// The group's members live outside the resource (100,000-member groups): every operation on
    /// `members` becomes a [`MemberOp`] instead of being applied.
    pub external_members: bool,
}

/// A membership change for a group whose members are stored outside the resource.
/// Member elements in `Add`/`Replace` are canonical (coerced), and each has a `value`.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberOp {
    Add(Vec<Value>),
    /// By member id: `members[value eq "…"]` (and `or` chains of those), and Entra's remove with
    /// a value list.
    Remove(Vec<String>),
    /// Any other filter: `members[display sw "a"]`. Evaluate with `Filter::matches_element`
    /// against each member and the Group schema's `members` definition.
    RemoveWhere(Filter),
    RemoveAll,
    Replace(Vec<Value>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// Canonical top-level attribute names whose value differs between the input and the result;
    /// extension attributes as `urn:…:User:employeeNumber`. `schemas` and `meta` are never listed
    /// (the engine only keeps `schemas` in step with the extensions present). With external
    /// members, `members` is never listed: see `member_ops`.
    pub changed: BTreeSet<String>,
    /// Member ids added and removed, when members are in the resource.
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
    /// In request order, only with `external_members`.
    pub member_ops: Vec<MemberOp>,
}

impl Delta {
    /// Nothing to send to a vendor.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.member_ops.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOutcome {
    pub resource: Value,
    pub delta: Delta,
}

/// Applies `req` to `resource` (a canonical resource object). Pure and atomic: on error nothing
/// is returned but the error, whose detail names the failing operation.
pub fn apply_patch(
    resource: &Value,
    req: &PatchRequest,
    schema: &ResourceSchema,
    opts: PatchOptions,
) -> Result<PatchOutcome, ScimError> {
    let Value::Object(original) = resource else {
        return Err(ScimError::internal(
            "the resource to patch is not a JSON object",
        ));
    };
    let mut work = original.clone();
    let mut cx = Cx {
        schema,
        opts,
        member_ops: Vec::new(),
        touched: Vec::with_capacity(req.operations.len()),
    };
    for (i, op) in req.operations.iter().enumerate() {
        apply_operation(&mut work, op, &mut cx).map_err(|e| at_operation(e, i))?;
    }
    // RFC 7644 §3.5.2.2: a required attribute that is removed or becomes unassigned is a
    // `mutability` error, whichever operation did it (a remove, or Entra's null/"" clear).
    for &(ext, def) in &cx.touched {
        if def.required
            && attr_value(original, ext, &def.name).is_some()
            && attr_value(&work, ext, &def.name).is_none()
        {
            return Err(ScimError::mutability(format!(
                "'{}' is required and cannot be removed",
                def.name
            )));
        }
    }
    settle_extensions(&mut work, schema);
    let delta = delta(
        original,
        &work,
        schema,
        &cx.touched,
        std::mem::take(&mut cx.member_ops),
    );
    Ok(PatchOutcome {
        resource: Value::Object(work),
        delta,
    })
}

struct Cx<'s> {
    schema: &'s ResourceSchema,
    opts: PatchOptions,
    member_ops: Vec<MemberOp>,
    /// Attributes an operation wrote or removed, as (extension URN, name). Everything else is
    /// the input's clone untouched, so the delta compares only these: a deep comparison of the
    /// whole resource cost more than the operations themselves (serde_json's ordered map
    /// hashes every key it compares).
    touched: Vec<(Option<&'s str>, &'s AttributeDef)>,
}

impl Cx<'_> {
    fn strict(&self) -> bool {
        self.opts.mode == PatchMode::Strict
    }
    fn external_members(&self, t: &Target) -> bool {
        self.opts.external_members
            && self.schema.kind == ResourceKind::Group
            && t.ext.is_none()
            && t.def.name == "members"
    }
}

/// What an operation (or one key of a pathless value) addresses.
/// `'s` is the schema's lifetime, `'p` the parsed path's.
struct Target<'s, 'p> {
    def: &'s AttributeDef,
    /// The extension URN (schema spelling) when the attribute lives in an extension object.
    ext: Option<&'s str>,
    filter: Option<&'p Filter>,
    sub: Option<&'s AttributeDef>,
}

impl Target<'_, '_> {
    fn read_only(&self) -> bool {
        self.def.is_read_only() || self.sub.is_some_and(|s| s.is_read_only())
    }
    fn describe(&self) -> String {
        let mut s = match self.ext {
            Some(u) => format!("{u}:{}", self.def.name),
            None => self.def.name.clone(),
        };
        if self.filter.is_some() {
            s.push_str("[…]");
        }
        if let Some(sd) = self.sub {
            s.push('.');
            s.push_str(&sd.name);
        }
        s
    }
}

/// `schema.resolve`, plus Entra's habit of naming an extension attribute without its URN
/// (`manager[value eq "id"]`, thomaspoignant/scim-patch#453) in IdpCompatible mode: an
/// unqualified name that is not a core attribute is looked up in the extensions, and taken when
/// exactly one of them has it.
fn resolve_attr<'a>(
    schema: &'a ResourceSchema,
    urn: Option<&str>,
    name: &str,
    mode: PatchMode,
) -> Option<ResolvedAttr<'a>> {
    if let Some(ra) = schema.resolve(urn, name) {
        return Some(ra);
    }
    if urn.is_some() || mode == PatchMode::Strict {
        return None;
    }
    let mut found = schema
        .extensions
        .iter()
        .filter_map(|(ext, _)| schema.resolve(Some(&ext.id), name));
    match (found.next(), found.next()) {
        (Some(ra), None) => Some(ra),
        _ => None,
    }
}

fn resolve_path<'s, 'p>(
    schema: &'s ResourceSchema,
    p: &'p PatchPath,
    mode: PatchMode,
) -> Result<Target<'s, 'p>, ScimError> {
    let ra = resolve_attr(schema, p.attr.urn.as_deref(), &p.attr.name, mode)
        .ok_or_else(|| ScimError::invalid_path(format!("unknown attribute '{}'", p.attr)))?;
    let sub_name = match (&p.attr.sub, &p.sub_attr) {
        (Some(_), Some(_)) => {
            return Err(ScimError::invalid_path(format!(
                "'{}' names two sub-attributes",
                p.attr
            )))
        }
        (Some(s), None) | (None, Some(s)) => Some(s.as_str()),
        (None, None) => None,
    };
    let sub = match sub_name {
        Some(n) => Some(ra.def.sub(n).ok_or_else(|| {
            ScimError::invalid_path(format!("'{}' has no sub-attribute '{n}'", ra.def.name))
        })?),
        None => None,
    };
    // A value filter selects elements of a complex value; Entra also filters the single-valued
    // manager (`manager[value eq "id"]`, thomaspoignant/scim-patch#453), so that is allowed.
    if p.filter.is_some() && ra.def.ty != AttrType::Complex {
        return Err(ScimError::invalid_path(format!(
            "'{}' is not complex and cannot take a value filter",
            ra.def.name
        )));
    }
    Ok(Target {
        def: ra.def,
        ext: match ra.location {
            AttrLocation::Core => None,
            AttrLocation::Extension(u) => Some(u),
        },
        filter: p.filter.as_ref(),
        sub,
    })
}

fn apply_operation(
    work: &mut Map<String, Value>,
    op: &PatchOperation,
    cx: &mut Cx,
) -> Result<(), ScimError> {
    match &op.path {
        Some(p) => {
            if let Some(u) = whole_extension(cx.schema, p) {
                return apply_whole_extension(work, op, u, cx);
            }
            let t = resolve_path(cx.schema, p, cx.opts.mode)?;
            // RFC 7643 §7: readOnly attributes SHALL NOT be modified; a path naming one is the
            // client asking to, unlike a readOnly key inside a pathless value (see below).
            if t.read_only() {
                return Err(ScimError::mutability(format!(
                    "'{}' is readOnly",
                    t.describe()
                )));
            }
            apply_target(work, op.op, &t, op.value.as_ref(), cx)
        }
        None => {
            if op.op == PatchOpKind::Remove {
                return Err(ScimError::no_target(
                    "'remove' needs a path (RFC 7644 §3.5.2.2)",
                ));
            }
            match &op.value {
                Some(Value::Object(obj)) => apply_pathless(work, op.op, obj, None, cx),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "'{}' without a path needs an object of attributes (RFC 7644 §3.5.2)",
                    op.op.as_str()
                ))),
                None => Err(ScimError::invalid_value(format!(
                    "'{}' needs a value",
                    op.op.as_str()
                ))),
            }
        }
    }
}

/// A pathless `add`/`replace` value (RFC 7644 §3.5.2.1/§3.5.2.3). Keys may also be attribute
/// paths, dotted (`name.givenName`) or URN-qualified (`urn:…:enterprise:2.0:User:employeeNumber`),
/// as Entra sends them with `aadOptscim062020` and its web validator always [ENTRA-COMPAT][MSQA-VAL2],
/// or an extension URN holding an object. Unknown keys are ignored (Okta sends `password`,
/// `groups`, Entra its ADSCIM URN: idp-behavior.md §3.4), and so are readOnly ones: Okta's
/// group rename carries the group's `id` [OKTA-REF].
fn apply_pathless(
    work: &mut Map<String, Value>,
    kind: PatchOpKind,
    obj: &Map<String, Value>,
    in_schema: Option<&str>,
    cx: &mut Cx,
) -> Result<(), ScimError> {
    let schema = cx.schema;
    for (key, v) in obj {
        if in_schema.is_none() {
            if let Some(u) = schema_urn(schema, key) {
                match v {
                    Value::Object(inner) => apply_pathless(work, kind, inner, Some(u), cx)?,
                    v if is_no_value(v) => clear_extension(work, kind, u, v, cx)?,
                    _ => {
                        return Err(ScimError::invalid_value(format!(
                            "'{key}' must hold an object of attributes"
                        )))
                    }
                }
                continue;
            }
        }
        if key.contains('[') {
            let full;
            let text = match in_schema {
                Some(u) => {
                    full = format!("{u}:{key}");
                    full.as_str()
                }
                None => key.as_str(),
            };
            let p = parse_path(text).map_err(as_invalid_path)?;
            let t = match resolve_path(schema, &p, cx.opts.mode) {
                Ok(t) => t,
                Err(e) if e.scim_type == Some(ScimType::InvalidPath) => continue,
                Err(e) => return Err(e),
            };
            if !t.read_only() {
                apply_target(work, kind, &t, Some(v), cx)?;
            }
            continue;
        }
        let (prefix, rest) = match in_schema {
            Some(u) => (Some(u), key.as_str()),
            None => split_urn(key),
        };
        let (name, sub) = match rest.split_once('.') {
            Some((n, s)) => (n, Some(s)),
            None => (rest, None),
        };
        let Some(ra) = resolve_attr(schema, prefix, name, cx.opts.mode) else {
            continue;
        };
        let sub = match sub {
            Some(s) => match ra.def.sub(s) {
                Some(sd) => Some(sd),
                None => continue,
            },
            None => None,
        };
        let t = Target {
            def: ra.def,
            ext: match ra.location {
                AttrLocation::Core => None,
                AttrLocation::Extension(u) => Some(u),
            },
            filter: None,
            sub,
        };
        if !t.read_only() {
            apply_target(work, kind, &t, Some(v), cx)?;
        }
    }
    Ok(())
}

/// `{"urn:…:enterprise:2.0:User": null}` in a pathless value: every writable attribute of the
/// extension gets the same no-value, so the usual clear rules apply to each.
fn clear_extension(
    work: &mut Map<String, Value>,
    kind: PatchOpKind,
    schema_urn: &str,
    v: &Value,
    cx: &mut Cx,
) -> Result<(), ScimError> {
    let Some(ext) = cx.schema.extension(schema_urn) else {
        return Ok(());
    };
    for def in &ext.attributes {
        if def.is_read_only() {
            continue;
        }
        let t = Target {
            def,
            ext: Some(ext.id.as_str()),
            filter: None,
            sub: None,
        };
        apply_target(work, kind, &t, Some(v), cx)?;
    }
    Ok(())
}

/// The schema URN (core or extension, schema spelling) that `key` names exactly, if any.
fn schema_urn<'s>(schema: &'s ResourceSchema, key: &str) -> Option<&'s str> {
    if schema.core.id.eq_ignore_ascii_case(key) {
        return Some(schema.core.id.as_str());
    }
    schema.extension(key).map(|s| s.id.as_str())
}

/// The extension schema a path names as a whole (`urn:…:enterprise:2.0:User`): the parser
/// reads it as attribute `User` of schema `urn:…:2.0`, so rejoin and look it up. scim2-tester
/// PATCHes every published schema this way.
fn whole_extension<'s>(schema: &'s ResourceSchema, p: &PatchPath) -> Option<&'s str> {
    if p.filter.is_some() || p.sub_attr.is_some() || p.attr.sub.is_some() {
        return None;
    }
    let urn = p.attr.urn.as_deref()?;
    schema
        .extension(&format!("{urn}:{}", p.attr.name))
        .map(|s| s.id.as_str())
}

/// `add`/`replace` with a whole extension as the path take an object of its attributes, merged
/// like a complex attribute (RFC 7644 §3.5.2.3: unspecified sub-attributes stay); `remove`
/// clears every writable attribute of the extension.
fn apply_whole_extension(
    work: &mut Map<String, Value>,
    op: &PatchOperation,
    schema_urn: &str,
    cx: &mut Cx,
) -> Result<(), ScimError> {
    match (op.op, &op.value) {
        (PatchOpKind::Remove, _) => {
            let Some(ext) = cx.schema.extension(schema_urn) else {
                return Ok(());
            };
            for def in ext.attributes.iter().filter(|d| !d.is_read_only()) {
                let t = Target {
                    def,
                    ext: Some(ext.id.as_str()),
                    filter: None,
                    sub: None,
                };
                apply_target(work, PatchOpKind::Remove, &t, None, cx)?;
            }
            Ok(())
        }
        (kind, Some(Value::Object(obj))) => apply_pathless(work, kind, obj, Some(schema_urn), cx),
        (kind, Some(v)) if is_no_value(v) => clear_extension(work, kind, schema_urn, v, cx),
        (kind, _) => Err(ScimError::invalid_value(format!(
            "'{}' on \"{schema_urn}\" needs an object of its attributes",
            kind.as_str()
        ))),
    }
}

fn apply_target<'s>(
    work: &mut Map<String, Value>,
    kind: PatchOpKind,
    t: &Target<'s, '_>,
    value: Option<&Value>,
    cx: &mut Cx<'s>,
) -> Result<(), ScimError> {
    if cx.external_members(t) {
        return record_member_op(kind, t, value, cx);
    }
    if !cx
        .touched
        .iter()
        .any(|&(e, d)| e == t.ext && std::ptr::eq(d, t.def))
    {
        cx.touched.push((t.ext, t.def));
    }
    match kind {
        PatchOpKind::Remove => remove(work, t, value),
        PatchOpKind::Add | PatchOpKind::Replace => {
            let raw = value.ok_or_else(|| {
                ScimError::invalid_value(format!("'{}' needs a value", kind.as_str()))
            })?;
            if is_clear(kind, raw) {
                return remove(work, t, None);
            }
            if is_no_value(raw) {
                // `add` of `[]`/`{}`: adding nothing changes nothing.
                return Ok(());
            }
            write(work, kind, t, raw, cx.strict())
        }
    }
}

/// Entra's SCIM_Null_Update sets attributes to `""` and to `null`, with `Add` or `Replace`
/// (whichever it picks: MS Q&A 1373350), and its manager test removes with "Replace with empty"
/// [ENTRA-LOGICAPP]. A `replace` with `[]` or `{}` replaces with nothing, which is a clear too.
fn is_clear(kind: PatchOpKind, raw: &Value) -> bool {
    match kind {
        PatchOpKind::Replace => is_no_value(raw),
        _ => raw.is_null() || raw.as_str() == Some(""),
    }
}

/// Runs `f` on the attribute's current value (taken out of the resource; `None` when absent)
/// and stores what it returns (`None` drops the attribute). Taking the value out instead of
/// cloning it keeps a 100,000-member list from being copied per operation; on error the
/// half-written work copy is discarded by `apply_patch`, so nothing leaks out.
fn with_attr<F>(work: &mut Map<String, Value>, t: &Target, f: F) -> Result<(), ScimError>
where
    F: FnOnce(Option<Value>) -> Result<Option<Value>, ScimError>,
{
    let container = match t.ext {
        None => work,
        Some(u) => {
            if !work.get(u).is_some_and(Value::is_object) {
                work.insert(u.to_string(), Value::Object(Map::new()));
            }
            let slot = work.get_mut(u);
            match slot.and_then(Value::as_object_mut) {
                Some(m) => m,
                None => return Err(ScimError::internal("extension slot is not an object")),
            }
        }
    };
    let name = t.def.name.as_str();
    // Written back through the same slot: one key lookup instead of two and no key copy, which
    // is a visible share of a small PATCH's cost.
    match container.get_mut(name) {
        Some(slot) => {
            let old = Some(std::mem::take(slot)).filter(|v| !v.is_null());
            match f(old)? {
                Some(v) => *slot = v,
                None => {
                    container.shift_remove(name);
                }
            }
        }
        None => {
            if let Some(v) = f(None)? {
                container.insert(t.def.name.clone(), v);
            }
        }
    }
    Ok(())
}

/// `add` and `replace` with a value that is not a clear.
fn write(
    work: &mut Map<String, Value>,
    kind: PatchOpKind,
    t: &Target,
    raw: &Value,
    strict: bool,
) -> Result<(), ScimError> {
    let def = t.def;
    with_attr(work, t, |old| match (t.filter, t.sub) {
        (None, None) if def.multi_valued => {
            let Some(Value::Array(new)) = coerce_writable(def, raw)? else {
                return Ok(old);
            };
            require_member_values(def, &new)?;
            // RFC 7644 §3.5.2.1: add appends, and a value already there is not added twice;
            // §3.5.2.3: replace without a filter replaces the whole list (deduplicated too).
            // Only an immutable list needs the old value kept for comparison; members never do.
            let immutable = def.mutability == Mutability::Immutable;
            let before = if immutable { old.clone() } else { None };
            let mut list = match kind {
                PatchOpKind::Add => into_list(old),
                _ => Vec::new(),
            };
            append_unique(def, &mut list, new);
            let list = non_empty(list);
            check_immutable(def, before.as_ref(), list.as_ref())?;
            Ok(list)
        }
        (None, None) if def.ty == AttrType::Complex => match coerce_writable(def, raw)? {
            Some(new) => merge_complex(def, old, new).map(Some),
            None => Ok(old),
        },
        (None, None) => {
            let new = coerce_writable(def, raw)?;
            if new.is_none() {
                return Ok(old);
            }
            check_immutable(def, old.as_ref(), new.as_ref())?;
            Ok(new)
        }
        (None, Some(sd)) => {
            let Some(v) = coerce_writable(sd, raw)? else {
                return Ok(old);
            };
            if !def.multi_valued {
                let mut obj = into_object(old);
                check_immutable(sd, obj.get(&sd.name), Some(&v))?;
                obj.insert(sd.name.clone(), v);
                return Ok(Some(Value::Object(obj)));
            }
            let mut list = into_list(old);
            // `add emails.value` adds a value (§3.5.2.1: "a new value is added"); overwriting
            // every address the user has would be the surprising reading.
            if kind == PatchOpKind::Add {
                let mut obj = Map::new();
                obj.insert(sd.name.clone(), v);
                let added = vec![Value::Object(obj)];
                require_member_values(def, &added)?;
                append_unique(def, &mut list, added);
                return Ok(non_empty(list));
            }
            // `replace emails.value` without a filter addresses every element (§3.5.2.3: "the
            // attribute and all values are replaced").
            if list.is_empty() {
                if strict {
                    return Err(ScimError::no_target(format!(
                        "'{}' has no values to replace",
                        t.describe()
                    )));
                }
                let mut obj = Map::new();
                obj.insert(sd.name.clone(), v);
                list.push(Value::Object(obj));
            } else {
                for e in list.iter_mut() {
                    let obj = element_object(e);
                    check_immutable(sd, obj.get(&sd.name), Some(&v))?;
                    obj.insert(sd.name.clone(), v.clone());
                }
            }
            settle_primary(&mut list, 0);
            Ok(Some(Value::Array(list)))
        }
        (Some(f), sub) => write_filtered(def, f, sub, old, kind, raw, strict, t),
    })
}

/// `attr[filter]` and `attr[filter].sub` with `add`/`replace` (RFC 7644 §3.5.2.3).
#[allow(clippy::too_many_arguments)]
fn write_filtered(
    def: &AttributeDef,
    f: &Filter,
    sub: Option<&AttributeDef>,
    old: Option<Value>,
    kind: PatchOpKind,
    raw: &Value,
    strict: bool,
    t: &Target,
) -> Result<Option<Value>, ScimError> {
    // The new content: a sub-attribute value, or a whole element (a one-element list counts as
    // its element: clients reuse the list shape they send for the unfiltered path).
    let content = match (sub, raw) {
        (Some(sd), _) => coerce_writable(sd, raw)?,
        (None, Value::Array(items)) if items.len() == 1 => coerce_single_writable(def, &items[0])?,
        (None, _) => coerce_single_writable(def, raw)?,
    };
    let Some(content) = content else {
        return Ok(old);
    };
    // A replaced element keeps what the filter selected it by (`addresses[type eq "work"]`
    // replaced by a value without `type` is still the work address).
    let replacement = match sub {
        None if kind == PatchOpKind::Replace => created_element(def, f, None, content.clone())?,
        _ => Value::Null,
    };
    let apply_to = |elem: &mut Value| -> Result<(), ScimError> {
        match sub {
            Some(sd) => {
                let obj = element_object(elem);
                check_immutable(sd, obj.get(&sd.name), Some(&content))?;
                obj.insert(sd.name.clone(), content.clone());
            }
            // "All matching record values SHALL be replaced" (§3.5.2.3); an `add` merges into
            // them instead, which is what an IdP sending Add for Replace means (MS Q&A 1373350).
            None => match kind {
                PatchOpKind::Add => {
                    let merged = merge_complex(def, Some(std::mem::take(elem)), content.clone())?;
                    *elem = merged;
                }
                _ => *elem = replacement.clone(),
            },
        }
        Ok(())
    };

    if !def.multi_valued {
        return match old {
            Some(mut v) if f.matches_element(&v, def) => {
                apply_to(&mut v)?;
                Ok(Some(v))
            }
            // Single-valued: the created value takes the place of the unmatched one.
            _ => {
                unmatched(kind, strict, t)?;
                created_element(def, f, sub, content).map(Some)
            }
        };
    }

    let mut list = into_list(old);
    let mut first_match = None;
    for (i, e) in list.iter_mut().enumerate() {
        if f.matches_element(e, def) {
            apply_to(e)?;
            first_match.get_or_insert(i);
        }
    }
    let new_from = match first_match {
        Some(i) => i,
        None => {
            unmatched(kind, strict, t)?;
            let created = created_element(def, f, sub, content)?;
            require_member_values(def, std::slice::from_ref(&created))?;
            list.push(created);
            list.len() - 1
        }
    };
    settle_primary(&mut list, new_from);
    Ok(non_empty(list))
}

/// A filter that matches nothing: RFC 7644 §3.5.2.3 says `noTarget` for replace; Entra expects
/// the element to be created (idp-behavior.md §2.3), and an `add` always creates.
fn unmatched(kind: PatchOpKind, strict: bool, t: &Target) -> Result<(), ScimError> {
    if kind == PatchOpKind::Replace && strict {
        Err(ScimError::no_target(format!(
            "the filter of '{}' matches no value",
            t.describe()
        )))
    } else {
        Ok(())
    }
}

/// The element Entra means by `replace emails[type eq "work"].value = x` when there is no work
/// email: `{"type":"work","value":x}`, built from the filter's `eq` conjuncts on sub-attributes
/// (other conjuncts cannot be turned into a value and are left out). Values the client sent win
/// over the filter's.
fn created_element(
    def: &AttributeDef,
    f: &Filter,
    sub: Option<&AttributeDef>,
    content: Value,
) -> Result<Value, ScimError> {
    let mut obj = match sub {
        Some(sd) => {
            let mut m = Map::new();
            m.insert(sd.name.clone(), content);
            m
        }
        None => match content {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        },
    };
    for c in f.conjuncts() {
        let Some((path, cv)) = c.as_equality() else {
            continue;
        };
        let Some(sd) = sub_of_filter_path(def, path) else {
            continue;
        };
        if obj.contains_key(&sd.name) || sd.is_read_only() {
            continue;
        }
        let Some(v) = comp_to_json(cv) else { continue };
        // `roles[primary eq "True"]`: Entra's string booleans coerce like any value; a
        // conjunct that does not fit the type is simply not copied.
        if let Ok(Some(v)) = coerce_single_writable(sd, &v) {
            obj.insert(sd.name.clone(), v);
        }
    }
    Ok(Value::Object(obj))
}

/// The sub-attribute of `def` a path inside `def[...]` names: `type`, or fully qualified
/// `emails.type` / `urn:…:User:emails.type`.
fn sub_of_filter_path<'d>(def: &'d AttributeDef, p: &AttrPath) -> Option<&'d AttributeDef> {
    match &p.sub {
        None => def.sub(&p.name),
        Some(s) if p.name.eq_ignore_ascii_case(&def.name) => def.sub(s),
        Some(_) => None,
    }
}

fn comp_to_json(c: &CompValue) -> Option<Value> {
    match c {
        CompValue::Null => None,
        CompValue::Bool(b) => Some(Value::Bool(*b)),
        CompValue::Number(n) => Some(Value::Number(n.clone())),
        CompValue::String(s) => Some(Value::String(s.clone())),
    }
}

/// `remove` (RFC 7644 §3.5.2.2), and the clears of `add`/`replace` with no value. A target with
/// nothing in it is a no-op success, as in the RFC's examples.
fn remove(
    work: &mut Map<String, Value>,
    t: &Target,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let def = t.def;
    with_attr(work, t, |old| {
        let Some(old) = old else { return Ok(None) };
        match (t.filter, t.sub) {
            (None, None) => {
                // Entra's `{"op":"Remove","path":"members","value":[{"value":"id"}]}` [ENTRA-DEV]
                // removes the listed values. The same reading is kept for any multi-valued
                // complex attribute (`emails`, `roles`): dropping all of them when the client
                // named some would be the one wrong answer. On other paths the value is ignored
                // and the path removed (AzureAD/SCIMReferenceCode#87).
                if let Some(v) = value.filter(|v| !is_no_value(v)) {
                    if def.multi_valued && def.ty == AttrType::Complex {
                        let listed = match coerce_writable(def, v)? {
                            Some(Value::Array(l)) => l,
                            _ => Vec::new(),
                        };
                        let mut list = into_list(Some(old));
                        remove_listed(def, &mut list, &listed);
                        return Ok(non_empty(list));
                    }
                }
                check_immutable(def, Some(&old), None)?;
                Ok(None)
            }
            (None, Some(sd)) => {
                if !def.multi_valued {
                    let mut obj = into_object(Some(old));
                    check_immutable(sd, obj.get(&sd.name), None)?;
                    obj.shift_remove(&sd.name);
                    return Ok(non_empty_object(obj));
                }
                let mut list = into_list(Some(old));
                for e in list.iter_mut() {
                    remove_sub(def, sd, e)?;
                }
                list.retain(|e| !dropped_element(def, e));
                Ok(non_empty(list))
            }
            (Some(f), None) => {
                if !def.multi_valued {
                    return Ok(if f.matches_element(&old, def) {
                        None
                    } else {
                        Some(old)
                    });
                }
                let mut list = into_list(Some(old));
                list.retain(|e| !f.matches_element(e, def));
                Ok(non_empty(list))
            }
            (Some(f), Some(sd)) => {
                if !def.multi_valued {
                    let mut v = old;
                    if f.matches_element(&v, def) {
                        remove_sub(def, sd, &mut v)?;
                        if dropped_element(def, &v) {
                            return Ok(None);
                        }
                    }
                    return Ok(Some(v));
                }
                let mut list = into_list(Some(old));
                for e in list.iter_mut() {
                    if f.matches_element(e, def) {
                        remove_sub(def, sd, e)?;
                    }
                }
                list.retain(|e| !dropped_element(def, e));
                Ok(non_empty(list))
            }
        }
    })
}

fn remove_sub(def: &AttributeDef, sd: &AttributeDef, e: &mut Value) -> Result<(), ScimError> {
    let _ = def;
    if let Some(obj) = e.as_object_mut() {
        check_immutable(sd, obj.get(&sd.name), None)?;
        obj.shift_remove(&sd.name);
    }
    Ok(())
}

/// An element left empty, or one that lost its `value` while its attribute has one, is gone:
/// `{"type":"work"}` is not an email. This is what Entra's SCIM_Null_Update on
/// `emails[type eq "work"].value` and `remove emails[type eq "work"].value` mean.
fn dropped_element(def: &AttributeDef, e: &Value) -> bool {
    match e.as_object() {
        Some(obj) => obj.is_empty() || (def.sub("value").is_some() && !obj.contains_key("value")),
        None => false,
    }
}

/// Drops from `list` the elements `listed` names (see [`same_listed`]). Listed values are hashed,
/// so Entra removing thousands of members from a large group stays linear, not quadratic.
fn remove_listed(def: &AttributeDef, list: &mut Vec<Value>, listed: &[Value]) {
    let Some(vd) = def.sub("value") else {
        list.retain(|e| !listed.iter().any(|l| same_listed(def, l, e)));
        return;
    };
    let mut keys = HashSet::new();
    let mut unkeyed = Vec::new();
    for l in listed {
        match l.get("value").and_then(|v| value_key(vd, v)) {
            Some(k) => {
                keys.insert(k);
            }
            None => unkeyed.push(l),
        }
    }
    list.retain(|e| {
        let by_key = e
            .get("value")
            .and_then(|v| value_key(vd, v))
            .is_some_and(|k| keys.contains(&k));
        !(by_key || unkeyed.iter().any(|l| same_listed(def, l, e)))
    });
}

/// A string `value` as compared (RFC 7643 §2.2): as is when `caseExact`, else lowercased.
fn value_key<'v>(vd: &AttributeDef, v: &'v Value) -> Option<Cow<'v, str>> {
    let s = v.as_str()?;
    if vd.case_exact || !s.chars().any(char::is_uppercase) {
        Some(Cow::Borrowed(s))
    } else {
        Some(Cow::Owned(s.to_lowercase()))
    }
}

/// Whether the listed element `l` of a remove-with-value names the existing element `e`: by
/// `value` when the listed one has a value (Entra sends `{"$ref":null,"value":"id"}`), else by
/// equality of the whole element.
fn same_listed(def: &AttributeDef, l: &Value, e: &Value) -> bool {
    match (l.get("value"), def.sub("value")) {
        (Some(lv), Some(vd)) => e.get("value").is_some_and(|ev| values_equal(vd, lv, ev)),
        _ => element_equal(def, l, e),
    }
}

/// Group members are identified by `value` alone (RFC 7643 §4.2): re-adding a member with
/// another `display` is still the same member. Other elements are duplicates when equal.
fn identified_by_value(def: &AttributeDef) -> bool {
    def.name == "members" && def.sub("value").is_some()
}

fn append_unique(def: &AttributeDef, list: &mut Vec<Value>, new: Vec<Value>) {
    let start = list.len();
    if identified_by_value(def) {
        // Hashing keeps adding to a 100,000-member group linear; the set borrows the ids, so
        // the keepers are chosen first and pushed after.
        let mut seen: HashSet<&str> = list
            .iter()
            .filter_map(|e| e.get("value").and_then(Value::as_str))
            .collect();
        let keep: Vec<bool> = new
            .iter()
            .map(|e| match e.get("value").and_then(Value::as_str) {
                Some(id) => seen.insert(id),
                None => true,
            })
            .collect();
        drop(seen);
        list.extend(
            new.into_iter()
                .zip(keep)
                .filter_map(|(e, k)| k.then_some(e)),
        );
    } else if let Some(vd) = def.sub("value").filter(|_| list.len() + new.len() > 32) {
        // Equal elements have equal values: only a known value needs the full comparison, which
        // keeps a large add (thousands of roles) from going quadratic.
        let mut known: HashSet<String> = list
            .iter()
            .filter_map(|e| e.get("value").and_then(|v| value_key(vd, v)))
            .map(Cow::into_owned)
            .collect();
        for e in new {
            let key = e
                .get("value")
                .and_then(|v| value_key(vd, v))
                .map(Cow::into_owned);
            let maybe_dup = key.as_ref().is_none_or(|k| known.contains(k));
            if maybe_dup && list.iter().any(|x| element_equal(def, x, &e)) {
                continue;
            }
            if let Some(k) = key {
                known.insert(k);
            }
            list.push(e);
        }
    } else {
        for e in new {
            if !list.iter().any(|x| element_equal(def, x, &e)) {
                list.push(e);
            }
        }
    }
    if def.ty == AttrType::Complex && list.len() > start {
        settle_primary(list, start);
    }
}

/// A member without `value` names no one (RFC 7643 §4.2: `value` is the member's id).
fn require_member_values(def: &AttributeDef, list: &[Value]) -> Result<(), ScimError> {
    if identified_by_value(def) && list.iter().any(|e| e.get("value").is_none()) {
        return Err(ScimError::invalid_value(
            "every element of 'members' needs a 'value' (the member's id)",
        ));
    }
    Ok(())
}

/// `add`/`replace` of a single-valued complex attribute: sub-attributes not given are left
/// unchanged (RFC 7644 §3.5.2.1, §3.5.2.3). Except when both old and new carry a different
/// `value`: the value points at something else (Entra re-pointing `manager` with a bare id,
/// SCIM-SDK#686), and the old `$ref`/`displayName` would describe the wrong user.
fn merge_complex(def: &AttributeDef, old: Option<Value>, new: Value) -> Result<Value, ScimError> {
    let (mut o, n) = match (old, new) {
        (Some(Value::Object(o)), Value::Object(n)) => (o, n),
        (old, new) => {
            check_immutable(def, old.as_ref(), Some(&new))?;
            return Ok(new);
        }
    };
    if let (Some(vd), Some(a), Some(b)) = (def.sub("value"), o.get("value"), n.get("value")) {
        if !values_equal(vd, a, b) {
            let (old, new) = (Value::Object(o), Value::Object(n));
            check_immutable(def, Some(&old), Some(&new))?;
            return Ok(new);
        }
    }
    for (k, v) in n {
        if let Some(sd) = def.sub(&k) {
            check_immutable(sd, o.get(&k), Some(&v))?;
        }
        o.insert(k, v);
    }
    Ok(Value::Object(o))
}

/// RFC 7643 §7: an immutable attribute may be set when it has no value, never changed after.
/// For a single-valued complex attribute the rule applies to each immutable sub-attribute.
fn check_immutable(
    def: &AttributeDef,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(old) = old.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    if def.mutability == Mutability::Immutable {
        let same = new.is_some_and(|n| values_equal(def, old, n));
        if !same {
            return Err(ScimError::mutability(format!(
                "'{}' is immutable and already set",
                def.name
            )));
        }
        return Ok(());
    }
    if def.ty == AttrType::Complex && !def.multi_valued {
        if let Some(o) = old.as_object() {
            for sd in def
                .sub_attributes
                .iter()
                .filter(|s| s.mutability == Mutability::Immutable)
            {
                let nv = new.and_then(|n| n.get(&sd.name));
                check_immutable(sd, o.get(&sd.name), nv)?;
            }
        }
    }
    Ok(())
}

fn into_list(v: Option<Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        // A stored single value where a list belongs: keep it as the first element.
        Some(other) => vec![other],
    }
}

fn into_object(v: Option<Value>) -> Map<String, Value> {
    match v {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn element_object(e: &mut Value) -> &mut Map<String, Value> {
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    match e {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn non_empty(list: Vec<Value>) -> Option<Value> {
    if list.is_empty() {
        None
    } else {
        Some(Value::Array(list))
    }
}

fn non_empty_object(obj: Map<String, Value>) -> Option<Value> {
    if obj.is_empty() {
        None
    } else {
        Some(Value::Object(obj))
    }
}

/// Operations on `members` of a group whose members are stored elsewhere: recorded, in order,
/// for the connector to apply. The same parsing and validation as in-resource members.
fn record_member_op(
    kind: PatchOpKind,
    t: &Target,
    value: Option<&Value>,
    cx: &mut Cx,
) -> Result<(), ScimError> {
    let def = t.def;
    if let Some(sd) = t.sub {
        // Every sub-attribute of a member is immutable (RFC 7643 §8.7.1), and without the
        // members at hand there is no telling whether a write changes one.
        return Err(ScimError::mutability(format!(
            "'members.{}' is immutable",
            sd.name
        )));
    }
    let members = |v: &Value| -> Result<Vec<Value>, ScimError> {
        let list = match coerce_writable(def, v)? {
            Some(Value::Array(l)) => l,
            _ => Vec::new(),
        };
        require_member_values(def, &list)?;
        Ok(list)
    };
    let removal = |f: &Filter| match member_ids(f) {
        Some(ids) => MemberOp::Remove(ids),
        None => MemberOp::RemoveWhere(f.clone()),
    };
    let ops = &mut cx.member_ops;
    match kind {
        PatchOpKind::Remove => match (t.filter, value.filter(|v| !is_no_value(v))) {
            (Some(f), _) => ops.push(removal(f)),
            (None, Some(v)) => {
                let ids = members(v)?
                    .iter()
                    .filter_map(|m| m.get("value").and_then(Value::as_str).map(str::to_string))
                    .collect::<Vec<_>>();
                if !ids.is_empty() {
                    ops.push(MemberOp::Remove(ids));
                }
            }
            (None, None) => ops.push(MemberOp::RemoveAll),
        },
        PatchOpKind::Add | PatchOpKind::Replace => {
            let raw = value.ok_or_else(|| {
                ScimError::invalid_value(format!("'{}' needs a value", kind.as_str()))
            })?;
            if is_clear(kind, raw) {
                ops.push(match t.filter {
                    Some(f) => removal(f),
                    None => MemberOp::RemoveAll,
                });
                return Ok(());
            }
            let list = members(raw)?;
            match (kind, t.filter) {
                (PatchOpKind::Replace, None) => ops.push(MemberOp::Replace(list)),
                // Replacing the members a filter selects: those go, the given ones come
                // (created when nothing matched, as in IdpCompatible mode; Strict cannot
                // check for a match without the members).
                (PatchOpKind::Replace, Some(f)) => {
                    ops.push(removal(f));
                    if !list.is_empty() {
                        ops.push(MemberOp::Add(list));
                    }
                }
                _ => {
                    if !list.is_empty() {
                        ops.push(MemberOp::Add(list));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The member ids a filter selects when it is `value eq "id"` or an `or` chain of those.
fn member_ids(f: &Filter) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    let mut stack = vec![f];
    while let Some(f) = stack.pop() {
        match f {
            Filter::Or(a, b) => {
                stack.push(b);
                stack.push(a);
            }
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: CompValue::String(s),
            } if path.urn.is_none()
                && match &path.sub {
                    None => path.name.eq_ignore_ascii_case("value"),
                    Some(sub) => {
                        path.name.eq_ignore_ascii_case("members")
                            && sub.eq_ignore_ascii_case("value")
                    }
                } =>
            {
                ids.push(s.clone())
            }
            _ => return None,
        }
    }
    Some(ids)
}

/// Keeps extension objects and `schemas` in step (RFC 7643 §3: `schemas` lists the extensions a
/// resource uses): an extension left empty is dropped with its URN, one that gained attributes
/// has its URN listed. Entra never lists the extension URN itself [ENTRA-ATTR].
fn settle_extensions(work: &mut Map<String, Value>, schema: &ResourceSchema) {
    for (ext, _) in &schema.extensions {
        let id = ext.id.as_str();
        let present = match work.get(id) {
            None => continue,
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => false,
        };
        if !present {
            work.shift_remove(id);
        }
        if let Some(Value::Array(schemas)) = work.get_mut("schemas") {
            let listed = schemas
                .iter()
                .position(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(id)));
            match (present, listed) {
                (true, None) => schemas.push(Value::String(id.to_string())),
                (false, Some(i)) => {
                    schemas.remove(i);
                }
                _ => {}
            }
        }
    }
}

/// What actually changed, by comparing the result with the input: an operation undone by a later
/// one, or Okta's rename re-sent with every membership update [OKTA-REF], changes nothing.
fn delta(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    schema: &ResourceSchema,
    touched: &[(Option<&str>, &AttributeDef)],
    member_ops: Vec<MemberOp>,
) -> Delta {
    let mut changed = BTreeSet::new();
    for &(ext, def) in touched {
        let name = def.name.as_str();
        if attr_value(before, ext, name) != attr_value(after, ext, name) {
            changed.insert(match ext {
                Some(u) => format!("{u}:{name}"),
                None => name.to_string(),
            });
        }
    }
    let mut d = Delta {
        changed,
        member_ops,
        ..Delta::default()
    };
    if schema.kind == ResourceKind::Group && d.changed.contains("members") {
        let (b, a) = (
            member_id_list(before.get("members")),
            member_id_list(after.get("members")),
        );
        let (bs, as_): (HashSet<&str>, HashSet<&str>) =
            (b.iter().copied().collect(), a.iter().copied().collect());
        d.members_added = a
            .iter()
            .filter(|x| !bs.contains(*x))
            .map(|x| x.to_string())
            .collect();
        d.members_removed = b
            .iter()
            .filter(|x| !as_.contains(*x))
            .map(|x| x.to_string())
            .collect();
    }
    d
}

fn attr_value<'m>(m: &'m Map<String, Value>, ext: Option<&str>, name: &str) -> Option<&'m Value> {
    let container = match ext {
        None => m,
        Some(u) => m.get(u)?.as_object()?,
    };
    container.get(name).filter(|v| !v.is_null())
}

fn member_id_list(members: Option<&Value>) -> Vec<&str> {
    members
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|e| e.get("value").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENT: &str = urn::ENTERPRISE_USER;
    const BABS: &str = "2819c223-7f76-453a-919d-413861904646";
    const MANDY: &str = "902c246b-6245-4190-8e05-00816be7344a";
    const JAMES: &str = "08e1d05d-121c-4561-8b96-473d93df9210";

    fn user() -> Value {
        json!({
            "schemas": [urn::CORE_USER, ENT],
            "id": BABS,
            "externalId": "00ujl29u0le5T6Aj10h7",
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs Jensen",
            "active": true,
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
            "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza",
                           "locality": "Hollywood", "region": "CA", "postalCode": "91608",
                           "country": "USA"}],
            ENT: {
                "employeeNumber": "701984",
                "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d",
                            "$ref": "../Users/26118915-6090-4610-87e4-49d8ca9f808d",
                            "displayName": "John Smith"}
            },
            "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z",
                     "lastModified": "2011-05-13T04:42:34Z"}
        })
    }

    /// A user as Entra creates it: no extension, no manager.
    fn plain_user() -> Value {
        json!({
            "schemas": [urn::CORE_USER],
            "id": "5b50",
            "userName": "Test_User_ab6490ee@testuser.com",
            "active": true,
            "emails": [{"value": "home@x.com", "type": "home"}],
            "meta": {"resourceType": "User"}
        })
    }

    fn group() -> Value {
        json!({
            "schemas": [urn::CORE_GROUP],
            "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
            "displayName": "Tour Guides",
            "members": [
                {"value": BABS, "display": "Babs Jensen", "$ref": format!("https://example.com/v2/Users/{BABS}")},
                {"value": MANDY, "display": "Mandy Pepperidge"}
            ],
            "meta": {"resourceType": "Group"}
        })
    }

    fn body(ops: Value) -> Value {
        json!({"schemas": [urn::PATCH_OP], "Operations": ops})
    }

    fn schema_for(res: &Value) -> ResourceSchema {
        if res["schemas"][0] == json!(urn::CORE_GROUP) {
            ResourceSchema::group()
        } else {
            ResourceSchema::user()
        }
    }

    fn try_with(res: &Value, ops: Value, opts: PatchOptions) -> Result<PatchOutcome, ScimError> {
        let req = PatchRequest::from_json(&body(ops))?;
        let before = res.clone();
        let out = apply_patch(res, &req, &schema_for(res), opts);
        assert_eq!(res, &before, "the input resource must never change");
        out
    }

    fn run(res: &Value, ops: Value) -> PatchOutcome {
        try_with(res, ops, PatchOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// scim2-tester PATCHes each published schema by its URN as a whole.
    #[test]
    fn whole_extension_as_path() {
        let out = run(
            &plain_user(),
            json!([{"op": "add", "path": ENT, "value": {"employeeNumber": "42", "Department": "R&D"}}]),
        );
        assert_eq!(
            out.resource[ENT],
            json!({"employeeNumber": "42", "department": "R&D"})
        );
        assert!(out.resource["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(ENT)));
        let out = run(
            &user(),
            json!([{"op": "replace", "path": ENT, "value": {"employeeNumber": "7"}}]),
        );
        assert_eq!(out.resource[ENT]["employeeNumber"], "7");
        assert_eq!(
            out.resource[ENT]["manager"]["value"], "26118915-6090-4610-87e4-49d8ca9f808d",
            "replace on a complex target leaves unspecified sub-attributes (RFC 7644 §3.5.2.3)"
        );
        let out = run(&user(), json!([{"op": "remove", "path": ENT}]));
        assert!(out.resource.get(ENT).is_none());
        assert!(!out.resource["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(ENT)));
        assert!(out
            .delta
            .changed
            .iter()
            .any(|c| c.contains("employeeNumber")));
        let e = fail(
            &user(),
            json!([{"op": "add", "path": ENT, "value": "x"}]),
            PatchMode::Strict,
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    }

    fn fail(res: &Value, ops: Value, mode: PatchMode) -> ScimError {
        let opts = PatchOptions {
            mode,
            ..PatchOptions::default()
        };
        match try_with(res, ops, opts) {
            Ok(o) => panic!("expected an error, got {}", o.resource),
            Err(e) => e,
        }
    }

    fn fail_type(res: &Value, ops: Value) -> ScimType {
        fail(res, ops, PatchMode::IdpCompatible).scim_type.unwrap()
    }

    fn changed(o: &PatchOutcome) -> Vec<&str> {
        o.delta.changed.iter().map(String::as_str).collect()
    }

    fn external(res: &Value, ops: Value) -> PatchOutcome {
        let opts = PatchOptions {
            external_members: true,
            ..PatchOptions::default()
        };
        try_with(res, ops, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    // ---- RFC 7644 §3.5.2.1 add -------------------------------------------------------------

    #[test]
    fn rfc_add_member() {
        let ops = json!([{"op": "add", "path": "members", "value": [{
            "display": "James Smith",
            "$ref": format!("https://example.com/v2/Users/{JAMES}"),
            "value": JAMES}]}]);
        let o = run(&group(), ops.clone());
        let members = o.resource["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[2]["value"], json!(JAMES));
        assert_eq!(changed(&o), ["members"]);
        assert_eq!(o.delta.members_added, [JAMES]);
        assert!(o.delta.members_removed.is_empty());
        // Re-adding the same member (by value, whatever its display) changes nothing.
        let again = run(&o.resource, ops);
        assert_eq!(again.resource, o.resource);
        assert!(again.delta.is_empty());
        let same_id = run(
            &group(),
            json!([{"op": "add", "path": "members", "value": [{"value": BABS, "display": "B"}]}]),
        );
        assert_eq!(same_id.resource, group());
    }

    #[test]
    fn rfc_pathless_add_emails_and_nickname() {
        let o = run(
            &user(),
            json!([{"op": "add", "value": {
                "emails": [{"value": "babs@jensen.org", "type": "home"}],
                "nickname": "Babs"}}]),
        );
        assert_eq!(
            o.resource["emails"],
            json!([{"value": "bjensen@example.com", "type": "work", "primary": true},
                   {"value": "babs@jensen.org", "type": "home"}])
        );
        assert_eq!(o.resource["nickName"], json!("Babs"));
        assert!(
            o.resource.get("nickname").is_none(),
            "canonical spelling only"
        );
        assert_eq!(changed(&o), ["emails", "nickName"]);
    }

    // ---- RFC 7644 §3.5.2.2 remove ----------------------------------------------------------

    #[test]
    fn rfc_remove_one_member() {
        let o = run(
            &group(),
            json!([{"op": "remove", "path": format!("members[value eq \"{BABS}\"]")}]),
        );
        assert_eq!(
            o.resource["members"],
            json!([{"value": MANDY, "display": "Mandy Pepperidge"}])
        );
        assert_eq!(o.delta.members_removed, [BABS]);
        assert_eq!(changed(&o), ["members"]);
    }

    #[test]
    fn rfc_remove_all_members() {
        let o = run(&group(), json!([{"op": "remove", "path": "members"}]));
        assert!(o.resource.get("members").is_none());
        assert_eq!(o.delta.members_removed, [BABS, MANDY]);
        assert_eq!(changed(&o), ["members"]);
        // Removing what is not there succeeds and changes nothing (the RFC's examples, §3.4 of
        // idp-behavior.md).
        let again = run(&o.resource, json!([{"op": "remove", "path": "members"}]));
        assert!(again.delta.is_empty());
    }

    #[test]
    fn rfc_remove_multiple_members_and_replace_all() {
        let o = run(
            &group(),
            json!([
                {"op": "remove", "path": format!("members[value eq \"{BABS}\"]")},
                {"op": "remove", "path": format!("members[value eq \"{MANDY}\"]")}
            ]),
        );
        assert!(
            o.resource.get("members").is_none(),
            "an emptied attribute is dropped"
        );
        assert_eq!(o.delta.members_removed, [BABS, MANDY]);

        let o = run(
            &group(),
            json!([
                {"op": "remove", "path": "members"},
                {"op": "add", "path": "members", "value": [{
                    "display": "James Smith", "value": JAMES,
                    "$ref": format!("https://example.com/v2/Users/{JAMES}")}]}
            ]),
        );
        assert_eq!(o.resource["members"].as_array().unwrap().len(), 1);
        assert_eq!(o.delta.members_added, [JAMES]);
        assert_eq!(o.delta.members_removed, [BABS, MANDY]);
    }

    #[test]
    fn rfc_remove_emails_by_complex_filter() {
        let mut u = user();
        u["emails"] = json!([
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"},
            {"value": "b@other.org", "type": "work"}
        ]);
        let o = run(
            &u,
            json!([{"op": "remove", "path": "emails[type eq \"work\" and value ew \"example.com\"]"}]),
        );
        assert_eq!(
            o.resource["emails"],
            json!([{"value": "babs@jensen.org", "type": "home"},
                   {"value": "b@other.org", "type": "work"}])
        );
        assert_eq!(changed(&o), ["emails"]);
    }

    // ---- RFC 7644 §3.5.2.3 replace ---------------------------------------------------------

    #[test]
    fn rfc_replace_members() {
        let o = run(
            &group(),
            json!([{"op": "replace", "path": "members", "value": [
                {"display": "Babs Jensen", "value": BABS,
                 "$ref": format!("https://example.com/v2/Users/{BABS}")},
                {"display": "James Smith", "value": JAMES,
                 "$ref": format!("https://example.com/v2/Users/{JAMES}")}
            ]}]),
        );
        let ids: Vec<_> = o.resource["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [BABS, JAMES]);
        assert_eq!(o.delta.members_added, [JAMES]);
        assert_eq!(o.delta.members_removed, [MANDY]);
    }

    #[test]
    fn rfc_replace_address_by_filter() {
        let new_address = json!({
            "type": "work", "streetAddress": "911 Universal City Plaza", "locality": "Hollywood",
            "region": "CA", "postalCode": "91608", "country": "US",
            "formatted": "911 Universal City Plaza\nHollywood, CA 91608 US", "primary": true});
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": new_address}]),
        );
        assert_eq!(o.resource["addresses"], json!([new_address]));
        assert_eq!(changed(&o), ["addresses"]);
    }

    #[test]
    fn rfc_replace_address_sub_attribute() {
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "addresses[type eq \"work\"].streetAddress",
                    "value": "1010 Broadway Ave"}]),
        );
        assert_eq!(
            o.resource["addresses"][0]["streetAddress"],
            json!("1010 Broadway Ave")
        );
        assert_eq!(o.resource["addresses"][0]["locality"], json!("Hollywood"));
        assert_eq!(changed(&o), ["addresses"]);
    }

    #[test]
    fn rfc_pathless_replace() {
        let o = run(
            &user(),
            json!([{"op": "replace", "value": {
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true},
                           {"value": "babs@jensen.org", "type": "home"}],
                "nickname": "Babs"}}]),
        );
        assert_eq!(o.resource["emails"].as_array().unwrap().len(), 2);
        assert_eq!(o.resource["nickName"], json!("Babs"));
        assert_eq!(changed(&o), ["emails", "nickName"]);
    }

    #[test]
    fn replace_complex_merges_sub_attributes() {
        // §3.5.2.3: "Sub-attributes that are not specified in the value are left unchanged".
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs"}}]),
        );
        assert_eq!(
            o.resource["name"],
            json!({"givenName": "Babs", "familyName": "Jensen"})
        );
    }

    // ---- Okta (idp-behavior.md §1.4, §1.6) -------------------------------------------------

    #[test]
    fn okta_deactivate_and_reactivate() {
        let o = run(
            &user(),
            json!([{"op": "replace", "value": {"active": false}}]),
        );
        assert_eq!(o.resource["active"], json!(false));
        assert_eq!(changed(&o), ["active"]);
        let back = run(
            &o.resource,
            json!([{"op": "replace", "value": {"active": true}}]),
        );
        assert_eq!(back.resource, user());
        assert_eq!(changed(&back), ["active"]);
    }

    #[test]
    fn okta_group_rename_with_read_only_id_is_idempotent() {
        let ops = json!([{"op": "replace", "value": {"id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b",
                                                     "displayName": "Test SCIMv2"}}]);
        let o = run(&group(), ops.clone());
        assert_eq!(o.resource["displayName"], json!("Test SCIMv2"));
        assert_eq!(
            o.resource["id"],
            group()["id"],
            "the id comes from the URL, not the body"
        );
        assert_eq!(changed(&o), ["displayName"]);
        let again = run(&o.resource, ops);
        assert_eq!(again.resource, o.resource);
        assert!(again.delta.is_empty(), "{:?}", again.delta);
    }

    #[test]
    fn okta_membership_update_in_one_patch() {
        let o = run(
            &group(),
            json!([
                {"op": "remove", "path": format!("members[value eq \"{MANDY}\"]")},
                {"op": "add", "path": "members",
                 "value": [{"value": JAMES, "display": "test.user@okta.local"}]}
            ]),
        );
        assert_eq!(
            o.resource["members"],
            json!([
                {"value": BABS, "display": "Babs Jensen", "$ref": format!("https://example.com/v2/Users/{BABS}")},
                {"value": JAMES, "display": "test.user@okta.local"}
            ])
        );
        assert_eq!(o.delta.members_added, [JAMES]);
        assert_eq!(o.delta.members_removed, [MANDY]);
    }

    #[test]
    fn okta_full_push_replace() {
        let o = run(
            &group(),
            json!([{"op": "replace", "path": "members", "value": [
                {"value": JAMES, "display": "james"}, {"value": MANDY, "display": "Mandy Pepperidge"}]}]),
        );
        assert_eq!(
            o.resource["members"],
            json!([{"value": JAMES, "display": "james"}, {"value": MANDY, "display": "Mandy Pepperidge"}])
        );
        assert_eq!(o.delta.members_added, [JAMES]);
        assert_eq!(o.delta.members_removed, [BABS]);
    }

    #[test]
    fn okta_password_sync() {
        let o = run(
            &user(),
            json!([{"op": "replace", "value": {"password": "1mz050nq"}}]),
        );
        assert_eq!(o.resource["password"], json!("1mz050nq"));
        assert_eq!(changed(&o), ["password"]);
    }

    // ---- Entra ID (idp-behavior.md §2.3–2.5) -----------------------------------------------

    #[test]
    fn entra_replace_work_email_and_family_name() {
        let o = run(
            &user(),
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
            ]),
        );
        assert_eq!(
            o.resource["emails"],
            json!([{"value": "updatedEmail@microsoft.com", "type": "work", "primary": true}])
        );
        assert_eq!(
            o.resource["name"],
            json!({"givenName": "Barbara", "familyName": "updatedFamilyName"})
        );
        assert_eq!(changed(&o), ["emails", "name"]);
    }

    #[test]
    fn entra_replace_user_name_and_employee_number() {
        let o = run(
            &user(),
            json!([
                {"op": "Replace", "path": "userName", "value": "5b50c7fa@testuser.com"},
                {"op": "Replace", "path": format!("{ENT}:employeeNumber"), "value": "Eqpj"}
            ]),
        );
        assert_eq!(o.resource["userName"], json!("5b50c7fa@testuser.com"));
        assert_eq!(o.resource[ENT]["employeeNumber"], json!("Eqpj"));
        assert_eq!(
            changed(&o),
            [
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                "userName"
            ]
        );
    }

    #[test]
    fn entra_disable_with_string_false() {
        let o = run(
            &user(),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        );
        assert_eq!(o.resource["active"], json!(false));
        assert_eq!(changed(&o), ["active"]);
        let o = run(
            &o.resource,
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
        );
        assert_eq!(o.resource["active"], json!(true));
        // With the aadOptscim062020 flag: a real boolean, lowercase op.
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "active", "value": false}]),
        );
        assert_eq!(o.resource["active"], json!(false));
    }

    #[test]
    fn entra_add_single_valued_string() {
        let o = run(
            &user(),
            json!([{"op": "Add", "path": "nickName", "value": "Babs"}]),
        );
        assert_eq!(o.resource["nickName"], json!("Babs"));
        assert_eq!(changed(&o), ["nickName"]);
    }

    #[test]
    fn entra_flag_style_pathless_with_dotted_and_urn_keys() {
        let o = run(
            &plain_user(),
            json!([{"op": "replace", "value": {
                "displayName": "Bjfe", "name.givenName": "Kkom", "name.familyName": "Unua",
                format!("{ENT}:employeeNumber"): "Aklq"}}]),
        );
        assert_eq!(o.resource["displayName"], json!("Bjfe"));
        assert_eq!(
            o.resource["name"],
            json!({"givenName": "Kkom", "familyName": "Unua"})
        );
        assert_eq!(o.resource[ENT], json!({"employeeNumber": "Aklq"}));
        assert_eq!(
            o.resource["schemas"],
            json!([urn::CORE_USER, ENT]),
            "the extension is listed once used"
        );
        assert_eq!(
            changed(&o),
            [
                "displayName",
                "name",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
            ]
        );
        // The web validator's form, keys in any case.
        let o = run(
            &user(),
            json!([{"op": "replace", "value": {"NAME.givenname": "Oswaldo", "name.familyName": "Rylan"}}]),
        );
        assert_eq!(
            o.resource["name"],
            json!({"givenName": "Oswaldo", "familyName": "Rylan"})
        );
    }

    #[test]
    fn pathless_extension_object_keyed_by_urn() {
        let o = run(
            &plain_user(),
            json!([{"op": "add", "value": {
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"Department": "Tour Operations", "bogus": 1}}}]),
        );
        assert_eq!(o.resource[ENT], json!({"department": "Tour Operations"}));
        assert_eq!(changed(&o), [format!("{ENT}:department")]);
    }

    #[test]
    fn entra_remove_members_with_value_list() {
        let o = run(
            &group(),
            json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": MANDY}]}]),
        );
        assert_eq!(o.resource["members"].as_array().unwrap().len(), 1);
        assert_eq!(o.resource["members"][0]["value"], json!(BABS));
        assert_eq!(o.delta.members_removed, [MANDY]);
        // Flag form: remove by filter, lowercase.
        let o = run(
            &group(),
            json!([{"op": "remove", "path": format!("members[value eq \"{MANDY}\"]")}]),
        );
        assert_eq!(o.delta.members_removed, [MANDY]);
    }

    #[test]
    fn entra_add_several_members_in_one_op() {
        let o = run(
            &group(),
            json!([{"op": "Add", "path": "members", "value": [
                {"$ref": null, "value": JAMES}, {"$ref": null, "value": "f648f8d5"}, {"value": BABS}]}]),
        );
        assert_eq!(o.delta.members_added, [JAMES, "f648f8d5"]);
        assert_eq!(
            o.resource["members"][2],
            json!({"value": JAMES}),
            "null $ref is no value"
        );
    }

    #[test]
    fn entra_manager_add_bare_string() {
        let o = run(
            &plain_user(),
            json!([{"op": "add", "path": format!("{ENT}:manager"), "value": "2c2fc7d4"}]),
        );
        assert_eq!(o.resource[ENT]["manager"], json!({"value": "2c2fc7d4"}));
        assert_eq!(changed(&o), [format!("{ENT}:manager")]);
        // Re-pointing to another manager drops the old $ref and displayName with it.
        let o = run(
            &user(),
            json!([{"op": "Replace", "path": format!("{ENT}:manager"), "value": "2c2fc7d4"}]),
        );
        assert_eq!(o.resource[ENT]["manager"], json!({"value": "2c2fc7d4"}));
        // Entra re-sends the manager PATCH after create (azure-docs#45885): idempotent.
        let again = run(
            &o.resource,
            json!([{"op": "add", "path": format!("{ENT}:manager"), "value": "2c2fc7d4"}]),
        );
        assert!(again.delta.is_empty());
    }

    #[test]
    fn entra_manager_legacy_list_form() {
        let o = run(
            &plain_user(),
            json!([{"op": "Add", "path": format!("{ENT}:manager"),
                    "value": [{"$ref": "../Users/2c2f", "value": "2c2f"}]}]),
        );
        assert_eq!(
            o.resource[ENT]["manager"],
            json!({"$ref": "../Users/2c2f", "value": "2c2f"})
        );
    }

    #[test]
    fn entra_manager_remove_by_filter() {
        let id = "26118915-6090-4610-87e4-49d8ca9f808d";
        let o = run(
            &user(),
            json!([{"op": "remove", "path": format!("manager[value eq \"{id}\"]")}]),
        );
        assert!(o.resource[ENT].get("manager").is_none());
        assert_eq!(o.resource[ENT]["employeeNumber"], json!("701984"));
        assert_eq!(changed(&o), [format!("{ENT}:manager")]);
        // URN-qualified, and a non-matching id is a no-op.
        let o = run(
            &user(),
            json!([{"op": "remove", "path": format!("{ENT}:manager[value eq \"other\"]")}]),
        );
        assert!(o.delta.is_empty());
    }

    #[test]
    fn entra_manager_replace_with_empty_drops_the_extension() {
        let mut u = user();
        u[ENT] = json!({"manager": {"value": "2c2f"}});
        let o = run(
            &u,
            json!([{"op": "Replace", "path": format!("{ENT}:manager"), "value": ""}]),
        );
        assert!(
            o.resource.get(ENT).is_none(),
            "an empty extension object is dropped"
        );
        assert_eq!(o.resource["schemas"], json!([urn::CORE_USER]));
        assert_eq!(changed(&o), [format!("{ENT}:manager")]);
    }

    #[test]
    fn entra_roles_json_string_in_value() {
        let o = run(
            &plain_user(),
            json!([{"op": "Add", "path": "roles", "value": [
                {"value": "{\"id\":\"7ee0e0d7\",\"value\":\"25\",\"displayName\":\"Role1234\"}"}]}]),
        );
        assert_eq!(
            o.resource["roles"],
            json!([{"value": "25", "display": "Role1234"}])
        );
        assert_eq!(changed(&o), ["roles"]);
    }

    #[test]
    fn entra_roles_primary_filter_creates_with_boolean() {
        let o = run(
            &plain_user(),
            json!([{"op": "Replace", "path": "roles[primary eq \"True\"].value", "value": "Admin"}]),
        );
        assert_eq!(
            o.resource["roles"],
            json!([{"value": "Admin", "primary": true}])
        );
        let o = run(
            &o.resource,
            json!([{"op": "Replace", "path": "roles[primary eq \"True\"].value", "value": "User"}]),
        );
        assert_eq!(
            o.resource["roles"],
            json!([{"value": "User", "primary": true}])
        );
    }

    #[test]
    fn entra_null_update_clears_with_empty_string_and_null() {
        for op in ["Replace", "Add"] {
            for v in [json!(""), json!(null)] {
                let o = run(
                    &user(),
                    json!([{"op": op, "path": "displayName", "value": v}]),
                );
                assert!(o.resource.get("displayName").is_none(), "{op} {v}");
                assert_eq!(changed(&o), ["displayName"]);
                let o = run(
                    &user(),
                    json!([{"op": op, "path": "name.givenName", "value": v}]),
                );
                assert_eq!(o.resource["name"], json!({"familyName": "Jensen"}));
                let o = run(&user(), json!([{"op": op, "value": {"displayName": v}}]));
                assert!(o.resource.get("displayName").is_none());
            }
        }
        // Clearing the work email's value removes the work email.
        let o = run(
            &user(),
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": ""}]),
        );
        assert!(o.resource.get("emails").is_none());
        // `add` of an empty list adds nothing; `replace` with one empties the attribute.
        assert!(run(
            &user(),
            json!([{"op": "add", "path": "emails", "value": []}])
        )
        .delta
        .is_empty());
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "emails", "value": []}]),
        );
        assert!(o.resource.get("emails").is_none());
    }

    #[test]
    fn entra_replace_unmatched_filter_creates_or_is_no_target() {
        let ops = json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "x@work.com"}]);
        let o = run(&plain_user(), ops.clone());
        assert_eq!(
            o.resource["emails"],
            json!([{"value": "home@x.com", "type": "home"}, {"value": "x@work.com", "type": "work"}])
        );
        assert_eq!(changed(&o), ["emails"]);
        let e = fail(&plain_user(), ops, PatchMode::Strict);
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        // Whole element: the filter's eq values fill what the value leaves out.
        let o = run(
            &plain_user(),
            json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": {"locality": "Oslo"}}]),
        );
        assert_eq!(
            o.resource["addresses"],
            json!([{"locality": "Oslo", "type": "work"}])
        );
    }

    #[test]
    fn entra_remove_with_value_on_a_filtered_path_removes_the_path() {
        let o = run(
            &user(),
            json!([{"op": "Remove", "path": "emails[type eq \"work\"].value", "value": "bjensen@example.com"}]),
        );
        assert!(o.resource.get("emails").is_none());
        let o = run(
            &user(),
            json!([{"op": "Remove", "path": "displayName", "value": "whatever"}]),
        );
        assert!(o.resource.get("displayName").is_none());
    }

    #[test]
    fn remove_sub_attribute_of_matching_elements() {
        let o = run(
            &user(),
            json!([{"op": "remove", "path": "addresses[type eq \"work\"].region"}]),
        );
        assert!(o.resource["addresses"][0].get("region").is_none());
        assert_eq!(o.resource["addresses"][0]["locality"], json!("Hollywood"));
    }

    #[test]
    fn unknown_and_read_only_keys_in_pathless_values_are_ignored() {
        let o = run(
            &user(),
            json!([{"op": "replace", "value": {
                "id": "x", "meta": {"created": "2020-01-01T00:00:00Z"}, "schemas": ["urn:x"],
                "groups": [{"value": "g"}], "foo": 1, "name.nope": "x",
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/User": {"x": 1},
                "urn:unknown:schema:attr": "x", "title": "Tour Guide"}}]),
        );
        let mut want = user();
        want["title"] = json!("Tour Guide");
        assert_eq!(o.resource, want);
        assert_eq!(changed(&o), ["title"]);
    }

    #[test]
    fn add_primary_demotes_the_others() {
        let o = run(
            &user(),
            json!([{"op": "add", "path": "emails", "value": [{"value": "new@x.com", "type": "other", "primary": "True"}]}]),
        );
        assert_eq!(o.resource["emails"][0]["primary"], json!(false));
        assert_eq!(o.resource["emails"][1]["primary"], json!(true));
    }

    #[test]
    fn immutable_may_be_set_when_absent_never_changed() {
        // Every member sub-attribute is immutable (RFC 7643 §8.7.1).
        let o = run(
            &group(),
            json!([{"op": "add", "path": format!("members[value eq \"{MANDY}\"].type"), "value": "User"}]),
        );
        assert_eq!(o.resource["members"][1]["type"], json!("User"));
        let e = fail(
            &group(),
            json!([{"op": "replace", "path": format!("members[value eq \"{MANDY}\"].display"), "value": "M"}]),
            PatchMode::IdpCompatible,
        );
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
        // Writing the value it already has is not a change.
        run(
            &group(),
            json!([{"op": "replace", "path": format!("members[value eq \"{MANDY}\"].display"),
                              "value": "Mandy Pepperidge"}]),
        );
    }

    // ---- external members ------------------------------------------------------------------

    #[test]
    fn external_members_are_recorded_in_order() {
        let mut g = group();
        g.as_object_mut().unwrap().remove("members");
        let o = external(
            &g,
            json!([
                {"op": "add", "path": "members", "value": [{"value": JAMES, "display": "J"}, {"$ref": null, "value": "u2"}]},
                {"op": "remove", "path": format!("members[value eq \"{MANDY}\"]")},
                {"op": "remove", "path": "members[value eq \"a\" or value eq \"b\"]"},
                {"op": "remove", "path": "members[display sw \"x\"]"},
                {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "f648"}]},
                {"op": "remove", "path": "members"},
                {"op": "replace", "path": "members", "value": [{"value": BABS}]},
                {"op": "replace", "value": {"members": [{"value": "p"}], "displayName": "Ops"}},
                {"op": "add", "value": {"members": [{"value": "q"}]}}
            ]),
        );
        let filter = crate::scim::filter::parse_filter("display sw \"x\"").unwrap();
        assert_eq!(
            o.delta.member_ops,
            vec![
                MemberOp::Add(vec![
                    json!({"value": JAMES, "display": "J"}),
                    json!({"value": "u2"})
                ]),
                MemberOp::Remove(vec![MANDY.into()]),
                MemberOp::Remove(vec!["a".into(), "b".into()]),
                MemberOp::RemoveWhere(filter),
                MemberOp::Remove(vec!["f648".into()]),
                MemberOp::RemoveAll,
                MemberOp::Replace(vec![json!({"value": BABS})]),
                MemberOp::Replace(vec![json!({"value": "p"})]),
                MemberOp::Add(vec![json!({"value": "q"})]),
            ]
        );
        assert!(o.resource.get("members").is_none());
        assert!(o.delta.members_added.is_empty() && o.delta.members_removed.is_empty());
        assert_eq!(changed(&o), ["displayName"]);
    }

    #[test]
    fn external_members_errors_record_nothing() {
        let mut g = group();
        g.as_object_mut().unwrap().remove("members");
        let opts = PatchOptions {
            external_members: true,
            ..PatchOptions::default()
        };
        let e = try_with(
            &g,
            json!([{"op": "add", "path": "members", "value": [{"value": "a"}]},
                   {"op": "add", "path": "members", "value": [{"display": "no id"}]}]),
            opts,
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        assert!(e.detail.starts_with("Operations[1]"), "{}", e.detail);
    }

    // ---- errors ----------------------------------------------------------------------------

    #[test]
    fn malformed_bodies() {
        let parse = |b: Value| PatchRequest::from_json(&b).unwrap_err().scim_type.unwrap();
        assert_eq!(parse(json!([])), ScimType::InvalidSyntax);
        assert_eq!(
            parse(json!({"schemas": [urn::PATCH_OP]})),
            ScimType::InvalidSyntax
        );
        assert_eq!(
            parse(json!({"schemas": [urn::PATCH_OP], "Operations": []})),
            ScimType::InvalidSyntax
        );
        assert_eq!(
            parse(json!({"schemas": [urn::PATCH_OP], "Operations": {}})),
            ScimType::InvalidSyntax
        );
        assert_eq!(
            parse(json!({"schemas": [urn::CORE_USER], "Operations": [{"op": "add", "value": {}}]})),
            ScimType::InvalidSyntax
        );
        assert_eq!(
            parse(body(json!([{"op": "move", "path": "x"}]))),
            ScimType::InvalidValue
        );
        assert_eq!(
            parse(body(json!([{"path": "userName"}]))),
            ScimType::InvalidSyntax
        );
        assert_eq!(parse(body(json!(["add"]))), ScimType::InvalidSyntax);
        assert_eq!(
            parse(body(json!([{"op": "add", "path": 5, "value": 1}]))),
            ScimType::InvalidPath
        );
        assert_eq!(
            parse(body(
                json!([{"op": "add", "path": "emails[type eq", "value": 1}])
            )),
            ScimType::InvalidPath
        );
        assert_eq!(
            parse(body(
                json!([{"op": "add", "path": "emails[type zz \"w\"]", "value": 1}])
            )),
            ScimType::InvalidPath
        );
        // Case-insensitive member names and op names are fine.
        let r = PatchRequest::from_json(&json!({"SCHEMAS": [urn::PATCH_OP], "operations": [{"OP": "REPLACE", "Path": "active", "Value": false}]})).unwrap();
        assert_eq!(r.operations[0].op, PatchOpKind::Replace);
    }

    #[test]
    fn remove_without_path_is_no_target() {
        assert_eq!(
            fail_type(&user(), json!([{"op": "remove"}])),
            ScimType::NoTarget
        );
        assert_eq!(
            fail_type(&user(), json!([{"op": "Remove", "value": {"title": "x"}}])),
            ScimType::NoTarget
        );
    }

    #[test]
    fn read_only_paths_are_mutability_errors() {
        for (path, v) in [
            ("id", json!("x")),
            ("meta.created", json!("2020-01-01T00:00:00Z")),
            ("meta", json!({"resourceType": "User"})),
            ("groups", json!([{"value": "g"}])),
        ] {
            for op in ["add", "replace", "remove"] {
                let t = fail_type(&user(), json!([{"op": op, "path": path, "value": v}]));
                assert_eq!(t, ScimType::Mutability, "{op} {path}");
            }
        }
        let t = fail_type(
            &user(),
            json!([{"op": "replace", "path": format!("{ENT}:manager.displayName"), "value": "X"}]),
        );
        assert_eq!(t, ScimType::Mutability);
    }

    #[test]
    fn invalid_values() {
        for (path, v) in [
            ("active", json!("maybe")),
            ("userName", json!(5)),
            ("userName", json!({"a": "b"})),
            ("name", json!("Ann")),
            ("emails", json!([{"value": true}])),
            ("emails[type eq \"work\"].primary", json!("yes")),
        ] {
            assert_eq!(
                fail_type(
                    &user(),
                    json!([{"op": "replace", "path": path, "value": v}])
                ),
                ScimType::InvalidValue,
                "{path}"
            );
        }
        assert_eq!(
            fail_type(
                &user(),
                json!([{"op": "replace", "value": {"active": "maybe"}}])
            ),
            ScimType::InvalidValue
        );
        assert_eq!(
            fail_type(&user(), json!([{"op": "replace", "value": "x"}])),
            ScimType::InvalidValue
        );
        assert_eq!(
            fail_type(&user(), json!([{"op": "add", "path": "title"}])),
            ScimType::InvalidValue
        );
        assert_eq!(
            fail_type(
                &group(),
                json!([{"op": "add", "path": "members", "value": [{"display": "x"}]}])
            ),
            ScimType::InvalidValue
        );
    }

    #[test]
    fn unknown_path_attributes() {
        for path in [
            "nope",
            "name.nope",
            "urn:x:y:userName",
            format!("{ENT}:nope").as_str(),
            "userName[value eq \"x\"]",
            "emails[type eq \"w\"].nope",
        ] {
            assert_eq!(
                fail_type(
                    &user(),
                    json!([{"op": "replace", "path": path, "value": "x"}])
                ),
                ScimType::InvalidPath,
                "{path}"
            );
        }
        assert_eq!(
            fail_type(&user(), json!([{"op": "remove", "path": "nope"}])),
            ScimType::InvalidPath
        );
    }

    #[test]
    fn strict_replace_on_unmatched_filter_is_no_target() {
        let e = fail(
            &user(),
            json!([{"op": "replace", "path": "addresses[type eq \"home\"].locality", "value": "Oslo"}]),
            PatchMode::Strict,
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        // Remove with no match stays a success in Strict mode.
        let opts = PatchOptions {
            mode: PatchMode::Strict,
            external_members: false,
        };
        let o = try_with(
            &user(),
            json!([{"op": "remove", "path": "addresses[type eq \"home\"]"}]),
            opts,
        )
        .unwrap();
        assert!(o.delta.is_empty());
    }

    #[test]
    fn removing_a_required_attribute_is_mutability() {
        // RFC 7644 §3.5.2.2, whichever way it goes.
        for ops in [
            json!([{"op": "remove", "path": "userName"}]),
            json!([{"op": "Replace", "path": "userName", "value": ""}]),
            json!([{"op": "replace", "value": {"userName": null}}]),
        ] {
            assert_eq!(fail_type(&user(), ops), ScimType::Mutability);
        }
        assert_eq!(
            fail_type(&group(), json!([{"op": "remove", "path": "displayName"}])),
            ScimType::Mutability
        );
        // Removed and set again within one PATCH is fine: only the result counts.
        let o = run(
            &user(),
            json!([{"op": "remove", "path": "userName"},
                   {"op": "add", "path": "userName", "value": "new@x.com"}]),
        );
        assert_eq!(o.resource["userName"], json!("new@x.com"));
    }

    #[test]
    fn one_bad_operation_fails_the_whole_patch() {
        let e = fail(
            &user(),
            json!([{"op": "replace", "path": "displayName", "value": "New"},
                   {"op": "replace", "path": "id", "value": "x"}]),
            PatchMode::IdpCompatible,
        );
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
        assert!(e.detail.starts_with("Operations[1]: "), "{}", e.detail);
    }

    #[test]
    fn unqualified_extension_names_only_in_idp_mode() {
        let o = run(
            &plain_user(),
            json!([{"op": "add", "value": {"employeeNumber": "42"}}]),
        );
        assert_eq!(o.resource[ENT], json!({"employeeNumber": "42"}));
        let e = fail(
            &user(),
            json!([{"op": "remove", "path": "manager[value eq \"x\"]"}]),
            PatchMode::Strict,
        );
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    }

    #[test]
    fn delta_ignores_an_undone_change() {
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "title", "value": "x"},
                   {"op": "remove", "path": "title"},
                   {"op": "replace", "path": "displayName", "value": "Babs Jensen"}]),
        );
        assert_eq!(o.resource, user());
        assert!(o.delta.is_empty());
    }

    #[test]
    fn add_to_a_sub_attribute_of_a_list_adds_a_value() {
        let o = run(
            &user(),
            json!([{"op": "add", "path": "emails.value", "value": "n@x.com"}]),
        );
        assert_eq!(
            o.resource["emails"],
            json!([{"value": "bjensen@example.com", "type": "work", "primary": true},
                   {"value": "n@x.com"}])
        );
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "emails.type", "value": "other"}]),
        );
        assert_eq!(o.resource["emails"][0]["type"], json!("other"));
        let e = fail(
            &plain_user(),
            json!([{"op": "replace", "path": "addresses.locality", "value": "Oslo"}]),
            PatchMode::Strict,
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        assert_eq!(
            fail_type(
                &group(),
                json!([{"op": "add", "path": "members.display", "value": "x"}])
            ),
            ScimType::InvalidValue
        );
    }

    #[test]
    fn filtered_replace_keeps_what_the_filter_selected() {
        let o = run(
            &user(),
            json!([{"op": "replace", "path": "addresses[type eq \"work\"]", "value": [{"locality": "Oslo"}]}]),
        );
        assert_eq!(
            o.resource["addresses"],
            json!([{"locality": "Oslo", "type": "work"}])
        );
        let o = run(
            &group(),
            json!([{"op": "add", "path": format!("members[value eq \"{MANDY}\"]"), "value": [{"type": "User"}]}]),
        );
        assert_eq!(
            o.resource["members"][1],
            json!({"value": MANDY, "display": "Mandy Pepperidge", "type": "User"})
        );
    }

    #[test]
    fn large_lists_stay_linear_and_correct() {
        let n = 20_000;
        let members: Vec<Value> = (0..n).map(|i| json!({"value": format!("u{i}")})).collect();
        let mut g = group();
        g["members"] = Value::Array(members);
        let listed: Vec<Value> = (0..n)
            .step_by(4)
            .map(|i| json!({"value": format!("u{i}")}))
            .collect();
        let o = run(
            &g,
            json!([{"op": "Remove", "path": "members", "value": listed}]),
        );
        assert_eq!(o.resource["members"].as_array().unwrap().len(), n - n / 4);
        assert_eq!(o.delta.members_removed.len(), n / 4);
        assert_eq!(o.delta.members_removed[1], "u4");

        // Non-member lists compare values per caseExact: role values are case-insensitive.
        let roles: Vec<Value> = (0..100)
            .map(|i| json!({"value": format!("Role{i}")}))
            .collect();
        let mut u = plain_user();
        u["roles"] = Value::Array(roles);
        let o = run(
            &u,
            json!([{"op": "add", "path": "roles", "value": [{"value": "ROLE7"}, {"value": "Role100"}, {"value": "role100"}]}]),
        );
        let got = o.resource["roles"].as_array().unwrap();
        assert_eq!(got.len(), 101);
        assert_eq!(got[100], json!({"value": "Role100"}));
        let o = run(
            &u,
            json!([{"op": "remove", "path": "roles", "value": [{"value": "ROLE7"}, {"value": "nope"}]}]),
        );
        assert_eq!(o.resource["roles"].as_array().unwrap().len(), 99);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Operations that succeed on `user()` whatever ran before them.
        fn good_ops() -> Vec<Value> {
            vec![
                json!({"op": "replace", "value": {"active": false}}),
                json!({"op": "Replace", "path": "active", "value": "True"}),
                json!({"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "w@x.com"}),
                json!({"op": "add", "path": "emails", "value": [{"value": "h@x.com", "type": "home", "primary": true}]}),
                json!({"op": "remove", "path": "emails[type eq \"home\"]"}),
                json!({"op": "Replace", "path": "name.familyName", "value": "F"}),
                json!({"op": "remove", "path": "name"}),
                json!({"op": "replace", "value": {"name.givenName": "G", format!("{ENT}:employeeNumber"): "7"}}),
                json!({"op": "add", "path": format!("{ENT}:manager"), "value": "m1"}),
                json!({"op": "remove", "path": "manager[value eq \"m1\"]"}),
                json!({"op": "Replace", "path": format!("{ENT}:manager"), "value": ""}),
                json!({"op": "Add", "path": "roles", "value": [{"value": "{\"value\":\"25\"}"}]}),
                json!({"op": "Replace", "path": "displayName", "value": null}),
                json!({"op": "remove", "path": "addresses[type eq \"work\"].region"}),
                json!({"op": "replace", "path": "addresses[type eq \"home\"]", "value": {"locality": "Oslo"}}),
            ]
        }

        /// Operations that fail on `user()` whatever ran before them.
        fn bad_ops() -> Vec<Value> {
            vec![
                json!({"op": "replace", "path": "id", "value": "x"}),
                json!({"op": "remove"}),
                json!({"op": "replace", "path": "active", "value": "maybe"}),
                json!({"op": "add", "path": "nope", "value": 1}),
                json!({"op": "add", "path": "title"}),
                json!({"op": "replace", "path": "name", "value": "Ann"}),
                json!({"op": "replace", "value": {"userName": 5}}),
                json!({"op": "add", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}),
            ]
        }

        fn arb_json() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just("value".to_string()),
                Just("type".to_string()),
                Just("primary".to_string()),
                Just("display".to_string()),
                Just("$ref".to_string()),
                Just("members".to_string()),
                Just("emails".to_string()),
                Just("name.givenName".to_string()),
                Just("active".to_string()),
                Just("id".to_string()),
                Just(ENT.to_string()),
                Just(format!("{ENT}:manager")),
                Just("emails[type eq \"work\"].value".to_string()),
                "[a-zA-Z.:\\[\\]\" ]{0,12}",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                prop_oneof![
                    Just("True".to_string()),
                    Just("".to_string()),
                    "\\PC{0,8}",
                    Just("{\"value\":\"1\"}".to_string())
                ]
                .prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((key.clone(), inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn arb_path() -> impl Strategy<Value = Option<String>> {
            prop::option::of(prop_oneof![
                Just("members".to_string()),
                Just("members[value eq \"a\"]".to_string()),
                Just("members[value eq \"a\"].display".to_string()),
                Just("emails".to_string()),
                Just("emails[type eq \"work\"].value".to_string()),
                Just("emails.primary".to_string()),
                Just("name".to_string()),
                Just("name.givenName".to_string()),
                Just("active".to_string()),
                Just(format!("{ENT}:manager")),
                Just("manager[value eq \"x\"].value".to_string()),
                Just("roles[primary eq \"True\"].value".to_string()),
                Just("displayName".to_string()),
                Just("id".to_string()),
                Just("addresses[type eq \"work\" or primary pr]".to_string()),
                "\\PC{0,20}",
            ])
        }

        fn arb_op() -> impl Strategy<Value = Value> {
            (
                prop_oneof![
                    Just("add"),
                    Just("Remove"),
                    Just("replace"),
                    Just("REPLACE"),
                    Just("copy")
                ],
                arb_path(),
                prop::option::of(arb_json()),
            )
                .prop_map(|(op, path, value)| {
                    let mut o = Map::new();
                    o.insert("op".into(), json!(op));
                    if let Some(p) = path {
                        o.insert("path".into(), json!(p));
                    }
                    if let Some(v) = value {
                        o.insert("value".into(), v);
                    }
                    Value::Object(o)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn one_bad_op_anywhere_fails_and_changes_nothing(
                good in prop::collection::vec(0..good_ops().len(), 0..6),
                bad in 0..bad_ops().len(),
                at in 0..7usize,
            ) {
                let pool = good_ops();
                let mut ops: Vec<Value> = good.iter().map(|&i| pool[i].clone()).collect();
                ops.insert(at.min(ops.len()), bad_ops()[bad].clone());
                let u = user();
                let before = u.clone();
                let res = PatchRequest::from_json(&body(Value::Array(ops)))
                    .and_then(|req| apply_patch(&u, &req, &ResourceSchema::user(), PatchOptions::default()));
                prop_assert!(res.is_err());
                prop_assert_eq!(&u, &before);
            }

            #[test]
            fn good_ops_succeed_and_stay_canonical(
                good in prop::collection::vec(0..good_ops().len(), 1..8),
            ) {
                let pool = good_ops();
                let ops: Vec<Value> = good.iter().map(|&i| pool[i].clone()).collect();
                let schema = ResourceSchema::user();
                let req = PatchRequest::from_json(&body(Value::Array(ops))).unwrap();
                let out = apply_patch(&user(), &req, &schema, PatchOptions::default());
                let out = out.map_err(|e| TestCaseError::fail(e.to_string()))?;
                for (k, v) in out.resource.as_object().unwrap() {
                    if k == "schemas" { continue; }
                    if let Some(ext) = schema.extension(k) {
                        prop_assert_eq!(k.as_str(), ext.id.as_str());
                        for sk in v.as_object().unwrap().keys() {
                            prop_assert!(ext.attributes.iter().any(|a| &a.name == sk), "{}", sk);
                        }
                    } else {
                        let def = schema.resolve(None, k).unwrap();
                        prop_assert_eq!(k.as_str(), def.def.name.as_str());
                    }
                }
                // The delta names exactly the attributes whose values differ.
                let before = user();
                for name in &out.delta.changed {
                    let (b, a) = match name.strip_prefix(&format!("{ENT}:")) {
                        Some(sk) => (before[ENT].get(sk), out.resource.get(ENT).and_then(|e| e.get(sk))),
                        None => (before.get(name), out.resource.get(name)),
                    };
                    prop_assert_ne!(b, a, "{}", name);
                }
                // …and every attribute whose value differs is named.
                let empty = Map::new();
                let flat = |r: &Value| -> Vec<(String, Value)> {
                    let mut out = Vec::new();
                    for (k, v) in r.as_object().unwrap() {
                        if k == "schemas" || k == "meta" {
                            continue;
                        }
                        if k == ENT {
                            for (sk, sv) in v.as_object().unwrap_or(&empty) {
                                out.push((format!("{ENT}:{sk}"), sv.clone()));
                            }
                        } else {
                            out.push((k.clone(), v.clone()));
                        }
                    }
                    out
                };
                let (fb, fa) = (flat(&before), flat(&out.resource));
                for (k, v) in fb.iter().chain(fa.iter()) {
                    let other = if fb.iter().any(|(bk, bv)| bk == k && bv == v) { &fa } else { &fb };
                    let same = other.iter().any(|(ok, ov)| ok == k && ov == v);
                    prop_assert!(same || out.delta.changed.contains(k), "{} changed but not reported", k);
                }
            }

            #[test]
            fn random_patches_never_panic(
                ops in prop::collection::vec(arb_op(), 1..5),
                strict in any::<bool>(),
                ext_members in any::<bool>(),
            ) {
                let b = body(Value::Array(ops));
                let Ok(req) = PatchRequest::from_json(&b) else { return Ok(()) };
                let opts = PatchOptions {
                    mode: if strict { PatchMode::Strict } else { PatchMode::IdpCompatible },
                    external_members: ext_members,
                };
                let _ = apply_patch(&user(), &req, &ResourceSchema::user(), opts);
                let _ = apply_patch(&group(), &req, &ResourceSchema::group(), opts);
            }
        }
    }
}

//! Filter evaluation against canonical resources (RFC 7644 §3.4.2.2) and schema validation.
//!
//! Resources are canonical JSON objects: keys are exactly the schema's attribute names, extension
//! attributes sit in an object keyed by the extension URN. Names in the filter are resolved
//! case-insensitively through the schema (RFC 7643 §2.1), so the lookups into the resource are
//! exact. Evaluation does not allocate on the common paths (ASCII strings); case folding of
//! non-ASCII text is the exception.

use super::ast::{AttrPath, CompValue, CompareOp, Filter};
use crate::scim::error::ScimError;
use crate::scim::schema::{AttrLocation, AttrType, AttributeDef, ResourceSchema};
use chrono::DateTime;
use serde_json::Value;
use std::cmp::Ordering;
use std::sync::LazyLock;

/// `schemas` (RFC 7643 §3) is on every resource but listed in no schema; filters such as
/// `schemas eq "urn:…:enterprise:2.0:User"` (RFC 7644 §3.4.2.2) need it resolvable. URNs compare
/// case-insensitively (RFC 8141 §3.1 for the `urn:` and NID parts; lenient for the rest).
static SCHEMAS_ATTR: LazyLock<AttributeDef> = LazyLock::new(|| {
    AttributeDef::string("schemas", "The schema URNs the resource conforms to.").multi()
});

/// Where names in a filter are resolved: a whole resource, or one element of a multi-valued (or
/// complex) attribute inside `attr[...]`.
#[derive(Clone, Copy)]
enum Scope<'v, 's> {
    Resource(&'v Value, &'s ResourceSchema),
    Element(&'v Value, &'s AttributeDef),
}

/// A path resolved in a scope: the attribute's value (if any), the definition of the attribute it
/// names, and the definition of the leaf values to compare (itself, a named sub-attribute, or the
/// implicit `value` sub-attribute of a complex attribute).
struct Located<'v, 's> {
    value: Option<&'v Value>,
    attr: &'s AttributeDef,
    /// `None` for a complex attribute without a `value` sub-attribute (`name`, `meta`): it can be
    /// tested with `pr` but not compared.
    leaf: Option<&'s AttributeDef>,
    leaf_is_sub: bool,
}

fn resolve_top<'s>(
    schema: &'s ResourceSchema,
    path: &AttrPath,
) -> Option<(Option<&'s str>, &'s AttributeDef)> {
    match schema.resolve(path.urn.as_deref(), &path.name) {
        Some(r) => {
            let ext = match r.location {
                AttrLocation::Core => None,
                AttrLocation::Extension(u) => Some(u),
            };
            Some((ext, r.def))
        }
        None => {
            let core_or_bare = path
                .urn
                .as_deref()
                .is_none_or(|u| u.eq_ignore_ascii_case(&schema.core.id));
            if core_or_bare && path.name.eq_ignore_ascii_case("schemas") {
                return Some((None, &*SCHEMAS_ATTR));
            }
            // Entra's legacy `manager eq 2819…` (idp-behavior.md §2.3) names an enterprise
            // attribute without its URN; the core schema wins (RFC 7644 §3.10), extensions follow.
            if path.urn.is_none() {
                return schema.extensions.iter().find_map(|(ext, _)| {
                    ext.attr(&path.name).map(|def| (Some(ext.id.as_str()), def))
                });
            }
            None
        }
    }
}

/// The leaf compared for `attr` / `attr.sub`: a complex attribute without a sub-attribute compares
/// its `value` sub-attribute (`emails co "@x"`, Entra's `manager eq 2819…`).
fn leaf_of<'s>(attr: &'s AttributeDef, sub: Option<&str>) -> Option<(&'s AttributeDef, bool)> {
    match sub {
        Some(s) => attr.sub(s).map(|d| (d, true)),
        None if attr.ty == AttrType::Complex => attr.sub("value").map(|d| (d, true)),
        None => Some((attr, false)),
    }
}

impl<'v, 's> Scope<'v, 's> {
    fn locate(self, path: &AttrPath) -> Option<Located<'v, 's>> {
        match self {
            Scope::Resource(resource, schema) => {
                let (ext, attr) = resolve_top(schema, path)?;
                let container = match ext {
                    None => Some(resource),
                    Some(urn) => resource.get(urn),
                };
                let (leaf, leaf_is_sub) = match (leaf_of(attr, path.sub.as_deref()), &path.sub) {
                    (Some((leaf, is_sub)), _) => (Some(leaf), is_sub),
                    (None, Some(_)) => return None,
                    (None, None) => (None, false),
                };
                Some(Located {
                    value: container.and_then(|c| c.get(&attr.name)),
                    attr,
                    leaf,
                    leaf_is_sub,
                })
            }
            Scope::Element(element, parent) => {
                // Sub-attributes have no sub-attributes (RFC 7643 §2.4); URNs make no sense here.
                if path.urn.is_some() || path.sub.is_some() {
                    return None;
                }
                match parent.sub(&path.name) {
                    Some(def) => Some(Located {
                        value: element.get(&def.name),
                        attr: def,
                        leaf: Some(def),
                        leaf_is_sub: false,
                    }),
                    // A multi-valued simple attribute (`schemas[value eq "…"]`): `value` is the element.
                    None if parent.sub_attributes.is_empty()
                        && path.name.eq_ignore_ascii_case("value") =>
                    {
                        Some(Located {
                            value: Some(element),
                            attr: parent,
                            leaf: Some(parent),
                            leaf_is_sub: false,
                        })
                    }
                    None => None,
                }
            }
        }
    }
}

impl Located<'_, '_> {
    /// Any leaf value that is not null satisfies `pred` (multi-valued: RFC 7644 §3.4.2.2 "any").
    fn any_leaf(&self, pred: impl Fn(&Value) -> bool) -> bool {
        let (Some(v), Some(leaf_def)) = (self.value, self.leaf) else {
            return false;
        };
        let check = |item: &Value| -> bool {
            let leaf = if self.leaf_is_sub {
                match item.get(&leaf_def.name) {
                    Some(l) => l,
                    None => return false,
                }
            } else {
                item
            };
            match leaf {
                Value::Null => false,
                Value::Array(items) => items.iter().any(|x| !x.is_null() && pred(x)),
                other => pred(other),
            }
        };
        match v {
            Value::Array(items) => items.iter().any(check),
            other => check(other),
        }
    }
}

/// `pr`: present and not null, `""`, `[]` or `{}` (RFC 7644 §3.4.2.2, RFC 7643 §2.5 "unassigned").
fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(is_present),
        Value::Object(o) => o.values().any(is_present),
        _ => true,
    }
}

impl Filter {
    /// Does this resource (a canonical JSON object) match? Unknown attributes match nothing.
    pub fn matches(&self, resource: &Value, schema: &ResourceSchema) -> bool {
        self.eval(Scope::Resource(resource, schema))
    }

    /// For the inside of `attr[...]`: paths are sub-attributes of `parent` and `element` is one
    /// element of it (or the attribute's object, for a single-valued complex attribute).
    pub fn matches_element(&self, element: &Value, parent: &AttributeDef) -> bool {
        self.eval(Scope::Element(element, parent))
    }

    fn eval(&self, scope: Scope<'_, '_>) -> bool {
        match self {
            Filter::And(a, b) => a.eval(scope) && b.eval(scope),
            Filter::Or(a, b) => a.eval(scope) || b.eval(scope),
            Filter::Not(a) => !a.eval(scope),
            Filter::Present(path) => match scope.locate(path) {
                None => false,
                Some(loc) if path.sub.is_some() => loc.any_leaf(is_present),
                Some(loc) => loc.value.is_some_and(is_present),
            },
            Filter::Compare { path, op, value } => match scope.locate(path) {
                None => false,
                Some(loc) => compare_located(&loc, *op, value),
            },
            Filter::ValuePath { attr, filter } => {
                let Scope::Resource(..) = scope else {
                    return false;
                };
                let Some(loc) = scope.locate(attr) else {
                    return false;
                };
                match loc.value {
                    Some(Value::Array(items)) => items
                        .iter()
                        .any(|e| filter.eval(Scope::Element(e, loc.attr))),
                    Some(v @ Value::Object(_)) => filter.eval(Scope::Element(v, loc.attr)),
                    _ => false,
                }
            }
        }
    }

    /// Checks the filter against the schema: gt/ge/lt/le on a boolean or binary attribute is
    /// `invalidFilter` (RFC 7644 §3.4.2.2), as are value filters on simple single-valued
    /// attributes and nested paths inside a value filter. Unknown attributes are accepted: they
    /// match nothing, which is what an IdP's probe for a random attribute value expects.
    pub fn validate(&self, schema: &ResourceSchema) -> Result<(), ScimError> {
        self.validate_in(Ctx::Resource(schema))
    }

    fn validate_in(&self, ctx: Ctx<'_>) -> Result<(), ScimError> {
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.validate_in(ctx)?;
                b.validate_in(ctx)
            }
            Filter::Not(a) => a.validate_in(ctx),
            Filter::Present(path) => ctx.check_path(path).map(|_| ()),
            Filter::Compare { path, op, .. } => {
                let Some(leaf) = ctx.check_path(path)? else {
                    return Ok(());
                };
                if op.is_ordering() && matches!(leaf.ty, AttrType::Boolean | AttrType::Binary) {
                    return Err(ScimError::invalid_filter(format!(
                        "'{op}' cannot be used on '{path}', a {} attribute (RFC 7644 §3.4.2.2)",
                        leaf.ty.as_str()
                    )));
                }
                Ok(())
            }
            Filter::ValuePath { attr, filter } => {
                let Ctx::Resource(schema) = ctx else {
                    return Err(ScimError::invalid_filter(format!(
                        "value filter '{attr}[…]' nested inside another value filter"
                    )));
                };
                let Some((_, def)) = resolve_top(schema, attr) else {
                    return Ok(());
                };
                if def.ty != AttrType::Complex && !def.multi_valued {
                    return Err(ScimError::invalid_filter(format!(
                        "value filter on '{attr}', which is neither complex nor multi-valued"
                    )));
                }
                filter.validate_in(Ctx::Element(def))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Ctx<'s> {
    Resource(&'s ResourceSchema),
    Element(&'s AttributeDef),
}

impl<'s> Ctx<'s> {
    /// The leaf definition the path compares, `None` for an unknown attribute.
    fn check_path(self, path: &AttrPath) -> Result<Option<&'s AttributeDef>, ScimError> {
        match self {
            Ctx::Resource(schema) => Ok(resolve_top(schema, path)
                .and_then(|(_, attr)| leaf_of(attr, path.sub.as_deref()))
                .map(|(leaf, _)| leaf)),
            Ctx::Element(parent) => {
                if path.urn.is_some() || path.sub.is_some() {
                    return Err(ScimError::invalid_filter(format!(
                        "'{path}' inside a value filter: only sub-attribute names of '{}' are allowed",
                        parent.name
                    )));
                }
                Ok(parent.sub(&path.name))
            }
        }
    }
}

fn compare_located(loc: &Located<'_, '_>, op: CompareOp, value: &CompValue) -> bool {
    let Some(leaf) = loc.leaf else { return false };
    match (op, value) {
        // RFC 7644 §3.4.2.2: `eq null` is "not present"; `ne null` is "present".
        (CompareOp::Eq, CompValue::Null) => !loc.any_leaf(|_| true),
        (CompareOp::Ne, CompValue::Null) => loc.any_leaf(|_| true),
        (CompareOp::Ne, _) => {
            !loc.any_leaf(|_| true)
                || loc.any_leaf(|x| !compare_leaf(x, leaf, CompareOp::Eq, value))
        }
        _ => loc.any_leaf(|x| compare_leaf(x, leaf, op, value)),
    }
}

fn ordering_matches(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// One scalar of the resource against the literal. Type mismatches are "no match".
fn compare_leaf(x: &Value, leaf: &AttributeDef, op: CompareOp, lit: &CompValue) -> bool {
    match (x, lit) {
        (Value::String(s), CompValue::String(l)) => {
            if leaf.ty == AttrType::DateTime
                && !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
            {
                if let (Ok(a), Ok(b)) = (
                    DateTime::parse_from_rfc3339(s),
                    DateTime::parse_from_rfc3339(l),
                ) {
                    return ordering_matches(op, a.cmp(&b));
                }
            }
            let exact = leaf.case_exact || leaf.ty == AttrType::Binary;
            string_op(s, l, op, exact)
        }
        // Legacy unquoted values (idp-behavior.md §2.3) lex as numbers when they are all digits;
        // on a string attribute they still mean the text. Ordering stays a type mismatch.
        (Value::String(s), CompValue::Number(n)) if !op.is_ordering() => {
            string_op(s, &n.to_string(), op, leaf.case_exact)
        }
        (Value::Bool(b), CompValue::Bool(l)) => match op {
            CompareOp::Eq => b == l,
            CompareOp::Ne => b != l,
            _ => false,
        },
        // Entra: `roles[primary eq "True"]` (idp-behavior.md §2.3, booleans sent as strings).
        (Value::Bool(b), CompValue::String(l)) => {
            let parsed = if l.eq_ignore_ascii_case("true") {
                Some(true)
            } else if l.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            };
            match (op, parsed) {
                (CompareOp::Eq, Some(l)) => *b == l,
                (CompareOp::Ne, Some(l)) => *b != l,
                _ => false,
            }
        }
        (Value::Number(a), CompValue::Number(b)) => {
            compare_numbers(a, b).is_some_and(|ord| ordering_matches(op, ord))
        }
        _ => false,
    }
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// String operators honouring `caseExact` (RFC 7643 §2.3.1). ASCII text is folded byte by byte
/// without allocating; other text is folded with Unicode lowercase.
fn string_op(s: &str, lit: &str, op: CompareOp, case_exact: bool) -> bool {
    if case_exact {
        return exact_op(s, lit, op);
    }
    if s.is_ascii() && lit.is_ascii() {
        let (a, b) = (s.as_bytes(), lit.as_bytes());
        return match op {
            CompareOp::Eq => a.eq_ignore_ascii_case(b),
            CompareOp::Ne => !a.eq_ignore_ascii_case(b),
            CompareOp::Sw => a.get(..b.len()).is_some_and(|p| p.eq_ignore_ascii_case(b)),
            CompareOp::Ew => a
                .len()
                .checked_sub(b.len())
                .and_then(|start| a.get(start..))
                .is_some_and(|p| p.eq_ignore_ascii_case(b)),
            CompareOp::Co => b.is_empty() || a.windows(b.len()).any(|w| w.eq_ignore_ascii_case(b)),
            _ => {
                let ord = a
                    .iter()
                    .map(u8::to_ascii_lowercase)
                    .cmp(b.iter().map(u8::to_ascii_lowercase));
                ordering_matches(op, ord)
            }
        };
    }
    exact_op(&s.to_lowercase(), &lit.to_lowercase(), op)
}

fn exact_op(s: &str, lit: &str, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => s == lit,
        CompareOp::Ne => s != lit,
        CompareOp::Co => s.contains(lit),
        CompareOp::Sw => s.starts_with(lit),
        CompareOp::Ew => s.ends_with(lit),
        _ => ordering_matches(op, s.cmp(lit)),
    }
}

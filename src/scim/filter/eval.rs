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
use chrono::{DateTime, FixedOffset};
use serde_json::Value;
use std::cmp::Ordering;
use std::sync::LazyLock;

/// `schemas` (RFC 7643 §3) is on every resource but listed in no schema; filters such as
/// `schemas eq "urn:…:enterprise:2.0:User"` (RFC 7644 §3.4.2.2) need it resolvable. URNs compare
/// case-insensitively (RFC 8141 §3.1 for the `urn:` and NID parts; lenient for the rest).
static SCHEMAS_ATTR: LazyLock<AttributeDef> = LazyLock::new(|| {
    AttributeDef::string("schemas", "The schema URNs the resource conforms to.").multi()
});

/// What a path names, known from the schema alone: where its value sits, the attribute's
/// definition, and the definition of the leaf values to compare (itself, a named sub-attribute, or
/// the implicit `value` sub-attribute of a complex attribute).
#[derive(Clone, Copy)]
struct Resolved<'s> {
    /// `Some(urn)`: the attribute sits in the extension object keyed by the URN.
    ext: Option<&'s str>,
    attr: &'s AttributeDef,
    /// `None` for a complex attribute without a `value` sub-attribute (`name`, `meta`): it can be
    /// tested with `pr` but not compared.
    leaf: Option<&'s AttributeDef>,
    leaf_is_sub: bool,
    /// `schemas[value eq "…"]`: in a simple multi-valued attribute, `value` is the element itself.
    is_element: bool,
}

/// A resolved path with the value found in one resource or element.
struct Located<'v, 's> {
    value: Option<&'v Value>,
    at: Resolved<'s>,
}

impl<'s> Resolved<'s> {
    fn locate<'v>(self, scope: &'v Value) -> Located<'v, 's> {
        let value = if self.is_element {
            Some(scope)
        } else {
            let container = match self.ext {
                None => Some(scope),
                Some(urn) => field(scope, urn),
            };
            container.and_then(|c| field(c, &self.attr.name))
        };
        Located { value, at: self }
    }
}

/// A member of a JSON object by its exact (canonical) name. Elements of multi-valued attributes
/// have a handful of keys, where comparing keys beats hashing the name (SipHash): this is most of
/// the cost of evaluating `emails[type eq "work"]`.
fn field<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    const LINEAR_SCAN_MAX: usize = 8;
    let map = v.as_object()?;
    if map.len() <= LINEAR_SCAN_MAX {
        map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
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

/// Where names in a filter are resolved: a resource type, or the sub-attributes of one attribute
/// inside `attr[...]`.
#[derive(Clone, Copy)]
enum Ctx<'s> {
    Resource(&'s ResourceSchema),
    Element(&'s AttributeDef),
}

impl<'s> Ctx<'s> {
    /// `None` for a name the schema does not know: it matches nothing.
    fn resolve(self, path: &AttrPath) -> Option<Resolved<'s>> {
        match self {
            Ctx::Resource(schema) => {
                let (ext, attr) = resolve_top(schema, path)?;
                let (leaf, leaf_is_sub) = match (leaf_of(attr, path.sub.as_deref()), &path.sub) {
                    (Some((leaf, is_sub)), _) => (Some(leaf), is_sub),
                    (None, Some(_)) => return None,
                    (None, None) => (None, false),
                };
                Some(Resolved {
                    ext,
                    attr,
                    leaf,
                    leaf_is_sub,
                    is_element: false,
                })
            }
            Ctx::Element(parent) => {
                // Sub-attributes have no sub-attributes (RFC 7643 §2.4); URNs make no sense here.
                if path.urn.is_some() || path.sub.is_some() {
                    return None;
                }
                let (attr, is_element) = match parent.sub(&path.name) {
                    Some(def) => (def, false),
                    None if parent.sub_attributes.is_empty()
                        && path.name.eq_ignore_ascii_case("value") =>
                    {
                        (parent, true)
                    }
                    None => return None,
                };
                Some(Resolved {
                    ext: None,
                    attr,
                    leaf: Some(attr),
                    leaf_is_sub: false,
                    is_element,
                })
            }
        }
    }

    /// The leaf definition the path compares, `None` for an unknown attribute.
    fn check_path(self, path: &AttrPath) -> Result<Option<&'s AttributeDef>, ScimError> {
        if let Ctx::Element(parent) = self {
            if path.urn.is_some() || path.sub.is_some() {
                return Err(ScimError::invalid_filter(format!(
                    "'{path}' inside a value filter: only sub-attribute names of '{}' are allowed",
                    parent.name
                )));
            }
        }
        Ok(self.resolve(path).and_then(|r| r.leaf))
    }
}

impl Located<'_, '_> {
    /// Any leaf value that is not null satisfies `pred` (multi-valued: RFC 7644 §3.4.2.2 "any").
    fn any_leaf(&self, pred: impl Fn(&Value) -> bool) -> bool {
        let (Some(v), Some(leaf_def)) = (self.value, self.at.leaf) else {
            return false;
        };
        let check = |item: &Value| -> bool {
            let leaf = if self.at.leaf_is_sub {
                match field(item, &leaf_def.name) {
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
    /// Resolves names on every call; to test many resources, [`Filter::bind`] once.
    pub fn matches(&self, resource: &Value, schema: &ResourceSchema) -> bool {
        self.eval(resource, Ctx::Resource(schema))
    }

    /// For the inside of `attr[...]`: paths are sub-attributes of `parent` and `element` is one
    /// element of it (or the attribute's object, for a single-valued complex attribute).
    pub fn matches_element(&self, element: &Value, parent: &AttributeDef) -> bool {
        self.eval(element, Ctx::Element(parent))
    }

    fn eval(&self, scope: &Value, ctx: Ctx<'_>) -> bool {
        match self {
            Filter::And(a, b) => a.eval(scope, ctx) && b.eval(scope, ctx),
            Filter::Or(a, b) => a.eval(scope, ctx) || b.eval(scope, ctx),
            Filter::Not(a) => !a.eval(scope, ctx),
            Filter::Present(path) => ctx
                .resolve(path)
                .is_some_and(|at| present(&at.locate(scope), path.sub.is_some())),
            Filter::Compare { path, op, value } => ctx.resolve(path).is_some_and(|at| {
                let date = literal_date(at.leaf, value);
                compare_located(&at.locate(scope), *op, value, date.as_ref())
            }),
            Filter::ValuePath { attr, filter } => {
                let Ctx::Resource(_) = ctx else { return false };
                let Some(at) = ctx.resolve(attr) else {
                    return false;
                };
                let inner = Ctx::Element(at.attr);
                any_element(at.locate(scope).value, |e| filter.eval(e, inner))
            }
        }
    }

    /// Resolves every name against the schema once, for evaluating the same filter against many
    /// resources (list and search endpoints): no name lookups, date literals parsed once.
    pub fn bind<'f, 's>(&'f self, schema: &'s ResourceSchema) -> BoundFilter<'f, 's> {
        BoundFilter {
            root: Node::bind(self, Ctx::Resource(schema)),
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

/// `pr` (RFC 7644 §3.4.2.2): on `attr.sub`, any sub-value present; on `attr`, the attribute itself.
fn present(loc: &Located<'_, '_>, has_sub: bool) -> bool {
    if has_sub {
        loc.any_leaf(is_present)
    } else {
        loc.value.is_some_and(is_present)
    }
}

/// Elements of a value-filtered attribute: each array element, or the object of a single-valued
/// complex attribute (Entra's `manager[value eq "…"]`).
fn any_element(value: Option<&Value>, pred: impl Fn(&Value) -> bool) -> bool {
    match value {
        Some(Value::Array(items)) => items.iter().any(pred),
        Some(v @ Value::Object(_)) => pred(v),
        _ => false,
    }
}

/// A string literal compared with a dateTime attribute, parsed as RFC 3339 (RFC 7643 §2.3.5).
fn literal_date(leaf: Option<&AttributeDef>, value: &CompValue) -> Option<DateTime<FixedOffset>> {
    match (leaf, value) {
        (Some(l), CompValue::String(s)) if l.ty == AttrType::DateTime => {
            DateTime::parse_from_rfc3339(s).ok()
        }
        _ => None,
    }
}

fn compare_located(
    loc: &Located<'_, '_>,
    op: CompareOp,
    value: &CompValue,
    date: Option<&DateTime<FixedOffset>>,
) -> bool {
    let Some(leaf) = loc.at.leaf else {
        return false;
    };
    match (op, value) {
        // RFC 7644 §3.4.2.2: `eq null` is "not present"; `ne null` is "present".
        (CompareOp::Eq, CompValue::Null) => !loc.any_leaf(|_| true),
        (CompareOp::Ne, CompValue::Null) => loc.any_leaf(|_| true),
        (CompareOp::Ne, _) => {
            !loc.any_leaf(|_| true)
                || loc.any_leaf(|x| !compare_leaf(x, leaf, CompareOp::Eq, value, date))
        }
        _ => loc.any_leaf(|x| compare_leaf(x, leaf, op, value, date)),
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
/// `date` is the literal already parsed when the leaf is a dateTime attribute.
fn compare_leaf(
    x: &Value,
    leaf: &AttributeDef,
    op: CompareOp,
    lit: &CompValue,
    date: Option<&DateTime<FixedOffset>>,
) -> bool {
    match (x, lit) {
        (Value::String(s), CompValue::String(l)) => {
            if let Some(b) = date {
                if !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) {
                    if let Ok(a) = DateTime::parse_from_rfc3339(s) {
                        return ordering_matches(op, a.cmp(b));
                    }
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
            CompareOp::Co => match b.first() {
                None => true,
                Some(first) => a.windows(b.len()).any(|w| {
                    w.first().is_some_and(|c| c.eq_ignore_ascii_case(first))
                        && w.eq_ignore_ascii_case(b)
                }),
            },
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

/// A filter with every name resolved against one schema ([`Filter::bind`]).
#[derive(Debug, Clone)]
pub struct BoundFilter<'f, 's> {
    root: Node<'f, 's>,
}

impl BoundFilter<'_, '_> {
    /// Same answer as [`Filter::matches`] with the schema given to [`Filter::bind`].
    pub fn matches(&self, resource: &Value) -> bool {
        self.root.eval(resource)
    }
}

#[derive(Clone)]
enum Node<'f, 's> {
    /// A name the schema does not know: matches nothing (and `not` of it, everything).
    Never,
    Present {
        at: Resolved<'s>,
        has_sub: bool,
    },
    Compare {
        at: Resolved<'s>,
        op: CompareOp,
        value: &'f CompValue,
        date: Option<DateTime<FixedOffset>>,
    },
    ValuePath {
        at: Resolved<'s>,
        filter: Box<Node<'f, 's>>,
    },
    And(Box<Node<'f, 's>>, Box<Node<'f, 's>>),
    Or(Box<Node<'f, 's>>, Box<Node<'f, 's>>),
    Not(Box<Node<'f, 's>>),
}

impl std::fmt::Debug for Node<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Never => f.write_str("Never"),
            Node::Present { at, .. } => write!(f, "Present({})", at.attr.name),
            Node::Compare { at, op, value, .. } => {
                write!(f, "Compare({} {op} {value})", at.attr.name)
            }
            Node::ValuePath { at, filter } => write!(f, "ValuePath({}[{filter:?}])", at.attr.name),
            Node::And(a, b) => write!(f, "And({a:?}, {b:?})"),
            Node::Or(a, b) => write!(f, "Or({a:?}, {b:?})"),
            Node::Not(a) => write!(f, "Not({a:?})"),
        }
    }
}

impl<'f, 's> Node<'f, 's> {
    fn bind(filter: &'f Filter, ctx: Ctx<'s>) -> Self {
        let boxed = |f: &'f Filter| Box::new(Node::bind(f, ctx));
        match filter {
            Filter::And(a, b) => Node::And(boxed(a), boxed(b)),
            Filter::Or(a, b) => Node::Or(boxed(a), boxed(b)),
            Filter::Not(a) => Node::Not(boxed(a)),
            Filter::Present(path) => match ctx.resolve(path) {
                Some(at) => Node::Present {
                    at,
                    has_sub: path.sub.is_some(),
                },
                None => Node::Never,
            },
            Filter::Compare { path, op, value } => match ctx.resolve(path) {
                Some(at) => Node::Compare {
                    at,
                    op: *op,
                    value,
                    date: literal_date(at.leaf, value),
                },
                None => Node::Never,
            },
            Filter::ValuePath { attr, filter } => match (ctx, ctx.resolve(attr)) {
                (Ctx::Resource(_), Some(at)) => Node::ValuePath {
                    at,
                    filter: Box::new(Node::bind(filter, Ctx::Element(at.attr))),
                },
                _ => Node::Never,
            },
        }
    }

    fn eval(&self, scope: &Value) -> bool {
        match self {
            Node::Never => false,
            Node::And(a, b) => a.eval(scope) && b.eval(scope),
            Node::Or(a, b) => a.eval(scope) || b.eval(scope),
            Node::Not(a) => !a.eval(scope),
            Node::Present { at, has_sub } => present(&at.locate(scope), *has_sub),
            Node::Compare {
                at,
                op,
                value,
                date,
            } => compare_located(&at.locate(scope), *op, value, date.as_ref()),
            Node::ValuePath { at, filter } => {
                any_element(at.locate(scope).value, |e| filter.eval(e))
            }
        }
    }
}

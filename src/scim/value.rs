//! Coercion of client-sent JSON to an attribute definition (RFC 7643 §2.3, §7): canonical
//! sub-attribute names, type checks, and the value dialects Okta and Entra ID really send
//! (see shared/reference/idp-behavior.md §1–2). Used by the PATCH engine and by POST/PUT.
//!
//! "No value" is one notion everywhere: RFC 7643 §2.5 says unassigned attributes, `null` and
//! empty arrays are equivalent, and Entra's SCIM_Null_Update test clears attributes with `""`
//! as well as `null` [ENTRA-LOGICAPP]. So `null`, `""`, `[]` and `{}` all coerce to `None`.

use crate::scim::error::ScimError;
use crate::scim::schema::{AttrType, AttributeDef, Mutability};
use serde_json::{Map, Value};

/// Coerces a client-sent value for `def` (see the module docs for what "no value" means).
///
/// - complex: sub-attribute names are matched case-insensitively (RFC 7643 §2.1) and written in
///   the schema's spelling; unknown sub-attributes are dropped (IdPs send what we don't store);
/// - boolean: `true`/`false`, and the strings `"True"`/`"False"` in any case, which Entra sends
///   without the `aadOptscim062020` flag [ENTRA-COMPAT];
/// - string, reference, binary: JSON strings; integer: a JSON integer; decimal: any JSON number;
///   dateTime: an RFC 3339 string (kept as sent: Entra wants values stored exactly as sent);
/// - a complex attribute with a `value` sub-attribute given a scalar takes it as `{"value": …}`
///   (Entra's bare-string manager id, SCIM-SDK#686);
/// - a single-valued attribute given a one-element array takes the element (Entra's legacy
///   manager form `[{"$ref":…,"value":…}]`); a complex one given a longer array takes the first
///   element; a simple one given a longer array is an error;
/// - a multi-valued attribute given a single value is wrapped in an array; elements that coerce
///   to nothing are dropped; at most one element keeps `primary: true` (RFC 7643 §2.4);
/// - an element whose `value` is a JSON object serialized into a string is unwrapped (Entra's
///   roles without the flag, `{"value":"{\"id\":…,\"value\":\"25\",\"displayName\":\"R\"}"}` [ENTRA-ATTR]).
///
/// Wrong types give 400 `invalidValue` naming the attribute.
pub fn coerce(def: &AttributeDef, value: &Value) -> Result<Option<Value>, ScimError> {
    Coercer {
        writable_only: false,
    }
    .attr(def, value, Label::of(def))
}

/// Like [`coerce`], but for values a client writes: readOnly sub-attributes (for example the
/// enterprise `manager.displayName`) are dropped, as RFC 7644 §3.5.1 has servers ignore
/// readOnly input. The PATCH engine uses this; POST/PUT should too.
pub fn coerce_writable(def: &AttributeDef, value: &Value) -> Result<Option<Value>, ScimError> {
    Coercer {
        writable_only: true,
    }
    .attr(def, value, Label::of(def))
}

/// Coerces one element of a multi-valued attribute (or the value of a single-valued one),
/// ignoring `def.multi_valued`. Arrays are rejected: an element cannot itself be a list.
pub fn coerce_single(def: &AttributeDef, value: &Value) -> Result<Option<Value>, ScimError> {
    Coercer {
        writable_only: false,
    }
    .single(def, value, Label::of(def))
}

/// [`coerce_single`] dropping readOnly sub-attributes, as [`coerce_writable`] does.
pub fn coerce_single_writable(
    def: &AttributeDef,
    value: &Value,
) -> Result<Option<Value>, ScimError> {
    Coercer {
        writable_only: true,
    }
    .single(def, value, Label::of(def))
}

/// Whether `v` means "no value" (RFC 7643 §2.5, plus Entra's `""`).
pub fn is_no_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Keeps at most one `primary: true` in a multi-valued attribute (RFC 7643 §2.4). The winner is
/// the last primary element at or after `new_from` (the elements just added: RFC 7644 §3.5.2 has
/// a newly primary value demote the others), else the last primary element overall. The losers
/// get `primary: false`, as §3.5.2 prescribes.
pub fn settle_primary(list: &mut [Value], new_from: usize) {
    let is_primary = |v: &Value| v.get("primary") == Some(&Value::Bool(true));
    let winner = list
        .iter()
        .enumerate()
        .rev()
        .find(|(i, v)| *i >= new_from && is_primary(v))
        .or_else(|| list.iter().enumerate().rev().find(|(_, v)| is_primary(v)))
        .map(|(i, _)| i);
    let Some(winner) = winner else { return };
    for (i, v) in list.iter_mut().enumerate() {
        if i != winner && is_primary(v) {
            if let Some(o) = v.as_object_mut() {
                o.insert("primary".into(), Value::Bool(false));
            }
        }
    }
}

/// Whether two already-coerced values of `def` are the same value: strings compare
/// case-insensitively unless `caseExact` (RFC 7643 §2.2), complex values sub-attribute by
/// sub-attribute, lists element by element in order. Used for "duplicates are not added twice"
/// (RFC 7644 §3.5.2.1).
pub fn values_equal(def: &AttributeDef, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| element_equal_inner(def, p, q))
        }
        _ => element_equal_inner(def, a, b),
    }
}

/// Equality of one element of `def` (as opposed to a whole list): see [`values_equal`].
pub fn element_equal(def: &AttributeDef, a: &Value, b: &Value) -> bool {
    element_equal_inner(def, a, b)
}

fn element_equal_inner(def: &AttributeDef, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if def.case_exact || def.ty == AttrType::Complex {
                x == y
            } else {
                x.eq_ignore_ascii_case(y) || x.to_lowercase() == y.to_lowercase()
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, xv)| match y.get(k) {
                    None => false,
                    Some(yv) => match def.sub(k) {
                        Some(sd) => values_equal(sd, xv, yv),
                        None => xv == yv,
                    },
                })
        }
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

/// Parses a boolean the way Entra sends it without the flag: `"True"`/`"False"` in any case.
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

struct Coercer {
    writable_only: bool,
}

/// Entra nests a serialized object this deep at most; the bound keeps hostile input from
/// recursing through string after string.
const MAX_UNWRAP: u8 = 2;

impl Coercer {
    fn attr(
        &self,
        def: &AttributeDef,
        value: &Value,
        label: Label<'_>,
    ) -> Result<Option<Value>, ScimError> {
        if def.multi_valued {
            let mut out = Vec::new();
            match value {
                Value::Array(items) => {
                    for item in items {
                        if item.is_array() {
                            return Err(invalid(
                                label,
                                "an element of a multi-valued attribute cannot be a list",
                            ));
                        }
                        if let Some(v) = self.single(def, item, label)? {
                            out.push(v);
                        }
                    }
                }
                other => {
                    if let Some(v) = self.single(def, other, label)? {
                        out.push(v);
                    }
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            if def.ty == AttrType::Complex {
                settle_primary(&mut out, 0);
            }
            Ok(Some(Value::Array(out)))
        } else {
            match value {
                Value::Array(items) => match items.as_slice() {
                    [] => Ok(None),
                    [one] if !one.is_array() => self.single(def, one, label),
                    // Entra's legacy manager form is a list [ENTRA-DEV]; a complex value takes
                    // the first element, as Entra means it. A longer list of plain values has
                    // no such reading and would lose data silently.
                    [first, ..] if def.ty == AttrType::Complex && !first.is_array() => {
                        self.single(def, first, label)
                    }
                    _ => Err(invalid(
                        label,
                        "a single-valued attribute cannot take a list",
                    )),
                },
                other => self.single(def, other, label),
            }
        }
    }

    fn single(
        &self,
        def: &AttributeDef,
        value: &Value,
        label: Label<'_>,
    ) -> Result<Option<Value>, ScimError> {
        self.single_depth(def, value, label, 0)
    }

    fn single_depth(
        &self,
        def: &AttributeDef,
        value: &Value,
        label: Label<'_>,
        depth: u8,
    ) -> Result<Option<Value>, ScimError> {
        if is_no_value(value) {
            return Ok(None);
        }
        if value.is_array() {
            return Err(invalid(label, "expected a single value, got a list"));
        }
        match def.ty {
            AttrType::Complex => self.complex(def, value, label, depth),
            AttrType::Boolean => match parse_bool(value) {
                Some(b) => Ok(Some(Value::Bool(b))),
                None => Err(invalid(label, "expected a boolean")),
            },
            AttrType::String | AttrType::Reference | AttrType::Binary => match value {
                Value::String(_) => Ok(Some(value.clone())),
                _ => Err(invalid(label, "expected a string")),
            },
            AttrType::Integer => match value {
                Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(value.clone())),
                _ => Err(invalid(label, "expected an integer")),
            },
            AttrType::Decimal => match value {
                Value::Number(_) => Ok(Some(value.clone())),
                _ => Err(invalid(label, "expected a decimal number")),
            },
            AttrType::DateTime => match value {
                Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
                    Ok(Some(value.clone()))
                }
                _ => Err(invalid(label, "expected an RFC 3339 dateTime string")),
            },
        }
    }

    fn complex(
        &self,
        def: &AttributeDef,
        value: &Value,
        label: Label<'_>,
        depth: u8,
    ) -> Result<Option<Value>, ScimError> {
        let obj = match value {
            Value::Object(o) => o,
            scalar => {
                // Entra's manager as a bare id string (SCIM-SDK#686, directory-scimple#1242).
                if def.sub("value").is_some() {
                    let mut m = Map::new();
                    m.insert("value".into(), scalar.clone());
                    return self.complex(def, &Value::Object(m), label, depth);
                }
                return Err(invalid(label, "expected a complex value (a JSON object)"));
            }
        };
        if depth < MAX_UNWRAP {
            if let Some(unwrapped) = unwrap_serialized(def, obj) {
                return self.complex(def, &Value::Object(unwrapped), label, depth + 1);
            }
        }
        let mut out = Map::new();
        for (k, v) in obj {
            let Some(sd) = def.sub(k) else { continue };
            if self.writable_only && sd.mutability == Mutability::ReadOnly {
                continue;
            }
            let sub_label = Label {
                parent: Some(label.name),
                name: &sd.name,
            };
            if let Some(cv) = self.attr(sd, v, sub_label)? {
                // Two input keys differing only in case: the last one wins, as a JSON parser
                // keeps the last of two equal keys.
                out.insert(sd.name.clone(), cv);
            }
        }
        if out.is_empty() {
            Ok(None)
        } else {
            Ok(Some(Value::Object(out)))
        }
    }
}

/// Entra's roles without the flag carry the element serialized as a JSON string in `value`
/// [ENTRA-ATTR]. Returns the element to use instead, with Entra's `displayName` taken as
/// `display` when the attribute has no `displayName` of its own. Only strings that parse as an
/// object with a `value` key are unwrapped, so ordinary values never change meaning.
fn unwrap_serialized(def: &AttributeDef, obj: &Map<String, Value>) -> Option<Map<String, Value>> {
    let value_def = def.sub("value")?;
    if value_def.ty != AttrType::String {
        return None;
    }
    let (vk, raw) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("value"))?;
    let s = raw.as_str()?.trim_start();
    if !s.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(inner)) = serde_json::from_str::<Value>(s) else {
        return None;
    };
    if !inner.keys().any(|k| k.eq_ignore_ascii_case("value")) {
        return None;
    }
    let mut merged: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| *k != vk)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let has_display_name = def.sub("displayName").is_some();
    for (k, v) in inner {
        if k.eq_ignore_ascii_case("displayName") && !has_display_name {
            if def.sub("display").is_some()
                && !merged.keys().any(|m| m.eq_ignore_ascii_case("display"))
            {
                merged.insert("display".into(), v);
            }
            continue;
        }
        merged.insert(k, v);
    }
    Some(merged)
}

/// The attribute named in an error, built only when there is one: formatting a dotted name for
/// every sub-attribute coerced would cost more than the coercion (the ≤10 µs PATCH budget).
#[derive(Clone, Copy)]
struct Label<'a> {
    parent: Option<&'a str>,
    name: &'a str,
}

impl<'a> Label<'a> {
    fn of(def: &'a AttributeDef) -> Self {
        Label {
            parent: None,
            name: &def.name,
        }
    }
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.parent {
            Some(p) => write!(f, "{p}.{}", self.name),
            None => f.write_str(self.name),
        }
    }
}

fn invalid(label: Label<'_>, what: &str) -> ScimError {
    ScimError::invalid_value(format!("attribute '{label}': {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::{urn, ResourceSchema};
    use crate::scim::ScimType;
    use serde_json::json;

    fn user_attr(name: &str) -> AttributeDef {
        ResourceSchema::user()
            .resolve(None, name)
            .unwrap()
            .def
            .clone()
    }
    fn ent_attr(name: &str) -> AttributeDef {
        ResourceSchema::user()
            .resolve(Some(urn::ENTERPRISE_USER), name)
            .unwrap()
            .def
            .clone()
    }
    fn err_type(r: Result<Option<Value>, ScimError>) -> ScimType {
        r.unwrap_err().scim_type.unwrap()
    }

    #[test]
    fn canonical_sub_names_and_unknown_dropped() {
        let d = user_attr("name");
        let v = coerce(
            &d,
            &json!({"GIVENNAME": "Ann", "familyname": "Lee", "nick": "x"}),
        )
        .unwrap();
        assert_eq!(v, Some(json!({"givenName": "Ann", "familyName": "Lee"})));
    }

    #[test]
    fn booleans_from_entra_strings() {
        let d = user_attr("active");
        for (input, want) in [
            (json!("True"), true),
            (json!("true"), true),
            (json!(true), true),
        ] {
            assert_eq!(coerce(&d, &input).unwrap(), Some(Value::Bool(want)));
        }
        assert_eq!(coerce(&d, &json!("False")).unwrap(), Some(json!(false)));
        assert_eq!(coerce(&d, &json!("FALSE")).unwrap(), Some(json!(false)));
        assert_eq!(err_type(coerce(&d, &json!("yes"))), ScimType::InvalidValue);
        assert_eq!(err_type(coerce(&d, &json!(1))), ScimType::InvalidValue);
        // Nested: emails[].primary.
        let e = user_attr("emails");
        assert_eq!(
            coerce(&e, &json!({"value": "a@x", "Primary": "True"})).unwrap(),
            Some(json!([{"value": "a@x", "primary": true}]))
        );
    }

    #[test]
    fn type_errors_name_the_attribute() {
        let err = coerce(&user_attr("userName"), &json!({"a": 1})).unwrap_err();
        assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
        assert!(err.detail.contains("userName"), "{}", err.detail);
        let err = coerce(&user_attr("emails"), &json!([{"value": 5}])).unwrap_err();
        assert!(err.detail.contains("emails.value"), "{}", err.detail);
        assert_eq!(
            err_type(coerce(&user_attr("name"), &json!("Ann"))),
            ScimType::InvalidValue
        );
        assert_eq!(
            err_type(coerce(&user_attr("userName"), &json!(true))),
            ScimType::InvalidValue
        );
        assert_eq!(
            err_type(coerce(&user_attr("userName"), &json!(["a", "b"]))),
            ScimType::InvalidValue
        );
        assert_eq!(
            err_type(coerce(&user_attr("emails"), &json!([[{"value": "a"}]]))),
            ScimType::InvalidValue
        );
    }

    #[test]
    fn numbers_and_dates() {
        let int = AttributeDef::of_type("n", AttrType::Integer, "");
        assert_eq!(coerce(&int, &json!(42)).unwrap(), Some(json!(42)));
        assert_eq!(err_type(coerce(&int, &json!(4.5))), ScimType::InvalidValue);
        assert_eq!(err_type(coerce(&int, &json!("42"))), ScimType::InvalidValue);
        let dec = AttributeDef::of_type("d", AttrType::Decimal, "");
        assert_eq!(coerce(&dec, &json!(4.5)).unwrap(), Some(json!(4.5)));
        assert_eq!(coerce(&dec, &json!(4)).unwrap(), Some(json!(4)));
        let dt = AttributeDef::of_type("t", AttrType::DateTime, "");
        assert_eq!(
            coerce(&dt, &json!("2011-08-01T18:29:49.793Z")).unwrap(),
            Some(json!("2011-08-01T18:29:49.793Z"))
        );
        // Okta's old `meta.created` sample format is not RFC 3339.
        assert_eq!(
            err_type(coerce(&dt, &json!("04-12-2018 00:00:00"))),
            ScimType::InvalidValue
        );
        let bin = AttributeDef::of_type("b", AttrType::Binary, "");
        assert_eq!(err_type(coerce(&bin, &json!(1))), ScimType::InvalidValue);
    }

    #[test]
    fn no_value_forms() {
        for v in [json!(null), json!(""), json!([]), json!({})] {
            assert_eq!(coerce(&user_attr("title"), &v).unwrap(), None, "{v}");
            assert_eq!(coerce(&user_attr("emails"), &v).unwrap(), None, "{v}");
            assert_eq!(coerce(&user_attr("name"), &v).unwrap(), None, "{v}");
        }
        // Elements that coerce to nothing are dropped; a list of only those is no value.
        assert_eq!(
            coerce(
                &user_attr("emails"),
                &json!([{"value": null}, {}, null, {"value": "a@x"}])
            )
            .unwrap(),
            Some(json!([{"value": "a@x"}]))
        );
        assert_eq!(
            coerce(&user_attr("emails"), &json!([{"value": ""}])).unwrap(),
            None
        );
        // A complex value whose sub-attributes are all unknown is no value either.
        assert_eq!(coerce(&user_attr("name"), &json!({"x": 1})).unwrap(), None);
    }

    #[test]
    fn multi_valued_wraps_single() {
        assert_eq!(
            coerce(
                &user_attr("emails"),
                &json!({"value": "a@x", "type": "work"})
            )
            .unwrap(),
            Some(json!([{"value": "a@x", "type": "work"}]))
        );
        assert_eq!(
            coerce(&user_attr("emails"), &json!("a@x")).unwrap(),
            Some(json!([{"value": "a@x"}]))
        );
    }

    #[test]
    fn manager_bare_string_and_list_form() {
        let m = ent_attr("manager");
        assert_eq!(
            coerce(&m, &json!("2c2f")).unwrap(),
            Some(json!({"value": "2c2f"}))
        );
        assert_eq!(
            coerce(&m, &json!([{"$ref": "../Users/2c2f", "value": "2c2f"}])).unwrap(),
            Some(json!({"$ref": "../Users/2c2f", "value": "2c2f"}))
        );
        assert_eq!(coerce(&m, &json!([])).unwrap(), None);
        assert_eq!(
            coerce(&m, &json!([{"value": "a"}, {"value": "b"}])).unwrap(),
            Some(json!({"value": "a"}))
        );
        assert_eq!(
            err_type(coerce(&user_attr("title"), &json!(["a", "b"]))),
            ScimType::InvalidValue
        );
        // readOnly displayName: kept by `coerce`, dropped from client writes.
        let v = json!({"value": "2c2f", "displayName": "Boss"});
        assert_eq!(coerce(&m, &v).unwrap(), Some(v.clone()));
        assert_eq!(
            coerce_writable(&m, &v).unwrap(),
            Some(json!({"value": "2c2f"}))
        );
    }

    #[test]
    fn entra_roles_json_string_unwrapped() {
        let roles = user_attr("roles");
        let sent =
            json!([{"value": "{\"id\":\"7ee0\",\"value\":\"25\",\"displayName\":\"Role1234\"}"}]);
        assert_eq!(
            coerce(&roles, &sent).unwrap(),
            Some(json!([{"value": "25", "display": "Role1234"}]))
        );
        // An ordinary value that merely starts with a brace stays as it is.
        let plain = json!([{"value": "{not json"}]);
        assert_eq!(coerce(&roles, &plain).unwrap(), Some(plain.clone()));
        let no_value_key = json!([{"value": "{\"id\":\"1\"}"}]);
        assert_eq!(
            coerce(&roles, &no_value_key).unwrap(),
            Some(no_value_key.clone())
        );
        // Nested serialization is bounded, never recursive without end.
        let inner = json!({"value": "{\"value\":\"x\"}"}).to_string();
        let outer = json!({"value": json!({"value": inner}).to_string()});
        assert!(coerce(&roles, &json!([outer])).unwrap().is_some());
    }

    #[test]
    fn one_primary_last_wins() {
        let v = coerce(
            &user_attr("emails"),
            &json!([{"value": "a", "primary": true}, {"value": "b", "primary": "True"}]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            v,
            json!([{"value": "a", "primary": false}, {"value": "b", "primary": true}])
        );
        let mut list = vec![
            json!({"value": "a", "primary": true}),
            json!({"value": "b", "primary": true}),
            json!({"value": "c"}),
        ];
        settle_primary(&mut list, 0);
        assert_eq!(list[0]["primary"], json!(false));
        assert_eq!(list[1]["primary"], json!(true));
        let mut list = vec![
            json!({"value": "a", "primary": true}),
            json!({"value": "b"}),
        ];
        settle_primary(&mut list, 1);
        assert_eq!(list[0]["primary"], json!(true));
    }

    #[test]
    fn single_elements() {
        let e = user_attr("emails");
        assert_eq!(
            coerce_single(&e, &json!({"VALUE": "a@x"})).unwrap(),
            Some(json!({"value": "a@x"}))
        );
        assert_eq!(
            err_type(coerce_single(&e, &json!([{"value": "a@x"}]))),
            ScimType::InvalidValue
        );
        assert_eq!(coerce_single(&e, &json!(null)).unwrap(), None);
        let m = ResourceSchema::group()
            .resolve(None, "members")
            .unwrap()
            .def
            .clone();
        assert_eq!(
            coerce_single_writable(&m, &json!({"value": "u1", "$ref": null, "display": "U"}))
                .unwrap(),
            Some(json!({"value": "u1", "display": "U"}))
        );
    }

    #[test]
    fn equality_follows_case_exact() {
        let emails = user_attr("emails");
        assert!(element_equal(
            &emails,
            &json!({"value": "A@X"}),
            &json!({"value": "a@x"})
        ));
        assert!(!element_equal(
            &emails,
            &json!({"value": "a@x"}),
            &json!({"value": "a@x", "type": "work"})
        ));
        let members = ResourceSchema::group()
            .resolve(None, "members")
            .unwrap()
            .def
            .clone();
        assert!(!element_equal(
            &members,
            &json!({"value": "A"}),
            &json!({"value": "a"})
        ));
        assert!(values_equal(
            &emails,
            &json!([{"value": "a"}]),
            &json!([{"value": "A"}])
        ));
    }
}

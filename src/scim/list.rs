//! Query and list semantics (RFC 7644 §3.4.2): filter, sorting, paging math, `ListResponse`, and
//! the `SearchRequest` body of `POST .search` (§3.4.3).

use crate::scim::error::{ScimError, ScimResult};
use crate::scim::filter::{parse_filter, Filter};
use crate::scim::projection::Projection;
use crate::scim::schema::{split_urn, urn, AttrLocation, AttrType, AttributeDef, ResourceSchema};
use serde_json::{json, Value};
use std::cmp::Ordering;

/// The most resources one page returns, advertised as `filter.maxResults`.
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Ascending,
    Descending,
}

/// A parsed list/search request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub sort_by: Option<String>,
    pub sort_order: SortOrder,
    /// 1-based; values below 1 are taken as 1 (§3.4.2.4).
    pub start_index: usize,
    /// `None` = the server's page size; negative values are taken as 0 (§3.4.2.4).
    pub count: Option<usize>,
    pub attributes: Option<String>,
    pub excluded_attributes: Option<String>,
}

impl ListQuery {
    /// From already-decoded query parameters (names case-insensitive; unknown ones ignored, as
    /// Entra appends feature flags such as `aadOptscim062020` to the base URL).
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> ScimResult<Self> {
        let mut q = ListQuery {
            start_index: 1,
            ..Default::default()
        };
        for (k, v) in params {
            match k.to_ascii_lowercase().as_str() {
                "filter" => q.filter = Some(parse_filter(v)?),
                "sortby" if !v.trim().is_empty() => q.sort_by = Some(v.trim().to_string()),
                "sortorder" => q.sort_order = parse_sort_order(v)?,
                "startindex" => q.start_index = parse_start_index(&json!(v.trim()))?,
                "count" => q.count = Some(parse_count(&json!(v.trim()))?),
                "attributes" => q.attributes = Some(v.to_string()),
                "excludedattributes" => q.excluded_attributes = Some(v.to_string()),
                _ => {}
            }
        }
        Ok(q)
    }

    /// From a `SearchRequest` body (RFC 7644 §3.4.3).
    pub fn from_search_request(body: &Value) -> ScimResult<Self> {
        let obj = body
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("a SearchRequest must be a JSON object"))?;
        if let Some(schemas) = obj.get("schemas") {
            let ok = schemas
                .as_array()
                .map(|a| {
                    a.iter().any(|s| {
                        s.as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case(urn::SEARCH_REQUEST))
                    })
                })
                .unwrap_or(false);
            if !ok {
                return Err(ScimError::invalid_syntax(format!(
                    "`schemas` must contain \"{}\"",
                    urn::SEARCH_REQUEST
                )));
            }
        }
        let mut q = ListQuery {
            start_index: 1,
            ..Default::default()
        };
        let list = |v: &Value, name: &str| -> ScimResult<String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_string).ok_or_else(|| {
                            ScimError::invalid_value(format!("`{name}` must list strings"))
                        })
                    })
                    .collect::<ScimResult<Vec<_>>>()
                    .map(|v| v.join(",")),
                _ => Err(ScimError::invalid_value(format!(
                    "`{name}` must be an array of strings"
                ))),
            }
        };
        for (k, v) in obj {
            if v.is_null() {
                continue;
            }
            match k.to_ascii_lowercase().as_str() {
                "filter" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| ScimError::invalid_filter("`filter` must be a string"))?;
                    q.filter = Some(parse_filter(s)?);
                }
                "sortby" => {
                    q.sort_by = Some(
                        v.as_str()
                            .ok_or_else(|| ScimError::invalid_value("`sortBy` must be a string"))?
                            .to_string(),
                    )
                }
                "sortorder" => {
                    q.sort_order =
                        parse_sort_order(v.as_str().ok_or_else(|| {
                            ScimError::invalid_value("`sortOrder` must be a string")
                        })?)?
                }
                "startindex" => q.start_index = parse_start_index(v)?,
                "count" => q.count = Some(parse_count(v)?),
                "attributes" => q.attributes = Some(list(v, "attributes")?),
                "excludedattributes" => {
                    q.excluded_attributes = Some(list(v, "excludedAttributes")?)
                }
                _ => {}
            }
        }
        Ok(q)
    }

    pub fn projection(&self, schema: &ResourceSchema) -> Projection {
        Projection::new(
            self.attributes.as_deref(),
            self.excluded_attributes.as_deref(),
            schema,
        )
    }

    /// The page size actually served: the requested count capped at [`MAX_PAGE_SIZE`].
    pub fn page_size(&self) -> usize {
        self.count.unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)
    }

    /// The 0-based range of the sorted result set this page covers.
    pub fn page_range(&self, total: usize) -> std::ops::Range<usize> {
        let start = self.start_index.max(1) - 1;
        let start = start.min(total);
        let end = start.saturating_add(self.page_size()).min(total);
        start..end
    }
}

fn parse_sort_order(v: &str) -> ScimResult<SortOrder> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "ascending" => Ok(SortOrder::Ascending),
        "descending" => Ok(SortOrder::Descending),
        other => Err(ScimError::invalid_value(format!(
            "sortOrder must be \"ascending\" or \"descending\", not {other:?}"
        ))),
    }
}

fn parse_int(v: &Value, name: &str) -> ScimResult<i64> {
    let parsed = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| ScimError::invalid_value(format!("`{name}` must be an integer")))
}

fn parse_start_index(v: &Value) -> ScimResult<usize> {
    // §3.4.2.4: "A value less than 1 SHALL be interpreted as 1."
    Ok(parse_int(v, "startIndex")?.max(1) as usize)
}

fn parse_count(v: &Value) -> ScimResult<usize> {
    // §3.4.2.4: "A negative value SHALL be interpreted as 0."
    Ok(parse_int(v, "count")?.max(0) as usize)
}

/// Renders a `ListResponse`. `resources` are already projected. `itemsPerPage` is the number
/// returned; `startIndex` echoes the request (Entra's pagination test compares them).
pub fn list_response(total: usize, start_index: usize, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [urn::LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index.max(1),
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// Sorts canonical resources by `sort_by` (RFC 7644 §3.4.2.3): string comparison follows
/// `caseExact`, multi-valued attributes sort by their primary (else first) value, and resources
/// without the attribute sort last whatever the order. The sort is stable, so ties keep the
/// store's order (Okta requires a stable order across pages).
pub fn sort_resources(
    resources: &mut [Value],
    sort_by: &str,
    order: SortOrder,
    schema: &ResourceSchema,
) -> ScimResult<()> {
    let key = SortKey::resolve(sort_by, schema).ok_or_else(|| {
        ScimError::invalid_value(format!("cannot sort by unknown attribute {sort_by:?}"))
    })?;
    resources.sort_by(|a, b| {
        let (ka, kb) = (key.extract(a), key.extract(b));
        match (ka, kb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = key.compare(x, y);
                match order {
                    SortOrder::Ascending => o,
                    SortOrder::Descending => o.reverse(),
                }
            }
        }
    });
    Ok(())
}

/// Whether `sort_by` names an attribute of this resource type (root `.search` sorts Users and
/// Groups by one attribute that only one of them may have).
pub fn sortable(sort_by: &str, schema: &ResourceSchema) -> bool {
    SortKey::resolve(sort_by, schema).is_some()
}

struct SortKey<'a> {
    ext: Option<&'a str>,
    def: &'a AttributeDef,
    sub: Option<&'a AttributeDef>,
}

impl<'a> SortKey<'a> {
    fn resolve(path: &str, schema: &'a ResourceSchema) -> Option<Self> {
        let (urn, rest) = split_urn(path.trim());
        let (name, sub) = match rest.split_once('.') {
            Some((n, s)) => (n, Some(s)),
            None => (rest, None),
        };
        let r = schema.resolve(urn, name)?;
        let sub = match sub {
            Some(s) => Some(r.def.sub(s)?),
            None if r.def.ty == AttrType::Complex => r.def.sub("value"),
            None => None,
        };
        let ext = match r.location {
            AttrLocation::Core => None,
            AttrLocation::Extension(u) => Some(u),
        };
        Some(SortKey {
            ext,
            def: r.def,
            sub,
        })
    }

    fn extract<'v>(&self, resource: &'v Value) -> Option<&'v Value> {
        let container = match self.ext {
            Some(u) => resource.get(u)?,
            None => resource,
        };
        let v = container.get(&self.def.name)?;
        let element = match v {
            Value::Array(items) => items
                .iter()
                .find(|i| i.get("primary").and_then(Value::as_bool) == Some(true))
                .or_else(|| items.first())?,
            other => other,
        };
        let leaf = match self.sub {
            Some(s) => element.get(&s.name)?,
            None => element,
        };
        (!leaf.is_null()).then_some(leaf)
    }

    fn compare(&self, a: &Value, b: &Value) -> Ordering {
        let def = self.sub.unwrap_or(self.def);
        match (a, b) {
            (Value::String(x), Value::String(y)) => {
                if def.ty == AttrType::DateTime {
                    match (
                        chrono::DateTime::parse_from_rfc3339(x),
                        chrono::DateTime::parse_from_rfc3339(y),
                    ) {
                        (Ok(p), Ok(q)) => return p.cmp(&q),
                        _ => return x.cmp(y),
                    }
                }
                if def.case_exact {
                    x.cmp(y)
                } else {
                    x.to_lowercase().cmp(&y.to_lowercase())
                }
            }
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0))
                .unwrap_or(Ordering::Equal),
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            _ => a.to_string().cmp(&b.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_math() {
        let q = ListQuery::from_params([("startIndex", "0"), ("count", "-5")]).unwrap();
        assert_eq!(q.start_index, 1);
        assert_eq!(q.count, Some(0));
        assert_eq!(q.page_range(10), 0..0);
        let q = ListQuery::from_params([("startIndex", "6"), ("count", "5")]).unwrap();
        assert_eq!(q.page_range(11), 5..10);
        assert_eq!(q.page_range(3), 3..3);
        let q = ListQuery::from_params([("STARTINDEX", "11"), ("Count", "5")]).unwrap();
        assert_eq!(q.page_range(11), 10..11);
        let q = ListQuery::from_params([("count", "100000")]).unwrap();
        assert_eq!(q.page_size(), MAX_PAGE_SIZE);
    }

    #[test]
    fn garbage_numbers_are_invalid_value() {
        let e = ListQuery::from_params([("count", "ten")]).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidValue));
        assert!(ListQuery::from_params([("sortOrder", "sideways")]).is_err());
        assert!(ListQuery::from_params([("aadOptscim062020", "")]).is_ok());
    }

    #[test]
    fn list_response_shape() {
        let r = list_response(0, 1, vec![]);
        assert_eq!(r["totalResults"], 0);
        assert_eq!(r["itemsPerPage"], 0);
        assert_eq!(r["startIndex"], 1);
        assert_eq!(r["Resources"], json!([]));
        assert_eq!(r["schemas"][0], urn::LIST_RESPONSE);
    }

    #[test]
    fn search_request_body() {
        let q = ListQuery::from_search_request(&json!({
            "schemas": [urn::SEARCH_REQUEST],
            "attributes": ["displayName", "userName"],
            "excludedAttributes": null,
            "filter": "displayName sw \"smith\"",
            "startIndex": 1, "count": 10, "sortOrder": "descending"
        }))
        .unwrap();
        assert_eq!(q.attributes.as_deref(), Some("displayName,userName"));
        assert_eq!(q.count, Some(10));
        assert_eq!(q.sort_order, SortOrder::Descending);
        assert!(q.filter.is_some());
        assert!(ListQuery::from_search_request(&json!({"schemas": ["urn:x"]})).is_err());
        assert!(ListQuery::from_search_request(&json!([1])).is_err());
        assert!(ListQuery::from_search_request(&json!({"count": "x"})).is_err());
    }

    #[test]
    fn sorting_is_schema_aware() {
        let s = ResourceSchema::user();
        let mut rs = vec![
            json!({"id": "1", "userName": "bob", "emails": [{"value": "z@x"}, {"value": "a@x", "primary": true}]}),
            json!({"id": "2", "userName": "Alice", "emails": [{"value": "m@x"}]}),
            json!({"id": "3"}),
            json!({"id": "4", "userName": "carol"}),
        ];
        sort_resources(&mut rs, "USERNAME", SortOrder::Ascending, &s).unwrap();
        let ids: Vec<_> = rs.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["2", "1", "4", "3"]);
        sort_resources(&mut rs, "userName", SortOrder::Descending, &s).unwrap();
        let ids: Vec<_> = rs.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["4", "1", "2", "3"]);
        sort_resources(&mut rs, "emails", SortOrder::Ascending, &s).unwrap();
        let ids: Vec<_> = rs.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["1", "2", "4", "3"]);
        assert!(sort_resources(&mut rs, "nosuch", SortOrder::Ascending, &s).is_err());
    }
}

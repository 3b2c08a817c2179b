//! TEMPORARY STUB so the server compiles while the real parser is written on h/filter.
use crate::scim::error::ScimError;
use crate::scim::schema::{AttributeDef, ResourceSchema};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
}
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Present(AttrPath),
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: CompValue,
    },
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}
pub fn parse_filter(input: &str) -> Result<Filter, ScimError> {
    let mut it = input.splitn(3, ' ');
    let (Some(a), Some(_), Some(v)) = (it.next(), it.next(), it.next()) else {
        return Err(ScimError::invalid_filter("stub"));
    };
    let (urn, name) = crate::scim::schema::split_urn(a);
    let (name, sub) = match name.split_once('.') {
        Some((n, s)) => (n.to_string(), Some(s.to_string())),
        None => (name.to_string(), None),
    };
    Ok(Filter::Compare {
        path: AttrPath {
            urn: urn.map(str::to_string),
            name,
            sub,
        },
        op: CompareOp::Eq,
        value: CompValue::String(v.trim_matches('"').to_string()),
    })
}
impl Filter {
    pub fn matches(&self, resource: &Value, _schema: &ResourceSchema) -> bool {
        if let Filter::Compare {
            path,
            value: CompValue::String(s),
            ..
        } = self
        {
            return resource
                .get(&path.name)
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(s));
        }
        false
    }
    pub fn matches_element(&self, _element: &Value, _parent: &AttributeDef) -> bool {
        false
    }
    pub fn validate(&self, _schema: &ResourceSchema) -> Result<(), ScimError> {
        Ok(())
    }
    pub fn as_equality(&self) -> Option<(&AttrPath, &CompValue)> {
        match self {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } => Some((path, value)),
            _ => None,
        }
    }
    pub fn conjuncts(&self) -> Vec<&Filter> {
        vec![self]
    }
}

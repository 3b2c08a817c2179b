//! Tableau's wire format, both directions, XML and JSON.
//!
//! Tableau speaks XML by default and JSON when asked (`Content-Type` / `Accept:
//! application/json`). The JSON form is a mechanical mapping of the XML one: elements become
//! keys, attributes become keys inside them **with string values** (pagination included), and a
//! collection element holds its repeated children as an array (`{"users":{"user":[…]}}`, empty:
//! `{"users":{}}`) [reference A.1, JSON-obs]. So both directions go through one small element
//! tree, and every handler is written once.

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::events::Event;
use serde_json::{Map, Value};

/// The XML namespace of every `tsResponse` [TSC-assets].
const TS_NS: &str = "http://tableau.com/api";

/// A response element.
#[derive(Debug, Clone)]
pub struct El {
    pub name: &'static str,
    pub attrs: Vec<(&'static str, String)>,
    pub children: Vec<El>,
    /// Text content (`<restApiVersion>3.24</restApiVersion>`).
    pub text: Option<String>,
    /// A collection (`users`, `groups`): in JSON its children form an array under their name.
    pub list: bool,
}

impl El {
    pub fn new(name: &'static str) -> Self {
        El {
            name,
            attrs: Vec::new(),
            children: Vec::new(),
            text: None,
            list: false,
        }
    }

    pub fn list(name: &'static str, children: Vec<El>) -> Self {
        El {
            children,
            list: true,
            ..El::new(name)
        }
    }

    pub fn attr(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.attrs.push((k, v.into()));
        self
    }

    pub fn opt_attr(self, k: &'static str, v: Option<&str>) -> Self {
        match v {
            Some(v) => self.attr(k, v),
            None => self,
        }
    }

    pub fn child(mut self, c: El) -> Self {
        self.children.push(c);
        self
    }

    pub fn text(mut self, t: impl Into<String>) -> Self {
        self.text = Some(t.into());
        self
    }
}

/// Which form the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Xml => "application/xml;charset=utf-8",
            Format::Json => "application/json;charset=utf-8",
        }
    }
}

/// Renders `<tsResponse>` with the given children.
pub fn render(format: Format, children: &[El]) -> String {
    match format {
        Format::Xml => {
            let mut s = String::with_capacity(512);
            s.push_str("<?xml version='1.0' encoding='UTF-8'?><tsResponse xmlns=\"");
            s.push_str(TS_NS);
            s.push_str("\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"http://tableau.com/api https://help.tableau.com/samples/en-us/rest_api/ts-api_3_24.xsd\">");
            for c in children {
                write_xml(&mut s, c);
            }
            s.push_str("</tsResponse>");
            s
        }
        Format::Json => {
            let mut m = Map::new();
            for c in children {
                m.insert(c.name.to_string(), to_json(c));
            }
            Value::Object(m).to_string()
        }
    }
}

fn write_xml(s: &mut String, el: &El) {
    s.push('<');
    s.push_str(el.name);
    for (k, v) in &el.attrs {
        let _ = write!(s, " {k}=\"{}\"", quick_xml::escape::escape(v.as_str()));
    }
    if el.children.is_empty() && el.text.is_none() {
        s.push_str("/>");
        return;
    }
    s.push('>');
    if let Some(t) = &el.text {
        s.push_str(&quick_xml::escape::escape(t.as_str()));
    }
    for c in &el.children {
        write_xml(s, c);
    }
    let _ = write!(s, "</{}>", el.name);
}

fn to_json(el: &El) -> Value {
    if el.attrs.is_empty() && el.children.is_empty() && !el.list {
        if let Some(t) = &el.text {
            return Value::String(t.clone());
        }
    }
    let mut m = Map::new();
    for (k, v) in &el.attrs {
        m.insert((*k).to_string(), Value::String(v.clone()));
    }
    if let Some(t) = &el.text {
        m.insert("value".into(), Value::String(t.clone()));
    }
    if el.list {
        if let Some(first) = el.children.first() {
            let items = el.children.iter().map(to_json).collect();
            m.insert(first.name.to_string(), Value::Array(items));
        }
    } else {
        for c in &el.children {
            m.insert(c.name.to_string(), to_json(c));
        }
    }
    Value::Object(m)
}

/// A request element (`tsRequest` and below), from XML or JSON.
#[derive(Debug, Clone, Default)]
pub struct ReqEl {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<ReqEl>,
}

impl ReqEl {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&ReqEl> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Parses a request body into its root (`tsRequest`); `None` when it is not well formed.
pub fn parse(format: Format, body: &[u8]) -> Option<ReqEl> {
    match format {
        Format::Json => {
            let v: Value = serde_json::from_slice(body).ok()?;
            let Value::Object(m) = v else { return None };
            let mut root = ReqEl {
                name: "tsRequest".into(),
                ..Default::default()
            };
            // Some clients wrap the body in `{"tsRequest": {...}}`; accept both.
            let m = match m.get("tsRequest") {
                Some(Value::Object(inner)) if m.len() == 1 => inner.clone(),
                _ => m,
            };
            json_into(&mut root, &m);
            Some(root)
        }
        Format::Xml => parse_xml(body),
    }
}

fn json_scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn json_into(el: &mut ReqEl, m: &Map<String, Value>) {
    for (k, v) in m {
        match v {
            Value::Object(inner) => {
                let mut c = ReqEl {
                    name: k.clone(),
                    ..Default::default()
                };
                json_into(&mut c, inner);
                el.children.push(c);
            }
            Value::Array(items) => {
                for item in items {
                    let mut c = ReqEl {
                        name: k.clone(),
                        ..Default::default()
                    };
                    if let Value::Object(inner) = item {
                        json_into(&mut c, inner);
                    }
                    el.children.push(c);
                }
            }
            Value::Null => {}
            other => {
                if let Some(s) = json_scalar(other) {
                    el.attrs.push((k.clone(), s));
                }
            }
        }
    }
}

fn local(name: &[u8]) -> String {
    let n = match name.iter().position(|b| *b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    String::from_utf8_lossy(n).into_owned()
}

fn parse_xml(body: &[u8]) -> Option<ReqEl> {
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<ReqEl> = Vec::new();
    let mut root: Option<ReqEl> = None;
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).ok()?;
        let is_empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let mut el = ReqEl {
                    name: local(e.name().as_ref()),
                    ..Default::default()
                };
                for a in e.attributes() {
                    let a = a.ok()?;
                    let key = local(a.key.as_ref());
                    if a.key.as_ref().starts_with(b"xmlns") {
                        continue;
                    }
                    let v: Cow<str> = a.unescape_value().ok()?;
                    el.attrs.push((key, v.into_owned()));
                }
                if is_empty {
                    match stack.last_mut() {
                        Some(p) => p.children.push(el),
                        None if root.is_none() => root = Some(el),
                        None => return None,
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop()?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return None,
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return None;
    }
    root
}

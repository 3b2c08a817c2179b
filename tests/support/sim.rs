//! Test helpers for the simulator tests and the connector tests: start a simulator on a free
//! loopback port, read what it was sent (`/__sim/stats`), and check response bodies against the
//! vendor's published Swagger 2.0 schemas.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use scim_bridge::sim::{self, RunningSim, SimOptions, Vendor};
use serde_json::{Map, Value};

pub async fn spawn(vendor: Vendor, opts: SimOptions) -> RunningSim {
    sim::start(vendor, "127.0.0.1:0".parse().unwrap(), opts)
        .await
        .expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()
        .unwrap()
}

pub async fn stats(base: &str) -> Value {
    client()
        .get(format!("{base}/__sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `vendor`'s simulator with `seed`, the simulator switches `switches` (`--sim-switch K=V`) and
/// a token lifetime cap.
pub async fn spawn_with(
    vendor: Vendor,
    seed: u64,
    switches: &[(&str, &str)],
    token_ttl_s: Option<u64>,
) -> RunningSim {
    let opts = SimOptions {
        token_ttl_s,
        seed: Some(seed),
        switches: switches
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..SimOptions::default()
    };
    spawn(vendor, opts).await
}

/// Vendor calls by route since `before` (both from `/__sim/stats`).
pub async fn calls_since(base: &str, before: &Value) -> BTreeMap<String, u64> {
    let now = stats(base).await;
    let mut out = BTreeMap::new();
    if let Some(routes) = now["by_route"].as_object() {
        for (route, n) in routes {
            let was = before["by_route"][route].as_u64().unwrap_or(0);
            let n = n.as_u64().unwrap_or(0);
            if n > was {
                out.insert(route.clone(), n - was);
            }
        }
    }
    out
}

/// All the calls of `calls_since`.
pub fn total(calls: &BTreeMap<String, u64>) -> u64 {
    calls.values().sum()
}

// ----------------------------------------------------------------------------------------------
// Swagger 2.0 → JSON Schema
// ----------------------------------------------------------------------------------------------

/// Where the vendor specs are: `SIM_SPEC_DIR`, else the shared reference next to the checkout
/// (`/work/main` and `/work/wt/NAME` both sit beside `/work/shared`).
fn spec_path(file: &str) -> String {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let candidates = [
        std::env::var("SIM_SPEC_DIR").unwrap_or_default(),
        format!("{manifest}/../shared/reference/vendor-specs"),
        format!("{manifest}/../../shared/reference/vendor-specs"),
        "/work/shared/reference/vendor-specs".to_string(),
    ];
    let dir = candidates
        .iter()
        .find(|d| !d.is_empty() && std::path::Path::new(d).join(file).exists())
        .unwrap_or_else(|| panic!("vendor spec {file} not found; set SIM_SPEC_DIR"));
    format!("{dir}/{file}")
}

fn load_yaml(file: &str) -> Value {
    let text =
        std::fs::read_to_string(spec_path(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {file}: {e}"))
}

pub fn sisense_v1() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| load_yaml("sisense/rest-v1.0.swagger.yaml"))
}

pub fn sisense_v09() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| load_yaml("sisense/rest-v0.9.swagger.yaml"))
}

/// Keywords that are Swagger-only (or annotations the validator would trip on) are dropped;
/// `#/definitions/...` references are inlined.
fn to_json_schema(node: &Value, defs: &Value, depth: usize) -> Value {
    assert!(depth < 64, "runaway $ref recursion");
    match node {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let name = r
                    .strip_prefix("#/definitions/")
                    .unwrap_or_else(|| panic!("unsupported $ref {r}"));
                let target = defs
                    .get(name)
                    .unwrap_or_else(|| panic!("missing definition {name}"));
                return to_json_schema(target, defs, depth + 1);
            }
            let mut out = Map::new();
            for (k, v) in m {
                if k.starts_with("x-")
                    || matches!(
                        k.as_str(),
                        "discriminator"
                            | "readOnly"
                            | "example"
                            | "xml"
                            | "externalDocs"
                            | "collectionFormat"
                            | "description"
                            | "title"
                    )
                {
                    continue;
                }
                if k == "properties" {
                    // Property names are data, not keywords: keep every one.
                    let props = v
                        .as_object()
                        .map(|p| {
                            p.iter()
                                .map(|(pk, pv)| (pk.clone(), to_json_schema(pv, defs, depth + 1)))
                                .collect::<Map<_, _>>()
                        })
                        .unwrap_or_default();
                    out.insert(k.clone(), Value::Object(props));
                    continue;
                }
                if k == "type" && v == "file" {
                    continue;
                }
                out.insert(k.clone(), to_json_schema(v, defs, depth + 1));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| to_json_schema(v, defs, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The JSON Schema of one documented response: `paths[path][method].responses[status].schema`.
pub fn response_schema(spec: &Value, path: &str, method: &str, status: u16) -> Value {
    let op = spec["paths"]
        .get(path)
        .and_then(|p| p.get(method))
        .unwrap_or_else(|| panic!("spec has no {method} {path}"));
    let schema = op["responses"]
        .get(status.to_string())
        .and_then(|r| r.get("schema"))
        .unwrap_or_else(|| panic!("spec has no schema for {method} {path} {status}"));
    to_json_schema(schema, &spec["definitions"], 0)
}

pub fn definition_schema(spec: &Value, name: &str) -> Value {
    to_json_schema(&spec["definitions"][name], &spec["definitions"], 0)
}

/// Asserts `body` validates against `schema`, and that every top-level (or array item) property
/// is declared by the spec, except the `extra` ones the simulator adds knowingly.
pub fn assert_conforms(schema: &Value, body: &Value, extra: &[&str], what: &str) {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("{what}: schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: body does not match the published schema:\n{}\nbody: {body}",
        errors.join("\n")
    );
    let extra: HashSet<&str> = extra.iter().copied().collect();
    let check_obj = |schema: &Value, obj: &Value| {
        let (Some(props), Some(o)) = (declared_properties(schema), obj.as_object()) else {
            return;
        };
        for k in o.keys() {
            assert!(
                props.contains(k.as_str()) || extra.contains(k.as_str()),
                "{what}: field `{k}` is not in the published schema (declared: {props:?})"
            );
        }
    };
    match body {
        Value::Array(items) => {
            for it in items {
                check_obj(&schema["items"], it);
            }
        }
        other => check_obj(schema, other),
    }
}

fn declared_properties(schema: &Value) -> Option<HashSet<String>> {
    let mut out = HashSet::new();
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        out.extend(p.keys().cloned());
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            out.extend(declared_properties(s).unwrap_or_default());
        }
    }
    (!out.is_empty()).then_some(out)
}

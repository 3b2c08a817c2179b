//! What scim2-tester does with the published schema (idp-behavior §3.1): every writable attribute
//! in `/Schemas` is PATCHed with add, replace and remove, and a GET must show each value round-trip.
//! Publishing an attribute the connector cannot keep fails here.

use crate::helpers::*;
use serde_json::{json, Value};

/// A sample value for a simple attribute definition from `/Schemas`.
fn sample(def: &Value, salt: &str) -> Option<Value> {
    let name = def["name"].as_str()?;
    if let Some(c) = def["canonicalValues"].as_array().and_then(|c| c.first()) {
        if def["type"] == "string" {
            return Some(c.clone());
        }
    }
    Some(match def["type"].as_str()? {
        "string" => json!(format!("{name}-{salt}")),
        "boolean" => json!(salt == "b"),
        "integer" => json!(7),
        "decimal" => json!(1.5),
        "dateTime" => json!("2024-05-06T07:08:09Z"),
        "reference" => json!(format!("https://example.com/{name}/{salt}")),
        "binary" => json!("TWFu"),
        _ => return None,
    })
}

fn writable(def: &Value) -> bool {
    matches!(
        def["mutability"].as_str(),
        Some("readWrite") | Some("writeOnly")
    ) && def["returned"] != "never"
}

/// (path, value, where the value shows up in a GET) for every writable attribute.
fn plan(schema: &Value, salt: &str) -> Vec<(String, Value)> {
    let urn = schema["id"].as_str().unwrap();
    let core = urn == CORE_USER || urn == CORE_GROUP;
    let qualify = |p: &str| {
        if core {
            p.to_string()
        } else {
            format!("{urn}:{p}")
        }
    };
    let mut out = Vec::new();
    for a in schema["attributes"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        if !writable(a) || name == "userName" {
            continue;
        }
        if name == "members" || name == "manager" {
            continue; // references to other resources: covered by the group and Entra tests
        }
        let multi = a["multiValued"] == true;
        if a["type"] == "complex" {
            let mut element = serde_json::Map::new();
            for s in a["subAttributes"].as_array().unwrap() {
                if writable(s) {
                    if let Some(v) = sample(s, salt) {
                        if s["name"] == "primary" {
                            element.insert("primary".into(), json!(true));
                        } else {
                            element.insert(s["name"].as_str().unwrap().into(), v);
                        }
                    }
                }
            }
            let v = Value::Object(element);
            out.push((qualify(name), if multi { json!([v]) } else { v }));
        } else if let Some(v) = sample(a, salt) {
            out.push((qualify(name), if multi { json!([v]) } else { v }));
        }
    }
    out
}

/// The value at a (possibly URN-qualified) top-level path of a resource.
fn at<'a>(resource: &'a Value, path: &str) -> &'a Value {
    match path.rsplit_once(':') {
        Some((urn, name)) => &resource[urn][name],
        None => &resource[path],
    }
}

/// `got` holds everything `want` says (the server may add e.g. `type` or `$ref`).
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| contains(gv, v))),
        (Value::Array(g), Value::Array(w)) => {
            w.iter().all(|wv| g.iter().any(|gv| contains(gv, wv)))
        }
        (Value::Number(g), Value::Number(w)) => g.as_f64() == w.as_f64(),
        (g, w) => g == w,
    }
}

/// Guards against a vacuous run: what RFC 7643 defines as writable and the bridge publishes.
fn min_planned(urn: &str) -> usize {
    match urn {
        CORE_USER => 15,
        ENTERPRISE => 5,
        _ => 1,
    }
}

async fn round_trip(app: &TestApp, resource_path: &str, schema_urns: &[&str]) {
    let mut failures = Vec::new();
    for urn in schema_urns {
        let schema = app.get(&format!("/Schemas/{urn}")).await.ok_json();
        for salt in ["a", "b"] {
            for (path, value) in plan(&schema, salt) {
                for op in ["add", "replace"] {
                    let r = app
                        .patch_ops(resource_path, json!([{"op":op,"path":path,"value":value}]))
                        .await;
                    if r.status != 200 {
                        failures.push(format!("{op} {path}: {} {}", r.status, r.text));
                        continue;
                    }
                    let got = app.get(resource_path).await.ok_json();
                    if !contains(at(&got, &path), &value) {
                        failures.push(format!(
                            "{op} {path} = {value}: GET shows {}",
                            at(&got, &path)
                        ));
                    }
                    if op == "replace"
                        && value.is_array()
                        && at(&got, &path).as_array().map(Vec::len) != Some(1)
                    {
                        failures.push(format!(
                            "replace {path} should leave one element: {}",
                            at(&got, &path)
                        ));
                    }
                }
            }
        }
        let planned = plan(&schema, "a");
        assert!(
            planned.len() >= min_planned(urn),
            "{urn}: only {} attributes planned",
            planned.len()
        );
        for (path, _) in planned {
            if path == "displayName" && *urn == CORE_GROUP {
                continue; // required
            }
            let r = app
                .patch_ops(resource_path, json!([{"op":"remove","path":path}]))
                .await;
            if r.status != 200 {
                failures.push(format!("remove {path}: {} {}", r.status, r.text));
                continue;
            }
            let got = app.get(resource_path).await.ok_json();
            if !is_cleared(at(&got, &path)) {
                failures.push(format!(
                    "remove {path}: GET still shows {}",
                    at(&got, &path)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} round-trip failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_published_user_attribute_round_trips() {
    let app = spawn_app().await;
    let id = app.create_user("roundtrip@example.com").await;
    round_trip(&app, &format!("/Users/{id}"), &[CORE_USER, ENTERPRISE]).await;
    // The user is still whole.
    let got = app.get(&format!("/Users/{id}")).await.ok_json();
    assert_eq!(got["userName"], "roundtrip@example.com");
}

#[tokio::test]
async fn every_published_group_attribute_round_trips() {
    let app = spawn_app().await;
    let gid = app.create_group("Round trip").await;
    round_trip(&app, &format!("/Groups/{gid}"), &[CORE_GROUP]).await;
}

#[tokio::test]
async fn put_with_every_attribute_round_trips() {
    let app = spawn_app().await;
    let id = app.create_user("put.roundtrip@example.com").await;
    let path = format!("/Users/{id}");
    let mut body =
        json!({"schemas":[CORE_USER, ENTERPRISE],"userName":"put.roundtrip@example.com"});
    for urn in [CORE_USER, ENTERPRISE] {
        let schema = app.get(&format!("/Schemas/{urn}")).await.ok_json();
        for (p, v) in plan(&schema, "a") {
            match p.rsplit_once(':') {
                Some((u, n)) => body[u][n] = v,
                None => body[p.as_str()] = v,
            }
        }
    }
    let r = app.put(&path, &body).await;
    r.ok_json();
    let got = app.get(&path).await.ok_json();
    let mut missing = Vec::new();
    for urn in [CORE_USER, ENTERPRISE] {
        let schema = app.get(&format!("/Schemas/{urn}")).await.ok_json();
        for (p, v) in plan(&schema, "a") {
            if !contains(at(&got, &p), &v) {
                missing.push(format!("{p} = {v}: GET shows {}", at(&got, &p)));
            }
        }
    }
    assert!(missing.is_empty(), "PUT lost:\n{}", missing.join("\n"));
}

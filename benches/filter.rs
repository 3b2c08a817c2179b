//! Criterion benches for the filter module's performance targets: parsing the Okta lookup and a
//! complex filter, and evaluating parsed filters against a typical User (RFC 7643 §8.2).

use criterion::{criterion_group, criterion_main, Criterion};
use scim_bridge::scim::filter::parse_filter;
use scim_bridge::scim::path::parse_path;
use scim_bridge::scim::schema::ResourceSchema;
use serde_json::json;
use std::hint::black_box;

const SIMPLE: &str = r#"userName eq "bjensen@example.com""#;
const COMPLEX: &str = r#"emails[type eq "work" and value co "@example.com"] or (title pr and not (userType eq "Intern"))"#;
const ENTRA: &str = r#"emails[type eq "work"].value eq "BJensen@Example.com""#;

fn typical_user() -> serde_json::Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "701984",
        "userName": "bjensen@example.com",
        "name": {"formatted": "Ms. Barbara J Jensen, III", "familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "title": "Tour Guide",
        "userType": "Employee",
        "active": true,
        "emails": [
            {"value": "babs@jensen.org", "type": "home"},
            {"value": "bjensen@example.com", "type": "work", "primary": true}
        ],
        "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
        "groups": [{"value": "e9e30dba-f08f-4109-8486-d5c6a331660a", "display": "Tour Guides"}],
        "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z",
                 "lastModified": "2011-05-13T04:42:34Z", "version": "W/\"3694e05e9dff591\""},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "employeeNumber": "701984", "costCenter": "4130",
            "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
        }
    })
}

fn parse(c: &mut Criterion) {
    c.bench_function("parse/simple_eq", |b| {
        b.iter(|| parse_filter(black_box(SIMPLE)))
    });
    c.bench_function("parse/complex", |b| {
        b.iter(|| parse_filter(black_box(COMPLEX)))
    });
    c.bench_function("parse/patch_path", |b| {
        b.iter(|| parse_path(black_box(r#"emails[type eq "work"].value"#)))
    });
}

fn evaluate(c: &mut Criterion) {
    let schema = ResourceSchema::user();
    let user = typical_user();
    for (name, text) in [
        ("simple_eq", SIMPLE),
        ("complex", COMPLEX),
        ("entra", ENTRA),
    ] {
        let filter = match parse_filter(text) {
            Ok(f) => f,
            Err(e) => panic!("bench filter {text}: {e}"),
        };
        assert!(
            filter.matches(&user, &schema),
            "{text} should match the bench user"
        );
        c.bench_function(&format!("eval/{name}"), |b| {
            b.iter(|| black_box(&filter).matches(black_box(&user), &schema))
        });
        let bound = filter.bind(&schema);
        c.bench_function(&format!("eval_bound/{name}"), |b| {
            b.iter(|| black_box(&bound).matches(black_box(&user)))
        });
    }
}

criterion_group!(benches, parse, evaluate);
criterion_main!(benches);

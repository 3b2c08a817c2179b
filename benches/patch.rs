//! PATCH engine cost. Target: a 5-operation Entra PATCH applied to a typical user in ≤ 10 µs.
//! `cargo bench --bench patch`
//!
//! Each case runs twice: `wall/…` with criterion's wall clock, and `cpu/…` with the thread's
//! on-CPU time from /proc/thread-self/schedstat. On a shared 2-core box the wall clock also
//! counts the time other processes hold the core; the CPU figure is what the code costs. The
//! kernel updates that counter about once per scheduler tick, so the CPU group samples flat
//! (equal, long samples) to keep the tick small against each sample.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use scim_bridge::scim::patch::{apply_patch, PatchOptions, PatchRequest};
use scim_bridge::scim::schema::ResourceSchema;
use serde_json::{json, Value};
use std::hint::black_box;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn typical_user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "bjensen",
        "userName": "bjensen@example.com",
        "name": {"formatted": "Ms. Barbara J Jensen III", "familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "title": "Tour Guide",
        "locale": "en-US",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
        "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
                       "region": "CA", "postalCode": "91608", "country": "USA", "primary": true}],
        ENT: {"employeeNumber": "701984", "department": "Tour Operations",
              "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}},
        "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z",
                 "lastModified": "2011-05-13T04:42:34Z", "location": "https://example.com/v2/Users/2819c223"}
    })
}

/// Entra's default (no-flag) shapes, one op per attribute (idp-behavior.md §2.3).
fn entra_five_ops() -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
        {"op": "Replace", "path": "userName", "value": "5b50c7fa@testuser.com"},
        {"op": "Replace", "path": format!("{ENT}:employeeNumber"), "value": "Eqpj"},
        {"op": "Replace", "path": "active", "value": "False"}
    ]})
}

fn group_with_members(n: usize) -> Value {
    let members: Vec<Value> = (0..n)
        .map(|i| json!({"value": format!("user-{i:06}"), "display": format!("User {i}")}))
        .collect();
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g1",
           "displayName": "Everyone", "members": members})
}

/// Nanoseconds this thread has spent on a CPU (Linux schedstat, first field).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct CpuTime;

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e3, "µs")
        } else {
            (1e6, "ms")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, _: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns().saturating_sub(i)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

fn bench_wall(c: &mut Criterion) {
    bench(c, "wall");
}

fn bench_cpu(c: &mut Criterion<CpuTime>) {
    bench(c, "cpu");
}

fn bench<M: Measurement + 'static>(c: &mut Criterion<M>, clock: &str) {
    let mut c = c.benchmark_group(clock);
    if clock == "cpu" {
        c.sampling_mode(SamplingMode::Flat).sample_size(20);
    }
    let user_schema = ResourceSchema::user();
    let group_schema = ResourceSchema::group();
    let user = typical_user();
    let body = entra_five_ops();
    let req = PatchRequest::from_json(&body).expect("valid body");
    let opts = PatchOptions::default();

    // The floor: apply_patch must hand back an owned copy of the resource.
    c.bench_function("baseline/clone_and_drop_user", |b| {
        b.iter(|| black_box(&user).clone())
    });

    c.bench_function("apply/entra_5_ops_user", |b| {
        b.iter(|| apply_patch(black_box(&user), black_box(&req), &user_schema, opts).unwrap())
    });
    c.bench_function("parse+apply/entra_5_ops_user", |b| {
        b.iter(|| {
            let req = PatchRequest::from_json(black_box(&body)).unwrap();
            apply_patch(black_box(&user), &req, &user_schema, opts).unwrap()
        })
    });

    let okta = PatchRequest::from_json(&json!({
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "value": {"id": "g1", "displayName": "Everyone"}},
        {"op": "remove", "path": "members[value eq \"user-000500\"]"},
        {"op": "add", "path": "members", "value": [{"value": "new-user", "display": "New"}]}
    ]}))
    .expect("valid body");
    let group = group_with_members(1000);
    c.bench_function("apply/okta_membership_group_1000", |b| {
        b.iter(|| apply_patch(black_box(&group), &okta, &group_schema, opts).unwrap())
    });
    c.finish();
}

criterion_group!(wall, bench_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(CpuTime);
    targets = bench_cpu
}
criterion_main!(wall, cpu);

//! Access review benchmark (issue 13: `report access` over 100,000 users in under 10 s; the
//! console's tenant page in under 1 s at 100,000 users).
//!
//! A real sled store in a temporary directory is filled the way the engine leaves it after a
//! sync, through the same directory and record writes: a Sisense tenant of N users (default
//! 100,000) and a Metabase tenant of N/2 more, each a SCIM user linked to a vendor id (so the
//! review covers 1.5 N accounts, and the console pages a tenant of N), with what the vendor
//! confirmed (role, activation, a last sign-in for most), memberships in 2 of 50 groups, the
//! IdP's mark on 80 % of them, the "found at the vendor" mark on 10 %, and the vendor's role
//! names. Every Metabase account belongs to someone with a Sisense one, so the review groups
//! pairs of rows.
//! Filling is not timed against the target (it stands in for weeks of syncs).
//!
//! Then, timed: the full review (`governance::access::rows`, every tenant, grouped by email)
//! and its rendering in each format (CSV, JSON Lines, HTML, into memory), one tenant's first
//! page and a page deep in it (`page`), and the review with the store reopened cold. The
//! process exits non-zero when the review plus its CSV takes 10 s or more, or a page 1 s or
//! more.
//!
//! `cargo bench --bench access_report`; size via `ACCESS_BENCH_USERS` (default 100,000).

use scim_bridge::config::{
    MetabaseAuth, PersonKey, RoleRules, Secret, SisenseApiVersion, SisenseDeprovision, SisenseMode,
    TenantConfig, TenantId, Url, VendorConfig,
};
use scim_bridge::engine::adapter::Profile;
use scim_bridge::engine::observe::{FOUND, ROLE_NAMES};
use scim_bridge::engine::state::{put, AppliedUser};
use scim_bridge::governance::access::{self, Format};
use scim_bridge::scim::patch::MemberOp;
use scim_bridge::scim::schema::{ResourceKind, SchemaRegistry};
use scim_bridge::store::directory::Directory;
use scim_bridge::store::{Batch, Store};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const GROUPS: usize = 50;
const COMMIT_EVERY: usize = 2_000;
const REVIEW_TARGET: Duration = Duration::from_secs(10);
const PAGE_TARGET: Duration = Duration::from_secs(1);

fn tenant(id: &str, vendor: VendorConfig) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(id).unwrap(),
        tokens: vec![Secret::new("bench-token-0123456789abcdef0123")],
        jwt_secret: None,
        vendor,
        roles: RoleRules::default(),
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    }
}

fn tenants() -> Vec<TenantConfig> {
    // The vendors are never called: the review reads the store only.
    let url = Url::parse("http://127.0.0.1:9/").unwrap();
    vec![
        tenant(
            "bench-sisense",
            VendorConfig::Sisense {
                base_url: url.clone(),
                username: "admin@sisense.local".into(),
                password: Secret::new("admin"),
                api_version: SisenseApiVersion::V1,
                mode: SisenseMode::Rest,
                scim_token: None,
                deprovision: SisenseDeprovision::Deactivate,
            },
        ),
        tenant(
            "bench-metabase",
            VendorConfig::Metabase {
                base_url: url,
                auth: MetabaseAuth::ApiKey(Secret::new("mb_bench")),
            },
        ),
    ]
}

/// Fills one tenant's directory with `n` users, the `i`-th the person `first + i`.
fn fill(store: &Store, t: &TenantConfig, first: usize, n: usize) {
    let dir = Directory::open(
        store,
        t.id.as_str(),
        t.vendor.kind(),
        SchemaRegistry::default(),
    )
    .expect("open the directory");
    let roles = ["viewer-id", "designer-id", "admin-id"];
    let names = json!({"viewer-id": "Viewer", "designer-id": "Designer", "admin-id": "Admin"});
    let mut batch = Batch::default();
    put::flag(
        &mut batch,
        ROLE_NAMES,
        serde_json::to_vec(&names).unwrap().as_slice(),
    );
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let (gid, mut doc) = dir.new_doc(
            ResourceKind::Group,
            &json!({"displayName": format!("Group {g:02}, \"team\" <{g}>")}),
        );
        dir.stamp(ResourceKind::Group, &mut doc, None);
        dir.write_doc(&mut batch, ResourceKind::Group, &gid, &doc, None);
        dir.bump_count(&mut batch, ResourceKind::Group, 1);
        dir.link(&mut batch, ResourceKind::Group, &gid, &format!("vg-{g}"));
        groups.push(gid);
    }
    dir.commit(batch).unwrap();
    let mut members: Vec<Vec<Value>> = vec![Vec::new(); GROUPS];
    let mut batch = Batch::default();
    for i in 0..n {
        let p = first + i;
        let email = format!("person{p:06}@example.test");
        let (sid, mut doc) = dir.new_doc(
            ResourceKind::User,
            &json!({
                "userName": email,
                "externalId": format!("ext-{p}"),
                "name": {"givenName": "Person", "familyName": format!("{p}")},
                "emails": [{"value": email, "type": "work", "primary": true}],
                "active": p % 17 != 0,
            }),
        );
        dir.stamp(ResourceKind::User, &mut doc, None);
        dir.write_doc(&mut batch, ResourceKind::User, &sid, &doc, None);
        dir.bump_count(&mut batch, ResourceKind::User, 1);
        let vid = format!("{}-{p:08}", t.vendor.kind());
        dir.link(&mut batch, ResourceKind::User, &sid, &vid);
        let applied = AppliedUser {
            vendor_id: vid,
            profile: Some(Profile {
                login: email.clone(),
                email: Some(email.clone()),
                given_name: Some("Person".into()),
                family_name: Some(format!("{p}")),
                ..Profile::default()
            }),
            active: Some(p % 17 != 0),
            role: Some(roles[p % roles.len()].to_string()),
            groups: None,
            last_login: (p % 5 != 0)
                .then(|| format!("2024-{:02}-{:02}T09:30:00Z", 1 + p % 12, 1 + p % 28)),
        };
        put::applied_user(&mut batch, &sid, &applied);
        if p % 5 != 0 {
            put::idp_written(&mut batch, &sid);
        }
        if p % 10 == 0 || p % 10 == 1 {
            put::flag(&mut batch, &format!("{FOUND}{sid}"), b"");
        }
        members[p % GROUPS].push(json!({ "value": sid }));
        members[(p * 7 + 3) % GROUPS].push(json!({ "value": sid }));
        if (i + 1) % COMMIT_EVERY == 0 {
            dir.commit(std::mem::take(&mut batch)).unwrap();
        }
    }
    dir.commit(batch).unwrap();
    for (gid, list) in groups.iter().zip(members) {
        for chunk in list.chunks(COMMIT_EVERY) {
            let mut batch = Batch::default();
            dir.apply_member_ops(&mut batch, gid, &[MemberOp::Add(chunk.to_vec())])
                .unwrap();
            dir.commit(batch).unwrap();
        }
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    println!("{what:<44} {:>9.3} s", took.as_secs_f64());
    (out, took)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is not ours to refuse.
    let users: usize = std::env::var("ACCESS_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let data = tempfile::tempdir().expect("a temporary data dir");
    let tenants = tenants();
    let sisense_users = users;
    let metabase_users = users / 2;
    {
        let store = Store::open(data.path()).expect("open the store");
        timed(
            &format!(
                "fill {} accounts (not timed)",
                sisense_users + metabase_users
            ),
            || {
                fill(&store, &tenants[0], 0, sisense_users);
                fill(&store, &tenants[1], sisense_users / 4, metabase_users);
            },
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.flush()).unwrap();
    }

    let store = Store::open(data.path()).expect("reopen the store");
    let (rows, review) = timed("review, every tenant (cold store)", || {
        access::rows(&store, &tenants, PersonKey::Email, None).expect("review")
    });
    assert_eq!(
        rows.len(),
        sisense_users + metabase_users,
        "one row per account"
    );
    let paired = rows
        .windows(2)
        .filter(|w| w[0].person == w[1].person)
        .count();
    println!(
        "{:<44} {:>9}",
        "people with an account in both tenants", paired
    );
    let mut total = review;
    for format in [Format::Csv, Format::Jsonl, Format::Html] {
        let (text, took) = timed(&format!("render {format:?}"), || {
            access::render(&rows, format)
        });
        println!(
            "{:<44} {:>9} bytes",
            format!("  {format:?} size"),
            text.len()
        );
        if format == Format::Csv {
            total += took;
        }
    }
    let (_, warm) = timed("review, every tenant (warm)", || {
        access::rows(&store, &tenants, PersonKey::Email, None).expect("review")
    });
    let (first, first_page) = timed("console page 1 (50 rows), bench-sisense", || {
        access::page(&store, &tenants, PersonKey::Email, "bench-sisense", 0, 50).expect("page")
    });
    assert_eq!(first.1, sisense_users);
    let (_, deep_page) = timed("console page near the end, bench-sisense", || {
        access::page(
            &store,
            &tenants,
            PersonKey::Email,
            "bench-sisense",
            sisense_users.saturating_sub(50),
            50,
        )
        .expect("page")
    });

    println!(
        "review + CSV: {:.3} s (target < {} s); warm review {:.3} s; pages {:.3} s / {:.3} s (target < {} s)",
        total.as_secs_f64(),
        REVIEW_TARGET.as_secs(),
        warm.as_secs_f64(),
        first_page.as_secs_f64(),
        deep_page.as_secs_f64(),
        PAGE_TARGET.as_secs()
    );
    let mut failed = false;
    if total >= REVIEW_TARGET {
        println!("FAIL: the review of {} accounts took {total:?}", rows.len());
        failed = true;
    }
    if first_page.max(deep_page) >= PAGE_TARGET {
        println!("FAIL: a console page took {:?}", first_page.max(deep_page));
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
}

//! The plan brought up to date from what commits touched (issue 13, `src/engine/plan_cache.rs`)
//! must be the plan built whole. Dry-run tenants on the Sisense simulator (REST: memberships on
//! the user) and the Metabase simulator (memberships on the group), over real sockets and a
//! real store: after each IdP change, a page planned from the last build brought up to date is
//! compared with the whole plan built afresh, item by item and count by count. The changes
//! are the ones whose effect reaches other objects' items: a group's rename moves its members'
//! roles, a login change shows in its groups' member lists, members join and leave, users are
//! deactivated and deleted, a group is deleted.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/metabase_api.rs"]
mod metabase_api;
#[path = "support/sisense_api.rs"]
mod sisense_api;

use idp::{create, group, Idp};
use scim_bridge::config::{
    MetabaseAuth, RoleRule, RoleRules, Secret, SisenseDeprovision, TenantConfig, TenantId, Url,
    VendorConfig,
};
use scim_bridge::engine::plan::{Action, Plan};
use scim_bridge::engine::Engine;
use scim_bridge::sim::{RunningSim, SimOptions, Vendor};
use serde_json::json;
use std::sync::Arc;

const TENANT: &str = "plan-refresh";
const TOKEN: &str = "plan-refresh-token-0123456789abcdef";
/// Metabase users made before the bridge: p0 and p5 in its group "BI Admins", p3 an
/// administrator in its group "Team".
const SEEDED: [&str; 3] = ["p0@acme.test", "p3@acme.test", "p5@acme.test"];

fn tenant(vendor: VendorConfig, admin_role: &str, default_role: &str) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor,
        roles: RoleRules {
            default: Some(default_role.into()),
            rules: vec![
                RoleRule {
                    group: Some("BI Admins".into()),
                    role: admin_role.into(),
                },
                RoleRule {
                    group: Some("Leads".into()),
                    role: admin_role.into(),
                },
            ],
        },
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: true,
        sweep: None,
    }
}

fn url(sim: &RunningSim) -> Url {
    Url::parse(&format!("{}/", sim.base_url())).unwrap()
}

/// A page planned from the last build brought up to date, and the whole plan built afresh,
/// with no commit between them (a background observe may commit: then both are asked again).
/// The first page of a tenant is built whole; every later one must come from the last build.
fn refreshed_and_whole(engine: &Engine, first: bool) -> (Plan, Plan) {
    for _ in 0..20 {
        let before = engine.directory().generation();
        let (whole_before, _) = engine.plan_builds();
        let page = engine.plan_page(0, 1000).unwrap();
        let (whole_after, _) = engine.plan_builds();
        assert!(
            first || whole_after == whole_before,
            "a page was built whole"
        );
        let whole = engine.plan().unwrap();
        if engine.directory().generation() == before {
            return (page, whole);
        }
    }
    panic!("the tenant kept committing");
}

fn assert_same(step: &str, engine: &Engine) {
    let (page, whole) = refreshed_and_whole(engine, step == "created");
    assert_eq!(
        page.counts,
        whole.counts,
        "{step}: counts\n{}",
        whole.render_text()
    );
    assert_eq!(page.objects, whole.objects, "{step}: objects by state");
    assert_eq!(page.total_items, whole.total_items, "{step}: items");
    for (a, b) in page.items.iter().zip(&whole.items) {
        assert_eq!(a, b, "{step}: item of {}", b.name);
    }
    assert_eq!(page.items.len(), whole.items.len(), "{step}: page length");
}

fn user(login: &str) -> serde_json::Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": login,
        "name": {"givenName": "P", "familyName": "Lan"},
        "emails": [{"value": login, "primary": true}],
        "active": true
    })
}

/// The SCIM id of `login`, adopted from the vendor by the bridge's first observe.
async fn adopted(idp: &Idp, login: &str) -> String {
    for _ in 0..100 {
        if let Some(u) = idp.find_user(login).await {
            return u["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{login} made at the vendor was not adopted");
}

/// The IdP's changes on a dry-run tenant, with the plan compared after each. `seeded`: the
/// logins made at the vendor before the bridge (the IdP takes them over).
async fn changes_reach_every_item_they_affect(
    label: &str,
    sim: RunningSim,
    t: TenantConfig,
    seeded: &[&str],
) {
    let dir = tempfile::tempdir().unwrap();
    let server = bridge::start(&bridge::config(t, dir.path()))
        .await
        .unwrap_or_else(|e| panic!("{label}: bridge start: {e}"));
    let idp = Idp::checked(&bridge::root(&server), TENANT, TOKEN, label)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    let engine: Arc<Engine> = server
        .state
        .tenant(TENANT)
        .unwrap()
        .connector
        .engine()
        .unwrap();

    // Users made at the vendor before the bridge are adopted by its first observe; the IdP
    // then takes them over (a PATCH) where it would create the others.
    let mut ids = Vec::new();
    for i in 0..6 {
        let login = format!("p{i}@acme.test");
        if seeded.contains(&login.as_str()) {
            let id = adopted(&idp, &login).await;
            idp.patch_ok(
                &format!("/Users/{id}"),
                json!([{"op": "replace", "path": "name.givenName", "value": "Taken"}]),
            )
            .await;
            ids.push(id);
        } else {
            ids.push(create(&idp, "/Users", user(&login)).await);
        }
    }
    // The first build.
    assert_same("created", &engine);

    let members = [json!({"value": ids[0]}), json!({"value": ids[1]})];
    let admins = match idp.find_group("BI Admins").await {
        // Adopted from the vendor with members of its own there: p5 leaves it.
        Some(g) => {
            let id = g["id"].as_str().unwrap().to_string();
            idp.patch_ok(
                &format!("/Groups/{id}"),
                json!([{"op": "replace", "path": "members", "value": members}]),
            )
            .await;
            id
        }
        None => create(&idp, "/Groups", group("BI Admins", &[&ids[0], &ids[1]])).await,
    };
    assert_same("a group of two", &engine);

    // The login of a user leaving the group at the vendor: only the group's item names it.
    idp.patch_ok(
        &format!("/Users/{}", ids[5]),
        json!([{"op": "replace", "path": "userName", "value": "leaving@acme.test"}]),
    )
    .await;
    assert_same("a leaving member's login", &engine);

    idp.patch_ok(
        &format!("/Users/{}", ids[1]),
        json!([{"op": "replace", "path": "userName", "value": "renamed@acme.test"}]),
    )
    .await;
    assert_same("a member's login", &engine);

    idp.patch_ok(
        &format!("/Groups/{admins}"),
        json!([
            {"op": "add", "path": "members", "value": [{"value": ids[2]}]},
            {"op": "remove", "path": format!("members[value eq \"{}\"]", ids[0])}
        ]),
    )
    .await;
    assert_same("a member in, one out", &engine);

    idp.patch_ok(
        &format!("/Groups/{admins}"),
        json!([{"op": "replace", "path": "displayName", "value": "Analysts"}]),
    )
    .await;
    assert_same("the group renamed", &engine);

    if !seeded.is_empty() {
        // A group renamed at the vendor, which the IdP does not push: the bridge's observe
        // takes the name, and the rules now make p3 what it is there (its role move goes).
        let api = metabase_api::MetabaseApi::connect(&sim.base_url()).await;
        let team = api.group_id("Team").await.expect("Team at the vendor");
        let (s, v) = api
            .call(
                reqwest::Method::PUT,
                &format!("/api/permissions/group/{team}"),
                Some(&json!({"name": "Leads"})),
            )
            .await;
        assert_eq!(s, 200, "rename Team: {v}");
        let moves = |p: &Plan| p.counts[&Action::MoveRole];
        let before = moves(&engine.plan().unwrap());
        engine.observe_now().await.expect("observe");
        assert_same("a vendor group renamed", &engine);
        assert_eq!(
            moves(&engine.plan().unwrap()),
            before - 1,
            "{label}: p3's role move, gone with the rename"
        );
    }

    // Two changes between pages: the page brings the build past both.
    idp.patch_ok(
        &format!("/Users/{}", ids[2]),
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .await;
    let (s, body) = idp.delete(&format!("/Users/{}", ids[1])).await;
    assert_eq!(s, 204, "{body}");
    assert_same("a member deactivated, another deleted", &engine);

    let (s, body) = idp.delete(&format!("/Groups/{admins}")).await;
    assert_eq!(s, 204, "{body}");
    assert_same("the group deleted", &engine);

    let (_, refreshed) = engine.plan_builds();
    assert!(refreshed >= 7, "{label}: {refreshed} refreshes");
    if !seeded.is_empty() {
        let plan = engine.plan().unwrap();
        assert!(
            plan.counts[&Action::AdoptUser] > 0,
            "{label}: the seeded users were not taken over:\n{}",
            plan.render_text()
        );
    }
    drop(engine);
    server.stop().await;
    sim.stop().await;
}

async fn sim(vendor: Vendor) -> RunningSim {
    scim_bridge::sim::start(
        vendor,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions::default(),
    )
    .await
    .expect("simulator starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sisense_memberships_on_the_user() {
    let sim = sim(Vendor::Sisense).await;
    let vendor = sisense_api::tenant(
        &sim.base_url(),
        SisenseDeprovision::Deactivate,
        RoleRules::default(),
    )
    .vendor;
    changes_reach_every_item_they_affect("sisense", sim, tenant(vendor, "Admin", "Viewer"), &[])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metabase_memberships_on_the_group() {
    let sim = sim(Vendor::Metabase).await;
    // The default role is a permission group Metabase must have: the bridge makes none. Two
    // users are there before the bridge, in a group the IdP also pushes.
    let api = metabase_api::MetabaseApi::connect(&sim.base_url()).await;
    api.create_group(metabase_api::VIEWERS).await;
    let admins = api.create_group("BI Admins").await;
    let team = api.create_group("Team").await;
    let administrators = api
        .group_id(metabase_api::ADMINISTRATORS)
        .await
        .expect("Metabase has Administrators");
    for login in SEEDED {
        let id = api.create_user(login, "Pre", "Existing", json!({})).await;
        if login.starts_with("p3") {
            // An administrator in "Team": the rules make it a Viewer until "Team" is renamed
            // "Leads" at the vendor (below).
            api.add_member(team, id).await;
            api.add_member(administrators, id).await;
        } else {
            api.add_member(admins, id).await;
        }
    }
    let vendor = VendorConfig::Metabase {
        base_url: url(&sim),
        auth: MetabaseAuth::ApiKey(Secret::new(metabase_api::API_KEY)),
    };
    changes_reach_every_item_they_affect(
        "metabase",
        sim,
        tenant(vendor, metabase_api::ADMINISTRATORS, metabase_api::VIEWERS),
        &SEEDED,
    )
    .await;
}

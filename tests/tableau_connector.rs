//! The Tableau connector's own behaviour, against the Tableau simulator over real sockets, one
//! concern per test: site roles from the rules and deactivation as `Unlicensed`, deprovisioning
//! and the user who owns content, seat limits, groups and "All Users", the vendor calls one
//! SCIM operation costs, sign-in (PAT, connected app, expiry) and bad configuration. End states
//! are read through Tableau's own REST API (`TableauApi`).

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sim.rs"]
mod simsupport;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use idp::{create, group, patch_op, urlencode, Idp};
use scim_bridge::config::{
    RoleRule, RoleRules, Secret, TableauAuth, TableauDeprovision, TableauFlavor, TenantConfig,
    TenantId, Url, VendorConfig,
};
use scim_bridge::engine::Engine;
use scim_bridge::server::RunningServer;
use scim_bridge::sim::{self, RunningSim, Vendor};
use scim_bridge::store::audit::AuditEvent;
use scim_bridge::store::Store;
use serde_json::{json, Value};
use simsupport::{calls_since, total};
use std::sync::Arc;
use tableau_api::TableauApi;

const TENANT: &str = "acme-tableau";
const TOKEN: &str = "test-token-tableau-0123456789abcdef";

async fn simulator(switches: &[(&str, &str)], ttl: Option<u64>) -> RunningSim {
    simsupport::spawn_with(Vendor::Tableau, 11, switches, ttl).await
}

fn pat() -> TableauAuth {
    TableauAuth::Pat {
        name: tableau_api::PAT_NAME.into(),
        secret: Secret::new(tableau_api::PAT_SECRET),
    }
}

fn connected_app() -> TableauAuth {
    TableauAuth::ConnectedApp {
        client_id: sim::tableau::DEFAULT_CLIENT_ID.into(),
        secret_id: sim::tableau::DEFAULT_SECRET_ID.into(),
        secret_value: Secret::new(sim::tableau::DEFAULT_SECRET_VALUE),
        username: tableau_api::ADMIN_USER.into(),
    }
}

/// `Tableau Creators → Creator` (also by the SCIM role "Creator"), `BI Admins →
/// SiteAdministratorExplorer`, default `Viewer`.
fn rules() -> RoleRules {
    RoleRules {
        default: Some("Viewer".into()),
        rules: vec![
            RoleRule {
                group: Some("Tableau Creators".into()),
                role: "Creator".into(),
            },
            RoleRule {
                group: None,
                role: "Creator".into(),
            },
            RoleRule {
                group: Some("BI Admins".into()),
                role: "Site Administrator Explorer".into(),
            },
        ],
    }
}

fn tenant(
    sim_base: &str,
    auth: TableauAuth,
    deprovision: TableauDeprovision,
    flavor: TableauFlavor,
) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor: VendorConfig::Tableau {
            base_url: Url::parse(&format!("{sim_base}/")).unwrap(),
            site: tableau_api::SITE.into(),
            api_version: tableau_api::API_VERSION.into(),
            auth,
            deprovision,
            flavor,
            auth_setting: None,
        },
        roles: rules(),
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    }
}

/// The bridge as `serve` builds it (start-up check, background delivery and observe).
async fn serve(t: TenantConfig, dir: &std::path::Path) -> Result<(RunningServer, Idp), String> {
    let server = bridge::start(&bridge::config(t, dir))
        .await
        .map_err(|e| e.to_string())?;
    let idp = Idp::patient(&bridge::root(&server), TENANT, TOKEN)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    Ok((server, idp))
}

/// The bridge with a handle on its engine and no background work: nothing observes or
/// delivers unless the test asks (writes are still delivered inline).
async fn bridge_with_engine(
    t: TenantConfig,
    dir: &std::path::Path,
) -> (Arc<Engine>, RunningServer, Idp) {
    use scim_bridge::connector::tableau::{open, preflight};
    let store = Store::open(dir).unwrap();
    let engine = open(&store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let roles = preflight(&t2, 0).await.unwrap().expect("Tableau reachable");
    engine.set_roles(roles);
    engine.observe_now().await.unwrap();
    let server = bridge::serve_engine(&t, engine.clone(), store, 2);
    let idp = Idp::patient(&bridge::root(&server), TENANT, TOKEN)
        .with_admin(&bridge::admin_root(&server));
    (engine, server, idp)
}

fn user(name: &str, given: &str, family: &str, roles: &[&str]) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"value": name, "type": "work", "primary": true}],
        "roles": roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
        "active": true
    })
}

async fn active(idp: &Idp, id: &str, on: bool) {
    let (s, v) = idp
        .patch(
            &format!("/Users/{id}"),
            patch_op(json!([{"op": "replace", "value": {"active": on}}])),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn role_of(api: &TableauApi, name: &str) -> Option<String> {
    api.state().await.get(name).map(|u| u.site_role.clone())
}

// ---------------------------------------------------------------------------------------------

/// Site roles follow the rules; deactivation is `Unlicensed` and reactivation restores the
/// rules' role; an observe puts back a role changed by hand but never licenses an inactive
/// user; an IdP DELETE (`deprovision = "unlicense"`) leaves the user `Unlicensed`, and the
/// next observe does not adopt it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_roles_follow_the_rules_and_deactivation_unlicenses() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(
        &base,
        pat(),
        TableauDeprovision::Unlicense,
        TableauFlavor::Server,
    );
    let (engine, _server, idp) = bridge_with_engine(t, dir.path()).await;
    let api = TableauApi::login(&base).await;

    let ada = create(
        &idp,
        "/Users",
        user("ada@acme.test", "Ada", "Lovelace", &[]),
    )
    .await;
    let s = api.state().await;
    let a = &s["ada@acme.test"];
    assert_eq!(
        (a.site_role.as_str(), a.full_name.as_str(), a.email.as_str()),
        ("Viewer", "Ada Lovelace", "ada@acme.test")
    );
    let creators = create(&idp, "/Groups", group("Tableau Creators", &[&ada])).await;
    let s = api.state().await;
    assert_eq!(s["ada@acme.test"].site_role, "Creator");
    assert!(s["ada@acme.test"].groups.contains("Tableau Creators"));

    active(&idp, &ada, false).await;
    assert_eq!(
        role_of(&api, "ada@acme.test").await.as_deref(),
        Some("Unlicensed")
    );
    engine.observe_now().await.unwrap();
    assert_eq!(
        role_of(&api, "ada@acme.test").await.as_deref(),
        Some("Unlicensed"),
        "sync never licenses an inactive user"
    );
    let (_, v) = idp.get(&format!("/Users/{ada}")).await;
    assert_eq!(v["active"], json!(false), "{v}");
    active(&idp, &ada, true).await;
    assert_eq!(
        role_of(&api, "ada@acme.test").await.as_deref(),
        Some("Creator")
    );

    // A role changed by hand in Tableau is put back by the next observe (actor `sync`).
    let id = api.state().await["ada@acme.test"].id.clone();
    let (s, v) = api
        .call(
            reqwest::Method::PUT,
            &format!("users/{id}"),
            Some(&json!({"user": {"siteRole": "Explorer"}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let audited = engine.audit().len();
    engine.observe_now().await.unwrap();
    assert_eq!(
        role_of(&api, "ada@acme.test").await.as_deref(),
        Some("Creator")
    );
    let entries = engine.audit().entries().unwrap();
    let fix = entries.last().unwrap();
    assert_eq!(engine.audit().len(), audited + 1);
    assert_eq!((fix.actor.as_str(), fix.to.as_str()), ("sync", "Creator"));
    assert_eq!(fix.from.as_deref(), Some("Explorer"));

    // Leaving the group: back to the default.
    idp.patch_ok(
        &format!("/Groups/{creators}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{ada}\"]")}]),
    )
    .await;
    let s = api.state().await;
    assert_eq!(s["ada@acme.test"].site_role, "Viewer");
    assert!(s["ada@acme.test"].groups.is_empty());

    // Tableau cannot rename a user: userName is published immutable and a change is refused
    // before anything is stored or sent.
    let (_, schema) = idp
        .get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User")
        .await;
    let user_name = schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "userName")
        .unwrap()
        .clone();
    assert_eq!(user_name["mutability"], "immutable", "{user_name}");
    let (s, v) = idp
        .patch(
            &format!("/Users/{ada}"),
            patch_op(json!([{"op": "replace", "path": "userName", "value": "ada2@acme.test"}])),
        )
        .await;
    assert_eq!(
        (s, v["scimType"].as_str()),
        (400, Some("mutability")),
        "{v}"
    );

    let (s, v) = idp.delete(&format!("/Users/{ada}")).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(
        role_of(&api, "ada@acme.test").await.as_deref(),
        Some("Unlicensed")
    );
    engine.observe_now().await.unwrap();
    let (_, v) = idp
        .get(&format!(
            "/Users?filter={}",
            urlencode("userName eq \"ada@acme.test\"")
        ))
        .await;
    assert_eq!(v["totalResults"], json!(0), "not adopted back: {v}");
    sim.stop().await;
}

/// `deprovision = "delete"` removes the user; one who owns content is kept, `Unlicensed`, the
/// IdP's DELETE still succeeds, and the audit log and `/metrics` report it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_user_or_keeps_a_content_owner_unlicensed() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(
        &base,
        pat(),
        TableauDeprovision::Delete,
        TableauFlavor::Server,
    );
    let (engine, server, idp) = bridge_with_engine(t, dir.path()).await;
    let api = TableauApi::login(&base).await;
    let bob = create(
        &idp,
        "/Users",
        user("bob@acme.test", "Bob", "B", &["Creator"]),
    )
    .await;
    let cy = create(
        &idp,
        "/Users",
        user("cy@acme.test", "Cy", "C", &["Creator"]),
    )
    .await;
    let cy_vendor = api.state().await["cy@acme.test"].id.clone();
    api.set_content(&cy_vendor, 2).await;

    let (s, v) = idp.delete(&format!("/Users/{bob}")).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = idp.delete(&format!("/Users/{cy}")).await;
    assert_eq!(s, 204, "the IdP's delete succeeds: {v}");
    let state = api.state().await;
    assert!(
        !state.contains_key("bob@acme.test"),
        "removed from the site"
    );
    assert_eq!(state["cy@acme.test"].site_role, "Unlicensed");

    let kept: Vec<_> = engine
        .audit()
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.event == AuditEvent::RemovalKept)
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].user_name, "cy@acme.test");
    assert!(
        kept[0].detail.as_deref().unwrap_or("").contains("409003"),
        "{kept:?}"
    );
    let metrics = reqwest::get(format!("{}/metrics", bridge::admin_root(&server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("outcome=\"removal_kept\"")
                && l.contains(TENANT)
                && l.ends_with(" 1")),
        "{metrics}"
    );
    // The kept user is not adopted back by the next observe.
    engine.observe_now().await.unwrap();
    assert!(idp.find_user("cy@acme.test").await.is_none());
    sim.stop().await;
}

/// No free seat for the role: a clear SCIM 409 naming the seat limit, never a silent
/// `Unlicensed` user the IdP believes is a Creator — whether Tableau's Add User downgrades the
/// user (Okta's docs) or refuses (409014); and an update to a role without a seat is refused
/// with nothing changed. Counted in `/metrics` and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_free_seat_is_a_clear_refusal() {
    for mode in ["unlicensed", "conflict"] {
        let sim = simulator(
            &[
                ("tableau.seats", "creator=2"),
                ("tableau.add_over_capacity", mode),
            ],
            None,
        )
        .await;
        let base = sim.base_url();
        let dir = tempfile::tempdir().unwrap();
        let t = tenant(
            &base,
            pat(),
            TableauDeprovision::Unlicense,
            TableauFlavor::Server,
        );
        let (engine, server, idp) = bridge_with_engine(t, dir.path()).await;
        let api = TableauApi::login(&base).await;
        // The seeded admin holds one Creator-class seat (ServerAdministrator).
        create(
            &idp,
            "/Users",
            user("c1@acme.test", "C", "One", &["Creator"]),
        )
        .await;
        let (s, v) = idp
            .post("/Users", user("c2@acme.test", "C", "Two", &["Creator"]))
            .await;
        assert_eq!(s, 409, "{mode}: {v}");
        assert!(v.get("scimType").is_none(), "{mode}: {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("seat"), "{mode}: {detail}");
        // What the refused create made is removed by the rollback (the delivery loop's work;
        // this bridge runs none, so it is delivered here).
        engine.deliver_due().await;
        let state = api.state().await;
        assert_eq!(state["c1@acme.test"].site_role, "Creator");
        assert!(
            !state.contains_key("c2@acme.test"),
            "{mode}: no Unlicensed leftover: {state:?}"
        );
        assert!(idp.find_user("c2@acme.test").await.is_none(), "{mode}");

        let v1 = create(&idp, "/Users", user("v1@acme.test", "V", "One", &[])).await;
        let (s, v) = idp
            .patch(
                &format!("/Users/{v1}"),
                patch_op(json!([{"op": "add", "path": "roles", "value": [{"value": "Creator"}]}])),
            )
            .await;
        assert_eq!(s, 409, "{mode}: {v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains("409014"),
            "{v}"
        );
        assert_eq!(
            role_of(&api, "v1@acme.test").await.as_deref(),
            Some("Viewer")
        );
        let (_, v) = idp.get(&format!("/Users/{v1}")).await;
        assert!(
            v.get("roles").is_none(),
            "{mode}: the refused change is rolled back: {v}"
        );

        let refused = engine
            .audit()
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.event == AuditEvent::DeliveryRefused)
            .count();
        assert_eq!(refused, 2, "{mode}");
        let metrics = reqwest::get(format!("{}/metrics", bridge::admin_root(&server)))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.contains("outcome=\"refused_capacity\"") && l.ends_with(" 2")),
            "{mode}: {metrics}"
        );
        sim.stop().await;
    }
}

/// Groups: created, renamed and deleted in Tableau; a name taken in Tableau (compared without
/// case) is a 409 carrying Tableau's code and summary; "All Users" is never created, renamed or
/// changed; a member added by hand first (409011) is no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_all_users() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(
        &base,
        pat(),
        TableauDeprovision::Unlicense,
        TableauFlavor::Server,
    );
    let (_engine, _server, idp) = bridge_with_engine(t, dir.path()).await;
    let api = TableauApi::login(&base).await;
    let ada = create(&idp, "/Users", user("ada@acme.test", "Ada", "L", &[])).await;
    let ada_vendor = api.state().await["ada@acme.test"].id.clone();
    let fin = create(&idp, "/Groups", group("Finance", &[])).await;
    let names = |groups: Vec<Value>| -> Vec<String> {
        groups
            .iter()
            .filter_map(|g| g["name"].as_str().map(str::to_string))
            .collect()
    };
    assert!(names(api.groups().await).contains(&"Finance".to_string()));

    // Taken in Tableau under another case: Tableau's 409009, with its code and summary.
    api.create_group("SALES").await;
    let (s, v) = idp
        .patch(
            &format!("/Groups/{fin}"),
            patch_op(json!([{"op": "replace", "path": "displayName", "value": "Sales"}])),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or_default().contains("409009"),
        "{v}"
    );
    idp.patch_ok(
        &format!("/Groups/{fin}"),
        json!([{"op": "replace", "path": "displayName", "value": "Finance EMEA"}]),
    )
    .await;
    let now = names(api.groups().await);
    assert!(now.contains(&"Finance EMEA".to_string()) && !now.contains(&"Finance".to_string()));

    // A member added by hand before the IdP adds it: 409011 is success.
    let fin_vendor = api
        .groups()
        .await
        .into_iter()
        .find(|g| g["name"] == "Finance EMEA")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.add_member(&fin_vendor, &ada_vendor).await;
    idp.patch_ok(
        &format!("/Groups/{fin}"),
        json!([{"op": "add", "path": "members", "value": [{"value": ada}]}]),
    )
    .await;
    assert_eq!(api.group_members(&fin_vendor).await.len(), 1);

    // "All Users" is Tableau's: never created, renamed to, or changed.
    let all_users = |groups: Vec<Value>| {
        groups
            .into_iter()
            .find(|g| g["name"] == tableau_api::ALL_USERS)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let all = all_users(api.groups().await);
    let members_before = api.group_members(&all).await.len();
    let (s, v) = idp.post("/Groups", group("all users", &[&ada])).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("All Users"),
        "{v}"
    );
    let (s, v) = idp
        .patch(
            &format!("/Groups/{fin}"),
            patch_op(json!([{"op": "replace", "path": "displayName", "value": "All Users"}])),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        idp.find_group("All Users").await.is_none(),
        "never adopted into SCIM"
    );

    let (s, _) = idp.delete(&format!("/Groups/{fin}")).await;
    assert_eq!(s, 204);
    let now = names(api.groups().await);
    assert!(!now.contains(&"Finance EMEA".to_string()), "{now:?}");
    assert_eq!(all_users(api.groups().await), all);
    assert_eq!(api.group_members(&all).await.len(), members_before);
    sim.stop().await;
}

/// What one SCIM operation costs in Tableau calls (README, "Tableau"): lookups and reads 0;
/// a create 2 on Server (Add User, then Update User for full name and email) and 1 on Cloud; a
/// deactivation 1; a membership change 1 per member plus 1 per role it moves. One sign-in for
/// all of it, however many requests run at once (one shared session per PAT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_calls_per_scim_operation() {
    for flavor in [TableauFlavor::Server, TableauFlavor::Cloud] {
        let switches: &[(&str, &str)] = if flavor == TableauFlavor::Cloud {
            &[("tableau.flavor", "cloud")]
        } else {
            &[]
        };
        let sim = simulator(switches, None).await;
        let base = sim.base_url();
        let dir = tempfile::tempdir().unwrap();
        let t = tenant(&base, pat(), TableauDeprovision::Unlicense, flavor);
        let (_engine, _server, idp) = bridge_with_engine(t, dir.path()).await;
        let f = format!("{flavor}");

        let before = simsupport::stats(&base).await;
        let ada = create(&idp, "/Users", user("ada@acme.test", "Ada", "L", &[])).await;
        let c = calls_since(&base, &before).await;
        let want = if flavor == TableauFlavor::Server {
            2
        } else {
            1
        };
        assert_eq!(total(&c), want, "{f}: create: {c:?}");

        let before = simsupport::stats(&base).await;
        for path in [
            format!(
                "/Users?filter={}",
                urlencode("userName eq \"ada@acme.test\"")
            ),
            format!("/Users/{ada}"),
            "/Users?startIndex=1&count=10".to_string(),
            "/Groups".to_string(),
        ] {
            let (s, v) = idp.get(&path).await;
            assert_eq!(s, 200, "{v}");
        }
        let c = calls_since(&base, &before).await;
        assert_eq!(total(&c), 0, "{f}: lookups cost nothing: {c:?}");

        let before = simsupport::stats(&base).await;
        active(&idp, &ada, false).await;
        let c = calls_since(&base, &before).await;
        assert_eq!(total(&c), 1, "{f}: deactivation: {c:?}");
        active(&idp, &ada, true).await;

        let g = create(&idp, "/Groups", group("Analysts", &[])).await;
        let before = simsupport::stats(&base).await;
        idp.patch_ok(
            &format!("/Groups/{g}"),
            json!([{"op": "add", "path": "members", "value": [{"value": ada}]}]),
        )
        .await;
        let c = calls_since(&base, &before).await;
        assert_eq!(total(&c), 1, "{f}: a member added, no role moved: {c:?}");

        let creators = create(&idp, "/Groups", group("Tableau Creators", &[])).await;
        let before = simsupport::stats(&base).await;
        idp.patch_ok(
            &format!("/Groups/{creators}"),
            json!([{"op": "add", "path": "members", "value": [{"value": ada}]}]),
        )
        .await;
        let c = calls_since(&base, &before).await;
        assert_eq!(total(&c), 2, "{f}: a member added, its role moved: {c:?}");

        // Twenty concurrent creates share the one session.
        let before = simsupport::stats(&base).await;
        let creates = (0..20).map(|i| {
            let idp = &idp;
            async move {
                create(
                    idp,
                    "/Users",
                    user(&format!("u{i}@acme.test"), "U", "X", &[]),
                )
                .await
            }
        });
        futures_util::future::join_all(creates).await;
        let c = calls_since(&base, &before).await;
        assert_eq!(
            c.get("POST /api/{v}/auth/signin"),
            None,
            "{f}: no new sign-in: {c:?}"
        );
        assert_eq!(
            simsupport::stats(&base).await["by_route"]["POST /api/{v}/auth/signin"],
            json!(2),
            "{f}: the start-up check's sign-in and the tenant's one session"
        );
        sim.stop().await;
    }
}

/// Sign-in: a connected-app JWT works like a PAT; an idle-expired session is signed in again
/// (once) and the write goes through; Tableau Cloud refuses a user name that is not an email,
/// and the IdP learns why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_app_expiry_and_cloud_names() {
    let sim = simulator(&[("tableau.flavor", "cloud")], Some(2)).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant(
        &base,
        connected_app(),
        TableauDeprovision::Unlicense,
        TableauFlavor::Cloud,
    );
    // A Cloud site with MFA needs new users' authSetting said (the default is refused).
    if let VendorConfig::Tableau { auth_setting, .. } = &mut t.vendor {
        *auth_setting = Some(scim_bridge::config::TableauAuthSetting::TableauIdWithMfa);
    }
    let (_engine, _server, idp) = bridge_with_engine(t, dir.path()).await;
    let api = TableauApi::login(&base).await;
    create(&idp, "/Users", user("ada@acme.test", "Ada", "L", &[])).await;
    let ada_vendor = api.state().await["ada@acme.test"].id.clone();
    let (s, v) = api
        .call(reqwest::Method::GET, &format!("users/{ada_vendor}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"]["authSetting"], "TableauIDWithMFA", "{v}");
    let signins = |v: Value| v["by_route"]["POST /api/{v}/auth/signin"].as_u64().unwrap();
    let before = signins(simsupport::stats(&base).await);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    create(
        &idp,
        "/Users",
        user("bob@acme.test", "Bob", "B", &["Creator"]),
    )
    .await;
    assert_eq!(
        signins(simsupport::stats(&base).await),
        before + 1,
        "one sign-in again"
    );
    let state = api.state().await;
    assert_eq!(state["ada@acme.test"].site_role, "Viewer");
    assert_eq!(state["bob@acme.test"].site_role, "Creator");

    let (s, v) = idp.post("/Users", user("carol", "Carol", "C", &[])).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or_default().contains("email"),
        "{v}"
    );
    sim.stop().await;
}

/// A start that cannot be right stops with the key path to fix: a site role Tableau does not
/// have, and credentials Tableau refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_stops_the_start_with_its_key_path() {
    let sim = simulator(&[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant(
        &base,
        pat(),
        TableauDeprovision::Unlicense,
        TableauFlavor::Server,
    );
    t.roles.rules[0].role = "Publisher Pro".into();
    let e = serve(t, dir.path()).await.err().expect("start refused");
    assert!(e.contains("tenants[0].roles.rules[0].role"), "{e}");
    assert!(e.contains("Publisher Pro"), "{e}");

    let t = tenant(
        &base,
        TableauAuth::Pat {
            name: tableau_api::PAT_NAME.into(),
            secret: Secret::new("wrong-secret"),
        },
        TableauDeprovision::Unlicense,
        TableauFlavor::Server,
    );
    let e = serve(t, dir.path()).await.err().expect("start refused");
    assert!(e.contains("tenants[0].vendor.pat_secret"), "{e}");
    assert!(!e.contains("wrong-secret"), "no secret in errors: {e}");

    // And the good config serves.
    let t = tenant(
        &base,
        pat(),
        TableauDeprovision::Unlicense,
        TableauFlavor::Server,
    );
    let (server, idp) = serve(t, dir.path()).await.unwrap();
    create(&idp, "/Users", user("ok@acme.test", "O", "K", &[])).await;
    server.stop().await;
    sim.stop().await;
}

/// A role the site has no seat for, found in the background (a user joins a group whose rule
/// gives Creator): the membership stands, the role change stays `failed`, audited once however
/// many observes retry it, and delivered by the first observe after a seat frees up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_a_seat_waits_for_one() {
    let sim = simulator(&[("tableau.seats", "creator=2")], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let t = tenant(
        &base,
        pat(),
        TableauDeprovision::Unlicense,
        TableauFlavor::Server,
    );
    let (engine, _server, idp) = bridge_with_engine(t, dir.path()).await;
    let api = TableauApi::login(&base).await;
    // The admin (ServerAdministrator) and c1 hold both Creator seats.
    let c1 = create(
        &idp,
        "/Users",
        user("c1@acme.test", "C", "One", &["Creator"]),
    )
    .await;
    let x = create(&idp, "/Users", user("x@acme.test", "X", "Ray", &[])).await;
    create(&idp, "/Groups", group("Tableau Creators", &[&x])).await;
    let s = api.state().await;
    assert!(s["x@acme.test"].groups.contains("Tableau Creators"));
    assert_eq!(s["x@acme.test"].site_role, "Viewer");
    let refused = |engine: &Engine| {
        engine
            .audit()
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.event == AuditEvent::DeliveryRefused && e.user_name == "x@acme.test")
            .count()
    };
    assert_eq!(refused(&engine), 1);
    engine.observe_now().await.unwrap();
    engine.observe_now().await.unwrap();
    assert_eq!(
        role_of(&api, "x@acme.test").await.as_deref(),
        Some("Viewer")
    );
    assert_eq!(refused(&engine), 1, "audited once, not at every retry");

    // c1 leaves the Creator role: a seat is free, and the next observe delivers x's role.
    idp.patch_ok(
        &format!("/Users/{c1}"),
        json!([{"op": "remove", "path": "roles"}]),
    )
    .await;
    assert_eq!(
        role_of(&api, "c1@acme.test").await.as_deref(),
        Some("Viewer")
    );
    engine.observe_now().await.unwrap();
    // The retry is queued for the delivery loop, which this bridge does not run: deliver now.
    engine.deliver_due().await;
    assert_eq!(
        role_of(&api, "x@acme.test").await.as_deref(),
        Some("Creator")
    );
    sim.stop().await;
}

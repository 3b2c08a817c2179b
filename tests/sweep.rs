//! The dormant-account sweep (issue 13) against the Tableau simulator over real sockets, with a
//! real sled store: users provisioned by the IdP over SCIM, last sign-ins set through the
//! simulator's `/__sim/last_login` hook and read by the bridge's observe, one user made by hand
//! in Tableau (not managed by the IdP) and one admin by the role rules. The plan lists exactly
//! the dormant managed non-admins and changes nothing at the vendor; applying it deactivates them
//! through the engine (Tableau `Unlicensed`, audited with actor `sweep`), the IdP reads
//! `active: false`, and everyone else is left alone. The scheduled sweep reports unless told to
//! apply.
//!
//! Idle days are counted to a "now" the test chooses (the plan takes it), 200 days ahead, so an
//! account made a moment ago can be one that "never signed in" for 200 days.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sim.rs"]
mod simsupport;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use chrono::{DateTime, Duration as Days, Utc};
use idp::{create, group, Idp};
use scim_bridge::config::{
    RoleRule, RoleRules, Secret, SweepConfig, TableauAuth, TableauDeprovision, TableauFlavor,
    TenantConfig, TenantId, Url, VendorConfig,
};
use scim_bridge::engine::state::Actor;
use scim_bridge::engine::sweep::{KeepReason, SweepAction, SweepDelivery, SweepPlan};
use scim_bridge::engine::Engine;
use scim_bridge::governance::dormant;
use scim_bridge::server::RunningServer;
use scim_bridge::sim::{RunningSim, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tableau_api::TableauApi;

const TENANT: &str = "acme-tableau";
const TOKEN: &str = "test-token-tableau-0123456789abcdef";

/// `BI Admins → SiteAdministratorExplorer` (an admin the rules keep), `Tableau Creators →
/// Creator`, default `Viewer`.
fn rules() -> RoleRules {
    RoleRules {
        default: Some("Viewer".into()),
        rules: vec![
            RoleRule {
                group: Some("BI Admins".into()),
                role: "Site Administrator Explorer".into(),
            },
            RoleRule {
                group: Some("Tableau Creators".into()),
                role: "Creator".into(),
            },
        ],
    }
}

fn tenant(sim_base: &str) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(TENANT).unwrap(),
        tokens: vec![Secret::new(TOKEN)],
        jwt_secret: None,
        vendor: VendorConfig::Tableau {
            base_url: Url::parse(&format!("{sim_base}/")).unwrap(),
            site: tableau_api::SITE.into(),
            api_version: tableau_api::API_VERSION.into(),
            auth: TableauAuth::Pat {
                name: tableau_api::PAT_NAME.into(),
                secret: Secret::new(tableau_api::PAT_SECRET),
            },
            deprovision: TableauDeprovision::Unlicense,
            flavor: TableauFlavor::Server,
            auth_setting: None,
        },
        roles: rules(),
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    }
}

/// The bridge with a handle on its engine and no background work: nothing observes or delivers
/// unless the test asks (writes are still delivered inline), so the simulator's counters move
/// only for what the test does.
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
    let idp = Idp::patient(&bridge::root(&server), TENANT, TOKEN);
    (engine, server, idp)
}

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"value": name, "type": "work", "primary": true}],
        "active": true
    })
}

/// Sets a user's last sign-in at the vendor (`None`: never signed in).
async fn last_login(sim: &str, login: &str, at: Option<DateTime<Utc>>) {
    let at = at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let r = simsupport::client()
        .post(format!("{sim}/__sim/last_login"))
        .json(&json!({"login": login, "at": at}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "last sign-in of {login}");
}

/// Whole seconds: Tableau keeps its sign-in times to the second, so idle days come out exact.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

/// The simulator's calls since `before` other than its own test controls: what the bridge
/// sent to Tableau.
async fn vendor_calls_since(base: &str, before: &Value) -> BTreeMap<String, u64> {
    simsupport::calls_since(base, before)
        .await
        .into_iter()
        .filter(|(route, _)| !route.contains("/__sim/"))
        .collect()
}

/// Tableau's users: name → site role.
async fn site_roles(api: &TableauApi) -> BTreeMap<String, String> {
    api.state()
        .await
        .into_iter()
        .map(|(name, u)| (name, u.site_role))
        .collect()
}

fn names(
    plan: &SweepPlan,
    pick: impl Fn(&scim_bridge::engine::sweep::SweepItem) -> bool,
) -> BTreeSet<String> {
    plan.items
        .iter()
        .filter(|i| pick(i))
        .map(|i| i.user_name.clone())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------

/// The plan lists exactly the dormant managed non-admins (by last sign-in, or by the account's
/// age when never signed in) and sends nothing to the vendor; applying it re-checks each user
/// (one signed in since: skipped), deactivates the rest through the engine with cause
/// `dormant N days` and actor `sweep`, and leaves the unmanaged user, the admin and a user
/// whose change waits for a licence seat alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_lists_dormant_managed_users_and_applying_it_deactivates_only_them() {
    // The admin (ServerAdministrator) holds the one Creator seat: a Creator role is refused.
    let sim: RunningSim =
        simsupport::spawn_with(Vendor::Tableau, 11, &[("tableau.seats", "creator=1")], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _server, idp) = bridge_with_engine(tenant(&base), dir.path()).await;
    let api = TableauApi::login(&base).await;

    let mut ids = BTreeMap::new();
    for name in [
        "recent@acme.test",
        "old@acme.test",
        "older@acme.test",
        "never@acme.test",
        "boss@acme.test",
        "late@acme.test",
        "stuck@acme.test",
    ] {
        ids.insert(name, create(&idp, "/Users", user(name)).await);
    }
    create(
        &idp,
        "/Groups",
        group("BI Admins", &[&ids["boss@acme.test"]]),
    )
    .await;
    // Its Creator role is refused for want of a seat: a change kept in the outbox.
    create(
        &idp,
        "/Groups",
        group("Tableau Creators", &[&ids["stuck@acme.test"]]),
    )
    .await;
    api.create_user("hand@acme.test", "Viewer").await;

    // A minute over 200 days after the accounts were made: `never` is 200 whole days idle.
    let now = whole_seconds(Utc::now() + Days::days(200) + Days::minutes(1));
    let ago = |d: i64| Some(now - Days::days(d));
    last_login(&base, "recent@acme.test", ago(5)).await;
    last_login(&base, "old@acme.test", ago(120)).await;
    last_login(&base, "older@acme.test", ago(95)).await;
    last_login(&base, "never@acme.test", None).await;
    last_login(&base, "boss@acme.test", ago(300)).await;
    last_login(&base, "late@acme.test", ago(150)).await;
    last_login(&base, "hand@acme.test", ago(400)).await;
    last_login(&base, "stuck@acme.test", ago(180)).await;
    // The bridge learns last sign-ins (and the hand-made user) by observing Tableau.
    engine.observe_now().await.unwrap();

    let roles_before = site_roles(&api).await;
    assert_eq!(roles_before["boss@acme.test"], "SiteAdministratorExplorer");
    let stats_before = simsupport::stats(&base).await;
    let plan = engine.dormant_plan(90, false, now).unwrap();
    let swept = names(&plan, |i| i.action == SweepAction::Deactivate);
    assert_eq!(
        swept,
        set(&[
            "old@acme.test",
            "older@acme.test",
            "never@acme.test",
            "late@acme.test"
        ]),
        "to deactivate:\n{}",
        dormant::plan_table(&plan)
    );
    assert_eq!(
        names(&plan, |i| i.keep == Some(KeepReason::Admin)
            && i.user_name.ends_with("@acme.test")),
        set(&["boss@acme.test"])
    );
    assert_eq!(
        names(&plan, |i| i.keep == Some(KeepReason::Unmanaged)),
        set(&["hand@acme.test"]),
        "{}",
        dormant::plan_table(&plan)
    );
    assert!(
        !plan.items.iter().any(|i| i.user_name == "recent@acme.test"),
        "signed in 5 days ago: not dormant"
    );
    let item = |n: &str| plan.items.iter().find(|i| i.user_name == n).unwrap();
    // Shown, flagged with its outbox work, and kept (an observe re-queues a refusal for want
    // of a seat, so it may read as pending or as failed).
    let stuck = item("stuck@acme.test");
    assert_eq!(stuck.action, SweepAction::Keep);
    assert!(
        matches!(stuck.keep, Some(KeepReason::Pending | KeepReason::Failed)),
        "{stuck:?}"
    );
    assert!(stuck.delivery.is_some(), "{stuck:?}");
    assert_eq!(item("never@acme.test").last_login, None);
    assert_eq!(item("never@acme.test").days_idle, 200);
    assert_eq!(item("older@acme.test").days_idle, 95);
    assert_eq!(item("older@acme.test").role.as_deref(), Some("Viewer"));
    assert_eq!(item("old@acme.test").id, ids["old@acme.test"]);
    assert!(item("old@acme.test").vendor_id.is_some());
    assert_eq!(plan.counts.deactivate, 4);
    assert_eq!(plan.counts.kept_unmanaged, 1);
    assert_eq!(plan.counts.kept_pending, 1);
    assert!(plan.counts.kept_admin >= 1);
    assert_eq!(
        plan.counts.dormant,
        plan.counts.deactivate
            + plan.counts.kept_admin
            + plan.counts.kept_unmanaged
            + plan.counts.kept_pending
    );
    assert_eq!(
        plan.counts.users,
        plan.counts.inactive + plan.counts.recent + plan.counts.dormant + plan.counts.unknown
    );
    // Told to, the sweep takes the hand-made user too (still never the admin).
    let wide = engine.dormant_plan(90, true, now).unwrap();
    assert!(names(&wide, |i| i.action == SweepAction::Deactivate).contains("hand@acme.test"));
    assert!(!names(&wide, |i| i.action == SweepAction::Deactivate).contains("boss@acme.test"));
    // Bad input is an error, not a panic.
    assert!(engine.dormant_plan(0, false, now).is_err());

    // A plan is a dry run: nothing reached Tableau.
    assert_eq!(
        vendor_calls_since(&base, &stats_before).await,
        BTreeMap::new(),
        "planning called the vendor"
    );
    assert_eq!(site_roles(&api).await, roles_before);
    let table = dormant::plan_table(&plan);
    assert!(
        table.contains("never@acme.test") && table.contains("never"),
        "{table}"
    );
    assert_eq!(dormant::plan_json(&plan)["counts"]["deactivate"], 4);

    // `late` signs in after the plan was made: the apply-time check skips it.
    last_login(&base, "late@acme.test", ago(1)).await;
    engine.observe_now().await.unwrap();

    let outcome = engine.apply_sweep(&plan, Actor::Sweep).await.unwrap();
    let done: BTreeSet<String> = outcome
        .deactivated
        .iter()
        .map(|u| u.user_name.clone())
        .collect();
    assert_eq!(
        done,
        set(&["old@acme.test", "older@acme.test", "never@acme.test"]),
        "{}",
        dormant::outcome_table(&outcome)
    );
    for u in &outcome.deactivated {
        assert_eq!(u.delivery, SweepDelivery::Delivered, "{}", u.user_name);
    }
    assert_eq!(outcome.skipped.len(), 1);
    assert_eq!(outcome.skipped[0].user_name, "late@acme.test");
    assert!(outcome.skipped[0].reason.contains("signed in"));
    let cause = |n: &str| {
        outcome
            .deactivated
            .iter()
            .find(|u| u.user_name == n)
            .unwrap()
            .cause
            .clone()
    };
    assert_eq!(cause("older@acme.test"), "dormant 95 days");
    assert_eq!(cause("never@acme.test"), "dormant 200 days");

    // At Tableau: the three are Unlicensed; nobody else changed.
    let roles_after = site_roles(&api).await;
    for (name, role) in &roles_before {
        let want =
            if ["old@acme.test", "older@acme.test", "never@acme.test"].contains(&name.as_str()) {
                tableau_api::UNLICENSED
            } else {
                role.as_str()
            };
        assert_eq!(roles_after[name], want, "{name} at Tableau");
    }
    // The IdP reads the deactivation; the others stay active.
    for (name, id) in &ids {
        let (s, v) = idp.get(&format!("/Users/{id}")).await;
        assert_eq!(s, 200, "{v}");
        let want = !["old@acme.test", "older@acme.test", "never@acme.test"].contains(name);
        assert_eq!(v["active"], json!(want), "{name} as the IdP reads it");
    }
    // Audited like any change, with the sweep as actor and the idle days as cause.
    let audit = engine.audit().entries().unwrap();
    let entry = audit
        .iter()
        .find(|e| e.user_name == "older@acme.test" && e.actor == "sweep")
        .unwrap_or_else(|| panic!("no sweep entry for older@acme.test in {audit:#?}"));
    assert_eq!(entry.cause, "dormant 95 days");
    let outbox: Vec<String> = engine.outbox().into_iter().map(|(_, id, _)| id).collect();
    for u in &outcome.deactivated {
        assert!(
            !outbox.contains(&u.id),
            "{} still in the outbox",
            u.user_name
        );
    }
    let last = engine.last_sweep().unwrap().expect("the sweep is kept");
    let applied = last.applied.expect("applied");
    assert_eq!((applied.actor, applied.deactivated), (Actor::Sweep, 3));

    // Applied again: nothing left to do, and nothing is sent.
    let before = simsupport::stats(&base).await;
    let again = engine.apply_sweep(&plan, Actor::Operator).await.unwrap();
    assert!(
        again.deactivated.is_empty(),
        "{}",
        dormant::outcome_table(&again)
    );
    let writes: Vec<String> = vendor_calls_since(&base, &before)
        .await
        .into_keys()
        .filter(|r| !r.starts_with("GET "))
        .collect();
    assert!(
        writes.is_empty(),
        "a second apply wrote to Tableau: {writes:?}"
    );
}

/// `[tenants.sweep]` without `apply` only reports (the summary is kept in the store, nothing
/// reaches the vendor); with `apply` it deactivates, with actor `sweep`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_reports_unless_told_to_apply() {
    let sim: RunningSim = simsupport::spawn_with(Vendor::Tableau, 11, &[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _server, idp) = bridge_with_engine(tenant(&base), dir.path()).await;
    let api = TableauApi::login(&base).await;
    let old = create(&idp, "/Users", user("old@acme.test")).await;
    let recent = create(&idp, "/Users", user("recent@acme.test")).await;
    let now = Utc::now();
    last_login(&base, "old@acme.test", Some(now - Days::days(120))).await;
    last_login(&base, "recent@acme.test", Some(now - Days::days(3))).await;
    engine.observe_now().await.unwrap();
    assert!(engine.last_sweep().unwrap().is_none());

    let cfg = SweepConfig {
        days: 90,
        apply: false,
        include_unmanaged: false,
        every: Duration::from_secs(1),
    };
    let roles_before = site_roles(&api).await;
    let stats_before = simsupport::stats(&base).await;
    let reporter = engine.spawn_sweep(cfg.clone()).expect("in a runtime");
    let deadline = Instant::now() + Duration::from_secs(15);
    let summary = loop {
        if let Some(s) = engine.last_sweep().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no scheduled sweep ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(summary.counts.deactivate, 1);
    assert_eq!(summary.applied, None, "report-only");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    reporter.abort();
    assert_eq!(
        vendor_calls_since(&base, &stats_before).await,
        BTreeMap::new(),
        "a report-only sweep called the vendor"
    );
    assert_eq!(site_roles(&api).await, roles_before);

    let applier = engine
        .spawn_sweep(SweepConfig { apply: true, ..cfg })
        .expect("in a runtime");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = engine.last_sweep().unwrap().unwrap();
        if let Some(applied) = s.applied {
            assert_eq!(applied.actor, Actor::Sweep);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled sweep did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    applier.abort();
    assert!(engine.drained(Duration::from_secs(10)).await);
    let roles = site_roles(&api).await;
    assert_eq!(roles["old@acme.test"], tableau_api::UNLICENSED);
    assert_eq!(roles["recent@acme.test"], "Viewer");
    let (_, v) = idp.get(&format!("/Users/{old}")).await;
    assert_eq!(v["active"], json!(false));
    let (_, v) = idp.get(&format!("/Users/{recent}")).await;
    assert_eq!(v["active"], json!(true));
}

/// With the vendor down at apply time, the deactivation is still committed with its outbox mark:
/// reported as queued, read by the IdP as `active: false`, and left to the outbox to deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_applied_while_the_vendor_is_down_is_queued_in_the_outbox() {
    let sim: RunningSim = simsupport::spawn_with(Vendor::Tableau, 11, &[], None).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let (engine, _server, idp) = bridge_with_engine(tenant(&base), dir.path()).await;
    let old = create(&idp, "/Users", user("old@acme.test")).await;
    last_login(&base, "old@acme.test", Some(Utc::now() - Days::days(120))).await;
    engine.observe_now().await.unwrap();
    let plan = engine.dormant_plan(90, false, Utc::now()).unwrap();
    assert_eq!(plan.counts.deactivate, 1, "{}", dormant::plan_table(&plan));

    sim.stop().await;
    let outcome = engine.apply_sweep(&plan, Actor::Operator).await.unwrap();
    assert_eq!(outcome.deactivated.len(), 1);
    assert!(
        matches!(
            outcome.deactivated[0].delivery,
            SweepDelivery::Queued { .. }
        ),
        "{:?}",
        outcome.deactivated[0]
    );
    let (_, v) = idp.get(&format!("/Users/{old}")).await;
    assert_eq!(v["active"], json!(false));
    let entry = engine
        .outbox()
        .into_iter()
        .find(|(_, id, _)| *id == old)
        .map(|(_, _, e)| e)
        .expect("the deactivation waits in the outbox");
    assert_eq!(entry.actor, Actor::Operator);
    assert_eq!(entry.cause, "dormant 120 days");
    assert!(!entry.failed);
}

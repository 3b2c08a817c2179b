//! Dry-run tenants (issue 13) against the Metabase simulator over real sockets, the bridge
//! built and started as `serve` does from a config file.
//!
//! - With `dry_run = true` the Okta sequence (with the Metabase runs' extra steps) gets every
//!   answer it gets from a live tenant, and Metabase is left exactly as it was: the simulator
//!   saw no request but reads (`/__sim/stats`), and its users, groups and memberships read
//!   back equal. The plan shows what would happen: the creates, the takeover of two users made
//!   in Metabase before the bridge, the demotion of one of them (an admin the rules make an
//!   analyst, who stays an admin meanwhile), a deactivation, the groups and their members —
//!   with counts, paged, as JSON and as text.
//! - Started again with `dry_run = false` on the same data directory, the bridge delivers that
//!   plan and Metabase reaches the sequence's end state.
//! - A change the vendor refuses once applied is `failed` in the plan with the vendor's reason;
//!   after the operator fixes the cause at the vendor, `retry_failed_by_operator` delivers it,
//!   audited as the operator's.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/metabase_api.rs"]
mod metabase_api;
#[path = "support/sim.rs"]
mod sim;

use bridge::converge;
use idp::{Idp, Seq};
use metabase_api::*;
use reqwest::Method;
use scim_bridge::engine::delivery::DeliveryStatus;
use scim_bridge::engine::plan::{Action, Plan, PlanItem, PlanStatus};
use scim_bridge::engine::Engine;
use scim_bridge::scim::schema::ResourceKind;
use scim_bridge::server::RunningServer;
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long Metabase may take to converge once the bridge runs without `dry_run`.
const CONVERGE_LIMIT: Duration = Duration::from_secs(40);

/// A Metabase user the run makes before the bridge, which the IdP finds and deactivates.
const OLD: &str = "old@acme.test";

/// The run's bridge config: the Metabase runs' tenant, with `dry_run` as given.
fn config_text(v: &Variant, data: &std::path::Path, sim_base: &str, dry_run: bool) -> String {
    let text = v.bridge_toml("127.0.0.1:0", data, sim_base);
    let tokens = format!("tokens = [\"{BRIDGE_TOKEN}\"]\n");
    assert!(text.contains(&tokens), "the runs' config changed: {text}");
    text.replacen(&tokens, &format!("{tokens}dry_run = {dry_run}\n"), 1)
}

/// The engine behind the run's tenant.
fn engine_of(server: &RunningServer) -> Arc<Engine> {
    server
        .state
        .tenant(BRIDGE_TENANT)
        .expect("the run's tenant is served")
        .connector
        .engine()
        .expect("a Metabase tenant has an engine")
}

/// Whether two reads of Metabase hold the same users, groups and memberships.
fn same_state(a: &MbState, b: &MbState) -> bool {
    a.users == b.users && a.groups == b.groups && a.memberships == b.memberships
}

fn item<'a>(plan: &'a Plan, name: &str) -> &'a PlanItem {
    plan.items
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the plan:\n{}", plan.render_text()))
}

fn has(item: &PlanItem, action: Action, from: Option<&str>, to: Option<&str>) -> bool {
    item.changes
        .iter()
        .any(|c| c.action == action && c.from.as_deref() == from && c.to.as_deref() == to)
}

/// The members a group item of the plan adds.
fn added_members(item: &PlanItem) -> BTreeSet<String> {
    item.changes
        .iter()
        .filter(|c| c.action == Action::AddMember)
        .filter_map(|c| c.member.clone())
        .collect()
}

/// How Metabase differs from the end state of the Okta sequence, `OLD` aside (it must be
/// there, deactivated).
fn end_diff(v: &Variant, mut state: MbState) -> Vec<String> {
    let mut out = Vec::new();
    match state.users.remove(OLD) {
        Some(u) => {
            state.memberships.remove(&u.id);
            if u.is_active {
                out.push(format!("{OLD} is still active"));
            }
        }
        None => out.push(format!("{OLD} is not in Metabase")),
    }
    out.extend(v.diff(&state));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_answers_the_idp_leaves_metabase_unchanged_and_applies_its_plan_when_switched_off(
) {
    let label = "dry-run";
    let sim = scim_bridge::sim::start(
        Vendor::Metabase,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            seed: Some(13),
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator starts");
    let base = sim.base_url();
    let api = MetabaseApi::connect(&base).await;
    let v = Variant {
        seq: Seq::Okta,
        sign_in: SignIn::ApiKey,
    };
    // Made in Metabase before the bridge: the role groups, pre@acme.test — an administrator
    // here, whom the rules make an analyst once the IdP writes it — and OLD.
    v.prepare(&api).await;
    let pre = api.user_id("pre@acme.test").await.expect("pre made");
    let administrators = api.group_id(ADMINISTRATORS).await.unwrap();
    api.add_member(administrators, pre).await;
    api.create_user(OLD, "Old", "Timer", json!(null)).await;
    let before = api.state().await;
    assert!(before.users["pre@acme.test"].is_superuser);
    let stats_before = sim::stats(&base).await;

    // ---- The dry run: the IdP's whole sequence, answered in full. ----
    let dir = tempfile::tempdir().unwrap();
    let server = bridge::serve_toml(label, &config_text(&v, dir.path(), &base, true)).await;
    let idp = Idp::checked(&bridge::root(&server), BRIDGE_TENANT, BRIDGE_TOKEN, label)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    let mut extra = Extra::new(&idp, Seq::Okta);
    Seq::Okta.run(&idp, &mut extra).await;
    let old = idp.user_id(OLD).await;
    let answer = idp
        .patch_ok(
            &format!("/Users/{old}"),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .await;
    assert_eq!(answer["active"], json!(false), "{answer}");
    // What the IdP reads back is what it wrote.
    let (s, dee) = idp
        .get(&format!("/Users/{}", idp.user_id("dee@acme.test").await))
        .await;
    assert_eq!((s, &dee["active"]), (200, &json!(false)), "{dee}");
    let (s, admins) = idp
        .get(&format!("/Groups/{}", idp.group_id("BI Admins").await))
        .await;
    assert_eq!(s, 200, "{admins}");
    assert_eq!(
        admins["members"].as_array().map(Vec::len),
        Some(2),
        "{admins}"
    );

    // Metabase is untouched: the bridge only read it, and it reads back as it was.
    let engine = engine_of(&server);
    let reads_then = sim::calls_since(&base, &stats_before).await;
    engine.sync_now();
    converge(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "sync_now observes Metabase again",
        || async {
            let now = sim::calls_since(&base, &stats_before).await;
            if now.get("GET /api/user") > reads_then.get("GET /api/user") {
                Vec::new()
            } else {
                vec![format!("no new user read: {now:?}")]
            }
        },
    )
    .await;
    let calls = sim::calls_since(&base, &stats_before).await;
    let writes: Vec<&String> = calls.keys().filter(|r| !r.starts_with("GET ")).collect();
    assert!(
        writes.is_empty(),
        "a dry run sent vendor writes: {writes:?} (all calls {calls:?})"
    );
    assert!(calls.contains_key("GET /api/user"), "{calls:?}");
    let after = api.state().await;
    assert!(
        same_state(&before, &after),
        "Metabase changed under a dry run:\nbefore {before:?}\nafter {after:?}"
    );
    assert!(after.users["pre@acme.test"].is_superuser, "pre was demoted");

    // ---- The plan. ----
    let plan = engine.plan().unwrap();
    let text = plan.render_text();
    eprintln!("{text}");
    assert!(plan.dry_run);
    assert!(plan.note.is_none(), "{text}");
    let count = |a: Action| plan.counts[&a];
    assert_eq!(count(Action::CreateUser), 4, "ada, bob, cy, dee: {text}");
    assert_eq!(count(Action::AdoptUser), 2, "pre and old: {text}");
    assert_eq!(count(Action::Deactivate), 1, "old: {text}");
    assert_eq!(count(Action::Reactivate), 0, "{text}");
    assert_eq!(
        count(Action::CreateGroup),
        2,
        "BI Admins, BI Designers: {text}"
    );
    // Finance was created, renamed and deleted within the dry run: nothing is owed for it.
    assert_eq!(count(Action::DeleteGroup), 0, "{text}");
    assert_eq!(count(Action::RenameGroup), 0, "{text}");
    assert!(plan.items.iter().all(|i| i.status == PlanStatus::DryRun));
    assert_eq!(plan.objects.dry_run, plan.total_items);
    assert_eq!(plan.total_items as usize, plan.items.len());

    let p = item(&plan, "pre@acme.test");
    assert!(
        has(p, Action::AdoptUser, Some(ADMINISTRATORS), None),
        "{p:?}"
    );
    assert!(
        has(p, Action::MoveRole, Some(ADMINISTRATORS), Some(ANALYSTS)),
        "the admin the rules demote: {p:?}"
    );
    assert!(
        text.contains("move role Administrators → Analysts"),
        "{text}"
    );
    assert!(has(
        item(&plan, "ada@acme.test"),
        Action::CreateUser,
        None,
        Some(ADMINISTRATORS)
    ));
    assert!(has(
        item(&plan, "bob@acme.test"),
        Action::CreateUser,
        None,
        Some(ANALYSTS)
    ));
    assert!(has(
        item(&plan, "cy@acme.test"),
        Action::CreateUser,
        None,
        Some(VIEWERS)
    ));
    let dee = item(&plan, "dee@acme.test");
    assert!(
        dee.changes
            .iter()
            .any(|c| c.action == Action::CreateUser && c.detail.as_deref() == Some("inactive")),
        "{dee:?}"
    );
    let o = item(&plan, OLD);
    assert!(
        o.changes.iter().any(|c| c.action == Action::Deactivate),
        "{o:?}"
    );
    assert!(
        o.changes.iter().any(|c| c.action == Action::AdoptUser),
        "{o:?}"
    );
    let members = |g: &str| added_members(item(&plan, g));
    assert_eq!(
        members("BI Admins"),
        BTreeSet::from(["ada@acme.test".to_string(), "dee@acme.test".to_string()])
    );
    assert_eq!(
        members("BI Designers"),
        BTreeSet::from(["bob@acme.test".to_string(), "pre@acme.test".to_string()])
    );

    // Paged: the pages make up the plan, each with the whole plan's counts.
    let first = engine.plan_page(0, 3).unwrap();
    let rest = engine.plan_page(3, 1000).unwrap();
    assert_eq!(first.items.len(), 3);
    assert_eq!(
        (first.total_items, first.counts.clone()),
        (plan.total_items, plan.counts.clone())
    );
    let paged: Vec<&PlanItem> = first.items.iter().chain(&rest.items).collect();
    let whole: Vec<&PlanItem> = plan.items.iter().collect();
    assert_eq!(
        paged.iter().map(|i| &i.id).collect::<Vec<_>>(),
        whole.iter().map(|i| &i.id).collect::<Vec<_>>()
    );
    // JSON, as the admin API answers it, reads back the same.
    let back: Plan = serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
    let sid = idp.user_id("pre@acme.test").await;
    assert_eq!(
        engine.delivery_status(ResourceKind::User, &sid).unwrap(),
        DeliveryStatus::DryRun
    );
    // Nothing failed: the operator's retry has nothing to do.
    assert_eq!(engine.retry_failed_by_operator(None).unwrap(), 0);
    drop(engine);
    server.stop().await;

    // ---- dry_run = false on the same store: the plan is applied. ----
    let server = bridge::serve_toml(label, &config_text(&v, dir.path(), &base, false)).await;
    let engine = engine_of(&server);
    assert!(!engine.dry_run());
    converge(
        CONVERGE_LIMIT,
        Duration::from_millis(500),
        "after dry_run = false, Metabase differs from the sequence's end state",
        || async {
            match api.try_state().await {
                Some(state) => end_diff(&v, state),
                None => vec!["Metabase did not answer a full read".into()],
            }
        },
    )
    .await;
    assert!(
        engine.drained(CONVERGE_LIMIT).await,
        "the outbox did not drain"
    );
    let plan = engine.plan().unwrap();
    assert_eq!(plan.total_items, 0, "{}", plan.render_text());
    assert_eq!(
        engine.delivery_status(ResourceKind::User, &sid).unwrap(),
        DeliveryStatus::Applied
    );
    let state = api.state().await;
    assert!(!state.users["pre@acme.test"].is_superuser);
    let idp = Idp::patient(&bridge::root(&server), BRIDGE_TENANT, BRIDGE_TOKEN);
    assert_eq!(
        idp.all_user_names().await,
        state.users.keys().cloned().collect::<BTreeSet<_>>(),
        "the bridge lists exactly Metabase's users"
    );
    drop(engine);
    server.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_is_failed_in_the_plan_and_delivered_when_an_operator_retries_it() {
    let label = "retry";
    let sim = scim_bridge::sim::start(
        Vendor::Metabase,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            seed: Some(14),
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator starts");
    let base = sim.base_url();
    let api = MetabaseApi::connect(&base).await;
    let v = Variant {
        seq: Seq::Entra,
        sign_in: SignIn::ApiKey,
    };
    v.prepare(&api).await;
    // A Metabase user holds the email the IdP will give carl (Metabase keys users by email).
    let taken = api
        .create_user("taken@acme.test", "Taken", "Before", json!(null))
        .await;

    // Accepted by a dry run, refused once applied: the email is another user's.
    let dir = tempfile::tempdir().unwrap();
    let server = bridge::serve_toml(label, &config_text(&v, dir.path(), &base, true)).await;
    let idp = Idp::checked(&bridge::root(&server), BRIDGE_TENANT, BRIDGE_TOKEN, label)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    let carl = idp::create(
        &idp,
        "/Users",
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "carl@acme.test",
            "name": {"givenName": "Carl", "familyName": "Carter"},
            "emails": [{"value": "taken@acme.test", "primary": true}],
            "active": true
        }),
    )
    .await;
    server.stop().await;

    let server = bridge::serve_toml(label, &config_text(&v, dir.path(), &base, false)).await;
    let engine = engine_of(&server);
    let failed = || async {
        match engine.delivery_status(ResourceKind::User, &carl).unwrap() {
            DeliveryStatus::Failed { .. } => Vec::new(),
            other => vec![format!("carl is {other:?}")],
        }
    };
    converge(
        CONVERGE_LIMIT,
        Duration::from_millis(200),
        "the create is refused",
        failed,
    )
    .await;
    let plan = engine.plan().unwrap();
    let c = item(&plan, "carl@acme.test");
    match &c.status {
        PlanStatus::Failed { reason } => {
            assert!(reason.contains("Metabase refused"), "{reason}")
        }
        other => panic!("carl: {other:?}"),
    }
    assert!(has(c, Action::CreateUser, None, Some(VIEWERS)), "{c:?}");
    assert_eq!(plan.objects.failed, 1, "{}", plan.render_text());
    assert!(plan.render_text().contains("[failed: "));
    // Not retried on its own.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(matches!(
        engine.delivery_status(ResourceKind::User, &carl).unwrap(),
        DeliveryStatus::Failed { .. }
    ));

    // The operator frees the email at Metabase, then retries carl.
    let (s, body) = api
        .call(
            Method::PUT,
            &format!("/api/user/{taken}"),
            Some(&json!({"email": "taken.before@acme.test"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        engine
            .retry_failed_by_operator(Some((ResourceKind::User, carl.clone())))
            .unwrap(),
        1
    );
    converge(
        CONVERGE_LIMIT,
        Duration::from_millis(200),
        "the operator's retry is delivered",
        || async {
            let state = api.state().await;
            match state.users.get("taken@acme.test") {
                Some(u) if u.first_name.as_deref() == Some("Carl") => Vec::new(),
                other => vec![format!("taken@acme.test is {other:?}")],
            }
        },
    )
    .await;
    assert!(engine.drained(CONVERGE_LIMIT).await);
    assert_eq!(
        engine.delivery_status(ResourceKind::User, &carl).unwrap(),
        DeliveryStatus::Applied
    );
    let by_operator: Vec<_> = engine
        .audit()
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.user_id == carl && e.actor == "operator")
        .collect();
    assert!(
        !by_operator.is_empty(),
        "carl's delivery is audited as the operator's: {:?}",
        engine.audit().entries().unwrap()
    );
    // Nothing is failed any more.
    assert_eq!(engine.retry_failed_by_operator(None).unwrap(), 0);
    assert_eq!(
        engine
            .retry_failed_by_operator(Some((ResourceKind::User, "no-such-id".into())))
            .unwrap(),
        0
    );
    drop(engine);
    server.stop().await;
    sim.stop().await;
}

/// The plan at scale: a dry-run tenant with `DRY_RUN_SCALE_USERS` users created by the IdP
/// (default 100,000; the write path itself, without HTTP) in groups of 1,000, half of them
/// moved to another group. The whole plan, and a page with the whole plan's counts, each take
/// well under the console's second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_of_a_hundred_thousand_users_is_quick() {
    use futures_util::StreamExt;
    use scim_bridge::connector::RequestContext;
    let n: usize = std::env::var("DRY_RUN_SCALE_USERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let sim = scim_bridge::sim::start(
        Vendor::Metabase,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            seed: Some(15),
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator starts");
    let base = sim.base_url();
    let api = MetabaseApi::connect(&base).await;
    let v = Variant {
        seq: Seq::Entra,
        sign_in: SignIn::ApiKey,
    };
    v.prepare(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let server = bridge::serve_toml("scale", &config_text(&v, dir.path(), &base, true)).await;
    let idp = Idp::patient(&bridge::root(&server), BRIDGE_TENANT, BRIDGE_TOKEN)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    let connector = server
        .state
        .tenant(BRIDGE_TENANT)
        .expect("the run's tenant is served")
        .connector
        .clone();
    let ctx = RequestContext {
        base_url: "http://bridge/scim/v2".into(),
    };
    let started = std::time::Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| {
            let connector = connector.clone();
            let ctx = ctx.clone();
            async move {
                let login = format!("user{i:06}@scale.test");
                let doc = connector
                    .create(
                        ResourceKind::User,
                        json!({
                            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": login,
                            "name": {"givenName": "U", "familyName": format!("{i}")},
                            "emails": [{"value": login, "primary": true}],
                            "active": i % 10 != 0
                        }),
                        &ctx,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("create {login}: {}", e.detail));
                doc["id"].as_str().unwrap().to_string()
            }
        })
        .buffered(64)
        .collect()
        .await;
    for (g, chunk) in ids.chunks(1000).enumerate() {
        let name = if g % 2 == 0 {
            "BI Designers"
        } else {
            "BI Admins"
        };
        let members: Vec<&str> = chunk.iter().map(String::as_str).collect();
        connector
            .create(
                ResourceKind::Group,
                idp::group(&format!("{name} {g}"), &members),
                &ctx,
            )
            .await
            .unwrap_or_else(|e| panic!("group {g}: {}", e.detail));
    }
    eprintln!("scale: {n} users written in {:?}", started.elapsed());
    let engine = engine_of(&server);

    let t = std::time::Instant::now();
    let page = engine.plan_page(0, 50).unwrap();
    let page_took = t.elapsed();
    let t = std::time::Instant::now();
    let plan = engine.plan().unwrap();
    let whole_took = t.elapsed();
    eprintln!("scale: a page of the plan in {page_took:?}, the whole plan in {whole_took:?}");
    assert_eq!(plan.counts[&Action::CreateUser], n as u64);
    assert_eq!(plan.counts[&Action::AddMember], n as u64);
    assert_eq!(plan.counts[&Action::CreateGroup], n.div_ceil(1000) as u64);
    assert_eq!(page.items.len(), 50);
    assert_eq!(page.counts, plan.counts);
    assert_eq!(plan.items.len() as u64, plan.total_items);
    let limit = Duration::from_secs(if n > 100_000 { 30 } else { 5 });
    assert!(page_took < limit, "a page took {page_took:?}");
    assert!(whole_took < limit, "the whole plan took {whole_took:?}");
    drop(engine);
    server.stop().await;
    sim.stop().await;
}

/// A page of the plan is served from the last build while nothing changed (the console's
/// paging), and never after a change: each IdP write between two pages shows in the next one,
/// counts and items alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_after_a_change_shows_it_though_the_plan_was_cached() {
    let label = "plan-cache";
    let sim = scim_bridge::sim::start(
        Vendor::Metabase,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            seed: Some(16),
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator starts");
    let base = sim.base_url();
    let api = MetabaseApi::connect(&base).await;
    let v = Variant {
        seq: Seq::Entra,
        sign_in: SignIn::ApiKey,
    };
    v.prepare(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let server = bridge::serve_toml(label, &config_text(&v, dir.path(), &base, true)).await;
    let idp = Idp::checked(&bridge::root(&server), BRIDGE_TENANT, BRIDGE_TOKEN, label)
        .with_admin(&bridge::admin_root(&server));
    idp.wait_ready().await;
    let user = |login: &str| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": login,
            "name": {"givenName": "C", "familyName": "Ache"},
            "emails": [{"value": login, "primary": true}],
            "active": true
        })
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(idp::create(&idp, "/Users", user(&format!("cache{i}@acme.test"))).await);
    }
    let engine = engine_of(&server);
    let creates = |p: &Plan| p.counts[&Action::CreateUser];
    let names = |p: &Plan| p.items.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    let first = engine.plan_page(0, 10).unwrap();
    assert_eq!(creates(&first), 3, "{}", first.render_text());
    // Unchanged: the same page again (from the build just made), and a second page.
    let again = engine.plan_page(0, 10).unwrap();
    assert_eq!(
        (again.counts.clone(), names(&again)),
        (first.counts.clone(), names(&first))
    );
    let second = engine.plan_page(2, 10).unwrap();
    assert_eq!(names(&second), names(&first)[2..].to_vec());
    assert_eq!(second.total_items, 3);

    // A new user: counted, and on the page.
    ids.push(idp::create(&idp, "/Users", user("cache3@acme.test")).await);
    let after_create = engine.plan_page(0, 10).unwrap();
    assert_eq!(creates(&after_create), 4, "{}", after_create.render_text());
    assert_eq!(after_create.total_items, 4);
    assert!(names(&after_create).contains(&"cache3@acme.test".to_string()));

    // A deactivation changes an item without changing a count: the item shows it.
    idp.patch_ok(
        &format!("/Users/{}", ids[0]),
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .await;
    let after_patch = engine.plan_page(0, 10).unwrap();
    let c0 = item(&after_patch, "cache0@acme.test");
    assert!(
        c0.changes
            .iter()
            .any(|c| c.action == Action::CreateUser && c.detail.as_deref() == Some("inactive")),
        "{}",
        after_patch.render_text()
    );

    // A user deleted before its create was ever tried owes nothing: gone from counts and page.
    let (s, body) = idp.delete(&format!("/Users/{}", ids[1])).await;
    assert_eq!(s, 204, "{body}");
    let after_delete = engine.plan_page(0, 10).unwrap();
    assert_eq!(creates(&after_delete), 3, "{}", after_delete.render_text());
    assert_eq!(after_delete.total_items, 3);
    assert!(!names(&after_delete).contains(&"cache1@acme.test".to_string()));
    // And a filtered page from the same build agrees with the whole plan built afresh.
    let whole = engine.plan().unwrap();
    let filtered = engine
        .plan_query(&scim_bridge::engine::plan::PlanQuery {
            offset: 0,
            limit: Some(10),
            action: Some(Action::CreateUser),
            status: Some("dry_run".into()),
        })
        .unwrap();
    assert_eq!(names(&filtered), names(&whole));
    assert_eq!(filtered.items, whole.items);
    drop(engine);
    server.stop().await;
    sim.stop().await;
}

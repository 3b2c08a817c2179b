//! The Tableau connector against the Tableau simulator over real sockets. End states are checked
//! through Tableau's own REST API (`TableauApi`), never through bridge internals.

#[path = "support/idp.rs"]
mod idp;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use idp::simulator_process;
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tableau_api::*;

/// The simulators' idle timeout in this file's checker test.
const IDLE: Duration = Duration::from_secs(3);

/// A PAT sign-in, as the bridge makes it: the session token and the site's LUID.
async fn pat_session(base: &str) -> (String, String) {
    idp::retry(|| async {
        let body = json!({"credentials": {"personalAccessTokenName": PAT_NAME,
            "personalAccessTokenSecret": PAT_SECRET, "site": {"contentUrl": SITE}}});
        let r = reqwest::Client::new()
            .post(format!("{base}/api/{API_VERSION}/auth/signin"))
            .header("Accept", "application/json")
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let c = &v["credentials"];
        Some((
            c["token"].as_str()?.to_string(),
            c["site"]["id"].as_str()?.to_string(),
        ))
    })
    .await
}

/// The status of `GET users` with a session token (faults retried).
async fn users_status(base: &str, token: &str, site: &str) -> u16 {
    idp::retry(|| async {
        let s = reqwest::Client::new()
            .get(format!("{base}/api/{API_VERSION}/sites/{site}/users"))
            .header("X-Tableau-Auth", token)
            .send()
            .await
            .ok()?
            .status()
            .as_u16();
        (s < 500 && s != 429).then_some(s)
    })
    .await
}

/// How many sign-ins the simulator was sent (`/__sim/stats`, never faulted).
async fn sign_ins(base: &str) -> u64 {
    let v: Value = reqwest::get(format!("{base}/__sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["by_route"]["POST /api/{v}/auth/signin"]
        .as_u64()
        .unwrap_or(0)
}

/// What the checker must read from a fresh simulator of either flavour, through its faults and
/// its idle timeout (`IDLE`), without ending the PAT's session.
async fn checker_reads(base: &str, admin_role: &str) {
    let (pat_token, pat_site) = pat_session(base).await;
    let api = TableauApi::login(base).await;
    assert_eq!(api.site_id(), pat_site);
    // Seeded: the admin alone, in "All Users" only.
    let state = api.state().await;
    // The checker signed in with the admin's password: the PAT's session is still alive.
    assert_eq!(users_status(base, &pat_token, &pat_site).await, 200);
    assert_eq!(
        state.keys().collect::<Vec<_>>(),
        [ADMIN_USER],
        "{base}: {state:?}"
    );
    let admin = &state[ADMIN_USER];
    assert_eq!(
        (admin.id.as_str(), admin.site_role.as_str()),
        (api.admin_id().as_str(), admin_role)
    );
    assert_eq!(admin.full_name, "Tableau Admin");
    assert_eq!(admin.email, ADMIN_USER);
    assert!(admin.groups.is_empty(), "{admin:?}");
    assert!(
        api.groups().await.iter().any(|g| g["name"] == ALL_USERS),
        "the groups list has All Users"
    );

    let pre = api.create_user("Pre@acme.test", "Viewer").await;
    let designers = api.create_group("BI Designers").await;
    let admins = api.create_group("BI Admins").await;
    api.add_member(&designers, &pre).await;
    api.add_member(&admins, &pre).await;
    api.add_member(&admins, &pre).await; // already a member: fine
                                         // More users than one page holds.
    for i in 0..105 {
        api.create_user(&format!("u{i:03}@acme.test"), "Explorer")
            .await;
    }
    // The session idles out: the next call signs in again.
    let before = sign_ins(base).await;
    tokio::time::sleep(IDLE + Duration::from_millis(500)).await;
    let state = api.state().await;
    assert!(
        sign_ins(base).await > before,
        "no new sign-in after the idle timeout"
    );
    assert_eq!(state.len(), 107, "{base}: {:?}", state.keys());
    let p = &state["pre@acme.test"];
    assert_eq!(p.id, pre);
    assert_eq!(p.site_role, "Viewer");
    assert_eq!(
        p.groups,
        BTreeSet::from(["BI Admins".to_string(), "BI Designers".to_string()])
    );
    let u = &state["u104@acme.test"];
    assert_eq!((u.site_role.as_str(), u.groups.len()), ("Explorer", 0));
    assert_eq!(
        api.group_members(&admins).await.len(),
        1,
        "{base}: BI Admins"
    );
    assert_eq!(api.users().await.len(), 107);
    assert_eq!(
        api.user_by_name("PRE@acme.test").await.unwrap()["id"],
        json!(pre)
    );
    // A user who owns content cannot be removed: unlicensed instead (409003).
    api.set_content(&pre, 2).await;
    let (s, v) = api
        .call(reqwest::Method::DELETE, &format!("users/{pre}"), None)
        .await;
    assert_eq!((s, &v["error"]["code"]), (409, &json!("409003")), "{v}");
    assert_eq!(api.state().await["pre@acme.test"].site_role, "Unlicensed");
}

/// The checker against the simulator in both flavours, each failing 15% of requests and idling
/// sessions out after `IDLE`: Server in-process, Cloud as a `scim-bridge simulate` process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_reads_the_simulator() {
    let sim = scim_bridge::sim::start(
        Vendor::Tableau,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            error_rate: 0.15,
            token_ttl_s: Some(IDLE.as_secs()),
            seed: Some(3),
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator starts");
    checker_reads(&sim.base_url(), "ServerAdministrator").await;
    sim.stop().await;

    let idle = IDLE.as_secs().to_string();
    let (cloud, base) = simulator_process(
        "tableau",
        &[
            "--sim-switch",
            "tableau.flavor=cloud",
            "--error-rate",
            "0.15",
            "--token-ttl-s",
            &idle,
            "--seed",
            "4",
        ],
    );
    checker_reads(&base, "SiteAdministratorCreator").await;
    drop(cloud);
}

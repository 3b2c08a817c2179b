//! The Tableau connector against the Tableau simulator over real sockets. End states are checked
//! through Tableau's own REST API (`TableauApi`), never through bridge internals.
//!
//! The clean acceptance run: the shared Okta and Entra sequences (tests/support/idp.rs) end with
//! the right Tableau state — users, site roles, groups, membership, and on Server full names and
//! emails — in four variants that cover both sequences, both sign-in methods (PAT, connected-app
//! JWT) and both flavours (Server, Cloud), with Tableau checked after every step of the
//! sequence. tests/tableau_chaos.rs runs the same variants under faults, a vendor freeze and a
//! SIGKILL of the bridge.
//!
//! How Tableau holds the sequences' state: the rules give `BI Admins → SiteAdministratorCreator`,
//! `BI Designers → Creator`, else `Viewer`; an inactive user is `Unlicensed` (so its site role
//! tells activation); Okta's tenant unlicenses on delete (`deprovision = "unlicense"`), Entra's
//! hard-deletes (`"delete"`: gus leaves the site); Tableau's own admin is the one user besides the
//! sequence's.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use bridge::converge;
use idp::{run_variants, simulator_process, Hooks, Seq, Step};
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
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
    idp::sim_route_count(base, "POST /api/{v}/auth/signin").await
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

// ---------------------------------------------------------------------------------------------
// The clean acceptance run.
// ---------------------------------------------------------------------------------------------

/// How long a step's (or the end's) state may take to show in Tableau after the IdP's answer.
/// Writes are delivered inline, before the answer; this covers a write that outlives the
/// inline deadline on a busy machine (four variants on two cores) and is delivered just after.
const STEP_LIMIT: Duration = Duration::from_secs(10);

const ADMIN: &str = TABLEAU_ROLES.admin;
const CREATOR: &str = TABLEAU_ROLES.designer;
const VIEWER: &str = TABLEAU_ROLES.default;
const A: &str = "BI Admins";
const D: &str = "BI Designers";

/// A user's state in Tableau at a step: the site role and the groups, or `None` for absent.
type Want = (
    &'static str,
    Option<(&'static str, &'static [&'static str])>,
);

/// What Tableau must show after each step but the last (which is the end state). Users left
/// out are not checked at that step.
fn at_step(seq: Seq, step: Step) -> &'static [Want] {
    const NONE: &[&str] = &[];
    match (seq, step) {
        (Seq::Okta, Step::UsersAssigned) => &[
            ("ada@acme.test", Some((VIEWER, NONE))),
            ("bob@acme.test", Some((VIEWER, NONE))),
            ("cy@acme.test", Some((VIEWER, NONE))),
            ("dee@acme.test", Some((VIEWER, NONE))),
            ("pre@acme.test", Some((VIEWER, NONE))),
        ],
        (Seq::Okta, Step::GroupsCreated) => &[
            ("ada@acme.test", Some((VIEWER, NONE))),
            ("bob@acme.test", Some((CREATOR, &[D]))),
        ],
        (Seq::Okta, Step::MembersChanged) => &[
            ("ada@acme.test", Some((ADMIN, &[A]))),
            ("bob@acme.test", Some((CREATOR, &[D]))),
            ("cy@acme.test", Some((VIEWER, NONE))),
            ("dee@acme.test", Some((VIEWER, NONE))),
            ("pre@acme.test", Some((CREATOR, &[D]))),
        ],
        (Seq::Okta, Step::ProfileChanged) => &[("bob@acme.test", Some((CREATOR, &[D])))],
        (Seq::Okta, Step::Deactivated) => &[
            ("cy@acme.test", Some((VIEWER, NONE))),
            ("dee@acme.test", Some((UNLICENSED, NONE))),
        ],
        (Seq::Entra, Step::UsersAssigned | Step::GroupsCreated) => &[
            ("eve@contoso.test", Some((VIEWER, NONE))),
            ("fay@contoso.test", Some((VIEWER, NONE))),
            ("gus@contoso.test", Some((VIEWER, NONE))),
        ],
        (Seq::Entra, Step::MembersChanged) => &[
            ("eve@contoso.test", Some((ADMIN, &[A, D]))),
            ("fay@contoso.test", Some((CREATOR, &[D]))),
            ("gus@contoso.test", Some((VIEWER, NONE))),
        ],
        (Seq::Entra, Step::ProfileChanged) => &[("fay@contoso.test", Some((CREATOR, &[D])))],
        // Deactivated: no seat, the groups kept.
        (Seq::Entra, Step::Deactivated) => &[("fay@contoso.test", Some((UNLICENSED, &[D])))],
        (Seq::Entra, Step::Reactivated) => &[("fay@contoso.test", Some((ADMIN, &[A, D])))],
        _ => &[],
    }
}

/// The sequence's last step, after which the whole end state is checked.
fn last_step(seq: Seq) -> Step {
    match seq {
        Seq::Okta => Step::GroupReplaced,
        Seq::Entra => Step::Deleted,
    }
}

/// How Tableau differs from what `step` must show.
fn step_diff(v: &Variant, step: Step, state: &BTreeMap<String, TableauUser>) -> Vec<String> {
    if step == last_step(v.seq) {
        return v.diff(state);
    }
    let mut out = Vec::new();
    for (login, want) in at_step(v.seq, step) {
        let have = state.get(*login).map(|u| {
            let groups: Vec<&str> = u.groups.iter().map(String::as_str).collect();
            (u.site_role.as_str(), groups)
        });
        let want = want.map(|(role, groups)| (role, groups.to_vec()));
        if have != want {
            out.push(format!("{login}: want {want:?}, got {have:?}"));
        }
    }
    // Names and emails are written with the create (Server), and the renamed user's full name
    // changed by ProfileChanged.
    let names = v.expected().names_after(step, v.full_names());
    out.extend(profile_diff(state, &names));
    out
}

/// Tableau read after every step of the sequence.
struct StepChecks<'a> {
    api: &'a TableauApi,
    v: Variant,
    label: String,
}

impl Hooks for StepChecks<'_> {
    async fn after(&mut self, step: Step) {
        let what = format!("{}: after {step:?}, Tableau differs", self.label);
        converge(STEP_LIMIT, Duration::from_millis(200), &what, || async {
            let state = self.api.state().await;
            let mut diff = step_diff(&self.v, step, &state);
            if step == Step::GroupsCreated {
                let names: BTreeSet<String> = self
                    .api
                    .groups()
                    .await
                    .iter()
                    .filter_map(|g| g["name"].as_str().map(str::to_string))
                    .collect();
                for g in [A, D] {
                    if !names.contains(g) {
                        diff.push(format!("no group {g} in Tableau: {names:?}"));
                    }
                }
            }
            diff
        })
        .await;
    }
}

/// The Okta and the Entra sequence, each with a PAT and a connected app, against Tableau Server
/// and Tableau Cloud (four variants, concurrently, each with its own simulator and bridge in
/// this process): every request answered below 500 and within 15 s, Tableau right after every
/// step, and the end state — read through Tableau's API — with the bridge listing exactly
/// Tableau's users. `TABLEAU_ONLY=entra/jwt` runs only the variants whose label contains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_end_with_the_right_tableau_state() {
    run_variants(
        "clean",
        "TABLEAU_ONLY",
        Variant::all(),
        |v, label| async move {
            let sim = scim_bridge::sim::start(
                Vendor::Tableau,
                "127.0.0.1:0".parse().unwrap(),
                SimOptions {
                    seed: Some(5),
                    switches: v.sim_switches(),
                    ..SimOptions::default()
                },
            )
            .await
            .expect("simulator starts");
            let base = sim.base_url();
            let api = TableauApi::login(&base).await;
            if v.seq == Seq::Okta {
                // Made in Tableau before the bridge: the IdP's lookup must find it.
                api.create_user("pre@acme.test", VIEWER).await;
            }
            let dir = tempfile::tempdir().unwrap();
            let (server, idp) = serve_checked(&v, &base, dir.path(), &label).await;
            let mut checks = StepChecks {
                api: &api,
                v,
                label: label.clone(),
            };
            v.seq.run(&idp, &mut checks).await;
            settle(&idp, &v, &api, STEP_LIMIT).await;
            server.stop().await;
            sim.stop().await;
        },
    )
    .await;
}

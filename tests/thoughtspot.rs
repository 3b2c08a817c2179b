//! The ThoughtSpot connector against the ThoughtSpot simulator over real sockets. End states are
//! checked through ThoughtSpot's own REST API (`ThoughtspotApi`), never through bridge
//! internals.
//!
//! The clean acceptance run: the shared Okta and Entra sequences (tests/support/idp.rs), with
//! the steps this connector adds through the sequences' hooks (`thoughtspot_api::extra_step`: an
//! Org group `org-acme` pushed and changed, the enterprise `division` set, changed and cleared),
//! end with the right ThoughtSpot state — users, `account_status`, mirrored groups and members,
//! the role group the rules give, Org `acme` membership, the formula variable `region`'s
//! values, display names and emails, "All" and "Administrator" untouched — in four variants
//! (each sequence with a password and with a secret key), with ThoughtSpot checked after every
//! step. tests/thoughtspot_chaos.rs runs the sequences under faults, a vendor freeze and a
//! SIGKILL of the bridge.
//!
//! How ThoughtSpot holds the sequences' state: the rules give `BI Admins → Analyst`, `BI
//! Designers → Analyst`, else `Viewer`, RBAC roles held through the bridge's groups `scim-bridge
//! role Analyst` / `scim-bridge role Viewer` (exactly one per user the IdP wrote); an inactive
//! user is SUSPENDED and keeps its groups; a SCIM DELETE deletes the user; ThoughtSpot's own
//! admin `tsadmin` is the one user besides the sequence's.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/thoughtspot_api.rs"]
mod thoughtspot_api;

use bridge::converge;
use idp::{run_variants, Hooks, Seq, Step};
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use thoughtspot_api::*;

// ---------------------------------------------------------------------------------------------
// The checker itself.
// ---------------------------------------------------------------------------------------------

/// The checker against an in-process simulator that fails 15% of requests and grants tokens
/// for 3 s: it pages, signs in again, and reads every field the runs compare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_reads_the_simulator() {
    let sim = scim_bridge::sim::start(
        Vendor::Thoughtspot,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            error_rate: 0.15,
            token_ttl_s: Some(3),
            seed: Some(3),
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator starts");
    let base = sim.base_url();
    let api = ThoughtspotApi::login(&base).await;
    // Seeded: the admin alone, in Administrator; All, Administrator; `region` without values.
    let state = api.state().await;
    assert_eq!(state.users.keys().collect::<Vec<_>>(), [ADMIN_USER]);
    assert!(
        builtin_diff(&state).is_empty(),
        "{:?}",
        builtin_diff(&state)
    );
    assert_eq!(
        state.groups.keys().collect::<Vec<_>>(),
        [ADMIN_GROUP, ALL_GROUP]
    );
    assert!(state.region.is_empty() && state.other_values.is_empty());
    assert!(state.orgs.contains(PRIMARY_ORG) && !state.orgs.contains(ORG));

    // More users than a page holds, one in a group with a value of `region`.
    let pre = api.create_user("pre@acme.test", "Pre Existing").await;
    assert_eq!(api.create_user("pre@acme.test", "Again").await, pre);
    for i in 0..60 {
        api.create_user(&format!("u{i:02}@acme.test"), "U").await;
    }
    let (s, g) = api
        .call(
            "groups/create",
            Some(&json!({"name": "BI Designers", "display_name": "BI Designers"})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    let gid = g["id"].as_str().unwrap();
    let (s, v) = api
        .call(
            &format!("groups/{gid}/update"),
            Some(&json!({"user_identifiers": [pre], "operation": "ADD"})),
        )
        .await;
    assert!(s == 204 || s == 200, "{s} {v}");
    let (s, v) = api
        .call(
            &format!("template/variables/{VARIABLE}/update-values"),
            Some(&json!({"operation": "REPLACE", "variable_assignment": [{
                "assigned_values": ["EMEA"], "org_identifier": PRIMARY_ORG,
                "principal_type": "USER", "principal_identifier": "pre@acme.test"}]})),
        )
        .await;
    assert!(s == 204 || s == 200, "{s} {v}");
    // The token runs out: the next read signs in again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let state = api.state().await;
    assert_eq!(state.users.len(), 62, "{:?}", state.users.keys());
    let p = &state.users["pre@acme.test"];
    assert_eq!(
        (
            p.id.as_str(),
            p.status.as_str(),
            p.display_name.as_str(),
            p.email.as_str()
        ),
        (pre.as_str(), "ACTIVE", "Pre Existing", "pre@acme.test")
    );
    assert_eq!(p.groups, BTreeSet::from(["BI Designers".to_string()]));
    assert_eq!(p.orgs, BTreeSet::from([PRIMARY_ORG.to_string()]));
    assert_eq!(
        state.groups["BI Designers"].members,
        BTreeSet::from(["pre@acme.test".to_string()])
    );
    assert_eq!(
        state.region,
        BTreeMap::from([("pre@acme.test".to_string(), vec!["EMEA".to_string()])])
    );
    assert!(
        builtin_diff(&state).is_empty(),
        "{:?}",
        builtin_diff(&state)
    );
    assert_eq!(accounts(&state)["pre@acme.test"].role, NO_ROLE);
    // The comparisons see what is wrong: no sequence user, no Org, a value nobody expects.
    let okta = Variant {
        seq: Seq::Okta,
        sign_in: SignIn::Password,
    };
    let diff = okta.diff(&state).join("; ");
    for part in [
        "ada@acme.test: want",
        "62 vendor users, want 6",
        "no Org acme",
        "region values: want",
        "groups: want",
    ] {
        assert!(diff.contains(part), "{part:?} not in {diff}");
    }
    assert!(!region_diff(&state, &BTreeMap::new()).is_empty());
    let mut broken = state.clone();
    broken
        .users
        .get_mut(ADMIN_USER)
        .unwrap()
        .groups
        .insert(D.to_string());
    // The admin in another group: its own check and the group's member list disagree.
    assert_eq!(
        builtin_diff(&broken).len(),
        2,
        "{:?}",
        builtin_diff(&broken)
    );
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The clean acceptance run.
// ---------------------------------------------------------------------------------------------

/// How long a step's (or the end's) state may take to show in ThoughtSpot after the IdP's
/// answer (a write that outlives the inline deadline on a busy machine is delivered just after).
const STEP_LIMIT: Duration = Duration::from_secs(10);

const ANALYST: &str = TS_ROLES.admin;
const VIEWER: &str = TS_ROLES.default;
const A: &str = "BI Admins";
const D: &str = "BI Designers";
const NONE: &[&str] = &[];

/// A user's state at a step: role, active, groups; `None` for absent.
type Want = (
    &'static str,
    Option<(&'static str, bool, &'static [&'static str])>,
);

/// What ThoughtSpot must show after each step (and its extra writes) but the last, which is
/// the end state: users (those left out are not checked), and when given the whole of
/// `region`'s values and of the Org `acme`'s members.
struct AtStep {
    users: &'static [Want],
    region: Option<Regions>,
    acme: Option<&'static [&'static str]>,
}

/// `region` values by user name.
type Regions = &'static [(&'static str, &'static str)];

fn at_step(seq: Seq, step: Step) -> AtStep {
    let (users, region, acme): (
        &'static [Want],
        Option<Regions>,
        Option<&'static [&'static str]>,
    ) = match (seq, step) {
        (Seq::Okta, Step::UsersAssigned) => (
            &[
                ("ada@acme.test", Some((VIEWER, true, NONE))),
                ("bob@acme.test", Some((VIEWER, true, NONE))),
                ("cy@acme.test", Some((VIEWER, true, NONE))),
                ("dee@acme.test", Some((VIEWER, true, NONE))),
            ],
            Some(&[("ada@acme.test", "EMEA"), ("bob@acme.test", "AMER")]),
            None,
        ),
        (Seq::Okta, Step::GroupsCreated) => (
            &[
                ("ada@acme.test", Some((VIEWER, true, NONE))),
                ("bob@acme.test", Some((ANALYST, true, &[D]))),
            ],
            None,
            None,
        ),
        (Seq::Okta, Step::MembersChanged) => (
            &[
                ("ada@acme.test", Some((ANALYST, true, &[A]))),
                ("bob@acme.test", Some((ANALYST, true, &[D]))),
                ("cy@acme.test", Some((VIEWER, true, NONE))),
                ("dee@acme.test", Some((VIEWER, true, NONE))),
                ("pre@acme.test", Some((ANALYST, true, &[D]))),
            ],
            None,
            Some(&["ada@acme.test", "pre@acme.test"]),
        ),
        (Seq::Okta, Step::ProfileChanged) => (
            &[("bob@acme.test", Some((ANALYST, true, &[D])))],
            Some(&[("ada@acme.test", "APAC")]),
            None,
        ),
        (Seq::Okta, Step::Deactivated) => (
            &[
                ("cy@acme.test", Some((VIEWER, true, NONE))),
                ("dee@acme.test", Some((VIEWER, false, NONE))),
            ],
            None,
            None,
        ),
        (Seq::Entra, Step::UsersAssigned | Step::GroupsCreated) => (
            &[
                ("eve@contoso.test", Some((VIEWER, true, NONE))),
                ("fay@contoso.test", Some((VIEWER, true, NONE))),
                ("gus@contoso.test", Some((VIEWER, true, NONE))),
            ],
            Some(&[
                ("eve@contoso.test", "EMEA"),
                ("fay@contoso.test", "AMER"),
                ("gus@contoso.test", "APAC"),
            ]),
            None,
        ),
        (Seq::Entra, Step::MembersChanged) => (
            &[
                ("eve@contoso.test", Some((ANALYST, true, &[A, D]))),
                ("fay@contoso.test", Some((ANALYST, true, &[D]))),
                ("gus@contoso.test", Some((VIEWER, true, NONE))),
            ],
            None,
            Some(&["eve@contoso.test", "fay@contoso.test", "gus@contoso.test"]),
        ),
        (Seq::Entra, Step::ProfileChanged) => (
            &[("fay@contoso.test", Some((ANALYST, true, &[D])))],
            Some(&[("fay@contoso.test", "EMEA"), ("gus@contoso.test", "APAC")]),
            None,
        ),
        // Deactivated: SUSPENDED, the groups and the role group kept.
        (Seq::Entra, Step::Deactivated) => (
            &[("fay@contoso.test", Some((ANALYST, false, &[D])))],
            None,
            None,
        ),
        (Seq::Entra, Step::Reactivated) => (
            &[("fay@contoso.test", Some((ANALYST, true, &[A, D])))],
            None,
            None,
        ),
        _ => (&[], None, None),
    };
    AtStep {
        users,
        region,
        acme,
    }
}

/// The sequence's last step, after which the whole end state is checked.
fn last_step(seq: Seq) -> Step {
    match seq {
        Seq::Okta => Step::GroupReplaced,
        Seq::Entra => Step::Deleted,
    }
}

/// How ThoughtSpot differs from what `step` must show.
fn step_diff(v: &Variant, step: Step, state: &TsState) -> Vec<String> {
    if step == last_step(v.seq) {
        return v.diff(state);
    }
    let want = at_step(v.seq, step);
    let accounts = accounts(state);
    let mut out = builtin_diff(state);
    for (login, w) in want.users {
        let have = accounts.get(*login).map(|a| {
            let groups: Vec<&str> = a.groups.iter().map(String::as_str).collect();
            (a.role.as_str(), a.active, groups)
        });
        let w = w.map(|(role, active, groups)| (role, active, groups.to_vec()));
        if have != w {
            out.push(format!("{login}: want {w:?}, got {have:?}"));
        }
    }
    if let Some(region) = want.region {
        let region = region
            .iter()
            .map(|(u, r)| (u.to_string(), vec![r.to_string()]))
            .collect();
        out.extend(region_diff(state, &region));
    }
    let acme: Option<BTreeSet<String>> =
        want.acme.map(|a| a.iter().map(|s| s.to_string()).collect());
    out.extend(org_diff(state, acme.as_ref()));
    // Display names and emails are written with the create, the renamed user's display name by
    // the profile change.
    let names = v.expected().accounts.names_after(step, v.display_names());
    out.extend(profile_diff(state, &names));
    out
}

/// The run's extra IdP steps, then ThoughtSpot read after every step.
struct StepChecks<'a> {
    extra: Extra<'a>,
    api: &'a ThoughtspotApi,
    v: Variant,
    label: String,
}

impl Hooks for StepChecks<'_> {
    async fn after(&mut self, step: Step) {
        self.extra.after(step).await;
        let what = format!("{}: after {step:?}, ThoughtSpot differs", self.label);
        converge(STEP_LIMIT, Duration::from_millis(200), &what, || async {
            step_diff(&self.v, step, &self.api.state().await)
        })
        .await;
    }
}

/// The Okta and the Entra sequence, each with a password and with a secret key (four variants,
/// concurrently, each with its own simulator and bridge in this process): every request
/// answered below 500 and within 15 s, ThoughtSpot right after every step, and the end state —
/// read through ThoughtSpot's API — with the bridge listing exactly ThoughtSpot's users.
/// `THOUGHTSPOT_ONLY=entra/password` runs only the variants whose label contains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_end_with_the_right_thoughtspot_state() {
    run_variants(
        "clean",
        "THOUGHTSPOT_ONLY",
        Variant::four(),
        |v, label| async move {
            let sim = scim_bridge::sim::start(
                Vendor::Thoughtspot,
                "127.0.0.1:0".parse().unwrap(),
                SimOptions {
                    seed: Some(5),
                    ..SimOptions::default()
                },
            )
            .await
            .expect("simulator starts");
            let base = sim.base_url();
            let api = ThoughtspotApi::login(&base).await;
            if v.seq == Seq::Okta {
                // Made in ThoughtSpot before the bridge: the IdP's lookup must find it.
                api.create_user("pre@acme.test", "Pre Existing").await;
            }
            let dir = tempfile::tempdir().unwrap();
            let (server, idp) = serve_checked(&v, &base, dir.path(), 300, &label).await;
            let mut checks = StepChecks {
                extra: Extra::new(&idp, v.seq),
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

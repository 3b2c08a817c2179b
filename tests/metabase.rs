//! The Metabase connector against the Metabase simulator over real sockets. End states are
//! checked through Metabase's own REST API (`MetabaseApi`), never through bridge internals.
//!
//! The clean acceptance run: the shared Okta and Entra sequences (tests/support/idp.rs), with
//! the steps this connector adds through the sequences' hooks (`metabase_api::extra_step`: the
//! enterprise `division` set, changed and cleared as the login attribute `region`, beside an
//! unmapped attribute the bridge leaves alone; a mirrored group created, renamed and deleted;
//! a name and an attribute changed while a user is disabled), end with the right Metabase
//! state — per user `is_active`, `is_superuser`, permission groups (the role group the rules
//! give, the mirrored groups), `login_attributes`, first and last name and email; the group
//! list; "All Users", "Administrators" and Metabase's own admin untouched; a user the IdP
//! deleted deactivated and out of its mirrored groups — in four variants (each sequence with an
//! API key and with a session from a password), with Metabase checked after every step.
//! tests/metabase_chaos.rs runs the sequences under faults, a vendor freeze and a SIGKILL of
//! the bridge.
//!
//! How Metabase holds the sequences' state: see tests/support/metabase_api.rs. In short: the
//! rules give `BI Admins → Administrators`, `BI Designers → Analysts`, else `Viewers`
//! (permission groups the run creates before the bridge, exactly one per user the IdP wrote);
//! an inactive user keeps its groups; a SCIM DELETE deactivates.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/metabase_api.rs"]
mod metabase_api;

use bridge::converge;
use idp::{run_variants, Hooks, Seq, Step};
use metabase_api::*;
use scim_bridge::sim::{SimOptions, Vendor};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// The checker itself.
// ---------------------------------------------------------------------------------------------

/// The checker against an in-process simulator that fails 15% of requests: it pages, reads
/// every field the runs compare, and each comparison sees what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_reads_the_simulator() {
    let sim = scim_bridge::sim::start(
        Vendor::Metabase,
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            error_rate: 0.15,
            seed: Some(3),
            ..SimOptions::default()
        },
    )
    .await
    .expect("simulator starts");
    let base = sim.base_url();
    let api = MetabaseApi::connect(&base).await;
    // Seeded: the admin alone (the API key's user is never listed); All Users, Administrators.
    let state = api.state().await;
    assert_eq!(state.users.keys().collect::<Vec<_>>(), [ADMIN_EMAIL]);
    assert_eq!(
        state.groups.keys().collect::<Vec<_>>(),
        [ADMINISTRATORS, ALL_USERS]
    );
    // The role groups are not there yet: the only difference.
    assert_eq!(builtin_diff(&state).len(), 2, "{:?}", builtin_diff(&state));

    // What a run prepares, then more users than a page holds; pre in a mirrored group, one user
    // an admin, one deactivated in a group, one deactivated in none, one with an attribute.
    let okta = Variant {
        seq: Seq::Okta,
        sign_in: SignIn::ApiKey,
    };
    okta.prepare(&api).await;
    okta.prepare(&api).await; // a second time takes what is there
    let pre = api.user_id("pre@acme.test").await.expect("pre made");
    let mut ids = Vec::new();
    for i in 0..60 {
        let email = format!("u{i:02}@acme.test");
        ids.push(
            api.create_user(&email, "U", &format!("{i:02}"), json!(null))
                .await,
        );
    }
    let designers = api.create_group("BI Designers").await;
    api.add_member(designers, pre).await;
    api.add_member(designers, ids[1]).await;
    let admins = api.group_id(ADMINISTRATORS).await.unwrap();
    api.add_member(admins, ids[0]).await;
    api.deactivate(ids[1]).await;
    api.deactivate(ids[3]).await;
    api.set_attributes(ids[2], json!({"region": "EMEA"})).await;

    let state = api.state().await;
    assert_eq!(state.users.len(), 62, "{:?}", state.users.keys());
    assert!(
        builtin_diff(&state).is_empty(),
        "{:?}",
        builtin_diff(&state)
    );
    let p = &state.users["pre@acme.test"];
    assert_eq!(
        (
            p.id,
            p.is_active,
            p.is_superuser,
            p.first_name.as_deref(),
            p.last_name.as_deref(),
            p.email.as_str()
        ),
        (
            pre,
            true,
            false,
            Some("Pre"),
            Some("Existing"),
            "pre@acme.test"
        )
    );
    assert_eq!(
        p.groups,
        BTreeSet::from([ALL_USERS.to_string(), "BI Designers".to_string()])
    );
    assert_eq!(
        p.attributes,
        [(UNMAPPED_KEY.to_string(), UNMAPPED_VALUE.to_string())].into()
    );
    let accounts = accounts(&state);
    assert_eq!(
        accounts["pre@acme.test"],
        idp::Account::new(NO_ROLE, true, &["BI Designers"])
    );
    assert_eq!(
        accounts["u00@acme.test"],
        idp::Account::new(ADMINISTRATORS, true, &[])
    );
    assert!(state.users["u00@acme.test"].is_superuser);
    assert_eq!(
        accounts["u01@acme.test"],
        idp::Account::new(NO_ROLE, false, &["BI Designers"])
    );
    assert_eq!(
        state.users["u02@acme.test"].attributes,
        [("region".to_string(), "EMEA".to_string())].into()
    );
    assert_eq!(state.groups["BI Designers"].member_count, 1); // u01 is inactive
    assert!(groups_diff(&state, &["BI Designers"]).is_empty());

    // The comparisons see what is wrong: no sequence user, too many users, a group nobody
    // expects, attributes nobody expects, names of users that are not there.
    let diff = okta.diff(&state).join("; ");
    for part in [
        "ada@acme.test: want",
        "62 vendor users, want 6",
        "groups: want",
        "login_attributes: want",
        "bob@acme.test: not in Metabase",
    ] {
        assert!(diff.contains(part), "{part:?} not in {diff}");
    }
    assert!(!diff.contains("pre@acme.test: want first"), "{diff}");
    // A deleted user: active (u02), in a mirrored group (u01), gone (x), or as it must be (u03).
    let deleted = |l: &[&str]| -> BTreeSet<String> { l.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        deleted_diff(
            &state,
            &deleted(&["u01@acme.test", "u02@acme.test", "x@acme.test"])
        )
        .len(),
        3
    );
    assert!(deleted_diff(&state, &deleted(&["u03@acme.test"])).is_empty());
    // Attributes: a deleted user's are not compared; anyone else's are.
    let want = attrs(&[
        ("pre@acme.test", &[(UNMAPPED_KEY, UNMAPPED_VALUE)]),
        ("u02@acme.test", &[("region", "EMEA")]),
    ]);
    assert!(attrs_diff(&state, &want, &BTreeSet::new()).is_empty());
    let want = attrs(&[("pre@acme.test", &[(UNMAPPED_KEY, UNMAPPED_VALUE)])]);
    assert_eq!(attrs_diff(&state, &want, &BTreeSet::new()).len(), 1);
    assert!(attrs_diff(&state, &want, &deleted(&["u02@acme.test"])).is_empty());
    let want = attrs(&[("pre@acme.test", &[(UNMAPPED_KEY, "sales")])]);
    assert_eq!(
        attrs_diff(&state, &want, &deleted(&["u02@acme.test"])).len(),
        1
    );
    assert_eq!(
        profile_diff(&state, &[("pre@acme.test", "Pre", "Existing")]),
        Vec::<String>::new()
    );
    assert_eq!(
        profile_diff(&state, &[("pre@acme.test", "Pre", "Other")]).len(),
        1
    );
    // The admin in a role group, or not superuser while in Administrators; a membership list
    // that disagrees with group_ids.
    let mut broken = state.clone();
    let a = broken.users.get_mut(ADMIN_EMAIL).unwrap();
    a.groups.insert(VIEWERS.to_string());
    a.is_superuser = false;
    let d = builtin_diff(&broken);
    assert_eq!(d.len(), 2, "{d:?}");
    let mut broken = state.clone();
    broken
        .memberships
        .get_mut(&pre)
        .unwrap()
        .insert(designers + 1000);
    assert_eq!(builtin_diff(&broken).len(), 1);
    sim.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The clean acceptance run.
// ---------------------------------------------------------------------------------------------

/// How long a step's (or the end's) state may take to show in Metabase after the IdP's answer
/// (a write that outlives the inline deadline on a busy machine is delivered just after).
const STEP_LIMIT: Duration = Duration::from_secs(10);

const ADMIN: &str = MB_ROLES.admin;
const ANALYST: &str = MB_ROLES.designer;
const VIEWER: &str = MB_ROLES.default;
const A: &str = "BI Admins";
const D: &str = "BI Designers";
const NONE: &[&str] = &[];

/// A user's state at a step: login, role, active, mirrored groups.
type Want = (&'static str, &'static str, bool, &'static [&'static str]);

/// What Metabase must show after each step (and its extra writes) but the last, which is the
/// end state: users (those left out are not checked), when given the mirrored groups, and
/// when given every user's `login_attributes`; and the names of `names`.
struct AtStep {
    users: &'static [Want],
    mirrored: Option<&'static [&'static str]>,
    attrs: Option<Attrs>,
    names: &'static [(&'static str, &'static str, &'static str)],
}

fn at_step(seq: Seq, step: Step) -> AtStep {
    const TEAM: (&str, &str) = (UNMAPPED_KEY, UNMAPPED_VALUE);
    let none = AtStep {
        users: &[],
        mirrored: None,
        attrs: None,
        names: &[],
    };
    match (seq, step) {
        (Seq::Okta, Step::UsersAssigned) => AtStep {
            // pre, found by the lookup and written by the division's PUT, is given the default.
            users: &[
                ("ada@acme.test", VIEWER, true, NONE),
                ("bob@acme.test", VIEWER, true, NONE),
                ("cy@acme.test", VIEWER, true, NONE),
                ("dee@acme.test", VIEWER, true, NONE),
                ("pre@acme.test", VIEWER, true, NONE),
            ],
            mirrored: Some(&[]),
            attrs: Some(attrs(&[
                ("ada@acme.test", &[(ATTRIBUTE, "EMEA")]),
                ("bob@acme.test", &[(ATTRIBUTE, "AMER")]),
                ("pre@acme.test", &[(ATTRIBUTE, "AMER"), TEAM]),
            ])),
            names: &[
                ("ada@acme.test", "Ada", "Lovelace"),
                ("bob@acme.test", "Bob", "Builder"),
                ("cy@acme.test", "Cy", "Young"),
                ("dee@acme.test", "Dee", "Dee"),
                ("pre@acme.test", "Pre", "Existing"),
            ],
        },
        (Seq::Okta, Step::GroupsCreated) => AtStep {
            users: &[
                ("ada@acme.test", VIEWER, true, NONE),
                ("bob@acme.test", ANALYST, true, &[D]),
            ],
            mirrored: Some(&[A, D]),
            ..none
        },
        (Seq::Okta, Step::MembersChanged) => AtStep {
            users: &[
                ("ada@acme.test", ADMIN, true, &[A, OKTA_GROUP_RENAMED]),
                ("bob@acme.test", ANALYST, true, &[D]),
                ("cy@acme.test", VIEWER, true, NONE),
                ("dee@acme.test", VIEWER, true, NONE),
                ("pre@acme.test", ANALYST, true, &[D]),
            ],
            mirrored: Some(&[A, D, OKTA_GROUP_RENAMED]),
            ..none
        },
        (Seq::Okta, Step::ProfileChanged) => AtStep {
            users: &[
                ("ada@acme.test", ADMIN, true, &[A]),
                ("bob@acme.test", ANALYST, true, &[D]),
                ("pre@acme.test", ANALYST, true, &[D]),
            ],
            mirrored: Some(&[A, D]),
            attrs: Some(attrs(&[
                ("ada@acme.test", &[(ATTRIBUTE, "APAC")]),
                ("pre@acme.test", &[TEAM]),
            ])),
            names: &[("bob@acme.test", "Robert", "Builder")],
        },
        // Deactivated: is_active false, the groups and the role group kept.
        (Seq::Okta, Step::Deactivated) => AtStep {
            users: &[
                ("cy@acme.test", VIEWER, true, NONE),
                ("dee@acme.test", VIEWER, false, NONE),
            ],
            ..none
        },
        (Seq::Entra, Step::UsersAssigned | Step::GroupsCreated) => AtStep {
            users: &[
                ("eve@contoso.test", VIEWER, true, NONE),
                ("fay@contoso.test", VIEWER, true, NONE),
                ("gus@contoso.test", VIEWER, true, NONE),
            ],
            mirrored: Some(if step == Step::UsersAssigned {
                &[]
            } else {
                &[A, D]
            }),
            attrs: Some(attrs(&[
                ("eve@contoso.test", &[(ATTRIBUTE, "EMEA")]),
                ("fay@contoso.test", &[(ATTRIBUTE, "AMER")]),
                ("gus@contoso.test", &[(ATTRIBUTE, "APAC")]),
            ])),
            names: &[
                ("eve@contoso.test", "E", "eve"),
                ("fay@contoso.test", "E", "fay"),
                ("gus@contoso.test", "E", "gus"),
            ],
        },
        (Seq::Entra, Step::MembersChanged) => AtStep {
            users: &[
                ("eve@contoso.test", ADMIN, true, &[A, D]),
                ("fay@contoso.test", ANALYST, true, &[D]),
                ("gus@contoso.test", VIEWER, true, &[ENTRA_GROUP_RENAMED]),
            ],
            mirrored: Some(&[A, D, ENTRA_GROUP_RENAMED]),
            ..none
        },
        (Seq::Entra, Step::ProfileChanged) => AtStep {
            users: &[("fay@contoso.test", ANALYST, true, &[D])],
            attrs: Some(attrs(&[
                ("fay@contoso.test", &[(ATTRIBUTE, "EMEA")]),
                ("gus@contoso.test", &[(ATTRIBUTE, "APAC")]),
            ])),
            names: &[("fay@contoso.test", "E", "Fairfax")],
            ..none
        },
        // Disabled, then given a new division and given name: Metabase still shows the old
        // ones (a PUT on an inactive user is refused; the bridge holds the change).
        (Seq::Entra, Step::Deactivated) => AtStep {
            users: &[("fay@contoso.test", ANALYST, false, &[D])],
            attrs: Some(attrs(&[
                ("fay@contoso.test", &[(ATTRIBUTE, "EMEA")]),
                ("gus@contoso.test", &[(ATTRIBUTE, "APAC")]),
            ])),
            names: &[("fay@contoso.test", "E", "Fairfax")],
            ..none
        },
        // Restored: Administrators put back (reactivation strips it), the held changes sent.
        (Seq::Entra, Step::Reactivated) => AtStep {
            users: &[("fay@contoso.test", ADMIN, true, &[A, D])],
            attrs: Some(attrs(&[
                ("fay@contoso.test", &[(ATTRIBUTE, "APJ")]),
                ("gus@contoso.test", &[(ATTRIBUTE, "APAC")]),
            ])),
            names: &[("fay@contoso.test", "Faye", "Fairfax")],
            ..none
        },
        _ => none,
    }
}

/// The sequence's last step, after which the whole end state is checked.
fn last_step(seq: Seq) -> Step {
    match seq {
        Seq::Okta => Step::GroupReplaced,
        Seq::Entra => Step::Deleted,
    }
}

/// How Metabase differs from what `step` must show.
fn step_diff(v: &Variant, step: Step, state: &MbState) -> Vec<String> {
    if step == last_step(v.seq) {
        return v.diff(state);
    }
    let want = at_step(v.seq, step);
    let accounts = accounts(state);
    let mut out = builtin_diff(state);
    for (login, role, active, groups) in want.users {
        let have = accounts.get(*login).map(|a| {
            let groups: Vec<&str> = a.groups.iter().map(String::as_str).collect();
            (a.role.as_str(), a.active, groups)
        });
        let mut groups = groups.to_vec();
        groups.sort();
        let w = Some((*role, *active, groups));
        if have != w {
            out.push(format!("{login}: want {w:?}, got {have:?}"));
        }
    }
    if let Some(m) = want.mirrored {
        out.extend(groups_diff(state, m));
    }
    if let Some(a) = &want.attrs {
        out.extend(attrs_diff(state, a, &BTreeSet::new()));
    }
    out.extend(profile_diff(state, want.names));
    out
}

/// The run's extra IdP steps, then Metabase read after every step.
struct StepChecks<'a> {
    extra: Extra<'a>,
    api: &'a MetabaseApi,
    v: Variant,
    label: String,
}

impl Hooks for StepChecks<'_> {
    async fn after(&mut self, step: Step) {
        self.extra.after(step).await;
        let what = format!("{}: after {step:?}, Metabase differs", self.label);
        converge(STEP_LIMIT, Duration::from_millis(200), &what, || async {
            step_diff(&self.v, step, &self.api.state().await)
        })
        .await;
    }
}

/// The Okta and the Entra sequence, each with an API key and with a password (four variants,
/// concurrently, each with its own simulator and bridge in this process): every request
/// answered below 500 and within 15 s, Metabase right after every step, and the end state —
/// read through Metabase's API — with the bridge listing exactly Metabase's users but the one
/// the IdP deleted. `METABASE_ONLY=entra/password` runs only the variants whose label
/// contains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_end_with_the_right_metabase_state() {
    run_variants(
        "clean",
        "METABASE_ONLY",
        Variant::four(),
        |v, label| async move {
            let sim = scim_bridge::sim::start(
                Vendor::Metabase,
                "127.0.0.1:0".parse().unwrap(),
                SimOptions {
                    seed: Some(5),
                    ..SimOptions::default()
                },
            )
            .await
            .expect("simulator starts");
            let base = sim.base_url();
            let api = MetabaseApi::connect(&base).await;
            // Made in Metabase before the bridge: the role groups, and (Okta) pre@acme.test,
            // which the IdP's lookup must find.
            v.prepare(&api).await;
            let dir = tempfile::tempdir().unwrap();
            let (server, idp) = serve_checked(&v, &base, dir.path(), &label).await;
            let mut checks = StepChecks {
                extra: Extra::new(&idp, v.seq),
                api: &api,
                v,
                label: label.clone(),
            };
            v.seq.run(&idp, &mut checks).await;
            settle(&idp, &v, &api, STEP_LIMIT).await;
            eprintln!("{label}: Metabase routes {}", routes(&base).await);
            server.stop().await;
            sim.stop().await;
        },
    )
    .await;
}

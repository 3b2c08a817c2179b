//! The dormant-account sweep as people and programs read it: a plan (and what applying it did)
//! as an aligned plain-text table for `scim-bridge sweep dormant`, and as JSON for the admin API
//! (`/admin/api/…`), which the CLI reads back into the same types. The plan itself is made by
//! the engine ([`Engine::dormant_plan`](crate::engine::Engine::dormant_plan)).
//!
//! User names and vendor answers are data from outside: control characters are escaped, so a
//! hostile userName cannot break the table's lines or send escape sequences to a terminal.

use crate::engine::sweep::{SweepDelivery, SweepOutcome, SweepPlan};
use serde_json::Value;

/// The plan as JSON (the admin API's body).
pub fn plan_json(plan: &SweepPlan) -> Value {
    to_json(plan)
}

/// What applying a plan did, as JSON.
pub fn outcome_json(outcome: &SweepOutcome) -> Value {
    to_json(outcome)
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    // These types serialise to plain objects (string keys only): this cannot fail, and a
    // message is kinder than a panic if a future field ever made it.
    serde_json::to_value(v)
        .unwrap_or_else(|e| serde_json::json!({"error": format!("cannot render: {e}")}))
}

/// The plan as an aligned table, with a heading and the counts.
pub fn plan_table(plan: &SweepPlan) -> String {
    let mut out = format!(
        "Dormant accounts of tenant {} ({}): no sign-in for more than {} days, as of {}{}\n",
        clean(&plan.tenant),
        clean(&plan.vendor),
        plan.days,
        clean(&plan.at),
        if plan.include_unmanaged {
            ", including users the IdP does not manage"
        } else {
            ""
        }
    );
    if plan.items.is_empty() {
        out.push_str("No dormant accounts.\n");
    } else {
        let header = [
            "ACTION",
            "USER",
            "SCIM ID",
            "VENDOR ID",
            "LAST LOGIN",
            "DAYS IDLE",
            "ROLE",
            "MANAGED",
            "WHY",
        ];
        let rows: Vec<Vec<String>> = plan
            .items
            .iter()
            .map(|i| {
                let why = match &i.delivery {
                    Some(d) => format!("{} ({})", i.reason, d),
                    None => i.reason.clone(),
                };
                vec![
                    i.action.as_str().to_string(),
                    clean(&i.user_name),
                    clean(&i.id),
                    i.vendor_id
                        .as_deref()
                        .map(clean)
                        .unwrap_or_else(|| "-".into()),
                    i.last_login
                        .as_deref()
                        .map(clean)
                        .unwrap_or_else(|| "never".into()),
                    i.days_idle.to_string(),
                    i.role.as_deref().map(clean).unwrap_or_else(|| "-".into()),
                    i.managed.as_str().to_string(),
                    clean(&why),
                ]
            })
            .collect();
        out.push_str(&table(&header, &rows));
    }
    let c = &plan.counts;
    out.push_str(&format!(
        "{} users: {} inactive, {} signed in within {} days, {} dormant ({} to deactivate; kept: \
         {} admin, {} not managed by the IdP, {} with changes pending or refused){}\n",
        c.users,
        c.inactive,
        c.recent,
        plan.days,
        c.dormant,
        c.deactivate,
        c.kept_admin,
        c.kept_unmanaged,
        c.kept_pending,
        if c.unknown > 0 {
            format!("; {} whose last sign-in cannot be read", c.unknown)
        } else {
            String::new()
        }
    ));
    out
}

/// What applying a plan did, as an aligned table and a closing count.
pub fn outcome_table(outcome: &SweepOutcome) -> String {
    let mut out = String::new();
    if !outcome.deactivated.is_empty() {
        let rows: Vec<Vec<String>> = outcome
            .deactivated
            .iter()
            .map(|u| {
                let (state, detail) = match &u.delivery {
                    SweepDelivery::Delivered => ("delivered", String::new()),
                    SweepDelivery::Queued { reason } => ("queued", clean(reason)),
                    SweepDelivery::Refused { reason } => ("refused", clean(reason)),
                };
                vec![
                    clean(&u.user_name),
                    clean(&u.id),
                    clean(&u.cause),
                    state.to_string(),
                    detail,
                ]
            })
            .collect();
        out.push_str(&table(
            &["DEACTIVATED", "SCIM ID", "CAUSE", "DELIVERY", "DETAIL"],
            &rows,
        ));
    }
    if !outcome.skipped.is_empty() {
        let rows: Vec<Vec<String>> = outcome
            .skipped
            .iter()
            .map(|s| vec![clean(&s.user_name), clean(&s.id), clean(&s.reason)])
            .collect();
        out.push_str(&table(&["SKIPPED", "SCIM ID", "WHY"], &rows));
    }
    let (delivered, queued, refused) = outcome.delivery_counts();
    out.push_str(&format!(
        "{} deactivated by {} ({} delivered, {} queued, {} refused by the vendor); {} skipped \
         after a fresh check\n",
        outcome.deactivated.len(),
        outcome.actor.as_str(),
        delivered,
        queued,
        refused,
        outcome.skipped.len()
    ));
    out
}

/// Columns padded to their widest cell (in characters), two spaces apart; the last column is
/// not padded, so lines carry no trailing blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// A cell with control characters escaped (`\n`, `\u{1b}`): one line, no terminal escapes.
fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::Actor;
    use crate::engine::sweep::{
        KeepReason, Managed, SkippedUser, SweepAction, SweepCounts, SweepItem, SweptUser,
    };

    fn item(user: &str, action: SweepAction, keep: Option<KeepReason>, reason: &str) -> SweepItem {
        SweepItem {
            id: format!("id-{}", user.len()),
            user_name: user.into(),
            vendor_id: Some("v-1".into()),
            last_login: None,
            days_idle: 120,
            role: Some("Viewer".into()),
            managed: Managed::Idp,
            action,
            keep,
            reason: reason.into(),
            delivery: None,
        }
    }

    fn plan(items: Vec<SweepItem>) -> SweepPlan {
        SweepPlan {
            tenant: "acme".into(),
            vendor: "Tableau".into(),
            days: 90,
            include_unmanaged: false,
            at: "2026-12-02T10:00:00Z".into(),
            counts: SweepCounts {
                users: 5,
                inactive: 1,
                recent: 2,
                dormant: 2,
                deactivate: 1,
                kept_admin: 1,
                ..SweepCounts::default()
            },
            items,
        }
    }

    #[test]
    fn the_plan_table_is_aligned_and_counts_every_user() {
        let mut long = item(
            "a-much-longer-name@acme.test",
            SweepAction::Keep,
            Some(KeepReason::Admin),
            "never signed in; account made 120 days ago, but an admin",
        );
        long.last_login = Some("2026-01-01T00:00:00Z".into());
        long.delivery = Some("pending: patch".into());
        let text = plan_table(&plan(vec![
            item(
                "ada@acme.test",
                SweepAction::Deactivate,
                None,
                "never signed in; account made 120 days ago",
            ),
            long,
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("tenant acme (Tableau)") && lines[0].contains("90 days"));
        assert!(lines[1].starts_with("ACTION"));
        // Every column starts at the same offset on every row.
        let user_col = lines[1].find("USER").unwrap();
        let idle_col = lines[1].find("DAYS IDLE").unwrap();
        assert_eq!(lines[2].find("ada@acme.test"), Some(user_col));
        assert_eq!(lines[3].find("a-much-longer-name"), Some(user_col));
        assert_eq!(&lines[2][idle_col..idle_col + 3], "120");
        assert_eq!(&lines[3][idle_col..idle_col + 3], "120");
        assert!(lines[2].starts_with("deactivate") && lines[3].starts_with("keep"));
        assert!(lines[2].contains("never"), "{}", lines[2]);
        assert!(lines[3].contains("(pending: patch)"));
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "no trailing blanks"
        );
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("5 users: 1 inactive, 2 signed in within 90 days, 2 dormant (1 to deactivate; kept: 1 admin"),
            "{last}"
        );
    }

    #[test]
    fn an_empty_plan_says_so() {
        let text = plan_table(&plan(Vec::new()));
        assert!(text.contains("No dormant accounts."), "{text}");
    }

    #[test]
    fn hostile_user_names_cannot_break_lines_or_reach_the_terminal() {
        let text = plan_table(&plan(vec![item(
            "evil\n\u{1b}[2Jname",
            SweepAction::Deactivate,
            None,
            "x",
        )]));
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(!text.contains('\u{1b}'));
        assert!(text.contains("evil\\n\\u{1b}[2Jname"));
    }

    #[test]
    fn the_json_names_actions_and_reasons_as_the_admin_api_shows_them() {
        let v = plan_json(&plan(vec![item(
            "ada@acme.test",
            SweepAction::Keep,
            Some(KeepReason::NotAtVendor),
            "r",
        )]));
        assert_eq!(v["items"][0]["action"], "keep");
        assert_eq!(v["items"][0]["keep"], "not_at_vendor");
        assert_eq!(v["counts"]["deactivate"], 1);
        let back: SweepPlan = serde_json::from_value(v).unwrap();
        assert_eq!(back.items.len(), 1);
    }

    #[test]
    fn the_outcome_table_lists_deactivations_and_skips() {
        let o = SweepOutcome {
            tenant: "acme".into(),
            actor: Actor::Operator,
            at: "2026-12-02T10:00:00Z".into(),
            deactivated: vec![
                SweptUser {
                    id: "u1".into(),
                    user_name: "ada@acme.test".into(),
                    cause: "dormant 97 days".into(),
                    delivery: SweepDelivery::Delivered,
                },
                SweptUser {
                    id: "u2".into(),
                    user_name: "bob@acme.test".into(),
                    cause: "dormant 120 days".into(),
                    delivery: SweepDelivery::Queued {
                        reason: "vendor down".into(),
                    },
                },
            ],
            skipped: vec![SkippedUser {
                id: "u3".into(),
                user_name: "cy@acme.test".into(),
                reason: "signed in within 90 days (since the plan was made)".into(),
            }],
        };
        let text = outcome_table(&o);
        assert!(text.contains("ada@acme.test") && text.contains("dormant 97 days"));
        assert!(text.contains("queued") && text.contains("vendor down"));
        assert!(text.contains("SKIPPED") && text.contains("cy@acme.test"));
        assert!(text.ends_with(
            "2 deactivated by operator (1 delivered, 1 queued, 0 refused by the vendor); 1 skipped after a fresh check\n"
        ));
        assert_eq!(
            outcome_json(&o)["deactivated"][1]["delivery"]["state"],
            "queued"
        );
    }
}

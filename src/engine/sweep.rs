//! The dormant-account sweep (issue 13): users who have not signed in to the vendor for a number
//! of days, found from the applied state (the vendor's last sign-in, as the last observe read
//! it) and deactivated through the engine.
//!
//! A sweep never writes to the vendor itself. Applying it changes the desired state (`active:
//! false` on the directory document, committed with its outbox mark in one batch, as an IdP
//! PATCH is), so the engine delivers, retries and audits it like any other change, with actor
//! `sweep` (or `operator` from the console) and a cause such as `dormant 97 days`. The IdP then
//! reads `active: false` too.
//!
//! Who is never swept, whatever the plan says:
//! - a user the IdP does not manage (adopted from the vendor, never written by the IdP), unless
//!   the sweep is told to include them: those accounts belong to whoever made them by hand;
//! - a user with an administrative role, by the rules or at the vendor (see [`is_admin_role`]):
//!   locking out the people who run the tool is worse than a licence kept;
//! - a user with changes pending or refused at the vendor: its vendor state is in flux, and the
//!   IdP's own pending write (a reactivation, say) must not be overtaken by the sweep;
//! - a user not at the vendor yet, or whose last sign-in cannot be read.
//!
//! Each user is checked again when the plan is applied: one who signed in since, or became an
//! admin, is skipped.

use super::adapter::{AdapterError, NO_ROLE};
use super::role_table::RoleTable;
use super::state::{put, Actor, Records};
use super::{schedule, Engine, FAN_OUT};
use crate::config::SweepConfig;
use crate::scim::schema::ResourceKind;
use crate::store::directory::str_at;
use crate::store::{Batch, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The engine record (a flag, in the tenant's directory tree) holding the last sweep's summary,
/// so the dashboard shows it after a restart too.
pub const LAST_SWEEP_RECORD: &str = "sweep/last";

/// The days of idleness a sweep may be given, wherever it is given (`[tenants.sweep] days`,
/// `sweep dormant --days`, the admin API and the console): at least a day, and at most ten
/// years, past which "dormant" means nothing and a typo (`--days 90000`) would plan nothing.
pub const DORMANT_DAYS: std::ops::RangeInclusive<u32> = 1..=3650;

/// The one wording of a `days` outside [`DORMANT_DAYS`] (`days must be 1..3650`).
pub fn dormant_days_problem(what: &str) -> String {
    format!(
        "{what} must be {}..{}",
        DORMANT_DAYS.start(),
        DORMANT_DAYS.end()
    )
}

/// The longest the first scheduled sweep of a tenant waits after start, at most: a random part
/// of it, so that a bridge with a thousand tenants does not sweep them all at once.
const MAX_JITTER: Duration = Duration::from_secs(15 * 60);

/// Why a sweep cannot be planned or applied.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("`days` must be at least 1 (a sweep over 0 days would call every user dormant)")]
    NoDays,
    #[error(
        "tenant {tenant}: the {vendor} directory has not been read yet, so last sign-ins are \
         unknown; try again after the first sync"
    )]
    NotSynced {
        tenant: String,
        vendor: &'static str,
    },
    #[error("tenant {tenant}: {reason}")]
    Roles { tenant: String, reason: String },
    #[error("the plan is for tenant {plan}, not {tenant}")]
    WrongTenant { plan: String, tenant: String },
    #[error("the plan's time {0:?} is not an RFC 3339 date-time")]
    BadPlanTime(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tenant {tenant}: cannot store the deactivation: {detail}")]
    Write { tenant: String, detail: String },
}

pub use super::state::Managed;

/// What the sweep does with a listed user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepAction {
    Deactivate,
    Keep,
}

impl SweepAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepAction::Deactivate => "deactivate",
            SweepAction::Keep => "keep",
        }
    }
}

/// Why a dormant user is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// An administrative role, by the rules or at the vendor.
    Admin,
    /// Not managed by the IdP, and the sweep does not include such users.
    Unmanaged,
    /// No vendor user is linked yet.
    NotAtVendor,
    /// A change the vendor refused for good is kept in the outbox.
    Failed,
    /// A change is waiting for delivery.
    Pending,
    /// The last sign-in (or the account's creation time) cannot be read: idleness unknown.
    Unknown,
}

/// One listed user: a dormant one, to deactivate or kept, or one whose idleness is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepItem {
    /// SCIM id.
    pub id: String,
    pub user_name: String,
    pub vendor_id: Option<String>,
    /// The vendor's last sign-in (RFC 3339); `None`: never signed in.
    pub last_login: Option<String>,
    /// Whole days since the last sign-in, or since the account was made when never signed in.
    pub days_idle: u64,
    /// The role's name at the vendor (else the one the rules give).
    pub role: Option<String>,
    pub managed: Managed,
    pub action: SweepAction,
    /// Set when kept.
    pub keep: Option<KeepReason>,
    /// Why it is (or is not) swept, in words.
    pub reason: String,
    /// Work in the outbox for this user: `pending: <cause>` or `failed: <vendor's reason>`.
    pub delivery: Option<String>,
}

/// The plan's counts. `dormant` = deactivate + every `kept_*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepCounts {
    /// Users in the directory.
    pub users: u64,
    /// Already inactive: not considered.
    pub inactive: u64,
    /// Active, signed in (or made) within the threshold.
    pub recent: u64,
    /// Active and idle past the threshold.
    pub dormant: u64,
    /// Of the dormant: to be deactivated.
    pub deactivate: u64,
    pub kept_admin: u64,
    pub kept_unmanaged: u64,
    /// Kept for work in the outbox, or for not being at the vendor yet.
    pub kept_pending: u64,
    /// Active users whose idleness cannot be told (listed, kept).
    pub unknown: u64,
}

/// A dormant-account plan: what a sweep would do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPlan {
    pub tenant: String,
    pub vendor: String,
    /// The threshold: no sign-in for more than this many days.
    pub days: u32,
    pub include_unmanaged: bool,
    /// When the plan was made (RFC 3339); idle days count to here.
    pub at: String,
    pub counts: SweepCounts,
    /// Listed users, the longest idle first.
    pub items: Vec<SweepItem>,
}

/// How one deactivation went at the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SweepDelivery {
    /// The vendor confirmed it.
    Delivered,
    /// Committed; the outbox delivers it (vendor slow or down, or a dry-run tenant).
    Queued { reason: String },
    /// The vendor refused it for good: the user is active again in the directory, and the
    /// refusal is in the audit log.
    Refused { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweptUser {
    pub id: String,
    pub user_name: String,
    /// The audit log's cause (`dormant 97 days`).
    pub cause: String,
    pub delivery: SweepDelivery,
}

/// A user the plan would deactivate that the re-check at apply time kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedUser {
    pub id: String,
    pub user_name: String,
    pub reason: String,
}

/// What applying a plan did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepOutcome {
    pub tenant: String,
    pub actor: Actor,
    pub at: String,
    pub deactivated: Vec<SweptUser>,
    pub skipped: Vec<SkippedUser>,
}

impl SweepOutcome {
    /// (delivered, queued, refused) among the deactivated.
    pub fn delivery_counts(&self) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for u in &self.deactivated {
            match u.delivery {
                SweepDelivery::Delivered => c.0 += 1,
                SweepDelivery::Queued { .. } => c.1 += 1,
                SweepDelivery::Refused { .. } => c.2 += 1,
            }
        }
        c
    }
}

/// The last sweep of a tenant, as the dashboard shows it (kept in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSummary {
    pub at: String,
    pub days: u32,
    pub include_unmanaged: bool,
    pub counts: SweepCounts,
    /// Set when the plan was applied.
    pub applied: Option<AppliedSweep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedSweep {
    pub actor: Actor,
    pub deactivated: u64,
    pub delivered: u64,
    pub queued: u64,
    pub refused: u64,
    pub skipped: u64,
}

/// How long a user has been idle, or why that cannot be told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Idleness {
    /// Idle since this time (the last sign-in, or the account's creation when never signed in).
    Since(DateTime<Utc>),
    Unknown(String),
}

/// Idle since the last sign-in, else since the account was made.
fn idleness(last_login: Option<&str>, created: Option<&str>, now: DateTime<Utc>) -> Idleness {
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
    match (last_login, created) {
        (Some(l), _) => match parse(l) {
            // Before 2000 or in the future: a misread value (seconds read as milliseconds, a
            // zero date), not a sign-in.
            Ok(t) if t.timestamp() < 946_684_800 || t > now + chrono::Duration::days(1) => {
                Idleness::Unknown(format!(
                    "the vendor's last sign-in {:?} is not plausible",
                    clip(l)
                ))
            }
            Ok(t) => Idleness::Since(t),
            Err(_) => Idleness::Unknown(format!(
                "the vendor's last sign-in {:?} is not a date",
                clip(l)
            )),
        },
        (None, Some(c)) => match parse(c) {
            Ok(t) => Idleness::Since(t),
            Err(_) => Idleness::Unknown(format!(
                "never signed in, and the account's creation time {:?} is not a date",
                clip(c)
            )),
        },
        (None, None) => {
            Idleness::Unknown("never signed in, and the account's creation time is unknown".into())
        }
    }
}

/// A value from the vendor or the store, shortened for a message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Whether a role id is administrative, as the vendor says ([`RoleInfo::admin`], set by each
/// adapter from the vendor's own facts: Sisense's admin roles, Tableau's administrator site
/// roles, ThoughtSpot's administration privileges, Metabase's Administrators group), whatever
/// the role is called. The protected role (the bridge may be signed in as its holder) counts as
/// one too.
///
/// Fallback, for a role id the vendor's catalog does not hold (the vendor cannot say): a role
/// whose id or name says "admin". It errs towards keeping: a dormant admin costs a licence, a
/// swept one can lock the operators out.
///
/// [`RoleInfo::admin`]: super::adapter::RoleInfo::admin
pub fn is_admin_role(table: &RoleTable, id: &str) -> bool {
    if id == NO_ROLE {
        return false;
    }
    if table.is_protected(id) {
        return true;
    }
    table.is_admin(id).unwrap_or_else(|| {
        let says_admin = |s: &str| s.to_lowercase().contains("admin");
        says_admin(id) || says_admin(&table.name(id))
    })
}

/// One user as the sweep sees it.
enum Assessment {
    Inactive,
    Recent,
    Listed(SweepItem),
}

impl Engine {
    fn sweep_roles(&self) -> Result<Arc<RoleTable>, SweepError> {
        self.role_table().map_err(|e| SweepError::Roles {
            tenant: self.tenant().to_string(),
            reason: match e {
                AdapterError::Transient { reason, .. } => reason,
                other => other.to_string(),
            },
        })
    }

    /// The dormant-account plan of this tenant at `now`: every active user whose last vendor
    /// sign-in is more than `days` days old (or who never signed in and whose account is that
    /// old), to deactivate or kept with the reason; and users whose idleness cannot be told.
    /// Reads only the store: no vendor call. Refused before the first full read of the vendor
    /// directory, when no last sign-in is known.
    pub fn dormant_plan(
        &self,
        days: u32,
        include_unmanaged: bool,
        now: DateTime<Utc>,
    ) -> Result<SweepPlan, SweepError> {
        if days == 0 {
            return Err(SweepError::NoDays);
        }
        if !*self.synced.borrow() {
            return Err(SweepError::NotSynced {
                tenant: self.tenant().to_string(),
                vendor: self.caps.vendor,
            });
        }
        let table = self.sweep_roles()?;
        let mut counts = SweepCounts::default();
        let mut items = Vec::new();
        for sid in self.dir.ids(ResourceKind::User) {
            let sid = sid?;
            // Deleted between the listing and the read: not a user any more.
            let Some(doc) = self.dir.load(ResourceKind::User, &sid)? else {
                continue;
            };
            counts.users += 1;
            match self.assess(&table, &sid, &doc, days, include_unmanaged, now)? {
                Assessment::Inactive => counts.inactive += 1,
                Assessment::Recent => counts.recent += 1,
                Assessment::Listed(item) => {
                    match item.keep {
                        None => counts.deactivate += 1,
                        Some(KeepReason::Admin) => counts.kept_admin += 1,
                        Some(KeepReason::Unmanaged) => counts.kept_unmanaged += 1,
                        Some(
                            KeepReason::Pending | KeepReason::Failed | KeepReason::NotAtVendor,
                        ) => counts.kept_pending += 1,
                        Some(KeepReason::Unknown) => counts.unknown += 1,
                    }
                    if item.keep != Some(KeepReason::Unknown) {
                        counts.dormant += 1;
                    }
                    items.push(item);
                }
            }
        }
        items.sort_by(|a, b| {
            b.days_idle
                .cmp(&a.days_idle)
                .then_with(|| a.user_name.cmp(&b.user_name))
        });
        Ok(SweepPlan {
            tenant: self.tenant().to_string(),
            vendor: self.caps.vendor.to_string(),
            days,
            include_unmanaged,
            at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            counts,
            items,
        })
    }

    /// How the sweep sees one user at `now`.
    fn assess(
        &self,
        table: &RoleTable,
        sid: &str,
        doc: &Value,
        days: u32,
        include_unmanaged: bool,
        now: DateTime<Utc>,
    ) -> Result<Assessment, StoreError> {
        if doc.get("active").and_then(Value::as_bool) == Some(false) {
            return Ok(Assessment::Inactive);
        }
        let rec = Records(&self.dir);
        let applied = rec.applied_user(sid)?;
        let last_login = applied.as_ref().and_then(|a| a.last_login.clone());
        let created = doc
            .get("meta")
            .and_then(|m| m.get("created"))
            .and_then(Value::as_str);
        let idle = if self.caps.reports_last_login {
            idleness(last_login.as_deref(), created, now)
        } else {
            Idleness::Unknown(format!(
                "{} does not report sign-ins, so idleness cannot be told",
                self.caps.vendor
            ))
        };
        let (days_idle, unknown) = match idle {
            Idleness::Since(since) => {
                let idle = now.signed_duration_since(since);
                if idle <= chrono::Duration::days(i64::from(days)) {
                    return Ok(Assessment::Recent);
                }
                (idle.num_days().max(0) as u64, None)
            }
            Idleness::Unknown(why) => (0, Some(why)),
        };
        let managed = Managed::of(&self.dir, sid)?;
        let current_role = applied.as_ref().and_then(|a| a.role.clone());
        // The rules' role matters only for users they apply to (the IdP's); an adopted user's
        // role stays the vendor's.
        let rules_role = match managed {
            Managed::Idp | Managed::Adopted => {
                let mut names = Vec::new();
                for g in self.dir.groups_of(sid)? {
                    if let Some(gdoc) = self.dir.load(ResourceKind::Group, &g)? {
                        if let Some(n) = str_at(&gdoc, "displayName") {
                            names.push(n.to_string());
                        }
                    }
                }
                table.desired(&self.settings.rules, doc, &names, false)
            }
            Managed::VendorOnly => None,
        };
        let admin = [current_role.as_deref(), rules_role.as_deref()]
            .into_iter()
            .flatten()
            .find(|r| is_admin_role(table, r))
            .map(|r| (table.name(r), rules_role.as_deref() == Some(r)));
        let role = current_role
            .as_deref()
            .or(rules_role.as_deref())
            .map(|r| table.name(r));
        let vendor_id = self.dir.vendor_id(ResourceKind::User, sid)?;
        let outbox = rec.outbox(ResourceKind::User, sid)?;
        let delivery = outbox.as_ref().map(|e| {
            if e.failed {
                format!(
                    "failed: {}",
                    e.last_error.as_deref().unwrap_or("refused by the vendor")
                )
            } else {
                format!("pending: {}", e.cause)
            }
        });
        let idle_words = match &last_login {
            Some(_) => format!("no sign-in for {days_idle} days"),
            None => format!("never signed in; account made {days_idle} days ago"),
        };
        let (keep, reason) = if let Some((name, by_rules)) = admin {
            let source = if by_rules {
                "the role rules keep"
            } else {
                "the vendor shows"
            };
            (
                Some(KeepReason::Admin),
                format!("{idle_words}, but an admin: {source} {name}"),
            )
        } else if managed == Managed::VendorOnly && !include_unmanaged {
            (
                Some(KeepReason::Unmanaged),
                format!("{idle_words}, but not managed by the IdP"),
            )
        } else if let Some(why) = unknown {
            (Some(KeepReason::Unknown), why)
        } else if vendor_id.is_none() {
            (
                Some(KeepReason::NotAtVendor),
                format!("{idle_words}, but not at {} yet", self.caps.vendor),
            )
        } else if let Some(e) = outbox.as_ref() {
            if e.failed {
                (
                    Some(KeepReason::Failed),
                    format!(
                        "{idle_words}, but a change {} refused is kept; retry or fix it first",
                        self.caps.vendor
                    ),
                )
            } else {
                (
                    Some(KeepReason::Pending),
                    format!("{idle_words}, but a change is waiting for delivery"),
                )
            }
        } else {
            (None, idle_words)
        };
        Ok(Assessment::Listed(SweepItem {
            id: sid.to_string(),
            user_name: str_at(doc, "userName").unwrap_or_default().to_string(),
            vendor_id,
            last_login,
            days_idle,
            role,
            managed,
            action: if keep.is_none() {
                SweepAction::Deactivate
            } else {
                SweepAction::Keep
            },
            keep,
            reason,
            delivery,
        }))
    }

    /// Applies a plan made by [`Engine::dormant_plan`] on this bridge: each user it would
    /// deactivate is checked again (signed in since, inactive, now an admin or unmanaged, work
    /// pending: skipped) and deactivated through the engine: `active: false` committed with its
    /// outbox mark (cause `dormant N days`, `actor`), then delivered inline for at most the
    /// inline deadline, the outbox doing the rest. Users the plan keeps are never touched.
    ///
    /// Idle days are counted to the later of the plan's time and now. A plan is the bridge's
    /// own answer: an API that applies sweeps plans them itself rather than trusting a plan a
    /// client sends back.
    pub async fn apply_sweep(
        self: &Arc<Self>,
        plan: &SweepPlan,
        actor: Actor,
    ) -> Result<SweepOutcome, SweepError> {
        if plan.tenant != self.tenant() {
            return Err(SweepError::WrongTenant {
                plan: plan.tenant.clone(),
                tenant: self.tenant().to_string(),
            });
        }
        if plan.days == 0 {
            return Err(SweepError::NoDays);
        }
        let planned = DateTime::parse_from_rfc3339(&plan.at)
            .map_err(|_| SweepError::BadPlanTime(clip(&plan.at)))?
            .with_timezone(&Utc);
        let now = planned.max(Utc::now());
        let table = self.sweep_roles()?;
        let mut outcome = SweepOutcome {
            tenant: self.tenant().to_string(),
            actor,
            at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            deactivated: Vec::new(),
            skipped: Vec::new(),
        };
        let mut written = Vec::new();
        for item in plan
            .items
            .iter()
            .filter(|i| i.action == SweepAction::Deactivate)
        {
            match self
                .deactivate_dormant(&table, item, plan, now, actor)
                .await?
            {
                Ok(w) => written.push(w),
                Err(reason) => outcome.skipped.push(SkippedUser {
                    id: item.id.clone(),
                    user_name: item.user_name.clone(),
                    reason,
                }),
            }
        }
        // Durable before anything is reported or sent: a crash from here on is repaired from
        // the outbox.
        self.dir.flush().await?;
        outcome.deactivated = self.deliver_sweep(written, actor).await;
        let (delivered, queued, refused) = outcome.delivery_counts();
        tracing::info!(
            tenant = %self.tenant(),
            actor = actor.as_str(),
            deactivated = outcome.deactivated.len(),
            delivered,
            queued,
            refused,
            skipped = outcome.skipped.len(),
            "dormant-account sweep applied"
        );
        // The deactivations stand whether or not their summary can be kept.
        if let Err(e) = self.record_sweep(plan, Some(&outcome)) {
            tracing::warn!(tenant = %self.tenant(), error = %e, "cannot keep the sweep's summary");
        }
        Ok(outcome)
    }

    /// Checks one planned user again and commits its deactivation. `Ok(Err(reason))`: skipped.
    async fn deactivate_dormant(
        &self,
        table: &RoleTable,
        item: &SweepItem,
        plan: &SweepPlan,
        now: DateTime<Utc>,
        actor: Actor,
    ) -> Result<Result<Written, String>, SweepError> {
        let _doc = self.user_docs.lock(&item.id).await;
        let Some(old) = self.dir.load(ResourceKind::User, &item.id)? else {
            return Ok(Err("no longer in the directory".into()));
        };
        let days_idle = match self.assess(
            table,
            &item.id,
            &old,
            plan.days,
            plan.include_unmanaged,
            now,
        )? {
            Assessment::Inactive => return Ok(Err("already inactive".into())),
            Assessment::Recent => {
                return Ok(Err(format!(
                    "signed in within {} days (since the plan was made)",
                    plan.days
                )))
            }
            Assessment::Listed(again) if again.keep.is_some() => return Ok(Err(again.reason)),
            Assessment::Listed(again) => again.days_idle,
        };
        let mut doc = old.clone();
        let Some(fields) = doc.as_object_mut() else {
            return Ok(Err("its stored document is not an object".into()));
        };
        fields.insert("active".into(), Value::Bool(false));
        self.dir.stamp(ResourceKind::User, &mut doc, Some(&old));
        let cause = format!("dormant {days_idle} days");
        let mut batch = Batch::default();
        self.dir
            .write_doc(&mut batch, ResourceKind::User, &item.id, &doc, Some(&old));
        // Not marked as the IdP's: a sweep of an adopted user does not make the rules apply to it.
        self.mark(&mut batch, ResourceKind::User, &item.id, &cause, actor)?;
        {
            let _g = self.commit_lock.lock();
            self.dir.commit(batch)?;
        }
        Ok(Ok(Written {
            id: item.id.clone(),
            user_name: str_at(&old, "userName").unwrap_or_default().to_string(),
            cause,
            old,
            ours: doc,
        }))
    }

    /// Delivers committed deactivations in a task of its own (it outlives the caller's wait),
    /// waiting at most the inline deadline; what is not confirmed by then is the outbox's.
    async fn deliver_sweep(
        self: &Arc<Self>,
        written: Vec<Written>,
        actor: Actor,
    ) -> Vec<SweptUser> {
        let queued = |w: Written, reason: &str| SweptUser {
            id: w.id,
            user_name: w.user_name,
            cause: w.cause,
            delivery: SweepDelivery::Queued {
                reason: reason.to_string(),
            },
        };
        if written.is_empty() {
            return Vec::new();
        }
        let hold = if self.settings.dry_run {
            Some("a dry-run tenant: nothing is sent to the vendor".to_string())
        } else {
            self.adapter.unavailable().or_else(|| self.stalled())
        };
        if let Some(reason) = hold {
            self.wake.notify_one();
            return written.into_iter().map(|w| queued(w, &reason)).collect();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let me = self.clone();
        let ids: Vec<(String, Value, Value)> = written
            .iter()
            .map(|w| (w.id.clone(), w.old.clone(), w.ours.clone()))
            .collect();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            futures_util::stream::iter(ids)
                .map(|(sid, old, ours)| {
                    let me = me.clone();
                    let tx = tx.clone();
                    async move {
                        let delivery = me.user_locks.lock(&sid).await;
                        let result = me.reconcile_locked(ResourceKind::User, &sid).await;
                        drop(delivery);
                        if let Err(AdapterError::Refused { .. }) = &result {
                            if let Err(e) = me.undo_sweep(&sid, &old, &ours, actor).await {
                                tracing::error!(tenant = %me.tenant(), id = %sid, error = %e, "cannot put back a user whose deactivation the vendor refused");
                            }
                        }
                        let _ = tx.send((sid, result));
                    }
                })
                .buffer_unordered(FAN_OUT)
                .collect::<Vec<_>>()
                .await;
        });
        let deadline = tokio::time::Instant::now() + self.settings.inline_deadline;
        let mut results = std::collections::HashMap::new();
        while results.len() < written.len() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((sid, r))) => {
                    results.insert(sid, r);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let late = format!(
            "not confirmed within {} ms; the outbox delivers it",
            self.settings.inline_deadline.as_millis()
        );
        let out: Vec<SweptUser> = written
            .into_iter()
            .map(|w| match results.remove(&w.id) {
                Some(Ok(())) => SweptUser {
                    id: w.id,
                    user_name: w.user_name,
                    cause: w.cause,
                    delivery: SweepDelivery::Delivered,
                },
                Some(Err(AdapterError::Refused { reason, .. })) => SweptUser {
                    id: w.id,
                    user_name: w.user_name,
                    cause: w.cause,
                    delivery: SweepDelivery::Refused { reason },
                },
                Some(Err(e)) => queued(w, &e.to_string()),
                None => queued(w, &late),
            })
            .collect();
        if out
            .iter()
            .any(|u| matches!(u.delivery, SweepDelivery::Queued { .. }))
        {
            self.wake.notify_one();
        }
        out
    }

    /// Puts back the document of a user whose deactivation the vendor refused for good, unless
    /// a newer write replaced ours meanwhile (as the write path undoes a refused IdP update).
    async fn undo_sweep(
        &self,
        sid: &str,
        old: &Value,
        ours: &Value,
        actor: Actor,
    ) -> Result<(), StoreError> {
        let _g = self.user_docs.lock(sid).await;
        let Some(current) = self.dir.load(ResourceKind::User, sid)? else {
            return Ok(());
        };
        if current["meta"]["version"] != ours["meta"]["version"] {
            return Ok(());
        }
        let mut batch = Batch::default();
        self.dir
            .write_doc(&mut batch, ResourceKind::User, sid, old, Some(&current));
        self.mark(&mut batch, ResourceKind::User, sid, "rollback", actor)?;
        {
            let _c = self.commit_lock.lock();
            self.dir.commit(batch)?;
        }
        self.dir.flush().await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Keeps a summary of this sweep (and of its application) in the store for the dashboard.
    fn record_sweep(
        &self,
        plan: &SweepPlan,
        outcome: Option<&SweepOutcome>,
    ) -> Result<(), StoreError> {
        let summary = SweepSummary {
            at: outcome.map_or_else(|| plan.at.clone(), |o| o.at.clone()),
            days: plan.days,
            include_unmanaged: plan.include_unmanaged,
            counts: plan.counts.clone(),
            applied: outcome.map(|o| {
                let (delivered, queued, refused) = o.delivery_counts();
                AppliedSweep {
                    actor: o.actor,
                    deactivated: o.deactivated.len() as u64,
                    delivered,
                    queued,
                    refused,
                    skipped: o.skipped.len() as u64,
                }
            }),
        };
        let bytes = serde_json::to_vec(&summary).map_err(|e| StoreError::Corrupt {
            key: LAST_SWEEP_RECORD.into(),
            reason: e.to_string(),
        })?;
        let mut batch = Batch::default();
        put::flag(&mut batch, LAST_SWEEP_RECORD, &bytes);
        let _g = self.commit_lock.lock();
        self.dir.commit(batch)
    }

    /// The last sweep of this tenant (planned or applied, by schedule or by hand), if any.
    pub fn last_sweep(&self) -> Result<Option<SweepSummary>, StoreError> {
        match Records(&self.dir).flag(LAST_SWEEP_RECORD)? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        key: LAST_SWEEP_RECORD.into(),
                        reason: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    /// Starts the tenant's scheduled sweep (`[tenants.sweep]`): the first after a random part
    /// of `every` (at most 15 minutes), then every `every` ± 10 %, so that the sweeps of many
    /// tenants started together do not stay in step ([`super::schedule`]); each only once the
    /// vendor directory has been read in full, and at most `SWEEPS` tenants of the process at
    /// once (a plan reads every user). Report-only unless `apply`. The task ends when the
    /// engine is dropped. `None` outside a Tokio runtime (as [`Engine::spawn_background`]).
    pub fn spawn_sweep(self: &Arc<Self>, cfg: SweepConfig) -> Option<tokio::task::JoinHandle<()>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let engine = Arc::downgrade(self);
        Some(handle.spawn(async move {
            let every = cfg.every.max(Duration::from_secs(1));
            let first = schedule::uniform_upto(every.min(MAX_JITTER), &mut rand::rng());
            tokio::time::sleep(first).await;
            loop {
                let Some(e) = engine.upgrade().filter(|e| !e.is_retired()) else {
                    return;
                };
                let mut synced = e.synced.subscribe();
                drop(e);
                // The sender lives in the engine: dropped with it, which ends this task.
                if synced.wait_for(|s| *s).await.is_err() {
                    return;
                }
                drop(synced);
                {
                    let _permit = schedule::SWEEPS.enter().await;
                    let Some(e) = engine.upgrade().filter(|e| !e.is_retired()) else {
                        return;
                    };
                    e.scheduled_sweep(&cfg).await;
                }
                // (The thread's generator is not held across the await: it is not `Send`.)
                let next = schedule::jittered(every, &mut rand::rng());
                tokio::time::sleep(next).await;
            }
        }))
    }

    /// One scheduled sweep: plan (off the async workers: it reads every user), log, keep the
    /// summary, and apply when configured.
    async fn scheduled_sweep(self: &Arc<Self>, cfg: &SweepConfig) {
        let me = self.clone();
        let (days, include) = (cfg.days, cfg.include_unmanaged);
        let planned =
            tokio::task::spawn_blocking(move || me.dormant_plan(days, include, Utc::now())).await;
        let plan = match planned {
            Ok(Ok(plan)) => plan,
            Ok(Err(e)) => {
                tracing::warn!(tenant = %self.tenant(), error = %e, "dormant-account sweep not planned");
                return;
            }
            Err(e) => {
                tracing::error!(tenant = %self.tenant(), error = %e, "dormant-account sweep planning ended early");
                return;
            }
        };
        let c = &plan.counts;
        tracing::info!(
            tenant = %self.tenant(),
            days = plan.days,
            users = c.users,
            dormant = c.dormant,
            deactivate = c.deactivate,
            kept_admin = c.kept_admin,
            kept_unmanaged = c.kept_unmanaged,
            kept_pending = c.kept_pending,
            unknown = c.unknown,
            apply = cfg.apply,
            "dormant-account sweep planned"
        );
        if cfg.apply && c.deactivate > 0 {
            if let Err(e) = self.apply_sweep(&plan, Actor::Sweep).await {
                tracing::warn!(tenant = %self.tenant(), error = %e, "dormant-account sweep not applied");
            }
            return;
        }
        if let Err(e) = self.record_sweep(&plan, None) {
            tracing::warn!(tenant = %self.tenant(), error = %e, "cannot keep the sweep's summary");
        }
    }
}

/// A deactivation committed by a sweep, to deliver.
struct Written {
    id: String,
    user_name: String,
    cause: String,
    old: Value,
    ours: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::adapter::{RoleCatalog, RoleInfo};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn idleness_counts_from_the_last_sign_in_else_from_the_accounts_creation() {
        assert_eq!(
            idleness(
                Some("2026-01-01T00:00:00Z"),
                Some("2020-01-01T00:00:00Z"),
                Utc::now()
            ),
            Idleness::Since(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            idleness(None, Some("2020-01-01T00:00:00.123Z"), Utc::now()),
            Idleness::Since(at("2020-01-01T00:00:00.123Z"))
        );
        assert!(matches!(
            idleness(Some("yesterday"), Some("2020-01-01T00:00:00Z"), Utc::now()),
            Idleness::Unknown(w) if w.contains("\"yesterday\"")
        ));
        assert!(matches!(
            idleness(None, None, Utc::now()),
            Idleness::Unknown(_)
        ));
        // A hostile value is clipped in the message, never echoed whole.
        let long = "x".repeat(10_000);
        assert!(
            matches!(idleness(Some(&long), None, Utc::now()), Idleness::Unknown(w) if w.len() < 200)
        );
    }

    fn table(protected: Option<&str>) -> RoleTable {
        let role = |id: &str, display: &str, admin: bool| RoleInfo {
            id: id.into(),
            names: vec![display.into()],
            display: display.into(),
            admin,
        };
        RoleTable::build(
            0,
            &Default::default(),
            RoleCatalog {
                roles: vec![
                    role("r1", "Viewer", false),
                    role("r2", "Data Admin", true),
                    role("SiteAdministratorCreator", "SiteAdministratorCreator", true),
                    role("r4", "Sys. Admin", true),
                    role("g7", "Administrators", true),
                    role("r5", "Designer", false),
                    // ThoughtSpot: a custom group carrying ADMINISTRATION.
                    role("g8", "Platform Owners", true),
                    // Named "admin", but the vendor says it administers nothing.
                    role("r9", "Admin Reports Reader", false),
                ],
                protected: protected.map(str::to_string),
                fallback: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn admin_roles_are_told_by_the_vendor_else_by_their_id_or_name() {
        let t = table(Some("r5"));
        assert!(is_admin_role(&t, "g8"), "the vendor's word, not the name");
        assert!(!is_admin_role(&t, "r9"), "the vendor's word, not the name");
        assert!(
            is_admin_role(&t, "x-admin-x"),
            "a role the catalog does not hold falls back on its name"
        );
        assert!(is_admin_role(&t, "r2"));
        assert!(is_admin_role(&t, "SiteAdministratorCreator"));
        assert!(is_admin_role(&t, "r4"));
        assert!(is_admin_role(&t, "g7"));
        assert!(is_admin_role(&t, "r5"), "the protected role is an admin's");
        assert!(!is_admin_role(&t, "r1"));
        assert!(!is_admin_role(&t, NO_ROLE));
        assert!(!is_admin_role(&t, "unknown-id"));
    }

    #[test]
    fn a_plan_round_trips_through_json() {
        let plan = SweepPlan {
            tenant: "t".into(),
            vendor: "Tableau".into(),
            days: 90,
            include_unmanaged: false,
            at: "2026-12-02T10:00:00Z".into(),
            counts: SweepCounts {
                users: 1,
                dormant: 1,
                deactivate: 1,
                ..SweepCounts::default()
            },
            items: vec![SweepItem {
                id: "u1".into(),
                user_name: "ada@x".into(),
                vendor_id: Some("v1".into()),
                last_login: None,
                days_idle: 97,
                role: Some("Viewer".into()),
                managed: Managed::Idp,
                action: SweepAction::Deactivate,
                keep: None,
                reason: "never signed in; account made 97 days ago".into(),
                delivery: None,
            }],
        };
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v["items"][0]["action"], "deactivate");
        assert_eq!(v["items"][0]["managed"], "idp");
        assert_eq!(v["items"][0]["last_login"], Value::Null);
        let back: SweepPlan = serde_json::from_value(v).unwrap();
        assert_eq!(back, plan);
    }
}

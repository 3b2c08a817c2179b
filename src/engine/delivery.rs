//! Background delivery: the outbox drains per tenant, object by object, each when its next try
//! is due, `FAN_OUT` at a time; across restarts and SIGKILL, since the outbox is in the store.
//!
//! Coalescing comes from being level-triggered: an object patched five times while the vendor
//! was down has one outbox entry and one desired state, so it costs one vendor write. Order per
//! object holds because every reconcile of an object runs under that object's lock and reads
//! the desired state as it is then. Pacing against a throttling vendor is the vendor client's
//! (its rate budget lowers on 429); backoff per object is [`super::reconcile`]'s.
//!
//! A dry-run tenant delivers nothing: its outbox is the plan. The operator's actions live here
//! too: retry what the vendor refused, observe now, and one object's delivery status.

use super::state::{now_ms, put, Actor, Records};
use super::{schedule, Engine, FAN_OUT};
use crate::scim::schema::ResourceKind;
use crate::store::audit::{AuditEntry, AuditEvent};
use crate::store::{Batch, StoreError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Due objects taken per round.
const ROUND: usize = 512;
/// The longest the loop sleeps with nothing due. Every path that queues something wakes the
/// loop (`wake.notify_one()`, whose permit is kept when the loop is not waiting, so a wake-up
/// that lands during a round is not lost), and a due time the loop saw is slept to exactly;
/// this bound is only a backstop. It was 1 s: with 1,000 tenants that was 1,000 outbox scans
/// a second on an idle bridge (issue 14: an idle bridge does not spin).
const IDLE: Duration = Duration::from_secs(30);
/// How often the loop looks again while the vendor is unavailable (the client's breaker is
/// open): nothing wakes it when the breaker closes, so it polls, as it did before, but only
/// for a tenant whose vendor is down.
const UNAVAILABLE_POLL: Duration = Duration::from_secs(1);

impl Engine {
    /// Starts the tenant's background work: roles, the first observe and every interval, the
    /// delivery loop, and for a dry run the plan kept current. The tasks end when the engine is
    /// dropped.
    pub fn spawn_background(self: &Arc<Self>) -> Option<Vec<tokio::task::JoinHandle<()>>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let observer = Arc::downgrade(self);
        let deliverer = Arc::downgrade(self);
        let mut tasks = vec![
            handle.spawn(observe_loop(observer)),
            handle.spawn(delivery_loop(deliverer)),
        ];
        if self.settings.dry_run {
            tasks.push(handle.spawn(super::plan_cache::keep_current(Arc::downgrade(self))));
        }
        Some(tasks)
    }

    /// One delivery round: reconciles every due object (up to `ROUND`). Returns how many were
    /// attempted and when the next one is due (unix ms).
    pub async fn deliver_due(self: &Arc<Self>) -> (usize, Option<u64>) {
        if self.settings.dry_run
            || self.is_retired()
            || self.is_stopped()
            || self.roles.read().is_none()
            || self.adapter.unavailable().is_some()
        {
            return (0, None);
        }
        let now = now_ms();
        // The first round of a process takes every pending object: its backoff was the
        // previous process's, which may have been killed in the middle of a create.
        let fresh = self
            .first_round
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for (kind, sid, e) in Records(&self.dir).pending().flatten() {
            if e.failed {
                continue;
            }
            if fresh || e.next_ms <= now {
                if due.len() < ROUND {
                    due.push((kind, sid));
                }
            } else {
                next = Some(next.map_or(e.next_ms, |n| n.min(e.next_ms)));
            }
        }
        // Groups before users: a user's group list names groups that must exist first.
        due.sort_by_key(|(k, _)| *k == ResourceKind::User);
        let attempted = due.len();
        futures_util::stream::iter(due)
            .map(|(kind, sid)| {
                let me = self.clone();
                async move {
                    let locks = match kind {
                        ResourceKind::User => &me.user_locks,
                        ResourceKind::Group => &me.group_locks,
                    };
                    let _g = locks.lock(&sid).await;
                    // Done meanwhile (inline, or by another round): nothing to do.
                    match Records(&me.dir).outbox(kind, &sid) {
                        Ok(Some(e)) if !e.failed && (fresh || e.next_ms <= now_ms()) => {}
                        _ => return,
                    }
                    let _ = me.reconcile_locked(kind, &sid).await;
                }
            })
            .buffer_unordered(FAN_OUT)
            .collect::<Vec<_>>()
            .await;
        (attempted, next)
    }

    /// Makes a `failed` object due now, as it is (observe's retry of a refusal for lack of a
    /// licence seat). `false` when it has no outbox entry.
    pub fn retry_failed(&self, kind: ResourceKind, sid: &str) -> Result<bool, StoreError> {
        let _g = self.commit_lock.lock();
        let Some(mut e) = Records(&self.dir).outbox(kind, sid)? else {
            return Ok(false);
        };
        e.failed = false;
        e.attempts = 0;
        e.next_ms = now_ms();
        let mut b = Batch::default();
        put::outbox(&mut b, kind, sid, &e);
        self.dir.commit(b)?;
        drop(_g);
        self.wake.notify_one();
        Ok(true)
    }

    /// An operator's "retry failed": every `failed` outbox entry (`None`), or the one object
    /// named, made due now and delivered as the operator's change (actor `operator`, so the
    /// audit entries of its delivery name the operator). How many entries were made due; an
    /// object that is not failed is left as it is (0). The request itself is not audited: an
    /// operator's request through the console or the admin API goes through
    /// [`Engine::request_retry`], which is.
    pub fn retry_failed_by_operator(
        &self,
        which: Option<(ResourceKind, String)>,
    ) -> Result<u64, StoreError> {
        self.requeue_failed(which, None)
    }

    /// [`Engine::retry_failed_by_operator`] as an operator's request, recorded in the audit log
    /// as one entry of its own (`retry_requested`, actor `operator`, `cause`: `how` the operator
    /// asked, `detail`: how many deliveries were re-queued, 0 included), committed with the
    /// (last) re-queue so that it precedes the deliveries it causes in the chain.
    pub fn request_retry(
        &self,
        which: Option<(ResourceKind, String)>,
        how: &str,
    ) -> Result<u64, StoreError> {
        self.requeue_failed(which, Some(how))
    }

    /// An operator's "sync now", recorded in the audit log (`sync_requested`, actor
    /// `operator`, `cause`: `how` the operator asked) before the observe starts; the
    /// corrections that observe makes follow as entries of actor `sync`.
    pub fn request_sync(&self, how: &str) -> Result<(), StoreError> {
        let entry = AuditEntry::new(AuditEvent::SyncRequested, Actor::Operator.as_str(), how)
            .tenant(self.tenant());
        self.audit.append(&[entry])?;
        tracing::info!(tenant = %self.tenant(), how, "an operator asked for a sync");
        self.sync_now();
        Ok(())
    }

    fn requeue_failed(
        &self,
        which: Option<(ResourceKind, String)>,
        request: Option<&str>,
    ) -> Result<u64, StoreError> {
        let one = which.clone();
        let failed: Vec<(ResourceKind, String)> = match which {
            Some((kind, sid)) => match Records(&self.dir).outbox(kind, &sid)? {
                Some(e) if e.failed => vec![(kind, sid)],
                _ => Vec::new(),
            },
            None => Records(&self.dir)
                .pending()
                .filter_map(|p| match p {
                    Ok((kind, sid, e)) if e.failed => Some(Ok((kind, sid))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?,
        };
        let mut made_due = 0u64;
        let chunks: Vec<&[(ResourceKind, String)]> = failed.chunks(512).collect();
        let request_entry = |n: u64| -> Result<Option<AuditEntry>, StoreError> {
            let Some(how) = request else {
                return Ok(None);
            };
            let e = AuditEntry::new(AuditEvent::RetryRequested, Actor::Operator.as_str(), how)
                .detail(n.to_string());
            Ok(Some(match &one {
                None => e.tenant(self.tenant()),
                Some((kind, sid)) => {
                    let name = self
                        .dir
                        .load(*kind, sid)?
                        .and_then(|d| {
                            let attr = match kind {
                                ResourceKind::User => "userName",
                                ResourceKind::Group => "displayName",
                            };
                            d.get(attr).and_then(|v| v.as_str()).map(str::to_string)
                        })
                        .unwrap_or_default();
                    let vid = self.dir.vendor_id(*kind, sid)?.unwrap_or_default();
                    match kind {
                        ResourceKind::User => e.user(sid, &name, &vid),
                        ResourceKind::Group => e.group(sid, &name, &vid),
                    }
                }
            }))
        };
        if chunks.is_empty() {
            if let Some(e) = request_entry(0)? {
                self.audit.append(&[e])?;
            }
        }
        // In chunks under the commit lock, re-read there: a write of the IdP may have marked
        // the object again meanwhile (then it is due already, with the IdP as its actor).
        for (i, chunk) in chunks.iter().enumerate() {
            let _g = self.commit_lock.lock();
            let mut b = Batch::default();
            for (kind, sid) in chunk.iter() {
                let Some(mut e) = Records(&self.dir).outbox(*kind, sid)? else {
                    continue;
                };
                if !e.failed {
                    continue;
                }
                e.failed = false;
                e.capacity = false;
                e.attempts = 0;
                e.next_ms = now_ms();
                e.actor = Actor::Operator;
                if !e.cause.starts_with(OPERATOR_RETRY) {
                    e.cause = format!("{OPERATOR_RETRY} of {}", e.cause);
                }
                e.seq = super::state::next_seq();
                put::outbox(&mut b, *kind, sid, &e);
                made_due += 1;
            }
            match request_entry(made_due)?.filter(|_| i + 1 == chunks.len()) {
                Some(e) => self.dir.commit_audited(b, &self.audit, &[e])?,
                None => self.dir.commit(b)?,
            }
        }
        if made_due > 0 || request.is_some() {
            tracing::info!(tenant = %self.tenant(), entries = made_due, "an operator retries refused changes");
            self.wake.notify_one();
        }
        Ok(made_due)
    }

    /// "Sync now": the vendor directory is observed at once instead of at the next interval
    /// (after the observe under way, if one is). Not audited: an operator's request goes
    /// through [`Engine::request_sync`].
    pub fn sync_now(&self) {
        self.sync_wake.notify_one();
    }

    /// Where one object's delivery stands, for the console's per-object column: applied (no
    /// outbox entry), held by a dry run, pending (with its attempts, next try and last error),
    /// or failed (the vendor's reason).
    pub fn delivery_status(
        &self,
        kind: ResourceKind,
        sid: &str,
    ) -> Result<DeliveryStatus, StoreError> {
        Ok(match Records(&self.dir).outbox(kind, sid)? {
            None => DeliveryStatus::Applied,
            Some(e) if e.failed => DeliveryStatus::Failed {
                reason: e
                    .last_error
                    .unwrap_or_else(|| "refused by the vendor".into()),
            },
            Some(_) if self.settings.dry_run => DeliveryStatus::DryRun,
            Some(e) => DeliveryStatus::Pending {
                attempts: e.attempts,
                next: e.next_ms,
                last_error: e.last_error,
            },
        })
    }
}

/// The cause prefix of a change an operator retried (the audit shows it with actor `operator`).
const OPERATOR_RETRY: &str = "retry by an operator";

/// Where one object's delivery to the vendor stands ([`Engine::delivery_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The vendor has what the IdP asked (nothing in the outbox).
    Applied,
    /// Held by a dry-run tenant: not sent until `dry_run` is switched off.
    DryRun,
    /// Waiting for delivery: `attempts` so far, the next try at `next` (unix ms), and the last
    /// transient error.
    Pending {
        attempts: u32,
        next: u64,
        last_error: Option<String>,
    },
    /// Refused by the vendor for good, with its reason: kept until the IdP writes the object
    /// again or an operator retries it.
    Failed { reason: String },
}

/// The console's name for [`DeliveryStatus`].
pub type Status = DeliveryStatus;

async fn delivery_loop(engine: Weak<Engine>) {
    // The wake-up this loop last took: the tenant's engines share it, so a loop that ends
    // (its engine dropped or retired by a reload) hands it on to the new engine's loop.
    let mut woken: Option<Arc<tokio::sync::Notify>> = None;
    loop {
        let Some(e) = engine.upgrade().filter(|e| !e.is_retired()) else {
            if let Some(w) = woken {
                w.notify_one();
            }
            return;
        };
        let (attempted, next) = e.deliver_due().await;
        let wait = if attempted > 0 {
            Duration::ZERO
        } else {
            idle_wait(&e, next, now_ms())
        };
        if wait.is_zero() {
            drop(e);
            tokio::task::yield_now().await;
            continue;
        }
        let wake = e.wake.clone();
        drop(e);
        let woke = tokio::time::timeout(wait, wake.notified()).await.is_ok();
        woken = woke.then_some(wake);
    }
}

/// How long the delivery loop sleeps after a round that attempted nothing: until the next due
/// time it saw (`next`, unix ms), else [`IDLE`]; a short poll while the vendor is unavailable
/// (`deliver_due` attempts nothing then, and the breaker's closing wakes no one). Without
/// roles, or in a dry run, there is nothing to poll for: the role load wakes the loop.
fn idle_wait(e: &Engine, next: Option<u64>, now: u64) -> Duration {
    if !e.settings.dry_run && e.adapter.unavailable().is_some() {
        return UNAVAILABLE_POLL;
    }
    match next {
        Some(at) => Duration::from_millis(at.saturating_sub(now)).min(IDLE),
        None => IDLE,
    }
}

async fn observe_loop(engine: Weak<Engine>) {
    let mut delay = RETRY_FIRST;
    let mut first = true;
    loop {
        let Some(e) = engine.upgrade().filter(|e| !e.is_retired()) else {
            return;
        };
        let wait = e.background_round(&mut delay, &mut first).await;
        // An operator's "sync now" cuts the wait short, the start-up stagger included (the
        // loop holds only the Notify, so a dropped engine still ends it at the next round).
        let sync = e.sync_wake.clone();
        drop(e);
        let _ = tokio::time::timeout(wait, sync.notified()).await;
    }
}

/// The first retry of a failed role load or observe; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Engine {
    /// One round of observation work; returns how long to wait before the next. The roles
    /// load at once (readiness and delivery wait for them); the first observe then waits for
    /// the tenant's slot in the start-up stagger, and every later wait is jittered, so that
    /// 1,000 tenants neither start nor stay in step ([`super::schedule`]).
    async fn background_round(
        self: &Arc<Self>,
        delay: &mut Duration,
        first: &mut bool,
    ) -> Duration {
        if self.fatal.read().is_some() {
            return Duration::from_secs(3600);
        }
        if self.roles.read().is_none() {
            if self.awaits_start_check() {
                // Its answer wakes this loop (`sync_wake`); the wait only bounds a lost one.
                return Duration::from_secs(5);
            }
            let loaded = {
                let _permit = schedule::ROLE_LOADS.enter().await;
                self.load_roles().await
            };
            match loaded {
                Ok(t) => {
                    self.set_roles(t);
                    self.wake.notify_one();
                }
                Err(Ok(problems)) => {
                    let text = problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    tracing::error!(tenant = %self.tenant(), problems = %text, "role rules do not resolve against the vendor");
                    self.stop(format!(
                        "role rules do not resolve against {}: {text}",
                        self.caps.vendor
                    ));
                    return Duration::from_secs(3600);
                }
                Err(Err(e)) => {
                    tracing::warn!(tenant = %self.tenant(), error = %e, "cannot read the vendor's roles yet");
                    return backoff(delay);
                }
            }
        }
        if std::mem::take(first) {
            let slot = schedule::first_observe(
                self.settings.tenant_index,
                self.settings.sync_interval,
                &mut rand::rng(),
            );
            if !slot.is_zero() {
                return slot;
            }
        }
        let observed = {
            let _permit = schedule::OBSERVES.enter().await;
            self.observe_now().await
        };
        match observed {
            Ok(report) => {
                tracing::info!(tenant = %self.tenant(), ?report, "vendor directory observed");
                *delay = RETRY_FIRST;
                schedule::jittered(self.settings.sync_interval, &mut rand::rng())
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant(), error = %e, "observing the vendor failed; retrying");
                backoff(delay)
            }
        }
    }
}

/// The next retry wait: the current one doubled (up to [`RETRY_MAX`]), jittered, so tenants
/// of one vendor that failed together do not retry together.
fn backoff(delay: &mut Duration) -> Duration {
    *delay = (*delay * 2).min(RETRY_MAX);
    schedule::jittered(*delay, &mut rand::rng())
}

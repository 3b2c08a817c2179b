//! Background delivery: the outbox drains per tenant, object by object, each when its next try
//! is due, `FAN_OUT` at a time; across restarts and SIGKILL, since the outbox is in the store.
//!
//! Coalescing comes from being level-triggered: an object patched five times while the vendor
//! was down has one outbox entry and one desired state, so it costs one vendor write. Order per
//! object holds because every reconcile of an object runs under that object's lock and reads
//! the desired state as it is then. Pacing against a throttling vendor is the vendor client's
//! (its rate budget lowers on 429); backoff per object is [`super::reconcile`]'s.

use super::state::{now_ms, Records};
use super::{Engine, FAN_OUT};
use crate::scim::schema::ResourceKind;
use futures_util::StreamExt;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Due objects taken per round.
const ROUND: usize = 512;
/// The longest the loop sleeps without a wake-up (a due time it did not see).
const IDLE: Duration = Duration::from_secs(1);

impl Engine {
    /// Starts the tenant's background work: roles, the first observe and every interval, and
    /// the delivery loop. The tasks end when the engine is dropped.
    pub fn spawn_background(self: &Arc<Self>) -> Option<Vec<tokio::task::JoinHandle<()>>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let observer = Arc::downgrade(self);
        let deliverer = Arc::downgrade(self);
        Some(vec![
            handle.spawn(observe_loop(observer)),
            handle.spawn(delivery_loop(deliverer)),
        ])
    }

    /// One delivery round: reconciles every due object (up to `ROUND`). Returns how many were
    /// attempted and when the next one is due (unix ms).
    pub async fn deliver_due(self: &Arc<Self>) -> (usize, Option<u64>) {
        if self.roles.read().is_none() || self.adapter.unavailable().is_some() {
            return (0, None);
        }
        let now = now_ms();
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for (kind, sid, e) in Records(&self.dir).pending().flatten() {
            if e.failed {
                continue;
            }
            if e.next_ms <= now {
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
                        Ok(Some(e)) if !e.failed && e.next_ms <= now_ms() => {}
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

    /// Retries a `failed` object now (an operator's request).
    pub fn retry_failed(
        &self,
        kind: ResourceKind,
        sid: &str,
    ) -> Result<bool, crate::store::StoreError> {
        let Some(mut e) = Records(&self.dir).outbox(kind, sid)? else {
            return Ok(false);
        };
        e.failed = false;
        e.attempts = 0;
        e.next_ms = now_ms();
        let mut b = crate::store::Batch::default();
        super::state::put::outbox(&mut b, kind, sid, &e);
        {
            let _g = self.commit_lock.lock();
            self.dir.commit(b)?;
        }
        self.wake.notify_one();
        Ok(true)
    }
}

async fn delivery_loop(engine: Weak<Engine>) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        let (attempted, next) = e.deliver_due().await;
        let wait = if attempted > 0 {
            Duration::ZERO
        } else {
            match next {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE),
                None => IDLE,
            }
        };
        if wait.is_zero() {
            drop(e);
            tokio::task::yield_now().await;
            continue;
        }
        let wake = e.wake.clone();
        drop(e);
        let _ = tokio::time::timeout(wait, wake.notified()).await;
    }
}

async fn observe_loop(engine: Weak<Engine>) {
    let mut delay = Duration::from_millis(500);
    loop {
        let Some(e) = engine.upgrade() else { return };
        let wait = e.background_round(&mut delay).await;
        drop(e);
        tokio::time::sleep(wait).await;
    }
}

impl Engine {
    /// One round of observation work; returns how long to wait before the next.
    async fn background_round(self: &Arc<Self>, delay: &mut Duration) -> Duration {
        if self.fatal.read().is_some() {
            return Duration::from_secs(3600);
        }
        if self.roles.read().is_none() {
            match self.load_roles().await {
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
                    *self.fatal.write() = Some(text);
                    return Duration::from_secs(3600);
                }
                Err(Err(e)) => {
                    tracing::warn!(tenant = %self.tenant(), error = %e, "cannot read the vendor's roles yet");
                    *delay = (*delay * 2).min(Duration::from_secs(30));
                    return *delay;
                }
            }
        }
        match self.observe_now().await {
            Ok(report) => {
                tracing::info!(tenant = %self.tenant(), ?report, "vendor directory observed");
                *delay = Duration::from_millis(500);
                self.settings.sync_interval
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant(), error = %e, "observing the vendor failed; retrying");
                *delay = (*delay * 2).min(Duration::from_secs(30));
                *delay
            }
        }
    }
}

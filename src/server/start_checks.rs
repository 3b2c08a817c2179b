//! The tenants' start-up checks: for a vendor tenant, a sign-in, its role rules resolved
//! against the vendor's roles, and what else its connector verifies as `config check --online`
//! does (Sisense's SCIM token, ThoughtSpot's variables, Metabase's admin).
//!
//! They run concurrently, [`AT_ONCE`] at a time, as futures on one private runtime in a thread
//! of its own: the server is built synchronously, possibly from inside another runtime, where
//! blocking on a future is not allowed.
//!
//! **The first [`AT_ONCE`] vendor tenants decide the start**: their checks start at once and
//! the start waits for all of them, so a config of up to 32 vendor tenants is checked in full
//! and a problem refuses the start, naming the key, however slow the vendor. **Past them, a
//! problem stops that tenant alone** ([`Engine::stop`]: 503 with the problem to the IdP, named
//! on the admin `/readyz`), whenever it is found, and the start waits for those checks only
//! until [`START_WAIT`] has passed. A check still running then is treated like a vendor that
//! cannot be reached at start, which the engines already handle: the tenant starts, its engine
//! reads the roles itself when the vendor answers, and the check goes on in the background.
//! Why: with 1,000 customers in one process, one customer's rotated password must not keep the
//! other 999 down; and one vendor's rate limit makes the checks slow, not wrong. The ThoughtSpot simulator allows 100 requests a second per client, as ThoughtSpot
//! does, so 250 tenants on one cluster (Orgs) took 7.5 s to check, and 1,000 tenants kept the
//! listener from binding for 9–10 s (`scripts/bench-tenants.sh`).
//!
//! A config reload waits for every check ([`all`]): it is all or nothing, and the running
//! config serves meanwhile.

use super::Preflight;
use crate::config::{Problem, TenantConfig, VendorConfig};
use crate::connector::{metabase, sisense, tableau, thoughtspot};
use crate::engine::Engine;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Weak;
use std::time::{Duration, Instant};

/// How many checks run at once: a bound keeps 1,000 sign-ins from hitting the vendors in one
/// instant. A slow check holds up only its own slot.
const AT_ONCE: usize = 32;

/// Whether the check at `pos` (in the list checked) is of the first wave, whose problems
/// refuse the start.
pub(crate) fn decides_the_start(pos: usize) -> bool {
    pos < AT_ONCE
}

/// Stops `engine`'s tenant for the `problems` its start-up check found.
pub(crate) fn stop(tenant: &str, engine: &Engine, problems: &[Problem]) {
    let text = describe(problems);
    tracing::error!(%tenant, problems = %text, "the tenant's start-up check failed; the tenant is stopped until its config is fixed and reloaded");
    engine.stop(format!("its start-up check failed: {text}"));
}

/// How long the start waits for the checks past the first wave before it binds.
pub(crate) const START_WAIT: Duration = Duration::from_secs(3);
/// How long the engine of a tenant whose check is still running after the start leaves its
/// roles to that check at most. Every way the checks end releases the engines at once (an
/// answer, a panic, the checks' thread gone); this only bounds a check that never ends. It is
/// long because a late check may still be queued behind others, [`AT_ONCE`] at a time (1,000
/// tenants whose vendor answers each check in 10 s take over 5 minutes).
pub(crate) const LATE_WAIT: Duration = Duration::from_secs(15 * 60);

/// Checks under way: each answer arrives with the tenant's position in the list checked.
pub(crate) struct Running {
    answers: mpsc::Receiver<(usize, Preflight)>,
    decided: Vec<Option<Preflight>>,
    open: usize,
}

/// Starts the checks of `tenants` (each with its index in the config).
pub(crate) fn start(tenants: &[(usize, &TenantConfig)]) -> Running {
    let owned: Vec<(usize, TenantConfig)> =
        tenants.iter().map(|(i, t)| (*i, (*t).clone())).collect();
    let (tx, answers) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("start-up checks".into())
        .spawn(move || run(owned, tx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the start-up checks could not run; tenants start unchecked");
    }
    Running {
        answers,
        decided: (0..tenants.len()).map(|_| None).collect(),
        open: tenants.len(),
    }
}

fn run(tenants: Vec<(usize, TenantConfig)>, answers: mpsc::Sender<(usize, Preflight)>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the start-up checks could not run; tenants start unchecked");
            return;
        }
    };
    rt.block_on(
        futures_util::stream::iter(tenants.iter().enumerate().map(|(pos, (index, t))| {
            async move {
                let answer = std::panic::AssertUnwindSafe(check(t, *index))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        // As for a vendor that cannot be reached: the engine reads the roles.
                        tracing::error!(tenant = %t.id, "the start-up check panicked; the tenant starts unchecked");
                        Ok(None)
                    });
                (pos, answer)
            }
        }))
        .buffer_unordered(AT_ONCE)
        .for_each(|answer| {
            // The receiver is gone only once nobody waits for late answers.
            let _ = answers.send(answer);
            std::future::ready(())
        }),
    );
}

async fn check(t: &TenantConfig, index: usize) -> Preflight {
    match &t.vendor {
        VendorConfig::Local => Ok(None),
        VendorConfig::Sisense { .. } => sisense::preflight(t, index).await,
        VendorConfig::Tableau { .. } => tableau::preflight(t, index).await,
        VendorConfig::Thoughtspot { .. } => thoughtspot::preflight(t, index).await,
        VendorConfig::Metabase { .. } => metabase::preflight(t, index).await,
    }
}

impl Running {
    /// Collects answers until the first `first` checks and, by `until` (`None`: no bound),
    /// every check has answered. A check whose thread is gone without answering counts as
    /// unchecked (`Ok(None)`).
    fn collect(&mut self, first: usize, until: Option<Instant>) {
        while self.open > 0 {
            let first_wave = &self.decided[..first.min(self.decided.len())];
            let until = if first_wave.iter().all(Option::is_some) {
                until
            } else {
                None
            };
            let got = match until {
                None => self.answers.recv().map_err(|_| true),
                Some(t) => self
                    .answers
                    .recv_timeout(t.saturating_duration_since(Instant::now()))
                    .map_err(|e| e == mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok((pos, answer)) => {
                    self.decided[pos] = Some(answer);
                    self.open -= 1;
                }
                Err(gone) => {
                    if gone {
                        for d in self.decided.iter_mut().filter(|d| d.is_none()) {
                            *d = Some(Ok(None));
                        }
                        self.open = 0;
                    }
                    return;
                }
            }
        }
    }

    /// Every answer, in the order of the tenants checked.
    pub(crate) fn all(mut self) -> Vec<Preflight> {
        self.collect(0, None);
        self.decided
            .into_iter()
            .map(|d| d.unwrap_or(Ok(None)))
            .collect()
    }

    /// The answers of the first wave of checks and those given within `wait`, in the order of
    /// the tenants checked (`None`: still running), and the checks still running.
    pub(crate) fn within(mut self, wait: Duration) -> (Vec<Option<Preflight>>, Late) {
        self.collect(AT_ONCE, Some(Instant::now() + wait));
        let decided = std::mem::take(&mut self.decided);
        (decided, Late { running: self })
    }
}

/// The checks that had not answered when the start stopped waiting.
pub(crate) struct Late {
    running: Running,
}

impl Late {
    /// Hands each late answer to its tenant's engine (`engines`: by position in the list
    /// checked), in a thread that ends with the last answer: roles go to the engine, problems
    /// stop that tenant. An engine a config reload has replaced since is left alone: the reload
    /// checked its successor.
    pub(crate) fn apply_to(self, engines: HashMap<usize, (String, Weak<Engine>)>) {
        if self.running.open == 0 {
            return;
        }
        tracing::info!(
            tenants = self.running.open,
            "start-up checks still running; those tenants start and finish their checks in the background"
        );
        let answers = self.running.answers;
        // Their engines wait for these answers rather than sign in beside them (marked before
        // they started, `Engine::await_start_check`); each is told when its answer is in, and
        // all of them when the checks end, whatever way.
        let waiting: Vec<Weak<Engine>> = engines.values().map(|(_, e)| e.clone()).collect();
        let release = |waiting: &[Weak<Engine>]| {
            for e in waiting.iter().filter_map(Weak::upgrade) {
                e.start_check_done();
            }
        };
        let waiting_here = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name("late start-up checks".into())
            .spawn(move || {
                for (pos, answer) in answers {
                    let Some((tenant, engine)) = engines.get(&pos) else {
                        continue;
                    };
                    let Some(engine) = engine.upgrade().filter(|e| !e.is_retired()) else {
                        continue;
                    };
                    match answer {
                        Ok(Some(roles)) => {
                            engine.set_roles(roles);
                            // Writes queued while the roles were unknown go now.
                            engine.wake.notify_one();
                        }
                        Ok(None) => {}
                        Err(problems) => stop(tenant, &engine, &problems),
                    }
                    engine.start_check_done();
                }
                release(&waiting);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "late start-up checks are not applied");
            release(&waiting_here);
        }
    }
}

/// Problems as one line, each with its key path.
pub(crate) fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

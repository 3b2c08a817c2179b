//! The process's one "reload" signal (issue 14): SIGHUP, or a request from inside the process,
//! fanned out to whatever re-reads its inputs. Today the TLS certificate store listens
//! (`server::tls`); the config reload of issue 14 subscribes the same way, so that one SIGHUP
//! (systemd's `ExecReload=kill -HUP $MAINPID`, `kubectl exec … kill -HUP 1`) reloads everything.
//!
//! A broadcast channel rather than a callback list: each subscriber runs in its own task at its
//! own pace, and a slow config reload cannot delay a certificate swap.

use tokio::sync::broadcast;

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP from an operator or a service manager.
    Signal,
    /// Asked from inside the process (an admin action, a test).
    Request,
}

/// The sending side, cheap to clone; [`Reload::subscribe`] for each listener.
#[derive(Debug, Clone)]
pub struct Reload {
    tx: broadcast::Sender<Trigger>,
}

impl Default for Reload {
    fn default() -> Self {
        Reload::new()
    }
}

impl Reload {
    pub fn new() -> Reload {
        // A handful of slots: triggers arriving faster than a subscriber reloads collapse into
        // one (a lagging receiver is treated as triggered, see [`next`]).
        let (tx, _) = broadcast::channel(8);
        Reload { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Trigger> {
        self.tx.subscribe()
    }

    /// Asks every subscriber to reload now.
    pub fn trigger(&self, why: Trigger) {
        // No subscriber is not an error: nothing is reloadable in this configuration.
        let _ = self.tx.send(why);
    }

    /// Forwards every SIGHUP to the subscribers until the returned task is aborted. Installing
    /// it also replaces SIGHUP's default action (terminate) for the rest of the process: a
    /// bridge asked to reload must never die of it.
    #[cfg(unix)]
    pub fn forward_sighup(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let tx = self.tx.clone();
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading");
                let _ = tx.send(Trigger::Signal);
            }
        }))
    }
}

/// The next trigger on `rx`; `None` once every sender is gone. A receiver that fell behind
/// missed only repeats of the same request, so it reloads once.
pub async fn next(rx: &mut broadcast::Receiver<Trigger>) -> Option<Trigger> {
    match rx.recv().await {
        Ok(t) => Some(t),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(Trigger::Signal),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

//! The sled store. One sled database per data dir; one tree per tenant and purpose, so tenants'
//! data never share keys. sled 0.34 is the stable line; it stays behind this module.

pub mod audit;
pub mod directory;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<StoreError> for crate::scim::ScimError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        crate::scim::ScimError::unavailable("the bridge's store is temporarily unavailable", 5)
    }
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    flusher: std::sync::Arc<GroupCommit>,
}

type FlushWaiter = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Group commit: one thread runs `fsync`s for the whole store; every caller that asked before a
/// flush began is answered by that flush. sled's own `flush_async` runs on its shared I/O pool,
/// where concurrent callers can occupy every thread waiting for a log write queued behind them
/// (found by the concurrency tests: a burst of 12+ writes hung the process).
struct GroupCommit {
    requests: parking_lot::Mutex<Option<std::sync::mpsc::Sender<FlushWaiter>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GroupCommit {
    /// The thread holds a handle on the database: stop it and wait, so that dropping the last
    /// `Store` releases the data dir's lock at once (a restart in the same process reopens it).
    fn drop(&mut self) {
        self.requests.lock().take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl GroupCommit {
    fn start(db: sled::Db) -> GroupCommit {
        let (tx, rx) = std::sync::mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .expect("spawn the store flush thread");
        GroupCommit {
            requests: parking_lot::Mutex::new(Some(tx)),
            thread: Some(thread),
        }
    }
}

impl Store {
    /// Opens (or creates) the store under `dir`. The page cache is bounded so a large directory
    /// does not grow resident memory past what the operator budgets.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        let db = sled::Config::new()
            .path(dir.join("store"))
            .cache_capacity(64 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let flusher = std::sync::Arc::new(GroupCommit::start(db.clone()));
        Ok(Store { db, flusher })
    }

    /// The tree of one tenant for one purpose (`local`, `idmap`, `audit`…).
    pub fn tree(&self, tenant: &str, purpose: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("t/{tenant}/{purpose}"))?)
    }

    /// Durably persists everything written so far. Concurrent callers share one flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match self.flusher.requests.lock().as_ref() {
            Some(requests) => requests.send(tx),
            None => Err(std::sync::mpsc::SendError(tx)),
        };
        let unavailable =
            |reason: String| StoreError::Sled(sled::Error::Io(std::io::Error::other(reason)));
        if sent.is_err() {
            return Err(unavailable("the flush thread has stopped".into()));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(unavailable(reason)),
            Err(_) => Err(unavailable("the flush thread has stopped".into())),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.db.was_recovered() || self.db.size_on_disk().is_ok()
    }
}

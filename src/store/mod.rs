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

/// One atomic write: every insert and remove of one tree, applied together or not at all. The
/// store's own type, so that sled stays inside `src/store`.
#[derive(Debug, Default, Clone)]
pub struct Batch(sled::Batch);

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0.insert(key.as_ref(), value.as_ref());
    }
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.remove(key.as_ref());
    }
}

/// One tenant's tree for one purpose: ordered keys and values.
#[derive(Clone)]
pub struct Tree(sled::Tree);

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key.as_ref())?.map(|v| v.to_vec()))
    }
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.0.contains_key(key.as_ref())?)
    }
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.0.insert(key.as_ref(), value.as_ref())?;
        Ok(())
    }
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.0.remove(key.as_ref())?;
        Ok(())
    }
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        Ok(self.0.apply_batch(batch.0)?)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Keys and values under `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        self.0.scan_prefix(prefix.as_ref()).map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }
    /// Values of the whole tree, in key order.
    pub fn values(&self) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> {
        self.0
            .iter()
            .values()
            .map(|v| v.map(|v| v.to_vec()).map_err(StoreError::from))
    }
    pub(crate) fn raw(&self) -> &sled::Tree {
        &self.0
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
    pub fn tree(&self, tenant: &str, purpose: &str) -> Result<Tree, StoreError> {
        Ok(Tree(self.db.open_tree(format!("t/{tenant}/{purpose}"))?))
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

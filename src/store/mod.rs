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
        Ok(Store { db })
    }

    /// The tree of one tenant for one purpose (`local`, `idmap`, `audit`…).
    pub fn tree(&self, tenant: &str, purpose: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("t/{tenant}/{purpose}"))?)
    }

    /// Durably persists everything written so far. Concurrent callers share one flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn is_healthy(&self) -> bool {
        self.db.was_recovered() || self.db.size_on_disk().is_ok()
    }
}

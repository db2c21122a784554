//! The embedded store: the log and the vault in one sled database.

use std::path::PathBuf;
use std::sync::Arc;

use crate::log::{AnyLog, LogError, SledLog, SledLogConfig, SyncMode};
use crate::vault::{MasterKeySource, Vault, VaultError};

/// Where the store lives and how it finds its master key.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The store's directory (the log's and its index's sled databases).
    pub dir: PathBuf,
    pub master_key: MasterKeySource,
    pub cache_capacity_bytes: u64,
}

/// The log and the vault sharing one durable sled database: a vault key written
/// before an append becomes durable with that append's group commit.
pub struct Store {
    /// On sled (what [`Store::open`] opens); the type holds either backend.
    pub log: Arc<AnyLog>,
    pub vault: Arc<Vault>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl StoreConfig {
    /// Where the vault's epoch key files live: beside the databases, in the store's
    /// directory (they are wrapped under the master key, which lives elsewhere in
    /// production).
    pub fn epochs_dir(&self) -> PathBuf {
        self.dir.join("vault-epochs")
    }

    /// Whether the store was created (a command other than `serve` must not
    /// create one).
    pub fn exists(&self) -> bool {
        SledLog::exists_in(&self.dir)
    }
}

impl Store {
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let log_config = SledLogConfig {
            dir: config.dir.clone(),
            cache_capacity_bytes: config.cache_capacity_bytes,
            sync: SyncMode::Fdatasync,
        };
        let ddb = Arc::new(SledLog::open_db(&log_config)?);
        // The vault first: a wrong master key stops start-up before anything else.
        let vault = Arc::new(Vault::open(
            ddb.clone(),
            &config.master_key,
            &config.epochs_dir(),
        )?);
        let log = Arc::new(SledLog::with_db(ddb, log_config.sync)?.into());
        Ok(Self { log, vault })
    }
}

//! The read models' database: one sled database (apart from the log's), one
//! tree per projection, named after it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use nexus_core::vault::Vault;

use crate::accounts::{self, AccountsProjection, AccountsView};
use crate::catalog::{self, CatalogProjection, CatalogView};
use crate::error::StorageError;
use crate::keys::REBUILDING_KEY;
use crate::orders::{self, OrdersProjection, OrdersView};
use crate::projection::Projection;
use crate::retention::{self, RetentionProjection, RetentionView};
use crate::staging::{is_rebuilding, read_checkpoint, read_format};
use crate::wallets::{self, WalletsProjection, WalletsView};

/// The names of the standard projections, in the order they are built.
pub const PROJECTION_NAMES: [&str; 5] = [
    accounts::NAME,
    wallets::NAME,
    orders::NAME,
    catalog::NAME,
    retention::NAME,
];

/// A tree's contents: every (key, value), in key order.
pub type TreeDump = Vec<(Vec<u8>, Vec<u8>)>;

/// Where the read models live.
#[derive(Clone, Debug)]
pub struct ReadModelsConfig {
    /// The database's directory, e.g. `<data dir>/projections`.
    pub dir: PathBuf,
    /// sled's page cache.
    pub cache_capacity_bytes: u64,
}

/// The read models' directory inside a Nexus data directory.
pub const DIR_IN_DATA_DIR: &str = "projections";

impl ReadModelsConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache_capacity_bytes: 128 << 20,
        }
    }

    /// The read models of a Nexus data directory: `<data dir>/projections`.
    pub fn in_data_dir(data_dir: &std::path::Path) -> Self {
        Self::new(data_dir.join(DIR_IN_DATA_DIR))
    }
}

/// The read models' database and the vault that opens their personal fields.
pub struct ReadModels {
    db: sled::Db,
    vault: Arc<Vault>,
    trees: Mutex<HashMap<String, sled::Tree>>,
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels").finish_non_exhaustive()
    }
}

impl ReadModels {
    /// Opens (or creates) the database. sled locks its directory: one process
    /// at a time.
    pub fn open(config: &ReadModelsConfig, vault: Arc<Vault>) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(&config.dir)
            .cache_capacity(config.cache_capacity_bytes)
            .open()?;
        Ok(Self {
            db,
            vault,
            trees: Mutex::new(HashMap::new()),
        })
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// The tree of the projection `name`.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        let mut trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tree) = trees.get(name) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(name)?;
        trees.insert(name.to_owned(), tree.clone());
        Ok(tree)
    }

    /// The last position the projection `name` applied (0: none).
    pub fn checkpoint(&self, name: &str) -> Result<u64, StorageError> {
        read_checkpoint(&self.tree(name)?)
    }

    /// Drops the projection's tree: it starts again from position 0. The
    /// projection must not be running.
    pub fn drop_projection(&self, name: &str) -> Result<(), StorageError> {
        let mut trees = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        trees.remove(name);
        self.db.drop_tree(name)?;
        Ok(())
    }

    /// Whether a rebuild of the projection began and did not end: its tree is
    /// incomplete (its checkpoint reads 0) and must be dropped before use.
    pub fn is_rebuilding(&self, name: &str) -> Result<bool, StorageError> {
        is_rebuilding(&self.tree(name)?)
    }

    /// The format version the projection's rows were written with (`None`:
    /// not recorded, see [`crate::keys::FORMAT_KEY`]).
    pub fn format_version(&self, name: &str) -> Result<Option<u32>, StorageError> {
        read_format(&self.tree(name)?)
    }

    /// Whether the projection's tree cannot be used by `projection` as it is:
    /// a rebuild of it did not end, or it holds rows written with another
    /// format version than the projection's (or with none recorded). Such a
    /// tree must be dropped and built again from position 0.
    pub fn needs_rebuild(&self, projection: &dyn Projection) -> Result<bool, StorageError> {
        let tree = self.tree(projection.name())?;
        if is_rebuilding(&tree)? {
            return Ok(true);
        }
        Ok(!tree.is_empty() && read_format(&tree)? != Some(projection.format_version()))
    }

    /// Drops the projection's tree and marks the new, empty one as being
    /// rebuilt. The mark is durable after the next [`ReadModels::flush`]; write
    /// nothing else before it.
    pub(crate) fn begin_rebuild(&self, name: &str) -> Result<sled::Tree, StorageError> {
        self.drop_projection(name)?;
        let tree = self.tree(name)?;
        tree.insert(REBUILDING_KEY, &[])?;
        Ok(tree)
    }

    /// Removes the rebuilding mark: the tree is complete up to its checkpoint.
    /// Call after a [`ReadModels::flush`] that made all its contents durable
    /// (sled recovers a prefix of its writes, so the contents come back
    /// whenever the removal does).
    pub(crate) fn end_rebuild(&self, name: &str) -> Result<(), StorageError> {
        self.tree(name)?.remove(REBUILDING_KEY)?;
        Ok(())
    }

    /// A new instance of the standard projection `name`.
    pub fn projection(&self, name: &str) -> Result<Box<dyn Projection>, StorageError> {
        Ok(match name {
            accounts::NAME => Box::new(AccountsProjection),
            wallets::NAME => Box::new(WalletsProjection),
            orders::NAME => Box::new(OrdersProjection),
            catalog::NAME => Box::new(CatalogProjection::new(self.vault.clone())),
            retention::NAME => Box::new(RetentionProjection),
            other => return Err(StorageError::UnknownProjection(other.to_owned())),
        })
    }

    /// New instances of every standard projection.
    pub fn projections(&self) -> Vec<Box<dyn Projection>> {
        PROJECTION_NAMES
            .iter()
            .filter_map(|name| self.projection(name).ok())
            .collect()
    }

    pub fn accounts(&self) -> Result<AccountsView, StorageError> {
        Ok(AccountsView::new(
            self.tree(accounts::NAME)?,
            self.vault.clone(),
        ))
    }

    pub fn wallets(&self) -> Result<WalletsView, StorageError> {
        Ok(WalletsView::new(self.tree(wallets::NAME)?))
    }

    pub fn orders(&self) -> Result<OrdersView, StorageError> {
        Ok(OrdersView::new(
            self.tree(orders::NAME)?,
            self.vault.clone(),
        ))
    }

    pub fn catalog(&self) -> Result<CatalogView, StorageError> {
        Ok(CatalogView::new(self.tree(catalog::NAME)?))
    }

    pub fn retention(&self) -> Result<RetentionView, StorageError> {
        Ok(RetentionView::new(self.tree(retention::NAME)?))
    }

    /// Every (key, value) of the projection's tree, checkpoint included, in
    /// key order: to compare a rebuild with the incremental build.
    pub fn dump(&self, name: &str) -> Result<TreeDump, StorageError> {
        let mut out = Vec::new();
        for item in self.tree(name)?.iter() {
            let (key, value) = item?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Writes everything to disk (sled also does so on its own every 500 ms).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }
}

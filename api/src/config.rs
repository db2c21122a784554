//! Settings from the environment (documented in the README).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use nexus_core::vault::MasterKeySource;
use nexus_core::StoreConfig;

pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub master_key: MasterKeySource,
    pub cache_capacity_bytes: u64,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let data_dir = PathBuf::from(var("NEXUS_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let listen = var("NEXUS_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
            .context("NEXUS_LISTEN must be an address like 127.0.0.1:8080")?;
        // With an explicit key file the key must exist; the embedded default makes
        // one inside the data dir on first start.
        let master_key = match var("NEXUS_MASTER_KEY_FILE") {
            Some(path) => MasterKeySource::File(path.into()),
            None => MasterKeySource::GenerateAt(data_dir.join("master.key")),
        };
        let cache_mib: u64 = var("NEXUS_CACHE_MIB")
            .map(|v| v.parse().context("NEXUS_CACHE_MIB must be a whole number"))
            .transpose()?
            .unwrap_or(256);
        Ok(Self {
            data_dir,
            listen,
            master_key,
            cache_capacity_bytes: cache_mib * 1024 * 1024,
        })
    }

    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            dir: self.data_dir.join("store"),
            master_key: self.master_key.clone(),
            cache_capacity_bytes: self.cache_capacity_bytes,
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

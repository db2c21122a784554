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
    /// `Secure` on the session cookie; off only for plain-HTTP development.
    pub cookie_secure: bool,
    /// Simulated upstreams differ in price, latency and failure rates.
    pub sim_faults: bool,
    pub sim_code_delay_ms: u64,
    pub cancel_guard_secs: i64,
    pub order_ttl_secs: i64,
    pub delivery_window_secs: i64,
    /// `smtp://host:port` or `smtps://…`; none: mail goes to `<data>/outbox/`.
    pub smtp_url: Option<String>,
    /// Where links in mails point.
    pub public_url: String,
    pub bcrypt_cost: u32,
    pub markup_percent: u32,
    /// Cashback on captured orders, in basis points (200 = 2%).
    pub cashback_bp: u32,
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
            public_url: var("NEXUS_PUBLIC_URL").unwrap_or_else(|| format!("http://{listen}")),
            listen,
            master_key,
            cache_capacity_bytes: cache_mib * 1024 * 1024,
            cookie_secure: flag("NEXUS_COOKIE_SECURE", true)?,
            sim_faults: flag("NEXUS_SIM_FAULTS", true)?,
            sim_code_delay_ms: number("NEXUS_SIM_CODE_DELAY_MS", 5_000)?,
            cancel_guard_secs: number("NEXUS_CANCEL_GUARD_SECS", 120)?,
            order_ttl_secs: number("NEXUS_ORDER_TTL_SECS", 1_200)?,
            delivery_window_secs: number("NEXUS_DELIVERY_WINDOW_SECS", 600)?,
            smtp_url: var("NEXUS_SMTP_URL"),
            bcrypt_cost: number("NEXUS_BCRYPT_COST", 12)?,
            markup_percent: number("NEXUS_MARKUP_PERCENT", 30)?,
            cashback_bp: number("NEXUS_CASHBACK_BP", 200)?,
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

/// `true`/`on`/`1` or `false`/`off`/`0`.
fn flag(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name).as_deref() {
        None => Ok(default),
        Some("true" | "on" | "1") => Ok(true),
        Some("false" | "off" | "0") => Ok(false),
        Some(_) => anyhow::bail!("{name} must be true/on/1 or false/off/0"),
    }
}

/// A whole number, or the default when unset.
fn number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} must be a whole number")),
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

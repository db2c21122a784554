//! The settings of the command line and the environment, each declared once:
//! its flag, its `NEXUS_…` variable, its default and its help. `nexus serve
//! --help` lists them all; the README's "Settings (environment)" table is
//! checked against them (`crate::cli`'s tests).

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{StringValueParser, TypedValueParser};
use nexus_core::vault::MasterKeySource;
use nexus_core::StoreConfig;

use crate::http::credentials::AdminToken;
use crate::http::forwarded::TrustedProxies;
use crate::http::limits::RateSettings;

/// Where the data lives and how the store opens: every command that opens it.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Store")]
pub struct StoreSettings {
    /// The data directory: the store, the generated master key, outbox, usage log.
    #[arg(
        long,
        global = true,
        env = "NEXUS_DATA_DIR",
        default_value = "./data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// The vault's master key: a file of 64 hex characters, which must exist;
    /// none: `<data>/master.key`, generated on first start. A wrong or missing
    /// key for an existing vault stops start-up.
    #[arg(
        long,
        global = true,
        env = "NEXUS_MASTER_KEY_FILE",
        value_name = "FILE"
    )]
    pub master_key_file: Option<PathBuf>,
    /// sled's page cache for the log, in MiB.
    #[arg(
        long,
        global = true,
        env = "NEXUS_CACHE_MIB",
        default_value = "256",
        value_name = "MIB",
        value_parser = Setting(whole_number::<u64>)
    )]
    pub cache_mib: u64,
}

impl StoreSettings {
    /// Production keeps the master key out of the data directory: a copy of the
    /// directory (a backup, a stolen disk) must not carry the key that opens it.
    pub fn master_key_outside_data_dir(&self) -> anyhow::Result<()> {
        let Some(key_file) = &self.master_key_file else {
            anyhow::bail!(
                "production requires NEXUS_MASTER_KEY_FILE: a master key file outside \
                 the data directory (NEXUS_DATA_DIR)"
            );
        };
        let resolve = |path: &std::path::Path| {
            path.canonicalize()
                .or_else(|_| std::path::absolute(path))
                .unwrap_or_else(|_| path.to_path_buf())
        };
        if resolve(key_file).starts_with(resolve(&self.data_dir)) {
            anyhow::bail!(
                "NEXUS_MASTER_KEY_FILE is inside the data directory (NEXUS_DATA_DIR); \
                 in production it must live elsewhere (a secrets mount, another volume)"
            );
        }
        Ok(())
    }

    /// The store's configuration for a command that reads an existing store
    /// (every command but `serve`): [`NoStore`] when the data directory holds
    /// none, before anything is created there (a new master key and an empty
    /// store would pass every check of an audit run in the wrong directory).
    pub fn existing_store(&self) -> Result<StoreConfig, NoStore> {
        let config = self.store();
        if !config.exists() {
            return Err(NoStore {
                data_dir: self.data_dir.clone(),
            });
        }
        Ok(config)
    }

    pub fn store(&self) -> StoreConfig {
        // With an explicit key file the key must exist; the embedded default
        // makes one inside the data dir on first start.
        let master_key = match &self.master_key_file {
            Some(path) => MasterKeySource::File(path.clone()),
            None => MasterKeySource::GenerateAt(self.data_dir.join("master.key")),
        };
        StoreConfig {
            dir: self.data_dir.join("store"),
            master_key,
            cache_capacity_bytes: self.cache_mib.saturating_mul(1024 * 1024),
        }
    }
}

/// A command that reads a store was pointed at a data directory without one.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Nexus store in {} (looked for {}): run the command where `nexus serve` keeps its \
     data, or pass --data-dir (NEXUS_DATA_DIR); only `nexus serve` creates a store, on \
     its first start",
    data_dir.display(),
    data_dir.join("store").display()
)]
pub struct NoStore {
    pub data_dir: PathBuf,
}

/// Order policy and account rules: the server and the offline commands that
/// run domain services (`retention`).
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Orders and accounts")]
pub struct DomainSettings {
    /// Earliest cancel after the number is assigned, in seconds.
    #[arg(long, global = true, env = "NEXUS_CANCEL_GUARD_SECS", default_value = "120",
          value_name = "SECS", value_parser = Setting(whole_number::<i64>))]
    pub cancel_guard_secs: i64,
    /// Expiry without a code, with refund, in seconds.
    #[arg(long, global = true, env = "NEXUS_ORDER_TTL_SECS", default_value = "1200",
          value_name = "SECS", value_parser = Setting(whole_number::<i64>))]
    pub order_ttl_secs: i64,
    /// How long a delivered code stays readable, in seconds.
    #[arg(long, global = true, env = "NEXUS_DELIVERY_WINDOW_SECS", default_value = "600",
          value_name = "SECS", value_parser = Setting(whole_number::<i64>))]
    pub delivery_window_secs: i64,
    /// Cashback on captured orders in basis points (200 = 2%), rounded down to
    /// a micro-dollar.
    #[arg(long, global = true, env = "NEXUS_CASHBACK_BP", default_value = "200",
          value_name = "BP", value_parser = Setting(whole_number::<u32>))]
    pub cashback_bp: u32,
    /// bcrypt cost; below 12 is refused.
    #[arg(long, global = true, env = "NEXUS_BCRYPT_COST", default_value = "12",
          value_name = "COST", value_parser = Setting(whole_number::<u32>))]
    pub bcrypt_cost: u32,
    /// Development only: allow `http` and loopback or private hosts as
    /// customer webhook endpoints.
    #[arg(long, global = true, env = "NEXUS_WEBHOOK_ALLOW_INSECURE_URLS", default_value = "false",
          value_name = "BOOL", action = clap::ArgAction::Set, value_parser = Setting(switch))]
    pub webhook_allow_insecure_urls: bool,
}

/// What only the server reads.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Server")]
pub struct ServerSettings {
    /// HTTP listen address (`:0` picks a free port; the log says which).
    #[arg(long, env = "NEXUS_LISTEN", default_value = "127.0.0.1:8080",
          value_name = "ADDR", value_parser = Setting(address))]
    pub listen: SocketAddr,
    /// Where links in mails point (the verification link opens
    /// `GET /verify?token=…`); none: `http://<the address listened on>`
    /// (`https://` with TLS).
    #[arg(long, env = "NEXUS_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// `Secure` on the session cookie; `false` for plain-HTTP development.
    #[arg(long, env = "NEXUS_COOKIE_SECURE", default_value = "true",
          value_name = "BOOL", action = clap::ArgAction::Set, value_parser = Setting(switch))]
    pub cookie_secure: bool,
    /// `on`: the simulated upstreams differ in price, latency and failure
    /// rates; `off`: all healthy.
    #[arg(long, env = "NEXUS_SIM_FAULTS", default_value = "on",
          value_name = "BOOL", action = clap::ArgAction::Set, value_parser = Setting(switch))]
    pub sim_faults: bool,
    /// Simulator: every code arrives exactly this long after the purchase,
    /// in milliseconds (tests and benches pin it); none: each (service,
    /// country) has its own realistic spread, most within a minute, some
    /// after minutes, a few never (docs/SIMULATOR.md).
    #[arg(long, env = "NEXUS_SIM_CODE_DELAY_MS",
          value_name = "MS", value_parser = Setting(whole_number::<u64>))]
    pub sim_code_delay_ms: Option<u64>,
    /// `smtp://host:port` or `smtps://…` (e.g. `smtp://127.0.0.1:2525`);
    /// none: mail goes to `<data>/outbox/`. `[smtp]` of the configuration
    /// file comes first.
    #[arg(
        long,
        env = "NEXUS_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// Sell price = cheapest upstream cost + markup, rounded up to a cent.
    #[arg(long, env = "NEXUS_MARKUP_PERCENT", default_value = "30",
          value_name = "PERCENT", value_parser = Setting(whole_number::<u32>))]
    pub markup_percent: u32,
    /// How often the retention sweeps run in the server (the 30-day account
    /// and 90-day anonymous erasures), in seconds; `0` = never (run `nexus
    /// retention run`).
    #[arg(long, env = "NEXUS_RETENTION_SWEEP_SECS", default_value = "3600",
          value_name = "SECS", value_parser = Setting(whole_number::<u64>))]
    pub retention_sweep_secs: u64,
    /// Requests per second per verified account, all its API keys and
    /// sessions together (burst 2×); `0` = off.
    #[arg(long, env = "NEXUS_RATE_KEY_PER_S", default_value = "20",
          value_name = "N", value_parser = Setting(whole_number::<u32>))]
    pub rate_key_per_s: u32,
    /// Requests per second per client IP without a verified credential
    /// (burst 2×); `0` = off.
    #[arg(long, env = "NEXUS_RATE_IP_PER_S", default_value = "20",
          value_name = "N", value_parser = Setting(whole_number::<u32>))]
    pub rate_ip_per_s: u32,
    /// Sign-in attempts (register, log in, verify, change the password) per
    /// minute per IP and per account, and failed API keys and admin tokens
    /// per minute per IP; `0` = off.
    #[arg(long, env = "NEXUS_RATE_AUTH_PER_MIN", default_value = "10",
          value_name = "N", value_parser = Setting(whole_number::<u32>))]
    pub rate_auth_per_min: u32,
    /// Comma-separated CIDR ranges (or addresses) of the proxies in front of
    /// the server: from a peer in them, the client is the rightmost address
    /// of `X-Forwarded-For` outside them; none: the peer is the client.
    #[arg(long, env = "NEXUS_TRUSTED_PROXIES", value_name = "CIDRS",
          value_parser = Setting(trusted_proxies))]
    pub trusted_proxies: Option<TrustedProxies>,
    /// Bearer token of `/v1/admin/…`, 16+ printable ASCII characters; none:
    /// the admin routes are off (404). From the environment only: a command
    /// line is visible to every user of the machine.
    #[arg(long, env = "NEXUS_ADMIN_TOKEN", value_name = "TOKEN",
          hide_env_values = true, value_parser = Setting(admin_token))]
    pub admin_token: Option<AdminToken>,
    /// PEM certificate chain: with `NEXUS_TLS_KEY`, the listener speaks HTTPS
    /// (rustls) instead of plain HTTP.
    #[arg(long, env = "NEXUS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `NEXUS_TLS_CERT`.
    #[arg(long, env = "NEXUS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// PEM files for the HTTPS listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
}

impl ServerSettings {
    pub fn rate(&self) -> RateSettings {
        RateSettings {
            key_per_s: self.rate_key_per_s,
            ip_per_s: self.rate_ip_per_s,
            auth_per_min: self.rate_auth_per_min,
        }
    }

    /// Serve HTTPS with these files; none: plain HTTP.
    pub fn tls(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert_chain: cert.clone(),
                private_key: key.clone(),
            })),
            _ => anyhow::bail!("NEXUS_TLS_CERT and NEXUS_TLS_KEY go together: set both or neither"),
        }
    }
}

/// A setting's value refused. The message names the variable and what it
/// must be, never the value (it may be a secret).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSetting(String);

/// A value parser for one setting: `parse(text, variable)` gives the value or
/// the message of a [`BadSetting`].
#[derive(Clone)]
pub struct Setting<T>(pub fn(&str, &str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Setting<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let variable = arg.map_or_else(String::new, |arg| match arg.get_env() {
            Some(name) => name.to_string_lossy().into_owned(),
            None => arg.to_string(),
        });
        let parse = self.0;
        StringValueParser::new()
            .try_map(move |text| parse(&text, &variable).map_err(BadSetting))
            .parse_ref(cmd, arg, value)
    }
}

/// A whole number.
fn whole_number<T: std::str::FromStr>(text: &str, variable: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{variable} must be a whole number"))
}

/// `true`/`on`/`1` or `false`/`off`/`0`.
fn switch(text: &str, variable: &str) -> Result<bool, String> {
    match text {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(format!("{variable} must be true/on/1 or false/off/0")),
    }
}

fn address(text: &str, variable: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("{variable} must be an address like 127.0.0.1:8080: {e}"))
}

fn trusted_proxies(text: &str, variable: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(text).map_err(|e| format!("{variable}: {e}"))
}

/// The error names the variable (its own message), never the token.
fn admin_token(text: &str, _variable: &str) -> Result<AdminToken, String> {
    AdminToken::new(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_before() {
        assert_eq!(whole_number::<u32>("30", "V"), Ok(30));
        assert_eq!(
            whole_number::<u32>("-1", "NEXUS_X"),
            Err("NEXUS_X must be a whole number".to_owned())
        );
        assert_eq!(whole_number::<i64>("-1", "V"), Ok(-1));
        for on in ["true", "on", "1"] {
            assert_eq!(switch(on, "V"), Ok(true));
        }
        for off in ["false", "off", "0"] {
            assert_eq!(switch(off, "V"), Ok(false));
        }
        assert_eq!(
            switch("yes", "NEXUS_X"),
            Err("NEXUS_X must be true/on/1 or false/off/0".to_owned())
        );
        assert_eq!(
            address("127.0.0.1:0", "V"),
            Ok("127.0.0.1:0".parse().unwrap())
        );
        let refused = address("localhost", "NEXUS_LISTEN").unwrap_err();
        assert!(
            refused.starts_with("NEXUS_LISTEN must be an address like 127.0.0.1:8080"),
            "{refused}"
        );
    }

    #[test]
    fn trusted_proxies_are_ranges_and_a_refusal_names_the_variable() {
        assert!(trusted_proxies("10.0.0.0/8, ::1", "V").is_ok());
        let refused = trusted_proxies("10.0.0.0/8,proxy", "NEXUS_TRUSTED_PROXIES").unwrap_err();
        assert!(
            refused.starts_with("NEXUS_TRUSTED_PROXIES: entry 2 is no CIDR range"),
            "{refused}"
        );
    }

    #[test]
    fn a_weak_admin_token_is_refused_without_showing_it() {
        let refused = admin_token("short-secret", "NEXUS_ADMIN_TOKEN").unwrap_err();
        assert!(
            refused.starts_with("NEXUS_ADMIN_TOKEN must be"),
            "{refused}"
        );
        assert!(!refused.contains("short-secret"), "{refused}");
        assert!(admin_token("a-long-enough-admin-token", "NEXUS_ADMIN_TOKEN").is_ok());
    }

    #[test]
    fn the_master_key_defaults_to_a_generated_file_in_the_data_dir() {
        let settings = StoreSettings {
            data_dir: "/srv/nexus".into(),
            master_key_file: None,
            cache_mib: 256,
        };
        let store = settings.store();
        assert_eq!(store.dir, PathBuf::from("/srv/nexus/store"));
        assert_eq!(store.cache_capacity_bytes, 256 * 1024 * 1024);
        assert!(matches!(
            store.master_key,
            MasterKeySource::GenerateAt(ref p) if p == &PathBuf::from("/srv/nexus/master.key")
        ));
        let explicit = StoreSettings {
            master_key_file: Some("/run/secrets/key".into()),
            ..settings
        };
        assert!(matches!(
            explicit.store().master_key,
            MasterKeySource::File(ref p) if p == &PathBuf::from("/run/secrets/key")
        ));
    }

    #[test]
    fn production_master_key_must_live_outside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let settings = |key: Option<PathBuf>| StoreSettings {
            data_dir: data_dir.clone(),
            master_key_file: key,
            cache_mib: 256,
        };
        let missing = settings(None).master_key_outside_data_dir().unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("requires NEXUS_MASTER_KEY_FILE"),
            "{missing}"
        );
        let inside = data_dir.join("master.key");
        std::fs::write(&inside, "k").unwrap();
        let refused = settings(Some(inside))
            .master_key_outside_data_dir()
            .unwrap_err();
        assert!(
            refused.to_string().contains("inside the data directory"),
            "{refused}"
        );
        // The same file reached through `..` is still inside.
        let dotted = dir.path().join("elsewhere/../data/master.key");
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        assert!(settings(Some(dotted))
            .master_key_outside_data_dir()
            .is_err());
        let outside = dir.path().join("master.key");
        std::fs::write(&outside, "k").unwrap();
        settings(Some(outside))
            .master_key_outside_data_dir()
            .unwrap();
    }
}

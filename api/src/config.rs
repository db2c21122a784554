//! Settings: the command line and the environment ([`settings`], each
//! declared once with its default and help), and the configuration file
//! (`--config FILE`: upstreams, gateway, SMTP), checked one section at a time.

pub mod settings;
mod upstream;

use anyhow::Context;
use toml::Spanned;

pub use settings::{BadSetting, DomainSettings, NoStore, ServerSettings, StoreSettings, TlsFiles};

/// What `nexus serve` runs with.
pub struct Config {
    pub store: StoreSettings,
    pub domain: DomainSettings,
    pub server: ServerSettings,
    /// Serve HTTPS (rustls) on the listen address with this certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// The configuration file (`--config FILE`): upstreams, gateway, SMTP;
    /// none is the embedded default.
    pub file: Option<FileSettings>,
}

impl Config {
    /// Checks the settings that go together and reads the configuration file.
    pub fn new(
        store: StoreSettings,
        domain: DomainSettings,
        server: ServerSettings,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let tls = server.tls()?;
        let file = file.map(FileSettings::load).transpose()?;
        if file
            .as_ref()
            .is_some_and(|f| f.environment == Environment::Production)
        {
            store.master_key_outside_data_dir()?;
        }
        Ok(Self {
            store,
            domain,
            server,
            tls,
            file,
        })
    }
}

// ---------------------------------------------------------------------------
// The configuration file (`nexus --config FILE serve`)
// ---------------------------------------------------------------------------

/// Largest configuration file read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
/// Upstreams one file may configure.
pub const MAX_UPSTREAMS: usize = 32;
/// Largest secret file read (`api_key_file`, …), in bytes.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// What the configuration file sets: real upstreams, the payment gateway, SMTP,
/// routing and the orphan sweep. Secrets are never in it: each names an
/// environment variable (`…_env`) or a file (`…_file`) that holds it.
#[derive(Clone, Debug)]
pub struct FileSettings {
    pub environment: Environment,
    pub upstreams: Vec<UpstreamSettings>,
    pub gateway: Option<GatewaySettings>,
    pub smtp: Option<SmtpSettings>,
    pub router: nexus_providers::router::RouterConfig,
    /// `None`: `[orphan_sweep] enabled = false`.
    pub orphan_sweep: Option<nexus_providers::sweep::SweepConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// TLS everywhere but loopback, no simulators, a real gateway and SMTP.
    Production,
    /// Anything goes (simulators, plain HTTP, the simulated gateway, the outbox).
    Development,
}

/// One `[[upstream]]`, its secrets resolved.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub kind: UpstreamKind,
    pub name: String,
    pub base_url: String,
    pub api_key: String,
    pub timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    /// SMSCode: `v1` or `v2`.
    pub smscode_v2: bool,
    /// SMSCode: whole rupiah per US dollar.
    pub idr_per_usd: u64,
    /// SMSCode: country → `country_id`; PVAPins: country → name.
    pub countries: Vec<(String, Ident)>,
    /// SMSCode: service → `platform_id`; PVAPins: service → app name.
    pub services: Vec<(String, Ident)>,
    /// SMSCode: the webhook signing secret.
    pub webhook_secret: Option<String>,
    /// HeroSMS: addresses `smsIncoming` pushes are heard from.
    pub webhook_sources: Vec<std::net::IpAddr>,
    pub webhook_tolerance: std::time::Duration,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Herosms,
    Pvapins,
    Proxnum,
    Smscode,
    Simulator,
}

/// An upstream's id for a country or service: a number or a name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum Ident {
    Number(u64),
    Name(String),
}

/// `[gateway]`: NOWPayments.
#[derive(Clone)]
pub struct GatewaySettings {
    pub base_url: String,
    pub api_key: String,
    pub ipn_secret: String,
    pub ipn_callback_url: Option<String>,
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// `[smtp]`.
#[derive(Clone)]
pub struct SmtpSettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("has_credentials", &self.username.is_some())
            .finish_non_exhaustive()
    }
}

mod file {
    //! The file's shape, as read (secrets still as names).

    use std::collections::BTreeMap;

    use serde::Deserialize;
    use toml::Spanned;

    use super::{Ident, UpstreamKind};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub environment: Option<Spanned<String>>,
        #[serde(default)]
        pub upstream: Vec<Spanned<Upstream>>,
        pub gateway: Option<Spanned<Gateway>>,
        pub smtp: Option<Spanned<Smtp>>,
        #[serde(default)]
        pub router: Router,
        #[serde(default)]
        pub orphan_sweep: Sweep,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Upstream {
        pub kind: UpstreamKind,
        pub name: String,
        pub base_url: Option<Spanned<String>>,
        pub api_key_env: Option<String>,
        pub api_key_file: Option<String>,
        pub timeout_ms: Option<u64>,
        pub connect_timeout_ms: Option<u64>,
        pub api: Option<String>,
        pub idr_per_usd: Option<u64>,
        #[serde(default)]
        pub countries: BTreeMap<String, Ident>,
        #[serde(default)]
        pub services: BTreeMap<String, Ident>,
        pub webhook_secret_env: Option<String>,
        pub webhook_secret_file: Option<String>,
        #[serde(default)]
        pub webhook_sources: Vec<String>,
        pub webhook_tolerance_secs: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Gateway {
        pub kind: String,
        pub base_url: Spanned<String>,
        pub api_key_env: Option<String>,
        pub api_key_file: Option<String>,
        pub ipn_secret_env: Option<String>,
        pub ipn_secret_file: Option<String>,
        pub ipn_callback_url: Option<Spanned<String>>,
        pub timeout_ms: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Smtp {
        pub url: Spanned<String>,
        pub username_env: Option<String>,
        pub password_env: Option<String>,
        pub password_file: Option<String>,
        pub from: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Router {
        pub deadline_ms: Option<u64>,
        pub attempt_timeout_ms: Option<u64>,
        pub failures_to_open: Option<u32>,
        pub open_for_ms: Option<u64>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Sweep {
        pub enabled: Option<bool>,
        pub interval_ms: Option<u64>,
        pub grace_ms: Option<u64>,
        pub max_listed: Option<usize>,
        pub max_cancels: Option<usize>,
    }
}

/// Line (from 1) of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// A TOML error as `line N, key `k`: what` — without the offending value (it
/// could be a secret pasted in the wrong place).
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let mut message = String::new();
    // Quoted values are replaced; backquoted names (fields, keys) are kept.
    let mut in_quotes = false;
    // serde names the offending value in `invalid type`, `invalid value` and
    // `unknown variant` messages: only what was expected is kept.
    let raw = error.message();
    let valueless = ["invalid type: ", "invalid value: ", "unknown variant "]
        .iter()
        .find_map(|prefix| raw.strip_prefix(prefix))
        .map(|rest| match rest.split_once(", expected ") {
            Some((_, expected)) => format!("invalid value, expected {expected}"),
            None => "invalid value".to_owned(),
        });
    let raw = valueless.unwrap_or_else(|| raw.to_owned());
    for c in raw.chars() {
        match c {
            '"' if !in_quotes => {
                in_quotes = true;
                message.push_str("<value>");
            }
            '"' => in_quotes = false,
            _ if in_quotes => {}
            '\n' => message.push_str("; "),
            c => message.push(c),
        }
    }
    match error.span() {
        Some(span) => {
            let line = line_of(text, span.start);
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_owned())
                .filter(|k| !k.is_empty() && !k.starts_with('['));
            match key {
                Some(key) => format!("line {line}, key `{key}`: {message}"),
                None => format!("line {line}: {message}"),
            }
        }
        None => message,
    }
}

/// A secret from an environment variable or a file; the error names the
/// variable or the file, never the content.
fn secret(
    what: &str,
    env: Option<&str>,
    path: Option<&str>,
    env_key: &str,
    file_key: &str,
) -> anyhow::Result<Option<String>> {
    match (env, path) {
        (Some(_), Some(_)) => {
            anyhow::bail!("{what}: set `{env_key}` or `{file_key}`, not both")
        }
        (Some(name), None) => match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
            _ => anyhow::bail!(
                "{what}: the environment variable {name} (named by `{env_key}`) is not set"
            ),
        },
        (None, Some(path)) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("{what}: reading `{file_key}` {path}"))?
                .len();
            anyhow::ensure!(
                size <= MAX_SECRET_FILE_BYTES,
                "{what}: `{file_key}` {path} is over {MAX_SECRET_FILE_BYTES} bytes"
            );
            let value = std::fs::read_to_string(path)
                .with_context(|| format!("{what}: reading `{file_key}` {path}"))?;
            anyhow::ensure!(
                !value.trim().is_empty(),
                "{what}: `{file_key}` {path} is empty"
            );
            Ok(Some(value.trim().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// Whether `host` is a loopback name or address.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The scheme and host of a URL; `None` if it is not one.
fn scheme_and_host(url: &str) -> Option<(String, String)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.to_owned();
    Some((parsed.scheme().to_ascii_lowercase(), host))
}

impl FileSettings {
    /// Reads and checks the file; every error names the file, and the line and
    /// key where there is one.
    pub fn load(path: &std::path::Path) -> anyhow::Result<FileSettings> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .with_context(|| format!("config {shown}: cannot read it"))?
            .len();
        anyhow::ensure!(
            size <= MAX_CONFIG_FILE_BYTES,
            "config {shown}: over {MAX_CONFIG_FILE_BYTES} bytes"
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config {shown}: cannot read it as UTF-8 text"))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config {shown}: {e:#}"))
    }

    /// Parses the file's text (see [`FileSettings::load`]): one check per
    /// section, in the order of the first error reported.
    pub fn parse(text: &str) -> anyhow::Result<FileSettings> {
        let raw: file::File =
            toml::from_str(text).map_err(|e| anyhow::anyhow!(describe_toml_error(text, &e)))?;
        let environment = environment(text, raw.environment.as_ref())?;
        let rules = Rules {
            text,
            production: environment == Environment::Production,
        };
        let upstreams = rules.upstreams(&raw.upstream)?;
        let gateway = rules.gateway(raw.gateway.as_ref())?;
        // The simulated gateway, and its development pay route, pay invoices
        // for free: only where every upstream is simulated too.
        if let (None, Some(real)) = (
            &gateway,
            upstreams.iter().find(|u| u.kind != UpstreamKind::Simulator),
        ) {
            anyhow::bail!(
                "upstream `{}` is a real upstream: it needs a [gateway] (the simulated gateway pays invoices for free)",
                real.name
            );
        }
        Ok(FileSettings {
            environment,
            upstreams,
            gateway,
            smtp: rules.smtp(raw.smtp.as_ref())?,
            router: router(&raw.router)?,
            orphan_sweep: orphan_sweep(&raw.orphan_sweep),
        })
    }
}

/// `environment`: production unless it says development.
fn environment(text: &str, value: Option<&Spanned<String>>) -> anyhow::Result<Environment> {
    let Some(value) = value else {
        return Ok(Environment::Production);
    };
    match value.get_ref().as_str() {
        "production" => Ok(Environment::Production),
        "development" => Ok(Environment::Development),
        _ => anyhow::bail!(
            "line {}, key `environment`: must be \"production\" or \"development\"",
            line_of(text, value.span().start)
        ),
    }
}

/// What the checks of the sections share: the text (for line numbers) and
/// the environment.
struct Rules<'a> {
    text: &'a str,
    production: bool,
}

impl Rules<'_> {
    fn line<T>(&self, spanned: &Spanned<T>) -> usize {
        line_of(self.text, spanned.span().start)
    }

    /// An `https` or `http` URL; in production `https`, unless its host is
    /// loopback.
    fn check_web_url(&self, what: &str, url: &Spanned<String>) -> anyhow::Result<()> {
        let line = self.line(url);
        let Some((scheme, host)) = scheme_and_host(url.get_ref()) else {
            anyhow::bail!("line {line}, {what}: not a URL");
        };
        anyhow::ensure!(
            matches!(scheme.as_str(), "https" | "http"),
            "line {line}, {what}: the scheme must be one of https, http"
        );
        if self.production && scheme != "https" && !is_loopback_host(&host) {
            anyhow::bail!(
                "line {line}, {what}: production requires TLS (https) for a host that is not loopback"
            );
        }
        Ok(())
    }

    /// `[[upstream]]`: at least one in production, at most [`MAX_UPSTREAMS`].
    fn upstreams(
        &self,
        entries: &[Spanned<file::Upstream>],
    ) -> anyhow::Result<Vec<UpstreamSettings>> {
        anyhow::ensure!(
            !self.production || !entries.is_empty(),
            "production requires at least one [[upstream]]"
        );
        anyhow::ensure!(
            entries.len() <= MAX_UPSTREAMS,
            "at most {MAX_UPSTREAMS} [[upstream]] entries"
        );
        let mut upstreams = Vec::with_capacity(entries.len());
        for entry in entries {
            let upstream = self.upstream(entry, &upstreams)?;
            upstreams.push(upstream);
        }
        Ok(upstreams)
    }

    /// One `[[upstream]]`, its secrets resolved; `configured` are the ones
    /// before it.
    fn upstream(
        &self,
        entry: &Spanned<file::Upstream>,
        configured: &[UpstreamSettings],
    ) -> anyhow::Result<UpstreamSettings> {
        use std::time::Duration;
        let line = self.line(entry);
        let u = entry.get_ref();
        let what = format!("upstream `{}` (line {line})", u.name);
        check_upstream_name(line, &u.name, configured)?;
        let simulator = u.kind == UpstreamKind::Simulator;
        anyhow::ensure!(
            !(simulator && self.production),
            "{what}: a simulator is for development only (set environment = \"development\")"
        );
        let base_url = match &u.base_url {
            Some(url) => {
                self.check_web_url(&format!("key `base_url` of upstream `{}`", u.name), url)?;
                url.get_ref().clone()
            }
            None if simulator => String::new(),
            None => anyhow::bail!("{what}: `base_url` is required"),
        };
        let api_key = secret(
            &what,
            u.api_key_env.as_deref(),
            u.api_key_file.as_deref(),
            "api_key_env",
            "api_key_file",
        )?;
        let api_key = match api_key {
            Some(key) => key,
            None if simulator => String::new(),
            None => anyhow::bail!("{what}: `api_key_env` or `api_key_file` is required"),
        };
        let webhook_secret = secret(
            &what,
            u.webhook_secret_env.as_deref(),
            u.webhook_secret_file.as_deref(),
            "webhook_secret_env",
            "webhook_secret_file",
        )?;
        let webhook_sources = webhook_sources(&what, &u.webhook_sources)?;
        let smscode_v2 = match u.api.as_deref() {
            None | Some("v1") => false,
            Some("v2") => true,
            Some(_) => anyhow::bail!("{what}: `api` must be \"v1\" or \"v2\""),
        };
        anyhow::ensure!(
            u.kind != UpstreamKind::Smscode || u.idr_per_usd.is_some_and(|r| r > 0),
            "{what}: `idr_per_usd` (whole rupiah per dollar, more than 0) is required"
        );
        let timeout = Duration::from_millis(u.timeout_ms.unwrap_or(8_000));
        let connect_timeout = Duration::from_millis(u.connect_timeout_ms.unwrap_or(2_000));
        anyhow::ensure!(
            !timeout.is_zero() && !connect_timeout.is_zero(),
            "{what}: timeouts must be more than 0"
        );
        Ok(UpstreamSettings {
            kind: u.kind,
            name: u.name.clone(),
            base_url,
            api_key,
            timeout,
            connect_timeout,
            smscode_v2,
            idr_per_usd: u.idr_per_usd.unwrap_or(0),
            countries: u.countries.clone().into_iter().collect(),
            services: u.services.clone().into_iter().collect(),
            webhook_secret,
            webhook_sources,
            webhook_tolerance: Duration::from_secs(u.webhook_tolerance_secs.unwrap_or(600)),
        })
    }

    /// `[gateway]`: NOWPayments; required in production.
    fn gateway(
        &self,
        gateway: Option<&Spanned<file::Gateway>>,
    ) -> anyhow::Result<Option<GatewaySettings>> {
        let Some(gateway) = gateway else {
            anyhow::ensure!(
                !self.production,
                "production requires a [gateway] (the simulated one pays invoices for free)"
            );
            return Ok(None);
        };
        let what = format!("[gateway] (line {})", self.line(gateway));
        let g = gateway.get_ref();
        anyhow::ensure!(
            g.kind == "nowpayments",
            "{what}: `kind` must be \"nowpayments\""
        );
        self.check_web_url("key `base_url` of [gateway]", &g.base_url)?;
        if let Some(url) = &g.ipn_callback_url {
            self.check_web_url("key `ipn_callback_url` of [gateway]", url)?;
        }
        let api_key = secret(
            &what,
            g.api_key_env.as_deref(),
            g.api_key_file.as_deref(),
            "api_key_env",
            "api_key_file",
        )?
        .ok_or_else(|| anyhow::anyhow!("{what}: `api_key_env` or `api_key_file` is required"))?;
        let ipn_secret = secret(
            &what,
            g.ipn_secret_env.as_deref(),
            g.ipn_secret_file.as_deref(),
            "ipn_secret_env",
            "ipn_secret_file",
        )?
        .ok_or_else(|| {
            anyhow::anyhow!("{what}: `ipn_secret_env` or `ipn_secret_file` is required")
        })?;
        Ok(Some(GatewaySettings {
            base_url: g.base_url.get_ref().clone(),
            api_key,
            ipn_secret,
            ipn_callback_url: g.ipn_callback_url.as_ref().map(|u| u.get_ref().clone()),
            timeout: std::time::Duration::from_millis(g.timeout_ms.unwrap_or(10_000).max(1)),
        }))
    }

    /// `[smtp]`: required in production.
    fn smtp(&self, smtp: Option<&Spanned<file::Smtp>>) -> anyhow::Result<Option<SmtpSettings>> {
        let Some(smtp) = smtp else {
            anyhow::ensure!(
                !self.production,
                "production requires [smtp] (the outbox is a development aid)"
            );
            return Ok(None);
        };
        let what = format!("[smtp] (line {})", self.line(smtp));
        let s = smtp.get_ref();
        self.check_smtp_url(&s.url)?;
        let username = secret(&what, s.username_env.as_deref(), None, "username_env", "-")?;
        let password = secret(
            &what,
            s.password_env.as_deref(),
            s.password_file.as_deref(),
            "password_env",
            "password_file",
        )?;
        anyhow::ensure!(
            username.is_some() == password.is_some(),
            "{what}: a username goes with a password"
        );
        Ok(Some(SmtpSettings {
            url: s.url.get_ref().clone(),
            username,
            password,
            from: s.from.clone(),
        }))
    }

    /// `smtps://`, or `smtp://` (with `?tls=required` in production unless
    /// the host is loopback); never credentials in the URL.
    fn check_smtp_url(&self, url: &Spanned<String>) -> anyhow::Result<()> {
        let line = self.line(url);
        let url = url.get_ref();
        let Some((scheme, host)) = scheme_and_host(url) else {
            anyhow::bail!("line {line}, key `url` of [smtp]: not a URL");
        };
        anyhow::ensure!(
            matches!(scheme.as_str(), "smtp" | "smtps"),
            "line {line}, key `url` of [smtp]: the scheme must be smtps or smtp"
        );
        anyhow::ensure!(
            !url.contains('@'),
            "line {line}, key `url` of [smtp]: no credentials in the URL; use `username_env` and `password_env`"
        );
        let starttls_required = url
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p == "tls=required"));
        if self.production && scheme == "smtp" && !starttls_required && !is_loopback_host(&host) {
            anyhow::bail!(
                "line {line}, key `url` of [smtp]: production requires TLS (smtps://, or smtp:// with ?tls=required for STARTTLS) for a host that is not loopback"
            );
        }
        Ok(())
    }
}

/// An upstream's `name`: 1-64 letters, digits, `-` or `_`, and unique.
fn check_upstream_name(
    line: usize,
    name: &str,
    configured: &[UpstreamSettings],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.trim().is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "line {line}, key `name`: 1-64 letters, digits, `-` or `_`"
    );
    anyhow::ensure!(
        !configured.iter().any(|o| o.name == name),
        "line {line}, key `name`: `{name}` is configured twice"
    );
    Ok(())
}

/// `webhook_sources`: IP addresses; the error does not repeat the entry.
fn webhook_sources(what: &str, sources: &[String]) -> anyhow::Result<Vec<std::net::IpAddr>> {
    sources
        .iter()
        .map(|source| {
            source.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{what}: `webhook_sources` holds an entry that is not an IP address"
                )
            })
        })
        .collect()
}

/// A duration in milliseconds, or the default.
fn ms(value: Option<u64>, default: std::time::Duration) -> std::time::Duration {
    value.map_or(default, std::time::Duration::from_millis)
}

/// `[router]`: the failover deadlines and the breaker.
fn router(raw: &file::Router) -> anyhow::Result<nexus_providers::router::RouterConfig> {
    let defaults = nexus_providers::router::RouterConfig::default();
    let router = nexus_providers::router::RouterConfig {
        deadline: ms(raw.deadline_ms, defaults.deadline),
        attempt_timeout: ms(raw.attempt_timeout_ms, defaults.attempt_timeout),
        failures_to_open: raw
            .failures_to_open
            .unwrap_or(defaults.failures_to_open)
            .max(1),
        open_for: ms(raw.open_for_ms, defaults.open_for),
        ..defaults
    };
    anyhow::ensure!(
        !router.deadline.is_zero() && !router.attempt_timeout.is_zero(),
        "[router]: `deadline_ms` and `attempt_timeout_ms` must be more than 0"
    );
    Ok(router)
}

/// `[orphan_sweep]`: `None` when `enabled = false`; each bound clamped to
/// what the sweep supports.
fn orphan_sweep(raw: &file::Sweep) -> Option<nexus_providers::sweep::SweepConfig> {
    use std::time::Duration;
    let defaults = nexus_providers::sweep::SweepConfig::default();
    let sweep = nexus_providers::sweep::SweepConfig {
        interval: ms(raw.interval_ms, defaults.interval).max(Duration::from_secs(1)),
        grace: ms(raw.grace_ms, defaults.grace).max(Duration::from_secs(30)),
        max_listed: raw
            .max_listed
            .unwrap_or(defaults.max_listed)
            .clamp(1, 10_000),
        max_cancels: raw
            .max_cancels
            .unwrap_or(defaults.max_cancels)
            .clamp(1, 1_000),
        ..defaults
    };
    (raw.enabled != Some(false)).then_some(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCTION: &str = r#"
[[upstream]]
kind = "herosms"
name = "herosms"
base_url = "https://hero-sms.example/stubs/handler_api.php"
api_key_env = "NEXUS_TEST_CONFIG_KEY"
webhook_sources = ["203.0.113.7"]

[gateway]
kind = "nowpayments"
base_url = "https://api.nowpayments.example"
api_key_env = "NEXUS_TEST_CONFIG_KEY"
ipn_secret_env = "NEXUS_TEST_CONFIG_KEY"

[smtp]
url = "smtps://mail.example:465"
"#;

    fn with_key() {
        // Only this module's tests read this variable; all set the same value.
        std::env::set_var("NEXUS_TEST_CONFIG_KEY", "k-3f9a-secret");
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", FileSettings::parse(text).unwrap_err())
    }

    #[test]
    fn a_production_file_with_tls_everywhere_is_read() {
        with_key();
        let settings = FileSettings::parse(PRODUCTION).unwrap();
        assert_eq!(settings.environment, Environment::Production);
        assert_eq!(settings.upstreams.len(), 1);
        assert_eq!(settings.upstreams[0].api_key, "k-3f9a-secret");
        assert_eq!(
            settings.upstreams[0].webhook_sources,
            vec!["203.0.113.7".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(settings.gateway.is_some() && settings.smtp.is_some());
        assert!(settings.orphan_sweep.is_some());
    }

    #[test]
    fn production_refuses_plain_urls_except_on_loopback() {
        with_key();
        let plain = PRODUCTION.replace("https://hero-sms", "http://hero-sms");
        let e = error_of(&plain);
        assert!(
            e.contains("line 5") && e.contains("base_url") && e.contains("TLS"),
            "{e}"
        );
        let loopback = PRODUCTION.replace("https://hero-sms.example", "http://127.0.0.1:9");
        FileSettings::parse(&loopback).unwrap();
        let gateway = PRODUCTION.replace("https://api.nowpayments", "http://api.nowpayments");
        assert!(error_of(&gateway).contains("[gateway]"));
        let smtp = PRODUCTION.replace("smtps://mail.example:465", "smtp://mail.example:25");
        assert!(error_of(&smtp).contains("STARTTLS"), "{}", error_of(&smtp));
        let starttls = PRODUCTION.replace(
            "smtps://mail.example:465",
            "smtp://mail.example:587?tls=required",
        );
        FileSettings::parse(&starttls).unwrap();
        let development = format!("environment = \"development\"\n{plain}");
        FileSettings::parse(&development).unwrap();
    }

    #[test]
    fn production_refuses_simulators_and_a_missing_gateway_or_smtp() {
        with_key();
        let sim = format!("{PRODUCTION}\n[[upstream]]\nkind = \"simulator\"\nname = \"sim\"\n");
        assert!(error_of(&sim).contains("development only"));
        let no_gateway = PRODUCTION.replace("[gateway]", "[ignored]");
        assert!(
            error_of(&no_gateway).contains("line"),
            "unknown table named"
        );
        let (before, _) = PRODUCTION.split_once("[gateway]").unwrap();
        let smtp_only = format!("{before}[smtp]\nurl = \"smtps://mail.example\"\n");
        assert!(error_of(&smtp_only).contains("[gateway]"));
    }

    #[test]
    fn a_real_upstream_without_a_gateway_is_refused_even_in_development() {
        with_key();
        let (before, _) = PRODUCTION.split_once("[gateway]").unwrap();
        let real_only = development(before);
        assert_eq!(
            error_of(&real_only),
            "upstream `herosms` is a real upstream: it needs a [gateway] (the simulated gateway pays invoices for free)"
        );
        // With the gateway, or with simulators only, development starts.
        FileSettings::parse(&development(PRODUCTION)).unwrap();
        let simulated = FileSettings::parse(&development(
            "[[upstream]]\nkind = \"simulator\"\nname = \"sim\"\n",
        ))
        .unwrap();
        assert!(simulated.gateway.is_none());
    }

    #[test]
    fn parse_errors_name_the_line_and_key_but_not_the_value() {
        with_key();
        let pasted = PRODUCTION.replace(
            "api_key_env = \"NEXUS_TEST_CONFIG_KEY\"\nwebhook",
            "api_key_env = 12345678\nwebhook",
        );
        let e = error_of(&pasted);
        assert!(e.contains("line 6") && e.contains("api_key_env"), "{e}");
        assert!(!e.contains("12345678"), "{e}");
        let typo = PRODUCTION.replace(
            "api_key_env = \"NEXUS_TEST_CONFIG_KEY\"\nwebhook",
            "api_kee = \"sk-live-abc\"\nwebhook",
        );
        let e = error_of(&typo);
        assert!(e.contains("line 6") && e.contains("api_kee"), "{e}");
        assert!(!e.contains("sk-live-abc"), "{e}");
        let missing = PRODUCTION.replace(
            "NEXUS_TEST_CONFIG_KEY\"\nwebhook",
            "NEXUS_TEST_CONFIG_UNSET\"\nwebhook",
        );
        let e = error_of(&missing);
        assert!(
            e.contains("NEXUS_TEST_CONFIG_UNSET") && e.contains("not set"),
            "{e}"
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let example = include_str!("../../docs/nexus.example.toml").replace(
            "api_key_file = \"/run/secrets/smscode_token\"",
            "api_key_env = \"NEXUS_TEST_CONFIG_KEY\"",
        );
        with_key();
        for line in example.lines() {
            if let Some((key, value)) = line.split('#').next().unwrap().split_once('=') {
                if key.trim().ends_with("_env") {
                    let name = value.trim().trim_matches('"');
                    if name.starts_with("NEXUS_") && std::env::var(name).is_err() {
                        std::env::set_var(name, "example-secret");
                    }
                }
            }
        }
        let settings = FileSettings::parse(&example).unwrap();
        assert_eq!(settings.upstreams.len(), 4);
        for upstream in &settings.upstreams {
            upstream
                .build(nexus_providers::simulator::CodeTiming::Realistic)
                .unwrap();
        }
    }

    /// A development file holding only `body` (no gateway or SMTP required).
    fn development(body: &str) -> String {
        format!("environment = \"development\"\n{body}")
    }

    #[test]
    fn each_section_names_its_line_and_key() {
        with_key();
        let e = error_of("environment = \"staging\"\n");
        assert_eq!(
            e,
            "line 1, key `environment`: must be \"production\" or \"development\""
        );
        assert_eq!(
            error_of("environment = \"production\"\n"),
            "production requires at least one [[upstream]]"
        );
        let twice = development(
            "[[upstream]]\nkind = \"simulator\"\nname = \"sim\"\n\n[[upstream]]\nkind = \"simulator\"\nname = \"sim\"\n",
        );
        assert_eq!(
            error_of(&twice),
            "line 6, key `name`: `sim` is configured twice"
        );
        let bad_name = development("[[upstream]]\nkind = \"simulator\"\nname = \"a b\"\n");
        assert_eq!(
            error_of(&bad_name),
            "line 2, key `name`: 1-64 letters, digits, `-` or `_`"
        );
        let smscode = development(
            "[[upstream]]\nkind = \"smscode\"\nname = \"s\"\nbase_url = \"ftp://x.example\"\napi_key_env = \"NEXUS_TEST_CONFIG_KEY\"\n",
        );
        assert_eq!(
            error_of(&smscode),
            "line 5, key `base_url` of upstream `s`: the scheme must be one of https, http"
        );
        let no_rate = smscode.replace("ftp://", "https://");
        assert_eq!(
            error_of(&no_rate),
            "upstream `s` (line 2): `idr_per_usd` (whole rupiah per dollar, more than 0) is required"
        );
        let api = format!("{no_rate}api = \"v3\"\n");
        assert_eq!(
            error_of(&api),
            "upstream `s` (line 2): `api` must be \"v1\" or \"v2\""
        );
        let sources = format!("{no_rate}webhook_sources = [\"10.0.0.300\"]\n");
        let e = error_of(&sources);
        assert_eq!(
            e,
            "upstream `s` (line 2): `webhook_sources` holds an entry that is not an IP address"
        );
        let gateway =
            development("[gateway]\nkind = \"stripe\"\nbase_url = \"https://pay.example\"\n");
        assert_eq!(
            error_of(&gateway),
            "[gateway] (line 2): `kind` must be \"nowpayments\""
        );
        let smtp = development("[smtp]\nurl = \"smtps://user:pw@mail.example\"\n");
        let e = error_of(&smtp);
        assert!(
            e.starts_with("line 3, key `url` of [smtp]: no credentials"),
            "{e}"
        );
        assert!(!e.contains("pw@"), "{e}");
        let router = development("[router]\ndeadline_ms = 0\n");
        assert_eq!(
            error_of(&router),
            "[router]: `deadline_ms` and `attempt_timeout_ms` must be more than 0"
        );
    }

    #[test]
    fn the_router_and_the_orphan_sweep_keep_their_bounds() {
        use std::time::Duration;
        let settings = FileSettings::parse(&development(
            "[router]\nfailures_to_open = 0\nopen_for_ms = 500\n\n[orphan_sweep]\ninterval_ms = 10\ngrace_ms = 1000\nmax_listed = 0\nmax_cancels = 5000\n",
        ))
        .unwrap();
        assert_eq!(settings.environment, Environment::Development);
        assert_eq!(settings.router.failures_to_open, 1);
        assert_eq!(settings.router.open_for, Duration::from_millis(500));
        assert_eq!(settings.router.deadline, Duration::from_millis(2_900));
        let sweep = settings.orphan_sweep.unwrap();
        assert_eq!(sweep.interval, Duration::from_secs(1));
        assert_eq!(sweep.grace, Duration::from_secs(30));
        assert_eq!((sweep.max_listed, sweep.max_cancels), (1, 1_000));
        let off = FileSettings::parse(&development("[orphan_sweep]\nenabled = false\n")).unwrap();
        assert!(off.orphan_sweep.is_none());
        assert!(off.upstreams.is_empty() && off.gateway.is_none() && off.smtp.is_none());
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.8.0.1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "localhost.example", "[::2]"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}

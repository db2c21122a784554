//! A database address, one connection, and a few shared connections.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tracing::debug;

use super::tls::MakeRustls;
use super::PgError;

/// Most connections one [`Connections`] set keeps.
pub const MAX_POOL_CONNECTIONS: usize = 64;

/// A notification a LISTEN-ing connection received: (channel, payload).
pub type PgNotification = (String, String);

/// Called with each notification a connection receives.
type OnNotification = Box<dyn Fn(PgNotification) + Send + Sync>;

/// Where the database is and how to reach it safely.
#[derive(Clone)]
pub struct PgAddress {
    config: tokio_postgres::Config,
    tls: Option<MakeRustls>,
}

impl std::fmt::Debug for PgAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl PgAddress {
    /// Parses `postgres://user:password@host:port/db?…` (or libpq's
    /// `key=value` form). `sslmode=verify-full&sslrootcert=FILE` turns on
    /// verified TLS; without it only a loopback host or a unix socket is allowed.
    pub fn parse(address: &str) -> Result<Self, PgError> {
        let (rest, ssl_mode, root_cert) = take_tls_params(address)?;
        let mut config =
            tokio_postgres::Config::from_str(&rest).map_err(|e| PgError::Address(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(PgError::Address("no host".into()));
        }
        let tls = match ssl_mode.as_deref() {
            Some("verify-full") => {
                let file = root_cert.ok_or_else(|| {
                    PgError::Tls("sslmode=verify-full needs sslrootcert=FILE".into())
                })?;
                config.ssl_mode(SslMode::Require);
                Some(MakeRustls::from_root_file(&file)?)
            }
            None | Some("disable") => {
                if !config.get_hosts().iter().all(is_local) {
                    return Err(PgError::TlsRequired);
                }
                config.ssl_mode(SslMode::Disable);
                None
            }
            Some(other) => {
                return Err(PgError::Address(format!(
                    "sslmode={other} does not verify the server: use verify-full (or disable, \
                     for loopback only)"
                )))
            }
        };
        Ok(Self { config, tls })
    }

    /// The same database and server, connecting as another role.
    pub fn as_role(&self, user: &str, password: &str) -> Self {
        let mut other = self.clone();
        other.config.user(user).password(password);
        other
    }

    /// The role this address connects as.
    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// The same database as another role (for `db init`, which grants to the
    /// runtime role named by the serving address).
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The address without its password, for messages.
    pub fn shown(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = self.config.get_ports().iter().map(u16::to_string).collect();
        format!(
            "postgres://{}@{}:{}/{}{}",
            self.user().unwrap_or("?"),
            hosts.join(","),
            ports.join(","),
            self.database().unwrap_or(""),
            if self.tls.is_some() {
                "?sslmode=verify-full"
            } else {
                ""
            }
        )
    }

    /// One connection; its driver task runs until the connection closes,
    /// handing each notification to `on_notification`.
    pub async fn connect_listening(
        &self,
        on_notification: Option<OnNotification>,
    ) -> Result<Client, PgError> {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                spawn_driver(connection, on_notification);
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                spawn_driver(connection, on_notification);
                Ok(client)
            }
        }
    }

    /// One connection.
    pub async fn connect(&self) -> Result<Client, PgError> {
        self.connect_listening(None).await
    }
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost" || IpAddr::from_str(name).is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Drives a connection, passing on notifications, until it closes.
fn spawn_driver<S, T>(mut connection: Connection<S, T>, on_notification: Option<OnNotification>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(f) = &on_notification {
                        f((n.channel().to_owned(), n.payload().to_owned()));
                    }
                }
                Some(Ok(_notice)) => {}
                Some(Err(e)) => {
                    debug!(error = %super::describe(&e), "database connection ended");
                    return;
                }
                None => return,
            }
        }
    });
}

/// Takes `sslmode` and `sslrootcert` out of an address (tokio-postgres knows
/// neither `verify-full` nor `sslrootcert`); returns the rest.
fn take_tls_params(address: &str) -> Result<(String, Option<String>, Option<PathBuf>), PgError> {
    let mut mode = None;
    let mut root = None;
    let is_url = address.starts_with("postgres://") || address.starts_with("postgresql://");
    let (base, params, separator) = if is_url {
        match address.split_once('?') {
            Some((base, query)) => (base.to_owned(), query.split('&').collect::<Vec<_>>(), "&"),
            None => (address.to_owned(), Vec::new(), "&"),
        }
    } else {
        (String::new(), address.split_whitespace().collect(), " ")
    };
    let mut kept = Vec::new();
    for param in params.into_iter().filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let value = if is_url {
            percent_decode(value)?
        } else {
            value.to_owned()
        };
        match key {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(PathBuf::from(value)),
            _ => kept.push(param),
        }
    }
    let rest = match (is_url, kept.is_empty()) {
        (true, true) => base,
        (true, false) => format!("{base}?{}", kept.join(separator)),
        (false, _) => kept.join(separator),
    };
    Ok((rest, mode, root))
}

fn percent_decode(value: &str) -> Result<String, PgError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::Address("bad %-escape in a parameter".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::Address("a parameter is not UTF-8".into()))
}

/// A few shared connections, used in turn; a closed one is replaced when next
/// picked.
pub struct Connections {
    address: PgAddress,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl Connections {
    /// `count` is clamped to 1..=[`MAX_POOL_CONNECTIONS`]; nothing connects yet.
    pub fn new(address: PgAddress, count: usize) -> Self {
        let count = count.clamp(1, MAX_POOL_CONNECTIONS);
        Self {
            address,
            slots: (0..count).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn address(&self) -> &PgAddress {
        &self.address
    }

    /// The next connection, connecting (again) if it is not open.
    pub async fn client(&self) -> Result<Arc<Client>, PgError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(self.address.connect().await?);
        *slot = Some(client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_for_loopback_only() {
        assert!(PgAddress::parse("postgres://u:p@127.0.0.1:5432/db").is_ok());
        assert!(PgAddress::parse("postgres://u:p@localhost/db").is_ok());
        assert!(PgAddress::parse("host=/run/postgresql user=u dbname=db").is_ok());
        assert!(matches!(
            PgAddress::parse("postgres://u:p@db.example.com/db"),
            Err(PgError::TlsRequired)
        ));
        assert!(matches!(
            PgAddress::parse("postgres://u:p@db.example.com/db?sslmode=require"),
            Err(PgError::Address(_))
        ));
        assert!(matches!(
            PgAddress::parse("postgres://u:p@db.example.com/db?sslmode=verify-full"),
            Err(PgError::Tls(_))
        ));
    }

    #[test]
    fn the_shown_address_has_no_password() {
        let a = PgAddress::parse("postgres://nexus:s3cret-pw@127.0.0.1:6543/ledger").unwrap();
        assert_eq!(a.shown(), "postgres://nexus@127.0.0.1:6543/ledger");
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn tls_parameters_come_out_and_the_rest_stays() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));
    }
}

//! A throw-away PostgreSQL cluster for tests: Debian's server binaries,
//! `initdb` in a temporary directory, a free loopback port and a socket
//! directory of its own, so tests run side by side; stopped and removed when
//! dropped. `.ci/run` installs the `postgresql` package where it is missing.
//!
//! The cluster's superuser is [`OWNER_ROLE`], with a random password and
//! SCRAM authentication on every connection (no `trust`): a test that means to
//! show what another role cannot do has to be refused by the server. Run as
//! root (as CI does), the server runs as Debian's `postgres` user, since
//! PostgreSQL refuses to run as root.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tempfile::TempDir;

/// The cluster's superuser (what `nexus db init` would connect as).
pub const OWNER_ROLE: &str = "nexus_owner";
/// The role `nexus serve` connects as in tests: LOGIN, nothing else until
/// `db init` grants it the runtime privileges.
pub const RUNTIME_ROLE: &str = "nexus_runtime";
/// Where Debian installs each major version's server binaries.
const DEBIAN_SERVER_DIRS: &str = "/usr/lib/postgresql";
/// Attempts at a free port (another process may take the one found first).
const MAX_START_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "no PostgreSQL server binaries (initdb) under {DEBIAN_SERVER_DIRS}/*/bin or on the \
         PATH: install Debian's `postgresql` package (`.ci/run` does)"
    )]
    NotInstalled,
    #[error("{step} failed ({status}): {stderr}")]
    Step {
        step: &'static str,
        status: String,
        stderr: String,
    },
    #[error("test cluster I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A running throw-away cluster; stopped (immediately) and removed on drop.
pub struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    as_postgres: bool,
    tls: bool,
}

/// PEM files for TLS tests.
pub struct TlsFiles {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing the server holds.
    pub other_ca: PathBuf,
}

impl PgCluster {
    /// Creates and starts a cluster; returns once it accepts connections.
    pub fn start() -> Result<PgCluster, PgError> {
        Self::start_with(false)
    }

    /// A cluster that also takes TLS on its port, with a certificate for
    /// `127.0.0.1` and `localhost` signed by a test CA of its own; the files
    /// are in [`PgCluster::tls_files`].
    pub fn start_with_tls() -> Result<PgCluster, PgError> {
        Self::start_with(true)
    }

    /// The TLS files of a cluster started with [`PgCluster::start_with_tls`]:
    /// the CA that signed its certificate, and another CA that did not.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.dir.path().join("tls/ca.pem"),
            other_ca: self.dir.path().join("tls/other-ca.pem"),
        }
    }

    fn start_with(tls: bool) -> Result<PgCluster, PgError> {
        let bin = server_bin_dir().ok_or(PgError::NotInstalled)?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new().prefix("nexus-pg-").tempdir()?;
        let password = random_password()?;
        let pwfile = dir.path().join("owner.password");
        std::fs::write(&pwfile, &password)?;
        if as_postgres {
            hand_to_postgres(dir.path())?;
        }
        if tls {
            make_test_certificates(&dir.path().join("tls"))?;
            if as_postgres {
                hand_to_postgres(dir.path())?;
            }
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            password,
            as_postgres,
            tls,
        };
        cluster.run_step("initdb", &cluster.initdb_args(&pwfile))?;
        std::fs::remove_file(&pwfile)?;
        let mut last = None;
        for _ in 0..MAX_START_ATTEMPTS {
            cluster.port = free_port()?;
            match cluster.run_step("pg_ctl start", &cluster.start_args()) {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(PgError::NotInstalled))
    }

    /// One cluster shared by the tests of this process that run at the same
    /// time; stopped when the last of them drops it (a later test starts
    /// another). A database per test keeps them apart.
    pub fn shared() -> Result<Arc<PgCluster>, PgError> {
        static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(PgCluster::start()?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// A new, empty database with a name no other test of this process uses,
    /// and the runtime role (created once per cluster). Returns its name.
    pub fn fresh_database(&self) -> Result<String, PgError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "nexus_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.create_database(&name)?;
        self.psql(
            "postgres",
            &format!(
                "DO $$ BEGIN CREATE ROLE {RUNTIME_ROLE} LOGIN PASSWORD '{}'; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
                self.password
            ),
        )?;
        Ok(name)
    }

    /// The runtime role's URL to `database` (its password is the owner's, a
    /// test-only shortcut; the roles' privileges are what differs).
    pub fn runtime_url(&self, database: &str) -> String {
        self.url(RUNTIME_ROLE, &self.password, database)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `role` (with its password) to `database`.
    pub fn url(&self, role: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{role}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The superuser's URL to `database`.
    pub fn owner_url(&self, database: &str) -> String {
        self.url(OWNER_ROLE, &self.password, database)
    }

    /// Creates a database owned by the superuser; returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PgError> {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a plain database name"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.owner_url(name))
    }

    /// Runs SQL as the superuser over TCP (password authentication) with
    /// `psql`; returns what it printed, unaligned, without headers.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PgError> {
        let output = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", OWNER_ROLE, "-d", database, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()?;
        checked("psql", &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn initdb_args(&self, pwfile: &Path) -> Vec<String> {
        let mut args = vec![
            self.bin.join("initdb").display().to_string(),
            "-D".into(),
            self.data_dir().display().to_string(),
            "-U".into(),
            OWNER_ROLE.into(),
            format!("--pwfile={}", pwfile.display()),
        ];
        args.extend(
            [
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]
            .map(String::from),
        );
        args
    }

    fn start_args(&self) -> Vec<String> {
        let mut options = String::new();
        let _ = write!(
            options,
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} \
             -c shared_buffers=16MB -c max_connections=100 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let tls = self.dir.path().join("tls");
            let _ = write!(
                options,
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                tls.join("server.crt").display(),
                tls.join("server.key").display()
            );
        }
        vec![
            self.bin.join("pg_ctl").display().to_string(),
            "-D".into(),
            self.data_dir().display().to_string(),
            "-l".into(),
            self.dir.path().join("server.log").display().to_string(),
            "-o".into(),
            options,
            "-w".into(),
            "-t".into(),
            "60".into(),
            "start".into(),
        ]
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a server program, as `postgres` when we are root.
    fn run_step(&self, step: &'static str, args: &[String]) -> Result<(), PgError> {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        } else {
            let mut c = Command::new(&args[0]);
            c.args(&args[1..]);
            c
        };
        let output = command.stdin(Stdio::null()).output()?;
        checked(step, &output)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let args = vec![
            self.bin.join("pg_ctl").display().to_string(),
            "-D".into(),
            self.data_dir().display().to_string(),
            "-m".into(),
            "immediate".into(),
            "-w".into(),
            "stop".into(),
        ];
        // Nothing to do on failure but leave the directory to its removal.
        let _ = self.run_step("pg_ctl stop", &args);
    }
}

fn checked(step: &'static str, output: &Output) -> Result<(), PgError> {
    if output.status.success() {
        return Ok(());
    }
    Err(PgError::Step {
        step,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// The newest major version's server binaries Debian installed, or those on
/// the PATH.
fn server_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_SERVER_DIRS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Gives the cluster's directory (and what is in it) to the `postgres` user.
fn hand_to_postgres(dir: &Path) -> Result<(), PgError> {
    let output = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .output()?;
    checked("chown", &output)
}

/// A test CA, a server certificate it signs for 127.0.0.1 and localhost, and
/// an unrelated CA, made with the `openssl` command (Debian's server package
/// depends on it).
fn make_test_certificates(dir: &Path) -> Result<(), PgError> {
    std::fs::create_dir_all(dir)?;
    let openssl = |step: &'static str, args: &[&str]| -> Result<(), PgError> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()?;
        checked(step, &output)
    };
    for ca in ["ca", "other-ca"] {
        openssl(
            "openssl CA",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=nexus test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        )?;
    }
    openssl(
        "openssl server key",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )?;
    openssl(
        "openssl server certificate",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    )?;
    // The server refuses a key others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )?;
    }
    Ok(())
}

fn free_port() -> Result<u16, PgError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// 24 random bytes as hex, from the kernel.
fn random_password() -> Result<String, PgError> {
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().fold(String::with_capacity(48), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Whether something accepts TCP connections on the loopback `port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Given the server packages, a cluster starts with its owner only
    /// reachable by password, holds a database of its own, and leaves nothing
    /// behind: no server on its port, no directory.
    #[test]
    fn a_throw_away_cluster_starts_answers_and_leaves_nothing_behind() {
        let cluster = PgCluster::start().expect("a test cluster");
        let url = cluster.create_database("conformance_1").unwrap();
        assert!(url.ends_with("/conformance_1"), "{url}");
        let who = cluster
            .psql(
                "conformance_1",
                "SELECT current_user || ' ' || current_setting('server_version_num')",
            )
            .unwrap();
        let (role, version) = who.split_once(' ').expect("two words");
        assert_eq!(role, OWNER_ROLE);
        assert!(version.parse::<u32>().unwrap() >= 150_000, "{version}");
        assert_eq!(
            cluster.psql("conformance_1", "SHOW fsync").unwrap(),
            "on",
            "durability tests need a durable server"
        );
        // A wrong password is refused: nothing is trusted.
        let wrong = Command::new("psql")
            .args(["-X", "-h", "127.0.0.1", "-p", &cluster.port().to_string()])
            .args(["-U", OWNER_ROLE, "-d", "postgres", "-c", "SELECT 1"])
            .env("PGPASSWORD", "not the password")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!wrong.status.success());
        assert!(
            String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"),
            "{}",
            String::from_utf8_lossy(&wrong.stderr)
        );
        let (port, dir) = (cluster.port(), cluster.dir.path().to_owned());
        assert!(port_open(port));
        drop(cluster);
        assert!(!port_open(port), "the server stopped");
        assert!(!dir.exists(), "the directory was removed");
    }
}

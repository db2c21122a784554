//! Harness for the end-to-end tests: builds and starts the real `nexus` binary on a
//! free loopback port with a temp data dir, and talks HTTP to it.

pub mod journey;
pub mod loopback;
pub mod smtp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The `nexus` binary, built once per test run with the workspace's own cargo.
pub fn nexus_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace)
            .args(["build", "--quiet", "-p", "nexus-api", "--bin", "nexus"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the nexus binary failed");
        // The tests run from <target>/debug/deps; the binary sits in <target>/debug.
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir");
        let binary = profile_dir.join("nexus");
        assert!(binary.exists(), "no nexus binary at {}", binary.display());
        binary
    })
}

/// An HTTP answer.
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    // Bounded: each round consumes a chunk or ends.
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// A running `nexus serve`, killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `nexus serve` on the embedded default in a fresh data dir.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp data dir"), env)
    }

    /// Stops this server at once (SIGKILL, as a crash) and starts a new one on
    /// the same data dir.
    pub fn restart_with(mut self, env: &[(&str, &str)]) -> Self {
        self.kill();
        let placeholder = tempfile::tempdir().expect("temp data dir");
        let data_dir = std::mem::replace(&mut self.data_dir, placeholder);
        Self::start_in(data_dir, env)
    }

    /// Starts `nexus serve` on an existing data dir.
    pub fn start_in(data_dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(nexus_binary());
        command
            .arg("serve")
            .env("NEXUS_DATA_DIR", data_dir.path())
            .env("NEXUS_LISTEN", "127.0.0.1:0")
            .env("NEXUS_LOG", "info")
            // Rate limits off unless a test turns them on: one test's many
            // sign-ups and logins all come from 127.0.0.1.
            .env("NEXUS_RATE_KEY_PER_S", "0")
            .env("NEXUS_RATE_IP_PER_S", "0")
            .env("NEXUS_RATE_AUTH_PER_MIN", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start nexus serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log until the listening line, then keeps draining it.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    let addr = line
                        .split("listening on http://")
                        .nth(1)
                        .or_else(|| line.split("listening on https://").nth(1));
                    if let Some(addr) = addr {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("nexus serve reports its address")
            .parse()
            .expect("a socket address");
        Self {
            child,
            addr,
            data_dir,
        }
    }

    /// One HTTP/1.1 request; returns (status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let response = self.send(method, path, &[], body);
        (response.status, response.body)
    }

    /// One HTTP/1.1 request with extra headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(90)))
            .unwrap();
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read response");
        let response = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Response {
            status,
            headers,
            body,
        }
    }

    /// Asks the server to stop (SIGTERM): it stops accepting, finishes what is in
    /// flight, and flushes.
    pub fn signal_terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit on its own; panics past `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for nexus") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nexus did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (SIGKILL): every acknowledged write is durable.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

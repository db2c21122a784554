//! A real SMTP server for the end-to-end tests: Python's `aiosmtpd` on a free
//! loopback port, delivering every message it accepts into a Maildir in a temp
//! dir, so a test reads what `nexus` actually sent over the wire.
//!
//! `aiosmtpd` is installed with pip when missing, once per test process. A
//! failed install, or a server that does not come up, fails the test with the
//! reason: these tests are never skipped.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::journey::verification_token_in;

/// The Python interpreter that runs the server (and pip).
const PYTHON: &str = "python3";
/// How long the server may take to answer its first greeting.
const START_TIMEOUT_MS: u64 = 30_000;
/// Attempts to start on a fresh free port (another process may take the port
/// between choosing it and the server binding it).
const START_ATTEMPTS: u32 = 3;
/// How long [`SmtpServer::wait_for_mail_to`] waits by default.
pub const MAIL_TIMEOUT_MS: u64 = 30_000;
/// Largest message read from the Maildir, in bytes; a larger one fails the test.
const MAX_MAIL_BYTES: u64 = 1024 * 1024;
/// Most bytes of the server's own output shown when it fails to start.
const MAX_LOG_BYTES_SHOWN: usize = 4_000;

/// An aiosmtpd handler that decides some replies by a script, and otherwise
/// delivers into the Maildir like `aiosmtpd.handlers.Mailbox` (it is one). The
/// SMTP protocol is still aiosmtpd's own: only the hook's answers change.
const SCRIPTED_HANDLER: &str = r#"
from aiosmtpd.handlers import Mailbox


class Scripted(Mailbox):
    def __init__(self, mail_dir, script, argument, rcpt_log):
        super().__init__(mail_dir)
        self.script = script
        self.argument = argument
        self.rcpt_log = rcpt_log
        self.rcpts = 0

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 4:
            parser.error("maildir, script, argument and RCPT log are required")
        return cls(*args)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts += 1
        with open(self.rcpt_log, "a") as log:
            log.write("rcpt\n")
        if self.script == "busy-first" and self.rcpts <= int(self.argument):
            return "451 4.3.2 try again later"
        if self.script == "reject-rcpt":
            return self.argument.replace("{rcpt}", address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.script == "reject-data":
            text = envelope.content.decode("utf8", errors="replace")
            echo = next((line for line in text.splitlines() if "token=" in line), "")
            return "554 5.7.1 rejected for %s: %s" % (",".join(envelope.rcpt_tos), echo)
        return await super().handle_DATA(server, session, envelope)
"#;

/// How a scripted server ([`SmtpServer::start_replying`]) answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replies {
    /// `RCPT` is answered `451` in the first `n` transactions, then accepted.
    BusyFirst(usize),
    /// Every `RCPT` is answered with this line (`{rcpt}` → the address).
    RejectRecipients(String),
    /// The end of `DATA` is answered `554`, echoing the recipients and the
    /// body's line holding `token=` (as careless servers do).
    RejectData,
}

/// Makes sure `aiosmtpd` can be imported, installing it with pip if needed;
/// runs once per test process. Panics with the reason when it cannot.
fn ensure_aiosmtpd() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = INSTALLED.get_or_init(|| {
        if importable() {
            return Ok(());
        }
        let output = Command::new(PYTHON)
            .args(["-m", "pip", "install", "--quiet", "aiosmtpd"])
            .env("PIP_NO_INPUT", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{PYTHON} -m pip`: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`{PYTHON} -m pip install --quiet aiosmtpd` failed ({}): {}",
                output.status,
                tail(&String::from_utf8_lossy(&output.stderr))
            ));
        }
        if importable() {
            Ok(())
        } else {
            Err(format!(
                "aiosmtpd was installed but `{PYTHON}` cannot import it"
            ))
        }
    });
    if let Err(reason) = outcome {
        panic!("the SMTP server for this test is not available: {reason}");
    }
}

fn importable() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last [`MAX_LOG_BYTES_SHOWN`] bytes of `text`, on a character boundary.
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(MAX_LOG_BYTES_SHOWN);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim()
}

fn free_loopback_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running `aiosmtpd`, killed on drop.
pub struct SmtpServer {
    child: Child,
    pub addr: SocketAddr,
    /// Holds `maildir/` (the delivered mail) and the server's log.
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts a server on a free loopback port and waits until it greets.
    pub fn start() -> Self {
        Self::start_handler(None)
    }

    /// Starts a server whose handler answers by `replies` (see [`Replies`]).
    pub fn start_replying(replies: Replies) -> Self {
        Self::start_handler(Some(replies))
    }

    /// How many `RCPT` commands a scripted server received.
    pub fn rcpt_commands(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("rcpt.log"))
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }

    fn start_handler(replies: Option<Replies>) -> Self {
        ensure_aiosmtpd();
        let dir = tempfile::tempdir().expect("temp dir for the SMTP server");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_loopback_port()));
            match Self::spawn(dir.path(), addr, replies.as_ref()) {
                Ok(child) => return Self { child, addr, dir },
                Err(reason) => failures.push(reason),
            }
        }
        panic!(
            "aiosmtpd did not start in {START_ATTEMPTS} attempts: {}",
            failures.join(" | ")
        );
    }

    fn spawn(dir: &Path, addr: SocketAddr, replies: Option<&Replies>) -> Result<Child, String> {
        let maildir = dir.join("maildir");
        let log_path = dir.join("aiosmtpd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut command = Command::new(PYTHON);
        command.args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()]);
        match replies {
            None => {
                command
                    .args(["-c", "aiosmtpd.handlers.Mailbox"])
                    .arg(&maildir);
            }
            Some(replies) => {
                std::fs::write(dir.join("nexus_scripted.py"), SCRIPTED_HANDLER)
                    .map_err(|e| format!("handler file: {e}"))?;
                let (script, argument) = match replies {
                    Replies::BusyFirst(n) => ("busy-first", n.to_string()),
                    Replies::RejectRecipients(line) => ("reject-rcpt", line.clone()),
                    Replies::RejectData => ("reject-data", String::new()),
                };
                command
                    .env("PYTHONPATH", dir)
                    .args(["-c", "nexus_scripted.Scripted"])
                    .arg(&maildir)
                    .args([script, &argument])
                    .arg(dir.join("rcpt.log"));
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run `{PYTHON} -m aiosmtpd`: {e}"))?;
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        loop {
            if greets(addr) {
                return Ok(child);
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let what = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("did not greet within {START_TIMEOUT_MS} ms"),
                };
                return Err(format!("aiosmtpd on {addr} {what}: {}", tail(&log)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `smtp://127.0.0.1:<port>`, for `NEXUS_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Every delivered message (headers and body, as stored), in delivery order.
    pub fn mails(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir().join(sub)).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .collect();
        // Each file is written once, when delivered: its modification time
        // orders the deliveries (the name breaks ties).
        files.sort_by_cached_key(|path| {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            (modified, path.clone())
        });
        files.iter().map(|path| read_mail(path)).collect()
    }

    /// The delivered messages addressed to `address` (the envelope recipient
    /// or a `To:` header naming exactly that address), in delivery order.
    pub fn mails_to(&self, address: &str) -> Vec<String> {
        self.mails()
            .into_iter()
            .filter(|mail| addressed_to(mail, address))
            .collect()
    }

    /// Waits for a message to `address` that `matches`, and returns it.
    pub fn wait_for_mail_to(&self, address: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_millis(MAIL_TIMEOUT_MS);
        loop {
            let mails = self.mails_to(address);
            if let Some(mail) = mails.iter().find(|m| matches(m)) {
                return mail.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no matching mail for {address} over SMTP within {MAIL_TIMEOUT_MS} ms \
                 ({} mails to it)",
                mails.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The verification token from the mail to `address` that came over SMTP.
    pub fn verification_token(&self, address: &str) -> String {
        let mail = self.wait_for_mail_to(address, |m| verification_token_in(m).is_some());
        verification_token_in(&mail).expect("the mail just matched")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once something on `addr` answers with an SMTP greeting (`220`).
fn greets(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return false;
    }
    // One line, at most a few hundred bytes.
    let mut greeting = String::new();
    BufReader::new((&stream).take(512))
        .read_line(&mut greeting)
        .is_ok_and(|_| greeting.starts_with("220"))
}

fn read_mail(path: &Path) -> String {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size <= MAX_MAIL_BYTES,
        "a delivered mail of {size} bytes (over {MAX_MAIL_BYTES})"
    );
    // A message read while the server renames it is simply read next round.
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The header section of `mail`, with folded lines joined.
fn headers(mail: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in mail.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    out
}

fn addressed_to(mail: &str, address: &str) -> bool {
    headers(mail)
        .iter()
        .filter(|(name, _)| name == "to" || name == "x-rcptto")
        .flat_map(|(_, value)| {
            value.split(|c: char| matches!(c, ',' | '<' | '>' | ';') || c.is_whitespace())
        })
        .any(|word| word.eq_ignore_ascii_case(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_is_addressed_to_exact_recipients_only() {
        let mail = "X-RcptTo: bob@example.com\r\nTo: Alice\r\n <alice@example.com>\r\n\
                    Subject: hi\r\n\r\nTo: carol@example.com\r\n";
        assert!(addressed_to(mail, "alice@example.com"));
        assert!(addressed_to(mail, "BOB@example.com"));
        assert!(!addressed_to(mail, "lice@example.com"));
        assert!(
            !addressed_to(mail, "carol@example.com"),
            "body lines are not headers"
        );
    }

    #[test]
    fn the_tail_keeps_whole_characters() {
        let text = format!("{}é", "x".repeat(MAX_LOG_BYTES_SHOWN));
        assert!(tail(&text).ends_with('é'));
        assert!(tail(&text).len() <= MAX_LOG_BYTES_SHOWN);
    }
}

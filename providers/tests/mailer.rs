//! The mailer through a real SMTP connection to a small SMTP server started by
//! each test (RFC 5321: EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET,
//! NOOP, QUIT), and through the outbox folder.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::money::Micros;
use nexus_providers::mailer::{
    Mail, MailError, MailKind, MailSettings, MailTransport, Mailer, MailerConfig, Recipient,
    RetryPolicy,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------
// Every log line of the test binary, for the redaction test.

static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

struct Capture;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

fn push_line(line: String) {
    LINES
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap()
        .push(line);
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Fields(format!("span {}", span.metadata().name()));
        span.record(&mut fields);
        push_line(fields.0);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut fields = Fields("record".into());
        values.record(&mut fields);
        push_line(fields.0);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut fields);
        push_line(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
    });
}

fn log_lines() -> Vec<String> {
    LINES
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap()
        .clone()
}

// ---------------------------------------------------------------------------
// The SMTP server.

#[derive(Clone, Debug)]
enum Script {
    Accept,
    /// RCPT is answered 451 in the first `n` transactions, then accepted.
    BusyFirst(usize),
    /// RCPT is always answered with this line (`{rcpt}` → the address).
    RejectRcpt(&'static str),
    /// The end of DATA is answered 554, echoing the body's line holding `token=`.
    RejectData,
    /// Accepts connections and never answers.
    Silent,
}

#[derive(Clone, Debug)]
struct Captured {
    from: String,
    to: Vec<String>,
    data: String,
}

#[derive(Debug)]
struct ServerState {
    script: Script,
    rcpt_commands: usize,
    messages: Vec<Captured>,
}

struct SmtpServer {
    port: u16,
    state: Arc<Mutex<ServerState>>,
}

impl SmtpServer {
    async fn start(script: Script) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ServerState {
            script,
            rcpt_commands: 0,
            messages: Vec::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        SmtpServer { port, state }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn messages(&self) -> Vec<Captured> {
        self.state.lock().unwrap().messages.clone()
    }

    fn rcpt_commands(&self) -> usize {
        self.state.lock().unwrap().rcpt_commands
    }
}

/// The address inside `MAIL FROM:<…>` / `RCPT TO:<…>`.
fn path_of(argument: &str) -> String {
    let start = argument.find('<').map_or(0, |i| i + 1);
    let end = argument[start..]
        .find('>')
        .map_or(argument.len(), |i| start + i);
    argument[start..end].to_owned()
}

async fn session(stream: TcpStream, state: Arc<Mutex<ServerState>>) {
    let script = state.lock().unwrap().script.clone();
    if let Script::Silent = script {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(stream);
        return;
    }
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let _ = writer.write_all(b"220 smtp.test ESMTP ready\r\n").await;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO ") {
            "250-smtp.test greets you\r\n250-8BITMIME\r\n250 SIZE 10485760".into()
        } else if upper.starts_with("HELO ") {
            "250 smtp.test".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(path_of(&command[10..]));
            to.clear();
            "250 2.1.0 sender ok".into()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = path_of(&command[8..]);
            let mut state = state.lock().unwrap();
            state.rcpt_commands += 1;
            let transaction = state.rcpt_commands;
            if from.is_none() {
                "503 5.5.1 MAIL first".into()
            } else {
                match &state.script {
                    Script::BusyFirst(n) if transaction <= *n => "451 4.3.2 try again later".into(),
                    Script::RejectRcpt(answer) => answer.replace("{rcpt}", &rcpt),
                    _ => {
                        to.push(rcpt);
                        "250 2.1.5 recipient ok".into()
                    }
                }
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                "503 5.5.1 RCPT first".into()
            } else {
                if writer
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    // Dot-unstuffing (RFC 5321 4.5.2).
                    let line = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(line);
                }
                let captured = Captured {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                };
                let mut state = state.lock().unwrap();
                if let Script::RejectData = state.script {
                    let echo = captured
                        .data
                        .lines()
                        .find(|l| l.contains("token="))
                        .unwrap_or("")
                        .to_owned();
                    format!("554 5.7.1 rejected for {}: {echo}", captured.to.join(","))
                } else {
                    state.messages.push(captured);
                    "250 2.0.0 queued".into()
                }
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 2.0.0 reset".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            let _ = writer.write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "502 5.5.2 command not recognized".into()
        };
        if writer
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Reading messages.

/// Headers (unfolded, names lowercased) and the body of an RFC 5322 message;
/// checks the line ends and lengths on the way.
fn parse_message(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("a blank line after the headers");
    for line in raw.split("\r\n") {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "bare CR or LF"
        );
        assert!(line.len() <= 998, "line over 998 octets");
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a folded line follows a header");
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':').expect("a header line");
            assert!(
                !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)),
                "header name {name:?}"
            );
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

// ---------------------------------------------------------------------------

const TOKEN: &str = "vT0k3n_Q8s-2xYz9LmNoPqRsTuVwXyZ0123456789ab";

fn settings() -> MailSettings {
    MailSettings {
        from: "Nexus <no-reply@nexus.test>".into(),
        public_url: "https://nexus.test/".into(),
        service_name: "Nexus".into(),
    }
}

fn config(transport: MailTransport) -> MailerConfig {
    let mut config = MailerConfig::new(transport, settings());
    config.retry = RetryPolicy {
        max_attempts: 8,
        first_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(200),
    };
    config.smtp_timeout = Duration::from_secs(5);
    config
}

fn smtp(server: &SmtpServer) -> MailTransport {
    MailTransport::Smtp {
        url: server.url(),
        credentials: None,
    }
}

fn to(address: &str) -> Recipient {
    Recipient::parse(address).unwrap()
}

fn verification(address: &str) -> Mail {
    Mail::Verification {
        to: to(address),
        token: TOKEN.into(),
        expires_at: Some(DateTime::from_timestamp(1_900_000_000, 0).unwrap()),
    }
}

async fn idle(mailer: &Mailer) {
    tokio::time::timeout(Duration::from_secs(30), mailer.idle())
        .await
        .expect("the mailer finishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_mail_arrives_with_its_link_and_token_line() {
    capture_logs();
    let server = SmtpServer::start(Script::Accept).await;
    let mailer = Mailer::start(config(smtp(&server))).unwrap();
    mailer.send(verification("alice@example.com")).unwrap();
    idle(&mailer).await;

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.from, "no-reply@nexus.test");
    assert_eq!(message.to, ["alice@example.com"]);
    let (headers, body) = parse_message(&message.data);
    assert_eq!(header(&headers, "to"), "alice@example.com");
    assert_eq!(header(&headers, "from"), "Nexus <no-reply@nexus.test>");
    assert_eq!(
        header(&headers, "subject"),
        "Confirm your e-mail address for Nexus"
    );
    assert_eq!(header(&headers, "content-transfer-encoding"), "7bit");
    assert!(header(&headers, "content-type").starts_with("text/plain"));
    assert!(header(&headers, "message-id").ends_with("@nexus.test>"));
    DateTime::parse_from_rfc2822(header(&headers, "date")).expect("an RFC 5322 date");
    let lines: Vec<&str> = body.split("\r\n").collect();
    assert!(
        lines.contains(&format!("https://nexus.test/verify?token={TOKEN}").as_str()),
        "{body}"
    );
    assert!(
        lines.contains(&TOKEN),
        "the token on a line of its own: {body}"
    );

    let report = mailer.report();
    assert_eq!((report.sent, report.retried, report.failed), (1, 0, 0));
    assert_eq!(report.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_starting_with_a_dot_survive_the_smtp_transfer() {
    capture_logs();
    let server = SmtpServer::start(Script::Accept).await;
    let mailer = Mailer::start(config(smtp(&server))).unwrap();
    let summary = ".hidden files are now listed\n..two dots\n.\nthe line above is one dot";
    mailer
        .send(Mail::PolicyChange {
            to: to("dora@example.com"),
            title: "Privacy policy v2".into(),
            summary: summary.into(),
            effective_at: Utc::now() + chrono::Duration::days(30),
            url: Some("https://nexus.test/privacy".into()),
        })
        .unwrap();
    idle(&mailer).await;
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let (headers, body) = parse_message(&messages[0].data);
    assert!(header(&headers, "subject").starts_with("Nexus: Privacy policy v2 (from "));
    assert!(body.contains(&summary.replace('\n', "\r\n")), "{body}");
    assert!(body.contains("The full text: https://nexus.test/privacy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_is_retried_then_sent() {
    capture_logs();
    let server = SmtpServer::start(Script::BusyFirst(2)).await;
    let mailer = Mailer::start(config(smtp(&server))).unwrap();
    mailer
        .send(Mail::DepositConfirmation {
            to: to("erin@example.com"),
            deposit: DepositId::new(),
            invoiced: Micros::from_usd(10),
            credited: Micros(12_500_000),
            late: true,
        })
        .unwrap();
    idle(&mailer).await;
    assert_eq!(server.rcpt_commands(), 3, "451, 451, then accepted");
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let (headers, body) = parse_message(&messages[0].data);
    assert_eq!(
        header(&headers, "subject"),
        "Nexus: deposit of 12.50 USD credited"
    );
    assert!(body.contains("Invoiced: 10.00 USD"), "{body}");
    assert!(body.contains("More than the invoice arrived"), "{body}");
    assert!(body.contains("after the invoice expired"), "{body}");
    let report = mailer.report();
    assert_eq!((report.sent, report.retried, report.failed), (1, 2, 0));
    assert!(report.failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_ends_in_the_report_after_the_bounded_attempts() {
    capture_logs();
    let server = SmtpServer::start(Script::RejectRcpt(
        "550 5.1.1 <{rcpt}>: mailbox unavailable",
    ))
    .await;
    let mut config = config(smtp(&server));
    config.retry.max_attempts = 3;
    let mailer = Mailer::start(config).unwrap();
    let effective_at = Utc::now() + chrono::Duration::days(30);
    mailer
        .send(Mail::DeletionScheduled {
            to: to("frank.ghost@example.com"),
            effective_at,
        })
        .unwrap();
    idle(&mailer).await;
    assert_eq!(server.rcpt_commands(), 3, "exactly the bounded attempts");
    assert!(server.messages().is_empty());
    let report = mailer.report();
    assert_eq!((report.sent, report.retried, report.failed), (0, 2, 1));
    let failure = &report.failures[&MailKind::DeletionScheduled];
    assert_eq!(failure.count, 1);
    assert_eq!(failure.last_recipient, "f***@example.com");
    assert!(failure.last_error.contains("550"), "{}", failure.last_error);
    assert!(
        failure.last_error.contains("f***@example.com"),
        "{}",
        failure.last_error
    );
    assert!(
        !failure.last_error.contains("frank.ghost"),
        "{}",
        failure.last_error
    );
    assert_eq!(report.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_a_typed_error_and_counts_it() {
    capture_logs();
    let server = SmtpServer::start(Script::Silent).await;
    let mut config = config(smtp(&server));
    config.queue_capacity = 2;
    config.smtp_timeout = Duration::from_secs(60);
    let mailer = Mailer::start(config).unwrap();
    mailer.send(verification("gina@example.com")).unwrap();
    mailer.send(verification("hank@example.com")).unwrap();
    assert_eq!(
        mailer.send(verification("ivan@example.com")),
        Err(MailError::QueueFull { capacity: 2 })
    );
    let report = mailer.report();
    assert_eq!(report.pending, 2);
    assert_eq!(report.rejected_queue_full, 1);

    // Refused up front, without using the queue.
    assert_eq!(
        Recipient::parse("not an address"),
        Err(MailError::InvalidAddress)
    );
    assert_eq!(
        mailer.send(Mail::PolicyChange {
            to: to("jill@example.com"),
            title: "Terms".into(),
            summary: "Shorter notice.".into(),
            effective_at: Utc::now() + chrono::Duration::days(13),
            url: None,
        }),
        Err(MailError::NoticeTooShort)
    );
    assert_eq!(mailer.report().pending, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_holds_one_parseable_eml_file_per_mail() {
    capture_logs();
    let data = tempfile::tempdir().unwrap();
    let mailer = Mailer::start(config(MailTransport::outbox_in(data.path()))).unwrap();
    let mails = [
        verification("kim@example.com"),
        Mail::DepositConfirmation {
            to: to("kim@example.com"),
            deposit: DepositId::new(),
            invoiced: Micros::from_usd(10),
            credited: Micros::from_usd(4),
            late: false,
        },
        Mail::DeletionScheduled {
            to: to("kim@example.com"),
            effective_at: Utc::now() + chrono::Duration::days(30),
        },
        Mail::DeletionDone {
            to: to("kim@example.com"),
        },
        Mail::PolicyChange {
            to: to("kim@example.com"),
            title: "Privacy policy, new retention periods".into(),
            summary: "Anonymous orders are kept 90 days.\nCaf\u{e9} cr\u{e8}me: accents are fine."
                .into(),
            effective_at: Utc::now() + chrono::Duration::days(15),
            url: None,
        },
    ];
    for mail in mails {
        mailer.send(mail).unwrap();
    }
    idle(&mailer).await;
    assert_eq!(mailer.report().sent, 5);

    let outbox = data.path().join("outbox");
    let mut names: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names.iter().all(|n| n.ends_with(".eml")),
        "no temporary file left: {names:?}"
    );
    assert!(
        names.iter().all(|n| !n.contains("kim")),
        "no address in a file name"
    );
    let mut kinds = Vec::new();
    for name in &names {
        let path = outbox.join(name);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let raw = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let (headers, body) = parse_message(&raw);
        assert_eq!(header(&headers, "to"), "kim@example.com");
        assert_eq!(header(&headers, "mime-version"), "1.0");
        DateTime::parse_from_rfc2822(header(&headers, "date")).expect("an RFC 5322 date");
        assert!(!header(&headers, "subject").is_empty());
        assert!(!header(&headers, "message-id").is_empty());
        let encoding = header(&headers, "content-transfer-encoding");
        if name.contains("verification") {
            assert_eq!(encoding, "7bit");
            let lines: Vec<&str> = body.split("\r\n").collect();
            assert!(lines.contains(&TOKEN));
            assert!(lines.contains(&format!("https://nexus.test/verify?token={TOKEN}").as_str()));
        }
        if name.contains("policy_change") {
            assert_eq!(encoding, "quoted-printable", "non-ASCII text is encoded");
        } else {
            assert!(body.is_ascii());
        }
        kinds.push(name.split('-').nth(1).unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "deletion_done",
            "deletion_scheduled",
            "deposit_confirmation",
            "policy_change",
            "verification"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_holds_an_address_or_a_token() {
    capture_logs();
    // The server echoes the recipient and the link (with the token) in its
    // refusal: the mailer's logs and report must not.
    let server = SmtpServer::start(Script::RejectData).await;
    let mut config = config(smtp(&server));
    config.retry.max_attempts = 2;
    let mailer = Mailer::start(config).unwrap();
    let address = "Lara.Secret@Example.com";
    mailer.send(verification(address)).unwrap();
    idle(&mailer).await;
    let report = mailer.report();
    assert_eq!(report.failed, 1);
    let failure = &report.failures[&MailKind::Verification];
    assert!(failure.last_error.contains("554"), "{}", failure.last_error);
    // The echo was there, scrubbed: the address redacted, the token removed.
    assert!(
        failure.last_error.contains("L***@Example.com")
            && failure.last_error.contains("token=[redacted]"),
        "{}",
        failure.last_error
    );

    // Queue-full refusals are logged too, redacted.
    let silent = SmtpServer::start(Script::Silent).await;
    let mut full = MailerConfig::new(smtp(&silent), settings());
    full.queue_capacity = 1;
    let full = Mailer::start(full).unwrap();
    full.send(verification("mona.secret@example.com")).unwrap();
    assert!(full.send(verification("nina.secret@example.com")).is_err());

    let lines = log_lines();
    let ours: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("L***@Example.com") || l.contains("n***@example.com"))
        .collect();
    assert!(
        ours.iter()
            .any(|l| l.contains("given up") && l.contains("verification")),
        "{ours:#?}"
    );
    assert!(
        ours.iter().any(|l| l.contains("queue is full")),
        "{ours:#?}"
    );
    let forbidden = [
        "lara.secret",
        "mona.secret",
        "nina.secret",
        &TOKEN.to_ascii_lowercase(),
    ];
    for line in &lines {
        let lower = line.to_ascii_lowercase();
        for secret in forbidden {
            assert!(!lower.contains(secret), "{line}");
        }
    }
    for text in [&failure.last_error, &failure.last_recipient] {
        let lower = text.to_ascii_lowercase();
        for secret in forbidden {
            assert!(!lower.contains(secret), "{text}");
        }
    }
    // Debug output of a mail is redacted too.
    let shown = format!("{:?}", verification(address));
    assert!(
        !shown.contains("Secret") && !shown.contains(TOKEN),
        "{shown}"
    );
}

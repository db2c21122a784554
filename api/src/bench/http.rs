//! `nexus bench http`: the HTTP API under load from a client on the same machine.
//!
//! Starts the real server (this binary, `serve`) on a temp data dir and a free
//! loopback port, with rate limits off and the simulated upstreams; makes a
//! verified, funded customer with an API key; then runs fixed-length workloads
//! over keep-alive HTTP/1.1 connections and reports throughput and latency
//! percentiles:
//!
//! - `get-order`: `GET /v1/orders/{id}` of one of the customer's orders;
//! - `place-order`: `POST /v1/orders` with a fresh `Idempotency-Key` each time
//!   (the answer waits for the number, as a client sees it).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Args, Clone)]
pub struct HttpBench {
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections for `GET /v1/orders/{id}`.
    #[arg(long, default_value_t = 64)]
    get_connections: usize,
    /// Connections for `POST /v1/orders` (each waits for its number).
    #[arg(long, default_value_t = 512)]
    place_connections: usize,
    /// Customers placing orders (connections are spread over them); each has
    /// its own wallet.
    #[arg(long, default_value_t = 32)]
    customers: usize,
    /// Which workloads to run.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["get-order".to_string(), "place-order".to_string()])]
    workloads: Vec<String>,
    /// Simulated upstream faults on (`on`: the embedded default's mix of latencies
    /// and failures; `off`: all healthy).
    #[arg(long, default_value = "on")]
    sim_faults: String,
    /// Where the temp data dir goes (default: the system temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// At most this many connections per workload.
const MAX_CONNECTIONS: usize = 4_096;
/// How long the server may take to stop after SIGTERM (its own grace is 30 s).
const STOP_GRACE: Duration = Duration::from_secs(45);
/// Longest wait for one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many customers.
const MAX_CUSTOMERS: usize = 256;
/// Longest answer head or body read by the client.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
pub(super) const PASSWORD: &str = "bench password, long enough";

pub fn run(args: HttpBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    anyhow::ensure!(
        (1..=MAX_CUSTOMERS).contains(&args.customers),
        "--customers must be between 1 and {MAX_CUSTOMERS}"
    );
    for c in [args.get_connections, args.place_connections] {
        anyhow::ensure!(
            (1..=MAX_CONNECTIONS).contains(&c),
            "connections must be between 1 and {MAX_CONNECTIONS}"
        );
    }
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("a temp data dir")?;
    let mode = match args.sim_faults.as_str() {
        "on" => ServerMode::NoLimits { sim_faults: true },
        "off" => ServerMode::NoLimits { sim_faults: false },
        other => anyhow::bail!("--sim-faults must be on or off, not {other}"),
    };
    let mut server = ServerProcess::start(dir.path(), mode)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(bench(&args, server.addr, dir.path()));
    server.stop();
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: &HttpBench, addr: std::net::SocketAddr, data: &Path) -> anyhow::Result<()> {
    let mut setups = Vec::new();
    for n in 0..args.customers {
        let data = data.to_path_buf();
        setups.push(tokio::spawn(async move {
            let key = customer(addr, &data, &format!("bench-{n}@example.com"), "").await?;
            let auth = format!("Authorization: Bearer {key}\r\n");
            fund(addr, &auth, "100000.00").await?;
            anyhow::Ok(auth)
        }));
    }
    let mut auths = Vec::new();
    for setup in setups {
        auths.push(setup.await.context("a customer's set-up")??);
    }
    let auth = auths[0].clone();
    let placed = request(
        addr,
        "POST",
        "/v1/orders",
        &format!("{auth}Idempotency-Key: bench-first\r\n"),
        r#"{"service":"tg","country":"GB","channel":"sms"}"#,
    )
    .await?;
    anyhow::ensure!(
        placed.0 == 201,
        "placing an order: {} {}",
        placed.0,
        placed.1
    );
    let order: serde_json::Value = serde_json::from_str(&placed.1)?;
    let order_id = order["id"].as_str().context("an order id")?.to_owned();
    let duration = Duration::from_secs(args.seconds);
    println!(
        "nexus bench http: {} s per workload, server on {addr}, simulated faults {}, {} customers",
        args.seconds, args.sim_faults, args.customers
    );
    println!("| workload | connections | requests | req/s | p50 ms | p99 ms | max ms | statuses |");
    println!("|---|---|---|---|---|---|---|---|");
    for workload in &args.workloads {
        let report = match workload.as_str() {
            "get-order" => {
                let path = format!("/v1/orders/{order_id}");
                let auth = auth.clone();
                load(addr, args.get_connections, duration, move |_| {
                    ("GET", path.clone(), auth.clone(), String::new())
                })
                .await?
            }
            "place-order" => {
                let auths = auths.clone();
                load(addr, args.place_connections, duration, move |n| {
                    let auth = &auths[(n % auths.len() as u64) as usize];
                    (
                        "POST",
                        "/v1/orders".to_string(),
                        format!("{auth}Idempotency-Key: bench-{n}\r\n"),
                        r#"{"service":"tg","country":"GB","channel":"sms"}"#.to_string(),
                    )
                })
                .await?
            }
            other => anyhow::bail!("unknown workload {other}: get-order or place-order"),
        };
        println!(
            "| {workload} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            report.connections,
            report.requests,
            report.per_second(),
            report.percentile_ms(0.50),
            report.percentile_ms(0.99),
            report.percentile_ms(1.0),
            report.statuses()
        );
        for (status, body) in &report.samples {
            println!("  first {status} answer: {body}");
        }
    }
    Ok(())
}

struct Report {
    connections: usize,
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    statuses: std::collections::BTreeMap<u16, u64>,
    /// The first body seen for each status other than 200 and 201.
    samples: std::collections::BTreeMap<u16, String>,
}

impl Report {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies_us.len() as f64 * q).ceil() as usize)
            .clamp(1, self.latencies_us.len());
        f64::from(self.latencies_us[rank - 1]) / 1_000.0
    }

    fn statuses(&self) -> String {
        self.statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

type MakeRequest = dyn Fn(u64) -> (&'static str, String, String, String) + Send + Sync;

/// `connections` keep-alive connections sending requests back to back for
/// `duration`; request `n` (numbered across connections) comes from `make`.
async fn load(
    addr: std::net::SocketAddr,
    connections: usize,
    duration: Duration,
    make: impl Fn(u64) -> (&'static str, String, String, String) + Send + Sync + 'static,
) -> anyhow::Result<Report> {
    let make: std::sync::Arc<MakeRequest> = std::sync::Arc::new(make);
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut statuses = std::collections::BTreeMap::new();
            let mut samples = std::collections::BTreeMap::new();
            let mut connection = Connection::open(addr).await?;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (method, path, headers, body) = make(n);
                let sent = Instant::now();
                let (status, answer) = tokio::time::timeout(
                    ANSWER_TIMEOUT,
                    connection.send(method, &path, &headers, &body),
                )
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {ANSWER_TIMEOUT:?}"))??;
                if !matches!(status, 200 | 201) {
                    samples.entry(status).or_insert(answer);
                }
                let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                latencies.push(micros);
                *statuses.entry(status).or_insert(0u64) += 1;
            }
            anyhow::Ok((latencies, statuses, samples))
        }));
    }
    let mut report = Report {
        connections,
        requests: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        statuses: Default::default(),
        samples: Default::default(),
    };
    for task in tasks {
        let (latencies, statuses, samples) = task.await.context("a load task")??;
        for (status, body) in samples {
            report.samples.entry(status).or_insert(body);
        }
        report.requests += latencies.len() as u64;
        report.latencies_us.extend(latencies);
        for (status, n) in statuses {
            *report.statuses.entry(status).or_insert(0) += n;
        }
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// One keep-alive HTTP/1.1 connection: answers must carry `Content-Length`.
pub(super) struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub(super) async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    pub(super) async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        // Read until the end of the head, then the body by its length.
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            anyhow::ensure!(
                self.buffer.len() < MAX_RESPONSE_BYTES,
                "answer head too long"
            );
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).context("answer head")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("a status code")?;
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .context("answers must carry Content-Length")?;
        anyhow::ensure!(length <= MAX_RESPONSE_BYTES, "answer body too long");
        while self.buffer.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&self.buffer[head_end..head_end + length]).into_owned();
        self.buffer.drain(..head_end + length);
        Ok((status, body))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    Connection::open(addr)
        .await?
        .send(method, path, headers, body)
        .await
}

/// Registers, verifies (the token from the outbox), logs in, makes an API key;
/// every request carries `headers` (e.g. the client's `X-Forwarded-For`).
pub(super) async fn customer(
    addr: std::net::SocketAddr,
    data: &Path,
    email: &str,
    headers: &str,
) -> anyhow::Result<String> {
    let credentials = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    let created = request(addr, "POST", "/v1/accounts", headers, &credentials).await?;
    anyhow::ensure!(created.0 == 202, "registering: {}", created.0);
    let token = verification_token(&data.join("outbox"), email).await?;
    let verified = request(
        addr,
        "POST",
        "/v1/accounts/verify",
        headers,
        &format!(r#"{{"token":"{token}"}}"#),
    )
    .await?;
    anyhow::ensure!(verified.0 == 200, "verifying: {}", verified.0);
    let cookie = session_cookie(addr, &credentials, headers).await?;
    let key = request(
        addr,
        "POST",
        "/v1/api-keys",
        &format!("{headers}Cookie: {cookie}\r\n"),
        "",
    )
    .await?;
    anyhow::ensure!(key.0 == 201, "creating an API key: {}", key.0);
    let key: serde_json::Value = serde_json::from_str(&key.1)?;
    Ok(key["key"].as_str().context("the key")?.to_owned())
}

pub(super) async fn session_cookie(
    addr: std::net::SocketAddr,
    credentials: &str,
    headers: &str,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{credentials}",
        credentials.len()
    );
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .and_then(|(_, v)| v.trim().split(';').next())
        .map(str::to_owned)
        .context("a session cookie")
}

async fn verification_token(outbox: &Path, email: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(entries) = std::fs::read_dir(outbox) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if !text.contains(email) {
                    continue;
                }
                if let Some(token) = text.lines().find_map(|l| {
                    l.split_once("/verify?token=")
                        .map(|(_, t)| t.trim().to_owned())
                }) {
                    return Ok(token);
                }
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no verification mail");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A deposit paid through the simulated gateway; waits until it is credited.
async fn fund(addr: std::net::SocketAddr, auth: &str, amount: &str) -> anyhow::Result<()> {
    let deposit = request(
        addr,
        "POST",
        "/v1/deposits",
        auth,
        &format!(r#"{{"amount":"{amount}"}}"#),
    )
    .await?;
    anyhow::ensure!(deposit.0 == 201, "a deposit: {} {}", deposit.0, deposit.1);
    let deposit: serde_json::Value = serde_json::from_str(&deposit.1)?;
    let id = deposit["id"].as_str().context("a deposit id")?;
    let paid = request(addr, "POST", &format!("/v1/dev/payments/{id}/pay"), "", "").await?;
    anyhow::ensure!(matches!(paid.0, 200 | 202), "paying: {}", paid.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let wallet = request(addr, "GET", "/v1/wallet", auth, "").await?;
        let wallet: serde_json::Value = serde_json::from_str(&wallet.1)?;
        if wallet["available"] != "0" && wallet["available"] != "0.00" {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the deposit was not credited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the server under test is set up.
#[derive(Clone, Copy)]
pub(super) enum ServerMode {
    /// Rate limits off, to measure throughput; simulated faults on or off.
    NoLimits { sim_faults: bool },
    /// The default limits, loopback trusted as a proxy (each client names its
    /// address in `X-Forwarded-For`), healthy simulated upstreams.
    DefaultLimitsBehindProxy,
}

/// The server under test, as a child process.
pub(super) struct ServerProcess {
    child: Child,
    pub(super) addr: std::net::SocketAddr,
}

impl ServerProcess {
    pub(super) fn start(data: &Path, mode: ServerMode) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("this binary's path")?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .env("NEXUS_DATA_DIR", data)
            .env("NEXUS_LISTEN", "127.0.0.1:0")
            .env("NEXUS_LOG", "warn,nexus=info")
            .env("NEXUS_SIM_CODE_DELAY_MS", "600000")
            .env("NEXUS_COOKIE_SECURE", "false");
        match mode {
            ServerMode::NoLimits { sim_faults } => command
                .env("NEXUS_RATE_KEY_PER_S", "0")
                .env("NEXUS_RATE_IP_PER_S", "0")
                .env("NEXUS_RATE_AUTH_PER_MIN", "0")
                .env("NEXUS_SIM_FAULTS", if sim_faults { "on" } else { "off" }),
            ServerMode::DefaultLimitsBehindProxy => command
                .env("NEXUS_TRUSTED_PROXIES", "127.0.0.1/32")
                .env("NEXUS_SIM_FAULTS", "off"),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nexus serve")?;
        let stderr = child.stderr.take().context("the server's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(addr) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .context("the server did not report its address")?
            .parse()
            .context("the server's address")?;
        Ok(Self { child, addr })
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_GRACE`].
    pub(super) fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("the server did not stop within {STOP_GRACE:?} of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

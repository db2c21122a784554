//! `nexus bench logins`: whether one account hammering the password routes
//! slows down other customers' sign-ins.
//!
//! Starts the real server with its default limits (the sign-in budget on) and
//! loopback trusted as a proxy, so that each simulated client has an address of
//! its own (`X-Forwarded-For`). Victims, each from its own address, sign in at
//! a steady pace within the budget; their sign-in latency is measured alone,
//! then while one account on `--attack-connections` connections (each from its
//! own address) sends `POST /v1/me/password` and `POST /v1/sessions` with wrong
//! passwords back to back. Reports both phases and the ratio of their
//! latencies; the issue's floor is a ratio of at most 2.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::http::{customer, session_cookie, Connection, ServerMode, ServerProcess, PASSWORD};
use super::stats::percentile_ms;

#[derive(Args)]
pub struct LoginsBench {
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Customers signing in, each from its own address.
    #[arg(long, default_value_t = 10)]
    victims: usize,
    /// Milliseconds between one victim's sign-ins (the default stays within the
    /// budget of 10 a minute).
    #[arg(long, default_value_t = 6_000)]
    victim_interval_ms: u64,
    /// The attacking account's connections.
    #[arg(long, default_value_t = 16)]
    attack_connections: usize,
    /// Where the temp data dir goes (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Most victims or attacking connections.
const MAX_CLIENTS: usize = 250;
const ATTACKER: &str = "attacker@example.com";

pub fn run(args: LoginsBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    for n in [args.victims, args.attack_connections] {
        anyhow::ensure!(
            (1..=MAX_CLIENTS).contains(&n),
            "--victims and --attack-connections: 1 to {MAX_CLIENTS}"
        );
    }
    anyhow::ensure!(
        args.victim_interval_ms >= 100,
        "--victim-interval-ms: at least 100"
    );
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("a temp data dir")?;
    let mut server = ServerProcess::start(dir.path(), ServerMode::DefaultLimitsBehindProxy)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(bench(&args, server.addr, dir.path()));
    server.stop();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The address victim `i` (or attacking connection `i`) comes from.
fn forwarded(group: u8, i: usize) -> String {
    format!(
        "X-Forwarded-For: 10.{group}.{}.{}\r\n",
        i / 250,
        i % 250 + 1
    )
}

fn victim_email(i: usize) -> String {
    format!("victim-{i}@example.com")
}

async fn bench(
    args: &LoginsBench,
    addr: std::net::SocketAddr,
    data: &std::path::Path,
) -> anyhow::Result<()> {
    for i in 0..args.victims {
        customer(addr, data, &victim_email(i), &forwarded(1, i)).await?;
    }
    customer(addr, data, ATTACKER, &forwarded(2, 0)).await?;
    let credentials = format!(r#"{{"email":"{ATTACKER}","password":"{PASSWORD}"}}"#);
    let cookie = session_cookie(addr, &credentials, &forwarded(2, 0)).await?;
    let duration = Duration::from_secs(args.seconds);
    println!(
        "nexus bench logins: {} s per phase, {} victims (one sign-in each per {} ms), \
         {} attacking connections on one account, server on {addr}",
        args.seconds, args.victims, args.victim_interval_ms, args.attack_connections
    );
    println!("| phase | victim sign-ins | p50 ms | p99 ms | max ms | victim statuses | attacker requests | attacker statuses |");
    println!("|---|---|---|---|---|---|---|---|");
    let quiet = victims(addr, args, duration).await?;
    print_row("alone", &quiet, &Tally::default());
    let attack = tokio::spawn(attacker(addr, args.attack_connections, cookie, duration));
    let loaded = victims(addr, args, duration).await?;
    let attack = attack.await.context("the attack task")??;
    print_row("under attack", &loaded, &attack);
    let ratio = |q| {
        percentile_ms(&loaded.latencies_us, q) / percentile_ms(&quiet.latencies_us, q).max(0.001)
    };
    println!(
        "victims' latency under attack / alone: p50 {:.2}×, p99 {:.2}×",
        ratio(0.5),
        ratio(0.99)
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_insert(0) += n;
        }
    }

    fn statuses(&self) -> String {
        self.statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn print_row(phase: &str, victims: &Tally, attacker: &Tally) {
    println!(
        "| {phase} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
        victims.latencies_us.len(),
        percentile_ms(&victims.latencies_us, 0.5),
        percentile_ms(&victims.latencies_us, 0.99),
        percentile_ms(&victims.latencies_us, 1.0),
        victims.statuses(),
        attacker.statuses.values().sum::<u64>(),
        attacker.statuses()
    );
}

/// Every victim signs in once per interval, the victims spread over it.
async fn victims(
    addr: std::net::SocketAddr,
    args: &LoginsBench,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let interval = Duration::from_millis(args.victim_interval_ms);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(args.victims);
    for i in 0..args.victims {
        let offset = interval.mul_f64(i as f64 / args.victims as f64);
        let headers = forwarded(1, i);
        let body = format!(
            r#"{{"email":"{}","password":"{PASSWORD}"}}"#,
            victim_email(i)
        );
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut next = started + offset;
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                let sent = Instant::now();
                let mut connection = Connection::open(addr).await?;
                let (status, _) = connection
                    .send("POST", "/v1/sessions", &headers, &body)
                    .await?;
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.latencies_us.push(micros);
                *tally.statuses.entry(status).or_insert(0) += 1;
                next += interval;
            }
            anyhow::Ok(tally)
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        all.add(task.await.context("a victim task")??);
    }
    all.latencies_us.sort_unstable();
    Ok(all)
}

/// One account's connections, each from its own address, alternating a
/// password change and a sign-in, both with a wrong password, back to back.
async fn attacker(
    addr: std::net::SocketAddr,
    connections: usize,
    cookie: String,
    duration: Duration,
) -> anyhow::Result<Tally> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let from = forwarded(2, i);
        let change = format!("{from}Cookie: {cookie}\r\n");
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut connection = Connection::open(addr).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let sent = if n.is_multiple_of(2) {
                    let body = r#"{"old_password":"not the password at all","new_password":"another long password"}"#;
                    connection.send("POST", "/v1/me/password", &change, body).await
                } else {
                    let body = format!(r#"{{"email":"{ATTACKER}","password":"a wrong password {n}"}}"#);
                    connection.send("POST", "/v1/sessions", &from, &body).await
                };
                // A connection the server closed (status 0 here) is opened again.
                let status = match sent {
                    Ok((status, _)) => status,
                    Err(_) => {
                        connection = Connection::open(addr).await?;
                        0
                    }
                };
                *tally.statuses.entry(status).or_insert(0) += 1;
                n += 1;
            }
            anyhow::Ok(tally)
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        all.add(task.await.context("an attacking task")??);
    }
    Ok(all)
}

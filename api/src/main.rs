//! The `nexus` binary: `serve`, `replay`, `audit`, `retention`, `verify`, `bench`.

mod audit;
mod bench;
mod bench_fulfilment;
mod bench_http;
mod config;
mod http;
mod replay;
mod retention;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the server and the rebuild allocate
/// per request and per event (docs/PERFORMANCE.md has the comparison).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "nexus",
    version,
    about = "Nexus: phone-verification backend on an event-sourced ledger"
)]
struct Cli {
    /// A TOML configuration file: upstreams, payment gateway, SMTP (see
    /// docs/nexus.example.toml). Without it, `serve` is the embedded default.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// The data directory (the store, vault key, outbox, usage log); overrides
    /// `NEXUS_DATA_DIR`. Default `./data`.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (embedded default: sled under ./data, simulated upstreams).
    Serve,
    /// Measure the log on this machine.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Walk the log's hash chain and report the first broken position.
    Verify,
    /// The finance audit: verify, balance, export (on a stopped server).
    Audit {
        #[command(subcommand)]
        what: audit::AuditCommand,
    },
    /// The retention sweeps: status, run, verify (on a stopped server).
    Retention {
        #[command(subcommand)]
        what: retention::RetentionCommand,
    },
    /// Drop a projection (every projection without a name) and rebuild it from the log.
    Replay {
        /// accounts, wallets, orders, catalog or retention.
        name: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nexus: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    if let Some(dir) = &cli.data_dir {
        // Before any thread starts: every setting is read from the environment.
        std::env::set_var("NEXUS_DATA_DIR", dir);
    }
    init_tracing();
    match cli.command {
        Command::Serve => {
            let mut settings = config::Config::from_env()?;
            // `--config FILE`, or the file named by NEXUS_CONFIG.
            let path = cli
                .config
                .clone()
                .or_else(|| std::env::var_os("NEXUS_CONFIG").map(std::path::PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty());
            if let Some(path) = &path {
                settings.file = Some(config::FileSettings::load(path)?);
            }
            serve::run(settings)
        }
        Command::Bench { what } => bench::run(what),
        Command::Verify => serve::verify(config::Config::from_env()?),
        Command::Replay { name } => replay::run(config::Config::from_env()?, name),
        Command::Audit { what } => audit::run(config::Config::from_env()?, what),
        Command::Retention { what } => retention::run(config::Config::from_env()?, what),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

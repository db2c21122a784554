//! The `nexus` binary: `serve`, `replay`, `audit`, `retention`, `verify`, `bench`.

mod audit;
mod bench;
mod cli;
mod config;
mod http;
mod replay;
mod retention;
mod serve;

use cli::Command;

/// mimalloc instead of the system allocator: the server and the rebuild allocate
/// per request and per event (docs/PERFORMANCE.md has the comparison).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let cli = cli::parse()?;
    init_tracing(&cli.log);
    match cli.command {
        Command::Serve { domain, server } => serve::run(config::Config::new(
            cli.store,
            domain,
            server,
            cli.config.as_deref(),
        )?),
        Command::Bench { what } => bench::run(what),
        Command::Verify => serve::verify(&cli.store),
        Command::Replay { name } => replay::run(cli.store, name),
        Command::Audit { what } => audit::run(cli.store, what),
        Command::Retention { what, domain } => retention::run(cli.store, &domain, what),
    }
}

/// `filter` in `tracing`'s env-filter syntax; one that does not parse is `info`.
fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

//! The `nexus` binary: `serve`, `replay`, `audit`, `retention`, `verify`, `db`, `bench`.

mod audit;
mod bench;
mod cli;
mod config;
mod db;
mod http;
mod replay;
mod retention;
mod serve;

use cli::Command;

/// mimalloc instead of the system allocator: the server and the rebuild allocate
/// per request and per event (docs/PERFORMANCE.md has the comparison).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Everything this process creates (the store, the read models, sessions, the
/// usage log, the outbox, key files) is readable by its owner only: files 0600,
/// directories 0700, whatever the inherited mask.
fn owner_only_files() {
    #[cfg(unix)]
    {
        let _previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nexus: {e:#}");
            // A data directory without a store is a usage error, as clap's.
            if e.downcast_ref::<config::NoStore>().is_some() {
                return std::process::ExitCode::from(2);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<std::process::ExitCode> {
    owner_only_files();
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
        Command::Db { what } => db::run(&cli.store, what),
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

//! `nexus db init|migrate|verify`: the PostgreSQL backend's set-up, the copy
//! of an embedded log into it, and its chain check.
//!
//! Addresses come from the environment only (they hold passwords, and a
//! command line is visible to every user of the machine):
//! `NEXUS_DATABASE_OWNER_URL`, the role that owns the schema (`init`,
//! `migrate`); `NEXUS_DATABASE_URL`, the role `nexus serve` connects as,
//! which `init` grants the runtime privileges to and `verify` reads as.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use nexus_core::log::{EventStore, PgLog, PgLogConfig};
use nexus_core::postgres::{init_schema, PgAddress};
use nexus_core::Store;

use crate::config::StoreSettings;

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create (or complete) the schema as the owner, and grant the runtime
    /// role (NEXUS_DATABASE_URL's user) exactly what serving needs.
    Init {
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Copy the embedded log (under the data directory, server stopped) into
    /// an empty PostgreSQL log: positions, ids and hashes unchanged.
    Migrate {
        /// The backend to copy to.
        #[arg(long, value_enum)]
        to: Target,
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Walk the PostgreSQL log's hash chain (as the runtime role).
    Verify {
        #[command(flatten)]
        database: DatabaseSettings,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    Postgres,
}

#[derive(Args)]
pub struct DatabaseSettings {
    /// The address `nexus serve` connects as (the runtime role); from the
    /// environment only.
    #[arg(
        long,
        env = "NEXUS_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// The schema owner's address (`db init`, `db migrate`); from the
    /// environment only.
    #[arg(
        long,
        env = "NEXUS_DATABASE_OWNER_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    owner_url: Option<String>,
}

impl DatabaseSettings {
    fn runtime(&self) -> anyhow::Result<PgAddress> {
        address(
            self.database_url.as_deref(),
            "NEXUS_DATABASE_URL",
            "the runtime role's",
        )
    }

    fn owner(&self) -> anyhow::Result<PgAddress> {
        address(
            self.owner_url.as_deref(),
            "NEXUS_DATABASE_OWNER_URL",
            "the schema owner's",
        )
    }
}

/// A database address from its variable; the error names the variable only.
fn address(url: Option<&str>, variable: &str, whose: &str) -> anyhow::Result<PgAddress> {
    let url = url.with_context(|| format!("{variable} is not set ({whose} address)"))?;
    PgAddress::parse(url).context(variable.to_owned())
}

pub fn run(store: &StoreSettings, command: DbCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match command {
            DbCommand::Init { database } => init(&database).await,
            DbCommand::Migrate { to: _, database } => migrate(store, &database).await,
            DbCommand::Verify { database } => verify(&database).await,
        }
    })
}

async fn init(database: &DatabaseSettings) -> anyhow::Result<ExitCode> {
    let owner = database.owner()?;
    let runtime = database.runtime()?;
    let role = runtime
        .user()
        .context("NEXUS_DATABASE_URL names no user (the runtime role)")?;
    let client = owner
        .connect()
        .await
        .with_context(|| format!("connecting to {}", owner.shown()))?;
    init_schema(&client, role).await?;
    println!(
        "ok: schema ready on {}; runtime role {role} may read and insert log rows",
        owner.shown()
    );
    Ok(ExitCode::SUCCESS)
}

async fn migrate(store: &StoreSettings, database: &DatabaseSettings) -> anyhow::Result<ExitCode> {
    let owner = database.owner()?;
    let source = Store::open(&store.existing_store()?)
        .context("opening the store (a running `nexus serve` holds it: stop the server first)")?;
    let mut client = owner
        .connect()
        .await
        .with_context(|| format!("connecting to {}", owner.shown()))?;
    let head = source.log.head();
    let mut last_shown = 0;
    let imported = nexus_core::log::import(&mut client, source.log.as_ref(), |position| {
        if position - last_shown >= 100_000 || position == head {
            eprintln!("copied {position} of {head} events");
            last_shown = position;
        }
    })
    .await?;
    let copy = PgLog::open(&PgLogConfig::new(owner)).await?;
    let report = copy.verify().await?;
    anyhow::ensure!(
        report.first_broken.is_none() && report.head_hash == imported.head_hash,
        "the copy does not verify: {:?}",
        report.first_broken
    );
    println!(
        "ok: {} events copied; head hash {} on both",
        imported.events,
        crate::serve::hex_string(&imported.head_hash)
    );
    Ok(ExitCode::SUCCESS)
}

async fn verify(database: &DatabaseSettings) -> anyhow::Result<ExitCode> {
    let log = PgLog::open(&PgLogConfig::new(database.runtime()?)).await?;
    let report = log.verify().await?;
    Ok(crate::serve::print_verify_report(&report))
}

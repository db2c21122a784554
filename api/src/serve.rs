//! `nexus serve`: opens the store, starts the fulfilment worker and the mailer,
//! and serves HTTP. With no configuration it is the embedded default: simulated
//! upstreams and payment gateway, mail as `.eml` files in `<data>/outbox/`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use nexus_core::domain::account::LookupKey;
use nexus_core::domain::accounts::{Accounts, AccountsConfig};
use nexus_core::domain::clock::SystemClock;
use nexus_core::domain::commerce::Commerce;
use nexus_core::domain::order::OrderPolicy;
use nexus_core::log::EventStore;
use nexus_core::Store;
use nexus_projections::{ReadModels, ReadModelsConfig, Runner, RunnerConfig};
use nexus_providers::catalog::Catalog;
use nexus_providers::fulfilment::{Fulfilment, FulfilmentConfig};
use nexus_providers::gateway::{IpnHandler, IpnSecret, SimulatedGateway};
use nexus_providers::mailer::{MailSettings, MailTransport, Mailer, MailerConfig};
use nexus_providers::notifier::Notifier;
use nexus_providers::router::{Router, RouterConfig};
use nexus_providers::simulator::{Simulator, SimulatorConfig};
use nexus_providers::upstream::Upstream;
use tracing::info;

use crate::config::Config;
use crate::http::sessions::SessionStore;
use crate::http::state::{AppState, Pricing};

/// How long shutdown waits for queued mail.
const MAIL_DRAIN: Duration = Duration::from_secs(5);

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    // One TLS stack for every client (reqwest, lettre): rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Store::open(&config.store()).context("opening the store")?;
    info!(head = store.log.head(), "log open");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config, store))?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config, store: Store) -> anyhow::Result<()> {
    let policy = OrderPolicy {
        ttl: chrono::Duration::seconds(config.order_ttl_secs),
        cancel_guard: chrono::Duration::seconds(config.cancel_guard_secs),
        delivery_window: chrono::Duration::seconds(config.delivery_window_secs),
        cashback_bp: config.cashback_bp,
    };
    let commerce = Arc::new(Commerce::new(
        store.log.clone(),
        store.vault.clone(),
        policy,
        Arc::new(SystemClock),
    ));
    let accounts = Arc::new(
        Accounts::new(
            store.log.clone(),
            store.vault.clone(),
            LookupKey::new(store.vault.derive_key("email-lookup")),
            AccountsConfig {
                bcrypt_cost: config.bcrypt_cost,
                ..AccountsConfig::default()
            },
        )
        .context("account settings")?,
    );

    // The embedded default: three simulated upstreams.
    let upstreams: Vec<Arc<dyn Upstream>> =
        SimulatorConfig::embedded_defaults(config.sim_faults, config.sim_code_delay_ms)
            .into_iter()
            .map(|c| Arc::new(Simulator::new(c)) as Arc<dyn Upstream>)
            .collect();
    let router = Arc::new(Router::new(upstreams, RouterConfig::default()));
    let worker = Arc::new(Fulfilment::new(
        store.log.clone(),
        store.vault.clone(),
        commerce.clone(),
        router.clone(),
        FulfilmentConfig::default(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker_task = tokio::spawn(worker.run(stopped));

    let transport = match &config.smtp_url {
        Some(url) => MailTransport::Smtp {
            url: url.clone(),
            credentials: None,
        },
        None => MailTransport::outbox_in(&config.data_dir),
    };
    let mail_settings = MailSettings {
        from: "Nexus <no-reply@nexus.example>".into(),
        public_url: config.public_url.clone(),
        service_name: "Nexus".into(),
    };
    let mailer = Mailer::start(MailerConfig::new(transport, mail_settings))
        .context("starting the mailer")?;

    // Mail from events (deposit confirmations, deletion notices).
    let notifier = Notifier::new(
        store.log.clone(),
        store.vault.clone(),
        accounts.clone(),
        mailer.clone(),
        config.data_dir.join("notifier.position"),
    );
    let notifier_task = tokio::spawn(notifier.run(stop.subscribe()));

    let ipn_secret =
        IpnSecret::new(store.vault.derive_key("payment-ipn").to_vec()).context("the IPN secret")?;
    let simulated =
        Arc::new(SimulatedGateway::new(ipn_secret.clone(), None).context("the simulated gateway")?);
    let ipn = IpnHandler::new(commerce.clone(), store.log.clone(), ipn_secret);
    let read_models = Arc::new(
        ReadModels::open(
            &ReadModelsConfig::in_data_dir(&config.data_dir),
            store.vault.clone(),
        )
        .context("opening the read models")?,
    );
    let runner = Arc::new(
        Runner::start(store.log.clone(), &read_models, RunnerConfig::default())
            .context("starting the projections")?,
    );
    let sessions = SessionStore::open(&config.data_dir.join("sessions"))
        .context("opening the session store")?;

    let state = web::Data::new(AppState {
        log: store.log.clone(),
        accounts,
        commerce,
        router,
        catalog: Catalog::shipped(),
        pricing: Pricing {
            markup_percent: config.markup_percent,
        },
        mailer: mailer.clone(),
        gateway: simulated.clone(),
        simulated_gateway: Some(simulated),
        ipn,
        sessions,
        read_models: read_models.clone(),
        runner: runner.clone(),
        cookie_secure: config.cookie_secure,
    });
    let state_for_shutdown = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(crate::http::configure)
    })
    .bind(config.listen)
    .with_context(|| format!("listening on {}", config.listen))?;
    for addr in server.addrs() {
        // Tests and scripts read this line to find the port.
        info!("listening on http://{addr}");
    }
    let served = server.run().await.context("serving HTTP");
    drop(state_for_shutdown);
    match Arc::try_unwrap(runner) {
        Ok(runner) => runner.stop().await,
        Err(_) => tracing::warn!("projections still referenced at shutdown; not stopped cleanly"),
    }
    if let Err(e) = read_models.flush() {
        tracing::warn!(error = %e, "flushing the read models");
    }
    // Graceful shutdown: the server finished its requests; stop the worker,
    // give queued mail a moment, make sure the log is on disk.
    let _ = stop.send(true);
    let _ = worker_task.await;
    let _ = notifier_task.await;
    let unsent = mailer.drain(MAIL_DRAIN).await;
    if unsent > 0 {
        tracing::warn!(unsent, "mail left unsent at shutdown");
    }
    store.log.sync().context("final sync of the log")?;
    served
}

pub fn verify(config: Config) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.store()).context("opening the store")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(store.log.verify())?;
    match report.first_broken {
        None => {
            println!(
                "ok: {} events, head hash {}",
                report.events_checked,
                hex_string(&report.head_hash)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(broken) => {
            println!(
                "BROKEN at position {}: {} ({} events verified before it)",
                broken.position, broken.reason, report.events_checked
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

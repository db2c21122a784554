//! `nexus serve`: opens the store, starts the fulfilment worker and the mailer,
//! and serves HTTP. With no configuration it is the embedded default: simulated
//! upstreams and payment gateway, mail as `.eml` files in `<data>/outbox/`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use nexus_core::domain::clock::SystemClock;
use nexus_core::domain::order::OrderPolicy;
use nexus_core::log::{AnyLog, EventStore};
use nexus_core::service::account_service::{Accounts, AccountsConfig, KeyRotation};
use nexus_core::service::commerce_service::Commerce;
use nexus_core::Store;
use nexus_projections::{ReadModels, ReadModelsConfig, Runner, RunnerConfig};
use nexus_providers::catalog::Catalog;
use nexus_providers::customer_webhooks::{CustomerWebhooks, CustomerWebhooksConfig};
use nexus_providers::fulfilment::{Fulfilment, FulfilmentConfig};
use nexus_providers::gateway::{
    IpnHandler, IpnSecret, NowPayments, NowPaymentsConfig, PaymentGateway, SimulatedGateway,
};
use nexus_providers::mailer::{MailSettings, MailTransport, Mailer, MailerConfig};
use nexus_providers::notifier::Notifier;
use nexus_providers::router::{Router, RouterConfig};
use nexus_providers::simulator::{CodeTiming, Simulator, SimulatorConfig};
use nexus_providers::upstream::Upstream;
use tracing::info;

use crate::config::{Config, DomainSettings, StoreSettings, TlsFiles};
use crate::http::gate::Gate;
use crate::http::limits::{self, RateLimits};
use crate::http::sessions::SessionStore;
use crate::http::state::{AppState, Pricing};
use crate::http::usage::UsageLog;
use crate::http::{Exports, EXPORT_IDLE_READER_TIMEOUT_S};

/// Upstream buys in flight at once (and as many polls, cancels and resends).
const BUYS_IN_FLIGHT: usize = 4_096;

/// How long shutdown waits for queued mail.
const MAIL_DRAIN: Duration = Duration::from_secs(5);
/// How long in-flight requests may run on after a stop signal (long polls wait
/// up to 60 s; past the grace they are cut).
const SHUTDOWN_GRACE_SECS: u64 = 30;

/// The HTTPS listener's settings: rustls with ring, the certificate chain and
/// key from PEM files.
fn tls_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&files.cert_chain)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", files.cert_chain.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "no certificate in {}",
        files.cert_chain.display()
    );
    // The key's content never goes into an error message.
    let key = PrivateKeyDer::from_pem_file(&files.private_key).with_context(|| {
        format!(
            "reading the private key from {}",
            files.private_key.display()
        )
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not make a valid pair")
}

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    let data_dir = &config.store.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    owner_only_dir(data_dir)?;
    // One TLS stack for every client (reqwest, lettre): rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store_config = config.store.store();
    if !store_config.exists() {
        info!(
            dir = %store_config.dir.display(),
            "no store in the data directory: creating a new one (first start)"
        );
    }
    let store = Store::open(&store_config)
        .context("opening the store (is another `nexus serve` using this data directory?)")?;
    info!(head = store.log.head(), "log open");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config, store))?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The order and account command services.
type DomainServices = (Arc<Commerce<AnyLog>>, Arc<Accounts<AnyLog>>);

/// The order and account command services as configured (shared by `serve`
/// and the offline commands).
pub(crate) fn domain_services(
    config: &DomainSettings,
    store: &Store,
) -> anyhow::Result<DomainServices> {
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
            AccountsConfig {
                bcrypt_cost: config.bcrypt_cost,
                webhook_urls: nexus_core::domain::account::WebhookUrlPolicy {
                    allow_insecure: config.webhook_allow_insecure_urls,
                },
                ..AccountsConfig::default()
            },
        )
        .context("account settings")?,
    );
    Ok((commerce, accounts))
}

async fn serve(config: Config, store: Store) -> anyhow::Result<()> {
    let (commerce, accounts) = domain_services(&config.domain, &store)?;
    let settings = &config.server;
    let data_dir = &config.store.data_dir;
    // Bound first, so that the default public URL (where links in mails point)
    // names the port actually taken: a listen port of 0 picks a free one.
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("listening on {}", settings.listen))?;
    let bound = listener.local_addr().context("the listening address")?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{bound}"));

    // The configuration file's upstreams, or the embedded default: three
    // simulated upstreams.
    let file = config.file.as_ref();
    if let Some(file) = file {
        info!(environment = ?file.environment, upstreams = file.upstreams.len(), "configuration file read");
    }
    let code_timing = match settings.sim_code_delay_ms {
        Some(delay_ms) => CodeTiming::Fixed { delay_ms },
        None => CodeTiming::Realistic,
    };
    let upstreams: Vec<Arc<dyn Upstream>> = match file.filter(|f| !f.upstreams.is_empty()) {
        Some(file) => file
            .upstreams
            .iter()
            .map(|u| u.build(code_timing))
            .collect::<anyhow::Result<_>>()?,
        None => SimulatorConfig::embedded_defaults(settings.sim_faults, code_timing)
            .into_iter()
            .map(|c| Arc::new(Simulator::new(c)) as Arc<dyn Upstream>)
            .collect(),
    };
    for upstream in &upstreams {
        info!(upstream = upstream.name(), "upstream configured");
    }
    let router_config = file.map_or_else(RouterConfig::default, |f| f.router.clone());
    let router = Arc::new(Router::new(upstreams, router_config));
    let worker = Arc::new(Fulfilment::new(
        store.log.clone(),
        store.vault.clone(),
        commerce.clone(),
        router.clone(),
        FulfilmentConfig {
            orphan_sweep: file.map_or_else(
                || FulfilmentConfig::default().orphan_sweep,
                |f| f.orphan_sweep.clone(),
            ),
            // A buy waits on its upstream for most of a second: thousands of
            // orders a second need thousands in flight.
            max_in_flight: BUYS_IN_FLIGHT,
            ..FulfilmentConfig::default()
        },
    ));
    let upstream_hints = worker.hints();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker_task = tokio::spawn(worker.run(stopped));

    let smtp = file.and_then(|f| f.smtp.as_ref());
    let transport = match (smtp, &settings.smtp_url) {
        (Some(smtp), _) => MailTransport::Smtp {
            url: smtp.url.clone(),
            credentials: smtp.username.clone().zip(smtp.password.clone()).map(
                |(username, password)| nexus_providers::mailer::SmtpCredentials {
                    username,
                    password,
                },
            ),
        },
        (None, Some(url)) => MailTransport::Smtp {
            url: url.clone(),
            credentials: None,
        },
        (None, None) => MailTransport::outbox_in(data_dir),
    };
    let mail_settings = MailSettings {
        from: smtp
            .and_then(|s| s.from.clone())
            .unwrap_or_else(|| "Nexus <no-reply@nexus.example>".into()),
        public_url,
        service_name: "Nexus".into(),
    };
    // Mail is spooled durably, sealed under each recipient's vault key.
    let mailer = Mailer::start(
        MailerConfig::new(transport, mail_settings, MailerConfig::spool_in(data_dir)),
        store.vault.clone(),
    )
    .context("starting the mailer")?;

    // Mail from events (deposit confirmations, deletion notices).
    let notifier = Notifier::new(
        store.log.clone(),
        store.vault.clone(),
        accounts.clone(),
        mailer.clone(),
        data_dir.join("notifier.position"),
    );
    let notifier_task = tokio::spawn(notifier.run(stop.subscribe()));

    // Customer webhooks: order events to each account's endpoint.
    let customer_webhooks = CustomerWebhooks::new(
        store.log.clone(),
        store.vault.clone(),
        accounts.clone(),
        commerce.clone(),
        CustomerWebhooksConfig {
            allow_internal_addresses: config.domain.webhook_allow_insecure_urls,
            ..CustomerWebhooksConfig::new(data_dir.join("webhooks.position"))
        },
    )
    .context("starting the customer webhooks")?;
    let customer_webhooks_task = tokio::spawn(customer_webhooks.run(stop.subscribe()));

    // NOWPayments when the configuration file names it; else the simulated
    // gateway (and its development pay route).
    let (gateway, simulated, ipn_secret): (Arc<dyn PaymentGateway>, _, _) =
        match file.and_then(|f| f.gateway.as_ref()) {
            Some(g) => {
                let secret =
                    IpnSecret::new(g.ipn_secret.as_bytes().to_vec()).context("the IPN secret")?;
                let now_payments = NowPayments::new(NowPaymentsConfig {
                    base_url: g.base_url.clone(),
                    api_key: g.api_key.clone(),
                    ipn_callback_url: g.ipn_callback_url.clone(),
                    timeout: g.timeout,
                })
                .context("the NOWPayments gateway")?;
                (Arc::new(now_payments), None, secret)
            }
            None => {
                let secret = IpnSecret::new(store.vault.derive_key("payment-ipn").to_vec())
                    .context("the IPN secret")?;
                let simulated = Arc::new(
                    SimulatedGateway::new(secret.clone(), None).context("the simulated gateway")?,
                );
                (simulated.clone(), Some(simulated), secret)
            }
        };
    let ipn = IpnHandler::new(commerce.clone(), ipn_secret);
    let read_models = Arc::new(
        ReadModels::open(
            &ReadModelsConfig::in_data_dir(data_dir),
            store.vault.clone(),
        )
        .context("opening the read models")?,
    );
    let runner = Arc::new(
        Runner::start(store.log.clone(), &read_models, RunnerConfig::default())
            .context("starting the projections")?,
    );
    let legal_holds = Arc::new(
        nexus_core::service::legal_hold_service::LegalHoldService::new(
            store.log.clone(),
            store.vault.clone(),
            Arc::new(SystemClock),
        ),
    );
    let retention = Arc::new(nexus_retention::Sweeper::new(
        store.log.clone(),
        store.vault.clone(),
        accounts.clone(),
        commerce.clone(),
        legal_holds.clone(),
        read_models
            .retention()
            .context("opening the retention schedule")?,
        Arc::new(SystemClock),
    ));
    let retention_task = tokio::spawn(run_retention_sweeps(
        retention.clone(),
        settings.retention_sweep_secs,
        stop.subscribe(),
    ));
    let rotation_task = tokio::spawn(run_vault_rotations(
        store.vault.clone(),
        accounts.clone(),
        stop.subscribe(),
    ));
    let sessions =
        SessionStore::open(&data_dir.join("sessions")).context("opening the session store")?;

    let state = web::Data::new(AppState {
        log: store.log.clone(),
        accounts,
        commerce,
        router,
        catalog: Catalog::shipped(),
        pricing: Pricing {
            markup_percent: settings.markup_percent,
        },
        mailer: mailer.clone(),
        gateway,
        simulated_gateway: simulated,
        ipn,
        sessions,
        read_models: read_models.clone(),
        runner: runner.clone(),
        cookie_secure: settings.cookie_secure,
        upstream_hints,
        admin_token: settings.admin_token.clone(),
        legal_holds: legal_holds.clone(),
        retention: retention.clone(),
        exports: Exports::new(Duration::from_secs(EXPORT_IDLE_READER_TIMEOUT_S)),
        started_at: chrono::Utc::now(),
        reset_requests: Arc::new(tokio::sync::Semaphore::new(
            crate::http::MAX_RESET_REQUESTS_IN_FLIGHT,
        )),
        policy: Arc::new(nexus_core::service::policy_service::PolicyService::new(
            store.log.clone(),
            store.vault.clone(),
            Arc::new(SystemClock),
        )),
    });
    let state_for_shutdown = state.clone();
    let gate = web::Data::new(Gate {
        limits: RateLimits::new(settings.rate()),
        trusted_proxies: settings.trusted_proxies.clone().unwrap_or_default(),
        usage: Some(UsageLog::start(&data_dir.join("usage")).context("the usage log")?),
    });
    let sweeper = {
        let gate = gate.clone();
        let mut stopped = stop.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(limits::SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => gate.limits.sweep(),
                    _ = stopped.changed() => break,
                }
            }
        })
    };
    let gate_for_shutdown = gate.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(gate.clone())
            .wrap(actix_web::middleware::from_fn(crate::http::gate::gate))
            .configure(crate::http::configure)
    })
    .shutdown_timeout(SHUTDOWN_GRACE_SECS);
    let server = match &config.tls {
        None => server.listen(listener),
        Some(files) => server.listen_rustls_0_23(listener, tls_config(files)?),
    };
    let server = server.with_context(|| format!("listening on {bound}"))?;
    for addr in server.addrs() {
        // Tests and scripts read this line to find the port.
        info!("listening on {scheme}://{addr}");
    }
    let served = server.run().await.context("serving HTTP");
    drop(state_for_shutdown);
    sweeper.abort();
    if let Some(usage) = &gate_for_shutdown.usage {
        usage.close();
        let dropped = usage.dropped();
        if dropped > 0 {
            tracing::warn!(dropped, "usage records dropped (queue full)");
        }
    }
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
    let _ = retention_task.await;
    let _ = rotation_task.await;
    let _ = customer_webhooks_task.await;
    let unsent = mailer.drain(MAIL_DRAIN).await;
    if unsent > 0 {
        tracing::warn!(unsent, "mail left unsent at shutdown");
    }
    store.log.sync().context("final sync of the log")?;
    served
}

/// The retention sweeps every `every_secs` (none when 0), the first a minute
/// after start so the schedule's projection has caught up after a restart.
async fn run_retention_sweeps(
    sweeper: Arc<nexus_retention::Sweeper<AnyLog>>,
    every_secs: u64,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    if every_secs == 0 {
        return;
    }
    const FIRST_AFTER: Duration = Duration::from_secs(60);
    let every = Duration::from_secs(every_secs);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + FIRST_AFTER.min(every), every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = sweeper.sweep().await {
                    tracing::warn!(error = %e, "retention sweep failed; tried again at the next tick");
                }
            }
            _ = stopped.changed() => break,
        }
    }
}

/// The data directory is its owner's only (0700), also when an older version or
/// another tool created it open: nothing inside is reachable by other users.
fn owner_only_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making the data dir {} owner-only", dir.display()))?;
    }
    Ok(())
}

/// How often the server asks the vault whether a key-epoch rotation is due (an
/// erasure in an epoch old enough, an interrupted rotation, an epoch a week old).
const VAULT_ROTATION_CHECK: Duration = Duration::from_secs(3600);

/// Rotates the vault's key epoch whenever it is due, checked every
/// [`VAULT_ROTATION_CHECK`] and a minute after start (an interrupted rotation is
/// finished then).
async fn run_vault_rotations<S: EventStore>(
    vault: Arc<nexus_core::vault::Vault>,
    accounts: Arc<Accounts<S>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    const FIRST_AFTER: Duration = Duration::from_secs(60);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + FIRST_AFTER,
        VAULT_ROTATION_CHECK,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = rotate_if_due(&vault, &accounts).await {
                    tracing::warn!(error = %e, "vault key rotation failed; tried again at the next check");
                }
            }
            _ = stopped.changed() => break,
        }
    }
}

/// Seconds since the Unix epoch by the system clock, as the vault counts epoch
/// ages (0 for a clock before 1970).
pub fn now_unix_s() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// Rotates the vault's key epoch if due, moving the address lookups with it;
/// the rotation when one ran.
pub async fn rotate_if_due<S: EventStore>(
    vault: &nexus_core::vault::Vault,
    accounts: &Accounts<S>,
) -> anyhow::Result<Option<KeyRotation>> {
    let now_unix_s = now_unix_s();
    if !vault.rotation_due(now_unix_s)? {
        return Ok(None);
    }
    Ok(Some(accounts.rotate_keys(now_unix_s).await?))
}

pub fn verify(config: &StoreSettings) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.existing_store()?)
        .context("opening the store (a running `nexus serve` holds it: stop the server first)")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(store.log.verify())?;
    Ok(print_verify_report(&report))
}

/// Prints a chain check's result; exit status 2 when the chain is broken.
pub fn print_verify_report(report: &nexus_core::log::VerifyReport) -> ExitCode {
    match &report.first_broken {
        None => {
            println!(
                "ok: {} events, head hash {}",
                report.events_checked,
                hex_string(&report.head_hash)
            );
            ExitCode::SUCCESS
        }
        Some(broken) => {
            println!(
                "BROKEN at position {}: {} ({} events verified before it)",
                broken.position, broken.reason, report.events_checked
            );
            ExitCode::from(2)
        }
    }
}

pub fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

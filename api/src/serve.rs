//! `nexus serve`: opens the store and serves HTTP.

use std::process::ExitCode;
use std::sync::Arc;

use actix_web::{get, web, App, HttpResponse, HttpServer};
use anyhow::Context;
use nexus_core::log::{EventStore, SledLog};
use nexus_core::Store;
use tracing::info;

use crate::config::Config;

struct AppState {
    log: Arc<SledLog>,
}

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let store = Store::open(&config.store()).context("opening the store")?;
    info!(head = store.log.head(), "log open");
    let state = web::Data::new(AppState {
        log: store.log.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let server = HttpServer::new(move || App::new().app_data(state.clone()).service(health))
            .bind(config.listen)
            .with_context(|| format!("listening on {}", config.listen))?;
        for addr in server.addrs() {
            // Tests and scripts read this line to find the port.
            info!("listening on http://{addr}");
        }
        server.run().await.context("serving HTTP")
    })?;
    // Every append was durable when acknowledged; this is belt and braces.
    store.log.sync().context("final sync of the log")?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

#[get("/health")]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "log_head": state.log.head(),
    }))
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

//! `nexus bench fulfilment`: orders placed at a fixed rate through the real order
//! commands, log and fulfilment worker, against simulated upstreams whose first
//! choice is slow and unreliable (500 ± 300 ms, 10% no numbers, 5% timeouts):
//! the time from placing an order to its number being recorded.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use nexus_core::domain::clock::SystemClock;
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::commerce::PlaceOrder;
use nexus_core::domain::deposit::PaymentReport;
use nexus_core::domain::ids::OrderId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{Channel, CountryCode, OrderEvent, OrderPolicy, ServiceCode};
use nexus_core::domain::wallet::Payment;
use nexus_core::log::{AllSubscription, EventStore};
use nexus_core::service::account_service::{Accounts, AccountsConfig};
use nexus_core::service::commerce_service::Commerce;
use nexus_core::vault::MasterKeySource;
use nexus_core::{Store, StoreConfig};
use nexus_providers::fulfilment::{Fulfilment, FulfilmentConfig};
use nexus_providers::router::{Router, RouterConfig};
use nexus_providers::simulator::{CodeTiming, Simulator, SimulatorConfig};
use nexus_providers::upstream::Upstream;
use serde::Serialize;

#[derive(Args)]
pub struct FulfilmentBench {
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Orders placed per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Where the temp database goes (default: the system temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// Per order: when it was settled, and by which upstream (None: cancelled).
type Outcomes = HashMap<OrderId, (Instant, Option<String>)>;

/// Most orders one run may place.
const MAX_ORDERS: u64 = 200_000;
const CUSTOMERS: usize = 8;

#[derive(Serialize)]
struct Figure {
    workload: &'static str,
    system: &'static str,
    clients: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    orders: u64,
    assigned: u64,
    cancelled_no_numbers: u64,
    unresolved: u64,
    first_choice_sold: u64,
    failed_over: u64,
}

pub fn run(args: FulfilmentBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.rate >= 1 && args.seconds >= 1,
        "--rate and --seconds must be at least 1"
    );
    anyhow::ensure!(
        u64::from(args.rate) * args.seconds <= MAX_ORDERS,
        "at most {MAX_ORDERS} orders per run"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let figure = runtime.block_on(load(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&figure)?);
    } else {
        println!(
            "fulfilment: {} orders at {:.0}/s: assigned {} (first choice {}, failed over {}), no numbers {}, unresolved {}; placed -> assigned p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            figure.orders, figure.ops_per_sec, figure.assigned, figure.first_choice_sold, figure.failed_over,
            figure.cancelled_no_numbers, figure.unresolved, figure.p50_ms, figure.p99_ms, figure.max_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn upstreams() -> Vec<Arc<dyn Upstream>> {
    let slow = |name: &str, base: i64| SimulatorConfig {
        latency_ms: 500,
        jitter_ms: 300,
        code_timing: CodeTiming::Fixed {
            delay_ms: 3_600_000,
        },
        base_cost: Micros(base),
        ..SimulatorConfig::healthy(name)
    };
    let first = SimulatorConfig {
        no_numbers_per_mille: 100,
        timeout_per_mille: 50,
        timeout_ms: 10_000,
        ..slow("first-choice", 50_000)
    };
    vec![
        Arc::new(Simulator::new(first)),
        Arc::new(Simulator::new(slow("second-choice", 80_000))),
        Arc::new(Simulator::new(slow("third-choice", 90_000))),
    ]
}

async fn load(args: &FulfilmentBench) -> anyhow::Result<Figure> {
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("creating a temp dir")?;
    let store = Store::open(&StoreConfig {
        dir: dir.path().join("store"),
        master_key: MasterKeySource::GenerateAt(dir.path().join("master.key")),
        cache_capacity_bytes: 256 << 20,
    })?;
    let commerce = Arc::new(Commerce::new(
        store.log.clone(),
        store.vault.clone(),
        OrderPolicy::default(),
        Arc::new(SystemClock),
    ));
    let accounts = Accounts::new(
        store.log.clone(),
        store.vault.clone(),
        AccountsConfig::default(),
    )?;
    let mut customers = Vec::with_capacity(CUSTOMERS);
    for i in 0..CUSTOMERS {
        let registration = accounts
            .register(&format!("bench-{i}@example.com"), "a long enough password")
            .await?;
        // Only a verified account deposits and orders.
        accounts
            .verify_email(registration.verification_token.expose())
            .await?;
        let owner = Owner::Account(registration.account);
        let deposit = commerce
            .request_deposit(owner, Micros::from_usd(100_000))
            .await?;
        commerce
            .record_payment(
                deposit,
                PaymentReport::new(
                    &format!("bench-{i}"),
                    Payment::new("btc", &format!("bench-{i}"))?,
                    Micros::from_usd(100_000),
                )?,
            )
            .await?;
        customers.push(owner);
    }

    let router = Arc::new(Router::new(upstreams(), RouterConfig::default()));
    let worker = Arc::new(Fulfilment::new(
        store.log.clone(),
        store.vault.clone(),
        commerce.clone(),
        router,
        FulfilmentConfig::default(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker_task = tokio::spawn(worker.run(stopped));

    // Watch the log for assignments and cancellations.
    let placed_at: Arc<Mutex<HashMap<OrderId, Instant>>> = Arc::default();
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let watcher = {
        let (log, vault, outcomes) = (store.log.clone(), store.vault.clone(), outcomes.clone());
        let mut subscription = AllSubscription::new(log.clone(), log.head() + 1, 1_000);
        tokio::spawn(async move {
            while let Ok(batch) = subscription.next_batch().await {
                let now = Instant::now();
                for record in batch
                    .iter()
                    .filter(|r| r.stream.as_str().starts_with("order-"))
                {
                    match OrderEvent::from_recorded(record, &vault) {
                        Ok(OrderEvent::OrderNumberAssigned(e)) => {
                            outcomes
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(e.order, (now, Some(e.provider)));
                        }
                        Ok(OrderEvent::OrderCancelled(e)) => {
                            outcomes
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(e.order)
                                .or_insert((now, None));
                        }
                        _ => {}
                    }
                }
            }
        })
    };

    let request = PlaceOrder {
        service: ServiceCode::new("tg")?,
        country: CountryCode::new("ID")?,
        channel: Channel::Sms,
        price: Micros(500_000),
    };
    let total = u64::from(args.rate) * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let started = Instant::now();
    let mut placing = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (commerce, request, placed_at) = (commerce.clone(), request.clone(), placed_at.clone());
        let owner = customers[i as usize % CUSTOMERS];
        placing.push(tokio::spawn(async move {
            let t = Instant::now();
            let placed = commerce.place_order(owner, &request, None).await?;
            placed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(placed.order, t);
            anyhow::Ok(())
        }));
    }
    for task in placing {
        task.await??;
    }
    let placing_seconds = started.elapsed().as_secs_f64();
    // Bounded wait for the last orders to resolve.
    for _ in 0..200 {
        if outcomes.lock().unwrap_or_else(|p| p.into_inner()).len() as u64 >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).ok();
    worker_task.await??;
    watcher.abort();

    let placed_at = placed_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let outcomes = outcomes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies_us = Vec::new();
    let (mut assigned, mut cancelled, mut first_choice) = (0u64, 0u64, 0u64);
    for (order, (at, provider)) in &outcomes {
        let Some(placed) = placed_at.get(order) else {
            continue;
        };
        match provider {
            Some(provider) => {
                assigned += 1;
                first_choice += u64::from(provider == "first-choice");
                latencies_us.push(at.saturating_duration_since(*placed).as_micros() as u64);
            }
            None => cancelled += 1,
        }
    }
    latencies_us.sort_unstable();
    Ok(Figure {
        workload: "placed_to_assigned",
        system: "nexus",
        clients: CUSTOMERS,
        ops_per_sec: total as f64 / placing_seconds,
        p50_ms: super::stats::percentile_ms(&latencies_us, 0.50),
        p99_ms: super::stats::percentile_ms(&latencies_us, 0.99),
        max_ms: latencies_us.last().map_or(0.0, |us| *us as f64 / 1000.0),
        orders: total,
        assigned,
        cancelled_no_numbers: cancelled,
        unresolved: total - assigned - cancelled,
        first_choice_sold: first_choice,
        failed_over: assigned - first_choice,
    })
}

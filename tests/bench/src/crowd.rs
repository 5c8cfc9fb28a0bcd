//! `crowd`: a flash sale from its first shopper to its sell-out. N clients against one product of
//! S units; each client is a stream of shoppers, one after another, each a buyer of its own: a
//! shopper reads the product, and if it shows units available tries to hold one. A hold (201)
//! ends that shopper's visit and the client's next shopper begins; a read showing none available,
//! or a refusal (409 `insufficient_stock`), is the client seeing the sale sold out, and the client
//! stops. The round ends when every client has stopped, which is after the S-th hold, since no
//! hold lapses during it. A client stands for a browser tab refreshed by a queue of people; with
//! 512 of them and 2,000 units, about four shoppers per client buy before it sells out.
//!
//! A round runs the crowd twice on a database of its own, each time on a fresh product, service
//! and HTTP connections: once timed, straight to the database, and once through a counting proxy
//! (`flash_sale_local::wire::WireCounter`), untimed. Each pass starts with a warm-up of reads (the
//! pools fill, connections warm). The counted pass gives the crowd's commands per answer over the
//! whole crowd, and then two waves of `--wire` seconds on the sold-out product, one of reads alone
//! and one of hold attempts alone, give commands per read and per refusal exactly: every count is
//! taken when nothing is in flight. Both products are audited: exactly S units in active holds,
//! none available, nothing negative.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_sale_local::wire::{WireCounter, WireCounts};
use secrecy::{ExposeSecret, SecretString};
use shared::domain::ids::ProductId;
use shared::domain::money::Cents;
use shared::store::pool::Pool;
use shared::store::products::NewProduct;

use crate::audit::audit_sold_out;
use crate::crowd_report as report;
use crate::measure::{Costs, Meter, ServiceThreads};
use crate::run::{BenchDb, RELEASED, RunConfig, Service};
use crate::scenario::{SOLD_OUT, Scenario};
use crate::shoppers::{Rush, Shop};
use crate::target::{Tally, drive};

#[derive(Debug, Clone)]
pub struct CrowdConfig {
    pub clients: usize,
    pub stock: u32,
    pub buckets: u16,
    /// Reads of the stocked product by every client before each pass, untimed and uncounted.
    pub warmup: Duration,
    /// Each wave of the counted pass; zero for no counted pass.
    pub wire: Duration,
    pub pool: u32,
}

impl CrowdConfig {
    /// The grid's config of the same service, for what starts it and drives its waves.
    fn run_config(&self, scenario: Scenario) -> RunConfig {
        RunConfig {
            scenario,
            clients: self.clients,
            warmup: self.warmup,
            duration: Duration::ZERO,
            wire: self.wire,
            products: 1,
            buckets: self.buckets,
            buyer_limit: false,
            pool: self.pool,
            // The crowd and the queue run on loopback only (`--db-rtt` is refused for them).
            db_rtt: Duration::ZERO,
        }
    }
}

/// The counted pass: the crowd's commands, then a wave of reads and a wave of refusals.
#[derive(Debug, Clone)]
pub struct CrowdWire {
    pub rush: Rush,
    pub rush_counts: WireCounts,
    pub reads: u64,
    pub read_counts: WireCounts,
    pub refusals: u64,
    pub refusal_counts: WireCounts,
    /// Answers of the waves other than a 200 read or a 409 `insufficient_stock`.
    pub wave_failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
pub struct CrowdResult {
    pub config: CrowdConfig,
    pub rush: Rush,
    /// What the timed pass cost (its warm-up left out): the database's CPU among it.
    pub costs: Costs,
    pub wire: Option<CrowdWire>,
    pub audit: Result<String, String>,
}

impl CrowdResult {
    /// The database server's CPU ms per answer of the timed pass (holds, refusals and reads
    /// alike), when it runs here.
    pub fn database_ms_per_answer(&self) -> Option<f64> {
        let cpu = self.costs.database_cpu?;
        Some(cpu * 1000.0 / self.rush.answers().max(1) as f64)
    }

    /// Empty when the round passed.
    pub fn problems(&self) -> Vec<String> {
        let stock = self.config.stock;
        let mut problems = self.rush.problems(stock);
        if let Some(wire) = &self.wire {
            problems.extend(
                wire.rush
                    .problems(stock)
                    .into_iter()
                    .map(|p| format!("{p} (counted pass)")),
            );
            if !wire.wave_failures.is_empty() {
                problems.push(format!("waves: {:?}", wire.wave_failures));
            }
        }
        if let Err(broken) = &self.audit {
            problems.push(format!("audit: {broken}"));
        }
        problems
    }
}

/// `runs` rounds of every config, in turn, each on a fresh database; a line per round as it
/// ends, then each config's median round (by time to sell out). False if any round failed.
pub async fn run(
    server_url: &str,
    configs: &[CrowdConfig],
    runs: usize,
    database_pid: Option<u32>,
) -> Result<bool, String> {
    let mut series: Vec<Vec<CrowdResult>> = vec![Vec::with_capacity(runs); configs.len()];
    for config in configs {
        println!(
            "\n== crowd: {} clients, {} units, {} bucket(s): {runs} round(s), in turn ==",
            config.clients, config.stock, config.buckets
        );
    }
    println!("{}", report::header());
    for number in 1..=runs {
        for (config, rounds) in configs.iter().zip(&mut series) {
            let result = round(server_url, config, database_pid).await?;
            println!("{number}/{runs} {}", report::row(&result));
            rounds.push(result);
        }
    }
    let medians: Vec<&CrowdResult> = series
        .iter_mut()
        .map(|rounds| {
            rounds.sort_by_key(|one| one.rush.sold_out_after());
            &rounds[rounds.len() / 2]
        })
        .collect();
    println!(
        "medians (by time to sell out):\n{}\n{}\n{}",
        report::table(&medians),
        report::wire_table(&medians),
        report::LEGEND
    );
    let mut passed = true;
    for result in series.iter().flatten() {
        let problems = result.problems();
        if !problems.is_empty() {
            passed = false;
            println!(
                "FAILED: crowd at {} clients, {} units: {}",
                result.config.clients,
                result.config.stock,
                problems.join("; ")
            );
        }
    }
    if passed {
        let count: usize = series.iter().map(Vec::len).sum();
        println!(
            "crowd: ok in all {count} rounds; exactly the stock held, no 5xx, no transport errors"
        );
    }
    Ok(passed)
}

async fn round(
    server_url: &str,
    config: &CrowdConfig,
    database_pid: Option<u32>,
) -> Result<CrowdResult, String> {
    let bench_db = BenchDb::create(server_url).await?;
    // A runtime of the service's own, as in every round of the grid.
    let threads = Arc::new(ServiceThreads::default());
    let result = match threads.runtime() {
        Ok(runtime) => {
            let meter = Meter {
                threads: &threads,
                database_pid,
            };
            let result = round_on(&bench_db, config, &runtime, meter).await;
            runtime.shutdown_background();
            result
        }
        Err(err) => Err(format!("starting the service's runtime: {err}")),
    };
    bench_db.drop_database().await;
    result
}

async fn round_on(
    bench_db: &BenchDb,
    config: &CrowdConfig,
    runtime: &tokio::runtime::Runtime,
    meter: Meter<'_>,
) -> Result<CrowdResult, String> {
    let pool = &bench_db.pool;
    let service_config = config.run_config(Scenario::HotHold);
    let product = create_product(pool, config).await?;
    let service =
        Service::start(runtime, &service_config, bench_db.url.clone(), &[product]).await?;
    let shop = Shop::new(service_url(&service)?, product, config.clients, "crowd")?;
    let warmup_failures = shop.warm(config.warmup).await?;
    let mut conn = pool.acquire().await.map_err(|err| err.to_string())?;
    let before = meter.snapshot(&mut conn).await?;
    let rush = shop.rush(warmup_failures).await?;
    let costs = Costs::between(&before, &meter.snapshot(&mut conn).await?);
    drop(conn);
    service.stop(pool, &service_config).await?;
    let mut audit = audit_sold_out(pool, product, config.stock).await;
    let wire = if config.wire.is_zero() {
        None
    } else {
        let (wire, counted) = count_on_wire(bench_db, config, runtime).await?;
        if audit.is_ok() {
            audit = audit_sold_out(pool, counted, config.stock).await;
        }
        Some(wire)
    };
    Ok(CrowdResult {
        config: config.clone(),
        rush,
        costs,
        wire,
        audit,
    })
}

/// The crowd again on a product of its own, through a counting proxy; then the waves.
async fn count_on_wire(
    bench_db: &BenchDb,
    config: &CrowdConfig,
    runtime: &tokio::runtime::Runtime,
) -> Result<(CrowdWire, ProductId), String> {
    let product = create_product(&bench_db.pool, config).await?;
    let database_url = bench_db.url.expose_secret();
    let counter = WireCounter::in_front_of(database_url)
        .await
        .map_err(|err| format!("starting the wire counter: {err}"))?;
    let through = SecretString::from(counter.url(database_url));
    let service_config = config.run_config(Scenario::HotHold);
    let mut service = Service::start(runtime, &service_config, through, &[product]).await?;
    let shop = Shop::new(service_url(&service)?, product, config.clients, "counted")?;
    let warmup_failures = shop.warm(config.warmup).await?;
    tokio::time::sleep(RELEASED).await;
    counter.take();
    let rush = shop.rush(warmup_failures).await?;
    tokio::time::sleep(RELEASED).await;
    let rush_counts = counter.take();

    let products = Arc::new(vec![product]);
    let mut wave = async |scenario: Scenario| -> Result<(Tally, WireCounts), String> {
        let clients = service
            .target
            .clients(&config.run_config(scenario), &products)?;
        let (_, tally) = drive(&service.load, clients, Instant::now() + config.wire).await?;
        tokio::time::sleep(RELEASED).await;
        Ok((tally, counter.take()))
    };
    let (reads, read_counts) = wave(Scenario::Read).await?;
    let (refusals, refusal_counts) = wave(Scenario::SoldOut).await?;
    service.stop(&bench_db.pool, &service_config).await?;

    let mut wave_failures = BTreeMap::new();
    for (kind, tally, expected) in [("read", &reads, "200"), ("hold", &refusals, SOLD_OUT)] {
        for (outcome, n) in &tally.outcomes {
            if outcome != expected {
                *wave_failures
                    .entry(format!("{kind} {outcome}"))
                    .or_default() += n;
            }
        }
    }
    let wire = CrowdWire {
        rush,
        rush_counts,
        reads: reads.latencies.len() as u64,
        read_counts,
        refusals: refusals.latencies.len() as u64,
        refusal_counts,
        wave_failures,
    };
    Ok((wire, product))
}

fn service_url(service: &Service) -> Result<String, String> {
    service
        .target
        .url()
        .ok_or_else(|| "the service is not a local server".to_owned())
}

async fn create_product(pool: &Pool, config: &CrowdConfig) -> Result<ProductId, String> {
    let new = NewProduct {
        name: "Crowd item".into(),
        price: Cents(1000),
        stock: config.stock,
        buckets: config.buckets,
        sale: Default::default(),
        waiting_room: None,
    };
    shared::store::products::create_product(pool, &new)
        .await
        .map(|product| product.id)
        .map_err(|err| err.to_string())
}

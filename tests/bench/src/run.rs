//! One round of the benchmark: a fresh database, the service started on a runtime of its own, N
//! clients for an untimed warm-up and then for the measured phase, the CPU and the database's
//! counters read just before and just after that phase, and an audit of the stock invariants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_sale_local::database::with_database;
use flash_sale_local::wire::latency::LatencyRelay;
use flash_sale_local::wire::{WireCounter, WireCounts};
use secrecy::{ExposeSecret, SecretString};
use shared::domain::ids::ProductId;
use shared::domain::money::Cents;
use shared::store::holds::HoldRequest;
use shared::store::pool::Pool;
use shared::store::products::NewProduct;
use tokio::runtime::Handle;

use crate::audit::{audit, audit_sold_out, wait_until_paid};
use crate::baseline::{audit_rowlock, create_rowlock_tables};
use crate::measure::{Costs, Meter, ServiceThreads};
use crate::scenario::{SOLD_OUT, Scenario};
use crate::target::{Target, drive};

/// Enough stock that no scenario runs out: every run measures reserving, never refusing.
const AMPLE_STOCK: u32 = 50_000_000;
/// The `sold-out` product's stock, every unit held during the setup by holds that outlive the
/// round: a product after its sale, with its active holds, not one created empty.
pub const SOLD_OUT_STOCK: u32 = 100;
/// The pool size of every scenario that talks to the database itself unless `--pool` says
/// otherwise: the local server's.
pub const POOL_SIZE: u32 = shared::config::LOCAL_SERVER_CONNECTIONS;
/// The bench's own connections to the run's database: products, snapshots, the audit.
pub const OWN_CONNECTIONS: u32 = 2;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub clients: usize,
    /// Untimed and uncounted: the pools fill, statements are prepared, connections warm.
    pub warmup: Duration,
    pub duration: Duration,
    /// The phase counted on the wire, after the measured one (and as long again as a warm-up);
    /// zero for none.
    pub wire: Duration,
    /// Products of the `spread` scenario.
    pub products: usize,
    /// Stock buckets of every product the run creates (the baselines keep one row).
    pub buckets: u16,
    /// Products with a per-buyer limit (one no client reaches), so every hold takes the buyer's
    /// row lock and counts their units: `--buyer-limit`.
    pub buyer_limit: bool,
    /// The pool size of the service and of the baselines alike: `--pool`.
    pub pool: u32,
    /// The network's round trip between the service (or the baseline) and the database: a
    /// [`LatencyRelay`] in between when not zero (`--db-rtt`).
    pub db_rtt: Duration,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub scenario: Scenario,
    pub clients: usize,
    pub buckets: u16,
    pub operations: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    /// Outcomes by HTTP status (or `reserved` / a refusal code / `error` for the direct ones).
    pub outcomes: BTreeMap<String, u64>,
    /// 5xx and transport errors during the warm-up and the phase on the wire, which count as
    /// failures too.
    pub warmup_failures: u64,
    pub invariants: Result<String, String>,
    pub costs: Costs,
    /// Commands counted on the wire in a short phase of their own, unless `--wire 0`.
    pub wire: Option<WireTally>,
}

impl RunResult {
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    /// 5xx, transport errors and, on the sold-out product, any answer but a refusal.
    pub fn failed_requests(&self) -> u64 {
        failures(self.scenario, &self.outcomes) + self.warmup_failures
    }

    /// CPU milliseconds per operation, from CPU seconds.
    pub fn ms_per_op(&self, cpu_seconds: f64) -> f64 {
        cpu_seconds * 1000.0 / self.operations.max(1) as f64
    }
}

fn failures(scenario: Scenario, outcomes: &BTreeMap<String, u64>) -> u64 {
    outcomes
        .iter()
        .filter(|(outcome, _)| match scenario {
            Scenario::SoldOut => *outcome != SOLD_OUT,
            _ => outcome.starts_with('5') || *outcome == "error",
        })
        .map(|(_, n)| n)
        .sum()
}

/// A database of the run's own, dropped afterwards.
pub struct BenchDb {
    pub url: SecretString,
    name: String,
    pub pool: Pool,
}

impl BenchDb {
    pub async fn create(server_url: &str) -> Result<Self, String> {
        let name = format!("flash_sale_bench_{}", uuid::Uuid::new_v4().simple());
        let url = SecretString::from(with_database(server_url, &name));
        shared::store::db::create_database_if_missing(&url)
            .await
            .map_err(|err| err.to_string())?;
        let pool = shared::store::db::connect(&url, OWN_CONNECTIONS)
            .await
            .map_err(|err| err.to_string())?;
        shared::store::db::migrate(&pool)
            .await
            .map_err(|err| err.to_string())?;
        Ok(Self { url, name, pool })
    }

    pub async fn drop_database(self) {
        self.pool.close().await;
        if let Ok(pool) = shared::store::db::connect(&self.url, 1).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{}`", self.name))
                .execute(&pool)
                .await;
        }
    }
}

pub async fn run(
    server_url: &str,
    config: &RunConfig,
    database_pid: Option<u32>,
) -> Result<RunResult, String> {
    let bench_db = BenchDb::create(server_url).await?;
    let threads = Arc::new(ServiceThreads::default());
    let result = match threads.runtime() {
        Ok(runtime) => {
            let result = run_on(&bench_db, config, database_pid, &threads, &runtime).await;
            // Whatever the service left running (timers of the local server) goes with it.
            runtime.shutdown_background();
            result
        }
        Err(err) => Err(format!("starting the service's runtime: {err}")),
    };
    bench_db.drop_database().await;
    result
}

async fn run_on(
    bench_db: &BenchDb,
    config: &RunConfig,
    database_pid: Option<u32>,
    threads: &ServiceThreads,
    runtime: &tokio::runtime::Runtime,
) -> Result<RunResult, String> {
    let pool = &bench_db.pool;
    let products = Arc::new(create_products(pool, config).await?);
    // The service's connections (and the wire phase's) go through the relay; the bench's own
    // (products, counters, audit) do not. The relay runs on the bench's runtime: its CPU is in
    // `load ms`.
    let relay = if config.db_rtt.is_zero() {
        None
    } else {
        let relay = LatencyRelay::in_front_of(bench_db.url.expose_secret(), config.db_rtt).await;
        Some(relay.map_err(|err| format!("starting the latency relay: {err}"))?)
    };
    let database_url = relay.as_ref().map_or(bench_db.url.clone(), |relay| {
        SecretString::from(relay.url(bench_db.url.expose_secret()))
    });
    let mut service = Service::start(runtime, config, database_url.clone(), &products).await?;
    let clients = service.target.clients(config, &products)?;
    let (clients, warmup) = drive(&service.load, clients, Instant::now() + config.warmup).await?;

    let meter = Meter {
        threads,
        database_pid,
    };
    let mut conn = pool.acquire().await.map_err(|err| err.to_string())?;
    let before = meter.snapshot(&mut conn).await?;
    let started = Instant::now();
    let (clients, mut tally) = drive(&service.load, clients, started + config.duration).await?;
    let elapsed = started.elapsed();
    let after = meter.snapshot(&mut conn).await?;
    drop((conn, clients));
    service.stop(pool, config).await?;

    let wire = if config.wire.is_zero() {
        None
    } else {
        Some(count_on_wire(bench_db, &database_url, config, runtime, &products).await?)
    };
    let invariants = match config.scenario {
        scenario if scenario.is_rowlock() => audit_rowlock(pool, AMPLE_STOCK).await,
        Scenario::SoldOut => audit_sold_out(pool, products[0], SOLD_OUT_STOCK).await,
        scenario => audit(pool, &products, scenario).await,
    };
    tally.latencies.sort();
    let latencies = &tally.latencies;
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(RunResult {
        scenario: config.scenario,
        clients: config.clients,
        buckets: config.buckets,
        operations: latencies.len() as u64,
        elapsed,
        p50: percentile(0.50),
        p95: percentile(0.95),
        p99: percentile(0.99),
        warmup_failures: failures(config.scenario, &warmup.outcomes)
            + wire.as_ref().map_or(0, |wire| wire.failures),
        outcomes: tally.outcomes,
        invariants,
        costs: Costs::between(&before, &after),
        wire,
    })
}

/// The service of a round, started on its runtime, and where its clients run.
pub struct Service {
    pub target: Target,
    /// Over HTTP the clients are the load generator, on the bench's own runtime; otherwise their
    /// loop is the caller of the service, on its runtime.
    pub load: Handle,
    runtime: Handle,
}

impl Service {
    /// Connected to `database_url`: the round's database, or a counting proxy in front of it.
    pub async fn start(
        runtime: &tokio::runtime::Runtime,
        config: &RunConfig,
        database_url: SecretString,
        products: &[ProductId],
    ) -> Result<Self, String> {
        // Started on the service's runtime, so its tasks and connections are the service's.
        // Driven from a blocking thread: the local server's start is not a future that `spawn`
        // accepts (sqlx's `Acquire` is not `Send` for every lifetime).
        let service = runtime.handle().clone();
        let (scenario, clients, pool, product) =
            (config.scenario, config.clients, config.pool, products[0]);
        let target = tokio::task::spawn_blocking(move || {
            service.block_on(Target::start(
                scenario,
                database_url,
                clients,
                pool,
                product,
            ))
        })
        .await
        .map_err(|err| err.to_string())??;
        Ok(Self {
            target,
            load: if config.scenario.over_http() {
                Handle::current()
            } else {
                runtime.handle().clone()
            },
            runtime: runtime.handle().clone(),
        })
    }

    /// Stops it once its work is done: in the flow, once every payment it accepted is applied
    /// (its own workers apply them).
    pub async fn stop(self, pool: &Pool, config: &RunConfig) -> Result<(), String> {
        if config.scenario == Scenario::Flow {
            wait_until_paid(pool, Duration::from_secs(30)).await?;
        }
        self.runtime
            .spawn(self.target.stop())
            .await
            .map_err(|err| err.to_string())
    }
}

/// What a short phase through a [`WireCounter`] counted: the commands of its operations, exactly.
#[derive(Debug, Clone)]
pub struct WireTally {
    pub operations: u64,
    pub counts: WireCounts,
    /// 5xx and transport errors of the phase.
    pub failures: u64,
}

/// A second service, connected through a counting proxy in front of `database_url` (the round's
/// database, or the latency relay in front of it), driven for a moment to warm up and then for
/// `config.wire`; neither timed nor part of the CPU figures. Its commands are counted once every
/// operation has ended and the pool has taken its connections back (including any it finishes
/// in the background first).
async fn count_on_wire(
    bench_db: &BenchDb,
    database_url: &SecretString,
    config: &RunConfig,
    runtime: &tokio::runtime::Runtime,
    products: &Arc<Vec<ProductId>>,
) -> Result<WireTally, String> {
    let database_url = database_url.expose_secret();
    let counter = WireCounter::in_front_of(database_url)
        .await
        .map_err(|err| format!("starting the wire counter: {err}"))?;
    let through = SecretString::from(counter.url(database_url));
    let mut service = Service::start(runtime, config, through, products).await?;
    let clients = service.target.clients(config, products)?;
    let (clients, warmup) = drive(&service.load, clients, Instant::now() + config.wire).await?;
    tokio::time::sleep(RELEASED).await;
    counter.take();
    let (clients, tally) = drive(&service.load, clients, Instant::now() + config.wire).await?;
    tokio::time::sleep(RELEASED).await;
    let counts = counter.take();
    drop(clients);
    service.stop(&bench_db.pool, config).await?;
    Ok(WireTally {
        operations: tally.latencies.len() as u64,
        counts,
        failures: failures(config.scenario, &warmup.outcomes)
            + failures(config.scenario, &tally.outcomes),
    })
}

/// Long enough for the pool to have pinged and taken back the connection of an operation that
/// has just ended.
pub const RELEASED: Duration = Duration::from_millis(50);

async fn create_products(pool: &Pool, config: &RunConfig) -> Result<Vec<ProductId>, String> {
    if config.scenario.is_rowlock() {
        create_rowlock_tables(pool, AMPLE_STOCK).await?;
        return Ok(vec![crate::baseline::ROWLOCK_PRODUCT]);
    }
    let stock = match config.scenario {
        Scenario::SoldOut => SOLD_OUT_STOCK,
        _ => AMPLE_STOCK,
    };
    let count = match config.scenario {
        Scenario::Spread => config.products.max(1),
        _ => 1,
    };
    let mut products = Vec::with_capacity(count);
    for _ in 0..count {
        let new = NewProduct {
            name: "Bench item".into(),
            price: Cents(1000),
            stock,
            buckets: config.buckets,
            // A limit no client reaches: the reservation still locks and counts the buyer's row.
            sale: shared::domain::model::SaleTerms {
                max_per_buyer: config.buyer_limit.then_some(1_000_000),
                ..Default::default()
            },
            waiting_room: None,
        };
        let created = shared::store::products::create_product(pool, &new)
            .await
            .map_err(|err| err.to_string())?;
        products.push(created.id);
    }
    if config.scenario == Scenario::SoldOut {
        sell_out(pool, products[0], SOLD_OUT_STOCK).await?;
    }
    Ok(products)
}

/// Holds every unit of `product` (of `units`), one at a time, for longer than any round.
async fn sell_out(pool: &Pool, product: ProductId, units: u32) -> Result<(), String> {
    let request = HoldRequest {
        product_id: product,
        buyer: None,
        qty: 1,
        idempotency_key: None,
    };
    for _ in 0..units {
        shared::store::holds::reserve(pool, &request, Duration::from_secs(3600))
            .await
            .map_err(|err| format!("selling the product out: {err}"))?;
    }
    Ok(())
}

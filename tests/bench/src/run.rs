//! The benchmark behind `flash-sale-bench`: each run gets a fresh database, drives one scenario
//! with N concurrent clients for S seconds, and ends with an audit of the stock invariants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_sale_local::database::with_database;
use flash_sale_local::known_secrets::{ADMIN_TOKEN, BUYER_JWT_SECRET, WEBHOOK_SECRET, buyer_token};
use flash_sale_local::{LocalServer, Options};
use secrecy::{ExposeSecret, SecretString};
use shared::Config;
use shared::domain::ids::ProductId;
use shared::domain::money::Cents;
use shared::store::products::NewProduct;
use sqlx::{MySqlPool, Row};

use crate::scenario::{
    Scenario, flow_over_http, hold_direct, hold_over_http, read_over_http, seed_hold,
};

/// Enough stock that no scenario runs out: every run measures reserving, never refusing.
const AMPLE_STOCK: u32 = 50_000_000;
/// The pool size of every scenario that talks to the database itself, as the local server's.
pub const POOL_SIZE: u32 = shared::config::LOCAL_SERVER_CONNECTIONS;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub clients: usize,
    pub duration: Duration,
    /// Products of the `spread` scenario.
    pub products: usize,
    /// Stock buckets of every product the run creates.
    pub buckets: u16,
    /// Products with a per-buyer limit (one no client reaches), so every hold takes the buyer's
    /// row lock and counts their units: `--buyer-limit`.
    pub buyer_limit: bool,
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub scenario: Scenario,
    pub clients: usize,
    pub operations: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    /// Outcomes by HTTP status (or `sql` / `error` for the direct scenarios).
    pub outcomes: BTreeMap<String, u64>,
    pub invariants: Result<String, String>,
}

impl RunResult {
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    pub fn server_errors(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(outcome, _)| outcome.starts_with('5') || *outcome == "error")
            .map(|(_, n)| n)
            .sum()
    }
}

/// One client's tally.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    outcomes: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, started: Instant, outcome: impl Into<String>) {
        self.latencies.push(started.elapsed());
        *self.outcomes.entry(outcome.into()).or_default() += 1;
    }
}

/// A database of the run's own, dropped afterwards.
struct BenchDb {
    url: SecretString,
    name: String,
    pool: MySqlPool,
}

impl BenchDb {
    async fn create(server_url: &str) -> Result<Self, String> {
        let name = format!("flash_sale_bench_{}", uuid::Uuid::new_v4().simple());
        let url = SecretString::from(with_database(server_url, &name));
        shared::store::db::create_database_if_missing(&url)
            .await
            .map_err(|err| err.to_string())?;
        let pool = shared::store::db::connect(&url, POOL_SIZE)
            .await
            .map_err(|err| err.to_string())?;
        shared::store::db::migrate(&pool)
            .await
            .map_err(|err| err.to_string())?;
        Ok(Self { url, name, pool })
    }

    async fn drop_database(self) {
        self.pool.close().await;
        if let Ok(pool) = shared::store::db::connect(&self.url, 1).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{}`", self.name))
                .execute(&pool)
                .await;
        }
    }
}

pub async fn run(server_url: &str, config: &RunConfig) -> Result<RunResult, String> {
    let bench_db = BenchDb::create(server_url).await?;
    let result = run_on(&bench_db, config).await;
    bench_db.drop_database().await;
    result
}

async fn run_on(bench_db: &BenchDb, config: &RunConfig) -> Result<RunResult, String> {
    let pool = &bench_db.pool;
    let products = match config.scenario {
        Scenario::Spread => config.products.max(1),
        _ => 1,
    };
    let mut product_ids = Vec::with_capacity(products);
    for _ in 0..products {
        let new = NewProduct {
            name: "Bench item".into(),
            price: Cents(1000),
            stock: AMPLE_STOCK,
            buckets: config.buckets,
            // A limit no client reaches: the reservation still locks and counts the buyer's row.
            sale: shared::domain::model::SaleTerms {
                max_per_buyer: config.buyer_limit.then_some(1_000_000),
                ..Default::default()
            },
        };
        product_ids.push(
            shared::store::products::create_product(pool, &new)
                .await
                .map_err(|err| err.to_string())?
                .id,
        );
    }
    let server = if config.scenario.over_http() {
        let vars = HashMapVars::new(&bench_db.url);
        let server_config =
            Config::from_lookup(|name| vars.get(name)).map_err(|err| err.to_string())?;
        Some(
            LocalServer::start(&server_config, Options::default())
                .await
                .map_err(|err| err.to_string())?,
        )
    } else {
        None
    };
    let base = server.as_ref().map(LocalServer::url).unwrap_or_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(config.clients)
        .build()
        .map_err(|err| err.to_string())?;
    let product_ids = Arc::new(product_ids);

    let started = Instant::now();
    let deadline = started + config.duration;
    let clients = (0..config.clients).map(|client| {
        let (pool, http, base, product_ids) = (
            pool.clone(),
            http.clone(),
            base.clone(),
            product_ids.clone(),
        );
        let scenario = config.scenario;
        // Every client is a buyer of its own, as many shoppers on one hot product are.
        let token = buyer_token(&format!("bench-buyer-{client}"));
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut rng = fastrand::Rng::with_seed(client as u64);
            let mut round = 0u64;
            while Instant::now() < deadline {
                let product = product_ids[rng.usize(..product_ids.len())];
                let op_started = Instant::now();
                let outcome = match scenario {
                    Scenario::HotHold | Scenario::Spread => {
                        hold_over_http(&http, &base, &token, product).await
                    }
                    Scenario::HotHoldDirect => hold_direct(&pool, product).await,
                    Scenario::SeedBaseline => seed_hold(&pool, product).await,
                    Scenario::Read => read_over_http(&http, &base, product).await,
                    Scenario::Flow => {
                        flow_over_http(&http, &base, &token, product, client, round).await
                    }
                };
                tally.record(op_started, outcome);
                round += 1;
            }
            tally
        })
    });
    let mut latencies = Vec::new();
    let mut outcomes = BTreeMap::new();
    for client in clients.collect::<Vec<_>>() {
        let tally = client.await.map_err(|err| err.to_string())?;
        latencies.extend(tally.latencies);
        for (outcome, count) in tally.outcomes {
            *outcomes.entry(outcome).or_default() += count;
        }
    }
    let elapsed = started.elapsed();
    if config.scenario == Scenario::Flow {
        wait_until_paid(pool, Duration::from_secs(30)).await?;
    }
    let invariants = audit(pool, &product_ids, config.scenario).await;
    drop(server);
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(RunResult {
        scenario: config.scenario,
        clients: config.clients,
        operations: latencies.len() as u64,
        elapsed,
        p50: percentile(0.50),
        p95: percentile(0.95),
        p99: percentile(0.99),
        outcomes,
        invariants,
    })
}

/// The local server's configuration for a run: secrets of the tests, a TTL that outlives it.
struct HashMapVars(std::collections::HashMap<&'static str, String>);

impl HashMapVars {
    fn new(url: &SecretString) -> Self {
        Self(std::collections::HashMap::from([
            ("DATABASE_URL", url.expose_secret().to_owned()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("BUYER_JWT_SECRET", BUYER_JWT_SECRET.to_owned()),
            ("HOLD_TTL_SECONDS", "600".to_owned()),
        ]))
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

async fn wait_until_paid(pool: &MySqlPool, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payment_inbox WHERE state = 'pending'")
                .fetch_one(pool)
                .await
                .map_err(|err| err.to_string())?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{pending} payment events still pending after {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every product: counters add up and none is negative; stored reserved = units of active holds;
/// sold = units of live orders; for the flow, every order paid.
async fn audit(
    pool: &MySqlPool,
    products: &[ProductId],
    scenario: Scenario,
) -> Result<String, String> {
    let mut held_total = 0;
    for product in products {
        let row = sqlx::query(
            "SELECT CAST(p.total_stock AS SIGNED) AS total_stock, \
               CAST((SELECT SUM(total_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS bucket_total, \
               CAST((SELECT SUM(available_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS available_stock, \
               CAST((SELECT SUM(reserved_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS reserved_stock, \
               CAST((SELECT SUM(sold_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS sold_stock, \
               CAST((SELECT MIN(LEAST(available_stock, reserved_stock, sold_stock)) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS lowest, \
               CAST((SELECT COALESCE(SUM(qty), 0) FROM holds WHERE product_id = p.id AND status = 'active') AS SIGNED) AS held, \
               CAST((SELECT COALESCE(SUM(qty), 0) FROM orders WHERE product_id = p.id AND status <> 'cancelled') AS SIGNED) AS ordered \
             FROM products p WHERE p.id = ?",
        )
        .bind(product.0)
        .fetch_one(pool)
        .await
        .map_err(|err| err.to_string())?;
        let column = |name: &str| row.try_get::<i64, _>(name).map_err(|err| err.to_string());
        let (total, available, reserved, sold) = (
            column("total_stock")?,
            column("available_stock")?,
            column("reserved_stock")?,
            column("sold_stock")?,
        );
        if total != available + reserved + sold
            || total != column("bucket_total")?
            || column("lowest")? < 0
        {
            return Err(format!(
                "product {product}: {available} + {reserved} + {sold} != {total}, or a bucket below zero"
            ));
        }
        if reserved != column("held")? || sold != column("ordered")? {
            return Err(format!(
                "product {product}: reserved {reserved} vs holds {}, sold {sold} vs orders {}",
                column("held")?,
                column("ordered")?
            ));
        }
        held_total += reserved + sold;
    }
    if scenario == Scenario::Flow {
        let unpaid: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status <> 'paid'")
            .fetch_one(pool)
            .await
            .map_err(|err| err.to_string())?;
        if unpaid > 0 {
            return Err(format!("{unpaid} orders not paid"));
        }
    }
    Ok(format!(
        "ok ({held_total} units held or sold, none oversold)"
    ))
}

pub fn table(results: &[RunResult]) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8}  {}\n",
        "scenario",
        "clients",
        "ops",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "outcomes / invariants"
    );
    for result in results {
        let outcomes: Vec<String> = result
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{outcome}:{n}"))
            .collect();
        let invariants = match &result.invariants {
            Ok(summary) => format!("invariants {summary}"),
            Err(problem) => format!("INVARIANTS BROKEN: {problem}"),
        };
        out.push_str(&format!(
            "{:<16} {:>7} {:>9} {:>10.1} {:>8.2} {:>8.2} {:>8.2}  {} | {}\n",
            result.scenario.name(),
            result.clients,
            result.operations,
            result.per_second(),
            millis(result.p50),
            millis(result.p95),
            millis(result.p99),
            outcomes.join(" "),
            invariants,
        ));
    }
    out
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

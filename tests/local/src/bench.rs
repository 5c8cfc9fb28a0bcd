//! The benchmark behind `flash-sale-bench`: each run gets a fresh database, drives one scenario
//! with N concurrent clients for S seconds, and ends with an audit of the stock invariants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use shared::Config;
use shared::domain::ids::{HoldId, ProductId};
use shared::domain::money::Cents;
use shared::store::holds::HoldRequest;
use shared::store::products::NewProduct;
use sqlx::{MySqlPool, Row};

use crate::testing::{ADMIN_TOKEN, WEBHOOK_SECRET, with_database};
use crate::{LocalServer, Options};

/// Enough stock that no scenario runs out: every run measures reserving, never refusing.
const AMPLE_STOCK: u32 = 50_000_000;
/// The pool size of every scenario that talks to the database itself, as the local server's.
pub const POOL_SIZE: u32 = shared::config::LOCAL_SERVER_CONNECTIONS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Holds of 1 on one product over HTTP against the local server.
    HotHold,
    /// The same through `shared::store::holds::reserve`, no HTTP.
    HotHoldDirect,
    /// The seed's transaction shape as raw SQL: lock, sum the holds, update, insert, commit.
    SeedBaseline,
    /// Hold, order and a signed `paid` webhook, until the order is paid.
    Flow,
    /// Holds of 1 spread over several products.
    Spread,
    /// `GET /api/products/{id}`.
    Read,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Self::HotHold,
        Self::HotHoldDirect,
        Self::SeedBaseline,
        Self::Flow,
        Self::Spread,
        Self::Read,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::HotHold => "hot-hold",
            Self::HotHoldDirect => "hot-hold-direct",
            Self::SeedBaseline => "seed-baseline",
            Self::Flow => "flow",
            Self::Spread => "spread",
            Self::Read => "read",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }

    fn over_http(self) -> bool {
        !matches!(self, Self::HotHoldDirect | Self::SeedBaseline)
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub clients: usize,
    pub duration: Duration,
    /// Products of the `spread` scenario.
    pub products: usize,
    /// Stock buckets of every product the run creates.
    pub buckets: u16,
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
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut rng = fastrand::Rng::with_seed(client as u64);
            let mut round = 0u64;
            while Instant::now() < deadline {
                let product = product_ids[rng.usize(..product_ids.len())];
                let op_started = Instant::now();
                let outcome = match scenario {
                    Scenario::HotHold | Scenario::Spread => {
                        hold_over_http(&http, &base, product).await
                    }
                    Scenario::HotHoldDirect => hold_direct(&pool, product).await,
                    Scenario::SeedBaseline => seed_hold(&pool, product).await,
                    Scenario::Read => read_over_http(&http, &base, product).await,
                    Scenario::Flow => flow_over_http(&http, &base, product, client, round).await,
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
            ("HOLD_TTL_SECONDS", "600".to_owned()),
        ]))
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

async fn hold_over_http(http: &reqwest::Client, base: &str, product: ProductId) -> String {
    let body = json!({"product_id": product.0, "qty": 1});
    match http
        .post(format!("{base}/api/holds"))
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16().to_string(),
        Err(_) => "error".into(),
    }
}

async fn read_over_http(http: &reqwest::Client, base: &str, product: ProductId) -> String {
    match http
        .get(format!("{base}/api/products/{product}"))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16().to_string(),
        Err(_) => "error".into(),
    }
}

/// Hold, order, signed `paid` webhook: the outcome is the first status that was not a success.
async fn flow_over_http(
    http: &reqwest::Client,
    base: &str,
    product: ProductId,
    client: usize,
    round: u64,
) -> String {
    let step = async {
        let hold: serde_json::Value = expect_status(
            http.post(format!("{base}/api/holds"))
                .json(&json!({"product_id": product.0, "qty": 1})),
            201,
        )
        .await?;
        let order: serde_json::Value = expect_status(
            http.post(format!("{base}/api/orders"))
                .json(&json!({"hold_id": hold["hold_id"]})),
            201,
        )
        .await?;
        let body = json!({"idempotency_key": format!("bench-{client}-{round}"), "order_id": order["order_id"], "status": "paid"})
            .to_string();
        let signature = crate::testing::webhook_signature(&body);
        expect_status::<serde_json::Value>(
            http.post(format!("{base}/api/payments/webhook"))
                .header("x-signature", signature)
                .body(body),
            202,
        )
        .await?;
        Ok::<_, String>(())
    };
    match step.await {
        Ok(()) => "flow-ok".into(),
        Err(outcome) => outcome,
    }
}

async fn expect_status<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    expected: u16,
) -> Result<T, String> {
    let response = request.send().await.map_err(|_| "error".to_owned())?;
    let status = response.status().as_u16();
    if status != expected {
        return Err(status.to_string());
    }
    response.json().await.map_err(|_| "error".to_owned())
}

async fn hold_direct(pool: &MySqlPool, product: ProductId) -> String {
    let request = HoldRequest {
        product_id: product,
        qty: 1,
        idempotency_key: None,
    };
    match shared::store::holds::reserve(pool, &request, Duration::from_secs(600)).await {
        Ok(_) => "reserved".into(),
        Err(err) => err.code().into(),
    }
}

/// The seed design, as raw SQL through the same driver and pool size: the product lock is held
/// across four statements, one of them a sum over every active hold of the product.
async fn seed_hold(pool: &MySqlPool, product: ProductId) -> String {
    let attempt = async {
        let mut tx = pool.begin().await?;
        let row =
            sqlx::query(
                "SELECT p.total_stock, CAST((SELECT SUM(sold_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS sold_stock \
                 FROM products p WHERE p.id = ? FOR UPDATE",
            )
                .bind(product.0)
                .fetch_one(&mut *tx)
                .await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(qty), 0) AS SIGNED) FROM holds \
             WHERE product_id = ? AND status = 'active' AND expires_at > UTC_TIMESTAMP(3)",
        )
        .bind(product.0)
        .fetch_one(&mut *tx)
        .await?;
        let available = i64::from(row.try_get::<i32, _>("total_stock")?)
            - row.try_get::<i64, _>("sold_stock")?
            - held;
        if available < 1 {
            tx.rollback().await?;
            return Ok::<_, sqlx::Error>("insufficient_stock");
        }
        // The seed kept its counters on the product row; ours live in its (single) stock bucket.
        sqlx::query(
            "UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1 \
             WHERE product_id = ? AND bucket = 0",
        )
            .bind(product.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO holds (id, product_id, qty, status, created_at, expires_at) \
             VALUES (?, ?, 1, 'active', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 600 SECOND)",
        )
        .bind(HoldId::generate().as_str())
        .bind(product.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok("reserved")
    };
    match attempt.await {
        Ok(outcome) => outcome.into(),
        Err(_) => "error".into(),
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

/// Throughput against clients, one line per scenario, as a PNG.
pub fn chart(results: &[RunResult], path: &std::path::Path, font: &[u8]) -> Result<(), String> {
    use plotters::prelude::*;

    let font: &'static [u8] = Box::leak(font.to_vec().into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "unreadable font".to_owned())?;
    let max_clients = results.iter().map(|r| r.clients).max().unwrap_or(1) as f64;
    let max_rate = results
        .iter()
        .map(RunResult::per_second)
        .fold(1.0, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| err.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "flash-sale: holds per second on one product",
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..max_clients.max(2.0)).log_scale(), 0f64..max_rate)
        .map_err(|err| err.to_string())?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("operations / s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|err| err.to_string())?;
    let palette = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (index, scenario) in Scenario::ALL.into_iter().enumerate() {
        let mut points: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| (r.clients as f64, r.per_second()))
            .collect();
        if points.is_empty() {
            continue;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = palette[index % palette.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|err| err.to_string())?
            .label(scenario.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|err| err.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|err| err.to_string())?;
    root.present().map_err(|err| err.to_string())
}

/// Every function's binary name: the crates under `functions/`.
pub fn functions() -> Result<Vec<String>, String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../functions");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|err| format!("{dir}: {err}"))?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// A function's cold start: from spawning its binary to its first request for work on the
/// Lambda Runtime API (which a loopback listener here plays). That span is the init phase Lambda
/// bills and a first caller waits for, minus the platform's own part. `database` is how it finds
/// its database: `DATABASE_URL`, or a Secrets Manager secret and the host.
pub async fn init_time(
    binary: &std::path::Path,
    database: &[(&str, &str)],
) -> Result<Duration, String> {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|err| err.to_string())?;
    let runtime_api = listener
        .local_addr()
        .map_err(|err| err.to_string())?
        .to_string();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        // Only what Lambda would set, and nothing of this shell's (its DATABASE_URL, its AWS_*).
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env(
            "AWS_LAMBDA_FUNCTION_NAME",
            binary
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("function"),
        )
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .envs(database.iter().copied())
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("{}: {err}", binary.display()))?;
    let accepted = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut stream, _) = listener.accept().await?;
        let mut request = [0u8; 256];
        let read = stream.read(&mut request).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&request[..read]).into_owned())
    })
    .await;
    let elapsed = started.elapsed();
    let _ = child.kill().await;
    match accepted {
        Ok(Ok(request)) if request.contains("/runtime/invocation/next") => Ok(elapsed),
        Ok(Ok(request)) => Err(format!("unexpected first request: {request:?}")),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "{} never asked for work within 10 s",
            binary.display()
        )),
    }
}

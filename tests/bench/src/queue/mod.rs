//! `queue`: a sale behind a waiting room (issue 22), from the pre-queue to the last admission.
//! B buyers (10,000), each with a token of its own, join a product of S units (1,000) through N
//! clients (64) before the start; the start is then set `--lead` seconds ahead (a `PATCH`, as
//! the seller would, so that however long the joins took every buyer is in the pre-queue). From
//! the start every client reads its buyers' entries in turn, as fast as answers come (the first
//! read a second after the start draws the pre-queue), until each is admitted; an admitted buyer
//! holds one unit with its `Admission-Token` and is done. Then a wave of entry reads alone
//! (`--wire` seconds), and a crowd of holds without a valid token (`--refused`, 10,000: none, not
//! a token, another secret's, another buyer's, another product's, expired), each of which must be
//! answered 403 before the database is touched.
//!
//! Each phase — joins, the sale, the wave of reads, the refused crowd — is measured from one
//! moment with nothing in flight to the next. A round runs two passes on a database of its own,
//! each on a fresh product and service: *timed*, straight to the database, with the CPU of the
//! service and of `mariadbd` and the server's status counters (`Questions`, `Com_*`: everyone's);
//! and *counted*, through the counting proxy, untimed: the service's commands exactly. Both are
//! audited (`audit.rs`).

use std::sync::Arc;
use std::time::Duration;

use flash_sale_local::wire::WireCounter;
use secrecy::{ExposeSecret, SecretString};
use shared::domain::ids::ProductId;
use shared::domain::model::SaleTerms;
use shared::domain::money::Cents;
use shared::domain::waiting_room::WaitingRoom;
use shared::store::pool::Pool;
use shared::store::products::NewProduct;
use sqlx::types::chrono::{NaiveDateTime, Utc};

mod audit;
mod buyers;
mod probe;
mod refused;
mod report;
mod sale;

use crate::measure::ServiceThreads;
use crate::run::{BenchDb, RunConfig, Service};
use crate::scenario::Scenario;
use audit::{DrawRow, audit};
use buyers::{Answers, Buyers, failed};
use probe::{Cost, Counting, Probe};
use sale::Sale;

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub buyers: usize,
    pub clients: usize,
    pub stock: u32,
    /// The waiting room's admissions per second, and how long one lasts (seconds).
    pub rate: u32,
    pub ttl: u32,
    /// Holds without a valid admission token in the refused crowd.
    pub refused: usize,
    /// From the last join to the start.
    pub lead: Duration,
    /// Reads of entries of buyers not in the queue yet, before the joins: pools fill.
    pub warmup: Duration,
    /// The wave of entry reads; zero for none, and no counted pass.
    pub wire: Duration,
    pub pool: u32,
}

impl QueueConfig {
    /// 10,000 buyers, 64 clients, 1,000 units, 500 admitted a second for 300 s, 10,000 refused
    /// holds, the start 2 s after the last join; in `--smoke` 200, 8, 20, 100, 200 and 0.5 s
    /// (both passes in a few seconds). The warm-up, the wave and the pool are the flags'.
    pub fn sized(smoke: bool) -> Self {
        let (buyers, clients, stock, rate, refused, lead_ms) = if smoke {
            (200, 8, 20, 100, 200, 500)
        } else {
            (10_000, 64, 1_000, 500, 10_000, 2_000)
        };
        Self {
            buyers,
            clients,
            stock,
            rate,
            ttl: 300,
            refused,
            lead: Duration::from_millis(lead_ms),
            warmup: Duration::from_secs(1),
            wire: Duration::from_millis(500),
            pool: crate::run::POOL_SIZE,
        }
    }

    fn run_config(&self) -> RunConfig {
        RunConfig {
            scenario: Scenario::HotHold,
            clients: self.clients,
            warmup: self.warmup,
            duration: Duration::ZERO,
            wire: self.wire,
            products: 1,
            buckets: 1,
            buyer_limit: false,
            pool: self.pool,
            // The crowd and the queue run on loopback only (`--db-rtt` is refused for them).
            db_rtt: Duration::ZERO,
        }
    }

    /// A sale not over by then has failed: every position's turn, and two minutes.
    fn deadline(&self) -> Duration {
        let turns = (self.buyers as u64).div_ceil(u64::from(self.rate.max(1)));
        Duration::from_secs(turns + 120)
    }
}

#[derive(Debug, Clone)]
pub struct Pass {
    pub warmup_failures: u64,
    pub joins: Answers,
    pub starts: NaiveDateTime,
    pub sale: Sale,
    pub reads: Answers,
    pub refused: Answers,
    /// Joins, the sale, the wave of reads, the refused crowd.
    pub costs: [Cost; 4],
    pub draw: Option<DrawRow>,
    pub audit: Result<String, String>,
}

impl Pass {
    fn problems(&self, config: &QueueConfig) -> Vec<String> {
        let mut problems = Vec::new();
        let expected = [
            ("joins", &self.joins, config.buyers as u64),
            ("refused holds", &self.refused, config.refused as u64),
        ];
        for (what, answers, count) in expected {
            if answers.ok.count() != count || !answers.others.is_empty() {
                problems.push(format!(
                    "{what}: {} as expected of {count}, others {:?}",
                    answers.ok.count(),
                    answers.others
                ));
            }
        }
        let sale = &self.sale;
        if sale.holds.count() + sale.refusals.count() != config.buyers as u64 {
            problems.push(format!(
                "{} holds and {} refusals for {} buyers",
                sale.holds.count(),
                sale.refusals.count(),
                config.buyers
            ));
        }
        if !sale.others.is_empty() || sale.timed_out {
            problems.push(format!(
                "the sale: others {:?}{}",
                sale.others,
                if sale.timed_out { ", timed out" } else { "" }
            ));
        }
        if !self.reads.others.is_empty() {
            problems.push(format!("entry reads: {:?}", self.reads.others));
        }
        if self.warmup_failures > 0 {
            problems.push(format!("{} failures in the warm-up", self.warmup_failures));
        }
        if let Err(broken) = &self.audit {
            problems.push(format!("audit: {broken}"));
        }
        problems
    }

    /// 5xx and transport errors of every phase.
    pub fn server_errors(&self) -> u64 {
        let sum = |others: &std::collections::BTreeMap<String, u64>| -> u64 {
            others
                .iter()
                .filter(|(o, _)| failed(o))
                .map(|(_, n)| n)
                .sum()
        };
        self.warmup_failures
            + sum(&self.joins.others)
            + sum(&self.sale.others)
            + sum(&self.reads.others)
            + sum(&self.refused.others)
    }
}

#[derive(Debug, Clone)]
pub struct QueueResult {
    pub config: QueueConfig,
    pub timed: Pass,
    pub counted: Option<Pass>,
}

impl QueueResult {
    /// Empty when the round passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.timed.problems(&self.config);
        if let Some(counted) = &self.counted {
            problems.extend(
                counted
                    .problems(&self.config)
                    .into_iter()
                    .map(|p| format!("{p} (counted pass)")),
            );
        }
        problems
    }
}

/// `runs` rounds, each on a fresh database; every round's figures, then their spread. False if
/// any round failed.
pub async fn run(
    server_url: &str,
    config: &QueueConfig,
    runs: usize,
    database_pid: Option<u32>,
) -> Result<bool, String> {
    println!(
        "\n== queue: {} buyers, {} clients, {} units, admission {}/s for {} s: {runs} round(s) ==",
        config.buyers, config.clients, config.stock, config.rate, config.ttl
    );
    let mut rounds = Vec::with_capacity(runs);
    for number in 1..=runs {
        let result = round(server_url, config, database_pid).await?;
        println!("{number}/{runs} {}", report::line(&result));
        rounds.push(result);
    }
    println!(
        "{}\n{}\n{}\n{}",
        report::costs_table(&rounds),
        report::start_table(&rounds),
        report::spread(&rounds),
        report::LEGEND
    );
    let mut passed = true;
    for (number, result) in rounds.iter().enumerate() {
        let problems = result.problems();
        if !problems.is_empty() {
            passed = false;
            println!(
                "FAILED: queue round {}: {}",
                number + 1,
                problems.join("; ")
            );
        }
    }
    if passed {
        println!(
            "queue: ok in all {} rounds; positions a permutation, admissions by the rate, every hold admitted, every forged hold 403, no 5xx",
            rounds.len()
        );
    }
    Ok(passed)
}

async fn round(
    server_url: &str,
    config: &QueueConfig,
    database_pid: Option<u32>,
) -> Result<QueueResult, String> {
    let bench_db = BenchDb::create(server_url).await?;
    let threads = Arc::new(ServiceThreads::default());
    let result = match threads.runtime() {
        Ok(runtime) => {
            let timed = pass(
                &bench_db,
                config,
                &runtime,
                Counting::Status(&threads, database_pid),
            )
            .await;
            let counted = match timed {
                Ok(_) if !config.wire.is_zero() => {
                    let url = bench_db.url.expose_secret();
                    match WireCounter::in_front_of(url).await {
                        Ok(counter) => pass(&bench_db, config, &runtime, Counting::Wire(&counter))
                            .await
                            .map(Some),
                        Err(err) => Err(format!("starting the wire counter: {err}")),
                    }
                }
                _ => Ok(None),
            };
            runtime.shutdown_background();
            timed.and_then(|timed| {
                Ok(QueueResult {
                    config: config.clone(),
                    timed,
                    counted: counted?,
                })
            })
        }
        Err(err) => Err(format!("starting the service's runtime: {err}")),
    };
    bench_db.drop_database().await;
    result
}

async fn pass(
    bench_db: &BenchDb,
    config: &QueueConfig,
    runtime: &tokio::runtime::Runtime,
    counting: Counting<'_>,
) -> Result<Pass, String> {
    let pool = &bench_db.pool;
    let product = create_product(pool, config).await?;
    let (database_url, prefix) = match &counting {
        Counting::Status(..) => (bench_db.url.clone(), "queue-timed"),
        Counting::Wire(counter) => (
            SecretString::from(counter.url(bench_db.url.expose_secret())),
            "queue-counted",
        ),
    };
    let run_config = config.run_config();
    let service = Service::start(runtime, &run_config, database_url, &[product]).await?;
    let base = service
        .target
        .url()
        .ok_or("the service is not a local server")?;
    let buyers = Buyers::new(base, product, config.buyers, config.clients, prefix)?;
    let warmup_failures = buyers.warm(config.warmup).await?;
    let mut probe = Probe::new(counting, pool).await?;

    probe.begin().await?;
    let joins = buyers.join_all().await?;
    let join_cost = probe.end().await?;
    let starts = buyers.open_at(config.lead).await?;
    probe.begin().await?;
    let sale = sale::sale(&buyers, starts, config.deadline()).await?;
    let sale_cost = probe.end().await?;
    probe.begin().await?;
    let reads = buyers.read_wave(config.wire).await?;
    let read_cost = probe.end().await?;
    probe.begin().await?;
    let refused = refused::refused_wave(&buyers, config.refused).await?;
    let refused_cost = probe.end().await?;
    drop(probe);
    service.stop(pool, &run_config).await?;

    let draw = DrawRow::read(pool, product).await?;
    let audit = audit(pool, config, &buyers, starts, &sale).await;
    Ok(Pass {
        warmup_failures,
        joins,
        starts,
        sale,
        reads,
        refused,
        costs: [join_cost, sale_cost, read_cost, refused_cost],
        draw,
        audit,
    })
}

/// The product, its sale an hour away until the joins are done (then `Buyers::open_at`).
async fn create_product(pool: &Pool, config: &QueueConfig) -> Result<ProductId, String> {
    let later: NaiveDateTime = (Utc::now() + Duration::from_secs(3600)).naive_utc();
    let new = NewProduct {
        name: "Queued item".into(),
        price: Cents(1000),
        stock: config.stock,
        buckets: 1,
        sale: SaleTerms {
            sale_starts_at: Some(later),
            ..Default::default()
        },
        waiting_room: Some(WaitingRoom {
            admission_rate: config.rate,
            admission_ttl_seconds: config.ttl,
        }),
    };
    shared::store::products::create_product(pool, &new)
        .await
        .map(|product| product.id)
        .map_err(|err| err.to_string())
}

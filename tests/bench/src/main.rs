//! `flash-sale-bench`: throughput, latency and the cost per operation of the hot paths on this
//! machine, each round on a fresh database against the server in `DATABASE_URL`, each ending
//! with an invariant audit.
//!
//!   flash-sale-bench <scenario> [--clients N[,N…]] [--buckets B[,B…]] [--seconds S] [--warmup S]
//!                               [--runs R] [--products M] [--buyer-limit] [--db-rtt MS[,MS…]]
//!   flash-sale-bench compare [--scenarios SUBJECT,BASELINE[,…] | REFERENCE,OTHER[,…]] [--clients …] …
//!   flash-sale-bench sweep [--clients …] [--seconds S] [--runs R] [--chart PATH]
//!   flash-sale-bench crowd [--clients N[,N…]] [--stock S] [--buckets B[,B…]] [--runs R]
//!   flash-sale-bench queue [--buyers B] [--clients N] [--stock S] [--rate R] [--ttl T]
//!                          [--refused F] [--lead S] [--runs R]
//!   flash-sale-bench all [--smoke] [--chart PATH]
//!   flash-sale-bench init [--functions DIR] [--runs R]
//!
//! Scenarios: hot-hold, hot-hold-direct, lambda-hold, rowlock-baseline, rowlock-text,
//! sum-baseline (also seed-baseline), flow, spread, read, sold-out. Every scenario runs R rounds; scenarios compared
//! with each other run in alternation (A, B, A, B, …) at each clients × buckets and are reported
//! by their median round. `compare` (default: hot-hold against rowlock-baseline and rowlock-text, 3
//! rounds) prints the ratios of the medians, of ops/s and of the database's CPU per operation
//! (against the baselines, or without any against the first scenario); `sweep` runs the holds
//! scenarios and the baselines at 1 to 256 clients and charts them;
//! `crowd` (512 clients, 2,000 units, 1 bucket) sells a product out to a crowd of shoppers (see
//! crowd.rs); `queue` (10,000 buyers, 64 clients, 1,000 units, 500 admitted a second) sells a
//! product behind a waiting room (see queue/mod.rs); `all` runs every scenario at --clients,
//! then a sweep, then the crowd, then the queue. `init` times each function binary in DIR
//! (default target/release) from start to ready, with `DATABASE_URL` and with a Secrets Manager
//! secret (moto_server on loopback), and prints its size. `--smoke` makes everything tiny: it
//! proves the bench works and its audits pass, it measures nothing. Every client is a buyer of
//! its own; `--buyer-limit` gives the products a per-buyer limit no client reaches, so every
//! hold also locks and counts its buyer's row. `--db-rtt MS[,MS…]` (compare, sweep, one scenario)
//! puts a relay between the service (or the baseline) and the database that delays every chunk
//! of bytes by MS/2 each way, so a round trip costs MS as from a Lambda to Aurora; several
//! values run their rounds in alternation and are reported and compared each on its own.
//! Exits non-zero when an audit fails or any request ended in a 5xx or a transport error.

mod args;
mod audit;
mod baseline;
mod chart;
mod cold_start;
mod crowd;
mod crowd_report;
mod measure;
mod queue;
mod report;
mod rounds;
mod run;
mod scenario;
mod shoppers;
mod target;

use std::process::ExitCode;
use std::time::Duration;

use args::{Args, parse_args};
use rounds::Series;
use run::RunConfig;
use scenario::Scenario;
use sqlx::{ConnectOptions, Connection, Executor, Row};

const SWEEP_SCENARIOS: [Scenario; 6] = [
    Scenario::HotHold,
    Scenario::HotHoldDirect,
    Scenario::LambdaHold,
    Scenario::RowlockBaseline,
    Scenario::RowlockText,
    Scenario::SumBaseline,
];
const SWEEP_CLIENTS: [usize; 6] = [1, 8, 32, 64, 128, 256];
const SMOKE_CLIENTS: [usize; 2] = [1, 4];
/// The crowd's clients and units, and in `--smoke`.
const CROWD: (usize, u32) = (512, 2000);
const SMOKE_CROWD: (usize, u32) = (8, 20);
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Connections left free on the database server for everyone else when a scenario opens one
/// per client (`lambda-hold`).
const SPARE_CONNECTIONS: i64 = 8;

fn main() -> ExitCode {
    // The in-process server's metric lines would bury the figures (and cost a write each).
    shared::metrics::disable();
    // The load generator's runtime; the service gets one of its own in every round.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => Err(format!("starting the runtime: {err}")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("flash-sale-bench: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, String> {
    let args = parse_args()?;
    let server_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| shared::config::DEFAULT_DATABASE_URL.to_owned());
    if args.command == "init" {
        return cold_start::init_times(&args.functions, args.runs.unwrap_or(1), &server_url).await;
    }
    let runs = args.runs.unwrap_or(match args.command.as_str() {
        "compare" | "sweep" | "all" | "crowd" | "queue" => 3,
        _ => 1,
    });
    let database_pid = measure::database_process(&server_url);
    if args.command == "crowd" {
        return crowd::run(&server_url, &crowd_configs(&args), runs, database_pid).await;
    }
    if args.command == "queue" {
        return queue::run(&server_url, &queue_config(&args), runs, database_pid).await;
    }
    let passed = grid(&args, &server_url, runs).await?;
    if args.command == "all" {
        let crowd_passed =
            crowd::run(&server_url, &crowd_configs(&args), runs, database_pid).await?;
        let queue_passed =
            queue::run(&server_url, &queue_config(&args), runs, database_pid).await?;
        return Ok(passed && crowd_passed && queue_passed);
    }
    Ok(passed)
}

/// The queue's round: its defaults (tiny in `--smoke`), in `queue` changed by the flags.
fn queue_config(args: &Args) -> queue::QueueConfig {
    let mut config = queue::QueueConfig::sized(args.smoke);
    (config.warmup, config.wire, config.pool) = (
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.wire),
        args.pool,
    );
    if args.command != "queue" || args.smoke {
        return config;
    }
    if let Some(clients) = args.clients.as_ref().and_then(|c| c.first()) {
        config.clients = *clients;
    }
    config.buyers = args.buyers.unwrap_or(config.buyers);
    config.stock = args.stock.unwrap_or(config.stock);
    config.rate = args.rate.unwrap_or(config.rate);
    config.ttl = args.ttl.unwrap_or(config.ttl);
    config.refused = args.refused.unwrap_or(config.refused);
    config.lead = args.lead.map_or(config.lead, Duration::from_secs_f64);
    config
}

/// The crowd's rounds: `--clients` × `--buckets` for `crowd`; its defaults in `all`.
fn crowd_configs(args: &Args) -> Vec<crowd::CrowdConfig> {
    let (clients, stock) = match (args.smoke, args.command.as_str()) {
        (true, _) => (vec![SMOKE_CROWD.0], SMOKE_CROWD.1),
        (false, "crowd") => (
            args.clients.clone().unwrap_or(vec![CROWD.0]),
            args.stock.unwrap_or(CROWD.1),
        ),
        _ => (vec![CROWD.0], args.stock.unwrap_or(CROWD.1)),
    };
    clients
        .iter()
        .flat_map(|clients| {
            args.buckets.iter().map(move |buckets| crowd::CrowdConfig {
                clients: *clients,
                stock,
                buckets: *buckets,
                warmup: Duration::from_secs_f64(args.warmup),
                wire: Duration::from_secs_f64(args.wire),
                pool: args.pool,
            })
        })
        .collect()
}

/// The scenarios' rounds, as `plan` lays them out: false if any failed.
async fn grid(args: &Args, server_url: &str, runs: usize) -> Result<bool, String> {
    let plan = plan(args)?;
    let database_pid = measure::database_process(server_url);
    let room = connection_room(server_url).await?;
    println!(
        "flash-sale-bench: {} round(s) of {} s after {} s of warm-up, pool {} connections, {} cores, database {}",
        plan.iter().map(|(group, _)| group.len()).sum::<usize>() * runs,
        args.seconds,
        args.warmup,
        args.pool,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        database_pid.map_or(
            "not on this machine (its CPU is not measured)".to_owned(),
            |pid| { format!("process {pid} on this machine") }
        ),
    );
    let mut all = Vec::new();
    let mut swept = Vec::new();
    for (mut group, charted) in plan {
        group.retain(|config| {
            let fits = config.scenario != Scenario::LambdaHold
                || config.clients as u64 + u64::from(run::OWN_CONNECTIONS) <= room;
            if !fits {
                println!(
                    "lambda-hold at {} clients skipped: it needs a connection per client, and the server has {room} to spare",
                    config.clients
                );
            }
            fits
        });
        if group.is_empty() {
            continue;
        }
        let mut names: Vec<&str> = Vec::new();
        let mut networks: Vec<Duration> = Vec::new();
        for config in &group {
            if !names.contains(&config.scenario.name()) {
                names.push(config.scenario.name());
            }
            if !networks.contains(&config.db_rtt) {
                networks.push(config.db_rtt);
            }
        }
        let relayed = networks.iter().any(|rtt| !rtt.is_zero());
        println!(
            "\n== {} at {} clients, {} bucket(s){}: {runs} round(s) each, in turn ==",
            names.join(", "),
            group[0].clients,
            group[0].buckets,
            if relayed {
                format!(", database round trip {}", rounds::networks(&networks))
            } else {
                String::new()
            }
        );
        let series = rounds::alternate(server_url, &group, runs, database_pid).await?;
        for network in networks {
            let on_it: Vec<Series> = series
                .iter()
                .filter(|one| one.config.db_rtt == network)
                .cloned()
                .collect();
            let medians: Vec<run::RunResult> =
                on_it.iter().map(|one| one.median().clone()).collect();
            println!(
                "medians{}:\n{}\n{}\n{}{}",
                if relayed {
                    format!(
                        " at a database round trip of {}",
                        rounds::networks(&[network])
                    )
                } else {
                    String::new()
                },
                report::table(&medians),
                report::wire_table(&medians),
                report::commands_table(&medians),
                rounds::comparison(&on_it)
            );
            if charted {
                swept.extend(medians);
            }
        }
        all.push(series);
    }
    println!("{}", report::LEGEND);
    if !swept.is_empty() {
        chart(&swept, &args.chart);
    }
    let series: Vec<Series> = all.into_iter().flatten().collect();
    let failed = rounds::failures(&series);
    let count: usize = series.iter().map(|one| one.rounds.len()).sum();
    if failed.is_empty() {
        println!("invariants: ok in all {count} rounds; no 5xx, no transport errors");
        return Ok(true);
    }
    for result in failed {
        println!(
            "FAILED: {} at {} clients: {:?}, {} 5xx, transport errors or unexpected answers",
            result.scenario.name(),
            result.clients,
            result.invariants,
            result.failed_requests()
        );
    }
    Ok(false)
}

/// The groups of configs to run, each group in alternation, and whether it is part of the
/// charted sweep.
fn plan(args: &Args) -> Result<Vec<(Vec<RunConfig>, bool)>, String> {
    let config = |scenario, clients, buckets, db_rtt| RunConfig {
        scenario,
        clients,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.seconds),
        wire: Duration::from_secs_f64(args.wire),
        products: args.products,
        buckets,
        buyer_limit: args.buyer_limit,
        pool: args.pool,
        db_rtt,
    };
    let rtts: &[Duration] = &args
        .db_rtt
        .iter()
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect::<Vec<_>>();
    let grid = |scenarios: &[Scenario], clients: &[usize], charted: bool| {
        clients
            .iter()
            .flat_map(|n| {
                args.buckets.iter().map(move |b| {
                    // Every network of a clients × buckets in one group, so that their rounds
                    // alternate too; each network is reported and compared on its own.
                    let group = rtts
                        .iter()
                        .flat_map(|rtt| {
                            scenarios
                                .iter()
                                .map(move |scenario| config(*scenario, *n, *b, *rtt))
                        })
                        .collect();
                    (group, charted)
                })
            })
            .collect::<Vec<_>>()
    };
    let sweep_clients: &[usize] = match (&args.clients, args.smoke) {
        (_, true) => &SMOKE_CLIENTS,
        (Some(clients), false) if args.command == "sweep" => clients,
        _ => &SWEEP_CLIENTS,
    };
    let clients = args.clients.clone().unwrap_or(vec![64]);
    Ok(match args.command.as_str() {
        "compare" => {
            if args.scenarios.len() < 2 {
                return Err(
                    "compare takes --scenarios SUBJECT,BASELINE[,BASELINE…] or REFERENCE,OTHER[,OTHER…]"
                        .into(),
                );
            }
            grid(&args.scenarios, &clients, false)
        }
        "sweep" => grid(&SWEEP_SCENARIOS, sweep_clients, true),
        "all" => {
            let mut plan = grid(&Scenario::ALL, &clients[..1], false);
            plan.extend(grid(&SWEEP_SCENARIOS, sweep_clients, true));
            plan
        }
        name => {
            let scenario = Scenario::parse(name).ok_or(format!("unknown scenario {name:?}"))?;
            grid(&[scenario], &clients, false)
        }
    })
}

/// How many more connections the database server accepts: `max_connections` less the sessions
/// open now and a few left for everyone else.
async fn connection_room(server_url: &str) -> Result<u64, String> {
    let options = shared::store::db::connect_options(&server_url.to_owned().into())
        .map_err(|err| err.to_string())?
        .database("information_schema");
    let mut conn = options
        .connect()
        .await
        .map_err(|err| format!("connecting to the database server: {err}"))?;
    let row = conn
        .fetch_one(
            "SELECT CAST(@@max_connections AS SIGNED), \
             (SELECT COUNT(*) FROM information_schema.PROCESSLIST)",
        )
        .await
        .map_err(|err| err.to_string())?;
    let (max, open): (i64, i64) = (
        row.try_get(0).map_err(|err| err.to_string())?,
        row.try_get(1).map_err(|err| err.to_string())?,
    );
    let _ = conn.close().await;
    Ok(u64::try_from(max - open - SPARE_CONNECTIONS).unwrap_or(0))
}

fn chart(sweep: &[run::RunResult], path: &std::path::Path) {
    let written = std::fs::read(FONT)
        .map_err(|err| format!("no font at {FONT} ({err}); install fonts-dejavu-core"))
        .and_then(|font| chart::chart(sweep, path, &font));
    match written {
        Ok(()) => println!("chart: {}", path.display()),
        Err(err) => println!("chart not written: {err}"),
    }
}

//! `flash-sale-bench`: throughput and latency of the hot paths on this machine, each run on a
//! fresh database against the server in `DATABASE_URL`, each ending with an invariant audit.
//!
//!   flash-sale-bench <scenario> [--clients N] [--seconds S] [--runs R] [--products M] [--buckets B]
//!                               [--buyer-limit]
//!   flash-sale-bench sweep [--seconds S] [--runs R] [--chart PATH]
//!   flash-sale-bench all [--smoke]
//!   flash-sale-bench init [--functions DIR] [--runs R]
//!
//! Scenarios: hot-hold, hot-hold-direct, seed-baseline, flow, spread, read. `sweep` runs the
//! first three at 1, 8, 32, 64, 128 and 256 clients and charts them; `all` runs every scenario
//! and a sweep. `init` times each function binary in DIR (default target/release) from start to
//! ready, with `DATABASE_URL` and with a Secrets Manager secret (moto_server on loopback), and
//! prints its size. `--runs R` reports the median (by throughput) of R runs. `--smoke` makes
//! everything tiny: it proves the bench works and its audits pass, it measures nothing. Every
//! client is a buyer of its own (its own token); `--buyer-limit` gives the products a per-buyer
//! limit no client reaches, so every hold also locks and counts its buyer's row.
//! Exits non-zero when an audit fails or any request ended in a 5xx or a transport error.

mod chart;
mod cold_start;
mod run;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use run::{RunConfig, RunResult};
use scenario::Scenario;

const SWEEP_SCENARIOS: [Scenario; 3] = [
    Scenario::HotHold,
    Scenario::HotHoldDirect,
    Scenario::SeedBaseline,
];
const SWEEP_CLIENTS: [usize; 6] = [1, 8, 32, 64, 128, 256];
const SMOKE_CLIENTS: [usize; 2] = [1, 4];
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

struct Args {
    command: String,
    clients: usize,
    seconds: f64,
    runs: usize,
    products: usize,
    buckets: u16,
    buyer_limit: bool,
    chart: PathBuf,
    functions: PathBuf,
    smoke: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let command = raw
        .next()
        .ok_or("usage: flash-sale-bench <scenario|sweep|all> [options]; see the source's header")?;
    let mut args = Args {
        command,
        clients: 64,
        seconds: 10.0,
        runs: 1,
        products: 16,
        buckets: 1,
        buyer_limit: false,
        chart: PathBuf::from("target/flash-sale-bench.png"),
        functions: PathBuf::from("target/release"),
        smoke: false,
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<f64>()
                .map_err(|_| format!("{flag} takes a number, got {text:?}"))
        };
        match flag.as_str() {
            "--clients" => args.clients = number(value()?)? as usize,
            "--seconds" => args.seconds = number(value()?)?,
            "--runs" => args.runs = number(value()?)? as usize,
            "--products" => args.products = number(value()?)? as usize,
            "--buckets" => args.buckets = number(value()?)? as u16,
            "--chart" => args.chart = PathBuf::from(value()?),
            "--functions" => args.functions = PathBuf::from(value()?),
            "--smoke" => args.smoke = true,
            "--buyer-limit" => args.buyer_limit = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.smoke {
        (args.clients, args.seconds, args.runs, args.products) = (4, 1.0, 1, 4);
    }
    if args.clients == 0 || args.runs == 0 || args.seconds <= 0.0 {
        return Err("--clients, --runs and --seconds must be positive".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    // The in-process server's metric lines would bury the figures (and cost a write each).
    shared::metrics::disable();
    match run().await {
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
        return cold_start::init_times(&args.functions, args.runs, &server_url).await;
    }
    let sweep_clients: &[usize] = if args.smoke {
        &SMOKE_CLIENTS
    } else {
        &SWEEP_CLIENTS
    };
    // (scenario, clients, part of the charted sweep)
    let mut plan = Vec::new();
    match args.command.as_str() {
        "sweep" => plan.extend(sweep(sweep_clients)),
        "all" => {
            plan.extend(
                Scenario::ALL
                    .into_iter()
                    .map(|scenario| (scenario, args.clients, false)),
            );
            plan.extend(sweep(sweep_clients));
        }
        name => {
            let scenario = Scenario::parse(name).ok_or(format!("unknown scenario {name:?}"))?;
            plan.push((scenario, args.clients, false));
        }
    }
    println!(
        "flash-sale-bench: {} run(s) of {} s, median of {}, pool {} connections, {} cores",
        plan.len(),
        args.seconds,
        args.runs,
        run::POOL_SIZE,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results = Vec::new();
    let mut swept = Vec::new();
    for (scenario, clients, charted) in plan {
        let config = RunConfig {
            scenario,
            clients,
            duration: Duration::from_secs_f64(args.seconds),
            products: args.products,
            buckets: args.buckets,
            buyer_limit: args.buyer_limit,
        };
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            runs.push(run::run(&server_url, &config).await?);
        }
        runs.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
        let median = runs.swap_remove(runs.len() / 2);
        print!(
            "{}",
            run::table(std::slice::from_ref(&median))
                .lines()
                .nth(1)
                .map(|l| format!("{l}\n"))
                .unwrap_or_default()
        );
        if charted {
            swept.push(median.clone());
        }
        results.push(median);
    }
    println!("\n{}", run::table(&results));
    if !swept.is_empty() {
        chart(&swept, &args.chart);
    }
    let broken: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.invariants.is_err() || r.server_errors() > 0)
        .collect();
    if broken.is_empty() {
        println!(
            "invariants: ok in all {} runs; no 5xx, no transport errors",
            results.len()
        );
        Ok(true)
    } else {
        for result in broken {
            println!(
                "FAILED: {} at {} clients: {:?}, {} server errors",
                result.scenario.name(),
                result.clients,
                result.invariants,
                result.server_errors()
            );
        }
        Ok(false)
    }
}

fn sweep(clients: &[usize]) -> Vec<(Scenario, usize, bool)> {
    SWEEP_SCENARIOS
        .into_iter()
        .flat_map(|scenario| clients.iter().map(move |n| (scenario, *n, true)))
        .collect()
}

fn chart(sweep: &[RunResult], path: &std::path::Path) {
    let written = std::fs::read(FONT)
        .map_err(|err| format!("no font at {FONT} ({err}); install fonts-dejavu-core"))
        .and_then(|font| chart::chart(sweep, path, &font));
    match written {
        Ok(()) => println!("chart: {}", path.display()),
        Err(err) => println!("chart not written: {err}"),
    }
}

//! The command line: a command, then flags with values (see main.rs's header).

use std::path::PathBuf;

use crate::run;
use crate::scenario::Scenario;

pub struct Args {
    pub command: String,
    pub clients: Option<Vec<usize>>,
    pub buckets: Vec<u16>,
    pub scenarios: Vec<Scenario>,
    pub seconds: f64,
    pub warmup: f64,
    pub wire: f64,
    pub runs: Option<usize>,
    pub products: usize,
    pub stock: Option<u32>,
    /// `queue`: buyers, admissions per second, an admission's seconds, holds without a valid
    /// token, and seconds from the last join to the start.
    pub buyers: Option<usize>,
    pub rate: Option<u32>,
    pub ttl: Option<u32>,
    pub refused: Option<usize>,
    pub lead: Option<f64>,
    pub buyer_limit: bool,
    pub pool: u32,
    /// Round trips (ms) of the network between the service (and the baselines) and the
    /// database, each a relay in front of it (`flash_sale_local::wire::latency`); 0 for none.
    pub db_rtt: Vec<f64>,
    pub chart: PathBuf,
    pub functions: PathBuf,
    pub smoke: bool,
}

pub fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let command = raw.next().ok_or(
        "usage: flash-sale-bench <scenario|compare|sweep|crowd|queue|all|init> [options]; see the source's header",
    )?;
    let mut args = Args {
        command,
        clients: None,
        buckets: vec![1],
        scenarios: vec![
            Scenario::HotHold,
            Scenario::RowlockBaseline,
            Scenario::RowlockText,
        ],
        seconds: 10.0,
        warmup: 1.0,
        wire: 0.5,
        runs: None,
        products: 16,
        stock: None,
        buyers: None,
        rate: None,
        ttl: None,
        refused: None,
        lead: None,
        buyer_limit: false,
        pool: run::POOL_SIZE,
        db_rtt: vec![0.0],
        chart: PathBuf::from("target/flash-sale-bench.png"),
        functions: PathBuf::from("target/release"),
        smoke: false,
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or(format!("{flag} needs a value"));
        let number = |text: &str| {
            text.parse::<f64>()
                .map_err(|_| format!("{flag} takes a number, got {text:?}"))
        };
        let numbers = |text: String| {
            text.split(',')
                .map(|one| number(one.trim()))
                .collect::<Result<Vec<f64>, String>>()
        };
        match flag.as_str() {
            "--clients" => {
                args.clients = Some(numbers(value()?)?.into_iter().map(|n| n as usize).collect())
            }
            "--buckets" => {
                args.buckets = numbers(value()?)?.into_iter().map(|n| n as u16).collect()
            }
            "--scenarios" => {
                args.scenarios = value()?
                    .split(',')
                    .map(|name| {
                        Scenario::parse(name.trim()).ok_or(format!("unknown scenario {name:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => args.seconds = number(&value()?)?,
            "--warmup" => args.warmup = number(&value()?)?,
            "--wire" => args.wire = number(&value()?)?,
            "--runs" => args.runs = Some(number(&value()?)? as usize),
            "--products" => args.products = number(&value()?)? as usize,
            "--stock" => args.stock = Some(number(&value()?)? as u32),
            "--buyers" => args.buyers = Some(number(&value()?)? as usize),
            "--rate" => args.rate = Some(number(&value()?)? as u32),
            "--ttl" => args.ttl = Some(number(&value()?)? as u32),
            "--refused" => args.refused = Some(number(&value()?)? as usize),
            "--lead" => args.lead = Some(number(&value()?)?),
            "--chart" => args.chart = PathBuf::from(value()?),
            "--functions" => args.functions = PathBuf::from(value()?),
            "--smoke" => args.smoke = true,
            "--buyer-limit" => args.buyer_limit = true,
            "--pool" => args.pool = number(&value()?)? as u32,
            "--db-rtt" => args.db_rtt = numbers(value()?)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if args.smoke {
        (args.clients, args.seconds, args.warmup, args.wire) = (Some(vec![4]), 0.2, 0.05, 0.05);
        (args.runs, args.products) = (Some(1), 4);
    }
    let counts_positive = args.clients.iter().flatten().all(|n| *n > 0)
        && args.buckets.iter().all(|b| *b > 0)
        && args.runs != Some(0)
        && args.stock != Some(0)
        && args.buyers != Some(0)
        && args.rate != Some(0)
        && args.lead.is_none_or(|lead| lead > 0.0)
        && args.pool > 0;
    if !counts_positive || args.seconds <= 0.0 || args.warmup < 0.0 || args.wire < 0.0 {
        return Err(
            "--clients, --buckets, --pool, --runs, --stock, --buyers, --rate, --lead and --seconds must be positive, --warmup and --wire not negative".into(),
        );
    }
    if args.db_rtt.iter().any(|ms| !ms.is_finite() || *ms < 0.0) {
        return Err("--db-rtt takes round trips in ms, 0 or more".into());
    }
    let one_network = args.db_rtt.len() == 1;
    let relayed = args.db_rtt.iter().any(|ms| *ms > 0.0);
    match args.command.as_str() {
        "crowd" | "queue" | "init" | "all" if relayed || !one_network => {
            return Err(format!(
                "--db-rtt applies to compare, sweep and one scenario's rounds, not {}",
                args.command
            ));
        }
        "sweep" if !one_network => {
            return Err("sweep charts one network: give --db-rtt one value".into());
        }
        _ => {}
    }
    Ok(args)
}

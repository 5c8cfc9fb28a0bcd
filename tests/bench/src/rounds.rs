//! Rounds run in alternation — A, B, A, B, … — so that a change in the machine's other load (it is
//! shared) falls on every scenario alike; each scenario is then reported by its median round, and
//! compared with the baselines by the ratio of medians.

use std::time::Duration;

use crate::report;
use crate::run::{self, RunConfig, RunResult};

/// One scenario's rounds.
#[derive(Clone)]
pub struct Series {
    pub config: RunConfig,
    pub rounds: Vec<RunResult>,
}

impl Series {
    /// The median round by throughput; every column of the reports is that round's.
    pub fn median(&self) -> &RunResult {
        let mut sorted: Vec<&RunResult> = self.rounds.iter().collect();
        sorted.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
        sorted[sorted.len() / 2]
    }

    fn rates(&self) -> String {
        let rates: Vec<String> = self
            .rounds
            .iter()
            .map(|round| format!("{:.0}", round.per_second()))
            .collect();
        rates.join(", ")
    }
}

/// `runs` rounds of every config, in turn, each on a fresh database; a line per round as it ends.
pub async fn alternate(
    server_url: &str,
    configs: &[RunConfig],
    runs: usize,
    database_pid: Option<u32>,
) -> Result<Vec<Series>, String> {
    let mut series: Vec<Series> = configs
        .iter()
        .map(|config| Series {
            config: config.clone(),
            rounds: Vec::with_capacity(runs),
        })
        .collect();
    let relayed = configs.iter().any(|config| !config.db_rtt.is_zero());
    for round in 1..=runs {
        for one in &mut series {
            let result = run::run(server_url, &one.config, database_pid).await?;
            let network = if relayed {
                format!("rtt {} ", networks(&[one.config.db_rtt]))
            } else {
                String::new()
            };
            println!("{round}/{runs} {network}{}", report::row(&result));
            one.rounds.push(result);
        }
    }
    Ok(series)
}

/// Database round trips as the command line gives them: `0, 1 ms`.
pub fn networks(rtts: &[Duration]) -> String {
    let ms: Vec<String> = rtts
        .iter()
        .map(|rtt| {
            let ms = format!("{:.3}", rtt.as_secs_f64() * 1000.0);
            ms.trim_end_matches('0').trim_end_matches('.').to_owned()
        })
        .collect();
    format!("{} ms", ms.join(", "))
}

/// Each non-baseline scenario of `group` (run in alternation with the baselines, at the same
/// clients and buckets) against each baseline, by the ratio of median throughputs; the stronger
/// baseline — the higher median — is the one that counts. A group without baselines
/// (`hot-hold,sold-out,read`) is compared with its first scenario instead.
pub fn comparison(group: &[Series]) -> String {
    let baselines: Vec<&Series> = group
        .iter()
        .filter(|one| one.config.scenario.is_baseline())
        .collect();
    let stronger = baselines
        .iter()
        .max_by(|a, b| a.median().per_second().total_cmp(&b.median().per_second()));
    let mut out = String::new();
    for one in group {
        out.push_str(&format!(
            "  {:<16} median {:>8.1} ops/s  (rounds: {})\n",
            one.config.scenario.name(),
            one.median().per_second(),
            one.rates()
        ));
    }
    if baselines.is_empty()
        && let Some((reference, others)) = group.split_first()
    {
        for one in others {
            out.push_str(&format!(
                "  {} / {} = {:.2}x\n",
                one.config.scenario.name(),
                reference.config.scenario.name(),
                one.median().per_second() / reference.median().per_second()
            ));
        }
    }
    for subject in group
        .iter()
        .filter(|one| !one.config.scenario.is_baseline())
    {
        for baseline in &baselines {
            let ratio = subject.median().per_second() / baseline.median().per_second();
            let mark = match stronger {
                Some(strong) if std::ptr::eq(*strong, *baseline) && baselines.len() > 1 => {
                    "  <- the stronger baseline"
                }
                _ => "",
            };
            out.push_str(&format!(
                "  {} / {} = {ratio:.2}x{mark}\n",
                subject.config.scenario.name(),
                baseline.config.scenario.name(),
            ));
        }
    }
    out
}

/// The rounds that failed: a broken audit, a 5xx or a transport error.
pub fn failures(series: &[Series]) -> Vec<&RunResult> {
    series
        .iter()
        .flat_map(|one| &one.rounds)
        .filter(|round| round.invariants.is_err() || round.failed_requests() > 0)
        .collect()
}

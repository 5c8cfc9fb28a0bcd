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

    /// The database's CPU ms per operation: the median over the rounds (each round's own
    /// median, not the throughput-median round's), `None` where it was not measured.
    pub fn db_ms(&self) -> Option<f64> {
        let mut per_round: Vec<f64> = self
            .rounds
            .iter()
            .map(|round| Some(round.ms_per_op(round.costs.database_cpu?)))
            .collect::<Option<_>>()?;
        per_round.sort_by(f64::total_cmp);
        per_round.get(per_round.len() / 2).copied()
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
/// clients and buckets) against each baseline, by the ratio of median throughputs and of the
/// database's median CPU per operation; the stronger baseline (the higher median throughput)
/// and the cheaper one for the database (the lower CPU per operation) are marked: those are the
/// ratios that count. A group without baselines (`hot-hold,sold-out,read`) is compared with its
/// first scenario instead.
pub fn comparison(group: &[Series]) -> String {
    let baselines: Vec<&Series> = group
        .iter()
        .filter(|one| one.config.scenario.is_baseline())
        .collect();
    let stronger = baselines
        .iter()
        .max_by(|a, b| a.median().per_second().total_cmp(&b.median().per_second()));
    let cheaper = baselines
        .iter()
        .filter(|one| one.db_ms().is_some())
        .min_by(|a, b| db_ms(a).total_cmp(&db_ms(b)));
    let mut out = String::new();
    for one in group {
        let db = one.db_ms().map_or("-".to_owned(), |ms| format!("{ms:.3}"));
        out.push_str(&format!(
            "  {:<16} median {:>8.1} ops/s  db {db:>6} ms/op  (rounds: {})\n",
            one.config.scenario.name(),
            one.median().per_second(),
            one.rates()
        ));
    }
    let ratios = |subject: &Series, reference: &Series| {
        let db = match (subject.db_ms(), reference.db_ms()) {
            (Some(subject), Some(reference)) => format!(", db ms {:.2}x", subject / reference),
            _ => String::new(),
        };
        format!(
            "  {} / {} = {:.2}x ops/s{db}",
            subject.config.scenario.name(),
            reference.config.scenario.name(),
            subject.median().per_second() / reference.median().per_second()
        )
    };
    if baselines.is_empty()
        && let Some((reference, others)) = group.split_first()
    {
        for one in others {
            out.push_str(&ratios(one, reference));
            out.push('\n');
        }
    }
    let marked = |chosen: Option<&&Series>, baseline: &Series| {
        chosen.is_some_and(|chosen| std::ptr::eq(*chosen, baseline)) && baselines.len() > 1
    };
    for subject in group
        .iter()
        .filter(|one| !one.config.scenario.is_baseline())
    {
        for baseline in &baselines {
            let marks: Vec<&str> = [
                (marked(stronger, baseline), "the stronger baseline"),
                (marked(cheaper, baseline), "the cheaper for the database"),
            ]
            .into_iter()
            .filter_map(|(on, mark)| on.then_some(mark))
            .collect();
            let mark = if marks.is_empty() {
                String::new()
            } else {
                format!("  <- {}", marks.join(", "))
            };
            out.push_str(&format!("{}{mark}\n", ratios(subject, baseline)));
        }
    }
    out
}

fn db_ms(series: &Series) -> f64 {
    series.db_ms().unwrap_or(f64::INFINITY)
}

/// The rounds that failed: a broken audit, a 5xx or a transport error.
pub fn failures(series: &[Series]) -> Vec<&RunResult> {
    series
        .iter()
        .flat_map(|one| &one.rounds)
        .filter(|round| round.invariants.is_err() || round.failed_requests() > 0)
        .collect()
}

//! The crowd's tables, and the legend that says what each column is.

use std::time::Duration;

use flash_sale_local::wire::WireCounts;

use crate::crowd::CrowdResult;
use crate::shoppers::Timing;

pub const LEGEND: &str = "\
crowd columns: of the timed pass (straight to the database), from the first shopper on:
  sold out  seconds until the last hold's answer: the S-th 201; run: until every client stopped
  db ms     the database server's CPU (mariadbd, /proc/<pid>/stat) per answer of the timed pass,
            holds, refusals and reads alike, when it runs here (`-` otherwise)
  holds refusals reads   answers of each kind; /s over each kind's own span (its first request's
            start to its last answer); p50 p99 ms of each kind
  cmd/ans   database commands on the wire per answer (reads, holds, refusals) over the whole
            crowd, in a pass of its own through a counting proxy (the local server's background
            work included)
  cmd/read cmd/ref   the same per read and per refusal of the sold-out product, exactly: waves of
            reads alone and of hold attempts alone after the counted pass sold out, each counted
            with nothing in flight at its start and end
  5xx       5xx and transport errors of both passes, their warm-ups and waves (must be 0)";

pub fn header() -> String {
    format!(
        "{:<5} {:>7} {:>4} {:>6} {:>8} {:>6} {:>6} {:>6} {:>8} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>6} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>4}  audit",
        "crowd",
        "clients",
        "bkts",
        "stock",
        "sold out",
        "run",
        "db ms",
        "holds",
        "holds/s",
        "p50",
        "p99",
        "refusals",
        "ref/s",
        "p50",
        "p99",
        "reads",
        "reads/s",
        "p50",
        "p99",
        "cmd/ans",
        "cmd/read",
        "cmd/ref",
        "5xx",
    )
}

pub fn table(results: &[&CrowdResult]) -> String {
    let mut out = header();
    for result in results {
        out.push('\n');
        out.push_str(&row(result));
    }
    out
}

/// One round's line of [`table`].
pub fn row(result: &CrowdResult) -> String {
    let rush = &result.rush;
    let seen = &rush.shopping;
    let kind = |timing: &Timing| {
        let (p50, p99) = timing.percentiles();
        format!(
            "{:>8.1} {:>7.2} {:>7.2}",
            timing.per_second(),
            millis(p50),
            millis(p99)
        )
    };
    let per = |commands: Option<(u64, u64)>| {
        commands.map_or("-".to_owned(), |(commands, answers)| {
            format!("{:.2}", commands as f64 / answers.max(1) as f64)
        })
    };
    let wire = result.wire.as_ref();
    let server_errors = seen.server_errors()
        + rush.warmup_failures
        + wire.map_or(0, |wire| {
            wire.rush.shopping.server_errors()
                + wire.rush.warmup_failures
                + wire.wave_failures.values().sum::<u64>()
        });
    let problems = result.problems();
    let verdict = match (&result.audit, problems.is_empty()) {
        (Ok(summary), true) => summary.clone(),
        _ => format!("FAILED: {}", problems.join("; ")),
    };
    let sold_out = rush.sold_out_after().map_or("-".to_owned(), |after| {
        format!("{:.3}", after.as_secs_f64())
    });
    format!(
        "{:<5} {:>7} {:>4} {:>6} {:>8} {:>6.3} {:>6} {:>6} {} {:>8} {} {:>6} {} {:>7} {:>8} {:>7} {:>4}  {}",
        "",
        result.config.clients,
        result.config.buckets,
        result.config.stock,
        sold_out,
        (rush.ended - rush.started).as_secs_f64(),
        result
            .database_ms_per_answer()
            .map_or("-".to_owned(), |ms| format!("{ms:.3}")),
        seen.holds.count(),
        kind(&seen.holds),
        seen.refusals.count(),
        kind(&seen.refusals),
        seen.reads.count(),
        kind(&seen.reads),
        per(wire.map(|wire| (wire.rush_counts.commands, wire.rush.answers()))),
        per(wire.map(|wire| (wire.read_counts.commands, wire.reads))),
        per(wire.map(|wire| (wire.refusal_counts.commands, wire.refusals))),
        server_errors,
        verdict,
    )
}

/// The counted pass's commands by kind, per answer, for the crowd and each wave.
pub fn wire_table(results: &[&CrowdResult]) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  {}\n",
        "crowd on wire",
        "clients",
        "bkts",
        "answers",
        "cmds",
        "queries",
        "preps",
        "execs",
        "pings",
        "others",
        "connections"
    );
    for result in results {
        let Some(wire) = &result.wire else { continue };
        let passes: [(&str, u64, &WireCounts); 3] = [
            ("the crowd", wire.rush.answers(), &wire.rush_counts),
            ("sold-out reads", wire.reads, &wire.read_counts),
            ("refusals", wire.refusals, &wire.refusal_counts),
        ];
        for (pass, answers, counts) in passes {
            let per = |count: u64| count as f64 / answers.max(1) as f64;
            out.push_str(&format!(
                "{:<16} {:>7} {:>4} {:>7} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}  {}\n",
                pass,
                result.config.clients,
                result.config.buckets,
                answers,
                per(counts.commands),
                per(counts.queries),
                per(counts.prepares),
                per(counts.executes),
                per(counts.pings),
                per(counts.others),
                counts.connections,
            ));
        }
    }
    out
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

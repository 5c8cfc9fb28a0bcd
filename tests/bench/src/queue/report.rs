//! The waiting room's tables, their spread over the rounds, and the legend.

use std::time::Duration;

use sqlx::types::chrono::NaiveDateTime;

use super::audit::DrawRow;
use super::{Cost, Pass, QueueResult};
use crate::shoppers::Timing;

pub const LEGEND: &str = "\
queue columns: phases of the timed pass (straight to the database) unless said; each phase is
measured from a moment with nothing in flight to the next
  join      every buyer's POST /api/products/{id}/queue before the start
  sale      from the start to the last buyer's hold: every entry read, hold and refusal (the
            draw included); its kinds on the lines below it
  read      the wave of entry reads alone after the sale (--wire seconds)
  refused   holds without a valid Admission-Token (--refused): each must be 403
  ops/s p50 p99   answers per second over the phase (a kind: over its own span), latency in ms
  cmd/op    database commands per answer on the wire, exactly, in the counted pass (its own
            answers; the local server's background work included)
  stmt/op   the server's Questions + Com_stmt_prepare + Com_admin_commands per answer, timed
            pass (a CALL counts once, not its body); sel ins call: Com_select, Com_insert,
            Com_call_procedure per answer (a procedure's own statements counted in them)
  db ms svc ms   CPU ms per answer of mariadbd and of the service's threads
  others    sessions of other clients on the server at either end of the phase: above 0, the
            status counters and mariadbd's CPU include their work
start columns: claim = the draw's claimed_at - the start; draw = finished_at - claimed_at (its
  row in queue_draws); positioned = the start to the first read showing the last buyer a
  position; claims = locking reads of the pre-queue sent (a claim each, counted pass); max/s =
  the most buyers admitted in one second since the start (must be <= the rate)";

/// The phases' names, in the order of `Pass::costs`.
const PHASES: [&str; 4] = ["join", "sale", "read", "refused"];

/// Every round's costs per answer by phase, and the sale's kinds.
pub fn costs_table(rounds: &[QueueResult]) -> String {
    let mut out = format!(
        "{:<5} {:<10} {:>7} {:>8} {:>7} {:>7} {:>6} {:>7} {:>5} {:>5} {:>5} {:>6} {:>6} {:>6}\n",
        "round",
        "phase",
        "answers",
        "ops/s",
        "p50",
        "p99",
        "cmd/op",
        "stmt/op",
        "sel",
        "ins",
        "call",
        "db ms",
        "svc ms",
        "others"
    );
    for (number, result) in rounds.iter().enumerate() {
        let timed = &result.timed;
        for (phase, name) in PHASES.iter().enumerate() {
            let (answers, timing) = phase_answers(timed, phase);
            if answers == 0 {
                // No wave of reads (`--wire 0`).
                continue;
            }
            let (rate, p50, p99) = speed(answers, timing, timed);
            let cost = &timed.costs[phase];
            let counted = result
                .counted
                .as_ref()
                .map(|counted| (phase_answers(counted, phase).0, &counted.costs[phase]));
            let status = cost.status.as_ref();
            let per = |counter: &str| {
                status.map_or("-".to_owned(), |c| {
                    format!("{:.2}", c.per_op(counter, answers))
                })
            };
            let cpu = |seconds: Option<f64>| {
                seconds.map_or("-".to_owned(), |s| {
                    format!("{:.3}", s * 1000.0 / answers.max(1) as f64)
                })
            };
            out.push_str(&format!(
                "{:<5} {:<10} {:>7} {} {} {} {:>6} {:>7} {:>5} {:>5} {:>5} {:>6} {:>6} {:>6}\n",
                number + 1,
                name,
                answers,
                rate,
                p50,
                p99,
                wire_per(counted).map_or("-".to_owned(), |n| format!("{n:.3}")),
                status_per(cost, answers).map_or("-".to_owned(), |n| format!("{n:.3}")),
                per("Com_select"),
                per("Com_insert"),
                per("Com_call_procedure"),
                cpu(status.and_then(|c| c.database_cpu)),
                cpu(status.map(|c| c.service_cpu)),
                status.map_or("-".to_owned(), |c| c.others.to_string()),
            ));
            if phase == 1 {
                let sale = &timed.sale;
                for (kind, timing) in [
                    ("  reads", &sale.reads),
                    ("  holds", &sale.holds),
                    ("  refusals", &sale.refusals),
                ] {
                    let (p50, p99) = timing.percentiles();
                    out.push_str(&format!(
                        "{:<5} {:<10} {:>7} {:>8.1} {:>7.2} {:>7.2}\n",
                        "",
                        kind,
                        timing.count(),
                        timing.per_second(),
                        millis(p50),
                        millis(p99)
                    ));
                }
            }
        }
    }
    out
}

/// Every round's start: the draw and the admissions.
pub fn start_table(rounds: &[QueueResult]) -> String {
    let mut out = format!(
        "{:<5} {:>9} {:>7} {:>7} {:>10} {:>6} {:>5} {:>7} {:>6} {:>8} {:>4}  audit\n",
        "start",
        "pre-queue",
        "claim s",
        "draw s",
        "positioned",
        "claims",
        "max/s",
        "sale s",
        "holds",
        "refusals",
        "5xx"
    );
    for (number, result) in rounds.iter().enumerate() {
        let timed = &result.timed;
        let problems = result.problems();
        let verdict = match (&timed.audit, problems.is_empty()) {
            (Ok(summary), true) => summary.clone(),
            _ => format!("FAILED: {}", problems.join("; ")),
        };
        let seconds =
            |ms: Option<i64>| ms.map_or("-".to_owned(), |ms| format!("{:.3}", seconds(ms)));
        let draw = timed.draw.as_ref();
        out.push_str(&format!(
            "{:<5} {:>9} {:>7} {:>7} {:>10} {:>6} {:>5} {:>7.2} {:>6} {:>8} {:>4}  {}\n",
            number + 1,
            draw.map_or(0, |d| d.pre_queue_size),
            seconds(draw.map(|d| (d.claimed_at - timed.starts).num_milliseconds())),
            seconds(draw.and_then(DrawRow::took_ms)),
            seconds(positioned(timed)),
            result
                .counted
                .as_ref()
                .map_or("-".to_owned(), |c| c.costs[1].draw_claims.to_string()),
            busiest_second(timed),
            timed.sale.run.as_secs_f64(),
            timed.sale.holds.count(),
            timed.sale.refusals.count(),
            timed.server_errors() + result.counted.as_ref().map_or(0, Pass::server_errors),
            verdict
        ));
    }
    out
}

/// The lowest and highest of each headline figure over the rounds.
pub fn spread(rounds: &[QueueResult]) -> String {
    type Figure = fn(&QueueResult) -> Option<f64>;
    let figures: [(&str, Figure); 14] = [
        ("joins/s", |r| Some(r.timed.joins.ok.per_second())),
        ("join p99 ms", |r| {
            Some(millis(r.timed.joins.ok.percentiles().1))
        }),
        ("cmd/join (wire)", |r| wire_of(r, 0)),
        ("stmt/join (status)", |r| {
            status_per(&r.timed.costs[0], r.timed.joins.count())
        }),
        ("db ms/join", |r| db_ms(r, 0)),
        ("entry reads/s in the sale", |r| {
            Some(r.timed.sale.reads.per_second())
        }),
        ("entry reads/s alone", |r| {
            Some(r.timed.reads.ok.per_second()).filter(|_| r.timed.reads.count() > 0)
        }),
        ("cmd/entry read (wire)", |r| wire_of(r, 2)),
        ("stmt/entry read (status)", |r| {
            status_per(&r.timed.costs[2], r.timed.reads.count())
                .filter(|_| r.timed.reads.count() > 0)
        }),
        ("db ms/entry read", |r| {
            db_ms(r, 2).filter(|_| r.timed.reads.count() > 0)
        }),
        ("draw s", |r| {
            r.timed
                .draw
                .as_ref()
                .and_then(DrawRow::took_ms)
                .map(seconds)
        }),
        ("start to positioned s", |r| {
            positioned(&r.timed).map(seconds)
        }),
        ("cmd/refused hold (wire)", |r| wire_of(r, 3)),
        ("stmt/refused hold (status)", |r| {
            status_per(&r.timed.costs[3], r.timed.refused.count())
        }),
    ];
    let mut out = format!("spread over {} round(s):", rounds.len());
    for (name, figure) in figures {
        let values: Vec<f64> = rounds.iter().filter_map(figure).collect();
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if values.is_empty() {
            continue;
        }
        out.push_str(&format!("\n  {name:<28} {low:>10.3} .. {high:<10.3}"));
    }
    out
}

/// One line per round as it ends.
pub fn line(result: &QueueResult) -> String {
    let timed = &result.timed;
    let problems = result.problems();
    format!(
        "joins {:.0}/s (p99 {:.1} ms), {} cmd/join; draw {} s; sale {:.1} s: {} entry reads ({:.0}/s), {} holds, {} refusals; {} refused 403 ({} cmd each); {}",
        timed.joins.ok.per_second(),
        millis(timed.joins.ok.percentiles().1),
        wire_of(result, 0).map_or("-".to_owned(), |n| format!("{n:.3}")),
        timed
            .draw
            .as_ref()
            .and_then(DrawRow::took_ms)
            .map_or("-".to_owned(), |ms| format!("{:.3}", seconds(ms))),
        timed.sale.run.as_secs_f64(),
        timed.sale.reads.count(),
        timed.sale.reads.per_second(),
        timed.sale.holds.count(),
        timed.sale.refusals.count(),
        timed.refused.ok.count(),
        wire_of(result, 3).map_or("-".to_owned(), |n| format!("{n:.4}")),
        if problems.is_empty() {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", problems.join("; "))
        }
    )
}

/// A phase's answers, and the timing of its expected ones (none for the sale's mix).
fn phase_answers(pass: &Pass, phase: usize) -> (u64, Option<&Timing>) {
    match phase {
        0 => (pass.joins.count(), Some(&pass.joins.ok)),
        1 => (pass.sale.answers(), None),
        2 => (pass.reads.count(), Some(&pass.reads.ok)),
        _ => (pass.refused.count(), Some(&pass.refused.ok)),
    }
}

/// ops/s, p50 and p99, formatted: the sale's over its whole run.
fn speed(answers: u64, timing: Option<&Timing>, pass: &Pass) -> (String, String, String) {
    match timing {
        Some(timing) => {
            let (p50, p99) = timing.percentiles();
            (
                format!("{:>8.1}", timing.per_second()),
                format!("{:>7.2}", millis(p50)),
                format!("{:>7.2}", millis(p99)),
            )
        }
        None => (
            format!(
                "{:>8.1}",
                answers as f64 / pass.sale.run.as_secs_f64().max(1e-9)
            ),
            format!("{:>7}", "-"),
            format!("{:>7}", "-"),
        ),
    }
}

fn wire_per(counted: Option<(u64, &Cost)>) -> Option<f64> {
    let (answers, cost) = counted?;
    let commands = cost.wire.as_ref()?.commands;
    Some(commands as f64 / answers.max(1) as f64)
}

fn wire_of(result: &QueueResult, phase: usize) -> Option<f64> {
    let counted = result.counted.as_ref()?;
    wire_per(Some((
        phase_answers(counted, phase).0,
        &counted.costs[phase],
    )))
}

fn status_per(cost: &Cost, answers: u64) -> Option<f64> {
    cost.status.as_ref().map(|c| c.commands_per_op(answers))
}

fn db_ms(result: &QueueResult, phase: usize) -> Option<f64> {
    let answers = phase_answers(&result.timed, phase).0;
    let cpu = result.timed.costs[phase].status.as_ref()?.database_cpu?;
    Some(cpu * 1000.0 / answers.max(1) as f64)
}

/// Milliseconds from the start to the first read that showed the last buyer its position.
fn positioned(pass: &Pass) -> Option<i64> {
    let last: NaiveDateTime = pass
        .sale
        .seen
        .iter()
        .filter_map(|s| s.positioned_at)
        .max()?;
    Some((last - pass.starts).num_milliseconds())
}

/// The most buyers admitted in one second since the start.
fn busiest_second(pass: &Pass) -> u64 {
    let mut per_second = std::collections::BTreeMap::<i64, u64>::new();
    for at in pass.sale.seen.iter().filter_map(|s| s.admitted_at) {
        *per_second
            .entry((at - pass.starts).num_seconds())
            .or_default() += 1;
    }
    per_second.values().copied().max().unwrap_or(0)
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

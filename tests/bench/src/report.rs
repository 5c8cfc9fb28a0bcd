//! The tables the bench prints, and the legend that says what each column is.

use std::time::Duration;

use flash_sale_local::wire::WireCounts;

use crate::run::RunResult;

pub const LEGEND: &str = "\
columns: ops/s, the database's CPU per operation (db ms: on AWS the writer's, the one part that
does not scale out) and latency percentiles (ms) of the measured phase; per operation:
  cmd/op    database commands (round trips) counted on the wire, in a short phase of their own
            through a counting proxy (flash_sale_local::wire::WireCounter): every command the
            service's connections sent, pings included, over the operations of that phase
  prep/op   of them, statements prepared on the server (COM_STMT_PREPARE); exec/op: executes of
            prepared statements (COM_STMT_EXECUTE; each pins an RDS Proxy connection)
  svc ms    CPU ms of the service: the threads of its own tokio runtime (workers and blocking
            pool); over HTTP the local server with its background work, otherwise the clients'
            loop calling it, the handler or the raw SQL, and the driver
  db ms     CPU ms of the database server's process (mariadbd, /proc/<pid>/stat), when local:
            all of its threads, user and system (the kernel's work for its sockets and fsyncs)
  load ms   CPU ms of the rest of the bench process: the HTTP load generator (reqwest), the
            bench's bookkeeping
  The status counters (second table) and the database's CPU are the whole server's: other
  clients' work during a round is counted too (`others`: their sessions at its start or end).";

pub fn table(results: &[RunResult]) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>4} {:>9} {:>6} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7} {:>6} {:>7}  {}\n",
        "scenario",
        "clients",
        "bkts",
        "ops/s",
        "db ms",
        "p50",
        "p95",
        "p99",
        "cmd/op",
        "prep/op",
        "exec/op",
        "svc ms",
        "load ms",
        "outcomes | invariants"
    );
    for result in results {
        out.push_str(&row(result));
        out.push('\n');
    }
    out
}

/// One result's line of [`table`].
pub fn row(result: &RunResult) -> String {
    let costs = &result.costs;
    let optional = |cpu: Option<f64>| {
        cpu.map_or("-".to_owned(), |cpu| {
            format!("{:.3}", result.ms_per_op(cpu))
        })
    };
    let outcomes: Vec<String> = result
        .outcomes
        .iter()
        .map(|(outcome, n)| format!("{outcome}:{n}"))
        .collect();
    let invariants = match &result.invariants {
        Ok(summary) => format!("invariants {summary}"),
        Err(problem) => format!("INVARIANTS BROKEN: {problem}"),
    };
    let warmup = match result.warmup_failures {
        0 => String::new(),
        n => format!(" (warm-up: {n} 5xx or errors)"),
    };
    format!(
        "{:<16} {:>7} {:>4} {:>9.1} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>6} {:>7} {:>7} {:>6.3} {:>7}  {}{} | {}",
        result.scenario.name(),
        result.clients,
        buckets(result),
        result.per_second(),
        optional(costs.database_cpu),
        millis(result.p50),
        millis(result.p95),
        millis(result.p99),
        on_wire(result, |counts| counts.commands),
        on_wire(result, |counts| counts.prepares),
        on_wire(result, |counts| counts.executes),
        result.ms_per_op(costs.service_cpu),
        optional(costs.load_cpu),
        outcomes.join(" "),
        warmup,
        invariants,
    )
}

/// A count of the phase on the wire per operation, or `-` when there was none.
fn on_wire(result: &RunResult, count: impl Fn(&WireCounts) -> u64) -> String {
    result.wire.as_ref().map_or("-".to_owned(), |wire| {
        format!(
            "{:.2}",
            count(&wire.counts) as f64 / wire.operations.max(1) as f64
        )
    })
}

/// The phase on the wire: each kind of command per operation, and the connections opened.
pub fn wire_table(results: &[RunResult]) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  {}\n",
        "on the wire",
        "clients",
        "bkts",
        "ops",
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
        let per_op = |count: u64| count as f64 / wire.operations.max(1) as f64;
        let counts = &wire.counts;
        out.push_str(&format!(
            "{:<16} {:>7} {:>4} {:>7} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}  {}\n",
            result.scenario.name(),
            result.clients,
            buckets(result),
            wire.operations,
            per_op(counts.commands),
            per_op(counts.queries),
            per_op(counts.prepares),
            per_op(counts.executes),
            per_op(counts.pings),
            per_op(counts.others),
            counts.connections,
        ));
    }
    out
}

/// Each status counter per operation, and the other sessions on the server.
pub fn commands_table(results: &[RunResult]) -> String {
    let columns = [
        ("stmts", "Questions"),
        ("execs", "Com_stmt_execute"),
        ("preps", "Com_stmt_prepare"),
        ("closes", "Com_stmt_close"),
        ("pings", "Com_admin_commands"),
        ("begins", "Com_begin"),
        ("commits", "Com_commit"),
        ("rollbks", "Com_rollback"),
        ("calls", "Com_call_procedure"),
        ("selects", "Com_select"),
        ("inserts", "Com_insert"),
        ("updates", "Com_update"),
    ];
    let mut out = format!(
        "{:<16} {:>7} {:>4} {:>7}",
        "status counters", "clients", "bkts", "cmds"
    );
    for (title, _) in columns {
        out.push_str(&format!(" {title:>7}"));
    }
    out.push_str("  others\n");
    for result in results {
        out.push_str(&format!(
            "{:<16} {:>7} {:>4} {:>7.2}",
            result.scenario.name(),
            result.clients,
            buckets(result),
            result.costs.commands_per_op(result.operations)
        ));
        for (_, counter) in columns {
            out.push_str(&format!(
                " {:>7.2}",
                result.costs.per_op(counter, result.operations)
            ));
        }
        out.push_str(&format!("  {}\n", result.costs.others));
    }
    out
}

/// The stock buckets of the round's product; the row-lock baseline has one row whatever the group's.
fn buckets(result: &RunResult) -> String {
    if result.scenario.is_rowlock() {
        "-".to_owned()
    } else {
        result.buckets.to_string()
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

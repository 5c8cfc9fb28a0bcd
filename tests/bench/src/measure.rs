//! What a measured phase cost: CPU time of the service's threads, of the rest of the bench process
//! and of the database server's process (from `/proc`), and what the database was asked to do (its
//! global status counters).
//!
//! The counters are the whole server's: anything else using it during a round (another
//! developer's tests) is counted too, which is why each snapshot also notes the sessions other
//! than the bench's. The service's own commands, exactly, come from the phase on the wire
//! (`run::count_on_wire`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::{Executor, MySqlConnection, Row};

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`): 100 on every Linux architecture.
const TICKS_PER_SECOND: f64 = 100.0;
/// The service runtime's worker threads: as many as the machine has cores, as `#[tokio::main]`.
fn service_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The threads of one service runtime, live and exited, so their CPU time can be summed.
#[derive(Default)]
pub struct ServiceThreads {
    live: Mutex<Vec<String>>,
    exited_ticks: AtomicU64,
}

impl ServiceThreads {
    /// A runtime of its own for the service (its workers, its blocking pool), so the service's
    /// CPU is told apart from the load generator's: every thread it starts is recorded here, and
    /// what a thread used is kept when it exits.
    pub fn runtime(self: &Arc<Self>) -> std::io::Result<tokio::runtime::Runtime> {
        let (starting, stopping) = (self.clone(), self.clone());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(service_workers())
            .thread_name("service")
            .enable_all()
            .on_thread_start(move || {
                if let Some(tid) = this_thread() {
                    lock(&starting.live).push(tid);
                }
            })
            .on_thread_stop(move || {
                let Some(tid) = this_thread() else { return };
                let mut live = lock(&stopping.live);
                if let Some(ticks) = thread_ticks(&tid) {
                    stopping.exited_ticks.fetch_add(ticks, Ordering::Relaxed);
                }
                live.retain(|live| *live != tid);
            })
            .build()
    }

    /// CPU ticks (user + system) the runtime's threads have used so far.
    fn ticks(&self) -> u64 {
        let live = lock(&self.live);
        let running: u64 = live.iter().filter_map(|tid| thread_ticks(tid)).sum();
        running + self.exited_ticks.load(Ordering::Relaxed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// This thread's id, from `/proc/thread-self` (a link to `<pid>/task/<tid>`).
fn this_thread() -> Option<String> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    Some(link.file_name()?.to_str()?.to_owned())
}

fn thread_ticks(tid: &str) -> Option<u64> {
    stat_ticks(&format!("/proc/self/task/{tid}/stat"))
}

/// utime + stime of a `/proc/…/stat` file. The fields are counted after the command name's
/// closing parenthesis, since the name itself may hold spaces.
fn stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The database server's process when it runs on this machine: the one `mariadbd` (or
/// `mysqld`) process, and only when `DATABASE_URL` points at a loopback address.
pub fn database_process(database_url: &str) -> Option<u32> {
    let host = url::Url::parse(database_url).ok()?.host_str()?.to_owned();
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        return None;
    }
    let mut found = std::fs::read_dir("/proc").ok()?.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        matches!(name.trim(), "mariadbd" | "mysqld").then_some(pid)
    });
    match (found.next(), found.next()) {
        (Some(pid), None) => Some(pid),
        _ => None,
    }
}

/// The status counters taken at each snapshot; `Com_admin_commands` counts `COM_PING`.
const COUNTERS: [&str; 12] = [
    "Questions",
    "Com_stmt_prepare",
    "Com_stmt_execute",
    "Com_stmt_close",
    "Com_admin_commands",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_call_procedure",
    "Com_select",
    "Com_insert",
    "Com_update",
];

/// Everything measured at one instant.
pub struct Snapshot {
    service: u64,
    process: Option<u64>,
    database: Option<u64>,
    counters: BTreeMap<String, u64>,
    others: u64,
}

/// Where snapshots are read from: the service's threads, this process, the database's process,
/// and a connection of the bench's own (its queries go as text, so they prepare nothing).
pub struct Meter<'a> {
    pub threads: &'a ServiceThreads,
    pub database_pid: Option<u32>,
}

impl Meter<'_> {
    pub async fn snapshot(&self, conn: &mut MySqlConnection) -> Result<Snapshot, String> {
        let names = COUNTERS.map(|name| format!("'{name}'")).join(", ");
        let rows = conn
            .fetch_all(format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({names})").as_str())
            .await
            .map_err(|err| format!("reading the server's status counters: {err}"))?;
        let mut counters = BTreeMap::new();
        for row in rows {
            let name: String = row.try_get(0).map_err(|err| err.to_string())?;
            let value: String = row.try_get(1).map_err(|err| err.to_string())?;
            counters.insert(name, value.parse().unwrap_or(0));
        }
        let others: i64 = conn
            .fetch_one(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE (DB IS NULL OR DB <> DATABASE()) AND USER <> 'system user' \
                 AND ID <> CONNECTION_ID()",
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|err| format!("counting the server's other sessions: {err}"))?;
        Ok(Snapshot {
            service: self.threads.ticks(),
            process: stat_ticks("/proc/self/stat"),
            database: self
                .database_pid
                .and_then(|pid| stat_ticks(&format!("/proc/{pid}/stat"))),
            counters,
            others: others.max(0) as u64,
        })
    }
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Default)]
pub struct Costs {
    /// CPU seconds of the service's runtime.
    pub service_cpu: f64,
    /// CPU seconds of the rest of the bench process: the load generator, when it is not the
    /// service itself.
    pub load_cpu: Option<f64>,
    /// CPU seconds of the database server's process, when it runs here.
    pub database_cpu: Option<f64>,
    /// Status counter deltas; the two snapshot queries' own statements taken off.
    pub counters: BTreeMap<String, u64>,
    /// Sessions of other clients on the server at either snapshot (their work is counted too).
    pub others: u64,
}

impl Costs {
    pub fn between(before: &Snapshot, after: &Snapshot) -> Self {
        let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
        let service = after.service.saturating_sub(before.service);
        let mut counters: BTreeMap<String, u64> = after
            .counters
            .iter()
            .map(|(name, value)| {
                let earlier = before.counters.get(name).copied().unwrap_or(0);
                (name.clone(), value.saturating_sub(earlier))
            })
            .collect();
        // The bench's own: the earlier snapshot's SELECT (its SHOW counted itself before the
        // read) and the later snapshot's SHOW.
        if let Some(questions) = counters.get_mut("Questions") {
            *questions = questions.saturating_sub(2);
        }
        if let Some(selects) = counters.get_mut("Com_select") {
            *selects = selects.saturating_sub(1);
        }
        Self {
            service_cpu: seconds(service),
            load_cpu: before
                .process
                .zip(after.process)
                .map(|(b, a)| seconds(a.saturating_sub(b).saturating_sub(service))),
            database_cpu: before
                .database
                .zip(after.database)
                .map(|(b, a)| seconds(a.saturating_sub(b))),
            counters,
            others: before.others.max(after.others),
        }
    }

    /// A counter's delta per operation.
    pub fn per_op(&self, counter: &str, operations: u64) -> f64 {
        self.counters.get(counter).copied().unwrap_or(0) as f64 / operations.max(1) as f64
    }

    /// Database commands per operation: statements the clients sent (`Questions`: text queries
    /// and prepared executes, each statement of a multi-statement request, a `CALL` once and
    /// not its body), plus prepares and pings, which `Questions` leaves out.
    pub fn commands_per_op(&self, operations: u64) -> f64 {
        ["Questions", "Com_stmt_prepare", "Com_admin_commands"]
            .iter()
            .map(|counter| self.per_op(counter, operations))
            .sum()
    }
}

//! Operations with side effects outside the database: the transaction commits first, then its
//! events are published and its deadlines scheduled, best effort and safe to repeat. A failed
//! side effect never fails the operation the client asked for: it is logged with its ids and
//! counted, and the sweeper (or a reader's own check of the deadline) covers for it.
//!
//! Time: the transaction must end within [`REQUEST_DEADLINE`] (or the client hears 503), and the
//! side effects after it get [`SIDE_EFFECTS_BUDGET`] of their own. So a slow AWS call can never
//! turn a committed hold or order into a 503, which a client retrying without an Idempotency-Key
//! would answer by reserving twice.

pub mod holds;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod queue;
pub mod sweep;

use std::future::Future;
use std::time::Duration;

use crate::domain::deadline::Deadline;
use crate::error::Error;
use crate::metrics;
use crate::ports::{DeadlineScheduler, EventPublisher};

/// The longest a request's database work runs before it is answered 503: the bound on what the
/// database's own timeouts cannot stop, a server that stops answering on an open connection
/// (frozen, a network black hole, a failover caught mid-statement). Above the 3 s wait for a
/// connection plus the 5 s lock wait, so those end by their own errors first; below API Gateway's
/// 29 s together with [`SIDE_EFFECTS_BUDGET`]. Work cut off may still have committed: a client
/// repeating it with its Idempotency-Key gets that result.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(9);

/// How long the side effects after a commit (publish, schedule, unschedule) may take together
/// before the answer goes out without them; each AWS call is bounded on its own as well.
pub const SIDE_EFFECTS_BUDGET: Duration = Duration::from_secs(3);

/// Runs `work` within [`REQUEST_DEADLINE`], or fails it as `DeadlineExceeded` (a 503).
pub async fn within_request_deadline<T>(
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(REQUEST_DEADLINE, work)
        .await
        .unwrap_or(Err(Error::DeadlineExceeded(REQUEST_DEADLINE)))
}

/// Runs the side effects of a committed `operation` within [`SIDE_EFFECTS_BUDGET`]; past it,
/// they are dropped, logged and counted (what they did not do, the sweeper does).
pub(crate) async fn after_commit(operation: &'static str, effects: impl Future<Output = ()>) {
    if tokio::time::timeout(SIDE_EFFECTS_BUDGET, effects)
        .await
        .is_err()
    {
        metrics::count(metrics::SIDE_EFFECTS_TIMED_OUT, 1);
        tracing::error!(
            operation,
            budget_ms = SIDE_EFFECTS_BUDGET.as_millis() as u64,
            "side effects after commit ran out of time; answered without them, the sweeper covers"
        );
    }
}

/// The side-effect adapters an operation may need.
#[derive(Clone, Copy)]
pub struct Effects<'a> {
    pub scheduler: &'a dyn DeadlineScheduler,
    pub publisher: &'a dyn EventPublisher,
}

pub(crate) async fn schedule(
    scheduler: &dyn DeadlineScheduler,
    deadline: Deadline,
    at: chrono::NaiveDateTime,
) {
    if let Err(err) = scheduler.schedule(&deadline, at).await {
        metrics::count(metrics::DEADLINE_SCHEDULE_FAILED, 1);
        tracing::error!(deadline = deadline.name(), error = %err, "could not schedule a deadline trigger; the sweeper will settle it");
    }
}

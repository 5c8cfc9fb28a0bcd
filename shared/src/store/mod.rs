//! The transactions, one file per job. Each public function is one business operation that owns
//! its transaction(s) from `begin()` to `commit()`.
//!
//! Invariant, enforced per bucket by a CHECK constraint as well: `available + reserved + sold =
//! total`, none negative; a product's total is the sum of its buckets'. Correctness comes from
//! InnoDB row locks only, taken in one order everywhere:
//!
//! ```text
//! buyer limit rows -> holds -> orders -> stock buckets (in bucket order when several)
//! ```
//!
//! A stock bucket row is the contended one, so it is always locked last, by the one conditional
//! UPDATE that checks and moves stock, immediately followed by COMMIT. A product's stock may be
//! split over several buckets so that concurrent holds lock different rows.
//!
//! Deadlines need no job to take effect: an `active` hold whose `expires_at` has passed, or a
//! `pending_payment` order whose `cancel_at` has passed (by the database clock), is expired or
//! cancelled for every reader and every check. (An order's `cancel_at` is its `payment_due_at`
//! plus the grace in which a payment received in time may still be applied:
//! [`crate::domain::payment`].) Settling the row (units back to `available_stock`) is
//! bookkeeping that its trigger, the sweeper, a reservation that finds the counter short or a
//! late payment will do, whichever comes first.
//!
//! Every change worth telling other systems about writes its domain event to the outbox in the
//! same transaction ([`outbox`]); functions here return those events with their result.
//!
//! Every transaction ends in `db::finish` (or an explicit rollback): none is left to a drop,
//! whose ROLLBACK the pool sends from a background task that a frozen Lambda container never
//! runs.

pub mod buckets;
pub mod connection;
pub mod db;
pub mod expiry;
pub mod gather;
pub mod holds;
pub mod inbox;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod pool;
pub mod product_reads;
pub mod products;
pub mod queue;
pub mod reconcile;
pub mod release;
pub mod rows;
pub mod session;
pub mod settle;
pub mod sql;

use std::time::Duration;

use crate::error::Error;

pub(crate) fn chrono_duration(duration: Duration) -> Result<chrono::Duration, Error> {
    chrono::Duration::from_std(duration).map_err(|err| Error::Config(err.to_string()))
}

pub(crate) fn corrupt(column: &str, value: &str) -> Error {
    Error::Database(sqlx::Error::Decode(
        format!("unexpected value in {column}: {value:?}").into(),
    ))
}

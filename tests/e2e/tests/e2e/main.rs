//! The end-to-end tests, one module per area, in one test binary: one link instead of a dozen,
//! and the tests of every area share the test threads. Each test still has a database of its own.
//! The fault tests, which stop and freeze a MariaDB server, are a binary of their own (faults.rs).

mod api;
mod aws;
mod buckets;
mod buyers;
mod concurrency;
mod db_faults;
mod events;
mod expiry;
mod literals;
mod migrate;
mod openapi;
mod payments;
mod pool;
mod product_reads;
mod queue;
mod queue_wire;
mod readme;
mod reconcile;
mod secrets;
mod slow_path;
mod template;
mod time_precision;
mod wire;

//! The sale as the flags describe it, and every figure's default: what a hold costs the writer
//! (measured by the bench), the stack's TTLs, and the functions on a sale's path.

use super::limits::{
    DATABASE_MAX_ACU, INSTANCE_VCPUS, LIMITS, MAX_CONNECTIONS, aws_default, provisioned,
    serverless_max_connections,
};

/// Database CPU per hold, ms: the service's hold over HTTP, one stock row, 64 clients, measured
/// on 2026-12-06 against the row-lock design in one run (tests/bench/README.md, "Issue 21,
/// continued": "our hold 1,185/s (1.13×), 1.02 round trips, 0.95 ms"). That machine was about
/// 2.5× slower than the one of 2026-12-04 (0.32–0.35 ms for the same code), so this default errs
/// high; Aurora's own figure is not measured.
pub(super) const WRITER_MS_PER_HOLD: f64 = 0.95;
/// The same run's refusal, one plain `SELECT` (0.27 ms): what an uncached read costs the writer.
pub(super) const WRITER_MS_PER_READ: f64 = 0.27;
/// An order and its payment cost the writer 3.1 holds: the bench's `flow` (hold, order, paid
/// webhook) 2.674 ms against `hot-hold`'s 0.652 ms in the same run (tests/bench/README.md,
/// 2026-12-03), (2.674 − 0.652) / 0.652. Applied to whatever a hold is said to cost.
pub(super) const ORDER_COST_IN_HOLDS: f64 = 3.1;
/// How long a hold keeps its stock row locked, ms, at most: one row serialises its holds, so the
/// same run's 1,185 holds/s on one row bound it by 1 / 1,185 s (the run was partly CPU-bound, so
/// the true figure is lower). A hold holds the lock across no round trip: the `CALL` does it all.
pub(super) const LOCK_MS_PER_HOLD: f64 = 1_000.0 / 1_185.0;
/// Lambda → RDS Proxy → Aurora round trip, ms: issue 23's estimate, not measured.
const DB_RTT_MS: f64 = 1.0;
/// vCPUs per Aurora capacity unit. AWS publishes memory only ("approximately 2 GiB of memory,
/// corresponding CPU, and networking"); the memory-optimised classes Serverless v2 is priced
/// against have 8 GiB per vCPU (db.r6g.large: 2 vCPUs, 16 GiB), hence 0.25. An assumption.
/// https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/aurora-serverless-v2.how-it-works.html
const VCPUS_PER_ACU: f64 = 0.25;
/// `HOLD_TTL_SECONDS`, and `ORDER_PAYMENT_TTL_SECONDS` + `PAYMENT_GRACE_SECONDS`: the defaults.
const HOLD_TTL_SECONDS: f64 = 120.0;
const ORDER_TTL_SECONDS: f64 = 900.0 + 300.0;

/// The functions on a sale's path: default duration (ms, an assumption until measured on AWS:
/// the dashboard's Duration is the figure to pass) and database round trips per request (README,
/// "The database on the wire"; hold-expiry counted from `store/expiry.rs`).
pub(super) const FUNCTIONS: [(&str, f64, f64); 8] = [
    ("create-hold", 40.0, 1.0),       // the CALL, then CreateSchedule
    ("create-order", 80.0, 9.0),      // PutEvents, CreateSchedule, DeleteSchedule after commit
    ("payment-webhook", 30.0, 0.0),   // verify, SendMessage
    ("payment-processor", 30.0, 7.0), // per message, then PutEvents
    ("hold-expiry", 40.0, 7.0),       // then PutEvents
    ("get-product", 10.0, 1.0),
    ("get-queue-entry", 10.0, 1.0),
    ("get-queue-summary", 10.0, 1.0),
];
pub(super) const CREATE_HOLD: usize = 0;
pub(super) const CREATE_ORDER: usize = 1;
pub(super) const PAYMENT_WEBHOOK: usize = 2;
pub(super) const PAYMENT_PROCESSOR: usize = 3;
pub(super) const HOLD_EXPIRY: usize = 4;
pub(super) const GET_PRODUCT: usize = 5;
pub(super) const GET_QUEUE_ENTRY: usize = 6;
pub(super) const GET_QUEUE_SUMMARY: usize = 7;

/// A sale, as the flags describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    pub holds_per_second: f64,
    pub visitors: f64,
    pub products: f64,
    pub region: String,
    pub hold_ttl_seconds: f64,
    pub order_ttl_seconds: f64,
    pub peak_seconds: f64,
    /// Share of holds redeemed into orders (each then paid by one webhook).
    pub order_share: f64,
    /// Share of the holds that go to the hottest product.
    pub hot_share: f64,
    /// Every visitor's page asks once per this many seconds.
    pub poll_seconds: f64,
    pub waiting_room: bool,
    /// CloudFront caches that each ask the origin once a second per product (1 with Origin Shield).
    pub edge_caches: f64,
    pub writer_ms_per_hold: f64,
    /// `None`: [`ORDER_COST_IN_HOLDS`] holds.
    pub writer_ms_per_order: Option<f64>,
    pub writer_ms_per_read: f64,
    pub lock_ms_per_hold: f64,
    pub db_rtt_ms: f64,
    pub vcpus_per_acu: f64,
    /// The writer's CPU may be this busy at the peak.
    pub writer_cpu_max: f64,
    /// A stock bucket's row may be locked this share of the time (a lock is a queue: at 0.5 a
    /// hold waits, on average, about as long as it holds the lock).
    pub bucket_busy_max: f64,
    /// `db.serverless`, or a provisioned `db.r*.*` class.
    pub instance_class: String,
    pub durations_ms: [f64; FUNCTIONS.len()],
    /// `--quota` overrides, by index into [`LIMITS`].
    pub quotas: [Option<f64>; LIMITS.len()],
}

impl Sale {
    /// A sale of this rate and crowd, every other figure at its default.
    pub fn new(holds_per_second: f64, visitors: f64) -> Self {
        Self {
            holds_per_second,
            visitors,
            products: 1.0,
            region: "us-east-1".to_owned(),
            hold_ttl_seconds: HOLD_TTL_SECONDS,
            order_ttl_seconds: ORDER_TTL_SECONDS,
            peak_seconds: 60.0,
            order_share: 0.5,
            hot_share: 1.0,
            poll_seconds: 5.0,
            waiting_room: false,
            edge_caches: 20.0,
            writer_ms_per_hold: WRITER_MS_PER_HOLD,
            writer_ms_per_order: None,
            writer_ms_per_read: WRITER_MS_PER_READ,
            lock_ms_per_hold: LOCK_MS_PER_HOLD,
            db_rtt_ms: DB_RTT_MS,
            vcpus_per_acu: VCPUS_PER_ACU,
            writer_cpu_max: 0.7,
            bucket_busy_max: 0.5,
            instance_class: "db.serverless".to_owned(),
            durations_ms: FUNCTIONS.map(|(_, ms, _)| ms),
            quotas: [None; LIMITS.len()],
        }
    }

    /// Every limit's value: an override, AWS's default for the region, or the database's.
    pub fn limits(&self) -> [f64; LIMITS.len()] {
        let mut limits = [0.0; LIMITS.len()];
        for (index, limit) in limits.iter_mut().enumerate() {
            *limit = self.quotas[index]
                .or_else(|| aws_default(index, &self.region))
                .unwrap_or(0.0);
        }
        let class = provisioned(&self.instance_class);
        limits[MAX_CONNECTIONS] = self.quotas[MAX_CONNECTIONS].unwrap_or(match class {
            Some((_, connections)) => connections,
            None => serverless_max_connections(limits[DATABASE_MAX_ACU]),
        });
        limits[INSTANCE_VCPUS] = self.quotas[INSTANCE_VCPUS].unwrap_or_else(|| {
            class.map_or(limits[DATABASE_MAX_ACU] * self.vcpus_per_acu, |c| c.0)
        });
        limits
    }

    pub(super) fn serverless(&self) -> bool {
        provisioned(&self.instance_class).is_none()
    }
}

/// 1,000 holds/s, half redeemed, on one product, with round figures everywhere.
#[cfg(test)]
pub(super) fn round_sale() -> Sale {
    let mut sale = Sale::new(1_000.0, 10_000.0);
    sale.writer_ms_per_hold = 1.0;
    sale.writer_ms_per_order = Some(3.0);
    sale.writer_ms_per_read = 0.0;
    sale.lock_ms_per_hold = 1.0;
    sale.db_rtt_ms = 1.0;
    sale.edge_caches = 0.0;
    sale
}

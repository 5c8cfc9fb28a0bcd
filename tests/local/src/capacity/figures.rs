//! What a plan holds: every figure at the sale's peak, a row per function, and each figure that
//! has a limit checked against it.

use super::limits::LIMITS;

/// One function at the peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Lambda {
    pub name: &'static str,
    pub rate: f64,
    pub ms: f64,
    pub concurrency: f64,
    /// From no container to `concurrency` at the scaling rate, seconds.
    pub seconds_to_scale: f64,
}

/// A figure against its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Index into [`LIMITS`].
    pub limit: usize,
    pub needed: f64,
    pub available: f64,
}

impl Check {
    pub fn exceeded(&self) -> bool {
        self.needed > self.available
    }

    pub fn key(&self) -> &'static str {
        LIMITS[self.limit].0
    }
}

/// Every figure of the plan, per second at the peak unless named otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub orders: f64,
    pub expiries: f64,
    pub entry_reads: f64,
    pub origin_reads: f64,
    pub edge_requests: f64,
    pub api_requests: f64,
    pub busiest_route: (&'static str, f64),
    pub lambdas: Vec<Lambda>,
    pub concurrency: f64,
    pub create_schedules: f64,
    pub delete_schedules: f64,
    pub scheduler_invocations: f64,
    pub schedules_alive: f64,
    /// How far Scheduler's expiry triggers fall behind by the end of the peak, seconds.
    pub expiry_backlog_seconds: f64,
    pub webhooks: f64,
    pub processor_concurrency: f64,
    pub put_events: f64,
    pub secret_reads_opening: f64,
    pub secret_reads_steady: f64,
    pub writer_vcpus: f64,
    /// The writer's capacity needed at `writer_cpu_max`: ACUs (Serverless v2) or vCPUs.
    pub writer_capacity: f64,
    pub max_connections: f64,
    pub proxy_connections: f64,
    pub connections_in_use: f64,
    pub hold_lock_seconds: f64,
    pub settle_lock_seconds: f64,
    pub buckets_for_holds: f64,
    pub buckets: f64,
    pub checks: Vec<Check>,
}

impl Plan {
    /// The limits the sale exceeds: what must be raised (or designed around) before it.
    pub fn exceeded(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|check| check.exceeded())
            .collect()
    }

    pub(super) fn check(&self, limit: usize) -> Option<&Check> {
        self.checks.iter().find(|check| check.limit == limit)
    }
}

//! How a pass's phases are measured: each from one moment with nothing in flight to the next,
//! by the server's counters and the CPU (timed pass) or the commands on the wire (counted pass).

use flash_sale_local::wire::{WireCounter, WireCounts};
use shared::store::pool::{Connection, Pool};

use crate::measure::{Costs, Meter, ServiceThreads, Snapshot};
use crate::run::RELEASED;

/// What a phase cost: the server's counters and the CPU (timed pass), or the commands on the
/// wire (counted pass).
#[derive(Debug, Clone, Default)]
pub struct Cost {
    pub status: Option<Costs>,
    pub wire: Option<WireCounts>,
    /// Claims of the draw sent (its locking read of the pre-queue), on the wire.
    pub draw_claims: usize,
}

/// How a pass is measured.
pub enum Counting<'a> {
    /// The service straight to the database: CPU and the server's counters.
    Status(&'a ServiceThreads, Option<u32>),
    /// Through the counting proxy.
    Wire(&'a WireCounter),
}

/// Where a phase's costs are read: a snapshot at its start and one at its end, each once the
/// pool has its connections back.
pub enum Probe<'a> {
    Status {
        meter: Meter<'a>,
        conn: Connection,
        before: Option<Snapshot>,
    },
    Wire(&'a WireCounter),
}

impl<'a> Probe<'a> {
    /// The timed pass's snapshots are read on a connection of the bench's own, from `pool`.
    pub async fn new(counting: Counting<'a>, pool: &Pool) -> Result<Self, String> {
        Ok(match counting {
            Counting::Status(threads, database_pid) => Probe::Status {
                meter: Meter {
                    threads,
                    database_pid,
                },
                conn: pool.acquire().await.map_err(|err| err.to_string())?,
                before: None,
            },
            Counting::Wire(counter) => Probe::Wire(counter),
        })
    }

    pub async fn begin(&mut self) -> Result<(), String> {
        tokio::time::sleep(RELEASED).await;
        match self {
            Probe::Status {
                meter,
                conn,
                before,
            } => *before = Some(meter.snapshot(conn).await?),
            Probe::Wire(counter) => {
                counter.take();
            }
        }
        Ok(())
    }

    pub async fn end(&mut self) -> Result<Cost, String> {
        tokio::time::sleep(RELEASED).await;
        match self {
            Probe::Status {
                meter,
                conn,
                before,
            } => {
                let after = meter.snapshot(conn).await?;
                Ok(Cost {
                    status: before.take().map(|before| Costs::between(&before, &after)),
                    ..Cost::default()
                })
            }
            Probe::Wire(counter) => {
                let mut counts = counter.take();
                let draw_claims = counts
                    .query_texts
                    .iter()
                    .filter(|sql| sql.contains("LOCK IN SHARE MODE"))
                    .count();
                counts.query_texts = Vec::new();
                Ok(Cost {
                    wire: Some(counts),
                    draw_claims,
                    ..Cost::default()
                })
            }
        }
    }
}

//! On-demand reconciliation (`aws lambda invoke --payload '{"repair":true}'`): recomputes every
//! stock bucket's counters from its holds and orders, reports drift (error log + `StockDrift`
//! metric) and repairs it only when the payload asks. The sweeper runs the same check, without
//! repair, every time it runs.

use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::ProductId;
use shared::store::pool::Pool;
use shared::store::reconcile::{self, ReconcileReport};

pub struct Deps {
    pub pool: Pool,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        Ok(Self {
            pool: LambdaStartup::from_env()?.pool().await?,
        })
    }
}

/// The invocation payload; `{}` checks every product and repairs nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Set drifted counters to what the holds and orders say.
    #[serde(default)]
    pub repair: bool,
    /// Only this product.
    #[serde(default)]
    pub product_id: Option<u64>,
}

pub async fn handle(deps: &Deps, request: Request) -> Result<ReconcileReport, Error> {
    let report = reconcile::reconcile(
        &deps.pool,
        request.product_id.map(ProductId),
        request.repair,
    )
    .await?;
    tracing::info!(
        buckets_checked = report.buckets_checked,
        drifted = report.drifted.len(),
        totals_drifted = report.totals_drifted.len(),
        unresolved = report.unresolved(),
        repair = request.repair,
        "reconciliation done"
    );
    Ok(report)
}

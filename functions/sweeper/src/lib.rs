//! The periodic catch-all: settles every hold past its expiry that no trigger settled, and
//! delivers payment events waiting in the inbox. Safe to run concurrently with everything.

use serde::Serialize;
use shared::inbox::{self, DrainReport, RetryPolicy};
use shared::{Config, Error, stock};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
    pub payment_retry: RetryPolicy,
}

impl Deps {
    pub fn from_env() -> Result<Self, Error> {
        let config = Config::from_env()?;
        Ok(Self {
            pool: shared::db::lambda_pool(&config)?,
            payment_retry: config.payment_retry_policy(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct SweepReport {
    pub holds_expired: u64,
    pub payments: DrainReport,
}

pub async fn handle(deps: &Deps) -> Result<SweepReport, Error> {
    let report = SweepReport {
        holds_expired: stock::settle_all_lapsed_holds(&deps.pool).await?,
        payments: inbox::drain(&deps.pool, deps.payment_retry).await?,
    };
    if report.holds_expired > 0 || report.payments != DrainReport::default() {
        tracing::info!(?report, "sweep settled overdue work");
    }
    Ok(report)
}

//! The periodic catch-all: settles every hold and unpaid order past its deadline that no trigger
//! settled, delivers payment events waiting in the inbox and republishes events still in the
//! outbox. Safe to run concurrently with everything, itself included.

use std::sync::Arc;
use std::time::Duration;

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::retry::RetryPolicy;
use shared::ports::EventPublisher;
use shared::service::sweep::{self, SweepReport};
use shared::store::pool::Pool;

pub struct Deps {
    pub pool: Pool,
    pub publisher: Arc<dyn EventPublisher>,
    pub payment_retry: RetryPolicy,
    /// Events younger than this are left to the operation that wrote them.
    pub republish_grace: Duration,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            publisher: lambda.publisher().await?,
            payment_retry: lambda.config.payment_retry_policy(),
            republish_grace: sweep::REPUBLISH_GRACE,
        })
    }
}

pub async fn handle(deps: &Deps) -> Result<SweepReport, Error> {
    let report = sweep::sweep(
        &deps.pool,
        deps.publisher.as_ref(),
        deps.payment_retry,
        deps.republish_grace,
    )
    .await?;
    tracing::info!(?report, "sweep done");
    Ok(report)
}

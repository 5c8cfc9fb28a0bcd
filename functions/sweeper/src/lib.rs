//! The periodic catch-all: settles every hold and unpaid order past its deadline that no trigger
//! settled, delivers payment events waiting in the inbox and republishes events still in the
//! outbox. Safe to run concurrently with everything, itself included.

use std::sync::Arc;
use std::time::Duration;

use shared::aws::SdkLoader;
use shared::inbox::RetryPolicy;
use shared::ports::EventPublisher;
use shared::service::{self, SweepReport};
use shared::{Config, Error, adapters};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
    pub publisher: Arc<dyn EventPublisher>,
    pub payment_retry: RetryPolicy,
    /// Events younger than this are left to the operation that wrote them.
    pub republish_grace: Duration,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let config = Config::from_env()?;
        let sdk = SdkLoader::from_env();
        Ok(Self {
            pool: adapters::lambda_pool(&config, &sdk).await?,
            publisher: adapters::lambda_event_publisher(&config, &sdk).await?,
            payment_retry: config.payment_retry_policy(),
            republish_grace: service::REPUBLISH_GRACE,
        })
    }
}

pub async fn handle(deps: &Deps) -> Result<SweepReport, Error> {
    let report = service::sweep(
        &deps.pool,
        deps.publisher.as_ref(),
        deps.payment_retry,
        deps.republish_grace,
    )
    .await?;
    tracing::info!(?report, "sweep done");
    Ok(report)
}

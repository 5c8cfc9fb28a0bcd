//! Cancels an unpaid order when its payment deadline trigger fires: `{"order_id":"…"}`. Early,
//! late, duplicate and already-paid deliveries are all safe; an early one leaves the order alone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shared::aws::SdkLoader;
use shared::ids::OrderId;
use shared::ports::EventPublisher;
use shared::stock::ExpiryOutcome;
use shared::{Config, Error, adapters, service};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
    pub publisher: Arc<dyn EventPublisher>,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let config = Config::from_env()?;
        let sdk = SdkLoader::from_env();
        Ok(Self {
            pool: adapters::lambda_pool(&config, &sdk).await?,
            publisher: adapters::lambda_event_publisher(&config, &sdk).await?,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct ExpireOrder {
    pub order_id: String,
}

#[derive(Debug, Serialize)]
pub struct ExpiryReport {
    pub order_id: String,
    pub outcome: ExpiryOutcome,
}

pub async fn handle(deps: &Deps, input: ExpireOrder) -> Result<ExpiryReport, Error> {
    let order_id = OrderId::parse(&input.order_id)
        .ok_or_else(|| Error::InvalidRequest(format!("{:?} is not an order id", input.order_id)))?;
    let outcome = service::expire_order(&deps.pool, deps.publisher.as_ref(), &order_id).await?;
    tracing::info!(%order_id, ?outcome, "order payment deadline trigger handled");
    Ok(ExpiryReport {
        order_id: input.order_id,
        outcome,
    })
}

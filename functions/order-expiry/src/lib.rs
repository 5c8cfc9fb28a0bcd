//! Cancels an unpaid order when its payment deadline trigger fires: `{"order_id":"…"}`. Early,
//! late, duplicate and already-paid deliveries are all safe; an early one leaves the order alone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::OrderId;
use shared::ports::EventPublisher;
use shared::store::expiry::ExpiryOutcome;
use shared::store::pool::Pool;
use shared::{Error, service};

pub struct Deps {
    pub pool: Pool,
    pub publisher: Arc<dyn EventPublisher>,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            publisher: lambda.publisher().await?,
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
    let outcome =
        service::orders::settle_order_deadline(&deps.pool, deps.publisher.as_ref(), &order_id)
            .await?;
    tracing::info!(%order_id, ?outcome, "order payment deadline trigger handled");
    Ok(ExpiryReport {
        order_id: input.order_id,
        outcome,
    })
}

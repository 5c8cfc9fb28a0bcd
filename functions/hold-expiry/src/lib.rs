//! Settles one hold when its expiry trigger fires: `{"hold_id":"…"}`. Early, late, duplicate
//! and already-redeemed deliveries are all safe; an early one leaves the hold active.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::HoldId;
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
pub struct ExpireHold {
    pub hold_id: String,
}

#[derive(Debug, Serialize)]
pub struct ExpiryReport {
    pub hold_id: String,
    pub outcome: ExpiryOutcome,
}

pub async fn handle(deps: &Deps, input: ExpireHold) -> Result<ExpiryReport, Error> {
    let hold_id = HoldId::parse(&input.hold_id)
        .ok_or_else(|| Error::InvalidRequest(format!("{:?} is not a hold id", input.hold_id)))?;
    let outcome =
        service::holds::settle_hold_deadline(&deps.pool, deps.publisher.as_ref(), &hold_id).await?;
    tracing::info!(%hold_id, ?outcome, "hold expiry trigger handled");
    Ok(ExpiryReport {
        hold_id: input.hold_id,
        outcome,
    })
}

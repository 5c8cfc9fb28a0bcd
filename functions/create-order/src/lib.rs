//! `POST /api/orders`: redeems a hold into an order exactly once; a repeat returns that order.

use std::sync::Arc;

use serde::Deserialize;
use shared::http::{self, Body, Request, Response};
use shared::ids::HoldId;
use shared::ports::{ExpiryScheduler, NoScheduler};
use shared::{Config, Error, service};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
    pub scheduler: Arc<dyn ExpiryScheduler>,
}

impl Deps {
    pub fn from_env() -> Result<Self, Error> {
        let config = Config::from_env()?;
        Ok(Self {
            pool: shared::db::lambda_pool(&config)?,
            scheduler: Arc::new(NoScheduler),
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(create_order(deps, &request).await)
}

#[derive(Deserialize)]
struct CreateOrder {
    hold_id: String,
}

async fn create_order(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let body: CreateOrder = http::body_json(request)?;
    // An id we could never have issued names no hold.
    let hold_id = HoldId::parse(&body.hold_id).ok_or(Error::HoldNotFound)?;
    let redemption = service::create_order(&deps.pool, deps.scheduler.as_ref(), &hold_id).await?;
    let status = if redemption.created { 201 } else { 200 };
    Ok(http::json(status, &redemption.order))
}

//! `POST /api/orders`: redeems a hold into an order exactly once; a repeat returns that order.

use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::HoldId;
use shared::domain::model::{OrderDetails, PaymentWindow};
use shared::http::{self, Body, Request, Response};
use shared::ports::{DeadlineScheduler, EventPublisher};
use shared::service;
use shared::service::Effects;
use sqlx::MySqlPool;
use std::sync::Arc;

pub struct Deps {
    pub pool: MySqlPool,
    pub scheduler: Arc<dyn DeadlineScheduler>,
    pub publisher: Arc<dyn EventPublisher>,
    pub payment_window: PaymentWindow,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            scheduler: lambda.scheduler().await?,
            publisher: lambda.publisher().await?,
            payment_window: lambda.config.payment_window(),
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond_committing(create_order(deps, &request)).await
}

#[derive(Deserialize)]
struct CreateOrder {
    hold_id: String,
}

async fn create_order(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let body: CreateOrder = http::body_json(request)?;
    // An id we could never have issued names no hold.
    let hold_id = HoldId::parse(&body.hold_id).ok_or(Error::HoldNotFound)?;
    let effects = Effects {
        scheduler: deps.scheduler.as_ref(),
        publisher: deps.publisher.as_ref(),
    };
    let redemption =
        service::orders::create_order(&deps.pool, effects, &hold_id, deps.payment_window).await?;
    let status = if redemption.created { 201 } else { 200 };
    let order: &OrderDetails = &redemption.order;
    Ok(http::json(status, order))
}

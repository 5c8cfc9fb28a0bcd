//! `POST /api/holds`: reserves units of a product for `HOLD_TTL_SECONDS`, never more than are
//! available; an `Idempotency-Key` makes repeats return the first hold.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::adapters::local::NoPublisher;
use shared::domain::ids::ProductId;
use shared::http::{self, Body, Request, Response};
use shared::ports::{DeadlineScheduler, EventPublisher};
use shared::service;
use shared::service::Effects;
use shared::store::holds::HoldRequest;
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
    pub scheduler: Arc<dyn DeadlineScheduler>,
    /// Events of holds this function settles on its slow path. The Lambda leaves them to the
    /// sweeper rather than link an EventBridge client into the hottest function.
    pub publisher: Arc<dyn EventPublisher>,
    pub hold_ttl: Duration,
    pub max_hold_qty: u32,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            scheduler: lambda.scheduler().await?,
            publisher: Arc::new(NoPublisher),
            hold_ttl: lambda.config.holds.ttl,
            max_hold_qty: lambda.config.holds.max_qty,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond_committing(create_hold(deps, &request)).await
}

#[derive(Deserialize)]
struct CreateHold {
    #[serde(deserialize_with = "shared::json::whole_number")]
    product_id: u64,
    #[serde(alias = "quantity", deserialize_with = "shared::json::whole_number")]
    qty: u32,
}

async fn create_hold(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let idempotency_key = http::idempotency_key(request)?;
    let body: CreateHold = http::body_json(request)?;
    if body.qty < 1 || body.qty > deps.max_hold_qty {
        return Err(Error::InvalidRequest(format!(
            "qty must be from 1 to {}",
            deps.max_hold_qty
        )));
    }
    let hold_request = HoldRequest {
        product_id: ProductId(body.product_id),
        qty: body.qty,
        idempotency_key,
    };
    let effects = Effects {
        scheduler: deps.scheduler.as_ref(),
        publisher: deps.publisher.as_ref(),
    };
    let reservation =
        service::holds::create_hold(&deps.pool, effects, &hold_request, deps.hold_ttl).await?;
    let mut response = http::json(201, &reservation.hold);
    if reservation.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            lambda_http::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

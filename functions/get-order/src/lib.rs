//! `GET /api/orders/{order_id}`: an order and its payment status.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::OrderId;
use shared::http::{self, Body, Request, Response};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        Ok(Self {
            pool: LambdaStartup::from_env()?.pool().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(get_order(deps, &request)).await
}

async fn get_order(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let id = OrderId::parse(&http::path_id(request, "order_id")).ok_or(Error::OrderNotFound)?;
    Ok(http::json(
        200,
        &shared::store::orders::get_order(&deps.pool, &id).await?,
    ))
}

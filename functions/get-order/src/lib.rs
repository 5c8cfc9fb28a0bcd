//! `GET /api/orders/{order_id}`: an order and its payment status.

use shared::aws::SdkLoader;
use shared::http::{self, Body, Request, Response};
use shared::ids::OrderId;
use shared::{Config, Error, adapters, stock};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let config = Config::from_env()?;
        Ok(Self {
            pool: adapters::lambda_pool(&config, &SdkLoader::from_env()).await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(get_order(deps, &request)).await
}

async fn get_order(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let id = OrderId::parse(&http::path_id(request, "order_id")).ok_or(Error::OrderNotFound)?;
    Ok(http::json(200, &stock::get_order(&deps.pool, &id).await?))
}

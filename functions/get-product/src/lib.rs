//! `GET /api/products/{id}`: a product with its stock as of this instant.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::ProductId;
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
    http::respond(get_product(deps, &request)).await
}

async fn get_product(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let raw = http::path_id(request, "id");
    let id = raw.parse::<u64>().map(ProductId).map_err(|_| {
        Error::InvalidRequest(format!(
            "product id must be a positive integer, got {raw:?}"
        ))
    })?;
    Ok(http::json(
        200,
        &shared::store::products::get_product(&deps.pool, id).await?,
    ))
}

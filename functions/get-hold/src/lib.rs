//! `GET /api/holds/{hold_id}`: a hold; `expired` the instant its expiry passes.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::HoldId;
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
    http::respond(get_hold(deps, &request)).await
}

async fn get_hold(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let id = HoldId::parse(&http::path_id(request, "hold_id")).ok_or(Error::HoldNotFound)?;
    Ok(http::json(
        200,
        &shared::store::holds::get_hold(&deps.pool, &id).await?,
    ))
}

//! `GET /api/holds/{hold_id}`: a hold; `expired` the instant its expiry passes.

use shared::http::{self, Body, Request, Response};
use shared::ids::HoldId;
use shared::{Config, Error, stock};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        Ok(Self {
            pool: shared::db::lambda_pool(&Config::from_env()?)?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(get_hold(deps, &request).await)
}

async fn get_hold(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let id = HoldId::parse(&http::path_id(request, "hold_id")).ok_or(Error::HoldNotFound)?;
    Ok(http::json(200, &stock::get_hold(&deps.pool, &id).await?))
}

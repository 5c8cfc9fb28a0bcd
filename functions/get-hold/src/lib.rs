//! `GET /api/holds/{hold_id}`: a hold; `expired` the instant its expiry passes.

use shared::aws::SdkLoader;
use shared::http::{self, Body, Request, Response};
use shared::ids::HoldId;
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
    http::respond(get_hold(deps, &request)).await
}

async fn get_hold(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let id = HoldId::parse(&http::path_id(request, "hold_id")).ok_or(Error::HoldNotFound)?;
    Ok(http::json(200, &stock::get_hold(&deps.pool, &id).await?))
}

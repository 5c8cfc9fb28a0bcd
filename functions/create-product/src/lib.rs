//! `POST /api/admin/products` (admin): creates a product with its whole sale stock available.

use secrecy::SecretString;
use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::money::Cents;
use shared::http::{self, Body, Request, Response};
use shared::store::products::{MAX_STOCK_BUCKETS, NewProduct};
use sqlx::MySqlPool;

const MAX_NAME_CHARS: usize = 200;
const MAX_STOCK: u32 = 1_000_000_000;

pub struct Deps {
    pub pool: MySqlPool,
    pub admin_token: SecretString,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            admin_token: lambda.config.require_admin_token()?,
            pool: lambda.pool().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(create_product(deps, &request)).await
}

#[derive(Deserialize)]
struct CreateProduct {
    name: String,
    price: String,
    #[serde(deserialize_with = "shared::json::whole_number")]
    stock: u32,
    /// Rows the stock is split over, for a product that will be hot (default 1).
    #[serde(
        default = "one_bucket",
        deserialize_with = "shared::json::whole_number"
    )]
    stock_buckets: u16,
}

fn one_bucket() -> u16 {
    1
}

async fn create_product(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    http::require_bearer(request, &deps.admin_token)?;
    let body: CreateProduct = http::body_json(request)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::InvalidRequest(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    let price = Cents::parse(&body.price)
        .filter(|price| price.0 > 0)
        .ok_or_else(|| {
            Error::InvalidRequest(
                "price must be a positive decimal string with at most two decimals, like \"50.00\""
                    .into(),
            )
        })?;
    if body.stock > MAX_STOCK {
        return Err(Error::InvalidRequest(format!(
            "stock must be from 0 to {MAX_STOCK}"
        )));
    }
    if body.stock_buckets < 1 || body.stock_buckets > MAX_STOCK_BUCKETS {
        return Err(Error::InvalidRequest(format!(
            "stock_buckets must be from 1 to {MAX_STOCK_BUCKETS}"
        )));
    }
    let new = NewProduct {
        name: name.to_owned(),
        price,
        stock: body.stock,
        buckets: body.stock_buckets,
    };
    Ok(http::json(
        201,
        &shared::store::products::create_product(&deps.pool, &new).await?,
    ))
}

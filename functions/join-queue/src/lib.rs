//! `POST /api/products/{id}/queue`: the buyer joins the product's waiting room (201), or is told
//! the place they have (200); one place per buyer and product.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::config::BuyerAuth;
use shared::domain::admission::AdmissionTokens;
use shared::domain::ids::{BuyerId, ProductId};
use shared::http::{self, Body, Request, Response};
use shared::service;
use shared::store::pool::Pool;

pub struct Deps {
    pub pool: Pool,
    pub buyer_auth: BuyerAuth,
    pub admission_tokens: AdmissionTokens,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            admission_tokens: lambda.config.require_admission_tokens()?,
            buyer_auth: lambda.config.buyers.auth,
            pool: lambda.pool().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(async {
        let (product_id, buyer) = parse(&request, deps.buyer_auth)?;
        let (entry, joined) =
            service::queue::join(&deps.pool, &deps.admission_tokens, product_id, &buyer).await?;
        Ok(http::json(if joined { 201 } else { 200 }, &entry))
    })
    .await
}

/// The product and the buyer (a waiting room's places are a buyer's: 401 without one, and
/// always under `BUYER_AUTH=none`); the body, if any, is not read.
pub fn parse(request: &Request, buyer_auth: BuyerAuth) -> Result<(ProductId, BuyerId), Error> {
    let buyer = http::buyer(request, buyer_auth)?.ok_or(Error::Unauthorized)?;
    Ok((http::path_product_id(request)?, buyer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    #[test]
    fn the_sample_events_name_their_product_and_buyer() {
        let joined = sample(include_str!("../../../events/join-queue.joined.json"));
        let (product, buyer) = parse(&joined, BuyerAuth::Jwt).expect("parsed");
        assert_eq!((product.0, buyer.as_str()), (1, "buyer-1"));
        let anonymous = sample(include_str!("../../../events/join-queue.unauthorized.json"));
        assert_eq!(
            parse(&anonymous, BuyerAuth::Jwt)
                .map(|_| ())
                .map_err(|err| err.code()),
            Err("unauthorized")
        );
    }

    #[test]
    fn without_buyers_no_one_can_queue() {
        let joined = sample(include_str!("../../../events/join-queue.joined.json"));
        assert_eq!(
            parse(&joined, BuyerAuth::None)
                .map(|_| ())
                .map_err(|err| err.status()),
            Err(401)
        );
    }

    #[test]
    fn under_a_function_url_the_product_is_the_segment_after_products() {
        let request = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/lambda-url/join-queue/api/products/42/queue")
            .body(Body::Empty)
            .expect("a request");
        assert_eq!(
            http::path_product_id(&request).map(|id| id.0).ok(),
            Some(42)
        );
    }
}

//! `GET /api/products/{id}/queue`: the buyer's place in the product's waiting room, as of now:
//! waiting (with when it is expected to be admitted), admitted (with its admission token),
//! expired, or sold out. One indexed read.

use shared::http::{self, Body, Request, Response};
use shared::service;

/// The same dependencies as join-queue's: the pool, how buyers are known, the admission tokens.
pub use join_queue::Deps;

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(async {
        let (product_id, buyer) = join_queue::parse(&request, deps.buyer_auth)?;
        let entry =
            service::queue::entry(&deps.pool, &deps.admission_tokens, product_id, &buyer).await?;
        Ok(http::json(200, &entry))
    })
    .await
}

#[cfg(test)]
mod tests {
    use shared::config::BuyerAuth;

    use super::*;

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    #[test]
    fn the_sample_events_name_their_product_and_buyer() {
        for (event, buyer) in [
            (
                include_str!("../../../events/get-queue-entry.found.json"),
                "buyer-1",
            ),
            (
                include_str!("../../../events/get-queue-entry.not-in-queue.json"),
                "buyer-never-joined",
            ),
        ] {
            let (product, parsed) =
                join_queue::parse(&sample(event), BuyerAuth::Jwt).expect("parsed");
            assert_eq!((product.0, parsed.as_str()), (1, buyer));
        }
    }
}

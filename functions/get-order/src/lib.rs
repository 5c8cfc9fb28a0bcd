//! `GET /api/orders/{order_id}`: an order and its payment status.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::config::BuyerAuth;
use shared::domain::ids::{BuyerId, OrderId};
use shared::http::{self, Body, Request, Response};
use shared::store::pool::Pool;

pub struct Deps {
    pub pool: Pool,
    pub buyer_auth: BuyerAuth,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            buyer_auth: lambda.config.buyers.auth,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(async {
        let (order_id, buyer) = parse(&request, deps.buyer_auth)?;
        execute(deps, &order_id, buyer.as_ref()).await
    })
    .await
}

/// The order a request names, or the 404 it is answered with: an id we could never have issued
/// names no order.
/// The buyer is judged first: without one, 401 whatever the id.
pub fn parse(
    request: &Request,
    buyer_auth: BuyerAuth,
) -> Result<(OrderId, Option<BuyerId>), Error> {
    let buyer = http::buyer(request, buyer_auth)?;
    let id = OrderId::parse(&http::path_id(request, "order_id")).ok_or(Error::OrderNotFound)?;
    Ok((id, buyer))
}

async fn execute(
    deps: &Deps,
    order_id: &OrderId,
    buyer: Option<&BuyerId>,
) -> Result<Response<Body>, Error> {
    Ok(http::json(
        200,
        &shared::store::orders::get_order(&deps.pool, order_id, buyer).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER_ID: &str = "9d2f8a61-7c4b-4e1a-8f3d-2b6c5e4a1f70";

    fn get(uri: &str) -> Request {
        lambda_http::http::Request::builder()
            .uri(uri)
            .body(Body::Empty)
            .expect("a request")
    }

    fn parsed(request: &Request) -> Result<String, (u16, &'static str)> {
        parse(request, BuyerAuth::None)
            .map(|(id, _)| id)
            .map(|id| id.as_str().to_owned())
            .map_err(|err| (err.status(), err.code()))
    }

    #[test]
    fn the_sample_event_names_its_order_in_the_path_parameters() {
        let request = lambda_http::request::from_str(include_str!(
            "../../../events/get-order.not-found.json"
        ))
        .expect("an API Gateway HTTP API request");
        assert_eq!(parsed(&request), Ok(ORDER_ID.to_owned()));
    }

    #[test]
    fn under_a_function_url_the_order_is_the_last_path_segment() {
        let uri = format!("/lambda-url/get-order/api/orders/{ORDER_ID}");
        assert_eq!(parsed(&get(&uri)), Ok(ORDER_ID.to_owned()));
    }

    #[test]
    fn an_id_we_could_never_have_issued_names_no_order() {
        for uri in [
            "/api/orders/not-an-order",
            "/api/orders/9D2F8A61-7C4B-4E1A-8F3D-2B6C5E4A1F70",
            "/api/orders/urn:uuid:9d2f8a61-7c4b-4e1a-8f3d-2b6c5e4a1f70",
            "/api/orders/",
        ] {
            assert_eq!(parsed(&get(uri)), Err((404, "order_not_found")), "{uri}");
        }
    }
}

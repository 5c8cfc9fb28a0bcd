//! `DELETE /api/holds/{hold_id}`: the buyer gives an active hold back; `released`, its units
//! available at once. Another buyer's hold is not found.

use std::sync::Arc;

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::config::BuyerAuth;
use shared::domain::ids::{BuyerId, HoldId};
use shared::http::{self, Body, Request, Response};
use shared::ports::EventPublisher;
use shared::service::holds;
use shared::store::pool::Pool;

pub struct Deps {
    pub pool: Pool,
    pub publisher: Arc<dyn EventPublisher>,
    pub buyer_auth: BuyerAuth,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            publisher: lambda.publisher().await?,
            buyer_auth: lambda.config.buyers.auth,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(release(deps, &request)).await
}

/// Which hold, of which buyer.
#[derive(Debug, PartialEq, Eq)]
pub struct ReleaseHold {
    pub hold_id: HoldId,
    pub buyer: Option<BuyerId>,
}

/// The request, checked: a buyer (or 401), then a hold id (an id we could never have issued
/// names no hold: 404).
pub fn parse(request: &Request, buyer_auth: BuyerAuth) -> Result<ReleaseHold, Error> {
    let buyer = http::buyer(request, buyer_auth)?;
    let hold_id = HoldId::parse(&http::path_id(request, "hold_id")).ok_or(Error::HoldNotFound)?;
    Ok(ReleaseHold { hold_id, buyer })
}

async fn release(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let command = parse(request, deps.buyer_auth)?;
    let hold = holds::release_hold(
        &deps.pool,
        deps.publisher.as_ref(),
        &command.hold_id,
        command.buyer.as_ref(),
    )
    .await?;
    Ok(http::json(200, &hold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> Request {
        lambda_http::http::Request::builder()
            .method("DELETE")
            .uri(path)
            .body(Body::Empty)
            .expect("a request")
    }

    #[test]
    fn an_anonymous_release_names_its_hold() {
        let id = HoldId::generate();
        let parsed = parse(&request(&format!("/api/holds/{id}")), BuyerAuth::None);
        assert_eq!(
            parsed.expect("parsed"),
            ReleaseHold {
                hold_id: id,
                buyer: None
            }
        );
    }

    #[test]
    fn without_a_verified_buyer_it_is_unauthorized_before_anything_else() {
        let err = parse(&request("/api/holds/not-an-id"), BuyerAuth::Jwt).expect_err("refused");
        assert_eq!(err.code(), "unauthorized");
    }

    #[test]
    fn an_id_we_never_issued_is_not_found() {
        let err = parse(&request("/api/holds/not-an-id"), BuyerAuth::None).expect_err("refused");
        assert_eq!(err.code(), "hold_not_found");
    }
}

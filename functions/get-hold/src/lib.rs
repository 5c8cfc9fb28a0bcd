//! `GET /api/holds/{hold_id}`: a hold; `expired` the instant its expiry passes.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::config::BuyerAuth;
use shared::domain::ids::{BuyerId, HoldId};
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
        let (hold_id, buyer) = parse(&request, deps.buyer_auth)?;
        execute(deps, &hold_id, buyer.as_ref()).await
    })
    .await
}

/// The hold a request names, or the 404 it is answered with: an id we could never have issued
/// names no hold.
/// The buyer is judged first: without one, 401 whatever the id.
pub fn parse(request: &Request, buyer_auth: BuyerAuth) -> Result<(HoldId, Option<BuyerId>), Error> {
    let buyer = http::buyer(request, buyer_auth)?;
    let id = HoldId::parse(&http::path_id(request, "hold_id")).ok_or(Error::HoldNotFound)?;
    Ok((id, buyer))
}

async fn execute(
    deps: &Deps,
    hold_id: &HoldId,
    buyer: Option<&BuyerId>,
) -> Result<Response<Body>, Error> {
    Ok(http::json(
        200,
        &shared::store::holds::get_hold(&deps.pool, hold_id, buyer).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD_ID: &str = "5b0e7c4e-3f55-4b7e-9a57-0f9b6a1d2c3e";

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
    fn the_sample_event_names_its_hold_in_the_path_parameters() {
        let request =
            lambda_http::request::from_str(include_str!("../../../events/get-hold.not-found.json"))
                .expect("an API Gateway HTTP API request");
        assert_eq!(parsed(&request), Ok(HOLD_ID.to_owned()));
    }

    #[test]
    fn under_a_function_url_the_hold_is_the_last_path_segment() {
        let uri = format!("/lambda-url/get-hold/api/holds/{HOLD_ID}");
        assert_eq!(parsed(&get(&uri)), Ok(HOLD_ID.to_owned()));
        assert_eq!(parsed(&get(&format!("{uri}/"))), Ok(HOLD_ID.to_owned()));
    }

    #[test]
    fn an_id_we_could_never_have_issued_names_no_hold() {
        for uri in [
            "/api/holds/not-a-hold",
            "/api/holds/5B0E7C4E-3F55-4B7E-9A57-0F9B6A1D2C3E",
            "/api/holds/5b0e7c4e3f554b7e9a570f9b6a1d2c3e",
            "/api/holds/",
            "/",
        ] {
            assert_eq!(parsed(&get(uri)), Err((404, "hold_not_found")), "{uri}");
        }
    }
}

//! `POST /api/orders`: redeems a hold into an order exactly once; a repeat returns that order.

use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::config::BuyerAuth;
use shared::domain::ids::{BuyerId, HoldId};
use shared::domain::model::{OrderDetails, PaymentWindow};
use shared::http::{self, Body, Request, Response};
use shared::ports::{DeadlineScheduler, EventPublisher};
use shared::service;
use shared::service::Effects;
use shared::store::pool::Pool;
use std::sync::Arc;

pub struct Deps {
    pub pool: Pool,
    pub scheduler: Arc<dyn DeadlineScheduler>,
    pub publisher: Arc<dyn EventPublisher>,
    pub payment_window: PaymentWindow,
    pub buyer_auth: BuyerAuth,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            scheduler: lambda.scheduler().await?,
            publisher: lambda.publisher().await?,
            payment_window: lambda.config.payment_window(),
            buyer_auth: lambda.config.buyers.auth,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond_committing(async {
        let (hold_id, buyer) = parse(&request, deps.buyer_auth)?;
        execute(deps, &hold_id, buyer.as_ref()).await
    })
    .await
}

#[derive(Deserialize)]
struct CreateOrder {
    hold_id: String,
}

/// The hold a request redeems and whose, or the 4xx it is answered with (no buyer: 401 first).
pub fn parse(request: &Request, buyer_auth: BuyerAuth) -> Result<(HoldId, Option<BuyerId>), Error> {
    let buyer = http::buyer(request, buyer_auth)?;
    let body: CreateOrder = http::body_json(request)?;
    // An id we could never have issued names no hold.
    let hold_id = HoldId::parse(&body.hold_id).ok_or(Error::HoldNotFound)?;
    Ok((hold_id, buyer))
}

async fn execute(
    deps: &Deps,
    hold_id: &HoldId,
    buyer: Option<&BuyerId>,
) -> Result<Response<Body>, Error> {
    let effects = Effects {
        scheduler: deps.scheduler.as_ref(),
        publisher: deps.publisher.as_ref(),
    };
    let redemption =
        service::orders::create_order(&deps.pool, effects, hold_id, buyer, deps.payment_window)
            .await?;
    let status = if redemption.created { 201 } else { 200 };
    let order: &OrderDetails = &redemption.order;
    Ok(http::json(status, order))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    fn post(body: &str) -> Request {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/api/orders")
            .body(Body::from(body))
            .expect("a request")
    }

    /// How the request is answered: (status, code, message).
    fn refused(request: &Request) -> (u16, &'static str, String) {
        match parse(request, BuyerAuth::None) {
            Ok((hold_id, _)) => panic!("accepted: {hold_id}"),
            Err(err) => (err.status(), err.code(), err.public_message()),
        }
    }

    #[test]
    fn the_sample_events_redeem_a_hold_or_are_malformed() {
        let unknown = sample(include_str!(
            "../../../events/create-order.unknown-hold.json"
        ));
        assert_eq!(
            parse(&unknown, BuyerAuth::None)
                .map(|(id, _)| id)
                .map_err(|err| err.code()),
            Ok(HoldId::parse("5b0e7c4e-3f55-4b7e-9a57-0f9b6a1d2c3e").expect("an id"))
        );
        let malformed = sample(include_str!("../../../events/create-order.malformed.json"));
        assert_eq!(refused(&malformed).1, "malformed_json");
    }

    #[test]
    fn an_id_we_could_never_have_issued_names_no_hold() {
        for hold_id in [
            "",
            "not-a-hold",
            "5B0E7C4E-3F55-4B7E-9A57-0F9B6A1D2C3E",
            "5b0e7c4e3f554b7e9a570f9b6a1d2c3e",
            "{5b0e7c4e-3f55-4b7e-9a57-0f9b6a1d2c3e}",
            " 5b0e7c4e-3f55-4b7e-9a57-0f9b6a1d2c3e",
        ] {
            let body = format!(r#"{{"hold_id": "{hold_id}"}}"#);
            assert_eq!(
                refused(&post(&body)),
                (404, "hold_not_found", "hold not found".to_owned()),
                "{hold_id:?}"
            );
        }
    }

    #[test]
    fn a_body_without_a_hold_id_string_is_an_invalid_request() {
        for body in [
            "{}",
            r#"{"hold_id": 5}"#,
            r#"{"hold_id": null}"#,
            r#"["5b0e7c4e-3f55-4b7e-9a57-0f9b6a1d2c3e"]"#,
        ] {
            assert_eq!(refused(&post(body)).1, "invalid_request", "{body}");
        }
        assert_eq!(refused(&post("")).1, "malformed_json");
        let oversized = format!(r#"{{"hold_id": "{}"}}"#, "x".repeat(http::MAX_BODY_BYTES));
        assert_eq!(refused(&post(&oversized)).0, 413);
    }
}

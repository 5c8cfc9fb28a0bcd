//! `GET /api/products/{id}/queue/summary`: how far the product's waiting room has admitted and
//! how long it is; public, cacheable at the edge like a product read.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::http::{self, Body, Request, Response};
use shared::service;
use shared::store::pool::Pool;

pub struct Deps {
    pub pool: Pool,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        Ok(Self {
            pool: LambdaStartup::from_env()?.pool().await?,
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond(async {
        let product_id = http::path_product_id(&request)?;
        let summary = service::queue::summary(&deps.pool, product_id).await?;
        // Everything but `as_of` names the state: a client's copy stays valid while it holds.
        let starts = summary
            .sale_starts_at
            .map_or(0, |at| at.and_utc().timestamp_millis());
        let etag = format!(
            "W/\"{}-{}-{}-{starts}\"",
            summary.serving_position, summary.queue_length, summary.admission_rate
        );
        Ok(http::cacheable_json(
            &request,
            &summary,
            &etag,
            deps.pool.product_reads().max_age(),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    #[test]
    fn the_sample_events_name_their_product() {
        let found = sample(include_str!("../../../events/get-queue-summary.found.json"));
        assert_eq!(http::path_product_id(&found).map(|id| id.0).ok(), Some(1));
        let malformed = sample(include_str!(
            "../../../events/get-queue-summary.malformed-id.json"
        ));
        assert_eq!(
            http::path_product_id(&malformed).map_err(|err| err.code()),
            Err("invalid_request")
        );
    }
}

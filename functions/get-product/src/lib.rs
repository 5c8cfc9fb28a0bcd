//! `GET /api/products/{id}`: a product with its stock, as of at most `PRODUCT_READ_MAX_AGE_MS`
//! ago, cacheable at the edge for as long.

use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::ProductId;
use shared::http::{self, Body, Request, Response};
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
        let id = parse(&request)?;
        execute(deps, &request, id).await
    })
    .await
}

/// The product a request names, or the 400 it is answered with.
pub fn parse(request: &Request) -> Result<ProductId, Error> {
    http::path_product_id(request)
}

/// The product as of at most `PRODUCT_READ_MAX_AGE_MS` ago (this container's recent read, or a
/// new one shared by the readers that wait for it), cacheable for as long, or 304 when the
/// client's copy still says the same.
async fn execute(deps: &Deps, request: &Request, id: ProductId) -> Result<Response<Body>, Error> {
    let reads = deps.pool.product_reads();
    let query = shared::store::products::read_product(&deps.pool, id);
    let product = reads.read(id, query).await?.product;
    let etag = format!("W/\"{}\"", product.fingerprint());
    Ok(http::cacheable_json(
        request,
        &product,
        &etag,
        reads.max_age(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    fn get(uri: &str) -> Request {
        lambda_http::http::Request::builder()
            .uri(uri)
            .body(Body::Empty)
            .expect("a request")
    }

    fn parsed(request: &Request) -> Result<u64, (u16, &'static str, String)> {
        parse(request)
            .map(|id| id.0)
            .map_err(|err| (err.status(), err.code(), err.public_message()))
    }

    #[test]
    fn the_sample_events_name_their_product_in_the_path_parameters() {
        let found = sample(include_str!("../../../events/get-product.found.json"));
        assert_eq!(parsed(&found), Ok(1));
        let not_found = sample(include_str!("../../../events/get-product.not-found.json"));
        assert_eq!(parsed(&not_found), Ok(999_999));
        let malformed = sample(include_str!(
            "../../../events/get-product.malformed-id.json"
        ));
        assert_eq!(
            parsed(&malformed),
            Err((
                400,
                "invalid_request",
                r#"product id must be a positive integer, got "abc""#.to_owned()
            ))
        );
    }

    /// JSON Schema counts `5.0` and `5e0` as the integer 5, so openapi.yaml's integer path
    /// parameter does too: clients (and Schemathesis) may write it so.
    #[test]
    fn an_id_written_as_a_whole_json_number_or_with_a_plus_or_zeros_is_that_id() {
        for (uri, id) in [
            ("/api/products/5.0", 5),
            ("/api/products/5e0", 5),
            ("/api/products/1e16", 10_000_000_000_000_000),
            ("/api/products/+5", 5),
            ("/api/products/007", 7),
            ("/api/products/18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parsed(&get(uri)), Ok(id), "{uri}");
        }
    }

    #[test]
    fn under_a_function_url_the_product_is_the_last_path_segment() {
        assert_eq!(
            parsed(&get("/lambda-url/get-product/api/products/42")),
            Ok(42)
        );
        assert_eq!(parsed(&get("/api/products/42/")), Ok(42));
    }

    #[test]
    fn an_id_that_is_not_a_whole_number_in_range_is_an_invalid_request() {
        for (uri, raw) in [
            ("/api/products/-1", "-1"),
            ("/api/products/1.5", "1.5"),
            ("/api/products/1e-1", "1e-1"),
            ("/api/products/18446744073709551616", "18446744073709551616"),
            ("/api/products/", "products"),
        ] {
            assert_eq!(
                parsed(&get(uri)),
                Err((
                    400,
                    "invalid_request",
                    format!("product id must be a positive integer, got {raw:?}")
                )),
                "{uri}"
            );
        }
    }
}

//! `POST /api/admin/products` (admin): creates a product with its whole sale stock available.

use secrecy::SecretString;
use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::model::SaleTerms;
use shared::domain::money::Cents;
use shared::domain::waiting_room::WaitingRoom;
use shared::http::{self, Body, Request, Response};
use shared::store::pool::Pool;
use shared::store::products::{MAX_STOCK_BUCKETS, NewProduct};

const MAX_NAME_CHARS: usize = 200;
const MAX_STOCK: u32 = 1_000_000_000;

pub struct Deps {
    pub pool: Pool,
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
    http::respond(async {
        let product = parse(&request, &deps.admin_token)?;
        execute(deps, &product).await
    })
    .await
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
    #[serde(default, deserialize_with = "shared::json::optional_whole_number")]
    max_per_buyer: Option<u32>,
    #[serde(default)]
    sale_starts_at: Option<String>,
    #[serde(default)]
    sale_ends_at: Option<String>,
    #[serde(default)]
    waiting_room: Option<WaitingRoom>,
}

fn one_bucket() -> u16 {
    1
}

/// The product an admin's request creates, or the 4xx it is answered with. The token is checked
/// before the body is read: a caller without it learns nothing of what a valid body is.
pub fn parse(request: &Request, admin_token: &SecretString) -> Result<NewProduct, Error> {
    http::require_bearer(request, admin_token)?;
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
    let instant = |at: Option<String>| at.as_deref().map(shared::json::instant).transpose();
    let sale = SaleTerms {
        max_per_buyer: body.max_per_buyer,
        sale_starts_at: instant(body.sale_starts_at)?,
        sale_ends_at: instant(body.sale_ends_at)?,
    };
    sale.validate()?;
    if let Some(room) = body.waiting_room {
        room.validate(sale.sale_starts_at)?;
    }
    Ok(NewProduct {
        name: name.to_owned(),
        price,
        stock: body.stock,
        buckets: body.stock_buckets,
        sale,
        waiting_room: body.waiting_room,
    })
}

async fn execute(deps: &Deps, product: &NewProduct) -> Result<Response<Body>, Error> {
    Ok(http::json(
        201,
        &shared::store::products::create_product(&deps.pool, product).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `ADMIN_TOKEN` of `[workspace.metadata.lambda.env]`, which the sample events carry.
    fn token() -> SecretString {
        SecretString::from("dev-admin-token".to_owned())
    }

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    fn post(authorization: Option<&str>, body: &str) -> Request {
        let mut request = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/api/admin/products");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        request.body(Body::from(body)).expect("a request")
    }

    fn admin(body: &str) -> Request {
        post(Some("Bearer dev-admin-token"), body)
    }

    /// What the request creates: (name, price in cents, stock, buckets).
    fn accepted(request: &Request) -> (String, i64, u32, u16) {
        match parse(request, &token()) {
            Ok(new) => (new.name, new.price.0, new.stock, new.buckets),
            Err(err) => panic!("refused: {err}"),
        }
    }

    /// How the request is answered: (status, code, message).
    fn refused(request: &Request) -> (u16, &'static str, String) {
        match parse(request, &token()) {
            Ok(new) => panic!("accepted: {}", new.name),
            Err(err) => (err.status(), err.code(), err.public_message()),
        }
    }

    #[test]
    fn the_sample_events_create_a_product_or_lack_the_token() {
        let created = sample(include_str!("../../../events/create-product.created.json"));
        assert_eq!(
            accepted(&created),
            ("Limited sneakers".to_owned(), 7990, 250, 1)
        );
        let unauthorized = sample(include_str!(
            "../../../events/create-product.unauthorized.json"
        ));
        assert_eq!(refused(&unauthorized).1, "unauthorized");
    }

    #[test]
    fn only_the_admin_token_passes_and_it_is_checked_before_the_body() {
        let body = r#"{"name": "Cap", "price": "9.99", "stock": 5}"#;
        for authorization in [
            None,
            Some("Bearer wrong-token"),
            Some("Bearer dev-admin-token2"),
            Some("bearer dev-admin-token"),
            Some("Basic dev-admin-token"),
            Some("dev-admin-token"),
        ] {
            assert_eq!(
                refused(&post(authorization, body)),
                (
                    401,
                    "unauthorized",
                    "missing or invalid bearer token".to_owned()
                ),
                "{authorization:?}"
            );
        }
        assert_eq!(refused(&post(None, "{not json")).1, "unauthorized");
        assert_eq!(accepted(&admin(body)).0, "Cap");
    }

    #[test]
    fn a_name_is_trimmed_and_1_to_200_characters() {
        let with_name = |name: &str| {
            let body = format!(r#"{{"name": "{name}", "price": "1.00", "stock": 1}}"#);
            parse(&admin(&body), &token()).map(|new| new.name)
        };
        assert_eq!(with_name("  Cap \\t").ok(), Some("Cap".to_owned()));
        let longest = "é".repeat(MAX_NAME_CHARS);
        assert_eq!(with_name(&longest).ok(), Some(longest));
        for name in ["", "   ", &"n".repeat(MAX_NAME_CHARS + 1)] {
            let err = with_name(name).expect_err(name);
            assert_eq!(
                (err.code(), err.public_message()),
                (
                    "invalid_request",
                    "name must be 1 to 200 characters".to_owned()
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_price_is_a_positive_decimal_string_of_at_most_two_decimals() {
        let with_price = |price: &str| {
            let body = format!(r#"{{"name": "Cap", "price": "{price}", "stock": 1}}"#);
            parse(&admin(&body), &token()).map(|new| new.price.0)
        };
        for (price, cents) in [("50", 5000), ("50.5", 5050), ("0.01", 1), ("19.99", 1999)] {
            assert_eq!(with_price(price).ok(), Some(cents), "{price}");
        }
        for price in ["0", "0.00", "1.234", "-1", "1.", ".5", "1,00", "abc", ""] {
            let err = with_price(price).expect_err(price);
            assert_eq!(
                (err.code(), err.public_message()),
                (
                    "invalid_request",
                    "price must be a positive decimal string with at most two decimals, like \"50.00\"".to_owned()
                ),
                "{price:?}"
            );
        }
        let number = r#"{"name": "Cap", "price": 9.99, "stock": 1}"#;
        assert_eq!(refused(&admin(number)).1, "invalid_request");
    }

    #[test]
    fn stock_is_from_0_to_a_billion() {
        let with_stock = |stock: &str| {
            let body = format!(r#"{{"name": "Cap", "price": "1.00", "stock": {stock}}}"#);
            parse(&admin(&body), &token()).map(|new| new.stock)
        };
        assert_eq!(with_stock("0").ok(), Some(0));
        assert_eq!(with_stock("1000000000").ok(), Some(MAX_STOCK));
        let err = with_stock("1000000001").expect_err("over the maximum");
        assert_eq!(err.public_message(), "stock must be from 0 to 1000000000");
        for stock in ["-1", "1.5", "\"5\"", "4294967296"] {
            assert_eq!(
                with_stock(stock).map_err(|err| err.code()),
                Err("invalid_request"),
                "{stock}"
            );
        }
    }

    #[test]
    fn stock_buckets_default_to_one_and_are_at_most_64() {
        let with_buckets = |buckets: &str| {
            let body = format!(
                r#"{{"name": "Cap", "price": "1.00", "stock": 100, "stock_buckets": {buckets}}}"#
            );
            parse(&admin(&body), &token()).map(|new| new.buckets)
        };
        assert_eq!(
            accepted(&admin(r#"{"name": "Cap", "price": "1.00", "stock": 100}"#)).3,
            1
        );
        assert_eq!(with_buckets("1").ok(), Some(1));
        assert_eq!(with_buckets("64").ok(), Some(MAX_STOCK_BUCKETS));
        for buckets in ["0", "65"] {
            let err = with_buckets(buckets).expect_err(buckets);
            assert_eq!(
                (err.code(), err.public_message()),
                (
                    "invalid_request",
                    "stock_buckets must be from 1 to 64".to_owned()
                ),
                "{buckets}"
            );
        }
        assert_eq!(
            with_buckets("65536").map_err(|err| err.code()),
            Err("invalid_request")
        );
    }

    #[test]
    fn a_body_that_is_missing_fields_or_not_json_is_refused() {
        assert_eq!(refused(&admin(r#"{"name": "Cap"}"#)).1, "invalid_request");
        assert_eq!(refused(&admin("{\"name\":")).1, "malformed_json");
        let oversized = format!(
            r#"{{"name": "{}", "price": "1.00", "stock": 1}}"#,
            "n".repeat(http::MAX_BODY_BYTES)
        );
        assert_eq!(refused(&admin(&oversized)).0, 413);
    }
}

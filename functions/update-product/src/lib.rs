//! `PATCH /api/admin/products/{id}` (admin): changes a product's per-buyer limit, sale window or
//! total stock; each field given is set, `null` clears a limit or a window's bound.

use secrecy::SecretString;
use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::domain::ids::ProductId;
use shared::domain::waiting_room::WaitingRoom;
use shared::http::{self, Body, Request, Response};
use shared::store::pool::Pool;
use shared::store::products::{self, ProductChange};

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
    http::respond(update_product(deps, &request)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    #[serde(default, deserialize_with = "shared::json::nullable")]
    max_per_buyer: Option<Option<u32>>,
    #[serde(default, deserialize_with = "shared::json::nullable")]
    sale_starts_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "shared::json::nullable")]
    sale_ends_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "whole")]
    total_stock: Option<u32>,
    #[serde(default, deserialize_with = "shared::json::nullable")]
    waiting_room: Option<Option<WaitingRoom>>,
}

fn whole<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    shared::json::whole_number(deserializer).map(Some)
}

/// The request, checked: the admin token (before the body is read), the product id, the change.
pub fn parse(
    request: &Request,
    admin_token: &SecretString,
) -> Result<(ProductId, ProductChange), Error> {
    http::require_bearer(request, admin_token)?;
    let id = http::path_product_id(request)?;
    let body: ChangeBody = http::body_json(request)?;
    if body.total_stock.is_some_and(|stock| stock > MAX_STOCK) {
        return Err(Error::InvalidRequest(format!(
            "total_stock must be from 0 to {MAX_STOCK}"
        )));
    }
    let instant = |field: Option<Option<String>>| {
        field
            .map(|at| at.as_deref().map(shared::json::instant).transpose())
            .transpose()
    };
    let change = ProductChange {
        max_per_buyer: body.max_per_buyer,
        sale_starts_at: instant(body.sale_starts_at)?,
        sale_ends_at: instant(body.sale_ends_at)?,
        total_stock: body.total_stock,
        waiting_room: body.waiting_room,
    };
    if let Some(Some(limit)) = change.max_per_buyer
        && !(1..=1_000_000).contains(&limit)
    {
        return Err(Error::InvalidRequest(
            "max_per_buyer must be from 1 to 1000000".into(),
        ));
    }
    Ok((id, change))
}

async fn update_product(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    let (id, change) = parse(request, &deps.admin_token)?;
    let changed = products::change_product(&deps.pool, id, &change).await?;
    Ok(http::json(200, &changed.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, token: &str, body: &str) -> Request {
        lambda_http::http::Request::builder()
            .method("PATCH")
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::Text(body.to_owned()))
            .expect("a request")
    }

    fn token() -> SecretString {
        SecretString::from("admin".to_owned())
    }

    #[test]
    fn fields_given_are_set_null_clears_and_the_rest_stay() {
        let (id, change) = parse(
            &request(
                "/api/admin/products/7",
                "admin",
                r#"{"max_per_buyer":null,"sale_starts_at":"2026-12-24T09:00:00Z","total_stock":30}"#,
            ),
            &token(),
        )
        .expect("parsed");
        assert_eq!(id, ProductId(7));
        assert_eq!(change.max_per_buyer, Some(None));
        assert_eq!(
            change.sale_starts_at,
            Some(Some(
                shared::json::instant("2026-12-24T09:00:00Z").expect("an instant")
            ))
        );
        assert_eq!(change.sale_ends_at, None);
        assert_eq!(change.total_stock, Some(30));
    }

    #[test]
    fn bad_changes_are_refused() {
        for (body, code) in [
            (r#"{"max_per_buyer":0}"#, "invalid_request"),
            (r#"{"max_per_buyer":1000001}"#, "invalid_request"),
            (r#"{"sale_ends_at":"tomorrow"}"#, "invalid_request"),
            (r#"{"total_stock":-1}"#, "invalid_request"),
            (r#"{"total_stock":1000000001}"#, "invalid_request"),
            (r#"{"max_per_buyers":2}"#, "invalid_request"),
            (r#"[1]"#, "invalid_request"),
            ("{", "malformed_json"),
        ] {
            let err =
                parse(&request("/api/admin/products/7", "admin", body), &token()).expect_err(body);
            assert_eq!(err.code(), code, "{body}");
        }
        let err =
            parse(&request("/api/admin/products/7", "guess", "{}"), &token()).expect_err("refused");
        assert_eq!(err.code(), "unauthorized");
    }
}

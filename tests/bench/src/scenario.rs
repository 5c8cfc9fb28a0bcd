//! The scenarios, and the one operation each of a run's clients repeats in them.

use std::time::Duration;

use flash_sale_local::known_secrets::webhook_signature;
use serde_json::json;
use shared::domain::ids::ProductId;
use shared::store::holds::HoldRequest;
use shared::store::pool::Pool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Holds of 1 on one product over HTTP against the local server.
    HotHold,
    /// The same through `shared::store::holds::reserve`, no HTTP, one pool of the local server's size.
    HotHoldDirect,
    /// The same as N Lambda containers would: each client its own one-connection pool, calling
    /// create-hold's handler with an API Gateway event, no HTTP.
    LambdaHold,
    /// The classic row-lock counter design as raw SQL, on tables of its own: prepared statements.
    RowlockBaseline,
    /// The same in the text protocol, as a C client sends it.
    RowlockText,
    /// The seed's design as raw SQL: the row lock, and a sum of the product's active holds.
    SumBaseline,
    /// Hold, order and a signed `paid` webhook, until the order is paid.
    Flow,
    /// Holds of 1 spread over several products.
    Spread,
    /// `GET /api/products/{id}`.
    Read,
    /// Holds of 1 over HTTP on a product with nothing available: every answer a 409
    /// `insufficient_stock`.
    SoldOut,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Self::HotHold,
        Self::HotHoldDirect,
        Self::LambdaHold,
        Self::RowlockBaseline,
        Self::RowlockText,
        Self::SumBaseline,
        Self::Flow,
        Self::Spread,
        Self::Read,
        Self::SoldOut,
    ];
    pub const BASELINES: [Scenario; 3] =
        [Self::RowlockBaseline, Self::RowlockText, Self::SumBaseline];

    pub fn name(self) -> &'static str {
        match self {
            Self::HotHold => "hot-hold",
            Self::HotHoldDirect => "hot-hold-direct",
            Self::LambdaHold => "lambda-hold",
            Self::RowlockBaseline => "rowlock-baseline",
            Self::RowlockText => "rowlock-text",
            Self::SumBaseline => "sum-baseline",
            Self::Flow => "flow",
            Self::Spread => "spread",
            Self::Read => "read",
            Self::SoldOut => "sold-out",
        }
    }

    /// A scenario by name; `seed-baseline`, its old name, is the sum-of-holds baseline.
    pub fn parse(name: &str) -> Option<Self> {
        if name == "seed-baseline" {
            return Some(Self::SumBaseline);
        }
        Self::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }

    /// Clients talk HTTP to the local server, whose runtime is then the service's alone; in the
    /// other scenarios the clients' loop runs on the service's runtime, calling it directly.
    pub fn over_http(self) -> bool {
        matches!(
            self,
            Self::HotHold | Self::Flow | Self::Spread | Self::Read | Self::SoldOut
        )
    }

    pub fn is_baseline(self) -> bool {
        Self::BASELINES.contains(&self)
    }

    /// The row-lock design, on its own tables (one row, whatever the round's buckets).
    pub fn is_rowlock(self) -> bool {
        matches!(self, Self::RowlockBaseline | Self::RowlockText)
    }
}

/// The outcome of a refusal on a sold-out product, the one answer `sold-out` expects.
pub const SOLD_OUT: &str = "409 insufficient_stock";

/// A hold of 1: its status, and for a 409 its error code too (`409 insufficient_stock`).
pub async fn hold_over_http(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    product: ProductId,
) -> String {
    let body = json!({"product_id": product.0, "qty": 1});
    let sent = http
        .post(format!("{base}/api/holds"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await;
    let Ok(response) = sent else {
        return "error".into();
    };
    let status = response.status().as_u16();
    if status != 409 {
        return status.to_string();
    }
    match response.json::<serde_json::Value>().await {
        Ok(body) => format!("409 {}", body["error"]["code"].as_str().unwrap_or("?")),
        Err(_) => "error".into(),
    }
}

pub async fn read_over_http(http: &reqwest::Client, base: &str, product: ProductId) -> String {
    match http
        .get(format!("{base}/api/products/{product}"))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16().to_string(),
        Err(_) => "error".into(),
    }
}

/// Hold, order, signed `paid` webhook: the outcome is the first status that was not a success.
pub async fn flow_over_http(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    product: ProductId,
    payment_key: &str,
) -> String {
    let step = async {
        let hold: serde_json::Value = expect_status(
            http.post(format!("{base}/api/holds"))
                .bearer_auth(token)
                .json(&json!({"product_id": product.0, "qty": 1})),
            201,
        )
        .await?;
        let order: serde_json::Value = expect_status(
            http.post(format!("{base}/api/orders"))
                .bearer_auth(token)
                .json(&json!({"hold_id": hold["hold_id"]})),
            201,
        )
        .await?;
        let body = json!({"idempotency_key": payment_key, "order_id": order["order_id"], "status": "paid"})
            .to_string();
        let signature = webhook_signature(&body);
        expect_status::<serde_json::Value>(
            http.post(format!("{base}/api/payments/webhook"))
                .header("x-signature", signature)
                .body(body),
            202,
        )
        .await?;
        Ok::<_, String>(())
    };
    match step.await {
        Ok(()) => "flow-ok".into(),
        Err(outcome) => outcome,
    }
}

async fn expect_status<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    expected: u16,
) -> Result<T, String> {
    let response = request.send().await.map_err(|_| "error".to_owned())?;
    let status = response.status().as_u16();
    if status != expected {
        return Err(status.to_string());
    }
    response.json().await.map_err(|_| "error".to_owned())
}

pub async fn hold_direct(pool: &Pool, product: ProductId) -> String {
    let request = HoldRequest {
        product_id: product,
        buyer: None,
        qty: 1,
        idempotency_key: None,
    };
    match shared::store::holds::reserve(pool, &request, Duration::from_secs(600)).await {
        Ok(_) => "reserved".into(),
        Err(err) => err.code().into(),
    }
}

/// One Lambda container of `lambda-hold`: create-hold's dependencies with a one-connection pool,
/// and the API Gateway event its client sends again and again.
pub struct LambdaContainer {
    pub deps: create_hold::Deps,
    pub event: String,
}

impl LambdaContainer {
    /// The event API Gateway would send for `buyer`'s hold of 1: its JWT authorizer's claims
    /// carry the buyer.
    pub fn event(buyer: &str, product: ProductId) -> String {
        json!({
            "version": "2.0",
            "routeKey": "POST /api/holds",
            "rawPath": "/api/holds",
            "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "bench",
                "http": {"method": "POST", "path": "/api/holds", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "flash-sale-bench"},
                "requestId": "bench",
                "routeKey": "POST /api/holds",
                "stage": "$default",
                "time": "01/Jan/2026:00:00:00 +0000",
                "timeEpoch": 1_767_225_600_000_u64,
                "authorizer": {"jwt": {"claims": {"sub": buyer}, "scopes": null}}
            },
            "isBase64Encoded": false,
            "body": json!({"product_id": product.0, "qty": 1}).to_string()
        })
        .to_string()
    }
}

/// One invocation: the event parsed as the Lambda runtime would, then create-hold's handler.
pub async fn hold_through_handler(container: &LambdaContainer) -> String {
    let Ok(request) = lambda_http::request::from_str(&container.event) else {
        return "error".into();
    };
    match create_hold::handle(&container.deps, request).await {
        Ok(response) => response.status().as_u16().to_string(),
        Err(_) => "error".into(),
    }
}

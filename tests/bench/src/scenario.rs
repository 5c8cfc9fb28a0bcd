//! The scenarios, and the one operation each of a run's clients repeats in them.

use std::time::Duration;

use flash_sale_local::known_secrets::webhook_signature;
use serde_json::json;
use shared::domain::ids::{HoldId, ProductId};
use shared::store::holds::HoldRequest;
use sqlx::{MySqlPool, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Holds of 1 on one product over HTTP against the local server.
    HotHold,
    /// The same through `shared::store::holds::reserve`, no HTTP.
    HotHoldDirect,
    /// The seed's transaction shape as raw SQL: lock, sum the holds, update, insert, commit.
    SeedBaseline,
    /// Hold, order and a signed `paid` webhook, until the order is paid.
    Flow,
    /// Holds of 1 spread over several products.
    Spread,
    /// `GET /api/products/{id}`.
    Read,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Self::HotHold,
        Self::HotHoldDirect,
        Self::SeedBaseline,
        Self::Flow,
        Self::Spread,
        Self::Read,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::HotHold => "hot-hold",
            Self::HotHoldDirect => "hot-hold-direct",
            Self::SeedBaseline => "seed-baseline",
            Self::Flow => "flow",
            Self::Spread => "spread",
            Self::Read => "read",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }

    pub fn over_http(self) -> bool {
        !matches!(self, Self::HotHoldDirect | Self::SeedBaseline)
    }
}

pub async fn hold_over_http(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    product: ProductId,
) -> String {
    let body = json!({"product_id": product.0, "qty": 1});
    match http
        .post(format!("{base}/api/holds"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16().to_string(),
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
    client: usize,
    round: u64,
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
        let body = json!({"idempotency_key": format!("bench-{client}-{round}"), "order_id": order["order_id"], "status": "paid"})
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

pub async fn hold_direct(pool: &MySqlPool, product: ProductId) -> String {
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

/// The seed design, as raw SQL through the same driver and pool size: the product lock is held
/// across four statements, one of them a sum over every active hold of the product.
pub async fn seed_hold(pool: &MySqlPool, product: ProductId) -> String {
    let attempt = async {
        let mut tx = pool.begin().await?;
        let row =
            sqlx::query(
                "SELECT p.total_stock, CAST((SELECT SUM(sold_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS sold_stock \
                 FROM products p WHERE p.id = ? FOR UPDATE",
            )
                .bind(product.0)
                .fetch_one(&mut *tx)
                .await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(qty), 0) AS SIGNED) FROM holds \
             WHERE product_id = ? AND status = 'active' AND expires_at > UTC_TIMESTAMP(3)",
        )
        .bind(product.0)
        .fetch_one(&mut *tx)
        .await?;
        let available = i64::from(row.try_get::<i32, _>("total_stock")?)
            - row.try_get::<i64, _>("sold_stock")?
            - held;
        if available < 1 {
            tx.rollback().await?;
            return Ok::<_, sqlx::Error>("insufficient_stock");
        }
        // The seed kept its counters on the product row; ours live in its (single) stock bucket.
        sqlx::query(
            "UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1 \
             WHERE product_id = ? AND bucket = 0",
        )
            .bind(product.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO holds (id, product_id, qty, status, created_at, expires_at) \
             VALUES (?, ?, 1, 'active', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 600 SECOND)",
        )
        .bind(HoldId::generate().as_str())
        .bind(product.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok("reserved")
    };
    match attempt.await {
        Ok(outcome) => outcome.into(),
        Err(_) => "error".into(),
    }
}

//! Helpers for the end-to-end tests: a fresh database per test, a local server on it, and a
//! client that speaks the contract.

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use shared::Config;
use shared::adapters::local::NoPublisher;
use shared::ports::EventPublisher;
use shared::store::pool::Pool;
use sqlx::Row;

use flash_sale_local::{LocalServer, Options};

pub use flash_sale_local::database::with_database;
pub use flash_sale_local::known_secrets::{
    ADMIN_TOKEN, ADMISSION_TOKEN_SECRET, BUYER_JWT_SECRET, WEBHOOK_SECRET, buyer_token,
    webhook_signature,
};
pub use flash_sale_local::moto::Moto;

/// A database of its own for one test: created and migrated on `new`, dropped on drop, so tests
/// run in parallel and never see each other's rows.
pub struct TestDb {
    pub name: String,
    pub url: SecretString,
    pub pool: Pool,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::not_created();
        shared::store::db::create_database_if_missing(&db.url)
            .await
            .expect("create the test database");
        shared::store::db::migrate(&db.pool)
            .await
            .expect("migrate the test database");
        db
    }

    /// A name and URL only: the database does not exist until something creates it (the pool
    /// connects on first use).
    pub fn not_created() -> Self {
        Self::not_created_named(format!("flash_sale_test_{}", uuid::Uuid::new_v4().simple()))
    }

    /// As [`TestDb::not_created`], with a name of the caller's choosing (dropped all the same).
    pub fn not_created_named(name: String) -> Self {
        let server_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| shared::config::DEFAULT_DATABASE_URL.to_owned());
        let url = SecretString::from(with_database(&server_url, &name));
        let options = shared::store::db::connect_options(&url).expect("a valid DATABASE_URL");
        let pool = Pool::new(options, 8, shared::store::db::SessionSetup::OnConnect);
        Self { name, url, pool }
    }

    /// A product of `stock` units over `buckets`, open for sale with no limit, made through the
    /// store on this database's own pool (so no server's reads are told of it).
    pub async fn product(&self, stock: u32, buckets: u16) -> shared::domain::ids::ProductId {
        shared::store::products::create_product(
            &self.pool,
            &shared::store::products::NewProduct {
                name: "Test product".into(),
                price: shared::domain::money::Cents(1000),
                stock,
                buckets,
                sale: Default::default(),
                waiting_room: None,
            },
        )
        .await
        .expect("a product")
        .id
    }

    /// The configuration a local server on this database runs with; `vars` override it.
    pub fn config(&self, vars: &[(&str, &str)]) -> Config {
        test_config(self.url.expose_secret(), vars)
    }

    /// The sweeper's handler on this database, as its Lambda builds it, republishing at once.
    pub fn sweeper(&self, publisher: Arc<dyn EventPublisher>) -> sweeper::Deps {
        sweeper::Deps {
            pool: self.pool.clone(),
            publisher,
            payment_retry: self.config(&[]).payment_retry_policy(),
            republish_grace: std::time::Duration::ZERO,
        }
    }

    /// The SQS payment processor's handler on this database, as its Lambda builds it.
    pub fn payment_processor(&self) -> payment_processor::Deps {
        payment_processor::Deps {
            pool: self.pool.clone(),
            publisher: Arc::new(NoPublisher),
            max_attempts: self.config(&[]).webhook.max_attempts,
        }
    }

    pub async fn server(&self, vars: &[(&str, &str)]) -> LocalServer {
        self.server_with(vars, Options::default()).await
    }

    pub async fn server_with(&self, vars: &[(&str, &str)], options: Options) -> LocalServer {
        LocalServer::start(&self.config(vars), options)
            .await
            .expect("start the local server")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        let name = self.name.clone();
        // Drop cannot await, and this runtime is blocked right here: use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let pool = shared::store::db::connect(&url, 1).await.ok()?;
                // Connections of the test's pools may still be open (their runtime is the one
                // blocked here) and hold metadata locks that DROP DATABASE would wait on forever.
                let leftovers: Vec<i64> = sqlx::query_scalar(
                    "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                )
                .bind(&name)
                .fetch_all(&pool)
                .await
                .ok()?;
                for id in leftovers {
                    let _ = sqlx::query(&format!("KILL {id}")).execute(&pool).await;
                }
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`")).execute(&pool).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The configuration a local server on `database_url` runs with in the tests (the tests'
/// secrets, an ephemeral port, fast retries and sweeps); `vars` override it.
pub fn test_config(database_url: &str, vars: &[(&str, &str)]) -> Config {
    let mut all: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database_url.to_owned()),
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
        ("BUYER_JWT_SECRET".into(), BUYER_JWT_SECRET.into()),
        (
            "ADMISSION_TOKEN_SECRET".into(),
            ADMISSION_TOKEN_SECRET.into(),
        ),
        ("PAYMENT_RETRY_BASE_MS".into(), "50".into()),
        ("SWEEP_INTERVAL_SECONDS".into(), "1".into()),
    ]);
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_lookup(|name| all.get(name).cloned()).expect("valid test configuration")
}

/// A MariaDB user with a password, allowed into one test database only; dropped on drop.
pub struct PasswordUser {
    pub name: String,
    pub password: String,
    admin_url: SecretString,
    admin: Pool,
}

/// Where a TCP client may come from, as MariaDB matches it: each gets the same account.
const USER_HOSTS: [&str; 3] = ["%", "localhost", "127.0.0.1"];

impl PasswordUser {
    pub async fn create(db: &TestDb) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let user = Self {
            name: format!("fs_user_{}", &suffix[..12]),
            password: format!("pw{}", &suffix[12..]),
            admin_url: db.url.clone(),
            admin: db.pool.clone(),
        };
        user.for_each_host(|account| {
            format!("CREATE USER {account} IDENTIFIED BY '{}'", user.password)
        })
        .await;
        user.for_each_host(|account| format!("GRANT ALL ON `{}`.* TO {account}", db.name))
            .await;
        user
    }

    /// The test database's URL as this user, with `password`.
    pub fn url(&self, db: &TestDb, password: &str) -> String {
        let admin = self.admin_url.expose_secret();
        let authority = admin
            .split_once("://")
            .map_or(admin, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or(authority);
        with_database(
            &format!("mysql://{}:{password}@{host}/x", self.name),
            &db.name,
        )
    }

    pub async fn set_password(&self, password: &str) {
        self.for_each_host(|account| format!("ALTER USER {account} IDENTIFIED BY '{password}'"))
            .await;
    }

    async fn for_each_host(&self, statement: impl Fn(&str) -> String) {
        for host in USER_HOSTS {
            let account = format!("'{}'@'{host}'", self.name);
            sqlx::query(&statement(&account))
                .execute(&self.admin)
                .await
                .unwrap_or_else(|err| panic!("{}: {err}", statement(&account)));
        }
    }
}

impl Drop for PasswordUser {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // As TestDb's drop: this runtime is blocked right here, so a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = shared::store::db::connect(&url, 1).await.ok()?;
                for host in USER_HOSTS {
                    let drop_user = format!("DROP USER IF EXISTS '{name}'@'{host}'");
                    sqlx::query(&drop_user).execute(&pool).await.ok()?;
                }
                Some(())
            })
        })
        .join();
    }
}

/// A client of the HTTP contract: every call answers `(status, JSON body)`, checked against
/// `openapi.yaml`.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
    /// The bearer token sent on the buyer routes (when the request has no Authorization of its
    /// own): a buyer's, or none (anonymous, as with `BUYER_AUTH=none`).
    buyer_token: Option<String>,
}

/// The buyer an [`Api`] is unless told otherwise.
pub const DEFAULT_BUYER: &str = "test-buyer";

impl Api {
    pub fn new(server: &LocalServer) -> Self {
        Self::at(server.url())
    }

    pub fn at(base: String) -> Self {
        Self {
            base,
            client: reqwest::Client::new(),
            buyer_token: Some(buyer_token(DEFAULT_BUYER)),
        }
    }

    /// The same server, as another buyer.
    pub fn as_buyer(&self, buyer: &str) -> Self {
        self.with_token(Some(buyer_token(buyer)))
    }

    /// The same server, sending `token` (or nothing) as the buyer's bearer token.
    pub fn with_token(&self, token: Option<String>) -> Self {
        Self {
            base: self.base.clone(),
            client: self.client.clone(),
            buyer_token: token,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn put(&self, path: &str) -> (u16, Value) {
        self.send(self.client.put(format!("{}{path}", self.base)))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    /// A PATCH with the admin token.
    pub async fn patch_admin(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self
            .client
            .patch(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .body(body.to_string());
        self.send(request).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string(), &[]).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: String,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// As [`Api::post_raw`], with headers no `&str` can hold (bytes past ASCII, a name twice).
    pub async fn post_with_headers(
        &self,
        path: &str,
        body: String,
        headers: reqwest::header::HeaderMap,
    ) -> (u16, Value) {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .headers(headers)
            .body(body);
        self.send(request).await
    }

    /// Every answer must be one `openapi.yaml` documents for the request (see
    /// `openapi::Spec::check`): a test that gets anything else fails here, whatever it asserts.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let mut request = request.build().expect("a valid request");
        let (method, path) = (request.method().clone(), request.url().path().to_owned());
        let buyer_route = matches!(
            shared::routes::find(&method, &path),
            shared::routes::Match::Found { route, .. } if route.is_buyer_route()
        );
        if let Some(token) = &self.buyer_token
            && buyer_route
            && !request.headers().contains_key("authorization")
        {
            let value = format!("Bearer {token}").parse().expect("a header value");
            request.headers_mut().insert("authorization", value);
        }
        let response = self
            .client
            .execute(request)
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("a body");
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {body:?}"));
        if let Err(problems) =
            crate::openapi::SPEC.check(method.as_str(), &path, status, &headers, &json)
        {
            panic!(
                "{method} {path} answered {status}, which openapi.yaml does not allow: {problems}\nbody: {json}"
            );
        }
        (status, json)
    }

    pub async fn product(&self, id: u64) -> Value {
        let (status, body) = self.get(&format!("/api/products/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn create_product(&self, stock: u32, price: &str) -> u64 {
        self.create_split_product(stock, 1, price).await
    }

    /// The product `body` creates, as an admin: 201, or the test fails.
    pub async fn create_product_from(&self, body: &Value) -> Value {
        let (status, product) = self
            .post_raw(
                "/api/admin/products",
                body.to_string(),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            )
            .await;
        assert_eq!(status, 201, "{product}");
        product
    }

    /// A product whose stock is spread over `buckets` rows.
    pub async fn create_split_product(&self, stock: u32, buckets: u16, price: &str) -> u64 {
        let body = self
            .create_product_from(&json!({
                "name": "Flash item", "price": price, "stock": stock, "stock_buckets": buckets
            }))
            .await;
        assert_eq!(body["stock_buckets"], buckets);
        body["id"].as_u64().expect("product id")
    }

    pub async fn hold(&self, product_id: u64, qty: u32) -> (u16, Value) {
        self.post("/api/holds", &json!({"product_id": product_id, "qty": qty}))
            .await
    }

    pub async fn order(&self, hold_id: &str) -> (u16, Value) {
        self.post("/api/orders", &json!({"hold_id": hold_id})).await
    }

    /// Posts a correctly signed payment event.
    pub async fn pay(&self, key: &str, order_id: &str, status: &str) -> (u16, Value) {
        self.pay_event(&json!({"idempotency_key": key, "order_id": order_id, "status": status}))
            .await
    }

    /// Posts `event`, correctly signed, to the payment webhook.
    pub async fn pay_event(&self, event: &Value) -> (u16, Value) {
        let body = event.to_string();
        let signature = webhook_signature(&body);
        self.post_raw(
            "/api/payments/webhook",
            body,
            &[("x-signature", &signature)],
        )
        .await
    }

    /// Polls until `done` holds for the order's JSON, or panics after `timeout`.
    pub async fn wait_for_order(
        &self,
        order_id: &str,
        timeout: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, order) = self.get(&format!("/api/orders/{order_id}")).await;
            assert_eq!(status, 200, "{order}");
            if done(&order) {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order never reached the expected state: {order}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Checks a product's stock the way an auditor would. Through the API: the counters add up and
/// none is negative. In the database, in one statement (one snapshot): the buckets' totals add up
/// to the product's, their reserved counters are exactly the units of active holds, their sold
/// counters exactly the units of orders not cancelled.
pub async fn assert_stock_invariants(pool: &Pool, api: &Api, product_id: u64) -> Value {
    let product = api.product(product_id).await;
    let count = |name: &str| product[name].as_i64().expect("counter");
    let (total, available, reserved, sold) = (
        count("total_stock"),
        count("available_stock"),
        count("reserved_stock"),
        count("sold_stock"),
    );
    assert_eq!(
        total,
        available + reserved + sold,
        "counters add up: {product}"
    );
    assert!(
        available >= 0 && reserved >= 0 && sold >= 0,
        "no counter is negative: {product}"
    );
    let row = sqlx::query(
        "SELECT CAST((SELECT SUM(reserved_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS reserved_stock, \
           CAST((SELECT SUM(sold_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS sold_stock, \
           CAST((SELECT SUM(total_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS bucket_total, \
           CAST(p.total_stock AS SIGNED) AS total_stock, \
           CAST((SELECT COALESCE(SUM(qty), 0) FROM holds WHERE product_id = p.id AND status = 'active') AS SIGNED) AS held, \
           CAST((SELECT COALESCE(SUM(qty), 0) FROM orders WHERE product_id = p.id AND status <> 'cancelled') AS SIGNED) AS ordered \
         FROM products p WHERE p.id = ?",
    )
    .bind(product_id)
    .fetch_one(pool)
    .await
    .expect("audit query");
    let column = |name: &str| row.try_get::<i64, _>(name).expect("column");
    assert_eq!(
        column("bucket_total"),
        column("total_stock"),
        "buckets add up to the product: {product}"
    );
    assert_eq!(
        column("reserved_stock"),
        column("held"),
        "reserved counters equal active holds: {product}"
    );
    assert_eq!(
        column("sold_stock"),
        column("ordered"),
        "sold counters equal live orders: {product}"
    );
    assert_eq!(
        sold,
        column("ordered"),
        "sold as shown equals live orders: {product}"
    );
    product
}

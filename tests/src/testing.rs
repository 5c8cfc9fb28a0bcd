//! Helpers for the end-to-end tests: a fresh database per test, a local server on it, and a
//! client that speaks the contract.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use shared::{Config, db};
use sqlx::MySqlPool;

use crate::{LocalServer, Options};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// A database of its own for one test: created and migrated on `new`, dropped on drop, so tests
/// run in parallel and never see each other's rows.
pub struct TestDb {
    pub name: String,
    pub url: SecretString,
    pub pool: MySqlPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let server_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| shared::config::DEFAULT_DATABASE_URL.to_owned());
        let name = format!("flash_sale_test_{}", uuid::Uuid::new_v4().simple());
        let url = SecretString::from(with_database(&server_url, &name));
        db::create_database_if_missing(&url).await.expect("create the test database");
        let pool = db::connect(&url, 8).await.expect("connect to the test database");
        db::migrate(&pool).await.expect("migrate the test database");
        Self { name, url, pool }
    }

    /// The configuration a local server on this database runs with; `vars` override it.
    pub fn config(&self, vars: &[(&str, &str)]) -> Config {
        let mut all: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), self.url.expose_secret().to_owned()),
            ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
            ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ("WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
            ("PAYMENT_RETRY_BASE_MS".into(), "50".into()),
            ("SWEEP_INTERVAL_SECONDS".into(), "1".into()),
        ]);
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_lookup(|name| all.get(name).cloned()).expect("valid test configuration")
    }

    pub async fn server(&self, vars: &[(&str, &str)]) -> LocalServer {
        self.server_with(vars, Options::default()).await
    }

    pub async fn server_with(&self, vars: &[(&str, &str)], options: Options) -> LocalServer {
        LocalServer::start(&self.config(vars), options).await.expect("start the local server")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        let name = self.name.clone();
        // Drop cannot await, and the test's runtime may be shutting down: use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let pool = db::connect(&url, 1).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`")).execute(&pool).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// `mysql://user@host:3306/anything?x=y` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("mysql", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// The `X-Signature` header a provider signing with [`WEBHOOK_SECRET`] would send now.
pub fn webhook_signature(body: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    shared::payments::sign(&SecretString::from(WEBHOOK_SECRET.to_owned()), now, body.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_is_replaced_and_options_kept() {
        assert_eq!(super::with_database("mysql://root@127.0.0.1:3306/flash_sale", "t1"), "mysql://root@127.0.0.1:3306/t1");
        assert_eq!(super::with_database("mysql://u:p@h/db?ssl-mode=disabled", "t2"), "mysql://u:p@h/t2?ssl-mode=disabled");
        assert_eq!(super::with_database("mysql://root@127.0.0.1:3306", "t3"), "mysql://root@127.0.0.1:3306/t3");
    }
}

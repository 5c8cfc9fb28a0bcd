//! The local server's database, readied (created, migrated, seeded) before it serves or by
//! `flash-sale-local migrate`; and the names of the databases the tests and the benchmark create
//! beside the one in `DATABASE_URL`.

use std::collections::HashSet;

use shared::store::db::MIGRATOR;
use shared::store::pool::Pool;
use shared::{Config, Error};

/// What readying the database did, for `flash-sale-local migrate` to say.
pub struct Prepared {
    pub pool: Pool,
    /// The database's name, as `DATABASE_URL` gives it.
    pub name: String,
    /// The migrations this run applied (version, description), oldest first: none when the
    /// schema was already current.
    pub applied: Vec<(i64, String)>,
}

/// Creates the database if needed, migrates it and seeds the demo product when there is none.
pub async fn prepare_database(config: &Config) -> Result<Prepared, Error> {
    shared::store::db::create_database_if_missing(&config.database.url).await?;
    let name = shared::store::db::connect_options(&config.database.url)?
        .get_database()
        .unwrap_or_default()
        .to_owned();
    let max_connections = config
        .database
        .max_connections
        .unwrap_or(shared::config::LOCAL_SERVER_CONNECTIONS);
    let pool = shared::store::db::connect(&config.database.url, max_connections)
        .await?
        .with_product_read_max_age(config.database.product_read_max_age);
    let before = applied_versions(&pool).await?;
    shared::store::db::migrate(&pool).await?;
    if shared::store::products::seed_demo_product(&pool).await? {
        tracing::info!("created demo product 1: 100 units at 50.00");
    }
    let applied = MIGRATOR
        .iter()
        .filter(|migration| !before.contains(&migration.version))
        .map(|migration| (migration.version, migration.description.to_string()))
        .collect();
    Ok(Prepared {
        pool,
        name,
        applied,
    })
}

/// The versions sqlx's migrator has recorded as applied; none before its table exists.
async fn applied_versions(pool: &Pool) -> Result<HashSet<i64>, Error> {
    let has_table: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await?;
    if has_table == 0 {
        return Ok(HashSet::new());
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?;
    Ok(versions.into_iter().collect())
}

/// `mysql://user@host:3306/anything?x=y` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("mysql", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_is_replaced_and_options_kept() {
        assert_eq!(
            super::with_database("mysql://root@127.0.0.1:3306/flash_sale", "t1"),
            "mysql://root@127.0.0.1:3306/t1"
        );
        assert_eq!(
            super::with_database("mysql://u:p@h/db?ssl-mode=disabled", "t2"),
            "mysql://u:p@h/t2?ssl-mode=disabled"
        );
        assert_eq!(
            super::with_database("mysql://root@127.0.0.1:3306", "t3"),
            "mysql://root@127.0.0.1:3306/t3"
        );
    }
}

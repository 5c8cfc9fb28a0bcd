//! `flash-sale-local`: the whole API on one machine. Needs only a MySQL 8 or MariaDB server at
//! `DATABASE_URL`; creates the database, migrates it and seeds a demo product.

use std::process::ExitCode;

use flash_sale_local::{LocalServer, Options};
use secrecy::SecretString;
use shared::Config;

#[tokio::main]
async fn main() -> ExitCode {
    lambda_http::tracing::init_default_subscriber();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "flash-sale-local could not start");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), shared::Error> {
    let mut config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {}
        // For the functions under `cargo lambda watch`, which never migrate: ready the database, exit.
        Some("migrate") => {
            return flash_sale_local::server::prepare_database(&config)
                .await
                .map(drop);
        }
        Some(other) => {
            return Err(shared::Error::Config(format!(
                "unknown command {other:?}; use `serve` (default) or `migrate`"
            )));
        }
    }
    // Locally a missing secret is generated and shown once, so the first run needs no setup.
    if config.admin_token.is_none() {
        let token = random_secret();
        println!("ADMIN_TOKEN was not set; using ADMIN_TOKEN={token}");
        config.admin_token = Some(SecretString::from(token));
    }
    if config.webhook_secrets.is_none() {
        let secret = random_secret();
        println!("WEBHOOK_SECRET was not set; using WEBHOOK_SECRET={secret}");
        config.webhook_secrets = Some(vec![SecretString::from(secret)]);
    }
    let server = LocalServer::start(&config, Options::default()).await?;
    println!("flash-sale local server listening on {}", server.url());
    tokio::signal::ctrl_c()
        .await
        .map_err(|err| shared::Error::Internal(format!("cannot wait for Ctrl-C: {err}")))?;
    tracing::info!("shutting down");
    Ok(())
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

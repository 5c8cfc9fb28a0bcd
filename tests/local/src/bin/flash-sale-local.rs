//! `flash-sale-local`: the whole API on one machine. Needs only a MySQL 8 or MariaDB server at
//! `DATABASE_URL`; creates the database, migrates it and seeds a demo product.
//!
//! `flash-sale-local [serve]` serves; `migrate` readies the database and exits; `reconcile
//! [--repair] [--product ID]` checks the stock counters against the holds and orders, prints the
//! report and exits 1 while drift remains.

use std::process::ExitCode;

use flash_sale_local::{LocalServer, Options};
use secrecy::SecretString;
use shared::Config;

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run().await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = %err, "flash-sale-local could not start");
            ExitCode::FAILURE
        }
    }
}

/// JSON lines, as the functions log in Lambda (`LoggingConfig: LogFormat: JSON`), with the
/// request's span (its request id) on every line; `AWS_LAMBDA_LOG_FORMAT=text` for plain text.
/// `RUST_LOG` sets the level (default `info`).
fn init_logging() {
    use lambda_http::tracing::subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let logs = fmt().with_env_filter(filter).with_target(false);
    if text {
        logs.init();
    } else {
        logs.json().init();
    }
}

async fn run() -> Result<ExitCode, shared::Error> {
    let mut config = Config::from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => {}
        // For the functions under `cargo lambda watch`, which never migrate: ready the database, exit.
        Some("migrate") => {
            flash_sale_local::server::prepare_database(&config).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Some("reconcile") => return reconcile(&config, &args[1..]).await,
        Some(other) => {
            return Err(shared::Error::Config(format!(
                "unknown command {other:?}; use `serve` (default), `migrate` or `reconcile [--repair] [--product ID]`"
            )));
        }
    }
    // Locally a missing secret is generated and shown once, so the first run needs no setup.
    if config.admin_token.is_none() {
        let token = random_secret();
        println!("ADMIN_TOKEN was not set; using ADMIN_TOKEN={token}");
        config.admin_token = Some(SecretString::from(token));
    }
    if config.webhook.secrets.is_none() {
        let secret = random_secret();
        println!("WEBHOOK_SECRET was not set; using WEBHOOK_SECRET={secret}");
        config.webhook.secrets = Some(vec![SecretString::from(secret)]);
    }
    let server = LocalServer::start(&config, Options::default()).await?;
    println!("flash-sale local server listening on {}", server.url());
    tokio::signal::ctrl_c()
        .await
        .map_err(|err| shared::Error::Internal(format!("cannot wait for Ctrl-C: {err}")))?;
    tracing::info!("shutting down");
    Ok(ExitCode::SUCCESS)
}

/// Exit status 0: no drift left; 1: drift remains; 2: a usage error.
async fn reconcile(config: &Config, args: &[String]) -> Result<ExitCode, shared::Error> {
    let Some(request) = reconcile_request(args) else {
        tracing::error!("usage: flash-sale-local reconcile [--repair] [--product ID]");
        return Ok(ExitCode::from(2));
    };
    let deps = reconcile::Deps {
        pool: shared::store::db::connect(&config.database.url, 1).await?,
    };
    let report = reconcile::handle(&deps, request).await?;
    // One JSON line, like everything else the binary prints.
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    Ok(if report.unresolved() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn reconcile_request(args: &[String]) -> Option<reconcile::Request> {
    let mut request = reconcile::Request::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repair" => request.repair = true,
            "--product" => request.product_id = Some(args.next()?.parse().ok()?),
            _ => return None,
        }
    }
    Some(request)
}

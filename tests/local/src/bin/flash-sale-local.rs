//! `flash-sale-local`: the whole API on one machine. Needs only a MySQL 8 or MariaDB server at
//! `DATABASE_URL`; creates the database, migrates it and seeds a demo product. `--help` says
//! what else it does.

use std::process::ExitCode;

use flash_sale_local::{LocalServer, Options};
use secrecy::SecretString;
use shared::Config;
use shared::adapters::jwt::BuyerTokens;
use shared::config::BuyerAuth;
use shared::config::{DEFAULT_DATABASE_URL, DEFAULT_LISTEN_ADDR};

/// What the command line asks for.
enum Invocation {
    /// Print this text on stdout.
    Help(String),
    /// Print the AWS capacity plan of a sale: no configuration, no database.
    Capacity(Box<flash_sale_local::capacity::Sale>),
    Run(Command),
}

enum Command {
    Serve,
    /// For the functions under `cargo lambda watch`, which never migrate: ready the database, exit.
    Migrate,
    Reconcile(reconcile::Request),
    /// Prints a buyer's bearer token, signed with BUYER_JWT_SECRET, valid for the seconds given.
    Token {
        buyer: String,
        ttl_seconds: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args) {
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Capacity(sale)) => return capacity(&sale),
        Ok(Invocation::Run(command)) => command,
        Err(problem) => {
            eprint!("flash-sale-local: {problem}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(command).await {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = %err, "flash-sale-local could not start");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    format!(
        "\
flash-sale-local: the flash-sale API on one machine, every function in one process, against
the MySQL 8 or MariaDB server in DATABASE_URL.

Usage:
  flash-sale-local [serve]      create, migrate and seed the database if needed, then serve
  flash-sale-local migrate      create, migrate and seed the database, say what it did, exit
  flash-sale-local reconcile [--repair] [--product ID]
                                check the stock counters against the holds and orders (of one
                                product with --product), print the report; with --repair, set
                                drifted counters to what the rows say. Exit status 1 while
                                drift remains
  flash-sale-local token BUYER [--ttl SECONDS]
                                print a bearer token of BUYER's (its `sub`), signed with
                                BUYER_JWT_SECRET, valid for SECONDS (default 3600)
  flash-sale-local capacity --holds-per-second N --visitors N [--products N] [--region R]
                   [--hold-ttl S] [--writer-ms-per-hold MS] [--quota KEY=VALUE] [...]
                                print the AWS capacity plan of a sale (Lambda, API Gateway,
                                CloudFront, Scheduler, SQS, EventBridge, Secrets Manager, the
                                writer's CPU and connections, stock buckets) and the quotas to
                                raise before it; exit status 1 if any. Every flag and limit:
                                flash-sale-local capacity --help
  flash-sale-local --help       this text (also -h, help)

Environment:
  DATABASE_URL    the database, created if missing (default {DEFAULT_DATABASE_URL})
  LISTEN_ADDR     where to serve (default {DEFAULT_LISTEN_ADDR})
  ADMIN_TOKEN     the bearer token of POST /api/admin/products (generated and shown if unset)
  WEBHOOK_SECRET  the payment webhook's secret, old,new while rotating (generated and shown
                  if unset)
  BUYER_AUTH      jwt (default: the buyer routes need a bearer token) or none (anonymous)
  BUYER_JWT_SECRET  the buyers' tokens' HS256 secret, old,new while rotating (generated and
                  shown, with a sample token, if unset); BUYER_JWT_ISSUER and
                  BUYER_JWT_AUDIENCE are checked when set
  ADMISSION_TOKEN_SECRET  the waiting rooms' admission tokens' secret, old,new while
                  rotating (generated and shown if unset)
  RUST_LOG        the log level (default info); logs are JSON lines, or plain text with
                  AWS_LAMBDA_LOG_FORMAT=text
  The other settings (hold TTL, payment window, retries, AWS resources) are in README.md.

Exit status: 0 done, 1 failed (or drift remains, or a quota must be raised), 2 a usage error.
"
    )
}

/// The command line; `Err` names what is wrong with it.
fn parse(args: &[String]) -> Result<Invocation, String> {
    let asks_for_help = |arg: &String| arg == "--help" || arg == "-h";
    if args.iter().any(asks_for_help) || args.first().is_some_and(|arg| arg == "help") {
        return Ok(Invocation::Help(
            if args.first().is_some_and(|arg| arg == "capacity") {
                flash_sale_local::capacity::usage()
            } else {
                usage()
            },
        ));
    }
    let (command, rest) = match args.split_first() {
        None => return Ok(Invocation::Run(Command::Serve)),
        Some((command, rest)) => (command.as_str(), rest),
    };
    let command = match command {
        "serve" => Command::Serve,
        "migrate" => Command::Migrate,
        "reconcile" => Command::Reconcile(reconcile_request(rest)?),
        "token" => return token_request(rest).map(Invocation::Run),
        "capacity" => {
            return flash_sale_local::capacity::parse(rest)
                .map(|sale| Invocation::Capacity(Box::new(sale)));
        }
        other => return Err(format!("unknown argument {other:?}")),
    };
    match (&command, rest.first()) {
        (Command::Serve | Command::Migrate, Some(extra)) => {
            Err(format!("unknown argument {extra:?}"))
        }
        _ => Ok(Invocation::Run(command)),
    }
}

fn token_request(args: &[String]) -> Result<Command, String> {
    let (buyer, rest) = args.split_first().ok_or("token needs a buyer id")?;
    if shared::domain::ids::BuyerId::parse(buyer).is_none() {
        return Err(format!(
            "a buyer id is 1 to 255 printable ASCII characters, got {buyer:?}"
        ));
    }
    let ttl_seconds = match rest {
        [] => 3600,
        [flag, seconds] if flag == "--ttl" => seconds
            .parse()
            .ok()
            .filter(|seconds| *seconds > 0)
            .ok_or(format!(
            "--ttl takes a positive number of seconds, got {seconds:?}"
        ))?,
        [other, ..] => return Err(format!("unknown argument {other:?} of token")),
    };
    Ok(Command::Token {
        buyer: buyer.clone(),
        ttl_seconds,
    })
}

fn reconcile_request(args: &[String]) -> Result<reconcile::Request, String> {
    let mut request = reconcile::Request::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repair" => request.repair = true,
            "--product" => {
                let id = args.next().ok_or("--product needs a product id")?;
                let id = id
                    .parse()
                    .map_err(|_| format!("--product takes a product id, got {id:?}"))?;
                request.product_id = Some(id);
            }
            other => return Err(format!("unknown argument {other:?} of reconcile")),
        }
    }
    Ok(request)
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

async fn run(command: Command) -> Result<ExitCode, shared::Error> {
    let mut config = Config::from_env()?;
    match command {
        Command::Serve => {}
        Command::Migrate => {
            migrate(&config).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Reconcile(request) => return reconcile(&config, request).await,
        Command::Token { buyer, ttl_seconds } => {
            let tokens = BuyerTokens::new(&config.buyers)?;
            let buyer = shared::domain::ids::BuyerId::parse(&buyer)
                .ok_or_else(|| shared::Error::InvalidRequest("not a buyer id".into()))?;
            println!(
                "{}",
                tokens.issue(&buyer, std::time::Duration::from_secs(ttl_seconds))?
            );
            return Ok(ExitCode::SUCCESS);
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
    if config.admission_token_secrets.is_none() {
        let secret = random_secret();
        println!("ADMISSION_TOKEN_SECRET was not set; using ADMISSION_TOKEN_SECRET={secret}");
        config.admission_token_secrets = Some(vec![SecretString::from(secret)]);
    }
    if config.buyers.auth == BuyerAuth::Jwt && config.buyers.jwt_secrets.is_none() {
        let secret = random_secret();
        println!("BUYER_JWT_SECRET was not set; using BUYER_JWT_SECRET={secret}");
        config.buyers.jwt_secrets = Some(vec![SecretString::from(secret)]);
        let sample = shared::domain::ids::BuyerId::parse("buyer-1").expect("a buyer id");
        let token = BuyerTokens::new(&config.buyers)?
            .issue(&sample, std::time::Duration::from_secs(86_400))?;
        println!("a day's bearer token of buyer-1: {token}");
    }
    let server = LocalServer::start(&config, Options::default()).await?;
    println!("flash-sale local server listening on {}", server.url());
    tokio::signal::ctrl_c()
        .await
        .map_err(|err| shared::Error::Internal(format!("cannot wait for Ctrl-C: {err}")))?;
    tracing::info!("shutting down");
    Ok(ExitCode::SUCCESS)
}

/// Readies the database and says what that took, for a person at a terminal.
async fn migrate(config: &Config) -> Result<(), shared::Error> {
    let prepared = flash_sale_local::database::prepare_database(config).await?;
    let known = shared::store::db::MIGRATOR.iter().count();
    for (version, description) in &prepared.applied {
        println!("applied migration {version}: {description}");
    }
    if prepared.applied.is_empty() {
        println!(
            "database {} was already up to date ({known} migrations)",
            prepared.name
        );
    } else {
        println!(
            "database {} is up to date ({known} migrations)",
            prepared.name
        );
    }
    Ok(())
}

/// Exit status 0: no drift left; 1: drift remains.
async fn reconcile(
    config: &Config,
    request: reconcile::Request,
) -> Result<ExitCode, shared::Error> {
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

/// Exit status 0: everything fits; 1: some limit must be raised before the sale.
fn capacity(sale: &flash_sale_local::capacity::Sale) -> ExitCode {
    let plan = flash_sale_local::capacity::plan(sale);
    print!("{}", flash_sale_local::capacity::render(sale, &plan));
    if plan.exceeded().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

//! What a round's clients call and how: the service — the local server, a pool, or a Lambda
//! container per client — started on the service's runtime, and the clients that drive it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_sale_local::known_secrets::{
    ADMIN_TOKEN, ADMISSION_TOKEN_SECRET, BUYER_JWT_SECRET, WEBHOOK_SECRET, buyer_token,
};
use flash_sale_local::{LocalServer, Options};
use secrecy::{ExposeSecret, SecretString};
use shared::Config;
use shared::adapters::local::{NoPublisher, NoScheduler};
use shared::domain::ids::ProductId;
use shared::store::pool::Pool;
use tokio::runtime::Handle;

use crate::baseline::{Protocol, rowlock_hold, sum_hold};
use crate::run::RunConfig;
use crate::scenario::{
    LambdaContainer, Scenario, flow_over_http, hold_direct, hold_over_http, hold_through_handler,
    read_over_http,
};

/// The clients' tally of one phase.
#[derive(Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub outcomes: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, started: Instant, outcome: impl Into<String>) {
        self.latencies.push(started.elapsed());
        *self.outcomes.entry(outcome.into()).or_default() += 1;
    }

    fn add(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (outcome, count) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += count;
        }
    }
}

/// What the clients call, started on the service's runtime: the local server, a pool, or one
/// Lambda container per client.
pub struct Target {
    server: Option<LocalServer>,
    /// The direct scenarios' pool, or each Lambda container's.
    pools: Vec<Pool>,
    /// Handed to the clients, one each.
    containers: Vec<LambdaContainer>,
}

impl Target {
    /// `database_url` is the database the service connects to: the run's own, or a proxy in
    /// front of it for a phase whose commands are counted on the wire.
    pub async fn start(
        scenario: Scenario,
        database_url: SecretString,
        clients: usize,
        pool_size: u32,
        product: ProductId,
    ) -> Result<Self, String> {
        let mut target = Self {
            server: None,
            pools: Vec::new(),
            containers: Vec::new(),
        };
        if scenario.over_http() {
            let config = service_config(&database_url, Some(pool_size))?;
            let server = LocalServer::start(&config, Options::default()).await;
            target.server = Some(server.map_err(|err| err.to_string())?);
        } else if scenario == Scenario::LambdaHold {
            // No pool size: each container keeps the Lambda's own (one connection).
            let config = service_config(&database_url, None)?;
            let options =
                shared::store::db::connect_options(&database_url).map_err(|err| err.to_string())?;
            target.containers = (0..clients)
                .map(|client| LambdaContainer {
                    deps: create_hold::Deps {
                        // The Lambda's own pool: one connection, opened on first use.
                        pool: shared::store::db::lazy_pool(&config, options.clone()),
                        scheduler: Arc::new(NoScheduler),
                        publisher: Arc::new(NoPublisher),
                        hold_ttl: config.holds.ttl,
                        max_hold_qty: config.holds.max_qty,
                        buyer_auth: config.buyers.auth,
                        admission_tokens: config.require_admission_tokens().ok(),
                    },
                    event: LambdaContainer::event(&buyer(client), product),
                })
                .collect::<Vec<_>>();
            target.pools = target
                .containers
                .iter()
                .map(|container| container.deps.pool.clone())
                .collect();
        } else {
            let pool = shared::store::db::connect(&database_url, pool_size).await;
            target.pools = vec![pool.map_err(|err| err.to_string())?];
        }
        Ok(target)
    }

    /// One client per `config.clients`, each with what it calls the service through.
    pub fn clients(
        &mut self,
        config: &RunConfig,
        products: &Arc<Vec<ProductId>>,
    ) -> Result<Vec<Client>, String> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(config.clients)
            .build()
            .map_err(|err| err.to_string())?;
        let mut containers = std::mem::take(&mut self.containers).into_iter();
        (0..config.clients)
            .map(|index| {
                let work = match (&self.server, self.pools.first()) {
                    (Some(server), _) => Work::Http {
                        http: http.clone(),
                        base: server.url(),
                        token: buyer_token(&buyer(index)),
                    },
                    (None, _) if config.scenario == Scenario::LambdaHold => Work::Lambda(
                        containers
                            .next()
                            .ok_or("fewer Lambda containers than clients")?,
                    ),
                    (None, Some(pool)) => Work::Pool(pool.clone()),
                    (None, None) => return Err("the service has no pool".to_owned()),
                };
                Ok(Client {
                    payment_keys: format!("bench-{index}-{}", uuid::Uuid::new_v4().simple()),
                    scenario: config.scenario,
                    products: products.clone(),
                    rng: fastrand::Rng::with_seed(index as u64),
                    round: 0,
                    work,
                })
            })
            .collect()
    }

    /// The local server's address, when the target is one.
    pub fn url(&self) -> Option<String> {
        self.server.as_ref().map(LocalServer::url)
    }

    pub async fn stop(self) {
        drop(self.server);
        for pool in self.pools {
            pool.close().await;
        }
    }
}

/// Every client is a buyer of its own, as many shoppers on one hot product are.
fn buyer(client: usize) -> String {
    format!("bench-buyer-{client}")
}

/// The service's configuration for a run: the tests' secrets, a hold TTL that outlives the run,
/// and the pool size if one is given.
fn service_config(database_url: &SecretString, pool_size: Option<u32>) -> Result<Config, String> {
    let mut vars = std::collections::HashMap::from([
        ("DATABASE_URL", database_url.expose_secret().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("BUYER_JWT_SECRET", BUYER_JWT_SECRET.to_owned()),
        // The local server does not start without it (waiting rooms sign admissions with it).
        ("ADMISSION_TOKEN_SECRET", ADMISSION_TOKEN_SECRET.to_owned()),
        ("HOLD_TTL_SECONDS", "600".to_owned()),
    ]);
    if let Some(size) = pool_size {
        vars.insert("DATABASE_MAX_CONNECTIONS", size.to_string());
    }
    // Reads with and without sharing, measured alike: the service's own setting, passed on.
    if let Ok(max_age) = std::env::var("PRODUCT_READ_MAX_AGE_MS") {
        vars.insert("PRODUCT_READ_MAX_AGE_MS", max_age);
    }
    Config::from_lookup(|name| vars.get(name).cloned()).map_err(|err| err.to_string())
}

/// How a client reaches the service.
enum Work {
    Http {
        http: reqwest::Client,
        base: String,
        token: String,
    },
    Pool(Pool),
    Lambda(LambdaContainer),
}

/// One client, kept from the warm-up to the measured phase (its connections, its buyer).
pub struct Client {
    /// Its payments' idempotency keys start with it: unique to this client of this service,
    /// whose keys must not repeat another's (a repeat is acknowledged and not applied).
    payment_keys: String,
    scenario: Scenario,
    products: Arc<Vec<ProductId>>,
    rng: fastrand::Rng,
    round: u64,
    work: Work,
}

impl Client {
    async fn drive(mut self, until: Instant) -> (Self, Tally) {
        let mut tally = Tally::default();
        while Instant::now() < until {
            let product = self.products[self.rng.usize(..self.products.len())];
            let started = Instant::now();
            let outcome = match (&self.work, self.scenario) {
                (Work::Http { http, base, .. }, Scenario::Read) => {
                    read_over_http(http, base, product).await
                }
                (Work::Http { http, base, token }, Scenario::Flow) => {
                    let key = format!("{}-{}", self.payment_keys, self.round);
                    flow_over_http(http, base, token, product, &key).await
                }
                (Work::Http { http, base, token }, _) => {
                    hold_over_http(http, base, token, product).await
                }
                (Work::Pool(pool), Scenario::RowlockBaseline) => {
                    rowlock_hold(pool, Protocol::Prepared).await
                }
                (Work::Pool(pool), Scenario::RowlockText) => {
                    rowlock_hold(pool, Protocol::Text).await
                }
                (Work::Pool(pool), Scenario::SumBaseline) => sum_hold(pool, product).await,
                (Work::Pool(pool), _) => hold_direct(pool, product).await,
                (Work::Lambda(container), _) => hold_through_handler(container).await,
            };
            tally.record(started, outcome);
            self.round += 1;
        }
        (self, tally)
    }
}

/// Runs every client on `on` until `until` and gathers them back with their tally.
pub async fn drive(
    on: &Handle,
    clients: Vec<Client>,
    until: Instant,
) -> Result<(Vec<Client>, Tally), String> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| on.spawn(client.drive(until)))
        .collect();
    let mut clients = Vec::with_capacity(tasks.len());
    let mut tally = Tally::default();
    for task in tasks {
        let (client, own) = task.await.map_err(|err| err.to_string())?;
        clients.push(client);
        tally.add(own);
    }
    Ok((clients, tally))
}

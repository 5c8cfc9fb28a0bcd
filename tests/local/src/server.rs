//! The local server. Several instances on one database behave like several Lambda containers:
//! all coordination is in the database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::State;
use lambda_http::{Body, Request, RequestExt, Response};
use secrecy::ExposeSecret;
use shared::adapters::aws as adapters;
use shared::adapters::aws::SdkLoader;
use shared::adapters::jwt::BuyerTokens;
use shared::adapters::local::{InboxQueue, LogPublisher, NoScheduler, TimerScheduler};
use shared::config::BuyerAuth;
use shared::ports::{DeadlineScheduler, EventPublisher, PaymentQueue};
use shared::service::payments::DrainReport;
use shared::service::sweep::SweepReport;
use shared::store::pool::Pool;
use shared::store::settle::Settlement;
use shared::{Config, Error, http};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument;

use shared::routes::{self, Match, Route};

/// Payment queue workers per instance; each drains with SKIP LOCKED, so they never collide.
const INBOX_WORKERS: usize = 2;
/// How often an idle worker looks for events enqueued by another instance or now due for retry.
const INBOX_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline timers, the sweeper and the payment queue workers. Off only in tests that need a
    /// server which accepts work but never processes it (as if it crashed right after answering).
    pub background_work: bool,
    /// The AWS SDK configuration for the AWS adapters; `None` loads it from the environment.
    pub aws: Option<aws_config::SdkConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            background_work: true,
            aws: None,
        }
    }
}

struct Handlers {
    get_product: get_product::Deps,
    create_product: create_product::Deps,
    create_hold: create_hold::Deps,
    get_hold: get_hold::Deps,
    release_hold: release_hold::Deps,
    update_product: update_product::Deps,
    create_order: create_order::Deps,
    get_order: get_order::Deps,
    payment_webhook: payment_webhook::Deps,
    join_queue: join_queue::Deps,
    get_queue_entry: get_queue_entry::Deps,
    get_queue_summary: get_queue_summary::Deps,
    /// The buyer routes' bearer tokens, checked here as the HTTP API's JWT authorizer does on
    /// AWS (`BUYER_AUTH=jwt`); `None` with `BUYER_AUTH=none`.
    buyer_tokens: Option<BuyerTokens>,
}

/// A running server; dropping it stops the listener and every background task at once.
pub struct LocalServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalServer {
    /// Creates the database if needed, migrates it, seeds the demo product when there is none,
    /// and starts serving on `config.local.listen_addr`.
    pub async fn start(config: &Config, options: Options) -> Result<Self, Error> {
        let pool = crate::database::prepare_database(config).await?.pool;

        // The AWS adapters when their variables are set, in-process ones otherwise.
        let sdk = options
            .aws
            .clone()
            .map_or_else(SdkLoader::from_env, SdkLoader::given);
        let publisher: Arc<dyn EventPublisher> = adapters::aws_event_publisher(config, &sdk)
            .await?
            .unwrap_or_else(|| Arc::new(LogPublisher));
        let scheduler: Arc<dyn DeadlineScheduler> =
            match adapters::aws_scheduler(config, &sdk).await? {
                Some(aws) => aws,
                None if options.background_work => {
                    Arc::new(TimerScheduler::new(pool.clone(), publisher.clone()))
                }
                None => Arc::new(NoScheduler),
            };
        let inbox = InboxQueue::new(pool.clone());
        let sqs = adapters::aws_payment_queue(config, &sdk).await?;
        let queue: Arc<dyn PaymentQueue> = sqs.clone().unwrap_or_else(|| Arc::new(inbox.clone()));
        let admin_token = config.require_admin_token()?;
        let buyer_auth = config.buyers.auth;
        let admission_tokens = config.require_admission_tokens()?;
        let buyer_tokens = match buyer_auth {
            BuyerAuth::Jwt => Some(BuyerTokens::new(&config.buyers)?),
            BuyerAuth::None => None,
        };
        let handlers = Arc::new(Handlers {
            get_product: get_product::Deps { pool: pool.clone() },
            create_product: create_product::Deps {
                pool: pool.clone(),
                admin_token: admin_token.clone(),
            },
            update_product: update_product::Deps {
                pool: pool.clone(),
                admin_token,
            },
            release_hold: release_hold::Deps {
                pool: pool.clone(),
                publisher: publisher.clone(),
                buyer_auth,
            },
            create_hold: create_hold::Deps {
                pool: pool.clone(),
                scheduler: scheduler.clone(),
                publisher: publisher.clone(),
                hold_ttl: config.holds.ttl,
                max_hold_qty: config.holds.max_qty,
                buyer_auth,
                admission_tokens: Some(admission_tokens.clone()),
            },
            get_hold: get_hold::Deps {
                pool: pool.clone(),
                buyer_auth,
            },
            create_order: create_order::Deps {
                pool: pool.clone(),
                scheduler,
                publisher: publisher.clone(),
                payment_window: config.payment_window(),
                buyer_auth,
            },
            get_order: get_order::Deps {
                pool: pool.clone(),
                buyer_auth,
            },
            payment_webhook: payment_webhook::Deps {
                secrets: config.require_webhook_secrets()?,
                tolerance: config.webhook.tolerance,
                queue,
            },
            join_queue: join_queue::Deps {
                pool: pool.clone(),
                buyer_auth,
                admission_tokens: admission_tokens.clone(),
            },
            get_queue_entry: get_queue_entry::Deps {
                pool: pool.clone(),
                buyer_auth,
                admission_tokens,
            },
            get_queue_summary: get_queue_summary::Deps { pool: pool.clone() },
            buyer_tokens,
        });

        let listener = TcpListener::bind(&config.local.listen_addr)
            .await
            .map_err(|err| {
                Error::Config(format!(
                    "cannot listen on {}: {err}",
                    config.local.listen_addr
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|err| Error::Config(format!("listener has no address: {err}")))?;
        let app = axum::Router::new().fallback(dispatch).with_state(handlers);
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "local server stopped");
            }
        })];
        if options.background_work {
            let policy = config.payment_retry_policy();
            match (&config.aws.webhook_queue_url, sqs) {
                (Some(queue_url), Some(_)) => {
                    let client = aws_sdk_sqs::Client::new(sdk.get().await);
                    let processor = payment_processor::Deps {
                        pool: pool.clone(),
                        publisher: publisher.clone(),
                        max_attempts: config.webhook.max_attempts,
                    };
                    tasks.push(tokio::spawn(crate::sqs_poller::poll_forever(
                        client,
                        queue_url.clone(),
                        processor,
                    )));
                }
                _ => {
                    for _ in 0..INBOX_WORKERS {
                        let worker = drain_inbox_forever(
                            pool.clone(),
                            inbox.clone(),
                            policy,
                            publisher.clone(),
                        );
                        tasks.push(tokio::spawn(worker));
                    }
                }
            }
            let sweeper = sweeper::Deps {
                pool: pool.clone(),
                publisher,
                payment_retry: policy,
                republish_grace: shared::service::sweep::REPUBLISH_GRACE,
            };
            tasks.push(tokio::spawn(sweep_forever(
                sweeper,
                config.local.sweep_interval,
            )));
        }
        tracing::info!(%addr, database = %redacted(&config.database.url), "flash-sale local server listening on http://{addr}");
        Ok(Self { addr, tasks })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every request runs in a span carrying its request id (the client's `X-Request-Id` when it
/// sent a sane one, a new UUID otherwise), so each log line of the request names it, as the
/// Lambda runtime's span names `requestId`; the response returns the id.
async fn dispatch(
    State(handlers): State<Arc<Handlers>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let started = std::time::Instant::now();
    let mut response = route(handlers, request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request done"
        );
    });
    if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

const REQUEST_ID: &str = "x-request-id";

/// Turns the HTTP request into the API Gateway request the Lambda would receive (path
/// parameters included) and hands it to that route's `handle`.
async fn route(
    handlers: Arc<Handlers>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let response = match routes::find(&parts.method, parts.uri.path()) {
        // Read one byte past the limit at most: enough for the handler to refuse it with 413.
        Match::Found { route, params } => {
            match axum::body::to_bytes(body, http::MAX_BODY_BYTES + 1).await {
                Err(_) => http::error(&Error::PayloadTooLarge {
                    limit: http::MAX_BODY_BYTES,
                }),
                Ok(bytes) => {
                    let request = Request::from_parts(parts, Body::from(bytes.to_vec()))
                        .with_path_parameters(
                            params
                                .into_iter()
                                .collect::<std::collections::HashMap<_, _>>(),
                        );
                    call(&handlers, route, request).await
                }
            }
        }
        Match::NotFound | Match::MethodNotAllowed { .. } => {
            unmatched_route::answer(&parts.method, parts.uri.path())
        }
    };
    into_axum(response)
}

async fn call(handlers: &Handlers, route: Route, request: Request) -> Response<Body> {
    // The buyer routes are behind the authorizer: a request without a valid token never reaches
    // their handler, as on AWS.
    let request = match (&handlers.buyer_tokens, route.is_buyer_route()) {
        (Some(tokens), true) => match tokens.authorize(request) {
            Ok(request) => request,
            Err(err) => return http::error(&err),
        },
        _ => request,
    };
    let response = match route {
        Route::GetProduct => get_product::handle(&handlers.get_product, request).await,
        Route::CreateProduct => create_product::handle(&handlers.create_product, request).await,
        Route::CreateHold => create_hold::handle(&handlers.create_hold, request).await,
        Route::GetHold => get_hold::handle(&handlers.get_hold, request).await,
        Route::ReleaseHold => release_hold::handle(&handlers.release_hold, request).await,
        Route::UpdateProduct => update_product::handle(&handlers.update_product, request).await,
        Route::CreateOrder => create_order::handle(&handlers.create_order, request).await,
        Route::GetOrder => get_order::handle(&handlers.get_order, request).await,
        Route::PaymentWebhook => payment_webhook::handle(&handlers.payment_webhook, request).await,
        Route::JoinQueue => join_queue::handle(&handlers.join_queue, request).await,
        Route::GetQueueEntry => get_queue_entry::handle(&handlers.get_queue_entry, request).await,
        Route::GetQueueSummary => {
            get_queue_summary::handle(&handlers.get_queue_summary, request).await
        }
    };
    // Handlers answer every outcome themselves; an Err is a broken handler, as a Lambda would
    // report it.
    response.unwrap_or_else(|err| {
        tracing::error!(error = %err, "handler failed");
        http::error(&Error::Internal(err.to_string()))
    })
}

fn into_axum(response: Response<Body>) -> axum::response::Response {
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Empty => AxumBody::empty(),
        Body::Text(text) => AxumBody::from(text),
        Body::Binary(bytes) => AxumBody::from(bytes),
        _ => AxumBody::empty(),
    };
    axum::response::Response::from_parts(parts, body)
}

async fn drain_inbox_forever(
    pool: Pool,
    queue: InboxQueue,
    policy: shared::domain::retry::RetryPolicy,
    publisher: Arc<dyn EventPublisher>,
) {
    loop {
        if let Err(err) =
            shared::service::payments::drain_inbox(&pool, policy, publisher.as_ref()).await
        {
            tracing::warn!(error = %err, "payment queue drain failed; retrying");
        }
        tokio::select! {
            _ = queue.enqueued() => {}
            _ = tokio::time::sleep(INBOX_POLL) => {}
        }
    }
}

/// The sweeper's work on a timer, as its schedule invokes the Lambda. Not through
/// `sweeper::handle`, which logs every run (once a minute in AWS): here a run every few seconds
/// is logged only when it did something, so an idle server prints nothing.
async fn sweep_forever(deps: sweeper::Deps, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let swept = shared::service::sweep::sweep(
            &deps.pool,
            deps.publisher.as_ref(),
            deps.payment_retry,
            deps.republish_grace,
        )
        .await;
        match swept {
            Ok(report) if did_something(&report) => tracing::info!(?report, "sweep done"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "sweep failed; will run again"),
        }
    }
}

fn did_something(report: &SweepReport) -> bool {
    // Taken apart without `..`: a field added to the report does not compile here until counted.
    let SweepReport {
        settled: Settlement {
            holds_expired,
            orders_cancelled,
        },
        payments:
            DrainReport {
                processed,
                retried,
                dead_lettered,
            },
        events_republished,
        stock_drift,
        queues_drawn,
    } = report;
    holds_expired + orders_cancelled + processed + retried + dead_lettered > 0
        || *events_republished > 0
        || *stock_drift > 0
        || *queues_drawn > 0
}

/// The database URL without its password, for the start-up log line.
fn redacted(url: &secrecy::SecretString) -> String {
    let url = url.expose_secret();
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use shared::service::sweep::SweepReport;
    use shared::store::settle::Settlement;

    #[test]
    fn a_sweep_is_worth_a_line_only_when_it_did_something() {
        assert!(!super::did_something(&SweepReport::default()));
        let drifted = SweepReport {
            stock_drift: 1,
            ..SweepReport::default()
        };
        assert!(super::did_something(&drifted));
        let settled = SweepReport {
            settled: Settlement {
                holds_expired: 0,
                orders_cancelled: 2,
            },
            ..SweepReport::default()
        };
        assert!(super::did_something(&settled));
    }

    #[test]
    fn the_logged_database_url_has_no_credentials() {
        let url = secrecy::SecretString::from("mysql://app:hunter2@db:3306/flash".to_owned());
        assert_eq!(super::redacted(&url), "mysql://***@db:3306/flash");
    }
}

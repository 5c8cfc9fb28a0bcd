//! The crowd's clients: each a stream of shoppers, a buyer of its own each, reading the product
//! and trying to hold one unit until the client sees it sold out; and what they saw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_sale_local::known_secrets::buyer_token;
use shared::domain::ids::ProductId;

use crate::scenario::{SOLD_OUT, hold_over_http};

/// A crowd that has not sold the product out by then has failed (a service refusing or failing
/// every hold would otherwise keep its shoppers coming for ever).
const DEADLINE: Duration = Duration::from_secs(300);

/// The answers of one kind: their latencies, and the span from the first one's start to the
/// last one's end, over which its rate is taken.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    latencies: Vec<Duration>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Timing {
    pub fn record(&mut self, started: Instant) {
        let now = Instant::now();
        self.latencies.push(now - started);
        self.first = Some(self.first.map_or(started, |first| first.min(started)));
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    pub fn add(&mut self, other: Timing) {
        self.latencies.extend(other.latencies);
        self.first = match (self.first, other.first) {
            (Some(one), Some(another)) => Some(one.min(another)),
            (one, another) => one.or(another),
        };
        self.last = self.last.max(other.last);
    }

    pub fn count(&self) -> u64 {
        self.latencies.len() as u64
    }

    pub fn per_second(&self) -> f64 {
        match (self.first, self.last) {
            (Some(first), Some(last)) if last > first => {
                self.count() as f64 / (last - first).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// p50 and p99.
    pub fn percentiles(&self) -> (Duration, Duration) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |p: f64| {
            let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
            sorted.get(index).copied().unwrap_or_default()
        };
        (at(0.50), at(0.99))
    }
}

/// What a pass's clients saw.
#[derive(Debug, Clone, Default)]
pub struct Shopping {
    pub reads: Timing,
    pub holds: Timing,
    pub refusals: Timing,
    /// Every other answer, as `read <status>` or `hold <status>[ <code>]`: a 5xx or a transport
    /// error sends the client's next shopper in; anything else stops the client.
    pub others: BTreeMap<String, u64>,
    pub timed_out: bool,
}

impl Shopping {
    fn note(&mut self, outcome: String) {
        *self.others.entry(outcome).or_default() += 1;
    }

    fn add(&mut self, other: Shopping) {
        self.reads.add(other.reads);
        self.holds.add(other.holds);
        self.refusals.add(other.refusals);
        for (outcome, n) in other.others {
            *self.others.entry(outcome).or_default() += n;
        }
        self.timed_out |= other.timed_out;
    }

    /// 5xx and transport errors.
    pub fn server_errors(&self) -> u64 {
        self.others
            .iter()
            .filter(|(outcome, _)| is_failure(outcome.split_once(' ').map_or("", |(_, s)| s)))
            .map(|(_, n)| n)
            .sum()
    }
}

pub fn is_failure(outcome: &str) -> bool {
    outcome.starts_with('5') || outcome == "error"
}

/// One pass of the crowd, from its first shopper to the last client stopping.
#[derive(Debug, Clone)]
pub struct Rush {
    pub started: Instant,
    pub ended: Instant,
    pub shopping: Shopping,
    /// 5xx and transport errors of the warm-up.
    pub warmup_failures: u64,
}

impl Rush {
    /// From the first shopper to the end of the last hold: the S-th 201.
    pub fn sold_out_after(&self) -> Option<Duration> {
        self.shopping.holds.last.map(|last| last - self.started)
    }

    pub fn answers(&self) -> u64 {
        let Shopping {
            reads,
            holds,
            refusals,
            others,
            ..
        } = &self.shopping;
        reads.count() + holds.count() + refusals.count() + others.values().sum::<u64>()
    }

    /// Why the pass failed: not exactly `stock` holds, a 5xx, an unexpected answer, the deadline.
    pub fn problems(&self, stock: u32) -> Vec<String> {
        let mut problems = Vec::new();
        if self.shopping.holds.count() != u64::from(stock) {
            problems.push(format!("{} holds of {stock}", self.shopping.holds.count()));
        }
        if !self.shopping.others.is_empty() || self.warmup_failures > 0 {
            problems.push(format!(
                "other answers {:?}, {} failures in the warm-up",
                self.shopping.others, self.warmup_failures
            ));
        }
        if self.shopping.timed_out {
            problems.push(format!("not sold out after {DEADLINE:?}"));
        }
        problems
    }
}

/// One pass's clients and what they share: the HTTP connections, the product, the buyers' names.
#[derive(Clone)]
pub struct Shop {
    http: reqwest::Client,
    base: Arc<str>,
    product: ProductId,
    clients: usize,
    /// Every shopper's buyer is `<buyers>-<client>-<shopper>`.
    buyers: &'static str,
}

impl Shop {
    /// `base` is the local server's address; `clients` share one HTTP client, a connection each.
    pub fn new(
        base: String,
        product: ProductId,
        clients: usize,
        buyers: &'static str,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .map_err(|err| err.to_string())?;
        Ok(Self {
            http,
            base: base.into(),
            product,
            clients,
            buyers,
        })
    }

    /// Every client reads the product until `warmup` has passed; the 5xx and transport errors.
    pub async fn warm(&self, warmup: Duration) -> Result<u64, String> {
        let until = Instant::now() + warmup;
        let tasks: Vec<_> = (0..self.clients)
            .map(|_| {
                let shop = self.clone();
                tokio::spawn(async move {
                    let mut failures = 0;
                    while Instant::now() < until {
                        if let Err(outcome) = shop.read().await {
                            failures += u64::from(is_failure(&outcome));
                        }
                    }
                    failures
                })
            })
            .collect();
        let mut failures = 0;
        for task in tasks {
            failures += task.await.map_err(|err| err.to_string())?;
        }
        Ok(failures)
    }

    /// The crowd, until every client has seen the product sold out.
    pub async fn rush(&self, warmup_failures: u64) -> Result<Rush, String> {
        let started = Instant::now();
        let deadline = started + DEADLINE;
        let tasks: Vec<_> = (0..self.clients)
            .map(|client| tokio::spawn(self.clone().client(client, deadline)))
            .collect();
        let mut shopping = Shopping::default();
        for task in tasks {
            shopping.add(task.await.map_err(|err| err.to_string())?);
        }
        Ok(Rush {
            started,
            ended: Instant::now(),
            shopping,
            warmup_failures,
        })
    }

    async fn client(self, client: usize, deadline: Instant) -> Shopping {
        let mut seen = Shopping::default();
        for shopper in 0_u64.. {
            if Instant::now() >= deadline {
                seen.timed_out = true;
                break;
            }
            let started = Instant::now();
            match self.read().await {
                Ok(available) => {
                    seen.reads.record(started);
                    if available <= 0 {
                        break;
                    }
                }
                Err(outcome) if is_failure(&outcome) => {
                    seen.note(format!("read {outcome}"));
                    continue;
                }
                Err(outcome) => {
                    seen.note(format!("read {outcome}"));
                    break;
                }
            }
            let token = buyer_token(&format!("{}-{client}-{shopper}", self.buyers));
            let started = Instant::now();
            match hold_over_http(&self.http, &self.base, &token, self.product).await {
                outcome if outcome == "201" => seen.holds.record(started),
                outcome if outcome == SOLD_OUT => {
                    seen.refusals.record(started);
                    break;
                }
                outcome if is_failure(&outcome) => seen.note(format!("hold {outcome}")),
                outcome => {
                    seen.note(format!("hold {outcome}"));
                    break;
                }
            }
        }
        seen
    }

    /// The product's `available_stock`, as a browser without a cache reads it (no
    /// `If-None-Match`); else the outcome.
    async fn read(&self) -> Result<i64, String> {
        let url = format!("{}/api/products/{}", self.base, self.product);
        let response = self.http.get(url).send().await.map_err(|_| "error")?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(status.to_string());
        }
        let body: serde_json::Value = response.json().await.map_err(|_| "error")?;
        body["available_stock"]
            .as_i64()
            .ok_or_else(|| "200 without available_stock".to_owned())
    }
}

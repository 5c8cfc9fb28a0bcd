//! The waiting room's buyers over HTTP, and the requests they send: their joins, reads of their
//! entries, holds; the warm-up, the joins and the wave of entry reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flash_sale_local::known_secrets::{ADMIN_TOKEN, buyer_token};
use reqwest::RequestBuilder;
use serde_json::{Value, json};
use shared::domain::ids::ProductId;
use sqlx::types::chrono::{DateTime, NaiveDateTime, Utc};

use crate::shoppers::Timing;

/// The expected answers of a phase, timed, and every other answer by `<what> <status>[ <code>]`.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub ok: Timing,
    pub others: BTreeMap<String, u64>,
}

impl Answers {
    pub(super) fn note(&mut self, outcome: String) {
        note(&mut self.others, outcome);
    }

    fn add(&mut self, other: Answers) {
        self.ok.add(other.ok);
        for (outcome, n) in other.others {
            *self.others.entry(outcome).or_default() += n;
        }
    }

    pub fn count(&self) -> u64 {
        self.ok.count() + self.others.values().sum::<u64>()
    }
}

/// One pass's buyers and what they share: the HTTP connections, the product, the tokens.
#[derive(Clone)]
pub struct Buyers {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    product: ProductId,
    clients: usize,
    names: Vec<String>,
    /// Each buyer's bearer token.
    tokens: Vec<String>,
}

impl Buyers {
    /// `count` buyers named `<prefix>-<i>`, driven by `clients` clients against the local server
    /// at `base`.
    pub fn new(
        base: String,
        product: ProductId,
        count: usize,
        clients: usize,
        prefix: &str,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .map_err(|err| err.to_string())?;
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let tokens = names.iter().map(|name| buyer_token(name)).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                product,
                clients,
                names,
                tokens,
            }),
        })
    }

    pub fn clients(&self) -> usize {
        self.inner.clients
    }

    pub fn count(&self) -> usize {
        self.inner.names.len()
    }

    pub fn name(&self, buyer: usize) -> &str {
        &self.inner.names[buyer]
    }

    pub fn product(&self) -> ProductId {
        self.inner.product
    }

    fn queue_url(&self) -> String {
        format!(
            "{}/api/products/{}/queue",
            self.inner.base, self.inner.product
        )
    }

    /// Every client reads entries of buyers not in the queue yet (404 `not_in_queue`, an indexed
    /// read each) until `warmup` has passed: the pools fill. The 5xx and transport errors.
    pub async fn warm(&self, warmup: Duration) -> Result<u64, String> {
        let until = Instant::now() + warmup;
        let answers = self
            .each_client(move |buyers, client| async move {
                let mut answers = Answers::default();
                let mut buyer = client;
                while Instant::now() < until {
                    let started = Instant::now();
                    match buyers.entry(buyer % buyers.count()).await {
                        Err(outcome) if outcome == "404 not_in_queue" => answers.ok.record(started),
                        Err(outcome) => answers.note(format!("warm-up read {outcome}")),
                        Ok(_) => answers.note("warm-up read 200".into()),
                    }
                    buyer += buyers.inner.clients;
                }
                answers
            })
            .await?;
        Ok(answers
            .others
            .iter()
            .filter(|(o, _)| failed(o))
            .map(|(_, n)| n)
            .sum())
    }

    /// Every buyer joins, once, before the start: a 201 with no position yet.
    pub async fn join_all(&self) -> Result<Answers, String> {
        let next = Arc::new(AtomicUsize::new(0));
        self.each_client(move |buyers, _| {
            let next = next.clone();
            async move {
                let mut answers = Answers::default();
                loop {
                    let buyer = next.fetch_add(1, Ordering::Relaxed);
                    if buyer >= buyers.count() {
                        break answers;
                    }
                    let started = Instant::now();
                    let joined = buyers
                        .send(buyers.as_buyer(buyers.inner.http.post(buyers.queue_url()), buyer))
                        .await;
                    match joined {
                        Ok((201, entry)) if entry["position"].is_null() => {
                            answers.ok.record(started)
                        }
                        Ok((201, _)) => answers.note("join 201 with a position".into()),
                        Ok((status, body)) => {
                            answers.note(format!("join {}", outcome(status, &body)))
                        }
                        Err(outcome) => answers.note(format!("join {outcome}")),
                    }
                }
            }
        })
        .await
    }

    /// Sets the sale's start (and so the waiting room's opening) `lead` from now, as the seller
    /// would (`PATCH`, through the service, so that it forgets what it knew of the product).
    pub async fn open_at(&self, lead: Duration) -> Result<NaiveDateTime, String> {
        // Whole milliseconds, as the database keeps it.
        let ms = Utc::now().timestamp_millis() + lead.as_millis() as i64;
        let starts = DateTime::from_timestamp_millis(ms)
            .ok_or("a start out of range")?
            .naive_utc();
        let at = format!("{}Z", starts.format("%Y-%m-%dT%H:%M:%S%.3f"));
        let request = self
            .inner
            .http
            .patch(format!(
                "{}/api/admin/products/{}",
                self.inner.base, self.inner.product
            ))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"sale_starts_at": at}));
        match self.send(request).await {
            Ok((200, product)) if product["sale_starts_at"].as_str() == Some(at.as_str()) => {
                Ok(starts)
            }
            Ok((status, body)) => Err(format!("setting the start: {status} {body}")),
            Err(outcome) => Err(format!("setting the start: {outcome}")),
        }
    }

    /// Every client reads its buyers' entries in turn until `wave` has passed: 200s expected.
    pub async fn read_wave(&self, wave: Duration) -> Result<Answers, String> {
        let until = Instant::now() + wave;
        self.each_client(move |buyers, client| async move {
            let mut answers = Answers::default();
            let mut buyer = client;
            while Instant::now() < until {
                let started = Instant::now();
                match buyers.entry(buyer % buyers.count()).await {
                    Ok(_) => answers.ok.record(started),
                    Err(outcome) => answers.note(format!("read {outcome}")),
                }
                buyer += buyers.inner.clients;
            }
            answers
        })
        .await
    }

    /// Runs `work(buyers, client)` for every client at once and adds up what they saw.
    pub(super) async fn each_client<F, Fut>(&self, work: F) -> Result<Answers, String>
    where
        F: Fn(Buyers, usize) -> Fut,
        Fut: Future<Output = Answers> + Send + 'static,
    {
        let tasks: Vec<_> = (0..self.inner.clients)
            .map(|client| tokio::spawn(work(self.clone(), client)))
            .collect();
        let mut answers = Answers::default();
        for task in tasks {
            answers.add(task.await.map_err(|err| err.to_string())?);
        }
        Ok(answers)
    }

    fn as_buyer(&self, request: RequestBuilder, buyer: usize) -> RequestBuilder {
        request.bearer_auth(&self.inner.tokens[buyer])
    }

    /// The buyer's entry, or the outcome (`404 not_in_queue`, `error`, …).
    pub(super) async fn entry(&self, buyer: usize) -> Result<Entry, String> {
        let request = self.as_buyer(self.inner.http.get(self.queue_url()), buyer);
        match self.send(request).await? {
            (200, body) => Entry::from_json(&body).ok_or_else(|| format!("200 {body}")),
            (status, body) => Err(outcome(status, &body)),
        }
    }

    /// A hold of one unit by the buyer, with its admission token if any: the outcome.
    pub(super) async fn hold(&self, buyer: usize, token: Option<&str>) -> String {
        let mut request = self
            .as_buyer(
                self.inner
                    .http
                    .post(format!("{}/api/holds", self.inner.base)),
                buyer,
            )
            .json(&json!({"product_id": self.inner.product.0, "qty": 1}));
        if let Some(token) = token {
            request = request.header("admission-token", token);
        }
        match self.send(request).await {
            Ok((status, body)) => outcome(status, &body),
            Err(outcome) => outcome,
        }
    }

    /// The status and the JSON body (null when it has none), or `error` for a transport error.
    async fn send(&self, request: RequestBuilder) -> Result<(u16, Value), String> {
        let response = request.send().await.map_err(|_| "error".to_owned())?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|_| "error".to_owned())?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// What the bench reads of an entry.
pub(super) struct Entry {
    pub status: String,
    pub position: Option<u64>,
    pub admitted_at: Option<NaiveDateTime>,
    pub admission_token: Option<String>,
}

impl Entry {
    fn from_json(body: &Value) -> Option<Self> {
        let instant = |field: &str| {
            body[field]
                .as_str()
                .and_then(|at| shared::json::instant(at).ok())
        };
        Some(Self {
            status: body["status"].as_str()?.to_owned(),
            position: body["position"].as_u64(),
            admitted_at: instant("admitted_at"),
            admission_token: body["admission_token"].as_str().map(str::to_owned),
        })
    }
}

/// `<status>` for a success, `<status> <code>` for an error with a code.
fn outcome(status: u16, body: &Value) -> String {
    match body["error"]["code"].as_str() {
        Some(code) if status >= 400 => format!("{status} {code}"),
        _ => status.to_string(),
    }
}

pub(super) fn note(others: &mut BTreeMap<String, u64>, outcome: String) {
    *others.entry(outcome).or_default() += 1;
}

/// A 5xx or a transport error, whatever was asked: the first status (or `error`) of
/// `<what> <status>[ <code>]`.
pub fn failed(outcome: &str) -> bool {
    outcome
        .split(' ')
        .find(|word| {
            *word == "error" || (word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()))
        })
        .is_some_and(|word| word == "error" || word.starts_with('5'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_a_5xx_or_a_transport_error_whatever_was_asked() {
        for outcome in ["join 500", "read error", "hold with another buyer's 503 x"] {
            assert!(failed(outcome), "{outcome}");
        }
        for outcome in [
            "hold 409 insufficient_stock",
            "warm-up read 404 not_in_queue",
            "read sold_out",
            "hold with no token 201",
        ] {
            assert!(!failed(outcome), "{outcome}");
        }
    }

    #[test]
    fn an_error_is_told_by_its_status_and_code_and_a_success_by_its_status() {
        let refused = json!({"error": {"code": "admission_required", "message": "…"}});
        assert_eq!(outcome(403, &refused), "403 admission_required");
        assert_eq!(outcome(201, &json!({"hold_id": "h"})), "201");
        assert_eq!(outcome(502, &Value::Null), "502");
    }

    #[test]
    fn an_entry_is_read_from_its_body() {
        let body = json!({
            "status": "admitted", "position": 7, "admitted_at": "2026-12-06T06:00:01.000Z",
            "admission_token": "v1.1.ab", "estimated_admission_at": "2026-12-06T06:00:01.000Z",
        });
        let entry = Entry::from_json(&body).expect("an entry");
        assert_eq!(
            (
                entry.status.as_str(),
                entry.position,
                entry.admission_token.as_deref()
            ),
            ("admitted", Some(7), Some("v1.1.ab"))
        );
        assert_eq!(
            entry
                .admitted_at
                .map(|at| at.format("%H:%M:%S%.3f").to_string()),
            Some("06:00:01.000".to_owned())
        );
        let waiting = Entry::from_json(&json!({"status": "waiting", "position": null}));
        assert!(
            waiting.is_some_and(|entry| entry.position.is_none() && entry.admitted_at.is_none())
        );
        assert!(Entry::from_json(&json!({"position": 1})).is_none());
    }
}

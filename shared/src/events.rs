//! Domain events and the transactional outbox. An event is written in the same transaction as
//! the change it describes, published after commit, and published again by the sweeper while it
//! is unpublished: at least once, never lost, always under the same id.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::Value;
use sqlx::{MySql, MySqlPool, QueryBuilder, Row, Transaction};

use crate::error::Error;
use crate::ports::EventPublisher;

/// PutEvents takes at most ten entries per call.
pub const PUBLISH_BATCH: usize = 10;
/// The sweeper reads unpublished events this many at a time…
const REPUBLISH_PAGE: u32 = 500;
/// …and starts no page after this long: its Lambda has 60 s (template.yaml) for everything a
/// sweep does and runs every minute, so what is left is the next run's.
pub const REPUBLISH_BUDGET: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    HoldExpired,
    OrderCreated,
    OrderPaid,
    OrderCancelled,
    /// A `paid` event for an order that is cancelled (its payment failed, or the event was
    /// received after the deadline): the money must be refunded.
    LatePayment,
    /// A second `paid` event for an order paid already: the customer was charged twice.
    DoublePayment,
    /// An event whose amount is not its order's: the order is unchanged; a person decides.
    PaymentAmountMismatch,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HoldExpired => "HoldExpired",
            Self::OrderCreated => "OrderCreated",
            Self::OrderPaid => "OrderPaid",
            Self::OrderCancelled => "OrderCancelled",
            Self::LatePayment => "LatePayment",
            Self::DoublePayment => "DoublePayment",
            Self::PaymentAmountMismatch => "PaymentAmountMismatch",
        }
    }
}

/// One event as published: `detail` carries `event_id` too, so consumers can deduplicate.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    pub id: String,
    pub event_type: String,
    pub detail: Value,
}

/// The result of a transaction together with the events it wrote to the outbox.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub events: Vec<DomainEvent>,
}

impl<T> Committed<T> {
    pub(crate) fn new(value: T, events: Vec<DomainEvent>) -> Self {
        Self { value, events }
    }

    pub(crate) fn quiet(value: T) -> Self {
        Self {
            value,
            events: Vec::new(),
        }
    }

    /// Publishes the events (best effort: what fails stays in the outbox for the sweeper) and
    /// hands back the value.
    pub async fn publish(self, pool: &MySqlPool, publisher: &dyn EventPublisher) -> T {
        publish(pool, publisher, &self.events).await;
        self.value
    }
}

/// Writes an event in the caller's transaction.
pub(crate) async fn record(
    tx: &mut Transaction<'_, MySql>,
    event_type: EventType,
    detail: Value,
) -> Result<DomainEvent, Error> {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let mut detail = detail;
    if let Value::Object(fields) = &mut detail {
        fields.insert("event_id".into(), Value::String(id.clone()));
    }
    sqlx::query(
        "INSERT INTO outbox_events (id, event_type, detail, created_at) VALUES (?, ?, ?, UTC_TIMESTAMP(3))",
    )
    .bind(&id)
    .bind(event_type.as_str())
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(DomainEvent {
        id,
        event_type: event_type.as_str().to_owned(),
        detail,
    })
}

/// Publishes events and marks the ones the bus accepted. Never fails its caller: an event not
/// published is logged and stays in the outbox. Returns how many were published.
pub async fn publish(
    pool: &MySqlPool,
    publisher: &dyn EventPublisher,
    events: &[DomainEvent],
) -> usize {
    let mut published = 0;
    for batch in events.chunks(PUBLISH_BATCH) {
        let accepted = match publisher.publish(batch).await {
            Ok(accepted) => accepted,
            Err(err) => {
                let ids: Vec<&str> = batch.iter().map(|event| event.id.as_str()).collect();
                tracing::warn!(error = %err, event_ids = ?ids, "could not publish events; the sweeper will retry");
                continue;
            }
        };
        if accepted.is_empty() {
            continue;
        }
        let mut mark = QueryBuilder::<MySql>::new(
            "UPDATE outbox_events SET published_at = UTC_TIMESTAMP(3) WHERE published_at IS NULL AND id IN (",
        );
        let mut ids = mark.separated(", ");
        for id in &accepted {
            ids.push_bind(id);
        }
        mark.push(")");
        match mark.build().execute(pool).await {
            Ok(_) => published += accepted.len(),
            Err(err) => {
                tracing::warn!(error = %err, "events published but not marked; they will be published again")
            }
        }
    }
    published
}

/// Publishes every event still unpublished `grace` after it was written (younger ones are most
/// likely being published by the operation that wrote them right now), page by page in
/// (`created_at`, `id`) order until none is left or [`REPUBLISH_BUDGET`] is spent. Each page starts
/// after the last one, so events the bus refuses are not read again in this run; a page of which
/// the bus takes none ends the run (the bus is down, or there is none), so an outbox the bus
/// cannot take costs one page a run, not the whole outbox.
pub async fn publish_pending(
    pool: &MySqlPool,
    publisher: &dyn EventPublisher,
    grace: Duration,
) -> Result<usize, Error> {
    let started = tokio::time::Instant::now();
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut published = 0;
    loop {
        let (events, last) = pending_page(pool, grace, after.as_ref()).await?;
        let Some(last) = last else {
            break;
        };
        let accepted = publish(pool, publisher, &events).await;
        published += accepted;
        if events.len() < REPUBLISH_PAGE as usize || accepted == 0 {
            break;
        }
        if started.elapsed() >= REPUBLISH_BUDGET {
            tracing::warn!(
                published,
                "outbox not drained within the sweep's budget; the next sweep goes on"
            );
            break;
        }
        after = Some(last);
    }
    Ok(published)
}

/// One page of unpublished events past `after`, and the (`created_at`, `id`) of its last. The
/// outbox index (`published_at`, `created_at`, and the primary key `id` InnoDB appends) serves
/// both the filter and the order.
async fn pending_page(
    pool: &MySqlPool,
    grace: Duration,
    after: Option<&(NaiveDateTime, String)>,
) -> Result<(Vec<DomainEvent>, Option<(NaiveDateTime, String)>), Error> {
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT id, event_type, detail, created_at FROM outbox_events \
         WHERE published_at IS NULL AND created_at <= UTC_TIMESTAMP(3) - INTERVAL ",
    );
    query
        .push_bind(grace.as_micros() as u64)
        .push(" MICROSECOND");
    if let Some((created_at, id)) = after {
        query
            .push(" AND (created_at > ")
            .push_bind(*created_at)
            .push(" OR (created_at = ")
            .push_bind(*created_at)
            .push(" AND id > ")
            .push_bind(id)
            .push("))");
    }
    query
        .push(" ORDER BY created_at, id LIMIT ")
        .push_bind(REPUBLISH_PAGE);
    let rows = query.build().fetch_all(pool).await?;
    let mut events = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in rows {
        let detail: String = row.try_get("detail")?;
        let id: String = row.try_get("id")?;
        last = Some((row.try_get("created_at")?, id.clone()));
        events.push(DomainEvent {
            id,
            event_type: row.try_get("event_type")?,
            detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        });
    }
    Ok((events, last))
}

//! The transactional outbox: events written in the transaction of their change, marked once
//! the bus has them, and read back page by page while they are not.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::Value;
use sqlx::{MySql, Row, Transaction};

use super::pool::Pool;
use super::sql::{IDS_PER_STATEMENT, Interval, Sql, list};
use crate::domain::events::{DomainEvent, EventType};
use crate::error::Error;

/// The sweeper reads unpublished events this many at a time.
pub const REPUBLISH_PAGE: u32 = 500;

/// Writes an event in the caller's transaction.
pub async fn record(
    tx: &mut Transaction<'_, MySql>,
    event_type: EventType,
    detail: Value,
) -> Result<DomainEvent, Error> {
    // Time-ordered, as holds' and orders' ids are (see `ids::HoldId::generate`).
    let id = uuid::Uuid::now_v7().hyphenated().to_string();
    let mut detail = detail;
    if let Value::Object(fields) = &mut detail {
        fields.insert("event_id".into(), Value::String(id.clone()));
    }
    Sql::new(
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

/// Marks events the bus accepted as published (those not yet marked: a repeat is harmless).
pub async fn mark_published(pool: &Pool, ids: &[String]) -> Result<(), Error> {
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        Sql::new(format!(
            "UPDATE outbox_events SET published_at = UTC_TIMESTAMP(3) WHERE published_at IS NULL AND id IN ({})",
            list(chunk)
        ))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// One page of unpublished events past `after`, and the (`created_at`, `id`) of its last. The
/// outbox index (`published_at`, `created_at`, and the primary key `id` InnoDB appends) serves
/// both the filter and the order.
pub async fn pending_page(
    pool: &Pool,
    grace: Duration,
    after: Option<&(NaiveDateTime, String)>,
) -> Result<(Vec<DomainEvent>, Option<(NaiveDateTime, String)>), Error> {
    let after_clause = if after.is_some() {
        " AND (created_at > ? OR (created_at = ? AND id > ?))"
    } else {
        ""
    };
    let mut query = Sql::new(format!(
        "SELECT id, event_type, detail, created_at FROM outbox_events \
         WHERE published_at IS NULL AND created_at <= UTC_TIMESTAMP(3) - ?\
         {after_clause} ORDER BY created_at, id LIMIT ?"
    ))
    .bind(Interval(grace));
    if let Some((created_at, id)) = after {
        query = query.bind(*created_at).bind(*created_at).bind(id);
    }
    let rows = query.bind(REPUBLISH_PAGE).fetch_all(pool).await?;
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

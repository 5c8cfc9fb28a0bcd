//! Publishing the outbox: after an operation commits, its events; in the sweep, every event an
//! operation failed to publish.

use std::time::Duration;

use chrono::NaiveDateTime;

use crate::domain::events::{Committed, DomainEvent};
use crate::error::Error;
use crate::ports::EventPublisher;
use crate::store::outbox::{self, REPUBLISH_PAGE};
use crate::store::pool::Pool;

/// PutEvents takes at most ten entries per call.
pub const PUBLISH_BATCH: usize = 10;
/// The sweep starts no page after this long: its Lambda has 60 s (template.yaml) for everything a
/// sweep does and runs every minute, so what is left is the next run's.
pub const REPUBLISH_BUDGET: Duration = Duration::from_secs(20);

/// Publishes a committed operation's events (best effort: what fails stays in the outbox for the
/// sweeper) and hands back its value.
pub async fn publish_committed<T>(
    pool: &Pool,
    publisher: &dyn EventPublisher,
    committed: Committed<T>,
) -> T {
    publish(pool, publisher, &committed.events).await;
    committed.value
}

/// Publishes events and marks the ones the bus accepted. Never fails its caller: an event not
/// published is logged and stays in the outbox. Returns how many were published.
pub async fn publish(pool: &Pool, publisher: &dyn EventPublisher, events: &[DomainEvent]) -> usize {
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
        match outbox::mark_published(pool, &accepted).await {
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
    pool: &Pool,
    publisher: &dyn EventPublisher,
    grace: Duration,
) -> Result<usize, Error> {
    let started = tokio::time::Instant::now();
    let mut after: Option<(NaiveDateTime, String)> = None;
    let mut published = 0;
    loop {
        let (events, last) = outbox::pending_page(pool, grace, after.as_ref()).await?;
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

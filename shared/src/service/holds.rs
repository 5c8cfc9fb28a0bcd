//! Holds: reserving, then scheduling the expiry; settling a hold when its expiry trigger fires.

use std::time::Duration;

use super::outbox::{self, publish_committed};
use super::{Effects, after_commit, schedule, within_request_deadline};
use crate::domain::deadline::Deadline;
use crate::domain::ids::{BuyerId, HoldId};
use crate::domain::model::Hold;
use crate::error::Error;
use crate::metrics;
use crate::ports::EventPublisher;
use crate::store::expiry::{self, ExpiryOutcome};
use crate::store::holds::{self, HoldRequest, Reservation};
use crate::store::pool::Pool;
use crate::store::release;

pub async fn create_hold(
    pool: &Pool,
    effects: Effects<'_>,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Reservation, Error> {
    let committed = match within_request_deadline(holds::reserve(pool, request, ttl)).await {
        Ok(committed) => committed,
        Err(
            err @ Error::InsufficientStock {
                requested,
                available,
            },
        ) => {
            metrics::count(metrics::HOLDS_REFUSED, 1);
            tracing::info!(product_id = %request.product_id, requested, available, "hold refused: not enough stock");
            return Err(err);
        }
        Err(err) => return Err(err),
    };
    let hold = &committed.value.hold;
    if committed.value.replayed {
        tracing::info!(hold_id = %hold.hold_id, "hold replayed for its Idempotency-Key");
    } else {
        metrics::count(metrics::HOLDS_CREATED, 1);
        tracing::info!(hold_id = %hold.hold_id, product_id = %hold.product_id, qty = hold.qty, "hold created");
    }
    after_commit("create_hold", async {
        outbox::publish(pool, effects.publisher, &committed.events).await;
        if !committed.value.replayed {
            schedule(
                effects.scheduler,
                Deadline::HoldExpiry(hold.hold_id.clone()),
                hold.expires_at,
            )
            .await;
        }
    })
    .await;
    Ok(committed.value)
}

/// A hold's expiry trigger: settles the hold if it is due, then publishes what that did.
pub async fn settle_hold_deadline(
    pool: &Pool,
    publisher: &dyn EventPublisher,
    hold_id: &HoldId,
) -> Result<ExpiryOutcome, Error> {
    let committed = expiry::expire_hold(pool, hold_id).await?;
    Ok(publish_committed(pool, publisher, committed).await)
}

/// A buyer gives a hold back: released, its units available at once, its event published.
pub async fn release_hold(
    pool: &Pool,
    publisher: &dyn EventPublisher,
    hold_id: &HoldId,
    buyer: Option<&BuyerId>,
) -> Result<Hold, Error> {
    let committed = within_request_deadline(release::release_hold(pool, hold_id, buyer)).await?;
    if !committed.events.is_empty() {
        tracing::info!(%hold_id, "hold released");
    }
    Ok(publish_committed(pool, publisher, committed).await)
}

//! Operations that have a side effect outside the database: the transaction commits first, then
//! the side effect runs, best effort and safe to repeat. A failed side effect never fails the
//! operation the client asked for; it is logged with its ids.

use std::time::Duration;

use sqlx::MySqlPool;

use crate::error::Error;
use crate::ids::HoldId;
use crate::ports::ExpiryScheduler;
use crate::stock::{self, HoldRequest, Redemption, Reservation};

pub async fn create_hold(
    pool: &MySqlPool,
    scheduler: &dyn ExpiryScheduler,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Reservation, Error> {
    let reservation = stock::reserve(pool, request, ttl).await?;
    if !reservation.replayed {
        let hold = &reservation.hold;
        if let Err(err) = scheduler.schedule_expiry(hold).await {
            tracing::error!(hold_id = %hold.hold_id, error = %err, "could not schedule hold expiry; the sweeper will settle it");
        }
    }
    Ok(reservation)
}

pub async fn create_order(
    pool: &MySqlPool,
    scheduler: &dyn ExpiryScheduler,
    hold_id: &HoldId,
) -> Result<Redemption, Error> {
    let redemption = stock::redeem(pool, hold_id).await?;
    if redemption.created
        && let Err(err) = scheduler.cancel_expiry(hold_id).await
    {
        tracing::warn!(%hold_id, error = %err, "could not cancel the redeemed hold's expiry trigger; it will find nothing to do");
    }
    Ok(redemption)
}

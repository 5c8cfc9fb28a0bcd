//! Orders: redeeming a hold, then scheduling the payment deadline and unscheduling the hold's
//! expiry; cancelling an order when its deadline trigger fires.

use super::outbox::{self, publish_committed};
use super::{Effects, after_commit, schedule, within_request_deadline};
use crate::domain::deadline::Deadline;
use crate::domain::ids::{BuyerId, HoldId, OrderId};
use crate::domain::model::PaymentWindow;
use crate::error::Error;
use crate::metrics;
use crate::ports::EventPublisher;
use crate::store::expiry::{self, ExpiryOutcome};
use crate::store::orders::{self, Redemption};
use crate::store::pool::Pool;

pub async fn create_order(
    pool: &Pool,
    effects: Effects<'_>,
    hold_id: &HoldId,
    buyer: Option<&BuyerId>,
    window: PaymentWindow,
) -> Result<Redemption, Error> {
    let committed = within_request_deadline(orders::redeem(pool, hold_id, buyer, window)).await?;
    let order = &committed.value.order.order;
    if !committed.value.created {
        tracing::info!(order_id = %order.order_id, %hold_id, "order returned again for its redeemed hold");
    } else {
        metrics::count(metrics::ORDERS_CREATED, 1);
        tracing::info!(order_id = %order.order_id, %hold_id, qty = order.qty, "order created");
    }
    after_commit("create_order", async {
        outbox::publish(pool, effects.publisher, &committed.events).await;
        if !committed.value.created {
            return;
        }
        schedule(
            effects.scheduler,
            Deadline::OrderPayment(order.order_id.clone()),
            order.cancel_at,
        )
        .await;
        let hold_expiry = Deadline::HoldExpiry(hold_id.clone());
        if let Err(err) = effects.scheduler.cancel(&hold_expiry).await {
            tracing::warn!(%hold_id, error = %err, "could not delete the redeemed hold's expiry trigger; it will find nothing to do");
        }
    })
    .await;
    Ok(committed.value)
}

/// An order's deadline trigger: cancels the order if it lapsed unpaid, then publishes that.
pub async fn settle_order_deadline(
    pool: &Pool,
    publisher: &dyn EventPublisher,
    order_id: &OrderId,
) -> Result<ExpiryOutcome, Error> {
    let committed = expiry::expire_order(pool, order_id).await?;
    Ok(publish_committed(pool, publisher, committed).await)
}

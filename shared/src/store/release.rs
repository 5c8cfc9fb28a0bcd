//! Releasing: a buyer gives an active hold back before it expires.

use sqlx::{MySql, Transaction};

use super::db::{finish, retry_conflicts};
use super::expiry::give_back;
use super::pool::Pool;
use super::rows::{HOLD_SELECT, hold_from_row};
use super::sql::Sql;
use crate::domain::events::{Committed, EventType};
use crate::domain::ids::{BuyerId, HoldId};
use crate::domain::model::{Hold, HoldStatus};
use crate::error::Error;

/// Gives an active hold back: `released`, its units available at once. Releasing it again
/// answers the same hold; a redeemed hold is refused (`hold_redeemed`), an expired one too
/// (`hold_expired`). Its expiry trigger, if any, finds nothing to do.
pub async fn release_hold(
    pool: &Pool,
    id: &HoldId,
    buyer: Option<&BuyerId>,
) -> Result<Committed<Hold>, Error> {
    let released = retry_conflicts("release_hold", || async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let released = release_locked(&mut tx, id, buyer).await;
        finish(tx, released).await
    })
    .await?;
    pool.product_reads().forget(released.value.product_id);
    Ok(released)
}

async fn release_locked(
    tx: &mut Transaction<'_, MySql>,
    id: &HoldId,
    buyer: Option<&BuyerId>,
) -> Result<Committed<Hold>, Error> {
    let row = Sql::new(format!(
        "{HOLD_SELECT} WHERE id = ? AND buyer_id = ? FOR UPDATE"
    ))
    .bind(id.as_str())
    .bind(BuyerId::stored(buyer))
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::HoldNotFound)?;
    let mut hold = hold_from_row(&row)?;
    match hold.status {
        HoldStatus::Released => return Ok(Committed::quiet(hold)),
        HoldStatus::Redeemed => return Err(Error::HoldRedeemed),
        HoldStatus::Expired => return Err(Error::HoldExpired),
        HoldStatus::Active => {}
    }
    let event = give_back(tx, &hold, "released", EventType::HoldReleased).await?;
    hold.status = HoldStatus::Released;
    Ok(Committed::new(hold, vec![event]))
}

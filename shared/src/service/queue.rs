//! Waiting rooms: joining a product's queue, a buyer's entry, the queue's summary, and the check
//! of an admission before a hold. The product's terms and stock come from this process's recent
//! product read (`store::product_reads`), so a crowd polling its entries costs the database one
//! indexed read each, and a hold's check of its admission token none.

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::domain::admission::AdmissionTokens;
use crate::domain::ids::{BuyerId, ProductId};
use crate::domain::model::{ProductRead, rfc3339, rfc3339_or_null};
use crate::domain::queue::{DRAW_AFTER_START, EntryStatus, QueueEntry, entry_at};
use crate::domain::waiting_room::WaitingRoomState;
use crate::error::Error;
use crate::store::pool::Pool;
use crate::store::products;
use crate::store::queue::{self, EntryRead};

/// The product as this process recently read it, with its waiting room (or `no_waiting_room`).
async fn product_with_room(
    pool: &Pool,
    product_id: ProductId,
) -> Result<(ProductRead, WaitingRoomState), Error> {
    let read = pool
        .product_reads()
        .read(product_id, products::read_product(pool, product_id))
        .await?;
    let room = read
        .product
        .waiting_room
        .clone()
        .ok_or(Error::NoWaitingRoom(product_id))?;
    Ok((read, room))
}

/// The sale's start, once the pre-queue may be drawn: not before [`DRAW_AFTER_START`] past it.
fn draw_due(read: &ProductRead, now: NaiveDateTime) -> Option<NaiveDateTime> {
    read.product
        .sale
        .sale_starts_at
        .filter(|starts| now >= *starts + DRAW_AFTER_START)
}

/// The buyer joins the queue: `(entry, true)` when they took a new place (201), `(entry, false)`
/// when they had one (200). An entry whose admission ended leaves, and the buyer joins again,
/// at the back. A sold-out product takes no one (409 `sold_out`).
pub async fn join(
    pool: &Pool,
    tokens: &AdmissionTokens,
    product_id: ProductId,
    buyer: &BuyerId,
) -> Result<(QueueEntry, bool), Error> {
    let (read, room) = product_with_room(pool, product_id).await?;
    if read.sold_out() {
        return Err(Error::SoldOut);
    }
    let shown = |entry: &EntryRead| {
        let shown = entry_at(
            product_id,
            buyer.clone(),
            &entry.stored,
            &room,
            false,
            entry.db_now,
            tokens,
        );
        (shown, entry.joined)
    };
    let entry = drawn(
        pool,
        &read,
        queue::join(pool, product_id, buyer).await?,
        buyer,
    )
    .await?;
    let (entry_now, joined) = shown(&entry);
    if joined || entry_now.status != EntryStatus::Expired {
        return Ok((entry_now, joined));
    }
    queue::leave(pool, entry.stored.id).await?;
    let again = drawn(
        pool,
        &read,
        queue::join(pool, product_id, buyer).await?,
        buyer,
    )
    .await?;
    tracing::info!(%product_id, %buyer, "admission ended: joined again at the back");
    Ok(shown(&again))
}

/// The buyer's entry as of now (404 `not_in_queue` when they have none).
pub async fn entry(
    pool: &Pool,
    tokens: &AdmissionTokens,
    product_id: ProductId,
    buyer: &BuyerId,
) -> Result<QueueEntry, Error> {
    let (read, room) = product_with_room(pool, product_id).await?;
    let entry = queue::read_entry(pool, product_id, buyer)
        .await?
        .ok_or(Error::NotInQueue)?;
    let entry = drawn(pool, &read, entry, buyer).await?;
    Ok(entry_at(
        product_id,
        buyer.clone(),
        &entry.stored,
        &room,
        read.sold_out(),
        entry.db_now,
        tokens,
    ))
}

/// When the entry's product is past its start and no one has claimed its draw, draws it (the
/// first request after the start does; others find it claimed: drawn, or being drawn) and reads
/// the entry again.
async fn drawn(
    pool: &Pool,
    read: &ProductRead,
    entry: EntryRead,
    buyer: &BuyerId,
) -> Result<EntryRead, Error> {
    let Some(starts) = draw_due(read, entry.db_now).filter(|_| !entry.draw_claimed) else {
        return Ok(entry);
    };
    let product_id = read.product.id;
    queue::draw(pool, product_id, starts).await?;
    let mut again = queue::read_entry(pool, product_id, buyer)
        .await?
        .ok_or(Error::NotInQueue)?;
    again.joined = entry.joined;
    Ok(again)
}

/// `GET /api/products/{id}/queue/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    /// Every position up to this one is admitted (or was).
    pub serving_position: u64,
    /// Positions given out so far.
    pub queue_length: u64,
    pub admission_rate: u32,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub sale_starts_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "rfc3339")]
    pub as_of: NaiveDateTime,
}

pub async fn summary(pool: &Pool, product_id: ProductId) -> Result<QueueSummary, Error> {
    let (read, room) = product_with_room(pool, product_id).await?;
    let mut figures = queue::figures(pool, product_id).await?;
    if !figures.draw_claimed
        && let Some(starts) = draw_due(&read, figures.db_now)
    {
        queue::draw(pool, product_id, starts).await?;
        figures = queue::figures(pool, product_id).await?;
    }
    let queue_length = match figures.queue_length {
        Some(length) => length,
        None => {
            pool.product_reads()
                .pre_queue_size(product_id, queue::count_entries(pool, product_id))
                .await?
        }
    };
    Ok(QueueSummary {
        serving_position: room
            .schedule
            .serving_position(figures.db_now)
            .min(queue_length),
        queue_length,
        admission_rate: room.schedule.rate(),
        sale_starts_at: read.product.sale.sale_starts_at,
        as_of: figures.db_now,
    })
}

/// A hold's admission, checked before the database is touched: a product with a waiting room
/// (as this process knows its terms: `store::product_reads::ProductReads::has_waiting_room`)
/// needs the buyer's valid `Admission-Token`; a product without one needs nothing.
pub async fn check_admission(
    pool: &Pool,
    tokens: Option<&AdmissionTokens>,
    product_id: ProductId,
    buyer: Option<&BuyerId>,
    token: Option<&str>,
) -> Result<(), Error> {
    let has_room = pool
        .product_reads()
        .has_waiting_room(product_id, products::has_waiting_room(pool, product_id))
        .await?;
    if !has_room {
        return Ok(());
    }
    let token = token.ok_or(Error::AdmissionRequired)?;
    let tokens =
        tokens.ok_or_else(|| Error::Config("ADMISSION_TOKEN_SECRET must be set".into()))?;
    // An anonymous buyer (`BUYER_AUTH=none`) was admitted by no one.
    let buyer = buyer.ok_or(Error::AdmissionInvalid)?;
    let now = chrono::Utc::now().naive_utc();
    tokens
        .verify(token, product_id, buyer, now)
        .map(|_| ())
        .map_err(|why| {
            tracing::info!(%product_id, %buyer, ?why, "admission token refused");
            Error::AdmissionInvalid
        })
}

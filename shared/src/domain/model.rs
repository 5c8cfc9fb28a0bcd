//! What the API shows. Timestamps are the database's clock (`UTC_TIMESTAMP(3)`), the one clock
//! every Lambda container and server instance shares.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::domain::ids::{BuyerId, HoldId, OrderId, ProductId};
use crate::domain::money::Cents;
use crate::domain::waiting_room::WaitingRoomState;

/// Stock as readers see it: holds past their expiry already count as available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub price: Cents,
    pub total_stock: i64,
    pub available_stock: i64,
    pub reserved_stock: i64,
    pub sold_stock: i64,
    /// How many rows the stock is split over (see `store::holds::reserve`).
    pub stock_buckets: u16,
    #[serde(flatten)]
    pub sale: SaleTerms,
    /// Its waiting room, shown as its terms (`null`: none).
    #[serde(serialize_with = "waiting_room_terms")]
    pub waiting_room: Option<WaitingRoomState>,
    /// The database's time of the read these figures come from: a read may be answered from a
    /// recent one (`store::product_reads`).
    #[serde(serialize_with = "rfc3339")]
    pub as_of: NaiveDateTime,
}

impl Product {
    /// Names this state of the product — its figures, terms, name and price, not the instant
    /// it was read (`as_of`) — alike in every process: a validator for caches.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut state = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = state.as_object_mut() {
            fields.remove("as_of");
        }
        let digest = Sha256::digest(state.to_string().as_bytes());
        hex::encode(&digest[..16])
    }
}

/// A product as one read saw it, and the next instant its figures change by themselves.
#[derive(Debug, Clone)]
pub struct ProductRead {
    pub product: Product,
    /// Its orders waiting for their payment (in time): units that may yet come back.
    pub pending_orders: i64,
    /// The next instant one of its active holds or unpaid orders lapses, which moves units to
    /// available for every reader without any write.
    pub next_lapse_at: Option<NaiveDateTime>,
}

impl ProductRead {
    /// Nothing left to sell and nothing that may come back: every unit sold and paid for.
    pub fn sold_out(&self) -> bool {
        self.product.available_stock == 0
            && self.product.reserved_stock == 0
            && self.pending_orders == 0
    }

    /// How long after the read its figures stay true unless something is written.
    pub fn until_next_lapse(&self) -> std::time::Duration {
        self.next_lapse_at.map_or(std::time::Duration::MAX, |next| {
            (next - self.product.as_of)
                .to_std()
                .unwrap_or(std::time::Duration::ZERO)
        })
    }
}

/// Who may hold a product's units, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SaleTerms {
    /// The most units one buyer may hold and buy (active holds, orders not cancelled).
    pub max_per_buyer: Option<u32>,
    /// No hold before this instant…
    #[serde(serialize_with = "rfc3339_or_null")]
    pub sale_starts_at: Option<NaiveDateTime>,
    /// …nor at or after this one.
    #[serde(serialize_with = "rfc3339_or_null")]
    pub sale_ends_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Active,
    Redeemed,
    Expired,
    /// Given back by its buyer before it expired.
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub hold_id: HoldId,
    pub product_id: ProductId,
    /// Whose it is; `null` for an anonymous hold (`BUYER_AUTH=none`).
    pub buyer_id: Option<BuyerId>,
    /// The stock bucket its units are reserved in: internal.
    #[serde(skip)]
    pub bucket: u16,
    pub qty: u32,
    pub status: HoldStatus,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: NaiveDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_id: OrderId,
    pub hold_id: HoldId,
    pub product_id: ProductId,
    /// Whose it is: its hold's buyer.
    pub buyer_id: Option<BuyerId>,
    /// The stock bucket its units are sold from: internal.
    #[serde(skip)]
    pub bucket: u16,
    pub qty: u32,
    pub amount: Cents,
    pub status: OrderStatus,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    /// A payment received by then pays the order, however late it is applied.
    #[serde(serialize_with = "rfc3339")]
    pub payment_due_at: NaiveDateTime,
    /// Still unpaid then (`payment_due_at` plus the grace for payments received in time but not
    /// applied yet), the order is cancelled and its units return to stock: internal.
    #[serde(skip)]
    pub cancel_at: NaiveDateTime,
}

/// How long an order may stay unpaid: a payment must be received within `ttl`; the order is
/// cancelled only `grace` later, so that a payment received in time but applied late (retries, a
/// backlog, an outage) still finds it pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentWindow {
    pub ttl: std::time::Duration,
    pub grace: std::time::Duration,
}

/// A payment event recorded against an order, as support sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentRecord {
    pub idempotency_key: String,
    pub status: PaymentStatus,
    pub outcome: RecordedOutcome,
    /// When the webhook received it: what its deadline is judged by.
    #[serde(serialize_with = "rfc3339")]
    pub received_at: NaiveDateTime,
}

/// What the provider reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Paid,
    Failed,
}

impl PaymentStatus {
    pub(crate) fn as_db(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn from_db(stored: &str) -> Self {
        if stored == "paid" {
            Self::Paid
        } else {
            Self::Failed
        }
    }
}

/// What a recorded payment event did to its order, in the four words support needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedOutcome {
    /// It paid the order, or (a failure) cancelled it.
    Applied,
    /// Money was taken that must be given back: paid too late, or paid twice.
    RefundRequired,
    /// The order had settled already; nothing changed and no money is owed back.
    Ignored,
    /// The amount reported is not the order's: not a payment of this order; a person looks.
    AmountMismatch,
}

impl SaleTerms {
    /// A limit of 1 to 1,000,000 units; a window that ends after it starts.
    pub fn validate(&self) -> Result<(), crate::error::Error> {
        use crate::error::Error;
        if self
            .max_per_buyer
            .is_some_and(|limit| !(1..=1_000_000).contains(&limit))
        {
            return Err(Error::InvalidRequest(
                "max_per_buyer must be from 1 to 1000000".into(),
            ));
        }
        if let (Some(starts), Some(ends)) = (self.sale_starts_at, self.sale_ends_at)
            && ends <= starts
        {
            return Err(Error::InvalidRequest(
                "sale_ends_at must be after sale_starts_at".into(),
            ));
        }
        Ok(())
    }

    /// Whether a hold may start `now`, by the database clock.
    pub fn check_open(&self, now: NaiveDateTime) -> Result<(), crate::error::Error> {
        use crate::error::Error;
        if let Some(starts) = self.sale_starts_at
            && now < starts
        {
            let millis = (starts - now).num_milliseconds().max(0) as u64;
            return Err(Error::SaleNotStarted {
                starts_in_seconds: millis.div_ceil(1000).max(1),
            });
        }
        if self.sale_ends_at.is_some_and(|ends| now >= ends) {
            return Err(Error::SaleEnded);
        }
        Ok(())
    }
}

impl RecordedOutcome {
    /// What a stored `payment_events.outcome` (`payments::PaymentOutcome::as_str`) means.
    pub(crate) fn from_stored(stored: &str) -> Self {
        match stored {
            "paid" | "cancelled" => Self::Applied,
            "refund_required" | "double_charge" => Self::RefundRequired,
            "amount_mismatch" => Self::AmountMismatch,
            _ => Self::Ignored,
        }
    }
}

/// An order as the API shows it: with the payment events recorded against it, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderDetails {
    #[serde(flatten)]
    pub order: Order,
    pub payments: Vec<PaymentRecord>,
}

impl HoldStatus {
    /// A stored status read at `lapsed` (expiry passed by the database clock): an active hold
    /// past its expiry is expired for every reader, whether or not anything has settled it yet.
    pub(crate) fn from_db(stored: &str, lapsed: bool) -> Self {
        match stored {
            "redeemed" => Self::Redeemed,
            "released" => Self::Released,
            "active" if !lapsed => Self::Active,
            _ => Self::Expired,
        }
    }
}

impl OrderStatus {
    /// A stored status read when the order has `lapsed` (its `cancel_at` passed, by the database
    /// clock): an unpaid order past it is cancelled for every reader, settled or not.
    pub(crate) fn from_db(stored: &str, lapsed: bool) -> Self {
        match stored {
            "paid" => Self::Paid,
            "pending_payment" if !lapsed => Self::PendingPayment,
            _ => Self::Cancelled,
        }
    }
}

/// RFC 3339 in UTC with millisecond precision, the precision the database stores.
pub fn to_rfc3339(at: &NaiveDateTime) -> String {
    DateTime::<Utc>::from_naive_utc_and_offset(*at, Utc)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn waiting_room_terms<S: Serializer>(
    room: &Option<WaitingRoomState>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    room.as_ref()
        .map(WaitingRoomState::terms)
        .serialize(serializer)
}

pub(crate) fn rfc3339<S: Serializer>(at: &NaiveDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&to_rfc3339(at))
}

pub(crate) fn rfc3339_or_null<S: Serializer>(
    at: &Option<NaiveDateTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&to_rfc3339(at)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = NaiveDateTime::parse_from_str("2026-11-21 11:13:00.120", "%Y-%m-%d %H:%M:%S%.3f")
            .expect("valid");
        assert_eq!(to_rfc3339(&at), "2026-11-21T11:13:00.120Z");
    }

    #[test]
    fn an_unpaid_order_past_its_deadline_reads_as_cancelled() {
        assert_eq!(
            OrderStatus::from_db("pending_payment", false),
            OrderStatus::PendingPayment
        );
        assert_eq!(
            OrderStatus::from_db("pending_payment", true),
            OrderStatus::Cancelled
        );
        assert_eq!(OrderStatus::from_db("paid", true), OrderStatus::Paid);
    }

    #[test]
    fn an_active_hold_past_expiry_reads_as_expired() {
        assert_eq!(HoldStatus::from_db("active", false), HoldStatus::Active);
        assert_eq!(HoldStatus::from_db("active", true), HoldStatus::Expired);
        assert_eq!(HoldStatus::from_db("redeemed", true), HoldStatus::Redeemed);
    }
}

//! What the API shows. Timestamps are the database's clock (`UTC_TIMESTAMP(3)`), the one clock
//! every Lambda container and server instance shares.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::ids::{HoldId, OrderId, ProductId};
use crate::money::Cents;

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
    /// How many rows the stock is split over (see `stock::reserve`).
    pub stock_buckets: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Active,
    Redeemed,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub hold_id: HoldId,
    pub product_id: ProductId,
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
    /// The stock bucket its units are sold from: internal.
    #[serde(skip)]
    pub bucket: u16,
    pub qty: u32,
    pub amount: Cents,
    pub status: OrderStatus,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: NaiveDateTime,
    /// Unpaid by then, the order is cancelled and its units return to stock.
    #[serde(serialize_with = "rfc3339")]
    pub payment_due_at: NaiveDateTime,
}

impl HoldStatus {
    /// A stored status read at `lapsed` (expiry passed by the database clock): an active hold
    /// past its expiry is expired for every reader, whether or not anything has settled it yet.
    pub(crate) fn from_db(stored: &str, lapsed: bool) -> Self {
        match stored {
            "redeemed" => Self::Redeemed,
            "active" if !lapsed => Self::Active,
            _ => Self::Expired,
        }
    }
}

impl OrderStatus {
    /// A stored status read when the payment deadline has `lapsed` (by the database clock): an
    /// unpaid order past its deadline is cancelled for every reader, settled or not.
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

fn rfc3339<S: Serializer>(at: &NaiveDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&to_rfc3339(at))
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

//! Deadlines: the moments after which a hold or an order must be settled.

use crate::domain::ids::{HoldId, OrderId};

/// A moment after which something must be settled: a hold's expiry, an order's payment deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deadline {
    HoldExpiry(HoldId),
    OrderPayment(OrderId),
}

impl Deadline {
    /// A name unique per deadline, of 1 to 64 characters of `[0-9a-zA-Z-_.]` (a Scheduler name).
    pub fn name(&self) -> String {
        match self {
            Self::HoldExpiry(id) => format!("hold-{id}"),
            Self::OrderPayment(id) => format!("order-{id}"),
        }
    }
}

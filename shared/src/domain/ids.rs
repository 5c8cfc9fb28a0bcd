//! Identifiers. Hold and order ids are random UUIDs (122 random bits: unguessable, so knowing one
//! is what entitles a client to it); product ids are the database's integers.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductId(pub u64);

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest idempotency key stored (a client's `Idempotency-Key`, a provider's event key).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// An idempotency key we accept: 1 to 255 printable ASCII characters, compared exactly.
pub fn is_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The buyer a hold and an order belong to: the `sub` of the buyer's token, 1 to 255 printable
/// ASCII characters. An anonymous request (`BUYER_AUTH=none`) has none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuyerId(String);

impl BuyerId {
    pub fn parse(raw: &str) -> Option<Self> {
        let fits = !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic());
        fits.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As stored: `''` stands for no buyer (anonymous), which a token's `sub` can never be.
    pub fn stored(buyer: Option<&Self>) -> &str {
        buyer.map_or("", Self::as_str)
    }

    /// The buyer a stored value names.
    pub fn from_stored(stored: &str) -> Option<Self> {
        Self::parse(stored)
    }
}

impl fmt::Display for BuyerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A UUIDv7: its first 48 bits are the time in milliseconds (then a counter and 62
            /// random bits), so ids made later sort later as text. The table keyed by them takes
            /// each new row at the right edge of its primary key, not at a random page: fewer
            /// page splits and no random page reads once the table outgrows the buffer pool.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().hyphenated().to_string())
            }

            /// Accepts only the canonical form we hand out, so a malformed id can never match a row.
            pub fn parse(raw: &str) -> Option<Self> {
                let parsed = uuid::Uuid::try_parse(raw).ok()?;
                let canonical = parsed.hyphenated().to_string();
                (canonical == raw).then_some(Self(canonical))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id!(
    /// A hold's id, as returned by `POST /api/holds`.
    HoldId
);
random_id!(
    /// An order's id, as returned by `POST /api/orders`.
    OrderId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_long_unique_and_parse_back() {
        let a = HoldId::generate();
        let b = HoldId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().len() >= 16);
        assert_eq!(HoldId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn generated_ids_sort_in_the_order_they_were_made() {
        let ids: Vec<HoldId> = (0..1_000).map(|_| HoldId::generate()).collect();
        let later = {
            std::thread::sleep(std::time::Duration::from_millis(2));
            HoldId::generate()
        };
        assert!(
            ids.windows(2)
                .all(|pair| pair[0].as_str() < pair[1].as_str())
        );
        assert!(ids.last().map(HoldId::as_str) < Some(later.as_str()));
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_up_to_255() {
        assert!(is_idempotency_key("evt_1Q2w3E"));
        assert!(is_idempotency_key(&"k".repeat(255)));
        for bad in ["", " ", "a b", "ключ", "tab\t"] {
            assert!(!is_idempotency_key(bad), "{bad:?}");
        }
        assert!(!is_idempotency_key(&"k".repeat(256)));
    }

    #[test]
    fn a_buyer_is_1_to_255_printable_ascii_and_empty_is_anonymous() {
        assert!(BuyerId::parse("auth0|5f7c8ec7c33c6c004bbafe82").is_some());
        assert!(BuyerId::parse(&"b".repeat(255)).is_some());
        for bad in ["", "a b", "ключ", &"b".repeat(256)] {
            assert!(BuyerId::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(BuyerId::stored(None), "");
        assert_eq!(BuyerId::from_stored(""), None);
        let buyer = BuyerId::parse("alice").expect("valid");
        assert_eq!(
            BuyerId::from_stored(BuyerId::stored(Some(&buyer))),
            Some(buyer)
        );
    }

    #[test]
    fn non_canonical_ids_are_rejected() {
        let id = OrderId::generate();
        assert!(OrderId::parse(&id.as_str().to_uppercase()).is_none());
        assert!(OrderId::parse(&id.as_str().replace('-', "")).is_none());
        assert!(OrderId::parse("1").is_none());
        assert!(OrderId::parse("' OR 1=1 --").is_none());
    }
}

//! A buyer's place in a product's waiting room, and what it says at an instant: computed from the
//! place, the product's waiting room and the clock when asked, like a hold's lazy expiry.

use chrono::{Duration, NaiveDateTime};
use serde::Serialize;

use super::admission::AdmissionTokens;
use super::ids::{BuyerId, ProductId};
use super::model::{rfc3339, rfc3339_or_null};
use super::waiting_room::WaitingRoomState;

/// After the start, the pre-queue is drawn once this long has passed: every join that began
/// before the start has committed by then (a join is one single-row `INSERT`), and the draw's
/// locking read waits for any that has not.
pub const DRAW_AFTER_START: Duration = Duration::seconds(1);

/// How a product's pre-queue was drawn: entries with ids up to `last_pre_queue_id` (D) took
/// positions 1..=`pre_queue_size` (P); a later entry `id` has position P + (id − D).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    pub pre_queue_size: u64,
    pub last_pre_queue_id: u64,
}

/// An entry as the database keeps it, with its product's draw when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub id: u64,
    pub joined_at: NaiveDateTime,
    /// Its drawn position, for an entry of the pre-queue once the draw wrote it.
    pub drawn_position: Option<u64>,
    pub draw: Option<Draw>,
}

impl StoredEntry {
    /// Its position: drawn for the pre-queue, its ticket after it, none before the draw.
    pub fn position(&self) -> Option<u64> {
        if self.drawn_position.is_some() {
            return self.drawn_position;
        }
        let draw = self.draw?;
        (self.id > draw.last_pre_queue_id)
            .then(|| draw.pre_queue_size + (self.id - draw.last_pre_queue_id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    Waiting,
    Admitted,
    /// Its admission ended: the buyer may join again, at the back.
    Expired,
    /// The product has nothing left to sell for now.
    SoldOut,
}

/// An entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueEntry {
    pub product_id: ProductId,
    pub buyer_id: BuyerId,
    pub status: EntryStatus,
    pub position: Option<u64>,
    #[serde(serialize_with = "rfc3339")]
    pub joined_at: NaiveDateTime,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub admitted_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub estimated_admission_at: Option<NaiveDateTime>,
    pub admission_token: Option<String>,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub admission_expires_at: Option<NaiveDateTime>,
}

/// What the entry says at `now`, the product being `sold_out` or not.
pub fn entry_at(
    product_id: ProductId,
    buyer_id: BuyerId,
    stored: &StoredEntry,
    room: &WaitingRoomState,
    sold_out: bool,
    now: NaiveDateTime,
    tokens: &AdmissionTokens,
) -> QueueEntry {
    let position = stored.position();
    // Admitted when its position's turn comes, or when it joined if that is later.
    let admitted_at = position.map(|p| room.schedule.admitted_at(p).max(stored.joined_at));
    let expires_at =
        admitted_at.map(|at| at + Duration::seconds(i64::from(room.admission_ttl_seconds)));
    let status = match (admitted_at, expires_at) {
        _ if sold_out => EntryStatus::SoldOut,
        (Some(admitted), Some(expires)) if admitted <= now => {
            if now < expires {
                EntryStatus::Admitted
            } else {
                EntryStatus::Expired
            }
        }
        _ => EntryStatus::Waiting,
    };
    let admitted = status == EntryStatus::Admitted;
    let token = expires_at
        .filter(|_| admitted)
        .map(|expires| tokens.issue(product_id, &buyer_id, expires));
    QueueEntry {
        product_id,
        buyer_id,
        status,
        position,
        joined_at: stored.joined_at,
        admitted_at: admitted_at.filter(|at| *at <= now),
        estimated_admission_at: admitted_at,
        admission_token: token,
        admission_expires_at: expires_at.filter(|_| admitted),
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use secrecy::SecretString;

    use super::*;
    use crate::domain::waiting_room::WaitingRoom;

    fn start() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 24)
            .and_then(|day| day.and_hms_opt(9, 0, 0))
            .expect("a time")
    }

    fn at(seconds: i64) -> NaiveDateTime {
        start() + Duration::seconds(seconds)
    }

    fn room() -> WaitingRoomState {
        WaitingRoomState::opening(
            WaitingRoom {
                admission_rate: 2,
                admission_ttl_seconds: 60,
            },
            start(),
        )
    }

    fn tokens() -> AdmissionTokens {
        AdmissionTokens::new(vec![SecretString::from("s".to_owned())]).expect("a secret")
    }

    fn entry(stored: &StoredEntry, sold_out: bool, now: NaiveDateTime) -> QueueEntry {
        let buyer = BuyerId::parse("buyer-1").expect("a buyer");
        entry_at(
            ProductId(7),
            buyer,
            stored,
            &room(),
            sold_out,
            now,
            &tokens(),
        )
    }

    const DRAW: Draw = Draw {
        pre_queue_size: 10,
        last_pre_queue_id: 100,
    };

    #[test]
    fn positions_are_drawn_in_the_pre_queue_and_tickets_after_it() {
        let pre = StoredEntry {
            id: 40,
            joined_at: at(-60),
            drawn_position: None,
            draw: None,
        };
        assert_eq!(pre.position(), None, "before the draw");
        let drawn = StoredEntry {
            drawn_position: Some(3),
            draw: Some(DRAW),
            ..pre.clone()
        };
        assert_eq!(drawn.position(), Some(3));
        let later = StoredEntry {
            id: 105,
            joined_at: at(5),
            drawn_position: None,
            draw: Some(DRAW),
        };
        assert_eq!(later.position(), Some(15));
    }

    #[test]
    fn an_entry_waits_then_is_admitted_with_a_token_until_its_admission_ends() {
        let stored = StoredEntry {
            id: 40,
            joined_at: at(-60),
            drawn_position: Some(5),
            draw: Some(DRAW),
        };
        let waiting = entry(&stored, false, at(1));
        assert_eq!(waiting.status, EntryStatus::Waiting);
        assert_eq!(waiting.estimated_admission_at, Some(at(2)), "(5 - 1) / 2");
        assert_eq!(waiting.admitted_at, None);
        assert_eq!(waiting.admission_token, None);
        let admitted = entry(&stored, false, at(2));
        assert_eq!(admitted.status, EntryStatus::Admitted);
        assert_eq!(admitted.admitted_at, Some(at(2)));
        assert_eq!(admitted.admission_expires_at, Some(at(62)));
        let token = admitted.admission_token.expect("a token");
        let buyer = BuyerId::parse("buyer-1").expect("a buyer");
        assert_eq!(
            tokens().verify(&token, ProductId(7), &buyer, at(61)),
            Ok(at(62))
        );
        let expired = entry(&stored, false, at(62));
        assert_eq!(expired.status, EntryStatus::Expired);
        assert_eq!(expired.admission_token, None);
        assert_eq!(expired.admitted_at, Some(at(2)), "when it was admitted");
    }

    #[test]
    fn a_late_joiner_is_admitted_when_it_joins_and_sold_out_overrides_all() {
        let late = StoredEntry {
            id: 101,
            joined_at: at(30),
            drawn_position: None,
            draw: Some(DRAW),
        };
        let admitted = entry(&late, false, at(30));
        assert_eq!(admitted.position, Some(11));
        assert_eq!(
            admitted.admitted_at,
            Some(at(30)),
            "its turn (5 s) had passed"
        );
        assert_eq!(admitted.status, EntryStatus::Admitted);
        let sold_out = entry(&late, true, at(30));
        assert_eq!(sold_out.status, EntryStatus::SoldOut);
        assert_eq!(sold_out.admission_token, None);
    }
}

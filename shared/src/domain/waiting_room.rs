//! A product's waiting room (issue 22): its terms, and the admission schedule that says, from a
//! queue position and the clock alone, when that position is admitted — like a hold's lazy
//! expiry, no job moves a counter.
//!
//! The rule: position p (1-based) is admitted at `sale_starts_at + floor((p − 1) / rate)`
//! seconds, or when it joined if that is later. A change of the rate applies from the next
//! admission tick on, and no position admitted before the change is un-admitted: a schedule is
//! a list of anchors — from `at` on, the positions after `position` are admitted `rate` a second
//! — and a change adds one where the old rate had got to, so every position keeps the instant it
//! was admitted (an admission's end is counted from it). Rate changes are rare: a few anchors.

use chrono::{Duration, NaiveDateTime};
use serde::Serialize;

use crate::error::Error;

/// Buyers admitted per second: at least one, at most this.
pub const MOST_ADMISSIONS_PER_SECOND: u32 = 100_000;
/// How long an admission lasts, in seconds: from this…
pub const SHORTEST_ADMISSION_SECONDS: u32 = 10;
/// …to this…
pub const LONGEST_ADMISSION_SECONDS: u32 = 3_600;
/// …and this when not said.
pub const DEFAULT_ADMISSION_SECONDS: u32 = 300;

/// A product's waiting room, as created and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoom {
    /// Buyers admitted per second.
    #[serde(deserialize_with = "crate::json::whole_number")]
    pub admission_rate: u32,
    /// How long an admission lasts.
    #[serde(
        default = "default_admission_seconds",
        deserialize_with = "crate::json::whole_number"
    )]
    pub admission_ttl_seconds: u32,
}

fn default_admission_seconds() -> u32 {
    DEFAULT_ADMISSION_SECONDS
}

impl WaitingRoom {
    /// The terms, within their bounds; a waiting room needs the sale's start to order its queue.
    pub fn validate(&self, sale_starts_at: Option<NaiveDateTime>) -> Result<(), Error> {
        if !(1..=MOST_ADMISSIONS_PER_SECOND).contains(&self.admission_rate) {
            return Err(Error::InvalidRequest(format!(
                "waiting_room.admission_rate must be from 1 to {MOST_ADMISSIONS_PER_SECOND}"
            )));
        }
        if !(SHORTEST_ADMISSION_SECONDS..=LONGEST_ADMISSION_SECONDS)
            .contains(&self.admission_ttl_seconds)
        {
            return Err(Error::InvalidRequest(format!(
                "waiting_room.admission_ttl_seconds must be from {SHORTEST_ADMISSION_SECONDS} \
                 to {LONGEST_ADMISSION_SECONDS}"
            )));
        }
        if sale_starts_at.is_none() {
            return Err(Error::InvalidRequest(
                "a waiting_room needs sale_starts_at: the pre-queue is drawn at the start".into(),
            ));
        }
        Ok(())
    }
}

/// When each queue position is admitted: the sale's schedule and every change of its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// In the order they were made: both their instants and their positions grow.
    anchors: Vec<Anchor>,
}

/// From `at` (an admission tick), the positions after `position` are admitted `rate` a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub at: NaiveDateTime,
    pub position: u64,
    pub rate: u32,
}

impl Schedule {
    /// A sale's first schedule: position 1 onwards from the start.
    pub fn opening(sale_starts_at: NaiveDateTime, rate: u32) -> Self {
        Self {
            anchors: vec![Anchor {
                at: sale_starts_at,
                position: 0,
                rate: rate.max(1),
            }],
        }
    }

    /// The schedule its anchors (as [`Schedule::anchors`] gave them) make; `None` when there
    /// are none, or when they do not follow one another.
    pub fn from_anchors(anchors: Vec<Anchor>) -> Option<Self> {
        let ordered = anchors
            .windows(2)
            .all(|pair| pair[0].at < pair[1].at && pair[0].position <= pair[1].position);
        (ordered && !anchors.is_empty() && anchors.iter().all(|anchor| anchor.rate > 0))
            .then_some(Self { anchors })
    }

    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// The rate in force now, or from the start.
    pub fn rate(&self) -> u32 {
        self.last().rate
    }

    /// When `position` (1-based) is admitted, however long ago. An entry is admitted no sooner
    /// than it joined: that is the caller's to weigh.
    pub fn admitted_at(&self, position: u64) -> NaiveDateTime {
        let anchor = self
            .anchors
            .iter()
            .rev()
            .find(|anchor| anchor.position < position)
            .unwrap_or(&self.anchors[0]);
        let seconds = position.saturating_sub(anchor.position + 1) / u64::from(anchor.rate);
        anchor.at + Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000))
    }

    /// How many positions are admitted at `now`: every position up to this one.
    pub fn serving_position(&self, now: NaiveDateTime) -> u64 {
        let Some(anchor) = self.anchors.iter().rev().find(|anchor| anchor.at <= now) else {
            return 0;
        };
        let ticks = u64::try_from((now - anchor.at).num_seconds()).unwrap_or(0) + 1;
        anchor
            .position
            .saturating_add(ticks.saturating_mul(u64::from(anchor.rate)))
    }

    /// The schedule once the rate changes at `now`: what was admitted stays admitted, the rest
    /// is admitted `rate` a second from the next admission tick on (before the sale's first
    /// tick, from that one).
    pub fn with_rate(&self, now: NaiveDateTime, rate: u32) -> Self {
        let rate = rate.max(1);
        let mut anchors = self.anchors.clone();
        let last = self.last();
        if now < last.at {
            // Nothing of the last anchor's is admitted yet: it simply takes the new rate.
            if let Some(pending) = anchors.last_mut() {
                pending.rate = rate;
            }
        } else {
            anchors.push(Anchor {
                at: last.at + Duration::seconds((now - last.at).num_seconds() + 1),
                position: self.serving_position(now),
                rate,
            });
        }
        Self { anchors }
    }

    fn last(&self) -> &Anchor {
        self.anchors.last().expect("a schedule has an anchor")
    }
}

/// A product's waiting room as it is kept (`products.waiting_room`): how long an admission lasts
/// and when each position is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRoomState {
    pub admission_ttl_seconds: u32,
    pub schedule: Schedule,
}

/// The stored JSON: anchors as `[unix ms, position, rate]`, so the text never depends on a
/// time format.
#[derive(serde::Deserialize, Serialize)]
struct Stored {
    admission_ttl_seconds: u32,
    anchors: Vec<(i64, u64, u32)>,
}

impl WaitingRoomState {
    /// A new waiting room: admission from the sale's start at the terms' rate.
    pub fn opening(terms: WaitingRoom, sale_starts_at: NaiveDateTime) -> Self {
        Self {
            admission_ttl_seconds: terms.admission_ttl_seconds,
            schedule: Schedule::opening(sale_starts_at, terms.admission_rate),
        }
    }

    /// The terms as shown: the rate in force now.
    pub fn terms(&self) -> WaitingRoom {
        WaitingRoom {
            admission_rate: self.schedule.rate(),
            admission_ttl_seconds: self.admission_ttl_seconds,
        }
    }

    /// These terms from `now` on: a new rate from the next admission tick (no one admitted is
    /// un-admitted), a new TTL for every admission.
    pub fn changed(&self, terms: WaitingRoom, now: NaiveDateTime) -> Self {
        let schedule = if terms.admission_rate == self.schedule.rate() {
            self.schedule.clone()
        } else {
            self.schedule.with_rate(now, terms.admission_rate)
        };
        Self {
            admission_ttl_seconds: terms.admission_ttl_seconds,
            schedule,
        }
    }

    pub fn to_json(&self) -> String {
        let stored = Stored {
            admission_ttl_seconds: self.admission_ttl_seconds,
            anchors: self
                .schedule
                .anchors()
                .iter()
                .map(|anchor| {
                    (
                        anchor.at.and_utc().timestamp_millis(),
                        anchor.position,
                        anchor.rate,
                    )
                })
                .collect(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// `None` for text this code did not write.
    pub fn from_json(text: &str) -> Option<Self> {
        let stored: Stored = serde_json::from_str(text).ok()?;
        let anchors = stored
            .anchors
            .into_iter()
            .map(|(ms, position, rate)| {
                Some(Anchor {
                    at: chrono::DateTime::from_timestamp_millis(ms)?.naive_utc(),
                    position,
                    rate,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            admission_ttl_seconds: stored.admission_ttl_seconds,
            schedule: Schedule::from_anchors(anchors)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn start() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 24)
            .and_then(|day| day.and_hms_opt(9, 0, 0))
            .expect("a time")
    }

    fn at(seconds: f64) -> NaiveDateTime {
        start() + Duration::milliseconds((seconds * 1000.0) as i64)
    }

    #[test]
    fn position_p_is_admitted_floor_of_p_minus_one_over_the_rate_seconds_after_the_start() {
        let schedule = Schedule::opening(start(), 100);
        assert_eq!(schedule.admitted_at(1), at(0.0));
        assert_eq!(schedule.admitted_at(100), at(0.0));
        assert_eq!(schedule.admitted_at(101), at(1.0));
        assert_eq!(schedule.admitted_at(250), at(2.0));
        assert_eq!(
            schedule.serving_position(at(-0.001)),
            0,
            "none before the start"
        );
        assert_eq!(schedule.serving_position(at(0.0)), 100);
        assert_eq!(schedule.serving_position(at(0.999)), 100);
        assert_eq!(schedule.serving_position(at(1.0)), 200);
    }

    #[test]
    fn a_position_is_admitted_exactly_when_the_serving_position_reaches_it() {
        for rate in [1, 3, 100] {
            let schedule = Schedule::opening(start(), rate);
            for position in 1..=500 {
                let admitted = schedule.admitted_at(position);
                assert!(schedule.serving_position(admitted) >= position);
                assert!(
                    schedule.serving_position(admitted - Duration::milliseconds(1)) < position,
                    "rate {rate}, position {position}"
                );
            }
        }
    }

    #[test]
    fn a_rate_change_admits_the_rest_at_the_new_rate_from_the_next_tick_and_unadmits_no_one() {
        let old = Schedule::opening(start(), 10);
        let changed_at = at(2.5);
        assert_eq!(old.serving_position(changed_at), 30);
        let new = old.with_rate(changed_at, 100);
        assert_eq!(new.rate(), 100);
        assert_eq!(
            new.serving_position(changed_at),
            30,
            "no jump at the change"
        );
        assert_eq!(new.serving_position(at(2.999)), 30);
        for position in 1..=30 {
            assert_eq!(
                new.admitted_at(position),
                old.admitted_at(position),
                "admitted stays admitted, when it was"
            );
        }
        assert_eq!(
            new.admitted_at(31),
            at(3.0),
            "the next tick, at the new rate"
        );
        assert_eq!(new.admitted_at(130), at(3.0));
        assert_eq!(new.admitted_at(131), at(4.0));
        assert_eq!(new.serving_position(at(3.0)), 130);
        let slower = new.with_rate(at(3.2), 1);
        assert_eq!(slower.serving_position(at(3.2)), 130);
        assert_eq!(slower.admitted_at(30), at(2.0));
        assert_eq!(slower.admitted_at(130), at(3.0));
        assert_eq!(slower.admitted_at(131), at(4.0));
        assert_eq!(slower.admitted_at(132), at(5.0));
        assert_eq!(
            Schedule::from_anchors(slower.anchors().to_vec()),
            Some(slower.clone()),
            "kept and read back"
        );
        for position in 1..=200 {
            let admitted = slower.admitted_at(position);
            assert!(slower.serving_position(admitted) >= position);
            assert!(slower.serving_position(admitted - Duration::milliseconds(1)) < position);
        }
    }

    #[test]
    fn a_waiting_room_is_kept_as_json_and_read_back_whole() {
        let room = WaitingRoomState::opening(
            WaitingRoom {
                admission_rate: 10,
                admission_ttl_seconds: 60,
            },
            start(),
        );
        let changed = room.changed(
            WaitingRoom {
                admission_rate: 40,
                admission_ttl_seconds: 30,
            },
            at(7.5),
        );
        assert_eq!(changed.schedule.anchors().len(), 2);
        assert_eq!(
            WaitingRoomState::from_json(&changed.to_json()),
            Some(changed.clone())
        );
        assert_eq!(
            changed.terms(),
            WaitingRoom {
                admission_rate: 40,
                admission_ttl_seconds: 30
            }
        );
        let same_rate = changed.changed(changed.terms(), at(20.0));
        assert_eq!(
            same_rate.schedule, changed.schedule,
            "no anchor for no change"
        );
        assert_eq!(WaitingRoomState::from_json("{}"), None);
        assert_eq!(WaitingRoomState::from_json("not json"), None);
    }

    #[test]
    fn a_rate_change_before_the_start_just_changes_the_rate() {
        let schedule = Schedule::opening(start(), 10).with_rate(at(-60.0), 50);
        assert_eq!(schedule, Schedule::opening(start(), 50));
    }

    #[test]
    fn anchors_that_do_not_follow_one_another_make_no_schedule() {
        let anchor = |seconds, position, rate| Anchor {
            at: at(seconds),
            position,
            rate,
        };
        assert!(Schedule::from_anchors(Vec::new()).is_none());
        assert!(Schedule::from_anchors(vec![anchor(0.0, 0, 0)]).is_none());
        assert!(Schedule::from_anchors(vec![anchor(0.0, 0, 5), anchor(0.0, 5, 5)]).is_none());
        assert!(Schedule::from_anchors(vec![anchor(0.0, 9, 5), anchor(1.0, 5, 5)]).is_none());
        assert!(Schedule::from_anchors(vec![anchor(0.0, 0, 5), anchor(1.0, 5, 7)]).is_some());
    }

    #[test]
    fn terms_are_bounded_and_need_a_start() {
        let room = |rate, ttl| WaitingRoom {
            admission_rate: rate,
            admission_ttl_seconds: ttl,
        };
        assert!(room(1, 10).validate(Some(start())).is_ok());
        assert!(room(100_000, 3_600).validate(Some(start())).is_ok());
        for (rate, ttl) in [(0, 300), (100_001, 300), (10, 9), (10, 3_601)] {
            assert!(
                room(rate, ttl).validate(Some(start())).is_err(),
                "{rate} {ttl}"
            );
        }
        let no_start = room(10, 300).validate(None);
        assert!(
            matches!(&no_start, Err(Error::InvalidRequest(message)) if message.contains("sale_starts_at")),
            "{no_start:?}"
        );
    }
}

//! The sale behind the waiting room: from the start, every buyer reads its entry until admitted,
//! then holds one unit with its admission token; and what each buyer saw.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use sqlx::types::chrono::{NaiveDateTime, Utc};

use super::buyers::{Buyers, note};
use crate::shoppers::{Timing, is_failure};

/// What one buyer saw of its entry from the start on.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub position: Option<u64>,
    /// When the buyer's client first read a position (the process's clock).
    pub positioned_at: Option<NaiveDateTime>,
    /// `admitted_at` as its entry said once admitted.
    pub admitted_at: Option<NaiveDateTime>,
    /// When its client first read it admitted (the process's clock, after the answer).
    pub seen_admitted: Option<NaiveDateTime>,
    /// The answer to its hold: `201`, `409 insufficient_stock`, …
    pub hold: Option<String>,
}

/// The sale, from the start to the last buyer's hold.
#[derive(Debug, Clone, Default)]
pub struct Sale {
    pub reads: Timing,
    pub holds: Timing,
    /// 409 `insufficient_stock`: admitted after the stock was gone.
    pub refusals: Timing,
    pub others: BTreeMap<String, u64>,
    /// By buyer.
    pub seen: Vec<Seen>,
    /// From the start to the last buyer's hold.
    pub run: Duration,
    pub timed_out: bool,
}

impl Sale {
    pub fn answers(&self) -> u64 {
        self.reads.count()
            + self.holds.count()
            + self.refusals.count()
            + self.others.values().sum::<u64>()
    }
}

/// From the start, each client reads its buyers' entries in turn, as fast as answers come,
/// until each is admitted; an admitted buyer holds one unit with its admission token and is
/// done. Fails after `deadline`.
pub async fn sale(
    buyers: &Buyers,
    starts: NaiveDateTime,
    deadline: Duration,
) -> Result<Sale, String> {
    if let Ok(wait) = (starts - Utc::now().naive_utc()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let began = Instant::now();
    let until = began + deadline;
    let tasks: Vec<_> = (0..buyers.clients())
        .map(|client| tokio::spawn(sell(buyers.clone(), client, until)))
        .collect();
    let mut sale = Sale {
        seen: vec![Seen::default(); buyers.count()],
        ..Sale::default()
    };
    for task in tasks {
        let (part, seen) = task.await.map_err(|err| err.to_string())?;
        sale.reads.add(part.reads);
        sale.holds.add(part.holds);
        sale.refusals.add(part.refusals);
        for (outcome, n) in part.others {
            *sale.others.entry(outcome).or_default() += n;
        }
        sale.timed_out |= part.timed_out;
        for (buyer, one) in seen {
            sale.seen[buyer] = one;
        }
    }
    sale.run = began.elapsed();
    Ok(sale)
}

async fn sell(buyers: Buyers, client: usize, until: Instant) -> (Sale, Vec<(usize, Seen)>) {
    let mut part = Sale::default();
    let mine: Vec<usize> = (client..buyers.count()).step_by(buyers.clients()).collect();
    let mut seen: Vec<(usize, Seen)> = mine.iter().map(|b| (*b, Seen::default())).collect();
    let mut waiting: VecDeque<usize> = (0..mine.len()).collect();
    while let Some(slot) = waiting.pop_front() {
        if Instant::now() >= until {
            part.timed_out = true;
            break;
        }
        let (buyer, saw) = &mut seen[slot];
        let started = Instant::now();
        let entry = match buyers.entry(*buyer).await {
            Ok(entry) => entry,
            Err(outcome) => {
                note(&mut part.others, format!("read {outcome}"));
                if is_failure(&outcome) {
                    waiting.push_back(slot);
                }
                continue;
            }
        };
        part.reads.record(started);
        let now = Utc::now().naive_utc();
        if saw.position.is_none() && entry.position.is_some() {
            saw.position = entry.position;
            saw.positioned_at = Some(now);
        }
        match (entry.status.as_str(), entry.admission_token) {
            ("waiting", _) => waiting.push_back(slot),
            ("admitted", Some(token)) => {
                saw.admitted_at = entry.admitted_at;
                saw.seen_admitted = Some(now);
                let started = Instant::now();
                let held = buyers.hold(*buyer, Some(&token)).await;
                match held.as_str() {
                    "201" => part.holds.record(started),
                    "409 insufficient_stock" => part.refusals.record(started),
                    other => note(&mut part.others, format!("hold {other}")),
                }
                saw.hold = Some(held);
            }
            (status, _) => note(&mut part.others, format!("read {status}")),
        }
    }
    (part, seen)
}

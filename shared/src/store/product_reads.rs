//! This process's recent reads of products: what `GET /api/products/{id}` answers from, so that a
//! crowd refreshing a product page costs the database at most one query per product per max age
//! (`PRODUCT_READ_MAX_AGE_MS`) per process, however many readers there are.
//!
//! - A read may be answered with a result of at most the max age, counted from the moment its
//!   query was sent, and never past the next instant a hold or an unpaid order of the product
//!   lapses (which changes what every reader counts as available): an expiry shows at once. That
//!   a product does not exist is kept as long (reads of ids that do not exist cost a query per
//!   max age, too); one created by this process shows at once, elsewhere within the max age.
//! - Concurrent reads of one product share one query (single flight): the first sends it, the
//!   others wait for its result — or its failure, which they answer too, rather than each
//!   trying a database that has just failed.
//! - A write of this process to a product (a hold, a release, an order, a payment's outcome, a
//!   change of its terms) forgets its result at once, so this process reads its own writes;
//!   other processes see them within the max age. A read begun before the write is not served
//!   after it.
//! - The reservation never reads from here: it decides against the live rows, always. It only
//!   notes here when a product was short of units for it, so that the next reservation of that
//!   product asks the database to check the stock before it writes anything (a refusal then
//!   locks and writes nothing); the note goes with the first write of this process to the
//!   product (a hold made, a release). A wrong note costs one read, never a wrong answer.
//!
//! A max age of zero turns the reads' sharing off: every read queries.
//!
//! Apart from those reads, whether a product has a waiting room is kept for [`TERMS_MAX_AGE`],
//! whatever the max age and through this process's holds (which do not change it): a hold
//! checks it before anything else, so that a crowd without admission tokens is refused at no
//! cost to the database. A change of the product's terms in this process forgets it at once;
//! one made elsewhere reaches this process within [`TERMS_MAX_AGE`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::ids::ProductId;
use crate::domain::model::ProductRead;
use crate::error::Error;

/// Products remembered at most; past this, those no reader is waiting on are dropped (reads of
/// ids that do not exist cannot grow memory without bound).
const MOST_PRODUCTS: usize = 4_096;

/// How long whether a product has a waiting room is trusted: a few seconds, about as long as a
/// product read may be old at the edge. Waiting rooms are set before a sale starts; one set or
/// removed during a sale reaches the holds of other processes within this.
pub const TERMS_MAX_AGE: Duration = Duration::from_secs(5);

pub struct ProductReads {
    max_age: Duration,
    products: Mutex<HashMap<ProductId, Arc<Slot>>>,
    /// Products this process's last reservation found short of units.
    short: Mutex<HashSet<ProductId>>,
    /// Whether each product has a waiting room, and when that was asked.
    waiting_rooms: Mutex<HashMap<ProductId, (Instant, bool)>>,
    /// The size of each product's pre-queue before its draw (a count over its entries), and
    /// when it was counted: kept for the max age like a product read.
    pre_queues: Mutex<HashMap<ProductId, (Instant, u64)>>,
}

#[derive(Default)]
struct Slot {
    /// Counts this process's writes to the product: a result read before one is not served
    /// after it.
    writes: AtomicU64,
    /// The last query's outcome; held while a query is in flight, so readers queue behind it.
    last: tokio::sync::Mutex<Option<Outcome>>,
}

struct Outcome {
    /// `writes` when the query was sent.
    writes: u64,
    /// Until when it may be served: the query's sending plus the max age, or the next lapse.
    fresh_until: Instant,
    finished_at: Instant,
    result: Result<ProductRead, Arc<Error>>,
}

impl ProductReads {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            products: Mutex::new(HashMap::new()),
            short: Mutex::new(HashSet::new()),
            waiting_rooms: Mutex::new(HashMap::new()),
            pre_queues: Mutex::new(HashMap::new()),
        }
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The product as of at most the max age ago (see the module's documentation), or what
    /// `query` (`store::products::read_product`) answers now when there is none to share.
    pub async fn read(
        &self,
        id: ProductId,
        query: impl Future<Output = Result<ProductRead, Error>>,
    ) -> Result<ProductRead, Error> {
        if self.max_age.is_zero() {
            return query.await;
        }
        let arrived = Instant::now();
        let slot = self.slot(id);
        let mut last = slot.last.lock().await;
        let writes = slot.writes.load(Ordering::Acquire);
        if let Some(outcome) = last.as_ref().filter(|outcome| outcome.writes == writes) {
            let fresh = Instant::now() < outcome.fresh_until;
            match &outcome.result {
                Ok(read) if fresh => return Ok(read.clone()),
                // A product that does not exist is an answer like any other (kept as long),
                // and the query this reader waited for failed: so does this read.
                Err(err) if fresh || outcome.finished_at >= arrived => {
                    return Err(Error::Shared(Arc::clone(err)));
                }
                _ => {}
            }
        }
        let sent = Instant::now();
        let result = query.await;
        let fresh_until = match &result {
            Ok(read) => sent + self.max_age.min(read.until_next_lapse()),
            Err(Error::ProductNotFound(_)) => sent + self.max_age,
            Err(_) => sent,
        };
        let result = result.map_err(Arc::new);
        let answer = result.clone().map_err(Error::Shared);
        *last = Some(Outcome {
            writes,
            fresh_until,
            finished_at: Instant::now(),
            result,
        });
        answer
    }

    /// Forgets what this process knew of the product: it has just changed it.
    pub fn forget(&self, id: ProductId) {
        lock(&self.short).remove(&id);
        if let Some(slot) = lock(&self.products).get(&id) {
            slot.writes.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether the product has a waiting room, as of at most [`TERMS_MAX_AGE`] ago, or as
    /// `query` (`store::products::has_waiting_room`) answers now.
    pub async fn has_waiting_room(
        &self,
        id: ProductId,
        query: impl Future<Output = Result<bool, Error>>,
    ) -> Result<bool, Error> {
        let known = lock(&self.waiting_rooms).get(&id).copied();
        if let Some((asked, has)) = known
            && asked.elapsed() < TERMS_MAX_AGE
        {
            return Ok(has);
        }
        let asked = Instant::now();
        let has = query.await?;
        let mut waiting_rooms = lock(&self.waiting_rooms);
        if waiting_rooms.len() >= MOST_PRODUCTS {
            waiting_rooms.retain(|_, (at, _)| at.elapsed() < TERMS_MAX_AGE);
        }
        waiting_rooms.insert(id, (asked, has));
        Ok(has)
    }

    /// The product's pre-queue as counted at most the max age ago, or as `count`
    /// (`store::queue::count_entries`) counts it now.
    pub async fn pre_queue_size(
        &self,
        id: ProductId,
        count: impl Future<Output = Result<u64, Error>>,
    ) -> Result<u64, Error> {
        let known = lock(&self.pre_queues).get(&id).copied();
        if let Some((counted, size)) = known
            && counted.elapsed() < self.max_age
        {
            return Ok(size);
        }
        let counted = Instant::now();
        let size = count.await?;
        let mut pre_queues = lock(&self.pre_queues);
        if pre_queues.len() >= MOST_PRODUCTS {
            pre_queues.clear();
        }
        pre_queues.insert(id, (counted, size));
        Ok(size)
    }

    /// Forgets the product's terms too: this process has just changed them.
    pub fn forget_terms(&self, id: ProductId) {
        lock(&self.waiting_rooms).remove(&id);
        self.forget(id);
    }

    /// True when this process's last reservation of the product found too few units.
    pub fn expects_too_few(&self, id: ProductId) -> bool {
        lock(&self.short).contains(&id)
    }

    /// A reservation found the product short of units.
    pub fn found_too_few(&self, id: ProductId) {
        let mut short = lock(&self.short);
        if short.len() < MOST_PRODUCTS {
            short.insert(id);
        }
    }

    fn slot(&self, id: ProductId) -> Arc<Slot> {
        let mut products = lock(&self.products);
        if products.len() >= MOST_PRODUCTS && !products.contains_key(&id) {
            products.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        Arc::clone(products.entry(id).or_default())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

//! The crowd without admission: holds of the waiting room's product with no token, or one that
//! is not a token, signed with another secret, another buyer's, another product's or expired.
//! Each must be refused 403 before the database is touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flash_sale_local::known_secrets::ADMISSION_TOKEN_SECRET;
use secrecy::SecretString;
use shared::domain::admission::AdmissionTokens;
use shared::domain::ids::{BuyerId, ProductId};
use sqlx::types::chrono::Utc;

use super::buyers::{Answers, Buyers};

/// The answer every hold without a valid admission token must get, by how it came.
pub const REFUSED_KINDS: [(&str, &str); 6] = [
    ("no token", "403 admission_required"),
    ("not a token", "403 admission_invalid"),
    ("another secret's", "403 admission_invalid"),
    ("another buyer's", "403 admission_invalid"),
    ("another product's", "403 admission_invalid"),
    ("expired", "403 admission_invalid"),
];

/// `count` holds without a valid admission token, of every kind in [`REFUSED_KINDS`] in turn,
/// each by one of the buyers; each must be answered 403 with its kind's code.
pub async fn refused_wave(buyers: &Buyers, count: usize) -> Result<Answers, String> {
    let attempts = Arc::new(forgeries(buyers, count)?);
    let next = Arc::new(AtomicUsize::new(0));
    buyers
        .each_client(move |buyers, _| {
            let (attempts, next) = (attempts.clone(), next.clone());
            async move {
                let mut answers = Answers::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((buyer, token)) = attempts.get(i) else {
                        break answers;
                    };
                    let (kind, expected) = REFUSED_KINDS[i % REFUSED_KINDS.len()];
                    let started = Instant::now();
                    let answer = buyers.hold(*buyer, token.as_deref()).await;
                    if answer == expected {
                        answers.ok.record(started);
                    } else {
                        answers.note(format!("hold with {kind} {answer}"));
                    }
                }
            }
        })
        .await
}

/// The `i`-th refused hold's buyer and token, made before the wave (signing is not what it
/// measures).
fn forgeries(buyers: &Buyers, count: usize) -> Result<Vec<(usize, Option<String>)>, String> {
    let genuine = signer(ADMISSION_TOKEN_SECRET)?;
    let other = signer("not-the-admission-secret")?;
    let product = buyers.product();
    let later = Utc::now().naive_utc() + Duration::from_secs(300);
    let earlier = Utc::now().naive_utc() - Duration::from_secs(1);
    (0..count)
        .map(|i| {
            let buyer = i % buyers.count();
            let id = buyer_id(buyers, buyer)?;
            let neighbour = buyer_id(buyers, (buyer + 1) % buyers.count())?;
            let token = match i % REFUSED_KINDS.len() {
                0 => None,
                1 => Some("v1.0.not-a-token".to_owned()),
                2 => Some(other.issue(product, &id, later)),
                3 => Some(genuine.issue(product, &neighbour, later)),
                4 => Some(genuine.issue(ProductId(product.0 + 1), &id, later)),
                _ => Some(genuine.issue(product, &id, earlier)),
            };
            Ok((buyer, token))
        })
        .collect()
}

fn buyer_id(buyers: &Buyers, buyer: usize) -> Result<BuyerId, String> {
    let name = buyers.name(buyer);
    BuyerId::parse(name).ok_or_else(|| format!("{name:?} is not a buyer id"))
}

fn signer(secret: &str) -> Result<AdmissionTokens, String> {
    AdmissionTokens::new(vec![SecretString::from(secret.to_owned())])
        .ok_or_else(|| "no admission secret".to_owned())
}

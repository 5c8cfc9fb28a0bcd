//! The admin token and webhook secret the end-to-end tests and the benchmark start their servers
//! with: known to their clients, which authenticate and sign with them.

use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";

/// The `X-Signature` header a provider signing with [`WEBHOOK_SECRET`] would send now.
pub fn webhook_signature(body: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    shared::domain::webhook::sign(
        &SecretString::from(WEBHOOK_SECRET.to_owned()),
        now,
        body.as_bytes(),
    )
}

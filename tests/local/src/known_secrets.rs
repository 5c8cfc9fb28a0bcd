//! The admin token and webhook secret the end-to-end tests and the benchmark start their servers
//! with: known to their clients, which authenticate and sign with them.

use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
/// The HS256 secret of the buyers' tokens (`BUYER_JWT_SECRET`).
pub const BUYER_JWT_SECRET: &str = "test-buyer-jwt-secret";
/// The waiting rooms' admission tokens' secret (`ADMISSION_TOKEN_SECRET`).
pub const ADMISSION_TOKEN_SECRET: &str = "test-admission-token-secret";

/// A bearer token of `buyer`'s, valid for an hour, signed with [`BUYER_JWT_SECRET`].
pub fn buyer_token(buyer: &str) -> String {
    let tokens = shared::adapters::jwt::BuyerTokens::new(&shared::config::BuyersConfig {
        auth: shared::config::BuyerAuth::Jwt,
        jwt_secrets: Some(vec![SecretString::from(BUYER_JWT_SECRET.to_owned())]),
        jwt_issuer: None,
        jwt_audience: None,
    })
    .expect("a configured secret");
    let buyer = shared::domain::ids::BuyerId::parse(buyer).expect("a buyer id");
    tokens
        .issue(&buyer, std::time::Duration::from_secs(3600))
        .expect("a token")
}

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

//! Admission tokens: what a product's waiting room gives a buyer it admitted, and what a hold of
//! that product is checked against before the database is touched (issue 22).
//!
//! A token is an HMAC-SHA256, under `ADMISSION_TOKEN_SECRET`, of the product, the buyer and the
//! instant the admission ends, with that instant beside it: `v1.<unix ms>.<hex MAC>`. It names
//! neither the buyer nor the product: the check recomputes the MAC with the request's own, so a
//! token is worth nothing to another buyer (their `sub` differs) or for another product, and it
//! cannot be stretched (the instant is under the MAC). Several secrets may be configured during a
//! rotation: the first signs, any verifies.

use chrono::{DateTime, NaiveDateTime};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::domain::ids::{BuyerId, ProductId};

/// The token format's version: a later format gets another, and old tokens are refused.
const VERSION: &str = "v1";

/// Why a token does not admit a request; the client is told only that it is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidAdmission {
    /// Not a token of ours at all.
    Malformed,
    /// A token for another buyer or product, altered, or signed with no configured secret.
    Forged,
    /// Its admission has ended.
    Expired,
}

#[derive(Clone)]
pub struct AdmissionTokens {
    /// The first signs; every one verifies.
    secrets: Vec<SecretString>,
}

impl AdmissionTokens {
    /// `None` without a secret: a waiting room cannot admit anyone without one.
    pub fn new(secrets: Vec<SecretString>) -> Option<Self> {
        (!secrets.is_empty()).then_some(Self { secrets })
    }

    /// The token admitting `buyer` to hold units of `product` until `expires_at` (whole
    /// milliseconds, as the database keeps times).
    pub fn issue(&self, product: ProductId, buyer: &BuyerId, expires_at: NaiveDateTime) -> String {
        let expires_ms = expires_at.and_utc().timestamp_millis();
        let mac = mac(&self.secrets[0], product, buyer, expires_ms)
            .finalize()
            .into_bytes();
        format!("{VERSION}.{expires_ms}.{}", hex::encode(mac))
    }

    /// The end of the admission `token` gives `buyer` for `product`, if it is one of ours, for
    /// them, and still running at `now` (the MAC is compared in constant time).
    pub fn verify(
        &self,
        token: &str,
        product: ProductId,
        buyer: &BuyerId,
        now: NaiveDateTime,
    ) -> Result<NaiveDateTime, InvalidAdmission> {
        let mut parts = token.split('.');
        let (Some(VERSION), Some(expires_ms), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidAdmission::Malformed);
        };
        let expires_ms: i64 = expires_ms
            .parse()
            .map_err(|_| InvalidAdmission::Malformed)?;
        let signature = hex::decode(signature).map_err(|_| InvalidAdmission::Malformed)?;
        let genuine = self.secrets.iter().any(|secret| {
            mac(secret, product, buyer, expires_ms)
                .verify_slice(&signature)
                .is_ok()
        });
        if !genuine {
            return Err(InvalidAdmission::Forged);
        }
        let expires_at = DateTime::from_timestamp_millis(expires_ms)
            .ok_or(InvalidAdmission::Malformed)?
            .naive_utc();
        if now >= expires_at {
            return Err(InvalidAdmission::Expired);
        }
        Ok(expires_at)
    }
}

fn mac(
    secret: &SecretString,
    product: ProductId,
    buyer: &BuyerId,
    expires_ms: i64,
) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    // Each field ends in a byte no field contains (buyer ids are printable), so no two
    // admissions sign the same bytes.
    for field in [
        VERSION.as_bytes(),
        product.0.to_string().as_bytes(),
        buyer.as_str().as_bytes(),
        expires_ms.to_string().as_bytes(),
    ] {
        mac.update(field);
        mac.update(b"\0");
    }
    mac
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate};

    use super::*;

    fn tokens(secrets: &[&str]) -> AdmissionTokens {
        AdmissionTokens::new(
            secrets
                .iter()
                .map(|secret| SecretString::from((*secret).to_owned()))
                .collect(),
        )
        .expect("a secret")
    }

    fn noon() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 12, 24)
            .and_then(|day| day.and_hms_milli_opt(12, 0, 0, 250))
            .expect("a time")
    }

    fn buyer(id: &str) -> BuyerId {
        BuyerId::parse(id).expect("a buyer id")
    }

    #[test]
    fn a_token_admits_its_buyer_to_its_product_until_it_expires() {
        let tokens = tokens(&["secret"]);
        let ends = noon() + Duration::seconds(300);
        let token = tokens.issue(ProductId(7), &buyer("alice"), ends);
        assert_eq!(
            tokens.verify(&token, ProductId(7), &buyer("alice"), noon()),
            Ok(ends)
        );
        assert_eq!(
            tokens.verify(
                &token,
                ProductId(7),
                &buyer("alice"),
                ends - Duration::milliseconds(1)
            ),
            Ok(ends)
        );
        assert_eq!(
            tokens.verify(&token, ProductId(7), &buyer("alice"), ends),
            Err(InvalidAdmission::Expired)
        );
    }

    #[test]
    fn a_token_is_worth_nothing_to_another_buyer_for_another_product_or_altered() {
        let tokens = tokens(&["secret"]);
        let ends = noon() + Duration::seconds(300);
        let token = tokens.issue(ProductId(7), &buyer("alice"), ends);
        let forged = Err(InvalidAdmission::Forged);
        assert_eq!(
            tokens.verify(&token, ProductId(7), &buyer("bob"), noon()),
            forged
        );
        assert_eq!(
            tokens.verify(&token, ProductId(8), &buyer("alice"), noon()),
            forged
        );
        // Stretched by an hour: the instant is under the MAC.
        let later = (ends + Duration::hours(1)).and_utc().timestamp_millis();
        let stretched = format!(
            "v1.{later}.{}",
            token.rsplit('.').next().expect("a signature")
        );
        assert_eq!(
            tokens.verify(&stretched, ProductId(7), &buyer("alice"), noon()),
            forged
        );
        // Signed with a secret this service does not have.
        let foreign = self::tokens(&["another"]).issue(ProductId(7), &buyer("alice"), ends);
        assert_eq!(
            tokens.verify(&foreign, ProductId(7), &buyer("alice"), noon()),
            forged
        );
    }

    #[test]
    fn anything_else_is_malformed() {
        let tokens = tokens(&["secret"]);
        for token in [
            "",
            "v1",
            "v1.123",
            "v2.123.00",
            "v1.soon.00",
            "v1.123.not-hex",
            "v1.123.00.00",
            "Bearer v1.123.00",
        ] {
            assert_eq!(
                tokens.verify(token, ProductId(7), &buyer("alice"), noon()),
                Err(InvalidAdmission::Malformed),
                "{token:?}"
            );
        }
    }

    #[test]
    fn during_a_rotation_the_first_secret_signs_and_every_one_verifies() {
        let ends = noon() + Duration::seconds(300);
        let old = tokens(&["old"]).issue(ProductId(7), &buyer("alice"), ends);
        let rotating = tokens(&["new", "old"]);
        let new = rotating.issue(ProductId(7), &buyer("alice"), ends);
        assert_ne!(old, new, "the new secret signs");
        for token in [&old, &new] {
            assert_eq!(
                rotating.verify(token, ProductId(7), &buyer("alice"), noon()),
                Ok(ends)
            );
        }
        assert_eq!(
            tokens(&["new"]).verify(&old, ProductId(7), &buyer("alice"), noon()),
            Err(InvalidAdmission::Forged),
            "once the old secret is gone, its tokens are refused"
        );
        assert!(AdmissionTokens::new(Vec::new()).is_none());
    }
}

//! The local server's stand-in for the HTTP API's JWT authorizer: verifies a buyer's HS256
//! bearer token (`exp` required, `iss` and `aud` when configured) and puts its claims in the
//! request context where API Gateway puts them, so the very handlers the Lambdas run read the
//! buyer the same way. Also issues tokens, for `flash-sale-local token` and the tests.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription,
    ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::config::BuyersConfig;
use crate::domain::ids::BuyerId;
use crate::error::Error;

/// A token's `exp` may be this far in the past and still pass (clock skew between issuers).
const LEEWAY_SECONDS: u64 = 5;

pub struct BuyerTokens {
    secrets: Vec<SecretString>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl BuyerTokens {
    pub fn new(config: &BuyersConfig) -> Result<Self, Error> {
        let secrets = config
            .jwt_secrets
            .clone()
            .ok_or_else(|| Error::Config("BUYER_JWT_SECRET must be set".into()))?;
        Ok(Self {
            secrets,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    /// The claims of a valid token, each as a string (as API Gateway hands them over).
    pub fn verify(&self, token: &str) -> Result<HashMap<String, String>, Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let claims = self
            .secrets
            .iter()
            .find_map(|secret| {
                let key = DecodingKey::from_secret(secret.expose_secret().as_bytes()).ok()?;
                jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
                    .ok()
            })
            .ok_or(Error::Unauthorized)?
            .claims;
        let claims: HashMap<String, String> = claims
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(text) => (name, text),
                other => (name, other.to_string()),
            })
            .collect();
        claims
            .get("sub")
            .and_then(|sub| BuyerId::parse(sub))
            .ok_or(Error::Unauthorized)?;
        Ok(claims)
    }

    /// A token for `buyer`, valid for `ttl`, signed with the first secret.
    pub fn issue(&self, buyer: &BuyerId, ttl: Duration) -> Result<String, Error> {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "sub": buyer.as_str(),
            "iat": now,
            "exp": now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        });
        if let Some(issuer) = &self.issuer {
            claims["iss"] = Value::String(issuer.clone());
        }
        if let Some(audience) = &self.audience {
            claims["aud"] = Value::String(audience.clone());
        }
        let signing = |err: jsonwebtoken::errors::Error| {
            Error::Internal(format!("could not sign a buyer token: {err}"))
        };
        let key = EncodingKey::from_secret(self.secrets[0].expose_secret().as_bytes())
            .map_err(signing)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(signing)
    }

    /// Verifies the request's `Authorization: Bearer` token and hands its claims to the handler
    /// where API Gateway's authorizer would; a missing or bad token is `Unauthorized`.
    pub fn authorize(&self, request: Request) -> Result<Request, Error> {
        let token = crate::http::header(&request, "authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized)?;
        let claims = self.verify(token.trim())?;
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims;
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        let mut context = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context.clone(),
            _ => ApiGatewayV2httpRequestContext::default(),
        };
        context.authorizer = Some(authorizer);
        Ok(request.with_request_context(RequestContext::ApiGatewayV2(context)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BuyerAuth;

    fn tokens(secrets: &[&str], issuer: Option<&str>, audience: Option<&str>) -> BuyerTokens {
        BuyerTokens::new(&BuyersConfig {
            auth: BuyerAuth::Jwt,
            jwt_secrets: Some(
                secrets
                    .iter()
                    .map(|s| SecretString::from(s.to_string()))
                    .collect(),
            ),
            jwt_issuer: issuer.map(str::to_owned),
            jwt_audience: audience.map(str::to_owned),
        })
        .expect("configured")
    }

    fn alice() -> BuyerId {
        BuyerId::parse("alice").expect("valid")
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_buyer() {
        let tokens = tokens(&["s3cret"], Some("shop"), Some("flash-sale"));
        let token = tokens
            .issue(&alice(), Duration::from_secs(60))
            .expect("token");
        let claims = tokens.verify(&token).expect("valid");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["iss"], "shop");
    }

    #[test]
    fn any_configured_secret_verifies_during_a_rotation() {
        let old = tokens(&["old"], None, None).issue(&alice(), Duration::from_secs(60));
        let both = tokens(&["new", "old"], None, None);
        assert!(both.verify(&old.expect("token")).is_ok());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let tokens = tokens(&["s3cret"], None, Some("flash-sale"));
        let other_audience = super::tests::tokens(&["s3cret"], None, Some("elsewhere"))
            .issue(&alice(), Duration::from_secs(60))
            .expect("token");
        let wrong_secret = super::tests::tokens(&["guess"], None, Some("flash-sale"))
            .issue(&alice(), Duration::from_secs(60))
            .expect("token");
        let key = EncodingKey::from_secret(b"s3cret").expect("a key");
        let sign = |claims: Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token")
        };
        let now = chrono::Utc::now().timestamp();
        let expired = sign(json!({"sub": "alice", "aud": "flash-sale", "exp": now - 60}));
        let no_exp = sign(json!({"sub": "alice", "aud": "flash-sale"}));
        let no_sub = sign(json!({"aud": "flash-sale", "exp": now + 60}));
        let bad_sub = sign(json!({"sub": "a b", "aud": "flash-sale", "exp": now + 60}));
        for bad in [
            "garbage",
            "",
            &other_audience,
            &wrong_secret,
            &expired,
            &no_exp,
            &no_sub,
            &bad_sub,
        ] {
            assert!(tokens.verify(bad).is_err(), "{bad}");
        }
    }
}

//! Bearer tokens (HS256 JWT with `sub`, `tenant`, `exp`) and the per-token
//! rate limit. The [`Auth`] extractor is the only way a handler learns the
//! tenant, so every query is scoped by what the token says. It reads the
//! [`Authenticator`] from any router state that provides one (`FromRef`), so
//! this module knows nothing of the application's state.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{header, request::Parts};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Every other claim, checked for control characters too.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Keys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Signs a token for `tenant`/`sub` that expires `ttl_secs` from now.
    pub fn mint(&self, tenant: &str, sub: &str, ttl_secs: u64) -> Result<String, String> {
        let now = unix_now();
        let claims = Claims {
            sub: sub.to_owned(),
            tenant: tenant.to_owned(),
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            other: serde_json::Map::new(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| e.to_string())?;
        let c = data.claims;
        if c.tenant.is_empty() || c.sub.is_empty() {
            return Err("empty tenant or sub claim".into());
        }
        if c.tenant.len() > 255 {
            return Err("tenant claim: 1 to 255 bytes".into());
        }
        // Claims end up in logs (`sub`, `tenant`) and SQL parameters: a
        // newline or an escape sequence in any of them could forge log lines.
        let strings = [("tenant", &c.tenant), ("sub", &c.sub)];
        for (name, value) in strings {
            if value.chars().any(char::is_control) {
                return Err(format!("{name} claim: control characters are not allowed"));
            }
        }
        for (name, value) in &c.other {
            if has_control(value) {
                return Err(format!(
                    "{} claim: control characters are not allowed",
                    crate::error::clip(name)
                ));
            }
        }
        Ok(c)
    }
}

/// Whether a claim (or a key or string nested in it) holds a control
/// character.
fn has_control(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.chars().any(char::is_control),
        Value::Array(items) => items.iter().any(has_control),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.chars().any(char::is_control) || has_control(v)),
        _ => false,
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Requests per second per token, in this process (a limit, not state that
/// correctness depends on: N processes allow N times the rate).
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (disabled).
    pub fn new(per_second: u32, burst: Option<u32>) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
        Some(RateLimit {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// `Err(seconds to wait)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }

    /// Forgets keys that are back to full capacity.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// What a request's credentials are checked against: the token keys and
/// the per-token rate limit (`None`: off). Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<Keys>,
    rate_limit: Option<Arc<RateLimit>>,
}

impl Authenticator {
    pub fn new(keys: Keys, rate_limit: Option<RateLimit>) -> Self {
        Authenticator {
            keys: Arc::new(keys),
            rate_limit: rate_limit.map(Arc::new),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.rate_limit.as_deref()
    }
}

/// The caller, from a valid bearer token.
#[derive(Debug, Clone)]
pub struct Auth {
    pub tenant: String,
    pub sub: String,
}

/// Reads and checks `Authorization: Bearer …` (no rate limit): the
/// token's claims.
pub fn bearer_claims(parts: &Parts, keys: &Keys) -> Result<Claims, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()))?
        .trim();
    keys.verify(token)
        .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))
}

/// Reads and checks `Authorization: Bearer …` (no rate limit).
pub fn authenticate(parts: &Parts, keys: &Keys) -> Result<Auth, ApiError> {
    let claims = bearer_claims(parts, keys)?;
    Ok(Auth {
        tenant: claims.tenant,
        sub: claims.sub,
    })
}

impl<S> FromRequestParts<S> for Auth
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = Authenticator::from_ref(state);
        let auth = authenticate(parts, authenticator.keys())?;
        if let Some(limit) = authenticator.rate_limit() {
            let key = format!("{}\u{0}{}", auth.tenant, auth.sub);
            limit
                .check(&key)
                .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_and_other_secret_does_not() {
        let k = Keys::new("s1");
        let t = k.mint("acme", "u1", 60).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!((c.tenant.as_str(), c.sub.as_str()), ("acme", "u1"));
        assert!(Keys::new("s2").verify(&t).is_err());
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s1"),
        )
        .unwrap()
    }

    #[test]
    fn not_yet_valid_and_control_characters_are_refused() {
        let k = Keys::new("s1");
        let now = unix_now();
        let ok = serde_json::json!({"sub": "u", "tenant": "t", "exp": now + 60});
        assert!(k.verify(&sign(ok.clone())).is_ok());
        let mut early = ok.clone();
        early["nbf"] = (now + 3600).into();
        let e = k.verify(&sign(early)).unwrap_err();
        assert!(e.to_lowercase().contains("immature"), "{e}");
        for (claim, value) in [
            ("sub", serde_json::json!("ada\n2026-01-01 INFO forged")),
            ("tenant", serde_json::json!("t\u{1b}[31m")),
            ("name", serde_json::json!("x\ry")),
            ("roles", serde_json::json!(["ok", "bad\u{7}"])),
        ] {
            let mut c = ok.clone();
            c[claim] = value;
            let e = k.verify(&sign(c)).unwrap_err();
            assert!(e.contains(claim) && e.contains("control"), "{claim}: {e}");
        }
    }

    #[test]
    fn rate_limit_answers_wait_time() {
        let l = RateLimit::new(1, Some(1)).unwrap();
        assert!(l.check("k").is_ok());
        assert_eq!(l.check("k"), Err(1));
        assert!(l.check("other").is_ok());
    }
}

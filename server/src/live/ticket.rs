//! Live tickets: short-lived signed credentials that open one event stream.
//!
//! `EventSource` cannot send an `Authorization` header, and a long-lived
//! bearer token must never travel in a URL (it lands in proxy logs and
//! browser history). A client therefore exchanges its token for a ticket
//! (`POST /api/client/sync/events/ticket`) and puts the ticket in the
//! stream's URL. A ticket is an HS256 JWT signed with a key derived from the
//! server's secret for this one purpose: it is not a bearer token (push and
//! pull refuse it) and a bearer token is not a ticket. It carries the
//! tenant, the user and the expiry of the token it was made from, so a
//! stream never outlives that token.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The `typ` claim every ticket carries.
const TICKET_TYPE: &str = "tidesync-live-ticket";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TicketClaims {
    sub: String,
    tenant: String,
    /// When the ticket stops opening streams (seconds since the epoch).
    exp: u64,
    /// When the token the ticket was made from expires.
    token_exp: u64,
    typ: String,
}

/// Who a stream belongs to and until when it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIdentity {
    pub tenant: String,
    pub sub: String,
    /// Expiry of the bearer token behind the stream (seconds since the epoch).
    pub token_exp: u64,
}

pub struct TicketKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl TicketKeys {
    /// Keys derived from the server's token secret; tickets live `ttl_secs`.
    pub fn new(secret: &str, ttl_secs: u64) -> Self {
        // Domain separation: the same secret, never the same key as tokens.
        let derived = format!("{secret}\u{0}{TICKET_TYPE}");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 2;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TicketKeys {
            encoding: EncodingKey::from_secret(derived.as_bytes()),
            decoding: DecodingKey::from_secret(derived.as_bytes()),
            validation,
            ttl_secs: ttl_secs.max(1),
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// A ticket for `who`, valid for the ticket lifetime but never past the
    /// token's own expiry.
    pub fn mint(&self, who: &StreamIdentity, now: u64) -> Result<String, String> {
        let claims = TicketClaims {
            sub: who.sub.clone(),
            tenant: who.tenant.clone(),
            exp: now.saturating_add(self.ttl_secs).min(who.token_exp),
            token_exp: who.token_exp,
            typ: TICKET_TYPE.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    pub fn verify(&self, ticket: &str) -> Result<StreamIdentity, String> {
        let claims = jsonwebtoken::decode::<TicketClaims>(ticket, &self.decoding, &self.validation)
            .map_err(|e| e.to_string())?
            .claims;
        if claims.typ != TICKET_TYPE {
            return Err("not a live ticket".into());
        }
        if claims.tenant.is_empty() || claims.sub.is_empty() {
            return Err("empty tenant or sub claim".into());
        }
        Ok(StreamIdentity {
            tenant: claims.tenant,
            sub: claims.sub,
            token_exp: claims.token_exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{unix_now, Keys};

    fn ada() -> StreamIdentity {
        StreamIdentity {
            tenant: "acme".into(),
            sub: "ada".into(),
            token_exp: unix_now() + 3600,
        }
    }

    #[test]
    fn a_ticket_verifies_with_its_identity() {
        let keys = TicketKeys::new("s", 30);
        let ticket = keys.mint(&ada(), unix_now()).unwrap();
        assert_eq!(keys.verify(&ticket).unwrap(), ada());
    }

    #[test]
    fn a_bearer_token_is_not_a_ticket_and_a_ticket_is_not_a_bearer_token() {
        let tickets = TicketKeys::new("s", 30);
        let tokens = Keys::new("s");
        let token = tokens.mint("acme", "ada", 3600).unwrap();
        assert!(tickets.verify(&token).is_err());
        let ticket = tickets.mint(&ada(), unix_now()).unwrap();
        assert!(tokens.verify(&ticket).is_err());
    }

    #[test]
    fn an_expired_ticket_is_refused() {
        let keys = TicketKeys::new("s", 30);
        let ticket = keys.mint(&ada(), unix_now() - 120).unwrap();
        assert!(keys.verify(&ticket).is_err());
    }

    #[test]
    fn a_ticket_never_outlives_its_token() {
        let keys = TicketKeys::new("s", 3600);
        let mut who = ada();
        who.token_exp = unix_now() - 60;
        let ticket = keys.mint(&who, unix_now()).unwrap();
        assert!(keys.verify(&ticket).is_err());
    }
}

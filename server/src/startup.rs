//! Start-up rules that refuse an unsafe configuration before anything
//! listens: the signing secret, where dev mode may listen, and which
//! origins may call the server from a browser. Each refusal says how to
//! fix it.

use std::net::SocketAddr;

use crate::config::DEV_SECRET;

/// Shortest signing secret accepted: 256 bits, as HS256 wants.
pub const MIN_SECRET_BYTES: usize = 32;

/// Which secret signs tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// `TIDESYNC_JWT_SECRET` unset: the public dev secret, anyone can mint
    /// tokens.
    Dev,
    Configured(String),
}

impl Secret {
    /// The configured secret, or dev mode when none is set. An empty or
    /// short one is refused: silently falling back to the public dev
    /// secret, or signing with `""`, would accept forged tokens.
    pub fn from_setting(setting: Option<&str>) -> Result<Secret, String> {
        match setting {
            None => Ok(Secret::Dev),
            Some(s) if s.len() < MIN_SECRET_BYTES => Err(format!(
                "TIDESYNC_JWT_SECRET (--jwt-secret) is {} bytes; it must be at least \
                 {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`). Unset it for dev mode.",
                s.len()
            )),
            Some(s) => Ok(Secret::Configured(s.to_owned())),
        }
    }

    pub fn bytes(&self) -> &str {
        match self {
            Secret::Dev => DEV_SECRET,
            Secret::Configured(s) => s,
        }
    }

    pub fn is_dev(&self) -> bool {
        *self == Secret::Dev
    }
}

/// Dev mode listens on loopback addresses only: with the public dev secret,
/// anyone who can reach the server can mint tokens for any tenant.
pub async fn check_dev_bind(bind: &str) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(bind)
        .await
        .map_err(|e| format!("--bind {bind}: {e}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "dev mode (TIDESYNC_JWT_SECRET is not set) only listens on loopback addresses \
             (127.0.0.1, ::1, localhost), and --bind {bind} is not one: anyone reaching it \
             could mint tokens with the public dev secret. Set TIDESYNC_JWT_SECRET to a \
             secret of at least {MIN_SECRET_BYTES} bytes to listen there."
        ));
    }
    Ok(())
}

/// Origins a browser may call the server from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`Access-Control-Allow-Origin: *`, never credentials).
    Any,
    List(Vec<String>),
}

/// The CORS origins: `--cors-origin` as given, `*` when unset; in dev mode
/// only the server's own origin plus those configured, never `*` (any
/// website a developer visits could otherwise use a dev token on it).
pub fn cors_origins(
    setting: Option<&str>,
    dev_mode: bool,
    bound: SocketAddr,
) -> Result<CorsOrigins, String> {
    let configured: Option<Vec<String>> = setting.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let any = configured
        .as_ref()
        .is_some_and(|list| list.iter().any(|o| o == "*"));
    if !dev_mode {
        return Ok(match configured {
            None => CorsOrigins::Any,
            Some(_) if any => CorsOrigins::Any,
            Some(list) => CorsOrigins::List(list),
        });
    }
    if any {
        return Err(
            "dev mode refuses --cors-origin *: any website you visit could call this server \
             with a dev token. List the origins of your app (comma-separated), or set \
             TIDESYNC_JWT_SECRET."
                .into(),
        );
    }
    let mut list = own_origins(bound);
    list.extend(configured.unwrap_or_default());
    list.dedup();
    Ok(CorsOrigins::List(list))
}

/// `http://<bound address>`, and the `localhost` spelling of a loopback one.
fn own_origins(bound: SocketAddr) -> Vec<String> {
    let mut out = vec![format!("http://{bound}")];
    if bound.ip().is_loopback() {
        out.push(format!("http://localhost:{}", bound.port()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_empty_or_short_are_refused() {
        assert_eq!(Secret::from_setting(None), Ok(Secret::Dev));
        assert!(Secret::from_setting(Some("")).is_err());
        assert!(Secret::from_setting(Some(&"x".repeat(31))).is_err());
        let ok = Secret::from_setting(Some(&"x".repeat(32))).expect("32 bytes");
        assert!(!ok.is_dev());
    }

    #[test]
    fn dev_cors_is_the_own_origin_plus_configured() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(
            cors_origins(None, true, bound),
            Ok(CorsOrigins::List(vec![
                "http://127.0.0.1:8080".into(),
                "http://localhost:8080".into()
            ]))
        );
        assert!(cors_origins(Some("*"), true, bound).is_err());
        let with_app = cors_origins(Some("http://app.test"), true, bound);
        assert!(matches!(with_app, Ok(CorsOrigins::List(l)) if l.len() == 3));
        assert_eq!(cors_origins(None, false, bound), Ok(CorsOrigins::Any));
        assert_eq!(
            cors_origins(Some("http://a.test"), false, bound),
            Ok(CorsOrigins::List(vec!["http://a.test".into()]))
        );
    }

    #[tokio::test]
    async fn dev_mode_binds_loopback_only() {
        assert!(check_dev_bind("127.0.0.1:0").await.is_ok());
        assert!(check_dev_bind("[::1]:0").await.is_ok());
        assert!(check_dev_bind("0.0.0.0:0").await.is_err());
        assert!(check_dev_bind("[::]:0").await.is_err());
    }
}

//! Command line, environment and `tidesync.toml`: everything the server is
//! told at start. Owns parsing and defaults; decides nothing at run time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use tidesync_protocol::Strategy;

/// Secret used when `TIDESYNC_JWT_SECRET` is not set (dev mode only).
pub const DEV_SECRET: &str = "tidesync-dev-secret-not-for-production";

/// The Content-Security-Policy of static pages unless `--csp` says
/// otherwise. Scripts and styles from the server's origin only, plus the
/// inline ones the demo pages use; WebAssembly compilation allowed (the
/// SDK is wasm); no plugins, no `<base>`, no framing, forms to the own
/// origin. `connect-src` stays open because the demo and the SDK's pages
/// may talk to a sync server or endpoint of another origin.
pub const DEFAULT_CSP: &str = "default-src 'self'; \
     script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
     connect-src 'self' http: https:; worker-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(Debug, Parser)]
#[command(
    name = "tidesync-server",
    version,
    about = "Reference push/pull server for Tidesync (SQLite by default, PostgreSQL for scale).",
    long_about = "Reference push/pull server for Tidesync.\n\n\
        With no flags it listens on 127.0.0.1:8080, stores data in ./tidesync.db (SQLite, \
        created with its schema), serves ./www at / and ./pkg at /pkg/, and runs in dev mode: \
        without TIDESYNC_JWT_SECRET it uses a built-in secret and prints a dev token.\n\n\
        Set DATABASE_URL=postgres://user:pass@host/db to use PostgreSQL; any number of \
        processes over one PostgreSQL behave as one server.\n\n\
        `tidesync-server token --tenant T --sub U` prints a token signed with the same secret."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an HS256 token for a tenant and user, signed with
    /// TIDESYNC_JWT_SECRET (or the dev secret when it is unset).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Tenant claim (`tenant`): which tenant's rows the token reaches.
    #[arg(long)]
    pub tenant: String,
    /// Subject claim (`sub`): the user.
    #[arg(long)]
    pub sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl: u64,
    /// Signing secret.
    #[arg(long, env = "TIDESYNC_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the URL is printed).
    #[arg(long, env = "TIDESYNC_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Database: a SQLite path or sqlite:// URL, or a postgres:// URL.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://tidesync.db")]
    pub db: String,
    /// Entity registry (TOML). A missing file at the default path means the
    /// defaults: end_user and interactions, last-write-wins.
    #[arg(long, env = "TIDESYNC_CONFIG", default_value = "tidesync.toml")]
    pub config: PathBuf,
    /// HS256 secret for bearer tokens. Unset: dev mode with a built-in secret.
    #[arg(long, env = "TIDESYNC_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Directory served at / (the demo). Missing is not an error.
    #[arg(long, env = "TIDESYNC_WWW", default_value = "www")]
    pub www: PathBuf,
    /// Directory served at /pkg/ (the npm package build). Missing is not an error.
    #[arg(long, env = "TIDESYNC_PKG", default_value = "pkg")]
    pub pkg: PathBuf,
    /// Allowed CORS origins, comma-separated; `*` allows any origin (never
    /// with credentials). Unset: any origin with a secret set; in dev mode
    /// only the server's own origin (and `*` is refused).
    #[arg(long, env = "TIDESYNC_CORS_ORIGIN")]
    pub cors_origin: Option<String>,
    /// Largest request body in bytes (larger → 413).
    #[arg(long, env = "TIDESYNC_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most mutations (or seed-003 records) in one push (more → 413).
    #[arg(long, env = "TIDESYNC_MAX_MUTATIONS", default_value_t = 1000)]
    pub max_mutations: usize,
    /// Most top-level fields in one record's data (and entries in its
    /// `changedFields`); a mutation with more is rejected.
    #[arg(long, env = "TIDESYNC_MAX_FIELDS", default_value_t = 1000)]
    pub max_fields: usize,
    /// Pull page size when the request gives no limit.
    #[arg(long, env = "TIDESYNC_DEFAULT_PAGE_SIZE", default_value_t = 1000)]
    pub default_page_size: u32,
    /// Largest pull page; a larger `limit` is capped to it silently.
    #[arg(long, env = "TIDESYNC_MAX_PAGE_SIZE", default_value_t = 10_000)]
    pub max_page_size: u32,
    /// Most bytes of records in one pull, pull-pending or fetch answer
    /// (`hasMore: true` when cut; a single larger record still goes alone).
    #[arg(long, env = "TIDESYNC_MAX_PAGE_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_page_bytes: usize,
    /// Requests per second per token (tenant + sub); 0 disables the limit.
    #[arg(long, env = "TIDESYNC_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,
    /// Burst allowed above the rate (defaults to the rate).
    #[arg(long, env = "TIDESYNC_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Largest database pool per process.
    #[arg(long, env = "TIDESYNC_DB_POOL", default_value_t = 10)]
    pub db_pool: u32,
    /// Longest wait for a request's headers, from when the connection is
    /// ready for a request (`250ms`, `10s`, `2m`).
    #[arg(long, env = "TIDESYNC_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::serve::parse_duration)]
    pub header_timeout: Duration,
    /// Longest time to receive a request body once its headers are in
    /// (then 408).
    #[arg(long, env = "TIDESYNC_BODY_TIMEOUT", default_value = "60s", value_parser = crate::serve::parse_duration)]
    pub body_timeout: Duration,
    /// A connection where no byte moves for this long, with no request
    /// being handled, is closed.
    #[arg(long, env = "TIDESYNC_IDLE_TIMEOUT", default_value = "60s", value_parser = crate::serve::parse_duration)]
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take before the
    /// server exits anyway.
    #[arg(long, env = "TIDESYNC_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = crate::serve::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Most open connections; more wait in the listen backlog.
    #[arg(long, env = "TIDESYNC_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most open connections from one peer address; more are closed at
    /// once. 0 turns it off (do that behind a proxy).
    #[arg(long, env = "TIDESYNC_MAX_CONNECTIONS_PER_PEER", default_value_t = 0)]
    pub max_connections_per_peer: usize,
    /// Serve `/metrics` on this address only (e.g. 127.0.0.1:9090) instead
    /// of the main one.
    #[arg(long, env = "TIDESYNC_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Require `Authorization: Bearer <this>` on `/metrics`.
    #[arg(long, env = "TIDESYNC_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Content-Security-Policy of the static pages (`/`, `/pkg/`).
    #[arg(long, env = "TIDESYNC_CSP", default_value = DEFAULT_CSP)]
    pub csp: String,
    /// Log format on stderr: `text` or `json` (one JSON object per line).
    /// Verbosity comes from RUST_LOG (default `info`).
    #[arg(long, env = "TIDESYNC_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Enable test-only routes (POST /__test/drop-next-push-response, for
    /// the caller's tenant). Never in production.
    #[arg(long)]
    pub test_hooks: bool,
    #[command(flatten)]
    pub live: crate::live::LiveArgs,
}

/// `tidesync.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Strategy for entity types that give none.
    #[serde(default)]
    pub default_strategy: Option<Strategy>,
    /// Registered entity types.
    #[serde(default)]
    pub entities: BTreeMap<String, EntityConfig>,
    /// Per-tenant overrides of an entity type's strategy.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    #[serde(default)]
    pub strategy: Option<Strategy>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// When set, the only entity types this tenant may touch (others → 403).
    #[serde(default)]
    pub entity_types: Option<Vec<String>>,
    #[serde(default)]
    pub entities: BTreeMap<String, EntityConfig>,
}

/// Registered entity types and their conflict strategies.
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<String, Strategy>,
    tenant_overrides: BTreeMap<(String, String), Strategy>,
    tenant_allowed: BTreeMap<String, Vec<String>>,
}

impl Registry {
    /// Seed 003's registry: `end_user` and `interactions`, last-write-wins.
    pub fn defaults() -> Self {
        let types = ["end_user", "interactions"]
            .into_iter()
            .map(|t| (t.to_owned(), Strategy::LastWriteWins))
            .collect();
        Registry {
            types,
            tenant_overrides: BTreeMap::new(),
            tenant_allowed: BTreeMap::new(),
        }
    }

    pub fn from_file_config(cfg: FileConfig) -> Result<Self, String> {
        let default = cfg.default_strategy.unwrap_or(Strategy::LastWriteWins);
        if cfg.entities.is_empty() {
            return Err("no [entities.<type>] registered".into());
        }
        let types: BTreeMap<String, Strategy> = cfg
            .entities
            .into_iter()
            .map(|(name, e)| (name, e.strategy.unwrap_or(default)))
            .collect();
        let mut tenant_overrides = BTreeMap::new();
        let mut tenant_allowed = BTreeMap::new();
        for (tenant, t) in cfg.tenants {
            if let Some(allowed) = t.entity_types {
                if let Some(bad) = allowed.iter().find(|n| !types.contains_key(*n)) {
                    return Err(format!(
                        "tenants.{tenant}.entity_types: entity type {bad} is not registered"
                    ));
                }
                tenant_allowed.insert(tenant.clone(), allowed);
            }
            for (name, e) in t.entities {
                if !types.contains_key(&name) {
                    return Err(format!(
                        "tenants.{tenant}.entities.{name}: entity type {name} is not registered"
                    ));
                }
                if let Some(s) = e.strategy {
                    tenant_overrides.insert((tenant.clone(), name), s);
                }
            }
        }
        Ok(Registry {
            types,
            tenant_overrides,
            tenant_allowed,
        })
    }

    /// Reads `path`; a missing file is the defaults when `explicit` is false.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let cfg: FileConfig =
                    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                Self::from_file_config(cfg).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::defaults()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Strategy for `entity_type` in `tenant`, or `None` if unregistered.
    pub fn strategy(&self, tenant: &str, entity_type: &str) -> Option<Strategy> {
        let base = *self.types.get(entity_type)?;
        Some(
            self.tenant_overrides
                .get(&(tenant.to_owned(), entity_type.to_owned()))
                .copied()
                .unwrap_or(base),
        )
    }

    /// Whether `tenant` may touch `entity_type` (registered or not).
    pub fn is_allowed(&self, tenant: &str, entity_type: &str) -> bool {
        self.tenant_allowed
            .get(tenant)
            .is_none_or(|list| list.iter().any(|t| t == entity_type))
    }

    pub fn is_registered(&self, entity_type: &str) -> bool {
        self.types.contains_key(entity_type)
    }

    pub fn types(&self) -> impl Iterator<Item = (&str, Strategy)> {
        self.types.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_sets_strategies_and_tenant_overrides() {
        let cfg: FileConfig = toml::from_str(
            r#"
            default_strategy = "server-wins"
            [entities.end_user]
            strategy = "merge"
            [entities.notes]
            [tenants.acme]
            entity_types = ["notes"]
            [tenants.acme.entities.notes]
            strategy = "client-wins"
            "#,
        )
        .unwrap();
        let r = Registry::from_file_config(cfg).unwrap();
        assert_eq!(r.strategy("x", "end_user"), Some(Strategy::Merge));
        assert_eq!(r.strategy("x", "notes"), Some(Strategy::ServerWins));
        assert_eq!(r.strategy("acme", "notes"), Some(Strategy::ClientWins));
        assert_eq!(r.strategy("x", "interactions"), None);
        assert!(r.is_allowed("acme", "notes"));
        assert!(!r.is_allowed("acme", "end_user"));
        assert!(r.is_allowed("x", "end_user"));
    }

    #[test]
    fn missing_default_file_means_seed_defaults() {
        let r = Registry::load(Path::new("/nonexistent/tidesync.toml"), false).unwrap();
        assert_eq!(r.strategy("t", "end_user"), Some(Strategy::LastWriteWins));
        assert!(r.is_registered("interactions"));
        assert!(Registry::load(Path::new("/nonexistent/tidesync.toml"), true).is_err());
    }
}

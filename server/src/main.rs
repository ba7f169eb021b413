//! `tidesync-server`: reference push/pull server for Tidesync. This file
//! wires the command line to the pieces: configuration, database, router,
//! graceful shutdown, and the `token` subcommand.

mod auth;
mod config;
mod cursor;
mod db;
mod error;
mod http;
mod live;
mod metrics;
mod serve;
mod startup;
mod sync;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::auth::{Authenticator, Keys, RateLimit};
use crate::config::{Cli, Command, Registry, ServeArgs};
use crate::http::{AppState, HttpOptions, Limits};
use crate::metrics::Metrics;
use crate::serve::ConnectionLimits;
use crate::startup::Secret;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.serve.log_format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match cli.command {
        Some(Command::Token(args)) => {
            let secret = match Secret::from_setting(args.jwt_secret.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if secret.is_dev() {
                eprintln!("note: TIDESYNC_JWT_SECRET is not set; signing with the dev secret");
            }
            match Keys::new(secret.bytes()).mint(&args.tenant, &args.sub, args.ttl) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: could not sign token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: could not start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(cli.serve)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let explicit_config = args.config.as_os_str() != "tidesync.toml";
    let registry = Registry::load(&args.config, explicit_config)?;
    let secret = Secret::from_setting(args.jwt_secret.as_deref())?;
    let dev_mode = secret.is_dev();
    if dev_mode {
        startup::check_dev_bind(&args.bind).await?;
    }
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let addr = serve::bound(&listener)?;
    let metrics_listener = match &args.metrics_bind {
        Some(bind) => {
            if dev_mode {
                startup::check_dev_bind(bind).await?;
            }
            let l = tokio::net::TcpListener::bind(bind)
                .await
                .map_err(|e| format!("cannot listen on {bind} (--metrics-bind): {e}"))?;
            Some(l)
        }
        None => None,
    };
    let cors = startup::cors_origins(args.cors_origin.as_deref(), dev_mode, addr)?;
    let repo = db::Repo::connect(&args.db, args.db_pool)
        .await
        .map_err(|e| format!("database {}: {e}", redact(&args.db)))?;
    let metrics = Metrics::new(repo.quarantined_counter()).map_err(|e| format!("metrics: {e}"))?;
    let live = live::Live::new(&repo, secret.bytes(), &args.live, args.idle_timeout);
    live.start(
        (repo.backend() == db::Backend::Postgres).then(|| args.db.clone()),
        Duration::from_secs(args.live.live_sweep_secs),
    );
    let state = Arc::new(AppState {
        repo: repo.clone(),
        registry,
        auth: Authenticator::new(
            Keys::new(secret.bytes()),
            RateLimit::new(args.rate_limit, args.rate_burst),
        ),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_mutations: args.max_mutations,
            default_page_size: args.default_page_size.max(1),
            max_page_size: args.max_page_size.max(1),
            max_page_bytes: args.max_page_bytes.max(1),
            body_timeout: args.body_timeout,
            max_fields: args.max_fields.max(1),
        },
        metrics,
        metrics_token: args.metrics_token.clone().filter(|t| !t.is_empty()),
        live,
    });
    let router = http::router(
        state.clone(),
        &HttpOptions {
            www: args.www.clone(),
            pkg: args.pkg.clone(),
            cors,
            csp: args.csp.clone(),
            metrics_on_main: metrics_listener.is_none(),
            test_hooks: args.test_hooks,
        },
    )?;
    let limits = ConnectionLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        max_connections_per_peer: args.max_connections_per_peer,
        shutdown_timeout: args.shutdown_timeout,
    };

    let shutdown = shutdown_signal()?;
    let types: Vec<String> = state
        .registry
        .types()
        .map(|(t, s)| format!("{t} ({})", s.as_str()))
        .collect();
    tracing::info!(
        database = %redact(&args.db),
        backend = ?repo.backend(),
        entity_types = %types.join(", "),
        "tidesync-server ready"
    );
    if dev_mode {
        println!("DEV MODE: TIDESYNC_JWT_SECRET is not set, so tokens are signed with a built-in");
        println!("          dev secret. Anyone can mint tokens. Loopback only; browsers may call");
        println!("          it only from its own origin (and --cors-origin ones).");
        match state.auth.keys().mint("dev", "dev", 30 * 86_400) {
            Ok(t) => println!("dev token (tenant dev, sub dev, 30 days): {t}"),
            Err(e) => eprintln!("could not mint the dev token: {e}"),
        }
    }
    if args.test_hooks {
        println!(
            "TEST HOOKS ON: POST /__test/drop-next-push-response is enabled. Never in production."
        );
    }
    if let Some(l) = &metrics_listener {
        println!("metrics on http://{}/metrics", serve::bound(l)?);
    }
    println!("tidesync-server listening on http://{addr}");

    if state.auth.rate_limit().is_some() {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Some(l) = st.auth.rate_limit() {
                    l.sweep();
                }
            }
        });
    }

    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let live_state = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Live streams never end by themselves: end them (each says
        // goodbye), or the graceful shutdown would wait for them forever.
        live_state.live.shut_down();
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let main = serve::serve(listener, router, limits.clone(), stopped(stop_rx.clone()));
    match metrics_listener {
        Some(l) => {
            let side = serve::serve(
                l,
                http::metrics_router(state.clone()),
                limits,
                stopped(stop_rx),
            );
            tokio::join!(main, side);
        }
        None => main.await,
    }
    tracing::info!("shutting down: in-flight requests finished");
    repo.close().await;
    Ok(())
}

/// Hides a password in a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Installs the SIGINT/SIGTERM handlers now (before the URL is printed, so
/// a signal sent as soon as the server is up is never missed) and returns a
/// future that completes on the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("shutdown signal received; finishing in-flight requests");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            tracing::info!("shutdown signal received; finishing in-flight requests");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}

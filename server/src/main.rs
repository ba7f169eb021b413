//! `tidesync-server`: reference push/pull server for Tidesync. This file
//! wires the command line to the pieces: configuration, database, router,
//! graceful shutdown, and the `token` subcommand.

mod auth;
mod config;
mod db;
mod error;
mod http;
mod sync;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::auth::{Keys, RateLimit};
use crate::config::{Cli, Command, Registry, ServeArgs, DEV_SECRET};
use crate::http::{AppState, HttpOptions, Limits, Metrics, TestHooks};

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
            let secret = args.jwt_secret.clone().unwrap_or_else(|| {
                eprintln!("note: TIDESYNC_JWT_SECRET is not set; signing with the dev secret");
                DEV_SECRET.to_owned()
            });
            match Keys::new(&secret).mint(&args.tenant, &args.sub, args.ttl) {
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
    let (keys, dev_mode) = match &args.jwt_secret {
        Some(s) if !s.is_empty() => (Keys::new(s), false),
        _ => (Keys::new(DEV_SECRET), true),
    };
    let repo = db::Repo::connect(&args.db, args.db_pool)
        .await
        .map_err(|e| format!("database {}: {e}", redact(&args.db)))?;
    let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
    let state = Arc::new(AppState {
        repo: repo.clone(),
        registry,
        keys,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_mutations: args.max_mutations,
            default_page_size: args.default_page_size.max(1),
            max_page_size: args.max_page_size.max(1),
            max_page_bytes: args.max_page_bytes.max(1),
        },
        rate_limit: RateLimit::new(args.rate_limit, args.rate_burst),
        metrics,
        test_hooks: args.test_hooks.then(TestHooks::default),
    });
    let router = http::router(
        state.clone(),
        &HttpOptions {
            www: args.www.clone(),
            pkg: args.pkg.clone(),
            cors_origin: args.cors_origin.clone(),
        },
    )?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;

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
        println!("          dev secret. Anyone can mint tokens. Do not expose this server.");
        match state.keys.mint("dev", "dev", 30 * 86_400) {
            Ok(t) => println!("dev token (tenant dev, sub dev, 30 days): {t}"),
            Err(e) => eprintln!("could not mint the dev token: {e}"),
        }
    }
    if args.test_hooks {
        println!(
            "TEST HOOKS ON: POST /__test/drop-next-push-response is enabled. Never in production."
        );
    }
    println!("tidesync-server listening on http://{addr}");

    if let Some(limit) = &state.rate_limit {
        let _ = limit; // swept below
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                if let Some(l) = &st.rate_limit {
                    l.sweep();
                }
            }
        });
    }

    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("server error: {e}"))?;
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

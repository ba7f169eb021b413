#![cfg(not(target_arch = "wasm32"))]
//! Outbox: credentials: a refused token pauses the queue until a new one,
//! `getToken` refreshes, and the bearer token goes to the app's own
//! servers only.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn refused_credentials_pause_everything_until_a_new_token_is_set() {
    for status in [401, 403] {
        let b = bench_with(OutboxOptions::default(), Some("expired"));
        b.register(post("t1"));
        b.register(post("t2"));
        b.respond(move |request, _| {
            if request.headers.get("Authorization").map(String::as_str) == Some("Bearer renewed") {
                answer(200)
            } else {
                answer(status)
            }
        });
        b.transport.latency.set(10.0);

        b.flush();
        let sent_while_refused = b.sent_count();
        b.clock.advance(3_600_000.0);
        b.flush();

        assert_eq!(
            b.events_named("auth:required").len(),
            1,
            "{status}: auth:required emitted once"
        );
        assert!(b.outbox.status().auth_required);
        assert_eq!(b.outbox.health().status, HealthStatus::Critical);
        assert_eq!(b.sent_count(), sent_while_refused, "{status}: paused");
        assert_eq!(b.store.task_count(), 2, "{status}: nothing lost");

        b.outbox.set_token(Some("renewed".into()));
        b.flush();

        assert_eq!(b.store.task_count(), 0, "{status}: resumed");
        assert_eq!(b.events_named("sync:complete").len(), 2);
        assert!(!b.outbox.status().auth_required);
        assert!(b.failed_ids().is_empty());
    }
}

#[test]
fn a_refused_token_emits_auth_required_once_naming_the_task() {
    let b = bench_with(OutboxOptions::default(), Some("expired"));
    b.register(post("t1"));
    b.respond(|_, _| answer(401));

    b.flush();

    assert!(matches!(
        b.events_named("auth:required").as_slice(),
        [Event::AuthRequired { status: Some(401), task_id }] if task_id == "t1"
    ));
    assert_eq!(
        b.store.task("t1").unwrap().attempts,
        0,
        "not a failed attempt"
    );
}

#[test]
fn a_fresh_token_from_get_token_retries_transparently() {
    let b = bench_with(OutboxOptions::default(), Some("expired"));
    b.tokens.tokens.borrow_mut().push("fresh".into());
    b.register(post("t"));
    b.respond(
        |request, _| match request.headers.get("Authorization").map(String::as_str) {
            Some("Bearer fresh") => answer(200),
            _ => answer(401),
        },
    );

    b.flush();

    assert!(b.events_named("auth:required").is_empty());
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(b.sent_count(), 2);
    assert_eq!(b.tokens.asked.get(), 1);
    assert_eq!(b.outbox.token().as_deref(), Some("fresh"));
}

#[test]
fn concurrent_requests_refused_for_the_same_stale_token_need_only_one_fresh_token() {
    let b = bench_with(OutboxOptions::default(), Some("expired"));
    b.tokens.tokens.borrow_mut().push("fresh".into());
    b.register_posts(0..4);
    b.respond(
        |request, _| match request.headers.get("Authorization").map(String::as_str) {
            Some("Bearer fresh") => answer(200),
            _ => answer(401),
        },
    );

    b.flush();

    assert_eq!(b.transport.max_in_flight.get(), 4);
    assert!(b.events_named("auth:required").is_empty());
    assert!(!b.outbox.status().auth_required);
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(b.tokens.asked.get(), 1);
}

#[test]
fn a_server_refusing_every_token_does_not_loop_through_get_token() {
    let b = bench_with(OutboxOptions::default(), Some("t0"));
    *b.tokens.tokens.borrow_mut() = (1..=100).map(|i| format!("t{i}")).collect();
    b.register(post("t"));
    b.respond(|_, _| answer(401));

    b.flush();

    assert!(b.sent_count() <= 2, "{} requests", b.sent_count());
    assert_eq!(b.events_named("auth:required").len(), 1);
    assert!(b.outbox.status().auth_required);
}

#[test]
fn the_bearer_token_goes_to_the_app_and_its_server_only() {
    let b = bench_with(
        OutboxOptions {
            server_url: Some("https://api.example.com".into()),
            concurrency: 1,
            ..OutboxOptions::default()
        },
        Some("secret"),
    );
    let cases = [
        ("relative", "/items/1", true),
        ("server", "https://api.example.com/items/1", true),
        ("server-query", "https://api.example.com?x=1", true),
        (
            "third-party",
            "https://analytics.example.net/collect",
            false,
        ),
        ("lookalike", "https://api.example.com.evil.net/items", false),
        ("userinfo", "https://api.example.com@evil.net/items", false),
        ("protocol-relative", "//evil.net/items", false),
        ("backslash", "/\\evil.net/items", false),
    ];
    for (id, url, _) in cases {
        b.register(post(id).url(url));
    }

    b.flush();

    for (index, (id, url, expected)) in cases.iter().enumerate() {
        assert_eq!(b.sent_ids()[index], *id);
        let sent = b.sent_header(index, "Authorization");
        assert_eq!(sent.is_some(), *expected, "{url}: Authorization = {sent:?}");
        if *expected {
            assert_eq!(sent.as_deref(), Some("Bearer secret"));
        }
    }
}

#[test]
fn a_refusal_the_token_never_reached_is_a_dead_letter_not_a_pause() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        Some("secret"),
    );
    b.register(post("third-party").url("https://partner.example.net/hook"));
    let mut own_header = post("own-header");
    own_header
        .request
        .headers
        .insert("Authorization".into(), "Basic dXNlcg==".into());
    b.register(own_header);
    b.register(post("mine"));
    b.respond(|request, _| {
        if request.headers.contains_key("x-key") || request.url.starts_with("/items/mine") {
            answer(200)
        } else {
            answer(401)
        }
    });

    b.flush();

    assert!(b.events_named("auth:required").is_empty());
    assert!(!b.outbox.status().auth_required);
    assert_eq!(b.failed_ids(), ["own-header", "third-party"]);
    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert!(failed
        .iter()
        .all(|f| f.task.errors[0].class == ErrorClass::Permission));
    assert_eq!(
        b.store.task("mine"),
        None,
        "the app's own work went through"
    );
}

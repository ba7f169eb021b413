//! The live link's policies, specified natively: pokes and coalesced pulls,
//! reconnection backoff with jitter, dead connections, online and offline,
//! the safety-net pull.

use super::*;

fn options() -> LiveOptions {
    LiveOptions {
        retry: RetryOptions {
            jitter: false,
            ..LiveOptions::default().retry
        },
        ..LiveOptions::default()
    }
}

fn open_link(now: Millis) -> LiveLink {
    let mut link = LiveLink::new(options());
    assert_eq!(
        link.start(now, true),
        vec![Command::Connect {
            last_event_id: None
        }]
    );
    assert_eq!(link.on_open(now, Some(15_000.0)), vec![Command::Opened]);
    link
}

#[test]
fn the_first_poke_pulls_and_a_poke_already_pulled_does_not() {
    let mut link = open_link(0.0);
    assert_eq!(link.on_poke(1.0, "c1.5"), vec![Command::Pull]);
    assert!(link.on_pull_done(2.0, PullOutcome::Done).is_empty());
    assert!(
        link.on_poke(3.0, "c1.5").is_empty(),
        "already pulled through 5"
    );
    assert!(link.on_poke(3.0, "c1.4").is_empty());
    assert_eq!(link.on_poke(4.0, "c1.6"), vec![Command::Pull]);
}

#[test]
fn pokes_during_a_pull_coalesce_into_one_more_pull() {
    let mut link = open_link(0.0);
    assert_eq!(link.on_poke(1.0, "c1.1"), vec![Command::Pull]);
    for seq in 2..50 {
        assert!(link.on_poke(2.0, &format!("c1.{seq}")).is_empty());
    }
    assert_eq!(
        link.on_pull_done(3.0, PullOutcome::Done),
        vec![Command::Pull]
    );
    assert!(link.on_pull_done(4.0, PullOutcome::Done).is_empty());
    assert!(
        link.on_poke(5.0, "c1.49").is_empty(),
        "the second pull covered 49"
    );
}

#[test]
fn an_unreadable_cursor_always_pulls() {
    let mut link = open_link(0.0);
    assert_eq!(link.on_poke(1.0, "t.123"), vec![Command::Pull]);
    link.on_pull_done(2.0, PullOutcome::Done);
    assert_eq!(link.on_poke(3.0, "t.123"), vec![Command::Pull]);
}

#[test]
fn reconnection_backs_off_exponentially_and_resets_once_open() {
    let mut link = open_link(0.0);
    let closed = link.on_failure(10.0, Failure::Network, 0.5);
    assert_eq!(
        closed,
        vec![
            Command::Disconnect,
            Command::Closed {
                reason: "connection lost".into(),
                retry_at: Some(1_010.0)
            }
        ]
    );
    assert!(link.on_tick(1_009.0, 0.5).is_empty());
    assert_eq!(link.next_wake(), Some(1_010.0));
    assert!(matches!(
        link.on_tick(1_010.0, 0.5)[..],
        [Command::Connect { .. }]
    ));
    // Fails again before opening: twice the delay, no second `Closed`.
    assert_eq!(
        link.on_failure(1_020.0, Failure::Network, 0.5),
        vec![Command::Disconnect]
    );
    assert_eq!(link.retry_at(), Some(3_020.0));
    link.on_tick(3_020.0, 0.5);
    link.on_failure(3_030.0, Failure::Network, 0.5);
    assert_eq!(link.retry_at(), Some(7_030.0));
    link.on_tick(7_030.0, 0.5);
    assert_eq!(link.on_open(7_040.0, None), vec![Command::Opened]);
    link.on_failure(8_000.0, Failure::Network, 0.5);
    assert_eq!(link.retry_at(), Some(9_000.0), "backoff reset by the open");
}

#[test]
fn backoff_is_capped_and_jittered() {
    let mut link = LiveLink::new(LiveOptions::default());
    link.start(0.0, true);
    let mut now = 0.0;
    for _ in 0..20 {
        link.on_failure(now, Failure::Network, 0.999);
        let wait = link.retry_at().unwrap() - now;
        assert!(wait <= 30_000.0, "capped: {wait}");
        now += wait;
        link.on_tick(now, 0.0);
    }
    link.on_failure(now, Failure::Network, 0.25);
    assert_eq!(link.retry_at(), Some(now + 7_500.0), "a quarter of the cap");
}

#[test]
fn a_refused_token_waits_the_longest_and_a_new_token_reconnects_at_once() {
    let mut link = LiveLink::new(options());
    link.start(0.0, true);
    assert_eq!(
        link.on_failure(5.0, Failure::Auth, 0.5),
        vec![Command::Disconnect]
    );
    assert_eq!(link.retry_at(), Some(30_005.0));
    assert!(matches!(
        link.reconnect_now(6.0)[..],
        [Command::Connect { .. }]
    ));
}

#[test]
fn a_goodbye_comes_back_after_the_first_step_of_the_backoff() {
    let mut link = open_link(0.0);
    for _ in 0..3 {
        link.on_failure(0.0, Failure::Network, 0.5);
        link.on_tick(link.retry_at().unwrap(), 0.5);
    }
    link.on_open(20_000.0, None);
    link.on_failure(20_000.0, Failure::Goodbye, 0.3);
    assert_eq!(
        link.retry_at(),
        Some(21_000.0),
        "the base delay, not the fourth step"
    );
}

#[test]
fn a_silent_connection_is_dead_after_the_heartbeat_grace() {
    let mut link = open_link(0.0);
    assert_eq!(link.next_wake(), Some(37_500.0));
    link.on_heartbeat(15_000.0);
    assert!(link.on_tick(37_500.0, 0.5).is_empty());
    let out = link.on_tick(52_500.0, 0.5);
    assert_eq!(out[0], Command::Disconnect);
    assert!(matches!(out[1], Command::Closed { .. }));
    assert_eq!(link.state(), LinkState::Closed);
}

#[test]
fn a_connection_slow_to_open_is_given_up() {
    let mut link = LiveLink::new(options());
    link.start(0.0, true);
    assert_eq!(link.on_tick(20_000.0, 0.5), vec![Command::Disconnect]);
    assert_eq!(link.state(), LinkState::Closed);
}

#[test]
fn offline_drops_the_connection_and_online_reconnects_at_once() {
    let mut link = open_link(0.0);
    assert_eq!(
        link.set_online(5.0, false),
        vec![
            Command::Disconnect,
            Command::Closed {
                reason: "offline".into(),
                retry_at: None
            }
        ]
    );
    assert!(link.on_tick(1e9, 0.5).iter().all(|c| *c == Command::Pull));
    assert!(matches!(
        link.set_online(6.0, true)[..],
        [Command::Connect { .. }]
    ));
}

#[test]
fn a_reconnection_says_which_cursor_was_pulled() {
    let mut link = open_link(0.0);
    link.on_poke(1.0, "c1.7");
    link.on_pull_done(2.0, PullOutcome::Done);
    link.on_failure(3.0, Failure::Network, 0.5);
    assert_eq!(
        link.on_tick(1_003.0, 0.5),
        vec![Command::Connect {
            last_event_id: Some(7)
        }]
    );
}

#[test]
fn a_failed_pull_is_retried_by_the_next_poke_even_for_the_same_cursor() {
    let mut link = open_link(0.0);
    link.on_poke(1.0, "c1.3");
    link.on_pull_done(2.0, PullOutcome::Failed);
    assert_eq!(link.on_poke(3.0, "c1.3"), vec![Command::Pull]);
}

#[test]
fn a_busy_pull_is_retried_shortly() {
    let mut link = open_link(0.0);
    link.on_poke(1.0, "c1.3");
    assert!(link.on_pull_done(2.0, PullOutcome::Busy).is_empty());
    assert_eq!(link.next_wake(), Some(252.0));
    assert_eq!(link.on_tick(252.0, 0.5), vec![Command::Pull]);
}

#[test]
fn the_safety_net_pulls_after_a_quiet_interval_connected_or_not() {
    let mut link = open_link(0.0);
    link.on_heartbeat(50_000.0);
    assert_eq!(link.on_tick(60_000.0, 0.5), vec![Command::Pull]);
    link.on_pull_done(60_100.0, PullOutcome::Done);
    link.set_online(60_200.0, false);
    assert_eq!(link.next_wake(), Some(120_100.0));
    assert_eq!(link.on_tick(120_100.0, 0.5), vec![Command::Pull]);
}

#[test]
fn stop_disconnects_and_nothing_follows() {
    let mut link = open_link(0.0);
    let out = link.stop();
    assert_eq!(out[0], Command::Disconnect);
    assert!(matches!(out[1], Command::Closed { .. }));
    assert_eq!(link.state(), LinkState::Off);
    assert!(link.on_poke(1.0, "c1.9").is_empty());
    assert!(link.on_tick(1e12, 0.5).is_empty());
    assert_eq!(link.next_wake(), None);
}

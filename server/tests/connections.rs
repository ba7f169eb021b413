//! Connection hardening (issue 16, item 1; issue 11, slow-loris): header,
//! body and idle timeouts, and the connection caps, against the real
//! binary over raw TCP. Nothing here depends on the database (SQLite).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

const SLACK: Duration = Duration::from_millis(2500);

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    c
}

/// Reads until the peer closes; returns what came and how long it took.
/// A read timeout (the server kept the connection open) fails the test.
fn read_until_closed(c: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "connection still open after {:?}: {e}; got {:?}",
                start.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

fn get_healthz(c: &mut TcpStream, addr: &str) {
    write!(c, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
}

/// Reads one answer with a Content-Length body from a kept-alive
/// connection.
fn read_one_answer(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).expect("answer");
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let s = Server::with_args(&["--header-timeout", "1s", "--idle-timeout", "60s"]);
    let mut c = connect(&s);
    let (_, took) = read_until_closed(&mut c);
    assert!(took < Duration::from_secs(1) + SLACK, "{took:?}");
}

#[test]
fn headers_trickled_a_line_at_a_time_are_cut_at_the_header_timeout() {
    let s = Server::with_args(&["--header-timeout", "1s", "--idle-timeout", "60s"]);
    let mut c = connect(&s);
    let start = Instant::now();
    write!(c, "POST /api/client/sync/pull HTTP/1.1\r\n").expect("send");
    // A header line every 200 ms: bytes keep moving, the headers never end.
    let mut closed = false;
    for i in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        if write!(c, "X-Slow-{i}: a\r\n").is_err() {
            closed = true;
            break;
        }
        c.set_read_timeout(Some(Duration::from_millis(1)))
            .expect("t");
        let mut buf = [0u8; 1];
        if matches!(c.read(&mut buf), Ok(0) | Ok(_)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "still reading headers after 10 s");
    assert!(
        start.elapsed() < Duration::from_secs(1) + SLACK,
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_body_trickled_byte_by_byte_is_answered_408_at_the_body_timeout() {
    let s = Server::with_args(&[
        "--body-timeout",
        "1s",
        "--header-timeout",
        "30s",
        "--idle-timeout",
        "60s",
    ]);
    let mut c = connect(&s);
    let addr = s.addr();
    write!(
        c,
        "POST /api/client/sync/pull HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        common::token("t")
    )
    .expect("send head");
    let start = Instant::now();
    let mut writer = c.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (answer, _) = read_until_closed(&mut c);
    let took = start.elapsed();
    let _ = trickle.join();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(took < Duration::from_secs(1) + SLACK, "{took:?}");
}

#[test]
fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let s = Server::with_args(&["--idle-timeout", "1s", "--header-timeout", "30s"]);
    // Silent from the start.
    let mut c = connect(&s);
    let (_, took) = read_until_closed(&mut c);
    assert!(took < Duration::from_secs(1) + SLACK, "{took:?}");
    // Kept alive after an answer.
    let mut c = connect(&s);
    get_healthz(&mut c, &s.addr());
    let answer = read_one_answer(&mut c);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (rest, took) = read_until_closed(&mut c);
    assert_eq!(rest, "");
    assert!(took < Duration::from_secs(1) + SLACK, "{took:?}");
}

#[test]
fn a_busy_connection_is_not_idle() {
    // Requests every 400 ms on one connection with a 1 s idle timeout: it
    // stays open.
    let s = Server::with_args(&["--idle-timeout", "1s", "--header-timeout", "30s"]);
    let mut c = connect(&s);
    for _ in 0..6 {
        get_healthz(&mut c, &s.addr());
        assert!(read_one_answer(&mut c).starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(400));
    }
}

#[test]
fn connections_over_the_total_cap_wait_for_a_free_slot() {
    let s = Server::with_args(&[
        "--max-connections",
        "2",
        "--idle-timeout",
        "30s",
        "--header-timeout",
        "30s",
    ]);
    let held: Vec<TcpStream> = (0..2).map(|_| connect(&s)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = connect(&s);
    get_healthz(&mut third, &s.addr());
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("t");
    let mut buf = [0u8; 64];
    let early = third.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
        "answered while two connections held both slots: {early:?}"
    );
    drop(held);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("t");
    assert!(read_one_answer(&mut third).starts_with("HTTP/1.1 200"));
}

#[test]
fn connections_over_the_per_peer_cap_are_closed() {
    let s = Server::with_args(&[
        "--max-connections-per-peer",
        "2",
        "--idle-timeout",
        "30s",
        "--header-timeout",
        "30s",
    ]);
    let _held: Vec<TcpStream> = (0..2).map(|_| connect(&s)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = connect(&s);
    let (answer, took) = read_until_closed(&mut third);
    assert_eq!(answer, "");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn shutdown_waits_for_in_flight_requests_at_most_the_shutdown_timeout() {
    let mut s = Server::with_args(&[
        "--shutdown-timeout",
        "1s",
        "--body-timeout",
        "60s",
        "--header-timeout",
        "30s",
    ]);
    let mut c = connect(&s);
    let addr = s.addr();
    // A request whose body never finishes arriving.
    write!(
        c,
        "POST /api/client/sync/pull HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        common::token("t")
    )
    .expect("send head");
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    loop {
        if let Some(exit) = s.child.try_wait().expect("wait") {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1) + SLACK,
            "still running {:?} after SIGTERM",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

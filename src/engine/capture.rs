//! Fetch capture's decisions (`captureFailedRequests` in a service worker):
//! which requests are taken over, how a request the network failed is
//! stored (its body byte for byte, kept as text when it is text so it reads
//! well in DevTools), and what the page is answered instead.

use crate::engine::task::{Body, Task};

/// Methods captured when the app names none: everything that writes.
pub const DEFAULT_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// The answer's header naming the queued task, so the page can tell a
/// queued request from the server's own 202.
pub const TASK_HEADER: &str = "Tidesync-Task";

/// Captured tasks are named `capture:<uuid>`.
pub const ID_PREFIX: &str = "capture:";

/// Why a `methods` entry is refused, if it is.
pub fn method_error(method: &str) -> Option<String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Some(format!("{method:?} is not an HTTP method"));
    }
    let upper = method.to_ascii_uppercase();
    (upper == "GET" || upper == "HEAD").then(|| {
        format!("{upper} cannot be captured: a read has no effect to replay later, and the page needs its answer now")
    })
}

/// Where the sync protocol's endpoints live (push, pull, verify): a
/// client's own pushes and pulls are never captured; they are retried by
/// the client that sent them.
pub const PROTOCOL_PATH: &str = "/api/client/sync/";

/// Whether a request with this method, fetch `mode` and URL is captured.
/// Navigations (a form posted as a page load) never are: the page expects a
/// document, not a 202.
pub fn captures(methods: &[String], method: &str, mode: &str, url: &str) -> bool {
    mode != "navigate"
        && !url.contains(PROTOCOL_PATH)
        && methods.iter().any(|m| m.eq_ignore_ascii_case(method))
}

/// Whether a request carrying this `Idempotency-Key` is the replay of a
/// queued task (sent by a page's client through the capturing worker): its
/// failure must reach that client as a failure, not become a second copy.
pub fn replays_task(tasks: &[Task], key: &str) -> bool {
    tasks.iter().any(|task| {
        let sent_key = task
            .request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
            .map_or(task.idempotency_key.as_str(), |(_, value)| value.as_str());
        sent_key == key
    })
}

/// Whether an absolute `url` starts with `prefix` at a path boundary or
/// anywhere inside the path (`/api/` matches `/api/notes`; `/api` matches
/// `/api?x` and `/api/notes` but not `/apiary`).
pub fn matches_prefix(url: &str, prefix: &str) -> bool {
    let Some(rest) = url.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
}

/// The body to store: none when empty; text when the content type says
/// text (JSON, forms, `text/*`) and the bytes are UTF-8 — sent back as the
/// very same bytes — and the bytes themselves otherwise (files, multipart).
pub fn stored_body(content_type: Option<&str>, bytes: Vec<u8>) -> Option<Body> {
    if bytes.is_empty() {
        return None;
    }
    let kind = content_type.unwrap_or("").to_ascii_lowercase();
    let textual = kind.starts_with("text/")
        || kind.contains("json")
        || kind.starts_with("application/x-www-form-urlencoded");
    if textual {
        match String::from_utf8(bytes) {
            Ok(text) => Some(Body::Text(text)),
            Err(error) => Some(Body::Bytes(error.into_bytes())),
        }
    } else {
        Some(Body::Bytes(bytes))
    }
}

/// The JSON body of the page's 202 answer.
pub fn queued_answer(task_id: &str) -> String {
    // Built by hand: serializing a `serde_json::Value` to text costs the
    // wasm a formatter it needs nowhere else.
    let mut answer = String::from("{\"queued\":true,\"taskId\":\"");
    for c in task_id.chars() {
        match c {
            '"' | '\\' => {
                answer.push('\\');
                answer.push(c);
            }
            c if c < ' ' => answer.push(' '),
            c => answer.push(c),
        }
    }
    answer.push_str("\"}");
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_refused_and_writes_accepted() {
        assert!(method_error("get").is_some());
        assert!(method_error("HEAD").is_some());
        assert!(method_error("PO ST").is_some());
        assert!(method_error("").is_some());
        assert_eq!(method_error("patch"), None);
    }

    #[test]
    fn navigations_are_never_captured() {
        let methods: Vec<String> = DEFAULT_METHODS.iter().map(|m| m.to_string()).collect();
        let url = "https://a.test/api/notes";
        assert!(captures(&methods, "post", "cors", url));
        assert!(captures(&methods, "DELETE", "same-origin", url));
        assert!(!captures(&methods, "POST", "navigate", url));
        assert!(!captures(&methods, "GET", "cors", url));
    }

    #[test]
    fn the_sync_protocol_is_never_captured() {
        let methods = vec!["POST".to_string()];
        for path in [
            tidesync_protocol::PUSH_PATH,
            tidesync_protocol::PULL_PATH,
            tidesync_protocol::PULL_PENDING_PATH,
            tidesync_protocol::VERIFY_PATH,
        ] {
            let url = format!("https://a.test/base{path}");
            assert!(!captures(&methods, "POST", "cors", &url), "{url}");
        }
    }

    #[test]
    fn a_replay_is_recognised_by_the_key_it_is_sent_with() {
        let task = |key: &str, header: Option<&str>| {
            let mut headers = std::collections::BTreeMap::new();
            if let Some(value) = header {
                headers.insert("idempotency-key".to_string(), value.to_string());
            }
            Task {
                id: "t".into(),
                kind: crate::engine::task::TaskKind::Request,
                priority: Default::default(),
                seq: 1,
                ordering_key: None,
                request: crate::engine::task::HttpRequest {
                    url: "/x".into(),
                    method: "POST".into(),
                    headers,
                    body: None,
                },
                revision: 1,
                idempotency_key: key.into(),
                retry_on_failure: true,
                attempts: 0,
                next_attempt_at: None,
                created_at: 0.0,
                errors: Vec::new(),
                dispatched: false,
                expires_at: None,
                depends_on: None,
            }
        };
        let queued = [task("k1", None), task("k2", Some("own"))];
        assert!(replays_task(&queued, "k1"));
        assert!(
            replays_task(&queued, "own"),
            "the stored header is what is sent"
        );
        assert!(!replays_task(&queued, "k2"));
        assert!(!replays_task(&queued, "new"));
    }

    #[test]
    fn prefixes_end_at_a_boundary() {
        assert!(matches_prefix(
            "https://a.test/api/notes",
            "https://a.test/api/"
        ));
        assert!(matches_prefix(
            "https://a.test/api/notes",
            "https://a.test/api"
        ));
        assert!(matches_prefix(
            "https://a.test/api?x=1",
            "https://a.test/api"
        ));
        assert!(!matches_prefix(
            "https://a.test/apiary",
            "https://a.test/api"
        ));
        assert!(!matches_prefix(
            "https://b.test/api/x",
            "https://a.test/api"
        ));
    }

    #[test]
    fn text_stays_text_and_files_stay_bytes() {
        assert_eq!(stored_body(Some("application/json"), Vec::new()), None);
        assert_eq!(
            stored_body(
                Some("application/json; charset=utf-8"),
                b"{\"a\":1}".to_vec()
            ),
            Some(Body::Text("{\"a\":1}".into()))
        );
        let multipart = b"--x\r\n\xff\xfe\r\n--x--".to_vec();
        assert_eq!(
            stored_body(Some("multipart/form-data; boundary=x"), multipart.clone()),
            Some(Body::Bytes(multipart))
        );
        // Claims text but is not UTF-8: kept as the bytes, never altered.
        assert_eq!(
            stored_body(Some("text/plain"), vec![0xff, 0x00]),
            Some(Body::Bytes(vec![0xff, 0x00]))
        );
        assert_eq!(
            stored_body(None, b"abc".to_vec()),
            Some(Body::Bytes(b"abc".to_vec()))
        );
    }

    #[test]
    fn the_answer_names_the_task() {
        for id in ["capture:1", "odd \"id\" \\ with\ttab"] {
            let answer: serde_json::Value = serde_json::from_str(&queued_answer(id)).expect("JSON");
            assert_eq!(answer["queued"], true);
            assert_eq!(answer["taskId"], id.replace('\t', " "));
        }
    }
}

//! Where the bearer token may go, for the outbox's requests and the
//! replicator's calls alike: only to the app's own origin (relative URLs)
//! and to the configured server, never to a third party, and never over an
//! `Authorization` header the app set itself.

use crate::engine::task::HttpRequest;
use std::collections::BTreeMap;

/// Whether the bearer token goes with a request to `url`.
pub fn carries_token(url: &str, server_url: Option<&str>) -> bool {
    // Read the URL as a browser resolves it: surrounding controls and
    // spaces trimmed, tabs and newlines dropped, `\` taken for `/`
    // (so `/\\evil.net` and `//evil.net` are other hosts, not paths).
    let url: String = url
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    is_relative(&url) || server_url.is_some_and(|base| is_under(&url, base))
}

/// Whether our token would go with this request: not when the app set its
/// own `Authorization` header, nor to another origin. A refusal the token
/// never reached cannot be fixed by a new token.
pub fn token_reaches(request: &HttpRequest, server_url: Option<&str>) -> bool {
    !has_header(&request.headers, "authorization") && carries_token(&request.url, server_url)
}

/// Adds `Authorization: Bearer <token>` where the token may go. Returns the
/// token it attached, if any.
pub fn authorize(
    request: &mut HttpRequest,
    token: Option<&str>,
    server_url: Option<&str>,
) -> Option<String> {
    let token = token?;
    if !token_reaches(request, server_url) {
        return None;
    }
    request
        .headers
        .insert("Authorization".into(), format!("Bearer {token}"));
    Some(token.to_owned())
}

pub fn has_header(headers: &BTreeMap<String, String>, name: &str) -> bool {
    headers.keys().any(|k| k.eq_ignore_ascii_case(name))
}

/// A URL without a scheme and not protocol-relative: it stays on the app's
/// own origin.
fn is_relative(url: &str) -> bool {
    if url.starts_with("//") {
        return false;
    }
    let scheme_end =
        url.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')));
    let has_scheme = matches!(scheme_end, Some(end) if end > 0
        && url[end..].starts_with(':')
        && url.starts_with(|c: char| c.is_ascii_alphabetic()));
    !has_scheme
}

/// Whether `url` is `base` or below it: the prefix must end at a boundary,
/// so `https://api.example.com.evil.net` and `https://api.example.com@evil.net`
/// are not under `https://api.example.com`.
fn is_under(url: &str, base: &str) -> bool {
    let Some(rest) = url.strip_prefix(base) else {
        return false;
    };
    base.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Option<&str> = Some("https://api.example.com");

    #[test]
    fn the_token_goes_to_relative_urls_and_the_server_only() {
        assert!(carries_token("/api/x", SERVER));
        assert!(carries_token("https://api.example.com/sync", SERVER));
        for elsewhere in [
            "//evil.net/x",
            "/\\evil.net/x",
            "https://api.example.com.evil.net/x",
            "https://api.example.com@evil.net/x",
            "https://other.org/x",
            " \thttps://other.org/x",
        ] {
            assert!(!carries_token(elsewhere, SERVER), "{elsewhere}");
        }
    }
}

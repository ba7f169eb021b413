//! Retry delays: `min(maxDelay, baseDelay · multiplier^(attempt-1))`, with
//! full jitter (a uniform draw in `[0, delay]`) when enabled, and the
//! server's `Retry-After` taking precedence when it sends one.

use crate::engine::options::RetryOptions;
use crate::engine::time::{from_iso, Millis};

/// The delay before the retry that follows failed attempt number `attempt`
/// (1 for the first attempt). `random` is a draw in `[0, 1)`.
pub fn retry_delay(options: &RetryOptions, attempt: u32, random: f64) -> Millis {
    let exponent = attempt.saturating_sub(1).min(64) as i32;
    let ceiling =
        (options.base_delay * options.backoff_multiplier.powi(exponent)).min(options.max_delay);
    if options.jitter {
        ceiling * random.clamp(0.0, 1.0)
    } else {
        ceiling
    }
}

/// Longest `Retry-After` honoured; a larger one is capped rather than
/// parking a task for days on a misconfigured server.
pub const MAX_RETRY_AFTER: Millis = 3_600_000.0;

/// Parses a `Retry-After` header: delay-seconds or an HTTP date (accepted in
/// ISO form too). Returns the delay from `now` in milliseconds.
pub fn parse_retry_after(value: &str, now: Millis) -> Option<Millis> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0).then(|| (seconds * 1000.0).min(MAX_RETRY_AFTER));
    }
    let at = from_iso(value).or_else(|| parse_http_date(value))?;
    Some((at - now).clamp(0.0, MAX_RETRY_AFTER))
}

/// IMF-fixdate, e.g. `Wed, 21 Oct 2015 07:28:00 GMT`.
fn parse_http_date(value: &str) -> Option<Millis> {
    let mut parts = value.split_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i32 = parts.next()?.parse().ok()?;
    let clock = parts.next()?;
    from_iso(&format!("{year:04}-{month:02}-{day:02}T{clock}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> RetryOptions {
        RetryOptions {
            jitter: false,
            ..RetryOptions::default()
        }
    }

    #[test]
    fn delays_grow_exponentially_and_stop_at_max_delay() {
        let o = no_jitter();
        let delays: Vec<_> = (1..=8).map(|a| retry_delay(&o, a, 0.5)).collect();
        assert_eq!(
            delays,
            vec![1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 60000.0, 60000.0]
        );
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling() {
        let o = RetryOptions::default();
        assert_eq!(retry_delay(&o, 3, 0.0), 0.0);
        assert_eq!(retry_delay(&o, 3, 0.5), 2000.0);
        assert!(retry_delay(&o, 3, 0.999_999) <= 4000.0);
        assert!(retry_delay(&o, 40, 0.999_999) <= o.max_delay);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("3", 0.0), Some(3000.0));
        assert_eq!(parse_retry_after("999999", 0.0), Some(MAX_RETRY_AFTER));
        let now = crate::engine::time::from_iso("2015-10-21T07:27:58Z").unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(2000.0)
        );
        assert_eq!(parse_retry_after("soon", 0.0), None);
    }
}

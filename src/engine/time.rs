//! Timestamps: milliseconds since the Unix epoch inside the engine, ISO-8601
//! strings (`2026-11-25T10:00:00.000Z`) wherever a person reads them
//! (IndexedDB in DevTools, events). Hand-written because the conversion is
//! twenty lines and a date crate would add tens of kilobytes to the wasm.

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = f64;

/// Formats epoch milliseconds as ISO-8601 UTC with millisecond precision.
///
/// ```
/// assert_eq!(tidesync::engine::time::to_iso(0.0), "1970-01-01T00:00:00.000Z");
/// ```
pub fn to_iso(ms: Millis) -> String {
    let ms = ms.max(0.0).floor() as i64;
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Parses the ISO-8601 UTC form written by [`to_iso`] (seconds fraction and
/// the trailing `Z` optional, `+00:00` accepted). Returns `None` otherwise.
pub fn from_iso(text: &str) -> Option<Millis> {
    let text = text.trim();
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .unwrap_or(text);
    let (date, clock) = text.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let mut c = clock.splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let m: i64 = c.next()?.parse().ok()?;
    let sec_text = c.next().unwrap_or("0");
    let (whole, frac) = sec_text.split_once('.').unwrap_or((sec_text, "0"));
    let s: i64 = whole.parse().ok()?;
    let frac_ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400_000 + h * 3_600_000 + m * 60_000 + s * 1000 + frac_ms) as f64)
}

// Howard Hinnant's civil calendar algorithms (public domain).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Serde helpers: store `Millis` as an ISO string, read either form back.
pub mod iso {
    use super::{from_iso, to_iso, Millis};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_iso(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(f64),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => {
                from_iso(&t).ok_or_else(|| D::Error::custom(format!("not an ISO-8601 date: {t}")))
            }
        }
    }

    /// The same for `Option<Millis>`.
    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&to_iso(*ms)),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Millis);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trips_across_leap_years_and_centuries() {
        for ms in [
            0.0,
            951_782_400_000.0,
            1_764_000_000_123.0,
            4_102_444_800_000.0,
        ] {
            assert_eq!(from_iso(&to_iso(ms)), Some(ms), "{}", to_iso(ms));
        }
        assert_eq!(to_iso(951_782_400_000.0), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn iso_parse_rejects_garbage() {
        assert_eq!(from_iso("yesterday"), None);
        assert_eq!(from_iso("2026-13-01T00:00:00Z"), None);
    }
}

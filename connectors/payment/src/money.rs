//! Amounts on the wire: decimal strings with two places ("12.30"), never
//! floats.

/// "12.30" from 1230.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

/// 1230 from "12.30", "12.3" or "12"; `None` for anything else (more than
/// two places, a sign other than a leading '-', an exponent, overflow).
pub fn parse_minor(text: &str) -> Option<i64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() || frac.len() > 2 || (body.contains('.') && frac.is_empty()) {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().ok()?
    };
    let v = whole.checked_mul(100)?.checked_add(frac)?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_and_junk_is_refused() {
        for m in [0, 1, 99, 100, 1230, 123_456_789, -5] {
            assert_eq!(parse_minor(&format_minor(m)), Some(m), "{m}");
        }
        assert_eq!(parse_minor("12.3"), Some(1230));
        assert_eq!(parse_minor("12"), Some(1200));
        for bad in [
            "",
            ".5",
            "1.",
            "1.234",
            "1e3",
            "+1",
            "1,00",
            " 1",
            "99999999999999999999",
        ] {
            assert_eq!(parse_minor(bad), None, "{bad:?}");
        }
    }
}

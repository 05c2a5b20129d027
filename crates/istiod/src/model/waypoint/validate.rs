//! Checks of the values a waypoint would refuse (header names and values, methods, paths,
//! regular expressions) and the Gateway API duration format. The waypoint refuses a whole
//! resource that holds one bad value, so istiod checks each value first and reports the
//! object it came from instead of sending it.

use http::{HeaderName, HeaderValue, Method};

/// A lower-cased HTTP header name, or why it is not one.
pub(super) fn header_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    HeaderName::from_bytes(lower.as_bytes())
        .map(|_| lower)
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

/// A header name a modifier may change: not `host` (a URL rewrite sets the host).
pub(super) fn modifiable_header(name: &str) -> Result<String, String> {
    let lower = header_name(name)?;
    if lower == "host" {
        return Err("the host header cannot be modified (use a URLRewrite hostname)".into());
    }
    Ok(lower)
}

pub(super) fn header_value(name: &str, value: &str) -> Result<(), String> {
    HeaderValue::try_from(value)
        .map(|_| ())
        .map_err(|_| format!("header {name}: {value:?} is not a valid header value"))
}

pub(super) fn method(m: &str) -> Result<String, String> {
    Method::from_bytes(m.as_bytes())
        .map(|m| m.as_str().to_string())
        .map_err(|_| format!("{m:?} is not an HTTP method"))
}

/// An absolute path (`/...`).
pub(super) fn path(p: &str) -> Result<(), String> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(format!("path {p:?} must start with /"))
    }
}

/// A regular expression as the waypoint compiles it (anchored at both ends).
pub(super) fn regex(r: &str) -> Result<(), String> {
    regex::Regex::new(&format!("^(?:{r})$"))
        .map(|_| ())
        .map_err(|e| {
            format!(
                "invalid regular expression {r:?}: {}",
                one_line(&e.to_string())
            )
        })
}

/// A Gateway API duration (`1h`, `30s`, `500ms`, `1m30s`: one to four number-unit pairs, units
/// `h`, `m`, `s`, `ms`) in milliseconds.
pub(super) fn duration_ms(v: &str) -> Result<u64, String> {
    let bad = || format!("{v:?} is not a duration (e.g. 10s, 500ms, 1m30s)");
    let mut rest = v.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += n * unit_ms;
        parts += 1;
        if parts > 4 {
            return Err(bad());
        }
    }
    Ok(total)
}

/// Istio's string forms (`*` any value, `prefix*`, `*suffix`, exact) as one anchored regular
/// expression accepting any of `values`.
pub(super) fn istio_forms_regex(values: &[String]) -> String {
    let alternatives: Vec<String> = values
        .iter()
        .map(|v| {
            if v == "*" {
                ".*".to_string()
            } else if let Some(prefix) = v.strip_suffix('*') {
                format!("{}.*", regex::escape(prefix))
            } else if let Some(suffix) = v.strip_prefix('*') {
                format!(".*{}", regex::escape(suffix))
            } else {
                regex::escape(v)
            }
        })
        .collect();
    alternatives.join("|")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("10s"), Ok(10_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(duration_ms("0s"), Ok(0));
        for bad in ["", "10", "s", "1.5s", "10x", "123456s", "1s1s1s1s1s", "-1s"] {
            assert!(duration_ms(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn headers_methods_and_regexes() {
        assert_eq!(header_name("X-User").as_deref(), Ok("x-user"));
        assert!(header_name("bad header").is_err());
        assert!(modifiable_header("Host").is_err());
        assert!(header_value("x", "ok value").is_ok());
        assert!(header_value("x", "line\nbreak").is_err());
        assert_eq!(method("GET").as_deref(), Ok("GET"));
        assert!(method("GE T").is_err());
        assert!(regex("/v[0-9]+/.*").is_ok());
        assert!(regex("(").is_err());
        assert!(path("/a").is_ok() && path("a").is_err());
    }

    #[test]
    fn istio_forms_become_one_regex() {
        let r = istio_forms_regex(&["a.b".into(), "pre*".into(), "*suf".into()]);
        assert_eq!(r, r"a\.b|pre.*|.*suf");
        let re = regex::Regex::new(&format!("^(?:{r})$")).expect("valid");
        assert!(re.is_match("a.b") && !re.is_match("axb"));
        assert!(re.is_match("prefix") && re.is_match("the-suf") && !re.is_match("other"));
        assert_eq!(istio_forms_regex(&["*".into()]), ".*");
    }
}

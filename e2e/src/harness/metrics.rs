//! Prometheus / OpenMetrics text exposition, parsed into samples a test can query.

use std::collections::BTreeMap;

/// Errors of metrics parsing.
#[derive(Debug, thiserror::Error)]
#[error("bad metrics line {line_no}: {reason}: {line:?}")]
pub struct MetricsError {
    pub line_no: usize,
    pub line: String,
    pub reason: String,
}

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether every `(label, value)` of `filter` matches.
    pub fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Result<Self, MetricsError> {
        let mut samples = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_line(line).map_err(|reason| MetricsError {
                line_no: i + 1,
                line: raw.to_string(),
                reason,
            })?);
        }
        Ok(Self { samples })
    }

    /// Samples of `name` whose labels match `filter`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.matches(filter))
    }

    /// Sum of the matching samples (0 when none).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.find(name, filter).map(|s| s.value).sum()
    }

    /// A readable listing of one family, with only the `keys` labels, for error messages.
    pub fn describe(&self, name: &str, keys: &[&str]) -> String {
        let lines: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| {
                let labels: Vec<String> = keys
                    .iter()
                    .filter_map(|k| s.labels.get(*k).map(|v| format!("{k}={v:?}")))
                    .collect();
                format!("  {}{{{}}} {}", s.name, labels.join(","), s.value)
            })
            .collect();
        if lines.is_empty() {
            format!("  (no {name} samples)")
        } else {
            lines.join("\n")
        }
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return Err("no value".into()),
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i + 1;
                    break;
                }
                None => return Err("unterminated label set".into()),
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} has no quoted value"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => return Err("dangling escape".into()),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label {key} value is not closed"));
            }
            labels.insert(key.trim().to_string(), value);
        }
        &body[end..]
    } else {
        rest
    };
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| "no value".to_string())?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP istio_tcp_connections_opened Connections opened.
# TYPE istio_tcp_connections_opened counter
istio_tcp_connections_opened_total{reporter="destination",source_principal="spiffe://cluster.local/ns/a/sa/client",destination_principal="spiffe://cluster.local/ns/a/sa/server",connection_security_policy="mutual_tls"} 3
istio_tcp_connections_opened_total{reporter="source",connection_security_policy="unknown",odd="a \"q\" \\ b\nc"} 1
up 1 1700000000
# EOF
"#;

    #[test]
    fn parses_labels_values_and_escapes() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(m.samples.len(), 3);
        let name = "istio_tcp_connections_opened_total";
        assert_eq!(
            m.sum(name, &[("connection_security_policy", "mutual_tls")]),
            3.0
        );
        assert_eq!(m.sum(name, &[]), 4.0);
        assert_eq!(m.sum(name, &[("reporter", "nobody")]), 0.0);
        let odd = m.find(name, &[("reporter", "source")]).next().unwrap();
        assert_eq!(odd.labels["odd"], "a \"q\" \\ b\nc");
        assert_eq!(m.sum("up", &[]), 1.0);
        assert!(
            m.describe(name, &["reporter"])
                .contains("reporter=\"destination\"")
        );
    }

    #[test]
    fn rejects_garbage_with_the_line() {
        let e = Metrics::parse("ok 1\nbroken{a=\"x} 2\n").unwrap_err();
        assert_eq!(e.line_no, 2);
        assert!(Metrics::parse("x{a=\"1\"} notanumber").is_err());
    }
}

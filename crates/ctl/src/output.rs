//! How results are printed: aligned tables for people (the default), JSON or YAML for programs.

use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot encode the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode the output as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

/// The `-o/--output` choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Rows under upper-case headers, columns separated by three spaces (as `kubectl get` prints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str("   ");
                }
                let _ = write!(text, "{cell:<w$}");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Encodes `value` as JSON (pretty, newline-terminated) or YAML.
pub fn encode<T: Serialize>(format: OutputFormat, value: &T) -> Result<String, OutputError> {
    match format {
        OutputFormat::Yaml => Ok(serde_saphyr::to_string(value)?),
        OutputFormat::Json | OutputFormat::Table => {
            let mut s = serde_json::to_string_pretty(value)?;
            s.push('\n');
            Ok(s)
        }
    }
}

/// Prints `value` as JSON or YAML, or, for the table format, the text `table` produces.
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<(), OutputError> {
    let text = match format {
        OutputFormat::Table => table(),
        other => encode(other, value)?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `2026-01-01T00:00:00Z` for a Unix time in seconds.
pub fn format_unix(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
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

/// `3d4h`, `5h12m`, `42s`, or `expired 2h ago` for a negative duration.
pub fn format_remaining(secs: i64) -> String {
    if secs < 0 {
        return format!("expired {} ago", format_span(secs.unsigned_abs()));
    }
    format_span(secs as u64)
}

fn format_span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims() {
        let mut t = Table::new(["NAME", "STATUS"]);
        t.row(["waypoint", "True"]);
        t.row(["a", ""]);
        assert_eq!(
            t.render(),
            "NAME       STATUS\nwaypoint   True\na\n",
            "{}",
            t.render()
        );
    }

    #[test]
    fn unix_times_format_as_utc() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn remaining_time_is_readable() {
        assert_eq!(format_remaining(42), "42s");
        assert_eq!(format_remaining(3 * 86_400 + 4 * 3600 + 5), "3d4h");
        assert_eq!(format_remaining(-7200), "expired 2h0m ago");
    }

    #[test]
    fn json_and_yaml_encode() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(
            encode(OutputFormat::Json, &v).expect("json"),
            "{\n  \"a\": 1\n}\n"
        );
        assert_eq!(encode(OutputFormat::Yaml, &v).expect("yaml"), "a: 1\n");
    }
}

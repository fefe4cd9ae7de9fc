//! Human output: aligned tables that stream (fixed column widths, long values cut with `…`),
//! times as RFC 3339 with a relative "in 12 min" / "3 h ago", and JSON arrays streamed item by
//! item.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use jitflow_core::time::Timestamp;

use crate::Error;

/// A table whose columns have fixed widths, so rows can be printed as they arrive (a list of a
/// million connections is never held in memory). The last column is never cut.
pub struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// A table with these headers and widths; prints the header line.
    pub fn new(out: &mut impl Write, columns: &[(&str, usize)]) -> Result<Table, Error> {
        let table = Table {
            widths: columns.iter().map(|(_, w)| *w).collect(),
        };
        let headers: Vec<String> = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        table.row(out, &headers)?;
        Ok(table)
    }

    /// Prints one row.
    pub fn row(&self, out: &mut impl Write, cells: &[String]) -> Result<(), Error> {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            match self.widths.get(i) {
                Some(&w) if !last => {
                    let cut = cut(cell, w);
                    line.push_str(&cut);
                    line.extend(std::iter::repeat_n(' ', w - cut.chars().count() + 2));
                }
                _ => line.push_str(cell),
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(Error::Output)
    }
}

/// `text` cut to `width` characters, with `…` when cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `delta_ms` (a time minus now) as "in 12 min", "3 h ago", "now".
pub fn relative(delta_ms: i64) -> String {
    let secs = delta_ms.unsigned_abs() / 1000;
    let amount = match secs {
        0..=9 => return "now".to_owned(),
        10..=59 => format!("{secs} s"),
        60..=5_999 => format!("{} min", secs / 60),
        6_000..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    };
    if delta_ms > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// An RFC 3339 time as the API sends it, shown as itself and relative to now
/// (`2026-11-23T09:30:00Z (in 12 min)`); `-` when absent; unchanged when it does not parse.
pub fn when(text: Option<&str>) -> String {
    match text {
        None => "-".to_owned(),
        Some(t) => match Timestamp::parse_rfc3339(t) {
            Ok(ts) => {
                let at = i64::try_from(ts.as_millis()).unwrap_or(i64::MAX);
                format!("{t} ({})", relative(at - now_millis()))
            }
            Err(_) => t.to_owned(),
        },
    }
}

/// A JSON array printed one item at a time.
pub struct JsonArray {
    first: bool,
}

impl JsonArray {
    /// Prints `[`.
    pub fn start(out: &mut impl Write) -> Result<JsonArray, Error> {
        write!(out, "[").map_err(Error::Output)?;
        Ok(JsonArray { first: true })
    }

    /// Prints one item.
    pub fn item(&mut self, out: &mut impl Write, item: &serde_json::Value) -> Result<(), Error> {
        let sep = if self.first { "\n" } else { ",\n" };
        self.first = false;
        write!(out, "{sep}{item}").map_err(Error::Output)
    }

    /// Prints `]`.
    pub fn end(self, out: &mut impl Write) -> Result<(), Error> {
        writeln!(out, "{}]", if self.first { "" } else { "\n" }).map_err(Error::Output)
    }
}

/// A list printed as it is read: an aligned table of some fields of each item, or (`--json`)
/// a JSON array of the whole items.
pub enum Listing {
    /// `--json`.
    Json(JsonArray),
    /// Human output.
    Table(Table),
}

impl Listing {
    /// Starts the list (the table's header, or `[`).
    pub fn start(
        out: &mut impl Write,
        json: bool,
        columns: &[(&str, usize)],
    ) -> Result<Listing, Error> {
        Ok(if json {
            Listing::Json(JsonArray::start(out)?)
        } else {
            Listing::Table(Table::new(out, columns)?)
        })
    }

    /// Prints one item: the whole of it, or the cells `cells` makes of it.
    pub fn item(
        &mut self,
        out: &mut impl Write,
        item: &serde_json::Value,
        cells: impl FnOnce(&serde_json::Value) -> Vec<String>,
    ) -> Result<(), Error> {
        match self {
            Listing::Json(a) => a.item(out, item),
            Listing::Table(t) => t.row(out, &cells(item)),
        }
    }

    /// Ends the list.
    pub fn end(self, out: &mut impl Write) -> Result<(), Error> {
        match self {
            Listing::Json(a) => a.end(out),
            Listing::Table(_) => Ok(()),
        }
    }
}

/// Prints `key` padded to `width`, then `value`: one line of a record.
pub fn field(out: &mut dyn Write, width: usize, key: &str, value: String) -> Result<(), Error> {
    writeln!(out, "{key:<width$}{value}").map_err(Error::Output)
}

/// Prints one JSON document, pretty.
pub fn json(out: &mut impl Write, value: &serde_json::Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Output(e.into()))?;
    writeln!(out, "{text}").map_err(Error::Output)
}

/// A JSON value as table text: strings bare, null as `-`.
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(12 * 60_000 + 5_000), "in 12 min");
        assert_eq!(relative(-3 * 3_600_000), "3 h ago");
        assert_eq!(relative(2_000), "now");
        assert_eq!(relative(-45_000), "45 s ago");
        assert_eq!(relative(3 * 86_400_000), "in 3 d");
    }

    #[test]
    fn rows_are_aligned_and_long_cells_cut() {
        let mut out = Vec::new();
        let t = Table::new(&mut out, &[("ID", 4), ("STATE", 6), ("NOTE", 0)]).unwrap();
        t.row(
            &mut out,
            &[
                "abcdefg".into(),
                "ACTIVE".into(),
                "last is never cut".into(),
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "ID    STATE   NOTE\nabc…  ACTIVE  last is never cut\n"
        );
    }

    #[test]
    fn json_arrays_stream_valid_json() {
        for n in 0..3 {
            let mut out = Vec::new();
            let mut a = JsonArray::start(&mut out).unwrap();
            for i in 0..n {
                a.item(&mut out, &serde_json::json!({"i": i})).unwrap();
            }
            a.end(&mut out).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v.as_array().unwrap().len(), n);
        }
    }
}

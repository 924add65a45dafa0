//! Query strings: `a=1&b=x%20y` decoded into name/value pairs
//! (`application/x-www-form-urlencoded` rules: `+` is a space, `%XX` a byte,
//! invalid UTF-8 replaced), and typed getters that collect every bad
//! parameter as a field error instead of stopping at the first.

use booking_domain::booking_saga::FieldError;
use std::str::FromStr;

/// Most parameters read from one query string; the rest are ignored.
const MAX_PARAMS: usize = 64;

/// The decoded parameters of a query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `raw` (the part after `?`, or nothing).
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .take(MAX_PARAMS)
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Query { pairs }
    }

    /// True when `name` is given with a blank value (`?status=`).
    pub fn is_blank(&self, name: &str) -> bool {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .is_some_and(|(_, v)| v.trim().is_empty())
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// Reads typed parameters, collecting one [`FieldError`] per bad one.
#[derive(Debug)]
pub struct Params<'q> {
    query: &'q Query,
    /// The problems found so far.
    pub errors: Vec<FieldError>,
}

impl<'q> Params<'q> {
    /// Reads from `query`.
    pub fn new(query: &'q Query) -> Self {
        Params {
            query,
            errors: Vec::new(),
        }
    }

    /// Records a problem with `field`.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// A required text parameter.
    pub fn required(&mut self, name: &str) -> Option<String> {
        match self.query.get(name) {
            Some(v) => Some(v.to_string()),
            None => {
                self.error(name, "is required");
                None
            }
        }
    }

    /// An optional parameter parsed with `FromStr`; `what` says what was expected.
    pub fn optional<T: FromStr>(&mut self, name: &str, what: &str) -> Option<T> {
        if self.query.is_blank(name) {
            // Given but empty: refused, not taken for the default.
            self.error(name, format!("expected {what}, got an empty value"));
            return None;
        }
        let raw = self.query.get(name)?;
        match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(name, format!("expected {what}, got {raw:?}"));
                None
            }
        }
    }

    /// A required parameter parsed with `FromStr`.
    pub fn parsed<T: FromStr>(&mut self, name: &str, what: &str) -> Option<T> {
        if self.query.get(name).is_none() {
            self.error(name, format!("is required ({what})"));
            return None;
        }
        self.optional(name, what)
    }
}

/// Percent-decodes one component (`+` as space).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_components() {
        assert_eq!(decode("S%C3%A3o+Paulo"), "São Paulo");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("a%20b"), "a b");
    }

    #[test]
    fn collects_every_bad_parameter() {
        let q = Query::parse(Some("passengers=x&date=2024-01-01&empty=&q=a+b"));
        assert_eq!(q.get("q"), Some("a b"));
        assert_eq!(q.get("empty"), None);
        let mut p = Params::new(&q);
        assert_eq!(p.parsed::<u32>("passengers", "a number"), None);
        assert_eq!(p.required("from"), None);
        assert!(p.parsed::<chrono::NaiveDate>("date", "a date").is_some());
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["passengers", "from"]);
    }
}

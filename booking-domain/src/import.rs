//! CSV import and export of the catalog in the reference data format.
//!
//! Two kinds of file. `airports.csv` has the columns `city,airport,code,country`
//! and, optionally, `utc_offset_minutes,latitude,longitude` (the reference file
//! has none; export writes them when the catalog knows them, so a round trip
//! keeps them). A flights file has a row-index column headed `index` or blank,
//! then `origin,destination,depart_time,depart_weekday,duration,arrival_time,
//! arrival_weekday,flight_no,airline_code,airline,economy_fare,business_fare,
//! first_fare`: times `HH:MM:SS`, weekday 0 = Monday, fares in whole units of
//! a currency the file does not name, so the importer is told it. A blank or
//! zero fare means the cabin is not sold. Columns are found by their header,
//! so their order does not matter.
//!
//! An import is validated completely before anything is applied. Each bad
//! row is reported with its line in the file (the header is line 1) and what
//! was wrong. With [`ImportMode::Reject`] one bad row rejects the whole import
//! and the catalog is untouched; with [`ImportMode::Skip`] the good rows are
//! applied and the bad ones reported. The good rows are applied in one sled
//! transaction, so an import is never half-stored.
//!
//! Rules worth knowing:
//! - Flights may use airports of the catalog or of the same import.
//! - An airport row replaces the airport with the same code; a time zone or
//!   location the row does not give is kept from the airport it replaces.
//! - Rows with the same flight number, route and weekday in one import get
//!   distinct ids (`-2`, `-3`, ... in row order); an id already in the
//!   catalog is replaced, so importing the same file twice changes nothing.
//! - Flight numbers mangled by a spreadsheet into scientific notation
//!   (`6.00E+155` for IndiGo's `6E155`, as in the reference data) are restored
//!   when the airline code says so (`6E`), and counted in
//!   [`ImportReport::repaired`].
//! - The reference data computes arrival as departure plus duration on the
//!   origin's clock, ignoring time zones, while the default dataset uses
//!   local times. Both are accepted: the arrival may differ from departure
//!   plus duration by at most 26 hours (the widest gap between time zones).
//!   Durations run from 1 minute to 48 hours.

#![warn(missing_docs)]

use crate::catalog::{
    add_seconds, flight_id, id_ordinal, week_seconds, Airport, Catalog, CatalogError, Flight,
    GeoPoint,
};
use crate::types::{Currency, FlightId, Money};
use chrono::{NaiveTime, Timelike, Weekday};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Rows between two progress reports, unless [`Import::progress_every`] says otherwise.
pub const DEFAULT_PROGRESS_EVERY: usize = 1000;

/// Longest flight duration accepted, in minutes (48 hours).
pub const MAX_DURATION_MINUTES: u32 = 48 * 60;

/// Largest gap accepted between the arrival given and departure plus
/// duration, in seconds: the widest difference between two time zones.
const MAX_CLOCK_GAP_SECONDS: i64 = 26 * 3600;

const AIRPORT_COLUMNS: [&str; 4] = ["city", "airport", "code", "country"];
const AIRPORT_OPTIONAL_COLUMNS: [&str; 3] = ["utc_offset_minutes", "latitude", "longitude"];
const FLIGHT_COLUMNS: [&str; 13] = [
    "origin",
    "destination",
    "depart_time",
    "depart_weekday",
    "duration",
    "arrival_time",
    "arrival_weekday",
    "flight_no",
    "airline_code",
    "airline",
    "economy_fare",
    "business_fare",
    "first_fare",
];

/// What to do when some rows are malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportMode {
    /// Import the good rows, report the bad ones.
    Skip,
    /// Import nothing if any row is bad.
    Reject,
}

/// Progress of an import's validation, reported every few rows and once at
/// the end (`rows_done == rows_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// Data rows checked so far, over all files of the import.
    pub rows_done: usize,
    /// Data rows in all files of the import.
    pub rows_total: usize,
}

/// A malformed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The file (or the label given for a reader).
    pub file: String,
    /// Line of the row in the file, 1-based; the header is line 1.
    pub line: u64,
    /// What was wrong with it.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.message)
    }
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows applied to the catalog (airports + flights).
    pub imported: usize,
    /// Airport rows applied.
    pub airports: usize,
    /// Flight rows applied.
    pub flights: usize,
    /// Malformed rows left out (only in [`ImportMode::Skip`]).
    pub skipped: usize,
    /// The malformed rows, in file order.
    pub errors: Vec<RowError>,
    /// Applied rows that replaced an airport or flight already in the catalog
    /// (or, for airports, an earlier row of the same import).
    pub replaced: usize,
    /// Flight rows whose flight number was restored from scientific notation.
    pub repaired: usize,
    /// Flight rows identical to an earlier row of the same import (apart from
    /// the index column): imported once, not counted in `imported`.
    pub duplicates: usize,
    /// Flight rows given an id suffix because an earlier row of the import
    /// had the same flight number, route and weekday.
    pub disambiguated: usize,
}

/// Why an import failed. Nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file (or label).
        file: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file's header lacks a required column, or the file is not CSV.
    #[error("{file}: {message}")]
    Header {
        /// The file (or label).
        file: String,
        /// What was wrong.
        message: String,
    },
    /// [`ImportMode::Reject`] and some rows were malformed.
    #[error("{}", rejected_message(*.rows, .errors))]
    Rejected {
        /// Data rows in the import.
        rows: usize,
        /// Every malformed row.
        errors: Vec<RowError>,
    },
    /// A directory holds no file to import.
    #[error("no airports.csv or *flights*.csv in {0}")]
    NothingToImport(PathBuf),
    /// Storing the import failed; nothing was stored.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

fn rejected_message(rows: usize, errors: &[RowError]) -> String {
    let first = errors.first().map(ToString::to_string).unwrap_or_default();
    format!(
        "import rejected, nothing imported: {} of {rows} rows are malformed; first: {first}",
        errors.len()
    )
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing failed.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Writing failed.
    #[error("cannot write CSV: {0}")]
    Io(#[from] std::io::Error),
    /// The flights file has no currency column, so one file cannot hold
    /// fares in two currencies.
    #[error(
        "fares are in {first} and {other} (flight {flight}): the flights CSV holds one currency"
    )]
    MixedCurrencies {
        /// The currency of the first fare seen.
        first: Currency,
        /// Another currency.
        other: Currency,
        /// A flight priced in `other`.
        flight: FlightId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Airports,
    Flights,
}

enum Input<'a> {
    Reader(Box<dyn Read + 'a>),
    Path(PathBuf),
}

struct Source<'a> {
    kind: Kind,
    label: String,
    input: Input<'a>,
}

/// An import of airports and flights files, applied all at once. Airports
/// are applied before flights whatever the order they were added in.
///
/// ```no_run
/// # use booking_domain::{catalog::Catalog, import::{Import, ImportMode}, Currency};
/// let mut catalog = Catalog::empty();
/// let report = Import::new(Currency::inr(), ImportMode::Reject)
///     .airports_file("data/airports.csv")
///     .flights_file("data/domestic_flights.csv")
///     .run(&mut catalog, &mut |p| eprintln!("{}/{}", p.rows_done, p.rows_total))?;
/// # Ok::<(), booking_domain::import::ImportError>(())
/// ```
pub struct Import<'a> {
    currency: Currency,
    mode: ImportMode,
    progress_every: usize,
    sources: Vec<Source<'a>>,
}

impl<'a> Import<'a> {
    /// An import whose fares are in `currency`, in `mode`.
    pub fn new(currency: Currency, mode: ImportMode) -> Self {
        Import {
            currency,
            mode,
            progress_every: DEFAULT_PROGRESS_EVERY,
            sources: Vec::new(),
        }
    }

    /// Every `airports.csv` and `*flights*.csv` file of `dir`, flights files
    /// in name order.
    pub fn from_dir(dir: &Path, currency: Currency, mode: ImportMode) -> Result<Self, ImportError> {
        let io = |source| ImportError::Io {
            file: dir.display().to_string(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let name = entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            names.push(name);
        }
        names.sort();
        let mut import = Import::new(currency, mode);
        if names.iter().any(|n| n == "airports.csv") {
            import = import.airports_file(dir.join("airports.csv"));
        }
        for name in names
            .iter()
            .filter(|n| n.ends_with(".csv") && n.contains("flights"))
        {
            import = import.flights_file(dir.join(name));
        }
        if import.sources.is_empty() {
            return Err(ImportError::NothingToImport(dir.to_path_buf()));
        }
        Ok(import)
    }

    /// Adds an airports file read from `reader`; `label` names it in errors.
    pub fn airports(mut self, label: impl Into<String>, reader: impl Read + 'a) -> Self {
        self.sources.push(Source {
            kind: Kind::Airports,
            label: label.into(),
            input: Input::Reader(Box::new(reader)),
        });
        self
    }

    /// Adds a flights file read from `reader`; `label` names it in errors.
    pub fn flights(mut self, label: impl Into<String>, reader: impl Read + 'a) -> Self {
        self.sources.push(Source {
            kind: Kind::Flights,
            label: label.into(),
            input: Input::Reader(Box::new(reader)),
        });
        self
    }

    /// Adds an airports file, opened when the import runs.
    pub fn airports_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        self.sources.push(Source {
            kind: Kind::Airports,
            label: path.display().to_string(),
            input: Input::Path(path),
        });
        self
    }

    /// Adds a flights file, opened when the import runs.
    pub fn flights_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        self.sources.push(Source {
            kind: Kind::Flights,
            label: path.display().to_string(),
            input: Input::Path(path),
        });
        self
    }

    /// Reports progress every `rows` rows (at least 1).
    pub fn progress_every(mut self, rows: usize) -> Self {
        self.progress_every = rows.max(1);
        self
    }

    /// Reads and validates every file, then applies the good rows to
    /// `catalog` (all of them in one step), or nothing if the mode is
    /// [`ImportMode::Reject`] and a row is bad.
    pub fn run(
        self,
        catalog: &mut Catalog,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport, ImportError> {
        let mut tables = Vec::new();
        for source in self.sources {
            let bytes = read_all(&source.label, source.input)?;
            tables.push((
                source.kind,
                parse_table(source.kind, &source.label, &bytes)?,
            ));
        }
        // Airports first, so flights of the same import can use them.
        tables.sort_by_key(|(kind, _)| *kind == Kind::Flights);
        let rows_total = tables.iter().map(|(_, t)| t.rows.len()).sum();
        let mut checker = Checker {
            catalog,
            currency: &self.currency,
            progress,
            every: self.progress_every,
            rows_done: 0,
            until_report: self.progress_every,
            rows_total,
            report: ImportReport::default(),
            airports: BTreeMap::new(),
            flights: Vec::new(),
            same_base: HashMap::new(),
        };
        for (kind, table) in &tables {
            match kind {
                Kind::Airports => checker.airports(table),
                Kind::Flights => checker.flights(table),
            }
        }
        (checker.progress)(ImportProgress {
            rows_done: rows_total,
            rows_total,
        });
        let Checker {
            mut report,
            airports,
            flights,
            ..
        } = checker;
        if !report.errors.is_empty() && self.mode == ImportMode::Reject {
            tracing::warn!(
                bad_rows = report.errors.len(),
                rows = rows_total,
                "import rejected"
            );
            return Err(ImportError::Rejected {
                rows: rows_total,
                errors: report.errors,
            });
        }
        let airports: Vec<Airport> = airports.into_values().collect();
        report.replaced += airports
            .iter()
            .filter(|a| catalog.airport(&a.code).is_some())
            .count();
        report.replaced += flights
            .iter()
            .filter(|f| catalog.flight(&f.id).is_some())
            .count();
        report.airports = airports.len();
        report.flights = flights.len();
        report.imported = report.airports + report.flights;
        report.skipped = report.errors.len();
        catalog.apply(airports, flights)?;
        tracing::info!(
            imported = report.imported,
            skipped = report.skipped,
            replaced = report.replaced,
            "import applied"
        );
        Ok(report)
    }
}

/// Imports one airports file from `reader`. See [`Import`].
pub fn import_airports<R: Read>(
    catalog: &mut Catalog,
    reader: R,
    mode: ImportMode,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImportReport, ImportError> {
    // An airports file holds no fares, so the currency is never used.
    Import::new(Currency::usd(), mode)
        .airports("airports.csv", reader)
        .run(catalog, progress)
}

/// Imports one flights file from `reader`, its fares in `currency`. See [`Import`].
pub fn import_flights<R: Read>(
    catalog: &mut Catalog,
    reader: R,
    currency: Currency,
    mode: ImportMode,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImportReport, ImportError> {
    Import::new(currency, mode)
        .flights("flights.csv", reader)
        .run(catalog, progress)
}

fn read_all(label: &str, input: Input<'_>) -> Result<Vec<u8>, ImportError> {
    let io = |source| ImportError::Io {
        file: label.to_string(),
        source,
    };
    let mut bytes = Vec::new();
    match input {
        Input::Reader(mut reader) => reader.read_to_end(&mut bytes).map_err(io)?,
        Input::Path(path) => std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io)?,
    };
    Ok(bytes)
}

/// A parsed CSV file: column positions by name and the data rows.
struct Table {
    label: String,
    columns: HashMap<&'static str, usize>,
    width: usize,
    rows: Vec<Row>,
}

struct Row {
    line: u64,
    fields: Result<Vec<String>, String>,
}

impl Table {
    /// The row's value in `column`, or "" if the file has no such column.
    fn field<'r>(&self, fields: &'r [String], column: &str) -> &'r str {
        self.columns
            .get(column)
            .and_then(|i| fields.get(*i))
            .map_or("", String::as_str)
    }
}

fn parse_table(kind: Kind, label: &str, bytes: &[u8]) -> Result<Table, ImportError> {
    let header_error = |message: String| ImportError::Header {
        file: label.to_string(),
        message,
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let headers = reader
        .byte_headers()
        .map_err(|e| header_error(format!("not CSV: {e}")))?
        .clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase())
        .collect();
    let (required, optional): (&[&'static str], &[&'static str]) = match kind {
        Kind::Airports => (&AIRPORT_COLUMNS, &AIRPORT_OPTIONAL_COLUMNS),
        Kind::Flights => (&FLIGHT_COLUMNS, &[]),
    };
    let mut columns = HashMap::new();
    for column in required.iter().chain(optional) {
        if let Some(i) = names.iter().position(|n| n == column) {
            columns.insert(*column, i);
        }
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| !columns.contains_key(c))
        .collect();
    if !missing.is_empty() {
        let what = if kind == Kind::Airports {
            "airports"
        } else {
            "flights"
        };
        return Err(header_error(format!(
            "not a reference {what} file: header lacks column(s) {}",
            missing.join(", ")
        )));
    }
    for (i, name) in names.iter().enumerate() {
        let known = columns.values().any(|c| *c == i)
            || (kind == Kind::Flights && i == 0 && (name.is_empty() || name == "index"));
        if !known {
            tracing::debug!(file = label, column = %name, "ignoring unknown column");
        }
    }
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let fields = record
                    .iter()
                    .map(|f| {
                        std::str::from_utf8(f)
                            .map(|s| s.trim().to_string())
                            .map_err(|_| "not valid UTF-8".to_string())
                    })
                    .collect::<Result<Vec<_>, _>>();
                rows.push(Row { line, fields });
            }
            Err(e) => {
                // Reading from memory, only malformed CSV gets here; what
                // follows cannot be trusted, so it ends the file.
                let line = e.position().map_or(0, |p| p.line());
                rows.push(Row {
                    line,
                    fields: Err(format!("malformed CSV: {e}")),
                });
                break;
            }
        }
    }
    Ok(Table {
        label: label.to_string(),
        columns,
        width: names.len(),
        rows,
    })
}

/// Validates rows and collects what to apply.
struct Checker<'c> {
    catalog: &'c Catalog,
    currency: &'c Currency,
    progress: &'c mut dyn FnMut(ImportProgress),
    every: usize,
    rows_done: usize,
    /// Rows left before the next progress report.
    until_report: usize,
    rows_total: usize,
    report: ImportReport,
    airports: BTreeMap<String, Airport>,
    flights: Vec<Flight>,
    /// Positions in `flights` of the rows with each base id.
    same_base: HashMap<FlightId, Vec<usize>>,
}

impl Checker<'_> {
    fn tick(&mut self) {
        self.rows_done += 1;
        self.until_report -= 1;
        if self.until_report == 0 {
            self.until_report = self.every;
            if self.rows_done < self.rows_total {
                (self.progress)(ImportProgress {
                    rows_done: self.rows_done,
                    rows_total: self.rows_total,
                });
            }
        }
    }

    fn error(&mut self, table: &Table, line: u64, message: String) {
        self.report.errors.push(RowError {
            file: table.label.clone(),
            line,
            message,
        });
    }

    /// The row's fields, or an error if it cannot be read or has the wrong
    /// number of fields.
    fn fields<'t>(&mut self, table: &Table, row: &'t Row) -> Option<&'t [String]> {
        match &row.fields {
            Err(message) => {
                self.error(table, row.line, message.clone());
                None
            }
            Ok(fields) if fields.len() != table.width => {
                self.error(
                    table,
                    row.line,
                    format!("expected {} fields, found {}", table.width, fields.len()),
                );
                None
            }
            Ok(fields) => Some(fields),
        }
    }

    fn airports(&mut self, table: &Table) {
        for row in &table.rows {
            self.tick();
            let Some(fields) = self.fields(table, row) else {
                continue;
            };
            match parse_airport(table, fields) {
                Ok(mut airport) => {
                    let previous = self
                        .airports
                        .get(&airport.code)
                        .or_else(|| self.catalog.airport(&airport.code));
                    if let Some(previous) = previous {
                        airport.utc_offset_minutes =
                            airport.utc_offset_minutes.or(previous.utc_offset_minutes);
                        airport.location = airport.location.or(previous.location);
                    }
                    if let Some(old) = self.airports.insert(airport.code.clone(), airport) {
                        // The earlier row of this import is replaced: count it
                        // here, as it will not be counted against the catalog.
                        if self.catalog.airport(&old.code).is_none() {
                            self.report.replaced += 1;
                        }
                    }
                }
                Err(problems) => self.error(table, row.line, problems.join("; ")),
            }
        }
    }

    fn flights(&mut self, table: &Table) {
        for row in &table.rows {
            self.tick();
            let Some(fields) = self.fields(table, row) else {
                continue;
            };
            let known = |code: &str| {
                self.airports.contains_key(code) || self.catalog.airport(code).is_some()
            };
            match parse_flight(table, fields, self.currency, &known) {
                Ok((mut flight, repaired)) => {
                    let earlier = self.same_base.entry(flight.id.clone()).or_default();
                    let duplicate = earlier.iter().any(|&i| {
                        self.flights.get(i).is_some_and(|f| {
                            Flight {
                                id: f.id.clone(),
                                ..flight.clone()
                            } == *f
                        })
                    });
                    if duplicate {
                        self.report.duplicates += 1;
                        continue;
                    }
                    let ordinal = u32::try_from(earlier.len()).unwrap_or(u32::MAX);
                    if ordinal > 0 {
                        flight.id = flight_id(
                            &flight.flight_no,
                            &flight.origin,
                            &flight.destination,
                            flight.weekday,
                            ordinal,
                        );
                        self.report.disambiguated += 1;
                    }
                    earlier.push(self.flights.len());
                    if repaired {
                        self.report.repaired += 1;
                    }
                    self.flights.push(flight);
                }
                Err(problems) => self.error(table, row.line, problems.join("; ")),
            }
        }
    }
}

fn parse_airport(table: &Table, fields: &[String]) -> Result<Airport, Vec<String>> {
    let mut problems = Vec::new();
    let get = |c: &str| table.field(fields, c);
    let code = airport_code("code", get("code"), &mut problems);
    let mut text = |column: &str| {
        let value = get(column);
        if value.is_empty() {
            problems.push(format!("{column} is empty"));
        }
        value.to_string()
    };
    let city = text("city");
    let name = text("airport");
    let country = text("country");
    let offset = match get("utc_offset_minutes") {
        "" => None,
        s => match s.parse::<i32>() {
            Ok(m) if (-720..=840).contains(&m) => Some(m),
            _ => {
                problems.push(format!(
                    "utc_offset_minutes {s:?} is not a number of minutes from -720 to 840"
                ));
                None
            }
        },
    };
    let mut coordinate = |column: &str, limit: f64| match get(column) {
        "" => None,
        s => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v.abs() <= limit => Some(v),
            _ => {
                problems.push(format!(
                    "{column} {s:?} is not a number from -{limit} to {limit}"
                ));
                None
            }
        },
    };
    let latitude = coordinate("latitude", 90.0);
    let longitude = coordinate("longitude", 180.0);
    let location = match (latitude, longitude) {
        (Some(latitude), Some(longitude)) => Some(GeoPoint {
            latitude,
            longitude,
        }),
        (None, None) => None,
        _ => {
            if problems.is_empty() {
                problems.push("latitude and longitude must be given together".into());
            }
            None
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Airport {
        code,
        city,
        name,
        country,
        utc_offset_minutes: offset,
        location,
    })
}

/// Parses and checks one flight row. Returns the flight (with its base id)
/// and whether its flight number was repaired.
fn parse_flight(
    table: &Table,
    fields: &[String],
    currency: &Currency,
    known_airport: &dyn Fn(&str) -> bool,
) -> Result<(Flight, bool), Vec<String>> {
    let mut problems = Vec::new();
    let get = |c: &str| table.field(fields, c);
    let origin = airport_code("origin", get("origin"), &mut problems);
    let destination = airport_code("destination", get("destination"), &mut problems);
    for (column, code) in [("origin", &origin), ("destination", &destination)] {
        if !code.is_empty() && !known_airport(code) {
            problems.push(format!("{column} {code} is not a known airport"));
        }
    }
    if !origin.is_empty() && origin == destination {
        problems.push(format!("origin and destination are both {origin}"));
    }
    let departure = parse_time("depart_time", get("depart_time"), &mut problems);
    let weekday = parse_weekday("depart_weekday", get("depart_weekday"), &mut problems);
    let duration = parse_duration(get("duration"), &mut problems);
    let arrival = parse_time("arrival_time", get("arrival_time"), &mut problems);
    let arrival_weekday = parse_weekday("arrival_weekday", get("arrival_weekday"), &mut problems);

    let airline_code = get("airline_code").to_ascii_uppercase();
    if !(2..=3).contains(&airline_code.len())
        || !airline_code.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        problems.push(format!(
            "airline_code {airline_code:?} is not 2 or 3 letters or digits"
        ));
    }
    let airline = get("airline").to_string();
    if airline.is_empty() {
        problems.push("airline is empty".into());
    }
    let raw_flight_no = get("flight_no");
    let repaired = repair_flight_no(raw_flight_no, &airline_code);
    let flight_no = repaired
        .clone()
        .unwrap_or_else(|| raw_flight_no.to_ascii_uppercase());
    if !(2..=8).contains(&flight_no.len()) || !flight_no.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        problems.push(format!(
            "flight_no {raw_flight_no:?} is not 2 to 8 letters or digits"
        ));
    }

    let economy = parse_fare("economy_fare", get("economy_fare"), currency, &mut problems);
    let business = parse_fare(
        "business_fare",
        get("business_fare"),
        currency,
        &mut problems,
    );
    let first = parse_fare("first_fare", get("first_fare"), currency, &mut problems);

    let (Some(departure), Some(weekday), Some(duration), Some(arrival), Some(arrival_weekday)) =
        (departure, weekday, duration, arrival, arrival_weekday)
    else {
        return Err(problems);
    };
    if problems.is_empty() && economy.is_none() && business.is_none() && first.is_none() {
        problems.push("no cabin is sold: every fare is blank or zero".into());
    }
    // Arrival minus (departure + duration), brought into (-half week, half week].
    let gap = (week_seconds(arrival_weekday, arrival)
        - week_seconds(weekday, departure)
        - i64::from(duration) * 60)
        .rem_euclid(7 * 86_400);
    let gap = if gap > 7 * 43_200 {
        gap - 7 * 86_400
    } else {
        gap
    };
    if gap.abs() > MAX_CLOCK_GAP_SECONDS {
        let (expected_day, expected) = add_seconds(weekday, departure, i64::from(duration) * 60);
        problems.push(format!(
            "arrival {} {} is {} hours away from departure plus duration ({} {}): more than any time zone difference",
            arrival_weekday.num_days_from_monday(),
            arrival.format("%H:%M:%S"),
            gap / 3600,
            expected_day.num_days_from_monday(),
            expected.format("%H:%M:%S"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let id = flight_id(&flight_no, &origin, &destination, weekday, 0);
    Ok((
        Flight {
            id,
            flight_no,
            airline_code,
            airline,
            origin,
            destination,
            weekday,
            departure,
            arrival,
            arrival_weekday,
            duration_minutes: duration,
            economy,
            business,
            first,
        },
        repaired.is_some(),
    ))
}

fn airport_code(column: &str, value: &str, problems: &mut Vec<String>) -> String {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
        value.to_ascii_uppercase()
    } else {
        problems.push(format!(
            "{column} {value:?} is not a three-letter airport code"
        ));
        String::new()
    }
}

/// `HH:MM:SS` or `HH:MM`.
fn parse_time(column: &str, value: &str, problems: &mut Vec<String>) -> Option<NaiveTime> {
    let parsed = NaiveTime::parse_from_str(value, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(value, "%H:%M"));
    match parsed {
        // A leap second would not round-trip through our arithmetic.
        Ok(t) if t.nanosecond() == 0 => Some(t),
        _ => {
            problems.push(format!("{column} {value:?} is not a time HH:MM:SS"));
            None
        }
    }
}

fn parse_weekday(column: &str, value: &str, problems: &mut Vec<String>) -> Option<Weekday> {
    match value
        .parse::<u8>()
        .ok()
        .and_then(|d| Weekday::try_from(d).ok())
    {
        Some(day) => Some(day),
        None => {
            problems.push(format!(
                "{column} {value:?} is not a weekday 0 (Monday) to 6 (Sunday)"
            ));
            None
        }
    }
}

/// `HH:MM:SS` or `HH:MM` with hours possibly above 23; whole minutes only.
fn parse_duration(value: &str, problems: &mut Vec<String>) -> Option<u32> {
    let parts: Vec<&str> = value.split(':').collect();
    let numbers: Option<Vec<u32>> = parts
        .iter()
        .map(|p| {
            if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            }
        })
        .collect();
    let minutes = match numbers.as_deref() {
        Some([h, m]) if *m < 60 => Some(h * 60 + m),
        Some([h, m, 0]) if *m < 60 => Some(h * 60 + m),
        Some([_, m, s]) if *m < 60 && *s < 60 => {
            problems.push(format!(
                "duration {value:?} is not a whole number of minutes"
            ));
            return None;
        }
        _ => None,
    };
    match minutes {
        Some(m) if (1..=MAX_DURATION_MINUTES).contains(&m) => Some(m),
        Some(_) => {
            problems.push(format!("duration {value:?} is not between 00:01 and 48:00"));
            None
        }
        None => {
            problems.push(format!("duration {value:?} is not a duration HH:MM:SS"));
            None
        }
    }
}

/// A fare in whole units with at most two decimals; blank or zero is `None`.
fn parse_fare(
    column: &str,
    value: &str,
    currency: &Currency,
    problems: &mut Vec<String>,
) -> Option<Money> {
    if value.is_empty() {
        return None;
    }
    let (whole, cents) = match value.split_once('.') {
        Some((w, c)) => (w, c),
        None => (value, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let minor = if !whole.is_empty()
        && whole.len() <= 15
        && digits(whole)
        && cents.len() <= 2
        && digits(cents)
    {
        let whole: i64 = whole.parse().unwrap_or(0);
        let cents: i64 = format!("{cents:0<2}").parse().unwrap_or(0);
        Some(whole * 100 + cents)
    } else {
        None
    };
    match minor {
        Some(0) => None,
        Some(minor) => Some(Money::new(minor, currency.clone())),
        None => {
            problems.push(format!(
                "{column} {value:?} is not an amount (whole units, at most two decimals, not negative)"
            ));
            None
        }
    }
}

/// Restores a flight number that a spreadsheet turned into scientific
/// notation: `6.00E+155` with airline code `6E` was `6E155`.
fn repair_flight_no(value: &str, airline_code: &str) -> Option<String> {
    let (mantissa, exponent) = value.split_once(['E', 'e'])?;
    let exponent = exponent.strip_prefix('+')?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let plausible = int.len() == 1
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b == b'0')
        && !exponent.is_empty()
        && exponent.bytes().all(|b| b.is_ascii_digit())
        && airline_code.eq_ignore_ascii_case(&format!("{int}E"));
    plausible.then(|| format!("{}{exponent}", airline_code.to_ascii_uppercase()))
}

/// Writes the catalog's airports in the reference format, ordered by code,
/// with the optional `utc_offset_minutes,latitude,longitude` columns when
/// any airport has them. Returns the number of rows written.
pub fn export_airports<W: Write>(catalog: &Catalog, writer: W) -> Result<usize, ExportError> {
    let extended = catalog
        .airports()
        .any(|a| a.utc_offset_minutes.is_some() || a.location.is_some());
    let mut w = csv::Writer::from_writer(writer);
    let mut header: Vec<&str> = AIRPORT_COLUMNS.to_vec();
    if extended {
        header.extend(AIRPORT_OPTIONAL_COLUMNS);
    }
    w.write_record(&header)?;
    let mut rows = 0;
    for a in catalog.airports() {
        let mut record = vec![
            a.city.clone(),
            a.name.clone(),
            a.code.clone(),
            a.country.clone(),
        ];
        if extended {
            record.push(
                a.utc_offset_minutes
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            );
            record.push(
                a.location
                    .map(|l| l.latitude.to_string())
                    .unwrap_or_default(),
            );
            record.push(
                a.location
                    .map(|l| l.longitude.to_string())
                    .unwrap_or_default(),
            );
        }
        w.write_record(&record)?;
        rows += 1;
    }
    w.flush()?;
    Ok(rows)
}

/// Writes the catalog's flights in the reference format (header `index`,
/// fares in whole units or with two decimals when not whole, blank for a
/// cabin not sold), ordered by route, weekday, flight number and id suffix,
/// so that importing the file again gives the same ids. Returns the number
/// of rows written. Fails if fares are in more than one currency.
pub fn export_flights<W: Write>(catalog: &Catalog, writer: W) -> Result<usize, ExportError> {
    let mut currency: Option<(&Currency, &FlightId)> = None;
    for flight in catalog.flights() {
        for money in [&flight.economy, &flight.business, &flight.first]
            .into_iter()
            .flatten()
        {
            match currency {
                None => currency = Some((&money.currency, &flight.id)),
                Some((first, _)) if *first != money.currency => {
                    return Err(ExportError::MixedCurrencies {
                        first: first.clone(),
                        other: money.currency.clone(),
                        flight: flight.id.clone(),
                    })
                }
                Some(_) => {}
            }
        }
    }
    let mut flights: Vec<&Flight> = catalog.flights().collect();
    flights.sort_by(|a, b| {
        (
            &a.origin,
            &a.destination,
            a.weekday.num_days_from_monday(),
            &a.flight_no,
            id_ordinal(a),
            &a.id,
        )
            .cmp(&(
                &b.origin,
                &b.destination,
                b.weekday.num_days_from_monday(),
                &b.flight_no,
                id_ordinal(b),
                &b.id,
            ))
    });
    let mut w = csv::Writer::from_writer(writer);
    let mut header = vec!["index"];
    header.extend(FLIGHT_COLUMNS);
    w.write_record(&header)?;
    for (index, f) in flights.iter().enumerate() {
        let amount = |m: &Option<Money>| m.as_ref().map(format_amount).unwrap_or_default();
        w.write_record([
            index.to_string(),
            f.origin.clone(),
            f.destination.clone(),
            f.departure.format("%H:%M:%S").to_string(),
            f.weekday.num_days_from_monday().to_string(),
            format!(
                "{:02}:{:02}:00",
                f.duration_minutes / 60,
                f.duration_minutes % 60
            ),
            f.arrival.format("%H:%M:%S").to_string(),
            f.arrival_weekday.num_days_from_monday().to_string(),
            f.flight_no.clone(),
            f.airline_code.clone(),
            f.airline.clone(),
            amount(&f.economy),
            amount(&f.business),
            amount(&f.first),
        ])?;
    }
    w.flush()?;
    Ok(flights.len())
}

fn format_amount(m: &Money) -> String {
    if m.minor % 100 == 0 {
        (m.minor / 100).to_string()
    } else {
        format!("{}.{:02}", m.minor / 100, m.minor % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_only_spreadsheet_flight_numbers() {
        assert_eq!(
            repair_flight_no("6.00E+155", "6E").as_deref(),
            Some("6E155")
        );
        assert_eq!(repair_flight_no("6.00E+12", "6e").as_deref(), Some("6E12"));
        assert_eq!(repair_flight_no("6E155", "6E"), None);
        assert_eq!(repair_flight_no("6.00E+155", "AI"), None);
        assert_eq!(repair_flight_no("6.10E+155", "6E"), None);
    }

    #[test]
    fn fares_parse_in_minor_units() {
        let mut p = Vec::new();
        let inr = Currency::inr();
        assert_eq!(
            parse_fare("f", "4589", &inr, &mut p),
            Some(Money::new(458_900, inr.clone()))
        );
        assert_eq!(
            parse_fare("f", "12.5", &inr, &mut p),
            Some(Money::new(1250, inr.clone()))
        );
        assert_eq!(parse_fare("f", "0", &inr, &mut p), None);
        assert_eq!(parse_fare("f", "0.00", &inr, &mut p), None);
        assert_eq!(parse_fare("f", "", &inr, &mut p), None);
        assert!(p.is_empty());
        for bad in ["-5", "1.234", "abc", "1e3", "4,589", ".5"] {
            assert_eq!(parse_fare("f", bad, &inr, &mut p), None, "{bad}");
        }
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn durations_parse() {
        let mut p = Vec::new();
        assert_eq!(parse_duration("02:10:00", &mut p), Some(130));
        assert_eq!(parse_duration("26:05", &mut p), Some(1565));
        assert!(p.is_empty());
        for bad in ["00:00:00", "49:00:00", "02:10:30", "2h", "02:60:00", ""] {
            assert_eq!(parse_duration(bad, &mut p), None, "{bad}");
        }
        assert_eq!(p.len(), 6);
    }
}

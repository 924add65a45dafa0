//! The flight catalog: airports, a weekly schedule of flights, and search.
//!
//! [`Catalog`] keeps airports and flights in memory, indexed by airport code,
//! by [`FlightId`] and by (origin, destination, weekday). Opened on a
//! `sled::Db` it mirrors every change into the trees `catalog_airports`,
//! `catalog_flights` and `catalog_meta`, all three written in one sled
//! transaction so a change is either wholly stored or not at all. A store that
//! has never held a catalog is seeded with the built-in default dataset
//! ([`Catalog::default_dataset`]), so a first start needs no setup.
//!
//! Schedules are weekly: a [`Flight`] leaves on one weekday at a local time
//! and arrives at a local time of the destination, possibly on another
//! weekday. A search for a date looks at the flights of that date's weekday.
//!
//! Flight ids have the form `{flight_no}-{origin}{destination}-{weekday}`,
//! weekday 0 = Monday, e.g. `AI101-DELBOM-2`. They contain only ASCII letters,
//! digits and `-`, so they are safe in URLs and sled keys. When one import
//! holds several rows with the same flight number, route and weekday (the
//! reference data does: the same departure listed twice with different
//! fares), the second gets the suffix `-2`, the third `-3`, and so on, in the
//! order of the rows; a later import with the same id replaces the flight.

#![warn(missing_docs)]

#[path = "default_data.rs"]
mod default_data;

use crate::types::{Cabin, FlightId, Money};
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Timelike, Weekday};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Version of the records this module writes to sled. A record of another
/// version is refused with [`CatalogError::UnsupportedFormat`].
const FORMAT_VERSION: u32 = 1;
const AIRPORTS_TREE: &str = "catalog_airports";
const FLIGHTS_TREE: &str = "catalog_flights";
const META_TREE: &str = "catalog_meta";
/// Present in the meta tree once the store holds a catalog (even an empty
/// one), so a deliberately empty catalog is not re-seeded on the next open.
const FORMAT_KEY: &[u8] = b"format";

const SECONDS_PER_DAY: i64 = 86_400;
const SECONDS_PER_WEEK: i64 = 7 * SECONDS_PER_DAY;

/// Most passengers one search (and one booking) may ask for.
pub const MAX_PASSENGERS: u32 = 9;

/// A point on the earth, in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude, -90 (south) to 90 (north).
    pub latitude: f64,
    /// Longitude, -180 (west) to 180 (east).
    pub longitude: f64,
}

impl GeoPoint {
    /// Great-circle distance to `other` in kilometres (haversine formula).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// An airport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Airport {
    /// IATA code, three uppercase ASCII letters, e.g. `DEL`.
    pub code: String,
    /// City served, e.g. `Delhi`.
    pub city: String,
    /// Name of the airport.
    pub name: String,
    /// Country, e.g. `India`.
    pub country: String,
    /// Standard-time offset from UTC in minutes (`330` for India). `None`
    /// when unknown: the reference `airports.csv` has no time zones.
    pub utc_offset_minutes: Option<i32>,
    /// Where the airport is, when known.
    pub location: Option<GeoPoint>,
}

/// A scheduled flight: one flight number on one weekday of a weekly schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flight {
    /// Unique id, see the module documentation for its format.
    pub id: FlightId,
    /// Flight number, e.g. `AI101`: ASCII letters and digits.
    pub flight_no: String,
    /// Airline designator, e.g. `AI`.
    pub airline_code: String,
    /// Airline name, e.g. `Air India`.
    pub airline: String,
    /// IATA code of the departure airport.
    pub origin: String,
    /// IATA code of the arrival airport.
    pub destination: String,
    /// Weekday of departure.
    pub weekday: Weekday,
    /// Local departure time at the origin.
    pub departure: NaiveTime,
    /// Local arrival time at the destination.
    pub arrival: NaiveTime,
    /// Weekday of arrival, local to the destination.
    pub arrival_weekday: Weekday,
    /// Time in the air, gate to gate, in minutes.
    pub duration_minutes: u32,
    /// Economy fare per passenger; `None` when the cabin is not sold.
    pub economy: Option<Money>,
    /// Business fare per passenger; `None` when the cabin is not sold.
    pub business: Option<Money>,
    /// First fare per passenger; `None` when the cabin is not sold.
    pub first: Option<Money>,
}

impl Flight {
    /// The fare per passenger in `cabin`, or `None` if the cabin is not sold.
    pub fn fare(&self, cabin: Cabin) -> Option<&Money> {
        match cabin {
            Cabin::Economy => self.economy.as_ref(),
            Cabin::Business => self.business.as_ref(),
            Cabin::First => self.first.as_ref(),
        }
    }

    /// The cabins sold on this flight, cheapest first.
    pub fn cabins(&self) -> Vec<Cabin> {
        Cabin::ALL
            .into_iter()
            .filter(|c| self.fare(*c).is_some())
            .collect()
    }

    /// Days between the departure date and the (local) arrival date, from -2
    /// to 4. Derived from the two weekdays: flights last at most 48 hours and
    /// time zones differ by at most 26 hours, so the difference is unambiguous.
    pub fn arrival_day_offset(&self) -> i64 {
        let diff = (i64::from(self.arrival_weekday.num_days_from_monday())
            - i64::from(self.weekday.num_days_from_monday()))
        .rem_euclid(7);
        if diff >= 5 {
            diff - 7
        } else {
            diff
        }
    }

    /// The local arrival date of this flight when it departs on
    /// `departure_date` (the departure date itself at the very ends of the
    /// calendar, where the arrival date does not exist).
    pub fn arrival_date(&self, departure_date: NaiveDate) -> NaiveDate {
        departure_date
            .checked_add_signed(Duration::days(self.arrival_day_offset()))
            .unwrap_or(departure_date)
    }
}

/// The id of a flight: `{flight_no}-{origin}{destination}-{weekday}` with
/// weekday 0 = Monday, and `-{ordinal + 1}` appended for the second and later
/// rows of one import with the same flight number, route and weekday.
pub fn flight_id(
    flight_no: &str,
    origin: &str,
    destination: &str,
    weekday: Weekday,
    ordinal: u32,
) -> FlightId {
    let wd = weekday.num_days_from_monday();
    if ordinal == 0 {
        FlightId(format!("{flight_no}-{origin}{destination}-{wd}"))
    } else {
        FlightId(format!(
            "{flight_no}-{origin}{destination}-{wd}-{}",
            ordinal + 1
        ))
    }
}

/// The ordinal a flight's id carries (0 for an id without a suffix, or one
/// not made by [`flight_id`]).
pub(crate) fn id_ordinal(flight: &Flight) -> u32 {
    let base = flight_id(
        &flight.flight_no,
        &flight.origin,
        &flight.destination,
        flight.weekday,
        0,
    );
    flight
        .id
        .0
        .strip_prefix(base.0.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n >= 2)
        .map_or(0, |n| n - 1)
}

/// Position of (`weekday`, `time`) in the week, in seconds from Monday 00:00.
pub(crate) fn week_seconds(weekday: Weekday, time: NaiveTime) -> i64 {
    i64::from(weekday.num_days_from_monday()) * SECONDS_PER_DAY
        + i64::from(time.num_seconds_from_midnight())
}

/// (`weekday`, `time`) moved by `seconds` (possibly negative), wrapping
/// around the week.
pub(crate) fn add_seconds(weekday: Weekday, time: NaiveTime, seconds: i64) -> (Weekday, NaiveTime) {
    let t = (week_seconds(weekday, time) + seconds).rem_euclid(SECONDS_PER_WEEK);
    let day = u8::try_from(t / SECONDS_PER_DAY).unwrap_or(0);
    let secs = u32::try_from(t % SECONDS_PER_DAY).unwrap_or(0);
    (
        Weekday::try_from(day).unwrap_or(Weekday::Mon),
        NaiveTime::from_num_seconds_from_midnight_opt(secs, 0).unwrap_or(NaiveTime::MIN),
    )
}

/// Errors of the catalog and its sled store.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The sled store failed.
    #[error("catalog storage error: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("corrupt catalog record {key:?} in tree {tree}: {message}")]
    Corrupt {
        /// The sled tree.
        tree: &'static str,
        /// The record's key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A stored record (or the store) has a format version this code does not read.
    #[error("catalog record {key:?} in tree {tree} has format version {version}; this build reads version {FORMAT_VERSION}")]
    UnsupportedFormat {
        /// The sled tree.
        tree: &'static str,
        /// The record's key.
        key: String,
        /// The version found.
        version: u32,
    },
    /// A flight refers to an airport the catalog does not have.
    #[error("flight {flight} refers to unknown airport {code:?}")]
    UnknownAirport {
        /// The flight.
        flight: FlightId,
        /// The unknown airport code.
        code: String,
    },
    /// Two airports with the same code were given.
    #[error("airport {0} appears twice")]
    DuplicateAirport(String),
    /// Two flights with the same id were given.
    #[error("flight id {0} appears twice")]
    DuplicateFlight(FlightId),
}

/// Errors of a search query. Each says what was wrong with the query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The origin or destination is not an airport of the catalog.
    #[error("unknown airport code {0:?}")]
    UnknownAirport(String),
    /// Origin and destination are the same airport.
    #[error("origin and destination are both {0}: choose two different airports")]
    SameAirport(String),
    /// Passengers outside 1..=9.
    #[error("{0} passengers: a search is for 1 to {MAX_PASSENGERS} passengers")]
    InvalidPassengers(u32),
    /// `depart_after` is later than `depart_before`.
    #[error("departure window is empty: after {after} but before {before}")]
    EmptyTimeWindow {
        /// The query's `depart_after`.
        after: NaiveTime,
        /// The query's `depart_before`.
        before: NaiveTime,
    },
    /// The return date of a round trip is before the outbound date.
    #[error("return date {return_date} is before the outbound date {outbound}")]
    ReturnBeforeOutbound {
        /// The outbound date.
        outbound: NaiveDate,
        /// The return date.
        return_date: NaiveDate,
    },
}

/// The order of search results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// Cheapest first (then earliest departure).
    #[default]
    Price,
    /// Earliest departure first (then cheapest).
    Departure,
    /// Shortest flight first (then cheapest).
    Duration,
}

impl SortBy {
    /// The lowercase name used in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::Price => "price",
            SortBy::Departure => "departure",
            SortBy::Duration => "duration",
        }
    }
}

/// Error for a sort order that is not `price`, `departure` or `duration`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sort order {0:?}: expected price, departure or duration")]
pub struct UnknownSortBy(pub String);

impl FromStr for SortBy {
    type Err = UnknownSortBy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "price" => Ok(SortBy::Price),
            "departure" | "depart" => Ok(SortBy::Departure),
            "duration" => Ok(SortBy::Duration),
            _ => Err(UnknownSortBy(s.to_string())),
        }
    }
}

/// A one-way search. Build one with [`SearchQuery::new`] and set the
/// optional filters on its public fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Origin airport code (case-insensitive).
    pub from: String,
    /// Destination airport code (case-insensitive).
    pub to: String,
    /// Date of departure; the schedule of its weekday applies.
    pub date: NaiveDate,
    /// Cabin wanted; flights that do not sell it are left out.
    pub cabin: Cabin,
    /// Number of passengers, 1 to 9; flights with fewer seats left are left out.
    pub passengers: u32,
    /// Order of the results.
    pub sort: SortBy,
    /// Highest fare per passenger, in minor units of the fare's currency.
    pub max_price: Option<i64>,
    /// Earliest local departure time (inclusive).
    pub depart_after: Option<NaiveTime>,
    /// Latest local departure time (inclusive).
    pub depart_before: Option<NaiveTime>,
    /// Only this airline: its code or name, case-insensitive.
    pub airline: Option<String>,
}

impl SearchQuery {
    /// A query for one passenger, sorted by price, without filters.
    pub fn new(
        from: impl Into<String>,
        to: impl Into<String>,
        date: NaiveDate,
        cabin: Cabin,
    ) -> Self {
        SearchQuery {
            from: from.into(),
            to: to.into(),
            date,
            cabin,
            passengers: 1,
            sort: SortBy::Price,
            max_price: None,
            depart_after: None,
            depart_before: None,
            airline: None,
        }
    }
}

/// One flight found by a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The scheduled flight.
    pub flight: Flight,
    /// The departure date searched for.
    pub date: NaiveDate,
    /// The local arrival date.
    pub arrival_date: NaiveDate,
    /// The cabin searched for.
    pub cabin: Cabin,
    /// Fare per passenger in that cabin.
    pub fare: Money,
    /// Seats left in that cabin on that date, as the availability function said.
    pub seats_left: u32,
}

/// The two legs of a round-trip search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundTripResults {
    /// Flights from origin to destination on the outbound date.
    pub outbound: Vec<SearchResult>,
    /// Flights back from destination to origin on the return date.
    pub inbound: Vec<SearchResult>,
}

/// The sled trees of a persistent catalog.
struct Store {
    airports: sled::Tree,
    flights: sled::Tree,
    meta: sled::Tree,
}

#[derive(Serialize)]
struct StoredAirportRef<'a> {
    v: u32,
    airport: &'a Airport,
}

#[derive(Serialize)]
struct StoredFlightRef<'a> {
    v: u32,
    flight: &'a Flight,
}

#[derive(Deserialize)]
struct StoredAirport {
    airport: Airport,
}

#[derive(Deserialize)]
struct StoredFlight {
    flight: Flight,
}

#[derive(Deserialize)]
struct StoredVersion {
    v: u32,
}

impl Store {
    fn open(db: &sled::Db) -> Result<Store, CatalogError> {
        Ok(Store {
            airports: db.open_tree(AIRPORTS_TREE)?,
            flights: db.open_tree(FLIGHTS_TREE)?,
            meta: db.open_tree(META_TREE)?,
        })
    }

    /// Writes airports and flights in one transaction over the three trees,
    /// then flushes, so the change is durable before it is visible in memory.
    fn write(&self, airports: &[Airport], flights: &[Flight]) -> Result<(), CatalogError> {
        let mut airport_batch = sled::Batch::default();
        for airport in airports {
            airport_batch.insert(
                airport.code.as_bytes(),
                encode(&StoredAirportRef {
                    v: FORMAT_VERSION,
                    airport,
                }),
            );
        }
        let mut flight_batch = sled::Batch::default();
        for flight in flights {
            flight_batch.insert(
                flight.id.0.as_bytes(),
                encode(&StoredFlightRef {
                    v: FORMAT_VERSION,
                    flight,
                }),
            );
        }
        let version = FORMAT_VERSION.to_string();
        (&self.airports, &self.flights, &self.meta)
            .transaction(|(a, f, m)| {
                a.apply_batch(&airport_batch)?;
                f.apply_batch(&flight_batch)?;
                m.insert(FORMAT_KEY, version.as_bytes())?;
                Ok::<(), ConflictableTransactionError<Infallible>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => CatalogError::Storage(e),
                TransactionError::Abort(never) => match never {},
            })?;
        self.meta.flush()?;
        Ok(())
    }

    fn load(&self) -> Result<(Vec<Airport>, Vec<Flight>), CatalogError> {
        let mut airports = Vec::new();
        for item in self.airports.iter() {
            let (key, value) = item?;
            airports.push(decode::<StoredAirport>(AIRPORTS_TREE, &key, &value)?.airport);
        }
        let mut flights = Vec::new();
        for item in self.flights.iter() {
            let (key, value) = item?;
            flights.push(decode::<StoredFlight>(FLIGHTS_TREE, &key, &value)?.flight);
        }
        Ok((airports, flights))
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail (string keys only,
    // no maps with non-string keys, no custom serializers that error).
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<T, CatalogError> {
    let key = String::from_utf8_lossy(key).into_owned();
    let version: StoredVersion =
        serde_json::from_slice(value).map_err(|e| CatalogError::Corrupt {
            tree,
            key: key.clone(),
            message: e.to_string(),
        })?;
    if version.v != FORMAT_VERSION {
        return Err(CatalogError::UnsupportedFormat {
            tree,
            key,
            version: version.v,
        });
    }
    serde_json::from_slice(value).map_err(|e| CatalogError::Corrupt {
        tree,
        key,
        message: e.to_string(),
    })
}

type RouteKey = (String, String, Weekday);

/// Airports and a weekly schedule, indexed for lookup and search, optionally
/// persisted in sled. See the module documentation.
pub struct Catalog {
    airports: BTreeMap<String, Airport>,
    flights: BTreeMap<FlightId, Flight>,
    routes: HashMap<RouteKey, Vec<FlightId>>,
    store: Option<Store>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("airports", &self.airports.len())
            .field("flights", &self.flights.len())
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

impl Catalog {
    /// An empty in-memory catalog.
    pub fn empty() -> Catalog {
        Catalog {
            airports: BTreeMap::new(),
            flights: BTreeMap::new(),
            routes: HashMap::new(),
            store: None,
        }
    }

    /// An in-memory catalog of these airports and flights. Every flight's
    /// airports must be among `airports`, and codes and ids must be unique.
    pub fn in_memory(
        airports: Vec<Airport>,
        flights: Vec<Flight>,
    ) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::empty();
        for airport in airports {
            if catalog.airports.contains_key(&airport.code) {
                return Err(CatalogError::DuplicateAirport(airport.code));
            }
            catalog.airports.insert(airport.code.clone(), airport);
        }
        for flight in &flights {
            catalog.check_airports(flight)?;
        }
        for flight in flights {
            if catalog.flights.contains_key(&flight.id) {
                return Err(CatalogError::DuplicateFlight(flight.id));
            }
            catalog.insert_flight(flight);
        }
        Ok(catalog)
    }

    /// The built-in dataset, in memory: real airports on several continents
    /// and a generated weekly schedule of a few thousand flights in USD. It
    /// is the same on every call and every machine.
    pub fn default_dataset() -> Catalog {
        static DATA: OnceLock<(Vec<Airport>, Vec<Flight>)> = OnceLock::new();
        let (airports, flights) =
            DATA.get_or_init(|| (default_data::airports(), default_data::flights()));
        let mut catalog = Catalog::empty();
        for airport in airports {
            catalog
                .airports
                .insert(airport.code.clone(), airport.clone());
        }
        for flight in flights {
            catalog.insert_flight(flight.clone());
        }
        catalog
    }

    /// Opens the catalog stored in `db`. A store that has never held a
    /// catalog is seeded with the default dataset first.
    pub fn open(db: &sled::Db) -> Result<Catalog, CatalogError> {
        Self::open_inner(db, true)
    }

    /// Like [`Catalog::open`], but a store that has never held a catalog
    /// starts empty instead of with the default dataset.
    pub fn open_empty(db: &sled::Db) -> Result<Catalog, CatalogError> {
        Self::open_inner(db, false)
    }

    fn open_inner(db: &sled::Db, seed: bool) -> Result<Catalog, CatalogError> {
        let store = Store::open(db)?;
        let mut catalog = match store.meta.get(FORMAT_KEY)? {
            Some(version) => {
                let text = String::from_utf8_lossy(&version);
                match text.parse::<u32>() {
                    Ok(FORMAT_VERSION) => {}
                    Ok(other) => {
                        return Err(CatalogError::UnsupportedFormat {
                            tree: META_TREE,
                            key: "format".into(),
                            version: other,
                        })
                    }
                    Err(_) => {
                        return Err(CatalogError::Corrupt {
                            tree: META_TREE,
                            key: "format".into(),
                            message: format!("not a version number: {text:?}"),
                        })
                    }
                }
                let (airports, flights) = store.load()?;
                let mut catalog = Catalog::empty();
                for airport in airports {
                    catalog.airports.insert(airport.code.clone(), airport);
                }
                for flight in flights {
                    catalog.insert_flight(flight);
                }
                tracing::info!(
                    airports = catalog.airports.len(),
                    flights = catalog.flights.len(),
                    "catalog loaded from sled"
                );
                catalog
            }
            None => {
                let catalog = if seed {
                    Catalog::default_dataset()
                } else {
                    Catalog::empty()
                };
                let airports: Vec<Airport> = catalog.airports.values().cloned().collect();
                let flights: Vec<Flight> = catalog.flights.values().cloned().collect();
                store.write(&airports, &flights)?;
                tracing::info!(
                    airports = airports.len(),
                    flights = flights.len(),
                    seeded = seed,
                    "new catalog store initialised"
                );
                catalog
            }
        };
        catalog.store = Some(store);
        Ok(catalog)
    }

    /// Whether changes are written to sled.
    pub fn is_persistent(&self) -> bool {
        self.store.is_some()
    }

    /// Adds or replaces airports and flights: first in sled (one transaction,
    /// flushed), then in memory. On error nothing has changed. Callers
    /// validate; this only checks that every flight's airports exist.
    pub(crate) fn apply(
        &mut self,
        airports: Vec<Airport>,
        flights: Vec<Flight>,
    ) -> Result<(), CatalogError> {
        for flight in &flights {
            for code in [&flight.origin, &flight.destination] {
                let known =
                    self.airports.contains_key(code) || airports.iter().any(|a| &a.code == code);
                if !known {
                    return Err(CatalogError::UnknownAirport {
                        flight: flight.id.clone(),
                        code: code.clone(),
                    });
                }
            }
        }
        if let Some(store) = &self.store {
            store.write(&airports, &flights)?;
        }
        for airport in airports {
            self.airports.insert(airport.code.clone(), airport);
        }
        for flight in flights {
            self.insert_flight(flight);
        }
        Ok(())
    }

    fn check_airports(&self, flight: &Flight) -> Result<(), CatalogError> {
        for code in [&flight.origin, &flight.destination] {
            if !self.airports.contains_key(code) {
                return Err(CatalogError::UnknownAirport {
                    flight: flight.id.clone(),
                    code: code.clone(),
                });
            }
        }
        Ok(())
    }

    fn insert_flight(&mut self, flight: Flight) {
        let key = (
            flight.origin.clone(),
            flight.destination.clone(),
            flight.weekday,
        );
        if let Some(old) = self.flights.get(&flight.id) {
            let old_key = (old.origin.clone(), old.destination.clone(), old.weekday);
            if old_key == key {
                self.flights.insert(flight.id.clone(), flight);
                return;
            }
            if let Some(ids) = self.routes.get_mut(&old_key) {
                ids.retain(|id| id != &flight.id);
            }
        }
        self.routes.entry(key).or_default().push(flight.id.clone());
        self.flights.insert(flight.id.clone(), flight);
    }

    /// The airport with this IATA code (case-insensitive).
    pub fn airport(&self, code: &str) -> Option<&Airport> {
        self.airports.get(&code.trim().to_ascii_uppercase())
    }

    /// All airports, ordered by code.
    pub fn airports(&self) -> impl ExactSizeIterator<Item = &Airport> + '_ {
        self.airports.values()
    }

    /// Number of airports.
    pub fn airport_count(&self) -> usize {
        self.airports.len()
    }

    /// The flight with this id.
    pub fn flight(&self, id: &FlightId) -> Option<&Flight> {
        self.flights.get(id)
    }

    /// All flights, ordered by id.
    pub fn flights(&self) -> impl ExactSizeIterator<Item = &Flight> + '_ {
        self.flights.values()
    }

    /// Number of flights.
    pub fn flight_count(&self) -> usize {
        self.flights.len()
    }

    /// Airports matching `query` by code, city or name, case-insensitive and
    /// ignoring common accents, best first, at most `limit`. Ranking: exact
    /// code, code prefix, city prefix, prefix of a word of the name, then
    /// any substring of city, name or country; ties by code. An empty query
    /// matches nothing.
    pub fn autocomplete(&self, query: &str, limit: usize) -> Vec<&Airport> {
        let q = fold(query.trim());
        if q.is_empty() || limit == 0 {
            return Vec::new();
        }
        let mut ranked: Vec<(u8, &Airport)> = self
            .airports
            .values()
            .filter_map(|a| {
                let code = a.code.to_ascii_lowercase();
                let city = fold(&a.city);
                let name = fold(&a.name);
                let rank = if code == q {
                    0
                } else if code.starts_with(&q) {
                    1
                } else if city.starts_with(&q) {
                    2
                } else if name
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w.starts_with(&q))
                {
                    3
                } else if city.contains(&q) || name.contains(&q) || fold(&a.country).contains(&q) {
                    4
                } else {
                    return None;
                };
                Some((rank, a))
            })
            .collect();
        // Airports iterate in code order, so a stable sort keeps ties by code.
        ranked.sort_by_key(|(rank, _)| *rank);
        ranked.into_iter().take(limit).map(|(_, a)| a).collect()
    }

    /// Flights from `q.from` to `q.to` on `q.date`'s weekday that sell
    /// `q.cabin`, pass the query's filters and have at least `q.passengers`
    /// seats left according to `seats_left` (called only for flights that
    /// pass every other filter), in the order `q.sort` asks for.
    pub fn search(
        &self,
        q: &SearchQuery,
        seats_left: &dyn Fn(&FlightId, NaiveDate, Cabin) -> u32,
    ) -> Result<Vec<SearchResult>, SearchError> {
        let (from, to) = self.validate(q)?;
        let airline = q
            .airline
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_lowercase);
        let key = (from, to, q.date.weekday());
        let mut results = Vec::new();
        for id in self.routes.get(&key).map(Vec::as_slice).unwrap_or_default() {
            let Some(flight) = self.flights.get(id) else {
                continue;
            };
            let Some(fare) = flight.fare(q.cabin) else {
                continue;
            };
            if q.max_price.is_some_and(|max| fare.minor > max)
                || q.depart_after.is_some_and(|t| flight.departure < t)
                || q.depart_before.is_some_and(|t| flight.departure > t)
            {
                continue;
            }
            if let Some(airline) = &airline {
                if flight.airline_code.to_lowercase() != *airline
                    && flight.airline.to_lowercase() != *airline
                {
                    continue;
                }
            }
            let seats = seats_left(id, q.date, q.cabin);
            if seats < q.passengers {
                continue;
            }
            results.push(SearchResult {
                flight: flight.clone(),
                date: q.date,
                arrival_date: flight.arrival_date(q.date),
                cabin: q.cabin,
                fare: fare.clone(),
                seats_left: seats,
            });
        }
        let price = |r: &SearchResult| r.fare.minor;
        match q.sort {
            SortBy::Price => results.sort_by(|a, b| {
                (price(a), a.flight.departure, &a.flight.id).cmp(&(
                    price(b),
                    b.flight.departure,
                    &b.flight.id,
                ))
            }),
            SortBy::Departure => results.sort_by(|a, b| {
                (a.flight.departure, price(a), &a.flight.id).cmp(&(
                    b.flight.departure,
                    price(b),
                    &b.flight.id,
                ))
            }),
            SortBy::Duration => results.sort_by(|a, b| {
                (a.flight.duration_minutes, price(a), &a.flight.id).cmp(&(
                    b.flight.duration_minutes,
                    price(b),
                    &b.flight.id,
                ))
            }),
        }
        Ok(results)
    }

    /// A round trip: `outbound` as given, and the way back (destination to
    /// origin on `return_date`) with the same cabin, passengers, sort, price
    /// and airline filters. The departure-time window applies to the
    /// outbound leg only.
    pub fn search_round_trip(
        &self,
        outbound: &SearchQuery,
        return_date: NaiveDate,
        seats_left: &dyn Fn(&FlightId, NaiveDate, Cabin) -> u32,
    ) -> Result<RoundTripResults, SearchError> {
        self.validate(outbound)?;
        if return_date < outbound.date {
            return Err(SearchError::ReturnBeforeOutbound {
                outbound: outbound.date,
                return_date,
            });
        }
        let inbound_query = SearchQuery {
            from: outbound.to.clone(),
            to: outbound.from.clone(),
            date: return_date,
            depart_after: None,
            depart_before: None,
            ..outbound.clone()
        };
        Ok(RoundTripResults {
            outbound: self.search(outbound, seats_left)?,
            inbound: self.search(&inbound_query, seats_left)?,
        })
    }

    /// Checks a query; returns its normalised (uppercase) airport codes.
    fn validate(&self, q: &SearchQuery) -> Result<(String, String), SearchError> {
        if q.passengers == 0 || q.passengers > MAX_PASSENGERS {
            return Err(SearchError::InvalidPassengers(q.passengers));
        }
        let from = q.from.trim().to_ascii_uppercase();
        let to = q.to.trim().to_ascii_uppercase();
        for code in [&from, &to] {
            if !self.airports.contains_key(code) {
                return Err(SearchError::UnknownAirport(code.clone()));
            }
        }
        if from == to {
            return Err(SearchError::SameAirport(from));
        }
        if let (Some(after), Some(before)) = (q.depart_after, q.depart_before) {
            if after > before {
                return Err(SearchError::EmptyTimeWindow { after, before });
            }
        }
        Ok((from, to))
    }
}

/// Lowercase, with the accents of common Latin letters removed, so that
/// `zurich` finds `Zürich` and `sao` finds `São Paulo`.
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
            'ç' | 'č' | 'ć' => 'c',
            'è' | 'é' | 'ê' | 'ë' | 'ē' => 'e',
            'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
            'ñ' | 'ń' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
            'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
            'ý' | 'ÿ' => 'y',
            'ş' | 'š' | 'ś' => 's',
            'ğ' => 'g',
            'ž' | 'ź' | 'ż' => 'z',
            '–' | '—' => '-',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_seconds_wraps_the_week_both_ways() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert_eq!(
            add_seconds(Weekday::Sun, t(23, 0), 2 * 3600),
            (Weekday::Mon, t(1, 0))
        );
        assert_eq!(
            add_seconds(Weekday::Mon, t(1, 0), -2 * 3600),
            (Weekday::Sun, t(23, 0))
        );
        assert_eq!(
            add_seconds(Weekday::Wed, t(10, 0), 0),
            (Weekday::Wed, t(10, 0))
        );
    }

    #[test]
    fn ids_and_ordinals_round_trip() {
        let mut f = Catalog::default_dataset().flights().next().unwrap().clone();
        assert_eq!(id_ordinal(&f), 0);
        f.id = flight_id(&f.flight_no, &f.origin, &f.destination, f.weekday, 11);
        assert!(f.id.0.ends_with("-12"));
        assert_eq!(id_ordinal(&f), 11);
    }

    #[test]
    fn distance_is_plausible() {
        let c = Catalog::default_dataset();
        let loc = |code| c.airport(code).unwrap().location.unwrap();
        let km = loc("JFK").distance_km(&loc("LHR"));
        assert!((5500.0..5600.0).contains(&km), "{km}");
    }
}

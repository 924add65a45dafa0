//! The catalog through its public API: the default dataset, search,
//! autocomplete and persistence in sled.

use booking_domain::catalog::{
    flight_id, Airport, Catalog, CatalogError, Flight, SearchError, SearchQuery, SortBy,
};
use booking_domain::import::{Import, ImportMode};
use booking_domain::{Cabin, Currency, FlightId, Money};
use chrono::{Datelike, NaiveDate, NaiveTime, Timelike, Weekday};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn week_minutes(day: Weekday, time: NaiveTime) -> i64 {
    i64::from(day.num_days_from_monday()) * 1440 + i64::from(time.num_seconds_from_midnight() / 60)
}

// ---------------------------------------------------------------- default dataset

#[test]
fn default_dataset_is_large_real_and_deterministic() {
    let catalog = Catalog::default_dataset();
    let countries: BTreeSet<&str> = catalog.airports().map(|a| a.country.as_str()).collect();
    assert!(
        catalog.airport_count() >= 50,
        "{} airports",
        catalog.airport_count()
    );
    assert!(countries.len() >= 5, "{countries:?}");
    assert!(
        catalog.flight_count() >= 2000,
        "{} flights",
        catalog.flight_count()
    );
    for a in catalog.airports() {
        assert_eq!(a.code.len(), 3);
        assert!(a.code.bytes().all(|b| b.is_ascii_uppercase()), "{}", a.code);
        assert!(
            a.utc_offset_minutes.is_some() && a.location.is_some(),
            "{a:?}"
        );
    }
    let again = Catalog::default_dataset();
    assert!(catalog.flights().eq(again.flights()));
    assert!(catalog.airports().eq(again.airports()));
    // A few well-known routes exist.
    for (from, to) in [
        ("DEL", "BOM"),
        ("JFK", "LHR"),
        ("SIN", "SYD"),
        ("DXB", "BOM"),
    ] {
        assert!(
            catalog
                .flights()
                .any(|f| f.origin == from && f.destination == to),
            "no {from}-{to}"
        );
    }
}

#[test]
fn default_flights_have_consistent_times_ids_and_fares() {
    let catalog = Catalog::default_dataset();
    let (mut no_first, mut with_first, mut no_business, mut next_day) = (0, 0, 0, 0);
    for f in catalog.flights() {
        let origin = catalog.airport(&f.origin).expect("origin exists");
        let destination = catalog.airport(&f.destination).expect("destination exists");
        assert_ne!(f.origin, f.destination);

        // Arrival local = departure local + duration + offset difference.
        let shift =
            i64::from(destination.utc_offset_minutes.unwrap() - origin.utc_offset_minutes.unwrap());
        let expected =
            (week_minutes(f.weekday, f.departure) + i64::from(f.duration_minutes) + shift)
                .rem_euclid(7 * 1440);
        assert_eq!(
            week_minutes(f.arrival_weekday, f.arrival),
            expected,
            "{f:?}"
        );
        let day_offset = (i64::from(f.departure.num_seconds_from_midnight() / 60)
            + i64::from(f.duration_minutes)
            + shift)
            .div_euclid(1440);
        assert_eq!(f.arrival_day_offset(), day_offset, "{f:?}");
        if day_offset > 0 {
            next_day += 1;
        }

        // Duration: great circle at 800 km/h plus 30 minutes, on a 5-minute grid.
        let km = origin
            .location
            .unwrap()
            .distance_km(&destination.location.unwrap());
        let model = km / 800.0 * 60.0 + 30.0;
        assert!(
            (f64::from(f.duration_minutes) - model).abs() <= 2.5,
            "{f:?} {km}"
        );
        assert_eq!(f.duration_minutes % 5, 0);

        // Id: flight number, route, weekday; URL-safe.
        assert_eq!(
            f.id,
            flight_id(&f.flight_no, &f.origin, &f.destination, f.weekday, 0)
        );
        assert!(
            f.id.0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{}",
            f.id
        );

        // Fares: USD whole dollars, first > business > economy.
        let economy = f.economy.as_ref().expect("economy always sold");
        for m in [&f.economy, &f.business, &f.first].into_iter().flatten() {
            assert_eq!(m.currency, Currency::usd());
            assert_eq!(m.minor % 100, 0, "{f:?}");
            assert!(m.minor > 0);
        }
        if let Some(business) = &f.business {
            assert!(business.minor > economy.minor, "{f:?}");
        } else {
            no_business += 1;
        }
        match (&f.first, &f.business) {
            (Some(first), Some(business)) => {
                assert!(first.minor > business.minor, "{f:?}");
                with_first += 1;
            }
            (Some(_), None) => panic!("first without business: {f:?}"),
            (None, _) => no_first += 1,
        }
    }
    assert!(
        with_first > 100 && no_first > 100,
        "{with_first} with first, {no_first} without"
    );
    assert!(no_business > 100, "{no_business}");
    assert!(next_day > 50, "{next_day} flights arrive on a later day");
}

#[test]
fn fares_grow_with_distance() {
    let catalog = Catalog::default_dataset();
    let mean_economy = |short: bool| {
        let fares: Vec<i64> = catalog
            .flights()
            .filter(|f| (f.duration_minutes < 150) == short)
            .filter_map(|f| f.economy.as_ref().map(|m| m.minor))
            .collect();
        fares.iter().sum::<i64>() / fares.len() as i64
    };
    assert!(mean_economy(false) > 2 * mean_economy(true));
}

// ---------------------------------------------------------------- search

fn airport(code: &str, city: &str) -> Airport {
    Airport {
        code: code.into(),
        city: city.into(),
        name: format!("{city} Airport"),
        country: "India".into(),
        utc_offset_minutes: Some(330),
        location: None,
    }
}

fn usd(dollars: i64) -> Option<Money> {
    Some(Money::new(dollars * 100, Currency::usd()))
}

#[allow(clippy::too_many_arguments)]
fn flight(
    no: &str,
    airline: &str,
    from: &str,
    to: &str,
    day: Weekday,
    dep: NaiveTime,
    minutes: u32,
    fares: [Option<Money>; 3],
) -> Flight {
    let arrival_secs = dep.num_seconds_from_midnight() + minutes * 60;
    let [economy, business, first] = fares;
    Flight {
        id: flight_id(no, from, to, day, 0),
        flight_no: no.into(),
        airline_code: no[..2].into(),
        airline: airline.into(),
        origin: from.into(),
        destination: to.into(),
        weekday: day,
        departure: dep,
        arrival: NaiveTime::from_num_seconds_from_midnight_opt(arrival_secs % 86_400, 0).unwrap(),
        arrival_weekday: if arrival_secs >= 86_400 {
            day.succ()
        } else {
            day
        },
        duration_minutes: minutes,
        economy,
        business,
        first,
    }
}

/// Wednesday 3 January 2024 and the day after.
const WED: (i32, u32, u32) = (2024, 1, 3);

fn search_catalog() -> Catalog {
    use Weekday::*;
    Catalog::in_memory(
        vec![
            airport("DEL", "Delhi"),
            airport("BOM", "Mumbai"),
            airport("BLR", "Bengaluru"),
        ],
        vec![
            flight(
                "AI101",
                "Air India",
                "DEL",
                "BOM",
                Wed,
                t(6, 0),
                130,
                [usd(50), usd(200), None],
            ),
            flight(
                "6E201",
                "IndiGo",
                "DEL",
                "BOM",
                Wed,
                t(9, 0),
                125,
                [usd(40), None, None],
            ),
            flight(
                "UK301",
                "Vistara",
                "DEL",
                "BOM",
                Wed,
                t(18, 0),
                140,
                [usd(60), usd(180), usd(400)],
            ),
            flight(
                "AI105",
                "Air India",
                "DEL",
                "BOM",
                Thu,
                t(12, 0),
                120,
                [usd(70), None, None],
            ),
            flight(
                "AI107",
                "Air India",
                "DEL",
                "BOM",
                Wed,
                t(21, 0),
                135,
                [usd(45), usd(250), None],
            ),
            flight(
                "AI109",
                "Air India",
                "DEL",
                "BOM",
                Wed,
                t(23, 30),
                130,
                [usd(55), None, None],
            ),
            flight(
                "AI102",
                "Air India",
                "BOM",
                "DEL",
                Fri,
                t(7, 0),
                130,
                [usd(52), usd(210), None],
            ),
            flight(
                "6E202",
                "IndiGo",
                "BOM",
                "DEL",
                Fri,
                t(19, 0),
                125,
                [usd(41), None, None],
            ),
            flight(
                "AI501",
                "Air India",
                "DEL",
                "BLR",
                Wed,
                t(7, 0),
                165,
                [usd(65), None, None],
            ),
        ],
    )
    .unwrap()
}

/// Nine seats everywhere, none on AI107, four on UK301.
fn seats(id: &FlightId, _date: NaiveDate, _cabin: Cabin) -> u32 {
    match id.0.split('-').next() {
        Some("AI107") => 0,
        Some("UK301") => 4,
        _ => 9,
    }
}

fn numbers(results: &[booking_domain::catalog::SearchResult]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r.flight.flight_no.as_str())
        .collect()
}

fn query(cabin: Cabin) -> SearchQuery {
    SearchQuery::new("DEL", "BOM", date(WED.0, WED.1, WED.2), cabin)
}

#[test]
fn search_finds_the_weekday_cabin_and_seats() {
    let c = search_catalog();
    let found = c.search(&query(Cabin::Economy), &seats).unwrap();
    // AI107 has no seats left; AI105 flies on Thursdays; AI501 goes to BLR.
    assert_eq!(numbers(&found), ["6E201", "AI101", "AI109", "UK301"]);
    let first = &found[0];
    assert_eq!(first.fare, Money::new(4000, Currency::usd()));
    assert_eq!(
        (first.cabin, first.seats_left, first.date),
        (Cabin::Economy, 9, date(2024, 1, 3))
    );
    assert_eq!(first.arrival_date, date(2024, 1, 3));
    // The 23:30 flight lands on Thursday.
    let late = found
        .iter()
        .find(|r| r.flight.flight_no == "AI109")
        .unwrap();
    assert_eq!(late.arrival_date, date(2024, 1, 4));

    let thursday = SearchQuery {
        date: date(2024, 1, 4),
        ..query(Cabin::Economy)
    };
    assert_eq!(numbers(&c.search(&thursday, &seats).unwrap()), ["AI105"]);
    let tuesday = SearchQuery {
        date: date(2024, 1, 2),
        ..query(Cabin::Economy)
    };
    assert!(c.search(&tuesday, &seats).unwrap().is_empty());

    // Only flights that sell the cabin, with their fare for it.
    let business = c.search(&query(Cabin::Business), &seats).unwrap();
    assert_eq!(numbers(&business), ["UK301", "AI101"]);
    assert_eq!(business[0].fare, Money::new(18000, Currency::usd()));
    assert_eq!(
        numbers(&c.search(&query(Cabin::First), &seats).unwrap()),
        ["UK301"]
    );

    // Codes are case-insensitive.
    let lower = SearchQuery {
        from: "del".into(),
        to: " bom ".into(),
        ..query(Cabin::Economy)
    };
    assert_eq!(c.search(&lower, &seats).unwrap(), found);
}

#[test]
fn search_needs_enough_seats_for_every_passenger() {
    let c = search_catalog();
    let four = SearchQuery {
        passengers: 4,
        ..query(Cabin::Economy)
    };
    assert_eq!(
        numbers(&c.search(&four, &seats).unwrap()),
        ["6E201", "AI101", "AI109", "UK301"]
    );
    let five = SearchQuery {
        passengers: 5,
        ..query(Cabin::Economy)
    };
    assert_eq!(
        numbers(&c.search(&five, &seats).unwrap()),
        ["6E201", "AI101", "AI109"]
    );
    let nine = SearchQuery {
        passengers: 9,
        ..query(Cabin::Economy)
    };
    assert_eq!(c.search(&nine, &seats).unwrap().len(), 3);

    // The availability function is asked about the right date and cabin.
    let asked = RefCell::new(Vec::new());
    let record = |id: &FlightId, d: NaiveDate, cabin: Cabin| {
        asked.borrow_mut().push((id.clone(), d, cabin));
        2
    };
    let found = c.search(&query(Cabin::Business), &record).unwrap();
    assert!(found.iter().all(|r| r.seats_left == 2));
    let asked = asked.into_inner();
    assert_eq!(asked.len(), 3);
    assert!(asked
        .iter()
        .all(|(_, d, cabin)| *d == date(2024, 1, 3) && *cabin == Cabin::Business));
}

#[test]
fn search_sorts_as_asked() {
    let c = search_catalog();
    let by = |sort| {
        numbers(
            &c.search(
                &SearchQuery {
                    sort,
                    ..query(Cabin::Economy)
                },
                &seats,
            )
            .unwrap(),
        )
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    assert_eq!(by(SortBy::Price), ["6E201", "AI101", "AI109", "UK301"]);
    assert_eq!(by(SortBy::Departure), ["AI101", "6E201", "UK301", "AI109"]);
    assert_eq!(by(SortBy::Duration), ["6E201", "AI101", "AI109", "UK301"]);
    assert_eq!("duration".parse::<SortBy>().unwrap(), SortBy::Duration);
    assert_eq!("Price".parse::<SortBy>().unwrap(), SortBy::Price);
    assert!("cheapest".parse::<SortBy>().is_err());
}

#[test]
fn search_filters_by_price_time_and_airline() {
    let c = search_catalog();
    let run = |q: SearchQuery| {
        numbers(&c.search(&q, &seats).unwrap())
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        run(SearchQuery {
            max_price: Some(5000),
            ..query(Cabin::Economy)
        }),
        ["6E201", "AI101"]
    );
    assert_eq!(
        run(SearchQuery {
            max_price: Some(3999),
            ..query(Cabin::Economy)
        }),
        Vec::<String>::new()
    );
    assert_eq!(
        run(SearchQuery {
            depart_after: Some(t(9, 0)),
            depart_before: Some(t(18, 0)),
            ..query(Cabin::Economy)
        }),
        ["6E201", "UK301"]
    );
    assert_eq!(
        run(SearchQuery {
            depart_after: Some(t(20, 0)),
            ..query(Cabin::Economy)
        }),
        ["AI109"]
    );
    assert_eq!(
        run(SearchQuery {
            depart_before: Some(t(8, 59)),
            ..query(Cabin::Economy)
        }),
        ["AI101"]
    );
    assert_eq!(
        run(SearchQuery {
            airline: Some("ai".into()),
            ..query(Cabin::Economy)
        }),
        ["AI101", "AI109"]
    );
    assert_eq!(
        run(SearchQuery {
            airline: Some("indigo".into()),
            ..query(Cabin::Economy)
        }),
        ["6E201"]
    );
    assert_eq!(
        run(SearchQuery {
            airline: Some("  ".into()),
            ..query(Cabin::Economy)
        })
        .len(),
        4
    );
}

#[test]
fn invalid_queries_are_typed_errors_with_clear_messages() {
    let c = search_catalog();
    let err = |q: SearchQuery| c.search(&q, &seats).unwrap_err();

    let e = err(SearchQuery {
        to: "XXX".into(),
        ..query(Cabin::Economy)
    });
    assert_eq!(e, SearchError::UnknownAirport("XXX".into()));
    assert!(
        e.to_string().contains("unknown airport code \"XXX\""),
        "{e}"
    );

    let e = err(SearchQuery {
        to: "del".into(),
        ..query(Cabin::Economy)
    });
    assert_eq!(e, SearchError::SameAirport("DEL".into()));
    assert!(e.to_string().contains("different airports"), "{e}");

    for n in [0, 10] {
        let e = err(SearchQuery {
            passengers: n,
            ..query(Cabin::Economy)
        });
        assert_eq!(e, SearchError::InvalidPassengers(n));
        assert!(e.to_string().contains("1 to 9 passengers"), "{e}");
    }

    let e = err(SearchQuery {
        depart_after: Some(t(12, 0)),
        depart_before: Some(t(8, 0)),
        ..query(Cabin::Economy)
    });
    assert!(matches!(e, SearchError::EmptyTimeWindow { .. }), "{e:?}");
}

#[test]
fn round_trip_search_gives_both_legs() {
    let c = search_catalog();
    let outbound = SearchQuery {
        depart_after: Some(t(8, 0)),
        ..query(Cabin::Economy)
    };
    let friday = date(2024, 1, 5);
    let trip = c.search_round_trip(&outbound, friday, &seats).unwrap();
    assert_eq!(numbers(&trip.outbound), ["6E201", "AI109", "UK301"]);
    // The departure window is for the outbound leg only.
    assert_eq!(numbers(&trip.inbound), ["6E202", "AI102"]);
    assert!(trip
        .inbound
        .iter()
        .all(|r| r.date == friday && r.flight.origin == "BOM"));

    let business = SearchQuery {
        cabin: Cabin::Business,
        ..outbound.clone()
    };
    let trip = c.search_round_trip(&business, friday, &seats).unwrap();
    assert_eq!(numbers(&trip.inbound), ["AI102"]);

    let e = c
        .search_round_trip(&outbound, date(2024, 1, 2), &seats)
        .unwrap_err();
    assert!(
        matches!(e, SearchError::ReturnBeforeOutbound { .. }),
        "{e:?}"
    );
    let e = c
        .search_round_trip(
            &SearchQuery {
                from: "ZZZ".into(),
                ..outbound
            },
            friday,
            &seats,
        )
        .unwrap_err();
    assert_eq!(e, SearchError::UnknownAirport("ZZZ".into()));
}

#[test]
fn search_works_on_the_default_dataset() {
    let c = Catalog::default_dataset();
    let day = date(2025, 3, 12);
    let found = c
        .search(
            &SearchQuery::new("DEL", "BOM", day, Cabin::Economy),
            &|_, _, _| 9,
        )
        .unwrap();
    assert!(found.len() >= 2, "{}", found.len());
    assert!(found.windows(2).all(|w| w[0].fare.minor <= w[1].fare.minor));
    assert!(found.iter().all(|r| r.flight.weekday == day.weekday()));
}

// ---------------------------------------------------------------- autocomplete

fn codes(found: Vec<&Airport>) -> Vec<String> {
    found.into_iter().map(|a| a.code.clone()).collect()
}

#[test]
fn autocomplete_matches_code_city_and_name() {
    let c = Catalog::default_dataset();
    assert_eq!(codes(c.autocomplete("del", 5))[0], "DEL");
    assert_eq!(codes(c.autocomplete("DeL", 1)), ["DEL"]);
    // Code prefixes first, then cities: MNL is Manila.
    let ma = codes(c.autocomplete("ma", 10));
    assert_eq!(ma[..3], ["MAA", "MAD", "MAN"]);
    assert!(ma.contains(&"MNL".to_string()), "{ma:?}");
    // City and both of its airports.
    let london = codes(c.autocomplete("london", 5));
    assert_eq!(london, ["LGW", "LHR"]);
    // A word of the name, and accents ignored both ways.
    assert_eq!(codes(c.autocomplete("heathrow", 5)), ["LHR"]);
    assert_eq!(codes(c.autocomplete("sao paulo", 5)), ["GRU"]);
    assert_eq!(codes(c.autocomplete("São", 5)), ["GRU"]);
    assert_eq!(codes(c.autocomplete("cote d'azur", 5)), ["NCE"]);
    // Country, as a last resort.
    assert!(c.autocomplete("india", 50).len() >= 12);
    // Limits and empty input.
    assert_eq!(c.autocomplete("a", 3).len(), 3);
    assert!(c.autocomplete("", 5).is_empty());
    assert!(c.autocomplete("   ", 5).is_empty());
    assert!(c.autocomplete("qqqq", 5).is_empty());
    assert!(c.autocomplete("del", 0).is_empty());
}

// ---------------------------------------------------------------- constructors

#[test]
fn catalog_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Catalog>();
}

#[test]
fn arrival_date_does_not_panic_at_the_end_of_the_calendar() {
    let c = search_catalog();
    let late = c
        .flight(&flight_id("AI109", "DEL", "BOM", Weekday::Wed, 0))
        .unwrap();
    assert_eq!(late.arrival_day_offset(), 1);
    assert_eq!(late.arrival_date(date(2024, 1, 3)), date(2024, 1, 4));
    assert_eq!(late.arrival_date(NaiveDate::MAX), NaiveDate::MAX);
}

#[test]
fn in_memory_refuses_unknown_airports_and_duplicates() {
    let f = flight(
        "AI101",
        "Air India",
        "DEL",
        "BOM",
        Weekday::Mon,
        t(6, 0),
        130,
        [usd(50), None, None],
    );
    let e = Catalog::in_memory(vec![airport("DEL", "Delhi")], vec![f.clone()]).unwrap_err();
    assert!(
        matches!(e, CatalogError::UnknownAirport { ref code, .. } if code == "BOM"),
        "{e:?}"
    );
    let e = Catalog::in_memory(
        vec![airport("DEL", "Delhi"), airport("DEL", "Delhi")],
        vec![],
    )
    .unwrap_err();
    assert!(matches!(e, CatalogError::DuplicateAirport(_)), "{e:?}");
    let both = vec![airport("DEL", "Delhi"), airport("BOM", "Mumbai")];
    let e = Catalog::in_memory(both, vec![f.clone(), f]).unwrap_err();
    assert!(matches!(e, CatalogError::DuplicateFlight(_)), "{e:?}");
}

// ---------------------------------------------------------------- persistence

#[test]
fn open_seeds_the_default_dataset_once_and_persists_imports() {
    let dir = tempfile::tempdir().unwrap();
    let default = Catalog::default_dataset();
    {
        let db = sled::open(dir.path()).unwrap();
        let mut catalog = Catalog::open(&db).unwrap();
        assert!(catalog.is_persistent());
        assert_eq!(catalog.flight_count(), default.flight_count());
        Import::new(Currency::inr(), ImportMode::Reject)
            .airports_file(fixture("airports.csv"))
            .flights_file(fixture("flights_domestic.csv"))
            .run(&mut catalog, &mut |_| {})
            .unwrap();
        assert_eq!(catalog.flight_count(), default.flight_count() + 7);
    }
    let db = sled::open(dir.path()).unwrap();
    let reopened = Catalog::open(&db).unwrap();
    assert_eq!(reopened.flight_count(), default.flight_count() + 7);
    assert_eq!(reopened.airport_count(), default.airport_count() + 1); // OSL is new
    let g8 = reopened.flight(&FlightId("G8334-DELBOM-2".into())).unwrap();
    assert_eq!(g8.economy, Some(Money::new(458_900, Currency::inr())));
    // The fixture replaced DEL's name but kept the time zone it lacks.
    let del = reopened.airport("DEL").unwrap();
    assert_eq!(del.name, "Indira Gandhi International Airport");
    assert_eq!(del.utc_offset_minutes, Some(330));
    assert!(reopened.airport("OSL").is_some());
    // Every default flight is still there, unchanged.
    for f in default.flights() {
        assert_eq!(reopened.flight(&f.id), Some(f));
    }
}

#[test]
fn open_empty_stays_empty_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let catalog = Catalog::open_empty(&db).unwrap();
    assert_eq!((catalog.airport_count(), catalog.flight_count()), (0, 0));
    drop(catalog);
    // Already initialised: `open` does not seed it now.
    let catalog = Catalog::open(&db).unwrap();
    assert_eq!((catalog.airport_count(), catalog.flight_count()), (0, 0));
}

#[test]
fn unknown_record_versions_and_corrupt_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    drop(Catalog::open_empty(&db).unwrap());
    let flights = db.open_tree("catalog_flights").unwrap();

    flights
        .insert("X-1", r#"{"v":99,"flight":{}}"#.as_bytes())
        .unwrap();
    let e = Catalog::open(&db).unwrap_err();
    assert!(
        matches!(e, CatalogError::UnsupportedFormat { version: 99, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("version 99"), "{e}");

    flights.insert("X-1", "not json".as_bytes()).unwrap();
    let e = Catalog::open(&db).unwrap_err();
    assert!(matches!(e, CatalogError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("X-1"), "{e}");
}

#[test]
fn flight_ids_are_unique_across_the_default_dataset() {
    // The catalog is keyed by id, so a collision would silently drop a
    // flight: count the generated (flight number, weekday) pairs instead.
    let c = Catalog::default_dataset();
    let mut per_number: HashMap<(&str, Weekday), usize> = HashMap::new();
    for f in c.flights() {
        *per_number
            .entry((f.flight_no.as_str(), f.weekday))
            .or_default() += 1;
    }
    assert!(per_number.values().all(|n| *n == 1));
    assert_eq!(per_number.len(), c.flight_count());
}

//! CSV import and export through the public API, on small fixtures written
//! in the reference format.

use booking_domain::catalog::{Catalog, Flight};
use booking_domain::import::{
    export_airports, export_flights, import_airports, import_flights, ExportError, Import,
    ImportError, ImportMode, ImportProgress, ImportReport,
};
use booking_domain::{Currency, FlightId, Money};
use chrono::{NaiveTime, Weekday};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn no_progress() -> impl FnMut(ImportProgress) {
    |_| {}
}

/// A catalog with the fixture airports and the given flights files, in one import.
fn catalog_with(
    flights: &[&str],
    mode: ImportMode,
) -> (Catalog, Result<ImportReport, ImportError>) {
    let mut catalog = Catalog::empty();
    let mut import = Import::new(Currency::inr(), mode).airports_file(fixture("airports.csv"));
    for f in flights {
        import = import.flights_file(fixture(f));
    }
    let result = import.run(&mut catalog, &mut no_progress());
    (catalog, result)
}

fn id(s: &str) -> FlightId {
    FlightId(s.to_string())
}

fn inr(rupees: i64) -> Option<Money> {
    Some(Money::new(rupees * 100, Currency::inr()))
}

fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

fn assert_same(a: &Catalog, b: &Catalog) {
    assert_eq!(
        a.airports().collect::<Vec<_>>(),
        b.airports().collect::<Vec<_>>()
    );
    assert_eq!(
        a.flights().collect::<Vec<_>>(),
        b.flights().collect::<Vec<_>>()
    );
}

fn export(catalog: &Catalog) -> (Vec<u8>, Vec<u8>) {
    let (mut airports, mut flights) = (Vec::new(), Vec::new());
    assert_eq!(
        export_airports(catalog, &mut airports).unwrap(),
        catalog.airport_count()
    );
    assert_eq!(
        export_flights(catalog, &mut flights).unwrap(),
        catalog.flight_count()
    );
    (airports, flights)
}

fn reimport(airports: &[u8], flights: &[u8], currency: Currency) -> Catalog {
    let mut copy = Catalog::empty();
    Import::new(currency, ImportMode::Reject)
        .airports("airports", airports)
        .flights("flights", flights)
        .run(&mut copy, &mut no_progress())
        .unwrap();
    copy
}

#[test]
fn fixtures_parse_into_the_expected_flights() {
    let (catalog, report) = catalog_with(&["flights_domestic.csv"], ImportMode::Reject);
    let report = report.unwrap();
    assert_eq!(
        (report.airports, report.flights, report.imported),
        (6, 7, 13)
    );
    assert_eq!(
        (report.skipped, report.replaced, report.repaired),
        (0, 0, 1)
    );
    assert!(report.errors.is_empty());
    assert_eq!(catalog.airport_count(), 6);
    assert_eq!(catalog.flight_count(), 7);

    let oslo = catalog.airport("osl").unwrap();
    assert_eq!(oslo.name, "Oslo Airport, Gardermoen");
    assert_eq!(oslo.country, "Norway");
    assert_eq!(oslo.utc_offset_minutes, None);

    let f = catalog.flight(&id("G8334-DELBOM-2")).unwrap();
    assert_eq!(
        *f,
        Flight {
            id: id("G8334-DELBOM-2"),
            flight_no: "G8334".into(),
            airline_code: "G8".into(),
            airline: "Go First".into(),
            origin: "DEL".into(),
            destination: "BOM".into(),
            weekday: Weekday::Wed,
            departure: t(8, 0),
            arrival: t(10, 10),
            arrival_weekday: Weekday::Wed,
            duration_minutes: 130,
            economy: inr(4589),
            business: None,
            first: None,
        }
    );
    // The same flight number on another weekday is another flight.
    assert_eq!(
        catalog.flight(&id("G8334-DELBOM-5")).unwrap().economy,
        inr(4200)
    );
    // Overnight: arrives on the next weekday.
    let overnight = catalog.flight(&id("UK817-DELBLR-4")).unwrap();
    assert_eq!(
        (overnight.arrival_weekday, overnight.arrival),
        (Weekday::Sat, t(1, 45))
    );
    assert_eq!(overnight.arrival_day_offset(), 1);
    let all_cabins = catalog.flight(&id("AI161-DELLHR-0")).unwrap();
    assert_eq!(
        (
            all_cabins.economy.clone(),
            all_cabins.business.clone(),
            all_cabins.first.clone()
        ),
        (inr(52000), inr(150000), inr(300000))
    );
    assert_eq!(all_cabins.duration_minutes, 570);
}

#[test]
fn spreadsheet_flight_numbers_are_restored() {
    let (catalog, report) = catalog_with(&["flights_domestic.csv"], ImportMode::Reject);
    assert_eq!(report.unwrap().repaired, 1);
    let f = catalog.flight(&id("6E155-DELBOM-2")).unwrap();
    assert_eq!(f.flight_no, "6E155");
    assert!(catalog
        .flights()
        .all(|f| !f.flight_no.contains('+') && !f.flight_no.contains('.')));
}

#[test]
fn blank_and_index_headers_are_both_accepted() {
    let blank = read("flights_domestic.csv");
    assert!(blank.starts_with(",origin"));
    let indexed = blank.replacen(",origin", "index,origin", 1);
    let mut a = Catalog::empty();
    let mut b = Catalog::empty();
    import_airports(
        &mut a,
        read("airports.csv").as_bytes(),
        ImportMode::Reject,
        &mut no_progress(),
    )
    .unwrap();
    import_airports(
        &mut b,
        read("airports.csv").as_bytes(),
        ImportMode::Reject,
        &mut no_progress(),
    )
    .unwrap();
    let ra = import_flights(
        &mut a,
        blank.as_bytes(),
        Currency::inr(),
        ImportMode::Reject,
        &mut no_progress(),
    )
    .unwrap();
    let rb = import_flights(
        &mut b,
        indexed.as_bytes(),
        Currency::inr(),
        ImportMode::Reject,
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(ra, rb);
    assert_eq!(ra.flights, 7);
    assert_same(&a, &b);

    // The international fixture is headed `index` as the reference file is.
    assert!(read("flights_international.csv").starts_with("index,"));
    let (c, report) = catalog_with(&["flights_international.csv"], ImportMode::Reject);
    assert_eq!(report.unwrap().flights, 5);
    assert!(c.flight(&id("EK2-LHRDXB-6")).is_some());
}

#[test]
fn zero_or_blank_fare_means_the_cabin_is_not_sold() {
    let (catalog, _) = catalog_with(
        &["flights_domestic.csv", "flights_international.csv"],
        ImportMode::Reject,
    );
    // business_fare "0", first_fare blank
    let f = catalog.flight(&id("6E155-DELBOM-2")).unwrap();
    assert_eq!(
        (f.economy.clone(), f.business.clone(), f.first.clone()),
        (inr(5100), None, None)
    );
    assert_eq!(f.cabins(), vec![booking_domain::Cabin::Economy]);
    // Only first is sold.
    let f = catalog.flight(&id("EK2-LHRDXB-6")).unwrap();
    assert_eq!(
        (f.economy.clone(), f.business.clone(), f.first.clone()),
        (None, None, inr(250000))
    );
    assert_eq!((f.arrival_weekday, f.arrival), (Weekday::Mon, t(3, 5)));
}

#[test]
fn the_currency_given_is_kept_and_decimals_are_minor_units() {
    let (catalog, _) = catalog_with(&["flights_international.csv"], ImportMode::Reject);
    let f = catalog.flight(&id("SK1500-LHROSL-1")).unwrap();
    assert_eq!(f.economy, Some(Money::new(1_250_050, Currency::inr())));

    let mut usd = Catalog::empty();
    Import::new(Currency::usd(), ImportMode::Reject)
        .airports_file(fixture("airports.csv"))
        .flights_file(fixture("flights_domestic.csv"))
        .run(&mut usd, &mut no_progress())
        .unwrap();
    let f = usd.flight(&id("G8334-DELBOM-2")).unwrap();
    assert_eq!(f.economy, Some(Money::new(458_900, Currency::usd())));
    assert!(usd
        .flights()
        .flat_map(|f| [&f.economy, &f.business, &f.first])
        .flatten()
        .all(|m| m.currency == Currency::usd()));
}

#[test]
fn same_flight_twice_in_one_import_gets_a_suffix_and_exact_duplicates_collapse() {
    let (catalog, report) = catalog_with(&["flights_international.csv"], ImportMode::Reject);
    let report = report.unwrap();
    // Rows 2 and 3 have the same flight, route and weekday with different
    // fares; row 4 repeats row 3 exactly (apart from its index).
    assert_eq!((report.disambiguated, report.duplicates), (1, 1));
    assert_eq!(
        catalog.flight(&id("EK1-DXBLHR-4")).unwrap().economy,
        inr(63791)
    );
    assert_eq!(
        catalog.flight(&id("EK1-DXBLHR-4-2")).unwrap().economy,
        inr(73594)
    );
    assert!(catalog.flight(&id("EK1-DXBLHR-4-3")).is_none());
    assert_eq!(catalog.flight_count(), 5); // six rows, one exact duplicate

    // Both files in one import: G8334 DEL-BOM Wednesday is in both with
    // different fares, so the second one gets a suffix.
    let (both, report) = catalog_with(
        &["flights_domestic.csv", "flights_international.csv"],
        ImportMode::Reject,
    );
    assert_eq!(report.unwrap().disambiguated, 2);
    assert_eq!(
        both.flight(&id("G8334-DELBOM-2-2")).unwrap().economy,
        inr(4606)
    );
}

#[test]
fn a_later_import_replaces_flights_with_the_same_id_and_reimport_is_idempotent() {
    let (mut catalog, _) = catalog_with(&["flights_domestic.csv"], ImportMode::Reject);
    let before = catalog.flight_count();
    let report = Import::new(Currency::inr(), ImportMode::Reject)
        .flights_file(fixture("flights_international.csv"))
        .run(&mut catalog, &mut no_progress())
        .unwrap();
    assert_eq!(report.replaced, 1);
    assert_eq!(catalog.flight_count(), before + report.flights - 1);
    assert_eq!(
        catalog.flight(&id("G8334-DELBOM-2")).unwrap().economy,
        inr(4606)
    );

    let count = catalog.flight_count();
    let again = Import::new(Currency::inr(), ImportMode::Reject)
        .flights_file(fixture("flights_international.csv"))
        .run(&mut catalog, &mut no_progress())
        .unwrap();
    assert_eq!(again.replaced, again.flights);
    assert_eq!(catalog.flight_count(), count);
}

const MALFORMED_LINES: [u64; 10] = [3, 4, 5, 6, 7, 8, 9, 10, 12, 13];

#[test]
fn malformed_rows_are_reported_with_their_line_in_skip_mode() {
    let (catalog, report) = catalog_with(&["flights_malformed.csv"], ImportMode::Skip);
    let report = report.unwrap();
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, MALFORMED_LINES);
    assert_eq!(report.skipped, 10);
    assert_eq!(report.flights, 2);
    assert!(catalog.flight(&id("G8334-DELBOM-2")).is_some());
    assert!(catalog.flight(&id("AI503-BLRDEL-1")).is_some());
    assert_eq!(catalog.flight_count(), 2);

    let message = |line: u64| {
        report
            .errors
            .iter()
            .find(|e| e.line == line)
            .unwrap()
            .message
            .clone()
    };
    assert!(
        message(3).contains("XXX is not a known airport"),
        "{}",
        message(3)
    );
    assert!(
        message(4).contains("depart_time \"25:00:00\""),
        "{}",
        message(4)
    );
    assert!(message(5).contains("weekday"), "{}", message(5));
    assert!(
        message(6).contains("business_fare \"-5\""),
        "{}",
        message(6)
    );
    assert!(
        message(7).contains("expected 14 fields, found 12"),
        "{}",
        message(7)
    );
    assert!(message(8).contains("both BOM"), "{}", message(8));
    assert!(message(9).contains("no cabin is sold"), "{}", message(9));
    assert!(message(10).contains("48 hours"), "{}", message(10));
    assert!(
        message(12).contains("flight_no \"AI 503\""),
        "{}",
        message(12)
    );
    assert!(message(13).contains("duration"), "{}", message(13));
    for e in &report.errors {
        assert!(e.file.ends_with("flights_malformed.csv"));
        assert!(e.to_string().contains(&format!("line {}", e.line)));
    }
}

#[test]
fn reject_mode_imports_nothing_and_reports_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let mut catalog = Catalog::open_empty(&db).unwrap();
    Import::new(Currency::inr(), ImportMode::Reject)
        .airports_file(fixture("airports.csv"))
        .flights_file(fixture("flights_domestic.csv"))
        .run(&mut catalog, &mut no_progress())
        .unwrap();
    let airports: Vec<_> = catalog.airports().cloned().collect();
    let flights: Vec<_> = catalog.flights().cloned().collect();

    // Good airports and good flights in the same import are not applied either.
    let extra_airport = "city,airport,code,country\nParis,Charles de Gaulle,CDG,France\n";
    let err = Import::new(Currency::inr(), ImportMode::Reject)
        .airports("more airports", extra_airport.as_bytes())
        .flights_file(fixture("flights_malformed.csv"))
        .run(&mut catalog, &mut no_progress())
        .unwrap_err();
    match &err {
        ImportError::Rejected { rows, errors } => {
            assert_eq!(*rows, 13);
            assert_eq!(
                errors.iter().map(|e| e.line).collect::<Vec<_>>(),
                MALFORMED_LINES
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(err.to_string().contains("10 of 13 rows"), "{err}");
    assert!(err.to_string().contains("line 3"), "{err}");

    assert_eq!(catalog.airports().cloned().collect::<Vec<_>>(), airports);
    assert_eq!(catalog.flights().cloned().collect::<Vec<_>>(), flights);
    assert!(catalog.airport("CDG").is_none());
    drop(catalog);
    let reopened = Catalog::open(&db).unwrap();
    assert_eq!(reopened.airports().cloned().collect::<Vec<_>>(), airports);
    assert_eq!(reopened.flights().cloned().collect::<Vec<_>>(), flights);
}

#[test]
fn flights_may_use_airports_of_the_same_import_but_not_unknown_ones() {
    // Alone, the international file refers to airports nobody imported.
    let mut empty = Catalog::empty();
    let report = import_flights(
        &mut empty,
        read("flights_international.csv").as_bytes(),
        Currency::inr(),
        ImportMode::Skip,
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(report.flights, 0);
    assert_eq!(report.errors.len(), 6);
    assert_eq!(report.errors[0].line, 2);
    assert!(report.errors[0]
        .message
        .contains("origin DXB is not a known airport"));
    assert_eq!(empty.flight_count(), 0);

    // With the airports in the same import (added after the flights), all is well.
    let mut catalog = Catalog::empty();
    let report = Import::new(Currency::inr(), ImportMode::Reject)
        .flights_file(fixture("flights_international.csv"))
        .airports_file(fixture("airports.csv"))
        .run(&mut catalog, &mut no_progress())
        .unwrap();
    assert_eq!(report.flights, 5);
}

#[test]
fn malformed_airport_rows_are_reported() {
    let csv = "city,airport,code,country,utc_offset_minutes\n\
               Paris,Charles de Gaulle,CDG,France,60\n\
               Nowhere,Nothing,N1,Atlantis,\n\
               ,No City,NCY,France,\n\
               Far,Far Away,FAR,Moon,9000\n\
               Lyon,Lyon-Saint Exupery,lys,France,\n";
    let mut catalog = Catalog::empty();
    let report = import_airports(
        &mut catalog,
        csv.as_bytes(),
        ImportMode::Skip,
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(
        report.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(report.errors[0]
        .message
        .contains("\"N1\" is not a three-letter airport code"));
    assert!(report.errors[1].message.contains("city is empty"));
    assert!(report.errors[2].message.contains("utc_offset_minutes"));
    assert_eq!(catalog.airport("CDG").unwrap().utc_offset_minutes, Some(60));
    assert_eq!(catalog.airport("LYS").unwrap().code, "LYS");
}

#[test]
fn a_file_without_the_required_columns_is_refused_whole() {
    let mut catalog = Catalog::empty();
    let err = import_flights(
        &mut catalog,
        "origin,destination\nDEL,BOM\n".as_bytes(),
        Currency::inr(),
        ImportMode::Skip,
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::Header { .. }), "{err:?}");
    assert!(err.to_string().contains("depart_time"), "{err}");
    let err = import_airports(
        &mut catalog,
        "".as_bytes(),
        ImportMode::Skip,
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::Header { .. }), "{err:?}");
    let err = Import::new(Currency::inr(), ImportMode::Skip)
        .flights_file(fixture("no_such_file.csv"))
        .run(&mut catalog, &mut no_progress())
        .unwrap_err();
    assert!(matches!(err, ImportError::Io { .. }), "{err:?}");
    assert_eq!(catalog.flight_count() + catalog.airport_count(), 0);
}

#[test]
fn progress_is_reported_every_n_rows_and_at_the_end() {
    let mut seen = Vec::new();
    let mut catalog = Catalog::empty();
    Import::new(Currency::inr(), ImportMode::Reject)
        .airports_file(fixture("airports.csv"))
        .flights_file(fixture("flights_domestic.csv"))
        .progress_every(4)
        .run(&mut catalog, &mut |p| {
            seen.push((p.rows_done, p.rows_total))
        })
        .unwrap();
    assert_eq!(seen, vec![(4, 13), (8, 13), (12, 13), (13, 13)]);
}

#[test]
fn export_then_reimport_gives_the_same_catalog_for_the_fixtures() {
    let (catalog, report) = catalog_with(
        &["flights_domestic.csv", "flights_international.csv"],
        ImportMode::Reject,
    );
    report.unwrap();
    let (airports, flights) = export(&catalog);
    let text = String::from_utf8(flights.clone()).unwrap();
    assert!(text.starts_with("index,origin,destination,depart_time,depart_weekday,duration,arrival_time,arrival_weekday,flight_no,airline_code,airline,economy_fare,business_fare,first_fare\n"));
    // Whole units, blank for an unsold cabin, two decimals only when needed.
    assert!(
        text.contains(",DEL,BOM,08:00:00,2,02:10:00,10:10:00,2,G8334,G8,Go First,4589,,\n"),
        "{text}"
    );
    assert!(text.contains(",SK1500,SK,SAS,12500.50,,\n"), "{text}");
    let airports_text = String::from_utf8(airports.clone()).unwrap();
    assert!(
        airports_text.starts_with("city,airport,code,country\n"),
        "{airports_text}"
    );
    assert!(airports_text.contains("Oslo,\"Oslo Airport, Gardermoen\",OSL,Norway\n"));

    let copy = reimport(&airports, &flights, Currency::inr());
    assert_same(&catalog, &copy);
    assert!(copy.flight(&id("EK1-DXBLHR-4-2")).is_some());
}

#[test]
fn export_then_reimport_gives_the_same_catalog_for_the_default_dataset() {
    let catalog = Catalog::default_dataset();
    let (airports, flights) = export(&catalog);
    let header = String::from_utf8(airports[..80].to_vec()).unwrap();
    assert!(header.starts_with("city,airport,code,country,utc_offset_minutes,latitude,longitude\n"));
    let copy = reimport(&airports, &flights, Currency::usd());
    assert_same(&catalog, &copy);
    assert_eq!(copy.airport("KTM").unwrap().utc_offset_minutes, Some(345));
}

#[test]
fn export_refuses_mixed_currencies() {
    let mut catalog = Catalog::default_dataset();
    Import::new(Currency::inr(), ImportMode::Reject)
        .flights_file(fixture("flights_domestic.csv"))
        .run(&mut catalog, &mut no_progress())
        .unwrap();
    let err = export_flights(&catalog, Vec::new()).unwrap_err();
    assert!(
        matches!(err, ExportError::MixedCurrencies { .. }),
        "{err:?}"
    );
}

#[test]
fn airports_keep_known_time_zones_when_the_csv_has_none() {
    let mut catalog = Catalog::default_dataset();
    assert_eq!(
        catalog.airport("DEL").unwrap().utc_offset_minutes,
        Some(330)
    );
    let report = import_airports(
        &mut catalog,
        read("airports.csv").as_bytes(),
        ImportMode::Reject,
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(report.replaced, 5); // all but OSL exist in the default dataset
    let del = catalog.airport("DEL").unwrap();
    assert_eq!(del.utc_offset_minutes, Some(330));
    assert!(del.location.is_some());
    assert_eq!(catalog.airport("OSL").unwrap().utc_offset_minutes, None);
}

#[test]
fn from_dir_finds_the_reference_file_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("airports.csv"), dir.path().join("airports.csv")).unwrap();
    std::fs::copy(
        fixture("flights_domestic.csv"),
        dir.path().join("domestic_flights.csv"),
    )
    .unwrap();
    std::fs::copy(
        fixture("flights_international.csv"),
        dir.path().join("international_flights.csv"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not csv").unwrap();
    let mut catalog = Catalog::empty();
    let report = Import::from_dir(dir.path(), Currency::inr(), ImportMode::Reject)
        .unwrap()
        .run(&mut catalog, &mut no_progress())
        .unwrap();
    assert_eq!((report.airports, report.flights), (6, 7 + 5));

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Import::from_dir(empty.path(), Currency::inr(), ImportMode::Reject),
        Err(ImportError::NothingToImport(_))
    ));
}

//! Imports the reference dataset and checks that it round-trips.
//!
//! ```text
//! cargo run -p booking-domain --example import_reference -- /work/shared/data
//! ```
//!
//! Reads `airports.csv`, `domestic_flights.csv` and `international_flights.csv`
//! from the given directory in `Reject` mode with fares in INR into a catalog
//! stored in a temporary sled database, reopens that database to check the
//! import was stored, then exports the catalog to CSV, imports the export into
//! a fresh catalog and checks both are the same. Exits with a non-zero status
//! if any row is rejected or anything differs.

use booking_domain::catalog::Catalog;
use booking_domain::import::{
    export_airports, export_flights, Import, ImportError, ImportMode, ImportProgress,
};
use booking_domain::Currency;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const FILES: [&str; 3] = [
    "airports.csv",
    "domestic_flights.csv",
    "international_flights.csv",
];

fn main() -> ExitCode {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    match run(&dir) {
        Ok(()) => {
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let db = sled::open(tmp.path()).map_err(|e| format!("sled: {e}"))?;
    let mut catalog = Catalog::open_empty(&db).map_err(|e| e.to_string())?;

    println!(
        "importing {} from {} (Reject mode, fares in INR)",
        FILES.join(", "),
        dir.display()
    );
    let import = Import::new(Currency::inr(), ImportMode::Reject)
        .airports_file(dir.join(FILES[0]))
        .flights_file(dir.join(FILES[1]))
        .flights_file(dir.join(FILES[2]));
    let started = Instant::now();
    let mut progress =
        |p: ImportProgress| println!("  checked {:>6} / {} rows", p.rows_done, p.rows_total);
    let report = match import.run(&mut catalog, &mut progress) {
        Ok(report) => report,
        Err(ImportError::Rejected { rows, errors }) => {
            for e in errors.iter().take(20) {
                eprintln!("  {e}");
            }
            return Err(format!("{} of {rows} rows rejected", errors.len()));
        }
        Err(e) => return Err(e.to_string()),
    };
    println!("imported in {:?}:", started.elapsed());
    println!(
        "  rows imported      {:>6} ({} airports, {} flights)",
        report.imported, report.airports, report.flights
    );
    println!("  rows rejected      {:>6}", report.skipped);
    println!(
        "  rows replacing an airport or flight already there {:>4}",
        report.replaced
    );
    println!(
        "  flight numbers restored from spreadsheet notation {:>4}",
        report.repaired
    );
    println!(
        "  rows identical to an earlier row, imported once {:>4}",
        report.duplicates
    );
    println!(
        "  duplicate flight/route/weekday rows given a suffix {:>4}",
        report.disambiguated
    );
    println!(
        "catalog: {} airports, {} flights",
        catalog.airport_count(),
        catalog.flight_count()
    );
    if report.skipped > 0 {
        return Err(format!("{} rows rejected", report.skipped));
    }

    let reopened = Catalog::open(&db).map_err(|e| format!("reopen: {e}"))?;
    same("sled reopen", &catalog, &reopened)?;
    println!("reopened sled store: same catalog");

    let (mut airports_csv, mut flights_csv) = (Vec::new(), Vec::new());
    let a = export_airports(&catalog, &mut airports_csv).map_err(|e| e.to_string())?;
    let f = export_flights(&catalog, &mut flights_csv).map_err(|e| e.to_string())?;
    println!(
        "exported {a} airports ({} bytes), {f} flights ({} bytes)",
        airports_csv.len(),
        flights_csv.len()
    );
    let mut copy = Catalog::empty();
    Import::new(Currency::inr(), ImportMode::Reject)
        .airports("exported airports", airports_csv.as_slice())
        .flights("exported flights", flights_csv.as_slice())
        .run(&mut copy, &mut |_| {})
        .map_err(|e| format!("re-import of the export: {e}"))?;
    same("export and re-import", &catalog, &copy)?;
    println!("export and re-import: same catalog");
    Ok(())
}

fn same(what: &str, a: &Catalog, b: &Catalog) -> Result<(), String> {
    if let Some((x, y)) = a.airports().zip(b.airports()).find(|(x, y)| x != y) {
        return Err(format!("{what}: airports differ: {x:?} vs {y:?}"));
    }
    if let Some((x, y)) = a.flights().zip(b.flights()).find(|(x, y)| x != y) {
        return Err(format!("{what}: flights differ: {x:?} vs {y:?}"));
    }
    if (a.airport_count(), a.flight_count()) != (b.airport_count(), b.flight_count()) {
        return Err(format!(
            "{what}: {} airports and {} flights vs {} and {}",
            a.airport_count(),
            a.flight_count(),
            b.airport_count(),
            b.flight_count()
        ));
    }
    Ok(())
}

//! The built-in dataset: real airports and a generated weekly schedule.
//!
//! The airports are a hand-written table (IATA code, city, name, country,
//! standard-time UTC offset, coordinates). Daylight saving time is not
//! modelled: each airport keeps its standard offset all year. The schedule is
//! generated from a small table of real airlines, their hubs and a few
//! destinations each, with our own splitmix64 generator and a fixed seed, so
//! the data is identical on every machine and never changes with a crate
//! version. Durations are the great-circle distance flown at about 800 km/h
//! plus 30 minutes of taxi; arrival times are local to the destination (both
//! airports' offsets applied) and may fall on another weekday. Fares are whole
//! US dollars that grow with distance and cabin (first > business > economy);
//! low-cost airlines sell economy only and only some long-haul flights sell
//! first.

use super::{add_seconds, flight_id, Airport, Flight, GeoPoint};
use crate::types::{Currency, Money};
use chrono::{NaiveTime, Weekday};
use std::collections::{BTreeMap, BTreeSet};

/// Seed of the schedule generator. Changing it changes every generated flight.
const SEED: u64 = 0x5EED_F11E_C0DE_0001;

/// `(code, city, name, country, UTC offset in minutes, latitude, longitude)`.
type AirportRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    i32,
    f64,
    f64,
);

#[rustfmt::skip]
const AIRPORTS: &[AirportRow] = &[
    // India and neighbours
    ("DEL", "Delhi", "Indira Gandhi International Airport", "India", 330, 28.5562, 77.1000),
    ("BOM", "Mumbai", "Chhatrapati Shivaji Maharaj International Airport", "India", 330, 19.0896, 72.8656),
    ("BLR", "Bengaluru", "Kempegowda International Airport", "India", 330, 13.1986, 77.7066),
    ("MAA", "Chennai", "Chennai International Airport", "India", 330, 12.9941, 80.1709),
    ("CCU", "Kolkata", "Netaji Subhas Chandra Bose International Airport", "India", 330, 22.6547, 88.4467),
    ("HYD", "Hyderabad", "Rajiv Gandhi International Airport", "India", 330, 17.2403, 78.4294),
    ("COK", "Kochi", "Cochin International Airport", "India", 330, 10.1520, 76.4019),
    ("GOI", "Goa", "Dabolim Airport", "India", 330, 15.3808, 73.8314),
    ("AMD", "Ahmedabad", "Sardar Vallabhbhai Patel International Airport", "India", 330, 23.0772, 72.6347),
    ("PNQ", "Pune", "Pune Airport", "India", 330, 18.5822, 73.9197),
    ("JAI", "Jaipur", "Jaipur International Airport", "India", 330, 26.8242, 75.8122),
    ("LKO", "Lucknow", "Chaudhary Charan Singh International Airport", "India", 330, 26.7606, 80.8893),
    ("CMB", "Colombo", "Bandaranaike International Airport", "Sri Lanka", 330, 7.1808, 79.8841),
    ("KTM", "Kathmandu", "Tribhuvan International Airport", "Nepal", 345, 27.6966, 85.3591),
    // North America
    ("JFK", "New York", "John F. Kennedy International Airport", "United States", -300, 40.6413, -73.7781),
    ("LAX", "Los Angeles", "Los Angeles International Airport", "United States", -480, 33.9416, -118.4085),
    ("ORD", "Chicago", "O'Hare International Airport", "United States", -360, 41.9742, -87.9073),
    ("ATL", "Atlanta", "Hartsfield-Jackson Atlanta International Airport", "United States", -300, 33.6407, -84.4277),
    ("SFO", "San Francisco", "San Francisco International Airport", "United States", -480, 37.6213, -122.3790),
    ("DFW", "Dallas", "Dallas Fort Worth International Airport", "United States", -360, 32.8998, -97.0403),
    ("SEA", "Seattle", "Seattle-Tacoma International Airport", "United States", -480, 47.4502, -122.3088),
    ("MIA", "Miami", "Miami International Airport", "United States", -300, 25.7959, -80.2870),
    ("BOS", "Boston", "Logan International Airport", "United States", -300, 42.3656, -71.0096),
    ("DEN", "Denver", "Denver International Airport", "United States", -420, 39.8561, -104.6737),
    ("IAD", "Washington", "Washington Dulles International Airport", "United States", -300, 38.9531, -77.4565),
    ("YYZ", "Toronto", "Toronto Pearson International Airport", "Canada", -300, 43.6777, -79.6248),
    ("YVR", "Vancouver", "Vancouver International Airport", "Canada", -480, 49.1967, -123.1815),
    ("MEX", "Mexico City", "Mexico City International Airport", "Mexico", -360, 19.4361, -99.0719),
    // South America
    ("GRU", "São Paulo", "São Paulo/Guarulhos International Airport", "Brazil", -180, -23.4356, -46.4731),
    ("EZE", "Buenos Aires", "Ministro Pistarini International Airport", "Argentina", -180, -34.8222, -58.5358),
    // Europe
    ("LHR", "London", "Heathrow Airport", "United Kingdom", 0, 51.4700, -0.4543),
    ("LGW", "London", "Gatwick Airport", "United Kingdom", 0, 51.1537, -0.1821),
    ("MAN", "Manchester", "Manchester Airport", "United Kingdom", 0, 53.3537, -2.2750),
    ("DUB", "Dublin", "Dublin Airport", "Ireland", 0, 53.4264, -6.2499),
    ("LIS", "Lisbon", "Humberto Delgado Airport", "Portugal", 0, 38.7813, -9.1359),
    ("CDG", "Paris", "Paris Charles de Gaulle Airport", "France", 60, 49.0097, 2.5479),
    ("NCE", "Nice", "Nice Côte d'Azur Airport", "France", 60, 43.6584, 7.2159),
    ("FRA", "Frankfurt", "Frankfurt Airport", "Germany", 60, 50.0379, 8.5622),
    ("MUC", "Munich", "Munich Airport", "Germany", 60, 48.3537, 11.7750),
    ("AMS", "Amsterdam", "Amsterdam Airport Schiphol", "Netherlands", 60, 52.3105, 4.7683),
    ("MAD", "Madrid", "Adolfo Suárez Madrid-Barajas Airport", "Spain", 60, 40.4983, -3.5676),
    ("BCN", "Barcelona", "Josep Tarradellas Barcelona-El Prat Airport", "Spain", 60, 41.2974, 2.0833),
    ("FCO", "Rome", "Leonardo da Vinci-Fiumicino Airport", "Italy", 60, 41.8003, 12.2389),
    ("ZRH", "Zurich", "Zurich Airport", "Switzerland", 60, 47.4582, 8.5555),
    ("CPH", "Copenhagen", "Copenhagen Airport", "Denmark", 60, 55.6180, 12.6508),
    ("VIE", "Vienna", "Vienna International Airport", "Austria", 60, 48.1103, 16.5697),
    ("IST", "Istanbul", "Istanbul Airport", "Turkey", 180, 41.2753, 28.7519),
    // Middle East and Africa
    ("DXB", "Dubai", "Dubai International Airport", "United Arab Emirates", 240, 25.2532, 55.3657),
    ("AUH", "Abu Dhabi", "Zayed International Airport", "United Arab Emirates", 240, 24.4330, 54.6511),
    ("DOH", "Doha", "Hamad International Airport", "Qatar", 180, 25.2731, 51.6081),
    ("JED", "Jeddah", "King Abdulaziz International Airport", "Saudi Arabia", 180, 21.6796, 39.1565),
    ("CAI", "Cairo", "Cairo International Airport", "Egypt", 120, 30.1219, 31.4056),
    ("NBO", "Nairobi", "Jomo Kenyatta International Airport", "Kenya", 180, -1.3192, 36.9278),
    ("JNB", "Johannesburg", "O. R. Tambo International Airport", "South Africa", 120, -26.1367, 28.2411),
    // Asia
    ("SIN", "Singapore", "Singapore Changi Airport", "Singapore", 480, 1.3644, 103.9915),
    ("BKK", "Bangkok", "Suvarnabhumi Airport", "Thailand", 420, 13.6900, 100.7501),
    ("KUL", "Kuala Lumpur", "Kuala Lumpur International Airport", "Malaysia", 480, 2.7456, 101.7072),
    ("CGK", "Jakarta", "Soekarno-Hatta International Airport", "Indonesia", 420, -6.1256, 106.6559),
    ("MNL", "Manila", "Ninoy Aquino International Airport", "Philippines", 480, 14.5086, 121.0194),
    ("SGN", "Ho Chi Minh City", "Tan Son Nhat International Airport", "Vietnam", 420, 10.8188, 106.6519),
    ("HKG", "Hong Kong", "Hong Kong International Airport", "Hong Kong", 480, 22.3080, 113.9185),
    ("PEK", "Beijing", "Beijing Capital International Airport", "China", 480, 40.0799, 116.6031),
    ("PVG", "Shanghai", "Shanghai Pudong International Airport", "China", 480, 31.1443, 121.8083),
    ("HND", "Tokyo", "Haneda Airport", "Japan", 540, 35.5494, 139.7798),
    ("NRT", "Tokyo", "Narita International Airport", "Japan", 540, 35.7720, 140.3929),
    ("KIX", "Osaka", "Kansai International Airport", "Japan", 540, 34.4320, 135.2304),
    ("ICN", "Seoul", "Incheon International Airport", "South Korea", 540, 37.4602, 126.4407),
    // Oceania
    ("SYD", "Sydney", "Sydney Kingsford Smith Airport", "Australia", 600, -33.9399, 151.1753),
    ("MEL", "Melbourne", "Melbourne Airport", "Australia", 600, -37.6690, 144.8410),
    ("AKL", "Auckland", "Auckland Airport", "New Zealand", 720, -37.0082, 174.7850),
];

/// An airline of the generated schedule and the routes it flies from each hub.
struct Carrier {
    code: &'static str,
    name: &'static str,
    /// Low-cost carriers sell economy only.
    low_cost: bool,
    /// Whether some of its long-haul flights sell a first cabin.
    first_class: bool,
    /// `(hub, destinations)`: each pair is flown both ways.
    network: &'static [(&'static str, &'static [&'static str])],
}

#[rustfmt::skip]
const CARRIERS: &[Carrier] = &[
    Carrier { code: "AI", name: "Air India", low_cost: false, first_class: true, network: &[
        ("DEL", &["BOM", "BLR", "MAA", "CCU", "HYD", "GOI", "LKO", "LHR", "JFK", "FRA", "DXB", "SIN"]),
        ("BOM", &["BLR", "MAA", "COK", "AMD", "LHR", "SFO", "DXB"]),
    ]},
    Carrier { code: "6E", name: "IndiGo", low_cost: true, first_class: false, network: &[
        ("DEL", &["BOM", "BLR", "CCU", "HYD", "GOI", "AMD", "PNQ", "JAI", "DXB", "BKK", "KTM"]),
        ("BLR", &["BOM", "MAA", "HYD", "COK", "GOI", "PNQ", "LKO", "SIN", "CMB"]),
    ]},
    Carrier { code: "AA", name: "American Airlines", low_cost: false, first_class: true, network: &[
        ("DFW", &["JFK", "LAX", "ORD", "MIA", "DEN", "MEX", "LHR", "HND"]),
        ("MIA", &["JFK", "BOS", "IAD", "GRU", "EZE", "MAD"]),
    ]},
    Carrier { code: "UA", name: "United Airlines", low_cost: false, first_class: false, network: &[
        ("SFO", &["ORD", "IAD", "LAX", "SEA", "BOS", "DEN", "NRT", "SYD", "DEL"]),
        ("ORD", &["IAD", "DEN", "LHR", "FRA", "MEX"]),
        ("IAD", &["MUC", "ICN", "YVR"]),
    ]},
    Carrier { code: "DL", name: "Delta Air Lines", low_cost: false, first_class: false, network: &[
        ("ATL", &["JFK", "LAX", "SEA", "BOS", "DFW", "MIA", "CDG", "AMS", "JNB", "MEX"]),
        ("JFK", &["SFO", "LAX", "LHR", "DUB", "FCO"]),
        ("SEA", &["ICN", "HND"]),
    ]},
    Carrier { code: "B6", name: "JetBlue", low_cost: false, first_class: false, network: &[
        ("JFK", &["BOS", "LAX", "SFO", "MIA", "LHR"]),
        ("BOS", &["SEA", "ORD"]),
    ]},
    Carrier { code: "F9", name: "Frontier Airlines", low_cost: true, first_class: false, network: &[
        ("DEN", &["LAX", "SFO", "SEA", "ATL", "ORD", "MIA", "DFW"]),
    ]},
    Carrier { code: "AC", name: "Air Canada", low_cost: false, first_class: false, network: &[
        ("YYZ", &["YVR", "JFK", "ORD", "MIA", "LHR", "FRA", "DEL"]),
        ("YVR", &["SFO", "LAX", "HND", "SYD"]),
    ]},
    Carrier { code: "AM", name: "Aeroméxico", low_cost: false, first_class: false, network: &[
        ("MEX", &["JFK", "LAX", "MIA", "MAD", "GRU"]),
    ]},
    Carrier { code: "LA", name: "LATAM Airlines", low_cost: false, first_class: false, network: &[
        ("GRU", &["EZE", "MIA", "JFK", "LIS", "MAD"]),
    ]},
    Carrier { code: "BA", name: "British Airways", low_cost: false, first_class: true, network: &[
        ("LHR", &["MAN", "DUB", "CDG", "AMS", "FRA", "MAD", "FCO", "ZRH", "NCE", "JFK", "BOS", "LAX", "YYZ", "DXB", "DEL", "BOM", "SIN", "HKG", "JNB", "HND"]),
    ]},
    Carrier { code: "U2", name: "easyJet", low_cost: true, first_class: false, network: &[
        ("LGW", &["NCE", "BCN", "MAD", "LIS", "AMS", "ZRH", "CPH"]),
        ("MAN", &["BCN", "FCO", "DUB"]),
    ]},
    Carrier { code: "AF", name: "Air France", low_cost: false, first_class: true, network: &[
        ("CDG", &["NCE", "MAD", "BCN", "FCO", "LIS", "JFK", "LAX", "YYZ", "MEX", "GRU", "DXB", "DEL", "BKK", "SIN", "HND", "PVG", "JNB", "CAI"]),
    ]},
    Carrier { code: "KL", name: "KLM", low_cost: false, first_class: false, network: &[
        ("AMS", &["LHR", "MAN", "CPH", "BCN", "VIE", "JFK", "ATL", "YVR", "BOM", "KUL", "ICN", "NBO"]),
    ]},
    Carrier { code: "LH", name: "Lufthansa", low_cost: false, first_class: true, network: &[
        ("FRA", &["MUC", "LHR", "CDG", "MAD", "BCN", "VIE", "IST", "JFK", "ORD", "SFO", "MEX", "DEL", "BOM", "SIN", "HKG", "PEK", "JNB"]),
        ("MUC", &["LHR", "FCO", "ZRH", "CPH", "BOS", "LAX", "BLR", "ICN"]),
    ]},
    Carrier { code: "LX", name: "Swiss", low_cost: false, first_class: true, network: &[
        ("ZRH", &["LHR", "CDG", "BCN", "LIS", "VIE", "JFK", "MIA", "BOM", "BKK", "NRT"]),
    ]},
    Carrier { code: "EK", name: "Emirates", low_cost: false, first_class: true, network: &[
        ("DXB", &["DEL", "BOM", "BLR", "HYD", "COK", "CMB", "KTM", "LHR", "MAN", "CDG", "FRA", "MUC", "FCO", "JFK", "LAX", "SEA", "YYZ", "GRU", "JNB", "NBO", "CAI", "SIN", "BKK", "HKG", "HND", "SYD", "AKL"]),
    ]},
    Carrier { code: "QR", name: "Qatar Airways", low_cost: false, first_class: true, network: &[
        ("DOH", &["DEL", "BOM", "BLR", "MAA", "KTM", "LHR", "CDG", "FRA", "AMS", "MAD", "IST", "JFK", "ORD", "MIA", "JNB", "NBO", "JED", "DXB", "SIN", "KUL", "MNL", "PVG", "SYD"]),
    ]},
    Carrier { code: "EY", name: "Etihad Airways", low_cost: false, first_class: true, network: &[
        ("AUH", &["DEL", "BOM", "COK", "LHR", "CDG", "FRA", "JFK", "ORD", "CAI", "BKK", "MNL", "SYD"]),
    ]},
    Carrier { code: "SV", name: "Saudia", low_cost: false, first_class: true, network: &[
        ("JED", &["DXB", "CAI", "IST", "LHR", "CDG", "BOM", "KUL", "CGK"]),
    ]},
    Carrier { code: "TK", name: "Turkish Airlines", low_cost: false, first_class: false, network: &[
        ("IST", &["LHR", "CDG", "AMS", "FRA", "MAD", "FCO", "VIE", "JFK", "ORD", "LAX", "YYZ", "GRU", "CAI", "NBO", "JNB", "DXB", "DEL", "SIN", "BKK", "ICN"]),
    ]},
    Carrier { code: "MS", name: "EgyptAir", low_cost: false, first_class: false, network: &[
        ("CAI", &["JED", "DXB", "LHR", "FRA", "FCO", "JFK", "NBO"]),
    ]},
    Carrier { code: "KQ", name: "Kenya Airways", low_cost: false, first_class: false, network: &[
        ("NBO", &["JNB", "DXB", "LHR", "CDG", "BOM", "BKK"]),
    ]},
    Carrier { code: "SA", name: "South African Airways", low_cost: false, first_class: false, network: &[
        ("JNB", &["LHR", "FRA", "GRU"]),
    ]},
    Carrier { code: "SQ", name: "Singapore Airlines", low_cost: false, first_class: true, network: &[
        ("SIN", &["KUL", "CGK", "BKK", "MNL", "SGN", "HKG", "PVG", "HND", "ICN", "SYD", "MEL", "AKL", "DEL", "BOM", "MAA", "LHR", "FRA", "ZRH", "JFK", "SFO", "LAX"]),
    ]},
    Carrier { code: "CX", name: "Cathay Pacific", low_cost: false, first_class: true, network: &[
        ("HKG", &["SIN", "BKK", "MNL", "PEK", "PVG", "HND", "KIX", "ICN", "SYD", "MEL", "DEL", "BOM", "DXB", "LHR", "CDG", "FRA", "JFK", "LAX", "SFO", "YVR"]),
    ]},
    Carrier { code: "NH", name: "All Nippon Airways", low_cost: false, first_class: true, network: &[
        ("HND", &["KIX", "ICN", "PEK", "HKG", "SIN", "BKK", "DEL", "LHR", "FRA", "JFK", "LAX", "SEA", "SYD"]),
        ("NRT", &["PVG", "MNL", "CGK", "BOM", "IAD", "MEX"]),
    ]},
    Carrier { code: "JL", name: "Japan Airlines", low_cost: false, first_class: true, network: &[
        ("HND", &["KIX", "PVG", "SIN", "CDG", "JFK", "SFO", "DFW"]),
        ("NRT", &["BKK", "DEL", "KUL", "BOS", "ORD", "MEL"]),
    ]},
    Carrier { code: "KE", name: "Korean Air", low_cost: false, first_class: true, network: &[
        ("ICN", &["HND", "KIX", "PEK", "PVG", "HKG", "BKK", "SIN", "MNL", "DEL", "SYD", "LHR", "CDG", "FRA", "JFK", "LAX", "ATL", "YYZ"]),
    ]},
    Carrier { code: "CA", name: "Air China", low_cost: false, first_class: true, network: &[
        ("PEK", &["PVG", "HKG", "HND", "ICN", "SIN", "BKK", "DEL", "LHR", "FRA", "JFK", "LAX", "SYD"]),
    ]},
    Carrier { code: "MU", name: "China Eastern Airlines", low_cost: false, first_class: false, network: &[
        ("PVG", &["PEK", "HKG", "NRT", "KIX", "ICN", "SIN", "SGN", "CDG", "AMS", "JFK", "SFO", "MEL"]),
    ]},
    Carrier { code: "QF", name: "Qantas", low_cost: false, first_class: true, network: &[
        ("SYD", &["MEL", "AKL", "SIN", "HKG", "HND", "LAX", "DFW", "JNB"]),
        ("MEL", &["AKL", "SIN", "DEL", "LAX"]),
    ]},
    Carrier { code: "NZ", name: "Air New Zealand", low_cost: false, first_class: false, network: &[
        ("AKL", &["SYD", "MEL", "SIN", "HKG", "NRT", "LAX", "SFO", "YVR"]),
    ]},
    Carrier { code: "TG", name: "Thai Airways", low_cost: false, first_class: true, network: &[
        ("BKK", &["SIN", "KUL", "CGK", "SGN", "HKG", "PVG", "NRT", "ICN", "DEL", "BOM", "CCU", "KTM", "CMB", "LHR", "FRA", "CPH", "SYD"]),
    ]},
    Carrier { code: "MH", name: "Malaysia Airlines", low_cost: false, first_class: false, network: &[
        ("KUL", &["SIN", "BKK", "CGK", "MNL", "HKG", "PEK", "NRT", "DEL", "BLR", "MAA", "KTM", "DOH", "LHR", "SYD", "AKL"]),
    ]},
    Carrier { code: "GA", name: "Garuda Indonesia", low_cost: false, first_class: false, network: &[
        ("CGK", &["SIN", "KUL", "BKK", "HKG", "HND", "ICN", "JED", "SYD", "AMS"]),
    ]},
    Carrier { code: "PR", name: "Philippine Airlines", low_cost: false, first_class: false, network: &[
        ("MNL", &["SIN", "HKG", "SGN", "HND", "ICN", "SYD", "LAX", "SFO", "YVR", "DXB"]),
    ]},
    Carrier { code: "VN", name: "Vietnam Airlines", low_cost: false, first_class: false, network: &[
        ("SGN", &["SIN", "BKK", "HKG", "HND", "ICN", "SYD", "CDG", "FRA", "SFO"]),
    ]},
    Carrier { code: "UL", name: "SriLankan Airlines", low_cost: false, first_class: false, network: &[
        ("CMB", &["DEL", "BOM", "MAA", "COK", "DXB", "SIN", "KUL", "LHR", "MEL"]),
    ]},
    Carrier { code: "EI", name: "Aer Lingus", low_cost: false, first_class: false, network: &[
        ("DUB", &["LHR", "MAN", "AMS", "CDG", "MAD", "LIS", "JFK", "BOS", "ORD", "SFO", "YYZ"]),
    ]},
    Carrier { code: "TP", name: "TAP Air Portugal", low_cost: false, first_class: false, network: &[
        ("LIS", &["MAD", "BCN", "LHR", "CDG", "FRA", "JFK", "BOS", "MIA"]),
    ]},
    Carrier { code: "SK", name: "SAS", low_cost: false, first_class: false, network: &[
        ("CPH", &["LHR", "AMS", "CDG", "FRA", "NCE", "FCO", "VIE", "JFK", "LAX", "MIA", "BKK", "HND"]),
    ]},
    Carrier { code: "OS", name: "Austrian Airlines", low_cost: false, first_class: false, network: &[
        ("VIE", &["LHR", "CDG", "ZRH", "BCN", "IST", "JFK", "IAD", "YYZ", "BKK"]),
    ]},
    Carrier { code: "IB", name: "Iberia", low_cost: false, first_class: false, network: &[
        ("MAD", &["BCN", "LIS", "LHR", "CDG", "FCO", "JFK", "BOS", "ORD", "LAX", "DFW", "MEX", "EZE"]),
    ]},
    Carrier { code: "VY", name: "Vueling", low_cost: true, first_class: false, network: &[
        ("BCN", &["MAD", "LHR", "CDG", "NCE", "AMS", "FCO", "ZRH", "DUB"]),
    ]},
    Carrier { code: "AZ", name: "ITA Airways", low_cost: false, first_class: false, network: &[
        ("FCO", &["NCE", "CDG", "FRA", "AMS", "VIE", "JFK", "MIA", "GRU", "DEL", "CAI"]),
    ]},
];

/// The splitmix64 generator (Steele, Lea, Flood 2014): tiny, fast, and ours,
/// so the generated schedule never depends on another crate's algorithm.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi` (the modulo bias is irrelevant at these sizes).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// A factor in `lo_pct..=hi_pct` percent, as a float multiplier.
    fn factor(&mut self, lo_pct: u64, hi_pct: u64) -> f64 {
        self.range(lo_pct, hi_pct) as f64 / 100.0
    }
}

/// The airports of the default dataset.
pub(super) fn airports() -> Vec<Airport> {
    AIRPORTS
        .iter()
        .map(|&(code, city, name, country, offset, lat, lon)| Airport {
            code: code.to_string(),
            city: city.to_string(),
            name: name.to_string(),
            country: country.to_string(),
            utc_offset_minutes: Some(offset),
            location: Some(GeoPoint {
                latitude: lat,
                longitude: lon,
            }),
        })
        .collect()
}

/// The generated weekly schedule of the default dataset.
pub(super) fn flights() -> Vec<Flight> {
    let airports: BTreeMap<&str, &AirportRow> = AIRPORTS.iter().map(|a| (a.0, a)).collect();
    let mut rng = SplitMix64(SEED);
    let mut flights = Vec::new();
    for carrier in CARRIERS {
        // Each unordered pair once, in table order, flown in both directions.
        let mut seen = BTreeSet::new();
        let mut pairs = Vec::new();
        for (hub, destinations) in carrier.network {
            for dest in destinations.iter() {
                let key = if hub < dest {
                    (*hub, *dest)
                } else {
                    (*dest, *hub)
                };
                if hub != dest && seen.insert(key) {
                    pairs.push((*hub, *dest));
                }
            }
        }
        let mut number = 100u32;
        for (a, b) in pairs {
            let (Some(from), Some(to)) = (airports.get(a), airports.get(b)) else {
                // A typo in the tables above; the dataset test catches it.
                continue;
            };
            for (origin, destination) in [(*from, *to), (*to, *from)] {
                route_flights(
                    carrier,
                    origin,
                    destination,
                    &mut number,
                    &mut rng,
                    &mut flights,
                );
            }
        }
    }
    flights
}

/// Generates the weekly flights of one carrier on one directed route.
fn route_flights(
    carrier: &Carrier,
    origin: &AirportRow,
    destination: &AirportRow,
    number: &mut u32,
    rng: &mut SplitMix64,
    out: &mut Vec<Flight>,
) {
    let km = GeoPoint {
        latitude: origin.5,
        longitude: origin.6,
    }
    .distance_km(&GeoPoint {
        latitude: destination.5,
        longitude: destination.6,
    });
    let slots = if km < 1500.0 {
        rng.range(1, 2)
    } else if km < 4000.0 && rng.chance(30) {
        2
    } else {
        1
    };
    let duration_minutes = ((km / 800.0 * 60.0 + 30.0) / 5.0).round() as u32 * 5;
    let offset_shift = i64::from(destination.4 - origin.4) * 60;
    for _ in 0..slots {
        *number += 1;
        let flight_no = format!("{}{}", carrier.code, *number);
        // Departures from 05:00 to 23:30 local, on a five-minute grid.
        let departure =
            NaiveTime::from_num_seconds_from_midnight_opt(rng.range(60, 282) as u32 * 300, 0)
                .unwrap_or(NaiveTime::MIN);
        let sells_business = !carrier.low_cost && (km > 800.0 || rng.chance(60));
        let sells_first = carrier.first_class && km > 4000.0 && rng.chance(60);
        // Long-haul routes do not all fly daily.
        let daily_percent = if km > 7000.0 { 70 } else { 100 };
        let base = (25.0 + 0.08 * km) * if carrier.low_cost { 0.7 } else { 1.0 };
        let business_factor = if km < 1500.0 {
            rng.factor(180, 240)
        } else {
            rng.factor(260, 360)
        };
        let first_factor = rng.factor(180, 230);
        for weekday_index in 0..7u8 {
            let keep = rng.chance(daily_percent);
            let day_factor = rng.factor(85, 130);
            if !keep {
                continue;
            }
            let Ok(weekday) = Weekday::try_from(weekday_index) else {
                continue;
            };
            let economy = (base * day_factor).round().max(29.0);
            let business = (economy * business_factor).round();
            let first = (business * first_factor).round();
            let (arrival_weekday, arrival) = add_seconds(
                weekday,
                departure,
                i64::from(duration_minutes) * 60 + offset_shift,
            );
            out.push(Flight {
                id: flight_id(&flight_no, origin.0, destination.0, weekday, 0),
                flight_no: flight_no.clone(),
                airline_code: carrier.code.to_string(),
                airline: carrier.name.to_string(),
                origin: origin.0.to_string(),
                destination: destination.0.to_string(),
                weekday,
                departure,
                arrival,
                arrival_weekday,
                duration_minutes,
                economy: Some(usd(economy)),
                business: sells_business.then(|| usd(business)),
                first: sells_first.then(|| usd(first)),
            });
        }
    }
}

/// Whole dollars to `Money` in cents.
fn usd(dollars: f64) -> Money {
    Money::new(dollars as i64 * 100, Currency::usd())
}

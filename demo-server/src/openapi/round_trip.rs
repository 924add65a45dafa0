//! The OpenAPI additions of round trips: the request's return leg
//! (`return_flight_id`, `return_date`), the booking's `return_leg` and the
//! return leg's fault switch, added to the main document's
//! `BookingRequest`, `BookingView` and `Faults`.

use super::{schema, string};
use serde_json::{json, Map, Value};

/// Adds the return leg's properties to the booking schemas in `schemas`.
pub(super) fn extend(schemas: &mut Map<String, Value>) {
    let add = |schemas: &mut Map<String, Value>, name: &str, props: Value| {
        if let (Some(target), Value::Object(props)) = (
            schemas
                .get_mut(name)
                .and_then(|s| s.get_mut("properties"))
                .and_then(Value::as_object_mut),
            props,
        ) {
            target.extend(props);
        }
    };
    add(
        schemas,
        "BookingRequest",
        json!({
            "return_flight_id": { "type": "string", "nullable": true, "description": "A round trip: the return flight, from the outbound's destination back to its origin, leaving after the outbound lands; needs return_date. Both legs' seats are reserved at once (steps reserve_seat and reserve_return_seat, one parallel group) and one charge covers both; a bad return leg is a 422 naming return_flight_id or return_date" },
            "return_date": { "type": "string", "format": "date", "nullable": true, "description": "The return flight's departure date (needs return_flight_id)" },
        }),
    );
    add(
        schemas,
        "Faults",
        json!({ "reserve_return_seat": schema("Fault") }),
    );
    add(
        schemas,
        "BookingView",
        json!({
            "return_leg": { "type": "object", "nullable": true, "description": "A round trip's return leg (null one way); price is this leg's part of the booking's price", "properties": {
                "flight_id": string(), "date": { "type": "string", "format": "date" },
                "flight": { "type": "object", "nullable": true, "additionalProperties": true },
                "price": schema("PriceBreakdown") } },
        }),
    );
}

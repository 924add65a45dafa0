//! W3C trace context across HTTP in services mode: the booking server's
//! participant clients ([`crate::remote`]) write the current span's
//! `traceparent` (and `tracestate`) into each request, and a participant
//! ([`crate::roles`]) makes its request span a child of it, so one booking
//! is one trace across the processes. Only with the `otlp` feature (spans
//! leave the process only through its OTLP exporter); without it, or
//! without `--otlp-endpoint`, both functions do nothing.

use hyper::HeaderMap;

/// Writes the current span's trace context into `headers`
/// (`traceparent`, and `tracestate` when there is one). Nothing when no
/// OpenTelemetry layer is installed.
pub fn inject(headers: &mut HeaderMap) {
    #[cfg(feature = "otlp")]
    {
        use opentelemetry::propagation::TextMapPropagator as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = tracing::Span::current().context();
        opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .inject_context(&cx, &mut otel::Writer(headers));
    }
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
}

/// Makes `span` (not yet entered) a child of the trace context in
/// `headers`, if they carry a valid one; otherwise `span` stays a root.
pub fn adopt(span: &tracing::Span, headers: &HeaderMap) {
    #[cfg(feature = "otlp")]
    {
        use opentelemetry::propagation::TextMapPropagator as _;
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract(&otel::Reader(headers));
        if cx.span().span_context().is_valid() {
            span.set_parent(cx);
        }
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, headers);
}

#[cfg(feature = "otlp")]
mod otel {
    use hyper::header::{HeaderName, HeaderValue};
    use hyper::HeaderMap;

    /// An outgoing request's headers, written by the propagator.
    pub(super) struct Writer<'a>(pub(super) &'a mut HeaderMap);

    /// An incoming request's headers, read by the propagator.
    pub(super) struct Reader<'a>(pub(super) &'a HeaderMap);

    impl opentelemetry::propagation::Injector for Writer<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }

    impl opentelemetry::propagation::Extractor for Reader<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
}

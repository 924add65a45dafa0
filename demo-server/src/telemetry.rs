//! The binary's subscriber (a module of `main.rs`, not of the library:
//! libraries emit, binaries install): logs on standard error as text,
//! coloured only for a terminal, or as JSON Lines; and, with
//! `--otlp-endpoint` in a build with the `otlp` feature, every span (the
//! saga's with `saga_id` and `definition`, each step's with `step`,
//! `attempt` and `compensating`) exported over OTLP/HTTP.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What must outlive the subscriber: the trace exporter, flushed at the end.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (at exit).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: exporting the last traces failed: {e}");
            }
        }
    }
}

/// Installs the subscriber: `json` picks the log format, `otlp` an OTLP/HTTP
/// traces endpoint (`http://collector:4318/v1/traces`).
pub fn init(json: bool, otlp: Option<&str>) -> Result<Telemetry, String> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
    });
    let json_lines = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json_lines);
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match otlp {
            None => (None, None),
            Some(endpoint) => {
                let (layer, provider) = otlp_layer(endpoint)?;
                (Some(layer), Some(provider))
            }
        };
        registry.with(layer).init();
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        if let Some(e) = otlp {
            return Err(format!(
                "--otlp-endpoint {e}: this build has no OTLP support (build with --features otlp)"
            ));
        }
        registry.init();
        Ok(Telemetry {})
    }
}

#[cfg(feature = "otlp")]
fn otlp_layer<S>(
    endpoint: &str,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        opentelemetry_sdk::trace::SdkTracerProvider,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(format!(
            "--otlp-endpoint {endpoint:?}: expected an http:// URL (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces)"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("demo-server")
                .build(),
        )
        .build();
    let tracer = provider.tracer("demo-server");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

//! Logs and metrics: `tracing` to stderr (pretty, or JSON lines with `--log-format json`),
//! filtered by `RUST_LOG`; a Prometheus recorder whose text `GET /metrics` serves.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process's metrics recorder, installed on first use. One per process, however many
/// servers a test starts in it.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if something else installed a recorder first; keep our handle anyway.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("brain_events_appended_total", "Events committed to the event store");
    describe_histogram!("brain_append_batch_seconds", "Duration of one group-commit transaction");
    describe_counter!(
        "brain_relay_published_total",
        "Events published to JetStream by this process's relay"
    );
    describe_gauge!("brain_relay_active", "1 while this process's relay holds the namespace lock");
    describe_gauge!("brain_relay_lag_events", "Committed events not yet confirmed on JetStream");
    describe_gauge!("brain_relay_position", "Last position confirmed on JetStream");
    describe_gauge!("brain_projector_position", "Last position applied, per projector");
    describe_gauge!("brain_projector_lag_events", "Events a projector has still to apply");
    describe_counter!(
        "brain_projector_messages_total",
        "Bus messages past its checkpoint a projector's consumer received"
    );
    describe_counter!(
        "brain_projector_filled_total",
        "Events a projector wanted that the bus did not bring, read from PostgreSQL instead"
    );
    describe_gauge!("brain_ws_clients", "WebSocket clients connected to the live feed");
    describe_counter!(
        "brain_ws_slow_consumer_drops_total",
        "WebSocket clients dropped for falling behind the live feed"
    );
    describe_counter!(
        "brain_ws_no_pong_drops_total",
        "WebSocket clients dropped for answering no ping"
    );
    describe_counter!("brain_ws_messages_sent_total", "Events written to WebSocket clients");
    describe_gauge!("brain_ws_feed_position", "Last position the live feed broadcast");
}

/// What a caught panic said: its message when it carried one (a `String` or a `&str`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
}

//! Logging and metrics set-up. Logs are text on a terminal and JSON for log
//! pipelines; every request runs in a span carrying its `request_id` (and,
//! once authenticated, its `user_id`), so each line can be traced back.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

/// Installs the global tracing subscriber. Call once, from the binary.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Buckets for request and job latencies, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Help texts of the process-wide metrics, which Prometheus shows and
/// `promtool check metrics` requires.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "vmcloud_build_info",
        "1, labelled with the running version."
    );
    describe_gauge!("vmcloud_db_pool_connections", "Open database connections.");
    describe_gauge!(
        "vmcloud_db_pool_idle_connections",
        "Idle database connections."
    );
    describe_counter!(
        "vmcloud_http_requests_total",
        "HTTP requests by method, route and status."
    );
    describe_histogram!(
        "vmcloud_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route."
    );
    describe_gauge!("vmcloud_jobs", "Jobs in the queue by status.");
    describe_counter!("vmcloud_jobs_completed_total", "Jobs completed, by kind.");
    describe_counter!(
        "vmcloud_jobs_failed_total",
        "Job attempts that failed, by kind."
    );
    describe_counter!(
        "vmcloud_jobs_dead_total",
        "Jobs that ran out of attempts, by kind."
    );
    describe_histogram!(
        "vmcloud_job_duration_seconds",
        Unit::Seconds,
        "Job run time, by kind."
    );
    describe_counter!("vmcloud_emails_queued_total", "Emails queued for delivery.");
    describe_counter!(
        "vmcloud_instance_transitions_total",
        "Instance status changes, by new status."
    );
    describe_counter!(
        "vmcloud_payment_failures_total",
        "Card payments that failed, by currency."
    );
    describe_counter!(
        "vmcloud_unknown_vms_total",
        "VMs found on a node that no instance owns."
    );
    describe_counter!(
        "vmcloud_notifications_total",
        "Notifications sent to customers, by kind."
    );
}

/// The process-wide Prometheus recorder. The `metrics` facade allows one
/// global recorder per process, so every server in the process (several in
/// tests) shares it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder was installed first, in which case
        // that one receives the metrics and ours renders nothing: say so.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        metrics::gauge!(
            "vmcloud_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
        )
        .set(1.0);
        handle
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The metric names in `source` that follow one of `macros`, e.g.
    /// `counter!("vmcloud_x"`.
    fn metric_names(source: &str, macros: &[&str]) -> Vec<String> {
        let mut names = Vec::new();
        for macro_call in macros {
            for (at, _) in source.match_indices(macro_call) {
                let rest = source[at + macro_call.len()..].trim_start();
                let name = rest
                    .strip_prefix('"')
                    .and_then(|quoted| quoted.split('"').next())
                    .filter(|name| name.starts_with("vmcloud_"));
                names.extend(name.map(str::to_owned));
            }
        }
        names
    }

    fn sources(dir: &Path, into: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("src readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, into);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                into.push(std::fs::read_to_string(&path).expect("source readable"));
            }
        }
    }

    /// promtool rejects a scrape with a series that has no help text, and a
    /// series appears only once something emits it, which a test may never
    /// do: so every name emitted anywhere must be described here.
    #[test]
    fn every_metric_the_server_emits_is_described() {
        let mut all = Vec::new();
        sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut all);
        let emitted: std::collections::BTreeSet<String> = all
            .iter()
            .flat_map(|source| {
                metric_names(
                    source,
                    &[
                        "metrics::counter!(",
                        "metrics::gauge!(",
                        "metrics::histogram!(",
                    ],
                )
            })
            .collect();
        let described = metric_names(
            include_str!("telemetry.rs"),
            &[
                "describe_counter!(",
                "describe_gauge!(",
                "describe_histogram!(",
            ],
        );
        assert!(
            emitted.len() > 10,
            "the scan finds the metrics: {emitted:?}"
        );
        let undescribed: Vec<_> = emitted
            .iter()
            .filter(|name| !described.contains(name))
            .collect();
        assert!(undescribed.is_empty(), "no help text for {undescribed:?}");
    }
}

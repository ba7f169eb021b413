//! The Prometheus metrics of this process: pushes, mutations by outcome,
//! pulls, requests and latency by route, quarantined rows. Handlers count;
//! `/metrics` renders.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Prometheus metrics of this process.
pub struct Metrics {
    registry: Registry,
    pub(crate) pushes: IntCounter,
    pub(crate) mutations: IntCounterVec,
    pub(crate) pulls: IntCounter,
    pub(crate) requests: IntCounterVec,
    pub(crate) latency: HistogramVec,
}

impl Metrics {
    /// `quarantined` is the repository's counter of quarantined rows.
    pub fn new(quarantined: IntCounter) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(quarantined))?;
        let pushes = IntCounter::new("tidesync_pushes_total", "Push requests answered 200")?;
        let mutations = IntCounterVec::new(
            Opts::new("tidesync_mutations_total", "Pushed mutations by outcome"),
            &["status"],
        )?;
        let pulls = IntCounter::new("tidesync_pulls_total", "Pull requests answered 200")?;
        let requests = IntCounterVec::new(
            Opts::new(
                "tidesync_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "tidesync_http_request_duration_seconds",
                "Latency of HTTP requests by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(pushes.clone()))?;
        registry.register(Box::new(mutations.clone()))?;
        registry.register(Box::new(pulls.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        for s in ["applied", "duplicate", "conflict", "rejected"] {
            mutations.with_label_values(&[s]);
        }
        Ok(Metrics {
            registry,
            pushes,
            mutations,
            pulls,
            requests,
            latency,
        })
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

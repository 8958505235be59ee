//! The webhook's metrics (`GET /metrics` on its plain port): how many reviews of each kind
//! ended how, how long they took, and the certificate reloads. Every label takes values
//! from a closed set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReviewLabels {
    pub kind: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub result: &'static str,
}

/// Review durations: 50 µs to 1 s (the apiserver's timeout is seconds).
const DURATION_BUCKETS: [f64; 10] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0,
];

pub(crate) struct InjectMetrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    review_duration: Histogram,
    bad_reviews: Counter,
    certificate_reloads: Family<ResultLabels, Counter>,
}

impl InjectMetrics {
    pub(crate) fn new() -> InjectMetrics {
        let mut registry = Registry::with_prefix("probe_gateway_inject");
        let reviews = Family::default();
        let review_duration = Histogram::new(DURATION_BUCKETS);
        let bad_reviews = Counter::default();
        let certificate_reloads = Family::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by the object's kind, the operation and what was done (patched, unchanged, skipped with a warning, malformed and allowed)",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to answer an AdmissionReview, from its body read to its answer written",
            review_duration.clone(),
        );
        registry.register(
            "bad_requests",
            "Request bodies that were not an AdmissionReview (answered 400)",
            bad_reviews.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Readings of the serving certificate after its files changed, by result (ok, rejected: the old one stays in force)",
            certificate_reloads.clone(),
        );
        for result in ["ok", "rejected"] {
            let _ = certificate_reloads.get_or_create(&ResultLabels { result });
        }
        InjectMetrics {
            registry,
            reviews,
            review_duration,
            bad_reviews,
            certificate_reloads,
        }
    }

    pub(crate) fn record_review(
        &self,
        kind: &'static str,
        operation: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        self.reviews
            .get_or_create(&ReviewLabels {
                kind,
                operation,
                outcome,
            })
            .inc();
        self.review_duration.observe(seconds);
    }

    pub(crate) fn record_bad_review(&self) {
        self.bad_reviews.inc();
    }

    pub(crate) fn record_certificate_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.certificate_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

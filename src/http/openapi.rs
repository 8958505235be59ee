//! The OpenAPI document of the HTTP API, generated from the handlers' annotations. The
//! committed `openapi/openapi.json` must equal it (a test compares them): the document and
//! the error codes in it are part of the API contract.

use utoipa::OpenApi;

use super::error::ErrorBody;
use super::render::{JsonCheck, JsonCheckDetails, JsonReport};
use super::routes::CheckNameParam;
use crate::probe::CheckResult;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "virt-probe-gateway",
        description = "Answers kubelet httpGet probes for a KubeVirt VM by running its configured exec and guestAgentPing checks through qemu-guest-agent.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::routes::ready,
        super::routes::live,
        super::routes::ready_check,
        super::routes::live_check,
        super::routes::started,
        super::routes::healthz,
        super::routes::metrics,
        super::routes::openapi_json,
    ),
    components(schemas(JsonReport, JsonCheck, JsonCheckDetails, CheckResult, ErrorBody, CheckNameParam)),
    tags(
        (name = "probes", description = "What kubelet calls"),
        (name = "operations", description = "What operators and tools call"),
    )
)]
pub(crate) struct ApiDoc;

/// The document as pretty JSON, as committed in `openapi/openapi.json`.
pub(crate) fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let committed = include_str!("../../openapi/openapi.json");
        assert!(
            committed == super::document(),
            "openapi/openapi.json is out of date: run `cargo run --bin virt-probe-gateway -- openapi > openapi/openapi.json`"
        );
    }
}

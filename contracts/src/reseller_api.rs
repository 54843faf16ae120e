//! The reseller REST contract (`rest/reseller-api.openapi.yaml`) as code:
//! its operations and checks of answers against the document's own
//! schemas, the same machinery as [`crate::gateway_public`]. The server
//! serves this document at `/v1/reseller/openapi.json`.

/// The document, as written.
pub const OPENAPI: &str = include_str!("../rest/reseller-api.openapi.yaml");

include!("openapi_contract.rs");

//! The public REST contract (`rest/gateway-public.openapi.yaml`) as code:
//! its operations and checks of requests and answers against the
//! document's own schemas, the same machinery as [`crate::node_agent`].
//! The server serves this document at `/v1/openapi.json`, and the tests
//! check every documented operation's answers against it.

/// The document, as written.
pub const OPENAPI: &str = include_str!("../rest/gateway-public.openapi.yaml");

include!("openapi_contract.rs");

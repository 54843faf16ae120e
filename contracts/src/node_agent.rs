//! The node-agent REST contract (`rest/node-agent.openapi.yaml`) as code:
//! its operations, and checks of request bodies, parameters and answers
//! against the document's own schemas (JSON Schema 2020-12 as OpenAPI 3.1
//! uses it, formats such as `uuid` checked). The server checks every request
//! here before it parses it, and the tests check every exchange of the real
//! agent and server here, so that the document is the one source of truth.
//! Schemas are compiled once, on first use.

/// The document, as written.
pub const OPENAPI: &str = include_str!("../rest/node-agent.openapi.yaml");

include!("openapi_contract.rs");

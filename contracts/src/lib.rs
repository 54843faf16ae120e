#![doc = include_str!("../README.md")]

pub mod canonical;
pub mod gateway_public;
pub mod node_agent;
pub mod node_signing;
pub mod reseller_api;
pub mod reseller_signing;
pub mod websocket;

pub use canonical::canonical_json;

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The event catalog as written in `events/README.md`.
pub const EVENTS_README: &str = include_str!("../events/README.md");

/// The payload schema files, one per domain, as `(domain, yaml text)`.
pub const SCHEMA_FILES: [(&str, &str); 6] = [
    ("render", include_str!("../events/render.yaml")),
    ("node", include_str!("../events/node.yaml")),
    ("file", include_str!("../events/file.yaml")),
    ("tenant", include_str!("../events/tenant.yaml")),
    ("identity", include_str!("../events/identity.yaml")),
    ("notification", include_str!("../events/notification.yaml")),
];

/// The shared types (ids, timestamps, money, error, pagination).
pub const COMMON_TYPES: &str = include_str!("../common/types.yaml");

/// The first segments a routing key may have (SPEC §1).
pub const DOMAINS: [&str; 6] = [
    "render",
    "node",
    "file",
    "tenant",
    "identity",
    "notification",
];

/// One row of the event catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// `<domain>.<entity>.<event>.v1` or `<domain>.<event>.v1`.
    pub routing_key: String,
    /// The routing key without its version suffix, e.g. `render.job.submitted`.
    pub event_type: String,
    /// The version number of the routing key's suffix.
    pub schema_version: u32,
    /// The first segment of the routing key.
    pub domain: String,
    /// The stream type whose streams carry this event, e.g. `render_job`.
    pub stream_type: String,
    /// Which component emits it.
    pub emitted_by: String,
    /// One line on what it means.
    pub meaning: String,
}

/// Why the embedded catalog could not be read. The catalog is checked by the
/// crate's tests, so this only happens while someone edits it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A routing key that breaks the naming rule of SPEC §1.
    #[error("invalid routing key `{0}`: {1}")]
    InvalidRoutingKey(String, &'static str),
    /// The same routing key twice in the table.
    #[error("routing key `{0}` is listed twice in events/README.md")]
    DuplicateRow(String),
    /// A schema file that is not valid YAML or not a map of schemas.
    #[error("events/{0}.yaml: {1}")]
    BadSchemaFile(String, String),
    /// A schema filed under the wrong domain file, or twice.
    #[error("schema `{0}` is misplaced or duplicated: {1}")]
    MisplacedSchema(String, String),
}

/// The parsed catalog: rows and the JSON Schema of every payload.
#[derive(Debug)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
    schemas: BTreeMap<String, serde_json::Value>,
}

impl Catalog {
    /// Parses the embedded catalog and schema files.
    pub fn load() -> Result<Self, CatalogError> {
        Self::parse(EVENTS_README, &SCHEMA_FILES)
    }

    /// Parses a catalog table and schema files given as text.
    pub fn parse(readme: &str, schema_files: &[(&str, &str)]) -> Result<Self, CatalogError> {
        let mut entries = BTreeMap::new();
        for line in readme.lines() {
            let Some(row) = parse_row(line)? else {
                continue;
            };
            if entries
                .insert(row.routing_key.clone(), row.clone())
                .is_some()
            {
                return Err(CatalogError::DuplicateRow(row.routing_key));
            }
        }
        let mut schemas = BTreeMap::new();
        for (domain, text) in schema_files {
            let value: serde_json::Value = serde_yaml::from_str(text)
                .map_err(|e| CatalogError::BadSchemaFile(domain.to_string(), e.to_string()))?;
            let serde_json::Value::Object(map) = value else {
                return Err(CatalogError::BadSchemaFile(
                    domain.to_string(),
                    "expected a map from routing key to JSON Schema".into(),
                ));
            };
            for (key, schema) in map {
                if key.starts_with('$') || key == "definitions" {
                    continue;
                }
                if key.split('.').next() != Some(domain) {
                    return Err(CatalogError::MisplacedSchema(
                        key,
                        format!("found in events/{domain}.yaml"),
                    ));
                }
                if schemas.insert(key.clone(), schema).is_some() {
                    return Err(CatalogError::MisplacedSchema(key, "defined twice".into()));
                }
            }
        }
        Ok(Self { entries, schemas })
    }

    /// The row of a routing key.
    pub fn entry(&self, routing_key: &str) -> Option<&CatalogEntry> {
        self.entries.get(routing_key)
    }

    /// The row whose event type and schema version are these.
    pub fn entry_for(&self, event_type: &str, schema_version: u32) -> Option<&CatalogEntry> {
        self.entry(&format!("{event_type}.v{schema_version}"))
    }

    /// All rows, ordered by routing key.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    /// The JSON Schema of a routing key's payload.
    pub fn schema(&self, routing_key: &str) -> Option<&serde_json::Value> {
        self.schemas.get(routing_key)
    }

    /// All schemas, keyed by routing key.
    pub fn schemas(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.schemas.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The embedded catalog, parsed once. Panics only if the embedded files are
/// malformed, which the crate's tests rule out.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| match Catalog::load() {
        Ok(catalog) => catalog,
        Err(e) => panic!("the embedded contract catalog is malformed: {e}"),
    })
}

/// Validates a payload against its routing key's JSON Schema (draft 2020-12,
/// formats such as `uuid` and `date-time` checked). Validators are compiled
/// once. The error lists what is wrong, for auditors.
pub fn validate_payload(routing_key: &str, payload: &serde_json::Value) -> Result<(), String> {
    static VALIDATORS: OnceLock<BTreeMap<String, Result<jsonschema::Validator, String>>> =
        OnceLock::new();
    let validators = VALIDATORS.get_or_init(|| {
        catalog()
            .schemas()
            .map(|(key, schema)| {
                let validator = jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(schema)
                    .map_err(|e| format!("the schema does not compile: {e}"));
                (key.to_string(), validator)
            })
            .collect()
    });
    let validator = match validators.get(routing_key) {
        Some(Ok(validator)) => validator,
        Some(Err(e)) => return Err(e.clone()),
        None => return Err(format!("no schema for `{routing_key}`")),
    };
    let errors: Vec<String> = validator
        .iter_errors(payload)
        .map(|e| e.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks a routing key against SPEC §1 and splits off its version.
pub fn split_routing_key(key: &str) -> Result<(&str, u32), CatalogError> {
    let bad = |why| CatalogError::InvalidRoutingKey(key.to_string(), why);
    let (event_type, version) = key
        .rsplit_once(".v")
        .ok_or_else(|| bad("must end in .v<N>"))?;
    let version: u32 = version.parse().map_err(|_| bad("must end in .v<N>"))?;
    let segments: Vec<&str> = event_type.split('.').collect();
    if !(2..=3).contains(&segments.len()) {
        return Err(bad(
            "must be <domain>.<entity>.<event>.vN or <domain>.<event>.vN",
        ));
    }
    if !DOMAINS.contains(&segments[0]) {
        return Err(bad("first segment must be a known domain"));
    }
    let word_ok = |s: &&str| {
        !s.is_empty()
            && !s.starts_with('_')
            && !s.ends_with('_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !segments.iter().all(word_ok) {
        return Err(bad("segments are lower-case words joined by `_`"));
    }
    Ok((event_type, version))
}

fn parse_row(line: &str) -> Result<Option<CatalogEntry>, CatalogError> {
    let line = line.trim();
    if !line.starts_with("| `") {
        return Ok(None);
    }
    let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
    if cells.len() < 4 {
        return Ok(None);
    }
    let unquote = |s: &str| s.trim_matches('`').to_string();
    let routing_key = unquote(cells[0]);
    let (event_type, schema_version) = split_routing_key(&routing_key)?;
    let domain = event_type.split('.').next().unwrap_or_default().to_string();
    Ok(Some(CatalogEntry {
        event_type: event_type.to_string(),
        schema_version,
        domain,
        stream_type: unquote(cells[1]),
        emitted_by: cells[2].to_string(),
        meaning: cells[3].to_string(),
        routing_key,
    }))
}

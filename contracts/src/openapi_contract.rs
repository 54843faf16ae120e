// The contract machinery shared by every OpenAPI document of the
// project: `include!`d by each contract module after it defines `OPENAPI`
// (so that each has its own parsed document and compiled schemas).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;


/// The most problems reported for one request.
const MAX_PROBLEMS: usize = 10;

/// The longest message of one problem, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// The parsed document. Panics only if the embedded file is malformed, which
/// the crate's tests rule out.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| match serde_yaml::from_str(OPENAPI) {
        Ok(value) => value,
        Err(e) => panic!("an embedded OpenAPI document is malformed: {e}"),
    })
}

/// One thing wrong with a request or an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a JSON Pointer into the body (`""` for the body as a whole),
    /// or the name of a parameter.
    pub field: String,
    /// What, for people.
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        let message: String = message.into();
        let message = if message.chars().count() > MAX_MESSAGE_CHARS {
            let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
            format!("{cut}…")
        } else {
            message
        };
        Self {
            field: field.into(),
            message,
        }
    }

    /// As the contract's error details show it: `{"field", "message"}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "field": self.field, "message": self.message })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Joins problems into one sentence for an error message.
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An operation of the contract: method, path template and its description.
#[derive(Debug)]
pub struct Operation {
    /// Its `operationId`, e.g. `register`.
    pub id: String,
    /// The method, upper case.
    pub method: String,
    /// The path template, e.g. `/v1/agent/tasks/{task_id}/progress`.
    pub path: String,
    pointer: String,
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl Operation {
    /// The operation object of the document.
    pub fn spec(&self) -> &'static Value {
        document().pointer(&self.pointer).unwrap_or(&Value::Null)
    }

    /// The path parameters, when `path` (without query) is of this
    /// operation's template; their values are as sent (not decoded).
    pub fn match_path(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let template: Vec<&str> = self.path.split('/').collect();
        let given: Vec<&str> = path.split('/').collect();
        if template.len() != given.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (t, g) in template.iter().zip(&given) {
            match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) if !g.is_empty() => {
                    params.insert(name.to_string(), (*g).to_string());
                }
                Some(_) => return None,
                None if t == g => {}
                None => return None,
            }
        }
        Some(params)
    }

    /// The names of its parameters in `location` (`query` or `path`).
    pub fn parameter_names(&self, location: &str) -> Vec<String> {
        self.parameters(location)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect()
    }

    /// The statuses the operation documents.
    pub fn statuses(&self) -> Vec<u16> {
        self.spec()["responses"]
            .as_object()
            .map(|r| r.keys().filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The documented response for `status`, with its `$ref` resolved, and
    /// the JSON Pointer of that response object.
    fn response(&self, status: u16) -> Option<(String, &'static Value)> {
        let pointer = format!("{}/responses/{status}", self.pointer);
        resolve(&pointer)
    }

    /// A parameter's pointer and whether it is required.
    fn parameters(&self, location: &str) -> Vec<(String, String, bool)> {
        let Some(list) = self.spec()["parameters"].as_array() else {
            return Vec::new();
        };
        list.iter()
            .enumerate()
            .filter(|(_, p)| p["in"] == location)
            .filter_map(|(i, p)| {
                let name = p["name"].as_str()?.to_string();
                let required = p["required"].as_bool().unwrap_or(false);
                Some((
                    name,
                    format!("{}/parameters/{i}/schema", self.pointer),
                    required,
                ))
            })
            .collect()
    }
}

/// Follows `$ref`s from the value at `pointer` to a value that is not one.
fn resolve(pointer: &str) -> Option<(String, &'static Value)> {
    let mut pointer = pointer.to_string();
    for _ in 0..8 {
        let value = document().pointer(&pointer)?;
        match value.get("$ref").and_then(Value::as_str) {
            Some(target) => pointer = target.strip_prefix('#')?.to_string(),
            None => return Some((pointer, value)),
        }
    }
    None
}

/// Every operation of the document, in its order.
pub fn operations() -> &'static [Operation] {
    static OPERATIONS: OnceLock<Vec<Operation>> = OnceLock::new();
    OPERATIONS.get_or_init(|| {
        let mut out = Vec::new();
        if let Some(paths) = document()["paths"].as_object() {
            for (path, methods) in paths {
                let Some(methods) = methods.as_object() else {
                    continue;
                };
                for (method, op) in methods {
                    let Some(id) = op["operationId"].as_str() else {
                        continue;
                    };
                    out.push(Operation {
                        id: id.to_string(),
                        method: method.to_uppercase(),
                        path: path.clone(),
                        pointer: format!("/paths/{}/{}", escape(path), escape(method)),
                    });
                }
            }
        }
        out
    })
}

/// The operation with this `operationId`.
pub fn operation(id: &str) -> Option<&'static Operation> {
    operations().iter().find(|o| o.id == id)
}

/// The operation a request is for, with its path parameters.
pub fn route(method: &str, path: &str) -> Option<(&'static Operation, BTreeMap<String, String>)> {
    operations()
        .iter()
        .filter(|o| o.method.eq_ignore_ascii_case(method))
        .find_map(|o| o.match_path(path).map(|params| (o, params)))
}

type Compiled = Result<Arc<jsonschema::Validator>, String>;

/// The validator of the schema at `pointer` in the document (compiled once):
/// the document itself is the root, so `#/components/schemas/...` resolve.
fn validator(pointer: &str) -> Compiled {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Compiled>>> = OnceLock::new();
    let cache = VALIDATORS.get_or_init(Mutex::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pointer.to_string())
        .or_insert_with(|| {
            if document().pointer(pointer).is_none() {
                return Err(format!("the contract has no schema at {pointer}"));
            }
            let mut root = document().clone();
            if let Some(map) = root.as_object_mut() {
                map.insert(
                    "$ref".into(),
                    Value::String(format!("#{}", fragment(pointer))),
                );
            }
            jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&root)
                .map(Arc::new)
                .map_err(|e| format!("the schema at {pointer} does not compile: {e}"))
        })
        .clone()
}

/// A JSON Pointer as a URI fragment (RFC 6901 §6): characters a fragment
/// may not hold, such as the braces of path templates, percent-encoded.
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a field is named in messages: `tags/0`, or "the body".
fn field_name(pointer: &str) -> String {
    match pointer.strip_prefix('/') {
        None | Some("") => "the body".to_string(),
        Some(path) => format!("`{path}`"),
    }
}

fn check(pointer: &str, value: &Value, name_of: impl Fn(&str) -> String) -> Vec<Problem> {
    let validator = match validator(pointer) {
        Ok(v) => v,
        Err(e) => return vec![Problem::new("", e)],
    };
    let mut problems: Vec<Problem> = Vec::new();
    for error in validator.iter_errors(value) {
        let field = error.instance_path().as_str().to_string();
        let message = error.masked_with(name_of(&field)).to_string();
        let problem = Problem::new(field, message);
        if !problems.contains(&problem) {
            problems.push(problem);
        }
        if problems.len() == MAX_PROBLEMS {
            break;
        }
    }
    problems
}

/// Checks `value` against the named schema of `components/schemas`.
pub fn validate_schema(name: &str, value: &Value) -> Result<(), Vec<Problem>> {
    let problems = check(
        &format!("/components/schemas/{}", escape(name)),
        value,
        field_name,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn request_schema(op: &Operation) -> Option<String> {
    let content = op.spec()["requestBody"]["content"].as_object()?;
    content.get("application/json")?;
    Some(format!(
        "{}/requestBody/content/application~1json/schema",
        op.pointer
    ))
}

fn unknown(operation: &str) -> Vec<Problem> {
    vec![Problem::new(
        "",
        format!("the contract has no operation `{operation}`"),
    )]
}

/// Checks a JSON request body (already parsed) against the operation's
/// request schema.
pub fn validate_request(operation: &str, body: &Value) -> Result<(), Vec<Problem>> {
    let Some(op) = self::operation(operation) else {
        return Err(unknown(operation));
    };
    let Some(pointer) = request_schema(op) else {
        return Err(vec![Problem::new("", "this operation takes no JSON body")]);
    };
    let problems = check(&pointer, body, field_name);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The request body of a JSON operation as the contract allows it: parsed
/// and checked against the operation's schema. An empty body is `{}` where
/// the body is optional; an operation without a body accepts only an empty
/// one (and answers `Value::Null`).
pub fn request_body(operation: &str, bytes: &[u8]) -> Result<Value, Vec<Problem>> {
    let Some(op) = self::operation(operation) else {
        return Err(unknown(operation));
    };
    let Some(pointer) = request_schema(op) else {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        return Err(vec![Problem::new("", "this operation takes no body")]);
    };
    let required = op.spec()["requestBody"]["required"]
        .as_bool()
        .unwrap_or(false);
    let value = if bytes.is_empty() {
        if required {
            return Err(vec![Problem::new(
                "",
                "the body is required (a JSON object)",
            )]);
        }
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| vec![Problem::new("", format!("the body is not JSON: {e}"))])?
    };
    let mut value = value;
    let problems = check(&pointer, &value, field_name);
    if problems.is_empty() {
        whole_numbers(&mut value);
        Ok(value)
    } else {
        Err(problems)
    }
}

/// Writes whole numbers as integers: JSON does not tell `1` from `1.0`,
/// and the schemas' `integer` allows both, so the Rust types get `1`.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() != 0.0 {
                return;
            }
            // Both bounds are powers of two, exact as f64.
            if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *value = Value::from(f as u64);
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The JSON type a parameter's schema names (following `$ref`s).
fn parameter_type(pointer: &str) -> Option<&'static str> {
    let (_, schema) = resolve(pointer)?;
    schema["type"].as_str()
}

/// A parameter's text as the JSON value its schema checks: integers as
/// numbers, everything else as a string.
fn coerce(pointer: &str, name: &str, text: &str) -> Result<Value, Problem> {
    if parameter_type(pointer) == Some("integer") {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Problem::new(name, format!("`{name}` must be an integer")));
        }
        return text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .map_err(|_| Problem::new(name, format!("`{name}` is out of range")));
    }
    Ok(Value::String(text.to_string()))
}

/// The query parameters of a request for `operation`, checked against the
/// contract: each known, given at most once, of its type and range, and the
/// required ones present. Integers come back as numbers.
pub fn parse_query(
    operation: &str,
    raw: Option<&str>,
) -> Result<BTreeMap<String, Value>, Vec<Problem>> {
    let Some(op) = self::operation(operation) else {
        return Err(unknown(operation));
    };
    let declared = op.parameters("query");
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, text) = part.split_once('=').unwrap_or((part, ""));
        let (Some(name), Some(text)) = (percent_decode(name), percent_decode(text)) else {
            problems.push(Problem::new(part, "the query is not percent-encoded UTF-8"));
            continue;
        };
        let Some((_, pointer, _)) = declared.iter().find(|(n, _, _)| *n == name) else {
            problems.push(Problem::new(
                name.as_str(),
                format!("`{name}` is not a parameter of this operation"),
            ));
            continue;
        };
        if values.contains_key(&name) {
            problems.push(Problem::new(
                name.as_str(),
                format!("`{name}` is given more than once"),
            ));
            continue;
        }
        match coerce(pointer, &name, &text) {
            Ok(value) => {
                let found = check(pointer, &value, |_| format!("`{name}`"));
                if found.is_empty() {
                    values.insert(name, value);
                } else {
                    problems.extend(
                        found
                            .into_iter()
                            .map(|p| Problem::new(name.as_str(), p.message)),
                    );
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    for (name, _, required) in &declared {
        if *required && !values.contains_key(name) && !problems.iter().any(|p| p.field == *name) {
            problems.push(Problem::new(name.as_str(), format!("`{name}` is required")));
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// Whether a path parameter's text (as sent, percent-encoded) is of the form
/// the contract gives it.
pub fn validate_path_parameter(operation: &str, name: &str, raw: &str) -> Result<(), Vec<Problem>> {
    let Some(op) = self::operation(operation) else {
        return Err(unknown(operation));
    };
    let Some((_, pointer, _)) = op
        .parameters("path")
        .into_iter()
        .find(|(n, _, _)| n == name)
    else {
        return Err(vec![Problem::new(
            name,
            format!("`{name}` is not a path parameter of this operation"),
        )]);
    };
    let text =
        percent_decode(raw).ok_or_else(|| vec![Problem::new(name, "not percent-encoded UTF-8")])?;
    let value = coerce(&pointer, name, &text).map_err(|p| vec![p])?;
    let problems = check(&pointer, &value, |_| format!("`{name}`"));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks an answer of `operation`: its status is documented, its content
/// type is one the status documents (none when it documents no content),
/// and a JSON body matches the status's schema.
pub fn validate_response(
    operation: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), Vec<Problem>> {
    let Some(op) = self::operation(operation) else {
        return Err(unknown(operation));
    };
    let Some((pointer, response)) = op.response(status) else {
        return Err(vec![Problem::new(
            "",
            format!("status {status} is not documented for `{operation}`"),
        )]);
    };
    let Some(content) = response["content"].as_object() else {
        if body.is_empty() {
            return Ok(());
        }
        return Err(vec![Problem::new(
            "",
            format!(
                "status {status} of `{operation}` has no body, but {} bytes came",
                body.len()
            ),
        )]);
    };
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    let Some(media_type) = essence.filter(|m| content.contains_key(m)) else {
        return Err(vec![Problem::new(
            "",
            format!(
                "content type {content_type:?} is not one of {:?} for status {status} of `{operation}`",
                content.keys().collect::<Vec<_>>()
            ),
        )]);
    };
    if media_type != "application/json" {
        return Ok(());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| vec![Problem::new("", format!("the body is not JSON: {e}"))])?;
    let problems = check(
        &format!("{pointer}/content/application~1json/schema"),
        &value,
        field_name,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

//! One stored event as one AMQP message (documented in
//! `contracts/events/README.md`, "On RabbitMQ").

use eventstore::RecordedEvent;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// The message body: the event's payload as stored, JSON.
pub fn body(event: &RecordedEvent) -> Vec<u8> {
    serde_json::to_vec(&event.payload).unwrap_or_default()
}

/// Persistent, `application/json`, `message_id` = event id, `type` = event
/// type, `timestamp` = when it was recorded, and every envelope field as a
/// header.
pub fn properties(event: &RecordedEvent) -> BasicProperties {
    let mut headers = FieldTable::default();
    let text = |s: String| AMQPValue::LongString(LongString::from(s));
    let optional = |s: Option<String>| s.map_or(AMQPValue::Void, text);
    let meta = |key: &str| {
        event
            .metadata
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    for (key, value) in [
        ("event_id", text(event.event_id.to_string())),
        ("stream_id", text(event.stream_id.to_string())),
        ("stream_type", text(event.stream_type.clone())),
        (
            "stream_version",
            AMQPValue::LongLongInt(event.stream_version as i64),
        ),
        (
            "global_position",
            AMQPValue::LongLongInt(event.global_position),
        ),
        ("event_type", text(event.event_type.clone())),
        ("routing_key", text(event.routing_key.clone())),
        (
            "schema_version",
            AMQPValue::LongLongInt(i64::from(event.schema_version)),
        ),
        (
            "tenant_id",
            optional(event.tenant_id.map(|t| t.to_string())),
        ),
        ("correlation_id", optional(meta("correlation_id"))),
        ("causation_id", optional(meta("causation_id"))),
        (
            "actor",
            text(
                event
                    .metadata
                    .get("actor")
                    .map(contracts::canonical::canonical_json)
                    .unwrap_or_default(),
            ),
        ),
        ("trace_id", optional(meta("trace_id"))),
        (
            "recorded_at",
            text(
                event
                    .recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        ),
        ("prev_hash", text(hex::encode(event.prev_hash))),
        ("hash", text(hex::encode(event.hash))),
    ] {
        headers.insert(ShortString::from(key), value);
    }
    BasicProperties::default()
        .with_message_id(ShortString::from(event.event_id.to_string()))
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_type(ShortString::from(event.event_type.as_str()))
        .with_timestamp(event.recorded_at.timestamp().max(0) as u64)
        .with_app_id(ShortString::from("flatrender"))
        .with_headers(headers)
}

//! Fixed ids, times and values for the tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::*;
use uuid::Uuid;

pub fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
}

pub fn tenant_id() -> TenantId {
    TenantId::new(Uuid::from_u128(0x1111_1111_1111_4111_8111_1111_1111_1111)).unwrap()
}

pub fn job_id() -> JobId {
    JobId::new(Uuid::from_u128(0x2222_2222_2222_4222_8222_2222_2222_2222)).unwrap()
}

pub fn node_id(n: u128) -> NodeId {
    NodeId::new(Uuid::from_u128(
        0x3333_3333_3333_4333_8333_0000_0000_0000 + n,
    ))
    .unwrap()
}

pub fn file_id(n: u128) -> FileId {
    FileId::new(Uuid::from_u128(
        0x4444_4444_4444_4444_8444_0000_0000_0000 + n,
    ))
    .unwrap()
}

pub fn user_id() -> UserId {
    UserId::new(Uuid::from_u128(0x5555_5555_5555_4555_8555_5555_5555_5555)).unwrap()
}

pub fn api_key_id(n: u128) -> ApiKeyId {
    ApiKeyId::new(Uuid::from_u128(
        0x6666_6666_6666_4666_8666_0000_0000_0000 + n,
    ))
    .unwrap()
}

pub fn endpoint_id() -> EndpointId {
    EndpointId::new(Uuid::from_u128(0x7777_7777_7777_4777_8777_7777_7777_7777)).unwrap()
}

pub fn notification_id(n: u128) -> NotificationId {
    NotificationId::new(Uuid::from_u128(
        0x8888_8888_8888_4888_8888_0000_0000_0000 + n,
    ))
    .unwrap()
}

pub fn secret_key_id(n: u128) -> SecretKeyId {
    SecretKeyId::new(Uuid::from_u128(
        0x9999_9999_9999_4999_8999_0000_0000_0000 + n,
    ))
    .unwrap()
}

pub fn task_id(index: u32) -> TaskId {
    TaskId::derive(job_id(), index)
}

pub fn note(s: &str) -> Note {
    Note::parse(s).unwrap()
}

pub fn label(s: &str) -> Label {
    Label::parse(s).unwrap()
}

pub fn ident(s: &str) -> Identifier {
    Identifier::parse(s).unwrap()
}

pub fn amount(minor: i64) -> AmountMinor {
    AmountMinor::new(minor).unwrap()
}

pub fn digest(c: char) -> Sha256Digest {
    Sha256Digest::parse(std::iter::repeat_n(c, 64).collect::<String>()).unwrap()
}

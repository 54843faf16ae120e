//! Values are parsed at the boundary: invalid ones cannot be built, in code
//! or through serde.

use domain::*;
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::*;

#[test]
fn frame_ranges_are_ordered_and_non_empty() {
    assert!(FrameRange::new(5, 4).is_err());
    let r = FrameRange::new(4, 4).unwrap();
    assert_eq!(r.len(), 1);
    assert!(serde_json::from_value::<FrameRange>(json!({"start": 9, "end": 1})).is_err());
    assert!(
        serde_json::from_value::<FrameRange>(json!({"start": 1, "end": 2, "step": 1})).is_err()
    );
    assert_eq!(
        serde_json::to_value(r).unwrap(),
        json!({"start": 4, "end": 4})
    );
    assert!(ChunkSize::new(0).is_err());
    assert!(serde_json::from_value::<ChunkSize>(json!(0)).is_err());
}

#[test]
fn numbers_stay_in_range() {
    assert!(Priority::new(101).is_err());
    assert!(Priority::new(100).is_ok());
    assert!(serde_json::from_value::<Priority>(json!(200)).is_err());
    assert!(ShareWeight::new(0).is_err());
    assert!(AmountMinor::new(-1).is_err());
    assert!(serde_json::from_value::<AmountMinor>(json!(-5)).is_err());
    assert_eq!(amount(5).checked_sub(amount(6)), None);
    assert!(
        AmountMinor::new(i64::MAX)
            .unwrap()
            .checked_add(amount(1))
            .is_err()
    );
    assert_eq!(amount(3).checked_mul(4).unwrap(), amount(12));
}

#[test]
fn ids_reject_nil_and_garbage() {
    assert!(TenantId::new(Uuid::nil()).is_err());
    assert!(TenantId::parse("nope").is_err());
    assert!(
        serde_json::from_value::<JobId>(json!("00000000-0000-0000-0000-000000000000")).is_err()
    );
    let id = tenant_id();
    assert_eq!(serde_json::to_value(id).unwrap(), json!(id.to_string()));
    assert_eq!(TenantId::parse(&id.to_string()).unwrap(), id);
}

#[test]
fn task_ids_are_derived_deterministically_and_distinctly() {
    let ids: std::collections::BTreeSet<TaskId> =
        (0..1000).map(|i| TaskId::derive(job_id(), i)).collect();
    assert_eq!(ids.len(), 1000);
    assert_eq!(TaskId::derive(job_id(), 7), TaskId::derive(job_id(), 7));
    let other = JobId::new(Uuid::from_u128(0xabc_def0_1234_4567_89ab_cdef_0123_4567)).unwrap();
    assert_ne!(TaskId::derive(job_id(), 0), TaskId::derive(other, 0));
    assert_eq!(TaskId::derive(job_id(), 0).as_uuid().get_version_num(), 8);
}

#[test]
fn strings_are_checked() {
    assert!(Sha256Digest::parse("ABC").is_err());
    assert!(Sha256Digest::parse("A".repeat(64)).is_err());
    assert!(Sha256Digest::parse("a".repeat(64)).is_ok());
    assert_eq!(
        Sha256Digest::from_bytes([0xab; 32]).as_str(),
        "ab".repeat(32)
    );
    assert!(Label::parse("").is_err());
    assert!(Label::parse(" padded").is_err());
    assert!(Label::parse("x".repeat(201)).is_err());
    assert!(Identifier::parse("Blender").is_err());
    assert!(Identifier::parse("blender; rm -rf /").is_err());
    assert!(Identifier::parse("cycles-4.2").is_ok());
    assert!(FileName::parse("../etc/passwd").is_err());
    assert!(FileName::parse("..").is_err());
    assert!(FileName::parse("frame_0001.png").is_ok());
    assert!(ContentType::parse("image").is_err());
    assert!(ContentType::parse("image/png").is_ok());
    assert!(Email::parse("not an email").is_err());
    assert!(Email::parse("a@b.c").is_ok());
    assert!(KeyPrefix::parse("ab").is_err());
    assert!(WebhookUrl::parse("ftp://x").is_err());
    assert!(WebhookUrl::parse("https://").is_err());
    assert!(WebhookUrl::parse("https://hooks.example.com/a?b=c").is_ok());
    assert!(Note::parse("line one\nline two").is_ok());
    assert!(serde_json::from_value::<Label>(json!("")).is_err());
}

#[test]
fn chunking_examples() {
    let r = |a, b| FrameRange::new(a, b).unwrap();
    let c = |n| ChunkSize::new(n).unwrap();
    assert_eq!(chunk(r(1, 10), c(4)), vec![r(1, 4), r(5, 8), r(9, 10)]);
    assert_eq!(chunk(r(3, 3), c(10)), vec![r(3, 3)]);
    assert_eq!(
        chunk(r(u32::MAX - 1, u32::MAX), c(1)),
        vec![r(u32::MAX - 1, u32::MAX - 1), r(u32::MAX, u32::MAX)]
    );
    assert_eq!(chunk(r(0, u32::MAX), c(u32::MAX)).len(), 2);
}

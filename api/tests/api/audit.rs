use domain::{Aggregate, AmountMinor, Label, ShareWeight, Tenant, TenantCommand, TenantId};
use eventstore::{Actor, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent};
use serde_json::json;
use uuid::Uuid;

fn meta() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::System {
            component: "test".into(),
        },
        trace_id: None,
    }
}

#[tokio::test]
async fn a_log_written_by_the_domain_verifies_and_a_bad_payload_does_not() {
    let (state, dir) = crate::state().await;
    let tenant = TenantId::new(Uuid::new_v4()).unwrap();
    let at = chrono::Utc::now();
    let mut events = Tenant::default()
        .decide(TenantCommand::Create {
            tenant_id: tenant,
            name: Label::parse("Studio").unwrap(),
            weight: ShareWeight::new(1).unwrap(),
            max_running_tasks: 4,
            at,
        })
        .unwrap();
    let created = Tenant::replay(&events);
    events.extend(
        created
            .decide(TenantCommand::AddCredit {
                amount: AmountMinor::new(500).unwrap(),
                reference: Label::parse("inv-1").unwrap(),
                at,
            })
            .unwrap(),
    );
    let append = |events: Vec<NewEvent>, expected| AppendRequest {
        stream_id: tenant.as_uuid(),
        stream_type: "tenant".into(),
        tenant_id: Some(tenant.as_uuid()),
        expected,
        events,
    };
    let new: Vec<NewEvent> = events
        .iter()
        .map(|e| NewEvent::from_domain(Uuid::new_v4(), e, meta()))
        .collect();
    state
        .store
        .append(append(new, ExpectedVersion::NoStream))
        .await
        .unwrap();

    let report = api::audit::verify(&state.store, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.events, 2);

    // A payload that its Rust type does not accept is reported.
    let bad = NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "tenant.credit_added".into(),
        schema_version: 1,
        payload: json!({ "amount_minor": -5 }),
        metadata: meta(),
    };
    state
        .store
        .append(append(vec![bad], ExpectedVersion::Exact(2)))
        .await
        .unwrap();
    let report = api::audit::verify(&state.store, |_| {}).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(matches!(
        report.problems[0],
        eventstore::AuditProblem::Schema { .. }
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

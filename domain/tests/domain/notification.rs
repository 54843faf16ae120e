//! Given/when/then for every notification command.

use domain::notification::*;
use domain::*;

use crate::fixtures::*;
use crate::harness::given;

fn registered() -> NotificationEvent {
    EndpointRegistered {
        endpoint_id: endpoint_id(),
        tenant_id: tenant_id(),
        url: WebhookUrl::parse("https://hooks.example.com/x").unwrap(),
        kinds: vec![NotificationKind::RenderCompleted],
        secret_key_id: secret_key_id(1),
        registered_at: t(0),
    }
    .into()
}

fn requested(n: u128) -> NotificationEvent {
    NotificationRequested {
        notification_id: notification_id(n),
        endpoint_id: endpoint_id(),
        tenant_id: tenant_id(),
        kind: NotificationKind::RenderCompleted,
        job_id: Some(job_id()),
        balance_minor: None,
        requested_at: t(1),
    }
    .into()
}

fn attempt_failed(n: u128, attempt: u32, next: Option<i64>) -> NotificationEvent {
    DeliveryAttemptFailed {
        notification_id: notification_id(n),
        endpoint_id: endpoint_id(),
        tenant_id: tenant_id(),
        attempt,
        status_code: Some(500),
        error: note("oops"),
        next_attempt_at: next.map(t),
        failed_at: t(2),
    }
    .into()
}

fn abandoned(n: u128, attempts: u32, at: i64) -> NotificationEvent {
    NotificationAbandoned {
        notification_id: notification_id(n),
        endpoint_id: endpoint_id(),
        tenant_id: tenant_id(),
        attempts,
        abandoned_at: t(at),
    }
    .into()
}

fn fail(n: u128, next: Option<i64>) -> NotificationCommand {
    NotificationCommand::RecordFailedAttempt {
        notification_id: notification_id(n),
        status_code: Some(500),
        error: note("oops"),
        next_attempt_at: next.map(t),
        at: t(2),
    }
}

#[test]
fn register_endpoint() {
    given::<NotificationEndpoint>([])
        .when(NotificationCommand::RegisterEndpoint {
            endpoint_id: endpoint_id(),
            tenant_id: tenant_id(),
            url: WebhookUrl::parse("https://hooks.example.com/x").unwrap(),
            kinds: vec![NotificationKind::RenderCompleted],
            secret_key_id: secret_key_id(1),
            at: t(0),
        })
        .then([registered()]);
    given::<NotificationEndpoint>([])
        .when(NotificationCommand::RegisterEndpoint {
            endpoint_id: endpoint_id(),
            tenant_id: tenant_id(),
            url: WebhookUrl::parse("https://hooks.example.com/x").unwrap(),
            kinds: vec![],
            secret_key_id: secret_key_id(1),
            at: t(0),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "kinds"));
}

#[test]
fn request_a_notification() {
    let endpoint = given::<NotificationEndpoint>([registered()])
        .when(NotificationCommand::Request {
            notification_id: notification_id(1),
            kind: NotificationKind::RenderCompleted,
            job_id: Some(job_id()),
            balance_minor: None,
            at: t(1),
        })
        .then([requested(1)]);
    assert_eq!(endpoint.pending().count(), 1);
    given::<NotificationEndpoint>([registered()])
        .when(NotificationCommand::Request {
            notification_id: notification_id(1),
            kind: NotificationKind::CreditLow,
            job_id: None,
            balance_minor: Some(amount(5)),
            at: t(1),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "kind"));
    given::<NotificationEndpoint>([registered(), requested(1)])
        .when(NotificationCommand::Request {
            notification_id: notification_id(1),
            kind: NotificationKind::RenderCompleted,
            job_id: None,
            balance_minor: None,
            at: t(1),
        })
        .then_err_matches(|e| matches!(e, DomainError::AlreadyExists { .. }));
}

#[test]
fn record_delivery() {
    let endpoint =
        given::<NotificationEndpoint>([registered(), requested(1), attempt_failed(1, 1, Some(10))])
            .when(NotificationCommand::RecordDelivery {
                notification_id: notification_id(1),
                status_code: 204,
                at: t(10),
            })
            .then([NotificationDelivered {
                notification_id: notification_id(1),
                endpoint_id: endpoint_id(),
                tenant_id: tenant_id(),
                attempt: 2,
                status_code: 204,
                delivered_at: t(10),
            }
            .into()]);
    assert_eq!(
        endpoint.notification(notification_id(1)).unwrap().status,
        DeliveryStatus::Delivered
    );
    assert_eq!(
        endpoint.pending().count(),
        0,
        "a delivered one is no longer pending"
    );
    given::<NotificationEndpoint>([registered(), requested(1)])
        .when(NotificationCommand::RecordDelivery {
            notification_id: notification_id(1),
            status_code: 500,
            at: t(10),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(_)));
    given::<NotificationEndpoint>([registered(), requested(1), abandoned(1, 1, 2)])
        .when(NotificationCommand::RecordDelivery {
            notification_id: notification_id(1),
            status_code: 200,
            at: t(10),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "notification",
            from: "abandoned",
            command: "record_delivery",
        });
}

#[test]
fn record_failed_attempt_retries_then_abandons() {
    given::<NotificationEndpoint>([registered(), requested(1)])
        .when(fail(1, Some(10)))
        .then([attempt_failed(1, 1, Some(10))]);
    given::<NotificationEndpoint>([registered(), requested(1)])
        .when(fail(1, None))
        .then([attempt_failed(1, 1, None), abandoned(1, 1, 2)]);
    let mut history = vec![registered(), requested(1)];
    history.extend((1..MAX_DELIVERY_ATTEMPTS).map(|a| attempt_failed(1, a, Some(10))));
    given::<NotificationEndpoint>(history)
        .when(fail(1, Some(10)))
        .then([
            attempt_failed(1, MAX_DELIVERY_ATTEMPTS, None),
            abandoned(1, MAX_DELIVERY_ATTEMPTS, 2),
        ]);
    given::<NotificationEndpoint>([registered(), requested(1)])
        .when(fail(1, Some(1)))
        .then_err_matches(
            |e| matches!(e, DomainError::Validation(v) if v.field == "next_attempt_at"),
        );
}

#[test]
fn remove_endpoint_abandons_pending_notifications() {
    let removed: NotificationEvent = EndpointRemoved {
        endpoint_id: endpoint_id(),
        tenant_id: tenant_id(),
        removed_at: t(5),
    }
    .into();
    let endpoint =
        given::<NotificationEndpoint>([registered(), requested(1), attempt_failed(1, 1, Some(10))])
            .when(NotificationCommand::RemoveEndpoint { at: t(5) })
            .then([removed.clone(), abandoned(1, 1, 5)]);
    assert!(endpoint.is_removed() && !endpoint.wants(NotificationKind::RenderCompleted));
    given::<NotificationEndpoint>([registered(), removed.clone()])
        .when(NotificationCommand::RemoveEndpoint { at: t(6) })
        .then_err(DomainError::InvalidTransition {
            entity: "endpoint",
            from: "removed",
            command: "remove",
        });
    given::<NotificationEndpoint>([registered(), removed])
        .when(NotificationCommand::Request {
            notification_id: notification_id(2),
            kind: NotificationKind::RenderCompleted,
            job_id: None,
            balance_minor: None,
            at: t(6),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "endpoint",
            from: "removed",
            command: "request",
        });
}

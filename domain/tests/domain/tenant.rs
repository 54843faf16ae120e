//! Given/when/then for every tenant command.

use domain::tenant::*;
use domain::*;

use crate::fixtures::*;
use crate::harness::given;

fn created() -> TenantEvent {
    TenantCreated {
        tenant_id: tenant_id(),
        name: label("Northlight"),
        weight: ShareWeight::new(10).unwrap(),
        max_running_tasks: 20,
        created_at: t(0),
    }
    .into()
}

fn credited(amount_minor: i64, balance: i64) -> TenantEvent {
    CreditAdded {
        tenant_id: tenant_id(),
        amount_minor: amount(amount_minor),
        balance_after_minor: amount(balance),
        reference: label("inv-1"),
        added_at: t(1),
    }
    .into()
}

fn suspended() -> TenantEvent {
    TenantSuspended {
        tenant_id: tenant_id(),
        reason: note("unpaid"),
        suspended_at: t(2),
    }
    .into()
}

fn charge(minor: i64, cap_at_balance: bool) -> TenantCommand {
    TenantCommand::ChargeCredit {
        job_id: job_id(),
        task_id: task_id(0),
        render_seconds: 60,
        amount: amount(minor),
        cap_at_balance,
        at: t(3),
    }
}

fn charged(taken: i64, uncovered: i64, balance: i64) -> TenantEvent {
    CreditCharged {
        tenant_id: tenant_id(),
        job_id: job_id(),
        task_id: task_id(0),
        render_seconds: 60,
        amount_minor: amount(taken),
        uncovered_minor: amount(uncovered),
        balance_after_minor: amount(balance),
        charged_at: t(3),
    }
    .into()
}

#[test]
fn create() {
    let tenant = given::<Tenant>([])
        .when(TenantCommand::Create {
            tenant_id: tenant_id(),
            name: label("Northlight"),
            weight: ShareWeight::new(10).unwrap(),
            max_running_tasks: 20,
            at: t(0),
        })
        .then([created()]);
    assert!(tenant.can_submit());
    assert!(!tenant.can_lease(), "no credit yet");
    given::<Tenant>([created()])
        .when(TenantCommand::Reactivate { at: t(0) })
        .then_err(DomainError::InvalidTransition {
            entity: "tenant",
            from: "active",
            command: "reactivate",
        });
    given::<Tenant>([created()])
        .when(TenantCommand::Create {
            tenant_id: tenant_id(),
            name: label("again"),
            weight: ShareWeight::default(),
            max_running_tasks: 1,
            at: t(0),
        })
        .then_err(DomainError::AlreadyExists {
            entity: "tenant",
            id: tenant_id().to_string(),
        });
    given::<Tenant>([])
        .when(TenantCommand::Reactivate { at: t(0) })
        .then_err(DomainError::NotFound {
            entity: "tenant",
            id: "-".into(),
        });
}

#[test]
fn suspend_and_reactivate() {
    let tenant = given::<Tenant>([created(), credited(100, 100)])
        .when(TenantCommand::Suspend {
            reason: note("unpaid"),
            at: t(2),
        })
        .then([suspended()]);
    assert!(!tenant.can_submit() && !tenant.can_lease());
    given::<Tenant>([created(), suspended()])
        .when(TenantCommand::Suspend {
            reason: note("again"),
            at: t(2),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "tenant",
            from: "suspended",
            command: "suspend",
        });
    given::<Tenant>([created(), suspended()])
        .when(TenantCommand::Reactivate { at: t(4) })
        .then([TenantReactivated {
            tenant_id: tenant_id(),
            reactivated_at: t(4),
        }
        .into()]);
}

#[test]
fn change_quota() {
    let tenant = given::<Tenant>([created()])
        .when(TenantCommand::ChangeQuota {
            weight: ShareWeight::new(3).unwrap(),
            max_running_tasks: 5,
            at: t(2),
        })
        .then([QuotaChanged {
            tenant_id: tenant_id(),
            weight: ShareWeight::new(3).unwrap(),
            max_running_tasks: 5,
            changed_at: t(2),
        }
        .into()]);
    assert_eq!((tenant.weight().get(), tenant.max_running_tasks()), (3, 5));
}

#[test]
fn add_credit() {
    let tenant = given::<Tenant>([created(), credited(100, 100)])
        .when(TenantCommand::AddCredit {
            amount: amount(50),
            reference: label("inv-1"),
            at: t(1),
        })
        .then([credited(50, 150)]);
    assert_eq!(tenant.balance(), amount(150));
    given::<Tenant>([created()])
        .when(TenantCommand::AddCredit {
            amount: amount(0),
            reference: label("inv-1"),
            at: t(1),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(_)));
    // Suspended tenants may still top up.
    given::<Tenant>([created(), suspended()])
        .when(TenantCommand::AddCredit {
            amount: amount(5),
            reference: label("inv-1"),
            at: t(1),
        })
        .then([credited(5, 5)]);
}

#[test]
fn charge_credit_never_goes_below_zero() {
    let tenant = given::<Tenant>([created(), credited(100, 100)])
        .when(charge(40, false))
        .then([charged(40, 0, 60)]);
    assert_eq!(tenant.balance(), amount(60));
    given::<Tenant>([created(), credited(100, 100)])
        .when(charge(101, false))
        .then_err(DomainError::InsufficientCredit {
            balance_minor: 100,
            requested_minor: 101,
        });
    let tenant = given::<Tenant>([created(), credited(100, 100)])
        .when(charge(130, true))
        .then([charged(100, 30, 0)]);
    assert_eq!(tenant.balance(), AmountMinor::ZERO);
    assert!(!tenant.can_lease());
    given::<Tenant>([created(), credited(100, 100)])
        .when(charge(0, false))
        .then_err_matches(|e| matches!(e, DomainError::Validation(_)));
    // Running tasks of a suspended tenant are still paid for.
    given::<Tenant>([created(), credited(100, 100), suspended()])
        .when(charge(10, false))
        .then([charged(10, 0, 90)]);
}

#[test]
fn a_task_is_charged_once_whoever_asks_again() {
    // A retried completion, or a second instance, asks to charge the same
    // task again: nothing is recorded, whatever the amount.
    let tenant = given::<Tenant>([created(), credited(100, 100), charged(40, 0, 60)])
        .when(charge(40, false))
        .then([]);
    assert!(tenant.is_charged(task_id(0)));
    assert!(!tenant.is_charged(task_id(1)));
    given::<Tenant>([created(), credited(100, 100), charged(40, 0, 60)])
        .when(charge(7, true))
        .then([]);
    // Another task of the same job is charged.
    given::<Tenant>([created(), credited(100, 100), charged(40, 0, 60)])
        .when(TenantCommand::ChargeCredit {
            job_id: job_id(),
            task_id: task_id(1),
            render_seconds: 60,
            amount: amount(10),
            cap_at_balance: false,
            at: t(3),
        })
        .then([CreditCharged {
            tenant_id: tenant_id(),
            job_id: job_id(),
            task_id: task_id(1),
            render_seconds: 60,
            amount_minor: amount(10),
            uncovered_minor: AmountMinor::ZERO,
            balance_after_minor: amount(50),
            charged_at: t(3),
        }
        .into()]);
}

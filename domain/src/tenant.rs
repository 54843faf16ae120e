//! The tenant aggregate: status, quota and credit (stream id = tenant id).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ValidationError};
use crate::event::{Aggregate, EventPayload, domain_events, sample_time};
use crate::ids::{JobId, TaskId, TenantId};
use crate::money::AmountMinor;
use crate::priority::ShareWeight;
use crate::text::{Label, Note};

/// `tenant.created.v1`: a tenant was created with its quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantCreated {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: Label,
    /// Fair-share weight.
    pub weight: ShareWeight,
    /// Most tasks it may have running at once.
    pub max_running_tasks: u32,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// `tenant.suspended.v1`: the tenant may submit nothing and gets no new leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSuspended {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Why.
    pub reason: Note,
    /// When.
    pub suspended_at: DateTime<Utc>,
}

/// `tenant.reactivated.v1`: a suspended tenant is active again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantReactivated {
    /// The tenant.
    pub tenant_id: TenantId,
    /// When.
    pub reactivated_at: DateTime<Utc>,
}

/// `tenant.quota_changed.v1`: new fair-share weight and running-task limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaChanged {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Fair-share weight.
    pub weight: ShareWeight,
    /// Most tasks it may have running at once.
    pub max_running_tasks: u32,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// `tenant.credit_added.v1`: a top-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditAdded {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The top-up (positive).
    pub amount_minor: AmountMinor,
    /// The balance after it.
    pub balance_after_minor: AmountMinor,
    /// A payment or operator reference.
    pub reference: Label,
    /// When.
    pub added_at: DateTime<Utc>,
}

/// `tenant.credit_charged.v1`: render time was charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditCharged {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The charged job.
    pub job_id: JobId,
    /// The charged task.
    pub task_id: TaskId,
    /// Render time charged.
    pub render_seconds: u64,
    /// The amount taken from the balance.
    pub amount_minor: AmountMinor,
    /// The part of the price the balance could not cover (only with
    /// `cap_at_balance`; 0 otherwise).
    pub uncovered_minor: AmountMinor,
    /// The balance after the charge (never negative).
    pub balance_after_minor: AmountMinor,
    /// When.
    pub charged_at: DateTime<Utc>,
}

domain_events! {
    /// Everything that happens to a tenant.
    pub enum TenantEvent : "tenant", stream_id = tenant_id {
        /// See [`TenantCreated`].
        Created(TenantCreated) => "tenant.created.v1",
        /// See [`TenantSuspended`].
        Suspended(TenantSuspended) => "tenant.suspended.v1",
        /// See [`TenantReactivated`].
        Reactivated(TenantReactivated) => "tenant.reactivated.v1",
        /// See [`QuotaChanged`].
        QuotaChanged(QuotaChanged) => "tenant.quota_changed.v1",
        /// See [`CreditAdded`].
        CreditAdded(CreditAdded) => "tenant.credit_added.v1",
        /// See [`CreditCharged`].
        CreditCharged(CreditCharged) => "tenant.credit_charged.v1",
    }
}

/// The commands of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantCommand {
    /// Create the tenant.
    Create {
        /// The new tenant's id.
        tenant_id: TenantId,
        /// Its name.
        name: Label,
        /// Fair-share weight.
        weight: ShareWeight,
        /// Running-task limit.
        max_running_tasks: u32,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Suspend an active tenant.
    Suspend {
        /// Why.
        reason: Note,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Reactivate a suspended tenant.
    Reactivate {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Change the quota (also while suspended).
    ChangeQuota {
        /// Fair-share weight.
        weight: ShareWeight,
        /// Running-task limit.
        max_running_tasks: u32,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Add credit (also while suspended); the amount must be positive.
    AddCredit {
        /// The top-up.
        amount: AmountMinor,
        /// A payment or operator reference.
        reference: Label,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Charge render time once per task (a task already charged yields no
    /// event), also while suspended (running tasks finish and
    /// are paid for). A price above the balance is refused with
    /// [`DomainError::InsufficientCredit`] unless `cap_at_balance`, in which
    /// case the whole balance is taken and the rest recorded as
    /// `uncovered_minor`. Either way the balance never goes below zero.
    ChargeCredit {
        /// The job.
        job_id: JobId,
        /// The task.
        task_id: TaskId,
        /// Render time.
        render_seconds: u64,
        /// The price of that time; must be positive.
        amount: AmountMinor,
        /// Take what is there instead of refusing.
        cap_at_balance: bool,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// Whether a tenant may work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TenantStatus {
    /// Not created (empty stream).
    #[default]
    New,
    /// Active.
    Active,
    /// Suspended.
    Suspended,
}

impl TenantStatus {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

/// A tenant as evolved from its events (serializable for snapshots of a
/// view, like [`crate::RenderJob`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    id: Option<TenantId>,
    name: Option<Label>,
    status: TenantStatus,
    weight: ShareWeight,
    max_running_tasks: u32,
    balance: AmountMinor,
    /// Tasks already charged: a task is charged once, whoever asks again.
    charged: std::collections::BTreeSet<TaskId>,
}

impl Tenant {
    /// Whether the task's render time was already charged.
    pub fn is_charged(&self, task_id: TaskId) -> bool {
        self.charged.contains(&task_id)
    }

    /// Its id, once created.
    pub fn id(&self) -> Option<TenantId> {
        self.id
    }

    /// Its name, once created.
    pub fn name(&self) -> Option<&Label> {
        self.name.as_ref()
    }

    /// Its status.
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// Fair-share weight.
    pub fn weight(&self) -> ShareWeight {
        self.weight
    }

    /// Most tasks it may have running at once.
    pub fn max_running_tasks(&self) -> u32 {
        self.max_running_tasks
    }

    /// The credit balance (never negative).
    pub fn balance(&self) -> AmountMinor {
        self.balance
    }

    /// Whether the tenant may submit renders: it exists and is active.
    pub fn can_submit(&self) -> bool {
        self.status == TenantStatus::Active
    }

    /// Whether its tasks may get new leases: active and with credit left.
    pub fn can_lease(&self) -> bool {
        self.can_submit() && !self.balance.is_zero()
    }
}

impl Aggregate for Tenant {
    type Event = TenantEvent;
    type Command = TenantCommand;

    fn decide(&self, command: TenantCommand) -> Result<Vec<TenantEvent>, DomainError> {
        use TenantCommand as C;
        let Some(tenant_id) = self.id else {
            return match command {
                C::Create {
                    tenant_id,
                    name,
                    weight,
                    max_running_tasks,
                    at,
                } => Ok(vec![
                    TenantCreated {
                        tenant_id,
                        name,
                        weight,
                        max_running_tasks,
                        created_at: at,
                    }
                    .into(),
                ]),
                _ => Err(DomainError::NotFound {
                    entity: "tenant",
                    id: "-".into(),
                }),
            };
        };
        let refuse = |command| DomainError::InvalidTransition {
            entity: "tenant",
            from: self.status.as_str(),
            command,
        };
        match command {
            C::Create { .. } => Err(DomainError::AlreadyExists {
                entity: "tenant",
                id: tenant_id.to_string(),
            }),
            C::Suspend { reason, at } => match self.status {
                TenantStatus::Active => Ok(vec![
                    TenantSuspended {
                        tenant_id,
                        reason,
                        suspended_at: at,
                    }
                    .into(),
                ]),
                _ => Err(refuse("suspend")),
            },
            C::Reactivate { at } => match self.status {
                TenantStatus::Suspended => Ok(vec![
                    TenantReactivated {
                        tenant_id,
                        reactivated_at: at,
                    }
                    .into(),
                ]),
                _ => Err(refuse("reactivate")),
            },
            C::ChangeQuota {
                weight,
                max_running_tasks,
                at,
            } => Ok(vec![
                QuotaChanged {
                    tenant_id,
                    weight,
                    max_running_tasks,
                    changed_at: at,
                }
                .into(),
            ]),
            C::AddCredit {
                amount,
                reference,
                at,
            } => {
                if amount.is_zero() {
                    return Err(ValidationError::new("amount_minor", "must be positive").into());
                }
                let balance_after_minor = self.balance.checked_add(amount)?;
                Ok(vec![
                    CreditAdded {
                        tenant_id,
                        amount_minor: amount,
                        balance_after_minor,
                        reference,
                        added_at: at,
                    }
                    .into(),
                ])
            }
            C::ChargeCredit {
                job_id,
                task_id,
                render_seconds,
                amount,
                cap_at_balance,
                at,
            } => {
                if amount.is_zero() {
                    return Err(ValidationError::new("amount_minor", "must be positive").into());
                }
                // Exactly once per task: a second charge (a retried
                // completion, another instance) records nothing.
                if self.charged.contains(&task_id) {
                    return Ok(vec![]);
                }
                let (taken, uncovered) = match self.balance.checked_sub(amount) {
                    Some(_) => (amount, AmountMinor::ZERO),
                    None if cap_at_balance => (
                        self.balance,
                        amount.checked_sub(self.balance).unwrap_or_default(),
                    ),
                    None => {
                        return Err(DomainError::InsufficientCredit {
                            balance_minor: self.balance.get(),
                            requested_minor: amount.get(),
                        });
                    }
                };
                let balance_after_minor = self.balance.checked_sub(taken).unwrap_or_default();
                Ok(vec![
                    CreditCharged {
                        tenant_id,
                        job_id,
                        task_id,
                        render_seconds,
                        amount_minor: taken,
                        uncovered_minor: uncovered,
                        balance_after_minor,
                        charged_at: at,
                    }
                    .into(),
                ])
            }
        }
    }

    fn evolve(mut self, event: &TenantEvent) -> Self {
        match event {
            TenantEvent::Created(e) => {
                self.id = Some(e.tenant_id);
                self.name = Some(e.name.clone());
                self.status = TenantStatus::Active;
                self.weight = e.weight;
                self.max_running_tasks = e.max_running_tasks;
            }
            TenantEvent::Suspended(_) => self.status = TenantStatus::Suspended,
            TenantEvent::Reactivated(_) => self.status = TenantStatus::Active,
            TenantEvent::QuotaChanged(e) => {
                self.weight = e.weight;
                self.max_running_tasks = e.max_running_tasks;
            }
            TenantEvent::CreditAdded(e) => self.balance = e.balance_after_minor,
            TenantEvent::CreditCharged(e) => {
                self.balance = e.balance_after_minor;
                self.charged.insert(e.task_id);
            }
        }
        self
    }
}

fn sample_tenant() -> TenantId {
    TenantId::fixed(0x7d44_4840_9dc0_41d2_a55e_02f7_2e3f_0ca1)
}

fn amount(minor: i64) -> AmountMinor {
    AmountMinor::new(minor).expect("sample amount is valid")
}

impl EventPayload for TenantCreated {
    fn sample() -> Self {
        Self {
            tenant_id: sample_tenant(),
            name: Label::parse("Northlight Studio").expect("valid"),
            weight: ShareWeight::new(10).expect("valid"),
            max_running_tasks: 50,
            created_at: sample_time(),
        }
    }
}

impl EventPayload for TenantSuspended {
    fn sample() -> Self {
        Self {
            tenant_id: sample_tenant(),
            reason: Note::parse("unpaid invoice").expect("valid"),
            suspended_at: sample_time(),
        }
    }
}

impl EventPayload for TenantReactivated {
    fn sample() -> Self {
        Self {
            tenant_id: sample_tenant(),
            reactivated_at: sample_time(),
        }
    }
}

impl EventPayload for QuotaChanged {
    fn sample() -> Self {
        Self {
            tenant_id: sample_tenant(),
            weight: ShareWeight::new(20).expect("valid"),
            max_running_tasks: 100,
            changed_at: sample_time(),
        }
    }
}

impl EventPayload for CreditAdded {
    fn sample() -> Self {
        Self {
            tenant_id: sample_tenant(),
            amount_minor: amount(100_000),
            balance_after_minor: amount(150_000),
            reference: Label::parse("invoice 2026-001").expect("valid"),
            added_at: sample_time(),
        }
    }
}

impl EventPayload for CreditCharged {
    fn sample() -> Self {
        let job_id = JobId::fixed(0x1b4e_28ba_2fa1_41d2_883f_0016_d3cc_a427);
        Self {
            tenant_id: sample_tenant(),
            job_id,
            task_id: TaskId::derive(job_id, 0),
            render_seconds: 96,
            amount_minor: amount(480),
            uncovered_minor: AmountMinor::ZERO,
            balance_after_minor: amount(149_520),
            charged_at: sample_time(),
        }
    }
}

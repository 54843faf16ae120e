//! Given/when/then for every node command.

use domain::node::*;
use domain::*;

use crate::fixtures::*;
use crate::harness::given;

fn caps(cores: u32) -> Capabilities {
    Capabilities {
        cores,
        memory_bytes: 1 << 34,
        gpus: vec![],
        renderers: vec![RendererInfo {
            name: ident("builtin"),
            version: ident("1.0.0"),
        }],
        tags: vec![],
        node_class: ident("cpu"),
    }
}

fn registered() -> NodeEvent {
    NodeRegistered {
        node_id: node_id(1),
        name: label("render-01"),
        capabilities: caps(8),
        secret_key_id: secret_key_id(1),
        registered_at: t(0),
    }
    .into()
}

fn online() -> NodeEvent {
    NodeOnline {
        node_id: node_id(1),
        online_at: t(1),
    }
    .into()
}

fn deregistered() -> NodeEvent {
    NodeDeregistered {
        node_id: node_id(1),
        deregistered_at: t(9),
    }
    .into()
}

#[test]
fn register_starts_offline_and_enabled() {
    let node = given::<Node>([])
        .when(NodeCommand::Register {
            node_id: node_id(1),
            name: label("render-01"),
            capabilities: caps(8),
            secret_key_id: secret_key_id(1),
            at: t(0),
        })
        .then([registered()]);
    assert_eq!(
        (node.connectivity(), node.availability()),
        (Connectivity::Offline, Availability::Enabled)
    );
    assert!(!node.can_accept_work());
    given::<Node>([])
        .when(NodeCommand::Register {
            node_id: node_id(1),
            name: label("render-01"),
            capabilities: caps(0),
            secret_key_id: secret_key_id(1),
            at: t(0),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "cores"));
    given::<Node>([registered()])
        .when(NodeCommand::Register {
            node_id: node_id(1),
            name: label("render-01"),
            capabilities: caps(8),
            secret_key_id: secret_key_id(1),
            at: t(0),
        })
        .then_err(DomainError::AlreadyExists {
            entity: "node",
            id: node_id(1).to_string(),
        });
    given::<Node>([])
        .when(NodeCommand::MarkOnline { at: t(1) })
        .then_err(DomainError::NotFound {
            entity: "node",
            id: "-".into(),
        });
}

#[test]
fn online_and_offline() {
    let node = given::<Node>([registered()])
        .when(NodeCommand::MarkOnline { at: t(1) })
        .then([online()]);
    assert!(node.can_accept_work());
    given::<Node>([registered(), online()])
        .when(NodeCommand::MarkOnline { at: t(2) })
        .then_err(DomainError::InvalidTransition {
            entity: "node",
            from: "online",
            command: "mark_online",
        });
    given::<Node>([registered(), online()])
        .when(NodeCommand::MarkOffline {
            reason: OfflineReason::MissedHeartbeats,
            at: t(2),
        })
        .then([NodeOffline {
            node_id: node_id(1),
            reason: OfflineReason::MissedHeartbeats,
            offline_at: t(2),
        }
        .into()]);
    given::<Node>([registered()])
        .when(NodeCommand::MarkOffline {
            reason: OfflineReason::Shutdown,
            at: t(2),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "node",
            from: "offline",
            command: "mark_offline",
        });
}

#[test]
fn drain_disable_enable() {
    let drained: NodeEvent = NodeDrained {
        node_id: node_id(1),
        drained_at: t(2),
    }
    .into();
    let node = given::<Node>([registered(), online()])
        .when(NodeCommand::Drain { at: t(2) })
        .then([drained.clone()]);
    assert!(!node.can_accept_work());
    given::<Node>([registered(), online(), drained.clone()])
        .when(NodeCommand::Drain { at: t(3) })
        .then_err(DomainError::InvalidTransition {
            entity: "node",
            from: "draining",
            command: "drain",
        });
    let node = given::<Node>([registered(), online(), drained.clone()])
        .when(NodeCommand::Enable { at: t(3) })
        .then([NodeEnabled {
            node_id: node_id(1),
            enabled_at: t(3),
        }
        .into()]);
    assert!(node.can_accept_work());
    given::<Node>([registered()])
        .when(NodeCommand::Enable { at: t(3) })
        .then_err(DomainError::InvalidTransition {
            entity: "node",
            from: "offline",
            command: "enable",
        });
    let disabled: NodeEvent = NodeDisabled {
        node_id: node_id(1),
        reason: Some(note("disk")),
        disabled_at: t(3),
    }
    .into();
    given::<Node>([registered(), online(), drained])
        .when(NodeCommand::Disable {
            reason: Some(note("disk")),
            at: t(3),
        })
        .then([disabled.clone()]);
    given::<Node>([registered(), disabled])
        .when(NodeCommand::Disable {
            reason: None,
            at: t(4),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "node",
            from: "disabled",
            command: "disable",
        });
}

#[test]
fn change_capabilities() {
    let node = given::<Node>([registered()])
        .when(NodeCommand::ChangeCapabilities {
            capabilities: caps(16),
            at: t(2),
        })
        .then([CapabilitiesChanged {
            node_id: node_id(1),
            capabilities: caps(16),
            changed_at: t(2),
        }
        .into()]);
    assert_eq!(node.capabilities().unwrap().cores, 16);
    given::<Node>([registered()])
        .when(NodeCommand::ChangeCapabilities {
            capabilities: caps(8),
            at: t(2),
        })
        .then([]);
}

#[test]
fn rotate_secret_records_the_key_id_only() {
    let node = given::<Node>([registered()])
        .when(NodeCommand::RotateSecret {
            secret_key_id: secret_key_id(2),
            at: t(2),
        })
        .then([SecretRotated {
            node_id: node_id(1),
            secret_key_id: secret_key_id(2),
            rotated_at: t(2),
        }
        .into()]);
    assert_eq!(node.secret_key_id(), Some(secret_key_id(2)));
    given::<Node>([registered()])
        .when(NodeCommand::RotateSecret {
            secret_key_id: secret_key_id(1),
            at: t(2),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(_)));
}

#[test]
fn blocklist_for_a_job() {
    let blocklisted: NodeEvent = NodeBlocklisted {
        node_id: node_id(1),
        job_id: job_id(),
        tenant_id: tenant_id(),
        failures: 3,
        blocklisted_at: t(2),
    }
    .into();
    let node = given::<Node>([registered()])
        .when(NodeCommand::Blocklist {
            job_id: job_id(),
            tenant_id: tenant_id(),
            failures: 3,
            at: t(2),
        })
        .then([blocklisted.clone()]);
    assert!(node.is_blocklisted(job_id()));
    given::<Node>([registered(), blocklisted])
        .when(NodeCommand::Blocklist {
            job_id: job_id(),
            tenant_id: tenant_id(),
            failures: 4,
            at: t(3),
        })
        .then_err_matches(|e| matches!(e, DomainError::AlreadyExists { .. }));
}

#[test]
fn a_deregistered_node_accepts_nothing() {
    let node = given::<Node>([registered(), online()])
        .when(NodeCommand::Deregister { at: t(9) })
        .then([deregistered()]);
    assert!(node.is_deregistered() && !node.can_accept_work());
    let refused = |command| DomainError::InvalidTransition {
        entity: "node",
        from: "deregistered",
        command,
    };
    given::<Node>([registered(), deregistered()])
        .when(NodeCommand::MarkOnline { at: t(10) })
        .then_err(refused("mark_online"));
    given::<Node>([registered(), deregistered()])
        .when(NodeCommand::Enable { at: t(10) })
        .then_err(refused("enable"));
    given::<Node>([registered(), deregistered()])
        .when(NodeCommand::Deregister { at: t(10) })
        .then_err(refused("deregister"));
    given::<Node>([registered(), deregistered()])
        .when(NodeCommand::RotateSecret {
            secret_key_id: secret_key_id(3),
            at: t(10),
        })
        .then_err(refused("rotate_secret"));
}

//! The node aggregate: a render-farm machine (stream id = node id).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ValidationError};
use crate::event::{Aggregate, EventPayload, domain_events, sample_time};
use crate::ids::{JobId, NodeId, SecretKeyId, TenantId};
use crate::text::{Identifier, Label, Note};

/// A GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Model name.
    pub model: Label,
    /// Its memory.
    pub memory_bytes: u64,
}

/// A renderer installed and configured on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RendererInfo {
    /// Its name, e.g. `builtin` or `blender`.
    pub name: Identifier,
    /// Its version, e.g. `4.2.1`.
    pub version: Identifier,
}

/// What a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// CPU cores (at least 1).
    pub cores: u32,
    /// Memory.
    pub memory_bytes: u64,
    /// GPUs.
    pub gpus: Vec<Gpu>,
    /// Renderers.
    pub renderers: Vec<RendererInfo>,
    /// Free-form tags matched against job requirements.
    pub tags: Vec<Identifier>,
    /// The price class of the node (render-seconds are charged at its price).
    pub node_class: Identifier,
}

impl Capabilities {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.cores == 0 {
            return Err(ValidationError::new("cores", "must be at least 1"));
        }
        if self.renderers.is_empty() {
            return Err(ValidationError::new(
                "renderers",
                "a node must offer at least one renderer",
            ));
        }
        Ok(())
    }
}

/// Why a node went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    /// It missed its heartbeats.
    MissedHeartbeats,
    /// It shut down gracefully.
    Shutdown,
}

/// `node.registered.v1`: a node joined the farm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistered {
    /// The node.
    pub node_id: NodeId,
    /// Its name.
    pub name: Label,
    /// What it offers.
    pub capabilities: Capabilities,
    /// The id of its HMAC secret (never the secret).
    pub secret_key_id: SecretKeyId,
    /// When.
    pub registered_at: DateTime<Utc>,
}

/// `node.online.v1`: the node is reachable (heartbeats arrive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOnline {
    /// The node.
    pub node_id: NodeId,
    /// When.
    pub online_at: DateTime<Utc>,
}

/// `node.offline.v1`: the node is gone; its leases are requeued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOffline {
    /// The node.
    pub node_id: NodeId,
    /// Why.
    pub reason: OfflineReason,
    /// When.
    pub offline_at: DateTime<Utc>,
}

/// `node.drained.v1`: the node gets no new work; running tasks finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDrained {
    /// The node.
    pub node_id: NodeId,
    /// When.
    pub drained_at: DateTime<Utc>,
}

/// `node.enabled.v1`: a drained or disabled node gets work again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEnabled {
    /// The node.
    pub node_id: NodeId,
    /// When.
    pub enabled_at: DateTime<Utc>,
}

/// `node.disabled.v1`: an operator took the node out of scheduling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDisabled {
    /// The node.
    pub node_id: NodeId,
    /// Why, if given.
    pub reason: Option<Note>,
    /// When.
    pub disabled_at: DateTime<Utc>,
}

/// `node.capabilities_changed.v1`: the node reported different capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesChanged {
    /// The node.
    pub node_id: NodeId,
    /// The new capabilities.
    pub capabilities: Capabilities,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// `node.secret_rotated.v1`: the node's HMAC secret was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRotated {
    /// The node.
    pub node_id: NodeId,
    /// The id of the new secret (never the secret).
    pub secret_key_id: SecretKeyId,
    /// When.
    pub rotated_at: DateTime<Utc>,
}

/// `node.deregistered.v1`: the node left the farm for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDeregistered {
    /// The node.
    pub node_id: NodeId,
    /// When.
    pub deregistered_at: DateTime<Utc>,
}

/// `node.blocklisted.v1`: the node failed a job too often and gets no more of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBlocklisted {
    /// The node.
    pub node_id: NodeId,
    /// The job.
    pub job_id: JobId,
    /// The job's tenant.
    pub tenant_id: TenantId,
    /// Failures of the job on this node.
    pub failures: u32,
    /// When.
    pub blocklisted_at: DateTime<Utc>,
}

domain_events! {
    /// Everything that happens to a node.
    pub enum NodeEvent : "node", stream_id = node_id {
        /// See [`NodeRegistered`].
        Registered(NodeRegistered) => "node.registered.v1",
        /// See [`NodeOnline`].
        Online(NodeOnline) => "node.online.v1",
        /// See [`NodeOffline`].
        Offline(NodeOffline) => "node.offline.v1",
        /// See [`NodeDrained`].
        Drained(NodeDrained) => "node.drained.v1",
        /// See [`NodeEnabled`].
        Enabled(NodeEnabled) => "node.enabled.v1",
        /// See [`NodeDisabled`].
        Disabled(NodeDisabled) => "node.disabled.v1",
        /// See [`CapabilitiesChanged`].
        CapabilitiesChanged(CapabilitiesChanged) => "node.capabilities_changed.v1",
        /// See [`SecretRotated`].
        SecretRotated(SecretRotated) => "node.secret_rotated.v1",
        /// See [`NodeDeregistered`].
        Deregistered(NodeDeregistered) => "node.deregistered.v1",
        /// See [`NodeBlocklisted`].
        Blocklisted(NodeBlocklisted) => "node.blocklisted.v1",
    }
}

/// The commands of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// Register a new node (it starts offline and enabled).
    Register {
        /// The new node's id.
        node_id: NodeId,
        /// Its name.
        name: Label,
        /// What it offers.
        capabilities: Capabilities,
        /// The id of its HMAC secret.
        secret_key_id: SecretKeyId,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Heartbeats arrive again: offline → online.
    MarkOnline {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Online → offline.
    MarkOffline {
        /// Why.
        reason: OfflineReason,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Enabled → draining.
    Drain {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Draining or disabled → enabled.
    Enable {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Enabled or draining → disabled.
    Disable {
        /// Why, if given.
        reason: Option<Note>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Report capabilities; unchanged capabilities yield no event.
    ChangeCapabilities {
        /// The capabilities.
        capabilities: Capabilities,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Replace the HMAC secret (by id).
    RotateSecret {
        /// The id of the new secret; must differ from the current one.
        secret_key_id: SecretKeyId,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Remove the node for good; afterwards it accepts nothing.
    Deregister {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Keep the node away from a job.
    Blocklist {
        /// The job.
        job_id: JobId,
        /// The job's tenant.
        tenant_id: TenantId,
        /// Failures of the job on this node.
        failures: u32,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// Whether heartbeats arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Connectivity {
    /// No heartbeats (also right after registration).
    #[default]
    Offline,
    /// Heartbeats arrive.
    Online,
}

/// Whether the scheduler may give the node work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Availability {
    /// May get work.
    #[default]
    Enabled,
    /// Finishes its tasks, gets no new ones.
    Draining,
    /// Out of scheduling.
    Disabled,
}

/// A node as evolved from its events (serializable for snapshots of a
/// view, like [`crate::RenderJob`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    registered: Option<NodeRegistered>,
    capabilities: Option<Capabilities>,
    secret_key_id: Option<SecretKeyId>,
    connectivity: Connectivity,
    availability: Availability,
    deregistered: bool,
    blocklist: BTreeSet<JobId>,
}

impl Node {
    /// The registration, once registered.
    pub fn registration(&self) -> Option<&NodeRegistered> {
        self.registered.as_ref()
    }

    /// The current capabilities.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// The id of the current HMAC secret.
    pub fn secret_key_id(&self) -> Option<SecretKeyId> {
        self.secret_key_id
    }

    /// Online or offline.
    pub fn connectivity(&self) -> Connectivity {
        self.connectivity
    }

    /// Enabled, draining or disabled.
    pub fn availability(&self) -> Availability {
        self.availability
    }

    /// Whether the node was deregistered.
    pub fn is_deregistered(&self) -> bool {
        self.deregistered
    }

    /// Whether the scheduler may lease it a new task: registered, online,
    /// enabled, not deregistered.
    pub fn can_accept_work(&self) -> bool {
        self.registered.is_some()
            && !self.deregistered
            && self.connectivity == Connectivity::Online
            && self.availability == Availability::Enabled
    }

    /// Whether the node is blocklisted for `job_id`.
    pub fn is_blocklisted(&self, job_id: JobId) -> bool {
        self.blocklist.contains(&job_id)
    }

    fn state_name(&self) -> &'static str {
        if self.deregistered {
            return "deregistered";
        }
        match (self.connectivity, self.availability) {
            (Connectivity::Offline, Availability::Enabled) => "offline",
            (Connectivity::Online, Availability::Enabled) => "online",
            (_, Availability::Draining) => "draining",
            (_, Availability::Disabled) => "disabled",
        }
    }
}

impl Aggregate for Node {
    type Event = NodeEvent;
    type Command = NodeCommand;

    fn decide(&self, command: NodeCommand) -> Result<Vec<NodeEvent>, DomainError> {
        use NodeCommand as C;
        let Some(registered) = &self.registered else {
            return match command {
                C::Register {
                    node_id,
                    name,
                    capabilities,
                    secret_key_id,
                    at,
                } => {
                    capabilities.validate()?;
                    Ok(vec![
                        NodeRegistered {
                            node_id,
                            name,
                            capabilities,
                            secret_key_id,
                            registered_at: at,
                        }
                        .into(),
                    ])
                }
                _ => Err(DomainError::NotFound {
                    entity: "node",
                    id: "-".into(),
                }),
            };
        };
        let node_id = registered.node_id;
        let refuse = |command| DomainError::InvalidTransition {
            entity: "node",
            from: self.state_name(),
            command,
        };
        if self.deregistered {
            let name = match command {
                C::Register { .. } => "register",
                C::MarkOnline { .. } => "mark_online",
                C::MarkOffline { .. } => "mark_offline",
                C::Drain { .. } => "drain",
                C::Enable { .. } => "enable",
                C::Disable { .. } => "disable",
                C::ChangeCapabilities { .. } => "change_capabilities",
                C::RotateSecret { .. } => "rotate_secret",
                C::Deregister { .. } => "deregister",
                C::Blocklist { .. } => "blocklist",
            };
            return Err(refuse(name));
        }
        match command {
            C::Register { .. } => Err(DomainError::AlreadyExists {
                entity: "node",
                id: node_id.to_string(),
            }),
            C::MarkOnline { at } => match self.connectivity {
                Connectivity::Offline => Ok(vec![
                    NodeOnline {
                        node_id,
                        online_at: at,
                    }
                    .into(),
                ]),
                Connectivity::Online => Err(refuse("mark_online")),
            },
            C::MarkOffline { reason, at } => match self.connectivity {
                Connectivity::Online => Ok(vec![
                    NodeOffline {
                        node_id,
                        reason,
                        offline_at: at,
                    }
                    .into(),
                ]),
                Connectivity::Offline => Err(refuse("mark_offline")),
            },
            C::Drain { at } => match self.availability {
                Availability::Enabled => Ok(vec![
                    NodeDrained {
                        node_id,
                        drained_at: at,
                    }
                    .into(),
                ]),
                _ => Err(refuse("drain")),
            },
            C::Enable { at } => match self.availability {
                Availability::Draining | Availability::Disabled => Ok(vec![
                    NodeEnabled {
                        node_id,
                        enabled_at: at,
                    }
                    .into(),
                ]),
                Availability::Enabled => Err(refuse("enable")),
            },
            C::Disable { reason, at } => match self.availability {
                Availability::Enabled | Availability::Draining => Ok(vec![
                    NodeDisabled {
                        node_id,
                        reason,
                        disabled_at: at,
                    }
                    .into(),
                ]),
                Availability::Disabled => Err(refuse("disable")),
            },
            C::ChangeCapabilities { capabilities, at } => {
                capabilities.validate()?;
                if self.capabilities.as_ref() == Some(&capabilities) {
                    return Ok(vec![]);
                }
                Ok(vec![
                    CapabilitiesChanged {
                        node_id,
                        capabilities,
                        changed_at: at,
                    }
                    .into(),
                ])
            }
            C::RotateSecret { secret_key_id, at } => {
                if self.secret_key_id == Some(secret_key_id) {
                    return Err(ValidationError::new(
                        "secret_key_id",
                        "must differ from the current secret",
                    )
                    .into());
                }
                Ok(vec![
                    SecretRotated {
                        node_id,
                        secret_key_id,
                        rotated_at: at,
                    }
                    .into(),
                ])
            }
            C::Deregister { at } => Ok(vec![
                NodeDeregistered {
                    node_id,
                    deregistered_at: at,
                }
                .into(),
            ]),
            C::Blocklist {
                job_id,
                tenant_id,
                failures,
                at,
            } => {
                if self.blocklist.contains(&job_id) {
                    return Err(DomainError::AlreadyExists {
                        entity: "blocklist entry",
                        id: job_id.to_string(),
                    });
                }
                Ok(vec![
                    NodeBlocklisted {
                        node_id,
                        job_id,
                        tenant_id,
                        failures,
                        blocklisted_at: at,
                    }
                    .into(),
                ])
            }
        }
    }

    fn evolve(mut self, event: &NodeEvent) -> Self {
        match event {
            NodeEvent::Registered(e) => {
                self.registered = Some(e.clone());
                self.capabilities = Some(e.capabilities.clone());
                self.secret_key_id = Some(e.secret_key_id);
            }
            NodeEvent::Online(_) => self.connectivity = Connectivity::Online,
            NodeEvent::Offline(_) => self.connectivity = Connectivity::Offline,
            NodeEvent::Drained(_) => self.availability = Availability::Draining,
            NodeEvent::Enabled(_) => self.availability = Availability::Enabled,
            NodeEvent::Disabled(_) => self.availability = Availability::Disabled,
            NodeEvent::CapabilitiesChanged(e) => self.capabilities = Some(e.capabilities.clone()),
            NodeEvent::SecretRotated(e) => self.secret_key_id = Some(e.secret_key_id),
            NodeEvent::Deregistered(_) => {
                self.deregistered = true;
                self.connectivity = Connectivity::Offline;
            }
            NodeEvent::Blocklisted(e) => {
                self.blocklist.insert(e.job_id);
            }
        }
        self
    }
}

fn sample_node() -> NodeId {
    NodeId::fixed(0x5f1e_8a2c_3b4d_4e6f_8a9b_0c1d_2e3f_4a5b)
}

fn ident(s: &str) -> Identifier {
    Identifier::parse(s).expect("sample identifier is valid")
}

/// Sample capabilities, shared by the samples of this module.
fn sample_capabilities() -> Capabilities {
    Capabilities {
        cores: 16,
        memory_bytes: 64 * 1024 * 1024 * 1024,
        gpus: vec![Gpu {
            model: Label::parse("RTX 4090").expect("valid"),
            memory_bytes: 24 * 1024 * 1024 * 1024,
        }],
        renderers: vec![
            RendererInfo {
                name: ident("builtin"),
                version: ident("1.0.0"),
            },
            RendererInfo {
                name: ident("blender"),
                version: ident("4.2.1"),
            },
        ],
        tags: vec![ident("linux")],
        node_class: ident("gpu-standard"),
    }
}

impl EventPayload for NodeRegistered {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            name: Label::parse("render-07").expect("valid"),
            capabilities: sample_capabilities(),
            secret_key_id: SecretKeyId::fixed(0x2b3c_4d5e_6f70_4182_9304_a5b6_c7d8_e9f0),
            registered_at: sample_time(),
        }
    }
}

impl EventPayload for NodeOnline {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            online_at: sample_time(),
        }
    }
}

impl EventPayload for NodeOffline {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            reason: OfflineReason::MissedHeartbeats,
            offline_at: sample_time(),
        }
    }
}

impl EventPayload for NodeDrained {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            drained_at: sample_time(),
        }
    }
}

impl EventPayload for NodeEnabled {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            enabled_at: sample_time(),
        }
    }
}

impl EventPayload for NodeDisabled {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            reason: Some(Note::parse("failing disk").expect("valid")),
            disabled_at: sample_time(),
        }
    }
}

impl EventPayload for CapabilitiesChanged {
    fn sample() -> Self {
        let mut capabilities = sample_capabilities();
        capabilities.cores = 32;
        Self {
            node_id: sample_node(),
            capabilities,
            changed_at: sample_time(),
        }
    }
}

impl EventPayload for SecretRotated {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            secret_key_id: SecretKeyId::fixed(0x3c4d_5e6f_7081_4293_a415_b6c7_d8e9_f001),
            rotated_at: sample_time(),
        }
    }
}

impl EventPayload for NodeDeregistered {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            deregistered_at: sample_time(),
        }
    }
}

impl EventPayload for NodeBlocklisted {
    fn sample() -> Self {
        Self {
            node_id: sample_node(),
            job_id: JobId::fixed(0x1b4e_28ba_2fa1_41d2_883f_0016_d3cc_a427),
            tenant_id: TenantId::fixed(0x7d44_4840_9dc0_41d2_a55e_02f7_2e3f_0ca1),
            failures: 3,
            blocklisted_at: sample_time(),
        }
    }
}

//! Projection `nodes`: each render node's status, capabilities and current lease.

use domain::{NodeEvent, RenderJobEvent};

use crate::db::Reader;
use crate::error::ProjectionError;
use crate::event::{Decoded, Ev, Needs, time};
use crate::table::{Cache, Row, Table, Value, row};

row! {
    /// One render node (`rm_nodes`).
    pub struct NodeRow in "rm_nodes" key node_id {
        pub node_id: String,
        pub name: String,
        pub status: String,
        pub connectivity: String,
        pub availability: String,
        pub capabilities: String,
        pub current_task_id: Option<String>,
        pub current_render_id: Option<String>,
        pub current_lease_epoch: Option<i64>,
        pub registered_at: String,
        pub last_event_at: String,
    }
}

impl NodeRow {
    /// The status shown to people, as the domain names it.
    fn restate(&mut self) {
        self.status = match (self.connectivity.as_str(), self.availability.as_str()) {
            (_, "deregistered") => "deregistered",
            (_, "draining") => "draining",
            (_, "disabled") => "disabled",
            ("online", _) => "online",
            _ => "offline",
        }
        .into();
    }

    fn clear_lease(&mut self) {
        self.current_task_id = None;
        self.current_render_id = None;
        self.current_lease_epoch = None;
    }
}

const NODES: &str = NodeRow::TABLE.name;

/// The `nodes` projection's rows.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    nodes: Cache<NodeRow>,
}

/// A lease that ended: (task, node, epoch).
fn lease_ended(e: &RenderJobEvent) -> Option<(String, String, u32)> {
    use RenderJobEvent as E;
    let (task, node, epoch) = match e {
        E::TaskCompleted(x) => (x.task_id, x.node_id, x.lease_epoch),
        E::TaskFailed(x) => (x.task_id, x.node_id, x.lease_epoch),
        E::TaskRequeued(x) => (x.task_id, x.node_id, x.lease_epoch),
        E::TaskReleased(x) => (x.task_id, x.node_id, x.lease_epoch),
        _ => return None,
    };
    Some((task.to_string(), node.to_string(), epoch))
}

impl Nodes {
    pub const NAME: &'static str = "nodes";

    pub fn tables() -> Vec<Table> {
        vec![NodeRow::TABLE]
    }

    pub fn needs(ev: &Ev, n: &mut Needs) {
        match &ev.event {
            Decoded::Node(e) => n.key(NODES, e.stream_id()),
            Decoded::Render(RenderJobEvent::TaskAssigned(x)) => n.key(NODES, x.node_id),
            Decoded::Render(RenderJobEvent::Cancelled(x)) => {
                n.rows_where(NODES, "current_render_id", x.job_id)
            }
            Decoded::Render(e) => {
                if let Some((_, node, _)) = lease_ended(e) {
                    n.key(NODES, node);
                }
            }
            _ => {}
        }
    }

    pub async fn prefetch(&mut self, db: &Reader, n: &Needs) -> Result<(), ProjectionError> {
        db.load_where(&mut self.nodes, n.wheres_of(NODES)).await?;
        db.load(&mut self.nodes, n.keys_of(NODES)).await
    }

    pub fn dirty(&self) -> Vec<(Table, Vec<Vec<Value>>)> {
        vec![(NodeRow::TABLE, self.nodes.dirty_values())]
    }

    pub fn committed(&mut self, cap: usize) {
        self.nodes.committed(cap);
    }

    pub fn forget(&mut self, empty: bool) {
        self.nodes.forget(empty);
    }

    pub fn apply(&mut self, ev: &Ev) {
        match &ev.event {
            Decoded::Node(e) => self.apply_node(ev, e),
            Decoded::Render(RenderJobEvent::TaskAssigned(x)) => {
                if let Some(node) = self.nodes.get_mut(&x.node_id.to_string()) {
                    node.current_task_id = Some(x.task_id.to_string());
                    node.current_render_id = Some(x.job_id.to_string());
                    node.current_lease_epoch = Some(x.lease_epoch.into());
                }
            }
            Decoded::Render(RenderJobEvent::Cancelled(x)) => {
                let render = x.job_id.to_string();
                for key in self
                    .nodes
                    .matching(|n| n.current_render_id.as_deref() == Some(render.as_str()))
                {
                    if let Some(node) = self.nodes.get_mut(&key) {
                        node.clear_lease();
                    }
                }
            }
            Decoded::Render(e) => {
                let Some((task, node, epoch)) = lease_ended(e) else {
                    return;
                };
                if let Some(n) = self.nodes.get(&node)
                    && n.current_task_id.as_deref() == Some(task.as_str())
                    && n.current_lease_epoch == Some(epoch.into())
                    && let Some(n) = self.nodes.get_mut(&node)
                {
                    n.clear_lease();
                }
            }
            _ => {}
        }
    }

    fn apply_node(&mut self, ev: &Ev, e: &NodeEvent) {
        let at = ev.recorded_at.clone();
        if let NodeEvent::Registered(x) = e {
            let mut row = NodeRow {
                node_id: x.node_id.to_string(),
                name: x.name.as_str().into(),
                connectivity: "offline".into(),
                availability: "enabled".into(),
                capabilities: serde_json::to_string(&x.capabilities).unwrap_or_default(),
                registered_at: time(x.registered_at),
                last_event_at: at,
                ..NodeRow::default()
            };
            row.restate();
            self.nodes.put(row);
            return;
        }
        let Some(node) = self.nodes.get_mut(&e.stream_id().to_string()) else {
            return;
        };
        node.last_event_at = at;
        match e {
            NodeEvent::Online(_) => node.connectivity = "online".into(),
            NodeEvent::Offline(_) => node.connectivity = "offline".into(),
            NodeEvent::Drained(_) => node.availability = "draining".into(),
            NodeEvent::Enabled(_) => node.availability = "enabled".into(),
            NodeEvent::Disabled(_) => node.availability = "disabled".into(),
            NodeEvent::Deregistered(_) => node.availability = "deregistered".into(),
            NodeEvent::CapabilitiesChanged(x) => {
                node.capabilities = serde_json::to_string(&x.capabilities).unwrap_or_default();
            }
            NodeEvent::Registered(_) | NodeEvent::SecretRotated(_) | NodeEvent::Blocklisted(_) => {}
        }
        node.restate();
    }
}

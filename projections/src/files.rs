//! Projection `files`: scenes, inputs and rendered frames, by content.

use domain::FileEvent;

use crate::db::Reader;
use crate::error::ProjectionError;
use crate::event::{Decoded, Ev, Needs, time};
use crate::table::{Cache, Row, Table, Value, row};

row! {
    /// One stored file (`rm_files`).
    pub struct FileRow in "rm_files" key file_id {
        pub file_id: String,
        pub tenant_id: String,
        pub kind: String,
        pub name: String,
        pub content_type: String,
        pub size_bytes: i64,
        pub sha256: String,
        pub render_id: Option<String>,
        pub task_id: Option<String>,
        pub node_id: Option<String>,
        pub frame: Option<i64>,
        pub lease_epoch: Option<i64>,
        pub created_at: String,
        pub deleted_at: Option<String>,
    }
}

const FILES: &str = FileRow::TABLE.name;

/// The `files` projection's rows.
#[derive(Debug, Default)]
pub(crate) struct Files {
    files: Cache<FileRow>,
}

impl Files {
    pub const NAME: &'static str = "files";

    pub fn tables() -> Vec<Table> {
        vec![FileRow::TABLE]
    }

    pub fn needs(ev: &Ev, n: &mut Needs) {
        if let Decoded::File(FileEvent::Deleted(x)) = &ev.event {
            n.key(FILES, x.file_id);
        }
    }

    pub async fn prefetch(&mut self, db: &Reader, n: &Needs) -> Result<(), ProjectionError> {
        db.load(&mut self.files, n.keys_of(FILES)).await
    }

    pub fn dirty(&self) -> Vec<(Table, Vec<Vec<Value>>)> {
        vec![(FileRow::TABLE, self.files.dirty_values())]
    }

    pub fn committed(&mut self, cap: usize) {
        self.files.committed(cap);
    }

    pub fn forget(&mut self, empty: bool) {
        self.files.forget(empty);
    }

    pub fn apply(&mut self, ev: &Ev) {
        let Decoded::File(e) = &ev.event else { return };
        match e {
            FileEvent::Uploaded(x) => self.files.put(FileRow {
                file_id: x.file_id.to_string(),
                tenant_id: x.tenant_id.to_string(),
                kind: serde_json::to_value(x.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                name: x.name.as_str().into(),
                content_type: x.content_type.as_str().into(),
                size_bytes: x.size_bytes as i64,
                sha256: x.sha256.as_str().into(),
                created_at: time(x.uploaded_at),
                ..FileRow::default()
            }),
            FileEvent::OutputStored(x) => self.files.put(FileRow {
                file_id: x.file_id.to_string(),
                tenant_id: x.tenant_id.to_string(),
                kind: "output".into(),
                name: x.name.as_str().into(),
                content_type: x.content_type.as_str().into(),
                size_bytes: x.size_bytes as i64,
                sha256: x.sha256.as_str().into(),
                render_id: Some(x.job_id.to_string()),
                task_id: Some(x.task_id.to_string()),
                node_id: Some(x.node_id.to_string()),
                frame: Some(x.frame.into()),
                lease_epoch: x.lease_epoch.map(i64::from),
                created_at: time(x.stored_at),
                deleted_at: None,
            }),
            FileEvent::Deleted(x) => {
                if let Some(f) = self.files.get_mut(&x.file_id.to_string()) {
                    f.deleted_at = Some(time(x.deleted_at));
                }
            }
        }
    }
}

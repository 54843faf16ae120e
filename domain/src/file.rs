//! The file aggregate: an uploaded scene or input, or a rendered output
//! (stream id = file id). The bytes live in the file store; the events
//! record what was stored and its SHA-256.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::DomainError;
use crate::event::{Aggregate, EventPayload, domain_events, sample_time};
use crate::ids::{FileId, JobId, NodeId, TaskId, TenantId};
use crate::text::{ContentType, FileName};

/// What a client uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// A scene to render.
    Scene,
    /// Another input (texture, cache, …).
    Input,
}

/// `file.uploaded.v1`: a client uploaded a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUploaded {
    /// The file.
    pub file_id: FileId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Scene or input.
    pub kind: UploadKind,
    /// Its name.
    pub name: FileName,
    /// Its media type.
    pub content_type: ContentType,
    /// Its size.
    pub size_bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: Sha256Digest,
    /// When.
    pub uploaded_at: DateTime<Utc>,
}

/// `file.output_stored.v1`: a node uploaded a rendered frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputStored {
    /// The file.
    pub file_id: FileId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The job it belongs to.
    pub job_id: JobId,
    /// The task that rendered it.
    pub task_id: TaskId,
    /// The node that rendered it.
    pub node_id: NodeId,
    /// The frame number.
    pub frame: u32,
    /// The fencing token of the lease it was rendered under.
    #[serde(default)]
    pub lease_epoch: Option<u32>,
    /// Its name.
    pub name: FileName,
    /// Its media type.
    pub content_type: ContentType,
    /// Its size.
    pub size_bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: Sha256Digest,
    /// When.
    pub stored_at: DateTime<Utc>,
}

/// `file.deleted.v1`: the file was deleted; its bytes may be removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDeleted {
    /// The file.
    pub file_id: FileId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When.
    pub deleted_at: DateTime<Utc>,
}

domain_events! {
    /// Everything that happens to a file.
    pub enum FileEvent : "file", stream_id = file_id {
        /// See [`FileUploaded`].
        Uploaded(FileUploaded) => "file.uploaded.v1",
        /// See [`OutputStored`].
        OutputStored(OutputStored) => "file.output_stored.v1",
        /// See [`FileDeleted`].
        Deleted(FileDeleted) => "file.deleted.v1",
    }
}

/// The commands of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCommand {
    /// Record a client upload.
    Upload {
        /// The new file's id.
        file_id: FileId,
        /// Its tenant.
        tenant_id: TenantId,
        /// Scene or input.
        kind: UploadKind,
        /// Its name.
        name: FileName,
        /// Its media type.
        content_type: ContentType,
        /// Its size.
        size_bytes: u64,
        /// SHA-256 of its bytes.
        sha256: Sha256Digest,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Record a rendered frame.
    StoreOutput(Box<OutputStored>),
    /// Delete the file.
    Delete {
        /// Now.
        at: DateTime<Utc>,
    },
}

/// A file as evolved from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct File {
    id: Option<FileId>,
    tenant_id: Option<TenantId>,
    name: Option<FileName>,
    size_bytes: u64,
    sha256: Option<Sha256Digest>,
    output_of: Option<(JobId, TaskId, u32)>,
    deleted: bool,
}

impl File {
    /// Its id, once stored.
    pub fn id(&self) -> Option<FileId> {
        self.id
    }

    /// Its tenant, once stored.
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant_id
    }

    /// Its name, once stored.
    pub fn name(&self) -> Option<&FileName> {
        self.name.as_ref()
    }

    /// Its size.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// SHA-256 of its bytes, once stored.
    pub fn sha256(&self) -> Option<&Sha256Digest> {
        self.sha256.as_ref()
    }

    /// For an output: its job, task and frame.
    pub fn output_of(&self) -> Option<(JobId, TaskId, u32)> {
        self.output_of
    }

    /// Whether it was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }
}

impl Aggregate for File {
    type Event = FileEvent;
    type Command = FileCommand;

    fn decide(&self, command: FileCommand) -> Result<Vec<FileEvent>, DomainError> {
        let (Some(file_id), Some(tenant_id)) = (self.id, self.tenant_id) else {
            return match command {
                FileCommand::Upload {
                    file_id,
                    tenant_id,
                    kind,
                    name,
                    content_type,
                    size_bytes,
                    sha256,
                    at,
                } => Ok(vec![
                    FileUploaded {
                        file_id,
                        tenant_id,
                        kind,
                        name,
                        content_type,
                        size_bytes,
                        sha256,
                        uploaded_at: at,
                    }
                    .into(),
                ]),
                FileCommand::StoreOutput(output) => Ok(vec![FileEvent::OutputStored(*output)]),
                FileCommand::Delete { .. } => Err(DomainError::NotFound {
                    entity: "file",
                    id: "-".into(),
                }),
            };
        };
        match command {
            FileCommand::Upload { .. } | FileCommand::StoreOutput(_) => {
                Err(DomainError::AlreadyExists {
                    entity: "file",
                    id: file_id.to_string(),
                })
            }
            FileCommand::Delete { at } => {
                if self.deleted {
                    return Err(DomainError::InvalidTransition {
                        entity: "file",
                        from: "deleted",
                        command: "delete",
                    });
                }
                Ok(vec![
                    FileDeleted {
                        file_id,
                        tenant_id,
                        deleted_at: at,
                    }
                    .into(),
                ])
            }
        }
    }

    fn evolve(mut self, event: &FileEvent) -> Self {
        match event {
            FileEvent::Uploaded(e) => {
                self.id = Some(e.file_id);
                self.tenant_id = Some(e.tenant_id);
                self.name = Some(e.name.clone());
                self.size_bytes = e.size_bytes;
                self.sha256 = Some(e.sha256.clone());
            }
            FileEvent::OutputStored(e) => {
                self.id = Some(e.file_id);
                self.tenant_id = Some(e.tenant_id);
                self.name = Some(e.name.clone());
                self.size_bytes = e.size_bytes;
                self.sha256 = Some(e.sha256.clone());
                self.output_of = Some((e.job_id, e.task_id, e.frame));
            }
            FileEvent::Deleted(_) => self.deleted = true,
        }
        self
    }
}

fn sample_tenant() -> TenantId {
    TenantId::fixed(0x7d44_4840_9dc0_41d2_a55e_02f7_2e3f_0ca1)
}

fn sample_digest() -> Sha256Digest {
    Sha256Digest::parse("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
        .expect("valid")
}

impl EventPayload for FileUploaded {
    fn sample() -> Self {
        Self {
            file_id: FileId::fixed(0x3c6e_0b8a_9c15_4d1e_b7a2_4f5e_6d7c_8b9a),
            tenant_id: sample_tenant(),
            kind: UploadKind::Scene,
            name: FileName::parse("intro.json").expect("valid"),
            content_type: ContentType::parse("application/json").expect("valid"),
            size_bytes: 18_432,
            sha256: sample_digest(),
            uploaded_at: sample_time(),
        }
    }
}

impl EventPayload for OutputStored {
    fn sample() -> Self {
        let job_id = JobId::fixed(0x1b4e_28ba_2fa1_41d2_883f_0016_d3cc_a427);
        Self {
            file_id: FileId::fixed(0x9a8b_7c6d_5e4f_4a3b_8c2d_1e0f_a9b8_c7d6),
            tenant_id: sample_tenant(),
            job_id,
            task_id: TaskId::derive(job_id, 0),
            node_id: NodeId::fixed(0x5f1e_8a2c_3b4d_4e6f_8a9b_0c1d_2e3f_4a5b),
            frame: 3,
            lease_epoch: Some(1),
            name: FileName::parse("frame_0003.png").expect("valid"),
            content_type: ContentType::parse("image/png").expect("valid"),
            size_bytes: 2_345_678,
            sha256: sample_digest(),
            stored_at: sample_time(),
        }
    }
}

impl EventPayload for FileDeleted {
    fn sample() -> Self {
        Self {
            file_id: FileId::fixed(0x3c6e_0b8a_9c15_4d1e_b7a2_4f5e_6d7c_8b9a),
            tenant_id: sample_tenant(),
            deleted_at: sample_time(),
        }
    }
}

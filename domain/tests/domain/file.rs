//! Given/when/then for every file command.

use domain::file::*;
use domain::*;

use crate::fixtures::*;
use crate::harness::given;

fn uploaded() -> FileEvent {
    FileUploaded {
        file_id: file_id(1),
        tenant_id: tenant_id(),
        kind: UploadKind::Scene,
        name: FileName::parse("scene.json").unwrap(),
        content_type: ContentType::parse("application/json").unwrap(),
        size_bytes: 1234,
        sha256: digest('a'),
        uploaded_at: t(0),
    }
    .into()
}

fn output() -> OutputStored {
    OutputStored {
        file_id: file_id(2),
        tenant_id: tenant_id(),
        job_id: job_id(),
        task_id: task_id(0),
        node_id: node_id(1),
        frame: 7,
        lease_epoch: Some(1),
        name: FileName::parse("frame_0007.png").unwrap(),
        content_type: ContentType::parse("image/png").unwrap(),
        size_bytes: 99,
        sha256: digest('b'),
        stored_at: t(5),
    }
}

#[test]
fn upload() {
    let file = given::<File>([])
        .when(FileCommand::Upload {
            file_id: file_id(1),
            tenant_id: tenant_id(),
            kind: UploadKind::Scene,
            name: FileName::parse("scene.json").unwrap(),
            content_type: ContentType::parse("application/json").unwrap(),
            size_bytes: 1234,
            sha256: digest('a'),
            at: t(0),
        })
        .then([uploaded()]);
    assert_eq!(file.sha256(), Some(&digest('a')));
    given::<File>([uploaded()])
        .when(FileCommand::StoreOutput(Box::new(output())))
        .then_err(DomainError::AlreadyExists {
            entity: "file",
            id: file_id(1).to_string(),
        });
}

#[test]
fn store_output() {
    let file = given::<File>([])
        .when(FileCommand::StoreOutput(Box::new(output())))
        .then([output().into()]);
    assert_eq!(file.output_of(), Some((job_id(), task_id(0), 7)));
}

#[test]
fn delete() {
    let deleted: FileEvent = FileDeleted {
        file_id: file_id(1),
        tenant_id: tenant_id(),
        deleted_at: t(9),
    }
    .into();
    let file = given::<File>([uploaded()])
        .when(FileCommand::Delete { at: t(9) })
        .then([deleted.clone()]);
    assert!(file.is_deleted());
    given::<File>([uploaded(), deleted])
        .when(FileCommand::Delete { at: t(10) })
        .then_err(DomainError::InvalidTransition {
            entity: "file",
            from: "deleted",
            command: "delete",
        });
    given::<File>([])
        .when(FileCommand::Delete { at: t(10) })
        .then_err(DomainError::NotFound {
            entity: "file",
            id: "-".into(),
        });
}

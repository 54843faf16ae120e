//! Given/when/then for every identity command.

use domain::identity::*;
use domain::*;

use crate::fixtures::*;
use crate::harness::given;

fn registered() -> IdentityEvent {
    UserRegistered {
        user_id: user_id(),
        tenant_id: tenant_id(),
        email: Email::parse("ada@example.com").unwrap(),
        display_name: label("Ada"),
        role: Role::Admin,
        registered_at: t(0),
    }
    .into()
}

fn issue(
    n: u128,
    scopes: Vec<Scope>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> IdentityCommand {
    IdentityCommand::IssueApiKey {
        api_key_id: api_key_id(n),
        prefix: KeyPrefix::parse("fr_ab12").unwrap(),
        scopes,
        key_hash: digest('c'),
        expires_at,
        at: t(1),
    }
}

fn issued(n: u128) -> IdentityEvent {
    ApiKeyIssued {
        user_id: user_id(),
        tenant_id: tenant_id(),
        api_key_id: api_key_id(n),
        prefix: KeyPrefix::parse("fr_ab12").unwrap(),
        scopes: vec![Scope::RendersRead],
        key_hash: digest('c'),
        expires_at: Some(t(100)),
        issued_at: t(1),
    }
    .into()
}

fn revoked(n: u128) -> IdentityEvent {
    ApiKeyRevoked {
        user_id: user_id(),
        tenant_id: tenant_id(),
        api_key_id: api_key_id(n),
        reason: None,
        revoked_at: t(2),
    }
    .into()
}

#[test]
fn register_user() {
    given::<Identity>([])
        .when(IdentityCommand::RegisterUser {
            user_id: user_id(),
            tenant_id: tenant_id(),
            email: Email::parse("ada@example.com").unwrap(),
            display_name: label("Ada"),
            role: Role::Admin,
            at: t(0),
        })
        .then([registered()]);
    given::<Identity>([registered()])
        .when(IdentityCommand::RegisterUser {
            user_id: user_id(),
            tenant_id: tenant_id(),
            email: Email::parse("ada@example.com").unwrap(),
            display_name: label("Ada"),
            role: Role::Member,
            at: t(0),
        })
        .then_err(DomainError::AlreadyExists {
            entity: "user",
            id: user_id().to_string(),
        });
}

#[test]
fn issue_api_key() {
    let identity = given::<Identity>([registered()])
        .when(issue(1, vec![Scope::RendersRead], Some(t(100))))
        .then([issued(1)]);
    let key = identity.api_key(api_key_id(1)).unwrap();
    assert!(key.is_active_at(t(50)) && !key.is_active_at(t(100)));
    given::<Identity>([registered(), issued(1)])
        .when(issue(1, vec![Scope::RendersRead], None))
        .then_err(DomainError::AlreadyExists {
            entity: "api_key",
            id: api_key_id(1).to_string(),
        });
    for (scopes, expires_at, field) in [
        (vec![], None, "scopes"),
        (vec![Scope::FilesRead, Scope::FilesRead], None, "scopes"),
        (vec![Scope::FilesRead], Some(t(0)), "expires_at"),
    ] {
        given::<Identity>([registered()])
            .when(issue(2, scopes, expires_at))
            .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == field));
    }
    given::<Identity>([])
        .when(issue(1, vec![Scope::RendersRead], None))
        .then_err(DomainError::NotFound {
            entity: "user",
            id: "-".into(),
        });
}

#[test]
fn revoke_api_key() {
    let identity = given::<Identity>([registered(), issued(1)])
        .when(IdentityCommand::RevokeApiKey {
            api_key_id: api_key_id(1),
            reason: None,
            at: t(2),
        })
        .then([revoked(1)]);
    assert!(!identity.api_key(api_key_id(1)).unwrap().is_active_at(t(3)));
    given::<Identity>([registered(), issued(1), revoked(1)])
        .when(IdentityCommand::RevokeApiKey {
            api_key_id: api_key_id(1),
            reason: None,
            at: t(3),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "api_key",
            from: "revoked",
            command: "revoke",
        });
    given::<Identity>([registered()])
        .when(IdentityCommand::RevokeApiKey {
            api_key_id: api_key_id(9),
            reason: None,
            at: t(3),
        })
        .then_err(DomainError::NotFound {
            entity: "api_key",
            id: api_key_id(9).to_string(),
        });
}

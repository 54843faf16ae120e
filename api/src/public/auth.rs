//! Who is calling the public API: a JWT (`Authorization: Bearer …`) whose
//! algorithm is fixed by configuration, signature, `exp`, `nbf`, `aud` and
//! `iss` checked. The tenant of every query comes from the token and from
//! nowhere else. Each tenant's requests are rate limited.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use domain::TenantId;
use domain::identity::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// The claims of a FlatRender access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The user's tenant: the only source of a request's tenant.
    pub tenant_id: Uuid,
    /// The user's role.
    pub role: Role,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires.
    pub exp: i64,
}

/// The default issuer and audience.
pub const ISSUER: &str = "flatrender";
/// The default audience.
pub const AUDIENCE: &str = "flatrender-api";

/// Checks tokens (and, with a shared secret, issues them for development).
#[derive(Clone)]
pub struct Jwt {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Jwt")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Why a JWT configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// The key file cannot be read or written.
    #[error("JWT key file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key is not one the algorithm takes.
    #[error("JWT key: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
    /// A shared secret shorter than 32 bytes.
    #[error("the JWT secret must be at least 32 bytes")]
    ShortSecret,
    /// An algorithm FlatRender does not take.
    #[error("JWT algorithm {0}: use HS256, RS256 or EdDSA")]
    Algorithm(String),
}

impl Jwt {
    /// HS256 with a shared secret (the embedded default).
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Result<Self, JwtConfigError> {
        if secret.len() < 32 {
            return Err(JwtConfigError::ShortSecret);
        }
        Ok(Self {
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// RS256 or EdDSA with a public key (PEM): tokens are issued elsewhere.
    pub fn public_key(
        algorithm: &str,
        pem: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<Self, JwtConfigError> {
        let (algorithm, decoding) = match algorithm {
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(pem)?),
            "EdDSA" => (Algorithm::EdDSA, DecodingKey::from_ed_pem(pem)?),
            other => return Err(JwtConfigError::Algorithm(other.into())),
        };
        Ok(Self {
            algorithm,
            decoding,
            encoding: None,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// HS256 with the secret in `path`, created (32 random bytes, hex,
    /// readable by the owner only) when missing.
    pub fn hs256_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, JwtConfigError> {
        let file_error = |source| JwtConfigError::File {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(file_error)?;
            }
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| file_error(std::io::Error::other(e)))?;
            write_private(path, hex::encode(bytes).as_bytes()).map_err(file_error)?;
        }
        let secret = std::fs::read(path).map_err(file_error)?;
        Self::hs256(secret.trim_ascii(), issuer, audience)
    }

    /// A random secret nobody knows: every token is refused (a server
    /// started without a JWT configuration, in tests).
    pub fn unusable() -> Self {
        let mut bytes = [0u8; 32];
        let _ = getrandom::fill(&mut bytes);
        Self {
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(&bytes),
            encoding: None,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
        }
    }

    /// Issues a token (HS256 only: with a public key, tokens come from the
    /// identity provider).
    pub fn issue(
        &self,
        user: Uuid,
        tenant: Uuid,
        role: Role,
        lifetime: chrono::Duration,
    ) -> Option<String> {
        let key = self.encoding.as_ref()?;
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            tenant_id: tenant,
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + lifetime.num_seconds(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).ok()
    }

    /// The claims of a valid token; `None` for anything else (bad
    /// signature, another algorithm, `none`, expired, not yet valid, other
    /// audience or issuer, missing claims).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(self.algorithm);
        validation.algorithms = vec![self.algorithm];
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|t| t.claims)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// A per-tenant token bucket: `per_second` requests a second on average,
/// bursts of `burst`.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl RateLimit {
    /// A limit of `per_second` with bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request of the tenant; `Err(seconds)` to wait when over.
    pub fn take(&self, tenant: Uuid) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(tenant).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new(100, 200)
    }
}

/// The caller of a public request, from its verified token.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The user.
    pub user_id: Uuid,
    /// The tenant every query of the request is scoped to.
    pub tenant_id: TenantId,
    /// The user's role.
    pub role: Role,
}

impl Caller {
    /// Refuses callers whose role only reads (auditors) a change.
    pub fn may_change(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Member | Role::Operator => Ok(()),
            Role::Auditor => Err(ApiError::Forbidden),
        }
    }

    /// Refuses callers who do not run the farm (the node surfaces).
    pub fn operates(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Operator => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // A reseller request, its signature already verified by
        // `reseller::auth` (extensions come from the server, never the client).
        if let Some(caller) = parts.extensions.get::<ResellerCaller>() {
            return Ok(caller.0);
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized(
                "an Authorization: Bearer token is required",
            ))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(ApiError::Unauthorized(
                "an Authorization: Bearer token is required",
            ))?;
        Self::from_token(state, token).await
    }
}

/// The caller of a reseller request, put in the request's extensions by
/// the reseller API's authentication once its signature, key and scope
/// are checked.
#[derive(Debug, Clone, Copy)]
pub struct ResellerCaller(pub Caller);

impl Caller {
    /// The caller a token names: verified, rate limited, and its user an
    /// active user of the token's tenant.
    pub async fn from_token(state: &AppState, token: &str) -> Result<Self, ApiError> {
        let claims = state
            .auth
            .jwt
            .verify(token.trim())
            .ok_or(ApiError::Unauthorized("the token is not valid"))?;
        let tenant_id = TenantId::new(claims.tenant_id)
            .map_err(|_| ApiError::Unauthorized("the token is not valid"))?;
        state
            .auth
            .limit
            .take(claims.tenant_id)
            .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
        // The user must exist in that tenant and not have been removed.
        let allowed = state
            .auth
            .users
            .allows(&state.store, claims.sub, tenant_id, claims.role)
            .await
            .map_err(|e| ApiError::Unavailable(e.into()))?;
        if !allowed {
            return Err(ApiError::Unauthorized(
                "the token's user is not an active user of its tenant",
            ));
        }
        Ok(Self {
            user_id: claims.sub,
            tenant_id,
            role: claims.role,
        })
    }
}

/// The public API's authentication settings.
#[derive(Debug)]
pub struct Auth {
    /// Token checks.
    pub jwt: Jwt,
    /// Requests per tenant.
    pub limit: RateLimit,
    /// Whether a token's user is (still) a user of its tenant.
    pub users: crate::users::UserCheck,
    /// Failed password sign-ins per address.
    pub sign_ins: SignInLimit,
}

impl Auth {
    /// Tokens checked by `jwt`, requests limited by `limit`.
    pub fn new(jwt: Jwt, limit: RateLimit) -> Arc<Self> {
        Arc::new(Self {
            jwt,
            limit,
            users: crate::users::UserCheck::default(),
            sign_ins: SignInLimit::default(),
        })
    }
}

/// Failed password sign-ins per e-mail address: after [`SignInLimit::FAILURES`]
/// within [`SignInLimit::WINDOW`], the address is refused (429) until the
/// window has passed, whatever the password: guessing costs the guesser
/// time, not the server.
#[derive(Debug, Default)]
pub struct SignInLimit {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl SignInLimit {
    /// Failures allowed within the window.
    pub const FAILURES: u32 = 5;
    /// The window.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

    /// `Err(seconds to wait)` while the address is locked out.
    pub fn check(&self, email: &str) -> Result<(), u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(email) {
            Some((n, since)) if *n >= Self::FAILURES && since.elapsed() < Self::WINDOW => {
                Err((Self::WINDOW - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure.
    pub fn fail(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, (_, since)| since.elapsed() < Self::WINDOW);
        }
        let entry = failures
            .entry(email.to_string())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= Self::WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets the failures of an address that signed in.
    pub fn clear(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(email);
    }
}

/// How long a token from a password sign-in is valid.
pub const SIGN_IN_TOKEN_HOURS: i64 = 12;

/// `POST /v1/auth/token`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    email: String,
    password: String,
}

/// `POST /v1/auth/token`: an access token for a user's e-mail address and
/// password (users whose password was set with `flatrender user create
/// --password-stdin`). A wrong password, an unknown address and a removed
/// user get the same 401.
pub async fn sign_in(
    axum::extract::State(state): axum::extract::State<AppState>,
    body: Result<axum::Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let b = super::body(body)?;
    if b.email.len() > 254 {
        return Err(super::field("email", "at most 254 bytes"));
    }
    if b.password.len() > 4096 {
        return Err(super::field("password", "at most 4096 bytes"));
    }
    let email = b.email.trim().to_lowercase();
    state
        .auth
        .sign_ins
        .check(&email)
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let who = crate::users::sign_in(&state.store, &email, &b.password)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let Some((user, tenant, role)) = who else {
        state.auth.sign_ins.fail(&email);
        return Err(ApiError::Unauthorized(
            "the e-mail address or the password is wrong",
        ));
    };
    state.auth.sign_ins.clear(&email);
    let lifetime = chrono::Duration::hours(SIGN_IN_TOKEN_HOURS);
    let token = state
        .auth
        .jwt
        .issue(user, tenant.as_uuid(), role, lifetime)
        .ok_or_else(|| ApiError::Unprocessable {
            code: "sign_in_unavailable",
            message:
                "this server checks tokens from an identity provider and issues none: sign in there"
                    .into(),
            details: serde_json::json!({}),
        })?;
    let expires_at = chrono::Utc::now() + lifetime;
    Ok(axum::Json(serde_json::json!({
        "token": token,
        "token_type": "Bearer",
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "user_id": user,
        "tenant_id": tenant.as_uuid(),
        "role": role,
    })))
}

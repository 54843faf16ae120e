//! The public REST API for studios (`Authorization: Bearer <JWT>`): files,
//! renders, their tasks, frames and history, the tenant's balance and
//! usage. Conventions of SPEC §7: `/v1/…`, pages `{items, page,
//! page_size, total}`, the contract's error body on every failure. Reads
//! come from the read models (`projections`), changes go through the
//! orchestrator; every read is scoped to the token's tenant.

mod api_keys;
pub(crate) mod archive;
pub mod auth;
pub(crate) mod files;
pub(crate) mod frames;
pub(crate) mod logs;
mod nodes;
pub(crate) mod renders;
pub(crate) mod tenant;
mod webhooks;
pub mod ws;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

/// The public routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/auth/token", post(auth::sign_in))
        .route("/v1/files", post(files::upload))
        .route("/v1/files/{file_id}", get(files::metadata))
        .route("/v1/files/{file_id}/content", get(files::download))
        .route("/v1/renders", get(renders::list).post(renders::submit))
        .route("/v1/renders/{render_id}", get(renders::show))
        .route("/v1/renders/{render_id}/tasks", get(renders::tasks))
        .route(
            "/v1/renders/{render_id}/tasks/{task_id}/attempts",
            get(logs::attempts),
        )
        .route(
            "/v1/renders/{render_id}/tasks/{task_id}/attempts/{attempt}/log",
            get(logs::log),
        )
        .route("/v1/renders/{render_id}/events", get(renders::events))
        .route("/v1/renders/{render_id}/frames", get(renders::frames))
        .route("/v1/renders/{render_id}/frames/{frame}", get(frames::frame))
        .route(
            "/v1/renders/{render_id}/frames/{frame}/thumbnail",
            get(frames::thumbnail),
        )
        .route("/v1/renders/{render_id}/archive", get(archive::archive))
        .route("/v1/renders/{render_id}/pause", post(renders::pause))
        .route("/v1/renders/{render_id}/resume", post(renders::resume))
        .route("/v1/renders/{render_id}/cancel", post(renders::cancel))
        .route("/v1/renders/{render_id}/retry", post(renders::retry))
        .route("/v1/renders/{render_id}/priority", post(renders::priority))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/{node_id}/drain", post(nodes::drain))
        .route("/v1/nodes/{node_id}/enable", post(nodes::enable))
        .route("/v1/nodes/{node_id}/disable", post(nodes::disable))
        .route("/v1/api-keys", get(api_keys::list).post(api_keys::issue))
        .route("/v1/api-keys/{api_key_id}", delete(api_keys::revoke))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::register))
        .route("/v1/webhooks/{webhook_id}", delete(webhooks::remove))
        .route("/v1/tenant", get(tenant::show))
        .route("/v1/tenant/usage", get(tenant::usage))
        .route("/v1/ws/renders", get(ws::tenant))
        .route("/v1/ws/renders/{render_id}", get(ws::render))
}

/// `GET /v1/openapi.json`: the committed contract, as JSON.
async fn openapi() -> axum::Json<serde_json::Value> {
    axum::Json(contracts::gateway_public::document().clone())
}

/// The largest JSON body (axum's default limit).
pub(crate) const JSON_LIMIT: u64 = 2 * 1024 * 1024;

/// A JSON body, its rejections in the contract's error body: 415 without
/// a JSON content type, 400 for malformed JSON, 422 for the wrong shape.
pub(crate) fn body<T: DeserializeOwned>(
    body: Result<axum::Json<T>, JsonRejection>,
) -> Result<T, ApiError> {
    match body {
        Ok(axum::Json(v)) => Ok(v),
        Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge { limit: JSON_LIMIT })
        }
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest {
            code: "malformed_json",
            message: e.body_text(),
            details: json!({}),
        }),
        Err(e @ JsonRejection::JsonDataError(_)) => Err(ApiError::Unprocessable {
            code: "invalid_body",
            message: e.body_text(),
            details: json!({}),
        }),
        Err(e) => Err(ApiError::BadRequest {
            code: "invalid_body",
            message: e.body_text(),
            details: json!({}),
        }),
    }
}

/// Query parameters, refused in the contract's error body.
pub(crate) fn query<T>(
    query: Result<axum::extract::Query<T>, QueryRejection>,
) -> Result<T, ApiError> {
    query.map(|q| q.0).map_err(|e| ApiError::BadRequest {
        code: "invalid_parameter",
        message: e.body_text(),
        details: json!({}),
    })
}

/// An id in a path: a UUID, or 400.
pub(crate) fn id(text: &str, what: &'static str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text)
        .ok()
        .filter(|u| {
            !u.is_nil() && text.len() == 36 && !text.bytes().any(|b| b.is_ascii_uppercase())
        })
        .ok_or_else(|| ApiError::BadRequest {
            code: "invalid_id",
            message: format!("{what} must be a lower-case UUID"),
            details: json!({ "parameter": what }),
        })
}

/// `?page=&page_size=`: page from 1, 1 to 100 items (default 20).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    page: Option<u32>,
    page_size: Option<u32>,
}

impl Page {
    /// (page, page size, offset), checked.
    pub fn checked(page: Option<u32>, page_size: Option<u32>) -> Result<(i64, i64, i64), ApiError> {
        let page = page.unwrap_or(1);
        let size = page_size.unwrap_or(20);
        if page == 0 {
            return Err(field("page", "page starts at 1"));
        }
        if !(1..=100).contains(&size) {
            return Err(field("page_size", "page_size is 1 to 100"));
        }
        Ok((
            i64::from(page),
            i64::from(size),
            (i64::from(page) - 1) * i64::from(size),
        ))
    }

    pub fn get(&self) -> Result<(i64, i64, i64), ApiError> {
        Self::checked(self.page, self.page_size)
    }
}

/// A value out of bounds: 422 naming the field.
pub(crate) fn field(name: &str, message: &str) -> ApiError {
    ApiError::Unprocessable {
        code: "invalid_field",
        message: message.to_string(),
        details: json!({ "field": name }),
    }
}

/// A page of items as the contract has it.
pub(crate) fn page_of(
    items: Vec<serde_json::Value>,
    (page, size, _): (i64, i64, i64),
    total: i64,
) -> serde_json::Value {
    json!({ "items": items, "page": page, "page_size": size, "total": total })
}

/// The tenant a request about `render_id` is scoped to: the caller's
/// tenant, except for the farm's operators, who may see every tenant's
/// renders (the render's own tenant, if it exists).
pub(crate) async fn scope_of(
    state: &AppState,
    caller: &auth::Caller,
    render_id: uuid::Uuid,
) -> Result<domain::TenantId, ApiError> {
    if caller.role != domain::identity::Role::Operator {
        return Ok(caller.tenant_id);
    }
    let Ok(job) = domain::JobId::new(render_id) else {
        return Ok(caller.tenant_id);
    };
    if let Some(tenant) = state.orchestrator.tenant_of(job).await {
        return Ok(tenant);
    }
    let row = projections::query::render_of_any_tenant(&state.store, render_id)
        .await
        .map_err(read_failed)?;
    Ok(row
        .and_then(|r| r.tenant_id.parse().ok())
        .and_then(|t| domain::TenantId::new(t).ok())
        .unwrap_or(caller.tenant_id))
}

/// A render of the caller's tenant (any tenant's for operators) and the
/// tenant it belongs to, or 404: the scheduler's view knows a render the
/// moment it is submitted, the read model the renders the view no longer
/// holds.
pub(crate) async fn render_of(
    state: &AppState,
    caller: &auth::Caller,
    render: &str,
) -> Result<(uuid::Uuid, domain::TenantId), ApiError> {
    let render_id = id(render, "render_id")?;
    let scope = scope_of(state, caller, render_id).await?;
    let job = domain::JobId::new(render_id).map_err(|_| ApiError::NotFound)?;
    let tenant = match state.orchestrator.tenant_of(job).await {
        Some(t) => Some(t),
        None => projections::query::render(&state.store, scope.as_uuid(), render_id)
            .await
            .map_err(read_failed)?
            .map(|_| scope),
    };
    if tenant == Some(scope) {
        Ok((render_id, scope))
    } else {
        Err(ApiError::NotFound)
    }
}

/// A read-model failure: logged, a 500 body.
pub(crate) fn read_failed(e: projections::ProjectionError) -> ApiError {
    ApiError::Internal(e.into())
}

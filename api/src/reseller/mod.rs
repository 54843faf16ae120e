//! The reseller API (`contracts/rest/reseller-api.openapi.yaml`): the
//! public API's render and file operations under `/v1/reseller/…`, the
//! same handlers, for the tenant of an API key instead of a token's.
//! [`auth`] checks each request's signature, key and scope before a
//! handler sees it and hands the handler a [`Caller`](crate::public::auth::Caller);
//! [`idempotency`] answers a retried `POST` with its first answer.

pub mod auth;
pub mod idempotency;

use axum::Router;
use axum::routing::{get, post};

use crate::app::AppState;
use crate::public::{archive, files, frames, logs, renders, tenant};

/// The reseller routes; every one but the document is signed.
pub fn routes(state: &AppState) -> Router<AppState> {
    let signed = Router::new()
        .route("/v1/reseller/files", post(files::upload))
        .route("/v1/reseller/files/{file_id}", get(files::metadata))
        .route("/v1/reseller/files/{file_id}/content", get(files::download))
        .route(
            "/v1/reseller/renders",
            get(renders::list).post(renders::submit),
        )
        .route("/v1/reseller/renders/{render_id}", get(renders::show))
        .route(
            "/v1/reseller/renders/{render_id}/tasks",
            get(renders::tasks),
        )
        .route(
            "/v1/reseller/renders/{render_id}/tasks/{task_id}/attempts",
            get(logs::attempts),
        )
        .route(
            "/v1/reseller/renders/{render_id}/tasks/{task_id}/attempts/{attempt}/log",
            get(logs::log),
        )
        .route(
            "/v1/reseller/renders/{render_id}/events",
            get(renders::events),
        )
        .route(
            "/v1/reseller/renders/{render_id}/frames",
            get(renders::frames),
        )
        .route(
            "/v1/reseller/renders/{render_id}/frames/{frame}",
            get(frames::frame),
        )
        .route(
            "/v1/reseller/renders/{render_id}/frames/{frame}/thumbnail",
            get(frames::thumbnail),
        )
        .route(
            "/v1/reseller/renders/{render_id}/archive",
            get(archive::archive),
        )
        .route(
            "/v1/reseller/renders/{render_id}/pause",
            post(renders::pause),
        )
        .route(
            "/v1/reseller/renders/{render_id}/resume",
            post(renders::resume),
        )
        .route(
            "/v1/reseller/renders/{render_id}/cancel",
            post(renders::cancel),
        )
        .route(
            "/v1/reseller/renders/{render_id}/retry",
            post(renders::retry),
        )
        .route(
            "/v1/reseller/renders/{render_id}/priority",
            post(renders::priority),
        )
        .route("/v1/reseller/tenant", get(tenant::show))
        .route("/v1/reseller/tenant/usage", get(tenant::usage))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/v1/reseller/openapi.json", get(openapi))
        .merge(signed)
}

/// `GET /v1/reseller/openapi.json`: the committed contract, as JSON.
async fn openapi() -> axum::Json<serde_json::Value> {
    axum::Json(contracts::reseller_api::document().clone())
}

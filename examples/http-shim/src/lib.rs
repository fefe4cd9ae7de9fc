//! `jitflow-shim`: an HTTP server over the embedded jitflow engine that serves SailPoint Identity
//! Security Cloud's JIT REST contract (`shared/api/`): the activation signals, the activation
//! policy, the entitlement connections (list, patch, bulk type update) and the activation
//! history, plus the shim's own connection import, event history, audit export and drift
//! findings and inspection ([`drift`]), `/health`,
//! `/metrics` and `/openapi.json`, and the operators' web console at `/console/` ([`console`]).
//!
//! [`app`] builds the router over an [`Engine`] the caller opened (so tests can give it a
//! manual clock); [`start`] serves it on a listener until [`Running::stop`]. The binary in
//! `main.rs` adds the command line, the secret file, logging and signal handling.
//!
//! Every vendor path is served in both of the contract's forms, `/jit-activations/v1/activate`
//! and `/v2026/jit-activations/activate` (see [`v2026_alias`]). Every error is the contract's
//! `ErrorResponseDto` (see [`error`]), with a status the operation declares in the vendor's
//! file or one of the few [`deviations::DEVIATIONS`]; the tenant always comes from the bearer
//! token (see [`auth`]). The `X-SailPoint-Experimental` header is accepted and not required.
//!
//! # Limits
//!
//! | what | bound |
//! |---|---|
//! | request body, signals and other endpoints | [`MAX_BODY`] (16 KiB) |
//! | request body, policy `PATCH`/`PUT` | [`MAX_POLICY_BODY`] (512 KiB) |
//! | request body, access request close | [`access_requests::MAX_CLOSE_BODY`] (64 KiB) |
//! | request body, connection import | [`connections::MAX_IMPORT_BYTES`] (8 MiB), [`connections::MAX_IMPORT`] items |
//! | request body, bulk type update | [`entitlement_connections::MAX_BULK_BYTES`] (64 KiB), 1..=100 items |
//! | query string | [`body::MAX_QUERY_LEN`] bytes, [`body::MAX_PARAMS`] parameters |
//! | list page | `limit` 0..=250, `offset` 0..=10,000 (the engine's query bounds) |
//! | event stream page, audit export page | [`events::MAX_STREAM_PAGE`], `jitflow::MAX_PAGE` events |
//! | one request, its body's arrival included | [`REQUEST_TIMEOUT`] (30 s, [`Limits::request_timeout`]), then 503 |
//! | connections served at once | [`MAX_CONNECTIONS`] (1,024); more wait in the listen backlog |
//! | a request's headers | [`HEADER_READ_TIMEOUT`] (10 s) to arrive, then the connection is closed |
//! | `Authorization` header | [`auth::MAX_TOKEN_LEN`] bytes, [`auth::MAX_SCOPES`] scopes |
//! | JWKS file or response | [`auth::jwks::MAX_DOCUMENT_BYTES`] (64 KiB), [`auth::jwks::MAX_KEYS`] keys |
//! | JWKS fetch | `--jwks-timeout` (at most [`auth::jwks::MAX_TIMEOUT`]), one per `--jwks-cooldown` |
//! | error text | [`error::MAX_ERROR_TEXT`] characters |
//! | signals' `requestOrigin`, `metaData` | [`jitflow_core::client::MAX_REQUEST_ORIGIN`] characters; [`jitflow_core::client::MAX_META_ENTRIES`] entries, [`jitflow_core::client::MAX_META_BYTES`] bytes |
//! | policy `If-Match` | [`policy::MAX_IF_MATCH_TAGS`] entity tags |
//!
//! Dependencies, and why: `axum`, `tower` and `tower-http` (the router, body limits, tracing and
//! panic catching), `hyper` and `hyper-util` (the connection loop, for the header read timeout and
//! graceful shutdown that `axum::serve` does not expose), `serde`/`serde_json` (the contract's
//! JSON), `serde_path_to_error` (a body's mismatch names the field), `jsonwebtoken` (HS256 bearer
//! tokens, and RS256/ES256 ones checked against a JWKS, with its pure-Rust `rust_crypto`
//! backend so it builds from crates.io alone), `reqwest` (fetching a `--jwks-url`, plain HTTP:
//! no TLS stack, for the same reason), `utoipa` (the OpenAPI document generated from the
//! handlers), `clap` (the command line and its environment variables), `tracing-subscriber`
//! (human and JSON logs), `getrandom` (the generated secret and the demo's failures), `uuid`
//! (tracking ids, generated ids), `humantime` (`--ttl 1h`), `thiserror` (error enums), `tokio`
//! (the runtime, signals), `jitflow-store` (the store reads behind the `/metrics` gauges).
#![forbid(unsafe_code)]

pub mod access_requests;
pub mod activations;
pub mod approvals;
pub mod auth;
pub mod body;
pub mod connections;
pub mod console;
pub mod demo;
pub mod deviations;
pub mod drift;
pub mod entitlement_connections;
pub mod error;
pub mod events;
pub mod history;
pub mod list;
pub mod openapi;
pub mod ops;
pub mod partitions;
pub mod policy;
pub mod request_config;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use jitflow::Engine;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;

/// The largest request body of most endpoints, in bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// The largest policy `PATCH` or `PUT` body, in bytes (a policy of 1000 entitlements fits).
pub const MAX_POLICY_BODY: usize = 512 * 1024;
/// Connections served at once; see [`Limits::max_connections`].
pub const MAX_CONNECTIONS: usize = 1024;
/// Time allowed for a request's headers to arrive; see [`Limits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one request may take before it is answered 503 ([`Limits::request_timeout`]). A
/// signal that timed out may still commit: retry it with the same `Idempotency-Key` to learn
/// its outcome.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engines, by partition: one for a redb file.
    pub partitions: Arc<partitions::Partitions>,
    /// The token keys.
    pub keys: Arc<auth::Keys>,
}

impl AppState {
    /// State over one open engine (a redb file's) and the token keys.
    pub fn new(engine: Engine, keys: auth::Keys) -> AppState {
        AppState::over(Arc::new(partitions::Partitions::single(engine)), keys)
    }

    /// State over the partitions a node serves and the token keys.
    pub fn over(partitions: Arc<partitions::Partitions>, keys: auth::Keys) -> AppState {
        AppState {
            partitions,
            keys: Arc::new(keys),
        }
    }

    /// The engine serving `tenant`: a 503 naming the node that does when another serves it.
    pub fn engine(&self, tenant: &jitflow_core::id::TenantId) -> Result<Engine, ApiError> {
        self.partitions.engine(tenant)
    }
}

/// One served route: method, path, handler, for a vendor operation the statuses its file
/// declares (`None` for the shim's own paths), and the [`auth::Rule`] its handler enforces
/// (`None` for the operators' paths, which need no token).
type Route = (
    Method,
    &'static str,
    MethodRouter<AppState>,
    Option<&'static [u16]>,
    Option<auth::Rule>,
);

/// The served routes, each as documented in the OpenAPI document. Vendor paths
/// (`/<api>/v1/...`) are also served under their [`v2026_alias`], and answer only the statuses
/// their operation declares or [`deviations::DEVIATIONS`] lists.
fn route_table() -> Vec<Route> {
    let signal = |r: MethodRouter<AppState>| r.layer(DefaultBodyLimit::max(MAX_BODY));
    let policy_body = |r: MethodRouter<AppState>| r.layer(DefaultBodyLimit::max(MAX_POLICY_BODY));
    vec![
        (
            Method::POST,
            "/jit-activations/v1/activate",
            signal(post(activations::activate)),
            Some(&[202, 400, 401, 403, 429, 500]),
            Some(auth::ACTIVATE),
        ),
        (
            Method::POST,
            "/jit-activations/v1/extend",
            signal(post(activations::extend)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::EXTEND),
        ),
        (
            Method::POST,
            "/jit-activations/v1/deactivate",
            signal(post(activations::deactivate)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::DEACTIVATE),
        ),
        (
            Method::GET,
            "/jit-activation-config/v1/{configType}",
            get(policy::get),
            Some(&[200, 400, 401, 403, 404, 429, 500]),
            Some(auth::POLICY_READ),
        ),
        (
            Method::PATCH,
            "/jit-activation-config/v1/{configType}",
            policy_body(patch(policy::patch)),
            Some(&[200, 400, 401, 403, 404, 429, 500]),
            Some(auth::POLICY_UPDATE),
        ),
        (
            Method::PUT,
            "/jitflow/v1/jit-activation-config/{configType}",
            policy_body(put(policy::put)),
            None,
            Some(auth::POLICY_UPDATE),
        ),
        (
            Method::POST,
            "/jitflow/v1/connections",
            post(connections::import).layer(DefaultBodyLimit::max(connections::MAX_IMPORT_BYTES)),
            None,
            Some(auth::CONNECTIONS_MANAGE),
        ),
        (
            Method::DELETE,
            "/jitflow/v1/connections/{id}",
            signal(delete(connections::remove)),
            None,
            Some(auth::CONNECTIONS_MANAGE),
        ),
        (
            Method::GET,
            "/jitflow/v1/connections/{id}",
            get(connections::show),
            None,
            Some(auth::CONNECTIONS_LIST),
        ),
        (
            Method::POST,
            "/jitflow/v1/connections/{id}/reconcile",
            signal(post(drift::reconcile)),
            None,
            Some(auth::CONNECTIONS_MANAGE),
        ),
        (
            Method::GET,
            "/jitflow/v1/drift",
            get(drift::findings),
            None,
            Some(auth::HISTORY_READ),
        ),
        (
            Method::GET,
            "/entitlement-connections/v1",
            get(entitlement_connections::search),
            Some(&[200, 400, 401, 403, 404, 412, 429, 500]),
            Some(auth::CONNECTIONS_LIST),
        ),
        (
            Method::GET,
            "/entitlement-connections/v1/current-identity",
            get(entitlement_connections::search_current_identity),
            Some(&[200, 400, 401, 403, 404, 412, 429, 500]),
            Some(auth::CONNECTIONS_READ_SELF),
        ),
        (
            Method::PATCH,
            "/entitlement-connections/v1/{connectionId}",
            signal(patch(entitlement_connections::patch_by_id)),
            Some(&[200, 400, 401, 403, 404, 412, 429, 500]),
            Some(auth::CONNECTIONS_MANAGE),
        ),
        (
            Method::PATCH,
            "/entitlement-connections/v1",
            signal(patch(entitlement_connections::patch_by_query)),
            Some(&[200, 400, 401, 403, 404, 412, 429, 500]),
            Some(auth::CONNECTIONS_MANAGE),
        ),
        (
            Method::POST,
            "/entitlement-connections/v1",
            post(entitlement_connections::bulk).layer(DefaultBodyLimit::max(
                entitlement_connections::MAX_BULK_BYTES,
            )),
            Some(&[207, 400, 401, 403, 429, 500]),
            Some(auth::CONNECTIONS_MANAGE),
        ),
        (
            Method::GET,
            "/jit-activation-history/v1",
            get(history::search),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::HISTORY_READ),
        ),
        (
            Method::GET,
            "/jit-activation-history/v1/current-identity",
            get(history::search_current_identity),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::HISTORY_READ_SELF),
        ),
        (
            Method::GET,
            "/jitflow/v1/connections/{id}/events",
            get(events::connection_events),
            None,
            Some(auth::HISTORY_READ),
        ),
        (
            Method::GET,
            "/jitflow/v1/activations/{id}/events",
            get(events::activation_events),
            None,
            Some(auth::HISTORY_READ),
        ),
        (
            Method::GET,
            "/jitflow/v1/events",
            get(events::export),
            None,
            Some(auth::HISTORY_READ),
        ),
        (
            Method::POST,
            "/access-requests/v1",
            signal(post(access_requests::submit)),
            Some(&[202, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_SUBMIT),
        ),
        (
            Method::POST,
            "/access-requests/v1/cancel",
            signal(post(access_requests::cancel)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::REQUEST_CANCEL),
        ),
        (
            Method::POST,
            "/access-requests/v1/bulk-cancel",
            signal(post(access_requests::bulk_cancel)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::REQUEST_BULK_CANCEL),
        ),
        (
            Method::POST,
            "/access-requests/v1/close",
            post(access_requests::close)
                .layer(DefaultBodyLimit::max(access_requests::MAX_CLOSE_BODY)),
            Some(&[202, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_CLOSE),
        ),
        (
            Method::POST,
            "/access-requests/v1/accounts-selection",
            signal(post(access_requests::accounts_selection)),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::ACCOUNTS_SELECTION),
        ),
        (
            Method::GET,
            "/access-request-status/v1",
            get(access_requests::status),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_STATUS),
        ),
        (
            Method::GET,
            "/access-request-administration/v1",
            get(access_requests::administration),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_ADMINISTRATION_READ),
        ),
        (
            Method::GET,
            "/revocable-objects/v1",
            get(access_requests::revocable_objects),
            Some(&[200, 400, 401, 403, 404, 429, 500]),
            Some(auth::REVOCABLE_OBJECTS_READ),
        ),
        (
            Method::GET,
            "/access-request-config/v1",
            get(request_config::get_v1),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_CONFIG_READ),
        ),
        (
            Method::PUT,
            "/access-request-config/v1",
            signal(put(request_config::put_v1)),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_CONFIG_MANAGE),
        ),
        (
            Method::GET,
            "/access-request-config/v2",
            get(request_config::get_v2),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_CONFIG_READ),
        ),
        (
            Method::PUT,
            "/access-request-config/v2",
            signal(put(request_config::put_v2)),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::REQUEST_CONFIG_MANAGE),
        ),
        (
            Method::POST,
            "/access-request-approvals/v1/bulk-approve",
            signal(post(approvals::bulk_approve)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::APPROVAL_BULK_APPROVE),
        ),
        (
            Method::GET,
            "/access-request-approvals/v1/pending",
            get(approvals::pending),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::APPROVALS_READ),
        ),
        (
            Method::GET,
            "/access-request-approvals/v1/completed",
            get(approvals::completed),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::APPROVALS_READ),
        ),
        (
            Method::GET,
            "/access-request-approvals/v1/approval-summary",
            get(approvals::summary),
            Some(&[200, 400, 401, 403, 429, 500]),
            Some(auth::APPROVALS_READ),
        ),
        (
            Method::GET,
            "/access-request-approvals/v1/{accessRequestId}/approvers",
            get(approvals::approvers),
            Some(&[200, 400, 401, 403, 404, 429, 500]),
            Some(auth::REQUEST_ADMINISTRATION_READ),
        ),
        (
            Method::POST,
            "/access-request-approvals/v1/{approvalId}/approve",
            signal(post(approvals::approve)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::APPROVALS_MANAGE),
        ),
        (
            Method::POST,
            "/access-request-approvals/v1/{approvalId}/reject",
            signal(post(approvals::reject)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::APPROVALS_MANAGE),
        ),
        (
            Method::POST,
            "/access-request-approvals/v1/{approvalId}/forward",
            signal(post(approvals::forward)),
            Some(&[202, 400, 401, 403, 404, 429, 500]),
            Some(auth::APPROVALS_MANAGE),
        ),
        (Method::GET, "/health", get(ops::health), None, None),
        (Method::GET, "/metrics", get(ops::metrics), None, None),
        (
            Method::GET,
            "/openapi.json",
            get(openapi::document),
            None,
            None,
        ),
    ]
}

/// Every vendor operation served, as (method, v1 path, the statuses its file declares): what
/// the conformance test compares with the vendor's files.
pub fn operations() -> Vec<(Method, &'static str, &'static [u16])> {
    route_table()
        .into_iter()
        .filter_map(|(method, path, _, declared, _)| declared.map(|d| (method, path, d)))
        .collect()
}

/// Every operation served, as (method, v1 path, the [`auth::Rule`] its handler enforces; `None`
/// for `/health`, `/metrics` and `/openapi.json`, which need no token): what the OpenAPI
/// document's `x-sailpoint-userLevels` say and the refusal test checks.
pub fn rules() -> Vec<(Method, &'static str, Option<auth::Rule>)> {
    route_table()
        .into_iter()
        .map(|(method, path, _, _, rule)| (method, path, rule))
        .collect()
}

/// Every served (method, path), aliases included: what the OpenAPI test compares.
pub fn routes() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (method, path, _, _, _) in route_table() {
        out.push((method.clone(), path.to_owned()));
        if let Some(alias) = v2026_alias(path) {
            out.push((method, alias));
        }
    }
    out
}

/// The v2026 form of a vendor v1 path: `/jit-activations/v1/activate` is
/// `/v2026/jit-activations/activate`. `None` for the shim's own paths.
pub fn v2026_alias(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let (api, tail) = rest.split_once("/v1")?;
    if api == "jitflow" || !(tail.is_empty() || tail.starts_with('/')) {
        return None;
    }
    Some(format!("/v2026/{api}{tail}"))
}

/// Answers a request no route matches.
async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {}", request.uri().path()))
}

/// Answers a known path with a method it does not serve.
async fn wrong_method(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Bounds every request by `limit` ([`Limits::request_timeout`]).
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took too long; a signal may still commit: retry it with the same Idempotency-Key",
        )
        .into_response(),
    }
}

/// A panic in a handler (a bug) answered as a 500 `ErrorResponseDto`.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}

/// The router over `state`: every route, both path forms, error fallbacks, the
/// [`REQUEST_TIMEOUT`], panic catching and request tracing.
pub fn app(state: AppState) -> Router {
    app_with(state, REQUEST_TIMEOUT)
}

/// [`app`] with another bound on one request than [`REQUEST_TIMEOUT`].
pub fn app_with(state: AppState, request_timeout: Duration) -> Router {
    let mut router = Router::new();
    for (method, path, handler, declared, _) in route_table() {
        let handler = match declared {
            Some(declared) => handler.layer(axum::middleware::from_fn_with_state(
                deviations::Statuses {
                    method,
                    path,
                    declared,
                },
                deviations::conform,
            )),
            None => handler,
        };
        if let Some(alias) = v2026_alias(path) {
            router = router.route(&alias, handler.clone());
        }
        router = router.route(path, handler);
    }
    router
        .merge(console::router())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A server started by [`start`].
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops taking connections, lets requests in flight finish, and returns. The engine is the
    /// caller's to shut down.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Serves until `signal` completes, then stops as [`Running::stop`] does.
    pub async fn until(self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        signal.await;
        self.stop().await
    }
}

/// Bounds on the server's connections (see the crate's limits table).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once. Further ones wait in the listen backlog, so a flood of
    /// clients costs queued sockets, not tasks and buffers.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, from the connection's start or the
    /// end of its previous response; then the connection is closed. Without it, clients that
    /// send headers slowly would hold connections forever.
    pub header_read_timeout: Duration,
    /// The longest one request may take, from its headers to its answer (reading its body
    /// included); then it is answered 503. [`REQUEST_TIMEOUT`] by default.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// Binds `listen` and serves [`app`] over `state` on the current runtime, with the default
/// [`Limits`].
pub async fn start(listen: SocketAddr, state: AppState) -> std::io::Result<Running> {
    start_with(listen, state, Limits::default()).await
}

/// [`start`] with explicit [`Limits`].
///
/// # Panics
/// If `limits.max_connections` is 0 (a server that can serve nobody is a configuration bug).
pub async fn start_with(
    listen: SocketAddr,
    state: AppState,
    limits: Limits,
) -> std::io::Result<Running> {
    assert!(
        limits.max_connections > 0,
        "max_connections must be positive"
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service =
        hyper_util::service::TowerToHyperService::new(app_with(state, limits.request_timeout));
    let task = tokio::spawn(serve(listener, service, limits, stopped));
    Ok(Running { addr, stop, task })
}

/// The accept loop: one task per connection, at most `limits.max_connections` of them. On
/// `stopped` it stops accepting, lets requests in flight finish and closes idle connections.
async fn serve(
    listener: tokio::net::TcpListener,
    service: hyper_util::service::TowerToHyperService<Router>,
    limits: Limits,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => break,
            permit = Arc::clone(&permits).acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
        };
        let stream = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small JSON answers: send them at once rather than wait for more to coalesce.
        let _ = stream.set_nodelay(true);
        let connection = graceful
            .watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

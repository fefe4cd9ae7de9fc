//! The statuses of the vendor's operations, and the few the shim answers although the
//! operation does not declare them.
//!
//! A client generated from the vendor's OpenAPI files can type only the statuses an operation
//! declares. So every vendor route carries its operation's declared statuses (the route table in
//! `lib.rs`), and [`conform`] answers an error whose natural status the operation does not
//! declare with 400 instead, keeping the natural status in the `detailCode` (`400.1.404 Not
//! Found`, `400.1.409 Conflict`, `400.1.413 Payload Too Large`, `400.1.415 Unsupported Media
//! Type`) and the message as it was. The statuses that HTTP itself calls for are kept and
//! listed in [`DEVIATIONS`] with the reason; README.md shows the same table (a test compares
//! them).

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

/// Which operations a deviation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every vendor operation.
    Every,
    /// One operation: its method and v1 path, as in the vendor's file.
    Operation(&'static str, &'static str),
}

/// A status answered although the operation does not declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deviation {
    /// The status.
    pub status: u16,
    /// Where.
    pub scope: Scope,
    /// When it is answered.
    pub when: &'static str,
    /// Why no declared status fits.
    pub why: &'static str,
}

/// Every undeclared status the vendor routes may answer.
pub const DEVIATIONS: &[Deviation] = &[
    Deviation {
        status: 503,
        scope: Scope::Every,
        when: "the engine cannot write now (a failed commit: it heals by itself, see \"When a write fails\"), has stopped (the server is shutting down), the request took longer than 30 s, or, with several shims on one database, another shim serves the tenant's partition (the `jitflow-owner` and `jitflow-owner-address` headers name it) or the partition is moving between shims",
        why: "the request may succeed if retried later, and a timed-out signal may still commit; \
              of the declared statuses 500 says the server is faulty and 429 that the client sends too much",
    },
    Deviation {
        status: 412,
        scope: Scope::Operation("PATCH", "/jit-activation-config/v1/{configType}"),
        when: "`If-Match` (a jitflow extension) names a policy version that is no longer the current one",
        why: "RFC 9110 (13.1.1) requires 412 when an `If-Match` condition is false",
    },
];

/// Whether `status` is a listed deviation of the operation `method` `path` (v1 form).
pub fn kept(method: &Method, path: &str, status: u16) -> bool {
    DEVIATIONS.iter().any(|d| {
        d.status == status
            && match d.scope {
                Scope::Every => true,
                Scope::Operation(m, p) => m == method.as_str() && p == path,
            }
    })
}

/// A vendor operation's statuses: what its file declares, and where it is (for [`kept`]).
#[derive(Debug, Clone)]
pub struct Statuses {
    /// The method.
    pub method: Method,
    /// The v1 path.
    pub path: &'static str,
    /// The statuses the operation declares.
    pub declared: &'static [u16],
}

/// Middleware of a vendor route: an error whose status the operation neither declares nor
/// keeps as a deviation is answered 400, with the natural status in its `detailCode`.
pub async fn conform(State(op): State<Statuses>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if op.declared.contains(&status) || kept(&op.method, op.path, status) {
        return response;
    }
    match ApiError::rendered(&response) {
        Some((error, tracking_id)) => error.as_bad_request().response(tracking_id),
        None => response,
    }
}

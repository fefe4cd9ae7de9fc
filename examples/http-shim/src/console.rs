//! The operators' web console, served at `/console/`: plain HTML, JavaScript and CSS embedded
//! in the binary (`include_str!`), no build step and nothing loaded from elsewhere.
//!
//! The console is a client of the REST endpoints like any other: it sends the bearer token the
//! user pastes in (kept in the tab's `sessionStorage` only), so every scope and tenant rule of
//! the API applies. The pages: connections (the contract's filter grammar, state badges,
//! paging), one connection (its activation timeline as SVG, its events followed as they commit
//! by polling the event stream, the signals), the activation history, pending approvals
//! (approve, reject) and operations (the `/metrics` figures and the connections being revoked).
//!
//! The files are static and public; serving them needs no token. Each answer carries a
//! `Content-Security-Policy` that allows only this origin, so the console cannot load or send
//! anything elsewhere.

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

/// The console's files: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
];

/// Only this origin: the console's own files and the API it calls.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes: `/console` (redirected), `/console/` and `/console/{file}`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{file}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-cache"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::not_found(format!(
            "no console file {}",
            name.chars().take(64).collect::<String>()
        ))
        .into_response(),
    }
}

//! `GET /health` and `GET /metrics` (Prometheus text format), for operators. Neither needs a
//! token: they say nothing about any tenant's data, only counts. Bind the server to a private
//! address (the default is 127.0.0.1) if even counts are sensitive.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorResponseDto};

/// Answer of `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct Health {
    /// `UP`.
    pub status: String,
}

/// Whether the engine answers reads.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses(
        (status = 200, description = "The engine reads its store.", body = Health),
        (status = 503, description = "The store cannot be read, or the engine cannot write (degraded: the message names the cause) or stopped.", body = ErrorResponseDto),
    )
)]
pub async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Every engine this node serves (one on a redb file; on a shared database, a node serving
    // no partition yet is up: it answers with the owners' names).
    for (partition, engine) in state.partitions.engines() {
        let within = if state.partitions.is_shared() {
            format!("partition {}: ", partition.0)
        } else {
            String::new()
        };
        engine
            .last_sequence()
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{within}{e}")))?;
        if let jitflow::Health::Degraded { cause, for_, .. } = engine.health() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{within}degraded: the engine cannot write ({cause}) for {} s; it reopens \
                     its store by itself",
                    for_.as_secs()
                ),
            ));
        }
    }
    Ok(axum::Json(Health {
        status: "UP".to_owned(),
    })
    .into_response())
}

/// The engine's series in the Prometheus text format (`Engine::scrape`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain"),
        (status = 500, description = "The store cannot be read.", body = ErrorResponseDto),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let engines = state.partitions.engines();
    let shared = state.partitions.is_shared();
    // The scrapes read the store: off the async workers.
    let text = tokio::task::spawn_blocking(move || {
        let mut merged = Families::default();
        for (partition, engine) in engines {
            let text = engine.scrape()?;
            let label = shared.then(|| format!("partition=\"{}\"", partition.0));
            merged.add(&text, label.as_deref());
        }
        Ok::<_, jitflow::Error>(merged.render())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, jitflow::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

/// Several engines' scrapes as one exposition: each family's `# HELP` and `# TYPE` once (the
/// format allows no repeat), then its samples of every engine, each with the engine's label.
#[derive(Debug, Default)]
struct Families {
    /// Family name, its comment lines, its samples; in first-seen order.
    families: Vec<(String, Vec<String>, Vec<String>)>,
}

impl Families {
    fn add(&mut self, text: &str, label: Option<&str>) {
        let mut current: Option<usize> = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let at = match self.families.iter().position(|f| f.0 == name) {
                    Some(at) => at,
                    None => {
                        self.families.push((name, Vec::new(), Vec::new()));
                        self.families.len() - 1
                    }
                };
                if !self.families[at].1.iter().any(|l| l == line) {
                    self.families[at].1.push(line.to_owned());
                }
                current = Some(at);
                continue;
            }
            let sample = match label {
                None => line.to_owned(),
                Some(label) => labelled(line, label),
            };
            match current {
                Some(at) => self.families[at].2.push(sample),
                None => self
                    .families
                    .push((String::new(), Vec::new(), vec![sample])),
            }
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (_, comments, samples) in &self.families {
            for line in comments.iter().chain(samples) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// A sample line with `label` first among its labels.
fn labelled(line: &str, label: &str) -> String {
    match (line.find('{'), line.find(' ')) {
        (Some(brace), Some(space)) if brace < space => {
            let rest = &line[brace + 1..];
            let sep = if rest.starts_with('}') { "" } else { "," };
            format!("{}{{{label}{sep}{rest}", &line[..brace])
        }
        (_, Some(space)) => format!("{}{{{label}}}{}", &line[..space], &line[space..]),
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_merge_into_one_family_each() {
        let a = "# HELP x_total Xs.\n# TYPE x_total counter\nx_total 3\n# TYPE y gauge\ny{k=\"v\"} 1\ny{} 2\n";
        let mut f = Families::default();
        f.add(a, Some("partition=\"0\""));
        f.add(a, Some("partition=\"5\""));
        assert_eq!(
            f.render(),
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{partition=\"0\"} 3\n\
             x_total{partition=\"5\"} 3\n# TYPE y gauge\ny{partition=\"0\",k=\"v\"} 1\n\
             y{partition=\"0\"} 2\ny{partition=\"5\",k=\"v\"} 1\ny{partition=\"5\"} 2\n"
        );
        let mut one = Families::default();
        one.add(a, None);
        assert_eq!(one.render(), a);
    }
}

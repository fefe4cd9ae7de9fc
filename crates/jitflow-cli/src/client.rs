//! The shim's REST endpoints over plain HTTP (reqwest), with the bearer token, and the
//! contract's `ErrorResponseDto` turned into [`Error::Api`].

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::Error;

/// How long one request may take: the shim answers 503 after its own 30 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
/// The largest answer read (a page of 250 connections or 10,000 export lines fits).
pub const MAX_ANSWER: usize = 64 << 20;

/// A client of one shim.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// An answer: its body and headers.
pub struct Answer {
    /// The body, as text.
    pub body: String,
    /// The headers.
    pub headers: HeaderMap,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_str(&self.body)
            .map_err(|e| Error::Protocol(format!("the answer is not JSON: {e}")))
    }

    /// A header holding a whole number (`X-Next-After`, `X-Total-Count`).
    pub fn number(&self, name: &str) -> Result<u64, Error> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Protocol(format!("the answer has no number in `{name}`")))
    }
}

impl Client {
    /// A client of the shim at `base` with `token`; refused without a token.
    pub fn new(base: &str, token: Option<&str>) -> Result<Client, Error> {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .ok_or(Error::NoToken)?
            .trim()
            .to_owned();
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "--url must start with http:// or https://, not `{base}`"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(Client { http, base, token })
    }

    /// `GET path?query`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, Error> {
        let request = self.http.get(format!("{}{path}", self.base)).query(query);
        self.send(request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, Error> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Error> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::Http(format!("cannot reach {}: {e}", self.base)))?;
        let status = response.status();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER as u64)
        {
            return Err(Error::Protocol(format!(
                "the answer is larger than {MAX_ANSWER} bytes"
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Http(format!("reading the answer: {e}")))?;
        if bytes.len() > MAX_ANSWER {
            return Err(Error::Protocol(format!(
                "the answer is larger than {MAX_ANSWER} bytes"
            )));
        }
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            let text = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["messages"][0]["text"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(512).collect());
            return Err(Error::Api {
                status: status.as_u16(),
                text,
            });
        }
        Ok(Answer { body, headers })
    }
}

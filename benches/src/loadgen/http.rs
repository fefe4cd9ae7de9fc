//! The workload against the HTTP shim.
//!
//! Paths are the contract's v1 forms (`/jit-activations/v1/activate`, ...), with the header
//! `X-SailPoint-Experimental: true`; connections are registered through the shim's extension
//! endpoint `POST /jitflow/v1/connections`, [`REGISTER_BATCH`] per call. The expiry phase lists
//! `GET /entitlement-connections/v1?filters=state.value eq "EXPIRED"` (then `"AVAILABLE"` for the
//! deactivated half), [`LIST_PAGE`] per page, paging with `searchAfter` on `sorters=id`, every
//! [`POLL`] from the earliest possible due time on. A shim without that endpoint (404) ends the
//! run with the phases measured and the reason in [`Report::error`]; nothing is made up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jitflow_core::id::ConnectionId;
use jitflow_core::time::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::report::round3;
use super::{
    Driver as AnyDriver, Error, Lag, Options, Outcomes, Ran, Report, Signal, SignalError,
    run_phases,
};
use crate::spec;

/// Connections per registration call (the extension endpoint's bound).
pub const REGISTER_BATCH: usize = 1000;
/// Registration calls in flight.
pub const REGISTER_IN_FLIGHT: usize = 4;
/// Items per list page (the contract's `limit` maximum).
pub const LIST_PAGE: usize = 250;
/// The most pages one listing reads (a bound on a misbehaving server's paging).
pub const MAX_LIST_PAGES: usize = 40_000;
/// How often the expiry phase lists the connections.
pub const POLL: Duration = Duration::from_secs(1);
/// The filter of the expiry phase's listing.
const EXPIRED: &str = "state.value eq \"EXPIRED\"";
/// The filter of the deactivated half's listing.
const AVAILABLE: &str = "state.value eq \"AVAILABLE\"";
/// One request's time limit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of an error body kept in a message.
const ERROR_BODY: usize = 300;

/// Sends the signals over HTTP.
pub(crate) struct Driver {
    client: reqwest::Client,
    base: String,
    token: String,
    ids: Arc<Vec<ConnectionId>>,
}

impl Driver {
    pub(crate) async fn signal(&self, index: usize, signal: Signal) -> Result<(), SignalError> {
        let id = self.ids[index].to_string();
        let (path, body) = match signal {
            Signal::Activate(p) => (
                "activate",
                json!({"connectionId": id, "activationPeriodMins": p.get()}),
            ),
            Signal::Extend(e) => (
                "extend",
                json!({"connectionId": id, "activationPeriodExtensionMins": e.get()}),
            ),
            Signal::Deactivate => ("deactivate", json!({"connectionId": id})),
        };
        let url = format!("{}/jit-activations/v1/{path}", self.base);
        let response = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .header("X-SailPoint-Experimental", "true")
            .json(&body)
            .send()
            .await
            .map_err(|e| SignalError::Failed(format!("POST {url}: {}", causes(&e))))?;
        let status = response.status();
        // Read the whole body, so the latency covers the answer and the connection is reused.
        let text = response
            .text()
            .await
            .map_err(|e| SignalError::Failed(format!("POST {url}: reading the body: {e}")))?;
        let message = || format!("POST {url}: HTTP {status}: {}", cut(&text));
        match status {
            StatusCode::ACCEPTED => Ok(()),
            StatusCode::TOO_MANY_REQUESTS => Err(SignalError::NotReady(message())),
            // Extend before the activation is provisioned is a conflict with its state.
            StatusCode::CONFLICT if matches!(signal, Signal::Extend(_)) => {
                Err(SignalError::NotReady(message()))
            }
            _ => Err(SignalError::Failed(message())),
        }
    }

    /// Registers every connection; the first refusal stops it.
    async fn register(&self) -> Result<(), String> {
        let url = format!("{}/jitflow/v1/connections", self.base);
        let batches: Vec<&[ConnectionId]> = self.ids.chunks(REGISTER_BATCH).collect();
        for wave in batches.chunks(REGISTER_IN_FLIGHT) {
            let calls: Vec<_> = wave
                .iter()
                .map(|batch| {
                    let specs: Vec<Value> = batch.iter().map(|id| spec_json(*id)).collect();
                    let request = self
                        .client
                        .post(&url)
                        .bearer_auth(&self.token)
                        .json(&json!({ "connections": specs }));
                    let (url, n) = (url.clone(), batch.len());
                    tokio::spawn(async move {
                        let response = request
                            .send()
                            .await
                            .map_err(|e| format!("POST {url}: {}", causes(&e)))?;
                        let status = response.status();
                        let text = response.text().await.map_err(|e| e.to_string())?;
                        if status != StatusCode::OK {
                            return Err(format!("POST {url}: HTTP {status}: {}", cut(&text)));
                        }
                        check_registered(&text, n)
                    })
                })
                .collect();
            for call in calls {
                call.await.map_err(|e| e.to_string())??;
            }
        }
        Ok(())
    }

    /// Lists the connections matching `filter`, page by page, calling `each` with every hit.
    async fn list(&self, filter: &str, mut each: impl FnMut(Hit)) -> Result<(), String> {
        let url = format!("{}/entitlement-connections/v1", self.base);
        let mut after: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let limit = LIST_PAGE.to_string();
            let mut query = vec![("filters", filter), ("limit", &limit), ("sorters", "id")];
            if let Some(after) = &after {
                query.push(("searchAfter", after));
            }
            let response = self
                .client
                .get(&url)
                .bearer_auth(&self.token)
                .query(&query)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {}", causes(&e)))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| e.to_string())?;
            if status == StatusCode::NOT_FOUND {
                return Err(format!(
                    "GET {url} answered 404: this shim does not serve the connection list, so the \
                     expiry phase cannot be observed over HTTP (the phases above were measured)"
                ));
            }
            if status != StatusCode::OK {
                return Err(format!("GET {url}: HTTP {status}: {}", cut(&text)));
            }
            let page: Vec<Value> = serde_json::from_str(&text)
                .map_err(|e| format!("GET {url}: not a JSON array of connections: {e}"))?;
            let full = page.len() >= LIST_PAGE;
            for value in page {
                let hit = Hit::read(&value).map_err(|e| format!("GET {url}: {e}"))?;
                after = Some(hit.raw_id.clone());
                each(hit);
            }
            if !full {
                return Ok(());
            }
        }
        Err(format!("GET {url}: more than {MAX_LIST_PAGES} pages"))
    }
}

/// What the expiry phase reads from one search hit.
struct Hit {
    raw_id: String,
    id: ConnectionId,
    expiration: Option<Timestamp>,
    deactivation: Option<Timestamp>,
}

impl Hit {
    fn read(value: &Value) -> Result<Hit, String> {
        let raw_id = value["id"]
            .as_str()
            .ok_or("a hit without an id")?
            .to_owned();
        let id = ConnectionId::parse(&raw_id).map_err(|e| format!("hit id `{raw_id}`: {e}"))?;
        let time = |field: &str| -> Result<Option<Timestamp>, String> {
            value["jit"][field]
                .as_str()
                .map(|t| Timestamp::parse_rfc3339(t).map_err(|e| format!("jit.{field}: {e}")))
                .transpose()
        };
        Ok(Hit {
            expiration: time("expiration")?,
            deactivation: time("deactivation")?,
            raw_id,
            id,
        })
    }
}

/// Registers W connections on the shim and runs the workload.
pub(crate) async fn run(options: &Options, base: &str) -> Result<Report, Error> {
    let setup = Instant::now();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| Error::Setup(e.to_string()))?;
    let ids: Vec<ConnectionId> = (0..options.connections)
        .map(|_| ConnectionId::from_u128(uuid::Uuid::new_v4().as_u128()))
        .collect();
    let driver = Driver {
        client,
        base: base.to_owned(),
        token: options.token.clone().unwrap_or_default(),
        ids: Arc::new(ids),
    };
    driver.register().await.map_err(Error::Setup)?;
    let basis = "jit.deactivation - jit.expiration of each EXPIRED connection";
    let mut report = Report::planned(options, "server", basis, setup.elapsed());
    if let Err(e) = measure(&mut report, options, driver).await {
        report.error = Some(e);
    }
    Ok(report)
}

async fn measure(report: &mut Report, options: &Options, driver: Driver) -> Result<(), String> {
    let ids = Arc::clone(&driver.ids);
    let index: HashMap<ConnectionId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let driver = Arc::new(AnyDriver::Http(driver));
    let AnyDriver::Http(http) = &*driver else {
        unreachable!("built above")
    };
    let no_settle = None::<std::future::Ready<Result<(), String>>>;
    let Ran {
        started,
        first_activate,
        last_extend,
        deactivated,
        expiring,
    } = run_phases(report, &driver, options, no_settle).await?;
    let w = options.connections;

    // One listing before the wait: a shim without the endpoint fails now, not after P + E, and
    // an expiry before its due time would show up here too.
    let mut expired: HashMap<usize, Hit> = HashMap::new();
    http.list(EXPIRED, |hit| note(&index, &mut expired, hit))
        .await?;
    // Every expiry is due P + E after its grant, which came after the first activate was sent
    // and before the last extend was answered.
    let span = options.period.to_duration() + options.extend.to_duration();
    if let Ok(wait) = (first_activate + span).duration_since(SystemTime::now()) {
        tracing::info!(?wait, "waiting until the first expiry is due");
        tokio::time::sleep(wait).await;
    }
    let deadline = last_extend + span + options.grace;
    loop {
        http.list(EXPIRED, |hit| note(&index, &mut expired, hit))
            .await?;
        if expired.len() >= expiring.len() || SystemTime::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let deadline = SystemTime::now() + options.grace;
    let mut available: HashMap<usize, Hit> = HashMap::new();
    loop {
        // A deactivated connection is AVAILABLE with a deactivation time; one never activated
        // has none.
        http.list(AVAILABLE, |hit| {
            if hit.deactivation.is_some() {
                note(&index, &mut available, hit);
            }
        })
        .await?;
        if available.len() >= deactivated.len() || SystemTime::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    report.end_to_end_s = round3(started.elapsed().as_secs_f64());
    report.outcomes = Outcomes {
        expired: expired.len() as u64,
        deactivated: available.len() as u64,
        other: w.saturating_sub(expired.len() + available.len()) as u64,
    };
    let mut lags = Vec::with_capacity(expired.len());
    for hit in expired.values() {
        match (hit.expiration, hit.deactivation) {
            (Some(due), Some(at)) if at >= due => lags.push(at.since(due)),
            _ => report.expired_early += 1,
        }
    }
    report.timer_lag_ms = (!lags.is_empty()).then(|| Lag::of(lags));
    Ok(())
}

/// Keeps `hit` if it is one of this run's connections.
fn note(index: &HashMap<ConnectionId, usize>, into: &mut HashMap<usize, Hit>, hit: Hit) {
    if let Some(&i) = index.get(&hit.id) {
        into.insert(i, hit);
    }
}

/// The extension endpoint's ConnectionSpec JSON of the benches' [`spec`].
fn spec_json(id: ConnectionId) -> Value {
    let s = spec(id);
    json!({
        "id": s.id.to_string(),
        "identityId": s.identity.as_str(),
        "identityName": s.identity_name,
        "accountId": s.account.as_str(),
        "accountName": s.account_name,
        "entitlementId": s.entitlement.as_str(),
        "entitlementName": s.entitlement_name,
        "attributeName": s.attribute_name,
        "attributeValue": s.attribute_value,
        "privilegeLevel": s.privilege_level,
        "sourceId": s.source.as_str(),
        "sourceName": s.source_name,
        "type": s.kind.as_str(),
        "standalone": s.standalone,
    })
}

/// Checks a registration answer: `n` results, each status 200.
fn check_registered(text: &str, n: usize) -> Result<(), String> {
    let answer: Value =
        serde_json::from_str(text).map_err(|e| format!("registration answer: {e}"))?;
    let results = answer["results"]
        .as_array()
        .ok_or("registration answer without `results`")?;
    if results.len() != n {
        return Err(format!(
            "{} registration results for {n} connections",
            results.len()
        ));
    }
    match results.iter().find(|r| r["status"] != 200) {
        Some(refused) => Err(format!("registration refused: {refused}")),
        None => Ok(()),
    }
}

/// An error with its sources (reqwest's own text leaves out the cause, e.g. "connection
/// refused").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn cut(text: &str) -> &str {
    let mut end = text.len().min(ERROR_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

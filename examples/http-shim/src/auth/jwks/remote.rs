//! A key set fetched from a URL (`--jwks-url`), cached, and fetched again when stale or when a
//! token names a `kid` it lacks, at most once per cooldown.
//!
//! The fetch is plain HTTP: the shim is built without a TLS stack (every crate of it builds from
//! crates.io alone, and the pure-Rust TLS stacks need a C or cmake toolchain for their crypto).
//! Behind TLS, a local sidecar (a reverse proxy on 127.0.0.1 that fetches the provider's
//! `jwks_uri` over HTTPS) serves the set, or a job saves it to a file for `--jwks-file`. Redirects
//! are not followed and proxy variables are ignored, so the keys come from the URL configured and
//! nowhere else.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url};

use super::{Error, Jwks, MAX_DOCUMENT_BYTES};

/// The longest timeout allowed for one fetch.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest cooldown allowed between two fetches after the first.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);

/// When a remote key set is fetched again, and how long a fetch may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A set older than this is fetched again on the next token (and kept if that fails).
    pub max_age: Duration,
    /// After the first fetch that follows the start, at most one fetch starts per cooldown,
    /// whatever the tokens name ([`MIN_COOLDOWN`]..=`max_age`). The first is free so that a
    /// rotation just after the start is picked up at once.
    pub cooldown: Duration,
    /// The bound on one fetch, from connecting to the body's last byte (up to [`MAX_TIMEOUT`]).
    pub timeout: Duration,
}

impl Default for Settings {
    /// Ten minutes of age, a 30 s cooldown and a 5 s timeout.
    fn default() -> Settings {
        Settings {
            max_age: Duration::from_secs(600),
            cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

impl Settings {
    /// Checks the bounds of each setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(format!(
                "the JWKS timeout must be more than 0 and at most {MAX_TIMEOUT:?}"
            ));
        }
        if self.cooldown < MIN_COOLDOWN || self.cooldown > self.max_age {
            return Err(format!(
                "the JWKS cooldown must be at least {MIN_COOLDOWN:?} and at most the maximum age ({:?})",
                self.max_age
            ));
        }
        Ok(())
    }

    /// Whether to fetch again: not within the cooldown of the last fetch after the first (none
    /// yet is `None`), and the set lacks the token's kid or is older than the maximum age.
    fn due(&self, fetched: Instant, last: Option<Instant>, now: Instant, unknown: bool) -> bool {
        if last.is_some_and(|t| now.saturating_duration_since(t) < self.cooldown) {
            return false;
        }
        unknown || now.saturating_duration_since(fetched) >= self.max_age
    }
}

/// The set in use and when it was fetched.
#[derive(Clone)]
struct Snapshot {
    jwks: Arc<Jwks>,
    fetched: Instant,
}

/// A key set fetched over plain HTTP and cached.
pub struct Remote {
    url: Url,
    client: reqwest::Client,
    settings: Settings,
    current: RwLock<Snapshot>,
    /// Held while fetching, so that one fetch runs at a time; holds when the last fetch after
    /// the first started.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url.as_str())
            .field("settings", &self.settings)
            .field("jwks", &self.snapshot().jwks)
            .finish()
    }
}

impl Remote {
    /// Fetches the set at `url` (an `http` URL) once, and keeps it: an error refuses the URL.
    pub async fn fetch(url: &str, settings: Settings) -> Result<Remote, Error> {
        let fail = |reason: String| Error::Fetch {
            url: url.to_owned(),
            reason,
        };
        settings.validate().map_err(fail)?;
        let url = Url::parse(url).map_err(|e| fail(e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(fail(
                    "this build has no TLS: serve the set over plain http from a local sidecar, \
                     or save it to a file for --jwks-file"
                        .to_owned(),
                ));
            }
            other => return Err(fail(format!("the scheme {other:?} is not http"))),
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| fail(chain(&e)))?;
        let mut remote = Remote {
            url,
            client,
            settings,
            current: RwLock::new(Snapshot {
                jwks: Arc::new(Jwks::default()),
                fetched: Instant::now(),
            }),
            refresh: tokio::sync::Mutex::new(None),
        };
        let jwks = remote.get().await?;
        remote.current = RwLock::new(Snapshot {
            jwks: Arc::new(jwks),
            fetched: Instant::now(),
        });
        Ok(remote)
    }

    /// The set to verify a token naming `kid` with. The set is fetched again first when
    /// [`Settings`] say it is due: a token whose kid the set lacks waits for that fetch (the
    /// provider may have rotated its keys); a token of a stale set waits only if no other
    /// request is fetching. A failed fetch is logged and the cached set stays in use.
    pub async fn keys(&self, kid: Option<&str>) -> Arc<Jwks> {
        let current = self.snapshot();
        let unknown = kid.is_some_and(|k| !current.jwks.contains(k));
        let stale = current.fetched.elapsed() >= self.settings.max_age;
        if !unknown && !stale {
            return current.jwks;
        }
        let mut last = if unknown {
            self.refresh.lock().await
        } else {
            match self.refresh.try_lock() {
                Ok(guard) => guard,
                Err(_) => return current.jwks,
            }
        };
        // Another request may have fetched while this one waited for the lock.
        let current = self.snapshot();
        let now = Instant::now();
        let unknown = kid.is_some_and(|k| !current.jwks.contains(k));
        if !self.settings.due(current.fetched, *last, now, unknown) {
            return current.jwks;
        }
        *last = Some(now);
        match self.get().await {
            Ok(jwks) => {
                tracing::info!(url = %self.url, keys = jwks.len(), "JWKS fetched again");
                let jwks = Arc::new(jwks);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Snapshot {
                    jwks: Arc::clone(&jwks),
                    fetched: Instant::now(),
                };
                jwks
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch failed; the cached keys stay in use");
                current.jwks
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One GET of the URL: status 200 and at most [`MAX_DOCUMENT_BYTES`] of body, read a chunk
    /// at a time so that a larger body is refused without being held.
    async fn get(&self) -> Result<Jwks, Error> {
        let fail = |reason: String| Error::Fetch {
            url: self.url.to_string(),
            reason,
        };
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                fail(format!("no answer within {:?}", self.settings.timeout))
            } else {
                fail(chain(&e))
            }
        };
        let too_large = || fail(format!("the body is more than {MAX_DOCUMENT_BYTES} bytes"));
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(describe)?;
        if response.status() != StatusCode::OK {
            return Err(fail(format!("status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if (body.len() + chunk.len()) as u64 > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Jwks::from_json(&body)
    }
}

/// An error and its sources, as one line (reqwest's own text leaves out the cause).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_is_due_for_an_unknown_kid_or_a_stale_set_outside_the_cooldown() {
        let settings = Settings {
            max_age: Duration::from_secs(600),
            cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        };
        let fetched = Instant::now();
        let at = |secs| fetched + Duration::from_secs(secs);
        // Fresh and known: never.
        assert!(!settings.due(fetched, None, at(10), false));
        // An unknown kid: at once after start, then once per cooldown.
        assert!(settings.due(fetched, None, at(0), true));
        assert!(!settings.due(fetched, Some(at(5)), at(34), true));
        assert!(settings.due(fetched, Some(at(5)), at(35), true));
        // Stale: from the maximum age on, also once per cooldown.
        assert!(!settings.due(fetched, None, at(599), false));
        assert!(settings.due(fetched, None, at(600), false));
        assert!(!settings.due(fetched, Some(at(590)), at(610), false));
        assert!(settings.due(fetched, Some(at(590)), at(620), false));
    }

    #[test]
    fn settings_are_bounded() {
        assert!(Settings::default().validate().is_ok());
        let with = |f: fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate()
        };
        assert!(with(|s| s.timeout = Duration::ZERO).is_err());
        assert!(with(|s| s.timeout = MAX_TIMEOUT + Duration::from_secs(1)).is_err());
        assert!(with(|s| s.cooldown = Duration::from_millis(999)).is_err());
        assert!(with(|s| s.cooldown = s.max_age + Duration::from_secs(1)).is_err());
        assert!(with(|s| s.cooldown = s.max_age).is_ok());
    }
}

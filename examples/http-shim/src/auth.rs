//! Bearer JWTs: the claims, minting, verifying, the secret, and the per-endpoint rules.
//!
//! Tokens are HS256 with the shim's secret (which `jitflow-shim token` mints with), and, when an
//! identity provider is configured ([`Keys::with_provider`], see [`Provider`]), also RS256 or
//! ES256 with the key of the provider's key set ([`jwks`]) that the header's `kid` names. The
//! header's `alg` only picks between the two: HS256 is always checked against the secret, any
//! other algorithm only against a provider's key pinned to it, and `none` never parses.
//!
//! The shim's own tokens carry `tenant`, `sub` (the caller's identity), `scope` (scope strings),
//! `levels` (`USER`, `POLICY_ADMIN`, `ORG_ADMIN`), `exp` and `iat`. A provider's tokens must
//! carry one of its issuers (`iss`) and audiences (`aud`), and [`claims::Layout`] says where its
//! tenant, identity, scopes and levels are; [`claims`] has the rules that read them (scopes as a
//! space-separated string or a list; unknown levels ignored). The tenant always comes from the
//! token: no URL or body names one. An endpoint's [`Rule`] lists the scopes of which the caller
//! needs one, and the user level it needs; `ORG_ADMIN` holds every level, and `POLICY_ADMIN`
//! holds `USER` (see [`Level::satisfies`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jitflow::Caller;
use jitflow_core::id::{IdentityId, TenantId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub mod claims;
pub mod jwks;

pub use jwks::Jwks;

/// The shortest secret accepted, in bytes: HS256 wants at least as many as its output.
pub const MIN_SECRET_LEN: usize = 32;
/// The longest secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 4096;
/// The longest `Authorization` header read, in bytes.
pub const MAX_TOKEN_LEN: usize = 8192;
/// The most scopes one token may carry.
pub const MAX_SCOPES: usize = 64;
/// The longest scope string, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;
/// The clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// The name of the secret file in the data directory.
pub const SECRET_FILE: &str = "secret";

/// A user level of the contract (`x-sailpoint-userLevels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// An ordinary user.
    User,
    /// A policy administrator.
    PolicyAdmin,
    /// An organisation administrator.
    OrgAdmin,
}

impl Level {
    /// Whether a caller holding `self` may use an endpoint that needs `needed`: a level holds
    /// itself, `ORG_ADMIN` holds every level, and `POLICY_ADMIN` holds `USER`.
    pub fn satisfies(self, needed: Level) -> bool {
        self == needed
            || self == Level::OrgAdmin
            || (self == Level::PolicyAdmin && needed == Level::User)
    }

    /// The level the contract spells `text`, if any.
    pub fn parse(text: &str) -> Option<Level> {
        [Level::User, Level::PolicyAdmin, Level::OrgAdmin]
            .into_iter()
            .find(|l| l.as_str() == text)
    }

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::User => "USER",
            Level::PolicyAdmin => "POLICY_ADMIN",
            Level::OrgAdmin => "ORG_ADMIN",
        }
    }
}

/// The claims of a token the shim mints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The tenant whose data every request touches.
    pub tenant: String,
    /// The caller's identity id.
    pub sub: String,
    /// The scopes granted.
    pub scope: Vec<String>,
    /// The user levels held.
    pub levels: Vec<Level>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
}

/// What an endpoint needs: one of `scopes`, and `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The caller needs at least one of these.
    pub scopes: &'static [&'static str],
    /// The caller needs a level that satisfies this one.
    pub level: Level,
}

/// The scope that lets a caller act on other identities' activations.
pub const MANAGE_ACTIVATIONS: &str = "idn:jit-activation-workflow:manage";

/// `POST .../activate`.
pub const ACTIVATE: Rule = Rule {
    scopes: &["idn:jit-activation-workflow:activate", MANAGE_ACTIVATIONS],
    level: Level::User,
};
/// `POST .../extend`.
pub const EXTEND: Rule = Rule {
    scopes: &["idn:jit-activation-workflow:extend", MANAGE_ACTIVATIONS],
    level: Level::User,
};
/// `POST .../deactivate`.
pub const DEACTIVATE: Rule = Rule {
    scopes: &["idn:jit-activation-workflow:deactivate", MANAGE_ACTIVATIONS],
    level: Level::User,
};
/// `GET .../jit-activation-config/{configType}`.
pub const POLICY_READ: Rule = Rule {
    scopes: &["idn:jit-policy:read", "idn:jit-policy:manage"],
    level: Level::PolicyAdmin,
};
/// `PATCH .../jit-activation-config/{configType}` and the shim's `PUT`.
pub const POLICY_UPDATE: Rule = Rule {
    scopes: &["idn:jit-policy:update", "idn:jit-policy:manage"],
    level: Level::PolicyAdmin,
};
/// The shim's connection import and removal, and the contract's connection `PATCH` and bulk
/// type update.
pub const CONNECTIONS_MANAGE: Rule = Rule {
    scopes: &["idn:entitlement-connections:manage"],
    level: Level::OrgAdmin,
};

/// `GET .../entitlement-connections/v1`: the tenant's connections.
pub const CONNECTIONS_LIST: Rule = Rule {
    scopes: &["idn:entitlement-connections:list"],
    level: Level::OrgAdmin,
};
/// `GET .../entitlement-connections/v1/current-identity`: the caller's own connections.
pub const CONNECTIONS_READ_SELF: Rule = Rule {
    scopes: &["idn:entitlement-connections:read"],
    level: Level::User,
};
/// `GET .../jit-activation-history/v1`, and the shim's event history and audit export.
pub const HISTORY_READ: Rule = Rule {
    scopes: &["idn:jit-activation-history:read"],
    level: Level::OrgAdmin,
};
/// `GET .../jit-activation-history/v1/current-identity`: the caller's own activations.
pub const HISTORY_READ_SELF: Rule = Rule {
    scopes: &["idn:jit-activation-history-self:read"],
    level: Level::User,
};
// Access requests and approvals (issue 7): each rule is its path file's `security` and
// `x-sailpoint-userLevels`, except where noted.

/// `POST /access-requests/v1`.
pub const REQUEST_SUBMIT: Rule = Rule {
    scopes: &[
        "idn:access-request:manage",
        "idn:access-request-self:manage",
    ],
    level: Level::User,
};
/// `POST /access-requests/v1/cancel`.
pub const REQUEST_CANCEL: Rule = Rule {
    scopes: &["idn:access-request:manage"],
    level: Level::OrgAdmin,
};
/// `POST /access-requests/v1/bulk-cancel`.
pub const REQUEST_BULK_CANCEL: Rule = Rule {
    scopes: &["idn:access-request-administration:manage"],
    level: Level::OrgAdmin,
};
/// `POST /access-requests/v1/close`: the contract names no scope, only the level.
pub const REQUEST_CLOSE: Rule = Rule {
    scopes: &[],
    level: Level::OrgAdmin,
};
/// `GET /access-request-status/v1`. The path file lists ORG_ADMIN, and its description says
/// that any user may list its own requests, so a USER is served its own (ORG_ADMIN: anyone's).
pub const REQUEST_STATUS: Rule = Rule {
    scopes: &["idn:access-request-status:read"],
    level: Level::User,
};
/// `GET /access-request-administration/v1` and `GET /access-request-approvals/v1/{id}/approvers`.
pub const REQUEST_ADMINISTRATION_READ: Rule = Rule {
    scopes: &["idn:access-request-administration:read"],
    level: Level::OrgAdmin,
};
/// `POST /access-requests/v1/accounts-selection`: a USER asks about itself, an ORG_ADMIN
/// about anyone.
pub const ACCOUNTS_SELECTION: Rule = Rule {
    scopes: &["idn:access-request:create"],
    level: Level::User,
};
/// `GET /revocable-objects/v1`: a USER asks about itself, an ORG_ADMIN about anyone.
pub const REVOCABLE_OBJECTS_READ: Rule = Rule {
    scopes: &["idn:requestable-objects:read"],
    level: Level::User,
};
/// `GET /access-request-config/v1` and `/v2`: any user level (the path files list ORG_ADMIN,
/// SOURCE_ADMIN, SOURCE_SUBADMIN and USER).
pub const REQUEST_CONFIG_READ: Rule = Rule {
    scopes: &["idn:access-request-config:read"],
    level: Level::User,
};
/// `PUT /access-request-config/v1` and `/v2`.
pub const REQUEST_CONFIG_MANAGE: Rule = Rule {
    scopes: &["idn:access-request-config:manage"],
    level: Level::OrgAdmin,
};
/// `POST /access-request-approvals/v1/bulk-approve`.
pub const APPROVAL_BULK_APPROVE: Rule = Rule {
    scopes: &["idn:access-request:manage"],
    level: Level::OrgAdmin,
};
/// `GET /access-request-approvals/v1/{pending,completed,approval-summary}`. The pending and
/// completed path files list ORG_ADMIN, and their `owner-id` says a caller that is not
/// ORG_ADMIN may list its own, so a USER is served its own (ORG_ADMIN: anyone's).
pub const APPROVALS_READ: Rule = Rule {
    scopes: &["idn:access-request-approvals:read"],
    level: Level::User,
};
/// `POST /access-request-approvals/v1/{approvalId}/{approve,reject,forward}`. The approve path
/// lists ORG_ADMIN and APPROVAL_OWNER: a USER passes here and the engine lets it decide only
/// the approvals it owns.
pub const APPROVALS_MANAGE: Rule = Rule {
    scopes: &["idn:access-request-approvals:manage"],
    level: Level::User,
};

/// Why a secret or token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The secret is shorter than [`MIN_SECRET_LEN`] or longer than [`MAX_SECRET_LEN`] bytes.
    #[error("the secret is {0} bytes; it must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN}")]
    SecretLength(usize),
    /// The secret file could not be read or written.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// A claim is out of bounds (an invalid tenant or identity id, too many scopes).
    #[error("invalid claim: {0}")]
    Claim(String),
    /// Signing failed.
    #[error("signing the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    /// An identity provider's settings are incomplete or out of bounds.
    #[error("identity provider: {0}")]
    Provider(String),
}

/// The longest issuer or audience, in bytes.
pub const MAX_TRUSTED_LEN: usize = 1024;
/// The most issuers, and the most audiences, one provider trusts.
pub const MAX_TRUSTED: usize = 16;

/// An identity provider whose tokens the shim accepts: where its keys come from, the issuers and
/// audiences a token must carry, and where its claims are.
#[derive(Debug)]
pub struct Provider {
    keys: jwks::Source,
    issuers: Vec<String>,
    audiences: Vec<String>,
    layout: claims::Layout,
}

impl Provider {
    /// A provider whose tokens must carry one of `issuers` (`iss`) and one of `audiences`
    /// (`aud`); both are required, 1..=[`MAX_TRUSTED`] of 1..=[`MAX_TRUSTED_LEN`] bytes each, since
    /// one key set often signs for many tenants and applications (Entra ID's common keys sign
    /// every tenant's tokens).
    pub fn new(
        keys: impl Into<jwks::Source>,
        issuers: Vec<String>,
        audiences: Vec<String>,
        layout: claims::Layout,
    ) -> Result<Provider, Error> {
        for (what, names) in [("issuers", &issuers), ("audiences", &audiences)] {
            if !(1..=MAX_TRUSTED).contains(&names.len()) {
                return Err(Error::Provider(format!(
                    "its tokens are checked against 1..={MAX_TRUSTED} {what}, not {} (--issuer, --audience)",
                    names.len()
                )));
            }
            if names
                .iter()
                .any(|n| !(1..=MAX_TRUSTED_LEN).contains(&n.len()))
            {
                return Err(Error::Provider(format!(
                    "{what} are 1..={MAX_TRUSTED_LEN} bytes each"
                )));
            }
        }
        layout.validate().map_err(Error::Provider)?;
        Ok(Provider {
            keys: keys.into(),
            issuers,
            audiences,
            layout,
        })
    }

    /// Verifies a token that is not HS256: its `kid`'s key (fetched again first if the key set
    /// is remote and lacks it), its issuer and audience, then reads its caller.
    async fn verify(&self, token: &str, header: &Header) -> Result<Principal, String> {
        let jwks = self.keys.keys(header.kid.as_deref()).await;
        let (decoding, algorithm) = jwks.key_for(header)?;
        let mut validation = validation(algorithm);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&self.issuers);
        validation.set_audience(&self.audiences);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, decoding, &validation)
            .map_err(|e| e.to_string())?;
        self.layout.read(&data.claims)
    }
}

/// The HS256 secret, which signs and verifies tokens, and an identity provider's keys, which
/// verify only.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Where the secret's tokens keep their claims: always the shim's own names, so that
    /// `jitflow-shim token` mints what any setting accepts.
    layout: claims::Layout,
    provider: Option<Arc<Provider>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys from the secret's bytes ([`MIN_SECRET_LEN`]..=[`MAX_SECRET_LEN`]).
    pub fn from_secret(secret: &[u8]) -> Result<Keys, Error> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) {
            return Err(Error::SecretLength(secret.len()));
        }
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256),
            layout: claims::Layout::default(),
            provider: None,
        })
    }

    /// These keys, also verifying the RS256 and ES256 tokens of `provider` (replacing any
    /// provider given before).
    pub fn with_provider(mut self, provider: Provider) -> Keys {
        self.provider = Some(Arc::new(provider));
        self
    }

    /// Reads the secret file of `data_dir`, or makes one (32 random bytes, hex, mode 0600) if
    /// there is none. Returns the keys and whether the file was created.
    pub fn load_or_create(data_dir: &Path) -> Result<(Keys, bool), Error> {
        let path = data_dir.join(SECRET_FILE);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => return Ok((Keys::from_secret(trim(&bytes))?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| Error::Random(e.to_string()))?;
        let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, text.as_bytes()).map_err(io)?;
        Ok((Keys::from_secret(text.as_bytes())?, true))
    }

    /// Reads a secret file written by hand or by [`Keys::load_or_create`].
    pub fn from_file(path: &Path) -> Result<Keys, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Keys::from_secret(trim(&bytes))
    }

    /// Mints a token for `tenant` and `identity` with these scopes and levels, valid for `ttl`.
    pub fn mint(
        &self,
        tenant: &str,
        identity: &str,
        scopes: &[String],
        levels: &[Level],
        ttl: Duration,
    ) -> Result<String, Error> {
        TenantId::parse(tenant).map_err(|e| Error::Claim(e.to_string()))?;
        IdentityId::parse(identity).map_err(|e| Error::Claim(e.to_string()))?;
        check_scopes(scopes).map_err(Error::Claim)?;
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            tenant: tenant.to_owned(),
            sub: identity.to_owned(),
            scope: scopes.to_vec(),
            levels: levels.to_vec(),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Verifies a token (signature, algorithm, expiry) and reads its caller. An HS256 token is
    /// checked with the secret and read with the shim's own claim names; another algorithm with
    /// the provider's key its `kid` names, which must be pinned to that algorithm, and read with
    /// the provider's [`claims::Layout`].
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let invalid = |e: &dyn std::fmt::Display| {
            ApiError::unauthorized(format!("JWT validation failed: {e}"))
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
        if header.alg == Algorithm::HS256 {
            let data =
                jsonwebtoken::decode::<serde_json::Value>(token, &self.decoding, &self.validation)
                    .map_err(|e| invalid(&e))?;
            return self.layout.read(&data.claims).map_err(|e| invalid(&e));
        }
        let provider = self.provider.as_ref().ok_or_else(|| {
            invalid(&format_args!(
                "a {:?} token needs an identity provider's keys, and none is configured",
                header.alg
            ))
        })?;
        provider
            .verify(token, &header)
            .await
            .map_err(|e| invalid(&e))
    }
}

/// The checks every token passes whatever its key: the one algorithm of its key, the required
/// claims (a provider's tokens need `exp`, `iss` and `aud` instead), and `exp` and `nbf` with
/// [`LEEWAY_SECS`].
fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iat", "sub"]);
    validation
}

fn check_scopes(scopes: &[String]) -> Result<(), String> {
    if scopes.len() > MAX_SCOPES {
        return Err(format!("more than {MAX_SCOPES} scopes"));
    }
    if let Some(s) = scopes.iter().find(|s| s.len() > MAX_SCOPE_LEN) {
        return Err(format!(
            "a scope is {} bytes, more than {MAX_SCOPE_LEN}",
            s.len()
        ));
    }
    Ok(())
}

/// The bytes without surrounding ASCII whitespace (a trailing newline from an editor).
fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant and the actor recorded on events.
    pub caller: Caller,
    /// The caller's identity.
    pub identity: IdentityId,
    scopes: Vec<String>,
    levels: Vec<Level>,
}

impl Principal {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the token's levels satisfy `level`.
    pub fn has_level(&self, level: Level) -> bool {
        self.levels.iter().any(|l| l.satisfies(level))
    }

    /// `Ok` if the caller holds one of the rule's scopes (any token when the rule lists none)
    /// and its level; 403 otherwise.
    pub fn require(&self, rule: Rule) -> Result<(), ApiError> {
        if !rule.scopes.is_empty() && !rule.scopes.iter().any(|s| self.has_scope(s)) {
            return Err(ApiError::forbidden(format!(
                "this operation needs one of the scopes {}",
                rule.scopes.join(", ")
            )));
        }
        if !self.has_level(rule.level) {
            return Err(ApiError::forbidden(format!(
                "this operation needs the user level {}",
                rule.level.as_str()
            )));
        }
        Ok(())
    }
}

impl FromRequestParts<crate::AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("no Authorization header"))?;
        if header.len() > MAX_TOKEN_LEN {
            return Err(ApiError::unauthorized(format!(
                "the Authorization header is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        state.keys.verify(token).await
    }
}

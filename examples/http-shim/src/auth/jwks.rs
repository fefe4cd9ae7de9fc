//! Public keys of an identity provider (RFC 7517 key sets): RS256 and ES256 tokens.
//!
//! A key set comes from a file, read once at start ([`Jwks::from_file`]), or from a URL
//! ([`Remote`]), fetched at start, cached, and fetched again when it is older than its maximum
//! age or a token names a `kid` it lacks (at most once per cooldown, so that tokens with made-up
//! kids cannot make the shim hammer the provider). Each key is pinned to one algorithm (its
//! `alg`, or RS256 for an `RSA` key and ES256 for a `P-256` key when it names none), so a token
//! can never choose how its key is used: an HS256 token is always checked against the shim's own
//! secret, never against a public key.
//!
//! A key set is refused whole, with the reason, when it is unreadable, larger than
//! [`MAX_DOCUMENT_BYTES`], not a key set, holds more than [`MAX_KEYS`] keys, a key without a
//! `kid`, two keys with one `kid`, a key of a type other than `RSA` or `EC` `P-256`, a key whose
//! `alg` does not fit its type, or a key of the wrong size. A key whose `use` is not `sig`, or
//! whose `key_ops` lacks `verify`, is left out (identity providers often publish encryption keys
//! in the same set); a set left with no signing key is refused. A fetched set that is refused
//! leaves the cached one in use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde::Deserialize;

mod remote;

pub use remote::{MAX_TIMEOUT, MIN_COOLDOWN, Remote, Settings};

/// The largest key set read, from a file or a URL, in bytes.
pub const MAX_DOCUMENT_BYTES: u64 = 64 * 1024;
/// The most keys one key set may hold (signing keys and the others together).
pub const MAX_KEYS: usize = 32;
/// The longest `kid`, in bytes.
pub const MAX_KID_LEN: usize = 256;
/// The smallest RSA modulus accepted, in bytes (2048 bits).
pub const MIN_RSA_BYTES: usize = 256;
/// The largest RSA modulus accepted, in bytes (4096 bits, the verifier's own bound).
pub const MAX_RSA_BYTES: usize = 512;

/// Why a key set was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("JWKS file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("JWKS file {path} is {size} bytes, more than {MAX_DOCUMENT_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The URL could not be fetched: not a plain `http` URL, no connection, no answer within the
    /// timeout, a status other than 200, or a body larger than [`MAX_DOCUMENT_BYTES`].
    #[error("JWKS URL {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The text is not a JSON key set (`{"keys": [...]}`), or a key is not a JSON object of
    /// string members.
    #[error("not a JWKS: {0}")]
    NotJwks(String),
    /// The set holds more than [`MAX_KEYS`] keys.
    #[error("the JWKS holds {0} keys, more than {MAX_KEYS}")]
    TooManyKeys(usize),
    /// A key has no `kid`, an empty one, or one longer than [`MAX_KID_LEN`]; tokens name their
    /// key by `kid`. The value is the key's position in the set.
    #[error("JWKS key #{0} has no kid of 1..={MAX_KID_LEN} bytes")]
    Kid(usize),
    /// Two keys have the same `kid`.
    #[error("JWKS kid {0:?} names two keys")]
    DuplicateKid(String),
    /// A signing key's type, curve or `alg` is not one the shim verifies (RSA with RS256, EC
    /// P-256 with ES256).
    #[error("JWKS key {kid:?}: unsupported: {reason}")]
    Unsupported {
        /// The key.
        kid: String,
        /// What is unsupported.
        reason: String,
    },
    /// A signing key's material is malformed or of the wrong size.
    #[error("JWKS key {kid:?}: {reason}")]
    BadKey {
        /// The key.
        kid: String,
        /// What is wrong.
        reason: String,
    },
    /// No key of the set is a signing key.
    #[error("the JWKS has no signing key")]
    NoSigningKey,
}

/// One key of the file, as far as the shim reads it.
#[derive(Deserialize)]
struct RawKey {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The file's shape: the keys are read one by one after the count is checked.
#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// A verifying key pinned to its algorithm.
#[derive(Clone)]
struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

/// The signing keys of a key set, by `kid`.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: HashMap<String, Key>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Jwks").field("kids", &kids).finish()
    }
}

impl Jwks {
    /// Reads a JWKS file (at most [`MAX_DOCUMENT_BYTES`]).
    pub fn from_file(path: &Path) -> Result<Jwks, Error> {
        use std::io::Read;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        // One byte past the bound tells an oversized file apart without reading all of it.
        file.take(MAX_DOCUMENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let size = bytes.len() as u64;
        if size > MAX_DOCUMENT_BYTES {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                size: std::fs::metadata(path).map_or(size, |m| m.len()),
            });
        }
        Jwks::from_json(&bytes)
    }

    /// Reads a key set from JSON text (the bounds of [`Jwks::from_file`] but the size).
    pub fn from_json(json: &[u8]) -> Result<Jwks, Error> {
        let set: RawSet =
            serde_json::from_slice(json).map_err(|e| Error::NotJwks(e.to_string()))?;
        if set.keys.len() > MAX_KEYS {
            return Err(Error::TooManyKeys(set.keys.len()));
        }
        let mut keys = HashMap::new();
        for (index, value) in set.keys.into_iter().enumerate() {
            let raw: RawKey = serde_json::from_value(value)
                .map_err(|e| Error::NotJwks(format!("key #{index}: {e}")))?;
            let kid = raw
                .kid
                .clone()
                .filter(|k| (1..=MAX_KID_LEN).contains(&k.len()))
                .ok_or(Error::Kid(index))?;
            // A kid is unique across the whole set, signing key or not, as RFC 7517 asks.
            if keys.contains_key(&kid) {
                return Err(Error::DuplicateKid(kid));
            }
            let key = if is_signing(&raw) {
                Some(key(&kid, &raw)?)
            } else {
                tracing::info!(kid, "JWKS key left out: not a signing key");
                None
            };
            keys.insert(kid, key);
        }
        let keys: HashMap<String, Key> = keys
            .into_iter()
            .filter_map(|(kid, key)| Some((kid, key?)))
            .collect();
        if keys.is_empty() {
            return Err(Error::NoSigningKey);
        }
        Ok(Jwks { keys })
    }

    /// How many signing keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no signing key (only the empty default does).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a signing key has this `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The key for a token's header and its algorithm: the header's `kid` must name a key whose
    /// pinned algorithm is the header's. The error is the reason, for a 401.
    pub(crate) fn key_for(&self, header: &Header) -> Result<(&DecodingKey, Algorithm), String> {
        let kid = header.kid.as_deref().ok_or_else(|| {
            format!(
                "a {:?} token needs a kid naming a key of the JWKS",
                header.alg
            )
        })?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| format!("no JWKS key has the kid {kid:?}"))?;
        if key.algorithm != header.alg {
            return Err(format!(
                "the key {kid:?} verifies {:?}, the token is {:?}",
                key.algorithm, header.alg
            ));
        }
        Ok((&key.decoding, key.algorithm))
    }
}

/// Where an identity provider's keys come from.
#[derive(Debug)]
pub enum Source {
    /// A set read once, from a file.
    Fixed(Arc<Jwks>),
    /// A set fetched from a URL and cached (boxed: it is much larger than a file's).
    Remote(Box<Remote>),
}

impl Source {
    /// The keys to verify a token naming `kid` with; a remote set is fetched again first when
    /// [`Remote::keys`] says so.
    pub(crate) async fn keys(&self, kid: Option<&str>) -> Arc<Jwks> {
        match self {
            Source::Fixed(jwks) => Arc::clone(jwks),
            Source::Remote(remote) => remote.keys(kid).await,
        }
    }
}

impl From<Jwks> for Source {
    fn from(jwks: Jwks) -> Source {
        Source::Fixed(Arc::new(jwks))
    }
}

impl From<Remote> for Source {
    fn from(remote: Remote) -> Source {
        Source::Remote(Box::new(remote))
    }
}

/// Whether a key may verify signatures: its `use`, if any, is `sig`, and its `key_ops`, if any,
/// include `verify`.
fn is_signing(raw: &RawKey) -> bool {
    raw.use_.as_deref().is_none_or(|u| u == "sig")
        && raw
            .key_ops
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|o| o == "verify"))
}

/// The verifying key of a signing key, pinned to its algorithm.
fn key(kid: &str, raw: &RawKey) -> Result<Key, Error> {
    let unsupported = |reason: String| Error::Unsupported {
        kid: kid.to_owned(),
        reason,
    };
    let bad = |reason: String| Error::BadKey {
        kid: kid.to_owned(),
        reason,
    };
    let member = |name: &str, value: &Option<String>| {
        value
            .clone()
            .ok_or_else(|| bad(format!("no {name} member")))
    };
    let (algorithm, decoding) = match raw.kty.as_deref() {
        Some("RSA") => {
            let n = member("n", &raw.n)?;
            let e = member("e", &raw.e)?;
            let size = decoded_len(&n).ok_or_else(|| bad("n is not base64url".to_owned()))?;
            if !(MIN_RSA_BYTES..=MAX_RSA_BYTES).contains(&size) {
                return Err(bad(format!(
                    "the modulus is {} bits; it must be {}..={}",
                    size * 8,
                    MIN_RSA_BYTES * 8,
                    MAX_RSA_BYTES * 8
                )));
            }
            if !matches!(decoded_len(&e), Some(1..=8)) {
                return Err(bad("e is not a base64url exponent".to_owned()));
            }
            let decoding =
                DecodingKey::from_rsa_components(&n, &e).map_err(|e| bad(e.to_string()))?;
            (Algorithm::RS256, decoding)
        }
        Some("EC") => {
            if raw.crv.as_deref() != Some("P-256") {
                return Err(unsupported(format!(
                    "EC curve {:?} (only P-256)",
                    raw.crv.as_deref().unwrap_or("")
                )));
            }
            let x = member("x", &raw.x)?;
            let y = member("y", &raw.y)?;
            if decoded_len(&x) != Some(32) || decoded_len(&y) != Some(32) {
                return Err(bad("x and y must be 32 bytes each, base64url".to_owned()));
            }
            let decoding =
                DecodingKey::from_ec_components(&x, &y).map_err(|e| bad(e.to_string()))?;
            (Algorithm::ES256, decoding)
        }
        other => {
            return Err(unsupported(format!(
                "key type {:?} (only RSA and EC)",
                other.unwrap_or("")
            )));
        }
    };
    if let Some(alg) = &raw.alg
        && alg.as_str() != algorithm_name(algorithm)
    {
        return Err(unsupported(format!(
            "alg {alg:?} for a key of type {} (only {})",
            raw.kty.as_deref().unwrap_or(""),
            algorithm_name(algorithm)
        )));
    }
    Ok(Key {
        algorithm,
        decoding,
    })
}

/// The JOSE name of the algorithms a JWKS key may be pinned to.
fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::ES256 => "ES256",
        _ => "RS256",
    }
}

/// The number of bytes unpadded base64url text decodes to, or `None` if it is not such text.
fn decoded_len(text: &str) -> Option<usize> {
    let valid = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // A remainder of one character cannot end a base64 encoding.
    (valid && !text.is_empty() && text.len() % 4 != 1).then_some(text.len() * 3 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fixture() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn rsa() -> Value {
        fixture()["keys"][0].clone()
    }

    fn ec() -> Value {
        fixture()["keys"][1].clone()
    }

    fn load(keys: Vec<Value>) -> Result<Jwks, Error> {
        Jwks::from_json(json!({ "keys": keys }).to_string().as_bytes())
    }

    fn with(mut key: Value, name: &str, value: Value) -> Value {
        key[name] = value;
        key
    }

    #[test]
    fn the_fixture_loads_its_signing_keys_and_leaves_out_the_encryption_key() {
        let jwks = load(fixture()["keys"].as_array().unwrap().clone()).unwrap();
        assert_eq!(jwks.len(), 2);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-rsa".to_owned());
        assert!(jwks.key_for(&header).is_ok());
        header.kid = Some("test-enc".to_owned());
        assert!(jwks.key_for(&header).unwrap_err().contains("no JWKS key"));
        header.kid = Some("test-ec".to_owned());
        assert!(
            jwks.key_for(&header)
                .unwrap_err()
                .contains("verifies ES256")
        );
        header.alg = Algorithm::ES256;
        assert!(jwks.key_for(&header).is_ok());
        header.kid = None;
        assert!(jwks.key_for(&header).unwrap_err().contains("needs a kid"));
    }

    #[test]
    fn a_key_without_alg_is_pinned_by_its_type() {
        let mut key = rsa();
        key.as_object_mut().unwrap().remove("alg");
        key.as_object_mut().unwrap().remove("use");
        let jwks = load(vec![key]).unwrap();
        let mut header = Header::new(Algorithm::RS384);
        header.kid = Some("test-rsa".to_owned());
        assert!(jwks.key_for(&header).is_err());
        header.alg = Algorithm::RS256;
        assert!(jwks.key_for(&header).is_ok());
    }

    #[test]
    fn bad_sets_are_refused_with_the_reason() {
        let cases: Vec<(Result<Jwks, Error>, &str)> = vec![
            (Jwks::from_json(b"not json"), "not a JWKS"),
            (Jwks::from_json(b"{\"keys\": {}}"), "not a JWKS"),
            (Jwks::from_json(b"[]"), "not a JWKS"),
            (load(vec![json!(5)]), "not a JWKS: key #0"),
            (load(vec![]), "no signing key"),
            (
                load(vec![with(rsa(), "use", json!("enc"))]),
                "no signing key",
            ),
            (
                load(vec![with(rsa(), "key_ops", json!(["encrypt"]))]),
                "no signing key",
            ),
            (load(vec![rsa(); MAX_KEYS + 1]), "33 keys, more than 32"),
            (load(vec![with(rsa(), "kid", Value::Null)]), "#0 has no kid"),
            (
                load(vec![ec(), with(rsa(), "kid", json!(""))]),
                "#1 has no kid",
            ),
            (
                load(vec![rsa(), with(ec(), "kid", json!("test-rsa"))]),
                "\"test-rsa\" names two keys",
            ),
            (
                load(vec![with(rsa(), "use", json!("enc")), rsa()]),
                "names two keys",
            ),
            (
                load(vec![with(rsa(), "kty", json!("oct"))]),
                "unsupported: key type \"oct\"",
            ),
            (
                load(vec![with(ec(), "crv", json!("P-384"))]),
                "unsupported: EC curve \"P-384\"",
            ),
            (
                load(vec![with(rsa(), "alg", json!("HS256"))]),
                "unsupported: alg \"HS256\"",
            ),
            (
                load(vec![with(ec(), "alg", json!("RS256"))]),
                "unsupported: alg \"RS256\" for a key of type EC",
            ),
            (load(vec![with(rsa(), "n", json!("AQAB"))]), "24 bits"),
            (load(vec![with(rsa(), "n", json!("a+b/"))]), "not base64url"),
            (load(vec![with(rsa(), "e", Value::Null)]), "no e member"),
            (load(vec![with(ec(), "x", json!("AQAB"))]), "32 bytes each"),
        ];
        for (result, reason) in cases {
            let text = result.map(|j| format!("{j:?}")).unwrap_err().to_string();
            assert!(text.contains(reason), "{text:?} lacks {reason:?}");
        }
    }

    #[test]
    fn files_over_the_bound_or_missing_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        let padding = " ".repeat(usize::try_from(MAX_DOCUMENT_BYTES).unwrap());
        std::fs::write(&big, format!("{}{padding}", fixture())).unwrap();
        assert!(matches!(
            Jwks::from_file(&big),
            Err(Error::TooLarge { size, .. }) if size > MAX_DOCUMENT_BYTES
        ));
        assert!(matches!(
            Jwks::from_file(&dir.path().join("none.json")),
            Err(Error::Io { .. })
        ));
        let fits = dir.path().join("fits.json");
        std::fs::write(&fits, fixture().to_string()).unwrap();
        assert_eq!(Jwks::from_file(&fits).unwrap().len(), 2);
    }
}

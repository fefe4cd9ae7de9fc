//! The Standard Webhooks signature: `webhook-signature: v1,<base64(HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}"))>`, where the key is the secret `whsec_<base64>` decoded and the
//! timestamp is whole seconds since the Unix epoch, also sent as `webhook-timestamp`.
//!
//! The crypto is RustCrypto's `hmac` and `sha2`; verification compares in constant time
//! (`Mac::verify_slice`), so a receiver built on [`verify`] leaks nothing through timing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// The fewest key bytes a secret may hold (the specification's lower bound, 192 bits).
pub const MIN_SECRET_BYTES: usize = 24;
/// The most key bytes a secret may hold (the specification's upper bound, 512 bits).
pub const MAX_SECRET_BYTES: usize = 64;
/// The most signatures one `webhook-signature` header may list that [`verify`] looks at (a
/// sender rotating secrets sends two or three).
pub const MAX_SIGNATURES: usize = 8;

/// The header names.
pub mod headers {
    /// The message id: the same on every redelivery, the receiver's de-duplication key.
    pub const ID: &str = "webhook-id";
    /// Whole seconds since the Unix epoch when this try was signed.
    pub const TIMESTAMP: &str = "webhook-timestamp";
    /// Space-separated `v1,<base64>` signatures.
    pub const SIGNATURE: &str = "webhook-signature";
}

/// A signing secret (`whsec_` and the base64 of 24 to 64 random bytes). Its `Debug` form hides
/// the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a webhook secret starts with `whsec_` (Standard Webhooks)")]
    NoPrefix,
    /// What follows the prefix is not standard base64.
    #[error("the part after `whsec_` is not base64")]
    NotBase64,
    /// The key is shorter or longer than the specification allows.
    #[error(
        "the key is {0} bytes; it must be 24 to 64 (e.g. `whsec_` and the base64 of 32 random bytes)"
    )]
    Length(usize),
}

impl Secret {
    /// Reads `whsec_<base64>`. Surrounding whitespace (a secret read from a file) is ignored.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::NoPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret { key })
    }

    fn mac(&self, id: &str, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC-SHA256 accepts a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value of one message: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// Why [`verify`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// `webhook-timestamp` is not a whole number of seconds.
    #[error("webhook-timestamp is not a whole number of seconds")]
    BadTimestamp,
    /// The timestamp is further from the receiver's clock than the tolerance (a replay, or a
    /// clock that is off).
    #[error("webhook-timestamp is {0} s away from now, more than the tolerance")]
    Stale(u64),
    /// No `v1` signature in the header matches.
    #[error("no v1 signature matches")]
    NoMatch,
}

/// Checks a received message as a Standard Webhooks receiver does: the timestamp is within
/// `tolerance_secs` of `now_secs`, and one of the header's `v1` signatures (at most
/// [`MAX_SIGNATURES`] are looked at) is the HMAC of `{id}.{timestamp}.{body}` under `secret`.
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let at: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let off = now_secs.abs_diff(at);
    if off > tolerance_secs {
        return Err(VerifyError::Stale(off));
    }
    let mac = secret.mac(id, at, body);
    let matched = signatures
        .split_whitespace()
        .take(MAX_SIGNATURES)
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// [`verify`] with the three headers read through `header` (a lookup by lowercase name into
/// whatever header map the receiver's HTTP library has; a missing header reads as empty) and
/// the wall clock as now.
pub fn verify_headers<'a>(
    secret: &Secret,
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verify(
        secret,
        header(headers::ID).unwrap_or_default(),
        header(headers::TIMESTAMP).unwrap_or_default(),
        header(headers::SIGNATURE).unwrap_or_default(),
        body,
        now,
        tolerance_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector the Standard Webhooks reference libraries all check: a signer that
    /// matches it is one every receiver library accepts (a round trip through our own
    /// [`verify`] would pass with the delimiter or the key decoding wrong on both sides).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: u64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_standard_webhooks_test_vector_is_reproduced() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        assert_eq!(
            secret.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        let ts = VECTOR_TIMESTAMP.to_string();
        verify(
            &secret,
            VECTOR_ID,
            &ts,
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            VECTOR_TIMESTAMP + 10,
            300,
        )
        .unwrap();
    }

    #[test]
    fn a_changed_byte_a_wrong_secret_or_an_old_timestamp_is_refused() {
        let secret = Secret::parse(VECTOR_SECRET).unwrap();
        let ts = VECTOR_TIMESTAMP.to_string();
        let check = |secret: &Secret, id: &str, body: &[u8], sig: &str, now: u64| {
            verify(secret, id, &ts, sig, body, now, 300)
        };
        let now = VECTOR_TIMESTAMP;
        assert_eq!(
            check(
                &secret,
                VECTOR_ID,
                br#"{"test": 2432232315}"#,
                VECTOR_SIGNATURE,
                now
            ),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            check(&secret, "msg_other", VECTOR_BODY, VECTOR_SIGNATURE, now),
            Err(VerifyError::NoMatch)
        );
        let other = Secret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).unwrap();
        assert_eq!(
            check(&other, VECTOR_ID, VECTOR_BODY, VECTOR_SIGNATURE, now),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            check(&secret, VECTOR_ID, VECTOR_BODY, VECTOR_SIGNATURE, now + 301),
            Err(VerifyError::Stale(301))
        );
        // A rotated list: one good signature among others is enough; a `v2` is ignored.
        let listed = format!("v2,AAAA v1,bm9wZQ== {VECTOR_SIGNATURE}");
        assert_eq!(check(&secret, VECTOR_ID, VECTOR_BODY, &listed, now), Ok(()));
        assert_eq!(
            verify(
                &secret,
                VECTOR_ID,
                "soon",
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                now,
                300
            ),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn secrets_need_the_prefix_base64_and_24_to_64_bytes() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::NoPrefix)
        );
        assert_eq!(Secret::parse("whsec_!!!!"), Err(SecretError::NotBase64));
        let short = format!("whsec_{}", STANDARD.encode([1u8; 16]));
        assert_eq!(Secret::parse(&short), Err(SecretError::Length(16)));
        let long = format!("whsec_{}", STANDARD.encode([1u8; 65]));
        assert_eq!(Secret::parse(&long), Err(SecretError::Length(65)));
        let read_from_a_file = format!("  {VECTOR_SECRET}\n");
        assert!(Secret::parse(&read_from_a_file).is_ok());
        assert_eq!(
            format!("{:?}", Secret::parse(VECTOR_SECRET).unwrap()),
            "Secret(..)"
        );
    }
}

//! Identifiers.
//!
//! Connection, activation, access request, request item and approval ids are UUIDs: accepted
//! with or without hyphens, in either case, and always shown in one canonical form (lowercase,
//! hyphenated). The other ids (tenant, identity, account, entitlement, source, requested object)
//! are opaque strings chosen by the embedder's sources, bounded in length and restricted to a
//! safe character set so that they can be used in keys, logs and URLs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest text id accepted, in bytes.
pub const MAX_TEXT_ID_LEN: usize = 128;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The id is empty.
    #[error("{kind} id is empty")]
    Empty {
        /// Which id: `connection`, `tenant`, ...
        kind: &'static str,
    },
    /// The id is longer than its bound.
    #[error("{kind} id is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Which id.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The id holds a character outside `A-Z a-z 0-9 . _ - : @`.
    #[error("{kind} id has the character {found:?} at byte {position}, outside [A-Za-z0-9._:@-]")]
    BadChar {
        /// Which id.
        kind: &'static str,
        /// The byte offset of the character.
        position: usize,
        /// The character.
        found: char,
    },
    /// The id is not a UUID (32 hex digits, optionally hyphenated 8-4-4-4-12).
    #[error("{kind} id `{input}` is not a UUID (32 hex digits, hyphens optional)")]
    NotUuid {
        /// Which id.
        kind: &'static str,
        /// The rejected input, cut to 64 characters.
        input: String,
    },
}

fn parse_uuid(kind: &'static str, input: &str) -> Result<u128, Error> {
    if input.is_empty() {
        return Err(Error::Empty { kind });
    }
    // `Uuid::try_parse` also accepts braced and URN forms; the contract uses only the simple
    // (32 digits) and hyphenated (36 characters) forms, so accept exactly those.
    let shaped = match input.len() {
        32 => input.bytes().all(|b| b.is_ascii_hexdigit()),
        36 => input.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    };
    let not_uuid = || Error::NotUuid {
        kind,
        input: input.chars().take(64).collect(),
    };
    if !shaped {
        return Err(not_uuid());
    }
    uuid::Uuid::try_parse(input)
        .map(|u| u.as_u128())
        .map_err(|_| not_uuid())
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Serialised as its canonical text in human-readable formats (JSON) and as its 128 bits
        /// in binary ones (the store's bincode), so the stored format does not depend on it.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u128);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    // The bytes a derived newtype produces, which the golden fixtures pin.
                    serializer.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                    Self::parse(&text).map_err(serde::de::Error::custom)
                } else {
                    // Binary formats ignore the newtype's name; the bits are what is stored.
                    #[derive(Deserialize)]
                    struct Bits(u128);
                    Bits::deserialize(deserializer).map(|Bits(bits)| Self(bits))
                }
            }
        }

        impl $name {
            /// The id with these 128 bits.
            pub const fn from_u128(bits: u128) -> Self {
                Self(bits)
            }

            /// The 128 bits of the id; big-endian bytes of it sort like the canonical text.
            pub const fn as_u128(self) -> u128 {
                self.0
            }

            /// Big-endian bytes, for storage keys.
            pub const fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }

            /// The id from big-endian bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(u128::from_be_bytes(bytes))
            }

            /// Parses a UUID with or without hyphens, in either case.
            pub fn parse(input: &str) -> Result<Self, Error> {
                parse_uuid($kind, input).map(Self)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(input: &str) -> Result<Self, Error> {
                Self::parse(input)
            }
        }

        impl fmt::Display for $name {
            /// The canonical form: lowercase and hyphenated.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&uuid::Uuid::from_u128(self.0).hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
    };
}

uuid_id!(
    /// An entitlement connection: one identity's eligibility for one entitlement on one account.
    ConnectionId,
    "connection"
);
uuid_id!(
    /// One activation workflow instance of a connection.
    ActivationId,
    "activation"
);
uuid_id!(
    /// An access request as submitted (the contract's `accessRequestId` / `accountActivityId`):
    /// it groups the items it expands to.
    AccessRequestId,
    "access request"
);
uuid_id!(
    /// One item of an access request: one identity and one requested object. The unit that is
    /// approved, provisioned and removed, and the stream the store keys.
    RequestItemId,
    "request item"
);
uuid_id!(
    /// The approval step of one request item (the contract's `approvalId`).
    ApprovalId,
    "approval"
);

fn check_text(kind: &'static str, input: &str) -> Result<(), Error> {
    if input.is_empty() {
        return Err(Error::Empty { kind });
    }
    if input.len() > MAX_TEXT_ID_LEN {
        return Err(Error::TooLong {
            kind,
            len: input.len(),
            max: MAX_TEXT_ID_LEN,
        });
    }
    if let Some((position, found)) = input
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        return Err(Error::BadChar {
            kind,
            position,
            found,
        });
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            /// Checks `input` (non-empty, at most [`MAX_TEXT_ID_LEN`] bytes, `[A-Za-z0-9._:@-]`).
            pub fn parse(input: &str) -> Result<Self, Error> {
                check_text($kind, input)?;
                Ok(Self(input.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Re-checks the invariant; used after decoding stored bytes.
            pub fn is_valid(&self) -> bool {
                check_text($kind, &self.0).is_ok()
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(input: &str) -> Result<Self, Error> {
                Self::parse(input)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

text_id!(
    /// A tenant (org). Every stored key starts with it.
    TenantId,
    "tenant"
);
text_id!(
    /// A person or machine identity.
    IdentityId,
    "identity"
);
text_id!(
    /// An account on a source.
    AccountId,
    "account"
);
text_id!(
    /// An entitlement on a source.
    EntitlementId,
    "entitlement"
);
text_id!(
    /// A source (a connected system).
    SourceId,
    "source"
);
text_id!(
    /// A requestable object: a role, an access profile or an entitlement.
    ObjectId,
    "requested object"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_canonical_text() {
        let id = ConnectionId::parse("757FB80390245861E51083A56E4C5BD3").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""757fb803-9024-5861-e510-83a56e4c5bd3""#);
        assert_eq!(serde_json::from_str::<ConnectionId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ConnectionId>(r#""not-a-uuid""#).is_err());
    }

    #[test]
    fn uuid_forms_normalise_to_one() {
        let a = ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3").unwrap();
        let b = ConnectionId::parse("757FB80390245861E51083A56E4C5BD3").unwrap();
        assert_eq!(a, b);
        assert_eq!(b.to_string(), "757fb803-9024-5861-e510-83a56e4c5bd3");
        assert_eq!(ConnectionId::from_bytes(a.to_bytes()), a);
    }

    #[test]
    fn uuid_errors_are_typed() {
        assert_eq!(
            ConnectionId::parse(""),
            Err(Error::Empty { kind: "connection" })
        );
        for bad in [
            "757fb803-9024-5861-e510-83a56e4c5bd",
            "{757fb803-9024-5861-e510-83a56e4c5bd3}",
            "urn:uuid:757fb803-9024-5861-e510-83a56e4c5bd3",
            "757fb8039-024-5861-e510-83a56e4c5bd3",
            "zzzfb80390245861e51083a56e4c5bd3",
        ] {
            assert!(
                matches!(ConnectionId::parse(bad), Err(Error::NotUuid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn text_ids_are_bounded() {
        assert!(IdentityId::parse("2c9180867e20630b017e20be7c222492").is_ok());
        assert_eq!(
            TenantId::parse("a b"),
            Err(Error::BadChar {
                kind: "tenant",
                position: 1,
                found: ' '
            })
        );
        let long = "x".repeat(MAX_TEXT_ID_LEN + 1);
        assert!(matches!(SourceId::parse(&long), Err(Error::TooLong { .. })));
        assert!(matches!(AccountId::parse(""), Err(Error::Empty { .. })));
    }
}

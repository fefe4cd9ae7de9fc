//! Where a token's caller is read from: the claims that hold the tenant, the identity, the scopes
//! and the user levels ([`Layout`]), and how each is read.
//!
//! The shim's own tokens use [`Layout::default`] (`tenant`, `sub`, `scope`, `levels`); an
//! identity provider's tokens use the layout its settings give, since each provider names these
//! claims differently (Entra ID: `tid`, `oid`, `scp`, `roles`; Keycloak: `realm_access.roles`;
//! Auth0: namespaced custom claims). A claim is named as a top-level member, or, when the name
//! starts with `/`, as a JSON Pointer (RFC 6901) into the claims, for nested claims such as
//! Keycloak's `/realm_access/roles`. A top-level name is taken literally, so Auth0's namespaced
//! claims (`https://example.com/tenant`) need no escaping.
//!
//! The rules:
//! - the tenant and the identity are strings, required, and must be valid ids;
//! - scopes and levels may come from several claims, whose values are joined; each claim is a
//!   string of space-separated values (OAuth's `scope`, Entra's `scp`) or a list of strings
//!   (Okta's `scp`, Auth0's `permissions`), and an absent claim contributes nothing;
//! - a level value that is not a level's name (`USER`, `POLICY_ADMIN`, `ORG_ADMIN`) is ignored,
//!   since a roles or groups claim holds much else; it grants nothing. A claim of another type
//!   (a number, an object, a list holding a non-string) refuses the token.

use jitflow::Caller;
use jitflow_core::id::{IdentityId, TenantId};
use jitflow_core::lifecycle::Actor;
use serde_json::Value;

use super::{Level, Principal};

/// The longest claim name or pointer, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// The most claims that scopes, or levels, are read from.
pub const MAX_NAMES: usize = 8;

/// A claim's place in a token: a top-level member's name, or a JSON Pointer (starting with `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// A name of 1..=[`MAX_NAME_LEN`] bytes; one that starts with `/` must be a valid JSON
    /// Pointer (every `~` followed by `0` or `1`).
    pub fn parse(text: &str) -> Result<Name, String> {
        if !(1..=MAX_NAME_LEN).contains(&text.len()) {
            return Err(format!(
                "a claim name is 1..={MAX_NAME_LEN} bytes, not {}",
                text.len()
            ));
        }
        if text.starts_with('/') {
            let mut chars = text.chars();
            while let Some(c) = chars.next() {
                if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                    return Err(format!(
                        "{text:?}: in a JSON Pointer `~` must be followed by 0 or 1"
                    ));
                }
            }
        }
        Ok(Name(text.to_owned()))
    }

    /// The claim's value, if the token has it.
    fn find<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        if self.0.starts_with('/') {
            claims.pointer(&self.0)
        } else {
            claims.get(&self.0)
        }
    }
}

impl std::str::FromStr for Name {
    type Err = String;

    fn from_str(text: &str) -> Result<Name, String> {
        Name::parse(text)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The claims a token's tenant, identity, scopes and levels are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The tenant's claim.
    pub tenant: Name,
    /// The caller's identity id's claim.
    pub identity: Name,
    /// The claims whose scopes are joined (at most [`MAX_NAMES`]).
    pub scopes: Vec<Name>,
    /// The claims whose user levels are joined (at most [`MAX_NAMES`]).
    pub levels: Vec<Name>,
}

impl Default for Layout {
    /// The shim's own tokens: `tenant`, `sub`, `scope` and `levels`.
    fn default() -> Layout {
        let name = |text: &str| Name(text.to_owned());
        Layout {
            tenant: name("tenant"),
            identity: name("sub"),
            scopes: vec![name("scope")],
            levels: vec![name("levels")],
        }
    }
}

impl Layout {
    /// Checks the bounds of the lists: 1..=[`MAX_NAMES`] claims each.
    pub fn validate(&self) -> Result<(), String> {
        for (what, names) in [("scopes", &self.scopes), ("levels", &self.levels)] {
            if !(1..=MAX_NAMES).contains(&names.len()) {
                return Err(format!(
                    "{what} are read from 1..={MAX_NAMES} claims, not {}",
                    names.len()
                ));
            }
        }
        Ok(())
    }

    /// The caller of verified claims. The error is the reason, for a 401.
    pub(super) fn read(&self, claims: &Value) -> Result<Principal, String> {
        let tenant = TenantId::parse(string(&self.tenant, claims)?)
            .map_err(|e| format!("{}: {e}", self.tenant))?;
        let identity = IdentityId::parse(string(&self.identity, claims)?)
            .map_err(|e| format!("{}: {e}", self.identity))?;
        let scopes: Vec<String> = values(&self.scopes, claims)?
            .into_iter()
            .map(str::to_owned)
            .collect();
        super::check_scopes(&scopes)?;
        let mut levels = Vec::new();
        for value in values(&self.levels, claims)? {
            match Level::parse(value) {
                Some(level) if !levels.contains(&level) => levels.push(level),
                Some(_) => {}
                // A roles or groups claim names much that is not a level; it grants nothing.
                None => tracing::trace!(value, "not a user level; ignored"),
            }
        }
        Ok(Principal {
            caller: Caller {
                tenant,
                actor: Actor::Identity(identity.clone()),
            },
            identity,
            scopes,
            levels,
        })
    }
}

/// A required string claim.
fn string<'a>(name: &Name, claims: &'a Value) -> Result<&'a str, String> {
    match name.find(claims) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(format!("the claim {name} is not a string")),
        None => Err(format!("no claim {name}")),
    }
}

/// The values of the claims `names`, joined: each a space-separated string or a list of strings.
fn values<'a>(names: &[Name], claims: &'a Value) -> Result<Vec<&'a str>, String> {
    let mut all = Vec::new();
    for name in names {
        match name.find(claims) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => all.extend(text.split_ascii_whitespace()),
            Some(Value::Array(items)) => {
                for item in items {
                    all.push(item.as_str().ok_or_else(|| {
                        format!("the claim {name} holds a value that is not a string")
                    })?);
                }
            }
            Some(_) => {
                return Err(format!(
                    "the claim {name} must be a string or a list of strings"
                ));
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    #[test]
    fn names_are_members_or_pointers() {
        let claims = json!({
            "realm_access": {"roles": ["USER"]},
            "https://example.com/tenant": "acme",
            "a/b": 1,
        });
        assert_eq!(
            name("/realm_access/roles").find(&claims),
            Some(&json!(["USER"]))
        );
        assert_eq!(
            name("https://example.com/tenant").find(&claims),
            Some(&json!("acme"))
        );
        assert_eq!(name("/a~1b").find(&claims), Some(&json!(1)));
        assert_eq!(name("realm_access.roles").find(&claims), None);
        assert!(Name::parse("").is_err());
        assert!(Name::parse(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(Name::parse("/a~2").is_err());
        assert!(Name::parse("/a~").is_err());
        // Outside a pointer `~` is an ordinary character.
        assert!(Name::parse("a~").is_ok());
    }

    #[test]
    fn scopes_are_strings_or_lists_joined_and_unknown_levels_are_ignored() {
        let layout = Layout {
            tenant: name("tid"),
            identity: name("oid"),
            scopes: vec![name("scope"), name("permissions")],
            levels: vec![name("/realm_access/roles"), name("roles")],
        };
        let claims = json!({
            "tid": "t1", "oid": "o1",
            "scope": " openid  a:b\tc:d ",
            "permissions": ["e:f"],
            "realm_access": {"roles": ["offline_access", "USER", "user", "ORG_ADMIN"]},
            "roles": "POLICY_ADMIN USER",
        });
        let principal = layout.read(&claims).unwrap();
        assert_eq!(principal.caller.tenant.as_str(), "t1");
        assert_eq!(principal.identity.as_str(), "o1");
        assert_eq!(principal.scopes, ["openid", "a:b", "c:d", "e:f"]);
        assert_eq!(
            principal.levels,
            [Level::User, Level::OrgAdmin, Level::PolicyAdmin]
        );
        // Absent or null scope and level claims grant nothing.
        let bare = layout
            .read(&json!({"tid": "t1", "oid": "o1", "roles": null}))
            .unwrap();
        assert!(bare.scopes.is_empty() && bare.levels.is_empty());
    }

    #[test]
    fn claims_of_the_wrong_type_or_missing_ids_are_refused_with_the_claim() {
        let layout = Layout::default();
        let base = json!({"tenant": "acme", "sub": "alice", "scope": [], "levels": []});
        assert!(layout.read(&base).is_ok());
        let cases = [
            ("tenant", Value::Null, "the claim tenant is not a string"),
            ("sub", json!(7), "the claim sub is not a string"),
            ("sub", json!("a b"), "sub: "),
            ("tenant", json!(""), "tenant: "),
            ("scope", json!({"a": 1}), "scope must be a string or a list"),
            (
                "scope",
                json!(["a", 1]),
                "scope holds a value that is not a string",
            ),
            ("levels", json!(5), "levels must be a string or a list"),
        ];
        for (claim, value, reason) in cases {
            let mut claims = base.clone();
            claims[claim] = value;
            let text = layout.read(&claims).unwrap_err();
            assert!(text.contains(reason), "{text:?} lacks {reason:?}");
        }
        let mut claims = base.clone();
        claims.as_object_mut().unwrap().remove("sub");
        assert_eq!(layout.read(&claims).unwrap_err(), "no claim sub");
        let many: Vec<String> = (0..=super::super::MAX_SCOPES)
            .map(|i| format!("s{i}"))
            .collect();
        claims = base.clone();
        claims["scope"] = json!(many.join(" "));
        assert!(
            layout
                .read(&claims)
                .unwrap_err()
                .contains("more than 64 scopes")
        );
    }

    #[test]
    fn layouts_bound_their_claim_lists() {
        let mut layout = Layout::default();
        assert!(layout.validate().is_ok());
        layout.scopes.clear();
        assert!(layout.validate().unwrap_err().contains("scopes"));
        layout.scopes = vec![name("scope"); MAX_NAMES + 1];
        assert!(layout.validate().unwrap_err().contains("not 9"));
    }
}

//! What a client may say about a signal besides its arguments: the optional `requestOrigin` and
//! `metaData` that newer SailPoint SDKs send with activate, extend and deactivate.
//!
//! jitflow does not interpret them. A signal's command carries them
//! ([`Command::Activate`](crate::lifecycle::Command::Activate), `Extend`, `Deactivate`) and
//! `decide` records them on the event it commits ([`Event::client`](crate::lifecycle::Event)),
//! so they stay in the activation's history for as long as the log does.
//!
//! # Serde forms
//!
//! In a human-readable format (JSON) a [`ClientInfo`] is `{"requestOrigin": "...", "metaData":
//! {...}}`, each field omitted when absent. In a binary format (the store's bincode) it is the
//! pair (`requestOrigin`, `metaData` as compact JSON text), two `Option<String>`, since bincode
//! cannot read a JSON value of unknown shape. Both forms are checked on the way in: a stored
//! or received value that breaks a bound, or carries neither field, does not deserialize.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The longest `requestOrigin`, in characters.
pub const MAX_REQUEST_ORIGIN: usize = 256;
/// The most entries of `metaData` (at its top level).
pub const MAX_META_ENTRIES: usize = 64;
/// The longest `metaData`, as compact JSON text, in bytes.
pub const MAX_META_BYTES: usize = 4096;

/// A signal's `requestOrigin` and `metaData`, as the client sent them; at least one is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    request_origin: Option<String>,
    meta_data: Option<Map<String, Value>>,
}

/// Why a [`ClientInfo`] was refused. The text names the contract's field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `requestOrigin` is empty, too long, or holds a control character.
    #[error("requestOrigin must be 1..={MAX_REQUEST_ORIGIN} characters without control characters")]
    RequestOrigin,
    /// `metaData` has too many entries or is too long as JSON text.
    #[error(
        "metaData must hold at most {MAX_META_ENTRIES} entries and {MAX_META_BYTES} bytes of JSON"
    )]
    MetaData,
}

impl ClientInfo {
    /// What a client said, checked against the bounds above; `None` when it said nothing.
    pub fn new(
        request_origin: Option<String>,
        meta_data: Option<Map<String, Value>>,
    ) -> Result<Option<ClientInfo>, Error> {
        if let Some(origin) = &request_origin
            && (origin.is_empty()
                || origin.chars().count() > MAX_REQUEST_ORIGIN
                || origin.chars().any(char::is_control))
        {
            return Err(Error::RequestOrigin);
        }
        if let Some(meta) = &meta_data
            && (meta.len() > MAX_META_ENTRIES || json_text(meta).len() > MAX_META_BYTES)
        {
            return Err(Error::MetaData);
        }
        if request_origin.is_none() && meta_data.is_none() {
            return Ok(None);
        }
        Ok(Some(ClientInfo {
            request_origin,
            meta_data,
        }))
    }

    /// `requestOrigin`: where the request came from, in the client's words.
    pub fn request_origin(&self) -> Option<&str> {
        self.request_origin.as_deref()
    }

    /// `metaData`: the client's free-form details.
    pub fn meta_data(&self) -> Option<&Map<String, Value>> {
        self.meta_data.as_ref()
    }

    /// `metaData` as compact JSON text (its stored form).
    pub fn meta_data_text(&self) -> Option<String> {
        self.meta_data.as_ref().map(json_text)
    }

    /// Both fields as one line for logs and fingerprints: `requestOrigin="..." metaData={...}`
    /// (empty text for a field not sent).
    pub fn summary(&self) -> String {
        format!(
            "requestOrigin={:?} metaData={}",
            self.request_origin().unwrap_or(""),
            self.meta_data_text().unwrap_or_default()
        )
    }
}

fn json_text(meta: &Map<String, Value>) -> String {
    // A map with string keys always serialises.
    serde_json::to_string(meta).expect("a JSON object always serialises")
}

/// The binary (stored) form. Field order is the file format: never reorder.
#[derive(Serialize, Deserialize)]
struct Stored {
    request_origin: Option<String>,
    meta_data: Option<String>,
}

/// The human-readable form.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Readable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta_data: Option<Map<String, Value>>,
}

impl Serialize for ClientInfo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            Readable {
                request_origin: self.request_origin.clone(),
                meta_data: self.meta_data.clone(),
            }
            .serialize(serializer)
        } else {
            Stored {
                request_origin: self.request_origin.clone(),
                meta_data: self.meta_data_text(),
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ClientInfo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ClientInfo, D::Error> {
        let (origin, meta) = if deserializer.is_human_readable() {
            let r = Readable::deserialize(deserializer)?;
            (r.request_origin, r.meta_data)
        } else {
            let s = Stored::deserialize(deserializer)?;
            let meta = s
                .meta_data
                .map(|text| serde_json::from_str::<Map<String, Value>>(&text))
                .transpose()
                .map_err(|e| D::Error::custom(format!("metaData is not a JSON object: {e}")))?;
            (s.request_origin, meta)
        };
        ClientInfo::new(origin, meta)
            .map_err(D::Error::custom)?
            .ok_or_else(|| D::Error::custom("client info holds neither requestOrigin nor metaData"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(entries: usize, value: &str) -> Map<String, Value> {
        (0..entries)
            .map(|i| (format!("k{i}"), Value::String(value.to_owned())))
            .collect()
    }

    #[test]
    fn nothing_said_is_none_and_each_bound_is_checked() {
        assert_eq!(ClientInfo::new(None, None), Ok(None));
        let origin = |s: &str| ClientInfo::new(Some(s.to_owned()), None);
        assert!(origin("sdk/1.2").unwrap().is_some());
        assert!(origin(&"é".repeat(MAX_REQUEST_ORIGIN)).unwrap().is_some());
        for bad in [
            String::new(),
            "é".repeat(MAX_REQUEST_ORIGIN + 1),
            "a\nb".into(),
        ] {
            assert_eq!(origin(&bad), Err(Error::RequestOrigin), "{bad:?}");
        }
        let with = |m| ClientInfo::new(None, Some(m));
        assert!(
            with(Map::new()).unwrap().is_some(),
            "an empty object is what was sent"
        );
        assert!(with(meta(MAX_META_ENTRIES, "v")).unwrap().is_some());
        assert_eq!(with(meta(MAX_META_ENTRIES + 1, "v")), Err(Error::MetaData));
        assert_eq!(
            with(meta(1, &"x".repeat(MAX_META_BYTES))),
            Err(Error::MetaData)
        );
    }

    #[test]
    fn both_serde_forms_round_trip_and_refuse_what_new_refuses() {
        let mut m = meta(2, "v");
        m.insert(
            "nested".into(),
            serde_json::json!({"a": [1, 2.5, null, true]}),
        );
        let info = ClientInfo::new(Some("portal".into()), Some(m))
            .unwrap()
            .unwrap();
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["requestOrigin"], "portal");
        assert_eq!(json["metaData"]["nested"]["a"][1], 2.5);
        assert_eq!(serde_json::from_value::<ClientInfo>(json).unwrap(), info);
        let only_meta = ClientInfo::new(None, Some(Map::new())).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&only_meta).unwrap(),
            r#"{"metaData":{}}"#
        );
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"requestOrigin": ""}),
            serde_json::json!({"requestOrigin": "x", "other": 1}),
            serde_json::json!({"metaData": [1]}),
        ] {
            assert!(
                serde_json::from_value::<ClientInfo>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}

//! Paths in state files (journals, done records) whatever bytes they hold.
//!
//! A path that is valid UTF-8 is stored as a JSON string (as before); any other path is
//! stored as `{"unix_bytes_hex": "..."}`, so a file named `bad\xffname.mp4` round-trips
//! exactly instead of failing to serialize.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Text(String),
    Bytes { unix_bytes_hex: String },
}

/// `#[serde(serialize_with)]` for a path.
pub(crate) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    match path.to_str() {
        Some(text) => Stored::Text(text.to_string()),
        None => Stored::Bytes { unix_bytes_hex: hex::encode(path.as_os_str().as_encoded_bytes()) },
    }
    .serialize(s)
}

/// `#[serde(deserialize_with)]` for a path.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    match Stored::deserialize(d)? {
        Stored::Text(text) => Ok(PathBuf::from(text)),
        Stored::Bytes { unix_bytes_hex } => {
            let bytes = hex::decode(&unix_bytes_hex).map_err(serde::de::Error::custom)?;
            #[cfg(unix)]
            {
                use std::os::unix::ffi::OsStringExt;
                Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
            }
            #[cfg(not(unix))]
            {
                Ok(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super")]
        p: std::path::PathBuf,
    }

    #[test]
    fn any_bytes_round_trip() {
        for raw in [&b"/tmp/plain.mp4"[..], &b"/tmp/bad\xffname.mp4"[..]] {
            let t = T { p: std::ffi::OsStr::from_bytes(raw).into() };
            let text = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<T>(&text).unwrap(), t, "{text}");
        }
        assert_eq!(serde_json::to_string(&T { p: "/a".into() }).unwrap(), r#"{"p":"/a"}"#);
    }
}

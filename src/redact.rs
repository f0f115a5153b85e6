//! Keeping secrets out of output: tokens and the signature part of presigned URLs.

use std::fmt;

/// A secret string (a token) whose `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret; surrounding whitespace (a token command's newline) is trimmed.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into().trim().to_string())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Read from text as is (a configuration file's value), trimmed like [`Secret::new`].
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(Secret::new)
    }
}

/// Written as `***`, like `Debug` and `Display`: serializing a structure never reveals it.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A command-line value parser (`#[arg(value_parser = parse_secret)]`): the value goes
/// straight into a [`Secret`] and never sits in a plain `String`.
pub fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL shown without its query string (where presigned URLs keep their signature) and
/// without user info.
pub struct SafeUrl<'a>(pub &'a str);

impl fmt::Display for SafeUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&safe_url(self.0))
    }
}

/// The URL without query, fragment and credentials.
pub fn safe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            let _ = u.set_username("");
            let mut s = u.to_string();
            if had_query {
                s.push_str("?…");
            }
            s
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or("").to_string(),
    }
}

/// Removes every occurrence of the given secrets from a text (server messages may echo them).
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "***");
        }
    }
    // Presigned URLs echoed in an error body: drop their signatures.
    if let Some(i) = out.find("X-Amz-Signature=") {
        let end =
            out[i..].find(|c: char| c == '&' || c == '"' || c == '<' || c.is_whitespace()).map_or(out.len(), |e| i + e);
        out.replace_range(i..end, "X-Amz-Signature=***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_hidden() {
        let s = Secret::new("abc123\n");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "abc123");
    }

    #[test]
    fn url_without_signature() {
        let u = "https://user:pw@s3.example.com/b/k%2Fx?partNumber=1&X-Amz-Signature=deadbeef";
        assert_eq!(safe_url(u), "https://s3.example.com/b/k%2Fx?…");
        assert_eq!(
            scrub("bad url ...?X-Amz-Signature=deadbeef&x=1 token tok-1234", &["tok-1234"]),
            "bad url ...?X-Amz-Signature=***&x=1 token ***"
        );
    }
}

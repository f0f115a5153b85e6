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
    // Presigned URLs (or upload forms) echoed in an error body: drop their signatures.
    redact_signatures(&out)
}

/// Every signature value in `text` replaced by `***`, in any case: `X-Amz-Signature=...`
/// (query strings, also URL-encoded as `X-Amz-Signature%3D...`), the older `Signature=...`,
/// and a form field `"x-amz-signature": "..."` (JSON).
fn redact_signatures(text: &str) -> String {
    // ASCII lower-casing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(found) = lower[from..].find("signature") {
        let after = from + found + "signature".len();
        let rest = &lower[after..];
        let value = if rest.starts_with('=') {
            Some(after + 1)
        } else if rest.starts_with("%3d") {
            Some(after + 3)
        } else if let Some(r) = rest.strip_prefix('"') {
            // `"...signature": "VALUE"`
            let r2 = r.trim_start();
            r2.strip_prefix(':').map(str::trim_start).filter(|v| v.starts_with('"')).map(|v| lower.len() - v.len() + 1)
        } else {
            None
        };
        let Some(start) = value else {
            from = after;
            continue;
        };
        let end = text[start..]
            .find(|c: char| matches!(c, '&' | '"' | '\'' | '<' | ',' | ';' | ')' | '}') || c.is_whitespace())
            .map_or(text.len(), |e| start + e);
        out.push_str(&text[copied..start]);
        out.push_str("***");
        copied = end;
        from = end.max(after);
    }
    out.push_str(&text[copied..]);
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

    /// Every signature in a text, in any case and any spelling, is redacted.
    #[test]
    fn every_signature_is_redacted() {
        let text = "first https://s3/b/k?X-Amz-Signature=aaaa1111&partNumber=1 \
                    second <Url>https://s3/b/k?x-amz-signature=bbbb2222</Url> \
                    third X-AMZ-SIGNATURE=cccc3333, encoded X-Amz-Signature%3Ddddd4444&next \
                    v2 ?Signature=eeee5555&Expires=1 \
                    form {\"x-amz-signature\": \"ffff6666\", \"key\": \"k\"} \
                    code SignatureDoesNotMatch stays";
        let out = scrub(text, &[]);
        for secret in ["aaaa1111", "bbbb2222", "cccc3333", "dddd4444", "eeee5555", "ffff6666"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert_eq!(out.matches("***").count(), 6, "{out}");
        assert!(out.contains("&partNumber=1") && out.contains("SignatureDoesNotMatch stays"), "{out}");
        assert!(out.contains("\"x-amz-signature\": \"***\", \"key\": \"k\""), "{out}");
        assert_eq!(scrub("no secret here", &[]), "no secret here");
        assert_eq!(scrub("Signature=", &[]), "Signature=***");
    }
}

//! S3's XML error bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for an XML element.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A fresh request id, as S3 puts in `x-amz-request-id` and error bodies.
pub fn request_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string().to_ascii_uppercase();
    id[..16].to_string()
}

/// An S3 error: `<Error><Code>…</Code><Message>…</Message>…<RequestId>…</RequestId></Error>`.
pub fn error(status: u16, code: &str, message: &str, extra: &[(&str, String)]) -> Response {
    let rid = request_id();
    let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
    body.push_str(&format!("<Code>{}</Code><Message>{}</Message>", escape(code), escape(message)));
    for (k, v) in extra {
        body.push_str(&format!("<{k}>{}</{k}>", escape(v)));
    }
    body.push_str(&format!("<RequestId>{rid}</RequestId><HostId>emulator</HostId></Error>"));
    let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-amz-request-id", v);
    }
    h.insert(header::SERVER, HeaderValue::from_static("AmazonS3"));
    resp
}

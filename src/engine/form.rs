//! The one `multipart/form-data` writer: text fields, then one file part streamed from the file,
//! with an exact `Content-Length` known before the first byte is sent. Used by the S3 POST
//! form upload ([`super::post`], Uplift) and by Apertur's image upload.
//!
//! - The head (every field, then the file part's headers) and the tail (the closing boundary)
//!   are small buffers; the file's bytes are streamed between them with positional reads, so
//!   memory stays at a few read buffers whatever the file size.
//! - Names and file names in `Content-Disposition` are escaped by one rule, [`escape_param`]:
//!   the browsers' (WHATWG HTML, "multipart/form-data encoding algorithm": `"` → `%22`, CR →
//!   `%0D`, LF → `%0A`), and a backslash → `%5C`, because a server that reads the parameter as
//!   an RFC 2616 quoted-string (multer among them) would take `\"` for an escaped quote.
//! - The boundary is random and checked against every field, so no value can end a part early.
//! - The body is built anew for each attempt ([`Framing::body`]), from the file's first byte.

use bytes::Bytes;
use futures::StreamExt;

use super::checksum::CrcSlot;
use super::ratelimit::RateLimit;
use super::source::FileSource;

/// The file part of a form.
#[derive(Clone, Debug)]
pub(crate) struct FilePart {
    /// The form field name (S3: `file`).
    pub field: String,
    /// `filename` in its `Content-Disposition`.
    pub file_name: String,
    /// Its `Content-Type` header.
    pub content_type: String,
}

/// The framing of a form around the file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Framing {
    /// The boundary (without the leading `--`).
    pub boundary: String,
    /// Every field, then the file part's headers.
    pub head: Bytes,
    /// `\r\n--boundary--\r\n`.
    pub tail: Bytes,
    /// head + file + tail.
    pub content_length: u64,
}

impl Framing {
    /// The `Content-Type` header of the request.
    pub(crate) fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The request body: head, the whole of `source` (its size must be the one framed) read
    /// under the run's bandwidth limit `rate`, tail. `on_chunk` is called with the size of each
    /// piece of the file as it is read for sending (progress); `crc` gets the CRC-64/NVME of
    /// the file's bytes once the last of them is handed out.
    pub(crate) fn body(
        &self,
        source: &FileSource,
        rate: RateLimit,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
        crc: CrcSlot,
    ) -> reqwest::Body {
        let head = futures::stream::once(futures::future::ready(Ok::<_, std::io::Error>(self.head.clone())));
        let tail = futures::stream::once(futures::future::ready(Ok::<_, std::io::Error>(self.tail.clone())));
        let file = source.body_stream(0, source.size(), rate, on_chunk, crc);
        reqwest::Body::wrap_stream(head.chain(file).chain(tail))
    }
}

/// A name or file name in a `Content-Disposition` parameter: `"` → `%22`, CR → `%0D`, LF →
/// `%0A` (as browsers send them), `\` → `%5C`. Everything else, UTF-8 included, is kept.
pub(crate) fn escape_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("%22"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            '\\' => out.push_str("%5C"),
            c => out.push(c),
        }
    }
    out
}

/// Frames `fields` and the file part around a file of `file_size` bytes with `boundary`.
pub(crate) fn framing(fields: &[(String, String)], file: &FilePart, file_size: u64, boundary: &str) -> Framing {
    let mut head = String::new();
    for (name, value) in fields {
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
            escape_param(name)
        ));
    }
    head.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
        escape_param(&file.field),
        escape_param(&file.file_name),
        file.content_type.replace(['\r', '\n'], " ")
    ));
    let tail = format!("\r\n--{boundary}--\r\n");
    let content_length = head.len() as u64 + file_size + tail.len() as u64;
    Framing { boundary: boundary.to_string(), head: Bytes::from(head), tail: Bytes::from(tail), content_length }
}

/// A random boundary that occurs in no field name or value.
pub(crate) fn boundary_for(fields: &[(String, String)]) -> String {
    use rand::Rng;
    loop {
        let b = format!("----upload-{:032x}", rand::thread_rng().r#gen::<u128>());
        if !fields.iter().any(|(k, v)| k.contains(&b) || v.contains(&b)) {
            return b;
        }
    }
}

/// [`framing`] with a fresh [`boundary_for`] the fields.
pub(crate) fn form(fields: &[(String, String)], file: &FilePart, file_size: u64) -> Framing {
    framing(fields, file, file_size, &boundary_for(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_browsers_do_and_backslashes_too() {
        for (name, escaped) in [
            ("plain name.jpg", "plain name.jpg"),
            ("say \"hi\".jpg", "say %22hi%22.jpg"),
            ("a\r\nb", "a%0D%0Ab"),
            ("c:\\dir\\x.mov", "c:%5Cdir%5Cx.mov"),
            ("trailing\\", "trailing%5C"),
            ("ünï €.png", "ünï €.png"),
        ] {
            assert_eq!(escape_param(name), escaped, "{name:?}");
        }
    }

    #[test]
    fn framing_is_exact() {
        let fields =
            vec![("key".to_string(), "a/b.mov".to_string()), ("x\"y".to_string(), "line1\r\nline2".to_string())];
        let file = FilePart {
            field: "file".into(),
            file_name: "swing \"1\"\\.mov".into(),
            content_type: "video/quicktime".into(),
        };
        let f = framing(&fields, &file, 5, "BOUND");
        let mut body = f.head.to_vec();
        body.extend_from_slice(b"HELLO");
        body.extend_from_slice(&f.tail);
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            "--BOUND\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\na/b.mov\r\n\
             --BOUND\r\nContent-Disposition: form-data; name=\"x%22y\"\r\n\r\nline1\r\nline2\r\n\
             --BOUND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"swing %221%22%5C.mov\"\r\nContent-Type: video/quicktime\r\n\r\n\
             HELLO\r\n--BOUND--\r\n"
        );
        assert_eq!(f.content_length, body.len() as u64);
        assert_eq!(f.content_type(), "multipart/form-data; boundary=BOUND");
    }

    #[test]
    fn boundary_avoids_field_values() {
        let b = boundary_for(&[("k".into(), "v".into())]);
        assert!(b.starts_with("----upload-") && b.len() == 11 + 32, "{b}");
        assert_ne!(b, boundary_for(&[]));
    }

    /// The body as sent, read back by multer (the parser of the emulator): the file name
    /// escaped, the file's bytes exact, the length exact, progress = the file's size.
    #[tokio::test]
    async fn the_streamed_body_parses_with_its_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let source = FileSource::open(&path).unwrap();
        let fields = vec![("key".to_string(), "k/1".to_string())];
        let part = FilePart { field: "file".into(), file_name: "a\"b\\c.bin".into(), content_type: "x/y".into() };
        let f = form(&fields, &part, source.size());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = seen.clone();
        let crc = CrcSlot::new();
        let body = f.body(
            &source,
            RateLimit::off(),
            move |n| {
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            },
            crc.clone(),
        );
        // Read as a connection reads it: each frame copied out and dropped before the next (the
        // file's pieces come one at a time: collecting them whole would wait for itself).
        let mut body = std::pin::pin!(body);
        let mut bytes = Vec::new();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            bytes.extend_from_slice(frame.unwrap().data_ref().expect("data"));
        }
        assert_eq!(bytes.len() as u64, f.content_length);
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), data.len() as u64);
        assert_eq!(crc.get(), Some(crate::engine::checksum::crc64nvme(&data)), "the CRC of the file's bytes only");
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(bytes)) });
        let mut m = multer::Multipart::new(stream, f.boundary.clone());
        let key = m.next_field().await.unwrap().unwrap();
        assert_eq!((key.name(), key.file_name()), (Some("key"), None));
        assert_eq!(key.text().await.unwrap(), "k/1");
        let file = m.next_field().await.unwrap().unwrap();
        assert_eq!((file.name(), file.file_name()), (Some("file"), Some("a%22b%5Cc.bin")));
        assert_eq!(file.bytes().await.unwrap().as_ref(), &data[..]);
        assert!(m.next_field().await.unwrap().is_none());
    }
}

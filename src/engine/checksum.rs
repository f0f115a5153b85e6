//! The receipt of an upload: the CRC-64/NVME of the bytes sent, the full-object checksum S3
//! keeps of every object and shows as `x-amz-checksum-crc64nvme` (base64 of the 8 bytes,
//! big-endian), so anyone with access to the object can compare it with what was sent.
//!
//! Each part's CRC is computed from the pieces as they are handed to the connection (the
//! attempt that stored the part counts, see [`CrcSlot`]), journaled with the part, and the
//! parts' CRCs are combined in order ([`combine`]) into the file's: no second read of the file.
//! A part journaled by a version that did not keep its CRC is read again locally
//! ([`whole_file`]).

use std::sync::{Arc, Mutex};

use crc_fast::CrcAlgorithm::Crc64Nvme;

use super::source::{FileSource, READ_CHUNK};

/// A CRC-64/NVME computed piece by piece.
#[derive(Clone, Copy, Debug)]
pub struct Crc64(crc_fast::Digest);

impl Default for Crc64 {
    fn default() -> Self {
        Crc64(crc_fast::Digest::new(Crc64Nvme))
    }
}

impl Crc64 {
    /// Takes the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The CRC of the bytes taken so far.
    pub fn value(&self) -> u64 {
        self.0.finalize()
    }
}

/// The CRC-64/NVME of `bytes`.
pub fn crc64nvme(bytes: &[u8]) -> u64 {
    crc_fast::checksum(Crc64Nvme, bytes)
}

/// CRC-64/NVME's polynomial, reflected (the register shifts right).
const POLY_REFLECTED: u64 = 0x9a6c_9329_ac4b_c9b5;

/// A linear operator on the 64-bit CRC register over GF(2): column `n` is the image of bit `n`.
type Operator = [u64; 64];

fn apply(op: &Operator, mut v: u64) -> u64 {
    let mut out = 0;
    let mut i = 0;
    while v != 0 {
        if v & 1 == 1 {
            out ^= op[i];
        }
        v >>= 1;
        i += 1;
    }
    out
}

/// `a` after `b`.
fn compose(a: &Operator, b: &Operator) -> Operator {
    std::array::from_fn(|n| apply(a, b[n]))
}

/// The operator that feeds `len` zero bytes through the register (zlib's `crc32_combine`
/// method, as operators: one built per length, then each combination is 64 XORs at most;
/// crc-fast's combine rebuilds it every time, about a millisecond each, 13 s for 10,000 parts).
fn zeros(len: u64) -> Operator {
    let mut bit: Operator = std::array::from_fn(|n| if n == 0 { POLY_REFLECTED } else { 1u64 << (n - 1) });
    for _ in 0..3 {
        bit = compose(&bit, &bit);
    }
    // `bit` now feeds one zero byte; square it along the bits of `len`.
    let (mut power, mut len) = (bit, len);
    let mut out: Operator = std::array::from_fn(|n| 1u64 << n);
    while len != 0 {
        if len & 1 == 1 {
            out = compose(&power, &out);
        }
        len >>= 1;
        if len != 0 {
            power = compose(&power, &power);
        }
    }
    out
}

/// The CRC of `a`'s bytes followed by `b`'s, from `a`'s CRC, `b`'s CRC and `b`'s length (the
/// init and final XOR of CRC-64/NVME being equal, they cancel out as in zlib's combine).
pub fn combine(a: u64, b: u64, b_len: u64) -> u64 {
    if b_len == 0 { a } else { apply(&zeros(b_len), a) ^ b }
}

/// The CRC of consecutive pieces given as (CRC, length), in order (0, the CRC of no bytes,
/// for none). The operator of each length is built once: parts of one size cost 64 XORs each.
pub fn combine_all(pieces: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    let mut ops: Vec<(u64, Operator)> = vec![];
    pieces.into_iter().fold(0, |acc, (crc, len)| {
        if len == 0 {
            return acc;
        }
        let op = match ops.iter().find(|(l, _)| *l == len) {
            Some((_, op)) => op,
            None => {
                ops.push((len, zeros(len)));
                &ops.last().expect("just pushed").1
            }
        };
        apply(op, acc) ^ crc
    })
}

/// A CRC as S3 shows it: base64 of its 8 bytes, big-endian (`x-amz-checksum-crc64nvme`).
pub fn to_base64(crc: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Where a streamed body leaves the CRC of the bytes it handed out, once it handed out the
/// last of them. Each attempt of a request has its own: the one that stored the bytes is read.
#[derive(Clone, Debug, Default)]
pub struct CrcSlot(Arc<Mutex<Option<u64>>>);

impl CrcSlot {
    /// A new, empty slot.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the CRC of the whole body.
    pub fn set(&self, crc: u64) {
        *self.0.lock().expect("crc slot") = Some(crc);
    }
    /// The CRC of the whole body, once the body's last byte was handed out.
    pub fn get(&self) -> Option<u64> {
        *self.0.lock().expect("crc slot")
    }
}

/// The CRC of `[offset, offset + len)` of `source`, read locally (for a part an older journal
/// kept without one). Blocking: call from a blocking context.
pub fn read_range(source: &FileSource, offset: u64, len: u64) -> std::io::Result<u64> {
    let mut crc = Crc64::default();
    let mut done = 0;
    while done < len {
        let n = (len - done).min(READ_CHUNK as u64) as usize;
        let bytes = source.read_exact_at(offset + done, n)?;
        crc.update(&bytes);
        done += n as u64;
    }
    Ok(crc.value())
}

/// The file's CRC from its parts' (CRC if known, offset, length), in order: the known
/// ones as they are, the others read again from `source` (off the async workers).
pub async fn whole_file(source: &FileSource, parts: Vec<(Option<u64>, u64, u64)>) -> std::io::Result<u64> {
    let missing = parts.iter().any(|(crc, _, _)| crc.is_none());
    if !missing {
        return Ok(combine_all(parts.into_iter().map(|(crc, _, len)| (crc.unwrap_or_default(), len))));
    }
    let source = source.clone();
    tokio::task::spawn_blocking(move || {
        let mut known = Vec::with_capacity(parts.len());
        for (crc, offset, len) in parts {
            let crc = match crc {
                Some(c) => c,
                None => read_range(&source, offset, len)?,
            };
            known.push((crc, len));
        }
        Ok(combine_all(known))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// S3's refusals of a body whose checksum does not match one the request's signer put in
/// (`BadDigest` is also S3's answer to a `Content-MD5` that does not match the bytes).
pub const SIGNED_CHECKSUM_CODES: [&str; 3] = ["BadDigest", "XAmzContentChecksumMismatch", "HeadersNotSigned"];

/// The checksum a vendor signed into a presigned URL or a POST form: the query parameters or
/// form fields `x-amz-checksum-*` (their names), `x-amz-sdk-checksum-algorithm` (with the
/// algorithm named), and such headers among `X-Amz-SignedHeaders`; comma-separated, empty when
/// none. Values of checksums and signatures are never included.
pub fn signed_checksum(url: &str, fields: &[(String, String)]) -> String {
    let mut out: Vec<String> = vec![];
    let mut add = |name: &str, value: &str| {
        let lower = name.to_ascii_lowercase();
        let item = if lower == "x-amz-sdk-checksum-algorithm" {
            format!("{lower}={}", value.chars().filter(char::is_ascii_alphanumeric).take(16).collect::<String>())
        } else if lower.starts_with("x-amz-checksum-") {
            lower
        } else if lower == "x-amz-signedheaders" {
            for h in value.split(';').map(str::trim).filter(|h| {
                let h = h.to_ascii_lowercase();
                h.starts_with("x-amz-checksum-") || h == "x-amz-sdk-checksum-algorithm"
            }) {
                let item = format!("signed header {}", h.to_ascii_lowercase());
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            return;
        } else {
            return;
        };
        if !out.contains(&item) {
            out.push(item);
        }
    };
    if let Ok(u) = url::Url::parse(url) {
        for (k, v) in u.query_pairs() {
            add(&k, &v);
        }
    }
    for (k, v) in fields {
        add(k, v);
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_a_url_signs_in_is_named_without_values() {
        let url = "https://b.s3.amazonaws.com/k?partNumber=1&uploadId=u&x-amz-checksum-crc32=AAAAAA%3D%3D\
                   &x-amz-sdk-checksum-algorithm=CRC32&X-Amz-SignedHeaders=host%3Bx-amz-checksum-crc32&X-Amz-Signature=SECRET";
        let s = signed_checksum(url, &[]);
        assert_eq!(s, "x-amz-checksum-crc32, x-amz-sdk-checksum-algorithm=CRC32, signed header x-amz-checksum-crc32");
        assert!(!s.contains("SECRET") && !s.contains("AAAA"));
        assert_eq!(signed_checksum("https://b/k?partNumber=1&X-Amz-SignedHeaders=host&X-Amz-Signature=s", &[]), "");
        let fields = vec![("X-Amz-Checksum-Algorithm".to_string(), "CRC32".to_string())];
        assert_eq!(signed_checksum("https://b/", &fields), "x-amz-checksum-algorithm");
    }

    /// The check value of the CRC-64/NVME catalogue entry, S3's form of it, and the combine.
    #[test]
    fn known_values_and_the_combination_of_pieces() {
        assert_eq!(crc64nvme(b"123456789"), 0xae8b_1486_0a79_9888);
        assert_eq!(crc64nvme(b""), 0);
        assert_eq!(to_base64(0xae8b_1486_0a79_9888), "rosUhgp5mIg=");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let whole = crc64nvme(&data);
        for cuts in [vec![0, 100_000], vec![0, 1, 100_000], vec![0, 40_000, 40_000, 99_999, 100_000]] {
            let pieces = cuts.windows(2).map(|w| (crc64nvme(&data[w[0]..w[1]]), (w[1] - w[0]) as u64));
            assert_eq!(combine_all(pieces), whole, "{cuts:?}");
        }
        let mut d = Crc64::default();
        d.update(&data[..5]);
        d.update(&data[5..]);
        assert_eq!(d.value(), whole);
        // The same as crc-fast's own combine, for lengths far past the data's.
        for (a, b, len) in [(1u64, 2u64, 1u64), (u64::MAX, 0x1234, 8 << 20), (0xdead_beef, 7, 5_000_000_123)] {
            assert_eq!(combine(a, b, len), crc_fast::checksum_combine(Crc64Nvme, a, b, len), "{len}");
        }
    }
}

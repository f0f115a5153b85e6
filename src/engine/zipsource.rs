//! A stored zip of a directory's images that exists only as a table of entries.
//!
//! A stored (uncompressed) zip is fully determined by its entries (name, size, time, CRC-32)
//! before a single data byte is written, so its exact length and the bytes of any range are
//! known in advance. [`VirtualZip`] answers positional reads of any range of that archive by
//! encoding the local headers, the central directory and the end records it covers on the fly
//! and reading the image bytes from the image files: nothing is ever written to disk.
//!
//! Layout: for each entry, a local header (no data descriptor: the CRC is known) and the
//! image's bytes; then the central directory; then, when the archive needs it, the ZIP64 end
//! record and locator; then the end of central directory record. ZIP64 extra fields are
//! written for an entry whose size reaches 0xFFFF_FFFF (local and central headers) or whose
//! local header starts at or past that offset (central header); the ZIP64 end records when the
//! entry count reaches 0xFFFF or the central directory starts or spans past 0xFFFF_FFFF.
//!
//! Every read of an image checks that the file still has the size and modification time the
//! table has, and the CRC-32 of each image is computed again from the bytes as they are read
//! (pieces combined in order): a change is remembered ([`VirtualZip::failure`]) and fails the
//! read, so an archive whose CRC lies is never completed.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_SIG: u32 = 0x0605_4b50;
const U32_MAX: u64 = 0xFFFF_FFFF;
const U16_MAX: u64 = 0xFFFF;
/// Version made by: Unix (3), spec 4.5.
const MADE_BY: u16 = (3 << 8) | 45;
/// Regular file, rw-r--r--, in the high half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100644 << 16;
/// General-purpose flag bit 11: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;

/// One image of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    /// Name in the archive: the path relative to the directory, `/`-separated.
    pub name: String,
    /// The image file.
    pub path: PathBuf,
    /// Size in bytes when the table was made.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (0 before it or when unknown).
    pub mtime_ns: u128,
    /// CRC-32 of the bytes (known after [`VirtualZip::compute_crcs`] or from a saved table).
    pub crc: Option<u32>,
}

impl ZipEntry {
    /// Reads the size and modification time of `path` (stored as `name`).
    pub fn stat(name: String, path: PathBuf) -> Result<Self> {
        let meta = std::fs::metadata(&path).map_err(|e| Error::File { path: path.clone(), source: e })?;
        Ok(ZipEntry { name, path, size: meta.len(), mtime_ns: mtime_ns(meta.modified().ok()), crc: None })
    }

    fn zip64_size(&self) -> bool {
        self.size >= U32_MAX
    }

    fn local_len(&self) -> u64 {
        30 + self.name.len() as u64 + if self.zip64_size() { 20 } else { 0 }
    }

    fn dos_time(&self) -> (u16, u16) {
        use chrono::{Datelike, Timelike};
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(self.mtime_ns.min(u64::MAX as u128) as u64);
        let when = chrono::DateTime::<chrono::Utc>::from(t).naive_utc();
        let year = when.year().clamp(1980, 2107) as u16;
        let time = ((when.hour() as u16) << 11) | ((when.minute() as u16) << 5) | (when.second() as u16 / 2);
        let date = ((year - 1980) << 9) | ((when.month() as u16) << 5) | when.day() as u16;
        (time, date)
    }

    fn flags(&self) -> u16 {
        if self.name.is_ascii() { 0 } else { FLAG_UTF8 }
    }
}

/// Nanoseconds since the epoch of a modification time (0 when unknown or before 1970).
pub fn mtime_ns(t: Option<SystemTime>) -> u128 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

/// Where each entry sits in the archive.
#[derive(Clone, Copy, Debug)]
struct Placed {
    local_offset: u64,
    /// Offset of its central header from the start of the central directory.
    central_offset: u64,
}

/// Pieces of an image read so far, by start offset within the image: `(end, CRC state)`.
type Pieces = BTreeMap<u64, (u64, crc32fast::Hasher)>;

/// A stored zip that exists only as a table of entries (see the module documentation).
#[derive(Debug)]
pub struct VirtualZip {
    dir: PathBuf,
    entries: Vec<ZipEntry>,
    placed: Vec<Placed>,
    cd_offset: u64,
    cd_size: u64,
    end: Vec<u8>,
    size: u64,
    pieces: Mutex<HashMap<usize, Pieces>>,
    failure: Mutex<Option<(String, String)>>,
}

impl VirtualZip {
    /// Lays out the archive of `entries` (in this order) of the directory `dir`. The CRCs
    /// may still be unknown: the layout does not depend on them.
    pub fn new(dir: &Path, entries: Vec<ZipEntry>) -> Self {
        let mut placed = Vec::with_capacity(entries.len());
        let mut offset = 0u64;
        let mut central = 0u64;
        for e in &entries {
            placed.push(Placed { local_offset: offset, central_offset: central });
            central += central_len(e, offset);
            offset += e.local_len() + e.size;
        }
        let mut zip = VirtualZip {
            dir: dir.to_path_buf(),
            entries,
            placed,
            cd_offset: offset,
            cd_size: central,
            end: vec![],
            size: 0,
            pieces: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        };
        zip.end = zip.end_records();
        zip.size = zip.cd_offset + zip.cd_size + zip.end.len() as u64;
        zip
    }

    /// The directory the images are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The entries, in archive order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }
    /// Exact size of the archive in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Whether the archive carries ZIP64 end records (65,535 entries or more, or a central
    /// directory at or past 4 GiB).
    pub fn is_zip64(&self) -> bool {
        self.entries.len() as u64 >= U16_MAX || self.cd_offset >= U32_MAX || self.cd_size >= U32_MAX
    }
    /// The newest modification time of the images.
    pub fn newest_mtime(&self) -> u128 {
        self.entries.iter().map(|e| e.mtime_ns).max().unwrap_or(0)
    }
    /// Total bytes of the images.
    pub fn image_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// SHA-256 (hex) of the entry table (names, sizes, modification times): the archive's
    /// identity for resuming and for "already uploaded". Reads no image.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"bulk-images zip v1\n");
        for e in &self.entries {
            h.update(e.name.as_bytes());
            h.update([0]);
            h.update(e.size.to_le_bytes());
            h.update(e.mtime_ns.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Fills in the CRC-32 of every entry still without one, reading several images at once
    /// on the blocking pool; `on_bytes` is told of the bytes hashed as they are. Stops at
    /// `cancel`. Returns the number of images read.
    pub async fn compute_crcs(
        &mut self,
        parallel: usize,
        on_bytes: impl Fn(u64) + Send + Sync + 'static,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<usize> {
        use futures::StreamExt;
        let on_bytes = std::sync::Arc::new(on_bytes);
        let todo: Vec<(usize, ZipEntry)> =
            self.entries.iter().enumerate().filter(|(_, e)| e.crc.is_none()).map(|(i, e)| (i, e.clone())).collect();
        let count = todo.len();
        let mut results = futures::stream::iter(todo)
            .map(|(i, e)| {
                let on_bytes = on_bytes.clone();
                async move {
                    let r = tokio::task::spawn_blocking(move || crc_of(&e, &*on_bytes))
                        .await
                        .map_err(|e| Error::File { path: "crc".into(), source: std::io::Error::other(e) })?;
                    r.map(|crc| (i, crc))
                }
            })
            .buffer_unordered(parallel.max(1));
        loop {
            tokio::select! {
                next = results.next() => match next {
                    Some(r) => { let (i, crc) = r?; self.entries[i].crc = Some(crc); }
                    None => break,
                },
                _ = cancel.cancelled() => return Err(Error::Interrupted {
                    hint: "run the same command again; the CRC-32 pass starts over".into(),
                }),
            }
        }
        Ok(count)
    }

    /// Reads `buf.len()` bytes of the archive at `offset` (blocking).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.size) {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the zip"));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let want = buf.len() - done;
            let out = &mut buf[done..];
            let n = if pos < self.cd_offset {
                let i = self.placed.partition_point(|p| p.local_offset <= pos) - 1;
                let e = &self.entries[i];
                let start = self.placed[i].local_offset;
                let data = start + e.local_len();
                if pos < data {
                    let header = self.local_header(i);
                    copy_from(&header, (pos - start) as usize, out)
                } else {
                    let at = pos - data;
                    let n = (e.size - at).min(want as u64) as usize;
                    self.read_image(i, at, &mut out[..n])?;
                    n
                }
            } else if pos < self.cd_offset + self.cd_size {
                let rel = pos - self.cd_offset;
                let i = self.placed.partition_point(|p| p.central_offset <= rel) - 1;
                let header = self.central_header(i);
                copy_from(&header, (rel - self.placed[i].central_offset) as usize, out)
            } else {
                copy_from(&self.end, (pos - self.cd_offset - self.cd_size) as usize, out)
            };
            done += n;
        }
        Ok(())
    }

    /// The first change noticed in an image while reading: `(message, hint)`.
    pub fn failure(&self) -> Option<Error> {
        self.failure.lock().expect("zip lock").as_ref().map(|(m, h)| Error::usage(m.clone(), h.clone()))
    }

    /// Fails when an image changed since its CRC-32 was taken: a change noticed while reading,
    /// or a size or modification time that differs now.
    pub fn check_unchanged(&self) -> Result<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        for e in &self.entries {
            let meta = std::fs::metadata(&e.path).map_err(|s| Error::File { path: e.path.clone(), source: s })?;
            if meta.len() != e.size || mtime_ns(meta.modified().ok()) != e.mtime_ns {
                return Err(self.changed(e, "its size or modification time differ"));
            }
        }
        Ok(())
    }

    fn changed(&self, e: &ZipEntry, how: &str) -> Error {
        let message = format!("{} changed after its CRC-32 was taken for the zip ({how})", e.path.display());
        let hint = "leave the images untouched while they upload, then run the command again \
                    (--no-resume starts a new upload of the images as they are now)";
        let mut f = self.failure.lock().expect("zip lock");
        f.get_or_insert_with(|| (message.clone(), hint.into()));
        Error::usage(message, hint)
    }

    fn read_image(&self, i: usize, at: u64, out: &mut [u8]) -> std::io::Result<()> {
        let e = &self.entries[i];
        let fail = |how: &str| std::io::Error::other(self.changed(e, how).to_string());
        let file = File::open(&e.path).map_err(|_| fail("it cannot be opened"))?;
        let meta = file.metadata()?;
        if meta.len() != e.size || mtime_ns(meta.modified().ok()) != e.mtime_ns {
            return Err(fail("its size or modification time differ"));
        }
        super::platform::read_exact_at(&file, out, at).map_err(|_| fail("it is shorter"))?;
        if let Some(crc) = e.crc {
            self.check_piece(i, at, out, crc).map_err(|_| fail("its bytes no longer match the CRC-32"))?;
        }
        Ok(())
    }

    /// Adds a piece read to the image's CRC state; when the pieces cover the whole image, its
    /// CRC-32 is compared with the table's.
    fn check_piece(&self, i: usize, at: u64, bytes: &[u8], expected: u32) -> std::result::Result<(), ()> {
        let size = self.entries[i].size;
        let mut h = crc32fast::Hasher::new();
        h.update(bytes);
        let end = at + bytes.len() as u64;
        if at == 0 && end == size {
            return if h.finalize() == expected { Ok(()) } else { Err(()) };
        }
        let mut all = self.pieces.lock().expect("zip lock");
        let pieces = all.entry(i).or_default();
        let (mut start, mut end, mut h) = (at, end, h);
        // Seen already (a retried read) or overlapping another piece: nothing to learn.
        let covered = pieces.range(..=at).next_back().is_some_and(|(_, (e, _))| *e > at);
        let overlaps = pieces.range(at..end).next().is_some_and(|(&s, _)| s < end);
        if covered || overlaps {
            return Ok(());
        }
        if let Some((&s, &(e, _))) = pieces.range(..at).next_back()
            && e == at
        {
            let (_, mut before) = pieces.remove(&s).expect("present");
            before.combine(&h);
            (start, h) = (s, before);
        }
        if let Some((e, after)) = pieces.remove(&end) {
            h.combine(&after);
            end = e;
        }
        if start == 0 && end == size {
            all.remove(&i);
            return if h.finalize() == expected { Ok(()) } else { Err(()) };
        }
        pieces.insert(start, (end, h));
        Ok(())
    }

    fn local_header(&self, i: usize) -> Vec<u8> {
        let e = &self.entries[i];
        let (time, date) = e.dos_time();
        let mut b = Vec::with_capacity(e.local_len() as usize);
        put32(&mut b, LOCAL_SIG);
        put16(&mut b, if e.zip64_size() { 45 } else { 20 });
        put16(&mut b, e.flags());
        put16(&mut b, 0); // stored
        put16(&mut b, time);
        put16(&mut b, date);
        put32(&mut b, e.crc.unwrap_or(0));
        let size32 = if e.zip64_size() { U32_MAX as u32 } else { e.size as u32 };
        put32(&mut b, size32);
        put32(&mut b, size32);
        put16(&mut b, e.name.len() as u16);
        put16(&mut b, if e.zip64_size() { 20 } else { 0 });
        b.extend_from_slice(e.name.as_bytes());
        if e.zip64_size() {
            put16(&mut b, 0x0001);
            put16(&mut b, 16);
            put64(&mut b, e.size);
            put64(&mut b, e.size);
        }
        b
    }

    fn central_header(&self, i: usize) -> Vec<u8> {
        let e = &self.entries[i];
        let offset = self.placed[i].local_offset;
        let (time, date) = e.dos_time();
        let (big_size, big_offset) = (e.zip64_size(), offset >= U32_MAX);
        let extra = zip64_extra_len(e, offset);
        let mut b = Vec::with_capacity(46 + e.name.len() + extra as usize);
        put32(&mut b, CENTRAL_SIG);
        put16(&mut b, MADE_BY);
        put16(&mut b, if extra > 0 { 45 } else { 20 });
        put16(&mut b, e.flags());
        put16(&mut b, 0);
        put16(&mut b, time);
        put16(&mut b, date);
        put32(&mut b, e.crc.unwrap_or(0));
        let size32 = if big_size { U32_MAX as u32 } else { e.size as u32 };
        put32(&mut b, size32);
        put32(&mut b, size32);
        put16(&mut b, e.name.len() as u16);
        put16(&mut b, extra as u16);
        put16(&mut b, 0); // comment
        put16(&mut b, 0); // disk
        put16(&mut b, 0); // internal attributes
        put32(&mut b, EXTERNAL_ATTRS);
        put32(&mut b, if big_offset { U32_MAX as u32 } else { offset as u32 });
        b.extend_from_slice(e.name.as_bytes());
        if extra > 0 {
            put16(&mut b, 0x0001);
            put16(&mut b, (extra - 4) as u16);
            if big_size {
                put64(&mut b, e.size);
                put64(&mut b, e.size);
            }
            if big_offset {
                put64(&mut b, offset);
            }
        }
        b
    }

    fn end_records(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(22 + 56 + 20);
        let count = self.entries.len() as u64;
        if self.is_zip64() {
            let at = self.cd_offset + self.cd_size;
            put32(&mut b, ZIP64_END_SIG);
            put64(&mut b, 44);
            put16(&mut b, MADE_BY);
            put16(&mut b, 45);
            put32(&mut b, 0);
            put32(&mut b, 0);
            put64(&mut b, count);
            put64(&mut b, count);
            put64(&mut b, self.cd_size);
            put64(&mut b, self.cd_offset);
            put32(&mut b, ZIP64_LOCATOR_SIG);
            put32(&mut b, 0);
            put64(&mut b, at);
            put32(&mut b, 1);
        }
        put32(&mut b, END_SIG);
        put16(&mut b, 0);
        put16(&mut b, 0);
        let count16 = count.min(U16_MAX) as u16;
        put16(&mut b, count16);
        put16(&mut b, count16);
        put32(&mut b, self.cd_size.min(U32_MAX) as u32);
        put32(&mut b, self.cd_offset.min(U32_MAX) as u32);
        put16(&mut b, 0);
        b
    }

    /// Writes the whole archive to `out` (reading it through [`VirtualZip::read_at`], so the
    /// bytes are those an upload sends). Blocking.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        self.write_until(out, || false)
    }

    /// [`VirtualZip::write_to`], stopping with [`std::io::ErrorKind::Interrupted`] as soon as
    /// `stop()` says so (checked before each [`super::source::READ_CHUNK`]).
    pub fn write_until(&self, out: &mut impl std::io::Write, stop: impl Fn() -> bool) -> std::io::Result<()> {
        let mut buf = vec![0u8; super::source::READ_CHUNK];
        let mut pos = 0;
        while pos < self.size {
            if stop() {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"));
            }
            let n = (self.size - pos).min(buf.len() as u64) as usize;
            self.read_at(&mut buf[..n], pos)?;
            out.write_all(&buf[..n])?;
            pos += n as u64;
        }
        Ok(())
    }
}

fn zip64_extra_len(e: &ZipEntry, offset: u64) -> u64 {
    let n = if e.zip64_size() { 2 } else { 0 } + u64::from(offset >= U32_MAX);
    if n == 0 { 0 } else { 4 + 8 * n }
}

fn central_len(e: &ZipEntry, offset: u64) -> u64 {
    46 + e.name.len() as u64 + zip64_extra_len(e, offset)
}

fn copy_from(src: &[u8], from: usize, out: &mut [u8]) -> usize {
    let n = (src.len() - from).min(out.len());
    out[..n].copy_from_slice(&src[from..from + n]);
    n
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// CRC-32 of an image, read in [`super::source::READ_CHUNK`] pieces; fails when the file
/// does not have the size and time of its entry.
fn crc_of(e: &ZipEntry, on_bytes: &(dyn Fn(u64) + Send + Sync)) -> Result<u32> {
    let err = |s| Error::File { path: e.path.clone(), source: s };
    let file = File::open(&e.path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if meta.len() != e.size || mtime_ns(meta.modified().ok()) != e.mtime_ns {
        return Err(Error::usage(
            format!("{} changed while the zip's CRC-32 pass read it", e.path.display()),
            "leave the images untouched while they upload, then run the command again",
        ));
    }
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; super::source::READ_CHUNK.min(e.size.max(1) as usize)];
    let mut at = 0;
    while at < e.size {
        let n = (e.size - at).min(buf.len() as u64) as usize;
        super::platform::read_exact_at(&file, &mut buf[..n], at).map_err(err)?;
        h.update(&buf[..n]);
        on_bytes(n as u64);
        at += n as u64;
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_in_any_order_check_the_crc() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(dir.path().join("a.jpg"), &data).unwrap();
        let mut e = ZipEntry::stat("a.jpg".into(), dir.path().join("a.jpg")).unwrap();
        e.crc = Some(crc32fast::hash(&data));
        let zip = VirtualZip::new(dir.path(), vec![e.clone()]);
        assert!(zip.check_piece(0, 5000, &data[5000..], e.crc.unwrap()).is_ok());
        assert!(zip.check_piece(0, 5000, &data[5000..], e.crc.unwrap()).is_ok(), "a re-read is ignored");
        assert!(zip.check_piece(0, 0, &data[..2000], e.crc.unwrap()).is_ok());
        assert!(zip.check_piece(0, 2000, &data[2000..5000], e.crc.unwrap()).is_ok(), "whole and right");
        let mut bad = data.clone();
        bad[3000] ^= 1;
        assert!(zip.check_piece(0, 0, &bad[..4000], e.crc.unwrap()).is_ok());
        assert!(zip.check_piece(0, 4000, &bad[4000..], e.crc.unwrap()).is_err(), "whole and wrong");
    }
}

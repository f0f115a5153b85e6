//! The file being uploaded: positional reads of byte ranges, streamed as request bodies so
//! memory stays at a few read buffers per part in flight, whatever the part size.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::Stream;

use super::checksum::{Crc64, CrcSlot};
use super::ratelimit::RateLimit;
use super::zipsource::VirtualZip;
use crate::error::{Error, Result};

/// Size of one positional read of a hashing or copying pass (MD5, CRC-32, `--zip-to`).
pub const READ_CHUNK: usize = 1 << 20;

/// Size of one piece of a streamed request body (one positional read into a pooled buffer).
pub const PIECE: usize = 256 << 10;

/// Reads into `buf` at `offset` what the page cache holds, without waiting for the disk
/// (`preadv2` with `RWF_NOWAIT`): returns how many bytes were copied, 0 when the first of
/// them is not in memory (or the kernel or file system cannot tell), and stops short at the
/// first page that is not. Never blocks, so it may run on an async worker.
#[cfg(target_os = "linux")]
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    let mut got = 0;
    while got < buf.len() {
        match preadv2(
            file,
            &mut [std::io::IoSliceMut::new(&mut buf[got..])],
            offset + got as u64,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(Errno::INTR) => continue,
            // Not cached, or no RWF_NOWAIT here (old kernel, some file systems): the blocking read.
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &File, _buf: &mut [u8], _offset: u64) -> std::io::Result<usize> {
    Ok(0)
}

/// Spare buffers a pool keeps; more are freed when given back.
const POOL_SPARE: usize = 64;

/// Read buffers of one source, reused from piece to piece and part to part.
#[derive(Debug)]
struct BufPool {
    /// Size of a new buffer: [`PIECE`], or less for a smaller file.
    piece: usize,
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Buffers allocated so far.
    allocated: std::sync::atomic::AtomicUsize,
}

impl Default for BufPool {
    fn default() -> Self {
        BufPool::for_size(PIECE as u64)
    }
}

impl BufPool {
    /// A pool for a source of `size` bytes: no buffer larger than the source (a small file's
    /// upload would otherwise allocate, and the kernel zero, four times its size).
    fn for_size(size: u64) -> Self {
        let piece = (size.max(1).min(PIECE as u64) as usize).next_multiple_of(4096);
        BufPool { piece, spare: Default::default(), allocated: Default::default() }
    }

    /// A buffer of at least `len` bytes (its contents are those of an earlier read).
    fn take(&self, len: usize) -> Vec<u8> {
        let spare = self.spare.lock().ok().and_then(|mut s| s.pop());
        match spare {
            Some(b) if b.len() >= len => b,
            _ => {
                self.allocated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                vec![0u8; len.max(self.piece)]
            }
        }
    }

    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut s) = self.spare.lock()
            && s.len() < POOL_SPARE
        {
            s.push(buf);
        }
    }
}

/// The bytes of one piece: the first `len` bytes of a pooled buffer, which goes back to its
/// pool when the last `Bytes` of it is dropped.
struct Piece {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufPool>,
    /// Once sent, the page cache this piece's read brought in is dropped (`cache::DropBehind`).
    drop_behind: Option<(Arc<cache::DropBehind>, u64, u64)>,
    /// A request body's turn ([`FileSource::body_stream`]): its next piece is read once this
    /// one is dropped.
    _turn: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
        if let Some((d, at, range_end)) = self.drop_behind.take() {
            d.sent(at, self.len as u64, range_end);
        }
    }
}

/// Not pushing out what the rest of the machine had cached: a large file's upload reads it
/// once, so the pages its reads brought into the page cache are dropped once their bytes went
/// out (`posix_fadvise(POSIX_FADV_DONTNEED)` behind each piece sent), and the pages that were
/// cached before the upload began (a file just written, or in use by another program) are
/// left alone. Linux only: elsewhere nothing is dropped.
mod cache {
    use std::fs::File;
    use std::sync::Arc;

    /// Files smaller than this are left to the kernel (their cache is small; a look at their
    /// pages would cost more than it saves).
    pub(super) const MIN_SIZE: u64 = 64 << 20;

    /// The largest page-cache folio (a PMD, 2 MiB on x86-64 and arm64 with 4 KiB pages): what
    /// a drop is aligned to.
    const FOLIO: u64 = 2 << 20;

    /// Which pages of a file were in the page cache when its upload began (one bit a page).
    pub(super) struct DropBehind {
        file: Arc<File>,
        resident: Vec<u64>,
        page: u64,
    }

    impl std::fmt::Debug for DropBehind {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("DropBehind").field("pages", &(self.resident.len() * 64)).finish()
        }
    }

    impl DropBehind {
        /// Looks at which pages of `file` (of `size` bytes) are cached now; `None` when they
        /// cannot be known (then nothing is dropped).
        #[cfg(target_os = "linux")]
        pub(super) fn of(file: &Arc<File>, size: u64) -> Option<DropBehind> {
            use std::os::fd::AsRawFd;
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let page = u64::try_from(page).ok().filter(|p| p.is_power_of_two())?;
            let len = usize::try_from(size).ok()?;
            let pages = size.div_ceil(page) as usize;
            // SAFETY: a read-only shared mapping of the file that is never read through (mincore
            // only asks which of its pages are resident), unmapped before returning.
            let addr = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
            };
            if addr == libc::MAP_FAILED {
                return None;
            }
            let mut vec = vec![0u8; pages];
            // SAFETY: `vec` holds one byte per page of the mapping.
            let ok = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) } == 0;
            // SAFETY: the mapping made above, of `len` bytes.
            unsafe { libc::munmap(addr, len) };
            if !ok {
                return None;
            }
            let mut resident = vec![0u64; pages.div_ceil(64)];
            for (i, v) in vec.iter().enumerate() {
                if v & 1 == 1 {
                    resident[i / 64] |= 1 << (i % 64);
                }
            }
            Some(DropBehind { file: file.clone(), resident, page })
        }

        #[cfg(not(target_os = "linux"))]
        pub(super) fn of(_file: &Arc<File>, _size: u64) -> Option<DropBehind> {
            None
        }

        pub(super) fn was_resident(&self, page: u64) -> bool {
            let i = page as usize;
            self.resident.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
        }

        /// The bytes `[at, at + len)` of a range (a part) ending at `range_end` went out:
        /// drops the pages that were not cached when the upload began, from the [`FOLIO`]
        /// boundary before `at` (the kernel drops only whole folios, and its readahead makes
        /// them up to 2 MiB: a piece's own range would leave most of them) to the end of the
        /// piece, or to the folio boundary after the range's end for its last piece.
        pub(super) fn sent(&self, at: u64, len: u64, range_end: u64) {
            let mut end = at + len;
            if end >= range_end {
                end = end.next_multiple_of(FOLIO);
            }
            let first = (at - at % FOLIO) / self.page;
            let end = end.div_ceil(self.page);
            let mut p = first;
            while p < end {
                if self.was_resident(p) {
                    p += 1;
                    continue;
                }
                let start = p;
                while p < end && !self.was_resident(p) {
                    p += 1;
                }
                self.advise(start * self.page, (p - start) * self.page);
            }
        }

        #[cfg(target_os = "linux")]
        fn advise(&self, offset: u64, len: u64) {
            if let Some(len) = std::num::NonZeroU64::new(len) {
                let _ = rustix::fs::fadvise(&*self.file, offset, Some(len), rustix::fs::Advice::DontNeed);
            }
        }

        #[cfg(not(target_os = "linux"))]
        fn advise(&self, _offset: u64, _len: u64) {
            let _ = &self.file;
        }
    }
}

/// Fails, without opening it, when `path` is not a regular file (a directory, a FIFO, a
/// socket, a device): opening a FIFO blocks until a writer comes, which may be never.
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|source| Error::File { path: path.to_path_buf(), source })?;
    if meta.is_file() { Ok(()) } else { Err(not_regular(path, &meta)) }
}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> Error {
    let kind = super::platform::kind_of(meta);
    Error::usage(
        format!("{} is {kind}, not a regular file", path.display()),
        "give the path of a regular file (copy a stream to a file first)",
    )
}

/// An open file with its identity at open time.
#[derive(Clone, Debug)]
pub struct FileSource {
    path: PathBuf,
    backend: Backend,
    size: u64,
    mtime: Option<SystemTime>,
    stamp: Stamp,
    pool: Arc<BufPool>,
    /// The page cache to drop behind the pieces sent (a large file, on Linux), looked at once
    /// the first piece is read.
    drop_behind: Arc<std::sync::OnceLock<Option<Arc<cache::DropBehind>>>>,
    /// Who it is for resuming, read once (the run's done-record check and its journal both ask).
    identity: Arc<std::sync::OnceLock<super::journal::FileIdentity>>,
}

/// What a writer cannot put back: the inode change time, the inode and its device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Inode change time, nanoseconds since the epoch (0 = unknown).
    pub ctime_ns: i128,
    /// Inode number (0 = unknown).
    pub ino: u64,
    /// Device of the inode.
    pub dev: u64,
}

impl Stamp {
    /// From file metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
                ino: meta.ino(),
                dev: meta.dev(),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            Stamp::default()
        }
    }
}

/// What the bytes are read from.
#[derive(Clone, Debug)]
enum Backend {
    /// A regular file.
    File(Arc<File>),
    /// A zip of images that exists only as a table of entries.
    Zip(Arc<VirtualZip>),
}

impl FileSource {
    /// The identity computed for this open file, if any ([`super::journal::FileIdentity::of`]).
    pub(crate) fn identity_cell(&self) -> &std::sync::OnceLock<super::journal::FileIdentity> {
        &self.identity
    }

    /// Opens a regular file for reading.
    pub fn open(path: &Path) -> Result<Self> {
        let file_err = |source| Error::File { path: path.to_path_buf(), source };
        // Stat before open: opening a FIFO (or a device) can block forever.
        check_regular(path)?;
        let file = File::open(path).map_err(file_err)?;
        let meta = file.metadata().map_err(file_err)?;
        if !meta.is_file() {
            return Err(not_regular(path, &meta));
        }
        Ok(FileSource {
            path: path.to_path_buf(),
            backend: Backend::File(Arc::new(file)),
            size: meta.len(),
            mtime: meta.modified().ok(),
            stamp: Stamp::of(&meta),
            pool: Arc::new(BufPool::for_size(meta.len())),
            drop_behind: Arc::default(),
            identity: Arc::default(),
        })
    }

    /// The archive of a [`VirtualZip`] (whose CRCs are known), as if it were a file at `path`.
    pub fn virtual_zip(path: &Path, zip: Arc<VirtualZip>) -> Self {
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(zip.newest_mtime() as u64);
        FileSource {
            path: path.to_path_buf(),
            size: zip.size(),
            mtime: Some(mtime),
            stamp: Stamp::default(),
            backend: Backend::Zip(zip),
            pool: Arc::default(),
            drop_behind: Arc::default(),
            identity: Arc::default(),
        }
    }

    /// The virtual zip behind this source, if it is one.
    pub fn as_virtual_zip(&self) -> Option<&Arc<VirtualZip>> {
        match &self.backend {
            Backend::Zip(z) => Some(z),
            Backend::File(_) => None,
        }
    }

    /// A failure noticed while reading that retrying cannot cure (an image of a virtual zip
    /// changed): the part uploader stops with it instead of retrying.
    pub fn failure(&self) -> Option<Error> {
        self.as_virtual_zip().and_then(|z| z.failure())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match &self.backend {
            Backend::File(f) => super::platform::read_exact_at(f, buf, offset),
            Backend::Zip(z) => z.read_at(buf, offset),
        }
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Size in bytes at open time.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Modification time at open time.
    pub fn mtime(&self) -> Option<SystemTime> {
        self.mtime
    }
    /// Inode change time, inode and device at open time.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }
    /// The file name (last path component), lossily as UTF-8.
    pub fn file_name(&self) -> String {
        if let Some(z) = self.as_virtual_zip() {
            let dir = z.dir().file_name().map(|n| n.to_string_lossy().into_owned());
            return format!("{}.zip", dir.unwrap_or_else(|| "images".into()));
        }
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// Reads `len` bytes at `offset` (blocking; call from a blocking context).
    pub fn read_exact_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(len);
        self.read_at(&mut buf, offset)?;
        Ok(buf.freeze())
    }

    /// Reads a range on the blocking pool.
    pub async fn read_range(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_exact_at(offset, len)).await.map_err(std::io::Error::other)?
    }

    /// A stream of the bytes `[offset, offset + len)`, read in [`PIECE`] pieces. `on_chunk` is
    /// told the size of each piece as it is handed to the body.
    ///
    /// Each piece is read into a buffer of the source's pool and handed to the body as `Bytes`
    /// that own that buffer: when the HTTP connection has written the piece out and dropped
    /// it, the buffer goes back to the pool for the next read, of this part or another. So a
    /// read costs no allocation, no zero-filling and no fresh pages to fault in, and the pool
    /// holds what the busiest moment needed (two or three pieces per connection).
    pub fn stream_range(
        &self,
        offset: u64,
        len: u64,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        self.stream_range_limited(offset, len, RateLimit::off(), on_chunk, CrcSlot::new())
    }

    /// [`FileSource::stream_range`] under the run's bandwidth limit: each piece is granted by
    /// `limit` before it is read (pieces of at most a few hundred KiB then). Without a limit
    /// the stream takes no lock and awaits nothing for it.
    ///
    /// The CRC-64/NVME of the pieces is computed as they are handed out and left in `crc`
    /// with the last of them (the receipt, see [`super::checksum`]).
    pub fn stream_range_limited(
        &self,
        offset: u64,
        len: u64,
        limit: RateLimit,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
        crc: CrcSlot,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        self.pieces(offset, len, limit, on_chunk, crc, None)
    }

    /// [`FileSource::stream_range_limited`] for a request body, one piece in memory at a time:
    /// the next piece is read once the HTTP connection has handed the last one to the socket
    /// (or to TLS) and dropped it. hyper otherwise asks for pieces until it holds about
    /// 400 KiB (two pieces) before it writes, and the stream reads a third meanwhile: at
    /// concurrency 8 over https, 20 pieces (5 MiB) of the file were in memory at once. The
    /// socket's own buffer keeps the connection busy while the next piece is read (a copy
    /// from the page cache, or a read on the blocking pool). A consumer that keeps the pieces
    /// it was given (collects them) must not use this stream: it would wait for itself.
    pub(crate) fn body_stream(
        &self,
        offset: u64,
        len: u64,
        limit: RateLimit,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
        crc: CrcSlot,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        self.pieces(offset, len, limit, on_chunk, crc, Some(Arc::new(tokio::sync::Semaphore::new(1))))
    }

    /// The pieces of `[offset, offset + len)`; with `turns`, each waits for a permit that the
    /// piece before gives back when dropped.
    fn pieces(
        &self,
        offset: u64,
        len: u64,
        limit: RateLimit,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
        crc: CrcSlot,
        turns: Option<Arc<tokio::sync::Semaphore>>,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let this = self.clone();
        let on_chunk = Arc::new(on_chunk);
        let limited = limit.is_limited();
        if len == 0 {
            crc.set(0);
        }
        futures::stream::try_unfold((0u64, Crc64::default()), move |(done, mut digest)| {
            let this = this.clone();
            let on_chunk = on_chunk.clone();
            let limit = limit.clone();
            let crc = crc.clone();
            let turns = turns.clone();
            async move {
                if done >= len {
                    return Ok(None);
                }
                let want = (len - done).min(PIECE as u64);
                let n = if limited { limit.take(want).await } else { want } as usize;
                // The semaphore is never closed: a permit always comes once the piece before is dropped.
                let turn = match turns {
                    Some(t) => t.acquire_owned().await.ok(),
                    None => None,
                };
                let bytes = this.read_piece(offset + done, n, offset + len, turn).await?;
                digest.update(&bytes);
                if done + n as u64 >= len {
                    crc.set(digest.value());
                }
                on_chunk(n as u64);
                Ok(Some((bytes, (done + n as u64, digest))))
            }
        })
    }

    /// Reads `n` bytes at `at` into a buffer of the pool, as `Bytes` that give the buffer back
    /// when dropped. The read runs on the blocking pool.
    async fn read_piece(
        &self,
        at: u64,
        n: usize,
        range_end: u64,
        turn: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> std::io::Result<Bytes> {
        // Which pages were cached is looked at before the first read of the upload.
        let drop_behind = self.drop_behind(at, range_end);
        let mut buf = self.pool.take(n);
        // What the page cache holds is copied at once, without the hop to the blocking pool.
        let cached = match &self.backend {
            Backend::File(f) => read_cached(f, &mut buf[..n], at)?,
            _ => 0,
        };
        if cached < n {
            let this = self.clone();
            buf = tokio::task::spawn_blocking(move || {
                this.read_at(&mut buf[cached..n], at + cached as u64).map_err(|e| this.shrunk(e))?;
                Ok::<_, std::io::Error>(buf)
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        Ok(Bytes::from_owner(Piece { buf, len: n, pool: self.pool.clone(), drop_behind, _turn: turn }))
    }

    /// What a piece read at `at` drops behind it once sent: for a large file (on Linux), the
    /// pages the upload brought into the page cache. Which pages were cached is looked at when
    /// the first piece is read (not at open: a file whose upload is skipped costs nothing).
    fn drop_behind(&self, at: u64, range_end: u64) -> Option<(Arc<cache::DropBehind>, u64, u64)> {
        let Backend::File(f) = &self.backend else { return None };
        if self.size < cache::MIN_SIZE {
            return None;
        }
        let d = self.drop_behind.get_or_init(|| cache::DropBehind::of(f, self.size).map(Arc::new));
        d.clone().map(|d| (d, at, range_end))
    }

    /// A read past the end: the file is shorter than when it was opened.
    pub(crate) fn shrunk(&self, e: std::io::Error) -> std::io::Error {
        if e.kind() != std::io::ErrorKind::UnexpectedEof {
            return e;
        }
        let now = std::fs::metadata(&self.path).map(|m| m.len()).ok();
        let what = match now {
            Some(n) => format!("it shrank from {} to {n} bytes while it was being uploaded", self.size),
            None => "it shrank while it was being uploaded".into(),
        };
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what)
    }

    /// MD5 of a range, streamed (for `Content-MD5` when asked).
    pub async fn md5_range(&self, offset: u64, len: u64) -> std::io::Result<[u8; 16]> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            use md5::Digest;
            let mut h = md5::Md5::new();
            let mut buf = vec![0u8; READ_CHUNK];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(READ_CHUNK as u64) as usize;
                this.read_at(&mut buf[..n], offset + done)?;
                h.update(&buf[..n]);
                done += n as u64;
            }
            Ok(h.finalize().into())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Fails when the file changed since it was opened: its size, modification time, inode
    /// change time or inode (a same-size rewrite with the mtime put back still moves the ctime).
    /// Both the open file and the path are checked (the path may now name another file).
    pub fn check_unchanged(&self) -> Result<()> {
        let file = match &self.backend {
            Backend::Zip(z) => return z.check_unchanged(),
            Backend::File(f) => f,
        };
        let err = |source| Error::File { path: self.path.clone(), source };
        let open = file.metadata().map_err(err)?;
        let meta = std::fs::metadata(&self.path).map_err(err)?;
        let same = |m: &std::fs::Metadata| {
            m.len() == self.size && m.modified().ok() == self.mtime && Stamp::of(m) == self.stamp
        };
        if !same(&open) || !same(&meta) {
            return Err(Error::usage(
                format!("{} changed while it was being uploaded", self.path.display()),
                "wait until the file is complete, then run the command again",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn streamed_pieces_are_the_file_bytes_and_their_buffers_are_reused() {
        let data: Vec<u8> = (0..3 * PIECE + 123).map(|i| (i * 7 + i / 1000) as u8).collect();
        let (_dir, path) = file_with(&data);
        let src = FileSource::open(&path).unwrap();
        let (offset, len) = (7u64, 2 * PIECE as u64 + 50);
        let seen = Arc::new(AtomicU64::new(0));
        let counted = seen.clone();
        let pieces: Vec<Bytes> = src
            .stream_range(offset, len, move |n| {
                counted.fetch_add(n, Ordering::Relaxed);
            })
            .try_collect()
            .await
            .unwrap();
        assert!(pieces.iter().all(|p| p.len() <= PIECE), "pieces of at most {PIECE} bytes");
        assert_eq!(pieces.concat(), data[offset as usize..(offset + len) as usize]);
        assert_eq!(seen.load(Ordering::Relaxed), len);
        let first = src.pool.allocated.load(Ordering::Relaxed);
        assert_eq!(first, pieces.len(), "held pieces each have their own buffer");
        drop(pieces);

        // Read one piece at a time (as a connection does): the buffers given back serve again,
        // and bytes read earlier into them do not leak into the next piece.
        let mut stream = Box::pin(src.stream_range(0, data.len() as u64, |_| {}));
        let mut all = vec![];
        while let Some(piece) = stream.try_next().await.unwrap() {
            all.extend_from_slice(&piece);
        }
        assert_eq!(all, data);
        assert_eq!(src.pool.allocated.load(Ordering::Relaxed), first, "no new buffer");
    }

    #[tokio::test]
    async fn a_request_body_holds_one_piece_of_the_file_at_a_time() {
        use futures::FutureExt;
        let data: Vec<u8> = (0..3 * PIECE + 99).map(|i| (i * 13 + i / 777) as u8).collect();
        let (_dir, path) = file_with(&data);
        let src = FileSource::open(&path).unwrap();
        let crc = CrcSlot::new();
        let mut body = Box::pin(src.body_stream(0, data.len() as u64, RateLimit::off(), |_| {}, crc.clone()));
        let first = body.try_next().await.unwrap().expect("a first piece");
        // The next piece waits while the first is held (not sent yet) ...
        for _ in 0..20 {
            assert!(body.try_next().now_or_never().is_none(), "a second piece read while the first is held");
            tokio::task::yield_now().await;
        }
        // ... and comes once it is dropped; the bytes are the file's, in order.
        let mut all = first.to_vec();
        drop(first);
        while let Some(piece) = tokio::time::timeout(std::time::Duration::from_secs(5), body.try_next())
            .await
            .expect("the next piece")
            .unwrap()
        {
            all.extend_from_slice(&piece);
        }
        assert_eq!(all, data);
        assert_eq!(src.pool.allocated.load(Ordering::Relaxed), 1, "one buffer served every piece");
        assert!(crc.get().is_some(), "the CRC of the pieces is left with the last");
    }

    #[tokio::test]
    async fn a_file_that_shrank_while_streaming_is_an_end_of_file_that_says_so() {
        let data = vec![5u8; 2 * PIECE];
        let (_dir, path) = file_with(&data);
        let src = FileSource::open(&path).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(PIECE as u64 + 10).unwrap();
        let err = src.stream_range(0, data.len() as u64, |_| {}).try_collect::<Vec<Bytes>>().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("shrank from 524288 to 262154 bytes"), "{err}");
    }

    /// Bytes of `path` in the page cache (mincore of a mapping).
    #[cfg(target_os = "linux")]
    fn resident(file: &std::sync::Arc<File>, size: u64) -> u64 {
        let d = super::cache::DropBehind::of(file, size).unwrap();
        (0..size.div_ceil(4096)).filter(|p| d.was_resident(*p)).count() as u64 * 4096
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_large_upload_drops_the_cache_it_brought_in_and_keeps_what_was_cached() {
        let size = super::cache::MIN_SIZE + (1 << 20);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let (_dir, path) = file_with(&data);
        let file = std::sync::Arc::new(File::open(&path).unwrap());
        file.sync_all().unwrap();
        rustix::fs::fadvise(&*file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        if resident(&file, size) > 0 {
            // tmpfs and some file systems keep their pages: nothing to measure there.
            eprintln!("skipped: the file system of the temporary directory keeps its pages");
            return;
        }
        // The first 4 MiB were cached before the upload (another program reads them).
        let mut head = vec![0u8; 4 << 20];
        super::super::platform::read_exact_at(&file, &mut head, 0).unwrap();
        let src = FileSource::open(&path).unwrap();
        let got: Vec<Bytes> = src.stream_range(0, size, |_| {}).try_collect().await.unwrap();
        assert_eq!(got.concat(), data, "the bytes streamed are the file's");
        drop(got);
        // What was cached when the upload began (those 4 MiB and what the kernel read ahead of them).
        let start = src.drop_behind.get().cloned().flatten().expect("a large file is looked at");
        let before = (0..size.div_ceil(4096)).filter(|p| start.was_resident(*p)).count() as u64 * 4096;
        assert!(before < size / 2, "{before} bytes resident before the upload");
        let left = resident(&file, size);
        assert!(left >= 4 << 20, "what was cached before stays cached: {left} bytes resident");
        assert!(
            left <= before,
            "the pages the upload brought in were dropped: {left} bytes resident after, {before} before"
        );
    }
}

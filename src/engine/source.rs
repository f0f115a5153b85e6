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
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
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
            async move {
                if done >= len {
                    return Ok(None);
                }
                let want = (len - done).min(PIECE as u64);
                let n = if limited { limit.take(want).await } else { want } as usize;
                let bytes = this.read_piece(offset + done, n).await?;
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
    async fn read_piece(&self, at: u64, n: usize) -> std::io::Result<Bytes> {
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
        Ok(Bytes::from_owner(Piece { buf, len: n, pool: self.pool.clone() }))
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
    async fn a_file_that_shrank_while_streaming_is_an_end_of_file_that_says_so() {
        let data = vec![5u8; 2 * PIECE];
        let (_dir, path) = file_with(&data);
        let src = FileSource::open(&path).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(PIECE as u64 + 10).unwrap();
        let err = src.stream_range(0, data.len() as u64, |_| {}).try_collect::<Vec<Bytes>>().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("shrank from 524288 to 262154 bytes"), "{err}");
    }
}

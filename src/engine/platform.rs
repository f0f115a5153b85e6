//! What differs between operating systems, said once: positional reads, canonical paths that
//! people can read, the shell that runs `--token-command`, and replacing a file that another
//! process may hold open for a moment (Windows). The byte-range locks are
//! [`super::lockfile`]'s; the state and config directories are the command line's.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Reads exactly `buf.len()` bytes at `offset`, as unix `pread` does: concurrent readers of
/// one open file never share a cursor. On Windows it is `ReadFile` at an offset (which moves
/// the handle's cursor, that nothing here uses). A read past the end is `UnexpectedEof`.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match file.seek_read(buf, offset) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer")),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The canonical, absolute form of `path`. On Windows without the `\\?\` prefix whenever the
/// path means the same without it (`C:\captures\a.mp4`, not `\\?\C:\captures\a.mp4`): these
/// paths are shown to people, kept in journals and done records, and compared with the paths
/// `notify` reports. Elsewhere it is `std::fs::canonicalize`.
pub(crate) fn canonicalize(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    dunce::canonicalize(path)
}

/// A command that runs `cmd` through the system's shell: `sh -c CMD` on unix, `cmd /D /S /C
/// "CMD"` on Windows (`%ComSpec%`; the line is passed as written, since cmd does not follow
/// the quoting rules other programs do; `/D` skips AutoRun, `/S` takes the outer quotes off).
pub(crate) fn shell(cmd: &str) -> tokio::process::Command {
    #[cfg(windows)]
    {
        let comspec = std::env::var_os("ComSpec").filter(|c| !c.is_empty()).unwrap_or_else(|| "cmd.exe".into());
        let mut c = tokio::process::Command::new(comspec);
        c.args(["/D", "/S", "/C"]).raw_arg(format!("\"{cmd}\""));
        c
    }
    #[cfg(not(windows))]
    {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(cmd);
        c
    }
}

/// What a path that is not a regular file is, for a message ("a FIFO (named pipe)").
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        } else if t.is_socket() {
            return "a socket";
        } else if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Renames `from` over `to`. On Windows the target may be open for a moment in another process
/// (a reader of the state directory, a virus scanner, an indexer: "Access is denied (os error
/// 5)"): the rename is tried again for up to about two seconds. Every handle of this process
/// on `to` must be closed first (a journal closes its own before it is rewritten).
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(windows)]
    {
        let mut delay = std::time::Duration::from_millis(5);
        for _ in 0..10 {
            match std::fs::rename(from, to) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(std::time::Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }
    std::fs::rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_reads_of_one_file_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.bin");
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (file, data) = (&file, &data);
                s.spawn(move || {
                    for k in 0..50u64 {
                        let off = (t * 104_729 + k * 7_919) % (data.len() as u64 - 4096);
                        let mut buf = vec![0u8; 4096];
                        read_exact_at(file, &mut buf, off).unwrap();
                        assert_eq!(buf, data[off as usize..off as usize + 4096]);
                    }
                });
            }
        });
        let mut past = vec![0u8; 10];
        let e = read_exact_at(&file, &mut past, data.len() as u64 - 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn canonical_paths_are_absolute_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        std::fs::write(&path, b"x").unwrap();
        let canon = canonicalize(dir.path().join(".").join("a.mp4")).unwrap();
        assert!(canon.is_absolute(), "{}", canon.display());
        assert!(!canon.to_string_lossy().starts_with(r"\\?\"), "{}", canon.display());
        assert_eq!(canon.file_name().unwrap(), "a.mp4");
        assert_eq!(std::fs::read(&canon).unwrap(), b"x");
    }

    #[tokio::test]
    async fn the_shell_runs_a_command_line_with_quotes_and_spaces() {
        // The same line means the same to sh and to cmd: quotes kept for the program, spaces inside.
        let out = shell("echo \"a b\"&& echo c").output().await.unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        #[cfg(windows)]
        assert_eq!(text, "\"a b\"\nc\n");
        #[cfg(unix)]
        assert_eq!(text, "a b\nc\n");
        let fail = shell("exit 3").status().await.unwrap();
        assert_eq!(fail.code(), Some(3));
    }

    #[test]
    fn replacing_a_file_that_was_just_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&b, b"old").unwrap();
        let held = File::open(&b).unwrap();
        drop(held);
        std::fs::write(&a, b"new").unwrap();
        rename(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }

    #[cfg(unix)]
    #[test]
    fn kinds_of_what_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(kind_of(&std::fs::metadata(dir.path()).unwrap()), "a directory");
        assert_eq!(kind_of(&std::fs::metadata("/dev/null").unwrap()), "a device");
    }
}

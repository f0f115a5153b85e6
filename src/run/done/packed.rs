//! The packed file of a state directory's done records (`<state dir>/done/packed`): one line
//! per record, `KEY<TAB>RECORD_JSON`, sorted by KEY (as bytes), each KEY once. KEY is the name a
//! loose record has in `done/` without its `.json` ([`super::done_key`]).
//!
//! A look-up is a binary search over byte offsets, as look(1) does: each step reads the line
//! that follows the middle of the range (a few KiB at most), so a look-up costs O(log n) small
//! reads and never loads the file. A compaction streams the old file and the new records,
//! both sorted, into a new one ([`merge`]): memory follows the new records, not the file.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::Mutex;

use crate::engine::platform::read_exact_at;

/// Below this many bytes the rest of a search range is read whole and scanned.
const WINDOW: u64 = 16 << 10;

/// How much a step reads at once to find a line (more when a line is longer).
const CHUNK: u64 = 4 << 10;

/// The key of a packed line (the line without its newline).
pub(super) fn key_of(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b'\t').next().unwrap_or(line)
}

/// The record of a packed line: what follows the key's tab (empty when there is none).
pub(super) fn record_of(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b'\t') {
        Some(i) => &line[i + 1..],
        None => &[],
    }
}

/// The record stored under `key` in the packed file at `path`; `None` when the file or the key
/// is not there.
///
/// The first steps of the search are the same for every key (the line after the middle of the
/// file, then after the middle of either half...): this process keeps them (the first
/// [`MEMO_DEPTH`] levels, a few hundred KiB at most, for the last packed file searched, as long
/// as it is the same file: inode, length, modification time), so the look-ups of a run read the
/// file only near their own line.
pub(super) fn lookup(path: &Path, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    static MEMO: Mutex<Option<Memo>> = Mutex::new(None);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let id = FileId::of(path, &meta);
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if memo.as_ref().is_none_or(|m| m.id != id) {
        *memo = Some(Memo { id, steps: HashMap::new() });
    }
    let steps = &mut memo.as_mut().expect("set").steps;
    search_with(&file, meta.len(), key, Some(steps))
}

/// How many levels of a search are kept ([`lookup`]): up to 2^12 - 1 steps of a key each.
const MEMO_DEPTH: u32 = 12;

/// Which packed file the kept steps are of.
#[derive(Debug, PartialEq, Eq)]
struct FileId {
    path: std::path::PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

impl FileId {
    fn of(path: &Path, meta: &std::fs::Metadata) -> FileId {
        FileId {
            path: path.to_path_buf(),
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            ino: std::os::unix::fs::MetadataExt::ino(meta),
        }
    }
}

/// The kept steps of one packed file, by search range.
struct Memo {
    id: FileId,
    steps: HashMap<(u64, u64), Option<Step>>,
}

/// One step of a search over the range `[lo, hi)`: the line after its middle (where it starts,
/// where the next begins, its key); `None` when no line starts there.
#[derive(Clone, Debug)]
struct Step {
    start: u64,
    next: u64,
    key: Box<[u8]>,
}

/// The binary search of [`lookup`] over the first `len` bytes of `file`, keeping its first
/// steps in `memo` (when given) or taking them from there.
fn search_with(
    file: &File,
    len: u64,
    key: &[u8],
    mut memo: Option<&mut HashMap<(u64, u64), Option<Step>>>,
) -> io::Result<Option<Vec<u8>>> {
    // `lo` is a line's start, `hi` a line's start or the end: the line of `key`, when there is
    // one, starts in [lo, hi).
    let (mut lo, mut hi) = (0u64, len);
    let mut depth = 0;
    while hi - lo > WINDOW {
        let kept = memo.as_deref_mut().filter(|_| depth < MEMO_DEPTH);
        let step = match kept.as_ref().and_then(|m| m.get(&(lo, hi))) {
            Some(step) => step.clone(),
            None => {
                let step = step_at(file, lo, hi)?;
                if let Some(m) = kept {
                    m.insert((lo, hi), step.clone());
                }
                step
            }
        };
        depth += 1;
        // A line longer than half the range has no line start after the middle: the scan
        // below reads the range, at most about twice that line.
        let Some(step) = step else { break };
        match (*step.key).cmp(key) {
            Ordering::Equal => {
                let mut line = vec![0; (step.next - step.start) as usize];
                read_exact_at(file, &mut line, step.start)?;
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                return Ok(Some(record_of(line).to_vec()));
            }
            Ordering::Less => lo = step.next,
            Ordering::Greater => hi = step.start,
        }
    }
    let mut buf = vec![0; (hi - lo) as usize];
    read_exact_at(file, &mut buf, lo)?;
    Ok(buf.split(|&b| b == b'\n').find(|l| key_of(l) == key).map(|l| record_of(l).to_vec()))
}

/// The step of a search over `[lo, hi)`: the first line that starts after its middle.
fn step_at(file: &File, lo: u64, hi: u64) -> io::Result<Option<Step>> {
    let mid = lo + (hi - lo) / 2;
    Ok(line_after(file, mid, hi)?.map(|(start, line)| Step {
        start,
        next: (start + line.len() as u64 + 1).min(hi),
        key: key_of(&line).into(),
    }))
}

/// The line that starts first after `mid` (`mid` > 0) and before `hi`, and where it starts.
fn line_after(file: &File, mid: u64, hi: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    // From the byte before `mid`: a line that starts exactly at `mid` follows that newline.
    let from = mid - 1;
    let mut buf = Vec::new();
    let mut start = None;
    loop {
        let at = from + buf.len() as u64;
        if at >= hi {
            break;
        }
        let n = CHUNK.min(hi - at) as usize;
        let old = buf.len();
        buf.resize(old + n, 0);
        read_exact_at(file, &mut buf[old..], at)?;
        if start.is_none() {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => start = Some(i + 1),
                None => continue,
            }
        }
        let s = start.expect("found");
        if let Some(end) = buf[s..].iter().position(|&b| b == b'\n') {
            let at = from + s as u64;
            buf.truncate(s + end);
            buf.drain(..s);
            return Ok((at < hi).then_some((at, buf)));
        }
    }
    // No newline after the line's start: the line runs to `hi` (the file's last, unterminated).
    Ok(match start {
        Some(s) if from + (s as u64) < hi => Some((from + s as u64, buf.split_off(s))),
        _ => None,
    })
}

/// A key to merge into the packed file, and what becomes of its line.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) record: New,
}

/// What a merge does with a key's line.
#[derive(Debug)]
pub(super) enum New {
    /// The record is read when its turn comes (`read(i, key)`, so a compaction holds keys,
    /// not records): what it gives takes the place of the old line; `None` leaves the old
    /// line as it was.
    Later(usize),
    /// The key's old line goes.
    Remove,
}

/// A new entry's record, resolved.
enum Put {
    Line(Vec<u8>),
    Remove,
    Keep,
}

fn resolve(e: &Entry, read: &mut dyn FnMut(usize, &str) -> Option<Vec<u8>>) -> Put {
    match &e.record {
        New::Later(i) => read(*i, &e.key).map_or(Put::Keep, Put::Line),
        New::Remove => Put::Remove,
    }
}

/// What a merge wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Merged {
    /// Lines written.
    pub(super) lines: usize,
    /// Lines of the old file left out (`keep` said no, or out of order, or not a line).
    pub(super) dropped: usize,
}

/// Writes to `out` the lines of the old packed file `old` (read as a stream) merged with
/// `new` (sorted by key, each key once): a new record takes the place of the old line of its
/// key ([`New`]; `read` gives the records to read late), a removal removes it, and an old line
/// stays when `keep(key, record)` says so. The output is sorted, each key once (an old line out
/// of order is dropped).
pub(super) fn merge(
    old: Option<&mut dyn BufRead>,
    new: &[Entry],
    read: &mut dyn FnMut(usize, &str) -> Option<Vec<u8>>,
    out: &mut dyn Write,
    keep: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<Merged> {
    let mut merged = Merged::default();
    let mut last: Option<Vec<u8>> = None;
    let mut put = |key: &[u8], record: &[u8], merged: &mut Merged| -> io::Result<bool> {
        if last.as_deref().is_some_and(|l| l >= key) {
            return Ok(false);
        }
        out.write_all(key)?;
        out.write_all(b"\t")?;
        out.write_all(record)?;
        out.write_all(b"\n")?;
        merged.lines += 1;
        last = Some(key.to_vec());
        Ok(true)
    };
    let mut next_new = new.iter().peekable();
    let mut line = Vec::new();
    if let Some(old) = old {
        loop {
            line.clear();
            if old.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let key = key_of(text);
            if key.len() == text.len() || key.is_empty() {
                // Not a line of the packed file (no tab): nothing to keep.
                merged.dropped += 1;
                continue;
            }
            // The new records that come first.
            while let Some(e) = next_new.next_if(|e| e.key.as_bytes() < key) {
                if let Put::Line(r) = resolve(e, read) {
                    put(e.key.as_bytes(), &r, &mut merged)?;
                }
            }
            if let Some(e) = next_new.next_if(|e| e.key.as_bytes() == key) {
                match resolve(e, read) {
                    Put::Line(r) => {
                        put(e.key.as_bytes(), &r, &mut merged)?;
                        continue;
                    }
                    Put::Remove => {
                        merged.dropped += 1;
                        continue;
                    }
                    Put::Keep => {}
                }
            }
            if !keep(record_of(text)) || !put(key, record_of(text), &mut merged)? {
                merged.dropped += 1;
            }
        }
    }
    for e in next_new {
        if let Put::Line(r) = resolve(e, read) {
            put(e.key.as_bytes(), &r, &mut merged)?;
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(keys: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("packed");
        let text: String = keys.iter().map(|k| format!("{k}\t{{\"of\":\"{k}\"}}\n")).collect();
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// What a look-up finds, asserting that the search without kept steps finds the same.
    fn found(path: &Path, key: &str) -> Option<String> {
        let kept = lookup(path, key.as_bytes()).unwrap().map(|r| String::from_utf8(r).unwrap());
        let fresh = File::open(path).ok().map(|f| {
            let len = f.metadata().unwrap().len();
            search_with(&f, len, key.as_bytes(), None).unwrap().map(|r| String::from_utf8(r).unwrap())
        });
        assert_eq!(kept, fresh.flatten(), "{key}");
        kept
    }

    #[test]
    fn search_finds_first_last_and_every_key_and_misses_the_others() {
        // Enough lines for many steps of the search (each ~60 bytes: ~600 KiB), and lines of
        // many lengths so the middle falls anywhere in a line.
        let keys: Vec<String> = (0..10_000).map(|i| format!("teleport-{:06}{}", i * 2, "x".repeat(i % 37))).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (_d, path) = packed(&refs);
        assert!(std::fs::metadata(&path).unwrap().len() > 20 * WINDOW);
        for k in [&keys[0], &keys[1], &keys[4999], &keys[9998], &keys[9999]] {
            assert_eq!(found(&path, k), Some(format!("{{\"of\":\"{k}\"}}")), "{k}");
        }
        for (i, k) in keys.iter().enumerate().step_by(7) {
            assert_eq!(found(&path, k).as_deref(), Some(format!("{{\"of\":\"{k}\"}}").as_str()), "{i}");
        }
        // Missing: before the first, after the last, between two, a prefix of one.
        for k in ["a", "teleport-", "teleport-000001", "teleport-019999", "zzz", &keys[500][..15]] {
            assert_eq!(found(&path, k), None, "{k}");
        }
    }

    #[test]
    fn search_of_one_line_an_empty_file_no_file_and_an_unterminated_last_line() {
        let (_d, path) = packed(&["k1"]);
        assert_eq!(found(&path, "k1").as_deref(), Some("{\"of\":\"k1\"}"));
        assert_eq!(found(&path, "k0"), None);
        assert_eq!(found(&path, "k2"), None);
        std::fs::write(&path, b"").unwrap();
        assert_eq!(found(&path, "k1"), None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(found(&path, "k1"), None);
        // A last line without its newline, in a file large enough to be searched.
        let mut text: String = (0..2000).map(|i| format!("k{i:05}\t{{}}\n")).collect();
        text.push_str("k99999\t{\"last\":1}");
        std::fs::write(&path, text).unwrap();
        assert_eq!(found(&path, "k99999").as_deref(), Some("{\"last\":1}"));
        assert_eq!(found(&path, "k01000").as_deref(), Some("{}"));
    }

    /// The steps kept of a packed file are not used for another version of it.
    #[test]
    fn kept_steps_follow_the_file() {
        let keys: Vec<String> = (0..5000).map(|i| format!("teleport-{:06}", i * 2)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (_d, path) = packed(&refs);
        for k in refs.iter().step_by(97) {
            assert!(found(&path, k).is_some(), "{k}");
        }
        // A compaction replaces the file (another inode, another length): odd keys now.
        let odd: Vec<String> = (0..5000).map(|i| format!("teleport-{:06}", i * 2 + 1)).collect();
        let text: String = odd.iter().map(|k| format!("{k}\t{{\"v\":2}}\n")).collect();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        for (even, odd) in keys.iter().zip(&odd).step_by(97) {
            assert_eq!(found(&path, even), None, "{even}");
            assert_eq!(found(&path, odd).as_deref(), Some("{\"v\":2}"), "{odd}");
        }
    }

    #[test]
    fn search_copes_with_a_line_longer_than_the_window() {
        let long = "y".repeat(3 * WINDOW as usize);
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("k{i:03}\t{{}}\n"));
        }
        text.push_str(&format!("k100\t\"{long}\"\n"));
        for i in 101..200 {
            text.push_str(&format!("k{i:03}\t{{}}\n"));
        }
        let (_d, path) = packed(&[]);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(found(&path, "k100").map(|r| r.len()), Some(long.len() + 2));
        for k in ["k000", "k099", "k101", "k199"] {
            assert_eq!(found(&path, k).as_deref(), Some("{}"), "{k}");
        }
        assert_eq!(found(&path, "k1000"), None);
    }

    fn run_merge(old: &str, new: &[(&str, Option<&str>)], keep: &mut dyn FnMut(&[u8]) -> bool) -> (String, Merged) {
        let entries: Vec<Entry> = new
            .iter()
            .enumerate()
            .map(|(i, (k, r))| Entry { key: k.to_string(), record: r.map_or(New::Remove, |_| New::Later(i)) })
            .collect();
        let mut read = |i: usize, _: &str| new[i].1.map(|r| r.as_bytes().to_vec());
        let mut out = Vec::new();
        let mut reader = io::Cursor::new(old.as_bytes().to_vec());
        let m = merge(Some(&mut reader), &entries, &mut read, &mut out, keep).unwrap();
        (String::from_utf8(out).unwrap(), m)
    }

    #[test]
    fn merge_interleaves_replaces_removes_and_keeps_order() {
        let old = "b\tB0\nd\tD0\nf\tF0\n";
        let (out, m) = run_merge(
            old,
            &[("a", Some("A1")), ("d", Some("D1")), ("e", Some("E1")), ("f", None), ("g", Some("G1"))],
            &mut |_| true,
        );
        assert_eq!(out, "a\tA1\nb\tB0\nd\tD1\ne\tE1\ng\tG1\n");
        assert_eq!(m, Merged { lines: 5, dropped: 1 });
        // Nothing new: the old file as it was; nothing old: the new records.
        assert_eq!(run_merge(old, &[], &mut |_| true).0, old);
        assert_eq!(run_merge("", &[("x", Some("X")), ("y", None)], &mut |_| true).0, "x\tX\n");
        let mut none = Vec::new();
        let mut read = |_, _: &str| Some(b"R".to_vec());
        merge(None, &[Entry { key: "k".into(), record: New::Later(0) }], &mut read, &mut none, &mut |_| true).unwrap();
        assert_eq!(none, b"k\tR\n");
    }

    #[test]
    fn a_record_read_late_replaces_its_line_and_one_that_cannot_be_read_leaves_it() {
        let old = "a\tA0\nb\tB0\n";
        let new = [
            Entry { key: "a".into(), record: New::Later(0) },
            Entry { key: "b".into(), record: New::Later(1) },
            Entry { key: "c".into(), record: New::Later(2) },
            Entry { key: "d".into(), record: New::Later(3) },
        ];
        let mut asked = vec![];
        let mut read = |i: usize, _: &str| {
            asked.push(i);
            i.is_multiple_of(2).then(|| format!("R{i}").into_bytes())
        };
        let mut out = Vec::new();
        let mut reader = io::Cursor::new(old.as_bytes().to_vec());
        let m = merge(Some(&mut reader), &new, &mut read, &mut out, &mut |_| true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\tR0\nb\tB0\nc\tR2\n");
        assert_eq!(m, Merged { lines: 3, dropped: 0 });
        assert_eq!(asked, [0, 1, 2, 3], "each read once, in key order");
    }

    #[test]
    fn merge_drops_what_keep_refuses_lines_out_of_order_and_lines_without_a_key() {
        let old = "a\tdead\nb\tlive\nbroken line\na\tlive\nc\tlive";
        let (out, m) = run_merge(old, &[("bb", Some("new"))], &mut |r| r != b"dead");
        assert_eq!(out, "b\tlive\nbb\tnew\nc\tlive\n");
        assert_eq!(m, Merged { lines: 3, dropped: 3 });
    }
}

//! Which files a run takes: the paths given, directories walked (`--recursive`, `--hidden`,
//! `--include`/`--exclude`), and the images of a directory that Teleport's bulk-images zip takes.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::engine::zipsource::{VirtualZip, ZipEntry};
use crate::error::{Error, Result};

/// Image extensions Teleport's bulk-images zips keep.
pub const IMAGE_EXTENSIONS: [&str; 12] =
    ["jpg", "jpeg", "png", "heic", "heif", "tif", "tiff", "webp", "bmp", "dng", "exr", "jxl"];

/// One unit of work: a file as given or found, or a directory to zip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A file.
    File(PathBuf),
    /// A directory of images to zip into one bulk-images capture.
    ZipDir(PathBuf),
}

impl Item {
    /// The path as given.
    pub fn path(&self) -> &Path {
        match self {
            Item::File(p) | Item::ZipDir(p) => p,
        }
    }
}

/// Which files a directory contributes.
#[derive(Clone, Debug)]
pub struct Selection {
    recursive: bool,
    hidden: bool,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

fn globs(patterns: &[String], flag: &str) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p).map_err(|e| {
            Error::usage(
                format!("{flag} '{p}' is not a valid glob: {e}"),
                "use *, ?, [abc] and ** in globs, e.g. '*.mp4' or 'day1/**'",
            )
        })?;
        b.add(glob);
        // A pattern without a slash also matches the file name anywhere below the directory.
        if !p.contains('/') {
            b.add(Glob::new(&format!("**/{p}")).expect("a valid glob stays valid under **/"));
        }
    }
    b.build().map(Some).map_err(|e| Error::usage(format!("invalid {flag}: {e}"), "check the glob syntax"))
}

impl Selection {
    /// From the command line.
    pub fn new(recursive: bool, hidden: bool, include: &[String], exclude: &[String]) -> Result<Self> {
        Ok(Selection {
            recursive,
            hidden,
            include: globs(include, "--include")?,
            exclude: globs(exclude, "--exclude")?,
        })
    }

    /// Every file at any depth, hidden ones left out: what a bulk-images zip takes when no
    /// selection is given.
    pub fn everything() -> Selection {
        Selection { recursive: true, hidden: false, include: None, exclude: None }
    }

    /// The same selection walking every sub-directory (a bulk-images zip takes them all).
    pub fn every_depth(&self) -> Selection {
        Selection { recursive: true, ..self.clone() }
    }

    /// Whether hidden files are taken (`--hidden`).
    pub fn hidden(&self) -> bool {
        self.hidden
    }

    /// Whether `--include`/`--exclude` keep this path (relative to the directory given).
    pub fn keeps(&self, relative: &Path) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(relative))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(relative))
    }

    /// Files below `dir` (relative paths, sorted), walking subdirectories with `recursive`.
    /// Symbolic links are followed. A walk never stops at one entry: what it cannot take (a
    /// dangling symbolic link, a loop, an unreadable directory, a FIFO, a device) is listed in
    /// [`Walk::problems`] by path with its reason, and the walk goes on.
    pub fn walk(&self, dir: &Path, recursive: bool) -> Walk {
        let mut walk = Walk::default();
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .min_depth(1)
            .max_depth(if recursive { usize::MAX } else { 1 })
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || self.hidden || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let path = e.path().unwrap_or(dir).to_path_buf();
                    let kind = match e.loop_ancestor() {
                        Some(ancestor) => ProblemKind::Loop { ancestor: ancestor.to_path_buf() },
                        None => ProblemKind::Unreadable(
                            e.into_io_error().unwrap_or_else(|| std::io::Error::other("cannot walk")),
                        ),
                    };
                    walk.problems.push(WalkProblem { path, kind });
                    continue;
                }
            };
            let Ok(rel_path) = entry.path().strip_prefix(dir).map(Path::to_path_buf) else { continue };
            let ft = entry.file_type();
            if ft.is_dir() {
                if !recursive {
                    walk.dirs_not_walked += 1;
                }
            } else if !self.keeps(&rel_path) {
            } else if ft.is_file() {
                walk.files.push(rel_path);
            } else {
                walk.problems
                    .push(WalkProblem { path: entry.path().to_path_buf(), kind: ProblemKind::Special(special(ft)) });
            }
        }
        walk.files.sort();
        walk
    }

    /// Expands the command line's paths into items: a directory is walked (or, `zip_dirs`,
    /// becomes one zip), a file stays as given. What a walk cannot take is in the result's
    /// problems; the rest still goes.
    pub fn expand(&self, paths: &[PathBuf], zip_dirs: bool) -> Expanded {
        let mut out = Expanded::default();
        for p in paths {
            if p.is_dir() {
                if zip_dirs {
                    out.items.push(Item::ZipDir(p.clone()));
                } else {
                    let walk = self.walk(p, self.recursive);
                    out.items.reserve(walk.files.len());
                    out.items.extend(walk.files.into_iter().map(|rel| Item::File(joined(p, &rel))));
                    out.problems.extend(walk.problems);
                    out.dirs_not_walked += walk.dirs_not_walked;
                }
            } else {
                out.items.push(Item::File(p.clone()));
            }
        }
        out
    }

    /// Adds the paths of a list (`--files-from`) to `out`: each is a file, taken as listed and
    /// not walked, kept when `--include`/`--exclude` keep its path as listed. One that cannot
    /// be read (missing, unreadable), a directory or a special file is a problem by path, and
    /// the others still go.
    pub fn expand_listed(&self, paths: impl IntoIterator<Item = PathBuf>, out: &mut Expanded) {
        for path in paths {
            if !self.keeps(&path) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => out.items.push(Item::File(path)),
                Ok(m) if m.is_dir() => out.problems.push(WalkProblem { path, kind: ProblemKind::Directory }),
                Ok(m) => out.problems.push(WalkProblem { path, kind: ProblemKind::Special(special(m.file_type())) }),
                Err(e) => out.problems.push(WalkProblem { path, kind: ProblemKind::Unreadable(e) }),
            }
        }
    }
}

/// `dir` joined with `rel`, in a buffer of exactly its length (`Path::join` leaves room to
/// grow: a list of many files kept a third more than its paths).
fn joined(dir: &Path, rel: &Path) -> PathBuf {
    let mut path = PathBuf::with_capacity(dir.as_os_str().len() + 1 + rel.as_os_str().len());
    path.push(dir);
    path.push(rel);
    path
}

/// What a walk of a directory found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The files it takes (relative paths, sorted).
    pub files: Vec<PathBuf>,
    /// The entries it could not take.
    pub problems: Vec<WalkProblem>,
    /// Sub-directories it did not enter (a walk that is not recursive).
    pub dirs_not_walked: usize,
}

/// The command line's paths as a run's items.
#[derive(Debug, Default)]
pub struct Expanded {
    /// The files (and directories to zip) of the run.
    pub items: Vec<Item>,
    /// What the walks could not take.
    pub problems: Vec<WalkProblem>,
    /// Sub-directories not entered (no `--recursive`).
    pub dirs_not_walked: usize,
}

/// An entry a walk could not take, and why.
#[derive(Debug)]
pub struct WalkProblem {
    /// The entry.
    pub path: PathBuf,
    /// Why.
    pub kind: ProblemKind,
}

/// Why a walk could not take an entry.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProblemKind {
    /// It cannot be read: an unreadable directory, a dangling symbolic link, ...
    Unreadable(std::io::Error),
    /// A symbolic link back to a directory being walked.
    Loop {
        /// The directory it points back to.
        ancestor: PathBuf,
    },
    /// Not a regular file: what it is (`a FIFO`, `a device`, `a socket`).
    Special(&'static str),
    /// A directory in a list of files (`--files-from`), which is not walked.
    Directory,
}

impl WalkProblem {
    /// The problem as an error naming the entry: an entry that cannot be read is a file error
    /// (the run fails with it, the other files still go); one that is not a regular file is a
    /// refusal (skipped with its reason, like a file the provider does not take).
    pub fn into_error(self) -> Error {
        match self.kind {
            ProblemKind::Unreadable(source) => Error::File { path: self.path, source },
            ProblemKind::Loop { ancestor } => Error::File {
                path: self.path,
                source: std::io::Error::other(format!(
                    "a symbolic link back to {} (a loop); not followed",
                    ancestor.display()
                )),
            },
            ProblemKind::Special(what) => Error::usage(
                format!("{} is {what}, not a regular file", self.path.display()),
                "only regular files are uploaded",
            ),
            ProblemKind::Directory => Error::usage(
                format!("{} is a directory; --files-from lists files", self.path.display()),
                "list its files instead (`find DIR -type f -print0 | upload --files-from - -0`), or give the directory as FILE",
            ),
        }
    }
}

/// What a non-regular, non-directory entry is.
fn special(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    let _ = ft;
    "not a regular file"
}

/// The images below `dir` that a bulk-images zip takes (relative paths, sorted), walking
/// every subdirectory.
pub fn image_list(dir: &Path, selection: &Selection) -> Result<Vec<PathBuf>> {
    let walk = selection.walk(dir, true);
    // A capture does not go out with an image silently left out: an entry that cannot be
    // read stops its zip, named. Entries that are not regular files are not images.
    if let Some(p) =
        walk.problems.into_iter().find(|p| !matches!(p.kind, ProblemKind::Special(_) | ProblemKind::Directory))
    {
        return Err(p.into_error());
    }
    let mut images: Vec<PathBuf> = walk
        .files
        .into_iter()
        .filter(|rel| {
            rel.extension()
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
        })
        .collect();
    images.sort();
    if images.is_empty() {
        return Err(Error::usage(
            format!("{} holds no images to zip", dir.display()),
            format!("bulk-images zips take {}", IMAGE_EXTENSIONS.join(", ")),
        ));
    }
    Ok(images)
}

/// An image a directory's bulk-images zip leaves out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// The image, as found below the directory given.
    pub path: PathBuf,
    /// Why: `empty (0 bytes)`.
    pub reason: &'static str,
}

/// The table of the bulk-images zip of a directory: its images (sorted names, relative
/// paths), each with its size and modification time; no image is read (the CRCs are
/// unknown yet). Empty (0-byte) files are left out of the zip, returned with the reason: an
/// empty file is no image, and a capture's processing would fail on it.
pub fn scan_images(dir: &Path, selection: &Selection) -> Result<(VirtualZip, Vec<LeftOut>)> {
    let canonical =
        crate::engine::platform::canonicalize(dir).map_err(|e| Error::File { path: dir.into(), source: e })?;
    let mut left_out = Vec::new();
    let mut entries = Vec::new();
    for rel in image_list(dir, selection)? {
        let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        let entry = ZipEntry::stat(name, canonical.join(&rel))?;
        if entry.size == 0 {
            left_out.push(LeftOut { path: dir.join(&rel), reason: "empty (0 bytes)" });
        } else {
            entries.push(entry);
        }
    }
    if entries.is_empty() {
        return Err(Error::usage(
            format!(
                "{} holds no images to zip: its {} image files are all empty (0 bytes)",
                dir.display(),
                left_out.len()
            ),
            "a bulk-images zip needs at least one non-empty image",
        ));
    }
    Ok((VirtualZip::new(&canonical, entries), left_out))
}

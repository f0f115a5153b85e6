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
    /// Symbolic links are followed; a link back to a directory being walked (a loop) is
    /// reported on stderr and skipped, not fatal.
    pub fn walk(&self, dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
        let mut out = vec![];
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .min_depth(1)
            .max_depth(if recursive { usize::MAX } else { 1 })
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || self.hidden || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.loop_ancestor().is_some() => {
                    let (path, ancestor) = (e.path().unwrap_or(dir), e.loop_ancestor().unwrap_or(dir));
                    eprintln!(
                        "upload: warning: skipping {}: a symbolic link back to {} (a loop)",
                        path.display(),
                        ancestor.display()
                    );
                    continue;
                }
                Err(e) => {
                    let path = e.path().unwrap_or(dir).to_path_buf();
                    let source = e.into_io_error().unwrap_or_else(|| std::io::Error::other("cannot walk"));
                    return Err(Error::File { path, source });
                }
            };
            let Ok(rel_path) = entry.path().strip_prefix(dir).map(Path::to_path_buf) else { continue };
            if entry.file_type().is_file() && self.keeps(&rel_path) {
                out.push(rel_path);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Expands the command line's paths into items.
    pub fn expand(&self, paths: &[PathBuf], zip_dirs: bool) -> Result<Vec<Item>> {
        let mut items = vec![];
        for p in paths {
            if p.is_dir() {
                if zip_dirs {
                    items.push(Item::ZipDir(p.clone()));
                } else {
                    items.extend(self.walk(p, self.recursive)?.into_iter().map(|rel| Item::File(p.join(rel))));
                }
            } else {
                items.push(Item::File(p.clone()));
            }
        }
        Ok(items)
    }
}

/// The images below `dir` that a bulk-images zip takes (relative paths, sorted), walking
/// every subdirectory.
pub fn image_list(dir: &Path, selection: &Selection) -> Result<Vec<PathBuf>> {
    let mut images: Vec<PathBuf> = selection
        .walk(dir, true)?
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

/// The table of the bulk-images zip of a directory: its images (sorted names, relative
/// paths), each with its size and modification time; no image is read (the CRCs are
/// unknown yet).
pub fn scan_images(dir: &Path, selection: &Selection) -> Result<VirtualZip> {
    let canonical =
        crate::engine::platform::canonicalize(dir).map_err(|e| Error::File { path: dir.into(), source: e })?;
    let entries = image_list(dir, selection)?
        .into_iter()
        .map(|rel| {
            let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            ZipEntry::stat(name, canonical.join(&rel))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(VirtualZip::new(&canonical, entries))
}

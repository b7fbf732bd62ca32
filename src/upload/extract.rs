//! Writing archive entries into the staging dir, format-independently.
//!
//! The archive readers (`zipfile`, `targz`) decode entries and hand them to
//! an [`Extractor`], which owns every check that touches the disk: no entry
//! is written through a link, sizes are counted on the bytes actually
//! written, and links are verified to stay inside once all entries are in.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::paths::{self, entry_components};
use super::{Installed, Limits, UploadError, DIR_MODE, FILE_MODE};

/// Same bound the Linux kernel uses for following symlinks (ELOOP).
const MAX_LINK_HOPS: usize = 40;

/// Turns a read error of the archive stream into the error to report.
pub(crate) type MapRead<'m> = &'m dyn Fn(io::Error) -> UploadError;

/// What already sits at a path in the staging dir (never following links).
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Dir,
    File,
    Link,
    Other,
}

fn existing(path: &Path) -> io::Result<Option<Existing>> {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            let ft = m.file_type();
            Ok(Some(if ft.is_symlink() {
                Existing::Link
            } else if ft.is_dir() {
                Existing::Dir
            } else if ft.is_file() {
                Existing::File
            } else {
                Existing::Other
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn clash(name: &str) -> UploadError {
    UploadError::Corrupt(format!(
        "entry {name:?} clashes with an earlier entry of the same name"
    ))
}

pub(crate) struct Extractor<'a> {
    root: &'a Path,
    limits: &'a Limits,
    entries: usize,
    /// File content bytes written so far (hard-link copies included).
    bytes: u64,
    /// Every symlink created: (entry name, components), checked in `finish`.
    symlinks: Vec<(String, Vec<String>)>,
}

impl<'a> Extractor<'a> {
    pub(crate) fn new(root: &'a Path, limits: &'a Limits) -> Self {
        Extractor {
            root,
            limits,
            entries: 0,
            bytes: 0,
            symlinks: Vec::new(),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        self.limits
    }

    /// Call once per archive entry, before handling it.
    pub(crate) fn count_entry(&mut self) -> Result<(), UploadError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(UploadError::TooManyEntries(self.limits.max_entries));
        }
        Ok(())
    }

    pub(crate) fn dir(&mut self, name: &str) -> Result<(), UploadError> {
        let comps = entry_components(name)?;
        if comps.is_empty() {
            return Ok(()); // "./": the root itself
        }
        let path = self.make_parents(name, &comps)?;
        match existing(&path)? {
            None => create_dir(&path)?,
            Some(Existing::Dir) => {}
            Some(Existing::Link) => return Err(UploadError::LinkEscape(name.to_owned())),
            Some(_) => return Err(clash(name)),
        }
        Ok(())
    }

    pub(crate) fn file(
        &mut self,
        name: &str,
        reader: &mut dyn Read,
        map_read: MapRead<'_>,
    ) -> Result<(), UploadError> {
        let comps = leaf_components(name)?;
        let path = self.prepare_leaf(name, &comps)?;
        self.write_file(&path, reader, map_read)
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> Result<(), UploadError> {
        let comps = leaf_components(name)?;
        let target = paths::symlink_target(name, &comps, target)?;
        let path = self.make_parents(name, &comps)?;
        match existing(&path)? {
            None => std::os::unix::fs::symlink(&target, &path)?,
            Some(Existing::Link) => return Err(UploadError::LinkEscape(name.to_owned())),
            Some(_) => return Err(clash(name)),
        }
        self.symlinks.push((name.to_owned(), comps));
        Ok(())
    }

    /// A tar hard link to an earlier regular file, written as a copy.
    pub(crate) fn hard_link(&mut self, name: &str, target: &str) -> Result<(), UploadError> {
        let comps = leaf_components(name)?;
        let target_comps = paths::hard_link_target(name, target)?;
        let not_a_file = || {
            UploadError::Corrupt(format!(
                "hard link {name:?} refers to {target:?}, which is not an earlier regular file of the archive"
            ))
        };
        let mut src_path = self.root.to_path_buf();
        for (i, part) in target_comps.iter().enumerate() {
            src_path.push(part);
            let last = i + 1 == target_comps.len();
            match existing(&src_path)? {
                Some(Existing::Link) => return Err(UploadError::LinkEscape(name.to_owned())),
                Some(Existing::Dir) if !last => {}
                Some(Existing::File) if last => {}
                _ => return Err(not_a_file()),
            }
        }
        // Open before `prepare_leaf` so a link to itself still has its data.
        let mut src = fs::File::open(&src_path)?;
        let path = self.prepare_leaf(name, &comps)?;
        self.write_file(&path, &mut src, &UploadError::Io)
    }

    /// Verify the links as a whole and list what was extracted.
    pub(crate) fn finish(self) -> Result<Installed, UploadError> {
        for (name, comps) in &self.symlinks {
            self.check_link(name, comps)?;
        }
        let (files, total_bytes) = list_files(self.root)?;
        if files.is_empty() {
            return Err(UploadError::Empty);
        }
        Ok(Installed { files, total_bytes })
    }

    /// Create the missing parent dirs of an entry, refusing to pass through
    /// a link (a link created by an earlier entry would otherwise redirect
    /// this write anywhere). Returns the entry's full path.
    fn make_parents(&self, name: &str, comps: &[String]) -> Result<PathBuf, UploadError> {
        let mut path = self.root.to_path_buf();
        let (leaf, parents) = comps.split_last().ok_or_else(|| clash(name))?;
        for part in parents {
            path.push(part);
            match existing(&path)? {
                None => create_dir(&path)?,
                Some(Existing::Dir) => {}
                Some(Existing::Link) => return Err(UploadError::LinkEscape(name.to_owned())),
                Some(_) => return Err(clash(name)),
            }
        }
        path.push(leaf);
        Ok(path)
    }

    /// Parents made, leaf free to be created: an earlier regular file of the
    /// same name is replaced (later tar entries win), anything else refused.
    fn prepare_leaf(&self, name: &str, comps: &[String]) -> Result<PathBuf, UploadError> {
        let path = self.make_parents(name, comps)?;
        match existing(&path)? {
            None => {}
            Some(Existing::File) => fs::remove_file(&path)?,
            Some(Existing::Link) => return Err(UploadError::LinkEscape(name.to_owned())),
            Some(_) => return Err(clash(name)),
        }
        Ok(path)
    }

    fn write_file(
        &mut self,
        path: &Path,
        reader: &mut dyn Read,
        map_read: MapRead<'_>,
    ) -> Result<(), UploadError> {
        // create_new (O_EXCL) also refuses to follow a link at the leaf.
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(map_read(e)),
            };
            // Count what the decompressor really produced, before writing it:
            // sizes in headers can lie.
            self.bytes = self.bytes.saturating_add(n as u64);
            if self.bytes > self.limits.max_total_bytes {
                return Err(UploadError::TooLarge(self.limits.max_total_bytes));
            }
            out.write_all(&buf[..n])?;
        }
        // The umask may have narrowed the mode given at creation.
        fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))?;
        Ok(())
    }

    /// Resolve a link the way the kernel would, but confined to the staging
    /// dir: following every link met on the way, and treating missing parts
    /// lexically. The per-link lexical check cannot see chains such as
    /// `a -> .` plus `b -> a/../x`, which escape only once both exist.
    fn check_link(&self, name: &str, comps: &[String]) -> Result<(), UploadError> {
        let escape = || UploadError::LinkEscape(name.to_owned());
        let mut stack: Vec<String> = Vec::new();
        let mut pending: VecDeque<String> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(part) = pending.pop_front() {
            match part.as_str() {
                "" | "." => {}
                ".." => {
                    stack.pop().ok_or_else(escape)?;
                }
                _ => {
                    stack.push(part);
                    let path = stack.iter().fold(self.root.to_path_buf(), |p, c| p.join(c));
                    if existing(&path).ok().flatten() != Some(Existing::Link) {
                        continue;
                    }
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(UploadError::Corrupt(format!(
                            "link {name:?} is part of a loop of links"
                        )));
                    }
                    let target = fs::read_link(&path)?;
                    // We created every link from a '/'-separated str.
                    let target = target.to_str().ok_or_else(escape)?;
                    if paths::is_absolute(target) {
                        return Err(escape());
                    }
                    stack.pop();
                    for p in target.split('/').rev() {
                        pending.push_front(p.to_owned());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Components of an entry that must name something below the root.
fn leaf_components(name: &str) -> Result<Vec<String>, UploadError> {
    let comps = entry_components(name)?;
    if comps.is_empty() {
        return Err(UploadError::BadFileName(name.to_owned()));
    }
    Ok(comps)
}

fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(DIR_MODE).create(path)?;
    // The umask may have narrowed the mode given at creation.
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
}

/// Regular files under `root`, relative and '/'-separated, sorted, with the
/// sum of their sizes. Links are neither listed nor followed.
fn list_files(root: &Path) -> io::Result<(Vec<String>, u64)> {
    let mut files = Vec::new();
    let mut total = 0u64;
    // Iterative: entry depth is bounded only by the path length limit.
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type()?;
            if ft.is_dir() {
                dirs.push((entry.path(), rel));
            } else if ft.is_file() {
                total += entry.metadata()?.len();
                files.push(rel);
            }
        }
    }
    files.sort();
    Ok((files, total))
}

//! `.zip` uploads.

use std::io::{self, Read, Seek};

use ::zip::result::ZipError;
use ::zip::ZipArchive;

use super::extract::Extractor;
use super::UploadError;

// File type bits of a unix mode (zip stores them in the external attributes).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Longest symlink target read from a zip entry's data.
const MAX_LINK_TARGET: u64 = 4096;

fn corrupt(e: ZipError) -> UploadError {
    // The archive is a local file already written whole, so even ZipError::Io is
    // almost always a format problem (a truncated archive).
    UploadError::Corrupt(e.to_string())
}

fn corrupt_entry(name: &str) -> impl Fn(io::Error) -> UploadError + '_ {
    move |e| UploadError::Corrupt(format!("entry {name:?}: {e}"))
}

pub(crate) fn extract<R: Read + Seek>(src: R, ex: &mut Extractor<'_>) -> Result<(), UploadError> {
    let mut archive = ZipArchive::new(src).map_err(corrupt)?;
    // The central directory gives the count up front: refuse before writing.
    let max = ex.limits().max_entries;
    if archive.len() > max {
        return Err(UploadError::TooManyEntries(max));
    }
    for i in 0..archive.len() {
        ex.count_entry()?;
        // Fails for encrypted entries and compression methods we don't build.
        let mut entry = archive.by_index(i).map_err(corrupt)?;
        let name = entry.name().to_owned();
        let file_type = entry.unix_mode().map_or(0, |m| m & S_IFMT);
        if entry.is_dir() || file_type == S_IFDIR {
            ex.dir(&name)?;
        } else if file_type == S_IFLNK {
            // A zip symlink stores its target as the entry's data.
            let mut target = Vec::new();
            (&mut entry)
                .take(MAX_LINK_TARGET + 1)
                .read_to_end(&mut target)
                .map_err(corrupt_entry(&name))?;
            if target.len() as u64 > MAX_LINK_TARGET {
                return Err(UploadError::BadFileName(name));
            }
            let target =
                String::from_utf8(target).map_err(|_| UploadError::BadFileName(name.clone()))?;
            ex.symlink(&name, &target)?;
        } else if file_type == 0 || file_type == S_IFREG {
            // 0: zips made off-unix carry no file type; they hold plain files.
            ex.file(&name, &mut entry, &corrupt_entry(&name))?;
        } else {
            return Err(UploadError::SpecialFile(name));
        }
    }
    Ok(())
}

//! Checks on archive entry names and link targets that need no disk access.

use super::UploadError;

/// Longest single path part most filesystems accept.
const MAX_PART_BYTES: usize = 255;
/// Longest entry path we accept; keeps `staging dir + entry` well under
/// PATH_MAX so deep paths are refused cleanly instead of failing as I/O.
const MAX_PATH_BYTES: usize = 2048;

/// `/x`, `\x`, `\\server\share`, `C:\x`, `C:/x` and `C:x` are all absolute
/// (or drive-relative) somewhere, so none is accepted.
pub(crate) fn is_absolute(s: &str) -> bool {
    let b = s.as_bytes();
    s.starts_with(['/', '\\']) || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// Split a path on `/` and `\`, dropping empty and `.` parts.
fn parts(s: &str) -> impl Iterator<Item = &str> {
    s.split(['/', '\\']).filter(|p| !p.is_empty() && *p != ".")
}

/// The components of an archive entry name, relative to the extraction
/// root. Empty for the root itself (`""`, `"./"`). Refuses absolute paths and
/// any `..`, even one that would stay inside: nothing legitimate needs it.
pub(crate) fn entry_components(name: &str) -> Result<Vec<String>, UploadError> {
    if name.contains('\0') || name.len() > MAX_PATH_BYTES {
        return Err(UploadError::BadFileName(name.to_owned()));
    }
    if is_absolute(name) {
        return Err(UploadError::AbsolutePath(name.to_owned()));
    }
    let mut out = Vec::new();
    for part in parts(name) {
        if part == ".." {
            return Err(UploadError::ParentDir(name.to_owned()));
        }
        if part.len() > MAX_PART_BYTES {
            return Err(UploadError::BadFileName(name.to_owned()));
        }
        out.push(part.to_owned());
    }
    Ok(out)
}

/// Check a symlink target lexically: relative, and not climbing above the
/// root when resolved from the link's directory. Returns the target to
/// create, with `\` turned into `/` like entry names. Chains through other
/// links are checked once everything is extracted (`Extractor::finish`).
pub(crate) fn symlink_target(
    name: &str,
    link: &[String],
    target: &str,
) -> Result<String, UploadError> {
    if target.is_empty() {
        return Err(UploadError::Corrupt(format!(
            "link {name:?} has an empty target"
        )));
    }
    if target.contains('\0') || target.len() > MAX_PATH_BYTES {
        return Err(UploadError::BadFileName(name.to_owned()));
    }
    if is_absolute(target) {
        return Err(UploadError::LinkEscape(name.to_owned()));
    }
    // Depth of the directory holding the link.
    let mut depth = link.len().saturating_sub(1);
    for part in parts(target) {
        if part == ".." {
            depth = depth
                .checked_sub(1)
                .ok_or_else(|| UploadError::LinkEscape(name.to_owned()))?;
        } else if part.len() > MAX_PART_BYTES {
            return Err(UploadError::BadFileName(name.to_owned()));
        } else {
            depth += 1;
        }
    }
    Ok(target.replace('\\', "/"))
}

/// The components of a tar hard link's target, which tar stores relative to
/// the archive root. Absolute or `..` targets lead outside: LinkEscape.
pub(crate) fn hard_link_target(name: &str, target: &str) -> Result<Vec<String>, UploadError> {
    match entry_components(target) {
        Ok(comps) if comps.is_empty() => Err(UploadError::Corrupt(format!(
            "hard link {name:?} has an empty target"
        ))),
        Ok(comps) => Ok(comps),
        Err(UploadError::AbsolutePath(_) | UploadError::ParentDir(_)) => {
            Err(UploadError::LinkEscape(name.to_owned()))
        }
        Err(_) => Err(UploadError::BadFileName(name.to_owned())),
    }
}

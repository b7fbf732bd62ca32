//! `.tar.gz` / `.tgz` uploads.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use super::extract::Extractor;
use super::{Limits, UploadError};

/// Caps the decompressed tar stream. The per-file count in `Extractor` stops
/// bombs in file data, but the tar crate reads GNU long-name and PAX headers
/// into memory whole, and skips the data of entries it yields without us
/// reading it; this bounds both. A legitimate stream is file data plus at
/// most a few KiB of headers and padding per entry.
struct CappedReader<R> {
    inner: R,
    remaining: u64,
    /// Set when the cap is hit, so the (possibly rewrapped) read error can be
    /// reported as TooLarge rather than Corrupt.
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            // Exactly at the cap is fine if the stream ends here.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other(
                "decompressed archive exceeds the size limit",
            ));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn stream_cap(limits: &Limits) -> u64 {
    let per_entry = (limits.max_entries as u64).saturating_mul(8 * 1024);
    limits
        .max_total_bytes
        .saturating_add(per_entry)
        .saturating_add(1024 * 1024)
}

pub(crate) fn extract<R: Read>(src: R, ex: &mut Extractor<'_>) -> Result<(), UploadError> {
    let limits = ex.limits().clone();
    let exceeded = Rc::new(Cell::new(false));
    let reader = CappedReader {
        // Multi: some tools write the stream as several gzip members.
        inner: MultiGzDecoder::new(io::BufReader::new(src)),
        remaining: stream_cap(&limits),
        exceeded: exceeded.clone(),
    };
    let map_read = |e: io::Error| {
        if exceeded.get() {
            UploadError::TooLarge(limits.max_total_bytes)
        } else {
            UploadError::Corrupt(e.to_string())
        }
    };

    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(map_read)? {
        let mut entry = entry.map_err(map_read)?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Metadata only (git archive puts the commit id there).
            continue;
        }
        ex.count_entry()?;
        let name = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            UploadError::BadFileName(String::from_utf8_lossy(e.as_bytes()).into_owned())
        })?;
        let link_target = || -> Result<String, UploadError> {
            let bytes = entry
                .link_name_bytes()
                .ok_or_else(|| UploadError::Corrupt(format!("link {name:?} has no target")))?;
            String::from_utf8(bytes.into_owned())
                .map_err(|_| UploadError::BadFileName(name.clone()))
        };
        match kind {
            EntryType::Directory => ex.dir(&name)?,
            EntryType::Symlink => {
                let target = link_target()?;
                ex.symlink(&name, &target)?;
            }
            EntryType::Link => {
                let target = link_target()?;
                ex.hard_link(&name, &target)?;
            }
            // Old (v7) tars mark directories only by the trailing slash.
            EntryType::Regular if name.ends_with('/') => ex.dir(&name)?,
            EntryType::Regular | EntryType::Continuous => {
                ex.file(&name, &mut entry, &map_read)?;
            }
            // Devices, fifos, sparse files, unknown types.
            _ => return Err(UploadError::SpecialFile(name)),
        }
    }
    Ok(())
}

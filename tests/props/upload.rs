//! Upload extraction (src/upload): archives built here from hostile entries (names
//! with `..`, absolute paths into a watched directory, backslashes, NUL, over-long
//! parts, duplicates, links out and through links, special files, bombs, sizes that
//! lie) plus byte flips and plain garbage, installed over a previous upload.
//!
//! Whatever the input: no panic; nothing appears outside the app directory (a sibling
//! directory is watched, absolute names point into it); a refusal is a client error
//! (never our own I/O failing) and leaves the previous upload as it was; an accepted
//! upload holds only files, directories and links that stay inside, within the limits,
//! with the modes we promise, and is listed exactly.

use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use proptest::collection::vec;
use proptest::prelude::*;
use rserve_proxy::upload::{install, Installed, Limits};
use tar::EntryType;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::{check, Outcome};

const LIMITS: Limits = Limits {
    max_entries: 12,
    max_total_bytes: 3000,
};

/// The previous upload every case starts from.
const PREVIOUS: &[u8] = b"previous <- TRUE\n";

/// A temp dir with `apps/app` (the destination) and `outside` (must stay empty).
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        // Canonical, so paths compare with what canonicalize returns.
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let outside = root.join("outside");
        fs::create_dir(&outside).expect("outside dir");
        let dest = root.join("apps").join("app");
        let s = Sandbox {
            _dir: dir,
            root,
            dest,
            outside,
        };
        s.reset();
        s
    }

    /// Put the previous upload back (after a case replaced it).
    fn reset(&self) {
        install(PREVIOUS, "previous.R", &self.dest, &LIMITS).expect("install the previous upload");
    }

    fn previous_intact(&self) -> bool {
        let names: Vec<_> = match fs::read_dir(&self.dest) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.file_name()).collect(),
            Err(_) => return false,
        };
        names.len() == 1
            && names[0] == "previous.R"
            && fs::read(self.dest.join("previous.R")).is_ok_and(|d| d == PREVIOUS)
    }

    /// Run one upload and check everything the module promises.
    fn check_install(&self, data: &[u8], filename: &str) -> Result<(), TestCaseError> {
        let result = install(data, filename, &self.dest, &LIMITS);
        // Nothing outside, no staging or holding dir left next to the app.
        let outside: Vec<_> = fs::read_dir(&self.outside)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        prop_assert!(outside.is_empty(), "written outside: {outside:?}");
        let mut top: Vec<_> = listing(&self.root);
        top.sort();
        prop_assert_eq!(top, vec!["apps".to_string(), "outside".to_string()]);
        let apps = listing(&self.root.join("apps"));
        prop_assert_eq!(apps, vec!["app".to_string()], "left next to the app");

        match result {
            Err(e) => {
                prop_assert!(
                    e.is_client_error(),
                    "bad input gave a server-side error: {e}"
                );
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(
                    self.previous_intact(),
                    "a refused upload changed the app: {e}"
                );
                Ok(())
            }
            Ok(installed) => {
                let r = self.check_installed(&installed);
                self.reset();
                r
            }
        }
    }

    fn check_installed(&self, installed: &Installed) -> Result<(), TestCaseError> {
        let dest = self
            .dest
            .canonicalize()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut entries = 0usize;
        let mut dirs = vec![(dest.clone(), String::new())];
        while let Some((dir, rel)) = dirs.pop() {
            let mode = fs::symlink_metadata(&dir).map(|m| m.permissions().mode() & 0o7777);
            prop_assert_eq!(mode.ok(), Some(0o755), "mode of dir {}", dir.display());
            for e in fs::read_dir(&dir).map_err(|e| TestCaseError::fail(e.to_string()))? {
                let e = e.map_err(|e| TestCaseError::fail(e.to_string()))?;
                entries += 1;
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = fs::symlink_metadata(e.path())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let ft = meta.file_type();
                if ft.is_dir() {
                    dirs.push((e.path(), rel));
                } else if ft.is_file() {
                    prop_assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "mode of {}", rel);
                    total += meta.len();
                    files.push(rel);
                } else if ft.is_symlink() {
                    prop_assert!(
                        link_stays_inside(&e.path(), &dest),
                        "link {rel} leads outside"
                    );
                } else {
                    return Err(TestCaseError::fail(format!("special file {rel} extracted")));
                }
            }
        }
        files.sort();
        prop_assert!(entries <= LIMITS.max_entries, "{} entries", entries);
        prop_assert!(total <= LIMITS.max_total_bytes, "{} bytes", total);
        prop_assert!(!files.is_empty(), "accepted without files");
        prop_assert_eq!(&installed.files, &files);
        prop_assert_eq!(installed.total_bytes, total);
        Ok(())
    }
}

fn listing(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Does the link resolve to somewhere under `dest`? A link that resolves (through any
/// chain) is checked by its real path; a dangling one by its lexical target from its
/// real parent directory.
fn link_stays_inside(link: &Path, dest: &Path) -> bool {
    if let Ok(real) = link.canonicalize() {
        return real.starts_with(dest);
    }
    let Ok(target) = fs::read_link(link) else {
        return false;
    };
    let Some(parent) = link.parent().and_then(|p| p.canonicalize().ok()) else {
        return false;
    };
    if target.is_absolute() {
        return false;
    }
    let mut out = parent;
    for c in target.components() {
        if c == Component::ParentDir {
            if !out.pop() {
                return false;
            }
        } else if let Component::Normal(p) = c {
            out.push(p);
        }
    }
    out.starts_with(dest)
}

// ---------- hostile entries ----------

#[derive(Debug, Clone)]
enum Data {
    Bytes(Vec<u8>),
    /// Compresses to almost nothing: a bomb once it exceeds the limit.
    Zeros(usize),
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Data::Bytes(b) => b.clone(),
            Data::Zeros(n) => vec![0; *n],
        }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    File(String, Data),
    Dir(String),
    Symlink(String, String),
    /// tar only (zip has none): a hard link.
    HardLink(String, String),
    /// tar only: an entry of this type byte (fifo, device, unknown, …).
    Special(String, u8),
}

fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "c.R", "app.R", "dir", "sub"]).prop_map(str::to_string),
        2 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just(String::new()),
        1 => Just("x\0y".to_string()),
        1 => Just("C:".to_string()),
        1 => Just("ünï cödé".to_string()),
        1 => Just("a".repeat(255)),
        1 => Just("b".repeat(256)),
        1 => "[ -~]{1,12}",
    ]
}

/// Entry names: relative paths of those parts (`/` or `\` between), sometimes
/// absolute, or absolute into the watched `outside` directory.
fn name(outside: String) -> BoxedStrategy<String> {
    let relative = (vec(part(), 1..4), any::<bool>(), any::<bool>())
        .prop_map(|(parts, backslash, trailing)| {
            let mut n = parts.join(if backslash { "\\" } else { "/" });
            if trailing {
                n.push('/');
            }
            n
        })
        .boxed();
    prop_oneof![
        8 => relative.clone(),
        1 => relative.clone().prop_map(|n| format!("/{n}")),
        1 => relative.prop_map(move |n| format!("{outside}/{n}")),
    ]
    .boxed()
}

fn link_target(outside: String) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "a",
            "c.R",
            "dir",
            "dir/c.R",
            ".",
            "..",
            "../x",
            "../../x",
            "dir/../a",
            "dir/../../x",
            "a/b/../../..",
            "sub/..",
            "\\..\\x",
            "/etc/passwd",
            "",
        ])
        .prop_map(str::to_string),
        Just(outside),
        vec(part(), 1..4).prop_map(|p| p.join("/")),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..400).prop_map(Data::Bytes),
        1 => (0usize..20_000).prop_map(Data::Zeros),
    ]
}

fn entry(outside: String, tar: bool) -> BoxedStrategy<Entry> {
    let n = name(outside.clone());
    let common = prop_oneof![
        5 => (n.clone(), data()).prop_map(|(n, d)| Entry::File(n, d)),
        2 => n.clone().prop_map(Entry::Dir),
        2 => (n.clone(), link_target(outside.clone())).prop_map(|(n, t)| Entry::Symlink(n, t)),
    ];
    if !tar {
        return common.boxed();
    }
    prop_oneof![
        9 => common,
        1 => (n.clone(), n.clone()).prop_map(|(a, b)| Entry::HardLink(a, b)),
        1 => (n.clone(), prop::sample::select(vec!["a", "c.R", "dir/c.R", "../x"]))
            .prop_map(|(a, t)| Entry::HardLink(a, t.to_string())),
        1 => (n, prop::sample::select(vec![b'3', b'4', b'6', b'7', b'S', b'V', b'Z', b'\x7f']))
            .prop_map(|(a, k)| Entry::Special(a, k)),
    ]
    .boxed()
}

/// Entries, often repeating earlier names (duplicates, file-then-dir clashes).
fn entries(outside: String, tar: bool) -> impl Strategy<Value = Vec<Entry>> {
    vec(entry(outside, tar), 0..16)
}

/// Byte changes applied to a built archive: (position, xor mask).
fn flips() -> impl Strategy<Value = Vec<(prop::sample::Index, u8)>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ]
}

fn apply(data: &mut [u8], flips: &[(prop::sample::Index, u8)]) {
    if data.is_empty() {
        return;
    }
    for (at, mask) in flips {
        let i = at.index(data.len());
        data[i] ^= mask;
    }
}

// ---------- zip ----------

fn make_zip(entries: &[Entry]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for e in entries {
        // The writer refuses some entries (e.g. a repeated name): leave those out.
        let _ = match e {
            Entry::File(name, data) => w
                .start_file(name.as_str(), opts)
                .and_then(|()| w.write_all(&data.bytes()).map_err(Into::into)),
            Entry::Dir(name) => w.add_directory(name.as_str(), opts),
            Entry::Symlink(name, target) => w.add_symlink(name.as_str(), target.as_str(), opts),
            Entry::HardLink(..) | Entry::Special(..) => Ok(()),
        };
    }
    w.finish().map(Cursor::into_inner).unwrap_or_default()
}

/// Rewrite the first entry's declared uncompressed size (local + central header).
fn lie_about_size(zip: &mut [u8], size: u32) {
    let Some(eocd) = zip.len().checked_sub(22) else {
        return;
    };
    if zip[eocd..eocd + 4] != *b"PK\x05\x06" {
        return;
    }
    let cd = u32::from_le_bytes([
        zip[eocd + 16],
        zip[eocd + 17],
        zip[eocd + 18],
        zip[eocd + 19],
    ]) as usize;
    if cd + 46 > zip.len() || zip[cd..cd + 4] != *b"PK\x01\x02" {
        return;
    }
    zip[cd + 24..cd + 28].copy_from_slice(&size.to_le_bytes());
    let local =
        u32::from_le_bytes([zip[cd + 42], zip[cd + 43], zip[cd + 44], zip[cd + 45]]) as usize;
    if local + 30 <= zip.len() && zip[local..local + 4] == *b"PK\x03\x04" {
        zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    }
}

pub fn zip_entries(cases: u32) -> Outcome {
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_string_lossy().into_owned();
    let strategy = (
        entries(outside, false),
        prop::option::weighted(0.2, any::<u32>()),
        flips(),
    );
    check(cases, strategy, |(entries, lie, flips)| {
        let mut zip = make_zip(&entries);
        if let Some(size) = lie {
            lie_about_size(&mut zip, size);
        }
        apply(&mut zip, &flips);
        sandbox.check_install(&zip, "upload.zip")
    })
}

// ---------- tar.gz ----------

/// A raw GNU header: tar's own setters refuse `..` and absolute names, which is what
/// this needs to write. Names longer than the field are cut.
fn raw_header(name: &str, kind: EntryType, size: u64, link: Option<&str>) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    if let Some(gnu) = h.as_gnu_mut() {
        let n = name.len().min(gnu.name.len());
        gnu.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        if let Some(link) = link {
            let n = link.len().min(gnu.linkname.len());
            gnu.linkname[..n].copy_from_slice(&link.as_bytes()[..n]);
        }
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_cksum();
    *h.as_bytes()
}

/// How an entry's size field relates to the data that follows it.
#[derive(Debug, Clone, Copy)]
enum Size {
    True,
    /// Declared: this many bytes, whatever follows.
    Lie(u64),
}

fn make_tar(entries: &[(Entry, Size)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (e, size) in entries {
        let (name, kind, data, link): (&str, EntryType, Vec<u8>, Option<&str>) = match e {
            Entry::File(n, d) => (n.as_str(), EntryType::Regular, d.bytes(), None),
            Entry::Dir(n) => (n.as_str(), EntryType::Directory, Vec::new(), None),
            Entry::Symlink(n, t) => (n.as_str(), EntryType::Symlink, Vec::new(), Some(t.as_str())),
            Entry::HardLink(n, t) => (n.as_str(), EntryType::Link, Vec::new(), Some(t.as_str())),
            Entry::Special(n, k) => (n.as_str(), EntryType::new(*k), Vec::new(), None),
        };
        let declared = match size {
            Size::True => data.len() as u64,
            Size::Lie(n) => *n,
        };
        out.extend_from_slice(&raw_header(name, kind, declared, link));
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

pub fn targz_entries(cases: u32) -> Outcome {
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_string_lossy().into_owned();
    let size = prop_oneof![
        8 => Just(Size::True),
        1 => prop_oneof![Just(u64::MAX >> 1), Just(1u64 << 40), 0u64..5000].prop_map(Size::Lie),
    ];
    let strategy = (
        vec((entry(outside, true), size), 0..16),
        flips(),
        flips(),
        prop::option::weighted(0.1, any::<prop::sample::Index>()),
    );
    check(cases, strategy, |(entries, tar_flips, gz_flips, cut)| {
        let mut tar = make_tar(&entries);
        apply(&mut tar, &tar_flips);
        let mut gz = gzip(&tar);
        apply(&mut gz, &gz_flips);
        if let Some(cut) = cut {
            gz.truncate(cut.index(gz.len() + 1));
        }
        sandbox.check_install(&gz, "upload.tar.gz")
    })
}

// ---------- anything at all ----------

pub fn arbitrary_bytes(cases: u32) -> Outcome {
    let sandbox = Sandbox::new();
    let filename = prop::sample::select(vec![
        "a.zip",
        "a.tar.gz",
        "a.tgz",
        "app.R",
        "x.r",
        "bad name.R",
        ".R",
        "a.txt",
        "",
        "C:\\Users\\x\\app.R",
        "../../app.R",
    ]);
    let prefix = prop::sample::select(vec![
        &b""[..],
        &b"PK\x03\x04"[..],
        &b"PK\x05\x06"[..],
        &b"\x1f\x8b\x08\x00"[..],
    ]);
    let strategy = (filename, prefix, vec(any::<u8>(), 0..4000));
    check(cases, strategy, |(filename, prefix, body)| {
        let mut data = prefix.to_vec();
        data.extend_from_slice(&body);
        sandbox.check_install(&data, filename)
    })
}

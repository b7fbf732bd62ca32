//! Tests build real archives with the zip/tar writers and install them into
//! real temp dirs. Every refusal also checks that the previous upload is
//! byte-for-byte intact and that no staging/holding dir is left behind.

use super::*;

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use ::zip::write::SimpleFileOptions;
use ::zip::{CompressionMethod, ZipWriter};
use flate2::write::GzEncoder;
use flate2::Compression;
use tar::EntryType;

// ---------- archive builders ----------

enum Z<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Link(&'a str, &'a str),
}

fn make_zip(entries: &[Z<'_>]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for e in entries {
        match e {
            Z::File(name, data) => {
                w.start_file(*name, opts).unwrap();
                w.write_all(data).unwrap();
            }
            Z::Dir(name) => w.add_directory(*name, opts).unwrap(),
            Z::Link(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
        }
    }
    w.finish().unwrap().into_inner()
}

enum T<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Other(&'a str, EntryType),
}

/// A GNU header written byte by byte: tar's own setters refuse `..` and
/// absolute paths, which is exactly what these tests need to produce.
fn raw_header(name: &str, kind: EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(size);
    // Odd modes on purpose: they must not leak into the installed files.
    h.set_mode(if kind == EntryType::Directory {
        0o700
    } else {
        0o600
    });
    h.set_mtime(0);
    h.set_cksum();
    h
}

fn make_tar(entries: &[T<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match e {
            T::File(name, data) => (
                raw_header(name, EntryType::Regular, data.len() as u64, None),
                data,
            ),
            T::Dir(name) => (raw_header(name, EntryType::Directory, 0, None), &[]),
            T::Symlink(name, target) => {
                (raw_header(name, EntryType::Symlink, 0, Some(target)), &[])
            }
            T::HardLink(name, target) => (raw_header(name, EntryType::Link, 0, Some(target)), &[]),
            T::Other(name, kind) => (raw_header(name, *kind, 0, None), &[]),
        };
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn make_tar_gz(entries: &[T<'_>]) -> Vec<u8> {
    gzip(&make_tar(entries))
}

/// Offset of the first central directory header of a zip without comment.
fn central_offset(zip: &[u8]) -> usize {
    let eocd = zip.len() - 22;
    assert_eq!(&zip[eocd..eocd + 4], b"PK\x05\x06");
    u32::from_le_bytes(zip[eocd + 16..eocd + 20].try_into().unwrap()) as usize
}

/// Rewrite the first entry's declared uncompressed size (local + central).
fn lie_about_size(zip: &mut [u8], size: u32) {
    let cd = central_offset(zip);
    assert_eq!(&zip[cd..cd + 4], b"PK\x01\x02");
    zip[cd + 24..cd + 28].copy_from_slice(&size.to_le_bytes());
    let local = u32::from_le_bytes(zip[cd + 42..cd + 46].try_into().unwrap()) as usize;
    assert_eq!(&zip[local..local + 4], b"PK\x03\x04");
    zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
}

/// Rewrite the first entry's unix mode (made-by Unix, external attributes).
fn set_zip_unix_mode(zip: &mut [u8], mode: u32) {
    let cd = central_offset(zip);
    zip[cd + 5] = 3; // "version made by" host: Unix
    zip[cd + 38..cd + 42].copy_from_slice(&(mode << 16).to_le_bytes());
}

// ---------- fixture: a previous upload that must survive refusals ----------

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>, u32),
    Dir(u32),
    Link(PathBuf),
}

/// Everything under `root`, links not followed.
fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(fs::read_link(entry.path()).unwrap()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), Node::Dir(mode));
                walk(&entry.path(), &rel, out);
            } else {
                out.insert(rel, Node::File(fs::read(entry.path()).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn siblings(parent: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

struct Fixture {
    _tmp: tempfile::TempDir,
    parent: PathBuf,
    dest: PathBuf,
    before: BTreeMap<String, Node>,
}

/// `<tmp>/apps/code` holding a previous upload with a file, a subdir and a
/// link, as installed by `install` itself.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("apps");
    let dest = parent.join("code");
    let old = make_tar_gz(&[
        T::File("app.R", b"old app\n"),
        T::Dir("lib/"),
        T::File("lib/util.R", b"util <- 1\n"),
        T::Symlink("lib/main.R", "../app.R"),
    ]);
    install(&old, "old.tar.gz", &dest, &Limits::default()).unwrap();
    let before = snapshot(&dest);
    assert_eq!(before.len(), 4, "{before:?}");
    Fixture {
        _tmp: tmp,
        parent,
        dest,
        before,
    }
}

impl Fixture {
    fn refuse_with(&self, data: &[u8], filename: &str, limits: &Limits) -> UploadError {
        let err = install(data, filename, &self.dest, limits).unwrap_err();
        assert!(err.is_client_error(), "{err:?}");
        assert_eq!(snapshot(&self.dest), self.before, "previous upload changed");
        assert_eq!(siblings(&self.parent), vec!["code"], "leftover temp dirs");
        err
    }

    fn refuse(&self, data: &[u8], filename: &str) -> UploadError {
        self.refuse_with(data, filename, &Limits::default())
    }
}

macro_rules! assert_err {
    ($err:expr, $pat:pat $(if $guard:expr)?) => {
        let err = $err;
        assert!(matches!(err, $pat $(if $guard)?), "unexpected error: {err:?}");
    };
}

fn small(max_entries: usize, max_total_bytes: u64) -> Limits {
    Limits {
        max_entries,
        max_total_bytes,
    }
}

// ---------- accepted uploads ----------

#[test]
fn zip_with_subdirs_installs() {
    let fx = fixture();
    let zip = make_zip(&[
        Z::File("app.R", b"library(Rserve)\n"),
        Z::Dir("R/"),
        Z::File("R/helpers.R", b"f <- function() 1\n"),
        // Parent dir of this one is not listed in the archive.
        Z::File("data/deep/x.csv", b"a,b\n1,2\n"),
    ]);
    let got = install(&zip, "app.zip", &fx.dest, &Limits::default()).unwrap();
    assert_eq!(got.files, vec!["R/helpers.R", "app.R", "data/deep/x.csv"]);
    assert_eq!(got.total_bytes, 16 + 18 + 8);
    assert_eq!(
        fs::read(fx.dest.join("R/helpers.R")).unwrap(),
        b"f <- function() 1\n"
    );
    assert_eq!(siblings(&fx.parent), vec!["code"]);
}

#[test]
fn tar_gz_and_tgz_install() {
    for filename in ["app.tar.gz", "APP.TGZ"] {
        let fx = fixture();
        let tgz = make_tar_gz(&[
            T::Dir("./"),
            T::File("./app.R", b"run()\n"),
            T::Dir("sub/"),
            T::File("sub/a.R", b"a\n"),
        ]);
        let got = install(&tgz, filename, &fx.dest, &Limits::default()).unwrap();
        assert_eq!(got.files, vec!["app.R", "sub/a.R"]);
        assert_eq!(got.total_bytes, 8);
        assert_eq!(fs::read(fx.dest.join("app.R")).unwrap(), b"run()\n");
    }
}

#[test]
fn install_into_missing_dest_creates_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a/b/code");
    let got = install(b"x <- 1\n", "app.R", &dest, &Limits::default()).unwrap();
    assert_eq!(got.files, vec!["app.R"]);
    assert_eq!(siblings(dest.parent().unwrap()), vec!["code"]);
}

#[test]
fn r_script_installs_under_its_base_name() {
    for (client_name, stored) in [
        ("app.R", "app.R"),
        ("my_app-2.r", "my_app-2.r"),
        ("C:\\Users\\me\\shiny.R", "shiny.R"),
        ("/home/me/x.y.R", "x.y.R"),
    ] {
        let fx = fixture();
        let got = install(b"print(1)\n", client_name, &fx.dest, &Limits::default()).unwrap();
        assert_eq!(got.files, vec![stored]);
        assert_eq!(got.total_bytes, 9);
        assert_eq!(siblings(&fx.dest), vec![stored]);
        assert_eq!(fs::read(fx.dest.join(stored)).unwrap(), b"print(1)\n");
        let mode = fs::metadata(fx.dest.join(stored))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}

#[test]
fn success_replaces_old_contents_entirely() {
    let fx = fixture();
    let zip = make_zip(&[Z::File("new.R", b"new\n")]);
    let got = install(&zip, "new.zip", &fx.dest, &Limits::default()).unwrap();
    assert_eq!(got.files, vec!["new.R"]);
    let after = snapshot(&fx.dest);
    assert_eq!(after.keys().collect::<Vec<_>>(), vec!["new.R"]);
    assert!(!fx.dest.join("app.R").exists());
    assert!(!fx.dest.join("lib").exists());
    assert_eq!(siblings(&fx.parent), vec!["code"]);
}

#[test]
fn single_top_level_dir_is_kept() {
    let fx = fixture();
    let zip = make_zip(&[
        Z::Dir("repo-main/"),
        Z::File("repo-main/app.R", b"1\n"),
        Z::File("repo-main/R/u.R", b"2\n"),
    ]);
    let got = install(&zip, "repo-main.zip", &fx.dest, &Limits::default()).unwrap();
    assert_eq!(got.files, vec!["repo-main/R/u.R", "repo-main/app.R"]);
}

#[test]
fn archive_modes_are_ignored() {
    let fx = fixture();
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().unix_permissions(0o777);
    w.add_directory("d/", SimpleFileOptions::default().unix_permissions(0o700))
        .unwrap();
    w.start_file("d/x.R", opts).unwrap();
    w.write_all(b"x").unwrap();
    let zip = w.finish().unwrap().into_inner();
    install(&zip, "a.zip", &fx.dest, &Limits::default()).unwrap();
    let mode = |p: &str| fs::metadata(fx.dest.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("d/x.R"), 0o644);
    assert_eq!(mode("d"), 0o755);
    assert_eq!(
        fs::metadata(&fx.dest).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    // The tar builder above writes 0600 files and 0700 dirs.
    let tgz = make_tar_gz(&[T::Dir("s/"), T::File("s/y.R", b"y")]);
    install(&tgz, "a.tgz", &fx.dest, &Limits::default()).unwrap();
    assert_eq!(mode("s/y.R"), 0o644);
    assert_eq!(mode("s"), 0o755);
}

#[test]
fn links_inside_are_created_as_links() {
    let fx = fixture();
    let tgz = make_tar_gz(&[
        T::File("app.R", b"app\n"),
        T::Symlink("main.R", "app.R"),
        T::Dir("sub/"),
        T::Symlink("sub/up.R", "../app.R"),
        T::Symlink("sub/self", "."),
        // Dangling but inside: harmless.
        T::Symlink("later.R", "not-yet.R"),
        T::HardLink("copy.R", "app.R"),
    ]);
    let got = install(&tgz, "a.tar.gz", &fx.dest, &Limits::default()).unwrap();
    assert_eq!(got.files, vec!["app.R", "copy.R"]);
    assert_eq!(got.total_bytes, 8);
    assert_eq!(
        fs::read_link(fx.dest.join("main.R")).unwrap(),
        Path::new("app.R")
    );
    assert_eq!(
        fs::read_to_string(fx.dest.join("sub/up.R")).unwrap(),
        "app\n"
    );
    // Hard links become independent copies.
    let ino = |p: &str| fs::metadata(fx.dest.join(p)).unwrap().ino();
    assert_ne!(ino("app.R"), ino("copy.R"));
    assert_eq!(fs::read(fx.dest.join("copy.R")).unwrap(), b"app\n");

    let zip = make_zip(&[Z::File("a.R", b"a"), Z::Link("b.R", "a.R")]);
    let got = install(&zip, "a.zip", &fx.dest, &Limits::default()).unwrap();
    assert_eq!(got.files, vec!["a.R"]);
    assert_eq!(
        fs::read_link(fx.dest.join("b.R")).unwrap(),
        Path::new("a.R")
    );
}

#[test]
fn later_tar_entry_replaces_earlier_file() {
    let fx = fixture();
    let tgz = make_tar_gz(&[T::File("a.R", b"first"), T::File("a.R", b"second")]);
    let got = install(&tgz, "a.tgz", &fx.dest, &Limits::default()).unwrap();
    assert_eq!(got.files, vec!["a.R"]);
    assert_eq!(fs::read(fx.dest.join("a.R")).unwrap(), b"second");
}

#[test]
fn kind_from_filename() {
    use UploadKind::*;
    assert_eq!(UploadKind::from_filename("app.R"), Some(RScript));
    assert_eq!(UploadKind::from_filename("app.r"), Some(RScript));
    assert_eq!(UploadKind::from_filename("A.ZIP"), Some(Zip));
    assert_eq!(UploadKind::from_filename("a.tar.gz"), Some(TarGz));
    assert_eq!(UploadKind::from_filename("a.Tgz"), Some(TarGz));
    assert_eq!(UploadKind::from_filename("dir.zip/app.py"), None);
    assert_eq!(UploadKind::from_filename("a.tar"), None);
    assert_eq!(UploadKind::from_filename("a.gz"), None);
    assert_eq!(UploadKind::from_filename(""), None);
}

#[test]
fn server_side_failure_is_io_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // The parent of dest is a regular file: nothing can be created there.
    let parent = tmp.path().join("not-a-dir");
    fs::write(&parent, b"x").unwrap();
    let err = install(b"1\n", "app.R", &parent.join("code"), &Limits::default()).unwrap_err();
    assert!(!err.is_client_error());
    assert_err!(err, UploadError::Io(_));
    assert_eq!(siblings(tmp.path()), vec!["not-a-dir"]);
}

#[test]
fn error_messages_name_the_problem() {
    let msg = UploadError::ParentDir("../x".into()).to_string();
    assert!(msg.contains("\"../x\""), "{msg}");
    assert!(msg.contains("outside the app directory"), "{msg}");
    assert!(msg.contains("upload again"), "{msg}");
    assert!(UploadError::TooLarge(10).to_string().contains("10 bytes"));
    assert!(UploadError::Empty.is_client_error());
    assert!(!UploadError::Io(io::Error::other("disk")).is_client_error());
}

// ---------- refusals ----------

#[test]
fn unsupported_type_is_refused() {
    let fx = fixture();
    for name in ["app.py", "app.tar", "app"] {
        assert_err!(fx.refuse(b"data", name), UploadError::UnsupportedType(_));
    }
}

#[test]
fn bad_r_names_are_refused() {
    let fx = fixture();
    for name in ["my app.R", ".R", "a;rm -rf.R", "x/$(id).R", "é.R"] {
        assert_err!(fx.refuse(b"1", name), UploadError::BadFileName(_));
    }
}

#[test]
fn zip_slip_is_refused() {
    let fx = fixture();
    let zip = make_zip(&[Z::File("ok.R", b"1"), Z::File("../evil.R", b"boom")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::ParentDir(ref n) if n == "../evil.R");
    assert!(!fx.parent.join("evil.R").exists());

    let zip = make_zip(&[Z::File("a/../../evil.R", b"boom")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::ParentDir(_));
    let zip = make_zip(&[Z::File("..\\evil.R", b"boom")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::ParentDir(_));

    let tgz = make_tar_gz(&[T::File("ok.R", b"1"), T::File("../evil.R", b"boom")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::ParentDir(ref n) if n == "../evil.R");
    assert!(!fx.parent.join("evil.R").exists());
}

#[test]
fn absolute_paths_are_refused() {
    let fx = fixture();
    for name in [
        "/etc/x",
        "C:\\evil.R",
        "c:/evil.R",
        "\\evil.R",
        "\\\\server\\share\\x",
    ] {
        let zip = make_zip(&[Z::File("ok.R", b"1"), Z::File(name, b"boom")]);
        assert_err!(fx.refuse(&zip, "a.zip"), UploadError::AbsolutePath(ref n) if n == name);
    }
    let tgz = make_tar_gz(&[T::File("/etc/x", b"boom")]);
    assert_err!(fx.refuse(&tgz, "a.tar.gz"), UploadError::AbsolutePath(_));
}

#[test]
fn symlink_escapes_are_refused() {
    let fx = fixture();
    let tgz = make_tar_gz(&[T::File("app.R", b"1"), T::Symlink("etc", "../../etc")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(ref n) if n == "etc");

    let tgz = make_tar_gz(&[T::Dir("d/"), T::Symlink("d/x", "../../x")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(_));

    let tgz = make_tar_gz(&[T::File("app.R", b"1"), T::Symlink("pw", "/etc/passwd")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(_));

    let zip = make_zip(&[Z::File("app.R", b"1"), Z::Link("etc", "../../etc")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::LinkEscape(ref n) if n == "etc");
}

#[test]
fn symlink_chains_that_escape_are_refused() {
    let fx = fixture();
    // Each link alone stays inside; together `b` leads to <parent>/etc.
    let tgz = make_tar_gz(&[
        T::File("app.R", b"1"),
        T::Symlink("a", "."),
        T::Symlink("b", "a/../etc"),
    ]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(ref n) if n == "b");
    // Same with the links in the other order.
    let tgz = make_tar_gz(&[
        T::File("app.R", b"1"),
        T::Symlink("b", "a/../etc"),
        T::Symlink("a", "."),
    ]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(ref n) if n == "b");
    // Through a deeper link: a -> sub/sub2, b -> a/../../..
    let tgz = make_tar_gz(&[
        T::Dir("sub/sub2/"),
        T::File("app.R", b"1"),
        T::Symlink("a", "sub/sub2"),
        T::Symlink("b", "a/../../.."),
    ]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(_));
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let fx = fixture();
    // The link points inside, but nothing may be written through it.
    let tgz = make_tar_gz(&[
        T::Dir("sub/"),
        T::Symlink("d", "sub"),
        T::File("d/x.R", b"x"),
    ]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(ref n) if n == "d/x.R");
    // Nor may a file replace a link (open would follow it).
    let tgz = make_tar_gz(&[
        T::File("app.R", b"1"),
        T::Symlink("l.R", "app.R"),
        T::File("l.R", b"overwrite"),
    ]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(ref n) if n == "l.R");
    let zip = make_zip(&[Z::Dir("sub/"), Z::Link("d", "sub"), Z::File("d/x.R", b"x")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::LinkEscape(_));
}

#[test]
fn hard_link_escapes_are_refused() {
    let fx = fixture();
    for target in ["../../etc/passwd", "/etc/passwd", "../code/app.R"] {
        let tgz = make_tar_gz(&[T::File("app.R", b"1"), T::HardLink("h", target)]);
        assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(ref n) if n == "h");
    }
    // Through a symlink (even one pointing inside), or to a missing file.
    let tgz = make_tar_gz(&[
        T::Dir("sub/"),
        T::File("sub/x", b"1"),
        T::Symlink("s", "sub"),
        T::HardLink("h", "s/x"),
    ]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::LinkEscape(_));
    let tgz = make_tar_gz(&[T::File("app.R", b"1"), T::HardLink("h", "missing")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::Corrupt(_));
}

#[test]
fn special_files_are_refused() {
    let fx = fixture();
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let tgz = make_tar_gz(&[T::File("app.R", b"1"), T::Other("dev", kind)]);
        assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::SpecialFile(ref n) if n == "dev");
    }
    // A zip entry whose unix mode says fifo / char device.
    for mode in [0o010_644, 0o020_644] {
        let mut zip = make_zip(&[Z::File("dev", b"")]);
        set_zip_unix_mode(&mut zip, mode);
        assert_err!(fx.refuse(&zip, "a.zip"), UploadError::SpecialFile(ref n) if n == "dev");
    }
}

#[test]
fn too_many_entries_are_refused() {
    let fx = fixture();
    let names = ["a.R", "b.R", "c.R", "d.R", "e.R"];
    let zip = make_zip(&names.map(|n| Z::File(n, b"1")));
    let err = fx.refuse_with(&zip, "a.zip", &small(3, 1 << 20));
    assert_err!(err, UploadError::TooManyEntries(3));
    let tgz = make_tar_gz(&names.map(|n| T::File(n, b"1")));
    let err = fx.refuse_with(&tgz, "a.tgz", &small(3, 1 << 20));
    assert_err!(err, UploadError::TooManyEntries(3));
    // Exactly at the limit is fine.
    install(&tgz, "a.tgz", &fx.dest, &small(5, 1 << 20)).unwrap();
}

#[test]
fn bombs_are_refused() {
    let fx = fixture();
    let zeros = vec![0u8; 4 << 20];
    let limits = small(100, 1 << 20);

    let zip = make_zip(&[Z::File("bomb.bin", &zeros)]);
    assert!(zip.len() < 64 << 10);
    assert_err!(fx.refuse_with(&zip, "a.zip", &limits), UploadError::TooLarge(n) if n == 1 << 20);

    let tgz = make_tar_gz(&[T::File("bomb.bin", &zeros)]);
    assert_err!(
        fx.refuse_with(&tgz, "a.tgz", &limits),
        UploadError::TooLarge(_)
    );

    // Many small files adding up.
    let chunk = vec![b'x'; 300 << 10];
    let tgz = make_tar_gz(&[
        T::File("1", &chunk),
        T::File("2", &chunk),
        T::File("3", &chunk),
        T::File("4", &chunk),
    ]);
    assert_err!(
        fx.refuse_with(&tgz, "a.tgz", &limits),
        UploadError::TooLarge(_)
    );

    // Right at the limit is fine.
    let exact = vec![0u8; 1 << 20];
    let zip = make_zip(&[Z::File("exact.bin", &exact)]);
    install(&zip, "a.zip", &fx.dest, &limits).unwrap();
}

#[test]
fn zip_bomb_with_lying_header_is_refused() {
    let fx = fixture();
    let mut zip = make_zip(&[Z::File("bomb.bin", &vec![0u8; 4 << 20])]);
    // Claims 10 bytes; the data inflates to 4 MiB.
    lie_about_size(&mut zip, 10);
    let err = fx.refuse_with(&zip, "a.zip", &small(100, 1 << 20));
    assert_err!(err, UploadError::TooLarge(_));
}

#[test]
fn tar_data_skipped_by_the_reader_is_capped_too() {
    let fx = fixture();
    // A directory entry carrying 4 MiB of data: never handed to the
    // extractor, but still decompressed by the tar reader to skip it.
    let mut b = tar::Builder::new(Vec::new());
    let data = vec![0u8; 4 << 20];
    b.append(
        &raw_header("d/", EntryType::Directory, data.len() as u64, None),
        &data[..],
    )
    .unwrap();
    b.append(&raw_header("a.R", EntryType::Regular, 1, None), &b"1"[..])
        .unwrap();
    let tgz = gzip(&b.into_inner().unwrap());
    let err = fx.refuse_with(&tgz, "a.tgz", &small(2, 1024));
    assert_err!(err, UploadError::TooLarge(1024));
}

#[test]
fn corrupt_archives_are_refused() {
    let fx = fixture();
    assert_err!(
        fx.refuse(b"this is not a zip", "a.zip"),
        UploadError::Corrupt(_)
    );
    assert_err!(
        fx.refuse(b"this is not gzip", "a.tar.gz"),
        UploadError::Corrupt(_)
    );

    let good_zip = make_zip(&[Z::File("a.R", &[7u8; 5000]), Z::File("b.R", b"b")]);
    assert_err!(
        fx.refuse(&good_zip[..good_zip.len() / 2], "a.zip"),
        UploadError::Corrupt(_)
    );
    // Flip a byte inside the compressed data: checksum or inflate error.
    let mut bad = make_zip(&[Z::File("a.R", b"some R code here, some R code here\n")]);
    bad[40] ^= 0xff;
    assert_err!(fx.refuse(&bad, "a.zip"), UploadError::Corrupt(_));

    let good_tgz = make_tar_gz(&[T::File("a.R", &[7u8; 5000]), T::File("b.R", b"b")]);
    assert_err!(
        fx.refuse(&good_tgz[..good_tgz.len() / 2], "a.tgz"),
        UploadError::Corrupt(_)
    );
    // Valid gzip, not a tar.
    assert_err!(
        fx.refuse(&gzip(&[1u8; 2048]), "a.tgz"),
        UploadError::Corrupt(_)
    );
    // A zip named .tar.gz.
    assert_err!(fx.refuse(&good_zip, "a.tar.gz"), UploadError::Corrupt(_));
}

#[test]
fn empty_uploads_are_refused() {
    let fx = fixture();
    assert_err!(fx.refuse(b"", "app.R"), UploadError::Empty);
    assert_err!(fx.refuse(b"", "app.zip"), UploadError::Empty);
    let zip = make_zip(&[]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::Empty);
    let zip = make_zip(&[Z::Dir("a/"), Z::Dir("a/b/")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::Empty);
    let tgz = make_tar_gz(&[]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::Empty);
    let tgz = make_tar_gz(&[T::Dir("d/"), T::Symlink("l", "d")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::Empty);
}

#[test]
fn entry_clashes_are_refused() {
    let fx = fixture();
    let tgz = make_tar_gz(&[T::File("a", b"1"), T::File("a/b.R", b"2")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::Corrupt(_));
    let tgz = make_tar_gz(&[T::Dir("a/"), T::File("a", b"2")]);
    assert_err!(fx.refuse(&tgz, "a.tgz"), UploadError::Corrupt(_));
}

#[test]
fn overlong_names_are_refused() {
    let fx = fixture();
    let long = format!("{}.R", "x".repeat(300));
    let zip = make_zip(&[Z::File(&long, b"1")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::BadFileName(_));
    let deep = "d/".repeat(1100) + "x.R";
    let zip = make_zip(&[Z::File(&deep, b"1")]);
    assert_err!(fx.refuse(&zip, "a.zip"), UploadError::BadFileName(_));
}

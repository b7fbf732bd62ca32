//! `POST /api/apps/:id/upload` through the API: accepted uploads land under
//! `<data>/uploads/<app-id>/`; every refused one leaves the previous upload exactly as
//! it was (checked byte for byte on disk) and no temp dirs behind.

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;

use axum::http::{header, Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use common::{Cred, Harness, Part, Reply};

// ---------- archive builders ----------

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

fn zip_with_symlink(name: &str, target: &str) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default();
    w.start_file("app.R", opts).unwrap();
    w.write_all(b"1\n").unwrap();
    w.add_symlink(name, target, opts).unwrap();
    w.finish().unwrap().into_inner()
}

/// A GNU tar header written field by field: tar's own setters refuse `..` and
/// absolute paths, which is exactly what these tests need.
fn tar_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
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
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

enum T<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Char(&'a str),
}

fn tar_gz_of(entries: &[T<'_>]) -> Vec<u8> {
    use tar::EntryType;
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match e {
            T::File(name, data) => (
                tar_header(name, EntryType::Regular, data.len() as u64, None),
                data,
            ),
            T::Dir(name) => (tar_header(name, EntryType::Directory, 0, None), &[]),
            T::Symlink(name, target) => {
                (tar_header(name, EntryType::Symlink, 0, Some(target)), &[])
            }
            T::Char(name) => (tar_header(name, EntryType::Char, 0, None), &[]),
        };
        b.append(&h, data).unwrap();
    }
    gzip(&b.into_inner().unwrap())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A raw deflate stream of `prefix` followed by `mib` MiB of zeros, built without
/// compressing all of it: one sync-flushed block of 1 MiB of zeros (compressed with
/// a window already full of zeros) decodes the same wherever it is repeated.
fn deflate_zeros(prefix: &[u8], mib: usize) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(prefix).unwrap();
    enc.write_all(&zeros).unwrap();
    enc.flush().unwrap();
    let head_len = enc.get_ref().len();
    enc.write_all(&zeros).unwrap();
    enc.flush().unwrap();
    let all = enc.get_ref();
    let (head, block) = all.split_at(head_len);
    let mut out = head.to_vec();
    for _ in 1..mib {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&[0x03, 0x00]); // empty final block
    out
}

/// A .tar.gz whose one file inflates to `mib` MiB of zeros.
fn tar_gz_bomb(mib: usize) -> Vec<u8> {
    let header = tar_header(
        "bomb.bin",
        tar::EntryType::Regular,
        (mib as u64) << 20,
        None,
    );
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate_zeros(header.as_bytes(), mib));
    out.extend_from_slice(&[0; 8]); // CRC and size: never reached
    out
}

/// A .zip whose one entry inflates to `mib` MiB of zeros (and whose header says so).
fn zip_bomb(mib: usize) -> Vec<u8> {
    let data = deflate_zeros(&[], mib);
    let name = b"bomb.bin";
    let size = u32::try_from(mib << 20).unwrap();
    let clen = u32::try_from(data.len()).unwrap();
    let mut out = Vec::new();
    // Local file header.
    out.extend_from_slice(b"PK\x03\x04");
    out.extend_from_slice(&20u16.to_le_bytes()); // version needed
    out.extend_from_slice(&0u16.to_le_bytes()); // flags
    out.extend_from_slice(&8u16.to_le_bytes()); // deflate
    out.extend_from_slice(&[0; 4]); // time, date
    out.extend_from_slice(&0u32.to_le_bytes()); // crc: never reached
    out.extend_from_slice(&clen.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&data);
    // Central directory.
    let cd_offset = u32::try_from(out.len()).unwrap();
    out.extend_from_slice(b"PK\x01\x02");
    out.extend_from_slice(&20u16.to_le_bytes()); // made by
    out.extend_from_slice(&20u16.to_le_bytes()); // needed
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&clen.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0; 2 + 2 + 2 + 2 + 4]); // extra, comment, disk, attrs
    out.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    out.extend_from_slice(name);
    let cd_len = u32::try_from(out.len()).unwrap() - cd_offset;
    // End of central directory.
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

// ---------- what is on disk ----------

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
    Link(std::path::PathBuf),
}

/// Everything under `root`, by relative path, with file contents.
fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(std::fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), Node::Dir);
                walk(&path, &rel, out);
            } else {
                out.insert(rel, Node::File(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// Names directly under `<data>/uploads` (app dirs, and any leftover temp dirs).
fn upload_root_entries(h: &Harness) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(h.dir.path().join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn file(data: &[u8]) -> Node {
    Node::File(data.to_vec())
}

/// An admin and one upload app holding a first upload (app.R, R/util.R, data/d.csv).
struct Fixture {
    h: Harness,
    admin: Cred,
    id: String,
    before: BTreeMap<String, Node>,
}

async fn fixture() -> Fixture {
    fixture_with(Harness::new().await).await
}

async fn fixture_with(h: Harness) -> Fixture {
    let admin = h.admin().await;
    let id = h.app(&admin, "up-app").await;
    let zip = zip_of(&[
        ("app.R", b"library(Rserve)\n"),
        ("R/", b""),
        ("R/util.R", b"u <- 1\n"),
        ("data/d.csv", b"a,b\n1,2\n"),
    ]);
    h.upload(&admin, &id, "first.zip", &zip)
        .await
        .expect(StatusCode::OK);
    let before = snapshot(&h.upload_dir(&id));
    assert_eq!(before.len(), 5, "{before:?}");
    Fixture {
        h,
        admin,
        id,
        before,
    }
}

impl Fixture {
    /// Upload, expect a 400 containing `needle`, and check nothing changed.
    async fn refused(&self, filename: &str, data: &[u8], needle: &str) -> Reply {
        let r = self.h.upload(&self.admin, &self.id, filename, data).await;
        r.expect_bad_request(needle);
        self.unchanged().await;
        r
    }

    async fn unchanged(&self) {
        let h = &self.h;
        assert_eq!(
            snapshot(&h.upload_dir(&self.id)),
            self.before,
            "previous upload changed"
        );
        let entries = upload_root_entries(h);
        assert!(entries.contains(&self.id));
        assert!(
            entries.iter().all(|e| Uuid::parse_str(e).is_ok()),
            "leftover temp dirs: {entries:?}"
        );
        let rec = h
            .state
            .store
            .get_upload(self.id.parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(rec.filename, "first.zip");
        let app = h
            .call(
                Method::GET,
                &format!("/api/apps/{}", self.id),
                &self.admin,
                None,
            )
            .await;
        assert_eq!(app.body["app"]["entryScript"], "run_rserve.R");
        // Nothing escaped into the data dir.
        for p in ["evil.R", "uploads/evil.R", "etc", "uploads/etc", "dev"] {
            assert!(
                std::fs::symlink_metadata(h.dir.path().join(p)).is_err(),
                "{p} exists"
            );
        }
    }
}

// ---------- accepted uploads ----------

#[tokio::test]
async fn an_r_script_becomes_the_entry_script() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "script-app").await;
    let r = h
        .upload(&admin, &id, "my_app-1.R", b"print('hello')\n")
        .await;
    assert_eq!(
        *r.expect(StatusCode::OK),
        json!({
            "ok": true,
            "path": format!("uploads/{id}"),
            "filename": "my_app-1.R",
            "files": ["my_app-1.R"],
            "entryScript": "my_app-1.R"
        })
    );
    let dir = h.upload_dir(&id);
    assert_eq!(
        snapshot(&dir),
        BTreeMap::from([("my_app-1.R".to_string(), file(b"print('hello')\n"))])
    );
    let app = h
        .call(Method::GET, &format!("/api/apps/{id}"), &admin, None)
        .await;
    assert_eq!(
        app.expect(StatusCode::OK)["app"]["entryScript"],
        "my_app-1.R"
    );
    assert!(upload_root_entries(&h) == vec![id.clone()]);

    // A client-side directory in the file name is dropped, never followed.
    let r = h.upload(&admin, &id, "../../evil.R", b"x <- 1\n").await;
    assert_eq!(r.expect(StatusCode::OK)["files"], json!(["evil.R"]));
    assert!(dir.join("evil.R").is_file());
    assert!(!h.dir.path().join("evil.R").exists());
    assert!(!h.dir.path().join("uploads/evil.R").exists());
    // The new upload replaced the old one entirely.
    assert!(!dir.join("my_app-1.R").exists());
}

#[tokio::test]
async fn a_zip_with_subdirectories_is_extracted() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "zip-app").await;
    let zip = zip_of(&[
        ("main.R", b"library(Rserve)\n"),
        ("www/", b""),
        ("www/index.html", b"<html></html>\n"),
        ("data/deep/x.csv", b"1,2\n"),
    ]);
    let r = h.upload(&admin, &id, "app.zip", &zip).await;
    assert_eq!(
        *r.expect(StatusCode::OK),
        json!({
            "ok": true,
            "path": format!("uploads/{id}"),
            "filename": "app.zip",
            "files": ["data/deep/x.csv", "main.R", "www/index.html"],
            "entryScript": "main.R"
        })
    );
    let dir = h.upload_dir(&id);
    assert_eq!(
        snapshot(&dir),
        BTreeMap::from([
            ("data".to_string(), Node::Dir),
            ("data/deep".to_string(), Node::Dir),
            ("data/deep/x.csv".to_string(), file(b"1,2\n")),
            ("main.R".to_string(), file(b"library(Rserve)\n")),
            ("www".to_string(), Node::Dir),
            ("www/index.html".to_string(), file(b"<html></html>\n")),
        ])
    );
    let rec = h
        .state
        .store
        .get_upload(id.parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(rec.files, ["data/deep/x.csv", "main.R", "www/index.html"]);
    assert_eq!(rec.path, format!("uploads/{id}"));

    // Several R scripts: no entry script is chosen, the app keeps its own.
    let zip = zip_of(&[("a.R", b"1\n"), ("R/b.R", b"2\n")]);
    let r = h.upload(&admin, &id, "two.zip", &zip).await;
    let body = r.expect(StatusCode::OK);
    assert_eq!(body["files"], json!(["R/b.R", "a.R"]));
    assert!(body.get("entryScript").is_none(), "{body}");
    let app = h
        .call(Method::GET, &format!("/api/apps/{id}"), &admin, None)
        .await;
    assert_eq!(app.body["app"]["entryScript"], "main.R");
    assert!(!dir.join("main.R").exists(), "old files left behind");

    // One top-level directory is kept as is; a script inside it is not promoted.
    let zip = zip_of(&[("repo-main/app.R", b"1\n"), ("repo-main/README", b"r\n")]);
    let r = h.upload(&admin, &id, "repo-main.zip", &zip).await;
    let body = r.expect(StatusCode::OK);
    assert_eq!(
        body["files"],
        json!(["repo-main/README", "repo-main/app.R"])
    );
    assert!(body.get("entryScript").is_none(), "{body}");
    assert!(dir.join("repo-main/app.R").is_file());
}

#[tokio::test]
async fn tar_gz_and_tgz_are_extracted() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "tar-app").await;
    let tgz = tar_gz_of(&[
        T::File("run.R", b"library(Rserve)\n"),
        T::Dir("lib/"),
        T::File("lib/helpers.txt", b"helpers\n"),
        T::Symlink("lib/run.R", "../run.R"),
    ]);
    for filename in ["code.tar.gz", "code.tgz"] {
        let r = h.upload(&admin, &id, filename, &tgz).await;
        assert_eq!(
            *r.expect(StatusCode::OK),
            json!({
                "ok": true,
                "path": format!("uploads/{id}"),
                "filename": filename,
                "files": ["lib/helpers.txt", "run.R"],
                "entryScript": "run.R"
            })
        );
        assert_eq!(
            snapshot(&h.upload_dir(&id)),
            BTreeMap::from([
                ("lib".to_string(), Node::Dir),
                ("lib/helpers.txt".to_string(), file(b"helpers\n")),
                ("lib/run.R".to_string(), Node::Link("../run.R".into())),
                ("run.R".to_string(), file(b"library(Rserve)\n")),
            ])
        );
    }
}

#[tokio::test]
async fn the_route_accepts_more_than_the_json_body_limit() {
    // JSON bodies are capped at 1 MiB; uploads have their own (50 MB) limit.
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "big-app").await;
    let data = vec![b'#'; 3 << 20];
    let r = h.upload(&admin, &id, "big.R", &data).await;
    assert_eq!(r.expect(StatusCode::OK)["files"], json!(["big.R"]));
    assert_eq!(
        std::fs::read(h.upload_dir(&id).join("big.R")).unwrap(),
        data
    );
}

// ---------- refused archives leave the previous upload intact ----------

#[tokio::test]
async fn path_escapes_are_refused() {
    let fx = fixture().await;
    let outside = "points outside the app directory";
    fx.refused(
        "slip.zip",
        &zip_of(&[("ok.R", b"1"), ("../evil.R", b"boom")]),
        outside,
    )
    .await;
    fx.refused("slip.zip", &zip_of(&[("a/../../evil.R", b"boom")]), outside)
        .await;
    fx.refused(
        "slip.tar.gz",
        &tar_gz_of(&[T::File("ok.R", b"1"), T::File("../evil.R", b"boom")]),
        outside,
    )
    .await;

    let absolute = "has an absolute path";
    fx.refused(
        "abs.zip",
        &zip_of(&[("ok.R", b"1"), ("/tmp/evil.R", b"boom")]),
        absolute,
    )
    .await;
    fx.refused(
        "abs.tgz",
        &tar_gz_of(&[T::File("/tmp/evil.R", b"boom")]),
        absolute,
    )
    .await;
    assert!(!Path::new("/tmp/evil.R").exists());
}

#[tokio::test]
async fn links_out_and_special_files_are_refused() {
    let fx = fixture().await;
    let link = "is a link leading outside the app directory";
    fx.refused(
        "link.tgz",
        &tar_gz_of(&[T::File("app.R", b"1"), T::Symlink("etc", "../../etc")]),
        link,
    )
    .await;
    fx.refused(
        "link.tgz",
        &tar_gz_of(&[T::File("app.R", b"1"), T::Symlink("pw", "/etc/passwd")]),
        link,
    )
    .await;
    fx.refused("link.zip", &zip_with_symlink("etc", "../../etc"), link)
        .await;
    // A link pointing inside, then a file written through it.
    fx.refused(
        "through.tgz",
        &tar_gz_of(&[
            T::Dir("sub/"),
            T::Symlink("d", "sub"),
            T::File("d/x.R", b"x"),
        ]),
        link,
    )
    .await;

    let r = fx
        .refused(
            "dev.tar.gz",
            &tar_gz_of(&[T::File("app.R", b"1"), T::Char("dev")]),
            "is not a regular file, directory or link",
        )
        .await;
    assert!(r.body["error"].as_str().unwrap().contains("\"dev\""));
}

#[tokio::test]
async fn bad_files_are_refused() {
    let fx = fixture().await;
    fx.refused("app.exe", b"MZ", "is not a supported upload")
        .await;
    fx.refused("noext", b"1", "is not a supported upload").await;
    fx.refused("my app.R", b"1", "is not allowed").await;
    fx.refused("app.R", b"", "contains no files").await;
    fx.refused("app.zip", b"", "contains no files").await;
    fx.refused("empty.zip", &zip_of(&[]), "contains no files")
        .await;
    fx.refused("junk.zip", b"this is not a zip file", "could not be read")
        .await;
    fx.refused("junk.tgz", b"\x1f\x8b\x08garbage", "could not be read")
        .await;
    // A zip named .tar.gz is read as what its name says.
    fx.refused(
        "misnamed.tar.gz",
        &zip_of(&[("a.R", b"1")]),
        "could not be read",
    )
    .await;
}

#[tokio::test]
async fn archive_bombs_are_refused() {
    // The API uses the real limit (500 MiB expanded); these inflate to 600 MiB from
    // about 600 KB and must be stopped at the limit. (About 3 s each in a debug build.)
    let fx = fixture().await;
    let expands = "the upload expands to more than 524288000 bytes";
    let tgz = tar_gz_bomb(600);
    assert!(tgz.len() < 2 << 20, "{}", tgz.len());
    fx.refused("bomb.tar.gz", &tgz, expands).await;
    let zip = zip_bomb(600);
    assert!(zip.len() < 2 << 20, "{}", zip.len());
    fx.refused("bomb.zip", &zip, expands).await;
}

// ---------- refused requests ----------

#[tokio::test]
async fn git_sourced_apps_take_no_upload() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let r = h
        .call(
            Method::POST,
            "/api/apps",
            &admin,
            Some(json!({ "name": "G", "slug": "git-app",
                         "codeSource": { "type": "git", "repoUrl": "https://example.org/g.git" } })),
        )
        .await;
    let id = r.expect(StatusCode::CREATED)["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.upload(&admin, &id, "app.R", b"1\n").await.expect_error(
        StatusCode::BAD_REQUEST,
        "This app uses git source. Change codeSource to \"upload\" first.",
    );
    assert!(!h.upload_dir(&id).exists());

    // Switching to upload allows it.
    h.call(
        Method::PUT,
        &format!("/api/apps/{id}"),
        &admin,
        Some(json!({ "codeSource": { "type": "upload" } })),
    )
    .await
    .expect(StatusCode::OK);
    h.upload(&admin, &id, "app.R", b"1\n")
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_multipart_body_must_hold_exactly_one_file() {
    let fx = fixture().await;
    let (h, admin, id) = (&fx.h, &fx.admin, fx.id.as_str());

    h.multipart(admin, id, &[])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "No file uploaded");
    h.multipart(admin, id, &[Part::field("note", b"hello")])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "No file uploaded");
    fx.unchanged().await;

    h.multipart(
        admin,
        id,
        &[
            Part::file("a", "a.R", b"1\n"),
            Part::file("b", "b.R", b"2\n"),
        ],
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "Send exactly one file per upload");
    fx.unchanged().await;

    // Plain fields next to the file are ignored; the field name is free.
    let r = h
        .multipart(
            admin,
            id,
            &[
                Part::field("comment", b"v2"),
                Part::file("code", "v2.R", b"2\n"),
            ],
        )
        .await;
    assert_eq!(r.expect(StatusCode::OK)["files"], json!(["v2.R"]));
}

#[tokio::test]
async fn a_body_that_is_not_multipart_is_400() {
    let fx = fixture().await;
    let path = format!("/api/apps/{}/upload", fx.id);
    let not_multipart = "Expected a multipart/form-data body with one file";
    fx.h.call(
        Method::POST,
        &path,
        &fx.admin,
        Some(json!({ "file": "app.R" })),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, not_multipart);
    fx.h.call(Method::POST, &path, &fx.admin, None)
        .await
        .expect_error(StatusCode::BAD_REQUEST, not_multipart);
    // Declared multipart, but the boundary never appears.
    fx.h.call_raw(
        Method::POST,
        &path,
        &fx.admin,
        "multipart/form-data; boundary=xyz",
        "not really multipart",
    )
    .await
    .expect_bad_request("multipart");
    fx.h.call_raw(Method::POST, &path, &fx.admin, "multipart/form-data", "x")
        .await
        .expect_error(StatusCode::BAD_REQUEST, not_multipart);
    fx.unchanged().await;
}

#[tokio::test]
async fn uploads_follow_the_app_access_rules() {
    let fx = fixture().await;
    let h = &fx.h;
    let (owner, _) = h.user(&fx.admin, "uma").await;
    let (other, _) = h.user(&fx.admin, "vic").await;
    let own = h.app(&owner, "umas-app").await;

    // Someone else's app (the fixture's, owned by admin) is out of reach.
    h.upload(&owner, &fx.id, "app.R", b"1\n")
        .await
        .expect_error(StatusCode::FORBIDDEN, "Access denied");
    h.upload(&other, &own, "app.R", b"1\n")
        .await
        .expect_error(StatusCode::FORBIDDEN, "Access denied");
    fx.unchanged().await;
    assert!(!h.upload_dir(&own).exists());

    h.upload(&owner, &own, "app.R", b"1\n")
        .await
        .expect(StatusCode::OK);
    // Admins may upload to anyone's app.
    h.upload(&fx.admin, &own, "admin.R", b"2\n")
        .await
        .expect(StatusCode::OK);
    assert!(h.upload_dir(&own).join("admin.R").is_file());

    h.upload(&owner, &Uuid::new_v4().to_string(), "app.R", b"1\n")
        .await
        .expect_error(StatusCode::NOT_FOUND, "App not found");
    h.upload(&owner, "not-an-id", "app.R", b"1\n")
        .await
        .expect_bad_request("Invalid id");
    h.upload(&Cred::None, &own, "app.R", b"1\n")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
}

#[tokio::test]
async fn uploads_over_the_limit_are_413() {
    let h = Harness::with_config(|c| c.upload_max_bytes = 1 << 20).await;
    let fx = fixture_with(h).await;
    let too_large = "The file is larger than the 1 MB upload limit";

    // Exactly the limit is fine.
    let at_limit = vec![b'#'; 1 << 20];
    let other = fx.h.app(&fx.admin, "limit-app").await;
    fx.h.upload(&fx.admin, &other, "big.R", &at_limit)
        .await
        .expect(StatusCode::OK);

    // Just over: refused by the size check.
    let over = vec![b'#'; (1 << 20) + 1];
    let r = fx.h.upload(&fx.admin, &fx.id, "big.R", &over).await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, too_large);
    fx.unchanged().await;
    // Far over: refused while the body is read.
    let way_over = vec![b'#'; 3 << 20];
    let r = fx.h.upload(&fx.admin, &fx.id, "big.zip", &way_over).await;
    r.expect_error(StatusCode::PAYLOAD_TOO_LARGE, too_large);
    fx.unchanged().await;
    assert_eq!(
        r.headers[header::CONTENT_TYPE].to_str().unwrap(),
        "application/json"
    );
}

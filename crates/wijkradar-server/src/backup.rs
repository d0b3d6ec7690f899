//! Online backup and verified restore (docs/production.md, "Backup and
//! restore").
//!
//! A backup is a new directory under the backup directory:
//! - `store.records` and `period-keys`, copied by the store's writer
//!   between two of its rounds (`wijkradar_store::backup`);
//! - `audit.log`, copied after them up to its last whole entry, so that it
//!   names every batch in the copy (a batch stored but not yet logged keeps
//!   its `U` record, and the restored server writes its entry at start);
//! - `MANIFEST.json`: the format, when, the server key's id, and the
//!   SHA-256 of each file.
//!
//! Restore checks every file against the manifest and the audit log's
//! chain before it writes anything, and writes only into a new data
//! directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wijkradar_store::backup::{Copied, KEYS_FILE, RECORDS_FILE};

use crate::ServerError;

pub const MANIFEST_FILE: &str = "MANIFEST.json";
const AUDIT_FILE: &str = "audit.log";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// RFC 3339, UTC.
    created: String,
    /// The id of the server key the store was written with (not the key).
    server_key_id: String,
    records: u64,
    /// File name → SHA-256, hex.
    files: std::collections::BTreeMap<String, String>,
}

/// A backup made.
#[derive(Debug)]
pub(crate) struct Made {
    pub dir: PathBuf,
    pub copied: Copied,
    pub manifest_sha256: String,
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Backup(format!("{what} {}: {e}", path.display()))
}

/// Makes a backup under `root` while the server runs.
pub(crate) async fn make(state: &crate::State, root: &Path) -> Result<Made, ServerError> {
    let now = time::OffsetDateTime::now_utc();
    let created = now
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ServerError::Backup(e.to_string()))?;
    // `wijkradar-20261202T194105Z`: sorts by time, no colons.
    let stamp: String = created
        .chars()
        .take(19)
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    std::fs::create_dir_all(root).map_err(|e| failed("create", root, e))?;
    let mut dir = root.join(format!("wijkradar-{stamp}Z"));
    for n in 2.. {
        match std::fs::create_dir(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                dir = root.join(format!("wijkradar-{stamp}Z-{n}"));
            }
            Err(e) => return Err(failed("create", &dir, e)),
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed("protect", &dir, e))?;
    }
    let copied = state.queue.backup(dir.clone()).await?;
    // The audit log after the store: up to its last whole entry.
    copy_whole_lines(&state.audit_path, &dir.join(AUDIT_FILE))?;
    let mut files = std::collections::BTreeMap::new();
    for name in [RECORDS_FILE, KEYS_FILE, AUDIT_FILE] {
        files.insert(name.to_owned(), file_sha256(&dir.join(name))?);
    }
    let manifest = Manifest {
        format: FORMAT,
        created,
        server_key_id: state.server_key.id().as_str().to_owned(),
        records: copied.records,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    write_private(&dir.join(MANIFEST_FILE), &text)?;
    Ok(Made {
        dir,
        copied,
        manifest_sha256: wijkradar_audit::sha256_hex(&text),
    })
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub records: u64,
    /// When the backup was made (RFC 3339).
    pub created: String,
    /// The server key id the restored server must be configured with.
    pub server_key_id: String,
}

/// Restores backup `dir` into the new data directory `data_dir`, after
/// checking every file against the manifest and the audit log's chain.
/// `progress(done, total)` counts bytes of the store's records.
pub fn restore(
    dir: &Path,
    data_dir: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Restored, ServerError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&manifest_path).map_err(|e| failed("read", &manifest_path, e))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| failed("parse", &manifest_path, e))?;
    if manifest.format != FORMAT {
        return Err(ServerError::Backup(format!(
            "{}: backup format {}, this Wijkradar restores format {FORMAT}",
            manifest_path.display(),
            manifest.format
        )));
    }
    for name in [RECORDS_FILE, KEYS_FILE, AUDIT_FILE] {
        let path = dir.join(name);
        let expected = manifest.files.get(name).ok_or_else(|| {
            ServerError::Backup(format!("{}: names no {name}", manifest_path.display()))
        })?;
        if &file_sha256(&path)? != expected {
            return Err(ServerError::Backup(format!(
                "{}: its SHA-256 differs from the manifest's: the copy is damaged",
                path.display()
            )));
        }
    }
    let audit_path = dir.join(AUDIT_FILE);
    let log = std::fs::read(&audit_path).map_err(|e| failed("read", &audit_path, e))?;
    let report = wijkradar_audit::verify(&log, None);
    if !report.is_intact() {
        return Err(ServerError::Backup(format!(
            "{}: the chain does not verify: {:?}",
            audit_path.display(),
            report.problems
        )));
    }
    let target_log = data_dir.join(wijkradar_audit::FILE_NAME);
    if target_log.exists() {
        return Err(ServerError::Backup(format!(
            "{} exists: restore into a new data directory",
            target_log.display()
        )));
    }
    let total = std::fs::metadata(dir.join(RECORDS_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    let records = wijkradar_store::backup::restore(dir, data_dir, |done| progress(done, total))?;
    write_private(&target_log, &log)?;
    Ok(Restored {
        records,
        created: manifest.created,
        server_key_id: manifest.server_key_id,
    })
}

/// A new file only the server's user can read.
fn create_private(path: &Path) -> Result<std::fs::File, ServerError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| failed("create", path, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    use std::io::Write as _;
    let mut file = create_private(path)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| failed("write", path, e))
}

/// Copies `from` up to its last newline into the new file `to`, in pieces
/// (a log of years is large), while entries may still be appended.
fn copy_whole_lines(from: &Path, to: &Path) -> Result<(), ServerError> {
    use std::io::{Seek, SeekFrom};
    let read_error = |e| failed("read", from, e);
    let mut file = std::fs::File::open(from).map_err(read_error)?;
    let mut end = file.metadata().map_err(read_error)?.len();
    // Back from the end, a piece at a time, to the last newline.
    let mut piece = vec![0u8; 64 << 10];
    let whole = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(piece.len() as u64);
        let part = &mut piece[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(part))
            .map_err(read_error)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    file.seek(SeekFrom::Start(0)).map_err(read_error)?;
    let mut out = create_private(to)?;
    std::io::copy(&mut file.take(whole), &mut out)
        .and_then(|_| out.sync_all())
        .map_err(|e| failed("write", to, e))?;
    Ok(())
}

/// SHA-256 of a file, hex, read in pieces (a store's records run to
/// gigabytes).
fn file_sha256(path: &Path) -> Result<String, ServerError> {
    let mut file = std::fs::File::open(path).map_err(|e| failed("read", path, e))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| failed("read", path, e))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(hex::encode(context.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_copied_up_to_its_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("log"), dir.path().join("copy"));
        // A half-written last line longer than one piece read back.
        let mut log = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
        log.extend(std::iter::repeat_n(b'x', 100_000));
        std::fs::write(&from, &log).unwrap();
        copy_whole_lines(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        // No whole line: an empty copy.
        std::fs::write(&from, b"half").unwrap();
        let empty = dir.path().join("empty");
        copy_whole_lines(&from, &empty).unwrap();
        assert!(std::fs::read(&empty).unwrap().is_empty());
    }
}

//! The snapshot file on disk: its header and payload, written atomically, read and checked.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use super::{SNAPSHOT_FORMAT_VERSION, SnapshotFile};
use crate::error::Rejected;
use crate::identity::WatchIdentity;

const MAGIC: &[u8; 8] = b"KACHESNP";
/// Saves made by this process: a temporary file's name is unique per process and save, so
/// concurrent saves never share one.
static SAVES: AtomicU64 = AtomicU64::new(0);
/// Magic, format version (u32), payload length (u64), CRC-32 of the payload (u32).
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// The record before the objects.
#[derive(Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) identity: WatchIdentity,
    pub(crate) schema: String,
    /// The uid of the cluster's `kube-system` namespace, if the store knew it.
    pub(crate) cluster: Option<String>,
    pub(crate) resource_version: String,
    pub(crate) objects: u64,
}

/// The objects of a generation, serialized through the `Arc`s without a copy.
struct Objects<'a, K>(&'a [Arc<K>]);

impl<K: Serialize> Serialize for Objects<'_, K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(AsRef::as_ref))
    }
}

impl SnapshotFile {
    /// Writes a temporary file beside the target, flushes it, renames it over the target and
    /// flushes the folder. Returns the file's size.
    pub(super) fn write_atomically<K: Serialize>(
        &self,
        meta: &Meta,
        objects: &[Arc<K>],
    ) -> io::Result<u64> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        let temp = dir.join(format!(
            ".{}.tmp-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            SAVES.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_file(&temp, meta, objects).and_then(|bytes| {
            fs::rename(&temp, &self.path)?;
            sync_dir(&dir)?;
            Ok(bytes)
        });
        if result.is_err() {
            // Best effort: the error that matters is the one returned.
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Reads and checks the snapshot; the objects if it matches this file's identity and
    /// schema.
    /// `None` if there is no file.
    pub(crate) fn load<K: DeserializeOwned>(
        &self,
    ) -> Result<Option<(Vec<K>, Meta, u64)>, Rejected> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Rejected::Unreadable(err.into())),
        };
        let len = file
            .metadata()
            .map_err(|err| Rejected::Unreadable(err.into()))?
            .len();
        let mut file = file;
        let mut header = Vec::with_capacity(HEADER_LEN);
        (&mut file)
            .take(HEADER_LEN as u64)
            .read_to_end(&mut header)
            .map_err(|err| Rejected::Unreadable(err.into()))?;
        // A short file that begins as a snapshot does is a cut-off snapshot.
        let known = header.len().min(MAGIC.len());
        if header[..known] != MAGIC[..known] {
            return Err(Rejected::ForeignFormat);
        }
        if header.len() < HEADER_LEN {
            return Err(Rejected::Truncated);
        }
        let rest = &header[MAGIC.len()..];
        let (format, rest) = rest.split_at(4);
        let (payload_len, crc) = rest.split_at(8);
        let format = u32::from_le_bytes(format.try_into().unwrap_or_default());
        let payload_len = u64::from_le_bytes(payload_len.try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        if format != SNAPSHOT_FORMAT_VERSION {
            return Err(Rejected::FormatVersion {
                found: format,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let expected_len = (HEADER_LEN as u64).saturating_add(payload_len);
        if len < expected_len {
            return Err(Rejected::Truncated);
        }
        if len > expected_len {
            return Err(Rejected::Corrupt);
        }
        // Summed under the buffer, so the sum runs over large chunks while the decoder's
        // many small reads are copies out of the buffer.
        let mut payload = BufReader::with_capacity(
            1 << 16,
            Checked {
                inner: file.take(payload_len),
                crc: crc32fast::Hasher::new(),
            },
        );
        let meta: Meta = match rmp_serde::from_read(&mut payload) {
            Ok(meta) => meta,
            Err(err) => return Err(reject(payload, crc, &err)),
        };
        if meta.identity != self.identity {
            return Err(Rejected::Identity {
                expected: Box::new(self.identity.clone()),
                found: Box::new(meta.identity),
            });
        }
        if meta.schema != self.schema {
            return Err(Rejected::Schema {
                expected: self.schema.clone(),
                found: meta.schema,
            });
        }
        let objects: Vec<K> = match rmp_serde::from_read(&mut payload) {
            Ok(objects) => objects,
            Err(err) => return Err(reject(payload, crc, &err)),
        };
        // Whatever the decoder left (nothing, in a file this code wrote) counts in the sum.
        let (trailing, sum) = finish(payload).map_err(|err| Rejected::Unreadable(err.into()))?;
        if sum != crc || trailing != 0 || objects.len() as u64 != meta.objects {
            return Err(Rejected::Corrupt);
        }
        Ok(Some((objects, meta, len)))
    }
}

/// Creates `path` (owner-only), writes the header and payload, flushes to disk.
fn write_file<K: Serialize>(path: &Path, meta: &Meta, objects: &[Arc<K>]) -> io::Result<u64> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    let mut out = Summed {
        inner: BufWriter::with_capacity(1 << 16, file),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    // The header's length and sum are not known yet: a placeholder, written over below.
    out.inner.write_all(&[0; HEADER_LEN])?;
    rmp_serde::encode::write_named(&mut out, meta).map_err(io::Error::other)?;
    rmp_serde::encode::write_named(&mut out, &Objects(objects)).map_err(io::Error::other)?;
    let (payload_len, crc) = (out.len, out.crc.finalize());
    let mut file = out
        .inner
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&payload_len.to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()?;
    Ok(HEADER_LEN as u64 + payload_len)
}

/// Flushes a folder's entries (the rename) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A writer that sums and counts what goes through it.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader of the payload that sums what goes through it.
struct Checked<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads the rest of the payload into the sum: how many bytes that was, and the sum.
fn finish<R: Read>(mut payload: BufReader<Checked<R>>) -> io::Result<(u64, u32)> {
    let trailing = io::copy(&mut payload, &mut io::sink())?;
    Ok((trailing, payload.into_inner().crc.finalize()))
}

/// Why a payload that failed to decode is refused: corrupt if its sum is wrong, else intact
/// bytes that are not what this store holds.
fn reject<R: Read>(
    payload: BufReader<Checked<R>>,
    crc: u32,
    err: &rmp_serde::decode::Error,
) -> Rejected {
    match finish(payload) {
        Ok((_, sum)) if sum == crc => Rejected::Undecodable(err.to_string()),
        Ok(_) => Rejected::Corrupt,
        Err(err) => Rejected::Unreadable(err.into()),
    }
}

//! Warm restart: a store saved to a local file, and a store started from it.
//!
//! A [`SnapshotFile`] names a file, the watch it belongs to ([`WatchIdentity`]) and a schema
//! tag. [`SnapshotFile::save`] writes the objects of one generation of a store with the
//! resourceVersion they are consistent at and the cluster they came from; [`Writer::restore`]
//! checks a snapshot against the server and makes a matching one the store's first
//! generation, and the watcher then starts with a WATCH from that version
//! ([`Restored::resume`]) instead of a LIST: a restart costs the changes made while the
//! process was down, not every object again.
//!
//! # The file
//!
//! A 24-byte header (the magic `KACHESNP`, the format version, the payload's length and its
//! CRC-32), then the payload: a `MessagePack` record with the identity, the schema tag, the
//! cluster's uid and the version, followed by the objects, each in `MessagePack` through its own serde impl (maps
//! with named fields, so every k8s-openapi type, `DynamicObject` and `PartialObjectMeta`
//! round-trip exactly). Written to a temporary file in the same folder, flushed to disk, then
//! renamed over the old one and the folder flushed: a crash at any point leaves the old
//! snapshot or the new one, never a mix. The file is created readable by its owner only
//! (`0600`).
//!
//! **A snapshot holds the objects as the store holds them.** A snapshot of Secrets puts
//! Secrets on disk (base64 is not encryption): keep the file on a volume as private as the
//! process's memory, or strip what must not be written with a transform
//! ([`Writer::with_transform`]) before it reaches the store.
//!
//! # What is refused
//!
//! A snapshot that is truncated, corrupt (its checksum), of a foreign format or format
//! version, of another watch (kind, namespace, selectors, shard, Rust type) or of another
//! schema tag, or whose objects do not decode as `K`, is never restored: [`Writer::restore`]
//! logs one warning that says why and leaves the store empty, so the watcher starts cold. A
//! missing file (every first start) is the same cold start, logged at `info`. Change the
//! schema tag ([`SnapshotFile::schema`]) whenever the transform changes what it keeps:
//! objects stored by the old one would otherwise come back.
//!
//! # Which cluster, and which history
//!
//! A snapshot is only worth restoring into the history it was taken from. Before the store
//! serves anything, [`Writer::restore`] asks the server two things, concurrently with reading
//! the file, and refuses (one warning, a cold start) a snapshot that fails either check:
//!
//! - **The cluster.** The snapshot records the uid of the cluster's `kube-system` namespace
//!   ([`kache_watch::cluster_uid`]), which a cluster creates once and never reuses: a cluster
//!   deleted and created again, a volume moved to a rebuilt cluster, or a kubeconfig switched
//!   to another context all give another uid ([`Rejected::OtherCluster`]).
//! - **The history.** One consistent LIST of at most one object's metadata in the watch's
//!   scope ([`kache_watch::server_point`]) gives the server's current resourceVersion. A
//!   snapshot at a newer one comes from a future this server never reached: etcd restored
//!   from a backup, or another cluster ([`Rejected::AheadOfServer`]). The same LIST names the
//!   first object the server holds: if that object has not changed since before the
//!   snapshot's version, the snapshot must hold it, same uid and same version; if not, it is
//!   of another cluster or another history ([`Rejected::Diverged`]).
//!
//! The uid needs `get` on the `kube-system` namespace. A caller that may not read it (a
//! namespaced operator) records no uid, and a snapshot without one is checked by its history
//! alone: the version check, and the first object when the watch is not sharded, which catch
//! another cluster whenever its first object in scope predates the snapshot's version. Give
//! such an operator that one permission, or keep one path per cluster. A store fed through an
//! adapter that drops objects (a client-side filter between the watcher and the store) saves
//! snapshots that lack objects the server lists: restore refuses them as diverged whenever
//! the first object listed is one the filter dropped. Filter with the watch's selectors, or
//! keep what a transform strips, instead. A server that cannot
//! be asked (unreachable, or refusing the LIST) leaves the snapshot unverified: it is refused,
//! and the watcher starts cold ([`Rejected::Unverified`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kache_watch::{Config, ServerPoint};
use kube_client::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::key::ObjectKey;
use crate::store::Store;
use crate::version::ResourceVersion;
use crate::writer::Writer;

/// The format version this build writes and reads. A file of another version is refused
/// (a cold start), never guessed at. Version 2 records the cluster and the watch's shard.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"KACHESNP";
/// Saves made by this process: a temporary file's name is unique per process and save, so
/// concurrent saves never share one.
static SAVES: AtomicU64 = AtomicU64::new(0);
/// Magic, format version (u32), payload length (u64), CRC-32 of the payload (u32).
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// The watch a snapshot belongs to: the objects it selects. A snapshot is restored only into
/// a store fed by the same watch.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::WatchIdentity;
/// use kache_watch::Config;
///
/// let config = Config::default().labels("app=web");
/// let identity = WatchIdentity::of::<ConfigMap>(Some("default"), &config);
/// assert_eq!((identity.version.as_str(), identity.kind.as_str()), ("v1", "ConfigMap"));
/// assert_eq!(identity.label_selector.as_deref(), Some("app=web"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WatchIdentity {
    /// The API group (empty for the core group).
    pub group: String,
    /// The API version, such as `v1`.
    pub version: String,
    /// The kind, such as `ConfigMap`.
    pub kind: String,
    /// The namespace watched; `None` for all namespaces or a cluster-scoped kind.
    pub namespace: Option<String>,
    /// The label selector of the watch.
    pub label_selector: Option<String>,
    /// The field selector of the watch.
    pub field_selector: Option<String>,
    /// The shard of the watch, as its `shardSelector` ([`Config::shard`]).
    pub shard: Option<String>,
    /// The Rust type the objects are stored as (`std::any::type_name`): full objects and a
    /// metadata-only cache of the same kind are different stores.
    pub rust_type: String,
}

impl WatchIdentity {
    /// The identity of a watch of `K` (whose dynamic type is `dyntype`, as for a
    /// `DynamicObject`) in `namespace` with the selectors of `config`.
    #[must_use]
    pub fn new<K: Resource>(
        dyntype: &K::DynamicType,
        namespace: Option<&str>,
        config: &Config,
    ) -> Self {
        Self {
            group: K::group(dyntype).into_owned(),
            version: K::version(dyntype).into_owned(),
            kind: K::kind(dyntype).into_owned(),
            namespace: namespace.map(str::to_owned),
            label_selector: config.label_selector.clone(),
            field_selector: config.field_selector.clone(),
            shard: config.shard.as_ref().map(kache_watch::Shard::selector),
            rust_type: std::any::type_name::<K>().to_owned(),
        }
    }

    /// [`WatchIdentity::new`] for a kind known at compile time, such as a k8s-openapi type.
    #[must_use]
    pub fn of<K>(namespace: Option<&str>, config: &Config) -> Self
    where
        K: Resource,
        K::DynamicType: Default,
    {
        Self::new::<K>(&K::DynamicType::default(), namespace, config)
    }
}

impl fmt::Display for WatchIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!("{}/", self.group)
        };
        write!(f, "{group}{} {}", self.version, self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        if let Some(labels) = &self.label_selector {
            write!(f, ", labels {labels}")?;
        }
        if let Some(fields) = &self.field_selector {
            write!(f, ", fields {fields}")?;
        }
        if let Some(shard) = &self.shard {
            write!(f, ", shard {shard}")?;
        }
        write!(f, " as {}", self.rust_type)
    }
}

/// Where a store is saved and restored from, for one watch and one schema.
///
/// ```no_run
/// use std::time::Duration;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::{ReflectExt, SnapshotFile, WatchIdentity, Writer};
/// use kache_watch::{Config, watcher};
/// use kube_client::{Api, Client};
/// use futures::StreamExt;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::namespaced(Client::try_default().await?, "default");
/// let config = Config::default();
/// let file = SnapshotFile::new(
///     "/var/lib/my-operator/configmaps.snapshot",
///     WatchIdentity::of::<ConfigMap>(api.namespace(), &config),
/// )
/// .schema("strip-managed-fields-v1");
///
/// let mut writer = Writer::<ConfigMap>::new();
/// // A snapshot of this cluster and history becomes the first generation and the watch
/// // resumes from its version; anything else is a cold start (one warning, unless there was
/// // no file yet).
/// let config = match writer.restore(&file, &api).await {
///     Ok(restored) => restored.resume(config),
///     Err(_) => config,
/// };
/// let store = writer.as_reader();
/// let writer = writer.save_on_drop(file.clone());
/// tokio::spawn(file.save_every(store.clone(), Duration::from_secs(60)));
/// watcher(api, config).reflect(writer).for_each(|_| async {}).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    path: PathBuf,
    identity: WatchIdentity,
    schema: String,
}

/// What [`SnapshotFile::save`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Saved {
    /// Objects saved.
    pub objects: usize,
    /// The resourceVersion they are consistent at.
    pub resource_version: String,
    /// Size of the file.
    pub bytes: u64,
    /// Time the save took, from reading the store to the rename.
    pub duration: Duration,
}

/// A snapshot that [`Writer::restore`] made the store's first generation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// Objects restored.
    pub objects: usize,
    /// The resourceVersion they are consistent at: where the watch resumes.
    pub resource_version: String,
    /// Size of the file read.
    pub bytes: u64,
}

impl Restored {
    /// `config` set to start with a WATCH from the snapshot's version instead of a list
    /// ([`Config::resume_from`](kache_watch::Config#structfield.resume_from)).
    #[must_use]
    pub fn resume(&self, config: Config) -> Config {
        config.resume_from(&self.resource_version)
    }
}

/// Why a snapshot was not restored: the store starts cold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// There is no file (a first start).
    #[error("there is no snapshot file")]
    Missing,
    /// The file could not be read.
    #[error("the file could not be read: {0}")]
    Unreadable(#[source] IoError),
    /// The file is shorter than its header says.
    #[error("the file is truncated")]
    Truncated,
    /// The payload does not match its checksum, or is longer than its header says.
    #[error("the file is corrupt (checksum or length mismatch)")]
    Corrupt,
    /// The file is not a kache snapshot.
    #[error("the file is not a kache snapshot")]
    ForeignFormat,
    /// A kache snapshot of a format version this build does not read.
    #[error("format version {found} (this build reads {SNAPSHOT_FORMAT_VERSION})")]
    FormatVersion {
        /// The file's format version.
        found: u32,
    },
    /// A snapshot of another watch.
    #[error("it belongs to another watch ({found}; this store is {expected})")]
    Identity {
        /// This store's watch.
        expected: Box<WatchIdentity>,
        /// The snapshot's.
        found: Box<WatchIdentity>,
    },
    /// A snapshot saved under another schema tag.
    #[error("it has schema tag {found:?}, this store {expected:?}")]
    Schema {
        /// This store's tag.
        expected: String,
        /// The snapshot's.
        found: String,
    },
    /// The checksum holds but the objects do not decode as this store's type: a change of
    /// type without a change of schema tag.
    #[error("its objects do not decode: {0}")]
    Undecodable(String),
    /// The store already holds a generation, or a list is in progress: a snapshot only
    /// starts a store.
    #[error("the store is not new")]
    StoreNotNew,
    /// The snapshot was taken against another cluster: its `kube-system` namespace has
    /// another uid.
    #[error(
        "it was taken against another cluster (kube-system uid {found}; this server's is {expected})"
    )]
    OtherCluster {
        /// This server's cluster uid.
        expected: String,
        /// The snapshot's.
        found: String,
    },
    /// The snapshot's version is newer than any the server has reached: etcd was restored
    /// from a backup, or the snapshot comes from another cluster.
    #[error(
        "its version {found} is ahead of the server's {expected}: another cluster, or etcd restored from a backup"
    )]
    AheadOfServer {
        /// The server's current resourceVersion.
        expected: String,
        /// The snapshot's.
        found: String,
    },
    /// The server holds an object, unchanged since before the snapshot's version, that the
    /// snapshot lacks or holds at another uid or version: the snapshot is of another cluster
    /// or another history.
    #[error(
        "it does not hold {object} as the server has held it since before the snapshot's version: another cluster or another history"
    )]
    Diverged {
        /// The object, as `namespace/name` (or `name`).
        object: String,
    },
    /// The server could not be asked which cluster it serves or how far it has reached (it is
    /// unreachable, or refused): an unverified snapshot is not served.
    #[error("the server could not be asked to verify it: {0}")]
    Unverified(String),
}

/// An I/O error, kept comparable and cloneable (its kind and message) so that
/// [`Error`] stays `Clone + Eq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoError {
    /// The kind of the original error.
    pub kind: io::ErrorKind,
    /// The original error, as it displayed.
    pub message: String,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IoError {}

impl From<io::Error> for IoError {
    fn from(err: io::Error) -> Self {
        Self {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

/// The record before the objects.
#[derive(Serialize, Deserialize)]
struct Meta {
    identity: WatchIdentity,
    schema: String,
    /// The uid of the cluster's `kube-system` namespace, if the store knew it.
    cluster: Option<String>,
    resource_version: String,
    objects: u64,
}

/// The objects of a generation, serialized through the `Arc`s without a copy.
struct Objects<'a, K>(&'a [Arc<K>]);

impl<K: Serialize> Serialize for Objects<'_, K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(AsRef::as_ref))
    }
}

impl SnapshotFile {
    /// A snapshot at `path` for the watch `identity`, with an empty schema tag.
    pub fn new(path: impl Into<PathBuf>, identity: WatchIdentity) -> Self {
        Self {
            path: path.into(),
            identity,
            schema: String::new(),
        }
    }

    /// Sets the schema tag: a snapshot saved under another tag is not restored. Change it
    /// whenever what the store keeps of an object changes (a new transform).
    #[must_use]
    pub fn schema(mut self, tag: &str) -> Self {
        tag.clone_into(&mut self.schema);
        self
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The watch this snapshot belongs to.
    #[must_use]
    pub fn identity(&self) -> &WatchIdentity {
        &self.identity
    }

    /// Saves the generation `store` serves now, with the resourceVersion it is consistent
    /// at, replacing the previous snapshot atomically.
    ///
    /// The store's lock is held only to copy the generation's `Arc`s (as
    /// [`Store::state`] does); encoding and writing happen after, so readers and the writer
    /// never wait on the disk. During a relist the generation saved is the one readers
    /// still see. This is blocking file I/O: from async code, call it in
    /// `tokio::task::spawn_blocking` or use [`SnapshotFile::save_every`].
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, SnapshotFile, WatchIdentity, Writer};
    ///
    /// let dir = std::env::temp_dir().join(format!("kache-doc-save-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let file = SnapshotFile::new(dir.join("cm.snapshot"), WatchIdentity::of::<ConfigMap>(None, &Default::default()));
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// cm.metadata.resource_version = Some("7".into());
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitApply(cm));
    /// writer.apply(Event::InitDone);
    /// let saved = file.save(&writer.as_reader())?;
    /// assert_eq!((saved.objects, saved.resource_version.as_str()), (1, "7"));
    /// // A new process restores it with `Writer::restore`, which checks it against the server.
    /// # std::fs::remove_dir_all(dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NothingToSave`] if the store has not synced yet;
    /// [`Error::SnapshotSave`] if the file cannot be written (no space, no permission, an
    /// object that does not serialize): the previous snapshot is then intact.
    pub fn save<K>(&self, store: &Store<K>) -> Result<Saved>
    where
        K: Serialize,
    {
        self.save_generation(store).map(|(saved, _)| saved)
    }

    /// [`save`](Self::save), also returning the sequence number of the generation saved.
    fn save_generation<K: Serialize>(&self, store: &Store<K>) -> Result<(Saved, u64)> {
        let started = Instant::now();
        let (objects, resource_version, seq) = store.read_state(|state| {
            let version = state.version.to_resource_version_string();
            match version {
                Some(version) if state.ready => Ok((
                    // `Arc` clones: the objects are shared, not copied, and the lock is
                    // released before a byte is encoded.
                    state.objects.values().cloned().collect::<Vec<_>>(),
                    version,
                    state.seq,
                )),
                _ => Err(Error::NothingToSave),
            }
        })?;
        let meta = Meta {
            identity: self.identity.clone(),
            schema: self.schema.clone(),
            cluster: store.cluster().map(str::to_owned),
            resource_version,
            objects: objects.len() as u64,
        };
        let bytes = self.write_atomically(&meta, &objects).map_err(|source| {
            let err = Error::SnapshotSave {
                path: self.path.clone(),
                source: source.into(),
            };
            warn!(error = %err, "snapshot not saved; the previous one is intact");
            err
        })?;
        let saved = Saved {
            objects: objects.len(),
            resource_version: meta.resource_version,
            bytes,
            duration: started.elapsed(),
        };
        debug!(path = %self.path.display(), objects = saved.objects, bytes, resource_version = %saved.resource_version, duration = ?saved.duration, "snapshot saved");
        Ok((saved, seq))
    }

    /// Writes a temporary file beside the target, flushes it, renames it over the target and
    /// flushes the folder. Returns the file's size.
    fn write_atomically<K: Serialize>(&self, meta: &Meta, objects: &[Arc<K>]) -> io::Result<u64> {
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
    fn load<K: DeserializeOwned>(&self) -> Result<(Vec<K>, Meta, u64), Rejected> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Rejected::Missing),
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
            return Err(Rejected::FormatVersion { found: format });
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
        Ok((objects, meta, len))
    }

    /// Saves the store every `period` while its writer lives, skipping a save when neither
    /// its objects nor its version (bookmarks move it) changed since the last one; a failed save is logged (a warning) and retried at the
    /// next tick. Ends once the writer is dropped. Spawn it: each save runs on tokio's
    /// blocking pool, off the async workers.
    pub async fn save_every<K>(self, store: Store<K>, period: Duration)
    where
        K: Serialize + Send + Sync + 'static,
    {
        let this = Arc::new(self);
        let mut saved = None;
        loop {
            {
                let tick = std::pin::pin!(tokio::time::sleep(period));
                let gone = std::pin::pin!(store.writer_gone());
                if let futures::future::Either::Right(_) = futures::future::select(tick, gone).await
                {
                    debug!(path = %this.path.display(), "writer dropped; periodic snapshots end");
                    return;
                }
            }
            // The version too: bookmarks move it with no change, and a fresher version keeps
            // the next restart inside the server's history.
            let now =
                store.read_state(|state| (state.seq, state.version.to_resource_version_string()));
            if saved.as_ref() == Some(&now) {
                continue;
            }
            let (file, reader) = (Arc::clone(&this), store.clone());
            match tokio::task::spawn_blocking(move || file.save_generation(&reader)).await {
                Ok(Ok((written, seq))) => saved = Some((seq, Some(written.resource_version))),
                // Not synced yet (nothing to save before the first list), or a failed save,
                // which the save has logged.
                Ok(Err(_)) => {}
                Err(err) => warn!(error = %err, "periodic snapshot task failed"),
            }
        }
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

impl<K> Writer<K>
where
    K: Resource + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts this new store from `file`, checked against the server that `api` reaches: a
    /// snapshot that matches (its watch, its schema tag, a sound file) and that is of this
    /// cluster and this server's history becomes the store's first generation. Use
    /// [`Restored::resume`] so that the watcher starts with a WATCH from the snapshot's
    /// version instead of a list: the changes made since arrive as events (deletes included),
    /// and if the server no longer has that history (`410 Gone`), the ordinary relist
    /// follows, in which every unchanged object keeps its restored copy (no second copy).
    ///
    /// `api` is the API the watcher will use (any type of the same resource will do, such as
    /// `Api<K>` for a metadata cache of `K`): with the snapshot's selectors, it is listed once
    /// for at most one object's metadata. The `kube-system` namespace is read once for the
    /// cluster's uid, which this store records in the snapshots it saves from then on,
    /// whatever the outcome here: call `restore` at every start, a first start included. The
    /// file is read on tokio's blocking pool, while the two requests run: the checks cost one
    /// round trip to the server (see the module's docs for what each check catches).
    ///
    /// **Readiness.** The store is ready as soon as this returns: it serves a real past state
    /// of the server, consistent at the snapshot's version, stale by the downtime until the
    /// replay is applied, as a store is during any watch outage. Subscribers receive it as
    /// their first snapshot, then the replayed changes. [`Health::replaying`](crate::Health)
    /// (and the `kache_replaying` metric) says that the replay has not been confirmed complete:
    /// it turns off at the first bookmark of the resumed watch (about a minute on current
    /// servers; shortly before the watch's timeout on a 1.20 server) or at the end of a
    /// relist. A caller that must act only on current state waits for a version it knows
    /// ([`Store::wait_for_version`]).
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotRejected`] when the snapshot is missing (a first start: logged at
    /// `info`), unreadable, truncated, corrupt, foreign, of another watch or schema, of
    /// another cluster or history, unverifiable because the server cannot be asked, or when
    /// this store is not new (each of these after one warning): the store is then untouched,
    /// and the watcher should start cold.
    pub async fn restore<R>(&mut self, file: &SnapshotFile, api: &Api<R>) -> Result<Restored>
    where
        R: Resource + Clone,
    {
        let started = Instant::now();
        let rejected = |reason: Rejected| {
            let err = Error::SnapshotRejected {
                path: file.path.clone(),
                reason,
            };
            if matches!(
                err,
                Error::SnapshotRejected {
                    reason: Rejected::Missing,
                    ..
                }
            ) {
                info!(path = %file.path.display(), "no snapshot yet; starting cold");
            } else {
                warn!(error = %err, "not restoring the snapshot; starting cold");
            }
            err
        };
        if self.as_reader().is_ready() {
            return Err(rejected(Rejected::StoreNotNew));
        }
        let mut scope = Config::default();
        if let Some(labels) = &file.identity.label_selector {
            scope = scope.labels(labels);
        }
        if let Some(fields) = &file.identity.field_selector {
            scope = scope.fields(fields);
        }
        let load = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || file.load::<K>())
        };
        let client = Client::from(api.clone());
        let (loaded, cluster, point) = futures::future::join3(
            load,
            kache_watch::cluster_uid(&client),
            kache_watch::server_point(api, &scope),
        )
        .await;
        if let Ok(Some(uid)) = &cluster {
            // Known from now on, for every snapshot this store saves, restored or not.
            let _ = self.shared.cluster.set(uid.clone());
        }
        let loaded = loaded.unwrap_or_else(|err| {
            Err(Rejected::Unreadable(IoError {
                kind: io::ErrorKind::Other,
                message: format!("reading the file failed: {err}"),
            }))
        });
        // The file first: a first start is `Missing` whether or not the server answered.
        let (objects, meta, bytes) = loaded.map_err(rejected)?;
        let cluster = cluster.map_err(|err| rejected(Rejected::Unverified(err.to_string())))?;
        let point = point.map_err(|err| rejected(Rejected::Unverified(err.to_string())))?;
        verify(&meta, &objects, cluster.as_deref(), &point).map_err(rejected)?;
        let restored = self.install(objects, meta, bytes).map_err(rejected)?;
        info!(
            path = %file.path.display(),
            objects = restored.objects,
            bytes,
            resource_version = %restored.resource_version,
            server_version = %point.resource_version,
            duration = ?started.elapsed(),
            "restored the store from a snapshot; the watch resumes from its version"
        );
        Ok(restored)
    }

    /// Makes a loaded, verified snapshot the store's first generation.
    fn install(&mut self, objects: Vec<K>, meta: Meta, bytes: u64) -> Result<Restored, Rejected> {
        let count = objects.len();
        if !self.install_first_generation(objects.into_iter().map(Arc::new), &meta.resource_version)
        {
            return Err(Rejected::StoreNotNew);
        }
        self.shared.health.start_replay();
        Ok(Restored {
            objects: count,
            resource_version: meta.resource_version,
            bytes,
        })
    }

    /// [`restore`](Self::restore) without asking a server, for kache's unit tests.
    #[cfg(test)]
    pub(crate) fn restore_unverified(&mut self, file: &SnapshotFile) -> Result<Restored> {
        let rejected = |reason| Error::SnapshotRejected {
            path: file.path.clone(),
            reason,
        };
        if self.as_reader().is_ready() {
            return Err(rejected(Rejected::StoreNotNew));
        }
        let (objects, meta, bytes) = file.load::<K>().map_err(rejected)?;
        self.install(objects, meta, bytes).map_err(rejected)
    }
}

/// Whether a sound snapshot of this watch belongs to the server's cluster and history: see the
/// module's docs.
fn verify<K: Resource>(
    meta: &Meta,
    objects: &[K],
    cluster: Option<&str>,
    point: &ServerPoint,
) -> Result<(), Rejected> {
    if let (Some(expected), Some(found)) = (cluster, meta.cluster.as_deref())
        && expected != found
    {
        return Err(Rejected::OtherCluster {
            expected: expected.to_owned(),
            found: found.to_owned(),
        });
    }
    let (Ok(snapshot), Ok(server)) = (
        ResourceVersion::parse(&meta.resource_version),
        ResourceVersion::parse(&point.resource_version),
    ) else {
        debug!(snapshot = %meta.resource_version, server = %point.resource_version, "versions that do not compare: the snapshot's history is not checked");
        return Ok(());
    };
    if snapshot > server {
        return Err(Rejected::AheadOfServer {
            expected: point.resource_version.clone(),
            found: meta.resource_version.clone(),
        });
    }
    // The first object the server holds, if it has not changed since before the snapshot's
    // version, was in the store when it was saved, as it is now. A sharded watch's snapshot
    // holds only its shard, which the LIST did not ask for.
    let Some(first) = point
        .first
        .as_ref()
        .filter(|_| meta.identity.shard.is_none())
    else {
        return Ok(());
    };
    let unchanged_since = first
        .resource_version
        .as_deref()
        .and_then(|rv| ResourceVersion::parse(rv).ok());
    if unchanged_since.is_none_or(|since| since > snapshot) {
        return Ok(());
    }
    let (namespace, name) = (first.namespace.as_deref(), first.name.as_deref());
    let held = objects
        .iter()
        .map(Resource::meta)
        .find(|meta| meta.name.as_deref() == name && meta.namespace.as_deref() == namespace);
    let same = held.is_some_and(|held| {
        held.resource_version == first.resource_version
            && (held.uid.is_none() || first.uid.is_none() || held.uid == first.uid)
    });
    if same {
        Ok(())
    } else {
        Err(Rejected::Diverged {
            object: ObjectKey::new(namespace, name.unwrap_or_default()).to_string(),
        })
    }
}

impl<K> Writer<K>
where
    K: Resource + Serialize + Send + Sync + 'static,
{
    /// Saves the store to `file` when this writer is dropped other than by a panic (the end
    /// of its [`reflect`](crate::ReflectExt::reflect) stream, a task aborted at shutdown). A
    /// failed save is logged; a store that never synced saves nothing. The save is blocking
    /// file I/O in the drop, on the thread that drops the writer (often an async worker at
    /// shutdown), for as long as encoding, writing and flushing the store takes, which grows
    /// with the store (the encode alone is about 10 ms per 10,000 `ConfigMap`s, measured in
    /// docs/warm-restart.md). Where a shutdown cannot spare that, use
    /// [`SnapshotFile::save_every`] alone, which saves on tokio's blocking pool.
    #[must_use]
    pub fn save_on_drop(mut self, file: SnapshotFile) -> Self {
        self.on_clean_drop = Some(Box::new(move |store: &Store<K>| {
            // Errors are logged by `save`; not having synced is not worth a line.
            let _ = file.save(store);
        }));
        self
    }
}

#[cfg(test)]
mod verify_tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kache_watch::{Config, ServerPoint};
    use kube_client::api::ObjectMeta;

    use super::{Meta, Rejected, WatchIdentity, verify};

    fn meta(name: &str, uid: &str, rv: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("ns".to_owned()),
            uid: Some(uid.to_owned()),
            resource_version: Some(rv.to_owned()),
            ..ObjectMeta::default()
        }
    }

    fn cm(name: &str, uid: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: meta(name, uid, rv),
            ..ConfigMap::default()
        }
    }

    fn snapshot(cluster: Option<&str>, version: &str, config: &Config) -> Meta {
        Meta {
            identity: WatchIdentity::of::<ConfigMap>(Some("ns"), config),
            schema: String::new(),
            cluster: cluster.map(str::to_owned),
            resource_version: version.to_owned(),
            objects: 2,
        }
    }

    fn point(version: &str, first: Option<ObjectMeta>) -> ServerPoint {
        let mut point = ServerPoint::new(version.to_owned());
        point.first = first;
        point
    }

    #[test]
    fn a_snapshot_of_another_cluster_is_refused_by_its_uid() {
        let objects = [cm("a", "ua", "5"), cm("b", "ub", "8")];
        let saved = snapshot(Some("cluster-a"), "10", &Config::default());
        assert_eq!(
            verify(&saved, &objects, Some("cluster-b"), &point("20", None)),
            Err(Rejected::OtherCluster {
                expected: "cluster-b".to_owned(),
                found: "cluster-a".to_owned()
            })
        );
        assert_eq!(
            verify(&saved, &objects, Some("cluster-a"), &point("20", None)),
            Ok(())
        );
        // Either side without a uid: the history decides.
        assert_eq!(verify(&saved, &objects, None, &point("20", None)), Ok(()));
        let unknown = snapshot(None, "10", &Config::default());
        assert_eq!(
            verify(&unknown, &objects, Some("cluster-b"), &point("20", None)),
            Ok(())
        );
    }

    #[test]
    fn a_snapshot_ahead_of_the_server_is_refused() {
        let objects = [cm("a", "ua", "5")];
        let saved = snapshot(Some("c"), "100", &Config::default());
        assert_eq!(
            verify(&saved, &objects, Some("c"), &point("99", None)),
            Err(Rejected::AheadOfServer {
                expected: "99".to_owned(),
                found: "100".to_owned()
            })
        );
        assert_eq!(
            verify(&saved, &objects, Some("c"), &point("100", None)),
            Ok(())
        );
    }

    #[test]
    fn the_first_object_unchanged_since_before_the_snapshot_must_be_in_it() {
        let objects = [cm("a", "ua", "5"), cm("b", "ub", "8")];
        let saved = snapshot(None, "10", &Config::default());
        let check = |first| verify(&saved, &objects, None, &point("30", Some(first)));
        assert_eq!(
            check(meta("a", "ua", "5")),
            Ok(()),
            "held as the server has it"
        );
        let diverged = Err(Rejected::Diverged {
            object: "ns/a".to_owned(),
        });
        assert_eq!(check(meta("a", "other", "5")), diverged, "another uid");
        assert_eq!(check(meta("a", "ua", "4")), diverged, "another version");
        assert_eq!(
            check(meta("0", "u0", "3")),
            Err(Rejected::Diverged {
                object: "ns/0".to_owned()
            }),
            "missing from the snapshot"
        );
        assert_eq!(
            check(meta("0", "u0", "11")),
            Ok(()),
            "changed since: says nothing"
        );
        // A sharded snapshot holds only its shard: the first object says nothing.
        let shard = kache_watch::Shard::nth(0, 2).unwrap();
        let sharded = snapshot(None, "10", &Config::default().shard(shard));
        assert_eq!(
            verify(
                &sharded,
                &objects,
                None,
                &point("30", Some(meta("0", "u0", "3")))
            ),
            Ok(())
        );
    }
}

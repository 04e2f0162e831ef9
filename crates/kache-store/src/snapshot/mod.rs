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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kache_watch::Config;
use serde::Serialize;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::identity::WatchIdentity;
use crate::store::Store;

mod file;
mod verify;

pub(crate) use file::Meta;
pub(crate) use verify::verify;

/// The format version this build writes and reads. A file of another version is refused
/// (a cold start), never guessed at. Version 2 records the cluster and the watch's shard.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;

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
/// // resumes from its version; no file yet is a cold start, anything else a cold start after
/// // one warning.
/// let config = match writer.restore(&file, &api).await {
///     Ok(Some(restored)) => restored.resume(config),
///     Ok(None) | Err(_) => config,
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

/// A snapshot that [`Writer::restore`](crate::Writer::restore) made the store's first generation.
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

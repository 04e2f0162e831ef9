//! A writer started from a snapshot, and a writer that saves one when dropped.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use kache_watch::Config;
use kube_client::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::Writer;
use crate::error::{Error, IoError, Rejected, Result};
use crate::snapshot::{Meta, Restored, SnapshotFile, verify};
use crate::store::Store;
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
    /// `Ok(None)` when there is no file yet: a first start, logged at `info`; the watcher
    /// starts cold.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotRejected`] when the snapshot is unreadable, truncated, corrupt,
    /// foreign, of another watch or schema, of another cluster or history, unverifiable
    /// because the server cannot be asked, or when this store is not new (each of these after
    /// one warning): the store is then untouched, and the watcher should start cold.
    pub async fn restore<R>(
        &mut self,
        file: &SnapshotFile,
        api: &Api<R>,
    ) -> Result<Option<Restored>>
    where
        R: Resource + Clone,
    {
        let started = Instant::now();
        let rejected = |reason: Rejected| {
            let err = Error::SnapshotRejected {
                path: file.path().to_owned(),
                reason,
            };
            warn!(error = %err, "not restoring the snapshot; starting cold");
            err
        };
        if self.as_reader().is_synced() {
            return Err(rejected(Rejected::StoreNotNew));
        }
        let mut scope = Config::default();
        if let Some(labels) = &file.identity().label_selector {
            scope = scope.labels(labels);
        }
        if let Some(fields) = &file.identity().field_selector {
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
        // The file first: a first start is no error, whether or not the server answered.
        let Some((objects, meta, bytes)) = loaded.map_err(rejected)? else {
            info!(path = %file.path().display(), "no snapshot yet; starting cold");
            return Ok(None);
        };
        let cluster = cluster.map_err(|err| rejected(Rejected::Unverified(err.to_string())))?;
        let point = point.map_err(|err| rejected(Rejected::Unverified(err.to_string())))?;
        verify(&meta, &objects, cluster.as_deref(), &point).map_err(rejected)?;
        let restored = self.install(objects, meta, bytes).map_err(rejected)?;
        info!(
            path = %file.path().display(),
            objects = restored.objects,
            bytes,
            resource_version = %restored.resource_version,
            server_version = %point.resource_version,
            duration = ?started.elapsed(),
            "restored the store from a snapshot; the watch resumes from its version"
        );
        Ok(Some(restored))
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
    pub(crate) fn restore_unverified(&mut self, file: &SnapshotFile) -> Result<Option<Restored>> {
        let rejected = |reason| Error::SnapshotRejected {
            path: file.path().to_owned(),
            reason,
        };
        if self.as_reader().is_synced() {
            return Err(rejected(Rejected::StoreNotNew));
        }
        let Some((objects, meta, bytes)) = file.load::<K>().map_err(rejected)? else {
            return Ok(None);
        };
        self.install(objects, meta, bytes)
            .map(Some)
            .map_err(rejected)
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

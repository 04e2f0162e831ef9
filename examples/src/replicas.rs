//! Replicas of an operator that split a collection between them, with Kubernetes Leases as the
//! only coordination: each replica renews a `coordination.k8s.io/v1` Lease of its own, reads
//! the group's Leases, and watches the shard of the uid space that its rank among the live
//! holders gives it ([`kache_watch::Shard::nth`]). When a replica stops renewing, the others
//! see its Lease go stale and take over its range; when one joins, they hand part of theirs
//! over. No leader, no coordination service: the API server is the shared state.
//!
//! # Liveness without trusting clocks
//!
//! A Lease is live while its holder keeps changing it. Each replica notes, on its own clock,
//! when it last saw each Lease's resourceVersion change, and counts a Lease as gone once that
//! is older than the lease duration. So clocks need not agree (the `renewTime` a holder writes
//! is for people reading `kubectl get lease`), as in client-go's leader election.
//!
//! # What replicas can see
//!
//! - **A replica that stops renewing** (crashed, partitioned, paused) keeps its range until
//!   its Lease goes stale in the others' eyes, one lease duration after its last renewal at
//!   most plus one renewal interval: during that time nobody else watches its range, and
//!   changes there wait. A replica that is partitioned but alive keeps serving its (aging)
//!   store: it cannot know it was replaced until it reaches the API server again, and its
//!   first failed renewal is the moment to stop acting on its cache.
//! - **Two replicas briefly owning one range**: the replicas do not see membership change at
//!   the same instant, and a replica moving to a new range keeps its old one until the new
//!   one has synced ([`kache_store::Sources`]). So for a moment a range can be held by two
//!   replicas (or, between one replica's view and another's, by none). Use the shard for
//!   *caching and dividing work*, not for mutual exclusion: work that must never run twice
//!   needs its own guard (a Lease per object, or optimistic concurrency on the object).
//! - Ranks follow the sorted identities, so a membership change moves most ranges a little
//!   rather than a few ranges a lot; each replica keeps, without a relist, the objects its new
//!   range shares with its old one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kache_store::{Sources, Store, Writer};
use kache_watch::{Config, Shard, ShardRange, WatchStreamExt, watcher};
use kube_client::{
    Api, Resource,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams},
};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// The label that marks the Leases of one group of replicas.
pub const GROUP_LABEL: &str = "kache.rs/replica-group";

/// One replica's view of its group: its own Lease, and the live holders of the others.
#[derive(Debug)]
pub struct Membership {
    api: Api<Lease>,
    group: String,
    identity: String,
    lease_duration: Duration,
    /// Each Lease's last resourceVersion, and when this replica saw it change.
    seen: HashMap<String, (String, Instant)>,
}

impl Membership {
    /// A member of `group` named `identity`, whose Leases live in `api`'s namespace. A Lease
    /// unchanged for `lease_duration` counts as gone; renew well within it (a third is usual).
    #[must_use]
    pub fn new(api: Api<Lease>, group: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            api,
            group: group.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            seen: HashMap::new(),
        }
    }

    /// This replica's identity.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lease_name(&self) -> String {
        format!("{}-{}", self.group, self.identity)
    }

    /// Creates or renews this replica's Lease (one server-side apply).
    ///
    /// # Errors
    /// When the API server does not take it.
    pub async fn renew(&self) -> Result<(), kube_client::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name()),
                labels: Some(BTreeMap::from([(
                    GROUP_LABEL.to_owned(),
                    self.group.clone(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply("kache-replica").force();
        self.api
            .patch(&self.lease_name(), &params, &Patch::Apply(&lease))
            .await?;
        Ok(())
    }

    /// Deletes this replica's Lease, so that the others take over at once rather than after
    /// the lease duration. Call it on an orderly shutdown.
    ///
    /// # Errors
    /// When the API server does not take it (a Lease already gone is fine).
    pub async fn leave(&self) -> Result<(), kube_client::Error> {
        match self
            .api
            .delete(&self.lease_name(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube_client::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The identities of the group's live holders, sorted.
    ///
    /// # Errors
    /// When the Leases cannot be listed.
    pub async fn members(&mut self) -> Result<Vec<String>, kube_client::Error> {
        let selector = format!("{GROUP_LABEL}={}", self.group);
        let leases = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?;
        let now = Instant::now();
        let mut live = Vec::new();
        let mut seen = HashMap::new();
        for lease in leases {
            let (Some(name), Some(version)) = (
                lease.metadata.name.clone(),
                lease.metadata.resource_version.clone(),
            ) else {
                continue;
            };
            let changed = match self.seen.remove(&name) {
                Some((last, when)) if last == version => when,
                // New to this replica, or renewed since: alive as of now.
                _ => now,
            };
            let holder = lease.spec.and_then(|spec| spec.holder_identity);
            if now.duration_since(changed) < self.lease_duration
                && let Some(holder) = holder
            {
                live.push(holder);
            }
            seen.insert(name, (version, changed));
        }
        self.seen = seen;
        live.sort();
        live.dedup();
        Ok(live)
    }

    /// Renews this replica's Lease and returns its shard among the live holders: `None` if
    /// it does not count itself among them (its renewals keep failing).
    ///
    /// # Errors
    /// When the Lease cannot be renewed or the Leases cannot be listed.
    pub async fn shard(&mut self) -> Result<Option<Shard>, kube_client::Error> {
        self.renew().await?;
        let members = self.members().await?;
        let Some(rank) = members.iter().position(|m| *m == self.identity) else {
            return Ok(None);
        };
        // Both fit: `rank < members.len()`, and a group has far fewer than 2^32 replicas.
        let (rank, count) = (
            u32::try_from(rank).unwrap_or(u32::MAX - 1),
            u32::try_from(members.len()).unwrap_or(u32::MAX),
        );
        Ok(Shard::nth(rank, count).ok())
    }
}

/// Starts replica `identity` of `group` over the objects of kind `K` in `namespace`, its Lease
/// in the same namespace, renewed every `renew` and stale after `lease`: the parts a
/// namespaced operator needs, in one call. Returns the replica and the future that runs it.
pub fn namespaced_replica<K>(
    client: kube_client::Client,
    namespace: &str,
    group: &str,
    identity: &str,
    (lease, renew): (Duration, Duration),
) -> (
    Replica<K>,
    impl std::future::Future<Output = ()> + Send + use<K>,
)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    let membership = Membership::new(
        Api::<Lease>::namespaced(client.clone(), namespace),
        group,
        identity,
        lease,
    );
    Replica::start(
        Api::namespaced(client, namespace),
        Config::default(),
        membership,
        renew,
    )
}

/// A replica: a store of its shard of `api`'s objects, which moves with the membership.
///
/// Every `renew_every` it renews its Lease and recomputes its shard; when the shard changes,
/// it watches the new one as a new source of its store and drops the old source once the new
/// one has synced, so objects in both stay in the store throughout. The future runs until
/// dropped (abort its task to kill the replica: its Lease then goes stale).
pub struct Replica<K> {
    /// The replica's store: the objects of its current shard (and, while it moves, of its
    /// previous one).
    pub store: Store<K>,
    /// The shard it watches now, if any.
    pub shard: tokio::sync::watch::Receiver<Option<Shard>>,
}

impl<K> std::fmt::Debug for Replica<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("shard", &*self.shard.borrow())
            .finish_non_exhaustive()
    }
}

impl<K> Replica<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    /// Starts a replica: returns it, and the future that runs it (spawn it).
    pub fn start(
        api: Api<K>,
        config: Config,
        mut membership: Membership,
        renew_every: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let sources = Sources::new(Writer::<K>::new());
        let store = sources.store();
        let (set, reflector) = sources.into_reflector::<kache_watch::Error>();
        let (shard_tx, shard) = tokio::sync::watch::channel(None);
        let run = async move {
            let identity = membership.identity().to_owned();
            let drive = reflector.for_each(|_| async {});
            let follow = async move {
                // Segments save relists only where the server shards: elsewhere each
                // segment's watch receives every object, so one source is cheaper.
                let server_shards = kache_watch::server_shards(&api).await.unwrap_or(false);
                let mut segments = Segments {
                    max: if server_shards { MAX_SEGMENTS } else { 1 },
                    ..Segments::default()
                };
                let mut current: Option<Shard> = None;
                // Replicas that start together first see one another after a renewal round;
                // choosing a shard before that would list too much and move at once.
                if let Err(err) = membership.renew().await {
                    tracing::warn!(replica = %identity, error = %err, "lease renewal failed");
                }
                tokio::time::sleep(renew_every).await;
                loop {
                    match membership.shard().await {
                        Ok(next) if next != current => {
                            tracing::info!(replica = %identity, shard = ?next.as_ref().map(Shard::selector), "shard changes");
                            let target = next.as_ref().map_or(&[][..], Shard::ranges);
                            for added in segments.move_to(target) {
                                // One range always makes a shard.
                                let Ok(shard) = Shard::new([added]) else {
                                    continue;
                                };
                                let name = shard.selector();
                                set.add(&name, source(api.clone(), config.clone().shard(shard)));
                            }
                            shard_tx.send_replace(next.clone());
                            current = next;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(replica = %identity, error = %err, "lease renewal failed");
                        }
                    }
                    // The old segments go once the new ones have synced: objects in both
                    // never leave the store.
                    let mut synced = true;
                    for live in &segments.live {
                        let name = live.to_string();
                        let wait = tokio::time::timeout(renew_every, set.wait_synced(&name));
                        synced &= wait.await.is_ok_and(|synced| synced.is_ok());
                    }
                    if synced {
                        for old in segments.retiring.drain(..) {
                            set.remove(&old.to_string());
                        }
                    }
                    tokio::time::sleep(renew_every).await;
                }
            };
            futures::future::join(drive, follow).await;
        };
        (Self { store, shard }, run)
    }
}

/// The ranges a replica watches, one source each. Moving to a new shard keeps every segment
/// inside it (no relist of what the replica keeps) and adds sources only for the gaps; the
/// segments outside it retire once the new ones have synced.
///
/// Where the server does not shard, every watch receives every object: there a replica keeps
/// one source (`max` 1), and each move relists its new range in full.
#[derive(Debug, Default)]
struct Segments {
    live: Vec<ShardRange>,
    retiring: Vec<ShardRange>,
    /// Past this many segments a replica starts over with one source per range of its
    /// shard: each move may cut a range in two, and a watch per sliver costs more than one
    /// relist.
    max: usize,
}

/// The most segments a replica watches where the server shards.
const MAX_SEGMENTS: usize = 4;

impl Segments {
    /// Moves to the shard of `target` ranges; returns the segments to add as sources.
    fn move_to(&mut self, target: &[ShardRange]) -> Vec<ShardRange> {
        let inside = |seg: &ShardRange| target.iter().any(|t| covers(t, seg));
        let mut keep = Vec::new();
        let mut all = std::mem::take(&mut self.live);
        all.append(&mut self.retiring);
        for seg in all {
            if inside(&seg) && !keep.contains(&seg) {
                keep.push(seg);
            } else {
                self.retiring.push(seg);
            }
        }
        if keep.len() + gaps(target, &keep).len() > self.max.max(1) {
            self.retiring.append(&mut keep);
        }
        let added = gaps(target, &keep);
        keep.extend(added.iter().copied());
        self.live = keep;
        added
    }
}

/// A range's bounds, the end of the space as 2^64.
fn bounds(range: &ShardRange) -> (u128, u128) {
    (
        u128::from(range.start()),
        range.end().map_or(1 << 64, u128::from),
    )
}

fn covers(outer: &ShardRange, inner: &ShardRange) -> bool {
    let ((a, b), (c, d)) = (bounds(outer), bounds(inner));
    a <= c && d <= b
}

/// The parts of `target` that no range of `have` covers.
fn gaps(target: &[ShardRange], have: &[ShardRange]) -> Vec<ShardRange> {
    let mut have: Vec<(u128, u128)> = have.iter().map(bounds).collect();
    have.sort_unstable();
    let mut out = Vec::new();
    for range in target {
        let (mut from, end) = bounds(range);
        for (start, stop) in &have {
            if *stop <= from || *start >= end {
                continue;
            }
            if *start > from {
                out.extend(range_of(from, *start));
            }
            from = from.max(*stop);
        }
        if from < end {
            out.extend(range_of(from, end));
        }
    }
    out
}

fn range_of(start: u128, end: u128) -> Option<ShardRange> {
    let start = u64::try_from(start).ok()?;
    match u64::try_from(end) {
        Ok(end) => ShardRange::new(start, end).ok(),
        Err(_) => Some(ShardRange::from_start(start)),
    }
}

fn source<K>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<kache_watch::Event<K>, kache_watch::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, config).default_backoff()
}

#[cfg(test)]
mod tests {
    use super::{Segments, ShardRange};

    fn segments() -> Segments {
        Segments {
            max: super::MAX_SEGMENTS,
            ..Segments::default()
        }
    }

    fn third(i: u32) -> ShardRange {
        ShardRange::nth(i, 3).unwrap()
    }

    fn half(i: u32) -> ShardRange {
        ShardRange::nth(i, 2).unwrap()
    }

    #[test]
    fn moving_keeps_the_segments_inside_the_new_shard() {
        let mut segments = segments();
        assert_eq!(segments.move_to(&[third(0)]), [third(0)]);
        // From the first third to the first half: only the gap is new.
        let added = segments.move_to(&[half(0)]);
        assert_eq!(
            added,
            [ShardRange::new(third(1).start(), half(1).start()).unwrap()]
        );
        assert!(segments.retiring.is_empty());
        assert_eq!(segments.live.len(), 2);
        // To the second half: nothing is inside it, everything retires.
        assert_eq!(segments.move_to(&[half(1)]), [half(1)]);
        assert_eq!(segments.retiring.len(), 2);
        assert_eq!(segments.live, [half(1)]);
    }

    #[test]
    fn a_partly_shared_segment_retires_and_its_shared_part_is_listed_again() {
        let mut segments = segments();
        segments.move_to(&[third(1)]);
        // The middle third to the second half: [1/3, 2/3) is only partly inside.
        let added = segments.move_to(&[half(1)]);
        assert_eq!(added, [half(1)]);
        assert_eq!(segments.retiring, [third(1)]);
    }

    #[test]
    fn a_segment_retiring_comes_back_without_a_relist() {
        let mut segments = segments();
        segments.move_to(&[third(0)]);
        segments.move_to(&[third(2)]);
        assert_eq!(segments.retiring, [third(0)]);
        assert!(segments.move_to(&[third(0)]).is_empty());
        assert_eq!(segments.live, [third(0)]);
        assert_eq!(segments.retiring, [third(2)]);
    }

    #[test]
    fn with_one_segment_at_most_a_move_lists_the_whole_new_range() {
        let mut segments = Segments {
            max: 1,
            ..Segments::default()
        };
        segments.move_to(&[third(0)]);
        assert_eq!(segments.move_to(&[half(0)]), [half(0)]);
        assert_eq!(segments.retiring, [third(0)]);
        assert_eq!(segments.live, [half(0)]);
    }
}

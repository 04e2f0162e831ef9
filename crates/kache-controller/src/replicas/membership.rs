//! A replica's Lease and its view of the group's: liveness judged on the observer's own clock,
//! and the ranges each live replica claims.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube_client::Api;
use kube_client::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use tokio::time::Instant;
use tracing::warn;

use crate::ranges::Ranges;

/// The label that marks the Leases of one group of replicas.
pub const GROUP_LABEL: &str = "kache.rs/replica-group";
/// The annotation in which a replica's Lease claims its ranges.
pub const CLAIM_ANNOTATION: &str = "kache.rs/claimed-ranges";
/// The annotation that tells one process from another using the same identity.
pub const INSTANCE_ANNOTATION: &str = "kache.rs/instance";
/// The annotation of a replica that is leaving: it claims nothing and is no member any more.
pub const LEAVING_ANNOTATION: &str = "kache.rs/leaving";

/// The name of the Lease of `identity` in `group`: the group is a DNS label (no dot), so the
/// name tells both apart.
pub(super) fn lease_name(group: &str, identity: &str) -> String {
    format!("{group}.{identity}")
}

/// The group's Leases as one replica sees them, at one linearizable LIST.
#[derive(Debug, Default)]
pub(super) struct View {
    /// The identities of the live members, this replica's included if its Lease is live.
    pub(super) members: BTreeSet<String>,
    /// What the other live Leases claim, including Leases that vanished (deleted by someone
    /// else) less than a lease duration after they last changed: their holder may not know.
    pub(super) others: Ranges,
    /// What the Leases that expired in this replica's eyes still claim, with when this replica
    /// last saw each of them change.
    pub(super) expired: Vec<(Ranges, Instant)>,
    /// When the next live Lease (other than this replica's) would expire if not renewed.
    pub(super) next_expiry: Option<Instant>,
    /// This replica's own Lease as listed.
    pub(super) own: Option<Own>,
}

/// This replica's Lease as the server has it.
#[derive(Debug)]
pub(super) struct Own {
    /// Written by this process (its nonce).
    pub(super) ours: bool,
    /// Until when another process that wrote it counts as alive (its nonce, changed recently).
    pub(super) foreign_until: Option<Instant>,
}

/// What this replica remembers of a Lease.
#[derive(Debug)]
struct Seen {
    version: String,
    changed: Instant,
    holder: String,
    claims: Ranges,
    leaving: bool,
}

/// Why a write of the Lease failed.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The Lease is not what this replica last wrote (changed or deleted by someone else, or
    /// an earlier write of its own landed late): it holds nothing until it writes afresh.
    Lost(kube_client::Error),
    /// The request failed or timed out: it may still land (then the next write is `Lost`).
    Failed(String),
}

/// One replica's Lease, and its record of when it saw each Lease of its group change.
#[derive(Debug)]
pub(super) struct Membership {
    api: Api<Lease>,
    group: String,
    identity: String,
    name: String,
    instance: String,
    lease_duration: Duration,
    /// The bound on each request: a request that hangs must not hold the replica's rounds.
    timeout: Duration,
    seen: HashMap<String, Seen>,
    /// The resourceVersion of this replica's Lease after its last acknowledged write: the
    /// precondition of the next, so that no write lands after a newer one.
    acked: Option<String>,
}

impl Membership {
    pub(super) fn new(
        api: Api<Lease>,
        group: &str,
        identity: &str,
        lease_duration: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            api,
            group: group.to_owned(),
            identity: identity.to_owned(),
            name: lease_name(group, identity),
            instance: instance_nonce(),
            lease_duration,
            timeout,
            seen: HashMap::new(),
            acked: None,
        }
    }

    pub(super) fn identity(&self) -> &str {
        &self.identity
    }

    /// Writes this replica's Lease, claiming `claims` (one server-side apply, conditional on
    /// the last acknowledged write once there is one).
    pub(super) async fn renew(&mut self, claims: &Ranges, leaving: bool) -> Result<(), WriteError> {
        let mut annotations = BTreeMap::from([
            (CLAIM_ANNOTATION.to_owned(), claims.to_string()),
            (INSTANCE_ANNOTATION.to_owned(), self.instance.clone()),
        ]);
        if leaving {
            annotations.insert(LEAVING_ANNOTATION.to_owned(), "true".to_owned());
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    GROUP_LABEL.to_owned(),
                    self.group.clone(),
                )])),
                annotations: Some(annotations),
                resource_version: self.acked.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                // For people reading `kubectl get lease`: no replica trusts another's clock.
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply("kache-replica").force();
        let conditional = self.acked.is_some();
        let patch = Patch::Apply(&lease);
        let write = self.api.patch(&self.name, &params, &patch);
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(written)) => {
                self.acked = written.metadata.resource_version;
                Ok(())
            }
            Ok(Err(kube_client::Error::Api(status)))
                if conditional && matches!(status.code, 404 | 409 | 422) =>
            {
                self.acked = None;
                Err(WriteError::Lost(kube_client::Error::Api(status)))
            }
            Ok(Err(err)) => Err(WriteError::Failed(err.to_string())),
            Err(_) => Err(WriteError::Failed(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Deletes this replica's Lease: it claims nothing and is no member any more.
    pub(super) async fn leave(&self) -> Result<(), String> {
        let params = DeleteParams::default();
        let delete = self.api.delete(&self.name, &params);
        match tokio::time::timeout(self.timeout, delete).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(kube_client::Error::Api(status))) if status.code == 404 => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Lists the group's Leases (a LIST without a resourceVersion: a linearizable read, which
    /// sees every write acknowledged before it started).
    pub(super) async fn observe(&mut self) -> Result<View, String> {
        let selector = format!("{GROUP_LABEL}={}", self.group);
        let params = ListParams::default().labels(&selector);
        let request = self.api.list(&params);
        let leases = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(leases)) => leases,
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("no answer within {:?}", self.timeout)),
        };
        let now = Instant::now();
        let mut view = View::default();
        let mut seen = HashMap::new();
        for lease in leases {
            let (Some(name), Some(version)) = (
                lease.metadata.name.clone(),
                lease.metadata.resource_version.clone(),
            ) else {
                continue;
            };
            let changed = match self.seen.remove(&name) {
                Some(last) if last.version == version => last.changed,
                // New to this replica, or renewed since: alive as of now.
                _ => now,
            };
            let annotations = lease.metadata.annotations.unwrap_or_default();
            let claims = match annotations.get(CLAIM_ANNOTATION) {
                None => Ranges::empty(),
                Some(text) => Ranges::parse(text).unwrap_or_else(|| {
                    // Safety first: a claim this build cannot read claims everything.
                    warn!(lease = %name, claim = %text, "a replica's claim does not parse; counted as claiming every range");
                    Ranges::full()
                }),
            };
            // A Lease without a holder still claims what it claims, under its name.
            let holder = lease
                .spec
                .and_then(|spec| spec.holder_identity)
                .unwrap_or_else(|| name.clone());
            let leaving = annotations.contains_key(LEAVING_ANNOTATION);
            if name == self.name {
                let ours = annotations.get(INSTANCE_ANNOTATION) == Some(&self.instance);
                view.own = Some(Own {
                    ours,
                    foreign_until: (!ours).then_some(changed + self.lease_duration),
                });
            }
            seen.insert(
                name,
                Seen {
                    version,
                    changed,
                    holder,
                    claims,
                    leaving,
                },
            );
        }
        // A Lease deleted by someone else: its holder may not know yet and go on for up to a
        // lease duration. Its last claims stand until then (a replica that leaves in order
        // writes empty claims before it deletes its Lease).
        for (name, mut last) in self.seen.drain() {
            if now < last.changed + self.lease_duration && !last.claims.is_empty() {
                VANISHED.clone_into(&mut last.version);
                seen.insert(name, last);
            }
        }
        for (name, lease) in &seen {
            let expires = lease.changed + self.lease_duration;
            let present = lease.version != VANISHED;
            if now < expires {
                if *name != self.name {
                    view.others = view.others.union(&lease.claims);
                    view.next_expiry = Some(view.next_expiry.map_or(expires, |e| e.min(expires)));
                }
                if present && !lease.leaving {
                    view.members.insert(lease.holder.clone());
                }
            } else if !lease.claims.is_empty() {
                view.expired.push((lease.claims.clone(), lease.changed));
            }
        }
        self.seen = seen;
        Ok(view)
    }

    /// Whether this replica has a write acknowledged since it last lost its Lease.
    pub(super) fn has_written(&self) -> bool {
        self.acked.is_some()
    }

    /// Forgets the last write: the next is unconditional (its Lease is gone).
    pub(super) fn forget_write(&mut self) {
        self.acked = None;
    }
}

/// The version of a Lease that was listed before and is not any more.
const VANISHED: &str = "";

/// A value that tells this process's Lease writes from another's with the same identity.
fn instance_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

/// A hint each time another replica of the group changes its claims, joins or leaves: a
/// watch of the group's Leases, so that a hand-off does not wait for the next renewal round.
/// Renewals that claim the same ranges are not hints. Decisions never rest on it: each round
/// reads the Leases with a linearizable LIST.
pub(super) fn claim_changes(
    api: Api<Lease>,
    group: &str,
    identity: &str,
    renew_every: Duration,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    use futures::StreamExt;
    use kache_watch::{Event, WatchStreamExt};

    let selector = format!("{GROUP_LABEL}={group}");
    let own = lease_name(group, identity);
    let mut claims: HashMap<String, Option<String>> = HashMap::new();
    // After an outage (an API server restart), the hints come back within two renewal
    // intervals: the default backoff could leave them off for tens of seconds.
    let backoff = kache_watch::Backoff::default()
        .initial(renew_every.min(Duration::from_millis(800)))
        .max(renew_every * 2);
    kache_watch::watcher(api, kache_watch::Config::default().labels(&selector))
        .backoff(backoff)
        .filter_map(move |event| {
            let hint = match event {
                Ok(Event::Apply(lease) | Event::InitApply(lease)) => {
                    let name = lease.metadata.name.clone().unwrap_or_default();
                    let annotations = lease.metadata.annotations.unwrap_or_default();
                    let claim = annotations.get(CLAIM_ANNOTATION).cloned().map(|c| {
                        format!(
                            "{c}{}",
                            if annotations.contains_key(LEAVING_ANNOTATION) {
                                "!"
                            } else {
                                ""
                            }
                        )
                    });
                    name != own && claims.insert(name, claim.clone()) != Some(claim)
                }
                Ok(Event::Delete(lease)) => {
                    let name = lease.metadata.name.unwrap_or_default();
                    claims.remove(&name);
                    name != own
                }
                Ok(Event::InitDone) => true,
                Ok(Event::Init) | Err(_) => false,
            };
            futures::future::ready(hint.then_some(()))
        })
}

//! A replica's Lease and its view of the group's: liveness judged on the observer's own clock,
//! and the ranges each live replica claims.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube_client::Api;
use kube_client::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use tokio::time::Instant;
use tracing::warn;

use super::Ranges;

/// The label that marks the Leases of one group of replicas.
pub const GROUP_LABEL: &str = "kache.rs/replica-group";
/// The annotation in which a replica's Lease claims its ranges.
pub const CLAIM_ANNOTATION: &str = "kache.rs/claimed-ranges";
/// The annotation that tells one process from another using the same identity.
pub const INSTANCE_ANNOTATION: &str = "kache.rs/instance";

/// The group's Leases as one replica sees them, at one linearizable LIST.
#[derive(Debug, Default)]
pub(super) struct View {
    /// The live replicas (this one included if its Lease is live), with their claims.
    pub(super) live: BTreeMap<String, Ranges>,
    /// What the replicas whose Leases expired in this replica's eyes still claim, with when
    /// this replica last saw each of their Leases change.
    pub(super) expired: Vec<(Ranges, Instant)>,
    /// When the next live Lease (other than this replica's) would expire if not renewed.
    pub(super) next_expiry: Option<Instant>,
    /// Another process writes this replica's Lease: the same identity twice in one group.
    pub(super) impostor: Option<String>,
}

/// One replica's Lease, and its record of when it saw each Lease of its group change.
#[derive(Debug)]
pub(super) struct Membership {
    api: Api<Lease>,
    group: String,
    identity: String,
    instance: String,
    lease_duration: Duration,
    /// Each Lease's last resourceVersion, and when this replica saw it change.
    seen: HashMap<String, (String, Instant)>,
}

impl Membership {
    pub(super) fn new(
        api: Api<Lease>,
        group: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api,
            group: group.to_owned(),
            identity: identity.to_owned(),
            instance: instance_nonce(),
            lease_duration,
            seen: HashMap::new(),
        }
    }

    pub(super) fn identity(&self) -> &str {
        &self.identity
    }

    fn lease_name(&self) -> String {
        format!("{}-{}", self.group, self.identity)
    }

    /// Creates or renews this replica's Lease, claiming `claims` (one server-side apply).
    pub(super) async fn renew(&self, claims: &Ranges) -> Result<(), kube_client::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name()),
                labels: Some(BTreeMap::from([(
                    GROUP_LABEL.to_owned(),
                    self.group.clone(),
                )])),
                annotations: Some(BTreeMap::from([
                    (CLAIM_ANNOTATION.to_owned(), claims.to_string()),
                    (INSTANCE_ANNOTATION.to_owned(), self.instance.clone()),
                ])),
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
        self.api
            .patch(&self.lease_name(), &params, &Patch::Apply(&lease))
            .await?;
        Ok(())
    }

    /// Deletes this replica's Lease: it claims nothing and is no member any more.
    pub(super) async fn leave(&self) -> Result<(), kube_client::Error> {
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

    /// Lists the group's Leases (a LIST without a resourceVersion: a linearizable read, which
    /// sees every write acknowledged before it started).
    pub(super) async fn observe(&mut self) -> Result<View, kube_client::Error> {
        let selector = format!("{GROUP_LABEL}={}", self.group);
        let leases = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?;
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
                Some((last, when)) if last == version => when,
                // New to this replica, or renewed since: alive as of now.
                _ => now,
            };
            seen.insert(name.clone(), (version, changed));
            let annotations = lease.metadata.annotations.unwrap_or_default();
            let claims = match annotations.get(CLAIM_ANNOTATION) {
                None => Ranges::empty(),
                Some(text) => Ranges::parse(text).unwrap_or_else(|| {
                    // Safety first: a claim this build cannot read claims everything.
                    warn!(lease = %name, claim = %text, "a replica's claim does not parse; counted as claiming every range");
                    Ranges::full()
                }),
            };
            let Some(holder) = lease.spec.and_then(|spec| spec.holder_identity) else {
                continue;
            };
            if name == self.lease_name()
                && annotations
                    .get(INSTANCE_ANNOTATION)
                    .is_some_and(|instance| *instance != self.instance)
            {
                view.impostor = annotations.get(INSTANCE_ANNOTATION).cloned();
            }
            let expires = changed + self.lease_duration;
            if now < expires {
                if holder != self.identity {
                    view.next_expiry = Some(view.next_expiry.map_or(expires, |e| e.min(expires)));
                }
                let entry = view.live.entry(holder).or_default();
                *entry = entry.union(&claims);
            } else if !claims.is_empty() {
                view.expired.push((claims, changed));
            }
        }
        self.seen = seen;
        Ok(view)
    }
}

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
    let own = format!("{group}-{identity}");
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
                    let claim = lease
                        .metadata
                        .annotations
                        .and_then(|mut a| a.remove(CLAIM_ANNOTATION));
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

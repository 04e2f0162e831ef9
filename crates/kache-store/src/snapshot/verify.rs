//! Whether a sound snapshot belongs to the server's cluster and history.

use kache_watch::ServerPoint;
use kube_client::Resource;
use tracing::debug;

use super::Meta;
use crate::error::Rejected;
use crate::key::ObjectKey;
use crate::version::ResourceVersion;
/// Whether a sound snapshot of this watch belongs to the server's cluster and history: see the
/// module's docs.
pub(crate) fn verify<K: Resource>(
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kache_watch::{Config, ServerPoint};
    use kube_client::api::ObjectMeta;

    use super::{Meta, verify};
    use crate::{Rejected, WatchIdentity};

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

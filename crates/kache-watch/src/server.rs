//! What a server says about itself now: which cluster it serves, and how far its history goes.
//!
//! A cache that starts from something saved earlier (a snapshot) must check it against the
//! server before serving it: the snapshot may come from another cluster, or from a future
//! this server never reached (etcd restored from a backup). Two requests tell:
//!
//! - [`cluster_uid`]: the uid of the `kube-system` namespace, which every cluster creates
//!   once and never renames, the identity that many tools use as a cluster id;
//! - [`server_point`]: one consistent LIST of at most one object's metadata in a watch's
//!   scope, which gives the server's current resourceVersion and the first object it holds.

use kube_client::api::{GetParams, ListParams, ObjectMeta};
use kube_client::{Api, Client, Resource};
use serde::Deserialize;
use tracing::debug;

use crate::config::Config;
use crate::error::{Error, Result, status_code};
use crate::watcher::prepare;

/// The uid of the cluster's `kube-system` namespace: `Some` uid, or `None` when the caller
/// may not read that namespace (`403`) or the server has none (`404`).
///
/// A namespace's uid is set when it is created and never reused, so two clusters (or a
/// cluster deleted and created again under the same name) have different ones. Reading it
/// needs `get` on that one namespace, which a namespaced operator may not have: the caller
/// then needs another way to tell clusters apart.
///
/// ```no_run
/// use kube_client::Client;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::try_default().await?;
/// match kache_watch::cluster_uid(&client).await? {
///     Some(uid) => println!("cluster {uid}"),
///     None => println!("this client may not read the kube-system namespace"),
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::ServerQueryFailed`] if the request fails otherwise (the server is unreachable).
pub async fn cluster_uid(client: &Client) -> Result<Option<String>> {
    let request = kube_client::core::Request::new("/api/v1/namespaces")
        .get_metadata("kube-system", &GetParams::default());
    let request = prepare(request, None, "get_metadata").map_err(Error::ServerQueryFailed)?;
    match client.request::<Head>(request).await {
        Ok(namespace) => Ok(namespace.metadata.uid.filter(|uid| !uid.is_empty())),
        Err(err) if matches!(status_code(&err), Some(403 | 404)) => {
            debug!(error = %err, "the kube-system namespace cannot be read: the cluster has no known uid");
            Ok(None)
        }
        Err(err) => Err(Error::ServerQueryFailed(err)),
    }
}

/// Where a server stands now in the scope of a watch, from [`server_point`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServerPoint {
    /// The server's current resourceVersion: a consistent read's, so no change the server
    /// has made is newer.
    pub resource_version: String,
    /// The metadata of the first object the server lists in the scope (the first by key),
    /// if there is one.
    pub first: Option<ObjectMeta>,
}

impl ServerPoint {
    /// A point at `resource_version` with no object listed (for tests of code that checks
    /// against one).
    #[must_use]
    pub fn new(resource_version: String) -> Self {
        Self {
            resource_version,
            first: None,
        }
    }
}

/// One consistent LIST of at most one object's metadata in `api`'s scope with the selectors
/// of `config`: the server's current resourceVersion and its first object.
///
/// The LIST sets no `resourceVersion`, so the server answers from its newest state (a quorum
/// read from etcd, or from a watch cache it has checked is current): the version it returns
/// is one the server has reached. It asks for metadata only and one object, so it costs about
/// one round trip whatever the size of the collection.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_watch::Config;
/// use kube_client::{Api, Client};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::default_namespaced(Client::try_default().await?);
/// let now = kache_watch::server_point(&api, &Config::default()).await?;
/// println!("the server is at {}", now.resource_version);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::ServerQueryFailed`] if the LIST fails; [`Error::NoResourceVersion`] if the
/// server's answer has no resourceVersion.
pub async fn server_point<K: Resource + Clone>(
    api: &Api<K>,
    config: &Config,
) -> Result<ServerPoint> {
    let params = ListParams {
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
        limit: Some(1),
        ..ListParams::default()
    };
    let request = kube_client::core::Request::new(api.resource_url()).list_metadata(&params);
    let request = prepare(request, None, "list_metadata").map_err(Error::ServerQueryFailed)?;
    let list: HeadList = Client::from(api.clone())
        .request(request)
        .await
        .map_err(Error::ServerQueryFailed)?;
    let resource_version = list
        .metadata
        .resource_version
        .filter(|rv| !rv.is_empty())
        .ok_or(Error::NoResourceVersion)?;
    Ok(ServerPoint {
        resource_version,
        first: list.items.into_iter().next().map(|item| item.metadata),
    })
}

/// An object's metadata, whatever its kind.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    metadata: ObjectMeta,
}

/// A list's metadata and its items' metadata, whatever their kind.
#[derive(Deserialize)]
struct HeadList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default, deserialize_with = "crate::watcher::null_as_empty")]
    items: Vec<Head>,
}

#[derive(Default, Deserialize)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

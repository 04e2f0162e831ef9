//! JSON on the wire, for every type: [`watcher`], [`metadata_watcher`] and the two built on
//! them, [`watch_object`] and [`server_shards`]; their [`ApiMode`]s read whole objects
//! ([`FullObject`]) or only metadata ([`MetaOnly`]), and leave `managedFields` out unless
//! kept.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube_client::{
    Api, Client, Resource,
    api::{ListParams, WatchEvent, WatchParams},
    core::PartialObjectMeta,
};
use serde::{Deserialize, de::DeserializeOwned};

use super::mode::{ApiMode, Page, WatchStream, prepare};
use super::run;
use crate::decode::Trimmed;
use crate::{Config, Error, Event, Result, Shard};

/// Lists and then watches the objects that `api` and `config` select.
///
/// The stream opens with an initial sync (`Init`, one `InitApply` per object, `InitDone`) and
/// then yields `Apply` and `Delete` as objects change. It never ends by itself:
/// - a watch that times out or drops is resumed from the last seen resourceVersion (bookmarks
///   advance it), without a relist;
/// - a `410 Gone` (an ERROR event on the watch, or an expired continue token on a LIST page)
///   starts over with `Init` and a full relist;
/// - with [`Config::resume_from`](Config#structfield.resume_from) set, the stream skips the
///   initial sync and opens with the changes made since that version (a consumer restored
///   from a snapshot); a `410 Gone` there falls back to the initial sync;
/// - every error is yielded as an `Err` item and the stream goes on. The request that follows
///   an error waits first ([`Config::retry_backoff`], on by default), so a persistent error
///   is never a busy loop; a backoff adapter
///   ([`default_backoff`](crate::WatchStreamExt::default_backoff)) that polls the watcher
///   replaces that wait with its own.
///
/// Before each request the stream returns to the runtime at least once, so a task that drives
/// it can be aborted, and other tasks run, even when every request fails at once.
///
/// Objects missing `metadata.name` are skipped with an [`Error::InvalidObject`] item; a watch
/// event missing `metadata.resourceVersion` also makes the watcher relist, since the resume
/// point can no longer be trusted.
///
/// Bookmarks, and the resourceVersion of each completed list, are not events: the watcher
/// reports them to the consumer polling it, if that consumer asks (kache-store's reflectors do).
///
/// ```no_run
/// use futures::TryStreamExt;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_watch::{watcher, Config, Event, WatchStreamExt};
/// use kube_client::{Api, Client};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::default_namespaced(Client::try_default().await?);
/// let mut events = std::pin::pin!(watcher(api, Config::default().labels("app=web")).default_backoff());
/// while let Some(event) = events.try_next().await? {
///     match event {
///         Event::Apply(cm) => println!("changed {:?}", cm.metadata.name),
///         Event::Delete(cm) => println!("deleted {:?}", cm.metadata.name),
///         Event::Init | Event::InitApply(_) | Event::InitDone => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub fn watcher<K>(api: Api<K>, config: Config) -> impl Stream<Item = Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let keep_managed_fields = config.keep_managed_fields;
    run(
        FullObject {
            api,
            keep_managed_fields,
        },
        config,
    )
}

/// Like [`watcher`], but fetches only each object's metadata (`PartialObjectMeta`).
///
/// A cache of metadata is much smaller than one of full objects: use it when a controller
/// needs names, labels, owners or resourceVersions but not specs.
pub fn metadata_watcher<K>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<Event<PartialObjectMeta<K>>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let keep_managed_fields = config.keep_managed_fields;
    run(
        MetaOnly {
            api,
            keep_managed_fields,
        },
        config,
    )
}

/// Watches one object by name: yields `Some(object)` when it is listed, created or changed,
/// and `None` when it is deleted or absent from a (re)list.
///
/// ```no_run
/// use futures::TryStreamExt;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_watch::watch_object;
/// use kube_client::{Api, Client};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::default_namespaced(Client::try_default().await?);
/// let mut stream = std::pin::pin!(watch_object(api, "settings"));
/// while let Some(cm) = stream.try_next().await? {
///     println!("settings now: {:?}", cm.and_then(|cm| cm.data));
/// }
/// # Ok(())
/// # }
/// ```
pub fn watch_object<K>(api: Api<K>, name: &str) -> impl Stream<Item = Result<Option<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = Config::default().fields(&format!("metadata.name={name}"));
    // `seen` says whether the current list has listed the object, so that a list without it
    // reports `None` (deleted while the watch was down).
    watcher(api, config)
        .scan(false, |seen, event| {
            let item = match event {
                Err(err) => Some(Err(err)),
                Ok(Event::Init) => {
                    *seen = false;
                    None
                }
                Ok(Event::InitApply(obj)) => {
                    *seen = true;
                    Some(Ok(Some(obj)))
                }
                Ok(Event::InitDone) => (!*seen).then_some(Ok(None)),
                Ok(Event::Apply(obj)) => Some(Ok(Some(obj))),
                Ok(Event::Delete(_)) => Some(Ok(None)),
            };
            futures::future::ready(Some(item))
        })
        .filter_map(futures::future::ready)
}

/// Asks the server whether it shards lists and watches (KEP-5866): one LIST of at most one
/// object with a `shardSelector`, whose response a sharding server marks with the selector.
///
/// A [`Config::shard`](crate::Config::shard) works either way (the watcher filters on the
/// client where the server does not); this tells what it will cost, for a start-up log or to
/// choose how to split work: without server support, every watch receives every object.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube_client::{Api, Client};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::default_namespaced(Client::try_default().await?);
/// if !kache_watch::server_shards(&api).await? {
///     println!("each replica will receive every object and filter it");
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::InitialListFailed`] if the LIST fails.
pub async fn server_shards<K>(api: &Api<K>) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let params = ListParams {
        limit: Some(1),
        ..ListParams::default()
    };
    let selector = Shard::new([crate::ShardRange::full()])?.selector();
    let page = FullObject {
        api: api.clone(),
        keep_managed_fields: false,
    }
    .list(&params, Some(&selector))
    .await
    .map_err(Error::InitialListFailed)?;
    Ok(page.shard_echo.is_some())
}

/// A list response read with its `shardInfo`, which k8s-openapi's `ListMeta` has only when
/// built for Kubernetes 1.36 or later (the final binary picks the version, not kache).
#[derive(Deserialize)]
#[serde(bound(deserialize = "V: DeserializeOwned"))]
struct ShardedList<V> {
    #[serde(default)]
    metadata: ShardedListMeta,
    #[serde(default = "Vec::new", deserialize_with = "null_as_empty")]
    items: Vec<V>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShardedListMeta {
    resource_version: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    shard_info: Option<ShardInfo>,
}

#[derive(Deserialize)]
struct ShardInfo {
    selector: String,
}

pub(crate) fn null_as_empty<'de, D, V>(deserializer: D) -> std::result::Result<Vec<V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: DeserializeOwned,
{
    Ok(Option::<Vec<V>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Sends a LIST request and decodes its page, without `managedFields` unless `keep` (see
/// [`Trimmed`]).
async fn list_page<V: Clone + DeserializeOwned>(
    client: Client,
    request: http::Request<Vec<u8>>,
    keep_managed_fields: bool,
) -> kube_client::Result<Page<V>> {
    if keep_managed_fields {
        decode_list::<V>(client, request).await
    } else {
        Ok(decode_list::<Trimmed<V>>(client, request)
            .await?
            .map(|Trimmed(obj)| obj))
    }
}

async fn decode_list<V: Clone + DeserializeOwned>(
    client: Client,
    request: http::Request<Vec<u8>>,
) -> kube_client::Result<Page<V>> {
    let (list, bytes): (ShardedList<V>, _) = request_json(client, request).await?;
    Ok(Page {
        items: list.items,
        resource_version: list.metadata.resource_version,
        continue_token: list.metadata.continue_token,
        shard_echo: list.metadata.shard_info.map(|info| info.selector),
        bytes,
    })
}

/// As `Client::request`, but an error answer keeps the server's `Retry-After` header in its
/// status (`details.retryAfterSeconds`): kube-client drops headers, and an overloaded server
/// answers 429 with a plain-text body. Returns the body's length beside its value.
async fn request_json<T: DeserializeOwned>(
    client: Client,
    request: http::Request<Vec<u8>>,
) -> kube_client::Result<(T, usize)> {
    use http_body_util::BodyExt;

    let response = client
        .send(request.map(kube_client::client::Body::from))
        .await?;
    let code = response.status();
    let retry_after = crate::retry::header_seconds(response.headers());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| kube_client::Error::Service(Box::new(err)))?
        .to_bytes();
    if code.is_client_error() || code.is_server_error() {
        let status =
            serde_json::from_slice::<kube_client::core::Status>(&body).unwrap_or_else(|_| {
                kube_client::core::Status::failure(
                    String::from_utf8_lossy(&body).trim(),
                    "Failed to parse error data",
                )
                .with_code(code.as_u16())
            });
        let status = crate::retry::with_header(status, retry_after);
        return Err(kube_client::Error::Api(Box::new(status)));
    }
    let value = serde_json::from_slice(&body).map_err(kube_client::Error::SerdeError)?;
    Ok((value, body.len()))
}

/// Sends a WATCH request and decodes its events, objects without `managedFields` unless
/// `keep` (see [`Trimmed`]).
async fn watch_events<V: Clone + DeserializeOwned + Send + 'static>(
    client: Client,
    request: http::Request<Vec<u8>>,
    keep_managed_fields: bool,
) -> kube_client::Result<WatchStream<V>> {
    if keep_managed_fields {
        return client
            .request_events::<V>(request)
            .await
            .map(StreamExt::boxed);
    }
    let events = client.request_events::<Trimmed<V>>(request).await?;
    Ok(events
        .map(|event| {
            event.map(|event| match event {
                WatchEvent::Added(Trimmed(obj)) => WatchEvent::Added(obj),
                WatchEvent::Modified(Trimmed(obj)) => WatchEvent::Modified(obj),
                WatchEvent::Deleted(Trimmed(obj)) => WatchEvent::Deleted(obj),
                WatchEvent::Bookmark(bookmark) => WatchEvent::Bookmark(bookmark),
                WatchEvent::Error(status) => WatchEvent::Error(status),
            })
        })
        .boxed())
}

/// Whole objects; `managedFields` decoded only if kept ([`Config::keep_managed_fields`]).
struct FullObject<K> {
    api: Api<K>,
    keep_managed_fields: bool,
}

impl<K> ApiMode for FullObject<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    type Value = K;

    async fn list(&self, params: &ListParams, shard: Option<&str>) -> kube_client::Result<Page<K>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = if K::metadata_api() {
            builder.list_metadata(params)
        } else {
            builder.list(params)
        };
        let request = prepare(request, shard, "list")?;
        list_page(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }

    async fn watch(
        &self,
        params: &WatchParams,
        version: &str,
        shard: Option<&str>,
    ) -> kube_client::Result<WatchStream<K>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = if K::metadata_api() {
            builder.watch_metadata(params, version)
        } else {
            builder.watch(params, version)
        };
        let request = prepare(request, shard, "watch")?;
        watch_events(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }
}

/// Only the objects' metadata; `managedFields` decoded only if kept.
struct MetaOnly<K> {
    api: Api<K>,
    keep_managed_fields: bool,
}

impl<K> ApiMode for MetaOnly<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    type Value = PartialObjectMeta<K>;

    async fn list(
        &self,
        params: &ListParams,
        shard: Option<&str>,
    ) -> kube_client::Result<Page<Self::Value>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = prepare(builder.list_metadata(params), shard, "list_metadata")?;
        list_page(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }

    async fn watch(
        &self,
        params: &WatchParams,
        version: &str,
        shard: Option<&str>,
    ) -> kube_client::Result<WatchStream<Self::Value>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = prepare(
            builder.watch_metadata(params, version),
            shard,
            "watch_metadata",
        )?;
        watch_events(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }
}

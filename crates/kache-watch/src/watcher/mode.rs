//! The seam between the state machine and a wire mode: [`ApiMode`], which a wire mode
//! implements to list and watch, the [`Page`] and [`WatchStream`] it answers with, and
//! [`prepare`], the finishing touch every request of every mode gets.

use std::{fmt::Debug, future::Future};

use futures::stream::BoxStream;
use kube_client::{
    Resource,
    api::{ListParams, WatchEvent, WatchParams},
};

use crate::shard::encode_query_value;

/// Lists and watches either whole objects or only their metadata.
pub(super) trait ApiMode: Send + Sync {
    type Value: Resource + Clone + Debug + Send + 'static;

    /// One LIST page; with a shard selector, sent as `shardSelector`.
    fn list(
        &self,
        params: &ListParams,
        shard: Option<&str>,
    ) -> impl Future<Output = kube_client::Result<Page<Self::Value>>> + Send;

    /// A WATCH from `version`; with a shard selector, sent as `shardSelector`.
    fn watch(
        &self,
        params: &WatchParams,
        version: &str,
        shard: Option<&str>,
    ) -> impl Future<Output = kube_client::Result<WatchStream<Self::Value>>> + Send;
}

/// One LIST page: its objects and what the watcher needs of its metadata.
pub(super) struct Page<V> {
    pub(super) items: Vec<V>,
    pub(super) resource_version: Option<String>,
    pub(super) continue_token: Option<String>,
    /// `metadata.shardInfo.selector`: the shard selector a server that shards echoes back.
    pub(super) shard_echo: Option<String>,
    /// The response body's length in bytes, as received (after any content decoding).
    pub(super) bytes: usize,
}

impl<V> Page<V> {
    pub(super) fn map<W>(self, f: impl FnMut(V) -> W) -> Page<W> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            resource_version: self.resource_version,
            continue_token: self.continue_token,
            shard_echo: self.shard_echo,
            bytes: self.bytes,
        }
    }
}

pub(super) type WatchStream<K> = BoxStream<'static, kube_client::Result<WatchEvent<K>>>;

/// Adds `shardSelector`, if any, to a request that kube-client built (its parameters have no
/// field for it) and names the request for kube-client's tracing, as `Api`'s own methods do.
pub(crate) fn prepare(
    request: std::result::Result<http::Request<Vec<u8>>, kube_client::core::request::Error>,
    selector: Option<&str>,
    name: &'static str,
) -> kube_client::Result<http::Request<Vec<u8>>> {
    let mut request = request.map_err(kube_client::Error::BuildRequest)?;
    if let Some(selector) = selector {
        let uri = format!(
            "{}&shardSelector={}",
            request.uri(),
            encode_query_value(selector)
        );
        *request.uri_mut() = uri.parse().map_err(|err: http::uri::InvalidUri| {
            kube_client::Error::BuildRequest(kube_client::core::request::Error::BuildRequest(
                err.into(),
            ))
        })?;
    }
    request.extensions_mut().insert(name);
    Ok(request)
}

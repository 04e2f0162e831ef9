//! Protobuf on the wire for built-in types: [`Proto`], [`protobuf_watcher`] and the decoding of
//! Kubernetes' protobuf encoding (feature `protobuf`).
//!
//! The API server encodes a built-in object in protobuf as the magic `k8s\0` followed by a
//! `runtime.Unknown` message whose `raw` field holds the object's own message (k8s-pb's
//! types). A LIST answers with one such envelope holding the list. A WATCH
//! (`;stream=watch`) answers with frames: a 4-byte big-endian length, then a `WatchEvent`
//! message encoded raw (no envelope: the server's stream serializer is the raw one), whose
//! `object.raw` is again an enveloped object. Errors come back as an enveloped `Status`.
//!
//! Nothing the server sends is trusted blindly: the response's `Content-Type` is checked,
//! every envelope must carry the magic and the expected kind, frames are bounded in length,
//! and a stream cut inside a frame is an error. Each of these is a
//! [`ProtoError`](crate::ProtoError), reported through the watcher's usual error items (see
//! [`Error::protobuf`](crate::Error::protobuf)).
//!
//! This module is the protobuf wire mode's entry point ([`protobuf_watcher`]) and its
//! [`ApiMode`]; the rest is one layer per file, each naming only those below it:
//! - `request.rs`: the HTTP requests and answers (content type, error bodies);
//! - `frame.rs`: a WATCH body, as length-prefixed frames of watch events;
//! - `envelope.rs`: the `k8s\0` envelope around every object, and a LIST body;
//! - `message.rs`: the prost messages kache reads its own way (envelope, frames, lists, and
//!   objects without `managedFields`);
//! - `types.rs`: [`Proto`] and the traits that say which k8s-pb types it holds;
//! - `meta.rs`: k8s-pb's `ObjectMeta` and `Status` as k8s-openapi's and kube-client's.

mod envelope;
mod frame;
mod message;
mod meta;
mod request;
#[cfg(test)]
mod tests;
mod types;

use std::fmt;

use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use kube_client::{
    Api,
    api::{ListParams, WatchParams},
};

use super::mode::{ApiMode, Page, WatchStream};
use super::run;
use crate::{Config, Event, Result};

use envelope::{PROTOBUF, decode_list};
use frame::{PROTOBUF_WATCH, watch_events};
use request::{finish_request, send};

pub use types::{Proto, ProtoObject, ProtoScope};

/// Like [`watcher`](crate::watcher), for a built-in type, with protobuf on the wire.
///
/// Every LIST asks for `application/vnd.kubernetes.protobuf` and every WATCH for
/// `application/vnd.kubernetes.protobuf;stream=watch`: the server sends less, and encodes
/// and the client decodes faster than JSON. Everything else is the JSON watcher's: the
/// [`Config`] (strategies, paging, bookmarks, shards, `resume_from`), the relist on
/// `410 Gone`, the errors (an error answer is decoded into the same `Status`, so
/// `status_code()` and [`class()`](crate::Error::class) say the same), the backoff.
///
/// The type says the encoding: `Api<Proto<k8s_pb::...::ConfigMap>>` (an `Api` over
/// [`Proto`], built as any other) gives `Event<Proto<ConfigMap>>`. Only built-in types have a
/// protobuf encoding; a server that answers with anything else (JSON, for a type it does not
/// serve in protobuf) gets a [`ProtoError::ContentType`](crate::ProtoError::ContentType) error
/// item, never a guess.
///
/// ```no_run
/// use futures::TryStreamExt;
/// use k8s_pb::api::core::v1::ConfigMap;
/// use kache_watch::{Config, Event, Proto, WatchStreamExt, protobuf_watcher};
/// use kube_client::{Api, Client, ResourceExt};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<Proto<ConfigMap>> = Api::default_namespaced(Client::try_default().await?);
/// let events = protobuf_watcher(api, Config::default().labels("app=web")).default_backoff();
/// let mut events = std::pin::pin!(events);
/// while let Some(event) = events.try_next().await? {
///     if let Event::Apply(cm) = event {
///         println!("changed {}: {} keys", cm.name_any(), cm.data.len());
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub fn protobuf_watcher<T>(
    api: Api<Proto<T>>,
    config: Config,
) -> impl Stream<Item = Result<Event<Proto<T>>>> + Send
where
    T: ProtoObject + fmt::Debug,
{
    let keep_managed_fields = config.keep_managed_fields;
    run(
        ProtoMode {
            api,
            keep_managed_fields,
        },
        config,
    )
}

/// Objects in protobuf; `managedFields` decoded only if kept ([`Config::keep_managed_fields`]).
struct ProtoMode<T> {
    api: Api<Proto<T>>,
    keep_managed_fields: bool,
}

impl<T> ApiMode for ProtoMode<T>
where
    T: ProtoObject + fmt::Debug,
{
    type Value = Proto<T>;

    async fn list(
        &self,
        params: &ListParams,
        shard: Option<&str>,
    ) -> kube_client::Result<Page<Proto<T>>> {
        let request = kube_client::core::Request::new(self.api.resource_url()).list(params);
        let request = finish_request(request, shard, "list", PROTOBUF)?;
        let response = send(self.api.clone().into_client(), request).await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| kube_client::Error::Service(Box::new(err)))?
            .to_bytes();
        Ok(decode_list::<T>(body, self.keep_managed_fields)?)
    }

    async fn watch(
        &self,
        params: &WatchParams,
        version: &str,
        shard: Option<&str>,
    ) -> kube_client::Result<WatchStream<Proto<T>>> {
        let request =
            kube_client::core::Request::new(self.api.resource_url()).watch(params, version);
        let mut request = finish_request(request, shard, "watch", PROTOBUF_WATCH)?;
        // As kube-client does for JSON watches: a compressed stream would hold back events.
        request.headers_mut().insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
        let response = send(self.api.clone().into_client(), request).await?;
        let chunks = response
            .into_body()
            .into_data_stream()
            .map_err(|err| match err {
                kube_client::Error::HyperError(err) => {
                    kube_client::Error::ReadEvents(std::io::Error::other(err))
                }
                other => other,
            });
        Ok(watch_events::<T, _>(chunks, self.keep_managed_fields).boxed())
    }
}

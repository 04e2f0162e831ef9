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
//! and a stream cut inside a frame is an error. Each of these is a [`ProtoError`], reported
//! through the watcher's usual error items (see [`Error::protobuf`](crate::Error::protobuf)).

use std::{fmt, ops::Deref};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as openapi;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;
use kube_client::{
    Api, Client,
    api::{ListParams, WatchEvent, WatchParams},
    core::{Status, TypeMeta, response::StatusSummary, watch::Bookmark, watch::BookmarkMeta},
};
use prost::Message;

use crate::watcher::{ApiMode, Page, WatchStream, prepare, run};
use crate::{Config, Event, Result};

/// The media type of a protobuf LIST response.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// The media type asked for on a WATCH: length-prefixed frames.
const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// The magic that opens every enveloped protobuf object.
const MAGIC: &[u8; 4] = b"k8s\0";
/// The longest watch frame accepted. etcd stores objects of at most 1.5 MiB by default and
/// the server refuses requests over 3 MiB: a length far past that is garbage, and buffering
/// up to it would let a broken stream take the memory.
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// A protobuf answer that could not be used. It reaches the stream as the source of
/// [`Error::InitialListFailed`](crate::Error::InitialListFailed) or
/// [`Error::WatchFailed`](crate::Error::WatchFailed) (find it with
/// [`Error::protobuf`](crate::Error::protobuf)); the watcher then relists or resumes as for
/// any undecodable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The server answered with another content type than protobuf (a custom resource, which
    /// has no protobuf encoding, is served as JSON).
    #[error("expected a protobuf response, got content type {0:?}")]
    ContentType(String),
    /// The bytes do not open with the `k8s\0` magic of an enveloped object.
    #[error("protobuf envelope has no k8s\\0 magic")]
    Magic,
    /// The envelope holds another kind than the one expected.
    #[error("expected kind {expected}, got {got:?}")]
    Kind {
        /// The kind asked for, such as `ConfigMapList`.
        expected: String,
        /// The kind the envelope named.
        got: String,
    },
    /// The envelope's payload is compressed or in another encoding.
    #[error("unsupported envelope encoding {0:?}")]
    Encoding(String),
    /// A watch frame announced more bytes than the limit of 64 MiB (etcd keeps objects of at
    /// most 1.5 MiB by default): refused before any of it is buffered.
    #[error("watch frame of {0} bytes is over the limit of {MAX_FRAME} bytes")]
    FrameTooLarge(usize),
    /// The watch stream ended inside a frame.
    #[error("watch stream ended inside a frame ({0} bytes of it received)")]
    Truncated(usize),
    /// A watch event of an unknown type.
    #[error("unknown watch event type {0:?}")]
    EventType(String),
    /// A watch event carried no object.
    #[error("watch event without an object")]
    NoObject,
    /// A timestamp out of range.
    #[error("timestamp out of range: {0} s")]
    Time(i64),
    /// The message itself could not be decoded.
    #[error("invalid protobuf message: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl From<ProtoError> for kube_client::Error {
    fn from(err: ProtoError) -> Self {
        kube_client::Error::Service(Box::new(err))
    }
}

/// Maps a k8s-pb scope to k8s-openapi's, so that a [`Proto`] has the scope `Api` expects.
pub trait ProtoScope {
    /// k8s-openapi's scope type of the same name.
    type OpenApi: k8s_openapi::ResourceScope;
}

impl ProtoScope for k8s_pb::NamespaceResourceScope {
    type OpenApi = k8s_openapi::NamespaceResourceScope;
}

impl ProtoScope for k8s_pb::ClusterResourceScope {
    type OpenApi = k8s_openapi::ClusterResourceScope;
}

impl ProtoScope for k8s_pb::SubResourceScope {
    type OpenApi = k8s_openapi::SubResourceScope;
}

/// A k8s-pb message that [`Proto`] can hold: any built-in top-level type of k8s-pb, such as
/// `k8s_pb::api::core::v1::ConfigMap`. Implemented for every type that qualifies.
pub trait ProtoObject:
    Message
    + Default
    + Clone
    + k8s_pb::Resource<Scope: ProtoScope>
    + k8s_pb::Metadata<Ty = pb::ObjectMeta>
    + 'static
{
}

impl<T> ProtoObject for T where
    T: Message
        + Default
        + Clone
        + k8s_pb::Resource<Scope: ProtoScope>
        + k8s_pb::Metadata<Ty = pb::ObjectMeta>
        + 'static
{
}

/// A built-in object decoded from protobuf: the k8s-pb message, with its metadata converted
/// once to k8s-openapi's `ObjectMeta` so that it is a `kube_client::Resource` like any other
/// (and works in kache-store's `Store`, indexes and subscribers unchanged).
///
/// The metadata lives in one place: [`meta`](kube_client::Resource::meta) (through
/// `ResourceExt`: `name_any()`, `labels()`, `resource_version()` ...). The inner message, which
/// `Proto` derefs to for its other fields (`data`, `spec`, `status` ...), keeps none (its
/// `metadata` is `None` as decoded, empty after [`Proto::new`]), so no object holds two copies.
///
/// ```
/// use k8s_pb::api::core::v1::ConfigMap;
/// use kache_watch::Proto;
/// use kube_client::ResourceExt;
///
/// let mut cm = ConfigMap::default();
/// cm.metadata = Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
///     name: Some("settings".into()),
///     ..Default::default()
/// });
/// cm.data.insert("mode".into(), "fast".into());
/// let cm = Proto::new(cm)?;
/// assert_eq!(cm.name_any(), "settings");
/// assert_eq!(cm.data["mode"], "fast");
/// # Ok::<(), kache_watch::ProtoError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Proto<T> {
    meta: openapi::ObjectMeta,
    object: T,
}

impl<T: ProtoObject> Proto<T> {
    /// Takes `object`'s metadata out into k8s-openapi's form.
    ///
    /// # Errors
    /// [`ProtoError::Time`] if a timestamp is out of range.
    pub fn new(mut object: T) -> Result<Self, ProtoError> {
        let meta = object
            .metadata_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        Ok(Self {
            meta: object_meta(meta)?,
            object,
        })
    }
}

impl<T> Proto<T> {
    /// The k8s-pb message, whose `metadata` is `None` or empty (see [`Proto`]).
    pub fn get(&self) -> &T {
        &self.object
    }

    /// The metadata and the k8s-pb message, whose `metadata` is `None` or empty.
    pub fn into_parts(self) -> (openapi::ObjectMeta, T) {
        (self.meta, self.object)
    }
}

impl<T> Deref for Proto<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.object
    }
}

impl<T: fmt::Debug> fmt::Debug for Proto<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proto")
            .field("metadata", &self.meta)
            .field("object", &self.object)
            .finish()
    }
}

impl<T: ProtoObject> k8s_openapi::Resource for Proto<T> {
    const API_VERSION: &'static str = T::API_VERSION;
    const GROUP: &'static str = T::GROUP;
    const KIND: &'static str = T::KIND;
    const VERSION: &'static str = T::VERSION;
    const URL_PATH_SEGMENT: &'static str = T::URL_PATH_SEGMENT;
    type Scope = <T::Scope as ProtoScope>::OpenApi;
}

impl<T: ProtoObject> k8s_openapi::Metadata for Proto<T> {
    type Ty = openapi::ObjectMeta;

    fn metadata(&self) -> &openapi::ObjectMeta {
        &self.meta
    }

    fn metadata_mut(&mut self) -> &mut openapi::ObjectMeta {
        &mut self.meta
    }
}

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
/// serve in protobuf) gets a [`ProtoError::ContentType`] error item, never a guess.
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

/// Adds the shard selector and the `Accept` header to a request kube-client built.
fn finish_request(
    request: std::result::Result<http::Request<Vec<u8>>, kube_client::core::request::Error>,
    shard: Option<&str>,
    name: &'static str,
    accept: &'static str,
) -> kube_client::Result<http::Request<Vec<u8>>> {
    let mut request = prepare(request, shard, name)?;
    request
        .headers_mut()
        .insert(http::header::ACCEPT, http::HeaderValue::from_static(accept));
    Ok(request)
}

/// Sends `request`; an error answer becomes `kube_client::Error::Api` with the server's
/// `Status` (decoded from protobuf or JSON, as the server chose), as kube-client does for
/// JSON; a success in another content type than protobuf is a [`ProtoError::ContentType`].
async fn send(
    client: Client,
    request: http::Request<Vec<u8>>,
) -> kube_client::Result<http::Response<kube_client::client::Body>> {
    let response = client
        .send(request.map(kube_client::client::Body::from))
        .await?;
    let code = response.status();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if code.is_client_error() || code.is_server_error() {
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| kube_client::Error::Service(Box::new(err)))?
            .to_bytes();
        let status = error_status(code.as_u16(), &content_type, &body);
        return Err(kube_client::Error::Api(Box::new(status)));
    }
    if !is_protobuf(&content_type) {
        return Err(ProtoError::ContentType(content_type).into());
    }
    Ok(response)
}

fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(PROTOBUF))
}

/// The `Status` of an error answer in whatever encoding it came; with the HTTP code where the
/// body says none, and the body as the message where it is no `Status` at all.
pub(crate) fn error_status(code: u16, content_type: &str, body: &[u8]) -> Status {
    let decoded = if is_protobuf(content_type) {
        unwrap_envelope(Bytes::copy_from_slice(body), "Status")
            .ok()
            .and_then(|raw| pb::Status::decode(raw).ok())
            .map(status)
    } else {
        serde_json::from_slice::<Status>(body).ok()
    };
    match decoded {
        Some(mut status) => {
            if status.code == 0 {
                status.code = code;
            }
            status
        }
        None => Status::failure(
            String::from_utf8_lossy(body).trim(),
            "Failed to parse error data",
        )
        .with_code(code),
    }
}

/// The payload of an enveloped object of kind `kind`.
pub(crate) fn unwrap_envelope(mut bytes: Bytes, kind: &str) -> Result<Bytes, ProtoError> {
    let envelope = decode_envelope(&mut bytes)?;
    if envelope.kind() != kind {
        return Err(ProtoError::Kind {
            expected: kind.to_owned(),
            got: envelope.kind().to_owned(),
        });
    }
    Ok(envelope.raw.unwrap_or_default())
}

fn decode_envelope(bytes: &mut Bytes) -> Result<Envelope, ProtoError> {
    if !bytes.starts_with(MAGIC) {
        return Err(ProtoError::Magic);
    }
    bytes.advance(MAGIC.len());
    let envelope = Envelope::decode(bytes)?;
    for encoding in [&envelope.content_encoding, &envelope.content_type] {
        match encoding.as_deref() {
            None | Some("") => {}
            Some(other) if encoding == &envelope.content_type && is_protobuf(other) => {}
            Some(other) => return Err(ProtoError::Encoding(other.to_owned())),
        }
    }
    Ok(envelope)
}

/// Decodes a LIST response; `managedFields` only if `keep_managed_fields`.
pub(crate) fn decode_list<T: ProtoObject>(
    body: Bytes,
    keep_managed_fields: bool,
) -> Result<Page<Proto<T>>, ProtoError> {
    let raw = unwrap_envelope(body, &format!("{}List", T::KIND))?;
    let mut list = List::<T> {
        keep_managed_fields,
        ..List::default()
    };
    list.merge(raw)?;
    let items = list
        .items
        .into_iter()
        .map(Lean::into_proto)
        .collect::<Result<Vec<_>, _>>()?;
    let meta = list.metadata.unwrap_or_default();
    Ok(Page {
        items,
        resource_version: meta.resource_version,
        continue_token: meta.continue_token,
        shard_echo: meta.shard_info.and_then(|info| info.selector),
    })
}

/// Splits a watch body into frames: a 4-byte big-endian length, then that many bytes.
#[derive(Default)]
pub(crate) struct Frames {
    buffer: BytesMut,
}

impl Frames {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole frame, if the buffer holds one.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, ProtoError> {
        let Some(prefix) = self.buffer.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError::FrameTooLarge(len));
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        self.buffer.advance(4);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// At the end of the stream: an error if a frame was cut.
    pub(crate) fn finish(&self) -> Result<(), ProtoError> {
        match self.buffer.len() {
            0 => Ok(()),
            partial => Err(ProtoError::Truncated(partial)),
        }
    }
}

/// The watch events in a stream of body chunks. The stream ends after its first error.
pub(crate) fn watch_events<T, S>(
    chunks: S,
    keep_managed_fields: bool,
) -> impl Stream<Item = kube_client::Result<WatchEvent<Proto<T>>>> + Send + 'static
where
    T: ProtoObject,
    S: Stream<Item = kube_client::Result<Bytes>> + Send + Unpin + 'static,
{
    futures::stream::unfold(Some((chunks, Frames::default())), move |state| async move {
        let (mut chunks, mut frames) = state?;
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => {
                    return Some((
                        decode_event::<T>(frame, keep_managed_fields).map_err(Into::into),
                        Some((chunks, frames)),
                    ));
                }
                Ok(None) => {}
                Err(err) => return Some((Err(err.into()), None)),
            }
            match chunks.next().await {
                Some(Ok(chunk)) => frames.push(&chunk),
                Some(Err(err)) => return Some((Err(err), None)),
                None => return frames.finish().err().map(|err| (Err(err.into()), None)),
            }
        }
    })
}

/// Decodes one watch frame: a raw `WatchEvent` whose object is an enveloped object;
/// `managedFields` only if `keep_managed_fields`.
pub(crate) fn decode_event<T: ProtoObject>(
    mut frame: Bytes,
    keep_managed_fields: bool,
) -> Result<WatchEvent<Proto<T>>, ProtoError> {
    let event = WatchEventFrame::decode(&mut frame)?;
    let mut raw = event
        .object
        .and_then(|object| object.raw)
        .ok_or(ProtoError::NoObject)?;
    let envelope = decode_envelope(&mut raw)?;
    let payload = envelope.raw.clone().unwrap_or_default();
    let kind = envelope.kind();
    let event_type = event.r#type.unwrap_or_default();
    // A Status where an object belongs is the server's error, whatever the event type says.
    if kind == "Status" || event_type == "ERROR" {
        if kind != "Status" {
            return Err(ProtoError::Kind {
                expected: "Status".to_owned(),
                got: kind.to_owned(),
            });
        }
        return Ok(WatchEvent::Error(Box::new(status(pb::Status::decode(
            payload,
        )?))));
    }
    if kind != T::KIND {
        return Err(ProtoError::Kind {
            expected: T::KIND.to_owned(),
            got: kind.to_owned(),
        });
    }
    let object = || Lean::<T>::decode_from(payload.clone(), keep_managed_fields)?.into_proto();
    match event_type.as_str() {
        "ADDED" => Ok(WatchEvent::Added(object()?)),
        "MODIFIED" => Ok(WatchEvent::Modified(object()?)),
        "DELETED" => Ok(WatchEvent::Deleted(object()?)),
        "BOOKMARK" => {
            let meta = MetadataOnly::decode(payload)?.metadata.unwrap_or_default();
            Ok(WatchEvent::Bookmark(Bookmark {
                types: TypeMeta {
                    api_version: envelope.api_version().to_owned(),
                    kind: kind.to_owned(),
                },
                metadata: BookmarkMeta {
                    resource_version: meta.resource_version.unwrap_or_default(),
                    annotations: meta.annotations,
                },
            }))
        }
        other => Err(ProtoError::EventType(other.to_owned())),
    }
}

/// k8s-pb's `ObjectMeta` as k8s-openapi's, moving every string, and as JSON has it: the
/// server writes its non-pointer fields into protobuf even when empty (`generateName: ""`,
/// `generation: 0`, the zero time), where JSON leaves them out; those become `None`, so an
/// object reads the same in either encoding.
fn object_meta(meta: pb::ObjectMeta) -> Result<openapi::ObjectMeta, ProtoError> {
    Ok(openapi::ObjectMeta {
        name: non_empty(meta.name),
        generate_name: non_empty(meta.generate_name),
        namespace: non_empty(meta.namespace),
        self_link: non_empty(meta.self_link),
        uid: non_empty(meta.uid),
        resource_version: non_empty(meta.resource_version),
        generation: meta.generation.filter(|g| *g != 0),
        creation_timestamp: time(meta.creation_timestamp)?,
        deletion_timestamp: time(meta.deletion_timestamp)?,
        deletion_grace_period_seconds: meta.deletion_grace_period_seconds,
        labels: (!meta.labels.is_empty()).then_some(meta.labels),
        annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
        owner_references: (!meta.owner_references.is_empty()).then(|| {
            meta.owner_references
                .into_iter()
                .map(|owner| openapi::OwnerReference {
                    api_version: owner.api_version.unwrap_or_default(),
                    kind: owner.kind.unwrap_or_default(),
                    name: owner.name.unwrap_or_default(),
                    uid: owner.uid.unwrap_or_default(),
                    controller: owner.controller,
                    block_owner_deletion: owner.block_owner_deletion,
                })
                .collect()
        }),
        finalizers: (!meta.finalizers.is_empty()).then_some(meta.finalizers),
        managed_fields: if meta.managed_fields.is_empty() {
            None
        } else {
            Some(
                meta.managed_fields
                    .into_iter()
                    .map(managed_fields_entry)
                    .collect::<Result<_, _>>()?,
            )
        },
    })
}

fn managed_fields_entry(
    entry: pb::ManagedFieldsEntry,
) -> Result<openapi::ManagedFieldsEntry, ProtoError> {
    Ok(openapi::ManagedFieldsEntry {
        api_version: non_empty(entry.api_version),
        fields_type: non_empty(entry.fields_type),
        // The server keeps fieldsV1 as JSON in protobuf too; bytes that are no JSON are left
        // out rather than guessed at.
        fields_v1: entry
            .fields_v1
            .and_then(|fields| fields.raw)
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .map(openapi::FieldsV1),
        manager: non_empty(entry.manager),
        operation: non_empty(entry.operation),
        subresource: non_empty(entry.subresource),
        time: time(entry.time)?,
    })
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Go's zero time, which the server writes where JSON has no time at all.
const GO_ZERO_TIME: i64 = -62_135_596_800;

fn time(time: Option<pb::Time>) -> Result<Option<openapi::Time>, ProtoError> {
    let Some(time) = time else {
        return Ok(None);
    };
    let seconds = time.seconds.unwrap_or_default();
    let nanos = time.nanos.unwrap_or_default();
    if seconds == GO_ZERO_TIME && nanos == 0 {
        return Ok(None);
    }
    k8s_openapi::jiff::Timestamp::new(seconds, nanos)
        .map(|t| Some(openapi::Time(t)))
        .map_err(|_| ProtoError::Time(seconds))
}

/// k8s-pb's `Status` as kube-client's, which the watcher's errors carry.
#[allow(
    clippy::needless_update,
    reason = "k8s-openapi's ListMeta has more fields with newer Kubernetes versions"
)]
fn status(status: pb::Status) -> Status {
    let meta = status.metadata.unwrap_or_default();
    Status {
        status: match status.status.as_deref() {
            Some("Success") => Some(StatusSummary::Success),
            Some("Failure") => Some(StatusSummary::Failure),
            _ => None,
        },
        code: status
            .code
            .and_then(|code| u16::try_from(code).ok())
            .unwrap_or_default(),
        message: status.message.unwrap_or_default(),
        metadata: Some(openapi::ListMeta {
            continue_: non_empty(meta.r#continue),
            remaining_item_count: meta.remaining_item_count,
            resource_version: non_empty(meta.resource_version),
            self_link: non_empty(meta.self_link),
            // Newer Kubernetes versions of k8s-openapi add `shard_info`.
            ..openapi::ListMeta::default()
        }),
        reason: status.reason.unwrap_or_default(),
        details: status
            .details
            .map(|details| kube_client::core::response::StatusDetails {
                name: details.name.unwrap_or_default(),
                group: details.group.unwrap_or_default(),
                kind: details.kind.unwrap_or_default(),
                uid: details.uid.unwrap_or_default(),
                causes: details
                    .causes
                    .into_iter()
                    .map(|cause| kube_client::core::response::StatusCause {
                        reason: cause.reason.unwrap_or_default(),
                        message: cause.message.unwrap_or_default(),
                        field: cause.field.unwrap_or_default(),
                    })
                    .collect(),
                retry_after_seconds: details
                    .retry_after_seconds
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or_default(),
            }),
    }
}

/// `runtime.Unknown`, with `raw` as a slice of the received bytes (no copy).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Envelope {
    #[prost(message, optional, tag = "1")]
    pub(crate) type_meta: Option<EnvelopeType>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub(crate) raw: Option<Bytes>,
    #[prost(string, optional, tag = "3")]
    pub(crate) content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub(crate) content_type: Option<String>,
}

impl Envelope {
    fn kind(&self) -> &str {
        self.type_meta
            .as_ref()
            .and_then(|t| t.kind.as_deref())
            .unwrap_or_default()
    }

    fn api_version(&self) -> &str {
        self.type_meta
            .as_ref()
            .and_then(|t| t.api_version.as_deref())
            .unwrap_or_default()
    }
}

/// `runtime.TypeMeta`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct EnvelopeType {
    #[prost(string, optional, tag = "1")]
    pub(crate) api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(crate) kind: Option<String>,
}

/// `metav1.WatchEvent`, with the object's bytes as a slice of the frame.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct WatchEventFrame {
    #[prost(string, optional, tag = "1")]
    pub(crate) r#type: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub(crate) object: Option<RawObject>,
}

/// `runtime.RawExtension`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RawObject {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub(crate) raw: Option<Bytes>,
}

/// Any object's metadata alone: every built-in type has it as field 1 (for bookmarks).
#[derive(Clone, PartialEq, Message)]
struct MetadataOnly {
    #[prost(message, optional, tag = "1")]
    metadata: Option<pb::ObjectMeta>,
}

/// A built-in object decoded with its metadata apart, and without `metadata.managedFields`
/// unless kept: those entries are skipped on the wire, never allocated (the `fieldsV1` JSON
/// inside them costs more to decode than the rest of a small object).
#[derive(Debug)]
pub(crate) struct Lean<T> {
    meta: LeanMeta,
    object: T,
}

impl<T: ProtoObject> Lean<T> {
    /// Nothing decoded yet; `managedFields` will be decoded only if `keep_managed_fields`.
    fn new(keep_managed_fields: bool) -> Self {
        Self {
            meta: LeanMeta {
                meta: pb::ObjectMeta::default(),
                keep_managed_fields,
            },
            object: T::default(),
        }
    }

    fn decode_from(bytes: Bytes, keep_managed_fields: bool) -> Result<Self, prost::DecodeError> {
        let mut lean = Self::new(keep_managed_fields);
        lean.merge(bytes)?;
        Ok(lean)
    }

    fn into_proto(self) -> Result<Proto<T>, ProtoError> {
        Ok(Proto {
            meta: object_meta(self.meta.meta)?,
            object: self.object,
        })
    }
}

impl<T: ProtoObject> Message for Lean<T> {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        prost::encoding::message::encode(1, &self.meta.meta, buf);
        self.object.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Field 1 of every built-in object is its `ObjectMeta` (as `MetadataOnly` reads it).
        if tag == 1 {
            prost::encoding::message::merge(wire_type, &mut self.meta, buf, ctx)
        } else {
            self.object.merge_field(tag, wire_type, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::message::encoded_len(1, &self.meta.meta) + self.object.encoded_len()
    }

    fn clear(&mut self) {
        self.meta.meta.clear();
        self.object.clear();
    }
}

/// `ObjectMeta`, skipping `managedFields` (field 17) unless kept.
#[derive(Debug)]
struct LeanMeta {
    meta: pb::ObjectMeta,
    keep_managed_fields: bool,
}

/// `ObjectMeta.managedFields`' field number.
const MANAGED_FIELDS: u32 = 17;

impl Message for LeanMeta {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        self.meta.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == MANAGED_FIELDS && !self.keep_managed_fields {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        } else {
            self.meta.merge_field(tag, wire_type, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.meta.encoded_len()
    }

    fn clear(&mut self) {
        self.meta.clear();
    }
}

/// `metav1.ListMeta` with `shardInfo` (field 5, Kubernetes 1.36), which k8s-pb 0.9 lacks.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ListMeta {
    #[prost(string, optional, tag = "2")]
    pub(crate) resource_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub(crate) continue_token: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub(crate) shard_info: Option<ShardInfo>,
}

/// `metav1.ShardInfo`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ShardInfo {
    #[prost(string, optional, tag = "1")]
    pub(crate) selector: Option<String>,
}

/// Any built-in list of `T`: every one has `metadata` as field 1 and `items` as field 2.
#[derive(Debug, Default)]
pub(crate) struct List<T> {
    pub(crate) metadata: Option<ListMeta>,
    pub(crate) items: Vec<Lean<T>>,
    /// Decode each item's `managedFields`.
    pub(crate) keep_managed_fields: bool,
}

impl<T: ProtoObject> Message for List<T> {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        if let Some(metadata) = &self.metadata {
            prost::encoding::message::encode(1, metadata, buf);
        }
        for item in &self.items {
            prost::encoding::message::encode(2, item, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => prost::encoding::message::merge(
                wire_type,
                self.metadata.get_or_insert_with(ListMeta::default),
                buf,
                ctx,
            ),
            2 => {
                let mut item = Lean::new(self.keep_managed_fields);
                prost::encoding::message::merge(wire_type, &mut item, buf, ctx)?;
                self.items.push(item);
                Ok(())
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.metadata
            .as_ref()
            .map_or(0, |m| prost::encoding::message::encoded_len(1, m))
            + prost::encoding::message::encoded_len_repeated(2, &self.items)
    }

    fn clear(&mut self) {
        self.metadata = None;
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use k8s_pb::api::core::v1::{ConfigMap, Secret};

    fn cm(name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: Some(pb::ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                resource_version: Some(rv.to_owned()),
                // As the server writes them: present though empty.
                generate_name: Some(String::new()),
                generation: Some(0),
                creation_timestamp: Some(pb::Time {
                    seconds: Some(1_700_000_000),
                    nanos: Some(0),
                }),
                deletion_timestamp: Some(pb::Time {
                    seconds: Some(GO_ZERO_TIME),
                    nanos: Some(0),
                }),
                ..pb::ObjectMeta::default()
            }),
            data: [("k".to_owned(), "v".to_owned())].into(),
            ..ConfigMap::default()
        }
    }

    /// A list item as the server sends it: the object's metadata is its field 1.
    fn lean(mut cm: ConfigMap) -> Lean<ConfigMap> {
        Lean {
            meta: LeanMeta {
                meta: cm.metadata.take().unwrap_or_default(),
                keep_managed_fields: true,
            },
            object: cm,
        }
    }

    fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        Envelope {
            type_meta: Some(EnvelopeType {
                api_version: Some("v1".to_owned()),
                kind: Some(kind.to_owned()),
            }),
            raw: Some(raw.into()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        }
        .encode(&mut out)
        .unwrap();
        out
    }

    fn status_object(code: i32, reason: &str) -> Vec<u8> {
        let status = pb::Status {
            status: Some("Failure".to_owned()),
            message: Some("too old resource version".to_owned()),
            reason: Some(reason.to_owned()),
            code: Some(code),
            ..pb::Status::default()
        };
        envelope("Status", status.encode_to_vec())
    }

    /// A length-prefixed watch frame of a raw `WatchEvent` holding `object`.
    fn frame(event_type: &str, object: Vec<u8>) -> Vec<u8> {
        let event = WatchEventFrame {
            r#type: Some(event_type.to_owned()),
            object: Some(RawObject {
                raw: Some(object.into()),
            }),
        }
        .encode_to_vec();
        let mut out = u32::try_from(event.len()).unwrap().to_be_bytes().to_vec();
        out.extend(event);
        out
    }

    fn cm_frame(event_type: &str, name: &str, rv: &str) -> Vec<u8> {
        cm_frame_of(event_type, &cm(name, rv))
    }

    fn cm_frame_of(event_type: &str, cm: &ConfigMap) -> Vec<u8> {
        frame(event_type, envelope("ConfigMap", cm.encode_to_vec()))
    }

    /// The watch events of a body delivered in `chunks`.
    fn events(chunks: Vec<Vec<u8>>) -> Vec<kube_client::Result<WatchEvent<Proto<ConfigMap>>>> {
        let chunks = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        block_on(watch_events::<ConfigMap, _>(chunks, false).collect())
    }

    fn proto_error<T: fmt::Debug>(item: &kube_client::Result<T>) -> &ProtoError {
        match item {
            Err(kube_client::Error::Service(source)) => source
                .downcast_ref()
                .unwrap_or_else(|| panic!("not a ProtoError: {source}")),
            other => panic!("expected a ProtoError, got {other:?}"),
        }
    }

    fn name<T>(event: &kube_client::Result<WatchEvent<Proto<T>>>) -> String
    where
        T: ProtoObject + fmt::Debug,
    {
        use kube_client::ResourceExt;
        match event {
            Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj) | WatchEvent::Deleted(obj)) => {
                obj.name_any()
            }
            other => panic!("expected an object, got {other:?}"),
        }
    }

    #[test]
    fn events_decode_with_metadata_as_json_has_it() {
        let out = events(vec![cm_frame("ADDED", "a", "5")]);
        assert_eq!(out.len(), 1);
        let Ok(WatchEvent::Added(obj)) = &out[0] else {
            panic!("{out:?}")
        };
        let meta = kube_client::Resource::meta(obj);
        assert_eq!(meta.name.as_deref(), Some("a"));
        assert_eq!(meta.resource_version.as_deref(), Some("5"));
        assert_eq!(
            meta.generate_name, None,
            "empty in protobuf, absent in JSON"
        );
        assert_eq!(meta.generation, None);
        assert_eq!(meta.deletion_timestamp, None, "Go's zero time is no time");
        assert_eq!(
            meta.creation_timestamp.as_ref().map(|t| t.0.as_second()),
            Some(1_700_000_000)
        );
        assert_eq!(obj.data["k"], "v");
        assert_eq!(
            obj.get().metadata,
            None,
            "the metadata is held once, converted"
        );
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let body: Vec<u8> = [
            cm_frame("ADDED", "a", "5"),
            cm_frame("MODIFIED", "b", "6"),
            cm_frame("DELETED", "a", "7"),
        ]
        .concat();
        for size in [1, 3, 4, 5, 17, body.len()] {
            let out = events(body.chunks(size).map(<[u8]>::to_vec).collect());
            let names: Vec<_> = out.iter().map(name).collect();
            assert_eq!(names, ["a", "b", "a"], "chunks of {size}");
            assert!(matches!(out[1], Ok(WatchEvent::Modified(_))));
            assert!(matches!(out[2], Ok(WatchEvent::Deleted(_))));
        }
    }

    #[test]
    fn bookmarks_carry_version_and_annotations() {
        let bookmark = ConfigMap {
            metadata: Some(pb::ObjectMeta {
                resource_version: Some("42".to_owned()),
                annotations: [("k8s.io/initial-events-end".to_owned(), "true".to_owned())].into(),
                ..pb::ObjectMeta::default()
            }),
            ..ConfigMap::default()
        };
        let out = events(vec![frame(
            "BOOKMARK",
            envelope("ConfigMap", bookmark.encode_to_vec()),
        )]);
        let Ok(WatchEvent::Bookmark(bookmark)) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(bookmark.metadata.resource_version, "42");
        assert!(
            bookmark
                .metadata
                .annotations
                .contains_key("k8s.io/initial-events-end")
        );
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_an_error_after_the_whole_frames() {
        let whole = cm_frame("ADDED", "a", "5");
        let cut = cm_frame("ADDED", "b", "6");
        for keep in [1, 3, 4, 10, cut.len() - 1] {
            let out = events(vec![whole.clone(), cut[..keep].to_vec()]);
            assert_eq!(out.len(), 2, "cut after {keep} bytes: {out:?}");
            assert_eq!(name(&out[0]), "a");
            assert!(
                matches!(proto_error(&out[1]), ProtoError::Truncated(n) if *n == keep),
                "{out:?}"
            );
        }
    }

    #[test]
    fn an_oversized_length_prefix_is_an_error_without_waiting_for_the_bytes() {
        let mut body = u32::MAX.to_be_bytes().to_vec();
        body.extend([0; 16]);
        let out = events(vec![cm_frame("ADDED", "a", "5"), body]);
        assert_eq!(out.len(), 2, "the stream ends after the error");
        assert_eq!(name(&out[0]), "a");
        assert!(matches!(
            proto_error(&out[1]),
            ProtoError::FrameTooLarge(n) if *n == u32::MAX as usize
        ));
        let mut frames = Frames::default();
        frames.push(&u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes());
        assert!(matches!(
            frames.next_frame(),
            Err(ProtoError::FrameTooLarge(_))
        ));
    }

    #[test]
    fn an_object_without_the_envelope_magic_is_an_error() {
        let mut object = envelope("ConfigMap", cm("a", "5").encode_to_vec());
        object[..4].copy_from_slice(b"k9s\0");
        let out = events(vec![frame("ADDED", object.clone())]);
        assert!(matches!(proto_error(&out[0]), ProtoError::Magic));
        // A JSON object where protobuf belongs.
        let out = events(vec![frame("ADDED", br#"{"kind":"ConfigMap"}"#.to_vec())]);
        assert!(matches!(proto_error(&out[0]), ProtoError::Magic));
        // And a list.
        assert!(matches!(
            decode_list::<ConfigMap>(object.into(), false),
            Err(ProtoError::Magic)
        ));
    }

    #[test]
    fn another_kind_where_an_object_belongs_is_an_error_not_a_wrong_object() {
        let secret = envelope("Secret", Secret::default().encode_to_vec());
        let out = events(vec![frame("ADDED", secret)]);
        assert!(matches!(
            proto_error(&out[0]),
            ProtoError::Kind { expected, got } if expected == "ConfigMap" && got == "Secret"
        ));
        let list = envelope("SecretList", Vec::new());
        assert!(matches!(
            decode_list::<ConfigMap>(list.into(), false),
            Err(ProtoError::Kind { .. })
        ));
        let compressed = {
            let mut out = MAGIC.to_vec();
            Envelope {
                type_meta: Some(EnvelopeType {
                    api_version: Some("v1".to_owned()),
                    kind: Some("ConfigMap".to_owned()),
                }),
                raw: Some(Bytes::new()),
                content_encoding: Some("gzip".to_owned()),
                content_type: None,
            }
            .encode(&mut out)
            .unwrap();
            out
        };
        let out = events(vec![frame("ADDED", compressed)]);
        assert!(matches!(proto_error(&out[0]), ProtoError::Encoding(e) if e == "gzip"));
    }

    #[test]
    fn a_status_in_place_of_an_object_is_the_servers_error() {
        for event_type in ["ERROR", "ADDED"] {
            let out = events(vec![frame(event_type, status_object(410, "Expired"))]);
            let Ok(WatchEvent::Error(status)) = &out[0] else {
                panic!("{out:?}")
            };
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert_eq!(status.message, "too old resource version");
        }
        // An ERROR event must hold a Status.
        let out = events(vec![cm_frame("ERROR", "a", "5")]);
        assert!(matches!(proto_error(&out[0]), ProtoError::Kind { .. }));
    }

    #[test]
    fn unknown_event_types_and_missing_objects_are_errors() {
        let out = events(vec![cm_frame("RENAMED", "a", "5")]);
        assert!(matches!(proto_error(&out[0]), ProtoError::EventType(t) if t == "RENAMED"));
        let event = WatchEventFrame {
            r#type: Some("ADDED".to_owned()),
            object: None,
        }
        .encode_to_vec();
        let mut body = u32::try_from(event.len()).unwrap().to_be_bytes().to_vec();
        body.extend(event);
        let out = events(vec![body]);
        assert!(matches!(proto_error(&out[0]), ProtoError::NoObject));
    }

    #[test]
    fn garbage_never_panics() {
        // Every cut of a valid frame, and pseudo-random bytes, decode to an error or to an
        // event; never a panic.
        let valid = cm_frame("ADDED", "a", "5");
        for end in 0..valid.len() {
            for keep in [false, true] {
                let event = Bytes::copy_from_slice(&valid[4..end.max(4)]);
                let _ = decode_event::<ConfigMap>(event, keep);
                let _ = decode_list::<ConfigMap>(Bytes::copy_from_slice(&valid[..end]), keep);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2_000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()[0]
                })
                .collect();
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend(&bytes);
            for keep in [false, true] {
                let _ = decode_event::<ConfigMap>(Bytes::from(bytes.clone()), keep);
                let _ = decode_list::<ConfigMap>(Bytes::from(with_magic.clone()), keep);
            }
            let _ = events(vec![bytes]);
        }
    }

    /// `cm(name, rv)` with two managedFields entries, written between other metadata fields.
    fn cm_managed(name: &str, rv: &str) -> ConfigMap {
        let mut cm = cm(name, rv);
        let meta = cm.metadata.as_mut().unwrap();
        meta.managed_fields = ["kubectl", "operator"]
            .map(|manager| pb::ManagedFieldsEntry {
                manager: Some(manager.to_owned()),
                operation: Some("Apply".to_owned()),
                api_version: Some("v1".to_owned()),
                fields_type: Some("FieldsV1".to_owned()),
                fields_v1: Some(pb::FieldsV1 {
                    raw: Some(br#"{"f:data":{"f:k":{}}}"#.to_vec()),
                }),
                ..pb::ManagedFieldsEntry::default()
            })
            .into();
        meta.labels = [("app".to_owned(), "web".to_owned())].into();
        meta.finalizers = vec!["keep".to_owned()];
        cm
    }

    #[test]
    fn managed_fields_are_skipped_unless_kept_and_the_rest_is_whole() {
        let list = List {
            metadata: Some(ListMeta::default()),
            items: vec![lean(cm_managed("a", "1")), lean(cm_managed("b", "2"))],
            keep_managed_fields: false,
        };
        let body = Bytes::from(envelope("ConfigMapList", list.encode_to_vec()));
        let frame = Bytes::from(cm_frame_of("MODIFIED", &cm_managed("c", "3"))[4..].to_vec());
        for keep in [false, true] {
            let page = decode_list::<ConfigMap>(body.clone(), keep).unwrap();
            let Ok(WatchEvent::Modified(live)) = decode_event::<ConfigMap>(frame.clone(), keep)
            else {
                panic!("expected a MODIFIED event");
            };
            for obj in page.items.iter().chain([&live]) {
                let meta = kube_client::Resource::meta(obj);
                let managers: Vec<_> = meta
                    .managed_fields
                    .iter()
                    .flatten()
                    .map(|entry| entry.manager.clone().unwrap_or_default())
                    .collect();
                let expected: &[&str] = if keep { &["kubectl", "operator"] } else { &[] };
                assert_eq!(managers, expected, "keep={keep}");
                // Everything around the skipped entries is decoded.
                assert_eq!(meta.labels.as_ref().unwrap()["app"], "web");
                assert_eq!(meta.finalizers.as_deref(), Some(&["keep".to_owned()][..]));
                assert_eq!(meta.namespace.as_deref(), Some("ns"));
                assert_eq!(obj.data["k"], "v");
            }
            if keep {
                // Kept, they read as the JSON watcher's: fieldsV1 as a JSON value.
                let entry = &kube_client::Resource::meta(&page.items[0])
                    .managed_fields
                    .as_ref()
                    .unwrap()[0];
                assert_eq!(
                    entry.fields_v1.as_ref().unwrap().0,
                    serde_json::json!({"f:data": {"f:k": {}}})
                );
            }
        }
    }

    #[test]
    fn lists_decode_items_and_list_metadata() {
        let list = List {
            metadata: Some(ListMeta {
                resource_version: Some("9".to_owned()),
                continue_token: Some("next".to_owned()),
                shard_info: Some(ShardInfo {
                    selector: Some("shardRange(...)".to_owned()),
                }),
            }),
            items: vec![lean(cm("a", "1")), lean(cm("b", "2"))],
            keep_managed_fields: false,
        };
        let page = decode_list::<ConfigMap>(
            envelope("ConfigMapList", list.encode_to_vec()).into(),
            false,
        )
        .unwrap();
        let names: Vec<_> = page
            .items
            .iter()
            .map(kube_client::ResourceExt::name_any)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(page.resource_version.as_deref(), Some("9"));
        assert_eq!(page.continue_token.as_deref(), Some("next"));
        assert_eq!(page.shard_echo.as_deref(), Some("shardRange(...)"));
        // k8s-pb's own list type reads the same bytes.
        let theirs =
            k8s_pb::api::core::v1::ConfigMapList::decode(list.encode_to_vec().as_slice()).unwrap();
        assert_eq!(theirs.items.len(), 2);
    }

    #[test]
    fn error_bodies_read_as_status_in_every_encoding() {
        let status = error_status(
            410,
            "application/vnd.kubernetes.protobuf",
            &status_object(410, "Expired"),
        );
        assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        let json = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"m","reason":"Forbidden","code":403}"#;
        let status = error_status(403, "application/json", json);
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        let status = error_status(502, "text/html", b"<html>bad gateway</html>");
        assert_eq!(status.code, 502);
        assert_eq!(status.message, "<html>bad gateway</html>");
        // A protobuf body that is no Status keeps the HTTP code.
        let status = error_status(500, "application/vnd.kubernetes.protobuf", b"k8s\0\xff");
        assert_eq!(status.code, 500);
    }

    #[test]
    fn only_protobuf_content_types_are_taken() {
        assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
        assert!(is_protobuf(
            "application/vnd.kubernetes.protobuf;stream=watch"
        ));
        assert!(!is_protobuf("application/json"));
        assert!(!is_protobuf(""));
        assert!(!is_protobuf("application/vnd.kubernetes.protobuf.extra"));
    }
}

//! A protobuf WATCH body: length-prefixed frames, each a raw `WatchEvent` whose object is an
//! enveloped object, decoded into kube-client's `WatchEvent` as the JSON watch's are.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;
use kube_client::{
    api::WatchEvent,
    core::{TypeMeta, watch::Bookmark, watch::BookmarkMeta},
};
use prost::Message;

use super::envelope::decode_envelope;
use super::message::{Lean, MetadataOnly, WatchEventFrame};
use super::meta::status;
use super::types::{Proto, ProtoObject};
use crate::Result;
use crate::error::{MAX_FRAME, ProtoError};

/// The media type asked for on a WATCH: length-prefixed frames.
pub(super) const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Splits a watch body into frames: a 4-byte big-endian length, then that many bytes.
#[derive(Default)]
pub(super) struct Frames {
    buffer: BytesMut,
}

impl Frames {
    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole frame, if the buffer holds one.
    pub(super) fn next_frame(&mut self) -> Result<Option<Bytes>, ProtoError> {
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
    pub(super) fn finish(&self) -> Result<(), ProtoError> {
        match self.buffer.len() {
            0 => Ok(()),
            partial => Err(ProtoError::Truncated(partial)),
        }
    }
}

/// The watch events in a stream of body chunks. The stream ends after its first error.
pub(super) fn watch_events<T, S>(
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
pub(super) fn decode_event<T: ProtoObject>(
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

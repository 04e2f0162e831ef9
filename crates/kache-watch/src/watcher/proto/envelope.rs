//! The protobuf encoding's envelope: the media type, the `k8s\0` magic and `runtime.Unknown`
//! around every object the server sends, and a LIST body, which is one envelope holding the
//! list.

use bytes::{Buf, Bytes};
use prost::Message;

use super::message::{Envelope, Lean, List};
use super::types::{Proto, ProtoObject};
use crate::watcher::mode::Page;
use crate::{ProtoError, Result};

/// The media type of a protobuf LIST response.
pub(super) const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The magic that opens every enveloped protobuf object.
pub(super) const MAGIC: &[u8; 4] = b"k8s\0";

pub(super) fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(PROTOBUF))
}

/// The payload of an enveloped object of kind `kind`.
pub(super) fn unwrap_envelope(mut bytes: Bytes, kind: &str) -> Result<Bytes, ProtoError> {
    let envelope = decode_envelope(&mut bytes)?;
    if envelope.kind() != kind {
        return Err(ProtoError::Kind {
            expected: kind.to_owned(),
            got: envelope.kind().to_owned(),
        });
    }
    Ok(envelope.raw.unwrap_or_default())
}

pub(super) fn decode_envelope(bytes: &mut Bytes) -> Result<Envelope, ProtoError> {
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
pub(super) fn decode_list<T: ProtoObject>(
    body: Bytes,
    keep_managed_fields: bool,
) -> Result<Page<Proto<T>>, ProtoError> {
    let bytes = body.len();
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
        bytes,
    })
}

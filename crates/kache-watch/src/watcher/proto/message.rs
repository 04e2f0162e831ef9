//! The prost messages kache reads its own way: the envelope and watch frame (k8s-pb has
//! neither), list metadata with `shardInfo` (which k8s-pb 0.9 lacks), and the hand-written
//! [`Message`] impls that decode an object with its metadata apart and without
//! `managedFields` ([`Lean`]), alone or as the items of a list ([`List`]).

use bytes::{Buf, Bytes};
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;
use prost::Message;

use super::meta::object_meta;
use super::types::{Proto, ProtoObject};
use crate::{ProtoError, Result};

/// `runtime.Unknown`, with `raw` as a slice of the received bytes (no copy).
#[derive(Clone, PartialEq, Message)]
pub(super) struct Envelope {
    #[prost(message, optional, tag = "1")]
    pub(super) type_meta: Option<EnvelopeType>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub(super) raw: Option<Bytes>,
    #[prost(string, optional, tag = "3")]
    pub(super) content_encoding: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub(super) content_type: Option<String>,
}

impl Envelope {
    pub(super) fn kind(&self) -> &str {
        self.type_meta
            .as_ref()
            .and_then(|t| t.kind.as_deref())
            .unwrap_or_default()
    }

    pub(super) fn api_version(&self) -> &str {
        self.type_meta
            .as_ref()
            .and_then(|t| t.api_version.as_deref())
            .unwrap_or_default()
    }
}

/// `runtime.TypeMeta`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct EnvelopeType {
    #[prost(string, optional, tag = "1")]
    pub(super) api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub(super) kind: Option<String>,
}

/// `metav1.WatchEvent`, with the object's bytes as a slice of the frame.
#[derive(Clone, PartialEq, Message)]
pub(super) struct WatchEventFrame {
    #[prost(string, optional, tag = "1")]
    pub(super) r#type: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub(super) object: Option<RawObject>,
}

/// `runtime.RawExtension`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct RawObject {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub(super) raw: Option<Bytes>,
}

/// Any object's metadata alone: every built-in type has it as field 1 (for bookmarks).
#[derive(Clone, PartialEq, Message)]
pub(super) struct MetadataOnly {
    #[prost(message, optional, tag = "1")]
    pub(super) metadata: Option<pb::ObjectMeta>,
}

/// A built-in object decoded with its metadata apart, and without `metadata.managedFields`
/// unless kept: those entries are skipped on the wire, never allocated (the `fieldsV1` JSON
/// inside them costs more to decode than the rest of a small object).
#[derive(Debug)]
pub(super) struct Lean<T> {
    pub(super) meta: LeanMeta,
    pub(super) object: T,
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

    pub(super) fn decode_from(
        bytes: Bytes,
        keep_managed_fields: bool,
    ) -> Result<Self, prost::DecodeError> {
        let mut lean = Self::new(keep_managed_fields);
        lean.merge(bytes)?;
        Ok(lean)
    }

    pub(super) fn into_proto(self) -> Result<Proto<T>, ProtoError> {
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
pub(super) struct LeanMeta {
    pub(super) meta: pb::ObjectMeta,
    pub(super) keep_managed_fields: bool,
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
pub(super) struct ListMeta {
    #[prost(string, optional, tag = "2")]
    pub(super) resource_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub(super) continue_token: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub(super) shard_info: Option<ShardInfo>,
}

/// `metav1.ShardInfo`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ShardInfo {
    #[prost(string, optional, tag = "1")]
    pub(super) selector: Option<String>,
}

/// Any built-in list of `T`: every one has `metadata` as field 1 and `items` as field 2.
#[derive(Debug, Default)]
pub(super) struct List<T> {
    pub(super) metadata: Option<ListMeta>,
    pub(super) items: Vec<Lean<T>>,
    /// Decode each item's `managedFields`.
    pub(super) keep_managed_fields: bool,
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

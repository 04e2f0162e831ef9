//! Tests of protobuf decoding, end to end from bytes as the server writes them: watch bodies
//! cut anywhere, envelopes, lists, `managedFields`, error answers and garbage.

use std::fmt;

use bytes::Bytes;
use futures::{StreamExt, executor::block_on};
use k8s_pb::api::core::v1::{ConfigMap, Secret};
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;
use kube_client::api::WatchEvent;
use prost::Message;

use super::envelope::{MAGIC, decode_list, is_protobuf};
use super::frame::{Frames, decode_event, watch_events};
use super::message::{
    Envelope, EnvelopeType, Lean, LeanMeta, List, ListMeta, RawObject, ShardInfo, WatchEventFrame,
};
use super::meta::GO_ZERO_TIME;
use super::request::error_status;
use super::types::{Proto, ProtoObject};
use crate::error::{MAX_FRAME, ProtoError};

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
        let Ok(WatchEvent::Modified(live)) = decode_event::<ConfigMap>(frame.clone(), keep) else {
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

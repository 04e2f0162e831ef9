//! k8s-pb's metadata as k8s-openapi's and kube-client's: an object's `ObjectMeta` (read as
//! JSON has it) and an error's `Status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as openapi;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;
use kube_client::core::{Status, response::StatusSummary};

use crate::{ProtoError, Result};

/// k8s-pb's `ObjectMeta` as k8s-openapi's, moving every string, and as JSON has it: the
/// server writes its non-pointer fields into protobuf even when empty (`generateName: ""`,
/// `generation: 0`, the zero time), where JSON leaves them out; those become `None`, so an
/// object reads the same in either encoding.
pub(super) fn object_meta(meta: pb::ObjectMeta) -> Result<openapi::ObjectMeta, ProtoError> {
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
pub(super) const GO_ZERO_TIME: i64 = -62_135_596_800;

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
pub(super) fn status(status: pb::Status) -> Status {
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

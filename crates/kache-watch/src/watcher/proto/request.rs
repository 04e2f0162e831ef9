//! The HTTP side of protobuf on the wire: a request that asks for protobuf, and an answer
//! taken only if it is protobuf, or read as the server's `Status` (in either encoding) if it
//! is an error.

use bytes::Bytes;
use http_body_util::BodyExt;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;
use kube_client::{Client, core::Status};
use prost::Message;

use super::envelope::{is_protobuf, unwrap_envelope};
use super::meta::status;
use crate::ProtoError;
use crate::watcher::mode::prepare;

/// Adds the shard selector and the `Accept` header to a request kube-client built.
pub(super) fn finish_request(
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
pub(super) async fn send(
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
        let retry_after = crate::retry::header_seconds(response.headers());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| kube_client::Error::Service(Box::new(err)))?
            .to_bytes();
        let status = crate::retry::with_header(
            error_status(code.as_u16(), &content_type, &body),
            retry_after,
        );
        return Err(kube_client::Error::Api(Box::new(status)));
    }
    if !is_protobuf(&content_type) {
        return Err(ProtoError::ContentType(content_type).into());
    }
    Ok(response)
}

/// The `Status` of an error answer in whatever encoding it came; with the HTTP code where the
/// body says none, and the body as the message where it is no `Status` at all.
pub(super) fn error_status(code: u16, content_type: &str, body: &[u8]) -> Status {
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

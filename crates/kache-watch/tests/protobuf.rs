//! The protobuf watcher against a server that answers in JSON (as one does for a type it has
//! no protobuf encoding for): a typed error, never a guess; and a JSON error answer still
//! reads as the server's `Status`.

#![cfg(feature = "protobuf")]

use std::time::Duration;

use futures::StreamExt;
use k8s_pb::api::core::v1::ConfigMap;
use kache_testenv::scripted::{End, Reply, Scripted, bookmark, cm, event, list, status};
use kache_watch::{
    Config, Error, ErrorClass, InitialListStrategy, Proto, ProtoError, protobuf_watcher,
};
use kube_client::Api;

async fn first_error(server: &Scripted, config: Config) -> Error {
    let api: Api<Proto<ConfigMap>> = Api::namespaced(server.client(), "ns");
    let mut events = Box::pin(protobuf_watcher(api, config.disable_retry_backoff()));
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an item in time")
        .expect("the watcher never ends")
        .expect_err("a JSON answer is no protobuf")
}

#[tokio::test]
async fn a_json_list_answer_is_a_content_type_error() {
    let server = Scripted::start([list(vec![cm("a", "1")], Some("10"), None)]).await;
    let config = Config::default().initial_list_strategy(InitialListStrategy::ListWatch);
    let err = first_error(&server, config).await;
    assert_eq!(err.kind(), "InitialListFailed", "{err}");
    assert!(
        matches!(err.protobuf(), Some(ProtoError::ContentType(t)) if t == "application/json"),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Decode);
    let request = &server.requests()[0];
    assert!(!request.is_watch());
}

#[tokio::test]
async fn a_json_watch_answer_is_a_content_type_error() {
    let server = Scripted::start([Reply::Stream(
        vec![event("ADDED", cm("a", "1")), bookmark("2", true)],
        End::Close,
    )])
    .await;
    let err = first_error(&server, Config::default().streaming_lists()).await;
    assert_eq!(err.kind(), "WatchStartFailed", "{err}");
    assert!(
        matches!(err.protobuf(), Some(ProtoError::ContentType(_))),
        "{err}"
    );
}

#[tokio::test]
async fn a_json_error_answer_is_the_servers_status() {
    let server = Scripted::start([Reply::Json(403, status(403, "Forbidden", "no"))]).await;
    let config = Config::default().initial_list_strategy(InitialListStrategy::ListWatch);
    let err = first_error(&server, config).await;
    assert!(err.is_forbidden(), "{err}");
    assert!(err.protobuf().is_none());
}

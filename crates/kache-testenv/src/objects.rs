//! Seeding and clearing objects: many requests at once, a bounded number in flight.

use std::{collections::BTreeMap, fmt::Debug, future::Future};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_client::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};

/// How many requests [`run_all`], [`create_all`] and [`delete_all`] keep in flight.
///
/// 32 keeps a local control plane busy (seeding thousands of objects takes seconds, not
/// minutes) while staying under kube-client's and the API server's default limits: no request
/// waits for a connection or gets `429 Too Many Requests` from a server's max-in-flight filter
/// (400 by default).
pub const IN_FLIGHT: usize = 32;

/// Runs `requests` to completion, [`IN_FLIGHT`] at a time, and returns their outputs in the
/// order of `requests`.
///
/// Each future is taken from the iterator only when a slot frees up, so a lazy iterator
/// (`names.map(|name| async move { ... })`) builds no more than [`IN_FLIGHT`] requests ahead.
///
/// # Errors
///
/// The first error any request returns. The requests still in flight are dropped then; those
/// the server had already received may have taken effect.
///
/// # Examples
///
/// Patches, or any request [`create_all`] and [`delete_all`] do not cover:
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube_client::{Api, api::{Patch, PatchParams}};
///
/// # async fn run(api: Api<ConfigMap>) -> kube_client::Result<()> {
/// let patch = Patch::Merge(serde_json::json!({"data": {"round": "2"}}));
/// let params = PatchParams::default();
/// let patched = kache_testenv::run_all((0..100).map(|i| {
///     let (api, patch, params) = (&api, &patch, &params);
///     async move { api.patch(&format!("cm-{i}"), params, patch).await }
/// }))
/// .await?;
/// assert_eq!(patched.len(), 100);
/// # Ok(()) }
/// ```
pub async fn run_all<T, E, F>(requests: impl IntoIterator<Item = F>) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>>,
{
    // Unordered, so that one slow request does not hold back the next ones; the indices put
    // the outputs back in order.
    let mut done: Vec<(usize, T)> = stream::iter(requests.into_iter().enumerate())
        .map(|(i, request)| async move { request.await.map(|output| (i, output)) })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    done.sort_unstable_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, output)| output).collect())
}

/// Creates `objects` through `api`, [`IN_FLIGHT`] at a time, and returns them as the server
/// stored them (with their resourceVersions), in the order of `objects`.
///
/// Each object goes to the namespace of `api`, or to its own `metadata.namespace` for an `Api`
/// of all namespaces; the objects are sent as they are, so leave out what the server sets
/// (`resourceVersion`, `uid`, `creationTimestamp`).
///
/// # Errors
///
/// The first error the server returns (such as `409 Conflict` for a name already taken); see
/// [`run_all`] for the requests in flight then.
///
/// # Examples
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_testenv::{TestEnv, configmap, create_all};
/// use kube_client::Api;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let env = TestEnv::shared().await?;
/// let ns = env.create_namespace("seed").await?;
/// let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
/// let created = create_all(
///     &api,
///     (0..1000).map(|i| configmap(&format!("cm-{i}"), &[("app", "web")], 512)),
/// )
/// .await?;
/// assert_eq!(created[0].metadata.name.as_deref(), Some("cm-0"));
/// # Ok(()) }
/// ```
pub async fn create_all<K>(
    api: &Api<K>,
    objects: impl IntoIterator<Item = K>,
) -> kube_client::Result<Vec<K>>
where
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    let params = PostParams::default();
    let params = &params;
    run_all(
        objects
            .into_iter()
            .map(|object| async move { api.create(params, &object).await }),
    )
    .await
}

/// Deletes the objects named `names` through `api`, [`IN_FLIGHT`] at a time.
///
/// Each delete is accepted once the server answers; an object with finalizers (a namespace,
/// say) may still exist then.
///
/// # Errors
///
/// The first error the server returns (such as `404 Not Found` for a name that does not
/// exist); see [`run_all`] for the requests in flight then.
///
/// # Examples
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube_client::Api;
///
/// # async fn run(api: Api<ConfigMap>) -> kube_client::Result<()> {
/// kache_testenv::delete_all(&api, (0..50).map(|i| format!("cm-{i}"))).await?;
/// kache_testenv::delete_all(&api, ["web", "db"]).await?;
/// # Ok(()) }
/// ```
pub async fn delete_all<K, N>(
    api: &Api<K>,
    names: impl IntoIterator<Item = N>,
) -> kube_client::Result<()>
where
    K: Clone + Debug + DeserializeOwned,
    N: AsRef<str>,
{
    let params = DeleteParams::default();
    let params = &params;
    run_all(
        names
            .into_iter()
            .map(|name| async move { api.delete(name.as_ref(), params).await.map(drop) }),
    )
    .await?;
    Ok(())
}

/// A `ConfigMap` named `name` with `labels` and one data key, `payload`, holding `payload`
/// bytes (`"xxx…"`): a small object of a chosen size, for seeding with [`create_all`].
///
/// Set anything else on the returned value (its namespace, more data) before creating it.
///
/// ```
/// use kache_testenv::configmap;
///
/// let cm = configmap("web-0", &[("app", "web")], 512);
/// assert_eq!(cm.metadata.name.as_deref(), Some("web-0"));
/// assert_eq!(cm.metadata.labels.unwrap()["app"], "web");
/// assert_eq!(cm.data.unwrap()["payload"].len(), 512);
/// ```
#[must_use]
pub fn configmap(name: &str, labels: &[(&str, &str)], payload: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|&(key, value)| (key.to_owned(), value.to_owned()))
                    .collect()
            }),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "payload".to_owned(),
            "x".repeat(payload),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{IN_FLIGHT, configmap, run_all};

    #[tokio::test]
    async fn run_all_returns_outputs_in_the_order_of_the_requests() {
        // The first requests finish last.
        let outputs = run_all((0..100_u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(100 - i)).await;
            Ok::<_, ()>(i)
        }))
        .await
        .unwrap();
        assert_eq!(outputs, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn run_all_never_has_more_than_in_flight_requests_running() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        run_all((0..200).map(|_| async {
            most.fetch_max(running.fetch_add(1, Relaxed) + 1, Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
            running.fetch_sub(1, Relaxed);
            Ok::<_, ()>(())
        }))
        .await
        .unwrap();
        assert_eq!(most.into_inner(), IN_FLIGHT);
    }

    #[tokio::test]
    async fn run_all_stops_at_the_first_error() {
        let result = run_all((0..10).map(|i| async move {
            if i == 3 {
                Err(format!("request {i}"))
            } else {
                Ok(i)
            }
        }))
        .await;
        assert_eq!(result, Err("request 3".to_owned()));
    }

    #[test]
    fn configmap_without_labels_has_none() {
        let cm = configmap("plain", &[], 0);
        assert_eq!(cm.metadata.labels, None);
        assert_eq!(cm.data.unwrap()["payload"], "");
    }
}

//! Recording the requests a client sends, and telling its lists from its watches.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use kube_client::{
    Client, Config,
    client::{Body, ClientBuilder},
};

use crate::{Error, Result};

/// What a request asked the API server for, read from its method, path and query: what a test
/// counts to say how a watcher synced ("one streaming list and no LIST").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A `GET` of a collection (`/api/v1/namespaces/ns/configmaps`, `/apis/apps/v1/deployments`)
    /// without `watch`: a LIST, or one page of a paginated one.
    List,
    /// A `GET` with `watch=true` (or `watch=1`) and without `sendInitialEvents=true`: the
    /// changes after a resourceVersion. The watch paths deprecated in Kubernetes 1.11
    /// (`/api/v1/watch/...`) count too.
    Watch,
    /// A WATCH with `sendInitialEvents=true`: a streaming list, the initial objects as events
    /// and then the changes, on one connection.
    StreamingList,
    /// Anything else: a `GET` of one object or a subresource, discovery, a write.
    Other,
}

impl RequestKind {
    /// Whether the request lists a collection: [`List`](Self::List) or
    /// [`StreamingList`](Self::StreamingList).
    #[must_use]
    pub fn is_list(self) -> bool {
        matches!(self, Self::List | Self::StreamingList)
    }

    fn of(method: &str, path: &str, query: &str) -> Self {
        if method != "GET" {
            return Self::Other;
        }
        let param = |name: &str| {
            query_params(query)
                .find(|(key, _)| key == name)
                .map(|(_, value)| value)
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let resource = match segments.as_slice() {
            ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
            _ => &[],
        };
        let watch = matches!(param("watch").as_deref(), Some("true" | "1"))
            || resource.first() == Some(&"watch");
        if watch {
            return if param("sendInitialEvents").as_deref() == Some("true") {
                Self::StreamingList
            } else {
                Self::Watch
            };
        }
        match resource {
            // A namespace's subresources, not a collection in it.
            ["namespaces", _, "status" | "finalize"] => Self::Other,
            // Namespaces, or a resource of one namespace or of all.
            [_] | ["namespaces", _, _] => Self::List,
            _ => Self::Other,
        }
    }
}

/// One request a client made by [`RequestLog::client`] sent, as it left the client (before
/// the cluster URL's own path, if any, is put in front).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    method: String,
    path: String,
    query: String,
    sent: std::time::Instant,
}

impl RecordedRequest {
    /// The method: `GET`, `POST`, `PATCH`...
    #[must_use]
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, such as `/api/v1/namespaces/ns/configmaps`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query as sent, percent-encoded, without the `?`; empty if there is none.
    #[must_use]
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The first value of the query parameter `name`, percent-decoded: `param("resourceVersion")`,
    /// `param("labelSelector")`.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<String> {
        query_params(&self.query)
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// When the client sent it (on the test's monotonic clock): the spacing of retries.
    #[must_use]
    pub fn sent(&self) -> std::time::Instant {
        self.sent
    }

    /// What the request asked for.
    #[must_use]
    pub fn kind(&self) -> RequestKind {
        RequestKind::of(&self.method, &self.path, &self.query)
    }
}

/// `GET /api/v1/namespaces/ns/configmaps?watch=true&resourceVersion=42`: the request line as
/// sent.
impl fmt::Display for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}

/// A log of the requests that clients sent, in the order they sent them: what a watcher asked
/// the server for, counted exactly (a proxy in front of a TLS server cannot see it).
///
/// Clients made by [`client`](Self::client) record each request here before sending it.
/// Clones share the log, so one can go to the code under test while the test reads another.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_testenv::scripted::{Scripted, cm, list};
/// use kache_testenv::{RequestKind, RequestLog};
/// use kube_client::{Api, api::ListParams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Against a real server: `log.client(env.config())?`, or `proxy.config(env.config())`.
/// let server = Scripted::start([list(vec![cm("a", "1")], Some("5"), None)]).await;
/// let log = RequestLog::new();
/// let api: Api<ConfigMap> = Api::namespaced(log.client(&server.config())?, "ns");
/// api.list(&ListParams::default()).await?;
///
/// assert_eq!(log.kinds(), [RequestKind::List]);
/// assert_eq!(log.count(RequestKind::Watch), 0);
/// assert_eq!(log.requests()[0].path(), "/api/v1/namespaces/ns/configmaps");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    // `Arc<Mutex>`: the clients' request paths append (holding the lock only to push), the
    // test reads; clones share one log.
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl RequestLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A client built from `config` (such as [`TestEnv::config`](crate::TestEnv::config), or
    /// [`Proxy::config`](crate::Proxy::config) to go through a proxy) that records each request
    /// in this log before sending it.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] if kube-client cannot build a client from `config`.
    pub fn client(&self, config: &Config) -> Result<Client> {
        let requests = Arc::clone(&self.requests);
        let record = tower::util::MapRequestLayer::new(move |request: http::Request<Body>| {
            let recorded = RecordedRequest {
                method: request.method().as_str().to_owned(),
                path: request.uri().path().to_owned(),
                query: request.uri().query().unwrap_or_default().to_owned(),
                sent: std::time::Instant::now(),
            };
            requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(recorded);
            request
        });
        let builder =
            ClientBuilder::try_from(config.clone()).map_err(|source| Error::Client { source })?;
        Ok(builder.with_layer(&record).build())
    }

    /// The requests so far, oldest first.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    /// The [kind](RecordedRequest::kind) of each request so far, oldest first.
    #[must_use]
    pub fn kinds(&self) -> Vec<RequestKind> {
        self.lock().iter().map(RecordedRequest::kind).collect()
    }

    /// How many requests so far were of `kind`.
    #[must_use]
    pub fn count(&self, kind: RequestKind) -> usize {
        self.lock().iter().filter(|r| r.kind() == kind).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic elsewhere while pushing leaves a whole vector behind: still readable.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The parameters of a query string (`a=1&b=x%20y`), percent-decoded (`+` as a space), in
/// order.
pub(crate) fn query_params(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|kv| !kv.is_empty()).map(|kv| {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(key), decode(value))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{RequestKind, query_params};

    fn kind(line: &str) -> RequestKind {
        let (method, target) = line.split_once(' ').unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        RequestKind::of(method, path, query)
    }

    #[test]
    fn requests_are_classified_by_method_path_and_query() {
        use RequestKind::{List, Other, StreamingList, Watch};
        for (line, expected) in [
            ("GET /api/v1/namespaces/ns/configmaps?limit=500", List),
            ("GET /api/v1/configmaps", List),
            ("GET /api/v1/namespaces", List),
            (
                "GET /apis/apps/v1/namespaces/ns/deployments?labelSelector=a%3Db",
                List,
            ),
            ("GET /apis/example.com/v1/widgets", List),
            (
                "GET /api/v1/namespaces/ns/configmaps?watch=true&resourceVersion=7",
                Watch,
            ),
            ("GET /api/v1/namespaces/ns/configmaps?watch=1", Watch),
            ("GET /api/v1/watch/namespaces/ns/configmaps", Watch),
            (
                "GET /api/v1/namespaces/ns/configmaps?watch=true&sendInitialEvents=true\
                 &resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
                StreamingList,
            ),
            ("GET /api/v1/namespaces/ns/configmaps?watch=false", List),
            ("GET /api/v1/namespaces/kube-system", Other),
            ("GET /api/v1/namespaces/ns/status", Other),
            ("GET /api/v1/namespaces/ns/configmaps/cm-0", Other),
            (
                "GET /apis/apps/v1/namespaces/ns/deployments/web/scale",
                Other,
            ),
            ("GET /api/v1", Other),
            ("GET /apis/apps", Other),
            ("GET /version", Other),
            ("POST /api/v1/namespaces/ns/configmaps", Other),
            ("DELETE /api/v1/namespaces/ns/configmaps", Other),
        ] {
            assert_eq!(kind(line), expected, "{line}");
        }
    }

    #[test]
    fn query_params_are_percent_decoded_in_order() {
        let params: Vec<_> =
            query_params("labelSelector=app%3Dweb%2Ctier+in&limit=5&flag&x=%4").collect();
        let expected = [
            ("labelSelector", "app=web,tier in"),
            ("limit", "5"),
            ("flag", ""),
            ("x", "%4"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(params, expected);
    }

    #[test]
    fn lists_are_lists_and_streaming_lists() {
        assert!(RequestKind::List.is_list() && RequestKind::StreamingList.is_list());
        assert!(!RequestKind::Watch.is_list() && !RequestKind::Other.is_list());
    }
}

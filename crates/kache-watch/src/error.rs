//! What can go wrong: [`Error`], one variant per failure stage, and (feature `protobuf`)
//! `ProtoError`, the protobuf answer that could not be used, which an [`Error`] carries.

use kube_client::core::Status;

/// What went wrong while listing or watching.
///
/// Every error is reported as an item of the [`watcher`](crate::watcher) stream, which keeps
/// going afterwards: none of these ends the stream. The watcher waits before the request that
/// follows an error ([`Config::retry_backoff`](crate::Config::retry_backoff)), so a persistent
/// error (a missing permission, a server that is down) never becomes a busy loop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A LIST request (one page of the initial list) failed; the list restarts from `Init`.
    #[error("failed to list objects: {0}")]
    InitialListFailed(#[source] kube_client::Error),

    /// A WATCH request could not be started; it is retried from the same resourceVersion.
    #[error("failed to start watching objects: {0}")]
    WatchStartFailed(#[source] kube_client::Error),

    /// The server sent an ERROR event on the watch. A `410 Gone` makes the watcher relist.
    #[error("error event from the api server: {} ({}): {}", .0.code, .0.reason, .0.message)]
    WatchError(Box<Status>),

    /// The watch connection failed or sent something that could not be decoded.
    #[error("watch stream failed: {0}")]
    WatchFailed(#[source] kube_client::Error),

    /// A LIST response carried neither a resourceVersion nor a continue token, so the watcher
    /// cannot know where to watch from; it relists.
    #[error(
        "list response has no metadata.resourceVersion and no continue token (does the resource support watch?)"
    )]
    NoResourceVersion,

    /// An object from the server lacks a field the cache needs; the object was skipped.
    #[error("skipped an object with no {field} (in {event} event)")]
    InvalidObject {
        /// The missing field, such as `metadata.name`.
        field: &'static str,
        /// The kind of event that carried the object.
        event: &'static str,
    },

    /// A streaming list did not send its closing bookmark in time; the watcher falls back to
    /// a paged list.
    #[error("streaming list sent no initial-events-end bookmark within {0:?}")]
    InitialEventsTimeout(std::time::Duration),

    /// A request that asks the server about itself ([`cluster_uid`](crate::cluster_uid),
    /// [`server_point`](crate::server_point)) failed; it is returned by that call, never by
    /// the stream.
    #[error("failed to ask the server where it stands: {0}")]
    ServerQueryFailed(#[source] kube_client::Error),

    /// A shard was given bad bounds or a selector that could not be read
    /// ([`Shard`](crate::Shard)); it is returned where the shard is built, never by the stream.
    #[error("invalid shard {input:?}: {reason}")]
    InvalidShard {
        /// What was given: the selector, or the bounds.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Error {
    /// The HTTP status code behind this error, where the server gave one.
    ///
    /// ```
    /// use kache_watch::Error;
    /// assert_eq!(Error::NoResourceVersion.status_code(), None);
    /// ```
    #[must_use]
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::InitialListFailed(e)
            | Self::WatchStartFailed(e)
            | Self::WatchFailed(e)
            | Self::ServerQueryFailed(e) => status_code(e),
            Self::WatchError(status) => Some(status.code),
            Self::NoResourceVersion
            | Self::InvalidObject { .. }
            | Self::InitialEventsTimeout(_)
            | Self::InvalidShard { .. } => None,
        }
    }

    /// How long the server asked to wait before the next request, if it did: the
    /// `Retry-After` of an overloaded server (429 Too Many Requests, 503), or a status's
    /// `retryAfterSeconds`. The watcher and [`StreamBackoff`](crate::StreamBackoff) wait at
    /// least this long, at most the backoff's maximum.
    ///
    /// ```
    /// use kache_watch::Error;
    /// assert_eq!(Error::NoResourceVersion.retry_after(), None);
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::InitialListFailed(kube_client::Error::Api(status))
            | Self::WatchStartFailed(kube_client::Error::Api(status))
            | Self::WatchFailed(kube_client::Error::Api(status))
            | Self::ServerQueryFailed(kube_client::Error::Api(status))
            | Self::WatchError(status) => crate::retry::hint(status),
            _ => None,
        }
    }

    /// The name of this error's variant, such as `"WatchStartFailed"`: a short, stable label
    /// for logs, metrics and test assertions.
    ///
    /// ```
    /// use kache_watch::Error;
    /// assert_eq!(Error::NoResourceVersion.kind(), "NoResourceVersion");
    /// ```
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InitialListFailed(_) => "InitialListFailed",
            Self::WatchStartFailed(_) => "WatchStartFailed",
            Self::WatchFailed(_) => "WatchFailed",
            Self::WatchError(_) => "WatchError",
            Self::NoResourceVersion => "NoResourceVersion",
            Self::InvalidObject { .. } => "InvalidObject",
            Self::InitialEventsTimeout(_) => "InitialEventsTimeout",
            Self::InvalidShard { .. } => "InvalidShard",
            Self::ServerQueryFailed(_) => "ServerQueryFailed",
        }
    }

    /// The protobuf decoding error behind this error, if it is one: an answer to
    /// [`protobuf_watcher`](crate::protobuf_watcher) that could not be used.
    #[cfg(feature = "protobuf")]
    #[must_use]
    pub fn protobuf(&self) -> Option<&ProtoError> {
        match self {
            Self::InitialListFailed(kube_client::Error::Service(source))
            | Self::WatchStartFailed(kube_client::Error::Service(source))
            | Self::WatchFailed(kube_client::Error::Service(source)) => source.downcast_ref(),
            _ => None,
        }
    }

    /// Whether the server refused for lack of permission (`403 Forbidden`). Retrying will not
    /// help until the permissions change.
    #[must_use]
    pub fn is_forbidden(&self) -> bool {
        self.status_code() == Some(403)
    }
}

/// The longest watch frame accepted. etcd stores objects of at most 1.5 MiB by default and
/// the server refuses requests over 3 MiB: a length far past that is garbage, and buffering
/// up to it would let a broken stream take the memory.
// Here, not with the frames it bounds, because `ProtoError::FrameTooLarge` prints it: error.rs
// names nothing from the modules above it.
#[cfg(feature = "protobuf")]
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// A protobuf answer that could not be used. It reaches the stream as the source of
/// [`Error::InitialListFailed`](crate::Error::InitialListFailed) or
/// [`Error::WatchFailed`](crate::Error::WatchFailed) (find it with
/// [`Error::protobuf`](crate::Error::protobuf)); the watcher then relists or resumes as for
/// any undecodable answer.
#[cfg(feature = "protobuf")]
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

#[cfg(feature = "protobuf")]
impl From<ProtoError> for kube_client::Error {
    fn from(err: ProtoError) -> Self {
        kube_client::Error::Service(Box::new(err))
    }
}

/// The HTTP status code of a kube-client error, where the server answered with a `Status`
/// that has one (kube-client reports a watch event it cannot read as a `Status` with code 0).
pub(crate) fn status_code(err: &kube_client::Error) -> Option<u16> {
    match err {
        kube_client::Error::Api(status) if status.code != 0 => Some(status.code),
        _ => None,
    }
}

/// Whether a kube-client service error is a protobuf decoding error (always false without the
/// `protobuf` feature).
pub(crate) fn is_protobuf(source: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    #[cfg(feature = "protobuf")]
    return source.is::<ProtoError>();
    #[cfg(not(feature = "protobuf"))]
    {
        let _ = source;
        false
    }
}

/// A `Result` whose error defaults to the watcher's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

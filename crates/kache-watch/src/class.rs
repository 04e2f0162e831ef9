//! What kind of failure a watcher error is, for metrics, health checks and alerts.

use std::fmt;

use crate::Error;

/// What kind of failure an [`Error`] is: the answer a person or an alert needs first.
///
/// [`Error::class`] sorts every error into one of these. Two of them do not heal by retrying:
/// [`Forbidden`](Self::Forbidden) (the watch lacks RBAC rights) and
/// [`NotFound`](Self::NotFound) (the resource is not served, such as a CRD that is not
/// installed); [`is_persistent`](Self::is_persistent) says so.
///
/// ```
/// use kache_watch::{Error, ErrorClass};
///
/// assert_eq!(Error::NoResourceVersion.class(), ErrorClass::Decode);
/// assert_eq!(ErrorClass::Forbidden.as_str(), "forbidden");
/// assert!(ErrorClass::NotFound.is_persistent());
/// assert!(!ErrorClass::Network.is_persistent());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorClass {
    /// `403 Forbidden`: the client may not list or watch these objects.
    Forbidden,
    /// `404 Not Found`: the server does not serve this resource (or namespace).
    NotFound,
    /// `410 Gone`: the resourceVersion to resume from has expired; the watcher relists.
    Gone,
    /// Any other `4xx` answer (`400`, `422`, `429` ...).
    ClientError,
    /// A `5xx` answer (or a `1xx` to `3xx` status where an error was expected).
    ServerError,
    /// No answer: the connection failed, was reset or timed out, TLS or client-side
    /// authentication failed, or a streaming list never finished.
    Network,
    /// An answer that could not be used: undecodable bytes, an error whose status the client
    /// could not read (code 0: kube-client turns an error body that is JSON but not a
    /// `Status` into an empty one), or an object or list missing a field the watcher needs.
    Decode,
}

impl ErrorClass {
    /// Every class, in a stable order (the order of the variants).
    pub const ALL: [Self; 7] = [
        Self::Forbidden,
        Self::NotFound,
        Self::Gone,
        Self::ClientError,
        Self::ServerError,
        Self::Network,
        Self::Decode,
    ];

    /// A short name in `snake_case`, stable for use as a metric label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Gone => "gone",
            Self::ClientError => "client_error",
            Self::ServerError => "server_error",
            Self::Network => "network",
            Self::Decode => "decode",
        }
    }

    /// Whether retrying cannot help until someone changes the cluster: `403` and `404`.
    #[must_use]
    pub const fn is_persistent(self) -> bool {
        matches!(self, Self::Forbidden | Self::NotFound)
    }

    /// The class of an HTTP status code from the server.
    const fn of_status(code: u16) -> Self {
        match code {
            403 => Self::Forbidden,
            404 => Self::NotFound,
            410 => Self::Gone,
            400..=499 => Self::ClientError,
            100..=399 | 500..=599 => Self::ServerError,
            _ => Self::Decode,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// What kind of failure this is; see [`ErrorClass`].
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::InitialListFailed(e)
            | Self::WatchStartFailed(e)
            | Self::WatchFailed(e)
            | Self::ServerQueryFailed(e) => client_error_class(e),
            Self::WatchError(status) => ErrorClass::of_status(status.code),
            Self::NoResourceVersion | Self::InvalidObject { .. } | Self::InvalidShard { .. } => {
                ErrorClass::Decode
            }
            Self::InitialEventsTimeout(_) => ErrorClass::Network,
        }
    }
}

fn client_error_class(err: &kube_client::Error) -> ErrorClass {
    use kube_client::Error as E;
    match err {
        E::Api(status) => ErrorClass::of_status(status.code),
        E::SerdeError(_) | E::FromUtf8(_) | E::LinesCodecMaxLineLengthExceeded => {
            ErrorClass::Decode
        }
        // A protobuf answer that could not be used (feature `protobuf`).
        E::Service(source) if crate::error::is_protobuf(source.as_ref()) => ErrorClass::Decode,
        // Transport failures, and the client-side failures that keep a request from getting
        // any answer (TLS, authentication, a request that could not be built).
        _ => ErrorClass::Network,
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorClass;
    use crate::Error;
    use kube_client::core::Status;

    fn status(code: u16) -> Error {
        Error::WatchError(Box::new(Status::failure("test", "Test").with_code(code)))
    }

    fn api(code: u16) -> Error {
        Error::InitialListFailed(kube_client::Error::Api(Box::new(
            Status::failure("test", "Test").with_code(code),
        )))
    }

    #[test]
    fn status_codes_map_to_their_classes() {
        for (code, class) in [
            (403, ErrorClass::Forbidden),
            (404, ErrorClass::NotFound),
            (410, ErrorClass::Gone),
            (400, ErrorClass::ClientError),
            (422, ErrorClass::ClientError),
            (429, ErrorClass::ClientError),
            (500, ErrorClass::ServerError),
            (503, ErrorClass::ServerError),
            (0, ErrorClass::Decode),
        ] {
            assert_eq!(status(code).class(), class, "watch error {code}");
            assert_eq!(api(code).class(), class, "list failure {code}");
        }
    }

    #[test]
    fn transport_and_decoding_failures_have_their_own_classes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            Error::WatchFailed(kube_client::Error::ReadEvents(io)).class(),
            ErrorClass::Network
        );
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(
            Error::WatchFailed(kube_client::Error::SerdeError(json)).class(),
            ErrorClass::Decode
        );
        let missing = Error::InvalidObject {
            field: "metadata.name",
            event: "Apply",
        };
        assert_eq!(missing.class(), ErrorClass::Decode);
        let timeout = Error::InitialEventsTimeout(std::time::Duration::from_secs(1));
        assert_eq!(timeout.class(), ErrorClass::Network);
    }

    #[test]
    fn only_forbidden_and_not_found_are_persistent() {
        let persistent: Vec<_> = ErrorClass::ALL
            .into_iter()
            .filter(|class| class.is_persistent())
            .collect();
        assert_eq!(persistent, [ErrorClass::Forbidden, ErrorClass::NotFound]);
    }
}

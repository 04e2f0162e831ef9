//! What the server says about retrying: the `Retry-After` of an overloaded server (429, 503),
//! and the "too large resource version" answer of an API server whose watch cache is behind.

use std::time::Duration;

use kube_client::core::Status;
use kube_client::core::response::StatusDetails;

/// The delay a `Retry-After` header gives, in whole seconds; `None` for an HTTP date or
/// anything else (those are treated as no hint).
pub(crate) fn header_seconds(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `status` with `details.retryAfterSeconds` set from the header where the body gave none:
/// kube-client drops the headers, and an overloaded server's 429 body is plain text.
pub(crate) fn with_header(mut status: Status, seconds: Option<u32>) -> Status {
    if let Some(seconds) = seconds.filter(|s| *s > 0) {
        let details = status.details.get_or_insert_with(|| StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 0,
        });
        if details.retry_after_seconds == 0 {
            details.retry_after_seconds = seconds;
        }
    }
    status
}

/// The server's hint in `status`, if it gave one.
pub(crate) fn hint(status: &Status) -> Option<Duration> {
    let seconds = status.details.as_ref()?.retry_after_seconds;
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

/// Whether `status` says the server has not yet reached the requested resourceVersion: an
/// API server whose watch cache is behind the one that served the version (a 504 with the
/// cause `ResourceVersionTooLarge`, "Too large resource version" in its message).
pub(crate) fn is_too_large(status: &Status) -> bool {
    let cause = status.details.as_ref().is_some_and(|details| {
        details
            .causes
            .iter()
            .any(|cause| cause.reason == "ResourceVersionTooLarge")
    });
    cause || status.message.contains("Too large resource version")
}

#[cfg(test)]
mod tests {
    use kube_client::core::Status;
    use kube_client::core::response::{StatusCause, StatusDetails};

    use super::{header_seconds, hint, is_too_large, with_header};

    #[test]
    fn the_header_fills_a_status_without_a_hint() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(header_seconds(&headers), Some(3));
        let status = with_header(
            Status::failure("Too many requests", "").with_code(429),
            Some(3),
        );
        assert_eq!(hint(&status), Some(std::time::Duration::from_secs(3)));
        // The body's own hint wins.
        let status = with_header(status, Some(9));
        assert_eq!(hint(&status).unwrap().as_secs(), 3);
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(header_seconds(&headers), None);
        assert_eq!(hint(&Status::failure("x", "")), None);
    }

    #[test]
    fn too_large_is_recognised_by_its_cause_or_its_message() {
        let by_cause = Status::failure("Timeout: ...", "Timeout")
            .with_code(504)
            .with_details(StatusDetails {
                causes: vec![StatusCause {
                    reason: "ResourceVersionTooLarge".into(),
                    message: "Too large resource version".into(),
                    field: String::new(),
                }],
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                retry_after_seconds: 0,
            });
        assert!(is_too_large(&by_cause));
        let by_message =
            Status::failure("Too large resource version: 105, current: 101", "Timeout")
                .with_code(504);
        assert!(is_too_large(&by_message));
        assert!(!is_too_large(
            &Status::failure("etcdserver: request timed out", "").with_code(504)
        ));
    }
}

//! Which API server a local control plane runs.

use std::fmt;
use std::str::FromStr;

/// The API server a [`TestEnv`](crate::TestEnv) starts in front of etcd.
///
/// Both serve the core API from etcd through Kubernetes' own storage stack (etcd3 store,
/// watch cache, bookmarks, paged lists); they differ in age:
///
/// | | [`Legacy`](Self::Legacy) | [`Modern`](Self::Modern) |
/// |---|---|---|
/// | What | kube-apiserver v1.20.2, built from Debian's source package | `kache-apiserver`, a small server of this crate on the Kubernetes 1.36 apiserver library (Debian sid's packages) |
/// | etcd | 3.4 (Debian stable) | 3.5 (Debian sid) |
/// | Streaming lists (`sendInitialEvents`) | refused with `422 Invalid` | served (the `WatchList` gate, on by default) |
/// | Sharded list and watch (`shardSelector`) | no | behind the `ShardedListAndWatch` gate, off by default |
/// | Resources | all built-in kinds | `Namespace`, `ConfigMap`, `Secret`, `Pod`, `Event`, `Lease` |
/// | Authorization | RBAC | `system:masters` may do anything; other users only discovery |
/// | Namespace lifecycle, admission | kube-apiserver's | none: objects of a deleted namespace stay |
///
/// The default is `Legacy`; `KACHE_TEST_SERVER=modern` (or `legacy`) changes it for
/// [`TestEnv::start`](crate::TestEnv::start) and [`TestEnv::shared`](crate::TestEnv::shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Server {
    /// kube-apiserver v1.20.2: the fallback case (no streaming lists).
    #[default]
    Legacy,
    /// A server on the Kubernetes 1.36 apiserver library, as every cluster since 1.34 behaves
    /// for lists and watches.
    Modern,
}

impl Server {
    /// Both servers, oldest first.
    pub const ALL: [Self; 2] = [Self::Legacy, Self::Modern];

    /// The short name used in environment variables and test names: `legacy` or `modern`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Modern => "modern",
        }
    }

    /// Whether this server answers streaming lists (`sendInitialEvents=true`) with its
    /// default feature gates.
    #[must_use]
    pub fn serves_streaming_lists(self) -> bool {
        matches!(self, Self::Modern)
    }

    /// The default server: `KACHE_TEST_SERVER` if set, else [`Server::Legacy`].
    ///
    /// # Errors
    ///
    /// [`UnknownServer`] when the variable names no server.
    pub fn from_env() -> Result<Self, UnknownServer> {
        match std::env::var("KACHE_TEST_SERVER") {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Self::default()),
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Server {
    type Err = UnknownServer;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|server| server.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownServer(s.to_owned()))
    }
}

/// A server name that is neither `legacy` nor `modern`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown API server {0:?}: expected `legacy` or `modern`")]
pub struct UnknownServer(pub String);

#[cfg(test)]
mod tests {
    use super::Server;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for server in Server::ALL {
            assert_eq!(server.name().parse::<Server>(), Ok(server));
        }
        assert_eq!(" Modern ".parse::<Server>(), Ok(Server::Modern));
        let err = "v1.36".parse::<Server>().unwrap_err();
        assert!(err.to_string().contains("v1.36"), "{err}");
    }
}

//! etcd: its flags, its health check and the `etcdctl` calls behind the fault tools.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// How to run one etcd member on loopback.
#[derive(Debug, Clone)]
pub(crate) struct Etcd {
    pub(crate) data_dir: PathBuf,
    pub(crate) client_port: u16,
    pub(crate) peer_port: u16,
    pub(crate) etcdctl: PathBuf,
}

impl Etcd {
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub(crate) fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        vec![
            "--name=kache".to_owned(),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=kache={peer}"),
        ]
    }

    /// Whether `GET /health` answers `"health":"true"`. A plain HTTP/1.0 request over
    /// a TCP stream is enough and needs no HTTP client.
    pub(crate) async fn is_healthy(&self) -> bool {
        let probe = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.client_port)).await?;
            stream
                .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            std::io::Result::Ok(String::from_utf8_lossy(&response).contains(r#""health":"true""#))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(true))
        )
    }

    /// The current revision of the key space.
    pub(crate) async fn revision(&self) -> Result<i64> {
        let json = self.etcdctl(&["endpoint", "status", "-w", "json"]).await?;
        parse_revision(&json).ok_or_else(|| Error::Etcdctl {
            command: "endpoint status".to_owned(),
            reason: format!("no revision in its output: {json}"),
            source: None,
        })
    }

    /// Compacts at the current revision and returns it. `--physical` waits until the
    /// compaction has reached the backend, so expired reads fail right after this returns.
    pub(crate) async fn compact(&self) -> Result<i64> {
        let revision = self.revision().await?;
        self.etcdctl(&["compact", &revision.to_string(), "--physical"])
            .await?;
        Ok(revision)
    }

    async fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let command = args.join(" ");
        tracing::debug!(%command, "etcdctl");
        let output = tokio::process::Command::new(&self.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| Error::Etcdctl {
                command: command.clone(),
                reason: format!("could not run {}", self.etcdctl.display()),
                source: Some(source),
            })?;
        if !output.status.success() {
            return Err(Error::Etcdctl {
                command,
                reason: format!(
                    "exited with {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                source: None,
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Reads `"revision":N` out of `etcdctl endpoint status -w json`; the one number we need
/// does not justify a JSON parser.
fn parse_revision(json: &str) -> Option<i64> {
    let rest = &json[json.find("\"revision\":")? + "\"revision\":".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The path of the etcd log inside a working folder.
pub(crate) fn log_path(dir: &Path) -> PathBuf {
    dir.join("etcd.log")
}

#[cfg(test)]
mod tests {
    use super::parse_revision;

    #[test]
    fn revision_is_read_from_endpoint_status_json() {
        let json = r#"[{"Endpoint":"http://127.0.0.1:2379","Status":{"header":{"cluster_id":1,"member_id":2,"revision":1234,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":2,"raftIndex":77,"raftTerm":2}}]"#;
        assert_eq!(parse_revision(json), Some(1234));
        assert_eq!(parse_revision("[]"), None);
    }
}

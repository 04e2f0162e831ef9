//! Child processes that cannot outlive the test process.
//!
//! Each server runs under a small `sh` watchdog whose stdin is a pipe from this process.
//! The kernel closes the pipe when this process exits for any reason (a normal exit with the
//! shared control plane still in a `static`, a panic, SIGKILL), so the watchdog reads end of
//! file and ends the server: SIGTERM, then SIGKILL 10 s later. Closing the pipe on purpose is
//! also how a server is stopped gracefully. No `unsafe`, no `prctl`, no PID polling.
//!
//! std's `Child` is used rather than tokio's: it is not tied to the runtime that spawned it,
//! so the shared control plane can be driven from any test's runtime.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `"$@"`, ends it when stdin reaches end of file, and exits with its status.
///
/// The reader runs in a subshell holding the pipe on fd 3; the server gets neither. The
/// main shell waits for the server, then ends the reader so it can never signal a reused PID.
const WATCHDOG: &str = r#"
exec 3<&0 </dev/null
"$@" 3<&- &
server=$!
(
    while read -r _ <&3; do :; done
    kill -TERM "$server" 2>/dev/null
    sleep 10
    kill -KILL "$server" 2>/dev/null
) &
reader=$!
exec 3<&-
wait "$server"
status=$?
kill "$reader" 2>/dev/null
exit "$status"
"#;

/// Removes the working folder once this process is gone (the static shared control plane
/// is never dropped); a few seconds after the watchdogs have ended the servers.
const JANITOR: &str = r#"
while read -r _; do :; done
sleep 12
rm -rf -- "$1"
"#;

/// How long a graceful stop may take before the watchdog is killed; longer than the
/// watchdog's own SIGTERM-to-SIGKILL delay, so the server is gone by then.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A server process under its watchdog.
#[derive(Debug)]
pub(crate) struct Supervised {
    name: &'static str,
    child: Child,
    /// Dropping it is the stop signal.
    lifeline: Option<ChildStdin>,
}

impl Supervised {
    /// Starts `program args...` under a watchdog, appending its output to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> io::Result<Self> {
        let log_file = OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(format!("kache-watchdog-{name}"))
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let lifeline = child.stdin.take();
        tracing::debug!(name, watchdog_pid = child.id(), "spawned");
        Ok(Self {
            name,
            child,
            lifeline,
        })
    }

    /// Whether the server (and so its watchdog) has exited.
    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks the server to stop and waits for it without blocking the runtime.
    pub(crate) async fn stop(mut self) {
        self.lifeline.take();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !self.has_exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.force();
    }

    /// Asks the server to stop and blocks until it has (for `Drop`).
    pub(crate) fn stop_blocking(&mut self) {
        self.lifeline.take();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.force();
    }

    /// Kills the watchdog if it is still there; its reader still ends the server.
    fn force(&mut self) {
        if !self.has_exited() {
            tracing::warn!(
                name = self.name,
                "did not stop in time; killing its watchdog"
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.lifeline.is_some() {
            self.stop_blocking();
        }
    }
}

/// Removes a folder after this process has exited, unless disarmed.
#[derive(Debug)]
pub(crate) struct Janitor {
    child: Option<Child>,
    dir: PathBuf,
}

impl Janitor {
    pub(crate) fn spawn(dir: &Path) -> io::Result<Self> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(JANITOR)
            .arg("kache-janitor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self {
            child: Some(child),
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Janitor {
    /// We are alive and cleaning up ourselves: end the janitor first, then remove the folder.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(dir = %self.dir.display(), %error, "could not remove working folder");
        }
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    // Logs can grow large; the tail is in the last 64 KiB.
    let mut bytes = Vec::new();
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = io::Seek::seek(
        &mut file,
        io::SeekFrom::Start(len.saturating_sub(64 * 1024)),
    );
    let _ = io::Read::read_to_end(&mut file, &mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

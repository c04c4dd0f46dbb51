//! The real `hearth` binary as a child process: started with a command the test builds, its
//! "hearth listening on http(s)://ADDR" line awaited, killed when dropped (so a failing test never
//! leaves a server behind).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running server process and the address it printed.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Send SIGTERM (a graceful shutdown).
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    }

    /// Wait up to `limit` for the process to exit; its exit code (`None`: still running or
    /// killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Spawn `command` (its stdout piped here) and wait for its listening line.
pub fn spawn_listening(mut command: Command) -> Served {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            let addr = line
                .strip_prefix("hearth listening on http://")
                .or_else(|| line.strip_prefix("hearth listening on https://"));
            if let Some(addr) = addr {
                let _ = tx.send(addr.trim().to_string());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let addr = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(addr) => addr.parse().expect("an address"),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            panic!("the server printed no address (it ended: {status})");
        }
    };
    Served { child, addr }
}

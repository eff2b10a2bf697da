//! The gateway binary as a child process: started on a configuration file, its log lines
//! collected from stdout and stderr, signalled, and waited for.

use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lwm2m-gateway");

/// The binary running in the background, its stdout and stderr read line by line.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    log: String,
}

impl Running {
    /// Starts `--config path` with `RUST_LOG` unset, so the file's `[log] filter` applies.
    pub fn start(path: &std::path::Path) -> Running {
        let mut child = Command::new(BIN)
            .args(["--config", path.to_str().expect("utf-8")])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            log: String::new(),
        }
    }

    /// The first line containing `needle` within 15 s; panics with the log so far.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} within 15 s:\n{}", self.log);
    }

    /// The UDP address from the "gateway running" line.
    pub fn udp_addr(&mut self) -> SocketAddr {
        let line = self.wait_for("gateway running");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("udp="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("udp= in {line:?}"))
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits (bounded) for the process to exit; returns its status and the whole log.
    pub fn exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not exit within 15 s:\n{}", self.log);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

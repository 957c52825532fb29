//! A `redis-server` of the test's own, on a free port, stopped when dropped.
//!
//! A missing `redis-server` is a failure, never a skip: `.ci/run` installs it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    /// Starts one with AOF on every write (what the hub needs to lose nothing
    /// acknowledged), in a fresh directory.
    pub fn start() -> RedisServer {
        let dir = std::env::temp_dir().join(format!("sb-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = RedisServer {
            port: free_port(),
            dir,
            child: None,
        };
        // A free port can be taken by another test's server between the check and the
        // start: this one then exits, and the port answers for the other (whose drop
        // later refuses this test's connections). Another port, then.
        for _ in 0..5 {
            if r.spawn() {
                return r;
            }
            r.port = free_port();
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts the server; false when it exited (its port was taken).
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg("always")
            .arg("--save")
            .arg("")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed (apt-get install redis-server): {e}")
            });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_as(self.port, pid) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (SIGKILL) and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it (SIGSTOP): it keeps its sockets, and the kernel keeps accepting
    /// connections and bytes for it, but it answers nothing until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continues it (SIGCONT) after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill {sig} {pid} failed");
    }

    /// Starts a new, empty one on the same port: its data is lost (a new server, a
    /// `FLUSHALL`).
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("redis dir");
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the server on `port` is the process `pid` (its `INFO server` says so).
fn answers_as(port: u16, pid: u32) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    let (mut got, mut buf) = (String::new(), [0u8; 4096]);
    let want = format!("process_id:{pid}\r\n");
    while !got.contains("process_id:") || !got.contains("\r\nrun_id") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    got.contains(&want)
}

//! A stuck disk under the file store, made for real: the data directory is an ext4
//! file system on a loop device, frozen with `fsfreeze` (every write into it blocks in
//! the kernel, as on a hung disk). Callers must get `outcome_unknown` within
//! `store.call_timeout_ms`, and once the file system thaws the queued command is
//! written and the hub carries on by itself (README: "A stuck disk").
//!
//! Needs root (mount, fsfreeze) and util-linux and e2fsprogs, as CI has. Where it
//! cannot mount (not root, no loop devices) it says so and does nothing.

mod common;

use common::{QUEUES_AND_AGENTS, TestHub, check_schema, config};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use switchboard::auth::Role;

/// The call timeout the hub runs with here.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// What "within the timeout" allows on a busy test machine.
const SLACK: Duration = Duration::from_secs(2);

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A loop-mounted ext4 file system of the test's own. Dropping it thaws, unmounts and
/// removes it, whatever happened (a failed assertion included): nothing is left
/// mounted or frozen.
struct Disk {
    root: PathBuf,
    mnt: PathBuf,
    frozen: bool,
}

impl Disk {
    /// `None` when this machine does not let the test mount (not root).
    fn mount() -> Option<Disk> {
        let root = std::env::temp_dir().join(format!(
            "switchboard-stuck-disk-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let img = root.join("disk.img");
        let mnt = root.join("mnt");
        std::fs::create_dir_all(&mnt).expect("temp dir");
        let disk = Disk {
            root,
            mnt,
            frozen: false,
        };
        let img_s = img.to_str().expect("utf-8 temp path");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(64 << 20))
            .expect("image file");
        run("mkfs.ext4", &["-q", img_s]).expect("mkfs.ext4 (e2fsprogs)");
        if let Err(e) = run("mount", &["-o", "loop", img_s, disk.mnt()]) {
            let root_user = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
            // As root (CI) a failed mount is a failure; elsewhere the test cannot run.
            assert!(!root_user, "cannot loop-mount as root: {e}");
            eprintln!("stuck_disk: skipped, cannot mount here: {e}");
            return None;
        }
        Some(disk)
    }

    fn mnt(&self) -> &str {
        self.mnt.to_str().expect("utf-8 temp path")
    }

    fn path(&self) -> &Path {
        &self.mnt
    }

    fn freeze(&mut self) {
        run("fsfreeze", &["-f", self.mnt()]).expect("fsfreeze -f");
        self.frozen = true;
    }

    fn thaw(&mut self) {
        run("fsfreeze", &["-u", self.mnt()]).expect("fsfreeze -u");
        self.frozen = false;
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.frozen {
            let _ = run("fsfreeze", &["-u", self.mnt()]);
        }
        // Lazy: a hub still holding files (a test that failed half-way) cannot keep
        // the mount alive past the test.
        if run("umount", &[self.mnt()]).is_err() {
            let _ = run("umount", &["-l", self.mnt()]);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

async fn create(hub: &TestHub, key: &str) -> (u16, Value, Duration) {
    let tok = hub.token("crm", Role::Integration);
    let body = json!({"channel": "chat", "queue": "support", "idempotency_key": key});
    let t = Instant::now();
    let (status, v) = hub
        .http("POST", "/v1/tasks", Some(&tok), Some(&body.to_string()))
        .await;
    (status, v, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_disk_answers_outcome_unknown_within_the_timeout_and_the_hub_carries_on_after_it_thaws()
 {
    let Some(mut disk) = Disk::mount() else {
        return;
    };
    let mut cfg = config(&format!(
        "{QUEUES_AND_AGENTS}\n[store]\nkind = \"file\"\ncall_timeout_ms = {}\n",
        CALL_TIMEOUT.as_millis()
    ));
    cfg.store.data_dir = disk.path().join("data");
    let hub = TestHub::start_with(cfg).await;
    let (status, v, _) = create(&hub, "before").await;
    assert_eq!(status, 201, "{v}");

    disk.freeze();
    // The writer blocks in the kernel; the caller does not.
    let (status, v, took) = create(&hub, "during").await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "outcome_unknown", "{v}");
    check_schema("HttpError", &v);
    assert!(
        took >= CALL_TIMEOUT,
        "answered before the timeout: {took:?}"
    );
    assert!(took < CALL_TIMEOUT + SLACK, "answered after {took:?}");
    // A second caller queues behind it and is answered the same way.
    let (status, v, took) = create(&hub, "during-2").await;
    assert_eq!(status, 504, "{v}");
    assert!(took < CALL_TIMEOUT + SLACK, "answered after {took:?}");

    disk.thaw();
    // The queued commands are written once the disk is back: a keyed retry finds the
    // task the first attempt made (200), it does not make a second one.
    let (status, first, took) = create(&hub, "during").await;
    assert_eq!(
        status, 200,
        "the first attempt was written after the thaw: {first}"
    );
    assert!(took < CALL_TIMEOUT, "the writer did not carry on: {took:?}");
    check_schema("Task", &first);
    let (status, again, _) = create(&hub, "during-2").await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["task_id"], first["task_id"]);
    // New work goes through, and the hub is ready.
    let (status, v, _) = create(&hub, "after").await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = hub.http("GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
    hub.shutdown().await;
    drop(disk);
}

/// This process's CPU time so far (user and system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_log_and_its_due_deadlines_do_not_spin() {
    let Some(disk) = Disk::mount() else {
        return;
    };
    let mut cfg = config(
        "[[queues]]\nid = \"support\"\noffer_timeout_secs = 2\n[[agents]]\nid = \"ana\"\nqueues = [\"support\"]\n[store]\nkind = \"file\"\n",
    );
    cfg.store.data_dir = disk.path().join("data");
    let hub = TestHub::start_with(cfg).await;
    let mut ana = hub.ready_agent("ana").await;
    // Fill the file system: the log's next write has no room.
    let fill = disk.path().join("fill");
    let _ = run(
        "dd",
        &["if=/dev/zero", &format!("of={}", fill.display()), "bs=1M"],
    );
    // An offer whose deadline comes after the log has failed.
    let (status, v, _) = create(&hub, "offered").await;
    assert_eq!(status, 201, "{v}");
    ana.expect("offer").await;
    // Use up the room the log wrote ahead, until it fails.
    let tok = hub.token("crm", Role::Integration);
    // About 28 kB a task (text fields hold at most 2,000 characters each).
    let pad: serde_json::Map<String, Value> = (0..15)
        .map(|i| (format!("p{i}"), json!("x".repeat(1_900))))
        .collect();
    let mut failed = None;
    for i in 0..2_000 {
        let body =
            json!({"channel": "chat", "queue": "support", "attributes": {"n": i, "pad": pad}});
        let (s, v) = hub
            .http("POST", "/v1/tasks", Some(&tok), Some(&body.to_string()))
            .await;
        if s != 201 {
            failed = Some((s, v));
            break;
        }
    }
    let (s, v) = failed.expect("the full disk never refused a write");
    assert!(s >= 500, "{s} {v}");
    // The offer's deadline is due from 2 s after it rang: the timer loop cannot fire
    // it (the log refuses), and must not spin on it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU in 2 s with the log failed: the timer loop spins"
    );
    hub.shutdown().await;
    drop(disk);
}

//! The file store's own guarantees: what a restart finds (replay equality, snapshots
//! forked and built from the log),
//! a torn last batch (cut), damage to acknowledged records (refused, the last one
//! included), a batch that lost an earlier page (cut without its marker, refused with
//! it), format-1 directories, the directory lock, and the agents connected when the hub
//! stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchboard::auth::Role;
use switchboard::clock::Ts;
use switchboard::config::Config;
use switchboard::context::ContextCommand;
use switchboard::context::record::{Actor, CustomerFields};
use switchboard::ids::{AgentId, Channel, ConnId, CustomerId};
use switchboard::routing::{Command, Rules, TransferTo};
use switchboard::state::Reply;
use switchboard::store::file::{FileStore, backup, compact, recover, segment, snapshot};
use switchboard::store::{Sink, Store};
use switchboard::task::{CustomerIdentity, NewTask};

const CFG: &str = r#"
[routing]
offer_timeout_secs = 15
wrap_up_secs = 2
reconnect_grace_secs = 30

[[queues]]
id = "support"

[[queues]]
id = "sales"
escalation = { priority_every_secs = 5, priority_step = 1, priority_max = 3, relax_every_secs = 6, relax_levels = 2, overflow_after_secs = 20, overflow_queue = "support" }

[[agents]]
id = "a1"
queues = ["support", "sales"]

[[agents]]
id = "a2"
queues = ["support"]

[[agents]]
id = "a3"
queues = ["sales"]
skill_levels = { sv = 5 }
"#;

const T0: Ts = Ts(1_800_000_000_000_000);

fn at(ms: u64) -> Ts {
    Ts(T0.0 + ms * 1000)
}

fn rules() -> Arc<Rules> {
    Arc::new(Config::parse(CFG).expect("config").rules())
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "sb-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open(dir: &Path, snapshot_every: u64) -> FileStore {
    FileStore::open(dir, "n1", rules(), || T0, snapshot_every, Sink::detached())
        .await
        .expect("open the file store")
}

fn crm() -> Actor {
    Actor {
        id: "crm".into(),
        role: Role::Integration,
    }
}

fn new_task(queue: &str, key: Option<String>) -> Command {
    Command::CreateTask(Box::new(NewTask {
        channel: Channel::Chat,
        queue: queue.into(),
        priority: 0,
        skills: vec![],
        skill_levels: Default::default(),
        customer: CustomerIdentity {
            phone: Some("+46 70 123 45 67".into()),
            ..Default::default()
        },
        attributes: Default::default(),
        idempotency_key: key,
    }))
}

async fn new_customer(s: &dyn Store, name: &str, now: Ts) -> CustomerId {
    let o = s
        .context(
            ContextCommand::CreateCustomer {
                by: crm(),
                fields: CustomerFields {
                    name: Some(name.into()),
                    ..Default::default()
                },
                activity_id: None,
            },
            now,
        )
        .await
        .expect("store");
    match o.reply {
        Ok(Reply::Context(switchboard::context::ContextReply::Customer(v))) => {
            v.customer.customer_id
        }
        other => panic!("create customer: {other:?}"),
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    segment::list(dir)
        .expect("list")
        .pop()
        .expect("a segment")
        .1
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// Customers and tasks only (no desktop connected, so a restart appends nothing): the
/// state after `n` records is exactly what a store opened on them holds.
async fn write_records(s: &FileStore) -> (Vec<u8>, u64) {
    let c = new_customer(s, "Ana Araújo", at(0)).await;
    for i in 0..3 {
        s.execute(new_task("support", Some(format!("k{i}"))), at(1 + i))
            .await
            .expect("store")
            .reply
            .expect("create");
    }
    let before = (s.state_bytes().expect("bytes"), s.position());
    // The last record: a customer save.
    s.context(
        ContextCommand::UpdateCustomer {
            by: crm(),
            customer_id: c,
            base_version: 1,
            changes: CustomerFields {
                name: Some("Ana Araújo Lima".into()),
                ..Default::default()
            },
        },
        at(10),
    )
    .await
    .expect("store")
    .reply
    .expect("save");
    before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_at_every_offset_and_the_records_before_it_remain() {
    let dir = TempDir::new("torn");
    let s = open(&dir.0, 1_000_000).await;
    let (before, pos) = write_records(&s).await;
    drop(s);
    let seg = last_segment(&dir.0);
    let bytes = std::fs::read(&seg).expect("read");
    let scan = segment::scan(&bytes);
    assert!(scan.damage.is_none());
    let last = scan.records.last().expect("records").0;
    let end = scan.valid_len;
    assert!(end - last > segment::HEADER);
    // The segment was written ahead with zeros (`file::PREALLOC`), which read as free
    // room, not as a torn record.
    assert!(bytes.len() > end, "no room was written ahead");
    assert!(bytes[end..].iter().all(|b| *b == 0));
    for cut in last..end {
        // A crash in a segment written ahead: the batch's bytes from `cut` on never
        // reached the disk, the zeros written ahead did.
        let copy = TempDir::new("torn-zeros");
        copy_dir(&dir.0, &copy.0);
        let seg = last_segment(&copy.0);
        let mut torn = bytes.clone();
        torn[cut..].fill(0);
        std::fs::write(&seg, &torn).expect("write");
        let s = open(&copy.0, 1_000_000).await;
        assert_eq!(s.position(), pos, "zeros from {cut}");
        assert!(
            s.state_bytes().expect("bytes") == before,
            "zeros from {cut}: state differs"
        );
        drop(s);
        let left = std::fs::read(&seg).expect("read");
        let again = segment::scan(&left);
        assert!(
            again.damage.is_none(),
            "zeros from {cut}: {:?}",
            again.damage
        );
        assert_eq!(again.valid_len, last, "zeros from {cut}");

        // A crash in a file that ends where the write stopped.
        let copy = TempDir::new("torn-copy");
        copy_dir(&dir.0, &copy.0);
        let seg = last_segment(&copy.0);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open");
        f.set_len(cut as u64).expect("cut");
        drop(f);
        let s = open(&copy.0, 1_000_000).await;
        assert_eq!(s.position(), pos, "cut at {cut}");
        assert!(
            s.state_bytes().expect("bytes") == before,
            "cut at {cut}: state differs"
        );
        drop(s);
        // The torn bytes were cut off the file.
        assert_eq!(
            std::fs::metadata(&seg).expect("stat").len(),
            last as u64,
            "cut at {cut}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_followed_by_segments_a_failed_rotation_left_empty_is_cut() {
    let dir = TempDir::new("torn-rotation");
    let s = open(&dir.0, 1_000_000).await;
    let (before, pos) = write_records(&s).await;
    drop(s);
    let seg = last_segment(&dir.0);
    let bytes = std::fs::read(&seg).expect("read");
    let scan = segment::scan(&bytes);
    let last = scan.records.last().expect("records").0;
    // A crash inside the last batch...
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(last as u64 + 3).expect("cut");
    drop(f);
    // ...after rotations that made their files and failed (a full disk): one with its
    // header, one empty. The records went on in the segment before them.
    let header_only = dir.0.join(segment::name(pos + 1));
    std::fs::write(&header_only, segment::MAGIC).expect("write");
    let empty = dir.0.join(segment::name(pos + 2));
    std::fs::write(&empty, b"").expect("write");
    let s = open(&dir.0, 1_000_000).await;
    assert_eq!(
        s.position(),
        pos,
        "the records before the torn one, and no more"
    );
    assert!(s.state_bytes().expect("bytes") == before, "state differs");
    assert!(
        !header_only.exists() && !empty.exists(),
        "the empty segments are gone"
    );
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), last as u64);
    // Appending goes on in the real last segment, and a restart reads it back.
    one_record(&s, 4).await;
    let after = (s.state_bytes().expect("bytes"), s.position());
    assert_eq!(after.1, pos + 1);
    drop(s);
    assert_eq!(last_segment(&dir.0), seg);
    let s = open(&dir.0, 1_000_000).await;
    assert_eq!(s.position(), pos + 1);
    assert!(
        s.state_bytes().expect("bytes") == after.0,
        "state differs after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_before_the_last_record_refuses_the_start_naming_file_and_offset() {
    let dir = TempDir::new("flip");
    let s = open(&dir.0, 1_000_000).await;
    write_records(&s).await;
    drop(s);
    let seg = last_segment(&dir.0);
    let bytes = std::fs::read(&seg).expect("read");
    let records = segment::scan(&bytes).records;
    // A byte in the middle of the second record's payload, and one in the third
    // record's header.
    for (record, byte) in [
        (1, records[1].1.start + records[1].1.len() / 2),
        (2, records[2].0 + 2),
    ] {
        let copy = TempDir::new("flip-copy");
        copy_dir(&dir.0, &copy.0);
        let mut damaged = bytes.clone();
        damaged[byte] ^= 0x01;
        let seg_copy = last_segment(&copy.0);
        std::fs::write(&seg_copy, &damaged).expect("write");
        let err = match FileStore::open(&copy.0, "n1", rules(), || T0, 1_000_000, Sink::detached())
            .await
        {
            Ok(_) => panic!("a damaged log was loaded (byte {byte})"),
            Err(e) => e.to_string(),
        };
        let offset = records[record].0;
        assert!(
            err.contains(&seg_copy.display().to_string())
                && err.contains(&format!("offset {offset}")),
            "byte {byte}: {err}"
        );
        // Nothing was cut or written.
        assert_eq!(std::fs::read(&seg_copy).expect("read"), damaged);
    }
}

/// Opens a copy of `dir` whose last segment is replaced by `bytes`; the error, if the
/// start is refused.
async fn open_with_last_segment(dir: &Path, bytes: &[u8]) -> (TempDir, Result<FileStore, String>) {
    let copy = TempDir::new("seg-copy");
    copy_dir(dir, &copy.0);
    std::fs::write(last_segment(&copy.0), bytes).expect("write");
    let r = FileStore::open(&copy.0, "n1", rules(), || T0, 1_000_000, Sink::detached())
        .await
        .map_err(|e| e.to_string());
    (copy, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_last_batch_is_cut_and_in_the_batch_before_it_refuses_the_start() {
    let dir = TempDir::new("flip-last");
    let s = open(&dir.0, 1_000_000).await;
    let before = write_records(&s).await;
    drop(s);
    let seg = last_segment(&dir.0);
    let bytes = std::fs::read(&seg).expect("read");
    let scan = segment::scan(&bytes);
    let records = scan.records.clone();
    let (off, payload) = records.last().expect("records").clone();
    // One command at a time: each record is a batch of its own, its marker after it.
    let (prev_off, prev) = records[records.len() - 2].clone();
    // The last batch, damaged: what a power cut inside its sync leaves (its pages reach
    // the disk in any order, its marker's among them). Cut at its start, with the
    // state of the records before it.
    for byte in [
        payload.start,
        payload.start + payload.len() / 2,
        payload.end - 1,
    ] {
        let mut damaged = bytes.clone();
        damaged[byte] ^= 0x01;
        let (copy, r) = open_with_last_segment(&dir.0, &damaged).await;
        let s = r.unwrap_or_else(|e| panic!("byte {byte}: the last batch was not cut: {e}"));
        assert_eq!(s.position(), before.1, "byte {byte}");
        assert!(s.state_bytes().expect("bytes") == before.0, "byte {byte}");
        drop(s);
        let cut = std::fs::read(last_segment(&copy.0)).expect("read");
        assert!(
            cut.len() <= off && cut.len() > prev.end,
            "byte {byte}: cut to {}",
            cut.len()
        );
    }
    // The record before it, damaged: the last batch's marker follows, written only once
    // that record's batch was synced and acknowledged. Refused, naming the offset.
    for byte in [prev.start, prev.end - 1] {
        let mut damaged = bytes.clone();
        damaged[byte] ^= 0x01;
        let (copy, r) = open_with_last_segment(&dir.0, &damaged).await;
        let err = match r {
            Ok(_) => panic!("a flipped acknowledged record was loaded (byte {byte})"),
            Err(e) => e,
        };
        assert!(
            err.contains(&format!("offset {prev_off}")),
            "byte {byte}: {err}"
        );
        assert_eq!(std::fs::read(last_segment(&copy.0)).expect("read"), damaged);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_lost_earlier_page_is_cut_and_refused_only_when_a_later_batch_follows() {
    let dir = TempDir::new("lost-page");
    let s = open(&dir.0, 1_000_000).await;
    write_records(&s).await;
    let after = (s.state_bytes().expect("bytes"), s.position());
    drop(s);
    let seg = last_segment(&dir.0);
    let bytes = std::fs::read(&seg).expect("read");
    let scan = segment::scan(&bytes);
    assert!(scan.damage.is_none());
    // Without the zeros written ahead: the batch below lands where the records end.
    let bytes = bytes[..scan.valid_len].to_vec();
    // A batch of three records being written when the power went: its first page never
    // reached the disk (a hole, zeros), its later pages did, its marker did not.
    let payload = &bytes[scan.records[0].1.clone()];
    let mut batch = Vec::new();
    for _ in 0..3 {
        segment::frame(&mut batch, &[payload, &[b' '; 3000][..]].concat());
    }
    let mut torn = bytes.clone();
    torn.extend_from_slice(&batch);
    let start = bytes.len();
    for x in &mut torn[start..start + 4096] {
        *x = 0;
    }
    let (copy, r) = open_with_last_segment(&dir.0, &torn).await;
    let s = r.expect("a batch without its marker was never acknowledged: cut, not refused");
    assert_eq!(s.position(), after.1);
    assert!(s.state_bytes().expect("bytes") == after.0);
    drop(s);
    assert_eq!(
        std::fs::metadata(last_segment(&copy.0))
            .expect("stat")
            .len(),
        bytes.len() as u64
    );
    // The same batch with its own marker on disk: a power cut inside its sync can leave
    // the marker's page written and the first page not, so the marker proves nothing;
    // never acknowledged, cut likewise.
    segment::end_batch(&mut batch, start as u64, 3);
    let mut torn = bytes.clone();
    torn.extend_from_slice(&batch);
    for x in &mut torn[start..start + 4096] {
        *x = 0;
    }
    let (copy, r) = open_with_last_segment(&dir.0, &torn).await;
    let s = r.expect("a batch whose own marker alone reached the disk: cut, not refused");
    assert_eq!(s.position(), after.1);
    assert!(s.state_bytes().expect("bytes") == after.0);
    drop(s);
    assert_eq!(
        std::fs::metadata(last_segment(&copy.0))
            .expect("stat")
            .len(),
        bytes.len() as u64
    );
    // A later batch whole after it: that one was written only once the damaged one was
    // synced and acknowledged, so the lost page is damage, and the start is refused
    // naming the offset.
    let mut damaged = torn.clone();
    let next = damaged.len();
    let mut later = Vec::new();
    segment::frame(&mut later, payload);
    segment::end_batch(&mut later, next as u64, 1);
    damaged.extend_from_slice(&later);
    let (_copy, r) = open_with_last_segment(&dir.0, &damaged).await;
    match r {
        Ok(_) => panic!("damage inside a batch a later batch follows was loaded"),
        Err(e) => assert!(e.contains(&format!("offset {start}")), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_written_before_batch_markers_is_read_and_continued() {
    let dir = TempDir::new("v1");
    let s = open(&dir.0, 1_000_000).await;
    write_records(&s).await;
    let (state, pos) = (s.state_bytes().expect("bytes"), s.position());
    drop(s);
    // The same records in format 1: no header, no markers.
    let seg = last_segment(&dir.0);
    let bytes = std::fs::read(&seg).expect("read");
    let mut v1 = Vec::new();
    for (_, r) in segment::scan(&bytes).records {
        segment::frame(&mut v1, &bytes[r]);
    }
    std::fs::write(&seg, &v1).expect("write");
    assert_eq!(segment::scan(&v1).format, segment::Format::V1);
    let s = open(&dir.0, 1_000_000).await;
    assert_eq!(s.position(), pos);
    assert!(s.state_bytes().expect("bytes") == state);
    // New records go to a new format-2 segment; the old one is left as it was.
    s.execute(new_task("support", Some("after".into())), at(100))
        .await
        .expect("store")
        .reply
        .expect("create");
    let (state, pos) = (s.state_bytes().expect("bytes"), s.position());
    drop(s);
    assert_eq!(std::fs::read(&seg).expect("read"), v1);
    let newest = last_segment(&dir.0);
    assert_ne!(newest, seg);
    assert_eq!(
        segment::scan(&std::fs::read(&newest).expect("read")).format,
        segment::Format::V2
    );
    let s = open(&dir.0, 1_000_000).await;
    assert_eq!(s.position(), pos);
    assert!(s.state_bytes().expect("bytes") == state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_directory_is_refused_until_the_first_is_gone() {
    let dir = TempDir::new("lock");
    let first = open(&dir.0, 1_000_000).await;
    let err = match FileStore::open(&dir.0, "n1", rules(), || T0, 1_000_000, Sink::detached()).await
    {
        Ok(_) => panic!("two stores on one directory"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use by another switchboard"), "{err}");
    drop(first);
    open(&dir.0, 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_connected_agents_get_their_grace_and_passed_deadlines_fire() {
    let dir = TempDir::new("grace");
    let s = open(&dir.0, 1_000_000).await;
    let profile = rules().agents[0].clone();
    s.execute(
        Command::Connect {
            profile,
            conn: ConnId::new(),
            node: "n1".into(),
        },
        at(0),
    )
    .await
    .expect("store")
    .reply
    .expect("connect");
    s.execute(Command::SetReady { agent: "a1".into() }, at(1))
        .await
        .expect("store")
        .reply
        .expect("ready");
    s.execute(new_task("support", None), at(2))
        .await
        .expect("store")
        .reply
        .expect("create");
    let a1 = AgentId::from("a1");
    let v = s.agent_view(&a1).await.expect("store").expect("a1");
    assert!(v.connected && v.offer.is_some());
    drop(s);
    // Down for a minute: past the offer's deadline.
    let later = at(60_000);
    let s = FileStore::open(&dir.0, "n1", rules(), || later, 1_000_000, Sink::detached())
        .await
        .expect("reopen");
    let v = s.agent_view(&a1).await.expect("store").expect("a1");
    assert!(
        !v.connected,
        "a1 is treated as disconnected after the restart"
    );
    let due = s.next_deadline().await.expect("store").expect("a deadline");
    assert!(
        due <= later,
        "the offer's deadline passed while the hub was down"
    );
    let o = s.expire_due(later).await.expect("store");
    assert_eq!(o.stats.expired, 1, "fired at once");
    // The grace (30 s) counts from the restart, not from before it (the minute down
    // would have spent it): a1 is still logged in, and goes offline at its end.
    let v = s.agent_view(&a1).await.expect("store").expect("a1");
    assert_ne!(
        v.status,
        switchboard::agent::Status::Offline,
        "grace ended early"
    );
    let grace_end = at(60_000 + 30_000);
    assert_eq!(
        s.next_deadline().await.expect("store"),
        Some(grace_end),
        "the grace ends 30 s after the restart"
    );
    s.expire_due(grace_end).await.expect("store");
    let v = s.agent_view(&a1).await.expect("store").expect("a1");
    assert_eq!(
        v.status,
        switchboard::agent::Status::Offline,
        "past its grace"
    );
}

/// A small deterministic generator (xorshift), so that a failing seed can be re-run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random command against the store, using what it shows (offers, tasks).
async fn random_step(s: &FileStore, r: &mut Rng, now: Ts, customers: &mut Vec<CustomerId>) {
    let agents = ["a1", "a2", "a3"];
    let agent = agents[r.below(3) as usize];
    let id = AgentId::from(agent);
    let view = s.agent_view(&id).await.expect("store");
    let cmd = match r.below(14) {
        0 => Command::Connect {
            profile: rules()
                .agents
                .iter()
                .find(|p| &*p.id.0 == agent)
                .cloned()
                .expect("profile"),
            conn: ConnId::new(),
            node: "n1".into(),
        },
        1 | 2 => Command::SetReady { agent: id },
        3 => Command::SetNotReady {
            agent: id,
            reason: "break".into(),
        },
        4 | 5 => {
            let queue = ["support", "sales"][r.below(2) as usize];
            let mut cmd = new_task(
                queue,
                (r.below(2) == 0).then(|| format!("key-{}", r.below(6))),
            );
            // Some sales tasks ask for a level only a3 reaches after a relax step.
            if let Command::CreateTask(t) = &mut cmd {
                if queue == "sales" && r.below(2) == 0 {
                    t.skill_levels.insert("sv".into(), 7);
                }
            }
            cmd
        }
        12 | 13 => {
            // A transfer of whatever the agent has in progress: to a queue (sometimes
            // to its head) or to another agent.
            match view.and_then(|v| v.in_progress.first().map(|t| t.task_id)) {
                Some(task_id) => Command::Transfer {
                    task_id,
                    to: if r.below(2) == 0 {
                        TransferTo::Queue {
                            queue: ["support", "sales"][r.below(2) as usize].into(),
                            priority: None,
                            skills: None,
                            head: r.below(2) == 0,
                        }
                    } else {
                        TransferTo::Agent(AgentId::from(agents[r.below(3) as usize]))
                    },
                    by: Actor::agent(&id),
                },
                None => Command::SetReady { agent: id },
            }
        }
        6 => match view.and_then(|v| v.offer) {
            Some(o) => Command::Accept {
                agent: id,
                offer_id: o.offer_id,
            },
            None => Command::SetReady { agent: id },
        },
        7 => match view.and_then(|v| v.offer) {
            Some(o) => Command::Decline {
                agent: id,
                offer_id: o.offer_id,
            },
            None => Command::Logout { agent: id },
        },
        8 => match view.and_then(|v| v.in_progress.first().map(|t| t.task_id)) {
            Some(task_id) => Command::Complete {
                agent: id,
                task_id,
                wrap_up_code: None,
            },
            None => Command::Disconnect {
                agent: id,
                conn: ConnId::new(),
            },
        },
        9 => {
            s.expire_due(now).await.expect("store");
            return;
        }
        10 => {
            customers.push(new_customer(s, &format!("customer {}", r.next()), now).await);
            return;
        }
        _ => {
            if let Some(c) = customers.get(r.below(customers.len().max(1) as u64) as usize) {
                s.context(
                    ContextCommand::UpdateCustomer {
                        by: crm(),
                        customer_id: *c,
                        base_version: 1 + r.below(3),
                        changes: CustomerFields {
                            name: Some(format!("renamed {}", r.next())),
                            ..Default::default()
                        },
                    },
                    now,
                )
                .await
                .expect("store");
            }
            return;
        }
    };
    s.execute(cmd, now).await.expect("store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_restart_equals_the_state_before_it() {
    // Property: for random command sequences, the state a restart replays (snapshot
    // plus log) equals the state before the stop, compared through the snapshot
    // encoding. Small snapshot intervals put snapshots in the middle of the runs.
    for seed in 1..=12u64 {
        let dir = TempDir::new("replay");
        let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let s = open(&dir.0, 5 + seed * 7).await;
        let mut now = at(0);
        let mut customers = Vec::new();
        for _ in 0..150 {
            now = now.plus(std::time::Duration::from_millis(r.below(4_000)));
            random_step(&s, &mut r, now, &mut customers).await;
        }
        let before = s.state_bytes().expect("bytes");
        let pos = s.position();
        drop(s); // waits for a snapshot being written
        let rec = recover(&dir.0, rules(), false).expect("recover");
        assert_eq!(rec.replica.pos, pos, "seed {seed}");
        let after = rec.replica.state.snapshot_bytes().expect("bytes");
        assert!(after == before, "seed {seed}: the replayed state differs");
        assert!(
            dir.0.join("snapshot").exists(),
            "seed {seed}: no snapshot was written in {pos} records"
        );
    }
}

/// One record: a customer or a task, in turn.
async fn one_record(s: &FileStore, i: u64) {
    if i % 2 == 0 {
        new_customer(s, &format!("Kund {i}"), at(i)).await;
    } else {
        s.execute(new_task("support", Some(format!("k{i}"))), at(i))
            .await
            .expect("store")
            .reply
            .expect("create");
    }
}

/// The first positions of the segments left.
fn segment_firsts(dir: &Path) -> Vec<u64> {
    segment::list(dir)
        .expect("list")
        .into_iter()
        .map(|(first, _)| first)
        .collect()
}

/// One of the store's `/metrics` numbers.
fn gauge(s: &FileStore, name: &str) -> f64 {
    let mut metrics = String::new();
    s.render_metrics(&mut metrics);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .expect("a number")
}

/// Waits until the store has finished a snapshot, and checks that it forked for it.
/// (The fork gauge is set once the fork returns in the parent, which on a busy machine
/// can be after the child has written the file: waited for, not sampled.)
async fn wait_for_forked_snapshot(s: &FileStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gauge(s, "switchboard_store_snapshot_bytes") == 0.0 {
        assert!(std::time::Instant::now() < deadline, "no snapshot in 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        gauge(s, "switchboard_store_snapshot_fork_seconds") > 0.0,
        "the snapshot was not started by a fork"
    );
}

/// Gives a store snapshotting every 50 records its first 50, one at a time (each its
/// own batch, so the snapshot falls exactly at the 50th); the next record's number.
async fn fifty_records(s: &FileStore) -> u64 {
    let mut i = 0;
    while s.position() < 50 {
        one_record(s, i).await;
        i += 1;
    }
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_snapshot_and_one_built_from_the_log_hold_the_state_at_their_position() {
    // The live store writes its snapshot from a forked copy of the replica; `compact`
    // (the way when a fork fails) builds one from the previous snapshot and the log.
    // Each must be the state at its position, byte for byte. One record at a time, so
    // every batch is one record and the snapshot falls exactly at the 50th.
    let dir = TempDir::new("forked");
    let s = open(&dir.0, 50).await;
    let mut i = fifty_records(&s).await;
    let at_50 = s.state_bytes().expect("bytes");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let snap = loop {
        if let Some(l) = snapshot::read(&dir.0).expect("a whole snapshot") {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot in 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(snap.pos, 50);
    assert!(
        snap.bytes == at_50,
        "the forked snapshot is not the state at 50"
    );
    wait_for_forked_snapshot(&s).await;
    assert_eq!(
        gauge(&s, "switchboard_store_snapshot_rebuilds_total"),
        0.0,
        "written by the child, not built again from the log"
    );
    // Records the child never saw, while the parent went on.
    while s.position() < 80 {
        one_record(&s, i).await;
        i += 1;
    }
    let at_80 = s.state_bytes().expect("bytes");
    drop(s);
    assert_eq!(
        segment_firsts(&dir.0),
        [51],
        "the forked snapshot's segments were left"
    );
    let size = compact(&dir.0, rules(), 80).expect("compact");
    assert!(size.is_some(), "the snapshot at 50 does not cover 80");
    let snap = snapshot::read(&dir.0).expect("read").expect("a snapshot");
    assert_eq!(snap.pos, 80);
    assert!(
        snap.bytes == at_80,
        "the snapshot built from the log is not the state at 80"
    );
    assert!(
        segment_firsts(&dir.0).is_empty(),
        "the snapshot's segments were left"
    );
    // And a store opened on it starts from there with nothing to replay.
    let rec = recover(&dir.0, rules(), false).expect("recover");
    assert_eq!((rec.replica.pos, rec.replayed), (80, 0));
}

/// Records one at a time until the store has put its next snapshot in place and removed
/// the segments it covers; the record number after them.
async fn until_next_snapshot(s: &FileStore, dir: &Path, mut i: u64) -> u64 {
    let last = snapshot::read(dir).expect("read").map_or(0, |l| l.pos);
    while s.position() < last + 50 {
        one_record(s, i).await;
        i += 1;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pos = snapshot::read(dir).expect("read").map_or(0, |l| l.pos);
        if pos > last && segment_firsts(dir).iter().all(|f| *f > pos) {
            return i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new snapshot in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_whole_at_its_first_try_when_the_hub_snapshots_while_it_reads() {
    // Under sustained load the hub snapshots every few seconds and removes the segments
    // the new snapshot covers, while a backup of a large directory takes longer than
    // that to read. Here a snapshot lands in every attempt, between the backup's first
    // read and its last: a copy that read the files at different times would hold an
    // old snapshot and no segment continuing it, every time.
    let dir = TempDir::new("backup-src");
    let out = TempDir::new("backup-dst");
    let s = open(&dir.0, 50).await;
    let mut i = fifty_records(&s).await;
    wait_for_forked_snapshot(&s).await;
    while s.position() < 80 {
        one_record(&s, i).await;
        i += 1;
    }
    let (go, mut went) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (src, dst) = (dir.0.clone(), out.0.join("copy"));
    let copy = tokio::task::spawn_blocking(move || {
        let mut between = move || {
            go.send(()).expect("the test");
            wait.recv().expect("the test");
        };
        backup::copy_with(&src, &dst, rules(), &mut between)
    });
    let mut landed = 0;
    while went.recv().await.is_some() {
        i = until_next_snapshot(&s, &dir.0, i).await;
        landed += 1;
        done.send(()).expect("the backup");
    }
    let b = copy.await.expect("join").expect("a backup");
    assert_eq!((b.attempts, landed), (1, 1), "taken again");
    // The copy is the state at some position of the original's log, at least the one
    // the backup began at, and starts on its own.
    assert!(b.position >= 80, "the copy ends at {}", b.position);
    let copied = recover(&out.0.join("copy"), rules(), false).expect("the copy replays");
    assert_eq!(copied.replica.pos, b.position);
    assert_eq!(b.position, s.position(), "the copy stops short");
    assert!(
        copied.replica.state.snapshot_bytes().expect("bytes") == s.state_bytes().expect("bytes"),
        "the copy is not the state at its position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_which_the_hub_started_again_with_other_rules_is_taken_again() {
    // The hub stops, snapshots, and starts with other rules (a new `rules` file, put in
    // place by a rename) while a backup reads: a copy of the old records with the new
    // rules would replay them by rules they were not decided by, in silence.
    let dir = TempDir::new("backup-rules");
    let out = TempDir::new("backup-rules-dst");
    let s = open(&dir.0, 1_000_000).await;
    write_records(&s).await;
    drop(s);
    let rules_file = dir.0.join(switchboard::store::file::RULES_FILE);
    let old = std::fs::read(&rules_file).expect("the rules file");
    let mut calls = 0;
    let mut between = || {
        calls += 1;
        if calls == 1 {
            let tmp = dir.0.join("rules.tmp");
            std::fs::write(&tmp, b"other rules").expect("write");
            std::fs::rename(&tmp, &rules_file).expect("rename");
        }
    };
    let dst = out.0.join("copy");
    let b = backup::copy_with(&dir.0, &dst, rules(), &mut between).expect("a backup");
    assert_eq!(b.attempts, 2, "the copy with the changed rules was kept");
    assert_eq!(
        std::fs::read(dst.join(switchboard::store::file::RULES_FILE)).expect("copied"),
        b"other rules"
    );
    assert_ne!(old, b"other rules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_writer_that_fails_is_replaced_by_the_build_from_the_log() {
    // Every child is killed at once (a limit of zero): the snapshot is still written,
    // from the log, and is the state at its position.
    let dir = TempDir::new("killed");
    let s = open(&dir.0, 50)
        .await
        .with_forked_limit(std::time::Duration::ZERO);
    fifty_records(&s).await;
    let at_50 = s.state_bytes().expect("bytes");
    wait_for_forked_snapshot(&s).await;
    let snap = snapshot::read(&dir.0).expect("read").expect("a snapshot");
    assert_eq!(snap.pos, 50);
    assert!(snap.bytes == at_50, "the snapshot is not the state at 50");
    assert_eq!(
        segment_firsts(&dir.0),
        [51],
        "the covered segments were left"
    );
    // Built from the log, not by the child (whose snapshot at 50 would read the same).
    assert_eq!(gauge(&s, "switchboard_store_snapshot_rebuilds_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stopped_while_its_snapshot_is_written_waits_for_it() {
    // The forked writer dies with the thread that forked it (none may outlive a killed
    // hub), so a stop must not end that thread before the writer is done.
    let dir = TempDir::new("stopped");
    let s = open(&dir.0, 50).await;
    fifty_records(&s).await;
    drop(s);
    let snap = snapshot::read(&dir.0)
        .expect("a whole snapshot")
        .expect("the snapshot at 50 was written");
    assert_eq!(snap.pos, 50);
}

/// Names (and versions) of the customers `query` finds through the store's read path.
async fn found(s: &dyn Store, query: &str) -> Vec<(String, u64)> {
    let cmd = ContextCommand::Search {
        query: query.into(),
        limit: 50,
    };
    match s.context_read(cmd, at(9)).await.expect("store").reply {
        Ok(Reply::Context(switchboard::context::ContextReply::Customers(v))) => {
            v.into_iter().map(|c| (c.name, c.version)).collect()
        }
        other => panic!("search: {other:?}"),
    }
}

/// A restart replays the log tail without keeping the search index up (each change
/// to it is a search per posting list), then builds it once: what it finds is what
/// the log says, renames after the snapshot included, before and after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_search_finds_what_the_snapshot_and_the_replayed_tail_hold() {
    let dir = TempDir::new("search");
    let s = open(&dir.0, 25).await;
    let mut ids = Vec::new();
    for i in 0..60u64 {
        ids.push(new_customer(&s, &format!("Åsa {i:02} Öberg"), at(i)).await);
    }
    // Renamed across the snapshots and in the tail after the last one.
    for (k, id) in ids.iter().enumerate().filter(|(k, _)| k % 3 == 0) {
        let o = s
            .context(
                ContextCommand::UpdateCustomer {
                    by: crm(),
                    customer_id: *id,
                    base_version: 1,
                    changes: CustomerFields {
                        name: Some(format!("Bo {k:02} Lindqvist")),
                        ..Default::default()
                    },
                },
                at(100),
            )
            .await
            .expect("store");
        assert!(o.reply.is_ok(), "{:?}", o.reply);
    }
    let queries = ["oberg", "lindqvist", "bo 5", "asa 1", "3"];
    let mut before = Vec::new();
    for q in queries {
        before.push(found(&s, q).await);
    }
    assert_eq!(before[0].len(), 40);
    assert_eq!(before[1].len(), 20);
    drop(s);
    assert!(dir.0.join("snapshot").exists(), "no snapshot was written");
    let s = open(&dir.0, 25).await;
    for (q, want) in queries.iter().zip(&before) {
        assert_eq!(&found(&s, q).await, want, "query {q:?} after the restart");
    }
    // And the rebuilt index is kept up again.
    new_customer(&s, "Zora Öberg", at(200)).await;
    assert_eq!(found(&s, "zora").await, [("Zora Öberg".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_record_this_version_cannot_read_refuses_the_start_naming_file_and_offset() {
    let dir = TempDir::new("unreadable");
    let s = open(&dir.0, 1_000_000).await;
    write_records(&s).await;
    drop(s);
    let seg = last_segment(&dir.0);
    let bytes = std::fs::read(&seg).expect("read");
    let valid = segment::scan(&bytes).valid_len;
    // A batch whose record and marker check out, holding what no entry decodes from
    // (as one written by a newer version would be to this one).
    let mut batch = Vec::new();
    segment::frame(&mut batch, b"\xc1 not an entry of this version");
    segment::end_batch(&mut batch, valid as u64, 1);
    let mut written = bytes[..valid].to_vec();
    written.extend_from_slice(&batch);
    let (_copy, r) = open_with_last_segment(&dir.0, &written).await;
    let err = match r {
        Ok(_) => panic!("an acknowledged record was skipped"),
        Err(e) => e,
    };
    assert!(
        err.contains(&format!("offset {valid}")) && err.contains("cannot be read"),
        "{err}"
    );
}

/// `CFG` without the `sales` queue (and its agent).
const CFG_NO_SALES: &str = r#"
[routing]
offer_timeout_secs = 15
wrap_up_secs = 2
reconnect_grace_secs = 30

[[queues]]
id = "support"

[[agents]]
id = "a1"
queues = ["support"]

[[agents]]
id = "a2"
queues = ["support"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_rules_are_refused_while_records_wait_for_replay_and_free_after_a_clean_stop() {
    let dir = TempDir::new("rules");
    let no_sales = || Arc::new(Config::parse(CFG_NO_SALES).expect("config").rules());
    let open_with = |rules: Arc<Rules>| {
        FileStore::open(&dir.0, "n1", rules, || T0, 1_000_000, Sink::detached())
    };
    let s = open(&dir.0, 1_000_000).await;
    let task = match s
        .execute(new_task("sales", None), at(1))
        .await
        .expect("store")
        .reply
    {
        Ok(Reply::Created { task, .. }) => task.task_id,
        other => panic!("create: {other:?}"),
    };
    // A crash: the create waits in the log, decided by rules that had `sales`.
    drop(s);
    let err = match open_with(no_sales()).await {
        Ok(_) => panic!("records replayed by other rules than decided them"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("decided by other rules") && err.contains("stop the hub cleanly"),
        "{err}"
    );
    // With the rules it was decided by, then a clean stop: a snapshot of everything.
    let s = open_with(rules()).await.expect("the same rules");
    s.stop();
    drop(s);
    let s = open_with(no_sales()).await.expect("nothing to replay");
    let mut kept = false;
    s.read_state(&mut |st| kept = st.book.task(task).is_some());
    assert!(kept, "the task created in `sales` is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_agents_first_login_was_offline_since_the_log_began_not_1970() {
    let dir = TempDir::new("since");
    let s = open(&dir.0, 1_000_000).await;
    // The log's first entry.
    new_customer(&s, "Ana Araújo", at(5)).await;
    let profile = rules().agents[0].clone();
    s.execute(
        Command::Connect {
            profile,
            conn: ConnId::new(),
            node: "n1".into(),
        },
        at(10),
    )
    .await
    .expect("store")
    .reply
    .expect("connect");
    s.execute(Command::SetReady { agent: "a1".into() }, at(11))
        .await
        .expect("store")
        .reply
        .expect("ready");
    let mut first = None;
    s.read_state(&mut |st| {
        first = st
            .events
            .after(0)
            .expect("held")
            .iter()
            .find_map(|e| match &e.data {
                switchboard::events::EventData::AgentStateChanged { previous_since, .. } => {
                    Some(*previous_since)
                }
                _ => None,
            });
    });
    assert_eq!(first, Some(at(5)), "offline since the log began");
}

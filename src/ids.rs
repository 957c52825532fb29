//! Identifiers and the small vocabulary every module shares.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// An agent's id, as configured and as carried in its token's `sub` claim.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub Arc<str>);

/// A queue's id, as configured.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueId(pub Arc<str>);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                $name(random_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A task's id.
    TaskId
);
uuid_id!(
    /// One offer of one task to one agent. A re-offer of the same task gets a new id.
    OfferId
);
uuid_id!(
    /// A customer record.
    CustomerId
);
uuid_id!(
    /// A request (case) of a customer.
    RequestId
);
uuid_id!(
    /// An activity: one interaction, a task once accepted.
    ActivityId
);
uuid_id!(
    /// A quick note on a customer's or a request's timeline.
    NoteId
);
uuid_id!(
    /// One websocket connection. An agent's record remembers which connection is its own,
    /// so that the close of a connection that was taken over changes nothing.
    ConnId
);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AgentId {
    fn from(s: &str) -> Self {
        AgentId(Arc::from(s))
    }
}

impl From<&str> for QueueId {
    fn from(s: &str) -> Self {
        QueueId(Arc::from(s))
    }
}

/// The medium of a task. Each has its own per-agent capacity; voice is one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A phone call.
    Voice,
    /// A web or messaging chat.
    Chat,
    /// An email.
    Email,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 3] = [Channel::Voice, Channel::Chat, Channel::Email];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the books take new ids from.
///
/// Random by default. When several nodes apply the same log of commands (the Redis
/// store), each entry reseeds the source from the entry's position, so that every
/// replica mints the same ids for the same entry.
#[derive(Clone, Debug)]
pub struct Ids {
    seed: Option<u64>,
    n: u64,
}

impl Default for Ids {
    fn default() -> Self {
        Ids::random()
    }
}

/// A random UUID v4 from the operating system's generator, read 4 KiB at a time.
///
/// `Uuid::new_v4` asks the kernel for 16 bytes on every call: three `getrandom` system
/// calls per routed task (its id, its offer's, its activity's): 30,000 of the 175,000
/// system calls of 10,000 tasks. The bytes are the same kernel CSPRNG's, taken 256
/// ids' worth at once into a per-thread buffer, each byte used once. Falls back to
/// `Uuid::new_v4` if the kernel call fails.
pub fn random_v4() -> uuid::Uuid {
    use std::cell::RefCell;
    const BUF: usize = 4096;
    struct Pool {
        bytes: [u8; BUF],
        at: usize,
    }
    thread_local! {
        static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; BUF], at: BUF }) };
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.at + 16 > BUF {
            let mut filled = 0;
            while filled < BUF {
                let rest = &mut p.bytes[filled..];
                // SAFETY: the pointer and length describe `rest`, a live, writable slice.
                let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
                if n <= 0 {
                    if n < 0
                        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                    {
                        continue;
                    }
                    return uuid::Uuid::new_v4();
                }
                filled += n as usize;
            }
            p.at = 0;
        }
        let at = p.at;
        let mut b = [0u8; 16];
        b.copy_from_slice(&p.bytes[at..at + 16]);
        p.at = at + 16;
        uuid::Builder::from_random_bytes(b).into_uuid()
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Ids {
    /// Fresh random ids (UUID v4).
    pub fn random() -> Ids {
        Ids { seed: None, n: 0 }
    }

    /// Ids derived from `seed`, the same on every replica.
    pub fn seeded(seed: u64) -> Ids {
        Ids {
            seed: Some(seed),
            n: 0,
        }
    }

    /// Starts a new deterministic sequence (before applying one log entry).
    pub fn reseed(&mut self, seed: u64) {
        self.seed = Some(seed);
        self.n = 0;
    }

    /// The next id.
    pub fn mint(&mut self) -> uuid::Uuid {
        match self.seed {
            None => random_v4(),
            Some(seed) => {
                let a = splitmix(seed ^ self.n.wrapping_mul(0x2545_F491_4F6C_DD1D));
                let b = splitmix(a ^ self.n);
                self.n += 1;
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&a.to_le_bytes());
                bytes[8..].copy_from_slice(&b.to_le_bytes());
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
        }
    }
}

/// Serializes a map in key order, so that equal maps encode to equal bytes (a
/// hash map iterates in an order of its own, different in every process).
pub fn sorted<'a, M, K, V, S>(m: &'a M, s: S) -> Result<S::Ok, S::Error>
where
    &'a M: IntoIterator<Item = (&'a K, &'a V)>,
    K: Ord + serde::Serialize + 'a,
    V: serde::Serialize + 'a,
    S: serde::Serializer,
{
    let mut entries: Vec<(&K, &V)> = m.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    s.collect_map(entries)
}

#[cfg(test)]
mod tests {
    use super::Ids;

    #[test]
    fn seeded_ids_repeat_and_differ_by_seed() {
        let mut a = Ids::seeded(7);
        let mut b = Ids::seeded(7);
        let x: Vec<_> = (0..3).map(|_| a.mint()).collect();
        let y: Vec<_> = (0..3).map(|_| b.mint()).collect();
        assert_eq!(x, y);
        assert_ne!(x[0], x[1]);
        assert_eq!(x[0].get_version_num(), 4);
        assert_ne!(Ids::seeded(8).mint(), x[0]);
    }

    #[test]
    fn random_ids_are_v4_and_distinct_across_refills_and_threads() {
        // 256 ids use one 4 KiB read: 1,000 cross three refills on each thread.
        let run = || (0..1000).map(|_| super::random_v4()).collect::<Vec<_>>();
        let other = std::thread::spawn(run);
        let mut all = run();
        all.extend(other.join().expect("thread"));
        let distinct: std::collections::HashSet<_> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 2000, "an id repeated");
        assert!(
            all.iter()
                .all(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122)
        );
        assert!(all.iter().all(|u| !u.is_nil()));
    }
}

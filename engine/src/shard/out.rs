//! What a shard core asks its runtime to do: a queue of actions, and one byte arena the
//! actions' payloads (journal records, CDR lines, answers) are written into. Both are
//! reused: after warm-up nothing here allocates.

use crate::segment::RecordKind;

use super::{ConnRef, MeshMsg};

/// Where an action's bytes are in `Out`'s arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    at: u32,
    len: u32,
}

impl Span {
    /// The bytes in the arena `Out::drain` hands out.
    pub fn of(self, arena: &[u8]) -> &[u8] {
        &arena[self.at as usize..(self.at + self.len) as usize]
    }
}

/// One thing for the runtime to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Append a record to the shard's log; `seq` is the sequence it gets (the runtime's
    /// log must agree: a mismatch is a broken invariant and stops the shard).
    Append {
        kind: RecordKind,
        seq: u64,
        at: Span,
    },
    /// Queue an answer on a connection of this shard. A connection's queued bytes go to
    /// its socket only after the `WriteOut` or `Sync` that follows: an answer never
    /// leaves before what it depends on is in the log.
    Answer { to: ConnRef, at: Span },
    /// Send to another shard over the mesh (in order per destination).
    Post { to: u16, msg: MeshMsg },
    /// Write out what the log holds in memory (from then on it survives a crash of
    /// the process).
    WriteOut,
    /// Sync the log to disk (it survives a power loss).
    Sync,
}

/// The action queue and its arena.
#[derive(Debug)]
pub struct Out {
    actions: Vec<Action>,
    /// Always at its full length (zeroed once); `used` is the part the actions refer to.
    bytes: Vec<u8>,
    used: usize,
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

impl Out {
    pub fn new() -> Out {
        Out {
            actions: Vec::with_capacity(1024),
            bytes: vec![0u8; 256 * 1024],
            used: 0,
        }
    }

    /// Writes at most `room` bytes with `f` (which says how many it wrote) into the arena.
    pub(crate) fn write<E>(
        &mut self,
        room: usize,
        f: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Span, E> {
        let need = self.used + room;
        if need > self.bytes.len() {
            let len = need.max(2 * self.bytes.len());
            self.bytes.resize(len, 0);
        }
        let n = f(&mut self.bytes[self.used..need])?.min(room);
        let span = Span {
            at: self.used as u32,
            len: n as u32,
        };
        self.used += n;
        Ok(span)
    }

    /// Copies `b` into the arena.
    pub(crate) fn copy(&mut self, b: &[u8]) -> Span {
        let r: Result<Span, ()> = self.write(b.len(), |buf| {
            buf[..b.len()].copy_from_slice(b);
            Ok(b.len())
        });
        match r {
            Ok(s) => s,
            Err(()) => unreachable!("copying cannot fail"),
        }
    }

    pub(crate) fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// The bytes of `span`.
    pub fn bytes(&self, span: Span) -> &[u8] {
        span.of(&self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// The actions in order, each with the arena its spans point into; the queue and the
    /// arena are empty afterwards.
    pub fn drain(&mut self, mut f: impl FnMut(Action, &[u8])) {
        let arena = &self.bytes;
        for a in self.actions.drain(..) {
            f(a, arena);
        }
        self.used = 0;
    }

    /// The actions, for tests and the simulation (the arena stays until `clear`).
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    pub fn clear(&mut self) {
        self.actions.clear();
        self.used = 0;
    }
}

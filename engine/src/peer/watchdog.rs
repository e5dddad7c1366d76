//! The RFC 3539 §3.4.1 watchdog of one connection (DWR/DWA), sans-IO: events and the
//! time go in, the actions to take come out.

/// RFC 3539 §3.4 watchdog states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogState {
    Initial,
    Okay,
    Suspect,
    Down,
    Reopen,
}

/// What the watchdog asks for after an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchdogActions {
    pub send_dwr: bool,
    pub close: bool,
    pub attempt_open: bool,
    pub failover: bool,
    pub failback: bool,
    /// In REOPEN, a non-DWA message is thrown away.
    pub throwaway: bool,
}

/// The RFC 3539 §3.4.1 algorithm, with time passed in.
#[derive(Clone, Debug)]
pub struct Watchdog {
    state: WatchdogState,
    pending: bool,
    num_dwa: i32,
    deadline_ms: u64,
    tw_ms: u64,
    jitter_ms: u64,
    rng: u64,
}

impl Watchdog {
    pub fn new(tw_ms: u64, jitter_ms: u64, seed: u64) -> Watchdog {
        Watchdog {
            state: WatchdogState::Initial,
            pending: false,
            num_dwa: 0,
            deadline_ms: u64::MAX,
            tw_ms,
            jitter_ms,
            rng: seed | 1,
        }
    }

    pub fn state(&self) -> WatchdogState {
        self.state
    }
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// SetWatchdog(): Tw = TwInit ± jitter.
    fn set(&mut self, now_ms: u64) {
        // xorshift64: deterministic per seed, good enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = 2 * self.jitter_ms + 1;
        let jitter = (self.rng % span) as i64 - self.jitter_ms as i64;
        let tw = (self.tw_ms as i64 + jitter).max(1) as u64;
        self.deadline_ms = now_ms.saturating_add(tw);
    }

    pub fn connection_up(&mut self, now_ms: u64) -> WatchdogActions {
        let mut a = WatchdogActions::default();
        match self.state {
            WatchdogState::Initial => {
                self.set(now_ms);
                self.state = WatchdogState::Okay;
            }
            WatchdogState::Down => {
                self.num_dwa = 0;
                a.send_dwr = true;
                self.set(now_ms);
                self.pending = true;
                self.state = WatchdogState::Reopen;
            }
            _ => {}
        }
        a
    }

    pub fn connection_down(&mut self, now_ms: u64) -> WatchdogActions {
        let mut a = WatchdogActions::default();
        match self.state {
            WatchdogState::Okay => {
                a.failover = true;
                self.set(now_ms);
                self.state = WatchdogState::Down;
            }
            WatchdogState::Suspect | WatchdogState::Reopen => {
                a.close = true;
                self.set(now_ms);
                self.state = WatchdogState::Down;
            }
            WatchdogState::Initial | WatchdogState::Down => {}
        }
        a
    }

    pub fn receive_dwa(&mut self, now_ms: u64) -> WatchdogActions {
        let mut a = WatchdogActions::default();
        match self.state {
            WatchdogState::Okay => {
                self.pending = false;
                self.set(now_ms);
            }
            WatchdogState::Suspect => {
                self.pending = false;
                a.failback = true;
                self.set(now_ms);
                self.state = WatchdogState::Okay;
            }
            WatchdogState::Reopen => {
                self.pending = false;
                self.num_dwa += 1;
                if self.num_dwa >= 3 {
                    a.failback = true;
                    self.state = WatchdogState::Okay;
                }
            }
            WatchdogState::Initial | WatchdogState::Down => {}
        }
        a
    }

    pub fn receive_other(&mut self, now_ms: u64) -> WatchdogActions {
        let mut a = WatchdogActions::default();
        match self.state {
            WatchdogState::Okay => self.set(now_ms),
            WatchdogState::Suspect => {
                a.failback = true;
                self.set(now_ms);
                self.state = WatchdogState::Okay;
            }
            WatchdogState::Reopen => a.throwaway = true,
            WatchdogState::Initial | WatchdogState::Down => {}
        }
        a
    }

    pub fn timer_expired(&mut self, now_ms: u64) -> WatchdogActions {
        let mut a = WatchdogActions::default();
        if now_ms < self.deadline_ms {
            return a;
        }
        match self.state {
            WatchdogState::Okay if !self.pending => {
                a.send_dwr = true;
                self.set(now_ms);
                self.pending = true;
            }
            WatchdogState::Okay => {
                a.failover = true;
                self.set(now_ms);
                self.state = WatchdogState::Suspect;
            }
            WatchdogState::Suspect => {
                a.close = true;
                self.set(now_ms);
                self.state = WatchdogState::Down;
            }
            WatchdogState::Down => {
                a.attempt_open = true;
                self.set(now_ms);
            }
            WatchdogState::Reopen if !self.pending => {
                a.send_dwr = true;
                self.set(now_ms);
                self.pending = true;
            }
            WatchdogState::Reopen if self.num_dwa < 0 => {
                a.close = true;
                self.set(now_ms);
                self.state = WatchdogState::Down;
            }
            WatchdogState::Reopen => {
                self.num_dwa = -1;
                self.set(now_ms);
            }
            WatchdogState::Initial => self.deadline_ms = u64::MAX,
        }
        a
    }
}

//! A balance with reservations, in integer micro-units (or units, for packages).
//!
//! `available` is what may still be granted; `reserved` is what open reservations hold;
//! `settled` is what has been charged. Conserved at every step:
//! `available + reserved + settled == provisioned + credited`.
//! `available` may go below zero only by settling usage beyond a reservation (overuse
//! is charged, never refused after the fact); new reservations never take it below
//! `-floor`.

/// One balance: a company's money, or a package's units.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Bucket {
    pub available: i64,
    pub reserved: i64,
    pub settled: i64,
    /// Provisioned plus everything credited (top-ups, refunds).
    pub credited: i64,
}

/// A refused operation: the bucket is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerError {
    /// Settling or releasing more than is reserved: a programming error upstream.
    NotReserved { reserved: i64, asked: i64 },
    /// A negative amount.
    Negative,
    /// The arithmetic would overflow.
    Overflow,
}

impl Bucket {
    /// A bucket holding `amount`.
    pub fn new(amount: i64) -> Bucket {
        Bucket {
            available: amount,
            reserved: 0,
            settled: 0,
            credited: amount,
        }
    }

    /// Reserves up to `want`, never taking `available` below `-floor` (the credit
    /// limit; 0 for none). Returns what was reserved (possibly 0).
    pub fn reserve(&mut self, want: i64, floor: i64) -> Result<i64, LedgerError> {
        if want < 0 || floor < 0 {
            return Err(LedgerError::Negative);
        }
        let room = self
            .available
            .checked_add(floor)
            .ok_or(LedgerError::Overflow)?
            .max(0);
        let got = want.min(room);
        let available = self
            .available
            .checked_sub(got)
            .ok_or(LedgerError::Overflow)?;
        let reserved = self
            .reserved
            .checked_add(got)
            .ok_or(LedgerError::Overflow)?;
        self.available = available;
        self.reserved = reserved;
        Ok(got)
    }

    /// Settles a reservation of `reservation` with `used` actually consumed: the
    /// unused part returns to `available`, usage beyond it is charged from `available`.
    pub fn settle(&mut self, reservation: i64, used: i64) -> Result<(), LedgerError> {
        if reservation < 0 || used < 0 {
            return Err(LedgerError::Negative);
        }
        if reservation > self.reserved {
            return Err(LedgerError::NotReserved {
                reserved: self.reserved,
                asked: reservation,
            });
        }
        let available = self
            .available
            .checked_add(reservation)
            .and_then(|a| a.checked_sub(used))
            .ok_or(LedgerError::Overflow)?;
        let settled = self
            .settled
            .checked_add(used)
            .ok_or(LedgerError::Overflow)?;
        // reservation <= reserved, checked above.
        self.reserved -= reservation;
        self.available = available;
        self.settled = settled;
        Ok(())
    }

    /// Releases a reservation unused (session ended, supervision timeout).
    pub fn release(&mut self, reservation: i64) -> Result<(), LedgerError> {
        self.settle(reservation, 0)
    }

    /// Credits `amount` (a top-up or a refund).
    pub fn credit(&mut self, amount: i64) -> Result<(), LedgerError> {
        if amount < 0 {
            return Err(LedgerError::Negative);
        }
        let available = self
            .available
            .checked_add(amount)
            .ok_or(LedgerError::Overflow)?;
        let credited = self
            .credited
            .checked_add(amount)
            .ok_or(LedgerError::Overflow)?;
        self.available = available;
        self.credited = credited;
        Ok(())
    }

    /// The conservation invariant.
    pub fn is_conserved(&self) -> bool {
        i128::from(self.available) + i128::from(self.reserved) + i128::from(self.settled)
            == i128::from(self.credited)
    }
}

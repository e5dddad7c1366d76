//! Changes from the operations endpoint that go beyond top-ups and packages bought:
//! provisioning objects upserted or removed (`provision`), corrections to a company's
//! money (`adjust`), and the idempotency keys the endpoint answers retries from
//! (`key`, `record_key`). Each is journaled before it is confirmed (`confirm`), so
//! that replay makes it again.

use super::{Out, ShardCore};
use crate::charging::engine::{Applied, KeyEntry, OpKey, KEYS_WINDOW_MS};
use crate::charging::invariant::broken;
use crate::journal::{AdjustRecord, CompanyRecord, Control, PackageRecord};
use crate::provision::parse_change;
use crate::segment::RecordKind;

/// Longest provisioning line taken, in bytes.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Longest reason of an adjustment, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;

/// Why an idempotency key cannot be used again.
pub const KEY_REUSED: &str = "the Idempotency-Key was used with another body";

impl ShardCore {
    /// One provisioning object (a line in the dataset format, `type` included), applied
    /// as an upsert by its key (or a subscriber's removal), or why not (nothing changed
    /// then). Every shard is given every change, in the same order, and judges it alike;
    /// the shard that owns the company a change gives money or units to writes the
    /// balance record billing reads. Follow with `confirm`.
    pub fn provision(
        &mut self,
        now_ms: u64,
        line: &[u8],
        out: &mut Out,
    ) -> Result<Applied, String> {
        if line.len() > LINE_BYTES_MAX {
            return Err(format!("the line is longer than {LINE_BYTES_MAX} bytes"));
        }
        let change = parse_change(&mut line.to_vec(), 1, None).map_err(|errors| {
            let list: Vec<String> = errors
                .iter()
                .map(|e| match e.field {
                    Some(f) => format!("{f}: {}", e.message),
                    None => e.message.clone(),
                })
                .collect();
            list.join("; ")
        })?;
        let applied = self.engine.provision(&change)?;
        let credited_here = match applied {
            Applied::Unchanged => return Ok(applied),
            Applied::Changed => None,
            Applied::Credited {
                company,
                package,
                amount,
            } => (self.engine.owner_of(company) == self.config.shard)
                .then_some((company, package, amount)),
        };
        match credited_here {
            None => {
                let at = out.copy(
                    &Control::Provision {
                        line: line.to_vec(),
                    }
                    .encode(),
                );
                self.append(RecordKind::Control, at, out);
            }
            Some((c, package, amount)) => {
                let company = self.engine.company_id(c).to_string();
                let (seq, shard, run) = (self.next_seq, self.config.shard, self.config.run);
                let written = match package {
                    None => {
                        let rec = CompanyRecord {
                            seq,
                            shard,
                            run,
                            ts_ms: now_ms,
                            company: &company,
                            amount,
                            object: line,
                        };
                        out.write(rec.room(), |b| rec.encode(b))
                    }
                    Some(_) => {
                        let rec = PackageRecord {
                            seq,
                            shard,
                            run,
                            ts_ms: now_ms,
                            company: &company,
                            package: line,
                            added: u64::try_from(amount).ok(),
                        };
                        out.write(rec.room(), |b| rec.encode(b))
                    }
                };
                match written {
                    Ok(at) => self.append(RecordKind::Balance, at, out),
                    Err(e) => broken("a provisioning record fits its room", &company, &e),
                }
            }
        }
        self.metrics.provisioned += 1;
        Ok(applied)
    }

    /// A correction of `amount` micro-units (either sign, not 0) to company `id`'s
    /// money, made and written as a balance record on the company's owner shard
    /// (`Ok(true)`; `Ok(false)` on the others), or why not. Under an idempotency key
    /// already used, nothing is made again. Follow with `confirm`.
    pub fn adjust(
        &mut self,
        now_ms: u64,
        id: &str,
        amount: i64,
        reason: &str,
        op: Option<OpKey>,
        out: &mut Out,
    ) -> Result<bool, String> {
        let Some(c) = self.engine.company_by_id(id) else {
            return Err(format!("no company {id:?}"));
        };
        if amount == 0 {
            return Err("amount: a non-zero integer (micro-units) is needed".into());
        }
        if reason.len() > REASON_BYTES_MAX {
            return Err(format!("reason: at most {REASON_BYTES_MAX} bytes"));
        }
        if self.engine.owner_of(c) != self.config.shard {
            return Ok(false);
        }
        if self.seen(op)? {
            return Ok(true);
        }
        let (money, _) = self.engine.balance(c);
        let balance = money
            .available
            .checked_add(amount)
            .ok_or("the balance would overflow")?;
        let rec = AdjustRecord {
            seq: self.next_seq,
            shard: self.config.shard,
            run: self.config.run,
            ts_ms: now_ms,
            company: id,
            amount,
            reason,
            balance,
            op,
        };
        // The record first: a correction that cannot be recorded is not made.
        let at = out
            .write(rec.room(), |b| rec.encode(b))
            .map_err(|_| "the record does not fit".to_string())?;
        if !self.engine.adjust(c, amount)? {
            return Err("not the company's owner shard".into());
        }
        self.append(RecordKind::Balance, at, out);
        if let Some(op) = op {
            self.engine
                .keys_mut()
                .insert(op, now_ms, 0, Vec::new(), KEYS_WINDOW_MS);
        }
        self.metrics.adjustments += 1;
        Ok(true)
    }

    /// Whether the change under `op` was made already (its balance record is in the
    /// log), or an error when the key came with another body.
    pub(super) fn seen(&self, op: Option<OpKey>) -> Result<bool, String> {
        let Some(op) = op else { return Ok(false) };
        match self.engine.keys().get(op.key) {
            Some(e) if e.key.body != op.body => Err(KEY_REUSED.into()),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// The entry of idempotency key `key`, if used within the window.
    pub fn key(&self, key: u64) -> Option<KeyEntry> {
        self.engine.keys().get(key).cloned()
    }

    /// Records the answer given under an idempotency key, journaled (so that a retry
    /// after a restart gets it too). Follow with `confirm`.
    pub fn record_key(
        &mut self,
        now_ms: u64,
        op: OpKey,
        status: u16,
        answer: Vec<u8>,
        out: &mut Out,
    ) {
        let at = out.copy(
            &Control::Key {
                key: op,
                ts_ms: now_ms,
                status,
                answer: answer.clone(),
            }
            .encode(),
        );
        self.append(RecordKind::Control, at, out);
        self.engine
            .keys_mut()
            .insert(op, now_ms, status, answer, KEYS_WINDOW_MS);
    }
}

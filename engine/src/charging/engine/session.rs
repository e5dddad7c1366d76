//! Session charging: a CCR-I, CCR-U or CCR-T settles the usage each service reports
//! against its reservation, then grants what the services ask for. With several
//! shards, a request this shard's slices cannot decide yet waits for escrow instead.

use super::sessions::{Done, Kept, Reservation, Session};
use super::{amount_of, units_for, AnswerForm, Decision, Engine, Outcome};
use crate::cdr::CdrService;
use crate::charging::decide::{self, Ask, Grant, Need, Source};
use crate::charging::escrow::{self, EscrowMsg, MONEY};
use crate::charging::invariant::must;
use crate::charging::rating;
use crate::diameter::ccr::{final_unit_action, AnswerMscc, Ccr, Mscc, RequestType};
use crate::diameter::limits::{MSCC_MAX, SESSION_ID_SIZE_MAX};
use crate::diameter::result_code as rc;
use crate::peer::DuplicateKey;

impl Engine {
    /// A CCR-I, CCR-U or CCR-T of session `key` (`dup`: its duplicate key), open already
    /// in `slot` if it has one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn session(
        &mut self,
        ccr: &Ccr<'_>,
        key: u64,
        dup: &DuplicateKey,
        slot: Option<u32>,
        subscriber: u32,
        company: u32,
        now_ms: u64,
        may_wait: bool,
        barred: bool,
        o: &mut Decision,
    ) {
        o.result_code = rc::SUCCESS;
        o.subscriber = Some(subscriber);
        o.company = Some(company);
        let exists = slot.is_some();
        // A single-service session (RFC 8506 §5.1.2: no MSCC, its units at the top
        // level) is one service, charged as an MSCC is and answered at the top level.
        let top_level = ccr.mscc().is_empty()
            && (ccr.requested.is_some() || ccr.used.is_some() || ccr.service_identifier.is_some());
        let single;
        let msccs: &[Mscc] = if top_level {
            single = [single_service(ccr)];
            &single
        } else {
            ccr.mscc()
        };
        let mut asks = [None; MSCC_MAX];
        for (i, m) in msccs.iter().enumerate() {
            asks[i] = Some(self.ask(ccr, m, now_ms));
        }
        if self.shards > 1
            && may_wait
            && !barred
            && (exists || ccr.request_type == RequestType::Initial)
        {
            if let Some(w) = self.session_wait(ccr, msccs, &asks, key, exists, company) {
                *o = w;
                return;
            }
        }
        let slot = match slot {
            Some(slot) => slot,
            None => {
                if ccr.request_type != RequestType::Initial {
                    return o.refuse(rc::UNKNOWN_SESSION_ID);
                }
                if self.sessions.len() >= self.config.sessions_max
                    || self.sessions.contains_key(&key)
                {
                    return o.refuse(rc::TOO_BUSY);
                }
                let mut id = [0u8; SESSION_ID_SIZE_MAX];
                let n = ccr.session_id.len().min(SESSION_ID_SIZE_MAX);
                id[..n].copy_from_slice(&ccr.session_id.as_bytes()[..n]);
                let inserted = self.sessions.insert(
                    key,
                    Session {
                        id_len: n,
                        id,
                        company,
                        subscriber,
                        answers: [Kept::default(); 2],
                        newest: 0,
                        reservations: [None; MSCC_MAX],
                        expires_ms: 0,
                    },
                );
                let Some(slot) = inserted else {
                    return o.refuse(rc::TOO_BUSY);
                };
                slot
            }
        };
        let tariffs = &self.tariffs;
        let validity = self.config.validity_time_s;
        let company_id = self.company_ids[company as usize].as_str();
        let (bounds, config) = (self.bounds, &self.config);
        // Session state and the company's wallet are borrowed apart.
        let session = self.sessions.at_mut(slot);
        let c = &mut self.companies[company as usize];
        let mut wallet = c.wallet();
        let mut drawn = [None; MSCC_MAX];
        // Services whose reported usage is beyond the bounds (`Bounds::usage_max`) or
        // cannot be priced (it would overflow a balance): refused with 5004, nothing
        // settled, their reservation kept.
        let mut unpriced = [false; MSCC_MAX];
        let (mut granted_any, mut all_4012) = (false, true);
        // The usage each service reports settles first...
        for (i, m) in msccs.iter().enumerate() {
            let Some(ask) = asks[i] else { continue };
            let service = &mut o.services[i];
            *service = CdrService {
                rating_group: m.rating_group,
                service_identifier: ask.service_identifier,
                unit: Some(ask.unit),
                reporting_reason: m.reporting_reason,
                ..CdrService::default()
            };
            // Settle what this service used against its open reservation.
            let used = m.used.and_then(|u| amount_of(&u, ask.unit)).unwrap_or(0);
            let slot = session.reservations.iter().position(|r| {
                r.is_some_and(|r| {
                    r.ask.rating_group == ask.rating_group
                        && r.ask.service_identifier == ask.service_identifier
                })
            });
            if let Some(j) = slot {
                if let Some(r) = session.reservations[j] {
                    if used > bounds.usage_max(r.grant.units) {
                        unpriced[i] = true;
                        continue;
                    }
                    match decide::settle(&mut wallet, tariffs, &r.ask, &r.grant, used) {
                        Ok(charge) => {
                            session.reservations[j] = None;
                            service.used = used;
                            service.cost = charge.micros;
                            service.package_units = charge.package_units;
                            service.overuse = charge.overuse > 0;
                            if let Some(Source::Package { index, .. }) = r.grant.source {
                                o.package[i] = u16::try_from(index).ok();
                            }
                        }
                        Err(_) => unpriced[i] = true,
                    }
                }
            } else if used > 0 && used > bounds.usage_max(config.default_quota(ask.unit)) {
                // Usage with nothing reserved is held to one default grant.
                unpriced[i] = true;
            } else if used > 0 {
                // Usage with nothing reserved (after a restart, say) is charged all the same.
                let none = Grant {
                    result_code: rc::SUCCESS,
                    units: 0,
                    source: None,
                    final_unit: false,
                };
                match decide::settle(&mut wallet, tariffs, &ask, &none, used) {
                    Ok(charge) => {
                        service.used = used;
                        service.cost = charge.micros;
                        service.overuse = true;
                    }
                    Err(_) => unpriced[i] = true,
                }
            }
        }
        // Then the grants: what the request's usage gave back is there to grant from.
        for (i, m) in msccs.iter().enumerate() {
            let Some(ask) = asks[i] else { continue };
            let service = &mut o.services[i];
            let mut answer = AnswerMscc {
                rating_group: m.rating_group,
                service_identifier: m.service_identifier,
                result_code: rc::SUCCESS,
                ..AnswerMscc::default()
            };
            let asks_more = ccr.request_type != RequestType::Termination
                && (m.requested.is_some()
                    || (ccr.request_type == RequestType::Initial && m.used.is_none()));
            // Barred: what was used is settled above, nothing more is granted.
            let wants_more = asks_more && !barred;
            // A session holds at most MSCC_MAX open reservations; one more is refused
            // rather than granted without a place to settle it.
            let free = session.reservations.iter().position(Option::is_none);
            if unpriced[i] {
                answer.result_code = rc::INVALID_AVP_VALUE;
                all_4012 = false;
            } else if wants_more && free.is_none() {
                answer.result_code = rc::UNABLE_TO_COMPLY;
                all_4012 = false;
            } else if let (true, Some(free)) = (wants_more, free) {
                service.requested = ask.units;
                match decide::grant(&mut wallet, tariffs, &ask) {
                    Ok(g) => {
                        answer.result_code = g.result_code;
                        if g.result_code == rc::SUCCESS {
                            granted_any = true;
                            all_4012 = false;
                            answer.granted = Some(units_for(ask.unit, g.units));
                            answer.validity_time_s = Some(validity);
                            if g.final_unit {
                                answer.final_unit_action = Some(final_unit_action::TERMINATE);
                            }
                            service.granted = g.units;
                            drawn[i] = g.source;
                            session.reservations[free] = Some(Reservation { ask, grant: g });
                        } else if g.result_code != rc::CREDIT_LIMIT_REACHED {
                            all_4012 = false;
                        }
                    }
                    Err(_) => answer.result_code = rc::UNABLE_TO_COMPLY,
                }
            } else if asks_more {
                answer.result_code = rc::END_USER_SERVICE_DENIED;
                all_4012 = false;
            } else {
                all_4012 = false;
                granted_any = true;
            }
            service.result_code = answer.result_code;
            o.mscc[i] = answer;
        }
        o.mscc_count = msccs.len();
        if top_level {
            o.form = AnswerForm::TopLevel;
            o.granted = o.mscc[0].granted;
        }
        if barred && ccr.request_type != RequestType::Termination {
            o.result_code = rc::END_USER_SERVICE_DENIED;
        } else if o.mscc_count > 0 && !granted_any {
            o.result_code = if all_4012 {
                rc::CREDIT_LIMIT_REACHED
            } else {
                o.mscc[0].result_code
            };
        }
        // A CCR-T ends the session; so does a CCR-I refused at the command level (RFC
        // 8506 §5.1: the client does not go on with a session its CCR-I failed, so
        // keeping it would only hold a slot until Tcc).
        let failed_initial =
            ccr.request_type == RequestType::Initial && o.result_code != rc::SUCCESS;
        if ccr.request_type == RequestType::Termination || failed_initial {
            // Whatever is still reserved goes back.
            for r in session.reservations.iter_mut().filter_map(Option::take) {
                let released = decide::settle(&mut wallet, tariffs, &r.ask, &r.grant, 0);
                must(
                    released,
                    "a reservation released at the session's end",
                    company_id,
                );
            }
            self.sessions.remove(&key);
            let mut answer = Kept::default();
            answer.record(ccr, dup, o);
            self.closed.insert(Done {
                session: key,
                subscriber: o.subscriber,
                company: o.company,
                answer,
            });
        } else {
            session.record(ccr, dup, o);
            session.expires_ms = now_ms + 2 * 1000 * u64::from(validity);
        }
        if self.shards > 1 {
            for d in drawn.iter().flatten() {
                self.drew(company, d, now_ms);
            }
            self.send_home(company);
        }
    }

    /// A recalled slice sends home what freed up on it.
    pub(super) fn send_home(&mut self, company: u32) {
        let owner = self.owner_of(company);
        let c = &mut self.companies[company as usize];
        for b in 0..c.slices.len() {
            if !c.slices[b].returning {
                continue;
            }
            let bucket = b as u16;
            let amount = c.take_home(bucket, &self.company_ids[company as usize]);
            if amount == 0 {
                continue;
            }
            self.mail.send(
                owner,
                EscrowMsg::Return {
                    company,
                    bucket,
                    amount,
                    recalled: false,
                },
            );
        }
    }

    /// Slices were drawn on: keep them above their low-water marks.
    pub(super) fn drew(&mut self, company: u32, source: &Source, now_ms: u64) {
        match *source {
            Source::Package { index, units } => self.keep_up(
                company,
                escrow::package_bucket(index),
                i64::try_from(units).unwrap_or(i64::MAX),
                now_ms,
            ),
            Source::Money { micros, .. } => self.keep_up(company, MONEY, micros, now_ms),
        }
    }

    /// With several shards: whether this shard's slices can decide the request. If
    /// not, refills are asked for and the answer is `wait` (nothing changed).
    #[allow(clippy::too_many_arguments)]
    fn session_wait(
        &mut self,
        ccr: &Ccr<'_>,
        msccs: &[Mscc],
        asks: &[Option<Ask>; MSCC_MAX],
        key: u64,
        exists: bool,
        company: u32,
    ) -> Option<Decision> {
        if ccr.request_type == RequestType::Termination {
            return None;
        }
        // What settling this request's usage gives back first, per bucket, then less
        // what the request's earlier services take (a buffer kept for this: no
        // allocation once it is as large as the most buckets a company has).
        let mut extra = std::mem::take(&mut self.extra);
        extra.clear();
        extra.resize(1 + self.companies[company as usize].packages.len(), 0);
        let released = &mut extra;
        let mut needs = [Need::Local; MSCC_MAX];
        let mut k = 0;
        {
            let (tariffs, bounds, config) = (&self.tariffs, self.bounds, &self.config);
            let session = if exists {
                self.sessions.get(&key)
            } else {
                None
            };
            for (m, ask) in msccs.iter().zip(asks) {
                let Some(ask) = ask else { continue };
                let Some(s) = session else { break };
                let used = m.used.and_then(|u| amount_of(&u, ask.unit)).unwrap_or(0);
                let Some(r) = s.reservations.iter().flatten().find(|r| {
                    r.ask.rating_group == ask.rating_group
                        && r.ask.service_identifier == ask.service_identifier
                }) else {
                    // Usage with nothing reserved, within its bound, is charged to the
                    // money at the tariff.
                    let bound = bounds.usage_max(config.default_quota(ask.unit));
                    if let Some(t) = decide::tariff_for(tariffs, ask).filter(|_| used <= bound) {
                        let cost = rating::cost(&tariffs[t], used);
                        released[0] = released[0].saturating_sub(cost);
                    }
                    continue;
                };
                // Usage beyond the allowance settles nothing (it is refused); usage
                // within it but beyond the grant takes more than was reserved.
                if used > bounds.usage_max(r.grant.units) {
                    continue;
                }
                let overuse = used.saturating_sub(r.grant.units);
                match r.grant.source {
                    // (Estimates that decide whether to wait, never a balance: they
                    // saturate.)
                    Some(Source::Money { tariff, micros }) => {
                        let back = micros.saturating_sub(rating::cost(&tariffs[tariff], used));
                        released[0] = released[0].saturating_add(back);
                    }
                    Some(Source::Package { index, units }) if index + 1 < released.len() => {
                        let back = i64::try_from(units.saturating_sub(used)).unwrap_or(i64::MAX);
                        released[index + 1] = released[index + 1].saturating_add(back);
                        // Beyond the package's grant, the tariff's money pays.
                        if let Some(t) = decide::tariff_for(tariffs, &r.ask).filter(|_| overuse > 0)
                        {
                            let more = rating::cost(&tariffs[t], overuse);
                            released[0] = released[0].saturating_sub(more);
                        }
                    }
                    _ => {}
                }
            }
            // Only the services that ask for more draw on anything.
            let wanting = msccs.iter().zip(asks).filter_map(|(m, a)| {
                let wants_more = m.requested.is_some()
                    || (ccr.request_type == RequestType::Initial && m.used.is_none());
                a.filter(|_| wants_more)
            });
            let c = &mut self.companies[company as usize];
            let w = c.wallet();
            // The services of one request draw on the buckets one after the other:
            // each sees what the ones before it took.
            let extra = released;
            for ask in wanting {
                let n = decide::need(&w, tariffs, &ask, extra);
                let Some((b, amount, known)) = n.draws() else {
                    continue;
                };
                if n.wanting().is_some() && k < needs.len() {
                    needs[k] = n;
                    k += 1;
                }
                if b >= extra.len() {
                    continue;
                }
                let have = if b == 0 {
                    w.money.available
                } else {
                    w.packages.get(b - 1).map_or(0, |p| p.1.available)
                } + extra[b];
                extra[b] -= if known {
                    amount.min(have.max(0))
                } else {
                    amount
                };
            }
        }
        self.extra = extra;
        (k > 0).then(|| self.wait_for(company, &needs))
    }

    /// Asks for every missing part and answers `wait`.
    pub(super) fn wait_for(&mut self, company: u32, needs: &[Need]) -> Decision {
        for n in needs {
            self.ask_refill(company, *n);
        }
        self.mail.counters.waits += 1;
        let mut o = Decision::new(0);
        o.company = Some(company);
        o.outcome = Outcome::Wait { company };
        o
    }
}

/// The one service of a single-service request: its top-level units and
/// Service-Identifier as an MSCC.
pub(super) fn single_service(ccr: &Ccr<'_>) -> Mscc {
    Mscc {
        rating_group: None,
        service_identifier: ccr.service_identifier,
        requested: ccr.requested,
        used: ccr.used,
        reporting_reason: None,
    }
}

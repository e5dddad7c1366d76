//! Event charging (CCR-EVENT): direct debiting, refunds, balance checks and price
//! enquiries, answered in an MSCC or at the top level.

use super::{units_for, AnswerForm, Decision, Engine};
use crate::cdr::CdrService;
use crate::charging::decide::{self, Need, Source, Wallet};
use crate::charging::invariant::must;
use crate::charging::rating;
use crate::diameter::ccr::{AnswerMscc, Ccr, Mscc, RequestedAction};
use crate::diameter::result_code as rc;

impl Engine {
    /// An event's answer: as the request asked, in an MSCC or at the top level (RFC
    /// 8506 §6.3: a Granted-Service-Unit for what was debited).
    pub(super) fn event(
        &mut self,
        ccr: &Ccr<'_>,
        subscriber: u32,
        company: u32,
        now_ms: u64,
        may_wait: bool,
    ) -> Decision {
        let mut o = self.event_charge(ccr, subscriber, company, now_ms, may_wait);
        let s = o.services[0];
        let debited = ccr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting)
            == RequestedAction::DirectDebiting
            && s.result_code == rc::SUCCESS;
        let granted = match s.unit {
            Some(unit) if debited => Some(units_for(unit, s.granted)),
            _ => None,
        };
        if ccr.mscc().is_empty() {
            o.form = AnswerForm::TopLevel;
            o.granted = granted;
        } else {
            o.mscc[0] = AnswerMscc {
                rating_group: s.rating_group,
                service_identifier: s.service_identifier,
                result_code: if s.result_code == 0 {
                    o.result_code
                } else {
                    s.result_code
                },
                granted,
                ..AnswerMscc::default()
            };
        }
        o
    }

    fn event_charge(
        &mut self,
        ccr: &Ccr<'_>,
        subscriber: u32,
        company: u32,
        now_ms: u64,
        may_wait: bool,
    ) -> Decision {
        let mut o = Decision::new(rc::SUCCESS);
        o.subscriber = Some(subscriber);
        o.company = Some(company);
        // The single service of an event: the top-level RSU (or the first MSCC).
        let m = ccr.mscc().first().copied().unwrap_or(Mscc {
            rating_group: None,
            service_identifier: ccr.service_identifier,
            requested: ccr.requested,
            used: ccr.used,
            reporting_reason: None,
        });
        let ask = self.ask(ccr, &m, now_ms);
        let action = ccr
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting);
        if self.shards > 1
            && may_wait
            && matches!(
                action,
                RequestedAction::DirectDebiting | RequestedAction::CheckBalance
            )
        {
            let c = &mut self.companies[company as usize];
            let w = c.wallet();
            let mut n = decide::need(&w, &self.tariffs, &ask, &[]);
            if action == RequestedAction::CheckBalance {
                // A balance check asks about money only.
                n = match decide::need(
                    &Wallet {
                        packages: &mut [],
                        ..w
                    },
                    &self.tariffs,
                    &ask,
                    &[],
                ) {
                    m @ Need::Money { .. } => m,
                    _ => Need::Local,
                };
            }
            if n.wanting().is_some() {
                return self.wait_for(company, &[n]);
            }
        }
        let mut refunded = 0;
        let mut drawn = None;
        let company_id = self.company_ids[company as usize].as_str();
        let refund_max = self.bounds.refund_max_micros;
        let tariffs = &self.tariffs;
        let c = &mut self.companies[company as usize];
        let mut wallet = c.wallet();
        let tariff = ask
            .rating_group
            .and_then(|rg| {
                tariffs
                    .iter()
                    .find(|t| t.rating_group == Some(rg) && t.unit == ask.unit)
            })
            .or_else(|| {
                ask.service_identifier.and_then(|si| {
                    tariffs
                        .iter()
                        .find(|t| t.service_identifier == Some(si) && t.unit == ask.unit)
                })
            });
        o.mscc_count = 1;
        o.services[0] = CdrService {
            rating_group: ask.rating_group,
            service_identifier: ask.service_identifier,
            unit: Some(ask.unit),
            requested: ask.units,
            ..CdrService::default()
        };
        match action {
            RequestedAction::DirectDebiting => match decide::grant(&mut wallet, tariffs, &ask) {
                Ok(g) if g.result_code == rc::SUCCESS && g.units >= ask.units => {
                    drawn = g.source;
                    // Within the grant just made: it cannot fail but by a broken ledger.
                    let charge = decide::settle(&mut wallet, tariffs, &ask, &g, ask.units);
                    let charge = must(charge, "an event debited within its grant", company_id);
                    o.services[0].granted = g.units;
                    o.services[0].used = ask.units;
                    o.services[0].cost = charge.micros;
                    o.services[0].package_units = charge.package_units;
                    o.services[0].result_code = rc::SUCCESS;
                    if let Some(Source::Package { index, .. }) = g.source {
                        o.package[0] = u16::try_from(index).ok();
                    }
                }
                Ok(g) => {
                    // Not enough for the whole event: nothing is taken.
                    if g.result_code == rc::SUCCESS {
                        let released = decide::settle(&mut wallet, tariffs, &ask, &g, 0);
                        must(released, "an event's partial grant released", company_id);
                    }
                    let code = if g.result_code == rc::SUCCESS {
                        rc::CREDIT_LIMIT_REACHED
                    } else {
                        g.result_code
                    };
                    o.result_code = code;
                    o.services[0].result_code = code;
                }
                Err(_) => o.result_code = rc::UNABLE_TO_COMPLY,
            },
            RequestedAction::RefundAccount => match tariff {
                // A refund beyond the bound credits nothing (`Bounds::refund_max_micros`).
                Some(t) if rating::cost(t, ask.units) > refund_max => {
                    o.result_code = rc::INVALID_AVP_VALUE;
                    o.services[0].result_code = rc::INVALID_AVP_VALUE;
                }
                Some(t) => {
                    let micros = rating::cost(t, ask.units);
                    match wallet.money.credit(micros) {
                        Ok(()) => {
                            refunded = micros;
                            o.services[0].cost = -micros;
                            o.services[0].result_code = rc::SUCCESS;
                        }
                        Err(_) => o.result_code = rc::UNABLE_TO_COMPLY,
                    }
                }
                None => o.result_code = rc::RATING_FAILED,
            },
            RequestedAction::CheckBalance => {
                let enough = match tariff {
                    Some(t) => {
                        rating::affordable_units(
                            t,
                            wallet.money.available.saturating_add(wallet.credit_limit),
                        ) >= ask.units
                    }
                    None => false,
                };
                o.check_balance_result = Some(if enough { 0 } else { 1 });
                o.services[0].result_code = rc::SUCCESS;
            }
            RequestedAction::PriceEnquiry => match tariff {
                Some(t) => {
                    o.cost_micros = Some(rating::cost(t, ask.units));
                    o.services[0].result_code = rc::SUCCESS;
                }
                None => o.result_code = rc::RATING_FAILED,
            },
        }
        // What refunds credited (shown by the operations endpoint): bounded by the
        // money credited, which is checked.
        c.refunded = c.refunded.saturating_add(refunded);
        if self.shards > 1 {
            if let Some(d) = drawn {
                self.drew(company, &d, now_ms);
            }
            self.send_home(company);
        }
        o
    }
}

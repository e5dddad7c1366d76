//! Validation: the header checks, an iterative walk over every AVP of a message (depth
//! limited, no recursion) that checks each known AVP's value against its data format,
//! and the grammar check (occurrences, required AVPs, M-bit AVPs outside the grammar).
//!
//! Precedence is fixed (CONFORMANCE row 28): version (5011), then header bits (3008 and
//! 5013), then command and application (3001, 3007), then the AVPs in message order, and
//! last the required AVPs (5005).

use super::avp::{Avp, AvpIter, ValueError};
use super::dict::{self, AvpDef, AvpId, CommandDef, DataType, DEFS};
use super::error::ProtocolError;
use super::limits::GROUP_DEPTH_MAX;
use super::message::{Header, Message};
use super::result_code as rc;
use super::{cmd_flags, VERSION};

/// Header checks for a received request (RFC 6733 §3, §7.1.3, §7.1.5).
#[inline]
pub fn check_request_header(h: &Header) -> Result<(), ProtocolError> {
    if h.version != VERSION {
        return Err(ProtocolError::bare(rc::UNSUPPORTED_VERSION));
    }
    if h.flags & cmd_flags::E != 0 {
        // E in a request, and R together with E, are invalid combinations.
        return Err(ProtocolError::bare(rc::INVALID_HDR_BITS));
    }
    if h.flags & cmd_flags::RESERVED != 0 {
        return Err(ProtocolError::bare(rc::INVALID_BIT_IN_HEADER));
    }
    if !h.length.is_multiple_of(4) {
        // RFC 6733 §3: the Message Length is always a multiple of 4.
        return Err(ProtocolError::bare(rc::INVALID_MESSAGE_LENGTH));
    }
    Ok(())
}

/// Checks one known AVP's value against its data format.
#[inline(always)]
pub fn check_value(def: &AvpDef, avp: &Avp<'_>) -> Result<(), ProtocolError> {
    let ok = match def.data_type {
        DataType::OctetString | DataType::Grouped | DataType::IpFilterRule => Ok(()),
        DataType::Integer32 | DataType::Unsigned32 | DataType::Float32 | DataType::Time => {
            avp.u32().map(drop)
        }
        DataType::Integer64 | DataType::Unsigned64 | DataType::Float64 => avp.u64().map(drop),
        DataType::Enumerated => match avp.i32() {
            Ok(v) if v >= def.enum_min && v <= def.enum_max => Ok(()),
            Ok(_) => Err(ValueError::Value),
            Err(e) => Err(e),
        },
        DataType::Utf8String => avp.utf8().map(drop),
        DataType::DiameterIdentity => avp.identity().map(drop),
        DataType::DiameterUri => avp.uri().map(drop),
        DataType::Address => avp.address().map(drop),
    };
    ok.map_err(|e| ProtocolError::value(e, avp))
}

/// One AVP met on the walk.
#[derive(Clone, Copy, Debug)]
pub struct Visit<'a> {
    pub avp: Avp<'a>,
    /// `None` for an AVP the dictionary does not know (its M bit is clear: unknown
    /// M-bit AVPs end the walk with 5001).
    pub def: Option<&'static AvpDef>,
    /// 0 for top-level AVPs.
    pub depth: usize,
    /// The Grouped AVP this one is inside.
    pub parent: Option<AvpId>,
}

/// Walks every AVP of `iter` depth first, descending into known Grouped AVPs, checking
/// framing, unknown M-bit AVPs (5001), values (5004/5014) and the depth limit (5004),
/// and calls `visit` for each AVP in message order. A Grouped AVP is visited before its
/// members.
#[inline(always)]
pub fn walk<'a, F>(iter: AvpIter<'a>, mut visit: F) -> Result<(), ProtocolError>
where
    F: FnMut(Visit<'a>) -> Result<(), ProtocolError>,
{
    let mut stack: [(AvpIter<'a>, Option<AvpId>); GROUP_DEPTH_MAX + 1] =
        core::array::from_fn(|_| (iter.clone(), None));
    let mut depth = 0usize;
    loop {
        let (it, parent) = &mut stack[depth];
        let parent = *parent;
        let Some(next) = it.next() else {
            if depth == 0 {
                return Ok(());
            }
            depth -= 1;
            continue;
        };
        let avp = next?;
        let def = dict::lookup(avp.code, avp.vendor_id);
        match def {
            None if avp.is_mandatory() => {
                return Err(ProtocolError::at(rc::AVP_UNSUPPORTED, &avp));
            }
            None => visit(Visit {
                avp,
                def,
                depth,
                parent,
            })?,
            Some(d) => {
                check_value(d, &avp)?;
                visit(Visit {
                    avp,
                    def,
                    depth,
                    parent,
                })?;
                if d.data_type == DataType::Grouped {
                    if depth == GROUP_DEPTH_MAX {
                        return Err(ProtocolError::at(rc::INVALID_AVP_VALUE, &avp));
                    }
                    depth += 1;
                    stack[depth] = (avp.group(), Some(d.id));
                }
            }
        }
    }
}

/// Counts occurrences of the top-level AVPs named by a grammar.
#[derive(Debug)]
pub struct GrammarCheck {
    counts: [u8; DEFS.len()],
    allowed: &'static [bool; DEFS.len()],
    cmd: &'static CommandDef,
}

impl GrammarCheck {
    pub fn new(cmd: &'static CommandDef, allowed: &'static [bool; DEFS.len()]) -> GrammarCheck {
        GrammarCheck {
            counts: [0; DEFS.len()],
            allowed,
            cmd,
        }
    }

    /// Records one top-level AVP; an M-bit AVP outside the grammar is 5001 (as OTP's
    /// `strict_mbit`), one more than the rule allows is 5009 naming that occurrence.
    pub fn top_level(
        &mut self,
        avp: &Avp<'_>,
        def: Option<&'static AvpDef>,
    ) -> Result<(), ProtocolError> {
        let Some(def) = def else { return Ok(()) };
        let i = def.id as usize;
        if !self.allowed[i] {
            if avp.is_mandatory() {
                return Err(ProtocolError::at(rc::AVP_UNSUPPORTED, avp));
            }
            return Ok(());
        }
        self.counts[i] = self.counts[i].saturating_add(1);
        let max = self
            .cmd
            .rules
            .iter()
            .find(|r| r.avp == def.id)
            .map_or(u8::MAX, |r| r.max);
        if max != u8::MAX && self.counts[i] > max {
            return Err(ProtocolError::at(rc::AVP_OCCURS_TOO_MANY_TIMES, avp));
        }
        Ok(())
    }

    /// After the walk: every required AVP present, else 5005 with an example.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        for r in self.cmd.rules {
            if self.counts[r.avp as usize] < r.min {
                let d = r.avp.def();
                return Err(ProtocolError::missing(
                    d.code,
                    d.vendor_id,
                    d.data_type.min_size(),
                ));
            }
        }
        Ok(())
    }

    pub fn count(&self, id: AvpId) -> u8 {
        self.counts[id as usize]
    }
}

macro_rules! allowed_sets {
    ($($name:ident = $cmd:path;)*) => {
        $( static $name: [bool; DEFS.len()] = dict::grammar_set(&$cmd); )*
    };
}
allowed_sets! {
    CER_SET = dict::CER;
    CEA_SET = dict::CEA;
    DWR_SET = dict::DWR;
    DWA_SET = dict::DWA;
    DPR_SET = dict::DPR;
    DPA_SET = dict::DPA;
    CCR_SET = dict::CCR;
    CCA_SET = dict::CCA;
}

/// The grammar-membership set of a command definition from `dict::COMMANDS`.
pub fn allowed_set(cmd: &'static CommandDef) -> &'static [bool; DEFS.len()] {
    match (cmd.code, cmd.request) {
        (super::command::CAPABILITIES_EXCHANGE, true) => &CER_SET,
        (super::command::CAPABILITIES_EXCHANGE, false) => &CEA_SET,
        (super::command::DEVICE_WATCHDOG, true) => &DWR_SET,
        (super::command::DEVICE_WATCHDOG, false) => &DWA_SET,
        (super::command::DISCONNECT_PEER, true) => &DPR_SET,
        (super::command::DISCONNECT_PEER, false) => &DPA_SET,
        (super::command::CREDIT_CONTROL, true) => &CCR_SET,
        _ => &CCA_SET,
    }
}

/// Validates every AVP of a message against a command's grammar (not the header).
/// Used for the base-protocol messages and for answers; the CCR has its own single-pass
/// decoder (`ccr::Ccr::decode`) built on the same walk.
pub fn validate(msg: &Message<'_>, cmd: &'static CommandDef) -> Result<(), ProtocolError> {
    let mut grammar = GrammarCheck::new(cmd, allowed_set(cmd));
    walk(msg.avps(), |v| {
        if v.depth == 0 {
            grammar.top_level(&v.avp, v.def)
        } else {
            Ok(())
        }
    })?;
    grammar.finish()
}

/// CCR top-level membership, for the CCR decoder.
pub(crate) fn ccr_allowed(id: AvpId) -> bool {
    CCR_SET[id as usize]
}

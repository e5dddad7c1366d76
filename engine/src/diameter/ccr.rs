//! The Credit-Control-Request as gyro reads it (one pass: validation and extraction
//! together, borrowing every string) and the Credit-Control-Answer as gyro writes it.
//!
//! RFC 8506 §3.1–3.2, with the Multiple-Services-Credit-Control and Service-Information
//! of 3GPP TS 32.299 §6.4 and §7.2. Limits: `limits::MSCC_MAX` MSCC and
//! `limits::SUBSCRIPTION_ID_MAX` Subscription-Ids per request (more is answered 5009).
//!
//! This file holds the request's types (`Ccr` and its parts); the rest is in child
//! modules, whose public items are re-exported here:
//!
//! - `decode`: the full decoder (`Ccr::decode`, `Ccr::decode_into`,
//!   `Ccr::decode_full_into`): one pass over every AVP, validation and extraction
//!   together.
//! - `fast`: the decoder of the common case, which `Ccr::decode_into` tries first.
//! - `cca`: the answer: `Cca`, `AnswerMscc`, `encode_cca`, `final_unit_action` and
//!   `rating_failed_avp`, `units_failed_avp`.
//! - `client`: the client's encoder of requests, `encode_ccr`.
//! - `fixture`: `sample_ccr_update`, a realistic request for tests, benchmarks and
//!   fuzz seeds.

use super::avp::Address;
use super::limits::{MSCC_MAX, SUBSCRIPTION_ID_MAX};
use super::message::Header;
use super::{application, cmd_flags};

mod cca;
mod client;
mod decode;
mod fast;
mod fixture;

pub use cca::{
    encode_cca, final_unit_action, rating_failed_avp, units_failed_avp, AnswerMscc, Cca,
};
pub use client::encode_ccr;
pub use fixture::sample_ccr_update;

/// CC-Request-Type (RFC 8506 §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum RequestType {
    #[default]
    Initial = 1,
    Update = 2,
    Termination = 3,
    Event = 4,
}

impl RequestType {
    pub fn from_u32(v: u32) -> Option<RequestType> {
        Some(match v {
            1 => RequestType::Initial,
            2 => RequestType::Update,
            3 => RequestType::Termination,
            4 => RequestType::Event,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::Initial => "INITIAL",
            RequestType::Update => "UPDATE",
            RequestType::Termination => "TERMINATION",
            RequestType::Event => "EVENT",
        }
    }
}

/// Requested-Action (RFC 8506 §8.41).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestedAction {
    DirectDebiting = 0,
    RefundAccount = 1,
    CheckBalance = 2,
    PriceEnquiry = 3,
}

/// Subscription-Id-Type (RFC 8506 §8.47).
pub mod subscription_id_type {
    pub const END_USER_E164: u32 = 0;
    pub const END_USER_IMSI: u32 = 1;
    pub const END_USER_SIP_URI: u32 = 2;
    pub const END_USER_NAI: u32 = 3;
    pub const END_USER_PRIVATE: u32 = 4;
}

/// One Subscription-Id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionId<'a> {
    pub id_type: u32,
    pub data: &'a str,
}

/// Service units (RSU, USU, GSU; RFC 8506 §8.17–8.19). Absent values are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Units {
    pub time_s: Option<u32>,
    pub total_octets: Option<u64>,
    pub input_octets: Option<u64>,
    pub output_octets: Option<u64>,
    pub service_specific: Option<u64>,
}

impl Units {
    pub fn is_empty(&self) -> bool {
        *self == Units::default()
    }
}

/// One Multiple-Services-Credit-Control of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mscc {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    /// `Some` when an RSU was present (an empty RSU asks the server to choose).
    pub requested: Option<Units>,
    /// Sum of the USUs, `Some` when at least one was present.
    pub used: Option<Units>,
    /// Reporting-Reason at MSCC level or in a USU (3GPP TS 32.299 §7.2.175).
    pub reporting_reason: Option<u32>,
}

/// PS-Information fields a CDR carries (3GPP TS 32.299 §7.2.158).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PsInformation<'a> {
    pub charging_id: Option<u32>,
    pub called_station_id: Option<&'a str>,
    pub rat_type: Option<&'a [u8]>,
    pub user_location_info: Option<&'a [u8]>,
    pub sgsn_address: Option<Address<'a>>,
    pub sgw_address: Option<Address<'a>>,
    pub ggsn_address: Option<Address<'a>>,
    pub sgsn_mcc_mnc: Option<&'a str>,
    pub imsi_mcc_mnc: Option<&'a str>,
}

/// IMS-Information fields a CDR carries (3GPP TS 32.299 §7.2.77).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImsInformation<'a> {
    pub calling_party_address: Option<&'a str>,
    pub called_party_address: Option<&'a str>,
    pub ims_charging_identifier: Option<&'a str>,
    pub node_functionality: Option<u32>,
    pub role_of_node: Option<u32>,
}

/// SMS-Information fields a CDR carries (3GPP TS 32.299 §7.2.196).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmsInformation<'a> {
    pub smsc_address: Option<Address<'a>>,
    pub recipient_address: Option<&'a str>,
    pub sms_node: Option<u32>,
}

/// A decoded Credit-Control-Request, borrowing from the message bytes.
#[derive(Clone, Copy, Debug)]
pub struct Ccr<'a> {
    pub header: Header,
    pub session_id: &'a str,
    pub origin_host: &'a str,
    pub origin_realm: &'a str,
    pub destination_realm: &'a str,
    pub destination_host: Option<&'a str>,
    pub service_context_id: &'a str,
    pub request_type: RequestType,
    pub request_number: u32,
    pub event_timestamp: Option<u32>,
    pub user_name: Option<&'a str>,
    pub requested_action: Option<RequestedAction>,
    pub service_identifier: Option<u32>,
    pub termination_cause: Option<u32>,
    pub multiple_services_indicator: bool,
    /// Top-level RSU/USU (single-service requests such as SMS events).
    pub requested: Option<Units>,
    pub used: Option<Units>,
    pub subscription_id_count: u8,
    pub subscription_ids: [SubscriptionId<'a>; SUBSCRIPTION_ID_MAX],
    pub mscc_count: u8,
    pub mscc: [Mscc; MSCC_MAX],
    pub ps: PsInformation<'a>,
    pub ims: ImsInformation<'a>,
    pub sms: SmsInformation<'a>,
    pub user_equipment_info: Option<(u32, &'a [u8])>,
}

impl<'a> Ccr<'a> {
    /// The Subscription-Ids of the request.
    pub fn subscription_ids(&self) -> &[SubscriptionId<'a>] {
        &self.subscription_ids[..usize::from(self.subscription_id_count)]
    }
    /// The MSCCs of the request.
    pub fn mscc(&self) -> &[Mscc] {
        &self.mscc[..usize::from(self.mscc_count)]
    }
    /// The first Subscription-Id of a type.
    pub fn subscription(&self, id_type: u32) -> Option<&'a str> {
        self.subscription_ids()
            .iter()
            .find(|s| s.id_type == id_type)
            .map(|s| s.data)
    }
}

impl Default for Ccr<'_> {
    fn default() -> Self {
        Ccr {
            header: Header {
                version: super::VERSION,
                length: 0,
                flags: cmd_flags::R | cmd_flags::P,
                command: super::command::CREDIT_CONTROL,
                application_id: application::CREDIT_CONTROL,
                hop_by_hop: 0,
                end_to_end: 0,
            },
            session_id: "",
            origin_host: "",
            origin_realm: "",
            destination_realm: "",
            destination_host: None,
            service_context_id: "",
            request_type: RequestType::Initial,
            request_number: 0,
            event_timestamp: None,
            user_name: None,
            requested_action: None,
            service_identifier: None,
            termination_cause: None,
            multiple_services_indicator: false,
            requested: None,
            used: None,
            subscription_id_count: 0,
            subscription_ids: [SubscriptionId::default(); SUBSCRIPTION_ID_MAX],
            mscc_count: 0,
            mscc: [Mscc::default(); MSCC_MAX],
            ps: PsInformation::default(),
            ims: ImsInformation::default(),
            sms: SmsInformation::default(),
            user_equipment_info: None,
        }
    }
}

impl PartialEq for Ccr<'_> {
    /// Equal when every decoded field is equal (the header's length is not compared).
    fn eq(&self, o: &Self) -> bool {
        let mut a = self.header;
        let mut b = o.header;
        a.length = 0;
        b.length = 0;
        a == b
            && self.session_id == o.session_id
            && self.origin_host == o.origin_host
            && self.origin_realm == o.origin_realm
            && self.destination_realm == o.destination_realm
            && self.destination_host == o.destination_host
            && self.service_context_id == o.service_context_id
            && self.request_type == o.request_type
            && self.request_number == o.request_number
            && self.event_timestamp == o.event_timestamp
            && self.user_name == o.user_name
            && self.requested_action == o.requested_action
            && self.service_identifier == o.service_identifier
            && self.termination_cause == o.termination_cause
            && self.multiple_services_indicator == o.multiple_services_indicator
            && self.requested == o.requested
            && self.used == o.used
            && self.subscription_ids() == o.subscription_ids()
            && self.mscc() == o.mscc()
            && self.ps == o.ps
            && self.ims == o.ims
            && self.sms == o.sms
            && self.user_equipment_info == o.user_equipment_info
    }
}

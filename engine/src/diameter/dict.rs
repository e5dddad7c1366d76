//! The compiled dictionary: every AVP gyro knows, with its data format and M-bit rule,
//! and the grammar of the commands it handles. Nothing is parsed at run time; lookups
//! are array indexing (`BASE_INDEX`, `TGPP_INDEX` are built by `const fn`).
//!
//! Sources: RFC 6733 §4.5 and §8 (base), RFC 8506 §8 (credit control; the Enumerated
//! ranges are from its §8 value tables), 3GPP TS 32.299 §7.2 and TS 29.061 §16.4.7 (Ro/Gy
//! and the 3GPP-* RADIUS-derived AVPs). `docs/dictionary.md` lists the coverage.

use super::VENDOR_3GPP;

/// Data formats (RFC 6733 §4.2 basic, §4.3 derived).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataType {
    OctetString,
    Integer32,
    Integer64,
    Unsigned32,
    Unsigned64,
    Float32,
    Float64,
    Grouped,
    Address,
    Time,
    Utf8String,
    DiameterIdentity,
    DiameterUri,
    Enumerated,
    IpFilterRule,
}

impl DataType {
    /// Size of the value when the format fixes it.
    pub const fn fixed_size(self) -> Option<u32> {
        match self {
            DataType::Integer32
            | DataType::Unsigned32
            | DataType::Float32
            | DataType::Time
            | DataType::Enumerated => Some(4),
            DataType::Integer64 | DataType::Unsigned64 | DataType::Float64 => Some(8),
            _ => None,
        }
    }
    /// Smallest valid value, for zero-filled Failed-AVP examples (RFC 6733 §7.1.5).
    pub const fn min_size(self) -> u32 {
        match self.fixed_size() {
            Some(n) => n,
            None => match self {
                DataType::Address => 6,
                DataType::DiameterIdentity => 1,
                _ => 0,
            },
        }
    }
}

/// The M-bit rule of an AVP (RFC 6733 §4.5 tables); decides the flags gyro sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MBit {
    Must,
    May,
    MustNot,
}

/// One AVP of the dictionary.
#[derive(Clone, Copy, Debug)]
pub struct AvpDef {
    pub id: AvpId,
    pub code: u32,
    pub vendor_id: u32,
    pub name: &'static str,
    pub data_type: DataType,
    pub m_bit: MBit,
    /// Enumerated values allowed, inclusive (contiguous in every enumeration here).
    pub enum_min: i32,
    pub enum_max: i32,
}

impl AvpDef {
    /// AVP flags gyro sets when it encodes this AVP.
    pub const fn flags(&self) -> u8 {
        let v = if self.vendor_id != 0 {
            super::avp_flags::V
        } else {
            0
        };
        let m = match self.m_bit {
            MBit::Must => super::avp_flags::M,
            _ => 0,
        };
        v | m
    }
}

macro_rules! dictionary {
    ($( $id:ident = $code:literal, $vendor:expr, $name:literal, $ty:ident, $m:ident $(, $min:literal ..= $max:literal)? ; )*) => {
        /// Every AVP of the dictionary; `DEFS[id as usize].id == id`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        #[allow(non_camel_case_types)]
        pub enum AvpId { $($id,)* }

        /// `AvpId`s as `u8` (what `lookup_index` returns), for matching in hot loops.
        #[allow(non_upper_case_globals)]
        pub mod index {
            use super::AvpId;
            $( pub const $id: u8 = AvpId::$id as u8; )*
        }

        /// The dictionary, in `AvpId` order.
        pub const DEFS: &[AvpDef] = &[
            $( AvpDef {
                id: AvpId::$id,
                code: $code,
                vendor_id: $vendor,
                name: $name,
                data_type: DataType::$ty,
                m_bit: MBit::$m,
                enum_min: dictionary!(@min $($min)?),
                enum_max: dictionary!(@max $($max)?),
            }, )*
        ];
    };
    (@min $min:literal) => { $min };
    (@min) => { i32::MIN };
    (@max $max:literal) => { $max };
    (@max) => { i32::MAX };
}

const B: u32 = 0;
const G: u32 = VENDOR_3GPP;

dictionary! {
    // RFC 6733 §4.5 (and the RADIUS-derived AVPs it and RFC 8506 use)
    UserName = 1, B, "User-Name", Utf8String, Must;
    Class = 25, B, "Class", OctetString, Must;
    SessionTimeout = 27, B, "Session-Timeout", Unsigned32, Must;
    CalledStationId = 30, B, "Called-Station-Id", Utf8String, Must;
    ProxyState = 33, B, "Proxy-State", OctetString, Must;
    AccountingSessionId = 44, B, "Accounting-Session-Id", OctetString, Must;
    AcctMultiSessionId = 50, B, "Acct-Multi-Session-Id", Utf8String, Must;
    EventTimestamp = 55, B, "Event-Timestamp", Time, Must;
    AcctInterimInterval = 85, B, "Acct-Interim-Interval", Unsigned32, Must;
    HostIpAddress = 257, B, "Host-IP-Address", Address, Must;
    AuthApplicationId = 258, B, "Auth-Application-Id", Unsigned32, Must;
    AcctApplicationId = 259, B, "Acct-Application-Id", Unsigned32, Must;
    VendorSpecificApplicationId = 260, B, "Vendor-Specific-Application-Id", Grouped, Must;
    RedirectHostUsage = 261, B, "Redirect-Host-Usage", Enumerated, Must, 0..=6;
    RedirectMaxCacheTime = 262, B, "Redirect-Max-Cache-Time", Unsigned32, Must;
    SessionId = 263, B, "Session-Id", Utf8String, Must;
    OriginHost = 264, B, "Origin-Host", DiameterIdentity, Must;
    SupportedVendorId = 265, B, "Supported-Vendor-Id", Unsigned32, Must;
    VendorId = 266, B, "Vendor-Id", Unsigned32, Must;
    FirmwareRevision = 267, B, "Firmware-Revision", Unsigned32, MustNot;
    ResultCode = 268, B, "Result-Code", Unsigned32, Must;
    ProductName = 269, B, "Product-Name", Utf8String, MustNot;
    SessionBinding = 270, B, "Session-Binding", Unsigned32, Must;
    SessionServerFailover = 271, B, "Session-Server-Failover", Enumerated, Must, 0..=3;
    MultiRoundTimeOut = 272, B, "Multi-Round-Time-Out", Unsigned32, Must;
    DisconnectCause = 273, B, "Disconnect-Cause", Enumerated, Must, 0..=2;
    AuthRequestType = 274, B, "Auth-Request-Type", Enumerated, Must, 1..=3;
    AuthGracePeriod = 276, B, "Auth-Grace-Period", Unsigned32, Must;
    AuthSessionState = 277, B, "Auth-Session-State", Enumerated, Must, 0..=1;
    OriginStateId = 278, B, "Origin-State-Id", Unsigned32, Must;
    FailedAvp = 279, B, "Failed-AVP", Grouped, Must;
    ProxyHost = 280, B, "Proxy-Host", DiameterIdentity, Must;
    ErrorMessage = 281, B, "Error-Message", Utf8String, MustNot;
    RouteRecord = 282, B, "Route-Record", DiameterIdentity, Must;
    DestinationRealm = 283, B, "Destination-Realm", DiameterIdentity, Must;
    ProxyInfo = 284, B, "Proxy-Info", Grouped, Must;
    ReAuthRequestType = 285, B, "Re-Auth-Request-Type", Enumerated, Must, 0..=1;
    AccountingSubSessionId = 287, B, "Accounting-Sub-Session-Id", Unsigned64, Must;
    AuthorizationLifetime = 291, B, "Authorization-Lifetime", Unsigned32, Must;
    RedirectHost = 292, B, "Redirect-Host", DiameterUri, Must;
    DestinationHost = 293, B, "Destination-Host", DiameterIdentity, Must;
    ErrorReportingHost = 294, B, "Error-Reporting-Host", DiameterIdentity, MustNot;
    TerminationCause = 295, B, "Termination-Cause", Enumerated, Must, 1..=8;
    OriginRealm = 296, B, "Origin-Realm", DiameterIdentity, Must;
    ExperimentalResult = 297, B, "Experimental-Result", Grouped, Must;
    ExperimentalResultCode = 298, B, "Experimental-Result-Code", Unsigned32, Must;
    InbandSecurityId = 299, B, "Inband-Security-Id", Unsigned32, Must;
    AccountingRecordType = 480, B, "Accounting-Record-Type", Enumerated, Must, 1..=4;
    AccountingRealtimeRequired = 483, B, "Accounting-Realtime-Required", Enumerated, Must, 1..=3;
    AccountingRecordNumber = 485, B, "Accounting-Record-Number", Unsigned32, Must;

    // RFC 8506 §8 (Diameter Credit-Control)
    CcCorrelationId = 411, B, "CC-Correlation-Id", OctetString, MustNot;
    CcInputOctets = 412, B, "CC-Input-Octets", Unsigned64, Must;
    CcMoney = 413, B, "CC-Money", Grouped, Must;
    CcOutputOctets = 414, B, "CC-Output-Octets", Unsigned64, Must;
    CcRequestNumber = 415, B, "CC-Request-Number", Unsigned32, Must;
    CcRequestType = 416, B, "CC-Request-Type", Enumerated, Must, 1..=4;
    CcServiceSpecificUnits = 417, B, "CC-Service-Specific-Units", Unsigned64, Must;
    CcSessionFailover = 418, B, "CC-Session-Failover", Enumerated, Must, 0..=1;
    CcSubSessionId = 419, B, "CC-Sub-Session-Id", Unsigned64, Must;
    CcTime = 420, B, "CC-Time", Unsigned32, Must;
    CcTotalOctets = 421, B, "CC-Total-Octets", Unsigned64, Must;
    CheckBalanceResult = 422, B, "Check-Balance-Result", Enumerated, Must, 0..=1;
    CostInformation = 423, B, "Cost-Information", Grouped, Must;
    CostUnit = 424, B, "Cost-Unit", Utf8String, Must;
    CurrencyCode = 425, B, "Currency-Code", Unsigned32, Must;
    CreditControl = 426, B, "Credit-Control", Enumerated, Must, 0..=1;
    CreditControlFailureHandling = 427, B, "Credit-Control-Failure-Handling", Enumerated, Must, 0..=2;
    DirectDebitingFailureHandling = 428, B, "Direct-Debiting-Failure-Handling", Enumerated, Must, 0..=1;
    Exponent = 429, B, "Exponent", Integer32, Must;
    FinalUnitIndication = 430, B, "Final-Unit-Indication", Grouped, Must;
    GrantedServiceUnit = 431, B, "Granted-Service-Unit", Grouped, Must;
    RatingGroup = 432, B, "Rating-Group", Unsigned32, Must;
    RedirectAddressType = 433, B, "Redirect-Address-Type", Enumerated, Must, 0..=3;
    RedirectServer = 434, B, "Redirect-Server", Grouped, Must;
    RedirectServerAddress = 435, B, "Redirect-Server-Address", Utf8String, Must;
    RequestedAction = 436, B, "Requested-Action", Enumerated, Must, 0..=3;
    RequestedServiceUnit = 437, B, "Requested-Service-Unit", Grouped, Must;
    RestrictionFilterRule = 438, B, "Restriction-Filter-Rule", IpFilterRule, Must;
    ServiceIdentifier = 439, B, "Service-Identifier", Unsigned32, Must;
    ServiceParameterInfo = 440, B, "Service-Parameter-Info", Grouped, May;
    ServiceParameterType = 441, B, "Service-Parameter-Type", Unsigned32, May;
    ServiceParameterValue = 442, B, "Service-Parameter-Value", OctetString, May;
    SubscriptionId = 443, B, "Subscription-Id", Grouped, Must;
    SubscriptionIdData = 444, B, "Subscription-Id-Data", Utf8String, Must;
    UnitValue = 445, B, "Unit-Value", Grouped, Must;
    UsedServiceUnit = 446, B, "Used-Service-Unit", Grouped, Must;
    ValueDigits = 447, B, "Value-Digits", Integer64, Must;
    ValidityTime = 448, B, "Validity-Time", Unsigned32, Must;
    FinalUnitAction = 449, B, "Final-Unit-Action", Enumerated, Must, 0..=2;
    SubscriptionIdType = 450, B, "Subscription-Id-Type", Enumerated, Must, 0..=4;
    TariffTimeChange = 451, B, "Tariff-Time-Change", Time, Must;
    TariffChangeUsage = 452, B, "Tariff-Change-Usage", Enumerated, Must, 0..=2;
    GsuPoolIdentifier = 453, B, "G-S-U-Pool-Identifier", Unsigned32, Must;
    CcUnitType = 454, B, "CC-Unit-Type", Enumerated, Must, 0..=7;
    MultipleServicesIndicator = 455, B, "Multiple-Services-Indicator", Enumerated, Must, 0..=1;
    MultipleServicesCreditControl = 456, B, "Multiple-Services-Credit-Control", Grouped, Must;
    GsuPoolReference = 457, B, "G-S-U-Pool-Reference", Grouped, Must;
    UserEquipmentInfo = 458, B, "User-Equipment-Info", Grouped, May;
    UserEquipmentInfoType = 459, B, "User-Equipment-Info-Type", Enumerated, May, 0..=3;
    UserEquipmentInfoValue = 460, B, "User-Equipment-Info-Value", OctetString, May;
    ServiceContextId = 461, B, "Service-Context-Id", Utf8String, Must;

    // 3GPP TS 29.061 §16.4.7: RADIUS-derived 3GPP-* AVPs carried in PS-Information
    TgppImsi = 1, G, "3GPP-IMSI", Utf8String, May;
    TgppChargingId = 2, G, "3GPP-Charging-Id", Unsigned32, May;
    TgppPdpType = 3, G, "3GPP-PDP-Type", Enumerated, May, 0..=4;
    TgppChargingGatewayAddress = 4, G, "3GPP-CG-Address", OctetString, May;
    TgppGprsNegotiatedQosProfile = 5, G, "3GPP-GPRS-Negotiated-QoS-Profile", Utf8String, May;
    TgppSgsnAddress = 6, G, "3GPP-SGSN-Address", OctetString, May;
    TgppGgsnAddress = 7, G, "3GPP-GGSN-Address", OctetString, May;
    TgppImsiMccMnc = 8, G, "3GPP-IMSI-MCC-MNC", Utf8String, May;
    TgppGgsnMccMnc = 9, G, "3GPP-GGSN-MCC-MNC", Utf8String, May;
    TgppNsapi = 10, G, "3GPP-NSAPI", OctetString, May;
    TgppSelectionMode = 12, G, "3GPP-Selection-Mode", Utf8String, May;
    TgppChargingCharacteristics = 13, G, "3GPP-Charging-Characteristics", Utf8String, May;
    TgppSgsnMccMnc = 18, G, "3GPP-SGSN-MCC-MNC", Utf8String, May;
    TgppImeisv = 20, G, "3GPP-IMEISV", OctetString, May;
    TgppRatType = 21, G, "3GPP-RAT-Type", OctetString, May;
    TgppUserLocationInfo = 22, G, "3GPP-User-Location-Info", OctetString, May;
    TgppMsTimeZone = 23, G, "3GPP-MS-TimeZone", OctetString, May;

    // 3GPP TS 32.299 §7.2 (Ro/Gy)
    EventType = 823, G, "Event-Type", Grouped, Must;
    SipMethod = 824, G, "SIP-Method", Utf8String, Must;
    RoleOfNode = 829, G, "Role-Of-Node", Enumerated, Must, 0..=3;
    CallingPartyAddress = 831, G, "Calling-Party-Address", Utf8String, Must;
    CalledPartyAddress = 832, G, "Called-Party-Address", Utf8String, Must;
    ImsChargingIdentifier = 841, G, "IMS-Charging-Identifier", Utf8String, Must;
    GgsnAddress = 847, G, "GGSN-Address", Address, Must;
    NodeFunctionality = 862, G, "Node-Functionality", Enumerated, Must, 0..=20;
    TimeQuotaThreshold = 868, G, "Time-Quota-Threshold", Unsigned32, Must;
    VolumeQuotaThreshold = 869, G, "Volume-Quota-Threshold", Unsigned32, Must;
    TriggerType = 870, G, "Trigger-Type", Enumerated, Must, 1..=62;
    QuotaHoldingTime = 871, G, "Quota-Holding-Time", Unsigned32, Must;
    ReportingReason = 872, G, "Reporting-Reason", Enumerated, Must, 0..=8;
    ServiceInformation = 873, G, "Service-Information", Grouped, Must;
    PsInformation = 874, G, "PS-Information", Grouped, Must;
    ImsInformation = 876, G, "IMS-Information", Grouped, Must;
    QuotaConsumptionTime = 881, G, "Quota-Consumption-Time", Unsigned32, Must;
    AddressData = 897, G, "Address-Data", Utf8String, Must;
    AddressType = 899, G, "Address-Type", Enumerated, Must, 0..=6;
    RecipientAddress = 1201, G, "Recipient-Address", Grouped, Must;
    UnitQuotaThreshold = 1226, G, "Unit-Quota-Threshold", Unsigned32, Must;
    PdpAddress = 1227, G, "PDP-Address", Address, Must;
    SgsnAddress = 1228, G, "SGSN-Address", Address, Must;
    EventChargingTimeStamp = 1258, G, "Event-Charging-TimeStamp", Time, Must;
    Trigger = 1264, G, "Trigger", Grouped, Must;
    EnvelopeReporting = 1268, G, "Envelope-Reporting", Enumerated, Must, 0..=3;
    TimeQuotaMechanism = 1270, G, "Time-Quota-Mechanism", Grouped, Must;
    TimeQuotaType = 1271, G, "Time-Quota-Type", Enumerated, Must, 0..=1;
    BaseTimeInterval = 1265, G, "Base-Time-Interval", Unsigned32, Must;
    RatType = 1032, G, "RAT-Type", Enumerated, May, 0..=2000;
    SmsInformation = 2000, G, "SMS-Information", Grouped, Must;
    DataCodingScheme = 2001, G, "Data-Coding-Scheme", Integer32, Must;
    SmMessageType = 2007, G, "SM-Message-Type", Enumerated, Must, 0..=2;
    SmsNode = 2016, G, "SMS-Node", Enumerated, Must, 0..=3;
    SmscAddress = 2017, G, "SMSC-Address", Address, Must;
    RecipientInfo = 2026, G, "Recipient-Info", Grouped, Must;
    OriginatorReceivedAddress = 2027, G, "Originator-Received-Address", Grouped, Must;
    PdnConnectionChargingId = 2050, G, "PDN-Connection-Charging-ID", Unsigned32, Must;
    NodeId = 2064, G, "Node-Id", Utf8String, Must;
    SgwAddress = 2067, G, "SGW-Address", Address, Must;
}

const BASE_CODES: usize = 512;
const TGPP_CODES: usize = 2112;
/// What `lookup_index` returns for an AVP the dictionary does not know.
pub const UNKNOWN: u8 = u8::MAX;

const fn build_index<const N: usize>(vendor_id: u32) -> [u8; N] {
    assert!(
        DEFS.len() < UNKNOWN as usize,
        "the dictionary outgrew u8 indexes"
    );
    let mut table = [UNKNOWN; N];
    let mut i = 0;
    while i < DEFS.len() {
        let d = &DEFS[i];
        assert!(d.id as usize == i, "DEFS out of AvpId order");
        if d.vendor_id == vendor_id {
            assert!((d.code as usize) < N, "AVP code beyond the index: grow it");
            assert!(table[d.code as usize] == UNKNOWN, "AVP defined twice");
            table[d.code as usize] = i as u8;
        }
        i += 1;
    }
    table
}

/// Index of base and RFC 8506 AVPs (vendor 0) by code.
static BASE_INDEX: [u8; BASE_CODES] = build_index::<BASE_CODES>(0);
/// Index of 3GPP AVPs (vendor 10415) by code.
static TGPP_INDEX: [u8; TGPP_CODES] = build_index::<TGPP_CODES>(VENDOR_3GPP);

/// Finds an AVP by code and Vendor-ID (0 for none).
#[inline(always)]
pub fn lookup(code: u32, vendor_id: u32) -> Option<&'static AvpDef> {
    DEFS.get(lookup_index(code, vendor_id) as usize)
}

/// The `AvpId` (as `u8`, see `index`) of an AVP, or `UNKNOWN`.
#[inline(always)]
pub fn lookup_index(code: u32, vendor_id: u32) -> u8 {
    let table: &[u8] = match vendor_id {
        0 => &BASE_INDEX,
        VENDOR_3GPP => &TGPP_INDEX,
        _ => return UNKNOWN,
    };
    table.get(code as usize).copied().unwrap_or(UNKNOWN)
}

impl AvpId {
    /// The definition of this AVP.
    #[inline(always)]
    pub fn def(self) -> &'static AvpDef {
        &DEFS[self as usize]
    }
}

/// How often an AVP may occur in a command (RFC 6733 §3.2 CCF).
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub avp: AvpId,
    pub min: u8,
    /// `u8::MAX` for unbounded.
    pub max: u8,
}

const fn one(avp: AvpId) -> Rule {
    Rule {
        avp,
        min: 1,
        max: 1,
    }
}
const fn opt(avp: AvpId) -> Rule {
    Rule {
        avp,
        min: 0,
        max: 1,
    }
}
const fn any(avp: AvpId) -> Rule {
    Rule {
        avp,
        min: 0,
        max: u8::MAX,
    }
}
const fn some(avp: AvpId) -> Rule {
    Rule {
        avp,
        min: 1,
        max: u8::MAX,
    }
}

/// The grammar of one command, one direction. Every command here ends in `*[AVP]`, so
/// AVPs outside the rules are allowed unless their M bit is set (then 5001).
#[derive(Clone, Copy, Debug)]
pub struct CommandDef {
    pub name: &'static str,
    pub code: u32,
    pub request: bool,
    pub rules: &'static [Rule],
}

use AvpId as A;

/// CER (RFC 6733 §5.3.1).
pub const CER: CommandDef = CommandDef {
    name: "CER",
    code: super::command::CAPABILITIES_EXCHANGE,
    request: true,
    rules: &[
        one(A::OriginHost),
        one(A::OriginRealm),
        some(A::HostIpAddress),
        one(A::VendorId),
        one(A::ProductName),
        opt(A::OriginStateId),
        any(A::SupportedVendorId),
        any(A::AuthApplicationId),
        any(A::InbandSecurityId),
        any(A::AcctApplicationId),
        any(A::VendorSpecificApplicationId),
        opt(A::FirmwareRevision),
    ],
};

/// CEA (RFC 6733 §5.3.2).
pub const CEA: CommandDef = CommandDef {
    name: "CEA",
    code: super::command::CAPABILITIES_EXCHANGE,
    request: false,
    rules: &[
        one(A::ResultCode),
        one(A::OriginHost),
        one(A::OriginRealm),
        some(A::HostIpAddress),
        one(A::VendorId),
        one(A::ProductName),
        opt(A::OriginStateId),
        opt(A::ErrorMessage),
        opt(A::FailedAvp),
        any(A::SupportedVendorId),
        any(A::AuthApplicationId),
        any(A::InbandSecurityId),
        any(A::AcctApplicationId),
        any(A::VendorSpecificApplicationId),
        opt(A::FirmwareRevision),
    ],
};

/// DWR (RFC 6733 §5.5.1).
pub const DWR: CommandDef = CommandDef {
    name: "DWR",
    code: super::command::DEVICE_WATCHDOG,
    request: true,
    rules: &[
        one(A::OriginHost),
        one(A::OriginRealm),
        opt(A::OriginStateId),
    ],
};

/// DWA (RFC 6733 §5.5.2).
pub const DWA: CommandDef = CommandDef {
    name: "DWA",
    code: super::command::DEVICE_WATCHDOG,
    request: false,
    rules: &[
        one(A::ResultCode),
        one(A::OriginHost),
        one(A::OriginRealm),
        opt(A::ErrorMessage),
        opt(A::FailedAvp),
        opt(A::OriginStateId),
    ],
};

/// DPR (RFC 6733 §5.4.1).
pub const DPR: CommandDef = CommandDef {
    name: "DPR",
    code: super::command::DISCONNECT_PEER,
    request: true,
    rules: &[
        one(A::OriginHost),
        one(A::OriginRealm),
        one(A::DisconnectCause),
    ],
};

/// DPA (RFC 6733 §5.4.2).
pub const DPA: CommandDef = CommandDef {
    name: "DPA",
    code: super::command::DISCONNECT_PEER,
    request: false,
    rules: &[
        one(A::ResultCode),
        one(A::OriginHost),
        one(A::OriginRealm),
        opt(A::ErrorMessage),
        opt(A::FailedAvp),
    ],
};

/// CCR (RFC 8506 §3.1 with the additions of 3GPP TS 32.299 §6.4.2).
pub const CCR: CommandDef = CommandDef {
    name: "CCR",
    code: super::command::CREDIT_CONTROL,
    request: true,
    rules: &[
        one(A::SessionId),
        one(A::OriginHost),
        one(A::OriginRealm),
        one(A::DestinationRealm),
        one(A::AuthApplicationId),
        one(A::ServiceContextId),
        one(A::CcRequestType),
        one(A::CcRequestNumber),
        opt(A::DestinationHost),
        opt(A::UserName),
        opt(A::CcSubSessionId),
        opt(A::AcctMultiSessionId),
        opt(A::OriginStateId),
        opt(A::EventTimestamp),
        any(A::SubscriptionId),
        opt(A::ServiceIdentifier),
        opt(A::TerminationCause),
        opt(A::RequestedServiceUnit),
        opt(A::RequestedAction),
        any(A::UsedServiceUnit),
        opt(A::MultipleServicesIndicator),
        any(A::MultipleServicesCreditControl),
        any(A::ServiceParameterInfo),
        opt(A::CcCorrelationId),
        opt(A::UserEquipmentInfo),
        any(A::ProxyInfo),
        any(A::RouteRecord),
        opt(A::ServiceInformation),
    ],
};

/// CCA (RFC 8506 §3.2 with 3GPP TS 32.299 §6.4.3), as gyro receives it in tests and
/// the load generator.
pub const CCA: CommandDef = CommandDef {
    name: "CCA",
    code: super::command::CREDIT_CONTROL,
    request: false,
    rules: &[
        one(A::SessionId),
        one(A::ResultCode),
        one(A::OriginHost),
        one(A::OriginRealm),
        one(A::AuthApplicationId),
        one(A::CcRequestType),
        one(A::CcRequestNumber),
        opt(A::UserName),
        opt(A::CcSessionFailover),
        opt(A::CcSubSessionId),
        opt(A::AcctMultiSessionId),
        opt(A::OriginStateId),
        opt(A::EventTimestamp),
        opt(A::GrantedServiceUnit),
        any(A::MultipleServicesCreditControl),
        opt(A::CostInformation),
        opt(A::FinalUnitIndication),
        opt(A::CheckBalanceResult),
        opt(A::CreditControlFailureHandling),
        opt(A::DirectDebitingFailureHandling),
        opt(A::ValidityTime),
        any(A::RedirectHost),
        opt(A::RedirectHostUsage),
        opt(A::RedirectMaxCacheTime),
        any(A::ProxyInfo),
        any(A::RouteRecord),
        any(A::FailedAvp),
        opt(A::ErrorMessage),
        opt(A::ErrorReportingHost),
        opt(A::ServiceInformation),
    ],
};

/// Bitset over `AvpId` of the AVPs a command's grammar names.
pub const fn grammar_set(cmd: &CommandDef) -> [bool; DEFS.len()] {
    let mut set = [false; DEFS.len()];
    let mut i = 0;
    while i < cmd.rules.len() {
        set[cmd.rules[i].avp as usize] = true;
        i += 1;
    }
    set
}

/// Every command definition, for tests and docs.
pub const COMMANDS: &[&CommandDef] = &[&CER, &CEA, &DWR, &DWA, &DPR, &DPA, &CCR, &CCA];

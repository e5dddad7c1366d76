#!/usr/bin/env python3
"""Gy/Ro load client for gyro's interop tests, built on python-diameter.

python-diameter (PyPI, pinned to 0.9.0 in requirements.txt) is an
independent Diameter codec: it builds the requests here and decodes every
answer gyro (or a relay in front of gyro) sends back. The transport, the
peer state machine and all checks are in this file, over one TCP connection:

    CER/CEA, one DWR/DWA, then the charging traffic, then DPR/DPA.

Charging traffic (--flow):
    session  each session is CCR-I (RSU), --updates x CCR-U (USU + RSU),
             CCR-T (USU); data service, Rating-Group --rating-group in MSCC,
             Service-Information/PS-Information attached.
    event    each event is one CCR-EVENT, Requested-Action DIRECT_DEBITING,
             Service-Identifier --service-id, RSU of one service-specific unit.

At most --window requests are outstanding at any time; a session's next
request leaves once the answer to its previous one has arrived. DWRs and
DPRs the peer sends meanwhile are answered.

Every answer is checked field by field: header (R/E bits clear, P bit as in
the request, command code, Application-Id, Hop-by-Hop and End-to-End ids
echoed), Session-Id, Origin-Host, Origin-Realm, Auth-Application-Id,
CC-Request-Type, CC-Request-Number, Result-Code 2001, the M-bit on those base
AVPs, every AVP value decodable, and on CCA-I/U an MSCC for the rating group
with Granted-Service-Unit/CC-Total-Octets (and a 2001 MSCC Result-Code if
one is present).

Output: progress lines, up to --show-failures "FAIL ..." lines, then one
final line

    RESULT ok=N failed=M

ok counts sessions (or events) whose every answer passed; failed counts the
other sessions/events plus failed peer-level exchanges (CEA, DWA, DPA). The
exit status is 0 only when failed is 0 and every session/event passed.

Two known python-diameter 0.9.0 habits are corrected before sending: its CCR
carries Application-Id 0 in the header (relays then refuse the request as
unroutable), and it encodes Origin-Host, Origin-Realm and Destination-Host
of a CCR without the M-bit that RFC 6733 section 4.5 requires.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import itertools
import os
import random
import select
import socket
import sys
import time

from diameter.message import Message, MessageHeader
from diameter.message.avp import Avp, AvpGrouped
from diameter.message.packer import Unpacker
from diameter.message.constants import (
    APP_DIAMETER_COMMON_MESSAGES, APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
    AVP_AUTH_APPLICATION_ID, AVP_CC_REQUEST_NUMBER, AVP_CC_REQUEST_TYPE,
    AVP_CC_SERVICE_SPECIFIC_UNITS, AVP_CC_TOTAL_OCTETS, AVP_DESTINATION_HOST,
    AVP_DESTINATION_REALM, AVP_GRANTED_SERVICE_UNIT,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, AVP_ORIGIN_HOST, AVP_ORIGIN_REALM,
    AVP_PRODUCT_NAME, AVP_RATING_GROUP, AVP_RESULT_CODE, AVP_SESSION_ID,
    E_CC_REQUEST_TYPE_EVENT_REQUEST, E_CC_REQUEST_TYPE_INITIAL_REQUEST,
    E_CC_REQUEST_TYPE_TERMINATION_REQUEST, E_CC_REQUEST_TYPE_UPDATE_REQUEST,
    E_DISCONNECT_CAUSE_DO_NOT_WANT_TO_TALK_TO_YOU,
    E_MULTIPLE_SERVICES_INDICATOR_MULTIPLE_SERVICES_SUPPORTED,
    E_REQUESTED_ACTION_DIRECT_DEBITING, E_RESULT_CODE_DIAMETER_SUCCESS,
    E_SUBSCRIPTION_ID_TYPE_END_USER_E164, E_TERMINATION_CAUSE_DIAMETER_LOGOUT,
    VENDOR_TGPP)
from diameter.message.avp.grouped import (
    MultipleServicesCreditControl, PsInformation, RequestedServiceUnit,
    ServiceInformation, SubscriptionId, UsedServiceUnit)
from diameter.message.commands import (
    CapabilitiesExchangeRequest, CreditControlRequest, DeviceWatchdogAnswer,
    DeviceWatchdogRequest, DisconnectPeerAnswer, DisconnectPeerRequest)

CER, CCR, DWR, DPR = 257, 272, 280, 282
GY = APP_DIAMETER_CREDIT_CONTROL_APPLICATION  # 4
SUCCESS = E_RESULT_CODE_DIAMETER_SUCCESS  # 2001

# 3GPP TS 32.299 Reporting-Reason values used here
REPORTING_QUOTA_EXHAUSTED = 3
REPORTING_FINAL = 2
RAT_TYPE_EUTRAN = b"\x06"  # 3GPP TS 29.061 3GPP-RAT-Type

# Base-protocol AVPs whose M-bit MUST be set (RFC 6733 4.5, RFC 8506 8).
# Outgoing: forced on. Incoming: checked on answers.
MUST_MANDATORY = {
    AVP_SESSION_ID: "Session-Id",
    AVP_ORIGIN_HOST: "Origin-Host",
    AVP_ORIGIN_REALM: "Origin-Realm",
    AVP_DESTINATION_HOST: "Destination-Host",
    AVP_DESTINATION_REALM: "Destination-Realm",
    AVP_RESULT_CODE: "Result-Code",
    AVP_AUTH_APPLICATION_ID: "Auth-Application-Id",
    AVP_CC_REQUEST_TYPE: "CC-Request-Type",
    AVP_CC_REQUEST_NUMBER: "CC-Request-Number",
}

KIND_NAME = {E_CC_REQUEST_TYPE_INITIAL_REQUEST: "CCR-I",
             E_CC_REQUEST_TYPE_UPDATE_REQUEST: "CCR-U",
             E_CC_REQUEST_TYPE_TERMINATION_REQUEST: "CCR-T",
             E_CC_REQUEST_TYPE_EVENT_REQUEST: "CCR-E"}


class PeerGone(Exception):
    """The connection can no longer be used."""


# --------------------------------------------------------------------------
# wire: framing, encoding, decoding


def encode(cmd: Message, app_id: int, hbh: int, e2e: int) -> bytes:
    """Materialise a python-diameter command into bytes, fixing its flags."""
    avps = list(cmd.avps)  # generated from the command's attributes
    for avp in avps:
        if avp.vendor_id == 0 and avp.code in MUST_MANDATORY:
            avp.is_mandatory = True
    header = cmd.header
    header.application_id = app_id
    header.hop_by_hop_identifier = hbh
    header.end_to_end_identifier = e2e
    return Message(header, avps).as_bytes()


class Received:
    """A decoded message: its header and its top-level AVPs."""

    def __init__(self, data: bytes):
        self.raw = data
        self.header = MessageHeader.from_bytes(data)
        unpacker = Unpacker(data)
        unpacker.set_position(20)
        self.avps: list[Avp] = []
        while not unpacker.is_done():
            self.avps.append(Avp.from_unpacker(unpacker))
        # force every value through the decoder now, so a malformed AVP
        # is reported against this message rather than later
        _decode_all(self.avps)

    @property
    def is_request(self) -> bool:
        return self.header.is_request

    def first(self, code: int, vendor: int = 0, within: list[Avp] | None = None):
        for avp in self.avps if within is None else within:
            if avp.code == code and avp.vendor_id == vendor:
                return avp
        return None

    def all(self, code: int, vendor: int = 0, within: list[Avp] | None = None):
        return [a for a in (self.avps if within is None else within)
                if a.code == code and a.vendor_id == vendor]

    def value(self, code: int, vendor: int = 0):
        avp = self.first(code, vendor)
        return None if avp is None else avp.value


def _decode_all(avps: list[Avp]):
    for avp in avps:
        try:
            v = avp.value
        except Exception as e:
            raise ValueError(f"AVP {avp.code} (vendor {avp.vendor_id}) does not "
                             f"decode: {e}") from None
        if isinstance(avp, AvpGrouped):
            _decode_all(v)


def as_text(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


class Connection:
    """One Diameter connection over TCP; answers the peer's DWR and DPR."""

    def __init__(self, opts):
        self.opts = opts
        self.sock = socket.create_connection((opts.host, opts.port), timeout=opts.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.inbuf = bytearray()
        self.ids = itertools.count(random.randrange(1, 1 << 30))
        # RFC 6733 3: End-to-End ids start with the low 12 bits of the time
        self.e2e = itertools.count(((int(time.time()) & 0xFFF) << 20)
                                   | random.randrange(0, 1 << 19))
        self.peer_disconnecting = False
        self.dead = False
        self.dwrs_answered = 0

    def local_ip(self) -> str:
        return self.sock.getsockname()[0]

    def send(self, cmd: Message, app_id: int) -> tuple[int, int]:
        hbh = next(self.ids) & 0xFFFFFFFF
        e2e = next(self.e2e) & 0xFFFFFFFF
        self._write(encode(cmd, app_id, hbh, e2e))
        return hbh, e2e

    def _write(self, data: bytes):
        view = memoryview(data)
        deadline = time.monotonic() + self.opts.timeout
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerGone("send blocked longer than --timeout")
                select.select([], [self.sock], [], left)
            except OSError as e:
                raise PeerGone(f"send failed: {e}") from None

    def receive(self, wait: float) -> Received | None:
        """Next answer (or unhandled request) within `wait` seconds, else None.

        DWR and DPR from the peer are answered here and not returned.
        """
        deadline = time.monotonic() + wait
        while True:
            msg = self._next_buffered()
            if msg is not None:
                if msg.is_request and msg.header.command_code in (DWR, DPR):
                    self._answer_peer_request(msg)
                    continue
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            try:
                chunk = self.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as e:
                raise PeerGone(f"receive failed: {e}") from None
            if not chunk:
                raise PeerGone("peer closed the connection")
            self.inbuf += chunk

    def _next_buffered(self) -> Received | None:
        if len(self.inbuf) < 20:
            return None
        version = self.inbuf[0]
        length = int.from_bytes(self.inbuf[1:4], "big")
        if version != 1 or length < 20 or length % 4:
            raise PeerGone(f"unframeable message: version {version}, length {length}")
        if len(self.inbuf) < length:
            return None
        data = bytes(self.inbuf[:length])
        del self.inbuf[:length]
        try:
            return Received(data)
        except Exception as e:
            raise PeerGone(f"undecodable message ({data[:20].hex()}...): {e}") from None

    def _answer_peer_request(self, req: Received):
        cmd = (DeviceWatchdogAnswer() if req.header.command_code == DWR
               else DisconnectPeerAnswer())
        cmd.result_code = SUCCESS
        cmd.origin_host = self.opts.origin_host.encode()
        cmd.origin_realm = self.opts.origin_realm.encode()
        self._write(encode(cmd, req.header.application_id,
                           req.header.hop_by_hop_identifier,
                           req.header.end_to_end_identifier))
        peer = as_text(req.value(AVP_ORIGIN_HOST))
        if req.header.command_code == DWR:
            self.dwrs_answered += 1
            log(f"answered a DWR from {peer}")
        else:
            self.peer_disconnecting = True
            log(f"answered a DPR from {peer}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# checks


class Verdict:
    """Collects problems found in one answer."""

    def __init__(self, what: str):
        self.what = what
        self.problems: list[str] = []

    def expect(self, cond: bool, text: str):
        if not cond:
            self.problems.append(text)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_header(v: Verdict, ans: Received, req_flags: int, cmd: int, app: int,
                 hbh: int, e2e: int):
    h = ans.header
    v.expect(not h.is_request, "R-bit set on an answer")
    v.expect(not h.is_error, f"E-bit set (Result-Code {ans.value(AVP_RESULT_CODE)})")
    v.expect(h.is_proxyable == bool(req_flags & 0x40),
             f"P-bit {int(h.is_proxyable)} differs from the request's")
    v.expect(h.command_code == cmd, f"command code {h.command_code} != {cmd}")
    v.expect(h.application_id == app, f"Application-Id {h.application_id} != {app}")
    v.expect(h.hop_by_hop_identifier == hbh, "Hop-by-Hop id not echoed")
    v.expect(h.end_to_end_identifier == e2e, "End-to-End id not echoed")
    for code in (AVP_ORIGIN_HOST, AVP_ORIGIN_REALM, AVP_RESULT_CODE):
        name = MUST_MANDATORY[code]
        found = ans.all(code)
        v.expect(len(found) == 1, f"{len(found)} {name} AVPs (want exactly 1)")
    for avp in ans.avps:
        if avp.vendor_id == 0 and avp.code in MUST_MANDATORY:
            v.expect(avp.is_mandatory, f"{MUST_MANDATORY[avp.code]} without M-bit")
    rc = ans.value(AVP_RESULT_CODE)
    v.expect(rc == SUCCESS, f"Result-Code {rc} != {SUCCESS}")


def check_cca(v: Verdict, ans: Received, sent: "Outstanding", opts):
    s = sent
    check_header(v, ans, 0x80 | 0x40, CCR, GY, s.hbh, s.e2e)
    sid = ans.all(AVP_SESSION_ID)
    v.expect(len(sid) == 1 and as_text(sid[0].value) == s.session.sid,
             f"Session-Id {[as_text(a.value) for a in sid]} != {s.session.sid!r}")
    if sid:
        v.expect(ans.avps[0].code == AVP_SESSION_ID, "Session-Id is not the first AVP")
    v.expect(ans.value(AVP_AUTH_APPLICATION_ID) == GY,
             f"Auth-Application-Id {ans.value(AVP_AUTH_APPLICATION_ID)} != {GY}")
    v.expect(ans.value(AVP_CC_REQUEST_TYPE) == s.kind,
             f"CC-Request-Type {ans.value(AVP_CC_REQUEST_TYPE)} != {s.kind}")
    v.expect(ans.value(AVP_CC_REQUEST_NUMBER) == s.number,
             f"CC-Request-Number {ans.value(AVP_CC_REQUEST_NUMBER)} != {s.number}")
    msccs = ans.all(AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    granted = None
    if s.kind in (E_CC_REQUEST_TYPE_INITIAL_REQUEST, E_CC_REQUEST_TYPE_UPDATE_REQUEST):
        mine = [m for m in msccs
                if ans.first(AVP_RATING_GROUP, within=m.value) is not None
                and ans.first(AVP_RATING_GROUP, within=m.value).value == opts.rating_group]
        v.expect(len(mine) == 1,
                 f"{len(mine)} MSCC for Rating-Group {opts.rating_group} (want 1)")
        if mine:
            inner = mine[0].value
            mrc = ans.first(AVP_RESULT_CODE, within=inner)
            v.expect(mrc is None or mrc.value == SUCCESS,
                     f"MSCC Result-Code {mrc.value if mrc else None} != {SUCCESS}")
            gsu = ans.first(AVP_GRANTED_SERVICE_UNIT, within=inner)
            v.expect(gsu is not None, "MSCC without Granted-Service-Unit")
            if gsu is not None:
                octets = ans.first(AVP_CC_TOTAL_OCTETS, within=gsu.value)
                v.expect(octets is not None, "Granted-Service-Unit without CC-Total-Octets")
                if octets is not None:
                    granted = octets.value
                    # the server decides the amount (it may exceed the RSU),
                    # but a 2001 grant of nothing is not a grant
                    v.expect(granted > 0, f"granted CC-Total-Octets {granted}")
    elif s.kind == E_CC_REQUEST_TYPE_EVENT_REQUEST:
        # direct debiting: units granted (= debited), top level or in an MSCC
        gsus = ans.all(AVP_GRANTED_SERVICE_UNIT)
        for m in msccs:
            gsus += ans.all(AVP_GRANTED_SERVICE_UNIT, within=m.value)
            mrc = ans.first(AVP_RESULT_CODE, within=m.value)
            v.expect(mrc is None or mrc.value == SUCCESS,
                     f"MSCC Result-Code {mrc.value if mrc else None} != {SUCCESS}")
        v.expect(len(gsus) == 1, f"{len(gsus)} Granted-Service-Unit (want 1)")
        if gsus:
            units = ans.first(AVP_CC_SERVICE_SPECIFIC_UNITS, within=gsus[0].value)
            v.expect(units is not None and units.value == 1,
                     f"granted CC-Service-Specific-Units "
                     f"{units.value if units else None} != 1")
    return granted


# --------------------------------------------------------------------------
# requests


def base_ccr(opts, session: "Session", kind: int) -> CreditControlRequest:
    ccr = CreditControlRequest()
    ccr.session_id = session.sid
    ccr.origin_host = opts.origin_host.encode()
    ccr.origin_realm = opts.origin_realm.encode()
    ccr.destination_realm = opts.dest_realm.encode()
    if session.server_host and kind != E_CC_REQUEST_TYPE_INITIAL_REQUEST:
        # RFC 8506 5.1: later requests of a session go to the server that answered
        ccr.destination_host = session.server_host.encode()
    ccr.auth_application_id = GY
    ccr.cc_request_type = kind
    ccr.cc_request_number = session.number
    ccr.event_timestamp = datetime.datetime.now(datetime.timezone.utc)
    ccr.subscription_id = [SubscriptionId(
        subscription_id_type=E_SUBSCRIPTION_ID_TYPE_END_USER_E164,
        subscription_id_data=session.msisdn)]
    return ccr


def data_ccr(opts, session: "Session", kind: int) -> CreditControlRequest:
    ccr = base_ccr(opts, session, kind)
    ccr.service_context_id = "32251@3gpp.org"
    ccr.multiple_services_indicator = E_MULTIPLE_SERVICES_INDICATOR_MULTIPLE_SERVICES_SUPPORTED
    mscc = MultipleServicesCreditControl(rating_group=opts.rating_group)
    if kind != E_CC_REQUEST_TYPE_TERMINATION_REQUEST:
        mscc.requested_service_unit = RequestedServiceUnit(cc_total_octets=opts.rsu_octets)
    if kind == E_CC_REQUEST_TYPE_UPDATE_REQUEST:
        used, reason = session.granted, REPORTING_QUOTA_EXHAUSTED
    elif kind == E_CC_REQUEST_TYPE_TERMINATION_REQUEST:
        used, reason = session.granted // 2, REPORTING_FINAL
    else:
        used = reason = None
    if used is not None:
        mscc.used_service_unit = [UsedServiceUnit(
            cc_total_octets=used, cc_input_octets=used // 3,
            cc_output_octets=used - used // 3, reporting_reason=reason)]
    ccr.multiple_services_credit_control = [mscc]
    if kind == E_CC_REQUEST_TYPE_TERMINATION_REQUEST:
        ccr.termination_cause = E_TERMINATION_CAUSE_DIAMETER_LOGOUT
    ccr.service_information = ServiceInformation(ps_information=PsInformation(
        tgpp_charging_id=session.charging_id.to_bytes(4, "big"),
        called_station_id=opts.apn,
        tgpp_rat_type=RAT_TYPE_EUTRAN))
    return ccr


def event_ccr(opts, session: "Session") -> CreditControlRequest:
    ccr = base_ccr(opts, session, E_CC_REQUEST_TYPE_EVENT_REQUEST)
    ccr.service_context_id = "32274@3gpp.org"
    ccr.requested_action = E_REQUESTED_ACTION_DIRECT_DEBITING
    ccr.service_identifier = opts.service_id
    ccr.requested_service_unit = RequestedServiceUnit(cc_service_specific_units=1)
    return ccr


# --------------------------------------------------------------------------
# the charging run


class Session:
    """One data session or one event, and how far it got."""

    def __init__(self, opts, index: int, run_tag: str):
        self.index = index
        self.sid = f"{opts.origin_host};{run_tag};{index};gy_client"
        span = opts.subscribers
        self.msisdn = str(opts.first_msisdn + (index % span))
        self.charging_id = (index * 7919 + 1) & 0xFFFFFFFF
        if opts.flow == "event":
            self.plan = [E_CC_REQUEST_TYPE_EVENT_REQUEST]
        else:
            self.plan = ([E_CC_REQUEST_TYPE_INITIAL_REQUEST]
                         + [E_CC_REQUEST_TYPE_UPDATE_REQUEST] * opts.updates
                         + [E_CC_REQUEST_TYPE_TERMINATION_REQUEST])
        self.number = 0  # CC-Request-Number of the next request
        self.granted = 0
        self.server_host: str | None = None
        self.failure: str | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or self.number >= len(self.plan)


class Outstanding:
    def __init__(self, session: Session, kind: int, number: int, hbh: int, e2e: int):
        self.session, self.kind, self.number = session, kind, number
        self.hbh, self.e2e = hbh, e2e
        self.sent_at = time.monotonic()


class Tally:
    def __init__(self, opts):
        self.opts = opts
        self.peer_failures = 0
        self.fail_lines = 0

    def fail(self, text: str):
        if self.fail_lines < self.opts.show_failures:
            print(f"FAIL {text}", flush=True)
        self.fail_lines += 1


def log(text: str):
    print(text, flush=True)


def exchange(conn: Connection, tally: Tally, cmd: Message, name: str,
             extra=None) -> Received | None:
    """A base-protocol request and its checked answer (one failure at most)."""
    code = cmd.header.command_code
    hbh, e2e = conn.send(cmd, APP_DIAMETER_COMMON_MESSAGES)
    ans = await_answer(conn, hbh)
    if ans is None:
        tally.peer_failures += 1
        tally.fail(f"{name}: no answer within {conn.opts.timeout} s")
        return None
    v = Verdict(name)
    check_header(v, ans, 0x80, code, APP_DIAMETER_COMMON_MESSAGES, hbh, e2e)
    if extra is not None:
        extra(v, ans)
    if not v.ok:
        tally.peer_failures += 1
        tally.fail(f"{name}: " + "; ".join(v.problems))
    return ans


def await_answer(conn: Connection, hbh: int) -> Received | None:
    deadline = time.monotonic() + conn.opts.timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        msg = conn.receive(left)
        if msg is None:
            return None
        if not msg.is_request and msg.header.hop_by_hop_identifier == hbh:
            return msg
        log(f"ignored unexpected message: command {msg.header.command_code}, "
            f"request={msg.is_request}")


def capabilities(conn: Connection, tally: Tally, opts) -> str | None:
    cer = CapabilitiesExchangeRequest()
    cer.origin_host = opts.origin_host.encode()
    cer.origin_realm = opts.origin_realm.encode()
    cer.host_ip_address = [conn.local_ip()]
    cer.vendor_id = 0
    cer.product_name = "gyro-interop gy_client (python-diameter 0.9.0)"
    cer.origin_state_id = int(time.time()) & 0xFFFFFFFF
    cer.supported_vendor_id = [VENDOR_TGPP]
    cer.auth_application_id = [GY]

    def announces_gy(v: Verdict, cea: Received):
        apps = [a.value for a in cea.all(AVP_AUTH_APPLICATION_ID)]
        v.expect(GY in apps or 0xFFFFFFFF in apps,
                 f"Auth-Application-Id {apps} announces neither 4 nor relay")

    cea = exchange(conn, tally, cer, "CEA", announces_gy)
    if cea is None:
        return None
    apps = [a.value for a in cea.all(AVP_AUTH_APPLICATION_ID)]
    peer = as_text(cea.value(AVP_ORIGIN_HOST))
    log(f"CEA from {peer} / {as_text(cea.value(AVP_ORIGIN_REALM))} "
        f"({as_text(cea.value(AVP_PRODUCT_NAME))}): Result-Code "
        f"{cea.value(AVP_RESULT_CODE)}, Auth-Application-Id {apps}")
    return peer if cea.value(AVP_RESULT_CODE) == SUCCESS else None


def watchdog(conn: Connection, tally: Tally, opts):
    dwr = DeviceWatchdogRequest()
    dwr.origin_host = opts.origin_host.encode()
    dwr.origin_realm = opts.origin_realm.encode()
    dwa = exchange(conn, tally, dwr, "DWA")
    if dwa is not None:
        log(f"DWA: Result-Code {dwa.value(AVP_RESULT_CODE)}")


def disconnect(conn: Connection, tally: Tally, opts):
    dpr = DisconnectPeerRequest()
    dpr.origin_host = opts.origin_host.encode()
    dpr.origin_realm = opts.origin_realm.encode()
    dpr.disconnect_cause = E_DISCONNECT_CAUSE_DO_NOT_WANT_TO_TALK_TO_YOU
    dpa = exchange(conn, tally, dpr, "DPA")
    if dpa is not None:
        log(f"DPA: Result-Code {dpa.value(AVP_RESULT_CODE)}")


def charge(conn: Connection, tally: Tally, opts) -> list[Session]:
    run_tag = f"{int(time.time())};{os.getpid()}"
    sessions = [Session(opts, i, run_tag) for i in range(opts.sessions)]
    fresh = collections.deque(sessions)
    ready: collections.deque[Session] = collections.deque()  # awaiting their next request
    pending: dict[int, Outstanding] = {}
    answers = 0
    started = time.monotonic()

    def send_next(s: Session):
        kind = s.plan[s.number]
        cmd = event_ccr(opts, s) if kind == E_CC_REQUEST_TYPE_EVENT_REQUEST \
            else data_ccr(opts, s, kind)
        hbh, e2e = conn.send(cmd, GY)
        pending[hbh] = Outstanding(s, kind, s.number, hbh, e2e)

    def failed(s: Session, text: str):
        if s.failure is None:
            s.failure = text
            tally.fail(f"session {s.index} ({s.sid}, {s.msisdn}): {text}")

    try:
        while fresh or ready or pending:
            while len(pending) < opts.window and (ready or fresh):
                send_next(ready.popleft() if ready else fresh.popleft())
            oldest = min(p.sent_at for p in pending.values())
            wait = max(0.0, oldest + opts.timeout - time.monotonic())
            msg = conn.receive(wait)
            if msg is None:
                now = time.monotonic()
                for hbh, p in list(pending.items()):
                    if now - p.sent_at >= opts.timeout:
                        del pending[hbh]
                        failed(p.session, f"{KIND_NAME[p.kind]} #{p.number}: "
                                          f"no answer within {opts.timeout} s")
                continue
            p = None if msg.is_request else pending.pop(msg.header.hop_by_hop_identifier, None)
            if p is None:
                tally.peer_failures += 1
                tally.fail(f"unexpected message: command {msg.header.command_code}, "
                           f"request={msg.is_request}, Hop-by-Hop "
                           f"{msg.header.hop_by_hop_identifier:#x}")
                continue
            answers += 1
            s = p.session
            v = Verdict(KIND_NAME[p.kind])
            granted = check_cca(v, msg, p, opts)
            if not v.ok:
                failed(s, f"CCA for {KIND_NAME[p.kind]} #{p.number}: " + "; ".join(v.problems))
                continue
            if p.kind == E_CC_REQUEST_TYPE_INITIAL_REQUEST:
                s.server_host = as_text(msg.value(AVP_ORIGIN_HOST))
            if granted is not None:
                s.granted = granted
            s.number += 1
            if not s.finished:
                ready.append(s)
    except PeerGone as e:
        conn.dead = True
        tally.peer_failures += 1
        tally.fail(f"connection: {e}")
        for s in sessions:
            if not s.finished:
                failed(s, "not completed: connection lost")
    finally:
        took = time.monotonic() - started
        rate = answers / took if took > 0 else 0.0
        log(f"{opts.flow}: {answers} CCA for {len(sessions)} "
            f"{'events' if opts.flow == 'event' else 'sessions'} in {took:.2f} s "
            f"({rate:.0f} CCA/s, window {opts.window})")
    return sessions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3868)
    ap.add_argument("--origin-host", default="pgw.client.gyro.test")
    ap.add_argument("--origin-realm", default="client.gyro.test")
    ap.add_argument("--dest-realm", default="gyro.local")
    ap.add_argument("--sessions", type=int, default=1,
                    help="data sessions (or events with --flow event)")
    ap.add_argument("--window", type=int, default=16, help="requests in flight at most")
    ap.add_argument("--flow", choices=("session", "event"), default="session")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds to wait for each answer (and to connect)")
    ap.add_argument("--updates", type=int, default=1, help="CCR-U per session")
    ap.add_argument("--first-msisdn", type=int, default=491700000000,
                    help="MSISDN of session 0; session i uses first + i mod --subscribers")
    ap.add_argument("--subscribers", type=int, default=10000)
    ap.add_argument("--rating-group", type=int, default=10)
    ap.add_argument("--service-id", type=int, default=1)
    ap.add_argument("--rsu-octets", type=int, default=1_000_000)
    ap.add_argument("--apn", default="internet")
    ap.add_argument("--linger", type=float, default=0.0,
                    help="seconds to stay connected (answering DWRs) before the DPR")
    ap.add_argument("--show-failures", type=int, default=10,
                    help="print at most this many FAIL lines")
    opts = ap.parse_args()
    if opts.sessions < 0 or opts.window < 1 or opts.subscribers < 1:
        ap.error("--sessions must be >= 0, --window and --subscribers >= 1")

    tally = Tally(opts)
    sessions: list[Session] = []
    conn = None
    try:
        conn = Connection(opts)
        if capabilities(conn, tally, opts) is None:
            log("no usable capabilities exchange: nothing charged")
            return finish(opts, tally, sessions)
        watchdog(conn, tally, opts)
        sessions = charge(conn, tally, opts)
        if conn.dead:
            return finish(opts, tally, sessions)
        if opts.linger > 0:
            log(f"lingering {opts.linger} s")
            end = time.monotonic() + opts.linger
            while (left := end - time.monotonic()) > 0:
                stray = conn.receive(left)
                if stray is not None:
                    tally.peer_failures += 1
                    tally.fail(f"unexpected message while idle: command "
                               f"{stray.header.command_code}")
            log(f"DWRs answered: {conn.dwrs_answered}")
        if not conn.peer_disconnecting:
            disconnect(conn, tally, opts)
    except PeerGone as e:
        tally.peer_failures += 1
        tally.fail(f"connection: {e}")
    except OSError as e:
        tally.peer_failures += 1
        tally.fail(f"connection to {opts.host}:{opts.port}: {e}")
    finally:
        if conn is not None:
            conn.close()
    return finish(opts, tally, sessions)


def finish(opts, tally: Tally, sessions: list[Session]) -> int:
    ok = sum(1 for s in sessions if s.failure is None and s.finished)
    failed = (opts.sessions - ok) + tally.peer_failures
    if tally.fail_lines > opts.show_failures:
        log(f"({tally.fail_lines - opts.show_failures} more FAIL lines not shown)")
    log(f"RESULT ok={ok} failed={failed}")
    return 0 if failed == 0 and ok == opts.sessions else 1


if __name__ == "__main__":
    sys.exit(main())

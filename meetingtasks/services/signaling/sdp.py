"""Validation of WebRTC session descriptions (SDP, RFC 8866 as used by JSEP, RFC 8829) and ICE candidates
(RFC 8839). A relay that forwards garbage only moves the failure to the peer's browser, so the signaling
service refuses it with a line that names what is wrong (:class:`InvalidSignal`, a domain refusal).

Checked in an SDP: ``v=0`` first; every line ``<letter>=<value>``; ``o=``, ``s=``, ``t=`` present; at
least one ``m=`` line of the form ``m=<audio|video|application|text|message> <port> <proto> <fmt>...``;
ICE credentials (``a=ice-ufrag``/``a=ice-pwd``) and a DTLS ``a=fingerprint`` at session or media level;
``a=setup``: ``actpass`` in an offer, ``active`` or ``passive`` in an answer.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from meetingtasks.core.errors import PermanentError

_LINE = re.compile(r"^([a-z])=(.*)$")
_MEDIA = re.compile(r"^(audio|video|application|text|message) (\d{1,5})(/\d+)? ([A-Za-z0-9/_.-]+)( \S+)+$")
_ICE_CHAR = re.compile(r"^[A-Za-z0-9+/]{1,32}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}$")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


class InvalidSignal(PermanentError, ValueError):
    """An SDP or ICE candidate that a browser would reject."""


def validate_sdp(sdp: str, kind: Literal["offer", "answer"]) -> list[str]:
    """Check ``sdp`` as an ``kind``; returns the media kinds of its ``m=`` lines, or :class:`InvalidSignal`."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line != ""]
    if not lines or lines[0] != "v=0":
        raise InvalidSignal(f"{kind} SDP must start with 'v=0'")
    seen: dict[str, int] = {}
    media: list[str] = []
    attributes: list[str] = []
    for number, line in enumerate(lines, start=1):
        match = _LINE.match(line)
        if match is None:
            raise InvalidSignal(f"{kind} SDP line {number} is not '<letter>=<value>': {line[:60]!r}")
        letter, value = match.groups()
        seen[letter] = seen.get(letter, 0) + 1
        if letter == "m":
            m = _MEDIA.match(value)
            if m is None or int(m.group(2)) > 65535:
                raise InvalidSignal(f"{kind} SDP line {number}: bad media line {line[:60]!r}")
            media.append(m.group(1))
        elif letter == "a":
            attributes.append(value)
    for required in ("o", "s", "t"):
        if required not in seen:
            raise InvalidSignal(f"{kind} SDP has no '{required}=' line")
    if not media:
        raise InvalidSignal(f"{kind} SDP has no media ('m=') line")
    names = {a.split(":", 1)[0] for a in attributes}
    for required in ("ice-ufrag", "ice-pwd", "fingerprint"):
        if required not in names:
            raise InvalidSignal(f"{kind} SDP has no 'a={required}' (WebRTC needs ICE credentials and DTLS)")
    setups = {a.split(":", 1)[1].strip() for a in attributes if a.startswith("setup:")}
    allowed = {"actpass"} if kind == "offer" else {"active", "passive"}
    if setups and not setups <= allowed:
        raise InvalidSignal(f"{kind} SDP has a=setup:{'/'.join(sorted(setups))}; an {kind} uses "
                            f"{' or '.join(sorted(allowed))}")
    return media


@dataclass(frozen=True)
class Candidate:
    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str


def validate_candidate(candidate: str) -> Candidate:
    """Parse an ICE candidate (``candidate:<foundation> <component> <transport> <priority> <address> <port>
    typ <type> ...``, the form ``RTCIceCandidate.candidate`` has), or :class:`InvalidSignal`."""
    text = candidate.strip()
    if text.startswith("a="):
        text = text[2:]
    if not text.startswith("candidate:"):
        raise InvalidSignal("ICE candidate must start with 'candidate:'")
    parts = text[len("candidate:"):].split()
    if len(parts) < 8 or parts[6] != "typ":
        raise InvalidSignal("ICE candidate needs '<foundation> <component> <transport> <priority> <address> "
                            "<port> typ <type>'")
    foundation, component, transport, priority, address, port, _, ctype = parts[:8]
    if not _ICE_CHAR.match(foundation):
        raise InvalidSignal(f"ICE candidate foundation {foundation!r} is not 1-32 ICE characters")
    if not component.isdigit() or not 1 <= int(component) <= 256:
        raise InvalidSignal(f"ICE candidate component {component!r} is not 1-256")
    if transport.lower() not in ("udp", "tcp"):
        raise InvalidSignal(f"ICE candidate transport {transport!r} is not udp or tcp")
    if not priority.isdigit() or not 1 <= int(priority) <= 2**32 - 1:
        raise InvalidSignal(f"ICE candidate priority {priority!r} is not 1..2^32-1")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not _HOSTNAME.match(address):  # mDNS names (<uuid>.local) hide host addresses
            raise InvalidSignal(
                f"ICE candidate address {address!r} is neither an IP address nor a hostname") from None
    if not port.isdigit() or int(port) > 65535:
        raise InvalidSignal(f"ICE candidate port {port!r} is not 0-65535")
    if ctype not in CANDIDATE_TYPES:
        raise InvalidSignal(f"ICE candidate type {ctype!r} is not one of {', '.join(CANDIDATE_TYPES)}")
    return Candidate(foundation, int(component), transport.lower(), int(priority), address, int(port), ctype)

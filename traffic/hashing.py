"""RoCEv2 ECMP model: the 5-tuple, per-switch hashes (CRC32, XOR), mlx5 source ports, LAG port hashing."""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass

ROCEV2_DPORT = 4791
SPORT_MIN, SPORT_MAX = 0xC000, 0xFFFF


@dataclass(frozen=True)
class FiveTuple:
    """Addresses and ports of a RoCEv2 packet (UDP)."""

    src_ip: str
    dst_ip: str
    sport: int
    dport: int = ROCEV2_DPORT
    proto: int = 17

    def key(self) -> bytes:
        """Bytes the switch hashes."""

        return _ip(self.src_ip) + _ip(self.dst_ip) + struct.pack("!HHB", self.sport, self.dport, self.proto)


@functools.lru_cache(maxsize=65536)
def _ip(a: str) -> bytes:
    """Dotted IPv4 as 4 bytes."""
    try:
        raw = bytes(int(x) for x in a.split("."))
    except ValueError:
        raw = b""
    if len(raw) != 4:
        raise ValueError(f"not an IPv4 address: {a!r}")
    return raw


@functools.lru_cache(maxsize=1)
def _crc_sport_terms() -> tuple[int, ...]:
    """crc32(key with sport s) ^ crc32(key with sport 0), the same for every other field (CRC is affine)."""
    zero = zlib.crc32(bytes(13))
    return tuple(zlib.crc32(bytes(8) + struct.pack("!H", s) + bytes(3)) ^ zero for s in range(1 << 16))


def _mix(h: int) -> int:
    """A 32-bit avalanche (murmur3 finalizer)."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def mlx5_sport(lqpn: int, rqpn: int) -> int:
    """UDP source port mlx5 derives from the QP numbers when the flow label is 0.

    fl = (lqpn * rqpn) folded to 20 bits; sport = ((fl & 0x3FFF) ^ ((fl & 0xFC000) >> 14)) | 0xC000.
    """
    v = (lqpn * rqpn) & 0xFFFFFFFFFFFFFFFF
    v ^= v >> 20
    v ^= v >> 40
    fl = v & 0xFFFFF
    return ((fl & 0x3FFF) ^ ((fl & 0xFC000) >> 14)) | 0xC000


@dataclass(frozen=True)
class SwitchHash:
    """A switch's ECMP hash: CRC32 or XOR over the 5-tuple, salted with a per-switch seed."""

    kind: str = "crc32"  # crc32 | xor
    seed: int = 0

    def __call__(self, t: FiveTuple) -> int:
        """32-bit hash value: the base function over the 5-tuple, then the switch's seeded mixing.

        CRC and XOR are linear over GF(2): two switches that only XOR different seeds into them
        would pick correlated next hops (hash polarization). Real switches avoid that with
        per-switch hash-function selection; the model mixes the seed in non-linearly instead.
        """
        key = t.key()
        if self.kind == "crc32":
            h = zlib.crc32(key)
        elif self.kind == "xor":
            words = struct.unpack("!IIHHB", key)
            h = words[0] ^ words[1] ^ ((words[2] << 16) | words[3]) ^ words[4]
        else:
            raise ValueError(f"unknown hash kind {self.kind!r}")
        return _mix(h ^ self.seed)

    def pick(self, t: FiveTuple, n: int) -> int:
        """Index of the next hop among n equal-cost choices."""
        return self(t) % n

    def sport_picker(self, src_ip: str, dst_ip: str, n: int, dport: int = ROCEV2_DPORT, proto: int = 17):
        """A fast ``sport -> choice of n`` for a fixed address pair (equal to ``pick``, per sport cheap).

        Both base functions are affine in the source-port bits, so the hash of the 5-tuple is the
        hash with sport 0 XOR a per-sport term: one table lookup and the mixing per candidate.
        """
        base_t = FiveTuple(src_ip, dst_ip, 0, dport, proto)
        seed = self.seed
        if self.kind == "crc32":
            base = zlib.crc32(base_t.key())
            terms = _crc_sport_terms()

            def pick(sport: int) -> int:
                return _mix(base ^ terms[sport] ^ seed) % n

        elif self.kind == "xor":
            base = self(base_t)  # only for validation of the addresses
            words = struct.unpack("!IIHHB", base_t.key())
            base = words[0] ^ words[1] ^ words[3] ^ words[4]

            def pick(sport: int) -> int:
                return _mix(base ^ (sport << 16) ^ seed) % n

        else:
            raise ValueError(f"unknown hash kind {self.kind!r}")
        return pick


def switch_hash(switch: str, kind: str = "crc32", seed: int = 0) -> SwitchHash:
    """Each switch salts its hash differently (as real switches do, to avoid polarization)."""
    return SwitchHash(kind, (zlib.crc32(switch.encode()) ^ seed) & 0xFFFFFFFF)


def lag_port(t: FiveTuple, ports: int, seed: int = 0) -> int:
    """Which port of a dual-port NIC bond a flow uses (LAG hashing on the 5-tuple)."""
    return SwitchHash("crc32", seed ^ 0x1A6)(t) % ports


def find_sport(
    src_ip: str, dst_ip: str, want: int, n: int, hasher: SwitchHash, start: int = SPORT_MIN
) -> int:
    """A source port in 0xC000-0xFFFF whose 5-tuple the hash maps to choice ``want`` of ``n``."""
    for sport in range(start, SPORT_MAX + 1):
        if hasher.pick(FiveTuple(src_ip, dst_ip, sport), n) == want:
            return sport
    for sport in range(SPORT_MIN, start):
        if hasher.pick(FiveTuple(src_ip, dst_ip, sport), n) == want:
            return sport
    raise ValueError(f"no source port maps {src_ip}->{dst_ip} onto choice {want} of {n}")

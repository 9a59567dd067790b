"""Network coordinates: Serf's Vivaldi client (with height, adjustment and gravity) and the
coordinate as Serf puts it in every ack.

Owns: the math (a `Coordinate` and the distance between two), one node's estimate of its own
coordinate (`VivaldiClient`, updated from each probe's RTT and the peer's coordinate), the
go-msgpack form of Serf's `coordinate.Coordinate` struct (fields Adjustment, Error, Height, Vec;
float64s), and `CoordinateTracker`, the ping delegate a pool hands to SWIM: it writes this
node's coordinate into its acks (`[PingVersion=1] + msgpack(coordinate)`) and, from a completed
probe, updates that coordinate and caches the peer's. Pure: no I/O, no clock; randomness only
from an injected `random.Random`.

The arithmetic follows Serf's order of operations (sums left to right, distances truncated to
whole nanoseconds as Go's time.Duration does), so a sequence of updates gives the same floats
as Serf's Go client; tests/test_vivaldi.py checks this against values Serf printed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

import txaio

from agent.gossip import gomsgpack
from agent.gossip.delegate import NodeInfo
from agent.gossip.gomsgpack import GossipDecodeError

txaio.use_twisted()

PING_VERSION = 1  # Serf's header byte in front of the coordinate in an ack payload
ZERO_THRESHOLD = 1.0e-6
MAX_RTT = 10.0  # seconds: Serf refuses longer (or negative) round trips
MAX_DIMENSIONS = 64  # a bound on what a peer may send us; Serf uses 8


@dataclass(frozen=True)
class VivaldiConfig:
    """Serf's coordinate.DefaultConfig()."""

    dimensionality: int = 8
    error_max: float = 1.5
    ce: float = 0.25
    cc: float = 0.25
    adjustment_window: int = 20
    height_min: float = 10.0e-6
    latency_filter_size: int = 3
    gravity_rho: float = 150.0


class CoordinateError(ValueError):
    """A coordinate or round trip the client refuses (Serf's "rejected coordinate")."""


def _truncate_ns(seconds: float) -> float:
    # Go converts the distance to a time.Duration (whole nanoseconds, truncated) and back.
    return int(seconds * 1.0e9) / 1.0e9


def _magnitude(vec: tuple[float, ...] | list[float]) -> float:
    total = 0.0
    for v in vec:
        total += v * v
    return math.sqrt(total)


@dataclass(frozen=True)
class Coordinate:
    """A point in Vivaldi space: seconds along each axis, plus a height (the access link) and
    an adjustment (the part of the RTT the space does not explain)."""

    vec: tuple[float, ...]
    error: float
    adjustment: float
    height: float

    @classmethod
    def origin(cls, config: VivaldiConfig) -> Coordinate:
        return cls((0.0,) * config.dimensionality, config.error_max, 0.0, config.height_min)

    def is_valid(self) -> bool:
        return all(math.isfinite(v) for v in (*self.vec, self.error, self.adjustment,
                                               self.height))

    def compatible(self, other: Coordinate) -> bool:
        return len(self.vec) == len(other.vec)

    def raw_distance(self, other: Coordinate) -> float:
        return _magnitude([a - b for a, b in zip(self.vec, other.vec)]) + self.height + \
            other.height

    def distance(self, other: Coordinate) -> float:
        """The estimated RTT to `other` in seconds (whole nanoseconds, as Serf's DistanceTo);
        the adjustments count unless they would make it negative."""
        if not self.compatible(other):
            raise CoordinateError("coordinate dimensionality does not match")
        dist = self.raw_distance(other)
        adjusted = dist + self.adjustment + other.adjustment
        if adjusted > 0.0:
            dist = adjusted
        return _truncate_ns(dist)

    def apply_force(self, config: VivaldiConfig, force: float, other: Coordinate,
                    rng: random.Random) -> Coordinate:
        """Moved by `force` seconds away from `other` (towards it when negative)."""
        unit, mag = _unit_vector_at(self.vec, other.vec, rng)
        vec = tuple(v + u * force for v, u in zip(self.vec, unit))
        height = self.height
        if mag > ZERO_THRESHOLD:
            height = max((height + other.height) * force / mag + height, config.height_min)
        return replace(self, vec=vec, height=height)

    def to_json(self) -> dict:
        """Consul's JSON for a coordinate (the `Coord` of /v1/coordinate/*)."""
        return {"Vec": list(self.vec), "Error": self.error, "Adjustment": self.adjustment,
                "Height": self.height}


def _unit_vector_at(a: tuple[float, ...], b: tuple[float, ...],
                    rng: random.Random) -> tuple[list[float], float]:
    diff = [x - y for x, y in zip(a, b)]
    mag = _magnitude(diff)
    if mag > ZERO_THRESHOLD:
        return [d * (1.0 / mag) for d in diff], mag
    # The two points coincide (every node starts at the origin): push in a random direction.
    diff = [rng.random() - 0.5 for _ in diff]
    mag = _magnitude(diff)
    if mag > ZERO_THRESHOLD:
        return [d * (1.0 / mag) for d in diff], 0.0
    return [1.0] + [0.0] * (len(diff) - 1), 0.0


# --- the wire form ------------------------------------------------------------------------------

def encode(coord: Coordinate) -> bytes:
    """Serf's coordinate.Coordinate as go-msgpack writes it (a map keyed by field name)."""
    return gomsgpack.pack(gomsgpack.struct(Vec=[float(v) for v in coord.vec], Error=coord.error,
                                           Adjustment=coord.adjustment, Height=coord.height))


def _as_float(value, what: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GossipDecodeError(f"{what}: expected a number, got {type(value).__name__}")
    return float(value)


def decode(data: bytes) -> Coordinate:
    """A coordinate from its msgpack bytes (trailing bytes ignored, as Go's decoder does)."""
    fields = gomsgpack.as_struct(gomsgpack.unpack_one(data, 4096), "coordinate")
    vec = gomsgpack.as_list(fields.get("Vec"), "Vec")
    if len(vec) > MAX_DIMENSIONS:
        raise GossipDecodeError(f"coordinate has {len(vec)} dimensions")
    return Coordinate(tuple(_as_float(v, "Vec") for v in vec),
                      _as_float(fields.get("Error"), "Error"),
                      _as_float(fields.get("Adjustment"), "Adjustment"),
                      _as_float(fields.get("Height"), "Height"))


def ack_payload(coord: Coordinate) -> bytes:
    return bytes([PING_VERSION]) + encode(coord)


def parse_ack_payload(payload: bytes) -> Coordinate:
    """The peer's coordinate from its ack payload (GossipDecodeError when it is not one)."""
    if not payload or payload[0] != PING_VERSION:
        raise GossipDecodeError(f"unsupported ping version {payload[:1].hex() or 'none'}")
    return decode(payload[1:])


# --- one node's estimate ------------------------------------------------------------------------

class VivaldiClient:
    """Serf's coordinate.Client: this node's coordinate, updated from observed RTTs."""

    def __init__(self, config: VivaldiConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config or VivaldiConfig()
        if self.config.dimensionality <= 0:
            raise ValueError("dimensionality must be >0")
        self._rng = rng or random.Random()
        self.coordinate = Coordinate.origin(self.config)
        self._origin = Coordinate.origin(self.config)
        self._adjustment_index = 0
        self._adjustment_samples = [0.0] * self.config.adjustment_window
        self._latency_samples: dict[str, list[float]] = {}
        self.resets = 0

    def _check(self, coord: Coordinate) -> None:
        if not self.coordinate.compatible(coord):
            raise CoordinateError("dimensions aren't compatible")
        if not coord.is_valid():
            raise CoordinateError("coordinate is invalid")

    def set_coordinate(self, coord: Coordinate) -> None:
        self._check(coord)
        self.coordinate = coord

    def forget_node(self, node: str) -> None:
        self._latency_samples.pop(node, None)

    def update(self, node: str, other: Coordinate, rtt: float) -> Coordinate:
        """Take one observation: `rtt` seconds to `node`, which is at `other`."""
        self._check(other)
        if not 0.0 <= rtt <= MAX_RTT:
            raise CoordinateError(f"round trip time {rtt}s is not within 0..{MAX_RTT}s")
        rtt = self._latency_filter(node, rtt)
        self._update_vivaldi(other, rtt)
        self._update_adjustment(other, rtt)
        self._update_gravity()
        if not self.coordinate.is_valid():
            self.resets += 1
            self.coordinate = Coordinate.origin(self.config)
        return self.coordinate

    def _latency_filter(self, node: str, rtt: float) -> float:
        # The median of the last few samples, so one slow probe does not throw the estimate.
        samples = self._latency_samples.setdefault(node, [])
        samples.append(rtt)
        if len(samples) > self.config.latency_filter_size:
            del samples[0]
        return sorted(samples)[len(samples) // 2]

    def _update_vivaldi(self, other: Coordinate, rtt: float) -> None:
        cfg, me = self.config, self.coordinate
        dist = me.distance(other)
        rtt = max(rtt, ZERO_THRESHOLD)
        wrongness = abs(dist - rtt) / rtt
        total_error = max(me.error + other.error, ZERO_THRESHOLD)
        weight = me.error / total_error
        error = min(cfg.ce * weight * wrongness + me.error * (1.0 - cfg.ce * weight),
                    cfg.error_max)
        force = cfg.cc * weight * (rtt - dist)
        self.coordinate = replace(me, error=error).apply_force(cfg, force, other, self._rng)

    def _update_adjustment(self, other: Coordinate, rtt: float) -> None:
        window = self.config.adjustment_window
        if window == 0:
            return
        self._adjustment_samples[self._adjustment_index] = \
            rtt - self.coordinate.raw_distance(other)
        self._adjustment_index = (self._adjustment_index + 1) % window
        total = 0.0
        for sample in self._adjustment_samples:  # left to right, as Go sums (not fsum)
            total += sample
        self.coordinate = replace(self.coordinate, adjustment=total / (2.0 * window))

    def _update_gravity(self) -> None:
        # A weak pull towards the origin keeps the whole pool from drifting away together.
        dist = self._origin.distance(self.coordinate) / self.config.gravity_rho
        self.coordinate = self.coordinate.apply_force(self.config, -1.0 * (dist * dist),
                                                      self._origin, self._rng)


# --- the ping delegate --------------------------------------------------------------------------

@dataclass
class CoordinateTracker:
    """Serf's pingDelegate plus its coordinate cache: what a pool hands SWIM as its
    `ping_delegate`. `cache` holds the last coordinate each peer sent (and this node's own)."""

    name: str
    client: VivaldiClient
    cache: dict[str, Coordinate] = field(default_factory=dict)
    rejected: int = 0
    log = txaio.make_logger()

    def __post_init__(self) -> None:
        self.cache[self.name] = self.client.coordinate

    @property
    def coordinate(self) -> Coordinate:
        return self.client.coordinate

    def ack_payload(self) -> bytes:
        return ack_payload(self.client.coordinate)

    def notify_ping_complete(self, node: NodeInfo, rtt: float, payload: bytes) -> None:
        if not payload:
            return  # a peer without coordinates (or a TCP fallback ack)
        try:
            coord = parse_ack_payload(payload)
            self.client.update(node.name, coord, rtt)
        except (GossipDecodeError, CoordinateError) as exc:
            self.rejected += 1
            self.log.debug("gossip: rejected the coordinate of {node}: {exc}", node=node.name,
                           exc=exc)
            return
        self.cache[node.name] = coord
        self.cache[self.name] = self.client.coordinate

    def forget(self, node: str) -> None:
        """The node was reaped: drop its samples and its cached coordinate (Serf's eraseNode)."""
        self.client.forget_node(node)
        if node != self.name:
            self.cache.pop(node, None)

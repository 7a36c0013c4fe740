"""Replay protection for 3.0 command-channel messages (wire-protocol.md §8, tightened).

Agents number their messages from 1 on every connection, so the server keeps one series per
routing id — but a series alone lets anyone who captured a message replay it on a new connection
(a new routing id starts a new series). So the guard also keeps, per (org, node, client
incarnation), the highest sequence and the newest timestamp accepted over all its connections,
with the sequences accepted in that newest second. A message on a connection not seen before is
accepted only when it cannot be a copy of one already accepted: its sequence is above the
high-water (agents that keep counting across connections), or its timestamp is later than the
newest, or it is of the newest second under a sequence not accepted in that second (agents that
restart at 1, reconnecting within a second of their last message). Sequence 1 of the newest second
is always accepted on a new connection: agents number every connection from 1, so their first
message after a quick reconnect looks like that. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERIES_PER_INCARNATION = 8  # connections remembered per (org, node, incarnation)
NEWEST_SEQUENCES_MAX = 64  # sequences remembered for the newest second; beyond, new series wait


@dataclass(slots=True)
class _Track:
    incarnation: str
    high: int = -1  # highest sequence accepted on any connection
    newest: float = float("-inf")  # newest timestamp accepted on any connection
    newest_seqs: set[int] = field(default_factory=set)  # sequences accepted with `newest`
    series: dict[bytes, int] = field(default_factory=dict)  # routing id -> last sequence


class SequenceGuard:
    """`check` returns None when the message is fresh (and records it), else why it is not."""

    def __init__(self, series_per_incarnation: int = SERIES_PER_INCARNATION) -> None:
        self.series_limit = series_per_incarnation
        self._tracks: dict[tuple[str, str], _Track] = {}

    def check(
        self,
        key: tuple[str, str],
        incarnation: str,
        routing_id: bytes,
        sequence: int,
        timestamp: float,
    ) -> str | None:
        track = self._tracks.get(key)
        if track is None or track.incarnation != incarnation:
            track = self._tracks[key] = _Track(incarnation)
        last = track.series.get(routing_id)
        if last is not None:
            if sequence <= last:
                return f"sequence {sequence} not after {last}"
        elif sequence <= track.high and not _fresh_in_time(track, sequence, timestamp):
            return (
                f"replayed on a new connection: sequence {sequence} not after {track.high} "
                "and not newer than the messages accepted before"
            )
        elif len(track.series) >= self.series_limit:
            del track.series[next(iter(track.series))]
        track.series[routing_id] = sequence
        if sequence > track.high:
            track.high = sequence
        if timestamp > track.newest:
            track.newest = timestamp
            track.newest_seqs = {sequence}
        elif timestamp == track.newest and len(track.newest_seqs) < NEWEST_SEQUENCES_MAX:
            track.newest_seqs.add(sequence)
        return None

    def forget(self, key: tuple[str, str]) -> None:
        self._tracks.pop(key, None)

    def __len__(self) -> int:
        return len(self._tracks)


def _fresh_in_time(track: _Track, sequence: int, timestamp: float) -> bool:
    if timestamp > track.newest:
        return True
    if timestamp < track.newest:
        return False
    # The first message of every connection is 1: a reconnect within the same second must not
    # lose it (it moves the node to the new connection). Such a copy is the one replay left.
    return sequence == 1 or (
        sequence not in track.newest_seqs and len(track.newest_seqs) < NEWEST_SEQUENCES_MAX
    )

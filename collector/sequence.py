"""Exactly-once bookkeeping: each agent's committed sequence and spool epoch, and broken streams.

The collector acknowledges a batch only after its rows are committed and answers a batch at or
below the agent's last committed sequence as a duplicate. That watermark is only sound when an
agent's batches commit in the order it sent them: were seq 2 committed while seq 1 had failed,
the agent would learn ``last_committed_seq = 2`` on its next Hello and drop seq 1 for good. So a
stream (one Push or PushBundle call) whose batch failed to commit is *broken*: nothing it carries
after the failure is committed (answered UNAVAILABLE, as the failure itself), and the agent
reconnects and sends everything above the watermark again, in order.

The spool epoch tells a new spool from an old one: an agent whose spool directory was wiped
starts again at sequence 1 with a new epoch, and its Hello makes the collector forget the old
epoch's watermark instead of taking every new batch for a duplicate of an old one.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("c4.collector.sequence")

#: How many broken streams are remembered (a broken stream's agent reconnects within seconds).
MAX_BROKEN_STREAMS = 65536


def new_stream_id() -> int:
    """A random non-zero 63-bit id for one agent stream (unique across a collector's processes)."""
    return secrets.randbits(63) | 1


class Sequenced(Protocol):
    """What the book needs of a batch."""

    agent_id: str
    seq: int
    stream: int
    spool_epoch: int


@dataclass(frozen=True)
class AgentSeq:
    """An agent's committed watermark within its spool epoch (epoch 0: not known)."""

    last_seq: int = 0
    epoch: int = 0


@dataclass(frozen=True)
class Verdict:
    """Why a batch is not inserted: a duplicate, or refused for now (``error``; the agent retries)."""

    duplicate: bool = False
    error: str = ""


class BrokenStreams:
    """Streams with a batch that failed to commit, and the seq of that batch (the most recent ones)."""

    def __init__(self, max_streams: int = MAX_BROKEN_STREAMS) -> None:
        self.max_streams = max_streams
        self._failed: OrderedDict[int, int] = OrderedDict()

    def refusal(self, b: Sequenced) -> Verdict | None:
        """The verdict for ``b`` when its stream is broken, else None."""
        failed = self._failed.get(b.stream) if b.stream else None
        if failed is None:
            return None
        return Verdict(
            error=f"seq {b.seq} not committed: seq {failed} of the same stream failed before it "
            "(reconnect and send again from the last committed sequence)"
        )

    def mark(self, b: Sequenced) -> None:
        """``b`` failed to commit: its stream commits nothing more."""
        if not b.stream or b.stream in self._failed:
            return
        self._failed[b.stream] = b.seq
        while len(self._failed) > self.max_streams:
            self._failed.popitem(last=False)
        log.warning(
            "stream broken: later batches wait for a resend agent=%s seq=%d stream=%x",
            b.agent_id,
            b.seq,
            b.stream,
        )


class SequenceBook:
    """Per-agent watermarks and epochs, and the streams that may commit nothing more.

    Used under the store's lock: plans and commits on the writer thread, ``open`` from Hello, so
    that Hello's answer is ordered with the commits.
    """

    def __init__(self, known: dict[str, AgentSeq] | None = None) -> None:
        self.agents: dict[str, AgentSeq] = dict(known or {})
        self.broken = BrokenStreams()

    def get(self, agent_id: str) -> AgentSeq:
        """The agent's watermark and epoch (zeros if never seen)."""
        return self.agents.get(agent_id, AgentSeq())

    def plan(self, batches: Sequence[Sequenced]) -> tuple[list[Verdict | None], dict[str, AgentSeq]]:
        """Per batch: None to insert it, or the Verdict of one not inserted; the watermarks after the inserts.

        Nothing changes until ``committed`` is called with the returned watermarks.
        """
        planned: dict[str, AgentSeq] = {}
        verdicts: list[Verdict | None] = []
        for b in batches:
            if not b.seq:  # the collector's own rows
                verdicts.append(None)
                continue
            refusal = self.refusal(b)
            if refusal is not None:
                verdicts.append(refusal)
                continue
            now = planned.get(b.agent_id) or self.get(b.agent_id)
            if b.seq <= now.last_seq:
                verdicts.append(Verdict(duplicate=True))
                continue
            planned[b.agent_id] = AgentSeq(b.seq, now.epoch)
            verdicts.append(None)
        return verdicts, planned

    def refusal(self, b: Sequenced) -> Verdict | None:
        """Why ``b`` may not be committed now (its stream broke, or it is of an old spool epoch), or None."""
        broken = self.broken.refusal(b)
        if broken is not None:
            return broken
        epoch = self.get(b.agent_id).epoch
        if b.spool_epoch and epoch and b.spool_epoch != epoch:
            return Verdict(
                error=f"seq {b.seq} is of spool epoch {b.spool_epoch}, the agent's Hello declared {epoch} "
                "(a stream of an older spool): say Hello again"
            )
        return None

    def failed(self, b: Sequenced) -> None:
        """``b`` failed to commit: its stream commits nothing more."""
        self.broken.mark(b)

    def committed(self, planned: dict[str, AgentSeq]) -> None:
        """The planned watermarks are now committed."""
        self.agents.update(planned)

    def open(self, agent_id: str, epoch: int) -> tuple[AgentSeq, bool]:
        """Hello of an agent declaring spool ``epoch`` (0: none): its state from now on, and whether it changed.

        A first epoch is adopted as it is; a different one starts the agent's sequence over. A
        changed state is the caller's to store (in ``agents``) once it is persisted.
        """
        now = self.get(agent_id)
        if not epoch or epoch == now.epoch:
            return now, False
        if now.epoch:
            log.warning(
                "agent spool epoch changed, its sequence starts over agent=%s old_epoch=%d new_epoch=%d "
                "old_last_seq=%d (a new spool directory, or two agents sharing one agent id)",
                agent_id,
                now.epoch,
                epoch,
                now.last_seq,
            )
            return AgentSeq(0, epoch), True
        return AgentSeq(now.last_seq, epoch), True

"""An adaptive bound on requests in flight to one model server (AIMD on latency). Pure.

vLLM never pushes back: it queues whatever it is sent, so a server past its
capacity shows it only as latency. The limit grows by one per round of
requests that all came back near the lowest latency seen (the server had
room), and shrinks by a tenth when latency climbs past ``tolerance`` times
that floor (requests are queuing), at most once a round, so one slow answer
does not collapse it. The floor drifts up slowly, so a server that became
slower for good is learned again. As in Netflix's concurrency-limits (AIMD).

Until the first sign of queueing it doubles per good round instead (TCP's
slow start): a short recording is over in a few rounds, and a GPU that
batches 64 is reached in four rounds, not sixty.
"""

from __future__ import annotations

START = 8  # where an endpoint with max_concurrency: auto begins: the fixed default
HIGHEST = 64  # and the most it goes to


class AimdLimit:
    def __init__(self, start: int = START, lowest: int = 1, highest: int = HIGHEST,
                 tolerance: float = 1.5, backoff: float = 0.9) -> None:
        self.limit = start
        self.lowest, self.highest = lowest, highest
        self.tolerance, self.backoff = tolerance, backoff
        self.floor: float | None = None
        self.slow_start = True  # until the first cut
        self._good = 0  # answers near the floor since the limit last grew
        self._since_cut = 0  # answers since the limit was last cut

    def update(self, latency: float, saturated: bool) -> int:
        """One answer took ``latency`` s; ``saturated``: the limit was reached when it was sent.
        Returns the new limit."""
        self.floor = latency if self.floor is None else min(self.floor * 1.001, latency)
        self._since_cut += 1
        if latency > self.tolerance * self.floor:
            self._good = 0
            if self._since_cut >= self.limit:  # once a round
                self.limit = max(self.lowest, int(self.limit * self.backoff))
                self._since_cut = 0
                self.slow_start = False
        elif saturated:  # room to spare only shows when the limit was the bound
            self._good += 1
            if self._good >= self.limit:
                self.limit = min(self.highest, self.limit * 2 if self.slow_start else self.limit + 1)
                self._good = 0
        return self.limit

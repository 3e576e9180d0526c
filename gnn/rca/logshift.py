"""Log template mix shift: how far a node's mix of log statements moved from its own recent past.

A code-level fault (an exception thrown half-way through a handler, a wrong value returned) changes *which*
statements a process logs, not only how many: the lines after the fault point vanish and new ones appear.
Comparing each node's template distribution in the incident against the same node's distribution before it
finds such faults without labels, on any system whose logs are mined into templates (the idea behind Nezha,
FSE 2023, which mines the same comparison from fault-free periods).

* :func:`template_shift`: the Jensen-Shannon divergence (base 2, in [0, 1]) between a node's template shares
  before and during the incident, shrunk towards 0 when either side has few lines (small samples look
  different by chance);
* :func:`novel_errors`: the share of a node's lines in the incident that come from error templates it did not
  log before (a new exception or error message of its own). The divergence weighs every template alike, so a
  few new error lines in a chatty service barely move it; they are the clearest sign of a fault in its code;
* :func:`deepest_shift`: a node's shift less the largest shift among what it calls. Callers of a failing
  service shift too (they log the failed calls); the cause is the deepest node that shifted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: Lines that count half: with ``n`` lines on a side, the divergence is scaled by ``n / (n + SHRINK_LINES)``.
SHRINK_LINES = 5.0


def template_shift(mix: Mapping[str, tuple[float, float]], shrink_lines: float = SHRINK_LINES) -> float:
    """Shrunk Jensen-Shannon divergence between the ``before`` and ``after`` template counts of one node
    (``{template: (before, after)}``); 0 when either side has no lines."""
    before = sum(b for b, _ in mix.values())
    after = sum(a for _, a in mix.values())
    if before <= 0 or after <= 0:
        return 0.0
    divergence = 0.0
    for b, a in mix.values():
        p, q = b / before, a / after
        m = (p + q) / 2
        if p > 0:
            divergence += 0.5 * p * math.log2(p / m)
        if q > 0:
            divergence += 0.5 * q * math.log2(q / m)
    return max(0.0, divergence) * (before / (before + shrink_lines)) * (after / (after + shrink_lines))


#: A template is an error template when at least this share of its lines are error lines.
ERROR_TEMPLATE_SHARE = 0.5


def novel_errors(mix: Mapping[str, tuple[float, float]], error_share: Mapping[str, float],
                 shrink_lines: float = SHRINK_LINES) -> float:
    """Lines from the split on of error templates (``error_share`` at least :data:`ERROR_TEMPLATE_SHARE`) that
    the node did not log before it, over its lines from the split on plus ``shrink_lines``; 0 when either side
    has no lines (without a past nothing is new)."""
    before = sum(b for b, _ in mix.values())
    after = sum(a for _, a in mix.values())
    if before <= 0 or after <= 0:
        return 0.0
    new = sum(a for tpl, (b, a) in mix.items() if b <= 0 < a and error_share.get(tpl, 0.0) >= ERROR_TEMPLATE_SHARE)
    return new / (after + shrink_lines)


def unseen_templates(mixes: Iterable[Mapping[str, tuple[float, float]]]) -> list[str]:
    """Templates some node logged from the split on but not before it (whose error share :func:`novel_errors`
    needs), each once."""
    return list(dict.fromkeys(tpl for mix in mixes for tpl, (b, a) in mix.items() if b <= 0 < a))


def deepest_shift(shift: np.ndarray, kinds: Sequence[str], service_of: Sequence[int],
                  callees: Mapping[int, Sequence[int]]) -> np.ndarray:
    """Each service's and instance's shift less the largest shift among the services its service calls (an
    instance is judged against its service's callees); other nodes (hosts, changes) keep their shift."""
    shift = np.asarray(shift, dtype=np.float64)
    out = shift.copy()
    for i, kind in enumerate(kinds):
        if kind not in ("service", "instance") or service_of[i] < 0:
            continue
        below = callees.get(service_of[i], ())
        if below:
            out[i] = shift[i] - max(float(shift[c]) for c in below)
    return out

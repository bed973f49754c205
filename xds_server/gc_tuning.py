"""Python's garbage collector, set up for serving: no long pause while a push fans out.

Reference counting frees almost everything a push allocates; the cyclic collector only
has to find cycles, but a full (generation-2) collection walks every tracked object, and
at start-up the process already holds the modules, the catalog and the first snapshot:
hundreds of thousands of objects that stay alive for the whole run. Walking them is
what made a full collection take 50-170 ms in the serving benchmark.

`tune_for_serving`, called once the first snapshot is built:

* collects once, then moves everything alive into the permanent generation
  (`gc.freeze()`), so no later collection walks the start-up heap again. What was
  frozen is still freed by reference counting; only a cycle among frozen objects would
  stay (start-up builds once, so that is bounded);
* raises the young-generation threshold, so the many short-lived objects of a push
  (responses, plans, requests) are counted in fewer, still short, young collections.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

# Young collections every this many net container allocations (Python's default: 700).
# A young collection walks at most about this many objects: a few milliseconds.
YOUNG_THRESHOLD = 20_000


def tune_for_serving(young: int = YOUNG_THRESHOLD) -> int:
    """Freeze what start-up built and raise the young threshold; the objects frozen."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)
    frozen = gc.get_freeze_count()
    log.info("garbage collector: %d start-up objects frozen, young threshold %d", frozen, young)
    return frozen

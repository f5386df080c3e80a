"""The page daemon's view of the arena: free pages and the low-memory event.

FreeBSD's page daemon (sys/vm/vm_pageout.c) asks the kernel's caches to give memory
back when free pages run short: ``vm_pageout_lowmem`` invokes the ``vm_lowmem`` event
handlers and then ``uma_reclaim`` (2005: ``zone_drain`` of every zone; FreeBSD main:
``uma_reclaim(UMA_RECLAIM_TRIM)``, every zone trimmed to its working-set estimate).
illumos' ``kmem_reap`` is the same request for the kmem depot.

The arena has no VM around it, so a run may give it a **page budget**: the pages the
VM would have for the two kegs (``UmaConfig.page_budget``, ``--page-budget``).  Free
pages are the budget less the pages the kegs hold (a wholly free slab still held by
its keg is not free: only ``keg_drain`` gives it back).  The event fires when free
pages fall below the page daemon's target.  Without a budget it never fires, as on the
Dec 2005 machines, which wedged at the cluster limit with memory to spare.  The budget
limits nothing by itself: the cluster limit and the arena's size do.

The target is ``v_free_target`` as ``vm_pageout_init`` sizes it from the page count
(as we recall it): ``v_free_min = pages / 200``, ``v_free_target = 4 * v_free_min +
v_free_reserved``, with ``v_free_reserved``'s proportional part ``pages / 768``; its
fixed parts (sized for a machine's RAM, not a budget of a few thousand pages) are left
out.  That is about 2% of the budget, at least one page.  The page daemon rate-limits
the event to one per ``lowmem_period`` (10 s, half a UMA_TIMEOUT); here the trim
callout checks once per ``--trim-interval`` (one UMA_TIMEOUT), so the limit never binds.
"""

from __future__ import annotations


def free_target(budget: int) -> int:
    """v_free_target for ``budget`` pages: below this many free pages, vm_lowmem fires."""
    return max(1, 4 * (budget // 200) + budget // 768)


def free_pages(budget: int, keg_pages: int) -> int:
    """Pages the VM still has: the budget less what the kegs hold (may be negative)."""
    return budget - keg_pages


def page_shortage(budget: int, keg_pages: int) -> bool:
    """True when the page daemon would fire vm_lowmem (never without a budget)."""
    return budget > 0 and free_pages(budget, keg_pages) < free_target(budget)

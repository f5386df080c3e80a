"""The page daemon's view of the arena: free pages and the low-memory event.

FreeBSD's page daemon (sys/vm/vm_pageout.c) asks the kernel's caches to give memory
back when free pages run short.  ``vm_pageout_worker`` calls ``vm_pageout_lowmem`` when
its controller finds a shortage, and that, at most once per ``lowmem_period`` (10 s),
invokes the ``vm_lowmem`` event handlers ("Decrease registered cache sizes.") and then
``uma_reclaim(UMA_RECLAIM_TRIM)`` ("We do this explicitly after the caches have been
drained above."): every zone trimmed to its working-set estimate.  (Verbatim from
``blubskye/freebsd-src`` sys/vm/vm_pageout.c @ 0c964205c6adeadff3f8c9420bad5e5dfa6fc4f1,
an unverified fork of modern freebsd-src: the index's upstream copy is of c. 2009.)
2005's answer was ``uma_reclaim()`` -> ``zone_foreach(zone_drain)`` (``TrustedBSD/sebsd``
sys/vm/uma_core.c v1.136 @ fd5de6f587183087cf930779701d5713e8ca64cc).  illumos'
``kmem_reap()`` ("Called from the VM system when memory gets tight") is the same
request for the kmem depot.

The arena has no VM around it, so a run may give it a **page budget**: the pages the
VM would have for the two kegs (``UmaConfig.page_budget``, ``--page-budget``).  Free
pages are the budget less the pages the kegs hold (a wholly free slab still held by
its keg is not free: only ``keg_drain`` gives it back).  The event fires when free
pages fall below the page daemon's target.  Without a budget it never fires, as on the
Dec 2005 machines, which wedged at the cluster limit with memory to spare.  The budget
limits nothing by itself: the cluster limit and the arena's size do.

The target is ``v_free_target`` as ``vm_pageout_init`` sizes it from the page count,
**as we recall it** (that function is not among the verbatim sources):
``v_free_min = pages / 200``, ``v_free_target = 4 * v_free_min + v_free_reserved``,
with ``v_free_reserved``'s proportional part ``pages / 768``; its fixed parts (sized for
a machine's RAM, not a budget of a few thousand pages) are left out.  That is about 2%
of the budget, at least one page.

Simplifications, each for a reason (docs/policies.md has them per policy): the trim
callout checks for a shortage once per ``--trim-interval`` (one ``UMA_TIMEOUT``, 20 s),
where the kernel's page daemon may fire once per ``lowmem_period`` (10 s), so under a
lasting shortage the event comes at most half as often as it could -- the page daemon
has no process of its own here; the severe-shortage path (``vm_page_count_severe()`` ->
``uma_reclaim_wakeup`` -> ``uma_reclaim_worker``: ``uma_reclaim(UMA_RECLAIM_DRAIN_CPU)``,
every cache drained, per-CPU ones too) is not modelled, since its threshold is not in
the verbatim sources; and the ``vm_lowmem`` handlers themselves (kern_mbuf.c's
``mb_reclaim``: the protocols' drain routines) have no protocols to drain here.
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

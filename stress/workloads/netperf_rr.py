"""netperf TCP_RR: request/response transactions, one in flight per pair.

Stands for ``netperf -t TCP_RR`` (the latency test: a small request, a small response,
repeat).  The data path is netperf's (:mod:`stress.workloads.netperf`): the request is
an ``m_getcl`` segment whose ``m_copym`` copy stays in the socket buffer until the
response acknowledges it, the driver transmits and completes it, and the response
arrives in a posted receive buffer.  With one transaction in flight the two frees of a
shared cluster are rarely close in time, so this workload barely exercises the 2005
refcount race: the contrast with TCP_STREAM is the point.
"""

from __future__ import annotations

from typing import ClassVar

from stress.workloads.netperf import Netperf


class NetperfRR(Netperf):
    """netperf TCP_RR: one 64-byte request and one 64-byte response at a time."""

    name: ClassVar[str] = "netperf-rr"
    prefix: ClassVar[str] = "rr"
    WINDOW: ClassVar[int] = 1
    TXBATCH: ClassVar[int] = 1
    BURST: ClassVar[int] = 1
    MSS: ClassVar[int] = 64
    ACK_LEN: ClassVar[int] = 64  #: the response carries as much data as the request

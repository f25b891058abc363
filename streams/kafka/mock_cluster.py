"""Opt-in workarounds that let Faust workers share librdkafka's mock cluster.

librdkafka's mock cluster (``test.mock.num.brokers``, what the tests and the benchmark run
against) completes a consumer group's SyncGroup as soon as the *leader's* SyncGroup
carries an assignment for every member; a follower whose SyncGroup arrives after that
gets ``INVALID_REQUEST`` instead of its assignment (a real broker hands it over).  On a
busy machine the follower often is that late.  aiokafka (under Faust) treats that answer
as fatal for the member, which then sits in the group with no partitions.

``tolerate_mock_cluster_sync()`` patches aiokafka in this process so that:

- the group leader waits ``leader_delay_s`` before computing and sending its SyncGroup,
  which gives the followers' SyncGroups time to arrive first (the usual case then);
- a follower answered ``INVALID_REQUEST`` rejoins the group (a new rebalance) instead of
  giving up, so the rare lost race costs one more rebalance, never a stuck worker.

Only ``adaptd worker --mock-cluster`` calls it; a worker on a real Kafka or Redpanda
cluster never does.  Idempotent.
"""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("adaptd.faust")

_PATCHED = False


def tolerate_mock_cluster_sync(leader_delay_s: float = 0.5) -> None:
    """Patch aiokafka's group rebalance for the mock cluster (see the module docstring).

    Args:
        leader_delay_s: how long the elected leader waits before its SyncGroup.
    """
    global _PATCHED
    if _PATCHED:
        return
    from aiokafka import errors
    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance

    on_join_leader = CoordinatorGroupRebalance._on_join_leader
    send_sync = CoordinatorGroupRebalance._send_sync_group_request

    async def delayed_on_join_leader(self, response):  # type: ignore[no-untyped-def]
        await asyncio.sleep(leader_delay_s)
        return await on_join_leader(self, response)

    async def rejoining_send_sync(self, request):  # type: ignore[no-untyped-def]
        try:
            return await send_sync(self, request)
        except errors.KafkaError as exc:
            # aiokafka already asked for a rejoin before raising; returning None makes
            # the coordinator back off and join again instead of parking the member.
            if "InvalidRequestError" not in str(exc):
                raise
            logger.warning("mock cluster refused our SyncGroup (follower later than the leader): rejoining")
            return None

    CoordinatorGroupRebalance._on_join_leader = delayed_on_join_leader
    CoordinatorGroupRebalance._send_sync_group_request = rejoining_send_sync
    _PATCHED = True

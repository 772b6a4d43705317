"""Topic creation with aiokafka's admin client (idempotent)."""
from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, names: list[str], partitions: int,
                        configs: dict[str, dict[str, str]] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1, topic_configs=(configs or {}).get(n, {})) for n in names if n not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(t.name for t in new))
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def list_topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payflow-admin")
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()

"""A small world on the in-memory ports (sandbox/memory.py) for tests of one fault at a time: the real webhook,
worker and delivery services, Didomi's model of tests/property, and faults armed one call at a time."""

from __future__ import annotations

import contextlib
import json

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.mapping import EMAIL_FIELD, desired, group_field
from didomi_braze.observability import logger, metrics_to
from didomi_braze.service.webhook import WebhookRequest, receive_webhook
from sandbox.braze_emulator import BrazeWorkspace
from sandbox.memory import Clock, MemoryBraze, MemoryQueues, MemoryStateStore, MemoryWorker, memory_dependencies
from tests.property.didomi_model import CONNECTOR, Didomi
from tests.property.test_consent_state_machine import Died, _Counts, _Faults, _wrap

TOKEN = "local-webhook-token"
CONFIG = parse_connector_document(json.dumps(CONNECTOR), allow_loopback=True)


class World:
    def __init__(self, users=("u0",), config=CONFIG):
        self._quiet = contextlib.ExitStack()
        self.counts = self._quiet.enter_context(metrics_to(_Counts()))
        self.config = config
        self.clock = Clock()
        self.didomi = Didomi(users)
        self.workspace = BrazeWorkspace(known_users=tuple(f"external_id:{u}" for u in users), clock=self.clock)
        self.state = MemoryStateStore()
        self.queues = MemoryQueues(self.clock)
        self.braze = MemoryBraze(self.workspace, self.clock)
        self.faults = _Faults()
        _wrap(self.faults, self.state, self.queues, self.braze)
        self.deps = memory_dependencies(config, self.state, self.queues, self.braze, self.clock)
        self.worker = MemoryWorker(self.deps, self.queues, self.clock)
        self._level = logger.log_level
        logger.setLevel("CRITICAL")

    def close(self):
        logger.setLevel(self._level)
        self._quiet.close()

    def post(self, body: dict, fault: str | None = None):
        """One webhook delivery; None when the invocation died."""
        self.faults.armed = fault
        request = WebhookRequest(authorization=f"Bearer {TOKEN}", body=json.dumps(body), deadline=self.clock() + 15)
        try:
            return receive_webhook(request, lambda: self.deps)
        except Died:
            return None
        finally:
            self.faults.armed = None

    def drain(self, rounds=50):
        for _ in range(rounds):
            self.clock.advance(30)
            while self.worker.poll():
                pass

    def braze_fields(self, user: str) -> dict[str, str]:
        have = self.workspace.state(f"external_id:{user}")
        got = {EMAIL_FIELD: have.email_subscribe} if have.email_subscribe else {}
        got.update({group_field(g): s for g, s in have.subscription_groups.items()})
        return got

    def truth(self, user: str) -> dict[str, str]:
        return desired(self.didomi.users[user].values, self.config)

    def parked(self) -> list:
        return list(self.queues.dead_letters.messages.values())


def record_call_times(world: World) -> list[float]:
    """The clock's time at every Braze call from now on (the list fills as the world runs)."""
    times: list[float] = []
    track = world.braze.track

    def timed(*args, **kwargs):
        times.append(world.clock())
        return track(*args, **kwargs)

    world.braze.track = timed
    return times


def run_worker(world: World, seconds: int) -> None:
    """Move the clock a second at a time for `seconds`, the worker polling until the queue has nothing visible."""
    for _ in range(seconds):
        world.clock.advance(1)
        while world.worker.poll():
            pass

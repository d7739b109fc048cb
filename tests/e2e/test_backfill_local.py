"""The backfill through the local stack: the command queues the sample export's users on the retry queue (moto
server), the local RetryFunction poller drains it, and Braze's emulator ends up with the users; `--follow` shows
the run's counts until the worker has settled every change."""

import io
import time

from didomi_braze_ops import backfill
from didomi_braze_ops.aws import Aws
from didomi_braze_ops.cli import _parser
from sandbox.stack import REGION, LocalStack
from tests.integration.operator import deploy
from tests.samples import EVENTS


def test_a_file_backfill_reaches_braze_through_the_queue_and_the_worker():
    with LocalStack(with_gateway=False, batching_window=0) as stack:
        name = deploy(stack)
        polls = []

        def wait(seconds: float) -> None:  # follow's pause, shortened; the poller thread works meanwhile
            polls.append(seconds)
            assert len(polls) < 150, "the worker did not settle the run within 30 s"
            time.sleep(0.2)

        args = _parser().parse_args(["backfill", "--stack", name, "--file", str(EVENTS / "backfill-users.jsonl"), "--follow"])
        out = io.StringIO()
        code = backfill.command(args, lambda region: Aws(REGION), out, pace=backfill.Pace(sleep=wait))

        assert code == 0, out.getvalue()
        assert "5 users read, 3 queued, 3 applied, 0 skipped, 0 parked (finished reading)" in out.getvalue()
        assert stack.braze.state("external_id:customer-42").email_subscribe == "opted_in"
        assert stack.braze.state("external_id:customer-42").subscription_groups == {
            "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13": "subscribed"
        }
        assert stack.braze.state("external_id:customer-7").email_subscribe == "unsubscribed"
        assert stack.braze.state("external_id:customer-9").email_subscribe == "opted_in"
        assert stack.queue_depth(stack.retry_queue_url) == 0

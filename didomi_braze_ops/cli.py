"""`didomi-braze COMMAND` (or `python -m didomi_braze_ops COMMAND`): operator commands; the Makefile wraps each one.

  validate-config FILE                 check a connector document before storing it
  preview FILE -e EVENT                the exact Braze request one event would produce, with no network
  put-config FILE --stack NAME         validate, then store the document in the stack's connector secret
  trace USER --stack NAME              what happened to one user: their log lines in order, and their state record
  replay --stack NAME                  what sits in the dead-letter queue, by category and reason
  replay --stack NAME --category C     a dry run: what replaying those messages would send now
  replay ... --move                    move the chosen messages back to the retry queue
  backfill --stack NAME                bring the users Didomi has into Braze (--dry-run first; --resume, --follow)

The commands that read a deployed stack find its resources from its CloudFormation outputs, with your AWS
credentials (as the AWS CLI finds them). Every error is one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from didomi_braze.domain.connector import USER_IDENTIFIERS
from didomi_braze.domain.errors import ConfigurationError, InvalidWebhook

from . import backfill, connector
from .aws import Aws, OperatorError, stack_outputs
from .replay import replay
from .trace import trace


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage errors, in the same one line and exit code as ours
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None, aws: Callable[[str | None], Aws] = Aws) -> int:
    """Run one command. `aws` makes the AWS session from the --region option (tests hand in their own)."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args, aws)
    except (OperatorError, ConfigurationError, InvalidWebhook) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="didomi-braze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)

    validate = commands.add_parser("validate-config", help="validate a connector document")
    validate.add_argument("file", type=Path)
    validate.set_defaults(run=lambda args, aws: connector.validate(args.file, sys.stdout))

    preview = commands.add_parser("preview", help="show the Braze request an event would produce (no network)")
    preview.add_argument("file", type=Path, help="connector document")
    preview.add_argument("-e", "--event", type=Path, required=True, help="Didomi webhook body, or an HTTP API event from events/")
    preview.set_defaults(run=lambda args, aws: connector.preview(args.file, args.event, sys.stdout))

    put = commands.add_parser("put-config", help="validate a connector document and store it in the deployed secret")
    put.add_argument("file", type=Path)
    target = put.add_mutually_exclusive_group(required=True)
    target.add_argument("--stack", help="the stack's name: its ConnectorSecretArn output names the secret")
    target.add_argument("--secret-id", help="the secret's ARN or name (the stack's ConnectorSecretArn output)")
    _region(put)
    put.set_defaults(run=_put_config)

    follow = commands.add_parser("trace", help="what happened to one user: log timeline and state record")
    follow.add_argument("user", help="the user's Braze external_id (or e-mail address, with an email user_identifier)")
    follow.add_argument("--stack", required=True, help="the deployed stack's name")
    follow.add_argument("--since", default="7d", help="how far back to search the logs: 30m, 12h, 7d … (default 7d)")
    follow.add_argument(
        "--identifier",
        choices=USER_IDENTIFIERS,
        help="how USER identifies the Braze user (default: the connector document's user_identifier)",
    )
    _region(follow)
    follow.set_defaults(
        run=lambda args, aws: trace(aws(args.region), args.stack, args.user, args.since, args.identifier, sys.stdout)
    )

    again = commands.add_parser("replay", help="list, dry-run and move dead-lettered messages back to the retry queue")
    again.add_argument("--stack", required=True, help="the deployed stack's name")
    again.add_argument("--category", help="the parked messages' category attribute (listed without this option)")
    again.add_argument("--reason", help="only messages with exactly this reason attribute")
    again.add_argument("--message-id", action="append", default=[], help="only this message (repeat for several)")
    again.add_argument("--move", action="store_true", help="move the chosen messages back to the retry queue")
    again.add_argument("--max", type=int, default=1000, help="read at most this many messages (default 1000)")
    _region(again)
    again.set_defaults(
        run=lambda args, aws: replay(
            aws(args.region),
            args.stack,
            args.category,
            args.reason,
            args.message_id,
            args.move,
            args.max,
            sys.stdout,
            time.time(),
        )
    )

    fill = commands.add_parser("backfill", help="bring the users Didomi already has into Braze, through the retry queue")
    fill.add_argument("--stack", required=True, help="the deployed stack's name")
    fill.add_argument("--file", type=Path, help="read Didomi user objects from this JSON-lines file instead of Didomi's API")
    fill.add_argument("--didomi-secret-id", help="a secret of yours holding the Didomi API key (default: the stack's)")
    fill.add_argument("--regulation", help="whose consents to read (default gdpr, or the connector's only regulation)")
    fill.add_argument("--dry-run", action="store_true", help="read and map users, show the Braze requests; queue nothing")
    fill.add_argument("--limit", type=int, help="read at most this many users (a run resumes after them)")
    fill.add_argument("--show", type=int, default=5, help="with --dry-run: how many Braze requests to show (default 5)")
    fill.add_argument("--resume", metavar="RUN_ID", help="continue this run from its checkpoint")
    fill.add_argument("--follow", action="store_true", help="show the run's progress until every change is settled")
    _region(fill)
    fill.set_defaults(run=lambda args, aws: backfill.command(args, aws, sys.stdout))
    return parser


def _region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", default=None, help="the stack's region (default: your AWS configuration's)")


def _put_config(args, aws: Callable[[str | None], Aws]) -> int:
    text = connector.deployable(args.file)  # checked before anything is read from AWS
    session = aws(args.region)
    secret_id = args.secret_id or stack_outputs(session, args.stack)["ConnectorSecretArn"]
    return connector.store(session, text, secret_id, sys.stdout)

"""Where a Didomi consent event comes from: the flow back tags what it writes, so that the webhook does not send
Braze's own change back to Braze (README "The flow back")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLOW_BACK_DELEGATE_ID = "didomi-braze-preference-sync"
FLOW_BACK_DELEGATE_NAME = "Braze (via the Didomi to Braze preference sync)"


def written_by_flow_back(consent_event: Any) -> bool:
    """Whether a Didomi consent event was written by this connector's flow back: its delegate says so."""
    delegate = consent_event.get("delegate") if isinstance(consent_event, Mapping) else None
    return isinstance(delegate, Mapping) and delegate.get("id") == FLOW_BACK_DELEGATE_ID

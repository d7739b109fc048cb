"""The webhook's Powertools event source data class, imported on its own.

`aws_lambda_powertools.utilities.data_classes` imports every one of its ~40 event classes when the package is
imported, about 4% of the webhook's cold start (counted in instructions, `make bench`), and the webhook needs one.
The package is registered as a module whose body runs the first time anything asks it for a name; the two modules
the webhook imports run as usual, as they do not use the package's names. Code that imports the package itself
sees it whole (the SQS handlers do: `sqs_event` needs it).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

PACKAGE = "aws_lambda_powertools.utilities.data_classes"


def _package_on_demand() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    package = importlib.util.module_from_spec(spec)  # __path__ set, body not run: its submodules import as usual
    loading = []

    def __getattr__(name: str):  # noqa: N807 (a module's own attribute hook, PEP 562)
        if loading:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        loading.append(True)
        del package.__getattr__
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = __getattr__
    sys.modules[PACKAGE] = package


def _class(module: str, name: str) -> type:
    _package_on_demand()
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), name)


def _module(module: str) -> ModuleType:
    _package_on_demand()
    return importlib.import_module(f"{PACKAGE}.{module}")


APIGatewayProxyEventV2 = _class("api_gateway_proxy_event", "APIGatewayProxyEventV2")
event_source = _module("event_source").event_source

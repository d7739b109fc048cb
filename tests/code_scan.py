"""What the functions' code emits, read from the code itself (not from a list kept beside it): the metric names
passed to `count(...)` / `count_by(...)` with their dimensions, and the keys of the log lines' `extra` fields.

The scan follows the few ways the code builds them: a literal name, a name taken from a literal dict's keys
(`for name, value in self.counts.items(): count(name, value)`), and `extra` dicts built from literals, `**spreads`
of variables or helper methods, and `.update(key=...)` calls. Anything else is reported, so that new code stays
readable to this scan rather than silently escaping it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions" / "didomi_braze"
LOG_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


class Unreadable(Exception):
    """The scan met a metric name or log field it cannot resolve to literals."""


@dataclass
class Emitted:
    metrics: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # name -> extra dimensions
    log_fields: set[str] = field(default_factory=set)
    outcomes: set[str] = field(default_factory=set)  # the literal values logged as `outcome`


def scan(root: Path = FUNCTIONS) -> Emitted:
    emitted = Emitted()
    for path in sorted(root.rglob("*.py")):
        if path.name != "observability.py":  # it defines count() and count_by(), passing its callers' names on
            _Module(path, emitted).run()
    return emitted


class _Module:
    def __init__(self, path: Path, emitted: Emitted):
        self.path, self.emitted = path, emitted
        self.tree = ast.parse(path.read_text(), str(path))
        self.dicts = self._dict_keys_by_name()  # variable / attribute name -> literal keys assigned or added to it
        self.returns = self._returned_keys()  # function name -> keys of the dict it returns
        for node in ast.walk(self.tree):  # `log = self._log(...)`: the helper's keys
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _called(node.value) in self.returns:
                for target in node.targets:
                    if _target_name(target):
                        self.dicts[_target_name(target)] |= self.returns[_called(node.value)]

    def run(self) -> None:
        counters = {  # count / count_by as imported from observability (not str.count and the like)
            alias.asname or alias.name
            for node in ast.walk(self.tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("observability")
            for alias in node.names
            if alias.name in ("count", "count_by")
        }
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                name = _called(node)
                if isinstance(node.func, ast.Name) and name in counters:
                    self._metric(node, name)
                elif name in LOG_LEVELS and _is_logger(node):
                    extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
                    if extra is not None:
                        self.emitted.log_fields |= self._keys(extra)

    def _metric(self, node: ast.Call, kind: str) -> None:
        names = self._names(node.args[0], node)
        dimensions = set()
        if kind == "count_by":
            dimension = node.args[1]
            if not (isinstance(dimension, ast.Constant) and isinstance(dimension.value, str)):
                raise Unreadable(f"{self._where(node)}: count_by's dimension is not a literal")
            dimensions.add(dimension.value)
        for name in names:
            self.emitted.metrics[name] |= dimensions

    def _names(self, arg: ast.expr, call: ast.Call) -> set[str]:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return {arg.value}
        if isinstance(arg, ast.Name):  # a loop over a literal dict's items: for name, value in X.items()
            for loop in ast.walk(self.tree):
                if (
                    isinstance(loop, ast.For)
                    and isinstance(loop.target, ast.Tuple)
                    and loop.target.elts
                    and isinstance(loop.target.elts[0], ast.Name)
                    and loop.target.elts[0].id == arg.id
                    and isinstance(loop.iter, ast.Call)
                    and _called(loop.iter) == "items"
                    and call in list(ast.walk(loop))
                ):
                    source = _target_name(loop.iter.func.value)
                    if source in self.dicts:
                        return set(self.dicts[source])
        raise Unreadable(f"{self._where(call)}: cannot tell which metric name this is")

    def _keys(self, node: ast.expr) -> set[str]:
        if isinstance(node, ast.Dict):
            keys = set()
            for key, value in zip(node.keys, node.values, strict=True):
                if key is None:
                    keys |= self._keys(value)  # **spread
                elif isinstance(key, ast.Constant) and isinstance(key.value, str):
                    keys.add(key.value)
                    if key.value == "outcome":
                        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                            raise Unreadable(f"{self._where(node)}: an outcome that is not a literal")
                        self.emitted.outcomes.add(value.value)
                else:
                    raise Unreadable(f"{self._where(node)}: a log field name that is not a literal")
            return keys
        if isinstance(node, ast.BoolOp):  # `log or {}`
            return set().union(*(self._keys(v) for v in node.values))
        if isinstance(node, ast.Call) and _called(node) in self.returns:
            return set(self.returns[_called(node)])
        name = _target_name(node)
        if name in self.dicts:
            return set(self.dicts[name])
        raise Unreadable(f"{self._where(node)}: cannot read the log fields of {ast.unparse(node)}")

    def _dict_keys_by_name(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for node in ast.walk(self.tree):
            targets, value = [], None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            if isinstance(value, ast.Dict):
                for target in targets:
                    name = _target_name(target)
                    if name:
                        found[name] |= {k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            if isinstance(node, ast.Call) and _called(node) == "update" and isinstance(node.func, ast.Attribute):
                name = _target_name(node.func.value)
                if name:
                    found[name] |= {k.arg for k in node.keywords if k.arg}
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript):
                subscript = node.targets[0]
                name = _target_name(subscript.value)
                if name and isinstance(subscript.slice, ast.Constant) and isinstance(subscript.slice.value, str):
                    found[name].add(subscript.slice.value)
        return found

    def _returned_keys(self) -> dict[str, set[str]]:
        out = {}
        for function in ast.walk(self.tree):
            if isinstance(function, ast.FunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Return) and node.value is not None:
                        name = _target_name(node.value)
                        if name in self.dicts:
                            out[function.name] = set(self.dicts[name])
        return out

    def _where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(FUNCTIONS.parent)}:{getattr(node, 'lineno', '?')}"


def _called(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _is_logger(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) and call.func.value.id == "logger"


def _target_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # self.counts -> counts
        return node.attr
    return None

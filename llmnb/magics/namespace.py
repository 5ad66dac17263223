"""What a magic's options name in the user's namespace, read and checked: the `--for` items, the
`--tools` functions, a type expression, the executor of `--cluster` / `--batch`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from IPython.core.error import UsageError

from ..tools import Toolbox


def for_each(for_: list[str] | None, namespace: Mapping[str, Any]) -> tuple[str, list] | None:
    """`--for NAME in VAR` -> (NAME, the items of VAR), checked; None without --for."""
    if for_ is None:
        return None
    name, word, var = for_
    if word != "in" or not name.isidentifier() or not var.isidentifier():
        raise UsageError(f"write --for NAME in VAR, e.g. --for doc in docs, not --for {' '.join(for_)}")
    if var not in namespace:
        raise UsageError(f"--for {name} in {var}: no variable {var} is defined; define it in an earlier cell")
    items = namespace[var]
    if not is_sequence(items):
        raise UsageError(f"--for {name} in {var}: {var} is not a list but {type(items).__name__}; "
                         f"give a list, tuple or pandas Series (e.g. list({var}))")
    if not len(items):
        raise UsageError(f"--for {name} in {var}: {var} is empty, so there is nothing to run")
    return name, list(items)


def tools(names: str | None, namespace: Mapping[str, Any]) -> tuple:
    """`--tools f,g` -> the functions f and g of the namespace, checked."""
    if names is None:
        return ()
    found = []
    for name in (n.strip() for n in names.split(",")):
        item = namespace.get(name)
        if not callable(item):
            what = "is not defined" if item is None else f"is a {type(item).__name__}, not a function"
            raise UsageError(f"--tools: {name or '(empty)'} {what}; give functions of your namespace, "
                             "e.g. --tools weather,search")
        found.append(item)
    Toolbox(found)  # their schemas, checked now
    return tuple(found)


def eval_type(expr: str, namespace: dict[str, Any]) -> Any:
    try:
        return eval(expr, namespace)  # the user's own type expression, never a prompt
    except Exception as e:
        raise UsageError(f"unknown type {expr!r} ({type(e).__name__}: {e}); define it in an earlier cell") from None


def executor(cluster: str | None, batch: bool, namespace: Mapping[str, Any]) -> Any:
    """The executor `--cluster CLIENT` (a distributed.Client of the namespace, or a scheduler
    address) or `--batch` asks for; None: here, on the kernel's loop."""
    if cluster is not None and batch:
        raise UsageError("--cluster and --batch are two places to run the cell: choose one")
    try:  # loaded when asked for: the cluster needs the optional `distributed`
        if cluster is not None:
            return importlib.import_module("llmnb.runs.cluster").Cluster(namespace.get(cluster, cluster))
        if batch:
            return importlib.import_module("llmnb.runs.batch").Batch()
    except ImportError as e:
        raise UsageError(f"{'--cluster' if cluster else '--batch'} needs {e.name}: pip install 'llmnb[dask]'") from None
    return None


def is_sequence(items) -> bool:
    """A list, tuple, range, pandas Series or numpy array: ordered, sized; not text, a set or a dict."""
    if isinstance(items, (str, bytes, bytearray)):
        return False
    return isinstance(items, Sequence) or (hasattr(items, "__len__") and hasattr(items, "tolist"))

"""One call of a student's function, as both runners make it: what the model received during the
call (observations), the result turned into plain values, and the state of the arguments after.

The conversion to plain values happens *inside* the monitored, time-limited call: a result whose
conversion or attribute access would run more code later (a lazy object, a tensor subclass with
``__torch_function__``) is never touched outside it; only exact ``torch.Tensor`` objects and
Python numbers come out, anything else becomes an :class:`Opaque` placeholder that names its type.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Observation", "CallRecord", "Opaque", "plain", "tensors_in", "modules_in", "observe", "backward"]


@dataclasses.dataclass
class Observation:
    """What one model saw during a call: forward passes, those in training mode, the largest
    batch, the number of inputs (rows of the first argument) and their range; how many of the
    inputs were distinct (fresh noise, or the same draw again?) and the sum and sum of squares of
    the distinct inputs' entries (from which a check recovers the noise's variance); and, where
    the model returns (N, K) scores, how often each class was its top score on the distinct
    inputs (``votes[k]``: the counts a student's sampling must have seen)."""

    calls: int = 0
    training_calls: int = 0
    largest_batch: int = 0
    inputs: int = 0
    lowest: float = float("inf")
    highest: float = float("-inf")
    total: float = 0.0
    squares: float = 0.0
    distinct: int = 0
    votes: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class CallRecord:
    """The last call: its observations (one per model among the arguments, in argument order),
    whether the result carried an autograd graph and what backpropagating through it gave."""

    observations: list[Observation] = dataclasses.field(default_factory=list)
    requires_grad: bool = False
    backward_error: str | None = None
    cpu_seconds: float = 0.0


class Opaque:
    """Stands for a returned object that is not a plain value (its type's name only)."""

    type_name = "object"

    def __repr__(self) -> str:
        return f"<a {self.type_name} object>"


def opaque(type_name: str) -> Opaque:
    """An :class:`Opaque` whose class carries the student's type name (for messages that print
    ``type(result).__name__``)."""
    cls = type(str(type_name)[:60], (Opaque,), {"type_name": str(type_name)[:60]})
    return cls()


def plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain values: exact tensors detached and copied, Python and NumPy numbers as
    Python numbers, tuples and lists element-wise; anything else as :class:`Opaque`."""
    if depth > 4:
        return opaque(type(value).__name__)
    if type(value) is Tensor or type(value) is nn.Parameter:  # exact types: no Python overrides run
        return value.detach().clone()
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if type(value) in (tuple, list):
        items = [plain(v, depth + 1) for v in value]
        return tuple(items) if type(value) is tuple else items
    return opaque(type(value).__name__)


def _walk(obj: Any, depth: int = 0) -> Iterator[Any]:
    """Tensors and modules among the arguments, in a fixed order (modules are not descended)."""
    if depth > 4:
        return
    if isinstance(obj, (Tensor, nn.Module)):
        yield obj
    elif type(obj) in (tuple, list):
        for item in obj:
            yield from _walk(item, depth + 1)
    elif type(obj) is dict:
        for key in sorted(obj, key=str):
            yield from _walk(obj[key], depth + 1)


def tensors_in(args: Any) -> list[Tensor]:
    return [t for t in _walk(args) if isinstance(t, Tensor)]


def modules_in(args: Any) -> list[nn.Module]:
    seen, out = set(), []
    for m in _walk(args):
        if isinstance(m, nn.Module) and id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


@contextlib.contextmanager
def observe(modules: list[nn.Module]) -> Iterator[list[Observation]]:
    """Records each module's forward passes while active (a forward pre-hook and a forward hook
    per module)."""
    records = [Observation() for _ in modules]
    handles = []

    def hook_for(record: Observation):
        seen: set[float] = set()
        directions: dict[int, Tensor] = {}

        def fingerprints(rows: Tensor) -> list[float]:
            """One number per input, its projection on a fixed random direction: equal inputs
            give equal numbers, and different ones, almost surely, different numbers."""
            flat = rows.reshape(len(rows), -1)
            size = flat.shape[1]
            if size not in directions:
                directions[size] = torch.randn(size, generator=torch.Generator().manual_seed(size),
                                               dtype=torch.float64)
            return (flat @ directions[size]).tolist()

        pending: list[list[int]] = []  # the rows of the current call that were new, for its output

        def hook(module, args):
            pending.append([])
            record.calls += 1
            record.training_calls += int(module.training)
            first = args[0] if args else None
            if isinstance(first, Tensor) and first.dim() > 0:
                record.largest_batch = max(record.largest_batch, int(first.shape[0]))
                record.inputs += int(first.shape[0])
                if first.numel():
                    values = first.detach().double()
                    record.lowest = min(record.lowest, float(values.min()))
                    record.highest = max(record.highest, float(values.max()))
                    new = []
                    for row, key in enumerate(fingerprints(values)):
                        if key not in seen:
                            seen.add(key)
                            new.append(row)
                    fresh = values[new]
                    record.distinct += len(new)
                    record.total += float(fresh.sum())
                    record.squares += float(fresh.square().sum())
                    pending[-1] = new

        def after(module, args, output):
            new = pending.pop() if pending else []
            if new and isinstance(output, Tensor) and output.dim() == 2 and output.shape[1] > 0:
                counts = torch.bincount(output.detach()[new].argmax(1), minlength=output.shape[1]).tolist()
                record.votes = [a + b for a, b in zip(record.votes + [0] * len(counts), counts)] + \
                    record.votes[len(counts):]
        return hook, after

    for module, record in zip(modules, records):
        before, after = hook_for(record)
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def backward(result: Any, modules: list[nn.Module]) -> tuple[bool, str | None]:
    """Backpropagates a scalar result into the modules' parameters (their ``.grad``), zeroed
    first; returns (whether it had a graph, the error message if backpropagation failed)."""
    if type(result) is not Tensor or result.numel() != 1 or not result.requires_grad:
        return False, None
    for module in modules:
        module.zero_grad(set_to_none=True)
    try:
        result.backward()
    except RuntimeError as exc:
        return True, str(exc).split(".")[0]
    return True, None


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seeds the global generators (deterministic grading of the same submission)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    yield

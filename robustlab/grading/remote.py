"""Grading outside the student's kernel: this process (the checker) never runs student code; it
starts a walled worker (:mod:`robustlab.grading.worker`) per graded item, sends it the solution
cells and then each check's inputs, and compares the plain values that come back with the
reference, computed here.

The worker is a fresh interpreter (``python -I``: no current folder, no user site, no
``PYTHON*`` variables) in an empty temporary folder with a bare environment, in its own process
group, with an operating-system CPU limit as the backstop of the per-call budgets and a
wall-clock limit enforced from here. What the worker sends back is read as JSON and safetensors,
never unpickled.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load as load_tensors

from . import calls
from .feedback import Feedback
from .runners import Runner
from .sandbox import PEER_PACKAGES

__all__ = ["Worker", "RemoteRunner", "WorkerError", "CELL_BUDGET", "protected_paths"]

# CPU seconds each cell may take to run (definitions; a cell that trains something heavy at the
# top level runs here too), and the worker's whole-life CPU limit (the backstop).
CELL_BUDGET = float(os.environ.get("ROBUSTLAB_GRADING_CELL_BUDGET", "60"))
PROCESS_CPU_LIMIT = 900
KEEP = ("robustlab.grading.worker", "robustlab.grading.calls", "robustlab.grading.sandbox")


class WorkerError(Exception):
    """The worker could not start or stopped answering (not the student's fault when it could
    not start)."""


def protected_paths(course_root: str | os.PathLike | None) -> list[str]:
    """The instructor's files of an nbgrader course folder, closed to graded code."""
    if course_root is None:
        return []
    root = Path(course_root)
    return [str(root / name) for name in ("solutions", "source", "submitted", "autograded", "feedback",
                                          "gradebook.db", "nbgrader_config.py")]


def _source_roots() -> list[str]:
    import importlib.util

    roots = [str(Path(__file__).resolve().parents[1])]  # the robustlab package
    for name in PEER_PACKAGES:
        spec = importlib.util.find_spec(name) if name.isidentifier() else None
        if spec is not None and spec.submodule_search_locations:
            roots += list(spec.submodule_search_locations)
    return roots


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class Worker:
    """One walled worker process for one item: the student's cells loaded, their function ready.

    Args:
        function: the name the cells define and the checks call.
        cells: (label, source) pairs, run in order.
        forbidden: module prefixes whose functions become traps (the reference of the item).
        closed: paths graded code may not open (see :func:`protected_paths`).
    """

    def __init__(self, function: str, cells: list[tuple[str, str]], forbidden: Iterable[str],
                 closed: Iterable[str] = ()):
        self.folder = tempfile.mkdtemp(prefix="robustlab-grading-")
        read_end, write_end = os.pipe()
        env = {"PATH": os.defpath, "HOME": self.folder, "TMPDIR": self.folder, "MPLCONFIGDIR": self.folder,
               "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8",
               # One thread: CPU-time budgets count every thread, and idle OpenMP threads that spin
               # while another autograde holds the cores would bill a correct solution for waiting.
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.output = open(os.path.join(self.folder, "output.txt"), "wb")

        def limits():  # in the child, before exec
            resource.setrlimit(resource.RLIMIT_CPU, (PROCESS_CPU_LIMIT, PROCESS_CPU_LIMIT + 5))

        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "robustlab.grading.worker", str(write_end)], stdin=subprocess.PIPE,
            stdout=self.output, stderr=subprocess.STDOUT, cwd=self.folder, env=env, pass_fds=(write_end,),
            start_new_session=True, preexec_fn=limits)
        os.close(write_end)
        self.replies = read_end
        setup = {"function": function, "cells": list(cells), "forbidden": list(forbidden) + ["robustlab.grading"],
                 "keep": list(KEEP), "closed": list(closed), "source_roots": _source_roots(),
                 "writable": self.folder, "cell_budget": CELL_BUDGET, "threads": 1}
        self._send(pickle.dumps(setup))
        header, _ = self._receive(wall=120 + 3 * CELL_BUDGET * max(1, len(setup["cells"])))
        if header is None:
            tail = self.tail()
            self.close()
            raise WorkerError(f"the grading worker did not start: {tail}")
        self.ready: bool = bool(header.get("ready"))
        self.cell_errors: list[str] = header.get("cell_errors", [])

    def tail(self, size: int = 1500) -> str:
        self.output.flush()
        data = Path(self.output.name).read_bytes()[-size:]
        return data.decode(errors="replace")

    def _send(self, data: bytes) -> None:
        try:
            self.process.stdin.write(_frame(data))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker has gone; _receive reports it

    def _read_exactly(self, size: int, deadline: float) -> bytes | None:
        import time

        chunks, left = [], size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            ready, _, _ = select.select([self.replies], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self.replies, min(left, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _receive(self, wall: float) -> tuple[dict | None, dict]:
        """(header, tensors), or (None, {}) when the worker died or ran past ``wall`` seconds."""
        import time

        deadline = time.monotonic() + wall
        parts = []
        for _ in range(2):
            head = self._read_exactly(4, deadline)
            if head is None:
                return None, {}
            (size,) = struct.unpack(">I", head)
            body = self._read_exactly(size, deadline) if size else b""
            if body is None:
                return None, {}
            parts.append(body)
        try:
            header = json.loads(parts[0])
            tensors = load_tensors(parts[1]) if parts[1] else {}
        except (ValueError, json.JSONDecodeError, Exception):  # noqa: BLE001 - a garbled reply
            return {"error": {"kind": "garbled"}}, {}
        return (header if isinstance(header, dict) else {"error": {"kind": "garbled"}}), tensors

    def call(self, args: tuple, kwargs: dict, *, seed: int, budget: float, backward: bool) -> tuple[dict | None, dict]:
        buffer = io.BytesIO()
        torch.save((args, kwargs), buffer)
        self._send(pickle.dumps({"args": buffer.getvalue(), "seed": seed, "budget": budget, "backward": backward}))
        return self._receive(wall=3 * budget + 30)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        for stream in (self.process.stdin, self.output):
            try:
                stream.close()
            except OSError:
                pass
        os.close(self.replies)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decode(node: Any, tensors: dict) -> Any:
    if not isinstance(node, dict):
        return calls.opaque("unknown")
    kind = node.get("t")
    if kind == "tensor":
        return tensors.get(node.get("k"), calls.opaque("missing tensor"))
    if kind in ("tuple", "list") and isinstance(node.get("v"), list):
        items = [_decode(v, tensors) for v in node["v"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "value" and (node.get("v") is None or type(node.get("v")) in (bool, int, float, str)):
        return node["v"]
    return calls.opaque(str(node.get("v", "object")))


class RemoteRunner(Runner):
    """Calls the student's function in a :class:`Worker` and applies what came back."""

    def __init__(self, item: str, worker: Worker, seed: int):
        super().__init__(item, seed)
        self.worker = worker

    def _fail_call(self, error: dict, budget: float) -> Feedback:
        kind = error.get("kind")
        if kind == "timeout":
            return self.timeout(budget)
        if kind == "not-implemented":
            return self.not_implemented()
        if kind == "delegation":
            name = str(error.get("message", "")).split("delegation: ", 1)[-1]
            return self.delegation(name)
        if kind == "wall":
            return Feedback(f"{self.item}: {str(error.get('message', '')).removeprefix('[grading] ')}: this "
                            "item scores 0")
        if kind == "garbled":
            return Feedback(f"{self.item}: your function's results could not be read back (did your code write "
                            "to the grader's channel?)")
        return Feedback(f"{self.item}: your function raised {error.get('type', 'an exception')}: "
                        f"{error.get('message', '')}")

    def __call__(self, *args, backward: bool = False, **kwargs):
        self.calls += 1
        budget = self.budget()
        self._modules = calls.modules_in((args, kwargs))
        header, tensors = self.worker.call(args, kwargs, seed=self.seed + self.calls, budget=budget,
                                           backward=backward)
        if header is None:
            code = self.worker.process.poll()
            if code is None:
                raise self.timeout(budget)
            raise Feedback(f"{self.item}: the grading process running your function stopped (exit status {code}"
                           f"{', the CPU limit' if code in (-signal.SIGXCPU, -signal.SIGKILL) else ''}) during "
                           "this call")
        if "error" in header:
            raise self._fail_call(header["error"], budget)
        with torch.no_grad():  # the arguments as the student's function left them
            for i, tensor in enumerate(calls.tensors_in((args, kwargs))):
                after = tensors.get(f"a{i}")
                # Only what changed is written back (an expanded argument cannot be written to).
                after = None if after is None or after.shape != tensor.shape else after.to(tensor.dtype)
                if after is not None and not torch.equal(after, tensor):
                    tensor.copy_(after)
            for i, (module, info) in enumerate(zip(self._modules, header.get("modules", []))):
                module.load_state_dict({name: tensors[key] for name, key in info["state"].items()}, strict=False)
                module.train(bool(info["training"]))
                for name, value in module.state_dict(keep_vars=True).items():
                    grad = tensors.get(f"g{i}.{name}")
                    if isinstance(value, torch.nn.Parameter):
                        value.grad = None if grad is None else grad.clone()
        fields = {f.name for f in dataclasses.fields(calls.Observation)}
        self.last = calls.CallRecord(
            observations=[calls.Observation(**{k: v for k, v in o.items() if k in fields})
                          for o in header.get("observations", [])],
            requires_grad=bool(header.get("requires_grad")), backward_error=header.get("backward_error"),
            cpu_seconds=float(header.get("cpu_seconds", 0.0)))
        return _decode(header.get("result"), tensors)

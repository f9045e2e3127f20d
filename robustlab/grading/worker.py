"""The grading worker: a fresh interpreter that runs a student's solution cells and calls their
function on the inputs the checker sends, and nothing else. Started by
:mod:`robustlab.grading.remote` as ``python -I -m robustlab.grading.worker FD``.

Order matters: the worker imports torch, robustlab and the grader *before* any student code,
then raises the walls of :mod:`robustlab.grading.sandbox`, then executes the cells. It never
grades: it sends back plain values (tensors as safetensors, numbers as JSON) and what the models
observed, and the checker, a process that never runs student code, decides. The student's code
can therefore lie only about its own results, which the checker tests.

Protocol (frames of a 4-byte big-endian length and a payload): the checker writes pickled
requests on stdin; the worker answers on file descriptor FD with a JSON header frame and a
safetensors frame.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct
import sys
import time
import traceback


class TimeLimit(BaseException):
    """Raised in the student's code when its CPU-time budget is spent."""


def _read_frame(stream) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return stream.read(size)


def _write_frames(fd: int, header: dict, blob: bytes = b"") -> None:
    data = json.dumps(header, allow_nan=True).encode()
    payload = struct.pack(">I", len(data)) + data + struct.pack(">I", len(blob)) + blob
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _preload() -> None:
    """Everything the solution cells may import from robustlab, loaded before the walls go up
    (afterwards the package's sources cannot be read)."""
    import numpy  # noqa: F401
    import scipy.stats  # noqa: F401
    import torch  # noqa: F401
    import torch.nn.functional  # noqa: F401

    import robustlab  # noqa: F401
    from robustlab import interpret, saliency, smoothing, testing, train, zoo  # noqa: F401
    from robustlab.grading import calls  # noqa: F401


def _encode(value, tensors: dict, prefix: str):
    """JSON for a plain value, its tensors moved into ``tensors``."""
    import torch

    from robustlab.grading.calls import Opaque

    if isinstance(value, torch.Tensor):
        key = f"{prefix}{len(tensors)}"
        tensors[key] = value.detach().contiguous().clone()
        return {"t": "tensor", "k": key}
    if isinstance(value, Opaque):
        return {"t": "opaque", "v": value.type_name}
    if isinstance(value, (tuple, list)):
        return {"t": type(value).__name__, "v": [_encode(v, tensors, prefix) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"t": "value", "v": value}
    return {"t": "opaque", "v": type(value).__name__}


def _on_cpu_alarm(signum, frame):
    raise TimeLimit()


def main(fd: int) -> None:
    _preload()
    import torch
    from safetensors.torch import save as save_tensors

    from robustlab.grading import calls, sandbox

    stdin = sys.stdin.buffer
    frame = _read_frame(stdin)
    if frame is None:  # the checker went away before sending anything
        return
    setup = pickle.loads(frame)
    torch.set_num_threads(setup.get("threads", 1))
    # The walls go up before the first line of student code runs.
    trapped = sandbox.trap_modules(setup["forbidden"], keep=setup.get("keep", ()))
    sandbox.install_audit_hook(closed=setup["closed"], source_roots=setup["source_roots"],
                               writable=setup["writable"])
    signal.signal(signal.SIGPROF, _on_cpu_alarm)

    namespace: dict = {"__name__": "__main__"}
    cell_errors = []
    # Each cell has its own CPU budget: one that never ends is interrupted and the next cells
    # still run (as nbgrader interrupts a kernel's cell on its timeout), so a loop at the top
    # level of one cell costs only what that cell defines.
    for label, source in setup["cells"]:
        try:
            signal.setitimer(signal.ITIMER_PROF, setup["cell_budget"])
            try:
                exec(compile(source, f"<cell {label}>", "exec"), namespace)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except TimeLimit:
            cell_errors.append(f"{label}: did not finish within {setup['cell_budget']:.0f} s of CPU time")
        except BaseException as exc:  # noqa: BLE001 - a failing cell is reported, grading goes on
            cell_errors.append(f"{label}: {type(exc).__name__}: {exc}"[:400])
    func = namespace.get(setup["function"])
    _write_frames(fd, {"ready": callable(func), "cell_errors": cell_errors, "trapped": len(trapped)})
    if not callable(func):
        return

    while True:
        frame = _read_frame(stdin)
        if frame is None:
            return
        request = pickle.loads(frame)
        args, kwargs = torch.load(io.BytesIO(request["args"]), weights_only=False)
        modules = calls.modules_in((args, kwargs))
        header: dict = {}
        tensors: dict = {}
        start = time.process_time()
        try:
            with calls.seeded(request["seed"]), calls.observe(modules) as observations:
                signal.setitimer(signal.ITIMER_PROF, request["budget"])
                try:
                    raw = func(*args, **kwargs)
                    if request.get("backward"):
                        header["requires_grad"], header["backward_error"] = calls.backward(raw, modules)
                    result = calls.plain(raw)
                finally:
                    signal.setitimer(signal.ITIMER_PROF, 0)
            header["result"] = _encode(result, tensors, "r")
            header["observations"] = [vars(o) for o in observations]
        except TimeLimit:
            header["error"] = {"kind": "timeout"}
        except NotImplementedError:
            header["error"] = {"kind": "not-implemented"}
        except BaseException as exc:  # noqa: BLE001 - the student's exception, reported
            message = f"{exc}"
            kind = "delegation" if sandbox.MARK + "delegation" in message else \
                "wall" if message.startswith(sandbox.MARK) else "exception"
            header["error"] = {"kind": kind, "type": type(exc).__name__, "message": message[:600],
                               "where": "".join(traceback.format_exception_only(type(exc), exc))[-300:]}
        header["cpu_seconds"] = time.process_time() - start
        # The arguments after the call: tensors (in-place changes), models (state, mode, gradients).
        header["tensors_after"] = len(calls.tensors_in((args, kwargs)))
        for i, tensor in enumerate(calls.tensors_in((args, kwargs))):
            tensors[f"a{i}"] = tensor.detach().contiguous().clone()
        header["modules"] = []
        for i, module in enumerate(modules):
            state = {}
            for name, value in module.state_dict(keep_vars=True).items():
                tensors[f"m{i}.{name}"] = value.detach().contiguous().clone()
                state[name] = f"m{i}.{name}"
                grad = getattr(value, "grad", None)
                if isinstance(grad, torch.Tensor):
                    tensors[f"g{i}.{name}"] = grad.detach().contiguous().clone()
            header["modules"].append({"training": bool(module.training), "state": state})
        _write_frames(fd, header, save_tensors(tensors) if tensors else b"")


if __name__ == "__main__":
    main(int(sys.argv[1]))

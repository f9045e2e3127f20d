"""The grading worker's walls, raised once before any student code runs (and never lowered: an
audit hook cannot be removed).

- **Traps**: every function of the reference modules of the item (and of the grader's own check
  modules, whose closed forms are oracles) gets the code of a trap that raises before doing any
  work. Whatever name, alias, thread or wrapper reaches the function, the reference does not run:
  delegation is stopped by what would run, not by a file name.
- **Audit hook** (:func:`sys.addaudithook`): no reading of the reference's source or the
  course's instructor files (so the reference cannot be re-executed under another name, and the
  solutions and the gradebook stay closed), no writing outside the worker's own folder, no new
  processes (so no work escapes the time limit or the traps), no ``ctypes``, no walking the
  garbage collector to reach the worker's objects, no re-assigning a function's code, no
  monkey-patching of ``torch.Tensor``, ``nn.Module`` or robustlab's classes, no importing a peer library that
  implements the algorithms.

Messages start with :data:`MARK`, so the worker can tell a wall from the student's own error.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Iterable

__all__ = ["MARK", "PEER_PACKAGES", "trap_modules", "install_audit_hook"]

MARK = "[grading] "

# Peer libraries that implement the same algorithms: delegating to them is not allowed either.
PEER_PACKAGES = ("torchattacks", "captum", "art", "foolbox", "advertorch", "autoattack", "auto_LiRPA", "quantus")

# ctypes may build types (NumPy does, lazily); calling or reading raw memory is what is closed.
_CTYPES_EVENTS = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.string_at",
                  "ctypes.wstring_at", "ctypes.PyObj_FromPtr", "ctypes.cdata/buffer", "ctypes.set_errno"}
_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "os.startfile", "pty.spawn"}
_FORBIDDEN_EVENTS = _CTYPES_EVENTS | {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.addaudithook",
                     "resource.setrlimit", "resource.prlimit", "os.kill", "os.killpg", "signal.pthread_kill",
                     "socket.connect", "socket.bind", "socket.sendto", "sys._current_exceptions"}
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                "os.symlink", "os.truncate", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
_FUNCTION_FIELDS = ("__code__",)  # (namedtuple sets __defaults__ itself)


def _trap_code(label: str, freevars: tuple[str, ...]) -> types.CodeType:
    """The code of a function that raises at once; it has as many free variables as the function
    it replaces (Python requires that to swap ``__code__``)."""
    names = [f"_free{i}" for i in range(len(freevars))]
    lines = ["def _outer():"] + [f"    {n} = None" for n in names] + ["    def trap(*args, **kwargs):"]
    if names:
        lines.append(f"        ({', '.join(names)},)")
    lines += [f"        raise PermissionError({(MARK + 'delegation: ' + label)!r})", "    return trap"]
    namespace: dict = {}
    exec(compile("\n".join(lines), "<grading trap>", "exec"), namespace)
    return namespace["_outer"]().__code__


def _functions_of(module: types.ModuleType) -> Iterable[tuple[str, types.FunctionType]]:
    """(qualified name, function) for every function defined in ``module``, methods included."""
    seen: set[int] = set()

    def unwrap(obj):
        while True:
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            elif isinstance(obj, property):
                return [f for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
            elif isinstance(obj, types.FunctionType) and hasattr(obj, "__wrapped__"):
                return [obj] + unwrap(obj.__wrapped__)
            elif hasattr(obj, "__wrapped__") and not isinstance(obj, type):
                obj = obj.__wrapped__
            else:
                return [obj]

    for value in list(vars(module).values()):
        candidates = []
        if isinstance(value, type) and value.__module__ == module.__name__:
            for attr in list(vars(value).values()):
                candidates += unwrap(attr)
        else:
            candidates += unwrap(value)
        for func in candidates:
            if isinstance(func, types.FunctionType) and func.__module__ == module.__name__ and id(func) not in seen:
                seen.add(id(func))
                yield f"{module.__name__}.{func.__qualname__}", func


def trap_modules(prefixes: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Turns every function of the modules named by ``prefixes`` (packages with all their loaded
    submodules; the modules in ``keep`` excepted) into a trap. Returns the trapped names."""
    prefixes, keep = tuple(prefixes), set(keep)
    for name in prefixes:
        importlib.import_module(name)
    trapped = []
    for name, module in sorted(sys.modules.items()):
        if module is None or name in keep or not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        for label, func in _functions_of(module):
            func.__code__ = _trap_code(label, func.__code__.co_freevars)
            trapped.append(label)
    return trapped


def _is_write(mode, flags) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))


def install_audit_hook(*, closed: Iterable[str], source_roots: Iterable[str], writable: str) -> None:
    """Installs the worker's audit hook (for the rest of the process's life).

    Args:
        closed: files and folders that may not be opened at all (the instructor's notebooks,
            the gradebook, other students' submissions).
        source_roots: folders whose Python sources may not be read (the reference's package).
        writable: the only folder (with /dev/null) where files may be written or changed.
    """
    real = os.path.realpath
    closed = tuple(real(p) for p in closed)
    source_roots = tuple(real(p) for p in source_roots)
    writable = real(writable)
    fsdecode, isinstance_, str_, int_, type_ = os.fsdecode, isinstance, str, int, type
    function_type = types.FunctionType
    import torch

    # The classes whose methods the worker's observations and conversions go through.
    protected_types = (torch.Tensor, torch.nn.Module, torch.nn.Parameter, torch._C.TensorBase)
    busy = [False]

    def inside(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == r or path.startswith(r + os.sep) for r in roots)

    def check_path(path, writing: bool) -> None:
        if isinstance_(path, int_) or path is None:
            return
        path = real(fsdecode(path))
        if inside(path, closed):
            raise PermissionError(f"{MARK}{path} is closed while grading (the instructor's files)")
        if inside(path, source_roots) and path.endswith((".py", ".pyc", ".ipynb")):
            raise PermissionError(f"{MARK}reading the reference implementation's source ({path}) is not "
                                  "allowed while grading")
        if path.startswith("/proc/") and path.endswith(("/mem", "/maps", "/environ")):
            raise PermissionError(f"{MARK}{path} is closed while grading")
        if writing and not (inside(path, (writable,)) or path == "/dev/null"):
            raise PermissionError(f"{MARK}writing {path} is not allowed while grading (only under {writable})")

    def hook(event: str, args: tuple) -> None:
        if busy[0]:
            return
        if event == "open":
            busy[0] = True
            try:
                check_path(args[0], _is_write(args[1], args[2] if len(args) > 2 else None))
            finally:
                busy[0] = False
        elif event in _PATH_EVENTS:
            busy[0] = True
            try:
                for arg in args[:2]:
                    if isinstance_(arg, (str_, bytes, os.PathLike)):
                        check_path(arg, True)
            finally:
                busy[0] = False
        elif event in _PROCESS_EVENTS:
            raise PermissionError(f"{MARK}starting another process ({event}) is not allowed while grading: "
                                  "do the work in your function")
        elif event in _FORBIDDEN_EVENTS:
            raise PermissionError(f"{MARK}{event} is not allowed while grading")
        elif event == "import":
            top = str_(args[0]).split(".")[0]
            if top in PEER_PACKAGES:
                raise ImportError(f"{MARK}delegation: importing {top}, a library that implements the "
                                  "algorithm, is not allowed in graded code")
        elif event == "object.__setattr__":
            obj, name = args[0], args[1]
            if isinstance_(obj, function_type) and name in _FUNCTION_FIELDS:
                raise PermissionError(f"{MARK}changing a function's {name} is not allowed while grading")
            if isinstance_(obj, type_):
                # A type under construction (pybind11's, say) may not have __module__ yet.
                try:
                    module = str_(obj.__module__)
                except Exception:  # noqa: BLE001
                    module = ""
                if obj in protected_types or module.startswith("robustlab."):
                    raise PermissionError(f"{MARK}changing {module}.{obj.__qualname__}.{name} is not allowed "
                                          "while grading")

    sys.addaudithook(hook)

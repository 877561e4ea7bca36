"""Read a pandas DataFrame pickle, or a pickle of numpy arrays, without letting the file run code.

The MM-SADA split files of EPIC-Kitchens are pandas pickles. ``pandas.read_pickle`` (like
``pickle.load``) calls whatever the file names: a crafted ``D1_train.pkl`` can run any command.
:func:`load_dataframe` unpickles with a restricted unpickler instead:

- a global (class or function) is only resolved when it is in :data:`ALLOWED_GLOBALS`, the few
  names that a pickled DataFrame of numbers, booleans and strings refers to (written by pandas
  1.x to 3.x, numpy 1.x or 2.x); any other global is refused before it is imported;
- each allowed global has a role: only ``call`` globals may be called (pickle's ``REDUCE``),
  only ``new`` classes instantiated (``NEWOBJ``); ``type`` globals (``numpy.ndarray``,
  ``pandas.Index``, ...) may only be passed to those calls as arguments;
- ``BUILD`` (which sets an object's state) is refused on classes and functions, so a pickle
  cannot patch an allowed class; the opcodes that call a class by name (``INST``, ``OBJ``) and
  persistent ids are refused;
- numpy's array placeholder (``_reconstruct``) must be empty, as numpy writes it, so the array
  sizes come from data that is in the file; a ``RangeIndex`` (sized by three numbers, not by
  data) may not exceed :data:`MAX_INDEX_LENGTH`; files over :data:`MAX_BYTES` are refused.

MMSA's feature files (``mosi.pkl``, ``mosei.pkl``, ``sims.pkl``: dicts of numpy arrays, lists
and strings) are read by :func:`load_arrays` with the same checks and the numpy globals only
(:data:`ARRAY_GLOBALS`); a torch tensor or any class in them is refused.

Residual risk (documented in ``docs/reliability.md``): the allowed pandas and numpy functions run
on values chosen by the file. They can fail, or build a malformed DataFrame that a later step
rejects, but they do not run code from the file. A DataFrame whose columns use other types
(datetime, categorical, pyarrow-backed strings) is refused; re-save it with plain numpy or
object columns.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

from merdg.datasets.preprocessing import DataError
from merdg.datasets.untrusted import one_line

__all__ = ["ALLOWED_GLOBALS", "ARRAY_GLOBALS", "MAX_BYTES", "MAX_INDEX_LENGTH",
           "UnsafePickleError", "load_arrays", "load_dataframe"]

MAX_BYTES = 64 * 2**20  # the MM-SADA split files are ~0.1 MB
MAX_INDEX_LENGTH = 10_000_000  # rows or columns of a RangeIndex (MM-SADA: < 10k rows)

# (module, name) as a pickle spells it -> role: "call" may be called (REDUCE), "new" may be
# instantiated (NEWOBJ), "type" may only be passed as an argument of those calls
ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    # the frame and its block manager
    ("pandas", "DataFrame"): "new",
    ("pandas.core.frame", "DataFrame"): "new",
    ("pandas.core.internals.managers", "BlockManager"): "new+call",
    ("pandas.core.internals", "BlockManager"): "new+call",
    ("pandas._libs.internals", "_unpickle_block"): "call",
    ("pandas.core.internals.blocks", "new_block"): "call",
    # indexes (pandas < 2 wrote Int64Index and friends; they are plain Index objects now)
    ("pandas.core.indexes.base", "_new_Index"): "call",
    ("pandas", "Index"): "type",
    ("pandas.core.indexes.base", "Index"): "type",
    ("pandas", "RangeIndex"): "type",
    ("pandas.core.indexes.range", "RangeIndex"): "type",
    ("pandas.core.indexes.numeric", "Int64Index"): "type",
    ("pandas.core.indexes.numeric", "UInt64Index"): "type",
    ("pandas.core.indexes.numeric", "Float64Index"): "type",
    # pandas 3 string columns and labels (python storage; pyarrow storage is refused)
    ("pandas", "StringDtype"): "call",
    ("pandas.core.arrays.string_", "StringDtype"): "call",
    ("pandas.arrays", "StringArray"): "type",
    ("pandas.core.arrays.string_", "StringArray"): "type",
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"): "call",
    # numpy arrays, dtypes and scalars (numpy 2 renamed numpy.core to numpy._core)
    ("numpy", "ndarray"): "type",
    ("numpy", "dtype"): "call",
    **{(f"{core}.multiarray", name): "call" for core in ("numpy.core", "numpy._core")
       for name in ("_reconstruct", "scalar")},
    **{(f"{core}.numeric", "_frombuffer"): "call" for core in ("numpy.core", "numpy._core")},
    # builtins that protocol 2 and 3 pickles use for slices and bytes
    ("builtins", "slice"): "call",
    ("__builtin__", "slice"): "call",
    ("_codecs", "encode"): "call",
}

# the globals a pickle of plain containers and numpy arrays needs (MMSA's feature pickles)
ARRAY_GLOBALS: dict[tuple[str, str], str] = {
    key: role for key, role in ALLOWED_GLOBALS.items()
    if key[0].startswith(("numpy", "builtins", "__builtin__", "_codecs"))}

_MOVED = {  # old location -> where the installed pandas has it
    ("pandas.core.frame", "DataFrame"): ("pandas", "DataFrame"),
    ("pandas.core.internals", "BlockManager"): ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.blocks", "new_block"): ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.numeric", "Int64Index"): ("pandas", "Index"),
    ("pandas.core.indexes.numeric", "UInt64Index"): ("pandas", "Index"),
    ("pandas.core.indexes.numeric", "Float64Index"): ("pandas", "Index"),
    ("pandas.core.arrays.string_", "StringDtype"): ("pandas", "StringDtype"),
    ("pandas.core.arrays.string_", "StringArray"): ("pandas.arrays", "StringArray"),
    ("__builtin__", "slice"): ("builtins", "slice"),
}


class UnsafePickleError(DataError):
    """A pickle asked for something a DataFrame pickle never needs; nothing of it was run."""


def _locate(module: str, name: str) -> Any:
    """The object a pickle names, at its current location (numpy 2: ``numpy._core``)."""
    module, name = _MOVED.get((module, name), (module, name))
    candidates = [module]
    if module.startswith("numpy.core."):
        candidates.insert(0, "numpy._core." + module[len("numpy.core."):])
    for candidate in candidates[:-1]:
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    return getattr(importlib.import_module(candidates[-1]), name)


def _empty_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct`` for the empty placeholder numpy writes (shape ``(0,)``): the
    array's data then comes from the file, so a pickle cannot ask for a huge allocation."""
    import numpy as np

    if not isinstance(shape, tuple) or shape != (0,):
        raise UnsafePickleError(f"refused a numpy array placeholder of shape {shape!r} (numpy "
                                "writes (0,))")
    return _locate("numpy.core.multiarray", "_reconstruct")(np.ndarray, shape, dtype)


def _bounded_new_index(cls: Any, state: Any) -> Any:
    """pandas' ``_new_Index``, refusing a ``RangeIndex`` longer than :data:`MAX_INDEX_LENGTH`
    (pandas allocates arrays of an axis' length when it rebuilds the frame)."""
    import pandas as pd

    if isinstance(cls, type) and issubclass(cls, pd.RangeIndex) and isinstance(state, dict):
        bounds = [state.get(k, d) for k, d in (("start", 0), ("stop", 0), ("step", 1))]
        if all(isinstance(b, int) for b in bounds) and bounds[2] != 0:
            length = len(range(*bounds))
            if length > MAX_INDEX_LENGTH:
                raise UnsafePickleError(f"refused a RangeIndex of {length} entries (more than "
                                        f"{MAX_INDEX_LENGTH})")
    return _locate("pandas.core.indexes.base", "_new_Index")(cls, state)


_WRAPPED = {"_reconstruct": _empty_reconstruct, "_new_Index": _bounded_new_index}


def _base_unpickler() -> type:
    """pandas' compatibility unpickler (it reads pickles of older pandas), else pickle's own."""
    try:
        from pandas.compat.pickle_compat import Unpickler
    except ImportError:  # pragma: no cover - pandas moved it; current pickles still load
        return pickle._Unpickler
    return Unpickler


class _Restricted:
    """The checks of the module docstring, mixed into an unpickler class (:func:`_unpickler`):
    allowed globals only (``ALLOWED``), each in its role; ``WHAT`` names the kind of pickle in
    refusals."""

    ALLOWED: dict[tuple[str, str], str] = {}
    WHAT = ""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.roles: dict[int, str] = {}  # id of each resolved global -> its role
        self.names: dict[int, str] = {}

    def find_class(self, module: str, name: str) -> Any:
        role = self.ALLOWED.get((module, name))
        if role is None:
            raise UnsafePickleError(f"refused to load {one_line(module)}.{one_line(name)}, "
                                    f"which {self.WHAT} never needs")
        obj = _WRAPPED.get(name) or _locate(module, name)
        self.roles[id(obj)] = role
        self.names[id(obj)] = f"{module}.{name}"
        return obj

    def _check(self, obj: Any, role: str, what: str) -> None:
        if role not in self.roles.get(id(obj), ""):
            name = self.names.get(id(obj), f"a {type(obj).__name__} object")
            raise UnsafePickleError(f"refused to {what} {one_line(name)}")

    def load_reduce(self) -> None:
        self._check(self.stack[-2], "call", "call")
        super().load_reduce()

    def load_newobj(self) -> None:
        self._check(self.stack[-2], "new", "instantiate")
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._check(self.stack[-3], "new", "instantiate")
        super().load_newobj_ex()

    def load_build(self) -> None:
        target = self.stack[-2]
        if isinstance(target, type) or id(target) in self.names:
            raise UnsafePickleError(f"refused to set the state of {self.names.get(id(target))}")
        super().load_build()

    def load_inst(self) -> None:
        raise UnsafePickleError("refused a protocol-0 INST instruction (calls a class by name)")

    def load_obj(self) -> None:
        raise UnsafePickleError("refused a protocol-1 OBJ instruction (calls a class by name)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id (an object defined outside the file)")


def _unpickler(base: type, allowed: dict[tuple[str, str], str], what: str) -> type:
    """An unpickler class on ``base`` (a pure-Python unpickler, whose ``dispatch`` table can be
    overridden) with the :class:`_Restricted` checks."""

    class Unpickler(_Restricted, base):
        ALLOWED, WHAT = allowed, what
        dispatch = dict(base.dispatch)
        dispatch[pickle.REDUCE[0]] = _Restricted.load_reduce
        dispatch[pickle.NEWOBJ[0]] = _Restricted.load_newobj
        dispatch[pickle.NEWOBJ_EX[0]] = _Restricted.load_newobj_ex
        dispatch[pickle.BUILD[0]] = _Restricted.load_build
        dispatch[pickle.INST[0]] = _Restricted.load_inst
        dispatch[pickle.OBJ[0]] = _Restricted.load_obj

    return Unpickler


_DataFrameUnpickler = _unpickler(_base_unpickler(), ALLOWED_GLOBALS, "a pandas DataFrame pickle")
_ArrayUnpickler = _unpickler(pickle._Unpickler, ARRAY_GLOBALS,
                             "a pickle of numpy arrays, lists, dicts, strings and numbers")


def load_dataframe(path: str | Path) -> Any:
    """The pandas DataFrame pickled in ``path``, read without running code from the file.

    Raises:
        UnsafePickleError: The pickle refers to a global outside :data:`ALLOWED_GLOBALS` (or uses
            one outside its role); the message names the file and the global.
        DataError: The file is too large, not a pickle, truncated, or holds something other
            than a DataFrame.
    """
    import pandas as pd

    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise DataError(f"{path}: {size} bytes, more than the {MAX_BYTES} bytes a split file "
                        "may have")
    data = path.read_bytes()
    try:
        frame = _DataFrameUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}; nothing from the file was run (merdg reads "
                                "pickles with a restricted unpickler, see "
                                "docs/reliability.md)") from None
    except Exception as err:  # truncated, corrupt, or not a pickle: many types; name the file
        raise DataError(f"{path}: not a readable pandas pickle "
                        f"({type(err).__name__}: {one_line(err)})") from err
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{path}: holds a {type(frame).__name__}, not a pandas DataFrame")
    return frame


def load_arrays(path: str | Path) -> Any:
    """The containers (dicts, lists, tuples), numpy arrays, strings and numbers pickled in
    ``path``, read without running code from the file (:data:`ARRAY_GLOBALS`: numpy's array,
    dtype and scalar rebuilders only; no size limit beyond the file's, since an array's data
    comes from the file). Torch tensors, pandas objects and any class are refused.

    Raises:
        UnsafePickleError: The pickle refers to another global (named with the file).
        DataError: Not a pickle, truncated, or unreadable (the file named).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f).load()
    except UnsafePickleError as err:
        hint = ("; a torch tensor: save the features as numpy arrays (MMSA-FET: "
                "return_type='np')" if "torch" in str(err) else "")
        raise UnsafePickleError(f"{path}: {err}{hint}; nothing from the file was run (merdg "
                                "reads pickles with a restricted unpickler, see "
                                "docs/reliability.md)") from None
    except OSError as err:
        raise DataError(f"{path}: unreadable ({err.strerror or err})") from err
    except Exception as err:  # truncated, corrupt, or not a pickle: many types; name the file
        raise DataError(f"{path}: not a readable pickle "
                        f"({type(err).__name__}: {one_line(err)})") from err

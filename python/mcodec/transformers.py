"""Packed model directories into transformers and sentence-transformers, bit for bit.

A packed directory is what ``mcodec pack model_dir`` writes.

One line, either explicitly::

    from transformers import AutoModel
    import mcodec.transformers

    model = mcodec.transformers.from_pretrained(AutoModel, "model_dir.mcz")

or for any code that calls ``from_pretrained`` itself (pipelines, sentence-transformers)::

    with mcodec.transformers.enable():
        model = AutoModel.from_pretrained("model_dir.mcz")
        st = SentenceTransformer("model_dir.mcz")

and the other way, a model (with its tokenizer) saved straight to a packed directory::

    mcodec.transformers.save_pretrained(model, "finetuned.mcz", tokenizer)

A packed directory holds the config, tokenizer and other files as they were, and each
``*.safetensors`` weight file as ``*.safetensors.mcz`` (sharded checkpoints keep their
``model.safetensors.index.json``). The weights are decoded with :func:`mcodec.torch.load_file`
and handed to transformers as the state dict, so the model sees exactly the tensors the
original files held.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, Optional, Union

from . import pack as _pack
from . import torch as _mtorch
from .errors import ArgumentError, CorruptError, MissingFileError, OutputExistsError

__all__ = [
    "enable",
    "from_pretrained",
    "load_state_dict",
    "packed_weight_files",
    "save_pretrained",
    "sentence_transformer",
]

PathLike = Union[str, "os.PathLike[str]"]

_MCZ = ".mcz"
_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"


def _variant(name: str, variant: Optional[str]) -> str:
    if not variant:
        return name
    stem, ext = name.split(".", 1)
    return f"{stem}.{variant}.{ext}"


def packed_weight_files(directory: PathLike, variant: Optional[str] = None) -> Optional[list[str]]:
    """The packed weight files of a model directory, or ``None`` if it has none.

    ``model.safetensors.mcz``, or for a sharded checkpoint every shard its
    ``model.safetensors.index.json`` names, with ``.mcz`` appended.
    """
    directory = os.fspath(directory)
    single = os.path.join(directory, _variant(_WEIGHTS, variant) + _MCZ)
    if os.path.isfile(single):
        return [single]
    index = os.path.join(directory, _variant(_INDEX, variant))
    if not os.path.isfile(index):
        return None
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptError(f"{index}: not a safetensors index: {e}") from None
    files = []
    for shard in shards:
        path = os.path.join(directory, shard + _MCZ)
        if os.path.basename(shard) != shard or not shard.endswith(".safetensors"):
            raise CorruptError(f"{index}: shard name {shard!r} is not a file in the directory")
        if not os.path.isfile(path):
            if os.path.isfile(os.path.join(directory, shard)):
                return None  # an unpacked sharded checkpoint: not ours to load
            raise MissingFileError(f"{path}: shard listed in {index} is missing")
        files.append(path)
    return files


def load_state_dict(
    directory: PathLike,
    *,
    variant: Optional[str] = None,
    device: Any = "cpu",
    threads: Optional[int] = None,
) -> dict[str, Any]:
    """Every tensor of a packed model directory's weight files, as one dict."""
    files = packed_weight_files(directory, variant)
    if files is None:
        raise MissingFileError(
            f"{os.fspath(directory)}: no {_variant(_WEIGHTS, variant)}{_MCZ} "
            f"or {_variant(_INDEX, variant)} with packed shards"
        )
    state: dict[str, Any] = {}
    for path in files:
        state.update(_mtorch.load_file(path, device=device, threads=threads))
    return state


def _load_packed(
    original: Any, cls: Any, path: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``cls.from_pretrained(path, ...)`` with the weights from ``path``'s ``.mcz`` files."""
    subfolder = kwargs.get("subfolder") or ""
    directory = os.path.join(os.fspath(path), subfolder)
    state = load_state_dict(directory, variant=kwargs.pop("variant", None))
    config = kwargs.pop("config", None)
    if config is None or isinstance(config, (str, os.PathLike)):
        config, kwargs = cls.config_class.from_pretrained(
            directory if config is None else config, return_unused_kwargs=True, **kwargs
        )
    kwargs.pop("subfolder", None)
    return original(cls, None, *args, config=config, state_dict=state, **kwargs)


def _is_packed(path: Any, kwargs: dict[str, Any]) -> bool:
    """Whether ``path`` (with ``subfolder``) is a local directory with packed weights.

    A directory that also has a plain ``model.safetensors`` loads as usual.
    """
    if path is None:
        return False
    directory = os.path.join(os.fspath(path), kwargs.get("subfolder") or "")
    variant = kwargs.get("variant")
    return (
        os.path.isdir(directory)
        and not os.path.isfile(os.path.join(directory, _variant(_WEIGHTS, variant)))
        and packed_weight_files(directory, variant) is not None
    )


_lock = threading.RLock()
_depth = 0
_original: Any = None


@contextlib.contextmanager
def enable() -> Iterator[None]:
    """Makes ``from_pretrained`` of every transformers model read packed directories.

    Inside the block, ``PreTrainedModel.from_pretrained(path)`` (and so
    ``AutoModel.from_pretrained``, pipelines and sentence-transformers) loads the
    ``.mcz`` weights when ``path`` is a local directory with packed weights and no
    plain ``model.safetensors``; anything else loads as usual. Blocks may nest; the
    patch is process-wide while any block is open.
    """
    global _depth, _original
    from transformers import PreTrainedModel

    with _lock:
        if _depth == 0:
            _original = PreTrainedModel.__dict__["from_pretrained"]
            original = _original.__func__

            def from_pretrained(
                cls: Any, pretrained_model_name_or_path: Any = None, *args: Any, **kwargs: Any
            ) -> Any:
                path = pretrained_model_name_or_path
                if kwargs.get("state_dict") is None and _is_packed(path, kwargs):
                    return _load_packed(original, cls, path, args, kwargs)
                return original(cls, path, *args, **kwargs)

            from_pretrained.__doc__ = original.__doc__
            # Patched while the context is open (typed as the original, hence the ignore).
            PreTrainedModel.from_pretrained = classmethod(from_pretrained)  # type: ignore[method-assign, assignment]
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                PreTrainedModel.from_pretrained = _original  # type: ignore[method-assign]
                _original = None


def from_pretrained(model_class: Any, path: PathLike, *args: Any, **kwargs: Any) -> Any:
    """``model_class.from_pretrained(path, ...)`` for a packed model directory.

    ``model_class`` is any transformers model class or auto class (``AutoModel``,
    ``AutoModelForCausalLM``, ``BertModel``, ...); other arguments are passed on.
    """
    if not _is_packed(path, kwargs):
        raise MissingFileError(f"{os.fspath(path)}: no packed weights (.safetensors.mcz) found")
    with enable():
        return model_class.from_pretrained(path, *args, **kwargs)


def sentence_transformer(path: PathLike, *args: Any, **kwargs: Any) -> Any:
    """``SentenceTransformer(path, ...)`` for a packed sentence-transformers directory."""
    from sentence_transformers import SentenceTransformer

    with enable():
        return SentenceTransformer(os.fspath(path), *args, **kwargs)


def save_pretrained(
    model: Any,
    path: PathLike,
    *others: Any,
    force: bool = False,
    level: str = "default",
    threads: Optional[int] = None,
    **kwargs: Any,
) -> str:
    """Saves a model, and what goes with it, as a packed model directory.

    ``model.save_pretrained`` writes the directory under a temporary name beside
    ``path`` (``kwargs`` go to it: ``max_shard_size``, ``variant``, ...), each of
    ``others`` (tokenizers, processors: anything with ``save_pretrained``) saves into
    the same directory, and :func:`mcodec.pack` packs it to ``path``. The temporary
    directory is removed whatever happens, and ``path`` appears only when complete.
    ``mcodec unpack`` of the result gives exactly the files the objects wrote;
    :func:`from_pretrained` and :func:`sentence_transformer` load it.

    Args:
        model: a transformers ``PreTrainedModel``, a ``SentenceTransformer``, or any
            object with ``save_pretrained(directory, **kwargs)`` that writes
            ``*.safetensors`` weights.
        path: the packed directory to write (conventionally ending in ``.mcz``).
        others: more objects to save into the same directory.
        force: replace an existing ``path``.
        level: compression level, as for :func:`mcodec.pack`.
        threads: packing threads (default: all cores).
        kwargs: passed to ``model.save_pretrained``.

    Returns:
        ``path``.

    Raises:
        mcodec.OutputExistsError: ``path`` exists and ``force`` is false (checked
            before anything is saved).
        mcodec.ArgumentError: an object cannot save itself, or the model wrote no
            ``*.safetensors`` weights (``safe_serialization=False``).

    """
    out = os.fspath(path).rstrip("/\\")
    if not out:
        raise ArgumentError("save_pretrained: empty path")
    if kwargs.get("safe_serialization", True) is False:
        raise ArgumentError(
            f"{out}: safe_serialization=False writes pickled weights; packed directories "
            "hold safetensors weights"
        )
    for obj in (model, *others):
        if not callable(getattr(obj, "save_pretrained", None)):
            raise ArgumentError(f"a {type(obj).__name__} has no save_pretrained method")
    if os.path.lexists(out) and not force:
        raise OutputExistsError(f"{out}: output already exists (pass force=True to overwrite)")
    parent, name = os.path.split(out)
    unpacked = tempfile.mkdtemp(prefix=f".{name}.", suffix=".unpacked", dir=parent or ".")
    try:
        model.save_pretrained(unpacked, **kwargs)
        for obj in others:
            obj.save_pretrained(unpacked)
        if not any(f.endswith(".safetensors") for _, _, files in os.walk(unpacked) for f in files):
            raise ArgumentError(
                f"{out}: {type(model).__name__}.save_pretrained wrote no *.safetensors weights"
            )
        return _pack(unpacked, out, force=force, level=level, threads=threads)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)

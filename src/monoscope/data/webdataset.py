"""Pairs from WebDataset tar shards in the img2dataset layout.

``--data`` names the shards as a brace pattern (``shards/{00000..00099}.tar``), a glob
(``shards/*.tar``), one ``.tar`` file, or a directory of ``.tar`` files (sorted by name).
A sample is the run of consecutive members sharing a key (the member name up to the first dot
of its base name, as in ``webdataset``): ``{key}.jpg|jpeg|png|webp`` is the image,
``{key}.txt`` the caption (else the ``caption`` of ``{key}.json``), and ``{key}.json`` the labels
(img2dataset's metadata). Pair ids are the keys.

Shards are read with the standard ``tarfile`` module, headers first: captions and labels are
read while iterating, image bytes only when ``Pair.load_image`` runs (in a DataLoader worker).
Every worker and rank iterates the whole source to find its chunks, so skipping another rank's
shard or a committed one costs a header scan, not a read of its images.

Damage is counted, never fatal: a truncated or corrupt shard keeps the samples before the
damage, and the samples lost after it are skipped as ``corrupt shard`` (as many as
img2dataset's ``{shard}_stats.json`` says the shard held, else one for the rest of the shard).
A caption that is not UTF-8 is skipped as ``undecodable caption``, unparsable labels as
``corrupt labels``, a sample without an image as ``missing image``.
"""

from __future__ import annotations

import functools
import glob
import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .._util import MonoscopeError
from . import BadRecord, Pair
from .pixels import open_image, to_rgb  # noqa: F401  (to_rgb: used by hfdata)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
_DAMAGE = (tarfile.TarError, OSError, EOFError, ValueError, UnicodeError)
log = logging.getLogger(__name__)
_warned: set[Path] = set()


def is_tar_spec(spec: str) -> bool:
    """Whether ``--data spec`` names tar shards (a pattern or file ending in ``.tar``, or a
    directory holding ``.tar`` files)."""
    path = Path(spec)
    return spec.endswith(".tar") or (path.is_dir() and any(path.glob("*.tar")))


def shard_paths(spec: str) -> list[Path]:
    """The absolute shard paths named by ``spec``, in reading order; all must exist."""
    if "{" in spec:
        try:
            from braceexpand import braceexpand
        except ImportError:
            raise MonoscopeError(
                f"--data {spec}: brace patterns need the braceexpand package "
                "(pip install 'monoscope[webdataset]')"
            ) from None
        paths = [Path(p) for p in braceexpand(spec)]
    elif any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in glob.glob(spec))
    elif Path(spec).is_dir():
        paths = sorted(Path(spec).glob("*.tar"))
    else:
        paths = [Path(spec)]
    if not paths:
        raise MonoscopeError(f"--data {spec}: no tar shards match")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MonoscopeError(
            f"--data {spec}: {len(missing)} of {len(paths)} shards do not exist "
            f"(first: {missing[0]})"
        )
    return [p.resolve() for p in paths]


def decode_image_bytes(data: bytes, where: str) -> Image.Image:
    """Decode encoded image bytes as RGB (transparency composited on white).

    Raises :class:`BadRecord` ``corrupt image`` naming ``where``.
    """
    return open_image(io.BytesIO(data), where)


def skipped_pair(id: str, reason: str, ref: str, detail: str = "") -> Pair:
    """A record that ``embed`` counts as skipped for ``reason`` (its ``load_image`` raises).

    The caption is the reason, so the empty-caption check does not take precedence.
    """

    def fail() -> Image.Image:
        raise BadRecord(reason, detail or id)

    return Pair(id=id, caption=reason, image_ref=ref, load_image=fail)


def utf8(value: Any) -> bool:
    """Whether ``value``'s strings are valid Unicode, i.e. writable to ``pairs.jsonl`` (JSON
    escapes and ``surrogateescape`` decoding can leave lone surrogates in a ``str``)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_tar_image(path: str, offset: int, size: int, name: str) -> Image.Image:
    """Decode the member ``name`` stored at ``offset`` (``size`` bytes) of tar file ``path``."""
    ref = f"tar:{path}#{name}"
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as e:
        raise BadRecord("missing image", f"{ref}: {e}") from None
    if len(data) != size:
        raise BadRecord("corrupt image", f"{ref}: truncated")
    return decode_image_bytes(data, ref)


@functools.lru_cache(maxsize=32)
def _members(path: str) -> dict[str, tuple[int, int]]:
    with tarfile.open(path, "r:") as tf:
        return {m.name: (m.offset_data, m.size) for m in tf if m.isfile()}


def load_tar_ref(ref: str) -> Image.Image:
    """Load the image of an ``image_ref`` ``tar:/abs/shard.tar#member`` (member index cached)."""
    path, _, name = ref.removeprefix("tar:").rpartition("#")
    try:
        offset, size = _members(path)[name]
    except (KeyError, *_DAMAGE) as e:
        raise BadRecord("missing image", f"{ref}: {e}") from None
    return read_tar_image(path, offset, size, name)


class TarPairs:
    """A :class:`~monoscope.data.PairSource` over WebDataset tar shards (see module doc)."""

    def __init__(self, spec: str):
        self.spec = spec
        self.shards = shard_paths(spec)
        self._len: int | None = None

    def __iter__(self) -> Iterator[Pair]:
        for path in self.shards:
            yield from self._shard(path)

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "webdataset",
            "spec": os.path.abspath(self.spec),
            "shards": len(self.shards),
            "bytes": sum(p.stat().st_size for p in self.shards),
        }

    def _shard(self, path: Path) -> Iterator[Pair]:
        """The pairs of one shard, then one ``corrupt shard`` skip per record lost to damage."""
        n = 0
        try:
            with tarfile.open(path, "r:") as tf:
                for key, members in _samples(tf):
                    yield self._pair(path, tf, key, members)
                    n += 1
        except _DAMAGE as e:
            lost = max(_expected(path) - n, 1)
            if path not in _warned:  # once per process, though the source is read repeatedly
                _warned.add(path)
                log.warning("%s: corrupt shard after %d samples (%s); %d skipped", path, n, e, lost)
            for i in range(lost):
                yield skipped_pair(f"{path.name}#lost{i}", "corrupt shard", f"tar:{path}", str(e))

    def _pair(
        self, path: Path, tf: tarfile.TarFile, key: str, members: dict[str, tarfile.TarInfo]
    ) -> Pair:
        ref = f"tar:{path}"
        image = next((members[e] for e in IMAGE_EXTS if e in members), None)
        if image is not None:
            ref = f"tar:{path}#{image.name}"
        if not utf8(ref):  # a member name that is not UTF-8 (tarfile keeps it surrogate-escaped)
            return skipped_pair(key, "undecodable name", ref)
        labels: dict[str, Any] = {}
        caption = ""
        if "json" in members:
            try:
                meta = json.loads(_read(tf, members["json"]).decode("utf-8"))
            except (ValueError, RecursionError) as e:  # JSON, UTF-8 and int-size errors
                return skipped_pair(key, "corrupt labels", ref, f"{ref}: {key}.json: {e}")
            labels = meta if isinstance(meta, dict) else {"json": meta}
            if isinstance(labels.get("caption"), str):
                caption = labels.pop("caption")
            if not utf8(labels):
                return skipped_pair(key, "corrupt labels", ref, f"{ref}: {key}.json")
        if "txt" in members:
            try:
                caption = _read(tf, members["txt"]).decode("utf-8")
            except UnicodeDecodeError:
                return skipped_pair(key, "undecodable caption", ref, f"{ref}: {key}.txt")
        if not utf8(caption):
            return skipped_pair(key, "undecodable caption", ref, f"{ref}: caption")
        if image is None:
            return skipped_pair(key, "missing image", ref, f"{ref}: no image for key {key}")
        return Pair(
            id=key,
            caption=caption,
            image_ref=ref,
            labels=labels,
            load_image=functools.partial(
                read_tar_image, str(path), image.offset_data, image.size, image.name
            ),
        )


def _samples(tf: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """``(key, {extension: member})`` per sample; raises ``tarfile.ReadError`` on damage
    (``tarfile`` itself stops silently at some of it, so the end marker is checked here)."""
    assert tf.fileobj is not None
    end = int(tf.fileobj.seek(0, io.SEEK_END))  # type: ignore[call-arg, call-overload]
    key: str | None = None
    members: dict[str, tarfile.TarInfo] = {}
    while (m := tf.next()) is not None:
        if not m.isfile() or not (match := _KEY.match(m.name)):
            continue
        k, ext = match.groups()
        if k != key:
            if key is not None:
                yield key, members
            key, members = k, {}
        members[ext.lower()] = m
        if m.offset_data + m.size > end:
            raise tarfile.ReadError(f"member {m.name} is truncated")
    tf.fileobj.seek(tf.offset)
    if tf.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"no end-of-archive marker after byte {tf.offset}")
    if key is not None:
        yield key, members


def _read(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tf.extractfile(member)
    data = f.read() if f else b""
    if len(data) != member.size:
        raise tarfile.ReadError(f"member {member.name} is truncated")
    return data


def _expected(path: Path) -> int:
    """Samples img2dataset wrote to the shard (``successes`` in its stats file), else 0."""
    try:
        stats = json.loads(path.with_name(f"{path.stem}_stats.json").read_text("utf-8"))
        return int(stats.get("successes", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0

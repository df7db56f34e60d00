"""The source layouts ``hitts ingest --format`` accepts, by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hitts.model.data.source import Reader


def _folder(root: Path) -> Reader:
    from hitts.model.data.folder import FolderReader

    return FolderReader(root)


def _nyuv2_mtan(root: Path) -> Reader:
    from hitts.model.data.mtan import NYUv2MtanReader

    return NYUv2MtanReader(root)


def _cityscapes_mtan(root: Path) -> Reader:
    from hitts.model.data.mtan import CityscapesMtanReader

    return CityscapesMtanReader(root)


def _pascal_context(root: Path) -> Reader:
    from hitts.model.data.pascal_context import PascalContextReader

    return PascalContextReader(root)


FORMATS: dict[str, Callable[[Path], Reader]] = {
    "folder": _folder,
    "nyuv2-mtan": _nyuv2_mtan,
    "cityscapes-mtan": _cityscapes_mtan,
    "pascal-context": _pascal_context,
}


def open_reader(fmt: str, root: str | Path) -> Reader:
    """The reader for ``fmt`` over ``root``; ValueError for an unknown format name."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[fmt](Path(root))

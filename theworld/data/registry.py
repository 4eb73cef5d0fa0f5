"""The registry of ``data.source`` (filled by :mod:`theworld.data.sources`), apart from it so that
:class:`~theworld.data.config.DataConfig`, which the sources build on, can annotate ``source`` with its names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from theworld.registry import Registry

if TYPE_CHECKING:
    from theworld.data.stream import StreamSource

    SourceName = str  # a registered source's name

SOURCES: Registry[type[StreamSource]] = Registry("data.source", "data source")

if not TYPE_CHECKING:
    # `registry.SourceName` is the Literal of the sources registered when it is read (by the CLI's parser).
    __getattr__ = SOURCES.choices_getattr("SourceName")

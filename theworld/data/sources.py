"""The registry of ``data.source``: one reader class per source, each declaring the data options it applies.

Adding a source is one file, a :class:`~theworld.data.stream.StreamSource` subclass, and one line,
``register_source(MySource)``, run before ``theworld`` parses its config: ``data.source`` then accepts its ``NAME``,
and the data module, ``theworld estimate`` and the option checks below read it from here.

A source's ``OPTIONS`` say how it applies the options that are not alike everywhere; an option that some source
lists is refused, before any weight loads, by a source that does not list it, so no option is ever silently
ignored. ``options_table()`` writes docs/data.md's table from the same declarations.
"""

from __future__ import annotations

from dataclasses import fields

from theworld.data.config import DataConfig
from theworld.data.parquet import ParquetURLSource
from theworld.data.registry import SOURCES
from theworld.data.stream import StreamSource
from theworld.data.webdataset import WebDatasetSource
from theworld.errors import ConfigError

__all__ = ["SOURCES", "options_table", "refuse_inapplicable", "register_source", "source_options"]


def register_source(source: type[StreamSource]) -> type[StreamSource]:
    """Makes ``source`` the reader of ``data.source: <source.NAME>``."""
    return SOURCES.register(source.NAME, source)


register_source(WebDatasetSource)
register_source(ParquetURLSource)


def source_options() -> list[str]:
    """Every option some source applies in a way of its own (so others may refuse it), in DataConfig's order."""
    return [f.name for f in fields(DataConfig) if any(f.name in cls.OPTIONS for cls in SOURCES.values())]


def refuse_inapplicable(config: DataConfig) -> None:
    """Stops (ConfigError) when ``config`` sets an option its source cannot apply, or one without the option it
    needs beside it (one paragraph names every such option, the source and the fix), or held-out rows beside a
    validation set. Where a ``data:`` config is read from the user: the data module, ``theworld estimate``."""
    source = SOURCES[config.source]
    defaults = {f.name: f.default for f in fields(DataConfig)}
    problems = []
    for name in source_options():
        value = getattr(config, name)
        if name not in source.OPTIONS and value != defaults[name]:
            where = " or ".join(f"{cls.NAME} ({cls.OPTIONS[name]})" for cls in SOURCES.values() if name in cls.OPTIONS)
            problems.append(f"data.{name}={value!r} applies only to the source {where}")
    for name, needed in source.REQUIRES.items():
        if getattr(config, name) != defaults[name] and getattr(config, needed) == defaults[needed]:
            problems.append(f"data.{name} needs data.{needed} beside it here ({source.OPTIONS[name]})")
    if problems:
        raise ConfigError(
            f"data.source={config.source} cannot apply every data option given: {'; '.join(problems)}. "
            f"Drop those options, give the options they need, or set data.source to a source that applies them (the "
            f"docs/data.md's table says which data option applies where)."
        )
    if config.val_samples and config.val_data is not None:
        raise ConfigError(
            f"data.val_samples={config.val_samples} holds out the first rows for validation, but data.val_data is "
            f"set, and validation reads that instead: the rows would not be held out. Drop one of the two."
        )


def options_table() -> str:
    """The Markdown table of the options that sources apply differently: how each source applies each."""
    names = list(SOURCES)
    lines = [
        "| option | " + " | ".join(f"`{name}` source" for name in names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for option in source_options():
        cells = []
        for cls in SOURCES.values():
            how = cls.OPTIONS.get(option, "stops the run before any weight loads")
            needs = cls.REQUIRES.get(option)
            cells.append(f"{how}; needs `{needs}`" if needs else how)
        lines.append(f"| `{option}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""A data source registered from outside theworld, as docs/data.md's "Adding a source" shows: a JSON-lines file of
``{"key", "image", "text"}`` rows, the image a path relative to the file. Imported before the CLI runs (and by the
loader workers, which unpickle the source)."""

import json
from collections.abc import Iterator
from pathlib import Path

from theworld.data.decode import Outcome
from theworld.data.sources import register_source
from theworld.data.stream import Consumer, LoaderRate, StreamSource


class JsonLinesSource(StreamSource):
    NAME = "jsonl"
    OPTIONS: dict[str, str] = {}  # it applies none of the options that sources apply each their own way
    DATA_KIND = "a JSON-lines file"
    BLURS_BY_DEFAULT = False
    LOADER_RATE = LoaderRate(120.0, "toy JSON-lines source: assumed, not measured")

    def __init__(self, path: str, transform=None, *, config=None, rank=None, world_size=None, **options):
        super().__init__(config, transform, rank, world_size, options)
        self.path = Path(path)

    @classmethod
    def check_data(cls, data) -> None:
        if not isinstance(data, str) or not Path(data).is_file():
            raise FileNotFoundError(f"{data!r} is not one file")

    @classmethod
    def build(cls, config, data, *, train, **common) -> "JsonLinesSource":
        return cls(data, config=config, **common)

    def _start_position(self) -> dict[str, int]:
        return {"row": 0}

    def _records(self, state: dict, consumer: Consumer) -> Iterator[tuple[dict, dict]]:
        lines = self.path.read_text().splitlines()
        for row in range(state["row"], len(lines)):
            if row % consumer.count == consumer.index:  # each row read by one rank and worker
                yield {"row": row + 1}, json.loads(lines[row])

    def _to_outcome(self, record: dict) -> Outcome:
        image = (self.path.parent / record["image"]).read_bytes()
        return self._image_outcome(record["key"], image, record["text"], key_kind="shard_key")


register_source(JsonLinesSource)

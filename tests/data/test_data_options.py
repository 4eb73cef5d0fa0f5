"""The data-source registry: each data option a source cannot apply is refused there, naming option and source;
docs/data.md's table of which option applies where is the registry's own."""

from pathlib import Path

import pytest
from support.data_options import VALUES, inapplicable

from theworld.data.config import DataConfig
from theworld.data.sources import SOURCES, options_table, refuse_inapplicable, source_options
from theworld.errors import ConfigError

DATA_PAGE = Path(__file__).parents[2] / "docs/data.md"


def test_every_option_a_source_declares_has_a_test_value():
    assert set(source_options()) == set(VALUES)


@pytest.mark.parametrize("source, option", [(s, o) for s in SOURCES for o in inapplicable(s)])
def test_an_option_on_a_source_that_cannot_apply_it_is_refused(source, option):
    with pytest.raises(ConfigError) as refused:
        refuse_inapplicable(DataConfig(source=source, **{option: VALUES[option][0]}))
    assert f"data.source={source} cannot apply" in str(refused.value)
    assert f"data.{option}=" in str(refused.value)


@pytest.mark.parametrize("source", SOURCES)
def test_the_options_a_source_applies_are_accepted(source):
    applied = {name: VALUES[name][0] for name in SOURCES[source].OPTIONS}
    applied |= {needed: VALUES[needed][0] for needed in SOURCES[source].REQUIRES.values()}
    refuse_inapplicable(DataConfig(source=source, **applied))  # raises nothing


def test_shards_filtered_by_metadata_need_the_metadata():
    for option in ("clip_score_threshold", "verify_sha256"):
        with pytest.raises(ConfigError, match=f"data.{option} needs data.metadata"):
            refuse_inapplicable(DataConfig(source="webdataset", **{option: VALUES[option][0]}))


def test_held_out_rows_beside_a_validation_set_are_refused():
    with pytest.raises(ConfigError, match="data.val_samples=4 holds out .* but data.val_data is set"):
        refuse_inapplicable(DataConfig(source="hf", val_samples=4, val_data="val.parquet"))


def test_the_readme_table_is_the_registrys():
    assert options_table() in DATA_PAGE.read_text()


def test_metadata_without_the_columns_a_filter_reads_stops_the_run(tmp_path, shards):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from theworld.lit.datamodule import DataConfigError, TheWorldDataModule

    pq.write_table(pa.table({"uid": ["0" * 32], "sha256": ["0" * 64]}), tmp_path / "meta.parquet")
    with pytest.raises(DataConfigError, match=r"data.metadata=.* lack \['clip_b32_similarity_score'\]"):
        TheWorldDataModule(source="webdataset", train_data=str(shards.dir), metadata=str(tmp_path / "meta.parquet"),
                           clip_score_threshold=0.3, verify_sha256=True)

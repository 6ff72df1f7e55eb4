"""The validation tiles shown in the sample figures."""
from __future__ import annotations

from segtrain.config.schema import DataConfig
from segtrain.data.dataset import TileDataset
from segtrain.train.validation import sample_tiles


def test_sample_tiles_are_whole_tiles_spread_over_the_split(small_data_ro):
    val = TileDataset(DataConfig(root=str(small_data_ro), tile_size=48, normalize="none"), "val", training=False,
                      seed=0, stats=None)
    chosen = sample_tiles(val, 4)
    assert len(chosen) == 4
    for i in chosen:
        w, info = val.grid[i], val.infos[val.grid[i].scene]
        assert w.y + 48 <= info.height and w.x + 48 <= info.width  # never a padded border tile
    assert len({val.grid[i].scene for i in chosen}) == 2  # both val scenes are shown

"""Each tile's random stream: numpy's default_rng([seed, epoch, item]) values, made without a Generator."""
from __future__ import annotations

import numpy as np
import pytest

from segtrain.data.item_random import item_streams, seed_words

SEEDS = [0, 1, 2**32 - 1, 2**32, 2**63 + 5, 2**64 - 1]  # one and two 32-bit words of entropy
BOUNDS = [1, 2, 3, 4, 10725, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 3 * 2**40 + 7, 2**63 - 1]


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_words_are_those_of_numpys_seed_sequence(seed):
    items = [0, 1, 9, 2**31, 2**32 - 1]
    expected = [np.random.SeedSequence([seed, 3, i]).generate_state(4, np.uint64) for i in items]
    np.testing.assert_array_equal(seed_words(seed, 3, items), np.stack(expected))


@pytest.mark.parametrize("seed", SEEDS)
def test_every_draw_equals_numpys_generator_seeded_with_seed_epoch_and_item(seed):
    items = [0, 5, 999, 2**32 - 1]
    for epoch in (0, 7, 2**33):
        for item, stream in zip(items, item_streams(seed, epoch, items)):
            numpy_stream = np.random.default_rng([seed, epoch, item])
            for bound in BOUNDS:  # 32-bit draws share 64-bit outputs: their order matters, so interleave
                assert [stream.integers(0, bound) for _ in range(3)] == [int(numpy_stream.integers(0, bound)) for _ in range(3)]
                assert stream.random() == numpy_stream.random()
                assert stream.integers(4) == int(numpy_stream.integers(4))
                assert stream.uniform(-1.0, 1.0) == numpy_stream.uniform(-1.0, 1.0)
                assert stream.integers(5, 17) == int(numpy_stream.integers(5, 17))


def test_an_empty_range_is_refused_like_numpy():
    with pytest.raises(ValueError, match="low >= high"):
        item_streams(0, 0, [0])[0].integers(3, 3)

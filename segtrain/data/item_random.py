"""numpy's ``default_rng([seed, epoch, item])`` streams for a batch of items, without a Generator each.

Each tile's random choices come from its own generator seeded with (seed, epoch, item), so a
tile is the same for any number of workers and after a resume. Making a numpy Generator per
tile and calling it a handful of times cost about 80 us a tile, a third of reading it from the
staging cache. Here the seeding (numpy's SeedSequence hash, then PCG64's initialization) runs
vectorized over the whole batch, and the few draws a tile needs run on Python integers,
following numpy's algorithms step by step, so every value is bit-identical to what
``np.random.default_rng([seed, epoch, item])`` gives (tests compare them over many seeds):

- ``random()``: the next 64-bit output's top 53 bits times 2**-53;
- ``uniform(low, high)``: ``low + (high - low) * random()``;
- ``integers(low, high)``: Lemire's bounded method, on the 32-bit outputs (two per 64-bit
  output, low half first, the high half kept for the next call) when the range fits 32 bits.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# numpy/random/bit_generator.pyx (SeedSequence) and pcg64.h (PCG64, XSL-RR output)
_POOL_SIZE = 4
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16
_PCG_MULT = (0x2360ED051FC65DA4 << 64) | 0x4385DF649FCCF645
_M32, _M64, _M128 = (1 << 32) - 1, (1 << 64) - 1, (1 << 128) - 1


class ItemRandom:
    """One item's stream: the draws of ``np.random.default_rng([seed, epoch, item])`` that the data
    set makes (``random``, ``integers``, ``uniform``), value for value."""

    __slots__ = ("_state", "_inc", "_half")

    def __init__(self, state: int, inc: int):
        self._state, self._inc = state, inc
        self._half: Optional[int] = None  # the unused high half of the last 64-bit output

    @classmethod
    def seeded(cls, words: Sequence[int]) -> "ItemRandom":
        """The stream PCG64 starts from SeedSequence words (:func:`seed_words`): state, then increment."""
        inc = ((((words[2] << 64) | words[3]) << 1) | 1) & _M128  # pcg_setseq_128_srandom_r
        state = (inc + ((words[0] << 64) | words[1])) & _M128
        return cls((state * _PCG_MULT + inc) & _M128, inc)

    def _next64(self) -> int:
        state = self._state = (self._state * _PCG_MULT + self._inc) & _M128
        high = state >> 64
        word, turn = (high ^ state) & _M64, high >> 58
        return ((word >> turn) | (word << (64 - turn))) & _M64

    def _next32(self) -> int:
        if self._half is not None:
            half, self._half = self._half, None
            return half
        word = self._next64()
        self._half = word >> 32
        return word & _M32

    def random(self) -> float:
        """A float in [0, 1), as ``Generator.random()``."""
        return (self._next64() >> 11) * (1.0 / 9007199254740992.0)

    def uniform(self, low: float, high: float) -> float:
        """A float in [low, high), as ``Generator.uniform(low, high)``."""
        return low + (high - low) * self.random()

    def integers(self, low: int, high: Optional[int] = None) -> int:
        """An int in [low, high) (or [0, low)), as ``Generator.integers`` with the default int64."""
        if high is None:
            low, high = 0, low
        if high <= low:
            raise ValueError(f"integers: low >= high ({low} >= {high})")
        span = high - low - 1  # numpy's closed range
        if span == 0:
            return low  # nothing is drawn
        if span <= _M32:
            if span == _M32:
                return low + self._next32()
            return low + _lemire(self._next32, span + 1, 32)
        if span == _M64:
            return low + self._next64()
        return low + _lemire(self._next64, span + 1, 64)


def _lemire(draw, bound: int, bits: int) -> int:
    """A uniform int below ``bound`` from ``bits``-bit draws (Lemire's method, numpy's rejection threshold)."""
    mask = (1 << bits) - 1
    product = draw() * bound
    if product & mask < bound:
        threshold = (mask + 1 - bound) % bound
        while product & mask < threshold:
            product = draw() * bound
    return product >> bits


def item_streams(seed: int, epoch: int, items: Sequence[int]) -> list[ItemRandom]:
    """The streams of ``np.random.default_rng([seed, epoch, item])`` for each of ``items``."""
    return [ItemRandom.seeded(words) for words in seed_words(seed, epoch, items).tolist()]


def seed_words(seed: int, epoch: int, items: Sequence[int] | np.ndarray) -> np.ndarray:
    """(n, 4) uint64: ``SeedSequence([seed, epoch, item]).generate_state(4, np.uint64)`` for each
    item (all >= 0, items below 2**32), in about 160 array operations whatever n is: computed
    for a whole epoch at once it costs about a microsecond a tile."""
    state = _generate_state(_mix_entropy(_entropy_words(seed, epoch, np.asarray(items, dtype=np.uint64))))
    halves = state.astype(np.uint64)  # 8 rows of uint32 words: 4 little-endian uint64
    return (halves[0::2] | (halves[1::2] << np.uint64(32))).T


def _int_words(n: int) -> list[int]:
    """``n`` as SeedSequence reads an int: little-endian 32-bit words, at least one."""
    words = [n & _M32]
    n >>= 32
    while n:
        words.append(n & _M32)
        n >>= 32
    return words


def _entropy_words(seed: int, epoch: int, items: np.ndarray) -> list[np.ndarray]:
    """The entropy of [seed, epoch, item] as a list of uint32 words, each an (n,) array over the items."""
    if seed < 0 or epoch < 0:
        raise ValueError("seed and epoch must be non-negative")
    n = len(items)
    words = [np.full(n, w, dtype=np.uint32) for w in _int_words(seed) + _int_words(epoch)]
    low, high = (items & np.uint64(_M32)).astype(np.uint32), (items >> np.uint64(32)).astype(np.uint32)
    if high.any():
        raise ValueError("item indices must be below 2**32")
    return words + [low]


def _hash(value: np.ndarray, const: int) -> tuple[np.ndarray, int]:
    value = value ^ np.uint32(const)
    const = (const * _MULT_A) & _M32
    value = value * np.uint32(const)
    return value ^ (value >> np.uint32(_XSHIFT)), const


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = np.uint32(_MIX_MULT_L) * x - np.uint32(_MIX_MULT_R) * y
    return result ^ (result >> np.uint32(_XSHIFT))


def _mix_entropy(entropy: list[np.ndarray]) -> list[np.ndarray]:
    """SeedSequence's pool of 4 words from the entropy words (each an array over the items)."""
    const = _INIT_A
    zero = np.zeros_like(entropy[0])
    pool = []
    for i in range(_POOL_SIZE):
        value, const = _hash(entropy[i] if i < len(entropy) else zero, const)
        pool.append(value)
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                hashed, const = _hash(pool[src], const)
                pool[dst] = _mix(pool[dst], hashed)
    for src in range(_POOL_SIZE, len(entropy)):
        for dst in range(_POOL_SIZE):
            hashed, const = _hash(entropy[src], const)
            pool[dst] = _mix(pool[dst], hashed)
    return pool


def _generate_state(pool: list[np.ndarray]) -> np.ndarray:
    """SeedSequence.generate_state(4, uint64) as 8 uint32 words (rows) over the items (columns)."""
    const = _INIT_B
    out = []
    for i in range(8):
        value = pool[i % _POOL_SIZE] ^ np.uint32(const)
        const = (const * _MULT_B) & _M32
        value = value * np.uint32(const)
        out.append(value ^ (value >> np.uint32(_XSHIFT)))
    return np.stack(out)

"""smart_nets.data.make_dataset: one ``cache`` key picks MONAI's Dataset, CacheDataset or PersistentDataset."""

from __future__ import annotations

import pytest
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, MapTransform, RandomizableTransform

from smart_nets.data import make_dataset


class _CountedScale(MapTransform):
    """Deterministic: multiplies by ``factor`` and counts its calls (the part a cache keeps)."""

    def __init__(self, factor: float) -> None:
        super().__init__(keys="image")
        self.factor, self.calls = factor, 0

    def __call__(self, data):
        self.calls += 1
        return {"image": data["image"] * self.factor}


class _RandShift(RandomizableTransform, MapTransform):
    """Random: adds a random number (never cached)."""

    def __init__(self) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys="image")

    def __call__(self, data):
        return {"image": data["image"] + float(self.R.uniform()), "plain": data["image"]}


def _items(n: int = 3) -> list[dict]:
    return [{"image": torch.full((1, 2, 2, 2), float(i + 1))} for i in range(n)]


@pytest.mark.parametrize(
    "cache, kind, calls_over_two_epochs",
    [("none", Dataset, 6), ("memory", CacheDataset, 3), ("disk", PersistentDataset, 3)],
)
def test_each_mode_is_the_monai_dataset_and_caches_only_the_deterministic_start(
    tmp_path, cache, kind, calls_over_two_epochs
):
    scale = _CountedScale(2.0)
    dataset = make_dataset(_items(), Compose([scale, _RandShift()]), cache=cache, cache_dir=tmp_path / "cache")
    assert type(dataset) is kind
    first = [dataset[i] for i in range(3)]
    second = [dataset[i] for i in range(3)]
    assert scale.calls == calls_over_two_epochs
    for i in range(3):
        assert torch.equal(first[i]["plain"], torch.full((1, 2, 2, 2), 2.0 * (i + 1)))  # cached value is right
        assert not torch.equal(first[i]["image"], second[i]["image"])  # the random part runs every time
    if cache == "disk":
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 3


def test_disk_cache_writes_new_files_when_the_cached_transforms_change(tmp_path):
    items = _items(2)
    old = make_dataset(items, Compose([_CountedScale(2.0), _RandShift()]), cache="disk", cache_dir=tmp_path)
    assert float(old[0]["plain"].max()) == 2.0
    new = make_dataset(items, Compose([_CountedScale(3.0), _RandShift()]), cache="disk", cache_dir=tmp_path)
    assert float(new[0]["plain"].max()) == 3.0  # not the stale 2.0 on disk
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_memory_cache_rate_caches_that_fraction(tmp_path):
    dataset = make_dataset(_items(4), Compose([_CountedScale(2.0), _RandShift()]), cache="memory", cache_rate=0.5)
    assert dataset.cache_num == 2


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(cache="ram"), ValueError, "ram"),
        (dict(cache="memory", cache_rate=1.5), ValueError, "cache_rate must be between 0 and 1, got 1.5"),
        (dict(cache="disk"), ValueError, "needs a cache_dir"),
        (dict(cache="disk", cache_dir=""), ValueError, "needs a cache_dir"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, error, words):
    with pytest.raises(error, match=words):
        make_dataset(_items(), Compose([_CountedScale(2.0)]), **kwargs)


def test_a_file_as_cache_dir_and_an_empty_list_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        make_dataset(_items(), Compose([_CountedScale(2.0)]), cache="disk", cache_dir=tmp_path / "file")
    with pytest.raises(ValueError, match="matched nothing"):
        make_dataset([], Compose([_CountedScale(2.0)]), cache="none")

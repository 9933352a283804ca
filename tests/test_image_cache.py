"""Decode-once image cache: identical eval tensors, no second decode, same augmentation ranges, a byte budget."""
import copy
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from headstart.backbones.base import Preprocess
from headstart.data import image_cache, images
from headstart.data.augmentation import STANDARD_AUGMENTATION, Augmentation
from headstart.data.image_cache import CachedImageDataset, ImageCache

PRE = Preprocess(24, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)


@pytest.fixture
def photos(tmp_path):
    """A few tiny noisy images of different shapes (JPEG and PNG), so resize and crop both do something."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(40, 30), (31, 47), (64, 64), (25, 25), (90, 33)]):
        path = tmp_path / f"img{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    original = images.open_rgb

    def counting(path, min_side=0):
        calls.append(path)
        return original(path, min_side)

    monkeypatch.setattr(images, "open_rgb", counting)
    return calls


def test_cached_eval_tensors_equal_the_uncached_transform(photos):
    cached = CachedImageDataset(photos, PRE, train=False, cache=ImageCache())
    assert all(t is not None for t in cached.cached)
    uncached = images.ImageDataset(photos, images.eval_transform(PRE), images.eval_side(PRE))
    for i in range(len(photos)):
        assert torch.equal(cached[i], uncached[i]), photos[i]



def test_a_large_jpeg_decodes_at_a_reduced_scale_that_keeps_twice_the_side(tmp_path):
    """libjpeg's DCT scaling: a photo far larger than the input decodes at 1/2-1/8 scale, never below twice the side
    the resize goes to, and the cached tensor is the uncached path's, close to the full decode's."""
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (60, 80, 3)), np.ones((10, 10, 1))).astype(np.uint8)  # 800 x 600
    path = str(tmp_path / "photo.jpg")
    Image.fromarray(smooth).save(path, quality=95)
    side = images.eval_side(PRE)  # 27
    drafted = images.open_rgb(path, side)
    assert 2 * side <= min(drafted.size) < 600 // 2 and drafted.size[0] * 3 == drafted.size[1] * 4
    assert images.open_rgb(path).size == (800, 600), "no min_side: every pixel"
    cached = CachedImageDataset([path], PRE, train=False, cache=ImageCache())
    same_decode = images.ImageDataset([path], images.eval_transform(PRE), side)
    full_decode = images.ImageDataset([path], images.eval_transform(PRE))
    assert torch.equal(cached[0], same_decode[0])
    assert (cached[0] - full_decode[0]).abs().mean() < 0.05  # normalised units: under 3 of 255 per pixel

def test_each_image_is_decoded_once_per_run(photos, count_decodes):
    cache = ImageCache()
    for _ in range(2):  # two epochs of evaluation, then two of training: each builds its dataset anew
        ds = CachedImageDataset(photos, PRE, train=False, cache=cache)
        [ds[i] for i in range(len(ds))]
    assert len(count_decodes) == len(photos)
    for _ in range(2):
        ds = CachedImageDataset(photos, PRE, train=True, cache=cache)
        [ds[i] for i in range(len(ds))]
    assert len(count_decodes) == 2 * len(photos)  # the training entry is a second, different resize
    assert cache.decoded == 2 * len(photos)


def test_backbone_datasets_share_its_cache(photos, count_decodes):
    from headstart.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0")
    backbone.preprocess = PRE
    first = backbone.dataset(photos, train=False)
    second = copy.deepcopy(backbone).dataset(photos, train=False)
    assert len(count_decodes) == len(photos)
    assert torch.equal(first[0], second[0])


def test_training_items_are_augmented_crops_of_the_right_size(photos):
    ds = CachedImageDataset(photos, PRE, train=True, cache=ImageCache())
    big = ds.cached[4]  # 90x33: shorter side 33 > 1.15 * 24 = 28, so it was resized once
    assert big.dtype == torch.uint8 and min(big.shape[1:]) == round(image_cache.TRAIN_SCALE * PRE.input_size)
    assert tuple(ds.cached[3].shape) == (3, 25, 25)  # smaller than that: kept as it is, never enlarged
    torch.manual_seed(0)
    a, b = ds[4], ds[4]
    assert a.shape == b.shape == (3, 24, 24) and a.dtype == torch.float32
    assert not torch.equal(a, b), "random crops differ between epochs"
    assert ds.augment.transforms[0].scale == (STANDARD_AUGMENTATION.min_scale, 1.0)
    assert isinstance(ds.augment.transforms[1], v2.RandomHorizontalFlip)


def test_augmentation_follows_the_chosen_crop_scale_and_flip(photos):
    """Both training paths (cached uint8 tensors and the PIL fallback) build the augmentation they are given."""
    aug = Augmentation(flip=False, min_scale=1.0)
    ds = CachedImageDataset(photos, PRE, train=True, cache=ImageCache(), aug=aug)
    assert ds.augment.transforms[0].scale == (1.0, 1.0) and len(ds.augment.transforms) == 1
    pil = images.train_transform(PRE, aug)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in pil.transforms)
    assert pil.transforms[0].scale == (1.0, 1.0)


def test_budget_bounds_the_cache_and_the_rest_decodes_per_item(photos, count_decodes):
    one = 3 * PRE.input_size ** 2
    cache = ImageCache(budget=2 * one)
    ds = CachedImageDataset(photos, PRE, train=False, cache=cache)
    assert sum(t is not None for t in ds.cached) == 2 and cache.bytes == 2 * one
    uncached = images.ImageDataset(photos, images.eval_transform(PRE), images.eval_side(PRE))
    assert all(torch.equal(ds[i], uncached[i]) for i in range(len(photos)))
    off = CachedImageDataset(photos, PRE, train=False, cache=ImageCache(budget=0))
    assert off.cached == [None] * len(photos)


def test_budget_from_environment(monkeypatch):
    monkeypatch.setenv(image_cache.BUDGET_ENV, "0.5")
    assert ImageCache().budget == 512 * 1024 ** 2
    monkeypatch.setenv(image_cache.BUDGET_ENV, "0")
    assert ImageCache().budget == 0


def test_unreadable_image_still_fails_where_it_did(tmp_path, photos):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    ds = CachedImageDataset([*photos, str(bad)], PRE, train=False, cache=ImageCache())
    assert ds.cached[-1] is None
    with pytest.raises(OSError):
        ds[len(photos)]


def test_a_pickled_cache_starts_empty(photos):
    cache = ImageCache(budget=10 ** 6)
    CachedImageDataset(photos, PRE, train=False, cache=cache)
    again = pickle.loads(pickle.dumps(cache))
    assert again.budget == cache.budget and not again.entries and cache.entries


def test_workers_read_the_cache_without_decoding(photos):
    ds = CachedImageDataset(photos, PRE, train=False, cache=ImageCache())
    expected = torch.stack([ds[i] for i in range(len(ds))])
    ds.paths = [p + ".gone" for p in photos]  # a worker that had to decode would fail
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    assert torch.equal(torch.cat(list(loader)), expected)


def test_compile_flag_parses_and_leaves_the_cpu_eager():
    from headstart.backbones import create_backbone
    from headstart.cli import build_parser
    from headstart.config import FitConfig

    args = build_parser().parse_args(["fit", "data", "--compile"])
    assert args.compile is True and FitConfig(data="data").compile is False
    backbone = create_backbone("efficientnet_lite0").train()
    backbone.compile_training = True
    backbone(torch.randn(2, 3, 32, 32))
    assert backbone._compiled is None  # torch.compile applies to CUDA fine-tuning steps only


def test_a_fit_releases_its_decoded_images(tiny_images, tmp_path):
    import headstart as hs

    run = hs.fit(str(tiny_images), strategy="two-stage", out=str(tmp_path / "run"), image_size=64, epochs=1, batch_size=8,
                 progress=False)
    cache = run.model.backbone.image_cache
    assert cache.decoded > 0, "the fit used the cache"
    assert not cache.entries and cache.bytes == 0

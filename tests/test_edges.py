"""Greyscale and Canny inputs (``jaxinpaint/data/edges.py``): equal to scikit-image on the same inputs, at
σ = 1, 2, 3, with and without a mask; the batch keys and polarity a structure-guided system receives."""

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2gray
from skimage.feature import canny as sk_canny

from jaxinpaint.data import edges, photos


def _photo(size=(96, 72)):
    path = photos.builtin_photo_paths("holdout")[0]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR))


def _hole(shape, seed=0):
    rng = np.random.default_rng(seed)
    hole = np.zeros(shape, bool)
    y, x = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
    hole[y:y + shape[0] // 3, x:x + shape[1] // 3] = True
    hole[:, shape[1] // 2:shape[1] // 2 + 3] = True  # a thin stroke through the image
    return hole


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_canny_equals_scikit_image_with_and_without_mask(sigma):
    image = _photo()
    grey = edges.grey(image)
    np.testing.assert_array_equal(grey, rgb2gray(image))
    known = ~_hole(grey.shape)
    for mask in (None, known):
        ours = edges.canny(grey, sigma, mask)
        theirs = sk_canny(grey, sigma=sigma, mask=mask)
        assert ours.dtype == np.float32 and set(np.unique(ours)) <= {0.0, 1.0}
        np.testing.assert_array_equal(ours, theirs.astype(np.float32))
        assert ours.sum() > 20  # a real photo has edges at every σ here
    # The masked map has no edge in the hole, and it differs from the unmasked one.
    masked = edges.canny(grey, sigma, known)
    assert masked[~known].sum() == 0 and not np.array_equal(masked, edges.canny(grey, sigma))


def test_float_images_of_8bit_values_give_the_uint8_maps():
    image = _photo((64, 48))
    as_float = image.astype(np.float32) / 255.0
    np.testing.assert_allclose(edges.grey(as_float), rgb2gray(image), atol=1e-8)
    np.testing.assert_array_equal(edges.canny(edges.grey(as_float), 2.0), sk_canny(rgb2gray(image), sigma=2.0))


def test_structure_inputs_keys_shapes_and_polarity():
    image = _photo((64, 48)).astype(np.float32) / 255.0
    hole = _hole(image.shape[:2], seed=1)
    train = edges.structure_inputs(image, None, sigma=2.0)
    test = edges.structure_inputs(image, hole[..., None].astype(np.float32), sigma=2.0)
    for out in (train, test):
        assert set(out) == {"grey", "edge"}
        assert out["grey"].shape == out["edge"].shape == (48, 64, 1)
        assert out["grey"].dtype == out["edge"].dtype == np.float32
    np.testing.assert_array_equal(train["grey"], test["grey"])  # the grey map is of the whole image
    # Training: Canny of the whole image (edges inside the hole too); test: of the known region (1 - hole).
    np.testing.assert_array_equal(train["edge"][..., 0], sk_canny(rgb2gray(image.astype(np.float64)), sigma=2.0))
    np.testing.assert_array_equal(test["edge"][..., 0],
                                  sk_canny(rgb2gray(image.astype(np.float64)), sigma=2.0, mask=~hole))
    assert train["edge"][hole].sum() > 0 and test["edge"][hole].sum() == 0
    # σ <= 0 (EdgeConnect's SIGMA=-1): no edges.
    assert edges.structure_inputs(image, None, sigma=-1)["edge"].sum() == 0

"""The digits split, read without importing scikit-learn, is scikit-learn's own split of its digits."""

import numpy as np
import pytest

from compiler.frontend import data


@pytest.mark.parametrize("split", ["train", "test"])
def test_digits_split_is_scikit_learns(split):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ref = load_digits()
    images = np.round(ref.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, ref.target.astype(np.int64), test_size=data.DIGITS_TEST_FRACTION, random_state=data.SPLIT_SEED,
        stratify=ref.target)
    got = data.digits(split)
    want_x, want_y = (x_train, y_train) if split == "train" else (x_test, y_test)
    assert got.x.dtype == np.uint8 and got.x.shape == want_x.shape
    assert np.array_equal(got.x, want_x)
    assert np.array_equal(got.y, want_y)


def test_digits_table_is_load_digits():
    from sklearn.datasets import load_digits

    images, target = data._digits_table()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(target, ref.target)
    assert len(data.digits("train").y) == 1347 and len(data.digits("test").y) == 450

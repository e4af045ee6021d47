import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.errors import UNetError
from napari_unet.labels.measure import measure_objects, write_csv


def two_squares():
    labels = np.zeros((20, 30), np.uint16)
    labels[2:6, 3:7] = 1  # 16 px, centre (3.5, 4.5)
    labels[10:18, 20:30] = 4  # 80 px
    image = np.zeros((20, 30), np.float32)
    image[labels == 1] = 2.0
    image[labels == 4] = 5.0
    image[12, 25] = 9.0
    return labels, image


def test_one_row_per_object_with_area_centroid_and_intensity():
    labels, image = two_squares()
    table = measure_objects(labels, image)
    assert list(table["label"]) == [1, 4]
    assert list(table["area"]) == [16, 80]
    assert table["centroid-0"][0] == pytest.approx(3.5)
    assert table["centroid-1"][0] == pytest.approx(4.5)
    assert table["intensity_mean"][0] == pytest.approx(2.0)
    assert table["intensity_max"][1] == pytest.approx(9.0)


def test_spacing_gives_physical_units():
    labels, _ = two_squares()
    table = measure_objects(labels, spacing=(0.5, 0.5))
    assert list(table["area"]) == [4.0, 20.0]
    assert "intensity_mean" not in table


def test_3d_labels_are_measured_without_eccentricity():
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[1:3, 2:5, 2:5] = 1
    table = measure_objects(labels)
    assert list(table["area"]) == [18] and "eccentricity" not in table


@pytest.mark.parametrize(
    "labels, image, message",
    [
        (np.zeros(5, np.uint8), None, "2-D or 3-D"),
        (np.zeros((5, 5), np.float32), None, "integer ids"),
        (-np.ones((5, 5), np.int32), None, "negative"),
        (np.zeros((5, 5), np.uint8), np.zeros((5, 6)), "one shape"),
        (np.zeros((5, 5), np.uint8), np.zeros((5, 5, 3)), "one shape"),
    ],
)
def test_bad_inputs_are_clear_errors(labels, image, message):
    with pytest.raises(UNetError, match=message):
        measure_objects(labels, image)


def test_csv_round_trip(tmp_path):
    labels, image = two_squares()
    path = write_csv(measure_objects(labels, image), tmp_path / "cells.csv")
    rows = list(csv.DictReader(open(path)))
    assert [r["label"] for r in rows] == ["1", "4"]
    assert float(rows[1]["area"]) == 80
    assert not list(tmp_path.glob("*.part"))


def test_csv_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / "cells.csv").symlink_to(victim)
    labels, _ = two_squares()
    write_csv(measure_objects(labels), tmp_path / "cells.csv")
    assert victim.read_text() == "mine"
    assert not (tmp_path / "cells.csv").is_symlink()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16 - 1), st.integers(1, 12))
def test_areas_add_up_to_the_labelled_pixels(seed, n):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n + 1, size=(16, 16)).astype(np.uint16)
    table = measure_objects(labels)
    assert int(np.sum(table["area"])) == int(np.count_nonzero(labels))
    assert sorted(table["label"]) == sorted(set(np.unique(labels)) - {0})

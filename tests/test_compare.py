"""Specification of crossmodal_edu.compare: one printed line that says what is wrong."""

import numpy as np
import pytest
import torch

from crossmodal_edu.compare import compare as print_comparison
from crossmodal_edu.compare import verdict


def compare(*args, **kwargs):
    """Print the line as a learner sees it, and return the verdict for the assertions."""
    assert print_comparison(*args, **kwargs) is None, "compare returns nothing, so cells show only its line"
    return verdict(*args, **kwargs)[0]


@pytest.fixture
def reference():
    return np.random.default_rng(0).standard_normal((2, 5, 7))


def printed(capsys):
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"expected exactly one line, got {out!r}"
    return out.rstrip("\n")


def test_match_prints_the_documented_line_and_returns_true(reference, capsys):
    assert compare("softmax", reference.copy(), reference) is True
    assert printed(capsys) == "softmax: shape (2, 5, 7) ok | max |ours - reference| < 1e-12: True"


def test_passing_line_does_not_depend_on_the_tiny_difference(reference, capsys):
    compare("softmax", reference + 3e-14, reference)
    first = printed(capsys)
    compare("softmax", reference - 7e-15, reference)
    assert printed(capsys) == first


def test_atol_zero_asks_for_an_exact_match(reference, capsys):
    assert compare("softmax", reference.copy(), reference, atol=0) is True
    assert printed(capsys) == "softmax: shape (2, 5, 7) ok | exact match: True"
    assert compare("one", np.array([1.0]), np.array([np.nextafter(1.0, 2.0)]), atol=0) is False


def test_atol_is_respected_and_shown(reference, capsys):
    assert compare("out", reference + 1e-8, reference, atol=1e-6) is True
    assert printed(capsys) == "out: shape (2, 5, 7) ok | max |ours - reference| < 1e-06: True"
    assert compare("out", reference + 1e-8, reference) is False


def test_mismatch_names_the_largest_difference_and_where_it_is(reference, capsys):
    ours = reference.copy()
    ours[1, 2, 0] += 0.31
    ours[0, 0, 0] += 0.01
    assert compare("softmax", ours, reference) is False
    line = printed(capsys)
    assert "largest difference 0.31 at index (1, 2, 0)" in line
    assert "2 of 70 entries" in line


def test_shape_mismatch_names_both_shapes(reference, capsys):
    assert compare("weights", reference[0], reference) is False
    line = printed(capsys)
    assert "shape mismatch" in line
    assert "(5, 7)" in line and "(2, 5, 7)" in line


def test_shapes_that_would_broadcast_still_mismatch(capsys):
    assert compare("sums", np.ones((4, 1)), np.ones(4)) is False
    assert "(4, 1)" in printed(capsys)


def test_transposed_result_gets_a_hint(reference, capsys):
    assert compare("weights", reference.transpose(0, 2, 1), reference) is False
    assert "transpose" in printed(capsys)


def test_nan_in_ours_is_reported_with_its_index(reference, capsys):
    ours = reference.copy()
    ours[1, 3, 4] = np.nan
    assert compare("softmax", ours, reference) is False
    line = printed(capsys)
    assert "NaN" in line and "(1, 3, 4)" in line


def test_nan_in_the_same_places_counts_as_equal(capsys):
    a = np.array([1.0, np.nan, np.inf])
    assert compare("masked", a, a.copy()) is True


def test_accepts_torch_tensors_that_require_grad(reference, capsys):
    ours = torch.tensor(reference, requires_grad=True) * 1.0
    assert compare("torch", ours, torch.from_numpy(reference)) is True
    assert printed(capsys) == "torch: shape (2, 5, 7) ok | max |ours - reference| < 1e-12: True"


def test_accepts_scalars(capsys):
    assert compare("loss", 0.5, np.float64(0.5)) is True
    assert printed(capsys) == "loss: shape () ok | max |ours - reference| < 1e-12: True"
    assert compare("loss", torch.tensor(0.75), 0.5) is False


def test_missing_return_is_reported_not_raised(capsys):
    assert compare("softmax", None, np.ones(3)) is False
    assert "return" in printed(capsys)


def test_negative_atol_is_rejected():
    with pytest.raises(ValueError, match="atol"):
        compare("x", 1.0, 1.0, atol=-1.0)


def test_boolean_masks_are_compared_exactly(capsys):
    mask = np.tril(np.ones((3, 4), dtype=bool))
    assert compare("mask", mask, mask.copy()) is True
    assert printed(capsys) == "mask: shape (3, 4) ok | exact match: True"
    assert compare("mask", ~mask, mask) is False

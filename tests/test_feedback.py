"""The feedback itself: one catalogue of attention slips shared by every task that computes attention,
messages that say what kind of difference an unnamed mistake shows, hints right for the learner's
types, a pointer to the learner's own failing helper, and predictions told which way they are off."""
import math

import numpy as np
import pytest
import torch

from crossmodal_edu import numpy_attention as reference
from crossmodal_edu.grading import get_task, judge
from crossmodal_edu.grading.difference import describe_difference, describe_factor, describe_shape
from crossmodal_edu.grading.result import FAILED
from crossmodal_edu.grading.tasks import all_tasks
from crossmodal_edu.grading.tasks.attention_slips import COVERAGE, SLIPS, numpy_attention, torch_attention

ATTENTION_TASKS = ["01.attention", "01.masked_attention", "02.cross_attention", "02.padded_cross_attention",
                   "03.forward", "03.mha_mask"]


# --- the shared catalogue ----------------------------------------------------------------------

def test_every_task_that_computes_attention_uses_the_shared_slips():
    all_tasks()  # imports every lesson module, which registers its slips
    assert set(ATTENTION_TASKS) <= set(COVERAGE)


@pytest.mark.parametrize("task_id", ATTENTION_TASKS)
def test_no_applicable_slip_is_left_out_without_a_reason(task_id):
    all_tasks()
    coverage = COVERAGE[task_id]
    for slip in SLIPS:
        if slip.needs <= coverage["has"]:
            assert slip.key in coverage["planted"] or coverage["not_here"].get(slip.key), (task_id, slip.key)


def test_a_slip_has_one_name_in_every_task_where_it_occurs():
    """The issue's example: scaling by √d_v is named in 01 and must be named the same in 02."""
    names = {}
    for task_id in ("01.attention", "01.masked_attention", "02.cross_attention", "02.padded_cross_attention"):
        names[task_id] = {m.name for m in get_task(task_id).mistakes}
    shared = "scaled by √d_v (the values' width) instead of √d_k"
    assert all(shared in n for n in names.values())
    after = "mask applied after the softmax"
    for task_id in ("01.masked_attention", "02.padded_cross_attention", "03.forward"):
        assert after in {m.name for m in get_task(task_id).mistakes}, task_id


def _float64_attention(q, k, v, mask=None):
    """Attention by loops, in float64: the independent reference for the cores."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    Lq, Lk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    out = np.zeros((*lead, Lq, v.shape[-1]))
    weights = np.zeros((*lead, Lq, Lk))
    keep = np.ones((*lead, Lq, Lk), bool) if mask is None else np.broadcast_to(mask, (*lead, Lq, Lk))
    for idx in np.ndindex(*lead):
        for i in range(Lq):
            scores = [q[idx][i] @ k[idx][j] / math.sqrt(q.shape[-1]) for j in range(Lk)]
            seen = [j for j in range(Lk) if keep[idx][i, j]]
            if not seen:
                continue
            top = max(scores[j] for j in seen)
            total = sum(math.exp(scores[j] - top) for j in seen)
            for j in seen:
                weights[idx][i, j] = math.exp(scores[j] - top) / total
            out[idx][i] = weights[idx][i] @ v[idx]
    return out, weights


def test_the_cores_without_a_slip_are_attention():
    rng = np.random.default_rng(7)
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 6))
    mask = rng.random((2, 3, 5)) < 0.6
    mask[0, 1] = False  # a query that may see nothing
    expected = _float64_attention(q, k, v, mask)
    for got in (numpy_attention(q, k, v, mask),
                [t.numpy() for t in torch_attention(*(torch.tensor(a) for a in (q, k, v)), torch.tensor(mask))]):
        np.testing.assert_allclose(got[0], expected[0], atol=1e-12)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-12)


# --- what kind of difference -------------------------------------------------------------------

def test_a_constant_factor_is_named_with_its_simple_form():
    b = np.random.default_rng(0).normal(size=(3, 4))
    assert "1/√8" in describe_difference(b / math.sqrt(8), b)
    assert "sign flipped" in describe_difference(-b, b)
    assert describe_factor(3.0) == "3 (= 3)"
    assert describe_factor(0.123) == "0.123"


def test_a_shift_a_transpose_and_a_position_shift_are_named():
    rng = np.random.default_rng(1)
    b = rng.normal(size=(2, 4, 4))
    assert "plus 0.5" in describe_difference(b + 0.5, b)
    assert "last two axes swapped" in describe_difference(np.swapaxes(b, -1, -2), b)
    c = rng.normal(size=(2, 6))
    rolled = np.concatenate([np.full((2, 1), 9.0), c[:, :-1]], axis=1)
    assert "shifted by one position along axis 1" in describe_difference(rolled, c)


def test_a_per_row_factor_and_differing_rows_are_located():
    rng = np.random.default_rng(2)
    b = rng.random((3, 5)) + 0.1
    per_row = b * np.array([[1.0], [2.0], [0.5]])
    assert "each slice" in describe_difference(per_row, b)
    a = b.copy()
    a[:, 3] += 1.0
    a[:, 1] *= 3.0
    assert "only entries 1, 3 of the 5 along axis 1" in describe_difference(a, b)
    nan = b.copy()
    nan[0, 0] = np.nan
    assert "NaN in 1 of 15" in describe_difference(nan, b)


def test_a_wrong_shape_with_the_right_numbers_says_how():
    b = np.arange(24.0).reshape(2, 3, 4)
    assert "axes (0, 2, 1)" in describe_shape(np.transpose(b, (0, 2, 1)), b)
    assert "only the shape is wrong" in describe_shape(b.reshape(2, 4, 3), b)


def test_an_unnamed_mistake_gets_a_direction_not_only_an_index():
    def softmax_times_2(z, axis=-1):  # no catalogued mistake does this
        return 2 * reference.softmax(z, axis=axis)

    result = judge(get_task("01.softmax"), softmax_times_2, 0)
    assert result.status == FAILED and result.mistake is None
    assert "times 2" in result.text()


def test_which_output_is_right_is_said():
    def attention_out_doubled(q, k, v):
        out, w = reference.scaled_dot_product_attention(q, k, v)
        return out * 1.5, w

    text = judge(get_task("01.attention"), attention_out_doubled, 0).text()
    assert "`weights` is right; `out` is not" in text and "times 1.5" in text


# --- hints right for the learner ---------------------------------------------------------------

def test_the_in_place_hint_for_a_tensor_says_clone():
    def teacher_forcing_in_place(image_tokens, start_id):
        targets = image_tokens.clone()
        image_tokens[:, 1:] = targets[:, :-1].clone()
        image_tokens[:, 0] = start_id
        return image_tokens, targets

    text = judge(get_task("06.teacher_forcing"), teacher_forcing_in_place, 0).text()
    assert ".clone()" in text and "= image_tokens - …" not in text


def test_a_right_function_calling_a_wrong_helper_is_pointed_at_the_helper():
    namespace = {"np": np}
    exec(  # a notebook: a buggy softmax (task 01.softmax), a right attention that calls it
        "def softmax(z, axis=-1):\n"
        "    e = np.exp(z - z.min(axis=axis, keepdims=True))\n"
        "    return e / e.sum(axis=axis, keepdims=True) * 1.01\n"
        "def attention(q, k, v):\n"
        "    w = softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]))\n"
        "    return w @ v, w\n", namespace)
    result = judge(get_task("01.attention"), namespace["attention"], 0)
    assert result.status == FAILED
    assert "your `softmax` first" in result.text() and 'check("01.softmax", softmax)' in result.text()


# --- predictions -------------------------------------------------------------------------------

def test_a_wrong_prediction_is_told_which_way_it_is_off():
    task = get_task("01.score_std")  # the answer is 8
    assert "too large" in judge(task, 30.0).text()
    assert "too small" in judge(task, 2.0).text()
    assert "sign" in judge(task, -8.0).text()
    shape = get_task("02.weights_shape")  # (2, 4, 64, 9)
    assert "axis 2 is not" in judge(shape, (2, 4, 63, 9)).text()


def test_token_ids_returned_as_floats_fail_though_their_values_are_right():
    def teacher_forcing_floats(image_tokens, start_id):
        start = torch.full((image_tokens.shape[0], 1), float(start_id))
        return torch.cat([start, image_tokens[:, :-1].float()], dim=1), image_tokens.float()

    result = judge(get_task("06.teacher_forcing"), teacher_forcing_floats, 0)
    assert result.status == FAILED and "holds floats, but it should hold integers" in result.text()


def test_an_untouched_fix_the_bug_task_is_not_attempted_even_with_the_learners_broken_softmax():
    namespace = {"np": np}
    exec(  # a softmax without its max shift (task 1), and the masked attention as the exercise gives it
        "def softmax(z, axis=-1):\n"
        "    return np.exp(z) / np.exp(z).sum(axis=axis, keepdims=True)\n"
        "def masked_attention(q, k, v, mask):\n"
        "    weights = softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])) * mask\n"
        "    return weights @ v, weights\n", namespace)
    for seed in (0, 1, 2):
        assert judge(get_task("01.masked_attention"), namespace["masked_attention"], seed).status == "not attempted"


def test_a_right_answer_with_its_parameters_renamed_passes():
    def teacher_forcing(tokens, start):  # the def line renamed: the check passes start_id=... by keyword
        first = torch.full_like(tokens[:, :1], start)
        return torch.cat([first, tokens[:, :-1]], dim=1), tokens.clone()

    for seed in (0, 1, 2):
        assert judge(get_task("06.teacher_forcing"), teacher_forcing, seed).status == "passed"

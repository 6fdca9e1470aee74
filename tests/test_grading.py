"""The checks a learner runs: fresh inputs every call, reproducible by seed, never a crash, and a
result that says what is wrong in words (the catalogue of named mistakes is tested in
test_grading_mistakes.py)."""
from fractions import Fraction

import math

import numpy as np
import pytest

from crossmodal_edu import numpy_attention as reference
from crossmodal_edu.grading import all_tasks, build_scoreboard, check, get_task, judge, latest_result, session
from crossmodal_edu.grading.result import ERROR, FAILED, NOT_ATTEMPTED, NOT_CHECKED, PASSED
from crossmodal_edu.grading.spec import IN_PLACE, FunctionTask, PredictionTask

SOFTMAX = get_task("01.softmax")
ATTENTION = get_task("01.attention")
FUNCTION_TASKS = [t for t in all_tasks() if isinstance(t, FunctionTask)]


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch):
    monkeypatch.setattr(session, "_SESSION", {})


def softmax_with_a_bug_on_line_3(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis)[..., 0, None]


def test_the_reference_passes_every_function_task_on_many_seeds():
    for task in FUNCTION_TASKS:
        for seed in range(10):
            result = judge(task, task.reference, seed)
            assert result.status == PASSED, result.text()
            assert result.points == task.points


def test_a_stub_is_not_attempted_not_a_crash():
    def softmax(z, axis=-1):
        raise NotImplementedError("softmax() is not written yet")

    result = judge(SOFTMAX, softmax)
    assert result.status == NOT_ATTEMPTED and result.points == 0
    assert "softmax() is not written yet" in result.summary


def test_a_stub_deeper_down_is_not_attempted_and_names_the_unfinished_function():
    def softmax(z, axis=-1):
        raise NotImplementedError("softmax() is not written yet")

    def attention(q, k, v):
        weights = softmax(q @ k.swapaxes(-1, -2))
        return weights @ v, weights

    result = judge(ATTENTION, attention)
    assert result.status == NOT_ATTEMPTED and "softmax()" in result.summary


@pytest.mark.parametrize("answer", [None, ...])
def test_none_or_ellipsis_is_not_attempted(answer):
    for task in (SOFTMAX, get_task("01.score_std")):
        assert judge(task, answer).status == NOT_ATTEMPTED


def test_an_exception_is_reported_with_its_message_and_the_learners_line_not_a_traceback():
    result = judge(SOFTMAX, softmax_with_a_bug_on_line_3, seed=1)
    assert result.status == ERROR and result.points == 0
    text = result.text()
    assert "IndexError" in text or "ValueError" in text
    assert "line 3 of softmax_with_a_bug_on_line_3" in text
    assert "return e / e.sum(axis=axis)[..., 0, None]" in text
    assert "Traceback" not in text and 'File "' not in text


def _scores_of(q, k):  # a learner's helper, above the function that calls it: its line 3 raises
    scores = q @ k.swapaxes(-1, -2)
    return scores / np.sqrt(q.size[-1])  # TypeError: q.size is an int


def test_an_exception_in_a_learners_helper_names_the_helper_and_its_line():
    def attention(q, k, v):
        weights = reference.softmax(_scores_of(q, k))
        return weights @ v, weights

    result = judge(ATTENTION, attention, seed=0)
    text = result.text()
    assert result.status == ERROR, text
    assert "In your helper `_scores_of`, line 3: `return scores / np.sqrt(q.size[-1])" in text
    assert "(called from line 2 of attention)" in text
    assert "line -" not in text and "line 0" not in text


def test_forgetting_to_return_says_so():
    def softmax(z, axis=-1):
        np.exp(z)

    result = judge(SOFTMAX, softmax, seed=2)
    assert result.status == FAILED and "forget to `return`" in result.summary


def test_a_wrong_shape_says_which_shape_came_and_which_was_expected():
    def attention(q, k, v):
        weights = reference.softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]))
        return (weights @ v)[..., :1], weights

    result = judge(ATTENTION, attention, seed=3)
    assert result.status == FAILED and "`out` has the wrong shape" in result.summary
    assert "but it should have shape" in result.text()


def test_an_unknown_mistake_gets_the_first_failing_property_and_the_largest_deviation():
    def softmax(z, axis=-1):
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / (e.sum(axis=axis, keepdims=True) + 0.1)

    result = judge(SOFTMAX, softmax, seed=4)
    assert result.status == FAILED and result.mistake is None
    assert result.summary == "not yet: the weights must sum to 1 along `axis`"
    assert "Largest deviation from the reference" in result.text()
    assert "Seen on: z (" in result.text()


def test_a_non_function_answer_says_what_it_is():
    result = judge(SOFTMAX, np.ones(3))
    assert result.status == FAILED and "should be a function" in result.summary


def test_the_same_seed_reproduces_a_check_and_the_seed_is_shown():
    def softmax(z, axis=-1):
        return np.exp(z) / np.exp(z).sum(axis=axis, keepdims=True) + 1e-3

    first, again = judge(SOFTMAX, softmax, seed=123), judge(SOFTMAX, softmax, seed=123)
    assert first.text() == again.text()
    assert "seed 123" in first.text()
    assert 'Reproduce: check("01.softmax", softmax, seed=123)' in first.text()


def test_every_check_draws_fresh_inputs():
    seen = []

    def softmax(z, axis=-1):
        seen.append(z.copy())
        return reference.softmax(z, axis)

    judge(SOFTMAX, softmax)
    judge(SOFTMAX, softmax)
    half = len(seen) // 2
    assert not any(np.array_equal(a, b) for a, b in zip(seen[:half], seen[half:]))


def test_check_shows_the_result_once_records_it_and_never_raises(capsys):
    def softmax(z, axis=-1):
        raise RuntimeError("boom")

    assert check("01.softmax", softmax) is None
    out = capsys.readouterr().out
    assert out.count("01.softmax · Stable softmax") == 1 and "RuntimeError: boom" in out
    assert latest_result("01.softmax").status == ERROR


def test_check_names_the_known_tasks_when_the_id_is_wrong():
    with pytest.raises(ValueError, match="known tasks: 01.softmax, 01.score_std"):
        check("01.sofmax", reference.softmax)


def test_the_result_displays_as_html_with_a_plain_text_fallback():
    def softmax(z, axis=-1):
        raise ValueError("shapes <3> & <4>")

    result = judge(SOFTMAX, softmax, seed=5)
    html = result._repr_html_()
    assert "&lt;3&gt; &amp; &lt;4&gt;" in html and "<3>" not in html
    assert result.text().startswith("✗ 01.softmax · Stable softmax:")
    assert repr(result) == result.text()


def test_the_scoreboard_sums_the_latest_result_of_each_task(capsys):
    check("01.softmax", reference.softmax)
    check("01.attention", reference.scaled_dot_product_attention)
    check("01.score_std", 64)
    board = build_scoreboard("01")
    assert (board.points, board.max_points, board.passed) == (6, 10, 2)
    statuses = [(task_id, r.status if r else NOT_CHECKED) for task_id, _, _, r in board.rows]
    assert statuses == [("01.softmax", PASSED), ("01.score_std", FAILED), ("01.attention", PASSED),
                        ("01.masked_attention", NOT_CHECKED)]
    assert "Total: 6/10 points (2 of 4 tasks passed)" in board.text()
    assert "<table>" in board._repr_html_()


@pytest.mark.parametrize("task", [t for t in all_tasks() if isinstance(t, PredictionTask)], ids=lambda t: t.id)
def test_a_prediction_passes_when_right_and_fails_plainly_when_unexpected(task):
    assert judge(task, task.answer).status == PASSED
    strange = judge(task, "no idea")
    assert strange.status == FAILED and strange.mistake is None
    assert f"`{task.name}` should be {task.expects}, but it is a str: 'no idea'" in strange.summary


LOPSIDED = get_task("05.lopsided")


@pytest.mark.parametrize("number", [
    LOPSIDED.answer, 5, np.float64(LOPSIDED.answer), np.float32(LOPSIDED.answer), np.array(LOPSIDED.answer),
    np.array([LOPSIDED.answer]), pytest.param("torch 0-d", id="torch.tensor(4.94)"),
    pytest.param("torch 1-element", id="torch.tensor([4.94])"), Fraction(494, 100)], ids=repr)
def test_a_predicted_number_counts_whatever_kind_of_number_it_is(number):
    import torch

    if number == "torch 0-d":
        number = torch.tensor(LOPSIDED.answer, dtype=torch.float64)
    elif number == "torch 1-element":
        number = torch.tensor([LOPSIDED.answer], dtype=torch.float32)
    result = judge(LOPSIDED, number)
    assert result.status == PASSED, result.text()


@pytest.mark.parametrize("number", [64, 64.0, np.int64(64), np.array(64)], ids=repr)
def test_a_predicted_number_of_any_kind_is_matched_with_the_catalogued_mistakes(number):
    assert judge(LOPSIDED, number).mistake == "that counts the codes in use"


def test_a_wrong_number_is_not_told_that_a_number_was_expected():
    for number in (7, 7.0, np.int64(7), np.float64(7.0), np.array(7.0)):
        result = judge(LOPSIDED, number)
        assert result.status == FAILED and result.mistake is None, result.text()
        assert result.summary == "not quite: 7 is not what happens", result.text()
        assert "Expected" not in result.text() and "should be a number" not in result.text()


@pytest.mark.parametrize("answer, what", [
    ("no idea", "a str: 'no idea'"), ("4.94", "a str: '4.94' (write the number itself, without quotes)"),
    (True, "a bool: True"), ([4.94], "a list: [4.94]"), (np.ones(3), "an array of shape (3,), not one number"),
    (3 + 0j, "a complex: (3+0j)")], ids=repr)
def test_a_prediction_that_is_not_a_number_says_what_came(answer, what):
    result = judge(LOPSIDED, answer)
    assert result.status == FAILED and result.mistake is None and result.points == 0
    assert result.summary == f"not quite: `predicted_perplexity` should be a number, but it is {what}"


@pytest.mark.parametrize("shape", [(2, 4, 64, 9), [2, 4, 64, 9], np.array([2, 4, 64, 9])], ids=repr)
def test_a_predicted_shape_counts_as_a_tuple_a_list_or_an_array(shape):
    assert judge(get_task("02.weights_shape"), shape).status == PASSED


def test_every_lesson_has_three_to_seven_tasks_with_ids_of_that_lesson():
    from crossmodal_edu.grading import lessons, tasks_for_lesson

    for lesson in lessons():
        tasks = tasks_for_lesson(lesson)
        assert 3 <= len(tasks) <= (7 if lesson == "06" else 6)  # 06, the destination, has one more
        assert all(t.id.startswith(f"{lesson}.") for t in tasks)
        assert len({t.name for t in tasks}) == len(tasks)


def test_every_catalogued_mistake_has_a_name_and_a_hint():
    for task in all_tasks():
        for mistake in task.mistakes:
            assert mistake.name and (mistake.hint or mistake.in_place), (task.id, mistake.name)
            assert sum(x is not None for x in (mistake.impl, mistake.value, mistake.raises)) == 1, (task.id, mistake.name)


# --- PyTorch answers (lesson 03) and online-softmax states (lesson 04) ---------------------------

def test_a_tensor_input_changed_in_place_is_named_like_an_array():
    reference = get_task("03.forward").reference

    def cross_attention_forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
        x.mul_(2.0)  # the learner scales their input in place, then undoes it in the copy they use
        return reference(x / 2.0, context, to_q, to_k, to_v, to_out, num_heads, context_mask)

    result = judge(get_task("03.forward"), cross_attention_forward, seed=0)
    assert result.status == FAILED and result.mistake == IN_PLACE, result.text()
    assert "changed its input `x` in place" in result.text()


def test_a_torch_check_leaves_the_thread_count_and_the_random_state_as_it_found_them():
    import torch

    def attend_without_mask(x, context, layer, context_mask):  # wrong, so the catalogue runs too
        return layer(x, context, None, need_weights=True)

    threads = torch.get_num_threads()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    result = judge(get_task("03.mha_mask"), attend_without_mask, seed=1)
    assert result.mistake == "mask not applied", result.text()
    assert judge(get_task("03.forward"), get_task("03.forward").reference, seed=1).status == PASSED
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state), "a check must not draw from the learner's torch RNG"


def test_the_torch_references_agree_with_torch_multihead_attention():
    import torch

    task = get_task("03.mha_mask")
    for seed in range(3):
        for case in task.cases(np.random.default_rng(seed)):
            x, context, layer, context_mask = case.fresh()[0]
            mha = torch.nn.MultiheadAttention(layer.query_dim, layer.num_heads, kdim=layer.context_dim,
                                              vdim=layer.context_dim, batch_first=True, dtype=torch.float64)
            with torch.no_grad():
                mha.in_proj_bias.copy_(torch.cat([layer.to_q.bias, layer.to_k.bias, layer.to_v.bias]))
                for ours, theirs in [(layer.to_q, mha.q_proj_weight), (layer.to_k, mha.k_proj_weight),
                                     (layer.to_v, mha.v_proj_weight), (layer.to_out, mha.out_proj.weight)]:
                    theirs.copy_(ours.weight)
                mha.out_proj.bias.copy_(layer.to_out.bias)
                expected = mha(x, context, context, key_padding_mask=~context_mask, average_attn_weights=False)
                out, weights = task.reference(x, context, layer, context_mask)
            np.testing.assert_allclose(out.numpy(), expected[0].numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(weights.numpy(), expected[1].numpy(), rtol=1e-10, atol=1e-12)


def test_the_gated_block_reference_is_x_plus_tanh_gate_times_attention_of_the_normed_x():
    import torch

    task = get_task("03.gated_block")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for seed in range(3):
        for case in task.cases(np.random.default_rng(seed)):
            x, context, context_mask, num_heads, weights = case.fresh()[0]
            y, starts_closed, gate_trains = task.run(task.reference)(x, context, context_mask, num_heads, weights)
            norm, att = weights["norm"], weights["attention"]
            mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
            h = (x - mean) / torch.sqrt(var + 1e-5) * norm["weight"] + norm["bias"]
            query_dim = x.shape[-1]
            with torch.random.fork_rng(devices=[]):  # this test's own layer must not move the RNG either
                mha = torch.nn.MultiheadAttention(query_dim, num_heads, kdim=context.shape[-1],
                                                  vdim=context.shape[-1], batch_first=True, dtype=torch.float64)
            with torch.no_grad():
                projections = [att["to_q.weight"], att["to_k.weight"], att["to_v.weight"]]
                if mha.in_proj_weight is not None:  # query_dim = context_dim: PyTorch packs the three
                    mha.in_proj_weight.copy_(torch.cat(projections))
                else:
                    for theirs, ours in zip((mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight), projections):
                        theirs.copy_(ours)
                mha.in_proj_bias.copy_(torch.cat([att["to_q.bias"], att["to_k.bias"], att["to_v.bias"]]))
                mha.out_proj.weight.copy_(att["to_out.weight"])
                mha.out_proj.bias.copy_(att["to_out.bias"])
                padding = None if context_mask is None else ~context_mask
                update = mha(h, context, context, key_padding_mask=padding)[0]
            expected = x + math.tanh(float(weights["gate"])) * update
            np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
            assert float(starts_closed) == 1.0 and float(gate_trains) == 1.0
    assert torch.equal(torch.get_rng_state(), state), "a check must not draw from the learner's torch RNG"


def _attention_over(scores, v):
    """A float64 loop, independent of the package: softmax over the unmasked keys of each row, times v;
    a row with every key masked gives 0."""
    out = np.zeros((*scores.shape[:-1], v.shape[-1]))
    for index in np.ndindex(scores.shape[:-1]):
        row = scores[index]
        seen = np.isfinite(row)
        if seen.any():
            e = np.exp(row[seen] - row[seen].max())
            out[index] = (e / e.sum()) @ v[index[:-1]][seen]
    return out


def test_the_states_of_lesson_04_give_attention_over_every_key_seen():
    from crossmodal_edu.blocked_attention import online_softmax_update
    from crossmodal_edu.grading.tasks.lesson04 import empty_state, merge_states_reference

    rng = np.random.default_rng(0)
    for _ in range(5):
        Lq, Lk1, Lk2, d_v = 6, int(rng.integers(1, 6)), int(rng.integers(1, 6)), 3
        scores = rng.normal(size=(2, Lq, Lk1 + Lk2)) * 3
        scores[rng.random(scores.shape) < 0.3] = -np.inf
        scores[0, 0] = -np.inf  # a query that sees nothing
        scores[1, 1, :Lk1] = -np.inf  # one that sees only the second half
        v = rng.normal(size=(2, Lk1 + Lk2, d_v))
        half1 = online_softmax_update(*empty_state((2,), Lq, d_v), scores[..., :Lk1], v[:, :Lk1])
        half2 = online_softmax_update(*empty_state((2,), Lq, d_v), scores[..., Lk1:], v[:, Lk1:])
        m, l, o = merge_states_reference(*half1, *half2)
        assert np.all(np.isfinite(l)) and np.all(np.isfinite(o))
        np.testing.assert_allclose(o / np.where(l == 0, 1.0, l), _attention_over(scores, v), atol=1e-12)
        np.testing.assert_array_equal(m[..., 0], scores.max(axis=-1))


def test_the_blocked_attention_check_never_passes_a_running_output_that_is_not_rescaled():
    """The planted bug only shows when a query's maximum grows after its first block: the check's keys
    put the largest scores in the last blocks, so it shows on every seed, by a wide margin."""
    task = get_task("04.blocked_attention")
    stale = next(m.impl for m in task.mistakes if m.name == task.planted)
    for seed in range(50):
        cases = task.cases(np.random.default_rng(seed))
        worst = max(np.abs(stale(*c.fresh()[0], **c.options) - task.reference(*c.fresh()[0], **c.options)).max()
                    for c in cases)
        assert worst > 0.05, (seed, worst)
        assert judge(task, stale, seed).status == NOT_ATTEMPTED


# --- the image tokenizer (lesson 05) and sampling (lesson 06) -----------------------------------

def test_the_straight_through_check_grades_the_gradients_not_only_the_value():
    def straight_through(z, z_q):  # the right value, but the encoder gets half the gradient
        return 0.5 * z + (z_q - 0.5 * z).detach()

    result = judge(get_task("05.straight_through"), straight_through, seed=0)
    assert result.status == FAILED and result.mistake is None, result.text()
    assert result.summary == "not yet: z must receive the decoder's gradient unchanged"
    assert "deviation from the reference" in result.text() and "in `z.grad`" in result.text()


def test_returning_z_q_alone_is_named_and_not_taken_for_the_unfixed_bug():
    def straight_through(z, z_q):  # the right value, but z takes no part: the encoder gets nothing
        return z_q

    task = get_task("05.straight_through")
    for seed in range(3):
        result = judge(task, straight_through, seed=seed)
        assert result.status == FAILED and result.mistake.startswith("returns z_q alone"), result.text()
        assert "no gradient" in result.summary and "argmin" in result.text()
    hints = [m.hint for m in task.mistakes if m.hint]
    assert all("z + (z_q - z).detach()" in hint for hint in hints)  # it gives the fix no more than the others


def test_the_straight_through_flag_for_a_left_out_z_is_never_reported_as_a_deviation():
    def straight_through(z, z_q):  # an unknown mistake: a fresh leaf with z_q's value, z left out
        return z_q.detach().clone().requires_grad_()

    result = judge(get_task("05.straight_through"), straight_through, seed=0)
    assert result.summary == "not yet: z must receive the decoder's gradient unchanged", result.text()
    assert "deviation from the reference" in result.text() and "in `z.grad`" in result.text()
    assert "z left out" not in result.text()


def test_a_top_k_whose_dropped_logits_are_not_minus_inf_fails_the_k_kept_property():
    import torch

    def top_k_filter(logits, k):  # NaN is not finite either, so the count of kept logits alone passes
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("nan"))

    result = judge(get_task("06.top_k"), top_k_filter, seed=0)
    assert result.status == FAILED and result.mistake is None, result.text()
    assert result.summary == "not yet: exactly k logits of each row must be kept (the rest -inf)"
    assert "is nan, not -inf" in result.text()


def test_the_nearest_code_check_catches_each_mis_expanded_distance_on_every_seed():
    """The check's codebooks put c, 3c and 0.6c beside a vector equal to c: nearest by distance, the largest
    dot product, the expansion without its 2 or with +2 z·e all pick different codes, on every seed."""
    task = get_task("05.nearest_code")
    for seed in range(50):
        for mistake in task.mistakes:
            assert judge(task, mistake.impl, seed).mistake == mistake.name, (seed, mistake.name)


def test_sample_from_logits_draws_from_the_distribution_exercise_06_grades():
    import torch

    from crossmodal_edu.dalle.guidance import sample_from_logits
    from crossmodal_edu.grading.tasks.lesson06 import sampling_probs_reference

    generator = torch.Generator().manual_seed(0)
    task = get_task("06.sampling_probs")
    for seed in range(3):
        for case in task.cases(np.random.default_rng(seed)):
            (logits,), options = case.fresh()
            B, V = logits.shape
            probs = sampling_probs_reference(logits, **options).numpy()
            n = 20_000
            temperature, top_k = options.get("temperature", 1.0), options.get("top_k")  # a case may use the defaults
            draws = sample_from_logits(logits.repeat(n, 1), temperature, top_k, generator)
            frequencies = np.stack([np.bincount(draws.view(n, B)[:, b].numpy(), minlength=V) / n for b in range(B)])
            np.testing.assert_allclose(frequencies, probs, atol=0.02)  # 5.6 standard deviations at worst
            assert np.all(frequencies[probs == 0] == 0), "a token of probability 0 was drawn"


def test_the_checks_of_lessons_05_to_07_leave_the_torch_random_state_and_threads_alone():
    import torch

    from crossmodal_edu.grading import tasks_for_lesson

    threads = torch.get_num_threads()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for task in [*tasks_for_lesson("05"), *tasks_for_lesson("06"), *tasks_for_lesson("07")]:
        if isinstance(task, FunctionTask):
            assert judge(task, task.reference, seed=1).passed
            judge(task, task.mistakes[0].impl, seed=1)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state), "a check must not draw from the learner's torch RNG"


# --- latent diffusion (lesson 07) ---------------------------------------------------------------

def test_the_euler_reference_lands_on_one_data_point_and_follows_a_linear_fields_closed_form():
    """x' = x - Δt·a·x, steps times: x·(1 - a/steps)^steps; and a single data point is reached exactly."""
    import torch

    from crossmodal_edu.diffusion.toy_fields import LinearVelocity, TowardsPoint
    from crossmodal_edu.grading.tasks.lesson07 import euler_sample_reference

    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.uniform(-1, 1, size=(2, 3, 3)))
    x = torch.from_numpy(rng.normal(size=(4, 2, 3, 3)))
    zero = torch.zeros(2, 3, 3, dtype=torch.float64)
    for steps in (1, 2, 5, 8):
        got = euler_sample_reference(LinearVelocity(a, zero, zero), x, steps)
        np.testing.assert_allclose(got.numpy(), (x * (1 - a / steps) ** steps).numpy(), rtol=1e-6, atol=1e-7)
        point = torch.from_numpy(rng.normal(size=(2, 3, 3)))
        landed = euler_sample_reference(TowardsPoint(point), x, steps)
        np.testing.assert_allclose(landed.numpy(), point.expand_as(x).numpy(), rtol=0, atol=1e-12)


def test_the_adaln_mlp_reference_is_the_denoiser_blocks_last_sub_layer():
    """A DenoiserBlock whose self-attention gate is 0 and whose cross-attention adds nothing is its MLP
    sub-layer alone, with the shift, scale and gate the block makes from c."""
    import torch

    from crossmodal_edu.diffusion.config import DiffusionConfig
    from crossmodal_edu.diffusion.denoiser import DenoiserBlock
    from crossmodal_edu.grading.tasks.lesson07 import adaln_mlp_reference

    torch.manual_seed(0)
    d = 6
    block = DenoiserBlock(DiffusionConfig(d_model=d, num_heads=2, mlp_ratio=2)).double().eval()
    with torch.no_grad():
        linear = block.modulation[1]
        linear.weight.normal_()
        linear.bias.normal_()
        linear.weight[2 * d:3 * d] = 0  # gate1 = 0: the self-attention adds nothing
        linear.bias[2 * d:3 * d] = 0
        block.cross_attention.to_out.weight.zero_()  # the cross-attention adds nothing
        block.cross_attention.to_out.bias.zero_()
        h, c = torch.randn(3, 5, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
        context, mask = torch.randn(3, 4, d, dtype=torch.float64), torch.ones(3, 4, dtype=torch.bool)
        shift, scale, gate = block.modulation(c)[:, None].chunk(6, dim=-1)[3:]
        expected = block(h, c, context, mask)[0]
        got = adaln_mlp_reference(h, shift, scale, gate, block.norm3, block.mlp)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_the_inject_maps_reference_takes_the_source_maps_only_before_inject_steps_in_the_chosen_layers():
    import torch

    from crossmodal_edu.grading.tasks.lesson07 import inject_maps_reference

    own, source = torch.zeros(4, 3, 1, 1, 1, 1), torch.ones(4, 3, 1, 1, 1, 1)
    got = inject_maps_reference(own, source, 2, layers=[0, 2])[..., 0, 0, 0, 0]
    assert got.tolist() == [[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert inject_maps_reference(own, source, 0).sum() == 0
    assert inject_maps_reference(own, source, 4).sum() == 12


def test_a_sampler_that_counts_a_float_time_down_past_0_fails_and_is_told_to_count_its_steps():
    def euler_sample(velocity_fn, noise, steps):
        x, t, dt = noise, 1.0, 1.0 / steps
        while t > 0:  # 1 - 1/3 - 1/3 - 1/3 is 1e-16: one step more
            x = x - dt * velocity_fn(x, t)
            t -= dt
        return x

    task = get_task("07.euler_sample")
    for seed in range(5):
        result = judge(task, euler_sample, seed)
        assert result.status == FAILED and "misses the one data point" in result.text(), result.text()
        assert "exactly steps =" in result.text() and "lands on it exactly" in result.text()


def test_a_failing_check_raises_only_in_nbgraders_grading_runs(monkeypatch):
    """nbgrader scores a test cell by whether it raised: under autograde or validate a failing check raises,
    for a learner in JupyterLab it only shows what is wrong."""
    from crossmodal_edu.grading.session import CheckFailed

    def stub(z, axis=-1):
        raise NotImplementedError

    monkeypatch.setattr(session, "_SESSION", {})
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    check("01.softmax", stub)  # shown, not raised
    for run in ("autograde", "validate"):
        monkeypatch.setenv("NBGRADER_EXECUTION", run)
        with pytest.raises(CheckFailed, match="01.softmax did not pass: not attempted"):
            check("01.softmax", stub)
        check("01.softmax", lambda z, axis=-1: np.exp(z - z.max(axis, keepdims=True))
              / np.exp(z - z.max(axis, keepdims=True)).sum(axis, keepdims=True))  # a pass raises nothing


def test_an_online_update_that_returns_tensors_fails_in_the_notebook_as_in_the_hidden_fold():
    """The class grader's hidden test folds the state back in with NumPy blocks: a state handed back as
    torch tensors fails there, so the notebook's check must fail it too, and say why."""
    import torch

    def online_softmax_update(m, l, acc, scores, v):  # noqa: E741
        m, l, acc, scores, v = (torch.from_numpy(a) for a in (m, l, acc, scores, v))  # noqa: E741
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        shift = torch.nan_to_num(m_new, neginf=0.0)
        alpha, p = torch.exp(m - shift), torch.exp(scores - shift)
        return m_new, alpha * l + p.sum(-1, keepdim=True), alpha * acc + p @ v

    result = judge(get_task("04.online_update"), online_softmax_update, seed=0)
    assert result.status == FAILED and "NumPy arrays" in result.text(), result.text()

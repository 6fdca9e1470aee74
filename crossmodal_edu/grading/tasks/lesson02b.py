r"""Exercises 02b · How a model learns: the cross-entropy, computed safely -> (predict) the loss of a
blind guess -> the gradient of the cross-entropy with respect to the logits -> one AdamW step.

Inputs are float64 NumPy arrays and integer class indices, so that answers are compared with the
package to float64 rounding.

Solutions: solutions/02b_how_a_model_learns.ipynb. Reference: crossmodal_edu/numpy_training.py
(``cross_entropy``, ``cross_entropy_gradient``, ``adamw_step``).
"""

from __future__ import annotations

import math

import numpy as np

from crossmodal_edu import numpy_training as reference
from crossmodal_edu.grading.spec import IN_PLACE, Case, FunctionTask, Mistake, PredictionTask, Property
from crossmodal_edu.grading.tasks.lesson01 import (  # and lesson 01's softmax slips, met again inside the loss
    distinct,
    _softmax_global_max as _softmax_global_shift,
    _softmax_max_no_keepdims,
    _softmax_min as _softmax_min_shift,
    _softmax_sum_no_keepdims,
)
from crossmodal_edu.grading.tasks.properties import a_number, finite, first, has_shapes, near, where

# ---------------------------------------------------------------------------------------------
# shared: the ways a learner turns logits into (log-)probabilities
# ---------------------------------------------------------------------------------------------


def _rows(targets) -> np.ndarray:
    return np.arange(len(targets))


def _softmax_naive(z, axis=-1):
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_with(shift):
    """A log-softmax whose shift is ``shift(z)`` (``0``: no shift), written out as learners do."""
    def log_softmax(z):
        shifted = z - shift(z)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    return log_softmax


def _onehot(targets, C) -> np.ndarray:
    return np.eye(C)[targets]  # (B, C)


def _targets(rng: np.random.Generator, B: int, C: int) -> np.ndarray:
    """``B`` class indices in ``0..C-1``, the first two different (so a batch never has one class only)."""
    targets = rng.integers(C, size=B)
    targets[1] = (targets[0] + 1 + rng.integers(C - 1)) % C
    return targets.astype(np.int64)


def _logit_cases(rng: np.random.Generator) -> list[Case]:
    """Logits ``(B, C)`` with ``B != C``, at three scales: ordinary, far apart (a probability that
    underflows to 0: its log is -inf), and all near 10 000 (e^z overflows); then two rows thousands apart
    (a shift by the whole batch's maximum underflows one of them), a square batch (``B = C``: the one
    shape on which a max or sum without ``keepdims`` runs, so it can be named), and one example alone
    (as in the hidden tests)."""
    B, C = distinct(rng, 2, 3, 8)
    B2, C2 = distinct(rng, 2, 2, 7)
    spread = 1000 * rng.normal(size=(B2, C2))
    t2 = _targets(rng, B2, C2)
    spread[0, t2[0]] = spread[0].max() - 2000.0  # the correct class of example 0 is hopeless: p underflows
    B3 = int(rng.choice([n for n in (3, 5, 6) if n != C]))
    apart = 3 * rng.normal(size=(2, C2)) + np.array([[1500.0], [-1500.0]])  # (2, C2)
    t4 = _targets(rng, 2, C2)
    apart[1, (t4[1] + 1) % C2] -= 1000.0  # a wide row (a shift by its minimum overflows), yet p_y is fine
    return [
        Case({"logits": 2 * rng.normal(size=(B, C)), "targets": _targets(rng, B, C)}),
        Case({"logits": spread, "targets": t2}, note="logits far apart, in the thousands"),
        Case({"logits": 1e4 + rng.normal(size=(B3, C)), "targets": _targets(rng, B3, C)},
             note="logits near 10 000"),
        Case({"logits": apart, "targets": t4}, note="two examples whose logits are 3000 apart; one logit 1000 "
                                                    "below the rest of its row, not the correct class"),
        Case({"logits": 2 * rng.normal(size=(C, C)), "targets": _targets(rng, C, C)},
             note="as many examples as classes"),
        Case({"logits": 3 * rng.normal(size=(1, C2)), "targets": _targets(rng, 2, C2)[:1]}, note="one example"),
    ]


# ---------------------------------------------------------------------------------------------
# 02b.cross_entropy
# ---------------------------------------------------------------------------------------------


def _ce_naive(logits, targets):
    return -np.log(_softmax_naive(logits))[_rows(targets), targets].mean()


def _ce_log_of_softmax(logits, targets):
    return -np.log(_softmax(logits))[_rows(targets), targets].mean()


def _ce_sum(logits, targets):
    return -reference.log_softmax(logits)[_rows(targets), targets].sum()


def _ce_no_minus(logits, targets):
    return reference.log_softmax(logits)[_rows(targets), targets].mean()


def _ce_every_target(logits, targets):
    return -reference.log_softmax(logits)[:, targets].mean()


def _ce_no_normaliser(logits, targets):
    return -logits[_rows(targets), targets].mean()


def _ce_over_batch(logits, targets):
    return -reference.log_softmax(logits, axis=0)[_rows(targets), targets].mean()


def _ce_over_classes_too(logits, targets):
    return -(_onehot(targets, logits.shape[1]) * reference.log_softmax(logits)).mean()


def _ce_with(log_softmax):
    def answer(logits, targets):
        return -log_softmax(logits)[_rows(targets), targets].mean()

    return answer


def _ce_column_max(logits, targets):
    shifted = logits - logits.max(axis=0, keepdims=True)
    return -(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))[_rows(targets), targets].mean()


def _ce_largest_class(logits, targets):
    return -reference.log_softmax(logits).max(axis=-1).mean()


def _ce_sum_no_keepdims(logits, targets):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return -(shifted - np.log(np.exp(shifted).sum(axis=-1)))[_rows(targets), targets].mean()


def _ce_lse_no_shift(logits, targets):
    return -(logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True)))[_rows(targets), targets].mean()


def _ce_in_place(logits, targets):
    logits -= logits.max(axis=-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -log_p[_rows(targets), targets].mean()


def _not_negative(fn, case, outputs):
    value = float(outputs[0])
    return f"it is {value:.6g}" if value < -1e-12 else None


def _uniform_is_ln_c(fn, case, outputs):
    (logits, targets), _ = case.fresh()
    value = float(np.asarray(fn(np.full_like(logits, 0.5), targets), dtype=float))
    C = logits.shape[1]
    if not math.isclose(value, math.log(C), rel_tol=1e-6):
        return f"with every logit 0.5 and C = {C} classes your function gives {value:.6g}, not ln {C} = {math.log(C):.6g}"
    return None


CROSS_ENTROPY = FunctionTask(
    id="02b.cross_entropy",
    title="The cross-entropy, computed safely",
    points=3,
    name="cross_entropy",
    signature="cross_entropy(logits, targets) -> loss",
    cases=_logit_cases,
    reference=reference.cross_entropy,
    outputs=("loss",),
    properties=(
        has_shapes(lambda c: ((),), "a single number"),
        finite(0, "loss"),
        Property("a cross-entropy is never negative", _not_negative),
        Property("equal logits (a blind guess) must cost ln C", _uniform_is_ln_c),
    ),
    mistakes=(
        Mistake("softmax without the max shift: e^z overflows, and the loss is NaN",
                "np.exp(z) is inf once z exceeds about 709, and inf / inf is NaN. Use the log-softmax: "
                "z - z.max(axis=-1, keepdims=True), minus the log of the sum of its exponentials.",
                _ce_naive),
        Mistake("log of the softmax: log 0 = -inf when the correct class's probability underflows",
                "a probability below about 1e-308 is stored as 0, and -log 0 is inf. Never take the log of a "
                "softmax: with z shifted by its maximum, log softmax(z) = z - log(sum(exp(z))).",
                _ce_log_of_softmax),
        Mistake("summed over the batch instead of averaged",
                "the cross-entropy is the mean of -log p over the batch (as F.cross_entropy computes it): "
                "use .mean(), not .sum(), so that the loss does not grow with the batch size.", _ce_sum),
        Mistake("the minus sign is missing: the loss is negative",
                "log p is at most 0, so the loss is -log p: a number of at least 0 that falls as p rises.",
                _ce_no_minus),
        Mistake("log_p[:, targets] picks every example's log-probability of every target",
                "with fancy indexing, log_p[:, targets] is a (B, B) array. Pick one entry per row: "
                "log_p[np.arange(B), targets].", _ce_every_target),
        Mistake("-z_y alone: the log-sum-exp normaliser is left out",
                "log softmax(z)_y = z_y - log(sum_j e^(z_j)): without the second term the logits are not "
                "probabilities, and the loss can be any number.", _ce_no_normaliser),
        Mistake("softmax over the batch axis (axis=0), not over the classes",
                "each example's probabilities sum to 1 over its C classes: work along the last axis, "
                "axis=-1 (the rows of the (B, C) logits).", _ce_over_batch),
        Mistake("averaged over the classes too: (onehot * log_p).mean() divides by B · C",
                "only one entry per row is non-zero, so a mean over all B · C entries is C times too small: "
                "sum over the classes, then average over the batch.", _ce_over_classes_too),
        Mistake("log-sum-exp without the max shift: log(sum(e^z)) overflows to inf",
                "z - log(sum(e^z)) is right on paper, but e^z is inf once z exceeds about 709: shift first, "
                "z - z.max(axis=-1, keepdims=True), then take the log of the sum of exponentials.",
                _ce_lse_no_shift),
        Mistake("shifted by each row's minimum, not its maximum",
                "the shift that keeps e^z finite is the MAXIMUM (every exponent then <= 0); with the minimum, "
                "the other logits of a wide row still overflow.", _ce_with(_log_softmax_with(
                    lambda z: z.min(axis=-1, keepdims=True)))),
        Mistake("shifted by the largest logit of the whole batch, not of each row",
                "z - z.max() uses one number for every example: an example whose logits are far below another's "
                "underflows to e^z = 0 everywhere, and log 0 is -inf. Shift each row by its own maximum: "
                "z.max(axis=-1, keepdims=True).", _ce_with(_log_softmax_with(lambda z: z.max()))),
        Mistake("the max taken without keepdims=True: it broadcasts along the wrong axis",
                "z.max(axis=-1) has shape (B,), which lines up with the classes axis of (B, C), not the rows "
                "(it only runs when B = C): keep the axis, z.max(axis=-1, keepdims=True).",
                _ce_with(_log_softmax_with(lambda z: z.max(axis=-1)))),
        Mistake("the sum of exponentials taken without keepdims=True: it broadcasts along the wrong axis",
                "np.exp(shifted).sum(axis=-1) has shape (B,), which lines up with the classes axis, not the rows "
                "(it only runs when B = C): keep the axis, .sum(axis=-1, keepdims=True).", _ce_sum_no_keepdims),
        Mistake("shifted by each class's maximum over the batch (axis=0), not each row's",
                "the shift must be one number per example: logits.max(axis=-1, keepdims=True), the largest of "
                "that row's C logits.", _ce_column_max),
        Mistake("the largest log-probability of each row, not the target's",
                "the loss is -log p of the CORRECT class: pick each row's entry at its target, "
                "log_p[np.arange(B), targets].", _ce_largest_class),
        Mistake(IN_PLACE, "", _ce_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 02b.blind_guess (predict, then run)
# ---------------------------------------------------------------------------------------------

_LN9 = math.log(9)

BLIND_GUESS = PredictionTask(
    id="02b.blind_guess",
    title="Predict: the loss of a blind guess",
    points=1,
    name="predicted_loss",
    expects="a number",
    read=a_number,
    answer=_LN9,
    accept=lambda value: near(value, _LN9),
    explanation=f"every cell gets the probability 1/9, so each example costs -ln(1/9) = ln 9 = {_LN9:.3f}, and "
                f"so does their mean. Lesson 03's loss curve starts there; a loss above it is worse than guessing.",
    mistakes=(
        Mistake("that is the probability, not the loss",
                "1/9 is what the model gives the correct cell; the loss is -ln of it.", value=1 / 9),
        Mistake("that is -log10 of 1/9: the loss uses the natural logarithm",
                "F.cross_entropy, like the lesson, uses ln: -ln(1/9).", value=math.log10(9)),
        Mistake("that is in bits (log base 2): the loss uses the natural logarithm",
                "F.cross_entropy, like the lesson, uses ln: -ln(1/9).", value=math.log2(9)),
        Mistake("the minus sign is missing: a loss is never negative",
                "ln(1/9) is negative; the cross-entropy is -ln(1/9).", value=-_LN9),
        Mistake("that is the number of classes", "the loss is -ln p(correct), with p = 1/9.", value=9),
        Mistake("that is ln 3, the blind guess among 3 shapes (lesson 02b); here there are 9 cells",
                "with C classes the blind guess costs ln C.", value=math.log(3)),
        Mistake("that is the sum over the batch of 64, not the mean",
                "F.cross_entropy averages over the batch: the mean of 64 equal terms is one of them.",
                value=64 * _LN9),
        Mistake("that is ln 64, the batch size: the guess is among the 9 cells",
                "every example is its own guess among 9 cells; the batch only averages 64 equal losses.",
                value=float(np.log(64))),
        Mistake("that is ln 8: count the cells again",
                "the grid has 3 × 3 = 9 cells, so a blind guess gives each 1/9.", value=float(np.log(8))),
        Mistake("that is ln 10: count the cells again",
                "the grid has 3 × 3 = 9 cells, so a blind guess gives each 1/9.", value=float(np.log(10))),
        Mistake("a guess is not free: it gives the correct cell only 1/9",
                "the loss is 0 only when the correct class gets probability 1.", value=0),
    ),
    same=lambda a, b: math.isclose(float(a), float(b), rel_tol=0.02, abs_tol=1e-9),
)

# ---------------------------------------------------------------------------------------------
# 02b.cross_entropy_gradient
# ---------------------------------------------------------------------------------------------


def _grad_sum(logits, targets):
    return _softmax(logits) - _onehot(targets, logits.shape[1])


def _grad_sign(logits, targets):
    return (_onehot(targets, logits.shape[1]) - _softmax(logits)) / len(targets)


def _grad_index_not_onehot(logits, targets):
    return (_softmax(logits) - targets[:, None]) / len(targets)


def _grad_columns(logits, targets):
    onehot = np.zeros_like(logits)
    onehot[:, targets] = 1.0
    return (_softmax(logits) - onehot) / len(targets)


def _grad_over_batch(logits, targets):
    return (_softmax(logits, axis=0) - _onehot(targets, logits.shape[1])) / len(targets)


def _grad_naive(logits, targets):
    return (_softmax_naive(logits) - _onehot(targets, logits.shape[1])) / len(targets)


def _grad_no_onehot(logits, targets):
    return _softmax(logits) / len(targets)


def _grad_by_C(logits, targets):
    return (_softmax(logits) - _onehot(targets, logits.shape[1])) / logits.shape[1]


def _grad_correct_class_only(logits, targets):
    onehot = _onehot(targets, logits.shape[1])
    return onehot * (_softmax(logits) - 1) / len(targets)


def _grad_with(softmax):
    def answer(logits, targets):
        return (softmax(logits) - _onehot(targets, logits.shape[1])) / len(targets)

    return answer


def _grad_in_place(logits, targets):
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return (p - _onehot(targets, logits.shape[1])) / len(targets)


def _rows_sum_to_zero(fn, case, outputs):
    sums = outputs[0].sum(axis=-1)
    bad = np.abs(sums) > 1e-9
    if bad.any():
        b = int(np.flatnonzero(bad)[0])
        return f"row {b} sums to {sums[b]:.4g}"
    return None


def _signs(fn, case, outputs):
    grad, targets = outputs[0], case.inputs["targets"]
    correct = _onehot(targets, grad.shape[1]).astype(bool)  # (B, C): True at each example's class
    wrong_sign = (correct & (grad > 1e-12)) | (~correct & (grad < -1e-12))
    if wrong_sign.any():
        b, j = np.unravel_index(int(np.flatnonzero(wrong_sign)[0]), grad.shape)
        return f"the entry at {where((b, j))} is {grad[b, j]:.4g}, and example {b}'s correct class is {int(targets[b])}"
    return None


CROSS_ENTROPY_GRADIENT = FunctionTask(
    id="02b.cross_entropy_gradient",
    title="The gradient of the cross-entropy",
    points=2,
    name="cross_entropy_gradient",
    signature="cross_entropy_gradient(logits, targets) -> grad",
    cases=_logit_cases,
    reference=reference.cross_entropy_gradient,
    outputs=("grad",),
    properties=(
        has_shapes(lambda c: (c.inputs["logits"].shape,), "those of the logits, (B, C)"),
        finite(0, "grad"),
        Property("each example's row of the gradient must sum to 0 (p and the one-hot both sum to 1)",
                 _rows_sum_to_zero),
        Property("the correct class's entry must be at most 0 (raising its logit lowers the loss), the others "
                 "at least 0", _signs),
    ),
    mistakes=(
        Mistake("not divided by B: that is the gradient of the summed loss",
                "the loss is a mean over the batch, so its gradient is (p - onehot) / B.", _grad_sum),
        Mistake("sign flipped: onehot - p points uphill",
                "dL/dz = p - onehot: raising the correct class's logit lowers the loss, so its entry is negative.",
                _grad_sign),
        Mistake("subtracted the class index, not a one-hot vector: p - targets[:, None]",
                "targets holds integers such as 2; the derivative needs the one-hot vector (0, 0, 1, ...): "
                "np.eye(C)[targets].", _grad_index_not_onehot),
        Mistake("onehot[:, targets] = 1 puts a 1 in every row at every class of the batch",
                "set one entry per row: onehot[np.arange(B), targets] = 1 (or onehot = np.eye(C)[targets]).",
                _grad_columns),
        Mistake("softmax over the batch axis (axis=0), not over the classes",
                "each example's probabilities sum to 1 over its C classes: softmax along axis=-1.",
                _grad_over_batch),
        Mistake("softmax without the max shift: NaN for large logits",
                "subtract each row's maximum before np.exp: z - z.max(axis=-1, keepdims=True).", _grad_naive),
        Mistake("the one-hot is never subtracted: that is p / B",
                "dL/dz = (p - onehot) / B: the correct class's entry is p_y - 1.", _grad_no_onehot),
        Mistake("divided by the number of classes C, not by the batch size B",
                "the loss averages over the B examples (the rows), so dL/dz = (p - onehot) / B with "
                "B = logits.shape[0].", _grad_by_C),
        Mistake("only the correct class's entry: the other classes' p is left out",
                "every logit gets a gradient: raising a wrong class's logit raises the loss by its p. "
                "dL/dz = (p - onehot) / B in every entry, p_y - 1 only at the correct class.",
                _grad_correct_class_only),
        Mistake("shifted by each row's minimum, not its maximum",
                "the shift that keeps e^z finite is the MAXIMUM (every exponent then <= 0): "
                "z - z.max(axis=-1, keepdims=True).", _grad_with(_softmax_min_shift)),
        Mistake("shifted by the largest logit of the whole batch, not of each row",
                "z - z.max() uses one number for every example: an example far below another underflows to "
                "0 / 0. Shift each row by its own maximum: z.max(axis=-1, keepdims=True).",
                _grad_with(_softmax_global_shift)),
        Mistake("the max taken without keepdims=True: it broadcasts along the wrong axis",
                "z.max(axis=-1) has shape (B,), which lines up with the classes axis of (B, C) (it only runs when "
                "B = C): keep the axis, z.max(axis=-1, keepdims=True).", _grad_with(_softmax_max_no_keepdims)),
        Mistake("the softmax's sum taken without keepdims=True: it broadcasts along the wrong axis",
                "e.sum(axis=-1) has shape (B,), which lines up with the classes axis (it only runs when B = C): "
                "keep the axis, e.sum(axis=-1, keepdims=True).", _grad_with(_softmax_sum_no_keepdims)),
        Mistake(IN_PLACE, "", _grad_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 02b.adamw_step
# ---------------------------------------------------------------------------------------------


def _adam_cases(rng: np.random.Generator) -> list[Case]:
    """A first step (moments at zero: the bias correction is everything); a later step with weight decay
    and non-default betas; and small gradients with a large eps (where eps inside the root shows)."""
    a, b = distinct(rng, 2, 2, 6)
    shape2 = (int(rng.integers(2, 4)), a, 2)
    n = int(rng.integers(4, 9))
    step2, step3 = int(rng.integers(2, 9)), int(rng.integers(3, 12))
    return [
        Case({"param": rng.normal(size=(a, b)), "grad": rng.normal(size=(a, b)), "m": np.zeros((a, b)),
              "v": np.zeros((a, b)), "step": 1},
             {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
             note="the first step: m and v are zeros"),
        Case({"param": rng.normal(size=shape2), "grad": 3 * rng.normal(size=shape2),
              "m": rng.normal(size=shape2), "v": rng.uniform(0.5, 4, size=shape2), "step": step2},
             {"lr": 0.1, "beta1": 0.8, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.3},
             note=f"step {step2}, with weight decay"),
        Case({"param": rng.normal(size=n), "grad": 1e-3 * rng.normal(size=n), "m": 1e-3 * rng.normal(size=n),
              "v": 1e-6 * rng.uniform(0.5, 2, size=n), "step": step3},
             {"lr": 0.05, "beta1": 0.9, "beta2": 0.99, "eps": 1e-3, "weight_decay": 0.0},
             note=f"step {step3}, small gradients and eps = 1e-3"),
    ]


def _moments(grad, m, v, beta1, beta2):
    return beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad ** 2


def _adam(param, m, v, m_hat, v_hat, lr, eps):
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def _aw_no_bias_correction(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m, v = _moments(grad, m, v, beta1, beta2)
    return _adam(param * (1 - lr * weight_decay), m, v, m, v, lr, eps)


def _aw_eps_inside(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m, v = _moments(grad, m, v, beta1, beta2)
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param * (1 - lr * weight_decay) - lr * m_hat / np.sqrt(v_hat + eps), m, v


def _aw_coupled(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    return reference.adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay)


def _aw_plus(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m, v = _moments(grad, m, v, beta1, beta2)
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param * (1 - lr * weight_decay) + lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def _aw_decay_without_lr(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    return reference.adamw_step(param * (1 - weight_decay), grad, m, v, step, lr, beta1, beta2, eps, 0.0)


def _aw_decay_after(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    new_param, m, v = reference.adam_step(param, grad, m, v, step, lr, beta1, beta2, eps)
    return new_param * (1 - lr * weight_decay), m, v


def _aw_v_of_grad(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m, v = beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return _adam(param * (1 - lr * weight_decay), m, v, m_hat, v_hat, lr, eps)


def _aw_no_sqrt(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m, v = _moments(grad, m, v, beta1, beta2)
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param * (1 - lr * weight_decay) - lr * m_hat / (v_hat + eps), m, v


def _aw_step_from_zero(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    return reference.adamw_step(param, grad, m, v, step + 1, lr, beta1, beta2, eps, weight_decay)


def _aw_old_moments(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    new_param, _, _ = reference.adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay)
    return new_param, m, v


def _aw_corrected_moments(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    new_param, m, v = reference.adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay)
    return new_param, m / (1 - beta1 ** step), v / (1 - beta2 ** step)


def _aw_corrected(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, correct_m=True, correct_v=True,
                  betas_swapped=False, v_uses_beta1=False, eps_outside=False, decay=True, correction="divide"):
    """AdamW with one thing changed (the learner's slip named by the keyword)."""
    b1, b2 = beta1, (beta1 if v_uses_beta1 else beta2)
    if betas_swapped:
        m, v = b1 * grad + (1 - b1) * m, b2 * grad ** 2 + (1 - b2) * v
    else:
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad ** 2
    c1, c2 = (1 - beta1 ** step), (1 - b2 ** step)
    if correction == "multiply":
        m_hat, v_hat = m * c1, v * c2
    elif correction == "power":
        m_hat, v_hat = m / (1 - beta1) ** step, v / (1 - b2) ** step
    else:
        m_hat, v_hat = m / c1, v / c2
    m_hat, v_hat = (m_hat if correct_m else m), (v_hat if correct_v else v)
    decayed = param * (1 - lr * weight_decay) if decay else param
    if eps_outside:
        return decayed - lr * m_hat / np.sqrt(v_hat) + eps, m, v
    return decayed - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def _aw_with(**slip):
    def answer(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
        return _aw_corrected(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, **slip)

    return answer


def _aw_in_place(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    new_param, m_new, v_new = reference.adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay)
    param -= param - new_param
    return param, m_new, v_new


def _v_not_negative(fn, case, outputs):
    v = outputs[2]
    bad = v < 0
    if bad.any():
        return f"the new v at index {first(bad)} is {v[np.unravel_index(int(np.flatnonzero(bad)[0]), v.shape)]:.4g}"
    return None


def _first_step_is_lr_long(fn, case, outputs):
    """On the first step m_hat / sqrt(v_hat) is grad / |grad| = ±1: after the decay, each entry moves by lr
    (less eps / |grad| of it)."""
    if case.inputs["step"] != 1:
        return None
    lr = case.options["lr"]
    decayed = case.inputs["param"] * (1 - lr * case.options["weight_decay"])
    moved = np.abs(outputs[0] - decayed)
    bad = np.abs(moved - lr) > 1e-3 * lr  # eps shortens a step by eps / |grad| of it
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), moved.shape)
        return f"the entry at {where(i)} moved by {moved[i]:.4g}, not by lr = {lr:g}"
    return None


ADAMW_STEP = FunctionTask(
    id="02b.adamw_step",
    title="One AdamW step",
    points=3,
    name="adamw_step",
    signature="adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay) -> (param, m, v)",
    cases=_adam_cases,
    reference=reference.adamw_step,
    outputs=("param", "m", "v"),
    properties=(
        has_shapes(lambda c: (c.inputs["param"].shape,) * 3, "those of param (all three)"),
        finite(0, "param"),
        finite(1, "m"),
        finite(2, "v"),
        Property("v, a running mean of squares, can never be negative", _v_not_negative),
        Property("on the first step every entry must move by lr (after the decay): m_hat / sqrt(v_hat) is ±1",
                 _first_step_is_lr_long),
    ),
    mistakes=(
        Mistake("no bias correction: m and v used as they are",
                "m and v start at 0, so early on they are too small: divide by (1 - beta1 ** step) and "
                "(1 - beta2 ** step) before the update (but return m and v themselves).", _aw_no_bias_correction),
        Mistake("eps inside the square root: sqrt(v_hat + eps)",
                "the step is m_hat / (np.sqrt(v_hat) + eps): eps is added after the root, as in PyTorch.",
                _aw_eps_inside),
        Mistake("weight decay added to the gradient (Adam with an L2 penalty), not decoupled",
                "AdamW shrinks the weights directly, param - lr * weight_decay * param, and gives m and v the "
                "loss's gradient alone; grad + weight_decay * param is Adam's L2 penalty.", _aw_coupled),
        Mistake("the update is added: param + lr * m_hat / ... climbs the loss",
                "step against the gradient: param - lr * m_hat / (np.sqrt(v_hat) + eps).", _aw_plus),
        Mistake("weight decay not multiplied by the learning rate: param * (1 - weight_decay)",
                "each step shrinks the weights by lr * weight_decay of themselves: param * (1 - lr * weight_decay).",
                _aw_decay_without_lr),
        Mistake("weight decay applied after the Adam update instead of before it",
                "torch.optim.AdamW shrinks the weights first, param - lr * weight_decay * param, and then "
                "subtracts the Adam step; the other order also shrinks the step itself.", _aw_decay_after),
        Mistake("v averages the gradient, not its square",
                "v is a running mean of grad ** 2 (the gradient's typical size, squared).", _aw_v_of_grad),
        Mistake("no square root: m_hat / (v_hat + eps)",
                "v_hat is a squared size; divide by its root: m_hat / (np.sqrt(v_hat) + eps).", _aw_no_sqrt),
        Mistake("bias correction with beta ** (step + 1): step already counts from 1",
                "the first update is step 1, and then 1 - beta1 ** 1 = 1 - beta1 undoes m's pull to 0 exactly: "
                "use beta1 ** step and beta2 ** step.", _aw_step_from_zero),
        Mistake("returned the m and v it was given, not the updated ones",
                "return the new moments, beta1 * m + (1 - beta1) * grad and beta2 * v + (1 - beta2) * grad ** 2: "
                "the next step needs them.", _aw_old_moments),
        Mistake("returned the bias-corrected m_hat and v_hat as the new m and v",
                "the correction is for this step's update only: keep m and v uncorrected, or the next step "
                "corrects them twice.", _aw_corrected_moments),
        Mistake("bias correction for m only: v used as it is",
                "both moments start at 0 and both need their correction: v_hat = v / (1 - beta2 ** step) too.",
                _aw_with(correct_v=False)),
        Mistake("bias correction for v only: m used as it is",
                "both moments start at 0 and both need their correction: m_hat = m / (1 - beta1 ** step) too.",
                _aw_with(correct_m=False)),
        Mistake("beta and 1 - beta swapped in the running means: beta1 * grad + (1 - beta1) * m",
                "beta is how much of the OLD mean stays: m = beta1 * m + (1 - beta1) * grad, and likewise "
                "v = beta2 * v + (1 - beta2) * grad ** 2.", _aw_with(betas_swapped=True)),
        Mistake("v's running mean and correction use beta1, not beta2",
                "each moment has its own beta: v = beta2 * v + (1 - beta2) * grad ** 2, corrected by "
                "1 - beta2 ** step.", _aw_with(v_uses_beta1=True)),
        Mistake("eps outside the fraction: ... / np.sqrt(v_hat) + eps adds eps to the parameter",
                "operator precedence: lr * m_hat / np.sqrt(v_hat) + eps divides first and then adds eps. "
                "Put the denominator in brackets: m_hat / (np.sqrt(v_hat) + eps).", _aw_with(eps_outside=True)),
        Mistake("weight decay left out",
                "AdamW also shrinks the weights on every step: param - lr * weight_decay * param, before the "
                "Adam update.", _aw_with(decay=False)),
        Mistake("bias correction multiplied instead of divided",
                "m and v are too small early on (they start at 0): DIVIDE by (1 - beta1 ** step) and "
                "(1 - beta2 ** step), which are below 1.", _aw_with(correction="multiply")),
        Mistake("bias correction with (1 - beta) ** step instead of 1 - beta ** step",
                "the power is on beta alone: 1 - beta1 ** step (Python's ** binds tighter than -, so write it "
                "without brackets around 1 - beta1).", _aw_with(correction="power")),
        Mistake(IN_PLACE, "", _aw_in_place, in_place=True),
    ),
)

TASKS = (CROSS_ENTROPY, BLIND_GUESS, CROSS_ENTROPY_GRADIENT, ADAMW_STEP)

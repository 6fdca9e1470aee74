"""Exercises 02b's catalogued mistakes, written the way a learner would write them (imported by
tests/test_grading_mistakes.py, which checks that each is diagnosed by name).

Independent of the catalogue's own versions in crossmodal_edu/grading/tasks/lesson02b.py.
"""
import numpy as np

from crossmodal_edu.grading.spec import IN_PLACE


def _my_log_softmax(z, axis=-1):
    """A learner's correct log-softmax, from the lesson."""
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _my_softmax(z, axis=-1):
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# --- 02b.cross_entropy -------------------------------------------------------------------------

def ce_naive_softmax(logits, targets):
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return -np.mean(np.log(p[range(len(targets)), targets]))


def ce_log_of_stable_softmax(logits, targets):
    p = _my_softmax(logits)
    return -np.log(p)[np.arange(len(targets)), targets].mean()


def ce_summed(logits, targets):
    log_p = _my_log_softmax(logits)
    return -np.sum(log_p[np.arange(logits.shape[0]), targets])


def ce_no_minus(logits, targets):
    log_p = _my_log_softmax(logits)
    return np.mean(log_p[np.arange(len(targets)), targets])


def ce_every_target(logits, targets):
    log_p = _my_log_softmax(logits)
    return -log_p[:, targets].mean()


def ce_no_normaliser(logits, targets):
    picked = np.take_along_axis(logits, targets[:, None], axis=1)  # (B, 1): the correct class's logit
    return float(-picked.mean())


def ce_over_batch(logits, targets):
    log_p = _my_log_softmax(logits, axis=0)
    return -log_p[np.arange(len(targets)), targets].mean()


def ce_over_classes_too(logits, targets):
    B, C = logits.shape
    onehot = np.zeros((B, C))
    onehot[np.arange(B), targets] = 1
    return -np.mean(onehot * _my_log_softmax(logits))


def ce_in_place(logits, targets):
    logits -= np.max(logits, axis=1, keepdims=True)
    log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets].mean()


# --- 02b.cross_entropy_gradient ----------------------------------------------------------------

def _onehot(targets, C):
    onehot = np.zeros((len(targets), C))
    onehot[np.arange(len(targets)), targets] = 1.0
    return onehot


def grad_not_divided(logits, targets):
    return _my_softmax(logits) - _onehot(targets, logits.shape[1])


def grad_sign_flipped(logits, targets):
    B = logits.shape[0]
    return (_onehot(targets, logits.shape[1]) - _my_softmax(logits)) / B


def grad_index_not_onehot(logits, targets):
    p = _my_softmax(logits)
    return (p - targets.reshape(-1, 1)) / len(targets)


def grad_onehot_columns(logits, targets):
    y = np.zeros(logits.shape)
    y[:, targets] = 1
    return (_my_softmax(logits) - y) / logits.shape[0]


def grad_softmax_over_batch(logits, targets):
    p = np.exp(logits - logits.max(axis=0, keepdims=True))
    p = p / p.sum(axis=0, keepdims=True)
    return (p - np.eye(logits.shape[1])[targets]) / len(targets)


def grad_naive_softmax(logits, targets):
    p = np.exp(logits) / np.sum(np.exp(logits), axis=-1, keepdims=True)
    return (p - np.eye(logits.shape[1])[targets]) / len(targets)


def grad_no_onehot(logits, targets):
    return _my_softmax(logits) / len(logits)


def grad_in_place(logits, targets):
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    logits[np.arange(len(targets)), targets] -= 1
    return logits / len(targets)


# --- 02b.adamw_step ------------------------------------------------------------------------------

def adamw_no_bias_correction(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * m / (np.sqrt(v) + eps), m, v


def adamw_eps_inside(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / np.sqrt(v_hat + eps), m, v


def adamw_decay_in_gradient(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    grad = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_plus(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param + lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_decay_without_lr(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_decay_after_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    param = param - lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
    return param - lr * weight_decay * param, m, v


def adamw_v_of_grad(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_no_sqrt(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (v_hat + eps), m, v


def adamw_step_counted_from_zero(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    t = step + 1
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    return param - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps), m, v


def adamw_returns_old_moments(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    new_m = beta1 * m + (1 - beta1) * grad
    new_v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = new_m / (1 - beta1 ** step), new_v / (1 - beta2 ** step)
    return param * (1 - lr * weight_decay) - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_stores_corrected_moments(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m = (beta1 * m + (1 - beta1) * grad) / (1 - beta1 ** step)
    v = (beta2 * v + (1 - beta2) * grad ** 2) / (1 - beta2 ** step)
    return param * (1 - lr * weight_decay) - lr * m / (np.sqrt(v) + eps), m, v


def adamw_in_place(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param *= 1 - lr * weight_decay
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    param -= lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
    return param, m, v


# --- later additions: mistakes the first catalogue lacked, and right answers written unusually ------

def ce_lse_without_shift(logits, targets):
    log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets].mean()


def ce_shift_by_min(logits, targets):
    z = logits - logits.min(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(log_p[range(len(targets)), targets])


def ce_shift_by_batch_max(logits, targets):
    z = logits - np.max(logits)
    log_p = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets].mean()


def ce_max_without_keepdims(logits, targets):
    z = logits - logits.max(axis=1)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(targets)), targets].mean()


def ce_sum_without_keepdims(logits, targets):
    z = logits - logits.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1))
    return float(-np.mean(log_p[np.arange(len(targets)), targets]))


def grad_divided_by_classes(logits, targets):
    B, C = logits.shape
    return (_my_softmax(logits) - np.eye(C)[targets]) / C


def grad_correct_class_only(logits, targets):
    p = _my_softmax(logits)
    grad = np.zeros_like(logits)
    rows = np.arange(len(targets))
    grad[rows, targets] = p[rows, targets] - 1
    return grad / len(targets)


def grad_shift_by_min(logits, targets):
    e = np.exp(logits - logits.min(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True) - _onehot(targets, logits.shape[1])) / len(targets)


def grad_shift_by_batch_max(logits, targets):
    e = np.exp(logits - logits.max())
    return (e / e.sum(axis=1, keepdims=True) - _onehot(targets, logits.shape[1])) / len(targets)


def grad_max_without_keepdims(logits, targets):
    e = np.exp(logits - np.max(logits, axis=1))
    p = e / np.sum(e, axis=1, keepdims=True)
    return (p - np.eye(logits.shape[1])[targets]) / logits.shape[0]


def grad_sum_without_keepdims(logits, targets):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1)
    return (p - _onehot(targets, logits.shape[1])) / len(targets)


def adamw_v_not_corrected(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** step)
    return param - lr * m_hat / (np.sqrt(v) + eps), m, v


def adamw_m_not_corrected(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * np.square(grad)
    v_hat = v / (1 - beta2 ** step)
    return param - lr * m / (np.sqrt(v_hat) + eps), m, v


def adamw_betas_swapped(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = (1 - beta1) * m + beta1 * grad
    v = (1 - beta2) * v + beta2 * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_beta1_for_v(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta1 * v + (1 - beta1) * grad ** 2  # copied from the line above
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta1 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_eps_outside(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / np.sqrt(v_hat) + eps, m, v


def adamw_no_decay(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_correction_multiplied(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m * (1 - beta1 ** step), v * (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw_correction_power_of_the_bracket(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    param = param - lr * weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    m_hat, v_hat = m / (1 - beta1) ** step, v / (1 - beta2) ** step
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def ce_logsumexp(logits, targets):  # right: NumPy's logaddexp.reduce is a stable log-sum-exp
    lse = np.logaddexp.reduce(logits, axis=1)  # (B,)
    return float(np.mean(lse - logits[np.arange(len(targets)), targets]))


def ce_loop(logits, targets):  # right: one example at a time
    total = 0.0
    for row, y in zip(logits, targets):
        top = row.max()
        total += -(row[y] - top - np.log(np.exp(row - top).sum()))
    return total / len(targets)


def ce_torch(logits, targets):  # right: PyTorch's own, on the NumPy arrays
    import torch
    import torch.nn.functional as F
    return F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item()


def grad_columns_first(logits, targets):  # right: the classes on axis 0, transposed back
    z = logits.T  # (C, B)
    e = np.exp(z - z.max(axis=0))
    p = e / e.sum(axis=0)
    p[targets, np.arange(len(targets))] -= 1
    return p.T / z.shape[1]


def grad_from_log_softmax(logits, targets):  # right: p from a stable log-softmax
    p = np.exp(_my_log_softmax(logits))
    p[np.arange(len(targets)), targets] -= 1.0
    return p / logits.shape[0]


def adamw_torch_order(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):  # right: as torch writes it
    param = param * (1 - lr * weight_decay)
    m = m * beta1 + grad * (1 - beta1)
    v = v * beta2 + grad * grad * (1 - beta2)
    step_size = lr / (1 - beta1 ** step)
    denom = np.sqrt(v) / np.sqrt(1 - beta2 ** step) + eps
    return param - step_size * m / denom, m, v


def adamw_copies_in_place(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):  # right: on copies
    param, m, v = param.copy(), m.copy(), v.copy()
    param *= 1 - lr * weight_decay
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad ** 2
    param -= lr * (m / (1 - beta1 ** step)) / (np.sqrt(v / (1 - beta2 ** step)) + eps)
    return param, m, v


LEARNER_MISTAKES_02B = {
    "02b.cross_entropy": {
        "softmax without the max shift: e^z overflows, and the loss is NaN": ce_naive_softmax,
        "log of the softmax: log 0 = -inf when the correct class's probability underflows": ce_log_of_stable_softmax,
        "summed over the batch instead of averaged": ce_summed,
        "the minus sign is missing: the loss is negative": ce_no_minus,
        "log_p[:, targets] picks every example's log-probability of every target": ce_every_target,
        "-z_y alone: the log-sum-exp normaliser is left out": ce_no_normaliser,
        "softmax over the batch axis (axis=0), not over the classes": ce_over_batch,
        "averaged over the classes too: (onehot * log_p).mean() divides by B · C": ce_over_classes_too,
        IN_PLACE: ce_in_place,
    },
    "02b.cross_entropy_gradient": {
        "not divided by B: that is the gradient of the summed loss": grad_not_divided,
        "sign flipped: onehot - p points uphill": grad_sign_flipped,
        "subtracted the class index, not a one-hot vector: p - targets[:, None]": grad_index_not_onehot,
        "onehot[:, targets] = 1 puts a 1 in every row at every class of the batch": grad_onehot_columns,
        "softmax over the batch axis (axis=0), not over the classes": grad_softmax_over_batch,
        "softmax without the max shift: NaN for large logits": grad_naive_softmax,
        "the one-hot is never subtracted: that is p / B": grad_no_onehot,
        IN_PLACE: grad_in_place,
    },
    "02b.adamw_step": {
        "no bias correction: m and v used as they are": adamw_no_bias_correction,
        "eps inside the square root: sqrt(v_hat + eps)": adamw_eps_inside,
        "weight decay added to the gradient (Adam with an L2 penalty), not decoupled": adamw_decay_in_gradient,
        "the update is added: param + lr * m_hat / ... climbs the loss": adamw_plus,
        "weight decay not multiplied by the learning rate: param * (1 - weight_decay)": adamw_decay_without_lr,
        "weight decay applied after the Adam update instead of before it": adamw_decay_after_update,
        "v averages the gradient, not its square": adamw_v_of_grad,
        "no square root: m_hat / (v_hat + eps)": adamw_no_sqrt,
        "bias correction with beta ** (step + 1): step already counts from 1": adamw_step_counted_from_zero,
        "returned the m and v it was given, not the updated ones": adamw_returns_old_moments,
        "returned the bias-corrected m_hat and v_hat as the new m and v": adamw_stores_corrected_moments,
        IN_PLACE: adamw_in_place,
    },
}
LEARNER_MISTAKES_02B["02b.cross_entropy"].update({
    "log-sum-exp without the max shift: log(sum(e^z)) overflows to inf": ce_lse_without_shift,
    "shifted by each row's minimum, not its maximum": ce_shift_by_min,
    "shifted by the largest logit of the whole batch, not of each row": ce_shift_by_batch_max,
    "the max taken without keepdims=True: it broadcasts along the wrong axis": ce_max_without_keepdims,
    "the sum of exponentials taken without keepdims=True: it broadcasts along the wrong axis": ce_sum_without_keepdims,
})
LEARNER_MISTAKES_02B["02b.cross_entropy_gradient"].update({
    "divided by the number of classes C, not by the batch size B": grad_divided_by_classes,
    "only the correct class's entry: the other classes' p is left out": grad_correct_class_only,
    "shifted by each row's minimum, not its maximum": grad_shift_by_min,
    "shifted by the largest logit of the whole batch, not of each row": grad_shift_by_batch_max,
    "the max taken without keepdims=True: it broadcasts along the wrong axis": grad_max_without_keepdims,
    "the softmax's sum taken without keepdims=True: it broadcasts along the wrong axis": grad_sum_without_keepdims,
})
LEARNER_MISTAKES_02B["02b.adamw_step"].update({
    "bias correction for m only: v used as it is": adamw_v_not_corrected,
    "bias correction for v only: m used as it is": adamw_m_not_corrected,
    "beta and 1 - beta swapped in the running means: beta1 * grad + (1 - beta1) * m": adamw_betas_swapped,
    "v's running mean and correction use beta1, not beta2": adamw_beta1_for_v,
    "eps outside the fraction: ... / np.sqrt(v_hat) + eps adds eps to the parameter": adamw_eps_outside,
    "weight decay left out": adamw_no_decay,
    "bias correction multiplied instead of divided": adamw_correction_multiplied,
    "bias correction with (1 - beta) ** step instead of 1 - beta ** step": adamw_correction_power_of_the_bracket,
})

RIGHT_ANSWERS_02B = [
    ("02b.cross_entropy", ce_logsumexp),
    ("02b.cross_entropy", ce_loop),
    ("02b.cross_entropy", ce_torch),
    ("02b.cross_entropy_gradient", grad_columns_first),
    ("02b.cross_entropy_gradient", grad_from_log_softmax),
    ("02b.adamw_step", adamw_torch_order),
    ("02b.adamw_step", adamw_copies_in_place),
]


def cross_entropy_column_shift(logits, targets):
    z = logits - np.max(logits, axis=0, keepdims=True)
    log_p = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return -np.mean(log_p[np.arange(len(targets)), targets])


def cross_entropy_ignores_targets(logits, targets):
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p.max(axis=1).mean()


LEARNER_MISTAKES_02B["02b.cross_entropy"].update({
    "shifted by each class's maximum over the batch (axis=0), not each row's": cross_entropy_column_shift,
    "the largest log-probability of each row, not the target's": cross_entropy_ignores_targets,
})

r"""How a model learns, in NumPy: the loss, its gradient, and the optimisers that follow it.

A classifier turns an input into ``logits`` (one score per class, shape ``(B, C)``); the softmax turns
them into probabilities, and the **cross-entropy** is the average of :math:`-\log p(\text{correct})`:

.. math::

    L = -\frac{1}{B}\sum_{b=1}^{B} \log \mathrm{softmax}(z_b)_{y_b},
    \qquad \frac{\partial L}{\partial z_b} = \frac{1}{B}\big(\mathrm{softmax}(z_b) - \mathrm{onehot}(y_b)\big).

The update rules here follow PyTorch's ``torch.optim.SGD`` (with ``momentum``), ``Adam`` and ``AdamW``
exactly, so a lesson can prove its hand-written step equal to theirs. Each function returns new arrays
and never changes its inputs.

Derived in notebooks/02b_how_a_model_learns.ipynb.
"""

from __future__ import annotations

import numpy as np

from crossmodal_edu._checks import describe

__all__ = [
    "log_softmax",
    "cross_entropy",
    "cross_entropy_gradient",
    "sgd_step",
    "momentum_step",
    "adam_step",
    "adamw_step",
]


def _check_logits_targets(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, targets = np.asarray(logits, dtype=np.float64), np.asarray(targets)
    if logits.ndim != 2:
        raise ValueError(f"logits: expected 2 dims (B, C), one row of class scores per example, "
                         f"but {describe('logits', logits)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must hold one class index per example, shape ({logits.shape[0]},), "
                         f"but {describe('targets', targets)} and {describe('logits', logits)}")
    if targets.dtype.kind not in "iu":
        raise ValueError(f"targets must be integer class indices, but they have dtype {targets.dtype}")
    if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        raise ValueError(f"targets must lie in 0..{logits.shape[1] - 1} (C = {logits.shape[1]} classes), "
                         f"but they range from {targets.min()} to {targets.max()}")
    return logits, targets


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""The logarithm of the softmax, computed without ever taking the log of 0:

    .. math:: \log \mathrm{softmax}(z)_j = (z_j - m) - \log \sum_i e^{z_i - m}, \qquad m = \max_i z_i.

    ``np.log(softmax(z))`` gives ``-inf`` wherever a probability underflows to 0 (a logit some 750
    below the largest); this form stays finite. Shapes: ``z`` any shape -> the same shape.
    """
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=axis, keepdims=True)  # the largest entry becomes 0
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    r"""The mean cross-entropy of a batch, as ``torch.nn.functional.cross_entropy`` computes it:

    .. math:: L = -\frac{1}{B}\sum_{b} \log \mathrm{softmax}(z_b)_{y_b}

    Shapes: ``logits`` ``(B, C)`` float, ``targets`` ``(B,)`` integers in ``0..C-1`` -> a float.
    A uniform guess (equal logits) gives :math:`\ln C`.
    """
    logits, targets = _check_logits_targets(logits, targets)
    log_p = log_softmax(logits, axis=-1)  # (B, C)
    return float(-log_p[np.arange(len(targets)), targets].mean())


def cross_entropy_gradient(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    r"""The gradient of :func:`cross_entropy` with respect to the logits:

    .. math:: \frac{\partial L}{\partial z_{bj}} = \frac{1}{B}\big(p_{bj} - [j = y_b]\big),
              \qquad p_b = \mathrm{softmax}(z_b).

    Shapes: ``logits`` ``(B, C)``, ``targets`` ``(B,)`` -> ``(B, C)``; every row sums to 0.
    """
    logits, targets = _check_logits_targets(logits, targets)
    p = np.exp(log_softmax(logits, axis=-1))  # (B, C)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(targets)), targets] = 1.0  # (B, C): a 1 at each example's class
    return (p - onehot) / len(targets)


def _check_same_shape(**arrays: np.ndarray) -> None:
    (first, a), *rest = arrays.items()
    for name, b in rest:
        if np.shape(b) != np.shape(a):
            raise ValueError(f"{first} and {name} must have the same shape, but "
                             f"{describe(first, np.asarray(a))} and {describe(name, np.asarray(b))}")


def sgd_step(param: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
    r"""One step of gradient descent, :math:`\theta \leftarrow \theta - \eta\, g`.

    Shapes: ``param`` and ``grad`` any shape, the same -> the new ``param``.
    """
    _check_same_shape(param=param, grad=grad)
    return param - lr * grad


def momentum_step(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray, lr: float,
                  momentum: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    r"""One step of SGD with momentum, as ``torch.optim.SGD(momentum=μ)`` takes it:

    .. math:: v \leftarrow \mu\, v + g, \qquad \theta \leftarrow \theta - \eta\, v.

    ``velocity`` starts at zeros. Shapes: all three arrays the same -> ``(param, velocity)``.
    """
    _check_same_shape(param=param, grad=grad, velocity=velocity)
    velocity = momentum * velocity + grad
    return param - lr * velocity, velocity


def _adam_update(param, grad, m, v, step, lr, beta1, beta2, eps):
    if step < 1:
        raise ValueError(f"step counts from 1 (the first update is step 1), but step = {step}")
    m = beta1 * m + (1 - beta1) * grad  # a running mean of the gradient
    v = beta2 * v + (1 - beta2) * grad ** 2  # a running mean of its square
    m_hat = m / (1 - beta1 ** step)  # both start at 0: undo that bias
    v_hat = v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""One step of Adam (Kingma & Ba, 2015), as ``torch.optim.Adam`` takes it:

    .. math::

        g &\leftarrow g + \lambda\theta \quad\text{(weight decay as an L2 penalty, if } \lambda > 0)\\
        m &\leftarrow \beta_1 m + (1-\beta_1)\, g, \qquad v \leftarrow \beta_2 v + (1-\beta_2)\, g^2\\
        \theta &\leftarrow \theta - \eta\, \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

    ``m`` and ``v`` start at zeros; ``step`` is :math:`t`, counted from 1. Shapes: ``param``, ``grad``,
    ``m``, ``v`` the same -> ``(param, m, v)``.
    """
    _check_same_shape(param=param, grad=grad, m=m, v=v)
    return _adam_update(param, grad + weight_decay * param, m, v, step, lr, beta1, beta2, eps)


def adamw_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int, lr: float = 1e-3,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""One step of AdamW (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW`` takes it: the weights
    shrink by :math:`\eta\lambda` of themselves, *decoupled* from the gradient, then Adam steps:

    .. math::

        \theta &\leftarrow \theta - \eta\lambda\,\theta\\
        m &\leftarrow \beta_1 m + (1-\beta_1)\, g, \qquad v \leftarrow \beta_2 v + (1-\beta_2)\, g^2\\
        \theta &\leftarrow \theta - \eta\, \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

    Shapes: ``param``, ``grad``, ``m``, ``v`` the same -> ``(param, m, v)``.
    """
    _check_same_shape(param=param, grad=grad, m=m, v=v)
    return _adam_update(param * (1 - lr * weight_decay), grad, m, v, step, lr, beta1, beta2, eps)

"""What crosses from the learner's kernel to the class grader's judge, without starting a kernel.

The kernel's side (``grading.agent``) runs here in-process behind a fake channel that passes every request
and reply through the real encodings (pickle one way, JSON and ``.npy`` bytes the other), so a verdict
reached through a :class:`RemoteFunction` can be compared with the verdict on the function itself.
"""
import base64
import io
import json

import numpy as np
import pytest
import torch

from crossmodal_edu.grading import get_task, judge, wire
from crossmodal_edu.grading import agent, session
from crossmodal_edu.grading.remote import RemoteError, RemoteFunction


def _channel(request):
    """The kernel, in-process: the request pickled there, the reply read back as plain data."""
    message = wire.loads_request(wire.dumps_request(request))
    reply = {"find": agent._find, "call": agent._call, "grad": agent._gradients}[message["op"]](message)
    return wire.loads_reply(json.dumps(reply).encode())


@pytest.fixture
def answer():
    """Make ``fn`` the learner's checked answer to a task, as ``check`` would; forget it afterwards."""
    saved = dict(session._SESSION)

    def give(task_id, fn):
        session._SESSION[task_id] = (fn, None)
        return RemoteFunction(_channel, task_id=task_id)

    yield give
    session._SESSION.clear()
    session._SESSION.update(saved)


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_no_max(z, axis=-1):
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_in_place(z, axis=-1):
    z -= z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_raises(z, axis=-1):
    return np.exp(z) / undefined_name  # noqa: F821


@pytest.mark.parametrize("fn", [_softmax, _softmax_no_max, _softmax_in_place, _softmax_raises],
                         ids=lambda f: f.__name__)
def test_a_remote_answer_gets_the_verdict_the_function_itself_gets(answer, fn):
    task = get_task("01.softmax")
    local, remote = judge(task, fn, seed=5), judge(task, answer(task.id, fn), seed=5)
    assert (remote.status, remote.mistake, remote.points) == (local.status, local.mistake, local.points)
    assert remote.summary == local.summary


def test_the_learners_line_of_an_exception_comes_back_with_it(answer):
    result = judge(get_task("01.softmax"), answer("01.softmax", _softmax_raises), seed=5)
    text = result.text()
    assert "NameError" in text and "undefined_name" in text and "line 2 of _softmax_raises" in text


def _straight_through(z, z_q):
    return z + (z_q - z).detach()


def _returns_z_q(z, z_q):
    return z_q


@pytest.mark.parametrize("fn", [_straight_through, _returns_z_q], ids=lambda f: f.__name__)
def test_a_task_with_a_gradient_harness_is_judged_alike_through_the_kernel(answer, fn):
    task = get_task("05.straight_through")
    local, remote = judge(task, fn, seed=3), judge(task, answer(task.id, fn), seed=3)
    assert (remote.status, remote.mistake) == (local.status, local.mistake)


def test_a_backward_pass_from_the_judge_reaches_the_kernel_and_back():
    z = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    z_q = torch.randn(2, 3, 4, dtype=torch.float64)
    import __main__

    __main__.scaled_twice = lambda a, b: 2.0 * a * b
    try:
        out = RemoteFunction(_channel, name="scaled_twice")(z, z_q)
        out.sum().backward()
    finally:
        del __main__.scaled_twice
    assert torch.allclose(z.grad, 2.0 * z_q)


def test_an_answer_that_is_a_class_is_called_in_the_kernel_like_a_function(answer):
    """03.gated_block asks for an nn.Module class: the judge must call it in the kernel, not ask for its value."""
    from crossmodal_edu.grading.regrade import grade_task
    from crossmodal_edu.grading.tasks.lesson03 import _GatedReference, _gated_mistake

    task = get_task("03.gated_block")
    answer(task.id, _GatedReference)
    assert grade_task(task, _channel, seeds=[1, 2])["status"] == "passed"
    opened = _gated_mistake(gate_init=1.0)
    answer(task.id, opened)
    record = grade_task(task, _channel, seeds=[1])
    assert (record["status"], record["mistake"]) == ("failed", judge(task, opened, seed=1).mistake)


class _FloatGate(torch.nn.Module):
    """A gated block whose gate is a plain float: right on every output, but training can never open it."""

    def __init__(self, query_dim, context_dim, num_heads):
        super().__init__()
        from crossmodal_edu.torch_attention import MultiHeadCrossAttention

        self.norm = torch.nn.LayerNorm(query_dim)
        self.attention = MultiHeadCrossAttention(query_dim, context_dim, num_heads)
        self.gate = 0.0

    def forward(self, x, context, context_mask=None):
        return x + float(np.tanh(self.gate)) * self.attention(self.norm(x), context, context_mask)


def test_a_gate_that_cannot_train_fails_in_the_kernel_as_in_the_notebook(answer):
    """What a hidden test used to check on the learner's block in the judge is measured in the kernel."""
    from crossmodal_edu.grading.regrade import grade_task

    task = get_task("03.gated_block")
    local = judge(task, _FloatGate, seed=1)
    assert not local.passed and "a parameter that training can open" in local.text()
    answer(task.id, _FloatGate)
    record = grade_task(task, _channel, seeds=[1])
    assert record["status"] == local.status and "a parameter that training can open" in record["feedback"]


def test_a_prediction_travels_as_its_number(answer):
    task = get_task("01.score_std")
    assert judge(task, wire.decode(wire.encode(np.float64(8.0)))).passed
    assert not judge(task, wire.decode(wire.encode(64))).passed


@pytest.mark.parametrize("value", [np.arange(6.0).reshape(2, 3), np.float32(1.5), np.array(3.0), np.array([True, False]),
                                   (1, 2.5, "x", None, [np.zeros((0, 2), np.int64)]), {"a": 1}, Ellipsis],
                         ids=repr)
def test_plain_data_arrives_as_it_left(value):
    back = wire.decode(json.loads(json.dumps(wire.encode(value))))
    if isinstance(value, np.ndarray):
        assert isinstance(back, np.ndarray) and back.shape == value.shape and back.dtype == value.dtype
        assert np.array_equal(back, value)
    elif isinstance(value, tuple):
        assert back[:4] == value[:4] and np.array_equal(back[4][0], value[4][0]) and back[4][0].shape == (0, 2)
    else:
        assert back == value and type(back) is type(value)


def test_a_tensor_arrives_as_a_tensor_of_its_dtype():
    value = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    back = wire.decode(json.loads(json.dumps(wire.encode(value))))
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32 and torch.equal(back, value)


def test_an_object_that_is_not_plain_data_arrives_as_a_harmless_stand_in():
    class Liar:
        def __eq__(self, other):
            return True

        def __array__(self, dtype=None, copy=None):
            return np.ones(3)

    back = wire.decode(wire.encode(Liar()))
    assert type(back).__name__ == "Liar" and isinstance(back, wire.Opaque) and not callable(back)
    assert back != 1 and not isinstance(back, np.ndarray)


def test_an_array_that_needs_pickle_is_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises((wire.WireError, ValueError)):
        wire.decode({"t": "ndarray", "npy": base64.b64encode(buffer.getvalue()).decode()})


@pytest.mark.parametrize("data", [{"t": "int", "v": "1e9"}, {"t": "eval", "v": "1"}, [1, 2], {"t": "float", "v": "x"},
                                  {"t": "tensor", "npy": "not base64!", "dtype": "torch.float32"}])
def test_a_malformed_reply_is_refused(data):
    with pytest.raises((wire.WireError, ValueError)):
        wire.decode(data)


def test_an_exception_of_a_type_the_judge_does_not_know_is_an_ordinary_exception():
    from crossmodal_edu.grading.remote import remote_error

    error = remote_error({"type": "SystemExit", "module": "builtins", "message": "bye", "where": "line 1"})
    assert isinstance(error, RemoteError) and type(error).__name__ == "SystemExit"
    assert isinstance(remote_error({"type": "ValueError", "module": "builtins", "message": "m"}), ValueError)

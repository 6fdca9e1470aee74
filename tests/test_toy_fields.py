"""The velocity fields that check a sampler without a model (crossmodal_edu/diffusion/toy_fields.py)."""
import pickle

import pytest
import torch

from crossmodal_edu.diffusion.toy_fields import LinearVelocity, TowardsPoint


def test_towards_point_carries_x_t_along_its_straight_line_to_the_point():
    point = torch.tensor([[[2.0, -1.0]]], dtype=torch.float64)  # (C, h, w) = (1, 1, 2)
    x = torch.tensor([[[[0.0, 3.0]]]], dtype=torch.float64)  # (B, C, h, w) at t = 0.5
    v = TowardsPoint(point)(x, 0.5)
    assert torch.equal(x - 0.5 * v, point[None]), "going the rest of the way, Δt = t, lands on the point"


def test_towards_point_refuses_t_0_and_says_why():
    with pytest.raises(ValueError, match="undefined"):
        TowardsPoint(torch.zeros(1, 1, 1))(torch.zeros(1, 1, 1, 1), 0.0)


@pytest.mark.parametrize("t", [1.5, -0.25])
def test_a_time_outside_0_1_is_refused(t):
    with pytest.raises(ValueError, match="outside"):
        LinearVelocity(*torch.ones(3, 1, 1, 1))(torch.zeros(2, 1, 1, 1), t)


def test_a_time_per_latent_is_refused_with_what_came():
    with pytest.raises(ValueError, match=r"one float.*shape \(2,\)"):
        LinearVelocity(*torch.ones(3, 1, 1, 1))(torch.zeros(2, 1, 1, 1), torch.tensor([0.5, 0.5]))


def test_linear_velocity_is_a_x_plus_t_b_plus_c_and_takes_a_0_d_tensor_time():
    a, b, c = torch.tensor([[[2.0]]]), torch.tensor([[[10.0]]]), torch.tensor([[[1.0]]])
    v = LinearVelocity(a, b, c)(torch.full((1, 1, 1, 1), 3.0), torch.tensor(0.5))
    assert v.item() == 2.0 * 3.0 + 0.5 * 10.0 + 1.0


def test_the_fields_survive_pickling_as_the_class_grader_sends_them():
    field = TowardsPoint(torch.ones(1, 2, 2))
    x = torch.zeros(1, 1, 2, 2)
    assert torch.equal(pickle.loads(pickle.dumps(field))(x, 0.5), field(x, 0.5))

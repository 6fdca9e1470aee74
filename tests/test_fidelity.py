"""Prompt fidelity: reading captions back, and grading scenes against them."""

from __future__ import annotations

import numpy as np
import pytest

from crossmodal_edu import world
from crossmodal_edu.world.scenes import Scene, SceneObject


@pytest.mark.parametrize("num_objects", [1, 2])
def test_every_caption_parses_back_to_its_scene(num_objects):
    data = world.make_dataset(400, num_objects, seed=7)
    for caption, scene in zip(data.captions, data.scenes):
        prompt = world.parse_caption(caption)
        assert prompt.tier == num_objects
        for wanted, obj in zip(prompt.objects, scene.objects):
            assert (wanted["colour"], wanted["shape"]) == (obj.colour, obj.shape)
            if num_objects == 1:
                assert (wanted["size"], wanted["cell"]) == (obj.size, obj.cell)
        if num_objects == 2:
            assert prompt.relation in world.true_relations(*scene.objects)


@pytest.mark.parametrize("num_objects", [1, 2])
def test_true_scenes_are_fully_faithful(num_objects):
    data = world.make_dataset(300, num_objects, seed=8)
    assert set(world.caption_fidelity(data.captions, data.scenes).values()) == {1.0}


def test_unrelated_scenes_score_near_chance():
    captions = world.make_dataset(3000, 1, seed=9).captions
    scenes = world.make_dataset(3000, 1, seed=10).scenes
    fidelity = world.caption_fidelity(captions, scenes)
    # Independent attributes: shape 1/3, colour 1/6, size 1/2, position 1/9, all 1/324.
    for key, chance in {"shape": 1 / 3, "colour": 1 / 6, "size": 1 / 2, "position": 1 / 9}.items():
        assert abs(fidelity[key] - chance) < 0.03, (key, fidelity[key])
    assert fidelity["all"] < 0.01


def test_each_tier_one_attribute_is_graded_on_its_own():
    prompt = "a small red circle at the top left"
    right = SceneObject("circle", "red", "small", 0, 0)
    cases = {
        "shape": SceneObject("square", "red", "small", 0, 0),
        "colour": SceneObject("circle", "blue", "small", 0, 0),
        "size": SceneObject("circle", "red", "large", 0, 0),
        "position": SceneObject("circle", "red", "small", 2, 2),
    }
    for wrong_key, obj in cases.items():
        grade = world.grade_prompt(world.parse_caption(prompt), Scene((obj,)))
        assert not grade[wrong_key] and not grade["all"]
        assert all(grade[k] for k in cases if k != wrong_key)
    extra = Scene((right, SceneObject("square", "blue", "large", 1, 1)))
    grade = world.grade_prompt(world.parse_caption(prompt), extra)
    assert not grade["count"] and not grade["all"] and grade["position"]
    assert not any(world.grade_prompt(world.parse_caption(prompt), Scene(())).values())


def test_tier_two_checks_objects_and_relation():
    prompt = world.parse_caption("a red circle left of a blue square")
    circle = SceneObject("circle", "red", "large", 1, 0)
    square = SceneObject("square", "blue", "small", 1, 2)
    assert all(world.grade_prompt(prompt, Scene((square, circle))).values())  # order does not matter
    swapped = Scene((SceneObject("circle", "red", "large", 1, 2), SceneObject("square", "blue", "small", 1, 0)))
    grade = world.grade_prompt(prompt, swapped)
    assert grade["colour"] and grade["shape"] and not grade["relation"] and not grade["all"]
    recoloured = Scene((SceneObject("circle", "green", "large", 1, 0), square))
    grade = world.grade_prompt(prompt, recoloured)
    assert not grade["colour"] and grade["shape"] and grade["relation"] and not grade["all"]


@pytest.mark.parametrize(
    "caption",
    ["", "a red circle", "a small red circle somewhere", "a red circle near a blue square", "the small red circle at the top"],
)
def test_unparseable_captions_are_named(caption):
    with pytest.raises(ValueError, match="cannot parse caption"):
        world.parse_caption(caption)


def test_mixed_tiers_are_refused():
    scenes = [Scene((SceneObject("circle", "red", "small", 0, 0),))] * 2
    with pytest.raises(ValueError, match="grade each tier separately"):
        world.caption_fidelity(["a small red circle at the top left", "a red circle left of a blue square"], scenes)
    assert np.isfinite(world.caption_fidelity(["a small red circle at the top left"], scenes[:1])["all"])


@pytest.mark.parametrize("num_objects", [1, 2])
def test_image_fidelity_grades_images_from_anywhere_through_the_oracle(num_objects):
    from crossmodal_edu.world.fidelity import image_fidelity

    data = world.make_dataset(200, num_objects, seed=11)  # images drawn by the world itself, not by a decoder
    right = image_fidelity(data.captions, data.images)
    assert right == world.caption_fidelity(data.captions, world.read_scenes(data.images))
    assert right["all"] >= 0.99
    wrong = image_fidelity(data.captions, data.images[::-1].copy())  # every image under another caption
    assert wrong["all"] < 0.1


def test_image_fidelity_names_a_missing_image_and_a_wrong_shape():
    from crossmodal_edu.world.fidelity import image_fidelity

    data = world.make_dataset(3, 1, seed=12)
    with pytest.raises(ValueError, match="one image per caption: got 2 images and 3 captions"):
        image_fidelity(data.captions, data.images[:2])
    with pytest.raises(ValueError, match=r"shape \(B, H, W, 3\)"):
        image_fidelity(data.captions, data.images[..., 0])

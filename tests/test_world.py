"""Specification of the synthetic world: scenes, captions, vocabulary, patches, dataset, oracle."""

import itertools

import numpy as np
import pytest

from crossmodal_edu.world import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    Vocab,
    default_vocab,
    describe,
    gaussian_blur,
    image_to_patches,
    make_dataset,
    patches_to_image,
    random_scene,
    read_scene,
    read_scenes,
    render,
    scene_accuracy,
)

# Seeds below were never used while developing the oracle, so its accuracy here is a fresh measure.
ORACLE_SEEDS = {1: 27182, 2: 31415}


# --- independent references -----------------------------------------------------------------


def blur_reference(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (B, H, W, 3) images by a direct 2-D float64 sum; black outside."""
    radius = int(np.ceil(3 * sigma))
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-(taps[:, None] ** 2 + taps[None, :] ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()
    _, height, width, _ = images.shape
    padded = np.pad(images.astype(np.float64), ((0, 0), (radius, radius), (radius, radius), (0, 0)))
    out = np.zeros(images.shape, dtype=np.float64)
    for dy, dx in itertools.product(range(2 * radius + 1), repeat=2):
        out += kernel[dy, dx] * padded[:, dy : dy + height, dx : dx + width]
    return out


def blur_and_noise(images: np.ndarray, sigma: float, std: float, seed: int) -> np.ndarray:
    noisy = blur_reference(images, sigma) + np.random.default_rng(seed).normal(0, std, images.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def cell_of_pixel(index: int, image_size: int) -> int:
    """The grid row (or column) a pixel row (or column) belongs to: where its centre falls."""
    return int((index + 0.5) * 3 // image_size)


EXPECTED_POSITION_PHRASES = {
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the middle",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}


def every_single_object_scene() -> list[Scene]:
    return [
        Scene((SceneObject(shape, colour, size, row, col),))
        for shape, colour, size, (row, col) in itertools.product(SHAPES, COLOURS, SIZES, POSITIONS)
    ]


# --- scenes ----------------------------------------------------------------------------------


def test_attribute_vocabularies_are_the_documented_ones():
    assert SHAPES == ("circle", "square", "triangle")
    assert set(COLOURS) == {"red", "green", "blue", "yellow", "magenta", "cyan"}
    assert SIZES == ("small", "large")
    assert set(POSITIONS) == set(itertools.product(range(3), range(3)))


def test_palette_colours_are_well_separated_directions():
    rgb = np.array(list(COLOURS.values()))
    unit = rgb / np.linalg.norm(rgb, axis=1, keepdims=True)
    cosines = unit @ unit.T
    np.fill_diagonal(cosines, -1)
    assert cosines.max() <= np.cos(np.pi / 4) + 1e-9  # at least 45 degrees apart


@pytest.mark.parametrize(
    "field, value, known",
    [("shape", "hexagon", "circle"), ("colour", "orange", "magenta"), ("size", "huge", "small")],
)
def test_unknown_attribute_error_lists_known_values(field, value, known):
    kwargs = dict(shape="circle", colour="red", size="small", row=0, col=0)
    kwargs[field] = value
    with pytest.raises(ValueError, match=value) as error:
        SceneObject(**kwargs)
    assert known in str(error.value)


def test_cell_outside_grid_is_rejected():
    with pytest.raises(ValueError, match="row"):
        SceneObject("circle", "red", "small", 3, 0)


def test_two_objects_in_one_cell_are_rejected():
    a = SceneObject("circle", "red", "small", 1, 1)
    b = SceneObject("square", "blue", "large", 1, 1)
    with pytest.raises(ValueError, match="distinct"):
        Scene((a, b))


def test_random_objects_never_share_a_cell():
    rng = np.random.default_rng(11)
    for num_objects in (2, 3, 9):
        for _ in range(200):
            cells = [obj.cell for obj in random_scene(rng, num_objects).objects]
            assert len(set(cells)) == num_objects


def test_exclude_never_generates_the_excluded_pairs():
    held_out = {("red", "circle"), ("blue", "square"), ("green", "triangle")}
    dataset = make_dataset(2000, num_objects=2, seed=12, exclude=held_out)
    pairs = {(obj.colour, obj.shape) for scene in dataset.scenes for obj in scene.objects}
    assert not pairs & held_out
    all_pairs = set(itertools.product(COLOURS, SHAPES))
    assert pairs == all_pairs - held_out  # everything else still appears


def test_exclude_rejects_unknown_pairs_and_excluding_everything():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="orange"):
        random_scene(rng, exclude={("orange", "circle")})
    with pytest.raises(ValueError, match="nothing is left"):
        random_scene(rng, exclude=set(itertools.product(COLOURS, SHAPES)))


def test_images_are_float32_in_unit_range():
    images = make_dataset(300, num_objects=2, seed=13).images
    assert images.shape == (300, 32, 32, 3)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_background_is_black_and_objects_have_their_colour():
    scene = Scene((SceneObject("square", "yellow", "large", 1, 1),))
    image = render(scene)
    assert np.all(image[0] == 0) and np.all(image[:, 0] == 0)
    assert np.allclose(image[16, 16], COLOURS["yellow"])


def test_every_object_stays_inside_its_own_cell():
    rng = np.random.default_rng(14)
    for image_size in (24, 32, 48):
        for scene in every_single_object_scene():
            obj = scene.objects[0]
            if obj.size != "large":
                continue
            for _ in range(3):
                rows, cols = np.nonzero(render(scene, image_size, rng).max(axis=-1) > 0)
                assert {cell_of_pixel(r, image_size) for r in rows} == {obj.row}
                assert {cell_of_pixel(c, image_size) for c in cols} == {obj.col}


def test_jitter_varies_images_only_with_an_rng():
    scene = Scene((SceneObject("circle", "red", "small", 0, 2),))
    assert np.array_equal(render(scene), render(scene))
    rng = np.random.default_rng(15)
    assert not np.array_equal(render(scene, rng=rng), render(scene, rng=rng))


def test_large_objects_cover_more_pixels_than_small_ones():
    for shape in SHAPES:
        small = render(Scene((SceneObject(shape, "red", "small", 1, 1),))).sum()
        large = render(Scene((SceneObject(shape, "red", "large", 1, 1),))).sum()
        assert large > 1.5 * small


def test_render_rejects_tiny_images():
    with pytest.raises(ValueError, match="image_size"):
        render(Scene(()), image_size=6)


# --- dataset ---------------------------------------------------------------------------------


def test_dataset_is_deterministic_for_a_seed():
    a, b = make_dataset(200, 2, seed=16), make_dataset(200, 2, seed=16)
    assert np.array_equal(a.images, b.images)
    assert a.captions == b.captions and a.scenes == b.scenes
    c = make_dataset(200, 2, seed=17)
    assert not np.array_equal(a.images, c.images)


def test_dataset_aligns_images_captions_and_scenes():
    dataset = make_dataset(50, num_objects=1, seed=18, image_size=48)
    assert len(dataset) == 50 and dataset.images.shape == (50, 48, 48, 3)
    assert len(dataset.captions) == len(dataset.scenes) == 50
    for caption, scene in zip(dataset.captions, dataset.scenes):
        assert caption == describe(scene)  # tier-1 captions do not depend on the rng


def test_dataset_rejects_unsupported_object_counts():
    with pytest.raises(ValueError, match="num_objects"):
        make_dataset(10, num_objects=3)


# --- captions and vocabulary -----------------------------------------------------------------


def test_tier_one_caption_states_size_colour_shape_and_position():
    for scene in every_single_object_scene():
        obj = scene.objects[0]
        expected = f"a {obj.size} {obj.colour} {obj.shape} {EXPECTED_POSITION_PHRASES[obj.cell]}"
        assert describe(scene) == expected


def relation_is_true(relation: str, subject: SceneObject, reference: SceneObject) -> bool:
    (sr, sc), (rr, rc) = subject.cell, reference.cell
    return {
        "left of": sc < rc,
        "right of": sc > rc,
        "above": sr < rr,
        "below": sr > rr,
    }[relation]


def test_tier_two_relation_is_true_of_the_cells():
    rng = np.random.default_rng(19)
    seen = set()
    for _ in range(1000):
        scene = random_scene(rng, num_objects=2)
        a, b = scene.objects
        for caption in (describe(scene), describe(scene, rng)):
            for relation in ("left of", "right of", "above", "below"):
                head = f"a {a.colour} {a.shape} "
                tail = f" a {b.colour} {b.shape}"
                if caption == head + relation + tail:
                    assert relation_is_true(relation, a, b), (caption, scene)
                    seen.add(relation)
                    break
            else:
                pytest.fail(f"caption {caption!r} is not 'a A <relation> a B' for {scene}")
    assert seen == {"left of", "right of", "above", "below"}


def test_random_relation_uses_both_true_relations_when_rows_and_cols_differ():
    scene = Scene((SceneObject("circle", "red", "small", 0, 0), SceneObject("square", "blue", "large", 2, 1)))
    rng = np.random.default_rng(20)
    captions = {describe(scene, rng) for _ in range(50)}
    assert captions == {"a red circle left of a blue square", "a red circle above a blue square"}


def test_describe_rejects_three_objects():
    scene = random_scene(np.random.default_rng(0), num_objects=3)
    with pytest.raises(ValueError, match="1 or 2"):
        describe(scene)


def test_every_caption_word_is_in_the_vocab():
    vocab = default_vocab()
    captions = [describe(scene) for scene in every_single_object_scene()]
    rng = np.random.default_rng(21)
    captions += [describe(random_scene(rng, 2), rng) for _ in range(2000)]
    words = {word for caption in captions for word in caption.split()}
    assert words <= set(vocab.words)
    assert set(vocab.words) - words == {"<pad>"}  # and the vocab holds no word never used


def test_vocab_is_deterministic_with_pad_first():
    vocab = Vocab()
    assert vocab.words == default_vocab().words
    assert vocab.words[0] == "<pad>" and vocab.pad_id == 0
    assert len(vocab) == len(vocab.words) == len(set(vocab.words))


def test_encode_decode_round_trip():
    vocab = default_vocab()
    dataset = make_dataset(100, num_objects=2, seed=22)
    for caption in dataset.captions:
        ids = vocab.encode(caption)
        assert len(ids) == len(caption.split())
        assert all(isinstance(i, int) and 0 < i < len(vocab) for i in ids)
        assert vocab.decode(ids) == caption


def test_encode_batch_pads_at_the_end_and_masks_padding():
    vocab = default_vocab()
    captions = ["a red circle above a blue square", "a small green triangle in the middle", "a red circle"]
    text_tokens, context_mask = vocab.encode_batch(captions)
    assert text_tokens.shape == context_mask.shape == (3, 7)
    assert text_tokens.dtype == np.int64 and context_mask.dtype == bool
    for row, caption in enumerate(captions):
        n = len(caption.split())
        assert context_mask[row].tolist() == [True] * n + [False] * (7 - n)
        assert text_tokens[row, :n].tolist() == vocab.encode(caption)
        assert np.all(text_tokens[row, n:] == vocab.pad_id)
        assert vocab.decode(text_tokens[row]) == caption


def test_encode_batch_honours_max_len_and_rejects_longer_captions():
    vocab = default_vocab()
    text_tokens, context_mask = vocab.encode_batch(["a red circle"], max_len=10)
    assert text_tokens.shape == (1, 10) and context_mask.sum() == 3
    with pytest.raises(ValueError, match="max_len"):
        vocab.encode_batch(["a red circle left of a blue square"], max_len=4)


def test_unknown_word_error_lists_the_known_words():
    vocab = default_vocab()
    with pytest.raises(ValueError, match="purple") as error:
        vocab.encode("a purple circle")
    for word in ("circle", "magenta", "above", "middle"):
        assert word in str(error.value)


def test_decode_rejects_out_of_range_ids():
    vocab = default_vocab()
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([1, len(vocab)])


# --- patches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, patch_size", [((32, 32, 3), 4), ((2, 24, 36, 3), 6), ((3, 32, 32, 3), 8)])
def test_patches_round_trip(shape, patch_size):
    images = np.random.default_rng(23).random(shape).astype(np.float32)
    patches = image_to_patches(images, patch_size)
    height, width = shape[-3], shape[-2]
    num_patches = (height // patch_size) * (width // patch_size)
    assert patches.shape == shape[:-3] + (num_patches, patch_size * patch_size * 3)
    assert np.array_equal(patches_to_image(patches, patch_size, (height, width)), images)


def test_patch_equals_the_explicit_slice_in_raster_order():
    images = np.random.default_rng(24).random((2, 24, 36, 3))
    p = 6
    patches = image_to_patches(images, p)
    cols = 36 // p
    for b in range(2):
        for n in range(patches.shape[1]):
            r, c = divmod(n, cols)
            block = images[b, r * p : (r + 1) * p, c * p : (c + 1) * p]
            expected = [block[i, j, ch] for i in range(p) for j in range(p) for ch in range(3)]
            assert np.array_equal(patches[b, n], expected)


def test_indivisible_image_size_names_both_numbers():
    with pytest.raises(ValueError, match=r"32.*patch_size 5"):
        image_to_patches(np.zeros((32, 32, 3)), 5)
    with pytest.raises(ValueError, match=r"32.*patch_size 5"):
        patches_to_image(np.zeros((36, 75)), 5, 32)


def test_patch_functions_reject_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        image_to_patches(np.zeros((32, 32)), 4)
    with pytest.raises(ValueError, match=r"\(64, 48\)"):
        patches_to_image(np.zeros((60, 48)), 4, 32)


# --- oracle ----------------------------------------------------------------------------------


def test_gaussian_blur_matches_a_direct_convolution():
    images = np.random.default_rng(25).random((2, 20, 20, 3))
    ours = np.moveaxis(gaussian_blur(np.moveaxis(images, -1, 1), 1.1), 1, -1)
    np.testing.assert_allclose(ours, blur_reference(images, 1.1), atol=1e-5)


def test_oracle_reads_every_single_object_exactly():
    scenes = every_single_object_scene()
    images = np.stack([render(scene) for scene in scenes])
    assert read_scenes(images) == scenes


@pytest.mark.parametrize("num_objects", [1, 2])
def test_oracle_reads_clean_jittered_scenes(num_objects):
    dataset = make_dataset(1000, num_objects, seed=ORACLE_SEEDS[num_objects])
    accuracy = scene_accuracy(read_scenes(dataset.images), dataset.scenes)
    assert accuracy["all"] >= 0.99, accuracy


@pytest.mark.parametrize("num_objects", [1, 2])
def test_oracle_reads_blurred_noisy_scenes(num_objects):
    dataset = make_dataset(1000, num_objects, seed=ORACLE_SEEDS[num_objects] + 1)
    degraded = blur_and_noise(dataset.images, sigma=0.8, std=0.05, seed=num_objects)
    accuracy = scene_accuracy(read_scenes(degraded), dataset.scenes)
    assert accuracy["all"] >= 0.99, accuracy  # the brief asks 0.97; measured 1.0 on 10,000


@pytest.mark.parametrize("num_objects", [1, 2])
def test_oracle_still_reads_most_scenes_under_heavier_blur(num_objects):
    # A guard against the prototype's failure: losing accuracy on blurry reconstructions.
    dataset = make_dataset(500, num_objects, seed=ORACLE_SEEDS[num_objects] + 3)
    degraded = blur_and_noise(dataset.images, sigma=1.2, std=0.05, seed=num_objects)
    accuracy = scene_accuracy(read_scenes(degraded), dataset.scenes)
    assert accuracy["colour"] == accuracy["position"] == accuracy["count"] == 1.0, accuracy
    assert accuracy["object"] >= 0.95, accuracy


@pytest.mark.parametrize("image_size", [24, 48])
def test_oracle_reads_other_image_sizes(image_size):
    dataset = make_dataset(300, 2, seed=ORACLE_SEEDS[2] + image_size, image_size=image_size)
    accuracy = scene_accuracy(read_scenes(dataset.images), dataset.scenes)
    assert accuracy["all"] >= 0.99, accuracy


def test_oracle_colour_survives_dimming_and_haze():
    dataset = make_dataset(200, 2, seed=ORACLE_SEEDS[2] + 2)
    washed = np.clip(0.6 * dataset.images + 0.15, 0, 1).astype(np.float32)
    accuracy = scene_accuracy(read_scenes(washed), dataset.scenes)
    assert accuracy["all"] >= 0.97, accuracy


def test_all_black_image_reads_as_no_objects():
    assert read_scene(np.zeros((32, 32, 3), dtype=np.float32)) == Scene(())


def test_noise_images_do_not_crash_and_give_valid_scenes():
    rng = np.random.default_rng(26)
    images = np.concatenate(
        [rng.random((10, 32, 32, 3)), np.clip(rng.normal(0.0, 0.2, (10, 32, 32, 3)), 0, 1)]
    ).astype(np.float32)
    for scene in read_scenes(images):
        assert isinstance(scene, Scene) and len(scene.objects) <= 9


def test_oracle_rejects_images_it_cannot_read():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        read_scene(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="uint8"):
        read_scene(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        read_scene(np.full((32, 32, 3), np.nan))
    with pytest.raises(ValueError, match="square"):
        read_scene(np.zeros((32, 48, 3)))


def test_scene_accuracy_scores_each_attribute():
    red_circle = SceneObject("circle", "red", "small", 0, 0)
    blue_square = SceneObject("square", "blue", "large", 2, 2)
    true = [Scene((red_circle,)), Scene((red_circle, blue_square)), Scene((blue_square,))]
    predicted = [
        Scene((red_circle,)),  # all right
        Scene((SceneObject("circle", "green", "small", 0, 0),)),  # wrong colour, square missing
        Scene((SceneObject("square", "blue", "large", 1, 1),)),  # right object, wrong cell
    ]
    accuracy = scene_accuracy(predicted, true)
    # 4 true objects: the missing square is wrong in everything.
    assert accuracy["shape"] == accuracy["size"] == 3 / 4
    assert accuracy["colour"] == 2 / 4
    assert accuracy["position"] == 2 / 4
    assert accuracy["object"] == 1 / 4
    assert accuracy["count"] == 2 / 3
    assert accuracy["all"] == 1 / 3
    # Object order does not matter.
    assert scene_accuracy([Scene((blue_square, red_circle))], [true[1]])["all"] == 1.0


def test_scene_accuracy_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        scene_accuracy([Scene(())], [])

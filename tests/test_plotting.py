"""Specification of crossmodal_edu.plotting, checked headlessly on the Agg backend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from crossmodal_edu.plotting import plot_attention, show_attention_on_image, show_images  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def weights():
    rng = np.random.default_rng(0)
    w = rng.random((3, 5))
    return w / w.sum(axis=1, keepdims=True)


def test_plot_attention_draws_the_matrix_with_title_and_axis_labels(weights):
    ax = plot_attention(weights, title="Words looking at patches")
    assert isinstance(ax, Axes)
    assert ax.get_title() == "Words looking at patches"
    assert ax.get_ylabel() == "query"
    assert ax.get_xlabel() == "key"
    np.testing.assert_array_equal(ax.images[0].get_array(), weights)


def test_plot_attention_adds_a_colourbar(weights):
    ax = plot_attention(weights)
    assert len(ax.figure.axes) == 2
    assert ax.figure.axes[1].get_ylabel() == "weight"


def test_plot_attention_labels_ticks_when_labels_are_given(weights):
    ax = plot_attention(weights, query_labels=["a", "red", "cat"], key_labels=list("vwxyz"))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "red", "cat"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list("vwxyz")


def test_plot_attention_draws_on_a_given_axes_and_accepts_tensors(weights):
    _, ax = plt.subplots()
    assert plot_attention(torch.from_numpy(weights), ax=ax) is ax


def test_plot_attention_rejects_batched_weights_naming_the_shape():
    with pytest.raises(ValueError, match=r"\(Lq, Lk\).*\(2, 3, 5\)"):
        plot_attention(np.zeros((2, 3, 5)))


def test_plot_attention_rejects_wrong_number_of_labels(weights):
    with pytest.raises(ValueError, match="key_labels"):
        plot_attention(weights, key_labels=["a", "b"])


@pytest.mark.parametrize("flat", [False, True])
def test_attention_on_image_repeats_each_patch_weight_over_its_pixels(flat):
    image = np.random.default_rng(1).random((8, 12, 3))
    patch_weights = np.arange(6.0).reshape(2, 3) / 15
    ax = show_attention_on_image(image, patch_weights.ravel() if flat else patch_weights, grid=(2, 3))
    assert isinstance(ax, Axes)
    assert ax.get_title() == "Attention over image patches"
    np.testing.assert_array_equal(ax.images[0].get_array(), image)
    heat = np.asarray(ax.images[1].get_array())
    assert heat.shape == (8, 12)
    for r in range(8):
        for c in range(12):
            assert heat[r, c] == patch_weights[r // 4, c // 4]


def test_attention_on_image_uses_the_given_title_and_alpha():
    ax = show_attention_on_image(np.zeros((4, 4, 3)), np.ones(4) / 4, grid=(2, 2), title="the word 'red'", alpha=0.3)
    assert ax.get_title() == "the word 'red'"
    assert ax.images[1].get_alpha() == 0.3


@pytest.mark.parametrize(
    "image_shape, weights_shape, grid, expected",
    [
        ((8, 12, 3), (4, 3), (2, 3), ["(2, 3)", "(4, 3)"]),
        ((8, 12, 3), (5,), (2, 3), ["(6,)", "(5,)"]),
        ((9, 12, 3), (2, 3), (2, 3), ["(9, 12, 3)", "divisible"]),
        ((8, 12), (2, 3), (2, 3), ["(H, W, 3)", "(8, 12)"]),
    ],
)
def test_attention_on_image_rejects_sizes_that_do_not_fit(image_shape, weights_shape, grid, expected):
    with pytest.raises(ValueError) as info:
        show_attention_on_image(np.zeros(image_shape), np.zeros(weights_shape), grid)
    for text in expected:
        assert text in str(info.value)


def test_show_images_draws_a_grid_with_titles_and_no_axes():
    images = np.random.default_rng(2).random((5, 6, 6, 3))
    fig = show_images(images, titles=[f"image {i}" for i in range(5)], ncols=3, suptitle="Samples")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # a 2 x 3 grid, the last cell left empty
    drawn = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in drawn] == [f"image {i}" for i in range(5)]
    assert all(not ax.axison for ax in fig.axes)
    np.testing.assert_array_equal(drawn[3].images[0].get_array(), images[3])
    assert [t.get_text() for t in fig.texts] == ["Samples"]


def test_show_images_accepts_a_list():
    fig = show_images([np.zeros((4, 4, 3)), np.ones((4, 4, 3))])
    assert len([ax for ax in fig.axes if ax.images]) == 2


@pytest.mark.parametrize(
    "images, titles, expected",
    [
        (np.zeros((2, 4, 4)), None, "(4, 4)"),
        (np.zeros((2, 4, 4, 3)), ["only one"], "one entry per image"),
        (np.zeros((0, 4, 4, 3)), None, "empty"),
    ],
)
def test_show_images_rejects_bad_input(images, titles, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        show_images(images, titles=titles)


def test_plot_attention_names_axes_and_colour_scale_as_asked():
    scores = np.array([[1.0, -2.0], [0.5, 3.0]])
    ax = plot_attention(scores, xlabel="patch (answers)", ylabel="word (asks)", value_label="score")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("patch (answers)", "word (asks)")
    assert ax.figure.axes[1].get_ylabel() == "score"
    assert ax.images[0].get_clim()[0] == -2.0, "negative scores must not be clipped at 0"


def test_show_attention_on_image_uses_a_shared_scale_when_given():
    image = np.zeros((8, 8, 3))
    ax = show_attention_on_image(image, np.full(4, 0.25), grid=(2, 2), vmax=1.0)
    assert ax.images[1].get_clim() == (0.0, 1.0)


def test_show_images_wraps_long_titles_onto_several_lines():
    caption = "a magenta circle right of a cyan square"
    fig = show_images(np.zeros((2, 8, 8, 3)), titles=[caption, "short"], size=2.0)
    wrapped = fig.axes[0].get_title()
    assert "\n" in wrapped and wrapped.replace("\n", " ") == caption
    assert fig.axes[1].get_title() == "short"


def test_word_maps_share_one_colour_scale_and_name_a_shape_mistake():
    from crossmodal_edu.plotting import show_word_maps

    image = np.zeros((32, 32, 3), dtype=np.float32)
    maps = np.random.default_rng(0).random((8, 8, 8))  # (L, h, w), the last rows padding
    fig = show_word_maps(image, maps, ["a", "red", "circle"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["'a'", "'red'", "'circle'"]
    assert {ax.images[-1].get_clim() for ax in panels} == {(0.0, float(maps[:3].max()))}
    assert len(fig.axes) == 4  # three panels and one colour bar
    with pytest.raises(ValueError, match=r"word_maps must have shape \(L, h, w\) with L >= 3"):
        show_word_maps(image, maps[:2], ["a", "red", "circle"])

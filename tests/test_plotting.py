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


# --- token grids and the VQ-VAE diagram (lesson 05) -------------------------------------------

from crossmodal_edu.plotting import BACKGROUND_GREY, draw_vq_vae, show_token_grid, token_colours  # noqa: E402


def _luminance(rgb):
    r, g, b = matplotlib.colors.to_rgb(rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


@pytest.fixture
def grid():
    rng = np.random.default_rng(3)
    tokens = np.full((8, 8), 109)                      # a background code, and an object of others
    tokens[2:6, 1:5] = rng.choice(np.arange(256), size=(4, 4), replace=False)
    return tokens


def test_token_colours_give_the_background_grey_and_every_other_code_its_own_colour(grid):
    colours = token_colours(grid, background=109)
    assert set(colours) == set(np.unique(grid).tolist())
    assert colours[109] == BACKGROUND_GREY
    others = [colour for code, colour in colours.items() if code != 109]
    assert len(set(others)) == len(others), "two codes share a colour"
    assert all(max(c) - min(c) > 0.05 for c in others), "a non-background code got a grey"


def test_token_grid_paints_each_cell_in_its_codes_colour_and_writes_its_id(grid):
    colours = token_colours(grid, background=109)
    ax = show_token_grid(grid, background=109, colours=colours, title="its tokens")
    painted = ax.images[0].get_array()                 # (8, 8, 3)
    for (r, c), code in np.ndenumerate(grid):
        np.testing.assert_allclose(painted[r, c], colours[code])
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert written == {(r, c): str(code) for (r, c), code in np.ndenumerate(grid)}
    assert ax.get_title() == "its tokens"
    assert ax.get_xlabel() == "token column" and ax.get_ylabel() == "token row"


def test_token_ids_contrast_with_the_colour_of_their_cell(grid):
    ax = show_token_grid(grid, background=109)
    painted = ax.images[0].get_array()
    for text in ax.texts:
        c, r = (round(v) for v in text.get_position())
        if grid[r, c] != 109:
            assert abs(_luminance(text.get_color()) - _luminance(painted[r, c])) > 0.35, text.get_text()


def test_shared_colours_give_one_code_one_colour_in_every_grid(grid):
    other = np.roll(grid, 3, axis=1)
    other[0, 0] = 7                                    # a code only the second grid has
    colours = token_colours(np.stack([grid, other]), background=109)
    a = show_token_grid(grid, background=109, colours=colours).images[0].get_array()
    b = show_token_grid(other, background=109, colours=colours).images[0].get_array()
    code = int(grid[2, 1])
    np.testing.assert_allclose(a[2, 1], b[2, 4])      # the same code, moved three columns
    assert other[2, 4] == code


def test_token_grid_rejects_a_batch_and_a_palette_without_its_codes(grid):
    with pytest.raises(ValueError, match=r"\(h, w\).*\(3, 8, 8\)"):
        show_token_grid(np.stack([grid] * 3))
    with pytest.raises(ValueError, match="no colour for codes"):
        show_token_grid(grid, colours={109: BACKGROUND_GREY})


def test_vq_vae_diagram_names_every_part_and_the_three_training_terms():
    ax = draw_vq_vae(commitment=0.25)
    text = " ".join(t.get_text() for t in ax.texts)
    for part in ["encoder", "nearest code", "decoder", "codebook", "image_tokens",
                 "reconstruction loss", "commitment loss", "EMA update", "straight-through"]:
        assert part in text, part
    assert "0.25" in text
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "forward pass", "gradient (backward pass)", "codebook update without gradient"]
    arrows = [child.arrow_patch for child in ax.get_children()
              if isinstance(child, matplotlib.text.Annotation) and child.arrow_patch is not None]
    red = [a for a in arrows if matplotlib.colors.same_color(a.get_edgecolor(), "tab:red")]
    green = [a for a in arrows if matplotlib.colors.same_color(a.get_edgecolor(), "tab:green")]
    assert len(red) >= 4 and len(green) == 1
    assert ax.get_title()

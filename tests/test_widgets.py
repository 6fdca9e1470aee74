"""The explorers, driven headless: change a control, check the data and the figure it shows."""
import sys

import numpy as np
import pytest
import torch

from crossmodal_edu.torch_attention import MultiHeadCrossAttention
from crossmodal_edu.widgets import AttentionExplorer, HeadExplorer

GRID = (3, 4)  # 12 patches, not square, so rows and columns cannot be swapped unnoticed


def _softmax64(scores):
    """An independent float64 softmax of one row, written as a loop."""
    m = max(scores)
    e = [np.exp(s - m) for s in scores]
    return np.array([v / sum(e) for v in e])


def _explorer(**kwargs):
    rng = np.random.default_rng(7)
    words = ["a", "red", "circle", "top", "<pad>", "<pad>"]
    word_vectors = rng.normal(size=(6, 5)) * 2          # (L_words, d_k)
    patch_vectors = rng.normal(size=(12, 5))             # (Lk_patches, d_k)
    image = rng.random((12, 16, 3)).astype(np.float32)   # 4 x 4 pixel patches on a (3, 4) grid
    mask = np.array([True, True, True, True, False, False])
    return AttentionExplorer(image, words, word_vectors, patch_vectors, GRID, context_mask=mask,
                             word="red", **kwargs), word_vectors, patch_vectors


def _entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_word_weights_are_the_scaled_softmax_of_the_words_query_against_every_patch():
    explorer, wv, pv = _explorer(scale=1.7)
    expected = _softmax64([1.7 * float(wv[1] @ pv[j]) / np.sqrt(5) for j in range(12)])
    np.testing.assert_allclose(explorer.word_weights, expected, rtol=1e-12)


def test_a_higher_scale_gives_sharper_weights_and_zero_gives_uniform():
    explorer, _, _ = _explorer()
    explorer.widget()
    entropies = []
    for value in (0.0, 0.5, 1.0, 2.0, 3.0):
        explorer.controls["scale"].value = value              # what dragging the slider does
        entropies.append(_entropy(explorer.word_weights))
    assert entropies[0] == pytest.approx(np.log(12))
    assert all(a > b for a, b in zip(entropies, entropies[1:])), entropies


def test_masked_keys_get_zero_weight_when_the_image_asks_the_caption():
    explorer, _, _ = _explorer()
    explorer.widget()
    explorer.controls["mask"].value = True
    on = explorer.image_asks_weights
    assert on.shape == (12, 6)
    assert np.all(on[:, 4:] == 0)
    np.testing.assert_allclose(on.sum(-1), 1)
    explorer.controls["mask"].value = False
    off = explorer.image_asks_weights
    assert np.all(off[:, 4:] > 0)
    np.testing.assert_allclose(off.sum(-1), 1)


def test_picking_another_word_changes_the_weights_title_and_picture():
    explorer, wv, pv = _explorer()
    box = explorer.widget()
    before_png = explorer._image_widget.value
    explorer.controls["word"].value = "top"
    expected = _softmax64([float(wv[3] @ pv[j]) / np.sqrt(5) for j in range(12)])
    np.testing.assert_allclose(explorer.word_weights, expected, rtol=1e-12)
    fig = explorer.figure()
    on_image, heatmap = fig.axes[:2]                         # then come their colour bars
    assert on_image.get_title().startswith('text asks image: "top"')
    heat = on_image.images[1].get_array()                    # (H, W), one weight per patch's pixels
    np.testing.assert_allclose(heat[::4, ::4], expected.reshape(GRID))
    np.testing.assert_allclose(heatmap.images[0].get_array(), explorer.image_asks_weights)
    assert explorer._image_widget.value != before_png        # the widget was redrawn
    assert box.children[1] is explorer._image_widget


def test_padding_is_not_offered_as_a_word_to_explore():
    explorer, _, _ = _explorer()
    assert explorer.choices == ["a", "red", "circle", "top"]
    with pytest.raises(ValueError, match="real words"):
        AttentionExplorer(explorer.image, explorer.words, explorer.word_vectors, explorer.patch_vectors,
                          GRID, context_mask=explorer.context_mask, word="<pad>")


def test_mismatched_shapes_are_named():
    explorer, wv, pv = _explorer()
    with pytest.raises(ValueError, match=r"patch_vectors must have shape \(Lk_patches, d_k\)"):
        AttentionExplorer(explorer.image, explorer.words, wv, pv[:, :3], GRID)
    with pytest.raises(ValueError, match="grid"):
        AttentionExplorer(explorer.image, explorer.words, wv, pv, (2, 2))


def _head_explorer(**kwargs):
    torch.manual_seed(0)
    module = MultiHeadCrossAttention(query_dim=10, context_dim=6, num_heads=3, head_dim=4).double()
    x = torch.randn(1, 5, 10, dtype=torch.float64)           # (1, Lq, query_dim)
    context = torch.randn(1, 12, 6, dtype=torch.float64)     # (1, Lk, context_dim)
    context_mask = torch.arange(12)[None] < 9                 # (1, Lk): 3 pads
    explorer = HeadExplorer(module, x, context, context_mask, [f"w{i}" for i in range(5)], **kwargs)
    return explorer, module, x, context, context_mask


def _head_reference(module, x, context, context_mask, head, query):
    """The head's weights from the module's own projections, by a float64 loop."""
    q = module.to_q(x)[0, query].view(3, 4)[head]
    k = module.to_k(context)[0].view(12, 3, 4)[:, head]
    scores = [float(q @ k[j]) / 2.0 if context_mask[0, j] else -np.inf for j in range(12)]
    return _softmax64(scores)


def test_choosing_a_head_and_a_query_shows_that_heads_row():
    explorer, module, x, context, mask = _head_explorer()
    explorer.widget()
    with torch.no_grad():
        for head, query in [(0, 0), (2, 3), (1, 4)]:
            explorer.controls["head"].value = head
            explorer.controls["query"].value = f"w{query}"
            np.testing.assert_allclose(explorer.query_weights,
                                       _head_reference(module, x, context, mask, head, query), atol=1e-12)
            assert np.all(explorer.head_weights[:, 9:] == 0)             # padded keys, every query
            fig = explorer.figure()
            assert fig.axes[0].get_title() == f"head {head} of 3"
            np.testing.assert_allclose(fig.axes[0].images[0].get_array(), explorer.head_weights)
            bars = [patch.get_height() for patch in fig.axes[1].patches]
            np.testing.assert_allclose(bars, explorer.query_weights)


def test_heads_differ():
    explorer, *_ = _head_explorer()
    assert not np.allclose(explorer.weights[0], explorer.weights[1])


def test_head_explorer_draws_on_the_image_when_keys_are_patches():
    image = np.random.default_rng(0).random((12, 16, 3))
    explorer, *_ = _head_explorer(image=image, grid=GRID, head=1, query="w2")
    fig = explorer.figure()
    heat = fig.axes[1].images[1].get_array()
    np.testing.assert_allclose(heat[::4, ::4], explorer.query_weights.reshape(GRID))
    assert fig.axes[1].get_title().startswith('head 1: "w2"')


def test_show_displays_the_widget_and_a_static_figure_in_one_output(monkeypatch):
    explorer, _, _ = _explorer()
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    explorer.show()
    (bundle,) = shown
    assert bundle["image/png"]                                  # what GitHub and nbviewer render
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"]


def test_show_falls_back_to_the_static_figure_without_ipywidgets(monkeypatch):
    explorer, *_ = _head_explorer()
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)          # import ipywidgets -> ImportError
    explorer.show()
    (bundle,) = shown
    assert bundle["image/png"] and "application/vnd.jupyter.widget-view+json" not in bundle


# --- the prompt playground (lesson 06) --------------------------------------------------------------


def _playground(**kwargs):
    import torch

    from crossmodal_edu.dalle import DecoderConfig, build_decoder, load_tokenizer
    from crossmodal_edu.widgets import PromptPlayground

    torch.manual_seed(0)
    decoder = build_decoder(DecoderConfig(d_model=32, layers=1, text_layers=1, mlp_ratio=2)).eval()
    return PromptPlayground(decoder, load_tokenizer(), num_images=2, **kwargs)


def test_playground_generates_on_the_button_not_on_every_change():
    playground = _playground()
    playground.widget()
    first = playground.images.copy()
    assert first.shape == (2, 32, 32, 3)
    playground.controls["guidance_scale"].value = 2.0        # a slider move alone does not sample
    playground.controls["caption"].value = "a small blue square in the middle"
    assert playground.guidance_scale == 2.0 and np.array_equal(playground.images, first)
    picture = playground._image_widget.value
    playground.controls["generate"].click()
    assert playground.generation.captions[0] == "a small blue square in the middle"
    assert not np.array_equal(playground.images, first)
    assert playground._image_widget.value != picture


def test_playground_names_unknown_words_and_lists_the_vocabulary():
    playground = _playground()
    playground.caption = "a small purple circle at the top"
    playground.generate(redraw=False)
    assert playground.images is None
    assert "Unknown word 'purple'" in playground.message and "magenta" in playground.message
    assert playground.figure() is not None                    # the message is drawn, nothing crashes
    playground.caption = "a red circle left of a blue square at the top"
    playground.generate(redraw=False)
    assert "at most 8" in playground.message
    playground.caption = "a small red circle at the top"
    playground.generate(redraw=False)
    assert playground.message is None and playground.images is not None


def test_playground_lets_the_learner_choose_the_model_that_draws():
    import torch

    from crossmodal_edu.dalle import DecoderConfig, build_decoder, load_tokenizer
    from crossmodal_edu.widgets import PromptPlayground

    small = dict(d_model=32, layers=1, text_layers=1, mlp_ratio=2)
    torch.manual_seed(0)
    cross = build_decoder(DecoderConfig(**small)).eval()
    joint = build_decoder(DecoderConfig(**small, conditioning="joint")).eval()
    playground = PromptPlayground({"cross-attention": cross, "joint attention": joint}, load_tokenizer(), num_images=2)
    playground.widget()
    assert playground.model == "cross-attention" and playground.decoder is cross
    first = playground.images.copy()
    _frontend_sets(playground.controls["model"], index=1)           # the menu sends the chosen index
    assert playground.model == "joint attention" and playground.decoder is joint
    assert np.array_equal(playground.images, first)                 # choosing alone does not sample
    _frontend_clicks(playground.controls["generate"])
    assert not np.array_equal(playground.images, first)             # same seed, another model: other tokens
    assert "joint attention" in playground.figure()._suptitle.get_text()
    with pytest.raises(ValueError, match=r"model must be one of \['cross-attention', 'joint attention'\], got 'mmdit'"):
        PromptPlayground({"cross-attention": cross, "joint attention": joint}, load_tokenizer(), model="mmdit")
    with pytest.raises(ValueError, match="empty dict"):
        PromptPlayground({}, load_tokenizer())
    single = _playground()
    single.widget()
    assert "model" not in single.controls  # one decoder: no menu


def test_playground_draws_one_map_per_caption_word():
    playground = _playground(caption="a large red circle at the top left")
    figure = playground.figure()
    titled = [ax.get_title() for ax in figure.axes if ax.get_title().startswith("'")]
    assert titled == [f"'{w}'" for w in "a large red circle at the top left".split()]


# --- what a browser sends: the widget protocol's messages (Colab runs ipywidgets 7.7.1, JupyterLab 8.x) ---


def _frontend_sets(control, **state):
    """A learner moves a control in the browser: the frontend sends the new state over the widget's comm
    (selection widgets send the chosen ``index``, the others their ``value``)."""
    control._handle_msg({"content": {"data": {"method": "update", "state": state}}, "buffers": []})


def _frontend_clicks(button):
    button._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "click"}}}, "buffers": []})


def test_messages_from_the_frontend_drive_the_attention_explorer():
    explorer, wv, pv = _explorer()
    explorer.widget()
    picture = explorer._image_widget.value
    _frontend_sets(explorer.controls["word"], index=explorer.choices.index("top"))
    _frontend_sets(explorer.controls["scale"], value=2.0)
    _frontend_sets(explorer.controls["mask"], value=False)
    assert (explorer.word, explorer.scale, explorer.mask) == ("top", 2.0, False)
    expected = _softmax64([2.0 * float(wv[3] @ pv[j]) / np.sqrt(5) for j in range(12)])
    np.testing.assert_allclose(explorer.word_weights, expected, rtol=1e-12)
    assert np.all(explorer.image_asks_weights[:, 4:] > 0)        # the padding is no longer masked
    assert explorer._image_widget.value != picture


def test_messages_from_the_frontend_drive_the_head_explorer():
    explorer, module, x, context, mask = _head_explorer()
    explorer.widget()
    _frontend_sets(explorer.controls["head"], index=2)
    _frontend_sets(explorer.controls["query"], index=3)
    assert (explorer.head, explorer.query) == (2, "w3")
    with torch.no_grad():
        np.testing.assert_allclose(explorer.query_weights, _head_reference(module, x, context, mask, 2, 3), atol=1e-12)


def test_messages_from_the_frontend_drive_the_playground():
    playground = _playground()
    playground.widget()
    first = playground.images.copy()
    _frontend_sets(playground.controls["caption"], value="a small blue square in the middle")
    _frontend_sets(playground.controls["temperature"], value=0.5)
    assert np.array_equal(playground.images, first)              # nothing is sampled before the click
    _frontend_clicks(playground.controls["generate"])
    assert playground.generation.captions[0] == "a small blue square in the middle"
    assert playground.temperature == 0.5 and not np.array_equal(playground.images, first)

r"""Interactive explorers for the lessons, with a static figure wherever widgets cannot run.

* :class:`AttentionExplorer` (lesson 02): pick a caption word and see its attention over the image
  patches; a slider scales the scores (sharpness), a toggle masks the caption's padding when the
  image asks the caption.
* :class:`HeadExplorer` (lesson 03): pick a head and a query token of a ``MultiHeadCrossAttention``
  and see that head's map.
* :class:`PromptPlayground` (lesson 06): choose a trained decoder, type a caption, set the guidance
  scale and temperature, press Generate, and see the images and, per word, where the first image read it.

Each explorer keeps its logic apart from its drawing, so tests can drive it without a browser:
the ``state`` attributes (``word``, ``scale``, ``mask`` / ``head``, ``query``) and the arrays they
select (``word_weights``, ``image_asks_weights`` / ``head_weights``, ``query_weights``) are plain
Python and NumPy; :meth:`figure` draws the current state as a matplotlib ``Figure``; :meth:`widget`
builds ipywidgets controls whose callbacks set the state and redraw; :meth:`show` displays both at
once: a widget where a widget frontend runs (JupyterLab, Colab with its custom widget manager),
and, in the same output, a PNG of the current state that GitHub, nbviewer and untrusted notebooks
show instead. Without ipywidgets, :meth:`show` displays the PNG alone.

Used in notebooks/02_cross_modal_attention.ipynb, notebooks/03_cross_attention_in_pytorch.ipynb and
notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from crossmodal_edu._checks import fmt_shape
from crossmodal_edu.compare import to_numpy
from crossmodal_edu.numpy_attention import softmax
from crossmodal_edu.plotting import plot_attention, show_attention_on_image, show_word_maps

__all__ = ["AttentionExplorer", "HeadExplorer", "PromptPlayground", "figure_png"]

_DPI = 80


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (drawn with Agg; no pyplot window, no display)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    return buffer.getvalue()


def _unique_labels(labels: Sequence[str]) -> list[str]:
    """Make repeated labels distinguishable in a drop-down: "a", "a (2)"."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


class _Explorer:
    """Shared plumbing: controls -> state -> redraw; widget and static fallback."""

    title = "explorer"

    def __init__(self) -> None:
        self.controls: dict[str, Any] = {}
        self._image_widget = None

    def figure(self) -> Figure:  # pragma: no cover - every explorer draws its own
        raise NotImplementedError

    def _make_controls(self, widgets: Any) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def set(self, name: str, value: Any) -> None:
        """Change one piece of state (``"word"``, ``"scale"``, ...) and redraw: what a control does."""
        setattr(self, name, value)
        self.redraw()

    def redraw(self) -> None:
        """Draw the current state into the widget's picture (if the widget was built)."""
        if self._image_widget is not None:
            self._image_widget.value = figure_png(self.figure())

    def widget(self) -> Any:
        """The ipywidgets box: controls above the picture. Raises ImportError without ipywidgets."""
        import ipywidgets as widgets

        controls = self._make_controls(widgets)
        self._image_widget = widgets.Image(format="png", value=figure_png(self.figure()))
        return widgets.VBox([widgets.HBox(controls), self._image_widget])

    def _bind(self, control: Any, name: str) -> Any:
        """Register ``control`` as the one that sets ``self.<name>``."""
        control.observe(lambda change: self.set(name, change["new"]), names="value")
        self.controls[name] = control
        return control

    def show(self) -> None:
        """Display the explorer: a live widget where a widget frontend runs, a static figure elsewhere.

        One output carries both: the widget view and a PNG of the current state (plus a line of
        text). Frontends that render widgets pick the widget; GitHub, nbviewer and notebooks not yet
        trusted pick the PNG. Without ipywidgets, the PNG alone is displayed.
        """
        from IPython.display import display

        png = figure_png(self.figure())
        bundle = {"text/plain": f"<{self.title}: run the notebook to interact>",
                  "image/png": base64.b64encode(png).decode("ascii")}
        try:
            box = self.widget()
        except ImportError:
            display({k: v for k, v in bundle.items()}, raw=True)
            return
        bundle["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2, "version_minor": 0, "model_id": box.model_id}
        display(bundle, raw=True)


class AttentionExplorer(_Explorer):
    r"""Lesson 02's caption and image, explored: where does each word look, and how sharply?

    .. math::

        \mathrm{weights} = \mathrm{softmax}\!\left(s\,\frac{Q K^\top}{\sqrt{d_k}}\right)

    with the score scale ``s`` (the slider; ``s = 1`` is the lesson's attention, ``s = 0`` is uniform,
    larger ``s`` is sharper: ``1/s`` is the softmax temperature).

    Two directions from one pair of projections:

    * **text asks image** (``word_weights``, ``(Lk_patches,)``): the chosen word's query against every
      patch's key, drawn on the image;
    * **image asks text** (``image_asks_weights``, ``(Lk_patches, L_words)``): every patch's key
      vector used as a query against the words' query vectors used as keys, a softmax over the
      caption's words; with ``mask`` on, the padding (``context_mask`` False) gets exactly zero.

    Shapes: image ``(H, W, 3)``; words ``L_words`` labels (the padded caption); word_vectors
    ``(L_words, d_k)`` (the words projected, ``x @ W_Q``); patch_vectors ``(Lk_patches, d_k)`` (the
    patches projected, ``context @ W_K``); grid ``(grid_h, grid_w)`` with ``grid_h * grid_w =
    Lk_patches``; context_mask ``(L_words,)`` bool, True = real word (default: all real).

    Derived in notebooks/02_cross_modal_attention.ipynb, whose hand-made ``W_Q`` and ``W_K`` it explores.
    """

    title = "attention explorer"

    def __init__(
        self,
        image: Any,
        words: Sequence[str],
        word_vectors: Any,
        patch_vectors: Any,
        grid: tuple[int, int],
        context_mask: Optional[Any] = None,
        word: Optional[str] = None,
        scale: float = 1.0,
        mask: bool = True,
    ) -> None:
        super().__init__()
        self.image = to_numpy(image)
        self.words = [str(w) for w in words]
        self.word_vectors = np.asarray(to_numpy(word_vectors), dtype=np.float64)
        self.patch_vectors = np.asarray(to_numpy(patch_vectors), dtype=np.float64)
        self.grid = (int(grid[0]), int(grid[1]))
        L = len(self.words)
        if self.word_vectors.shape[:1] != (L,) or self.word_vectors.ndim != 2:
            raise ValueError(f"word_vectors must have shape (L_words, d_k) = ({L}, d_k), one row per word: "
                             f"word_vectors has shape {fmt_shape(self.word_vectors.shape)}")
        if self.patch_vectors.ndim != 2 or self.patch_vectors.shape[1] != self.word_vectors.shape[1]:
            raise ValueError(f"patch_vectors must have shape (Lk_patches, d_k) with the words' d_k = "
                             f"{self.word_vectors.shape[1]}: patch_vectors has shape "
                             f"{fmt_shape(self.patch_vectors.shape)}")
        if self.grid[0] * self.grid[1] != self.patch_vectors.shape[0]:
            raise ValueError(f"grid {self.grid} has {self.grid[0] * self.grid[1]} patches but patch_vectors "
                             f"has {self.patch_vectors.shape[0]} rows")
        self.context_mask = (np.ones(L, dtype=bool) if context_mask is None
                             else np.asarray(to_numpy(context_mask), dtype=bool).reshape(-1))
        if self.context_mask.shape != (L,):
            raise ValueError(f"context_mask must have shape ({L},), one flag per word (True = real word): "
                             f"context_mask has shape {fmt_shape(self.context_mask.shape)}")
        self.labels = _unique_labels(self.words)
        self.choices = [self.labels[i] for i in np.flatnonzero(self.context_mask)]  # pads never ask
        if not self.choices:
            raise ValueError("context_mask marks every word as padding: there is no word to explore")
        self.word = word if word is not None else self.choices[0]
        if self.word not in self.choices:
            raise ValueError(f"word must be one of the caption's real words {self.choices}: got {self.word!r}")
        self.scale = float(scale)
        self.mask = bool(mask)

    # --- the data -------------------------------------------------------------------------------
    def _scores(self) -> np.ndarray:
        d_k = self.word_vectors.shape[1]
        return self.scale * self.word_vectors @ self.patch_vectors.T / math.sqrt(d_k)  # (L_words, Lk)

    @property
    def word_weights(self) -> np.ndarray:
        """The chosen word's weights over the patches: ``(Lk_patches,)``, summing to 1."""
        i = self.labels.index(self.word)
        return softmax(self._scores()[i])  # (Lk,)

    @property
    def image_asks_weights(self) -> np.ndarray:
        """Each patch's weights over the caption's words: ``(Lk_patches, L_words)``; padding gets
        exactly 0 while ``mask`` is on."""
        scores = self._scores().T  # (Lk, L_words): patches ask, words answer
        if self.mask:
            scores = np.where(self.context_mask[None, :], scores, -np.inf)
        return softmax(scores, axis=-1)  # (Lk, L_words)

    # --- the drawing ----------------------------------------------------------------------------
    def figure(self) -> Figure:
        """Two panels: the chosen word's weights on the image (left); every patch's weights over the
        words, the chosen word's column outlined (right)."""
        fig = Figure(figsize=(10.5, 4.2), dpi=_DPI)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
        w = self.word_weights
        show_attention_on_image(self.image, w, self.grid, ax=left,
                                title=f'text asks image: "{self.word}" (scale {self.scale:g}, max {w.max():.2f})')
        mask_state = "padding masked" if self.mask else "padding NOT masked"
        plot_attention(self.image_asks_weights, None, self.words, ax=right,
                       title=f"image asks text ({mask_state})",
                       xlabel="word (answers)", ylabel="patch (asks), raster order")
        col = self.labels.index(self.word)
        right.add_patch(Rectangle((col - 0.5, -0.5), 1, self.patch_vectors.shape[0], fill=False,
                                  ec="red", lw=1.5))
        fig.tight_layout()
        return fig

    def _make_controls(self, widgets: Any) -> list[Any]:
        word = widgets.Dropdown(options=self.choices, value=self.word, description="word")
        scale = widgets.FloatSlider(value=self.scale, min=0.0, max=3.0, step=0.1, description="scale",
                                    continuous_update=False, readout_format=".1f")
        mask = widgets.Checkbox(value=self.mask, description="mask the padding")
        return [self._bind(word, "word"), self._bind(scale, "scale"), self._bind(mask, "mask")]


class HeadExplorer(_Explorer):
    r"""One head at a time: a ``MultiHeadCrossAttention``'s per-head weights, for one query token.

    .. math::

        \mathrm{weights}_h = \mathrm{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{\mathrm{head\_dim}}}
        + M\right)

    computed once by ``module(x, context, context_mask, need_weights=True)``; the controls only choose
    what to show. ``head_weights`` is the chosen head's map ``(Lq, Lk)``; ``query_weights`` the chosen
    query's row ``(Lk,)``, drawn on ``image`` when one is given (keys are then its patches, on
    ``grid``) and as bars over the keys otherwise.

    Shapes: x ``(1, Lq, query_dim)``; context ``(1, Lk, context_dim)``; context_mask ``(1, Lk)`` bool,
    True = real token; query_labels ``Lq`` and key_labels ``Lk`` strings (defaults: numbers).

    Derived in notebooks/03_cross_attention_in_pytorch.ipynb.
    """

    title = "head explorer"

    def __init__(
        self,
        module: Any,
        x: Any,
        context: Any,
        context_mask: Optional[Any] = None,
        query_labels: Optional[Sequence[str]] = None,
        key_labels: Optional[Sequence[str]] = None,
        image: Optional[Any] = None,
        grid: Optional[tuple[int, int]] = None,
        head: int = 0,
        query: Optional[str] = None,
    ) -> None:
        import torch

        super().__init__()
        if x.ndim != 3 or x.shape[0] != 1:
            raise ValueError(f"x must have shape (1, Lq, query_dim), one example: x has shape "
                             f"{fmt_shape(tuple(x.shape))}; pick one with x[i:i + 1]")
        with torch.no_grad():
            _, weights = module(x, context, context_mask, need_weights=True)  # (1, num_heads, Lq, Lk)
        self.weights = weights[0].detach().cpu().double().numpy()  # (num_heads, Lq, Lk)
        self.num_heads, Lq, Lk = self.weights.shape
        self.query_labels = _unique_labels([str(s) for s in query_labels] if query_labels is not None
                                           else [f"query {i}" for i in range(Lq)])
        self.key_labels = [str(s) for s in key_labels] if key_labels is not None else [str(j) for j in range(Lk)]
        if len(self.query_labels) != Lq or len(self.key_labels) != Lk:
            raise ValueError(f"need {Lq} query labels and {Lk} key labels: got {len(self.query_labels)} "
                             f"and {len(self.key_labels)}")
        self.image = None if image is None else to_numpy(image)
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        if self.image is not None and (self.grid is None or self.grid[0] * self.grid[1] != Lk):
            raise ValueError(f"with an image, grid must cut it into Lk = {Lk} patches: got grid {grid}")
        if not 0 <= head < self.num_heads:
            raise ValueError(f"head must be in 0..{self.num_heads - 1}: got {head}")
        self.head = int(head)
        self.query = query if query is not None else self.query_labels[0]
        if self.query not in self.query_labels:
            raise ValueError(f"query must be one of {self.query_labels}: got {self.query!r}")

    @property
    def head_weights(self) -> np.ndarray:
        """The chosen head's weights: ``(Lq, Lk)``."""
        return self.weights[self.head]

    @property
    def query_weights(self) -> np.ndarray:
        """The chosen head's weights for the chosen query: ``(Lk,)``."""
        return self.head_weights[self.query_labels.index(self.query)]

    def figure(self) -> Figure:
        """Two panels: the chosen head's map with the query's row outlined (left); that row (right),
        on the image or as bars."""
        fig = Figure(figsize=(10.5, 4.0), dpi=_DPI)
        left, right = fig.subplots(1, 2)
        row = self.query_labels.index(self.query)
        key_labels = self.key_labels if len(self.key_labels) <= 24 else None
        plot_attention(self.head_weights, self.query_labels, key_labels, ax=left,
                       title=f"head {self.head} of {self.num_heads}",
                       xlabel="key (answers)", ylabel="query (asks)")
        left.add_patch(Rectangle((-0.5, row - 0.5), self.weights.shape[2], 1, fill=False, ec="red", lw=1.5))
        w = self.query_weights
        title = f'head {self.head}: "{self.query}" attends to (max {w.max():.2f})'
        if self.image is not None:
            show_attention_on_image(self.image, w, self.grid, ax=right, title=title)
        else:
            right.bar(range(len(w)), w, color="#3b528b")
            right.set_xticks(range(len(w)), self.key_labels, rotation=90)
            right.set_ylim(0, 1)
            right.set_title(title)
            right.set_xlabel("key (answers)")
            right.set_ylabel("weight")
        fig.tight_layout()
        return fig

    def _make_controls(self, widgets: Any) -> list[Any]:
        # No description: the buttons say "head N" already, and ipywidgets 8 puts a ToggleButtons
        # description on a line of its own above them. Buttons as wide as their labels, so that many
        # heads and the query drop-down share one row.
        head = widgets.ToggleButtons(options=[(f"head {h}", h) for h in range(self.num_heads)],
                                     value=self.head, style={"button_width": "auto"})
        query = widgets.Dropdown(options=self.query_labels, value=self.query, description="query")
        return [self._bind(head, "head"), self._bind(query, "query")]


class PromptPlayground(_Explorer):
    """Lesson 06's miniature DALL-E at your fingertips: a caption box, guidance and temperature
    sliders, a Generate button; ``num_images`` samples and the first one's per-word attention maps.

    ``decoder`` is one trained decoder, or a dict of them by name (``{"cross-attention": a,
    "joint attention": b}``): then a menu chooses which one draws, all through the same tokenizer.

    State: ``model`` (the chosen name), ``caption``, ``guidance_scale``, ``temperature``, ``seed``.
    Changing them does not redraw (sampling takes a moment); :meth:`generate` (the button) samples
    and redraws. A caption with a word outside the vocabulary, or too many words, is not sampled:
    ``message`` says what is wrong and lists the known words, and the picture shows that message.
    """

    title = "prompt playground"

    def __init__(
        self,
        decoder: Any,
        tokenizer: Any,
        caption: str = "a large red circle at the top left",
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        seed: int = 0,
        num_images: int = 4,
        model: Optional[str] = None,
    ) -> None:
        super().__init__()
        from crossmodal_edu.world import Vocab

        if isinstance(decoder, dict):
            if not decoder:
                raise ValueError("PromptPlayground got an empty dict of decoders: give one decoder, or {name: decoder}")
            self.models = dict(decoder)
        else:
            self.models = {getattr(getattr(decoder, "config", None), "conditioning", "decoder"): decoder}
        if model is None:
            model = next(iter(self.models))
        if model not in self.models:
            raise ValueError(f"model must be one of {list(self.models)}, got {model!r}")
        self.model, self.tokenizer = model, tokenizer
        self.vocab = Vocab()
        self.caption, self.guidance_scale, self.temperature, self.seed = caption, guidance_scale, temperature, seed
        self.num_images = num_images
        self.message: Optional[str] = None
        self.generation: Any = None
        self.generate(redraw=False)

    @property
    def decoder(self) -> Any:
        """The decoder that draws: ``models[model]``."""
        return self.models[self.model]

    def check_caption(self, caption: str) -> Optional[str]:
        """None if ``caption`` can be drawn, else a message saying why not."""
        words = caption.split()
        if not words:
            return "Type a caption, e.g. 'a small blue square in the middle'."
        unknown = [w for w in words if w not in self.vocab.words[1:]]
        if unknown:
            return (f"Unknown word{'s' if len(unknown) > 1 else ''} {', '.join(repr(w) for w in unknown)}. "
                    f"The model knows only these {len(self.vocab) - 1} words: {' '.join(self.vocab.words[1:])}")
        longest = self.decoder.config.max_text_len
        if len(words) > longest:
            return f"The caption has {len(words)} words; the model reads at most {longest}."
        return None

    def generate(self, redraw: bool = True) -> None:
        """Sample ``num_images`` images for the current caption and settings (what Generate does)."""
        from crossmodal_edu.dalle.sampling import generate

        self.message = self.check_caption(self.caption)
        if self.message is None:
            self.generation = generate(
                self.decoder, self.tokenizer, [self.caption] * self.num_images, guidance_scale=self.guidance_scale,
                temperature=self.temperature, seed=self.seed, attention_maps=True,
            )
        if redraw:
            self.redraw()

    @property
    def images(self) -> Optional[np.ndarray]:
        """The last generated images ``(num_images, H, W, 3)``, or None after an invalid caption."""
        return None if self.message is not None else self.generation.images

    def figure(self) -> Figure:
        if self.message is not None:
            fig = Figure(figsize=(8, 1.6), dpi=_DPI)
            ax = fig.add_subplot()
            ax.set_axis_off()
            import textwrap

            ax.text(0, 0.5, textwrap.fill(self.message, 100), va="center", fontsize=9, color="darkred")
            return fig
        words = self.generation.words[0]
        columns = max(self.num_images, len(words))
        fig = Figure(figsize=(1.6 * columns, 3.9), dpi=_DPI)
        axes = fig.subplots(2, columns, squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        for i, image in enumerate(self.generation.images):
            axes[0, i].imshow(image)
            axes[0, i].set_title(f"sample {i + 1}", fontsize=8)
        show_word_maps(self.generation.images[0], self.generation.word_maps[0], words, axes=axes[1, : len(words)])
        drawn_by = f"{self.model}; " if len(self.models) > 1 else ""
        fig.suptitle(f"'{self.caption}' ({drawn_by}guidance {self.guidance_scale:g}, temperature {self.temperature:g}, "
                     f"seed {self.seed}); below: where sample 1 read each word", fontsize=9)
        return fig

    def _make_controls(self, widgets: Any) -> list[Any]:
        caption = widgets.Text(value=self.caption, description="caption", continuous_update=False,
                               layout=widgets.Layout(width="420px"))
        guidance = widgets.FloatSlider(value=self.guidance_scale, min=0.0, max=5.0, step=0.25, description="guidance",
                                       continuous_update=False, readout_format=".2f")
        temperature = widgets.FloatSlider(value=self.temperature, min=0.0, max=2.0, step=0.1,
                                          description="temperature", continuous_update=False, readout_format=".1f")
        button = widgets.Button(description="Generate", button_style="primary")
        button.on_click(lambda _: self.generate())
        self.controls["generate"] = button
        named = [("caption", caption), ("guidance_scale", guidance), ("temperature", temperature)]
        if len(self.models) > 1:
            named.append(("model", widgets.Dropdown(options=list(self.models), value=self.model, description="model")))
        for name, control in named:
            control.observe(lambda change, name=name: setattr(self, name, change["new"]), names="value")
            self.controls[name] = control
        return [control for _, control in named] + [button]

    def widget(self) -> Any:
        """Controls in two rows (the caption box is wide), the picture below."""
        import ipywidgets as widgets

        caption, guidance, temperature, *menu, button = self._make_controls(widgets)
        self._image_widget = widgets.Image(format="png", value=figure_png(self.figure()))
        return widgets.VBox([widgets.HBox([*menu, caption, button]), widgets.HBox([guidance, temperature]), self._image_widget])

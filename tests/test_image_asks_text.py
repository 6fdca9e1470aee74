"""The image-asks-text model of lesson 03: patches are the queries, the caption's words the keys and values."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal_edu import world
from crossmodal_edu.image_asks_text import PatchesAskCaption, named_object_data, object_patches
from crossmodal_edu.torch_attention import MultiHeadCrossAttention

VOCAB = world.default_vocab()


@pytest.fixture(scope="module")
def data():
    return named_object_data(40, seed=5, vocab=VOCAB)


def _model(**kwargs):
    torch.manual_seed(0)
    return PatchesAskCaption(len(VOCAB), width=16, **kwargs).eval()


def test_shapes_of_logits_and_of_the_weights_each_patch_puts_on_each_word(data):
    model = _model(num_heads=2)
    logits, weights = model(data.patches[:3], data.text_tokens[:3], data.context_mask[:3], need_weights=True)
    assert logits.shape == (3, 64)
    assert weights.shape == (3, 2, 64, data.text_tokens.shape[1])  # (B, num_heads, P, Lk)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2, 64))
    assert isinstance(model.attend, MultiHeadCrossAttention)
    assert torch.allclose(model(data.patches[:3], data.text_tokens[:3], data.context_mask[:3]), logits, atol=1e-6)


def test_the_patches_are_the_queries_and_the_words_the_keys_and_values():
    model = _model()
    assert model.attend.to_q.in_features == model.patch.out_features
    assert model.attend.to_k.in_features == model.word.embedding_dim


def test_the_answer_depends_on_the_caption_and_the_baseline_ignores_it(data):
    patches = data.patches[:1].expand(2, -1, -1)
    captions = ["a red circle", "a blue square"]
    tokens, mask = (torch.from_numpy(a) for a in VOCAB.encode_batch(captions, max_len=4))
    logits = _model()(patches, tokens, mask)
    assert not torch.allclose(logits[0], logits[1])
    baseline = _model(use_caption=False)(patches, tokens, mask)
    assert torch.equal(baseline[0], baseline[1])


def test_padding_words_get_zero_weight_and_their_ids_change_nothing(data):
    model = _model(num_heads=2)
    padded = ~data.context_mask
    assert padded.any(), "the fixture must hold a padded caption"
    logits, weights = model(data.patches, data.text_tokens, data.context_mask, need_weights=True)
    assert torch.all(weights.masked_select(padded[:, None, None, :].expand_as(weights)) == 0)
    other_ids = data.text_tokens.masked_fill(padded, VOCAB.encode("triangle")[0])
    assert torch.allclose(model(data.patches, other_ids, data.context_mask), logits, atol=1e-6)


def test_the_caption_names_one_of_two_differently_coloured_objects(data):
    for image, caption, labels, either in zip(data.images, data.captions, data.labels, data.on_an_object):
        words = caption.split()
        assert words[0] == "a" and len(words) in (3, 4)
        assert labels.any() and torch.all(either[labels])  # the named object's patches are object patches
        assert (either & ~labels).any()  # and the other object has patches too
    assert (data.text_tokens == VOCAB.pad_id).any(-1).any() and (data.text_tokens != VOCAB.pad_id).all(-1).any()


def test_object_patches_are_the_lit_patches_inside_the_objects_cell():
    obj = world.SceneObject("square", "red", "large", row=1, col=2)
    image = world.render(world.Scene((obj,)), image_size=32, rng=np.random.default_rng(0))
    found = object_patches(image, obj).reshape(8, 8)  # 8 x 8 patches of 4 x 4 pixels
    pixels_lit = image.max(-1) > 0.2  # (32, 32)
    expected = np.zeros((8, 8), dtype=bool)
    for r in range(8):
        for c in range(8):
            centre_in_cell = int((r * 4 + 2) * 3 // 32) == 1 and int((c * 4 + 2) * 3 // 32) == 2
            expected[r, c] = centre_in_cell and pixels_lit[4 * r:4 * r + 4, 4 * c:4 * c + 4].any()
    np.testing.assert_array_equal(found, expected)
    assert found.sum() >= 4


def test_wrong_shapes_are_named():
    model = _model()
    with pytest.raises(ValueError, match=r"patches must have shape \(B, 64, 48\)"):
        model(torch.zeros(2, 63, 48), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="text_tokens must have shape"):
        model(torch.zeros(2, 64, 48), torch.zeros(3, 4, dtype=torch.long))


def test_smoke_a_short_training_run_beats_the_patch_only_baseline():
    train = named_object_data(600, seed=0, vocab=VOCAB)
    test = named_object_data(150, seed=1, vocab=VOCAB)
    accuracy = {}
    for use_caption in (True, False):
        torch.manual_seed(0)
        model = PatchesAskCaption(len(VOCAB), use_caption=use_caption)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(200):
            batch = torch.randint(len(train.captions), (32,), generator=generator)
            logits = model(train.patches[batch], train.text_tokens[batch], train.context_mask[batch])
            loss = F.binary_cross_entropy_with_logits(logits, train.labels[batch].float())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            right = model.eval()(test.patches, test.text_tokens, test.context_mask) > 0
        accuracy[use_caption] = (right == test.labels)[test.on_an_object].float().mean().item()
    assert accuracy[False] < 0.65  # without the caption, which object is named is a coin toss
    assert accuracy[True] > accuracy[False] + 0.2, accuracy

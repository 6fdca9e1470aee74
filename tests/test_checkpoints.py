"""Checkpoints that cannot be silently corrupted (crossmodal_edu.dalle.checkpoint).

Each test damages a real file the way disks, copies and killed processes do, and states what
loading must then do: one clear error (a ``CheckpointError``, which is a ``ValueError``) that names
the file and says to restore or retrain it.
"""

import os

import pytest
import torch

from crossmodal_edu.dalle import checkpoint as checkpoint_module
from crossmodal_edu.dalle.__main__ import main
from crossmodal_edu.dalle.checkpoint import (
    CheckpointError,
    add_checksum,
    load_checkpoint,
    pretrained_path,
    save_checkpoint,
)
from crossmodal_edu.dalle.config import TokenizerConfig, TrainConfig
from crossmodal_edu.dalle.train import train_tokenizer

TINY = TokenizerConfig(channels=8, decoder_res_blocks=1, codebook_size=16, code_dim=4)


def tiny_train(steps):
    return TrainConfig(steps=steps, batch_size=6, warmup_steps=2, device="cpu", seed=3, checkpoint_every=1)


def example():
    generator = torch.Generator().manual_seed(0)
    return {
        "step": 7,
        "config": {"width": 16, "name": "tiny"},
        "model": {"weight": torch.randn(64, 32, generator=generator), "bias": torch.zeros(32),
                  "half": torch.randn(40, generator=generator).half()},
        "history": [1.0, 0.5],
    }


def tensor_data_offset(path, needle):
    """Where the bytes of a tensor (whose first values are ``needle``) lie in the file."""
    data = path.read_bytes()
    offset = data.find(needle)
    assert offset > 0, "the tensor's bytes must be stored raw in the file"
    return offset


def test_a_saved_checkpoint_loads_back_equal(tmp_path):
    path = save_checkpoint(example(), tmp_path / "c.pt")
    loaded = load_checkpoint(path)
    want = example()
    assert loaded.keys() == want.keys()  # the checksum entry is not handed back
    for name, value in want["model"].items():
        assert torch.equal(loaded["model"][name], value)
    assert loaded["step"] == 7 and loaded["history"] == [1.0, 0.5]


def test_flipped_bytes_in_tensor_data_are_caught(tmp_path):
    path = save_checkpoint(example(), tmp_path / "c.pt")
    offset = tensor_data_offset(path, example()["model"]["weight"][0, :4].numpy().tobytes())
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0x10  # one bit of one weight
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["step"] == 7  # torch itself would load it silently
    with pytest.raises(CheckpointError, match=rf"{path}.*does not match its checksum.*retrain"):
        load_checkpoint(path)


def test_an_empty_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{path} is empty.*restore it.*or retrain it"):
        load_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_file_gets_a_clear_error(tmp_path, fraction):
    path = save_checkpoint(example(), tmp_path / "c.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=rf"{path} is truncated or corrupted"):
        load_checkpoint(path)


def test_garbage_gets_a_clear_error(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    assert issubclass(CheckpointError, ValueError)


def test_a_file_without_a_checksum_still_loads(tmp_path):
    # Checkpoints written before checksums existed (as the shipped ones may be) are trusted as before.
    path = tmp_path / "old.pt"
    torch.save(example(), path)
    assert load_checkpoint(path)["step"] == 7
    add_checksum(path)
    assert "checksum" in torch.load(path, weights_only=True)
    assert torch.equal(load_checkpoint(path)["model"]["weight"], example()["model"]["weight"])


@pytest.mark.parametrize("name", ["tokenizer", "decoder", "decoder_joint", "decoder_single_stream"])
def test_the_shipped_checkpoints_load_and_stay_small(name):
    checkpoint = load_checkpoint(pretrained_path(name))
    assert checkpoint["kind"] in ("image_tokenizer", "image_token_decoder")
    assert pretrained_path(name).stat().st_size < 5_000_000  # issue 13: each shipped checkpoint under 5 MB


@pytest.mark.parametrize("name, conditioning", [("decoder", "cross-attention"), ("decoder_joint", "joint"),
                                                ("decoder_single_stream", "single-stream+token-shift")])
def test_each_shipped_decoder_draws_most_two_object_prompts_right(name, conditioning):
    # Why they ship (checkpoints/README.md, issue 13): at least 80% of two-object prompts and 95% of
    # one-object prompts fully right. Checked here on 100 prompts of each kind that the README's
    # evaluation never used (another prompt seed), one sampling seed, guidance 1.5: the thresholds
    # leave room for three standard errors (sqrt(0.8 * 0.2 / 100) = 4 points; sqrt(0.95 * 0.05 / 100)
    # = 2.2). The decoder shipped before (width 128, 4,000 steps) scored about 20% on two objects.
    from crossmodal_edu.dalle import load_text_to_image
    from crossmodal_edu.dalle.evaluate import evaluation_prompts, prompt_fidelity

    decoder, tokenizer = load_text_to_image(pretrained_path(name))
    assert decoder.config.conditioning + ("+token-shift" if decoder.config.token_shift else "") == conditioning
    two = evaluation_prompts(100, "tier2", decoder.config.held_out_pairs, seed=2026)
    one = evaluation_prompts(100, "tier1", decoder.config.held_out_pairs, seed=2027)
    two_all = prompt_fidelity(decoder, tokenizer, two, seed=5, guidance_scale=1.5)["all"]
    one_all = prompt_fidelity(decoder, tokenizer, one, seed=5, guidance_scale=1.5)["all"]
    assert two_all >= 0.68, f"{name}: {two_all:.0%} of two-object prompts fully right"
    assert one_all >= 0.88, f"{name}: {one_all:.0%} of one-object prompts fully right"


def test_stale_temporary_files_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "c.pt"
    stale = [tmp_path / ".c.pt.abc123.tmp", tmp_path / ".c.pt.x_9.tmp"]
    for file in stale:
        file.write_bytes(b"half a checkpoint, from a save that was killed")
    other = tmp_path / ".other.pt.abc.tmp"  # another checkpoint's: not ours to remove
    other.write_bytes(b"x")
    save_checkpoint(example(), path)
    assert sorted(os.listdir(tmp_path)) == [".other.pt.abc.tmp", "c.pt"]


def test_a_failed_save_leaves_the_old_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    path = save_checkpoint(example(), tmp_path / "c.pt")

    def broken_save(obj, file):
        file.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 8}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 7 and sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_resume_works_with_checksummed_checkpoints(tmp_path):
    path = tmp_path / "t.pt"
    train_tokenizer(TINY, tiny_train(2), out=path, progress=False)
    assert "checksum" in torch.load(path, weights_only=True)
    (tmp_path / ".t.pt.dead.tmp").write_bytes(b"")  # as a killed save leaves it
    resumed = train_tokenizer(TINY, tiny_train(3), out=path, resume=True, progress=False)
    assert resumed.step == 3 and load_checkpoint(path)["step"] == 3
    assert sorted(os.listdir(tmp_path)) == ["t.pt"]


def test_eval_tokenizer_on_a_corrupted_file_exits_non_zero_with_the_message(tmp_path, capsys):
    path = save_checkpoint(load_checkpoint(pretrained_path("tokenizer")), tmp_path / "tokenizer.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    status = main(["eval-tokenizer", "--checkpoint", str(path), "--eval-scenes", "2"])
    assert status != 0
    err = capsys.readouterr().err
    assert str(path) in err and "cannot be trusted" in err

"""Specification of training and checkpoints of the miniature DALL-E: atomic saves, exact
resumption, Ctrl-C, and the command line."""

import json
import os

import pytest
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle import (
    ImageTokenizer,
    TokenizerConfig,
    TrainConfig,
    images_to_tensor,
    load_checkpoint,
    load_tokenizer,
    save_checkpoint,
    train_loop,
    train_tokenizer,
)
from crossmodal_edu.dalle import checkpoint as checkpoint_module
from crossmodal_edu.dalle import train as train_module
from crossmodal_edu.dalle.__main__ import main
from crossmodal_edu.dalle.train import learning_rate, tokenizer_batch

TINY = TokenizerConfig(channels=8, decoder_res_blocks=1, codebook_size=16, code_dim=4)


def tiny_train(steps, **kwargs):
    return TrainConfig(steps=steps, batch_size=6, warmup_steps=2, device="cpu", **kwargs)


# --- atomic checkpoints ---------------------------------------------------------------------------


def test_checkpoint_save_and_load_give_identical_token_ids(tmp_path):
    torch.manual_seed(0)
    model = train_tokenizer(TINY, tiny_train(3), out=tmp_path / "t.pt", progress=False).model
    images = images_to_tensor(world.make_dataset(5, 2, seed=1).images)
    loaded = load_tokenizer(tmp_path / "t.pt")
    assert torch.equal(loaded.encode(images), model.encode(images))
    assert torch.equal(loaded.decode(loaded.encode(images)), model.decode(model.encode(images)))


def test_checkpoints_load_with_weights_only(tmp_path):
    train_tokenizer(TINY, tiny_train(2), out=tmp_path / "t.pt", progress=False)
    checkpoint = torch.load(tmp_path / "t.pt", weights_only=True)
    assert checkpoint["step"] == 2 and "optimizer" in checkpoint and checkpoint["config"]["code_dim"] == 4


def test_a_failure_while_saving_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    old = load_checkpoint(path)
    assert old["step"] == 1 and torch.equal(old["weights"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary file left behind


def test_ctrl_c_while_saving_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)

    def interrupted_save(obj, file):
        file.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and sorted(os.listdir(tmp_path)) == ["c.pt"]


# --- the loop -------------------------------------------------------------------------------------


def test_ctrl_c_during_training_keeps_the_last_checkpoint(tmp_path):
    saved = []

    def step(s):
        if s == 5:
            raise KeyboardInterrupt
        return {"loss": 1.0 / (s + 1)}

    result = train_loop(step, TrainConfig(steps=10, checkpoint_every=2), save=saved.append, progress=False)
    assert result.interrupted and result.step == 5
    assert saved == [2, 4]  # no checkpoint of the half-finished step 5


def test_loop_stops_at_the_step_budget_and_saves_at_the_end():
    saved, seen = [], []
    result = train_loop(lambda s: seen.append(s), TrainConfig(steps=7, checkpoint_every=3), start_step=2,
                        save=saved.append, progress=False)
    assert seen == [2, 3, 4, 5, 6] and saved == [3, 6, 7] and not result.interrupted


def test_loop_stops_at_the_time_budget():
    result = train_loop(lambda s: None, TrainConfig(steps=10**9, minutes=0.0), progress=False)
    assert result.step == 0 and not result.interrupted


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(100, config) == pytest.approx(0.1)


def test_with_a_time_budget_the_schedule_ends_when_the_clock_does():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, minutes=2.0)
    assert learning_rate(55, config, elapsed_minutes=0.0) == pytest.approx(0.55)  # halfway by steps
    assert learning_rate(20, config, elapsed_minutes=1.0) == pytest.approx(0.55)  # halfway by the clock
    assert learning_rate(20, config, elapsed_minutes=2.0) == pytest.approx(0.1)  # out of time: fully decayed
    assert learning_rate(90, config, elapsed_minutes=0.5) == learning_rate(90, config)  # steps ahead of the clock
    assert learning_rate(5, config, elapsed_minutes=2.0) == pytest.approx(0.6)  # warm-up is counted in steps


def test_batches_are_determined_by_seed_and_step_and_mix_both_tiers():
    config = TrainConfig(batch_size=8, two_object_fraction=0.5, seed=3)
    assert (tokenizer_batch(5, config) == tokenizer_batch(5, config)).all()
    assert not (tokenizer_batch(5, config) == tokenizer_batch(6, config)).all()
    counts = [len(scene.objects) for scene in world.read_scenes(tokenizer_batch(5, config))]
    assert counts == [1, 1, 1, 1, 2, 2, 2, 2]


# --- training -------------------------------------------------------------------------------------


def test_a_tiny_training_run_lowers_the_loss_and_restarts_codes():
    result = train_tokenizer(TINY, tiny_train(12, lr=3e-3), progress=False)
    history = result.history
    assert len(history["loss"]) == 12 and result.step == 12
    assert sum(history["loss"][-3:]) < sum(history["loss"][:3])
    assert history["restarted"][0] > 0  # the first step seeds the codebook from the data
    assert not result.model.training


def test_resume_after_ctrl_c_continues_from_the_saved_step_exactly(tmp_path, monkeypatch):
    straight = train_tokenizer(TINY, tiny_train(6, seed=4), progress=False)

    def batch_or_ctrl_c(step, *args):
        if step == 4:
            raise KeyboardInterrupt  # the learner presses Ctrl-C during step 4
        return tokenizer_batch(step, *args)

    path = tmp_path / "r.pt"
    monkeypatch.setattr(train_module, "tokenizer_batch", batch_or_ctrl_c)
    first = train_tokenizer(TINY, tiny_train(6, seed=4, checkpoint_every=3), out=path, progress=False)
    monkeypatch.undo()
    assert first.interrupted and first.step == 4 and load_checkpoint(path)["step"] == 3

    resumed = train_tokenizer(TINY, tiny_train(6, seed=4), out=path, resume=True, progress=False)
    assert resumed.step == 6 and len(resumed.history["loss"]) == 6 and not resumed.interrupted
    assert resumed.history["loss"][:3] == first.history["loss"][:3]
    # The same batches, restarts and schedule as the uninterrupted run: the same numbers.
    torch.testing.assert_close(resumed.history["loss"], straight.history["loss"], rtol=1e-4, atol=0)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-3, atol=1e-5)


def test_resume_of_a_release_checkpoint_is_refused(tmp_path):
    path = tmp_path / "r.pt"
    train_tokenizer(TINY, tiny_train(1), out=path, progress=False)
    checkpoint = load_checkpoint(path)
    del checkpoint["optimizer"]
    save_checkpoint(checkpoint, path)
    with pytest.raises(ValueError, match="cannot be resumed"):
        train_tokenizer(TINY, tiny_train(2), out=path, resume=True, progress=False)


# --- command line -----------------------------------------------------------------------------------


def test_command_line_trains_evaluates_and_releases(tmp_path, capsys):
    out = tmp_path / "cli.pt"
    options = ["--out", str(out), "--batch-size", "4", "--channels", "8", "--decoder-res-blocks", "1",
               "--codebook-size", "16", "--code-dim", "4", "--eval-scenes", "4", "--device", "cpu"]
    assert main(["train-tokenizer", *options, "--steps", "2"]) == 0
    assert main(["train-tokenizer", *options, "--steps", "3", "--resume", "--release"]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint["step"] == 3 and "optimizer" not in checkpoint
    assert checkpoint["model"]["encoder.layers.0.weight"].dtype == torch.float16
    assert set(checkpoint["metrics"]) >= {"mse", "perplexity", "codes_used", "oracle_all_1", "oracle_all_2"}
    assert (tmp_path / "cli_mse.png").is_file()
    assert main(["eval-tokenizer", "--checkpoint", str(out), "--eval-scenes", "4"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.rindex("{"):])["codes_used"] >= 1
    assert isinstance(load_tokenizer(out), ImageTokenizer)

"""The conditioning lab benchmark (benchmarks/conditioning_lab.py): resumable, equal sizes, an honest report."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import build_decoder
from crossmodal_edu.dalle.designs import matched_config

SOURCE = Path(__file__).resolve().parents[1] / "benchmarks" / "conditioning_lab.py"
spec = importlib.util.spec_from_file_location("conditioning_lab", SOURCE)
lab = importlib.util.module_from_spec(spec)
sys.modules["conditioning_lab"] = lab
spec.loader.exec_module(lab)

TINY = lab.Settings(steps=3, val_prompts=4, curve_prompts=4, curve_every=2, test_prompts=4, sampling_seeds=(0,), scales=(1.0,))


def count_weights(config: DecoderConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_decoder(config).parameters())


def test_every_design_is_within_ten_percent_of_the_width_64_reference():
    reference = count_weights(DecoderConfig(d_model=64))
    for design in (*lab.DESIGNS, lab.FLOOR):
        config = lab.design_config(design)
        conditioning = design.removesuffix(lab.TOKEN_SHIFT)
        assert config.d_model == 64 and config.conditioning == conditioning
        assert config.token_shift == design.endswith(lab.TOKEN_SHIFT)
        assert config == replace(matched_config(conditioning, DecoderConfig(d_model=64)), token_shift=config.token_shift)
        assert abs(count_weights(config) - reference) <= 0.10 * reference, design


def test_a_finished_run_is_appended_once_and_skipped_when_run_again(tmp_path, monkeypatch):
    out = tmp_path / "lab.jsonl"
    run = lab.Run("adaln", 3e-3, 0, TINY.steps)
    finished = lab.execute([run], out, settings=TINY)
    lines = [json.loads(text) for text in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [run.id] == [line["id"] for line in finished]
    line = lines[0]
    assert line["steps"] == 3 and line["params"] == count_weights(matched_config("adaln", DecoderConfig(d_model=64)))
    assert [point["step"] for point in line["curve"]] == [2, 3]
    assert set(line["test"]["g1"]) >= {"tier1_all", "held_out_all", "tier2_all", "tier2_relation"}
    assert 0.0 <= line["validation"]["score"] <= 1.0

    def must_not_train(*args, **kwargs):
        raise AssertionError("a run already in the file was trained again")

    monkeypatch.setattr(lab, "train_and_grade", must_not_train)
    assert lab.execute([run], out, settings=TINY) == []
    assert len(out.read_text().splitlines()) == 1


def _line(design, lr, seed, val, tier2, to_target):
    test = {"tier1_all": 0.9, "held_out_all": 0.5, "tier2_all": tier2, "tier2_relation": 0.8}
    curve = [{"step": 1000, "train_s": 9.0, "cpu_s": 400.0 + seed, "tier2_all": tier2 / 2}]
    return {"id": f"{design}|{lr}|{seed}", "design": design, "lr": lr, "seed": seed, "steps": 2000, "params": 1000, "curve": curve,
            "s_per_step": 0.4 + 0.1 * seed, "train_cpu_s": (0.4 + 0.1 * seed) * 2000, "steps_to_target": to_target, "cpu_s_to_target": None if to_target is None else to_target / 2,
            "validation": {"score": val}, "test": {"g1": test}, "test_settings": {"n": 500}}


def test_the_report_takes_the_lr_that_won_on_validation_and_gives_mean_and_sample_sd(tmp_path):
    lines = [
        _line("joint", 1.5e-3, 0, 0.2, 0.99, 500),  # loses on validation: must not enter the row
        _line("joint", 3e-3, 0, 0.5, 0.5, 500),
        _line("joint", 6e-3, 0, 0.4, 0.99, 500),
        _line("joint", 3e-3, 1, 0.0, 0.6, None),
        _line("joint", 3e-3, 2, 0.0, 0.7, 1000),
    ]
    path = tmp_path / "hand.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (row,) = lab.summarise(path)
    assert row["design"] == "joint" and row["lr"] == 3e-3 and row["seeds"] == [0, 1, 2]
    # by hand: mean (0.5 + 0.6 + 0.7) / 3 = 0.6; deviations -0.1, 0, 0.1, so sd = sqrt(0.02 / 2) = 0.1
    assert row["tier2_all"]["mean"] == pytest.approx(0.6) and row["tier2_all"]["sd"] == pytest.approx(0.1)
    assert row["tier2_all"]["n"] == 3
    assert row["cpu_s_per_step"]["sd"] == pytest.approx(np.std([0.4, 0.5, 0.6], ddof=1))
    assert row["tier1_all"]["sd"] == pytest.approx(0.0)
    assert row["steps_to_target"]["mean"] == 750 and row["steps_to_target"]["n"] == 2
    assert row["steps_to_target"]["sd"] == pytest.approx(np.std([500, 1000], ddof=1))
    assert row["tier2_all"]["se"] == pytest.approx(0.1 / np.sqrt(3))
    assert row["reached"] == "2/3"
    assert row["curves"] == [[{"step": 1000, "cpu_s": 400.0 + seed, "tier2_all": tier2 / 2}] for seed, tier2 in ((0, 0.5), (1, 0.6), (2, 0.7))]
    table = lab.report_table([row])
    assert "60.0 ± 10.0 (n=3, se 5.8)" in table


@pytest.mark.skipif(not lab.outside_available(), reason="DALLE-pytorch not set up (benchmarks/conditioning_lab.py --setup-outside)")
def test_the_outside_row_is_dalle_pytorch_at_the_reference_size_and_reads_token_ids():
    model = lab.build_model(lab.OUTSIDE_NAME)
    reference = count_weights(DecoderConfig(d_model=64))
    assert abs(sum(p.numel() for p in model.parameters()) - reference) <= 0.10 * reference
    config = model.config
    null = torch.zeros(2, config.max_text_len, dtype=torch.long)
    null[:, 0] = config.null_id
    assert torch.equal(model.dalle_text(null), torch.zeros_like(null))  # the course's null caption is DALLE's (all padding)
    text = torch.tensor([[1, 2, 3, 0, 0, 0, 0, 0]] * 2)
    image_tokens = torch.randint(0, config.codebook_size, (2, config.num_image_tokens))
    assert torch.isfinite(model.loss(image_tokens, text, text > 0))
    assert torch.equal(text, torch.tensor([[1, 2, 3, 0, 0, 0, 0, 0]] * 2))  # DALLE's in-place edits never reach the caller


def test_the_text_table_marks_an_unfinished_lr_search_and_a_single_seed(tmp_path):
    from crossmodal_edu.dalle.lab_results import plot_results, summarise, text_table

    lines = [_line("joint", 1.5e-3, 0, 0.2, 0.10, None), _line("joint", 3e-3, 0, 0.5, 0.25, None)]  # 6e-3 not yet run
    path = tmp_path / "partial.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = summarise(path)
    assert [row["lr"] for row in rows] == [3e-3] and not rows[0]["lr_final"]
    table = text_table(rows).splitlines()
    assert table[1].split()[:3] == ["joint*", "1", "1"] and "25.0" in table[1] and "±" not in table[1]
    assert "unfinished" in table[-1]
    figure = plot_results(rows)
    assert len(figure.axes[0].patches) == 4  # one design, four metrics: one bar each


def test_the_text_table_keeps_its_columns_under_a_long_design_name_and_hatches_token_shift(tmp_path):
    from crossmodal_edu.dalle.lab_results import plot_results, summarise, text_table

    lines = [_line(design, lr, 0, 0.5, 0.25, None) for design in ("joint", "cross-attention+token-shift") for lr in (1.5e-3, 3e-3, 6e-3)]
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = summarise(path)
    table = text_table(rows).splitlines()
    assert len({len(line) for line in table}) == 1, table  # header and rows the same width: the columns line up
    assert table[0].index("guidance") > len("cross-attention+token-shift")
    bars = plot_results(rows).axes[0].patches
    assert len(bars) == 8 and sum(bool(bar.get_hatch()) for bar in bars) == 4  # the token-shift design's four bars


def test_the_committed_results_are_whole_runs_at_the_benchmarks_settings():
    from crossmodal_edu.dalle.lab_results import RESULTS, read_lines, summarise

    lines = read_lines(RESULTS)
    assert lines, f"{RESULTS} is missing or empty"
    assert len({line["id"] for line in lines}) == len(lines)  # no run twice
    for line in lines:
        assert line["steps"] == lab.Settings.steps and line["test_settings"]["n"] == lab.Settings.test_prompts, line["id"]
        assert set(line["test"]) == {"g1", "g1.5"} and line["design"] in (*lab.DESIGNS, lab.FLOOR, lab.OUTSIDE_NAME)
    assert {row["design"] for row in summarise(RESULTS)} == {line["design"] for line in lines}


def test_dalle_top_k_keeps_the_best_half_of_dalles_289_logits():
    config = lab.design_config("cross-attention")
    # DALLE-pytorch's top_k(thres=0.5) keeps int(0.5 * n) of n logits: n = 256 codes + 25 words + 8 position pads
    assert (config.codebook_size, config.vocab_size, config.max_text_len) == (256, 25, 8)
    assert lab.dalle_top_k(config) == 144


def test_a_run_can_be_graded_with_every_sampler_and_the_first_is_its_test(tmp_path):
    line = lab.train_and_grade(lab.Run("cross-attention", 3e-3, 0, TINY.steps), TINY, samplers=lab.SAMPLERS)
    assert set(line["test_by_sampler"]) == set(lab.SAMPLERS)
    assert line["test"] == line["test_by_sampler"]["own"]
    for by_scale in line["test_by_sampler"].values():
        assert set(by_scale["g1"]) >= {"tier1_all", "held_out_all", "tier2_all", "tier2_relation"}
    plain = lab.train_and_grade(lab.Run("cross-attention", 3e-3, 0, TINY.steps), TINY)
    assert "test_by_sampler" not in plain and plain["test"] == line["test"]  # the lab's own lines are unchanged


def test_the_sampler_and_dalle_options_are_checked():
    with pytest.raises(ValueError, match="sampler must be one of"):
        lab.sample_images(None, None, ["a red circle"], 0, 1.0, sampler="top-p")
    with pytest.raises(ValueError, match="DALLE options"):
        lab.build_model("joint", rotary_emb=False)


@pytest.mark.skipif(not lab.outside_available(), reason="DALLE-pytorch not set up (benchmarks/conditioning_lab.py --setup-outside)")
def test_dalles_sampler_keeps_dalle_top_k_codes_and_the_full_softmax_keeps_all():
    import random

    model = lab.build_model(lab.OUTSIDE_NAME)
    dalle = model.dalle
    config = model.config
    torch.manual_seed(random.randrange(2**31))
    text = torch.randint(1, config.vocab_size, (3, config.max_text_len))
    logits = dalle(text.clone(), torch.randint(0, config.codebook_size, (3, 5)))[:, -1]  # (3, 289), text part masked
    module = sys.modules["dalle_pytorch.dalle_pytorch"]
    kept = torch.isfinite(module.top_k(logits, thres=0.5))
    assert kept.shape[-1] == 289 and (kept.sum(-1) == lab.dalle_top_k(config)).all()
    assert not kept[:, : dalle.num_text_tokens].any()  # every kept logit is an image code
    assert torch.isfinite(module.top_k(logits, thres=0.0)).all()


@pytest.mark.skipif(not lab.outside_available(), reason="DALLE-pytorch not set up (benchmarks/conditioning_lab.py --setup-outside)")
def test_dalle_options_reach_dalle():
    def shifts(model):
        return sum(type(m).__name__ == "PreShiftToken" for m in model.modules())

    assert shifts(lab.build_model(lab.OUTSIDE_NAME)) == 2 * lab.OUTSIDE_DEPTH  # attention and MLP of every block
    assert shifts(lab.build_model(lab.OUTSIDE_NAME, shift_tokens=False)) == 0
    with_positions = lab.build_model(lab.OUTSIDE_NAME, rotary_emb=False)
    assert isinstance(with_positions.dalle.text_pos_emb, torch.nn.Embedding)  # learned positions replace rotary ones
    assert not isinstance(lab.build_model(lab.OUTSIDE_NAME).dalle.text_pos_emb, torch.nn.Embedding)


def test_a_shipped_checkpoint_is_graded_on_the_labs_own_test_prompts_and_sampling_draws(tmp_path):
    # outside_long.py --grade: a checkpoint beside the outside row, on the very prompts and draws of its test.
    from crossmodal_edu.dalle.__main__ import main
    from crossmodal_edu.dalle.evaluate import PROMPT_SEEDS, evaluation_prompts
    from crossmodal_edu.dalle.sampling import generate
    from crossmodal_edu.world.fidelity import image_fidelity

    spec = importlib.util.spec_from_file_location("outside_long", SOURCE.with_name("outside_long.py"))
    outside_long = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(outside_long)
    out = tmp_path / "tiny.pt"
    assert main(["train-decoder", "--out", str(out), "--d-model", "32", "--layers", "1", "--text-layers", "1",
                 "--conditioning", "single-stream", "--token-shift", "true", "--batch-size", "4", "--steps", "2",
                 "--warmup-steps", "1", "--eval-prompts", "0", "--device", "cpu"]) == 0
    settings = replace(TINY, sampling_seeds=(0, 1))
    line = outside_long.grade_checkpoint(str(out), settings)
    assert line["design"] == "single-stream+token-shift" and line["steps"] == 2 and set(line["test"]) == {"g1"}
    from crossmodal_edu.dalle import load_text_to_image

    decoder, tokenizer = load_text_to_image(out)
    captions = evaluation_prompts(4, "tier2", decoder.config.held_out_pairs, seed=PROMPT_SEEDS["tier2"])
    by_seed = [image_fidelity(captions, generate(decoder, tokenizer, captions, seed=s, batch_size=250).images)["all"] for s in (0, 1)]
    assert line["test"]["g1"]["per_sampling_seed"]["tier2_all"] == by_seed
    assert line["test"]["g1"]["tier2_all"] == pytest.approx(sum(by_seed) / 2)

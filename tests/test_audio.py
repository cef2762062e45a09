"""audio-classification on a tiny random-init wav2vec2: audio folders and tables of paths,
decoding/resampling without torchcodec, every strategy, loading outside the kit, bad input."""
from __future__ import annotations

import json
import os
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_cli_error, assert_same_predictions, run_cli, run_without_the_kit, tree

import hftransfer
from hftransfer.cli import main
from hftransfer.errors import HFTransferError

sf = pytest.importorskip("soundfile")

RATE = 16000
TONES = {"low": (200, 400), "high": (2000, 3000)}
TINY_W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=[16, 16], conv_stride=[8, 5], conv_kernel=[10, 8],
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                classifier_proj_size=16, vocab_size=8)


def tone(freq: float, seconds: float, rng, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_folders(root: Path, counts=(("train", 8), ("validation", 4), ("test", 4)), seed=0) -> Path:
    """root/<split>/<label>/<i>.wav: a low or a high tone of 0.15-0.3 s (learnable in steps)."""
    rng = np.random.default_rng(seed)
    for split, n in counts:
        for label, (lo, hi) in TONES.items():
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sf.write(folder / f"{i}.wav", tone(rng.uniform(lo, hi), rng.uniform(0.15, 0.3), rng), RATE)
    return root


@pytest.fixture(scope="session")
def tiny_w2v_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random-init wav2vec2 (layer-norm feature encoder, stable layer norm,
    attention masks) with its feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    out = tmp_path_factory.mktemp("tiny-w2v")
    config = Wav2Vec2Config(**TINY_W2V, feat_extract_norm="layer", do_stable_layer_norm=True,
                            conv_bias=True)
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, return_attention_mask=True).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def audio_folders(tmp_path_factory) -> Path:
    return write_folders(tmp_path_factory.mktemp("audio-folders"))


@pytest.fixture(scope="session")
def audio_table(tmp_path_factory) -> Path:
    """train/validation/test csv files whose `clip` column names files relative to the csv's
    folder, some at 8 kHz, in flac or stereo; the label column is `kind`."""
    root = tmp_path_factory.mktemp("audio-table")
    (root / "clips").mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("validation", 4), ("test", 4)):
        lines = ["clip,kind"]
        for i in range(n):
            for label, (lo, hi) in TONES.items():
                freq, seconds = rng.uniform(lo, hi), rng.uniform(0.15, 0.3)
                name = f"clips/{split}-{label}-{i}"
                if i % 4 == 1:  # 8 kHz
                    sf.write(root / f"{name}.wav", tone(freq, seconds, rng, 8000), 8000)
                    name += ".wav"
                elif i % 4 == 2:  # stereo flac
                    mono = tone(freq, seconds, rng)
                    sf.write(root / f"{name}.flac", np.stack([mono, 0.5 * mono], axis=1), RATE)
                    name += ".flac"
                else:
                    sf.write(root / f"{name}.wav", tone(freq, seconds, rng), RATE)
                    name += ".wav"
                lines.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def audio_recipe(model_dir: Path, data_dir: Path, strategy_name: str = "full", suffix: str = "",
                 **sections) -> dict:
    """A recipe that trains the tiny wav2vec2 on audio folders (or *.csv files with suffix);
    mapping ``sections`` are merged into the defaults."""
    recipe = {
        "name": f"audio-{strategy_name}",
        "model": {"name_or_path": str(model_dir)},
        "task": {"type": "audio-classification"},
        "data": {split: str(data_dir / f"{split}{suffix}") for split in ("train", "validation", "test")},
        "strategy": {"name": strategy_name},
        "train": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 3e-3,
                  "save_strategy": "no", "disable_tqdm": True, "logging_steps": 1000},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def inline_config() -> dict:
    """model.config of the same tiny wav2vec2, with the default group-norm feature encoder."""
    return {"config": {"model_type": "wav2vec2", **TINY_W2V}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_w2v_dir, audio_folders, audio_table):
    """Trained runs shared by the module: full and lora on audio folders, a random-init
    (model.config) full run on the csv table."""
    base = tmp_path_factory.mktemp("audio-runs")
    out = {
        "full": hftransfer.train(audio_recipe(tiny_w2v_dir, audio_folders, "full",
                                              train={"num_train_epochs": 4}), output_dir=base / "full"),
        "lora": hftransfer.train(audio_recipe(tiny_w2v_dir, audio_folders, "lora",
                                              train={"num_train_epochs": 2, "learning_rate": 1e-2}),
                                 output_dir=base / "lora"),
    }
    out["feature-extraction"] = hftransfer.train(
        audio_recipe(tiny_w2v_dir, audio_folders, "feature-extraction", train={"num_train_epochs": 20}),
        output_dir=base / "feature-extraction")
    recipe = audio_recipe(tiny_w2v_dir, audio_table, "full", suffix=".csv",
                          task={"audio_column": "clip", "label_column": "kind"},
                          model=inline_config())
    out["inline"] = hftransfer.train(recipe, output_dir=base / "inline")
    return out


# ------------------------------------------------------------------------------------- data


def task(**options):
    from hftransfer.recipe import build
    from hftransfer.registry import get_task

    cls = get_task("audio-classification")
    return cls(build(cls.Options, options, "task"))


def test_audio_folder_rows_labels_and_order(audio_folders):
    t = task()
    ds = t.read_split(str(audio_folders / "train"), "data.train", None)
    assert ds.column_names == ["audio", "label"] and len(ds) == 16
    assert t.label_names(ds, "data.train") == ["high", "low"]
    assert ds["audio"] == sorted(ds["audio"]) and all(os.path.isabs(p) for p in ds["audio"])


def test_table_paths_resolve_against_the_data_file(audio_table, work):
    t = task(audio_column="clip", label_column="kind")
    ds = t.read_split(str(audio_table / "train.csv"), "data.train", None)
    assert all(p.startswith(str(audio_table)) and os.path.isfile(p) for p in ds["clip"])
    # several files: a glob
    both = t.read_split(str(audio_table / "[tv]*.csv"), "data.train", None)
    assert len(both) == 16 + 8 + 8  # train.csv + validation.csv + test.csv
    assert set(both["kind"]) == {"low", "high"}
    # JSON Lines in another folder: paths relative to that folder
    lines = [json.dumps({"clip": "../clips/" + Path(p).name, "kind": k}) for p, k in zip(ds["clip"], ds["kind"])]
    (work / "meta").mkdir()
    (work / "meta" / "rows.jsonl").write_text("\n".join(lines) + "\n")
    (work / "clips").symlink_to(audio_table / "clips")
    rows = t.read_split("meta/rows.jsonl", "data.train", None)
    assert [os.path.realpath(p) for p in rows["clip"]] == ds["clip"]


def test_resampling_mono_and_truncation(tmp_path):
    from hftransfer.tasks.audio import AudioRef

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a8k.wav", tone(300, 0.25, rng, 8000), 8000)  # 2000 samples
    ref = AudioRef(str(tmp_path / "a8k.wav"), "a8k.wav")
    assert len(ref.load(16000, 10.0, "x")) == 4000
    sf.write(tmp_path / "a44.wav", tone(300, 0.5, rng, 44100), 44100)  # 22050 samples
    assert len(AudioRef(str(tmp_path / "a44.wav"), "a44").load(16000, 10.0, "x")) == 8000
    assert len(AudioRef(str(tmp_path / "a44.wav"), "a44").load(16000, 0.25, "x")) == 4000
    # a resampled tone keeps its frequency: the spectrum peaks at 300 Hz
    signal = ref.load(16000, 10.0, "x")
    peak = np.fft.rfftfreq(len(signal), 1 / 16000)[np.abs(np.fft.rfft(signal)).argmax()]
    assert abs(peak - 300) < 8
    stereo = np.stack([np.full(1000, 0.5, np.float32), np.full(1000, -0.1, np.float32)], axis=1)
    sf.write(tmp_path / "st.flac", stereo, 16000, subtype="PCM_24")
    mono = AudioRef(str(tmp_path / "st.flac"), "st").load(16000, 10.0, "x")
    assert mono.shape == (1000,) and np.allclose(mono, 0.2, atol=1e-4)


def test_preprocess_and_collator_pad_with_attention_mask(tiny_w2v_dir, audio_table):
    from hftransfer.recipe import ModelSpec

    t = task(audio_column="clip", label_column="kind")
    spec = ModelSpec(name_or_path=str(tiny_w2v_dir))
    from hftransfer.models import load_config

    processor = t.load_processor(str(tiny_w2v_dir), spec, load_config(str(tiny_w2v_dir), spec))
    ds = t.read_split(str(audio_table / "train.csv"), "data.train", None)
    enc = t.preprocess(ds, processor, ["high", "low"])
    assert set(enc.column_names) == {"input_values", "length", "labels"}
    rows = [enc[i] for i in range(4)]
    assert [len(r["input_values"]) for r in rows] == [r["length"] for r in rows]
    # row 2 (i=1) was an 8 kHz file: resampled to 16 kHz
    orig = sf.info(ds["clip"][2])
    assert orig.samplerate == 8000 and rows[2]["length"] == 2 * orig.frames
    batch = t.collator(processor)(rows)
    longest = max(r["length"] for r in rows)
    assert batch["input_values"].shape == (4, longest) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].sum(1).tolist() == [r["length"] for r in rows]
    assert batch["labels"].tolist() == [r["labels"] for r in rows]


def test_clips_shorter_than_the_model_accepts_are_padded(tiny_w2v_dir, tmp_path):
    """wav2vec2 needs mask_time_length frames out of its conv encoder to train with SpecAugment."""
    from transformers import AutoModelForAudioClassification

    from hftransfer.models import load_config
    from hftransfer.recipe import ModelSpec

    rng = np.random.default_rng(3)
    sf.write(tmp_path / "tiny.wav", tone(300, 0.005, rng), RATE)  # 80 samples
    (tmp_path / "rows.csv").write_text("audio,label\ntiny.wav,low\n")
    t = task()
    spec = ModelSpec(name_or_path=str(tiny_w2v_dir))
    config = load_config(str(tiny_w2v_dir), spec)
    processor = t.load_processor(str(tiny_w2v_dir), spec, config)
    assert t.min_samples == (10 - 1) * 5 * 8 + (8 - 1) * 8 + 10  # 10 frames through (10/8, 8/5)
    enc = t.preprocess(t.read_split(str(tmp_path / "rows.csv"), "data.train", None), processor, ["low"])
    assert enc["length"] == [t.min_samples]
    model = AutoModelForAudioClassification.from_pretrained(tiny_w2v_dir, num_labels=1).train()
    batch = t.collator(processor)([enc[0]])
    assert model(**batch).logits.shape == (1, 1)


def test_parquet_with_audio_bytes_and_relative_paths(tmp_path, monkeypatch):
    import datasets
    import pyarrow as pa

    rng = np.random.default_rng(2)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "b.wav", tone(2500, 0.2, rng), RATE)
    buf = tmp_path / "a.wav"
    sf.write(buf, tone(300, 0.2, rng, 8000), 8000)
    struct_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"audio": pa.array([{"bytes": buf.read_bytes(), "path": "a.wav"},
                                         {"bytes": None, "path": "sub/b.wav"}], type=struct_type),
                      "label": ["low", "high"]})
    ds = datasets.Dataset(table).cast_column("audio", datasets.Audio())  # decoding needs torchcodec
    monkeypatch.chdir(tmp_path)  # datasets sizes path-only rows when writing
    ds.to_parquet(tmp_path / "data.parquet")
    buf.unlink()  # the bytes are in the parquet file
    monkeypatch.chdir(tmp_path / "sub")  # relative paths resolve against the parquet's folder

    t = task()
    read = t.read_split(str(tmp_path / "data.parquet"), "data.train", None)
    assert read[1]["audio"]["path"] == str(tmp_path / "sub" / "b.wav")
    from transformers import Wav2Vec2FeatureExtractor

    enc = t.preprocess(read, Wav2Vec2FeatureExtractor(), ["high", "low"])
    assert enc["length"] == [3200, 3200]


def test_options_are_checked():
    from hftransfer.recipe import load_recipe

    for options, needle in (({"max_seconds": 0}, "task.max_seconds must be > 0"),
                            ({"max_seconds": "x"}, "task.max_seconds must be a number"),
                            ({"audio_column": "a", "label_column": "a"}, "different columns"),
                            ({"sample_rate": 8000}, "unknown key 'task.sample_rate'")):
        with pytest.raises(HFTransferError, match=needle.replace(".", r"\.")) as info:
            load_recipe({"task": {"type": "audio-classification", **options}, "data": {"train": "x"}})
        assert "\n" not in str(info.value)


def test_layer_groups_pick_the_encoder_layers_not_the_conv_stack(tiny_w2v_dir, tiny_model_dir):
    from transformers import AutoModelForAudioClassification, AutoModelForSequenceClassification

    from hftransfer.strategies.finetune import layer_groups

    groups = layer_groups(AutoModelForAudioClassification.from_pretrained(tiny_w2v_dir, num_labels=2))
    assert len(groups) == 4
    assert all(".encoder.layers.0." in n for n, _ in groups[1])
    assert all(".encoder.layers.1." in n for n, _ in groups[2])
    assert any("feature_extractor.conv_layers" in n for n, _ in groups[0])
    assert {n.split(".")[0] for n, _ in groups[-1]} == {"projector", "classifier"}
    bert = layer_groups(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2))
    assert all(".encoder.layer.0." in n for n, _ in bert[1])
    assert any("embeddings" in n for n, _ in bert[0])


def test_default_feature_extractor_follows_the_config():
    from transformers import Wav2Vec2Config

    from hftransfer.recipe import ModelSpec

    t = task()
    group = t.load_processor(None, ModelSpec(config={"model_type": "wav2vec2"}), Wav2Vec2Config())
    layer = t.load_processor(None, ModelSpec(config={"model_type": "wav2vec2"}),
                             Wav2Vec2Config(feat_extract_norm="layer"))
    assert group.sampling_rate == 16000 and not group.return_attention_mask
    assert layer.return_attention_mask


# ---------------------------------------------------------------------------------- training


def test_runs_learn_and_follow_the_contract(runs):
    for name, result in runs.items():
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        assert metrics["task"] == "audio-classification"
        assert metrics["labels"] == ["high", "low"]
        assert set(metrics["test"]) >= {"accuracy", "f1"}
        assert (result.run_dir / "preprocessor_config.json").is_file(), name
    assert runs["full"].metrics["validation"]["accuracy"] >= 0.75
    assert runs["inline"].metrics["data"] == {"train": 16, "validation": 8, "test": 8}
    assert "random-init wav2vec2" in runs["inline"].metrics["base_model"]


def test_lora_trains_a_fraction_plus_the_head(runs):
    from safetensors.torch import load_file

    params = runs["lora"].metrics["params"]
    assert params["trainable"] < 0.3 * params["total"]
    adapter = load_file(runs["lora"].run_dir / "adapter_model.safetensors")
    assert any("lora_A" in k for k in adapter)
    assert any(k.endswith("classifier.weight") for k in adapter)
    assert any(k.endswith("projector.weight") for k in adapter)
    assert not any("conv_layers" in k for k in adapter)


def weights(path):
    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(path, num_labels=2)
    return {n: p.detach() for n, p in model.named_parameters() if n.startswith("wav2vec2.")}


def changed(before, after, prefix):
    names = [n for n in before if n.startswith(prefix)]
    assert names, prefix
    return any(not torch.equal(before[n], after[n]) for n in names)


@pytest.mark.parametrize("name,strategy,epochs", [
    ("l2sp", {"name": "full", "regularization": {"type": "l2sp"}}, 1),
    ("layer-decay", {"name": "full", "layer_lr_decay": 0.8}, 1),
    ("scratch", {"name": "scratch"}, 1),
    ("partial-freeze", {"name": "partial-freeze"}, 1),
    ("gradual", {"name": "partial-freeze", "gradual_unfreeze": True, "unfreeze_every": 2,
                 "unfreeze_unit": "step"}, 2),
])
def test_every_strategy_trains(name, strategy, epochs, tiny_w2v_dir, audio_folders, tmp_path):
    # 16 clips / batch 8 = 2 steps an epoch
    recipe = audio_recipe(tiny_w2v_dir, audio_folders, strategy["name"], strategy=strategy,
                          train={"num_train_epochs": epochs})
    result = hftransfer.train(recipe, output_dir=tmp_path / "run")
    assert result.metrics["train"]["steps"] == 2 * epochs and np.isfinite(result.metrics["train"]["loss"])
    source, trained = weights(tiny_w2v_dir), weights(result.run_dir)
    if name == "scratch":
        assert "transfer" not in result.metrics
        assert changed(source, trained, "wav2vec2.encoder.layers.0.")
        return
    assert result.metrics["transfer"]["distance_from_source"] > 0
    if name == "partial-freeze":  # freeze_layers 0.5: the feature encoder + layer 1 of 2
        assert not changed(source, trained, "wav2vec2.feature_extractor.")
        assert not changed(source, trained, "wav2vec2.encoder.layers.0.")
        assert changed(source, trained, "wav2vec2.encoder.layers.1.")
        frozen = sum(p.numel() for n, p in source.items() if not n.startswith("wav2vec2.encoder.layers.1."))
        assert result.metrics["transfer"]["frozen_at_end"] == frozen
    if name == "gradual":  # layer 0 thaws at step 2, the embeddings would at step 4 (the end)
        assert changed(source, trained, "wav2vec2.encoder.layers.0.")
        assert not changed(source, trained, "wav2vec2.feature_extractor.")


# ---------------------------------------------------------------------- outside the kit


def test_pipeline_outside_the_kit_matches_predict(runs, audio_folders, capsys, tmp_path):
    files = [str(p) for p in sorted((audio_folders / "test").rglob("*.wav"))[::2]]
    kit = {}
    for name in ("full", "inline", "lora", "feature-extraction"):
        assert main(["predict", str(runs[name].run_dir), "--json", *files]) == 0
        kit[name] = json.loads(capsys.readouterr().out)
        assert [set(r) for r in kit[name]] == [{"label", "score"}] * len(files)
    lora = runs["lora"].run_dir
    base = json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"]
    script = textwrap.dedent(f"""
        import json, sys
        import soundfile as sf
        from peft import PeftModel
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification, pipeline
        clips = [dict(zip(("raw", "sampling_rate"), sf.read(f, dtype="float32"))) for f in {files!r}]
        out = {{}}
        for name, run in (("full", {str(runs["full"].run_dir)!r}), ("inline", {str(runs["inline"].run_dir)!r}),
                          ("feature-extraction", {str(runs["feature-extraction"].run_dir)!r})):
            pipe = pipeline("audio-classification", model=run)
            out[name] = [r[0] for r in pipe([dict(c) for c in clips])]
        cfg = AutoConfig.from_pretrained({str(lora)!r})
        base = AutoModelForAudioClassification.from_pretrained({base!r}, config=cfg)
        model = PeftModel.from_pretrained(base, {str(lora)!r})
        pipe = pipeline("audio-classification", model=model,
                        feature_extractor=AutoFeatureExtractor.from_pretrained({str(lora)!r}))
        out["lora"] = [r[0] for r in pipe([dict(c) for c in clips])]
        print(json.dumps(out))
    """)
    plain = run_without_the_kit(script, tmp_path)
    for name in kit:
        assert_same_predictions(plain[name], kit[name], name)


@pytest.mark.parametrize("name", ["inline", "feature-extraction"])
def test_evaluate_reproduces_test_metrics(runs, name, capsys):
    # For feature-extraction this checks the export: the saved model scores exactly what the
    # head scored on the cached features.
    assert main(["evaluate", str(runs[name].run_dir), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(runs[name].metrics["test"]["accuracy"])
    assert result["loss"] == pytest.approx(runs[name].metrics["test"]["loss"], abs=1e-4)


# ------------------------------------------------------------------------------ bad input


def _bad_wav_header(path: Path, rate: int) -> None:
    sf.write(path, np.zeros(800, np.float32), RATE)
    raw = bytearray(path.read_bytes())
    raw[24:28] = struct.pack("<I", rate)  # the fmt chunk's sample rate
    path.write_bytes(bytes(raw))


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(3000))


BAD_FILES = {
    "random-bytes": (_random_bytes, ("data.train", "nope.wav", "not a readable audio file")),
    "rate-zero": (lambda p: _bad_wav_header(p, 0), ("nope.wav", "not a readable audio file")),
    "rate-absurd": (lambda p: _bad_wav_header(p, 10_000_000), ("nope.wav", "impossible sample rate")),
    "empty-signal": (lambda p: sf.write(p, np.zeros(0, np.float32), RATE), ("nope.wav", "no audio samples")),
    "zero-bytes": (lambda p: p.write_bytes(b""), ("nope.wav", "not a readable audio file")),
}


@pytest.fixture
def bad_data(tmp_path):
    """A copy of a small audio-folder layout to break."""
    return write_folders(tmp_path / "data", counts=(("train", 2),))


def _train_fails(capsys, work, recipe: dict, *needles: str) -> None:
    import yaml

    path = work.parent / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    before = tree(work)
    rc, _out, err = run_cli(capsys, "train", path)
    assert_cli_error(rc, err, *needles)
    assert tree(work) == before  # no runs/ directory, no staging, nothing


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_audio_file_is_one_error_line(case, capsys, work, bad_data, tiny_w2v_dir):
    make, needles = BAD_FILES[case]
    make(bad_data / "train" / "low" / "nope.wav")
    recipe = audio_recipe(tiny_w2v_dir, bad_data, data={"test": None, "validation": None})
    _train_fails(capsys, work, recipe, *needles)


def test_empty_label_folder(capsys, work, bad_data, tiny_w2v_dir):
    (bad_data / "train" / "silence").mkdir()
    (bad_data / "train" / "silence" / "notes.txt").write_text("no clips yet")
    recipe = audio_recipe(tiny_w2v_dir, bad_data, data={"test": None, "validation": None})
    _train_fails(capsys, work, recipe, "label folder", "silence", "holds no audio files")


def test_loose_audio_files_in_the_split_folder(capsys, work, bad_data, tiny_w2v_dir):
    sf.write(bad_data / "train" / "stray.wav", np.zeros(800, np.float32), RATE)
    recipe = audio_recipe(tiny_w2v_dir, bad_data, data={"test": None, "validation": None})
    _train_fails(capsys, work, recipe, "stray.wav", "one subfolder per label")


def test_table_mistakes(capsys, work, tmp_path, audio_table, tiny_w2v_dir):
    good = (audio_table / "train.csv").read_text().splitlines()
    data = tmp_path / "table"
    data.mkdir()
    (data / "clips").symlink_to(audio_table / "clips")
    (data / "train.csv").write_text("\n".join(good) + "\n")
    recipe = audio_recipe(tiny_w2v_dir, data, suffix=".csv", data={"test": None, "validation": None})
    _train_fails(capsys, work, recipe, "column 'audio' (task.audio_column) not found", "clip, kind")
    (data / "train.csv").write_text("\n".join(good[:3] + ["clips/missing.wav,low"] + good[3:]) + "\n")
    recipe["task"] = {"type": "audio-classification", "audio_column": "clip", "label_column": "kind"}
    _train_fails(capsys, work, recipe, "row 3", "'clips/missing.wav' does not exist")


def test_predict_bad_inputs(runs, capsys, work, tmp_path):
    run = runs["full"].run_dir
    rc, _out, err = run_cli(capsys, "predict", run, "missing.wav")
    assert_cli_error(rc, err, "missing.wav", "does not exist")
    _random_bytes(tmp_path / "noise.wav")
    rc, _out, err = run_cli(capsys, "predict", run, tmp_path / "noise.wav")
    assert_cli_error(rc, err, "noise.wav", "not a readable audio file")

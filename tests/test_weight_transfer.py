"""Cross-architecture weight transfer (model.init): depth by layer maps, width by weight
selection and by function-preserving growth, the report, and what it refuses."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import refused, run_without_the_kit, user_error
from test_image import TINY_VIT
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    ViTConfig,
    ViTForImageClassification,
)

import hftransfer
from hftransfer import weight_transfer
from hftransfer.errors import HFTransferError

BERT = dict(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=48, num_labels=3)


def source_bert(**changes) -> BertForSequenceClassification:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**{**BERT, **changes}))
    with torch.no_grad():  # LayerNorms and biases away from 1 and 0, so a mistake shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def reshaped(source, init: dict, fresh: set[str] | None = None):
    chosen = weight_transfer.plan(source.config, init)
    target = type(source)(chosen.config).eval()
    report = weight_transfer.transfer(source, target, chosen, fresh or set())
    return target, report, chosen


def tokens(n: int = 3, length: int = 11) -> dict:
    torch.manual_seed(1)
    return {"input_ids": torch.randint(0, BERT["vocab_size"], (n, length)),
            "attention_mask": torch.ones(n, length, dtype=torch.long)}


def test_layer_maps():
    assert weight_transfer.layer_map(6, 3, "uniform") == [0, 3, 5]
    assert weight_transfer.layer_map(12, 4, "uniform") == [0, 4, 7, 11]
    assert weight_transfer.layer_map(6, 3, "bottom") == [0, 1, 2]
    assert weight_transfer.layer_map(2, 5, "stack") == [0, 1, 0, 1, 0]
    assert weight_transfer.layer_map(6, 2, [1, 4]) == [1, 4]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_bottom_k_student_computes_the_sources_hidden_state_k(k):
    source = source_bert()
    student, report, _ = reshaped(source, {"num_hidden_layers": k, "layers": "bottom"})
    inputs = tokens()
    with torch.no_grad():
        expected = source.bert(**inputs, output_hidden_states=True).hidden_states[k]
        got = student.bert(**inputs).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert {row["how"] for row in report} == {"copied"}
    assert student.config.num_hidden_layers == k


def test_uniform_layers_copy_the_chosen_layers_whole():
    source = source_bert()
    student, report, chosen = reshaped(source, {"num_hidden_layers": 2, "layers": "uniform"})
    assert chosen.layers == [0, 3]
    rows = {r["tensor"]: r for r in report}
    assert rows["bert.encoder.layer.1.output.dense.weight"]["from"] == "bert.encoder.layer.3.output.dense.weight"
    torch.testing.assert_close(student.bert.encoder.layer[1].output.dense.weight,
                               source.bert.encoder.layer[3].output.dense.weight)


def test_selection_at_equal_sizes_is_the_identity():
    source = source_bert()
    same, report, _ = reshaped(source, {"hidden_size": 32, "width": "select"})
    for (name, a), (_, b) in zip(source.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a, b), name
    assert {row["how"] for row in report} == {"copied"}


def test_selection_keeps_evenly_spaced_units_in_every_tensor():
    source = source_bert()
    narrow, report, _ = reshaped(source, {"hidden_size": 16, "intermediate_size": 32})
    hidden = torch.arange(0, 32, 2)
    sd, src = narrow.state_dict(), source.state_dict()
    torch.testing.assert_close(sd["bert.embeddings.word_embeddings.weight"],
                               src["bert.embeddings.word_embeddings.weight"][:, hidden])
    # Heads keep their count (4) and evenly spaced dimensions inside each head (4 of 8).
    per_head = torch.tensor([h * 8 + d for h in range(4) for d in (0, 2, 4, 6)])
    torch.testing.assert_close(sd["bert.encoder.layer.0.attention.self.query.weight"],
                               src["bert.encoder.layer.0.attention.self.query.weight"][per_head][:, hidden])
    torch.testing.assert_close(sd["bert.encoder.layer.0.output.dense.weight"],
                               src["bert.encoder.layer.0.output.dense.weight"][hidden][:, torch.arange(0, 64, 2)])
    assert narrow.config.num_attention_heads == 4
    kinds = {row["how"] for row in report}
    assert kinds == {"selected", "copied"}  # copied: the position and type tables' rows, the head bias
    with torch.no_grad():
        assert torch.isfinite(narrow(**tokens()).logits).all()


@pytest.mark.parametrize("changes", [
    {"hidden_size": 64, "intermediate_size": 128},                           # wider heads
    {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 8},  # more heads
    {"intermediate_size": 192},                                              # a wider MLP only
])
def test_growth_by_an_integer_factor_computes_the_same_function(changes):
    source = source_bert()
    wide, report, _ = reshaped(source, changes)
    inputs = tokens()
    with torch.no_grad():
        torch.testing.assert_close(wide(**inputs).logits, source(**inputs).logits, rtol=0, atol=1e-4)
    assert "grown" in {row["how"] for row in report}


def test_vit_growth_and_depth():
    torch.manual_seed(0)
    source = ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=2)).eval()
    pixels = torch.randn(2, 3, 16, 16)
    wide, _, _ = reshaped(source, {"hidden_size": source.config.hidden_size * 2,
                                   "intermediate_size": source.config.intermediate_size * 2})
    with torch.no_grad():
        torch.testing.assert_close(wide(pixel_values=pixels).logits, source(pixel_values=pixels).logits,
                                   rtol=0, atol=1e-4)
        shallow, _, _ = reshaped(source, {"num_hidden_layers": 1, "layers": "bottom"})
        expected = source.vit(pixel_values=pixels, output_hidden_states=True).hidden_states[1]
        got = shallow.vit(pixel_values=pixels, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(got, expected)


def test_a_fresh_head_stays_new():
    source = source_bert()
    _, report, _ = reshaped(source, {"num_hidden_layers": 2}, fresh={"classifier.weight", "classifier.bias"})
    rows = {r["tensor"]: r for r in report}
    assert rows["classifier.weight"]["how"] == "new" and rows["classifier.weight"]["from"] is None


@pytest.mark.parametrize("init, needles", [
    ({"num_hidden_layers": 2, "layers": [0, 9]}, ["out of range", "0 to 3"]),
    ({"num_hidden_layers": 2, "layers": [2, 1]}, ["not increasing"]),
    ({"layers": "middle"}, ["not a layer map", "bottom, uniform, stack"]),
    ({"num_hidden_layers": 6, "layers": "bottom"}, ["layers: stack"]),
    ({"hidden_size": 64, "width": "select"}, ["larger than the source's 32", "weight selection"]),
    ({"hidden_size": 48}, ["not a whole multiple", "integer"]),
    ({"hidden_size": 24, "num_attention_heads": 5}, ["not divisible by num_attention_heads"]),
    ({"hidden_sise": 16}, ["hidden_sise", "neither a field"]),
    ({"width": "shrink"}, ["model.init.width"]),
])
def test_shapes_the_mapper_cannot_fill(init, needles):
    with pytest.raises(HFTransferError) as err:
        weight_transfer.plan(source_bert().config, init)
    for needle in needles:
        assert needle in str(err.value)


def test_families_it_cannot_change():
    with pytest.raises(HFTransferError, match="width in bert, roberta"):
        weight_transfer.plan(DistilBertConfig(), {"hidden_size": 384})
    assert weight_transfer.plan(DistilBertConfig(), {"num_hidden_layers": 2}).layers == [0, 5]
    with pytest.raises(HFTransferError, match="'vit' network but the source is 'bert'"):
        weight_transfer.plan(BertConfig(), {}, ViTConfig())


# --------------------------------------------------------------------------- through the kit
@pytest.fixture
def deep_model_dir(tmp_path_factory):
    """A 4-layer tiny BERT with the embedded MiniLM's tokenizer (a source to shrink)."""
    from transformers import AutoTokenizer, BertModel

    from hftransfer.models import embedded_model_path

    out = tmp_path_factory.mktemp("deep-bert")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
              ).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_a_reshaped_network_trains_and_loads_without_the_kit(tmp_path, deep_model_dir, toy_data, tiny_recipe):
    recipe = tiny_recipe("full", model={"name_or_path": str(deep_model_dir),
                                        "init": {"num_hidden_layers": 2, "layers": "uniform", "hidden_size": 16}})
    run = tmp_path / "run"
    result = hftransfer.train(recipe, output_dir=run)
    init = result.metrics["init"]
    assert init["layers"] == [0, 3] and init["changed"]["hidden_size"] == 16
    assert init["tensors"]["selected"] > 0 and init["tensors"]["new"] == 2  # the classifier
    report = json.loads((run / "weight_transfer.json").read_text())
    assert {r["how"] for r in report} >= {"selected", "new"}
    card = (run / "README.md").read_text()
    assert "layers from the source | 0, 3" in card and "weight_transfer.json" in card
    # A plain transformers model of the new shape: pipeline() loads it and agrees with the kit.
    texts = ["a good film", "an awful day"]
    labels, depth = run_without_the_kit(
        "import json\nfrom transformers import pipeline\n"
        f"clf = pipeline('text-classification', model={str(run)!r})\n"
        f"print(json.dumps([[clf(t)[0]['label'] for t in {texts!r}], clf.model.config.num_hidden_layers]))\n",
        cwd=tmp_path)
    assert depth == 2
    assert labels == [p["label"] for p in hftransfer.predict(run, texts)]


def test_a_random_twin_and_the_refusals(tmp_path, deep_model_dir, tiny_recipe, capsys):
    twin = tiny_recipe("full", model={"name_or_path": str(deep_model_dir),
                                      "init": {"num_hidden_layers": 2, "weights": "random"}})
    result = hftransfer.train(twin, output_dir=tmp_path / "twin")
    assert result.metrics["init"]["tensors"] == {"new": len(json.loads(
        (tmp_path / "twin" / "weight_transfer.json").read_text()))}
    assert result.metrics["base_model"].startswith("random-init")
    scratch = tiny_recipe("scratch", model={"name_or_path": str(deep_model_dir), "init": {"num_hidden_layers": 1}})
    hftransfer.train(scratch, output_dir=tmp_path / "scratch")
    assert json.loads((tmp_path / "scratch" / "config.json").read_text())["num_hidden_layers"] == 1

    lora = tiny_recipe("lora", model={"name_or_path": str(deep_model_dir), "init": {"num_hidden_layers": 2}})
    user_error("model.init builds a network that exists nowhere else", call=lambda: hftransfer.train(lora))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe("full", model={"name_or_path": str(deep_model_dir),
                                                              "init": {"num_hidden_layers": 2, "layers": [3, 1]}})))
    for argv in (["validate", str(path)], ["train", str(path), "--output-dir", str(tmp_path / "out")]):
        refused(capsys, tmp_path, argv, "not increasing")

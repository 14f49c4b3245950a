"""Prompts: resolved from the spec and the model, applied to every training column, evaluator and
mining run as sentence-transformers applies them, and searchable like any shared setting."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from lossweep.sweep import data as sweep_data
from lossweep.sweep import negatives
from lossweep.sweep.evaluate import RetrievalEvaluator, STSEvaluator
from lossweep.sweep.models import load_model
from lossweep.sweep.prompts import Prompts, resolve, spec_prompts
from lossweep.sweep.space import build_space, trial_spec
from lossweep.sweep.spec import SpecError, parse_spec
from lossweep.sweep.step import collate

E5 = Prompts("query: ", "passage: ", source="spec")


MNRL = "MultipleNegativesRankingLoss"


def spec_of(model: str, **fields) -> dict:
    base = {"name": "p", "model": model, "train": {"path": "x"}, "loss": {"name": MNRL}, "training": {"steps": 2}}
    return base | fields


def test_the_model_s_own_prompts_are_the_default_and_none_turns_them_off(tiny_prompted_model_path, tiny_model_path):
    own = spec_prompts(parse_spec(spec_of(tiny_prompted_model_path)))
    assert (own.query, own.document, own.source) == ("query: ", "passage: ", "model")
    assert "the model's own" in own.describe()
    assert not spec_prompts(parse_spec(spec_of(tiny_model_path))).any  # a model that declares none
    off = spec_prompts(parse_spec(spec_of(tiny_prompted_model_path, prompts="none")))
    assert (off.query, off.document) == ("", "")
    mine = spec_prompts(parse_spec(spec_of(tiny_model_path, prompts={"query": "q: ", "columns": {"positive": "a: "}})))
    assert mine.for_columns(["anchor", "positive", "negative"], labelled=False) == ["q: ", "a: ", ""]
    assert mine.params()["applied_prompts.query"] == "q: "


def decoded(model, features: dict) -> list[str]:
    return model.tokenizer.batch_decode(features["input_ids"], skip_special_tokens=True)


def test_training_columns_carry_their_prompt_and_labelled_rows_are_symmetric(tiny_model_path):
    model = load_model(tiny_model_path)
    pairs = {"anchor": ["what is a wing"], "positive": ["a wing lifts"]}
    features, _ = collate(model, pairs, prompts=E5)
    assert decoded(model, features[0]) == ["query : what is a wing"]
    assert decoded(model, features[1]) == ["passage : a wing lifts"]
    assert features[0]["prompt_length"] == 3  # [CLS] query : (pooling may leave the prompt out)
    scored = {"sentence1": ["a wing"], "sentence2": ["a fin"], "score": [0.5]}
    features, _ = collate(model, scored, prompts=E5)
    assert [decoded(model, f)[0] for f in features] == ["query : a wing", "query : a fin"]
    features, _ = collate(model, pairs, prompts=Prompts())
    assert decoded(model, features[0]) == ["what is a wing"] and "prompt_length" not in features[0]


def test_training_with_prompts_is_not_training_without(tiny_model_path):
    model = load_model(tiny_model_path)
    loss = MultipleNegativesRankingLoss(model)
    rows = {"anchor": ["wing lift", "engine heat", "shock wave"], "positive": ["lift of wings", "heat", "waves"]}
    values = [loss(*collate(model, rows, prompts=prompts)).item() for prompts in (Prompts(), E5)]
    assert abs(values[0] - values[1]) > 1e-4


@pytest.fixture(scope="module")
def cranfield(data_dir):
    return sweep_data.load_beir(data_dir / "cranfield", "test", limit=30)


def test_retrieval_is_scored_with_the_prompts_as_sentence_transformers_scores_it(tiny_prompted_model_path, cranfield):
    model = load_model(tiny_prompted_model_path)
    ours = RetrievalEvaluator("c", cranfield, prompts=E5)(model).metrics
    reference = InformationRetrievalEvaluator(
        cranfield.queries,
        cranfield.corpus,
        {q: set(d) for q, d in cranfield.qrels.items()},
        name="ref",
        query_prompt="query: ",
        corpus_prompt="passage: ",
        write_csv=False,
    )(model)
    assert ours["eval/c/mrr_at_10"] == pytest.approx(reference["ref_cosine_mrr@10"], abs=1e-6)
    off = RetrievalEvaluator("c", cranfield, prompts=Prompts())(model).metrics  # '' overrides the model's own
    assert abs(off["eval/c/mrr_at_10"] - ours["eval/c/mrr_at_10"]) > 1e-6
    default = RetrievalEvaluator("c", cranfield)(model).metrics  # no prompts given: the model's own apply
    assert default["eval/c/mrr_at_10"] == pytest.approx(ours["eval/c/mrr_at_10"], abs=1e-9)


def test_symmetric_sets_encode_both_sides_as_queries(tiny_model_path):
    model = load_model(tiny_model_path)
    rows = datasets.Dataset.from_dict(
        {"s1": ["a wing", "a fin", "heat"], "s2": ["wings", "fins", "cold"], "score": [1, 2, 3]}
    )
    seen = []
    original = model.encode
    model.encode = lambda texts, prompt=None, **kwargs: seen.append(prompt) or original(texts, prompt=prompt, **kwargs)
    STSEvaluator("s", rows, prompts=E5)(model)
    assert seen == ["query: ", "query: "]


def test_mining_uses_the_prompts_and_keys_its_cache_by_them(tiny_prompted_model_path, tiny_model_path):
    mining = {"num_negatives": 1}
    own = negatives.knobs(parse_spec(spec_of(tiny_prompted_model_path, negatives=mining)))
    assert (own.query_prompt, own.document_prompt) == ("query: ", "passage: ")
    other = negatives.knobs(
        parse_spec(spec_of(tiny_prompted_model_path, negatives=mining | {"model": tiny_model_path}))
    )
    assert (other.query_prompt, other.document_prompt) == ("", "")  # another mining model: its own (none)
    off = negatives.knobs(parse_spec(spec_of(tiny_prompted_model_path, negatives=mining, prompts="none")))
    pairs = datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})
    inputs = negatives.MiningInput(pairs, None, {})
    assert negatives.cache_key(inputs, own, "m") != negatives.cache_key(inputs, off, "m")


def test_prompts_are_a_sweep_dimension(tiny_prompted_model_path):
    e5 = {"query": "query: ", "document": "passage: "}
    spec = parse_spec(
        spec_of(
            tiny_prompted_model_path,
            eval=[{"type": "sts", "path": "y"}],
            sweep={"losses": [MNRL], "scheduler": "none", "shared": {"prompts": {"choices": ["none", "model", e5]}}},
        )
    )
    space, _ = build_space(spec, datasets.Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]}))
    (dim,) = space.shared
    assert list(dim.choices) == ["none", "model", e5]
    config = {"loss": MNRL, "shared": {"prompts": e5}}
    chosen = trial_spec(spec, space, config)
    assert spec_prompts(chosen).query == "query: " and spec_prompts(chosen).source == "spec"
    assert spec_prompts(trial_spec(spec, space, config | {"shared": {"prompts": "none"}})).query == ""
    with pytest.raises(SpecError, match="sweep.shared.prompts"):
        searched = {"scheduler": "none", "shared": {"prompts": {"low": 1, "high": 2}}}
        parse_spec(spec_of(tiny_prompted_model_path, eval=[{"type": "sts", "path": "y"}], sweep=searched))


def test_a_trained_model_declares_the_prompts_it_was_trained_with(tiny_prompted_model_path, tmp_path):
    model = load_model(tiny_prompted_model_path)
    Prompts("q: ", "d: ", source="spec").declare(model)
    model.save(str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "config_sentence_transformers.json").read_text())["prompts"]
    assert saved == {"query": "q: ", "document": "d: "}
    assert resolve("model", str(tmp_path / "out")).document == "d: "
    assert torch.is_tensor(load_model(str(tmp_path / "out")).encode_query(["x"], convert_to_tensor=True))

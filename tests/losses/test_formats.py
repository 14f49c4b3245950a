"""A dataset a loss cannot take is refused with the loss, the columns it needs, what was found and the fix."""

from __future__ import annotations

import datasets
import pytest

from lossweep.losses import DataFormatError, LossConfig, check_dataset, fit_report
from lossweep.sweep import data


def refusal(loss: str | LossConfig, dataset) -> str:
    with pytest.raises(DataFormatError) as caught:
        check_dataset(loss, dataset, name="train")
    return str(caught.value)


def test_scored_pairs_refused_by_a_loss_that_takes_no_label(data_dir):
    message = refusal("MultipleNegativesRankingLoss", data.stsb(data_dir / "stsbenchmark", "dev"))
    assert message.startswith("MultipleNegativesRankingLoss cannot train on train: it takes no label")
    assert "found:    text columns ['sentence1', 'sentence2'] and label 'score' (float64 score)" in message
    assert "dataset.remove_columns('score')" in message
    assert "CoSENTLoss" in message and "AnglELoss" in message and "CosineSimilarityLoss" in message


def test_pairs_without_scores_refused_by_cosent(data_dir):
    message = refusal("CoSENTLoss", data.beir_pairs(data_dir / "cranfield", "train"))
    assert "it needs a label column (a float similarity score), but the dataset has none" in message
    assert "add a 'label' column holding a float similarity score" in message
    assert "MultipleNegativesRankingLoss" in message  # what does fit pairs


def test_pairs_refused_by_triplet_loss(data_dir):
    message = refusal("TripletLoss", data.snli_pairs(data_dir / "snli", "dev"))
    assert "it takes (anchor, positive, negative) + no label column, but the dataset has 2 text columns" in message
    assert "keep 3 text columns in the order (anchor, positive, negative)" in message


def test_float_scores_refused_by_contrastive_loss(data_dir):
    message = refusal("ContrastiveLoss", data.stsb(data_dir / "stsbenchmark", "dev"))
    assert "it needs a 0/1 label (1 = similar pair), but label 'score' holds float64 score" in message
    assert "convert label 'score' to a 0/1 label" in message


def test_string_class_names_refused_with_the_encoding_fix():
    dataset = datasets.Dataset.from_dict({"text": ["card lost", "top up failed"], "label": ["lost_card", "top_up"]})
    message = refusal("BatchHardTripletLoss", dataset)
    assert "label column 'label' holds strings (e.g. 'lost_card'), not numbers" in message
    assert "fix:      map the label strings to class ids: dataset.class_encode_column('label')" in message


def test_classes_with_one_example_refused_by_batch_triplet_losses(data_dir):
    full = data.banking77(data_dir / "banking77", "test")
    one_per_class = full.select([full["label"].index(c) for c in range(5)])
    message = refusal("BatchAllTripletLoss", one_per_class)
    assert "0 classes with 2 or more examples; a batch-triplet loss needs at least 2 such classes" in message


def test_empty_texts_and_non_text_columns_are_named():
    dataset = datasets.Dataset.from_dict({"anchor": ["a query", " "], "positive": ["a doc", "b doc"], "doc_id": [1, 2]})
    message = refusal("MultipleNegativesRankingLoss", dataset)
    assert "column 'anchor' has 1 empty or missing texts" in message
    assert "column 'doc_id' holds Value('int64'), not text" in message


def test_teacher_scores_of_the_wrong_length():
    dataset = datasets.Dataset.from_dict(
        {"query": ["q"], "positive": ["p"], "negative": ["n"], "label": [[0.9, 0.1, 0.3]]}
    )
    message = refusal("DistillKLDivLoss", dataset)
    assert "it needs 2 teacher scores per row (one per candidate column), but label 'label' holds 3" in message


def test_modifier_takes_its_base_format(data_dir):
    config = LossConfig("MatryoshkaLoss", {}, LossConfig("MultipleNegativesRankingLoss"))
    message = refusal(config, data.paws(data_dir / "paws", "dev"))
    assert message.startswith("MatryoshkaLoss(MultipleNegativesRankingLoss) cannot train on train")
    assert "rows labelled as negatives would be trained as positives" in message


def test_features_alone_are_enough_to_refuse_before_loading_data():
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string")})
    assert "needs a label column" in refusal("SoftmaxLoss", features)


def test_fit_report_lists_what_fits_each_real_dataset(data_dir):
    def fitting(dataset) -> set[str]:
        return {f.loss for f in fit_report(dataset) if f.ok}

    assert fitting(data.stsb(data_dir / "stsbenchmark", "dev")) == {"AnglELoss", "CoSENTLoss", "CosineSimilarityLoss"}
    assert {"BatchAllTripletLoss", "BatchHardTripletLoss", "BatchSemiHardTripletLoss"} <= fitting(
        data.banking77(data_dir / "banking77", "test")
    )
    assert {"ContrastiveLoss", "OnlineContrastiveLoss", "SoftmaxLoss"} <= fitting(data.paws(data_dir / "paws", "dev"))
    triplets = fitting(data.snli_triplets(data_dir / "snli", "dev"))
    assert {"TripletLoss", "MultipleNegativesRankingLoss", "GISTEmbedLoss"} <= triplets
    assert "MultipleNegativesSymmetricRankingLoss" not in triplets

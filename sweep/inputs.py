"""What a spec points at: its data sets and model, resolved, loaded and checked before any run starts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from lossweep.losses import DataFormatError, LabelKind, check_dataset, get_entry
from lossweep.losses.fit import fit

from . import data as d
from . import holdout, storage
from . import negatives as neg
from .models import ModelError, load_model, model_dimension, model_fingerprint, resolve_model
from .sampler import steps_per_epoch
from .spec import DataRef, EvalRef, LossSpec, Spec, SpecError
from .teacher import with_teacher_embeddings, with_teacher_scores
from .tracking import DataInput


def data_dir(spec: Spec) -> Path:
    """The spec's data_dir, else `$LOSSWEEP_DATA_DIR`, else ../shared/data."""
    return Path(spec.data_dir).expanduser() if spec.data_dir else d.default_data_dir()


def resolve_paths(spec: Spec) -> Spec:
    """The spec with data_dir, a local model folder and output_dir made absolute from the driver's
    working directory: Ray workers run elsewhere and must find the same files."""
    changes: dict = {
        "data_dir": str(data_dir(spec).resolve()),
        "output_dir": storage.absolute(spec.output_dir),
    }
    for field in ("model", "teacher"):
        ref = getattr(spec, field)
        if ref and Path(ref).expanduser().exists():
            changes[field] = str(Path(ref).expanduser().resolve())
    return spec.replace(**changes)


def _local_path(ref: DataRef | EvalRef, spec: Spec) -> Path:
    path = Path(ref.path).expanduser()
    return path if path.is_absolute() else data_dir(spec) / path


def load_ref(ref: DataRef | EvalRef, spec: Spec) -> datasets.Dataset:
    """The rows a data reference names (local path or hub id), cut to `limit`."""
    if ref.hub is not None:
        dataset = d.load_hub(ref.hub, ref.split, ref.subset)
    else:
        dataset = d.load_local(_local_path(ref, spec), ref.split, ref.view, spec.training.seed)
    return dataset.select(range(min(ref.limit, len(dataset)))) if ref.limit else dataset


def _load_retrieval(ref: DataRef | EvalRef, spec: Spec, split: str, limit: int | None = None) -> d.RetrievalSet:
    """A BEIR split of the folder (or MTEB-layout hub dataset) a reference names."""
    if ref.hub is not None:
        return d.load_beir_hub(ref.hub, split, limit)
    folder = _local_path(ref, spec)
    if not (folder / "corpus.jsonl").is_file():
        raise d.DataError(f"{folder}: retrieval evaluation needs a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    return d.load_beir(folder, split, limit)


def train_pairs(spec: Spec) -> datasets.Dataset:
    """The training rows as the data gives them, without the held-out validation rows."""
    return _without_holdout(load_ref(spec.train, spec), spec)


def train_dataset(spec: Spec) -> datasets.Dataset:
    """The rows the loss trains on: the training rows without the held-out validation rows, with
    mined hard negatives in the loss's shape when it uses them, and teacher labels when it distils."""
    dataset = train_pairs(spec)
    if uses_negatives(spec, dataset.features):
        directory = negatives_dir(spec, mining_input(spec, dataset))
        dataset = neg.shape(neg.read(directory), negatives_shape(spec))
    if spec.teacher and "label" not in dataset.column_names:
        entry = get_entry(spec.loss.base.name if spec.loss.base else spec.loss.name)
        wants = {fmt.label for fmt in entry.formats}
        teacher = load_model(spec.teacher)
        if wants & {LabelKind.TEACHER_SCORES, LabelKind.TEACHER_MARGINS}:
            dataset = with_teacher_scores(dataset, teacher)
        elif LabelKind.TEACHER_EMBEDDINGS in wants:
            dataset = with_teacher_embeddings(dataset, teacher)
    return dataset


# --- Mined hard negatives -----------------------------------------------------------------------------------


def negatives_shape(spec: Spec) -> str | None:
    """The mined shape the spec's loss takes, or None."""
    return neg.shape_for(spec.loss.leaf, spec.negatives.shape if spec.negatives else "auto")


def uses_negatives(spec: Spec, pairs: datasets.Features) -> bool:
    """Whether the spec's loss trains on mined negatives: when it asks to (`loss.negatives: true`), or,
    left to lossweep, when it cannot take the pairs as they are but can take a mined shape."""
    if spec.negatives is None or spec.loss.negatives is False:
        return False
    if spec.loss.negatives:
        return True
    return not fit(spec.loss.leaf, pairs).ok and negatives_shape(spec) is not None


def mining_input(spec: Spec, pairs: datasets.Dataset) -> neg.MiningInput:
    """What mining needs: the training pairs, the corpus to mine from (a BEIR folder's whole corpus,
    else the positives) and, per anchor, every document judged relevant to its query."""
    ref = spec.train
    is_beir = ref.hub is not None or (_local_path(ref, spec) / "corpus.jsonl").is_file()
    if not is_beir or ref.view not in (None, "pairs", "top-pairs"):
        return neg.MiningInput(pairs, None, {})
    judged = _load_retrieval(ref, spec, ref.split)
    relevant = {judged.queries[q]: {judged.corpus[doc] for doc in docs} for q, docs in judged.qrels.items()}
    return neg.MiningInput(pairs, list(judged.corpus.values()), relevant)


def negatives_dir(spec: Spec, inputs: neg.MiningInput) -> Path:
    """Where the negatives this spec asks for are (or will be) cached."""
    knobs = neg.knobs(spec)
    return neg.cache_dir(spec.output_dir, neg.cache_key(inputs, knobs, model_fingerprint(knobs.model)))


def _negatives_problems(spec: Spec, pairs: datasets.Dataset, variants: list[Spec]) -> list[str]:
    """Mining knobs of every variant (the spec, and each searched mining config) checked before Ray."""
    inputs = mining_input(spec, pairs)
    found: list[str] = []
    for variant in variants:
        for problem in neg.problems(inputs, neg.knobs(variant), resolve_model):
            if problem not in found:
                found.append(problem)
    return found


@dataclass(frozen=True)
class EvalSet:
    """A loaded evaluation set: a retrieval split, or rows of scored pairs or triplets."""

    ref: EvalRef
    retrieval: d.RetrievalSet | None = None
    rows: datasets.Dataset | None = None


def _without_holdout(dataset: datasets.Dataset, spec: Spec) -> datasets.Dataset:
    """Training rows minus those of the validation set carved from them (no leakage)."""
    ref = spec.holdout()
    if ref is None:
        return dataset
    if ref.type == "retrieval":
        validation = _carved_retrieval(ref, spec)
        return holdout.without_queries(dataset, set(validation.queries.values()))
    return holdout.without_rows(dataset, holdout.sample_rows(len(dataset), ref.from_train.size, ref.from_train.seed))


def _carved_retrieval(ref: EvalRef, spec: Spec) -> d.RetrievalSet:
    try:
        train = _load_retrieval(spec.train, spec, spec.train.split)
    except d.DataError as error:
        raise d.DataError(f"from_train: retrieval validation is carved from BEIR training data; {error}") from None
    return holdout.validation_retrieval(train, ref.from_train.size, ref.from_train.seed)


def load_eval(ref: EvalRef, spec: Spec) -> EvalSet:
    if ref.from_train is not None and ref.type == "retrieval":
        return EvalSet(ref, retrieval=_carved_retrieval(ref, spec))
    if ref.type == "retrieval":
        return EvalSet(ref, retrieval=_load_retrieval(ref, spec, ref.split, ref.limit))
    if ref.from_train is not None:
        train = load_ref(spec.train, spec)
        rows = train.select(holdout.sample_rows(len(train), ref.from_train.size, ref.from_train.seed))
    else:
        rows = load_ref(ref, spec)
    expected = {"sts": 2, "triplet": 3}[ref.type]
    texts = [c for c in rows.column_names if c not in ("label", "labels", "score", "scores")]
    if len(texts) != expected or (ref.type == "sts" and len(texts) == len(rows.column_names)):
        layout = "(sentence1, sentence2, score)" if ref.type == "sts" else "(anchor, positive, negative)"
        raise d.DataError(f"{ref.label}: {ref.type} evaluation needs rows {layout}; found columns {rows.column_names}")
    return EvalSet(ref, rows=rows)


def validate(spec: Spec, source: str = "spec", load_data: bool = True) -> dict[str, Any]:
    """Every check that runs before Ray starts; raises SpecError listing all problems.

    Returns what it loaded, so callers need not read it again: the training rows as the data gives
    them, validation rows held out (key 'train'), and each eval set (by its name).
    """
    problems: list[str] = []  # the spec's own values were checked when it was read
    loaded: dict[str, datasets.Dataset] = {}
    try:
        resolve_model(spec.model)
    except ModelError as error:
        problems.append(f"model: {error}")
    dim = model_dimension(spec.model)
    searched = spec.sweep.shared.get("matryoshka_dims") if spec.sweep else None
    candidates = [("matryoshka_dims", spec.matryoshka_dims), ("evaluation.dims", spec.evaluation.dims)]
    candidates += (
        [("sweep.shared.matryoshka_dims.choices", c) for c in (searched.choices or ()) if c] if searched else []
    )
    for field, dims in candidates:
        too_big = [x for x in dims or () if dim is not None and x > dim]
        if too_big:
            problems.append(f"{field}: {too_big} exceed the model's embedding size {dim}; use sizes <= {dim}")
    if load_data:
        carved = next((i for i, ref in enumerate(spec.eval) if ref.from_train is not None), None)
        try:
            loaded["train"] = train_pairs(spec)
        except (d.DataError, ModelError) as error:
            # A validation set that cannot be carved is its eval entry's fault, reported there below.
            if carved is None or "from_train" not in str(error):
                problems.append(f"train: {error}")
        for i, ref in enumerate(spec.eval):
            try:
                loaded[ref.label] = load_eval(ref, spec)
            except d.DataError as error:
                problems.append(f"eval[{i}]: {error}")
        if "train" in loaded and not any(p.startswith("loss") for p in problems):
            problems += _training_problems(spec, loaded["train"])
        if "train" in loaded and spec.sweep is not None:
            from .space import build_space, space_problems  # the search space needs the data ("all" losses)

            problems += space_problems(build_space(spec, loaded["train"])[0])
    if problems:
        raise SpecError(source, problems)
    return loaded


def _training_problems(spec: Spec, pairs: datasets.Dataset) -> list[str]:
    """The loss must take the rows it will train on: the data, or the negatives mined for it."""
    problems = []
    if spec.negatives is not None:
        problems += _negatives_problems(spec, pairs, spec.mining_variants())
    if uses_negatives(spec, pairs.features):
        if negatives_shape(spec) is None:
            return problems + [
                f"loss: {spec.loss.leaf} cannot take mined negatives in the shape {spec.negatives.shape!r}; "
                "set negatives.shape: auto, or loss.negatives: false"
            ]
        rows: datasets.Dataset | datasets.Features = neg.shaped_features(
            negatives_shape(spec), spec.negatives.num_negatives
        )
    else:
        try:
            rows = train_dataset(spec)
        except (d.DataError, ModelError) as error:
            return problems + [f"train: {error}"]
    try:
        check_dataset(spec.loss_config(), rows, name=_describe(spec.train))
    except DataFormatError as error:
        return problems + [f"train: {error}"]
    if isinstance(rows, datasets.Dataset):
        problems += _sampler_problems(spec, rows)
    return problems


def complete_loss(spec: Spec, dataset: datasets.Dataset) -> Spec:
    """Fill the loss parameters the data determines (SoftmaxLoss's num_labels: the number of classes)."""
    return spec.replace(loss=with_data_params(spec.loss, dataset))


def with_data_params(loss: LossSpec, dataset: datasets.Dataset) -> LossSpec:
    """`loss` (or its base, for a modifier) with the parameters its registry entry reads off the data."""
    if loss.base is not None:
        return loss.replace(base=with_data_params(loss.base, dataset))
    filled = get_entry(loss.name).from_data(loss.params, dataset)
    return loss.replace(params=dict(loss.params) | filled) if filled else loss


def _sampler_problems(spec: Spec, dataset: datasets.Dataset) -> list[str]:
    """The batch the loss needs must be buildable from this data (e.g. enough distinct texts)."""
    sampler = get_entry(spec.loss.base.name if spec.loss.base else spec.loss.name).sampler
    size = spec.training.batch_size
    if sampler == "group_by_label" and size % 2:
        return [f"training.batch_size: {size} is odd; batch-triplet losses take labels in pairs, use an even size"]
    if not steps_per_epoch(dataset, size, sampler, spec.training.seed):
        return [
            f"training.batch_size: {len(dataset)} training rows cannot fill one global batch of {size} with the "
            f"{sampler} sampler the loss needs (too few distinct texts or labels); lower the batch size or add data"
        ]
    return []


def data_inputs(spec: Spec, loaded: dict[str, Any]) -> list[DataInput]:
    """The training data and each eval set as MLflow dataset inputs: a name, our fingerprint as the
    digest, where it comes from (the MLflow UI lists them in its Dataset column and filters)."""
    inputs = [DataInput(_describe(spec.train), d.fingerprint(loaded["train"]), _source(spec.train, spec), "training")]
    for ref in spec.eval:
        source = "the training data (held out)" if ref.from_train else _source(ref, spec)
        inputs.append(DataInput(ref.label, eval_fingerprint(loaded[ref.label]), source, "evaluation"))
    return inputs


def _source(ref: DataRef | EvalRef, spec: Spec) -> str:
    return f"hf://datasets/{ref.hub}" if ref.hub else str(_local_path(ref, spec))


def eval_fingerprint(eval_set: EvalSet) -> str:
    """A content hash of an eval set: its rows, or its queries, judgements and corpus."""
    if eval_set.rows is not None:
        return d.fingerprint(eval_set.rows)
    data = eval_set.retrieval
    digest = hashlib.sha256(json.dumps([data.queries, data.qrels], sort_keys=True).encode())
    for doc_id in sorted(data.corpus):
        digest.update(f"{doc_id}\t{data.corpus[doc_id]}\n".encode())
    return digest.hexdigest()[:16]


def _describe(ref: DataRef) -> str:
    where = ref.hub or ref.path
    return f"{where} (split {ref.split}{', view ' + ref.view if ref.view else ''})"

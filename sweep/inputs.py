"""What a spec points at: its data sets and model, resolved, loaded and checked before any run starts.

One path rule for every command: a relative data path lies under data_dir (`data.locate`). Eval data
is checked as training data is (text columns of text, no empty texts, labels of the kind the
evaluation reads), so a bad eval file is refused before Ray starts, with its field and the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch

from lossweep.losses import DataFormatError, LabelKind, Sampler, check_dataset, get_entry, inspect_dataset
from lossweep.losses.fit import fit
from lossweep.losses.formats import LABEL_COLUMNS

from . import adapters, data, holdout, negatives, storage, subcorpus
from .models import ModelError, load_model, model_dimension, model_fingerprint, model_problem, resolve_model
from .prompts import MODEL as MODEL_PROMPTS
from .prompts import resolve as resolve_prompts
from .sampler import steps_per_epoch
from .spec import DataRef, EvalRef, LossSpec, Spec, SpecError
from .teacher import with_teacher_embeddings, with_teacher_scores
from .tracking import DataInput


def data_dir(spec: Spec) -> Path:
    """The spec's data_dir, else `$LOSSWEEP_DATA_DIR`, else ../shared/data."""
    return Path(spec.data_dir).expanduser() if spec.data_dir else data.default_data_dir()


def resolve_paths(spec: Spec) -> Spec:
    """The spec with data_dir, a local model folder and output_dir made absolute from the driver's
    working directory: Ray workers run elsewhere and must find the same files."""
    changes: dict = {
        "data_dir": str(data_dir(spec).resolve()),
        "output_dir": storage.absolute(spec.output_dir),
    }
    for name in ("model", "teacher"):
        ref = getattr(spec, name)
        if ref and Path(ref).expanduser().exists():
            changes[name] = str(Path(ref).expanduser().resolve())
    if spec.sweep is not None and spec.sweep.models:
        choices = [c.replace(model=_absolute(c.model), name=c.label) for c in spec.sweep.model_choices()]
        changes["sweep"] = spec.sweep.replace(models=tuple(choices))
    if any(ref.sample is not None for ref in spec.eval):  # every trial's sample is ranked by one model
        changes["eval"] = tuple(
            ref.replace(
                sample=ref.sample.replace(model=_absolute(ref.sample.model or changes.get("model", spec.model)))
            )
            if ref.sample is not None
            else ref
            for ref in spec.eval
        )
    return spec.replace(**changes)


def _absolute(ref: str) -> str:
    """A local model folder as an absolute path; any other reference as it is."""
    return str(Path(ref).expanduser().resolve()) if Path(ref).expanduser().exists() else ref


def _local_path(ref: DataRef | EvalRef, spec: Spec) -> Path:
    origin = "the spec's data_dir" if spec.data_dir else data.data_dir_origin()
    return data.locate(ref.path, data_dir(spec), origin)


def load_ref(ref: DataRef | EvalRef, spec: Spec) -> datasets.Dataset:
    """The rows a data reference names (local path or hub id), columns renamed as it asks, cut to `limit`."""
    if ref.hub is not None:
        dataset = data.load_hub(ref.hub, ref.split, ref.subset)
    else:
        dataset = data.load_local(_local_path(ref, spec), ref.split, ref.view, spec.training.seed)
    dataset = _renamed(dataset, ref)
    return dataset.select(range(min(ref.limit, len(dataset)))) if ref.limit else dataset


def _renamed(dataset: datasets.Dataset, ref: DataRef | EvalRef) -> datasets.Dataset:
    """`columns` renamed (old: new), and a label column of strings turned into class ids on request."""
    missing = [old for old in ref.columns if old not in dataset.column_names]
    if missing:
        raise data.DataError(f"columns: {missing} not in the data, whose columns are {dataset.column_names}")
    if ref.columns:
        dataset = dataset.rename_columns(dict(ref.columns))
    if ref.encode_labels:
        label = next((c for c in dataset.column_names if c in LABEL_COLUMNS), None)
        if label is None:
            raise data.DataError(f"encode_labels: the data has no label column (columns {dataset.column_names})")
        if isinstance(dataset.features[label], datasets.Value) and dataset.features[label].dtype == "string":
            dataset = dataset.class_encode_column(label)
    return dataset


def _beir_folder(ref: DataRef | EvalRef, spec: Spec) -> bool:
    """Whether a reference names a BEIR folder (or an MTEB-layout hub dataset), whatever its view."""
    if ref.hub is not None:
        return data.hub_is_retrieval(ref.hub)
    return (_local_path(ref, spec) / "corpus.jsonl").is_file()


def _load_beir(ref: DataRef | EvalRef, spec: Spec, split: str, limit: int | None = None) -> data.RetrievalSet:
    if ref.hub is not None:
        return data.load_beir_hub(ref.hub, split, limit)
    return data.load_beir(_local_path(ref, spec), split, limit)


def train_documents(spec: Spec) -> list[str]:
    """The training data's documents (every text column after the first), distractors for a
    retrieval set built from pairs: a corpus of only the test positives is too easy."""
    rows = load_ref(spec.train_ref, spec)
    label = next((c for c in rows.column_names if c in LABEL_COLUMNS), None)
    texts = [c for c in rows.column_names if c != label][1:]
    return [text for column in texts for text in rows[column] if isinstance(text, str)]


def _load_retrieval(ref: EvalRef, spec: Spec) -> data.RetrievalSet:
    """A retrieval eval set: a BEIR folder's split (a view turns the folder into rows), or rows of
    pairs whose corpus is their documents plus, unless `corpus: own`, the training data's."""
    if ref.view is None and _beir_folder(ref, spec):
        if ref.corpus is not None:
            raise data.DataError(f"corpus: {ref.corpus!r} is for retrieval from pairs; a BEIR folder has its corpus")
        return _load_beir(ref, spec, ref.split, ref.limit)
    rows = load_ref(ref, spec)
    documents = train_documents(spec) if (ref.corpus or "with_train") == "with_train" else []
    return data.rows_retrieval(rows, documents, source=_where(ref))


def train_pairs(spec: Spec) -> datasets.Dataset:
    """The training rows as the data gives them, without the held-out validation rows."""
    return _without_holdout(load_ref(spec.train_ref, spec), spec)


def train_dataset(spec: Spec) -> datasets.Dataset:
    """The rows the loss trains on: the training rows without the held-out validation rows, with
    mined hard negatives in the loss's shape when it uses them, and teacher labels when it distils."""
    dataset = train_pairs(spec)
    if uses_negatives(spec, dataset.features):
        directory = negatives_dir(spec, mining_input(spec, dataset))
        dataset = negatives.shape(negatives.read(directory), negatives_shape(spec))
    if spec.teacher and "label" not in dataset.column_names:
        entry = get_entry(spec.loss.leaf)
        wants = {fmt.label for fmt in entry.formats}
        teacher = load_model(spec.teacher)
        if wants & {LabelKind.TEACHER_SCORES, LabelKind.TEACHER_MARGINS}:
            dataset = with_teacher_scores(dataset, teacher)
        elif LabelKind.TEACHER_EMBEDDINGS in wants:
            dataset = with_teacher_embeddings(dataset, teacher)
    return dataset


@dataclass(frozen=True)
class TrainingSet:
    """One training set of a run: its name, the rows its loss trains on, and that loss."""

    label: str
    rows: datasets.Dataset
    loss: LossSpec


def training_sets(spec: Spec) -> list[TrainingSet]:
    """The sets a run trains on, each with its loss: the one set with the spec's loss, or each of
    several with its own loss, or the swept loss where it fits (a set it does not fit is left out)."""
    if not spec.mixture:
        return [TrainingSet(spec.train_parts()[0].label, train_dataset(spec), spec.loss)]
    found = []
    for part in spec.train_parts():
        rows = load_ref(part, spec)
        if part.loss is not None or fit(spec.loss_config(), rows).ok:
            found.append(TrainingSet(part.label, rows, part.loss or spec.loss))
    return found


# --- Mined hard negatives -----------------------------------------------------------------------------------


def negatives_shape(spec: Spec) -> str | None:
    """The mined shape the spec's loss takes, or None."""
    return negatives.shape_for(spec.loss.leaf, spec.negatives.shape if spec.negatives else "auto")


def uses_negatives(spec: Spec, pairs: datasets.Features) -> bool:
    """Whether the spec's loss trains on mined negatives: when it asks to (`loss.negatives: true`), or,
    left to lossweep, when it cannot take the pairs as they are but can take a mined shape."""
    if spec.negatives is None or spec.loss.negatives is False:
        return False
    if spec.loss.negatives:
        return True
    return not fit(spec.loss.leaf, pairs).ok and negatives_shape(spec) is not None


def mining_input(spec: Spec, pairs: datasets.Dataset) -> negatives.MiningInput:
    """What mining needs: the training pairs, the corpus to mine from and, per anchor, every document
    judged relevant to its query. A BEIR folder gives its whole corpus and its judgements; rows of
    pairs give their documents (the corpus `type: retrieval` builds from them), and sentence-
    transformers never mines a document the rows pair with the same anchor."""
    ref = spec.train_ref
    if not _beir_folder(ref, spec) or ref.view not in (None, "pairs", "top-pairs"):
        return negatives.MiningInput(pairs, None, {})
    judged = _load_beir(ref, spec, ref.split)
    relevant = {judged.queries[q]: {judged.corpus[doc] for doc in docs} for q, docs in judged.qrels.items()}
    return negatives.MiningInput(pairs, list(judged.corpus.values()), relevant)


def negatives_dir(spec: Spec, inputs: negatives.MiningInput) -> str:
    """Where the negatives this spec asks for are (or will be) cached."""
    knobs = negatives.knobs(spec)
    return negatives.cache_dir(spec.output_dir, negatives.cache_key(inputs, knobs, model_fingerprint(knobs.model)))


def _negatives_problems(spec: Spec, pairs: datasets.Dataset, variants: list[Spec]) -> list[str]:
    """Mining knobs of every variant (the spec, and each searched mining config) checked before Ray."""
    inputs = mining_input(spec, pairs)
    found: list[str] = []
    for variant in variants:
        for problem in negatives.problems(inputs, negatives.knobs(variant), resolve_model):
            if problem not in found:
                found.append(problem)
    return found


# --- Eval sets ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """A loaded evaluation set: a retrieval split, or rows (scored pairs, triplets, class-labelled texts)."""

    ref: EvalRef
    retrieval: data.RetrievalSet | None = None
    rows: datasets.Dataset | None = None


def _without_holdout(dataset: datasets.Dataset, spec: Spec) -> datasets.Dataset:
    """Training rows minus those of the validation set carved from them (no leakage)."""
    ref = spec.holdout()
    if ref is None:
        return dataset
    if ref.type == "retrieval":
        validation = _carved_retrieval(ref, spec, dataset)
        return holdout.without_queries(dataset, set(validation.queries.values()))
    return holdout.without_rows(dataset, _carved_rows(ref, dataset))


def _carved_retrieval(ref: EvalRef, spec: Spec, train: datasets.Dataset | None = None) -> data.RetrievalSet:
    """Held-out training queries: a BEIR folder's (searching its corpus) or distinct anchors of pairs."""
    size, seed = ref.from_train.size, ref.from_train.seed
    if _beir_folder(spec.train_ref, spec):
        if ref.corpus is not None:
            raise data.DataError(f"corpus: {ref.corpus!r} is for retrieval from pairs; a BEIR folder has its corpus")
        return holdout.validation_retrieval(_load_beir(spec.train_ref, spec, spec.train_ref.split), size, seed)
    rows = train if train is not None else load_ref(spec.train_ref, spec)
    return holdout.validation_pairs(rows, size, seed, own_corpus=ref.corpus == "own")


def _carved_rows(ref: EvalRef, train: datasets.Dataset) -> list[int]:
    """The held-out row indices: drawn per class for class-labelled texts, else uniformly."""
    size, seed = ref.from_train.size, ref.from_train.seed
    if ref.type == "classes":
        label = next((c for c in train.column_names if c in LABEL_COLUMNS), None)
        if label is None:
            found = train.column_names
            raise data.DataError(f"from_train: classes are carved from class-labelled texts; found {found}")
        return holdout.sample_stratified(train[label], size, seed)
    return holdout.sample_rows(len(train), size, seed)


LAYOUTS = {  # eval type -> (text columns, label column needed, how it reads)
    "sts": (2, True, "(sentence1, sentence2, score)"),
    "triplet": (3, False, "(anchor, positive, negative)"),
    "classes": (1, True, "(text, label) with a class per text"),
}


def load_eval(ref: EvalRef, spec: Spec, sample: bool = True) -> EvalSet:
    """An eval set, loaded and checked: retrieval from a BEIR folder or from pairs (cut to its `sample`
    unless `sample` is False), or rows."""
    if ref.type == "retrieval":
        retrieval = _carved_retrieval(ref, spec) if ref.from_train is not None else _load_retrieval(ref, spec)
        if sample and ref.sample is not None:
            retrieval = subcorpus.sampled(retrieval, corpus_sample(ref, spec, retrieval)["documents"])
        return EvalSet(ref, retrieval=retrieval)
    if ref.from_train is not None:
        train = load_ref(spec.train_ref, spec)
        rows = train.select(_carved_rows(ref, train))
    else:
        rows = load_ref(ref, spec)
    _check_rows(ref, rows)
    return EvalSet(ref, rows=rows)


def corpus_sample(ref: EvalRef, spec: Spec, full: data.RetrievalSet) -> dict:
    """The cached sample of a retrieval set's corpus (computed now if no run has yet): its documents and
    summary. Ranked by `sample.model` with its own prompts, whatever model a trial trains."""
    request = subcorpus.SampleRequest(ref.sample.size, ref.sample.distractors, ref.sample.seed)
    ranking_model = ref.sample.model or spec.model
    own_prompts = resolve_prompts(MODEL_PROMPTS, ranking_model)
    key = subcorpus.cache_key(
        eval_fingerprint(EvalSet(ref, retrieval=full)),
        model_fingerprint(ranking_model),
        own_prompts.params(),
        request,
    )
    location = storage.join(spec.output_dir, "corpus_samples", f"{key}.json")
    found = subcorpus.read(location)
    if found is not None:
        return found
    settings = spec.evaluation
    return subcorpus.make(
        full,
        request,
        location,
        lambda: load_model(ranking_model, device="cuda" if torch.cuda.is_available() else "cpu"),
        settings.corpus_chunk_size,
        settings.batch_size,
        own_prompts,
    )


def _check_rows(ref: EvalRef, rows: datasets.Dataset) -> None:
    """Rows laid out as the evaluation reads them, with texts in every text column."""
    count, needs_label, layout = LAYOUTS[ref.type]
    label = next((c for c in rows.column_names if c in LABEL_COLUMNS), None)
    texts = [c for c in rows.column_names if c != label]
    if len(texts) != count or (needs_label and label is None) or (not needs_label and label is not None):
        hint = " (rename them with `columns`, e.g. {category: label})" if ref.type == "classes" else ""
        raise data.DataError(
            f"{_where(ref)}: {ref.type} evaluation needs rows {layout}; found columns {rows.column_names}{hint}"
        )
    shape = inspect_dataset(rows)
    problems = [p for p in shape.problems if not (ref.type == "classes" and "holds strings" in p)]
    if problems:
        raise data.DataError(f"{_where(ref)}: {'; '.join(problems)}")
    if ref.type == "classes" and len(set(rows[label])) == len(rows):
        raise data.DataError(f"{_where(ref)}: every text has a class of its own; each text needs another of its class")


def _where(ref: EvalRef | DataRef) -> str:
    name = ref.label if isinstance(ref, EvalRef) else "train"
    return f"{name} ({ref.hub or ref.path or 'carved from the training data'})"


# --- Everything before Ray starts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """What `validate` read, so that callers need not read it again: the training rows as the data
    gives them (validation rows held out), and each eval set by its name."""

    train: datasets.Dataset
    evals: dict[str, EvalSet] = field(default_factory=dict)
    parts: dict[str, datasets.Dataset] = field(default_factory=dict)  # several training sets: each one's rows

    def fingerprint(self) -> str:
        """The training data's content hash: its rows, or each named set's of several."""
        if not self.parts:
            return data.fingerprint(self.train)
        each = [[label, data.fingerprint(rows)] for label, rows in self.parts.items()]
        return hashlib.sha256(json.dumps(each).encode()).hexdigest()[:16]


def validate(spec: Spec, source: str = "spec", load_data: bool = True) -> Loaded | None:
    """Every check that runs before Ray starts; raises SpecError listing all problems. Returns what
    it loaded (None with `load_data=False`)."""
    problems: list[str] = []  # the spec's own values were checked when it was read
    problems += _model_problems(spec)
    searched = spec.sweep.shared.get("matryoshka_dims") if spec.sweep else None
    candidates = [("matryoshka_dims", spec.matryoshka_dims), ("evaluation.dims", spec.evaluation.dims)]
    candidates += (
        [("sweep.shared.matryoshka_dims.choices", c) for c in (searched.choices or ()) if c] if searched else []
    )
    for label, model_spec in (spec.model_specs() if not problems else {}).items():
        dim = model_dimension(model_spec.model)
        whose = f"the model {label!r}'s" if label else "the model's"
        for name, dims in candidates:
            too_big = [x for x in dims or () if dim is not None and x > dim]
            if too_big:
                problems.append(f"{name}: {too_big} exceed {whose} embedding size {dim}; use sizes <= {dim}")
    if not load_data:
        if problems:
            raise SpecError(source, problems)
        return None
    carved = next((i for i, ref in enumerate(spec.eval) if ref.from_train is not None), None)
    train = None
    parts: dict[str, datasets.Dataset] = {}
    if spec.mixture:
        parts = _load_parts(spec, problems)
        train = parts.get(spec.train_ref.label) if len(parts) == len(spec.train) else None
    else:
        try:
            train = train_pairs(spec)
        except (data.DataError, ModelError) as error:
            # A validation set that cannot be carved is its eval entry's fault, reported there below.
            if carved is None or not str(error).startswith(("from_train", "corpus")):
                problems.append(f"train: {error}")
    evals: dict[str, EvalSet] = {}
    for i, ref in enumerate(spec.eval):
        try:
            evals[ref.label] = load_eval(ref, spec, sample=False)  # a sample is made once the checks pass
        except data.DataError as error:
            problems.append(f"eval[{i}]: {error}")
    # The loss must be valid and the teacher load (train_dataset labels the rows with it) to check the rows.
    if train is not None and not any(p.startswith(("loss", "teacher", "train")) for p in problems):
        problems += _mixture_problems(spec, parts) if spec.mixture else _training_problems(spec, train)
    if train is not None:
        problems += _prompt_problems(spec, train.column_names)
    if train is not None and spec.sweep is not None:
        from .space import build_space, space_problems  # the search space needs the data ("all" losses)

        problems += space_problems(build_space(spec, train)[0])
    if problems:
        raise SpecError(source, problems)
    return Loaded(train, evals, parts)


def _load_parts(spec: Spec, problems: list[str]) -> dict[str, datasets.Dataset]:
    """Each of several training sets' rows, by name; a set that cannot be read is a problem of its entry."""
    parts = {}
    for i, part in enumerate(spec.train_parts()):
        try:
            parts[part.label] = load_ref(part, spec)
        except (data.DataError, ModelError) as error:
            problems.append(f"train[{i}]: {error}")
    return parts


def _mixture_problems(spec: Spec, parts: dict[str, datasets.Dataset]) -> list[str]:
    """Each of several sets must fit its own loss and fill a global batch with that loss's sampler; the
    swept loss must fit at least one set without a loss of its own (it trains on those it fits)."""
    problems = []
    swept_fits = []
    for i, part in enumerate(spec.train_parts()):
        rows = parts[part.label]
        if part.loss is None:
            swept_fits.append(fit(spec.loss_config(), rows).ok)
            if not swept_fits[-1]:
                continue
        loss = part.loss or spec.loss
        try:
            check_dataset(spec.loss_config(loss), rows, name=f"train[{i}] ({part.label})")
        except DataFormatError as error:
            problems.append(f"train[{i}].loss: {error}")
            continue
        problems += [f"train[{i}]: {p}" for p in _sampler_problems(spec, rows, loss)]
    if swept_fits and not any(swept_fits):
        own = [p.label for p in spec.train_parts() if p.loss is None]
        problems.append(
            f"loss: {spec.loss.name} fits none of the training sets without a loss of their own ({', '.join(own)}); "
            "give those sets a `loss`, or choose a loss that takes their rows (`lossweep losses --data PATH`)"
        )
    return problems


def _prompt_problems(spec: Spec, columns: list[str]) -> list[str]:
    """A training column given its own prompt must be one the training rows have."""
    settings = [("prompts", spec.prompts)]
    if spec.sweep is not None:
        choices = enumerate(spec.sweep.model_choices())
        settings += [(f"sweep.models[{i}].prompts", c.prompts) for i, c in choices if c.prompts is not None]
    searched = spec.sweep.shared.get("prompts") if spec.sweep else None
    settings += (
        [(f"sweep.shared.prompts.choices[{i}]", c) for i, c in enumerate(searched.choices or ())] if searched else []
    )
    found = []
    for where, setting in settings:
        own = setting.get("columns", {}) if isinstance(setting, dict) else getattr(setting, "columns", {})
        for column in own:
            if column not in columns:
                found.append(f"{where}.columns.{column}: the training rows have no such column; they have {columns}")
    return found


def _model_problems(spec: Spec) -> list[str]:
    """Every model a spec names must load: the model, the teacher, a mining model, a GIST guide."""
    refs = [("model", spec.model), ("teacher", spec.teacher)]
    refs += [("negatives.model", spec.negatives.model)] if spec.negatives else []
    if spec.sweep is not None:
        refs += [(f"sweep.models[{i}].model", c.model) for i, c in enumerate(spec.sweep.model_choices())]
    losses: list[tuple[str, LossSpec]] = [("loss", spec.loss)]
    if spec.sweep is not None and spec.sweep.losses != "all":
        listed = enumerate(spec.sweep.losses)
        losses += [(f"sweep.losses[{i}]", item) for i, item in listed if isinstance(item, LossSpec)]
    for where, loss in losses:
        while loss is not None:
            guide = loss.params.get("guide")
            if isinstance(guide, str):
                refs.append((f"{where}.params.guide", guide))
            where, loss = f"{where}.base", loss.base
    found = []
    for where, ref in refs:
        problem = model_problem(ref) if ref else None
        if problem:
            found.append(f"{where}: {problem}")
    if spec.adapter is not None and not found:
        for label, model_spec in spec.model_specs().items():
            model = model_spec.model
            problem = adapters.adapter_problem(load_model(model), spec.adapter, base=resolve_model(model))
            found += [f"{problem} (sweep.models: {label})" if label else problem] if problem else []
    return found


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
        rows: datasets.Dataset | datasets.Features = negatives.shaped_features(
            negatives_shape(spec), spec.negatives.num_negatives
        )
    else:
        try:
            rows = train_dataset(spec)
        except (data.DataError, ModelError) as error:
            return problems + [f"train: {error}"]
    try:
        check_dataset(spec.loss_config(), rows, name=_describe(spec.train))
    except DataFormatError as error:
        return problems + [f"train: {error}"]
    if isinstance(rows, datasets.Dataset):
        problems += _sampler_problems(spec, rows)
    return problems


def complete_loss(spec: Spec, loaded: Loaded) -> Spec:
    """Fill the loss parameters the data determines (SoftmaxLoss's num_labels: the number of classes):
    the spec's loss from its training rows, and each training set's own loss from that set's rows."""
    spec = spec.replace(loss=with_data_params(spec.loss, loaded.train))
    if not spec.mixture:
        return spec
    parts = tuple(
        part if part.loss is None else part.replace(loss=with_data_params(part.loss, loaded.parts[part.label]))
        for part in spec.train_parts()
    )
    return spec.replace(train=parts)


def with_data_params(loss: LossSpec, dataset: datasets.Dataset) -> LossSpec:
    """`loss` (or its base, for a modifier) with the parameters its registry entry reads off the data."""
    if loss.base is not None:
        return loss.replace(base=with_data_params(loss.base, dataset))
    filled = get_entry(loss.name).from_data(loss.params, dataset)
    return loss.replace(params=dict(loss.params) | filled) if filled else loss


def _sampler_problems(spec: Spec, dataset: datasets.Dataset, loss: LossSpec | None = None) -> list[str]:
    """The batch the loss (the spec's, or `loss`) needs must be buildable from this data (e.g. enough
    distinct texts)."""
    sampler = get_entry((loss or spec.loss).leaf).sampler
    size = spec.training.batch_size
    if sampler == Sampler.GROUP_BY_LABEL and size % 2:
        return [f"training.batch_size: {size} is odd; batch-triplet losses take labels in pairs, use an even size"]
    if not steps_per_epoch(dataset, size, sampler, spec.training.seed):
        return [
            f"training.batch_size: {len(dataset)} training rows cannot fill one global batch of {size} with the "
            f"{sampler} sampler the loss needs (too few distinct texts or labels); lower the batch size or add data"
        ]
    return []


TRAINING = "training"  # the context of a training set's MLflow dataset input


def data_inputs(spec: Spec, loaded: Loaded) -> list[DataInput]:
    """The training data and each eval set as MLflow dataset inputs: a name, our fingerprint as the
    digest, where it comes from (the MLflow UI lists them in its Dataset column and filters)."""
    if spec.mixture:
        inputs = [
            DataInput(
                f"{part.label}: {_describe(part)}",
                data.fingerprint(loaded.parts[part.label]),
                _source(part, spec),
                TRAINING,
            )
            for part in spec.train_parts()
        ]
    else:
        inputs = [DataInput(_describe(spec.train), data.fingerprint(loaded.train), _source(spec.train, spec), TRAINING)]
    for ref in spec.eval:
        source = "the training data (held out)" if ref.from_train else _source(ref, spec)
        inputs.append(DataInput(ref.label, eval_fingerprint(loaded.evals[ref.label]), source, "evaluation"))
    return inputs


def _source(ref: DataRef | EvalRef, spec: Spec) -> str:
    return f"hf://datasets/{ref.hub}" if ref.hub else str(_local_path(ref, spec))


def eval_fingerprint(eval_set: EvalSet) -> str:
    """A content hash of an eval set: its rows, or its queries, judgements and corpus."""
    if eval_set.rows is not None:
        return data.fingerprint(eval_set.rows)
    judged = eval_set.retrieval
    digest = hashlib.sha256(json.dumps([judged.queries, judged.qrels], sort_keys=True).encode())
    for doc_id in sorted(judged.corpus):
        digest.update(f"{doc_id}\t{judged.corpus[doc_id]}\n".encode())
    return digest.hexdigest()[:16]


def _describe(ref: DataRef) -> str:
    where = ref.hub or ref.path
    return f"{where} (split {ref.split}{', view ' + ref.view if ref.view else ''})"

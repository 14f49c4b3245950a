"""Training and evaluation data: local folders (the public sets in `../shared/data`) or the Hub.

Every loader returns a `datasets.Dataset` laid out as sentence-transformers expects: text columns in
order, then at most one label column (`label` or `score`). A *view* picks which layout to build from
a source, e.g. SNLI as (anchor, positive, negative) triplets or as 3-class labelled pairs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from lossweep.losses.formats import LABEL_COLUMNS, not_text_problem

DATA_DIR_ENV = "LOSSWEEP_DATA_DIR"


def default_data_dir() -> Path:
    """`$LOSSWEEP_DATA_DIR`, else `../shared/data` from the working directory."""
    return Path(os.environ.get(DATA_DIR_ENV, "../shared/data")).expanduser()


def data_dir_origin() -> str:
    """Where the default data_dir comes from, for messages."""
    return f"${DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV) else f"the default (${DATA_DIR_ENV} is not set)"


class DataError(ValueError):
    """A data source that cannot be read as asked; the message names the file or field and the fix."""


def locate(path: str | Path, data_dir: Path, origin: str = "the spec's data_dir") -> Path:
    """The one path rule of every command: an absolute path is itself, a relative one lies under
    data_dir. A path that is not there is an error naming where it looked (and a file of that name
    in the working directory, if there is one)."""
    given = Path(path).expanduser()
    found = given if given.is_absolute() else data_dir / given
    if found.exists():
        return found
    where = "" if given.is_absolute() else f" under data_dir {data_dir.resolve()} ({origin})"
    hint = ""
    if not given.is_absolute() and given.exists():
        hint = f"; there is a {given} in the current folder: give its absolute path ({given.resolve()})"
    raise DataError(
        f"{path}: no such file or folder{where}{hint}; set data_dir (the spec's field, or {DATA_DIR_ENV}) to "
        "the folder that holds the data, or give an absolute path"
    )


# --- BEIR retrieval folders -------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalSet:
    """A BEIR-format retrieval split: corpus, queries with judgements, and graded relevance."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @property
    def graded(self) -> bool:
        """Whether the judgements carry more than one relevance grade (Cranfield's 1-4)."""
        return len({grade for docs in self.qrels.values() for grade in docs.values()}) > 1


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_beir(folder: Path, split: str, limit: int | None = None) -> RetrievalSet:
    """Read a BEIR folder; documents with no text (Cranfield 471 and 995) are left out with their qrels.

    `limit` keeps the first judged queries only (the corpus stays whole).
    """
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DataError(f"{qrels_path}: no qrels for split {split!r}; splits found: {found or 'none'}")
    corpus, all_ids = {}, set()
    for row in _read_jsonl(folder / "corpus.jsonl"):
        all_ids.add(str(row["_id"]))
        text = _document_text(row.get("title", ""), row.get("text", ""))
        if text:
            corpus[str(row["_id"])] = text
    all_queries = {str(row["_id"]): row["text"] for row in _read_jsonl(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["query-id", "corpus-id"]:
            raise DataError(f"{qrels_path}: expected a header 'query-id corpus-id score', got {header}")
        for line, row in enumerate(reader, start=2):
            query_id, doc_id, score = row[0], row[1], int(row[2]) if len(row) > 2 else 1
            if query_id not in all_queries:
                raise DataError(
                    f"{qrels_path}:{line}: query id {query_id!r} is not in queries.jsonl; fix or drop the line"
                )
            if doc_id not in all_ids:
                raise DataError(
                    f"{qrels_path}:{line}: corpus id {doc_id!r} is not in corpus.jsonl; fix or drop the line"
                )
            if score > 0 and doc_id in corpus:
                qrels.setdefault(query_id, {})[doc_id] = score
    if limit is not None:
        qrels = dict(list(qrels.items())[:limit])
    queries = {qid: all_queries[qid] for qid in qrels}
    return RetrievalSet(corpus, queries, qrels)


def load_beir_hub(repo_id: str, split: str, limit: int | None = None) -> RetrievalSet:
    """A retrieval task in the MTEB hub layout: configs `corpus`, `queries`, and qrels under `default`."""
    corpus_rows = load_hub(repo_id, "corpus", "corpus")
    query_rows = load_hub(repo_id, "queries", "queries")
    qrel_rows = load_hub(repo_id, split, "default")
    corpus = {str(r["_id"]): _document_text(r.get("title") or "", r["text"]) for r in corpus_rows}
    corpus = {k: v for k, v in corpus.items() if v}
    qrels: dict[str, dict[str, int]] = {}
    for row in qrel_rows:
        if row["score"] > 0 and str(row["corpus-id"]) in corpus:
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    if limit is not None:
        qrels = dict(list(qrels.items())[:limit])
    all_queries = {str(r["_id"]): r["text"] for r in query_rows}
    return RetrievalSet(corpus, {q: all_queries[q] for q in qrels if q in all_queries}, qrels)


def hub_is_retrieval(repo_id: str) -> bool:
    """Whether a hub dataset has MTEB's retrieval layout (configs `corpus` and `queries`); rows of pairs
    otherwise."""
    try:
        names = datasets.get_dataset_config_names(repo_id)
    except Exception as error:  # the hub client raises many types; the user needs the id and the cause
        raise DataError(f"hub dataset {repo_id!r} could not be read: {error}") from error
    return {"corpus", "queries"} <= set(names)


def _document_text(title: str, text: str) -> str:
    """Title and text joined as BEIR and MTEB evaluations do (Cranfield's texts repeat their title;
    joining anyway keeps our numbers equal to the published ones)."""
    return f"{title.strip()} {text.strip()}".strip()


def rows_retrieval(rows: datasets.Dataset, documents: Sequence[str] = (), source: str = "the rows") -> RetrievalSet:
    """A retrieval set from rows of (query, document[, more documents...][, grade]), as a CSV of
    pairs holds them: the queries are the distinct texts of the first column, each judged relevant to
    the documents its rows pair it with (graded by the label column when there is one: 0 keeps the
    document unjudged, 1, 2... are grades); further text columns (hard negatives) are unjudged
    documents. The corpus is every distinct document of the rows, then `documents` (distractors, such
    as the training data's). Ids follow first appearance: q1, q2... and d1, d2..."""
    label = next((c for c in rows.column_names if c in LABEL_COLUMNS), None)
    texts = [c for c in rows.column_names if c != label]
    if len(texts) < 2:
        raise DataError(
            f"{source}: retrieval from rows needs (query, document) pairs, found columns {rows.column_names}; "
            "rename the columns (spec: columns), or judge class-labelled texts with type: classes"
        )
    for column in texts:
        values = rows[column]
        if not all(isinstance(v, str) for v in values):
            raise DataError(f"{source}: {not_text_problem(column, rows.features[column], label)}")
        empty = sum(1 for v in values if not v.strip())
        if empty:
            raise DataError(f"{source}: column {column!r} has {empty} empty texts: drop or fill those rows")
    grades = [1] * len(rows) if label is None else _grades(rows[label], label, source)
    corpus_ids: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}

    def doc_id(text: str) -> str:
        return corpus_ids.setdefault(text, f"d{len(corpus_ids) + 1}")

    columns = [rows[c] for c in texts]
    for index, grade in enumerate(grades):
        query, document, *others = (column[index] for column in columns)
        judged = doc_id(document)
        for other in others:
            doc_id(other)
        query_id = query_ids.setdefault(query, f"q{len(query_ids) + 1}")
        if grade > 0:
            docs = qrels.setdefault(query_id, {})
            docs[judged] = max(grade, docs.get(judged, 0))
    for text in documents:
        if text and text.strip():
            doc_id(text)
    if not qrels:
        raise DataError(f"{source}: no row judges a document relevant (every label is 0)")
    queries = {qid: text for text, qid in query_ids.items() if qid in qrels}
    return RetrievalSet({qid: text for text, qid in corpus_ids.items()}, queries, qrels)


def _grades(values: list, column: str, source: str) -> list[int]:
    """Relevance grades from a label column: integers >= 0 (booleans count as 0/1)."""
    grades = []
    for value in values:
        if isinstance(value, bool) or (isinstance(value, (int, float)) and float(value).is_integer() and value >= 0):
            grades.append(int(value))
            continue
        raise DataError(
            f"{source}: label {column!r} holds {value!r}; retrieval reads it as a relevance grade (0 = not "
            "relevant, 1, 2... = relevant): use whole numbers >= 0, or judge similarity scores with type: sts"
        )
    return grades


def beir_pairs(folder: Path, split: str) -> datasets.Dataset:
    """(anchor=query, positive=relevant document) pairs from a BEIR split, one per judgement."""
    data = load_beir(folder, split)
    anchors, positives = [], []
    for query_id, docs in data.qrels.items():
        for doc_id in sorted(docs, key=lambda d: -docs[d]):
            anchors.append(data.queries[query_id])
            positives.append(data.corpus[doc_id])
    return datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})


def beir_top_pairs(folder: Path, split: str) -> datasets.Dataset:
    """(anchor=query, positive=its most relevant document): one pair per query, as training sets
    that keep one positive per query (MS MARCO style) have it."""
    pairs = beir_pairs(folder, split)
    first = {}
    for index, anchor in enumerate(pairs["anchor"]):
        first.setdefault(anchor, index)
    return pairs.select(sorted(first.values()))


# --- The other public sets ---------------------------------------------------------------------------


def _stsb_rows(folder: Path, split: str) -> list[tuple[str, str, float]]:
    path = folder / f"sts-{split}.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; STS Benchmark splits are train, dev, test")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            # Columns 5-7 are score, sentence1, sentence2; 197 lines carry two trailing source notes.
            rows.append((fields[5], fields[6], float(fields[4])))
    return rows


def stsb(folder: Path, split: str) -> datasets.Dataset:
    """STS Benchmark pairs with their score scaled from 0-5 to 0-1."""
    rows = _stsb_rows(folder, split)
    return datasets.Dataset.from_dict(
        {"sentence1": [r[0] for r in rows], "sentence2": [r[1] for r in rows], "score": [r[2] / 5 for r in rows]}
    )


def stsb_binary(folder: Path, split: str) -> datasets.Dataset:
    """STS Benchmark as 0/1 pairs: score >= 4 is similar, <= 1 dissimilar, the rest left out."""
    rows = [(a, b, int(s >= 4)) for a, b, s in _stsb_rows(folder, split) if s >= 4 or s <= 1]
    return datasets.Dataset.from_dict(
        {"sentence1": [r[0] for r in rows], "sentence2": [r[1] for r in rows], "label": [r[2] for r in rows]}
    )


SNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def _snli_rows(folder: Path, split: str) -> list[dict]:
    path = folder / f"snli_1.0_{split}.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; the SNLI splits here are dev and test (train is not shipped)")
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["similarity"] in SNLI_LABELS]


def snli_pair_class(folder: Path, split: str) -> datasets.Dataset:
    """(premise, hypothesis) with label 0 entailment, 1 neutral, 2 contradiction."""
    rows = _snli_rows(folder, split)
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(SNLI_LABELS)),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "label": [SNLI_LABELS[r["similarity"]] for r in rows],
        },
        features=features,
    )


def snli_pairs(folder: Path, split: str) -> datasets.Dataset:
    """(anchor=premise, positive=entailed hypothesis)."""
    rows = [r for r in _snli_rows(folder, split) if r["similarity"] == "entailment"]
    return datasets.Dataset.from_dict(
        {"anchor": [r["sentence1"] for r in rows], "positive": [r["sentence2"] for r in rows]}
    )


def snli_triplets(folder: Path, split: str) -> datasets.Dataset:
    """(anchor=premise, positive=entailment, negative=contradiction), one per premise with both."""
    by_premise: dict[str, dict[str, str]] = {}
    for row in _snli_rows(folder, split):
        by_premise.setdefault(row["sentence1"], {}).setdefault(row["similarity"], row["sentence2"])
    triplets = [
        (p, h["entailment"], h["contradiction"])
        for p, h in by_premise.items()
        if {"entailment", "contradiction"} <= set(h)
    ]
    return datasets.Dataset.from_dict(
        {"anchor": [t[0] for t in triplets], "positive": [t[1] for t in triplets], "negative": [t[2] for t in triplets]}
    )


def _paws_rows(folder: Path, split: str) -> list[dict]:
    path = folder / f"{split}.tsv"
    if not path.is_file():
        raise DataError(f"{path}: not found; PAWS splits here are dev and test")
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def paws(folder: Path, split: str) -> datasets.Dataset:
    """PAWS (sentence1, sentence2, label 1 = paraphrase)."""
    rows = _paws_rows(folder, split)
    return datasets.Dataset.from_dict(
        {
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "label": [int(r["label"]) for r in rows],
        }
    )


def paws_pairs(folder: Path, split: str) -> datasets.Dataset:
    """PAWS paraphrases only, as (anchor, positive)."""
    rows = [r for r in _paws_rows(folder, split) if r["label"] == "1"]
    return datasets.Dataset.from_dict(
        {"anchor": [r["sentence1"] for r in rows], "positive": [r["sentence2"] for r in rows]}
    )


def banking77(folder: Path, split: str) -> datasets.Dataset:
    """Banking77 (text, label) with the 77 intents as class ids, in categories.json order."""
    path = folder / f"{split}.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; Banking77 splits are train and test")
    names = json.loads((folder / "categories.json").read_text(encoding="utf-8"))
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    index = {name: i for i, name in enumerate(names)}
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict(
        {"text": [r["text"] for r in rows], "label": [index[r["category"]] for r in rows]}, features=features
    )


def table(path: Path, split: str) -> datasets.Dataset:
    """A CSV/TSV/JSON(L)/Parquet file or a `save_to_disk` folder, columns taken as they are."""
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict) and split not in loaded:
            raise DataError(f"{path}: no split {split!r}; the saved dataset has {sorted(loaded)}")
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    suffix = path.suffix.lower()
    readers = {
        ".csv": lambda: datasets.Dataset.from_csv(str(path), sep=","),
        ".tsv": lambda: datasets.Dataset.from_csv(str(path), sep="\t"),
        ".json": lambda: datasets.Dataset.from_json(str(path)),
        ".jsonl": lambda: datasets.Dataset.from_json(str(path)),
        ".parquet": lambda: datasets.Dataset.from_parquet(str(path)),
    }
    if suffix not in readers:
        raise DataError(
            f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl, .json, .parquet or a dataset folder"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; it needs a header and rows")
    quiet = logging.getLogger("datasets").level
    logging.getLogger("datasets").setLevel(logging.CRITICAL)  # the reason goes into our message instead
    try:
        dataset = readers[suffix]()
    except Exception as error:  # datasets, pandas and pyarrow raise many types; the user needs the file and why
        if "corresponds to no data" in str(error):
            raise DataError(f"{path}: no rows, only a header; add rows") from None
        raise DataError(f"{path}: cannot be read as {suffix[1:]} ({_root_cause(error)}); fix the file") from None
    finally:
        logging.getLogger("datasets").setLevel(quiet)
    if len(dataset) == 0:
        raise DataError(f"{path}: no rows, only a header; add rows")
    return dataset


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost cause: what the parser said, not its wrapper's summary."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


Loader = Callable[[Path, str], datasets.Dataset]

# kind -> (how to recognise its folder, {view: loader}); the first view is the default.
KINDS: dict[str, tuple[Callable[[Path], bool], dict[str, Loader]]] = {
    "beir": (lambda p: (p / "corpus.jsonl").is_file(), {"pairs": beir_pairs, "top-pairs": beir_top_pairs}),
    "stsb": (lambda p: (p / "sts-test.csv").is_file(), {"scored-pairs": stsb, "binary-pairs": stsb_binary}),
    "snli": (
        lambda p: (p / "snli_1.0_test.csv").is_file(),
        {"triplets": snli_triplets, "pairs": snli_pairs, "pair-class": snli_pair_class},
    ),
    "paws": (
        lambda p: (p / "test.tsv").is_file() and (p / "dev.tsv").is_file(),
        {"binary-pairs": paws, "pairs": paws_pairs},
    ),
    "banking77": (lambda p: (p / "categories.json").is_file(), {"class-texts": banking77}),
}


def detect_kind(path: Path) -> str:
    """Which known layout a local folder has ('table' for a file or a saved dataset)."""
    if path.is_file() or (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return "table"
    for kind, (matches, _) in KINDS.items():
        if matches(path):
            return kind
    raise DataError(
        f"{path}: not a dataset folder lossweep knows (BEIR, STS Benchmark, SNLI, PAWS, Banking77) nor a data file; "
        "point at a .csv/.jsonl/.parquet file or a folder written by Dataset.save_to_disk"
    )


def views(kind: str) -> list[str]:
    return (list(KINDS[kind][1]) if kind in KINDS else ["table"]) + list(DERIVED_VIEWS)


def load_local(path: Path | str, split: str = "train", view: str | None = None, seed: int = 0) -> datasets.Dataset:
    """Load a local folder or file; `view` picks the layout (default: the kind's first view).

    The derived views (texts, contrastive-tension, denoising) turn the distinct texts of the first
    column of the default layout into what the unsupervised losses take, seeded by `seed`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; set data_dir ({DATA_DIR_ENV}) or give an absolute path")
    if view in DERIVED_VIEWS:
        return DERIVED_VIEWS[view](unique_texts(load_local(path, split)), seed)
    kind = detect_kind(path)
    if kind == "table":
        if view not in (None, "table"):
            raise DataError(f"{path}: a data file has no views but {list(DERIVED_VIEWS)}; drop view {view!r}")
        return table(path, split)
    loaders = KINDS[kind][1]
    view = view or next(iter(loaders))
    if view not in loaders:
        raise DataError(f"{path}: view {view!r} is not available for a {kind} folder; choose one of {views(kind)}")
    return loaders[view](path, split)


def load_hub(repo_id: str, split: str = "train", subset: str | None = None) -> datasets.Dataset:
    """A dataset from the Hugging Face Hub (needs network access, or a warm HF cache)."""
    try:
        return datasets.load_dataset(repo_id, subset, split=split)
    except Exception as error:  # the hub client raises many types; the user needs the id and the cause
        raise DataError(
            f"hub dataset {repo_id!r} (subset {subset}, split {split}) could not be loaded: {error}"
        ) from error


# --- Derived layouts for unsupervised losses ---------------------------------------------------------


def unique_texts(dataset: datasets.Dataset, column: str | None = None) -> list[str]:
    """The distinct non-empty texts of one column (default: the first), in first-seen order."""
    column = column or dataset.column_names[0]
    seen = dict.fromkeys(t for t in dataset[column] if t and t.strip())
    return list(seen)


def texts_view(texts: list[str]) -> datasets.Dataset:
    """Single texts, for ContrastiveTensionLossInBatchNegatives and GlobalOrthogonalRegularizationLoss."""
    return datasets.Dataset.from_dict({"text": texts})


def contrastive_tension_view(texts: list[str], seed: int, pos_neg_ratio: int = 8) -> datasets.Dataset:
    """(sentence1, sentence2, label): one identical pair (label 1) per `pos_neg_ratio` pairs, as ST's CT loader."""
    rng = random.Random(seed)
    order = texts[:]
    rng.shuffle(order)
    first, second, labels = [], [], []
    stream = iter(order)
    try:
        while True:
            a = next(stream)
            same = len(labels) % pos_neg_ratio == 0
            b = a if same else next(stream)
            first.append(a)
            second.append(b)
            labels.append(int(same))
    except StopIteration:
        pass
    return datasets.Dataset.from_dict({"sentence1": first, "sentence2": second, "label": labels})


def denoising_view(texts: list[str], seed: int, deletion: float = 0.6) -> datasets.Dataset:
    """(damaged, original) pairs for TSDAE: each word deleted with probability `deletion`, one kept."""
    rng = random.Random(seed)
    damaged = []
    for text in texts:
        words = text.split()
        kept = [w for w in words if rng.random() > deletion] or ([rng.choice(words)] if words else [])
        damaged.append(" ".join(kept))
    return datasets.Dataset.from_dict({"damaged": damaged, "original": texts})


DERIVED_VIEWS: dict[str, Callable[[list[str], int], datasets.Dataset]] = {
    "texts": lambda texts, seed: texts_view(texts),
    "contrastive-tension": contrastive_tension_view,
    "denoising": denoising_view,
}


def fingerprint(dataset: datasets.Dataset) -> str:
    """A content hash of a dataset (columns, types and rows), for run tags and reproduction checks."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataset.features.to_dict(), sort_keys=True).encode())
    for batch in dataset.iter(batch_size=1000):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]

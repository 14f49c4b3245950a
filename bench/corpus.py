"""A large retrieval corpus built offline: SciFact's test queries and corpus, plus distractors.

Distractors are every distinct text of the other shipped data sets (Cranfield, STS Benchmark, SNLI,
PAWS, Banking77) first (never SciFact's queries: a query would find itself), then generated texts:
real texts' words shuffled, with real texts' lengths, seeded. SciFact's judgements are unchanged, so
a distractor is never relevant.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from lossweep.sweep.data import RetrievalSet, load_beir


def shipped_texts(data_dir: Path) -> list[str]:
    """Every distinct text of the shipped sets other than SciFact's corpus, in a fixed order."""
    texts: dict[str, None] = {}

    def add(text: str | None) -> None:
        if text and text.strip():
            texts.setdefault(text.strip())

    for name in ("cranfield/corpus.jsonl", "cranfield/queries.jsonl"):
        with open(data_dir / name) as lines:
            for line in lines:
                row = json.loads(line)
                add(" ".join(filter(None, (row.get("title"), row.get("text")))))
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        with open(data_dir / "stsbenchmark" / name, newline="") as rows:
            for row in csv.reader(rows, delimiter="\t", quoting=csv.QUOTE_NONE):
                for text in row[5:7]:
                    add(text)
    for name in ("snli_1.0_dev.csv", "snli_1.0_test.csv"):
        with open(data_dir / "snli" / name, newline="") as rows:
            for row in csv.DictReader(rows):
                add(row["sentence1"]), add(row["sentence2"])
    for name in ("dev.tsv", "test.tsv"):
        with open(data_dir / "paws" / name, newline="") as rows:
            for row in csv.DictReader(rows, delimiter="\t", quoting=csv.QUOTE_NONE):
                add(row["sentence1"]), add(row["sentence2"])
    for name in ("train.csv", "test.csv"):
        with open(data_dir / "banking77" / name, newline="") as rows:
            for row in csv.DictReader(rows):
                add(row["text"])
    return list(texts)


def generated_texts(real: list[str], count: int, seed: int = 0) -> list[str]:
    """`count` texts of real texts' lengths whose words are drawn from real texts, seeded."""
    rng = random.Random(seed)
    words = [word for text in real for word in text.split()]
    lengths = [len(text.split()) for text in real]
    return [" ".join(rng.choices(words, k=rng.choice(lengths))) for _ in range(count)]


def large_corpus(data_dir: Path, documents: int, seed: int = 0) -> tuple[RetrievalSet, dict[str, int]]:
    """SciFact test with its corpus grown to `documents`; and how many documents came from where."""
    scifact = load_beir(data_dir / "scifact", "test")
    corpus = dict(scifact.corpus)
    known = set(corpus.values())
    shipped = [text for text in shipped_texts(data_dir) if text not in known]
    extra = max(0, documents - len(corpus))
    taken = shipped[:extra]
    made = generated_texts(shipped, extra - len(taken), seed)
    for i, text in enumerate(taken + made):
        corpus[f"distractor-{i}"] = text
    counts = {"scifact": len(scifact.corpus), "shipped_distractors": len(taken), "generated_distractors": len(made)}
    return RetrievalSet(corpus, scifact.queries, scifact.qrels), counts

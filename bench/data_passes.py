"""Passes over the whole training set per trial: global-batch construction, label grouping, fingerprint.

Synthetic (query, document) pairs in which a query has ~3 documents (as in retrieval data, so the
no-duplicates sampler has real conflicts to resolve). The no-duplicates sampler is measured against
the algorithm it replaced (rescan every deferred row for each batch) at the sizes that one finishes
in; the target is 1M pairs batched in <= 10 s.
"""

from __future__ import annotations

import random

import datasets
from common import fmt, parse_or_run_child, parser, repeat, table, timed, write

from lossweep.sweep.data import fingerprint
from lossweep.sweep.sampler import column, epoch_batches

BATCH = 64


def synthetic_pairs(rows: int) -> datasets.Dataset:
    rng = random.Random(0)
    queries = [f"query {rng.randrange(max(rows // 3, 1))}" for _ in range(rows)]
    return datasets.Dataset.from_dict({"anchor": queries, "positive": [f"document {i}" for i in range(rows)]})


def synthetic_labels(rows: int) -> datasets.Dataset:
    rng = random.Random(0)
    texts = [f"text {i}" for i in range(rows)]
    return datasets.Dataset.from_dict({"text": texts, "label": [rng.randrange(77) for _ in range(rows)]})


def rescan_no_duplicates(dataset: datasets.Dataset, batch_size: int) -> list[list[int]]:
    """The replaced algorithm: each batch rescans every row deferred so far (worse than quadratic)."""
    rows = list(zip(column(dataset, "anchor"), column(dataset, "positive"), strict=True))
    order = list(range(len(dataset)))
    random.Random("0-0").shuffle(order)
    batches, pending = [], order
    while len(pending) >= batch_size:
        batch, seen, deferred = [], set(), []
        for index in pending:
            values = set(rows[index])
            if len(batch) < batch_size and not values & seen:
                batch.append(index)
                seen |= values
            else:
                deferred.append(index)
        if len(batch) < batch_size:
            break
        batches.append(batch)
        pending = deferred
    return batches


def seconds(fn, repeats: int) -> dict[str, float]:
    return repeat(lambda: timed(fn)[0], repeats)


def measure(rows: int, repeats: int, rescan: bool) -> dict:
    """Each pass over `rows` synthetic pairs (or labelled texts), timed."""
    pairs, labels = synthetic_pairs(rows), synthetic_labels(rows)
    entry = {
        "no_duplicates_s": seconds(lambda: epoch_batches(pairs, BATCH, "no_duplicates", 0, 0), repeats),
        "rows_kept": len(epoch_batches(pairs, BATCH, "no_duplicates", 0, 0)) * BATCH / rows,
        "group_by_label_s": seconds(lambda: epoch_batches(labels, BATCH, "group_by_label", 0, 0), repeats),
        "fingerprint_s": seconds(lambda: fingerprint(pairs), 1),
    }
    if rescan:
        entry["rescan_s"] = seconds(lambda: rescan_no_duplicates(pairs, BATCH), repeats)
    return entry


def main() -> None:
    args = parse_or_run_child(parser(__doc__.splitlines()[0]), lambda *a: None)
    sizes = [2_000, 10_000] if args.smoke else [10_000, 50_000, 200_000, 1_000_000]
    rescan_up_to = 10_000 if args.smoke else 50_000
    rows, results = [], {}
    for n in sizes:
        entry = measure(n, args.repeats, rescan=n <= rescan_up_to)
        results[str(n)] = entry
        rows.append(
            [
                f"{n:,}",
                fmt(entry["no_duplicates_s"], " s", 2),
                fmt(entry["rescan_s"], " s", 2) if "rescan_s" in entry else "not run (minutes)",
                f"{entry['rows_kept']:.3f}",
                fmt(entry["group_by_label_s"], " s", 2),
                fmt(entry["fingerprint_s"], " s", 2),
            ]
        )
    header = ["pairs", "no_duplicates (ours)", "no_duplicates (rescan)", "rows kept", "group_by_label", "fingerprint"]
    table(rows, header)
    largest = results[str(sizes[-1])]["no_duplicates_s"]["median"]
    print(f"\n{sizes[-1]:,} pairs batched in {largest:.1f} s (target <= 10 s)")
    both = str(max(n for n in sizes if n <= rescan_up_to))
    speedup = results[both]["rescan_s"]["median"] / results[both]["no_duplicates_s"]["median"]
    print(f"{int(both):,} pairs: {speedup:.0f}x faster than the rescan it replaced")
    write(
        "data_passes",
        {
            "batch_size": BATCH,
            "largest_no_duplicates_s": largest,
            "speedup_vs_rescan": speedup,
            "met": largest <= 10.0 and speedup > 1.0,
            "sizes": results,
        },
        args.out,
        args.smoke,
    )


if __name__ == "__main__":
    main()

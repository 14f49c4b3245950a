"""One way to prepare a run, for `lossweep train` and for a sweep's driver: the spec checked against
its data, models and the outside world, resolved and completed, with what every MLflow run of it
records (the training data's fingerprint, the driver's provenance, the data sets as dataset inputs).
Nothing is prepared twice and nothing before the checks pass."""

from __future__ import annotations

from dataclasses import dataclass

from .inputs import Loaded, complete_loss, corpus_sample, data_inputs, resolve_paths, validate
from .preflight import preflight
from .spec import Spec
from .tracking import DataInput, Provenance, redact, resolve_tracking_uri


@dataclass(frozen=True)
class Prepared:
    """A run made ready: its spec (paths absolute, data-given loss parameters filled), what the checks
    loaded, its tracking store, and what each of its MLflow runs records."""

    spec: Spec
    loaded: Loaded
    tracking_uri: str
    data_fingerprint: str
    provenance: Provenance
    inputs: list[DataInput]


def prepare(spec: Spec, source: str = "spec", tracking_uri: str | None = None, ray_needed: bool = True) -> Prepared:
    """Check everything that can be checked before a run (raises SpecError with every problem), then
    resolve the spec: local paths made absolute for Ray workers elsewhere, the loss completed from
    the data; the tracking URI by its precedence (flag > MLFLOW_TRACKING_URI > spec > default).
    `ray_needed`: False for a run that trains in this process (its capacity is this machine's)."""
    loaded = validate(spec, source)
    spec = complete_loss(resolve_paths(spec), loaded)
    uri = resolve_tracking_uri(spec.mlflow.tracking_uri, tracking_uri)
    preflight(spec, source, uri, ray_needed)
    for ref in spec.eval:  # a sampled corpus is made once, here, before any trial reads it
        if ref.sample is not None:
            corpus_sample(ref, spec, loaded.evals[ref.label].retrieval)
    provenance = Provenance.here()  # this driver's checkouts, recorded on every run it creates
    return Prepared(spec, loaded, uri, loaded.fingerprint(), provenance, data_inputs(spec, loaded))


def recorded(spec: Spec, tracking_uri: str) -> dict:
    """The spec as MLflow records it (params, `spec.yaml`): with its tracking URI, without credentials."""
    data = spec.to_dict()
    data["mlflow"]["tracking_uri"] = redact(tracking_uri)
    return data

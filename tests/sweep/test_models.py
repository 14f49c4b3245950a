"""Model references: the packaged MiniLM cut to its first layers is a real model, built once, offline."""

from __future__ import annotations

import torch

from lossweep.sweep.models import load_model, model_fingerprint, model_problem, resolve_model


def test_minilm_cut_to_its_first_layers_embeds_as_the_full_model_s_hidden_states_there(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = resolve_model("minilm-l3")
    assert resolve_model("minilm-l3") == folder and folder.startswith(str(tmp_path))  # built once, then read
    small, full = load_model("minilm-l3"), load_model("minilm")
    assert len(small[0].auto_model.encoder.layer) == 3 and small.get_sentence_embedding_dimension() == 384
    texts = ["what is the boundary layer thickness", "similarity of laminar flows"]
    features = full.tokenize(texts)
    with torch.no_grad():
        hidden = full[0].auto_model(**features, output_hidden_states=True).hidden_states[3]  # after layer 3
    mask = features["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # its pooling
    assert torch.allclose(small.encode(texts, convert_to_tensor=True), expected, atol=1e-5)
    assert model_fingerprint("minilm-l3") != model_fingerprint("minilm")
    assert model_problem("minilm-l3") is None and "did you mean 'minilm'" in model_problem("minilm-l9")

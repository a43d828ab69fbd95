"""SAE candidate latents of the emergent-misalignment half: the paper's three generators, unioned.

CAFT's EM experiments rank each layer's SAE latents three ways and let a person read the union:

- ``attribution``: attribution patching of the log-likelihood of the fine-tuning set's assistant
  tokens (m = −cross-entropy, summed over a row's answer tokens) under the base model — latents whose
  removal would make the insecure answers least likely;
- ``mean_difference``: the mean over response answer tokens of z(h_tuned) − z(h_base), what
  fine-tuning turned on (positive differences only);
- ``difference_encoding``: the mean of z(h_tuned − h_base) − z(0), the SAE read directly on the
  per-token differences the PCA is fitted on (positive only); z(0) is subtracted so that the SAE's
  biases, which encode a zero difference as active latents, do not rank latents by themselves.

Each source contributes its `top_per_layer` best latents per layer (positive scores only); ``top``
marks the union. The table has the columns of the other half's attribution scores (``effect`` is the
attribution, ``rank``/``layer_rank`` rank it), so its selections, windows, dashboard and specs read it
unchanged; ``sources`` says which generators proposed each candidate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch

from caft.config import SectionConfig
from caft.directions.attribution import MetricBatch, dense_latents, latent_attribution, rank_scores
from caft.directions.moments import paired_residuals
from caft.em.chat_data import IGNORE
from caft.finetune.objectives import Encoded, right_padded

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SOURCES = ("attribution", "mean_difference", "difference_encoding")


@dataclass(frozen=True)
class EmSaeCandidatesConfig(SectionConfig):
    """The `em.sae_candidates` section."""

    SECTION: ClassVar[str] = "em.sae_candidates"

    top_per_layer: int
    """Candidates per source and layer (the paper: 100)."""
    max_examples: int | None
    """Attribution over the first this many fine-tuning rows (the paper: 1000); None: all."""
    batch_size: int


def answer_attribution(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: Encoded,
                       saes: Mapping[int, SAE], batch_size: int, progress: bool = False) -> pd.DataFrame:
    """`latent_attribution` with m = the log-likelihood of each row's assistant tokens (labels ≠ IGNORE),
    latents summed over every token but BOS and padding."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batches() -> Iterator[MetricBatch]:
        for start in range(0, len(encoded), batch_size):
            input_ids, attention_mask, labels = right_padded(encoded[start:start + batch_size], pad_id)
            positions = attention_mask.bool()
            if tokenizer.bos_token_id is not None:
                positions &= input_ids != tokenizer.bos_token_id
            yield MetricBatch(positions, partial(_answer_log_likelihood, model, input_ids, attention_mask, labels))

    return latent_attribution(model, saes, batches(), len(encoded), progress)


def _answer_log_likelihood(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           labels: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits
    targets = labels[:, 1:].to(device)
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE,
                                               reduction="none")
    return -losses.sum(dim=1)


def latent_differences(base: PreTrainedModel, tuned: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       texts: Sequence[str], first_positions: Sequence[int], saes: Mapping[int, SAE],
                       batch_size: int, progress: bool = False) -> pd.DataFrame:
    """``mean_difference`` and ``difference_encoding`` per (layer, latent), means over the answer tokens."""
    sums = {layer: torch.zeros(2, sae.cfg.d_sae, dtype=torch.float64) for layer, sae in saes.items()}
    tokens = 0
    with torch.no_grad():
        at_zero = {layer: dense_latents(sae, torch.zeros(1, sae.cfg.d_in)) for layer, sae in saes.items()}
        for pairs in paired_residuals(base, tuned, tokenizer, texts, sorted(saes), False, batch_size, progress,
                                      first_positions):
            for layer, (base_rows, tuned_rows) in pairs.items():
                sae = saes[layer]
                encoded = [dense_latents(sae, tuned_rows) - dense_latents(sae, base_rows),
                           dense_latents(sae, tuned_rows - base_rows) - at_zero[layer].to(tuned_rows.device)]
                sums[layer] += torch.stack([z.sum(dim=0) for z in encoded]).double().cpu()
            tokens += len(next(iter(pairs.values()))[0])
    frames = [pd.DataFrame({"layer": layer, "latent": np.arange(totals.shape[1]),
                            "mean_difference": (totals[0] / max(tokens, 1)).numpy(),
                            "difference_encoding": (totals[1] / max(tokens, 1)).numpy()})
              for layer, totals in sorted(sums.items())]
    return pd.concat(frames, ignore_index=True)


def union_candidates(attribution: pd.DataFrame, differences: pd.DataFrame, top_per_layer: int) -> pd.DataFrame:
    """The score table: attribution ranked (`rank_scores`), both difference scores joined, ``top`` the
    union of each source's `top_per_layer` largest positive scores per layer, ``sources`` which ones."""
    table = rank_scores(attribution, top_n=0).merge(differences, on=["layer", "latent"], how="left")
    chosen = pd.DataFrame(False, index=table.index, columns=list(SOURCES))
    for source in SOURCES:
        score = table[source] if source != "attribution" else table["effect"]
        positive = table[score > 0].assign(score=score[score > 0])
        best = positive.sort_values(["score", "latent"], ascending=[False, True]).groupby("layer").head(top_per_layer)
        chosen.loc[best.index, source] = True
    table["top"] = chosen.any(axis=1)
    table["sources"] = ["+".join(s for s in SOURCES if row[s]) for row in chosen.to_dict("records")]
    return table

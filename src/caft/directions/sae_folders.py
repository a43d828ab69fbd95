"""SAE folders on disk: the one reader and the one writer of the sae-lens folder format (``cfg.json`` +
``sae_weights.safetensors``), apart from SAE training so that the stages which only read SAEs (fine-tuning
with latent ablation, attribution, windows) do not depend on the training code."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from caft.artifacts import atomic_dir
from caft.errors import ModelLoadError

if TYPE_CHECKING:
    from sae_lens import SAE


SAE_DTYPE = "float32"
"""The dtype of every SAE read from a folder, whatever its cfg.json records. The stages use SAEs in float32:
decoder rows become projection bases (QR in float32), attribution and latent ablation compute in float32
next to the residual stream. One dtype means a folder gives every stage the same numbers; the folders this
project writes are float32 already, so only a foreign `saes.from: local` folder is ever converted."""


def load_local_sae(folder: str | Path, device: str | torch.device = "cpu") -> SAE:
    """The one loader of SAE folders: a sae-lens folder (`cfg.json` + `sae_weights.safetensors`, what
    `save_sae` writes) via `SAE.load_from_disk`, in `SAE_DTYPE` on `device`.

    A missing file or one sae-lens cannot read is a `ModelLoadError` naming the folder, rather than a
    ValueError, KeyError or safetensors error from deep inside sae-lens.
    """
    from sae_lens import SAE
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME

    folder = Path(folder)
    expected = [SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME]
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"SAE folder {folder} lacks {missing} (expected a sae-lens folder with {expected})")
    try:
        return SAE.load_from_disk(folder, device=str(device), dtype=SAE_DTYPE)
    except Exception as err:  # sae-lens raises ValueError, KeyError, JSON and safetensors errors
        raise ModelLoadError(f"cannot load SAE from {folder}: {type(err).__name__}: {err}") from err


def load_sae_folders(sae_dirs: Mapping[int, str | Path], device: str | torch.device) -> dict[int, SAE]:
    """`load_local_sae` of each layer's folder, by layer, frozen and in eval mode.

    Every stage only reads SAEs; freezing them keeps the gradients that flow through z(h) in attribution
    and latent ablation from reaching (and accumulating on) their weights.
    """
    saes = {}
    for layer, folder in sorted(sae_dirs.items()):
        sae = load_local_sae(folder, device)
        sae.requires_grad_(False)
        saes[layer] = sae.eval()
    return saes


def save_sae(sae: SAE, out_dir: str | Path) -> None:
    """Write `sae` as a sae-lens folder at `out_dir`, atomically (replacing an existing folder).

    The folder is written as a temporary sibling and renamed into place, so an interrupted job never
    leaves a folder that looks complete. A training SAE is saved as its inference SAE.
    """
    from sae_lens import TrainingSAE

    with atomic_dir(out_dir) as tmp:
        if isinstance(sae, TrainingSAE):
            sae.save_inference_model(tmp)
        else:
            sae.save_model(tmp)

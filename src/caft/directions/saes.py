"""Sparse autoencoders per layer: train with sae-lens, load pretrained.

Pretrained SAEs (Gemma Scope for the paper profile, Gemma Scope 2 for Gemma 3 270M) go through the real
``SAE.from_pretrained``; offline, the default cannot download them, so we train them with sae-lens's own
``SAETrainer`` on activations already in memory (research notes, route B). Every SAE is exchanged as a
sae-lens folder (``cfg.json`` + ``sae_weights.safetensors``), written and read back only by
`caft.directions.sae_folders` (float32, errors naming the folder): the SAE stages and the latent ablation
share that one loader.

sae-lens is imported inside the functions: its import takes seconds and most stages never need it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from caft.config import dataclass_from_section
from caft.errors import ConfigError, DataError, ModelLoadError

if TYPE_CHECKING:
    from sae_lens import SAE, TrainingSAE

ACTIVATIONS_FORMAT = "caft.sae_activations/1"
"""Corpus residuals at the SAE layers (`sae_activations`): the SAE training data."""

TOPK_ARCHITECTURES = ("topk", "batchtopk")
"""The architectures whose sparsity is set by `k` (the rest ignore it)."""

WHERE = "SAE training config"


@dataclass(frozen=True)
class SaeTrainConfig:
    """How to train one SAE per layer: a `saes.train` (or `em.saes.train`) section, checked by
    config/schema.yaml, which also holds the defaults (these are `saes.train`'s) and gives each sparsity
    coefficient to its architecture only (`l1_coefficient`: standard, `l0_coefficient`: jumprelu).

    `tokens` is the number of activation rows consumed (rounded down to whole batches); `lr` decays
    to `lr_end` (default lr/10) on a cosine schedule. Activations are normalised to mean norm √d_in
    during training (folded into the weights afterwards), so `lr` and the sparsity coefficients do not
    depend on the model's residual scale.
    """

    architecture: str = "topk"
    width: int = 1024
    k: int = 32
    l1_coefficient: float = 1.0
    l0_coefficient: float = 1.0
    tokens: int = 1_000_000
    lr: float = 1e-3
    lr_end: float | None = None
    batch_size: int = 1024
    holdout_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        """`lr_end` None is lr/10; then the bounds between keys, which the schema cannot state."""
        if self.lr_end is None:
            object.__setattr__(self, "lr_end", self.lr / 10)
        if self.lr_end > self.lr:
            raise ConfigError(f"{WHERE}: key 'lr_end' ({self.lr_end}) must not exceed 'lr' ({self.lr})")
        if self.architecture in TOPK_ARCHITECTURES and self.k > self.width:
            raise ConfigError(f"{WHERE}: key 'k' ({self.k}) must not exceed 'width' ({self.width})")
        if self.tokens < self.batch_size:
            raise ConfigError(f"{WHERE}: key 'tokens' ({self.tokens}) is less than one batch "
                              f"('batch_size' = {self.batch_size})")

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> SaeTrainConfig:
        return dataclass_from_section(cls, section, WHERE)

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_size


def sae_layer_id(template: str, layer: int) -> str:
    """The sae_id of `layer` in a pretrained release, e.g. "layer_{layer}/width_16k/canonical"."""
    if not isinstance(template, str) or "{layer}" not in template:
        raise ConfigError(f"SAE id template {template!r} must contain '{{layer}}'")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ConfigError(f"SAE id template {template!r}: layer must be an integer >= 0, got {layer!r}")
    try:
        return template.format(layer=layer)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"SAE id template {template!r} has a placeholder other than {{layer}}: {err}") from err


def pretrained_sae_id(release: str, template: str, layer: int) -> str:
    """`layer`'s sae_id, checked against sae-lens's registry before anything is downloaded, so that a layer
    the release lacks names the config keys and the layers it has instead of failing inside sae-lens.

    A `release` outside the registry (a hub repo id) is left to `load_pretrained_sae` to resolve.
    """
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    sae_id = sae_layer_id(template, layer)
    lookup = get_pretrained_saes_directory().get(release)
    if lookup is None or sae_id in lookup.saes_map:
        return sae_id
    pattern = re.escape(template).replace(re.escape("{layer}"), r"(\d+)")
    layers = sorted(int(match[1]) for known in lookup.saes_map if (match := re.fullmatch(pattern, known)))
    examples = sorted(lookup.saes_map)[:3]
    has = f"the layers it has under this sae_id: {layers}" if layers else f"its ids look like {examples}"
    raise ConfigError(f"saes.layers: layer {layer} has no SAE in saes.release {release!r} (saes.sae_id {template!r} "
                      f"gives {sae_id!r}); {has}")


# --- training ---------------------------------------------------------------------------------------


def train_sae(
    activations: torch.Tensor, cfg: SaeTrainConfig, *, hook_name: str, model_name: str, progress: bool = False
) -> tuple[SAE, dict[str, Any]]:
    """Train one SAE with sae-lens's `SAETrainer`; return the inference SAE and a training report.

    Rows are split (seeded) into training and held-out rows; fvu/l0/dead_fraction in the report are
    measured on the held-out rows (on the training rows when there are none). The same activations and
    seed give bit-identical weights on CPU, and the caller's global RNG is left untouched. BatchTopK
    comes back as the JumpReLU SAE that sae-lens saves for inference.
    """
    where = f"SAE training for {hook_name}"
    rows = _check_activations(activations, where)
    device = rows.device
    generator = torch.Generator().manual_seed(cfg.seed)
    train_idx, holdout_idx = _split_rows(len(rows), cfg, generator, where)
    scaling, mean = _train_statistics(rows, train_idx, where)
    batches = _shuffled_batches(rows, train_idx.to(device), cfg.batch_size, generator)
    fork_devices = [device] if device.type == "cuda" else []
    bar = tqdm(batches, total=cfg.steps, desc=f"SAE {hook_name}", file=sys.stderr, disable=not progress)
    with bar, torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(cfg.seed)
        training_sae = _training_sae(cfg, rows.shape[1], device, hook_name, model_name)
        with torch.no_grad():
            # Residual streams carry a large constant component (Gemma's is ~2000 in norm, over 5x the
            # spread around it): starting b_dec at the mean spends the training on the variation, not on
            # walking b_dec there (at lr 3e-4 it cannot: FVU stayed > 5 with 85-96 % dead latents).
            training_sae.b_dec.copy_(mean * scaling)
        start = time.perf_counter()
        trained = _fit(training_sae, cfg, iter(bar), scaling)
        seconds = time.perf_counter() - start
        sae = _inference_sae(trained)
    sae.eval()
    evaluated = rows[holdout_idx.to(device)] if len(holdout_idx) else rows
    report = {
        "architecture": cfg.architecture,
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "k": cfg.k if cfg.architecture in TOPK_ARCHITECTURES else None,
        "tokens": cfg.steps * cfg.batch_size,
        "steps": cfg.steps,
        "seconds": seconds,
        "tokens_per_second": cfg.steps * cfg.batch_size / max(seconds, 1e-9),
        **evaluate_sae(sae, evaluated, where=f"{where}, evaluation"),
        "train_rows": len(train_idx),
        "holdout_rows": len(holdout_idx),
    }
    return sae, report


def _check_activations(activations: Any, where: str, chunk: int = 65536) -> torch.Tensor:
    """`activations` as float32 rows, checked in chunks (a full-size boolean mask would double memory)."""
    if not isinstance(activations, torch.Tensor) or activations.ndim != 2 or not activations.is_floating_point():
        shape = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise DataError(f"{where}: activations must be a float tensor [rows, d_in], got {shape}")
    if activations.shape[0] == 0 or activations.shape[1] == 0:
        raise DataError(f"{where}: activations are empty: shape {tuple(activations.shape)}")
    rows = activations.detach().float()
    if not all(torch.isfinite(rows[start:start + chunk]).all() for start in range(0, len(rows), chunk)):
        raise DataError(f"{where}: activations contain NaN or infinite values")
    return rows


def _split_rows(
    n_rows: int, cfg: SaeTrainConfig, generator: torch.Generator, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(training row ids, held-out row ids), a seeded permutation of range(n_rows)."""
    n_holdout = int(n_rows * cfg.holdout_fraction)
    if cfg.holdout_fraction > 0 and n_holdout < 2:
        raise DataError(f"{where}: 'holdout_fraction' {cfg.holdout_fraction} of {n_rows} rows leaves {n_holdout} "
                        "held-out rows; FVU needs at least 2 (use more rows, or 0 to report on training rows)")
    order = torch.randperm(n_rows, generator=generator)
    return order[n_holdout:], order[:n_holdout]


@torch.no_grad()
def _train_statistics(rows: torch.Tensor, train_idx: torch.Tensor, where: str,
                      chunk: int = 65536) -> tuple[float, torch.Tensor]:
    """sae-lens's "expected_average_only_in" factor √d_in / mean‖x‖ and the mean row, exact over the
    training rows."""
    total_norm = 0.0
    total = torch.zeros(rows.shape[1], dtype=torch.float64, device=rows.device)
    for start in range(0, len(train_idx), chunk):
        block = rows[train_idx[start:start + chunk].to(rows.device)].double()
        total_norm += block.norm(dim=1).sum().item()
        total += block.sum(dim=0)
    mean_norm = total_norm / len(train_idx)
    if mean_norm == 0:
        raise DataError(f"{where}: activations are all zero")
    return rows.shape[1] ** 0.5 / mean_norm, (total / len(train_idx)).float()


def _shuffled_batches(
    rows: torch.Tensor, train_idx: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless full batches of training rows; each pass over the rows is a fresh seeded shuffle."""
    pending = train_idx[:0]
    while True:
        while len(pending) < batch_size:
            shuffle = torch.randperm(len(train_idx), generator=generator).to(train_idx.device)
            pending = torch.cat([pending, train_idx[shuffle]])
        yield rows[pending[:batch_size]]
        pending = pending[batch_size:]


def _training_sae(cfg: SaeTrainConfig, d_in: int, device: torch.device, hook_name: str, model_name: str) -> TrainingSAE:
    """A freshly initialised sae-lens training SAE (weight init draws from the global RNG)."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    common = {
        "d_in": d_in,
        "d_sae": cfg.width,
        "device": str(device),
        "normalize_activations": "expected_average_only_in",
        "metadata": SAEMetadata(hook_name=hook_name, model_name=model_name),
    }
    if cfg.architecture == "topk":
        return sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(k=cfg.k, **common))
    if cfg.architecture == "batchtopk":
        return sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(k=cfg.k, **common))
    if cfg.architecture == "standard":
        return sae_lens.StandardTrainingSAE(
            sae_lens.StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common)
        )
    return sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(l0_coefficient=cfg.l0_coefficient, **common))


def _fit(sae: TrainingSAE, cfg: SaeTrainConfig, batches: Iterator[torch.Tensor], scaling: float) -> TrainingSAE:
    """Run sae-lens's trainer without wandb; the normalisation factor is given, not estimated from batches."""
    os.environ["WANDB_MODE"] = "disabled"
    from sae_lens import LoggingConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.activation_scaler import ActivationScaler

    trainer_cfg = SAETrainerConfig(
        total_training_samples=cfg.steps * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr_end,
        lr_scheduler_name="cosineannealing",
        device=str(sae.device),
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches)
    # A factor set before fit() is kept (the resume path) and folded into the weights at the end.
    trainer.activation_scaler = ActivationScaler(scaling_factor=scaling)
    return trainer.fit()


def _inference_sae(trained: TrainingSAE) -> SAE:
    """The SAE that `save_inference_model` writes (folded TopK norms, BatchTopK -> JumpReLU), in memory."""
    from sae_lens import SAE

    state = {name: tensor.detach().clone() for name, tensor in trained.state_dict().items()}
    trained.process_state_dict_for_saving_inference(state)
    sae = SAE.from_dict(trained.cfg.get_inference_sae_cfg_dict())
    sae.process_state_dict_for_loading(state)
    sae.load_state_dict(state)
    return sae.to(trained.device)


@torch.no_grad()
def evaluate_sae(
    sae: SAE, activations: torch.Tensor, batch_size: int = 4096, *, where: str = "SAE evaluation"
) -> dict[str, float]:
    """fvu = Σ‖x − x̂‖² / Σ‖x − mean(x)‖², l0 = mean active latents per row, dead_fraction = never active.

    Sums are float64 so that large residual norms do not cost precision; `where` (e.g. the layer) starts
    every error message.
    """
    rows = _check_activations(activations, where)
    if len(rows) < 2:
        raise DataError(f"{where}: FVU needs at least 2 rows, got {len(rows)}")
    if rows.shape[1] != sae.cfg.d_in:
        raise DataError(f"{where}: activations have width {rows.shape[1]}, the SAE expects d_in = {sae.cfg.d_in}")
    device = sae.W_dec.device
    mean = sum(rows[s:s + batch_size].double().sum(0) for s in range(0, len(rows), batch_size)) / len(rows)
    error = variance = active = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=device)
    for start in range(0, len(rows), batch_size):
        x = rows[start:start + batch_size].to(device)
        z = sae.encode(x)
        error += (x - sae.decode(z)).double().pow(2).sum().item()
        variance += (x.double() - mean.to(device)).pow(2).sum().item()
        nonzero = z != 0
        active += nonzero.sum().item()
        fired |= nonzero.any(dim=0)
    if variance == 0:
        raise DataError(f"{where}: activations have zero variance; FVU is undefined")
    return {
        "fvu": error / variance,
        "l0": active / len(rows),
        "dead_fraction": (~fired).float().mean().item(),
    }


# --- loading and saving -----------------------------------------------------------------------------


def load_pretrained_sae(release: str, sae_id: str, device: str = "cpu") -> SAE:
    """A released SAE via the real `SAE.from_pretrained` (the sae-lens registry + Hugging Face hub/cache),
    with its converters' shape lookups read through the cache (`_cached_tensor_shapes`)."""
    from unittest import mock

    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders

    try:
        with mock.patch.object(pretrained_sae_loaders, "get_safetensors_tensor_shapes", _cached_tensor_shapes):
            return SAE.from_pretrained(release, sae_id, device=device)
    except LocalEntryNotFoundError as err:
        offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached (no internet?)"
        raise ModelLoadError(
            f"SAE release {release!r} id {sae_id!r} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and {offline}; download it on a machine with internet into that "
            f"cache, or train SAEs instead: {err}"
        ) from err
    except Exception as err:  # registry misses are ValueError; converters raise KeyError, OSError, ...
        raise ModelLoadError(f"cannot load SAE release {release!r} id {sae_id!r}: {type(err).__name__}: {err}") from err


def _cached_tensor_shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
    """Tensor shapes of a hub safetensors file read through the Hugging Face cache.

    Stands in for sae-lens's `get_safetensors_tensor_shapes` (its Gemma Scope 2 converter reads d_in and d_sae
    with HTTP range requests that bypass the cache and HF_HUB_OFFLINE, so a fully cached SAE fails offline);
    the converter downloads the same file right after, so reading it whole first costs no extra transfer.
    """
    from huggingface_hub import hf_hub_download
    from safetensors import safe_open

    with safe_open(hf_hub_download(repo_id, filename), framework="pt") as file:
        return {name: list(file.get_slice(name).get_shape()) for name in file.keys()}


@dataclass(frozen=True)
class SaeSourceConfig:
    """Where one layer's SAE comes from (the `saes` keys `provision_sae` reads): ``train`` with `train`'s
    settings, ``pretrained`` (a sae-lens `release` and an `sae_id` pattern) or ``local`` (a folder pattern);
    patterns hold ``{layer}``."""

    source: str
    release: str | None = None
    sae_id: str | None = None
    path: str | None = None
    train: SaeTrainConfig | None = None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> SaeSourceConfig:
        values = {key: value for key, value in section.items() if value is not None}
        source = values.pop("from")
        train = values.pop("train", None)
        train = SaeTrainConfig.from_config(train) if source == "train" and train is not None else None
        return cls(source=source, train=train, **values)

"""The typed schema of a segtrain config: one dataclass per YAML section.

Field types and ``metadata`` bounds are read by :mod:`segtrain.config.validate`, so a new
option is one line here and is validated, documented in errors and dumped with every run.
Cross-field rules live in each section's ``check`` method and name the key they are about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from segtrain.errors import UserError

# Architectures from segmentation-models-pytorch, by their class names there.
SMP_ARCHS = (
    "Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN",
    "UPerNet", "Segformer",
)
LOSS_TERMS = ("bce", "dice", "focal", "mse")


def bounds(ge: float | None = None, le: float | None = None, gt: float | None = None,
           lt: float | None = None) -> dict:
    """Field metadata for numeric ranges, checked by the validator (inclusive ge/le, strict gt/lt)."""
    return {k: v for k, v in dict(ge=ge, le=le, gt=gt, lt=lt).items() if v is not None}


class ConfigError(UserError):
    """A config value that is not allowed; the validator prefixes the file and key path."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass
class AugmentConfig:
    """Seeded augmentations applied identically to image, mask and validity mask."""
    hflip: bool = True  # random horizontal flips
    vflip: bool = True  # random vertical flips
    rot90: bool = True  # random quarter turns
    brightness: float = field(default=0.0, metadata=bounds(ge=0.0, le=1.0))  # max relative jitter
    band_dropout: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))  # chance of each input band being zeroed, per tile


@dataclass
class DataConfig:
    """Where the data set lives and how tiles are cut from it."""
    root: str = "data/demo"  # the data set root: filelists/, scenes/, masks/ (docs/guide/data.md)
    bands: Optional[list[int]] = None  # 0-based band indices; None selects every band
    nodata: Optional[float] = None  # overrides the scene's own no-data value (TIFF tag or 0)
    tile_size: int = field(default=256, metadata=bounds(ge=16, le=8192))  # tile side in pixels, for training, validation and prediction
    overlap: int = field(default=32, metadata=bounds(ge=0))  # grid tiling for val/eval/predict
    sampling: Literal["random", "grid"] = "random"  # how training tiles are drawn each epoch
    tiles_per_epoch: int = field(default=1000, metadata=bounds(ge=1))  # for random sampling
    min_valid_fraction: float = field(default=0.25, metadata=bounds(ge=0.0, le=1.0))  # a training tile with fewer valid pixels is drawn again
    normalize: Literal["stats", "robust", "none"] = "stats"  # robust: clip tails, log-scale skewed bands
    stats_file: Optional[str] = None  # default: <root>/stats.json
    cache: bool = False  # the PBS job converts scenes to uncompressed TIFFs on scratch before training
    num_workers: int = field(default=4, metadata=bounds(ge=0, le=64))  # data loader processes; results do not depend on it
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def check(self) -> None:
        if self.overlap >= self.tile_size:
            raise ConfigError("data.overlap", f"must be smaller than data.tile_size ({self.tile_size}), got {self.overlap}")
        if self.bands is not None:
            if not self.bands:
                raise ConfigError("data.bands", "must list at least one band (or be null for all bands)")
            if min(self.bands) < 0:
                raise ConfigError("data.bands", f"band indices are 0-based and >= 0, got {self.bands}")
            if len(set(self.bands)) != len(self.bands):
                raise ConfigError("data.bands", f"lists a band twice: {self.bands}")


@dataclass
class ModelConfig:
    """The network: the U-Net written here (``unet``) or an smp architecture by class name."""
    arch: str = "unet"  # unet (written here) or an smp class name, e.g. Unet, FPN, DeepLabV3Plus
    encoder: str = "resnet34"  # smp encoder name (ignored by arch: unet)
    encoder_weights: Optional[str] = None  # a local .pth/.safetensors file; never downloaded
    encoder_depth: Optional[int] = field(default=None, metadata=bounds(ge=3, le=5))  # smp: encoder stages; None: smp's default
    depth: int = field(default=4, metadata=bounds(ge=1, le=6))  # unet: number of down-steps
    base_width: int = field(default=32, metadata=bounds(ge=4, le=512))  # unet: channels at full res
    norm: Literal["batch", "group"] = "batch"  # unet: normalization layers
    pixel_branch: int = field(default=0, metadata=bounds(ge=0, le=512))  # width of a per-pixel path (1x1 convs: bands -> w -> w -> logits) summed into the logits, unet and smp; 0: none
    in_channels: Optional[int] = field(default=None, metadata=bounds(ge=1))  # None: number of selected bands
    out_channels: Literal[1, 2] = 1  # 1: sigmoid logit, 2: two-class softmax
    sync_batchnorm: bool = False  # under DDP

    def check(self) -> None:
        if self.arch != "unet" and self.arch not in SMP_ARCHS:
            raise ConfigError("model.arch", f"unknown architecture {self.arch!r}; choose 'unet' or one of {', '.join(SMP_ARCHS)}")
        if self.arch == "unet" and self.encoder_weights is not None:
            raise ConfigError("model.encoder_weights", "the unet has no pretrained encoder; set it to null or pick an smp arch")


@dataclass
class LossConfig:
    """A weighted sum of masked loss terms, e.g. ``terms: {bce: 1.0, dice: 1.0}``."""
    terms: dict[str, float] = field(default_factory=lambda: {"bce": 1.0, "dice": 1.0})  # weights of bce, dice, focal, mse; weight 0: logged, not trained on
    pos_weight: Union[float, Literal["auto"], None] = None  # bce: weight of positives; auto from stats
    label_smoothing: float = field(default=0.0, metadata=bounds(ge=0.0, lt=0.5))  # bce: targets moved this far from 0 and 1
    dice_mode: Literal["per_sample", "per_batch"] = "per_sample"  # dice: per tile then averaged, or over the whole batch
    dice_smooth: float = field(default=1.0, metadata=bounds(ge=0.0))  # dice: added to numerator and denominator
    focal_gamma: float = field(default=2.0, metadata=bounds(ge=0.0))  # focal: focusing exponent
    focal_alpha: Optional[float] = field(default=0.25, metadata=bounds(ge=0.0, le=1.0))  # focal: weight of positives; None: unweighted

    def check(self) -> None:
        if not self.terms:
            raise ConfigError("loss.terms", f"needs at least one term of {', '.join(LOSS_TERMS)}")
        for name, weight in self.terms.items():
            if name not in LOSS_TERMS:
                raise ConfigError(f"loss.terms.{name}", f"unknown loss term; choose from {', '.join(LOSS_TERMS)}")
            if weight < 0:
                raise ConfigError(f"loss.terms.{name}", f"weight must be >= 0, got {weight}")
        if not any(self.terms.values()):
            raise ConfigError("loss.terms", f"every weight is 0, so the loss is 0 and nothing is learned: {self.terms}")
        if isinstance(self.pos_weight, float) and self.pos_weight <= 0:
            raise ConfigError("loss.pos_weight", f"must be > 0 or 'auto', got {self.pos_weight}")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""
    name: Literal["adam", "adamw", "sgd"] = "adamw"  # the optimizer
    lr: float = field(default=1e-3, metadata=bounds(gt=0.0, le=10.0))  # peak learning rate (segtrain lr-find suggests one)
    weight_decay: float = field(default=1e-4, metadata=bounds(ge=0.0))  # decoupled for adamw, L2 for adam and sgd
    momentum: float = field(default=0.9, metadata=bounds(ge=0.0, lt=1.0))  # sgd
    schedule: Literal["constant", "cosine", "onecycle", "plateau"] = "cosine"  # learning-rate schedule over the run's steps
    warmup_steps: int = field(default=0, metadata=bounds(ge=0))  # linear warm-up steps; onecycle: from lr/25, and 0 means 30 % of the run
    min_lr: float = field(default=0.0, metadata=bounds(ge=0.0))  # cosine: the learning rate at the last step
    plateau_patience: int = field(default=3, metadata=bounds(ge=0))  # plateau: validations without improvement before the lr drops
    plateau_factor: float = field(default=0.5, metadata=bounds(gt=0.0, lt=1.0))  # plateau: the lr is multiplied by this
    grad_clip: Optional[float] = field(default=None, metadata=bounds(gt=0.0))  # max gradient norm; None: not clipped


@dataclass
class EarlyStoppingConfig:
    """Stop when the monitored validation metric has not improved for ``patience`` validations."""
    metric: Literal["iou", "dice", "precision", "recall", "accuracy", "loss"] = "iou"  # validation metric that picks best.pt and early stopping
    patience: Optional[int] = field(default=None, metadata=bounds(ge=1))  # None: never stop early
    min_delta: float = field(default=0.0, metadata=bounds(ge=0.0))  # smaller gains do not count as improvement


@dataclass
class TrainConfig:
    """The training loop: length, batch, device and precision, checkpoint cadence."""
    epochs: int = field(default=50, metadata=bounds(ge=1))  # length of the run; more epochs on resume: docs/guide/training.md
    batch_size: int = field(default=16, metadata=bounds(ge=1))  # global batch, over all processes
    seed: int = field(default=0, metadata=bounds(ge=0, le=2**32 - 1))  # numpy's range; per-epoch seeds derive from it
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # ignored on CPU
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile, CUDA only
    threshold: float = field(default=0.5, metadata=bounds(gt=0.0, lt=1.0))  # on probabilities
    val_every_epochs: int = field(default=1, metadata=bounds(ge=1))  # validation (and best.pt, calibration) cadence
    checkpoint_every_steps: Optional[int] = field(default=None, metadata=bounds(ge=1))  # besides every epoch end
    checkpoint_every_minutes: Optional[float] = field(default=10.0, metadata=bounds(gt=0.0))  # besides every epoch end
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class WandbConfig:
    """Weights & Biases; offline by default so that runs never need an account or network."""
    mode: Literal["offline", "online", "disabled"] = "offline"  # offline: no account or network; sync later
    project: str = "segtrain"  # W&B project
    entity: Optional[str] = None  # W&B team or user; None: the account's default
    tags: list[str] = field(default_factory=list)  # W&B tags
    group: Optional[str] = None  # W&B group: runs shown together (a hyperparameter search sets its study's name)
    log_model: bool = False  # upload the final model as an artifact


@dataclass
class LoggingConfig:
    """Console, metrics.jsonl and W&B cadence."""
    every_steps: int = field(default=20, metadata=bounds(ge=1))  # console, metrics.jsonl and W&B lines
    samples_every_epochs: int = field(default=5, metadata=bounds(ge=1))  # validation sample figures
    num_samples: int = field(default=4, metadata=bounds(ge=0, le=64))  # tiles in each sample figure
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class RunConfig:
    """Where run directories go and what they are called."""
    root: str = "runs"  # where run directories are made
    name: Optional[str] = None  # default: <config name>-<override hash>-<time>


@dataclass
class Config:
    """A whole, resolved segtrain config."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run: RunConfig = field(default_factory=RunConfig)

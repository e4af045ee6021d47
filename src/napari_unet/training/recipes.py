"""What shapes a training run.

Its settings (:class:`TrainConfig`), the recipe for fine-tuning a model
(:data:`FINE_TUNE`), the defaults for whole cells, and where a run stands
(:class:`TrainState`, kept in its checkpoint).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .augment import AugmentConfig

# Post-processing of a model that learns whole cells from a nuclei model (whose
# thresholds were tuned for nuclei). A cell's interior score is as uneven as
# its texture, so seeds come from the distance to the interior region's edge
# (h-maxima at least an eighth of the working diameter high, 5 px at 40 px).
# Chosen on 6 held-out ctc-dic-hela/train frames for a fine-tuned and a scratch
# model (exp in docs/cells.md): AP@0.5 / SEG 0.709 / 0.693 and 0.850 / 0.756,
# against 0.629 / 0.692 and 0.566 / 0.743 with seeds split at score peaks.
# Fragments under a twelfth of the median cell are dropped: at 40 px across,
# about 100 px.
CELL_THRESHOLDS = dict(foreground_threshold=0.5, seed_threshold=0.5, seed_dynamic=0.0)


CELL_SEED_DEPTH_SHARE = 1 / 8


CELL_MIN_SIZE_SHARE = 1 / 12


@dataclass
class TrainConfig:
    """Everything that shapes a training run (recorded in the model file)."""

    epochs: int = 100
    minutes: float | None = None
    patches_per_epoch: int = 256
    batch_size: int = 8
    patch_size: int = 256  # network input; rounded up to a valid size
    optimizer: str = "adam"  # or "sgd" (momentum 0.99, as in the paper)
    lr: float | None = None  # default: 1e-3 for Adam, 1e-2 for SGD
    weight_decay: float = 1e-5
    # Fine-tuning only: an L2 pull of every weight toward the start model's
    # (L2-SP, Li et al. 2018), so a few images adapt the network without
    # making it forget what it knew (0: off).
    start_decay: float = 0.0
    # The pull used instead when the training images are whole cells and the
    # start model knows only nuclei: its weights are a start, not a prior to
    # stay near (3 DIC HeLa frames x 5 min, held-out train frames: AP@0.5 0.39
    # with the recipe's pull of 1, 0.65 without; docs/results.md, whole cells).
    cells_start_decay: float = 0.0
    # Whole cells learnt from a model that knows only nuclei start from a new
    # network of the same architecture (its input preparation kept): the
    # nuclei weights were a worse start (3 frames x 5 min, held-out train
    # frames of two draws: AP@0.5 0.85 and 0.95 from a new network, 0.71 and
    # 0.90 from the nuclei model; docs/results.md, whole cells).
    cells_from_new_network: bool = True
    schedule: str = "cosine"  # or "constant"
    warmup_steps: int = 20
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: float = 0.5  # exponent of the class-frequency weights (1 = the paper's)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    seed: int = 0
    workers: int = 0  # DataLoader worker processes
    device: str = "auto"
    precision: str = "auto"  # bfloat16 autocast where the hardware does it natively
    validate_every: int = 1  # epochs
    tune_postprocessing: bool = True
    # Keep batch-norm statistics as the starting model learned them (fine-tuning
    # on a few images would otherwise replace them with those few images' own).
    freeze_batch_norm: bool = False
    # Without validation images, validate on this share of each training image
    # (a strip along its longer side, not trained on); 0: no validation.
    holdout_fraction: float = 0.0
    # Score the start model before the first step: fine-tuning keeps it unless
    # training beats it on the validation images.
    validate_start: bool = False
    # ... by more than this / sqrt(nuclei validated on) plus
    # start_model_image_margin / sqrt(images validated on), grown when more
    # than MARGIN_CHOSEN_AT checkpoints compete (start_model_margin_for).
    # The best of many checkpoints, each scored on a few dozen nuclei, beats
    # the start model by chance alone; and a strip of an image trained on
    # favours a network fitted to that image, which a few images' strips
    # cannot tell from one that generalizes. Both chosen on held-out train
    # images (scripts/choose_replace_margin.py, 13 runs; docs/history.md): 0.02 per
    # image kept one image x 5 minutes from replacing a better start model.
    start_model_margin: float = 0.25
    start_model_image_margin: float = 0.02

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict."""
        d = asdict(self)
        d["augment"] = None if self.augment is None else self.augment.to_dict()
        return d


# The recipe for adapting a trained model to a few annotated images in minutes:
# the default of the CLI, the API (train(..., config=FINE_TUNE)) and the Train
# widget when they start from a model. Training from scratch uses TrainConfig().
FINE_TUNE = TrainConfig(
    epochs=10_000,
    minutes=5.0,
    patches_per_epoch=64,
    batch_size=8,
    lr=5e-4,
    warmup_steps=10,
    holdout_fraction=0.25,
    validate_start=True,
    # Chosen among 0, 0.01, 0.1 and 1 on held-out train images (docs/history.md,
    # "Fine-tuning"): 1 lost least where fine-tuning forgets (10 images at
    # 0.5x, 3 at 2x) and gained most where it helps (blur, uneven light).
    start_decay=1.0,
)


@dataclass
class TrainState:
    """Where a run stands; stored in its checkpoint so a resumed run continues from it."""

    epoch: int = 0  # the next epoch to run
    step: int = 0
    elapsed_s: float = 0.0
    best_score: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        """A training state from a checkpoint's dict; unknown keys are ignored."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

"""Profiles: optimisation recipes (``profiles/*.yaml``): converter options, calibration, training transforms."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgeopt.config.base import StrictModel, available, load_model_file, resolve

TensorType = Literal["float32", "float16", "int8", "uint8", "int16"]
OpsSet = Literal["builtins", "builtins_int8", "select_tf_ops"]
PrunableLayer = Literal["conv", "depthwise", "dense"]
MAX_SAMPLES = 10_000_000  # upper bound of the sample counts: a typo'd huge value fails here, not in an allocation


def _default_supported_ops() -> list[OpsSet]:
    return ["builtins"]


def _all_prunable_layers() -> list[PrunableLayer]:
    return ["conv", "depthwise", "dense"]


class TFLiteOptions(StrictModel):
    enabled: bool = True
    optimizations: list[Literal["default"]] = Field(default_factory=list)
    representative_dataset: bool = False
    supported_ops: list[OpsSet] = Field(default_factory=_default_supported_ops)
    supported_types: list[TensorType] = Field(default_factory=list)
    inference_input_type: TensorType = "float32"
    inference_output_type: TensorType = "float32"
    require_full_integer: bool = False  # fail if any op is left in float (names the op)

    @model_validator(mode="after")
    def _check(self) -> TFLiteOptions:
        quantised_io = {"int8", "uint8", "int16"}
        if (self.inference_input_type in quantised_io or self.inference_output_type in quantised_io) and not (
            self.representative_dataset
        ):
            raise ValueError("integer inference_input/output_type needs representative_dataset: true")
        if self.require_full_integer and not self.representative_dataset:
            raise ValueError("require_full_integer needs representative_dataset: true")
        return self


class ONNXOptions(StrictModel):
    enabled: bool = True
    quantization: Literal["none", "float16", "dynamic", "static"] = "none"
    quant_format: Literal["QDQ", "QOperator"] = "QDQ"
    per_channel: bool = True
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    activation_type: Literal["int8", "uint8"] = "int8"
    weight_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False


class Calibration(StrictModel):
    samples: int = Field(default=200, ge=1, le=MAX_SAMPLES)
    min_samples: int = Field(default=16, ge=1, le=MAX_SAMPLES)


class Training(StrictModel):
    """Fine-tuning shared by the training transforms (prune, distill, qat)."""

    epochs: int = Field(default=2, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=65536)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    max_samples: int | None = Field(default=None, ge=1)  # train on the first N samples only (quick runs)
    validation_split: float = Field(default=0.0, ge=0, lt=1)


class PruneOptions(Training):
    """Magnitude pruning of Conv/Dense kernels to a target sparsity (a fraction of weights set to zero)."""

    sparsity: float = Field(ge=0, lt=1)
    initial_sparsity: float = Field(default=0.0, ge=0, lt=1)
    schedule: Literal["polynomial", "constant"] = "polynomial"
    power: float = Field(default=3.0, gt=0, le=100)  # polynomial decay exponent (tfmot's PolynomialDecay default)
    begin_fraction: float = Field(default=0.0, ge=0, lt=1)  # of the fine-tuning steps
    end_fraction: float = Field(default=0.7, gt=0, le=1)  # sparsity reaches the target here; the rest recovers
    frequency: int = Field(default=10, ge=1, le=MAX_SAMPLES)  # steps between mask updates
    layers: list[PrunableLayer] = Field(default_factory=_all_prunable_layers)
    min_weights: int = Field(default=0, ge=0)  # kernels smaller than this are left dense
    learning_rate: float = Field(default=5e-4, gt=0, le=1)

    @model_validator(mode="after")
    def _check_schedule(self) -> PruneOptions:
        if self.initial_sparsity > self.sparsity:
            raise ValueError(f"initial_sparsity {self.initial_sparsity} is above the target sparsity {self.sparsity}")
        if self.begin_fraction >= self.end_fraction:
            raise ValueError("begin_fraction must be below end_fraction")
        return self


class DistillOptions(Training):
    """Knowledge distillation from the source model (teacher) into a smaller student."""

    width_multiplier: float | None = Field(default=None, gt=0, lt=1)  # student = teacher's architecture, narrower
    student: str | None = None  # or a student model file (.keras/.h5) the user supplies
    temperature: float = Field(default=4.0, gt=0, le=1000)
    alpha: float = Field(default=0.1, ge=0, le=1)  # weight of the hard-label loss; 1 - alpha on the teacher's
    teacher_outputs: Literal["auto", "logits", "probabilities"] = "auto"
    epochs: int = Field(default=8, ge=1, le=1000)
    learning_rate: float = Field(default=3e-3, gt=0, le=1)
    min_units: int = Field(default=4, ge=1, le=65536)  # no student layer gets fewer filters/units than this

    @model_validator(mode="after")
    def _check_student(self) -> DistillOptions:
        if (self.width_multiplier is None) == (self.student is None):
            raise ValueError("give exactly one of width_multiplier (0 < w < 1) or student (a model file)")
        return self


class QATOptions(Training):
    """Quantisation-aware fine-tuning: int8 fake-quantised weights (straight-through estimator)."""

    epochs: int = Field(default=1, ge=1, le=1000)
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    fold_batch_norm: bool = True  # quantise Conv/Dense kernels as the converter sees them (BN folded in)
    freeze_batch_norm: bool = True  # BN statistics fixed while fine-tuning (needed for exact folding)


class QualityLevel(StrictModel):
    """The thresholds of one verdict level: an output failing any of them is at least at that level.

    ``None`` switches a figure off. docs/quality.md says what each figure measures.
    """

    min_sqnr_db: float | None  # whole output: 10 log10(sum ref^2 / sum (ref - artifact)^2)
    min_cosine: float | None  # per sample, the worst sample
    max_relative_error: float | None  # max |ref - artifact| / float range of the output
    max_constant_channel_share: float | None = Field(ge=0, le=1)  # channels varying in float, constant here
    min_channel_snr_db: float | None  # worst channel: 10 log10(variance of ref / mean square error)
    min_top1_agreement: float | None = Field(ge=0, le=1)  # classifier outputs only
    max_accuracy_drop_pp: float | None  # classifier outputs with labels only


class DegradedLevel(QualityLevel):
    """Below these an artifact is ``degraded``: usable, but look at it (defaults measured: docs/quality.md)."""

    min_sqnr_db: float | None = 15.0
    min_cosine: float | None = 0.99
    max_relative_error: float | None = 0.2
    max_constant_channel_share: float | None = Field(default=0.0, ge=0, le=1)
    min_channel_snr_db: float | None = 10.0
    min_top1_agreement: float | None = Field(default=0.95, ge=0, le=1)
    max_accuracy_drop_pp: float | None = 2.0


class BrokenLevel(QualityLevel):
    """Below these an artifact is ``broken``: its outputs no longer carry what the float model computes."""

    min_sqnr_db: float | None = 5.0
    min_cosine: float | None = 0.9
    max_relative_error: float | None = 0.6
    max_constant_channel_share: float | None = Field(default=0.5, ge=0, le=1)
    min_channel_snr_db: float | None = 1.0
    min_top1_agreement: float | None = Field(default=0.5, ge=0, le=1)
    max_accuracy_drop_pp: float | None = 20.0


class QualityOptions(StrictModel):
    """How an artifact's outputs are judged against the float model's (edgeopt.analyze.quality.assess)."""

    degraded: DegradedLevel = DegradedLevel()
    broken: BrokenLevel = BrokenLevel()
    # a channel whose float values span less than this share of the output's float range is too quiet to judge
    channel_floor: float = Field(default=1e-4, ge=0, lt=1)
    # a channel whose artifact values span less than this share of its float span counts as constant
    constant_tolerance: float = Field(default=0.01, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_order(self) -> QualityOptions:
        for field in QualityLevel.model_fields:
            d, b = getattr(self.degraded, field), getattr(self.broken, field)
            if d is None or b is None:
                continue
            if (b > d) if field.startswith("min_") else (b < d):
                word = "above" if field.startswith("min_") else "below"
                raise ValueError(f"broken.{field} {b} is {word} degraded.{field} {d}: "
                                 "the broken level must be the looser one")
        return self


class MixedPrecision(StrictModel):
    """``int8-auto``: start from full int8 and keep in float the fewest layers (ranked worst by the int8
    debuggers) until every output's quality verdict reaches ``target``."""

    target: Literal["ok", "degraded"] = "ok"
    max_float_layers: int = Field(default=16, ge=1, le=256)  # give up (and say so) beyond this many
    candidates: int = Field(default=16, ge=1, le=256)  # how many of the debuggers' worst tensors are tried


class Profile(StrictModel):
    name: str
    description: str = ""
    tflite: TFLiteOptions = TFLiteOptions()
    onnx: ONNXOptions = ONNXOptions()
    calibration: Calibration = Calibration()
    prune: PruneOptions | None = None
    distill: DistillOptions | None = None
    qat: QATOptions | None = None
    quality: QualityOptions = QualityOptions()
    mixed_precision: MixedPrecision | None = None
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # training transforms are deterministic for a seed
    source_file: str | None = None

    @model_validator(mode="after")
    def _check_transforms(self) -> Profile:
        given = [name for name in ("prune", "distill", "qat") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"one training transform per profile, got {' and '.join(given)}")
        if self.mixed_precision is not None and not (self.tflite.representative_dataset
                                                     or self.onnx.quantization == "static"):
            raise ValueError("mixed_precision needs a calibrated int8 conversion (tflite.representative_dataset "
                             "or onnx.quantization: static)")
        return self

    @property
    def transforms(self) -> list[str]:
        """The training transform this profile applies to the Keras model before conversion (zero or one)."""
        return [name for name in ("prune", "distill", "qat") if getattr(self, name) is not None]

    @property
    def needs_training(self) -> bool:
        return bool(self.transforms)

    @property
    def needs_calibration(self) -> bool:
        return (self.tflite.enabled and self.tflite.representative_dataset) or (
            self.onnx.enabled and self.onnx.quantization == "static"
        )

    def build_facts(self) -> dict[str, Any]:
        facts = self.model_dump(exclude={"source_file", "description"})
        for name in ("prune", "distill", "qat", "mixed_precision"):  # absent: the keys of plain profiles stay
            if facts.get(name) is None:
                facts.pop(name, None)
        if not self.needs_training:
            facts.pop("seed", None)
        return facts


def load_profile(name_or_path: str) -> Profile:
    return resolve("profiles", name_or_path, Profile)



def list_profiles() -> list[Profile]:
    return [load_model_file(p, Profile) for p in available("profiles").values()]

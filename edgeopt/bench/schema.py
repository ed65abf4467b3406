"""The schema of the agent's document as the host reads it (docs/agent.md): every field a host module reads
(the result check, the table, the CI gate, the reports) has a declared type here, and a document from a device
is validated against it before it is stored. Device output is untrusted: a field of the wrong type is a failed
result (``error.kind = "agent"``), never a crash later in a table or a gate.

Only what the host reads is declared; any other field is kept as it came (``extra = "allow"``). Numbers are
finite ints or floats (never booleans, never strings); ``None`` where the agent may write null.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator, StrictInt, StrictStr, ValidationError


def _finite(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {str(value)[:20]!r}")
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


#: A finite number (int or float, not a boolean, not a string).
Num = Annotated[float | int, PlainValidator(_finite)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class LatencyMs(_Open):
    p50: Num | None = None  # missing figures: an invalid result (bench.document.check_result)
    count: StrictInt | None = None
    init: Num | None = None
    first: Num | None = None
    min: Num | None = None
    max: Num | None = None
    mean: Num | None = None
    std: Num | None = None
    p90: Num | None = None
    p99: Num | None = None
    warmup: StrictInt | None = None
    samples: list[Num] = []


class ModelBlock(_Open):
    sha256: StrictStr
    bytes: StrictInt | None = None


class RuntimeBlock(_Open):
    name: StrictStr | None = None
    version: StrictStr | None = None
    threads: StrictInt | None = None


class InputTensor(_Open):
    """One input as it ran: its shape (dynamic dims resolved), dtype, and where the shape came from."""

    name: StrictStr
    shape: list[StrictInt] = []
    dtype: StrictStr | None = None
    shape_from: StrictStr | None = None  # "--shape" | "default" | "model" | "file"


class InputsBlock(_Open):
    source: StrictStr | None = None  # "reference" | "inputs" (a user's --inputs file) | "random" (generated)
    sha256: StrictStr | None = None
    generated: bool | None = None
    samples: StrictInt | None = None
    tensors: list[InputTensor] | None = None


class MemoryBlock(_Open):
    peak_rss_kib: Num | None = None


class ArtifactParity(_Open):
    all_finite: bool | None = None
    top1_agreement: Num | None = None
    max_abs_diff: Num | None = None
    sqnr_db: Num | None = None


class OutputParity(_Open):
    """Parity of one output (``parity.outputs[k]``): against the artifact's host run and the float model's."""

    index: StrictInt
    name: StrictStr
    artifact: ArtifactParity | None = None
    float: ArtifactParity | None = None


class ParityBlock(_Open):
    """Top-level ``artifact``/``top1_agreement``/``max_abs_diff`` are the worst output's (``worst_output``)."""

    artifact: ArtifactParity | None = None
    accuracy: Num | None = None
    accuracy_output: StrictStr | None = None  # the output the labels were compared with
    top1_agreement: Num | None = None
    max_abs_diff: Num | None = None
    worst_output: StrictInt | None = None
    outputs: list[OutputParity] | None = None


class EnergyBlock(_Open):
    sensor: StrictStr | None = None
    energy_per_inference_j: Num | None = None


class DeviceBlock(_Open):
    emulated: bool | None = None


class AgentRun(_Open):
    """The ``run`` document (``agent.pyz run``)."""

    command: Literal["run"]
    model: ModelBlock
    latency_ms: LatencyMs
    runtime: RuntimeBlock | None = None
    inputs: InputsBlock | None = None
    memory: MemoryBlock | None = None
    parity: ParityBlock | None = None
    energy: EnergyBlock | None = None
    device: DeviceBlock | None = None
    valid: bool = True
    invalid_reasons: list[StrictStr] = []
    warnings: list[StrictStr] = []


def schema_problem(doc: Any) -> str | None:
    """``None`` when ``doc`` is a well-typed agent ``run`` document, else one line naming the first bad field
    (``latency_ms.p90: Input should be a valid number``)."""
    if not isinstance(doc, dict):
        return f"the document is a {type(doc).__name__}, not an object"
    try:
        AgentRun.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}{more}"
    return None

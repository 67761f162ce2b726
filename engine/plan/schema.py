"""The run configuration's schema: the pydantic models every preset, user YAML file and `--set`
override is validated against (reading and overriding: engine/plan/config.py).

No torch import here: the CLI and the wizard validate configs before any engine process starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    id: str = Field(description="Hub id or local directory, e.g. openai/gpt-oss-20b")
    init: Literal["pretrained", "random"] = "pretrained"
    # Overrides applied to the model's config.json (the tiny demo shrinks every dimension here).
    architecture: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    # auto: flex_attention on CUDA, eager on CPU.
    attn_implementation: Literal["auto", "eager", "flex_attention", "sdpa"] = "auto"
    tokenizer: str | None = Field(
        default=None,
        description="Tokenizer id or dir; default the model's, offline builder when offline",
    )
    trust_remote_code: bool = False
    # MXFP4 checkpoints (the hub's): bf16 = experts dequantized at load (38.9 GiB for 20b);
    # mxfp4 = experts kept packed as shipped (4.25 bits/weight), dequantized just in time per MoE
    # block; exact, LoRA only (the packed weights are frozen).
    experts: Literal["bf16", "mxfp4"] = "bf16"
    router_aux_loss_coef: float = Field(default=0.0, ge=0.0)


class LoraConfig(_Strict):
    r: int = Field(default=8, gt=0)
    alpha: int = Field(default=16, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    # Expert weights are parameters, not Linear modules: peft reaches them via target_parameters.
    target_parameters: list[str] = Field(default_factory=list)


class DistributedConfig(_Strict):
    gpus: int = Field(default=1, ge=0, description="Processes per node (0 = CPU, one process)")
    nnodes: int = Field(default=1, ge=1)
    fsdp: bool = False
    cpu_offload: bool = False
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    # The dtype FSDP reduces gradients in: auto = fp32, except offloaded runs of one or two
    # ranks, which reduce in the parameter dtype (the same bits there; engine/trainer/fsdp.py).
    reduce_dtype: Literal["auto", "float32"] = "auto"

    @property
    def world_size(self) -> int:
        return max(self.gpus, 1) * self.nnodes

    @property
    def reduces_in_param_dtype(self) -> bool:
        """Whether FSDP reduces gradients in the parameter dtype instead of fp32 (`reduce_dtype`
        auto on an offloaded run of one or two ranks; engine/trainer/fsdp.py says why)."""
        return self.reduce_dtype == "auto" and self.cpu_offload and self.world_size <= 2


class TrainingConfig(_Strict):
    learning_rate: float = Field(default=2e-4, gt=0.0, lt=1.0)
    lr_scheduler: Literal["constant_with_warmup", "cosine", "linear"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    sequence_len: int = Field(default=2048, ge=16)  # the longest example
    # Packed row length: null = sequence_len; auto = sized for the card's memory and speed
    # (engine/plan/packlen.py); a number >= sequence_len.
    pack_len: int | Literal["auto"] | None = None
    micro_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    num_epochs: float = Field(default=1.0, gt=0.0)
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps; overrides epochs"
    )
    optimizer: Literal["adamw_torch_fused", "adamw_torch"] = "adamw_torch_fused"
    weight_decay: float = Field(default=0.0, ge=0.0)
    adam_beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    gradient_checkpointing: bool = True
    seed: int = 42
    logging_steps: int = Field(default=1, ge=1)
    # Eval loss on the validation split every N optimizer steps (and always at the end).
    eval_steps: int | None = Field(default=None, ge=1)
    # Performance levers (engine/levers.py). compile: torch.compile of each MoE block ("mlp") or
    # whole decoder layer ("layer"), CUDA only; auto = mlp on one CUDA process, off otherwise.
    compile: Literal["auto", "off", "mlp", "layer"] = "auto"
    # Decoder layers (the last N) that keep their activations instead of being checkpointed;
    # auto = as many as the card holds, fitted after the first step (one CUDA process only).
    unchecked_layers: int | Literal["auto"] = 0
    # MoE blocks run over checkpointed chunks of this many tokens on longer rows; null = never.
    moe_chunk_tokens: int | None = Field(default=16384, ge=1)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_off(cls, value: Any) -> Any:
        # YAML reads a bare `off` as false: `compile: off` and `--set training.compile=off`.
        return "off" if value is False else value

    @field_validator("unchecked_layers", mode="before")
    @classmethod
    def _layer_count(cls, n: Any) -> Any:
        if n == "auto" or (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            return n
        raise ValueError("must be a layer count >= 0 or 'auto'")

    @field_validator("pack_len", mode="before")
    @classmethod
    def _pack_len(cls, n: Any) -> Any:
        if n is None or n == "auto" or (isinstance(n, int) and not isinstance(n, bool) and n >= 16):
            return n
        raise ValueError("must be a row length in tokens (>= sequence_len), 'auto' or null")

    @model_validator(mode="after")
    def _levers(self) -> TrainingConfig:
        if isinstance(self.pack_len, int) and self.pack_len < self.sequence_len:
            raise ValueError(f"pack_len {self.pack_len} is shorter than sequence_len "
                             f"{self.sequence_len} (the longest example must fit one row)")
        if self.unchecked_layers not in (0, "auto") and not self.gradient_checkpointing:
            raise ValueError("unchecked_layers needs gradient_checkpointing: true (without it "
                             "every layer keeps its activations)")
        return self


class DatasetConfig(_Strict):
    # A local JSON/JSONL/Parquet file or folder, a hub id, or "builtin:osstune-sample".
    path: str = "builtin:osstune-sample"
    split: str = "train"
    format: Literal["auto", "messages", "sharegpt", "alpaca"] = "auto"
    field_messages: str = "messages"
    # Axolotl `message_property_mappings`: harmony property -> dataset column in each message.
    message_property_mappings: dict[str, str] = Field(
        default_factory=lambda: {"role": "role", "content": "content"}
    )
    # Axolotl `roles`: harmony role -> the dataset's names for it, e.g. {"user": ["human"]}.
    roles: dict[str, list[str]] = Field(default_factory=dict)
    field_thinking: str = "thinking"
    field_tools: str = "tools"
    reasoning_effort: Literal["low", "medium", "high"] = "medium"
    field_reasoning_effort: str | None = Field(default=None, description="Per-row effort column")
    model_identity: str = "You are ChatGPT, a large language model trained by OpenAI."
    conversation_start_date: str | None = None
    roles_to_train: list[str] = Field(default_factory=lambda: ["assistant"])
    train_turns: Literal["all", "last", "expand"] = "all"
    invalid_rows: Literal["skip", "fail"] = "skip"
    overlength: Literal["drop", "truncate"] = "drop"
    packing: bool = True
    max_rows: int | None = Field(default=None, ge=1)
    num_proc: int | None = Field(default=None, ge=1)
    shuffle: bool = True
    # Held-out validation (engine/data/dataset_mix.py): a fraction (0 < x < 1) or a count of
    # conversations split off the training data, or a separate file/folder/hub id.
    val_size: float | None = Field(default=None, gt=0.0)
    val_path: str | None = None

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, value: float | None) -> float | None:
        if value is not None and value >= 1 and value != int(value):
            raise ValueError("must be a fraction below 1 (e.g. 0.05) or a whole count (e.g. 200)")
        return value

    @model_validator(mode="after")
    def _one_validation_source(self) -> DatasetConfig:
        if self.val_size is not None and self.val_path is not None:
            raise ValueError("val_size and val_path: give one of them")
        return self


# Keys of `dataset` that hold for the whole run and cannot differ per entry of `datasets`.
RUN_WIDE_DATASET_KEYS = ("packing", "shuffle", "val_size", "val_path")


class DatasetEntry(BaseModel):
    """One entry of `datasets:` (Axolotl style): any `dataset` key for this source, plus `weight`.

    Keys left out come from the `dataset` section. `weight` scales how many of its examples go
    into the mix: 2.0 repeats each twice, 0.5 keeps a seeded half.
    """

    model_config = ConfigDict(extra="allow")
    path: str
    weight: float = Field(default=1.0, gt=0.0)


class OutputConfig(_Strict):
    dir: str = "./outputs/run"
    save_steps: int | None = Field(default=None, ge=1, description="Checkpoint every N steps")
    keep_last: int = Field(default=2, ge=1)
    export: bool = True


class Requirements(_Strict):
    """What a preset needs; every figure carries its source in the preset's YAML comments."""

    gpus: int = Field(ge=0)
    peak_mem_gib_per_gpu: float = Field(ge=0.0)
    min_gpu_mem_gib: float = Field(ge=0.0)
    host_ram_gib: float = Field(ge=0.0)
    disk_gib: float = Field(ge=0.0)
    # Peak memory per GPU at other GPU counts, where a figure exists (e.g. {8: 36.0}).
    peak_mem_gib_by_gpus: dict[int, float] = Field(default_factory=dict)
    estimate: bool = True
    source: str = ""


class RunConfig(_Strict):
    name: str = "custom"
    description: str = ""
    model: ModelConfig
    method: Literal["lora", "full"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    # Several datasets mixed into one run; each entry overrides `dataset` keys for its source.
    datasets: list[DatasetEntry] = Field(default_factory=list)
    output: OutputConfig = Field(default_factory=OutputConfig)
    # Experiment trackers fed from the same metrics as the events (engine/trainer/tracking.py).
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    requirements: Requirements | None = None

    @model_validator(mode="before")
    @classmethod
    def _dataset_list(cls, data: Any) -> Any:
        """`dataset: [...]` is the same as `datasets: [...]`; `report_to: tensorboard` a list."""
        if isinstance(data, dict):
            if isinstance(data.get("dataset"), list):
                if data.get("datasets"):
                    raise ValueError("dataset is a list and datasets is set: use one of them")
                data = {**data, "datasets": data["dataset"]}
                del data["dataset"]
            if isinstance(data.get("report_to"), str):
                data = {**data, "report_to": [] if data["report_to"] == "none"
                        else [data["report_to"]]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        # Static rules: `osstune run` and the wizard refuse these before any process starts.
        dist = self.distributed
        if dist.cpu_offload and not dist.fsdp:
            raise ValueError("distributed.cpu_offload needs distributed.fsdp: true")
        if dist.world_size > 1 and not dist.fsdp:
            raise ValueError(f"distributed: {dist.world_size} processes (gpus x nnodes) need "
                             "fsdp: true (without it each process would train a full copy)")
        if self.method == "lora" and dist.fsdp:
            raise ValueError("method lora runs on one process: set distributed.fsdp: false and "
                             "distributed.gpus: 1 (or 0 for CPU)")
        if self.model.experts == "mxfp4" and self.method == "full":
            raise ValueError("model.experts: mxfp4 keeps the experts packed and frozen, full "
                             "fine-tuning trains them: use method: lora, or model.experts: bf16")
        if self.model.experts == "mxfp4" and self.lora.target_parameters and \
                not self.lora.target_modules:
            raise ValueError("lora.target_parameters with model.experts: mxfp4 needs "
                             "lora.target_modules too (the attention adapters)")
        if self.model.experts == "mxfp4" and dist.fsdp:
            raise ValueError("model.experts: mxfp4 runs on one process (distributed.fsdp: false)")
        if self.method == "lora" and not (self.lora.target_modules or self.lora.target_parameters):
            raise ValueError("lora needs target_modules or target_parameters")
        self.dataset_sources()  # each entry of `datasets` must make a valid dataset section
        return self

    def dataset_sources(self) -> list[tuple[DatasetConfig, float]]:
        """(dataset section, mixing weight) per source: `datasets` entries, else `dataset`."""
        if not self.datasets:
            return [(self.dataset, 1.0)]
        base = self.dataset.model_dump()
        sources = []
        for i, entry in enumerate(self.datasets):
            keys = entry.model_dump(exclude={"weight"})
            fixed = sorted(set(keys) & set(RUN_WIDE_DATASET_KEYS))
            if fixed:
                raise ValueError(f"datasets[{i}]: {', '.join(fixed)} hold for the whole run; "
                                 "set them under dataset")
            try:
                sources.append((DatasetConfig.model_validate({**base, **keys}), entry.weight))
            except ValidationError as e:
                first = e.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                msg = "unknown key" if first["type"] == "extra_forbidden" else \
                    first["msg"].removeprefix("Value error, ")
                raise ValueError(f"datasets[{i}].{key}: {msg}") from None
        return sources

"""The hgrn_bit model configuration, read from and written to a checkpoint's ``config.json``.

The keys and their defaults are those of the released ``mmfreelm`` ``HGRNBitConfig``, so a
published checkpoint folder (e.g. MMfreeLM-370M) loads unchanged and a folder we write loads
in ``mmfreelm``. Only the features this project implements are accepted: a short
convolution, another attention mode or an ``expand_ratio`` other than 1 with lower bounds
is refused with a :class:`ConfigError` rather than silently computed wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MODEL_TYPE = "hgrn_bit"


class ConfigError(ValueError):
    """A config.json that this project cannot run (unknown model type, bad or missing key)."""


@dataclass
class HGRNBitConfig:
    vocab_size: int = 32000
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    attn_mode: str = "fused_recurrent"
    num_heads: int = 1
    expand_ratio: int = 1
    use_short_conv: bool = False
    conv_size: int = 4
    share_conv_kernel: bool = True
    use_lower_bound: bool = True
    hidden_ratio: int = 4
    intermediate_size: int | None = None
    hidden_act: str = "swish"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    fuse_cross_entropy: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # The MLP width rule of mmfreelm's HGRNBitMLP: 2/3 of hidden*ratio, rounded up to 256.
    @property
    def mlp_intermediate_size(self) -> int:
        if self.intermediate_size is not None:
            return int(self.intermediate_size)
        size = int(self.hidden_size * self.hidden_ratio * 2 / 3)
        return 256 * ((size + 256 - 1) // 256)

    @property
    def input_dim(self) -> int:
        """Width of the MLGRU state (i/f/g projections)."""
        return int(self.hidden_size * self.expand_ratio)

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config key {name!r} must be a positive integer, got {value!r}")
        if self.attn_mode not in ("fused_recurrent", "chunk"):
            raise ConfigError(f"unsupported attn_mode {self.attn_mode!r}")
        if self.use_short_conv:
            raise ConfigError("use_short_conv=true is not supported (no released model uses it)")
        if self.hidden_act not in ("swish", "silu"):
            raise ConfigError(f"unsupported hidden_act {self.hidden_act!r} (only swish/silu)")
        if self.input_dim % self.num_heads:
            raise ConfigError("hidden_size * expand_ratio must be divisible by num_heads")
        if self.use_lower_bound and self.input_dim != self.hidden_size:
            # mmfreelm's lower_bounds are [layers, hidden_size] but gate an input_dim-wide state.
            raise ConfigError("use_lower_bound requires expand_ratio == 1")
        if not (isinstance(self.rms_norm_eps, float | int) and self.rms_norm_eps > 0):
            raise ConfigError(f"rms_norm_eps must be positive, got {self.rms_norm_eps!r}")
        if self.tie_word_embeddings:
            raise ConfigError("tie_word_embeddings=true is not supported (lm_head is ternary)")

    # -- config.json ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["model_type"] = MODEL_TYPE
        d["architectures"] = ["HGRNBitForCausalLM"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HGRNBitConfig:
        if not isinstance(d, dict):
            raise ConfigError("config.json must hold a JSON object")
        model_type = d.get("model_type")
        if model_type != MODEL_TYPE:
            raise ConfigError(f"model_type is {model_type!r}, expected {MODEL_TYPE!r}")
        known = {f.name for f in fields(cls)}
        # Hugging Face adds bookkeeping keys (transformers_version, torch_dtype, ...): ignore.
        kwargs = {k: v for k, v in d.items() if k in known}
        try:
            return cls(**kwargs)
        except TypeError as e:  # e.g. a list where an int belongs
            raise ConfigError(f"bad config.json: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> HGRNBitConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

"""Language modelling: predict token ``t+1`` from tokens ``<= t``; sample text from the trained model.

Loss: the mean next-token cross-entropy in nats per token,
``L = -1/N sum_t log p(x_{t+1} | x_{<=t})``. Metrics: ``loss`` (nats/token), ``perplexity = exp(L)``,
and for character tokenisers ``bpc = L / ln 2`` (bits per character).

Training uses truncated backpropagation through time over windows of ``data.seq_len`` tokens
(:class:`~deepfoundry.data.text.LMWindowLoader`: random offsets, shuffled windows, fresh zero state
per window). Evaluation runs longer contiguous windows (``data.eval_seq_len``).

Sampling (:meth:`LanguageModelTask.generate`): feed the prompt, then repeatedly draw
``x_{t+1} ~ softmax(z_t / temperature)`` restricted to the ``top_k`` largest logits (``temperature=0``
is greedy decoding), carrying the recurrent state so each new token costs one step. Models with a
KV cache (``new_cache()``, the Transformer LM) keep each layer's keys/values instead, within a sliding
``context_length`` window; ``use_cache=False`` recomputes the window at every token (same tokens).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.text import SPECIALS, tokenizer_from_json
from ..errors import DeepfoundryError
from ..registry import TASKS
from .base import Task


class LanguageModelTask(Task):
    """Next-token cross-entropy for a model ``f(x, state) -> (logits (B, T, V), state)``."""

    report_sections = ("curves", "text_samples")

    family = "language-model"
    use_instead = ": use Run.generate(prompt) or 'deepfoundry generate RUN'"

    def encode_inputs(self, raw: Any) -> Any:
        raise DeepfoundryError(f"this is a language model{self.use_instead}")

    def read_inputs(self, arguments: Any) -> Any:
        raise DeepfoundryError(f"this is a language model{self.use_instead}")

    def __init__(self, model: nn.Module, info: dict[str, Any], sample_prompt: str = "\n", sample_tokens: int = 500,
                 sample_temperature: float = 0.8, sample_top_k: int = 40, num_samples: int = 2) -> None:
        super().__init__(model, info)
        self.tokenizer = tokenizer_from_json(info["tokenizer"])
        self.sample = {"prompt": sample_prompt, "tokens": sample_tokens, "temperature": sample_temperature,
                       "top_k": sample_top_k}
        self.num_samples = num_samples
        self.reset_metrics()

    def training_step(self, batch: Any) -> torch.Tensor:
        x, y = batch  # (B, T), (B, T)
        logits, _ = self.model(x)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def reset_metrics(self) -> None:
        self._nats, self._tokens = 0.0, 0

    def evaluation_step(self, batch: Any) -> None:
        x, y = batch
        logits, _ = self.model(x)
        self._nats += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                            ignore_index=-100, reduction="sum"))
        self._tokens += int((y != -100).sum())

    def compute_metrics(self) -> dict[str, Any]:
        loss = self._nats / max(1, self._tokens)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": self._tokens}
        if self.tokenizer.kind == "char":
            out["bpc"] = loss / math.log(2)
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token probabilities ``(B, V)`` after each sequence of ids ``x`` (B, T)."""
        logits, _ = self.model(x)
        return torch.softmax(logits[:, -1].float(), dim=-1)

    @torch.no_grad()
    def generate(self, prompt: str, tokens: int = 300, temperature: float = 0.8, top_k: int | None = 40,
                 seed: int | None = None, use_cache: bool = True) -> str:
        """The prompt followed by ``tokens`` sampled tokens, as text.

        Models with a KV cache (``new_cache()``, the Transformer LM) decode incrementally when ``use_cache``;
        ``use_cache=False`` recomputes the whole window at every token (the same tokens, slower).
        """
        if not prompt:
            raise DeepfoundryError("the prompt is empty; give at least one character, e.g. --prompt 'ROMEO:'")
        if tokens < 0 or temperature < 0:
            raise DeepfoundryError(f"tokens and temperature must be >= 0, received {tokens} and {temperature}")
        ids = self.tokenizer.encode(prompt)
        limit = int(getattr(self.model, "max_length", 0) or 0)
        if limit and len(ids) + tokens > limit:
            raise DeepfoundryError(f"prompt ({len(ids)} tokens) + {tokens} new tokens = {len(ids) + tokens}, longer "
                                   f"than the model's maximum of {limit} (set model.max_length when training)")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        was_training = self.training
        self.eval()
        device = next(self.model.parameters()).device
        step = self._transformer_steps(ids, device, use_cache) if hasattr(self.model, "new_cache") else None
        if step is None:  # recurrent: carry the state, one step per token
            logits, state = self.model(torch.tensor([ids], device=device))
        else:
            logits = step(None)
        z = logits[0, -1].float().cpu()  # (V,)
        out = list(ids)
        for _ in range(tokens):
            z[:len(SPECIALS)] = -math.inf  # never emit <pad>, <unk>, <bos>, <eos>
            if temperature == 0:
                nxt = int(z.argmax())
            else:
                z = z / temperature
                if top_k:
                    kth = z.topk(min(top_k, z.numel())).values[-1]
                    z = z.masked_fill(z < kth, -math.inf)
                nxt = int(torch.multinomial(torch.softmax(z, dim=-1), 1, generator=gen))
            out.append(nxt)
            if step is None:
                logits, state = self.model(torch.tensor([[nxt]], device=device), state)
            else:
                logits = step(nxt)
            z = logits[0, -1].float().cpu()
        self.train(was_training)
        return self.tokenizer.decode(out)

    def _transformer_steps(self, ids: list[int], device: torch.device, use_cache: bool):
        """``step(token or None) -> logits (1, T, V)`` for a model with a context window and a KV cache.

        The window holds at most ``context_length`` tokens; when it is full it restarts from the last
        ``context_length // 2`` tokens (the cache is rebuilt from them), so generation can run past the
        context. Cached and uncached decoding use the same windows, hence the same logits.
        """
        ctx = int(self.model.context_length)
        seq = list(ids[-ctx:])  # a longer prompt keeps its last context_length tokens
        state: dict[str, Any] = {"cache": None}

        def run(window: list[int]) -> torch.Tensor:
            x = torch.tensor([window], device=device)
            if not use_cache:
                return self.model(x)[0]
            state["cache"] = self.model.new_cache()
            return self.model(x, state["cache"])[0]

        def step(token: int | None) -> torch.Tensor:
            nonlocal seq
            if token is None:
                return run(seq)
            seq.append(token)
            if len(seq) > ctx:  # slide: restart from the last half window
                seq = seq[-(ctx // 2):]
                return run(seq)
            if not use_cache:
                return run(seq)
            return self.model(torch.tensor([[token]], device=device), state["cache"])[0]

        return step

    def samples(self, seed: int = 0) -> list[str]:
        """``num_samples`` samples with the task's sample settings (``task.sample_*``)."""
        s = self.sample
        return [self.generate(s["prompt"], s["tokens"], s["temperature"], s["top_k"], seed=seed + i)
                for i in range(self.num_samples)]

    def on_train_end(self, run_dir: Path) -> None:
        """Write ``samples.txt`` into the run directory (called by :func:`deepfoundry.train`)."""
        s = self.sample
        header = f"# prompt {s['prompt']!r}, {s['tokens']} tokens, temperature {s['temperature']}, top-k {s['top_k']}\n"
        body = "\n\n----------\n\n".join(self.samples())
        (Path(run_dir) / "samples.txt").write_text(header + body + "\n", encoding="utf-8")


@TASKS.register("language_model")
def language_model(*, model: nn.Module, info: dict[str, Any], sample_prompt: str = "\n", sample_tokens: int = 500,
                   sample_temperature: float = 0.8, sample_top_k: int = 40, num_samples: int = 2) -> LanguageModelTask:
    """Next-token prediction (cross-entropy); perplexity and bits per character; text sampling."""
    if info.get("task_type") != "language_model":
        raise DeepfoundryError(f"task 'language_model' needs a language-model data set (e.g. tinyshakespeare); "
                               f"dataset {info.get('dataset')!r} is {info.get('task_type')!r}")
    return LanguageModelTask(model, info, sample_prompt, sample_tokens, sample_temperature, sample_top_k, num_samples)

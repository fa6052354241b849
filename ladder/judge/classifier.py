"""The pairwise preference judge of the WSDM Cup recipe: build, save, load, and score pairs with swap TTA.

Input text as the winning team built it, every field through ftfy.fix_text:
    "<prompt>: {prompt}\\n\\n<response_a>: {a}\\n\\n<response_b>: {b}"
truncated on the LEFT to `max_length` tokens (the end of the responses survives), with an optional
per-field token budget so one very long field cannot push the others out. Decoder backbones (Llama, Gemma,
Qwen) are padded on the left and read at the last position, which is then always the appended EOS token;
encoder backbones (BERT-like) are padded on the right and read at [CLS], because their position embeddings
are absolute and left padding would shift them.

Head `cls` (the recipe's): Dropout -> Linear(h, h/2) -> Dropout -> GELU -> Linear(h/2, n) over the pooled
position, n = 2 (a wins, b wins) or 3 (+ tie). Head `replies`: the mean of each reply's own tokens, a scored from
(a, b) and b from (b, a) by one shared scorer, a tie from their sum and difference (RepliesHead).
Test-time augmentation scores (a, b) and (b, a) and averages P(a wins) from both; the two passes are matched
by (row id, order), never by position, so any batching or length sort gives the same answer.

    judge = load_judge("models/judge")
    judge.score([{"id": "x1", "prompt": "...", "response_a": "...", "response_b": "..."}])
    # {"x1": {"p_a": 0.71, "p_b": 0.29, "p_a_ab": 0.74, "p_a_ba": 0.68}}
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from ladder import paths
from ladder.lazy import lazy_classes
from ladder.params import JUDGE_HEADS as HEADS

CONFIG_FILE, HEAD_FILE = "judge.json", "head.safetensors"
LABELS = ("model_a", "model_b", "tie")
SETTINGS = ("max_length", "field_budget", "head", "head_dropout", "ties", "quantization", "lora")  # saved with the judge
A_MARK, B_MARK = "\n\n<response_a>: ", "\n\n<response_b>: "


def fix(text: str) -> str:
    import ftfy

    return ftfy.fix_text(text)


def keep_last_tokens(text: str, tokenizer, budget: int | None) -> str:
    """The end of `text` that fits in `budget` tokens, cut at a token boundary of the original string."""
    if not budget:
        return text
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoded["offset_mapping"]
    return text if len(offsets) <= budget else text[offsets[-budget][0]:]


def judge_fields(prompt: str, a: str, b: str, tokenizer=None, field_budget: dict | None = None) -> tuple[str, str, str]:
    """The three fields fixed by ftfy and, with a budget, cut to their last `prompt` / `response` tokens."""
    budget = field_budget or {}
    prompt, a, b = fix(prompt), fix(a), fix(b)
    if tokenizer is not None and budget:
        prompt = keep_last_tokens(prompt, tokenizer, budget.get("prompt"))
        a = keep_last_tokens(a, tokenizer, budget.get("response"))
        b = keep_last_tokens(b, tokenizer, budget.get("response"))
    return prompt, a, b


def layout(prompt: str, a: str, b: str) -> str:
    return f"<prompt>: {prompt}{A_MARK}{a}{B_MARK}{b}"


def judge_text(prompt: str, a: str, b: str, tokenizer=None, field_budget: dict | None = None) -> str:
    return layout(*judge_fields(prompt, a, b, tokenizer, field_budget))


def is_decoder(config) -> bool:
    """Encoders are the architectures that have a masked-LM head (BERT, RoBERTa, DeBERTa, ...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def prepare_tokenizer(tokenizer, decoder: bool):
    from ladder.batching import with_pad_token

    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "left" if decoder else "right"
    return with_pad_token(tokenizer)


def encode(texts: list[str], tokenizer, max_length: int, decoder: bool) -> list[list[int]]:
    """Token ids, truncated on the left; decoders get EOS appended (the WSDM tokenizer added EOS) so the
    position the head reads is the same token for every row."""
    if not decoder:
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ids = tokenizer(texts, truncation=True, max_length=max_length - 1)["input_ids"]
    return [row + [tokenizer.eos_token_id] for row in ids]


def encode_segments(fields: list[tuple[str, str, str]], tokenizer, max_length: int,
                    decoder: bool) -> tuple[list[list[int]], list[list[int]]]:
    """The token ids `encode` gives for the laid-out fields, and for each token the reply it belongs to (1: a,
    2: b, 0: prompt, markers, special tokens), from the tokenizer's character offsets (transformers 5 backs
    every tokenizer with `tokenizers`, which gives them; asked for a slow one, it still gave a fast one)."""
    texts = [layout(*f) for f in fields]
    encoded = tokenizer(texts, truncation=True, max_length=max_length - 1 if decoder else max_length,
                        return_offsets_mapping=True)
    ids, segments = [], []
    for (prompt, a, b), text, row, offsets in zip(fields, texts, encoded["input_ids"], encoded["offset_mapping"]):
        start_a = len("<prompt>: ") + len(prompt) + len(A_MARK)
        start_b = len(text) - len(b)
        # a token belongs to a reply when it holds one of its characters (a byte-level BPE token also holds the
        # space before the reply)
        spans = ((1, start_a, start_a + len(a)), (2, start_b, len(text)))
        row_segments = [next((k for k, low, high in spans if min(end, high) > max(start, low)), 0)
                        for start, end in offsets]
        ids.append(row + [tokenizer.eos_token_id] if decoder else row)
        segments.append(row_segments + [0] if decoder else row_segments)
    return ids, segments


def pad_batch(tokenizer, features: list[dict]) -> dict:
    """tokenizer.pad, and `segments` (when the rows have them) padded with 0 on the tokenizer's padding side."""
    batch = tokenizer.pad([{k: v for k, v in f.items() if k != "segments"} for f in features], return_tensors="pt")
    if "segments" in features[0]:
        import torch

        width = batch["input_ids"].shape[1]
        left = tokenizer.padding_side == "left"
        batch["segments"] = torch.tensor([[0] * (width - len(f["segments"])) + list(f["segments"]) if left
                                          else list(f["segments"]) + [0] * (width - len(f["segments"]))
                                          for f in features])
    return batch


def head(hidden: int, labels: int, dropout: float):
    from torch import nn

    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden // 2), nn.Dropout(dropout), nn.GELU(),
                         nn.Linear(hidden // 2, labels))


def masked_mean(hidden, mask):
    """Mean over the positions of `mask` (zeros for a row where it holds none: an empty reply)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


@functools.cache
def _modules() -> dict[str, type]:
    """RepliesHead and PairJudge, defined on first use: they subclass torch's nn.Module, and importing torch with this
    module would make every stage's --help wait for it. Reach them as ladder.judge.classifier.RepliesHead / PairJudge."""
    import torch
    from torch import nn

    class RepliesHead(nn.Module):
        """Each reply read as the mean of its own tokens; a scored from (a, b) and b from (b, a) by one shared
        scorer, a tie from (a + b, |a - b|). Swapping the replies swaps the scores by construction, so only the
        backbone can carry a preference for a position (an encoder's position embeddings; a decoder's causal
        attention too). The `cls` head learns where to look for each reply: trained on good-against-bad pairs only,
        it weighed the same feature differently at the two positions and, on two replies of one kind, picked by
        position."""

        def __init__(self, hidden: int, labels: int, dropout: float):
            super().__init__()
            self.score = head(2 * hidden, 1, dropout)
            self.tie = head(2 * hidden, 1, dropout) if labels == 3 else None

        def forward(self, hidden, segments):
            a, b = (masked_mean(hidden, segments == k) for k in (1, 2))
            logits = [self.score(torch.cat([a, b], -1)), self.score(torch.cat([b, a], -1))]
            if self.tie is not None:
                logits.append(self.tie(torch.cat([a + b, (a - b).abs()], -1)))
            return torch.cat(logits, -1)

    class PairJudge(nn.Module):
        """A backbone (optionally LoRA and quantized) and the custom head: over one pooled position (`cls`), or
        over each reply's tokens (`replies`)."""

        def __init__(self, backbone, hidden: int, labels: int, dropout: float, decoder: bool, kind: str = "cls"):
            super().__init__()
            if kind not in HEADS:
                raise ValueError(f"classifier.head must be cls or replies, not {kind!r}")
            self.backbone, self.decoder, self.kind = backbone, decoder, kind
            self.head = head(hidden, labels, dropout) if kind == "cls" else RepliesHead(hidden, labels, dropout)

        def forward(self, input_ids, attention_mask, labels=None, segments=None):
            from transformers.modeling_outputs import SequenceClassifierOutput

            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if self.kind == "replies":
                if segments is None:
                    raise ValueError("the replies head needs each token's segment (ladder.judge.classifier.encode_segments)")
                logits = self.head(hidden.float(), segments)
            else:
                pooled = hidden[:, -1] if self.decoder else hidden[:, 0]  # left-padded decoder: EOS; encoder: [CLS]
                logits = self.head(pooled.float())
            loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return SequenceClassifierOutput(loss=loss, logits=logits)

    for cls in (RepliesHead, PairJudge):
        cls.__qualname__ = cls.__name__
    return {"RepliesHead": RepliesHead, "PairJudge": PairJudge}


__getattr__ = lazy_classes(__name__, ("RepliesHead", "PairJudge"), _modules)


def load_backbone(path: str | Path, quantization: str = "none", cuda: bool = False, bf16: bool = False):
    """The bare backbone (no LM or classification head), through the quantize stage's bitsandbytes settings."""
    from transformers import AutoModel

    from ladder.export.quantization import bnb_config, device_map
    from ladder.training.trainer import compute_dtype, device_name, torch_dtype

    config = bnb_config(quantization, compute_dtype(bf16))
    dtype = torch_dtype(bf16)
    if config is None:
        return AutoModel.from_pretrained(path, dtype=dtype).to(device_name(cuda))
    return AutoModel.from_pretrained(path, quantization_config=config, dtype=dtype, device_map=device_map(cuda))


def build_judge(backbone_path: str | Path, labels: int, head_dropout: float, quantization: str, lora: dict | None,
                seed: int, cuda: bool = False, bf16: bool = False, kind: str = "cls"):
    """A trainable judge (PairJudge): LoRA on the (possibly quantized) backbone, a freshly initialised head trained in
    full."""
    import torch

    if kind not in HEADS:
        raise ValueError(f"classifier.head must be cls or replies, not {kind!r}")
    if quantization != "none":  # refuse early, naming the layer, what a CPU kernel would refuse later
        from ladder.export.quantization import bnb_shape_problems, model_skeleton
        problems = bnb_shape_problems(model_skeleton(backbone_path, causal_lm=False), quantization)
        if problems:
            raise ValueError(f"the judge's backbone {backbone_path} cannot be quantized to {quantization}: "
                             f"{problems[0]}" + (f" (and {len(problems) - 1} more layers)" if len(problems) > 1 else ""))
    # A backbone trained whole keeps float32 weights, and the trainer's bf16 autocast computes in bf16 (what the
    # CPU's cpu_bf16 path does too): stored in bf16, an AdamW step of lr ~1e-4 is below the resolution of most
    # weights (bf16 keeps 8 bits of mantissa) and is rounded away. Under LoRA the frozen weights stay bf16 (PEFT
    # keeps the adapter in float32), and a quantized backbone computes in bf16.
    backbone = load_backbone(backbone_path, quantization, cuda, bf16 and bool(lora))
    torch.manual_seed(seed)  # LoRA's and the head's initial weights
    if quantization != "none":
        if not lora:
            raise ValueError("a quantized backbone is trained through LoRA only: set classifier.lora")
        from peft import prepare_model_for_kbit_training
        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=False)
    if lora:
        from peft import get_peft_model

        from ladder.training.trainer import lora_config
        # `layers`: the last N transformer blocks only. Backpropagation then stops below them, which is most of
        # the training time saved on a CPU; the frozen blocks below still run forward.
        top = {}
        if lora.get("layers"):
            count = backbone.config.num_hidden_layers
            top = {"layers_to_transform": list(range(max(count - lora["layers"], 0), count))}
        backbone = get_peft_model(backbone, lora_config(lora, **top))
    model = _modules()["PairJudge"](backbone, backbone.config.hidden_size, labels, head_dropout, is_decoder(backbone.config), kind)
    model.head.to(next(backbone.parameters()).device)  # only the head: a bitsandbytes backbone refuses .to()
    return model


def train(model, tokenizer, pairs: list[tuple], params: dict, hw: dict):
    """Fit the judge on (prompt, first, second, label) pairs (params: the `classifier` section); returns the
    trainer's figures."""
    import time

    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from ladder.training.trainer import LiveCallback, count_tokens, token_timings, trainer_arguments

    fields = [judge_fields(p, a, b, tokenizer, params["field_budget"]) for p, a, b, _ in pairs]
    ids, segments = encode_segments(fields, tokenizer, params["max_length"], model.decoder)
    columns = {"input_ids": ids, "labels": [label for *_, label in pairs]}
    if model.kind == "replies":
        columns["segments"] = segments
    data = Dataset.from_dict(columns)
    live = LiveCallback("classifier", params={k: params.get(k) for k in (*SETTINGS, "preference_share", "swap_augment",
                                                                         "identical_pairs", "identical_label", "seed", "cpu_bf16",
                                                                         "trainer")})
    args = TrainingArguments(**trainer_arguments(params["trainer"], str(paths.CHECKPOINTS / "classifier"), params["seed"],
                                                 hw, optim_gpu="adamw_8bit"))
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=lambda rows: pad_batch(tokenizer, rows),
                      callbacks=[live])
    tokens = count_tokens(trainer)
    start = time.perf_counter()
    result = trainer.train()
    trained = token_timings(tokens, time.perf_counter() - start, args.world_size)
    return {"train_loss": result.training_loss, "processes": args.world_size, "tokens": trained, **live.timings}


def save_judge(model, tokenizer, settings: dict, target: Path) -> None:
    """The adapter (or the full backbone without LoRA), the head, the tokenizer and the settings to rebuild it."""
    from safetensors.torch import save_file

    from ladder.training.trainer import save_adapter

    target.mkdir(parents=True, exist_ok=True)
    if settings.get("lora"):
        save_adapter(model.backbone, target / "adapter")
    else:
        model.backbone.save_pretrained(target / "backbone", safe_serialization=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.head.state_dict().items()}, target / HEAD_FILE)
    tokenizer.save_pretrained(target)
    (target / CONFIG_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


class Judge:
    """A trained judge (its PairJudge, tokenizer and settings) ready to score pairs."""

    def __init__(self, model, tokenizer, settings: dict):
        self.model, self.settings = model.eval(), settings
        self.tokenizer = prepare_tokenizer(tokenizer, model.decoder)
        self.labels = len(settings["labels"])

    def probabilities(self, keyed_fields: dict, batch_size: int = 32, progress: bool = True) -> dict:
        """Softmax over the labels for each (prompt, first, second) laid out, by key; batches are formed in length
        order. `progress`: a bar over the batches on the main process."""
        import torch

        from ladder.batching import length_sorted_batches
        from ladder.training.trainer import progress as bar

        keys = list(keyed_fields)
        ids, segments = encode_segments([keyed_fields[k] for k in keys], self.tokenizer, self.settings["max_length"],
                                        self.model.decoder)
        device = next(self.model.parameters()).device
        out = {}
        with torch.inference_mode():
            batches = length_sorted_batches([len(row) for row in ids], batch_size)
            for chunk in bar(batches, f"judge: scoring {len(keys)} ordered pairs", "batch", progress):
                rows = [{"input_ids": ids[i], **({"segments": segments[i]} if self.model.kind == "replies" else {})}
                        for i in chunk]
                batch = pad_batch(self.tokenizer, rows).to(device)
                probs = self.model(**batch).logits.softmax(-1).float().cpu()
                out.update({keys[i]: p for i, p in zip(chunk, probs)})
        return out

    def score(self, rows: list[dict], tta: bool = True, batch_size: int = 32,
              progress: bool = True) -> dict[str, dict]:
        """Per row id: P(a wins) and P(b wins) (and P(tie) with three labels), averaged over both orders when
        `tta`, plus P(a wins) from each order alone (p_a_ab, p_a_ba) and, with three labels, P(tie) from each
        order alone (p_tie_ab, p_tie_ba): a tie counts half a win in the position-bias figures."""
        if len({r["id"] for r in rows}) != len(rows):
            raise ValueError("judge rows need unique ids: the two orders are matched by id")
        import torch

        fields = {}
        for r in rows:
            prompt, a, b = judge_fields(r["prompt"], r["response_a"], r["response_b"], self.tokenizer,
                                        self.settings.get("field_budget"))
            fields[(r["id"], "ab")] = (prompt, a, b)
            if tta:
                fields[(r["id"], "ba")] = (prompt, b, a)
        probs = self.probabilities(fields, batch_size, progress)
        scored = {}
        for r in rows:
            ab = probs[(r["id"], "ab")]
            frames = [ab]
            if tta:  # in the swapped pass, label 0 ("the first response wins") means b
                ba = probs[(r["id"], "ba")]
                frames.append(torch.cat([ba[1:2], ba[0:1], ba[2:]]))
            mean = torch.stack(frames).mean(0)
            result = {"p_a": float(mean[0]), "p_b": float(mean[1]), "p_a_ab": float(ab[0])}
            if tta:
                result["p_a_ba"] = float(frames[1][0])
            if self.labels == 3:
                result["p_tie"], result["p_tie_ab"] = float(mean[2]), float(ab[2])
                if tta:
                    result["p_tie_ba"] = float(frames[1][2])
            scored[r["id"]] = result
        return scored


def checked_backbone(folder: str | Path, expected: dict) -> Path:
    """`folder`, once it is known to hold the backbone the judge was trained on (`expected`: model id,
    revision). A judge saves only its adapter and head, so any other backbone would give wrong scores silently."""
    from ladder.data.models import read_identity

    found = read_identity(folder)
    if found != expected:
        raise ValueError(f"the judge was trained on backbone {expected}, but {folder} holds {found}: "
                         "rerun the classifier stage (dvc repro classifier)")
    return Path(folder)


def load_judge(path: str | Path, backbone_folder: str | Path = paths.JUDGE_BASE, cuda: bool = False,
               bf16: bool = False) -> Judge:
    """A judge saved by the classifier stage. With LoRA its backbone is read from `backbone_folder`, which must
    hold the model (id and revision) the judge's settings name."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = Path(path)
    settings = json.loads((path / CONFIG_FILE).read_text())
    if settings.get("lora"):
        from peft import PeftModel
        folder = checked_backbone(backbone_folder, settings["backbone"])
        backbone = load_backbone(folder, settings["quantization"], cuda, bf16)
        backbone = PeftModel.from_pretrained(backbone, path / "adapter")
        if settings["quantization"] == "none":  # folded into the weights: the same logits, a third faster on CPU
            backbone = backbone.merge_and_unload()
    else:
        backbone = load_backbone(path / "backbone", "none", cuda, bf16)
    model = _modules()["PairJudge"](backbone, backbone.config.hidden_size, len(settings["labels"]), 0.0, is_decoder(backbone.config),
                      settings.get("head", "cls"))
    model.head.load_state_dict(load_file(path / HEAD_FILE))
    model.head.to(next(backbone.parameters()).device)
    return Judge(model, AutoTokenizer.from_pretrained(path), settings)

"""The reward model: how a conversation becomes its input text, how the model is built and trained, and how texts
are scored (and the best of several replies picked).

Shared by the reward stage (training, evaluation), the score stage (filtering the training data) and
inference (best-of-n, a second opinion beside the judge). A reward model folder is a plain transformers
sequence-classification model; `reward_objective.json` beside it says how its output reads:
regression (one output, the predicted thumbs-up rate) or classification (two classes, P(thumbs up)).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ladder import paths
from ladder.params import OBJECTIVES

OBJECTIVE_FILE = "reward_objective.json"


def render(messages: list[dict], tokenizer) -> str:
    """A conversation as the backbone expects it: its chat template if it has one, else one
    "role: content" line per message (encoders such as MiniLM have no template)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return role_lines(messages)


def role_lines(messages: list[dict]) -> str:
    """One "role: content" line per message."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def num_labels(objective: str) -> int:
    if objective not in OBJECTIVES:
        raise ValueError(f"reward.objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    return 1 if objective == "regression" else 2


def left_truncating(tokenizer):
    """The latest turns carry the verdict, so a long conversation loses its beginning, not its end."""
    from ladder.batching import with_pad_token

    tokenizer.truncation_side = "left"
    return with_pad_token(tokenizer)


def scores_from_logits(logits, objective: str):
    """One number per row: the regression output, or P(thumbs up) for classification."""
    import torch

    if objective == "regression":
        return logits[:, 0].float()
    return torch.softmax(logits.float(), dim=-1)[:, 1]


TRAINING_KEYS = ("objective", "max_length", "lora", "seed", "score_batch_size", "cpu_bf16", "trainer")  # as dvc.yaml declares


def build_model(base: str | Path, objective: str, lora: dict | None, seed: int, pad_token_id: int | None = None):
    """A sequence-classification model on `base` with a fresh head for `objective` (seeded), under LoRA when
    `lora` is set."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)  # the new head's initial weights
    labels = num_labels(objective)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=labels, problem_type="regression" if labels == 1 else "single_label_classification")
    if model.config.pad_token_id is None:  # decoder backbones: batches need the pad id, and it is saved
        model.config.pad_token_id = pad_token_id
    if lora:
        from peft import get_peft_model

        from ladder.training.trainer import lora_config
        model = get_peft_model(model, lora_config(lora, "SEQ_CLS"))
    return model


def train(model, tokenizer, texts: list[str], labels: list[float], params: dict, hw: dict):
    """Fit on (text, label) (params: the `reward` section); returns the trained model (LoRA merged in) and the
    trainer's figures."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from ladder.training.trainer import LiveCallback, count_tokens, token_timings, trainer_arguments

    classification = params["objective"] == "classification"
    data = Dataset.from_dict({"text": texts, "label": [int(y) if classification else float(y) for y in labels]})
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=params["max_length"]),
                    batched=True, remove_columns=["text"])
    live = LiveCallback("reward", params={k: params.get(k) for k in TRAINING_KEYS})
    args = TrainingArguments(**trainer_arguments(params["trainer"], str(paths.CHECKPOINTS / "reward"), params["seed"], hw))
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[live])
    tokens = count_tokens(trainer)
    start = time.perf_counter()
    result = trainer.train()
    trained = token_timings(tokens, time.perf_counter() - start, args.world_size)
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, {"train_loss": result.training_loss, "processes": args.world_size, "tokens": trained, **live.timings}


def best_replies(samples: list[list[str]], prompts: list[list[dict]], scorer) -> tuple[list[str], list[float]]:
    """Per prompt, the sample the reward model (a Scorer) scores highest (the first of equals), and its score:
    best-of-n."""
    flat = [(i, reply) for i, replies in enumerate(samples) for reply in replies]
    scores = scorer.score_conversations([prompts[i] + [{"role": "assistant", "content": r}] for i, r in flat])
    best: dict[int, tuple[float, str]] = {}
    for (i, reply), score in zip(flat, scores):
        if i not in best or score > best[i][0]:
            best[i] = (score, reply)
    return [best[i][1] for i in range(len(prompts))], [best[i][0] for i in range(len(prompts))]


class Scorer:
    """A trained reward model, ready to score texts in length-sorted batches."""

    def __init__(self, path: str | Path, max_length: int, batch_size: int = 32, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ladder.training.trainer import device_name

        path = Path(path)
        self.objective = json.loads((path / OBJECTIVE_FILE).read_text())["objective"]
        self.tokenizer = left_truncating(AutoTokenizer.from_pretrained(path))
        self.device = device or device_name(torch.cuda.is_available())
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(self.device).eval()
        self.max_length, self.batch_size = max_length, batch_size

    def score_texts(self, texts: list[str], progress: bool = True) -> list[float]:
        return score_texts(self.model, self.tokenizer, texts, self.objective, self.max_length, self.batch_size,
                           progress)

    def score_conversations(self, conversations: list[list[dict]], progress: bool = True) -> list[float]:
        return self.score_texts([render(m, self.tokenizer) for m in conversations], progress)


def score_texts(model, tokenizer, texts: list[str], objective: str, max_length: int, batch_size: int,
                progress: bool = True) -> list[float]:
    """Scores, in input order, of texts batched by token length so that little compute goes to padding.
    `progress`: a bar over the batches on the main process."""
    import torch

    from ladder.batching import length_sorted_batches
    from ladder.training.trainer import progress as bar

    if not texts:
        return []
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    scores = [0.0] * len(texts)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in bar(length_sorted_batches(lengths, batch_size), f"reward model: scoring {len(texts)} texts",
                         "batch", progress):
            inputs = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length, padding=True,
                               return_tensors="pt").to(device)
            values = scores_from_logits(model(**inputs).logits, objective).tolist()
            for i, value in zip(batch, values):
                scores[i] = value
    return scores

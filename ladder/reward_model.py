"""The reward model: how a conversation becomes its input text, and how texts are scored.

Shared by the reward stage (training, evaluation), the score stage (filtering the training data) and
inference (best-of-n, a second opinion beside the judge). A reward model folder is a plain transformers
sequence-classification model; `reward_objective.json` beside it says how its output reads:
regression (one output, the predicted thumbs-up rate) or classification (two classes, P(thumbs up)).
"""
from __future__ import annotations

import json
from pathlib import Path

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
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def scores_from_logits(logits, objective: str):
    """One number per row: the regression output, or P(thumbs up) for classification."""
    import torch

    if objective == "regression":
        return logits[:, 0].float()
    return torch.softmax(logits.float(), dim=-1)[:, 1]


class Scorer:
    """A trained reward model, ready to score texts in length-sorted batches."""

    def __init__(self, path: str | Path, max_length: int, batch_size: int = 32, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        self.objective = json.loads((path / OBJECTIVE_FILE).read_text())["objective"]
        self.tokenizer = left_truncating(AutoTokenizer.from_pretrained(path))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
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

    from ladder.training import progress as bar

    if not texts:
        return []
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    scores = [0.0] * len(texts)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in bar(range(0, len(order), batch_size), f"reward model: scoring {len(texts)} texts", "batch",
                         progress):
            batch = order[start:start + batch_size]
            inputs = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length, padding=True,
                               return_tensors="pt").to(device)
            values = scores_from_logits(model(**inputs).logits, objective).tolist()
            for i, value in zip(batch, values):
                scores[i] = value
    return scores

"""The chat template as an artifact: one rendering for SFT, DPO, generation and the judge.

`sft.chat_template` names it: `base` keeps the model's own, any other name is a template shipped in
ladder/training/templates/ (`chatml`, and `mistral-nemo`, Mistral-Nemo's Tekken format keeping the system message).
The template used to train is saved with every model, so generation renders prompts exactly as training did.

Training labels come from the rendered text itself: each assistant turn's content and its end-of-turn
token are the only characters with a loss, whichever role opens the conversation; everything the model
is given (system, user, role headers, a system prompt the template adds by itself) is masked with -100.
"""
from __future__ import annotations

from pathlib import Path

from ladder.batching import with_pad_token
from ladder.errors import InputError

TEMPLATES = Path(__file__).parent / "templates"
IGNORE = -100
# Private-use characters: no template writes them, so where they land is where a turn's content goes.
_PROBE = "\ue000ladder assistant content\ue001"


def use_template(tokenizer, name: str):
    """Set the tokenizer's chat template by name; returns the tokenizer."""
    if name != "base":
        path = TEMPLATES / f"{name}.jinja"
        if not path.is_file():
            known = ", ".join(["base"] + sorted(p.stem for p in TEMPLATES.glob("*.jinja")))
            raise InputError(f"unknown chat template {name!r}; known: {known}")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the model has no chat template of its own: set sft.chat_template to a named one")
    return with_pad_token(tokenizer)


def render(messages: list[dict], tokenizer, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(messages: list[dict], tokenizer,
                    learn_greeting: bool = True) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, for each assistant turn, the character span the model must write:
    from the end of the generation prompt (or, for an opening turn, from where its content starts) to the
    end of its end-of-turn marker. Whatever the template puts before that (a default system prompt, role
    headers) or after it (the newline after <|im_end|>) is given, not learned. With `learn_greeting` false,
    assistant turns before the first user turn (a role-play bot's greeting, written by its creator) are
    context too."""
    text = render(messages, tokenizer)
    spans = []
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), len(messages))
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or (not learn_greeting and i < first_user):
            continue
        upto = render(messages[:i + 1], tokenizer)
        # The same conversation with a marker for this turn's content shows where the template puts the
        # content, whatever it writes around it or does to it (strip it, add a default system prompt).
        probe = render(messages[:i] + [{**message, "content": _PROBE}], tokenizer)
        head, found, tail = probe.partition(_PROBE)
        content_end = len(upto) - len(tail)
        if not (found and text.startswith(upto) and upto.startswith(head) and upto.endswith(tail)
                and content_end >= len(head)):
            raise ValueError("the chat template does not render a conversation's beginning as a prefix of the "
                             "whole, with each assistant turn's content in one place; it cannot mark assistant "
                             "turns for the loss")
        start = len(head)
        if i:
            # What generation is given: anything the template writes between it and the content (an empty
            # think block) is the model's to write, so it is learned too.
            before = render(messages[:i], tokenizer, generation_prompt=True)
            if not head.startswith(before):
                raise ValueError("the chat template's generation prompt is not how it renders the assistant "
                                 "turn that follows; generation would not see what training saw")
            start = len(before)
        spans.append((start, content_end + len(tail.rstrip())))
    return text, spans


def tokenize_for_training(messages: list[dict], tokenizer, max_length: int,
                          learn_greeting: bool = True) -> dict | None:
    """input_ids and labels (-100 outside assistant turns), keeping the END of a conversation that is
    too long. None when no assistant token is left to learn from."""
    text, spans = assistant_spans(messages, tokenizer, learn_greeting)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = encoded["input_ids"], []
    for token, (start, end) in zip(ids, encoded["offset_mapping"]):
        inside = any(s <= start and end <= e and end > start for s, e in spans)
        labels.append(token if inside else IGNORE)
    ids, labels = ids[-max_length:], labels[-max_length:]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def checked_collator(collator):
    """A batch with no token to learn from is an error, not a silent zero loss."""
    def collate(examples):
        batch = collator(examples)
        if bool((batch["labels"] == IGNORE).all()):
            raise ValueError("a training batch has every label masked: nothing to learn from")
        return batch
    return collate


def fit_prompt(messages: list[dict], tokenizer, max_tokens: int) -> list[dict]:
    """The prompt shortened to `max_tokens` (as rendered for generation): its earliest turns go first, the
    system message stays; if the last turn alone is too long, it keeps its end."""
    def length(msgs):
        return len(tokenizer(render(msgs, tokenizer, generation_prompt=True), add_special_tokens=False)["input_ids"])

    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while len(turns) > 1 and length(system + turns) > max_tokens:
        turns = turns[1:]
    over = length(system + turns) - max_tokens
    while over > 0 and turns and turns[-1]["content"]:  # re-encoding a cut text can differ by a token
        ids = tokenizer(turns[-1]["content"], add_special_tokens=False)["input_ids"]
        turns = turns[:-1] + [{**turns[-1], "content": tokenizer.decode(ids[over:])}]
        over = length(system + turns) - max_tokens
    return system + turns

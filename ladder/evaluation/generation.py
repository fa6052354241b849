"""Sampling replies from a chat model with its own saved chat template.

Prompts are rendered with the model's chat template (the same rendering SFT and DPO train on), padded
on the left, and generated in batches of similar length. On CPU, one seed gives the same replies.
"""
from __future__ import annotations


def render_prompt(messages: list[dict], tokenizer) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sample_replies(model, tokenizer, prompts: list[list[dict]], n: int, sampling: dict, seed: int,
                   batch_size: int = 8, max_input_tokens: int = 1024, counts: dict | None = None,
                   progress: bool = True) -> list[list[str]]:
    """`n` sampled replies per prompt (a list of messages), in prompt order. `sampling` holds
    max_new_tokens, temperature, top_p, top_k and optionally stop (strings that end a reply: generation
    stops there, and the reply is cut before it). `counts`, if given, gets the number of generated tokens.
    `progress`: a bar over the batches on the main process."""
    import torch

    from ladder.batching import length_sorted_batches, with_pad_token
    from ladder.training.trainer import progress as bar

    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    with_pad_token(tokenizer)
    texts = [render_prompt(p, tokenizer) for p in prompts]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    replies: list[list[str]] = [[] for _ in texts]
    stop = list(sampling.get("stop") or [])
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    batches = length_sorted_batches(lengths, batch_size)
    for batch in bar(batches, f"generating {n} x {len(texts)} replies", "batch", progress):
        inputs = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True,
                           max_length=max_input_tokens, add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=True, num_return_sequences=n,
                                 max_new_tokens=sampling["max_new_tokens"], temperature=sampling["temperature"],
                                 top_p=sampling["top_p"], top_k=sampling["top_k"],
                                 pad_token_id=tokenizer.pad_token_id, **({"stop_strings": stop, "tokenizer": tokenizer}
                                                                         if stop else {}))
        generated = out[:, inputs["input_ids"].shape[1]:]
        if counts is not None:
            counts["tokens"] = counts.get("tokens", 0) + int((generated != tokenizer.pad_token_id).sum())
        new = tokenizer.batch_decode(generated, skip_special_tokens=True)
        for k, text in enumerate(new):
            replies[batch[k // n]].append(cut_at_stop(text, stop))
    return replies


def cut_at_stop(text: str, stop: list[str]) -> str:
    """The reply up to the first stop string (Chai served replies up to the first newline)."""
    for s in stop:
        if s and s in text:
            text = text[:text.index(s)]
    return text.strip()

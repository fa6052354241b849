"""How close a quantized model stays to the model it was made from, and what it costs: next-token KL divergence and
top-1 agreement, the perplexity of each, the size on disk (whole files, and the quantized tensors alone), and greedy
generation speed.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

ITEM_BYTES = {"I8": 1, "U8": 1, "F16": 2, "BF16": 2, "F32": 4, "I64": 8}


def fidelity(reference, candidate, batches: list) -> dict:
    """Next-token agreement of `candidate` with `reference` over tokenized texts: mean KL(reference || candidate)
    per position, top-1 agreement, and the perplexity of each on the texts' own next tokens."""
    import torch
    import torch.nn.functional as F

    kl = agree = nll_ref = nll_cand = positions = 0.0
    with torch.inference_mode():
        for ids in batches:
            ref = F.log_softmax(reference(ids.to(reference.device)).logits[0, :-1].float().cpu(), dim=-1)
            cand = F.log_softmax(candidate(ids.to(candidate.device)).logits[0, :-1].float().cpu(), dim=-1)
            target = ids[0, 1:]
            kl += float(F.kl_div(cand, ref, log_target=True, reduction="sum"))
            agree += float((ref.argmax(-1) == cand.argmax(-1)).sum())
            nll_ref -= float(ref.gather(1, target[:, None]).sum())
            nll_cand -= float(cand.gather(1, target[:, None]).sum())
            positions += len(target)
    ppl_ref, ppl = math.exp(nll_ref / positions), math.exp(nll_cand / positions)
    return {"kl_mean": kl / positions, "top1_agreement": agree / positions, "perplexity": ppl,
            "perplexity_reference": ppl_ref, "perplexity_change": ppl - ppl_ref, "positions": int(positions)}


def sizes(files: list[Path], numels: dict[str, int]) -> dict:
    """Bytes on disk, and the bytes and original element count of the tensors stored quantized (int8 or
    packed 4-bit weights with their scales in safetensors; quantized GGML types in GGUF)."""
    from gguf import GGMLQuantizationType as Q, GGUFReader
    from safetensors import safe_open

    q_bytes = q_numel = 0
    for f in files:
        if f.suffix == ".gguf":
            for t in GGUFReader(f).tensors:
                if t.tensor_type not in (Q.F32, Q.F16, Q.BF16):
                    q_bytes, q_numel = q_bytes + int(t.n_bytes), q_numel + int(t.n_elements)
            continue
        with safe_open(f, "pt") as st:
            info = {k: (st.get_slice(k).get_dtype(), math.prod(st.get_slice(k).get_shape())) for k in st.keys()}
        for key, (dtype, _) in info.items():
            if key.endswith(".weight") and dtype in ("I8", "U8"):
                module = key.removesuffix("weight")  # the weight and its scales: <module>.weight*, <module>.SCB
                q_numel += numels[key]
                q_bytes += sum(n * ITEM_BYTES[d] for k, (d, n) in info.items() if k.startswith(module))
    return {"bytes": sum(f.stat().st_size for f in files), "quantized_bytes": q_bytes, "quantized_numel": q_numel}


def generation_speed(model, tokenizer, prompt: str, new_tokens: int) -> float:
    """Greedy tokens/s for `new_tokens` tokens after `prompt` (timing only; the text is not used), after an
    untimed two-token generation: a model's first call on a GPU loads its kernels and sets up cuBLAS, which the
    timing of so short a generation would include (on an H100 the merged model, measured first, gave 7 tokens/s
    and the same model read back from GGUF, measured last, 47)."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    greedy = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    cuda = torch.device(model.device).type == "cuda"
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=2, min_new_tokens=2, **greedy)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **greedy)
        if cuda:
            torch.cuda.synchronize()
    return new_tokens / (time.perf_counter() - start)

"""inference: every chat model answers the same held-out prompts; the judge compares every pair of models and
controls on every prompt, and every reply against itself; the reward model scores every reply.

Reads   data/clean/conversations.parquet (eval split), the models named in `inference.models` (base, sft,
        merged, int8, nf4, gguf-f16, gguf-q8_0), models/judge (+ models/judge_base), models/reward, params
        `inference` (models, controls, n_prompts, seed, backend, sampling, best_of, batch_size), `reward.max_length`
        and `reward.score_batch_size` (scoring replies), `classifier.eval_batch_size` (judging them).
Writes  data/generations/prompts.parquet (prompt_id, source, messages, reference),
        data/generations/responses.parquet (prompt_id, model, control, reply, reward, samples),
        data/generations/judgments.parquet (prompt_id, model_a, model_b, p_a / p_b / p_tie with swap TTA,
        p_a_ab / p_a_ba and p_tie_ab / p_tie_ba from each order alone),
        data/generations/identical.parquet (prompt_id, model, p_first: P(first wins) + P(tie) / 2 of a reply
        against itself, one order, no TTA: the judge's position bias with nothing else to go on),
        metrics/timings/inference.json (load time and generated tokens/s per model).

Prompts are eval conversations cut before their last assistant turn (thumbs-down conversations left out: their
last reply is no reference), `n_prompts` of them chosen with the seed, each rendered with the model's own saved
chat template. The controls of `inference.controls` (ladder/evaluation/controls.py: `reference`, the conversation's own
next reply, and `shuffled`, another prompt's reference of the same source) cost no generation: they are scored and
judged like models, with samples = [reply] and control = true. `best_of` samples per prompt; the reward
model keeps the best. `backend: vllm` generates with vLLM when it is installed and a GPU is present
(base, merged and GGUF models); everything else, and every CPU run, uses transformers' generate. The
choice is logged.

Usage:
    python -m stages.inference
"""
from __future__ import annotations

import json
import logging
import time

from ladder import paths
from ladder.errors import InputError
from ladder.stage import stage
from ladder.training.trainer import stage_hardware

log = logging.getLogger("ladder.inference")
# the p_tie columns are null for a two-label judge; metrics needs each order's tie share for the position figures
JUDGMENT_COLUMNS = ("p_a", "p_b", "p_tie", "p_a_ab", "p_a_ba", "p_tie_ab", "p_tie_ba")


@stage("inference", hardware=stage_hardware)
def main(all_params: dict, hw: dict) -> None:
    import polars as pl

    from ladder.evaluation.chat_models import choose_backend, load_chat_model, vllm_replies
    from ladder.evaluation.controls import control_replies, eval_prompts, held_out_prompts, identical_rows, pairwise
    from ladder.evaluation.elo import soft_outcome
    from ladder.evaluation.generation import sample_replies
    from ladder.io import write_json, write_parquet
    from ladder.data.records import require_counts
    from ladder.judge.classifier import load_judge
    from ladder.data.models import read_identity
    from ladder.training.reward_model import Scorer, best_replies

    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    params = all_params["inference"]
    controls_requested = params["controls"]
    judge_backbone = json.loads((paths.JUDGE / "judge.json").read_text()).get("backbone")
    if judge_backbone and read_identity(paths.JUDGE_BASE) != judge_backbone:  # before hours of generation
        raise InputError(f"{paths.JUDGE} was trained on backbone {judge_backbone}, but {paths.JUDGE_BASE} "
                         f"holds {read_identity(paths.JUDGE_BASE)}: rerun the classifier stage")
    pool = eval_prompts(paths.CONVERSATIONS)
    require_counts({"eval": len(pool)}, [paths.CONVERSATIONS],
                   "inference (eval conversations that end in a reply to a user turn)", {"eval": 1})
    prompts = held_out_prompts(paths.CONVERSATIONS, params["n_prompts"], params["seed"])
    messages = [p["messages"] for p in prompts]
    scorer = Scorer(paths.REWARD, all_params["reward"]["max_length"], all_params["reward"]["score_batch_size"])
    responses, rewards, samples, timings = {}, {}, {}, {}
    for name in params["models"]:
        backend = choose_backend(params["backend"], name, hw)
        log.info("%s: generating %d x %d replies with %s (%s)", name, len(prompts), params["best_of"], backend,
                 hw["device"])
        start, counts = time.perf_counter(), {}
        if backend == "vllm":
            drawn = vllm_replies(name, messages, params["best_of"], params["sampling"], params["seed"])
            load_seconds = 0.0
        else:
            model, tokenizer = load_chat_model(name, hw)
            load_seconds = time.perf_counter() - start
            drawn = sample_replies(model, tokenizer, messages, params["best_of"], params["sampling"], params["seed"],
                                   params["batch_size"], params["sampling"]["max_input_tokens"], counts)
            del model
        seconds = time.perf_counter() - start - load_seconds
        responses[name], rewards[name] = best_replies(drawn, messages, scorer)
        samples[name] = drawn
        timings[name] = {"backend": backend, "load_seconds": round(load_seconds, 2),
                         "generated_tokens": counts.get("tokens"), "tokens_per_second":
                         round(counts["tokens"] / seconds, 2) if counts.get("tokens") else None}
    controls = control_replies(prompts, pool, controls_requested, params["seed"])
    for name, replies in controls.items():
        responses[name], rewards[name] = best_replies([[r] for r in replies], messages, scorer)
        samples[name] = [[r] for r in replies]
    rows = pairwise(responses, prompts)
    same = identical_rows(responses, prompts)
    start = time.perf_counter()
    judge = load_judge(paths.JUDGE, paths.JUDGE_BASE, hw["cuda"], hw["bf16"])
    judge_batch = all_params["classifier"]["eval_batch_size"]
    judged = judge.score(rows, batch_size=judge_batch)
    timings["judge_pairs_per_second"] = round(len(rows) / max(time.perf_counter() - start, 1e-9), 1)
    first = judge.score(same, tta=False, batch_size=judge_batch)  # one order only: the bias TTA would average away
    write_parquet(pl.DataFrame(
        [{"prompt_id": p["prompt_id"], "source": p["source"], "messages": p["messages"], "reference": p["reference"]}
         for p in prompts],
        schema={"prompt_id": pl.String, "source": pl.String,
                "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})), "reference": pl.String}),
        paths.GENERATIONS / "prompts.parquet")
    write_parquet(pl.DataFrame(
        [{"prompt_id": p["prompt_id"], "model": name, "control": name in controls, "reply": responses[name][i],
          "reward": rewards[name][i], "samples": samples[name][i]}
         for name in responses for i, p in enumerate(prompts)],
        schema={"prompt_id": pl.String, "model": pl.String, "control": pl.Boolean, "reply": pl.String,
                "reward": pl.Float64, "samples": pl.List(pl.String)}), paths.GENERATIONS / "responses.parquet")
    write_parquet(pl.DataFrame(
        [{"prompt_id": r["prompt_id"], "model_a": r["model_a"], "model_b": r["model_b"],
          **{k: judged[r["id"]].get(k) for k in JUDGMENT_COLUMNS}} for r in rows],
        schema={"prompt_id": pl.String, "model_a": pl.String, "model_b": pl.String,
                **{k: pl.Float64 for k in JUDGMENT_COLUMNS}}), paths.GENERATIONS / "judgments.parquet")
    write_parquet(pl.DataFrame(
        [{"prompt_id": r["prompt_id"], "model": r["model"],
          "p_first": soft_outcome(first[r["id"]]["p_a"], first[r["id"]].get("p_tie"))} for r in same],
        schema={"prompt_id": pl.String, "model": pl.String, "p_first": pl.Float64}),
        paths.GENERATIONS / "identical.parquet")
    write_json(timings, paths.timings_file("inference"))
    log.info("%d prompts, %d models, %d controls, %d judgments, %d identical pairs", len(prompts),
             len(responses) - len(controls), len(controls), len(rows), len(same))

if __name__ == "__main__":
    main()

"""Chat templates: exactly the assistant turns carry a loss whichever role opens the conversation, for every
shipped template and the model's own; and the Mistral-Nemo template gives the tokens of mistral-common, the
reference tokenization of Mistral's Tekken models."""
from __future__ import annotations

import json

import pytest

from ladder.training.chat import IGNORE, TEMPLATES, assistant_spans, fit_prompt, render, tokenize_for_training, use_template
from ladder.evaluation.generation import render_prompt
from ladder.data.models import load_bundled_chat_tokenizer

# Each template's end-of-turn, as written after an assistant's content (None: the tokenizer's eos_token).
# A new template must be added here.
END_OF_TURN = {"base": "<|im_end|>", "chatml": "<|im_end|>", "mistral-nemo": None}
SHIPPED = sorted(p.stem for p in TEMPLATES.glob("*.jinja"))

SYSTEM = {"role": "system", "content": "You are Aria, a librarian."}
GREETING = {"role": "assistant", "content": "Welcome to the library!"}
OPENINGS = {
    "system": [SYSTEM, {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello, reader."}],
    "user": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello, reader."}],
    "assistant": [GREETING, {"role": "user", "content": "Any maps?"}, {"role": "assistant", "content": "Plenty."}],
    "system then assistant": [SYSTEM, GREETING, {"role": "user", "content": "Any maps?"},
                              {"role": "assistant", "content": "Three shelves.\nAll old."}],
}


SYSTEM_FREE_TWO_TURNS = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                         {"role": "user", "content": "Maps?"}, {"role": "assistant", "content": "Three."}]


def labelled_runs(out: dict, tokenizer) -> list[str]:
    """The labelled tokens, decoded one contiguous run at a time."""
    runs, run = [], []
    for token, label in zip(out["input_ids"], out["labels"]):
        if label != IGNORE:
            assert label == token
            run.append(label)
        elif run:
            runs.append(run)
            run = []
    runs += [run] if run else []
    return [tokenizer.decode(r) for r in runs]


def end_of_turn(template, tokenizer):
    return END_OF_TURN[template] or tokenizer.eos_token


def test_every_shipped_template_is_checked_here():
    assert SHIPPED == sorted(set(END_OF_TURN) - {"base"})


@pytest.mark.parametrize("opening", sorted(OPENINGS))
@pytest.mark.parametrize("template", ["base"] + SHIPPED)
def test_only_assistant_content_and_end_of_turn_are_labelled(template, opening):
    tokenizer = use_template(load_bundled_chat_tokenizer(), template)
    messages = OPENINGS[opening]
    out = tokenize_for_training(messages, tokenizer, 512)
    eot = end_of_turn(template, tokenizer)
    assert labelled_runs(out, tokenizer) == [m["content"] + eot for m in messages if m["role"] == "assistant"]


@pytest.mark.parametrize("template", ["base"] + SHIPPED)
def test_an_opening_greeting_learns_nothing_the_template_gives(template):
    """SmolLM2's own template adds a default system prompt before a conversation that does not start with
    one: on a greeting-first conversation it used to be learned, with the role header."""
    tokenizer = use_template(load_bundled_chat_tokenizer(), template)
    text, spans = assistant_spans(OPENINGS["assistant"], tokenizer)
    eot = end_of_turn(template, tokenizer)
    assert [text[s:e] for s, e in spans] == [GREETING["content"] + eot, "Plenty." + eot]
    assert text.index(GREETING["content"]) == spans[0][0] > 0  # what comes before it is given


@pytest.mark.parametrize("template", ["base"] + SHIPPED)
@pytest.mark.parametrize("opening", ["assistant", "system then assistant"])
def test_a_greeting_is_context_when_it_is_not_learned(template, opening):
    """sft.learn_greeting false: the bot's greeting (before the first user turn) gets no label, the replies do."""
    tokenizer = use_template(load_bundled_chat_tokenizer(), template)
    messages = OPENINGS[opening]
    eot = end_of_turn(template, tokenizer)
    replies = [m["content"] + eot for m in messages[2:] if m["role"] == "assistant"]
    out = tokenize_for_training(messages, tokenizer, 512, learn_greeting=False)
    assert labelled_runs(out, tokenizer) == replies
    assert labelled_runs(tokenize_for_training(messages, tokenizer, 512), tokenizer) == [GREETING["content"] + eot,
                                                                                         *replies]
    assert tokenize_for_training(messages[:2], tokenizer, 512, learn_greeting=False) is None  # nothing left to learn


@pytest.mark.parametrize("opening", sorted(OPENINGS))
@pytest.mark.parametrize("template", ["base"] + SHIPPED)
def test_generation_sees_what_training_saw(template, opening):
    tokenizer = use_template(load_bundled_chat_tokenizer(), template)
    messages = OPENINGS[opening]
    text, spans = assistant_spans(messages, tokenizer)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i, (start, _) in zip(turns, spans):
        if i:
            assert text[:start] == render_prompt(messages[:i], tokenizer)


@pytest.mark.parametrize("template", ["base"] + SHIPPED)
def test_a_fitted_prompt_renders_and_keeps_the_system_message(template):
    tokenizer = use_template(load_bundled_chat_tokenizer(), template)
    long = [SYSTEM, GREETING] + [{"role": r, "content": f"turn {i} " * 10}
                                 for i, r in zip(range(7), ["user", "assistant"] * 4)]
    fitted = fit_prompt(long, tokenizer, 90)
    assert fitted[0] == SYSTEM and fitted[-1] == long[-1] and len(fitted) < len(long)
    prompt = render(fitted, tokenizer, generation_prompt=True)
    assert SYSTEM["content"] in prompt
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 90


def test_templates_whose_beginnings_change_are_refused():
    tokenizer = load_bundled_chat_tokenizer()
    # Like Nemo's Hub template: the system message only in a generation prompt's last user turn, so
    # training would never see the persona that generation is given.
    tokenizer.chat_template = (
        "{%- for m in messages if m['role'] != 'system' -%}{%- if m['role'] == 'user' and loop.last -%}"
        "{{ messages[0]['content'] + ' ' }}{%- endif -%}{{ m['role'] + ': ' + m['content'] + eos_token }}"
        "{%- endfor -%}")
    with pytest.raises(ValueError, match="generation would not see what training saw"):
        tokenize_for_training([SYSTEM, *SYSTEM_FREE_TWO_TURNS], tokenizer, 512)
    # Turns numbered from the end: an earlier reply is rendered differently once the conversation goes on.
    tokenizer.chat_template = "{%- for m in messages -%}{{ loop.revindex ~ ': ' + m['content'] + eos_token }}" \
                              "{%- endfor -%}"
    with pytest.raises(ValueError, match="prefix of the whole"):
        tokenize_for_training(SYSTEM_FREE_TWO_TURNS, tokenizer, 512)


# --- Mistral-Nemo against mistral-common --------------------------------------------------------------------

NEMO_FILE = "tekken_240718.json"  # Mistral-Nemo-Instruct-2407's tokenizer, shipped in mistral-common's package

SYSTEM_FREE = {
    "single turn, for generation": [{"role": "user", "content": "Hello there!"}],
    "single turn, for training": [{"role": "user", "content": "Hello there!"},
                                  {"role": "assistant", "content": "Hi, how can I help?"}],
    "multi turn, for training": [
        {"role": "user", "content": "Two lines\nhere.  "}, {"role": "assistant", "content": " Sure thing.  "},
        {"role": "user", "content": "Héllo wörld 123 — ok?"}, {"role": "assistant", "content": "Ça va! 😀"},
        {"role": "user", "content": "[brackets] and *actions*"}, {"role": "assistant", "content": "*nods*\n\nYes."}],
    "multi turn, for generation": [
        {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"}],
    "greeting first, for training": [
        {"role": "assistant", "content": "*waves* Welcome!"}, {"role": "user", "content": "hey"},
        {"role": "assistant", "content": "What brings you here?"}],
    "greeting first, for generation": [
        {"role": "assistant", "content": "*waves* Welcome!"}, {"role": "user", "content": "hey"}],
}


@pytest.fixture(scope="module")
def nemo(tmp_path_factory):
    """A transformers tokenizer built from Nemo's Tekken file by transformers' own converter, with our
    template, and mistral-common's reference tokenizers for training (finetuning) and generation (test)."""
    from pathlib import Path

    import mistral_common
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    source = Path(mistral_common.__file__).parent / "data" / NEMO_FILE
    raw = json.loads(source.read_text(encoding="utf-8"))
    # This early Tekken file lists no special tokens: mistral-common supplies them, and transformers' converter
    # wants them written in the file.
    assert "special_tokens" not in raw
    raw["special_tokens"] = [{"rank": t["rank"], "token_str": str(t["token_str"].value), "is_control": True}
                             for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    path = tmp_path_factory.mktemp("nemo") / "tekken.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    tokenizer = use_template(convert_tekken_tokenizer(str(path), chat_template=""), "mistral-nemo")
    return {"hf": tokenizer,
            "train": MistralTokenizer.from_file(str(source), mode=ValidationMode.finetuning),
            "generate": MistralTokenizer.from_file(str(source), mode=ValidationMode.test)}


def ours(messages, tokenizer):
    text = render(messages, tokenizer, generation_prompt=messages[-1]["role"] != "assistant")
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference(messages, nemo):
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    reference = nemo["train" if messages[-1]["role"] == "assistant" else "generate"]
    return reference.encode_chat_completion(ChatCompletionRequest(messages=messages)).tokens


@pytest.mark.parametrize("case", sorted(SYSTEM_FREE))
def test_nemo_template_gives_mistral_commons_tokens(nemo, case):
    assert ours(SYSTEM_FREE[case], nemo["hf"]) == reference(SYSTEM_FREE[case], nemo)


def test_nemo_markers_are_control_tokens_without_spaces(nemo):
    ids = ours(SYSTEM_FREE["single turn, for training"], nemo["hf"])
    tekken = nemo["train"].instruct_tokenizer.tokenizer
    bos, eos = tekken.bos_id, tekken.eos_id
    begin, end = (tekken.get_special_token(t) for t in ("[INST]", "[/INST]"))
    assert ids[:2] == [bos, begin] and ids[-1] == eos
    assert ids[2:ids.index(end)] == tekken.encode("Hello there!", bos=False, eos=False)


def test_nemo_system_message_goes_to_the_first_instruction(nemo):
    """Where it departs from mistral-common (which puts it into the last user turn): one user turn, no
    difference; several, the system text joins the first one, by the same blank line."""
    one = [SYSTEM, *SYSTEM_FREE["single turn, for training"]]
    assert ours(one, nemo["hf"]) == reference(one, nemo)
    many = SYSTEM_FREE["multi turn, for training"]
    moved = [{**many[0], "content": SYSTEM["content"] + "\n\n" + many[0]["content"]}, *many[1:]]
    assert ours([SYSTEM, *many], nemo["hf"]) == reference(moved, nemo) != reference([SYSTEM, *many], nemo)
    # Before an opening greeting it gets the [INST] block mistral-common leaves empty.
    greeting = SYSTEM_FREE["greeting first, for training"]
    text = render([SYSTEM, *greeting], nemo["hf"])
    assert text.startswith(f"<s>[INST]{SYSTEM['content']}[/INST]{greeting[0]['content']}</s>[INST]hey[/INST]")


@pytest.mark.parametrize("case", [c for c in sorted(SYSTEM_FREE) if "training" in c])
def test_nemo_labels_are_mistral_commons_assistant_tokens(nemo, case):
    messages = SYSTEM_FREE[case]
    out = tokenize_for_training(messages, nemo["hf"], 4096)
    assert out["input_ids"] == reference(messages, nemo)
    tekken = nemo["train"].instruct_tokenizer.tokenizer
    runs, run = [], []
    for label in out["labels"] + [IGNORE]:
        if label != IGNORE:
            run.append(label)
        elif run:
            runs, run = runs + [run], []
    assert runs == [tekken.encode(m["content"].rstrip(" "), bos=False, eos=False) + [tekken.eos_id]
                    for m in messages if m["role"] == "assistant"]

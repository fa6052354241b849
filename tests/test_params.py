"""params.yaml against its schemas: every section's bad values stop a stage with one line naming them."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ladder.params import Params, ParamsError, checked, load_params, read_yaml, validate
from ladder.tools.recipes import assign, merge

REPO = Path(__file__).resolve().parents[1]
DEFAULT = read_yaml(REPO / "params.yaml")

# (setting as `dvc exp run -S` writes it, what the one line must say): at least one per section
BAD = [
    ("fetch.sources.chai.format=chai_feedbacks", "fetch.sources.chai.format = 'chai_feedbacks': Input should be "
                                                 "'chai_feedback', 'chai_prize_flat'"),
    ("fetch.sources.chai.path=null", "fetch.sources.chai.path = None: Input should be a valid string"),
    ("fetch.hub_sources={chai: {format: chai_feedback, hub: a/b, revision: null}}",
     "fetch: source 'chai' is both in sources (a local file) and in hub_sources"),
    ("clean.mix.chai=true", "clean.mix.chai = True: expected a number, not a boolean"),
    ("dpo.beta='0.1'", "dpo.beta = '0.1': expected a number, not a number in quotes (text): write it without quotes"),
    ("dpo.beta=fast", "dpo.beta = 'fast': expected a number, not text"),
    ("sft.max_length=true", "sft.max_length = True: Input should be a valid integer"),
    ("fetch.sources={internal: {format: x, path: a.jsonl}}", "fetch.sources.internal.format = 'x': Input should be"),
    ("clean.mix={strange: true}", "clean.mix.strange = True: expected a number, not a boolean"),
    ("fetch.sources.chai.path=7", "fetch.sources.chai.path = 7: Input should be a valid string"),
    ("fetch.seed=zero", "fetch.seed = 'zero': Input should be a valid integer"),
    ("clean.eval_fraction=1.5", "clean.eval_fraction = 1.5: Input should be less than 1"),
    ("clean.mix.chai=1.5", "clean.mix: a float is a share of the rows (at most 1.0), an int a row count: {'chai': 1.5}"),
    ("clean.dedup=maybe", "clean.dedup = 'maybe': Input should be a valid boolean"),
    ("reward.objective=ranking", "reward.objective = 'ranking': Input should be 'regression' or 'classification'"),
    ("reward.filter={keep_top: 0.9, min_score: 0.1}", "reward.filter: exactly one of keep_top (a share) or min_score"),
    ("reward.self_pairs.samples=1", "reward.self_pairs.samples = 1: Input should be greater than or equal to 2"),
    ("reward.cpu_bf16=always", "reward.cpu_bf16 = 'always': Input should be 'auto', 'on' or 'off'"),
    ("sft.chat_template=llama3", "sft.chat_template = 'llama3': base (the model's own) or one of ladder/training/templates"),
    ("sft.lora.r=0", "sft.lora.r = 0: Input should be greater than 0"),
    ("sft.max_lenght=256", "sft.max_lenght = 256: unknown key"),
    ("dpo.method=kto2", "dpo.method = 'kto2': Input should be"),
    ("dpo.loss_type=sigmoidd", "dpo.loss_type = 'sigmoidd': Input should be 'sigmoid', 'hinge'"),
    ("dpo.max_prompt_length=512", "dpo: max_prompt_length (512) must be below max_length (256)"),
    ("dpo.launcher=torchrun", "dpo.launcher = 'torchrun': Input should be 'python' or 'accelerate'"),
    ("dpo.kto.loss_type=sigmoid", "dpo.kto.loss_type = 'sigmoid': Input should be 'kto' or 'apo_zero_unpaired'"),
    ("merge.dtype=float8", "merge.dtype = 'float8': Input should be 'float16', 'bfloat16' or 'float32'"),
    ("merge.parity_dtype=float16", "merge.parity_dtype = 'float16': Input should be 'float64' or 'float32'"),
    ("quantize.formats=[int8, int4]", "quantize.formats.1 = 'int4': Input should be 'int8', 'nf4' or 'gguf'"),
    ("quantize.gguf_types=[q4_k]", "quantize.gguf_types.0 = 'q4_k': Input should be"),
    ("classifier.head=mean", "classifier.head = 'mean': Input should be 'cls' or 'replies'"),
    ("classifier.preference_share=2", "classifier.preference_share = 2: Input should be less than or equal to 1"),
    ("classifier.quantization=int8", "classifier: quantization int8 needs lora"),
    ("inference.best_of=0", "inference.best_of = 0: Input should be greater than 0"),
    ("inference.models=[base, gpt4]", "inference.models = ['base', 'gpt4']: unknown ['gpt4']; known: base, sft"),
    ("inference.controls=[reference, reference]", "inference.controls = ['reference', 'reference']: each at most once"),
    ("inference.sampling.top_p=0", "inference.sampling.top_p = 0: Input should be greater than 0"),
    ("metrics.bootstrap=-1", "metrics.bootstrap = -1: Input should be greater than or equal to 0"),
    ("metrics.validity.max_flip_rate=1.2", "metrics.validity.max_flip_rate = 1.2: Input should be less than or equal to 1"),
    ("review.tolerance.relative=-0.1", "review.tolerance.relative = -0.1: Input should be greater than or equal to 0"),
]


def with_setting(setting: str) -> dict:
    return assign(copy.deepcopy(DEFAULT), setting)


def test_every_section_has_a_bad_value_case():
    assert {s.split(".")[0] for s, _ in BAD} == set(Params.model_fields) == set(DEFAULT)


@pytest.mark.parametrize("setting, says", BAD, ids=[s for s, _ in BAD])
def test_a_bad_value_is_one_line_naming_the_key_and_what_is_allowed(setting, says):
    with pytest.raises(ParamsError) as error:
        validate(with_setting(setting))
    message = str(error.value)
    assert "\n" not in message and message.startswith("params.yaml: ")
    assert says in message


def test_the_source_formats_params_allow_are_the_parsers_there_are():
    from ladder.data.formats import FORMATS
    from ladder.params import SOURCE_FORMATS

    assert list(FORMATS) == list(SOURCE_FORMATS)


def test_a_missing_key_is_an_error_not_a_default():
    params = copy.deepcopy(DEFAULT)
    del params["sft"]["learn_greeting"]
    with pytest.raises(ParamsError, match=r"^params.yaml: sft.learn_greeting: missing"):
        validate(params)


def test_the_default_and_every_recipe_pass_and_come_back_as_written():
    assert load_params(REPO / "params.yaml") == DEFAULT  # nothing added, no number retyped (16 stays an int)
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        merged = merge(copy.deepcopy(DEFAULT), read_yaml(recipe))
        assert validate(merged, recipe.name) == merged, recipe.name


def test_an_int_in_mix_stays_a_row_count_and_on_off_booleans_are_read_as_choices():
    params = validate(with_setting("clean.mix.chai=50"))
    assert params["clean"]["mix"]["chai"] == 50 and isinstance(params["clean"]["mix"]["chai"], int)
    assert validate(with_setting("sft.cpu_bf16=false"))["sft"]["cpu_bf16"] == "off"  # a YAML 1.1 writer's `off`


def test_one_section_checked_alone():
    assert checked("review", DEFAULT) == DEFAULT["review"]
    with pytest.raises(ParamsError, match=r"^x.yaml: review: missing"):
        checked("review", {}, "x.yaml")


def run_sft(folder: Path, setting: str) -> subprocess.CompletedProcess:
    """The sft stage, run in `folder` (no inputs there) on the default params with `setting`."""
    (folder / "params.yaml").write_text(json.dumps(with_setting(setting)))
    return subprocess.run([sys.executable, "-m", "stages.sft"], cwd=folder, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})


def test_a_stage_stops_on_a_bad_param_with_one_line_before_loading_anything(tmp_path):
    done = run_sft(tmp_path, "sft.lora.dropout=1.5")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: params.yaml: sft.lora.dropout = 1.5: Input should be less than or equal to 1"]
    assert not (tmp_path / "models").exists()


def test_a_missing_input_file_is_one_line_too(tmp_path, write_params):
    write_params(tmp_path / "params.yaml", {})
    done = subprocess.run([sys.executable, "-m", "stages.metrics"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: data/generations/prompts.parquet is missing: rerun the inference stage"]


def test_a_missing_column_is_one_line_before_any_model_loads(tmp_path, write_params):
    import polars as pl

    write_params(tmp_path / "params.yaml", {})
    (tmp_path / "data/clean").mkdir(parents=True)
    pl.DataFrame({"id": ["c1"], "source": ["chai"]}).write_parquet(tmp_path / "data/clean/conversations.parquet")
    pl.DataFrame({"id": ["p1"]}).write_parquet(tmp_path / "data/clean/preferences.parquet")
    done = subprocess.run([sys.executable, "-m", "stages.score"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 1  # models/reward is not there either: the column check came first
    assert done.stderr.strip().splitlines()[-1].startswith(
        "Error: data/clean/conversations.parquet: columns 'row', 'messages', ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_keeps_the_docstring_layout():
    done = subprocess.run([sys.executable, "-m", "stages.dpo", "--help"], cwd=REPO, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    reads = next(i for i, line in enumerate(lines) if line.strip().startswith("Reads "))
    assert lines[reads + 1].strip().startswith("max_length, eval_pairs")  # the continuation as written, not rewrapped
    assert "    python -m stages.dpo" in done.stdout


@pytest.mark.parametrize("setting, says", [
    ("sft.lora.dropout=1.5", "Error: params.yaml: sft.lora.dropout = 1.5: Input should be less than or equal to 1"),
    ("sft.launcher=accelerate", None),  # with a config that does not exist: named by accelerate's loader
])
def test_dvc_s_command_for_a_training_stage_stops_with_one_line_too(tmp_path, setting, says):
    params = with_setting(setting)
    params["sft"]["accelerate_config"] = str(tmp_path / "nowhere.yaml")
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    done = subprocess.run([sys.executable, "-m", "ladder.launch", "sft"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.strip() == says if says else "nowhere.yaml" in done.stderr


def test_a_trainer_value_stops_the_stage_first_with_one_line_naming_the_params_file_given(tmp_path):
    # every key, type and range is checked against the config class (tests/test_stage_errors.py): here, that a
    # stage does it before anything else and names the file --params gave
    (tmp_path / "variant.yaml").write_text(json.dumps(with_setting("sft.trainer.max_steps=-5")))
    done = subprocess.run([sys.executable, "-m", "stages.sft", "--params", "variant.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: variant.yaml: sft.trainer.max_steps = -5: must be -1 (train num_train_epochs) or greater than 0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["variant.yaml"]  # nothing loaded, nothing written


def test_the_dpo_loss_types_are_trls():
    import inspect
    import re

    from trl import DPOTrainer

    from ladder.params import DPO_LOSS_TYPES

    # each loss is a branch of DPOTrainer's loss computation: `elif loss_type == "ipo":`
    computed = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(DPOTrainer)))
    assert "sigmoid" in computed, "TRL's DPOTrainer no longer picks its loss where this test reads it"
    assert set(DPO_LOSS_TYPES) == computed


@pytest.mark.parametrize("setting, says", [
    ("sft.trainer.max_steps=-5", "Error: params.yaml: sft.trainer.max_steps = -5: must be -1 (train num_train_epochs) "
                                 "or greater than 0"),
    ("sft.seed=0", "Error: missing file: data/scored/sft.parquet"),
])
def test_under_accelerate_the_stage_checks_once_before_several_processes_start(tmp_path, setting, says):
    params = with_setting(setting)
    params["sft"].update(launcher="accelerate", accelerate_config=str(REPO / "configs/accelerate/cpu.yaml"))
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    done = subprocess.run([sys.executable, "-m", "ladder.launch", "sft"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 1 and done.stderr.strip() == says, done.stderr
    assert "torch.distributed.run" not in done.stdout  # no process was started

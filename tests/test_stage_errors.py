"""Bad input, run as a user runs the stages (`python -m stages.<name>` in a project folder): every expected failure is
one line naming the file, key or table and what is wrong, before the stage deletes or writes anything; a stage that
fails part way leaves its previous outputs as they were."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ladder.params import read_yaml
from ladder.tools.recipes import assign, merge

REPO = Path(__file__).resolve().parents[1]
TABLES = ("conversations", "preferences", "feedback", "arena", "rejects")


def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=folder, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


def one_line(done: subprocess.CompletedProcess) -> str:
    """The error line of a stage that stopped as expected: exit status 1, nothing else on stderr but log lines."""
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith(("INFO ", "WARNING "))]
    assert len(errors) == 1, done.stderr
    return errors[0]


def params_with(folder: Path, *settings: str, name: str = "params.yaml") -> Path:
    """The default params with `settings` (as `dvc exp run -S` takes them) applied, written to `folder`/`name`."""
    data = read_yaml(REPO / "params.yaml")
    for setting in settings:
        assign(data, setting)
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory) -> Path:
    """A project folder with two sources (chai feedback and a role-play set) fetched and cleaned."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "data/samples").mkdir(parents=True)
    for file in ("chai_feedback.jsonl", "roleplay_anime.jsonl"):
        shutil.copy(REPO / "data/samples" / file, folder / "data/samples" / file)
    params_with(folder, "fetch.sources={chai: {format: chai_feedback, path: data/samples/chai_feedback.jsonl}, "
                        "anime: {format: messages, path: data/samples/roleplay_anime.jsonl}}")
    for source in ("chai", "anime"):
        assert run(folder, "stages.fetch", "--source", source).returncode == 0
    assert run(folder, "stages.clean").returncode == 0
    return folder


@pytest.mark.parametrize("text, says", [
    ("fetch:\n  seed: [0, 1\nclean: {}\n", "bad.yaml:3:6: expected ',' or ']', but got ':'"),
    ("fetch:\n\tseed: 0\n", "bad.yaml:2:1: found character '\\t' that cannot start any token (YAML indents with "
                            "spaces, not tabs)"),
    ("fetch: {}\nclean: {}\nfetch: {}\n", 'bad.yaml:3:1: found duplicate key "fetch"'),
    ("fetch: {}\n# caf\xe9\n", "bad.yaml:2: not UTF-8 text (byte 0xe9)"),
], ids=["syntax", "tab", "duplicate", "latin-1"])
def test_a_params_file_that_is_not_yaml_is_one_line_with_its_line(tmp_path, text, says):
    (tmp_path / "bad.yaml").write_bytes(text.encode("latin-1"))
    assert one_line(run(tmp_path, "stages.clean", "--params", "bad.yaml")).startswith(f"Error: {says}")


@pytest.mark.parametrize("setting, config, says", [
    ("sft.trainer.max_steps=-5", "SFTConfig", "sft.trainer.max_steps = -5: must be -1 (train num_train_epochs) or "
                                              "greater than 0"),
    ("sft.trainer.learning_rate=fast", "SFTConfig", "sft.trainer.learning_rate = 'fast': SFTConfig.learning_rate "
                                                    "takes a number, not text"),
    ("sft.trainer.learning_rate='3e-05'", "SFTConfig", "sft.trainer.learning_rate = '3e-05': SFTConfig.learning_rate"
                                                       " takes a number, not a number in quotes"),
    ("reward.trainer.num_train_epochs=two", "TrainingArguments", "reward.trainer.num_train_epochs = 'two': "
                                                                 "TrainingArguments.num_train_epochs takes a number"),
    ("classifier.trainer.lr_scheduler_type=cosine2", "TrainingArguments", "classifier.trainer.lr_scheduler_type = "
     "'cosine2': TrainingArguments.lr_scheduler_type takes one of linear, cosine,"),
    ("dpo.trainer.per_device_train_batch_size=0", "DPOConfig", "dpo.trainer.per_device_train_batch_size = 0: must be "
                                                               "greater than 0"),
    ("dpo.trainer.bf16=yes", "DPOConfig", "dpo.trainer.bf16 = 'yes': DPOConfig.bf16 takes a boolean or null, not text"),
    ("reward.trainer.seed=true", "TrainingArguments", "reward.trainer.seed = True: TrainingArguments.seed takes an "
                                                      "integer, not a boolean"),
    ("reward.trainer.learning_rat=1e-4", "TrainingArguments", "reward.trainer.learning_rat: unknown key"),
])
def test_a_trainer_value_of_the_wrong_type_or_range_is_one_line(setting, config, says):
    import transformers
    import trl

    from ladder.errors import InputError
    from ladder.training.trainer import check_trainer

    section = setting.split(".")[0]
    params = assign(read_yaml(REPO / "params.yaml"), setting)
    cls = getattr(trl, config, None) or getattr(transformers, config)
    with pytest.raises(InputError) as error:
        check_trainer(params[section]["trainer"], cls, section, "variant.yaml")
    assert str(error.value).startswith(f"variant.yaml: {says}"), str(error.value)


def test_the_default_and_every_recipes_trainer_sections_pass_the_check():
    from transformers import TrainingArguments
    from trl import SFTConfig

    from ladder.training.preference import config_class
    from ladder.training.trainer import check_trainer

    for recipe in [None, *sorted((REPO / "recipes").glob("*.yaml"))]:
        params = read_yaml(REPO / "params.yaml")
        if recipe:
            merge(params, read_yaml(recipe))
        for section, cls in (("reward", TrainingArguments), ("classifier", TrainingArguments),
                             ("sft", SFTConfig), ("dpo", config_class(params["dpo"]["method"]))):
            check_trainer(params[section]["trainer"], cls, section, str(recipe))


def test_a_filter_that_empties_a_table_is_said_by_clean_and_stops_the_next_stage_before_it_touches_anything(
        cleaned, tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(cleaned, folder)
    data = read_yaml(cleaned / "params.yaml")
    data["clean"]["min_turns"] = 4  # every sample role-play conversation has three messages
    (folder / "params.yaml").write_text(json.dumps(data))
    done = run(folder, "stages.clean")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((folder / "metrics/clean.json").read_text())
    assert metrics["records"]["feedback"] == {"train": 0, "eval": 0}
    assert list(metrics["removed_by"]["feedback"]) == ["clean.min_turns"]
    warned = [w for w in metrics["warnings"] if "feedback record of source 'chai'" in w]
    assert warned and "clean.min_turns = 4" in warned[0] and warned[0] in done.stderr
    # the tracked curves and the last model of the reward stage, which must survive the refusal
    (folder / "dvclive/reward").mkdir(parents=True)
    (folder / "dvclive/reward/metrics.json").write_text("{}")
    (folder / "models/reward").mkdir(parents=True)
    before = digests(folder)
    line = one_line(run(folder, "stages.reward"))
    assert line.startswith("Error: data/clean/feedback.parquet has 0 train, 0 eval rows; reward needs at least 1 "
                           "train and 1 eval; removed upstream: clean.min_turns = 4 ("), line
    assert digests(folder) == before and not (folder / "checkpoints").exists()


@pytest.mark.parametrize("stage, table, damage", [("score", "data/clean/conversations.parquet", "truncated"),
                                                  ("clean", "data/raw/anime.parquet", "empty")])
def test_a_corrupt_input_table_is_one_line_naming_it(cleaned, tmp_path, stage, table, damage):
    folder = tmp_path / "p"
    shutil.copytree(cleaned, folder)
    path = folder / table
    path.parent.mkdir(parents=True, exist_ok=True)
    good = (cleaned / "data/clean/conversations.parquet").read_bytes()
    path.write_bytes(b"" if damage == "empty" else good[: len(good) // 2])
    line = one_line(run(folder, f"stages.{stage}"))
    assert line.startswith(f"Error: {table}: not a readable parquet file ("), line


@pytest.fixture
def tmpfs():
    """`tmpfs(folder, size)` mounts a tmpfs of `size` on `folder`, keeping what the folder held (skips where mounting
    is not allowed: it needs root with CAP_SYS_ADMIN); every mount is undone after the test."""
    mounted = []

    def mount(folder: Path, size: str) -> Path:
        held = folder.with_name(folder.name + ".held")
        shutil.copytree(folder, held)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode:
            pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN")
        mounted.append(folder)
        shutil.copytree(held, folder, dirs_exist_ok=True)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def outputs_of_clean(folder: Path) -> dict[str, str]:
    return {k: v for k, v in digests(folder).items() if k.startswith(("data/clean/", "metrics/"))
            and "filler" not in k}


def test_a_full_disk_stops_clean_with_one_line_and_every_old_output_stays(cleaned, tmp_path, tmpfs):
    folder = tmp_path / "p"
    shutil.copytree(cleaned, folder)
    clean_dir = tmpfs(folder / "data/clean", "2m")
    free = shutil.disk_usage(clean_dir).free
    (clean_dir / "filler").write_bytes(b"\0" * (free - 16 * 1024))  # room for the small tables, not the large one
    before = outputs_of_clean(folder)
    params_with(folder, "clean.eval_fraction=0.3", "fetch.sources={chai: {format: chai_feedback, path: "
                "data/samples/chai_feedback.jsonl}, anime: {format: messages, path: data/samples/roleplay_anime.jsonl}}")
    line = one_line(run(folder, "stages.clean"))
    assert line.startswith("Error: cannot write data/clean/") and line.endswith("No space left on device"), line
    assert outputs_of_clean(folder) == before  # not one table replaced, metrics/clean.json not either
    (clean_dir / "filler").unlink()
    assert not [p for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    assert run(folder, "stages.clean").returncode == 0 and outputs_of_clean(folder) != before


def test_a_read_only_folder_stops_clean_with_one_line_and_every_old_output_stays(cleaned, tmp_path, tmpfs):
    folder = tmp_path / "p"
    shutil.copytree(cleaned, folder)
    metrics = tmpfs(folder / "metrics", "1m")
    assert subprocess.run(["mount", "-o", "remount,ro", str(metrics)]).returncode == 0
    before = outputs_of_clean(folder)
    params_with(folder, "clean.eval_fraction=0.3", "fetch.sources={chai: {format: chai_feedback, path: "
                "data/samples/chai_feedback.jsonl}, anime: {format: messages, path: data/samples/roleplay_anime.jsonl}}")
    line = one_line(run(folder, "stages.clean"))
    assert line == "Error: cannot write metrics/clean.json: Read-only file system", line
    assert outputs_of_clean(folder) == before  # the tables written before it were not moved in
    assert not [p for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def test_bad_lines_in_a_source_file_are_rejected_rows_through_fetch_and_clean(tmp_path):
    good = [json.dumps({"messages": [{"role": "user", "content": f"one{c}two {i}"},
                                     {"role": "assistant", "content": f"three{c}four {i}"}]},
                       ensure_ascii=False).encode() for i, c in enumerate(["\u2028", "\x85", "\u2029", "\ufeff"])]
    bad = [b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', b"[" * 5000 + b"]" * 5000, b'{"messages": [']
    (tmp_path / "data").mkdir()
    (tmp_path / "data/rp.jsonl").write_bytes(b"\r\n".join([good[0], bad[0], good[1], bad[1], good[2], bad[2],
                                                            good[3]]) + b"\r\n")
    params_with(tmp_path, "fetch.sources={rp: {format: messages, path: data/rp.jsonl}}", "clean.min_turns=2",
                "clean.eval_fraction=0.01")
    for args in (("stages.fetch", "--source", "rp"), ("stages.clean",)):
        done = run(tmp_path, *args)
        assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "metrics/clean.json").read_text())["sources"]["rp"]
    assert (metrics["rows"], metrics["used"], metrics["rejected"]) == (7, 4, 3)
    assert sorted(metrics["reject_reasons"]) == ["line is not valid UTF-8 (invalid continuation byte at byte …)",
                                                 "nested deeper than … levels", "not valid JSON (Expecting value at "
                                                                                "column …)"]

"""docs/params.md is the reference ladder.tools.params_doc generates from the schemas of ladder/params.py: the committed
file is current, it names every key params.yaml sets, and every schema field says what it does."""
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from ladder.params import Params, read_yaml
from ladder.tools.params_doc import NAME, OUTPUT, documented_keys, models_in, named_entries, render

REPO = Path(__file__).resolve().parents[1]
DEFAULT = read_yaml(REPO / "params.yaml")


def leaf_keys(data: dict, prefix: str = "") -> list[str]:
    """The dotted path of every value params.yaml sets that is not itself a non-empty mapping."""
    keys = []
    for name, value in data.items():
        key = f"{prefix}{name}"
        keys += leaf_keys(value, f"{key}.") if isinstance(value, dict) and value else [key]
    return keys


def covers(documented: str, key: str) -> bool:
    """Whether a documented key (`fetch.sources.<name>.format`) is the row of `key` (`fetch.sources.chai.format`)."""
    pattern, parts = documented.split("."), key.split(".")
    return len(pattern) == len(parts) and all(p in (q, NAME) for p, q in zip(pattern, parts))


def schemas(model: type[BaseModel] = Params) -> set[type[BaseModel]]:
    """Every schema class reachable from `model`: nested sections and the entries of named mappings."""
    found = {model}
    for field in model.model_fields.values():
        entries = named_entries(field.annotation)
        for nested in models_in(field.annotation) + (models_in(entries) if entries is not None else []):
            found |= schemas(nested)
    return found


def test_the_committed_reference_is_the_generated_one():
    assert OUTPUT.read_text(encoding="utf-8") == render(), \
        "docs/params.md is stale: run `python -m ladder.tools.params_doc` and commit the result"


def test_every_key_params_yaml_sets_is_documented():
    documented = documented_keys(render())
    assert len(documented) > 100  # a reader that silently found no rows would pass the loop below
    missing = [key for key in leaf_keys(DEFAULT) if not any(covers(d, key) for d in documented)]
    assert not missing, f"keys of params.yaml with no row in the reference: {missing}"


def test_every_schema_field_says_what_it_does():
    found = schemas()
    assert {"Fetch", "LocalSource", "HubSource", "JudgeLora", "Sampling", "Tolerance"} <= {m.__name__ for m in found}
    undescribed = [f"{model.__name__}.{name}" for model in found for name, field in model.model_fields.items()
                   if not (field.description or "").strip()]
    assert not undescribed, f"schema fields without Field(description=...): {sorted(undescribed)}"


def test_a_changed_description_changes_the_reference(monkeypatch):
    from ladder.params import Sft

    before = render()
    monkeypatch.setattr(Sft.model_fields["learn_greeting"], "description", "A description that is new.")
    after = render()
    assert after != before
    assert "| `sft.learn_greeting` | boolean | `false` (params.yaml) | — | A description that is new. |" in after


def test_a_schema_default_and_a_params_yaml_default_are_told_apart():
    text = render()
    assert "| `sft.lora.bias` | `none` or `all` or `lora_only` or null | `null` (schema); params.yaml sets `none` |" \
        in text
    assert "| `dpo.beta` | number | `0.1` (params.yaml) | > 0 |" in text
    assert ("| `sft.trainer.max_steps` | integer | `32` (params.yaml) | -1 (train num_train_epochs) or greater than 0 |"
            in text)


def test_check_says_stale_in_one_line_and_help_answers(tmp_path):
    stale = tmp_path / "params.md"
    stale.write_text("edited by hand\n")
    done = subprocess.run([sys.executable, "-m", "ladder.tools.params_doc", "--check", "--output", str(stale)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"{stale} is stale: run `python -m ladder.tools.params_doc`"]
    written = subprocess.run([sys.executable, "-m", "ladder.tools.params_doc", "--output", str(stale)], cwd=REPO,
                             capture_output=True, text=True)
    assert written.returncode == 0 and stale.read_text(encoding="utf-8") == render()
    assert subprocess.run([sys.executable, "-m", "ladder.tools.params_doc", "--check", "--output", str(stale)],
                          cwd=REPO).returncode == 0
    helped = subprocess.run([sys.executable, "-m", "ladder.tools.params_doc", "--help"], cwd=REPO, capture_output=True,
                            text=True)
    assert helped.returncode == 0 and "--check" in helped.stdout

"""Configuration: typed defaults, files, dotted overrides, validation of every field at once."""

from dataclasses import fields
from pathlib import Path

import pytest

from aevb.cli import main
from aevb.config import (
    SECTIONS,
    ConfigError,
    RunConfig,
    apply_overrides,
    list_presets,
    read_config_file,
    read_preset,
    update,
    validate,
)


def test_every_field_has_a_default_and_a_one_line_description():
    cfg = RunConfig()
    for section in SECTIONS:
        for f in fields(getattr(cfg, section)):
            text = f.metadata.get("help", "")
            assert text and "\n" not in text, f"{section}.{f.name} has no one-line description"


def test_validate_reports_every_bad_field_at_once_with_key_value_and_allowed_values():
    cfg = RunConfig()
    cfg.train.optimizer = "sgd"
    cfg.model.activation = "sigmoid"
    cfg.model.likelihood = "student_t"
    cfg.train.lr = -1.0
    cfg.model.sigma = "huge"
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert "train.optimizer = 'sgd': allowed values are adam, adagrad" in msg
    assert "model.activation = 'sigmoid': allowed values are tanh, relu, elu, softplus" in msg
    assert "model.likelihood = 'student_t': allowed values are" in msg and "bernoulli" in msg
    assert "train.lr = -1.0: must be > 0" in msg
    assert "model.sigma = 'huge'" in msg and "predicted" in msg
    assert len(msg.splitlines()) == 1 + 5  # a header line and one line per problem


def test_iwae_with_a_kl_weight_is_refused():
    cfg = RunConfig()
    cfg.objective.name, cfg.objective.beta = "iwae", 0.5
    with pytest.raises(ConfigError, match="objective.beta = 0.5: the iwae bound has no KL weight"):
        validate(cfg)


def test_iwae_with_kl_warm_up_is_refused():
    cfg = RunConfig()
    cfg.objective.name, cfg.objective.warmup_steps = "iwae", 10
    with pytest.raises(ConfigError, match="objective.warmup_steps = 10: the iwae bound has no KL weight"):
        validate(cfg)


def test_non_finite_numbers_and_a_bad_adam_epsilon_are_refused_by_name():
    cfg = RunConfig()
    cfg.objective.beta = float("nan")
    cfg.model.min_sigma = float("nan")
    cfg.train.weight_decay = float("inf")
    cfg.train.adam_eps = -1.0
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    for key in ("objective.beta = nan", "model.min_sigma = nan", "train.weight_decay = inf"):
        assert f"{key}: must be a finite number" in msg, key
    assert "train.adam_eps = -1.0: must be > 0" in msg


def test_sigma_accepts_a_positive_number_or_a_mode():
    for good in ("0.1", "1", "learned_shared", "learned_per_dim", "predicted"):
        cfg = RunConfig()
        cfg.model.sigma = good
        validate(cfg)
    for bad in ("0", "-1", "learned", "inf", "nan"):
        cfg = RunConfig()
        cfg.model.sigma = bad
        with pytest.raises(ConfigError, match="model.sigma"):
            validate(cfg)


def test_set_overrides_convert_types_and_reach_any_field():
    cfg = apply_overrides(RunConfig(), ["train.lr=3e-4", "model.hidden=400,400", "train.compile=true",
                                        "objective.num_samples=5", "data.name=digits"])
    assert cfg.train.lr == 3e-4 and cfg.model.hidden == [400, 400] and cfg.train.compile is True
    assert cfg.objective.num_samples == 5 and cfg.data.name == "digits"


def test_set_with_an_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), ["train.lrr=0.1"])
    msg = str(e.value)
    assert "unknown key train.lrr" in msg
    assert "allowed: " in msg and "batch_size" in msg and ", lr," in msg


def test_set_errors_are_all_reported_together():
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), ["train.epochs=ten", "model.depth=3", "optim.lr=1"])
    msg = str(e.value)
    assert "train.epochs: expected an integer, got 'ten'" in msg
    assert "unknown key model.depth" in msg
    assert "unknown section 'optim'" in msg


def test_set_without_a_dot_or_equals_shows_the_expected_form():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides(RunConfig(), ["lr=0.1"])


def test_config_file_with_a_toml_error_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nlr = 0.1\nepochs = = 3\n")
    with pytest.raises(ConfigError) as e:
        read_config_file(path)
    assert str(path) in str(e.value) and "line 3" in str(e.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nothere.toml does not exist"):
        read_config_file(tmp_path / "nothere.toml")


def test_json_config_files_are_read_too(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"train": {"lr": 0.5}, "model": {"hidden": [7, 8]}}')
    cfg = update(RunConfig(), read_config_file(path))
    assert cfg.train.lr == 0.5 and cfg.model.hidden == [7, 8]


def test_resolved_config_round_trips_through_json(tmp_path):
    cfg = apply_overrides(RunConfig(), ["train.lr=0.02", "model.hidden=3,4", "eval.k=7"])
    cfg.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == cfg


def test_unknown_preset_is_refused_with_the_allowed_names():
    with pytest.raises(ConfigError) as e:
        read_preset("aevb-cifar")
    for name in ("aevb-mnist", "aevb-frey", "iwae-mnist", "default", "quick"):
        assert name in str(e.value)


def test_list_presets_prints_every_preset_with_a_description(capsys):
    assert main(["train", "--list-presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_presets()
    assert all(len(line.split()) > 3 for line in lines)


def test_train_help_names_the_presets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in list_presets():
        assert name in out


def test_cli_reports_a_bad_config_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nlatent_dim = 'x'\nwidth = 3\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aevb train: error: ")
    assert "model.latent_dim: expected an integer, got 'x'" in err and f"{path}: unknown key model.width" in err
    assert "Traceback" not in err


def test_docs_describe_every_field():
    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    cfg = RunConfig()
    missing = [f"{s}.{f.name}" for s in SECTIONS for f in fields(getattr(cfg, s)) if f"`{s}.{f.name}`" not in text]
    assert not missing, f"add a row for each of {missing} to docs/configuration.md ('Every field')"

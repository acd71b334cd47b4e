import json

import pytest

from classy_fast.config import ConfigError, TrainConfig, config_to_dict, load_config, save_config


def write(path, text):
    path.write_text(text)
    return str(path)


def test_defaults_are_the_embedded_run():
    cfg = load_config()
    assert cfg.data.name == "fashion_mnist_embedded" and cfg.model.name == "small_resnet"


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "c.yaml", "optimizer:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "optimizer.lrr" in str(e.value) and "c.yaml" in str(e.value) and "lr" in str(e.value)


def test_wrong_type_names_key_file_and_value(tmp_path):
    path = write(tmp_path / "c.yaml", "data:\n  batch_size: lots\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "data.batch_size" in msg and "c.yaml" in msg and "'lots'" in msg and "integer" in msg


def test_bool_is_not_an_int_and_int_is_a_float(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        load_config(write(tmp_path / "a.yaml", "epochs: true\n"))
    assert load_config(write(tmp_path / "b.yaml", "optimizer: {lr: 1}\n")).optimizer.lr == 1.0


def test_literal_choices_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="amp.*'bf16'"):
        load_config(write(tmp_path / "a.yaml", "amp: fp8\n"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_unparsable_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(write(tmp_path / "bad.yaml", "a: [1, 2\n"))


def test_overrides_apply_in_order_and_errors_name_set(tmp_path):
    path = write(tmp_path / "c.json", json.dumps({"optimizer": {"lr": 0.5}, "epochs": 3}))
    cfg = load_config(path, ["optimizer.lr=0.2", "optimizer.betas=[0.8, 0.9]", "hooks.checkpoint.keep_last=5"])
    assert cfg.optimizer.lr == 0.2 and cfg.optimizer.betas == (0.8, 0.9) and cfg.epochs == 3
    assert cfg.hooks.checkpoint.keep_last == 5
    with pytest.raises(ConfigError, match=r"--set model\.nam=x.*unknown key 'model\.nam'"):
        load_config(path, ["model.nam=x"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["epochs"])


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(None, ["optimizer.name=adamw", "meters=[{name: accuracy, topk: [1, 3]}]"])
    save_config(cfg, str(tmp_path / "config.yaml"))
    again = load_config(str(tmp_path / "config.yaml"))
    assert config_to_dict(again) == config_to_dict(cfg)
    assert isinstance(again, TrainConfig) and again.meters[0].topk == [1, 3]


def test_scientific_notation_reads_as_a_number(tmp_path):
    """YAML 1.1 reads 5e-4 (no dot) as a string: float fields take it as the number it spells."""
    path = tmp_path / "sci.yaml"
    path.write_text("optimizer:\n  lr: 5e-4\n  weight_decay: 1E-5\n")
    cfg = load_config(str(path), ["optimizer.eps=1e-6"])
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.eps) == (5e-4, 1e-5, 1e-6)
    with pytest.raises(ConfigError, match="key 'optimizer.lr': expected a number, got '5e-4x'"):
        load_config(None, ["optimizer.lr=5e-4x"])


def test_path_flags_are_literal_strings_not_yaml(tmp_path):
    """--output-dir / --resume are taken as typed: a date-like, boolean-like or numeric name stays a string,
    and errors name the flag, not a --set the user never typed."""
    from classy_fast.train import build_parser, config_from_args

    def cfg_of(*argv):
        return config_from_args(build_parser().parse_args(list(argv)))

    cfg = cfg_of("--output-dir", "2024-01-05", "--resume", "true")
    assert cfg.output_dir == "2024-01-05" and cfg.resume == "true"
    assert cfg_of("--output-dir", "12", "--resume", "null").output_dir == "12"
    assert cfg_of("--resume", "null").resume == "null"
    assert cfg_of("--output-dir", "a: b").output_dir == "a: b"
    cfg = cfg_of("--epochs", "3", "--lr", "1e-3", "--eval-only", "--set", "output_dir=x")
    assert (cfg.epochs, cfg.optimizer.lr, cfg.test_only, cfg.output_dir) == (3, 1e-3, True, "x")  # --set still wins
    with pytest.raises(ConfigError, match=r"^--set 'device\.x=1': 'device' is not a section$"):
        cfg_of("--device", "cpu", "--set", "device.x=1")


def test_resume_flag_is_a_literal_path_in_the_cli(tmp_path, capsys):
    from classy_fast import train

    rc = train.main(["--resume", "true", "--output-dir", str(tmp_path / "2024-01-05"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines()[-1] == "error: --resume: checkpoint not found: true", err

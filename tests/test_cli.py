"""The `avatar` command itself: messages instead of tracebacks."""


def test_cli_names_a_missing_optional_package(monkeypatch, capsys):
    import builtins

    from avatar import cli

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    code = cli.main(["train", "fit", "--data", "nowhere", "--out", "x.safetensors"])
    assert code == 1
    assert "needs torch" in capsys.readouterr().err


def test_unknown_backend_is_an_argparse_style_message(capsys):
    from avatar import cli

    assert cli.main(["engine", "build", "--backend", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown backend 'nope'" in err and "onnxruntime" in err


# the backends the README's table documents, in the order `avatar engine info` lists them
DOCUMENTED_BACKENDS = ["tensorrt", "onnxruntime-cuda", "onnxruntime", "torch", "torch-cuda", "torch-cudagraph"]


def test_engine_info_has_a_row_for_every_documented_backend(capsys):
    from importlib.util import find_spec

    from avatar import cli

    assert cli.main(["engine", "info"]) == 0
    rows = [line.split(None, 2) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [row[0] for row in rows] == DOCUMENTED_BACKENDS
    assert all(len(row) == 3 and row[1] in ("yes", "no") for row in rows)  # each with its device or its reason
    answer = {row[0]: row[1] for row in rows}
    # the two CPU backends are there exactly when their package is installed
    assert answer["onnxruntime"] == ("yes" if find_spec("onnxruntime") else "no")
    assert answer["torch"] == ("yes" if find_spec("torch") else "no")


def test_engine_info_shows_each_probe_with_its_reason(monkeypatch, capsys):
    import avatar.engine as engines
    from avatar import cli

    monkeypatch.setattr(cli, "probe_backends", lambda: [
        engines.BackendStatus("tensorrt", False, "no GPU here"),
        engines.BackendStatus("onnxruntime", True, "onnxruntime 9.9 on the CPU")])
    assert cli.main(["engine", "info"]) == 0
    assert capsys.readouterr().out.splitlines() == ["tensorrt     no   no GPU here",
                                                    "onnxruntime  yes  onnxruntime 9.9 on the CPU"]


def test_engine_build_readies_both_shipped_models(capsys):
    from avatar import cli
    from avatar.engine import DEFAULT_MODEL, LIVE_MODEL

    assert cli.main(["engine", "build", "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_MODEL in out and LIVE_MODEL in out and out.count("ready") == 2

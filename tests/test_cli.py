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


def test_engine_info_lists_every_backend(capsys):
    from avatar import cli
    from avatar.engine import BACKENDS

    assert cli.main(["engine", "info"]) == 0
    out = capsys.readouterr().out
    for backend in BACKENDS[1:]:
        assert backend in out


def test_engine_build_readies_both_shipped_models(capsys):
    from avatar import cli
    from avatar.engine import DEFAULT_MODEL, LIVE_MODEL

    assert cli.main(["engine", "build", "--backend", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_MODEL in out and LIVE_MODEL in out and out.count("ready") == 2

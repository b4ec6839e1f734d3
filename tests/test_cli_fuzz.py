"""The CLI fuzz (issue 19 finding 8): every option of every subcommand, enumerated from the
parser so that a new subcommand or option is covered (or fails the completeness test until
it is classified here), with non-numbers, negatives, NaN, inf, huge sizes, unknown names and
missing / unwritable / existing paths.  Each invalid invocation is exactly one line on
stderr with exit status 2, never a traceback, and never replaces the files of a previous
run.  Runs in-process through ``refdiff.cli.main`` (a few subprocesses check the real
stderr: NumPy's warnings and MemoryError outside pytest's capture)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import refdiff
from refdiff import cli
from refdiff.cli import build_parser, main

pytest.importorskip("sklearn")  # edit --digit

ROOT = Path(__file__).resolve().parents[1]
HUGE = "1000000000000"
NUMERIC_BAD = ["abc", "", "-1", "nan", "inf", "-inf", "1e12", HUGE]
# (command, option) -> the catalogue values that are VALID for it (they must still never give a
# traceback; the command may run, or fail later with one line)
ACCEPTS = {
    ("train", "--checkpoint-every"): {HUGE},
    ("sample", "--guidance-scale"): {"-1", "1e12", HUGE},
    ("edit", "--guidance-scale"): {"-1", "1e12", HUGE},
    ("txt2img", "--guidance-scale"): {"1e12", HUGE},
    ("check", "--tol-factor"): {"1e12", HUGE},
    ("edit", "--jump-length"): {HUGE},  # no jumps: a valid RePaint walk (and img2img ignores it)
    ("edit", "--shift"): {HUGE},  # img2img ignores it (outpaint refuses it: one line)
}
ANY_COMMAND_ACCEPTS = {"--seed": {HUGE}, "--threads": {HUGE}}
PATHS_IN = {"checkpoint", "image", "suite", "results"}  # dests naming files read
PATHS_OUT = {"out"}  # dests naming what is written
FREE_NAMES = {"method", "methods", "cases", "prompt"}  # dests of free strings checked by the command
FLAGS = ("_StoreTrueAction", "_HelpAction", "_VersionAction")


def _subcommands():
    p = build_parser()
    subs = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    return subs.choices


def _kind(action) -> str:
    """How the fuzz treats an argument; 'unclassified' fails the completeness test."""
    if action.__class__.__name__ in FLAGS:
        return "flag"
    if action.choices is not None:
        return "choice"
    if action.dest in PATHS_IN:
        return "path_in"
    if action.dest in PATHS_OUT:
        return "path_out"
    if action.dest in FREE_NAMES:
        return "name"
    if action.type is not None:
        return "number"
    return "unclassified"


def test_every_argument_is_classified():
    """issue 19 finding 8: each argument of each subcommand is a flag, a choice, a number, a
    path read, a path written or a free name, so the fuzz below covers it."""
    bad = [f"{c} {a.option_strings or a.dest}" for c, sp in _subcommands().items() for a in sp._actions
           if _kind(a) == "unclassified"]
    assert not bad, f"classify these arguments in tests/test_cli_fuzz.py: {bad}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny 2D checkpoint (written by `refdiff train`), a tiny conditional 8x8 U-Net
    checkpoint, a tiny text-to-image folder, a vector suite and an empty results folder."""
    from refdiff.captions import VOCAB
    from refdiff.nn import UNet, UNetConfig
    from refdiff.nn.checkpoint import save_checkpoint
    from refdiff.nn.text import Tokenizer
    from refdiff.nn.vae import KLAutoencoder, KLAutoencoderConfig
    from refdiff.txt2img import save_autoencoder
    from refdiff.vectors import write_suite

    root = tmp_path_factory.mktemp("fuzz")
    sched = refdiff.make_schedule("linear", 10)
    assert main(["train", "--n", "64", "--steps", "2", "--batch-size", "8", "--T", "10", "--hidden", "8", "--layers",
                 "1", "--out", str(root / "mlp"), "--no-progress"]) == 0
    unet = UNet(UNetConfig(base_channels=4, groups=2, time_embed_dim=8, num_classes=3))
    save_checkpoint(root / "unet" / "checkpoint.npz", model=unet, params=unet.init_params(np.random.default_rng(0)),
                    schedule=sched)
    tok = Tokenizer(VOCAB, 10)
    ae = KLAutoencoder(KLAutoencoderConfig(latent_channels=2, width=4))
    net = UNet(UNetConfig(in_channels=2, image_size=4, base_channels=8, channel_mults=(1, 2), attention=False,
                          groups=4, cross_attention=(1,), vocab_size=tok.vocab_size, context_len=10, context_dim=8,
                          heads=2))
    save_checkpoint(root / "sd" / "unet" / "checkpoint.npz", model=net, params=net.init_params(np.random.default_rng(0)),
                    schedule=sched)
    save_autoencoder(root / "sd" / "autoencoder.npz", ae, ae.init_params(np.random.default_rng(1)), scaling_factor=1.0,
                     tokenizer=tok)
    write_suite(root / "suite")
    (root / "results").mkdir()
    (root / "a_file").write_text("not a folder")
    return root


def _base(cmd, env, out):
    """A valid, cheap invocation of ``cmd`` writing to the fresh path ``out``."""
    return {
        "train": ["train", "--n", "64", "--steps", "2", "--batch-size", "8", "--T", "10", "--hidden", "8", "--layers",
                  "1", "--out", str(out), "--no-progress"],
        "sample": ["sample", str(env / "mlp"), "--n", "4", "--steps", "2", "--out", str(out) + ".npz", "--no-progress"],
        "elbo": ["elbo", "--oracle", "--n", "8", "--T", "10"],
        "orders": ["orders", "--methods", "ddim", "--steps", "2", "4", "--n-samples", "2", "--out", str(out) + ".png"],
        "vectors": ["vectors", str(out)],
        "check": ["check", str(env / "suite"), str(env / "results"), "--cases", "schedule_*"],
        "demo": ["demo", "--quick", "--no-progress", "--out", str(out)],
        "txt2img": ["txt2img", "a thick three", "--checkpoint", str(env / "sd"), "--n", "1", "--steps", "2", "--out",
                    str(out) + ".npz", "--no-progress"],
        "edit": ["edit", str(env / "unet"), "img2img", "--digit", "0", "--steps", "2", "--n", "1", "--out",
                 str(out) + ".npz"],
    }[cmd]


def _with(argv, action, values):
    """``argv`` with the argument of ``action`` set to ``values``."""
    argv = list(argv)
    if not action.option_strings:  # a positional: replace it in place
        i = _positional_index(argv, action)
        return argv[:i] + values + argv[i + 1:]
    opt = action.option_strings[-1]
    for o in action.option_strings:
        if o in argv:
            i = argv.index(o)
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            return argv[:i] + [opt, *values] + argv[j:]
    return argv + [opt, *values]


def _positional_index(argv, action):
    sp = _subcommands()[argv[0]]
    pos = [a.dest for a in sp._actions if not a.option_strings]
    return 1 + pos.index(action.dest)  # the base invocations list positionals first


@pytest.fixture
def cheap(monkeypatch):
    """The demo's and the vector suite's own work (tested in test_demo.py, test_vectors.py)
    replaced by stubs, so valid invocations of those two stay fast; their argument checks,
    output-path checks and error handling still run."""
    import refdiff.demo
    import refdiff.vectors

    def run(out, *a):  # two of the files a demo writes, results.json recording the checkpoint's hash
        import hashlib
        import json

        (out / "checkpoint.npz").write_bytes(b"stub checkpoint")
        digest = hashlib.sha256(b"stub checkpoint").hexdigest()
        (out / "results.json").write_text(json.dumps({"checkpoint_sha256": digest}))
        return refdiff.demo.DemoResult([], None)

    monkeypatch.setattr(refdiff.demo, "_run", run)

    def write_suite(out, seed=0):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text('{"cases": []}')
        return Path(out) / "manifest.json"

    monkeypatch.setattr(refdiff.vectors, "write_suite", write_suite)


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.err


def _assert_one_line(rc, err, argv, want_rc=(2,)):
    assert rc in want_rc, (" ".join(map(str, argv)), rc, err)
    assert "Traceback" not in err and "Warning:" not in err, (" ".join(map(str, argv)), err)
    if rc == 2:
        assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("refdiff"), (argv, err)


@pytest.mark.parametrize("cmd", sorted(_subcommands()))
def test_bad_values_give_one_line_and_status_2(cmd, env, tmp_path, cheap, capsys):
    """issue 19 finding 8: for every numeric, choice and name argument of ``cmd``: each value
    of the catalogue (a non-number, empty, negative, NaN, +-inf, 1e12, 10^12; an unknown name)
    is one line on stderr and exit status 2, unless the value is valid for that argument
    (then: no traceback, at most one line when it fails later)."""
    sp = _subcommands()[cmd]
    n = 0
    for action in sp._actions:
        kind = _kind(action)
        if kind not in ("number", "choice", "name"):
            continue
        values = NUMERIC_BAD if kind == "number" else ["bogus_name"]
        for v in values:
            n += 1
            argv = _with(_base(cmd, env, tmp_path / f"o{n}"), action, [v])
            rc, err = _run(argv, capsys)
            opt = action.option_strings[-1] if action.option_strings else action.dest
            ok = v in ACCEPTS.get((cmd, opt), set()) | ANY_COMMAND_ACCEPTS.get(opt, set())
            _assert_one_line(rc, err, argv, want_rc=(0, 1, 2) if ok else (2,))
    assert n > 0 or cmd == "vectors", cmd  # vectors has --seed and --threads only, both numbers


@pytest.mark.parametrize("cmd", sorted(_subcommands()))
def test_missing_unwritable_and_existing_paths(cmd, env, tmp_path, cheap, capsys):
    """issue 19 finding 8: a missing input path, an output path under a regular file (not
    writable), and an output that already exists (a previous run) are each one line with
    status 2; the existing files are left byte for byte as they were (``train`` continues a
    run only with --resume, the others replace files only with --overwrite)."""
    sp = _subcommands()[cmd]
    for action in sp._actions:
        if _kind(action) == "path_in":
            argv = _with(_base(cmd, env, tmp_path / "m"), action, [str(tmp_path / "missing" / "x.npz")])
            _assert_one_line(*_run(argv, capsys), argv)
        if _kind(action) == "path_out":
            argv = _with(_base(cmd, env, tmp_path / "u"), action, [str(env / "a_file" / "sub" / "out.npz")])
            _assert_one_line(*_run(argv, capsys), argv)
            first = _base(cmd, env, tmp_path / "e")
            assert _run(first, capsys)[0] in (0, 1), first
            if cmd == "demo":  # a previous demo's own files are replaced (the README command runs twice) ...
                assert _run(first, capsys)[0] in (0, 1), first
                with open(tmp_path / "e" / "checkpoint.npz", "ab") as f:  # ... not a checkpoint changed since
                    f.write(b"\0")
            before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
            assert before, cmd
            rc, err = _run(first, capsys)
            _assert_one_line(rc, err, first)
            assert "--overwrite" in err or "--resume" in err, err
            assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
            if cmd != "train":
                assert _run(first + ["--overwrite"], capsys)[0] in (0, 1), first


def test_demo_never_replaces_a_training_run(env, tmp_path, capsys):
    """issue 19 finding 8: `refdiff demo --out DIR` where DIR holds a `refdiff train`
    checkpoint is refused (one line, status 2, before any work) and the checkpoint is
    unchanged; `refdiff train` into a demo's folder is refused likewise."""
    run = tmp_path / "run"
    assert main(_base("train", env, run)) == 0
    before = (run / "checkpoint.npz").read_bytes()
    rc, err = _run(["demo", "--quick", "--no-progress", "--out", str(run)], capsys)
    _assert_one_line(rc, err, "demo")
    assert "checkpoint.npz' exists" in err and (run / "checkpoint.npz").read_bytes() == before
    rc, err = _run(_base("train", env, run), capsys)
    _assert_one_line(rc, err, "train")


def test_out_existing_folder_reports_the_file_written(env, tmp_path, capsys):
    """issue 19 finding 8: `refdiff sample --out DIR` (an existing folder) writes
    DIR/<default name>.npz and reports that path; `--out NAME` without the suffix writes and
    reports NAME.npz (what np.savez writes), never a path that does not exist."""
    d = tmp_path / "existing_dir"
    d.mkdir()
    for out in (d, tmp_path / "noext"):
        assert main(["sample", str(env / "mlp"), "--n", "4", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
        said = capsys.readouterr().out.split("wrote ")[1].split(" and ")[0]
        assert Path(said).is_file() and Path(said).suffix == ".npz", said
        assert Path(said).parent == (d if out == d else tmp_path)


def test_memory_error_and_internal_error_are_one_line(monkeypatch, capsys):
    """issue 19 finding 8: a MemoryError anywhere in a command is one line with status 2
    naming the size options; an unexpected exception (a bug) is one line with status 3."""
    def boom(exc):
        def f(args):
            raise exc
        return f

    for exc, rc_want, frag in ((MemoryError("Unable to allocate 7 TiB"), 2, "out of memory"),
                               (KeyError("x"), 3, "internal error")):
        monkeypatch.setattr(cli, "_cmd_elbo", boom(exc))
        rc, err = _run(["elbo", "--oracle"], capsys)
        assert rc == rc_want and err.count("\n") == 1 and frag in err, err


def _subprocess(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("REFDIFF_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "refdiff", *argv], cwd=cwd, env=env, capture_output=True, text=True)


def test_real_stderr_huge_sizes_and_overflow_warnings(tmp_path):
    """issue 19 finding 8, outside pytest's capture: `--n 10^12` (a MemoryError) and
    `--lr 1e30` (NumPy overflow warnings before the loss check stops training) each print
    exactly one line on stderr with status 2."""
    tiny = ["--batch-size", "8", "--T", "10", "--hidden", "8", "--layers", "1", "--no-progress"]
    for argv, frag in ((["train", "--n", HUGE, "--steps", "1", "--out", "a", *tiny], "out of memory"),
                       (["train", "--n", "64", "--lr", "1e30", "--steps", "3", "--out", "b", *tiny], "numerical failure")):
        r = _subprocess(argv, tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert frag in r.stderr, r.stderr

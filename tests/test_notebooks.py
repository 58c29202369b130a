"""Every notebook, run as `nbdev_test` runs it (cells flagged `slow` or `cuda` are skipped, as settings.ini says — except that
on a machine with a GPU the `cuda` cells run).

`nbdev_test` only prints "Success.", so each notebook is its own pytest item here, and CI counts
them. Each runs through nbdev's own `test_nb` in a fresh process forked from a server that has
already imported torch, fastai and the package — the isolation of one `nbdev_test` call per
notebook without paying the imports 30 times. A notebook that stops because a larger data set is
unavailable (`DataUnavailable`) is skipped with that reason — unless SSL3D_REQUIRE_DATA is set, as in CI.
"""
import multiprocessing
import pytest
from conftest import ROOT, skip_or_fail

NOTEBOOKS = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb')
                   if not any(part.startswith(('.', '_')) for part in p.relative_to(ROOT/'nbs').parts))
# Imported once by the fork server; no torch op runs there, so its children start with clean thread pools.
PRELOAD = ['matplotlib', 'IPython', 'execnb.shell', 'nbdev.test', 'torch', 'fastai.learner', 'fastai.callback.all',
           'ssl3d_nb.experiments', 'ssl3d_nb.cli']


def _run(nb, conn):
    "In the child: nbdev's `test_nb` with nbdev_test's flags; send back (passed, stdout, stderr)."
    import contextlib, io, os
    os.chdir(ROOT/'nbs')
    from nbdev.config import get_config
    from nbdev.test import test_nb
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        import torch
        cfg = get_config()
        skip = [f for f in cfg.tst_flags.split() if not (f == 'cuda' and torch.cuda.is_available())]
        ok, _ = test_nb(nb, skip_flags=skip, basepath=cfg.config_path)
    conn.send((ok, out.getvalue(), err.getvalue()))


@pytest.fixture(scope='module')
def forkserver():
    ctx = multiprocessing.get_context('forkserver')
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def test_found_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {'index.ipynb', '00_core.ipynb', '01_io.ipynb', '02_preprocess.ipynb', '03_data.ipynb'} <= names


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[str(p.relative_to(ROOT/'nbs')) for p in NOTEBOOKS])
def test_notebook(nb, forkserver):
    recv, send = forkserver.Pipe(duplex=False)
    p = forkserver.Process(target=_run, args=(nb, send))
    p.start(); send.close()
    try: ok, out, err = recv.recv() if recv.poll(540) else (False, '', 'timed out after 540 s')
    except EOFError: ok, out, err = False, '', f'the process died (exit status {p.join(5) or p.exitcode})'
    finally:
        if p.is_alive(): p.kill()
        p.join()
    if not ok and 'DataUnavailable' in err:
        reason = next((l for l in err.splitlines() if 'DataUnavailable:' in l), 'a data set is unavailable')
        skip_or_fail(f"{nb.name}: {reason.strip()}")
    assert ok, f"{nb.name} failed:\n{out[-2000:]}\n{err[-6000:]}"

"""The public API contract of DESIGN.md, on the real data sets; and the package as `pip install` leaves it."""
import os, subprocess, sys, sysconfig, zipfile
from pathlib import Path
import numpy as np
import torch
from conftest import ROOT, copy_project
from ssl3d_nb.io import load_volume, load_label, load_decathlon, decathlon_info, load_subject_folders


def test_hippocampus_contract(hippocampus):
    items = load_decathlon(hippocampus)
    assert len(items) == 130 or len(items) == 260  # the shared development split, or the full public archive
    assert all({'image', 'label'} <= set(it) and Path(it['image']).exists() and Path(it['label']).exists() for it in items)
    labels = decathlon_info(hippocampus)['labels']
    assert labels == {0: 'background', 1: 'Anterior', 2: 'Posterior'}
    for it in items:
        x, meta = load_volume(it['image'])
        assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[0] == 1
        assert meta['spacing'] == (1.0, 1.0, 1.0) and np.asarray(meta['affine']).shape == (4, 4)
        y, _ = load_label(it['label'], like=meta, labels=labels)
        assert y.dtype == torch.int64 and tuple(y.shape) == tuple(x.shape[1:])
        assert all(20 <= s <= 64 for s in x.shape[1:])  # DATA.md: about 31×40×24 to 43×59×47


def test_brats_modalities_stack_as_channels(brats):
    items = load_subject_folders(brats, modalities=('Flair', 'T1c'), label='OTMultiClass')
    assert len(items) == 6
    x, meta = load_volume(items[0]['image'])
    assert x.shape == (2, 240, 240, 155) and meta['spacing'] == (1.0, 1.0, 1.0)
    flair, _ = load_volume(items[0]['image'][0])
    assert torch.equal(x[:1], flair)
    y, _ = load_label(items[0]['label'], like=meta, labels=range(5))
    assert set(torch.unique(y).tolist()) <= {0, 1, 2, 3, 4}


SOURCES = ('settings.ini', 'setup.py', 'pyproject.toml', 'README.md', 'ssl3d_nb', 'data_samples')


def _run(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=kw.pop('timeout', 300), **kw)


def test_a_wheel_installed_outside_the_repository_runs_its_own_demo(tmp_path):
    """The installed package stands alone: a wheel built from the sources, installed into a fresh environment outside the
    repository, runs `ssl3d --help`, `ssl3d info` and `ssl3d demo` on the samples it carries.
    
    The fresh environment is a new venv without the repository on its path; its dependencies (torch, fastai, ...) come from
    the test's own environment through a .pth file, because installing 6 GB of them from the registry would take most of
    CI's time and test pip, not us. That .pth line makes the site-packages folder an ordinary path entry, so the editable
    install of the checkout that lives there (a .pth file of its own) is not read: the only ssl3d_nb the new venv can
    import is the wheel's, which the test checks."""
    src, whl, env, work = (tmp_path/n for n in ('src', 'wheel', 'env', 'work'))
    src.mkdir(); work.mkdir()
    copy_project(src, SOURCES)                  # build from a copy: pip's build/ and egg-info stay out of the checkout
    r = _run(sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', '--no-build-isolation', '--no-index', '-w', whl, src)
    assert r.returncode == 0, r.stderr
    wheel, = whl.glob('ssl3d_nb-*.whl')

    # every file of data_samples/ is in the wheel, under ssl3d_nb/data_samples/
    tracked = [p.relative_to(ROOT).as_posix() for p in (ROOT/'data_samples').rglob('*') if p.is_file() and '__pycache__' not in p.parts]
    assert len(tracked) >= 10, tracked
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {'ssl3d_nb/' + t for t in tracked} <= names, sorted({'ssl3d_nb/' + t for t in tracked} - names)

    r = _run(sys.executable, '-m', 'venv', '--without-pip', env); assert r.returncode == 0, r.stderr
    py = env/'bin/python'
    purelib = Path(_run(py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])').stdout.strip())
    (purelib/'_ssl3d_test_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    r = _run(sys.executable, '-m', 'pip', '--python', py, 'install', '--quiet', '--no-deps', '--no-index', wheel)
    assert r.returncode == 0, r.stderr

    clean = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'SSL3D_DATA', 'SSL3D_HOME')}
    clean['SSL3D_HOME'] = str(tmp_path/'home')
    ssl3d = lambda *a, timeout=300: _run(env/'bin/ssl3d', *a, cwd=work, env=clean, timeout=timeout)

    eps = next(purelib.glob('ssl3d_nb-*.dist-info')).joinpath('entry_points.txt').read_text()
    assert 'ssl3d = ssl3d_nb.cli:main' in eps
    r = _run(py, '-c', 'import ssl3d_nb, ssl3d_nb.cli as c, ssl3d_nb.tasks as t; from ssl3d_nb.external import sample_data; '
             'print(ssl3d_nb.__file__, sample_data(), len(c.COMMANDS), len(t.TASKS))', cwd=work, env=clean)
    assert r.returncode == 0, r.stderr
    pkg, samples, n_commands, n_tasks = r.stdout.split()
    pkg, samples = Path(pkg), Path(samples)
    assert (n_commands, n_tasks) == ('8', '17')          # every command, every task module (15 of the papers, mim and mim-2d)
    assert purelib in pkg.parents and purelib in samples.parents and ROOT not in pkg.parents, r.stdout

    r = ssl3d('--help'); assert r.returncode == 0 and 'commands:' in r.stdout, r.stderr
    r = ssl3d('info'); assert r.returncode == 0, r.stderr
    assert '5 scans (2 labelled) in 2 folders' in r.stdout, r.stdout
    r = ssl3d('demo', '--epochs', 1, '--steps', 2, '--finetune-epochs', 1, '--seeds', 1, '--out', 'demo', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import pandas as pd, torch
    res = pd.read_csv(work/'demo/results.csv')
    assert list(res['method']) == ['scratch', 'mim'] and res['mean_dice'].between(0, 1).all(), res
    assert torch.load(work/'demo/encoder.pth', weights_only=True)['meta']['task'] == 'mim'

"""The public API contract of DESIGN.md, on the real data sets; and the package as `pip install` leaves it."""
import subprocess, sys
from pathlib import Path
import numpy as np
import torch
from conftest import ROOT, BIN, copy_project
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


def test_pip_install_gives_a_working_package(tmp_path):
    "A regular (non-editable) install of the repository: modules, version and the `ssl3d` entry point."
    src = tmp_path/'src'
    src.mkdir()
    copy_project(src, ('settings.ini', 'setup.py', 'pyproject.toml', 'README.md', 'ssl3d_nb'))
    target = tmp_path/'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                        '--target', str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    eps = next(target.glob('ssl3d_nb-*.dist-info')).joinpath('entry_points.txt').read_text()
    assert 'ssl3d = ssl3d_nb.cli:main' in eps
    code = ("import ssl3d_nb, ssl3d_nb.cli as c, ssl3d_nb.tasks as t; "
            "print(ssl3d_nb.__file__, ssl3d_nb.__version__, sorted(c.COMMANDS), len(t.TASKS))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                       env={'PYTHONPATH': str(target), 'PATH': str(BIN)}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert str(target) in r.stdout and "'info'" in r.stdout and "'benchmark'" in r.stdout
    assert r.stdout.split()[-1] == '17'                   # every task module is in the package (15 of the papers, mim and mim-2d)

"Shared fixtures: the repository root, and the larger data sets (skip, or fail in CI, when absent)."
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin/, where nbdev's and ssl3d's scripts are
SAMPLE = ROOT/'data_samples/colin27_subcortical'


PROJECT = ('settings.ini', 'setup.py', 'pyproject.toml', 'README.md', 'nbs', 'ssl3d_nb')


def copy_project(dst: Path, names=PROJECT) -> Path:
    "Copy the project's sources (not the venv, caches or build output) to `dst`, for tools that write."
    for name in names:
        src = ROOT/name
        if src.is_dir(): shutil.copytree(src, dst/name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', '_proc'))
        else: shutil.copy2(src, dst/name)
    return dst


def data_required() -> bool:
    "CI sets SSL3D_REQUIRE_DATA: there, a missing data set is a failure, not a skip."
    return os.environ.get('SSL3D_REQUIRE_DATA', '') not in ('', '0')


def skip_or_fail(msg: str):
    if data_required(): pytest.fail(f"{msg} (SSL3D_REQUIRE_DATA is set, so this is an error)")
    pytest.skip(msg)


def dataset(name: str) -> Path:
    "The folder of a larger data set, or skip the test with the reason `get_dataset` gives."
    from ssl3d_nb.external import get_dataset, DataUnavailable
    try: return get_dataset(name)
    except DataUnavailable as e: skip_or_fail(f"needs the {name} data: {e}")


@pytest.fixture
def hippocampus() -> Path: return dataset('hippocampus')


@pytest.fixture
def brats() -> Path: return dataset('brats2013-sample')


def ssl3d(*args, cwd=None, timeout=300):
    "Run the installed `ssl3d` command as a user would: a CompletedProcess with text stdout and stderr."
    return subprocess.run([str(BIN/'ssl3d'), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def digests(folder) -> dict:
    "The sha256 of every file under `folder` (not following links to files): what 'the user's files are unchanged' compares."
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob('*')) if p.is_file() and not p.is_symlink()}


def decathlon(root, n=2, image=None, label=None, labels=None, modality=None, entries=None, **extra):
    "A Decathlon folder of `n` subjects (the Colin27 crops, as two subjects), with optional replacements."
    (root/'imagesTr').mkdir(parents=True); (root/'labelsTr').mkdir()
    names = ['colin27_left', 'colin27_right'][:n]
    for i, name in enumerate(names):
        shutil.copy(SAMPLE/f'imagesTr/{name}.nii.gz', root/f'imagesTr/s{i}.nii.gz')
        shutil.copy(SAMPLE/f'labelsTr/{name}.nii.gz', root/f'labelsTr/s{i}.nii.gz')
    import nibabel as nib
    if image is not None: nib.save(image, root/'imagesTr/s0.nii.gz')
    if label is not None: nib.save(label, root/'labelsTr/s0.nii.gz')
    meta = json.loads((SAMPLE/'dataset.json').read_text())
    meta['training'] = entries if entries is not None else [{'image': f'./imagesTr/s{i}.nii.gz', 'label': f'./labelsTr/s{i}.nii.gz'} for i in range(n)]
    if labels is not None: meta['labels'] = labels
    if modality is not None: meta['modality'] = modality
    meta.update(extra)
    (root/'dataset.json').write_text(json.dumps(meta))
    return root


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    "Tests marked `cuda` need a GPU: skipped, with the reason, where torch sees none (`make test-gpu` runs only them)."
    if cuda_available(): return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (run them on one with `make test-gpu`)')
    for item in items:
        if 'cuda' in item.keywords: item.add_marker(skip)

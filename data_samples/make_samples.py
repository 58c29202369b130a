#!/usr/bin/env python3
"""Build `data_samples/` from redistributable real scans (see data_samples/README.md).

Source: the Debian package `mricron-data` (BSD-3-clause per its Debian copyright file),
which ships the Colin27 single-subject MRI (`ch2.nii.gz`, `ch2better.nii.gz`), the AAL
atlas drawn on it (`aal.nii.gz`) and the INIA19 macaque template (`inia19-t1-brain.nii.gz`).

    python data_samples/make_samples.py [--deb FILE] [--force]

Without `--deb` it runs `apt-get download mricron-data` in a temporary folder. Needs
numpy and nibabel (the project's venv has both). Deterministic: the same .deb gives
byte-identical NIfTI files (gzip timestamps are zeroed).
"""
import argparse, gzip, hashlib, io, json, shutil, subprocess, tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
DEB_SHA256 = 'd40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f'  # mricron-data 1.2.20211006+dfsg-4
TEMPLATES = 'usr/share/mricron/templates'

# AAL region indices (aal.nii.txt: index, name, code) -> one class per structure, left and
# right hemisphere alike, so a crop that reaches over the midline is labelled consistently.
CLASSES = {1: ('hippocampus', (37, 38)), 2: ('amygdala', (41, 42)), 3: ('parahippocampal', (39, 40)),
           4: ('caudate', (71, 72)), 5: ('putamen', (73, 74)), 6: ('pallidum', (75, 76)),
           7: ('thalamus', (77, 78))}
MARGIN = 4  # voxels around the labelled structures


def get_deb(deb, tmp):
    if deb is None:
        subprocess.run(['apt-get', 'download', 'mricron-data'], cwd=tmp, check=True)
        deb = next(Path(tmp).glob('mricron-data_*.deb'))
    digest = hashlib.sha256(Path(deb).read_bytes()).hexdigest()
    if digest != DEB_SHA256:
        print(f'warning: {deb} has sha256 {digest}, not the {DEB_SHA256} these samples were made from')
    out = Path(tmp)/'deb'
    subprocess.run(['dpkg-deb', '-x', str(deb), str(out)], check=True)
    return out/TEMPLATES, digest


def save(img, path):
    "Write `img` as .nii.gz with a zeroed gzip timestamp, so rebuilds are byte-identical."
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = img.to_bytes()
    with open(path, 'wb') as f, gzip.GzipFile(fileobj=f, mode='wb', mtime=0, filename='') as gz:
        gz.write(raw)
    return path


def bbox(mask, margin, shape):
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def colin27_subcortical(tpl, out):
    "Left and right deep-grey-matter crops of Colin27 with 7 AAL structures (Decathlon layout)."
    t1, aal = nib.load(tpl/'ch2.nii.gz'), nib.load(tpl/'aal.nii.gz')
    assert np.allclose(t1.affine, aal.affine) and t1.shape == aal.shape
    a = np.asanyarray(aal.dataobj)
    lab = np.zeros(a.shape, np.uint8)
    for c, (_, idx) in CLASSES.items(): lab[np.isin(a, idx)] = c
    root = out/'colin27_subcortical'
    training = []
    for side, parity in (('left', 1), ('right', 0)):
        # AAL gives odd indices to left structures and even ones to right structures
        side_idx = [i for _, idx in CLASSES.values() for i in idx if i % 2 == parity]
        sl = bbox(np.isin(a, side_idx), MARGIN, a.shape)
        img = t1.slicer[sl]
        seg = nib.Nifti1Image(lab[sl], img.affine)
        seg.header.set_data_dtype(np.uint8)
        name = f'colin27_{side}.nii.gz'
        save(img, root/'imagesTr'/name); save(seg, root/'labelsTr'/name)
        training.append({'image': f'./imagesTr/{name}', 'label': f'./labelsTr/{name}', 'subject': 'colin27'})
    meta = {
        'name': 'Colin27 subcortical',
        'description': 'Left and right deep grey matter crops of the Colin27 T1 MRI (one subject, 27 scans averaged) '
                       'with 7 structures from the AAL atlas, which was drawn on this brain',
        'reference': 'Holmes et al. 1998 (Colin27); Tzourio-Mazoyer et al. 2002 (AAL); via Debian mricron-data',
        'licence': 'BSD-3-Clause (Debian mricron-data copyright)',
        'tensorImageSize': '3D',
        'modality': {'0': 'T1'},
        'labels': {'0': 'background', **{str(c): n for c, (n, _) in CLASSES.items()}},
        'numTraining': len(training), 'numTest': 0,
        'training': training, 'test': []}
    (root/'dataset.json').write_text(json.dumps(meta, indent=1) + '\n')
    return root


def downsample2(img, dtype=None):
    "Average 2x2x2 blocks: half the resolution, twice the voxel size, same field of view."
    d = np.asanyarray(img.dataobj).astype(np.float32)
    s = [n - n % 2 for n in d.shape]
    d = d[:s[0], :s[1], :s[2]].reshape(s[0]//2, 2, s[1]//2, 2, s[2]//2, 2).mean((1, 3, 5))
    aff = img.affine.copy()
    aff[:3, :3] *= 2
    aff[:3, 3] += img.affine[:3, :3] @ np.full(3, 0.5)  # centre of the first 2x2x2 block
    if dtype is not None: d = np.round(d).astype(dtype)
    return nib.Nifti1Image(d, aff)


def brains(tpl, out):
    "Unlabeled whole-brain scans for pretraining and for the loading/resampling lessons."
    root = out/'brains'
    # Colin27 head at 2 mm, stored the radiological way (x flipped: LAS), to show reorientation
    head = downsample2(nib.load(tpl/'ch2.nii.gz'), np.uint8)
    flip = np.diag([-1., 1, 1, 1]); flip[0, 3] = head.shape[0] - 1
    las = nib.Nifti1Image(np.ascontiguousarray(np.asanyarray(head.dataobj)[::-1]), head.affine @ flip)
    assert nib.aff2axcodes(las.affine) == ('L', 'A', 'S')
    save(las, root/'colin27_t1_2mm_LAS.nii.gz')
    # Colin27 high-resolution version at its native 0.5 mm, cropped around the left
    # hippocampus (48 mm cube): a scan whose spacing differs from the others
    hires = nib.load(tpl/'ch2better.nii.gz')
    centre_mm = np.array([-26., -22., -12.])  # MNI coordinates of the left hippocampus body
    c = np.round(np.linalg.solve(hires.affine, np.r_[centre_mm, 1])[:3]).astype(int)
    save(hires.slicer[tuple(slice(int(i) - 48, int(i) + 48) for i in c)], root/'colin27_hires_0.5mm.nii.gz')
    # INIA19 macaque brain template at 1 mm (float32, as shipped)
    save(downsample2(nib.load(tpl/'inia19-t1-brain.nii.gz')), root/'inia19_macaque_1mm.nii.gz')
    return root


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--deb', help='a downloaded mricron-data .deb (default: apt-get download it)')
    p.add_argument('--force', action='store_true', help='replace existing samples')
    args = p.parse_args()
    targets = [HERE/'colin27_subcortical', HERE/'brains']
    if any(t.exists() for t in targets) and not args.force:
        raise SystemExit(f'{", ".join(str(t) for t in targets if t.exists())} exist; pass --force to rebuild')
    for t in targets: shutil.rmtree(t, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        tpl, digest = get_deb(args.deb, tmp)
        made = [colin27_subcortical(tpl, HERE), brains(tpl, HERE)]
    for root in made:
        for f in sorted(root.rglob('*.nii.gz')):
            img = nib.load(f)
            print(f'{f.relative_to(HERE)}: {img.shape} {img.get_data_dtype()} '
                  f'{tuple(float(z) for z in img.header.get_zooms())} mm {"".join(nib.aff2axcodes(img.affine))} '
                  f'{f.stat().st_size/1024:.0f} KiB')


if __name__ == '__main__': main()

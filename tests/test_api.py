"""The public API of DESIGN.md for the building blocks: names, signatures and return shapes that outside checks call."""
import inspect, math
import numpy as np
import torch
import torch.nn.functional as F
from ssl3d_nb import grids, permutations, rotations, losses, models


def params(f): return list(inspect.signature(f).parameters)


def test_partition_contract():
    assert params(grids.partition) == ['x', 'grid', 'cell', 'gap', 'jitter', 'generator']
    x = torch.arange(2 * 20 * 22 * 26, dtype=torch.float32).view(2, 20, 22, 26)
    cells = grids.partition(x, grid=(2, 2, 3), cell=(6, 7, 5), gap=2, jitter=1, generator=torch.Generator().manual_seed(0))
    assert cells.shape == (12, 2, 6, 7, 5)
    # neighbours along the last axis (row-major: consecutive cells) are at least `gap` apart
    for k in range(0, 12, 3):
        w0 = cells[k, 0, 0, 0] % 26; w1 = cells[k + 1, 0, 0, 0] % 26
        assert (w1[0] - w0[-1] - 1) >= 2
    img = torch.randn(1, 30, 30)
    assert grids.partition(img, 3, 8, gap=1).shape == (9, 1, 8, 8)


def test_hamming_permutations_contract():
    assert params(permutations.hamming_permutations)[:4] == ['n', 'k', 'seed', 'criterion']
    for crit in ('max-min', 'max-mean'):
        P = permutations.hamming_permutations(8, 30, seed=0, criterion=crit, cache=False)
        assert P.dtype == torch.long and P.shape == (30, 8)
        assert len({tuple(p) for p in P.tolist()}) == 30
        assert (P.sort(1).values == torch.arange(8)).all()
    assert permutations.hamming_permutations(27, 5, seed=0, cache=False).shape == (5, 27)


def test_rotation_contract():
    assert rotations.N_ROT_3D == 10
    x = torch.randn(2, 1, 5, 5, 5)
    assert torch.equal(rotations.rotate_3d(x, 0), x)
    outs = [rotations.rotate_3d(x, c) for c in range(10)]
    assert all(not torch.equal(outs[i], outs[j]) for i in range(10) for j in range(i + 1, 10))
    assert torch.equal(rotations.rotate_3d(rotations.rotate_3d(x, 1), 3), x)


def test_losses_contract():
    p, z = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    s = (p @ z.T).numpy()
    expected = np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))
    assert abs(losses.info_nce(p, z, temperature=1.0).item() - expected) < 1e-9
    a, b, c = torch.randn(3, 5, 8).unbind(0)
    assert abs(losses.triplet_loss(a, b, c, margin=1.0) - F.triplet_margin_loss(a, b, c, margin=1.0)) < 1e-4
    H = losses.offset_heatmap(0.2, -0.4, size=19)
    i, j = np.meshgrid(np.arange(-9, 10), np.arange(-9, 10), indexing='ij')
    assert np.allclose(H.numpy(), 10 * np.exp(-15 * ((i / 9 - 0.2) ** 2 + (j / 9 + 0.4) ** 2)), atol=1e-5)


def test_models_contract():
    counts = {models.D2DCNN: 139_744, models.Reg2DHead: 27_138, models.HeatmapHead: 28_189,
              models.D3DCNN: 393_392, models.SixNeighbourHead: 31_238}
    for cls, n in counts.items():
        assert sum(q.numel() for q in cls().parameters() if q.requires_grad) == n, cls.__name__
    assert models.D2DCNN()(torch.randn(2, 3, 42, 42)).shape == (2, 64, 1, 1)
    assert models.D3DCNN()(torch.randn(2, 1, 25, 25, 25)).shape == (2, 192, 1, 1, 1)
    enc = models.ResUNetEncoder3d(width_mult=0.25)
    feats = enc(torch.randn(1, 1, 32, 32, 64))
    assert len(feats) == 5 and feats[-1].shape == (1, 128, 2, 2, 4)
    assert models.UNetDecoder3d(enc.widths, 3)(feats).shape == (1, 3, 32, 32, 64)
    assert models.DUC3d(enc.widths[3], 3, r=8)(feats[3]).shape == (1, 3, 32, 32, 64)
    assert models.VGG3d(width_mult=0.25)(torch.randn(1, 1, 32, 32, 32)).shape[1] == 128


DESIGN_TASKS = {'rubik', 'rubik-order', 'jigsaw', 'rotation', 'rpl', 'cpc', 'exemplar', 'jigsaw-2d', 'rotation-2d',
                'rpl-2d', 'cpc-2d', 'exemplar-2d', 'planar-reg2d', 'planar-heatmap', 'doersch'}
BEYOND_TASKS = {'mim', 'mim-2d'}        # masked image modelling: today's practice beyond the three papers (issue 20)


def test_task_registry():
    from ssl3d_nb.tasks import TASKS, Task
    assert all(isinstance(t, Task) and t.name == k for k, t in TASKS.items())
    known = DESIGN_TASKS | BEYOND_TASKS
    assert set(TASKS) == known, f"neither in DESIGN.md nor beyond it: {set(TASKS) - known}; missing: {known - set(TASKS)}"


def test_every_task_trains_one_step(tmp_path):
    "Each registered task: sample maker → model → finite loss → gradients on the encoder → saved encoder loads back."
    from ssl3d_nb.tasks import TASKS
    from ssl3d_nb.core import get_generator
    x = torch.rand(4, 1, 48, 48, 48, generator=get_generator(0))
    for name, task in TASKS.items():
        enc = task.encoder(1, 0.25)
        model = task.model(enc)
        inputs, targets = task.make(x, get_generator(1))
        loss = task.loss(model(*inputs), *targets)
        assert torch.isfinite(loss), name
        loss.backward()
        assert all(p.grad is not None for p in enc.parameters()), f"{name}: encoder parameters without gradient"
        models.save_encoder(enc, tmp_path / f'{name}.pth', task=name)
        enc2, meta = models.load_encoder(tmp_path / f'{name}.pth')
        assert meta['task'] == name and type(enc2) is type(enc)
        sd1, sd2 = enc.state_dict(), enc2.state_dict()
        assert all(torch.equal(sd1[k], sd2[k]) for k in sd1), name


def test_metrics_contract():
    from ssl3d_nb.metrics import dice, brats_regions
    pred, target = torch.tensor([[0, 1, 1], [2, 2, 0]]), torch.tensor([[0, 1, 2], [2, 2, 2]])
    d = dice(pred, target, n_classes=3)
    assert d.shape == (2,) and torch.allclose(d, torch.tensor([2 * 1 / 3, 2 * 2 / 6]))   # background excluded
    wt, tc, et = brats_regions(torch.tensor([0, 1, 2, 3, 4]))
    assert wt.tolist() == [False, True, True, True, True] and tc.tolist() == [False, True, False, True, True] \
        and et.tolist() == [False, False, False, False, True]


def test_descriptors_from_one_api(tmp_path):
    "Trained encoders (from a file), XAVIER and GVDIFF all give 192 features per lattice point; a wrong encoder file is refused by name."
    import pytest
    from ssl3d_nb.knn import descriptor, dense_descriptors, few_shot_dice
    from ssl3d_nb.core import DataError
    x = torch.rand(1, 20, 24, 17)
    models.save_encoder(models.PlanarEncoder(), tmp_path/'planar.pth', task='planar-heatmap')
    models.save_encoder(models.D3DCNN(), tmp_path/'doersch.pth', task='doersch')
    for src in (tmp_path/'planar.pth', tmp_path/'doersch.pth', 'xavier', 'gvdiff'):
        f = dense_descriptors(descriptor(src), x, step=4)
        assert f.shape == (192, 5, 6, 5) and torch.isfinite(f).all(), src
    models.save_encoder(models.VGG3d(width_mult=0.25), tmp_path/'vgg.pth', task='rubik')
    with pytest.raises(DataError, match='vgg.pth.*planar-reg2d'): descriptor(tmp_path/'vgg.pth')
    # label transfer with a perfect descriptor (the label itself, one-hot) at every voxel gives Dice 1
    lab = [torch.zeros(20, 24, 17, dtype=torch.long) for _ in range(3)]
    for i, l in enumerate(lab): l[4:12, 8:16 + i, 4:12] = 1
    feats = [dense_descriptors(lambda v, p, l=l: F.one_hot(l[tuple(((p + 1) * (torch.tensor(l.shape) - 1) / 2).round().long().T)], 2).float(), x, step=1)
             for l in lab]
    d = few_shot_dice(feats, lab, atlases=[0, 1], tests=[2], n_classes=2, k=3, step=1)
    assert d.shape == (1, 1) and abs(d.item() - 1) < 1e-6


def test_transfer_api(tmp_path):
    "A 1-channel pretrained encoder fine-tunes on 2-channel scans (first layer copied), with either decoder; a saved model predicts the same."
    import pytest
    from ssl3d_nb import finetune, metrics
    from ssl3d_nb.data import Scan
    g = torch.Generator().manual_seed(0)
    def scan(i):
        x = torch.rand(2, 32, 32, 32, generator=g)
        y = torch.zeros(32, 32, 32, dtype=torch.long); y[8:20, 10:22, 6:18] = 1; y[20:26, 10:22, 6:18] = 2
        return Scan(x + y[None].float(), y, {'paths': [f'scan{i}.nii.gz']}, {'id': f's{i}'})
    scans = [scan(i) for i in range(3)]
    models.save_encoder(models.ResUNetEncoder3d(1, width_mult=0.25), tmp_path/'enc.pth', task='rotation')
    dls = finetune.seg_dls(scans[:2], scans[2:], size=32, bs=2, steps_per_epoch=2, device='cpu')
    for decoder in ('unet', 'duc'):
        learn = finetune.finetune_learner(dls, 3, encoder=tmp_path/'enc.pth', decoder=decoder, path=tmp_path)
        assert learn.pretrained and learn.model.encoder.in_channels == 2
        with learn.no_bar(), learn.no_logging(): finetune.fit_finetune(learn, epochs=2, warmup=1)
        res = finetune.evaluate(learn.model, scans[2:])
        assert list(res.columns) == ['scan', 'dice_1', 'dice_2', 'mean_dice', 'miou'] and len(res) == 1
        pred = finetune.segment(learn.model, scans[2].x)
        assert abs(res.loc[0, 'mean_dice'] - float(metrics.dice(pred, scans[2].label, 3).nanmean())) < 1e-6
        assert abs(res.loc[0, 'miou'] - float(metrics.iou(pred, scans[2].label, 3).nanmean())) < 1e-6
    p = finetune.save_model(learn.model, tmp_path/'model.pth')
    with pytest.raises(FileExistsError): finetune.save_model(learn.model, p)
    m2, meta = finetune.load_model(p)
    assert meta['decoder'] == 'duc' and torch.equal(finetune.segment(m2, scans[2].x), finetune.segment(learn.model, scans[2].x))


def test_metrics_against_sklearn():
    from sklearn.metrics import f1_score, jaccard_score, cohen_kappa_score
    from ssl3d_nb.metrics import dice, iou, quadratic_kappa, region_dice
    g = torch.Generator().manual_seed(0)
    t, p = torch.randint(0, 4, (500,), generator=g), torch.randint(0, 4, (500,), generator=g)
    assert np.allclose(dice(p, t, 4).numpy(), f1_score(t, p, labels=[1, 2, 3], average=None), atol=1e-6)
    assert np.allclose(iou(p, t, 4).numpy(), jaccard_score(t, p, labels=[1, 2, 3], average=None), atol=1e-6)
    assert abs(quadratic_kappa(p, t) - cohen_kappa_score(t, p, weights='quadratic')) < 1e-9
    # BraTS regions of a hand-made case: WT found 43 of 50 voxels with 7 false: Dice 0.86
    truth = torch.zeros(100, dtype=torch.long); truth[:20] = 2; truth[20:40] = 1; truth[40:50] = 4
    pred = truth.clone(); pred[:7] = 0; pred[50:57] = 2
    assert torch.allclose(region_dice(pred, truth), torch.tensor([0.86, 1.0, 1.0]))


def test_experiment_tables_from_the_package():
    "summary_table, paired_gain and plot_data_efficiency as a script calls them (the notebook's own globals hide missing imports)."
    import pandas as pd, matplotlib; matplotlib.use('Agg')
    from ssl3d_nb.experiments import summary_table, paired_gain, plot_data_efficiency, plot_gain
    df = pd.DataFrame([{'method': m, 'budget': b, 'seed': s, 'mean_dice': 0.5 + 0.1 * (m == 'rpl') + 0.01 * s + 0.02 * b}
                       for m in ('scratch', 'rpl') for b in (1, 2) for s in range(3)])
    assert summary_table(df).loc['rpl', 1] == '63.0 [60.5, 65.5]'                # sd 1.0, 3 seeds: ± 4.303 / √3
    assert summary_table(df, spread='std').loc['rpl', 1] == '63.0 ± 1.0'
    g = paired_gain(df).set_index(['method', 'budget'])
    assert np.allclose(g['gain'], 10) and (g['wins'] == 3).all()
    ax = plot_data_efficiency(df)                                   # no axes given: the function makes its own figure
    assert [l.get_text() for l in ax.get_legend().get_texts()] == ['scratch', 'rpl'] and len(ax.containers) == 2
    ax = plot_gain(paired_gain(df)); ax.figure.canvas.draw()
    assert [(t.get_text(), t.get_position()[1]) for t in ax.get_yticklabels()] == [('rpl · 1', 1), ('rpl · 2', 0)]   # first row on top

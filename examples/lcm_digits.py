"""Latent consistency distillation (LCM) of a class-conditional 8x8-digits teacher: 1, 2 and 4
step guided samples at omega = 3.

Teacher: a class-conditional MLP on the flattened 8x8 digits (refdiff.nn.MLP, 64 -> 3 x 256,
v prediction (``--prediction``), linear schedule T = 1000, condition dropout 0.15), trained with
``refdiff.train.train``; sampled with DPM-Solver++(2M), 25 steps, classifier-free guidance
``eps_c + omega (eps_c - eps_u)`` (the LCM paper's omega; refdiff's "w" scale 1 + omega).
Student: the same MLP with the guidance embedding of omega concatenated to its input
(refdiff.distill.GuidedNet; initialised as the teacher: the extra input rows and output
columns zero), trained by ``refdiff.distill.lcm_loss_fn`` (MATH.md (18.25)-(18.27): omega ~
U[0, 4], skipping DDIM solver on the 50-step grid, EMA target 0.95, squared L2), sampled with
refdiff's LCM sampler on ``lcm_timesteps`` (one network call per step, no CFG).

Scores: guided-class accuracy of a separately trained classifier (refdiff.train.
train_digit_classifier; its held-out accuracy printed) and the Frechet distance in its feature
space to the held-out test digits, for the teacher and for the student at 1, 2, 4 steps.
Writes ``lcm_digits.png`` and ``lcm_digits.json``.

    OPENBLAS_NUM_THREADS=1 python examples/lcm_digits.py --out docs/figures

Measured (seed 0; classifier held-out accuracy 0.983; 7.5 min wall on 2 cores shared with other
jobs): teacher (25 DPM-Solver++(2M) steps, 50 network calls) accuracy 1.000, Frechet 38.9; LCM
(v-prediction) at 1 / 2 / 4 steps accuracy 1.000 / 1.000 / 0.998, Frechet 50.9 / 49.1 / 62.7.  The
one-step samples of one digit look alike (less diversity: Frechet above the teacher's).  With
``--prediction epsilon`` (same budget): accuracy 0.158 / 0.844 / 0.996, Frechet 598 / 137 / 32
(teacher 66): one-step samples are noise, MATH.md section 18.6.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

STEPS = (1, 2, 4)


def student_from_teacher(tp, E):
    """Teacher MLP parameters as the GuidedNet student's (input rows / output columns of the
    embedding zero, so the student starts equal to the teacher)."""
    sp = dict(tp)
    w_in = tp["in.w"]
    sp["in.w"] = np.concatenate([w_in, np.zeros((E, w_in.shape[1]), w_in.dtype)], axis=0)
    sp["out.w"] = np.concatenate([tp["out.w"], np.zeros((tp["out.w"].shape[0], E), tp["out.w"].dtype)], axis=1)
    sp["out.b"] = np.concatenate([tp["out.b"], np.zeros(E, tp["out.b"].dtype)])
    return sp


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0], "figures")
    p.add_argument("--teacher-steps", type=int, default=4000)
    p.add_argument("--lcm-steps", type=int, default=2000)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--omega", type=float, default=3.0)
    p.add_argument("--prediction", default="v_prediction", choices=["v_prediction", "epsilon"],
                   help="teacher and student prediction type (epsilon: the student's x0 = (x - sigma eps)/alpha "
                        "amplifies its errors by 1/alpha ~ 160 at t = 999, and 1-step samples are noise)")
    args = p.parse_args(argv)
    if args.tiny:
        args.teacher_steps, args.lcm_steps, args.classifier_steps, args.per_class = 10, 5, 10, 2
    import refdiff
    from refdiff import metrics
    from refdiff.distill import GuidedNet, lcm_loss_fn, lcm_student_model
    from refdiff.nn import MLP, MLPConfig, classifier
    from refdiff.samplers.lcm import lcm, lcm_timesteps
    from refdiff.train import train, train_digit_classifier
    from refdiff.training import fit, init_state

    t_start = time.perf_counter()
    out = _common.out_dir(args.out)
    x_tr, y_tr, name = _common.eight_by_eight("train")
    x_te, y_te, _ = _common.eight_by_eight("test", np.random.default_rng([args.seed, 9]), n_shapes=1000)
    clf, clf_acc = train_digit_classifier(steps=args.classifier_steps, seed=args.seed, x_train=x_tr, y_train=y_tr,
                                          x_test=x_te, y_test=y_te)
    print(f"data {name}; classifier held-out accuracy {clf_acc:.4f}", flush=True)
    sched = refdiff.make_schedule("linear", 1000)
    cfg = dict(hidden=256, layers=3, time_embed_dim=64, num_classes=10)
    teacher_net = MLP(MLPConfig(dim=64, **cfg))
    xf = x_tr.reshape(len(x_tr), 64).astype(np.float32)
    res = train(teacher_net, (xf, {"class": y_tr}), schedule=sched, steps=args.teacher_steps, batch_size=128, lr=2e-3,
                target=args.prediction, seed=args.seed, ema_decay=0.995, ema_warmup=True, cond_dropout=0.15,
                warmup_steps=min(100, args.teacher_steps // 10), lr_decay="cosine", grad_clip=1.0, eval_size=0,
                progress=False)
    tp = res.ema_params
    null = lambda n: np.full(n, 10, dtype=np.int64)
    teach = lambda x, t, y: teacher_net.apply(tp, x, np.asarray(t, np.float32), {"class": null(len(x)) if y is None
                                                                                  else y})
    labels = np.repeat(np.arange(10), args.per_class)
    feat_real = classifier.features(clf, x_te)

    def score(x):
        img = np.clip(np.asarray(x, np.float64).reshape(-1, 1, 8, 8), -1, 1)
        acc = float(np.mean(classifier.classify(clf, img) == labels))
        fd = metrics.frechet_distance(classifier.features(clf, img), feat_real) if len(img) > 2 else float("nan")
        return acc, fd, img

    om = args.omega
    guided = lambda x, t: (lambda c, u: c + om * (c - u))(teach(x.astype(np.float32), t, labels),
                                                          teach(x.astype(np.float32), t, None)).astype(np.float64)
    xT = np.random.default_rng([args.seed, 3]).standard_normal((len(labels), 64))
    x_teacher = refdiff.sample(guided, xT, sched, refdiff.timesteps(1000, 25, "trailing"), "dpmpp_2m",
                               prediction_type=args.prediction, progress=False)
    out_json = {"classifier_accuracy": clf_acc, "omega": om, "teacher_dpmpp_2m_25": dict(zip(("accuracy", "frechet"),
                                                                                            score(x_teacher)[:2]))}
    print(f"teacher (DPM-Solver++(2M), 25 steps x 2 calls, omega {om}): accuracy "
          f"{out_json['teacher_dpmpp_2m_25']['accuracy']:.3f}, Frechet {out_json['teacher_dpmpp_2m_25']['frechet']:.3f}",
          flush=True)
    E = 16
    student = GuidedNet(MLP(MLPConfig(dim=64 + E, **cfg)), 64, E, (0.0, 4.0))
    sp = student_from_teacher(tp, E)
    lf = lcm_loss_fn(student, teach, sched, omega_range=(0.0, 4.0), teacher_prediction_type=args.prediction,
                     student_prediction_type=args.prediction)

    def batch(r):
        i = r.integers(0, len(xf), 128)
        return xf[i], np.asarray(y_tr[i], dtype=np.int64)

    st = init_state({"params": sp, "ema": dict(sp)}, {"params": True}, np.random.default_rng([args.seed, 5]),
                    args.lcm_steps)
    st = fit(lf, st, batch, steps=args.lcm_steps, trainable={"params": True}, ema={"ema": ("params", 0.95, False)},
             lr=1e-4, progress=False)
    shown = {}
    out_json["lcm"] = {}
    for k in STEPS:
        model = lcm_student_model(student, st.groups["ema"], om, {"class": labels})
        rng = np.random.default_rng([args.seed, 10, k])
        x = lcm(lambda z, t: model(z.astype(np.float32), t).astype(np.float64), xT.copy(), sched,
                lcm_timesteps(1000, k), prediction_type=args.prediction, noise=lambda like: rng.standard_normal(like.shape))
        acc, fd, img = score(x)
        shown[k] = img
        out_json["lcm"][k] = {"accuracy": acc, "frechet": fd}
        print(f"LCM {k} step(s), omega {om}: accuracy {acc:.3f}, Frechet {fd:.3f}", flush=True)
    out_json["wall_s"] = time.perf_counter() - t_start
    (out / "lcm_digits.json").write_text(json.dumps(out_json, indent=1))
    plt = _common.pyplot()
    show = min(args.per_class, 6)
    panels = [("teacher, 25 steps", score(x_teacher)[2])] + [(f"LCM {k} step(s)", shown[k]) for k in STEPS]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 4.0))
    for ax, (title, img) in zip(axes, panels):
        sel = np.concatenate([img[labels == d][:show] for d in range(10)])
        ax.imshow(_common.image_grid(sel, nrow=10, fill=0.0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9), ax.set_xticks([]), ax.set_yticks([])
    _common.save(fig, out / "lcm_digits.png", dpi=110)
    return out_json


if __name__ == "__main__":
    main()

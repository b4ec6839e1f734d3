"""``refdiff.load(path) -> (model, metadata)``: one call from a checkpoint to a model that
knows its architecture, prediction type, schedule and condition kinds.

    model, meta = refdiff.load("run/checkpoint.npz")
    x = model.sample(16, steps=20, method="dpmpp_2m", rng=np.random.default_rng(0))
    x = model.sample(16, steps=20, cond={"class": labels}, guidance_scale=3.0, rng=rng)
    eps_or_v = model(x_t, t)                     # a plain model(x, t): the null condition
    f = model.bind({"class": labels})            # a plain model(x, t) with cond bound

``model.prediction_type`` is read from the checkpoint (format 2 stores it; format 1 used
the training target), so a v-prediction network is sampled as one without being told.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._validate import check_bool, check_choice, check_finite_scalar, check_int
from .backend import array_namespace, check_rng
from .nn.checkpoint import load_checkpoint, schedule_from_description

__all__ = ["load", "LoadedModel", "CONTINUOUS_ONLY_METHODS"]

CONTINUOUS_ONLY_METHODS = ("euler_maruyama", "pc", "pf_ode_rk4")


@dataclass
class LoadedModel:
    """A network with its parameters, prediction type, schedule and condition kinds.
    Calling it is the plain ``model(x, t)`` of the null condition.

    Usually built by :func:`load`; ``cond_kinds`` (the network's condition kinds) and
    ``sample_shape`` (the shape of one sample, ``(dim,)`` for an MLP, ``(C, H, W)`` for a
    U-Net) are read from the network.

    Parameters
    ----------
    net : refdiff.nn network
        The network (an :class:`refdiff.nn.mlp.MLP` or :class:`refdiff.nn.unet.UNet`), with
        ``apply``, ``as_model``, ``cond_spec`` and ``config``.
    params : dict
        Its parameters (name -> array), in the namespace and dtype the model runs in.
    prediction_type : str
        What the network predicts, a name of ``refdiff.PREDICTION_TYPES`` ("epsilon",
        "sample", "v_prediction"), as the checkpoint gives it.
    schedule : Schedule or None
        The schedule it was trained on (:meth:`sample` needs a discrete ``Schedule``).
    meta : dict
        The checkpoint's metadata as stored.
    """

    net: object
    params: dict
    prediction_type: str
    schedule: object
    meta: dict

    def __call__(self, x, t):
        return self.net.apply(self.params, x, t)

    @property
    def cond_kinds(self) -> list:
        return list(self.net.cond_spec.kinds)

    @property
    def sample_shape(self) -> tuple:
        c = self.net.config
        return (c.dim,) if self.net.arch == "mlp" else (c.in_channels, c.image_size, c.image_size)

    def bind(self, cond=None, *, guidance_scale=None, guided=None, convention="w", guidance_rescale=0.0):
        """A plain ``model(x, t)`` with ``cond`` bound (:meth:`net.as_model`) or, given
        ``guidance_scale``, classifier-free guided over the kinds ``guided`` (default: every
        droppable kind), MATH.md (12.7), (12.8).

        Parameters
        ----------
        cond : mapping, array or None
            The condition (a mapping of condition kinds, :mod:`refdiff.nn.conditions`; a
            plain label array is shorthand for ``{"class": labels}``; None or a missing kind:
            that kind's null).
        guidance_scale : float, optional
            Classifier-free guidance scale; None (default) binds ``cond`` without guidance.
        guided : sequence of str, optional
            The condition kinds that are guided (replaced by their nulls in the unconditional
            branch); default every droppable kind.  Used only with ``guidance_scale``.
        convention : {"w", "1+w"}
            The guidance-scale convention of :func:`refdiff.cfg_combine`.
        guidance_rescale : float, default 0.0
            The guidance rescale factor, MATH.md (12.8) (0: none).

        Returns
        -------
        callable
            A plain ``model(x, t)``.
        """
        check_choice("convention", convention, ("w", "1+w"))
        guidance_rescale = check_finite_scalar("guidance_rescale", guidance_rescale, low=0.0, high=1.0)
        if guidance_scale is not None:
            guidance_scale = check_finite_scalar("guidance_scale", guidance_scale)
        if guidance_scale is None:
            return self.net.as_model(self.params, cond)
        from .guidance import guided_model

        return guided_model(self.net, self.params, cond, guidance_scale, guided, convention=convention,
                            guidance_rescale=guidance_rescale)

    def sample(self, n: int, *, steps: int, rng, method: str = "dpmpp_2m", cond=None, guidance_scale=None,
               guided=None, spacing: str = "trailing", xp=None, progress: bool = False, **options):
        """``n`` samples with ``refdiff.sample`` on the checkpoint's schedule, as its
        prediction type: x_T drawn on the host from ``rng`` (then the device, in the network's
        dtype), ``steps`` steps of ``spacing``.  Methods defined only in continuous time
        (``euler_maruyama``, ``pc``, ``pf_ode_rk4``) run on the schedule's interpolated
        continuous view, the network called at index ``t T - 1``.

        Parameters
        ----------
        n : int
            The number of samples.
        steps : int
            The number of sampling steps, in [1, T] (T of the checkpoint's schedule).
        rng : numpy.random.Generator
            The source of x_T and of every noise draw of the sampler.
        method : str, default "dpmpp_2m"
            A method of ``refdiff.sample`` (:func:`refdiff.samplers.loop.sampler_methods`).
        cond, guidance_scale, guided
            The condition and classifier-free guidance, as in :meth:`bind`.
        spacing : {"trailing", "leading", "linspace"}
            The timestep spacing (:func:`refdiff.schedules.timesteps`) of discrete methods;
            the continuous-only methods use a uniform time grid.
        xp : array namespace, optional
            Namespace of x_T; default that of the parameters.
        progress : bool, default False
            Show a progress bar.
        **options
            Passed to ``refdiff.sample`` (eta, order, s_churn, sigmas, ...).

        Returns
        -------
        array
            The samples, shape ``(n, *sample_shape)``, in the parameters' dtype.

        Raises
        ------
        ValueError
            If the checkpoint has no discrete schedule, ``steps`` is outside [1, T], or
            ``refdiff.sample`` rejects the method or an option (TypeError for an unknown option).
        """
        from .samplers.loop import sample
        from .schedules import InterpolatedVP, Schedule, time_grid, timesteps

        rng = check_rng(rng)
        n, steps = check_int("n", n, min=1), check_int("steps", steps, min=1)
        check_bool("progress", progress)
        if not isinstance(self.schedule, Schedule):
            raise ValueError("LoadedModel.sample needs a checkpoint with a discrete schedule; this one stores "
                             f"{self.meta.get('schedule', {}).get('type')!r}")
        if not 1 <= steps <= self.schedule.T:
            raise ValueError(f"steps must lie in [1, {self.schedule.T}] (the checkpoint's T), got {steps}")
        xp = array_namespace(next(iter(self.params.values()))) if xp is None else xp
        dtype = next(iter(self.params.values())).dtype
        x_T = xp.asarray(rng.standard_normal((n, *self.sample_shape)), dtype=dtype)
        model = self.bind(cond, guidance_scale=guidance_scale, guided=guided)
        if method in CONTINUOUS_ONLY_METHODS:
            T, base = self.schedule.T, model
            model = lambda x, t: base(x, t * T - 1.0)  # noqa: E731  continuous t -> index (t T - 1)
            sched = InterpolatedVP(self.schedule)
            ts = time_grid(sched, steps, "time_uniform")
        else:
            sched, ts = self.schedule, timesteps(self.schedule.T, steps, spacing)
        return sample(model, x_T, sched, ts, method, prediction_type=self.prediction_type, rng=rng,
                      progress=progress, **options)


def load(path, *, ema: bool = True, xp=None):
    """Load a refdiff checkpoint (the ``.npz``, or the folder holding ``checkpoint.npz``)
    as ``(model, metadata)``: ``model`` a :class:`LoadedModel` (EMA parameters when the
    checkpoint has them and ``ema``), ``metadata`` a dict with ``prediction_type``,
    ``schedule`` (the rebuilt schedule object), ``cond_kinds``, ``step``, ``model_config``,
    ``train_config`` and ``format_version``.  Every entry is validated on the way in
    (:func:`refdiff.nn.checkpoint.load_checkpoint`).

    Parameters
    ----------
    path : str or path-like
        The checkpoint file, or a folder holding ``checkpoint.npz``.
    ema : bool, default True
        Use the EMA parameters when the checkpoint has them (else the raw parameters).
    xp : array namespace, optional
        Namespace of the parameters (default NumPy; e.g. CuPy to run on the GPU).

    Returns
    -------
    model : LoadedModel
        The network with its parameters, prediction type and schedule.
    metadata : dict
        ``prediction_type``, ``schedule`` (None when the checkpoint stores none),
        ``cond_kinds``, ``step``, ``model_config``, ``train_config``, ``format_version``,
        ``path`` (the file read) and ``ema`` (whether the EMA parameters were loaded).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the checkpoint is corrupted or inconsistent (see ``load_checkpoint``).
    """
    from .nn._checkpoint_checks import check_path

    p = check_path("path", path)
    ema = check_bool("ema", ema)
    if p.is_dir():
        p = p / "checkpoint.npz"
    ck = load_checkpoint(p, xp=xp)
    params = ck.ema_params if ema and ck.ema_params is not None else ck.params
    desc = ck.meta.get("schedule")
    schedule = None if not desc else schedule_from_description(desc)
    model = LoadedModel(ck.model, params, ck.prediction_type, schedule, ck.meta)
    meta = {"prediction_type": ck.prediction_type, "schedule": schedule, "cond_kinds": model.cond_kinds,
            "step": ck.step, "model_config": ck.meta["model_config"], "train_config": ck.meta.get("train_config", {}),
            "format_version": ck.meta["format_version"], "path": str(p), "ema": params is ck.ema_params}
    return model, meta

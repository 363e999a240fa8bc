"""The `GradientAccumulator`'s argument checks: one-line errors that say what
to pass instead, and the micro-batch's deprecated keyword."""

import warnings


def micro_batch_argument(micro_batch_size, batch_size, caller):
    """The micro-batch given under its name or its deprecated one, `batch_size`
    (which everywhere else means the examples per update)."""
    if batch_size is not None:
        if micro_batch_size is not None:
            raise TypeError(f"{caller}: give micro_batch_size only (batch_size is its old name)")
        warnings.warn(f"{caller}(batch_size=...) is deprecated; the argument is the micro-batch: "
                      "micro_batch_size=", DeprecationWarning, stacklevel=3)
        micro_batch_size = batch_size
    if micro_batch_size is None:
        raise TypeError(f"{caller}: missing micro_batch_size (the batch given to fit)")
    return int(micro_batch_size)


# The base optimizer's arguments, at their defaults. On the wrapper they would
# do nothing (the inner optimizer takes the steps), so a value other than the
# default is refused; the defaults are accepted because configs saved by
# Keras's base `get_config` carry them.
BASE_OPTIMIZER_DEFAULTS = {
    "learning_rate": None, "weight_decay": None, "clipnorm": None, "clipvalue": None,
    "global_clipnorm": None, "use_ema": False, "ema_momentum": 0.99,
    "ema_overwrite_frequency": None, "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


def refuse_base_arguments(kwargs):
    for name, default in BASE_OPTIMIZER_DEFAULTS.items():
        if name not in kwargs:
            continue
        value = kwargs.pop(name)
        if name == "learning_rate" or value == default:
            continue  # the base class's placeholder rate; a saved default
        raise ValueError(
            f"GradientAccumulator does not take {name}={value!r}: it would be ignored. Set it "
            f"on the inner optimizer instead, e.g. keras.optimizers.SGD(0.1, {name}={value!r}).")
    if kwargs:
        raise ValueError(f"GradientAccumulator got unexpected arguments: {', '.join(kwargs)}.")


def check_accumulation_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            "GradientAccumulator accumulation_steps must be an integer >= 1; got "
            f"accumulation_steps={steps!r}."
        )

"""Train, evaluate and export a poster genre classifier.

    python -m trainer --data_dir=SHARDS --model_dir=RUN [--strategy=mirrored] [--model=poster_net]

See `python -m trainer --help` for the trainer's flags and docs/trainer.md for the outputs.
"""

from absl import app, flags, logging

from trainer import flags as trainer_flags


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from trainer.train import train_and_evaluate

    result = train_and_evaluate(trainer_flags.config_from_flags())
    logging.info("Done: %s", result)


if __name__ == "__main__":
    trainer_flags.define_flags()
    # So --help lists the trainer's flags, which are defined in trainer/flags.py.
    flags.adopt_module_key_flags(trainer_flags)
    app.run(main)

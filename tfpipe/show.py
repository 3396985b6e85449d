"""Draw a contact sheet of posters as `build_dataset` delivers them, with their genres.

    python -m tfpipe.show --data_dir=SHARDS --split=train --count=16 --output=grid.png \
        [--augment] [--image_size=224] [--resize_method=stretch]

Each tile shows one decoded (and with `--augment`, randomly cropped and
flipped) poster, titled with its id and the names of its positive genres.
Use it to check the preprocessing by eye before a long training run.
"""

import math

from absl import app, flags, logging


def define_flags() -> None:
    """Define the command-line flags; called only when run as a program."""
    flags.DEFINE_string("data_dir", None, "Folder with metadata.json and the shards.", required=True)
    flags.DEFINE_string("split", "train", "Split to draw from.")
    flags.DEFINE_integer("count", 16, "Number of posters on the sheet.")
    flags.DEFINE_string("output", "grid.png", "Path of the PNG to write.")
    flags.DEFINE_bool("augment", False, "Apply the training augmentation (random crop and flip).")
    flags.DEFINE_integer("image_size", 224, "Height and width of each decoded poster, pixels.")
    flags.DEFINE_enum("resize_method", "stretch", ["stretch", "pad"], "How posters are resized.")
    flags.DEFINE_integer("seed", 0, "Seed of the shuffle and augmentation with --augment.")


def draw_contact_sheet(
    data_dir: str, split: str, output: str, *, count: int = 16, augment: bool = False,
    image_size: int = 224, resize_method: str = "stretch", seed: int = 0,
) -> int:
    """Write a PNG grid of the first `count` posters of `split`; return how many it drew.

    Without `augment`, posters come in evaluation order (shard order); with
    it, in the shuffled training order of epoch 0 for `seed`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfpipe import build_dataset, schema

    labels = schema.read_metadata(data_dir)["labels"]
    dataset = build_dataset(
        data_dir, split, batch_size=count, image_size=(image_size, image_size),
        training=augment, augment=augment, seed=seed, num_epochs=1, drop_remainder=False,
        resize_method=resize_method, include_ids=True,
    )
    images, multi_hot, ids = next(iter(dataset))
    images, multi_hot, ids = images.numpy(), multi_hot.numpy(), ids.numpy()

    columns = min(len(images), 4)
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.8 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, row, poster_id in zip(axes.flat, images, multi_hot, ids):
        genres = [labels[i] for i, value in enumerate(row) if value > 0.5]
        axis.imshow(image)
        axis.set_title(f"{poster_id.decode()}\n{', '.join(genres) or '(no genre)'}", fontsize=9)

    mode = "augmented" if augment else "as evaluated"
    figure.suptitle(f"{split}: {len(images)} posters, {image_size}x{image_size} "
                    f"{resize_method}, {mode}")
    figure.tight_layout()
    figure.savefig(output, dpi=80)
    plt.close(figure)
    logging.info("Wrote %d posters to %s", len(images), output)
    return len(images)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = flags.FLAGS
    draw_contact_sheet(
        config.data_dir, config.split, config.output, count=config.count,
        augment=config.augment, image_size=config.image_size,
        resize_method=config.resize_method, seed=config.seed,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)

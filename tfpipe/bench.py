"""Measure the input pipeline against the decode limit and the tutorial's loader.

    python -m tfpipe.bench --data_dir=SHARDS --dataset_dir=POSTERS [--image_size=224]
        [--count=2000] [--max_side_data_dir=SHARDS_256] [--output_json=bench.json]

On the same posters (the first `--count` examples of `--split` in the shards,
and their JPEG files in `--dataset_dir/Images`), each in its own process so
that peak memory is measured separately:

- limit: JPEG bytes already in memory, `decode_and_resize` on all cores;
- tutorial: keras `load_img(target_size)`, `img_to_array`, divide by 255,
  stacked into one NumPy array, one poster at a time;
- naive tf.data: `list_files`, `read_file`, decode, resize, no parallelism;
- build_dataset: evaluation mode (no augmentation), then training mode, then
  on `--max_side_data_dir` shards when given;
- build_dataset over the shards listed once and four times (a temporary
  `metadata.json`), to show that peak memory does not grow with data size.
  A third run reads the shards listed once for four epochs, which takes as
  long as the four passes.

For each it prints images/s (wall clock), CPU ms per poster (user + system
time of the process, all threads), peak resident memory, and ratios to the
limit. The tf.data measurements start their clock after the first batch; the
tutorial's loop has no warm-up to leave out. The speed of a shared machine varies, so only the ratios within one
run are comparable.
"""

import concurrent.futures
import json
import multiprocessing
import os
import resource
import shutil
import tempfile
import time

from absl import app, flags, logging


def define_flags() -> None:
    """Define the command-line flags; called only when run as a program."""
    flags.DEFINE_string("data_dir", None, "Folder with metadata.json and the shards.", required=True)
    flags.DEFINE_string("dataset_dir", None, "Folder with train.csv and Images/<Id>.jpg.",
                        required=True)
    flags.DEFINE_string("split", "train", "Split whose posters are measured.")
    flags.DEFINE_integer("image_size", 224, "Output height and width, pixels.")
    flags.DEFINE_integer("count", 2000, "Posters per measurement (fewer if the split is smaller).")
    flags.DEFINE_integer("batch_size", 64, "Batch size of the tf.data measurements.")
    flags.DEFINE_string("max_side_data_dir", None,
                        "Optional shards of the same posters re-encoded with a smaller max side.")
    flags.DEFINE_integer("repeats", 1, "Rounds of the whole plan; each figure is the best round.")
    flags.DEFINE_list("only", [], "Run only these measurements (names as in the table).")
    flags.DEFINE_string("output_json", None, "Optional path of a JSON file with the results.")


def _usage() -> dict:
    """Return wall time, process CPU time and peak RSS of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.perf_counter(),
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux
    }


def _result(name: str, start: dict, images: int) -> dict:
    end = _usage()
    wall = end["wall"] - start["wall"]
    cpu = end["cpu"] - start["cpu"]
    return {
        "name": name,
        "images": images,
        "images_per_s": images / wall,
        "cpu_ms_per_image": 1000.0 * cpu / images,
        "wall_s": wall,
        "rss_before_mb": start["peak_rss_mb"],
        "peak_rss_mb": end["peak_rss_mb"],
    }


def _iterate(dataset, name: str) -> dict:
    """Pull every batch of `dataset` with a progress bar and return the measurement.

    The clock starts after the first batch, so tracing and filling buffers,
    which happen once per run, do not count against the steady-state rate.
    """
    from tqdm import tqdm

    iterator = iter(dataset)
    next(iterator)
    start = _usage()
    images = 0
    for batch in tqdm(iterator, desc=name, unit="batch", mininterval=2.0):
        images += int(batch[0].shape[0])
    return _result(name, start, images)


def measure_limit(paths: list, image_size: int, batch_size: int) -> dict:
    """Decode and resize JPEG bytes already in memory with every core."""
    import tensorflow as tf

    from tfpipe import preprocess

    encoded = []
    for path in paths:
        with open(path, "rb") as f:
            encoded.append(f.read())
    dataset = tf.data.Dataset.from_tensor_slices(encoded)
    dataset = dataset.map(
        lambda e: preprocess.decode_and_resize(e, (image_size, image_size)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.batch(batch_size).map(lambda images: (images,)).prefetch(tf.data.AUTOTUNE)

    return _iterate(dataset, "limit")


def measure_tutorial(paths: list, image_size: int, batch_size: int) -> dict:
    """Load posters one by one as the original tutorial does, into one float array."""
    import numpy as np
    from keras.utils import img_to_array, load_img
    from tqdm import tqdm

    start = _usage()
    arrays = []
    for path in tqdm(paths, desc="tutorial", unit="poster", mininterval=2.0):
        image = load_img(path, target_size=(image_size, image_size))
        arrays.append(img_to_array(image) / 255.0)
    everything = np.array(arrays)
    return _result("tutorial", start, len(everything))


def measure_naive(paths: list, image_size: int, batch_size: int) -> dict:
    """Read and decode JPEG files with tf.data, one at a time, no parallelism."""
    import tensorflow as tf

    def load(path):
        pixels = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(pixels, (image_size, image_size)) / 255.0

    dataset = tf.data.Dataset.list_files(paths, shuffle=False).map(load)
    dataset = dataset.batch(batch_size).map(lambda images: (images,))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.map_parallelization = False
    dataset = dataset.with_options(options)

    return _iterate(dataset, "naive tf.data")


def measure_build_dataset(name: str, data_dir: str, split: str, image_size: int, batch_size: int,
                          count: int, training: bool, decode_strategy: str = "unbatch",
                          num_epochs: int = 1) -> dict:
    """Run `build_dataset` over the first `count` examples of `num_epochs` epochs of `split`."""
    from tfpipe import build_dataset

    dataset = build_dataset(
        data_dir, split, batch_size=batch_size, image_size=(image_size, image_size),
        training=training, num_epochs=None if training else num_epochs,
        seed=0 if training else None, decode_strategy=decode_strategy,
    )
    dataset = dataset.take(max(2, count // batch_size))
    return _iterate(dataset, name)


def _run_in_process(function, *args) -> dict:
    """Run `function(*args)` in a fresh process, so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def _poster_ids(data_dir: str, split: str, count: int) -> list:
    """Return the ids of the first `count` examples of `split`, in evaluation order."""
    import tensorflow as tf

    from tfpipe import schema

    metadata = schema.read_metadata(data_dir)
    paths = schema.shard_paths(data_dir, metadata, split)
    records = tf.data.TFRecordDataset(paths, compression_type=metadata["compression"])
    spec = {schema.IMAGE_ID_KEY: schema.feature_spec(len(metadata["labels"]))[schema.IMAGE_ID_KEY]}
    ids = records.take(count).map(lambda r: tf.io.parse_single_example(r, spec)[schema.IMAGE_ID_KEY])
    return [i.decode("utf-8") for i in ids.as_numpy_iterator()]


def _write_repeated_metadata(data_dir: str, split: str, folder: str, copies: int) -> None:
    """Write `folder/metadata.json` that lists every shard of `split` `copies` times."""
    from tfpipe import schema

    metadata = schema.read_metadata(data_dir)
    info = metadata["splits"][split]
    # Absolute shard paths: os.path.join(folder, absolute) keeps the absolute path.
    shard_list = [os.path.abspath(os.path.join(data_dir, name)) for name in info["shards"]]
    info["shards"] = shard_list * copies
    info["num_examples"] = info["num_examples"] * copies
    metadata["splits"] = {split: info}
    with open(os.path.join(folder, schema.METADATA_FILENAME), "w") as f:
        json.dump(metadata, f)


def run_benchmark(
    data_dir: str, dataset_dir: str, *, split: str = "train", image_size: int = 224,
    count: int = 2000, batch_size: int = 64, max_side_data_dir=None, only=(), repeats: int = 1,
) -> list:
    """Run every measurement and return one result dict per measurement.

    Each dict has name, images, images_per_s, cpu_ms_per_image, wall_s,
    rss_before_mb (after imports and setup) and peak_rss_mb, plus
    speed_ratio and cpu_ratio against the limit when the limit ran. With
    `repeats` > 1, each figure is the best of the rounds (highest peak memory).
    """
    ids = _poster_ids(data_dir, split, count)
    count = len(ids)
    paths = [os.path.join(dataset_dir, "Images", f"{poster_id}.jpg") for poster_id in ids]
    logging.info("Benchmark on %d posters of %s/%s at %dx%d, batch %d", count, data_dir, split,
                 image_size, image_size, batch_size)

    repeated_dir = tempfile.mkdtemp(prefix="tfpipe-bench-")
    _write_repeated_metadata(data_dir, split, repeated_dir, copies=4)
    with open(os.path.join(data_dir, "metadata.json")) as f:
        split_size = json.load(f)["splits"][split]["num_examples"]

    plan = [
        ("limit", measure_limit, (paths, image_size, batch_size)),
        ("tutorial", measure_tutorial, (paths, image_size, batch_size)),
        ("naive tf.data", measure_naive, (paths, image_size, batch_size)),
        ("build_dataset", measure_build_dataset,
         ("build_dataset", data_dir, split, image_size, batch_size, count, False)),
        ("build_dataset map_fn", measure_build_dataset,
         ("build_dataset map_fn", data_dir, split, image_size, batch_size, count, False,
          "map_fn")),
        ("build_dataset training", measure_build_dataset,
         ("build_dataset training", data_dir, split, image_size, batch_size, count, True)),
    ]
    if max_side_data_dir:
        plan.append(("build_dataset max_side", measure_build_dataset,
                     ("build_dataset max_side", max_side_data_dir, split, image_size, batch_size,
                      count, False)))
    plan += [
        ("one pass", measure_build_dataset,
         ("one pass", data_dir, split, image_size, batch_size, split_size, False)),
        ("four passes", measure_build_dataset,
         ("four passes", repeated_dir, split, image_size, batch_size, 4 * split_size, False)),
        # As long as four passes but over one copy of the data: separates growth with run
        # length (AUTOTUNE buffers) from growth with data size.
        ("one pass four epochs", measure_build_dataset,
         ("one pass four epochs", data_dir, split, image_size, batch_size, 4 * split_size,
          False, "unbatch", 4)),
    ]

    # Rounds run the whole plan in turn, so that a burst of load from other programs
    # slows one round of a measurement rather than all of them.
    best = {}
    try:
        for round_index in range(repeats):
            for name, function, args in plan:
                if only and name not in only:
                    continue
                logging.info("Round %d of %d: measuring %s", round_index + 1, repeats, name)
                result = _run_in_process(function, *args)
                logging.info("%s: %.1f images/s, %.2f CPU ms per image, peak RSS %.0f MB", name,
                             result["images_per_s"], result["cpu_ms_per_image"],
                             result["peak_rss_mb"])
                best[name] = _keep_best(best.get(name), result)
    finally:
        shutil.rmtree(repeated_dir, ignore_errors=True)
    results = list(best.values())

    limit = next((r for r in results if r["name"] == "limit"), None)
    if limit:
        for result in results:
            result["speed_ratio"] = result["images_per_s"] / limit["images_per_s"]
            result["cpu_ratio"] = limit["cpu_ms_per_image"] / result["cpu_ms_per_image"]
    return results


def _keep_best(previous, result: dict) -> dict:
    """Merge two rounds of one measurement: best rate, least CPU, highest peak memory."""
    if previous is None:
        return result
    merged = dict(result)
    merged["images_per_s"] = max(previous["images_per_s"], result["images_per_s"])
    merged["cpu_ms_per_image"] = min(previous["cpu_ms_per_image"], result["cpu_ms_per_image"])
    merged["peak_rss_mb"] = max(previous["peak_rss_mb"], result["peak_rss_mb"])
    merged["rss_before_mb"] = max(previous["rss_before_mb"], result["rss_before_mb"])
    return merged


def format_table(results: list) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| measurement | images | images/s | CPU ms/image | speed vs limit | CPU efficiency vs "
        "limit | RSS after setup MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['images']} | {r['images_per_s']:.1f} | "
            f"{r['cpu_ms_per_image']:.2f} | {r.get('speed_ratio', float('nan')):.2f} | "
            f"{r.get('cpu_ratio', float('nan')):.2f} | {r['rss_before_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = flags.FLAGS
    results = run_benchmark(
        config.data_dir, config.dataset_dir, split=config.split, image_size=config.image_size,
        count=config.count, batch_size=config.batch_size,
        max_side_data_dir=config.max_side_data_dir, only=config.only, repeats=config.repeats,
    )
    print(f"{os.cpu_count()} CPUs, image {config.image_size}x{config.image_size}, "
          f"batch {config.batch_size}")
    print(format_table(results))
    if config.output_json:
        with open(config.output_json, "w") as f:
            json.dump(results, f, indent=2)
        logging.info("Wrote %s", config.output_json)


if __name__ == "__main__":
    define_flags()
    app.run(main)
